"""Tests for the GoogLeNet models: architecture (shapes, widths, parameter counts), init, modes."""
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from inception.models import MODELS
from inception.models import build
from inception.models import model_kwargs
from inception.config_checks import ConfigError
from configs import googlenet as googlenet_config
from inception.models import googlenet

SPATIAL_224 = {'conv1': 112, 'pool1': 56, 'conv2': 56, 'pool2': 28, 'inception_3a': 28,
               'inception_3b': 28, 'pool3': 14, 'inception_4a': 14, 'inception_4b': 14,
               'inception_4c': 14, 'inception_4d': 14, 'inception_4e': 14, 'pool4': 7,
               'inception_5a': 7, 'inception_5b': 7}
# Caffe rounding at 112 px: 56, 28, 14, 7, then ceil((7 - 3) / 2) + 1 = 3 after pool4.
SPATIAL_112 = {'conv1': 56, 'pool1': 28, 'conv2': 28, 'pool2': 14, 'inception_3a': 14,
               'inception_3b': 14, 'pool3': 7, 'inception_4a': 7, 'inception_4b': 7,
               'inception_4c': 7, 'inception_4d': 7, 'inception_4e': 7, 'pool4': 3,
               'inception_5a': 3, 'inception_5b': 3}
CHANNELS = {'conv1': 64, 'pool1': 64, 'conv2': 192, 'pool2': 192, 'inception_3a': 256,
            'inception_3b': 480, 'pool3': 480, 'inception_4a': 512, 'inception_4b': 512,
            'inception_4c': 512, 'inception_4d': 528, 'inception_4e': 832, 'pool4': 832,
            'inception_5a': 832, 'inception_5b': 1024}


@pytest.fixture(scope='module', autouse=True)
def _quick_xla_compiles():
  """Concrete models here compile ~100 small XLA programs (initializers, forward passes); on a
  2-core CPU skipping XLA's optimization passes roughly halves that. Restored afterwards."""
  flag = 'jax_disable_most_optimizations'
  old = jax.config.values[flag]
  jax.config.update(flag, True)
  yield
  jax.config.update(flag, old)


@nnx.jit
def _forward(model, images, rngs):
  """The model's __call__ under nnx.jit, as a training loop would run it (BN updates persist)."""
  return model(images, rngs=rngs)


def _abstract(name='googlenet', **kwargs):
  """Builds a model shape-only (no parameter values): fast, for architecture checks."""
  kwargs.setdefault('num_classes', 1000)
  return nnx.eval_shape(lambda: MODELS.get(name)(rngs=nnx.Rngs(params=0), **kwargs))


@functools.lru_cache(maxsize=None)
def _concrete(name='googlenet', dtype='float32', aux_heads=True):
  """A real 10-class model at 112 px, built once per session (initializer compiles are slow)."""
  return MODELS.get(name)(num_classes=10, image_size=112, dtype=dtype, aux_heads=aux_heads,
                          rngs=nnx.Rngs(params=0))


def _images(batch=2, size=112, seed=0):
  """Random images in [-1, 1], [batch, size, size, 3] float32."""
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)),
                     jnp.float32)


def _stage_shapes(model, size):
  """Output shape of every stage (inference path), by abstract evaluation."""
  model = nnx.with_attributes(model, deterministic=True, use_running_average=True,
                              raise_if_not_found=False)
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  shapes = {}
  for name in model.stage_names:
    x = jax.eval_shape(lambda s, x, name=name: nnx.merge(graphdef, s).call_stage(name, x),
                       state, x)
    shapes[name] = x.shape
  return shapes


def _abstract_call(model, size, train):
  """Abstractly calls the whole model in train or eval mode; returns (logits, aux) shapes."""
  model = nnx.with_attributes(model, deterministic=not train, use_running_average=not train,
                              raise_if_not_found=False)
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)

  def fn(state, x, key):
    """Rebuilds the model and calls it with a dropout stream."""
    return nnx.merge(graphdef, state)(x, rngs=nnx.Rngs(dropout=key))

  return jax.eval_shape(fn, state, x, jax.random.key(0))


def _num(tree):
  """Number of scalars in a pytree of arrays or shape structs."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('size,spatial', [(224, SPATIAL_224), (112, SPATIAL_112)])
def test_stage_output_shapes(size, spatial):
  """Every stage has the Table 1 shape at 224 px and Caffe-rounded shapes at 112 px."""
  model = _abstract(image_size=size)
  assert model.stage_names[-1] == 'head'
  shapes = _stage_shapes(model, size)
  for name, s in spatial.items():
    assert shapes[name] == (2, s, s, CHANNELS[name]), name
  assert shapes['head'] == (2, 1000)
  assert list(shapes) == list(googlenet.STAGE_NAMES)


@pytest.mark.parametrize('name,size', [('googlenet', 224), ('googlenet', 112),
                                       ('googlenet_bn', 128)])
def test_aux_logits_in_train_mode_only(name, size):
  """Aux logits come back in train mode only, for several input sizes."""
  model = _abstract(name, num_classes=7, image_size=size)
  logits, aux = _abstract_call(model, size, train=True)
  assert (logits.shape, logits.dtype) == ((2, 7), jnp.float32)
  assert [(a.shape, a.dtype) for a in aux] == [((2, 7), jnp.float32)] * 2
  logits, aux = _abstract_call(model, size, train=False)
  assert logits.shape == (2, 7) and aux == ()


def test_without_aux_heads_no_parameters_and_no_aux_logits():
  """aux_heads=False removes the heads entirely."""
  model = _abstract(aux_heads=False)
  assert not hasattr(model, 'aux_4a') and not hasattr(model, 'aux_4d')
  assert not any('aux' in str(path) for path, _ in nnx.to_flat_state(nnx.state(model)))
  _, aux = _abstract_call(model, 224, train=True)
  assert aux == ()


def test_aux_head_input_size_follows_image_size():
  """The aux FC input size is derived from image_size; a wrong input size is reported."""
  assert _abstract(image_size=224).aux_4a.flat_features == 4 * 4 * 128
  assert _abstract(image_size=112).aux_4d.flat_features == 2 * 2 * 128
  with pytest.raises(ValueError, match='image_size'):
    _abstract_call(_abstract(image_size=112), 224, train=True)


def test_parameter_counts_match_the_paper():
  """Exact parameter counts of bvlc_googlenet, with and without aux heads."""
  assert _num(nnx.state(_abstract(aux_heads=False), nnx.Param)) == 6_998_552
  assert _num(nnx.state(_abstract(aux_heads=True), nnx.Param)) == 13_378_280


@pytest.mark.parametrize('aux_heads', [True, False])
def test_batchnorm_variant_parameter_count(aux_heads):
  """The BN variant trades each conv bias for a BN scale and bias, and has no LRN."""
  plain = _abstract(aux_heads=aux_heads)
  bn = _abstract('googlenet_bn', aux_heads=aux_heads)
  conv_channels = sum(m.out_features for _, m in nnx.iter_modules(plain)
                      if isinstance(m, nnx.Conv))
  # Each conv loses its bias (C) and gains a BN scale and bias (2C).
  assert _num(nnx.state(bn, nnx.Param)) == _num(nnx.state(plain, nnx.Param)) + conv_channels
  assert _num(nnx.state(bn, nnx.BatchStat)) == 2 * conv_channels
  assert not any(isinstance(m, nnx.Conv) and m.use_bias for _, m in nnx.iter_modules(bn))
  assert not any(isinstance(m, googlenet.layers.LocalResponseNorm)
                 for _, m in nnx.iter_modules(bn))


def test_inception_widths_and_real_5x5_kernels():
  """Kernel shapes follow Table 1, with real 5x5 convolutions."""
  model = _abstract()
  for block_name, (c1, r3, c3, r5, c5, pp) in googlenet.INCEPTION_WIDTHS.items():
    block = getattr(model, f'inception_{block_name}')
    in_ch = block.conv_1x1.conv.kernel.shape[2]
    assert block.conv_1x1.conv.kernel.shape == (1, 1, in_ch, c1)
    assert block.conv_3x3.conv.kernel.shape == (3, 3, r3, c3)
    assert block.conv_5x5_reduce.conv.kernel.shape == (1, 1, in_ch, r5)
    assert block.conv_5x5.conv.kernel.shape == (5, 5, r5, c5)
    assert block.pool_proj.conv.kernel.shape == (1, 1, in_ch, pp)
  assert model.conv1.conv.kernel.shape == (7, 7, 3, 64)


def test_forward_train_and_eval_concrete():
  """A real forward pass: dropout and aux heads in train mode, deterministic in eval."""
  model = _concrete()
  images = _images()
  model.train()
  assert model.deterministic is False
  logits, aux = _forward(model, images, nnx.Rngs(dropout=0))
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert len(aux) == 2 and all(a.shape == (2, 10) and a.dtype == jnp.float32 for a in aux)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in (logits, *aux))
  other, _ = _forward(model, images, nnx.Rngs(dropout=1))
  assert not np.allclose(np.asarray(logits), np.asarray(other))  # Dropout is active.
  model.eval()
  logits_a, aux = _forward(model, images, None)  # No rngs needed in eval mode.
  logits_b, _ = model(images)  # Eager works too.
  assert aux == ()
  np.testing.assert_allclose(np.asarray(logits_a), np.asarray(logits_b), rtol=1e-5, atol=1e-5)
  view = nnx.view(model, deterministic=False)  # nnx.view also switches the aux heads.
  assert view.deterministic is False and view.head.dropout.deterministic is False
  assert model.deterministic is True


def test_model_state_is_plain_float_params():
  """The model state holds only float32 params (dropout keeps no RNG state)."""
  model = _concrete()
  _, params, rest = nnx.split(model, nnx.Param, ...)
  assert jax.tree.leaves(rest) == []  # No RNG keys or counters in the model.
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


def test_initialization():
  """Kernels are Caffe xavier, biases 0.2 except the three classifiers (0)."""
  model = _concrete()
  classifiers = {model.head.fc, model.aux_4a.classifier, model.aux_4d.classifier}
  n_conv = 0
  for _, m in nnx.iter_modules(model):
    if isinstance(m, (nnx.Conv, nnx.Linear)):
      kernel = np.asarray(m.kernel[...])
      fan_in = math.prod(kernel.shape[:-1])
      assert np.abs(kernel).max() <= math.sqrt(3.0 / fan_in) * (1 + 1e-6)
      np.testing.assert_allclose(kernel.std(), 1.0 / math.sqrt(fan_in), rtol=0.1)
      expected_bias = np.float32(0.0 if m in classifiers else 0.2)
      np.testing.assert_array_equal(np.asarray(m.bias[...]), expected_bias)
      n_conv += isinstance(m, nnx.Conv)
  assert n_conv == 3 + 9 * 6 + 2  # Stem, inception blocks, aux heads.


def test_bfloat16_compute_float32_params_and_logits():
  """bfloat16 compute runs with float32 params and float32 logits."""
  model = _concrete(dtype='bfloat16')
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert model.conv1.conv.dtype == jnp.bfloat16
  model.eval()
  logits, aux = _forward(model, _images(), None)
  assert logits.dtype == jnp.float32 and logits.shape == (2, 10) and aux == ()
  assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_batchnorm_variant_runs_and_updates_batch_stats(dtype):
  """The BN variant runs, updates its batch statistics in train mode, and evaluates."""
  model = _concrete('googlenet_bn', dtype=dtype)
  assert model.conv1.bn.momentum == 0.9 and model.conv1.bn.epsilon == 1e-3
  _, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  assert jax.tree.leaves(rest) == [] and jax.tree.leaves(stats)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((params, stats)))
  before = np.asarray(model.conv1.bn.mean[...]).copy()
  model.train()
  logits, aux = _forward(model, _images(), nnx.Rngs(dropout=0))
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert [a.dtype for a in aux] == [jnp.float32] * 2
  assert not np.allclose(np.asarray(model.conv1.bn.mean[...]), before)
  model.eval()
  logits, aux = _forward(model, _images(), None)
  assert aux == () and logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_build_from_dict_and_config_dict():
  """build() accepts a dict or a ConfigDict and forwards the extra keys."""
  for cfg in ({'name': 'googlenet', 'aux_heads': False},
              ml_collections.ConfigDict({'name': 'googlenet_bn', 'bn_momentum': 0.8})):
    model = nnx.eval_shape(lambda cfg=cfg: build(cfg, num_classes=5, image_size=128, rngs=nnx.Rngs(params=0)))
    assert isinstance(model, googlenet.GoogLeNet)
    assert model.image_size == (128, 128) and model.head.fc.out_features == 5
  assert model.conv1.bn.momentum == 0.8


def test_unknown_model_name_lists_known_names():
  """Unknown names fail with the list of registered models."""
  with pytest.raises(ValueError, match='googlenet, googlenet_bn'):
    MODELS.get('alexnet')
  with pytest.raises(ValueError, match='googlenet'):
    build({'name': 'googlenet_v9'}, num_classes=10, image_size=112, rngs=nnx.Rngs(params=0))
  with pytest.raises(ConfigError, match='model.image_size: the model config must not set it'):
    build({'name': 'googlenet', 'image_size': 96}, num_classes=10, image_size=112, rngs=nnx.Rngs(params=0))


def test_switching_a_bn_recipe_to_the_published_model_just_works():
  """The `mini` recipe's model group has the BN model's keys: with name=googlenet they are left out, not a TypeError;
  a key no model takes is a ConfigError naming it and the chosen model's keys."""
  model_config = googlenet_config.get_config('mini').model
  model_config.name = 'googlenet'
  assert 'bn_momentum' in model_config and 'bn_momentum' not in model_kwargs(model_config)
  model = nnx.eval_shape(lambda: build(model_config, num_classes=3, image_size=64, rngs=nnx.Rngs(params=0)))
  assert isinstance(model, googlenet.GoogLeNet) and not model.batch_norm
  model_config.bn_momentun = 0.9
  with pytest.raises(ConfigError, match='model.bn_momentun: no model takes this key; googlenet takes: aux_dropout_rate'):
    model_kwargs(model_config)
