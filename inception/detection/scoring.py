"""Every proposal of every image scored by trained region classifiers: class probabilities per box.

Regions are cut as in training (region_crops.py, at each run's own input size and with the config's context), packed
into fixed-size batches across images (the last one padded, so one compiled step serves all), split over the local
devices, and put back per image. Columns follow the detection classes (`class_names`), found by name among the run's
classes (its classes.json: the region folders' names); the background column is left out. An ensemble is the mean of
several runs' probabilities (R-CNN's scores, before NMS).

Across hosts, each process reads and scores its own share of the images (`owners`: runs of about equal region counts)
on its local devices, with no collective per batch; one all-gather at the end (`pack` / `unpack`) gives every process
every image's scores.
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
    self._start_queue()

  def _start_queue(self):
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


def _with_proposals(records: Sequence[ImageRecord], boxes: Mapping[str, np.ndarray]) -> List[ImageRecord]:
  return [r for r in records if r.image_id in boxes]


def owners(records: Sequence[ImageRecord], boxes: Mapping[str, np.ndarray], process_count: int) -> np.ndarray:
  """The process that reads and scores each record with proposals (in the records' order): the records cut in order
  into `process_count` runs of about equal work (an image's regions, plus one for reading it)."""
  work = np.array([len(boxes[r.image_id]) + 1 for r in _with_proposals(records, boxes)], np.float64)
  middles = np.cumsum(work) - work / 2
  return np.minimum((middles * process_count // max(work.sum(), 1)).astype(np.int64), process_count - 1)


def score_runs(scorers: Sequence[RegionScorer], records: Sequence[ImageRecord], boxes: Mapping[str, np.ndarray],
               process_index: int = 0, process_count: int = 1) -> Tuple[
                   List[Dict[str, np.ndarray]], List[float], List[str]]:
  """Each run's scores of this process's proposals (image id -> [N, C]; every image with process_count=1), the seconds
  each spent cutting and scoring, and the images that did not read (named once). Each image is read and decoded once
  for all the runs, by the one process `owners` gives it to."""
  seconds, skipped = [0.0] * len(scorers), []
  used = _with_proposals(records, boxes)
  mine = [r for r, owner in zip(used, owners(used, boxes, process_count)) if owner == process_index]
  for image_id, pixels, image_boxes in image_check.read_images(mine, boxes, skipped):
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


def pack(scores: Sequence[Mapping[str, np.ndarray]], records: Sequence[ImageRecord], boxes: Mapping[str, np.ndarray],
         process_index: int, process_count: int, width: int) -> Dict[str, np.ndarray]:
  """This process's part of the all-gather, the same shapes on every process: 'scores' float32 [runs, rows, width]
  (its images' regions in order, NaN past them; float32 holds the networks' probabilities exactly), 'status' int8
  [images] (1: scored here, 2: did not read here) and 'regions' int64 [images] (the proposal count it scored each
  image's by, to catch hosts that disagree on the proposals)."""
  used = _with_proposals(records, boxes)
  owner = owners(used, boxes, process_count)
  counts = np.array([len(boxes[r.image_id]) for r in used], np.int64)
  rows = max([int(counts[owner == p].sum()) for p in range(process_count)] + [0])
  out = np.full([len(scores), rows, width], np.nan, np.float32)
  status = np.zeros([len(used)], np.int8)
  start = 0
  for i, record in enumerate(used):
    if owner[i] != process_index:
      continue
    if record.image_id in scores[0]:  # every run scored the same images
      out[:, start:start + counts[i]] = np.stack([s[record.image_id] for s in scores])
      status[i] = 1
    else:
      status[i] = 2
    start += counts[i]
  return {'scores': out, 'status': status, 'regions': counts}


def unpack(gathered: Mapping[str, np.ndarray], records: Sequence[ImageRecord],
           boxes: Mapping[str, np.ndarray]) -> Tuple[List[Dict[str, np.ndarray]], List[str]]:
  """Every process's `pack`, stacked on a leading process axis, back into each run's scores of every image that read
  (float64, as score_runs gives them) and the ids of those that did not; a UserError when the hosts' proposals
  differ."""
  used = _with_proposals(records, boxes)
  process_count = len(gathered['status'])
  owner = owners(used, boxes, process_count)
  disagree = [r.image_id for r, c in zip(used, np.asarray(gathered['regions']).T) if len(set(c.tolist())) > 1]
  if disagree:
    raise UserError(f'The hosts hold different proposals for {len(disagree)} images ({", ".join(disagree[:3])}): '
                    f'give every host the same proposals (--config.proposals.cache_dir on storage all can read, '
                    f'written once by `python -m inception.detect proposals`).')
  runs = len(gathered['scores'][0])
  out, unread, starts = [{} for _ in range(runs)], [], [0] * process_count
  for i, record in enumerate(used):
    p, n = owner[i], len(boxes[record.image_id])
    status = int(gathered['status'][p][i])
    if status == 1:
      for k in range(runs):
        out[k][record.image_id] = np.asarray(gathered['scores'][p][k, starts[p]:starts[p] + n], np.float64)
    elif status == 2:
      unread.append(record.image_id)
    starts[p] += n
  return out, unread


def ensemble(scores: Sequence[Mapping[str, np.ndarray]]) -> Dict[str, np.ndarray]:
  """The mean of several runs' probabilities, image by image (every run scored the same boxes)."""
  if not scores:
    raise ValueError('ensemble of no runs.')
  return {i: np.mean([s[i] for s in scores], axis=0) for i in scores[0]}
