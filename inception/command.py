"""How every command runs: its `--config.*` arguments read, the host settings applied where they pay, an expected
error printed as one line, and the exit codes. The commands call `run` (absl flags) or `run_script` (their own
argparse parser); nothing here imports jax.

Exit codes: EXIT_OK (0) done; EXIT_ERROR (1) an error: an expected one (errors.UserError, a usage error) is one line
naming the problem and the fix, anything else a traceback; EXIT_PREEMPTED (75, sysexits' EX_TEMPFAIL) stopped by
SIGTERM/SIGINT after saving a checkpoint: run the same command again to resume (the launchers relaunch on it).

Host settings (inception/host_memory.py): a command whose steps XLA:CPU computes restarts itself once, after its flags
are parsed and before its main, with oneTBB's malloc preloaded and glibc's huge pages on. Nothing else restarts:
`--help` and a flag error end while the flags are parsed; commands that compute no step (convert, report, the model
summary, the launchers and their dry runs) and processes whose steps run on an accelerator keep their environment;
a library call never restarts anything. The restarted process then puts the variables the restart set back as its
caller had them (the loader, glibc and oneTBB read them when a process starts, so this one keeps its settings): a
process it starts (the Winograd kernel's compiler, say) does not inherit the preload, and every command, a launcher's
workers and a sweep's runs included, decides for itself.

Paths on a command line are relative to the caller's directory: launch.local and launch.sweep start their commands
there (child_environment); launch.slurm makes its workdir absolute, and the jobs of launch.slurm and launch.tpu_vm run
in the checkout they were submitted from or shipped to.
"""
import argparse
import os
import sys
from typing import Any, Callable, Dict, List, NamedTuple, NoReturn, Optional, Sequence, Tuple, Union

from inception import errors, host_memory

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PREEMPTED = 75

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Override = Tuple[str, Optional[str]]  # (dotted key, its command-line text; None for a bare --config.KEY: a bool on)


class ConfigArgs(NamedTuple):
  """A command line split into its `--config` spec, its `--config.*` overrides (in order) and everything else."""
  spec: Optional[str]
  overrides: List[Override]
  rest: List[str]


def parse_config_args(args: Sequence[str]) -> ConfigArgs:
  """The one reading of `--config=SPEC` (or `--config SPEC`), `--config.KEY=VALUE` (or `--config.KEY VALUE`, or a
  bare `--config.KEY` where no value follows: a bool set on) and `--noconfig.KEY` (a bool set off) in `args`."""
  spec, overrides, rest = None, [], []
  args = list(args)
  i = 0
  while i < len(args):
    arg = args[i]
    value_follows = i + 1 < len(args) and not args[i + 1].startswith('--')
    if arg == '--config' and value_follows:
      spec, i = args[i + 1], i + 1
    elif arg.startswith('--config='):
      spec = arg[len('--config='):]
    elif arg.startswith('--config.'):
      key, eq, value = arg[len('--config.'):].partition('=')
      if not eq:
        value, i = (args[i + 1], i + 1) if value_follows else (None, i)
      overrides.append((key, value))
    elif arg.startswith('--noconfig.'):
      overrides.append((arg[len('--noconfig.'):], 'false'))
    else:
      rest.append(arg)
    i += 1
  return ConfigArgs(spec, overrides, rest)


def override_args(overrides: Sequence[Override]) -> List[str]:
  """The overrides written back as `--config.KEY=VALUE` arguments (a bare `--config.KEY` stays bare)."""
  return [f'--config.{key}' if value is None else f'--config.{key}={value}' for key, value in overrides]


def error_line(error: BaseException) -> str:
  """An expected error as the one line a command prints: `ConfigError: <the problem and the fix>`."""
  return f'{type(error).__name__}: {error}'


def _one_line_errors(main: Callable[..., Any], *args) -> Any:
  """main(*args), with an errors.UserError printed as one line and turned into EXIT_ERROR."""
  try:
    return main(*args)
  except errors.UserError as e:
    sys.stdout.flush()
    print(error_line(e), file=sys.stderr, flush=True)
    return EXIT_ERROR


def _apply_host_settings(computes_steps: bool) -> None:
  """The one place a process restarts. In a restarted process: gives its caller's environment back (for the
  processes it starts). Else, where `computes_steps` and host_memory.restart_settings() would change something (the
  steps run on XLA:CPU): restarts this process (same interpreter, same arguments) with them. Returns where it does
  not restart."""
  if host_memory.undo_restart(os.environ):
    return
  settings = host_memory.restart_settings() if computes_steps else {}
  if not settings:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
            host_memory.restart_environment(os.environ, settings))


def after_flags(main: Callable[[List[str]], Any],
                computes_steps: Union[bool, Callable[[], bool]] = False) -> Callable[[List[str]], Any]:
  """`main` as absl calls it once the flags are parsed: the host settings first (`computes_steps` may read the
  parsed flags, e.g. a benchmark of the input pipeline computes no step), then main with one-line errors."""
  def absl_main(argv: List[str]) -> Any:
    _apply_host_settings(computes_steps() if callable(computes_steps) else computes_steps)
    return _one_line_errors(main, argv)
  return absl_main


def run(main: Callable[[List[str]], Any], *, computes_steps: Union[bool, Callable[[], bool]] = False,
        check_config: bool = False, argv: Optional[Sequence[str]] = None) -> NoReturn:
  """Runs an absl command: with `check_config`, the `--config.*` overrides checked against the config file first (a
  typo is one ConfigError line, not absl's traceback); then absl parses the flags (`--help` ends there) and calls
  after_flags(main, computes_steps). main's return value is the exit code (None: EXIT_OK)."""
  from absl import app  # pylint: disable=import-outside-toplevel
  argv = list(sys.argv if argv is None else argv)
  if check_config:
    from inception import config_checks  # pylint: disable=import-outside-toplevel
    if _one_line_errors(config_checks.check_overrides, argv[1:]) is not None:  # the error's line is printed
      sys.exit(EXIT_ERROR)
  app.run(after_flags(main, computes_steps), argv=argv)  # exits with main's return value


def run_script(main: Callable[[List[str]], Optional[int]], argv: Optional[Sequence[str]] = None) -> NoReturn:
  """Runs a command that parses its own arguments (with ArgumentParser): main(args) returns the exit code (None:
  EXIT_OK), an errors.UserError is one line and EXIT_ERROR. It never restarts: such commands compute no step, and
  the processes a launcher starts decide for themselves."""
  code = _one_line_errors(main, list(sys.argv[1:] if argv is None else argv))
  sys.exit(EXIT_OK if code is None else code)


class ArgumentParser(argparse.ArgumentParser):
  """argparse for the commands that parse their own arguments: a usage error exits EXIT_ERROR, as absl's do."""

  def error(self, message: str) -> NoReturn:
    self.print_usage(sys.stderr)
    self.exit(EXIT_ERROR, f'{self.prog}: error: {message}\n')


def child_environment(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
  """The environment of a command this one starts in the caller's directory: `base` (default: this process's), with
  the repository first on PYTHONPATH, so that `-m inception.main`, `-m launch.*` and the config files' `from configs
  import ...` resolve from any directory."""
  env = dict(os.environ if base is None else base)
  env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO, env.get('PYTHONPATH')) if p)
  return env
