"""`multibox`: a MultiBox proposal head (Erhan et al. 2014) on any Inception backbone of the registry.

The backbone's stages up to its classifier are kept as they are (the same names, so the same parameter paths as the
classification model: a checkpoint of one reads as the other's backbone); its classifier `head` is replaced by
MultiBoxHead, which predicts K boxes and K confidences from the final feature map, and its auxiliary heads are left
out. The output keeps the models' (outputs, aux_outputs) protocol: float32 [B, K, 5], per prediction 4 offsets from
its prior and 1 confidence logit (inception/detection/multibox_loss.py), and (). The priors themselves are data
(k-means over the training boxes, inception/detection/priors.py), not weights: the model only needs their number.

MultiBox is class-agnostic: `num_classes` (the detection data's classes) is not used by the head.
"""
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from inception import models
from inception.config_checks import ConfigError
from inception.models import MODELS
from inception.models import layers
from inception.models import staged


class MultiBoxHead(nnx.Module):
  """1x1 conv (BatchNorm, ReLU) to `channels`, the map resampled to `grid` x `grid`, flattened, a hidden FC layer with
  ReLU, dropout, and a linear layer to 5 numbers per prior. The grid keeps where things are in the image (a global
  pool would not), and fixes the FC layer's size whatever the backbone and the input size."""

  def __init__(self, in_channels: int, num_priors: int, *, channels: int, grid: int, hidden: int,
               dropout_rate: float, bn_momentum: float, bn_epsilon: float, dtype, rngs: nnx.Rngs):
    self.num_priors, self.grid = num_priors, grid
    self.reduce = layers.ConvBNReLU(in_channels, channels, 1, momentum=bn_momentum, epsilon=bn_epsilon, dtype=dtype,
                                    rngs=rngs)
    self.hidden = layers.dense(grid * grid * channels, hidden, bias_init=0.0, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate)  # no rngs of its own: they come with each call, as the classifiers'
    self.out = layers.dense(hidden, 5 * num_priors, bias_init=0.0, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, rngs: Optional[nnx.Rngs] = None) -> jax.Array:
    """[B, H, W, C] -> float32 [B, num_priors, 5]."""
    x = self.reduce(x)
    b, h, w, c = x.shape
    if (h, w) != (self.grid, self.grid):  # area-weighted when shrinking, bilinear when growing
      x = jax.image.resize(x, (b, self.grid, self.grid, c), method='linear', antialias=True)
    x = jax.nn.relu(self.hidden(x.reshape(b, -1)))
    x = self.dropout(x, rngs=rngs)
    return self.out(x).astype(jnp.float32).reshape(b, self.num_priors, 5)


class MultiBoxNet(staged.StagedNet):
  """A backbone's stages, then MultiBoxHead as the 'head' stage; no auxiliary heads."""

  def __init__(self, backbone: staged.StagedNet, head: MultiBoxHead):
    self.dtype = backbone.dtype
    self.image_size = backbone.image_size
    self.deterministic = False
    self.stage_names = tuple(backbone.stage_names)
    for name in self.stage_names[:-1]:
      setattr(self, name, getattr(backbone, name))
    self.head = head
    self.num_priors = head.num_priors
    self.aux_heads, self.aux_names, self.aux_taps = False, (), ()


def _feature_channels(backbone: staged.StagedNet) -> int:
  """The channels of the backbone's last feature map: what its classifier head's linear layer reads (every head of
  the registry pools the map and applies one, `fc`)."""
  return int(backbone.head.fc.in_features)


@MODELS.register('multibox')
def multibox(*, num_classes: int, image_size=224, backbone: str = 'googlenet_bn', num_priors: int = 200,
             head_channels: int = 128, head_grid: int = 4, head_hidden: int = 1024, dropout_rate: float = 0.0,
             dtype: layers.DTypeLike = 'float32', bn_momentum: float = 0.9, bn_epsilon: float = 1e-3,
             rngs: nnx.Rngs) -> MultiBoxNet:
  """MultiBox on `backbone` (any registered Inception model): `num_priors` predictions (K, the number of priors of
  the run's data), the head's width (`head_channels` after the 1x1 conv, a `head_grid` x `head_grid` map,
  `head_hidden` FC units, `dropout_rate` before the output layer). `dtype`, `bn_momentum` and `bn_epsilon` go to the
  backbone where it takes them, and to the head."""
  del num_classes  # class-agnostic (module docstring)
  if backbone == 'multibox' or backbone not in MODELS:
    raise ConfigError(f'--config.model.backbone={backbone!r}: not a backbone; use one of '
                      f'{", ".join(n for n in MODELS.names() if n != "multibox")}.')
  for key, value in (('num_priors', num_priors), ('head_channels', head_channels), ('head_grid', head_grid),
                     ('head_hidden', head_hidden)):
    if value < 1:
      raise ConfigError(f'--config.model.{key}={value}: expected an integer >= 1.')
  least = models.min_image_size(backbone)
  if min(image_size if isinstance(image_size, (tuple, list)) else (image_size,)) < least:
    raise ConfigError(f'--config.pp.image_size={image_size}: the {backbone} backbone needs at least {least} px.')
  takes = set(models.model_keys(backbone))
  options = {k: v for k, v in dict(dtype=dtype, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                                   aux_heads=False).items() if k in takes}
  # The backbone's own classifier is built with a placeholder class count and dropped with it.
  net = MODELS.get(backbone)(num_classes=1, image_size=image_size, rngs=rngs, **options)
  if tuple(net.stage_names)[-1:] != ('head',) or not hasattr(getattr(net, 'head', None), 'fc'):
    raise ConfigError(f'--config.model.backbone={backbone!r}: its last stage is not a classifier head.')
  head = MultiBoxHead(_feature_channels(net), num_priors, channels=head_channels, grid=head_grid,
                      hidden=head_hidden, dropout_rate=dropout_rate, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                      dtype=net.dtype, rngs=rngs)
  return MultiBoxNet(net, head)
