"""Transparent huge pages for the host's big buffers: the commands restart themselves once with glibc's
`glibc.malloc.hugetlb=1` tunable where the kernel gives huge pages only on request (docs/performance.md).

XLA:CPU allocates each step's temporaries (1.5 GB for GoogLeNet's 224 px train step at batch 32) afresh on every
execution, and glibc hands such sizes to `mmap`, so every step faulted in some 400,000 zeroed 4 KiB pages: a fifth
of the step's CPU time went to the kernel. With the tunable, glibc asks for huge pages on those mappings (2 MiB, 512x
fewer faults). glibc reads its tunables when the process starts, hence the restart. It changes no result.

A `GLIBC_TUNABLES` that already names `glibc.malloc.hugetlb` is left as it is (`glibc.malloc.hugetlb=0` opts out),
as is every system where it would do nothing: no glibc 2.35+, or a kernel with huge pages `always` or `never`.
"""
import os
import platform
import sys
from typing import Mapping, Optional

TUNABLE = 'glibc.malloc.hugetlb'
THP_MODE = '/sys/kernel/mm/transparent_hugepage/enabled'


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


def tunables_with_huge_pages(env: Mapping[str, str]) -> Optional[str]:
  """The `GLIBC_TUNABLES` value to restart with, or None where the environment already decides (it names the
  tunable)."""
  current = env.get('GLIBC_TUNABLES', '')
  if any(item.split('=')[0] == TUNABLE for item in current.split(':') if item):
    return None
  return ':'.join(filter(None, [current, f'{TUNABLE}=1']))


def would_restart(env: Optional[Mapping[str, str]] = None) -> bool:
  """Whether `restart_with_huge_pages` restarts a process with environment `env` (default: this one's)."""
  env = os.environ if env is None else env
  return thp_mode() == 'madvise' and glibc_has_hugetlb_tunable() and tunables_with_huge_pages(env) is not None


def restart_with_huge_pages() -> None:
  """Restarts this command (same interpreter, same arguments) with the tunable set, where it would change something;
  returns where it would not. Called first by each command's `run()`, never inside a library call."""
  if not would_restart():
    return
  tunables = tunables_with_huge_pages(os.environ)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, 'GLIBC_TUNABLES': tunables})
