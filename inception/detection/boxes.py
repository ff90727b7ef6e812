"""Box geometry on `[N, 4]` arrays of (x0, y0, x1, y1) continuous pixel coordinates (records.py): area, clipping, IoU.

Width is x1 - x0 (no +1): on boxes converted from VOC's inclusive pixel indices this gives exactly the IoU of the VOC
and ILSVRC devkits, which add 1 to their widths, and that of pycocotools, which does not.
"""
import numpy as np


def as_boxes(boxes) -> np.ndarray:
  """`boxes` as a float64 [N, 4] array (a single box becomes [1, 4])."""
  boxes = np.asarray(boxes, np.float64)
  return boxes.reshape(-1, 4)


def area(boxes) -> np.ndarray:
  """[N] areas; a box with x1 <= x0 or y1 <= y0 has area 0."""
  b = as_boxes(boxes)
  return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def clip(boxes, width: float, height: float) -> np.ndarray:
  """Boxes cut to the image [0, width] x [0, height] (a box wholly outside becomes one of zero area)."""
  b = as_boxes(boxes).copy()
  b[:, 0::2] = np.clip(b[:, 0::2], 0, width)
  b[:, 1::2] = np.clip(b[:, 1::2], 0, height)
  return b


def intersection(a, b) -> np.ndarray:
  """[N, M] areas of the intersections of every box of `a` with every box of `b`."""
  a, b = as_boxes(a), as_boxes(b)
  w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
  h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
  return np.clip(w, 0, None) * np.clip(h, 0, None)


def iou_matrix(a, b) -> np.ndarray:
  """[N, M] intersection over union of every box of `a` with every box of `b`; 0 where both have zero area."""
  inter = intersection(a, b)
  union = area(a)[:, None] + area(b)[None, :] - inter
  return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
