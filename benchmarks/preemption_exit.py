"""How long a preempted multi-process run takes from SIGTERM to every process gone, and where the time goes.

  python benchmarks/preemption_exit.py [--num_processes=2] [--devices_per_process=1] [--when='step 6/']
      [--delay=0] [--target=all|one] [--repeat=1] [--keep] [-- ARGS of inception.main]

Starts `python -m launch.local` (no relaunch) in a temporary workdir, waits until process 0's log matches `--when`
(a regular expression), waits `--delay` seconds more, then sends SIGTERM: to the launcher, which passes it to every
process as a scheduler does (`--target=all`, SLURM's `scancel -s TERM`), or to the last process only (`--target=one`,
one host's preemption notice). It then reports, measured from the signal: when each process logged the step it
stopped at, when that step's checkpoint was complete on disk, when each process ended, and the exit codes. Without
ARGS it trains the smoke-test network (tests/runs.py) on a small image folder; `-- --config=configs/googlenet.py:mini`
times the published-size step. A `--config.workdir` in ARGS is used as it is (a run there resumes; only what this
launch appends to its logs is read). With JAX_LOG_COMPILES=1 in the environment, `--when='Compiling jit\(train_step\)'`
signals while the first step compiles.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.runs import make_small_folder, tiny_flags  # noqa: E402  (after the repository is on the path)

STOPPED = re.compile(r'Stopped by (\w+) at step (\d+)')


def _read(path: str, offset: int = 0) -> str:
  """The file from byte `offset` on ('' while it does not exist)."""
  try:
    with open(path, 'rb') as f:
      f.seek(offset)
      return f.read().decode(errors='replace')
  except OSError:
    return ''


def _complete_steps(workdir: str) -> set:
  """Checkpoint steps whose folder orbax has committed (renamed from its temporary name)."""
  try:
    return {int(name) for name in os.listdir(os.path.join(workdir, 'checkpoints')) if name.isdigit()}
  except OSError:
    return set()


def _workers(workdir: str, count: int, deadline: float) -> list:
  """The process ids of the run's `count` inception.main processes (from /proc), by process index."""
  while time.time() < deadline:
    found = {}
    for pid in filter(str.isdigit, os.listdir('/proc')):
      cmd = _read(f'/proc/{pid}/cmdline').split('\0')
      ids = [arg.split('=', 1)[1] for arg in cmd if arg.startswith('--process_id=')]
      if 'inception.main' in cmd and f'--config.workdir={workdir}' in cmd and ids:
        found[int(ids[0])] = int(pid)
    if len(found) == count:
      return [found[i] for i in range(count)]
    time.sleep(0.1)
  raise SystemExit(f'preemption_exit: the launcher did not start {count} processes.')


def _gone(pid: int) -> bool:
  """Whether the process has ended (a zombie until the launcher reaps it, then no more in /proc)."""
  stat = _read(f'/proc/{pid}/stat')
  return not stat or stat.rsplit(')', 1)[1].split()[0] == 'Z'


def run_once(args, main_args, workdir: str) -> dict:
  """One launch, signal and shutdown; returns the timings in seconds from the signal (None: did not happen)."""
  logs = [os.path.join(workdir, 'logs', f'process_{i}.log') for i in range(args.num_processes)]
  starts = [os.path.getsize(log) if os.path.exists(log) else 0 for log in logs]  # a resumed run appends to them
  with open(os.path.join(workdir, 'launcher.log'), 'ab') as out:
    launcher = subprocess.Popen(
        [sys.executable, '-m', 'launch.local', f'--num_processes={args.num_processes}',
         f'--devices_per_process={args.devices_per_process}', '--max_relaunches=0', '--', *main_args],
        cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
  try:
    deadline = time.time() + args.timeout
    workers = _workers(workdir, args.num_processes, deadline)
    when = re.compile(args.when)
    while not when.search(_read(logs[0], starts[0])):
      if launcher.poll() is not None or time.time() > deadline:
        raise SystemExit(f'preemption_exit: {args.when!r} never appeared in {logs[0]} (launcher exit code '
                         f'{launcher.poll()}):\n{_read(logs[0], starts[0])[-3000:]}')
      time.sleep(0.02)
    time.sleep(args.delay)
    before = _complete_steps(workdir)
    start = time.time()
    if args.target == 'all':
      os.kill(launcher.pid, signal.SIGTERM)
    else:
      os.kill(workers[-1], signal.SIGTERM)
    stopped, ended, checkpoint, step = [None] * len(logs), [None] * len(logs), None, None
    while launcher.poll() is None and time.time() < start + args.timeout:
      now = time.time() - start
      for i, log in enumerate(logs):
        match = STOPPED.search(_read(log, starts[i])) if stopped[i] is None else None
        if match:
          stopped[i], step = now, int(match.group(2))
        if ended[i] is None and _gone(workers[i]):
          ended[i] = now
      if checkpoint is None and step is not None and step in _complete_steps(workdir) - before:
        checkpoint = now
      time.sleep(0.02)
    now = time.time() - start
    ended = [now if t is None else t for t in ended]
    if checkpoint is None and step is not None and step in _complete_steps(workdir) - before:
      checkpoint = now
    steps = [m.group(2) for m in (STOPPED.search(_read(log, start)) for log, start in zip(logs, starts)) if m]
    return {'code': launcher.poll(), 'steps': steps, 'stopped': stopped, 'checkpoint': checkpoint, 'ended': ended,
            'all_gone': max(ended)}
  finally:
    if launcher.poll() is None:
      os.killpg(launcher.pid, signal.SIGKILL)
      launcher.wait()


def _fmt(t) -> str:
  return '-' if t is None else f'{t:.1f} s'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--num_processes', type=int, default=2)
  parser.add_argument('--devices_per_process', type=int, default=1)
  parser.add_argument('--when', default=r'step 6/', help='signal once process 0\'s log matches this')
  parser.add_argument('--delay', type=float, default=0.0, help='seconds between the match and the signal')
  parser.add_argument('--target', choices=('all', 'one'), default='all')
  parser.add_argument('--repeat', type=int, default=1)
  parser.add_argument('--timeout', type=float, default=900.0, help='seconds for each phase before giving up')
  parser.add_argument('--keep', action='store_true', help='keep the temporary folder (its path is printed)')
  parser.add_argument('main_args', nargs=argparse.REMAINDER, help='after --: the arguments of inception.main')
  args = parser.parse_args()
  main_args = args.main_args[1:] if args.main_args[:1] == ['--'] else args.main_args
  tmp = tempfile.mkdtemp(prefix='preemption_exit_')
  try:
    images = None if main_args else make_small_folder(os.path.join(tmp, 'images'))
    for i in range(args.repeat):
      workdir = os.path.join(tmp, f'run{i}')
      os.makedirs(workdir)
      run_args = list(main_args) or tiny_flags(images, workdir, num_epochs=200, checkpoint_every_steps=1000)
      if not any(a.startswith('--config.workdir=') for a in run_args):
        run_args.append(f'--config.workdir={workdir}')
      else:
        workdir = next(a.split('=', 1)[1] for a in run_args if a.startswith('--config.workdir='))
        os.makedirs(os.path.join(workdir, 'logs'), exist_ok=True)
      r = run_once(args, run_args, workdir)
      agreed = len(r['steps']) == args.num_processes and len(set(r['steps'])) == 1
      print(f'run {i + 1}: exit code {r["code"]}; stopped at step {",".join(r["steps"]) or "-"}'
            f'{" (agreed)" if agreed else ""}; from SIGTERM ({args.target}): stop logged '
            f'{" / ".join(map(_fmt, r["stopped"]))}, checkpoint on disk {_fmt(r["checkpoint"])}, processes ended '
            f'{" / ".join(map(_fmt, r["ended"]))}; all gone {_fmt(r["all_gone"])}'
            + (f', {r["all_gone"] - r["checkpoint"]:.1f} s after the checkpoint' if r['checkpoint'] else ''),
            flush=True)
  finally:
    if args.keep:
      print(f'kept {tmp}')
    else:
      shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
  main()
