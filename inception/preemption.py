"""Preemption: SIGTERM (what TPU VMs, GKE and SLURM send before they take a machine) or SIGINT asks the loop to save a
checkpoint at the current step and exit with EXIT_PREEMPTED, which the launch scripts read as "re-run me".

Single process: Python handlers note the signal. Several processes: JAX's preemption sync manager (started by
`jax.distributed.initialize`) catches SIGTERM and `reached_preemption_sync_point` makes every host stop at the same
step; SIGINT is turned into a SIGTERM to this process so it takes the same path. A second signal while the checkpoint
is being written kills the process at once: orbax writes into a temporary folder and renames it when complete, so the
previous complete checkpoint stays intact.
"""
import os
import signal
from typing import Optional

from absl import logging
from jax.experimental import multihost_utils

from inception.command import EXIT_PREEMPTED  # the launchers re-run a command that exits with it


class Preempted(Exception):
  """Raised by the loop once the checkpoint at `step` is on disk; the command line exits with EXIT_PREEMPTED."""

  def __init__(self, step: int, signal_name: str):
    super().__init__(f'{signal_name}: saved a checkpoint at step {step}; run the same command again to resume.')
    self.step = step


class PreemptionWatcher:
  """Installed for the loop's lifetime (a context manager): `should_stop(step)` is True once a stop was asked for,
  at the same step on every host."""

  def __init__(self, multi_process: bool):
    self.multi_process = multi_process
    self.signal_name: Optional[str] = None
    self._previous = {}

  def __enter__(self):
    signals = (signal.SIGINT,) if self.multi_process else (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
      self._previous[sig] = signal.signal(sig, self._on_signal)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _on_signal(self, signum, _frame):
    name = signal.Signals(signum).name
    if self.signal_name is not None:  # a second signal: stop now; the last complete checkpoint is untouched
      logging.warning('%s again while stopping: exiting without waiting for the checkpoint.', name)
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    self.signal_name = name
    logging.warning('%s received: finishing this step, then saving a checkpoint and exiting with %d.', name,
                    EXIT_PREEMPTED)
    if self.multi_process and signum != signal.SIGTERM:
      os.kill(os.getpid(), signal.SIGTERM)  # JAX's sync manager listens for SIGTERM

  def should_stop(self, step: int) -> bool:
    """Call once per step on every host (the multi-host sync point counts calls)."""
    if self.multi_process:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = self.signal_name or 'SIGTERM'
        self._abort_on_next_sigterm()
        return True
      return False
    return self.signal_name is not None

  def _abort_on_next_sigterm(self):
    """After the sync point JAX's handler has done its work: a further SIGTERM goes to _on_signal (and kills)."""
    if signal.SIGTERM not in self._previous:
      self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_signal)
