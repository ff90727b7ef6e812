"""The convolution and max pooling the models compute with, one implementation per platform the step is lowered for.

Model files and `layers.py` call `conv_general_dilated` (as nnx.Conv's) and `max_pool`; they name no backend. Each
call is staged out with `jax.lax.platform_dependent`: lowered for CPU, it runs the CPU kernels (the Winograd kernel
for 3x3 and 5x5 stride-1 float32 convolutions, winograd.py; the 1x1 convolutions' kernel gradient as one matrix
product and the max pool's gradient without select-and-scatter, cpu_grads.py); lowered for any other platform
(`jax.export(..., platforms=('tpu', 'cuda'))` included), XLA's own operations. One traced step therefore serves both,
and the compiler only ever sees the branch of its platform. Results agree to float rounding either way.

One switch, `config.cpu_kernels` (configs/googlenet.py), turns every CPU kernel on or off: the steps trace the model
under `cpu_kernels(config.cpu_kernels)`, and with it off every op is XLA's on every platform.
"""
import contextlib
import contextvars
import functools
from typing import Callable, Iterator, Tuple

import jax
import numpy as np
from jax import lax

from inception.models import cpu_grads
from inception.models import winograd

DEFAULT = True  # for a config without `cpu_kernels` (an older run's) and for models used outside the steps
CONFIG_KEY = 'cpu_kernels'
_ENABLED = contextvars.ContextVar('inception_cpu_kernels', default=DEFAULT)
_NHWC = ('NHWC', 'HWIO', 'NHWC')
Pads = Tuple[Tuple[int, int], Tuple[int, int]]


def setting(config) -> bool:
  """The `cpu_kernels` value a run config asks for (DEFAULT where it has no such key)."""
  return bool(config.get(CONFIG_KEY, DEFAULT))


@contextlib.contextmanager
def cpu_kernels(enabled: bool) -> Iterator[None]:
  """Within the block, ops traced for CPU use the CPU kernels if `enabled`, XLA's ops if not."""
  token = _ENABLED.set(bool(enabled))
  try:
    yield
  finally:
    _ENABLED.reset(token)


def traced_with(enabled: bool, fn: Callable) -> Callable:
  """`fn` that traces its ops under `cpu_kernels(enabled)`: what the steps jit."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with cpu_kernels(enabled):
      return fn(*args, **kwargs)

  return wrapped


def _on_cpu(cpu: Callable, xla: Callable, *args):
  """cpu(*args) where the step is lowered for CPU and the kernels are on; xla(*args) elsewhere."""
  if not _ENABLED.get():
    return xla(*args)
  return lax.platform_dependent(*args, cpu=cpu, default=xla)


@functools.lru_cache(maxsize=None)  # one function per size: the Winograd VJP's static argument
def _xla_kernel_grad(size: int) -> Callable:
  """(x, g) -> XLA's kernel gradient of a SAME size x size stride-1 convolution: the gradient the Winograd kernel's
  VJP uses (XLA:CPU computes it faster than the matrix product for kernels larger than 1x1)."""
  pad = (size - 1) // 2
  pads = ((pad, pad), (pad, pad))

  def kernel_grad(x, g):
    kernel = jax.ShapeDtypeStruct((size, size, x.shape[3], g.shape[3]), x.dtype)
    conv = lambda k: lax.conv_general_dilated(x, k, (1, 1), pads, dimension_numbers=_NHWC)
    return jax.linear_transpose(conv, kernel)(g)[0]

  return kernel_grad


def _cpu_conv(lhs, rhs, strides, pads):
  """The CPU kernel for a plain NHWC/HWIO convolution, or None where XLA's own is the CPU path too."""
  if winograd.available() and winograd.applies(lhs, rhs, strides, pads):
    return lambda x, k: winograd.conv(x, k, _xla_kernel_grad(k.shape[0]))
  if tuple(rhs.shape[:2]) == (1, 1) and strides == (1, 1) and pads == ((0, 0), (0, 0)):
    return lambda x, k: cpu_grads.conv_nhwc(x, k, strides, pads)
  return None


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """`lax.conv_general_dilated` (nnx.Conv's `conv_general_dilated`), with the CPU kernels for plain NHWC/HWIO
  convolutions (explicit padding, no dilation or groups) where `_cpu_conv` has one."""

  def xla(x, k):
    return lax.conv_general_dilated(x, k, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                                    feature_group_count, precision=precision, **kwargs)

  plain = (lhs.ndim == 4 and not isinstance(padding, str) and feature_group_count == 1
           and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
           and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
           and precision is None and kwargs.get('out_sharding') is None and 'preferred_element_type' not in kwargs)
  if not plain or not _ENABLED.get():
    return xla(lhs, rhs)
  strides, pads = tuple(int(s) for s in window_strides), tuple((int(lo), int(hi)) for lo, hi in padding)
  cpu = _cpu_conv(lhs, rhs, strides, pads)
  return xla(lhs, rhs) if cpu is None else _on_cpu(cpu, xla, lhs, rhs)


def max_pool(x: jax.Array, window: int, stride: int, pads: Pads) -> jax.Array:
  """Square max pooling of NHWC `x` padded with -inf by `pads` ((top, bottom), (left, right)), whole windows only."""

  def xla(v):
    return lax.reduce_window(v, np.array(-np.inf, v.dtype), lax.max, (1, window, window, 1), (1, stride, stride, 1),
                             ((0, 0), *pads, (0, 0)))

  return _on_cpu(lambda v: cpu_grads.max_pool_nhwc(v, window, stride, pads), xla, x)


def describe(enabled: bool, backend: str) -> str:
  """One line for logs, summaries and benchmarks: what computes the convolutions and pools on `backend`."""
  if not enabled:
    return 'convolutions: XLA\'s, and its pools (cpu_kernels=False)'
  if backend != 'cpu':
    return f'convolutions: XLA\'s, and its pools ({backend}; the CPU kernels apply to steps lowered for CPU)'
  built = winograd.isa()
  conv = (f'Winograd kernel ({built} build) for 3x3 and 5x5 stride-1 float32' if built else
          'XLA\'s for 3x3 and 5x5 (the Winograd kernel is not built: make install)')
  return (f'convolutions: CPU kernels on: {conv}; 1x1 kernel gradients as one matrix product; max-pool gradients '
          'without select-and-scatter')
