"""Several training processes on this machine, joined into one JAX cluster (CPU devices, gloo collectives).

  python -m launch.local --num_processes=2 --devices_per_process=2 -- \
      --config=configs/googlenet.py:mini --config.num_epochs=1 --config.workdir=runs/mini_2x2

starts `python -m inception.main ARGS --distributed` P times, each with D CPU devices, a free localhost coordinator
port and its process id. `--module=inception.benchmark` runs the benchmark instead (the coordinator then reaches it
through JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID). `--pin_cores` gives each process its own
equal share of the launcher's cores (`taskset`): on 2 cores, two pinned processes ran the eval step 13% faster than
one process on both, while training, which exchanges its gradients over gloo, ran slower (docs/performance.md).
Process 0's output goes to the console; every process's to WORKDIR/logs/process_<i>.log (for a gs:// workdir, which
cannot be appended to: to a local folder named after it, copied to WORKDIR/logs when they end). The processes start
in the launcher's directory, so every path in ARGS (the config file, the workdir, data folders) means what it would
mean to `python -m inception.main` run there. Each process decides its own host memory settings
(inception/command.py).
If a process fails, the others are stopped and the launcher exits with its exit code, naming it and the end of its log.
Preemption: SIGINT/SIGTERM to the launcher reach every process; they save a checkpoint at one agreed step and exit 75,
and so does the launcher. Processes that exit 75 by themselves (one of them was sent SIGTERM) are relaunched and resume,
at most --max_relaunches times.
It is the multi-host path of a TPU pod or a GPU cluster, minus the network: what passes here runs there.
`--dry_run` prints the P commands (with their environment) instead of running them.
"""
import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import List, Optional, Sequence, Tuple

from inception import command
from inception.command import EXIT_PREEMPTED  # stopped by a signal after saving a checkpoint; run again to resume

LOG_TAIL_LINES = 30
MODULES = ('inception.main', 'inception.benchmark')  # what it can launch: commands that take --distributed


def free_port() -> int:
  """A TCP port on localhost that nothing listens on now."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def workdir_of(args: Sequence[str]) -> str:
  """The run's workdir: `--config.workdir` from `args`, else the config file's own default (a ConfigError where the
  file cannot be loaded)."""
  from inception import config_checks  # light: no jax
  spec, overrides, _ = command.parse_config_args(args)
  for key, value in overrides:
    if key == 'workdir':
      return value
  if spec is None:
    raise SystemExit('launch.local: pass --config=... after `--` (the arguments of inception.main).')
  return config_checks.load_config(spec).workdir


def log_folder(workdir: str) -> str:
  """Where the processes' logs are written as they run: WORKDIR/logs, or for a workdir on cloud storage (gs://...,
  whose objects cannot be appended to) TMPDIR/inception-logs/<the URL less its scheme>/logs, a local folder that
  another launch on this machine appends to as well."""
  if '://' not in workdir:
    return os.path.join(workdir, 'logs')
  return os.path.join(tempfile.gettempdir(), 'inception-logs', workdir.split('://', 1)[1].strip('/'), 'logs')


def copy_logs(folder: str, workdir: str) -> None:
  """The logs of a gs:// workdir's run copied into WORKDIR/logs (a local workdir holds them already)."""
  if '://' not in workdir:
    return
  from etils import epath  # pylint: disable=import-outside-toplevel
  for name in sorted(os.listdir(folder)):
    epath.Path(folder, name).copy(epath.Path(workdir, 'logs', name), overwrite=True)


def core_shares(num_processes: int, cores: Optional[Sequence[int]] = None) -> List[List[int]]:
  """The launcher's cores (default: the ones it may run on) split into `num_processes` equal, contiguous shares."""
  cores = sorted(os.sched_getaffinity(0) if cores is None else cores)
  if len(cores) < num_processes:
    raise SystemExit(f'launch.local: --pin_cores needs a core per process: {num_processes} processes, {len(cores)} '
                     f'cores ({cores}). Start fewer processes or drop --pin_cores.')
  per = len(cores) // num_processes
  return [cores[i * per:(i + 1) * per] for i in range(num_processes)]


def process_command(args: Sequence[str], *, port: int, num_processes: int, process_id: int,
                    module: str = MODULES[0], cores: Optional[Sequence[int]] = None) -> List[str]:
  """The command line of process `process_id` (inception.main takes the coordinator as flags, the others from
  process_env); `cores`: run it on these cores only."""
  pin = ['taskset', '-c', ','.join(map(str, cores))] if cores else []
  coordinator = [f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={num_processes}',
                 f'--process_id={process_id}'] if module == 'inception.main' else []
  return [*pin, sys.executable, '-m', module, *args, '--distributed', *coordinator]


def process_env(devices_per_process: int, base: Optional[dict] = None, coordinator: Optional[dict] = None) -> dict:
  """The environment of each process (command.child_environment: the repository on PYTHONPATH): CPU only, D devices
  each; `coordinator`: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID for a module that reads them
  there."""
  env = command.child_environment(base)
  env.update(coordinator or {})
  env['JAX_PLATFORMS'] = 'cpu'
  env['JAX_NUM_CPU_DEVICES'] = str(devices_per_process)
  # An inherited XLA device-count flag (tests set one) would override JAX_NUM_CPU_DEVICES.
  flags = [f for f in env.get('XLA_FLAGS', '').split() if not f.startswith('--xla_force_host_platform_device_count')]
  env['XLA_FLAGS'] = ' '.join(flags)
  return env


def coordinator_env(module: str, port: int, num_processes: int, process_id: int) -> dict:
  """The coordinator as environment variables (inception.distributed reads them), for modules other than main."""
  if module == 'inception.main':
    return {}
  return {'JAX_COORDINATOR_ADDRESS': f'127.0.0.1:{port}', 'JAX_NUM_PROCESSES': str(num_processes),
          'JAX_PROCESS_ID': str(process_id)}


def dry_run_lines(args: Sequence[str], num_processes: int, devices_per_process: int, port: int,
                  module: str = MODULES[0], pin_cores: bool = False) -> List[str]:
  """One shell line per process: the variables launch() sets, then the command."""
  shares = core_shares(num_processes) if pin_cores else [None] * num_processes
  lines = []
  for i, cores in enumerate(shares):
    env = ' '.join(f'{k}={v}' for k, v in coordinator_env(module, port, num_processes, i).items())
    cmd = process_command(args, port=port, num_processes=num_processes, process_id=i, module=module, cores=cores)
    lines.append(f'JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES={devices_per_process} {env + " " if env else ""}'
                 f'{shlex.join(cmd)}')
  return lines


def _pump(stream, log, console):
  """Copies a child's output, line by line, to its log file (and to the console for process 0)."""
  for line in iter(stream.readline, b''):
    log.write(line)
    log.flush()
    if console is not None:
      console.write(line)
      console.flush()


def tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
  with open(path, 'rb') as f:
    return b''.join(f.readlines()[-lines:]).decode(errors='replace')


def launch(args: Sequence[str], num_processes: int, devices_per_process: int, module: str = MODULES[0],
           pin_cores: bool = False) -> Tuple[int, bool]:
  """Runs the processes to the end. Returns (0, or EXIT_PREEMPTED when they stopped to be re-run, or the exit code of
  the first process that failed; whether the launcher was sent SIGINT/SIGTERM)."""
  workdir = workdir_of(args)
  log_dir = log_folder(workdir)
  os.makedirs(log_dir, exist_ok=True)
  if '://' in workdir:
    sys.stderr.write(f'launch.local: the processes log to {log_dir} (copied to {workdir}/logs when they end).\n')
  port = free_port()
  shares = core_shares(num_processes) if pin_cores else [None] * num_processes
  if pin_cores and not shutil.which('taskset'):
    raise SystemExit('launch.local: --pin_cores needs `taskset` (util-linux) on the PATH.')
  procs, logs, pumps = [], [], []
  for i, cores in enumerate(shares):
    path = os.path.join(log_dir, f'process_{i}.log')
    log = open(path, 'ab')  # a resumed run appends to the logs of the runs before it
    env = process_env(devices_per_process, coordinator=coordinator_env(module, port, num_processes, i))
    proc = subprocess.Popen(process_command(args, port=port, num_processes=num_processes, process_id=i,
                                            module=module, cores=cores),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # in the launcher's directory, as the log folder
    pump = threading.Thread(target=_pump, args=(proc.stdout, log, sys.stdout.buffer if i == 0 else None),
                            daemon=True)
    pump.start()
    procs.append(proc), logs.append((log, path)), pumps.append(pump)

  def stop_all(sig=signal.SIGTERM):
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, sig)

  signalled = []

  def forward(signum, _frame):  # Ctrl-C or a scheduler's SIGTERM reaches every process; they save and exit 75
    if signalled:  # a second signal: stop now
      stop_all(signal.SIGKILL)
    signalled.append(signum)
    stop_all(signum)

  previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
  failed = None
  while any(p.poll() is None for p in procs):
    failed = next((i for i, p in enumerate(procs) if p.poll() not in (None, 0, EXIT_PREEMPTED)), None)
    if failed is not None:
      break
    time.sleep(0.2)
  if failed is None:
    failed = next((i for i, p in enumerate(procs) if p.returncode not in (0, EXIT_PREEMPTED)), None)
  if failed is not None:
    stop_all()
    deadline = time.time() + 30
    while any(p.poll() is None for p in procs) and time.time() < deadline:
      time.sleep(0.2)
    stop_all(signal.SIGKILL)
  for p, pump, (log, _) in zip(procs, pumps, logs):
    p.wait()
    pump.join(timeout=5)
    log.close()
  copy_logs(log_dir, workdir)
  for sig, handler in previous.items():
    signal.signal(sig, handler)
  if failed is None:
    preempted = any(p.returncode == EXIT_PREEMPTED for p in procs)
    return (EXIT_PREEMPTED if preempted else 0), bool(signalled)
  code, path = procs[failed].returncode, logs[failed][1]
  sys.stderr.write(f'launch.local: process {failed} of {num_processes} failed (exit code {code}); the others were '
                   f'stopped. End of {path}:\n{tail(path)}')
  return (code if code and code > 0 else 1), bool(signalled)


def launch_with_relaunches(args: Sequence[str], num_processes: int, devices_per_process: int,
                           max_relaunches: int, module: str = MODULES[0], pin_cores: bool = False) -> int:
  """launch(), run again (the run resumes) each time the processes stop with EXIT_PREEMPTED, at most `max_relaunches`
  times. A stop the launcher itself was sent (Ctrl-C, a scheduler's SIGTERM) is passed up as EXIT_PREEMPTED instead."""
  for relaunch in range(max_relaunches + 1):
    if relaunch:
      sys.stderr.write(f'launch.local: the processes stopped with exit code {EXIT_PREEMPTED} (checkpoint saved): '
                       f'relaunching ({relaunch} of at most {max_relaunches}).\n')
    code, signalled = launch(args, num_processes, devices_per_process, module, pin_cores)
    if code != EXIT_PREEMPTED or signalled:
      break
  return code


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = command.ArgumentParser(description=__doc__.split('\n\n')[0],
                                  usage='python -m launch.local --num_processes=P --devices_per_process=D -- ARGS')
  parser.add_argument('--num_processes', type=int, default=2)
  parser.add_argument('--devices_per_process', type=int, default=1)
  parser.add_argument('--module', choices=MODULES, default=MODULES[0], help='the command each process runs')
  parser.add_argument('--pin_cores', action='store_true', help='each process on its own share of the cores (taskset)')
  parser.add_argument('--dry_run', action='store_true', help='print the commands, run nothing')
  parser.add_argument('--max_relaunches', type=int, default=3,
                      help=f'relaunch (resume) at most this many times when the processes exit {EXIT_PREEMPTED}')
  parser.add_argument('args', nargs=argparse.REMAINDER, help='arguments of inception.main, after --')
  opts = parser.parse_args(argv)
  args = opts.args[1:] if opts.args[:1] == ['--'] else opts.args
  if opts.num_processes < 1 or opts.devices_per_process < 1:
    parser.error('--num_processes and --devices_per_process must be at least 1.')
  if opts.dry_run:
    print('\n'.join(dry_run_lines(args, opts.num_processes, opts.devices_per_process, free_port(), opts.module,
                                   opts.pin_cores)))
    return 0
  return launch_with_relaunches(args, opts.num_processes, opts.devices_per_process, opts.max_relaunches, opts.module,
                                opts.pin_cores)


if __name__ == '__main__':
  command.run_script(main)
