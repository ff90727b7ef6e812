"""MultiBox's training loss (Erhan et al. 2014): L2 on the matched boxes' coordinates plus a logistic loss on every
prediction's confidence, matched = 1, unmatched = 0.

The network's K predictions are offsets from the K priors, in units of `offset_scale` of the normalised image:
prediction i is the box prior_i + offset_scale * offset_i (multibox_decode.py). Matching (matching.py) gives each
ground-truth box one prior. Per image, with M matched priors:

  location   = (1 / M) * sum over matched i of 1/2 || offset_i - (gt_i - prior_i) / offset_scale ||^2   (0 when M = 0)
  confidence = (1 / K) * sum over all i of sigmoid_cross_entropy(logit_i, matched_i)
  loss       = confidence + loc_weight * location

averaged over the batch's real images (an undecodable one, `mask` 0, counts for nothing). The paper sums both terms
over the predictions and weights the location term by alpha; here each term is a mean (over the matched boxes and over
all predictions) so that neither grows with K or with the number of boxes per image, and `offset_scale` brings the
offsets to about unit size, so the learning rate of a classification recipe fits and `loc_weight` near 1 balances them.
In squared normalised coordinates the location term is (1/M) sum 1/2 ||predicted_i - gt_i||^2 / offset_scale^2: the
paper's L2, scaled.
"""
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import optax

from inception.detection import matching


def targets(priors: jax.Array, gt_boxes: jax.Array, assignment: jax.Array, offset_scale: float
            ) -> Tuple[jax.Array, jax.Array]:
  """The regression targets and labels of a matched batch: priors [K, 4], gt_boxes [B, G, 4] (normalised),
  assignment [B, K] (matching.match_batch) -> (offsets [B, K, 4] = (gt - prior) / offset_scale, 0 where unmatched;
  matched [B, K] float32 1/0)."""
  matched = assignment != matching.UNMATCHED
  gt = jnp.take_along_axis(gt_boxes, jnp.maximum(assignment, 0)[..., None], axis=1)  # [B, K, 4]
  offsets = jnp.where(matched[..., None], (gt - priors[None]) / offset_scale, 0.0)
  return offsets, matched.astype(jnp.float32)


def per_image_losses(outputs: jax.Array, target_offsets: jax.Array, matched: jax.Array
                     ) -> Tuple[jax.Array, jax.Array]:
  """(location [B], confidence [B]) of the module docstring; outputs [B, K, 5]: 4 offsets and the confidence logit."""
  outputs = outputs.astype(jnp.float32)
  squared = 0.5 * jnp.sum((outputs[..., :4] - target_offsets) ** 2, axis=-1)  # [B, K]
  location = jnp.sum(matched * squared, axis=-1) / jnp.maximum(jnp.sum(matched, axis=-1), 1.0)
  confidence = jnp.mean(optax.sigmoid_binary_cross_entropy(outputs[..., 4], matched), axis=-1)
  return location, confidence


def multibox_loss(outputs: jax.Array, priors: jax.Array, gt_boxes: jax.Array, mask: jax.Array, *,
                  offset_scale: float, loc_weight: float) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """The batch's loss and its parts: outputs [B, K, 5], priors [K, 4], gt_boxes [B, G, 4] normalised and padded with
  zero rows (matching.valid_boxes), mask [B] (1 for a real image) -> (loss, {'loss', 'location', 'confidence',
  'matched'}), each a mean over the real images ('matched': priors matched per image)."""
  assignment = matching.match_batch(priors.astype(jnp.float32), gt_boxes.astype(jnp.float32),
                                    matching.valid_boxes(gt_boxes))
  target_offsets, matched = targets(priors.astype(jnp.float32), gt_boxes.astype(jnp.float32), assignment,
                                    offset_scale)
  location, confidence = per_image_losses(outputs, target_offsets, matched)
  real = mask > 0  # `where`, not multiplication: a NaN on an undecodable image's row must not reach the mean
  count = jnp.maximum(jnp.sum(real), 1)
  mean = lambda x: jnp.sum(jnp.where(real, x, 0.0)) / count
  loss = mean(confidence + loc_weight * location)
  return loss, {'loss': loss, 'location': mean(location), 'confidence': mean(confidence),
                'matched': mean(jnp.sum(matched, axis=-1))}
