"""The paper's test-time crops of one image (section 7 of "Going deeper with convolutions"), on the host, in TF.

- 1 crop: the run's eval transform (the central crop, preprocess.central_crop).
- 10 crops: the shorter side resized as for 1 crop; the 4 corner crops and the centre crop at the model's input size
  S, and the mirror of each.
- 144 crops: the shorter side resized to 256, 288, 320 and 352 (x S / 224); the left, centre and right squares of
  side = the shorter side (top, centre and bottom for portrait images); from each square its 4 corner crops, its
  centre crop and the whole square resized to S; and the mirror of each: 4 x 3 x 6 x 2 = 144.

`crop_specs(crops)` names every crop in output order (tests read the geometry back from pixels). The crops come out
as uint8 [K, S, S, 3], in the same value scale as the 1-crop transform; the device scales them (augment.eval_images).
"""
from typing import List, NamedTuple

import ml_collections
import tensorflow as tf

from inception.data import preprocess

CROP_COUNTS = (1, 10, 144)
SCALES_144 = (256, 288, 320, 352)  # shorter side at 224 px input; scaled by S / 224 for other input sizes
VIEWS = ('top_left', 'top_right', 'bottom_left', 'bottom_right', 'centre')  # the 5 crops of 10-crop, in order
SQUARES = ('first', 'middle', 'last')  # left / centre / right (landscape) or top / centre / bottom (portrait)


class CropSpec(NamedTuple):
  """Where one crop comes from: the shorter side it was resized to (None: the 1-crop transform), the square (144
  crops), the view ('whole' = the square resized to S) and whether it is mirrored."""
  short_side: int | None
  square: str | None
  view: str
  mirrored: bool


def check_crops(crops: int) -> None:
  if crops not in CROP_COUNTS:
    raise ValueError(f'crops={crops}: the paper evaluates 1, 10 or 144 crops per image; use one of those.')


def short_sides_144(size: int) -> List[int]:
  """The 144-crop protocol's four shorter sides for input size `size`."""
  return [int(round(s * size / 224)) for s in SCALES_144]


def ten_crop_short_side(pp: ml_collections.ConfigDict) -> int:
  """The shorter side of 10-crop: the 1-crop transform's, round(S / crop_ratio)."""
  return int(round(int(pp.image_size) / float(pp.crop_ratio)))


def crop_specs(crops: int, pp: ml_collections.ConfigDict) -> List[CropSpec]:
  """The crops of `crops`-crop evaluation in output order; `pp` is the flat eval pp (image_size, crop_ratio)."""
  check_crops(crops)
  if crops == 1:
    return [CropSpec(None, None, 'centre', False)]
  if crops == 10:
    side = ten_crop_short_side(pp)
    return [CropSpec(side, None, v, m) for v in VIEWS for m in (False, True)]
  return [CropSpec(side, q, v, m) for side in short_sides_144(int(pp.image_size)) for q in SQUARES
          for v in VIEWS + ('whole',) for m in (False, True)]


def resize_shorter(image: tf.Tensor, short_side: int) -> tf.Tensor:
  """[H, W, 3] -> float32 [H', W', 3] with min(H', W') = short_side, bilinear with antialiasing (as central_crop)."""
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  new_hw = tf.maximum(tf.cast(tf.round(hw * short_side / tf.reduce_min(hw)), tf.int32), short_side)
  return tf.image.resize(image, new_hw, method='bilinear', antialias=True)


def _views(image: tf.Tensor, size: int) -> List[tf.Tensor]:
  """The 4 corner crops and the centre crop (VIEWS order) of side `size` from float [H, W, 3]."""
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  origins = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), ((h - size) // 2, (w - size) // 2)]
  return [tf.slice(image, tf.stack([y, x, 0]), [size, size, 3]) for y, x in origins]


def _with_mirrors(views: List[tf.Tensor]) -> List[tf.Tensor]:
  return [v for view in views for v in (view, tf.reverse(view, axis=[1]))]


def _squares(image: tf.Tensor) -> List[tf.Tensor]:
  """The first, middle and last squares of side min(H, W) along the longer axis of float [H, W, 3]."""
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  side = tf.minimum(h, w)
  slack = tf.maximum(h, w) - side
  landscape = w >= h
  out = []
  for offset in (0, slack // 2, slack):
    y, x = tf.where(landscape, 0, offset), tf.where(landscape, offset, 0)
    out.append(tf.slice(image, tf.stack([y, x, 0]), tf.stack([side, side, 3])))
  return out


def multi_crop_float(image: tf.Tensor, crops: int, pp: ml_collections.ConfigDict) -> tf.Tensor:
  """float32 [K, S, S, 3] crops (crop_specs order) of a decoded image [H, W, 3], for 10 or 144 crops."""
  check_crops(crops)
  if crops == 1:
    raise ValueError('1 crop is the run\'s eval transform (preprocess.central_crop), not a multi-crop.')
  size = int(pp.image_size)
  image = tf.cast(image, tf.float32)
  if crops == 10:
    return tf.stack(_with_mirrors(_views(resize_shorter(image, ten_crop_short_side(pp)), size)))
  out = []
  for side in short_sides_144(size):
    for square in _squares(resize_shorter(image, side)):
      whole = tf.image.resize(square, [size, size], method='bilinear', antialias=True)
      out.extend(_with_mirrors(_views(square, size) + [whole]))
  return tf.stack(out)


def multi_crop(image_bytes: tf.Tensor, crops: int, pp: ml_collections.ConfigDict) -> tf.Tensor:
  """Encoded image -> uint8 [K, S, S, 3]: the run's eval transform for 1 crop, else the paper's 10 or 144 crops."""
  check_crops(crops)
  if crops == 1:
    return preprocess.PREPROCESS.get(pp.name)(image_bytes, tf.constant([0, 0], tf.int64), pp)[None]
  size = int(pp.image_size)
  out = preprocess.to_uint8(multi_crop_float(preprocess.decode_rgb(image_bytes), crops, pp))
  return tf.ensure_shape(out, [crops, size, size, 3])
