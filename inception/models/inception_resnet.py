"""Inception-ResNet-v1 and -v2 (Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning"): residual Inception blocks whose branch outputs are projected back by a 1x1 convolution with
bias and added, scaled, to the block's input.

- v2 in the layout Keras' `InceptionResNetV2` follows (the released TF-slim model): the v3-style stem, Mixed_5b, 10 x
  block35 (scale 0.17), Mixed_6a, 20 x block17 (0.1), Mixed_7a, 10 x block8 (0.2; the last one unscaled and without
  ReLU), conv_7b 1536, and the head. At 1000 classes and 299 px: 55,813,192 parameters and 60,544 BatchNorm
  statistics, as Keras.
- v1 as the paper's Figures 14 (stem), 10-13 and 7 (Reduction-A with k, l, m, n = 192, 192, 256, 384), with the
  scales of v2 (0.17 / 0.1 / 0.2), the paper's 5 / 10 / 5 blocks and a 1792-channel final map.
BatchNorm has no scale (as TF-slim and Keras build it); convolutions in the residual projections have a bias.
"""
from flax import nnx

from inception.models import MODELS
from inception.models import blocks
from inception.models import staged
from inception.models.blocks import Conv, Pool

V2_STEM = (Conv('conv2d_1a_3x3', 32, 3, 2, 'valid'), Conv('conv2d_2a_3x3', 32, 3, 1, 'valid'),
           Conv('conv2d_2b_3x3', 64, 3), Pool('max', 3, 2),
           Conv('conv2d_3b_1x1', 80, 1, 1, 'valid'), Conv('conv2d_4a_3x3', 192, 3, 1, 'valid'), Pool('max', 3, 2))
V2_MIXED_5B = ((Conv('branch_0', 96, 1),),
               (Conv('branch_1a', 48, 1), Conv('branch_1b', 64, 5)),
               (Conv('branch_2a', 64, 1), Conv('branch_2b', 96, 3), Conv('branch_2c', 96, 3)),
               (Pool('avg', 3, 1, 'same'), Conv('branch_pool', 64, 1)))
V2_BLOCK35 = ((Conv('branch_0', 32, 1),),
              (Conv('branch_1a', 32, 1), Conv('branch_1b', 32, 3)),
              (Conv('branch_2a', 32, 1), Conv('branch_2b', 48, 3), Conv('branch_2c', 64, 3)))
V2_BLOCK17 = ((Conv('branch_0', 192, 1),),
              (Conv('branch_1a', 128, 1), Conv('branch_1b', 160, (1, 7)), Conv('branch_1c', 192, (7, 1))))
V2_BLOCK8 = ((Conv('branch_0', 192, 1),),
             (Conv('branch_1a', 192, 1), Conv('branch_1b', 224, (1, 3)), Conv('branch_1c', 256, (3, 1))))


def reduction_a(k: int, l: int, m: int, n: int):  # 35 -> 17, the v4 paper's Figure 7
  return ((Conv('branch_0', n, 3, 2, 'valid'),),
          (Conv('branch_1a', k, 1), Conv('branch_1b', l, 3), Conv('branch_1c', m, 3, 2, 'valid')),
          (Pool('max', 3, 2),))


def reduction_b(widths):  # 17 -> 8: three 1x1 -> 3x3/2 towers (the last with an extra 3x3) and a max pool
  (a0, a1), (b0, b1), (c0, c1, c2) = widths
  return ((Conv('branch_0a', a0, 1), Conv('branch_0b', a1, 3, 2, 'valid')),
          (Conv('branch_1a', b0, 1), Conv('branch_1b', b1, 3, 2, 'valid')),
          (Conv('branch_2a', c0, 1), Conv('branch_2b', c1, 3), Conv('branch_2c', c2, 3, 2, 'valid')),
          (Pool('max', 3, 2),))


V1_STEM = (Conv('conv2d_1a_3x3', 32, 3, 2, 'valid'), Conv('conv2d_2a_3x3', 32, 3, 1, 'valid'),
           Conv('conv2d_2b_3x3', 64, 3), Pool('max', 3, 2),
           Conv('conv2d_3b_1x1', 80, 1, 1, 'valid'), Conv('conv2d_4a_3x3', 192, 3, 1, 'valid'),
           Conv('conv2d_4b_3x3', 256, 3, 2, 'valid'))
V1_BLOCK35 = ((Conv('branch_0', 32, 1),),
              (Conv('branch_1a', 32, 1), Conv('branch_1b', 32, 3)),
              (Conv('branch_2a', 32, 1), Conv('branch_2b', 32, 3), Conv('branch_2c', 32, 3)))
V1_BLOCK17 = ((Conv('branch_0', 128, 1),),
              (Conv('branch_1a', 128, 1), Conv('branch_1b', 128, (1, 7)), Conv('branch_1c', 128, (7, 1))))
V1_BLOCK8 = ((Conv('branch_0', 192, 1),),
             (Conv('branch_1a', 192, 1), Conv('branch_1b', 192, (1, 3)), Conv('branch_1c', 192, (3, 1))))

# name -> (stem, the 35x35 entry block or None, (block, count, scale) per grid, reductions, final 1x1 conv or None)
VARIANTS = {
    'v2': dict(stem=V2_STEM, entry=V2_MIXED_5B, repeats=((V2_BLOCK35, 10, 0.17), (V2_BLOCK17, 20, 0.1),
                                                         (V2_BLOCK8, 10, 0.2)),
               reductions=(reduction_a(256, 256, 384, 384), reduction_b(((256, 384), (256, 288), (256, 288, 320)))),
               final_conv=1536),
    'v1': dict(stem=V1_STEM, entry=None, repeats=((V1_BLOCK35, 5, 0.17), (V1_BLOCK17, 10, 0.1), (V1_BLOCK8, 5, 0.2)),
               reductions=(reduction_a(192, 192, 256, 384), reduction_b(((256, 384), (256, 256), (256, 256, 256)))),
               final_conv=None),
}
REPEAT_NAMES = ('repeat_35', 'repeat_17', 'repeat_8')
REDUCTION_NAMES = ('mixed_6a', 'mixed_7a')


class InceptionResNet(staged.StagedNet):
  """stem -> [mixed_5b] -> repeat_35 -> mixed_6a -> repeat_17 -> mixed_7a -> repeat_8 -> [conv_7b] -> head."""

  def __init__(self, variant: str, *, num_classes: int, image_size=299, dtype='float32', dropout_rate: float = 0.2,
               bn_momentum: float = 0.9997, bn_epsilon: float = 1e-3, bn_scale: bool = False,
               rngs: nnx.Rngs):
    spec = VARIANTS[variant]
    unit = blocks.setup(self, num_classes=num_classes, image_size=image_size, dtype=dtype, bn_momentum=bn_momentum,
                        bn_epsilon=bn_epsilon, bn_scale=bn_scale, rngs=rngs)
    residual = dict(dtype=self.dtype, rngs=rngs)
    self.stem = blocks.Steps(3, spec['stem'], unit)
    channels, names = self.stem.out_channels, ['stem']
    if spec['entry'] is not None:
      self.mixed_5b = blocks.Mixed(channels, spec['entry'], unit)
      channels, names = self.mixed_5b.out_channels, names + ['mixed_5b']
    for i, (block, count, scale) in enumerate(spec['repeats']):
      last_grid = i == len(spec['repeats']) - 1
      chain = []
      for k in range(count):
        # v2's very last block8 is unscaled and has no ReLU (Keras: block8_10, scale 1.0, activation None).
        plain = variant == 'v2' and last_grid and k == count - 1
        chain.append(blocks.Residual(channels, block, unit, scale=1.0 if plain else scale, activation=not plain,
                                     **residual))
      setattr(self, REPEAT_NAMES[i], blocks.Repeat(chain))
      names.append(REPEAT_NAMES[i])
      if i < len(spec['reductions']):
        reduction = blocks.Mixed(channels, spec['reductions'][i], unit)
        setattr(self, REDUCTION_NAMES[i], reduction)
        channels = reduction.out_channels
        names.append(REDUCTION_NAMES[i])
    if spec['final_conv']:
      self.conv_7b = unit(channels, spec['final_conv'], 1, 1, (0, 0))
      channels, names = spec['final_conv'], names + ['conv_7b']
    self.head = blocks.Head(channels, num_classes, dropout_rate, dtype=self.dtype, rngs=rngs)
    self.stage_names = tuple(names) + ('head',)
    self.aux_heads, self.aux_names, self.aux_taps = False, (), ()


def _factory(variant: str):
  def build(*, num_classes: int, image_size=299, dtype='float32', dropout_rate: float = 0.2,
            bn_momentum: float = 0.9997, bn_epsilon: float = 1e-3, bn_scale: bool = False,
            rngs: nnx.Rngs) -> InceptionResNet:
    return InceptionResNet(variant, num_classes=num_classes, image_size=image_size, dtype=dtype,
                           dropout_rate=dropout_rate, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                           bn_scale=bn_scale, rngs=rngs)
  build.__doc__ = f'Inception-ResNet-{variant} (module docstring).'
  build.min_image_size = 75
  return build


inception_resnet_v1 = MODELS.register('inception_resnet_v1')(_factory('v1'))
inception_resnet_v2 = MODELS.register('inception_resnet_v2')(_factory('v2'))
