"""XLA compiler options for the jitted steps, per backend, from `config.compiler_options` (docs/performance.md).

`config.compiler_options` maps a backend name (`jax.default_backend()`: 'cpu', 'gpu', 'tpu') to the DebugOptions
fields every step's `jax.jit` compiles with, so that a CPU-only setting never reaches an accelerator and a run's
config records what it was compiled with. A config without the key (an older run's) compiles with XLA's defaults.
The entry `<backend>_inference` adds options for the steps without gradients only (eval, multi-crop, predict): options
that may change what a NaN turns into, which training must not risk (its divergence check reads the loss).
"""
from typing import Dict, Optional

import jax


def for_backend(config, backend: Optional[str] = None, inference: bool = False) -> Optional[Dict[str, str]]:
  """The options `config` asks for on `backend` (default: the one being compiled for), with its `_inference` ones
  for a step without gradients, or None for XLA's defaults."""
  per_backend = config.get('compiler_options') or {}
  name = backend or jax.default_backend()
  chosen = dict(per_backend.get(name) or {})
  if inference:
    chosen.update(per_backend.get(f'{name}_inference') or {})
  return {str(k): v for k, v in chosen.items()} or None
