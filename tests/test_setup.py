"""`wasi-lab setup`'s steps as `wasi-lab lab` runs them: everything but the guest build."""

from __future__ import annotations

import time

from wasi_lab.setup import ensure_toolchain_and_build, run_setup
from wasi_lab.toolchain import find_toolchain


def test_lab_setup_finds_the_toolchain_and_leaves_the_build_to_notebook_01() -> None:
    tc = find_toolchain()
    start = time.perf_counter()
    detail = ensure_toolchain_and_build(build=False)
    assert time.perf_counter() - start < 30  # no cargo: a lookup
    assert tc.version in detail and "notebook 01 builds the guest" in detail


def test_lab_setup_runs_every_other_step() -> None:
    lines: list[str] = []
    assert run_setup(lines.append, build=False) == 0
    steps = [line.split(":")[0] for line in lines]
    # No npm step: the wasm peers' packages are for tests and `bench --wasm-peers` only.
    assert steps == ["[setup] toolchain", "[setup] models", "[setup] images"], lines
