"""Test set-up: four host CPU devices (so data parallelism is tested without accelerators) and quiet TF logs."""
import os

if 'xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4').strip()
# Tests compile more than they run: LLVM at optimisation level 0 compiles the CPU programs faster and runs them
# slower (make test: 13.0 min with it, 16.1 without; README, "The two commands"). Tests that train for real, as a
# user would, drop it for their commands (tests.runs.user_env). Subprocesses inherit it; it is part of the
# compilation cache's key.
if 'xla_backend_optimization_level' not in os.environ['XLA_FLAGS']:
  os.environ['XLA_FLAGS'] += ' --xla_backend_optimization_level=0'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('KERAS_BACKEND', 'jax')  # the reference models of tests/convert (TF would import it first)
# Compiled programs are cached on disk, so the end-to-end tests' subprocesses reuse what earlier tests compiled.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(os.path.dirname(os.path.dirname(__file__)), '.cache', 'jax'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')
# As the commands set it (inception/compile_cache.py): else a multi-device step with a CPU kernel never hits the cache.
os.environ.setdefault('JAX_REMOVE_CUSTOM_PARTITIONING_PTR_FROM_CACHE_KEY', 'true')


import pytest  # noqa: E402  (after the environment above is set)


@pytest.fixture(scope='session')
def small_images(tmp_path_factory):
  """Two classes of real images from the embedded data (see tests/runs.py)."""
  from tests.runs import make_small_folder  # pylint: disable=import-outside-toplevel
  return make_small_folder(tmp_path_factory.mktemp('small_images'))


@pytest.fixture(scope='session')
def finished_run(small_images, tmp_path_factory):
  """A finished 4-step run of the `mini` recipe (BatchNorm model, 96 px, batch 8) with checkpoints at steps 2 and 4,
  trained in this process; tests copy its workdir (tests.runs.copy_run) before changing anything."""
  from inception import train  # pylint: disable=import-outside-toplevel
  from tests.runs import tiny_config  # pylint: disable=import-outside-toplevel
  workdir = tmp_path_factory.mktemp('finished_run') / 'run'
  config = tiny_config(small_images, workdir, num_epochs=4, checkpoint_every_steps=2)
  results = train.train_and_evaluate(config)
  return str(workdir), config, results


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  """`--dist loadgroup` (make test, make test-slow): pytest-xdist 3.8 names a test's xdist_group by a suffix on
  `item._nodeid`, which pytest 9.2 no longer reads (its ids are structured), so every group was silently split over
  the workers and each ran the group's costly fixtures again (pytest-dev/pytest-xdist#1386). This carries the suffix
  into the id pytest reads; it does nothing where xdist set none (no -n, another --dist) or pytest reads it itself."""
  try:
    from _pytest.nodeid import NodeId  # pylint: disable=import-outside-toplevel
  except ImportError:  # pytest before 9.2 reads item._nodeid
    return
  for item in items:
    grouped = getattr(item, '_nodeid', None)
    if grouped and grouped != item.nodeid:
      item._id = NodeId.parse(grouped)  # pylint: disable=protected-access
