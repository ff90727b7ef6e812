"""Joining a multi-process (multi-host) JAX job: explicit settings, else the environment, else JAX's auto-detection.

Explicit: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or the environment variables
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID). Without them `jax.distributed.initialize()` detects the
cluster itself (Cloud TPU VM metadata, SLURM, Open MPI). On CPU, cross-process collectives use gloo (JAX's default,
`jax_cpu_collectives_implementation`), so several processes on one machine form a real cluster (launch/local.py).
JAX's preemption sync manager is turned off (`jax_enable_preemption_service`): the training loop agrees on its stop
step itself (inception/preemption.py), and the manager's C++ SIGTERM handler would take the signal from it; commands
that do not train keep SIGTERM's default action.
"""
import os
from typing import Optional

import jax
from absl import logging

from inception import errors

ENV_COORDINATOR = 'JAX_COORDINATOR_ADDRESS'
ENV_NUM_PROCESSES = 'JAX_NUM_PROCESSES'
ENV_PROCESS_ID = 'JAX_PROCESS_ID'


class DistributedSetupError(errors.UserError):
  """Incomplete or inconsistent multi-process settings; the message names the missing ones."""


def _from_env(name: str) -> Optional[int]:
  value = os.environ.get(name)
  if value in (None, ''):
    return None
  try:
    return int(value)
  except ValueError:
    raise DistributedSetupError(f'{name}={value!r} is not an integer.') from None


def settings(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
             process_id: Optional[int] = None) -> dict:
  """The keyword arguments for jax.distributed.initialize: flags first, then the environment; {} = auto-detect."""
  explicit = {
      'coordinator_address': coordinator_address or os.environ.get(ENV_COORDINATOR) or None,
      'num_processes': num_processes if num_processes is not None else _from_env(ENV_NUM_PROCESSES),
      'process_id': process_id if process_id is not None else _from_env(ENV_PROCESS_ID),
  }
  given = {k: v for k, v in explicit.items() if v is not None}
  if given and len(given) != len(explicit):
    missing = sorted(set(explicit) - set(given))
    raise DistributedSetupError(
        f'Multi-process settings are incomplete: got {sorted(given)}, missing {missing}. Pass all three of '
        f'--coordinator_address, --num_processes, --process_id (or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, '
        f'{ENV_PROCESS_ID}), or none of them to let JAX detect the cluster (TPU VM, SLURM).')
  if given and not 0 <= given['process_id'] < given['num_processes']:
    raise DistributedSetupError(f'process_id={given["process_id"]} must be in [0, num_processes='
                                f'{given["num_processes"]}).')
  return given


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
  """Connects this process to the others (blocks until all have joined)."""
  kwargs = settings(coordinator_address, num_processes, process_id)
  logging.info('jax.distributed.initialize(%s)', ', '.join(f'{k}={v}' for k, v in kwargs.items()) or 'auto-detect')
  jax.config.update('jax_enable_preemption_service', False)
  jax.distributed.initialize(**kwargs)


def client():
  """The coordination service's client (key-value store, barriers) of this process; None in a single process."""
  from jax._src import distributed as jax_distributed  # pylint: disable=import-outside-toplevel
  return jax_distributed.global_state.client


def barrier(name: str, timeout_s: int = 1800) -> None:
  """Waits until every process reaches `name` (once per process lifetime), through the coordination service, which
  waits minutes; the CPU collectives (gloo) give a late process only 30 s to join the first collective. No-op in one
  process."""
  if jax.process_count() == 1:
    return
  client().wait_at_barrier(name, timeout_in_ms=int(timeout_s * 1000))
