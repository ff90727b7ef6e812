"""Shared by the launcher tests: the uninterrupted 2 processes x 2 devices run that the local kill-and-resume test
(test_local.py) and the SLURM preemption test (test_slurm.py) must both end equal to, run once per session by the
worker of xdist group 'two_by_two'."""
import pytest


@pytest.fixture(scope='session')
def two_by_two(small_images, tmp_path_factory):
  """An uninterrupted launch.local run, 2 processes x 2 devices, of test_local.RUN on the session's small images."""
  from tests.launch import test_local  # pylint: disable=import-outside-toplevel
  workdir = tmp_path_factory.mktemp('two_by_two')
  code = test_local.wait(test_local.launch_local(small_images, workdir))
  assert code == 0, test_local.read(workdir / 'launcher.log')[-3000:]
  return workdir
