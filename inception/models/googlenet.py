"""GoogLeNet (Szegedy et al. 2014, "Going deeper with convolutions") and its BatchNorm variant.

Follows Table 1 and Caffe's bvlc_googlenet: real 5x5 convolutions in the inception blocks,
pooling with Caffe's round-up output size, LRN in the stem, two auxiliary classifiers on the
outputs of 4a and 4d (training only). `googlenet_bn` swaps LRN and conv biases for BatchNorm.
"""
import functools
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from flax import nnx

from inception.models import MODELS
from inception.models import layers
from inception.models import staged

# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) per block, from Table 1.
INCEPTION_WIDTHS: Dict[str, Tuple[int, int, int, int, int, int]] = {
    '3a': (64, 96, 128, 16, 32, 32),
    '3b': (128, 128, 192, 32, 96, 64),
    '4a': (192, 96, 208, 16, 48, 64),
    '4b': (160, 112, 224, 24, 64, 64),
    '4c': (128, 128, 256, 24, 64, 64),
    '4d': (112, 144, 288, 32, 64, 64),
    '4e': (256, 160, 320, 32, 128, 128),
    '5a': (256, 160, 320, 32, 128, 128),
    '5b': (384, 192, 384, 48, 128, 128),
}

# The full stage sequence; 'poolN' are the stride-2 max pools between groups.
STAGE_NAMES: Tuple[str, ...] = (
    'conv1', 'pool1', 'conv2', 'pool2', 'inception_3a', 'inception_3b', 'pool3',
    'inception_4a', 'inception_4b', 'inception_4c', 'inception_4d', 'inception_4e', 'pool4',
    'inception_5a', 'inception_5b', 'head')

# Auxiliary classifier name -> the stage whose output it reads.
AUX_TAPS: Dict[str, str] = {'aux_4a': 'inception_4a', 'aux_4d': 'inception_4d'}

# conv_block(in_channels, out_channels, kernel, stride=1, padding=0) -> module mapping x -> x.
ConvBlock = Callable[..., nnx.Module]
ImageSize = Union[int, Tuple[int, int]]


class Inception(nnx.Module):
  """Four parallel branches (1x1; 1x1->3x3; 1x1->5x5; 3x3 pool->1x1), concatenated on channels. The three 1x1
  convolutions that read the block's input run as one (layers.fused_1x1): the same parameters and results."""

  def __init__(self, in_channels: int, widths: Sequence[int], conv_block: ConvBlock):
    c1, r3, c3, r5, c5, pool_proj = widths
    self.conv_1x1 = conv_block(in_channels, c1, 1)
    self.conv_3x3_reduce = conv_block(in_channels, r3, 1)
    self.conv_3x3 = conv_block(r3, c3, 3, padding=1)
    self.conv_5x5_reduce = conv_block(in_channels, r5, 1)
    self.conv_5x5 = conv_block(r5, c5, 5, padding=2)  # A real 5x5, as published.
    self.pool_proj = conv_block(in_channels, pool_proj, 1)
    self.out_channels = c1 + c3 + c5 + pool_proj

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C_in] -> [B, H, W, out_channels]."""
    out_1x1, reduced_3x3, reduced_5x5 = layers.fused_1x1(x, (self.conv_1x1, self.conv_3x3_reduce,
                                                              self.conv_5x5_reduce))
    branches = (
        out_1x1,
        self.conv_3x3(reduced_3x3),
        self.conv_5x5(reduced_5x5),
        self.pool_proj(layers.max_pool(x, 3, 1, padding=1)),
    )
    return jnp.concatenate(branches, axis=-1)


class PoolNorm(nnx.Module):
  """Stride-2 3x3 max pool (Caffe rounding), then LRN if enabled: the 'pool1' stage."""

  def __init__(self, lrn: bool):
    self.pool = layers.MaxPool(3, 2)
    self.norm = layers.LocalResponseNorm() if lrn else None

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, ceil((H - 3) / 2) + 1, ..., C]."""
    x = self.pool(x)
    return self.norm(x) if self.norm is not None else x


class Conv2(nnx.Module):
  """The second stem stage: 1x1 conv (64), 3x3 conv (192), then LRN if enabled."""

  def __init__(self, in_channels: int, conv_block: ConvBlock, lrn: bool):
    self.reduce = conv_block(in_channels, 64, 1)
    self.conv = conv_block(64, 192, 3, padding=1)
    self.norm = layers.LocalResponseNorm() if lrn else None
    self.out_channels = 192

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C_in] -> [B, H, W, 192]."""
    x = self.conv(self.reduce(x))
    return self.norm(x) if self.norm is not None else x


class ClassifierHead(nnx.Module):
  """Global average pool, dropout, linear to classes; returns float32 logits [B, num_classes]."""

  def __init__(self, in_channels: int, num_classes: int, dropout_rate: float, *,
               dtype: jnp.dtype, rngs: nnx.Rngs):
    self.dropout = nnx.Dropout(dropout_rate)  # No rngs of its own: they come with each call.
    self.fc = layers.dense(in_channels, num_classes, bias_init=0.0, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, rngs: Optional[nnx.Rngs] = None) -> jax.Array:
    """[B, H, W, C] -> float32 logits [B, num_classes]; `rngs` feeds dropout in train mode."""
    x = layers.global_avg_pool(x)  # [B, C]
    x = self.dropout(x, rngs=rngs)
    return self.fc(x).astype(jnp.float32)


class AuxHead(nnx.Module):
  """Auxiliary classifier: 5x5/3 avg pool, 1x1 conv 128, FC 1024 + ReLU, dropout, FC to classes.

  The first FC's input size depends on the spatial size of the tapped feature map, so it is
  given at construction (`in_size`) to create all parameters eagerly. `conv_channels` and `hidden` are the paper's
  128 and 1024 unless a smaller network (models/tiny.py) asks otherwise.
  """

  def __init__(self, in_channels: int, in_size: Tuple[int, int], num_classes: int,
               dropout_rate: float, conv_block: ConvBlock, *, dtype: jnp.dtype, rngs: nnx.Rngs,
               conv_channels: int = 128, hidden: int = 1024):
    h, w = (layers.pool_out_size(s, 5, 3) for s in in_size)
    self.flat_features = h * w * conv_channels  # 4 * 4 * 128 = 2048 at 224 px.
    self.conv = conv_block(in_channels, conv_channels, 1)
    self.fc = layers.dense(self.flat_features, hidden, bias_init=0.2, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate)
    self.classifier = layers.dense(hidden, num_classes, bias_init=0.0, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, rngs: Optional[nnx.Rngs] = None) -> jax.Array:
    """[B, H, W, C] -> float32 logits [B, num_classes]."""
    x = self.conv(layers.avg_pool(x, 5, 3))  # [B, h, w, conv_channels]
    x = x.reshape(x.shape[0], -1)
    if x.shape[-1] != self.flat_features:
      raise ValueError(
          f'Aux head expects {self.flat_features} features after pooling, got {x.shape[-1]}: '
          'the input size differs from the image_size the model was built for.')
    x = jax.nn.relu(self.fc(x))
    x = self.dropout(x, rngs=rngs)
    return self.classifier(x).astype(jnp.float32)


def _stem_size(size: int) -> int:
  """Spatial size after conv1 and the three stride-2 pools, i.e. at inception 4a..4e."""
  size = layers.conv_out_size(size, 7, 2, 3)
  for _ in range(3):
    size = layers.pool_out_size(size, 3, 2)
  return size


class GoogLeNet(staged.StagedNet):
  """GoogLeNet as an ordered sequence of named stages plus its two optional auxiliary heads (models/staged.py)."""

  def __init__(self, *, num_classes: int, image_size: ImageSize = 224,
               dtype: layers.DTypeLike = 'float32', dropout_rate: float = 0.4,
               aux_dropout_rate: float = 0.7, aux_heads: bool = True, batch_norm: bool = False,
               bn_momentum: float = 0.9, bn_epsilon: float = 1e-3, rngs: nnx.Rngs):
    """Creates all parameters eagerly.

    Args:
      num_classes: classifier outputs (main and aux heads).
      image_size: the input side (or (height, width)); fixes the aux heads' FC input size.
      dtype: compute dtype ('float32', 'bfloat16' or a jnp dtype); params stay float32.
      dropout_rate: dropout before the main classifier (0.4 in the paper).
      aux_dropout_rate: dropout in the aux heads (0.7 in the paper).
      aux_heads: whether to create the two auxiliary classifiers at all.
      batch_norm: BatchNorm after every conv (convs without bias) instead of LRN.
      bn_momentum: running-statistics momentum of every BatchNorm.
      bn_epsilon: variance epsilon of every BatchNorm.
      rngs: needs a 'params' stream (or a default one) for initialization.
    """
    self.num_classes = num_classes
    self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    self.dtype = layers.canonical_dtype(dtype)
    self.batch_norm = batch_norm
    self.deterministic = False
    if batch_norm:
      conv_block = functools.partial(layers.ConvBNReLU, momentum=bn_momentum, epsilon=bn_epsilon,
                                     dtype=self.dtype, rngs=rngs)
    else:
      conv_block = functools.partial(layers.ConvReLU, dtype=self.dtype, rngs=rngs)
    lrn = not batch_norm

    self.conv1 = conv_block(3, 64, 7, stride=2, padding=3)
    self.pool1 = PoolNorm(lrn)
    self.conv2 = Conv2(64, conv_block, lrn)
    self.pool2 = layers.MaxPool(3, 2)
    channels = self.conv2.out_channels
    for name in STAGE_NAMES:
      if name.startswith('inception_'):
        block = Inception(channels, INCEPTION_WIDTHS[name[-2:]], conv_block)
        setattr(self, name, block)
        channels = block.out_channels
    self.pool3 = layers.MaxPool(3, 2)
    self.pool4 = layers.MaxPool(3, 2)
    self.head = ClassifierHead(channels, num_classes, dropout_rate, dtype=self.dtype, rngs=rngs)
    self.stage_names = STAGE_NAMES

    self.aux_heads = aux_heads
    self.aux_names = tuple(AUX_TAPS) if aux_heads else ()
    self.aux_taps = tuple(AUX_TAPS[n] for n in self.aux_names)
    tap_size = tuple(_stem_size(s) for s in self.image_size)
    for aux_name, tap in zip(self.aux_names, self.aux_taps):
      in_channels = getattr(self, tap).out_channels
      setattr(self, aux_name, AuxHead(in_channels, tap_size, num_classes, aux_dropout_rate,
                                      conv_block, dtype=self.dtype, rngs=rngs))


@MODELS.register('googlenet')
def googlenet(*, num_classes: int, image_size: ImageSize = 224,
              dtype: layers.DTypeLike = 'float32', dropout_rate: float = 0.4,
              aux_dropout_rate: float = 0.7, aux_heads: bool = True, rngs: nnx.Rngs) -> GoogLeNet:
  """The published GoogLeNet: ReLU convs with bias, LRN in the stem."""
  return GoogLeNet(num_classes=num_classes, image_size=image_size, dtype=dtype,
                   dropout_rate=dropout_rate, aux_dropout_rate=aux_dropout_rate,
                   aux_heads=aux_heads, batch_norm=False, rngs=rngs)


# Five stride-2 stages take 32 px to a 1x1 final map; below that the last stages' windows read only padding.
googlenet.min_image_size = 32


@MODELS.register('googlenet_bn')
def googlenet_bn(*, num_classes: int, image_size: ImageSize = 224,
                 dtype: layers.DTypeLike = 'float32', dropout_rate: float = 0.4,
                 aux_dropout_rate: float = 0.7, aux_heads: bool = True,
                 bn_momentum: float = 0.9, bn_epsilon: float = 1e-3, rngs: nnx.Rngs) -> GoogLeNet:
  """GoogLeNet with BatchNorm after every conv (convs without bias) and no LRN."""
  return GoogLeNet(num_classes=num_classes, image_size=image_size, dtype=dtype,
                   dropout_rate=dropout_rate, aux_dropout_rate=aux_dropout_rate,
                   aux_heads=aux_heads, batch_norm=True, bn_momentum=bn_momentum,
                   bn_epsilon=bn_epsilon, rngs=rngs)


googlenet_bn.min_image_size = 32
