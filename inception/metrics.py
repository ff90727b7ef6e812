"""Where metrics go: TensorBoard event files and a JSON-lines file in the workdir (process 0 only)."""
import json
import os
import time
from typing import Dict, Optional

import jax
from flax.metrics import tensorboard


class MetricWriter:
  """Writes scalars to <workdir>/tensorboard and appends them to <workdir>/metrics.jsonl."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    if self.enabled:
      self._tb = tensorboard.SummaryWriter(os.path.join(workdir, 'tensorboard'))
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')

  def write(self, step: int, scalars: Dict[str, float]):
    if not self.enabled:
      return
    for name, value in scalars.items():
      self._tb.scalar(name, value, step)
    self._tb.flush()
    record = {'step': int(step), 'time': time.time(), **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()

  def close(self):
    if self.enabled:
      self._tb.close()
      self._jsonl.close()


def format_duration(seconds: float) -> str:
  """1h02m03s / 2m03s / 3s: short enough for a console line."""
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else (f'{m}m{s:02d}s' if m else f'{s}s')


class Throughput:
  """Images per second and the ETA over the steps since the last report."""

  def __init__(self, start_step: int):
    self._step, self._time = start_step, time.time()
    self.rate: Optional[float] = None

  def report(self, step: int, total_steps: int, batch_size: int):
    now = time.time()
    steps_per_s = (step - self._step) / max(now - self._time, 1e-9)
    self._step, self._time = step, now
    self.rate = steps_per_s * batch_size
    return self.rate, (total_steps - step) / max(steps_per_s, 1e-9)
