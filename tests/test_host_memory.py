"""The host memory settings (inception/host_memory.py): which environments get them, and that a command computing
steps on XLA:CPU really comes back with them (inception/command.py restarts it), its arguments intact, a malloc that
reuses big blocks, and the caller's environment for the processes it starts. When commands restart:
tests/test_command.py."""
import os
import subprocess
import sys

import pytest

from inception import host_memory


def test_the_tunable_is_added_once_and_a_user_setting_is_kept():
  assert host_memory.tunables_with_huge_pages({}) == 'glibc.malloc.hugetlb=1'
  assert host_memory.tunables_with_huge_pages({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}) == (
      'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1')
  assert host_memory.tunables_with_huge_pages({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}) is None  # opted out
  assert host_memory.tunables_with_huge_pages({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}) is None  # restarted


def test_the_kernel_mode_is_the_bracketed_word(tmp_path):
  mode = tmp_path / 'enabled'
  mode.write_text('always [madvise] never\n')
  assert host_memory.thp_mode(str(mode)) == 'madvise'
  mode.write_text('[always] madvise never\n')
  assert host_memory.thp_mode(str(mode)) == 'always'
  assert host_memory.thp_mode(str(tmp_path / 'missing')) is None


def test_tbb_malloc_is_preloaded_unless_the_environment_decides():
  libs = ['/x/libtbbmalloc.so.2', '/x/libtbbmalloc_proxy.so.2']
  assert host_memory.malloc_settings({}, libs, on_cpu=True) == {
      'LD_PRELOAD': '/x/libtbbmalloc.so.2:/x/libtbbmalloc_proxy.so.2', 'TBB_MALLOC_SET_HUGE_SIZE_THRESHOLD': '1048576'}
  assert host_memory.malloc_settings({'TBB_MALLOC_SET_HUGE_SIZE_THRESHOLD': '4096'}, libs, on_cpu=True)[
      'TBB_MALLOC_SET_HUGE_SIZE_THRESHOLD'] == '4096'
  users_own = {'LD_PRELOAD': '/usr/lib/libjemalloc.so'}
  assert host_memory.malloc_settings(users_own, libs, on_cpu=True) == {}
  assert host_memory.malloc_settings({'INCEPTION_MALLOC': 'system'}, libs, on_cpu=True) == {}  # opted out
  assert host_memory.malloc_settings({}, None, on_cpu=True) == {}  # no tbb package
  assert host_memory.malloc_settings({}, libs, on_cpu=False) == {}  # an accelerator's host: its input pipeline
  with pytest.raises(SystemExit, match="INCEPTION_MALLOC='jemalloc': use tbb"):
    host_memory.malloc_settings({'INCEPTION_MALLOC': 'jemalloc'}, libs, on_cpu=True)


def test_the_backend_is_cpu_where_jax_platforms_says_so_or_no_accelerator_plugin_is_installed():
  assert host_memory.computes_on_cpu({}, [])
  assert not host_memory.computes_on_cpu({}, ['xla_cuda12'])
  assert host_memory.computes_on_cpu({'JAX_PLATFORMS': 'cpu'}, ['libtpu'])
  assert not host_memory.computes_on_cpu({'JAX_PLATFORMS': 'cuda,cpu'}, [])
  assert host_memory.computes_on_cpu({'JAX_PLATFORMS': ' cpu '}, ['xla_cuda12'])


def test_a_restart_is_recorded_and_undone(tmp_path):
  caller = {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2', 'PATH': '/bin'}
  settings = {'LD_PRELOAD': '/x/a.so', 'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'}
  restarted = host_memory.restart_environment(caller, settings)
  assert {k: v for k, v in restarted.items() if k != host_memory.RESTART_MARK} == {**caller, **settings}
  assert host_memory.undo_restart(restarted) == settings and restarted == caller
  assert host_memory.undo_restart(restarted) == {}  # not a restart: nothing changes
  environ = tmp_path / 'environ'
  environ.write_bytes(b'A=1\0GLIBC_TUNABLES=glibc.malloc.hugetlb=1\0EMPTY=\0')
  assert host_memory.started_environment(str(environ)) == {'A': '1', 'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1',
                                                           'EMPTY': ''}


def test_the_log_line_names_the_malloc_mapped_and_the_tunable(tmp_path):
  maps = tmp_path / 'maps'
  maps.write_text('7f00-7f01 r-xp 0 08:01 1 /venv/lib/libtbbmalloc_proxy.so.2\n'
                  '7f02-7f03 r-xp 0 08:01 2 /lib/libc.so.6\n')
  env = {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'}
  assert host_memory.describe(str(maps), env) == 'host memory: oneTBB malloc, glibc.malloc.hugetlb=1'
  maps.write_text('7f02-7f03 r-xp 0 08:01 2 /lib/libc.so.6\n')
  assert host_memory.describe(str(maps), {}) == 'host memory: system malloc, glibc.malloc.hugetlb=unset'


# A command computing steps, after the restart: the tunable it started with, its malloc, how many pages a freed and
# reallocated 64 MiB block faults in, what a process it starts finds in LD_PRELOAD and GLIBC_TUNABLES, its arguments.
PROBE = """
import ctypes, os, resource, subprocess, sys
from inception import command, host_memory

def main(argv):
  libc = ctypes.CDLL(None)
  libc.malloc.restype = ctypes.c_void_p
  libc.free.argtypes = [ctypes.c_void_p]
  size = 64 << 20
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(block)
  block = libc.malloc(size)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  ctypes.memset(block, 2, size)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
  malloc = 'tbb' if 'libtbbmalloc_proxy' in open('/proc/self/maps').read() else 'glibc'
  child = subprocess.run(['sh', '-c', 'echo "${LD_PRELOAD:--}|${GLIBC_TUNABLES:--}"'], capture_output=True, text=True)
  tunables = host_memory.started_environment().get('GLIBC_TUNABLES', '')
  print(tunables or '-', malloc, faults, child.stdout.strip(), argv[1:])

command.run(main, computes_steps=True)
"""


def _probe(env, *args):
  out = subprocess.run([sys.executable, '-c', PROBE, *args], env=env, capture_output=True, text=True, check=True)
  tunables, malloc, faults, child, rest = out.stdout.strip().split(' ', 4)
  assert child == f'-|{env.get("GLIBC_TUNABLES", "-")}'  # the children get the caller's environment back
  return ('' if tunables == '-' else tunables), malloc, int(faults), rest


def _clean_env(**extra):
  drop = ('GLIBC_TUNABLES', 'LD_PRELOAD', 'INCEPTION_MALLOC', 'TBB_MALLOC_SET_HUGE_SIZE_THRESHOLD')
  return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


@pytest.mark.skipif(host_memory.tbb_malloc_libraries() is None, reason='no tbb package (Linux x86-64 only)')
def test_a_command_restarts_with_tbb_malloc_which_reuses_big_blocks():
  tunables, malloc, faults, args = _probe(_clean_env(), 'a', 'b c')
  assert malloc == 'tbb' and args == "['a', 'b c']"
  assert faults < 64, faults  # the freed block came back already mapped
  tunables, malloc, faults, _ = _probe(_clean_env(INCEPTION_MALLOC='system', GLIBC_TUNABLES=f'{host_memory.TUNABLE}=0'))
  assert malloc == 'glibc' and faults >= 1000, faults  # glibc unmapped it: 16,384 fresh 4 KiB pages
  tunables, malloc, _, _ = _probe(_clean_env(JAX_PLATFORMS='cuda'))
  assert (tunables, malloc) == ('', 'glibc')  # steps on an accelerator: no restart at all


@pytest.mark.skipif(not (host_memory.thp_mode() == 'madvise' and host_memory.glibc_has_hugetlb_tunable()),
                    reason='no glibc 2.35+ or the kernel is not in madvise mode')
def test_a_command_restarts_with_the_tunable_and_its_arguments():
  tunables, _, _, args = _probe(_clean_env(INCEPTION_MALLOC='system'), 'a', 'b c')
  assert (tunables, args) == ('glibc.malloc.hugetlb=1', "['a', 'b c']")
  tunables, _, _, args = _probe(_clean_env(INCEPTION_MALLOC='system', GLIBC_TUNABLES='glibc.malloc.hugetlb=0'))
  assert (tunables, args) == ('glibc.malloc.hugetlb=0', '[]')
