"""The on-device half of preprocessing: photometric distortions and the scaling to the model's value range, batched
inside the jitted steps.

The host (data/preprocess.py) only decodes the crop window, resizes and flips, and ships uint8 images, a quarter of
the bytes of float32; the colour distortions, the costliest per-pixel work, run here on the accelerator. Each training
example brings its own `seed` (uint32 [2], drawn on the host from the example's stream position), so an example's
distortion depends only on its place in the stream, as the host-side crop does: resumed runs stay exact on any number
of devices or hosts. The distributions are the paper-era ones TF's stateless_random_* draw: brightness delta
U(-b, b), contrast and saturation factors U(lo, hi), hue delta U(-h, h), applied in a random order (uniform over
permutations) with a clip to [0, 1] after each; the adjustments are dm-pix's equivalents of tf.image.adjust_*.
"""
from typing import Any, Callable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import dm_pix
import jax
import jax.numpy as jnp
import ml_collections


def stage_pp(pp: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
  """The flat preprocessing config for `stage` ('train' / 'eval'): shared keys overlaid by the stage's. The host
  transforms and the device part here read the same flat view."""
  flat = {k: v for k, v in pp.items() if k not in ('train', 'eval')}
  flat.update(pp[stage].to_dict())
  return ml_collections.ConfigDict(flat)


class Distortion(NamedTuple):
  """One colour distortion: `draw(key)` gives its random parameter. An RGB one is `rgb(image [H, W, 3], p)`; an HSV
  one is `hsv(hue, saturation, p) -> (hue, saturation)` on the planes, so that a slot converts to HSV and back once
  for all the HSV ones (under vmap every op of a slot is evaluated, chosen or not)."""
  draw: Callable[[jax.Array], jax.Array]
  rgb: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None
  hsv: Optional[Callable[[jax.Array, jax.Array, jax.Array], Tuple[jax.Array, jax.Array]]] = None


def _uniform(lo: float, hi: float) -> Callable[[jax.Array], jax.Array]:
  return lambda key: jax.random.uniform(key, (), minval=lo, maxval=hi)


def _saturation(hue, saturation, factor):  # dm_pix.adjust_saturation's edit of the planes
  return hue, jnp.clip(saturation * factor, 0.0, 1.0)


def _hue(hue, saturation, delta):  # dm_pix.adjust_hue's edit of the planes
  return (hue + delta) % 1.0, saturation


def photometric_ops(pp: Mapping[str, Any]) -> List[Distortion]:
  """The enabled colour distortions of a stage's flat pp (brightness, contrast, saturation, hue); 0 / None turns one
  off."""
  ops = []
  if pp.get('brightness'):
    b = float(pp['brightness'])
    ops.append(Distortion(_uniform(-b, b), rgb=dm_pix.adjust_brightness))
  if pp.get('contrast'):
    ops.append(Distortion(_uniform(*map(float, pp['contrast'])), rgb=dm_pix.adjust_contrast))
  if pp.get('saturation'):
    ops.append(Distortion(_uniform(*map(float, pp['saturation'])), hsv=_saturation))
  if pp.get('hue'):
    h = float(pp['hue'])
    ops.append(Distortion(_uniform(-h, h), hsv=_hue))
  return ops


def _one_of(image: jax.Array, chosen: jax.Array, ops: Sequence[Distortion], params: Sequence[jax.Array]) -> jax.Array:
  """`ops[chosen]` applied to `image` with its parameter: every RGB op is evaluated and the HSV ones share a single
  round trip, in which only the chosen one edits the planes, so the result equals the chosen op alone."""
  result = image
  if any(op.hsv for op in ops):
    hsv = dm_pix.rgb_to_hsv(image)
    hue, saturation = hsv[..., 0], hsv[..., 1]
    for i, op in enumerate(ops):
      if op.hsv:
        new_hue, new_saturation = op.hsv(hue, saturation, params[i])
        hue, saturation = jnp.where(chosen == i, new_hue, hue), jnp.where(chosen == i, new_saturation, saturation)
    result = dm_pix.hsv_to_rgb(jnp.stack([hue, saturation, hsv[..., 2]], axis=-1))
  for i, op in enumerate(ops):
    if op.rgb:
      result = jnp.where(chosen == i, op.rgb(image, params[i]), result)
  return result


def distort_colours(image: jax.Array, key: jax.Array, ops: Sequence[Distortion]) -> jax.Array:
  """One image [H, W, 3] in [0, 1] through `ops` in a random order, clipped to [0, 1] after each; op i draws from
  its own key whatever its place in the order."""
  if not ops:
    return image
  keys = jax.random.split(key, len(ops) + 1)
  order = jax.random.permutation(keys[0], len(ops))
  params = [op.draw(keys[i + 1]) for i, op in enumerate(ops)]
  for slot in range(len(ops)):
    image = jnp.clip(_one_of(image, order[slot], ops, params), 0.0, 1.0)
  return image


def to_value_range(image: jax.Array, value_range: Sequence[float], mean: Sequence[float] = (0.0, 0.0, 0.0),
                   std: Sequence[float] = (1.0, 1.0, 1.0)) -> jax.Array:
  """Float pixels in [0, 1] (clipped first) mapped linearly onto `value_range` = (lo, hi), then standardised per RGB
  channel: (x - mean) / std (the default leaves it out; imported weights may expect, e.g., Caffe's 0-255 minus the
  ImageNet mean)."""
  lo, hi = float(value_range[0]), float(value_range[1])
  x = lo + jnp.clip(image, 0.0, 1.0) * (hi - lo)
  mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
  if mean != (0.0, 0.0, 0.0) or std != (1.0, 1.0, 1.0):
    x = (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)
  return x


def scaled(images: jax.Array, pp: Mapping[str, Any]) -> jax.Array:
  """Float pixels in [0, 1] in pp's input convention: `value_range`, and `mean` / `std` where the pp has them (runs
  written before those keys existed have neither)."""
  return to_value_range(images, pp['value_range'], pp.get('mean', (0.0, 0.0, 0.0)), pp.get('std', (1.0, 1.0, 1.0)))


def train_images(images: jax.Array, seeds: jax.Array, pp: Mapping[str, Any]) -> jax.Array:
  """uint8 [B, S, S, 3] and per-example uint32 seeds [B, 2] -> float32 [B, S, S, 3] distorted, scaled as pp says."""
  ops = photometric_ops(pp)
  x = images.astype(jnp.float32) / 255.0
  if ops:
    keys = jax.vmap(jax.random.wrap_key_data)(seeds.astype(jnp.uint32))
    x = jax.vmap(lambda image, key: distort_colours(image, key, ops))(x, keys)
  return scaled(x, pp)


def eval_images(images: jax.Array, pp: Mapping[str, Any]) -> jax.Array:
  """uint8 [B, S, S, 3] -> float32 [B, S, S, 3] scaled as pp says (`scaled`)."""
  return scaled(images.astype(jnp.float32) / 255.0, pp)
