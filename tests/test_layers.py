"""The per-step profile: the guest times its own plan, the host groups it by op."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from wasi_lab.plan_profile import format_layers, profile_layers
from wasi_lab.predict import Classifier
from wasi_lab.runtime import GuestError
from wasi_lab.views.profile_charts import layers_figure

# EfficientNet-Lite0 at 224x224, counted by hand from the architecture: the stem, 16 MBConv
# blocks (expand, depthwise, project), the 1x1 head and the 1280x1000 classifier.
STEM = 112 * 112 * 27 * 32


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier("efficientnet-lite0")


def test_profile_covers_every_step_and_leaves_the_answer_alone(
    clf: Classifier, grace_hopper_bytes
) -> None:
    x = clf.preprocess(grace_hopper_bytes)
    steps = clf.profile(x)
    assert len(steps) >= 50
    assert all(s["ns"] > 0 for s in steps)
    ops = {s["op"] for s in steps}
    assert {"Conv 3x3/2", "Conv 1x1", "Depthwise 3x3", "Depthwise 5x5", "MatMul", "Softmax"} <= ops
    stem = next(s for s in steps if s["op"] == "Conv 3x3/2")
    assert stem["macs"] == STEM
    head = next(s for s in steps if s["op"] == "MatMul")
    assert head["macs"] == 1280 * 1000
    total = sum(s["macs"] for s in steps)
    assert 380e6 < total < 395e6  # ~0.39 G multiply-adds, as benchmarks/README.md says
    # Multiply-adds by zero are skipped only where a ReLU6 feeds a 1x1 convolution (the
    # project steps, after a depthwise one), never in the stem or an expand step, whose
    # inputs are the image and the linear bottleneck.
    assert all(0 <= s["skipped"] <= s["macs"] for s in steps)
    assert stem["skipped"] == 0 and head["skipped"] == 0
    assert all(s["skipped"] == 0 for s in steps if "expand" in s["node"])
    assert 0.05 * total < sum(s["skipped"] for s in steps) < 0.3 * total
    # A timed run computes the same thing as a plain one.
    np.testing.assert_array_equal(clf.infer_tensor(x), clf.infer_tensor(x))
    assert int(np.argmax(clf.infer_tensor(x))) == 652


def test_profile_errors_are_clear(clf: Classifier, grace_hopper_bytes) -> None:
    g = clf.guest
    with pytest.raises(GuestError, match="profile_tensor input"):
        g.call("profile_tensor", clf.handle, 8, 0, 0)  # not a live block
    ptr = g.write_bytes(clf.preprocess(grace_hopper_bytes), "tensor")
    try:
        with pytest.raises(GuestError, match="handle 999"):
            g.call("profile_tensor", 999, ptr, 0, 0)
        # a buffer too short for the profile: nothing written, the full length returned
        assert g.call("profile_tensor", clf.handle, ptr, 0, 0) > 1000
    finally:
        g.dealloc(ptr, 224 * 224 * 3 * 4)
    # the classifier still works afterwards
    assert clf.classify(grace_hopper_bytes).label == "military uniform"


def test_profile_layers_groups_by_op() -> None:
    prof = profile_layers(repeat=2, progress=False)
    rows = prof.by_op()
    assert rows[0].op == "Conv 1x1"  # most of the time goes to the pointwise convolutions
    assert abs(sum(r.share for r in rows) - 1.0) < 1e-9
    assert sum(r.ms for r in rows) == pytest.approx(prof.total_ms)
    assert all(r.gmacs is None or r.gmacs > 0 for r in rows)
    conv = rows[0]
    assert 0 < conv.skipped_share < 0.5
    text = format_layers(prof)
    assert "Conv 1x1" in text and "slowest" in text and "skipped:" in text
    fig = layers_figure(prof)
    assert fig.axes[0].get_title(loc="left").startswith("efficientnet-lite0: where")


def test_bench_layers_cli_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wasi_lab", "bench", "--layers", "--json", "--repeat", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["model"] == "efficientnet-lite0" and res["total_ms"] > 0
    assert {r["op"] for r in res["by_op"]} >= {"Conv 1x1", "Depthwise 5x5"}
    assert len(res["steps"]) >= 50


def test_cpu_mhz_reads_proc_cpuinfo(monkeypatch, tmp_path) -> None:
    from pathlib import Path

    from wasi_lab import plan_profile as layers

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\ncpu MHz\t\t: 2100.000\n")
    real = Path

    def fake(p="", *a):
        return real(info) if str(p) == "/proc/cpuinfo" else real(p, *a)

    monkeypatch.setattr(layers, "Path", fake)
    assert layers.cpu_mhz() == 2100.0
    info.write_text("processor\t: 0\n")  # e.g. an ARM board: no clock line
    assert layers.cpu_mhz() is None
    info.unlink()  # not Linux
    assert layers.cpu_mhz() is None
