"""Checkpoint integrity (inception/checkpoint.py): a damaged newest checkpoint is set aside (kept) and the previous one
restored, a storage error is retried and never sets one aside, another structure or model is refused by name, and a
save that fails stops the run at once."""
import errno
import os
import pathlib
import re
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from inception import checkpoint, train
from inception.errors import CheckpointError, WorkdirError
from tests.services.gcs import gcs, gcs_emulator  # noqa: F401  pylint: disable=unused-import  (fixtures)
from tests.runs import assert_trees_close, checkpoint_steps, copy_run, restore_state, tiny_config


def corrupt(step_dir: pathlib.Path, kind: str) -> None:
  """Damages a checkpoint the ways disks and kills do: the largest data file truncated or zeroed, or `state/` gone."""
  if kind == 'state_deleted':
    shutil.rmtree(step_dir / 'state')
    return
  largest = max((p for p in (step_dir / 'state').rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)
  size = largest.stat().st_size
  largest.write_bytes(b'\0' * size if kind == 'zeroed' else largest.read_bytes()[:size // 2])


def test_unreadable_newest_checkpoint_falls_back_and_the_resumed_run_ends_the_same(finished_run, tmp_path):
  """A zeroed data file in the newest checkpoint: the run resumes from step 2, trains steps 3-4 again and ends
  bitwise equal to the uninterrupted run; the damaged folder is kept as 4.unreadable."""
  source, config, results = finished_run
  workdir = pathlib.Path(copy_run(source, tmp_path / 'run'))
  corrupt(workdir / 'checkpoints' / '4', 'zeroed')
  resumed = train.train_and_evaluate(tiny_config(config.data.root, workdir, num_epochs=4, checkpoint_every_steps=2))
  assert (workdir / 'checkpoints' / '4.unreadable').is_dir()  # set aside, not deleted
  assert checkpoint_steps(workdir) == [2, 4]  # step 4 trained again from step 2 and written afresh
  _, expected, _ = restore_state(source)
  _, state, _ = restore_state(str(workdir))
  assert_trees_close(expected, state, rtol=0, atol=0)  # same programs in one process: bitwise
  assert resumed['eval_ema/loss'] == results['eval_ema/loss']


@pytest.mark.parametrize('kind', ['truncated', 'state_deleted'])
def test_restore_falls_back_past_each_kind_of_damage(finished_run, tmp_path, kind):
  source, _, _ = finished_run
  workdir = pathlib.Path(copy_run(source, tmp_path / 'run'))
  corrupt(workdir / 'checkpoints' / '4', kind)
  _, target, meta = restore_state(source)  # the right shapes and dtypes, on one device
  ckpt = checkpoint.Checkpointer(str(workdir), 2, 3, identity={k: meta[k] for k in ('model', 'num_classes', 'image_size')})
  assert ckpt._damage(2) is None  # the inspection finds nothing wrong with an intact checkpoint of a real model
  state, restored_meta = ckpt.restore(jax.tree.map(jax.numpy.asarray, target))
  assert int(state['step']) == 2 and restored_meta['process_count'] == 1
  assert ckpt.all_steps() == [2] and (workdir / 'checkpoints' / '4.unreadable').is_dir()
  ckpt.close()


def test_no_readable_checkpoint_is_a_clear_error_and_nothing_is_deleted(finished_run, tmp_path):
  source, config, _ = finished_run
  workdir = pathlib.Path(copy_run(source, tmp_path / 'run'))
  for step in (2, 4):
    corrupt(workdir / 'checkpoints' / str(step), 'zeroed')
  with pytest.raises(CheckpointError, match=r'No checkpoint in .* can be restored .*step 4.*step 2'):
    train.train_and_evaluate(tiny_config(config.data.root, workdir, num_epochs=4, checkpoint_every_steps=2))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2.unreadable', '4.unreadable']


@pytest.mark.parametrize('override, named', [
    ({'model.name': 'googlenet'}, "model: the checkpoint has 'inception_tiny', this config 'googlenet'"),
    ({'pp.image_size': 112}, 'image_size: the checkpoint has 96, this config 112'),
])
def test_a_checkpoint_of_another_model_or_size_is_refused_by_name(finished_run, tmp_path, override, named):
  """Even without config.json (which would refuse it first), the checkpoint's own record names both sides."""
  source, config, _ = finished_run
  workdir = pathlib.Path(copy_run(source, tmp_path / 'run'))
  (workdir / 'config.json').unlink()
  before = sorted(os.listdir(workdir / 'checkpoints'))
  with pytest.raises(WorkdirError, match=named):
    train.train_and_evaluate(tiny_config(config.data.root, workdir, num_epochs=4, **override))
  assert sorted(os.listdir(workdir / 'checkpoints')) == before


def test_a_failed_save_stops_the_run_at_once(small_images, tmp_path, monkeypatch):
  """The checkpoint folder turns unwritable after the first save (root ignores file modes, so it is swapped for a
  link into /proc, where nothing can be created): the next save raises CheckpointError naming the folder and the
  step to resume from, instead of training on without checkpoints."""
  workdir = tmp_path / 'run'
  save = checkpoint.Checkpointer.maybe_save
  saved = []

  def save_then_break_the_folder(self, step, *args, **kwargs):
    if saved:
      self.wait()
      os.rename(self.directory, str(self.directory) + '.moved')
      os.symlink('/proc/self/fdinfo', self.directory)
    saved.append(step)
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpoint.Checkpointer, 'maybe_save', save_then_break_the_folder)
  with pytest.raises(CheckpointError, match=r'Could not save the checkpoint at step 2 in .*checkpoints.*resume from '
                                            r'step 1'):
    train.train_and_evaluate(tiny_config(small_images, workdir, num_epochs=4, checkpoint_every_steps=1))
  assert saved == [1, 2]
  assert sorted(os.listdir(str(workdir / 'checkpoints') + '.moved')) == ['1']  # the good one is intact


def test_read_only_checkpoint_folder_is_refused_before_training(small_images, tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  os.symlink('/proc/self/fdinfo', workdir / 'checkpoints')
  with pytest.raises(WorkdirError, match=r'Cannot write in .*checkpoints'):
    train.train_and_evaluate(tiny_config(small_images, workdir))
  assert sorted(os.listdir(workdir)) == ['checkpoints']


def test_all_agree_and_mismatch_helpers(monkeypatch):
  assert checkpoint._worst(checkpoint.OK) == checkpoint.OK
  monkeypatch.setattr(checkpoint.jax, 'process_count', lambda: 2)  # another process that found damage: all agree on it
  monkeypatch.setattr(checkpoint.multihost_utils, 'process_allgather', lambda x: np.asarray([x, checkpoint.DAMAGED]))
  assert checkpoint._worst(checkpoint.OK) == checkpoint._worst(checkpoint.TRANSIENT) == checkpoint.DAMAGED
  assert checkpoint._worst(checkpoint.REFUSED) == checkpoint.REFUSED
  assert checkpoint._mismatch({'model': 'a', 'image_size': 96}, {'model': 'a', 'image_size': 96}) is None
  assert checkpoint._mismatch({'model': 'a'}, {}) is None  # older checkpoints without the record pass
  assert 'model' in checkpoint._mismatch({'model': 'a'}, {'model': 'b'})


# ---------------------------------------------------------------- Tiny checkpoints (steps 1 and 2): damaged, transient
IDENTITY = {'model': 'tiny', 'num_classes': 2, 'image_size': 8}


def tiny_state(step: int, shape=(64, 64), extra=False, drop_b=False, b_dtype=jnp.bfloat16):
  """A small state whose `w` (random, so its chunk is stored apart from the index) differs with the step."""
  params = {'w': jnp.asarray(np.random.default_rng(step).random(shape), jnp.float32),
            'b': jnp.zeros((4,), b_dtype)}
  if extra:
    params['extra'] = jnp.zeros((3,))
  if drop_b:
    del params['b']
  return {'params': params, 'step': jnp.asarray(step)}


@pytest.fixture(scope='module')
def tiny_source(tmp_path_factory):
  ckpt = checkpoint.Checkpointer(str(tmp_path_factory.mktemp('tiny') / 'run'), 1, 3, IDENTITY)
  for step in (1, 2):
    ckpt.maybe_save(step, tiny_state(step), {'train_skipped_images': 0})
  ckpt.wait()
  ckpt.close()
  return ckpt.directory.parent


@pytest.fixture
def tiny_run(tiny_source, tmp_path):
  """A copy of the tiny run: (its checkpoints folder, a Checkpointer on it)."""
  shutil.copytree(tiny_source, tmp_path / 'run')
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'run'), 1, 3, IDENTITY)
  yield pathlib.Path(ckpt.directory), ckpt
  ckpt.close()


def damage(step_dir: pathlib.Path, kind: str) -> None:
  """Damages a tiny checkpoint: w's chunk file cut, zeroed or gone, the index zeroed, or a metadata file gone or cut."""
  state = step_dir / 'state'
  data = max((state / 'ocdbt.process_0' / 'd').iterdir(), key=lambda p: p.stat().st_size)  # holds w's chunk
  if kind == 'truncated':
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
  elif kind == 'zeroed':
    data.write_bytes(bytes(data.stat().st_size))
  elif kind == 'data_deleted':
    data.unlink()
  elif kind == 'index_zeroed':
    for index in (state / 'd').iterdir():
      index.write_bytes(bytes(index.stat().st_size))
  elif kind == 'meta_deleted':
    (step_dir / 'meta' / 'metadata').unlink()
  elif kind == 'metadata_garbled':
    (state / '_METADATA').write_text('{"tree_metadata": {')
  elif kind == 'state_deleted':
    shutil.rmtree(state)


@pytest.mark.parametrize('kind, found', [
    ('truncated', r'state/ocdbt.process_0/d/\w+ is cut short \(\d+ bytes, data up to byte \d+\)'),
    ('zeroed', r'state/ocdbt.process_0/d/\w+ holds an array chunk that is not zstd data \(at byte \d+\)'),
    ('data_deleted', r'state/ocdbt.process_0/d/\w+ is missing'),
    ('index_zeroed', r'state/d/\w+ holds an index node that does not decode'),
    ('meta_deleted', r'meta/metadata is missing'),
    ('metadata_garbled', r'state/_METADATA is not valid JSON'),
    ('state_deleted', r'state/_METADATA is missing'),
])
def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_restored(tiny_run, kind, found):
  folder, ckpt = tiny_run
  assert ckpt._damage(1) is None and ckpt._damage(2) is None
  damage(folder / '2', kind)
  assert ckpt._damage(1) is None
  assert re.match(found, ckpt._damage(2)), ckpt._damage(2)
  state, meta = ckpt.restore(tiny_state(0))
  assert int(state['step']) == 1 and meta['model'] == 'tiny'
  np.testing.assert_array_equal(state['params']['w'], tiny_state(1)['params']['w'])
  assert sorted(os.listdir(folder)) == ['1', '2.unreadable'] and ckpt.all_steps() == [1]


def test_damage_is_found_through_the_path_library_on_a_gs_workdir(gcs):
  """The same inspection on gs:// (the Cloud Storage emulator, tests/services/gcs.py): a chunk cut short in the bucket
  is found and its step set aside there too."""
  ckpt = checkpoint.Checkpointer(f'{gcs}/run', 1, 3, IDENTITY)
  for step in (1, 2):
    ckpt.maybe_save(step, tiny_state(step), {})
  ckpt.wait()
  chunks = [(len(p.read_bytes()), p) for p in epath.Path(gcs, 'run', 'checkpoints', '2', 'state', 'ocdbt.process_0',
                                                         'd').iterdir()]
  size, data = max(chunks)  # holds w's chunk
  data.write_bytes(data.read_bytes()[:size // 2])
  assert 'is cut short' in ckpt._damage(2)
  state, _ = ckpt.restore(tiny_state(0))
  assert int(state['step']) == 1 and ckpt.all_steps() == [1]
  assert epath.Path(gcs, 'run', 'checkpoints', '2.unreadable').is_dir()
  ckpt.close()


def failing_restore(ckpt, monkeypatch, error, times):
  """The manager's restore raises `error` on its first `times` calls; returns the list of raised calls."""
  restore, raised = ckpt.manager.restore, []

  def restore_or_fail(*args, **kwargs):
    if len(raised) < times:
      raised.append(error)
      raise error
    return restore(*args, **kwargs)
  monkeypatch.setattr(ckpt.manager, 'restore', restore_or_fail)
  return raised


@pytest.mark.parametrize('error', [ConnectionError('Connection reset by peer'), OSError(errno.EIO, 'I/O error')])
def test_a_storage_error_that_passes_is_retried(tiny_run, monkeypatch, error):
  folder, ckpt = tiny_run
  monkeypatch.setattr(checkpoint, 'RETRY_DELAY_S', 0)
  raised = failing_restore(ckpt, monkeypatch, error, times=checkpoint.RETRIES - 1)
  state, _ = ckpt.restore(tiny_state(0))
  assert int(state['step']) == 2 and len(raised) == checkpoint.RETRIES - 1
  assert sorted(os.listdir(folder)) == ['1', '2']


@pytest.mark.parametrize('error', [
    ConnectionError('Connection reset by peer'), TimeoutError('read timed out'), OSError(errno.EIO, 'I/O error'),
    OSError(errno.EAGAIN, 'Resource temporarily unavailable'),
    ValueError('UNAVAILABLE: Error reading "gs://b/run/checkpoints/2/state/d/0a": HTTP 503'),
    ValueError('DEADLINE_EXCEEDED: Error reading "gs://b/run/checkpoints/2/meta/metadata"'),
])
def test_a_storage_error_that_persists_is_an_error_and_renames_nothing(tiny_run, monkeypatch, error):
  folder, ckpt = tiny_run
  sleeps = []
  monkeypatch.setattr(checkpoint, 'time', types.SimpleNamespace(sleep=sleeps.append))
  raised = failing_restore(ckpt, monkeypatch, error, times=1000)
  with pytest.raises(CheckpointError, match=rf'Could not read the checkpoint at step 2 in .* in {checkpoint.RETRIES} '
                                            rf'tries \({type(error).__name__}: .*\)\. Nothing was renamed'):
    ckpt.restore(tiny_state(0))
  assert len(raised) == checkpoint.RETRIES  # each try stopped at its first read; never fell back to step 1
  assert sleeps == [checkpoint.RETRY_DELAY_S * 2 ** k for k in range(checkpoint.RETRIES - 1)]
  assert sorted(os.listdir(folder)) == ['1', '2'] and ckpt.all_steps() == [1, 2]


def test_a_storage_error_while_inspecting_a_failed_read_renames_nothing(tiny_run, monkeypatch):
  """The read fails on a cut-short chunk, but the storage fails too when the inspection looks at the files (EIO from
  the path library): damage is not established, so nothing is set aside."""
  folder, ckpt = tiny_run
  monkeypatch.setattr(checkpoint, 'RETRY_DELAY_S', 0)
  damage(folder / '2', 'truncated')
  path_type, stat = type(epath.Path(folder)), type(epath.Path(folder)).stat

  def failing_stat(self):
    if '/2/state/' in os.fspath(self):
      raise OSError(errno.EIO, 'Input/output error')
    return stat(self)
  monkeypatch.setattr(path_type, 'stat', failing_stat)
  with pytest.raises(CheckpointError, match=r'Could not read the checkpoint at step 2 .*inspecting it: OSError'):
    ckpt.restore(tiny_state(0))
  assert sorted(os.listdir(folder)) == ['1', '2']


def test_a_failure_the_inspection_does_not_explain_renames_nothing(tiny_run, monkeypatch):
  folder, ckpt = tiny_run
  failing_restore(ckpt, monkeypatch, RuntimeError('an incompatible reader'), times=1000)
  with pytest.raises(CheckpointError, match=r'step 2 .* cannot be restored \(RuntimeError: an incompatible reader\), '
                                            r'yet its files look complete\. Nothing was renamed: .* 2\.unreadable'):
    ckpt.restore(tiny_state(0))
  assert sorted(os.listdir(folder)) == ['1', '2']


def test_damage_seen_by_another_process_is_acted_on_by_all(tiny_run, monkeypatch):
  """Processes agree on the worst outcome: this one reads step 2 fine, another finds it damaged, so all set it
  aside; another that keeps getting storage errors makes all stop."""
  folder, ckpt = tiny_run
  other_process = {2: checkpoint.DAMAGED, 1: checkpoint.OK}  # by the step being read

  def worst(outcome):
    return max(outcome, other_process[ckpt.all_steps()[-1]])
  monkeypatch.setattr(checkpoint, '_worst', worst)
  state, _ = ckpt.restore(tiny_state(0))
  assert int(state['step']) == 1 and sorted(os.listdir(folder)) == ['1', '2.unreadable']
  monkeypatch.setattr(checkpoint, 'RETRY_DELAY_S', 0)  # another process whose storage keeps failing: nothing renamed
  monkeypatch.setattr(checkpoint, '_worst', lambda outcome: max(outcome, checkpoint.TRANSIENT))
  with pytest.raises(CheckpointError, match=rf'step 1 .* in {checkpoint.RETRIES} tries \(seen on another process\)\. '
                                            r'Nothing was renamed'):
    ckpt.restore(tiny_state(0))
  assert sorted(os.listdir(folder)) == ['1', '2.unreadable']


@pytest.mark.parametrize('target, named', [
    (dict(extra=True), r'params/extra is in this model, not in the checkpoint'),
    (dict(drop_b=True), r'params/b is in the checkpoint, not in this model'),
    (dict(shape=(64, 32)), r'params/w has shape \(64, 64\) in the checkpoint, \(64, 32\) in this model'),
    (dict(b_dtype=jnp.float32), r'params/b has dtype bfloat16 in the checkpoint, float32 in this model'),
])
def test_a_checkpoint_of_another_structure_is_refused_by_path_and_nothing_renamed(tiny_run, target, named):
  folder, ckpt = tiny_run
  with pytest.raises(CheckpointError, match=rf'checkpoint at step 2 in .* does not fit this model: {named}'):
    ckpt.restore(tiny_state(0, **target))
  assert sorted(os.listdir(folder)) == ['1', '2'] and ckpt.all_steps() == [1, 2]
