"""Submits launch/slurm.sbatch (multi-node GPU training, one process per GPU) with sbatch, without editing the script.

  python -m launch.slurm --nodes=4 --gpus_per_node=8 --partition=gpu --time=24:00:00 \
      --workdir=/shared/runs/googlenet -- \
      --config=configs/googlenet.py --config.data.tfds_data_dir=/shared/tensorflow_datasets

runs (--dry_run prints it instead)

  sbatch --job-name=googlenet --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 --partition=gpu --time=24:00:00 \
      --cpus-per-task=C --output=/shared/runs/googlenet/googlenet-%j.out --chdir=REPO REPO/launch/slurm.sbatch \
      --workdir=/shared/runs/googlenet -- --config=configs/googlenet.py ...

REPO (this checkout) must be on a file system every node sees, installed once with `make install install-cuda`; the
job runs its .venv. The workdir must be shared too (a relative path is made absolute here); it is created, and the
job's log goes into it (REPO for a gs:// workdir). C, the CPUs of each process, is --cpus_per_task, else what the
partition's nodes have (sinfo): a node's CPUs per GPU, on the smallest node with enough GPUs. ARGS after `--` are
inception.main's (--config defaults to configs/googlenet.py). Watch with `squeue --me` and `tail -f` the log, stop
with `scancel JOBID`. Preemption and the time limit requeue the job, which resumes from its last checkpoint: see
launch/slurm.sbatch. Tested against a real one-node cluster: tests/launch/test_slurm.py.
"""
import os
import re
import shlex
import subprocess
import sys
from typing import List, Optional, Sequence

from inception import command
from launch.tpu_vm import config_and_overrides, split_argv, train_command  # the same ARGS and job command line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'launch', 'slurm.sbatch')


def check_args(args: Sequence[str]) -> List[str]:
  """inception.main's ARGS as given, refused (SystemExit) where they set the workdir: the launcher's --workdir does."""
  config_and_overrides(args)
  return list(args)


def job_lines(workdir: str, args: Sequence[str]) -> str:
  """What launch/slurm.sbatch evaluates (`--job_command`): the exit code that asks for a requeue, and the command
  line every task of the job runs (as launch.tpu_vm's: the --config default, the workdir, --distributed), so that
  the batch script reads no argument itself."""
  return (f'EXIT_PREEMPTED={command.EXIT_PREEMPTED}\n'
          f'set -- {shlex.join(train_command(workdir, args))}\n')


def shared_workdir(workdir: Optional[str]) -> str:
  """The workdir as the job sees it: required; a relative path is made absolute (the job runs in REPO)."""
  if not workdir:
    raise SystemExit('launch.slurm: --workdir=PATH is required: a directory on storage every node sees (a shared '
                     'file system, or gs://...), where all processes write the same checkpoints.')
  return workdir if '://' in workdir else os.path.abspath(workdir)


def job_log(workdir: str, job_name: str) -> str:
  """Where the job's output goes (sbatch --output; %j is the job id): the workdir, beside the run it logs, or REPO
  where the workdir is not a file system path (gs://), which SLURM cannot write to."""
  return os.path.join(REPO if '://' in workdir else workdir, f'{job_name}-%j.out')


def gpus_of(gres: str) -> int:
  """The GPUs in sinfo's generic resources field (%G), e.g. 'gpu:8', 'gpu:a100:4(S:0-1),shard:8', '(null)'."""
  return sum(int(n) for n in re.findall(r'(?:^|,)gpu(?::[^:,(]+)?:(\d+)', gres))


SINFO = ['sinfo', '--noheader', '--Node', '--format=%P|%c|%G']  # a line per node and partition: name, CPUs, GRES


def cpus_per_task_of(nodes: str, gpus_per_node: int, partition: Optional[str] = None) -> Optional[int]:
  """From SINFO's output: a node's CPUs per GPU, on the smallest of the partition's (default: the default
  partition's, marked *) nodes that have `gpus_per_node` GPUs, where the job can run; None where there is none."""
  rows = [line.split('|') for line in nodes.splitlines() if line.count('|') == 2]
  shares = [int(cpus) // gpus_of(gres) for part, cpus, gres in rows
            if (part.rstrip('*') == partition if partition else part.endswith('*')) and cpus.isdigit()
            and gpus_of(gres) >= gpus_per_node]
  return max(1, min(shares)) if shares else None


def node_cpus_per_task(gpus_per_node: int, partition: Optional[str] = None) -> int:
  """CPUs per process (one per GPU) where --cpus_per_task is not given: what the nodes have (cpus_per_task_of, read
  with sinfo). A fixed number (the script had 8) cannot be scheduled on a smaller node, and SLURM's default of 1
  leaves the input pipeline one CPU; a process given a node's CPUs per GPU leaves its other GPUs theirs."""
  fix = 'or pass --cpus_per_task=N (the CPUs of each process)'
  try:
    r = subprocess.run(SINFO, capture_output=True, text=True, timeout=60)
  except FileNotFoundError:
    raise SystemExit(f'launch.slurm: no sinfo here to read the nodes\' CPUs: run it where SLURM\'s commands are, '
                     f'{fix}.') from None
  if r.returncode != 0:
    raise SystemExit(f'launch.slurm: sinfo failed ({r.stderr.strip()}): fix the cluster setting, {fix}.')
  cpus = cpus_per_task_of(r.stdout, gpus_per_node, partition)
  if cpus is None:
    where = f'partition {partition!r}' if partition else 'the default partition'
    raise SystemExit(f'launch.slurm: sinfo lists no node with {gpus_per_node} GPUs in {where}: ask for fewer '
                     f'(--gpus_per_node) or name a partition that has them (--partition), {fix}.')
  return cpus


def sbatch_command(*, nodes: int, gpus_per_node: int, workdir: str, args: Sequence[str], cpus_per_task: int,
                   job_name: str = 'googlenet', partition: Optional[str] = None, time: Optional[str] = None,
                   account: Optional[str] = None) -> List[str]:
  """The sbatch command line: one task per GPU on each of `nodes` nodes, launch/slurm.sbatch run in REPO."""
  optional = {'partition': partition, 'time': time, 'account': account}
  return ['sbatch', f'--job-name={job_name}', f'--nodes={nodes}', f'--ntasks-per-node={gpus_per_node}',
          f'--gpus-per-node={gpus_per_node}', *(f'--{k}={v}' for k, v in optional.items() if v is not None),
          f'--cpus-per-task={cpus_per_task}', f'--output={job_log(workdir, job_name)}', f'--chdir={REPO}', SCRIPT,
          f'--workdir={workdir}', '--', *args]


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = command.ArgumentParser(description=__doc__.split('\n\n')[0], usage='python -m launch.slurm --nodes=N '
                                  '--gpus_per_node=G --workdir=/shared/... [options] [--dry_run] -- ARGS')
  parser.add_argument('--nodes', type=int, help='required')
  parser.add_argument('--gpus_per_node', type=int, help='also the processes per node (required)')
  parser.add_argument('--workdir', default=None, help='shared by all nodes (required)')
  parser.add_argument('--partition', default=None)
  parser.add_argument('--time', default=None, help='time limit, e.g. 24:00:00 (default: the script\'s 24 h)')
  parser.add_argument('--account', default=None)
  parser.add_argument('--cpus_per_task', type=int, default=None,
                      help='CPUs per process (default: the nodes\' CPUs per GPU, from sinfo)')
  parser.add_argument('--job_name', default='googlenet')
  parser.add_argument('--dry_run', action='store_true', help='print the sbatch command instead of running it')
  parser.add_argument('--job_command', action='store_true', help='in the job (launch/slurm.sbatch): print what the '
                      'batch script runs, as shell lines, and exit')
  own, args = split_argv(sys.argv[1:] if argv is None else argv)
  opts = parser.parse_args(own)
  if opts.job_command:
    print(job_lines(shared_workdir(opts.workdir), args), end='')
    return command.EXIT_OK
  if opts.nodes is None or opts.gpus_per_node is None:
    parser.error('--nodes and --gpus_per_node are required.')
  if opts.nodes < 1 or opts.gpus_per_node < 1:
    parser.error('--nodes and --gpus_per_node must be at least 1.')
  workdir = shared_workdir(opts.workdir)
  args = check_args(args)
  if opts.cpus_per_task is not None and opts.cpus_per_task < 1:
    parser.error('--cpus_per_task must be at least 1.')
  cpus = opts.cpus_per_task or node_cpus_per_task(opts.gpus_per_node, opts.partition)
  cmd = sbatch_command(nodes=opts.nodes, gpus_per_node=opts.gpus_per_node, workdir=workdir, args=args,
                       cpus_per_task=cpus, job_name=opts.job_name, partition=opts.partition, time=opts.time,
                       account=opts.account)
  if opts.dry_run:
    print(shlex.join(cmd))
    return 0
  if '://' not in workdir:
    os.makedirs(workdir, exist_ok=True)  # SLURM does not create the log's folder: the job would fail unlogged
  try:
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
  except FileNotFoundError:
    raise SystemExit('launch.slurm: no sbatch here: submit from a machine with SLURM\'s commands (a login node), or '
                     'print the command with --dry_run.') from None
  print(r.stdout, end='', flush=True)
  if r.returncode != 0:
    return r.returncode
  job = re.search(r'(\d+)\s*$', r.stdout)
  log = job_log(workdir, opts.job_name).replace('%j', job.group(1) if job else 'JOBID')
  print(f'launch.slurm: watch with `squeue --me` and `tail -f {log}`; stop with `scancel JOBID` (see '
        f'launch/slurm.sbatch).')
  return 0


if __name__ == '__main__':
  command.run_script(main)
