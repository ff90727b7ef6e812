"""`inception.detect predict`: images in, boxes with class names and scores out (text or JSON lines), and with an
output folder (local or gs://) a PNG of each image with its boxes drawn.

Each image goes through the same stages as evaluation: Selective Search (cached in the workdir like a split's),
every proposal scored by the region classifier(s) (an ensemble averages them), per-class NMS; the boxes shown are
those scoring at least `detect.min_score`. A missing or undecodable image gets an error line and the others still run;
the exit code is then 1.
"""
import json
import os
from typing import Callable, Dict, List, Sequence

import cv2
from etils import epath
import numpy as np

from inception import command
from inception.detection import evaluation
from inception.detection import image_check
from inception.detection import nms
from inception.detection import proposal_cache
from inception.detection import proposals as proposals_lib
from inception.detection import scoring
from inception.detection import selective_search
from inception.detection.image_check import ImageProblem, image_size
from inception.detection.records import Detections, ImageRecord

# Box colours per class (RGB), cycled: distinct on light microscope and natural images alike.
COLOURS = ((230, 25, 75), (0, 130, 200), (60, 180, 75), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (128, 128, 0))


def draw(image: np.ndarray, detections: Detections, class_names: Sequence[str]) -> np.ndarray:
  """A copy of uint8 [H, W, 3] RGB `image` with each detection's box and 'class score' label drawn."""
  out = np.ascontiguousarray(image.copy())
  thickness = max(1, round(min(image.shape[:2]) / 240))
  for box, score, label in sorted(zip(detections.boxes, detections.scores, detections.labels), key=lambda d: d[1]):
    colour = COLOURS[int(label) % len(COLOURS)]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, thickness)
    text = f'{class_names[label]} {score:.2f}'
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    top = max(y0 - h - base, 0)
    cv2.rectangle(out, (x0, top), (x0 + w, top + h + base), colour, -1)
    cv2.putText(out, text, (x0, top + h), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
  return out


def _records(files: Sequence[str], problems: Dict[str, str]) -> List[ImageRecord]:
  records, seen = [], set()
  for path in files:
    try:
      width, height = image_size(path, decode=True)
    except ImageProblem as e:
      problems[path] = str(e)
      continue
    stem = os.path.splitext(os.path.basename(path))[0]
    image_id = stem if stem not in seen else f'{stem}-{len(records)}'
    seen.add(image_id)
    records.append(ImageRecord(image_id, path, width, height, np.zeros([0, 4]), np.zeros([0], np.int32), (),
                               np.zeros([0], bool)))
  return records


def run(config, files: Sequence[str], workdirs: Sequence[str], weights: str, out: str, as_json: bool,
        log: Callable[[str], None] = print) -> int:
  """Prints each image's detections (and draws them under `out`); returns the exit code."""
  problems: Dict[str, str] = {}
  records = _records(files, problems)
  class_names = tuple(config.detection_data.classes)
  if not class_names:
    from inception.errors import UserError  # pylint: disable=import-outside-toplevel
    raise UserError('predict needs the class names: --config.detection_data.classes (or a config that sets them).')
  params = selective_search.Params.from_config(config.proposals)
  found = proposal_cache.proposals_for(records, params, proposals_lib.cache_root(config), config.proposals.workers,
                                       [config.proposals.read_only_cache_dir])
  for problem in found.tally.names('undecodable_image') + found.tally.names('missing_image'):
    problems.setdefault(problem.split(':')[0], problem)
  models = evaluation.scorers(config, workdirs, weights, class_names)
  scores, _, unread = scoring.score_runs(models, records, found.boxes)
  for item in unread:
    problems.setdefault(item, item)
  class_scores = scores[0] if len(scores) == 1 else scoring.ensemble(scores)
  detections = nms.detect(found.boxes, class_scores, config.detect.nms_iou_threshold, config.detect.max_detections)
  if out:
    epath.Path(out).mkdir(parents=True, exist_ok=True)
  by_path = {r.path: r for r in records}
  for path in files:
    record = by_path.get(path)
    if record is None or record.image_id not in detections:
      reason = problems.get(path) or next((p for p in problems.values() if path in p), 'no proposals')
      log(json.dumps({'path': path, 'error': reason}) if as_json else f'{path}\n  error: {reason}')
      continue
    d = detections[record.image_id]
    shown = d.scores >= config.detect.min_score
    d = Detections(d.boxes[shown], d.scores[shown], d.labels[shown])
    items = [{'class': class_names[l], 'score': float(s), 'box': [float(v) for v in b]}
             for b, s, l in zip(d.boxes, d.scores, d.labels)]
    if as_json:
      log(json.dumps({'path': path, 'detections': items}))
    else:
      log(f'{path}: {len(items)} boxes scoring >= {config.detect.min_score}'
          + ''.join(f'\n  {i["score"]:.3f}  {i["class"]:<12} {" ".join(f"{v:.0f}" for v in i["box"])}' for i in items))
    if out:
      picture = draw(image_check.read_rgb(path), d, class_names)
      target = epath.Path(out) / f'{record.image_id}.png'
      ok, encoded = cv2.imencode('.png', cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
      if not ok:
        raise RuntimeError(f'OpenCV could not encode the picture of {path} as PNG.')
      target.write_bytes(encoded.tobytes())
      if not as_json:
        log(f'  drawn in {target}')
  failed = len(files) - sum(1 for p in files if p in by_path and by_path[p].image_id in detections)
  return command.EXIT_ERROR if failed else command.EXIT_OK
