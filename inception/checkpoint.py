"""Checkpoints with orbax's CheckpointManager: the TrainState plus where each host's input stream stands.

Layout: <workdir>/checkpoints/<step>/{state, meta}. `state` is the TrainState pytree (sharded arrays, restored onto the
same shardings); `meta` is JSON: per-process input positions and skipped-image counts, so a resumed run reads exactly
the examples it would have read next.
"""
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from inception.metrics import is_local


def _absolute(path: epath.Path) -> epath.Path:
  """Local paths made absolute (orbax requires it); cloud paths (gs://...) as they are."""
  return path.resolve() if is_local(path) else path


class Checkpointer:
  """Saves every `every_steps` (and when forced), keeps the last `keep`, restores the latest."""

  def __init__(self, workdir: str, every_steps: int, keep: int):
    self.every_steps = every_steps
    self.manager = ocp.CheckpointManager(
        _absolute(epath.Path(workdir) / 'checkpoints'),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep),  # when to save is decided in maybe_save()
        item_names=('state', 'meta'))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def maybe_save(self, step: int, state, position: int, skipped: int, force: bool = False) -> bool:
    """Saves asynchronously when due (or `force`); the host-local input position is gathered from every process."""
    if not (force or step % self.every_steps == 0) or step in self.manager.all_steps():
      return False
    gathered = multihost_utils.process_allgather(np.asarray([position, skipped], np.int64))
    gathered = np.asarray(gathered).reshape(-1, 2)
    meta = {'positions': gathered[:, 0].tolist(), 'skipped': gathered[:, 1].tolist()}
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, target) -> Tuple[Any, Dict[str, Any]]:
    """Restores the latest checkpoint onto `target`'s shapes, dtypes and shardings; returns (state, this host's meta)."""
    step = self.manager.latest_step()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    meta = restored['meta']
    if len(meta['positions']) != jax.process_count():
      raise ValueError(f'The checkpoint at step {step} was written by {len(meta["positions"])} processes, this run has '
                       f'{jax.process_count()}: resume with the same number of hosts.')
    i = jax.process_index()
    return restored['state'], {'position': int(meta['positions'][i]), 'skipped': int(meta['skipped'][i])}

  def wait(self):
    """Blocks until asynchronous saves are on disk."""
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()
