"""XLA compiler options for the jitted steps, per backend, from `config.compiler_options` (docs/performance.md).

`config.compiler_options` maps a backend name (`jax.default_backend()`: 'cpu', 'gpu', 'tpu') to the DebugOptions
fields every step's `jax.jit` compiles with, so that a CPU-only setting never reaches an accelerator and a run's
config records what it was compiled with. A config without the key (an older run's) compiles with XLA's defaults.
"""
from typing import Dict, Optional

import jax


def for_backend(config, backend: Optional[str] = None) -> Optional[Dict[str, str]]:
  """The options `config` asks for on `backend` (default: the one being compiled for), or None for XLA's defaults."""
  per_backend = config.get('compiler_options') or {}
  chosen = per_backend.get(backend or jax.default_backend()) or {}
  return {str(k): v for k, v in dict(chosen).items()} or None
