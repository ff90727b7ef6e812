"""The Winograd kernel (models/winograd.py, models/kernels/) equals XLA's 3x3 and 5x5 convolutions to float32 rounding:
forward
and both gradients, on every instruction-set build this CPU runs, on a batch sharded over devices, and inside the
published GoogLeNet; it is used only where it applies, and the summary and benchmark count it as the direct
convolution."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from inception import models
from inception.models import ops, summary, winograd
from inception.models.kernels import build

NHWC = ('NHWC', 'HWIO', 'NHWC')
PADS = ((1, 1), (1, 1))  # a 3x3 kernel's SAME padding
# F(4x4, 3x3) rounds more than a direct convolution: relative errors near 1e-5 of the output's scale (cuDNN's and
# oneDNN's Winograd are alike); a wrong transform or tile gives errors of order 1.
RTOL = 5e-5


def _require_kernel():
  if winograd.library() is None:
    if not build.compiler():
      pytest.skip('no C++ compiler: the Winograd kernel cannot be built here')
    pytest.fail(f'{winograd.LIBRARY} is missing: `make install` builds it (python -m inception.models.kernels.build)')


def _same(r):
  return (((r - 1) // 2,) * 2,) * 2


def _xla(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), _same(kernel.shape[0]), dimension_numbers=NHWC)


def _kernel_grad(r):
  return ops._xla_kernel_grad(r)  # pylint: disable=protected-access


def _data(shape, c_out, r=3, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((r, r, shape[3], c_out)) / np.sqrt(r * r * shape[3]), jnp.float32)
  return x, kernel


def _close(ours, ref, rtol=RTOL):
  scale = float(jnp.max(jnp.abs(ref)))
  assert scale > 0
  np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=0, atol=rtol * scale)


# Odd sizes leave partial output tiles at the bottom and right; 1 px is a tile of padding but one pixel; a batch of
# 70 8x8 images is 280 4x4 tiles, more than 4 blocks of 64, spread over the thread pool; 32 -> 208 has a partial
# column block.
@pytest.mark.parametrize('r', [3, 5])
@pytest.mark.parametrize('shape,c_out', [((2, 13, 11, 16), 32), ((1, 1, 1, 32), 16), ((70, 8, 8, 48), 16),
                                         ((3, 7, 7, 32), 208), ((2, 28, 28, 64), 64)])
def test_forward_and_gradients_equal_xla(shape, c_out, r):
  _require_kernel()
  x, kernel = _data(shape, c_out, r)
  ours = jax.jit(lambda x, k: winograd.conv(x, k, _kernel_grad(r)))
  _close(ours(x, kernel), jax.jit(_xla)(x, kernel))

  def loss(conv):
    return lambda x, k: jnp.sum(jnp.sin(conv(x, k)))  # an output gradient that varies
  grads = jax.jit(jax.grad(loss(lambda x, k: winograd.conv(x, k, _kernel_grad(r))), argnums=(0, 1)))(x, kernel)
  ref = jax.jit(jax.grad(loss(_xla), argnums=(0, 1)))(x, kernel)
  for a, b in zip(grads, ref):
    _close(a, b)


@pytest.mark.parametrize('isa', ['avx512', 'avx2', 'generic'])
def test_every_instruction_set_build_equals_xla(isa):
  """Each build, asked for by INCEPTION_WINOGRAD_ISA in a fresh process (the choice is made once per process);
  builds the CPU cannot run are skipped."""
  _require_kernel()
  code = textwrap.dedent('''
      import jax, jax.numpy as jnp, numpy as np
      from inception.models import winograd
      rng = np.random.default_rng(1)
      x = jnp.asarray(rng.standard_normal((3, 10, 9, 32)), jnp.float32)
      errors = []
      for r in (3, 5):
        k = jnp.asarray(rng.standard_normal((r, r, 32, 80)) / (6 * r), jnp.float32)
        ours = jax.jit(lambda x, k: winograd.conv(x, k, None))(x, k)
        ref = jax.lax.conv_general_dilated(x, k, (1, 1), ((r // 2, r // 2),) * 2,
                                           dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
        errors.append(float(jnp.max(jnp.abs(ours - ref)) / jnp.max(jnp.abs(ref))))
      print(winograd.isa(), max(errors))
  ''')
  env = dict(os.environ, INCEPTION_WINOGRAD_ISA=isa, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True).stdout
  used, error = out.split()
  if used != isa:
    pytest.skip(f'this CPU does not run the {isa} build (it runs {used})')
  assert float(error) < RTOL


def test_batch_sharded_over_devices_stays_sharded():
  """Under a batch-sharded jit each device convolves its own images: the same result as one device, and no
  all-gather of the activations in the compiled program."""
  _require_kernel()
  devices = jax.devices()[:4]
  if len(devices) < 2:
    pytest.skip('needs several devices (tests/conftest.py asks for 4 host devices)')
  mesh = jax.sharding.Mesh(np.array(devices), ('data',))
  x, kernel = _data((4 * len(devices), 9, 9, 32), 48)
  x = jax.device_put(x, NamedSharding(mesh, PartitionSpec('data')))
  kernel = jax.device_put(kernel, NamedSharding(mesh, PartitionSpec()))
  fn = jax.jit(lambda x, k: winograd.conv(x, k, _kernel_grad(3)))
  out = fn(x, kernel)
  assert out.sharding.spec[0] == 'data'
  _close(out, _xla(np.asarray(x), np.asarray(kernel)))
  hlo = fn.lower(x, kernel).compile().as_text()
  assert winograd.TARGET in hlo and 'all-gather' not in hlo


def test_build_without_a_compiler_says_so_and_leaves_the_library_alone(monkeypatch, capsys):
  """`make install` on a machine without g++: a warning naming the fix, exit status 0, nothing written."""
  monkeypatch.delenv('CXX', raising=False)
  monkeypatch.setattr(build.shutil, 'which', lambda name: None)
  monkeypatch.setattr(build, 'build', lambda **kwargs: pytest.fail('built without a compiler'))
  assert build.main() == 0
  assert 'no C++ compiler' in capsys.readouterr().err


def test_applies_only_to_what_the_kernel_computes():
  x, kernel = jnp.zeros((1, 8, 8, 16)), jnp.zeros((3, 3, 16, 32))
  assert winograd.applies(x, kernel, (1, 1), PADS)
  assert not winograd.applies(x, kernel, (2, 2), PADS)
  assert not winograd.applies(x, kernel, (1, 1), ((0, 0), (0, 0)))
  assert winograd.applies(x, jnp.zeros((5, 5, 16, 32)), (1, 1), ((2, 2), (2, 2)))
  assert not winograd.applies(x, jnp.zeros((5, 5, 16, 32)), (1, 1), PADS)
  assert not winograd.applies(x, jnp.zeros((7, 7, 16, 32)), (1, 1), ((3, 3), (3, 3)))
  assert not winograd.applies(x, jnp.zeros((1, 1, 16, 32)), (1, 1), ((0, 0), (0, 0)))
  assert not winograd.applies(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), (1, 1), PADS)
  assert not winograd.applies(jnp.zeros((1, 8, 8, 24)), jnp.zeros((3, 3, 24, 32)), (1, 1), PADS)
  assert not winograd.applies(x, jnp.zeros((3, 3, 16, 40)), (1, 1), PADS)


def test_describe_names_the_build():
  _require_kernel()
  assert f'Winograd kernel ({winograd.isa()} build)' in ops.describe(True, 'cpu')
  assert winograd.isa() in ('avx512', 'avx2', 'generic')
  assert ops.describe(False, 'cpu') == "convolutions: XLA's, and its pools (cpu_kernels=False)"
  assert 'Winograd' not in ops.describe(True, 'tpu')


def _googlenet():
  return models.build({'name': 'googlenet'}, num_classes=5, image_size=64, rngs=nnx.Rngs(params=0))


def _winograd_layers(jaxpr) -> int:
  """How many Winograd convolutions (forward calls of the kernel) a (closed) jaxpr traces, at any depth."""
  count = 0
  for eqn in getattr(jaxpr, 'jaxpr', jaxpr).eqns:
    if eqn.primitive.name == 'custom_vjp_call' and winograd.calls_kernel(eqn.params['call_jaxpr']):
      count += 1
    else:
      count += sum(_winograd_layers(v) for v in eqn.params.values() if hasattr(getattr(v, 'jaxpr', v), 'eqns'))
      count += sum(_winograd_layers(b) for b in eqn.params.get('branches', ()))
  return count


def test_googlenet_runs_its_3x3_convolutions_on_the_kernel():
  """With the CPU kernels on, the published net calls the kernel in its 10 3x3 layers and the 7 of its 9 5x5 layers
  whose channel counts are multiples of 16 (4b and 4c read 24), and gives XLA's loss and gradients to float32
  rounding (the same init seed, the same dropout draws); with them off it does not call it."""
  _require_kernel()
  images = jnp.asarray(np.random.default_rng(2).standard_normal((2, 64, 64, 3)), jnp.float32)
  results = {}
  for kernels in (True, False):
    model = _googlenet()
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
      logits, aux = nnx.merge(graphdef, params, rest, copy=True)(images, rngs=nnx.Rngs(dropout=0))
      return jnp.sum(logits ** 2) + sum(jnp.sum(a ** 2) for a in aux)

    traced = ops.traced_with(kernels, jax.value_and_grad(loss))
    results[kernels] = jax.jit(traced)(params), _winograd_layers(jax.make_jaxpr(ops.traced_with(kernels, loss))(params))
  ((loss_a, grad_a), layers_a), ((loss_b, grad_b), layers_b) = results[True], results[False]
  assert (layers_a, layers_b) == (17, 0)
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-4)
  flat_a, flat_b = jax.tree.leaves(grad_a), jax.tree.leaves(grad_b)
  assert len(flat_a) == len(flat_b) > 50
  for a, b in zip(flat_a, flat_b):
    _close(a, b, rtol=1e-3)  # errors of 17 layers compound


def test_summary_and_benchmark_count_the_direct_convolution():
  """The model summary counts a Winograd layer as its direct convolution's multiply-adds (the paper's totals do
  not depend on the kernel), and direct_flops reads the same from the compiled program."""
  _require_kernel()
  net = nnx.eval_shape(_googlenet)
  with ops.cpu_kernels(True):
    with_kernels = summary.summarize(net, 64)[1]
  with ops.cpu_kernels(False):
    assert with_kernels == summary.summarize(net, 64)[1]
  x, k3, k5 = jnp.zeros((2, 8, 8, 16)), jnp.zeros((3, 3, 16, 32)), jnp.zeros((5, 5, 32, 48))
  fn = jax.jit(lambda x, k3, k5: winograd.conv(winograd.conv(x, k3, None), k5, None))
  hlo = fn.lower(x, k3, k5).compile().as_text()
  assert winograd.direct_flops(hlo) == 2 * 2 * 8 * 8 * (32 * 9 * 16 + 48 * 25 * 32)
