"""Keras' activations fused into the step before, in the real wasm guest.

Keras writes swish as `x * sigmoid(x)` (`tf.nn.silu`: `Mul(1.0, x)`, `Sigmoid`, `Mul`, and an
`IdentityN` from `tf.custom_gradient`) and hard swish as `x * relu6(x + 3) / 6`. The guest's
`engine/rewrite.rs` recognises those patterns, and the lowering makes each the activation
of the convolution, depthwise convolution or MatMul before it: one step, no extra buffer.
Where a pattern does not apply (its input has another reader, the step already has an
activation, other constants, another tensor in the gate) the graph runs as written, to the
same values. Each case checks the plan (`step_info`) and the output against NumPy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.test_engine_ops import run_guest
from tests.test_engine_scalar import scalar_module  # noqa: F401 - the fixture
from wasi_lab.models.graphdef import GraphBuilder
from wasi_lab.paths import default_module
from wasi_lab.runtime import BadModelError, Guest
from wasi_lab.stepthrough import read_plan

SHAPE = (1, 6, 7, 8)
COUT = 12


def sigmoid(v: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-v.astype(np.float64)))).astype(np.float32)


def hard_sigmoid(v: np.ndarray) -> np.ndarray:
    return np.clip(v + 3.0, 0.0, 6.0) / 6.0


def swish(v: np.ndarray) -> np.ndarray:
    return v * sigmoid(v)


def hard_swish(v: np.ndarray) -> np.ndarray:
    return v * hard_sigmoid(v)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1515)


def conv(g: GraphBuilder, rng: np.random.Generator, x: str) -> tuple[str, np.ndarray, np.ndarray]:
    """A 1x1 convolution with a bias: (node, weights [cin, cout], bias)."""
    w = (rng.standard_normal((1, 1, SHAPE[-1], COUT)) * 1.5).astype(np.float32)
    b = rng.standard_normal(COUT).astype(np.float32)
    c = g.op("Conv2D", "conv", [x, g.const("w", w)], strides=[1, 1, 1, 1], padding="VALID")
    return g.op("BiasAdd", "bias", [c, g.const("b", b)]), w[0, 0], b


def conv_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (x.astype(np.float64) @ w + b).astype(np.float32)


# ---- the patterns as TensorFlow writes them: (builder of the activation, NumPy, act name)
Pattern = Callable[[GraphBuilder, str], str]


def silu(g: GraphBuilder, x: str, name: str = "out") -> str:
    """tf.nn.silu as TF 2.21 freezes it (Keras 3's and tf_keras' swish alike)."""
    beta = g.const("beta", np.float32(1.0))
    s = g.op("Sigmoid", "sig", [g.op("Mul", "scaled", [beta, x])])
    m = g.op("Mul", "swish", [x, s])
    n = g.op("IdentityN", "idn", [m, x, beta])
    return g.op("Identity", name, [n])


def swish_gate_first(g: GraphBuilder, x: str) -> str:
    return g.op("Mul", "out", [g.op("Sigmoid", "sig", [x]), x])


def lone_sigmoid(g: GraphBuilder, x: str) -> str:
    return g.op("Sigmoid", "out", [x])


def keras3_hard_swish(g: GraphBuilder, x: str) -> str:
    a = g.op("AddV2", "add", [x, g.const("three", np.float32(3.0))])
    h = g.op("RealDiv", "div", [g.op("Relu6", "r6", [a]), g.const("six", np.float32(6.0))])
    return g.op("Mul", "out", [x, h])


def tfkeras_hard_sigmoid(g: GraphBuilder, x: str) -> str:
    a = g.op("AddV2", "add", [g.const("three", np.float32(3.0)), x])
    return g.op("Mul", "out", [g.const("sixth", np.float32(1 / 6)), g.op("Relu6", "r6", [a])])


PATTERNS: dict[str, tuple[Pattern, Callable[[np.ndarray], np.ndarray], str]] = {
    "silu": (silu, swish, "swish"),
    "swish-gate-first": (swish_gate_first, swish, "swish"),
    "sigmoid": (lone_sigmoid, sigmoid, "sigmoid"),
    "hard-swish-keras3": (keras3_hard_swish, hard_swish, "hard_swish"),
    "hard-sigmoid-tfkeras": (tfkeras_hard_sigmoid, hard_sigmoid, "hard_sigmoid"),
}


def plan_of(guest: Guest, pb: bytes, output: str) -> list[tuple[str, str]]:
    """(op, act) of every step the guest plans for `pb`."""
    mp, name = guest.write_bytes(pb), output.encode()
    np_ = guest.write_bytes(name)
    try:
        h = guest.call("load_model_with_output", mp, len(pb), np_, len(name))
    finally:
        guest.dealloc(mp, len(pb))
        guest.dealloc(np_, len(name))
    try:
        return [(s.op, s.act) for s in read_plan(guest, h).steps]
    finally:
        guest.call("free_model", h)


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_pattern_is_the_convolutions_activation(
    guest: Guest, rng: np.random.Generator, pattern: str
) -> None:
    build, ref, act = PATTERNS[pattern]
    g = GraphBuilder()
    c, w, b = conv(g, rng, g.placeholder("input", list(SHAPE)))
    out = build(g, c)
    pb = g.to_bytes()
    assert plan_of(guest, pb, out) == [("Conv 1x1", act)]
    x = (rng.standard_normal(SHAPE) * 2).astype(np.float32)
    got = run_guest(guest, pb, x, out)
    np.testing.assert_allclose(got, ref(conv_ref(x, w, b)).ravel(), rtol=1e-5, atol=1e-6)


def test_depthwise_and_matmul_take_the_swish(guest: Guest, rng: np.random.Generator) -> None:
    g = GraphBuilder()
    x = g.placeholder("input", list(SHAPE))
    k = rng.standard_normal((3, 3, SHAPE[-1], 1)).astype(np.float32)
    d = g.op(
        "DepthwiseConv2dNative", "dw", [x, g.const("k", k)], strides=[1, 1, 1, 1], padding="SAME"
    )
    r = g.op("Reshape", "flat", [silu(g, d), g.const("shape", np.array([42, 8], np.int32))])
    mw = rng.standard_normal((8, 5)).astype(np.float32)
    m = g.op("MatMul", "mm", [r, g.const("m", mw)])
    out = g.op("Mul", "out2", [m, g.op("Sigmoid", "sig2", [m])])
    pb = g.to_bytes()
    assert plan_of(guest, pb, out) == [("Depthwise 3x3", "swish"), ("MatMul", "swish")]
    xv = rng.standard_normal(SHAPE).astype(np.float32)
    pad = np.pad(xv[0].astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    dw = sum(pad[i : i + 6, j : j + 7] * k[i, j, :, 0] for i in range(3) for j in range(3))
    want = swish((swish(dw.astype(np.float32)).reshape(42, 8) @ mw).astype(np.float32))
    np.testing.assert_allclose(run_guest(guest, pb, xv, out), want.ravel(), rtol=2e-5, atol=1e-5)


# ---- where the patterns do not apply: the graph runs as written, to the same values


def shared_input(g: GraphBuilder, x: str) -> str:
    """swish(x) + x: x has another reader, so the swish is a step of its own."""
    return g.op("AddV2", "out", [silu(g, x, "act"), x])


def after_relu(g: GraphBuilder, x: str) -> str:
    """relu then swish: the convolution's activation is taken already."""
    r = g.op("Relu", "relu", [x])
    return g.op("Mul", "out", [r, g.op("Sigmoid", "sig", [r])])


def beta_two(g: GraphBuilder, x: str) -> str:
    """x * sigmoid(2x): a swish with beta 2 is not Keras' swish."""
    s = g.op("Sigmoid", "sig", [g.op("Mul", "scaled", [g.const("beta", np.float32(2.0)), x])])
    return g.op("Mul", "out", [x, s])


def sigmoid_read_twice(g: GraphBuilder, x: str) -> str:
    """x * sigmoid(x) + sigmoid(x): the gate has another reader."""
    s = g.op("Sigmoid", "sig", [x])
    return g.op("AddV2", "out", [g.op("Mul", "m", [x, s]), s])


def other_gate(g: GraphBuilder, x: str) -> str:
    """x * sigmoid(relu(x)): the gate reads another tensor than the one it multiplies."""
    return g.op("Mul", "out", [x, g.op("Sigmoid", "sig", [g.op("Relu", "relu", [x])])])


def plus_two(g: GraphBuilder, x: str) -> str:
    """x * relu6(x + 2) / 6: not a hard swish."""
    a = g.op("AddV2", "add", [x, g.const("two", np.float32(2.0))])
    h = g.op("RealDiv", "div", [g.op("Relu6", "r6", [a]), g.const("six", np.float32(6.0))])
    return g.op("Mul", "out", [x, h])


def relu(v: np.ndarray) -> np.ndarray:
    return np.maximum(v, 0)


UNFUSED: dict[str, tuple[Pattern, Callable[[np.ndarray], np.ndarray], list[tuple[str, str]]]] = {
    "input-read-twice": (
        shared_input,
        lambda v: swish(v) + v,
        [("Conv 1x1", "none"), ("Affine", "swish"), ("Add", "none")],
    ),
    "act-taken": (
        after_relu,
        lambda v: swish(relu(v)),
        [("Conv 1x1", "relu"), ("Affine", "swish")],
    ),
    "beta-two": (
        beta_two,
        lambda v: v * sigmoid(2 * v),
        [("Conv 1x1", "none"), ("Affine", "sigmoid"), ("Mul", "none")],
    ),
    "gate-read-twice": (
        sigmoid_read_twice,
        lambda v: swish(v) + sigmoid(v),
        [("Conv 1x1", "none"), ("Sigmoid", "none"), ("Mul", "none"), ("Add", "none")],
    ),
    "other-gate": (
        other_gate,
        lambda v: v * sigmoid(relu(v)),
        [("Conv 1x1", "none"), ("Affine", "relu"), ("Sigmoid", "none"), ("Mul", "none")],
    ),
    "plus-two": (
        plus_two,
        lambda v: v * np.clip(v + 2, 0, 6) / 6,
        [("Conv 1x1", "none"), ("Affine", "relu6"), ("RealDiv", "none"), ("Mul", "none")],
    ),
}


@pytest.mark.parametrize("case", list(UNFUSED))
def test_pattern_that_does_not_apply_runs_as_written(
    guest: Guest, rng: np.random.Generator, case: str
) -> None:
    build, ref, steps = UNFUSED[case]
    g = GraphBuilder()
    c, w, b = conv(g, rng, g.placeholder("input", list(SHAPE)))
    out = build(g, c)
    pb = g.to_bytes()
    assert plan_of(guest, pb, out) == steps
    x = (rng.standard_normal(SHAPE) * 2).astype(np.float32)
    got = run_guest(guest, pb, x, out)
    np.testing.assert_allclose(got, ref(conv_ref(x, w, b)).ravel(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pattern", ["silu", "hard-swish-keras3"])
def test_fused_and_unfused_give_the_same_bits(
    guest: Guest, rng: np.random.Generator, pattern: str
) -> None:
    """The same activation fused into the convolution and run as the ops TensorFlow wrote
    (the convolution read under two names hides the pattern from the rewrite, not from
    the arithmetic): the very same floats, NaN where TensorFlow has it."""
    build = PATTERNS[pattern][0]
    outs = []
    x = (rng.standard_normal(SHAPE) * 4).astype(np.float32)
    x[0, 1, 2, 3] = np.nan  # one input pixel: its outputs are NaN, the others untouched
    for hide in (False, True):
        g = GraphBuilder()
        c, w, b = conv(g, np.random.default_rng(7), g.placeholder("input", list(SHAPE)))
        if hide:
            # Two Reshapes to its own shape: the pattern reads `x` under two names, so it
            # is not one (an Identity would not do: the rewrite reads through those).
            shape = g.const("shape", np.array([1, 6, 7, COUT], np.int32))
            a, b2 = g.op("Reshape", "a", [c, shape]), g.op("Reshape", "b2", [c, shape])
            out = fused_halves(g, build, a, b2)
        else:
            out = build(g, c)
        pb = g.to_bytes()
        fused = [a for _, a in plan_of(guest, pb, out)]
        assert (fused == [PATTERNS[pattern][2]]) != hide, fused
        outs.append(run_guest(guest, pb, x, out))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.isnan(outs[0].reshape(6, 7, COUT)[1, 2]).all()
    assert np.isfinite(np.delete(outs[0].reshape(42, COUT), 1 * 7 + 2, axis=0)).all()


def fused_halves(g: GraphBuilder, build: Pattern, a: str, b: str) -> str:
    """`build`'s pattern, with the multiplied `x` read as `a` and the gate's `x` as `b`."""
    if build is silu:
        s = g.op("Sigmoid", "sig", [g.op("Mul", "scaled", [g.const("beta", np.float32(1.0)), b])])
        return g.op("Mul", "out", [a, s])
    add = g.op("AddV2", "add", [b, g.const("three", np.float32(3.0))])
    h = g.op("RealDiv", "div", [g.op("Relu6", "r6", [add]), g.const("six", np.float32(6.0))])
    return g.op("Mul", "out", [a, h])


def test_edges_follow_tensorflow(guest: Guest) -> None:
    """On the input itself (a step of its own): NaN stays NaN, swish(inf) = inf,
    swish(-inf) = -inf * 0 = NaN as in TensorFlow, sigmoid saturates to exactly 0 and 1."""
    x = np.array([[np.nan, np.inf, -np.inf, 0.0, -100.0, 100.0, 3.0, -3.0]], np.float32)
    g = GraphBuilder()
    p = g.placeholder("input", [1, 8])
    out = g.op("Mul", "out", [p, g.op("Sigmoid", "sig", [p])])
    got = run_guest(guest, g.to_bytes(), x, out)
    with np.errstate(invalid="ignore", over="ignore"):
        want = x * (1 / (1 + np.exp(-x.astype(np.float64)))).astype(np.float32)
    np.testing.assert_allclose(got, want.ravel(), rtol=1e-6, atol=1e-30, equal_nan=True)
    g = GraphBuilder()
    got = run_guest(guest, _sigmoid_graph(g), x, "out")
    assert got[1] == 1.0 and got[2] == 0.0 and np.isnan(got[0])


def _sigmoid_graph(g: GraphBuilder) -> bytes:
    g.op("Sigmoid", "out", [g.placeholder("input", [1, 8])])
    return g.to_bytes()


def test_the_rewritten_ops_are_not_graph_ops(guest: Guest) -> None:
    """`_Swish` is the engine's own node: a graph that names it is refused as unsupported."""
    g = GraphBuilder()
    g.op("_Swish", "out", [g.placeholder("input", [1, 4])])
    with pytest.raises(BadModelError, match="unsupported op.*_Swish"):
        plan_of(guest, g.to_bytes(), "out")


def test_residual_add_reads_through_dropouts_identity(
    guest: Guest, rng: np.random.Generator
) -> None:
    """tf_keras writes its inference Dropout as an Identity between a block's last batch
    norm and the residual Add: read through it, the Add fuses into the convolution."""
    g = GraphBuilder()
    x = g.placeholder("input", [1, 6, 7, COUT])
    w = rng.standard_normal((1, 1, COUT, COUT)).astype(np.float32)
    c = g.op("Conv2D", "conv", [x, g.const("w", w)], strides=[1, 1, 1, 1], padding="VALID")
    drop = g.op("Identity", "drop", [g.op("Identity", "drop0", [c])])
    out = g.op("AddV2", "out", [drop, x])
    pb = g.to_bytes()
    mp, name = guest.write_bytes(pb), out.encode()
    np_ = guest.write_bytes(name)
    h = guest.call("load_model_with_output", mp, len(pb), np_, len(name))
    try:
        steps = read_plan(guest, h).steps
    finally:
        guest.call("free_model", h)
    assert [(s.op, s.params.get("residual")) for s in steps] == [("Conv 1x1", True)]
    xv = rng.standard_normal((1, 6, 7, COUT)).astype(np.float32)
    want = xv.astype(np.float64) @ w[0, 0] + xv
    np.testing.assert_allclose(run_guest(guest, pb, xv, out), want.ravel(), rtol=1e-5, atol=1e-5)


def test_scalar_build_agrees(scalar_module: Path, rng: np.random.Generator) -> None:  # noqa: F811
    """The portable `scalar` build runs the curves in `ops` (a depthwise with its swish, a
    hard swish and a sigmoid after it, as steps of their own since its activation is
    taken): the SIMD build agrees to float rounding."""
    g = GraphBuilder()
    c, _, _ = conv(g, rng, g.placeholder("input", list(SHAPE)))
    k = rng.standard_normal((3, 3, COUT, 1)).astype(np.float32)
    d = g.op(
        "DepthwiseConv2dNative", "dw", [c, g.const("k", k)], strides=[1, 1, 1, 1], padding="SAME"
    )
    hs = keras3_hard_swish(g, silu(g, d, "sw"))
    out = g.op("Sigmoid", "gate", [hs])
    pb = g.to_bytes()
    x = (rng.standard_normal(SHAPE) * 2).astype(np.float32)
    simd, scalar = Guest(default_module()), Guest(scalar_module)
    assert [a for _, a in plan_of(simd, pb, out)] == ["none", "swish", "hard_swish", "none"]
    np.testing.assert_allclose(
        run_guest(scalar, pb, x, out), run_guest(simd, pb, x, out), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "pattern", ["silu", "sigmoid", "hard-swish-keras3", "hard-sigmoid-tfkeras"]
)
def test_step_through_recomputes_a_fused_curve(
    tmp_path: Path, module_path: Path, pattern: str
) -> None:
    """The step-through view (notebook 09) recomputes a convolution's value in NumPy with
    the activation the plan fused into it, swish and the hard curves included."""
    from wasi_lab import stepthrough as st
    from wasi_lab.predict import Classifier

    g = GraphBuilder()
    rng = np.random.default_rng(3)
    x = g.placeholder("input", [1, 224, 224, 3])
    w = rng.standard_normal((1, 1, 3, 8)).astype(np.float32) * 2
    c = g.op("Conv2D", "conv", [x, g.const("w", w)], strides=[1, 1, 1, 1], padding="VALID")
    act = PATTERNS[pattern][0](g, c)
    m = g.op("Mean", "m", [act, g.const("axes", np.array([1, 2], np.int32))])
    g.op("Softmax", "probs", [m])
    pb = tmp_path / "curve.pb"
    pb.write_bytes(g.to_bytes())
    clf = Classifier(pb, module=module_path)
    with st.StepThrough(clf, rng.standard_normal((1, 224, 224, 3)).astype(np.float32)) as s:
        step = s.plan.steps[0]
        assert step.act == PATTERNS[pattern][2]
        values = s.run_to(step.index)
        for pos in (None, (0, 3, 4, 5)):
            r = st.recompute(values, pos)
            assert r is not None and r.difference <= 1e-5 * (1 + abs(r.numpy)), r.summary()
