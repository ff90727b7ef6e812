"""Training curves of one or more runs in one PNG: train loss, eval top-1 (raw and EMA), learning rate, images/s.

  python -m inception.report runs/googlenet_mini             # writes runs/googlenet_mini/curves.png
  python -m inception.report runs/sweep --title='LR sweep'   # a sweep root: every subfolder holding metrics.jsonl
  python -m inception.report runs/a runs/b --out=/tmp/a_vs_b.png

Each PATH is a run's workdir (holding metrics.jsonl) or a sweep root (subfolders that are run workdirs); local or gs://.
The path of the PNG is printed last.
"""
import json
import os
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

from absl import app, flags, logging
from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from inception import command, errors

_OUT = flags.DEFINE_string('out', None, 'Output PNG (default: curves.png in the run workdir or first sweep root).')
_TITLE = flags.DEFINE_string('title', None, 'Title above the panels.')

METRICS = 'metrics.jsonl'
EXPECTED = f'a run workdir holding {METRICS}, or a sweep root whose subfolders hold one'
Series = Dict[str, Tuple[List[int], List[float]]]


class ReportError(errors.UserError):
  """A problem with the paths given that the user can fix; the command prints it as one line (inception/command.py)."""


def load_run(workdir) -> Series:
  """{key: (steps, values)} from `workdir/metrics.jsonl`, sorted by step; a repeated step keeps its last value."""
  path = epath.Path(workdir) / METRICS
  if not path.exists():
    raise ReportError(f'{path}: not found; expected {EXPECTED}.')
  by_key: Dict[str, Dict[int, float]] = {}
  lines = path.read_text().splitlines()
  for number, line in enumerate(lines, 1):
    try:
      row = json.loads(line)
      step = int(row['step'])
    except (ValueError, TypeError, KeyError):  # a run killed mid-write leaves a partial line
      if line.strip():
        logging.warning('%s:%d: skipping a line that is not a JSON object with a "step"%s.', path, number,
                        ' (truncated last line)' if number == len(lines) else '')
      continue
    for key, value in row.items():
      if key not in ('step', 'time') and isinstance(value, (int, float)):
        by_key.setdefault(key, {})[step] = float(value)
  if not by_key:
    raise ReportError(f'{path}: no metric rows; expected one JSON object per line with "step" and scalars.')
  return {key: (sorted(values), [values[s] for s in sorted(values)]) for key, values in by_key.items()}


def _is_run(path: epath.Path) -> bool:
  return (path / METRICS).exists()


def find_runs(paths: Sequence[str]) -> List[epath.Path]:
  """The run workdirs named by `paths`, in order: a workdir itself, or a sweep root's run subfolders, sorted."""
  runs = []
  for p in map(epath.Path, paths):
    if not p.exists():
      raise ReportError(f'{p}: does not exist; expected {EXPECTED}.')
    if p.name == METRICS:  # the file itself was given
      p = p.parent
    if _is_run(p):
      found = [p]
    else:
      found = sorted(d for d in p.iterdir() if d.is_dir() and _is_run(d)) if p.is_dir() else []
    if not found:
      raise ReportError(f'{p}: no {METRICS} in it or its subfolders; expected {EXPECTED}.')
    runs += [r for r in found if r not in runs]
  return runs


def label(workdir) -> str:
  """`lr=0.05, dtype=bfloat16` from the sweep tool's overrides.json, else the folder's name."""
  workdir = epath.Path(workdir)
  overrides_path = workdir / 'overrides.json'
  try:
    overrides = json.loads(overrides_path.read_text()) if overrides_path.exists() else None
  except ValueError:
    logging.warning('%s: not JSON; labelling the run by its folder name.', overrides_path)
    overrides = None
  if not isinstance(overrides, dict) or not overrides:
    return workdir.name or workdir.resolve().name
  short = [k.rsplit('.', 1)[-1] for k in overrides]
  keys = short if len(set(short)) == len(short) else list(overrides)
  fmt = lambda v: f'{v:g}' if isinstance(v, float) else str(v)
  return ', '.join(f'{k}={fmt(v)}' for k, v in zip(keys, overrides.values()))


# (title, y label, [(key, line style, filled markers)]) for each of the four panels, left to right, top to bottom.
PANELS = [
    ('train loss', 'loss', [('train/loss', '-', True)]),
    ('eval top-1 (raw weights: solid, \u25cf; EMA weights: dashed, \u25cb)', 'top-1 accuracy',
     [('eval/top1', '-', True), ('eval_ema/top1', '--', False)]),
    ('learning rate', 'learning rate', [('train/lr', '-', True)]),
    ('throughput', 'images/s', [('train/images_per_s', '-', True)]),
]


def plot(runs: Sequence[Tuple[str, Series]], out_path, title: Optional[str] = None) -> epath.Path:
  """Draws the four panels for `runs` ((label, series) pairs, one colour each) into the PNG `out_path`."""
  fig = Figure(figsize=(12, 7.5), layout='constrained')
  FigureCanvasAgg(fig)
  axes = fig.subplots(2, 2, sharex=True).flatten()
  for i, (name, series) in enumerate(runs):
    color = f'C{i % 10}'
    for ax, (_, _, keys) in zip(axes, PANELS):
      for key, style, filled in keys:
        if key in series:
          steps, values = series[key]
          few = len(steps) <= 30  # evaluations are sparse: mark each point
          ax.plot(steps, values, style, color=color, marker='o' if few else None, markersize=4,
                  markerfacecolor=color if filled else 'white')
  for ax, (panel_title, ylabel, keys) in zip(axes, PANELS):
    ax.set_title(panel_title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if not ax.lines:
      ax.text(0.5, 0.5, 'no data', ha='center', va='center', transform=ax.transAxes, color='gray')
  for ax in axes[2:]:
    ax.set_xlabel('step')
  axes[3].set_ylim(bottom=0)
  lrs = [v for _, s in runs for v in s.get('train/lr', ((), ()))[1] if v > 0]
  if lrs and max(lrs) >= 10 * min(lrs):
    axes[2].set_yscale('log')
  handles = [Line2D([], [], color=f'C{i % 10}', label=name) for i, (name, _) in enumerate(runs)]
  fig.legend(handles=handles, loc='outside lower center', ncols=min(len(handles), 4), frameon=False)
  if title:
    fig.suptitle(title)
  out_path = epath.Path(out_path)
  if '://' in os.fspath(out_path):  # not local: write a temp file and copy it there
    with tempfile.TemporaryDirectory() as tmp:
      fig.savefig(os.path.join(tmp, 'curves.png'), dpi=100)
      epath.Path(tmp, 'curves.png').copy(out_path, overwrite=True)
  else:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(os.fspath(out_path), dpi=100)
  return out_path


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError('Give at least one run workdir or sweep root.')
  workdirs = find_runs(paths)
  out = _OUT.value
  if out is None:
    first = epath.Path(paths[0])
    if len(paths) > 1 and _is_run(first):
      raise ReportError(f'{len(paths)} paths given and the first, {first}, is a run workdir, not a sweep root: '
                        'say where the PNG goes with --out=FILE.png.')
    out = (first.parent if first.name == METRICS else first) / 'curves.png'
  labels = [label(w) for w in workdirs]
  labels = [str(w) if labels.count(n) > 1 else n for w, n in zip(workdirs, labels)]  # same name: the full path
  out = plot([(n, load_run(w)) for n, w in zip(labels, workdirs)], out, _TITLE.value)
  print(out, flush=True)


if __name__ == '__main__':
  command.run(main)  # it computes no step: never restarts
