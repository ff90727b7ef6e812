"""Expected failures a user can act on: the command line prints their message (problem and fix) instead of a traceback.

Each part of the package raises its own subclass (config, data, workdir, checkpoint); anything else is a bug and keeps
its traceback.
"""


class UserError(ValueError):
  """A problem with what the user asked for (config, data, workdir); the message names it and says how to fix it."""


class DataError(UserError):
  """The dataset cannot be trained on as it is (missing, empty, undecodable)."""


class WorkdirError(UserError):
  """The workdir cannot be used: unwritable, or it holds a run this config cannot continue."""


class CheckpointError(UserError):
  """No checkpoint in the workdir can be restored, or one cannot be written."""


class DivergedError(UserError):
  """Training produced a non-finite loss or gradient (config.nan_policy='stop'); no checkpoint holds the bad state."""
