"""Keras applications' HDF5 weights onto inception_v3 and inception_resnet_v2: Keras 3 models with random weights
saved in the legacy layout, converted, and the logits compared with Keras' on the same images (max abs difference
under 1e-4 in float32); a file without the top; a file of the other model."""
import h5py
import jax
import numpy as np
import pytest
from flax import nnx

from inception import trained
from inception.convert import importer
from inception.convert.mapping import ConvertError
from tests.convert import keras_files

SIZE = 75  # Keras' smallest input for these models


def our_logits(workdir, images):
  run = trained.load(str(workdir), jax.make_mesh((1,), ('data',)))
  return np.asarray(nnx.merge(run.graphdef, run.params, run.model_state)(images)[0]), run


@pytest.fixture(scope='module')
def keras_v3(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('keras') / 'inception_v3.h5')
  model = keras_files.build('inception_v3', SIZE, classes=10)
  keras_files.save(model, path)
  return path, model


def test_inception_v3_gives_keras_logits(keras_v3, tmp_path):
  path, model = keras_v3
  images = np.random.default_rng(1).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
  record = importer.convert('keras_h5', 'inception_v3', path, str(tmp_path / 'out'), image_size=SIZE)
  assert record['tensors_used'] == 94 * 4 + 2 and not record['left_initialised']  # kernel + 3 BN arrays per unit
  ours, run = our_logits(tmp_path / 'out', images)
  theirs = keras_files.logits(model, images)
  assert theirs.std() > 0.1 and np.abs(ours - theirs).max() < 1e-4
  assert run.config.model.bn_scale is False and tuple(run.config.pp.value_range) == (-1.0, 1.0)


@pytest.mark.slow
def test_inception_resnet_v2_gives_keras_logits(tmp_path):
  """203 numbered conv-BN pairs, the 40 named biased up-projections, conv_7b and the unscaled last block8."""
  model = keras_files.build('inception_resnet_v2', SIZE, classes=10)
  keras_files.save(model, str(tmp_path / 'irv2.h5'))
  images = np.random.default_rng(1).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
  record = importer.convert('keras_h5', 'inception_resnet_v2', str(tmp_path / 'irv2.h5'), str(tmp_path / 'out'),
                            image_size=SIZE)
  assert record['tensors_used'] == 204 * 4 + 40 * 2 + 2
  ours, _ = our_logits(tmp_path / 'out', images)
  theirs = keras_files.logits(model, images)
  assert theirs.std() > 0.1 and np.abs(ours - theirs).max() < 1e-4


@pytest.mark.slow  # the logits test keeps the Keras fixture in `make test`
def test_a_file_without_the_top_leaves_the_head_initialised(keras_v3, tmp_path):
  """include_top=False files (`..._notop.h5`): every backbone tensor used, the classifier left at its
  initialisation for 1000 classes (to be fine-tuned)."""
  notop = str(tmp_path / 'notop.h5')
  with h5py.File(keras_v3[0], 'r') as src, h5py.File(notop, 'w') as dst:
    names = [n for n in src.attrs['layer_names'] if (n.decode() if isinstance(n, bytes) else n) != 'predictions']
    for key, value in src.attrs.items():
      dst.attrs[key] = value
    dst.attrs['layer_names'] = names
    for name in names:
      src.copy(src[name], dst, name=name)
  record = importer.convert('keras_h5', 'inception_v3', notop, str(tmp_path / 'out'), image_size=SIZE)
  assert record['left_initialised'] == ['head/fc/bias', 'head/fc/kernel'] and record['num_classes'] == 1000
  assert 'no classifier' in record['classes']


@pytest.mark.slow  # the logits test keeps the Keras fixture in `make test`
def test_the_wrong_model_for_the_file_is_refused(keras_v3, tmp_path):
  with pytest.raises(ConvertError, match=r'94 numbered convolutions .*inception_resnet_v2 has 203 conv-BN units'):
    importer.convert('keras_h5', 'inception_resnet_v2', keras_v3[0], str(tmp_path / 'a'), image_size=SIZE)
  (tmp_path / 'junk.h5').write_bytes(b'not hdf5')
  with pytest.raises(ConvertError, match=r'is not an HDF5 file'):
    importer.convert('keras_h5', 'inception_v3', str(tmp_path / 'junk.h5'), str(tmp_path / 'b'))
  assert not (tmp_path / 'a').exists() and not (tmp_path / 'b').exists()
