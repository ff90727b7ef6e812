#!/usr/bin/env bash
# Installs what tests/services needs (run as root; `make install-test-services`, and CI before `make test-slow`).
set -euo pipefail
cd "$(dirname "$0")/../.."

# SLURM: a one-node cluster for tests/services/slurm.py (controller, node daemon, client commands, munge for auth).
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
