"""Validates `--config.a.b=value` overrides before absl applies them: unknown keys and wrong types get a plain message.

ml_collections would otherwise fail with a bare AttributeError deep in flag parsing.
"""
import ast
import os
import runpy
from typing import Optional, Sequence, Tuple

import ml_collections

from inception.command import parse_config_args
from inception.errors import UserError


class ConfigError(UserError):
  """A config file, variant or override that cannot be used; the message says which and how to fix it."""


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` the way `--config=` does."""
  path, _, arg = spec.partition(':')
  if not os.path.exists(path):
    raise ConfigError(f'config file {path!r} not found (run from the repository root, e.g. '
                      f'--config=configs/googlenet.py:mini).')
  get_config = runpy.run_path(path)['get_config']
  try:
    return get_config(arg) if arg else get_config()
  except ValueError as e:
    raise ConfigError(str(e)) from None


def _check_value(key: str, current, value: Optional[str]):
  """Raises ConfigError if `value` (command-line text) cannot stand for the current value's type."""
  if value is None:
    if isinstance(current, bool):
      return
    raise ConfigError(f'--config.{key} needs a value, e.g. --config.{key}={current!r}.')
  kind = type(current)
  try:
    if isinstance(current, bool):
      if value.lower() not in ('true', 'false', '1', '0'):
        raise ValueError
    elif isinstance(current, int):
      int(value)
    elif isinstance(current, float):
      float(value)
    elif isinstance(current, (tuple, list)):
      if not isinstance(ast.literal_eval(value), (tuple, list)):
        raise ValueError
  except (ValueError, SyntaxError):
    raise ConfigError(
        f'--config.{key}={value!r}: expected a value of type {kind.__name__}, like {current!r}.') from None


def _parse_value(current, value: Optional[str]):
  """The command-line text `value` as the type of `current` (checked by _check_value first)."""
  if isinstance(current, bool):
    return value is None or value.lower() in ('true', '1')
  if isinstance(current, int):
    return int(value)
  if isinstance(current, float):
    return float(value)
  if isinstance(current, (tuple, list)):
    return type(current)(ast.literal_eval(value))
  return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[Tuple[str, Optional[str]]],
                    where: str = 'the config') -> ml_collections.ConfigDict:
  """A copy of `config` with `--config.key=value` overrides (parse_config_args' pairs) applied, each value read as the
  type the key has; ConfigError for an unknown key or a wrong type (commands that load a run's saved config)."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides:
    *parents, last = key.split('.')
    node = config
    for part in parents:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or last not in node:
      raise ConfigError(f'unknown key {key!r} in --config.{key}: {where} has no such key.')
    if isinstance(node[last], ml_collections.ConfigDict):
      raise ConfigError(f'--config.{key} names a group of keys; override one of them: {", ".join(node[last])}.')
    _check_value(key, node[last], value)
    node[last] = _parse_value(node[last], value)
  return config


def check_overrides(argv: Sequence[str]) -> None:
  """Raises ConfigError for an override naming a key the config does not have, or a value of the wrong type."""
  spec, overrides, _ = parse_config_args(argv)
  if spec is None or not overrides:
    return
  config = load_config(spec)
  for key, value in overrides:
    node, path = config, []
    for part in key.split('.'):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        where = '.'.join(path) or 'the top level'
        known = ', '.join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else '(not a group)'
        raise ConfigError(f'unknown key {key!r} in --config.{key}: {spec} has no {part!r} at {where}; '
                          f'keys there: {known}.')
      node = node[part]
      path.append(part)
    if not isinstance(node, ml_collections.ConfigDict):
      _check_value(key, node, value)


def _between(lo, hi, lo_open=False, hi_open=False):
  """A predicate for lo <= x <= hi (with open ends where asked)."""
  def ok(x):
    return (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
  return ok


def _range_pair(lo, hi, strictly_positive=True):
  """A predicate for a (low, high) pair with lo <(=) low <= high <= hi."""
  def ok(pair):
    low, high = pair
    return (low > lo if strictly_positive else low >= lo) and low <= high <= hi
  return ok


_INF = float('inf')
# (key, predicate, what is allowed): the semantic rules of check_config, for keys a config has.
RULES = (
    ('num_epochs', lambda x: x > 0, 'a number > 0'),
    ('batch_size', lambda x: x > 0, 'an integer > 0'),
    ('eval_batch_size', lambda x: x > 0, 'an integer > 0'),
    ('pp.image_size', lambda x: x > 0, 'an integer > 0'),
    ('pp.value_range', lambda r: r[0] < r[1], 'a (low, high) pair with low < high, e.g. (-1.0, 1.0)'),
    ('pp.mean', lambda m: len(m) == 3, 'three numbers, one per RGB channel, e.g. (0.0, 0.0, 0.0)'),
    ('pp.std', lambda s: len(s) == 3 and min(s) > 0, 'three numbers > 0, one per RGB channel, e.g. (1.0, 1.0, 1.0)'),
    ('backbone_lr_scale', lambda x: x >= 0, 'a number >= 0 (1: the same rate as the heads; 0: use freeze_backbone)'),
    ('pp.train.area_range', _range_pair(0.0, 1.0), '0 < low <= high <= 1, e.g. (0.08, 1.0)'),
    ('pp.train.aspect_range', _range_pair(0.0, _INF), '0 < low <= high, e.g. (0.75, 1.333)'),
    ('pp.train.max_attempts', lambda x: x >= 1, 'an integer >= 1'),
    ('pp.train.crop_sampler', lambda x: x in ('uniform_area', 'tf'), "'uniform_area' or 'tf'"),
    ('pp.eval.crop_ratio', _between(0.0, 1.0, lo_open=True), 'a fraction in (0, 1], e.g. 0.875'),
    ('data.val_fraction', _between(0.0, 1.0, hi_open=True), 'a fraction in [0, 1)'),
    ('data.max_bad_fraction', _between(0.0, 1.0), 'a fraction in [0, 1]'),
    ('data.rows_per_task', lambda x: x >= 1, 'an integer >= 1 (e.g. 32)'),
    ('data.tasks_per_core', lambda x: x >= 1, 'an integer >= 1 (e.g. 2)'),
    ('optimizer.lr', lambda x: x > 0, 'a number > 0'),
    ('optimizer.lr_batch_size', lambda x: x > 0, 'an integer > 0'),
    ('optimizer.name', lambda x: x in ('sgd', 'rmsprop'), "'sgd' or 'rmsprop'"),
    ('optimizer.momentum', _between(0.0, 1.0, hi_open=True), 'a number in [0, 1)'),
    ('optimizer.rms_decay', _between(0.0, 1.0, hi_open=True), 'a number in [0, 1)'),
    ('optimizer.epsilon', lambda x: x > 0, 'a number > 0'),
    ('optimizer.clip_norm', lambda x: x >= 0, 'a number >= 0 (0: no clipping)'),
    ('optimizer.weight_decay', lambda x: x >= 0, 'a number >= 0'),
    ('schedule.decay_rate', _between(0.0, 1.0, lo_open=True), 'a number in (0, 1]'),
    ('schedule.decay_epochs', lambda x: x > 0, 'a number > 0'),
    ('schedule.warmup_epochs', lambda x: x >= 0, 'a number >= 0'),
    ('ema.decay', _between(0.0, 1.0, hi_open=True), 'a number in [0, 1)'),
    ('loss.aux_weight', lambda x: x >= 0, 'a number >= 0'),
    ('loss.label_smoothing', _between(0.0, 1.0, hi_open=True), 'a number in [0, 1)'),
    ('model.dropout_rate', _between(0.0, 1.0, hi_open=True), 'a number in [0, 1)'),
    ('model.aux_dropout_rate', _between(0.0, 1.0, hi_open=True), 'a number in [0, 1)'),
    ('model.dtype', lambda x: x in ('float32', 'bfloat16', 'float16'), "'float32', 'bfloat16' or 'float16'"),
    ('log_every_steps', lambda x: x >= 1, 'an integer >= 1'),
    ('checkpoint_every_steps', lambda x: x >= 1, 'an integer >= 1'),
    ('keep_checkpoints', lambda x: x >= 1, 'an integer >= 1'),
    ('eval_every_epochs', lambda x: x > 0, 'a number > 0'),
    ('eval_crops', lambda x: x in (1, 10, 144), '1, 10 or 144 (crops per image, as the paper evaluates)'),
    ('nan_policy', lambda x: x in ('stop', 'skip'), "'stop' or 'skip'"),
    # MultiBox (configs/multibox.py)
    ('data.max_boxes', lambda x: x >= 1, 'an integer >= 1 (boxes per image a batch holds)'),
    ('model.num_priors', lambda x: x >= 1, 'an integer >= 1'),
    ('multibox.kmeans_iterations', lambda x: x >= 1, 'an integer >= 1'),
    ('multibox.kmeans_max_boxes', lambda x: x >= 0, 'an integer >= 0 (0: every training box)'),
    ('multibox.offset_scale', lambda x: x > 0, 'a number > 0 (e.g. 0.1)'),
    ('multibox.loc_weight', lambda x: x >= 0, 'a number >= 0'),
    ('multibox.top_k', lambda x: x >= 1, 'an integer >= 1 (e.g. 200)'),
    ('multibox.recall_iou', _between(0.0, 1.0, lo_open=True), 'a number in (0, 1], e.g. 0.5'),
)


def _lookup(config: ml_collections.ConfigDict, key: str):
  node = config
  for part in key.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return _MISSING
    node = node[part]
  return node


_MISSING = object()


def check_config(config: ml_collections.ConfigDict) -> None:
  """ConfigError for the first value outside its allowed range (RULES), naming the key, the value and what is
  allowed; keys a config does not have are not checked. Needs no data and no devices, so it runs before any work."""
  for key, ok, allowed in RULES:
    value = _lookup(config, key)
    if value is _MISSING:
      continue
    try:
      good = bool(ok(value))
    except (TypeError, ValueError, IndexError):
      good = False
    if not good:
      raise ConfigError(f'--config.{key}={value!r}: expected {allowed}.')
