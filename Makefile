# The two commands a newcomer needs: `make lab` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# One stamp per install level, so a workshop venv is upgraded in place by `make test` (and
# `make bench`) instead of being rebuilt; each is redone when pyproject.toml changes.
LAB_STAMP   := $(VENV)/.installed-lab
BENCH_STAMP := $(VENV)/.installed-bench
TEST_STAMP  := $(VENV)/.installed-test

.PHONY: setup lab test lint figures bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

# The workshop: pyproject's dependencies only (no test tools, no benchmark peers).
$(LAB_STAMP): pyproject.toml | $(PY)
	$(VENV)/bin/pip install -q -e .
	touch $@

# The benchmark's peers on top: ONNX, ONNX Runtime, tract.
$(BENCH_STAMP): pyproject.toml | $(PY)
	$(VENV)/bin/pip install -q -e '.[bench]'
	touch $@ $(LAB_STAMP)

# Everything (dev includes bench); a test venv is a workshop and a bench venv too.
$(TEST_STAMP): pyproject.toml | $(PY)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@ $(BENCH_STAMP) $(LAB_STAMP)

# Toolchain, guest, models and images; each step skips what is already done.
setup: $(LAB_STAMP)
	$(PY) -m wasi_lab setup

# `wasi-lab lab` runs the setup, then JupyterLab on notebooks/ (with --allow-root as root):
# the same command learners without make use.
lab: $(LAB_STAMP)
	$(PY) -m wasi_lab lab

# The linters: ruff check, and the format checks (`ruff format --check`, `cargo fmt --check`
# on the guest) that `make lint` and `make test` enforce. Fix a failure with
# `.venv/bin/ruff format $(LINT_PY)` and `cargo fmt --manifest-path guest/Cargo.toml`;
# `make lint FORMAT_CHECK=0` runs ruff check alone (a machine without rustfmt). Clippy needs
# rustup's stable (Debian's 1.63 has none): tests/test_rust_toolchains.py runs it in `make test`.
FORMAT_CHECK ?= 1
LINT_PY := wasi_lab tests benchmarks notebooks setup.py
define LINT
$(VENV)/bin/ruff check $(LINT_PY)
$(if $(filter 1,$(FORMAT_CHECK)),$(VENV)/bin/ruff format --check $(LINT_PY))
$(if $(filter 1,$(FORMAT_CHECK)),cargo fmt --manifest-path guest/Cargo.toml --check)
endef

test: $(TEST_STAMP)
	$(PY) -m wasi_lab setup
	$(PY) -m wasi_lab setup --test-deps
	$(LINT)
	$(VENV)/bin/pytest -q

lint: $(TEST_STAMP)
	$(LINT)

figures: setup
	$(PY) -m wasi_lab figures

bench: $(BENCH_STAMP)
	$(PY) -m wasi_lab setup
	$(PY) -m wasi_lab bench

clean:
	rm -rf guest/target guest/prebuilt/__wasmcache__ .pytest_cache
