"""The BVLC GoogLeNet in ONNX onto the published `googlenet`: the same outputs as the ONNX graph (run by onnx's
reference evaluator) on the same RGB image through the recorded input convention, every one of the zoo's 116 tensors
in its place, the background class of a 1001-class file, and the refusals."""
import json

import jax
import numpy as np
import pytest
from etils import epath
from flax import nnx

from inception import augment, finetune, trained
from inception.config_checks import ConfigError
from inception.convert import importer
from inception.convert.mapping import ConvertError
from inception.convert.onnx_googlenet import LAYERS
from tests.services.gcs import gcs, gcs_emulator  # noqa: F401  pylint: disable=unused-import  (fixtures)
from tests.convert import onnx_files

SIZE = 64  # the graph is built for this input side; the layers and their tensors are the same at any size


def test_the_converted_model_gives_the_onnx_graphs_logits(tmp_path):
  """An RGB image in [0, 1] through the recorded pp (0-255 less the ImageNet mean) into our model, and in BGR into the
  ONNX graph: logits within 2e-5 of their spread (float32 through 22 layers); the softmax is the file's prob_1."""
  path = str(tmp_path / 'googlenet.onnx')
  onnx_files.write(path, onnx_files.random_weights(0, 1000), SIZE, logits=True)
  record = importer.convert('onnx', 'googlenet', path, str(tmp_path / 'out'), image_size=SIZE)
  assert record['tensors_used'] == 116 and record['num_classes'] == 1000
  assert {p.split('/')[0] for p in record['left_initialised']} == {'aux_4a', 'aux_4d'}
  run = trained.load(str(tmp_path / 'out'), jax.make_mesh((1,), ('data',)))
  assert run.class_names[0] == 'n01440764' and len(run.class_names) == 1000
  rgb = np.random.default_rng(1).uniform(0, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
  x = np.asarray(augment.scaled(rgb, run.config.pp))  # the converted run's own input convention
  assert tuple(run.config.pp.value_range) == (0.0, 255.0) and tuple(run.config.pp.mean) == (123.68, 116.779, 103.939)
  prob, logits = onnx_files.run(path, np.ascontiguousarray(x[..., ::-1].transpose(0, 3, 1, 2)))
  ours = np.asarray(nnx.merge(run.graphdef, run.params, run.model_state)(x)[0])
  assert logits.std() > 1.0 and np.abs(ours - logits).max() < 2e-5 * logits.std()
  np.testing.assert_allclose(np.asarray(jax.nn.softmax(ours)), prob, atol=1e-5)


def test_every_tensor_lands_once_in_its_place(tmp_path):
  """Distinct values per tensor: each Caffe layer's kernel (as HWIO; conv1's input channels reversed, BGR -> RGB) and
  bias in its module, the classifier transposed (the Gemm's transB)."""
  weights = {k: np.random.default_rng(i).standard_normal(v.shape).astype(np.float32)
             for i, (k, v) in enumerate(onnx_files.random_weights(0, 1000).items())}
  onnx_files.write(str(tmp_path / 'g.onnx'), weights, SIZE)
  importer.convert('onnx', 'googlenet', str(tmp_path / 'g.onnx'), str(tmp_path / 'out'), image_size=SIZE)
  params, stats, _ = finetune.read_weights(str(tmp_path / 'out'))
  assert not stats
  expect = {'conv1/conv/kernel': weights['conv1/7x7_s2_w_0'].transpose(2, 3, 1, 0)[:, :, ::-1],
            'inception_4e/conv_5x5_reduce/conv/bias': weights['inception_4e/5x5_reduce_b_0'],
            'inception_5b/pool_proj/conv/kernel': weights['inception_5b/pool_proj_w_0'].transpose(2, 3, 1, 0),
            'conv2/conv/conv/kernel': weights['conv2/3x3_w_0'].transpose(2, 3, 1, 0),
            'head/fc/kernel': weights['loss3/classifier_w_0'].T}
  for path, value in expect.items():
    np.testing.assert_array_equal(params[path], value, err_msg=path)
  used = set()
  for layer, path in LAYERS.items():
    kernel = weights[f'{layer}_w_0'].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(params[f'{path}/kernel'], kernel[:, :, ::-1] if layer == 'conv1/7x7_s2' else kernel)
    np.testing.assert_array_equal(params[f'{path}/bias'], weights[f'{layer}_b_0'])
    used |= {f'{path}/kernel', f'{path}/bias'}
  non_aux = {p for p in params if not p.startswith('aux_')}
  assert non_aux - used == {'head/fc/kernel', 'head/fc/bias'} and len(LAYERS) + 1 == 58  # + the classifier


def test_a_1001_class_file_loses_its_background_class(tmp_path):
  """Caffe / TF-slim style files with 1001 outputs (background at 0): dropped by default, so class i here is the
  file's class i + 1, named by ImageNet's synsets; `background='keep'` keeps all 1001, the first named 'background'."""
  weights = onnx_files.random_weights(0, 1001)
  onnx_files.write(str(tmp_path / 'g.onnx'), weights, SIZE)
  record = importer.convert('onnx', 'googlenet', str(tmp_path / 'g.onnx'), str(tmp_path / 'out'), image_size=SIZE)
  assert record['num_classes'] == 1000 and 'background class (index 0) dropped' in record['classes']
  params, _, _ = finetune.read_weights(str(tmp_path / 'out'))
  np.testing.assert_array_equal(params['head/fc/kernel'], weights['loss3/classifier_w_0'][1:].T)
  np.testing.assert_array_equal(params['head/fc/bias'], weights['loss3/classifier_b_0'][1:])
  names = json.load(open(tmp_path / 'out' / 'classes.json'))
  assert len(names) == 1000 and names[0] == 'n01440764' and names[-1] == 'n15075141'
  kept = importer.convert('onnx', 'googlenet', str(tmp_path / 'g.onnx'), str(tmp_path / 'kept'), image_size=SIZE,
                          background='keep')
  assert kept['num_classes'] == 1001
  assert json.load(open(tmp_path / 'kept' / 'classes.json'))[:2] == ['background', 'n01440764']


def test_refusals_name_the_problem_and_write_nothing(tmp_path):
  weights = onnx_files.random_weights(0, 10)
  del weights['inception_4c/3x3_b_0']
  onnx_files.write_initializers_only(str(tmp_path / 'cut.onnx'), weights)
  with pytest.raises(ConvertError, match=r"no tensor 'inception_4c/3x3_b_0'"):
    importer.convert('onnx', 'googlenet', str(tmp_path / 'cut.onnx'), str(tmp_path / 'a'), image_size=SIZE)
  (tmp_path / 'junk.onnx').write_bytes(b'\x00not a protobuf at all' * 10)
  with pytest.raises(ConvertError, match=r'is not an ONNX model'):
    importer.convert('onnx', 'googlenet', str(tmp_path / 'junk.onnx'), str(tmp_path / 'b'))
  with pytest.raises(ConvertError, match=r'--format=onnx converts googlenet, not --model=inception_v3'):
    importer.convert('onnx', 'inception_v3', str(tmp_path / 'junk.onnx'), str(tmp_path / 'c'))
  with pytest.raises(ConvertError, match=r'no such file'):
    importer.convert('onnx', 'googlenet', str(tmp_path / 'missing.onnx'), str(tmp_path / 'd'))
  assert not any((tmp_path / d).exists() for d in 'abcd')


def test_another_input_convention_is_recorded_and_checked(tmp_path):
  """Weights trained with another convention than the format's usual (e.g. timm's gluon_in1k v3, ImageNet's mean and
  std): the given keys replace the format's in the workdir's config; a malformed one is a ConfigError."""
  onnx_files.write(str(tmp_path / 'g.onnx'), onnx_files.random_weights(0, 10), SIZE)
  imagenet = dict(value_range=(0.0, 1.0), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
  record = importer.convert('onnx', 'googlenet', str(tmp_path / 'g.onnx'), str(tmp_path / 'out'), image_size=SIZE,
                            input_convention=imagenet)
  config = json.load(open(tmp_path / 'out' / 'config.json'))
  for key, value in imagenet.items():
    assert tuple(config['pp'][key]) == value and tuple(record['pp'][key]) == value
  with pytest.raises(ConfigError, match=r'--config.pp.std=\(0.2, 0.0, 0.2\): expected three numbers > 0'):
    importer.convert('onnx', 'googlenet', str(tmp_path / 'g.onnx'), str(tmp_path / 'bad'), image_size=SIZE,
                     input_convention=dict(std=(0.2, 0.0, 0.2)))


def test_a_gs_out_is_written_through_the_path_library(tmp_path, gcs):
  """--out on gs:// (the Cloud Storage emulator, tests/services/gcs.py): the config, record and step-0 checkpoint land
  in the bucket and load back from the URL; a second conversion there is refused."""
  onnx_files.write(str(tmp_path / 'g.onnx'), onnx_files.random_weights(0, 10), SIZE)
  out = f'{gcs}/out'
  importer.convert('onnx', 'googlenet', str(tmp_path / 'g.onnx'), out, image_size=SIZE)
  run = trained.load(out, jax.make_mesh((1,), ('data',)))
  with pytest.raises(ConvertError, match=rf'{out} already holds a run'):
    importer.convert('onnx', 'googlenet', str(tmp_path / 'g.onnx'), out, image_size=SIZE)
  assert run.step == 0 and run.num_classes == 10
  assert json.loads(epath.Path(out, 'converted.json').read_text())['tensors_used'] == 116
