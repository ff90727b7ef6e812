"""End to end in one process: the train step learns, bf16 keeps float32 state, BatchNorm is global, errors are clear.

On the smoke-test network (models/tiny.py), which compiles in seconds; GoogLeNet itself learns in CI's make train.

Multi-device and multi-process equality and kill-and-resume: tests/launch/test_local.py; the CLI run: CI's make train.
"""
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from configs import googlenet
from inception import augment, models, optim, sharding, steps, train
from inception.data import pipeline
from inception.errors import DivergedError
from inception.data.sources import in_val_split
from tests.data.bad_images import UNDECODABLE, make_bad_folder
from tests.runs import REPO, checkpoint_steps, copy_run, relative_difference, restore_state, tiny_config



def test_train_steps_lower_the_loss_on_embedded_data():
  """Ten steps on one fixed batch of real images: the loss on that batch falls."""
  c = googlenet.get_config('mini')
  c.model.name, c.pp.image_size = 'inception_tiny', 96
  c.batch_size = 16
  source = pipeline.build_source(c)
  batch = next(pipeline.train_batches(c, process_index=0, process_count=1))
  batch.pop('index')
  model = models.build(c.model, num_classes=source.num_classes, image_size=96, rngs=nnx.Rngs(params=0))
  schedule = lambda step: 0.02
  tx = optim.make_optimizer(c, schedule)
  model.train()
  graphdef, state = steps.create_train_state(model, tx, seed=0)
  step_fn = jax.jit(steps.make_train_step(graphdef, tx, schedule, c))
  losses = []
  for _ in range(10):
    state, m = step_fn(state, batch)
    losses.append(float(m['loss']))
  assert losses[-1] < 0.7 * losses[0], losses
  assert int(state.step) == 10


def test_bfloat16_compute_keeps_float32_parameters():
  """model.dtype=bfloat16: the step runs in bf16, the parameters and the optimizer state stay float32."""
  c = googlenet.get_config('mini')
  c.model.name, c.pp.image_size, c.batch_size, c.model.dtype = 'inception_tiny', 96, 8, 'bfloat16'
  batch = next(pipeline.train_batches(c, process_index=0, process_count=1))
  batch.pop('index')
  model = models.build(c.model, num_classes=10, image_size=96, rngs=nnx.Rngs(params=0))
  tx = optim.make_optimizer(c, lambda step: 0.01)
  model.train()
  graphdef, state = steps.create_train_state(model, tx, seed=0)
  state, metrics = jax.jit(steps.make_train_step(graphdef, tx, lambda step: 0.01, c))(state, batch)
  assert np.isfinite(float(metrics['loss']))
  leaves = jax.tree.leaves((state.params, state.opt_state, state.ema_params))
  assert {x.dtype for x in leaves if np.issubdtype(x.dtype, np.floating)} == {np.dtype(np.float32)}


def test_batchnorm_gradients_on_four_devices_match_one():
  """BN statistics are global under jit: splitting the batch over 4 devices changes the gradient no more than
  reordering it on one device does (BN's backward pass is sensitive to summation order at init: ~0.3%)."""
  c = googlenet.get_config('mini')
  c.model.name, c.pp.image_size, c.batch_size = 'inception_tiny', 96, 16
  # With the default CPU kernels. A max-pool VJP that matched window positions against the forward's output would move
  # this network's gradient by 9% when the batch is reordered on one device (XLA's own pool gradient: 4e-7).
  c.model.update(dropout_rate=0.0, aux_dropout_rate=0.0)
  batch = next(pipeline.train_batches(c, process_index=0, process_count=1))
  batch.pop('index')
  model = models.build(c.model, num_classes=10, image_size=96, rngs=nnx.Rngs(params=0))
  model.train()
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)

  def grads(params, model_state, batch):
    def loss_fn(p):
      images = augment.eval_images(batch['image'], augment.stage_pp(c.pp, 'train'))
      logits, aux = nnx.merge(graphdef, p, model_state, copy=True)(images)
      return steps.cross_entropy(logits, batch['label'], batch['mask'], 0.0) + 0.3 * sum(
          steps.cross_entropy(a, batch['label'], batch['mask'], 0.0) for a in aux)
    return jax.grad(loss_fn)(params)

  def run(devices, batch):
    mesh = sharding.make_mesh(devices)
    repl = sharding.replicated(mesh)
    fn = jax.jit(grads, in_shardings=(repl, repl, sharding.data_sharded(mesh)))
    return fn(jax.device_put(params, repl), jax.device_put(model_state, repl), sharding.to_global(batch, mesh))

  perm = np.random.RandomState(0).permutation(16)
  g1 = run(jax.devices()[:1], batch)
  g1_reordered = run(jax.devices()[:1], {k: v[perm] for k, v in batch.items()})
  g4 = run(jax.devices()[:4], batch)
  reorder_noise = relative_difference(g1, g1_reordered)
  assert reorder_noise < 0.02
  assert relative_difference(g1, g4) < 3 * reorder_noise + 1e-5


def test_missing_imagenet_stops_with_instructions_and_writes_nothing(tmp_path):
  workdir = tmp_path / 'run'
  proc = subprocess.run(
      [sys.executable, '-m', 'inception.main', '--config=configs/googlenet.py',
       f'--config.data.tfds_data_dir={tmp_path / "tfds"}', f'--config.workdir={workdir}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert 'imagenet2012' in proc.stderr and 'manual' in proc.stderr
  assert 'configs/googlenet.py:mini' in proc.stderr
  assert not workdir.exists()


def test_divergence_stops_with_the_step_named_and_keeps_the_last_good_checkpoint(finished_run, tmp_path):
  """--config.optimizer.lr=1e6 on a resumed run: DivergedError names the first non-finite step and the last good
  checkpoint, which stays the latest: no checkpoint of the bad state is written."""
  source, config, _ = finished_run
  workdir = copy_run(source, tmp_path / 'run')
  with pytest.raises(DivergedError) as error:
    train.train_and_evaluate(tiny_config(config.data.root, workdir, num_epochs=12, checkpoint_every_steps=2,
                                         **{'optimizer.lr': 1e6}))
  message = str(error.value)
  match = re.match(r'Step (\d+): the loss is (\S+) and the gradient norm (\S+) .*The last good checkpoint is step (\d+)\. '
                   r'.*nan_policy=skip', message)
  assert match and not np.isfinite(float(match.group(2)) + float(match.group(3))), message
  bad_step, last_good = int(match.group(1)), int(match.group(4))
  assert 4 < bad_step <= 12 and checkpoint_steps(workdir)[-1] == last_good < bad_step


def test_nan_policy_skip_skips_and_counts_the_bad_updates(finished_run, tmp_path):
  source, config, _ = finished_run
  workdir = copy_run(source, tmp_path / 'run')
  results = train.train_and_evaluate(tiny_config(config.data.root, workdir, num_epochs=12, checkpoint_every_steps=4,
                                                 nan_policy='skip', **{'optimizer.lr': 1e6}))
  assert results['train/nonfinite_steps'] >= 1
  _, state, meta = restore_state(workdir)
  assert meta['nonfinite_steps'] == results['train/nonfinite_steps']
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state['params']))
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  last = [r for r in rows if 'train/nonfinite_steps' in r][-1]
  assert last['step'] == 12 and last['train/nonfinite_steps'] == results['train/nonfinite_steps']


@pytest.mark.slow
def test_a_folder_of_every_kind_of_bad_file_trains_on_the_good_ones_and_counts_the_rest(tmp_path):
  """The bad-files folder (tests/data/bad_images.py) trains; the final line counts the undecodable files of each split:
  in training once per read (the global order says which reads hit one), in evaluation once each."""
  make_bad_folder(tmp_path / 'data')
  broken = next(f'broken_{k}.jpg' for k in range(1000) if in_val_split(f'odd/broken_{k}.jpg', 0.25))
  (tmp_path / 'data' / 'odd' / broken).write_bytes(b'\xff\xd8 a JPEG header, then nothing')  # lands in eval
  config = tiny_config(tmp_path / 'data', tmp_path / 'run', num_epochs=2, **{'data.max_bad_fraction': 0.5})
  results = train.train_and_evaluate(config)
  source = pipeline.build_source(config)
  bad = {split: {i for i, (path, _) in enumerate(source.files(split))
                 if os.path.basename(path) in UNDECODABLE + (broken,)} for split in ('train', 'eval')}
  assert bad['train'] and bad['eval']
  steps_run = 2 * (source.num_examples('train') // 8)
  order = pipeline.global_order(source.num_examples('train'), config.seed, global_batch=8, process_index=0,
                                process_count=1).take(steps_run * 8)
  reads_of_bad = sum(int(example) in bad['train'] for _, _, example in order.as_numpy_iterator())
  assert results['train/skipped_images'] == reads_of_bad > 0
  assert results['eval/skipped_images'] == len(bad['eval'])
  assert results['eval/examples'] == source.num_examples('eval') - len(bad['eval'])
  assert f'skipped images: train {reads_of_bad}, eval {len(bad["eval"])}' in train.final_line(results)
