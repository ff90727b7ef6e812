"""Region proposals of a split, from the config: Selective Search (cached, in parallel) and their box recall.

`build` is the library call; `python -m inception.detect proposals` prints, per split, the proposals' summary and
their recall and count per image, and writes them as JSON beside the cache (write_recall).
"""
import json
from typing import Tuple

import ml_collections

from inception.detection import coverage
from inception.detection import datasets
from inception.detection import proposal_cache
from inception.detection import selective_search
from inception.detection import voc
from inception.errors import UserError


def cache_root(config: ml_collections.ConfigDict) -> str:
  """`proposals.cache_dir`, else `<workdir>/proposals`; a UserError when neither is given."""
  if config.proposals.cache_dir:
    return config.proposals.cache_dir
  if not config.workdir:
    raise UserError('Nowhere to cache the proposals: pass --config.workdir=DIR (they go to DIR/proposals) or '
                    '--config.proposals.cache_dir=DIR.')
  return f'{str(config.workdir).rstrip("/")}/proposals'


def build(config: ml_collections.ConfigDict, split: str) -> Tuple[voc.VocSplit, proposal_cache.ProposalRun, dict]:
  """The split's records, their Selective Search proposals and the proposals' box recall (coverage.recall)."""
  params = selective_search.Params.from_config(config.proposals)
  data = datasets.load_split(config.detection_data, split)
  run = proposal_cache.proposals_for(data.records, params, cache_root(config), config.proposals.workers,
                                     [config.proposals.read_only_cache_dir])
  result = coverage.recall(data.records, run.boxes, data.class_names, config.proposals.recall_iou)
  result.update(split=split, params=params.as_dict(), computed=run.computed, cached=run.cached,
                workers=run.workers, seconds=run.seconds, left_out=run.tally.counts())
  return data, run, result


def recall_line(result: dict) -> str:
  per_class = ', '.join(f'{name} {c["recall"]:.3f}' for name, c in result['classes'].items())
  return (f'{result["split"]}: box recall {result["recall"]:.4f} at IoU >= {result["iou_threshold"]} '
          f'({result["covered"]:,} of {result["boxes"]:,} boxes; {per_class}), {result["proposals_per_image"]:,.1f} '
          f'proposals per image (min {result["proposals_min"]:,}, max {result["proposals_max"]:,}), '
          f'{result["images"]:,} images ({result["images_without_proposals"]} without proposals).')


def write_recall(run: proposal_cache.ProposalRun, result: dict) -> str:
  """Writes `result` as recall_<split>.json beside the run's cache files; returns its path."""
  from etils import epath  # pylint: disable=import-outside-toplevel
  out = epath.Path(run.folder) / f'recall_{result["split"]}.json'
  out.write_text(json.dumps(result, indent=2))
  return str(out)
