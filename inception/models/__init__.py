"""Model registry: configs name a model by string, `build` turns the config into an nnx.Module."""
import inspect
from typing import Any, Dict, List, Mapping

from absl import logging
from flax import nnx

from inception.config_checks import ConfigError
from inception.registry import Registry

MODELS = Registry('model')

# Imported for their @MODELS.register side effects (after MODELS exists: they import it).
from inception.models import googlenet  # noqa: E402,F401  pylint: disable=g-import-not-at-top
from inception.models import tiny  # noqa: E402,F401  pylint: disable=g-import-not-at-top
from inception.models import inception_v3  # noqa: E402,F401  pylint: disable=g-import-not-at-top
from inception.models import inception_resnet  # noqa: E402,F401  pylint: disable=g-import-not-at-top
from inception.models import inception_v4  # noqa: E402,F401  pylint: disable=g-import-not-at-top
from inception.models import bn_inception  # noqa: E402,F401  pylint: disable=g-import-not-at-top
from inception.models import multibox  # noqa: E402,F401  pylint: disable=g-import-not-at-top


BUILD_ARGUMENTS = ('num_classes', 'image_size', 'rngs')  # passed by build(), never by the model config
# Model keys of older runs' configs, now decided by `config.cpu_kernels` (ops.py): left out where a config has them.
RETIRED_KEYS = ('custom_gradients', 'winograd', 'fuse_1x1')


def model_keys(name: str) -> List[str]:
  """The model-config keys MODELS[name] takes (its keyword arguments, less BUILD_ARGUMENTS)."""
  return [p for p in inspect.signature(MODELS.get(name)).parameters if p not in BUILD_ARGUMENTS]


def model_kwargs(model_config: Mapping[str, Any]) -> Dict[str, Any]:
  """The keyword arguments for MODELS[model_config.name]: its own keys. Keys that only other models take (the BN
  model's `bn_momentum` after switching a BN recipe to `googlenet`) are left out with a log line; a key no model takes
  is a ConfigError naming it."""
  kwargs = dict(model_config.items())
  name = kwargs.pop('name')
  retired = sorted(key for key in RETIRED_KEYS if kwargs.pop(key, None) is not None)
  if retired:
    logging.info('Model keys %s are retired (config.cpu_kernels switches the CPU kernels): left out.',
                 ', '.join(retired))
  if name not in MODELS:
    raise ConfigError(f'--config.model.name={name!r}: unknown model; known: {", ".join(MODELS.names())}.')
  for reserved in BUILD_ARGUMENTS:
    if reserved in kwargs:
      raise ConfigError(f'--config.model.{reserved}: the model config must not set it; build() passes it.')
  own = set(model_keys(name))
  others = {key: [n for n in MODELS.names() if key in model_keys(n)] for key in kwargs if key not in own}
  unknown = sorted(key for key, users in others.items() if not users)
  if unknown:
    raise ConfigError(f'--config.model.{unknown[0]}: no model takes this key; {name} takes: {", ".join(sorted(own))}.')
  if others:
    logging.info('Model %s does not use %s (keys of %s): left out.', name, ', '.join(sorted(others)),
                 ', '.join(sorted({n for users in others.values() for n in users})))
  return {key: value for key, value in kwargs.items() if key in own}


def min_image_size(name: str) -> int:
  """The smallest input side MODELS[name] is meant for (its `min_image_size`, else 1)."""
  return int(getattr(MODELS.get(name), 'min_image_size', 1))


def check_model_config(model_config: Mapping[str, Any], image_size: int) -> None:
  """ConfigError for an unknown model, a key no model takes, or an image size below the model's minimum."""
  model_kwargs(model_config)
  least = min_image_size(model_config['name'])
  if image_size < least:
    raise ConfigError(f'--config.pp.image_size={image_size}: {model_config["name"]} needs at least {least} px (its '
                      f'stride-2 stages take {least} px to a 1x1 final feature map).')


def build(model_config: Mapping[str, Any], *, num_classes: int, image_size: int, rngs: nnx.Rngs) -> nnx.Module:
  """Builds MODELS[model_config.name] with the config's keys that model takes as keyword arguments (model_kwargs).

  `num_classes` comes from the dataset and `image_size` from `config.pp`, so neither is repeated in the model config.
  `model_config` is an ml_collections.ConfigDict or a dict with key 'name'.
  """
  kwargs = model_kwargs(model_config)
  constructor = MODELS.get(model_config['name'])
  # Built under jit: one compiled initialisation program (cached on disk with JAX_COMPILATION_CACHE_DIR) instead of
  # an eagerly compiled op per weight shape (~20 s for GoogLeNet on 2 CPU cores); the weights are the same bits.
  return nnx.jit(lambda rngs: constructor(num_classes=num_classes, image_size=image_size, rngs=rngs, **kwargs))(rngs)
