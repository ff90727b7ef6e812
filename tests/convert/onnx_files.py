"""A BVLC GoogLeNet ONNX file written with onnx.helper: the zoo's graph (Caffe's layers, LRN, ceil-rounded pools as
bottom/right padding, Gemm with transB, softmax) and its 116 initializer names and shapes, with weights of our
choice."""
from typing import Dict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from inception.models import googlenet as googlenet_lib
from inception.models import layers

WIDTHS = googlenet_lib.INCEPTION_WIDTHS


def initializer_shapes(num_classes: int = 1000) -> Dict[str, tuple]:
  """Caffe layer tensors `<layer>_w_0` [out, in, kh, kw] and `<layer>_b_0` [out], in the zoo's names."""
  shapes = {'conv1/7x7_s2': (64, 3, 7, 7), 'conv2/3x3_reduce': (64, 64, 1, 1), 'conv2/3x3': (192, 64, 3, 3)}
  c = 192
  for block in ('3a', '3b', '4a', '4b', '4c', '4d', '4e', '5a', '5b'):
    c1, r3, c3, r5, c5, pp = WIDTHS[block]
    shapes.update({f'inception_{block}/1x1': (c1, c, 1, 1), f'inception_{block}/3x3_reduce': (r3, c, 1, 1),
                   f'inception_{block}/3x3': (c3, r3, 3, 3), f'inception_{block}/5x5_reduce': (r5, c, 1, 1),
                   f'inception_{block}/5x5': (c5, r5, 5, 5), f'inception_{block}/pool_proj': (pp, c, 1, 1)})
    c = c1 + c3 + c5 + pp
  out = {}
  for layer, shape in shapes.items():
    out[f'{layer}_w_0'], out[f'{layer}_b_0'] = shape, shape[:1]
  out['loss3/classifier_w_0'], out['loss3/classifier_b_0'] = (num_classes, c), (num_classes,)
  return out


def random_weights(seed: int = 0, num_classes: int = 1000) -> Dict[str, np.ndarray]:
  """He-scaled random weights, so activations neither vanish nor explode through the 22 layers."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in initializer_shapes(num_classes).items():
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    out[name] = (rng.normal(0, np.sqrt(2.0 / fan_in), shape) if len(shape) > 1
                 else rng.uniform(-0.1, 0.1, shape)).astype(np.float32)
  return out


def write(path: str, weights: Dict[str, np.ndarray], size: int = 224, logits: bool = False) -> None:
  """The graph data_0 [1, 3, size, size] (BGR, 0-255 less the mean) -> prob_1 [1, classes], as the zoo's file
  (`logits`: the Gemm's output too, as a second output `logits`, for comparisons that softmax would flatten)."""
  nodes, names = [], iter(range(10 ** 6))

  def node(op, inputs, **attrs) -> str:
    out = f'{op.lower()}_{next(names)}'
    nodes.append(helper.make_node(op, inputs, [out], **attrs))
    return out

  def conv(x, layer, kernel, stride=1, pad=0):
    return node('Relu', [node('Conv', [x, f'{layer}_w_0', f'{layer}_b_0'], kernel_shape=[kernel, kernel],
                              strides=[stride, stride], pads=[pad] * 4)])

  def pool(x, side, window, stride, pad=0):  # Caffe's ceil rounding as extra bottom/right padding
    extra = max((layers.pool_out_size(side, window, stride, pad) - 1) * stride + window - side - 2 * pad, 0)
    return node('MaxPool', [x], kernel_shape=[window, window], strides=[stride, stride],
                pads=[pad, pad, pad + extra, pad + extra]), layers.pool_out_size(side, window, stride, pad)

  lrn = dict(size=5, alpha=1e-4, beta=0.75, bias=1.0)
  x = conv('data_0', 'conv1/7x7_s2', 7, 2, 3)
  side = layers.conv_out_size(size, 7, 2, 3)
  x, side = pool(x, side, 3, 2)
  x = node('LRN', [x], **lrn)
  x = node('LRN', [conv(conv(x, 'conv2/3x3_reduce', 1), 'conv2/3x3', 3, 1, 1)], **lrn)
  x, side = pool(x, side, 3, 2)
  for block in ('3a', '3b', '4a', '4b', '4c', '4d', '4e', '5a', '5b'):
    p = f'inception_{block}'
    branches = [conv(x, f'{p}/1x1', 1), conv(conv(x, f'{p}/3x3_reduce', 1), f'{p}/3x3', 3, 1, 1),
                conv(conv(x, f'{p}/5x5_reduce', 1), f'{p}/5x5', 5, 1, 2), conv(pool(x, side, 3, 1, 1)[0],
                                                                                f'{p}/pool_proj', 1)]
    x = node('Concat', branches, axis=1)
    if block in ('3b', '4e'):
      x, side = pool(x, side, 3, 2)
  x = node('AveragePool', [x], kernel_shape=[side, side], strides=[1, 1])
  x = node('Flatten', [x], axis=1)
  x = node('Gemm', [x, 'loss3/classifier_w_0', 'loss3/classifier_b_0'], transB=1)
  nodes.append(helper.make_node('Softmax', [x], ['prob_1'], axis=1))
  if logits:
    nodes.append(helper.make_node('Identity', [x], ['logits']))
  classes = weights['loss3/classifier_b_0'].shape[0]
  inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()]
  graph = helper.make_graph(nodes, 'bvlc_googlenet', [helper.make_tensor_value_info(
      'data_0', onnx.TensorProto.FLOAT, [1, 3, size, size])], [helper.make_tensor_value_info(
          'prob_1', onnx.TensorProto.FLOAT, [1, classes])] + ([helper.make_tensor_value_info(
              'logits', onnx.TensorProto.FLOAT, [1, classes])] if logits else []), inits)
  onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 9)]), path)


def write_initializers_only(path: str, weights: Dict[str, np.ndarray]) -> None:
  """A graph holding only the initializers (for files that must fail before any node matters)."""
  inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()]
  graph = helper.make_graph([], 'bvlc_googlenet', [], [], inits)
  onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 9)]), path)


def _lrn_op():
  """ONNX's LRN for the reference evaluator: onnx 1.23's own loops over the batch axis instead of the channels (so
  only channel 0 of a 1-image batch is normalised); this one follows the operator's definition."""
  from onnx.reference.op_run import OpRun  # pylint: disable=import-outside-toplevel

  class LRN(OpRun):
    op_domain = ''

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):  # pylint: disable=arguments-differ
      low, high = (size - 1) // 2, size - 1 - (size - 1) // 2
      padded = np.pad(x.astype(np.float64) ** 2, ((0, 0), (low, high), (0, 0), (0, 0)))
      square_sum = sum(padded[:, i:i + x.shape[1]] for i in range(size))
      return ((x / (bias + alpha / size * square_sum) ** beta).astype(x.dtype),)
  return LRN


def run(path: str, image_bgr: np.ndarray):
  """The file's outputs (prob_1[, logits]) for one NCHW image, by onnx's reference (numpy) evaluator."""
  from onnx.reference import ReferenceEvaluator  # pylint: disable=import-outside-toplevel
  return ReferenceEvaluator(path, new_ops=[_lrn_op()]).run(None, {'data_0': image_bgr.astype(np.float32)})
