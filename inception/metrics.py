"""Where metrics go: TensorBoard event files and a JSON-lines file in the workdir (process 0 only).

The workdir may be local or on cloud storage (`gs://...`): paths go through etils.epath and TensorBoard's own file
layer. Cloud objects cannot be appended to, so there metrics.jsonl is rewritten whole at each write.
"""
import json
import time
from typing import Dict, List, Optional

import jax
import numpy as np
from etils import epath
from flax.metrics import tensorboard


def is_local(path) -> bool:
  """Whether `path` is on the local file system (not gs://, s3://, ...)."""
  return '://' not in str(path)


class MetricWriter:
  """Writes scalars to <workdir>/tensorboard and <workdir>/metrics.jsonl.

  `resume_step`: rows of metrics.jsonl after this step (written by a run that was stopped before its next
  checkpoint, and about to be written again) are dropped, so after a resume every step appears once.
  """

  def __init__(self, workdir, resume_step: int = 0):
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    self._tb = tensorboard.SummaryWriter(str(epath.Path(workdir) / 'tensorboard'))
    self._path = epath.Path(workdir) / 'metrics.jsonl'
    self._lines: List[str] = []
    if self._path.exists():
      for line in self._path.read_text().splitlines():
        try:
          if json.loads(line)['step'] <= resume_step:
            self._lines.append(line)
        except (ValueError, KeyError, TypeError):
          pass  # a line cut short by a kill
    self._path.write_text(''.join(line + '\n' for line in self._lines))
    self._append = self._path.open('a') if is_local(self._path) else None

  def write(self, step: int, scalars: Dict[str, float]):
    if not self.enabled:
      return
    for name, value in scalars.items():
      self._tb.scalar(name, value, step)
    self._tb.flush()
    line = json.dumps({'step': int(step), 'time': time.time(), **{k: float(v) for k, v in scalars.items()}})
    if self._append is not None:
      self._append.write(line + '\n')
      self._append.flush()
    else:
      self._lines.append(line)
      self._path.write_text(''.join(l + '\n' for l in self._lines))

  def close(self):
    if self.enabled:
      self._tb.close()
      if self._append is not None:
        self._append.close()


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


class StepHistory:
  """The train steps' metrics between two reports: device arrays until `fetch` brings them to the host in one go.

  `fetch` returns the newly fetched (step, values) pairs (the loop checks them for non-finite steps); `means` averages
  everything fetched since the last call over the finite steps (the learning rate over all) and starts afresh.
  """

  def __init__(self):
    self._pending: List = []
    self._fetched: List = []

  def add(self, step: int, step_metrics) -> None:
    self._pending.append((step, step_metrics))

  def fetch(self) -> List:
    new = [(step, {k: float(v) for k, v in values.items()}) for step, values in jax.device_get(self._pending)]
    self._pending = []
    self._fetched.extend(new)
    return new

  def means(self) -> Dict[str, float]:
    self.fetch()
    rows, self._fetched = self._fetched, []
    finite = [values for _, values in rows if values['finite']]
    out = {k: float(np.mean([v[k] for v in finite])) for k in (finite[0] if finite else {})
           if k not in ('finite', 'skipped_images')}
    out['lr'] = float(np.mean([values['lr'] for _, values in rows])) if rows else float('nan')
    return out
