"""Hyperparameter sweeps: one `inception.main` run per combination of config overrides, and a table of the results.

  python -m launch.sweep --config=configs/googlenet.py:mini --root=runs/sweep_lr_wd \\
      --sweep='optimizer.lr=0.02,0.05' --sweep='optimizer.weight_decay=5e-5,2e-4' [--parallel=K] [--dry_run] \\
      [-- --config.num_epochs=7]

`--sweep=KEY=V1,V2,...` axes (Python literals, else strings) run as their cartesian product, first axis outermost.
`--random=N` draws N values of each `KEY=uniform(a,b)` / `loguniform(a,b)` / `choice(a,b,...)` axis (seeded by
`--seed`, rounded to 4 significant digits) and crosses each draw with the grid axes. Without `--sweep`, the config
file's `sweep(arg)` lists the runs. Arguments after `--` go to every run. Each run trains in ROOT/NAME (NAME from its
overrides, e.g. `lr=0.02,weight_decay=5e-05`) and logs to ROOT/NAME/sweep.log; ROOT/sweep.csv is rewritten after each
run and the table printed at the end, best EMA top-1 first. ROOT may be local or gs://: the sweep's files go through
the path library (etils.epath), and on gs:// a run's log is written locally as it runs (log_path) and copied to
ROOT/NAME/sweep.log when it ends. The same command again skips finished runs and resumes the others. The runs start
in the sweep's directory, so every path given (the config file, --root, the arguments after `--`) means what it means
there. `--dry_run` prints one shell command per run (to run from that directory) and runs nothing.
"""
import ast
import csv
import hashlib
import io
import itertools
import json
import math
import os
import random
import re
import runpy
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from etils import epath

from inception import command, config_checks, errors

RANDOM = re.compile(r'^(uniform|loguniform|choice)\((.*)\)$')
RESULTS = (('ema_top1', 'eval_ema/top1'), ('ema_top5', 'eval_ema/top5'), ('raw_top1', 'eval/top1'),
           ('raw_top5', 'eval/top5'))  # (CSV column, key in final_eval.json)
STATUS = 'sweep_status.json'  # per run: status, wall_s (summed over attempts), returncode, error
Run = Dict[str, Any]


class SweepError(errors.UserError):
  """A sweep that cannot run as given; the message says why (one line, inception/command.py)."""


class Axis(NamedTuple):
  key: str
  values: Tuple[Any, ...]  # grid values, or a random axis's arguments
  dist: Optional[str]      # None (grid), 'uniform', 'loguniform' or 'choice'


def split_top_level(text: str) -> List[str]:
  """Splits at the commas outside brackets and quotes: '1,(2, 3),"a,b"' -> ['1', '(2, 3)', '"a,b"']."""
  parts, depth, quote, start = [], 0, None, 0
  for i, ch in enumerate(text):
    if quote:
      quote = None if ch == quote else quote
    elif ch in '\'"':
      quote = ch
    elif ch in '([{' or ch in ')]}':
      depth += 1 if ch in '([{' else -1
    elif ch == ',' and depth == 0:
      parts.append(text[start:i].strip())
      start = i + 1
  return parts + [text[start:].strip()]


def parse_value(text: str) -> Any:
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text
  return tuple(value) if isinstance(value, list) else value


def parse_axis(spec: str) -> Axis:
  """'optimizer.lr=0.01,0.05' -> a grid axis; 'optimizer.lr=loguniform(1e-3,1e-1)' -> a random one."""
  key, eq, text = spec.partition('=')
  key, text = key.strip().removeprefix('config.'), text.strip()
  if not eq or not key or not text:
    raise SweepError(f'--sweep={spec!r}: expected KEY=V1,V2,... or KEY=uniform(a,b) / loguniform(a,b) / choice(a,...).')
  match = RANDOM.match(text)
  if not match:
    return Axis(key, tuple(map(parse_value, split_top_level(text))), None)
  dist, args = match.group(1), tuple(map(parse_value, split_top_level(match.group(2))))
  if dist != 'choice' and (len(args) != 2 or not all(isinstance(a, (int, float)) for a in args)
                           or (dist == 'loguniform' and min(args) <= 0)):
    raise SweepError(f'--sweep={spec!r}: {dist} takes two numbers (positive for loguniform).')
  return Axis(key, args, dist)


def draw(axis: Axis, rng: random.Random) -> Any:
  if axis.dist == 'choice':
    return rng.choice(axis.values)
  (lo, hi), log = axis.values, axis.dist == 'loguniform'
  x = math.exp(rng.uniform(math.log(lo), math.log(hi))) if log else rng.uniform(lo, hi)
  return float(f'{x:.4g}')


def expand_runs(axes: Sequence[Axis], num_random: int = 0, seed: int = 0) -> List[Run]:
  """The runs, keys in axis order: each random draw in turn crossed with the grid's product; duplicates dropped."""
  grid, rand = [a for a in axes if a.dist is None], [a for a in axes if a.dist]
  if rand and num_random < 1:
    raise SweepError(f'random axes ({", ".join(a.key for a in rand)}) need --random=N.')
  if num_random and not rand:
    raise SweepError('--random=N needs a random axis, e.g. --sweep="optimizer.lr=loguniform(1e-3,1e-1)".')
  rng = random.Random(seed)
  draws = [{a.key: draw(a, rng) for a in rand} for _ in range(num_random or 1)]
  runs = {}
  for drawn in draws:
    for combo in itertools.product(*(a.values for a in grid)):
      values = {**dict(zip((a.key for a in grid), combo)), **drawn}
      run = {a.key: values[a.key] for a in axes}
      runs.setdefault(run_name(run), run)
  return list(runs.values())


def flag_value(value: Any) -> str:
  """A value as written on the command line (`--config.KEY=...`)."""
  if isinstance(value, bool):
    return str(value).lower()
  return repr(value) if isinstance(value, (float, tuple, list)) else str(value)


def labels(keys: Sequence[str]) -> List[str]:
  """Keys by their last component (`optimizer.lr` -> `lr`), or all in full if that would be ambiguous."""
  short = [k.rsplit('.', 1)[-1] for k in keys]
  return short if len(set(short)) == len(short) else list(keys)


def run_name(overrides: Run) -> str:
  """A folder name from the overrides alone (keys sorted), e.g. `lr=0.01,weight_decay=0.0001`; a tuple of numbers
  reads `0.08_1.0`. Characters other than [A-Za-z0-9._+-] in a value become '_', and a hash keeps the name unique."""
  if not overrides:
    return 'default'
  keys = sorted(overrides)
  numbers = lambda v: isinstance(v, (tuple, list)) and all(type(x) in (int, float) for x in v)
  values = ['_'.join(map(flag_value, v)) if numbers(v) else flag_value(v) for v in map(overrides.get, keys)]
  safe = [re.sub(r'[^A-Za-z0-9._+-]', '_', v) for v in values]
  name = ','.join(f'{k}={v}' for k, v in zip(labels(keys), safe))
  if safe != values or len(name) > 150:
    digest = hashlib.sha1(json.dumps([[k, flag_value(overrides[k])] for k in keys]).encode()).hexdigest()[:8]
    name = f'{name[:140]}-{digest}'
  return name


def build_command(spec: str, root: str, overrides: Run, extra: Sequence[str] = ()) -> List[str]:
  return [sys.executable, '-m', 'inception.main', f'--config={spec}',
          f'--config.workdir={os.path.join(root, run_name(overrides))}',
          *(f'--config.{k}={flag_value(v)}' for k, v in overrides.items()), *extra]


def config_sweep(spec: str) -> List[Run]:
  """The runs listed by the config file's `sweep(arg)`, arg being the part of `spec` after ':'."""
  config_checks.load_config(spec)  # a missing file or variant fails here, with its message
  path, _, arg = spec.partition(':')
  fn = runpy.run_path(path).get('sweep')
  if fn is None:
    raise SweepError(f'{path} has no sweep(arg): give the axes with --sweep=KEY=V1,V2,...')
  try:
    runs = fn(arg)
  except ValueError as e:
    raise SweepError(str(e)) from None
  if not runs or not all(isinstance(r, dict) for r in runs):
    raise SweepError(f'{path}: sweep({arg!r}) must return a non-empty list of override dicts.')
  return [{k.removeprefix('config.'): tuple(v) if isinstance(v, list) else v for k, v in r.items()} for r in runs]


def validate(spec: str, root: str, runs: Sequence[Run], extra: Sequence[str]) -> None:
  """Every run's command line checked as inception.main checks it, before anything starts."""
  if any(a.startswith('--config.workdir') for a in extra) or any('workdir' in r for r in runs):
    raise SweepError('the sweep sets --config.workdir itself (ROOT/NAME); pass --root instead.')
  for run in runs:
    config_checks.check_overrides(build_command(spec, root, run, extra)[3:])


def read_json(path) -> dict:
  """The JSON object in `path` (local or gs://); {} when it is missing or not JSON."""
  path = epath.Path(path)
  try:
    return json.loads(path.read_text()) if path.exists() else {}
  except (OSError, ValueError):
    return {}


def write_json(path, value: Any) -> None:
  epath.Path(path).write_text(json.dumps(value, indent=2))


def read_steps(path) -> Optional[int]:
  """The largest `step` in a metrics.jsonl (a line cut short by a kill is ignored)."""
  path, steps = epath.Path(path), []
  for line in path.read_text().splitlines() if path.exists() else ():
    try:
      steps.append(int(json.loads(line)['step']))
    except (ValueError, KeyError, TypeError):
      pass
  return max(steps, default=None)


def read_result(root: str, run: Run) -> Dict[str, Any]:
  """One row: the overrides, status (done / failed / pending), final accuracies, steps, wall time, error."""
  workdir = epath.Path(root) / run_name(run)
  final, state = read_json(workdir / 'final_eval.json'), read_json(workdir / STATUS)
  status = 'done' if final else ('failed' if state.get('status') == 'failed' else 'pending')
  return {'name': run_name(run), **{k: flag_value(v) for k, v in run.items()}, 'status': status,
          **{col: final.get(key) for col, key in RESULTS}, 'steps': read_steps(workdir / 'metrics.jsonl'),
          'wall_s': state.get('wall_s'), 'error': state.get('error', '') if status == 'failed' else ''}


def columns(runs: Sequence[Run]) -> List[str]:
  return ['name', *dict.fromkeys(k for r in runs for k in r), 'status', *(c for c, _ in RESULTS), 'steps', 'wall_s',
          'error']


def write_csv(path, runs: Sequence[Run], rows: Sequence[Dict[str, Any]]) -> None:
  """Written to a temporary file, then renamed: a kill never leaves half a table (local or gs://)."""
  text = io.StringIO()
  writer = csv.DictWriter(text, columns(runs))
  writer.writeheader()
  writer.writerows({k: '' if v is None else round(v, 1) if k == 'wall_s' else v for k, v in r.items()} for r in rows)
  path = epath.Path(path)
  temporary = path.parent / (path.name + '.tmp')
  temporary.write_text(text.getvalue())
  temporary.replace(path)


def _cell(key: str, value: Any) -> str:
  if value is None:
    return '-'
  return f'{value:.0f}' if key == 'wall_s' else f'{value:.4f}' if isinstance(value, float) else str(value)[:100]


def format_columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  widths = [max(map(len, col)) for col in zip(header, *rows)]
  return '\n'.join('  '.join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [header, *rows])


def format_table(runs: Sequence[Run], rows: Sequence[Dict[str, Any]]) -> str:
  """Best EMA top-1 first, then failed and pending runs in sweep order; keys shortened as in the names."""
  cols = columns(runs)
  keys = cols[1:cols.index('status')]
  ranked = sorted(rows, key=lambda r: (r['status'] != 'done', -(r['ema_top1'] or 0)))
  return format_columns(['name', *labels(keys), *cols[len(keys) + 1:]],
                        [[_cell(c, r.get(c)) for c in cols] for r in ranked])


def seed_stats(runs: Sequence[Run], rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """Per combination of the overrides other than `seed`: mean, sample std, min and max over its done runs."""
  groups: Dict[tuple, list] = {}
  for run, row in zip(runs, rows):
    groups.setdefault(tuple((k, flag_value(v)) for k, v in run.items() if k != 'seed'), []).append(row)
  stats = []
  for combo, members in groups.items():
    done = [m for m in members if m['status'] == 'done']
    stat = {**dict(combo), 'seeds': f'{len(done)}/{len(members)}'}
    for col in ('ema_top1', 'raw_top1'):
      xs = [m[col] for m in done]
      stat.update({f'{col}_mean': statistics.mean(xs) if xs else None, f'{col}_min': min(xs, default=None),
                   f'{col}_std': statistics.stdev(xs) if len(xs) > 1 else 0.0 if xs else None,
                   f'{col}_max': max(xs, default=None)})
    stats.append(stat)
  return sorted(stats, key=lambda s: -(s['ema_top1_mean'] if s['ema_top1_mean'] is not None else -1))


def format_seed_stats(stats: Sequence[Dict[str, Any]]) -> str:
  keys = list(stats[0])[:list(stats[0]).index('seeds')]
  spread = lambda s, c: '-' if s[f'{c}_min'] is None else f'{s[f"{c}_min"]:.4f}-{s[f"{c}_max"]:.4f}'
  header = [*labels(keys), 'seeds', *(f'{c}_{x}' for c in ('ema_top1', 'raw_top1') for x in ('mean', 'std', 'min-max'))]
  lines = [[*(s[k] for k in keys), s['seeds'], *(x for c in ('ema_top1', 'raw_top1') for x in (
      _cell(c, s[f'{c}_mean']), _cell(c, s[f'{c}_std']), spread(s, c)))] for s in stats]
  return 'Over seeds (done runs; std: sample, n-1):\n' + format_columns(header, lines)


def core_sets(parallel: int) -> List[List[int]]:
  """This process's CPU cores split into `parallel` disjoint, contiguous parts."""
  cores = sorted(os.sched_getaffinity(0))
  if not 1 <= parallel <= len(cores):
    raise SweepError(f'--parallel={parallel}: the sweep has {len(cores)} cores to share.')
  return [cores[len(cores) * i // parallel:len(cores) * (i + 1) // parallel] for i in range(parallel)]


def _log(message: str) -> None:
  print(f'launch.sweep: {message}', file=sys.stderr, flush=True)


def log_path(root: str, name: str) -> str:
  """The local file a run's output is appended to as it runs: ROOT/NAME/sweep.log itself on a local root; on a
  gs:// root (whose objects take no appends) a file under the temporary folder, copied to ROOT/NAME/sweep.log by
  finish_run."""
  root = str(epath.Path(root))
  if '://' not in root:
    return os.path.join(root, name, 'sweep.log')
  digest = hashlib.sha1(root.encode()).hexdigest()[:8]
  return os.path.join(tempfile.gettempdir(), f'launch.sweep-{digest}', name, 'sweep.log')


def start_run(spec: str, root: str, run: Run, extra: Sequence[str], cores: List[int]) -> subprocess.Popen:
  """Writes overrides.json and the `running` status, then starts the run on `cores`, output appended to its log
  (log_path: on a gs:// root, after the earlier attempts' ROOT/NAME/sweep.log)."""
  workdir = epath.Path(root) / run_name(run)
  workdir.mkdir(parents=True, exist_ok=True)
  write_json(workdir / 'overrides.json', run)
  write_json(workdir / STATUS, {**read_json(workdir / STATUS), 'status': 'running'})
  local_log = log_path(root, run_name(run))
  if local_log != os.fspath(workdir / 'sweep.log'):
    os.makedirs(os.path.dirname(local_log), exist_ok=True)
    if not os.path.exists(local_log) and (workdir / 'sweep.log').exists():
      (workdir / 'sweep.log').copy(local_log)
  with open(local_log, 'ab') as log:  # a local file by construction (log_path)
    return subprocess.Popen(build_command(spec, root, run, extra), env=command.child_environment(),
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, cores))  # in the sweep's directory


def finish_run(workdir: str, returncode: int, seconds: float, stopped: bool) -> Dict[str, Any]:
  """Records how the run ended in its status file: done, interrupted (by the sweep's signal) or failed; on a gs://
  root, copies its log there."""
  workdir = epath.Path(workdir)
  local_log = log_path(str(workdir.parent), workdir.name)
  if local_log != os.fspath(workdir / 'sweep.log'):
    epath.Path(local_log).copy(workdir / 'sweep.log', overwrite=True)
  state = read_json(workdir / STATUS)
  state.update(status='done' if (workdir / 'final_eval.json').exists() else
               'interrupted' if stopped else 'failed', wall_s=state.get('wall_s', 0.0) + seconds,
               returncode=returncode)
  state.pop('error', None)
  if state['status'] == 'failed':
    with open(local_log, errors='replace') as log:
      lines = [l.strip() for l in log if l.strip()]
    state['error'] = lines[-1] if lines else f'exit code {returncode}'
  write_json(workdir / STATUS, state)
  return state


def execute(spec: str, root: str, runs: Sequence[Run], extra: Sequence[str], parallel: int) -> int:
  """Runs what is not done, `parallel` at once; returns the exit code (128 + the signal when stopped by one)."""
  stop = []
  handlers = {s: signal.signal(s, lambda signum, _: stop.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
  slots, active = core_sets(parallel), {}
  epath.Path(root).mkdir(parents=True, exist_ok=True)
  report = lambda: write_csv(epath.Path(root) / 'sweep.csv', runs, [read_result(root, r) for r in runs])
  report()
  queue = [r for r in runs if not (epath.Path(root) / run_name(r) / 'final_eval.json').exists()]
  if len(queue) < len(runs):
    _log(f'{len(runs) - len(queue)} of {len(runs)} runs done before, skipped.')

  def finish(proc, stopped=False):
    name, cores, start = active.pop(proc)
    slots.append(cores)
    state = finish_run(str(epath.Path(root) / name), proc.returncode, time.time() - start, stopped)
    failed = f' (log: {epath.Path(root) / name / "sweep.log"}): {state["error"]}' if 'error' in state else '.'
    _log(f'{name}: {state["status"]} after {state["wall_s"]:.0f} s{failed}')
    report()

  while (queue or active) and not stop:
    while queue and slots and not stop:
      run, cores = queue.pop(0), slots.pop(0)
      active[start_run(spec, root, run, extra, cores)] = (run_name(run), cores, time.time())
      _log(f'run {runs.index(run) + 1} of {len(runs)}, {run_name(run)}: started on cores {cores}.')
    for proc in [p for p in active if p.poll() is not None]:
      finish(proc)
    time.sleep(0.2)
  if stop:
    _log(f'signal {stop[0]}: stopping {len(active)} run(s); the same command resumes them.')
    for proc in list(active):
      try:
        os.killpg(proc.pid, stop[0])
        proc.wait(60)
      except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
      except ProcessLookupError:
        proc.wait()
      finish(proc, stopped=True)
  for s, handler in handlers.items():
    signal.signal(s, handler)
  rows = [read_result(root, r) for r in runs]
  print(format_table(runs, rows), flush=True)
  if any('seed' in r for r in runs):
    print('\n' + format_seed_stats(seed_stats(runs, rows)), flush=True)
  return 128 + stop[0] if stop else int(any(r['status'] == 'failed' for r in rows))


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  own, extra = (argv[:argv.index('--')], argv[argv.index('--') + 1:]) if '--' in argv else (argv, [])
  parser = command.ArgumentParser(prog='python -m launch.sweep', description=__doc__.split('\n\n')[0],
                                  allow_abbrev=False)
  parser.add_argument('--config', required=True, help='config file[:arg], e.g. configs/googlenet.py:mini')
  parser.add_argument('--root', required=True, help='the sweep folder: one workdir per run, and sweep.csv')
  parser.add_argument('--sweep', action='append', default=[], help='KEY=V1,V2,... or KEY=loguniform(a,b) ...')
  parser.add_argument('--random', type=int, default=0, help='draws of the random axes')
  parser.add_argument('--seed', type=int, default=0, help='seed of the random draws')
  parser.add_argument('--parallel', type=int, default=1, help='runs at once, each on its share of the cores')
  parser.add_argument('--dry_run', action='store_true', help='print the commands, run nothing')
  opts = parser.parse_args(own)
  spec, root = opts.config, opts.root
  if opts.random and not opts.sweep:  # a SweepError or ConfigError: one line, exit 1 (inception/command.py)
    raise SweepError('--random=N draws from --sweep axes such as --sweep="optimizer.lr=loguniform(1e-3,1e-1)".')
  runs = expand_runs(list(map(parse_axis, opts.sweep)), opts.random, opts.seed) if opts.sweep else config_sweep(spec)
  validate(spec, root, runs, extra)
  core_sets(opts.parallel)
  if opts.dry_run:
    print('\n'.join(shlex.join(build_command(spec, root, r, extra)) for r in runs))
    return 0
  return execute(spec, root, runs, extra, opts.parallel)


if __name__ == '__main__':
  command.run_script(main)
