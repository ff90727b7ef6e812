#!/usr/bin/env bash
# Launch on a Cloud TPU VM pod slice (e.g. v4-32): the same command on every worker; jax.distributed.initialize()
# finds the coordinator from the TPU metadata. ImageNet must be prepared where TFDS can read it (a GCS bucket works:
# --config.data.tfds_data_dir=gs://BUCKET/tensorflow_datasets), and the workdir should be on GCS so every host
# writes the same checkpoints.
#
#   TPU_NAME=my-pod ZONE=us-central2-b WORKDIR=gs://BUCKET/runs/googlenet launch/tpu_vm_pod.sh [--config.x=y ...]
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR (gs://... so all hosts share it)}"
REPO=${REPO:-https://github.com/YOUR_ORG/inception.git}
CONFIG=${CONFIG:-configs/googlenet.py}

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  set -e
  [ -d inception ] || git clone $REPO inception
  cd inception
  [ -d .venv ] || (python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt && \
                   .venv/bin/pip install -q -U 'jax[tpu]' && .venv/bin/pip install -q --no-deps -e .)
  .venv/bin/python -m inception.main --config=$CONFIG --config.workdir=$WORKDIR --distributed $*
"
