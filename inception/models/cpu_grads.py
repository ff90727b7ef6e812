"""Convolution and max-pool gradients written as the operations XLA:CPU runs fast (docs/performance.md).

XLA:CPU computes a convolution's kernel gradient 3-30x slower than the same arithmetic as one matrix product, and its
max-pool gradient (select-and-scatter) is the next largest cost of the backward pass. The functions here have XLA's
forward and a custom VJP: the kernel gradient as a product of the stacked input windows with the output gradient
(im2col; for 1x1 kernels, of the input itself), the max-pool gradient by routing each output's gradient to the first
maximum of its window (Caffe's and PyTorch's rule for ties) as an elementwise gather over shifted slices; under
differentiation the pool's forward finds those winners along with the maxima and keeps them as an int8 index. The input
gradient stays XLA's. Results equal XLA's to float rounding (tests/models/test_cpu_grads.py). ops.py decides where
they run: only in steps lowered for CPU, with `config.cpu_kernels` on.
"""
import functools
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


_NHWC = ('NHWC', 'HWIO', 'NHWC')
Pads = Tuple[Tuple[int, int], Tuple[int, int]]


def _window_view(xp: jax.Array, i: int, j: int, strides: Tuple[int, int], out_hw: Tuple[int, int]) -> jax.Array:
  """Window position (i, j) of every output of a sliding window (a convolution or a pooling) over padded NHWC `xp`:
  [N, Ho, Wo, C]."""
  (sh, sw), (ho, wo), (n, c) = strides, out_hw, (xp.shape[0], xp.shape[3])
  return lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1))


def _windows(x: jax.Array, kernel_hw: Tuple[int, int], strides: Tuple[int, int], pads: Pads,
             out_hw: Tuple[int, int]) -> jax.Array:
  """The kh*kw shifted, strided windows of padded NHWC `x`, stacked on channels in HWIO order: [N, Ho, Wo, kh*kw*C]."""
  kh, kw = kernel_hw
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0))) if any(p for pair in pads for p in pair) else x
  cols = [_window_view(xp, i, j, strides, out_hw) for i in range(kh) for j in range(kw)]
  return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def conv_kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: Sequence[int], strides: Tuple[int, int],
                     pads: Pads) -> jax.Array:
  """d(loss)/d(kernel) of an NHWC/HWIO convolution as one matrix product: x [N, H, W, C], g [N, Ho, Wo, O] ->
  [kh, kw, C, O], accumulated in at least float32 and returned in x's dtype."""
  kh, kw, c, o = kernel_shape
  cols = _windows(x, (kh, kw), strides, pads, g.shape[1:3])  # [N, Ho, Wo, kh*kw*C]
  acc = jnp.promote_types(x.dtype, jnp.float32)
  # The windows transposed to [kh*kw*C, N*Ho*Wo] first: XLA:CPU's product is then up to 2x faster than one that
  # contracts the leading axis of both operands (docs/performance.md).
  grad = jnp.dot(cols.reshape(-1, kh * kw * c).T, g.reshape(-1, o), preferred_element_type=acc)
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


def _pooled_hw(xp: jax.Array, window: int, stride: int) -> Tuple[int, int]:
  """Output rows and columns of a window over padded NHWC `xp` (only whole windows)."""
  return tuple((xp.shape[d] - window) // stride + 1 for d in (1, 2))


def _xla_max_pool(x, window, stride, pads):
  """The forward max pool without gradients: the maximum of the window^2 shifted (strided) slices of the padded
  input, one elementwise fusion. XLA:CPU runs it 3-4x faster than its reduce_window at stride 1 and 1.7-1.9x at
  stride 2 on 2 Intel Xeon cores (on an AMD EPYC reduce_window was the faster at stride 2; docs/performance.md). The
  values are the same: a maximum rounds nothing."""
  init = np.array(-np.inf, dtype=x.dtype)
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=init)  # [N, Hp, Wp, C]
  out_hw = _pooled_hw(xp, window, stride)
  shifted = (_window_view(xp, i, j, (stride, stride), out_hw) for i in range(window) for j in range(window))
  return functools.reduce(jnp.maximum, shifted)  # [N, Ho, Wo, C]


def max_pool_nhwc(x: jax.Array, window: int, stride: int, pads: Pads) -> jax.Array:
  """Square max pooling of NHWC `x` padded with -inf by `pads`; the gradient goes to the first maximum of each window
  (row-major), found in the forward pass and kept as an int8 index instead of XLA's select-and-scatter."""
  return _max_pool(x, window, stride, pads, tuple(x.shape[1:3]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_pool(x, window, stride, pads, in_hw):
  del in_hw  # the backward's output shape
  return _xla_max_pool(x, window, stride, pads)


def _index_dtype(window: int):
  """The narrowest integer type that holds a window position and the -1 that `_pool_bwd` pads the winners with."""
  return jnp.int8 if window * window <= 127 else jnp.int32


def _max_and_first_index(xp: jax.Array, window: int, stride: int, out_hw: Tuple[int, int]):
  """Per output, the maximum of its window over padded `xp` and the row-major index (i * window + j) of its first
  maximum, both [N, Ho, Wo, C]: a running maximum over the window positions in row-major order, replaced only where
  a later one is strictly larger (Caffe's and PyTorch's rule for ties) or NaN (so that a NaN reaches the output, as
  in the forward without gradients). XLA fuses the chain into one pass over the shifted views, with no stack."""
  dtype = _index_dtype(window)
  best = _window_view(xp, 0, 0, (stride, stride), out_hw)
  index = jnp.zeros(best.shape, dtype)
  for k in range(1, window * window):
    view = _window_view(xp, k // window, k % window, (stride, stride), out_hw)
    larger = (view > best) | jnp.isnan(view)
    best, index = jnp.where(larger, view, best), jnp.where(larger, jnp.asarray(k, dtype), index)
  return best, index


def _pool_fwd(x, window, stride, pads, in_hw):
  # The pooled output and its winners in one pass over the same views of one copy of x, so they agree. (Comparing
  # positions with a pooled output in the backward lost gradients: XLA may compute that output from a differently
  # fused, differently rounded copy of x, and in BatchNorm networks the gradient then depended on an example's place
  # in the batch; docs/performance.md.) The residual is the int8 index, a quarter of the output's bytes, so the
  # backward neither keeps nor pads x nor finds the winners again. The barrier materialises the padded input once:
  # without it XLA fused its producers (an inception block's concatenation) into every one of the window^2 views.
  xp = lax.optimization_barrier(jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-jnp.inf))
  return _max_and_first_index(xp, window, stride, _pooled_hw(xp, window, stride))


def _pool_bwd(window, stride, pads, in_hw, index, g):
  # Every input position gathers instead of the outputs scattering, one phase at a time: padded input row
  # stride * q + r receives from the outputs q - m (m = 0, 1, ...) whose window offset r + stride * m is inside the
  # window, and likewise for columns. So each of the stride^2 phases is a sum over unit-stride slices of g and of the
  # winners (padded by `lead` rows and columns in front), and the phases interleave back into the input grid. At
  # stride 2 that is 9 selects per 4 positions instead of 9 per position over dilated copies (docs/performance.md).
  (h, w), (n, ho, wo, c) = in_hw, g.shape
  hp, wp = h + sum(pads[0]), w + sum(pads[1])
  qh, qw = -(-hp // stride), -(-wp // stride)  # rows and columns of one phase
  lead = (window - 1) // stride  # the most earlier outputs whose windows reach a position
  ext = ((0, 0), (lead, qh - ho), (lead, qw - wo), (0, 0))
  g_ext = jnp.pad(g, ext)  # [N, lead + Qh, lead + Qw, C]
  index_ext = jnp.pad(index, ext, constant_values=-1)  # -1: no output there
  g_ext, index_ext = lax.optimization_barrier((g_ext, index_ext))  # padded once, not per slice
  rows = []
  for r in range(stride):
    phases = []
    for t in range(stride):
      part = jnp.zeros((n, qh, qw, c), g.dtype)
      for mi, i in enumerate(range(r, window, stride)):  # window row i = r + stride * mi
        for ni, j in enumerate(range(t, window, stride)):
          start = (0, lead - mi, lead - ni, 0)
          limit = (n, start[1] + qh, start[2] + qw, c)
          part = part + jnp.where(lax.slice(index_ext, start, limit) == i * window + j,
                                  lax.slice(g_ext, start, limit), 0)
      phases.append(part)
    rows.append(jnp.stack(phases, axis=3))  # [N, Qh, Qw, stride, C]
  grad = jnp.stack(rows, axis=2).reshape(n, qh * stride, qw * stride, c)  # the padded input grid, rounded up
  return (grad[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w],)


_max_pool.defvjp(_pool_fwd, _pool_bwd)
