"""Issue 15's first ops in the real wasm guest, each against NumPy with TensorFlow's rules,
and the constant folding that lets a batch norm written out in them run at fused speed.

Broadcasting is NumPy's (TensorFlow's for these ops); `Maximum`/`Minimum` propagate NaN;
`LeakyRelu` is `x > 0 ? x : alpha * x` with alpha 0.2 by default.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_engine_ops import run_guest
from tests.test_redteam_guest import node
from wasi_lab.model_check import model_report
from wasi_lab.models.graphdef import GraphBuilder
from wasi_lab.runtime import BadModelError, Guest

TOL = 1e-5

BINARY = {
    "Sub": np.subtract,
    "Mul": np.multiply,
    "RealDiv": np.divide,
    "Maximum": np.maximum,
    "Minimum": np.minimum,
}


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(15)


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) + 0.05).astype(np.float32)


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize(
    "other", [(3,), (1, 4, 1, 1), (1, 1, 5, 3), ()], ids=["channel", "rows", "plane", "scalar"]
)
@pytest.mark.parametrize("const_first", [False, True])
def test_binary_with_a_constant(
    guest: Guest, rng: np.random.Generator, op: str, other: tuple[int, ...], const_first: bool
) -> None:
    x = _rand(rng, 1, 4, 5, 3)
    c = _rand(rng, *other)
    g = GraphBuilder()
    p, k = g.placeholder("input", list(x.shape)), g.const("c", c)
    g.op(op, "out", [k, p] if const_first else [p, k])
    want = BINARY[op](c, x) if const_first else BINARY[op](x, c)
    np.testing.assert_allclose(
        run_guest(guest, g.to_bytes(), x, "out"), want.ravel(), rtol=TOL, atol=TOL
    )


@pytest.mark.parametrize("op", list(BINARY))
def test_binary_of_two_computed_tensors_broadcasts(
    guest: Guest, rng: np.random.Generator, op: str
) -> None:
    """x (op) mean(x over H, W): a [1, 1, 1, C] tensor computed at run time stretches."""
    x = _rand(rng, 1, 4, 5, 3)
    g = GraphBuilder()
    p = g.placeholder("input", list(x.shape))
    m = g.op("Mean", "m", [p, g.const("axes", np.array([1, 2], np.int32))], keep_dims=True)
    g.op(op, "out", [m, p])
    want = BINARY[op](x.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(np.float32), x)
    np.testing.assert_allclose(
        run_guest(guest, g.to_bytes(), x, "out"), want.ravel(), rtol=1e-4, atol=1e-5
    )


def test_maximum_minimum_propagate_nan(guest: Guest) -> None:
    x = np.array([[np.nan, 1.0, -2.0, 3.0]], np.float32)
    for op, f in (("Maximum", np.maximum), ("Minimum", np.minimum)):
        g = GraphBuilder()
        g.op(op, "out", [g.placeholder("input", [1, 4]), g.const("c", np.float32(0.5))])
        np.testing.assert_array_equal(run_guest(guest, g.to_bytes(), x, "out"), f(x, 0.5).ravel())


UNARY = {
    "Rsqrt": lambda v: 1 / np.sqrt(v),
    "Sqrt": np.sqrt,
    "Sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "Tanh": np.tanh,
}


@pytest.mark.parametrize("op", [*UNARY, "LeakyRelu", "LeakyRelu alpha=0.01"])
def test_unary(guest: Guest, rng: np.random.Generator, op: str) -> None:
    x = _rand(rng, 2, 3, 7) * 3
    if op in ("Rsqrt", "Sqrt"):
        x = np.abs(x) + 0.1
    g = GraphBuilder()
    p = g.placeholder("input", list(x.shape))
    if op.startswith("LeakyRelu"):
        alpha = 0.01 if "alpha" in op else 0.2
        g.op("LeakyRelu", "out", [p], **({"alpha": 0.01} if "alpha" in op else {}))
        want = np.where(x > 0, x, x * np.float32(alpha))
    else:
        g.op(op, "out", [p])
        want = UNARY[op](x.astype(np.float64))
    np.testing.assert_allclose(
        run_guest(guest, g.to_bytes(), x, "out"), want.ravel(), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_concat(guest: Guest, rng: np.random.Generator, axis: int) -> None:
    x = _rand(rng, 1, 3, 2, 4)
    c = _rand(rng, *[2 if d == axis % 4 else s for d, s in enumerate(x.shape)])
    g = GraphBuilder()
    p = g.placeholder("input", list(x.shape))
    r = g.op("Relu", "r", [p])
    g.op("ConcatV2", "out", [p, g.const("c", c), r, g.const("axis", np.array(axis, np.int32))])
    want = np.concatenate([x, c, np.maximum(x, 0)], axis=axis)
    np.testing.assert_array_equal(run_guest(guest, g.to_bytes(), x, "out"), want.ravel())


def test_concat_shape_mismatch_is_refused(guest: Guest) -> None:
    g = GraphBuilder()
    p = g.placeholder("input", [1, 3, 4])
    g.op(
        "ConcatV2",
        "out",
        [p, g.const("c", np.zeros((1, 2, 2), np.float32)), g.const("axis", np.array(2, np.int32))],
    )
    with pytest.raises(BadModelError, match="cannot concatenate"):
        run_guest(guest, g.to_bytes(), np.zeros((1, 3, 4), np.float32), "out")


def test_expand_dims_identity_n_placeholder_with_default(
    guest: Guest, rng: np.random.Generator
) -> None:
    x = _rand(rng, 2, 3)
    g = GraphBuilder()
    p = g.placeholder("input", [2, 3])
    e = g.op("ExpandDims", "e", [p, g.const("a", np.array(-1, np.int32))])
    n = g.op("IdentityN", "n", [e])
    d = g.op(
        "PlaceholderWithDefault",
        "d",
        [g.const("dflt", np.full((2, 3, 1), 2, np.float32))],
        dtype="float32",
        shape=[2, 3, 1],
    )
    g.op("Mul", "out", [n, d])
    np.testing.assert_allclose(run_guest(guest, g.to_bytes(), x, "out"), (2 * x).ravel())


def _conv_with_written_out_bn(rng: np.random.Generator, eps: float = 1e-3):
    """A Keras 3 style frozen conv + BN: the BN as Rsqrt/Mul/Sub/AddV2 over constants."""
    x = _rand(rng, 1, 6, 6, 3)
    w = _rand(rng, 3, 3, 3, 8)
    gamma, beta, mean = _rand(rng, 8), _rand(rng, 8), _rand(rng, 8)
    var = np.abs(_rand(rng, 8)) + 0.1
    g = GraphBuilder()
    conv = g.op(
        "Conv2D",
        "conv",
        [g.placeholder("input", list(x.shape)), g.const("w", w)],
        strides=[1, 1, 1, 1],
        padding="SAME",
    )
    inv = g.op(
        "Rsqrt",
        "bn/rsqrt",
        [g.op("AddV2", "bn/add", [g.const("var", var), g.const("eps", np.float32(eps))])],
    )
    scale = g.op("Mul", "bn/scale", [inv, g.const("gamma", gamma)])
    shift = g.op(
        "Sub",
        "bn/shift",
        [g.const("beta", beta), g.op("Mul", "bn/mean_scaled", [g.const("mean", mean), scale])],
    )
    y = g.op("AddV2", "bn/out", [g.op("Mul", "bn/mul", [conv, scale]), shift])
    g.op("Relu", "out", [y])
    ref = np.zeros((1, 6, 6, 8), np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    for i in range(6):
        for j in range(6):
            ref[0, i, j] = np.tensordot(xp[0, i : i + 3, j : j + 3], w, axes=3)
    s = gamma / np.sqrt(var.astype(np.float64) + eps)
    want = np.maximum(ref * s + (beta - mean * s), 0)
    return g.to_bytes(), x, want


def test_written_out_batch_norm_folds_into_the_convolution(
    guest: Guest, rng: np.random.Generator
) -> None:
    pb, x, want = _conv_with_written_out_bn(rng)
    np.testing.assert_allclose(run_guest(guest, pb, x, "out"), want.ravel(), rtol=1e-4, atol=1e-4)
    # One step: the convolution, with the scale, shift and ReLU folded in (fused speed).
    name = b"out"
    mp, npp = guest.write_bytes(pb), guest.write_bytes(name)
    h = guest.call("load_model_with_output", mp, len(pb), npp, len(name))
    out = guest.alloc(1 << 16)
    steps = json.loads(guest.read_bytes(out, guest.call("step_info", h, out, 1 << 16)))["steps"]
    assert [(s["op"], s["act"]) for s in steps] == [("Conv 3x3", "relu")]


def test_report_calls_the_folded_ops_folded(guest: Guest, rng: np.random.Generator) -> None:
    pb, _, _ = _conv_with_written_out_bn(rng)
    # model_report picks the classifier's output: put a Softmax on top.
    r = model_report(pb + node("Softmax", "prob", ["out"]), guest)
    assert r["loadable"], r["error"]
    status = {o["op"]: o["status"] for o in r["ops"]}
    assert status["Rsqrt"] == status["Sub"] == status["Mul"] == "folded"
    assert status["Conv2D"] == "supported" and r["steps"] == 2  # conv, softmax
