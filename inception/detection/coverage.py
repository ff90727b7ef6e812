"""Proposal quality and proposal sets: box recall (the paper's "coverage") and merging sets with de-duplication.

Box recall is the share of ground-truth boxes that some proposal overlaps at IoU >= the threshold (0.5 in the paper,
section 8: Selective Search alone 92%, with MultiBox 93%); every box counts, difficult ones included. Merging joins
proposal sets (Selective Search and, later, the MultiBox head's top 200) image by image.
"""
from typing import Dict, Mapping, Sequence

import numpy as np

from inception.detection import boxes as box_ops
from inception.detection import nms as nms_lib
from inception.detection.records import ImageRecord


def covered(gt_boxes, proposals, iou_threshold: float) -> np.ndarray:
  """[N] bool: whether each ground-truth box has a proposal at IoU >= `iou_threshold`."""
  gt_boxes, proposals = box_ops.as_boxes(gt_boxes), box_ops.as_boxes(proposals)
  if not len(proposals):
    return np.zeros(len(gt_boxes), bool)
  best = np.zeros(len(gt_boxes))
  for start in range(0, len(proposals), 4096):  # bounded memory for thousands of proposals
    best = np.maximum(best, box_ops.iou_matrix(gt_boxes, proposals[start:start + 4096]).max(axis=1, initial=0.0))
  return best >= iou_threshold


def recall(records: Sequence[ImageRecord], proposals: Mapping[str, np.ndarray], class_names: Sequence[str],
           iou_threshold: float) -> dict:
  """Box recall over `records` and per class, and proposals per image, as a JSON-ready dict. An image without an
  entry in `proposals` (left out when they were made) has none: its boxes count as missed, and it is counted."""
  hits = np.zeros(len(class_names), np.int64)
  totals = np.zeros(len(class_names), np.int64)
  counts = []
  for record in records:
    found = proposals.get(record.image_id, np.zeros([0, 4]))
    counts.append(len(found))
    got = covered(record.boxes, found, iou_threshold)
    np.add.at(totals, record.labels, 1)
    np.add.at(hits, record.labels, got.astype(np.int64))
  counts = np.asarray(counts + [0] * (not counts))
  return {
      'iou_threshold': iou_threshold,
      'images': len(records),
      'images_without_proposals': sum(r.image_id not in proposals for r in records),
      'boxes': int(totals.sum()),
      'covered': int(hits.sum()),
      'recall': float(hits.sum() / totals.sum()) if totals.sum() else float('nan'),
      'classes': {name: {'boxes': int(t), 'covered': int(h), 'recall': float(h / t) if t else float('nan')}
                  for name, t, h in zip(class_names, totals, hits)},
      'proposals_per_image': float(counts.mean()) if records else 0.0,
      'proposals_min': int(counts.min()),
      'proposals_max': int(counts.max()),
  }


def merge_boxes(box_sets: Sequence[np.ndarray], iou_threshold: float) -> np.ndarray:
  """One image's proposal sets as one [M, 4] array: the first set's boxes first, each later box dropped when it
  repeats an earlier one exactly or, for `iou_threshold` < 1, overlaps an earlier kept box by IoU above it (greedy,
  in set order: the earlier set wins)."""
  if not 0 <= iou_threshold <= 1:
    raise ValueError(f'merge: iou_threshold {iou_threshold} is not in [0, 1].')
  joined = np.concatenate([box_ops.as_boxes(b) for b in box_sets] + [np.zeros([0, 4])])
  _, first = np.unique(joined, axis=0, return_index=True)
  joined = joined[np.sort(first)]
  if iou_threshold < 1 and len(joined):
    joined = joined[np.sort(nms_lib.nms(joined, -np.arange(len(joined), dtype=np.float64), iou_threshold))]
  return joined


def merge(proposal_sets: Sequence[Mapping[str, np.ndarray]], iou_threshold: float) -> Dict[str, np.ndarray]:
  """Several sets of proposals (image id -> boxes) merged image by image (merge_boxes); an image in any set is in the
  result."""
  ids = list(dict.fromkeys(i for s in proposal_sets for i in s))
  return {i: merge_boxes([s[i] for s in proposal_sets if i in s], iou_threshold) for i in ids}
