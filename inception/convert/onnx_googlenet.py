"""The BVLC GoogLeNet in ONNX (the ONNX model zoo's `bvlc_googlenet`, converted from Caffe's bvlc_googlenet, 68.7%
top-1): the paper's network, LRN and real 5x5 branches, onto the published `googlenet`, read with the onnx package.

Its 116 initializers are the Caffe layers' `<layer>_w_0` [out, in, kh, kw] and `<layer>_b_0`; the classifier
`loss3/classifier_w_0` feeds a Gemm (read as [classes, features] whatever its transB). The file has no auxiliary classifiers: the model's two aux
heads keep their fresh initialisation (used only when fine-tuning). The network takes BGR images in 0-255 minus the
ImageNet mean: the converted model takes RGB (conv1's input channels are reversed, which is exact) and the recorded
input convention is value_range (0, 255) less mean (123.68, 116.779, 103.939) per RGB channel.
"""
from typing import Dict

import numpy as np

from inception.convert import FORMATS
from inception.convert import mapping
from inception.convert.mapping import ConvertError

BLOCKS = ('3a', '3b', '4a', '4b', '4c', '4d', '4e', '5a', '5b')
BRANCHES = {'1x1': 'conv_1x1', '3x3_reduce': 'conv_3x3_reduce', '3x3': 'conv_3x3', '5x5_reduce': 'conv_5x5_reduce',
            '5x5': 'conv_5x5', 'pool_proj': 'pool_proj'}
# Caffe layer -> our conv module path.
LAYERS = {'conv1/7x7_s2': 'conv1/conv', 'conv2/3x3_reduce': 'conv2/reduce/conv', 'conv2/3x3': 'conv2/conv/conv',
          **{f'inception_{b}/{caffe}': f'inception_{b}/{ours}/conv'
             for b in BLOCKS for caffe, ours in BRANCHES.items()}}
CLASSIFIER = 'loss3/classifier'


class OnnxGoogLeNet:
  """FORMATS['onnx']."""

  def __init__(self):
    self.models = {'googlenet': mapping.Target(
        dict(aux_heads=True),
        dict(image_size=224, value_range=(0.0, 255.0), mean=(123.68, 116.779, 103.939), std=(1.0, 1.0, 1.0),
             eval=dict(crop_ratio=0.875)))}

  def read(self, path: str) -> Dict[str, np.ndarray]:
    import onnx  # pylint: disable=import-outside-toplevel
    from onnx import numpy_helper  # pylint: disable=import-outside-toplevel
    try:
      model = onnx.load(path)
    except Exception as e:  # pylint: disable=broad-except  (protobuf's DecodeError and friends)
      raise ConvertError(f'{path} is not an ONNX model ({type(e).__name__}: {e}). --format=onnx reads the ONNX '
                         f'zoo\'s bvlc_googlenet (model.onnx).') from None
    tensors = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:  # the classifier as [classes, features] whatever the Gemm's transB
      if node.op_type == 'Gemm' and f'{CLASSIFIER}_w_0' in node.input and f'{CLASSIFIER}_w_0' in tensors:
        if not next((a.i for a in node.attribute if a.name == 'transB'), 0):
          tensors[f'{CLASSIFIER}_w_0'] = tensors[f'{CLASSIFIER}_w_0'].T
    return tensors

  def classifier(self, model_name, tensors):
    return (f'{CLASSIFIER}_w_0', f'{CLASSIFIER}_b_0', 0) if f'{CLASSIFIER}_w_0' in tensors else None

  def model_keys(self, model_name, tensors):
    return {}

  def assign(self, model_name, model, a: mapping.Assignment):
    for layer, path in LAYERS.items():
      kernel = mapping.torch_conv(a.get(f'{layer}_w_0'))
      if layer == 'conv1/7x7_s2':
        kernel = kernel[:, :, ::-1, :]  # BGR -> RGB input channels
      a.put(f'{path}/kernel', f'{layer}_w_0', kernel)
      a.put(f'{path}/bias', f'{layer}_b_0')
    a.put('head/fc/kernel', f'{CLASSIFIER}_w_0', mapping.torch_linear(a.get(f'{CLASSIFIER}_w_0')))
    a.put('head/fc/bias', f'{CLASSIFIER}_b_0')
    aux = tuple(model.aux_names)
    shapes = [k for k, v in a.source.items() if not np.issubdtype(v.dtype, np.floating)]  # e.g. a Reshape's shape
    return aux, shapes, [f'{len(LAYERS) + 1} Caffe layers mapped by name; conv1 takes RGB (its BGR input channels '
                     f'reversed); the file has no aux classifiers: {", ".join(aux)} left at their initialisation']


FORMATS.register('onnx')(OnnxGoogLeNet())
