"""Preemption in one process (inception/preemption.py): SIGTERM/SIGINT stop the run at the next step with a checkpoint
of that step and exit code 75; a second signal kills at once. The multi-process path (all hosts agree on the step,
the resumed run bitwise equal to an uninterrupted one) is tests/launch/test_local.py."""
import os
import signal
import subprocess
import sys
import time

import pytest

from inception import preemption
from tests.runs import REPO, checkpoint_steps, copy_run, tiny_flags


def test_watcher_notes_the_first_signal_and_restores_the_handlers():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.PreemptionWatcher(multi_process=False) as watcher:
    assert not watcher.should_stop(1)
    os.kill(os.getpid(), signal.SIGINT)
    assert watcher.should_stop(2) and watcher.signal_name == 'SIGINT'
  assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_signal_kills_at_once():
  code = ('import os, signal, time\n'
          'from inception import preemption\n'
          'with preemption.PreemptionWatcher(multi_process=False):\n'
          '  os.kill(os.getpid(), signal.SIGTERM)\n'
          '  os.kill(os.getpid(), signal.SIGTERM)\n'
          '  time.sleep(30)\n'
          'print("survived")\n')
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == -signal.SIGTERM and 'survived' not in proc.stdout, proc.stderr[-2000:]
  assert 'SIGTERM again while stopping' in proc.stderr


@pytest.mark.slow
def test_sigterm_saves_at_the_current_step_and_exits_75(finished_run, tmp_path):
  """The command line, resumed from a finished 4-step run to 40 steps, is sent SIGTERM once it has trained on: it
  logs the step it stopped at, that step's checkpoint is the latest, and the exit code is 75."""
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
