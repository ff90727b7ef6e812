"""JAX's persistent compilation cache for the commands (inception/compile_cache.py): where it goes, what the log says,
and a resumed run loading its train step from the cache the first run left in its workdir."""
import logging
import os
import subprocess
import sys

import pytest

from inception import compile_cache
from tests.runs import REPO, tiny_flags


def test_the_folder_follows_the_workdir_and_empty_turns_it_off():
  assert compile_cache.folder('{workdir}/compile_cache', 'gs://bucket/run/') == 'gs://bucket/run/compile_cache'
  assert compile_cache.folder('/shared/jax_cache', 'runs/a') == '/shared/jax_cache'
  assert compile_cache.folder('', 'runs/a') is None


def _record(level, msg, *args):
  return logging.LogRecord('jax._src.compiler', level, 'compiler.py', 1, msg, args, None)


def test_the_steps_cache_lines_are_lifted_to_info_and_other_debug_lines_dropped():
  keep = compile_cache._StepLines()  # pylint: disable=protected-access
  hit = _record(logging.DEBUG, "Persistent compilation cache hit for '%s' with key %r", 'jit_train_step', 'k1')
  miss = _record(logging.DEBUG, "PERSISTENT COMPILATION CACHE MISS for '%s' with key %r", 'jit_eval_step', 'k2')
  assert keep.filter(hit) and (hit.levelno, hit.getMessage()) == (logging.INFO,
                                                                  'jit_train_step: loaded from the compilation cache')
  assert keep.filter(miss) and miss.getMessage() == 'jit_eval_step: compiled (not in the cache yet)'
  assert not keep.filter(_record(logging.DEBUG, "Persistent compilation cache hit for '%s' with key %r", 'jit_fn', 'k'))
  assert not keep.filter(_record(logging.DEBUG, 'Compiling %s', 'jit_train_step'))
  warning = _record(logging.WARNING, 'Not writing persistent cache entry')
  assert keep.filter(warning) and warning.levelno == logging.WARNING


@pytest.mark.slow  # two runs of the command: about a minute
def test_a_resumed_run_loads_its_train_step_from_the_cache_in_its_workdir(small_images, tmp_path):
  """The config's default (`{workdir}/compile_cache`), with the tests' shared cache variable taken away: the first run
  compiles and fills the workdir's cache, the resumed run (2 more steps) loads its train step from it."""
  workdir = tmp_path / 'run'
  env = {k: v for k, v in os.environ.items() if k != compile_cache.ENV}
  logs = []
  for epochs in (1, 2):
    out = subprocess.run([sys.executable, '-m', 'inception.main', *tiny_flags(small_images, workdir, num_epochs=epochs)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    logs.append(out.stderr)
  assert f'Compilation cache: {workdir}/compile_cache (from --config.compile_cache)' in logs[0]
  assert 'jit_train_step: compiled (not in the cache yet)' in logs[0]
  assert any(name.startswith('jit_train_step') for name in os.listdir(workdir / 'compile_cache'))
  assert 'jit_train_step: loaded from the compilation cache' in logs[1]
  assert 'jit_train_step: compiled' not in logs[1]
