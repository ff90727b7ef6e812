"""Checkpoints with orbax's CheckpointManager: the TrainState plus the run's counters and what it trained.

Layout: <workdir>/checkpoints/<step>/{state, meta}. `state` is the TrainState pytree (sharded arrays, restored onto
the target's shardings, whatever topology wrote them); `meta` is JSON: the global counts of skipped images and skipped
non-finite steps, the process count, and the model, classes and image size the state belongs to. The input position
is not stored: it follows from the step (pipeline.py), which is what lets a random-access run resume on any number of
hosts. A save is written to a temporary folder and renamed when complete, so a kill never leaves a half checkpoint
behind; restore still checks the newest one and, if it cannot be read, renames it `<step>.unreadable` (kept, never
deleted) and falls back to the one before it.
"""
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from inception.errors import CheckpointError, WorkdirError
from inception.metrics import is_local


def _absolute(path: epath.Path) -> epath.Path:
  """Local paths made absolute (orbax requires it); cloud paths (gs://...) as they are."""
  return path.resolve() if is_local(path) else path


def _first_line(error: BaseException) -> str:
  """The error's type and first line, without TensorStore's spec dump."""
  text = str(error).strip().splitlines()
  first = (text[0] if text else '').split(' See full TensorStore details')[0]
  return f'{type(error).__name__}: {first}'[:300]


def _all_agree(ok: bool) -> bool:
  """True when `ok` holds on every process (so all processes take the same branch)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok, np.int32))))


def _mismatch(expected, found) -> Optional[str]:
  """The first difference between the run's `expected` identity (model, classes, image size) and a checkpoint's."""
  for key, value in expected.items():
    if key in found and found[key] != value:
      return f'{key}: the checkpoint has {found[key]!r}, this config {value!r}'
  return None


def _by_path(tree) -> Dict[str, Any]:
  """Leaves by a path of plain names ('params/conv1/kernel/value'), the same for a live tree and orbax's metadata."""
  def name(key):
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        return str(getattr(key, attr))
    return str(key)
  return {'/'.join(name(k) for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


class Checkpointer:
  """Saves every `every_steps` (and when forced), keeps the last `keep`, restores the newest readable one.

  `identity` (model name, number of classes, image size) is stored with every checkpoint and checked on restore, so a
  workdir of another model is refused with a message instead of a tree diff.
  """

  def __init__(self, workdir: str, every_steps: int, keep: int, identity: Dict[str, Any]):
    self.every_steps = every_steps
    self.identity = dict(identity)
    self.directory = _absolute(epath.Path(workdir) / 'checkpoints')
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep),  # when to save is decided in maybe_save()
        item_handlers={'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()})

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self):
    return sorted(self.manager.all_steps())

  def maybe_save(self, step: int, state, counts: Dict[str, int], force: bool = False) -> bool:
    """Saves asynchronously when due (or `force`); `counts` are global (the same on every process).

    Raises CheckpointError if an earlier save failed: a run never goes on without checkpoints.
    """
    self.check_for_errors()
    if not (force or step % self.every_steps == 0) or step in self.manager.all_steps():
      return False
    meta = {**{k: int(v) for k, v in counts.items()}, 'process_count': jax.process_count(), **self.identity}
    try:
      return self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e

  def check_for_errors(self):
    """Raises CheckpointError if a finished asynchronous save failed."""
    try:
      self.manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(None, e) from e

  def _save_error(self, step: Optional[int], error: BaseException) -> CheckpointError:
    what = f'the checkpoint at step {step}' if step is not None else 'a checkpoint'
    return CheckpointError(f'Could not save {what} in {self.directory} ({_first_line(error)}). Stopping rather than '
                           f'training without checkpoints: make the folder writable (and check free space), then run '
                           f'the same command again to resume from step {self.latest_step() or 0}.')

  def _read_meta(self, step: int) -> Dict[str, Any]:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def _check_structure(self, step: int, target) -> None:
    """Raises WorkdirError when the checkpoint's arrays do not fit `target` (another model or size)."""
    metadata = self.manager.item_metadata(step)
    stored = metadata['state'] if 'state' in metadata.keys() else None
    if stored is None:  # nothing to compare (e.g. `state/` is gone): the restore itself will fail and fall back
      return
    flat_stored, flat_target = _by_path(stored), _by_path(target)
    missing = sorted(set(flat_target) - set(flat_stored))
    extra = sorted(set(flat_stored) - set(flat_target))
    problem = None
    if missing or extra:
      problem = (f'{len(missing)} arrays of this model are not in it (e.g. {missing[:1]}), {len(extra)} of its arrays '
                 f'are not in this model (e.g. {extra[:1]})')
    else:
      for key, leaf in flat_target.items():
        if tuple(flat_stored[key].shape) != tuple(leaf.shape):
          problem = f'{key} has shape {tuple(flat_stored[key].shape)} there, {tuple(leaf.shape)} here'
          break
    if problem:
      raise WorkdirError(f'The checkpoint at step {step} in {self.directory} does not fit this model: {problem}. '
                         f'Resume it with the config that wrote it (config.json in the workdir), or train this config '
                         f'in a new --config.workdir.')

  def read_meta(self, step: int) -> Dict[str, Any]:
    """The meta saved with checkpoint `step` (counts, process count, and the identity: model, classes, image size)."""
    return self._read_meta(step)

  def restore(self, target, step: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
    """Restores the newest checkpoint that reads back completely onto `target`'s shapes, dtypes and shardings (or
    exactly checkpoint `step`, a WorkdirError when there is none).

    A checkpoint that cannot be read (a truncated or missing file) is skipped with a warning, never deleted, and the
    one before it is tried. One that belongs to another model, class count or image size is a WorkdirError. Returns
    (state, meta).
    """
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
    failures = []
    candidates = self.all_steps()
    if step is not None:
      if step not in candidates:
        raise WorkdirError(f'{self.directory} has no checkpoint of step {step}; it has steps '
                           f'{", ".join(map(str, candidates)) or "none"}.')
      candidates = [step]
    for step in reversed(candidates):
      try:
        meta = self._read_meta(step)
      except Exception as e:  # pylint: disable=broad-except
        meta, error = None, e
      if _all_agree(meta is not None):
        problem = _mismatch(self.identity, meta)
        if problem:
          raise WorkdirError(f'The workdir {self.directory.parent} holds a run of another model ({problem}). Resume '
                             f'it with the config that wrote it (config.json there), or use a new --config.workdir.')
        self._check_structure(step, abstract)
        try:
          state = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
          state, error = state['state'], None
        except Exception as e:  # pylint: disable=broad-except
          state, error = None, e
        if _all_agree(state is not None):
          if failures:
            logging.warning('Resuming from step %d, the newest checkpoint that reads back (kept, not deleted: %s).',
                            step, '; '.join(failures))
          return state, meta
      reason = _first_line(error) if error else 'failed on another process'
      kept = self._set_aside(step)
      failures.append(f'step {step} could not be read ({reason}); kept as {kept}')
      logging.warning('Checkpoint %s/%d cannot be restored (%s): kept as %s, trying the one before it.',
                      self.directory, step, reason, kept)
    raise CheckpointError(f'No checkpoint in {self.directory} can be restored ({"; ".join(failures)}). Move the '
                          f'folder away to start afresh, or restore it from a backup.')

  def _set_aside(self, step: int) -> str:
    """Renames an unreadable step folder to `<step>.unreadable[-k]` (kept for inspection, never deleted), so the
    resumed run can write that step again."""
    folder = self.directory / str(step)
    target = self.directory / f'{step}.unreadable'
    k = 1
    while target.exists():
      k += 1
      target = self.directory / f'{step}.unreadable-{k}'
    if jax.process_index() == 0:
      folder.rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'checkpoint set aside {step}')
    self.manager.reload()
    return target.name

  def wait(self):
    """Blocks until asynchronous saves are on disk; raises CheckpointError if one failed."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(None, e) from e
    self.check_for_errors()

  def close(self):
    self.manager.close()
