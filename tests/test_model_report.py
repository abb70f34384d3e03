"""`model_report` (the guest export) and `wasi-lab models check` built on it.

The report must agree with what a real load gives (model_info, step_info), its memory
estimate must be enough for a fresh instance capped at it, and every hostile or
unsupported graph must come back as a report (`loadable: false` and the load's error),
never a trap.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.test_redteam_guest import node, raw_const
from wasi_lab.cli import main
from wasi_lab.model_check import model_report
from wasi_lab.models.graphdef import DataType, GraphBuilder, TensorShape
from wasi_lab.paths import REPO_ROOT
from wasi_lab.runtime import BadPointerError, Guest

MODEL = REPO_ROOT / "models" / "efficientnet-lite0.pb"
PAGE = 65536


@pytest.fixture(scope="module")
def bundled() -> bytes:
    return MODEL.read_bytes()


@pytest.fixture(scope="module")
def report(bundled: bytes, module_path: Path) -> dict:
    return model_report(bundled, Guest(module_path))


def _json_export(g: Guest, name: str, *args: int) -> dict:
    out = g.alloc(1 << 16)
    n = g.call(name, *args, out, 1 << 16)
    text = g.read_bytes(out, n).decode()
    g.dealloc(out, 1 << 16)
    return json.loads(text)


def test_bundled_model_report_matches_a_real_load(
    report: dict, bundled: bytes, module_path: Path
) -> None:
    assert report["loadable"] is True and report["error"] is None
    assert report["input"] == {"name": "input", "shape": [1, 224, 224, 3]}
    assert report["output"]["shape"] == [1, 1000]
    ops = {o["op"]: o for o in report["ops"]}
    assert ops["Conv2D"]["status"] == "supported" and ops["Conv2D"]["count"] == 33
    # The batch norms and ReLU6s fold into the convolutions: no step of their own.
    assert ops["FusedBatchNormV3"]["status"] == "folded"
    assert ops["Relu6"]["status"] == "folded"
    assert not [o for o in report["ops"] if o["status"] == "unsupported"]
    g = Guest(module_path)
    mp = g.write_bytes(bundled)
    h = g.call("load_model", mp, len(bundled))
    info = _json_export(g, "model_info", h)
    steps = _json_export(g, "step_info", h)["steps"]
    assert report["weight_bytes"] == info["weight_bytes"]
    assert report["steps"] == info["steps"] == len(steps)
    assert report["macs"] == sum(s["macs"] for s in steps) > 3e8
    assert report["nodes"] == info["nodes"]


def test_memory_estimate_is_enough_and_not_absurd(
    report: dict, bundled: bytes, module_path: Path
) -> None:
    pages = report["pages"]
    g = Guest(module_path, memory_limit=pages * PAGE)
    mp = g.write_bytes(bundled)
    h = g.call("load_model", mp, len(bundled))
    g.dealloc(mp, len(bundled))
    t, o = g.alloc(4 * 224 * 224 * 3), g.alloc(4 * 1000)
    assert g.call("infer_tensor", h, t, o) == 1000
    used = g.memory.size(g.store)
    assert used <= pages < 1.6 * used, (used, pages)


def test_short_buffer_gets_the_length_and_nothing_written(bundled: bytes, guest: Guest) -> None:
    mp = guest.write_bytes(bundled)
    out = guest.write_bytes(b"\xaa" * 64)
    n = guest.call("model_report", mp, len(bundled), out, 64)
    assert n > 64
    assert guest.read_bytes(out, 64) == b"\xaa" * 64
    big = guest.alloc(n)
    assert guest.call("model_report", mp, len(bundled), big, n) == n
    assert json.loads(guest.read_bytes(big, n))["loadable"] is True


def test_bad_pointer_is_an_error_code(guest: Guest) -> None:
    with pytest.raises(BadPointerError):
        guest.call("model_report", 12345678, 100, 0, 0)


def _unsupported_graph() -> bytes:
    g = GraphBuilder()
    x = g.placeholder("input", [1, 8])
    a = g.op("Erf", "gelu/erf", [x])
    b = g.op("Erf", "gelu2/erf", [a])
    c = g.op("Sin", "odd/sin", [b])
    g.op("Softmax", "prob", [g.op("Relu", "relu", [c])])
    return g.to_bytes()


def test_unsupported_graph_is_reported(guest: Guest) -> None:
    r = model_report(_unsupported_graph(), guest)
    assert r["loadable"] is False
    assert "Erf (2 nodes, e.g. 'gelu/erf')" in r["error"] and "Sin (1 node" in r["error"]
    ops = {o["op"]: o for o in r["ops"]}
    assert ops["Erf"] == {"op": "Erf", "count": 2, "status": "unsupported", "example": "gelu/erf"}
    assert ops["Relu"]["status"] == "supported"
    assert r["input"] == {"name": "input", "shape": [1, 8]}
    assert r["output"]["name"] == "prob" and r["pages"] is None
    assert "Relu" in r["supported_ops"]


def _cycle() -> bytes:
    inp = node("Placeholder", "input", [], dtype=DataType.DT_FLOAT, shape=TensorShape([1, 4]))
    return (
        inp
        + node("AddV2", "a", ["input", "b"])
        + node("Relu", "b", ["a"])
        + node("Softmax", "prob", ["b"])
    )


@pytest.mark.parametrize(
    "pb, error",
    [
        (b"\x08\x01garbage", "not a TensorFlow GraphDef"),
        (_cycle(), "cycle"),
        (
            node("Placeholder", "input", [], dtype=DataType.DT_FLOAT, shape=TensorShape([1, 4]))
            + node("Relu", "r", ["input"]),
            "no Softmax",
        ),
    ],
    ids=["garbage", "cycle", "no-softmax"],
)
def test_hostile_graphs_get_a_report_not_a_trap(guest: Guest, pb: bytes, error: str) -> None:
    r = model_report(pb, guest)
    assert r["loadable"] is False and error in r["error"]
    # The instance is fine afterwards.
    assert model_report(_unsupported_graph(), guest)["ops"]


def test_constant_bomb_under_a_memory_limit(module_path: Path) -> None:
    """2^24 floats announced by one float_val (a few bytes), in a 32 MiB instance: the
    report says the load runs out of memory; the instance keeps working."""
    pb = (
        node("Placeholder", "input", [], dtype=DataType.DT_FLOAT, shape=TensorShape([1, 4]))
        + raw_const("bomb", 1, [1 << 12, 1 << 12], b"\x2d" + struct.pack("<f", 1.0))
        + node("AddV2", "s", ["input", "bomb"])
        + node("Softmax", "prob", ["s"])
    )
    g = Guest(module_path, memory_limit=32 * 2**20)
    r = model_report(pb, g)
    assert r["loadable"] is False and "out of memory" in r["error"].lower(), r["error"]
    assert model_report(_unsupported_graph(), g)["ops"]


def test_cli_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "check", str(MODEL)]) == 0
    out = capsys.readouterr().out
    assert "loads and runs in the guest" in out
    assert "FusedBatchNormV3" in out and "folded" in out and "pages" in out
    assert main(["models", "check", str(MODEL), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loadable"] is True


def test_cli_unsupported_graph_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pb = tmp_path / "gelu.pb"
    pb.write_bytes(_unsupported_graph())
    assert main(["models", "check", str(pb)]) == 1
    out = capsys.readouterr().out
    assert "will not load" in out
    first_op = out.splitlines()[
        out.splitlines().index(
            next(line for line in out.splitlines() if line.strip().startswith("op "))
        )
        + 1
    ]
    assert first_op.split()[:3] == ["Erf", "2", "unsupported"]


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda d: d / "missing.pb", "no such file or directory"),
        (lambda d: d, "is a directory"),
        (lambda d: (d / "empty.pb").write_bytes(b"") or d / "empty.pb", "the file is empty"),
        (
            lambda d: (d / "notes.txt").write_text("hello\n") and d / "notes.txt",
            "not a TensorFlow GraphDef",
        ),
        (
            lambda d: (d / "m.onnx").write_bytes(b"\x08\x07\x12\x04test") and d / "m.onnx",
            "an ONNX model",
        ),
    ],
    ids=["missing", "directory", "empty", "text", "onnx"],
)
def test_cli_bad_files_get_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, expect: str
) -> None:
    assert main(["models", "check", str(make(tmp_path))]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], captured.err
