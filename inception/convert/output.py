"""The converted workdir: the model's recipe config with the weights' input convention, ImageNet's class names and
a step-0 checkpoint whose raw and EMA weights are the imported ones, written through the loop's own Checkpointer.

`inception.evaluate`, `inception.predict` and `--config.init_from` then read it as they read a trained run.
"""
import json
import os
import sys
from typing import Any, Dict, List, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx, traverse_util

from inception import checkpoint, config_checks, models, optim, steps
from inception import workdir as workdir_lib
from inception.convert.mapping import ConvertError

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'configs')
IMAGENET_LABELS = ('tensorflow_datasets', 'datasets', 'imagenet2012', 'labels.txt')


def imagenet_synsets() -> List[str]:
  """ImageNet's 1000 class synsets (n01440764, ...) in label order, from the list tensorflow-datasets ships: the
  order Keras, timm and Caffe's models index their outputs in (less the background class of 1001-class files)."""
  import tensorflow_datasets  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.dirname(os.path.dirname(tensorflow_datasets.__file__)), *IMAGENET_LABELS)
  with open(path) as f:
    names = [line.strip() for line in f if line.strip()]
  assert len(names) == 1000, path
  return names


def recipe_config(model_name: str, model_keys: Mapping[str, Any], pp: Mapping[str, Any], out: str
                  ) -> ml_collections.ConfigDict:
  """configs/<model_name>.py's published recipe with the imported model's keys, input convention and workdir."""
  path = os.path.join(CONFIGS, f'{model_name}.py')
  root = os.path.dirname(CONFIGS)
  if root not in sys.path:  # the recipes import each other as `configs.*`
    sys.path.insert(0, root)
  config = config_checks.load_config(path)
  config.model.update(dict(model_keys))
  for key, value in pp.items():
    if isinstance(value, Mapping):
      config.pp[key].update(dict(value))
    else:
      config.pp[key] = tuple(value) if isinstance(value, (list, tuple)) else value
  config.workdir = str(out)
  config.init_from = ''
  config_checks.check_config(config)
  return config


def model_arrays(config: ml_collections.ConfigDict, num_classes: int):
  """(model, flat parameters, flat statistics) of a fresh model of `config` with `num_classes` outputs."""
  model = models.build(config.model, num_classes=num_classes, image_size=config.pp.image_size,
                       rngs=nnx.Rngs(params=config.seed))
  _, params, stats = nnx.split(model, nnx.Param, ...)
  flat = lambda state: {k: np.asarray(v) for k, v in
                        traverse_util.flatten_dict(nnx.to_pure_dict(state), sep='/').items()}
  return model, flat(params), flat(stats)


def _fill(state, values: Dict[str, np.ndarray]):
  pure = traverse_util.unflatten_dict({tuple(k.split('/')): jnp.asarray(v) for k, v in values.items()})
  nnx.replace_by_pure_dict(state, pure)
  return state


def check_new(out: str) -> None:
  """ConvertError when `out` already holds a run: nothing written before is overwritten."""
  folder = epath.Path(out)
  if (folder / 'checkpoints').exists() or (folder / 'config.json').exists():
    raise ConvertError(f'{out} already holds a run (config.json or checkpoints/): choose a new --out.')


def write(out: str, config: ml_collections.ConfigDict, model, num_classes: int, params: Dict[str, np.ndarray],
          stats: Dict[str, np.ndarray], class_names: Optional[List[str]], record: Dict[str, Any]) -> None:
  """Writes `out`: config.json, classes.json, converted.json (`record`: what was imported from where) and the step-0
  checkpoint. An `out` that already holds a run is refused, so nothing written before is overwritten."""
  check_new(out)
  folder = epath.Path(out)
  workdir_lib.check_writable(folder)
  model.train()
  tx = optim.make_optimizer(config, lambda count: 0.0)
  _, state = steps.create_train_state(model, tx, config.seed)
  state = state.replace(params=_fill(state.params, params), model_state=_fill(state.model_state, stats))
  state = state.replace(opt_state=tx.init(state.params), ema_params=jax.tree.map(jnp.copy, state.params),
                        ema_model_state=jax.tree.map(jnp.copy, state.model_state))
  ckpt = checkpoint.Checkpointer(str(folder), 1, config.keep_checkpoints, identity={
      'model': config.model.name, 'num_classes': num_classes, 'image_size': config.pp.image_size})
  ckpt.maybe_save(0, state, {'train_skipped_images': 0, 'nonfinite_steps': 0}, force=True)
  ckpt.wait()
  ckpt.close()
  workdir_lib.write_config(folder, config, 0)
  if class_names is not None:
    workdir_lib.write_class_names(folder, class_names)
  (folder / 'converted.json').write_text(json.dumps(record, indent=2))
