"""Tests for inception/detection/warp.py: R-CNN's warp with context padding, as geometry."""
import numpy as np
import pytest

from inception.detection import warp


def _apply(scale, offset, boxes):
  return np.concatenate([boxes[:, :2] * scale + offset, boxes[:, 2:] * scale + offset], axis=1)


def test_the_box_fills_the_centre_and_its_context_the_input():
  boxes = np.array([[100, 50, 200, 250], [10.5, 20, 11.5, 60]])  # wide and narrow, tall
  size, padding = 227, 16
  scale, offset = warp.transforms(boxes, size, padding)
  np.testing.assert_allclose(_apply(scale, offset, boxes), [[16, 16, 211, 211]] * 2)
  context = warp.context_boxes(boxes, size, padding)
  np.testing.assert_allclose(_apply(scale, offset, context), [[0, 0, 227, 227]] * 2, atol=1e-12)
  # The context box: the same centre, each side grown by size / (size - 2 padding), 16 input pixels of context.
  np.testing.assert_allclose((context[:, :2] + context[:, 2:]) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2)
  np.testing.assert_allclose(context[:, 2:] - context[:, :2], (boxes[:, 2:] - boxes[:, :2]) * 227 / 195)
  np.testing.assert_allclose((boxes[:, :2] - context[:, :2]) * scale, 16)
  np.testing.assert_allclose(warp.context_boxes(boxes, 224, 0), boxes)


def test_visible_window_inside_and_at_the_image_corner():
  size, padding = 100, 10
  inside, placed = warp.visible_windows([[40, 40, 60, 60]], 200, 200, size, padding)
  np.testing.assert_allclose(inside, [[37.5, 37.5, 62.5, 62.5]])  # 20 px box, 80 px at the input: 2.5 px of context
  np.testing.assert_allclose(placed, [[0, 0, 100, 100]])
  window, placed = warp.visible_windows([[0, 0, 20, 40]], 30, 60, size, padding)
  # Left of and above the image there is nothing: the image starts at the box's edge, `padding` into the input.
  np.testing.assert_allclose(window, [[0, 0, 22.5, 45]])
  np.testing.assert_allclose(placed, [[10, 10, 100, 100]])


def test_refusals():
  with pytest.raises(ValueError, match='leaves no room'):
    warp.transforms([[0, 0, 10, 10]], 32, 16)
  with pytest.raises(ValueError, match='zero width or height'):
    warp.transforms([[0, 0, 10, 10], [5, 5, 5, 9]], 227, 16)
