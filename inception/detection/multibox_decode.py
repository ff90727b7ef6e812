"""MultiBox's predictions as boxes: the offsets applied to the priors, and an image's best boxes in its own pixels.

Prediction i of an image is the box prior_i + offset_scale * offset_i in normalised coordinates (multibox_loss.py
trains it so), its corners put in order (a prediction whose x1 came out left of its x0 is the same box) and clipped to
the image [0, 1]; multiplied by the image's width and height it is a box in that image's continuous pixels
(records.py), whatever size the network saw it at (the image is resized to the input square, so normalised
coordinates are the same in both). Its confidence is sigmoid(logit): the boxes are ranked by it, best first.
"""
from typing import Any

import numpy as np

from inception.detection import boxes as box_ops


def normalised_boxes(priors, offsets, offset_scale: float, xp: Any = np):
  """Predicted boxes [..., K, 4] in [0, 1]: priors [K, 4] + offset_scale * offsets [..., K, 4], corners ordered and
  clipped. `xp` is numpy, or jax.numpy inside a jitted step."""
  raw = priors + offset_scale * offsets
  low = xp.minimum(raw[..., :2], raw[..., 2:])
  high = xp.maximum(raw[..., :2], raw[..., 2:])
  return xp.clip(xp.concatenate([low, high], axis=-1), 0.0, 1.0)


def image_boxes(outputs, priors, offset_scale: float, width: float, height: float, top_k: int) -> np.ndarray:
  """One image's best boxes: outputs [K, 5] (4 offsets, 1 confidence logit) -> float64 [<= top_k, 4] in the image's
  pixels, best confidence first (equal ones in prior order). Boxes of zero area after clipping (a prediction wholly
  outside the image) are left out."""
  if top_k < 1:
    raise ValueError(f'top_k={top_k}: ask for at least 1 box.')
  outputs = np.asarray(outputs, np.float64)
  priors = np.asarray(priors, np.float64)
  if outputs.ndim != 2 or outputs.shape[1] != 5 or priors.shape != (outputs.shape[0], 4):
    raise ValueError(f'image_boxes: outputs {outputs.shape} and priors {priors.shape}; expected [K, 5] and [K, 4].')
  boxes = normalised_boxes(priors, outputs[:, :4], offset_scale) * np.array([width, height, width, height],
                                                                             np.float64)
  order = np.argsort(-outputs[:, 4], kind='stable')
  order = order[box_ops.area(boxes[order]) > 0]
  return boxes[order[:top_k]]
