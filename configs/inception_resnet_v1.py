"""Inception-ResNet-v1 ("Inception-v4, Inception-ResNet and the Impact of Residual Connections", Szegedy et al. 2016)
with its published recipe: the paper's RMSProp (decay 0.9, momentum 0.9, epsilon 1.0), learning rate 0.045 decayed by
0.94 every 2 epochs, and the rest of Inception-v3's setup (configs/inception_v3.py: gradient clipping at 2.0, label
smoothing 0.1, parameter EMA 0.9999, weight decay 4e-5, dropout 0.2), 299 px on ImageNet:

  python -m inception.main --config=configs/inception_resnet_v1.py

`:mini`: the embedded 10-class Caltech 101 subset at 96 px (minutes on 2 CPU cores):

  python -m inception.main --config=configs/inception_resnet_v1.py:mini
"""
import ml_collections

from configs import googlenet
from configs import inception_v3


def imagenet() -> ml_collections.ConfigDict:
  c = inception_v3.rmsprop_recipe(googlenet.imagenet(), inception_v3.model_config('inception_resnet_v1'))
  c.workdir = 'runs/inception_resnet_v1_imagenet'
  return c


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """'' / 'imagenet': the published recipe; 'mini': the embedded data."""
  if arg in ('', 'imagenet'):
    return imagenet()
  if arg == 'mini':
    return inception_v3.mini_variant(imagenet(), 'runs/inception_resnet_v1_mini')
  raise ValueError(f'Unknown inception_resnet_v1 config variant {arg!r}; known: \'\', \'imagenet\', \'mini\'.')
