"""The detection entry's commands, one stage each, all driven by one config (configs/detection.py):

  python -m inception.detect proposals --config=configs/detection.py:bccd [--split=train,val,test]
  python -m inception.detect regions   --config=configs/detection.py:bccd
  python -m inception.main             --config=configs/detection.py:bccd     # fine-tunes the region classifier
  python -m inception.detect evaluate  --config=configs/detection.py:bccd [--workdirs=RUN,RUN2,...] [--split=test]
                                       [--distributed]
  python -m inception.detect predict   --config=configs/detection.py:bccd [--workdirs=...] [--out=DIR] [--json] IMAGE...

`proposals` computes (or reads from the cache) Selective Search's boxes and prints their box recall; `regions` writes
the classifier's training regions as an image folder in the workdir; `evaluate` scores every test proposal with the
trained classifier (or each of --workdirs and their ensemble), applies NMS and writes mAP and per-class AP as JSON and
a Markdown table in the workdir (detection_<split>.json, .md), with --distributed on every process of a multi-process
job (each scores its share of the images; process 0 prints and writes); `predict` prints each image's boxes with
class names and scores and, with --out, draws them into a PNG per image. Exit codes and one-line errors:
inception/command.py.
"""
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app, flags
from ml_collections import config_flags

from inception import command

SUBCOMMANDS = ('proposals', 'regions', 'evaluate', 'predict')
SCORING = ('evaluate', 'predict')  # the subcommands that compute steps (the region classifier's)

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/detection.py:bccd.',
                                          lock_config=True)
_SPLIT = flags.DEFINE_list('split', [], 'proposals: the splits (default: train, val and test); evaluate: one split '
                           '(default: the test split).')
_WORKDIRS = flags.DEFINE_list('workdirs', [], 'evaluate, predict: the trained region classifiers (default: '
                              '--config.workdir); several are an ensemble: their scores averaged before NMS.')
_WEIGHTS = flags.DEFINE_enum('weights', 'ema', ['ema', 'raw'], 'The classifiers\' averaged (EMA) or raw weights.')
_OUT = flags.DEFINE_string('out', '', 'predict: write a PNG of each image with its boxes into this folder.')
_JSON = flags.DEFINE_bool('json', False, 'predict: one JSON object per image instead of text.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'evaluate: join a multi-process job (coordinator from the '
                                 'environment, as inception.evaluate); each process scores its share of the images.')


def _subcommand(argv) -> str:
  if len(argv) < 2 or argv[1] not in SUBCOMMANDS:
    raise app.UsageError(f'Name a stage first: python -m inception.detect {{{",".join(SUBCOMMANDS)}}} --config=... '
                         f'(got {" ".join(argv[1:2]) or "none"}).')
  return argv[1]


def _log(line: str) -> None:
  print(line, flush=True)


def multibox_boxes(config, records):
  """MultiBox's top boxes of `records` from the run `proposals.multibox_workdir` names, or None without one."""
  if not config.proposals.multibox_workdir:
    return None
  from inception.detection import multibox_proposals  # pylint: disable=import-outside-toplevel
  return multibox_proposals.top_boxes(config.proposals.multibox_workdir, records, config.proposals.multibox_top_k)


def proposals_main(config, splits) -> None:
  from inception.detection import coverage, proposals  # pylint: disable=import-outside-toplevel
  d = config.detection_data
  for split in splits or [d.train_split, d.val_split, d.test_split]:
    data, run, result = proposals.build(config, split)
    _log(proposals.recall_line(result))
    multibox = multibox_boxes(config, data.records)
    if multibox is not None:
      merged = coverage.merge([run.boxes, multibox], config.proposals.merge_iou)
      for name, boxes in (('multibox', multibox), ('selective_search+multibox', merged)):
        extra = coverage.recall(data.records, boxes, data.class_names, config.proposals.recall_iou)
        result[name] = extra
        _log(proposals.recall_line({**extra, 'split': f'{split} ({name})'}))
    _log(f'Wrote {proposals.write_recall(run, result)}.')


def regions_main(config) -> None:
  from inception.detection import regions  # pylint: disable=import-outside-toplevel
  regions.write(config, log=_log)


def evaluate_main(config, splits) -> None:
  from etils import epath  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from inception import distributed  # pylint: disable=import-outside-toplevel
  from inception.detection import evaluation  # pylint: disable=import-outside-toplevel
  if len(splits) > 1:
    raise app.UsageError(f'evaluate takes one --split (got {",".join(splits)}).')
  if _DISTRIBUTED.value:
    distributed.initialize()
  lead = jax.process_index() == 0
  split = splits[0] if splits else config.detection_data.test_split
  extra = {'multibox': lambda records: multibox_boxes(config, records)} if config.proposals.multibox_workdir else None
  result = evaluation.run(config, split, _WORKDIRS.value or [config.workdir], _WEIGHTS.value,
                          log=_log if lead else lambda _: None, extra_proposals=extra)
  if not lead:
    return
  out = epath.Path(config.workdir) / f'detection_{result["split"]}.json'
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2))
  table = evaluation.table(result)
  out.with_suffix('.md').write_text(table + '\n')
  _log(table)
  _log(f'Wrote {out} and {out.with_suffix(".md")}.')


def predict_main(config, paths) -> int:
  from inception.detection import prediction  # pylint: disable=import-outside-toplevel
  from inception.data.sources import image_files  # pylint: disable=import-outside-toplevel
  files = image_files(paths)
  if not files:
    raise app.UsageError('Name at least one image file or folder of images after the options.')
  return prediction.run(config, files, _WORKDIRS.value or [config.workdir], _WEIGHTS.value, _OUT.value, _JSON.value,
                        log=_log)


def main(argv):
  stage = _subcommand(argv)
  config = _CONFIG.value
  if stage != 'predict' and len(argv) > 2:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[2:])}')
  if _DISTRIBUTED.value and stage != 'evaluate':
    raise app.UsageError(f'--distributed is for evaluate (got {stage}): the other stages run in one process.')
  start = time.perf_counter()
  if stage == 'proposals':
    proposals_main(config, _SPLIT.value)
  elif stage == 'regions':
    regions_main(config)
  elif stage == 'evaluate':
    evaluate_main(config, _SPLIT.value)
  else:
    return predict_main(config, argv[2:])
  _log(f'{stage}: {time.perf_counter() - start:.1f} s.')
  return command.EXIT_OK


def run():
  """The command (inception/command.py); evaluate and predict compute steps."""
  flags.mark_flag_as_required('config')
  command.run(main, computes_steps=lambda: any(a in SCORING for a in sys.argv[1:2]), check_config=True)


if __name__ == '__main__':
  run()
