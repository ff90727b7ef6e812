"""Command line: `python -m inception.main --config=configs/googlenet.py[:variant] [--config.key=value ...]`.

Exit codes (inception/command.py): 0 done; 1 an error (an expected one is a single line naming the problem and the
fix); 75 stopped by SIGTERM/SIGINT after saving a checkpoint at the current step (run the same command again to
resume). On a host whose XLA:CPU computes the steps the command restarts itself once with host memory settings first
(inception/command.py).

Multi-host: add `--distributed` on every process. On TPU VM pods and under SLURM JAX finds the coordinator itself;
elsewhere pass `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or the JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID variables). `python -m launch.local` runs several processes on this machine; see
launch/ for TPU pods and SLURM.
"""
import logging as std_logging
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')  # before TensorFlow (tf.data) loads: its C++ INFO lines are noise

from absl import app, flags, logging
from ml_collections import config_flags

from inception import command, host_memory

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/googlenet.py:mini.',
                                          lock_config=True)
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'Join a multi-process job (jax.distributed.initialize).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'With --distributed: process 0\'s HOST:PORT.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'With --distributed: how many processes in all.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'With --distributed: this process\'s index.')


def _quiet_libraries(record: std_logging.LogRecord) -> bool:
  """Drops orbax's per-save INFO chatter from the console; its warnings and errors still show."""
  return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_quiet_libraries)
  from inception import preemption  # no jax: from here on (imports and joining included) a signal stops the run at
  preemption.catch_signals()        # a step every process agrees on, with exit code 75
  import jax  # after flag parsing, so --help is fast
  from inception import compile_cache, distributed, train
  from inception.data import sources
  from inception.models import ops

  if _DISTRIBUTED.value:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif any(f.present for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)):
    raise app.UsageError('--coordinator_address, --num_processes and --process_id need --distributed.')
  logging.info('JAX %s: process %d of %d, %d local / %d global devices (%s).', jax.__version__, jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)
  logging.info('%s (inception/host_memory.py).', host_memory.describe())
  logging.info('%s (inception/models/ops.py).', ops.describe(ops.setting(_CONFIG.value), jax.default_backend()))
  compile_cache.enable(_CONFIG.value.compile_cache, _CONFIG.value.workdir)
  try:
    results = train.train_and_evaluate(_CONFIG.value)
  except sources.DatasetNotPreparedError as e:
    sys.exit(f'{e}\nTo train on the embedded Caltech 101 subset instead: `make train`, i.e. '
             f'python -m inception.main --config=configs/googlenet.py:mini')
  except preemption.Preempted as e:
    logging.warning('%s', e)
    return command.EXIT_PREEMPTED
  if jax.process_index() == 0:
    print(train.final_line(results), flush=True)


def run():
  """The command (inception/command.py): `--config.*` overrides checked first; it computes steps."""
  command.run(main, computes_steps=True, check_config=True)


if __name__ == '__main__':
  run()
