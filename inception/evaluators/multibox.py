"""MultiBox's held-out figures, raw and EMA weights: its loss and parts, and box recall of its top predictions.

Box recall here is the share of the eval split's ground-truth boxes that one of an image's `multibox.top_k` most
confident predictions covers at IoU >= `multibox.recall_iou`: what coverage.recall measures of top_boxes' proposals
(normalised coordinates give the same IoU as pixels, the image being scaled along each axis), computed in the jitted
step over every device. Predictions of zero area (wholly outside the image) are never among the top ones, as there.
"""
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inception import augment, compiler_options, sharding
from inception.config_checks import ConfigError
from inception.data import pipeline
from inception.detection import matching
from inception.detection import multibox_decode
from inception.detection import multibox_loss
from inception.evaluators import EVALUATORS
from inception.evaluators.summed import summed_outputs
from inception.models import ops


def pairwise_iou(a: jax.Array, b: jax.Array) -> jax.Array:
  """[..., N, M] IoU of boxes a [..., N, 4] with boxes b [..., M, 4] (x0, y0, x1, y1); 0 where both are empty."""
  lo = jnp.maximum(a[..., :, None, :2], b[..., None, :, :2])
  hi = jnp.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
  inter = jnp.prod(jnp.clip(hi - lo, 0.0, None), axis=-1)
  area = lambda x: jnp.prod(jnp.clip(x[..., 2:] - x[..., :2], 0.0, None), axis=-1)
  union = area(a)[..., :, None] + area(b)[..., None, :] - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def make_eval_step(graphdef, config, priors: np.ndarray):
  """eval_step(params, model_state, batch) -> sums over the batch's real images: 'loss', 'location', 'confidence'
  (multibox_loss), 'covered' and 'boxes' (ground-truth boxes covered by a top prediction, and all of them), 'count'."""
  eval_pp = augment.stage_pp(config.pp, 'eval')
  settings = config.multibox
  offset_scale, loc_weight = float(settings.offset_scale), float(settings.loc_weight)
  top_k, recall_iou = min(int(settings.top_k), len(priors)), float(settings.recall_iou)
  priors = jnp.asarray(priors, jnp.float32)

  def eval_step(params, model_state, batch: Dict[str, jax.Array]):
    model = nnx.merge(graphdef, params, model_state)
    outputs, _ = model(augment.eval_images(batch['image'], eval_pp))
    gt, real = batch['boxes'].astype(jnp.float32), batch['mask'] > 0
    valid = matching.valid_boxes(gt)
    assignment = matching.match_batch(priors, gt, valid)
    targets, matched = multibox_loss.targets(priors, gt, assignment, offset_scale)
    location, confidence = multibox_loss.per_image_losses(outputs, targets, matched)
    boxes = multibox_decode.normalised_boxes(priors, outputs[..., :4], offset_scale, jnp)  # [B, K, 4]
    empty = jnp.prod(boxes[..., 2:] - boxes[..., :2], axis=-1) <= 0
    _, best = jax.lax.top_k(jnp.where(empty, -jnp.inf, outputs[..., 4]), top_k)
    best_boxes = jnp.take_along_axis(boxes, best[..., None], axis=1)  # [B, top_k, 4]
    best_boxes = jnp.where(jnp.take_along_axis(empty, best, axis=1)[..., None], 0.0, best_boxes)
    covered = jnp.any(pairwise_iou(gt, best_boxes) >= recall_iou, axis=-1) & valid & real[:, None]
    total = lambda x: jnp.sum(jnp.where(real, x, 0.0))  # `where`: a padding row's NaN must not reach the sums
    return {'loss': total(confidence + loc_weight * location), 'location': total(location),
            'confidence': total(confidence), 'covered': jnp.sum(covered),
            'boxes': jnp.sum(valid & real[:, None]), 'count': jnp.sum(real)}

  return ops.traced_with(ops.setting(config), eval_step)


@EVALUATORS.register('multibox')
class MultiBoxEvaluator:
  """Decodes each eval batch once and scores it with both weight sets; padded images are masked out."""

  def __init__(self, config, eval_graphdef, mesh, source, task=None):
    if getattr(task, 'priors', None) is None:
      raise ConfigError('--config.evaluators names multibox, which evaluates the multibox task: set '
                        '--config.task=multibox.')
    self.mesh = mesh
    self.batches = pipeline.eval_batches(config, process_index=jax.process_index(),
                                         process_count=jax.process_count(), source=source)
    self.eval_step = jax.jit(make_eval_step(eval_graphdef, config, task.priors),
                             out_shardings=sharding.replicated(mesh),
                             compiler_options=compiler_options.for_backend(config, inference=True))

  def run(self, state) -> Dict[str, float]:
    sums = summed_outputs(self.eval_step, self.batches, self.mesh, state)
    results = {}
    for name, total in sums.items():
      count = max(total['count'], 1.0)
      results.update({f'{name}/{key}': total[key] / count for key in ('loss', 'location', 'confidence')})
      results[f'{name}/recall'] = total['covered'] / max(total['boxes'], 1.0)
    counted = int(sums['eval']['count']) if sums['eval'] is not None else 0
    results['eval/examples'] = counted
    results['eval/boxes'] = int(sums['eval']['boxes']) if sums['eval'] is not None else 0
    results['eval/skipped_images'] = self.batches.num_examples - counted
    return results
