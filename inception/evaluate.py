"""The paper's evaluation of trained runs: 1, 10 or 144 crops per image, ensembles, and a Table-3 style report.

  python -m inception.evaluate --workdir=W [--crops=1|10|144] [--weights=ema|raw] [--step=N] [--split=eval|train] \
      [--config.key=value ...]
  python -m inception.evaluate --workdirs=W1,W2,... [--crops=...]     # an ensemble: the models' softmax averaged
  python -m inception.evaluate --workdirs=W1,W2,... --table [--out=DIR]   # 1/10/144 crops, each model and ensemble

Each run is evaluated with its own config (config.json; `--config.*` overrides apply to every run, e.g.
`--config.eval_batch_size=50`) on its eval split. The probabilities are averaged over an image's crops, and over the
models of an ensemble (models may differ in architecture and input size). A single run writes
W/eval_<crops>crops_<weights>.json; an ensemble writes eval_ensemble_<crops>crops_<weights>.json, and --table writes
table.md and table.csv, in --out (default: the first workdir). The last line of a run or ensemble is
`eval (<crops> crops, <weights> weights, <N> images): top1=... top5=... loss=...`. With --distributed (the
coordinator from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or found on TPU pods and SLURM) every
host evaluates its share of the images, as in training; process 0 prints and writes.
"""
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app, flags

from inception import host_memory

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


def _write(path: str, payload) -> None:
  with open(path, 'w') as f:
    f.write(payload if isinstance(payload, str) else json.dumps(payload, indent=2))


def main(argv, overrides):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  workdirs = list(_WORKDIRS.value or []) + ([_WORKDIR.value] if _WORKDIR.value else [])
  if not workdirs:
    raise app.UsageError('Pass --workdir=W (or --workdirs=W1,W2,... for an ensemble).')
  import jax  # pylint: disable=import-outside-toplevel
  from inception import distributed, errors, sharding, trained  # pylint: disable=import-outside-toplevel
  from inception.evaluators import table as report_table  # pylint: disable=import-outside-toplevel
  from inception.evaluators.multicrop import ensemble, scores  # pylint: disable=import-outside-toplevel
  out_dir = _OUT.value or workdirs[0]
  weights = _WEIGHTS.value
  try:
    if _DISTRIBUTED.value:
      distributed.initialize()  # incomplete settings: a DistributedSetupError, one line below
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
          _write(os.path.join(run.workdir, f'eval_{crops}crops_{weights}.json'), {
              'workdir': run.workdir, 'step': run.step, 'crops': crops, 'weights': weights, 'split': _SPLIT.value,
              'images': s['count'], 'skipped_images': s['skipped'], 'top1': s['top1'], 'top5': s['top5'],
              'loss': s['loss'], 'images_per_s': rate['images_per_s'], 'crops_per_s': rate['crops_per_s']})
          print(result_line('', crops, weights, s), flush=True)
      if len(runs) > 1:
        s = scores(*ensemble(members))
        results['ensemble', crops] = s
        if lead:
          _write(os.path.join(out_dir, f'eval_ensemble_{crops}crops_{weights}.json'), {
              'workdirs': workdirs, 'steps': [r.step for r in runs], 'crops': crops, 'weights': weights,
              'split': _SPLIT.value, 'images': s['count'], 'top1': s['top1'], 'top5': s['top5'], 'loss': s['loss']})
          print(result_line(f'ensemble of {len(runs)} models, ', crops, weights, s), flush=True)
  except (errors.UserError, ValueError) as e:
    sys.exit(f'{type(e).__name__}: {e}')
  if _TABLE.value and lead:
    rows = report_table.table_rows(runs, results)
    markdown = report_table.markdown(rows)
    _write(os.path.join(out_dir, 'table.md'), markdown)
    _write(os.path.join(out_dir, 'table.csv'), report_table.csv(rows))
    print(markdown, flush=True)
    print(f'Wrote {os.path.join(out_dir, "table.md")} and table.csv.', flush=True)


def run():
  """Splits off the `--config.key=value` overrides (they apply to each run's saved config), then runs main."""
  host_memory.restart_with_host_settings()
  argv, overrides = [], []
  args = sys.argv[1:]
  i = 0
  while i < len(args):
    a = args[i]
    if a.startswith('--config.'):
      key, eq, value = a[len('--config.'):].partition('=')
      if not eq and i + 1 < len(args) and not args[i + 1].startswith('--'):
        value, i = args[i + 1], i + 1
      overrides.append((key, value if (eq or value) else None))
    else:
      argv.append(a)
    i += 1
  sys.argv = [sys.argv[0]] + argv
  app.run(lambda argv: main(argv, overrides))


if __name__ == '__main__':
  run()
