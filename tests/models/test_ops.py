"""models/ops.py: one traced step serves every platform. Exported for TPU and CUDA on this CPU machine, the train and
eval steps of every registered model carry no CPU-only custom call and use XLA's max-pool gradient; lowered for CPU,
the same steps call the CPU kernels, and `config.cpu_kernels=False` turns them all off."""
import re

import jax
import numpy as np
import pytest
from flax import nnx

from configs import googlenet as googlenet_configs
from inception import models, optim, steps
from inception.models import ops, winograd

IMAGE_SIZE = 75  # the largest of the models' minimum input sizes (Inception-v3, v4, ResNet)
BATCH = 2
# Custom calls JAX itself emits for any platform (sharding annotations); anything else is a platform's own kernel.
PORTABLE_CALLS = {'Sharding', 'SPMDFullToShardShape', 'SPMDShardToFullShape'}
# Tracing and lowering a deep network's train step takes 10-60 s on 2 cores: `make test` exports the published
# GoogLeNet and the smoke-test network, `make test-slow` the rest of the family.
FAST_MODELS = ('googlenet', 'inception_tiny')


def _custom_calls(text: str) -> set:
  """The custom-call targets in StableHLO text."""
  return set(re.findall(r'custom_call @(\w+)', text)) | set(re.findall(r'call_target_name = "(\w+)"', text))


def _steps(name: str, cpu_kernels: bool = True):
  """(train step, eval step, their abstract arguments) of model `name` in the `mini` recipe, nothing materialised."""
  config = googlenet_configs.get_config('mini')
  config.model.name = name
  config.model.aux_heads = name.startswith(('googlenet', 'inception_tiny'))  # Inception-v3's needs 299 px
  config.cpu_kernels = cpu_kernels
  schedule = optim.make_schedule(config, steps_per_epoch=10, total_steps=10)
  tx = optim.make_optimizer(config, schedule)
  graphdefs = {}

  def init():
    model = models.build(config.model, num_classes=5, image_size=IMAGE_SIZE, rngs=nnx.Rngs(params=0))
    model.train()
    graphdefs['train'], state = steps.create_train_state(model, tx, seed=0)
    model.eval()
    graphdefs['eval'] = nnx.split(model, nnx.Param, ...)[0]
    return state

  state = jax.eval_shape(init)
  batch = {'image': jax.ShapeDtypeStruct((BATCH, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
           'seed': jax.ShapeDtypeStruct((BATCH, 2), np.uint32),
           'label': jax.ShapeDtypeStruct((BATCH,), np.int32),
           'mask': jax.ShapeDtypeStruct((BATCH,), np.float32)}
  train = (jax.jit(steps.make_train_step(graphdefs['train'], tx, schedule, config)), (state, batch))
  evaluate = (jax.jit(steps.make_eval_step(graphdefs['eval'], config)), (state.params, state.model_state, batch))
  return train, evaluate


# `multibox` is a head on these backbones with its own loss (tasks.py): tests/detection/test_multibox_train.py exports
# its steps.
@pytest.mark.parametrize('name', [n if n in FAST_MODELS else pytest.param(n, marks=pytest.mark.slow)
                                  for n in models.MODELS.names() if n != 'multibox'])
def test_steps_exported_for_accelerators_carry_no_cpu_kernel(name):
  (train, train_args), (evaluate, eval_args) = _steps(name)
  for kind, step, args in (('train', train, train_args), ('eval', evaluate, eval_args)):
    accelerators = jax.export.export(step, platforms=('tpu', 'cuda'))(*args).mlir_module()
    cpu = step.lower(*args).as_text()  # the same trace (jit caches it), lowered for this CPU
    assert _custom_calls(accelerators) <= PORTABLE_CALLS, (kind, _custom_calls(accelerators))
    if winograd.available():
      assert winograd.TARGET in _custom_calls(cpu), (kind, _custom_calls(cpu))
    if kind == 'train':  # XLA's max-pool gradient on accelerators, the custom one on CPU
      assert 'select_and_scatter' in accelerators and 'select_and_scatter' not in cpu


def test_cpu_kernels_off_lowers_xlas_ops_on_cpu():
  (train, train_args), _ = _steps('inception_tiny', cpu_kernels=False)
  cpu = train.lower(*train_args).as_text()
  assert _custom_calls(cpu) <= PORTABLE_CALLS and 'select_and_scatter' in cpu


def test_the_switch_is_scoped_and_defaults_on():
  assert ops.setting({}) is ops.DEFAULT is True
  assert ops.setting({'cpu_kernels': False}) is False
  with ops.cpu_kernels(False):
    with ops.cpu_kernels(True):
      pass
    x = jax.numpy.zeros((1, 4, 4, 1))
    assert 'cond' not in str(jax.make_jaxpr(lambda x: ops.max_pool(x, 3, 1, ((1, 1), (1, 1))))(x))
  assert 'cond' in str(jax.make_jaxpr(lambda x: ops.max_pool(x, 3, 1, ((1, 1), (1, 1))))(x))


def test_the_log_names_the_path():
  assert ops.describe(True, 'gpu').startswith("convolutions: XLA's") and 'gpu' in ops.describe(True, 'gpu')
  assert ops.describe(True, 'cpu').startswith('convolutions: CPU kernels on')
