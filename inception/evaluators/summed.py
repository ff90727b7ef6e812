"""One pass over the held-out batches summing an eval step's outputs for the raw and the EMA weights: what every
evaluator's `run` starts from (its step returns sums over the real rows, so batches add up exactly)."""
from typing import Callable, Dict, Iterable

import jax
import numpy as np

from inception import sharding


def summed_outputs(eval_step: Callable, batches: Iterable, mesh, state) -> Dict[str, Dict[str, float]]:
  """{'eval': sums with the raw weights, 'eval_ema': with the averaged ones}, each {output name: float}; an empty
  split gives None for both."""
  weights = {'eval': (state.params, state.model_state), 'eval_ema': (state.ema_params, state.ema_model_state)}
  sums = {name: None for name in weights}
  for batch in batches:
    batch = sharding.to_global(batch, mesh)
    for name, (params, model_state) in weights.items():
      out = eval_step(params, model_state, batch)
      sums[name] = out if sums[name] is None else jax.tree.map(lambda a, b: a + b, sums[name], out)
  return {name: None if total is None else jax.tree.map(lambda x: float(np.asarray(x)), total)
          for name, total in sums.items()}
