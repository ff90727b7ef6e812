#!/usr/bin/env bash
# Installs what tests/services needs (run as root; `make install-test-services`, and CI before `make test-slow`).
set -euo pipefail
cd "$(dirname "$0")/../.."
