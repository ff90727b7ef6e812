"""Selective Search run once per image: boxes cached per image and setting, the misses computed by a process pool.

A cache file lives at `<cache_root>/selective_search-<Params.key()>/<image id>-<image hash>.npz`: a changed setting
(or OpenCV version) reads another folder and a changed image file another name, so no stale boxes are served. Files go
through etils.epath, so the root may be local or gs://. Read-only roots may hold boxes computed before (the embedded
BCCD ships its own, as R-CNN shipped VOC's): a file found there is read, not copied. A cache file that does not read,
or holds another image's or setting's boxes, is named, counted and recomputed; an image that is missing or does not
decode, or on which Selective Search fails, is named, counted and left without proposals. The pool uses 'spawn' (no
fork of a parent that may hold JAX's or TensorFlow's threads), one OpenCV thread per worker.
"""
import concurrent.futures
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import re
import time
from typing import Dict, List, Sequence, Tuple

from absl import logging
import cv2
from etils import epath
import numpy as np

from inception.detection import image_check
from inception.detection import selective_search
from inception.detection.image_check import ImageProblem
from inception.detection.records import ImageRecord
from inception.detection.tally import Tally

LEFT_OUT = {
    'missing_image': 'missing images',
    'undecodable_image': 'images that do not decode',
    'failed': 'images Selective Search failed on',
}
RECOMPUTED = {'corrupt_cache': 'cache files that did not read (recomputed)'}


class CorruptCache(Exception):
  """A cache file that is not an npz of this image's and this setting's boxes."""


@dataclasses.dataclass
class ProposalRun:
  """One split's proposals (image id -> float64 [N, 4] boxes; images left out have no entry), what was left out or
  recomputed, and where the boxes came from."""
  boxes: Dict[str, np.ndarray]
  tally: Tally
  folder: str
  computed: int
  cached: int
  workers: int
  seconds: float

  def summary(self) -> str:
    rate = f', {self.computed / self.seconds:.2f} images/s' if self.computed and self.seconds > 0 else ''
    workers = f' on {self.workers} worker(s)' if self.computed else ''
    return (f'Selective Search proposals for {len(self.boxes):,} images ({self.folder}): {self.computed:,} computed'
            f'{workers}, {self.cached:,} from the cache, {self.seconds:.1f} s{rate}. Left out: '
            f'{self.tally.describe(LEFT_OUT)}. Recomputed: {self.tally.describe(RECOMPUTED)}.')


def cache_folder(cache_root, params: selective_search.Params) -> epath.Path:
  return epath.Path(cache_root) / f'selective_search-{params.key()}'


def _file_name(image_id: str, digest: str) -> str:
  return f'{re.sub(r"[^A-Za-z0-9._-]", "_", image_id)}-{digest}.npz'


def image_digest(path) -> str:
  """16 hex digits of the image file's SHA-256 (ImageProblem when it is missing)."""
  path = epath.Path(path)
  if not path.exists():
    raise ImageProblem('missing_image', f'{path}: no such file')
  return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def write_boxes(file: epath.Path, boxes: np.ndarray, params_key: str, digest: str) -> None:
  """Writes one image's boxes (integer pixels, as OpenCV gives them) with the keys that made them, via a temporary
  name and a rename, so a reader never sees half a file."""
  buffer = io.BytesIO()
  np.savez_compressed(buffer, boxes=boxes.astype(np.int32), params_key=params_key, image_digest=digest)
  tmp = file.parent / f'{file.name}.tmp{os.getpid()}'
  tmp.write_bytes(buffer.getvalue())
  tmp.replace(file)  # over a corrupt file being recomputed


def read_boxes(file: epath.Path, params_key: str, digest: str) -> np.ndarray:
  """The float64 [N, 4] boxes of a cache file; CorruptCache if it does not read or was written for other keys."""
  try:
    with np.load(io.BytesIO(file.read_bytes()), allow_pickle=False) as data:
      boxes, keys = data['boxes'], (str(data['params_key']), str(data['image_digest']))
  except Exception as e:  # pylint: disable=broad-except  # zipfile, pickle, value and key errors
    raise CorruptCache(f'{file}: {type(e).__name__}: {e}') from None
  if keys != (params_key, digest):
    raise CorruptCache(f'{file}: written for setting {keys[0]} and image {keys[1]}')
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise CorruptCache(f'{file}: boxes of shape {boxes.shape}')
  return boxes.astype(np.float64)


def _compute(path: str, params: selective_search.Params):
  """The pool's task: (boxes, None, seconds), or (None, (reason, message), seconds) for a bad image or a failure."""
  start = time.perf_counter()
  try:
    boxes = selective_search.propose(image_check.read_rgb(path), params)
    return boxes, None, time.perf_counter() - start
  except ImageProblem as e:
    return None, (e.reason, str(e)), time.perf_counter() - start
  except Exception as e:  # pylint: disable=broad-except  # cv2.error and the like: counted, the run goes on
    return None, ('failed', f'{path}: {type(e).__name__}: {e}'), time.perf_counter() - start


def _init_worker() -> None:
  cv2.setNumThreads(1)  # the pool is the parallelism


def default_workers() -> int:
  """The host's cores available to this process."""
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def proposals_for(records: Sequence[ImageRecord], params: selective_search.Params, cache_root,
                  workers: int = 0, read_only_roots: Sequence[str] = ()) -> ProposalRun:
  """Every record's proposals: read from the cache (or one of `read_only_roots`), else computed (`workers`
  processes; 0: every core) and cached. Logs one summary line (a warning when an image was left out or a cache file
  recomputed)."""
  start = time.perf_counter()
  folder = cache_folder(cache_root, params)
  shipped = [cache_folder(root, params) for root in read_only_roots if root]
  folder.mkdir(parents=True, exist_ok=True)
  (folder / 'params.json').write_text(json.dumps(params.as_dict(), indent=2))
  key = params.key()
  tally = Tally({**LEFT_OUT, **RECOMPUTED})
  boxes: Dict[str, np.ndarray] = {}
  todo: List[Tuple[ImageRecord, epath.Path, str]] = []
  for record in records:
    try:
      digest = image_digest(record.path)
    except ImageProblem as e:
      tally.add(e.reason, str(e))
      continue
    file = folder / _file_name(record.image_id, digest)
    for found in [file] + [f / file.name for f in shipped]:
      if found.exists():
        try:
          boxes[record.image_id] = read_boxes(found, key, digest)
          break
        except CorruptCache as e:
          tally.add('corrupt_cache', str(e))
    else:
      todo.append((record, file, digest))
  cached = len(boxes)

  workers = max(1, min(workers or default_workers(), len(todo) or 1))
  if workers == 1:
    results = (_compute(record.path, params) for record, _, _ in todo)
  else:
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn'),
                                                  initializer=_init_worker)
    results = pool.map(_compute, [record.path for record, _, _ in todo], [params] * len(todo))
  try:
    for (record, file, digest), (found, problem, _) in zip(todo, results):
      if problem is not None:
        tally.add(*problem)
        continue
      write_boxes(file, found, key, digest)
      boxes[record.image_id] = found
  finally:
    if workers > 1:
      pool.shutdown(cancel_futures=True)
  run = ProposalRun(boxes, tally, str(folder), len(boxes) - cached, cached, workers, time.perf_counter() - start)
  problems = sum(tally.count(r) for r in tally.reasons)
  (logging.warning if problems else logging.info)('%s', run.summary())
  return run
