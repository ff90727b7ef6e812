"""Greedy non-maximum suppression (R-CNN's test time): per class, keep the best-scoring box, drop the boxes that
overlap it by more than the threshold, repeat. The threshold is an argument (the config sets R-CNN's 0.3).
"""
from typing import Dict, Mapping

import numpy as np

from inception.detection import boxes as box_ops
from inception.detection.records import Detections


def nms(boxes, scores, iou_threshold: float) -> np.ndarray:
  """Indices of the boxes kept, best score first. A box is dropped when its IoU with a kept, better box is strictly
  above `iou_threshold` (R-CNN's nms.m); equal scores keep the input order."""
  boxes = box_ops.as_boxes(boxes)
  scores = np.asarray(scores, np.float64).reshape(-1)
  if len(scores) != len(boxes):
    raise ValueError(f'nms: {len(boxes)} boxes but {len(scores)} scores.')
  order = np.argsort(-scores, kind='stable')
  sorted_boxes = boxes[order]
  suppressed = np.zeros(len(order), bool)
  keep = []
  for i in range(len(order)):  # one row of IoUs per kept box: memory O(N), not an N x N matrix
    if suppressed[i]:
      continue
    keep.append(order[i])
    suppressed[i + 1:] |= box_ops.iou_matrix(sorted_boxes[i], sorted_boxes[i + 1:])[0] > iou_threshold
  return np.asarray(keep, np.int64)


def per_class_nms(boxes, class_scores, iou_threshold: float) -> Detections:
  """`boxes` [N, 4] scored for each of C classes (`class_scores` [N, C], background already left out): NMS within each
  class, all classes' survivors as one Detections, best score first (ties: class order, then box order)."""
  boxes = box_ops.as_boxes(boxes)
  class_scores = np.asarray(class_scores, np.float64)
  if class_scores.ndim != 2 or class_scores.shape[0] != len(boxes):
    raise ValueError(f'per_class_nms: class_scores {class_scores.shape} for {len(boxes)} boxes; expected [N, C].')
  kept_boxes, kept_scores, kept_labels = [], [], []
  for c in range(class_scores.shape[1]):
    keep = nms(boxes, class_scores[:, c], iou_threshold)
    kept_boxes.append(boxes[keep])
    kept_scores.append(class_scores[keep, c])
    kept_labels.append(np.full(len(keep), c, np.int32))
  if not kept_boxes:
    return Detections.empty()
  scores = np.concatenate(kept_scores)
  order = np.argsort(-scores, kind='stable')
  return Detections(np.concatenate(kept_boxes)[order], scores[order], np.concatenate(kept_labels)[order])


def detect(boxes: Mapping[str, np.ndarray], class_scores: Mapping[str, np.ndarray], iou_threshold: float,
           max_detections: int = 0) -> Dict[str, Detections]:
  """Each image's scored proposals (image id -> [N, 4] and [N, C]) as its detections: per_class_nms, then the best
  `max_detections` (0 = all)."""
  out = {}
  for image_id, scores in class_scores.items():
    kept = per_class_nms(boxes[image_id], scores, iou_threshold)
    if max_detections:
      kept = Detections(kept.boxes[:max_detections], kept.scores[:max_detections], kept.labels[:max_detections])
    out[image_id] = kept
  return out
