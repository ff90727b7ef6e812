"""MultiBox through the training loop (configs/multibox.py): the box source and transform, the task's checks, a tiny
run whose loss falls, its priors.json, and top_boxes read back from its workdir agreeing with the loop's recall."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from configs import multibox as multibox_configs
from inception import train
from inception.augment import stage_pp
from inception.config_checks import ConfigError
from inception.data import box_transforms
from inception.data.sources import build_source
from inception.detection import coverage
from inception.detection import multibox_proposals
from inception.detection import multibox_task
from inception.errors import DataError, WorkdirError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BCCD = os.path.join(REPO, 'data', 'bccd')


def _bccd_subset(root, train_count=8, val_count=8):
  """A VOC folder with BCCD's annotations and images (linked) and splits of its first train and val images."""
  os.makedirs(os.path.join(root, 'ImageSets', 'Main'))
  for sub in ('Annotations', 'JPEGImages'):
    os.symlink(os.path.join(BCCD, sub), os.path.join(root, sub))
  for split, count in (('train', train_count), ('val', val_count)):
    with open(os.path.join(BCCD, 'ImageSets', 'Main', f'{split}.txt')) as f:
      ids = f.read().split()[:count]
    with open(os.path.join(root, 'ImageSets', 'Main', f'{split}.txt'), 'w') as f:
      f.write(''.join(i + '\n' for i in ids))
  return str(root)


def _config(root, workdir, **overrides):
  c = multibox_configs.get_config('bccd')
  c.data.root, c.workdir, c.compile_cache = str(root), str(workdir), ''
  c.model.num_priors, c.model.head_grid, c.model.head_hidden, c.model.head_channels = 24, 4, 64, 16
  c.multibox.top_k = 20
  c.pp.image_size, c.batch_size, c.eval_batch_size = 64, 8, 8
  c.num_epochs, c.log_every_steps, c.eval_every_epochs, c.checkpoint_every_steps = 40, 4, 100, 100
  c.model.dropout_rate = 0.0
  c.pp.train = dict(name='resize_boxes')  # no mirrors, no colour distortions: the same batch every step
  c.schedule.warmup_epochs, c.optimizer.lr = 0, 0.2
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = c
    for part in parents:
      node = node[part]
    node[leaf] = value
  return c


@pytest.fixture(scope='module')
def subset(tmp_path_factory):
  return _bccd_subset(tmp_path_factory.mktemp('bccd_subset') / 'voc')


@pytest.fixture(scope='module')
def finished(subset, tmp_path_factory):
  """A 40-step MultiBox run on 8 BCCD images at 64 px (inception_tiny backbone): one batch, seen 40 times."""
  workdir = tmp_path_factory.mktemp('multibox_run') / 'run'
  config = _config(subset, workdir)
  results = train.train_and_evaluate(config)
  return str(workdir), config, results


def test_flips_move_the_boxes_with_the_pixels():
  image = np.zeros([40, 80, 3], np.uint8)
  image[4:12, 8:24] = 255  # rows 4-11, columns 8-23: the box (8, 4, 24, 12) of an 80 x 40 image
  boxes = tf.constant([[8 / 80, 4 / 40, 24 / 80, 12 / 40], [0, 0, 0, 0]], tf.float32)
  encoded = tf.io.encode_png(image)
  pp = stage_pp(multibox_configs.get_config('bccd').pp, 'train')
  pp.image_size, pp.brightness = 40, 0.0
  flipped = np.zeros(2, int)
  for seed in range(16):  # both mirrors at random: the box must follow the bright patch each time
    out, moved = box_transforms.resize_boxes(encoded, tf.constant([seed, 0], tf.int64), pp, boxes=boxes)
    out, moved = out.numpy(), moved.numpy()
    np.testing.assert_array_equal(moved[1], 0.0)  # padding stays zero
    rows, columns = np.nonzero(out[..., 0] > 128)
    x0, y0, x1, y1 = moved[0] * 40
    assert abs(columns.min() - x0) <= 1 and abs(columns.max() + 1 - x1) <= 1
    assert abs(rows.min() - y0) <= 1 and abs(rows.max() + 1 - y1) <= 1
    flipped += [not np.isclose(moved[0, 0], boxes[0, 0]), not np.isclose(moved[0, 1], boxes[0, 1])]
  assert np.all((0 < flipped) & (flipped < 16)), flipped  # each mirror drawn for some seeds, not for others
  eval_pp = stage_pp(multibox_configs.get_config('bccd').pp, 'eval')
  eval_pp.image_size = 40
  only = box_transforms.resize_boxes(encoded, tf.constant([0, 0], tf.int64), eval_pp)
  assert only.shape == (40, 40, 3)  # without boxes: the image alone, as any transform


def test_box_source_reads_normalised_padded_boxes(subset):
  config = _config(subset, '/unused')
  source = build_source(config)
  assert (source.num_examples('train'), source.num_examples('eval')) == (8, 8)
  assert source.class_names == ['RBC', 'WBC', 'Platelets']
  record = source.voc_split('train').records[0]
  example = next(iter(source.records('train', process_index=0, process_count=1)))
  boxes = example['boxes'].numpy()
  n = len(record.boxes)
  np.testing.assert_allclose(boxes[:n] * [640, 480, 640, 480], record.boxes, atol=1e-3)
  np.testing.assert_array_equal(boxes[n:], 0.0)
  assert source.training_boxes().shape == (sum(len(r.boxes) for r in source.voc_split('train').records), 4)
  config.data.max_boxes = 5
  with pytest.raises(DataError, match='more than --config.data.max_boxes=5: raise it to'):
    build_source(config)


@pytest.mark.parametrize('key, value, message', [
    ('model.name', 'googlenet_bn', 'set --config.model.name=multibox'),
    ('pp.train.name', 'central_crop', "pp.train.name='central_crop' does not move boxes"),
])
def test_the_task_refuses_a_config_it_cannot_train(subset, tmp_path, key, value, message):
  config = _config(subset, tmp_path / 'run', **{key: value})
  with pytest.raises(ConfigError, match=message):
    multibox_task.MultiBoxTask(config, build_source(config), str(tmp_path / 'run'), resuming=False)


def test_the_priors_file(tmp_path):
  priors = np.random.default_rng(0).uniform(0, 1, (5, 4))
  assert multibox_task.read_priors(tmp_path) is None
  multibox_task.write_priors(tmp_path, priors)
  np.testing.assert_array_equal(multibox_task.read_priors(tmp_path), priors)  # float64 exactly
  (tmp_path / 'priors.json').write_text('{"priors": [[1, 2, 3]]}')
  with pytest.raises(WorkdirError, match=r'shape \(1, 3\)'):
    multibox_task.read_priors(tmp_path)
  (tmp_path / 'priors.json').write_text('{"pri')
  with pytest.raises(WorkdirError, match='is damaged'):
    multibox_task.read_priors(tmp_path)


def test_a_tiny_run_learns_and_keeps_its_priors(finished, subset):
  workdir, config, results = finished
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  losses = [r['train/loss'] for r in rows if 'train/loss' in r]
  assert len(losses) == 10 and all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses  # it learns the batch's boxes by heart
  priors = multibox_task.read_priors(workdir)
  np.testing.assert_array_equal(priors, multibox_task.compute_priors(config, build_source(config)))
  assert 0 < results['eval_ema/recall'] <= 1 and results['eval/examples'] == 8
  assert 'recall=' in train.final_line(results) and 'raw_recall=' in train.final_line(results)


def test_top_boxes_agree_with_the_loops_recall(finished):
  workdir, config, results = finished
  records = build_source(config).voc_split('eval').records
  found = multibox_proposals.top_boxes(workdir, records, top_k=config.multibox.top_k)
  assert sorted(found) == sorted(r.image_id for r in records)
  for record in records:
    boxes = found[record.image_id]
    assert boxes.dtype == np.float64 and 0 < len(boxes) <= 20
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= record.width) and np.all(boxes[:, 3] <= record.height)
    assert np.all(boxes[:, 2:] > boxes[:, :2])
  recall = coverage.recall(records, found, ['RBC', 'WBC', 'Platelets'], config.multibox.recall_iou)
  # The loop's recall (float32 on the device) and coverage's (float64) may differ by a box at the threshold.
  assert abs(recall['recall'] - results['eval_ema/recall']) <= 1.5 / recall['boxes']
  fewer = multibox_proposals.top_boxes(workdir, records[:2], top_k=3)
  np.testing.assert_array_equal(fewer[records[0].image_id], found[records[0].image_id][:3])


def test_top_boxes_needs_a_multibox_run(finished, tmp_path):
  workdir, _, _ = finished
  copy = tmp_path / 'copy'
  os.makedirs(copy)
  (copy / 'config.json').write_text(open(os.path.join(workdir, 'config.json')).read())
  with pytest.raises(WorkdirError, match='has no priors.json'):
    multibox_proposals.top_boxes(str(copy), [], top_k=5)
  config = json.loads((copy / 'config.json').read_text())
  config['task'] = 'classification'
  (copy / 'config.json').write_text(json.dumps(config))
  with pytest.raises(WorkdirError, match='not a MultiBox one'):
    multibox_proposals.top_boxes(str(copy), [], top_k=5)


def test_steps_exported_for_accelerators_carry_no_cpu_kernel(subset, tmp_path):
  """As tests/models/test_ops.py checks for the classifiers: the MultiBox train and eval steps, traced once, exported
  for TPU and CUDA hold no CPU-only custom call (the matching's loop and the head's resampling are XLA's)."""
  import jax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from inception import models, optim, steps  # pylint: disable=import-outside-toplevel
  from inception.evaluators import multibox as multibox_evaluator  # pylint: disable=import-outside-toplevel
  from tests.models.test_ops import PORTABLE_CALLS, _custom_calls  # pylint: disable=import-outside-toplevel
  config = _config(subset, tmp_path / 'run')
  task = multibox_task.MultiBoxTask(config, build_source(config), str(tmp_path / 'run'), resuming=False)
  schedule = optim.make_schedule(config, steps_per_epoch=1, total_steps=1)
  tx = optim.make_optimizer(config, schedule)
  graphdefs = {}

  def init():
    model = models.build(config.model, num_classes=3, image_size=64, rngs=nnx.Rngs(params=0))
    model.train()
    graphdefs['train'], state = steps.create_train_state(model, tx, seed=0)
    model.eval()
    graphdefs['eval'] = nnx.split(model, nnx.Param, ...)[0]
    return state

  state = jax.eval_shape(init)
  batch = {'image': jax.ShapeDtypeStruct((2, 64, 64, 3), np.uint8), 'seed': jax.ShapeDtypeStruct((2, 2), np.uint32),
           'label': jax.ShapeDtypeStruct((2,), np.int32), 'mask': jax.ShapeDtypeStruct((2,), np.float32),
           'boxes': jax.ShapeDtypeStruct((2, config.data.max_boxes, 4), np.float32)}
  train_step = jax.jit(steps.make_train_step(graphdefs['train'], tx, schedule, config, task.loss))
  eval_step = jax.jit(multibox_evaluator.make_eval_step(graphdefs['eval'], config, task.priors))
  for step, args in ((train_step, (state, batch)), (eval_step, (state.params, state.model_state, batch))):
    exported = jax.export.export(step, platforms=('tpu', 'cuda'))(*args).mlir_module()
    assert _custom_calls(exported) <= PORTABLE_CALLS, _custom_calls(exported)


@pytest.mark.parametrize('key, value', [('multibox.offset_scale', 0.0), ('multibox.top_k', 0),
                                        ('multibox.recall_iou', 1.5), ('data.max_boxes', 0)])
def test_bad_settings_are_one_line_config_errors(key, value):
  from inception import config_checks  # pylint: disable=import-outside-toplevel
  config = multibox_configs.get_config('bccd')
  config_checks.check_config(config)
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value
  with pytest.raises(ConfigError, match=f'--config.{key}={value!r}: expected'):
    config_checks.check_config(config)
