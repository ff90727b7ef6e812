"""End to end: the train step learns, 1 device equals 4, a resumed run equals an uninterrupted one, errors are clear."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from configs import googlenet
from inception import models, optim, sharding, steps, train
from inception.data import pipeline
from tests.runs import (REPO, assert_trees_close, make_small_folder, relative_difference, restore_state,
                        tiny_config)



@pytest.fixture(scope='module')
def small_folder(tmp_path_factory):
  return make_small_folder(tmp_path_factory.mktemp('images'))


def test_train_steps_lower_the_loss_on_embedded_data():
  """Ten steps on one fixed batch of real images: the loss on that batch falls."""
  c = googlenet.get_config('mini')
  c.pp.image_size = 96
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
  c.pp.image_size, c.batch_size, c.model.dtype = 96, 8, 'bfloat16'
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
  c.pp.image_size, c.batch_size = 96, 16
  c.model.update(dropout_rate=0.0, aux_dropout_rate=0.0)
  batch = next(pipeline.train_batches(c, process_index=0, process_count=1))
  batch.pop('index')
  model = models.build(c.model, num_classes=10, image_size=96, rngs=nnx.Rngs(params=0))
  model.train()
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)

  def grads(params, model_state, batch):
    def loss_fn(p):
      logits, aux = nnx.merge(graphdef, p, model_state, copy=True)(batch['image'])
      return steps.cross_entropy(logits, batch['label'], 0.0) + 0.3 * sum(
          steps.cross_entropy(a, batch['label'], 0.0) for a in aux)
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


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(small_folder, tmp_path):
  straight = tmp_path / 'straight'
  results = train.train_and_evaluate(tiny_config(small_folder, straight, num_epochs=2))
  interrupted = tmp_path / 'interrupted'
  train.train_and_evaluate(tiny_config(small_folder, interrupted, num_epochs=1))   # stops half way
  step_half, _, meta_half = restore_state(str(interrupted))
  assert meta_half['positions'][0] == step_half * 8
  resumed = train.train_and_evaluate(tiny_config(small_folder, interrupted, num_epochs=2))
  step_a, state_a, meta_a = restore_state(str(straight))
  step_b, state_b, meta_b = restore_state(str(interrupted))
  assert step_a == step_b == 2 * step_half
  assert meta_a == meta_b
  assert_trees_close(state_a, state_b, rtol=1e-6, atol=1e-7)
  assert resumed['eval_ema/top1'] == results['eval_ema/top1']
  for name in ('config.json', 'metrics.jsonl', 'final_eval.json'):
    assert os.path.exists(interrupted / name)
  assert os.listdir(interrupted / 'tensorboard')


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


@pytest.mark.slow
def test_command_line_run_prints_final_eval(small_folder, tmp_path):
  """The README's command, shrunk: it trains, checkpoints and ends with the `final eval` line."""
  workdir = tmp_path / 'cli'
  proc = subprocess.run(
      [sys.executable, '-m', 'inception.main', '--config=configs/googlenet.py:mini',
       f'--config.data.root={small_folder}', f'--config.workdir={workdir}', '--config.pp.image_size=96',
       '--config.batch_size=8', '--config.eval_batch_size=8', '--config.num_epochs=1'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  last = proc.stdout.strip().splitlines()[-1]
  assert last.startswith('final eval') and 'top1=' in last and 'top5=' in last
  top1 = float(last.split('top1=')[1].split()[0])
  assert 0.0 <= top1 <= 1.0
  assert os.listdir(workdir / 'checkpoints')
