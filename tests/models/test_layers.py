"""Tests for inception.models.layers against plain numpy references of the Caffe formulas."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inception.models import layers


def _np_pool(x, window, stride, padding, mode):
  """Loop reference of Caffe pooling on NHWC numpy `x` (avg: Caffe's divisor)."""
  _, h, w, _ = x.shape
  oh = layers.pool_out_size(h, window, stride, padding)
  ow = layers.pool_out_size(w, window, stride, padding)
  out = np.zeros((x.shape[0], oh, ow, x.shape[3]), np.float64)
  for i in range(oh):
    for j in range(ow):
      hs, ws = i * stride - padding, j * stride - padding
      he, we = min(hs + window, h + padding), min(ws + window, w + padding)
      patch = x[:, max(hs, 0):min(he, h), max(ws, 0):min(we, w), :]
      if mode == 'max':
        out[:, i, j] = patch.max(axis=(1, 2))
      else:
        out[:, i, j] = patch.sum(axis=(1, 2)) / ((he - hs) * (we - ws))
  return out


def _np_lrn(x, size, alpha, beta, k):
  """Loop reference of Caffe across-channel LRN on [..., C] numpy `x`."""
  c = x.shape[-1]
  out = np.empty_like(x, dtype=np.float64)
  low = (size - 1) // 2
  for ch in range(c):
    lo, hi = max(ch - low, 0), min(ch - low + size, c)
    s = (x[..., lo:hi].astype(np.float64) ** 2).sum(axis=-1)
    out[..., ch] = x[..., ch] / (k + alpha / size * s) ** beta
  return out


@pytest.mark.parametrize('size,window,stride,padding,expected', [
    (112, 3, 2, 0, 56), (56, 3, 2, 0, 28), (28, 3, 2, 0, 14), (14, 3, 2, 0, 7),
    (7, 3, 2, 0, 3), (8, 3, 2, 0, 4), (13, 3, 2, 0, 6), (14, 5, 3, 0, 4), (7, 5, 3, 0, 2),
    (4, 5, 3, 0, 1), (7, 3, 1, 1, 7), (6, 3, 2, 1, 4),
    (5, 2, 3, 1, 2),  # The last window would start in the padding: dropped.
])
def test_pool_out_size_rounds_up_like_caffe(size, window, stride, padding, expected):
  """Output lengths follow Caffe: ceil rounding, last window must start inside."""
  assert layers.pool_out_size(size, window, stride, padding) == expected


def test_conv_out_size_rounds_down():
  """Convolutions round down; conv1 halves 224 to 112."""
  assert layers.conv_out_size(224, 7, 2, 3) == 112
  assert layers.conv_out_size(112, 7, 2, 3) == 56
  assert layers.conv_out_size(113, 7, 2, 3) == 57


@pytest.mark.parametrize('h,w,window,stride,padding', [
    (8, 7, 3, 2, 0), (14, 13, 3, 2, 0), (7, 7, 3, 1, 1), (9, 10, 3, 2, 0), (6, 6, 3, 2, 1),
    (5, 5, 2, 3, 1),
])
def test_max_pool_matches_numpy(h, w, window, stride, padding):
  """max_pool equals the loop reference, including padded and overhanging windows."""
  x = np.random.default_rng(0).normal(size=(2, h, w, 3)).astype(np.float32)
  got = layers.max_pool(jnp.asarray(x), window, stride, padding)
  want = _np_pool(x, window, stride, padding, 'max')
  assert got.shape == want.shape
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


@pytest.mark.parametrize('h,w,window,stride', [(7, 7, 5, 3), (14, 14, 5, 3), (8, 11, 3, 2),
                                               (4, 4, 5, 3)])
def test_avg_pool_averages_only_valid_elements(h, w, window, stride):
  """avg_pool equals the loop reference that divides by the valid count."""
  x = np.random.default_rng(1).normal(size=(2, h, w, 4)).astype(np.float32)
  got = np.asarray(layers.avg_pool(jnp.asarray(x), window, stride))
  want = _np_pool(x, window, stride, 0, 'avg')
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('h,w,window,stride', [(14, 14, 5, 3), (8, 11, 3, 2)])
def test_avg_pool_gradient_spreads_each_output_over_its_valid_window(h, w, window, stride):
  """The gradient of the strided (separable-slices) average pool: each output's gradient divided by its valid count,
  added to every element of its window inside the image."""
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, h, w, 3)), jnp.float32)
  y = layers.avg_pool(x, window, stride)
  g = np.random.default_rng(4).normal(size=y.shape).astype(np.float32)
  got = np.asarray(jax.grad(lambda x: jnp.sum(layers.avg_pool(x, window, stride) * g))(x))
  want = np.zeros(x.shape, np.float32)
  for a, b in np.ndindex(*y.shape[1:3]):
    rows, cols = slice(a * stride, min(a * stride + window, h)), slice(b * stride, min(b * stride + window, w))
    count = (rows.stop - rows.start) * (cols.stop - cols.start)
    want[:, rows, cols] += g[:, a:a + 1, b:b + 1] / count
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_avg_pool_overhanging_corner_is_mean_of_valid_block():
  """A window hanging over the edge is the mean of its in-image part."""
  # 7x7 input, 5x5/3 windows: the last window covers rows/cols 3..6 only (4 valid of 5).
  x = np.random.default_rng(2).normal(size=(1, 7, 7, 1)).astype(np.float32)
  got = np.asarray(layers.avg_pool(jnp.asarray(x), 5, 3))
  assert got.shape == (1, 2, 2, 1)
  np.testing.assert_allclose(got[0, 1, 1, 0], x[0, 3:7, 3:7, 0].mean(), rtol=1e-5)
  np.testing.assert_allclose(got[0, 0, 1, 0], x[0, 0:5, 3:7, 0].mean(), rtol=1e-5)


@pytest.mark.parametrize('alpha', [1e-4, 0.5])
def test_lrn_matches_numpy_loop_including_edge_channels(alpha):
  """LRN equals the formula, windows clipped at the first/last channels."""
  x = 5.0 * np.random.default_rng(3).normal(size=(2, 3, 4, 9)).astype(np.float32)
  got = np.asarray(layers.local_response_norm(jnp.asarray(x), 5, alpha, 0.75, 1.0))
  want = _np_lrn(x, 5, alpha, 0.75, 1.0)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert not np.allclose(want, x)  # The normalization actually changes the values.


def test_lrn_even_window_matches_caffe_offsets():
  """An even window starts (size - 1) // 2 channels below the centre, as in Caffe."""
  x = 3.0 * np.random.default_rng(4).normal(size=(1, 2, 2, 6)).astype(np.float32)
  got = np.asarray(layers.local_response_norm(jnp.asarray(x), 4, 0.3, 0.75, 2.0))
  np.testing.assert_allclose(got, _np_lrn(x, 4, 0.3, 0.75, 2.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('size, alpha, beta, k', [(5, 1e-4, 0.75, 1.0), (5, 0.5, 0.75, 1.0), (4, 0.3, 0.75, 2.0),
                                                   (3, 0.2, 0.6, 1.5)])
def test_lrn_gradient_equals_the_power_formulas(size, alpha, beta, k):
  """The written-out VJP equals autodiff of x * (k + alpha / size * window_sum(x^2)) ** -beta, even windows (whose
  gradient sums over the mirrored window) and a beta that takes the plain power included."""
  x = 3.0 * np.random.default_rng(5).normal(size=(2, 3, 3, 9)).astype(np.float32)
  g = np.random.default_rng(6).normal(size=x.shape).astype(np.float32)
  low = (size - 1) // 2

  def reference(v):
    window = jax.lax.reduce_window(v * v, 0.0, jax.lax.add, (1, 1, 1, size), (1, 1, 1, 1),
                                   ((0, 0),) * 3 + ((low, size - 1 - low),))
    return v * (k + alpha / size * window) ** -beta

  want = jax.vjp(reference, jnp.asarray(x))[1](jnp.asarray(g))[0]
  got = jax.vjp(lambda v: layers.local_response_norm(v, size, alpha, beta, k), jnp.asarray(x))[1](jnp.asarray(g))[0]
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(want) - g).max() > 1e-3  # the normalisation's own term matters here


def test_xavier_init_is_fan_in_uniform():
  """Caffe xavier: uniform on +-sqrt(3 / fan_in), variance 1 / fan_in."""
  kernel = np.asarray(layers.xavier_init()(jax.random.key(0), (5, 5, 16, 32)))
  limit = math.sqrt(3.0 / (5 * 5 * 16))
  assert np.abs(kernel).max() <= limit
  assert np.abs(kernel).max() > 0.95 * limit  # Uniform fills the whole interval.
  np.testing.assert_allclose(kernel.var(), 1.0 / 400, rtol=0.1)


def test_conv_relu_bias_and_output():
  """ConvReLU starts with bias 0.2 and applies ReLU."""
  block = layers.ConvReLU(3, 8, 3, padding=1, rngs=nnx.Rngs(params=0))
  np.testing.assert_array_equal(np.asarray(block.conv.bias[...]), np.full(8, 0.2, np.float32))
  y = block(jnp.zeros((1, 5, 5, 3)))
  assert y.shape == (1, 5, 5, 8)
  np.testing.assert_allclose(np.asarray(y), 0.2)  # Zero input -> relu(bias).


def test_conv_bn_relu_has_no_conv_bias_and_batch_stats():
  """ConvBNReLU drops the conv bias and keeps BN running statistics."""
  block = layers.ConvBNReLU(3, 8, 3, stride=2, padding=1, momentum=0.5, epsilon=1e-3,
                            rngs=nnx.Rngs(params=0))
  assert block.conv.bias is None
  stats = nnx.state(block, nnx.BatchStat)
  assert {k for k in stats['bn']} == {'mean', 'var'}
  y = block(jnp.asarray(np.random.default_rng(5).normal(size=(4, 6, 6, 3)), jnp.float32))
  assert y.shape == (4, 3, 3, 8)
  assert float(jnp.min(y)) >= 0.0
  assert block.bn.momentum == 0.5
  assert not np.allclose(np.asarray(block.bn.mean[...]), 0.0)  # Train mode updates the stats.


def test_bfloat16_compute_keeps_float32_params_and_dtype_flow():
  """bfloat16 compute keeps float32 params; the layers preserve the activation dtype."""
  block = layers.ConvReLU(3, 4, 1, dtype='bfloat16', rngs=nnx.Rngs(params=0))
  assert block.conv.kernel[...].dtype == jnp.float32
  x = jnp.ones((1, 7, 7, 3), jnp.bfloat16)
  y = block(x)
  assert y.dtype == jnp.bfloat16
  assert layers.max_pool(y, 3, 2).dtype == jnp.bfloat16
  assert layers.avg_pool(y, 5, 3).dtype == jnp.bfloat16
  assert layers.local_response_norm(y).dtype == jnp.bfloat16


def test_pools_and_lrn_are_differentiable():
  """Gradients flow through the pools and LRN."""
  x = jnp.asarray(np.random.default_rng(6).normal(size=(1, 7, 7, 6)), jnp.float32)

  def loss(x):
    """A scalar that depends on every pooling and LRN output."""
    y = layers.local_response_norm(layers.max_pool(x, 3, 2))
    return jnp.sum(y) + jnp.sum(layers.avg_pool(x, 5, 3))

  grad = jax.grad(loss)(x)
  assert grad.shape == x.shape
  assert bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.parametrize('unit', [layers.ConvReLU, layers.ConvBNReLU])
def test_fused_1x1_equals_the_separate_convolutions_and_their_gradients(unit):
  """Three 1x1 units reading one input, as one convolution: same outputs, same gradients, same BN statistics."""
  units = [unit(6, c, 1, rngs=nnx.Rngs(params=i)) for i, c in enumerate((4, 3, 5))]
  for u in units:
    if hasattr(u, 'bn'):
      u.bn.use_running_average = False
  graphdef, params, rest = nnx.split(units, nnx.Param, ...)
  x = jnp.asarray(np.random.RandomState(0).normal(size=(2, 5, 5, 6)), jnp.float32)

  def run(params, fused):
    model = nnx.merge(graphdef, params, rest, copy=True)
    outs = layers.fused_1x1(x, model) if fused else [u(x) for u in model]
    loss = sum(jnp.sum(o * jnp.cos(jnp.arange(o.size, dtype=o.dtype)).reshape(o.shape)) for o in outs)
    return loss, (outs, nnx.state(model, nnx.BatchStat))

  (loss_a, (outs_a, stats_a)), grads_a = jax.value_and_grad(run, has_aux=True)(params, True)
  (loss_b, (outs_b, stats_b)), grads_b = jax.value_and_grad(run, has_aux=True)(params, False)
  assert [o.shape for o in outs_a] == [(2, 5, 5, 4), (2, 5, 5, 3), (2, 5, 5, 5)]
  for a, b in zip(outs_a + jax.tree.leaves(grads_a) + jax.tree.leaves(stats_a),
                  outs_b + jax.tree.leaves(grads_b) + jax.tree.leaves(stats_b)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
