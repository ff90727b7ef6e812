"""`inception.predict` on a finished run: class names per image, a folder searched, per-file errors, JSON lines."""
import json
import os
import subprocess
import sys

import numpy as np

from tests.runs import MINI, REPO


def predict(*args):
  return subprocess.run([sys.executable, '-m', 'inception.predict', *args], cwd=REPO, capture_output=True, text=True,
                        timeout=300)


def test_predict_names_the_classes_and_reports_bad_files_without_stopping(finished_run, tmp_path):
  workdir = finished_run[0]
  face = os.path.join(MINI, 'Faces_easy', sorted(os.listdir(os.path.join(MINI, 'Faces_easy')))[0])
  folder = tmp_path / 'folder'
  folder.mkdir()
  for name in sorted(os.listdir(os.path.join(MINI, 'Motorbikes')))[:2]:
    (folder / name).write_bytes(open(os.path.join(MINI, 'Motorbikes', name), 'rb').read())
  (folder / 'notes.txt').write_text('not an image, and not an image name: skipped')
  bad = tmp_path / 'broken.jpg'
  bad.write_text('not a JPEG')
  missing = str(tmp_path / 'missing.jpg')

  out = predict(f'--workdir={workdir}', '--top=2', face, missing, str(bad), str(folder))
  assert out.returncode == 1, out.stderr[-2000:]  # two files failed; the others were classified
  text = out.stdout
  assert f'{missing}\n  error: No such file or directory' in text
  assert f'{bad}\n  error: not a readable image (' in text and '{{' not in text
  for path in (face, str(folder / sorted(os.listdir(folder))[0])):
    block = text.split(path + '\n', 1)[1].split('\n')[:2]
    names = [line.split()[-1] for line in block]
    assert set(names) == {'Faces_easy', 'Motorbikes'}, block  # the run's two classes, by name
    probs = [float(line.split()[0]) for line in block]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1.0) < 2e-4
  assert 'notes.txt' not in text and text.count('\n  0.') == 3 * 2  # 3 images classified, 2 classes each

  out = predict(f'--workdir={workdir}', '--json', '--crops=10', face, missing)
  records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]
  assert [r['path'] for r in records] == [face, missing]
  assert records[1]['error'] == 'No such file or directory'
  top = records[0]['top']
  assert [t['class'] for t in top] in (['Faces_easy', 'Motorbikes'], ['Motorbikes', 'Faces_easy'])
  assert {t['index'] for t in top} == {0, 1}
  np.testing.assert_allclose(sum(t['prob'] for t in top), 1.0, rtol=1e-5)  # two classes: the whole distribution
  assert all(len(repr(t['prob'])) > 8 for t in top)  # full precision, not rounded for display
