"""Multi-process training on this machine (launch/local.py): 2 processes x 2 devices train exactly as 1 x 4 and 1 x 1,
a process that dies stops the job with its name and log, and a killed 2-process run resumes to the same end."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from inception import models, train
from launch import local
from tests.runs import REPO, assert_trees_close, make_small_folder, relative_difference, restore_state, tiny_config, \
    tiny_flags

# The published GoogLeNet (no BatchNorm, dropout and aux heads on), 3 steps, a checkpoint every step.
RUN = dict(variant='mini_published', num_epochs=3, checkpoint_every_steps=1)


@pytest.fixture(scope='module')
def small_folder(tmp_path_factory):
  return make_small_folder(tmp_path_factory.mktemp('images'))


def launch_local(small_folder, workdir, num_processes=2, devices_per_process=2, **overrides):
  """Starts `python -m launch.local` (not waiting); output in workdir/launcher.log."""
  os.makedirs(workdir, exist_ok=True)
  args = tiny_flags(small_folder, workdir, **{**RUN, **overrides})
  cmd = [sys.executable, '-m', 'launch.local', f'--num_processes={num_processes}',
         f'--devices_per_process={devices_per_process}', '--', *args]
  log = open(os.path.join(workdir, 'launcher.log'), 'ab')
  return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait(proc, timeout=900):
  try:
    return proc.wait(timeout=timeout)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)


def read(path):
  with open(path) as f:
    return f.read()


@pytest.fixture(scope='module')
def two_by_two(small_folder, tmp_path_factory):
  """An uninterrupted 2 processes x 2 devices run."""
  workdir = tmp_path_factory.mktemp('two_by_two')
  code = wait(launch_local(small_folder, workdir))
  assert code == 0, read(workdir / 'launcher.log')[-3000:]
  return workdir


@pytest.mark.slow
def test_two_processes_train_as_one_process_on_four_and_on_one_device(small_folder, two_by_two, tmp_path):
  """Same global batches, same dropout masks, one gradient all-reduce: 2x2, 1x4 and 1x1 end with the same weights."""
  console = read(two_by_two / 'launcher.log')
  assert console.strip().splitlines()[-1].startswith('final eval'), console[-2000:]
  for i in range(2):  # every process logs; only process 0 writes the run's files
    assert 'process %d of 2, 2 local / 4 global devices' % i in read(two_by_two / 'logs' / f'process_{i}.log')
  final = json.loads(read(two_by_two / 'final_eval.json'))
  results = {'2x2': final}
  for name, devices in (('1x4', jax.devices()[:4]), ('1x1', jax.devices()[:1])):
    results[name] = train.train_and_evaluate(tiny_config(small_folder, tmp_path / name, **RUN), devices=devices)
  states = {'2x2': restore_state(str(two_by_two))}
  states.update({name: restore_state(str(tmp_path / name)) for name in ('1x4', '1x1')})
  assert {step for step, _, _ in states.values()} == {3}
  assert states['2x2'][2]['positions'] == [12, 12]  # each process read its 4 of every global batch of 8

  config = tiny_config(small_folder, tmp_path / 'init', **RUN)
  init = jax.tree.leaves(nnx.split(models.build(config.model, num_classes=2, image_size=config.pp.image_size,
                                                rngs=nnx.Rngs(params=config.seed)), nnx.Param, ...)[1])
  updates = {name: [np.asarray(p) - p0 for p, p0 in zip(jax.tree.leaves(state['params']), init)]
             for name, (_, state, _) in states.items()}
  # The updates (trained - initial weights) agree to float rounding (1 vs 4 devices measured ~3e-6 relative); a
  # process stepping on its own half of each batch, or other data or dropout masks, would differ by tens of percent.
  for name in ('1x4', '1x1'):
    assert relative_difference(updates['2x2'], updates[name]) < 1e-4, name
    assert_trees_close(states['2x2'][1]['ema_params'], states[name][1]['ema_params'], rtol=1e-4, atol=1e-6)
    assert results[name]['eval/examples'] == final['eval/examples'] > 0  # every eval image counted once
    assert results[name]['eval_ema/loss'] == pytest.approx(final['eval_ema/loss'], rel=1e-4)


def child_pid(workdir, process_id):
  """The pid of inception.main process `process_id` of the run in `workdir` (from /proc)."""
  for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
      cmdline = read(f'/proc/{pid}/cmdline').split('\0')
    except OSError:
      continue
    if f'--config.workdir={workdir}' in cmdline and f'--process_id={process_id}' in cmdline:
      return int(pid)
  return None


@pytest.mark.slow
def test_killed_process_stops_the_job_and_the_rerun_resumes_to_the_same_end(small_folder, two_by_two, tmp_path):
  workdir = tmp_path / 'killed'
  proc = launch_local(small_folder, workdir)
  first = workdir / 'checkpoints' / '1'
  deadline = time.time() + 600
  while not first.is_dir() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  pid = child_pid(workdir, 1)
  assert first.is_dir() and pid is not None, read(workdir / 'launcher.log')[-3000:]
  os.kill(pid, signal.SIGKILL)  # a host dies mid-run
  code = wait(proc, timeout=120)
  log = read(workdir / 'launcher.log')
  assert code != 0
  assert 'launch.local: process 1 of 2 failed (exit code -9)' in log and 'process_1.log' in log
  assert not (workdir / 'final_eval.json').exists(), 'the kill came too late: the run had finished'
  assert child_pid(workdir, 0) is None  # the other process was stopped, not left hanging

  assert wait(launch_local(small_folder, workdir)) == 0, read(workdir / 'launcher.log')[-3000:]
  resumed_from = [line for line in read(workdir / 'logs' / 'process_0.log').splitlines() if 'Resumed from' in line]
  assert resumed_from and 'Resumed from step 3' not in resumed_from[-1], resumed_from
  step_a, state_a, meta_a = restore_state(str(two_by_two))
  step_b, state_b, meta_b = restore_state(str(workdir))
  assert step_a == step_b == 3 and meta_a == meta_b
  assert_trees_close(state_a, state_b, rtol=1e-6, atol=1e-7)
  for name in ('config.json', 'final_eval.json'):
    assert (workdir / name).exists()
  assert os.listdir(workdir / 'tensorboard')
  rows = [json.loads(line) for line in read(workdir / 'metrics.jsonl').splitlines()]
  assert [row['step'] for row in rows if 'train/loss' in row] == [1, 2, 3]  # each step once after the resume


def test_launcher_commands_and_environment():
  cmd = local.process_command(['--config=configs/googlenet.py:mini'], port=1234, num_processes=2, process_id=1)
  assert cmd[1:] == ['-m', 'inception.main', '--config=configs/googlenet.py:mini', '--distributed',
                     '--coordinator_address=127.0.0.1:1234', '--num_processes=2', '--process_id=1']
  env = local.process_env(3, {'XLA_FLAGS': '--xla_force_host_platform_device_count=4 --xla_foo=1'})
  assert env['JAX_NUM_CPU_DEVICES'] == '3' and env['JAX_PLATFORMS'] == 'cpu'
  assert env['XLA_FLAGS'] == '--xla_foo=1'
  assert local.workdir_of(['--config=configs/googlenet.py:mini', '--config.workdir=/x/y']) == '/x/y'
  assert local.workdir_of(['--config=configs/googlenet.py:mini']) == 'runs/googlenet_mini'


def test_dry_run_prints_each_process_command():
  proc = subprocess.run([sys.executable, '-m', 'launch.local', '--num_processes=2', '--devices_per_process=3',
                         '--dry_run', '--', '--config=configs/googlenet.py:mini', '--config.workdir=/tmp/a b'],
                        cwd=REPO, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 2
  for i, line in enumerate(lines):
    assert line.startswith('JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=3 ')
    assert line.endswith(f"-m inception.main --config=configs/googlenet.py:mini '--config.workdir=/tmp/a b' "
                         f"--distributed --coordinator_address=127.0.0.1:{lines[0].split(':')[-1].split()[0]} "
                         f"--num_processes=2 --process_id={i}")
