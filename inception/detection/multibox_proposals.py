"""MultiBox's proposals from a trained run (configs/multibox.py): each image's best boxes in its own pixels.

`top_boxes(workdir, records)` is the library call the detection stages use (`inception.detect proposals` and
`evaluate` with `--config.proposals.multibox_workdir`): the run's EMA weights and priors, each image through the run's
eval transform (resized to the input square), its predictions decoded (multibox_decode.py) and the `top_k` most
confident kept, best first.
"""
import os
from typing import Dict, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

import numpy as np
from absl import logging

from inception.detection.records import ImageRecord
from inception.errors import WorkdirError


def top_boxes(workdir: str, records: Sequence[ImageRecord], top_k: int = 200, *, weights: str = 'ema'
              ) -> Dict[str, np.ndarray]:
  """image_id -> float64 [<= top_k, 4] boxes (x0, y0, x1, y1 in the image's pixels), best first, for every record
  whose image decodes (the others are named in a warning and have no entry: coverage.recall counts them). The run in
  `workdir` must be a MultiBox run (config.task 'multibox', its priors.json beside the checkpoints)."""
  import jax  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from inception import augment, compiler_options, sharding, trained  # pylint: disable=import-outside-toplevel
  from inception.data.preprocess import PREPROCESS  # pylint: disable=import-outside-toplevel
  from inception.detection import multibox_decode, multibox_task  # pylint: disable=import-outside-toplevel
  from inception.models import ops  # pylint: disable=import-outside-toplevel

  if top_k < 1:
    raise ValueError(f'top_k={top_k}: ask for at least 1 box per image.')
  config = trained.load_config(workdir)
  if config.get('task') != 'multibox':
    raise WorkdirError(f'{workdir} holds a {config.get("task", "classification")} run, not a MultiBox one: name the '
                       f'workdir of a configs/multibox.py run.')
  priors = multibox_task.read_priors(workdir)
  if priors is None:
    raise WorkdirError(f'{workdir} has no {multibox_task.PRIORS_FILE}: its MultiBox run never started training.')
  mesh = sharding.make_mesh(jax.local_devices()[:1])
  run = trained.load(workdir, mesh, weights=weights)
  if len(priors) != int(run.config.model.num_priors):
    raise WorkdirError(f'{workdir}/{multibox_task.PRIORS_FILE} holds {len(priors)} priors for a model of '
                       f'{run.config.model.num_priors}.')
  pp = augment.stage_pp(run.config.pp, 'eval')
  transform = PREPROCESS.get(pp.name)
  batch_size = int(run.config.eval_batch_size)

  def predict(params, model_state, images):
    outputs, _ = nnx.merge(run.graphdef, params, model_state)(augment.eval_images(images, pp))
    return outputs

  predict = jax.jit(ops.traced_with(ops.setting(run.config), predict),
                    compiler_options=compiler_options.for_backend(run.config, inference=True))
  paths = tf.constant([r.path for r in records], tf.string, shape=[len(records)])
  ds = tf.data.Dataset.from_tensor_slices((tf.range(len(records), dtype=tf.int64), paths))
  ds = ds.map(lambda i, path: (i, transform(tf.io.read_file(path), tf.constant([0, 0], tf.int64), pp)),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors().batch(batch_size)
  found = {}
  for indices, images in ds.as_numpy_iterator():
    count = len(indices)
    if count < batch_size:  # one compiled shape: the last batch padded with zero images
      images = np.concatenate([images, np.zeros((batch_size - count, *images.shape[1:]), images.dtype)])
    outputs = np.asarray(predict(run.params, run.model_state, images))[:count]
    for index, out in zip(indices, outputs):
      record = records[int(index)]
      found[record.image_id] = multibox_decode.image_boxes(out, priors, float(run.config.multibox.offset_scale),
                                                           record.width, record.height, top_k)
  missing = [r.image_id for r in records if r.image_id not in found]
  if missing:
    logging.warning('MultiBox proposals: %d images did not decode and have none: %s%s.', len(missing),
                    ', '.join(missing[:5]), ', ...' if len(missing) > 5 else '')
  return found
