# Two commands on a fresh machine: `make train` (train on the embedded data) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install train test summary clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# GoogLeNet (BN variant, 112 px) on the embedded 10-class Caltech 101 subset; extra overrides via ARGS="--config.x=y".
train: install
	$(PY) -m inception.main --config=configs/googlenet.py:mini $(ARGS)

test: install
	$(PY) -m pytest -q tests $(ARGS)

summary: install
	$(PY) -m inception.models googlenet

clean:
	rm -rf runs .pytest_cache
