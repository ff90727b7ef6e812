"""Host memory settings for the commands whose steps XLA:CPU computes: oneTBB's malloc, which keeps freed big blocks
for reuse, and transparent huge pages for glibc's. Such a command restarts itself once with them in its environment
(inception/command.py decides when; docs/performance.md has the figures); this module only computes them.

XLA:CPU allocates each step's temporaries (1.5 GB for GoogLeNet's 224 px train step at batch 32) afresh on every
execution. glibc hands such sizes to `mmap` and back to the kernel on free, so every step faults in and zeroes them
again: with 4 KiB pages a fifth of the step's CPU time went to the kernel, with huge pages (glibc's
`glibc.malloc.hugetlb=1`) still a seventh. oneTBB's allocator (the `tbb` package), preloaded in place of glibc's
malloc and told to keep blocks of 1 MiB and more, hands the same blocks back step after step. The loader and glibc
read these settings only when a process starts, hence the restart. Nothing computed changes.

Both settings apply only where XLA:CPU computes the steps (no accelerator plugin for jax installed, or `JAX_PLATFORMS`
starting with cpu): on an accelerator's host the process mostly runs the input pipeline, which oneTBB's malloc
slowed by 8%, and huge pages were never measured there. Left as they are: a `GLIBC_TUNABLES` that names
`glibc.malloc.hugetlb` (`=0` opts out of huge pages), a set `LD_PRELOAD` (the user's own allocator),
`INCEPTION_MALLOC=system` (glibc's malloc), and every system where a setting would do nothing (no glibc 2.35+, a
kernel with huge pages `always` or `never`, no `tbb` package). The restart records in RESTART_MARK what it changed, so
that the restarted process can give its children the environment its caller gave it (undo_restart).
"""
import importlib.metadata
import importlib.util
import json
import os
import pkgutil
import platform
from typing import Dict, List, Mapping, MutableMapping, Optional

TUNABLE = 'glibc.malloc.hugetlb'
THP_MODE = '/sys/kernel/mm/transparent_hugepage/enabled'
MALLOC_CHOICE = 'INCEPTION_MALLOC'  # 'tbb' (default where installed) or 'system'
TBB_LIBRARIES = ('libtbbmalloc.so.2', 'libtbbmalloc_proxy.so.2')  # the allocator, then the proxy that needs it
TBB_KEEP_FROM = 'TBB_MALLOC_SET_HUGE_SIZE_THRESHOLD'  # blocks this large or larger stay with the allocator on free
KEEP_FROM_BYTES = 1 << 20
RESTART_MARK = 'INCEPTION_RESTARTED'  # set by the restart: JSON {variable: its value before the restart, or null}


def thp_mode(path: str = THP_MODE) -> Optional[str]:
  """The kernel's transparent-huge-page mode ('always', 'madvise', 'never'), or None where it has none."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  chosen = [word[1:-1] for word in text.split() if word.startswith('[')]
  return chosen[0] if chosen else None


def glibc_has_hugetlb_tunable() -> bool:
  """Whether this interpreter runs on glibc 2.35 or later, the first with the tunable."""
  name, version = platform.libc_ver()
  try:
    return name == 'glibc' and tuple(int(p) for p in version.split('.')[:2]) >= (2, 35)
  except ValueError:
    return False


def glibc_tunables(env: Mapping[str, str]) -> Dict[str, str]:
  """`GLIBC_TUNABLES` ("name=value:name=value") as a dict."""
  return dict(item.partition('=')[::2] for item in env.get('GLIBC_TUNABLES', '').split(':') if item)


def tunables_with_huge_pages(env: Mapping[str, str]) -> Optional[str]:
  """The `GLIBC_TUNABLES` value to restart with, or None where the environment already decides (it names the
  tunable)."""
  if TUNABLE in glibc_tunables(env):
    return None
  return ':'.join(filter(None, [env.get('GLIBC_TUNABLES', ''), f'{TUNABLE}=1']))


def tbb_malloc_libraries() -> Optional[List[str]]:
  """The paths of oneTBB's allocator and its malloc proxy, as the installed `tbb` package holds them, or None."""
  try:
    files = importlib.metadata.files('tbb') or []
  except importlib.metadata.PackageNotFoundError:
    return None
  found = {f.name: os.path.abspath(f.locate()) for f in files if f.name in TBB_LIBRARIES}
  paths = [found.get(name) for name in TBB_LIBRARIES]
  return paths if all(p and os.path.exists(p) for p in paths) else None


def accelerator_plugins() -> List[str]:
  """The jax plugins installed for accelerators (CUDA, ROCm, TPU...), found the way jax finds them, without jax."""
  names = [entry.name for entry in importlib.metadata.entry_points(group='jax_plugins')]
  try:
    import jax_plugins  # pylint: disable=import-outside-toplevel  # a namespace package, where any plugin is installed
    names += [module.name for module in pkgutil.iter_modules(jax_plugins.__path__)]
  except ImportError:
    pass
  return names + (['libtpu'] if importlib.util.find_spec('libtpu') else [])


def computes_on_cpu(env: Mapping[str, str], plugins: List[str]) -> bool:
  """Whether jax's default backend will be XLA:CPU: `JAX_PLATFORMS` says so first, else no accelerator plugin."""
  platforms = env.get('JAX_PLATFORMS', '').strip()
  return platforms.split(',')[0].strip() == 'cpu' if platforms else not plugins


def malloc_settings(env: Mapping[str, str], libraries: Optional[List[str]], on_cpu: bool) -> Dict[str, str]:
  """The variables that preload oneTBB's malloc from `libraries` for a process computing `on_cpu`, or {} where it
  does not, where `env` already decides, or where it asks for glibc's (`INCEPTION_MALLOC=system`)."""
  choice = env.get(MALLOC_CHOICE, 'tbb')
  if choice not in ('tbb', 'system'):
    raise SystemExit(f'{MALLOC_CHOICE}={choice!r}: use tbb (oneTBB\'s malloc, the default) or system (glibc\'s).')
  if choice == 'system' or env.get('LD_PRELOAD') or not libraries or not on_cpu:
    return {}
  return {'LD_PRELOAD': ':'.join(libraries), TBB_KEEP_FROM: env.get(TBB_KEEP_FROM, str(KEEP_FROM_BYTES))}


def restart_settings(env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
  """The variables a command computing steps restarts with from environment `env` (default: this one's); {} where
  its steps run on an accelerator or none would change anything. Also what `benchmarks/compare_pytorch.py` gives the
  PyTorch runs, so both sides run alike."""
  env = os.environ if env is None else env
  if not computes_on_cpu(env, accelerator_plugins()):
    return {}
  settings = malloc_settings(env, tbb_malloc_libraries(), on_cpu=True)
  if thp_mode() == 'madvise' and glibc_has_hugetlb_tunable():
    tunables = tunables_with_huge_pages(env)
    if tunables is not None:
      settings['GLIBC_TUNABLES'] = tunables
  return settings


def restart_environment(env: Mapping[str, str], settings: Mapping[str, str]) -> Dict[str, str]:
  """The environment to restart with: `env` with `settings`, and RESTART_MARK recording the values they replace."""
  return {**env, **settings, RESTART_MARK: json.dumps({name: env.get(name) for name in settings})}


def undo_restart(environ: MutableMapping[str, str]) -> Dict[str, str]:
  """Where `environ` (os.environ) is a restart's: every variable the restart set back to its value before (unset if
  it had none) and RESTART_MARK removed; returns the settings the process was restarted with ({}: not a restart).
  The process keeps them: the loader, glibc and oneTBB read them at its start."""
  mark = environ.pop(RESTART_MARK, None)
  try:
    before = json.loads(mark) if mark else {}
  except ValueError:
    before = {}
  applied = {}
  for name, value in (before.items() if isinstance(before, dict) else ()):
    applied[name] = environ.get(name, '')
    if value is None:
      environ.pop(name, None)
    else:
      environ[name] = value
  return applied


def started_environment(path: str = '/proc/self/environ') -> Dict[str, str]:
  """The environment this process started with, as the loader and glibc read it (undo_restart changes os.environ
  later); os.environ where `path` cannot be read."""
  try:
    with open(path, 'rb') as f:
      items = f.read().split(b'\0')
  except OSError:
    return dict(os.environ)
  return dict(item.decode(errors='replace').partition('=')[::2] for item in items if item)


def describe(maps_path: str = '/proc/self/maps', env: Optional[Mapping[str, str]] = None) -> str:
  """One line for the logs: the malloc this process really runs with (read from its mapped libraries) and glibc's
  huge-page tunable (from `env`, default: the environment it started with)."""
  env = started_environment() if env is None else env
  try:
    with open(maps_path) as f:
      malloc = 'oneTBB' if 'libtbbmalloc_proxy' in f.read() else 'system'
  except OSError:
    malloc = 'unknown'
  return f'host memory: {malloc} malloc, {TUNABLE}={glibc_tunables(env).get(TUNABLE, "unset")}'
