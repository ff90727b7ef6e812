"""The restart with glibc's huge-page tunable (inception/host_memory.py): which environments restart, and that a
command really comes back with the tunable set and its arguments intact."""
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


PROBE = ('import os, sys; from inception import host_memory; host_memory.restart_with_huge_pages(); '
         'print(os.environ.get("GLIBC_TUNABLES", ""), sys.argv[1:])')


@pytest.mark.skipif(not host_memory.would_restart({}), reason='no glibc 2.35+ or the kernel is not in madvise mode')
def test_a_command_restarts_with_the_tunable_and_its_arguments():
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  out = subprocess.run([sys.executable, '-c', PROBE, 'a', '--b=c'], env=env, capture_output=True, text=True,
                       check=True).stdout
  assert out.strip() == "glibc.malloc.hugetlb=1 ['a', '--b=c']"
  env['GLIBC_TUNABLES'] = 'glibc.malloc.hugetlb=0'
  out = subprocess.run([sys.executable, '-c', PROBE], env=env, capture_output=True, text=True, check=True).stdout
  assert out.strip() == 'glibc.malloc.hugetlb=0 []'
