"""The custom CPU gradients (models/cpu_grads.py) equal XLA's: convolution kernel and input gradients for every
kernel, stride and padding GoogLeNet uses, and max-pool gradients on inputs without ties (a whole model with all CPU
kernels on and off: tests/models/test_winograd.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception.models import cpu_grads, layers, ops


def _pool(x, window, stride, padding, kernels: bool):
  """layers.max_pool with the CPU kernels (cpu_grads.max_pool_nhwc on this CPU machine) on or off."""
  with ops.cpu_kernels(kernels):
    return layers.max_pool(x, window, stride, padding)


def _conv_grads(fn, x, kernel, strides, pads):
  def loss(x, kernel):
    y = fn(x, kernel, strides, pads)
    return jnp.sum(y * jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape)))  # a gradient that varies
  return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)


def _xla_conv(x, kernel, strides, pads):
  return jax.lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('size,kernel,stride,pad,c_in,c_out', [
    (9, 1, 1, 0, 5, 7),     # the 1x1 convolutions
    (9, 3, 1, 1, 4, 6),     # 3x3 branches
    (9, 5, 1, 2, 3, 4),     # 5x5 branches
    (15, 7, 2, 3, 3, 8),    # the stem's 7x7/2
    (10, 3, 2, 0, 3, 5),    # a strided unpadded 3x3 (reductions of the later family)
    (8, 3, 1, (1, 2), 2, 3),  # asymmetric padding
])
def test_conv_gradients_equal_xla(size, kernel, stride, pad, c_in, c_out):
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.normal(size=(2, size, size + 1, c_in)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(kernel, kernel, c_in, c_out)), jnp.float32)
  pads = ((pad, pad), (pad, pad)) if isinstance(pad, int) else (pad, pad[::-1])
  ours = _conv_grads(cpu_grads.conv_nhwc, x, k, (stride, stride), pads)
  xla = _conv_grads(_xla_conv, x, k, (stride, stride), pads)
  np.testing.assert_allclose(cpu_grads.conv_nhwc(x, k, (stride, stride), pads), _xla_conv(x, k, (stride, stride), pads))
  for a, b in zip(ours, xla):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


@pytest.mark.parametrize('size,window,stride,padding', [(9, 3, 1, 1), (16, 3, 2, 0), (13, 3, 2, 0), (7, 2, 2, 0)])
def test_max_pool_gradient_equals_xla_without_ties(size, window, stride, padding):
  x = jnp.asarray(np.random.RandomState(1).permutation(2 * size * size * 3).reshape(2, size, size, 3), jnp.float32)
  weights = jnp.cos(jnp.arange(10_000, dtype=jnp.float32))

  def loss(x, kernels):
    y = _pool(x, window, stride, padding, kernels)
    return jnp.sum(y * weights[:y.size].reshape(y.shape))

  ours = jax.grad(loss)(x, True)
  xla = jax.grad(loss)(x, False)
  np.testing.assert_array_equal(_pool(x, window, stride, padding, True), _pool(x, window, stride, padding, False))
  np.testing.assert_allclose(ours, xla, rtol=1e-5, atol=1e-7)  # sums of several windows: another order
  assert float(jnp.abs(ours).sum()) > 0


def test_max_pool_gradient_of_a_tie_goes_to_the_first_maximum_once():
  x = jnp.zeros((1, 3, 3, 1))
  grad = jax.grad(lambda x: _pool(x, 3, 1, 0, True).sum())(x)
  assert grad[0, 0, 0, 0] == 1 and float(grad.sum()) == 1


def _first_max_gradient(x, window, stride, pad, g):
  """The reference: each output's gradient to the first maximum of its window in row-major order, one by one."""
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
  grad = np.zeros_like(xp)
  for n, a, b, c in np.ndindex(*g.shape):
    patch = xp[n, a * stride:a * stride + window, b * stride:b * stride + window, c]
    i, j = np.unravel_index(np.argmax(patch), patch.shape)  # numpy's argmax: the first in row-major order
    grad[n, a * stride + i, b * stride + j, c] += g[n, a, b, c]
  return grad[:, pad:pad + x.shape[1], pad:pad + x.shape[2]]


@pytest.mark.parametrize('size,window,stride,padding', [(9, 3, 1, 1), (13, 3, 2, 0), (8, 3, 2, 1), (11, 5, 3, 1),
                                                      (10, 2, 3, 0)])
def test_max_pool_gradient_with_many_ties_follows_the_row_major_rule(size, window, stride, padding):
  """Small integers tie in most windows; a tie at (0, 2) and (1, 0) is row-major's (0, 2), column-major's (1, 0)."""
  x = np.random.RandomState(2).randint(0, 3, (2, size, size, 4)).astype(np.float32)
  x[0, :3, :3, 0] = [[0, 0, 5], [5, 0, 0], [0, 0, 0]]
  y = _pool(jnp.asarray(x), window, stride, padding, True)
  g = np.random.RandomState(3).rand(*y.shape).astype(np.float32)
  _, vjp = jax.vjp(lambda x: _pool(x, window, stride, padding, True), jnp.asarray(x))
  np.testing.assert_allclose(vjp(jnp.asarray(g))[0], _first_max_gradient(x, window, stride, padding, g), rtol=1e-6)


@pytest.mark.parametrize('stride', [1, 2])
def test_max_pool_forward_under_differentiation_equals_xla_and_keeps_nan(stride):
  """The custom VJP's forward (the maximum and its winners in one pass) gives XLA's values, ties and a NaN included,
  so a diverging activation still reaches the loss."""
  x = np.random.RandomState(4).randint(0, 3, (2, 9, 9, 3)).astype(np.float32)
  x[1, 4, 4, 2] = np.nan
  pool = lambda x: _pool(x, 3, stride, 1, True)
  y = jax.jit(lambda x: jax.vjp(pool, x)[0])(jnp.asarray(x))
  np.testing.assert_array_equal(y, _pool(jnp.asarray(x), 3, stride, 1, False))
  assert np.isnan(y[1]).any() and not np.isnan(y[0]).any()


@pytest.mark.parametrize('kernel,stride,pad,custom', [
    (1, 1, 0, True),    # a 1x1 stride-1 convolution: the matrix-product kernel gradient
    (3, 1, 1, False),   # KxK kernels keep XLA's gradient (or go to the Winograd kernel)
    (1, 2, 0, False),   # so do strided 1x1s
    (1, 1, 1, False),   # and padded ones
])
def test_the_matrix_product_kernel_gradient_takes_only_the_pointwise_convolutions(kernel, stride, pad, custom):
  x, k = jnp.ones((1, 6, 6, 2)), jnp.ones((kernel, kernel, 2, 3))
  dims = jax.lax.conv_dimension_numbers(x.shape, k.shape, ('NHWC', 'HWIO', 'NHWC'))
  for kernels in (True, False):
    with ops.cpu_kernels(kernels):
      jaxpr = str(jax.make_jaxpr(lambda x, k: ops.conv_general_dilated(x, k, (stride, stride), ((pad, pad), (pad, pad)),
                                                                       dimension_numbers=dims))(x, k))
    assert ('custom_vjp_call' in jaxpr) == (custom and kernels)
