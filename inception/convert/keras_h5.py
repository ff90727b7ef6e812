"""Keras applications' HDF5 weight files (the legacy layout `keras.applications` downloads): InceptionV3 and
InceptionResNetV2, with or without the top.

The file lists its layers (`layer_names`) in the model's topological order and each layer its weights
(`weight_names`, 'conv2d_5/kernel:0'). Keras numbers unnamed layers in creation order (conv2d, conv2d_1, ...;
batch_normalization, ...), which is the order our model specs create their units (mapping.units), so the numbered
conv / BatchNorm pairs are matched by rank; the named ones by name: `predictions` (the classifier) and, in
InceptionResNetV2, the biased up-projections `block35_K_conv` / `block17_K_conv` / `block8_K_conv` and `conv_7b`.
Kernels are HWIO as here; BatchNorm has no scale and epsilon 1e-3; inputs are scaled to [-1, 1].
"""
import re
from typing import Dict, List

import numpy as np

from inception.convert import FORMATS
from inception.convert import mapping
from inception.convert.mapping import ConvertError

NUMBERED = re.compile(r'^(conv2d|batch_normalization)(?:_(\d+))?$')
REPEATS = {'repeat_35': 'block35', 'repeat_17': 'block17', 'repeat_8': 'block8'}


def _text(value) -> str:
  return value.decode('utf8') if isinstance(value, bytes) else str(value)


class KerasH5:
  """FORMATS['keras_h5']."""

  def __init__(self):
    keras_input = dict(image_size=299, value_range=(-1.0, 1.0), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    self.models = {
        'inception_v3': mapping.Target(dict(bn_scale=False, bn_epsilon=1e-3, aux_heads=False), keras_input),
        'inception_resnet_v2': mapping.Target(dict(bn_scale=False, bn_epsilon=1e-3), keras_input),
    }

  def read(self, path: str) -> Dict[str, np.ndarray]:
    """'layer/weight' -> array for every weight of every layer (':0' suffixes dropped), in the file's layer order."""
    import h5py  # pylint: disable=import-outside-toplevel
    tensors = {}
    try:
      f = h5py.File(path, 'r')
    except OSError as e:
      raise ConvertError(f'{path} is not an HDF5 file ({e}). --format=keras_h5 reads Keras\' .h5 weight files.'
                         ) from None
    with f:
      group = f['model_weights'] if 'model_weights' in f else f  # a whole-model save holds the weights there
      if 'layer_names' not in group.attrs:
        raise ConvertError(f'{path} has no `layer_names` attribute: it is not a Keras weight file in the HDF5 layout '
                           f'(save_weights(..., .h5) or keras.applications\' downloads).')
      for layer in (_text(n) for n in group.attrs['layer_names']):
        for weight in group[layer].attrs.get('weight_names', []):
          name = _text(weight)
          tensors[f'{layer}/{name.split("/")[-1].split(":")[0]}'] = np.asarray(group[layer][name])
    return tensors

  def classifier(self, model_name, tensors):
    return ('predictions/kernel', 'predictions/bias', 1) if 'predictions/kernel' in tensors else None

  def model_keys(self, model_name, tensors):
    return {}

  def numbered(self, tensors, kind: str) -> List[str]:
    """The file's auto-named `kind` layers ('conv2d', 'batch_normalization') in creation order."""
    found = {}
    for key in tensors:
      match = NUMBERED.match(key.split('/')[0])
      if match and match.group(1) == kind:
        found[key.split('/')[0]] = int(match.group(2) or 0)
    return sorted(found, key=found.get)

  def assign(self, model_name, model, a: mapping.Assignment):
    units = mapping.units(model)
    named = {}  # our unit path -> Keras layer name
    for unit in units:
      parts = unit.path.split('/')
      if unit.kind == 'conv' and parts[0] in REPEATS:  # repeat_35/block_3/up -> block35_3_conv
        named[unit.path] = f'{REPEATS[parts[0]]}_{parts[1].split("_")[1]}_conv'
      elif unit.path == 'conv_7b':
        named[unit.path] = 'conv_7b'
      elif unit.path == 'head/fc':
        named[unit.path] = 'predictions'
    auto = [u for u in units if u.path not in named]
    convs, norms = self.numbered(a.source, 'conv2d'), self.numbered(a.source, 'batch_normalization')
    if len(convs) != len(auto) or len(norms) != len(auto):
      raise ConvertError(f'{a.file_what} has {len(convs)} numbered convolutions and {len(norms)} BatchNorm layers, '
                         f'--model={model_name} has {len(auto)} conv-BN units: the file holds another model.')
    for unit, conv, norm in zip(auto, convs, norms):
      mapping.put_conv_bn(a, unit.path, f'{conv}/kernel', f'{norm}/beta', f'{norm}/moving_mean',
                          f'{norm}/moving_variance', gamma=f'{norm}/gamma' if f'{norm}/gamma' in a.source else None)
    for path, layer in named.items():
      if path == 'conv_7b':
        mapping.put_conv_bn(a, path, 'conv_7b/kernel', 'conv_7b_bn/beta', 'conv_7b_bn/moving_mean',
                            'conv_7b_bn/moving_variance')
      elif path == 'head/fc':
        if 'predictions/kernel' in a.source:
          a.put('head/fc/kernel', 'predictions/kernel')
          a.put('head/fc/bias', 'predictions/bias')
      else:
        a.put(f'{path}/kernel', f'{layer}/kernel')
        a.put(f'{path}/bias', f'{layer}/bias')
    notes = [f'{len(auto)} numbered conv-BN pairs matched in creation order']
    return (), (), notes


FORMATS.register('keras_h5')(KerasH5())
