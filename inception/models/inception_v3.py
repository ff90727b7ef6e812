"""Inception-v3 (Szegedy et al. 2015, "Rethinking the Inception Architecture for Computer Vision"), in the layout of
the released TensorFlow model that TF-slim and Keras' `InceptionV3` follow: factorised 7x7 as 1x7 / 7x1, the 1x3 /
3x1 expanded last blocks, grid reductions with parallel pooling, BatchNorm without scale (epsilon 1e-3), and an
optional auxiliary head on Mixed_6e. At 1000 classes, 299 px, without the aux head it has 23,817,352 parameters and
34,432 BatchNorm statistics, as Keras' InceptionV3.
"""
from flax import nnx

from inception.models import MODELS
from inception.models import blocks
from inception.models import layers
from inception.models import staged
from inception.models.blocks import Conv, Pool, Split

STEM = (Conv('conv2d_1a_3x3', 32, 3, 2, 'valid'), Conv('conv2d_2a_3x3', 32, 3, 1, 'valid'),
        Conv('conv2d_2b_3x3', 64, 3), Pool('max', 3, 2),
        Conv('conv2d_3b_1x1', 80, 1, 1, 'valid'), Conv('conv2d_4a_3x3', 192, 3, 1, 'valid'), Pool('max', 3, 2))


def block_a(pool_features: int):  # 35 x 35
  return ((Conv('branch1x1', 64, 1),),
          (Conv('branch5x5_1', 48, 1), Conv('branch5x5_2', 64, 5)),
          (Conv('branch3x3dbl_1', 64, 1), Conv('branch3x3dbl_2', 96, 3), Conv('branch3x3dbl_3', 96, 3)),
          (Pool('avg', 3, 1, 'same'), Conv('branch_pool', pool_features, 1)))


REDUCTION_A = ((Conv('branch3x3', 384, 3, 2, 'valid'),),  # 35 -> 17
               (Conv('branch3x3dbl_1', 64, 1), Conv('branch3x3dbl_2', 96, 3),
                Conv('branch3x3dbl_3', 96, 3, 2, 'valid')),
               (Pool('max', 3, 2),))


def block_b(c7: int):  # 17 x 17, the factorised 7x7s
  return ((Conv('branch1x1', 192, 1),),
          (Conv('branch7x7_1', c7, 1), Conv('branch7x7_2', c7, (1, 7)), Conv('branch7x7_3', 192, (7, 1))),
          (Conv('branch7x7dbl_1', c7, 1), Conv('branch7x7dbl_2', c7, (7, 1)), Conv('branch7x7dbl_3', c7, (1, 7)),
           Conv('branch7x7dbl_4', c7, (7, 1)), Conv('branch7x7dbl_5', 192, (1, 7))),
          (Pool('avg', 3, 1, 'same'), Conv('branch_pool', 192, 1)))


REDUCTION_B = ((Conv('branch3x3_1', 192, 1), Conv('branch3x3_2', 320, 3, 2, 'valid')),  # 17 -> 8
               (Conv('branch7x7x3_1', 192, 1), Conv('branch7x7x3_2', 192, (1, 7)), Conv('branch7x7x3_3', 192, (7, 1)),
                Conv('branch7x7x3_4', 192, 3, 2, 'valid')),
               (Pool('max', 3, 2),))

BLOCK_C = ((Conv('branch1x1', 320, 1),),  # 8 x 8, expanded
           (Conv('branch3x3_1', 384, 1), Split(Conv('branch3x3_2a', 384, (1, 3)), Conv('branch3x3_2b', 384, (3, 1)))),
           (Conv('branch3x3dbl_1', 448, 1), Conv('branch3x3dbl_2', 384, 3),
            Split(Conv('branch3x3dbl_3a', 384, (1, 3)), Conv('branch3x3dbl_3b', 384, (3, 1)))),
           (Pool('avg', 3, 1, 'same'), Conv('branch_pool', 192, 1)))

BLOCKS = (('mixed_5b', block_a(32)), ('mixed_5c', block_a(64)), ('mixed_5d', block_a(64)),
          ('mixed_6a', REDUCTION_A), ('mixed_6b', block_b(128)), ('mixed_6c', block_b(160)),
          ('mixed_6d', block_b(160)), ('mixed_6e', block_b(192)), ('mixed_7a', REDUCTION_B),
          ('mixed_7b', BLOCK_C), ('mixed_7c', BLOCK_C))


class AuxHead(nnx.Module):
  """TF-slim's auxiliary classifier on Mixed_6e: 5x5/3 average pool, 1x1 conv 128, a conv 768 over the whole 5x5
  map, then a 1x1 convolution (a linear layer) to the classes."""

  def __init__(self, in_channels: int, in_size, num_classes: int, conv_block, *, dtype, rngs: nnx.Rngs):
    side = tuple((s - 5) // 3 + 1 for s in in_size)
    self.conv0 = conv_block(in_channels, 128, 1, 1, (0, 0))
    self.conv1 = conv_block(128, 768, side, 1, (0, 0))
    self.fc = layers.dense(768, num_classes, bias_init=0.0, dtype=dtype, rngs=rngs)

  def __call__(self, x, *, rngs=None):
    x = self.conv1(self.conv0(blocks.pool(x, Pool('avg', 5, 3))))
    return self.fc(x.reshape(x.shape[0], -1)).astype('float32')


def _grid(size: int) -> int:
  """The side at Mixed_6e (17 at 299 px): the stem's valid convolutions and pools, then Mixed_6a."""
  size = (size - 3) // 2 + 1 - 2  # conv2d_1a (3x3/2), conv2d_2a (3x3 valid); conv2d_2b keeps the size
  size = (size - 3) // 2 + 1 - 2  # max pool 3x3/2, conv2d_4a (3x3 valid)
  size = (size - 3) // 2 + 1  # max pool 3x3/2
  return (size - 3) // 2 + 1  # mixed_6a


class InceptionV3(staged.StagedNet):
  """stem -> mixed_5b..5d (35x35) -> 6a -> 6b..6e (17x17) -> 7a -> 7b, 7c (8x8) -> head; aux head on mixed_6e."""

  def __init__(self, *, num_classes: int, image_size=299, dtype='float32', dropout_rate: float = 0.2,
               aux_heads: bool = False, bn_momentum: float = 0.9997, bn_epsilon: float = 1e-3, bn_scale: bool = False,
               pool_count_padding: bool = False, rngs: nnx.Rngs):
    unit = blocks.setup(self, num_classes=num_classes, image_size=image_size, dtype=dtype, bn_momentum=bn_momentum,
                        bn_epsilon=bn_epsilon, bn_scale=bn_scale, rngs=rngs)
    self.stem = blocks.Steps(3, STEM, unit)
    channels, names = self.stem.out_channels, ['stem']
    for name, spec in BLOCKS:
      block = blocks.Mixed(channels, blocks.count_padding(spec) if pool_count_padding else spec, unit)
      setattr(self, name, block)
      channels = block.out_channels
      names.append(name)
    self.head = blocks.Head(channels, num_classes, dropout_rate, dtype=self.dtype, rngs=rngs)
    self.stage_names = tuple(names) + ('head',)
    self.aux_heads = aux_heads
    self.aux_names = ('aux_6e',) if aux_heads else ()
    self.aux_taps = ('mixed_6e',) if aux_heads else ()
    if aux_heads:
      self.aux_6e = AuxHead(self.mixed_6e.out_channels, tuple(_grid(s) for s in self.image_size), num_classes, unit,
                            dtype=self.dtype, rngs=rngs)


@MODELS.register('inception_v3')
def inception_v3(*, num_classes: int, image_size=299, dtype='float32', dropout_rate: float = 0.2,
                 aux_heads: bool = False, bn_momentum: float = 0.9997, bn_epsilon: float = 1e-3,
                 bn_scale: bool = False, pool_count_padding: bool = False, rngs: nnx.Rngs) -> InceptionV3:
  """Inception-v3 (module docstring); `aux_heads` adds TF-slim's auxiliary classifier (weighted by loss.aux_weight,
  0.4 in the TF-slim recipe); `pool_count_padding` makes the 3x3 average pools divide by 9 at the borders too (PyTorch's
  default, as timm's weights were trained; TF and Keras average over the window's part inside the image)."""
  return InceptionV3(num_classes=num_classes, image_size=image_size, dtype=dtype, dropout_rate=dropout_rate,
                     aux_heads=aux_heads, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, bn_scale=bn_scale,
                     pool_count_padding=pool_count_padding, rngs=rngs)


inception_v3.min_image_size = 75  # Keras' minimum: 75 px gives a 1x1 map after Mixed_7a
