"""launch.slurm and launch/slurm.sbatch: the exact sbatch command (--dry_run), the refusals, and the batch script run
here for real with a fake srun and scontrol first on PATH (and launch.slurm --job_command giving it the task's command
line): exit 75 requeues the job, 0 and other codes end it, and a SIGTERM to the script itself (scancel) ends it without
a requeue."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, 'launch', 'slurm.sbatch')
ARGS = ['--config=configs/googlenet.py:mini', '--config.data.tfds_data_dir=/shared/tensorflow datasets',
        '--config.note=it\'s "quoted" $HOME']
TASK = ['.venv/bin/python', '-m', 'inception.main']  # what srun starts on every node

# srun: records its arguments, then exits FAKE_SRUN_EXIT; 'wait' plays the job step: it runs until SIGTERM, then
# "saves" and exits 75. scontrol: records its arguments.
FAKE_SRUN = '''#!{python}
import json, os, signal, sys, time
state = os.environ['FAKE_STATE']
open(os.path.join(state, 'srun.json'), 'w').write(json.dumps(sys.argv[1:]))
open(os.path.join(state, 'srun.cpus'), 'w').write(os.environ.get('SRUN_CPUS_PER_TASK', ''))
code = os.environ['FAKE_SRUN_EXIT']
if code == 'wait':
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))
  open(os.path.join(state, 'srun.pid'), 'w').write(str(os.getpid()))
  time.sleep(60)
sys.exit(int(code))
'''
FAKE_SCONTROL = '#!/bin/sh\necho "$*" >> "$FAKE_STATE/scontrol.calls"\n'


@pytest.fixture(autouse=True)
def no_real_sbatch(tmp_path_factory, monkeypatch):
  """An sbatch first on PATH that fails loudly: a test that forgot --dry_run cannot submit a job."""
  guard = tmp_path_factory.mktemp('guard')
  (guard / 'sbatch').write_text('#!/bin/sh\necho "test guard: a real sbatch call: $*" >&2\nexit 97\n')
  (guard / 'sbatch').chmod(0o755)
  monkeypatch.setenv('PATH', f'{guard}{os.pathsep}{os.environ["PATH"]}')


def launch(*argv):
  return subprocess.run([sys.executable, '-m', 'launch.slurm', *argv], cwd=REPO, capture_output=True, text=True,
                        timeout=60)


def test_sbatch_command_one_process_per_gpu():
  r = launch('--nodes=4', '--gpus_per_node=8', '--partition=gpu', '--time=24:00:00', '--account=acc',
             '--cpus_per_task=12', '--workdir=/shared/runs/g', '--dry_run', '--', *ARGS)
  assert r.returncode == 0, r.stderr
  assert [shlex.split(line) for line in r.stdout.splitlines()] == [[
      'sbatch', '--job-name=googlenet', '--nodes=4', '--ntasks-per-node=8', '--gpus-per-node=8', '--partition=gpu',
      '--time=24:00:00', '--account=acc', '--cpus-per-task=12', f'--chdir={REPO}', SCRIPT,
      '--workdir=/shared/runs/g', '--', *ARGS]]


def test_sbatch_command_defaults_and_relative_workdir():
  r = launch('--nodes=1', '--gpus_per_node=2', '--workdir=runs/g', '--dry_run')
  assert r.returncode == 0, r.stderr
  assert r.stdout == shlex.join(['sbatch', '--job-name=googlenet', '--nodes=1', '--ntasks-per-node=2',
                                 '--gpus-per-node=2', f'--chdir={REPO}', SCRIPT,
                                 f'--workdir={os.path.join(REPO, "runs", "g")}', '--']) + '\n'


@pytest.mark.parametrize('argv,message', [
    (['--nodes=2', '--gpus_per_node=8', '--dry_run', '--', *ARGS], '--workdir=PATH is required'),
    (['--nodes=2', '--gpus_per_node=8', '--workdir=/s/w', '--dry_run', '--', '--config.workdir=/s/x'], '--workdir='),
    (['--nodes=0', '--gpus_per_node=8', '--workdir=/s/w', '--dry_run'], 'at least 1'),
])
def test_refusals(argv, message):
  r = launch(*argv)
  assert r.returncode != 0 and r.stdout == '' and message in r.stderr


def test_sbatch_script_syntax_and_directives():
  subprocess.run(['bash', '-n', SCRIPT], check=True)
  directives = [line.split()[1] for line in open(SCRIPT) if line.startswith('#SBATCH')]
  assert {'--requeue', '--signal=TERM@300', '--open-mode=append', '--ntasks-per-node=8', '--gpus-per-node=8'} <= set(
      directives)


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


def job_env(job, srun_exit, **extra):
  return {**os.environ, 'PATH': f'{job / "bin"}{os.pathsep}{os.environ["PATH"]}', 'FAKE_STATE': str(job),
          'FAKE_SRUN_EXIT': str(srun_exit), 'SLURM_JOB_ID': '4242', **extra}


def run_job(job, srun_exit, *args, **extra):
  return subprocess.run(['bash', SCRIPT, *args], cwd=job, env=job_env(job, srun_exit, **extra), capture_output=True,
                        text=True, timeout=60)


def requeues(job):
  path = job / 'scontrol.calls'
  return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize('srun_exit,expected_requeues', [(75, ['requeue 4242']), (0, []), (1, []), (3, [])])
def test_script_requeues_on_75_only(job, srun_exit, expected_requeues):
  r = run_job(job, srun_exit, '--workdir=/shared/runs/g', '--', *ARGS)
  assert r.returncode == srun_exit, r.stdout + r.stderr
  assert requeues(job) == expected_requeues
  assert json.loads((job / 'srun.json').read_text()) == [
      *TASK, ARGS[0], '--config.workdir=/shared/runs/g', '--distributed', *ARGS[1:]]


def test_script_default_config_workdir_from_environment_cpus_to_srun(job):
  r = run_job(job, 0, WORKDIR='/shared/runs/env', SLURM_CPUS_PER_TASK='12')
  assert r.returncode == 0, r.stdout + r.stderr
  assert json.loads((job / 'srun.json').read_text()) == [
      *TASK, '--config=configs/googlenet.py', '--config.workdir=/shared/runs/env', '--distributed']
  assert (job / 'srun.cpus').read_text() == '12'  # each process gets the job's --cpus-per-task


def test_script_gives_up_after_max_requeues(job):
  r = run_job(job, 75, '--workdir=/w', SLURM_RESTART_COUNT='3', MAX_REQUEUES='3')
  assert r.returncode == 75 and requeues(job) == [] and 'giving up' in r.stderr


@pytest.mark.parametrize('args,extra,message', [
    ([], {}, 'no workdir'),
    (['--workdir=/w', '--', '--config.workdir=/x'], {}, 'not --config.workdir'),
    (['--workdir=/w'], {'SLURM_JOB_ID': ''}, 'submit this script with sbatch'),
])
def test_script_refusals_run_nothing(job, args, extra, message):
  r = run_job(job, 0, *args, **extra)
  assert r.returncode == 1 and message in r.stderr
  assert not (job / 'srun.json').exists()


def start_waiting_job(job):
  proc = subprocess.Popen(['bash', SCRIPT, '--workdir=/w'], cwd=job, env=job_env(job, 'wait'),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 20
  while not (job / 'srun.pid').exists():
    assert time.time() < deadline and proc.poll() is None, 'the fake srun did not start'
    time.sleep(0.05)
  time.sleep(0.1)
  return proc, int((job / 'srun.pid').read_text())


def test_time_limit_signal_to_the_step_requeues(job):
  """--signal=TERM@300 signals the job step only: it saves, exits 75, and the script requeues."""
  proc, srun_pid = start_waiting_job(job)
  os.kill(srun_pid, signal.SIGTERM)
  out, _ = proc.communicate(timeout=30)
  assert proc.returncode == 75, out
  assert requeues(job) == ['requeue 4242']


def test_scancel_signals_the_script_too_and_it_does_not_requeue(job):
  proc, srun_pid = start_waiting_job(job)
  os.kill(proc.pid, signal.SIGTERM)
  os.kill(srun_pid, signal.SIGTERM)
  proc.communicate(timeout=30)
  assert proc.returncode == -signal.SIGTERM
  time.sleep(0.5)  # the step has exited 75 by now: nothing may requeue it
  assert requeues(job) == []
