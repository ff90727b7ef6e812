"""inception.report: parsing metrics.jsonl, finding runs and their labels, and the command's PNG and errors."""
import json
import os
import subprocess
import sys

import numpy as np
from etils import epath
from matplotlib import image

from inception import report
from tests.services.gcs import gcs, gcs_emulator, upload  # noqa: F401  pylint: disable=unused-import  (fixtures)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(workdir, rows, overrides=None, tail=''):
  """A run workdir: `rows` as metrics.jsonl (plus `tail`, e.g. a truncated line), and overrides.json if given."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.write(''.join(json.dumps(r) + '\n' for r in rows) + tail)
  if overrides is not None:
    with open(os.path.join(workdir, 'overrides.json'), 'w') as f:
      json.dump(overrides, f)
  return str(workdir)


def curves(lr=0.1, steps=range(10, 101, 10)):
  """Training rows every 10 steps and evaluation rows every 50, as inception/train.py writes them."""
  rows = []
  for s in steps:
    rows.append({'step': s, 'time': 1e9 + s, 'train/loss': 2.3 / (1 + lr * s), 'train/lr': lr * min(1, s / 30),
                 'train/images_per_s': 20.0 + s % 3, 'train/top1': 0.5})
    if s % 50 == 0:
      rows.append({'step': s, 'time': 1e9 + s, 'eval/top1': s / 200, 'eval_ema/top1': s / 210})
  return rows


def test_repeated_step_keeps_the_last_value(tmp_path):
  rows = [{'step': 10, 'time': 1.0, 'train/loss': 3.0}, {'step': 20, 'time': 2.0, 'train/loss': 2.0},
          {'step': 30, 'time': 3.0, 'train/loss': 1.0},  # resumed from the checkpoint at step 20:
          {'step': 30, 'time': 4.0, 'train/loss': 1.5}, {'step': 40, 'time': 5.0, 'train/loss': 1.2}]
  series = report.load_run(write_run(tmp_path / 'run', rows))
  assert series['train/loss'] == ([10, 20, 30, 40], [3.0, 2.0, 1.5, 1.2])
  assert 'time' not in series and 'step' not in series


def test_truncated_last_line_is_skipped(tmp_path, caplog):
  rows = [{'step': 10, 'time': 1.0, 'train/loss': 3.0}, {'step': 20, 'time': 2.0, 'train/loss': 2.0}]
  series = report.load_run(write_run(tmp_path / 'run', rows, tail='{"step": 30, "time": 3.0, "train/lo'))
  assert series['train/loss'] == ([10, 20], [3.0, 2.0])
  assert 'truncated' in caplog.text


def test_sweep_root_finds_runs_sorted_with_override_labels(tmp_path):
  write_run(tmp_path / 'sweep' / 'lr_0.1', curves(0.1), {'optimizer.lr': 0.1, 'model.dtype': 'bfloat16'})
  write_run(tmp_path / 'sweep' / 'lr_0.05', curves(0.05), {'optimizer.lr': 0.05, 'model.dtype': 'bfloat16'})
  os.makedirs(tmp_path / 'sweep' / 'not_a_run')
  runs = report.find_runs([str(tmp_path / 'sweep')])
  assert [r.name for r in runs] == ['lr_0.05', 'lr_0.1']
  assert [report.label(r) for r in runs] == ['lr=0.05, dtype=bfloat16', 'lr=0.1, dtype=bfloat16']
  # Without overrides.json: the folder's name; an ambiguous short key keeps its full name.
  assert report.label(write_run(tmp_path / 'plain', curves())) == 'plain'
  ambiguous = write_run(tmp_path / 'amb', curves(), {'optimizer.lr': 0.1, 'ema.lr': 0.2})
  assert report.label(ambiguous) == 'optimizer.lr=0.1, ema.lr=0.2'


def run_report(*args):
  return subprocess.run([sys.executable, '-m', 'inception.report', *args], cwd=REPO, capture_output=True, text=True,
                        timeout=120)


def test_command_writes_a_png_and_prints_its_path(tmp_path):
  sweep = tmp_path / 'sweep'
  write_run(sweep / 'a', curves(0.1), {'optimizer.lr': 0.1})
  write_run(sweep / 'b', curves(0.02), {'optimizer.lr': 0.02}, tail='{"step": 110, "ti')
  result = run_report(str(sweep), '--title=lr sweep')
  assert result.returncode == 0, result.stderr
  out = sweep / 'curves.png'
  assert result.stdout.strip().splitlines()[-1] == str(out)
  with open(out, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  pixels = image.imread(out)
  assert pixels.shape[0] > 100 and pixels.shape[1] > 100
  assert np.ptp(pixels[..., :3]) > 0.5  # curves and text, not a blank image


def test_command_errors_name_the_path(tmp_path):
  missing = tmp_path / 'no_such_run'
  result = run_report(str(missing))
  assert result.returncode != 0
  assert str(missing) in result.stderr and 'metrics.jsonl' in result.stderr
  assert 'Traceback' not in result.stderr
  # Two run workdirs and no --out: where the PNG goes is the user's to say.
  result = run_report(write_run(tmp_path / 'a', curves()), write_run(tmp_path / 'b', curves()))
  assert result.returncode != 0 and '--out' in result.stderr and 'Traceback' not in result.stderr


def test_command_reads_and_writes_a_gs_sweep_root(tmp_path, gcs):
  """A gs:// sweep root (the Cloud Storage emulator, tests/services/gcs.py): its runs are found and labelled from there
  and the PNG is written there."""
  write_run(tmp_path / 'sweep' / 'a', curves(0.1), {'optimizer.lr': 0.1})
  write_run(tmp_path / 'sweep' / 'b', curves(0.02), {'optimizer.lr': 0.02})
  sweep = upload(tmp_path / 'sweep', f'{gcs}/sweep')
  result = run_report(sweep)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines()[-1] == f'{sweep}/curves.png'
  assert epath.Path(sweep, 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
