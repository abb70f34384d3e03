"""The benchmark runs in a short mode and compares every engine's output (not its speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def test_bench_short_mode_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wasi_lab", "bench", "--json", "--repeat", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    for key in (
        "model",
        "guest_ms",
        "tract_ms",
        "ort_1t_ms",
        "ort_ms",
        "ratios",
        "compile_cold_ms",
        "compile_cached_ms",
        "instantiate_ms",
        "model_load_ms",
        "max_abs_diff",
        "skipped",
    ):
        assert key in res, key
    assert set(res["ratios"]) >= {"guest_vs_tract", "guest_vs_ort_1t"}
    assert res["guest_ms"] > 0 and res["instantiate_ms"] > 0
    assert res["skipped"] == [], res["skipped"]  # the dev extras install every peer
    assert 0 < res["max_abs_diff"] <= 1e-4  # engines differ in float rounding, never more
    assert set(res["diffs"]) == {"tract", "ort_1t", "ort"}
    assert 0.05 < res["guest_skipped_macs_share"] < 0.3  # Grace Hopper: about 15 %


def _result(**peers: float | None):
    from wasi_lab.bench import BenchResult

    kw = {"tract_ms": None, "ort_1t_ms": None, "ort_ms": None, **peers}
    return BenchResult(
        model="efficientnet-lite0",
        module="m.wasm",
        repeat=10,
        guest_ms=30.0,
        guest_p90_ms=33.0,
        compile_cold_ms=1000.0,
        compile_cached_ms=1.0,
        instantiate_ms=0.3,
        model_load_ms=100.0,
        decode_ms=10.0,
        peak_pages={"after_load": 1, "after_infer": 1},
        max_abs_diff=1e-6,
        diffs={k.removesuffix("_ms"): 1e-6 for k, v in peers.items() if v},
        **kw,
    )


def test_compare_sentences_follow_the_ratios() -> None:
    from wasi_lab.bench import compare_sentences

    text = "\n".join(compare_sentences(_result(tract_ms=40.0, ort_1t_ms=12.0)))
    assert "0.75x its time: the guest is faster" in text
    assert "2.50x its time: the guest is slower" in text
    assert "default threads" not in text  # not measured: no sentence


def test_a_run_without_peers_says_so_in_one_line(monkeypatch) -> None:
    from wasi_lab import bench

    monkeypatch.setattr(bench, "missing_peers", lambda: ["onnxruntime", "tract"])
    line = bench.peers_missing_line(_result())
    assert line.startswith("onnxruntime and tract not installed") and "\n" not in line
    assert bench.peers_missing_line(_result(ort_ms=10.0)) is None  # one peer is enough
    monkeypatch.setattr(bench, "missing_peers", lambda: [])
    assert bench.peers_missing_line() is None
    res = _result()
    res.skipped = ["tract: no ONNX export for efficientnet-lite0"]
    assert "no ONNX export" in bench.peers_missing_line(res)


@pytest.mark.slow
def test_notebook_07_runs_without_the_native_peers(monkeypatch, tmp_path) -> None:
    from tests.nbrun import execute, printed, tagged

    # Modules that shadow the installed peers and refuse to import, as a missing extra does.
    for name in ("tract", "onnxruntime"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"raise ImportError('{name} hidden by the test')\n"
        )
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    nb = execute("07_deep_dive_performance.ipynb")
    outputs = [printed(c) for c in nb.cells if c.cell_type == "code"]
    assert any(
        o.strip().startswith("no native engine was measured") and o.count("\n") == 1
        for o in outputs
    )
    assert not any("ONNX Runtime, 1 thread, over the whole network" in o for o in outputs)
    assert all(printed(c).startswith("✗") for c in tagged(nb, "check"))
