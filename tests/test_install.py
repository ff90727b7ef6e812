"""The virtualenv holds exactly requirements.lock (what `make install` promises), and the lock covers requirements.txt."""
import importlib.metadata
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Installed alongside the lock, not from it: the installer's own bootstrap and the project itself (editable).
NOT_LOCKED = {'pip', 'inception'}


def normalize(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def read_lock():
  pins = {}
  with open(os.path.join(REPO, 'requirements.lock')) as f:
    for line in f:
      match = re.match(r'^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)', line)
      if match:
        pins[normalize(match.group(1))] = match.group(2)
  return pins


def test_lock_pins_every_range_of_requirements_txt():
  pins = read_lock()
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    names = [normalize(re.split(r'[<>=\[ ;#]', line.strip())[0]) for line in f
             if line.strip() and not line.startswith('#')]
  assert names and not [n for n in names if n not in pins]


@pytest.mark.skipif(os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(REPO, '.venv')),
                    reason='checks the virtualenv that `make install` builds (.venv); run through `make test`')
def test_virtualenv_holds_exactly_the_lock():
  pins = read_lock()
  installed = {normalize(d.metadata['Name']): d.version for d in importlib.metadata.distributions()}
  for name in NOT_LOCKED:
    installed.pop(name, None)
  assert {n: v for n, v in installed.items() if pins.get(n) != v} == {}, 'installed but not as locked'
  assert sorted(set(pins) - set(installed)) == [], 'locked but not installed'
