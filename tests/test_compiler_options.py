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
  inference = compiler_options.for_backend(config, 'cpu', inference=True)
  assert inference == {**cpu, 'xla_cpu_enable_fast_min_max': True}  # the steps without gradients add theirs
  assert compiler_options.for_backend(config, 'gpu', inference=True) is None
  config.compiler_options.cpu = {}
  assert compiler_options.for_backend(config, 'cpu') is None
  assert compiler_options.for_backend(config, 'cpu', inference=True) == {'xla_cpu_enable_fast_min_max': True}


def test_the_cpu_option_reaches_the_compiled_program_and_keeps_the_result():
  """The default CPU option moves the convolution and the product out of YNNPACK: the compiled program says so."""
  args = _inputs()
  options = compiler_options.for_backend(googlenet.get_config(), 'cpu')
  with_options = jax.jit(_conv_then_dense, compiler_options=options).lower(*args).compile()
  defaults = jax.jit(_conv_then_dense).lower(*args).compile()
  assert '__ynn_fusion' in defaults.as_text()
  assert '__ynn_fusion' not in with_options.as_text()
  np.testing.assert_allclose(with_options(*args), defaults(*args), rtol=1e-5, atol=1e-5)


def test_the_inference_option_reaches_the_compiled_program_and_spares_finite_values():
  """The inference steps' fast max/min: a max pool stops spreading a NaN to every window that holds it (so the
  option reached XLA, and it is kept out of training), and finite inputs pool to the same bits."""
  from inception.models import cpu_grads  # pylint: disable=import-outside-toplevel
  x = np.random.RandomState(0).randn(2, 8, 8, 16).astype(np.float32)
  pool = lambda v: cpu_grads._xla_max_pool(v, 3, 1, ((1, 1), (1, 1)))  # pylint: disable=protected-access
  config = googlenet.get_config()
  inference = jax.jit(pool, compiler_options=compiler_options.for_backend(config, 'cpu', inference=True))
  training = jax.jit(pool, compiler_options=compiler_options.for_backend(config, 'cpu'))
  np.testing.assert_array_equal(inference(x), training(x))
  x[0, 3, 3, :] = np.nan
  assert int(jnp.isnan(training(x)).sum()) == 9 * 16  # every window holding the NaN
  assert int(jnp.isnan(inference(x)).sum()) < 9 * 16
