"""Tests for inception/detection/region_sampling.py: R-CNN's labels by IoU, the foreground cap and share."""
import numpy as np
import pytest

from inception.detection import boxes as box_ops
from inception.detection import region_sampling
from inception.detection.records import ImageRecord

RULE = region_sampling.SamplingRule(foreground_iou=0.5, background_iou=0.5, foreground_share=0.25)


def _record(boxes, labels):
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  return ImageRecord('im', 'im.jpg', 100, 100, boxes, np.asarray(labels, np.int32), tuple('ab'[l] for l in labels),
                     np.zeros(len(labels), bool))


def test_labels_follow_the_best_overlap_at_the_thresholds():
  record = _record([[0, 0, 10, 10], [50, 50, 70, 70]], [0, 1])
  proposals = np.array([
      [0, 0, 10, 10],      # IoU 1 with box 0
      [0, 0, 10, 20],      # IoU exactly 0.5 with box 0: foreground (>=)
      [0, 0, 10, 21],      # IoU 100/210 < 0.5: background
      [50, 50, 70, 60],    # IoU 0.5 with box 1
      [80, 80, 99, 99],    # no overlap
  ])
  labels, best = region_sampling.label_proposals(record, proposals, 2, RULE)
  assert labels.tolist() == [0, 0, 2, 1, 2]
  np.testing.assert_allclose(best, [1, 0.5, 100 / 210, 0.5, 0])
  between = region_sampling.SamplingRule(foreground_iou=0.5, background_iou=0.3)
  labels, _ = region_sampling.label_proposals(record, proposals, 2, between)
  assert labels.tolist() == [0, 0, -1, 1, 2]  # 0.476 is neither under a gap between the thresholds


def test_sample_keeps_ground_truth_caps_foreground_and_draws_three_background_per_foreground():
  rng = np.random.default_rng(0)
  gt = [[10 * i, 0, 10 * i + 8, 8] for i in range(4)]
  record = _record(gt, [0, 1, 0, 1])
  near = np.array([[x0, 0, x1, 8.5] for x0, _, x1, _ in gt] * 5, np.float64)  # IoU 0.94: foreground
  far = rng.uniform(40, 90, (200, 2))
  far = np.concatenate([far, far + 8], axis=1)  # [40, 98] boxes away from the ground truth: background
  proposals = np.concatenate([near, far])
  boxes, labels = region_sampling.sample(record, proposals, 2, RULE, rng)
  assert len(labels) == 24 + 72 and (labels < 2).sum() == 24
  np.testing.assert_array_equal(boxes[:4], record.boxes)  # the ground truth first, with its classes
  assert labels[:4].tolist() == [0, 1, 0, 1]
  fg_iou = box_ops.iou_matrix(boxes[:24], record.boxes).max(axis=1)
  bg_iou = box_ops.iou_matrix(boxes[24:], record.boxes).max(axis=1)
  assert fg_iou.min() >= 0.5 and bg_iou.max() < 0.5 and (labels[24:] == 2).all()
  capped = region_sampling.SamplingRule(foreground_per_image=10, foreground_share=0.5)
  boxes, labels = region_sampling.sample(record, proposals, 2, capped, rng)
  assert (labels < 2).sum() == 10 and (labels == 2).sum() == 10
  np.testing.assert_array_equal(boxes[:4], record.boxes)


def test_an_image_without_boxes_is_all_background_and_takes_the_count_given():
  record = _record(np.zeros([0, 4]), [])
  proposals = np.array([[0, 0, 20, 20], [10, 10, 40, 40], [50, 50, 90, 90]], np.float64)
  boxes, labels = region_sampling.sample(record, proposals, 3, RULE, np.random.default_rng(0), background_count=2)
  assert labels.tolist() == [3, 3] and len(boxes) == 2
  _, labels = region_sampling.sample(record, proposals, 3, RULE, np.random.default_rng(0))
  assert len(labels) == 0  # no foreground, no share to draw background for


@pytest.mark.parametrize('kwargs, match', [
    (dict(foreground_iou=0.3, background_iou=0.5), 'background_iou'),
    (dict(foreground_share=0), 'foreground_share'),
    (dict(foreground_per_image=-1), 'foreground_per_image'),
])
def test_bad_rules_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    region_sampling.SamplingRule(**kwargs)
