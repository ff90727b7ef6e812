"""Starting a run from another run's weights (`--config.init_from=WORKDIR[:step]`) and freezing the backbone.

The source run's EMA weights and BatchNorm statistics (its evaluated model) are loaded wherever the new model has the
same array at the same path with the same shape, after checking that the source run (its config.json) was built with the
same architecture keys and input convention (MATCHING_KEYS: e.g. timm's weights need model.bn_scale=True). Arrays of the
classifier head and the aux heads whose shapes differ (another number of classes) keep their fresh initialisation; a
backbone array missing from the source or of another shape is an error, since the two models are then not the same
network. One log line says what was loaded, re-initialised and left unused. `freeze_backbone=True` trains only the
classifier and aux heads (a linear probe when there are no aux heads; the backbone's BatchNorm statistics still follow
the new data); `backbone_lr_scale` trains the backbone at that fraction of the heads' learning rate."""
import json
import re
from typing import Dict, List, Mapping, Tuple

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx
from flax import traverse_util

from inception import workdir as workdir_lib
from inception.errors import WorkdirError


def parse_init_from(spec: str) -> Tuple[str, int | None]:
  """'WORKDIR' or 'WORKDIR:STEP' -> (workdir, step or None); a gs:// path keeps its colon."""
  match = re.fullmatch(r'(.+):(\d+)', spec)
  return (match.group(1), int(match.group(2))) if match else (spec, None)


def _flat(tree) -> Dict[str, np.ndarray]:
  """Path -> array of a restored (nested dict) nnx.State, without orbax's trailing '/value'."""
  flat = traverse_util.flatten_dict(tree, sep='/')
  return {re.sub(r'/value$', '', k): v for k, v in flat.items()}


def read_weights(spec: str) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], int]:
  """The EMA parameters and BatchNorm statistics of run `spec` ('WORKDIR[:step]') as flat path -> numpy dicts."""
  workdir, step = parse_init_from(spec)
  directory = epath.Path(workdir) / 'checkpoints'
  if not directory.exists():
    raise WorkdirError(f'--config.init_from={spec}: {workdir} has no checkpoints/ folder; name a trained run.')
  manager = ocp.CheckpointManager(directory.resolve() if not str(directory).startswith('gs://') else directory,
                                  item_handlers={'state': ocp.StandardCheckpointHandler()})
  steps = sorted(manager.all_steps())
  if not steps or (step is not None and step not in steps):
    raise WorkdirError(f'--config.init_from={spec}: no checkpoint {"of step %d " % step if step else ""}in '
                       f'{directory} (it has: {", ".join(map(str, steps)) or "none"}).')
  step = steps[-1] if step is None else step
  metadata = manager.item_metadata(step)['state']
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))['state']
  manager.close()
  to_numpy = lambda tree: {k: np.asarray(v) for k, v in _flat(tree).items()}
  return to_numpy(state['ema_params']), to_numpy(state.get('ema_model_state') or {}), step


# What a run's weights were built and trained with that a fine-tuning run must share: the architecture keys that
# change the computation without changing any array's shape, and the input convention.
MATCHING_KEYS = ('model.name', 'model.bn_scale', 'model.bn_epsilon', 'model.pool_count_padding', 'pp.value_range',
                 'pp.mean', 'pp.std')


def _lookup(tree, dotted: str):
  for part in dotted.split('.'):
    if not isinstance(tree, Mapping) or part not in tree:
      return None
    tree = tree[part]
  return list(tree) if isinstance(tree, (list, tuple)) else tree


def check_source_config(spec: str, config) -> None:
  """WorkdirError when run `spec` was built or fed otherwise than `config` in a MATCHING_KEYS key (its config.json;
  a key either lacks is not compared), naming the overrides that make them match."""
  previous = workdir_lib.previous_config(epath.Path(parse_init_from(spec)[0]))
  if previous is None:
    return
  ours = json.loads(config.to_json_best_effort())
  pairs = [(key, _lookup(previous, key), _lookup(ours, key)) for key in MATCHING_KEYS]
  differ = [(key, theirs, mine) for key, theirs, mine in pairs if None not in (theirs, mine) and theirs != mine]
  if differ:
    def flag(key, value):
      if isinstance(value, list):
        return f'"--config.{key}={tuple(value)}"'
      return f'--config.{key}={value!r}' if isinstance(value, str) else f'--config.{key}={value}'
    raise WorkdirError(f'--config.init_from={spec}: its weights were built and fed with '
                       f'{", ".join(f"{k}={t}" for k, t, _ in differ)}; this config has '
                       f'{", ".join(f"{k}={m}" for k, _, m in differ)}. Fine-tune with the weights\' settings: '
                       f'{" ".join(flag(k, t) for k, t, _ in differ)}.')


def is_head(path: str, head_names) -> bool:
  """Whether `path` lies in the classifier head or an aux head (the parts that depend on the classes)."""
  return path.split('/')[0] in head_names


def merge(target: Dict[str, np.ndarray], source: Dict[str, np.ndarray], head_names, what: str, spec: str
          ) -> Tuple[Dict[str, np.ndarray], List[str], List[str]]:
  """target with every matching source array; (merged, re-initialised paths, unused source paths)."""
  merged, reinit = dict(target), []
  for path, value in target.items():
    found = source.get(path)
    if found is not None and tuple(found.shape) == tuple(value.shape):
      merged[path] = found.astype(value.dtype)
    elif is_head(path, head_names):
      reinit.append(path)
    else:
      why = 'missing there' if found is None else f'{tuple(found.shape)} there, {tuple(value.shape)} here'
      raise WorkdirError(f'--config.init_from={spec}: the backbone does not match this model ({what} {path}: {why}). '
                         f'Fine-tune from a run of the same architecture (model.name and its widths).')
  unused = sorted(set(source) - set(target))
  stages = {path.split('/')[0] for path in target}
  stray = [path for path in unused if path.split('/')[0] in stages and not is_head(path, head_names)]
  if stray:  # e.g. BatchNorm scales the new model lacks: the same shapes would compute another function
    raise WorkdirError(f'--config.init_from={spec}: the source has {what}s this model\'s backbone lacks ({len(stray)}, '
                       f'e.g. {stray[0]}). Fine-tune a model of the same architecture (model.name and its keys, e.g. '
                       f'model.bn_scale, as in the source\'s config.json).')
  return merged, reinit, unused


def initialize_from(spec: str, params, model_state, head_names, config=None):
  """(params, model_state) of the new model with run `spec`'s weights loaded where they fit (module docstring);
  with `config`, first check_source_config."""
  if config is not None:
    check_source_config(spec, config)
  src_params, src_stats, step = read_weights(spec)
  out = []
  report = {'loaded': 0, 'reinit': [], 'unused': []}
  for what, state, source in (('parameter', params, src_params), ('statistic', model_state, src_stats)):
    flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(nnx.to_pure_dict(state), sep='/').items()}
    merged, reinit, unused = merge(flat, source, head_names, what, spec)
    report['loaded'] += len(flat) - len(reinit)
    report['reinit'] += reinit
    report['unused'] += unused
    pure = traverse_util.unflatten_dict({tuple(k.split('/')): v for k, v in merged.items()})
    nnx.replace_by_pure_dict(state, pure)
    out.append(state)
  logging.info('init_from %s (step %d, EMA weights): loaded %d arrays; re-initialised %d (%s); unused %d (%s).',
               spec, step, report['loaded'], len(report['reinit']), ', '.join(report['reinit']) or 'none',
               len(report['unused']), ', '.join(report['unused']) or 'none')
  return out[0], out[1], report


def _first_key(path) -> str:
  key = path[0]
  return str(getattr(key, 'key', getattr(key, 'name', key)))


def _labels(head_names, backbone: str):
  """params -> 'train' for the heads' leaves, `backbone` for the others (the optimizer-state keys)."""
  return lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: 'train' if _first_key(path) in head_names else backbone, params)


def frozen_backbone(tx: optax.GradientTransformation, head_names) -> optax.GradientTransformation:
  """`tx` for the heads' parameters, no update at all (not even weight decay) for the backbone's."""
  return optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, _labels(head_names, 'frozen'))


def scaled_backbone(tx: optax.GradientTransformation, head_names, scale: float) -> optax.GradientTransformation:
  """`tx` for the heads, `tx` with its updates times `scale` for the backbone: the backbone's learning rate (and
  decay step) `scale` times the heads' (`backbone_lr_scale`, e.g. 0.1 when fine-tuning). Each part keeps its own
  optimizer state, so a recipe's gradient clipping applies to the two parts separately."""
  return optax.multi_transform({'train': tx, 'backbone': optax.chain(tx, optax.scale(scale))},
                               _labels(head_names, 'backbone'))


def optimizer(tx: optax.GradientTransformation, config, head_names) -> optax.GradientTransformation:
  """The loop's optimizer with the config's fine-tuning choice: `freeze_backbone`, or `backbone_lr_scale` != 1."""
  if config.get('freeze_backbone'):
    return frozen_backbone(tx, head_names)
  scale = float(config.get('backbone_lr_scale', 1.0))
  return tx if scale == 1.0 else scaled_backbone(tx, head_names, scale)
