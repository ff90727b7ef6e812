"""Preemption: SIGTERM (what TPU VMs, GKE and SLURM send before they take a machine) or SIGINT asks the training loop
to stop at a step every process agrees on, save a checkpoint there and exit with EXIT_PREEMPTED (75), which the
launchers read as "run me again".

Catching (`catch_signals`, process-wide): Python handlers for both signals plus a wakeup fd read by a thread, so a
signal is noted the moment it arrives, also while the main thread is inside XLA (compiling, running a step) or
blocked on a checkpoint. A signal that arrives before the loop starts (during imports, `jax.distributed.initialize`,
the restore, compilation) is kept and acted on at the loop's first check. A repeat within REPEAT_S of the first is the
same notice (a scheduler may deliver one signal twice); a later one kills the process at once with that signal: orbax
writes into a temporary folder and renames it when complete, so the previous complete checkpoint stays intact.

Agreeing (`PreemptionWatcher`): the loop calls `should_stop` at its check points (before compiling, before the first
step, after every step, after every evaluation), in the same order in every process. In one process it is True at the
first check after a signal. In several, a signal to any of them is posted in the coordination service's key-value
store; each process's watcher thread then publishes how many checks its loop has passed, holding a lock that keeps
its loop from passing another, and the stop is the check after the largest count, which every loop has still ahead of
it. Work that saves nothing before the next check (compiling the first step, which can outlast a grace period) is
`interruptible`: when that check is the stop, the training command exits at once. JAX's own preemption sync manager is
not used: its counter starts at 0 (a resumed run, signalled before its first step, agrees on step 1, long past, and
trains to its end), orbax's save-finalize thread calls it with the saved step while the loop is further on, and its
C++ SIGTERM handler would replace the one here (inception/distributed.py turns it off).

Ending (`exit_when_done`): once the training command (`python -m inception.main`) has stopped or finished, what is
left of the process is teardown, and on 2 cores that took from 3 s to two minutes after the checkpoint was on disk:
the training input pipeline's tf.data iterator, destroyed when the loop's frame is, waits in its destructor for its
autotuning thread (seen for a minute and more, in process 0 of 2), then the interpreter's final garbage collection
walks a heap of TF, JAX and protobuf objects for seconds. So the command keeps the pipelines alive and, first of the
exit handlers, flushes its output, leaves the coordination service together with the other processes
(`jax.distributed.shutdown`: a barrier, so the service in process 0 outlives every client) and ends with os._exit.
"""
import atexit
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from typing import Callable, List, Optional

from absl import logging

from inception.command import EXIT_PREEMPTED  # the launchers re-run a command that exits with it

SIGNALS = (signal.SIGTERM, signal.SIGINT)
REPEAT_S = 2.0  # a repeat of the signal within this many seconds of the first is the same notice
AGREE_TIMEOUT_S = 300  # how long a watcher waits for every process to publish its count (a dead one never does)
_POLL_MS = 10_000  # one pending key-value read per process at a time; JAX cancels it when the client shuts down
_CLOSED = b'\0'  # written to the wakeup pipe to end the signal thread (never a signal number)


class Preempted(Exception):
  """Raised by the loop once it stopped at the agreed check: with `saved`, the checkpoint of `step` is on disk;
  without, nothing new was trained since the last checkpoint (or the processes could not agree). The command line
  exits with EXIT_PREEMPTED."""

  def __init__(self, signal_name: str, step: Optional[int] = None, saved: bool = True):
    if saved:
      text = f'{signal_name}: saved a checkpoint at step {step}; run the same command again to resume.'
    else:
      where = 'its last checkpoint' if step is None else f'step {step}'
      text = f'{signal_name}: stopped with nothing new to save; run the same command again to resume from {where}.'
    super().__init__(text)
    self.step, self.saved = step, saved


class _Catcher:
  """The process's signal handlers: notes the first signal (name, time), tells the listeners, kills on a late repeat."""

  def __init__(self):
    self.name: Optional[str] = None
    self.time: Optional[float] = None
    self.listeners: List[Callable[[str], None]] = []
    self._previous = {}
    self._previous_fd = -1
    self._pipe = None
    self._thread: Optional[threading.Thread] = None

  @property
  def installed(self) -> bool:
    return self._thread is not None

  def install(self) -> bool:
    """Installs the handlers (main thread only; False elsewhere, where Python allows no handler)."""
    if self.installed:
      return True
    if threading.current_thread() is not threading.main_thread():
      logging.warning('Preemption signals are caught only when training runs in the main thread: SIGTERM/SIGINT '
                      'keep their default action here.')
      return False
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    self._pipe = (read_fd, write_fd)
    self._previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for sig in SIGNALS:
      self._previous[sig] = signal.signal(sig, _note_in_main_thread)
    self._thread = threading.Thread(target=self._read, name='preemption-signals', daemon=True)
    self._thread.start()
    return True

  def uninstall(self) -> None:
    """Puts back the handlers and wakeup fd that were there before (main thread only)."""
    if not self.installed:
      return
    for sig, handler in self._previous.items():
      signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    signal.set_wakeup_fd(self._previous_fd)
    os.write(self._pipe[1], _CLOSED)
    self._thread.join()
    for fd in self._pipe:
      os.close(fd)
    self._previous, self._pipe, self._thread = {}, None, None

  def _read(self) -> None:
    while True:
      for byte in os.read(self._pipe[0], 64):
        if byte == _CLOSED[0]:
          return
        self._on_signal(signal.Signals(byte).name, byte)

  def _on_signal(self, name: str, signum: int) -> None:
    now = time.time()
    if self.name is None:
      self.name, self.time = name, now
      logging.warning('%s received: stopping at the next step every process agrees on, saving a checkpoint there and '
                      'exiting with %d (a second signal kills at once).', name, EXIT_PREEMPTED)
      for listener in list(self.listeners):
        listener(name)
    elif now - self.time > REPEAT_S:
      logging.warning('%s again while stopping: exiting without waiting for the checkpoint.', name)
      _die(signum)

  def reset(self) -> None:
    """Forgets a noted signal (a new loop in the same process starts unsignalled)."""
    self.name = self.time = None


def _note_in_main_thread(signum, frame) -> None:  # pylint: disable=unused-argument
  """Python's handler: nothing to do; its C part wrote the signal number to the wakeup fd that the thread reads."""


def _die(signum: int) -> None:
  """Ends the process by `signum` with the default action, from any thread."""
  libc = ctypes.CDLL(None)
  libc.signal.argtypes, libc.signal.restype = [ctypes.c_int, ctypes.c_void_p], ctypes.c_void_p
  libc.signal(signum, None)  # SIG_DFL
  os.kill(os.getpid(), signum)
  time.sleep(5)
  os._exit(128 + signum)


_CATCHER = _Catcher()


def catch_signals() -> bool:
  """Catches SIGTERM and SIGINT for the rest of this process (see the module docstring); call it from the main thread
  as early as possible. True when they are caught."""
  return _CATCHER.install()


class PreemptionWatcher:
  """Installed for the loop's lifetime (a context manager): `should_stop(step)` is True at the agreed check.

  `client`: the coordination service's client (jax._src.distributed.global_state.client), needed with several
  processes; `process_index`, `process_count`: this process's place in the job; `key`: where its keys go in the
  key-value store, the same in every process (default: numbered by the watchers this process has made, which every
  process makes in the same order).
  """
  _instances = 0

  def __init__(self, multi_process: bool, client=None, process_index: int = 0, process_count: int = 1,
               key: Optional[str] = None):
    if multi_process and client is None:
      raise ValueError('Several processes agree on a stop through the coordination service: pass its client.')
    self.multi_process = multi_process
    self.signal_name: Optional[str] = None
    self._client, self._index, self._count = client, process_index, process_count
    PreemptionWatcher._instances += 1
    self._prefix = key or f'inception/preemption/{PreemptionWatcher._instances}'
    self._lock = threading.Lock()
    self._checks = 0  # check points this loop has passed
    self._stop_at: Optional[int] = None  # the agreed check (1-based), once known
    self._failed: Optional[str] = None
    self._closing = threading.Event()
    self._installed_here = False
    self._window: Optional[str] = None  # set inside interruptible(): what the loop is doing, for the log

  def __enter__(self):
    if not _CATCHER.installed:
      self._installed_here = _CATCHER.install()
    _CATCHER.listeners.append(self.post)
    if self.multi_process:
      threading.Thread(target=self._watch, name='preemption-agreement', daemon=True).start()
    if _CATCHER.name is not None:  # noted before this loop started
      self.post(_CATCHER.name)
    return self

  def __exit__(self, *exc):
    self._closing.set()
    if self.post in _CATCHER.listeners:
      _CATCHER.listeners.remove(self.post)
    if self._installed_here:
      _CATCHER.uninstall()
      _CATCHER.reset()

  @contextlib.contextmanager
  def interruptible(self, doing: str):
    """Marks work that saves nothing before the loop's next check (compiling before the first step; `doing` says
    what, for the log): in the training command, when that next check turns out to be the agreed stop, the process
    exits with EXIT_PREEMPTED at once instead of finishing the work (a compilation can outlast a grace period)."""
    with self._lock:
      self._window = doing
      self._exit_if_next_check_stops()
    try:
      yield
    finally:
      with self._lock:
        self._window = None

  def _exit_if_next_check_stops(self) -> None:
    """Inside interruptible() (with the lock held): ends the process when the next check is the stop."""
    next_check_stops = (self._stop_at == self._checks + 1) if self.multi_process else _CATCHER.name is not None
    if self._window is None or not next_check_stops or not _in_command():
      return
    self.signal_name = self.signal_name or _CATCHER.name
    logging.warning('Stopped by %s %s: nothing new to save; exiting with %d at once so the launcher runs the job '
                    'again.', self.signal_name, self._window, EXIT_PREEMPTED)
    _end_process(EXIT_PREEMPTED)

  def post(self, signal_name: str) -> None:
    """Tells every process that this one was signalled (the first post wins; the others are no-ops)."""
    if not self.multi_process:
      with self._lock:
        self._exit_if_next_check_stops()
      return
    try:
      self._client.key_value_set(f'{self._prefix}/notice', f'{signal_name} to process {self._index}')
    except Exception as e:  # pylint: disable=broad-except  (ALREADY_EXISTS: another process posted first)
      if 'ALREADY_EXISTS' not in str(e):
        logging.error('Could not post the preemption notice: %s', e)

  def should_stop(self, step: int) -> bool:
    """Call at each check point, in the same order on every process; True at the agreed one. `step` is the step the
    loop is at (for the log). Raises Preempted (nothing saved) when the processes could not agree."""
    if not self.multi_process:
      self._checks += 1
      self.signal_name = _CATCHER.name
      return self.signal_name is not None
    with self._lock:  # held by the watcher thread while the processes agree: this check then waits for the result
      self._checks += 1
      if self._failed:
        raise Preempted(self._failed, saved=False)
      return self._stop_at is not None and self._checks >= self._stop_at

  def _watch(self) -> None:
    """The watcher thread: waits for a notice, then agrees on the stop with the other processes."""
    notice = self._get(f'{self._prefix}/notice', timeout_s=None)
    if notice is None:
      return
    with self._lock:
      try:
        self._agree(notice)
      except Exception as e:  # pylint: disable=broad-except  (a process died or the service is gone)
        if not self._closing.is_set():
          logging.error('The processes could not agree on a step to stop at (%s): stopping without a checkpoint.', e)
          self._failed = notice.split(' ')[0]

  def _agree(self, notice: str) -> None:
    client, key = self._client, f'{self._prefix}/checks/'
    client.key_value_set(f'{key}{self._index}', str(self._checks))
    if client.key_value_increment(f'{self._prefix}/arrived', 1) == self._count:  # the last to publish decides
      counts = [int(value) for _, value in client.key_value_dir_get(key)]
      client.key_value_set(f'{self._prefix}/stop_at', str(max(counts) + 1))
    stop_at = self._get(f'{self._prefix}/stop_at', timeout_s=AGREE_TIMEOUT_S)
    if stop_at is None:
      if not self._closing.is_set():
        raise TimeoutError(f'not every process published its count within {AGREE_TIMEOUT_S} s')
      return
    self._stop_at, self.signal_name = int(stop_at), notice.split(' ')[0]
    logging.warning('Preemption (%s): every process stops after check %d (this one has passed %d).', notice,
                    self._stop_at, self._checks)
    self._exit_if_next_check_stops()

  def _get(self, key: str, timeout_s: Optional[float]) -> Optional[str]:
    """The value of `key` once it is set; None when the watcher closes first or `timeout_s` passes."""
    deadline = None if timeout_s is None else time.time() + timeout_s
    while not self._closing.is_set() and (deadline is None or time.time() < deadline):
      wait_ms = _POLL_MS if deadline is None else max(1, min(_POLL_MS, int((deadline - time.time()) * 1000)))
      try:
        return self._client.blocking_key_value_get(key, wait_ms)
      except Exception as e:  # pylint: disable=broad-except
        if 'DEADLINE_EXCEEDED' not in str(e):  # CANCELLED at shutdown, or the service is gone
          if self._closing.wait(1.0):
            return None
    return None


_ENDING = {'code': None, 'keep': []}


def _in_command() -> bool:
  """Whether this process is the training command (`python -m inception.main`), not a library call (a test)."""
  return getattr(getattr(sys.modules.get('__main__'), '__spec__', None), 'name', None) == 'inception.main'


def exit_when_done(code: int, keep=()) -> None:
  """In the training command only (a no-op in a library call, e.g. a test): the process ends with `code` right after
  the command returns, without the interpreter's teardown (module docstring); `keep` (input pipelines) stays alive
  until then instead of being destroyed when the loop's frame is."""
  if not _in_command():
    return
  if _ENDING['code'] is None:
    atexit.register(_at_exit)  # registered last, so it runs before JAX's, orbax's and TF's exit handlers
  _ENDING['code'] = code
  _ENDING['keep'].extend(keep)


def _at_exit() -> None:
  if getattr(sys, 'last_value', None) is None:  # else an uncaught error after the run: Python's own exit and code
    _end_process(_ENDING['code'])


def _end_process(code: int) -> None:
  """Flushes the output, leaves the coordination service with the other processes and ends the process with `code`
  (from any thread)."""
  started = time.time()
  try:
    import jax  # pylint: disable=import-outside-toplevel
    jax.distributed.shutdown()  # a no-op in one process
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('Leaving the coordination service: %s', e)
  if code:  # after a final line the console ends with it
    logging.info('Exiting with %d (%.1f s to leave the coordination service).', code, time.time() - started)
  logging.flush()
  for stream in (sys.stdout, sys.stderr):
    stream.flush()
  os._exit(code)
