"""Tests for inception/data/preprocess.py (the host half): crop-window bounds, decoding, determinism, uint8 outputs.
The on-device colour distortions and scaling: tests/test_augment.py."""
import io
import pathlib

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from inception.data import preprocess
from tests.data.bad_images import UNDECODABLE, UNUSUAL, make_bad_folder

REPO = pathlib.Path(__file__).resolve().parents[2]
CALTECH_JPEG = REPO / 'data' / 'caltech101-mini' / 'Leopards' / 'image_0001.jpg'
AREA, ASPECT = (0.08, 1.0), (3 / 4, 4 / 3)


def train_pp(**overrides) -> ml_collections.ConfigDict:
  """A flat 'inception_crop' config (shared keys + stage keys) at a small image size."""
  pp = dict(name='inception_crop', image_size=24, area_range=AREA,
            aspect_range=ASPECT, flip=True, interpolations=('bilinear', 'bicubic', 'area', 'nearest'),
            max_attempts=10, crop_sampler='uniform_area')
  pp.update(overrides)
  return ml_collections.ConfigDict(pp)


def eval_pp(**overrides) -> ml_collections.ConfigDict:
  """A flat 'central_crop' config at a small image size."""
  pp = dict(name='central_crop', image_size=24, crop_ratio=0.875)
  pp.update(overrides)
  return ml_collections.ConfigDict(pp)


def random_pixels(shape, seed=0) -> np.ndarray:
  """uint8 noise of `shape`."""
  return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def seed(i: int) -> tf.Tensor:
  """The int64 [2] seed of example i."""
  return tf.constant([0, i], tf.int64)


def caltech_bytes() -> bytes:
  """A real Caltech 101 JPEG."""
  return CALTECH_JPEG.read_bytes()


def wide_bytes() -> bytes:
  """A 3:1 JPEG (96 x 288)."""
  return tf.io.encode_jpeg(random_pixels([96, 288, 3])).numpy()


def cmyk_bytes() -> bytes:
  """A CMYK JPEG written with PIL (skips the test when PIL is missing)."""
  pil = pytest.importorskip('PIL.Image', reason='PIL (Pillow) is needed to write a CMYK JPEG.')
  buffer = io.BytesIO()
  pil.fromarray(random_pixels([30, 40, 4]), 'CMYK').save(buffer, 'JPEG')
  return buffer.getvalue()


def pil_bytes(fmt: str) -> bytes:
  """An RGB image in a PIL-only format (GIF, BMP)."""
  pil = pytest.importorskip('PIL.Image', reason=f'PIL (Pillow) is needed to write a {fmt}.')
  buffer = io.BytesIO()
  pil.fromarray(random_pixels([30, 40, 3]), 'RGB').save(buffer, fmt)
  return buffer.getvalue()


@tf.function
def sample_windows(shape, seeds, area_range, aspect_range, sampler='uniform_area'):
  """Crop windows [N, 4] = (y, x, h, w) for seeds [N, 2]."""
  return tf.map_fn(
      lambda s: preprocess.sample_crop_window(shape, s, area_range=area_range,
                                              aspect_range=aspect_range, max_attempts=10, sampler=sampler),
      seeds, fn_output_signature=tf.int32)


def crop_areas(shape, sampler, n=4000):
  """Area fractions of `n` crop windows of an image of `shape` (H, W), seeds (0, i)."""
  seeds = tf.stack([tf.zeros(n, tf.int64), tf.range(n, dtype=tf.int64)], axis=1)
  _, _, h, w = sample_windows(tf.constant(shape), seeds, AREA, ASPECT, sampler).numpy().T
  return h * w / (shape[0] * shape[1]), w / h


@pytest.mark.parametrize('shape,largest', [((256, 256), 1.0), ((200, 300), 0.889)])
def test_crop_area_is_uniform_as_the_paper_says(shape, largest):
  """The paper: patches whose size is distributed evenly between 8% and 100% of the image area. On a square image the
  quartiles are uniform's; on 3:2 the area is uniform up to the largest that fits at aspect <= 4/3 (1.333 / 1.5)."""
  area, aspect = crop_areas(shape, 'uniform_area')
  expected = AREA[0] + (largest - AREA[0]) * np.array([0.25, 0.5, 0.75])
  np.testing.assert_allclose(np.percentile(area, [25, 50, 75]), expected, atol=0.025)
  assert area.max() <= largest + 0.01 and area.min() >= AREA[0] - 0.01
  assert aspect.min() >= ASPECT[0] - 0.01 and aspect.max() <= ASPECT[1] + 0.01
  log_aspect = np.log(aspect[area < 0.5])  # where every aspect fits: log-uniform, so symmetric about 0
  assert abs(np.median(log_aspect)) < 0.02 and np.percentile(log_aspect, 90) > 0.2


def test_the_tf_slim_crop_sampler_is_selectable_and_favours_small_crops():
  area, _ = crop_areas((256, 256), 'tf', n=1000)
  assert np.median(area) < 0.45  # TF's sampler draws the height uniformly: median ~0.38 here (uniform: 0.54)
  with pytest.raises(ValueError, match='crop_sampler'):
    preprocess.sample_crop_window(tf.constant([10, 10]), seed(0), area_range=AREA, aspect_range=ASPECT,
                                  max_attempts=1, sampler='torch')


@pytest.mark.parametrize('image', ['caltech', 'wide'])
def test_crop_windows_respect_area_and_aspect(image):
  data = caltech_bytes() if image == 'caltech' else wide_bytes()
  height, width = tf.image.extract_jpeg_shape(data).numpy()[:2]
  seeds = tf.stack([tf.zeros(300, tf.int64), tf.range(300, dtype=tf.int64)], axis=1)
  y, x, h, w = sample_windows(tf.constant([height, width]), seeds, AREA, ASPECT).numpy().T
  assert (y >= 0).all() and (x >= 0).all() and (y + h <= height).all() and (x + w <= width).all()
  area = h * w / (height * width)
  assert area.min() >= AREA[0] - 0.01 and area.max() <= AREA[1]
  # Aspect w/h within range up to 1 px of rounding on either side.
  assert (w <= ASPECT[1] * h + 1).all() and (w >= ASPECT[0] * h - 1).all()
  assert len({tuple(v) for v in zip(y, x, h, w)}) > 250  # Genuinely random.
  assert area.max() - area.min() > 0.3

@pytest.mark.parametrize('sampler', preprocess.CROP_SAMPLERS)
def test_crop_window_fallback_clamps_aspect(sampler):
  # A 30:1 image: no crop with aspect <= 4/3 covers half its area, so the sampler falls back.
  for i in range(5):
    window = preprocess.sample_crop_window(tf.constant([10, 300]), seed(i), area_range=(0.5, 1.0),
                                           aspect_range=ASPECT, max_attempts=10, sampler=sampler).numpy()
    assert list(window) == [0, (300 - 13) // 2, 10, 13]  # round(10 * 4/3) = 13, centred.
  tall = preprocess.sample_crop_window(tf.constant([300, 10]), seed(0), area_range=(0.5, 1.0),
                                       aspect_range=ASPECT, max_attempts=10, sampler=sampler).numpy()
  assert list(tall) == [(300 - 13) // 2, 0, 13, 10]


@pytest.mark.parametrize('image', ['caltech', 'wide', 'png'])
def test_inception_crop_shape_range_and_determinism(image):
  data = {'caltech': caltech_bytes, 'wide': wide_bytes,
          'png': lambda: tf.io.encode_png(random_pixels([50, 70, 3])).numpy()}[image]()
  pp = train_pp()
  outputs = [preprocess.inception_crop(data, seed(i), pp).numpy() for i in range(4)]
  for out in outputs:
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(outputs[0], preprocess.inception_crop(data, seed(0), pp).numpy())
  for i in range(1, 4):
    assert not np.array_equal(outputs[0], outputs[i])


def test_inception_crop_without_augmentation_is_a_plain_resize():
  pixels = random_pixels([40, 40, 3])
  pp = train_pp(area_range=(1.0, 1.0), flip=False, interpolations=('bilinear',))
  out = preprocess.inception_crop(tf.io.encode_png(pixels), seed(5), pp).numpy()
  expected = tf.image.resize(pixels, [24, 24], method='bilinear').numpy()
  np.testing.assert_array_equal(out, np.clip(np.round(expected), 0, 255).astype(np.uint8))


def test_inception_crop_flip_only_mirrors():
  pixels = random_pixels([40, 40, 3])
  pp = train_pp(area_range=(1.0, 1.0), interpolations=('nearest',), image_size=40)
  outs = [preprocess.inception_crop(tf.io.encode_png(pixels), seed(i), pp).numpy() for i in range(16)]
  flipped = [np.array_equal(o, pixels[:, ::-1]) for o in outs]
  kept = [np.array_equal(o, pixels) for o in outs]
  assert all(f or k for f, k in zip(flipped, kept))
  assert any(flipped) and any(kept)


def test_central_crop_shape_range_and_value():
  out = preprocess.central_crop(caltech_bytes(), seed(0), eval_pp()).numpy()
  assert out.shape == (24, 24, 3) and out.dtype == np.uint8 and out.max() > out.min()
  grey = tf.io.encode_png(np.full([30, 50, 3], 128, np.uint8))
  np.testing.assert_array_equal(preprocess.central_crop(grey, seed(0), eval_pp()).numpy(), 128)


def test_central_crop_keeps_the_centre():
  # Resize 50 -> round(24 / 0.5) = 48 (a factor 0.96), then keep the central 24: the white square in
  # the middle of the image fills the crop, the black border does not reach it.
  pixels = np.zeros([50, 50, 3], np.uint8)
  pixels[10:40, 10:40] = 255
  out = preprocess.central_crop(tf.io.encode_png(pixels), seed(0), eval_pp(crop_ratio=0.5)).numpy()
  np.testing.assert_array_equal(out[2:-2, 2:-2], 255)


def test_central_crop_rejects_bad_ratio():
  with pytest.raises(ValueError, match='crop_ratio'):
    preprocess.central_crop(caltech_bytes(), seed(0), eval_pp(crop_ratio=1.5))


@pytest.mark.parametrize('kind', ['grey_jpeg', 'grey_png', 'rgba_png', 'cmyk_jpeg', 'gif', 'bmp'])
def test_all_formats_decode_to_three_channels(kind):
  makers = {
      'grey_jpeg': lambda: tf.io.encode_jpeg(random_pixels([30, 40, 1])).numpy(),
      'grey_png': lambda: tf.io.encode_png(random_pixels([30, 40, 1])).numpy(),
      'rgba_png': lambda: tf.io.encode_png(random_pixels([30, 40, 4])).numpy(),
      'cmyk_jpeg': cmyk_bytes,
      'gif': lambda: pil_bytes('GIF'),
      'bmp': lambda: pil_bytes('BMP'),
  }
  data = makers[kind]()
  assert preprocess.decode_rgb(data).numpy().shape == (30, 40, 3)
  assert preprocess.inception_crop(data, seed(1), train_pp()).numpy().shape == (24, 24, 3)
  assert preprocess.central_crop(data, seed(1), eval_pp()).numpy().shape == (24, 24, 3)


def test_grey_jpeg_becomes_equal_rgb_channels():
  out = preprocess.central_crop(tf.io.encode_jpeg(random_pixels([30, 40, 1])), seed(0),
                                eval_pp()).numpy()
  np.testing.assert_array_equal(out[..., 0], out[..., 1])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_registry_and_unknown_interpolation():
  assert set(preprocess.PREPROCESS.names()) >= {'inception_crop', 'central_crop'}
  with pytest.raises(ValueError, match='cubic_spline'):
    preprocess.inception_crop(caltech_bytes(), seed(0), train_pp(interpolations=('cubic_spline',)))


@pytest.fixture(scope='module')
def bad_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('bad')
  make_bad_folder(root)
  return root / 'odd'


@pytest.mark.parametrize('name', UNUSUAL)
def test_unusual_images_decode_through_both_transforms(bad_folder, name):
  """Grayscale, CMYK, 16-bit, RGBA, palette, BMP, 8x8, 8000x6000, upper-case extension: all train and evaluate."""
  data = (bad_folder / name).read_bytes()
  for transform, pp in ((preprocess.inception_crop, train_pp()), (preprocess.central_crop, eval_pp())):
    out = transform(data, seed(3), pp).numpy()
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8


@pytest.mark.parametrize('name', UNDECODABLE)
def test_undecodable_files_raise_so_the_pipeline_can_count_them(bad_folder, name):
  data = (bad_folder / name).read_bytes()
  for transform, pp in ((preprocess.inception_crop, train_pp()), (preprocess.central_crop, eval_pp())):
    with pytest.raises(tf.errors.OpError):
      transform(data, seed(3), pp).numpy()
