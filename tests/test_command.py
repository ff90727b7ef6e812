"""The command runner (inception/command.py): the one reading of `--config` arguments, one-line errors and exit codes,
and when a command restarts with the host memory settings: only where its steps run on XLA:CPU, never for `--help`, a
flag error, a dry run or an accelerator's steps, and a restarted process gives its children the caller's environment.

The restart decision is forced on (fake oneTBB libraries, huge pages in `madvise` mode, glibc 2.35+), so that every
"no restart" below is the gate's doing and not this machine's, and os.execve is replaced by a recorder."""
import os
import subprocess
import sys

import pytest

from inception import command, errors, host_memory
from launch import local, slurm, sweep, tpu_vm

REPO = command.REPO
LIBS = ['/x/libtbbmalloc.so.2', '/x/libtbbmalloc_proxy.so.2']
HOST_VARIABLES = ('LD_PRELOAD', 'GLIBC_TUNABLES', 'INCEPTION_MALLOC', host_memory.TBB_KEEP_FROM,
                  host_memory.RESTART_MARK)


def test_config_arguments_are_read_one_way():
  args = command.parse_config_args(['--config=c.py:mini', '--config.lr', '0.1', '--config.flag', '--config.x=a b',
                                    '--noconfig.y', '--workdir=w', 'file', '--config', 'd.py'])
  assert args.spec == 'd.py'  # the last one wins, as in absl
  assert args.overrides == [('lr', '0.1'), ('flag', None), ('x', 'a b'), ('y', 'false')]
  assert args.rest == ['--workdir=w', 'file']
  assert command.override_args(args.overrides) == ['--config.lr=0.1', '--config.flag', '--config.x=a b',
                                                    '--config.y=false']
  assert command.parse_config_args(['--config.flag', '--config.x=1']).overrides == [('flag', None), ('x', '1')]


def test_the_launchers_build_the_training_command_from_the_same_reading():
  assert tpu_vm.train_command('gs://b/r', ['--config.batch_size', '64', '--config', 'configs/googlenet.py:mini']) == [
      '.venv/bin/python', '-m', 'inception.main', '--config=configs/googlenet.py:mini', '--config.workdir=gs://b/r',
      '--distributed', '--config.batch_size=64']
  with pytest.raises(SystemExit, match='not --config.workdir'):
    slurm.check_args(['--config.workdir', '/x'])
  assert local.workdir_of(['--config=configs/googlenet.py:mini', '--config.workdir', 'runs/x']) == 'runs/x'


def test_exit_codes_are_defined_once():
  assert (command.EXIT_OK, command.EXIT_ERROR, command.EXIT_PREEMPTED) == (0, 1, 75)
  assert local.EXIT_PREEMPTED is tpu_vm.EXIT_PREEMPTED is command.EXIT_PREEMPTED
  text = open(os.path.join(REPO, 'launch', 'slurm.sbatch')).read()
  assert '75' not in text.split('set -euo pipefail')[1]  # the batch script gets it from launch.slurm --job_command


def test_an_expected_error_is_one_line_and_exit_1_anything_else_a_traceback(capsys):
  def bad_config(_):
    raise errors.UserError('--config.x=1: expected y; set it to 2.')
  assert command.after_flags(bad_config)(['prog']) == command.EXIT_ERROR
  assert capsys.readouterr().err == 'UserError: --config.x=1: expected y; set it to 2.\n'
  with pytest.raises(SystemExit) as exit_:
    command.run_script(lambda args: sweep.main(args), ['--config=configs/googlenet.py:mini', '--root=/tmp/x',
                                                      '--random=2', '--dry_run'])
  assert exit_.value.code == command.EXIT_ERROR
  assert capsys.readouterr().err.strip().splitlines() == [
      'SweepError: --random=N draws from --sweep axes such as --sweep="optimizer.lr=loguniform(1e-3,1e-1)".']

  def bug(_):
    raise KeyError('a bug')
  with pytest.raises(KeyError):
    command.after_flags(bug)(['prog'])
  with pytest.raises(SystemExit) as exit_:
    command.ArgumentParser(prog='p').parse_args(['--nope'])
  assert exit_.value.code == command.EXIT_ERROR  # a usage error, as absl's


class Restarted(Exception):
  """Raised by the stand-in for os.execve."""


@pytest.fixture
def restart_wanted(monkeypatch):
  """A host where a command computing steps on XLA:CPU would restart with both settings; os.execve records."""
  for name in HOST_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setattr(host_memory, 'tbb_malloc_libraries', lambda: LIBS)
  monkeypatch.setattr(host_memory, 'thp_mode', lambda path=host_memory.THP_MODE: 'madvise')
  monkeypatch.setattr(host_memory, 'glibc_has_hugetlb_tunable', lambda: True)
  monkeypatch.setattr(host_memory, 'accelerator_plugins', lambda: [])

  def execve(path, args, env):
    raise Restarted(path, args, env)
  monkeypatch.setattr(os, 'execve', execve)
  return monkeypatch


def test_a_command_computing_steps_on_cpu_restarts_once_with_both_settings(restart_wanted):
  called = []
  with pytest.raises(Restarted) as restart:
    command.after_flags(called.append, computes_steps=True)(['prog'])
  path, args, env = restart.value.args
  assert not called and path == sys.executable and args == [sys.executable, *sys.orig_argv[1:]]
  assert env['LD_PRELOAD'] == ':'.join(LIBS) and env['GLIBC_TUNABLES'] == 'glibc.malloc.hugetlb=1'
  # A command that computes no step (inception.benchmark --mode=input decides after its flags are parsed) runs on.
  command.after_flags(called.append, computes_steps=lambda: False)(['prog'])
  command.after_flags(called.append)(['prog'])  # convert, report: the default
  assert called == [['prog'], ['prog']]


@pytest.mark.parametrize('platforms, plugins', [('cuda', []), ('tpu', ['libtpu']), (None, ['xla_cuda12']),
                                                ('cuda,cpu', [])])
def test_steps_on_an_accelerator_get_no_restart_settings(restart_wanted, platforms, plugins):
  """The decision the runner uses (host_memory.restart_settings: JAX_PLATFORMS, else the installed plugins) says
  accelerator: neither oneTBB's malloc nor huge pages, and the command runs without restarting."""
  if platforms is None:
    restart_wanted.delenv('JAX_PLATFORMS')
  else:
    restart_wanted.setenv('JAX_PLATFORMS', platforms)
  restart_wanted.setattr(host_memory, 'accelerator_plugins', lambda: plugins)
  assert host_memory.restart_settings() == {}
  called = []
  command.after_flags(called.append, computes_steps=True)(['prog'])
  assert called == [['prog']]


def test_dry_runs_do_not_restart_and_give_the_processes_no_preload(restart_wanted, tmp_path, capsys):
  restart_wanted.chdir(REPO)
  assert local.main(['--num_processes=2', '--dry_run', '--', '--config=configs/googlenet.py:mini']) == 0
  assert sweep.main(['--config=configs/googlenet.py:mini', f'--root={tmp_path / "s"}', '--sweep=seed=0,1',
                     '--dry_run']) == 0
  assert slurm.main(['--nodes=1', '--gpus_per_node=1', '--workdir=/w', '--cpus_per_task=4', '--dry_run']) == 0
  assert tpu_vm.main(['run', '--name=n', '--zone=z', '--workdir=gs://b/r', '--dry_run']) == 0
  out = capsys.readouterr().out
  assert 'LD_PRELOAD' not in out and 'GLIBC_TUNABLES' not in out


def test_a_restarted_process_gives_the_callers_environment_back(restart_wanted):
  """What the restart set (host_memory.restart_environment) is undone before main: no second restart, and what the
  process starts (a compiler, a launcher's worker) gets the caller's environment; the log line still names the
  settings the process runs with (tests/test_host_memory.py runs a real restart)."""
  restart_wanted.setenv('GLIBC_TUNABLES', 'glibc.malloc.arena_max=2')
  caller = dict(os.environ)
  settings = host_memory.restart_settings()
  assert settings['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'
  for name, value in host_memory.restart_environment(caller, settings).items():
    restart_wanted.setenv(name, value)
  seen = []
  command.after_flags(lambda argv: seen.append((dict(os.environ), local.process_env(1))), computes_steps=True)(['p'])
  (environ, worker), = seen
  assert environ == caller
  assert 'LD_PRELOAD' not in worker and worker['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2'


# Runs a command module as `python -m` would, with the restart forced on as above, os.execve reporting RESTART (exit
# 99) and the command's main replaced by a report of MAIN (exit 98): what happens before main, and nothing after.
DRIVER = """
import os, runpy, sys
from inception import command, host_memory
host_memory.tbb_malloc_libraries = lambda: ['/x/libtbbmalloc.so.2', '/x/libtbbmalloc_proxy.so.2']
host_memory.thp_mode = lambda path=None: 'madvise'
host_memory.glibc_has_hugetlb_tunable = lambda: True
host_memory.accelerator_plugins = lambda: []
def execve(path, args, env):
  print('RESTART', env.get('LD_PRELOAD'), env.get('GLIBC_TUNABLES'), flush=True)
  os._exit(99)
os.execve = execve
def reached_main(argv):
  print('MAIN', argv[1:], flush=True)
  os._exit(98)
after_flags = command.after_flags
command.after_flags = lambda main, computes_steps=False: after_flags(reached_main, computes_steps)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
"""
MINI = '--config=configs/googlenet.py:mini'


@pytest.mark.parametrize('module, args, platforms, expected', [
    ('inception.main', ['--help'], 'cpu', 'help'),
    ('inception.main', [MINI], 'cpu', 'restart'),
    ('inception.main', [MINI], 'cuda', 'main'),
    ('inception.main', [MINI, '--config.nosuchkey=1'], 'cpu', 'error'),
    ('inception.benchmark', [MINI, '--mode=input'], 'cpu', 'main'),
    ('inception.benchmark', [MINI, '--mode=eval'], 'cpu', 'restart'),
    ('inception.evaluate', ['--help'], 'cpu', 'help'),
    ('inception.evaluate', ['--workdir=w', '--config.eval_batch_size', '8'], 'cpu', 'restart'),
    ('inception.predict', ['--workdir=w', 'a.jpg'], 'tpu', 'main'),
])
def test_commands_restart_only_to_compute_steps_on_cpu(module, args, platforms, expected):
  env = {**{k: v for k, v in os.environ.items() if k not in HOST_VARIABLES}, 'JAX_PLATFORMS': platforms}
  proc = subprocess.run([sys.executable, '-c', DRIVER, module, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=120)
  outcome = {99: 'restart', 98: 'main'}.get(proc.returncode, 'help' if 'flags:' in proc.stdout else 'error')
  assert outcome == expected, proc.stdout[-2000:] + proc.stderr[-2000:]
  if expected == 'restart':
    assert proc.stdout.split() == ['RESTART', ':'.join(LIBS), 'glibc.malloc.hugetlb=1']
  if expected == 'error':
    assert proc.returncode == command.EXIT_ERROR and 'RESTART' not in proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("ConfigError: unknown key 'nosuchkey' in --config.nosuchkey: configs/googlenet.py:mini")
