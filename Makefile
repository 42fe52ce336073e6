# Two commands do everything: `make distill` and `make test` (each runs the idempotent set-up first).
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup data distill test lint bench clean

setup:
	@VENV=$(VENV) bash scripts/setup.sh

data: setup

distill: setup
	$(PY) mnist_distill.py $(ARGS)

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs .pytest_cache .ruff_cache
