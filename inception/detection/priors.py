"""MultiBox's priors (Erhan et al. 2014): K typical boxes, the centres of k-means over the training boxes.

The boxes are in image-normalised coordinates (x0 / width, y0 / height, x1 / width, y1 / height), so images of any size
share one set of priors and a prior means "this place and shape in the image". k-means runs on those 4 coordinates
with the squared Euclidean distance, the same distance the matching uses (matching.py), so each ground-truth box is
matched to a prior the clustering would have put it near. Deterministic for a seed: k-means++ seeding, then Lloyd's
iterations until no assignment changes; a cluster left empty takes the box farthest from its own centre.
"""
from typing import Sequence

import numpy as np

from inception.detection import boxes as box_ops
from inception.detection.records import ImageRecord
from inception.errors import DataError


def normalised_boxes(records: Sequence[ImageRecord]) -> np.ndarray:
  """Every box of `records` in image-normalised coordinates, float64 [N, 4] (in record order)."""
  parts = [box_ops.as_boxes(r.boxes) / np.array([r.width, r.height, r.width, r.height], np.float64) for r in records]
  return np.concatenate(parts + [np.zeros([0, 4])])


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
  """[N, K] squared Euclidean distances."""
  return (np.sum(points ** 2, axis=1)[:, None] - 2.0 * points @ centres.T
          + np.sum(centres ** 2, axis=1)[None, :]).clip(min=0.0)


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
  """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre drawn with probability proportional to its
  squared distance to the nearest centre so far; a duplicate-only set takes repeated points."""
  centres = [points[rng.integers(len(points))]]
  nearest = _squared_distances(points, centres[0][None])[:, 0]
  for _ in range(1, k):
    total = nearest.sum()
    index = rng.choice(len(points), p=nearest / total) if total > 0 else rng.integers(len(points))
    centres.append(points[index])
    nearest = np.minimum(nearest, _squared_distances(points, points[index][None])[:, 0])
  return np.stack(centres)


def kmeans_priors(boxes, k: int, *, seed: int, max_iterations: int, max_boxes: int) -> np.ndarray:
  """The k priors of `boxes` (normalised, [N, 4]): k-means centres, float64 [k, 4], sorted by (y0, x0, y1, x1) so
  the order does not depend on the seeding. Uses a seeded sample of at most `max_boxes` boxes (0 = all) to bound the
  cost on large datasets. DataError when there are fewer boxes than priors."""
  points = box_ops.as_boxes(boxes)
  if k < 1:
    raise ValueError(f'kmeans_priors: k={k}; need at least 1 prior.')
  if not np.all(np.isfinite(points)):
    raise DataError('kmeans_priors: the training boxes hold a non-finite coordinate.')
  rng = np.random.default_rng(seed)
  if max_boxes and len(points) > max_boxes:
    points = points[np.sort(rng.choice(len(points), max_boxes, replace=False))]
  if len(points) < k:
    raise DataError(f'{len(points)} training boxes for {k} priors: k-means needs at least as many boxes as priors. '
                    f'Lower --config.model.num_priors (or raise --config.multibox.kmeans_max_boxes), or add data.')
  centres = _kmeans_plus_plus(points, k, rng)
  assignment = None
  for _ in range(max_iterations):
    distances = _squared_distances(points, centres)
    new = np.argmin(distances, axis=1)
    if assignment is not None and np.array_equal(new, assignment):
      break
    assignment = new
    counts = np.bincount(assignment, minlength=k)
    sums = np.zeros_like(centres)
    np.add.at(sums, assignment, points)
    filled = counts > 0
    centres[filled] = sums[filled] / counts[filled, None]
    own = distances[np.arange(len(points)), assignment]
    for empty in np.flatnonzero(~filled):  # re-seed with the worst-fitted box, which then leaves its cluster
      far = int(np.argmax(own))
      centres[empty], own[far] = points[far], -1.0
  order = np.lexsort((centres[:, 3], centres[:, 2], centres[:, 0], centres[:, 1]))
  return centres[order]
