"""The README's benchmark command runs and prints its figures."""
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_train_step_benchmark_prints_throughput():
  proc = subprocess.run(
      [sys.executable, 'benchmarks/train_step.py', '--config=configs/googlenet.py:mini', '--steps=2',
       '--config.pp.image_size=96', '--config.batch_size=8'],
      cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, 'PYTHONPATH': REPO})
  assert proc.returncode == 0, proc.stderr[-3000:]
  match = re.search(r'googlenet_bn float32 96px batch 8 .* ([0-9.]+) images/s', proc.stdout)
  assert match and float(match.group(1)) > 0, proc.stdout


def test_resume_benchmark_prints_the_time_to_the_first_batch():
  proc = subprocess.run(
      [sys.executable, 'benchmarks/resume.py', '--num_examples=5000', '--steps=0,100000', '--batch_size=16'],
      cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, 'PYTHONPATH': REPO})
  assert proc.returncode == 0, proc.stderr[-3000:]
  found = re.findall(r'resume at step +(\d+) \(epoch +([0-9.]+)\): first batch \(16, 112, 112, 3\) in +([0-9.]+) s',
                     proc.stdout)
  assert [(int(s), float(e)) for s, e, _ in found] == [(0, 0.0), (100000, 320.0)], proc.stdout
