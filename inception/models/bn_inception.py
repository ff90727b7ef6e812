"""BN-Inception (Ioffe & Szegedy 2015, "Batch Normalization", Figure 5): GoogLeNet with BatchNorm after every
convolution, each 5x5 replaced by two 3x3s (the "double 3x3" branch), average or max pooling per block as the table
says, and the stride-2 blocks 3c and 4e without a 1x1 branch, their pool branch a plain 3x3/2 max pool. The stem is
googlenet_bn's (7x7/2 conv, pool, 1x1 64 and 3x3 192 convs, pool).

Choices the table leaves open, made here: BatchNorm with scale and offset (epsilon 1e-3); the stride-2 convolutions
and the pass-through max pools of 3c and 4e pad by 1 and round down, so both halves agree at any input size; the
in-block average pools are 3x3/1 over the window's part inside the image. No dropout by default (the paper's
accelerated recipe removed it). At 224 px and 1000 classes it has about 11.3M parameters (Figure 5 gives none).
"""
import functools

from flax import nnx

from inception.models import MODELS
from inception.models import blocks
from inception.models import googlenet
from inception.models import layers
from inception.models import staged
from inception.models.blocks import Conv, Pool

# Figure 5: (#1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, pool proj); stride-2 blocks: #1x1 0.
TABLE = {
    '3a': (64, 64, 64, 64, 96, 'avg', 32), '3b': (64, 64, 96, 64, 96, 'avg', 64),
    '3c': (0, 128, 160, 64, 96, 'max', 0),
    '4a': (224, 64, 96, 96, 128, 'avg', 128), '4b': (192, 96, 128, 96, 128, 'avg', 128),
    '4c': (160, 128, 160, 128, 160, 'avg', 128), '4d': (96, 128, 192, 160, 192, 'avg', 128),
    '4e': (0, 128, 192, 192, 256, 'max', 0),
    '5a': (352, 192, 320, 160, 224, 'avg', 128), '5b': (352, 192, 320, 192, 224, 'max', 128),
}


def block_spec(row):
  """The branches of one row of Figure 5."""
  c1, r3, c3, rd, cd, pool, proj = row
  stride = 2 if c1 == 0 else 1
  pad = 1  # 3x3 convolutions and the stride-2 pass-through pools
  branches = [] if c1 == 0 else [(Conv('branch_1x1', c1, 1),)]
  branches.append((Conv('branch_3x3_reduce', r3, 1), Conv('branch_3x3', c3, 3, stride, pad)))
  branches.append((Conv('branch_double_reduce', rd, 1), Conv('branch_double_1', cd, 3, 1, pad),
                   Conv('branch_double_2', cd, 3, stride, pad)))
  if stride == 2:
    branches.append((Pool('max', 3, 2, pad),))
  elif pool == 'avg':
    branches.append((Pool('avg', 3, 1, 'same'), Conv('branch_pool_proj', proj, 1)))
  else:
    branches.append((Pool('max', 3, 1, pad), Conv('branch_pool_proj', proj, 1)))
  return tuple(branches)


class BNInception(staged.StagedNet):
  """conv1 -> pool1 -> conv2 -> pool2 -> 3a, 3b, 3c (to 14 x 14) -> 4a..4e (to 7 x 7) -> 5a, 5b -> head."""

  def __init__(self, *, num_classes: int, image_size=224, dtype='float32', dropout_rate: float = 0.0,
               bn_momentum: float = 0.9, bn_epsilon: float = 1e-3, rngs: nnx.Rngs):
    self.num_classes = num_classes
    self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    self.dtype = layers.canonical_dtype(dtype)
    self.deterministic = False
    unit = blocks.unit_factory(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, bn_scale=True, dtype=self.dtype,
                               rngs=rngs)
    stem_unit = functools.partial(layers.ConvBNReLU, momentum=bn_momentum, epsilon=bn_epsilon, dtype=self.dtype,
                                  rngs=rngs)
    self.conv1 = stem_unit(3, 64, 7, stride=2, padding=3)
    self.pool1 = layers.MaxPool(3, 2)
    self.conv2 = googlenet.Conv2(64, stem_unit, lrn=False)
    self.pool2 = layers.MaxPool(3, 2)
    channels, names = self.conv2.out_channels, ['conv1', 'pool1', 'conv2', 'pool2']
    for key, row in TABLE.items():
      block = blocks.Mixed(channels, block_spec(row), unit)
      setattr(self, f'inception_{key}', block)
      channels = block.out_channels
      names.append(f'inception_{key}')
    self.head = blocks.Head(channels, num_classes, dropout_rate, dtype=self.dtype, rngs=rngs)
    self.stage_names = tuple(names) + ('head',)
    self.aux_heads, self.aux_names, self.aux_taps = False, (), ()


@MODELS.register('bn_inception')
def bn_inception(*, num_classes: int, image_size=224, dtype='float32', dropout_rate: float = 0.0,
                 bn_momentum: float = 0.9, bn_epsilon: float = 1e-3, rngs: nnx.Rngs) -> BNInception:
  """BN-Inception (module docstring)."""
  return BNInception(num_classes=num_classes, image_size=image_size, dtype=dtype, dropout_rate=dropout_rate,
                     bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, rngs=rngs)


bn_inception.min_image_size = 32
