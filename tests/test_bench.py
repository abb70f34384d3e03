"""The benchmark runs in a short mode and compares every engine's output (not its speed)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_short_mode_json() -> None:
    out = subprocess.run([sys.executable, "-m", "wasi_lab", "bench", "--json", "--repeat", "3"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    for key in ("model", "guest_ms", "tract_ms", "ort_1t_ms", "ort_ms", "ratios",
                "compile_cold_ms", "compile_cached_ms", "instantiate_ms", "model_load_ms",
                "max_abs_diff", "skipped"):
        assert key in res, key
    assert set(res["ratios"]) >= {"guest_vs_tract", "guest_vs_ort_1t"}
    assert res["guest_ms"] > 0 and res["instantiate_ms"] > 0
    assert res["skipped"] == [], res["skipped"]  # the dev extras install every peer
    assert 0 < res["max_abs_diff"] <= 1e-4  # engines differ in float rounding, never more
    assert set(res["diffs"]) == {"tract", "ort_1t", "ort"}
    assert 0.05 < res["guest_skipped_macs_share"] < 0.3  # Grace Hopper: about 15 %
