"""Host transforms that move boxes with the pixels, for box sources (data/box_source.py); registered in PREPROCESS.

Each has the signature of the other transforms plus `boxes`: `fn(image_bytes, seed, pp, boxes=None)`. Without boxes it
returns the uint8 [S, S, 3] image, so it serves any caller that only wants pixels (the decodability probe, prediction);
with boxes (float32 [G, 4], image-normalised x0, y0, x1, y1, zero rows as padding) it returns (image, boxes). The whole
image is resized to the square, its aspect not kept, so normalised coordinates are the same before and after: only
flips change them. Padding rows stay zero.
"""
import ml_collections
import tensorflow as tf

from inception.data.preprocess import PREPROCESS, decode_rgb, to_uint8


def _flip_boxes(boxes: tf.Tensor, flip: tf.Tensor, low: int, high: int) -> tf.Tensor:
  """`boxes` mirrored along one axis (coordinates `low` and `high`: 0, 2 for x; 1, 3 for y) where `flip`, padding rows
  kept as zeros."""
  real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
  columns = tf.unstack(boxes, axis=1)
  columns[low], columns[high] = 1.0 - columns[high], 1.0 - columns[low]
  mirrored = tf.stack(columns, axis=1)
  return tf.where(flip & real[:, None], mirrored, boxes)


@PREPROCESS.register('resize_boxes')
def resize_boxes(image_bytes: tf.Tensor, seed: tf.Tensor, pp: ml_collections.ConfigDict, boxes=None):
  """The whole image resized to pp.image_size square (bilinear, antialiased); then, with pp.flip, a left-right mirror
  and with pp.flip_vertical an up-down one, each with probability 1/2 from `seed` (both off: deterministic, the eval
  transform). Reads pp.image_size, pp.flip and pp.flip_vertical (absent = False)."""
  size = int(pp.image_size)
  image = decode_rgb(image_bytes)
  image = to_uint8(tf.image.resize(image, [size, size], method='bilinear', antialias=True))
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)  # [2, 2]
  for key, seed_row, axis, (low, high) in (('flip', 0, 1, (0, 2)), ('flip_vertical', 1, 0, (1, 3))):
    if not pp.get(key, False):
      continue
    flip = tf.random.stateless_uniform([], seeds[seed_row]) < 0.5
    image = tf.cond(flip, lambda image=image, axis=axis: tf.reverse(image, [axis]), lambda image=image: image)
    if boxes is not None:
      boxes = _flip_boxes(boxes, flip, low, high)
  image = tf.ensure_shape(image, [size, size, 3])
  return image if boxes is None else (image, boxes)


resize_boxes.moves_boxes = True  # data/pipeline.py: a box source's transform must have it
