"""Preemption (inception/preemption.py): a signal is noted at once and kept until the loop's next check, a repeat
within REPEAT_S is the same notice and a later one kills; several processes stop at the same check however their loops
are placed when the notice comes (the agreement, against an in-memory key-value store); the training command stops
at an agreed step with exit code 75 when signalled while compiling a resumed run, mid-training or during an
evaluation, and ends soon after its checkpoint (2 real processes, benchmarks/preemption_exit.py); and so does the
published-size step under load, signalled three times."""
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from inception import preemption
from tests.runs import REPO, checkpoint_steps, copy_run, tiny_flags, user_env


def _wait_until(condition, timeout=10.0):
  deadline = time.time() + timeout
  while not condition() and time.time() < deadline:
    time.sleep(0.01)
  return condition()


def test_watcher_notes_the_first_signal_and_restores_the_handlers():
  before = {sig: signal.getsignal(sig) for sig in preemption.SIGNALS}
  with preemption.PreemptionWatcher(multi_process=False) as watcher:
    assert not watcher.should_stop(1)
    os.kill(os.getpid(), signal.SIGINT)  # noted by the signal thread, whatever the main thread does meanwhile
    assert _wait_until(lambda: preemption._CATCHER.name == 'SIGINT')
    assert watcher.should_stop(2) and watcher.signal_name == 'SIGINT'
  assert {sig: signal.getsignal(sig) for sig in preemption.SIGNALS} == before
  with preemption.PreemptionWatcher(multi_process=False) as watcher:  # the next loop starts unsignalled
    assert not watcher.should_stop(1)


def test_a_repeat_is_the_same_notice_and_a_later_signal_kills_at_once():
  code = ('import os, signal, time\n'
          'from inception import preemption\n'
          'with preemption.PreemptionWatcher(multi_process=False):\n'
          '  os.kill(os.getpid(), signal.SIGTERM)\n'
          '  os.kill(os.getpid(), signal.SIGTERM)\n'  # a scheduler's duplicate: the same notice
          '  time.sleep(preemption.REPEAT_S + 0.5)\n'
          '  print("survived the repeat", flush=True)\n'
          '  os.kill(os.getpid(), signal.SIGTERM)\n'
          '  time.sleep(30)\n'
          'print("survived")\n')
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == -signal.SIGTERM, proc.stderr[-2000:]
  assert proc.stdout == 'survived the repeat\n' and 'SIGTERM again while stopping' in proc.stderr


class FakeClient:
  """The coordination service's key-value calls that the watchers use, in memory and thread-safe."""

  def __init__(self):
    self.values = {}
    self.changed = threading.Condition()

  def key_value_set(self, key, value, allow_overwrite=False):
    with self.changed:
      if key in self.values and not allow_overwrite:
        raise RuntimeError(f'ALREADY_EXISTS: {key}')
      self.values[key] = value
      self.changed.notify_all()

  def blocking_key_value_get(self, key, timeout_in_ms):
    with self.changed:
      if not self.changed.wait_for(lambda: key in self.values, timeout_in_ms / 1000):
        raise RuntimeError(f'DEADLINE_EXCEEDED: {key}')
      return self.values[key]

  def key_value_increment(self, key, increment):
    with self.changed:
      self.values[key] = str(int(self.values.get(key, '0')) + increment)
      self.changed.notify_all()
      return int(self.values[key])

  def key_value_dir_get(self, prefix):
    with self.changed:
      return [(k, v) for k, v in self.values.items() if k.startswith(prefix)]


def _loop(watcher, stopped, checks=400, pause=0.0, at_check=None):
  """A training loop's checks: records the check it stopped at; `at_check`: (check, action) run just after it."""
  for check in range(1, checks + 1):
    if watcher.should_stop(check):
      stopped.append(check)
      return
    if at_check and check == at_check[0]:
      at_check[1]()
    time.sleep(pause * random.random())
  stopped.append(None)


@pytest.mark.parametrize('case', ['before_the_loops', 'mid_loop_in_the_faster', 'mid_loop_in_the_slower',
                                  'one_process_starts_late'])
def test_processes_stop_at_the_same_check_wherever_their_loops_are(case):
  """Three processes whose loops run at different speeds: one is signalled (its watcher posts the notice) at a moment
  given by `case`; all stop at the same check, after the check where the notice came."""
  random.seed(case)
  client, count = FakeClient(), 3
  watchers = [preemption.PreemptionWatcher(True, client, i, count, key=f'test/{case}') for i in range(count)]
  stopped = [[] for _ in range(count)]
  pauses = [0.001, 0.004, 0.01]
  at_check = {'mid_loop_in_the_faster': (0, (25, lambda: watchers[0].post('SIGTERM'))),
              'mid_loop_in_the_slower': (2, (10, lambda: watchers[2].post('SIGINT')))}.get(case)
  with watchers[0], watchers[1]:
    if case == 'before_the_loops':
      watchers[1].post('SIGTERM')
    threads = [threading.Thread(target=_loop, args=(watchers[i], stopped[i]),
                                kwargs=dict(pause=pauses[i], at_check=at_check[1] if at_check and at_check[0] == i
                                            else None)) for i in range(2)]
    for t in threads:
      t.start()
    if case == 'one_process_starts_late':
      watchers[0].post('SIGTERM')
      time.sleep(0.5)  # the others wait at their next check until the late one has published its count
    with watchers[2]:
      late = threading.Thread(target=_loop, args=(watchers[2], stopped[2]),
                              kwargs=dict(pause=pauses[2], at_check=at_check[1] if at_check and at_check[0] == 2
                                          else None))
      late.start()
      for t in threads + [late]:
        t.join(timeout=60)
  checks = [s[0] for s in stopped]
  assert len(set(checks)) == 1 and checks[0] is not None, checks
  if at_check:
    assert checks[0] > at_check[1][0], checks
  else:  # the loops of the processes that started waited at an early check for the late one's count
    assert checks[0] < 50, checks
  assert {w.signal_name for w in watchers} == {'SIGINT' if case == 'mid_loop_in_the_slower' else 'SIGTERM'}


def test_processes_that_cannot_agree_stop_without_a_checkpoint(monkeypatch):
  """A process that never publishes its count (dead): the others stop at their next check, saving nothing."""
  monkeypatch.setattr(preemption, 'AGREE_TIMEOUT_S', 0.5)
  client = FakeClient()
  with preemption.PreemptionWatcher(True, client, 0, 2, key='test/dead') as watcher:
    assert not watcher.should_stop(1)
    watcher.post('SIGTERM')
    time.sleep(0.1)
    with pytest.raises(preemption.Preempted, match='nothing new to save.*last checkpoint') as stop:
      watcher.should_stop(2)
    assert not stop.value.saved


def test_a_stop_agreed_while_compiling_ends_the_command_at_once(monkeypatch):
  """Inside interruptible() (the compilation before the first step), a stop at the next check ends the training
  command at once, in one process (the signal thread) and in several (the agreement thread)."""
  ended = []
  monkeypatch.setattr(preemption, '_in_command', lambda: True)
  monkeypatch.setattr(preemption, '_end_process', lambda code: ended.append((threading.current_thread().name, code)))
  with preemption.PreemptionWatcher(multi_process=False) as watcher:
    assert not watcher.should_stop(0)
    with watcher.interruptible('at step 0 of 9, while compiling'):
      os.kill(os.getpid(), signal.SIGTERM)
      assert _wait_until(lambda: ended)
  assert ended == [('preemption-signals', preemption.EXIT_PREEMPTED)]
  ended.clear()
  client = FakeClient()
  watchers = [preemption.PreemptionWatcher(True, client, i, 2, key='test/compiling') for i in range(2)]
  with watchers[0], watchers[1]:
    for w in watchers:
      assert not w.should_stop(0)
    with watchers[0].interruptible('compiling'):
      watchers[1].post('SIGTERM')
      assert _wait_until(lambda: ended)
    assert ended == [('preemption-agreement', preemption.EXIT_PREEMPTED)]
    with watchers[1].interruptible('compiling'):  # the agreement came first: ends on entering
      assert len(ended) == 2 and ended[1][0] == 'MainThread'


def test_exit_when_done_leaves_a_library_call_alone():
  preemption.exit_when_done(preemption.EXIT_PREEMPTED, keep=[object()])
  assert preemption._ENDING['code'] is None and not preemption._ENDING['keep']


@pytest.mark.slow
def test_sigterm_saves_at_the_current_step_and_exits_75(finished_run, tmp_path):
  """The command line in one process, resumed from a finished 4-step run to 40 steps, is sent SIGTERM once it has
  trained on: it logs the step it stopped at, that step's checkpoint is the latest, and the exit code is 75."""
  source, config, _ = finished_run
  workdir = copy_run(source, tmp_path / 'run')
  log = open(tmp_path / 'log.txt', 'wb')
  proc = subprocess.Popen([sys.executable, '-m', 'inception.main',
                           *tiny_flags(config.data.root, workdir, num_epochs=40, checkpoint_every_steps=1000)],
                          cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
  deadline = time.time() + 300
  while 'step 6/40' not in (tmp_path / 'log.txt').read_text() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=300) == preemption.EXIT_PREEMPTED
  text = (tmp_path / 'log.txt').read_text()
  stopped = [line for line in text.splitlines() if 'Stopped by SIGTERM at step' in line]
  assert len(stopped) == 1, text[-3000:]
  step = int(stopped[0].split('at step ')[1].split()[0])
  assert 6 <= step < 40 and checkpoint_steps(workdir) == [2, 4, step]
  assert 'run the same command again to resume' in text


# ---------------------------------------------------------------------------------------------------------------------
# The training command in 2 real processes (launch.local), through benchmarks/preemption_exit.py.

RESULT = re.compile(r'run \d+: exit code (-?\d+); stopped at step ([\d,]+) (\(agreed\))?.*checkpoint on disk '
                    r'([\d.]+ s|-).* all gone ([\d.]+) s')
STOP_TO_EXIT_S = 30  # from the stop's log line to every process gone (measured under 1 s on 2 cores)


def preemption_exit(args, main_args, extra_env=None, timeout=900):
  """Runs benchmarks/preemption_exit.py; returns (exit code, the agreed stop step, whether a checkpoint was written,
  seconds from the signal to every process gone, its output)."""
  env = {**os.environ, 'JAX_LOG_COMPILES': '1', **(extra_env or {})}  # 'Compiling jit(train_step)' marks the compile
  proc = subprocess.run([sys.executable, 'benchmarks/preemption_exit.py', *args, '--', *main_args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout, env=env)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  match = RESULT.search(proc.stdout)
  assert match and match.group(3), proc.stdout
  print(f'preemption_exit {" ".join(args)}: {match.group(0)}')  # the figures, with pytest -s
  steps = {int(s) for s in match.group(2).split(',')}
  assert len(steps) == 1, proc.stdout
  return int(match.group(1)), steps.pop(), match.group(4) != '-', float(match.group(5)), proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize('moment', ['compiling_a_resumed_run', 'mid_training', 'during_an_evaluation'])
def test_two_processes_stop_at_an_agreed_step_with_75(moment, finished_run, tmp_path):
  """The 4-step run resumed to 40 steps in 2 processes, SIGTERM at `moment`: to one process while the resumed run
  compiles its train step (JAX's sync manager agreed on step 1 there and the run trained to its end), to both
  (a scheduler's stop) mid-training, or to both during the evaluation at step 6. Every process stops at the same
  step, with that step's checkpoint on disk where it trained one, exits 75, and is gone soon after."""
  source, config, _ = finished_run
  workdir = copy_run(source, tmp_path / 'run')
  evaluate_at_6 = {'eval_every_epochs': 3} if moment == 'during_an_evaluation' else {}  # 2 steps per epoch
  main_args = tiny_flags(config.data.root, workdir, num_epochs=40, checkpoint_every_steps=1000, **evaluate_at_6)
  when, target = {'compiling_a_resumed_run': (r'Compiling jit\(train_step\)', 'one'),
                  'mid_training': (r'step 6/', 'all'), 'during_an_evaluation': (r'step 6/', 'all')}[moment]
  code, step, saved, gone, out = preemption_exit([f'--when={when}', f'--target={target}'], main_args)
  assert code == preemption.EXIT_PREEMPTED, out
  log = open(os.path.join(workdir, 'logs', 'process_0.log')).read()
  if moment == 'compiling_a_resumed_run':
    assert step in (4, 5) and ('nothing new to save' in log) == (step == 4), out
  elif moment == 'mid_training':
    assert 6 <= step <= 6 + 3, out  # the host runs at most MAX_AHEAD steps ahead of the device
  else:
    assert step == 6 and 'eval @ step 6' in log, out
  assert checkpoint_steps(workdir) == [2, 4] + ([step] if step > 4 else []) and saved == (step > 4)
  stop_line = max(float(t) for t in re.findall(r'stop logged ([\d.]+) s', out))
  assert gone - stop_line < STOP_TO_EXIT_S, out


@pytest.mark.slow
# Its busy loop takes a core for ~9 min; the README's :bccd test, partly beside it, once ran its 4-min training
# command past 10 min.
@pytest.mark.xdist_group('busy_machine')
def test_published_size_step_under_load_stops_at_an_agreed_step_three_times(tmp_path):
  """`configs/googlenet.py:mini` (the published-size step, about 2 s on 2 busy cores) in 2 processes beside a busy
  loop, logging every 5 steps, SIGTERM to both three times in one workdir: 6 s after the step-5 log line (mid-step,
  the moment a run once trained on to its end), while the resumed run compiles, and 6 s after the step-20 log line of
  the run resumed again. Each stops at an agreed step, saves it where it trained, exits 75, and is gone within
  STOP_TO_EXIT_S of its stop."""
  workdir = str(tmp_path / 'mini')
  main_args = ['--config=configs/googlenet.py:mini', f'--config.workdir={workdir}', '--config.log_every_steps=5']
  busy = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
  try:
    stops = []
    for when, delay in ((r'step 5/', 6), (r'Compiling jit\(train_step\)', 0), (r'step 20/', 6)):
      before = checkpoint_steps(workdir) if os.path.isdir(os.path.join(workdir, 'checkpoints')) else []
      code, step, saved, gone, out = preemption_exit([f'--when={when}', f'--delay={delay}'], main_args,
                                                     extra_env=user_env())  # the recipe's step as users run it
      assert code == preemption.EXIT_PREEMPTED, out
      stop_line = max(float(t) for t in re.findall(r'stop logged ([\d.]+) s', out))
      assert gone - stop_line < STOP_TO_EXIT_S, out
      assert checkpoint_steps(workdir) == sorted(set(before + ([step] if saved else []))), out
      stops.append(step)
  finally:
    busy.kill()
    busy.wait()
  first, second, third = stops
  assert 5 < first <= 5 + 8 and second in (first, first + 1) and 20 < third <= 20 + 8, stops
