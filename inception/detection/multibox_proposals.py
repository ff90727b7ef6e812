"""MultiBox's proposals from a trained run (configs/multibox.py): each image's best boxes in its own pixels.

`top_boxes(workdir, records)` is the library call the detection stages use: the run's EMA weights and priors, each
image through the run's eval transform (resized to the input square), its predictions decoded (multibox_decode.py)
and the `top_k` most confident kept, best first.

  python -m inception.detection.multibox_proposals --config=configs/detection.py:bccd --split=test \
      --multibox_workdir=runs/bccd_multibox [--config.workdir=runs/bccd_det]

prints box recall (coverage.recall, at `proposals.recall_iou`) of MultiBox's top boxes alone, of Selective Search's
proposals (proposals.build: cached under the detection config's workdir) and of the two merged (coverage.merge at
`proposals.merge_iou`), with proposals per image, and writes them as proposals_recall_<split>.json in the MultiBox run.
"""
import json
import os
import time
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


def main(argv):
  """The command (module docstring)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from etils import epath  # pylint: disable=import-outside-toplevel
  from inception.detection import coverage, proposals  # pylint: disable=import-outside-toplevel
  from inception.errors import UserError  # pylint: disable=import-outside-toplevel
  del argv
  config = flags.FLAGS.config
  workdir = flags.FLAGS.multibox_workdir or config.proposals.get('multibox_workdir', '')
  if not workdir:
    raise UserError('Name the MultiBox run: --multibox_workdir=WORKDIR (a configs/multibox.py run).')
  split = flags.FLAGS.split
  start = time.time()
  data, selective, selective_result = proposals.build(config, split)
  selective_seconds = time.time() - start
  start = time.time()
  multibox = top_boxes(workdir, data.records, flags.FLAGS.top_k)
  multibox_seconds = time.time() - start
  iou, merge_iou = float(config.proposals.recall_iou), float(config.proposals.merge_iou)
  merged = coverage.merge([selective.boxes, multibox], merge_iou)
  results = {}
  for name, boxes, seconds in (('multibox', multibox, multibox_seconds),
                               ('selective_search', selective.boxes, selective_seconds),
                               ('merged', merged, None)):
    result = coverage.recall(data.records, boxes, data.class_names, iou)
    result.update(split=f'{split} ({name})', seconds=seconds)
    results[name] = result
    print(proposals.recall_line(result), flush=True)
  results['multibox']['top_k'] = flags.FLAGS.top_k
  results['multibox']['workdir'] = workdir
  results['merged']['merge_iou'] = merge_iou
  results['selective_search']['params'] = selective_result['params']
  out = epath.Path(workdir) / f'proposals_recall_{split}.json'
  out.write_text(json.dumps(results, indent=2))
  print(f'Selective Search {selective_seconds:.1f} s ({selective_result["computed"]} images computed, '
        f'{selective_result["cached"]} cached), MultiBox {multibox_seconds:.1f} s; written to {out}.', flush=True)


def run():
  """The command line: the detection config (--config=configs/detection.py[:variant]) and the flags below."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  from inception import command  # pylint: disable=import-outside-toplevel
  config_flags.DEFINE_config_file('config', None, 'The detection config, e.g. configs/detection.py:bccd.')
  flags.DEFINE_string('multibox_workdir', '', 'The MultiBox run (default: the config\'s proposals.multibox_workdir).')
  flags.DEFINE_string('split', 'test', 'The VOC split whose recall is measured.')
  flags.DEFINE_integer('top_k', 200, 'MultiBox boxes per image, best first (the paper: 200).')
  flags.mark_flag_as_required('config')
  command.run(main, computes_steps=True, check_config=True)


if __name__ == '__main__':
  run()
