"""R-CNN's fine-tuning regions for one image: which boxes the classifier learns from, and with which label.

A proposal overlapping a ground-truth box by IoU >= `foreground_iou` takes the class of the box it overlaps most; one
whose best IoU is below `background_iou` is background (label C, after the C object classes); the ground-truth boxes
themselves are foreground too (R-CNN adds them). Foreground is capped per image (ground-truth boxes first, then
proposals drawn at random), and background is drawn to make `foreground_share` of the image's regions foreground, so
the regions as a whole are a quarter foreground, as R-CNN's batches of 32 + 96.
"""
import dataclasses
from typing import Tuple

import numpy as np

from inception.detection import boxes as box_ops
from inception.detection.records import ImageRecord


@dataclasses.dataclass(frozen=True)
class SamplingRule:
  """The config's `regions` keys that choose regions (see configs/detection.py)."""
  foreground_iou: float = 0.5
  background_iou: float = 0.5
  foreground_share: float = 0.25
  foreground_per_image: int = 0

  def __post_init__(self):
    if not 0 < self.foreground_iou <= 1 or not 0 <= self.background_iou <= self.foreground_iou:
      raise ValueError(f'regions: need 0 <= background_iou ({self.background_iou}) <= foreground_iou '
                       f'({self.foreground_iou}) <= 1.')
    if not 0 < self.foreground_share <= 1:
      raise ValueError(f'regions.foreground_share={self.foreground_share}: expected a fraction in (0, 1].')
    if self.foreground_per_image < 0:
      raise ValueError(f'regions.foreground_per_image={self.foreground_per_image}: expected >= 0 (0 = all).')

  @classmethod
  def from_config(cls, regions) -> 'SamplingRule':
    return cls(float(regions.foreground_iou), float(regions.background_iou), float(regions.foreground_share),
               int(regions.foreground_per_image))

  def background_for(self, foreground: int) -> int:
    """How many background regions go with `foreground` foreground ones."""
    return int(round(foreground * (1 - self.foreground_share) / self.foreground_share))


def label_proposals(record: ImageRecord, proposals: np.ndarray, num_classes: int,
                    rule: SamplingRule) -> Tuple[np.ndarray, np.ndarray]:
  """Per proposal, (its label [N]: a class index, `num_classes` for background, -1 for neither; its best IoU with a
  ground-truth box [N], 0 in an image without boxes). Difficult boxes count like the others."""
  proposals = box_ops.as_boxes(proposals)
  if not len(record.boxes):
    return np.full(len(proposals), num_classes, np.int64), np.zeros(len(proposals))
  iou = box_ops.iou_matrix(proposals, record.boxes)  # [N, G]
  best = iou.max(axis=1)
  labels = np.where(best >= rule.foreground_iou, record.labels[iou.argmax(axis=1)], -1).astype(np.int64)
  labels[best < rule.background_iou] = num_classes
  return labels, best


def sample(record: ImageRecord, proposals: np.ndarray, num_classes: int, rule: SamplingRule, rng: np.random.Generator,
           background_count: int = -1) -> Tuple[np.ndarray, np.ndarray]:
  """One image's regions: (boxes [M, 4], labels [M] in 0..C, C = background), foreground first.

  `background_count` >= 0 overrides the rule's share (an image without ground truth has no foreground to take it from;
  regions.py gives it the split's mean)."""
  proposals = box_ops.as_boxes(proposals)
  labels, _ = label_proposals(record, proposals, num_classes, rule)
  fg_boxes = [record.boxes]
  fg_labels = [record.labels.astype(np.int64)]
  positive = np.flatnonzero((labels >= 0) & (labels < num_classes))
  room = (rule.foreground_per_image - len(record.boxes)) if rule.foreground_per_image else len(positive)
  if room > 0 and len(positive):
    chosen = np.sort(rng.permutation(positive)[:room])
    fg_boxes.append(proposals[chosen])
    fg_labels.append(labels[chosen])
  fg_boxes, fg_labels = np.concatenate(fg_boxes), np.concatenate(fg_labels)
  if rule.foreground_per_image:
    fg_boxes, fg_labels = fg_boxes[:rule.foreground_per_image], fg_labels[:rule.foreground_per_image]
  wanted = rule.background_for(len(fg_labels)) if background_count < 0 else background_count
  negative = np.flatnonzero(labels == num_classes)
  bg = np.sort(rng.permutation(negative)[:wanted])
  out_boxes = np.concatenate([fg_boxes, proposals[bg]])
  out_labels = np.concatenate([fg_labels, np.full(len(bg), num_classes, np.int64)])
  return out_boxes, out_labels
