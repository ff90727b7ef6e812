"""Mean average precision over a dataset's classes (the paper's detection metric), as a dict ready for JSON.

A class without non-difficult ground truth has no AP (None) and is left out of the mean, and named as such.
"""
from typing import Dict, List, Mapping, Sequence

import numpy as np

from inception.detection import average_precision
from inception.detection.records import Detections
from inception.detection.records import ImageRecord


def class_curves(records: Sequence[ImageRecord], detections: Mapping[str, Detections], num_classes: int,
                 iou_threshold: float, matching: str) -> List[average_precision.ClassCurve]:
  """One matched curve per class of `detections` (by image id; an image without an entry has none) against the
  ground truth of `records`. `matching`: 'voc' or 'ilsvrc' (average_precision.py)."""
  index = {r.image_id: i for i, r in enumerate(records)}
  strangers = sorted(set(detections) - set(index))
  if strangers:
    raise ValueError(f'Detections for {len(strangers)} images not in the ground truth: {strangers[:5]}.')
  curves = []
  for c in range(num_classes):
    gt = [(r.boxes[r.labels == c], r.difficult[r.labels == c]) for r in records]
    image_index, boxes, scores = [np.zeros(0, np.int64)], [np.zeros([0, 4])], [np.zeros(0)]
    for image_id, d in detections.items():
      mine = d.labels == c
      image_index.append(np.full(int(mine.sum()), index[image_id]))
      boxes.append(d.boxes[mine])
      scores.append(d.scores[mine])
    curves.append(average_precision.class_curve(gt, np.concatenate(image_index), np.concatenate(boxes),
                                                np.concatenate(scores), iou_threshold, matching))
  return curves


def evaluate(records: Sequence[ImageRecord], detections: Mapping[str, Detections], class_names: Sequence[str],
             iou_threshold: float, matching: str) -> Dict:
  """Per-class AP and their mean, with the counts behind each (class_curves has the arguments)."""
  classes = {}
  for c, (name, curve) in enumerate(zip(class_names, class_curves(records, detections, len(class_names),
                                                                   iou_threshold, matching))):
    tp = int(curve.true_positive.sum())
    classes[name] = {
        'ap': curve.average_precision(),
        'num_ground_truth': curve.num_positives,
        'num_difficult': int(sum(int(r.difficult[r.labels == c].sum()) for r in records)),
        'num_detections': len(curve.scores) + curve.num_ignored,
        'true_positives': tp,
        'false_positives': len(curve.scores) - tp,
        'ignored_on_difficult': curve.num_ignored,
        'recall': tp / curve.num_positives if curve.num_positives else None,
    }
  aps = [c['ap'] for c in classes.values() if c['ap'] is not None]
  return {
      'metric': 'all-point interpolated average precision',
      'matching': matching,
      'iou_threshold': float(iou_threshold),
      'num_images': len(records),
      'mAP': float(np.mean(aps)) if aps else None,
      'classes': classes,
      'classes_without_ground_truth': [n for n, c in classes.items() if c['ap'] is None],
  }
