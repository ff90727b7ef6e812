"""`inception.detect evaluate`: a split's proposals scored by one or more trained region classifiers, NMS, and mAP per
single model and for their ensemble, with the proposals' recall and each stage's wall time, as one JSON-ready dict.

In a multi-process job every process runs it: process 0 computes (or finds) the proposals first and the others then
read them from the cache; each scores its share of the images (scoring.owners) and all end with every score.
"""
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import numpy as np

from inception import compile_cache, distributed, sharding, trained
from inception.detection import coverage
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


def _proposals(config, split: str):
  """proposals_lib.build, by process 0 first in a multi-process job (the others then read its cache files)."""
  if jax.process_index() > 0:
    distributed.barrier(f'detect_proposals_{split}')
  built = proposals_lib.build(config, split)
  if jax.process_index() == 0:
    distributed.barrier(f'detect_proposals_{split}')
  return built


def _score_everywhere(models, records, union):
  """scoring.score_runs over every process's share, gathered on all: (scores, seconds of the slowest process, the
  images that did not read, how many images each process read)."""
  index, count = jax.process_index(), jax.process_count()
  scores, seconds, unread = scoring.score_runs(models, records, union, index, count)
  if count == 1:
    return scores, seconds, unread, [len(union)]
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  packed = scoring.pack(scores, records, union, index, count, len(models[0].columns))
  packed['seconds'] = np.asarray(seconds, np.float32)
  distributed.barrier('detect_scored')  # hosts finish minutes apart; the CPU collectives wait only 30 s
  gathered = jax.tree.map(np.asarray, multihost_utils.process_allgather(packed))
  scores, unread_ids = scoring.unpack(gathered, records, union)
  named = {line.split(' ', 1)[0]: line for line in unread}
  return (scores, [float(s) for s in gathered['seconds'].max(axis=0)],
          [named.get(i, f'{i} (did not read on another host)') for i in unread_ids],
          [int(n) for n in (gathered['status'] > 0).sum(axis=1)])


def _model_entry(name: str, num_models: int, metrics: Dict, seconds: float) -> Dict:
  return {'name': name, 'num_models': num_models, 'mAP': metrics['mAP'], 'classes': metrics['classes'],
          'metrics': metrics, 'nms_and_map_seconds': seconds}


def _rows_of(union: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """For each of `boxes`, its row in `union` (which holds every one of them)."""
  index = {tuple(b): i for i, b in enumerate(union.tolist())}
  return np.asarray([index[tuple(b)] for b in boxes.tolist()], np.int64)


def run(config, split: str, workdirs: Sequence[str], weights: str = 'ema', log: Callable[[str], None] = print,
        extra_proposals: Optional[Dict[str, Any]] = None) -> Dict:
  """Evaluates `workdirs` (one run, or an ensemble and each of its members) on `split`, with Selective Search's
  proposals and each set of `extra_proposals` (name -> {image id: boxes}, or a function of the split's records that
  gives them) merged with them. Every distinct box is
  scored once; each proposal set then takes its boxes' scores."""
  times = {}
  start = time.perf_counter()
  data, proposal_run, recall = _proposals(config, split)
  sets = {'selective_search': proposal_run.boxes}
  recalls = {'selective_search': recall}
  for name, boxes in (extra_proposals or {}).items():
    boxes = boxes(data.records) if callable(boxes) else boxes
    merged = f'selective_search+{name}'
    sets[merged] = coverage.merge([proposal_run.boxes, boxes], config.proposals.merge_iou)
    recalls[name] = coverage.recall(data.records, boxes, data.class_names, config.proposals.recall_iou)
    recalls[merged] = coverage.recall(data.records, sets[merged], data.class_names, config.proposals.recall_iou)
  times['proposals'] = time.perf_counter() - start
  for name, r in recalls.items():
    log(proposals_lib.recall_line({**r, 'split': f'{split} ({name})'}))
  union = coverage.merge(list(sets.values()), 1.0) if len(sets) > 1 else proposal_run.boxes
  start = time.perf_counter()
  models = scorers(config, workdirs, weights, data.class_names)
  times['load_models'] = time.perf_counter() - start
  scores, seconds, unread, shares = _score_everywhere(models, data.records, union)
  times['scoring'] = seconds
  regions = sum(len(b) for b in union.values())
  hosts = f' on {len(shares)} processes ({" + ".join(map(str, shares))} images)' if len(shares) > 1 else ''
  for model, s in zip(models, seconds):
    log(f'Scored {regions:,} regions of {len(union):,} images{hosts} with {model.run.workdir} (step '
        f'{model.run.step}, {model.size} px) in {s:.1f} s ({regions / s:,.0f} regions/s).')
  if unread:
    log(f'Images that did not read (no detections): {len(unread)} ({", ".join(unread[:3])}).')
  named = [(f'single: {m.run.workdir}', 1, s) for m, s in zip(models, scores)]
  if len(models) > 1:
    named.append((f'ensemble of {len(models)}', len(models), scoring.ensemble(scores)))
  det = config.detect
  results = {}
  for set_name, boxes in sets.items():
    entries = []
    for name, count, union_scores in named:
      start = time.perf_counter()
      set_scores = {i: union_scores[i][_rows_of(union[i], b)] for i, b in boxes.items() if i in union_scores}
      detections = nms.detect(boxes, set_scores, det.nms_iou_threshold, det.max_detections)
      metrics = mean_ap.evaluate(data.records, detections, data.class_names, **config.evaluation)
      entries.append(_model_entry(name, count, metrics, time.perf_counter() - start))
    results[set_name] = {'recall': recalls[set_name], 'models': entries}
  return {
      'split': split,
      'class_names': list(data.class_names),
      'runs': [{'workdir': m.run.workdir, 'step': m.run.step, 'weights': m.run.weights,
                'model': m.run.config.model.name, 'image_size': m.size} for m in models],
      'proposals': results,
      'proposal_recall': recalls,
      'regions_scored': regions,
      'images_unread': unread,
      'images_per_process': shares,
      'nms_iou_threshold': det.nms_iou_threshold,
      'seconds': times,
  }


def table(result: Dict) -> str:
  """The Markdown table (tables.py) of a result of run()."""
  return tables.markdown(result, result['class_names'])
