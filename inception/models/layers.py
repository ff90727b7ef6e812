"""Building blocks shared by the Inception-family models (NHWC, Caffe conventions).

Caffe's choices matter for reproducing the published numbers: "xavier" init is a fan-in
uniform, pooling rounds the output size up, and LRN divides alpha by the window size.
"""
import functools
from typing import Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inception.models import ops

DTypeLike = Union[str, jnp.dtype, type]
Padding = Union[int, Tuple[int, int]]


def xavier_init() -> jax.nn.initializers.Initializer:
  """Caffe's "xavier" filler: uniform in +-sqrt(3 / fan_in), i.e. variance 1 / fan_in."""
  return jax.nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')


def canonical_dtype(dtype: DTypeLike) -> jnp.dtype:
  """Turns 'float32' / 'bfloat16' / a jnp dtype into a numpy dtype object."""
  return jnp.dtype(dtype)


def _pair(value: Padding) -> Tuple[int, int]:
  """Expands an int to an (h, w) pair; passes pairs through."""
  if isinstance(value, int):
    return value, value
  h, w = value
  return int(h), int(w)


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
  """Output length of a convolution along one axis (Caffe and XLA both round down)."""
  return (size + 2 * padding - kernel) // stride + 1


def pool_out_size(size: int, window: int, stride: int, padding: int = 0) -> int:
  """Output length of a Caffe pooling along one axis: rounded up, last window must start inside.

  Caffe: out = ceil((size + 2 * pad - window) / stride) + 1, then one less if the last window
  would start in the bottom/right padding.
  """
  out = -(-(size + 2 * padding - window) // stride) + 1  # Ceil division.
  if padding > 0 and (out - 1) * stride >= size + padding:
    out -= 1
  return max(out, 1)


def _pool_pads(size: int, window: int, stride: int, padding: int) -> Tuple[int, int]:
  """(low, high) padding that makes a VALID window sweep yield Caffe's output length."""
  out = pool_out_size(size, window, stride, padding)
  high = (out - 1) * stride + window - size - padding
  return padding, max(high, 0)


def _reduce_pool(x: jax.Array, init, op, window: int, stride: int, padding: int, custom=None) -> jax.Array:
  """Square 2-D reduce_window over NHWC `x`, padded with `init` to Caffe's output size (`custom`: a function of
  (x, window, stride, pads) computing the same pooling another way, as ops.max_pool)."""
  _, h, w, _ = x.shape
  pads = (_pool_pads(h, window, stride, padding), _pool_pads(w, window, stride, padding))
  if custom is not None:
    y = custom(x, window, stride, pads)
  else:
    y = jax.lax.reduce_window(x, init, op, (1, window, window, 1), (1, stride, stride, 1), ((0, 0), *pads, (0, 0)))
  # Only when window < stride can the sweep give one extra (dropped-by-Caffe) position.
  return y[:, :pool_out_size(h, window, stride, padding), :pool_out_size(w, window, stride,
                                                                          padding)]


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
  """Caffe max pooling on NHWC `x`; padding and the round-up overhang count as -inf."""
  return _reduce_pool(x, np.array(-np.inf, dtype=x.dtype), jax.lax.max, window, stride, padding, ops.max_pool)


def _avg_pool_counts(size: int, window: int, stride: int, padding: int) -> np.ndarray:
  """Caffe's divisor per output position along one axis: the window clipped at size + padding."""
  out = pool_out_size(size, window, stride, padding)
  start = np.arange(out) * stride - padding
  end = np.minimum(start + window, size + padding)
  return (end - start).astype(np.float32)


def _separable_window_sums(x: jax.Array, window: int, stride: int, pads) -> jax.Array:
  """Window sums of NHWC `x` zero-padded by `pads`, as strided slices added along rows, then along columns. At
  strides above 1 (the aux heads' 5x5/3 pool) XLA:CPU runs this and its gradient several times faster than
  reduce_window's, whose gradient is a dilated pad and another reduce_window (docs/performance.md)."""
  n, _, _, c = x.shape
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  ho, wo = ((xp.shape[axis] - window) // stride + 1 for axis in (1, 2))
  rows = sum(jax.lax.slice(xp, (0, i, 0, 0), (n, i + stride * (ho - 1) + 1, xp.shape[2], c), (1, stride, 1, 1))
             for i in range(window))  # [N, Ho, Wp, C]
  return sum(jax.lax.slice(rows, (0, 0, j, 0), (n, ho, j + stride * (wo - 1) + 1, c), (1, 1, stride, 1))
             for j in range(window))  # [N, Ho, Wo, C]


def avg_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
  """Caffe average pooling on NHWC `x`; a window overhanging the edge averages its valid part.

  (With padding > 0 Caffe counts the explicit padding in the divisor but never the round-up
  overhang; this follows it. Sums are taken in at least float32.)
  """
  _, h, w, _ = x.shape
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
  custom_sum = _separable_window_sums if stride > 1 else None
  sums = _reduce_pool(x.astype(acc_dtype), np.array(0, acc_dtype), jax.lax.add, window, stride, padding, custom_sum)
  counts = np.outer(_avg_pool_counts(h, window, stride, padding),
                    _avg_pool_counts(w, window, stride, padding))  # [H_out, W_out]
  return (sums / counts[None, :, :, None]).astype(x.dtype)


def global_avg_pool(x: jax.Array) -> jax.Array:
  """Mean over the spatial axes: [B, H, W, C] -> [B, C], accumulated in at least float32."""
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
  return jnp.mean(x, axis=(1, 2), dtype=acc_dtype).astype(x.dtype)


def _channel_window_sum(v: jax.Array, size: int, mirrored: bool = False) -> jax.Array:
  """The sum over a window of `size` channels around each channel, zero-padded at the edges: Caffe's LRN window
  ((size - 1) // 2 channels below), or `mirrored` (as many above), the window an even size's gradient sums over."""
  low = (size - 1) // 2
  low, high = (size - 1 - low, low) if mirrored else (low, size - 1 - low)
  pads = ((0, 0),) * (v.ndim - 1) + ((low, high),)
  dims = (1,) * (v.ndim - 1) + (size,)
  return jax.lax.reduce_window(v, np.array(0, v.dtype), jax.lax.add, dims, (1,) * v.ndim, pads)


def _inverse_power(s: jax.Array, beta: float) -> jax.Array:
  """s ** -beta. Caffe's beta = 0.75 is rsqrt(s) * rsqrt(sqrt(s)), which XLA:CPU runs several times faster than
  pow's exp and log (docs/performance.md); it differs from pow by float rounding (~2e-7 relative)."""
  if beta == 0.75:
    return jax.lax.rsqrt(s) * jax.lax.rsqrt(jnp.sqrt(s))
  return s ** -beta


def _lrn_parts(x, size, alpha, beta, k):
  """LRN's output with the two intermediates its gradient reuses: s (the denominator's base) and p = s ** -beta."""
  s = k + (alpha / size) * _channel_window_sum(x * x, size)
  p = _inverse_power(s, beta)
  return x * p, s, p


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(x, size, alpha, beta, k):
  return _lrn_parts(x, size, alpha, beta, k)[0]


def _lrn_fwd(x, size, alpha, beta, k):
  y, s, p = _lrn_parts(x, size, alpha, beta, k)
  return y, (x, s, p)


def _lrn_bwd(size, alpha, beta, k, residuals, g):
  # y_i = x_i s_i^-beta with s_i = k + alpha / size * sum_{j in window(i)} x_j^2, so
  # dx_j = g_j s_j^-beta - 2 alpha beta / size * x_j * sum_{i: j in window(i)} g_i x_i s_i^(-beta - 1),
  # a sum over the mirrored window (the same one for odd sizes).
  x, s, p = residuals
  return (g * p - (2.0 * alpha * beta / size) * x * _channel_window_sum(g * x * p / s, size, mirrored=True),)


_lrn.defvjp(_lrn_fwd, _lrn_bwd)


def local_response_norm(x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> jax.Array:
  """LRN across channels, Caffe convention: x / (k + alpha / size * sum_window x^2) ** beta.

  The window of `size` channels is centred on each channel and clipped at the edges (zero
  padding). Computed in at least float32 and cast back to x's dtype. The gradient is written out (one more window
  sum) instead of differentiating the power, which took 2-3x longer on CPU (docs/performance.md).
  """
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
  return _lrn(x.astype(acc_dtype), int(size), float(alpha), float(beta), float(k)).astype(x.dtype)


class MaxPool(nnx.Module):
  """Stateless module wrapper of `max_pool` (Caffe ceil rounding), so a pool can be a stage."""

  def __init__(self, window: int, stride: int, padding: int = 0):
    self.window, self.stride, self.padding = window, stride, padding

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, H', W', C] with Caffe's output size."""
    return max_pool(x, self.window, self.stride, self.padding)


class LocalResponseNorm(nnx.Module):
  """Stateless module wrapper of `local_response_norm` with its hyperparameters."""

  def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
    self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalizes `x` across its last (channel) axis; shape and dtype unchanged."""
    return local_response_norm(x, self.size, self.alpha, self.beta, self.k)


def make_conv(in_channels: int, out_channels: int, kernel: Padding, stride: int, padding: Padding,
              use_bias: bool, bias_init: float, dtype: DTypeLike, rngs: nnx.Rngs) -> nnx.Conv:
  """An nnx.Conv (kernel an int or (kh, kw)) with explicit symmetric padding, xavier kernel and float32 parameters,
  computed by ops.conv_general_dilated."""
  ph, pw = _pair(padding)
  return nnx.Conv(
      in_channels, out_channels, kernel_size=_pair(kernel), strides=(stride, stride),
      padding=((ph, ph), (pw, pw)), use_bias=use_bias, dtype=canonical_dtype(dtype),
      param_dtype=jnp.float32, kernel_init=xavier_init(),
      bias_init=jax.nn.initializers.constant(bias_init),
      conv_general_dilated=ops.conv_general_dilated, rngs=rngs)


class ConvReLU(nnx.Module):
  """Convolution with bias, then ReLU: the GoogLeNet unit. The bias starts at 0.2, as in Caffe."""

  def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
               padding: Padding = 0, *, bias_init: float = 0.2, dtype: DTypeLike = 'float32', rngs: nnx.Rngs):
    self.conv = make_conv(in_channels, out_channels, kernel, stride, padding, True, bias_init, dtype, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C_in] -> [B, H', W', C_out] in the compute dtype."""
    return jax.nn.relu(self.conv(x))

  def after_conv(self, y: jax.Array) -> jax.Array:
    """What follows the kernel: bias and ReLU, for a convolution computed elsewhere (fused_1x1)."""
    return jax.nn.relu(y + self.conv.bias[...].astype(y.dtype))


class ConvBNReLU(nnx.Module):
  """Convolution without bias, BatchNorm, ReLU: the unit of the batch-normalized variants."""

  def __init__(self, in_channels: int, out_channels: int, kernel: Padding, stride: int = 1,
               padding: Padding = 0, *, momentum: float = 0.9, epsilon: float = 1e-3, scale: bool = True,
               dtype: DTypeLike = 'float32', rngs: nnx.Rngs):
    """`kernel` and `padding` are ints or (h, w) pairs; `scale=False` leaves BatchNorm without its multiplier (as
    Inception-v3 and Inception-ResNet are built in TF-slim and Keras)."""
    self.conv = make_conv(in_channels, out_channels, kernel, stride, padding, False, 0.0, dtype, rngs)
    # use_fast_variance=False: the two-pass var = E[(x - mean)^2], not E[x^2] - mean^2, which cancels badly when
    # mean >> std (as after a bias-free conv), e.g. in bfloat16.
    self.bn = nnx.BatchNorm(out_channels, momentum=momentum, epsilon=epsilon, use_fast_variance=False, use_scale=scale,
                            dtype=canonical_dtype(dtype), param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C_in] -> [B, H', W', C_out]; BN uses batch or running stats per its mode."""
    return jax.nn.relu(self.bn(self.conv(x)))

  def after_conv(self, y: jax.Array) -> jax.Array:
    """What follows the kernel: BatchNorm and ReLU, for a convolution computed elsewhere (fused_1x1)."""
    return jax.nn.relu(self.bn(y))


def fused_1x1(x: jax.Array, units) -> list:
  """Runs 1x1 conv units (ConvReLU / ConvBNReLU) that read the same `x` as one convolution, their kernels
  concatenated on the output axis, then splits the result and finishes each unit (`after_conv`). The parameters stay
  the units' own; the outputs equal the units' separate calls up to float rounding. [B, H, W, C] -> [B, H, W, C_i]."""
  convs = [unit.conv for unit in units]
  kernel = jnp.concatenate([conv.kernel[...] for conv in convs], axis=-1).astype(x.dtype)  # [1, 1, C, sum C_i]
  y = convs[0].conv_general_dilated(
      x, kernel, (1, 1), ((0, 0), (0, 0)),
      dimension_numbers=jax.lax.conv_dimension_numbers(x.shape, kernel.shape, ('NHWC', 'HWIO', 'NHWC')))
  splits = np.cumsum([conv.out_features for conv in convs])[:-1]
  return [unit.after_conv(part) for unit, part in zip(units, jnp.split(y, splits, axis=-1))]


def dense(in_features: int, out_features: int, *, bias_init: float, dtype: DTypeLike,
          rngs: nnx.Rngs) -> nnx.Linear:
  """An nnx.Linear with xavier kernel, constant bias and float32 parameters."""
  return nnx.Linear(in_features, out_features, dtype=canonical_dtype(dtype),
                    param_dtype=jnp.float32, kernel_init=xavier_init(),
                    bias_init=jax.nn.initializers.constant(bias_init), rngs=rngs)

