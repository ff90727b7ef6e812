"""k-means priors (inception/detection/priors.py) on synthetic boxes whose clusters are known."""
import numpy as np
import pytest

from inception.detection import priors
from inception.detection.records import ImageRecord
from inception.errors import DataError

CENTRES = np.array([[0.1, 0.1, 0.3, 0.3], [0.5, 0.2, 0.9, 0.4], [0.2, 0.6, 0.4, 0.95]])


def _clustered(per_cluster=50, noise=0.01, seed=0):
  rng = np.random.default_rng(seed)
  return np.concatenate([c + rng.normal(0, noise, size=(per_cluster, 4)) for c in CENTRES])


def _record(image_id, boxes, width, height):
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  n = len(boxes)
  return ImageRecord(image_id, f'{image_id}.jpg', width, height, boxes, np.zeros(n, np.int32), ('a',) * n,
                     np.zeros(n, bool))


def test_normalised_boxes_divide_by_each_image_size():
  records = [_record('a', [[0, 0, 320, 240]], 640, 480), _record('b', [], 10, 10),
             _record('c', [[1, 2, 3, 4], [5, 5, 10, 10]], 10, 20)]
  np.testing.assert_allclose(priors.normalised_boxes(records),
                             [[0, 0, 0.5, 0.5], [0.1, 0.1, 0.3, 0.2], [0.5, 0.25, 1.0, 0.5]])
  assert priors.normalised_boxes([]).shape == (0, 4)


def test_kmeans_finds_the_clusters_and_sorts_them():
  found = priors.kmeans_priors(_clustered(), 3, seed=0, max_iterations=100, max_boxes=0)
  expected = CENTRES[np.lexsort((CENTRES[:, 3], CENTRES[:, 2], CENTRES[:, 0], CENTRES[:, 1]))]
  np.testing.assert_allclose(found, expected, atol=0.005)


def test_kmeans_is_deterministic_for_a_seed_and_uses_every_prior():
  boxes = np.random.default_rng(3).uniform(0, 1, size=(400, 4))
  a = priors.kmeans_priors(boxes, 20, seed=7, max_iterations=50, max_boxes=0)
  b = priors.kmeans_priors(boxes, 20, seed=7, max_iterations=50, max_boxes=0)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (20, 4) and len(np.unique(a, axis=0)) == 20
  # Each centre is the mean of its boxes: a fixed point of Lloyd's iteration.
  nearest = np.argmin(((boxes[:, None] - a[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_allclose(a, [boxes[nearest == i].mean(0) for i in range(20)], atol=1e-12)


def test_kmeans_samples_at_most_max_boxes():
  boxes = _clustered(per_cluster=400)
  sampled = priors.kmeans_priors(boxes, 3, seed=0, max_iterations=100, max_boxes=60)
  np.testing.assert_allclose(sampled, priors.kmeans_priors(boxes, 3, seed=0, max_iterations=100, max_boxes=0),
                             atol=0.01)


def test_kmeans_refills_an_empty_cluster():
  # Five boxes, three distinct: whatever the seeding, every prior ends on a distinct box.
  boxes = np.array([[0, 0, 0.1, 0.1]] * 3 + [[0.5, 0.5, 0.6, 0.6], [0.8, 0.8, 0.9, 0.9]])
  found = priors.kmeans_priors(boxes, 3, seed=1, max_iterations=10, max_boxes=0)
  assert len(np.unique(found, axis=0)) == 3


def test_too_few_boxes_is_a_data_error():
  with pytest.raises(DataError, match='2 training boxes for 3 priors'):
    priors.kmeans_priors(np.ones([2, 4]), 3, seed=0, max_iterations=10, max_boxes=0)
