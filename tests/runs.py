"""Helpers for the end-to-end tests: a tiny image folder, a tiny config, and reading back a run's checkpoint."""
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

from configs import googlenet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINI = os.path.join(REPO, 'data', 'caltech101-mini')

# The `mini` recipe shrunk to a few steps at 96 px, batch 8 (2 per device on 4 devices), on the smoke-test network
# (models/tiny.py: BatchNorm, dropout and an aux head, compiled in seconds), as dotted overrides: applied to a
# ConfigDict in-process (tiny_config) and passed as --config.* flags to a command (tiny_flags).
TINY = {
    'model.name': 'inception_tiny',
    'data.val_fraction': 0.25, 'pp.image_size': 96, 'batch_size': 8, 'eval_batch_size': 8, 'num_epochs': 2,
    'log_every_steps': 1, 'eval_every_epochs': 100, 'checkpoint_every_steps': 2,
}


def user_env() -> dict:
  """This process's environment for a command that trains for real as a user runs it: without the tests' quick-compile
  optimisation level and their 4 host devices (tests/conftest.py): its programs run at full speed on JAX's one CPU
  device, as a user's command does."""
  flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
           if not f.startswith(('--xla_backend_optimization_level', '--xla_force_host_platform_device_count'))]
  return {**os.environ, 'XLA_FLAGS': ' '.join(flags)}


def make_small_folder(root) -> str:
  """Two real classes, 12 images each, from the embedded data: ~14-18 train / ~6-10 eval images."""
  for cls in ('Faces_easy', 'Motorbikes'):
    os.makedirs(os.path.join(root, cls))
    for name in sorted(os.listdir(os.path.join(MINI, cls)))[:12]:
      shutil.copy(os.path.join(MINI, cls, name), os.path.join(root, cls, name))
  return str(root)


def tiny_overrides(root, workdir, **overrides) -> dict:
  return {**TINY, 'data.root': str(root), 'workdir': str(workdir), **overrides}


def tiny_config(root, workdir, variant='mini', **overrides):
  """The `variant` recipe with TINY and `overrides` (dotted keys, or plain top-level keys) applied."""
  c = googlenet.get_config(variant)
  for key, value in tiny_overrides(root, workdir, **overrides).items():
    *parents, leaf = key.split('.')
    node = c
    for part in parents:
      node = node[part]
    node[leaf] = value
  return c


def tiny_flags(root, workdir, variant='mini', **overrides) -> list:
  """The same run as tiny_config, as inception.main's command-line arguments."""
  return [f'--config=configs/googlenet.py:{variant}'] + [
      f'--config.{k}={v}' for k, v in tiny_overrides(root, workdir, **overrides).items()]


def restore_state(workdir, step=None):
  """Checkpoint `step` (None: the latest) as (step, TrainState as arrays on this process's first device, meta).

  Works whatever topology wrote it (e.g. a 2-process run read back in the one-process test).
  """
  mgr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_handlers={
      'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()})
  step = mgr.latest_step() if step is None else step
  metadata = mgr.item_metadata(step)['state']
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
  restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                       meta=ocp.args.JsonRestore()))
  mgr.close()
  return step, restored['state'], restored['meta']


def assert_trees_close(a, b, **tol):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


def relative_difference(a, b) -> float:
  """||a - b|| / ||a|| over all leaves of two pytrees."""
  num = sum(np.sum((np.asarray(x) - np.asarray(y)) ** 2) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  return float(np.sqrt(num / sum(np.sum(np.asarray(x) ** 2) for x in jax.tree.leaves(a))))


def copy_run(source, target) -> str:
  """A copy of a finished run's workdir to try things on (the original stays as it is)."""
  shutil.copytree(source, target)
  return str(target)


def checkpoint_steps(workdir) -> list:
  """The step folders in workdir/checkpoints, sorted."""
  return sorted(int(p) for p in os.listdir(os.path.join(workdir, 'checkpoints')) if p.isdigit())
