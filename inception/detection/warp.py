"""Where a region goes in the network's input: R-CNN's anisotropic warp with context padding, as geometry only.

R-CNN warps every region to the input size after enlarging it so that, at the input size, `padding` pixels of image
context surround the original box (16 at 227 px). Here that is a per-axis affine map from image pixels to input
pixels (out = scale * x + offset, the form of `jax.image.scale_and_translate`), and the part of the input that the image
covers; the rest, where the context leaves the image, takes the fill (R-CNN: the mean image). R-CNN's MATLAB crop
rounds to whole pixels and adds 1 to widths; this is the same map in continuous coordinates (records.py).
"""
from typing import Tuple

import numpy as np

from inception.detection import boxes as box_ops


def _check(boxes: np.ndarray, size: int, padding: int) -> None:
  if not 0 <= 2 * padding < size:
    raise ValueError(f'context padding {padding} leaves no room for the box in a {size} px input.')
  thin = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
  if thin.any():
    raise ValueError(f'cannot warp boxes of zero width or height: {boxes[thin][:3].tolist()}.')


def transforms(boxes, size: int, padding: int) -> Tuple[np.ndarray, np.ndarray]:
  """Per box, (scale [N, 2], offset [N, 2]) in (x, y) order mapping image pixels to the `size` x `size` input so that
  the box lands on [padding, size - padding] in both axes."""
  b = box_ops.as_boxes(boxes)
  _check(b, size, padding)
  scale = (size - 2 * padding) / np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
  offset = padding - scale * b[:, :2]
  return scale, offset


def context_boxes(boxes, size: int, padding: int) -> np.ndarray:
  """[N, 4] image regions (may leave the image) that fill the whole input: each box grown about its centre by
  size / (size - 2 * padding)."""
  scale, offset = transforms(boxes, size, padding)
  lo = (0 - offset) / scale
  hi = (size - offset) / scale
  return np.concatenate([lo, hi], axis=1)


def visible_windows(boxes, width: float, height: float, size: int, padding: int) -> Tuple[np.ndarray, np.ndarray]:
  """Per box, (the part of its context box inside the width x height image [N, 4], where that part lands in the
  input [N, 4]); outside the second rectangle the input holds the fill."""
  scale, offset = transforms(boxes, size, padding)
  window = box_ops.clip(context_boxes(boxes, size, padding), width, height)
  placed = np.concatenate([window[:, :2] * scale + offset, window[:, 2:] * scale + offset], axis=1)
  return window, placed
