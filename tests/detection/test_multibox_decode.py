"""Decoding MultiBox's outputs into image boxes (inception/detection/multibox_decode.py)."""
import jax.numpy as jnp
import numpy as np
import pytest

from inception.detection import matching
from inception.detection import multibox_decode
from inception.detection import multibox_loss


def test_round_trip_through_the_loss_targets():
  """Boxes encoded as the loss's targets against their matched priors decode to the same boxes in pixels."""
  width, height = 640.0, 480.0
  gt_pixels = np.array([[10, 20, 110, 100], [300, 200, 420, 330], [500, 10, 640, 90]], np.float64)
  scale = np.array([width, height, width, height])
  priors = np.array([[0.0, 0.0, 0.2, 0.2], [0.5, 0.4, 0.7, 0.7], [0.8, 0.0, 1.0, 0.2], [0.4, 0.4, 0.6, 0.6]])
  gt = jnp.asarray((gt_pixels / scale)[None], jnp.float32)
  assignment = matching.match_batch(jnp.asarray(priors, jnp.float32), gt, matching.valid_boxes(gt))
  offsets, matched = multibox_loss.targets(jnp.asarray(priors, jnp.float32), gt, assignment, 0.1)
  logits = np.where(np.asarray(matched[0]) > 0, [3.0, 2.0, 1.0, 0.0], -5.0)  # the matched ones ranked first
  outputs = np.concatenate([np.asarray(offsets[0]), logits[:, None]], axis=1)
  found = multibox_decode.image_boxes(outputs, priors, 0.1, width, height, top_k=3)
  order = np.argsort(-logits[np.asarray(matched[0]) > 0])
  expected = gt_pixels[np.asarray(assignment[0])[np.asarray(matched[0]) > 0]][order]
  np.testing.assert_allclose(found, expected, atol=1e-3)  # float32 targets


def test_corners_ordered_clipped_and_empty_boxes_dropped():
  priors = np.array([[0.2, 0.2, 0.4, 0.4], [0.9, 0.9, 1.0, 1.0], [0.1, 0.1, 0.2, 0.2]])
  outputs = np.array([[2.0, 0.0, -2.0, 0.0, 0.0],     # x0 0.4, x1 0.2: ordered to (0.2, 0.4)
                      [2.0, 2.0, 2.0, 2.0, 5.0],      # (1.1, 1.1, 1.2, 1.2): wholly outside, dropped
                      [-2.0, 0.0, 0.0, 0.0, 1.0]])    # x0 -0.1: clipped to 0
  found = multibox_decode.image_boxes(outputs, priors, 0.1, 100, 50, top_k=10)
  np.testing.assert_allclose(found, [[0, 5, 20, 10], [20, 10, 40, 20]])


def test_top_k_and_ties():
  priors = np.tile([[0.1, 0.1, 0.5, 0.5]], (5, 1)) + np.arange(5)[:, None] * 0.1
  outputs = np.concatenate([np.zeros([5, 4]), np.array([[0.0], [1.0], [0.0], [2.0], [1.0]])], axis=1)
  found = multibox_decode.image_boxes(outputs, priors, 0.1, 1, 1, top_k=4)
  np.testing.assert_allclose(found[:, 0], [0.4, 0.2, 0.5, 0.1])  # priors 3, 1, 4, 0: equal logits keep prior order
  with pytest.raises(ValueError, match='top_k=0'):
    multibox_decode.image_boxes(outputs, priors, 0.1, 1, 1, top_k=0)
  with pytest.raises(ValueError, match='expected'):
    multibox_decode.image_boxes(outputs[:, :4], priors, 0.1, 1, 1, top_k=1)


def test_jax_and_numpy_decode_agree():
  rng = np.random.default_rng(0)
  priors, offsets = rng.uniform(0, 1, (6, 4)), rng.normal(0, 3, (2, 6, 4))
  np.testing.assert_allclose(multibox_decode.normalised_boxes(jnp.asarray(priors), jnp.asarray(offsets), 0.1, jnp),
                             multibox_decode.normalised_boxes(priors, offsets, 0.1), atol=1e-6)
