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
  return MODELS.get(name)(num_classes=num_classes, image_size=image_size, rngs=rngs, **kwargs)
