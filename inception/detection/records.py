"""The data types detection passes between its stages: one annotated image, and one image's detections.

Boxes are float64 `[N, 4]` arrays of (x0, y0, x1, y1) in continuous pixel coordinates: the image spans [0, width] x
[0, height], and a box covering pixel columns 0..9 (VOC's xmin=1, xmax=10) is x0=0, x1=10, so width x1 - x0 counts
pixels. Proposals caches, region samplers and evaluators all take these records as they are.
"""
import dataclasses
from typing import Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class ImageRecord:
  """One image and its ground truth: `labels[i]` indexes the dataset's class list, `names[i]` is that class's name,
  `difficult[i]` is VOC's flag (such a box is neither required nor penalised by the evaluation)."""
  image_id: str
  path: str
  width: int
  height: int
  boxes: np.ndarray       # float64 [N, 4]
  labels: np.ndarray      # int32 [N]
  names: Tuple[str, ...]  # N class names
  difficult: np.ndarray   # bool [N]

  def __post_init__(self):
    n = len(self.labels)
    if self.boxes.shape != (n, 4) or len(self.names) != n or self.difficult.shape != (n,):
      raise ValueError(f'{self.image_id}: boxes {self.boxes.shape}, labels {n}, names {len(self.names)} and '
                       f'difficult {self.difficult.shape} disagree.')


@dataclasses.dataclass(frozen=True)
class Detections:
  """One image's scored boxes: `labels[i]` indexes the class list (no background), `scores[i]` ranks them."""
  boxes: np.ndarray   # float64 [M, 4]
  scores: np.ndarray  # float64 [M]
  labels: np.ndarray  # int32 [M]

  def __post_init__(self):
    m = len(self.scores)
    if self.boxes.shape != (m, 4) or self.labels.shape != (m,):
      raise ValueError(f'Detections: boxes {self.boxes.shape}, scores {m} and labels {self.labels.shape} disagree.')

  @classmethod
  def empty(cls) -> 'Detections':
    return cls(np.zeros([0, 4]), np.zeros([0]), np.zeros([0], np.int32))
