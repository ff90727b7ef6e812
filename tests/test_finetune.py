"""Fine-tuning from another run (`init_from`): loaded, re-initialised and unused arrays, another class count, a
frozen backbone, and the errors for a run of another architecture."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from inception import finetune, models, train
from inception.errors import WorkdirError
from tests.runs import MINI, REPO, restore_state, tiny_config


def three_classes(root):
  for cls in ('Faces_easy', 'Motorbikes', 'watch'):
    os.makedirs(os.path.join(root, cls))
    for name in sorted(os.listdir(os.path.join(MINI, cls)))[:8]:
      shutil.copy(os.path.join(MINI, cls, name), os.path.join(root, cls, name))
  return str(root)


def flat(tree):
  return {k: np.asarray(v) for k, v in finetune._flat(tree).items()}  # pylint: disable=protected-access


def test_initialize_from_loads_the_backbone_and_renews_the_classifiers(finished_run):
  """From the 2-class finished run into a fresh 3-class model: every backbone array (parameters and BatchNorm
  statistics) is the source's EMA one; the classifier and the aux classifier keep their new initialisation."""
  source_dir, config, _ = finished_run
  _, source, _ = restore_state(source_dir)
  model = models.build(config.model, num_classes=3, image_size=config.pp.image_size, rngs=nnx.Rngs(params=1))
  _, params, model_state = nnx.split(model, nnx.Param, ...)
  fresh = flat(nnx.to_pure_dict(params))
  params, model_state, report = finetune.initialize_from(source_dir, params, model_state, ('head', 'aux_3a'))
  renewed = {'head/fc/kernel', 'head/fc/bias', 'aux_3a/classifier/kernel', 'aux_3a/classifier/bias'}
  assert set(report['reinit']) == renewed and report['unused'] == []
  new, src = flat(nnx.to_pure_dict(params)), flat(source['ema_params'])
  for k in new:
    np.testing.assert_array_equal(new[k], fresh[k] if k in renewed else src[k], err_msg=k)
  stats, src_stats = flat(nnx.to_pure_dict(model_state)), flat(source['ema_model_state'])
  for k in stats:
    np.testing.assert_array_equal(stats[k], src_stats[k], err_msg=k)


def test_fine_tuning_with_a_frozen_backbone_trains_only_the_heads(finished_run, tmp_path):
  """The loop with init_from onto 3 classes and freeze_backbone: after training the backbone is exactly the source's
  EMA weights, the heads moved, the classifier has 3 outputs."""
  source_dir = finished_run[0]
  _, source, _ = restore_state(source_dir)
  c = tiny_config(three_classes(tmp_path / 'images'), tmp_path / 'run', num_epochs=2, init_from=source_dir,
                  freeze_backbone=True)
  c.ema.decay = 0.0  # the EMA is the weights themselves, so the checks below read the trained weights
  train.train_and_evaluate(c)
  _, tuned, _ = restore_state(str(tmp_path / 'run'))
  src, new = flat(source['ema_params']), flat(tuned['params'])
  assert set(src) == set(new) and new['head/fc/kernel'].shape[-1] == 3
  heads = {k for k in new if k.split('/')[0] in ('head', 'aux_3a')}
  for k in set(new) - heads:
    np.testing.assert_array_equal(new[k], src[k], err_msg=k)  # frozen: not even weight decay moved it
  loaded_heads = {k for k in heads if new[k].shape == src[k].shape}
  assert loaded_heads and any(not np.array_equal(new[k], src[k]) for k in loaded_heads)  # the heads trained


def test_a_backbone_of_another_shape_is_an_error_naming_the_array():
  target = {'conv1/conv/kernel': np.zeros((7, 7, 3, 32)), 'head/fc/kernel': np.zeros((4, 3))}
  with pytest.raises(WorkdirError, match='backbone does not match.*conv1/conv/kernel: \\(7, 7, 3, 64\\) there'):
    finetune.merge(target, {'conv1/conv/kernel': np.zeros((7, 7, 3, 64))}, ('head',), 'parameter', 'W')
  merged, reinit, unused = finetune.merge(
      target, {'conv1/conv/kernel': np.ones((7, 7, 3, 32)), 'head/fc/kernel': np.ones((4, 2)),
               'aux/fc/kernel': np.ones(2)}, ('head',), 'parameter', 'W')
  assert merged['conv1/conv/kernel'].sum() == 7 * 7 * 3 * 32 and reinit == ['head/fc/kernel']
  assert unused == ['aux/fc/kernel']


def test_init_from_names_a_missing_run_and_parses_steps(tmp_path):
  assert finetune.parse_init_from('runs/a:1200') == ('runs/a', 1200)
  assert finetune.parse_init_from('gs://bucket/run') == ('gs://bucket/run', None)
  with pytest.raises(WorkdirError, match='no checkpoints/ folder'):
    finetune.read_weights(str(tmp_path))


def test_the_backbone_learns_at_backbone_lr_scale_times_the_heads_rate():
  """SGD momentum through finetune.optimizer: each backbone update is exactly 0.1 x the plain optimizer's, the heads'
  unchanged; freeze_backbone gives the backbone no update at all."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  params = {'head': {'w': jnp.ones(3)}, 'stem': {'w': jnp.ones(4)}}
  grads = {'head': {'w': jnp.arange(3.0)}, 'stem': {'w': jnp.arange(4.0) + 1}}
  plain = optax.sgd(0.5, momentum=0.9)
  config = ml_collections.ConfigDict(dict(freeze_backbone=False, backbone_lr_scale=0.1))
  for tx, backbone_factor in ((finetune.optimizer(plain, config, ('head',)), 0.1),
                              (finetune.optimizer(plain, ml_collections.ConfigDict(dict(freeze_backbone=True)),
                                                  ('head',)), 0.0)):
    state, ref_state = tx.init(params), plain.init(params)
    for _ in range(3):  # the momentum carries over steps in each part's own state
      updates, state = tx.update(grads, state, params)
      ref, ref_state = plain.update(grads, ref_state, params)
      np.testing.assert_allclose(updates['head']['w'], ref['head']['w'], rtol=1e-6)
      np.testing.assert_allclose(updates['stem']['w'], backbone_factor * ref['stem']['w'], rtol=1e-6)
  assert finetune.optimizer(plain, ml_collections.ConfigDict(dict(backbone_lr_scale=1.0)), ('head',)) is plain


def test_a_source_built_or_fed_otherwise_is_refused_with_the_overrides_to_use(tmp_path):
  """A converted timm run (bn_scale=True, its config.json) into a bn_scale=False config: the error names the key and
  the flag; an extra BatchNorm scale in a stage the model has is refused even without config.json."""
  from configs import inception_v3  # pylint: disable=import-outside-toplevel
  source = tmp_path / 'timm_run'
  source.mkdir()
  theirs = inception_v3.get_config('')
  theirs.model.bn_scale = True
  theirs.pp.mean = (0.5, 0.5, 0.5)
  (source / 'config.json').write_text(theirs.to_json_best_effort())
  ours = inception_v3.get_config('')
  with pytest.raises(WorkdirError, match=r"model.bn_scale=True, pp.mean=\[0.5, 0.5, 0.5\]; this config has "
                                         r"model.bn_scale=False.*--config.model.bn_scale=True "
                                         r'"--config.pp.mean=\(0.5, 0.5, 0.5\)"'):
    finetune.check_source_config(str(source), ours)
  ours.model.bn_scale, ours.pp.mean = True, (0.5, 0.5, 0.5)
  finetune.check_source_config(str(source), ours)  # the same settings: accepted
  target = {'mixed_5b/branch_0/bn/bias': np.zeros(2), 'head/fc/kernel': np.zeros((2, 3))}
  with pytest.raises(WorkdirError, match=r"parameters this model's backbone lacks \(1, e.g. mixed_5b/branch_0/bn/sc"):
    finetune.merge(target, {**target, 'mixed_5b/branch_0/bn/scale': np.ones(2)}, ('head',), 'parameter', 'x')
  merged, _, unused = finetune.merge(target, {**target, 'aux_6e/fc/kernel': np.ones(2)}, ('head',), 'parameter', 'x')
  assert unused == ['aux_6e/fc/kernel'] and set(merged) == set(target)  # another model's aux head: left unused


FULL_CALTECH = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'caltech101')


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(FULL_CALTECH), reason='the full Caltech 101 is not at ../shared/data/caltech101')
def test_the_readme_pretrain_then_fine_tune_commands(tmp_path):
  """configs/finetune.py:mini_pretrain then :mini through the command line, shortened at 64 px to a tenth of an epoch
  (7 steps) and 1 epoch: the pretraining sees the 91 other classes, the fine-tuning loads its whole backbone and renews
  the 10-class heads."""
  short = ['--config.pp.image_size=64', '--config.eval_every_epochs=1']
  pretrained, tuned = str(tmp_path / 'caltech91'), str(tmp_path / 'tuned')
  runs = [['--config=configs/finetune.py:mini_pretrain', f'--config.data.root={FULL_CALTECH}',
           f'--config.workdir={pretrained}', '--config.num_epochs=0.1'],
          ['--config=configs/finetune.py:mini', f'--config.init_from={pretrained}', f'--config.workdir={tuned}',
           '--config.num_epochs=1']]
  logs = []
  for args in runs:
    out = subprocess.run([sys.executable, '-m', 'inception.main', *args, *short], cwd=REPO, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1].startswith('final eval'), out.stderr[-3000:]
    logs.append(out.stderr)
  assert 'Training on 4483 examples of 91 classes' in logs[0]
  assert f'init_from {pretrained} (step 7, EMA weights): loaded 299 arrays; re-initialised 6' in logs[1]
