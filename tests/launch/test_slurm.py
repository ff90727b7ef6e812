"""launch.slurm and launch/slurm.sbatch on a real one-node SLURM cluster (tests/services/slurm.py, marked slow): 2
tasks train the smoke-test network through JAX's SLURM auto-detection to the final line, with the job's log in the
workdir, the CPUs per task from the node and a data folder whose name needs quoting; `scancel --signal=TERM` makes
them save at an agreed step and exit 75, and the job requeues and resumes to the bitwise end of launch.local's
uninterrupted 2 x 2 run; a failing job and a plain scancel end the job without a requeue; the default CPUs and the
refusals of a dry run read the cluster's sinfo.

What one node cannot show runs without it: the multi-node sbatch line (--dry_run), the CPUs of a partition of other
nodes, and the batch script with a fake srun for SRUN_CPUS_PER_TASK and MAX_REQUEUES."""
import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

from launch import local, slurm
from tests.launch.test_local import RUN
from tests.runs import REPO, assert_trees_close, make_small_folder, restore_state, tiny_flags
from tests.services.slurm import slurm_cluster  # noqa: F401  pylint: disable=unused-import  (the fixture)

SCRIPT = os.path.join(REPO, 'launch', 'slurm.sbatch')
ARGS = ['--config=configs/googlenet.py:mini', '--config.data.tfds_data_dir=/shared/tensorflow datasets',
        '--config.note=it\'s "quoted" $HOME']
STATES_RUNNING = ('PENDING', 'CONFIGURING', 'RUNNING', 'REQUEUED')


@pytest.fixture
def no_real_sbatch(tmp_path_factory, monkeypatch):
  """An sbatch first on PATH that fails loudly: a test that forgot --dry_run cannot submit a job."""
  guard = tmp_path_factory.mktemp('guard')
  (guard / 'sbatch').write_text('#!/bin/sh\necho "test guard: a real sbatch call: $*" >&2\nexit 97\n')
  (guard / 'sbatch').chmod(0o755)
  monkeypatch.setenv('PATH', f'{guard}{os.pathsep}{os.environ["PATH"]}')


def launch(*argv, env=None):
  return subprocess.run([sys.executable, '-m', 'launch.slurm', *argv], cwd=REPO, capture_output=True, text=True,
                        timeout=120, env=env)


# --- On the real cluster.

def submit(*argv, env) -> str:
  """`python -m launch.slurm ARGV` (a real sbatch); the id of the job it submitted."""
  r = launch(*argv, env=env)
  assert r.returncode == 0, r.stdout + r.stderr
  job = re.search(r'^Submitted batch job (\d+)$', r.stdout, re.M)
  assert job, r.stdout
  return job.group(1)


def train_args(images, workdir, **overrides):
  """tests/runs.py's tiny run as ARGS after `--` (the workdir is the launcher's --workdir)."""
  return [a for a in tiny_flags(images, workdir, **overrides) if not a.startswith('--config.workdir=')]


def wait_until(ready, cluster, job, what, timeout=600):
  deadline = time.time() + timeout
  while not ready():
    state = cluster.job(job).get('JobState')
    assert state in STATES_RUNNING and time.time() < deadline, f'job {job} is {state} before {what}'
    time.sleep(0.1)


@pytest.fixture(scope='module')
def preempted(slurm_cluster, tmp_path_factory):  # pylint: disable=redefined-outer-name
  """A 2-task job of test_local.RUN (the smoke-test network, 6 steps, a checkpoint after each, 2 CPU devices per
  process as launch.local gives them) on images in a folder whose name needs quoting, sent `scancel --signal=TERM`
  once its first checkpoint is on disk and run to its end: (workdir, job id, scontrol's record, the job's log)."""
  images = make_small_folder(tmp_path_factory.mktemp('slurm_images') / 'it\'s "quoted" $HOME')
  workdir = tmp_path_factory.mktemp('slurm_job') / 'run'  # launch.slurm creates it, for the job's log
  job = submit('--nodes=1', '--gpus_per_node=2', f'--workdir={workdir}', '--', *train_args(images, workdir, **RUN),
               env=local.process_env(2, slurm_cluster.env))
  wait_until((workdir / 'checkpoints' / '1').exists, slurm_cluster, job, 'its first checkpoint')
  slurm_cluster.run('scancel', '--signal=TERM', job)  # the job's steps only, as a preemption or the time limit
  info = slurm_cluster.wait_for_job(job, timeout=600)
  return workdir, job, info, (workdir / f'googlenet-{job}.out').read_text()


@pytest.mark.slow
@pytest.mark.xdist_group('two_by_two')  # with the 2 x 2 run it ends equal to (conftest.py)
def test_two_tasks_train_with_slurm_auto_detection_to_the_final_line(preempted):
  workdir, job, info, log = preempted
  assert info['JobState'] == 'COMPLETED' and info['ExitCode'] == '0:0', (info, log[-3000:])
  assert info['NumTasks'] == '2' and info['CPUs/Task'] == '1', info  # the node's 2 CPUs shared by its 2 GPUs
  assert info['StdOut'] == str(workdir / f'googlenet-{job}.out')
  assert not os.path.exists(os.path.join(REPO, f'googlenet-{job}.out'))
  lines = log.splitlines()
  for task in (0, 1):  # both starts of both tasks joined through JAX's SLURM detection
    assert sum(line.startswith(f'{task}: ') and 'jax.distributed.initialize(auto-detect)' in line
               for line in lines) == 2, log[-3000:]
    assert any(line.startswith(f'{task}: ') and f'process {task} of 2, 2 local / 4 global devices' in line
               for line in lines)
  assert [line for line in lines if line.startswith('0: ')][-1].startswith('0: final eval (EMA weights, '), log[-3000:]
  assert not any(line.startswith('slurm.sbatch: the training exited') for line in lines)
  assert json.loads((workdir / 'config.json').read_text())['data']['root'].endswith('/it\'s "quoted" $HOME')


@pytest.mark.slow
@pytest.mark.xdist_group('two_by_two')
def test_scancel_term_saves_at_an_agreed_step_requeues_and_resumes_to_the_same_end(preempted, two_by_two):
  workdir, job, info, log = preempted
  assert info['Restarts'] == '1', info
  stopped = [re.findall(rf'^{task}: .*Stopped by SIGTERM at step (\d+) of 6', log, re.M) for task in (0, 1)]
  assert len(stopped[0]) == 1 and stopped[0] == stopped[1], log[-5000:]
  stop_step = int(stopped[0][0])
  assert 1 < stop_step < 6
  for task in (0, 1):  # (srun reports both at once, 'tasks 0-1: Exited with exit code 75', or one by one)
    assert re.search(rf'^{task}: .*Exiting with 75 ', log, re.M), log[-5000:]
    assert re.findall(rf'^{task}: .*Resumed from step (\d+)\.', log, re.M) == [str(stop_step)]
  assert f'slurm.sbatch: preempted (exit 75): requeueing job {job}; it resumes from its last checkpoint.' in log
  assert f'slurm.sbatch: job {job}, start 2, 1 node(s) x 2 process(es)' in log
  step_a, state_a, meta_a = restore_state(str(two_by_two))
  step_b, state_b, meta_b = restore_state(str(workdir))
  assert step_a == step_b == 6 and meta_a == meta_b
  assert_trees_close(state_a, state_b, rtol=0, atol=0)
  assert json.loads((workdir / 'final_eval.json').read_text()) == json.loads(
      (two_by_two / 'final_eval.json').read_text())
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [row['step'] for row in rows if 'train/loss' in row] == list(range(1, 7))  # each step once


@pytest.fixture(scope='module')
def short_jobs(slurm_cluster, small_images, tmp_path_factory):  # pylint: disable=redefined-outer-name
  """Two 1-task jobs at once (a CPU each): the batch script submitted by hand with WORKDIR in the environment and no
  ARGS, so the default config, whose ImageNet is not prepared here, fails; and a tiny run given a plain `scancel` once
  its process runs Python. {name: (workdir, job id)}."""
  failing = tmp_path_factory.mktemp('slurm_failing')
  r = slurm_cluster.run('sbatch', '--ntasks-per-node=1', '--gpus-per-node=1', '--cpus-per-task=1',
                        f'--output={failing}/%x-%j.out', f'--chdir={REPO}', SCRIPT, WORKDIR=str(failing / 'run'))
  jobs = {'failing': (failing, r.stdout.split()[-1])}
  cancelled = tmp_path_factory.mktemp('slurm_cancelled') / 'run'
  jobs['cancelled'] = cancelled, submit('--nodes=1', '--gpus_per_node=1', f'--workdir={cancelled}', '--',
                                        *train_args(small_images, cancelled),
                                        env=local.process_env(1, slurm_cluster.env))
  return jobs


@pytest.mark.slow
@pytest.mark.xdist_group('slurm_short_jobs')  # one worker submits them
def test_a_failing_job_ends_without_a_requeue(slurm_cluster, short_jobs):  # pylint: disable=W0621
  workdir, job = short_jobs['failing']
  info = slurm_cluster.wait_for_job(job, timeout=300)
  log = (workdir / f'googlenet-{job}.out').read_text()
  assert info['JobState'] == 'FAILED' and info['ExitCode'] == '1:0' and info['Restarts'] == '0', (info, log)
  assert 'imagenet2012' in log and 'make train' in log, log[-3000:]  # DatasetNotPreparedError, from the default config
  assert log.splitlines()[-1] == 'slurm.sbatch: the training exited with code 1; not requeued.'


@pytest.mark.slow
@pytest.mark.xdist_group('slurm_short_jobs')
def test_a_plain_scancel_ends_the_job_without_a_requeue(slurm_cluster, short_jobs):  # pylint: disable=W0621
  workdir, job = short_jobs['cancelled']
  log = workdir / f'googlenet-{job}.out'
  wait_until(lambda: log.exists() and 'jax.distributed.initialize' in log.read_text(), slurm_cluster, job,
             'its process ran Python', timeout=300)
  slurm_cluster.run('scancel', job)  # the batch script too: it ends before it could requeue
  slurm_cluster.wait_for_job(job, timeout=120)
  time.sleep(8)  # longer than a requeued job is held here (cred_expire=5, sched_interval=1)
  info = slurm_cluster.job(job)
  assert info['JobState'] == 'CANCELLED' and info['Restarts'] == '0', info
  assert 'requeueing' not in log.read_text() and 'start 2' not in log.read_text()


@pytest.mark.slow
@pytest.mark.usefixtures('no_real_sbatch')
def test_dry_run_defaults_from_the_nodes(slurm_cluster, tmp_path):  # pylint: disable=redefined-outer-name
  """The CPUs per task from sinfo (the node's 2 CPUs for its 2 GPUs), the log in the workdir (made absolute)."""
  env = {**os.environ, 'SLURM_CONF': slurm_cluster.conf}
  r = launch('--nodes=1', '--gpus_per_node=2', '--workdir=runs/g', '--dry_run', env=env)
  assert r.returncode == 0, r.stderr
  workdir = os.path.join(REPO, 'runs', 'g')
  assert r.stdout == shlex.join(['sbatch', '--job-name=googlenet', '--nodes=1', '--ntasks-per-node=2',
                                 '--gpus-per-node=2', '--cpus-per-task=1', f'--output={workdir}/googlenet-%j.out',
                                 f'--chdir={REPO}', SCRIPT, f'--workdir={workdir}', '--']) + '\n'
  r = launch('--nodes=1', '--gpus_per_node=2', '--workdir=/w', '--partition=gpu', '--dry_run', env=env)
  assert r.returncode == 1 and "no node with 2 GPUs in partition 'gpu'" in r.stderr and '--cpus_per_task' in r.stderr
  r = launch('--nodes=1', '--gpus_per_node=3', '--workdir=/w', '--dry_run', env=env)
  assert r.returncode == 1 and 'no node with 3 GPUs in the default partition' in r.stderr


# --- Without the cluster.

@pytest.mark.usefixtures('no_real_sbatch')
def test_sbatch_command_one_process_per_gpu():
  r = launch('--nodes=4', '--gpus_per_node=8', '--partition=gpu', '--time=24:00:00', '--account=acc',
             '--cpus_per_task=12', '--workdir=/shared/runs/g', '--dry_run', '--', *ARGS)
  assert r.returncode == 0, r.stderr
  assert [shlex.split(line) for line in r.stdout.splitlines()] == [[
      'sbatch', '--job-name=googlenet', '--nodes=4', '--ntasks-per-node=8', '--gpus-per-node=8', '--partition=gpu',
      '--time=24:00:00', '--account=acc', '--cpus-per-task=12', '--output=/shared/runs/g/googlenet-%j.out',
      f'--chdir={REPO}', SCRIPT, '--workdir=/shared/runs/g', '--', *ARGS]]
  r = launch('--nodes=1', '--gpus_per_node=8', '--cpus_per_task=4', '--workdir=gs://b/r', '--dry_run')
  assert f'--output={REPO}/googlenet-%j.out' in shlex.split(r.stdout)  # SLURM writes logs to file systems only


def test_cpus_per_task_from_the_nodes():
  """A node's CPUs per GPU, on the smallest node of the partition (the default one, marked *, without --partition)
  that has the GPUs asked for."""
  nodes = 'gpu*|64|gpu:a100:8(S:0-1)\ngpu*|24|gpu:4,shard:8\ncpu|128|(null)\nbig|96|gpu:h100:4\n'
  assert slurm.cpus_per_task_of(nodes, 8) == 8  # 64 / 8: the job cannot run on the 4-GPU node
  assert slurm.cpus_per_task_of(nodes, 2) == 6  # 24 / 4 on the smaller node: its other GPUs keep their CPUs
  assert slurm.cpus_per_task_of(nodes, 4, 'big') == 24
  for gpus, partition in ((1, 'cpu'), (8, 'big'), (1, 'nope')):
    assert slurm.cpus_per_task_of(nodes, gpus, partition) is None
  assert slurm.cpus_per_task_of('', 1) is None and slurm.cpus_per_task_of('p*|2|gpu:8', 8) == 1


@pytest.mark.usefixtures('no_real_sbatch')
@pytest.mark.parametrize('argv,message', [
    (['--nodes=2', '--gpus_per_node=8', '--dry_run', '--', *ARGS], '--workdir=PATH is required'),
    (['--nodes=2', '--gpus_per_node=8', '--workdir=/s/w', '--dry_run', '--', '--config.workdir=/s/x'], '--workdir='),
    (['--nodes=0', '--gpus_per_node=8', '--workdir=/s/w', '--dry_run'], 'at least 1'),
    (['--nodes=1', '--gpus_per_node=8', '--cpus_per_task=0', '--workdir=/s/w', '--dry_run'], 'at least 1'),
])
def test_refusals(argv, message):
  r = launch(*argv)
  assert r.returncode != 0 and r.stdout == '' and message in r.stderr


def test_no_slurm_commands_here(tmp_path):
  env = {**os.environ, 'PATH': str(tmp_path)}
  r = launch('--nodes=1', '--gpus_per_node=8', '--workdir=/s/w', '--dry_run', env=env)
  assert r.returncode == 1 and 'no sinfo here' in r.stderr and '--cpus_per_task=N' in r.stderr, r.stderr
  r = launch('--nodes=1', '--gpus_per_node=8', '--cpus_per_task=2', f'--workdir={tmp_path}/w', env=env)
  assert r.returncode == 1 and 'no sbatch here' in r.stderr and '--dry_run' in r.stderr, r.stderr


def test_sbatch_script_syntax_and_directives():
  subprocess.run(['bash', '-n', SCRIPT], check=True)
  directives = [line.split()[1] for line in open(SCRIPT) if line.startswith('#SBATCH')]
  assert {'--requeue', '--signal=TERM@300', '--open-mode=append', '--ntasks-per-node=8', '--gpus-per-node=8'} <= set(
      directives)
  assert not any(d.startswith('--cpus-per-task') for d in directives)  # launch.slurm reads it from the nodes


# The batch script with a fake srun (records its arguments and SRUN_CPUS_PER_TASK, exits FAKE_SRUN_EXIT) and
# scontrol (records its arguments): what the one-node cluster cannot show (CPU binding needs a task plugin it runs
# without; a job that gives up after MAX_REQUEUES needs that many requeues).
FAKE_SRUN = '''#!{python}
import json, os, sys
state = os.environ['FAKE_STATE']
open(os.path.join(state, 'srun.json'), 'w').write(json.dumps(sys.argv[1:]))
open(os.path.join(state, 'srun.cpus'), 'w').write(os.environ.get('SRUN_CPUS_PER_TASK', ''))
sys.exit(int(os.environ['FAKE_SRUN_EXIT']))
'''
FAKE_SCONTROL = '#!/bin/sh\necho "$*" >> "$FAKE_STATE/scontrol.calls"\n'


@pytest.fixture
def job(tmp_path):
  """A submit directory with a .venv/bin/python (this interpreter, the checkout on its path), and fake srun and
  scontrol first on PATH."""
  bin_dir, venv = tmp_path / 'bin', tmp_path / '.venv' / 'bin'
  bin_dir.mkdir()
  venv.mkdir(parents=True)
  (venv / 'python').write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(REPO)} exec {shlex.quote(sys.executable)} "$@"\n')
  (bin_dir / 'srun').write_text(FAKE_SRUN.format(python=sys.executable))
  (bin_dir / 'scontrol').write_text(FAKE_SCONTROL)
  for f in (venv / 'python', bin_dir / 'srun', bin_dir / 'scontrol'):
    f.chmod(0o755)
  return tmp_path


def run_job(job, srun_exit, *args, **extra):  # pylint: disable=redefined-outer-name
  env = {**os.environ, 'PATH': f'{job / "bin"}{os.pathsep}{os.environ["PATH"]}', 'FAKE_STATE': str(job),
         'FAKE_SRUN_EXIT': str(srun_exit), 'SLURM_JOB_ID': '4242', **extra}
  return subprocess.run(['bash', SCRIPT, *args], cwd=job, env=env, capture_output=True, text=True, timeout=60)


def requeues(job):  # pylint: disable=redefined-outer-name
  path = job / 'scontrol.calls'
  return path.read_text().splitlines() if path.exists() else []


def test_script_gives_the_jobs_cpus_to_srun(job):  # pylint: disable=redefined-outer-name
  r = run_job(job, 0, '--workdir=/shared/runs/g', '--', *ARGS, SLURM_CPUS_PER_TASK='12')
  assert r.returncode == 0, r.stdout + r.stderr
  assert (job / 'srun.cpus').read_text() == '12'  # Slurm 22.05+ gives srun 1 CPU per task unless told
  assert json.loads((job / 'srun.json').read_text()) == [
      '--label', '.venv/bin/python', '-m', 'inception.main', ARGS[0], '--config.workdir=/shared/runs/g',
      '--distributed', *ARGS[1:]]


def test_script_gives_up_after_max_requeues(job):  # pylint: disable=redefined-outer-name
  r = run_job(job, 75, '--workdir=/w', SLURM_RESTART_COUNT='3', MAX_REQUEUES='3')
  assert r.returncode == 75 and requeues(job) == [] and 'after 3 requeues: giving up' in r.stderr
  r = run_job(job, 75, '--workdir=/w', SLURM_RESTART_COUNT='2', MAX_REQUEUES='3')
  assert r.returncode == 75 and requeues(job) == ['requeue 4242']


@pytest.mark.parametrize('args,extra,message', [
    ([], {}, 'no workdir'),
    (['--workdir=/w', '--', '--config.workdir=/x'], {}, 'not --config.workdir'),
    (['--workdir=/w'], {'SLURM_JOB_ID': ''}, 'submit this script with sbatch'),
])
def test_script_refusals_run_nothing(job, args, extra, message):  # pylint: disable=redefined-outer-name
  r = run_job(job, 0, *args, **extra)
  assert r.returncode == 1 and message in r.stderr
  assert not (job / 'srun.json').exists()
