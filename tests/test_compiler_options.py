"""config.compiler_options: chosen per backend, reaching the compiled step, and changing no result beyond rounding."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax

from configs import googlenet
from inception import compiler_options


def _conv_then_dense(x, kernel, dense):
  y = lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return jnp.maximum(y, 0.0).reshape(x.shape[0], -1) @ dense


def _inputs():
  rng = np.random.RandomState(0)
  return (rng.randn(4, 8, 8, 16).astype(np.float32), rng.randn(3, 3, 16, 32).astype(np.float32) * 0.1,
          rng.randn(8 * 8 * 32, 10).astype(np.float32) * 0.01)


def test_options_are_the_backends_own():
  config = googlenet.get_config('mini')
  cpu = compiler_options.for_backend(config, 'cpu')
  assert cpu == {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_REDUCE'}
  assert compiler_options.for_backend(config, 'gpu') is None  # a CPU setting never reaches an accelerator
  assert compiler_options.for_backend(config) == (cpu if jax.default_backend() == 'cpu' else None)
  assert compiler_options.for_backend(ml_collections.ConfigDict({'seed': 0}), 'cpu') is None  # an older run's config
  config.compiler_options.cpu = {}
  assert compiler_options.for_backend(config, 'cpu') is None


def test_the_cpu_option_reaches_the_compiled_program_and_keeps_the_result():
  """The default CPU option moves the convolution and the product out of YNNPACK: the compiled program says so."""
  args = _inputs()
  options = compiler_options.for_backend(googlenet.get_config(), 'cpu')
  with_options = jax.jit(_conv_then_dense, compiler_options=options).lower(*args).compile()
  defaults = jax.jit(_conv_then_dense).lower(*args).compile()
  assert '__ynn_fusion' in defaults.as_text()
  assert '__ynn_fusion' not in with_options.as_text()
  np.testing.assert_allclose(with_options(*args), defaults(*args), rtol=1e-5, atol=1e-5)
