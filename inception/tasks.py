"""What the training loop trains a model to do, by name from `config.task`: the loss its train step minimises, and
what the run keeps of it in the workdir.

'classification' (the default: a config without `task` means it) is the project's classifier training, exactly as
steps.make_train_step has always computed it. 'multibox' (inception/detection/multibox_task.py) trains MultiBox's
box proposals. Everything else of the loop (data parallelism, optimizer, EMA, checkpoints, preemption, metrics) is the
same for every task. A task is built once per run, after the data source and before the model:
`TASKS.get(name)(config, source, workdir, resuming)`, and has

  loss(outputs, aux_outputs, batch) -> (loss to minimise, metrics with 'loss')   (steps.TaskLoss; traced in the step)
  write_files(workdir)   files the run keeps beside config.json (process 0 calls it)
"""
import ml_collections

from inception import steps
from inception.config_checks import ConfigError
from inception.registry import Registry

TASKS = Registry('task')
DEFAULT = 'classification'


def build(config: ml_collections.ConfigDict, source, workdir, resuming: bool):
  """The task `config.task` names (DEFAULT where the config has no such key); ConfigError for an unknown one."""
  name = config.get('task', DEFAULT)
  if name not in TASKS:
    raise ConfigError(f'--config.task={name!r}: unknown task; known: {", ".join(TASKS.names())}.')
  return TASKS.get(name)(config, source, workdir, resuming)


@TASKS.register('classification')
class Classification:
  """Softmax cross-entropy on the labels (steps.classification_loss); nothing more in the workdir."""

  def __init__(self, config: ml_collections.ConfigDict, source, workdir, resuming: bool):
    del source, workdir, resuming
    self.loss = steps.classification_loss(config)

  def write_files(self, workdir) -> None:
    del workdir


from inception.detection import multibox_task  # noqa: E402,F401  pylint: disable=g-import-not-at-top  (registers it)
