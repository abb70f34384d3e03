"""The NumPy reference ops, checked against naive loops and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from wasi_lab.models.graphdef import Graph, GraphBuilder, Node, parse_graphdef
from wasi_lab.models.reference import (
    GraphRunError,
    UnsupportedOpError,
    conv2d,
    depthwise_conv2d,
    run_graph,
    tf_padding,
)

RNG = np.random.default_rng(7)


def naive_valid_conv(x: np.ndarray, w: np.ndarray, s: int) -> np.ndarray:
    """Direct definition of a VALID convolution: loops over every output pixel."""
    n, h, wd, _ = x.shape
    kh, kw, _, co = w.shape
    ho, wo = (h - kh) // s + 1, (wd - kw) // s + 1
    out = np.zeros((n, ho, wo, co))
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                patch = x[b, i * s : i * s + kh, j * s : j * s + kw, :]
                out[b, i, j] = np.tensordot(patch, w, axes=([0, 1, 2], [0, 1, 2]))
    return out


def one_op(op: str, inputs: dict[str, np.ndarray], **attrs) -> np.ndarray:
    """Build a one-op graph, serialize and re-parse it (so attrs go through the codec), run it."""
    g = GraphBuilder()
    names = []
    for name, value in inputs.items():
        if name.startswith("feed"):
            names.append(g.placeholder(name, value.shape))
        else:
            names.append(g.const(name, value))
    g.op(op, "out", names, **attrs)
    graph = parse_graphdef(g.to_bytes())
    feeds = {k: v for k, v in inputs.items() if k.startswith("feed")}
    return run_graph(graph, feeds, ["out"])[0]


@pytest.mark.parametrize(
    ("size", "k", "s", "expected"),
    [
        (224, 3, 2, (112, 0, 1)),  # stride 2: the extra pad goes bottom/right only
        (5, 3, 2, (3, 1, 1)),
        (112, 5, 2, (56, 1, 2)),
        (7, 1, 1, (7, 0, 0)),
        (4, 2, 2, (2, 0, 0)),
    ],
)
def test_tf_same_padding(size: int, k: int, s: int, expected: tuple[int, int, int]) -> None:
    assert tf_padding(size, k, s, "SAME") == expected


@pytest.mark.parametrize(("h", "w", "k", "s"), [(7, 6, 3, 2), (8, 8, 3, 1), (9, 7, 5, 2)])
def test_same_conv_equals_explicitly_padded_valid_conv(h: int, w: int, k: int, s: int) -> None:
    x = RNG.standard_normal((1, h, w, 3)).astype(np.float32)
    f = RNG.standard_normal((k, k, 3, 4)).astype(np.float32)
    _, pt, pb = tf_padding(h, k, s, "SAME")
    _, pl, pr = tf_padding(w, k, s, "SAME")
    padded = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    expected = naive_valid_conv(padded, f, s)
    got = one_op("Conv2D", {"feed": x, "f": f}, strides=[1, s, s, 1], padding="SAME")
    np.testing.assert_allclose(got, expected, atol=1e-4)
    valid = one_op("Conv2D", {"feed": x, "f": f}, strides=[1, s, s, 1], padding="VALID")
    np.testing.assert_allclose(valid, naive_valid_conv(x, f, s), atol=1e-4)


def test_depthwise_equals_per_channel_conv() -> None:
    x = RNG.standard_normal((2, 9, 8, 3)).astype(np.float32)
    f = RNG.standard_normal((3, 3, 3, 2)).astype(np.float32)  # multiplier 2
    got = one_op("DepthwiseConv2dNative", {"feed": x, "f": f}, strides=[1, 2, 2, 1], padding="SAME")
    assert got.shape == (2, 5, 4, 6)
    for c in range(3):
        for m in range(2):
            ref = conv2d(x[..., c : c + 1], f[:, :, c : c + 1, m : m + 1], [1, 2, 2, 1], "SAME")
            np.testing.assert_allclose(got[..., c * 2 + m], ref[..., 0], atol=1e-5)
    assert np.allclose(depthwise_conv2d(x, f, [1, 1, 1, 1], "VALID").shape, (2, 7, 6, 6))


def test_avgpool_same_counts_only_valid_cells() -> None:
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    got = one_op("AvgPool", {"feed": x}, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="SAME")
    # windows: {1,2,4,5}, {3,6}, {7,8}, {9}: the padding cells are not counted
    np.testing.assert_allclose(got[0, :, :, 0], [[3.0, 4.5], [7.5, 9.0]])
    valid = one_op(
        "AvgPool", {"feed": x}, ksize=[1, 2, 2, 1], strides=[1, 1, 1, 1], padding="VALID"
    )
    np.testing.assert_allclose(valid[0, :, :, 0], [[3.0, 4.0], [6.0, 7.0]])


def test_maxpool_same_padding_never_wins() -> None:
    x = -5 - np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    got = one_op("MaxPool", {"feed": x}, ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1], padding="SAME")
    np.testing.assert_allclose(got[0, :, :, 0], [[-5, -6], [-8, -9]])  # pad 1 on each side


def test_fused_batch_norm_inference() -> None:
    x = RNG.standard_normal((1, 2, 2, 3)).astype(np.float32)
    scale, offset = np.array([1, 2, 3], np.float32), np.array([0.5, 0, -1], np.float32)
    mean, var = np.array([0.1, 0.2, 0.3], np.float32), np.array([1, 4, 0], np.float32)
    expected = (x - mean) / np.sqrt(var + 1e-3) * scale + offset
    for op in ("FusedBatchNorm", "FusedBatchNormV3"):
        got = one_op(
            op,
            {"feed": x, "s": scale, "o": offset, "m": mean, "v": var},
            epsilon=1e-3,
            is_training=False,
            data_format="NHWC",
        )
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(GraphRunError, match="is_training"):
        one_op(
            "FusedBatchNormV3",
            {"feed": x, "s": scale, "o": offset, "m": mean, "v": var},
            epsilon=1e-3,
        )  # TF's default is_training=True


def test_elementwise_ops() -> None:
    x = np.array([[-7.0, -0.5, 0.0, 3.0, 6.5]], np.float32)
    np.testing.assert_array_equal(one_op("Relu", {"feed": x}), [[0, 0, 0, 3, 6.5]])
    np.testing.assert_array_equal(one_op("Relu6", {"feed": x}), [[0, 0, 0, 3, 6]])
    b = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(one_op("BiasAdd", {"feed": x, "b": b}), x + b)
    np.testing.assert_array_equal(one_op("Add", {"feed": x, "b": b}), x + b)
    np.testing.assert_array_equal(one_op("AddV2", {"feed": x, "feed2": x}), 2 * x)
    np.testing.assert_array_equal(one_op("Identity", {"feed": x}), x)
    sm = one_op("Softmax", {"feed": np.array([[1.0, 2.0, 3.0], [1000, 1000, 1000]], np.float32)})
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(sm[0], e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(sm[1], [1 / 3] * 3, rtol=1e-6)  # stable for large logits


def test_shape_ops() -> None:
    x = RNG.standard_normal((1, 4, 4, 3)).astype(np.float32)
    axes = np.array([1, 2], np.int32)
    np.testing.assert_allclose(
        one_op("Mean", {"feed": x, "a": axes}), x.mean(axis=(1, 2)), rtol=1e-6
    )
    kept = one_op("Mean", {"feed": x, "a": axes}, keep_dims=True)
    assert kept.shape == (1, 1, 1, 3)
    assert one_op("Squeeze", {"feed": kept}, squeeze_dims=[1, 2]).shape == (1, 3)
    assert one_op("Squeeze", {"feed": kept}).shape == (3,)
    with pytest.raises(GraphRunError, match="squeeze"):
        one_op("Squeeze", {"feed": x}, squeeze_dims=[1])
    r = one_op("Reshape", {"feed": x, "s": np.array([1, -1], np.int32)})
    np.testing.assert_array_equal(r, x.reshape(1, 48))
    shape = one_op("Shape", {"feed": x})
    assert shape.dtype == np.int32 and list(shape) == [1, 4, 4, 3]
    p = one_op("Pad", {"feed": x, "p": np.array([[0, 0], [1, 2], [0, 1], [0, 0]], np.int32)})
    assert p.shape == (1, 7, 5, 3) and p[0, 0].sum() == 0 and np.array_equal(p[:, 1:5, :4], x)


def test_matmul_transposes() -> None:
    a = RNG.standard_normal((2, 3)).astype(np.float32)
    b = RNG.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(one_op("MatMul", {"feed": a, "b": b}), a @ b, rtol=1e-5)
    np.testing.assert_allclose(
        one_op("MatMul", {"feed": a.T.copy(), "b": b.T.copy()}, transpose_a=True, transpose_b=True),
        a @ b,
        rtol=1e-5,
    )


def test_small_network_end_to_end() -> None:
    g = GraphBuilder()
    x = g.placeholder("input", [1, 8, 8, 3])
    w = g.const("w", RNG.standard_normal((3, 3, 3, 4)).astype(np.float32))
    c = g.op("Conv2D", "conv", [x, w], strides=[1, 2, 2, 1], padding="SAME")
    r = g.op("Relu6", "relu", [c])
    m = g.op("Mean", "pool", [r, g.const("axes", np.array([1, 2], np.int32))], keep_dims=False)
    fc = g.const("fc", RNG.standard_normal((4, 5)).astype(np.float32))
    logits = g.op("MatMul", "logits", [m, fc])
    g.op("Softmax", "prob", [logits])
    graph = parse_graphdef(g.to_bytes())
    xin = RNG.standard_normal((1, 8, 8, 3)).astype(np.float32)
    prob, pooled = run_graph(graph, {"input:0": xin}, ["prob", "pool:0"])
    expected_pool = np.clip(
        conv2d(xin, graph.node("w").attrs["value"], [1, 2, 2, 1], "SAME"), 0, 6
    ).mean(axis=(1, 2))
    np.testing.assert_allclose(pooled, expected_pool, rtol=1e-5)
    assert prob.shape == (1, 5) and abs(prob.sum() - 1) < 1e-5


def test_errors_name_the_problem() -> None:
    g = GraphBuilder()
    x = g.placeholder("input", [1, 2])
    g.op("Sigmoidish", "weird", [x])
    graph = parse_graphdef(g.to_bytes())
    with pytest.raises(UnsupportedOpError, match="'Sigmoidish'.*'weird'"):
        run_graph(graph, {"input": np.zeros((1, 2), np.float32)}, ["weird"])
    with pytest.raises(GraphRunError, match="not fed"):
        run_graph(graph, {}, ["weird"])
    with pytest.raises(GraphRunError, match="no node named"):
        run_graph(graph, {}, ["nothing"])
    cyclic = Graph([Node("a", "Identity", ["b"]), Node("b", "Identity", ["a"])])
    with pytest.raises(GraphRunError, match="cycle"):
        run_graph(cyclic, {}, ["a"])
