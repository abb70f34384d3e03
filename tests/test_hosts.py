"""The same guest under Node's WASI and under wasmtime-py, and WASI's preopen rule."""

from __future__ import annotations

import math
import shutil

import pytest

from wasi_lab.hosts import (
    NodeNotFoundError,
    grace_hopper,
    run_command_guest,
    run_node,
    wasmtime_timings,
)
from wasi_lab.predict import Classifier

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
STAGES = ("compile", "instantiate", "write", "load_model", "decode", "infer")


@pytest.fixture(scope="module")
def wasmtime_prediction():
    return Classifier("efficientnet-lite0").classify(grace_hopper(), top=5)


@needs_node
def test_node_classifies_grace_hopper_like_wasmtime(wasmtime_prediction):
    res = run_node(grace_hopper(), "efficientnet-lite0")
    assert res["ok"] is True and res["exit_code"] == 0
    assert res["label"] == "military uniform"
    assert res["host"].startswith("node v")
    # Same .wasm, same bytes in, same kernels: the two hosts agree on every top-5 score.
    want = wasmtime_prediction.top
    assert [c["index"] for c in res["top"]] == [t.index for t in want]
    for got, ref in zip(res["top"], want, strict=True):
        assert got["prob"] == pytest.approx(ref.prob, abs=1e-6)
    for stage in STAGES:
        assert isinstance(res["timings_ms"][stage], float | int)
        assert res["timings_ms"][stage] >= 0
    assert res["timings_ms"]["infer"] > 0


@needs_node
def test_node_one_call_classify_and_article_entry_agree():
    one = run_node(entry="classify", top=3)
    assert one["ok"] and one["label"] == "military uniform" and len(one["top"]) == 3
    art = run_node(entry="article")
    assert art["ok"]
    # infer_from_ptrs answers with the article's 1-based class number (1000 labels: +1).
    assert art["article_class"] == art["index"] + 1
    assert art["label"] == labels_at(art["index"])


def labels_at(i: int) -> str:
    from wasi_lab.models.labels import labels_for

    return labels_for(1000)[i]


@needs_node
def test_node_replayed_article_bug_is_refused():
    res = run_node(replay_article_bug=True)
    assert res["ok"] is False
    assert res["exit_code"] == 3
    err = res["error"]
    assert err["function"] == "infer_from_ptrs"
    assert err["code"] == -2 and err["name"] == "LengthMismatch"
    # The guest's own message names both lengths: the model's, passed for the image.
    assert str(res["model_bytes"]) in err["message"]
    assert str(res["image_bytes"]) in err["message"]
    assert "label" not in res


@needs_node
def test_node_buffer_pool_is_why_the_article_copy_was_wrong_and_repeats_are_timed():
    res = run_node(top=1, repeat=3)
    demo = res["buffer_pool_demo"]
    assert demo["article_copy_bytes"] > demo["bytes"]
    runs = res["timings_ms"]["infer_runs"]
    assert len(runs) == 3 and all(r > 0 for r in runs)
    assert runs[0] == res["timings_ms"]["infer"]


def test_missing_node_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("WASI_LAB_NODE", str(tmp_path / "no-such-node"))
    with pytest.raises(NodeNotFoundError, match="does not run"):
        run_node()


def test_command_guest_reads_files_with_a_preopened_dir():
    run = run_command_guest("efficientnet-lite0", grace_hopper(), preopen=True)
    assert run.exit_code == 0, run.stderr
    assert run.preopened == "."
    prob, cls = run.result
    assert cls == 653  # the article's 1-based numbering: index 652 + 1
    assert run.label(1000) == "military uniform"
    assert 0 < prob <= 1


def test_command_guest_without_preopen_fails_cleanly():
    run = run_command_guest("efficientnet-lite0", grace_hopper(), preopen=False)
    assert run.exit_code == 2
    assert run.preopened is None
    assert run.result is None and run.stdout == ""
    assert "--dir" in run.stderr
    assert "panicked" not in run.stderr and "trap" not in run.stderr


def test_wasmtime_timings_are_measured():
    t = wasmtime_timings(repeat=2)
    for name in ("compile_cold_ms", "compile_cached_ms", "instantiate_ms", "load_model_ms",
                 "fresh_write_ms", "fresh_decode_ms", "fresh_infer_ms", "write_ms",
                 "decode_ms", "infer_ms"):
        v = getattr(t, name)
        assert isinstance(v, float) and math.isfinite(v) and v > 0, name
    assert len(t.samples["infer"]) == 2
    # Loading the serialized module skips Cranelift entirely.
    assert t.compile_cached_ms < t.compile_cold_ms
    assert t.article_style_request_ms > t.kit_request_ms  # parsing the model is not free
