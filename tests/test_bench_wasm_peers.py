"""`wasi-lab bench --wasm-peers`: the engines in Node really run, on the guest's tensor.

The npm packages come from `wasi-lab setup` (`npm ci` in hosts/node, which `make test` runs);
where Node or a package is absent, each test is skipped with the reason the bench gives.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from wasi_lab.bench_wasm_peers import (
    RECORDED,
    faq_figure,
    faq_sentences,
    load_record,
    medians,
    ratio_ranges,
    typical_run,
)
from wasi_lab.hosts import grace_hopper
from wasi_lab.models.registry import ensure_model, get_model
from wasi_lab.peers.node_peers import WASM_PEERS, NodeEngine, NodePeerError, missing_reason
from wasi_lab.peers.tfjs_convert import attr_json, convert_graphdef, ensure_tfjs_model

PEERS = {p.key: p for p in WASM_PEERS}


@pytest.fixture(scope="module")
def spec():
    s = get_model("efficientnet-lite0")
    ensure_model(s.name, progress=False)
    return s


@pytest.fixture(scope="module")
def guest_run(spec):
    """The bench's tensor (Grace Hopper, preprocessed by the guest) and the guest's output."""
    from wasi_lab.predict import Classifier

    clf = Classifier(spec.name)
    x = np.ascontiguousarray(clf.guest.decode_image(grace_hopper().read_bytes(), 1)[2], dtype="<f4")
    return x, clf.infer_tensor(x)


@pytest.fixture()
def tensor_file(guest_run, tmp_path) -> Path:
    path = tmp_path / "tensor.f32"
    guest_run[0].tofile(path)
    return path


def _need(key: str) -> None:
    why = missing_reason(PEERS[key])
    if why:
        pytest.skip(f"{key}: {why}")


def test_attrs_are_written_in_protobufs_json_mapping() -> None:
    from wasi_lab.models.graphdef import DataType, TensorShape

    assert attr_json("SAME") == {"s": base64.b64encode(b"SAME").decode()}
    assert attr_json([1, 2, 2, 1]) == {"list": {"i": ["1", "2", "2", "1"]}}
    assert attr_json(True) == {"b": True}  # a bool, not the int 1
    assert attr_json(DataType.DT_FLOAT) == {"type": "DT_FLOAT"}
    assert attr_json(TensorShape([1, 224])) == {"shape": {"dim": [{"size": "1"}, {"size": "224"}]}}
    assert attr_json(np.zeros((3, 2), "<f4")) == {
        "tensor": {"dtype": "DT_FLOAT", "tensorShape": {"dim": [{"size": "3"}, {"size": "2"}]}}
    }


def test_the_graph_model_is_fused_like_tensorflowjs_converter_and_its_weights_add_up(
    spec, tmp_path
) -> None:
    model = convert_graphdef(spec.path, tmp_path / "m.tfjs")
    doc = json.loads(model.model_json.read_text())
    ops = model.op_counts
    # Every batch norm folded, every bias and ReLU6 fused: what TF.js gets from its converter.
    assert ops.get("_FusedConv2D") == 33 and ops.get("FusedDepthwiseConv2dNative") == 16
    assert ops.get("_FusedMatMul") == 1
    assert not {"FusedBatchNormV3", "Relu6", "BiasAdd", "Conv2D"} & set(ops)
    specs = doc["weightsManifest"][0]["weights"]
    need = sum(4 * int(np.prod(w["shape"])) for w in specs)
    shards = [tmp_path / "m.tfjs" / p for p in doc["weightsManifest"][0]["paths"]]
    assert need == model.weight_bytes == sum(p.stat().st_size for p in shards)
    consts = {n["name"] for n in doc["modelTopology"]["node"] if n["op"] == "Const"}
    assert consts == {w["name"] for w in specs}  # each constant's bytes, and only those
    names = {n["name"] for n in doc["modelTopology"]["node"]}
    assert spec.output in names  # the fused node keeps the name the graph's readers use
    for n in doc["modelTopology"]["node"]:
        assert all(i.split(":")[0] in names for i in n.get("input", [])), n["name"]


def test_ensure_rewrites_a_stale_model_and_keeps_a_current_one(spec, tmp_path) -> None:
    folder = ensure_tfjs_model(spec.path, tmp_path / "m.tfjs")
    mtime = (folder / "model.json").stat().st_mtime_ns
    assert ensure_tfjs_model(spec.path, folder) == folder
    assert (folder / "model.json").stat().st_mtime_ns == mtime  # up to date: untouched
    stamp = json.loads((folder / "stamp.json").read_text())
    (folder / "stamp.json").write_text(json.dumps({**stamp, "source_sha256": "0" * 64}))
    ensure_tfjs_model(spec.path, folder)
    assert json.loads((folder / "stamp.json").read_text()) == stamp  # rewritten


def _one_turn(key: str, model: Path, tensor: Path, x: np.ndarray, output_name: str = ""):
    eng = NodeEngine(PEERS[key], model, tensor, x.shape, output_name=output_name)
    try:
        times, cpu, wall = eng.turn(block=1)
    finally:
        eng.close()
    assert eng.proc.returncode == 0
    assert len(times) == 1 and times[0] > 0 and 0 < cpu and 0 < wall
    return eng


@pytest.mark.parametrize("fused", [True, False])
def test_tfjs_graph_model_gives_the_guests_output(
    spec, guest_run, tensor_file, tmp_path, fused
) -> None:
    _need("tfjs_wasm_1t")
    x, want = guest_run
    model = convert_graphdef(spec.path, tmp_path / "m.tfjs", fused=fused)
    eng = _one_turn("tfjs_wasm_1t", model.folder, tensor_file, x)
    assert "1 thread" in eng.detail
    assert np.abs(eng.output - want).max() < 1e-5


@pytest.mark.parametrize("key", [p.key for p in WASM_PEERS])
def test_each_peer_runs_on_the_guests_tensor(key, spec, guest_run, tensor_file) -> None:
    _need(key)
    x, want = guest_run
    peer = PEERS[key]
    model = {"guest": spec.path, "ort": spec.onnx_path}.get(peer.runner) or ensure_tfjs_model(
        spec.path
    )
    eng = _one_turn(key, model, tensor_file, x, spec.output if peer.runner == "guest" else "")
    diff = np.abs(eng.output - want).max()
    if peer.runner == "guest":
        assert diff == 0  # the same module in another host: the same bits
    else:
        assert 0 < diff < 1e-5  # another engine: float rounding, never more
    if peer.runner == "tfjs":
        assert f"{peer.threads} thread" in eng.detail  # what the backend really ran


def test_a_bad_tensor_or_model_is_a_clear_error(spec, guest_run, tensor_file, tmp_path) -> None:
    _need("ort_web_1t")
    x, _ = guest_run
    with pytest.raises(NodePeerError, match="bytes; shape"):
        NodeEngine(PEERS["ort_web_1t"], spec.onnx_path, tensor_file, (1, 224, 224, 4))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(NodePeerError):
        NodeEngine(PEERS["ort_web_1t"], bad, tensor_file, x.shape)


def test_missing_packages_are_a_skip_reason(tmp_path) -> None:
    if missing_reason(PEERS["guest_node"]):
        pytest.skip("no usable node")
    why = missing_reason(PEERS["tfjs_wasm_2t"], node_dir=tmp_path)
    assert why and "@tensorflow/tfjs-core" in why and "missing" in why
    assert missing_reason(PEERS["guest_node"], node_dir=tmp_path) is None  # needs no npm


def test_bench_wasm_peers_json_carries_each_peers_figures(tmp_path) -> None:
    """The recording script runs `wasi-lab bench --wasm-peers --json` and keeps its answer."""
    if missing_reason(PEERS["guest_node"]):
        pytest.skip("no usable node")
    from tests.test_bench_scripts import load

    out = tmp_path / "record.json"
    assert load("wasm_peers_record").main(["--runs", "1", "--repeat", "2", "--out", str(out)]) == 0
    record = load_record(out)
    assert record["command"].startswith("wasi-lab bench --wasm-peers --json --repeat 2")
    assert record["machine"]["logical_cpus"] and record["machine"]["node"].startswith("v")
    assert record["runs"][0]["result"]["module"] == "guest/prebuilt/wasi_lab_guest.wasm"
    res = record["runs"][0]["result"]
    rows = {r["key"]: r for r in res["wasm_peers"]}
    skipped = {s.split(":")[0] for s in res["skipped"]}
    assert set(rows) | skipped >= {*PEERS, "guest_browser"}  # each ran or says why not
    for key in set(PEERS) - skipped:
        r = rows[key]
        for field in ("engine", "threads", "median_ms", "max_abs_diff", "guest_ratio"):
            assert field in r, (key, field)
        assert r["median_ms"] > 0 and r["max_abs_diff"] < 1e-5
        assert r["guest_ratio"] == pytest.approx(res["guest_ms"] / r["median_ms"], rel=1e-2)
        assert 0 < res["cpu_per_wall"][key] < r["threads"] + 0.5
    assert 0 < res["cpu_per_wall"]["guest"] < 1.5
    # What notebook 07 prints and draws from such a record.
    text = "\n".join(faq_sentences(record))
    assert "1 run on" in text and "guest (wasmtime) / ORT-Web wasm, 1 thread:" in text
    fig = faq_figure(typical_run(record))
    assert len(fig.axes[0].patches) == len(medians(res)) - ("ort" in medians(res))


def test_notebook_07_quotes_the_recorded_runs() -> None:
    """Every number in notebook 07's wasm-peers prose comes from benchmarks/wasm_peers.json."""
    import re

    import nbformat

    from wasi_lab.paths import REPO_ROOT

    nb = nbformat.read(REPO_ROOT / "notebooks" / "07_deep_dive_performance.ipynb", 4)
    cell = next(
        c.source
        for c in nb.cells
        if c.cell_type == "markdown"
        and c.source.startswith("## 5 · Against the other engines in WebAssembly")
    )
    record = load_record()
    ranges = ratio_ranges(record)
    quoted = [f"{lo:.2f}–{hi:.2f}" for lo, hi in (ranges["ort_web_1t"], ranges["tfjs_wasm_1t"])]
    for q in quoted:
        assert f"**{q}×**" in cell, q
    assert f"{len(record['runs'])} runs recorded on {record['date']}" in cell
    allowed = {
        *(x for q in quoted for x in q.split("–")),
        *record["date"].split("-"),
        str(len(record["runs"])),
        "5",
        "1",
        "2",
        "20",
        "0",
    }
    numbers = set(re.findall(r"\d+(?:\.\d+)?", cell))
    assert numbers <= allowed, numbers - allowed


def test_the_guest_runs_in_chromium_on_the_same_tensor(spec, guest_run) -> None:
    from wasi_lab.browser.chromium import chromium_missing

    why = chromium_missing()
    if why:
        pytest.skip(why)
    from wasi_lab.paths import default_module
    from wasi_lab.peers.browser_peer import BrowserEngine

    x, want = guest_run
    eng = BrowserEngine(default_module(), spec.path, x, spec.output)
    try:
        times, cpu, wall = eng.turn(block=2)
    finally:
        eng.close()
    assert np.array_equal(eng.output, want)  # the same module: the same bits as wasmtime
    assert len(times) == 2 and all(t > 0 for t in times) and np.isnan(cpu)
    assert "Chromium" in eng.detail


def test_the_record_names_no_machines_folders() -> None:
    text = RECORDED.read_text()
    record = json.loads(text)
    assert all(
        r["result"]["module"] == "guest/prebuilt/wasi_lab_guest.wasm" for r in record["runs"]
    )
    assert str(Path.home()) not in text and "/tmp/" not in text


def test_notebook_07_cpu_per_wall_bound_is_the_records() -> None:
    """Section 5's reading says "CPU/wall at most N": N is the record's largest, over every
    engine of every run, so the sentence moves with the record."""
    import nbformat

    from wasi_lab.paths import REPO_ROOT

    nb = nbformat.read(REPO_ROOT / "notebooks" / "07_deep_dive_performance.ipynb", 4)
    cell = next(
        c.source
        for c in nb.cells
        if c.cell_type == "markdown" and c.source.startswith("How to read it.")
    )
    record = load_record()
    top = max(v for run in record["runs"] for v in run["result"]["cpu_per_wall"].values())
    assert f"CPU/wall at most {top:.2f}" in cell


def test_ort_web_runs_a_users_graph_through_the_kits_export(
    spec, guest_run, tensor_file, tmp_path
) -> None:
    """`bench --wasm-peers --model FILE.pb`: ORT-Web gets the same ONNX export the native
    peers get (written once into the cache dir), and answers as the guest does."""
    from wasi_lab.bench_wasm_peers import _model_for

    _need("ort_web_1t")
    x, want = guest_run
    own = tmp_path / "own.pb"
    own.write_bytes(spec.path.read_bytes())
    user = get_model(own)
    assert user.onnx_path is None  # a user's file: no export of its own
    onnx_path = _model_for(PEERS["ort_web_1t"], user, tuple(x.shape))
    assert onnx_path.suffix == ".onnx" and onnx_path.exists()
    eng = _one_turn("ort_web_1t", onnx_path, tensor_file, x)
    assert 0 < np.abs(eng.output - want).max() < 1e-5
