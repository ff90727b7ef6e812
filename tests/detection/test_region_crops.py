"""Tests for inception/detection/region_crops.py: the box lands where warp.py says, context fills as configured."""
import numpy as np
import pytest

from inception.detection import region_crops


def _image():
  """A 60x40 image: black, with a white rectangle over pixel columns 20..39 and rows 10..29."""
  image = np.zeros([40, 60, 3], np.uint8)
  image[10:30, 20:40] = 255
  return image


def test_the_box_fills_the_input_inside_its_context_padding():
  crop = region_crops.crop(_image(), [[20, 10, 40, 30]], size=32, padding=4.0)[0]
  assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
  assert (crop[5:27, 5:27] == 255).all()  # the box: input pixels 4..27, less the bilinear edge
  assert (crop[:3] < 10).all() and (crop[:, 29:] < 10).all()  # the context: black image around it


def test_context_outside_the_image_takes_the_mean_colour_or_the_edge():
  image = _image()
  mean = image.reshape(-1, 3).mean(axis=0)
  crop = region_crops.crop(image, [[0, 0, 60, 40]], size=32, padding=8.0, fill='mean')[0]
  np.testing.assert_allclose(crop[0, 0], mean, atol=1)
  edge = region_crops.crop(image, [[0, 0, 60, 40]], size=32, padding=8.0, fill='edge')[0]
  assert (edge[0, 0] == 0).all()
  with pytest.raises(ValueError, match='regions.fill'):
    region_crops.crop(image, [[0, 0, 60, 40]], size=32, padding=8.0, fill='zero')


def test_padding_scales_from_r_cnns_227_pixels():
  assert region_crops.context_padding(16, 227) == 16
  assert region_crops.context_padding(16, 64) == pytest.approx(4.511, abs=1e-3)
  assert region_crops.crop(_image(), np.zeros([0, 4]), 16, 2.0).shape == (0, 16, 16, 3)
