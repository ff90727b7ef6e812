"""The paper's evaluation of trained runs: 1, 10 or 144 crops per image, ensembles, and a Table-3 style report.

  python -m inception.evaluate --workdir=W [--crops=1|10|144] [--weights=ema|raw] [--step=N] [--split=eval|train] \
      [--config.key=value ...]
  python -m inception.evaluate --workdirs=W1,W2,... [--crops=...]     # an ensemble: the models' softmax averaged
  python -m inception.evaluate --workdirs=W1,W2,... --table [--out=DIR]   # 1/10/144 crops, each model and ensemble

Each run is evaluated with its own config (config.json; `--config.*` overrides apply to every run, e.g.
`--config.eval_batch_size=50`) on its eval split. The probabilities are averaged over an image's crops, and over the
models of an ensemble (models may differ in architecture and input size). A single run writes
W/eval_<crops>crops_<weights>.json; an ensemble writes eval_ensemble_<crops>crops_<weights>.json, and --table writes
table.md and table.csv, in --out (default: the first workdir). With --split=train the names end in `_train`
(eval_1crops_ema_train.json, table_train.md), so the two splits' results never overwrite each other. Workdirs and
--out may be local or gs://: every file goes through the path library (etils.epath). The last line of a run or an
ensemble is `eval (<crops> crops, <weights> weights, <N> images): top1=... top5=... loss=...`. With --distributed (the
coordinator from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or found on TPU pods and SLURM) every
host evaluates its share of the images, as in training; process 0 prints and writes.
"""
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app, flags

from inception import command

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run to evaluate (its --config.workdir).')
_WORKDIRS = flags.DEFINE_list('workdirs', None, 'Several runs: evaluated one by one, then as an ensemble.')
_CROPS = flags.DEFINE_enum('crops', '1', ['1', '10', '144'], 'Crops per image (the paper\'s section 7).')
_WEIGHTS = flags.DEFINE_enum('weights', 'ema', ['ema', 'raw'], 'The averaged (EMA) or the raw weights.')
_STEP = flags.DEFINE_integer('step', None, 'The checkpoint step (default: the latest).')
_SPLIT = flags.DEFINE_enum('split', 'eval', ['eval', 'train'], 'The run\'s held-out split, or its training split.')
_TABLE = flags.DEFINE_bool('table', False, '1, 10 and 144 crops for every model and for the ensemble, as a table.')
_OUT = flags.DEFINE_string('out', None, 'Where ensemble results and --table files go (default: the first workdir).')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'Join a multi-process job (coordinator from the environment).')


def result_line(what: str, crops: int, weights: str, s) -> str:
  return (f'eval ({what}{crops} crops, {weights} weights, {s["count"]} images): top1={s["top1"]:.4f} '
          f'top5={s["top5"]:.4f} loss={s["loss"]:.4f}')


def evaluate_run(model, crops: int, mesh, split: str):
  """(probs, labels, seen) of one loaded run over its `split`, and the MultiCropEvaluator's rate figures."""
  from inception.evaluators.multicrop import MultiCropEvaluator  # pylint: disable=import-outside-toplevel
  evaluator = MultiCropEvaluator(model.config, model.graphdef, mesh, crops, split=split)
  result = evaluator.probabilities(model.params, model.model_state, model.num_classes)
  return result, evaluator.last_rate, evaluator.batches.num_examples


def result_file(folder: str, stem: str, split: str, extension: str = 'json'):
  """folder/<stem>.<extension> for the held-out split, folder/<stem>_<split>.<extension> for another, as an epath
  (local or gs://)."""
  from etils import epath  # pylint: disable=import-outside-toplevel
  return epath.Path(folder) / (f'{stem}.{extension}' if split == 'eval' else f'{stem}_{split}.{extension}')


def _write(path, payload) -> None:
  """Writes text or JSON to `path` (an epath: local or gs://), creating its folder (--out may be new)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(payload if isinstance(payload, str) else json.dumps(payload, indent=2))


def main(argv, overrides):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  workdirs = list(_WORKDIRS.value or []) + ([_WORKDIR.value] if _WORKDIR.value else [])
  if not workdirs:
    raise app.UsageError('Pass --workdir=W (or --workdirs=W1,W2,... for an ensemble).')
  import jax  # pylint: disable=import-outside-toplevel
  from inception import compile_cache, distributed, sharding, trained  # pylint: disable=import-outside-toplevel
  from inception.evaluators import table as report_table  # pylint: disable=import-outside-toplevel
  from inception.evaluators.multicrop import ensemble, scores  # pylint: disable=import-outside-toplevel
  out_dir = _OUT.value or workdirs[0]
  weights = _WEIGHTS.value
  if _DISTRIBUTED.value:  # a bad setting, config or checkpoint: a UserError, one line (inception/command.py)
    distributed.initialize()
  compile_cache.enable(trained.load_config(workdirs[0], overrides).get('compile_cache', ''), workdirs[0])
  mesh = sharding.make_mesh()
  lead = jax.process_index() == 0
  runs = [trained.load(w, mesh, overrides=overrides, step=_STEP.value, weights=weights) for w in workdirs]
  distributed.barrier('evaluate_loaded')  # every host loaded: the first collective waits for no one for long
  crop_counts = (1, 10, 144) if _TABLE.value else (int(_CROPS.value),)
  results = {}  # (run index or 'ensemble', crops) -> scores
  for crops in crop_counts:
    members = []
    for i, run in enumerate(runs):
      (probs, labels, seen), rate, total = evaluate_run(run, crops, mesh, _SPLIT.value)
      members.append((probs, labels, seen))
      s = scores(probs, labels, seen)
      s.update(rate, skipped=total - s['count'])
      results[i, crops] = s
      if lead:
        print(f'{run.workdir} (step {run.step}): {rate["images_per_s"]:.1f} images/s, '
              f'{rate["crops_per_s"]:.1f} crops/s', flush=True)
        _write(result_file(run.workdir, f'eval_{crops}crops_{weights}', _SPLIT.value), {
            'workdir': run.workdir, 'step': run.step, 'crops': crops, 'weights': weights, 'split': _SPLIT.value,
            'images': s['count'], 'skipped_images': s['skipped'], 'top1': s['top1'], 'top5': s['top5'],
            'loss': s['loss'], 'images_per_s': rate['images_per_s'], 'crops_per_s': rate['crops_per_s']})
        print(result_line('', crops, weights, s), flush=True)
    if len(runs) > 1:
      s = scores(*ensemble(members))
      results['ensemble', crops] = s
      if lead:
        _write(result_file(out_dir, f'eval_ensemble_{crops}crops_{weights}', _SPLIT.value), {
            'workdirs': workdirs, 'steps': [r.step for r in runs], 'crops': crops, 'weights': weights,
            'split': _SPLIT.value, 'images': s['count'], 'top1': s['top1'], 'top5': s['top5'], 'loss': s['loss']})
        print(result_line(f'ensemble of {len(runs)} models, ', crops, weights, s), flush=True)
  if _TABLE.value and lead:
    rows = report_table.table_rows(runs, results)
    markdown = report_table.markdown(rows)
    table_md, table_csv = (result_file(out_dir, 'table', _SPLIT.value, ext) for ext in ('md', 'csv'))
    _write(table_md, markdown)
    _write(table_csv, report_table.csv(rows))
    print(markdown, flush=True)
    print(f'Wrote {table_md} and {table_csv.name}.', flush=True)


def run():
  """The command (inception/command.py): the `--config.key=value` overrides split off (they apply to each run's saved
  config), then main; it computes steps."""
  args = command.parse_config_args(sys.argv[1:])
  spec = [] if args.spec is None else [f'--config={args.spec}']  # not a flag of this command: absl says so
  command.run(lambda argv: main(argv, args.overrides), computes_steps=True, argv=[sys.argv[0], *spec, *args.rest])


if __name__ == '__main__':
  run()
