"""The kit's GraphDef -> ONNX exporter: every oracle graph, run by ONNX Runtime and tract,
against TensorFlow's own output (the oracle's tolerance), and the graph the peers get is lean.

The graphs and TensorFlow's answers come from the oracle's cache (`tests.oracle.cache`); only a
missing cache entry needs TensorFlow, to build it. The exporter itself never imports it.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.oracle import harness
from tests.oracle.cache import Frozen, frozen_or_skip
from tests.oracle.graphs import APP_NAMES, BUILDERS, OP_NAMES
from wasi_lab.models.graphdef import GraphBuilder, GraphDefError
from wasi_lab.models.registry import get_model

onnx = pytest.importorskip("onnx", reason="the exporter needs onnx (pip install -e '.[bench]')")
ort = pytest.importorskip("onnxruntime", reason="pip install -e '.[bench]'")
pytest.importorskip("tract", reason="pip install -e '.[bench]'")

from wasi_lab.bench import _ort_runner, _tract_runner  # noqa: E402
from wasi_lab.peers.onnx_export import (  # noqa: E402
    EXPORTER_VERSION,
    OnnxExportError,
    ensure_onnx_export,
    export_graphdef,
    onnx_for,
)

#: Oracle graphs the exporter refuses -> (why, what its refusal must say: a regex). Empty:
#: every graph the guest runs, the exporter exports.
NOT_EXPORTED: dict[str, tuple[str, str]] = {}


frozen = frozen_or_skip  # the cached graph; built with TensorFlow when missing


def write_export(tmp_path: Path, f: Frozen) -> Path:
    path = tmp_path / f"{f.name}.onnx"
    path.write_bytes(export_graphdef(f.graph, f.output).SerializeToString())
    return path


def check_graph(tmp_path: Path, name: str) -> None:
    f = frozen(name)
    if name in NOT_EXPORTED:
        why, refusal = NOT_EXPORTED[name]
        try:
            export_graphdef(f.graph, f.output)
        except OnnxExportError as exc:
            assert re.search(refusal, str(exc)), f"{name}: refused, but not for {why}: {exc}"
            return
        pytest.fail(f"{name} now exports: take it out of NOT_EXPORTED ({why})")
    path = write_export(tmp_path, f)
    x = np.ascontiguousarray(f.x, dtype=np.float32)
    for engine, run in (
        ("onnxruntime", _ort_runner(path, 1)),
        ("tract", _tract_runner(path, x.shape)),
    ):
        y = np.asarray(run(x))
        problem = harness.mismatch(y, f.y)
        assert problem is None, f"{name}: {engine} on the export differs from TensorFlow: {problem}"


@pytest.mark.parametrize("name", OP_NAMES)
def test_op_graph_exports_and_matches_tensorflow(tmp_path: Path, name: str) -> None:
    check_graph(tmp_path, name)


@pytest.mark.slow  # cached: 0.3-1.5 s each (the export, two sessions, one run each)
@pytest.mark.parametrize("name", APP_NAMES)
def test_keras_application_exports_and_matches_tensorflow(tmp_path: Path, name: str) -> None:
    check_graph(tmp_path, name)


def test_not_exported_names_only_graphs_that_exist() -> None:
    assert set(NOT_EXPORTED) <= set(BUILDERS), set(NOT_EXPORTED) - set(BUILDERS)


def op_counts(model) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


@pytest.mark.parametrize(
    "name, ops",
    [
        # tf2onnx-lean: one Transpose (the NHWC input), batch norm and biases inside the
        # convolutions, the head one GlobalAveragePool and a Gemm
        (
            "keras3-mobilenetv2-1.0",
            {"Transpose": 1, "Conv": 52, "Clip": 35, "Add": 10, "GlobalAveragePool": 1,
             "Reshape": 1, "Gemm": 1, "Softmax": 1},
        ),
        (
            "tf1-mobilenetv2-1.4",  # FusedBatchNormV3 behind Switch/Merge, folded the same
            {"Transpose": 1, "Conv": 52, "Clip": 35, "Add": 10, "GlobalAveragePool": 1,
             "Reshape": 1, "Gemm": 1, "Softmax": 1},
        ),
        (
            # swish is Sigmoid + Mul (Keras 3's `beta * x` with beta 1 is gone), the 16
            # squeeze-excite blocks a GlobalAveragePool, two Convs and a Mul each; the
            # input's x/255 is the one Mul not in a block
            "keras3-efficientnetb0",
            {"Transpose": 1, "Conv": 81, "Sigmoid": 65, "Mul": 66, "GlobalAveragePool": 17,
             "Add": 9, "Reshape": 1, "Gemm": 1, "Softmax": 1},
        ),
    ],
)  # fmt: skip
def test_the_peers_get_a_lean_graph(name: str, ops: dict[str, int]) -> None:
    model = export_graphdef(frozen(name).graph, frozen(name).output)
    assert op_counts(model) == Counter(ops)
    assert model.ir_version == 8 and model.opset_import[0].version == 13


def test_the_graph_keeps_the_guests_interface() -> None:
    """NHWC in (the very tensor the guest gets), TF's shape out, named as in the GraphDef."""
    f = frozen("op-transpose")
    model = export_graphdef(f.graph, f.output)
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert (inp.name, dims) == (f.input, list(f.x.shape))
    assert out.name == f.output
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == list(f.y.shape)
    # x -> transpose [0,3,1,2] is the NCHW input itself: one Transpose, nothing else
    assert op_counts(model) == Counter({"Transpose": 1})


def _unsupported_graph() -> bytes:
    g = GraphBuilder()
    x = g.placeholder("input", [1, 4, 4, 3])
    b = g.op("Erf", "erf_2", [g.op("Erf", "erf", [x])])
    w = g.op("Relu", "w_folded", [g.const("w0", np.ones((1, 1, 3, 2), np.float32))])
    cum = g.op("Cumsum", "cum", [w, g.const("ax", np.int32(0))])
    c = g.op("Conv2D", "conv", [b, cum], strides=[1, 1, 1, 1], padding="VALID")
    w1 = g.const("w1", np.ones((1, 1, 3, 2), np.float32))
    d = g.op("Conv2D", "conv_nchw", [x, w1], strides=[1] * 4, padding="VALID", data_format="NCHW")
    # a dead branch: an unknown op there is never looked at
    sw = g.op("Switch", "switch", [x, g.const("pred", np.array(False))])
    m = g.op("Merge", "merge", [g.op("Lgamma", "lgamma", [f"{sw}:1"]), g.op("Relu", "relu", [sw])])
    g.op("AddV2", "out", [g.op("AddV2", "sum", [c, d]), m])
    g.op("Digamma", "after_the_output", ["out"])
    return g.to_bytes()


def test_an_unsupported_graph_is_refused_with_every_op_listed() -> None:
    pb = _unsupported_graph()
    with pytest.raises(OnnxExportError) as info:
        export_graphdef(pb, "out")
    msg = str(info.value)
    assert "unsupported ops on the path to output 'out'" in msg
    assert "Erf (2 nodes, e.g. 'erf')" in msg
    assert "Cumsum (1 node, e.g. 'cum')" in msg
    assert "Conv2D (data_format NCHW (NHWC only)) (1 node, e.g. 'conv_nchw')" in msg
    assert "Exported ops: " in msg and "Conv2D" in msg.split("Exported ops: ")[1]
    for absent in ("Lgamma", "Digamma"):  # dead branch; after the output
        assert absent not in msg
    # the default output is the last node: its op is unsupported as well
    with pytest.raises(OnnxExportError, match=r"Digamma \(1 node"):
        export_graphdef(pb)


def test_a_constant_filter_is_required() -> None:
    g = GraphBuilder()
    x = g.placeholder("input", [1, 4, 4, 2])
    g.op("Conv2D", "conv", [x, x], strides=[1, 1, 1, 1], padding="VALID")
    with pytest.raises(OnnxExportError, match=r"Conv2D \(the filter is not constant\)"):
        export_graphdef(g.to_bytes())


def test_a_convolution_of_constants_is_refused_not_crashed() -> None:
    g = GraphBuilder()
    x = g.placeholder("input", [1, 4, 4, 2])
    c = g.const("c", np.ones((1, 4, 4, 2), np.float32))
    w = g.const("w", np.ones((1, 1, 2, 2), np.float32))
    conv = g.op("Conv2D", "conv_of_consts", [c, w], strides=[1, 1, 1, 1], padding="VALID")
    g.op("AddV2", "out", [x, conv])
    with pytest.raises(OnnxExportError, match=r"Conv2D \(a constant input where a run-time"):
        export_graphdef(g.to_bytes())


def test_graphs_without_one_input_are_refused() -> None:
    g = GraphBuilder()
    a = g.placeholder("a", [1, 2])
    b = g.placeholder("b", [1, 2])
    g.op("AddV2", "sum", [a, b])
    with pytest.raises(OnnxExportError, match="2 Placeholders \\('a', 'b'\\)"):
        export_graphdef(g.to_bytes())
    g = GraphBuilder()
    g.const("c", np.ones(3, np.float32))
    with pytest.raises(OnnxExportError, match="0 Placeholders"):
        export_graphdef(g.to_bytes())
    with pytest.raises(OnnxExportError, match="no node named 'nope'"):
        export_graphdef(g.to_bytes(), "nope")
    g = GraphBuilder()
    g.placeholder("x", [1, -1, -1, 3])
    g.op("Relu", "r", ["x"])
    with pytest.raises(OnnxExportError, match="unknown dimensions .* pass input_shape"):
        export_graphdef(g.to_bytes())
    assert [d.dim_value for d in export_graphdef(g.to_bytes(), input_shape=(1, 5, 6, 3))
            .graph.input[0].type.tensor_type.shape.dim] == [1, 5, 6, 3]  # fmt: skip
    with pytest.raises(GraphDefError):
        export_graphdef(b"\x00not a graph")


def test_the_bundled_model_exports_like_the_kits_own_onnx() -> None:
    """efficientnet-lite0.pb through the exporter against models/efficientnet-lite0.onnx
    (written from the same PyTorch weights by `efficientnet._OnnxEmitter`): the same answer,
    in no more nodes."""
    spec = get_model("efficientnet-lite0")
    if not spec.path.exists() or spec.onnx_path is None or not spec.onnx_path.exists():
        pytest.skip("the bundled model is not prepared (wasi-lab models prepare)")
    ours = export_graphdef(spec.path.read_bytes(), spec.output)
    kit = onnx.load(str(spec.onnx_path))
    x = np.random.default_rng(15).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    outs = []
    for model in (ours, kit):
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {sess.get_inputs()[0].name: x})[0])
    assert outs[0].shape == outs[1].shape == (1, 1000)
    assert harness.mismatch(outs[0], outs[1]) is None
    assert len(ours.graph.node) <= len(kit.graph.node)
    assert op_counts(ours)["Transpose"] == 1 and "BatchNormalization" not in op_counts(ours)


def test_exports_are_cached_by_content_and_version(tmp_path: Path, monkeypatch) -> None:
    from wasi_lab.peers import onnx_export

    f = frozen("op-conv2d-valid")
    pb = tmp_path / "mine.pb"
    pb.write_bytes(f.graph)
    first = ensure_onnx_export(pb, cache=tmp_path / "cache")
    assert first.parent == tmp_path / "cache" and first.name.startswith("mine-")
    stamp = first.stat().st_mtime_ns
    assert ensure_onnx_export(pb, cache=tmp_path / "cache") == first
    assert first.stat().st_mtime_ns == stamp  # written once
    other = frozen("op-conv2d-same-s2")
    pb.write_bytes(other.graph)
    second = ensure_onnx_export(pb, cache=tmp_path / "cache")
    assert second != first  # another graph in the same file: another export
    sess = ort.InferenceSession(str(second), providers=["CPUExecutionProvider"])
    y = sess.run(None, {other.input: other.x})[0]
    assert harness.mismatch(y, other.y) is None
    monkeypatch.setattr(onnx_export, "EXPORTER_VERSION", EXPORTER_VERSION + 1)
    assert ensure_onnx_export(pb, cache=tmp_path / "cache") not in (first, second)


def test_onnx_for_says_why_there_is_none(tmp_path: Path) -> None:
    pb = tmp_path / "odd.pb"
    pb.write_bytes(_unsupported_graph())
    path, why = onnx_for(get_model(pb), (1, 4, 4, 3), cache=tmp_path)
    assert path is None
    assert why.startswith("no ONNX export for odd: cannot export to ONNX") and "Digamma" in why
    assert list(tmp_path.glob("*.onnx")) == []  # nothing half-written


@pytest.mark.slow  # 3 s: the bench compiles the guest cold three times
def test_bench_times_a_pb_against_the_peers_on_its_export(tmp_path, monkeypatch) -> None:
    """`wasi-lab bench --model FILE.pb`: the guest, tract and ORT on the same tensor, the
    report naming the file and the export."""
    from wasi_lab.bench import format_table, run_bench
    from wasi_lab.peers import onnx_export

    monkeypatch.setattr(onnx_export, "CACHE_DIR", tmp_path / "exports")
    pb = tmp_path / "keras3-mobilenetv2.pb"
    pb.write_bytes(frozen("keras3-mobilenetv2-1.0").graph)
    res = run_bench(model=str(pb), repeat=2, progress=False)
    assert res.skipped == [] and set(res.diffs) == {"tract", "ort_1t", "ort"}
    assert all(v is not None and v > 0 for v in (res.tract_ms, res.ort_1t_ms, res.ort_ms))
    assert 0 <= res.max_abs_diff <= 1e-4
    assert res.model == "keras3-mobilenetv2" and res.model_file == str(pb)
    assert Path(res.onnx_file).parent == tmp_path / "exports"
    table = format_table(res)
    assert f"model file {pb}" in table and f"peers' ONNX {res.onnx_file}" in table


@pytest.mark.slow  # 3 s, as above
def test_bench_without_onnx_still_runs_the_guest(tmp_path, monkeypatch) -> None:
    """No `onnx` package (the bench extra half installed): the peers are skipped with the
    reason, the guest's row is measured all the same."""
    from wasi_lab.bench import run_bench
    from wasi_lab.peers import onnx_export

    monkeypatch.setattr(onnx_export, "CACHE_DIR", tmp_path / "exports")
    monkeypatch.setitem(sys.modules, "onnx", None)
    pb = tmp_path / "mnv2.pb"
    pb.write_bytes(frozen("keras3-mobilenetv2-1.0").graph)
    res = run_bench(model=str(pb), repeat=2, progress=False)
    assert res.guest_ms > 0 and res.tract_ms is None and res.ort_ms is None
    assert len(res.skipped) == 3 and all("no ONNX export for mnv2" in s for s in res.skipped)
    assert "import of onnx halted" in res.skipped[0] and res.onnx_file is None


# --------------------------------------------------------------------------- the fusions' limits
# Each graph below is one case a fusion must leave alone (or get right); the guest runs the
# same GraphDef, so it is the reference, and the export must agree under ORT and tract.

SHAPE = (1, 5, 6, 4)


def _rand(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _conv(g: GraphBuilder, name: str, x: str, cin: int = 4, cout: int = 6) -> str:
    w = g.const(f"{name}/w", _rand(len(name), 3, 3, cin, cout))
    return g.op("Conv2D", name, [x, w], strides=[1, 1, 1, 1], padding="SAME")


def _shared_conv(g: GraphBuilder, x: str) -> None:
    c = _conv(g, "conv", x)  # read twice: its bias cannot go into the Conv
    y = g.op("BiasAdd", "bias", [c, g.const("b", _rand(1, 6))])
    g.op("AddV2", "out", [y, g.op("Relu", "relu", [c])])


def _column_mul(g: GraphBuilder, x: str) -> None:
    g.op("Mul", "out", [_conv(g, "conv", x), g.const("col", _rand(2, 1, 1, 6, 1))])


def _reversed_sub(g: GraphBuilder, x: str) -> None:
    c = _conv(g, "conv", x)
    d = g.op("RealDiv", "div", [c, g.const("two", np.full(6, 2.0, np.float32))])
    e = g.op("Sub", "sub", [d, g.const("k", _rand(3, 6))])
    # const - conv: the Conv with -W (tract 0.23.9 gets Sub(C, Conv) wrong on its own)
    g.op("Sub", "out", [g.const("k2", _rand(4, 6)), e])


def _channel_pad(g: GraphBuilder, x: str) -> None:
    pads = g.const("pads", np.array([[0, 0], [1, 1], [0, 0], [0, 2]], np.int32))
    _conv(g, "out", g.op("Pad", "pad", [x, pads]), cin=6)


def _batchnorms(g: GraphBuilder, x: str) -> None:
    stats = [g.const(f"s{i}", _rand(10 + i, 4) + (2.0 if i == 3 else 0.0)) for i in range(4)]
    bn_in = g.op("FusedBatchNormV3", "bn_input", [x, *stats], epsilon=1e-3, is_training=False)
    c = _conv(g, "conv", bn_in, cout=4)
    g.op("FusedBatchNormV3", "out", [c, *stats], epsilon=1e-3, is_training=False)


def _expanding_ones(g: GraphBuilder, x: str) -> None:
    axes = g.const("axes", np.array([1, 2], np.int32))
    m = g.op("Mean", "mean", [x, axes], keep_dims=True)
    g.op("Mul", "out", [m, g.const("ones", np.ones(SHAPE, np.float32))])  # broadcasts: kept


def _head(g: GraphBuilder, x: str) -> None:
    axes = g.const("axes", np.array([1, 2], np.int32))
    m = g.op("Mean", "mean", [x, axes], keep_dims=False)
    mm = g.op("MatMul", "mm", [m, g.const("w", _rand(5, 4, 7))])
    b = g.op("AddV2", "bias", [mm, g.const("b", _rand(6, 1, 7))])
    g.op("Softmax", "out", [b])


@pytest.mark.parametrize(
    "build, ops",
    [
        (_shared_conv, {"Conv": 1, "Add": 2, "Relu": 1}),
        (_column_mul, {"Conv": 1, "Mul": 1}),
        (_reversed_sub, {"Conv": 1}),  # the Div and both Subs are in the Conv
        (_channel_pad, {"Pad": 1, "Conv": 1}),
        (_batchnorms, {"BatchNormalization": 1, "Conv": 1}),  # the second is in the Conv
        (_expanding_ones, {"GlobalAveragePool": 1, "Mul": 1}),
        (_head, {"GlobalAveragePool": 1, "Reshape": 1, "Gemm": 1, "Softmax": 1}),
    ],
)
def test_fusions_fold_only_what_they_may(guest, tmp_path: Path, build, ops: dict) -> None:
    g = GraphBuilder()
    build(g, g.placeholder("input", SHAPE))
    pb = g.to_bytes()
    x = _rand(99, *SHAPE)
    want = harness.run(guest, Frozen("case", pb, "input", "out", x, x, {})).y
    model = export_graphdef(pb, "out")
    counts = op_counts(model)
    counts.pop("Transpose", None)
    assert counts == Counter(ops)
    path = tmp_path / "case.onnx"
    path.write_bytes(model.SerializeToString())
    for run in (_ort_runner(path, 1), _tract_runner(path, SHAPE)):
        got = np.asarray(run(x))
        assert harness.mismatch(got, want) is None, harness.mismatch(got, want)


def test_a_training_batch_norm_is_refused() -> None:
    g = GraphBuilder()
    x = g.placeholder("input", SHAPE)
    stats = [g.const(f"s{i}", np.ones(4, np.float32)) for i in range(4)]
    g.op("FusedBatchNormV3", "bn", [x, *stats], epsilon=1e-3, is_training=True)
    with pytest.raises(OnnxExportError, match=r"FusedBatchNormV3 \(is_training is true"):
        export_graphdef(g.to_bytes())


@pytest.mark.slow  # 4 s: one bench run (guest compiled cold three times)
def test_keras_graphs_script_prints_one_row_per_graph(tmp_path: Path, capsys, monkeypatch) -> None:
    import importlib.util
    import json

    from wasi_lab.peers import onnx_export

    monkeypatch.setattr(onnx_export, "CACHE_DIR", tmp_path / "exports")
    frozen("keras3-mobilenetv2-1.0")  # cached, or built (skipped without TensorFlow)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "keras_graphs.py"
    spec = importlib.util.spec_from_file_location("keras_graphs", script)
    assert spec and spec.loader
    kg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kg)
    out_json = tmp_path / "kg.json"
    argv = ["--repeat", "2", "--graphs", "keras3-mobilenetv2-1.0", "--no-reference"]
    assert kg.main([*argv, "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("| keras3-mobilenetv2-1.0 |")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert len(cells) == 11 and "skipped" not in line
    assert all(re.fullmatch(r"\d+\.\d\d / \d+\.\d\d", c) for c in cells[1:5]), cells
    assert all(re.fullmatch(r"\*\*\d+\.\d\d\*\*", c) for c in cells[5:8]), cells
    assert float(cells[8]) <= 1e-4 and int(cells[9]) > 50 and int(cells[10]) == 301
    assert re.search(r"^load average \(1/5/15 min\) before [\d.]+/", out, re.M)
    res = json.loads(out_json.read_text())["results"]["keras3-mobilenetv2-1.0"]
    assert res["skipped"] == [] and res["onnx_file"].endswith(".onnx")


def test_bench_layers_takes_a_pb_path(tmp_path: Path) -> None:
    """`wasi-lab bench --layers --model FILE.pb` (where the Keras graphs' time goes): a user's
    graph is found again by its path, not by its stem."""
    from wasi_lab.plan_profile import profile_layers

    pb = tmp_path / "mnv2.pb"
    pb.write_bytes(frozen("keras3-mobilenetv2-1.0").graph)
    assert get_model(pb).ref == str(pb) and get_model("efficientnet-lite0").ref == (
        "efficientnet-lite0"
    )
    prof = profile_layers(model=str(pb), repeat=1, progress=False)
    from wasi_lab.model_check import model_report

    # Every step of the guest's plan is profiled, and no Pad is left (it folds into the conv).
    assert prof.model == "mnv2" and len(prof.steps) == model_report(pb.read_bytes())["steps"]
    assert not any(s.op == "Pad" for s in prof.steps)


def test_a_transposed_tensor_is_not_mistaken_for_its_source(tmp_path: Path) -> None:
    """x and Transpose(x) are one ONNX tensor in two layouts: bringing both back to TF's
    order must give two different tensors (a layout cache keyed by name alone gave x twice)."""
    g = GraphBuilder()
    x = g.placeholder("input", [1, 3, 3, 2])
    t = g.op("Transpose", "t", [x, g.const("perm", np.array([0, 2, 1, 3], np.int32))])
    flat = g.const("flat", np.array([1, 18], np.int32))
    a, b = g.op("Reshape", "a", [x, flat]), g.op("Reshape", "b", [t, flat])
    g.op("AddV2", "out", [a, b])
    path = tmp_path / "t.onnx"
    path.write_bytes(export_graphdef(g.to_bytes()).SerializeToString())
    xv = _rand(7, 1, 3, 3, 2)
    want = xv.reshape(1, 18) + xv.transpose(0, 2, 1, 3).reshape(1, 18)
    for run in (_ort_runner(path, 1), _tract_runner(path, xv.shape)):
        assert np.allclose(np.asarray(run(xv)), want, rtol=1e-6, atol=1e-6)
