# Two commands on a fresh machine: `make train` (train on the embedded data) and `make test`.
# Both install requirements.lock (exact versions) into .venv first; `make lock` regenerates it from requirements.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The Winograd 3x3 and 5x5 convolutions for CPUs (inception/models/winograd.py), compiled against the installed
# jaxlib's FFI headers; without a C++ compiler it is left out with a warning and the models use XLA's convolutions.
KERNEL_DIR := inception/models/kernels
KERNEL := $(KERNEL_DIR)/_winograd.so
ARGS ?=

UV := $(VENV)/bin/uv
# The lock is for CPython 3.11 on Linux x86-64 (CPU jax); accelerator builds are added on top (README, "Installing").
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28

.PHONY: install install-cuda install-tpu install-test-services lock train test test-slow test-detection summary clean

install: $(STAMP) $(KERNEL)

$(KERNEL): $(STAMP) $(wildcard $(KERNEL_DIR)/*.cc $(KERNEL_DIR)/*.h) $(KERNEL_DIR)/build.py
	$(PY) -m inception.models.kernels.build

# uv (itself pinned in the lock) installs exactly the lock: `uv pip sync` also removes anything not in it.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$$(grep '^uv==' requirements.lock)"
	$(UV) pip sync -q --python $(PY) requirements.lock
	$(UV) pip install -q --python $(PY) --no-deps -e .
	touch $(STAMP)

# Accelerator builds of the locked jax on top of the lock (everything else stays at its locked version).
JAX_VERSION = $(shell sed -n 's/^jax==//p' requirements.lock)
install-cuda: install
	$(UV) pip install -q --python $(PY) -c requirements.lock "jax[cuda12]==$(JAX_VERSION)"
install-tpu: install
	$(UV) pip install -q --python $(PY) -c requirements.lock "jax[tpu]==$(JAX_VERSION)"

# Re-resolves requirements.txt into requirements.lock, keeping the locked versions that still fit the ranges.
# Upgrade one package: `make lock ARGS="--upgrade-package jax"`; everything: `make lock ARGS=--upgrade`.
lock:
	[ -x $(UV) ] || ($(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q uv)
	$(UV) pip compile -q requirements.txt -o requirements.lock $(LOCK_TARGET) $(ARGS)

# GoogLeNet (BN variant, 112 px) on the embedded 10-class Caltech 101 subset; extra overrides via ARGS="--config.x=y".
train: install
	$(PY) -m inception.main --config=configs/googlenet.py:mini $(ARGS)

# The suite without the tests marked slow (multi-process kill-and-resume, a real sweep, ...); CI runs both targets.
# Both spread their tests over 2 pytest-xdist workers (tests sharing a costly module fixture carry one xdist_group).
# Timings: README, "The two commands".
test: install
	$(PY) -m pytest -q tests -m "not slow" -n 2 --dist loadgroup $(ARGS)

test-slow: install
	$(PY) -m pytest -q tests -m slow -n 2 --dist loadgroup $(ARGS)

# The README's :bccd detection commands on all of BCCD alone (tests/test_detect.py; also part of make test-slow).
test-detection: install
	$(PY) -m pytest -q tests/test_detect.py -m slow $(ARGS)

# The real services of tests/services (a one-node SLURM cluster, a Cloud Storage emulator); needs root.
install-test-services: install
	tests/services/install.sh

summary: install
	$(PY) -m inception.models googlenet

clean:
	rm -rf runs .pytest_cache
