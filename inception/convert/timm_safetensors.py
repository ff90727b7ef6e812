"""timm's safetensors weight files for inception_v3, inception_v4 and inception_resnet_v2 (the hub's
`model.safetensors`, or `save_file(model.state_dict())`), read with safetensors' numpy API.

Conv-BN units are `<name>.conv.weight` [out, in, kh, kw] with `<name>.bn.{weight, bias, running_mean, running_var}`
(affine BatchNorm, epsilon 1e-3, so the model is built with bn_scale=True); Inception-ResNet-v2's residual
up-projections are biased convolutions (`<name>.conv2d.{weight, bias}`); the classifier is `fc` (v3), `last_linear` (v4)
or `classif` (v2); v3's aux head is `AuxLogits.*` (only in the `tv_in1k` weights). A safetensors file keeps its tensors
sorted by name, not in module order, so each timm layer name is translated to ours (`our_path`). `num_batches_tracked`
counts training steps and carries no weights. v3 averages its 3x3 pools over the whole window, padding included
(PyTorch's default), so its model is built with pool_count_padding=True. Inputs: mean and std 0.5, i.e. [-1, 1] (timm's
pretrained configs)."""
from typing import Dict, List, Tuple

import numpy as np

from inception.convert import FORMATS
from inception.convert import mapping
from inception.convert.mapping import ConvertError

CLASSIFIERS = {'inception_v3': 'fc', 'inception_v4': 'last_linear', 'inception_resnet_v2': 'classif'}
BN = ('weight', 'bias', 'running_mean', 'running_var')


def file_units(keys) -> List[Tuple[str, str]]:
  """(prefix, kind) of the file's units: 'conv_bn' (`p.conv.weight` with `p.bn.*`) or 'plain' (`p.weight` with
  `p.bias`: a linear layer, or a biased convolution)."""
  out, key_set = {}, set(keys)
  for key in keys:
    if key.endswith('.conv.weight') and key[:-len('conv.weight')] + 'bn.running_mean' in key_set:
      out.setdefault(key[:-len('.conv.weight')], 'conv_bn')
    elif '.bn.' in key and key.split('.bn.')[0] + '.conv.weight' in key_set:
      out.setdefault(key.split('.bn.')[0], 'conv_bn')
    elif key.endswith('.weight') or key.endswith('.bias'):
      out.setdefault(key.rsplit('.', 1)[0], 'plain')
  return list(out.items())


V4_STAGES = {0: 'stem/mixed/conv2d_1a_3x3', 1: 'stem/mixed/conv2d_2a_3x3', 2: 'stem/mixed/conv2d_2b_3x3', 3: 'mixed_3a',
             4: 'mixed_4a', 5: 'mixed_5a', 10: 'reduction_a', 18: 'reduction_b',
             **{i: f'blocks_a/block_{i - 5}' for i in range(6, 10)},
             **{i: f'blocks_b/block_{i - 10}' for i in range(11, 18)},
             **{i: f'blocks_c/block_{i - 18}' for i in range(19, 22)}}
V4_MIXED_3A_5A = {'features.3.conv': 'mixed_3a/branch_1', 'features.5.conv': 'mixed_5a/branch_0'}
V4_BLOCK_C = {'branch1_0': 'branch_1a', 'branch1_1a': 'branch_1b', 'branch1_1b': 'branch_1c', 'branch2_0': 'branch_2a',
              'branch2_1': 'branch_2b', 'branch2_2': 'branch_2c', 'branch2_3a': 'branch_2d', 'branch2_3b': 'branch_2e'}
V2_STEM = {'conv2d_1a': 'conv2d_1a_3x3', 'conv2d_2a': 'conv2d_2a_3x3', 'conv2d_2b': 'conv2d_2b_3x3',
           'conv2d_3b': 'conv2d_3b_1x1', 'conv2d_4a': 'conv2d_4a_3x3'}
V2_REPEATS = {'repeat': 'repeat_35', 'repeat_1': 'repeat_17', 'repeat_2': 'repeat_8'}


def _branch(parts: List[str]) -> str:
  """timm's branch naming inside a block -> ours: `branch3.1` (the conv after the pool) -> branch_pool, `branchN` ->
  branch_N, `branchN.j` -> branch_N + 'abcde'[j]."""
  name = parts[0]
  if name in V4_BLOCK_C:
    return V4_BLOCK_C[name]
  if name == 'branch3' and parts[1:] == ['1']:
    return 'branch_pool'
  number = name[len('branch'):]
  return f'branch_{number}' + ('abcde'[int(parts[1])] if len(parts) > 1 else '')


def our_path(model_name: str, prefix: str) -> str:
  """The unit path here of timm unit `prefix` (e.g. 'features.21.branch2_3a' -> 'blocks_c/block_3/branch_2e')."""
  parts = prefix.split('.')
  if model_name == 'inception_v3':
    if prefix == 'fc':
      return 'head/fc'
    if parts[0] == 'AuxLogits':
      return 'aux_6e/' + '/'.join(parts[1:])
    if parts[0].startswith('Conv2d_'):
      return 'stem/mixed/' + parts[0].lower()
    return '/'.join([parts[0].lower()] + parts[1:])
  if model_name == 'inception_v4':
    if prefix == 'last_linear':
      return 'head/fc'
    if prefix in V4_MIXED_3A_5A:
      return V4_MIXED_3A_5A[prefix]
    stage = V4_STAGES.get(int(parts[1])) if parts[0] == 'features' and parts[1].isdigit() else None
    if stage is None or (stage.startswith('stem') and len(parts) > 2):
      return prefix
    return stage if stage.startswith('stem') else f'{stage}/{_branch(parts[2:])}'
  if prefix == 'classif':  # inception_resnet_v2
    return 'head/fc'
  if prefix == 'conv2d_7b':
    return 'conv_7b'
  if parts[0] in V2_STEM:
    return 'stem/mixed/' + V2_STEM[parts[0]]
  if parts[0] in ('mixed_5b', 'mixed_6a', 'mixed_7a'):
    return f'{parts[0]}/{_branch(parts[1:])}'
  if parts[0] in V2_REPEATS or parts[0] == 'block8':
    block = (f'{V2_REPEATS[parts[0]]}/block_{int(parts[1]) + 1}', parts[2:]) if parts[0] in V2_REPEATS else (
        'repeat_8/block_10', parts[1:])
    path, rest = block
    return f'{path}/up' if rest == ['conv2d'] else f'{path}/mixed/{_branch(rest)}'
  return prefix


class TimmSafetensors:
  """FORMATS['timm_safetensors']."""

  def __init__(self):
    timm_input = dict(image_size=299, value_range=(-1.0, 1.0), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    timm_bn = dict(bn_scale=True, bn_epsilon=1e-3)
    self.models = {
        'inception_v3': mapping.Target(dict(timm_bn, pool_count_padding=True), dict(timm_input,
                                                                                   eval=dict(crop_ratio=0.875))),
        'inception_v4': mapping.Target(timm_bn, dict(timm_input, eval=dict(crop_ratio=0.875))),
        'inception_resnet_v2': mapping.Target(timm_bn, dict(timm_input, eval=dict(crop_ratio=0.8975))),
    }

  def read(self, path: str) -> Dict[str, np.ndarray]:
    from safetensors import SafetensorError  # pylint: disable=import-outside-toplevel
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    try:
      return dict(load_file(path))
    except (SafetensorError, OSError) as e:
      raise ConvertError(f'{path} is not a safetensors file ({e}). --format=timm_safetensors reads timm\'s '
                         f'model.safetensors.') from None

  def classifier(self, model_name, tensors):
    name = CLASSIFIERS[model_name]
    return (f'{name}.weight', f'{name}.bias', 0) if f'{name}.weight' in tensors else None

  def model_keys(self, model_name, tensors):
    return {'aux_heads': any(k.startswith('AuxLogits.') for k in tensors)} if model_name == 'inception_v3' else {}

  def assign(self, model_name, model, a: mapping.Assignment):
    ours = {unit.path: unit.kind for unit in mapping.units(model)}
    for prefix, kind in file_units(a.source):
      path = our_path(model_name, prefix)
      if path not in ours:
        raise ConvertError(f'{a.file_what}: layer {prefix} has no place in --model={model_name} (it would be {path}): '
                           f'the file holds another model. Check --model.')
      if kind == 'conv_bn':
        mapping.put_conv_bn(a, path, f'{prefix}.conv.weight', f'{prefix}.bn.bias', f'{prefix}.bn.running_mean',
                            f'{prefix}.bn.running_var', gamma=f'{prefix}.bn.weight', kernel_layout=mapping.torch_conv)
      else:
        weight = a.get(f'{prefix}.weight')
        a.put(f'{path}/kernel', f'{prefix}.weight',
              mapping.torch_conv(weight) if weight.ndim == 4 else mapping.torch_linear(weight))
        a.put(f'{path}/bias', f'{prefix}.bias')
    ignore = [k for k in a.source if k.endswith('.num_batches_tracked')]
    return (), ignore, [f'{len(ours)} layers mapped by name; {len(ignore)} num_batches_tracked counters skipped']


FORMATS.register('timm_safetensors')(TimmSafetensors())
