"""The measurement scripts in benchmarks/ run and print what benchmarks/README.md quotes.

Short forms only: one turn, a few rounds. Their timings are not checked (they move with the
machine's load); their structure and the correctness parts are.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from wasi_lab.build import PREBUILT_MODULE

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_modules_prints_each_op_and_the_outputs_agree(tmp_path: Path, capsys) -> None:
    copy = tmp_path / "copy.wasm"
    shutil.copyfile(PREBUILT_MODULE, copy)
    assert load("compare_modules").main([str(PREBUILT_MODULE), str(copy), "--turns", "1"]) == 0
    out = capsys.readouterr().out
    for op in ("Conv 1x1", "Depthwise 3x3", "MatMul", "sum of step minima", "wall median"):
        assert re.search(rf"^{op}\s+\d+\.\d\d\s+\d+\.\d\d$", out, re.M), op
    # The same module twice: identical outputs.
    assert re.search(r"^max abs diff vs first\s+0\.0e\+00\s+0\.0e\+00$", out, re.M)


def test_kernel_loops_times_every_variant(capsys) -> None:
    kl = load("kernel_loops")
    assert kl.main(["--k", "16", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for name, (_, _, _, macs) in kl.VARIANTS.items():
        m = re.search(rf"^{re.escape(name)}\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d+\.\d\d)$", out, re.M)
        assert m, name
        cycles, per_cycle = float(m.group(1)), float(m.group(2))
        assert cycles > 0 and per_cycle == pytest.approx(macs / cycles, rel=0.01, abs=0.01)
    assert re.search(r"4x8 shuffles \(guest\)\s+\S+\s+\S+\s+1\.00$", out, re.M)
