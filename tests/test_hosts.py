"""The same guest under Node's WASI and under wasmtime-py, and WASI's preopen rule."""

from __future__ import annotations

import math
import shutil

import pytest

from wasi_lab import listings
from wasi_lab.hosts import (
    NODE_HOST,
    NODE_MISSING,
    HostError,
    NodeNotFoundError,
    check_write_guest_memory_js,
    compare_hosts,
    format_comparison,
    grace_hopper,
    run_command_guest,
    run_node,
    skip_without_node,
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
    # The article's copy of a pooled Buffer is refused by `set`, not silently wrong; the
    # model and image Buffers read from files own their ArrayBuffer, so it never showed.
    assert demo["article_copy"].startswith("RangeError")
    assert demo["byte_offset"] + demo["bytes"] <= demo["article_copy_bytes"]
    assert demo["model_is_whole_buffer"] is True and demo["image_is_whole_buffer"] is True
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
    for name in (
        "compile_cold_ms",
        "compile_cached_ms",
        "instantiate_ms",
        "load_model_ms",
        "fresh_write_ms",
        "fresh_decode_ms",
        "fresh_infer_ms",
        "write_ms",
        "decode_ms",
        "infer_ms",
    ):
        v = getattr(t, name)
        assert isinstance(v, float) and math.isfinite(v) and v > 0, name
    assert len(t.samples["infer"]) == 2
    # Loading the serialized module skips Cranelift entirely.
    assert t.compile_cached_ms < t.compile_cold_ms
    assert t.article_style_request_ms > t.kit_request_ms  # parsing the model is not free


# --------------------------------------------------------------------------- without Node


@pytest.fixture()
def no_node(monkeypatch, tmp_path):
    """A machine without Node: find_node fails as it does when `node` is not installed."""
    monkeypatch.setenv("WASI_LAB_NODE", str(tmp_path / "no-such-node"))


def test_skip_without_node_prints_one_line_and_goes_on(no_node, capsys):
    ran = []
    with skip_without_node():
        run_node()
        ran.append("after")  # never reached: the block stops at the missing Node
    assert ran == []
    assert capsys.readouterr().out == NODE_MISSING + "\n"


def test_skip_without_node_does_not_hide_real_failures():
    with pytest.raises(HostError, match="boom"), skip_without_node():
        raise HostError("boom")  # a Node host that ran and failed is an error, not a skip


def test_compare_hosts_without_node_keeps_the_wasmtime_row(no_node):
    with pytest.raises(NodeNotFoundError):
        compare_hosts()
    cmp = compare_hosts(require_node=False)
    assert "node" not in cmp and cmp["skipped"] == NODE_MISSING
    assert cmp["wasmtime-py"]["label"] == "military uniform"
    text = format_comparison(cmp)
    assert text.splitlines()[-1] == NODE_MISSING
    assert "wasmtime-py's compile: " in text  # cache or cold, said not assumed
    assert max(len(line) for line in text.splitlines()) <= 100


@needs_node
def test_comparison_says_whether_the_hosts_agree():
    text = format_comparison(compare_hosts())
    assert "same class in both hosts (military uniform)" in text
    assert "Node's time / wasmtime-py's" in text
    assert max(len(line) for line in text.splitlines()) <= 100


# --------------------------------------------------------------------------- the JS exercise

ARTICLE_LINE = "m.set(new Uint8Array(bytes.buffer));"


def _article_js(replacement: str = ARTICLE_LINE) -> str:
    return listings.article("writeGuestMemory.js").text.replace(ARTICLE_LINE, replacement)


FIXES = (
    "m.set(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));",
    "m.set(bytes);",
)


@needs_node
def test_article_write_guest_memory_fails_when_run_in_node():
    problem = check_write_guest_memory_js(_article_js())
    assert problem is not None
    assert "shared pool" in problem and "RangeError" in problem
    assert "own ArrayBuffer" not in problem  # a whole Buffer is copied right even by the bug


@needs_node
@pytest.mark.parametrize("fix", FIXES)
def test_fixed_write_guest_memory_passes_when_run_in_node(fix):
    assert check_write_guest_memory_js(_article_js(fix)) is None


@needs_node
def test_the_node_hosts_own_write_guest_memory_passes():
    assert (
        check_write_guest_memory_js(listings.js_function(NODE_HOST, "writeGuestMemory").text)
        is None
    )


@needs_node
def test_a_view_taken_before_alloc_is_caught():
    early = """function writeGuestMemory(bytes, instance) {
      const mem = instance.exports.memory.buffer;
      const ptr = instance.exports.alloc(bytes.byteLength);
      new Uint8Array(mem, ptr, bytes.byteLength).set(bytes);
      return ptr;
    }"""
    problem = check_write_guest_memory_js(early)
    assert problem is not None and "detached" in problem


@needs_node
def test_broken_javascript_is_a_clear_sentence():
    assert "SyntaxError" in check_write_guest_memory_js("function writeGuestMemory( {")
    assert "not the pointer" in check_write_guest_memory_js(
        "function writeGuestMemory(bytes, instance) { }"
    )


def test_without_node_the_check_reads_the_code(no_node):
    assert "Node not found" in check_write_guest_memory_js(_article_js())
    for fix in FIXES:
        assert check_write_guest_memory_js(_article_js(fix)) is None
    assert check_write_guest_memory_js(None) is not None
    assert check_write_guest_memory_js("function other() {}") is not None


@pytest.mark.slow
def test_notebook_05_runs_to_the_end_without_node(no_node):
    from tests.nbrun import execute, printed, tagged

    nb = execute("05_hosts_and_timing.ipynb")
    outputs = [printed(c) for c in nb.cells if c.cell_type == "code"]
    skips = [o for o in outputs if NODE_MISSING in o]
    assert len(skips) >= 3  # the comparison, both bug replays, the timing chart
    for out in skips:  # one line each, nothing else from Node
        assert out.count(NODE_MISSING) == 1 and "node v" not in out
    checks = [printed(c).strip() for c in tagged(nb, "check")]
    assert len(checks) == 3 and all(c.startswith("✗") and "\n" not in c for c in checks)
    assert "Node not found" in checks[0]  # the JS check fell back to reading the code


def test_command_guest_reads_a_symlinked_image(tmp_path):
    # A symlink hard-linked into the granted folder would point outside it: WASI refuses it.
    link = tmp_path / "photo.jpg"
    link.symlink_to(grace_hopper().resolve())
    run = run_command_guest("efficientnet-lite0", link, preopen=True)
    assert run.exit_code == 0, run.stderr
    assert run.label(1000) == "military uniform"


@needs_node
def test_a_function_that_never_returns_is_stopped():
    from wasi_lab.hosts import try_write_guest_memory_js

    with pytest.raises(HostError, match="did not return within 2 s"):
        try_write_guest_memory_js("function writeGuestMemory(b, i) { for (;;) {} }", timeout=2)
