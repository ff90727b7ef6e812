"""MultiBox's loss (inception/detection/multibox_loss.py) against values worked out by hand."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from inception.detection import multibox_loss

PRIORS = jnp.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
# One box, nearest prior 0: its target offsets are (gt - prior 0) / 0.1 = (1, 1, 0, 1).
GT = jnp.array([[[0.1, 0.1, 0.5, 0.6], [0.0, 0.0, 0.0, 0.0]]])


def _outputs(logits=(0.0, 0.0)):
  return jnp.array([[[1.0, 1.0, 0.0, 0.0, logits[0]], [5.0, 5.0, 5.0, 5.0, logits[1]]]])


def test_targets_of_a_matched_batch():
  offsets, matched = multibox_loss.targets(PRIORS, GT, jnp.array([[0, -1]]), 0.1)
  np.testing.assert_allclose(offsets, [[[1, 1, 0, 1], [0, 0, 0, 0]]], atol=1e-6)
  assert np.asarray(matched).tolist() == [[1.0, 0.0]]


def test_hand_worked_loss():
  # Location: only prior 0 is matched, 1/2 * ((1-1)^2 + (1-1)^2 + (0-0)^2 + (0-1)^2) / 1 match = 0.5; prior 1's
  # far-off offsets cost nothing. Confidence: logits 0 give log 2 for either label, averaged over the 2 priors.
  loss, parts = multibox_loss.multibox_loss(_outputs(), PRIORS, GT, jnp.ones([1]), offset_scale=0.1, loc_weight=2.0)
  np.testing.assert_allclose(parts['location'], 0.5, rtol=1e-6)
  np.testing.assert_allclose(parts['confidence'], math.log(2), rtol=1e-6)
  np.testing.assert_allclose(loss, math.log(2) + 2.0 * 0.5, rtol=1e-6)
  assert float(parts['matched']) == 1.0
  # Logits (3, -2): -log sigmoid(3) for the match, -log(1 - sigmoid(-2)) for the other.
  _, parts = multibox_loss.multibox_loss(_outputs((3.0, -2.0)), PRIORS, GT, jnp.ones([1]), offset_scale=0.1,
                                         loc_weight=1.0)
  expected = (math.log1p(math.exp(-3.0)) + math.log1p(math.exp(-2.0))) / 2
  np.testing.assert_allclose(parts['confidence'], expected, rtol=1e-6)


def test_an_image_without_boxes_and_a_masked_image():
  outputs = jnp.concatenate([_outputs(), _outputs(), jnp.full([1, 2, 5], jnp.nan)])
  gt = jnp.concatenate([GT, jnp.zeros_like(GT), GT])
  loss, parts = multibox_loss.multibox_loss(outputs, PRIORS, gt, jnp.array([1.0, 1.0, 0.0]), offset_scale=0.1,
                                            loc_weight=1.0)
  # Image 0: log 2 + 0.5; image 1 (no boxes): log 2 and no location term; image 2 is masked, its NaNs left out.
  np.testing.assert_allclose(loss, (math.log(2) + 0.5 + math.log(2)) / 2, rtol=1e-6)
  np.testing.assert_allclose(parts['location'], 0.25, rtol=1e-6)
  np.testing.assert_allclose(parts['matched'], 0.5, rtol=1e-6)


def test_unmatched_offsets_get_no_gradient():
  grad = jax.grad(lambda o: multibox_loss.multibox_loss(o, PRIORS, GT, jnp.ones([1]), offset_scale=0.1,
                                                        loc_weight=1.0)[0])(_outputs())
  np.testing.assert_allclose(grad[0, 1, :4], 0.0)
  np.testing.assert_allclose(grad[0, 0, :4], [0, 0, 0, -1.0], atol=1e-6)  # d/do of 1/2 (o - t)^2
  np.testing.assert_allclose(grad[0, :, 4], [(0.5 - 1) / 2, 0.5 / 2], atol=1e-6)  # (sigmoid - label) / K
