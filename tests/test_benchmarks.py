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
