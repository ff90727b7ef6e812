"""Inception-v4 (Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the Impact of Residual Connections on
Learning"), as the paper's Figures 3-9 in TF-slim's layout: the stem with its three parallel splits, 4 x Inception-A,
Reduction-A (k, l, m, n = 192, 224, 256, 384), 7 x Inception-B, Reduction-B, 3 x Inception-C, average pool, dropout
(keep 0.8) and the classifier. BatchNorm without scale by default, as TF-slim; `bn_scale=True` builds it as timm does
(42,679,816 parameters at 1000 classes).
"""
from flax import nnx

from inception.models import MODELS
from inception.models import blocks
from inception.models import staged
from inception.models.blocks import Conv, Pool, Split
from inception.models.inception_resnet import reduction_a

STEM = (Conv('conv2d_1a_3x3', 32, 3, 2, 'valid'), Conv('conv2d_2a_3x3', 32, 3, 1, 'valid'),
        Conv('conv2d_2b_3x3', 64, 3))
MIXED_3A = ((Pool('max', 3, 2),), (Conv('branch_1', 96, 3, 2, 'valid'),))
MIXED_4A = ((Conv('branch_0a', 64, 1), Conv('branch_0b', 96, 3, 1, 'valid')),
            (Conv('branch_1a', 64, 1), Conv('branch_1b', 64, (1, 7)), Conv('branch_1c', 64, (7, 1)),
             Conv('branch_1d', 96, 3, 1, 'valid')))
MIXED_5A = ((Conv('branch_0', 192, 3, 2, 'valid'),), (Pool('max', 3, 2),))
BLOCK_A = ((Conv('branch_0', 96, 1),),  # Figure 4, 35 x 35
           (Conv('branch_1a', 64, 1), Conv('branch_1b', 96, 3)),
           (Conv('branch_2a', 64, 1), Conv('branch_2b', 96, 3), Conv('branch_2c', 96, 3)),
           (Pool('avg', 3, 1, 'same'), Conv('branch_pool', 96, 1)))
BLOCK_B = ((Conv('branch_0', 384, 1),),  # Figure 5, 17 x 17
           (Conv('branch_1a', 192, 1), Conv('branch_1b', 224, (1, 7)), Conv('branch_1c', 256, (7, 1))),
           (Conv('branch_2a', 192, 1), Conv('branch_2b', 192, (7, 1)), Conv('branch_2c', 224, (1, 7)),
            Conv('branch_2d', 224, (7, 1)), Conv('branch_2e', 256, (1, 7))),
           (Pool('avg', 3, 1, 'same'), Conv('branch_pool', 128, 1)))
REDUCTION_B = ((Conv('branch_0a', 192, 1), Conv('branch_0b', 192, 3, 2, 'valid')),  # Figure 8, 17 -> 8
               (Conv('branch_1a', 256, 1), Conv('branch_1b', 256, (1, 7)), Conv('branch_1c', 320, (7, 1)),
                Conv('branch_1d', 320, 3, 2, 'valid')),
               (Pool('max', 3, 2),))
BLOCK_C = ((Conv('branch_0', 256, 1),),  # Figure 6, 8 x 8
           (Conv('branch_1a', 384, 1), Split(Conv('branch_1b', 256, (1, 3)), Conv('branch_1c', 256, (3, 1)))),
           (Conv('branch_2a', 384, 1), Conv('branch_2b', 448, (3, 1)), Conv('branch_2c', 512, (1, 3)),
            Split(Conv('branch_2d', 256, (1, 3)), Conv('branch_2e', 256, (3, 1)))),
           (Pool('avg', 3, 1, 'same'), Conv('branch_pool', 256, 1)))

LAYOUT = (('mixed_3a', MIXED_3A, 1), ('mixed_4a', MIXED_4A, 1), ('mixed_5a', MIXED_5A, 1),
          ('blocks_a', BLOCK_A, 4), ('reduction_a', reduction_a(192, 224, 256, 384), 1), ('blocks_b', BLOCK_B, 7),
          ('reduction_b', REDUCTION_B, 1), ('blocks_c', BLOCK_C, 3))


class InceptionV4(staged.StagedNet):
  """stem -> mixed_3a, 4a, 5a (35 x 35 x 384) -> 4 A -> reduction A -> 7 B -> reduction B -> 3 C -> head."""

  def __init__(self, *, num_classes: int, image_size=299, dtype='float32', dropout_rate: float = 0.2,
               bn_momentum: float = 0.9997, bn_epsilon: float = 1e-3, bn_scale: bool = False,
               rngs: nnx.Rngs):
    unit = blocks.setup(self, num_classes=num_classes, image_size=image_size, dtype=dtype, bn_momentum=bn_momentum,
                        bn_epsilon=bn_epsilon, bn_scale=bn_scale, rngs=rngs)
    self.stem = blocks.Steps(3, STEM, unit)
    channels, names = self.stem.out_channels, ['stem']
    for name, spec, count in LAYOUT:
      chain = []
      for _ in range(count):
        chain.append(blocks.Mixed(channels, spec, unit))
        channels = chain[-1].out_channels
      setattr(self, name, chain[0] if count == 1 else blocks.Repeat(chain))
      names.append(name)
    self.head = blocks.Head(channels, num_classes, dropout_rate, dtype=self.dtype, rngs=rngs)
    self.stage_names = tuple(names) + ('head',)
    self.aux_heads, self.aux_names, self.aux_taps = False, (), ()


@MODELS.register('inception_v4')
def inception_v4(*, num_classes: int, image_size=299, dtype='float32', dropout_rate: float = 0.2,
                 bn_momentum: float = 0.9997, bn_epsilon: float = 1e-3, bn_scale: bool = False,
                 rngs: nnx.Rngs) -> InceptionV4:
  """Inception-v4 (module docstring)."""
  return InceptionV4(num_classes=num_classes, image_size=image_size, dtype=dtype, dropout_rate=dropout_rate,
                     bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, bn_scale=bn_scale, rngs=rngs)


inception_v4.min_image_size = 75
