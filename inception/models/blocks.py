"""Blocks the later Inception papers share: the TF-style conv-BN-ReLU unit, multi-branch blocks described as data,
residual Inception blocks with their scaling, and the TF pooling conventions.

A block is a tuple of branches; a branch is a tuple of steps run in order; a step is
- `Conv(name, out, kernel, stride=1, padding='same')` (kernel an int or (kh, kw); 'same' pads (k - 1) / 2 on each
  side, which is TF's 'SAME' at stride 1; 'valid' pads nothing; or explicit ints),
- `Pool('max' | 'avg', window, stride, padding)` ('valid': TF's floor rounding; 'same': stride-1 average windows
  centred, the average over the window's part inside the image, as TF; an int: max pooling over -inf padding, or
  average pooling over zero padding divided by the whole window, as PyTorch's count_include_pad),
- `Split(conv_a, conv_b)`: two convolutions of the same input, concatenated (Inception-v3's 1x3 / 3x1 pairs).
The branches' outputs are concatenated on channels. Each named conv is an attribute of the block, so parameter paths
read like the reference implementations' (`mixed_5b/branch5x5_1/conv/kernel`).
"""
import functools
from typing import Callable, NamedTuple, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inception.models import layers
from inception.models import ops

Kernel = Union[int, Tuple[int, int]]


class Conv(NamedTuple):
  name: str
  out: int
  kernel: Kernel
  stride: int = 1
  padding: Union[str, int, Tuple[int, int]] = 'same'


class Pool(NamedTuple):
  kind: str          # 'max' or 'avg'
  window: int
  stride: int
  padding: Union[str, int] = 'valid'


class Split(NamedTuple):
  a: Conv
  b: Conv


Step = Union[Conv, Pool, Split]
Branch = Tuple[Step, ...]


def explicit_padding(kernel: Kernel, padding) -> Tuple[int, int]:
  """(ph, pw) for a Conv's padding: 'same' -> (k - 1) // 2 per axis, 'valid' -> 0, ints pass through."""
  kh, kw = layers._pair(kernel)  # pylint: disable=protected-access
  if padding == 'same':
    return (kh - 1) // 2, (kw - 1) // 2
  if padding == 'valid':
    return 0, 0
  return layers._pair(padding)  # pylint: disable=protected-access


def unit_factory(*, bn_momentum: float, bn_epsilon: float, bn_scale: bool, dtype,
                 rngs: nnx.Rngs) -> Callable[..., nnx.Module]:
  """conv_block(in, out, kernel, stride, padding) -> layers.ConvBNReLU with the model's BatchNorm settings."""
  return functools.partial(layers.ConvBNReLU, momentum=bn_momentum, epsilon=bn_epsilon, scale=bn_scale, dtype=dtype,
                           rngs=rngs)


def setup(net: nnx.Module, *, num_classes: int, image_size, dtype, bn_momentum: float, bn_epsilon: float,
          bn_scale: bool, rngs: nnx.Rngs) -> Callable[..., nnx.Module]:
  """Sets a family network's basics (num_classes, image_size as (h, w), dtype, deterministic) on `net` and returns
  its conv-BN-ReLU factory (unit_factory)."""
  net.num_classes = num_classes
  net.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
  net.dtype = layers.canonical_dtype(dtype)
  net.deterministic = False
  return unit_factory(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, bn_scale=bn_scale, dtype=net.dtype, rngs=rngs)


def max_pool_valid(x: jax.Array, window: int, stride: int, pad: int = 0) -> jax.Array:
  """Max pooling of NHWC `x` padded by `pad` (-inf) on each side, the output size rounded down (TF's VALID at
  pad 0; at pad (window - 1) / 2 the size of a convolution with the same window, stride and padding)."""
  return ops.max_pool(x, window, stride, ((pad, pad), (pad, pad)))


def avg_pool_same(x: jax.Array, window: int) -> jax.Array:
  """TF's stride-1 SAME average pooling: each output averages the part of its centred window inside the image."""
  pad = (window - 1) // 2
  pads = ((0, 0), (pad, window - 1 - pad), (pad, window - 1 - pad), (0, 0))
  acc = jnp.promote_types(x.dtype, jnp.float32)
  sums = jax.lax.reduce_window(x.astype(acc), np.array(0, acc), jax.lax.add, (1, window, window, 1), (1,) * 4, pads)
  counts = [np.minimum(np.arange(n) + window - pad, n) - np.maximum(np.arange(n) - pad, 0) for n in x.shape[1:3]]
  return (sums / np.outer(*counts)[None, :, :, None].astype(np.float32)).astype(x.dtype)


def pool(x: jax.Array, step: Pool) -> jax.Array:
  if step.padding == 'same':
    if step.stride != 1 or step.kind != 'avg':
      raise ValueError(f'{step}: only stride-1 average pooling is supported with padding="same".')
    return avg_pool_same(x, step.window)
  if step.kind == 'max':
    return max_pool_valid(x, step.window, step.stride, 0 if step.padding == 'valid' else step.padding)
  # 'valid': every window lies inside the image; an int: zero padding counted in the divisor (PyTorch's default).
  pad = 0 if step.padding == 'valid' else int(step.padding)
  acc = jnp.promote_types(x.dtype, jnp.float32)
  sums = jax.lax.reduce_window(x.astype(acc), np.array(0, acc), jax.lax.add, (1, step.window, step.window, 1),
                               (1, step.stride, step.stride, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  return (sums / (step.window * step.window)).astype(x.dtype)


def count_padding(spec: Sequence[Branch]) -> Tuple[Branch, ...]:
  """`spec` with its stride-1 'same' average pools dividing by the whole window, zero padding included (PyTorch's
  default, as timm's Inception-v3 averages)."""
  def step(s):
    return Pool('avg', s.window, 1, (s.window - 1) // 2) if isinstance(s, Pool) and s.padding == 'same' else s
  return tuple(tuple(step(s) for s in branch) for branch in spec)


def _channels(steps: Branch, in_channels: int) -> int:
  c = in_channels
  for step in steps:
    if isinstance(step, Conv):
      c = step.out
    elif isinstance(step, Split):
      c = step.a.out + step.b.out
  return c


class Mixed(nnx.Module):
  """A multi-branch block: each branch runs its steps, the outputs are concatenated. [B, H, W, C] -> [B, H', W',
  out_channels]."""

  def __init__(self, in_channels: int, branches: Sequence[Branch], conv_block):
    self.branches = tuple(tuple(b) for b in branches)
    for branch in self.branches:
      c = in_channels
      for step in branch:
        for conv in (step.a, step.b) if isinstance(step, Split) else (step,) if isinstance(step, Conv) else ():
          setattr(self, conv.name, conv_block(c, conv.out, conv.kernel, conv.stride,
                                              explicit_padding(conv.kernel, conv.padding)))
        c = _channels((step,), c)
    self.out_channels = sum(_channels(b, in_channels) for b in self.branches)

  def _branch(self, x: jax.Array, branch: Branch) -> jax.Array:
    for step in branch:
      if isinstance(step, Conv):
        x = getattr(self, step.name)(x)
      elif isinstance(step, Split):
        x = jnp.concatenate([getattr(self, step.a.name)(x), getattr(self, step.b.name)(x)], axis=-1)
      else:
        x = pool(x, step)
    return x

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.concatenate([self._branch(x, b) for b in self.branches], axis=-1)


class Residual(nnx.Module):
  """An Inception-ResNet block: x + scale * up(concat(branches)), then ReLU (unless `activation=False`); `up` is a
  1x1 convolution with bias and no BatchNorm back to x's channels, as the v4 paper's Figures 10-13 and Keras."""

  def __init__(self, in_channels: int, branches: Sequence[Branch], conv_block, *, scale: float,
               activation: bool = True, dtype, rngs: nnx.Rngs):
    self.mixed = Mixed(in_channels, branches, conv_block)
    self.up = layers.make_conv(self.mixed.out_channels, in_channels, 1, 1, 0, True, 0.0, dtype, rngs)
    self.scale, self.activation = float(scale), activation
    self.out_channels = in_channels

  def __call__(self, x: jax.Array) -> jax.Array:
    y = x + self.scale * self.up(self.mixed(x))
    return jax.nn.relu(y) if self.activation else y


class Repeat(nnx.Module):
  """Stages of equal kind in order (a run of repeated blocks: 'block35' x 10), as one stage of the model."""

  def __init__(self, blocks: Sequence[nnx.Module]):
    self.count = len(blocks)
    for i, block in enumerate(blocks):
      setattr(self, f'block_{i + 1}', block)
    self.out_channels = blocks[-1].out_channels

  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.count):
      x = getattr(self, f'block_{i + 1}')(x)
    return x


class Steps(nnx.Module):
  """A single branch as a stage: the stems' runs of convolutions and pools."""

  def __init__(self, in_channels: int, steps: Branch, conv_block):
    self.mixed = Mixed(in_channels, (steps,), conv_block)
    self.out_channels = self.mixed.out_channels

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.mixed(x)


class Head(nnx.Module):
  """Global average pool, dropout, linear: float32 logits [B, num_classes] (TF-slim's and Keras' top)."""

  def __init__(self, in_channels: int, num_classes: int, dropout_rate: float, *, dtype, rngs: nnx.Rngs):
    self.dropout = nnx.Dropout(dropout_rate)
    self.fc = nnx.Linear(in_channels, num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, x: jax.Array, *, rngs=None) -> jax.Array:
    x = self.dropout(layers.global_avg_pool(x), rngs=rngs)
    return self.fc(x).astype(jnp.float32)
