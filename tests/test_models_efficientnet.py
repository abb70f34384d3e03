"""EfficientNet-Lite0: torch checkpoint reader, graph conversion, reference vs ONNX Runtime."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from wasi_lab.models import efficientnet as E
from wasi_lab.models.graphdef import Graph, parse_graphdef
from wasi_lab.models.labels import top_k
from wasi_lab.models.preprocess import preprocess
from wasi_lab.models.reference import run_graph
from wasi_lab.models.torch_pickle import (
    MAGIC_NUMBER,
    PROTOCOL_VERSION,
    TorchPickleError,
    load_state_dict,
)


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return load_state_dict(E.checkpoint_path())


@pytest.fixture(scope="module")
def graph_bytes(state_dict: dict[str, np.ndarray]) -> bytes:
    return E.build_graphdef(state_dict).to_bytes()


@pytest.fixture(scope="module")
def graph(graph_bytes: bytes) -> Graph:
    return parse_graphdef(graph_bytes)


@pytest.fixture(scope="module")
def grace_hopper() -> str:
    from matplotlib import cbook

    return cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


# ------------------------------------------------------------------ torch checkpoint reader
def test_state_dict_keys_and_shapes(state_dict: dict[str, np.ndarray]) -> None:
    assert len(state_dict) == 296
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state_dict["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    assert state_dict["_fc.bias"].dtype == np.float32
    assert state_dict["_bn0.num_batches_tracked"].dtype == np.int64
    assert np.all(state_dict["_bn1.running_var"] > 0)  # real statistics, not garbage
    assert 0.01 < float(np.abs(state_dict["_conv_stem.weight"]).mean()) < 10


def _legacy_prefix() -> bytes:
    return b"".join(
        pickle.dumps(x, protocol=2)
        for x in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True, "protocol_version": 1001})
    )


class _Evil:
    def __reduce__(self):  # noqa: ANN204 - the classic pickle exploit shape
        return (os.system, ("echo pwned",))


def test_refuses_code_execution(tmp_path: Path) -> None:
    bad = tmp_path / "evil.pth"
    bad.write_bytes(_legacy_prefix() + pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(TorchPickleError, match="refusing to load .*system"):
        load_state_dict(bad)


@pytest.mark.parametrize(
    "content", [b"", b"not a pickle at all", b"PK\x03\x04zipzip", pickle.dumps(12345, protocol=2)]
)
def test_garbage_is_rejected(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    with pytest.raises(TorchPickleError):
        load_state_dict(bad)


def test_truncated_checkpoint_is_rejected(tmp_path: Path) -> None:
    data = E.checkpoint_path().read_bytes()
    bad = tmp_path / "short.pth"
    bad.write_bytes(data[: len(data) - 1000])
    with pytest.raises(TorchPickleError, match="truncated"):
        load_state_dict(bad)


# ------------------------------------------------------------------ graph conversion
def test_graph_structure(graph: Graph, state_dict: dict[str, np.ndarray]) -> None:
    counts = graph.op_counts()
    assert counts["Conv2D"] == 33 and counts["DepthwiseConv2dNative"] == 16
    assert counts["FusedBatchNormV3"] == 49  # not folded: the engine folds at load
    assert counts["AddV2"] == 9 and counts["Relu6"] == 33
    first = graph.nodes[0]
    assert (first.name, first.op) == (E.INPUT_NAME, "Placeholder")
    assert graph.nodes[-1].name == E.OUTPUT_NAME
    seen: set[str] = set()
    for node in graph.nodes:  # topologically sorted, as TF's freezer writes them
        assert all(i.split(":")[0] in seen for i in node.inputs)
        seen.add(node.name)
    kernel = graph.node("efficientnet_lite0/stem/conv2d/kernel").attrs["value"]
    np.testing.assert_array_equal(kernel, state_dict["_conv_stem.weight"].transpose(2, 3, 1, 0))
    dw = graph.node("efficientnet_lite0/blocks_3/depthwise_conv2d/depthwise_kernel")
    assert dw.attrs["value"].shape == (5, 5, 144, 1)
    bn = graph.node("efficientnet_lite0/stem/tpu_batch_normalization/FusedBatchNormV3")
    assert bn.attrs["epsilon"] == pytest.approx(1e-3) and bn.attrs["is_training"] is False


def test_reference_forward_is_fast_and_classifies(graph: Graph, grace_hopper: str) -> None:
    x = preprocess(grace_hopper, "efficientnet", crop=0.875)
    start = time.perf_counter()
    (probs,) = run_graph(graph, {"input": x}, [E.OUTPUT_NAME])
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"reference forward took {elapsed:.1f} s"
    assert probs.shape == (1, 1000) and abs(float(probs.sum()) - 1) < 1e-4
    # With TF's standard 87.5 % centre crop the portrait's hat dominates:
    # "academic gown" first, "military uniform" (652) in the top 3.
    assert 652 in [i for i, _, _ in top_k(probs, 3)]
    # Without the crop, the uniform wins outright.
    (full,) = run_graph(graph, {"input": preprocess(grace_hopper, "efficientnet")}, [E.OUTPUT_NAME])
    assert top_k(full, 1)[0][:2] == (652, "military uniform")


def test_coffee_is_espresso(graph: Graph) -> None:
    import skimage.data

    path = Path(skimage.data.__file__).parent / "coffee.png"
    (probs,) = run_graph(graph, {"input": preprocess(path, "efficientnet")}, [E.OUTPUT_NAME])
    index, name, p = top_k(probs, 1)[0]
    assert (index, name) == (967, "espresso") and p > 0.8


def test_onnx_matches_reference(
    state_dict: dict[str, np.ndarray], graph: Graph, tmp_path: Path
) -> None:
    ort = pytest.importorskip("onnxruntime")
    pb, onnx_path = tmp_path / "m.pb", tmp_path / "m.onnx"
    E.convert(pb, onnx_path)
    assert pb.read_bytes() == E.build_graphdef(state_dict).to_bytes()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert sess.get_inputs()[0].shape == [1, 224, 224, 3]
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    x[:, 50:120, 60:200] *= 0.2  # some structure, not just noise
    (ours,) = run_graph(graph, {"input": x}, [E.OUTPUT_NAME])
    (theirs,) = sess.run(None, {"input": x})
    assert np.abs(ours - theirs).max() < 1e-4
    assert int(ours.argmax()) == int(theirs.argmax())


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.bin"
    E.atomic_write(target, b"abc")
    E.atomic_write(target, b"defg")
    assert target.read_bytes() == b"defg"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.bin"]


def test_pickled_objects_only_from_file(tmp_path: Path) -> None:
    # A well-formed prefix followed by a non-dict object is refused with a clear message.
    bad = tmp_path / "list.pth"
    bad.write_bytes(_legacy_prefix() + pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(TorchPickleError, match="not a state_dict"):
        load_state_dict(bad)


def test_tract_runs_the_onnx_export(graph: Graph, tmp_path: Path) -> None:
    tract = pytest.importorskip("tract")
    onnx_path = tmp_path / "m.onnx"
    E.convert(tmp_path / "m.pb", onnx_path)
    model = tract.onnx().load(str(onnx_path)).into_model().into_runnable()
    x = np.random.default_rng(1).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    theirs = model.run([x])[0].to_numpy()
    (ours,) = run_graph(graph, {"input": x}, [E.OUTPUT_NAME])
    assert np.abs(ours - theirs).max() < 1e-4
