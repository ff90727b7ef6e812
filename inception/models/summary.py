"""Per-stage summary of a model: output shape, parameters and multiply-adds.

Works on any model exposing the stage protocol of GoogLeNet: `stage_names`, `call_stage(name,
x)`, and optionally `aux_names`, `aux_taps`, `call_aux(name, x)`. Everything is traced
abstractly (jax.make_jaxpr on shape-only values), so it is fast on CPU and also accepts a model
built under nnx.eval_shape. Multiply-adds are counted from the jaxpr of each stage.
"""
import dataclasses
import inspect
import math
from typing import Any, Dict, Iterator, List, Tuple

import jax
import jax.numpy as jnp
from flax import nnx



@dataclasses.dataclass(frozen=True)
class Row:
  """One line of the summary: a stage or an aux head (kind 'stage' or 'aux')."""
  name: str
  kind: str
  output_shape: Tuple[int, ...]
  params: int
  multiply_adds: int


def _sub_jaxprs(params: Dict[str, Any]) -> Iterator[Any]:
  """Yields the jaxprs nested in an equation's params (pjit, custom_jvp/vjp, cond, scan...)."""
  for value in params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if hasattr(item, 'eqns') or hasattr(getattr(item, 'jaxpr', None), 'eqns'):
        yield item


def _conv_multiply_adds(eqn) -> int:
  """prod(output shape) * kernel volume per output (kh * kw * in_channels / groups)."""
  out_shape = eqn.outvars[0].aval.shape
  kernel_shape = eqn.invars[1].aval.shape
  out_feature_dim = eqn.params['dimension_numbers'].rhs_spec[0]
  per_output = math.prod(kernel_shape) // kernel_shape[out_feature_dim]
  return math.prod(out_shape) * per_output


def _dot_multiply_adds(eqn) -> int:
  """prod(output shape) * product of the contracted dimension sizes."""
  (lhs_contract, _), _ = eqn.params['dimension_numbers']
  lhs_shape = eqn.invars[0].aval.shape
  return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs_shape[d] for d in lhs_contract)


def count_multiply_adds(jaxpr) -> int:
  """Multiply-adds of all convolutions and dot products in a (closed) jaxpr, recursively.

  Scan bodies are multiplied by their length; every branch of a cond is counted (an upper bound), except that a
  per-platform choice (ops.py's) counts its default branch, XLA's direct convolutions, whatever computes them on CPU;
  while loops count one iteration.
  """
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)  # ClosedJaxpr -> Jaxpr.
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'cond' and eqn.params.get('branches_platforms'):
      total += count_multiply_adds(eqn.params['branches'][-1])
      continue
    if name == 'conv_general_dilated':
      total += _conv_multiply_adds(eqn)
    elif name == 'dot_general':
      total += _dot_multiply_adds(eqn)
    repeat = eqn.params.get('length', 1) if name == 'scan' else 1
    total += repeat * sum(count_multiply_adds(sub) for sub in _sub_jaxprs(eqn.params))
  return total


def count_params(module: nnx.Module) -> int:
  """Number of scalars in the module's nnx.Param variables (concrete or abstract)."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _trace(graphdef, state, method: str, name: str, x: jax.ShapeDtypeStruct):
  """Abstractly runs model.<method>(name, x); returns (closed jaxpr, output ShapeDtypeStruct)."""
  def fn(state, x):
    """Rebuilds the model from its (abstract) state and runs the one stage or head."""
    return getattr(nnx.merge(graphdef, state), method)(name, x)
  return jax.make_jaxpr(fn, return_shape=True)(state, x)


def summarize(model: nnx.Module, image_size: int, batch_size: int = 1
              ) -> Tuple[List[Row], Dict[str, int]]:
  """Rows for each stage (inference path) and each aux head, plus totals.

  The model is evaluated in inference mode (a non-mutating copy with deterministic=True and
  use_running_average=True). Totals: 'params' (all trainable), 'params_without_aux', 'multiply_adds' (stages only,
  i.e. the inference path), 'batch_statistics' (BatchNorm running means and variances) and 'optional_aux' (whether
  the model takes aux heads at all).
  """
  model = nnx.with_attributes(model, deterministic=True, use_running_average=True,
                              raise_if_not_found=False)
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.float32)
  rows, taps = [], {}
  for name in model.stage_names:
    jaxpr, x = _trace(graphdef, state, 'call_stage', name, x)
    rows.append(Row(name, 'stage', tuple(x.shape), count_params(getattr(model, name)),
                    count_multiply_adds(jaxpr)))
    taps[name] = x
  aux_params = 0
  for name, tap in zip(getattr(model, 'aux_names', ()), getattr(model, 'aux_taps', ())):
    jaxpr, out = _trace(graphdef, state, 'call_aux', name, taps[tap])
    params = count_params(getattr(model, name))
    aux_params += params
    rows.append(Row(name, 'aux', tuple(out.shape), params, count_multiply_adds(jaxpr)))
  total_params = count_params(model)
  totals = {
      'params': total_params,
      'params_without_aux': total_params - aux_params,
      'multiply_adds': sum(r.multiply_adds for r in rows if r.kind == 'stage'),
      'batch_statistics': sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(model, nnx.BatchStat))),
      # The model can be built with or without aux heads (its class takes `aux_heads`).
      'optional_aux': 'aux_heads' in inspect.signature(type(model).__init__).parameters,
  }
  return rows, totals


def format_summary(rows: List[Row], totals: Dict[str, int]) -> str:
  """A fixed-width table (stages, then aux heads) followed by three 'key: integer' lines."""
  def line(name, shape, params, multiply_adds):
    """One fixed-width row, right-trimmed."""
    return f'{name:<16}{shape:<22}{params:>12}{multiply_adds:>16}'.rstrip()

  lines = [line('stage', 'output shape', 'params', 'multiply-adds')]
  lines += [line(r.name, str(r.output_shape), r.params, r.multiply_adds)
            for r in rows if r.kind == 'stage']
  aux_rows = [r for r in rows if r.kind == 'aux']
  if aux_rows:
    lines.append(line('aux head', '(training only)', '', ''))
    lines += [line(r.name, str(r.output_shape), r.params, r.multiply_adds) for r in aux_rows]
  lines.append(f'params: {totals["params"]}')
  lines.append(f'batch statistics: {totals["batch_statistics"]}')
  if totals.get('optional_aux'):
    lines.append(f'params without aux heads: {totals["params_without_aux"]}')
  lines.append(f'multiply-adds: {totals["multiply_adds"]}')
  return '\n'.join(lines)
