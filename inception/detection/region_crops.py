"""Regions cut out of an image as the network's input: R-CNN's warp with context (warp.py's geometry) in pixels.

Both the fine-tuning regions (regions.py) and test-time scoring (scoring.py) cut regions here, so the classifier sees
at test time exactly what it learnt from.
"""
import cv2
import numpy as np

from inception.detection import warp

R_CNN_INPUT = 227  # R-CNN's 16 px of context are at its 227 px input; other sizes keep the same share
FILLS = ('mean', 'edge')


def context_padding(pixels_at_227: float, size: int) -> float:
  """The config's `regions.context_padding` (pixels at R-CNN's 227 px input) at an input of `size` pixels."""
  return float(pixels_at_227) * size / R_CNN_INPUT


def crop(image: np.ndarray, boxes, size: int, padding: float, fill: str = 'mean') -> np.ndarray:
  """uint8 [N, size, size, 3]: each box (image pixels, records.py's continuous coordinates) warped to size x size with
  `padding` pixels of context around it, bilinearly; context outside the image takes the image's mean colour
  ('mean') or its border pixels ('edge')."""
  if fill not in FILLS:
    raise ValueError(f'regions.fill={fill!r}: expected one of {", ".join(FILLS)}.')
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  out = np.empty([len(boxes), size, size, 3], np.uint8)
  if not len(boxes):
    return out
  scale, offset = warp.transforms(boxes, size, padding)
  border = cv2.BORDER_CONSTANT if fill == 'mean' else cv2.BORDER_REPLICATE
  value = tuple(float(v) for v in image.reshape(-1, 3).mean(axis=0)) if fill == 'mean' else 0
  for i, ((sx, sy), (ox, oy)) in enumerate(zip(scale, offset)):
    # warp.py maps continuous coordinates (pixel k spans [k, k + 1]); OpenCV's put pixel centres on integers.
    matrix = np.array([[sx, 0, ox + 0.5 * sx - 0.5], [0, sy, oy + 0.5 * sy - 0.5]])
    out[i] = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=value)
  return out
