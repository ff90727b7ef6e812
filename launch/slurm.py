"""Submits launch/slurm.sbatch (multi-node GPU training, one process per GPU) with sbatch, without editing the script.

  python -m launch.slurm --nodes=4 --gpus_per_node=8 --partition=gpu --time=24:00:00 \
      --workdir=/shared/runs/googlenet -- \
      --config=configs/googlenet.py --config.data.tfds_data_dir=/shared/tensorflow_datasets

runs (--dry_run prints it instead)

  sbatch --job-name=googlenet --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 --partition=gpu --time=24:00:00 \
      --chdir=REPO REPO/launch/slurm.sbatch --workdir=/shared/runs/googlenet -- --config=configs/googlenet.py ...

REPO (this checkout) must be on a file system every node sees, installed once with `make install install-cuda`; the
job runs its .venv and writes its log to REPO/googlenet-JOBID.out. The workdir must be shared too (a relative path is
made absolute here). ARGS after `--` are inception.main's (--config defaults to configs/googlenet.py). Watch with
`squeue --me` and `tail -f REPO/googlenet-JOBID.out`, stop with `scancel JOBID`. Preemption and the time limit requeue
the job, which resumes from its last checkpoint: see launch/slurm.sbatch.
"""
import os
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


def sbatch_command(*, nodes: int, gpus_per_node: int, workdir: str, args: Sequence[str], job_name: str = 'googlenet',
                   partition: Optional[str] = None, time: Optional[str] = None, account: Optional[str] = None,
                   cpus_per_task: Optional[int] = None) -> List[str]:
  """The sbatch command line: one task per GPU on each of `nodes` nodes, launch/slurm.sbatch run in REPO."""
  optional = {'partition': partition, 'time': time, 'account': account, 'cpus-per-task': cpus_per_task}
  return ['sbatch', f'--job-name={job_name}', f'--nodes={nodes}', f'--ntasks-per-node={gpus_per_node}',
          f'--gpus-per-node={gpus_per_node}', *(f'--{k}={v}' for k, v in optional.items() if v is not None),
          f'--chdir={REPO}', SCRIPT, f'--workdir={workdir}', '--', *args]


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = command.ArgumentParser(description=__doc__.split('\n\n')[0], usage='python -m launch.slurm --nodes=N '
                                  '--gpus_per_node=G --workdir=/shared/... [options] [--dry_run] -- ARGS')
  parser.add_argument('--nodes', type=int, help='required')
  parser.add_argument('--gpus_per_node', type=int, help='also the processes per node (required)')
  parser.add_argument('--workdir', default=None, help='shared by all nodes (required)')
  parser.add_argument('--partition', default=None)
  parser.add_argument('--time', default=None, help='time limit, e.g. 24:00:00 (default: the script\'s 24 h)')
  parser.add_argument('--account', default=None)
  parser.add_argument('--cpus_per_task', type=int, default=None, help='CPUs per process (default: the script\'s 8)')
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
  cmd = sbatch_command(nodes=opts.nodes, gpus_per_node=opts.gpus_per_node, workdir=shared_workdir(opts.workdir),
                       args=check_args(args), job_name=opts.job_name, partition=opts.partition, time=opts.time,
                       account=opts.account, cpus_per_task=opts.cpus_per_task)
  if opts.dry_run:
    print(shlex.join(cmd))
    return 0
  try:
    subprocess.run(cmd, check=True)
  except subprocess.CalledProcessError as e:
    return e.returncode or 1
  print(f'launch.slurm: watch with `squeue --me` and `tail -f {REPO}/{opts.job_name}-JOBID.out`; stop with '
        f'`scancel JOBID`.')
  return 0


if __name__ == '__main__':
  command.run_script(main)
