"""The host half of preprocessing: decode, crop and resize one encoded image into uint8 [S, S, 3]; registered by name.

Every function has the signature `fn(image_bytes, seed, pp) -> tf.uint8 [S, S, 3]`: `seed` is an
int [2] tensor and all randomness comes from stateless ops seeded from it, so an example's
augmentation depends only on its seed (not on thread scheduling or how far a stream was resumed).
`pp` is the stage's flat config: `image_size` plus the stage's own options. The colour distortions and the scaling
to `value_range` happen on the device, batched in the jitted step (inception/augment.py).
"""
import math
from typing import Callable, Sequence

import ml_collections
import tensorflow as tf

from inception.registry import Registry

PREPROCESS = Registry('preprocessing')

INTERPOLATIONS = ('bilinear', 'bicubic', 'area', 'nearest', 'lanczos3', 'lanczos5', 'gaussian',
                  'mitchellcubic')


def decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
  """Decodes JPEG/PNG/GIF/BMP bytes to uint8 [H, W, 3] (grayscale and CMYK become RGB; GIF: frame 0)."""
  image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def decode_and_crop(image_bytes: tf.Tensor, window_fn: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
  """Decodes the crop `window_fn((H, W))` = int32 [y, x, h, w] of an image -> uint8 [h, w, 3].

  JPEGs take the fused path: the shape comes from the header and only the window is decoded.
  """
  def jpeg():
    window = window_fn(tf.image.extract_jpeg_shape(image_bytes)[:2])
    return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

  def other():
    image = decode_rgb(image_bytes)
    window = window_fn(tf.shape(image)[:2])
    return tf.slice(image, tf.stack([window[0], window[1], 0]), tf.stack([window[2], window[3], 3]))

  image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
  image.set_shape([None, None, 3])
  return image


CROP_SAMPLERS = ('uniform_area', 'tf')


def _uniform_area_window(shape: tf.Tensor, seed: tf.Tensor, area_range: Sequence[float],
                         aspect_range: Sequence[float], max_attempts: int):
  """The paper's crop: area uniform in `area_range` of the image, aspect w/h log-uniform in `aspect_range`, position
  uniform. Each of `max_attempts` draws takes an area, then an aspect log-uniform over the part of `aspect_range` at
  which that area fits inside the image; an area that fits at no allowed aspect (above ~89% of a 3:2 image) is
  rejected and the next draw taken. So the area is exactly uniform up to the largest that fits, and the aspect never
  leaves its range. Returns (int32 [y, x, h, w], found: bool)."""
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  draws = tf.random.stateless_uniform([int(max_attempts), 4], seed)  # [n, 4] in [0, 1)
  lo, hi = float(area_range[0]), float(area_range[1])
  fraction = lo + (hi - lo) * draws[:, 0]  # [n]
  # A crop of area a*H*W and aspect r fits iff a*W/H <= r <= W/(a*H).
  log_lo = tf.maximum(math.log(float(aspect_range[0])), tf.math.log(fraction * w / h))
  log_hi = tf.minimum(math.log(float(aspect_range[1])), tf.math.log(w / (fraction * h)))
  fits = log_lo <= log_hi
  aspect = tf.exp(log_lo + (log_hi - log_lo) * draws[:, 1])
  area = fraction * h * w
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  crop_w = tf.clip_by_value(tf.round(tf.sqrt(area[first] * aspect[first])), 1.0, w)
  crop_h = tf.clip_by_value(tf.round(tf.sqrt(area[first] / aspect[first])), 1.0, h)
  y = tf.floor(draws[first, 2] * (h - crop_h + 1))
  x = tf.floor(draws[first, 3] * (w - crop_w + 1))
  return tf.cast(tf.stack([y, x, crop_h, crop_w]), tf.int32), tf.reduce_any(fits)


def _tf_window(shape: tf.Tensor, seed: tf.Tensor, area_range: Sequence[float], aspect_range: Sequence[float],
               max_attempts: int):
  """TF's sample_distorted_bounding_box (TF-slim's Inception crop; it draws the crop height, not the area, uniformly).
  Returns (int32 [y, x, h, w], found: bool)."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.concat([shape, [3]], 0),
      bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),  # [1, 1, 4]: the whole image
      seed=seed,
      min_object_covered=float(area_range[0]),
      aspect_ratio_range=[float(a) for a in aspect_range],
      area_range=[float(a) for a in area_range],
      max_attempts=int(max_attempts),
      use_image_if_no_bounding_boxes=True)
  found = tf.logical_not(tf.logical_and(tf.equal(size[0], shape[0]), tf.equal(size[1], shape[1])))
  return tf.stack([begin[0], begin[1], size[0], size[1]]), found


def sample_crop_window(shape: tf.Tensor, seed: tf.Tensor, *, area_range: Sequence[float],
                       aspect_range: Sequence[float],
                       max_attempts: int, sampler: str) -> tf.Tensor:
  """Samples the Inception crop: int32 [4] = [y, x, h, w] inside an image of `shape` = (H, W).

  The crop covers `area_range` of the image area with w/h in `aspect_range`, drawn by `sampler`: 'uniform_area' (the
  paper's wording: area uniform, aspect log-uniform) or 'tf' (TF's sample_distorted_bounding_box, as TF-slim). When
  the sampler gives up it returns the whole image; if that image's aspect is out of range the crop shrinks to a
  centred one with the aspect clamped into range, so the aspect bounds always hold (up to 1-px rounding).
  """
  if sampler not in CROP_SAMPLERS:
    raise ValueError(f'crop_sampler={sampler!r}: use one of {", ".join(CROP_SAMPLERS)}.')
  shape = tf.cast(shape[:2], tf.int32)
  window = _uniform_area_window if sampler == 'uniform_area' else _tf_window
  sampled, found = window(shape, seed, area_range, aspect_range, max_attempts)

  height, width = shape[0], shape[1]
  h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  lo, hi = float(aspect_range[0]), float(aspect_range[1])
  crop_w = tf.where(w > hi * h, tf.round(h * hi), w)
  crop_h = tf.where(w < lo * h, tf.round(w / lo), h)
  crop_w = tf.clip_by_value(tf.cast(crop_w, tf.int32), 1, width)
  crop_h = tf.clip_by_value(tf.cast(crop_h, tf.int32), 1, height)
  clamped = tf.stack([(height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w])

  return tf.where(found, sampled, clamped)


def to_uint8(image: tf.Tensor) -> tf.Tensor:
  """Float pixels on the 0..255 scale, rounded and clipped -> uint8."""
  return tf.cast(tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0.0, 255.0), tf.uint8)


def _random_resize(image: tf.Tensor, size: int, seed: tf.Tensor,
                   interpolations: Sequence[str]) -> tf.Tensor:
  """Resizes uint8 [h, w, 3] to uint8 [size, size, 3] with a randomly chosen method."""
  for method in interpolations:
    if method not in INTERPOLATIONS:
      raise ValueError(f'Unknown interpolation {method!r}; known: {INTERPOLATIONS}.')

  def resize_with(method):
    return lambda: to_uint8(tf.image.resize(image, [size, size], method=method))

  branches = [resize_with(m) for m in interpolations]
  if len(branches) == 1:
    return branches[0]()
  index = tf.random.stateless_uniform([], seed, 0, len(branches), dtype=tf.int32)
  return tf.switch_case(index, branches)


@PREPROCESS.register('inception_crop')
def inception_crop(image_bytes: tf.Tensor, seed: tf.Tensor,
                   pp: ml_collections.ConfigDict) -> tf.Tensor:
  """The GoogLeNet training transform's host part: random-area/aspect crop, resize, flip (the colour distortions
  follow on the device: inception/augment.py).

  Reads pp.image_size, pp.area_range, pp.aspect_range, pp.crop_sampler, pp.interpolations, pp.flip, pp.max_attempts.
  """
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)  # [3, 2]

  def window_fn(shape):
    return sample_crop_window(
        shape, seeds[0], area_range=pp.area_range, aspect_range=pp.aspect_range,
        max_attempts=pp.max_attempts, sampler=pp.crop_sampler)

  image = decode_and_crop(image_bytes, window_fn)  # uint8 [h, w, 3]
  size = int(pp.image_size)
  image = _random_resize(image, size, seeds[1], pp.interpolations)  # uint8 [S, S, 3]
  if pp.flip:
    image = tf.image.stateless_random_flip_left_right(image, seeds[2])
  return tf.ensure_shape(image, [size, size, 3])


@PREPROCESS.register('central_crop')
def central_crop(image_bytes: tf.Tensor, seed: tf.Tensor,
                 pp: ml_collections.ConfigDict) -> tf.Tensor:
  """The eval transform: shorter side to round(S / crop_ratio), central S x S crop; `seed` unused.

  Reads pp.image_size, pp.crop_ratio.
  """
  del seed  # Deterministic.
  size = int(pp.image_size)
  ratio = float(pp.crop_ratio)
  if not 0.0 < ratio <= 1.0:
    raise ValueError(f'crop_ratio must be in (0, 1], got {ratio}.')
  short_target = int(round(size / ratio))
  image = decode_rgb(image_bytes)
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = short_target / tf.reduce_min(hw)
  # max(): keep the shorter side at exactly short_target despite float rounding.
  new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), short_target)
  image = tf.image.resize(image, new_hw, method='bilinear', antialias=True)  # float32, 0..255
  top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
  image = to_uint8(tf.slice(image, tf.stack([top, left, 0]), [size, size, 3]))
  return tf.ensure_shape(image, [size, size, 3])

from inception.data import box_transforms  # noqa: E402,F401  (registers the box transforms)
