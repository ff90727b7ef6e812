"""`inception.detect evaluate`: a split's proposals scored by one or more trained region classifiers, NMS, and mAP per
single model and for their ensemble, with the proposals' recall and each stage's wall time, as one JSON-ready dict.
"""
import time
from typing import Callable, Dict, List, Sequence

import jax

from inception import compile_cache, sharding, trained
from inception.detection import mean_ap
from inception.detection import nms
from inception.detection import proposals as proposals_lib
from inception.detection import scoring
from inception.detection import tables


def scorers(config, workdirs: Sequence[str], weights: str, class_names: Sequence[str]) -> List[scoring.RegionScorer]:
  """One RegionScorer per trained run, each cutting regions as its run learnt them (its own config's `regions`)."""
  compile_cache.enable(trained.load_config(workdirs[0]).get('compile_cache', ''), workdirs[0])
  mesh = sharding.make_mesh(jax.local_devices())
  out = []
  for workdir in workdirs:
    run = trained.load(workdir, mesh, weights=weights)
    learnt = run.config.get('regions') or config.regions
    out.append(scoring.RegionScorer(run, config.detect.batch_size, learnt.context_padding, learnt.fill, class_names,
                                    learnt.background_name))
  return out


def _model_entry(name: str, num_models: int, metrics: Dict, seconds: float) -> Dict:
  return {'name': name, 'num_models': num_models, 'mAP': metrics['mAP'], 'classes': metrics['classes'],
          'metrics': metrics, 'nms_and_map_seconds': seconds}


def run(config, split: str, workdirs: Sequence[str], weights: str = 'ema', log: Callable[[str], None] = print) -> Dict:
  """Evaluates `workdirs` (one run, or an ensemble and each of its members) on `split`."""
  times = {}
  start = time.perf_counter()
  data, proposal_run, recall = proposals_lib.build(config, split)
  times['proposals'] = time.perf_counter() - start
  log(proposals_lib.recall_line(recall))
  start = time.perf_counter()
  models = scorers(config, workdirs, weights, data.class_names)
  times['load_models'] = time.perf_counter() - start
  boxes = proposal_run.boxes
  scores, seconds, unread = scoring.score_runs(models, data.records, boxes)
  times['scoring'] = seconds
  regions = sum(len(b) for b in boxes.values())
  for model, s in zip(models, seconds):
    log(f'Scored {regions:,} regions of {len(boxes):,} images with {model.run.workdir} (step {model.run.step}, '
        f'{model.size} px) in {s:.1f} s ({regions / s:,.0f} regions/s).')
  if unread:
    log(f'Images that did not read (no detections): {len(unread)} ({", ".join(unread[:3])}).')
  det = config.detect
  entries = []
  named = [(f'single: {m.run.workdir}', 1, s) for m, s in zip(models, scores)]
  if len(models) > 1:
    named.append((f'ensemble of {len(models)}', len(models), scoring.ensemble(scores)))
  for name, count, class_scores in named:
    start = time.perf_counter()
    detections = nms.detect(boxes, class_scores, det.nms_iou_threshold, det.max_detections)
    metrics = mean_ap.evaluate(data.records, detections, data.class_names, **config.evaluation)
    entries.append(_model_entry(name, count, metrics, time.perf_counter() - start))
  return {
      'split': split,
      'class_names': list(data.class_names),
      'runs': [{'workdir': m.run.workdir, 'step': m.run.step, 'weights': m.run.weights,
                'model': m.run.config.model.name, 'image_size': m.size} for m in models],
      'proposals': {'selective_search': {'recall': recall, 'models': entries}},
      'regions_scored': regions,
      'images_unread': unread,
      'nms_iou_threshold': det.nms_iou_threshold,
      'seconds': times,
  }


def table(result: Dict) -> str:
  """The Markdown table (tables.py) of a result of run()."""
  return tables.markdown(result, result['class_names'])
