"""Where a profiled step spends its time: the op durations of a `--profile` trace, summed by op kind.

  python -m inception.benchmark --config=configs/googlenet.py --mode=train --steps=2 --profile=/tmp/prof
  python benchmarks/profile_ops.py /tmp/prof [--steps=2] [--top=25]

It reads the newest `perfetto_trace.json.gz` under the folder and sums the durations of the ops XLA ran on its
worker threads (XLA:CPU's Eigen pool; on other backends, every thread whose name says XLA), with the numbers XLA
appends to fusion names dropped, so that every `pad_slice_fusion.12` counts as `pad_slice_fusion`. Durations are
summed over threads, so on a 2-core CPU they add up to about twice the step's wall time. The executor's own span
(`ThunkExecutor::Execute`), which contains the ops, and the thread pool's waits are left out of the total. With several devices a collective's span (`all-reduce`)
includes the wait for the other devices. On one core (`taskset -c 0`) XLA:CPU has no worker threads and runs every op,
the convolutions included, on the client's thread, so that profile names every op.
"""
import argparse
import collections
import glob
import gzip
import json
import os
import re
from typing import Tuple

NOT_OPS = ('ThunkExecutor::', 'SlinkyThreadPool::', 'ThreadpoolListener::')  # spans that hold ops; waits; bookkeeping


def op_times(trace_path: str) -> Tuple[collections.Counter, str]:
  """Microseconds per op kind on XLA's worker threads over the whole trace (on one core, on the client's thread),
  and which threads those were."""
  with gzip.open(trace_path, 'rt') as f:
    events = json.load(f)['traceEvents']
  names = {e['tid']: e['args']['name'] for e in events if e.get('ph') == 'M' and e.get('name') == 'thread_name'}
  workers = {tid for tid, name in names.items() if 'XLAEigen' in name} or {
      tid for tid, name in names.items() if 'XLA' in name and 'PjRt' not in name}
  spans_on = lambda threads: sorted((e['tid'], e['ts'], e['dur'], e['name']) for e in events if e.get('ph') == 'X'
                                    and e.get('tid') in threads and not e['name'].startswith(NOT_OPS))
  spans, where = spans_on(workers), 'summed over worker threads'
  if not spans:  # one core (e.g. under `taskset -c 0`): XLA:CPU runs every op on the client's own thread
    spans = spans_on({tid for tid, name in names.items() if 'PjRt' in name})
    where = "on the client's thread (one core: no worker threads)"
  totals, thread, outer_end = collections.Counter(), None, 0.0
  for tid, ts, dur, name in spans:  # only the outermost op of each nest counts, so nothing is counted twice
    if tid != thread:
      thread, outer_end = tid, 0.0
    if ts >= outer_end:
      totals[re.sub(r'(\.\d+)+$', '', name)] += dur
      outer_end = ts + dur
  return totals, where


def newest_trace(folder: str) -> str:
  found = sorted(glob.glob(os.path.join(folder, '**', 'perfetto_trace.json.gz'), recursive=True), key=os.path.getmtime)
  if not found:
    raise SystemExit(f'No perfetto_trace.json.gz under {folder}: run `python -m inception.benchmark ... '
                     f'--profile={folder}` first.')
  return found[-1]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('folder', help='The --profile folder of inception.benchmark.')
  parser.add_argument('--steps', type=int, default=1, help='Timed steps in the trace (figures are per step).')
  parser.add_argument('--top', type=int, default=25, help='Op kinds to list.')
  args = parser.parse_args()
  path = newest_trace(args.folder)
  totals, where = op_times(path)
  total = sum(totals.values())
  if not total:
    raise SystemExit(f'{path} holds no op on XLA worker threads.')
  print(f'{path}: {total / 1e3 / args.steps:.1f} ms of ops per step, {where}')
  for name, us in totals.most_common(args.top):
    print(f'{us / 1e3 / args.steps:10.1f} ms  {100 * us / total:5.1f}%  {name}')


if __name__ == '__main__':
  main()
