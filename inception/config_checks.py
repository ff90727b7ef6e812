"""Validates `--config.a.b=value` overrides before absl applies them: unknown keys and wrong types get a plain message.

ml_collections would otherwise fail with a bare AttributeError deep in flag parsing.
"""
import ast
import os
import runpy
from typing import List, Optional, Sequence, Tuple

import ml_collections

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


def parse_overrides(argv: Sequence[str]) -> Tuple[Optional[str], List[Tuple[str, Optional[str]]]]:
  """Returns the `--config` spec and the (key, value) overrides, accepting `--k=v` and `--k v` forms."""
  spec, overrides = None, []
  args = list(argv)
  for i, a in enumerate(args):
    if a.startswith('--config='):
      spec = a.split('=', 1)[1]
    elif a == '--config' and i + 1 < len(args):
      spec = args[i + 1]
    elif a.startswith('--config.'):
      key, eq, value = a[len('--config.'):].partition('=')
      if not eq:
        value = args[i + 1] if i + 1 < len(args) else None
      overrides.append((key, value))
  return spec, overrides


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


def check_overrides(argv: Sequence[str]) -> None:
  """Raises ConfigError for an override naming a key the config does not have, or a value of the wrong type."""
  spec, overrides = parse_overrides(argv)
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
