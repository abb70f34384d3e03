"""The guest's model entry points: load once, run many times, and refuse bad input cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wasmtime

from wasi_lab.build import PREBUILT_COMMAND
from wasi_lab.models.graphdef import (
    Graph,
    GraphBuilder,
    Node,
    TensorShape,
    encode_graph,
    parse_graphdef,
)
from wasi_lab.models.reference import run_graph
from wasi_lab.runtime import (
    BadArgumentError,
    BadHandleError,
    BadModelError,
    BadPointerError,
    Guest,
    LengthMismatchError,
)

MODELS = Path(__file__).resolve().parent.parent / "models"
EFFICIENTNET = MODELS / "efficientnet-lite0.pb"
needs_model = pytest.mark.skipif(
    not EFFICIENTNET.exists(), reason="models/efficientnet-lite0.pb not converted yet"
)


def load(guest: Guest, pb: bytes) -> int:
    ptr = guest.write_bytes(pb)
    try:
        return guest.call("load_model", ptr, len(pb))
    finally:
        guest.dealloc(ptr, len(pb))


def tiny_classifier(side: int = 224, classes: int = 1001) -> bytes:
    """input [1,side,side,3] -> Mean -> MatMul -> Softmax: a fast stand-in classifier."""
    rng = np.random.default_rng(7)
    g = GraphBuilder()
    x = g.placeholder("input", [-1, side, side, 3])
    m = g.op("Mean", "mean", [x, g.const("axes", np.array([1, 2], np.int32))])
    mm = g.op(
        "MatMul", "logits", [m, g.const("w", rng.standard_normal((3, classes)).astype(np.float32))]
    )
    g.op("Softmax", "prob", [mm])
    return g.to_bytes()


def info(guest: Guest, handle: int) -> str:
    ptr = guest.alloc(4096)
    n = guest.call("model_info", handle, ptr, 4096)
    return guest.read_bytes(ptr, min(n, 4096)).decode()


@pytest.fixture(scope="module")
def efficientnet_pb() -> bytes:
    return EFFICIENTNET.read_bytes()


def works(guest: Guest) -> None:
    """The guest still loads and runs a model after an error."""
    h = load(guest, tiny_classifier(side=4, classes=5))
    x = np.ones((1, 4, 4, 3), np.float32)
    ip, op = guest.write_bytes(x.tobytes()), guest.alloc(20)
    assert guest.call("infer_raw", h, ip, x.nbytes, op, 20) == 5
    assert abs(guest.read_f32(op, 5).sum() - 1) < 1e-5
    guest.call("free_model", h)


# --------------------------------------------------------------------------- bad models
def test_bad_models_are_clear_errors(guest: Guest) -> None:
    good = tiny_classifier(side=4, classes=5)
    rng = np.random.default_rng(0)
    cases: list[tuple[bytes, str]] = [
        (good[: len(good) // 2], "GraphDef|node"),
        (rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), "GraphDef|wire|varint|field"),
        (b"\xff" * 20, "varint"),
        (b"\x0a\xff\xff\xff\xff\x0f", "past the end"),
    ]
    for data, pattern in cases:
        with pytest.raises(BadModelError, match=pattern):
            load(guest, data)
        works(guest)

    cycle = Graph(
        nodes=[
            Node("input", "Placeholder", [], {"shape": TensorShape([1, 2])}),
            Node("a", "AddV2", ["input", "b"]),
            Node("b", "Relu", ["a"]),
            Node("prob", "Softmax", ["b"]),
        ]
    )
    with pytest.raises(BadModelError, match="cycle: (a -> b -> a|b -> a -> b)"):
        load(guest, encode_graph(cycle))
    works(guest)

    g = GraphBuilder()
    x = g.placeholder("input", [1, 8, 8, 3])
    c = g.op(
        "Conv2D",
        "conv",
        [x, g.const("w", np.ones((3, 3, 4, 2), np.float32))],
        strides=[1, 1, 1, 1],
        padding="SAME",
    )
    g.op("Softmax", "prob", [c])
    with pytest.raises(BadModelError, match="3 channels"):
        load(guest, g.to_bytes())
    works(guest)


def test_fuzzed_models_never_trap(guest: Guest) -> None:
    good = bytearray(tiny_classifier(side=4, classes=5))
    rng = np.random.default_rng(1)
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.integers(1, 6)):
            data[rng.integers(0, len(data))] = rng.integers(0, 256)
        try:
            h = load(guest, bytes(data))
            guest.call("free_model", h)
        except (BadModelError, BadArgumentError):
            pass
    works(guest)


def test_wrong_input_shape(guest: Guest) -> None:
    h = load(guest, tiny_classifier(side=8, classes=5))
    tp = guest.alloc(224 * 224 * 3 * 4)
    op = guest.alloc(20)
    with pytest.raises(BadArgumentError, match=r"\[1, 8, 8, 3\]"):
        guest.call("infer_tensor", h, tp, op)
    x = np.zeros(10, np.float32)
    ip = guest.write_bytes(x.tobytes())
    with pytest.raises(LengthMismatchError):
        guest.call("infer_raw", h, ip, 40, op, 20)
    guest.call("free_model", h)
    with pytest.raises(BadHandleError):
        guest.call("free_model", h)
    with pytest.raises(BadHandleError):
        guest.call("model_output_len", 12345)
    works(guest)


# --------------------------------------------------------------------------- entry points
def test_model_info_and_output_len(guest: Guest) -> None:
    h = load(guest, tiny_classifier())
    assert h >= 1
    assert guest.call("model_output_len", h) == 1001
    text = info(guest, h)
    assert '"input_shape":[1,224,224,3]' in text and '"output":"prob"' in text
    assert '"MatMul":1' in text and '"weight_bytes":' in text
    # A short buffer gets a prefix; the return value is the full length.
    ptr = guest.alloc(10)
    assert guest.call("model_info", h, ptr, 10) == len(text)
    assert guest.read_bytes(ptr, 10).decode() == text[:10]


def test_load_with_output_name(guest: Guest) -> None:
    pb = tiny_classifier(side=4, classes=5)
    mp, name = guest.write_bytes(pb), guest.write_bytes(b"logits")
    h = guest.call("load_model_with_output", mp, len(pb), name, 6)
    assert '"output":"logits"' in info(guest, h)
    missing = guest.write_bytes(b"nope")
    with pytest.raises(BadArgumentError, match="nope"):
        guest.call("load_model_with_output", mp, len(pb), missing, 4)


def test_classify_top_k(guest: Guest, grace_hopper_bytes: bytes) -> None:
    h = load(guest, tiny_classifier(classes=10))
    img = guest.write_bytes(grace_hopper_bytes)
    out = guest.alloc(8 * 3)
    assert guest.call("classify", h, img, len(grace_hopper_bytes), 1, out, 3) == 3
    raw = guest.read_bytes(out, 24)
    idx = np.frombuffer(raw, "<u4")[0::2]
    prob = np.frombuffer(raw, "<f4")[1::2]
    assert len(set(idx.tolist())) == 3 and all(prob[:-1] >= prob[1:])
    with pytest.raises(BadArgumentError):
        guest.call("classify", h, img, len(grace_hopper_bytes), 7, out, 3)
    with pytest.raises(BadArgumentError):
        guest.call("classify", h, img, len(grace_hopper_bytes), 1, out, 0)
    with pytest.raises(LengthMismatchError):
        guest.call("classify", h, img, len(grace_hopper_bytes), 1, out, 4)  # 32 bytes > 24


def test_infer_from_ptrs_refuses_the_node_bug(guest: Guest, grace_hopper_bytes: bytes) -> None:
    pb = tiny_classifier(classes=1001)
    live = guest.call("live_allocations")
    mp = guest.write_bytes(pb)
    ip = guest.write_bytes(grace_hopper_bytes)
    # The article's Node host passes the model's length for the image.
    with pytest.raises((LengthMismatchError, BadPointerError)):
        guest.call("infer_from_ptrs", mp, len(pb), ip, len(pb))
    assert guest.call("live_allocations") == live + 2  # nothing was freed
    cls = guest.call("infer_from_ptrs", mp, len(pb), ip, len(grace_hopper_bytes))
    guest.forget(mp, ip)
    assert 0 <= cls <= 1000
    assert guest.call("live_allocations") == live  # both blocks taken and freed
    with pytest.raises(BadPointerError):
        guest.dealloc(mp, len(pb))


# --------------------------------------------------------------------------- whole model
@needs_model
def test_efficientnet_matches_numpy(guest: Guest, efficientnet_pb: bytes) -> None:
    h = load(guest, efficientnet_pb)
    n_out = guest.call("model_output_len", h)
    assert n_out == 1000
    x = np.random.default_rng(3).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    tp, op = guest.write_bytes(x.tobytes()), guest.alloc(4 * n_out)
    assert guest.call("infer_tensor", h, tp, op) == n_out
    got = guest.read_f32(op, n_out)
    graph = parse_graphdef(efficientnet_pb)
    out = [n for n in graph.nodes if n.op == "Softmax"][-1].name
    want = run_graph(graph, {"input": x}, [out])[0].ravel()
    assert np.abs(got - want).max() <= 1e-4
    assert got.argmax() == want.argmax()


@needs_model
def test_efficientnet_grace_hopper(
    guest: Guest, efficientnet_pb: bytes, grace_hopper_bytes: bytes
) -> None:
    h = load(guest, efficientnet_pb)
    img = guest.write_bytes(grace_hopper_bytes)
    out = guest.alloc(8 * 5)
    assert guest.call("classify", h, img, len(grace_hopper_bytes), 1, out, 5) == 5
    top = int(np.frombuffer(guest.read_bytes(out, 8), "<u4")[0])
    assert top == 652  # military uniform (0-based ImageNet index)


# --------------------------------------------------------------------------- command module
def run_command(args: list[str], preopen: Path | None, tmp_path: Path) -> tuple[int, str, str]:
    engine = wasmtime.Engine()
    module = wasmtime.Module.from_file(engine, str(PREBUILT_COMMAND))
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    wasi.argv = ["wasi-lab-classify", *args]
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    wasi.stdout_file = str(out)
    wasi.stderr_file = str(err)
    if preopen is not None:
        wasi.preopen_dir(str(preopen), ".")
    store.set_wasi(wasi)
    instance = linker.instantiate(store, module)
    code = 0
    try:
        instance.exports(store)["_start"](store)
    except wasmtime.ExitTrap as exc:
        code = exc.code
    return code, out.read_text(), err.read_text()


def test_command_without_preopen_says_dir(tmp_path: Path) -> None:
    code, _, err = run_command(["--model", "m.pb", "--image", "x.jpg"], None, tmp_path)
    assert code == 2
    assert "--dir" in err


def test_command_classifies(tmp_path: Path, grace_hopper_bytes: bytes) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "m.pb").write_bytes(tiny_classifier(classes=1001))
    (work / "grace_hopper.jpg").write_bytes(grace_hopper_bytes)
    code, out, err = run_command(["--model", "m.pb", "--top", "3"], work, tmp_path)
    assert code == 0, err
    assert out.startswith("result: Some((")
    assert len(out.strip().splitlines()) == 4
    (work / "bad.pb").write_bytes(b"\x0a\x05abc")
    code, _, err = run_command(["--model", "bad.pb"], work, tmp_path)
    assert code == 1 and "GraphDef" in err
