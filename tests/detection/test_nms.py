"""Tests for inception/detection/nms.py: greedy NMS by hand and against a plain reference, per-class NMS."""
import numpy as np
import pytest

from inception.detection import nms


def _reference_nms(boxes, scores, threshold):
  """Greedy NMS as R-CNN's nms.m states it: take the best remaining box, drop those overlapping it by > threshold."""
  def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union
  remaining = sorted(range(len(scores)), key=lambda i: -scores[i])
  keep = []
  while remaining:
    best = remaining.pop(0)
    keep.append(best)
    remaining = [i for i in remaining if iou(boxes[best], boxes[i]) <= threshold]
  return keep


def test_hand_cases_and_the_threshold_is_strict():
  boxes = [[0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30], [0, 0, 10, 7.5]]  # IoU to the first: 0.5, 0, 0.75
  scores = [0.9, 0.8, 0.7, 0.6]
  assert nms.nms(boxes, scores, 0.3).tolist() == [0, 2]
  assert nms.nms(boxes, scores, 0.5).tolist() == [0, 1, 2]  # IoU exactly 0.5 is not above 0.5; box 3 (0.75) goes
  assert nms.nms(boxes, scores, 0.8).tolist() == [0, 1, 2, 3]
  # Best first: box 1 (0.8) drops box 3 (IoU 2/3) and box 0 (IoU 0.5).
  assert nms.nms(boxes, [0.1, 0.8, 0.7, 0.6], 0.3).tolist() == [1, 2]


def test_greedy_a_suppressed_box_suppresses_nothing():
  boxes = [[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]]  # neighbours overlap by 6/14, the ends by 2/18
  assert nms.nms(boxes, [0.9, 0.8, 0.7], 0.3).tolist() == [0, 2]


def test_equal_scores_keep_input_order_and_empty_input():
  assert nms.nms([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.5, 0.5], 0.3).tolist() == [0]
  assert nms.nms(np.zeros([0, 4]), np.zeros([0]), 0.3).tolist() == []
  with pytest.raises(ValueError, match='3 boxes but 2 scores'):
    nms.nms(np.zeros([3, 4]), [1, 2], 0.3)


@pytest.mark.parametrize('threshold', [0.0, 0.3, 0.5, 0.7])
def test_matches_the_reference_on_random_boxes(threshold):
  rng = np.random.default_rng(int(threshold * 10))
  xy = rng.uniform(0, 80, (200, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (200, 2))], 1)
  scores = rng.random(200)
  kept = nms.nms(boxes, scores, threshold).tolist()
  assert kept == _reference_nms(boxes.tolist(), scores.tolist(), threshold)
  assert 0 < len(kept) < 200


def test_per_class_nms_is_independent_per_class_and_ranked():
  boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [30, 30, 40, 40]])
  scores = np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.6]])
  d = nms.per_class_nms(boxes, scores, 0.3)
  # Class 0 keeps box 0 (box 1 overlaps it by 0.82) and box 2; class 1 keeps box 1 (best) and box 2.
  assert list(zip(d.labels.tolist(), d.scores.tolist())) == [(0, 0.9), (1, 0.7), (1, 0.6), (0, 0.1)]
  np.testing.assert_array_equal(d.boxes, boxes[[0, 1, 2, 2]])
  with pytest.raises(ValueError, match=r'\[N, C\]'):
    nms.per_class_nms(boxes, scores[:2], 0.3)
