"""What a workdir accepts (inception/workdir.py, train.py): safe config changes resume and keep the old config.json,
unsafe ones and shorter runs are refused with nothing written, an unwritable folder is refused before training."""
import json
import os
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest

from inception import train, workdir as workdir_lib
from inception.errors import WorkdirError
from tests.runs import checkpoint_steps, copy_run, restore_state, tiny_config


def snapshot(workdir: pathlib.Path) -> dict:
  """Every file's bytes under workdir (to prove nothing was written)."""
  return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob('*')) if p.is_file()}


@pytest.mark.parametrize('override, refused', [
    ({'batch_size': 4}, 'batch_size: 8 -> 4'),
    ({'seed': 1}, 'seed: 0 -> 1'),
    ({'data.val_fraction': 0.3}, 'data.val_fraction: 0.25 -> 0.3'),
    ({'data.class_share': ('Motorbikes', 0.25)}, r"data.class_share: \[\] -> \['Motorbikes', 0.25\]"),
])
def test_changes_that_make_another_run_are_refused_and_nothing_is_written(finished_run, tmp_path, override, refused):
  source, config, _ = finished_run
  workdir = pathlib.Path(copy_run(source, tmp_path / 'run'))
  before = snapshot(workdir)
  with pytest.raises(WorkdirError, match=f'cannot continue: {refused}.*new --config.workdir'):
    train.train_and_evaluate(tiny_config(config.data.root, workdir, num_epochs=4, **override))
  assert snapshot(workdir) == before


def test_fewer_steps_than_the_checkpoint_is_refused_and_nothing_is_written(finished_run, tmp_path):
  source, config, _ = finished_run
  workdir = pathlib.Path(copy_run(source, tmp_path / 'run'))
  before = snapshot(workdir)
  with pytest.raises(WorkdirError, match=r"at step 4, past this config's 2 steps.*num_epochs"):
    train.train_and_evaluate(tiny_config(config.data.root, workdir, num_epochs=2))
  assert snapshot(workdir) == before


def test_more_epochs_resume_and_the_previous_config_is_kept(finished_run, tmp_path):
  source, config, _ = finished_run
  workdir = pathlib.Path(copy_run(source, tmp_path / 'run'))
  old_config = (workdir / 'config.json').read_text()
  results = train.train_and_evaluate(tiny_config(config.data.root, workdir, num_epochs=6, checkpoint_every_steps=2,
                                                 **{'optimizer.lr': 0.01}))
  assert checkpoint_steps(workdir)[-1] == 6 and results['eval/examples'] > 0
  assert (workdir / 'config.before_step_4.json').read_text() == old_config
  assert json.loads((workdir / 'config.json').read_text())['num_epochs'] == 6
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows if 'train/loss' in r] == list(range(1, 7))


def test_a_finished_run_resumed_evaluates_without_training_or_rewriting(finished_run, tmp_path):
  source, config, results = finished_run
  workdir = pathlib.Path(copy_run(source, tmp_path / 'run'))
  again = train.train_and_evaluate(tiny_config(config.data.root, workdir, num_epochs=4, checkpoint_every_steps=2))
  assert again['eval_ema/top1'] == results['eval_ema/top1']
  assert checkpoint_steps(workdir) == [2, 4] and not list(workdir.glob('config.before_*'))
  np.testing.assert_array_equal(jax.tree.leaves(restore_state(source)[1])[0],
                                jax.tree.leaves(restore_state(str(workdir))[1])[0])


def test_unwritable_workdir_is_refused_before_any_work(small_images, tmp_path):
  link = tmp_path / 'run'
  os.symlink('/proc/self/fdinfo', link)  # nothing can be created there, not even by root
  with pytest.raises(WorkdirError, match=r'Cannot write in .*run.*--config.workdir'):
    train.train_and_evaluate(tiny_config(small_images, link / 'sub'))


def test_config_changes_lists_only_differences():
  config = tiny_config('/data', '/w')
  previous = json.loads(config.to_json_best_effort())
  assert workdir_lib.config_changes(previous, config) == []
  previous['optimizer']['lr'] = 0.5
  previous['pp']['value_range'] = [-1.0, 1.0]  # JSON lists equal the config's tuples
  assert workdir_lib.config_changes(previous, config) == [f'optimizer.lr: 0.5 -> {config.optimizer.lr!r}']


def test_another_data_folder_or_other_excluded_classes_are_refused_and_nothing_is_written(finished_run, tmp_path):
  """data.root and data.exclude_classes decide which images the checkpoint learned from: another folder (here a copy
  holding the same images) or other excluded classes are refused before anything is written."""
  source, config, _ = finished_run
  workdir = pathlib.Path(copy_run(source, tmp_path / 'run'))
  before = snapshot(workdir)
  other = str(shutil.copytree(config.data.root, tmp_path / 'images'))
  with pytest.raises(WorkdirError, match=re.escape(f"cannot continue: data.root: {config.data.root!r} -> {other!r}")):
    train.train_and_evaluate(tiny_config(other, workdir, num_epochs=4))
  assert snapshot(workdir) == before
  # A run that left out a class (the data has two, the least a classifier takes: its config.json says so instead).
  saved = json.loads((workdir / 'config.json').read_text())
  saved['data']['exclude_classes'] = ['Airplanes']
  (workdir / 'config.json').write_text(json.dumps(saved))
  before = snapshot(workdir)
  with pytest.raises(WorkdirError, match=re.escape("cannot continue: data.exclude_classes: ['Airplanes'] -> []")):
    train.train_and_evaluate(tiny_config(config.data.root, workdir, num_epochs=4))
  assert snapshot(workdir) == before


def test_the_same_data_folder_written_otherwise_is_no_change(finished_run, tmp_path):
  """The run's absolute data.root given relative to the cwd, through a symbolic link or with a trailing slash names
  the same folder: the resume is allowed and logs no change; so is the same set of excluded classes in another order."""
  source, config, _ = finished_run
  workdir = pathlib.Path(copy_run(source, tmp_path / 'run'))
  root = config.data.root
  os.symlink(root, tmp_path / 'link')
  for same in (os.path.relpath(root), str(tmp_path / 'link'), root + '/'):
    assert workdir_lib.check_resume(workdir, tiny_config(same, workdir, num_epochs=4, checkpoint_every_steps=2),
                                    has_checkpoint=True) == []
  assert not workdir_lib.same_data_root(root, str(tmp_path))
  assert not workdir_lib.same_data_root('data/missing', str(tmp_path / 'data' / 'missing'))  # not folders: as written
  previous = json.loads(tiny_config(root, workdir, **{'data.exclude_classes': ('a', 'b')}).to_json_best_effort())
  assert workdir_lib.config_changes(previous, tiny_config(root, workdir, **{'data.exclude_classes': ('b', 'a')})) == []
