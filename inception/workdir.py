"""The run's folder before training starts: writable, and holding (if anything) a run this config may continue.

`config.json` records the config of the run in the folder. A resume compares it with the new config: changes that
keep the run the same run (more epochs, another learning rate, eval or checkpoint frequency) are allowed and logged;
changes that would silently make it another run (the model, the data and its order, the image size) are refused. The
file is written only once the run is known to start, and the previous one is kept beside it when it changes.
"""
import json
import os
import uuid
from typing import Any, Dict, List, Optional

import ml_collections
from absl import logging
from etils import epath

from inception.errors import WorkdirError

# Keys that decide what the checkpointed state and the training order mean: a resume must not change them.
REFUSED_CHANGES = ('seed', 'batch_size', 'task', 'model.name', 'model.backbone', 'model.aux_heads', 'pp.image_size',
                   'data.source', 'data.root', 'data.exclude_classes', 'data.tfds_name', 'data.train_split',
                   'data.val_fraction', 'data.class_share')


def check_writable(path: epath.Path) -> None:
  """Creates `path` if needed and proves a file can be written there; WorkdirError naming the folder otherwise."""
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f'.write_test_{uuid.uuid4().hex}'
    probe.write_text('ok')
    probe.unlink()
  except OSError as e:
    raise WorkdirError(f'Cannot write in {path} ({type(e).__name__}: {e}). Choose a writable folder with '
                       f'--config.workdir=..., or fix its permissions.') from None


def _flatten(tree: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value.tolist() if hasattr(value, 'tolist') else value
  return out


def _as_plain(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def previous_config(workdir: epath.Path) -> Optional[Dict[str, Any]]:
  """The config.json of the run in `workdir`, or None."""
  path = workdir / 'config.json'
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError:
    logging.warning('%s is not valid JSON; it is not compared with this config.', path)
    return None


def config_changes(previous: Dict[str, Any], config: ml_collections.ConfigDict) -> List[str]:
  """'key: old -> new' for each key whose value differs, over the keys both configs have (not `workdir`: a moved or
  copied run is the same run)."""
  old, new = _flatten(previous), _flatten(_as_plain(config))
  return [f'{k}: {old[k]!r} -> {new[k]!r}' for k in sorted(set(old) & set(new))
          if k != 'workdir' and not _SAME.get(k, _same_value)(old[k], new[k])]


def _same_value(old, new) -> bool:
  normal = lambda value: list(value) if isinstance(value, tuple) else value  # JSON has lists where configs have tuples
  return normal(old) == normal(new)


def same_data_root(old: str, new: str) -> bool:
  """Whether two `data.root` values name the same folder: equal as written, or found (where the folder source finds
  a root: as given, else relative to the repository) at the same real path, so a root given relatively and then
  absolutely, or through a symbolic link, is the same data. A root that is not a folder here is compared as written,
  and so is a URL (gs://...), less a trailing '/'."""
  if old == new:
    return True
  from inception.data import sources  # pylint: disable=import-outside-toplevel  (TensorFlow: only when they differ)
  if any(sources.is_url(root) for root in (old, new)):  # gs://b/x and gs://b/x/ are the same folder
    return str(old).rstrip('/') == str(new).rstrip('/')
  found = [sources.find_root(root) if isinstance(root, str) and root else None for root in (old, new)]
  return None not in found and os.path.realpath(found[0]) == os.path.realpath(found[1])


# Keys compared as what they mean rather than as written: the same folder, the same set of excluded classes.
_SAME = {
    'data.root': same_data_root,
    'data.exclude_classes': lambda old, new: sorted(old or ()) == sorted(new or ()),
}


def check_resume(workdir: epath.Path, config: ml_collections.ConfigDict, has_checkpoint: bool) -> List[str]:
  """Returns the (allowed) config changes against the run in `workdir`; WorkdirError for a refused one."""
  previous = previous_config(workdir)
  if previous is None or not has_checkpoint:
    return []
  changes = config_changes(previous, config)
  refused = [c for c in changes if c.split(':')[0] in REFUSED_CHANGES]
  if refused:
    raise WorkdirError(
        f'{workdir} holds a run that this config cannot continue: {"; ".join(refused)}. These keys decide what the '
        f'checkpoint and the training order mean ({", ".join(REFUSED_CHANGES)}). Resume with the old values, or train '
        f'this config in a new --config.workdir.')
  return changes


def write_config(workdir: epath.Path, config: ml_collections.ConfigDict, resume_step: int) -> None:
  """Writes config.json; a different previous one is kept as config.before_step_<resume_step>.json."""
  path = workdir / 'config.json'
  previous = previous_config(workdir)
  if previous is not None and config_changes(previous, config):
    (workdir / f'config.before_step_{resume_step}.json').write_text(path.read_text())
  path.write_text(config.to_json_best_effort(indent=2))


def load_config(workdir: epath.Path) -> ml_collections.ConfigDict:
  """The config a run in `workdir` trained with (its config.json); WorkdirError when there is none."""
  path = epath.Path(workdir) / 'config.json'
  if not path.exists():
    raise WorkdirError(f'{workdir} holds no training run (no config.json). Pass the --config.workdir of a run that '
                       f'`python -m inception.main` trained.')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def write_class_names(workdir: epath.Path, names: List[str]) -> None:
  """classes.json: the run's class names in label order, so evaluation and prediction need no data to name them."""
  (epath.Path(workdir) / 'classes.json').write_text(json.dumps(list(names), indent=0))


def read_class_names(workdir: epath.Path) -> Optional[List[str]]:
  """The run's classes.json, or None (runs written before it existed)."""
  path = epath.Path(workdir) / 'classes.json'
  return json.loads(path.read_text()) if path.exists() else None
