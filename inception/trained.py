"""A trained run loaded back from its workdir for evaluation and prediction: its config, class names and weights.

The commands `inception.evaluate` and `inception.predict` start here. The config is the run's own (config.json), with
command-line overrides applied; the weights are the EMA or the raw ones of its latest (or a chosen) checkpoint,
restored through the same Checkpointer the loop uses (unreadable checkpoints are skipped, another model is refused).
"""
import dataclasses
from typing import Any, List, Optional, Sequence, Tuple

import jax
import ml_collections
from absl import logging
from etils import epath
from flax import nnx

from inception import checkpoint, config_checks, models, optim, sharding, steps
from inception import workdir as workdir_lib
from inception.data import pipeline
from inception.errors import WorkdirError

WEIGHTS = ('ema', 'raw')


@dataclasses.dataclass
class TrainedModel:
  workdir: str
  config: ml_collections.ConfigDict
  graphdef: Any            # the model graph in eval mode
  params: Any              # replicated on the mesh
  model_state: Any
  step: int
  weights: str             # 'ema' or 'raw'
  num_classes: int
  class_names: Optional[List[str]]


def load_config(workdir: str, overrides: Sequence[Tuple[str, Optional[str]]] = ()) -> ml_collections.ConfigDict:
  """The run's config.json with `--config.key=value` overrides applied (ConfigError for a bad one)."""
  config = workdir_lib.load_config(epath.Path(workdir))
  config = config_checks.apply_overrides(config, overrides, where=f'{workdir}/config.json')
  config_checks.check_config(config)
  return config


def load(workdir: str, mesh, *, overrides: Sequence[Tuple[str, Optional[str]]] = (), step: Optional[int] = None,
         weights: str = 'ema') -> TrainedModel:
  """Restores `workdir`'s checkpoint (the latest, or `step`) and returns the chosen weights on `mesh`."""
  if weights not in WEIGHTS:
    raise ValueError(f'weights={weights!r}: use one of {", ".join(WEIGHTS)}.')
  config = load_config(workdir, overrides)
  probe = checkpoint.Checkpointer(workdir, 1, config.keep_checkpoints, identity={})
  available = probe.all_steps()
  if not available:
    raise WorkdirError(f'{workdir} has no checkpoint yet: train it first (python -m inception.main '
                       f'--config=... --config.workdir={workdir}).')
  if step is not None and step not in available:
    raise WorkdirError(f'{workdir} has no checkpoint of step {step}; it keeps steps {", ".join(map(str, available))} '
                       f'(--step takes one of them).')
  meta = probe.read_meta(step if step is not None else available[-1])
  probe.close()
  num_classes = int(meta['num_classes'])
  ckpt = checkpoint.Checkpointer(workdir, 1, config.keep_checkpoints, identity={
      'model': config.model.name, 'num_classes': num_classes, 'image_size': config.pp.image_size})
  model = models.build(config.model, num_classes=num_classes, image_size=config.pp.image_size,
                       rngs=nnx.Rngs(params=config.seed))
  model.train()
  tx = optim.make_optimizer(config, lambda count: 0.0)  # only to give the restored optimizer state its structure
  _, state = steps.create_train_state(model, tx, config.seed)
  model.eval()
  graphdef, _, _ = nnx.split(model, nnx.Param, ...)
  state, _ = ckpt.restore(jax.device_put(state, sharding.replicated(mesh)), step=step)
  ckpt.close()
  restored = int(state.step)
  params, model_state = ((state.ema_params, state.ema_model_state) if weights == 'ema'
                         else (state.params, state.model_state))
  names = workdir_lib.read_class_names(epath.Path(workdir))
  if names is None:  # a run from before classes.json: name the classes from its data, where that is at hand
    try:
      names = list(pipeline.build_source(config).class_names)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('%s has no classes.json and its data cannot be read (%s): classes shown by index.', workdir, e)
  if names is not None and len(names) != num_classes:
    logging.warning('%s/classes.json names %d classes, the model has %d: classes shown by index.', workdir,
                    len(names), num_classes)
    names = None
  return TrainedModel(workdir=workdir, config=config, graphdef=graphdef, params=params, model_state=model_state,
                      step=restored, weights=weights, num_classes=num_classes, class_names=names)
