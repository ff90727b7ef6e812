"""The smoke-test network (models/tiny.py): its shapes, its heads in each mode, and the model keys it shares with
googlenet_bn (so the end-to-end tests can run any `mini` config on it)."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import googlenet as googlenet_config
from inception import models
from inception.models import summary


def test_stages_heads_and_modes():
  model = models.build({'name': 'inception_tiny'}, num_classes=3, image_size=40, rngs=nnx.Rngs(params=0))
  rows, totals = summary.summarize(model, 40)
  shapes = {r.name: r.output_shape for r in rows}
  assert shapes == {'conv1': (1, 20, 20, 32), 'pool1': (1, 10, 10, 32), 'inception_3a': (1, 10, 10, 64),
                    'inception_3b': (1, 10, 10, 120), 'pool2': (1, 5, 5, 120), 'head': (1, 3), 'aux_3a': (1, 3)}
  assert 0 < totals['params_without_aux'] < totals['params'] < 200_000
  images = jnp.asarray(np.random.RandomState(0).uniform(-1, 1, (2, 40, 40, 3)), jnp.float32)
  model.train()
  logits, aux = model(images, rngs=nnx.Rngs(dropout=1))
  assert logits.shape == (2, 3) and [a.shape for a in aux] == [(2, 3)] and logits.dtype == jnp.float32
  model.eval()
  logits, aux = model(images)
  assert aux == () and bool(jnp.all(jnp.isfinite(logits)))
  assert jax.tree.leaves(nnx.state(model, nnx.BatchStat))  # BatchNorm statistics, as in googlenet_bn


def test_takes_the_bn_recipes_model_keys():
  mini = googlenet_config.get_config('mini').model
  assert set(models.model_keys('inception_tiny')) == set(models.model_keys('googlenet_bn'))
  assert models.model_kwargs({**mini, 'name': 'inception_tiny'}).keys() == {k for k in mini if k != 'name'}
