"""Region proposals of a split, from the config: Selective Search (cached, in parallel) and their box recall.

`build` is the library call (the later `inception.detect` command uses it); run as a module it prints, per split,
the proposals' summary and their recall and count per image, and writes them as JSON beside the cache:

  python -m inception.detection.proposals --config=configs/detection.py:bccd --split=test --workdir=runs/bccd_det
"""
import json
from typing import Tuple

from absl import app
from absl import flags
import ml_collections

from inception import command
from inception.detection import coverage
from inception.detection import proposal_cache
from inception.detection import selective_search
from inception.detection import voc
from inception.errors import UserError


def cache_root(config: ml_collections.ConfigDict, workdir: str) -> str:
  """`proposals.cache_dir`, else `<workdir>/proposals`; a UserError when neither is given."""
  if config.proposals.cache_dir:
    return config.proposals.cache_dir
  if not workdir:
    raise UserError('Nowhere to cache the proposals: pass --workdir=DIR (they go to DIR/proposals) or '
                    '--config.proposals.cache_dir=DIR.')
  return f'{workdir.rstrip("/")}/proposals'


def build(config: ml_collections.ConfigDict, split: str,
          workdir: str = '') -> Tuple[voc.VocSplit, proposal_cache.ProposalRun, dict]:
  """The split's records, their Selective Search proposals and the proposals' box recall (coverage.recall)."""
  params = selective_search.Params.from_config(config.proposals)
  root = cache_root(config, workdir)
  data = voc.load_split(config.data.root, split, config.data.classes, config.data.decode_images)
  run = proposal_cache.proposals_for(data.records, params, root, config.proposals.workers)
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


def main(argv):
  """The command: for each --split, the proposals' summary, their recall line, and the JSON beside the cache."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  from etils import epath  # pylint: disable=import-outside-toplevel
  for split in flags.FLAGS.split:
    _, run, result = build(flags.FLAGS.config, split, flags.FLAGS.workdir)
    print(run.summary(), flush=True)
    print(recall_line(result), flush=True)
    out = epath.Path(run.folder) / f'recall_{split}.json'
    out.write_text(json.dumps(result, indent=2))
    print(f'Wrote {out}.', flush=True)


if __name__ == '__main__':  # the flags only here: a library import defines none (inception.detect has its own)
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/detection.py:bccd.', lock_config=True)
  flags.mark_flag_as_required('config')
  flags.DEFINE_list('split', ['test'], 'The splits (their ImageSets/Main/<split>.txt), e.g. train,val,test.')
  flags.DEFINE_string('workdir', '', 'The cache goes to WORKDIR/proposals (or --config.proposals.cache_dir).')
  command.run(main, check_config=True)
