"""Checkpoint integrity (inception/checkpoint.py): an unreadable newest checkpoint falls back to the previous one and is
kept, another model's workdir is refused by name, and a save that fails stops the run at once."""
import os
import pathlib
import shutil

import jax
import pytest

from inception import checkpoint, train
from inception.errors import CheckpointError, WorkdirError
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


def test_all_agree_and_mismatch_helpers():
  assert checkpoint._all_agree(True) and not checkpoint._all_agree(False)
  assert checkpoint._mismatch({'model': 'a', 'image_size': 96}, {'model': 'a', 'image_size': 96}) is None
  assert checkpoint._mismatch({'model': 'a'}, {}) is None  # older checkpoints without the record pass
  assert 'model' in checkpoint._mismatch({'model': 'a'}, {'model': 'b'})
