"""Runs on Cloud Storage for real, against the emulator of tests/services/gcs.py: every byte goes over HTTP through the
clients a user's gs:// run uses (tf.io.gfile under etils.epath, tf.data, TFDS and TensorBoard; TensorStore and
google-cloud-storage under orbax; array_record's own client).

An image folder on gs:// lists and reads as its local copy. One training run (slow) reads its images from a gs://
folder and writes its workdir there; it is SIGKILLed during its checkpoints and resumed to the bitwise end of a run on
local files that was never stopped, keeps only `keep_checkpoints` steps, and leaves metrics, config and TensorBoard
events that read back, and a compilation cache the resumed run loads its train step from; evaluate, predict and
report then run on that workdir. A 2 process x 2 device launch.local run
(slow) trains from a TFDS directory on gs:// into a gs:// workdir.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import ml_collections
import pytest
import tensorflow as tf
from etils import epath

from inception import train
from inception.data import sources
from tests.runs import REPO, assert_trees_close, make_small_folder, restore_state, tiny_config, tiny_flags
from tests.services.gcs import gcs, gcs_emulator, upload  # noqa: F401  pylint: disable=unused-import  (fixtures)

# The smoke-test network (tests/runs.py TINY), 8 steps of batch 8, a checkpoint every step and the last 2 kept.
RUN = dict(num_epochs=8, checkpoint_every_steps=1, keep_checkpoints=2)
FINAL = re.compile(r'^final eval \(EMA weights, (\d+) images\): top1=([\d.]+)', re.M)


def steps(workdir: str) -> list:
  """The checkpoint steps listed in a gs:// workdir."""
  folder = epath.Path(workdir) / 'checkpoints'
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []


def start(module, *args, log):
  """The command in its own process group, with the config's compilation cache (`{workdir}/compile_cache`, so on
  gs:) instead of the tests' shared local one."""
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  return subprocess.Popen([sys.executable, '-m', module, *args], cwd=REPO, env=env, stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc, log_path, timeout=600) -> str:
  """Waits for `proc` (killing its group at the timeout); returns its output, asserting it ended with 0."""
  try:
    code = proc.wait(timeout=timeout)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  with open(log_path) as f:
    out = f.read()
  assert code == 0, out[-3000:]
  return out


def tensorboard_steps(workdir: str, tag: str) -> list:
  """The steps of scalar `tag` in the run's TensorBoard event files, read back from the bucket."""
  found = []
  for path in tf.io.gfile.glob(f'{workdir}/tensorboard/events.out.tfevents.*'):
    for event in tf.compat.v1.train.summary_iterator(path):
      found += [event.step for value in event.summary.value if value.tag == tag]
  return sorted(found)


def test_an_image_folder_on_gcs_is_the_local_folder(gcs, tmp_path):
  """The folder source on a gs:// copy of a folder (nested images, a hidden folder, a text file, a train/val layout)
  lists the same classes, splits and left-out files as on the local folder, and reads the same bytes; a gs:// folder
  that does not exist is a DataError naming it."""
  local = tmp_path / 'images'
  make_small_folder(local / 'flat')
  for name in ('flat/Motorbikes/nested', 'flat/.hidden', 'split/train/a', 'split/train/b', 'split/val/a'):
    os.makedirs(local / name)
  first = sorted((local / 'flat' / 'Motorbikes').glob('*.jpg'))[0]
  for target in ('flat/Motorbikes/nested/x.jpg', 'flat/.hidden/y.jpg', 'split/train/a/1.jpg', 'split/train/b/2.jpg',
                 'split/val/a/3.jpg'):
    (local / target).write_bytes(first.read_bytes())
  (local / 'flat' / 'Faces_easy' / 'notes.txt').write_text('not an image')
  upload(local, f'{gcs}/images')
  for layout in ('flat', 'split'):
    found = {}
    for where, root in (('local', str(local / layout)), ('gcs', f'{gcs}/images/{layout}/')):
      source = sources.FolderSource(ml_collections.ConfigDict(dict(root=root, val_fraction=0.25)))
      prefix = str(source.root) + '/'
      files = {split: [(path[len(prefix):], label) for path, label in source.files(split)] for split in sources.SPLITS}
      data = source.dataset('train', process_index=0, process_count=1).take(3)
      read = [example['image_bytes'] for example in data.as_numpy_iterator()]
      found[where] = source.class_names, files, source.ignored_files, read
    assert found['gcs'] == found['local'], layout
    if layout == 'flat':
      listed = [path for split in found['gcs'][1].values() for path, _ in split]
      assert 'Motorbikes/nested/x.jpg' in listed and found['gcs'][2] == {'.txt': 1}
    else:
      assert found['gcs'][0] == ['a', 'b'] and len(found['gcs'][1]['eval']) == 1
  with pytest.raises(sources.DataError, match=rf"Image folder '{gcs}/nothing' does not exist \(no object has that "):
    sources.FolderSource(ml_collections.ConfigDict(dict(root=f'{gcs}/nothing', val_fraction=0.25)))


@pytest.mark.slow
def test_a_run_on_gcs_resumes_after_sigkill_and_evaluate_predict_report_read_it(gcs, tmp_path):
  """Image folder and workdir on gs:// (the module docstring): one process of 4 devices, 8 steps."""
  images = make_small_folder(tmp_path / 'images')
  upload(images, f'{gcs}/images')
  workdir = f'{gcs}/run'
  flags = tiny_flags(f'{gcs}/images', workdir, **RUN)

  # 1. Trained from the bucket into the bucket, SIGKILLed once its third checkpoint has begun (a kill during a save
  # leaves a partial step folder on GCS, which has no atomic rename), then run again to the end.
  with open(tmp_path / 'killed.log', 'ab') as log:
    proc = start('inception.main', *flags, log=log)
  deadline = time.time() + 600
  while (not steps(workdir) or steps(workdir)[-1] < 3) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not tf.io.gfile.exists(f'{workdir}/final_eval.json'), 'the kill came too late: the run had finished'
  killed_at = steps(workdir)
  assert killed_at and killed_at[-1] >= 3, open(tmp_path / 'killed.log').read()[-3000:]
  with open(tmp_path / 'resumed.log', 'ab') as log:
    proc = start('inception.main', *flags, log=log)
  try:  # meanwhile: the same run on local files, never stopped (in this process, on the same 4 devices)
    reference = tmp_path / 'reference'
    expected = train.train_and_evaluate(tiny_config(images, reference, **RUN))
  finally:
    out = finish(proc, tmp_path / 'resumed.log')
  resumed = re.findall(r'Resumed from step (\d+)', out)
  assert len(resumed) == 1 and 2 <= int(resumed[0]) <= killed_at[-1], out[-3000:]
  # The killed run left its compiled train step in the workdir's cache on gs://; the resumed run loaded it from there.
  assert f'Compilation cache: {workdir}/compile_cache (from --config.compile_cache)' in out
  assert 'jit_train_step: loaded from the compilation cache' in out, out[-3000:]
  assert any(p.name.startswith('jit_train_step') for p in epath.Path(workdir, 'compile_cache').iterdir())

  # Its end equals the uninterrupted run's, bitwise; only the last keep_checkpoints steps are left.
  step_a, state_a, meta_a = restore_state(str(reference))
  step_b, state_b, meta_b = restore_state(workdir)
  assert step_a == step_b == 8 and meta_a == meta_b
  assert_trees_close(state_a, state_b, rtol=0, atol=0)
  assert steps(workdir) == [7, 8]
  final = json.loads(epath.Path(workdir, 'final_eval.json').read_text())
  assert final['eval_ema/top1'] == expected['eval_ema/top1'] and final['eval/examples'] == expected['eval/examples']
  rows = [json.loads(line) for line in epath.Path(workdir, 'metrics.jsonl').read_text().splitlines()]
  assert [row['step'] for row in rows if 'train/loss' in row] == list(range(1, 9))  # each step once after the resume
  config = json.loads(epath.Path(workdir, 'config.json').read_text())
  assert config['workdir'] == workdir and config['data']['root'] == f'{gcs}/images'
  assert json.loads(epath.Path(workdir, 'classes.json').read_text()) == ['Faces_easy', 'Motorbikes']
  assert set(range(1, 9)) <= set(tensorboard_steps(workdir, 'train/loss'))

  # 2. evaluate (its result written to the bucket), predict (the run's classes) and report (the PNG to the bucket).
  image = os.path.join(images, 'Motorbikes', sorted(os.listdir(os.path.join(images, 'Motorbikes')))[0])
  logs = {name: tmp_path / f'{name}.log' for name in ('evaluate', 'predict', 'report')}
  with open(logs['evaluate'], 'ab') as a, open(logs['predict'], 'ab') as b, open(logs['report'], 'ab') as c:
    procs = {'evaluate': start('inception.evaluate', f'--workdir={workdir}', log=a),
             'predict': start('inception.predict', f'--workdir={workdir}', '--json', image, log=b),
             'report': start('inception.report', workdir, log=c)}
  outs = {name: finish(proc, logs[name]) for name, proc in procs.items()}
  evaluated = json.loads(epath.Path(workdir, 'eval_1crops_ema.json').read_text())
  assert evaluated['step'] == 8 and evaluated['top1'] == final['eval_ema/top1'], outs['evaluate'][-2000:]
  (prediction,) = [json.loads(line) for line in outs['predict'].splitlines() if line.startswith('{')]
  assert prediction['path'] == image and {t['class'] for t in prediction['top']} == {'Faces_easy', 'Motorbikes'}
  assert outs['report'].strip().splitlines()[-1] == f'{workdir}/curves.png'
  assert epath.Path(workdir, 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def prepare_tfds(data_dir, file_format: str) -> str:
  """The 3-class TFDS dataset of tests/data/test_sources.py, prepared in `data_dir`; returns its folder."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from tests.data import test_sources  # pylint: disable=import-outside-toplevel
  assert test_sources.InceptionDataTestTiny  # imported: the builder is registered
  tfds.builder(TFDS_NAME, data_dir=str(data_dir), file_format=file_format).download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return os.path.join(data_dir, TFDS_NAME)


TFDS_NAME = 'inception_data_test_tiny'


@pytest.mark.slow
def test_two_processes_train_from_a_tfds_directory_on_gcs(gcs, tmp_path, monkeypatch):
  """launch.local, 2 processes x 2 devices: both read a prepared TFDS dataset (TFRecord, `tfds build`'s default) from
  the bucket, loaded from its files (the processes do not know the builder), and write one workdir there. The same
  dataset prepared as ArrayRecord reads the same examples by random access from the bucket as from local files."""
  upload(prepare_tfds(tmp_path / 'tfrecord', 'tfrecord'), f'{gcs}/tensorflow_datasets/{TFDS_NAME}')
  workdir = f'{gcs}/tfds_run'
  tfds_data = {'data.source': 'tfds', 'data.tfds_name': TFDS_NAME, 'data.eval_split': 'validation'}
  flags = tiny_flags('', workdir, num_epochs=2, checkpoint_every_steps=1, keep_checkpoints=1,
                     **tfds_data, **{'data.tfds_data_dir': f'{gcs}/tensorflow_datasets'})
  log_path = tmp_path / 'launcher.log'
  monkeypatch.setenv('TMPDIR', str(tmp_path))  # where the launcher writes the logs of a gs:// workdir as they run
  with open(log_path, 'ab') as log:
    proc = start('launch.local', '--num_processes=2', '--devices_per_process=2', '--', *flags, log=log)

  try:  # meanwhile, in this process: ArrayRecord, random access
    local = prepare_tfds(tmp_path / 'array_record', 'array_record')
    upload(local, f'{gcs}/array_record/{TFDS_NAME}')
    examples = {}
    for where, data_dir in (('local', str(tmp_path / 'array_record')), ('gcs', f'{gcs}/array_record')):
      data = tiny_config('', tmp_path / where, **tfds_data, **{'data.tfds_data_dir': data_dir}).data
      lookup = sources.build_source(ml_collections.ConfigDict(dict(data=data))).lookup('train')
      examples[where] = [(e['image_bytes'].numpy(), int(e['label'])) for e in map(lookup, (11, 0, 5))]
  finally:
    out = finish(proc, log_path)
  assert examples['gcs'] == examples['local'] and len(set(examples['local'])) == 3
  (final,) = FINAL.findall(out)
  assert int(final[0]) == 5  # the validation split, every image once over both processes
  assert steps(workdir) == [2]  # 12 training images, batch 8: a step an epoch; the last kept
  assert json.loads(epath.Path(workdir, 'final_eval.json').read_text())['eval/examples'] == 5
  assert (tmp_path / 'inception-logs' / workdir[len('gs://'):] / 'logs' / 'process_1.log').exists()
  for i in range(2):  # the processes' logs, written locally as they ran, then copied to the workdir
    log = epath.Path(workdir, 'logs', f'process_{i}.log').read_text()
    assert f'process {i} of 2, 2 local / 4 global devices' in log
