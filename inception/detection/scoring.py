"""Every proposal of every image scored by trained region classifiers: class probabilities per box.

Regions are cut as in training (region_crops.py, at each run's own input size and with the config's context), packed
into fixed-size batches across images (the last one padded, so one compiled step serves all), split over the local
devices, and put back per image. Columns follow the detection classes (`class_names`), found by name among the run's
classes (its classes.json: the region folders' names); the background column is left out. An ensemble is the mean of
several runs' probabilities (R-CNN's scores, before NMS).
"""
import time
from typing import Dict, List, Mapping, Sequence, Tuple

import jax
import numpy as np

from inception import compiler_options, sharding, steps
from inception.detection import image_check
from inception.detection import region_crops
from inception.detection.records import ImageRecord
from inception.errors import UserError


def class_columns(run_classes: Sequence[str], class_names: Sequence[str], background: str, workdir: str) -> List[int]:
  """For each detection class, its column in the run's output; a UserError when the run lacks one or background."""
  run_classes = list(run_classes or ())
  missing = [n for n in list(class_names) + [background] if n not in run_classes]
  if missing:
    raise UserError(f'{workdir} was trained on classes {run_classes or "(unnamed)"}, without {missing}: train it on '
                    f'this config\'s regions (python -m inception.detect regions, then inception.main with the same '
                    f'--config), or give --config.detection_data.classes of that run.')
  return [run_classes.index(n) for n in class_names]


class RegionScorer:
  """One trained run's region classifier, jitted once for batches of `batch_size` regions."""

  def __init__(self, run, batch_size: int, context_padding: float, fill: str, class_names: Sequence[str],
               background: str):
    self.run = run
    self.size = int(run.config.pp.image_size)
    self.padding = region_crops.context_padding(context_padding, self.size)
    self.fill = fill
    self.columns = class_columns(run.class_names, class_names, background, run.workdir)
    devices = jax.local_devices()
    self.mesh = sharding.make_mesh(devices)
    self.batch_size = -(-int(batch_size) // len(devices)) * len(devices)
    self.params = jax.device_put(run.params, sharding.replicated(self.mesh))
    self.model_state = jax.device_put(run.model_state, sharding.replicated(self.mesh))
    self._step = jax.jit(steps.make_predict_step(run.graphdef, run.config),
                         in_shardings=(sharding.replicated(self.mesh),) * 2 + (sharding.data_sharded(self.mesh),),
                         compiler_options=compiler_options.for_backend(run.config, inference=True))
    self._out: Dict[str, List[np.ndarray]] = {}  # image id -> its scored parts, in order
    self._pending: List[Tuple[str, np.ndarray]] = []  # (image id, crops) not yet scored, in order
    self._pending_count = 0

  def _predict(self, crops: np.ndarray) -> np.ndarray:
    n = len(crops)
    padded = np.zeros((self.batch_size,) + crops.shape[1:], np.uint8)
    padded[:n] = crops
    batch = jax.device_put({'image': padded}, sharding.data_sharded(self.mesh))
    return np.asarray(self._step(self.params, self.model_state, batch)['probs'])[:n]

  def add(self, image_id: str, pixels: np.ndarray, boxes: np.ndarray):
    """Queues one image's regions (uint8 [H, W, 3] pixels, boxes [N, 4]); full batches are scored as they fill."""
    self._out.setdefault(image_id, [])
    if len(boxes):
      self._pending.append((image_id, region_crops.crop(pixels, boxes, self.size, self.padding, self.fill)))
      self._pending_count += len(boxes)
    self._flush(final=False)

  def finish(self) -> Dict[str, np.ndarray]:
    """Scores what is queued; image id -> float64 [N, C] probabilities of the detection classes, for every image
    added since the last finish."""
    self._flush(final=True)
    width = len(self.columns)
    out = {i: np.concatenate(parts) if parts else np.zeros([0, width]) for i, parts in self._out.items()}
    self._out = {}
    return out

  def _flush(self, final: bool):
    while self._pending_count >= self.batch_size or (final and self._pending_count):
      take, batch, owners = self.batch_size, [], []
      while take and self._pending:
        image_id, crops = self._pending[0]
        part, rest = crops[:take], crops[take:]
        batch.append(part)
        owners.append((image_id, len(part)))
        take -= len(part)
        if len(rest):
          self._pending[0] = (image_id, rest)
        else:
          self._pending.pop(0)
      probs = self._predict(np.concatenate(batch))[:, self.columns].astype(np.float64)
      start = 0
      for image_id, count in owners:
        self._out.setdefault(image_id, []).append(probs[start:start + count])
        start += count
      self._pending_count -= start


def score_runs(scorers: Sequence[RegionScorer], records: Sequence[ImageRecord],
               boxes: Mapping[str, np.ndarray]) -> Tuple[List[Dict[str, np.ndarray]], List[float], List[str]]:
  """Each run's scores of every proposal (image id -> [N, C]), the seconds each spent cutting and scoring, and the
  images that did not read (named once). Each image is read and decoded once for all the runs."""
  seconds, skipped = [0.0] * len(scorers), []
  for image_id, pixels, image_boxes in image_check.read_images(records, boxes, skipped):
    for k, scorer in enumerate(scorers):
      start = time.perf_counter()
      scorer.add(image_id, pixels, image_boxes)
      seconds[k] += time.perf_counter() - start
  results = []
  for k, scorer in enumerate(scorers):
    start = time.perf_counter()
    results.append(scorer.finish())
    seconds[k] += time.perf_counter() - start
  return results, seconds, skipped


def ensemble(scores: Sequence[Mapping[str, np.ndarray]]) -> Dict[str, np.ndarray]:
  """The mean of several runs' probabilities, image by image (every run scored the same boxes)."""
  if not scores:
    raise ValueError('ensemble of no runs.')
  return {i: np.mean([s[i] for s in scores], axis=0) for i in scores[0]}
