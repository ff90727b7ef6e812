"""One class's precision-recall curve and average precision, as the PASCAL VOC and ILSVRC devkits compute them.

Detections of all images are ranked by score and each is matched to ground truth at an IoU threshold:
- 'voc' (VOCevaldet): the ground-truth box of highest IoU; at or above the threshold it is a true positive if not yet
  detected, a false positive if it was (a duplicate), ignored if it is difficult; below, a false positive.
- 'ilsvrc' (ILSVRC's eval_detection.m): the not yet detected box of highest IoU among those at or above their own
  threshold min(iou_threshold, wh / ((w + 10)(h + 10))), so small boxes need less overlap; none: a false positive.
  ILSVRC has no difficult flag; here a detection that matches no regular box but a difficult one is ignored.
AP is the area under the curve's precision envelope at every recall step (VOC 2010 on, and ILSVRC: all-point).
"""
import dataclasses
from typing import Dict, Sequence, Tuple

import numpy as np

from inception.detection import boxes as box_ops

MATCHING = ('voc', 'ilsvrc')
ILSVRC_PIXEL_TOLERANCE = 10  # the ILSVRC devkit's constant in its size-dependent threshold


def ilsvrc_thresholds(gt_boxes, iou_threshold: float) -> np.ndarray:
  """[G] IoU thresholds of ILSVRC's rule: min(iou_threshold, wh / ((w + 10)(h + 10))) of each ground-truth box."""
  b = box_ops.as_boxes(gt_boxes)
  w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
  return np.minimum(iou_threshold, w * h / ((w + ILSVRC_PIXEL_TOLERANCE) * (h + ILSVRC_PIXEL_TOLERANCE)))


def all_point_ap(recall, precision) -> float:
  """The area under the precision envelope (at each recall, the best precision at that recall or beyond), summed
  over every recall step: VOCap of the VOC 2010+ devkit."""
  recall = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
  envelope = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
  envelope = np.maximum.accumulate(envelope[::-1])[::-1]
  steps = np.flatnonzero(recall[1:] != recall[:-1])
  return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


@dataclasses.dataclass(frozen=True)
class ClassCurve:
  """The ranked, matched detections of one class: `true_positive[i]` for the i-th best detection that counts (the
  ones ignored for matching a difficult box are left out); `num_positives` counts the non-difficult boxes."""
  scores: np.ndarray         # [D] descending
  true_positive: np.ndarray  # bool [D]
  num_positives: int
  num_ignored: int

  @property
  def recall(self) -> np.ndarray:
    if not self.num_positives:
      return np.full(len(self.scores), np.nan)
    return np.cumsum(self.true_positive) / self.num_positives

  @property
  def precision(self) -> np.ndarray:
    tp = np.cumsum(self.true_positive)
    return tp / np.arange(1, len(tp) + 1)

  def average_precision(self):
    """All-point AP, or None when the class has no non-difficult ground truth (AP is undefined)."""
    return all_point_ap(self.recall, self.precision) if self.num_positives else None


def _match(iou: np.ndarray, thresholds: np.ndarray, difficult: np.ndarray, detected: np.ndarray, matching: str):
  """'tp', 'fp' or 'ignore' for one detection with IoUs `iou` [G] to its image's boxes; marks `detected`."""
  if not len(iou):
    return 'fp'
  if matching == 'voc':
    j = int(np.argmax(iou))
    if iou[j] < thresholds[j]:
      return 'fp'
    if difficult[j]:
      return 'ignore'
    if detected[j]:
      return 'fp'
    detected[j] = True
    return 'tp'
  passing = iou >= thresholds
  regular = passing & ~difficult & ~detected
  if regular.any():
    j = int(np.argmax(np.where(regular, iou, -1.0)))
    detected[j] = True
    return 'tp'
  return 'ignore' if (passing & difficult).any() else 'fp'


def class_curve(gt: Sequence[Tuple[np.ndarray, np.ndarray]], image_index, boxes, scores, iou_threshold: float,
                matching: str) -> ClassCurve:
  """Matches one class's detections (`image_index` [D] into `gt`, `boxes` [D, 4], `scores` [D]) to its ground truth
  (`gt[i]` = (boxes [G, 4], difficult bool [G]) of image i). Equal scores keep the input order."""
  if matching not in MATCHING:
    raise ValueError(f'matching {matching!r}; expected one of {MATCHING}.')
  image_index = np.asarray(image_index, np.int64).reshape(-1)
  boxes, scores = box_ops.as_boxes(boxes), np.asarray(scores, np.float64).reshape(-1)
  order = np.argsort(-scores, kind='stable')
  ious: Dict[int, np.ndarray] = {}  # image -> IoU [its detections in rank order, G]
  rows = np.zeros(len(order), np.int64)  # rank -> row of its image's IoU matrix
  for image in np.unique(image_index):
    ranks = np.flatnonzero(image_index[order] == image)
    ious[int(image)] = box_ops.iou_matrix(boxes[order[ranks]], gt[image][0])
    rows[ranks] = np.arange(len(ranks))
  thresholds = [np.full(len(g), iou_threshold) if matching == 'voc' else ilsvrc_thresholds(g, iou_threshold)
                for g, _ in gt]
  detected = [np.zeros(len(g), bool) for g, _ in gt]
  outcome = []
  for k, d in enumerate(order):
    image = int(image_index[d])
    outcome.append(_match(ious[image][rows[k]], thresholds[image], np.asarray(gt[image][1], bool), detected[image],
                          matching))
  outcome = np.array(outcome, dtype=object)
  counted = outcome != 'ignore'
  return ClassCurve(scores[order][counted], (outcome[counted] == 'tp').astype(bool),
                    int(sum(int((~np.asarray(d, bool)).sum()) for _, d in gt)), int((~counted).sum()))
