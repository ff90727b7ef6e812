"""JAX's persistent compilation cache for the commands that train, evaluate or predict: a restarted job (a preempted
pod, a requeued SLURM job, a resumed run) loads its compiled steps instead of compiling them again.

`config.compile_cache` names the folder (`{workdir}` stands for the run's workdir; any path-library location, gs://
included, so every host of a job reaches it; JAX writes entries from process 0 only). '' turns it off. The environment
variable JAX_COMPILATION_CACHE_DIR, where set, wins over the config (the tests share one cache that way). The log
names the folder, and for each of the loop's steps whether its program came from the cache or was compiled.
"""
import logging as std_logging
import os
from typing import Optional

from absl import logging

ENV = 'JAX_COMPILATION_CACHE_DIR'
# JAX logs its cache hits and misses at DEBUG on this logger; the filter below lifts the steps' lines to INFO.
_JAX_LOGGER = 'jax._src.compiler'
_HIT, _MISS = 'Persistent compilation cache hit for', 'PERSISTENT COMPILATION CACHE MISS for'


def folder(setting: str, workdir: str) -> Optional[str]:
  """The cache folder a config's `compile_cache` names for `workdir` (None: off)."""
  if not setting:
    return None
  return setting.replace('{workdir}', str(workdir).rstrip('/'))


class _StepLines(std_logging.Filter):
  """Passes JAX's compiler log as before, with the cache hit or miss of a step program (module name `jit_*step*`)
  rewritten as one INFO line."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno >= std_logging.INFO:
      return True
    message = record.getMessage()
    for prefix, outcome in ((_HIT, 'loaded from the compilation cache'), (_MISS, 'compiled (not in the cache yet)')):
      if message.startswith(prefix):
        module = message[len(prefix):].split("'")[1]
        if 'step' not in module:
          return False
        record.msg, record.args, record.levelno, record.levelname = f'{module}: {outcome}', (), std_logging.INFO, 'INFO'
        return True
    return False


def enable(setting: str, workdir: str) -> Optional[str]:
  """Turns the cache on at the config's folder (or the environment's) before anything compiles; returns the folder."""
  import jax  # pylint: disable=import-outside-toplevel
  path = os.environ.get(ENV) or folder(setting, workdir)
  source = f'the environment ({ENV})' if os.environ.get(ENV) else '--config.compile_cache'
  if not path:
    logging.info('Compilation cache: off (--config.compile_cache is empty).')
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  # A step on several devices carries the CPU kernels' partitioning rule (jax.experimental.custom_partitioning) as a
  # Python object's address, different in every process: without this no restart would find its steps. The rule is
  # code (inception/models/winograd.py), and the program's text keeps its sharding rule, so equal keys mean equal rules.
  jax.config.update('jax_remove_custom_partitioning_ptr_from_cache_key', True)
  logger = std_logging.getLogger(_JAX_LOGGER)
  if not any(isinstance(f, _StepLines) for f in logger.filters):
    logger.addFilter(_StepLines())
    logger.setLevel(std_logging.DEBUG)  # the filter drops every other DEBUG line
  logging.info('Compilation cache: %s (from %s); programs that compile in over %.1f s are kept.', path, source,
               jax.config.jax_persistent_cache_min_compile_time_secs)
  return path
