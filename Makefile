# The two commands a newcomer needs: `make lab` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup lab test lint figures bench clean

# Python environment: rebuilt only when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

# Toolchain, guest, models and images; each step skips what is already done.
setup: $(STAMP)
	$(PY) -m wasi_lab setup

# JupyterLab refuses to run as root unless told; containers and CI machines often are root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(ALLOW_ROOT)

test: setup
	$(PY) -m wasi_lab setup --test-deps
	$(VENV)/bin/ruff check wasi_lab tests benchmarks notebooks
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check wasi_lab tests benchmarks notebooks

figures: setup
	$(PY) -m wasi_lab figures

bench: setup
	$(PY) -m wasi_lab bench

clean:
	rm -rf guest/target guest/prebuilt/__wasmcache__ .pytest_cache
