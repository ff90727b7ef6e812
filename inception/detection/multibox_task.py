"""The 'multibox' task of the training loop (inception/tasks.py): MultiBox's loss on a box source's batches, with the
run's priors.

The priors (priors.py: k-means over the training boxes, `model.num_priors` of them, settings in `config.multibox`) are
computed when a run starts and kept in its workdir as priors.json; a resumed run reads them back from there, so its
checkpoint is always trained against the same priors (k-means' float rounding may differ on another machine), and
`multibox_proposals.top_boxes` decodes with them.
"""
import json
from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from inception.augment import stage_pp
from inception.config_checks import ConfigError
from inception.detection import multibox_loss
from inception.detection import priors as priors_lib
from inception.errors import WorkdirError
from inception.tasks import TASKS

PRIORS_FILE = 'priors.json'


def compute_priors(config: ml_collections.ConfigDict, source) -> np.ndarray:
  """The run's priors from its source's training boxes: float64 [model.num_priors, 4], normalised."""
  settings = config.multibox
  return priors_lib.kmeans_priors(source.training_boxes(), int(config.model.num_priors),
                                  seed=int(settings.prior_seed), max_iterations=int(settings.kmeans_iterations),
                                  max_boxes=int(settings.kmeans_max_boxes))


def read_priors(workdir) -> Optional[np.ndarray]:
  """The priors a run in `workdir` trained with (its priors.json), or None when it has none; WorkdirError when the
  file is not a list of [x0, y0, x1, y1] rows."""
  path = epath.Path(workdir) / PRIORS_FILE
  if not path.exists():
    return None
  try:
    priors = np.asarray(json.loads(path.read_text())['priors'], np.float64)
  except (ValueError, KeyError, TypeError) as e:
    raise WorkdirError(f'{path} is damaged ({type(e).__name__}: {e}): it must hold {{"priors": [[x0, y0, x1, y1], '
                       f'...]}}. Train the run again in a new --config.workdir.') from None
  if priors.ndim != 2 or priors.shape[1] != 4 or not len(priors):
    raise WorkdirError(f'{path} holds priors of shape {priors.shape}, not [K, 4]. Train the run again in a new '
                       f'--config.workdir.')
  return priors


def write_priors(workdir, priors: np.ndarray) -> None:
  """priors.json: {"priors": [[x0, y0, x1, y1], ...]}, at full float64 precision."""
  rows = [[float(v) for v in row] for row in np.asarray(priors)]
  (epath.Path(workdir) / PRIORS_FILE).write_text(json.dumps({'priors': rows}))


def check_config(config: ml_collections.ConfigDict, source) -> None:
  """ConfigError unless the config trains MultiBox on a box source with box-moving transforms."""
  from inception.data import pipeline  # pylint: disable=import-outside-toplevel  (TensorFlow: only when training)
  if config.model.name != 'multibox':
    raise ConfigError(f'--config.task=multibox trains the MultiBox head: set --config.model.name=multibox (and '
                      f'--config.model.backbone=...), not {config.model.name!r}.')
  if not hasattr(source, 'training_boxes'):
    raise ConfigError(f'--config.task=multibox needs images with their boxes: --config.data.source=voc_boxes, not '
                      f'{config.data.source!r}.')
  for stage in ('train', 'eval'):
    pipeline.check_moves_boxes(stage_pp(config.pp, stage), stage)


@TASKS.register('multibox')
class MultiBoxTask:
  """multibox_loss.multibox_loss on batches of images with their padded boxes (`boxes`), against the run's priors."""

  def __init__(self, config: ml_collections.ConfigDict, source, workdir, resuming: bool):
    check_config(config, source)
    num_priors = int(config.model.num_priors)
    kept = read_priors(workdir) if resuming else None
    if kept is not None and len(kept) != num_priors:
      raise WorkdirError(f'{workdir}/{PRIORS_FILE} holds {len(kept)} priors and --config.model.num_priors is '
                         f'{num_priors}: resume with num_priors={len(kept)}, or train in a new --config.workdir.')
    if kept is None:
      if resuming:
        logging.warning('%s has a checkpoint but no %s: computing the priors again from the training boxes.',
                        workdir, PRIORS_FILE)
      kept = compute_priors(config, source)
    self.priors = kept
    self.offset_scale = float(config.multibox.offset_scale)
    self.loc_weight = float(config.multibox.loc_weight)
    spread = kept[:, 2:] - kept[:, :2]
    logging.info('MultiBox: %d priors, widths %.3f-%.3f and heights %.3f-%.3f of the image.', len(kept),
                 spread[:, 0].min(), spread[:, 0].max(), spread[:, 1].min(), spread[:, 1].max())

  def loss(self, outputs: jax.Array, aux_outputs, batch: Dict[str, jax.Array]
           ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """The batch's MultiBox loss and its parts (multibox_loss.multibox_loss); MultiBox has no auxiliary heads."""
    del aux_outputs
    return multibox_loss.multibox_loss(outputs, jnp.asarray(self.priors, jnp.float32), batch['boxes'],
                                       batch['mask'], offset_scale=self.offset_scale, loc_weight=self.loc_weight)

  def write_files(self, workdir) -> None:
    write_priors(workdir, self.priors)
