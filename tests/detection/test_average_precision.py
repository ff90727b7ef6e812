"""Tests for inception/detection/average_precision.py: hand-worked curves and APs, VOC and ILSVRC matching, and the
VOC devkit's VOCevaldet and VOCap transcribed loop for loop on random scenes."""
from fractions import Fraction

import numpy as np
import pytest

from inception.detection import average_precision as ap_lib


def _curve(gt, dets, matching, iou_threshold=0.5):
  """dets: (image, box, score) triples."""
  image_index = [d[0] for d in dets]
  boxes = np.array([d[1] for d in dets], np.float64).reshape(-1, 4)
  scores = [d[2] for d in dets]
  gt = [(np.array(b, np.float64).reshape(-1, 4), np.array(f, bool)) for b, f in gt]
  return ap_lib.class_curve(gt, image_index, boxes, scores, iou_threshold, matching)


def test_all_point_ap_by_hand():
  # TP, FP, TP, FP, TP over 3 positives: envelope 1 to recall 1/3, 2/3 to 2/3, 3/5 to 1: (1 + 2/3 + 3/5) / 3 = 34/45.
  tp = np.array([1, 0, 1, 0, 1])
  recall, precision = np.cumsum(tp) / 3, np.cumsum(tp) / np.arange(1, 6)
  assert ap_lib.all_point_ap(recall, precision) == pytest.approx(float(Fraction(34, 45)), abs=1e-15)
  assert ap_lib.all_point_ap([0.5, 1.0], [1.0, 1.0]) == 1.0
  assert ap_lib.all_point_ap([0.5, 0.5], [1.0, 0.5]) == 0.5  # half the boxes found, the rest never
  assert ap_lib.all_point_ap([], []) == 0.0
  # A rise in precision lifts the envelope before it: FP then TP over 1 positive gives precision 1/2 at recall 1.
  assert ap_lib.all_point_ap([0.0, 1.0], [0.0, 0.5]) == 0.5


def test_scores_rank_across_images_and_duplicates_are_false_positives():
  gt = [([[0, 0, 10, 10]], [False]), ([[0, 0, 10, 10], [20, 20, 30, 30]], [False, False])]
  dets = [(0, [0, 0, 10, 10], 0.9), (0, [0, 0, 10, 9], 0.95), (1, [20, 20, 30, 30], 0.5), (1, [50, 50, 60, 60], 0.7)]
  for matching in ap_lib.MATCHING:
    curve = _curve(gt, dets, matching)
    # Ranked 0.95 TP, 0.9 duplicate FP, 0.7 FP (nothing there), 0.5 TP; the second box of image 1 never found.
    assert curve.true_positive.tolist() == [True, False, False, True]
    assert curve.scores.tolist() == [0.95, 0.9, 0.7, 0.5] and curve.num_positives == 3
    np.testing.assert_allclose(curve.recall, [1 / 3, 1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(curve.precision, [1, 1 / 2, 1 / 3, 1 / 2])
    assert curve.average_precision() == pytest.approx(1 / 3 * 1 + 1 / 3 * 1 / 2)


def test_voc_takes_the_best_box_even_if_detected_ilsvrc_the_best_free_one():
  gt = [([[0, 0, 10, 10], [2, 0, 12, 10]], [False, False])]
  dets = [(0, [0, 0, 10, 10], 0.9), (0, [0.5, 0, 10.5, 10], 0.8)]  # the second: IoU 0.905 to box 0, 0.739 to box 1
  assert _curve(gt, dets, 'voc').true_positive.tolist() == [True, False]
  assert _curve(gt, dets, 'voc').average_precision() == 0.5
  assert _curve(gt, dets, 'ilsvrc').true_positive.tolist() == [True, True]
  assert _curve(gt, dets, 'ilsvrc').average_precision() == 1.0


def test_difficult_boxes_neither_count_nor_penalise():
  gt = [([[0, 0, 10, 10], [20, 0, 30, 10]], [False, True])]
  dets = [(0, [20, 0, 30, 10], 0.9), (0, [20, 0, 30, 10], 0.85), (0, [0, 0, 10, 10], 0.8)]
  for matching in ap_lib.MATCHING:
    curve = _curve(gt, dets, matching)
    assert curve.num_positives == 1 and curve.num_ignored == 2  # both hits on the difficult box, duplicate too
    assert curve.true_positive.tolist() == [True] and curve.average_precision() == 1.0
  as_regular = _curve([(gt[0][0], [False, False])], dets, 'voc')
  assert as_regular.true_positive.tolist() == [True, False, True] and as_regular.num_positives == 2
  # Best overlap on a difficult box that also covers a regular one: VOC ignores it, ILSVRC's rule takes the regular.
  gt = [([[0, 0, 10, 10], [0.5, 0, 10.5, 10]], [False, True])]
  assert _curve(gt, [(0, [0.6, 0, 10.6, 10], 0.9)], 'voc').num_ignored == 1
  assert _curve(gt, [(0, [0.6, 0, 10.6, 10], 0.9)], 'ilsvrc').true_positive.tolist() == [True]


def test_ilsvrc_threshold_is_lower_for_small_boxes():
  np.testing.assert_allclose(ap_lib.ilsvrc_thresholds([[0, 0, 100, 100], [0, 0, 20, 30], [5, 5, 15, 15]], 0.5),
                             [0.5, 0.5, 100 / 400])
  gt = [([[0, 0, 10, 10]], [False])]
  dets = [(0, [0, 0, 10, 3], 0.9)]  # IoU 0.3: above the 10 px box's 0.25, below VOC's 0.5
  assert _curve(gt, dets, 'ilsvrc').true_positive.tolist() == [True]
  assert _curve(gt, dets, 'voc').true_positive.tolist() == [False]


def test_no_ground_truth_and_no_detections():
  assert _curve([([], [])], [(0, [0, 0, 5, 5], 0.3)], 'voc').average_precision() is None
  curve = _curve([([[0, 0, 5, 5]], [False])], [], 'voc')
  assert curve.average_precision() == 0.0 and len(curve.scores) == 0
  with pytest.raises(ValueError, match='matching'):
    _curve([([[0, 0, 5, 5]], [False])], [], 'coco')


def _devkit_ap(gt_voc, dets_voc, threshold=0.5):
  """VOCevaldet.m and VOCap.m (VOC 2010+ devkit), transcribed: 1-based inclusive boxes, +1 widths, loops."""
  npos = sum(int((~d).sum()) for _, d in gt_voc)
  detected = [np.zeros(len(b), bool) for b, _ in gt_voc]
  order = sorted(range(len(dets_voc)), key=lambda k: -dets_voc[k][2])  # sort(-confidence): stable
  tp, fp = np.zeros(len(order)), np.zeros(len(order))
  for d, k in enumerate(order):
    i, bb, _ = dets_voc[k]
    ovmax, jmax = -np.inf, -1
    for j, bbgt in enumerate(gt_voc[i][0]):
      bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
      iw, ih = bi[2] - bi[0] + 1, bi[3] - bi[1] + 1
      if iw > 0 and ih > 0:
        ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih
        ov = iw * ih / ua
        if ov > ovmax:
          ovmax, jmax = ov, j
    if ovmax >= threshold:
      if not gt_voc[i][1][jmax]:
        if not detected[i][jmax]:
          tp[d], detected[i][jmax] = 1, True
        else:
          fp[d] = 1
    else:
      fp[d] = 1
  fp, tp = np.cumsum(fp), np.cumsum(tp)
  rec = tp / npos
  with np.errstate(invalid='ignore'):
    prec = tp / (fp + tp)  # 0/0 = NaN after leading ignored detections, as in MATLAB
  mrec = [0.0] + list(rec) + [1.0]
  mpre = [0.0] + list(prec) + [0.0]
  for i in range(len(mpre) - 2, -1, -1):
    mpre[i] = np.nanmax([mpre[i], mpre[i + 1]])  # MATLAB's max ignores NaN
  return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def _random_voc_scene(rng, images):
  """Integer 1-based inclusive boxes: ground truth (some difficult, some overlapping) and detections near it."""
  gt, dets = [], []
  for i in range(images):
    corner = rng.integers(1, 300, size=(rng.integers(0, 6), 2))
    boxes = np.concatenate([corner, corner + rng.integers(5, 80, size=corner.shape)], axis=1)
    gt.append((boxes, rng.random(len(boxes)) < 0.2))
    for b in boxes:
      for _ in range(rng.integers(0, 3)):
        dets.append((i, b + rng.integers(-6, 7, size=4), float(rng.random())))
    for _ in range(rng.integers(0, 3)):
      c = rng.integers(1, 300, size=2)
      dets.append((i, np.concatenate([c, c + rng.integers(5, 80, size=2)]), float(rng.random())))
  return gt, dets


@pytest.mark.parametrize('seed', range(5))
def test_voc_matches_the_devkit_transcribed(seed):
  rng = np.random.default_rng(seed)
  gt_voc, dets_voc = _random_voc_scene(rng, 25)
  shift = np.array([-1, -1, 0, 0])  # voc.py's conversion to continuous pixel coordinates
  gt = [(b + shift, d) for b, d in gt_voc]
  dets = [(i, b + shift, s) for i, b, s in dets_voc]
  curve = _curve(gt, dets, 'voc')
  assert curve.num_ignored > 0 and not curve.true_positive.all()  # the scenes exercise difficult boxes and misses
  assert curve.average_precision() == pytest.approx(_devkit_ap(gt_voc, dets_voc), abs=1e-12)
