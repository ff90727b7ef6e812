"""The on-device half of preprocessing (inception/augment.py): the colour distortions' distributions, order and
seeding, and the scaling to the value range."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from inception import augment

OFF = dict(brightness=None, contrast=None, saturation=None, hue=None)


def seeds(n, start=0):
  return np.stack([np.arange(start, start + n), np.full(n, 7)], axis=1).astype(np.uint32)  # [n, 2]


def pixels(shape, seed=0):
  return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


@pytest.mark.parametrize('name, factor', [('brightness', 0.1), ('contrast', 1.3), ('saturation', 0.6),
                                          ('hue', 0.15)])
def test_adjustments_equal_tf_image(name, factor):
  """The adjustments are TF's (tf.image.adjust_*), which the host applied before they moved to the device."""
  image = pixels([12, 10, 3]).astype(np.float32) / 255
  ours = {'brightness': augment.dm_pix.adjust_brightness, 'contrast': augment.dm_pix.adjust_contrast,
          'saturation': augment.dm_pix.adjust_saturation, 'hue': augment.dm_pix.adjust_hue}[name]
  theirs = getattr(tf.image, f'adjust_{name}')
  np.testing.assert_allclose(np.asarray(ours(jnp.asarray(image), factor)), theirs(image, factor).numpy(), atol=2e-5)


def test_factors_are_drawn_from_the_configured_ranges():
  """Brightness alone on a mid-grey image: the shift is uniform on [-b, b] over many examples (quartiles)."""
  b = 32 / 255
  grey = np.full([512, 2, 2, 3], 128, np.uint8)
  out = np.asarray(augment.train_images(grey, seeds(512), {**OFF, 'brightness': b, 'value_range': (0.0, 1.0)}))
  delta = out[:, 0, 0, 0] - 128 / 255
  assert np.all(out == out[:, :1, :1, :1])  # one shift per image
  assert -b - 1e-6 <= delta.min() and delta.max() <= b + 1e-6
  np.testing.assert_allclose(np.quantile(delta, [0.25, 0.5, 0.75]), [-b / 2, 0, b / 2], atol=0.1 * b)
  lo, hi = 0.5, 1.5  # contrast: the factor shows in the spread around the per-image mean
  noise = np.tile(pixels([1, 8, 8, 3]), (512, 1, 1, 1))
  out = np.asarray(augment.train_images(noise, seeds(512), {**OFF, 'contrast': (lo, hi), 'value_range': (0, 1)}))
  x = noise[0].astype(np.float32) / 255
  factor = (out - out.mean(axis=(1, 2), keepdims=True))[:, 0, 0, 0] / (x - x.mean(axis=(0, 1)))[0, 0, 0]
  unclipped = np.all((out > 0) & (out < 1), axis=(1, 2, 3))
  assert unclipped.sum() > 100 and lo - 1e-3 <= factor[unclipped].min() and factor[unclipped].max() <= hi + 1e-3


def test_distortions_run_in_a_random_order_each_from_its_own_key():
  ops = [augment.Distortion(lambda k: 0.1, rgb=lambda x, p: x + p),  # Do not commute: 0.2 -> 0.6 or 0.5.
         augment.Distortion(lambda k: 2.0, rgb=lambda x, p: x * p)]
  image = jnp.full([2, 2, 3], 0.2)
  results = {round(float(augment.distort_colours(image, jax.random.key(i), ops)[0, 0, 0]), 4) for i in range(40)}
  assert results == {0.6, 0.5}


def one_op_at_a_time(image, key, pp):
  """The distortions as dm-pix's four adjust_* calls, only the chosen one per slot, with the same draws: the
  reference for the batched form, which evaluates every op of a slot and shares one HSV round trip."""
  adjust = {'brightness': augment.dm_pix.adjust_brightness, 'contrast': augment.dm_pix.adjust_contrast,
            'saturation': augment.dm_pix.adjust_saturation, 'hue': augment.dm_pix.adjust_hue}
  names = [n for n in adjust if pp.get(n)]
  keys = jax.random.split(key, len(names) + 1)
  params = [op.draw(keys[i + 1]) for i, op in enumerate(augment.photometric_ops(pp))]
  for i in np.asarray(jax.random.permutation(keys[0], len(names))):
    image = jnp.clip(adjust[names[i]](image, params[i]), 0.0, 1.0)
  return image


@pytest.mark.parametrize('enabled', [('brightness', 'contrast', 'saturation', 'hue'), ('saturation', 'hue'),
                                     ('hue', 'brightness')])
def test_the_batched_distortions_equal_the_chosen_op_alone(enabled):
  pp = {**OFF, **{n: v for n, v in dict(brightness=32 / 255, contrast=(0.5, 1.5), saturation=(0.5, 1.5),
                                        hue=0.2).items() if n in enabled}, 'value_range': (0.0, 1.0)}
  images = pixels([16, 9, 7, 3])
  out = np.asarray(jax.jit(lambda i, s: augment.train_images(i, s, pp))(images, seeds(16)))
  keys = jax.vmap(jax.random.wrap_key_data)(jnp.asarray(seeds(16)))
  for n in range(16):
    expect = one_op_at_a_time(jnp.asarray(images[n], jnp.float32) / 255.0, keys[n], pp)
    np.testing.assert_allclose(out[n], np.asarray(expect), atol=1e-6, err_msg=f'example {n}')


def test_each_example_depends_on_its_seed_only():
  pp = ml_collections.ConfigDict(dict(brightness=32 / 255, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=0.2,
                                      value_range=(-1.0, 1.0)))
  images = pixels([6, 8, 8, 3])
  out = np.asarray(augment.train_images(images, seeds(6), pp))
  assert out.dtype == np.float32 and -1.0 <= out.min() and out.max() <= 1.0
  np.testing.assert_array_equal(out, np.asarray(augment.train_images(images, seeds(6), pp)))
  # Example 2 alone, or among other images, with its own seed: the same; with another seed: not.
  alone = np.asarray(augment.train_images(images[2:3], seeds(1, start=2), pp))
  np.testing.assert_allclose(alone[0], out[2], atol=1e-6)
  other = np.asarray(augment.train_images(images[2:3], seeds(1, start=99), pp))
  assert not np.allclose(other[0], out[2])


def test_scaling_to_the_value_range_and_no_distortion_when_off():
  images = pixels([2, 4, 4, 3])
  scaled = np.asarray(augment.eval_images(images, {'value_range': (-1.0, 1.0)}))
  np.testing.assert_allclose(scaled, -1.0 + 2.0 * images / 255.0, atol=1e-6)
  plain = np.asarray(augment.train_images(images, seeds(2), {**OFF, 'value_range': (-1.0, 1.0)}))
  np.testing.assert_allclose(plain, scaled, atol=1e-6)


def test_a_per_channel_mean_and_std_follow_the_value_range():
  """Caffe's convention (0-255 less the ImageNet mean, per RGB channel) and timm's (mean / std), in both steps; the
  default mean 0 / std 1 changes nothing."""
  images = pixels([2, 4, 4, 3])
  caffe = {'value_range': (0.0, 255.0), 'mean': (123.68, 116.779, 103.939), 'std': (1.0, 1.0, 1.0)}
  np.testing.assert_allclose(np.asarray(augment.eval_images(images, caffe)),
                             images.astype(np.float32) - np.array(caffe['mean'], np.float32), atol=1e-3)
  imagenet = {'value_range': (0.0, 1.0), 'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225)}
  expect = (images / 255.0 - np.array(imagenet['mean'])) / np.array(imagenet['std'])
  np.testing.assert_allclose(np.asarray(augment.train_images(images, seeds(2), {**OFF, **imagenet})), expect,
                             atol=1e-5)
  np.testing.assert_array_equal(
      np.asarray(augment.eval_images(images, {'value_range': (-1.0, 1.0), 'mean': (0.0,) * 3, 'std': (1.0,) * 3})),
      np.asarray(augment.eval_images(images, {'value_range': (-1.0, 1.0)})))


def test_stage_pp_overlays_the_stage_keys():
  pp = ml_collections.ConfigDict(dict(image_size=8, value_range=(0, 1), train=dict(hue=0.1),
                                      eval=dict(value_range=(-1, 1))))
  assert augment.stage_pp(pp, 'train').to_dict() == {'image_size': 8, 'value_range': (0, 1), 'hue': 0.1}
  assert augment.stage_pp(pp, 'eval').value_range == (-1, 1)
