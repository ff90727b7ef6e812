"""Checkpoints with orbax's CheckpointManager: the TrainState plus the run's counters and what it trained.

Layout: <workdir>/checkpoints/<step>/{state, meta}. `state` is the TrainState pytree (sharded arrays, restored onto
the target's shardings, whatever topology wrote them); `meta` is JSON: the global counts of skipped images and skipped
non-finite steps, the process count, and the model, classes and image size the state belongs to. The input position
is not stored: it follows from the step (pipeline.py), which is what lets a random-access run resume on any number of
hosts. A save is written to a temporary folder and renamed when complete, so a kill never leaves a half checkpoint
behind. A checkpoint that fails to restore is renamed `<step>.unreadable` (kept, never deleted), and the one before it
tried, only when inspecting its files (through epath) shows damage: a metadata file missing or not JSON, a commit
marker missing, an OCDBT index node that does not decode, a chunk file missing, cut short or overwritten. A storage
error that may pass (lost connection, timeout, EIO, UNAVAILABLE) is retried RETRIES times, then a CheckpointError;
another structure (tree paths, shapes, dtypes) is a CheckpointError naming the difference; so is a failure the
inspection does not explain. Those rename nothing.
"""
import errno
import json
import time
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from inception.errors import CheckpointError, WorkdirError
from inception.metrics import is_local

RETRIES = 3  # tries of a read that fails with a storage error that may pass
RETRY_DELAY_S = 2.0  # seconds before the second try, doubled before each further one
OK, TRANSIENT, UNEXPLAINED, DAMAGED, REFUSED = range(5)  # a restore attempt's outcome; all processes act on the worst
_TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED,
                     errno.ECONNABORTED, errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTUNREACH}
_TRANSIENT_WORDS = ('unavailable', 'deadline', 'connection', 'timed out', 'timeout', 'temporarily', 'try again',
                    'too many requests')
_ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'  # the first bytes of every zstd-compressed array chunk


def _absolute(path: epath.Path) -> epath.Path:
  """Local paths made absolute (orbax requires it); cloud paths (gs://...) as they are."""
  return path.resolve() if is_local(path) else path


def _first_line(error: BaseException) -> str:
  """The error's type and first line, without TensorStore's spec dump."""
  text = str(error).split(' See full TensorStore details')[0].split(' [tensorstore_spec=')[0].strip().splitlines()
  return f'{type(error).__name__}: {text[0] if text else ""}'[:300]


def _transient(error: Optional[BaseException]) -> bool:
  """Whether `error`, or one it was raised from, is a storage failure that may pass: a lost connection, a timeout, an
  I/O error, or TensorStore's UNAVAILABLE or DEADLINE_EXCEEDED. A missing file or a refused permission is not."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
      return False
    if isinstance(error, (ConnectionError, TimeoutError)) or (
        isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS):
      return True
    if any(word in _first_line(error).lower() for word in _TRANSIENT_WORDS):
      return True
    error = error.__cause__ or error.__context__
  return False


def _worst(outcome: int) -> int:
  """The largest `outcome` over all processes (so all processes take the same branch)."""
  if jax.process_count() == 1:
    return outcome
  return int(np.max(multihost_utils.process_allgather(np.asarray(outcome, np.int32))))


def _read(path: epath.Path, offset: int, length: int) -> bytes:
  with path.open('rb') as f:
    f.seek(offset)
    return f.read(length)


def _decode(data: bytes, node: bool):
  """An OCDBT manifest or b-tree node as JSON, decoded from bytes read through epath; ValueError when they do not
  decode (a wrong magic number or checksum)."""
  store = ts.KvStore.open('memory://', context=ts.Context()).result()
  store['node' if node else 'manifest.ocdbt'] = data
  return ts.ocdbt.dump(store, f'btreenode::node:0:{len(data)}' if node else None).result()


def _ocdbt_damage(db: epath.Path) -> Optional[str]:
  """What is missing, cut short or undecodable in the OCDBT database `db` (its latest version), or None: the manifest,
  every b-tree node, every file and byte range a value is stored at, and the zstd header of each array chunk."""
  try:
    versions = _decode((db / 'manifest.ocdbt').read_bytes(), node=False)['versions']
  except ValueError as e:
    return f'state/manifest.ocdbt does not decode ({_first_line(e)})'
  todo = [(versions[-1]['root']['location'], b'')] if versions and 'location' in versions[-1]['root'] else []
  compressors, values = set(), {}  # values: the offsets of array chunks ('w/0.0', not 'w/.zarray') in each file
  while todo:
    location, key = todo.pop()
    kind, base, name, offset, length = location.split(':')
    path, offset, length = db / (base + name), int(offset), int(length)
    if not path.exists():
      return f'state/{base}{name} is missing'
    if path.stat().length < offset + length:
      return f'state/{base}{name} is cut short ({path.stat().length} bytes, data up to byte {offset + length})'
    if kind == 'value':
      if key.rsplit(b'/', 1)[-1].replace(b'.', b'').isdigit():
        values.setdefault(base + name, []).append(offset)
      continue
    try:
      node = _decode(_read(path, offset, length), node=True)
    except ValueError as e:
      return f'state/{base}{name} holds an index node that does not decode ({_first_line(e)})'
    for entry in node['entries']:
      if 'location' in entry or 'indirect_value' in entry:
        todo.append((entry.get('location') or entry['indirect_value'], entry['key']))
      elif entry['key'].endswith(b'.zarray'):
        compressors.add((json.loads(entry['inline_value']).get('compressor') or {}).get('id'))
  if compressors == {'zstd'}:  # every array chunk then starts with zstd's magic number
    for name, offsets in values.items():
      for offset in offsets:
        if _read(db / name, offset, 4) != _ZSTD_MAGIC:
          return f'state/{name} holds an array chunk that is not zstd data (at byte {offset})'
  return None


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

  def read_meta(self, step: int) -> Dict[str, Any]:
    """The meta saved with checkpoint `step` (counts, process count, and the identity: model, classes, image size)."""
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def _structure_problem(self, step: int, target) -> Optional[str]:
    """The first difference between the checkpoint's arrays and `target`'s (a path, a shape or a dtype), or None."""
    metadata = self.manager.item_metadata(step)
    if 'state' not in metadata.keys() or metadata['state'] is None:  # nothing to compare: the restore will fail
      return None
    stored, wanted = _by_path(metadata['state']), _by_path(target)
    for path in sorted(set(wanted) ^ set(stored)):
      where = 'this model, not in the checkpoint' if path in wanted else 'the checkpoint, not in this model'
      return f'{path} is in {where} ({len(set(wanted) ^ set(stored))} paths differ)'
    for path, leaf in wanted.items():
      found = stored[path]
      if tuple(getattr(found, 'shape', leaf.shape)) != tuple(leaf.shape):
        return f'{path} has shape {tuple(found.shape)} in the checkpoint, {tuple(leaf.shape)} in this model'
      if np.dtype(getattr(found, 'dtype', leaf.dtype)) != np.dtype(leaf.dtype):
        return f'{path} has dtype {np.dtype(found.dtype)} in the checkpoint, {np.dtype(leaf.dtype)} in this model'
    return None

  def _damage(self, step: int) -> Optional[str]:
    """What inspecting checkpoint `step`'s files finds missing, cut short or undecodable, or None."""
    folder = self.directory / str(step)
    for name in ('_CHECKPOINT_METADATA', 'meta/metadata', 'state/_METADATA'):
      if not (folder / name).exists():
        return f'{name} is missing'
      try:
        found = json.loads((folder / name).read_text())
      except ValueError:
        return f'{name} is not valid JSON'
    ocdbt = found.get('use_ocdbt')
    for name in ('commit_success.txt', 'meta/commit_success.txt', 'state/commit_success.txt') + (
        ('state/manifest.ocdbt',) if ocdbt else ()):
      if not (folder / name).exists():
        return f'{name} is missing'
    return _ocdbt_damage(folder / 'state') if ocdbt else None

  def _attempt(self, step: int, abstract) -> Tuple[int, Any]:
    """Reads checkpoint `step` once: (OK, (state, meta)), (REFUSED, the error to raise), or (TRANSIENT, DAMAGED or
    UNEXPLAINED, the reason)."""
    try:
      meta = self.read_meta(step)
      problem = _mismatch(self.identity, meta)
      if problem:
        return REFUSED, WorkdirError(f'The workdir {self.directory.parent} holds a run of another model ({problem}). '
                                     f'Resume it with the config that wrote it (config.json there), or use a new '
                                     f'--config.workdir.')
      problem = self._structure_problem(step, abstract)
      if problem:
        return REFUSED, CheckpointError(
            f'The checkpoint at step {step} in {self.directory} does not fit this model: {problem}. Nothing was '
            f'renamed. Resume it with the code and config that wrote it, or train this config in a new '
            f'--config.workdir.')
      state = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
      return OK, (state['state'], meta)
    except Exception as e:  # pylint: disable=broad-except
      error = e
    if _transient(error):
      return TRANSIENT, _first_line(error)
    try:
      damage = self._damage(step)
    except Exception as e:  # pylint: disable=broad-except
      return (TRANSIENT if _transient(e) else UNEXPLAINED), f'{_first_line(error)}; inspecting it: {_first_line(e)}'
    return (DAMAGED, damage) if damage else (UNEXPLAINED, _first_line(error))

  def restore(self, target, step: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
    """Restores the newest undamaged checkpoint (see the module docstring) onto `target`'s shapes, dtypes and
    shardings, or exactly checkpoint `step` (a WorkdirError when there is none); another model is a WorkdirError.
    Returns (state, meta)."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
    failures = []
    candidates = self.all_steps()
    if step is not None:
      if step not in candidates:
        raise WorkdirError(f'{self.directory} has no checkpoint of step {step}; it has steps '
                           f'{", ".join(map(str, candidates)) or "none"}.')
      candidates = [step]
    for step in reversed(candidates):
      for attempt in range(1, RETRIES + 1):
        outcome, result = self._attempt(step, abstract)
        agreed = _worst(outcome)
        if agreed != TRANSIENT or attempt == RETRIES:
          break
        logging.warning('Checkpoint %s/%d: storage error (%s); try %d of %d in %gs.', self.directory, step,
                        result if outcome == TRANSIENT else 'on another process', attempt + 1, RETRIES,
                        RETRY_DELAY_S * 2 ** (attempt - 1))
        time.sleep(RETRY_DELAY_S * 2 ** (attempt - 1))
      reason = result if outcome == agreed else 'seen on another process'
      if agreed == OK:
        if failures:
          logging.warning('Resuming from step %d, the newest checkpoint that reads back (kept, not deleted: %s).',
                          step, '; '.join(failures))
        return result
      if agreed == REFUSED:
        raise result if outcome == REFUSED else CheckpointError(f'Checkpoint {self.directory}/{step} was refused '
                                                                f'on another process (see its log).')
      if agreed == TRANSIENT:
        raise CheckpointError(f'Could not read the checkpoint at step {step} in {self.directory} in {RETRIES} tries '
                              f'({reason}). Nothing was renamed: run again when the storage is reachable.')
      if agreed == UNEXPLAINED:
        raise CheckpointError(f'The checkpoint at step {step} in {self.directory} cannot be restored ({reason}), yet '
                              f'its files look complete. Nothing was renamed: if it is damaged, rename it to '
                              f'{step}.unreadable and run again to resume from the one before it.')
      kept = self._set_aside(step)
      failures.append(f'step {step} is damaged ({reason}); kept as {kept}')
      logging.warning('Checkpoint %s/%d is damaged (%s): kept as %s, trying the one before it.',
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
