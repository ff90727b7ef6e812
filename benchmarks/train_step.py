"""Benchmark: images/s of the jitted train step (no input pipeline), for any config.

  python benchmarks/train_step.py --config=configs/googlenet.py:mini [--steps=20] [--config.batch_size=64]

Prints the model build and compile times and the steady-state throughput over `--steps` timed steps, so changes to
the model or XLA flags can be compared on the same machine.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from inception import models, optim, sharding, steps

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/googlenet.py:mini.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps after the warm-up step.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 10, 'Classifier outputs (the data source is not read).')


def main(_):
  config = _CONFIG.value
  size, batch_size = config.pp.image_size, config.batch_size
  t0 = time.time()
  model = models.build(config.model, num_classes=_NUM_CLASSES.value, image_size=size, rngs=nnx.Rngs(params=0))
  schedule = optim.make_schedule(config, steps_per_epoch=100, total_steps=100 * config.num_epochs)
  tx = optim.make_optimizer(config, schedule)
  model.train()
  graphdef, state = steps.create_train_state(model, tx, config.seed)
  t_build = time.time() - t0

  mesh = sharding.make_mesh()
  repl = sharding.replicated(mesh)
  state = jax.device_put(state, repl)
  rng = np.random.RandomState(0)
  batch = sharding.to_global({
      'image': rng.uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32),
      'label': rng.randint(0, _NUM_CLASSES.value, (batch_size,)).astype(np.int32)}, mesh)
  step = jax.jit(steps.make_train_step(graphdef, tx, schedule, config),
                 in_shardings=(repl, sharding.data_sharded(mesh)), out_shardings=(repl, repl), donate_argnums=0)
  t0 = time.time()
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  t_compile = time.time() - t0
  t0 = time.time()
  for _ in range(_STEPS.value):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  dt = (time.time() - t0) / _STEPS.value
  print(f'model {config.model.name} {config.model.dtype} {size}px batch {batch_size} on {mesh.devices.size} '
        f'{jax.devices()[0].platform} device(s): build {t_build:.1f}s, first step (compile) {t_compile:.1f}s, '
        f'{dt * 1000:.0f} ms/step, {batch_size / dt:.1f} images/s')


if __name__ == '__main__':
  app.run(main)
