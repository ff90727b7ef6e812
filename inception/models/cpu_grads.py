"""Convolution and max-pool gradients written as the operations XLA:CPU runs fast (docs/performance.md).

XLA:CPU computes a convolution's kernel gradient 3-30x slower than the same arithmetic as one matrix product, and its
max-pool gradient (select-and-scatter) is the next largest cost of the backward pass. The functions here have XLA's
forward and a custom VJP: the kernel gradient as a product of the stacked input windows with the output gradient
(im2col), the max-pool gradient by routing each output's gradient to the first maximum of its window (Caffe's and
PyTorch's rule for ties) with an argmax and padded adds. The input gradient stays XLA's. Results equal XLA's to float
rounding (tests/models/test_cpu_grads.py). Accelerators keep XLA's own gradients unless asked otherwise.
"""
import functools
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

OPS = ('conv', 'max_pool')  # the convolution's kernel gradient, the max pool's
# model.custom_gradients -> the ops whose VJP is custom. 'cpu' and 'cpu_pool' apply on CPU backends only; 'cpu_pool'
# leaves the kernel gradient to XLA, the faster under config.compiler_options' CPU default (docs/performance.md).
_POLICY_OPS = {'cpu': OPS, 'cpu_pool': ('max_pool',), 'always': OPS, 'never': ()}
POLICIES = tuple(_POLICY_OPS)
_NHWC = ('NHWC', 'HWIO', 'NHWC')
Pads = Tuple[Tuple[int, int], Tuple[int, int]]


def enabled(policy: str, op: str) -> bool:
  """Whether `policy` (one of POLICIES) asks for the custom gradient of `op` (one of OPS: the convolution's kernel
  gradient, the max pool's) on the backend being traced for."""
  if policy not in POLICIES:
    raise ValueError(f'custom_gradients={policy!r}: use one of {", ".join(POLICIES)}.')
  if op not in OPS:
    raise ValueError(f'No custom gradient for {op!r}; there are: {", ".join(OPS)}.')
  return op in _POLICY_OPS[policy] and (policy == 'always' or jax.default_backend() == 'cpu')


def _windows(x: jax.Array, kernel_hw: Tuple[int, int], strides: Tuple[int, int], pads: Pads,
             out_hw: Tuple[int, int]) -> jax.Array:
  """The kh*kw shifted, strided windows of padded NHWC `x`, stacked on channels in HWIO order: [N, Ho, Wo, kh*kw*C]."""
  (kh, kw), (sh, sw), (ho, wo) = kernel_hw, strides, out_hw
  n, _, _, c = x.shape
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0))) if any(p for pair in pads for p in pair) else x
  cols = [lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def conv_kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: Sequence[int], strides: Tuple[int, int],
                     pads: Pads) -> jax.Array:
  """d(loss)/d(kernel) of an NHWC/HWIO convolution as one matrix product: x [N, H, W, C], g [N, Ho, Wo, O] ->
  [kh, kw, C, O], accumulated in at least float32 and returned in x's dtype."""
  kh, kw, c, o = kernel_shape
  cols = _windows(x, (kh, kw), strides, pads, g.shape[1:3])  # [N, Ho, Wo, kh*kw*C]
  acc = jnp.promote_types(x.dtype, jnp.float32)
  grad = jnp.einsum('nhwk,nhwo->ko', cols, g, preferred_element_type=acc)
  return grad.reshape(kh, kw, c, o).astype(x.dtype)


def _xla_conv(x, kernel, strides, pads):
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_nhwc(x: jax.Array, kernel: jax.Array, strides: Tuple[int, int], pads: Pads) -> jax.Array:
  """XLA's NHWC/HWIO convolution, with the kernel gradient computed by `conv_kernel_grad`."""
  return _xla_conv(x, kernel, strides, pads)


def _conv_fwd(x, kernel, strides, pads):
  return _xla_conv(x, kernel, strides, pads), (x, kernel)


def _conv_bwd(strides, pads, residuals, g):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda inputs: _xla_conv(inputs, kernel, strides, pads), x)  # XLA's input gradient
  return input_vjp(g)[0], conv_kernel_grad(x, g, kernel.shape, strides, pads).astype(kernel.dtype)


conv_nhwc.defvjp(_conv_fwd, _conv_bwd)


@functools.lru_cache(maxsize=None)  # one function per policy, so models built alike have equal graph definitions
def make_conv_general_dilated(policy: str):
  """A drop-in for `lax.conv_general_dilated` (nnx.Conv's `conv_general_dilated`) that uses `conv_nhwc` when `policy`
  is enabled and the call is a plain NHWC/HWIO convolution (explicit padding, no dilation or groups); otherwise XLA's."""

  def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                           dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    plain = (enabled(policy, 'conv') and lhs.ndim == 4 and not isinstance(padding, str) and feature_group_count == 1
             and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
             and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
             and precision is None and kwargs.get('out_sharding') is None and 'preferred_element_type' not in kwargs)
    if not plain:
      return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                      dimension_numbers, feature_group_count, precision=precision, **kwargs)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return conv_nhwc(lhs, rhs, tuple(int(s) for s in window_strides), pads)

  return conv_general_dilated


def _xla_max_pool(x, window, stride, pads):
  """The forward max pool. At stride 1 it is the maximum of the window^2 shifted slices of the padded input: one
  elementwise fusion that XLA:CPU runs 3-4x faster than its reduce_window (docs/performance.md); the values are the
  same (a maximum rounds nothing). At larger strides reduce_window was the faster."""
  init = np.array(-np.inf, dtype=x.dtype)
  if stride != 1:
    return lax.reduce_window(x, init, lax.max, (1, window, window, 1), (1, stride, stride, 1),
                             ((0, 0), pads[0], pads[1], (0, 0)))
  n, _, _, c = x.shape
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=init)  # [N, Hp, Wp, C]
  ho, wo = xp.shape[1] - window + 1, xp.shape[2] - window + 1
  shifted = (lax.slice(xp, (0, i, j, 0), (n, i + ho, j + wo, c)) for i in range(window) for j in range(window))
  return functools.reduce(jnp.maximum, shifted)  # [N, Ho, Wo, C]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool_nhwc(x: jax.Array, window: int, stride: int, pads: Pads) -> jax.Array:
  """Square max pooling of NHWC `x` padded with -inf by `pads`; the gradient goes to the first maximum of each window
  (row-major), computed with an argmax and padded adds instead of XLA's select-and-scatter."""
  return _xla_max_pool(x, window, stride, pads)


def _pool_fwd(x, window, stride, pads):
  return _xla_max_pool(x, window, stride, pads), x


def _strided_views(x: jax.Array, window: int, stride: int, count: int, axis: int) -> jax.Array:
  """The `window` shifted views of `x` along `axis` that a 1-D pooling of `count` outputs reads: [window, *x.shape]
  with `count` on `axis`."""
  def view(i):
    start, limit, strides = [0] * x.ndim, list(x.shape), [1] * x.ndim
    start[axis], limit[axis], strides[axis] = i, i + stride * (count - 1) + 1, stride
    return lax.slice(x, start, limit, strides)
  return jnp.stack([view(i) for i in range(window)])


def _route_to_first_max(views: jax.Array, g: jax.Array, stride: int, size: int, axis: int) -> jax.Array:
  """The gradient of a 1-D max pooling along `axis` onto its input's grid (`size` long on `axis`): each output's
  gradient `g` goes to the first position of its window holding the maximum of `views` (from _strided_views)."""
  winner = jnp.argmax(views, axis=0)
  zero = jnp.zeros((), g.dtype)
  grad = None
  for i in range(views.shape[0]):
    # Output a of the pooling sits at input position i + stride * a.
    config = [(0, 0, 0)] * g.ndim
    config[axis] = (i, size - i - stride * (g.shape[axis] - 1) - 1, stride - 1)
    part = lax.pad(jnp.where(winner == i, g, zero), zero, config)
    grad = part if grad is None else grad + part
  return grad


def _pool_bwd(window, stride, pads, x, g):
  # A square max pool is a max over rows of the max within each row, so its gradient goes back in two 1-D steps:
  # first to the winning row of each window (h), then to the winning column within that row (w). Taking the first
  # maximum in each step gives the first maximum in row-major order, Caffe's and PyTorch's rule for ties. Two steps
  # of `window` views move a third to a half of the data one step of window^2 views does (docs/performance.md).
  # The winners are recomputed here from one copy of x. Comparing positions with the forward's pooled output instead
  # lost gradients: XLA may compute that output from a differently fused (differently rounded) copy of x, so some
  # windows matched no position; in BatchNorm networks this made the gradient depend on an example's place in the
  # batch (docs/performance.md).
  _, h, w, _ = x.shape
  ho, wo = g.shape[1:3]
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-jnp.inf)  # [N, Hp, Wp, C]
  along_w = _strided_views(xp, window, stride, wo, axis=2)  # [window, N, Hp, Wo, C]
  row_max = jnp.max(along_w, axis=0)  # [N, Hp, Wo, C]: the max within each row of every window
  to_rows = _route_to_first_max(_strided_views(row_max, window, stride, ho, axis=1), g, stride, xp.shape[1], axis=1)
  grad = _route_to_first_max(along_w, to_rows, stride, xp.shape[2], axis=2)  # [N, Hp, Wp, C]
  return (grad[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w],)


max_pool_nhwc.defvjp(_pool_fwd, _pool_bwd)
