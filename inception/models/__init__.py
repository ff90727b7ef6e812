"""Model registry: configs name a model by string, `build` turns the config into an nnx.Module."""
from typing import Any, Mapping

from flax import nnx

from inception.registry import Registry

MODELS = Registry('model')

# Imported for their @MODELS.register side effects (after MODELS exists: they import it).
from inception.models import googlenet  # noqa: E402,F401  pylint: disable=g-import-not-at-top


def build(model_config: Mapping[str, Any], *, num_classes: int, image_size: int, rngs: nnx.Rngs) -> nnx.Module:
  """Builds MODELS[model_config.name] with the config's other keys as keyword arguments.

  `num_classes` comes from the dataset and `image_size` from `config.pp`, so neither is repeated in the model config.

  `model_config` is an ml_collections.ConfigDict or a dict with key 'name'.
  """
  kwargs = dict(model_config.items())
  name = kwargs.pop('name')
  for reserved in ('num_classes', 'image_size', 'rngs'):
    if reserved in kwargs:
      raise ValueError(f'model config must not set {reserved!r}; it is passed to build().')
  constructor = MODELS.get(name)
  # Built under jit: one compiled initialisation program (cached on disk with JAX_COMPILATION_CACHE_DIR) instead of
  # an eagerly compiled op per weight shape (~20 s for GoogLeNet on 2 CPU cores); the weights are the same bits.
  return nnx.jit(lambda rngs: constructor(num_classes=num_classes, image_size=image_size, rngs=rngs, **kwargs))(rngs)
