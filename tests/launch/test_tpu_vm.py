"""launch.tpu_vm: the exact gcloud commands of every action (--dry_run), the refusal of a workdir not on GCS, and the
remote shell scripts run here for real: setup on a shipped tarball, the relaunch-on-75 loop and a detached run started
and stopped, with a fake python (and fake make/sudo) in place of the real ones."""
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from launch import tpu_vm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAME, ZONE = 'goog', 'us-central2-b'
GCLOUD = ['gcloud', 'compute', 'tpus', 'tpu-vm']
WHERE = [NAME, f'--zone={ZONE}']
ARGS = ['--config=configs/googlenet.py:mini', '--config.data.tfds_data_dir=gs://b/tensorflow datasets',
        '--config.note=it\'s "quoted" $HOME; `x`']
TRAIN = ['-m', 'inception.main', '--config=configs/googlenet.py:mini', '--config.workdir=gs://b/runs/g',
         '--distributed', *ARGS[1:]]

# Stands for .venv/bin/python: records its arguments, then exits with the next code of FAKE_CODES (the last one
# repeats); 'wait' plays a training run: it runs until SIGTERM, then "saves" and exits 75.
FAKE_PYTHON = '''#!{python}
import json, os, signal, sys, time
state = os.environ['FAKE_STATE']
with open(os.path.join(state, 'calls.jsonl'), 'a') as f:
  f.write(json.dumps(sys.argv[1:]) + '\\n')
codes = os.environ['FAKE_CODES'].split(',')
code = codes[min(len(open(os.path.join(state, 'calls.jsonl')).readlines()), len(codes)) - 1]
if code == 'wait':
  def saved(*_):
    open(os.path.join(state, 'terms'), 'a').write('x')
    sys.exit(75)
  signal.signal(signal.SIGTERM, saved)
  open(os.path.join(state, 'running'), 'w').close()
  time.sleep(60)
sys.exit(int(code))
'''
RECORDER = '#!/bin/sh\necho "$(pwd) $*" >> "$FAKE_STATE/{name}.calls"\n'


@pytest.fixture(autouse=True)
def no_real_gcloud(tmp_path_factory, monkeypatch):
  """A gcloud first on PATH that fails loudly: a test that forgot --dry_run cannot reach a real one."""
  guard = tmp_path_factory.mktemp('guard')
  (guard / 'gcloud').write_text('#!/bin/sh\necho "test guard: a real gcloud call: $*" >&2\nexit 97\n')
  (guard / 'gcloud').chmod(0o755)
  monkeypatch.setenv('PATH', f'{guard}{os.pathsep}{os.environ["PATH"]}')


def launch(*argv):
  return subprocess.run([sys.executable, '-m', 'launch.tpu_vm', *argv], cwd=REPO, capture_output=True, text=True,
                        timeout=60)


def dry(action, *argv):
  """The commands that `action argv` would run, each split back into its arguments."""
  r = launch(action, '--dry_run', *argv)
  assert r.returncode == 0, r.stderr
  return [shlex.split(line) for line in r.stdout.splitlines()]


def command_of(ssh):
  """The remote script of a `gcloud ... ssh ... --command=SCRIPT` command."""
  assert ssh[-1].startswith('--command=')
  return ssh[-1][len('--command='):]


@pytest.fixture
def home(tmp_path):
  """A worker's home: ~/inception with the fake python, FAKE_STATE for the fakes' records."""
  state, bin_dir = tmp_path / 'state', tmp_path / 'inception' / '.venv' / 'bin'
  state.mkdir()
  bin_dir.mkdir(parents=True)
  (bin_dir / 'python').write_text(FAKE_PYTHON.format(python=sys.executable))
  (bin_dir / 'python').chmod(0o755)
  (tmp_path / 'inception' / 'logs').mkdir()
  return tmp_path


def env(home, codes='0', path=None):
  return {**os.environ, 'FAKE_STATE': str(home / 'state'), 'FAKE_CODES': codes,
          'PATH': os.pathsep.join(p for p in (path, os.environ['PATH']) if p)}


def calls(home):
  path = home / 'state' / 'calls.jsonl'
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(predicate, timeout=20):
  deadline = time.time() + timeout
  while not predicate():
    assert time.time() < deadline, 'timed out'
    time.sleep(0.05)


def kill_run(home):
  pid = (home / 'inception' / 'logs' / 'run.pid')
  if pid.exists():
    try:
      os.killpg(int(pid.read_text()), signal.SIGKILL)
    except ProcessLookupError:
      pass


def test_create_describes_then_creates():
  assert dry('create', f'--name={NAME}', f'--zone={ZONE}', '--project=proj', '--spot') == [
      GCLOUD + ['describe', *WHERE, '--project=proj', '--format=value(state)'],
      GCLOUD + ['create', *WHERE, '--project=proj', '--accelerator-type=v4-32', '--version=tpu-ubuntu2204-base',
                '--spot']]
  assert dry('create', f'--name={NAME}', f'--zone={ZONE}', '--accelerator_type=v5litepod-16',
             '--version=v2-alpha-tpuv5-lite')[1] == GCLOUD + [
                 'create', *WHERE, '--accelerator-type=v5litepod-16', '--version=v2-alpha-tpuv5-lite']


def test_setup_ships_the_checkout_and_installs_with_make():
  tarball = os.path.join(tempfile.gettempdir(), f'{NAME}-inception.tar.gz')
  archive, scp, ssh = dry('setup', f'--name={NAME}', f'--zone={ZONE}')
  assert archive == ['git', '-C', REPO, 'archive', '--format=tar.gz', f'--output={tarball}', 'HEAD']
  assert scp == GCLOUD + ['scp', tarball, f'{NAME}:inception.tar.gz', f'--zone={ZONE}', '--worker=all']
  assert ssh[:-1] == GCLOUD + ['ssh', *WHERE, '--worker=all']
  script = command_of(ssh)
  assert script == tpu_vm.setup_script()
  assert 'tar -xzmf inception.tar.gz -C inception' in script
  assert script.endswith('; cd inception; make install install-tpu PYTHON=python3.11')
  assert 'pip' not in script


def test_setup_from_a_repository_at_a_commit():
  (ssh,) = dry('setup', f'--name={NAME}', f'--zone={ZONE}', '--repo=https://example.com/inception.git', '--ref=abc123')
  assert ssh[:-1] == GCLOUD + ['ssh', *WHERE, '--worker=all']
  script = command_of(ssh)
  assert 'git clone -q https://example.com/inception.git inception' in script
  assert 'git -C inception checkout -q --force --detach abc123' in script
  assert script.endswith('; cd inception; make install install-tpu PYTHON=python3.11')
  r = launch('setup', f'--name={NAME}', f'--zone={ZONE}', '--repo=https://example.com/inception.git', '--dry_run')
  assert r.returncode != 0 and '--ref' in r.stderr and not r.stdout


def test_setup_script_replaces_the_code_keeps_venv_and_logs(home):
  """The remote setup, run here on a real `git archive` of HEAD, with fake make, dpkg (python3.11-venv missing) and
  sudo (apt-get)."""
  bin_dir = home / 'bin'
  bin_dir.mkdir()
  for name in ('make', 'sudo'):
    (bin_dir / name).write_text(RECORDER.format(name=name))
  (bin_dir / 'dpkg').write_text('#!/bin/sh\nexit 1\n')
  for f in bin_dir.iterdir():
    f.chmod(0o755)
  subprocess.run(tpu_vm.archive_command(str(home / 'inception.tar.gz')), check=True)
  (home / 'inception' / 'stale.py').write_text('')
  (home / 'inception' / 'logs' / 'run.log').write_text('old log\n')
  r = subprocess.run(['bash', '-c', tpu_vm.setup_script()], cwd=home, env=env(home, path=str(bin_dir)),
                     capture_output=True, text=True, timeout=60)
  assert r.returncode == 0, r.stderr
  code = home / 'inception'
  assert (code / 'Makefile').exists() and (code / 'launch' / 'local.py').exists()
  assert not (code / 'stale.py').exists() and not (home / 'inception.tar.gz').exists()
  assert (code / '.venv' / 'bin' / 'python').exists() and (code / 'logs' / 'run.log').read_text() == 'old log\n'
  assert (home / 'state' / 'make.calls').read_text() == f'{code} install install-tpu PYTHON=python3.11\n'
  assert 'apt-get -qq -y -o DPkg::Lock::Timeout=600 install make git python3.11 python3.11-venv' in (
      home / 'state' / 'sudo.calls').read_text()


def test_run_command_starts_the_training_with_the_args_quoted(home):
  """The printed `run` command, executed here as the worker would: the fake python gets exactly inception.main's
  arguments, the user's included (spaces, quotes, $, backquotes), and the run is detached with its log."""
  (ssh,) = dry('run', f'--name={NAME}', f'--zone={ZONE}', '--workdir=gs://b/runs/g', '--', *ARGS)
  assert ssh[:-1] == GCLOUD + ['ssh', *WHERE, '--worker=all']
  try:
    r = subprocess.run(['bash', '-c', command_of(ssh)], cwd=home, env=env(home, codes='0'), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert 'started, log ~/inception/logs/run.log' in r.stdout
    log = home / 'inception' / 'logs' / 'run.log'
    wait_for(lambda: log.exists() and 'exited with code 0' in log.read_text())
    assert calls(home) == [TRAIN]
  finally:
    kill_run(home)


@pytest.mark.parametrize('codes,max_relaunches,expected_code,expected_calls', [
    ('75,75,0', 5, 0, 3),  # preempted twice, then done
    ('75,3', 5, 3, 2),  # preempted, then a real failure: not relaunched
    ('1', 5, 1, 1),  # a failure: not relaunched
    ('0', 5, 0, 1),
    ('75', 2, 75, 3),  # always preempted: gives up after 2 relaunches
])
def test_loop_relaunches_on_75_only(home, codes, max_relaunches, expected_code, expected_calls):
  """The remote loop, run here: relaunched after exit 75 only, ending with the run's code."""
  loop = tpu_vm.loop_script(['.venv/bin/python', 'train', 'a b'], max_relaunches, delay_s=0)
  r = subprocess.run(['bash', '-c', loop], cwd=home / 'inception', env=env(home, codes), capture_output=True,
                     text=True, timeout=30)
  assert r.returncode == expected_code, r.stdout + r.stderr
  assert calls(home) == [['train', 'a b']] * expected_calls
  assert r.stdout.count('preempted (exit 75): relaunching') == expected_calls - 1


def test_start_refuses_a_second_run_and_stop_ends_it_without_relaunch(home):
  code_dir = str(home / 'inception')
  start = tpu_vm.start_script(tpu_vm.loop_script(['.venv/bin/python', 'train'], 5, delay_s=0), remote_dir=code_dir)
  try:
    r = subprocess.run(['bash', '-c', start], env=env(home, 'wait'), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: (home / 'state' / 'running').exists())
    again = subprocess.run(['bash', '-c', start], env=env(home, 'wait'), capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and 'a run is going' in again.stderr
    stop = subprocess.run(['bash', '-c', tpu_vm.stop_script(code_dir, wait_s=20)], capture_output=True, text=True,
                          timeout=60)
    assert stop.returncode == 0 and 'stopped' in stop.stdout, stop.stdout + stop.stderr
    assert (home / 'state' / 'terms').read_text() == 'x'  # the run got SIGTERM (and exited 75)...
    time.sleep(0.5)
    assert len(calls(home)) == 1  # ...and was not relaunched: the loop was stopped with it
    assert 'relaunching' not in (home / 'inception' / 'logs' / 'run.log').read_text()
    nothing = subprocess.run(['bash', '-c', tpu_vm.stop_script(code_dir)], capture_output=True, text=True, timeout=30)
    assert nothing.returncode == 0 and 'no run going' in nothing.stdout
  finally:
    kill_run(home)


def test_all_creates_sets_up_and_runs_in_order():
  lines = dry('all', f'--name={NAME}', f'--zone={ZONE}', '--workdir=gs://b/runs/g', '--', *ARGS)
  assert [line[4] if line[0] == 'gcloud' else line[0] for line in lines] == [
      'describe', 'create', 'git', 'scp', 'ssh', 'ssh']
  assert command_of(lines[4]) == tpu_vm.setup_script()
  assert command_of(lines[5]) == tpu_vm.start_script(tpu_vm.loop_script(['.venv/bin/python', *TRAIN], 100))


@pytest.mark.parametrize('action', ['run', 'all'])
@pytest.mark.parametrize('workdir', ['/shared/runs/g', 'runs/g', None])
def test_a_workdir_not_on_gcs_is_refused_before_anything_runs(action, workdir):
  r = launch(action, f'--name={NAME}', f'--zone={ZONE}', *([f'--workdir={workdir}'] if workdir else []), '--dry_run')
  assert r.returncode != 0 and r.stdout == ''
  assert 'gs://' in r.stderr and 'all hosts must share it' in r.stderr


def test_a_workdir_in_args_is_refused_and_both_config_spellings_are_read():
  base = ['run', f'--name={NAME}', f'--zone={ZONE}', '--workdir=gs://b/r', '--dry_run', '--']
  r = launch(*base, '--config.workdir=gs://b/other')
  assert r.returncode != 0 and '--workdir' in r.stderr and r.stdout == ''
  assert tpu_vm.train_command('gs://b/r', ['--config', 'configs/googlenet.py:mini', '--config.seed', '3']) == [
      '.venv/bin/python', '-m', 'inception.main', '--config=configs/googlenet.py:mini', '--config.workdir=gs://b/r',
      '--distributed', '--config.seed=3']


def test_default_config_watch_stop_delete():
  (ssh,) = dry('run', f'--name={NAME}', f'--zone={ZONE}', '--workdir=gs://b/r')
  assert command_of(ssh) == tpu_vm.start_script(tpu_vm.loop_script(
      ['.venv/bin/python', '-m', 'inception.main', '--config=configs/googlenet.py', '--config.workdir=gs://b/r',
       '--distributed'], 100))
  assert dry('watch', f'--name={NAME}', f'--zone={ZONE}') == [
      GCLOUD + ['ssh', *WHERE, '--worker=0', '--command=tail -n 100 -F inception/logs/run.log']]
  assert dry('stop', f'--name={NAME}', f'--zone={ZONE}') == [
      GCLOUD + ['ssh', *WHERE, '--worker=all', f'--command={tpu_vm.stop_script()}']]
  assert dry('delete', f'--name={NAME}', f'--zone={ZONE}', '--project=p') == [
      GCLOUD + ['delete', *WHERE, '--project=p']]


@pytest.mark.parametrize('state,expected', [
    (None, ['describe', 'create']),  # no such slice
    ('READY', ['describe']),  # exists: left alone
    ('PREEMPTED', ['describe', 'delete', 'create']),  # a preempted spot slice is recreated
])
def test_create_without_dry_run_follows_the_slice_state(tmp_path, monkeypatch, state, expected):
  """`create` for real against a fake gcloud that records each call and answers describe with `state`."""
  fake = tmp_path / 'bin'
  fake.mkdir()
  (fake / 'gcloud').write_text('#!/bin/sh\necho "$4 $7" >> "$FAKE_STATE/gcloud.calls"\n'
                               'if [ "$4" = describe ]; then [ -n "$TPU_STATE" ] || exit 1; echo "$TPU_STATE"; fi\n')
  (fake / 'gcloud').chmod(0o755)
  monkeypatch.setenv('PATH', f'{fake}{os.pathsep}{os.environ["PATH"]}')
  monkeypatch.setenv('FAKE_STATE', str(tmp_path))
  monkeypatch.setenv('TPU_STATE', state or '')
  r = launch('create', f'--name={NAME}', f'--zone={ZONE}')
  assert r.returncode == 0, r.stderr
  verbs = {'describe': 'describe --format=value(state)', 'delete': 'delete --quiet',
           'create': 'create --accelerator-type=v4-32'}
  assert (tmp_path / 'gcloud.calls').read_text().splitlines() == [verbs[v] for v in expected]
