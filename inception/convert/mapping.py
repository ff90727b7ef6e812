"""Putting another framework's tensors onto a model here: its units in creation order, layout changes, and an
assignment that sets every parameter exactly once from a source tensor used exactly once.

A unit is what a weight file stores as one layer: a conv-BN-ReLU (`conv_bn`: kernel, BatchNorm offset, optional
scale, moving mean and variance), a convolution with bias and no BatchNorm (`conv`), or a linear layer (`linear`).
`units` lists them in the order the model creates them, which is the order Keras numbers its layers.
"""
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence

import numpy as np
from flax import nnx

from inception.errors import UserError
from inception.models import blocks
from inception.models import inception_v3
from inception.models import layers


class ConvertError(UserError):
  """A weight file that does not fit the chosen model, or cannot be read; the message names the tensors."""


class Target(NamedTuple):
  """What a format's weights of one model need: model config keys over the recipe's, and the pp keys of their input
  convention (image_size, value_range, mean, std, eval)."""
  model: Dict[str, Any]
  pp: Dict[str, Any]


class Unit(NamedTuple):
  path: str  # the module's parameter path, e.g. 'mixed_5b/branch5x5_1' or 'head/fc'
  kind: str  # 'conv_bn', 'conv' or 'linear'


def _walk(module, path: str, out: List[Unit]) -> None:
  if isinstance(module, layers.ConvBNReLU):
    out.append(Unit(path, 'conv_bn'))
  elif isinstance(module, nnx.Conv):
    out.append(Unit(path, 'conv'))
  elif isinstance(module, nnx.Linear):
    out.append(Unit(path, 'linear'))
  elif isinstance(module, blocks.Mixed):
    for branch in module.branches:
      for step in branch:
        convs = (step.a, step.b) if isinstance(step, blocks.Split) else (step,) if isinstance(step, blocks.Conv) else ()
        for conv in convs:
          _walk(getattr(module, conv.name), f'{path}/{conv.name}', out)
  elif isinstance(module, blocks.Residual):
    _walk(module.mixed, f'{path}/mixed', out)
    _walk(module.up, f'{path}/up', out)
  elif isinstance(module, blocks.Repeat):
    for i in range(module.count):
      _walk(getattr(module, f'block_{i + 1}'), f'{path}/block_{i + 1}', out)
  elif isinstance(module, blocks.Steps):
    _walk(module.mixed, f'{path}/mixed', out)
  elif isinstance(module, blocks.Head):
    _walk(module.fc, f'{path}/fc', out)
  elif isinstance(module, inception_v3.AuxHead):
    for name in ('conv0', 'conv1', 'fc'):
      _walk(getattr(module, name), f'{path}/{name}', out)
  else:
    raise TypeError(f'{path}: no unit order is known for {type(module).__name__}.')


def units(model, names: Optional[Sequence[str]] = None) -> List[Unit]:
  """The model's units in creation order: its stages (or the named ones), then its aux heads."""
  out: List[Unit] = []
  for name in names if names is not None else tuple(model.stage_names) + tuple(model.aux_names):
    _walk(getattr(model, name), name, out)
  return out


def torch_conv(w: np.ndarray) -> np.ndarray:
  """[out, in, kh, kw] (PyTorch, ONNX, Caffe) -> [kh, kw, in, out] (flax, Keras)."""
  return np.transpose(w, (2, 3, 1, 0))


def torch_linear(w: np.ndarray) -> np.ndarray:
  """[out, in] -> [in, out]."""
  return np.transpose(w)


class Assignment:
  """Fills a model's flat parameter and statistic dicts ('mixed_5b/branch_0/conv/kernel') from source tensors.

  `put` sets one target array from one source key; a target set twice, a source used twice or a shape that differs
  is a ConvertError at once. `finish` raises one listing every target left unset (outside `leave`, prefixes kept at
  their initialisation) and every source key not used (outside `ignore`, keys that carry no weights).
  """

  def __init__(self, targets: Dict[str, np.ndarray], source: Dict[str, np.ndarray], file_what: str):
    self.targets = targets
    self.source = source
    self.file_what = file_what
    self.values: Dict[str, np.ndarray] = {}
    self.origin: Dict[str, str] = {}   # target path -> source key
    self.used: Dict[str, str] = {}     # source key -> target path

  def get(self, key: str) -> np.ndarray:
    if key not in self.source:
      raise ConvertError(f'{self.file_what} has no tensor {key!r}: it is not a file of this model (the model expects '
                         f'it; the file has e.g. {", ".join(list(self.source)[:3])}).')
    return np.asarray(self.source[key])

  def put(self, path: str, key: str, value: Optional[np.ndarray] = None) -> None:
    """targets[path] = value (default: the source tensor `key` as it is)."""
    value = self.get(key) if value is None else np.asarray(value)
    if path not in self.targets:
      raise ConvertError(f'{self.file_what}: {key} maps to {path}, which this model does not have.')
    if path in self.values:
      raise ConvertError(f'{self.file_what}: {path} set twice (from {self.origin[path]} and {key}).')
    if key in self.used:
      raise ConvertError(f'{self.file_what}: {key} used twice (for {self.used[key]} and {path}).')
    want = tuple(self.targets[path].shape)
    if tuple(value.shape) != want:
      raise ConvertError(f'{self.file_what}: {key} has shape {tuple(value.shape)} (after the layout change), the '
                         f'model\'s {path} needs {want}: the file holds another model or width. Check --model.')
    self.values[path] = value.astype(self.targets[path].dtype)
    self.origin[path], self.used[key] = key, path

  def finish(self, leave: Iterable[str] = (), ignore: Iterable[str] = ()) -> Dict[str, np.ndarray]:
    """The filled targets; ConvertError listing what is left over on either side."""
    leave, ignore = tuple(leave), set(ignore)
    unset = [p for p in self.targets if p not in self.values and p.split('/')[0] not in leave]
    unused = [k for k in self.source if k not in self.used and k not in ignore]
    if unset or unused:
      parts = []
      if unset:
        parts.append(f'{len(unset)} model arrays got no tensor ({", ".join(unset[:8])}'
                     f'{", ..." if len(unset) > 8 else ""})')
      if unused:
        parts.append(f'{len(unused)} file tensors were not used ({", ".join(unused[:8])}'
                     f'{", ..." if len(unused) > 8 else ""})')
      raise ConvertError(f'{self.file_what} does not match the model: {"; ".join(parts)}. Check --model.')
    return {p: self.values.get(p, v) for p, v in self.targets.items()}


def put_conv_bn(a: Assignment, path: str, kernel: str, beta: str, mean: str, var: str, gamma: Optional[str] = None,
                kernel_layout=None) -> None:
  """One conv-BN unit: kernel (through `kernel_layout`), BatchNorm offset, scale (if the model has one) and the
  moving statistics."""
  a.put(f'{path}/conv/kernel', kernel, None if kernel_layout is None else kernel_layout(a.get(kernel)))
  a.put(f'{path}/bn/bias', beta)
  if gamma is not None:
    a.put(f'{path}/bn/scale', gamma)
  a.put(f'{path}/bn/mean', mean)
  a.put(f'{path}/bn/var', var)
