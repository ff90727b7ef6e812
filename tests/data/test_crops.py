"""The 10- and 144-crop geometry, read back from the pixels of synthetic images whose colours are their coordinates.

The test image's red channel is the source column's centre over the width, green the row's over the height. Resizing
(bilinear, antialiased) keeps such ramps linear away from the borders (to a ~0.1 px jitter), so every crop tells,
pixel by pixel, which source position it shows: its origin, its scale, its mirror, and which square it came from.
"""
import io

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from inception.data import crops, preprocess

PP = ml_collections.ConfigDict(dict(name='central_crop', image_size=64, crop_ratio=0.875))
S = 64
INNER = slice(6, S - 6)  # crop pixels away from the resize's edge effects


def ramp(h: int, w: int) -> np.ndarray:
  y, x = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  return np.stack([(x + 0.5) / w, (y + 0.5) / h, np.full((h, w), 0.5)], -1).astype(np.float32)


def source_coords(crop: np.ndarray, h: int, w: int):
  """Source (row, column) in pixels that each crop pixel shows: [S, S] each."""
  return crop[..., 1] * h - 0.5, crop[..., 0] * w - 0.5


def expected(origin_y, origin_x, step, h, w, new_h, new_w, mirrored):
  """Source coordinates of a crop whose pixel (r, c) samples resized position (origin + step * (r, c) + step / 2 -
  1/2); the resized image is new_h x new_w of a h x w source."""
  r, c = np.meshgrid(np.arange(S), np.arange(S), indexing='ij')
  if mirrored:
    c = S - 1 - c
  ry = origin_y + (r + 0.5) * step - 0.5  # position in the resized image
  rx = origin_x + (c + 0.5) * step - 0.5
  return (ry + 0.5) * h / new_h - 0.5, (rx + 0.5) * w / new_w - 0.5


def resized_shape(h, w, short):
  scale = short / min(h, w)
  return max(int(round(h * scale)), short), max(int(round(w * scale)), short)


def check(crop, want_y, want_x, h, w):
  """The crop shows the wanted source positions: on average to 0.05 px, each pixel to 0.3 px (an antialiased resize
  of a sampled ramp jitters by about 0.1 px; a crop one pixel off, or at another scale, fails)."""
  for got, want in zip(source_coords(crop, h, w), (want_y, want_x)):
    diff = got[INNER, INNER] - want[INNER, INNER]
    assert abs(float(diff.mean())) < 0.05 and float(np.abs(diff).max()) < 0.3, (diff.mean(), np.abs(diff).max())


def test_ten_crops_are_the_corners_and_centre_and_their_mirrors():
  h, w = 120, 200
  out = crops.multi_crop_float(tf.constant(ramp(h, w)), 10, PP).numpy()
  specs = crops.crop_specs(10, PP)
  assert out.shape == (10, S, S, 3) and len(specs) == 10
  short = crops.ten_crop_short_side(PP)
  assert short == 73
  nh, nw = resized_shape(h, w, short)
  origins = {'top_left': (0, 0), 'top_right': (0, nw - S), 'bottom_left': (nh - S, 0),
             'bottom_right': (nh - S, nw - S), 'centre': ((nh - S) // 2, (nw - S) // 2)}
  assert {(s.view, s.mirrored) for s in specs} == {(v, m) for v in origins for m in (False, True)}
  for crop, spec in zip(out, specs):
    check(crop, *expected(*origins[spec.view], 1.0, h, w, nh, nw, spec.mirrored), h, w)


@pytest.mark.parametrize('h,w', [(120, 200), (200, 120)])
def test_144_crops_take_three_squares_along_the_longer_side_at_four_scales(h, w):
  out = crops.multi_crop_float(tf.constant(ramp(h, w)), 144, PP).numpy()
  specs = crops.crop_specs(144, PP)
  assert out.shape == (144, S, S, 3) and len(specs) == 144 and len(set(specs)) == 144
  assert crops.short_sides_144(S) == [73, 82, 91, 101]  # 256, 288, 320, 352 x 64 / 224
  assert sorted({s.short_side for s in specs}) == [73, 82, 91, 101]
  for crop, spec in zip(out, specs):
    nh, nw = resized_shape(h, w, spec.short_side)
    side, slack = min(nh, nw), max(nh, nw) - min(nh, nw)
    offset = {'first': 0, 'middle': slack // 2, 'last': slack}[spec.square]
    sy, sx = (0, offset) if w >= h else (offset, 0)  # the square's origin: along the longer axis only
    if spec.view == 'whole':
      want = expected(sy, sx, side / S, h, w, nh, nw, spec.mirrored)
    else:
      oy, ox = {'top_left': (0, 0), 'top_right': (0, side - S), 'bottom_left': (side - S, 0),
                'bottom_right': (side - S, side - S), 'centre': ((side - S) // 2, (side - S) // 2)}[spec.view]
      want = expected(sy + oy, sx + ox, 1.0, h, w, nh, nw, spec.mirrored)
    check(crop, *want, h, w)


def test_the_three_squares_cover_the_start_middle_and_end_of_the_longer_side():
  """Whole-square views: the first starts at the image's left (top) edge, the last ends at its right (bottom) edge."""
  for h, w, axis in ((120, 200, 0), (200, 120, 1)):
    out = crops.multi_crop_float(tf.constant(ramp(h, w)), 144, PP).numpy()
    specs = crops.crop_specs(144, PP)
    wholes = {s.square: out[i] for i, s in enumerate(specs) if s.view == 'whole' and not s.mirrored
              and s.short_side == 73}
    coord = lambda crop: crop[..., axis]  # red (x) for landscape, green (y) for portrait: along the longer side
    assert coord(wholes['first'])[S // 2, 0] < 0.02 if axis == 0 else coord(wholes['first'])[0, S // 2] < 0.02
    last = coord(wholes['last'])[S // 2, -1] if axis == 0 else coord(wholes['last'])[-1, S // 2]
    assert last > 0.98
    middle = coord(wholes['middle'])
    assert abs(float(middle.mean()) - 0.5) < 0.01


def test_ten_crop_centre_is_the_one_crop_transform_and_crops_are_uint8():
  rng = np.random.RandomState(0)
  buf = io.BytesIO()
  Image.fromarray(rng.randint(0, 255, (90, 130, 3)).astype(np.uint8)).save(buf, format='PNG')
  data = tf.constant(buf.getvalue())
  ten = crops.multi_crop(data, 10, PP).numpy()
  one = crops.multi_crop(data, 1, PP).numpy()
  assert ten.dtype == one.dtype == np.uint8 and ten.shape == (10, S, S, 3) and one.shape == (1, S, S, 3)
  centre = [i for i, s in enumerate(crops.crop_specs(10, PP)) if s.view == 'centre' and not s.mirrored]
  np.testing.assert_array_equal(ten[centre[0]], one[0])
  np.testing.assert_array_equal(one[0], preprocess.central_crop(data, tf.constant([0, 0], tf.int64), PP).numpy())
  np.testing.assert_array_equal(ten[centre[0] + 1], one[0][:, ::-1])  # its mirror


def test_unknown_crop_count_is_refused():
  with pytest.raises(ValueError, match='1, 10 or 144'):
    crops.crop_specs(12, PP)
