"""timm's safetensors onto inception_v3 (with and without its aux head), inception_v4 and inception_resnet_v2: files
written with safetensors' numpy writer under the hub files' exact names and shapes (timm_state_dicts.json), each
tensor with its own random values, so every model array can be traced back to the one tensor it came from.

That timm's forward pass and ours agree on such files (logits within ~3e-6 of their spread) was measured outside the
suite with timm itself (docs/pretrained.md): PyTorch is too heavy to install here.
"""
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from inception.convert import FORMATS, importer, mapping, output
from inception.convert.mapping import ConvertError

HERE = os.path.dirname(os.path.abspath(__file__))
STATE_DICTS = json.load(open(os.path.join(HERE, 'timm_state_dicts.json')))

# A few pairs written out by hand from timm's module names, at the places a converter gets wrong: the stems, v3's
# split 1x3 / 3x1 pair and aux head, v4's stages inside `features` (Mixed3a's pool-first concatenation, InceptionC's
# branch names), Inception-ResNet-v2's repeats, the separate last block8, its biased up-projections, the classifiers.
EXPECTED = {
    'inception_v3': {
        'Conv2d_1a_3x3.conv.weight': 'stem/mixed/conv2d_1a_3x3/conv/kernel',
        'Mixed_5b.branch5x5_2.bn.running_var': 'mixed_5b/branch5x5_2/bn/var',
        'Mixed_6e.branch7x7dbl_4.conv.weight': 'mixed_6e/branch7x7dbl_4/conv/kernel',
        'Mixed_7c.branch3x3dbl_3b.bn.weight': 'mixed_7c/branch3x3dbl_3b/bn/scale',
        'fc.weight': 'head/fc/kernel'},
    'inception_v3_aux': {
        'AuxLogits.conv1.conv.weight': 'aux_6e/conv1/conv/kernel', 'AuxLogits.fc.bias': 'aux_6e/fc/bias',
        'Mixed_7b.branch3x3_2a.bn.bias': 'mixed_7b/branch3x3_2a/bn/bias'},
    'inception_v4': {
        'features.2.conv.weight': 'stem/mixed/conv2d_2b_3x3/conv/kernel',
        'features.3.conv.conv.weight': 'mixed_3a/branch_1/conv/kernel',
        'features.4.branch1.3.bn.running_mean': 'mixed_4a/branch_1d/bn/mean',
        'features.5.conv.bn.bias': 'mixed_5a/branch_0/bn/bias',
        'features.9.branch3.1.conv.weight': 'blocks_a/block_4/branch_pool/conv/kernel',
        'features.10.branch1.2.conv.weight': 'reduction_a/branch_1c/conv/kernel',
        'features.17.branch2.4.conv.weight': 'blocks_b/block_7/branch_2e/conv/kernel',
        'features.18.branch1.3.bn.weight': 'reduction_b/branch_1d/bn/scale',
        'features.21.branch2_3a.conv.weight': 'blocks_c/block_3/branch_2d/conv/kernel',
        'features.19.branch1_1b.conv.weight': 'blocks_c/block_1/branch_1c/conv/kernel',
        'last_linear.weight': 'head/fc/kernel'},
    'inception_resnet_v2': {
        'conv2d_4a.conv.weight': 'stem/mixed/conv2d_4a_3x3/conv/kernel',
        'mixed_5b.branch3.1.conv.weight': 'mixed_5b/branch_pool/conv/kernel',
        'repeat.0.branch2.2.bn.running_var': 'repeat_35/block_1/mixed/branch_2c/bn/var',
        'repeat.9.conv2d.weight': 'repeat_35/block_10/up/kernel',
        'mixed_6a.branch1.2.conv.weight': 'mixed_6a/branch_1c/conv/kernel',
        'repeat_1.19.branch1.1.conv.weight': 'repeat_17/block_20/mixed/branch_1b/conv/kernel',
        'mixed_7a.branch2.2.bn.bias': 'mixed_7a/branch_2c/bn/bias',
        'repeat_2.8.conv2d.bias': 'repeat_8/block_9/up/bias',
        'block8.conv2d.weight': 'repeat_8/block_10/up/kernel',
        'block8.branch1.2.conv.weight': 'repeat_8/block_10/mixed/branch_1c/conv/kernel',
        'conv2d_7b.bn.running_mean': 'conv_7b/bn/mean',
        'classif.bias': 'head/fc/bias'},
}
ROLES = {'conv.weight': 'conv/kernel', 'bn.weight': 'bn/scale', 'bn.bias': 'bn/bias', 'bn.running_mean': 'bn/mean',
         'bn.running_var': 'bn/var'}


def distinct_file(path, name):
  """The state dict `name` with N(0, 1) values drawn per tensor (a 1-in-a-billion tie at most), as timm saves it."""
  rng = np.random.default_rng(0)
  tensors = {}
  for key, shape in STATE_DICTS[name]:
    tensors[key] = (np.array(0, np.int64) if key.endswith('num_batches_tracked')
                    else rng.standard_normal(shape).astype(np.float32))
  save_file(tensors, str(path))
  return tensors


def convert_arrays(model_name, path):
  """The importer's mapping without writing a workdir: (filled model arrays, the file's tensors)."""
  fmt = FORMATS.get('timm_safetensors')
  tensors = fmt.read(str(path))
  config = output.recipe_config(model_name, {**fmt.models[model_name].model, **fmt.model_keys(model_name, tensors)},
                                fmt.models[model_name].pp, '/nonexistent')
  model, params, stats = output.model_arrays(config, 1000)
  a = mapping.Assignment({**params, **stats}, tensors, 'test')
  leave, ignore, _ = fmt.assign(model_name, model, a)
  return a.finish(leave=leave, ignore=ignore), tensors


def torch_layout(key, value):
  if value.ndim == 4:
    return mapping.torch_conv(value)
  return mapping.torch_linear(value) if value.ndim == 2 else value


@pytest.mark.parametrize('name', ['inception_v3'] + [pytest.param(n, marks=pytest.mark.slow) for n in (
    'inception_v3_aux', 'inception_v4', 'inception_resnet_v2')])
def test_every_tensor_lands_once_in_its_place(name, tmp_path):
  model_name = name.replace('_aux', '')
  source = distinct_file(tmp_path / 'model.safetensors', name)
  filled, _ = convert_arrays(model_name, tmp_path / 'model.safetensors')
  by_values = {np.sort(v.ravel()).tobytes(): k for k, v in source.items() if v.ndim}
  origin = {}
  for path, value in filled.items():  # each model array is, as a set of values, exactly one file tensor
    key = by_values.get(np.sort(value.ravel()).tobytes())
    assert key is not None, f'{path} holds no file tensor'
    np.testing.assert_array_equal(value, torch_layout(key, source[key]), err_msg=f'{path} <- {key}: layout')
    origin[path] = key
  weights = {k for k, v in source.items() if v.ndim}
  assert sorted(origin.values()) == sorted(weights)  # every weight used once, for one array each
  for key, path in EXPECTED[name].items():
    assert origin[path] == key, path
  for path, key in origin.items():  # roles: a unit's five arrays come from one timm unit, each in its own role
    for theirs, ours in ROLES.items():
      if key.endswith('.' + theirs):
        assert path.endswith('/' + ours), (path, key)
        assert origin[path[:-len(ours)] + 'conv/kernel'] == key[:-len(theirs)] + 'conv.weight', path


def test_a_file_of_another_model_or_with_a_missing_tensor_is_refused(tmp_path):
  source = distinct_file(tmp_path / 'v3.safetensors', 'inception_v3')
  with pytest.raises(ConvertError, match=r'Conv2d_1a_3x3 has no place in --model=inception_v4'):
    importer.convert('timm_safetensors', 'inception_v4', str(tmp_path / 'v3.safetensors'), str(tmp_path / 'a'))
  del source['Mixed_6b.branch7x7_2.bn.running_var']
  save_file(source, str(tmp_path / 'cut.safetensors'))
  with pytest.raises(ConvertError, match=r'no tensor .Mixed_6b.branch7x7_2.bn.running_var'):
    importer.convert('timm_safetensors', 'inception_v3', str(tmp_path / 'cut.safetensors'), str(tmp_path / 'b'))
  source['Mixed_6b.branch7x7_2.bn.running_var'] = np.ones(128, np.float32)
  source['extra.weight'] = np.ones(3, np.float32)
  save_file(source, str(tmp_path / 'extra.safetensors'))
  with pytest.raises(ConvertError, match=r'layer extra has no place'):
    importer.convert('timm_safetensors', 'inception_v3', str(tmp_path / 'extra.safetensors'), str(tmp_path / 'c'))
  (tmp_path / 'junk.safetensors').write_bytes(b'not a safetensors file')
  with pytest.raises(ConvertError, match=r'is not a safetensors file'):
    importer.convert('timm_safetensors', 'inception_v3', str(tmp_path / 'junk.safetensors'), str(tmp_path / 'd'))
  assert not any((tmp_path / d).exists() for d in 'abcd')  # nothing written for a refused file
