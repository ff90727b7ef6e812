"""3x3 and 5x5 stride-1 convolutions on CPU as Winograd F(4x4, 3x3) and F(2x2, 5x5): 36 multiplies per 4x4 output
tile instead of 144, per 2x2 tile instead of 100.

XLA:CPU has no Winograd convolution, and written in jax the transforms are slower than its direct one (each stage
goes through memory; docs/performance.md). The C++ kernel in `kernels/` transforms a block of tiles in cache,
multiplies and transforms back (`python -m inception.models.kernels.build`, run by `make install`, compiles it). This
module calls it through XLA's FFI inside jit, partitions it over a device mesh along the batch, and gives it a VJP:
the input gradient is the same kernel on the output gradient with the kernel flipped and transposed; the kernel
gradient is the caller's. Results match XLA's convolution to float32 rounding (relative error near 1e-5, like cuDNN's
and oneDNN's Winograd); tests/models/test_winograd.py checks both directions.
"""
import ctypes
import functools
import math
import re
from pathlib import Path
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

LIBRARY = Path(__file__).resolve().parent / 'kernels' / '_winograd.so'
TARGET = 'inception_winograd_conv'
KERNEL_SIZES = (3, 5)
LANES = 16  # input and output channels must be multiples of this (the kernel's widest vector)
POINTS = (0, 1, -1, 2, -2)  # the interpolation points of both transforms, and infinity (kernels/winograd_isa.cc)


def _kernel_transform(r: int) -> np.ndarray:
  """G of F(6 - r + 1, r) by Toom-Cook over POINTS (Lavin and Gray): row j is p_j^k / prod over l != j of (p_j - p_l),
  the last row (infinity) picks the kernel's last tap. [6, r]."""
  rows = [[p ** k / np.prod([p - q for q in POINTS if q != p]) for k in range(r)] for p in POINTS]
  return np.array(rows + [[0] * (r - 1) + [1]], np.float64)


# u[a * 6 + b] = sum over (i, j) of G[a, i] G[b, j] g[i, j]: [36, r * r] per kernel size.
_GG = {r: np.kron(_kernel_transform(r), _kernel_transform(r)) for r in KERNEL_SIZES}


@functools.lru_cache(maxsize=None)
def library() -> Optional[ctypes.CDLL]:
  """The kernel library, its FFI target registered with jax; None (with one log line) where it is not built."""
  if not LIBRARY.exists():
    logging.warning('The Winograd kernel is not built (%s): 3x3 and 5x5 convolutions on CPU use XLA\'s, which are '
                    'slower. '
                    'Build it with `make install` or `python -m inception.models.kernels.build`.', LIBRARY)
    return None
  lib = ctypes.cdll.LoadLibrary(str(LIBRARY))
  lib.InceptionWinogradIsa.restype = ctypes.c_char_p
  lib.InceptionWinogradColumnBlock.restype = ctypes.c_int
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.InceptionWinogradConv), platform='cpu')
  return lib


def isa() -> str:
  """The instruction set the kernel runs with on this CPU ('avx512', 'avx2', 'generic'), or '' if it is not built."""
  lib = library()
  return lib.InceptionWinogradIsa().decode() if lib else ''


def available() -> bool:
  """Whether the kernel is built and loaded (ops.py then uses it in steps lowered for CPU)."""
  return library() is not None


def applies(x: jax.Array, kernel: jax.Array, strides, pads) -> bool:
  """Whether the kernel computes this NHWC/HWIO convolution: 3x3 or 5x5, stride 1, SAME padding ((r - 1) / 2 on
  every side), float32, and channel counts that are multiples of LANES."""
  r = kernel.shape[0]
  p = (r - 1) // 2
  return (r in KERNEL_SIZES and kernel.shape[1] == r and tuple(strides) == (1, 1)
          and tuple(map(tuple, pads)) == ((p, p), (p, p)) and x.dtype == jnp.float32 and kernel.dtype == jnp.float32
          and x.shape[3] % LANES == 0 and kernel.shape[3] % LANES == 0)


def transform_kernel(kernel: jax.Array, column_block: int) -> jax.Array:
  """u = G g G^T for every (input, output) channel pair, HWIO [r, r, C, K] -> [36, C, K], laid out as the kernel
  reads it: cut into blocks of `column_block` output channels, each [36, C, width] contiguous; flat [36 * C * K]."""
  r, _, c, k = kernel.shape
  # As one product [36, r * r] . [r * r, C * K] with the Kronecker product of G with itself: XLA:CPU runs it near
  # memory speed, the two-sided einsum 3-4x slower.
  u = jnp.dot(jnp.asarray(_GG[r], kernel.dtype), kernel.reshape(r * r, -1), precision=lax.Precision.HIGHEST)
  u = u.reshape(36, c, k)
  return jnp.concatenate([u[:, :, k0:k0 + column_block].reshape(-1) for k0 in range(0, k, column_block)])


def _transformed(kernel: jax.Array) -> jax.Array:
  lib = _require_library()
  return transform_kernel(kernel, lib.InceptionWinogradColumnBlock())


def _require_library() -> ctypes.CDLL:
  lib = library()
  if lib is None:
    raise RuntimeError(f'The Winograd kernel is not built ({LIBRARY}): run `make install` or '
                       '`python -m inception.models.kernels.build`, or set --config.cpu_kernels=False.')
  return lib


def _ffi_conv(x: jax.Array, u: jax.Array, out_channels: int, kernel_size: int) -> jax.Array:
  """The kernel on one device's arrays: x [N, H, W, C], u [36 * C * K] (transform_kernel) -> [N, H, W, K]."""
  _require_library()
  out = jax.ShapeDtypeStruct((*x.shape[:3], out_channels), x.dtype)
  return jax.ffi.ffi_call(TARGET, out, vmap_method='sequential')(x, u, kernel_size=np.int64(kernel_size))


@functools.partial(custom_partitioning, static_argnums=(2, 3))
def _conv(x: jax.Array, u: jax.Array, out_channels: int, kernel_size: int) -> jax.Array:
  return _ffi_conv(x, u, out_channels, kernel_size)


def _shardings(mesh, arg_shapes):
  """The batch split as x's is; rows, columns, channels and the transformed kernel whole on every device."""
  batch = (tuple(arg_shapes[0].sharding.spec) + (None,))[0]
  return (NamedSharding(mesh, PartitionSpec(batch)),
          (NamedSharding(mesh, PartitionSpec(batch)), NamedSharding(mesh, PartitionSpec())))


def _partition(out_channels, kernel_size, mesh, arg_shapes, result_shape):
  del result_shape
  out_sharding, arg_shardings = _shardings(mesh, arg_shapes)
  return mesh, lambda x, u: _ffi_conv(x, u, out_channels, kernel_size), out_sharding, arg_shardings


def _infer(out_channels, kernel_size, mesh, arg_shapes, result_shape):
  del out_channels, kernel_size, result_shape
  return _shardings(mesh, arg_shapes)[0]


_conv.def_partition(partition=_partition, infer_sharding_from_operands=_infer,
                    sharding_rule='n h w c, q -> n h w k', need_replication_factors=('h', 'w', 'c', 'q', 'k'))


KernelGrad = Callable[[jax.Array, jax.Array], jax.Array]  # (x, output gradient) -> kernel gradient [r, r, C, K]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(x: jax.Array, kernel: jax.Array, kernel_grad: KernelGrad) -> jax.Array:
  """SAME stride-1 convolution of NHWC float32 `x` with an HWIO 3x3 or 5x5 `kernel` on the Winograd kernel (see
  `applies`); `kernel_grad` computes the kernel's gradient."""
  del kernel_grad
  return _conv(x, _transformed(kernel), kernel.shape[3], kernel.shape[0])


def _fwd(x, kernel, kernel_grad):
  return conv(x, kernel, kernel_grad), (x, kernel)


def _bwd(kernel_grad, residuals, g):
  x, kernel = residuals
  # The input gradient of a SAME stride-1 convolution is the SAME convolution of g with the kernel rotated by 180
  # degrees and its channel axes swapped.
  flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))  # [r, r, K, C]
  return (_conv(g, _transformed(flipped), flipped.shape[3], flipped.shape[0]),
          kernel_grad(x, g).astype(kernel.dtype))


conv.defvjp(_fwd, _bwd)


def calls_kernel(jaxpr) -> bool:
  """Whether a (closed) jaxpr calls the kernel, at any depth."""
  for eqn in getattr(jaxpr, 'jaxpr', jaxpr).eqns:
    if eqn.primitive.name == 'ffi_call' and eqn.params.get('target_name') == TARGET:
      return True
    if any(calls_kernel(v) for v in eqn.params.values() if hasattr(getattr(v, 'jaxpr', v), 'eqns')):
      return True
  return False


# A kernel call in compiled HLO text: its output [N, H, W, K], the length of its transformed kernel (36 * C * K) and
# its kernel size r.
_HLO_CALL = re.compile(r'= f32\[(\d+),(\d+),(\d+),\d+\]\{[^}]*\} custom-call\([^)]*\), custom_call_target="' + TARGET
                       + r'", operand_layout_constraints=\{f32\[[\d,]+\]\{[^}]*\}, f32\[(\d+)\][^\n]*?'
                       r'backend_config=\{kernel_size = (\d+) : i64\}')


def direct_flops(hlo_text: str) -> float:
  """FLOPs of the direct convolutions that the kernel calls in a compiled program stand for (2 * N * H * W * K * r *
  r * C each). XLA's cost analysis counts a custom call as none, so the benchmark adds these."""
  total = 0
  for match in _HLO_CALL.finditer(hlo_text):
    n, h, w, transformed, r = map(int, match.groups())
    total += 2 * n * h * w * (transformed // 36) * r * r  # transformed // 36 = C * K
  return float(total)
