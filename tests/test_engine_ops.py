"""Each op of the guest's engine against the NumPy reference, in the real wasm guest.

Small graphs are written with `GraphBuilder`, loaded with `load_model_with_output` and run
with `infer_raw` (any input shape); the reference is `wasi_lab.models.reference.run_graph`.
"""

from __future__ import annotations

import numpy as np
import pytest

from wasi_lab.models.graphdef import GraphBuilder, parse_graphdef
from wasi_lab.models.reference import run_graph
from wasi_lab.runtime import BadModelError, Guest

TOL = 1e-4


def run_guest(guest: Guest, pb: bytes, x: np.ndarray, output: str) -> np.ndarray:
    """Load `pb`, run it on `x`, free everything; returns the output as a flat array."""
    mp = guest.write_bytes(pb)
    name = output.encode()
    np_ = guest.write_bytes(name)
    try:
        h = guest.call("load_model_with_output", mp, len(pb), np_, len(name))
    finally:
        guest.dealloc(mp, len(pb))
        guest.dealloc(np_, len(name))
    try:
        n_out = guest.call("model_output_len", h)
        x = np.ascontiguousarray(x, dtype="<f4")
        ip = guest.write_bytes(x.tobytes())
        op = guest.alloc(4 * n_out)
        n = guest.call("infer_raw", h, ip, x.nbytes, op, 4 * n_out)
        y = guest.read_f32(op, n)
        guest.dealloc(ip, x.nbytes)
        guest.dealloc(op, 4 * n_out)
        return y
    finally:
        guest.call("free_model", h)


def check(guest: Guest, g: GraphBuilder, x: np.ndarray, output: str) -> None:
    pb = g.to_bytes()
    got = run_guest(guest, pb, x, output)
    want = run_graph(parse_graphdef(pb), {"input": x}, [output])[0].astype(np.float32).ravel()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL)


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("size", [(7, 9), (8, 8)])
def test_conv2d(
    guest: Guest, rng: np.random.Generator, k: int, stride: int, padding: str, size: tuple[int, int]
) -> None:
    g = GraphBuilder()
    x = g.placeholder("input", [1, *size, 3])
    w = g.const("w", rand(rng, k, k, 3, 20))
    g.op("Conv2D", "conv", [x, w], strides=[1, stride, stride, 1], padding=padding)
    check(guest, g, rand(rng, 1, *size, 3), "conv")


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("mult", [1, 2])
def test_depthwise(
    guest: Guest, rng: np.random.Generator, k: int, stride: int, padding: str, mult: int
) -> None:
    g = GraphBuilder()
    x = g.placeholder("input", [1, 11, 10, 13])
    w = g.const("w", rand(rng, k, k, 13, mult))
    g.op("DepthwiseConv2dNative", "dw", [x, w], strides=[1, stride, stride, 1], padding=padding)
    check(guest, g, rand(rng, 1, 11, 10, 13), "dw")


@pytest.mark.parametrize("op", ["FusedBatchNorm", "FusedBatchNormV3"])
@pytest.mark.parametrize("conv", ["Conv2D", "DepthwiseConv2dNative", None])
def test_batchnorm_relu6_fused(
    guest: Guest, rng: np.random.Generator, op: str, conv: str | None
) -> None:
    """conv -> BN -> Relu6 is folded into one step; the result must not change."""
    g = GraphBuilder()
    x = g.placeholder("input", [1, 9, 9, 6])
    y = x
    if conv == "Conv2D":
        y = g.op(
            "Conv2D",
            "conv",
            [x, g.const("w", rand(rng, 3, 3, 6, 6))],
            strides=[1, 2, 2, 1],
            padding="SAME",
        )
    elif conv:
        y = g.op(
            conv,
            "conv",
            [x, g.const("w", rand(rng, 3, 3, 6, 1))],
            strides=[1, 1, 1, 1],
            padding="SAME",
        )
    c = 6
    params = [
        g.const(n, v)
        for n, v in [
            ("gamma", rand(rng, c)),
            ("beta", rand(rng, c)),
            ("mean", rand(rng, c)),
            ("var", np.abs(rand(rng, c)) + 0.1),
        ]
    ]
    bn = g.op(op, "bn", [y, *params], epsilon=1e-3, is_training=False)
    g.op("Relu6", "out", [bn])
    check(guest, g, 3 * rand(rng, 1, 9, 9, 6), "out")


@pytest.mark.parametrize("kind", ["AvgPool", "MaxPool"])
@pytest.mark.parametrize("k,stride", [(3, 2), (2, 2), (3, 1), (5, 3)])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_pool(
    guest: Guest, rng: np.random.Generator, kind: str, k: int, stride: int, padding: str
) -> None:
    g = GraphBuilder()
    x = g.placeholder("input", [1, 7, 10, 4])
    g.op(kind, "pool", [x], ksize=[1, k, k, 1], strides=[1, stride, stride, 1], padding=padding)
    check(guest, g, rand(rng, 1, 7, 10, 4), "pool")


def test_classifier_head(guest: Guest, rng: np.random.Generator) -> None:
    """Mean -> MatMul -> BiasAdd -> Softmax, EfficientNet's head, with float_val consts."""
    g = GraphBuilder()
    x = g.placeholder("input", [1, 5, 5, 8])
    m = g.op(
        "Mean",
        "mean",
        [x, g.const("axes", np.array([1, 2], np.int32), use_content=False)],
        keep_dims=False,
    )
    mm = g.op("MatMul", "mm", [m, g.const("w", rand(rng, 10, 8))], transpose_b=True)
    b = g.op("BiasAdd", "bias", [mm, g.const("b", rand(rng, 10))])
    g.op("Softmax", "prob", [b])
    check(guest, g, rand(rng, 1, 5, 5, 8), "prob")


def test_mobilenet_tail(guest: Guest, rng: np.random.Generator) -> None:
    """TF-slim's tail: AvgPool VALID, 1x1 conv + BiasAdd, Squeeze, Softmax, Shape + Reshape."""
    g = GraphBuilder()
    x = g.placeholder("input", [1, 7, 7, 16])
    p = g.op("AvgPool", "pool", [x], ksize=[1, 7, 7, 1], strides=[1, 2, 2, 1], padding="VALID")
    c = g.op(
        "Conv2D",
        "logits_conv",
        [p, g.const("w", rand(rng, 1, 1, 16, 11))],
        strides=[1, 1, 1, 1],
        padding="SAME",
    )
    b = g.op("BiasAdd", "logits_bias", [c, g.const("b", rand(rng, 11))])
    s = g.op("Squeeze", "squeeze", [b], squeeze_dims=[1, 2])
    r = g.op("Reshape", "reshape", [s, g.const("target_shape", np.array([-1, 11], np.int32))])
    sm = g.op("Softmax", "softmax", [r])
    shape = g.op("Shape", "shape", [s])
    out = g.op("Reshape", "Predictions/Reshape_1", [sm, shape])
    g.op("Identity", "ident", [out])
    check(guest, g, rand(rng, 1, 7, 7, 16), "ident")
    # Without a name, the engine picks the Reshape after the last Softmax.
    pb = g.to_bytes()
    mp = guest.write_bytes(pb)
    h = guest.call("load_model", mp, len(pb))
    ip = guest.alloc(4096)
    n = guest.call("model_info", h, ip, 4096)
    info = guest.read_bytes(ip, n).decode()
    assert '"output":"Predictions/Reshape_1"' in info or '"output":"ident"' in info
    assert guest.call("model_output_len", h) == 11


def test_add_broadcast_relu_pad(guest: Guest, rng: np.random.Generator) -> None:
    g = GraphBuilder()
    x = g.placeholder("input", [1, 4, 5, 3])
    a = g.op(
        "Conv2D",
        "a",
        [x, g.const("w", rand(rng, 1, 1, 3, 3))],
        strides=[1, 1, 1, 1],
        padding="VALID",
    )
    s = g.op("AddV2", "residual", [a, x])
    r = g.op("Relu", "relu", [s])
    m = g.op("Mean", "rowmean", [r, g.const("ax", np.array([2], np.int32))], keep_dims=True)
    b = g.op("Add", "bcast", [r, m])  # [1,4,5,3] + [1,4,1,3]
    c = g.op("Add", "scalar", [b, g.const("half", np.float32(0.5))])
    p = g.op(
        "Pad", "pad", [c, g.const("pads", np.array([[0, 0], [1, 2], [0, 1], [0, 0]], np.int32))]
    )
    g.op("Relu6", "out", [p])
    check(guest, g, rand(rng, 1, 4, 5, 3), "out")


def test_standalone_batchnorm_and_unfused(guest: Guest, rng: np.random.Generator) -> None:
    """A conv output read twice cannot be fused in place; results still match."""
    g = GraphBuilder()
    x = g.placeholder("input", [1, 5, 5, 4])
    c = g.op(
        "Conv2D",
        "conv",
        [x, g.const("w", rand(rng, 3, 3, 4, 4))],
        strides=[1, 1, 1, 1],
        padding="SAME",
    )
    r = g.op("Relu6", "relu", [c])
    params = [
        g.const(n, v)
        for n, v in [
            ("gamma", rand(rng, 4)),
            ("beta", rand(rng, 4)),
            ("mean", rand(rng, 4)),
            ("var", np.abs(rand(rng, 4)) + 0.1),
        ]
    ]
    bn = g.op("FusedBatchNormV3", "bn", [c, *params], epsilon=1e-3, is_training=False)
    g.op("AddV2", "out", [r, bn])
    check(guest, g, rand(rng, 1, 5, 5, 4), "out")


def test_unsupported_op_is_named(guest: Guest) -> None:
    g = GraphBuilder()
    x = g.placeholder("input", [1, 2, 2, 1])
    g.op("Erf", "mystery", [x])
    with pytest.raises(BadModelError, match="Erf.*mystery"):
        run_guest(guest, g.to_bytes(), np.zeros((1, 2, 2, 1), np.float32), "mystery")
    # The guest keeps working.
    g = GraphBuilder()
    x = g.placeholder("input", [1, 2, 2, 1])
    g.op("Relu", "ok", [x])
    y = run_guest(
        guest, g.to_bytes(), np.array([-1, 2, -3, 4], np.float32).reshape(1, 2, 2, 1), "ok"
    )
    np.testing.assert_array_equal(y, [0, 2, 0, 4])


def test_dilations_refused(guest: Guest, rng: np.random.Generator) -> None:
    """Spatial dilations run (tests/test_engine_dilated_conv.py); a batch one is refused."""
    g = GraphBuilder()
    x = g.placeholder("input", [1, 6, 6, 2])
    g.op(
        "Conv2D",
        "conv",
        [x, g.const("w", rand(rng, 3, 3, 2, 2))],
        strides=[1, 1, 1, 1],
        padding="SAME",
        dilations=[2, 1, 1, 1],
    )
    with pytest.raises(BadModelError, match=r"dilations \[2, 1, 1, 1\] is not supported"):
        run_guest(guest, g.to_bytes(), rand(rng, 1, 6, 6, 2), "conv")
