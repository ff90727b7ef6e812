"""Tests for inception/detection/coverage.py: box recall on hand-made cases, and merging proposal sets."""
import numpy as np
import pytest

from inception.detection import coverage
from inception.detection.records import ImageRecord


def _record(image_id, boxes, labels, names=('a', 'b')):
  labels = np.asarray(labels, np.int32)
  return ImageRecord(image_id, f'{image_id}.jpg', 100, 100, np.asarray(boxes, np.float64).reshape(-1, 4), labels,
                     tuple(names[l] for l in labels), np.zeros(len(labels), bool))


def test_covered_at_exactly_the_threshold_and_not_below():
  gt = [[0, 0, 10, 10]]
  assert coverage.covered(gt, [[0, 0, 10, 20]], 0.5).tolist() == [True]     # IoU 100 / 200 = 0.5
  assert coverage.covered(gt, [[0, 0, 10, 20.5]], 0.5).tolist() == [False]  # 100 / 205
  assert coverage.covered(gt, np.zeros([0, 4]), 0.5).tolist() == [False]
  assert coverage.covered(np.zeros([0, 4]), [[0, 0, 1, 1]], 0.5).shape == (0,)


def test_covered_takes_the_best_proposal_across_chunks():
  far = np.tile([[50.0, 50, 60, 60]], (5000, 1))
  proposals = np.concatenate([far, [[1, 1, 10, 10]]])  # the only good one after the first 4,096
  assert coverage.covered([[0, 0, 10, 10], [80, 80, 90, 90]], proposals, 0.5).tolist() == [True, False]


def test_recall_counts_boxes_classes_and_images_without_proposals():
  records = [
      _record('one', [[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [0, 0, 1]),
      _record('two', [[0, 0, 30, 30]], [1]),
      _record('three', [[5, 5, 15, 15]], [0]),  # no proposals made for it (left out)
  ]
  proposals = {'one': np.array([[0, 0, 10, 11], [20, 20, 40, 60], [50, 50, 60, 60], [70, 70, 90, 90]]),
               'two': np.array([[0, 0, 30, 30], [0, 0, 31, 31]])}
  result = coverage.recall(records, proposals, ('a', 'b'), 0.5)
  # one: the first box at IoU 100/110, the second at exactly 400/800 = 0.5, the third exactly; two: exactly.
  assert (result['boxes'], result['covered']) == (5, 4)
  assert result['recall'] == pytest.approx(0.8)
  assert result['classes'] == {'a': {'boxes': 3, 'covered': 2, 'recall': pytest.approx(2 / 3)},
                               'b': {'boxes': 2, 'covered': 2, 'recall': 1.0}}
  assert result['images_without_proposals'] == 1 and result['images'] == 3
  assert result['proposals_per_image'] == pytest.approx(6 / 3)
  assert (result['proposals_min'], result['proposals_max']) == (0, 4)
  strict = coverage.recall(records, proposals, ('a', 'b'), 0.51)
  assert strict['covered'] == 3  # the IoU-0.5 box drops out


def test_merge_drops_exact_duplicates_and_keeps_the_first_sets_order():
  a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float64)
  b = np.array([[20, 20, 30, 30], [21, 21, 31, 31], [0, 0, 10, 10], [50, 50, 70, 70]], np.float64)
  merged = coverage.merge_boxes([a, b], iou_threshold=1.0)
  np.testing.assert_array_equal(merged, [[0, 0, 10, 10], [20, 20, 30, 30], [21, 21, 31, 31], [50, 50, 70, 70]])
  near = coverage.merge_boxes([a, b], iou_threshold=0.5)  # (21, 21, 31, 31) overlaps (20, 20, 30, 30) by 81/119
  np.testing.assert_array_equal(near, [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 70, 70]])
  assert coverage.merge_boxes([np.zeros([0, 4])], 1.0).shape == (0, 4)
  with pytest.raises(ValueError, match='iou_threshold'):
    coverage.merge_boxes([a], 1.5)


def test_merge_sets_image_by_image():
  ss = {'x': np.array([[0, 0, 10, 10]]), 'y': np.array([[1, 1, 5, 5]])}
  multibox = {'x': np.array([[0, 0, 10, 10], [2, 2, 8, 8]]), 'z': np.array([[3, 3, 9, 9]])}
  merged = coverage.merge([ss, multibox], iou_threshold=1.0)
  assert list(merged) == ['x', 'y', 'z']
  np.testing.assert_array_equal(merged['x'], [[0, 0, 10, 10], [2, 2, 8, 8]])
  np.testing.assert_array_equal(merged['z'], [[3, 3, 9, 9]])
