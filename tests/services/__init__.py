"""Real services the at-scale tests run against on one machine: a one-node SLURM cluster (slurm.py) and a Cloud
Storage emulator (gcs.py). `make install-test-services` (tests/services/install.sh) installs what they need.

Where a developer's machine cannot run one (not root, packages absent), its tests skip with the reason; under CI
(`CI=true`) that skip is a failure, so CI always runs them.
"""
import os

import pytest


def unavailable(reason: str) -> None:
  """Skips the calling test (or fixture) because a service cannot run here; fails it under CI=true."""
  message = f'{reason} (make install-test-services installs what the service tests need)'
  if os.environ.get('CI', '').lower() == 'true':
    pytest.fail(f'CI=true, and a service test cannot run: {message}', pytrace=False)
  pytest.skip(message)
