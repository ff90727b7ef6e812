"""The command line's answers to bad input (inception/main.py): one line naming the problem and the fix, exit 1, no
traceback, and nothing written."""
import os
import subprocess
import sys

import pytest

from tests.runs import REPO, tiny_flags


def run_main(args, timeout=300):
  return subprocess.run([sys.executable, '-m', 'inception.main', *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout)


def test_a_folder_where_no_image_decodes_stops_before_training(tmp_path):
  """Every file is broken: the probe before training stops the run with a DataError and nothing written. The training
  stream's own guard is tested in tests/data/test_pipeline.py."""
  for name in ('a', 'b'):
    os.makedirs(tmp_path / 'data' / name)
    for i in range(10):
      (tmp_path / 'data' / name / f'{i}.jpg').write_bytes(b'not a jpeg at all')
  workdir = tmp_path / 'run'
  proc = run_main(tiny_flags(tmp_path / 'data', workdir))
  assert proc.returncode == 1, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('DataError: ') and 'could not be decoded' in last and 'max_bad_fraction' in last, last
  assert 'Traceback' not in proc.stderr
  assert not workdir.exists()


@pytest.mark.parametrize('override, named', [
    ('--config.batch_size=64', '--config.batch_size=64 is larger than the'),
    ('--config.batch_size=6', 'must be divisible by the 4 devices'),
])
def test_data_and_device_dependent_config_errors_are_one_line(small_images, tmp_path, override, named):
  workdir = tmp_path / 'run'
  proc = run_main([*tiny_flags(small_images, workdir), override])
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('ConfigError: ') and named in last, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr and not workdir.exists()
