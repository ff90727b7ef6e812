"""`inception_tiny`: a two-Inception-block BatchNorm network for smoke runs and the end-to-end tests.

It is GoogLeNet-BN cut down (a 7x7/2 stem conv, a 3x3/2 pool, Inception blocks 3a and 3b at a quarter of their
widths, a 3x3/2 pool, the classifier head and one small auxiliary head on 3a), made from googlenet.py's own blocks. It
exercises everything the training system does with a model (BatchNorm statistics, aux losses, dropout, the custom
CPU gradients) while compiling in seconds, so tests of the loop, checkpoints, preemption and launchers spend their
time on those and not on XLA. Not a published architecture: never a recipe's model.
"""
import functools

from flax import nnx

from inception.models import MODELS
from inception.models import googlenet
from inception.models import layers
from inception.models import staged

# Blocks 3a and 3b of Table 1 at a quarter of their widths (the 5x5 reductions kept at >= 4).
WIDTHS = {'3a': (16, 24, 32, 4, 8, 8), '3b': (32, 32, 48, 8, 24, 16)}
STAGE_NAMES = ('conv1', 'pool1', 'inception_3a', 'inception_3b', 'pool2', 'head')


class TinyInception(staged.StagedNet):
  """stem conv 7x7/2 (32) -> max pool 3x3/2 -> inception 3a, 3b -> max pool 3x3/2 -> head; aux head on 3a."""

  def __init__(self, *, num_classes: int, image_size: googlenet.ImageSize = 64, dtype: layers.DTypeLike = 'float32',
               dropout_rate: float = 0.4, aux_dropout_rate: float = 0.7, aux_heads: bool = True,
               bn_momentum: float = 0.9, bn_epsilon: float = 1e-3, rngs: nnx.Rngs):
    """The arguments mean what they mean for googlenet.GoogLeNet (with batch_norm=True)."""
    self.num_classes = num_classes
    self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    self.dtype = layers.canonical_dtype(dtype)
    self.deterministic = False
    conv_block = functools.partial(layers.ConvBNReLU, momentum=bn_momentum, epsilon=bn_epsilon, dtype=self.dtype,
                                   rngs=rngs)
    self.conv1 = conv_block(3, 32, 7, stride=2, padding=3)
    self.pool1 = layers.MaxPool(3, 2)
    self.inception_3a = googlenet.Inception(32, WIDTHS['3a'], conv_block)
    self.inception_3b = googlenet.Inception(self.inception_3a.out_channels, WIDTHS['3b'], conv_block)
    self.pool2 = layers.MaxPool(3, 2)
    self.head = googlenet.ClassifierHead(self.inception_3b.out_channels, num_classes, dropout_rate,
                                         dtype=self.dtype, rngs=rngs)
    self.stage_names = STAGE_NAMES
    self.aux_heads = aux_heads
    self.aux_names = ('aux_3a',) if aux_heads else ()
    self.aux_taps = ('inception_3a',) if aux_heads else ()
    if aux_heads:
      tap_size = tuple(layers.pool_out_size(layers.conv_out_size(s, 7, 2, 3), 3, 2) for s in self.image_size)
      self.aux_3a = googlenet.AuxHead(self.inception_3a.out_channels, tap_size, num_classes, aux_dropout_rate,
                                      conv_block, dtype=self.dtype, rngs=rngs,
                                      conv_channels=16, hidden=64)


@MODELS.register('inception_tiny')
def inception_tiny(*, num_classes: int, image_size: googlenet.ImageSize = 64, dtype: layers.DTypeLike = 'float32',
                   dropout_rate: float = 0.4, aux_dropout_rate: float = 0.7, aux_heads: bool = True,
                   bn_momentum: float = 0.9, bn_epsilon: float = 1e-3, rngs: nnx.Rngs) -> TinyInception:
  """The smoke-test network (module docstring); it takes the BN GoogLeNet's model keys, so any `mini` run can switch
  to it with --config.model.name=inception_tiny."""
  return TinyInception(num_classes=num_classes, image_size=image_size, dtype=dtype, dropout_rate=dropout_rate,
                       aux_dropout_rate=aux_dropout_rate, aux_heads=aux_heads, bn_momentum=bn_momentum,
                       bn_epsilon=bn_epsilon, rngs=rngs)


# The aux head's 5x5/3 pool needs a 5 px map after the stem (4x downsampling): 20 px in.
inception_tiny.min_image_size = 20
