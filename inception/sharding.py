"""The device mesh and data placement: one `data` axis over every device of every host.

Parameters and optimizer state are replicated; batches are split along the mesh's `data` axis. Under `jax.jit` the
compiler then inserts one gradient all-reduce per step, as `pmap` data parallelism did, without per-device code.
"""
from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from inception.config_checks import ConfigError

DATA_AXIS = 'data'


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """The leading (batch) dimension is split over the `data` axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh, what: str = 'batch_size'):
  """Raises a clear error when the global batch does not split evenly over devices and processes."""
  n = mesh.devices.size
  if global_batch % n or global_batch % jax.process_count():
    raise ConfigError(f'--config.{what}={global_batch} must be divisible by the {n} devices '
                      f'({jax.process_count()} processes): set it to a multiple of {n}.')


def to_global(batch, mesh: Mesh):
  """Turns this process's numpy batch (leading dim = local batch) into global arrays sharded on `data`."""
  sharding = data_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
