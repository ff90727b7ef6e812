"""Classification accuracy (top-1, top-5, loss) of the raw and the EMA weights over the whole eval split: one central
crop per image, or with `config.eval_crops` = 10 or 144 the paper's multi-crop protocol (evaluators/multicrop.py)."""
from typing import Dict

import jax

from inception import compiler_options, sharding, steps
from inception.data import pipeline
from inception.evaluators import EVALUATORS
from inception.evaluators.multicrop import MultiCropEvaluator
from inception.evaluators.summed import summed_outputs


@EVALUATORS.register('classification')
class ClassificationEvaluator:
  """Decodes each eval batch once and scores it with both weight sets; padded examples are masked out."""

  def __init__(self, config, eval_graphdef, mesh, source, task=None):
    del task  # the classification task keeps nothing the evaluation needs
    self.mesh = mesh
    self.num_classes = source.num_classes
    crops = int(config.get('eval_crops', 1))
    self.multicrop = MultiCropEvaluator(config, eval_graphdef, mesh, crops, source) if crops > 1 else None
    # Built once: the folder source lists its files only here, not again at every evaluation.
    self.batches = pipeline.eval_batches(config, process_index=jax.process_index(),
                                         process_count=jax.process_count(), source=source)
    self.eval_step = jax.jit(steps.make_eval_step(eval_graphdef, config), out_shardings=sharding.replicated(mesh),
                             compiler_options=compiler_options.for_backend(config, inference=True))

  def run(self, state) -> Dict[str, float]:
    weights = {'eval': (state.params, state.model_state), 'eval_ema': (state.ema_params, state.ema_model_state)}
    if self.multicrop is not None:
      return self.multicrop.run(weights, self.num_classes)
    sums = summed_outputs(self.eval_step, self.batches, self.mesh, state)
    results = {}
    for name, total in sums.items():
      count = max(total['count'], 1.0)
      results.update({f'{name}/top1': total['top1'] / count, f'{name}/top5': total['top5'] / count,
                      f'{name}/loss': total['loss'] / count})
    counted = int(sums['eval']['count']) if sums['eval'] is not None else 0
    results['eval/examples'] = counted
    results['eval/skipped_images'] = self.batches.num_examples - counted
    return results
