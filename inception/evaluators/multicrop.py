"""Multi-crop evaluation: each image's softmax averaged over its 1, 10 or 144 crops (the paper's protocol), and
ensembles of models averaged the same way.

The crops stream through the devices in fixed-size batches (data/crop_batches.py); the jitted predict step's outputs
are replicated, so every process receives every crop's probabilities with its image's index and adds them into the
same per-image sums. Memory on the host: one float32 [images, classes] array per model (200 MB for ImageNet's 50,000
validation images).
"""
import time
from typing import Dict, Optional, Sequence, Tuple

import jax
import numpy as np

from inception import compiler_options, errors, sharding, steps
from inception.data.crop_batches import MultiCropBatches


class CropAverages:
  """Per-image sums of crop probabilities; `probabilities()` gives the averages of the images seen."""

  def __init__(self, num_examples: int, num_classes: int, crops: int):
    self.crops = crops
    self.sums = np.zeros((num_examples, num_classes), np.float32)
    self.counts = np.zeros(num_examples, np.int64)
    self.labels = np.full(num_examples, -1, np.int64)

  def add(self, out: Dict[str, np.ndarray]) -> None:
    rows = out['mask'] > 0
    examples = out['example'][rows]
    np.add.at(self.sums, examples, out['probs'][rows])
    np.add.at(self.counts, examples, 1)
    self.labels[examples] = out['label'][rows]

  def probabilities(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probs float32 [N, C] averaged over each image's crops, labels [N], seen bool [N]); unseen rows are 0."""
    seen = self.counts > 0
    incomplete = seen & (self.counts != self.crops)
    if incomplete.any():
      raise RuntimeError(f'{int(incomplete.sum())} images got a number of crops other than {self.crops} (e.g. image '
                         f'{int(np.flatnonzero(incomplete)[0])}): the crop stream lost or repeated rows.')
    probs = self.sums / np.maximum(self.counts, 1)[:, None]
    return probs, self.labels, seen


def scores(probs: np.ndarray, labels: np.ndarray, seen: np.ndarray) -> Dict[str, float]:
  """top1, top5, loss (mean -log p[label] of the averaged probabilities) and count over the seen images."""
  p, y = probs[seen], labels[seen]
  if not len(y):
    return {'top1': float('nan'), 'top5': float('nan'), 'loss': float('nan'), 'count': 0}
  top5 = np.argsort(-p, axis=-1)[:, :5]
  return {'top1': float(np.mean(top5[:, 0] == y)), 'top5': float(np.mean(np.any(top5 == y[:, None], axis=-1))),
          'loss': float(np.mean(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-12)))), 'count': int(len(y))}


class MultiCropEvaluator:
  """Averages `crops` crops per image of the eval split for given weights; holds the compiled step and the batches."""

  def __init__(self, config, eval_graphdef, mesh, crops: int, source=None, split: str = 'eval'):
    self.mesh, self.crops = mesh, crops
    sharding.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')  # a ConfigError naming the fix
    self.batches = MultiCropBatches(config, crops, process_index=jax.process_index(),
                                    process_count=jax.process_count(), source=source, split=split)
    predict = steps.make_predict_step(eval_graphdef, config)

    def step(params, model_state, batch):  # the batch's indices ride along, replicated with the probabilities
      return {**predict(params, model_state, batch), **{k: batch[k] for k in ('example', 'label', 'mask')}}

    self.step = jax.jit(step, out_shardings=sharding.replicated(mesh),
                        compiler_options=compiler_options.for_backend(config, inference=True))
    self.last_rate: Optional[Dict[str, float]] = None

  def probabilities(self, params, model_state, num_classes: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probs [N, C], labels [N], seen [N]) over the whole split; also sets `last_rate` (images/s and crops/s)."""
    averages = CropAverages(self.batches.num_examples, num_classes, self.crops)
    start = time.perf_counter()
    for batch in self.batches:
      out = self.step(params, model_state, sharding.to_global(batch, self.mesh))
      averages.add(jax.tree.map(np.asarray, out))
    seconds = time.perf_counter() - start
    result = averages.probabilities()
    images = int(result[2].sum())
    self.last_rate = {'images_per_s': images / seconds, 'crops_per_s': images * self.crops / seconds,
                      'seconds': seconds}
    return result

  def run(self, weights: Dict[str, Tuple], num_classes: int) -> Dict[str, float]:
    """The loop's evaluator interface: `weights` maps a metric prefix ('eval', 'eval_ema') to (params, model_state)."""
    results = {}
    for name, (params, model_state) in weights.items():
      probs, labels, seen = self.probabilities(params, model_state, num_classes)
      s = scores(probs, labels, seen)
      results.update({f'{name}/top1': s['top1'], f'{name}/top5': s['top5'], f'{name}/loss': s['loss']})
      results['eval/examples'] = s['count']
      results['eval/skipped_images'] = self.batches.num_examples - s['count']
    results['eval/crops'] = self.crops
    return results


def ensemble(members: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray]:
  """The models' per-image probabilities averaged (the paper's ensembles average softmax): (probs, labels, seen) over
  the images every model saw. A UserError when the models were evaluated on different images or classes."""
  shapes = {m[0].shape for m in members}
  if len(shapes) != 1:
    raise errors.UserError(f'The models were evaluated on different images or class counts ({sorted(shapes)} as '
                           f'[images, classes]): an ensemble needs runs on the same eval split and classes.')
  seen = np.logical_and.reduce([m[2] for m in members])
  labels = members[0][1]
  for m in members[1:]:
    if np.any(m[1][seen] != labels[seen]):
      raise errors.UserError('The models\' eval splits disagree on the labels of the same images: they were not '
                             'evaluated on the same data (check data.root / data.tfds_name and data.val_fraction of '
                             'each run).')
  return np.mean([m[0] for m in members], axis=0), labels, seen
