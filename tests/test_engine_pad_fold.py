"""Keras' `ZeroPadding2D` folded into the convolution after it, in the real wasm guest.

`Pad(x, paddings)` read only by a VALID `Conv2D` / `DepthwiseConv2dNative` runs as that
convolution with `padding="EXPLICIT"` (no padded copy of the feature map); TensorFlow's own
`padding="EXPLICIT"` runs the same way. Each case is checked against NumPy
(`wasi_lab.models.reference`) and by the plan's steps (`step_info`): where the pattern does
not hold (another reader, padding on the batch or channels, a SAME convolution, a pool)
the `Pad` stays a step and the answer is still NumPy's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_engine_ops import run_guest
from wasi_lab.models import reference
from wasi_lab.models.graphdef import GraphBuilder, parse_graphdef
from wasi_lab.models.reference import run_graph
from wasi_lab.runtime import BadModelError, Guest

SHAPE = (1, 9, 8, 16)


def plan_steps(guest: Guest, pb: bytes, output: str) -> list[dict]:
    """The steps of the guest's plan for `pb` (op, window ...), as `step_info` lists them."""
    mp, name = guest.write_bytes(pb), output.encode()
    npp = guest.write_bytes(name)
    h = guest.call("load_model_with_output", mp, len(pb), npp, len(name))
    guest.dealloc(mp, len(pb))
    guest.dealloc(npp, len(name))
    try:
        cap = 1 << 16
        out = guest.alloc(cap)
        try:
            return json.loads(guest.read_bytes(out, guest.call("step_info", h, out, cap)))["steps"]
        finally:
            guest.dealloc(out, cap)
    finally:
        guest.call("free_model", h)


def ops(steps: list[dict]) -> list[str]:
    return [s["op"].split()[0] for s in steps]


def padded_graph(
    paddings: list[list[int]],
    reader: str = "DepthwiseConv2dNative",
    padding: str = "VALID",
    seed: int = 3,
) -> tuple[GraphBuilder, np.ndarray]:
    """input -> Pad(paddings) -> `reader` (stride 2, 3x3) named `out`, and an input."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    g = GraphBuilder()
    p = g.placeholder("input", list(SHAPE))
    pad = g.op("Pad", "pad", [p, g.const("paddings", np.array(paddings, np.int32))])
    c = SHAPE[3] + sum(paddings[3])
    window = {"strides": [1, 2, 2, 1], "padding": padding}
    if reader == "Conv2D":
        w = rng.standard_normal((3, 3, c, 5)).astype(np.float32)
        g.op("Conv2D", "out", [pad, g.const("w", w)], **window)
    elif reader == "DepthwiseConv2dNative":
        w = rng.standard_normal((3, 3, c, 1)).astype(np.float32)
        g.op("DepthwiseConv2dNative", "out", [pad, g.const("w", w)], **window)
    else:  # a pool
        g.op(reader, "out", [pad], ksize=[1, 3, 3, 1], **window)
    return g, x


def numpy_answer(g: GraphBuilder, x: np.ndarray, output: str = "out") -> np.ndarray:
    pb = g.to_bytes()
    return run_graph(parse_graphdef(pb), {"input": x}, [output])[0]


def assert_matches(guest: Guest, g: GraphBuilder, x: np.ndarray, output: str = "out") -> None:
    want = numpy_answer(g, x, output)
    got = run_guest(guest, g.to_bytes(), x, output)
    np.testing.assert_allclose(got, want.ravel(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("reader", ["Conv2D", "DepthwiseConv2dNative"])
@pytest.mark.parametrize(
    "hw",
    [
        ((0, 1), (0, 1)),  # Keras' correct_pad before a stride-2 conv on an even size
        ((1, 1), (1, 1)),
        ((1, 2), (0, 3)),
        ((3, 0), (0, 0)),
        ((0, 0), (0, 6)),  # the last columns of windows lie all in the padding
    ],
)
def test_pad_folds_into_a_valid_convolution(guest: Guest, reader: str, hw) -> None:
    paddings = [[0, 0], list(hw[0]), list(hw[1]), [0, 0]]
    g, x = padded_graph(paddings, reader)
    assert_matches(guest, g, x)
    steps = plan_steps(guest, g.to_bytes(), "out")
    assert ops(steps) == ["Conv" if reader == "Conv2D" else "Depthwise"]
    window = steps[0]["window"]
    assert (window["pad_top"], window["pad_left"]) == (hw[0][0], hw[1][0])


def test_report_calls_the_pad_folded(guest: Guest) -> None:
    from wasi_lab.model_check import model_report

    g, _ = padded_graph([[0, 0], [0, 1], [0, 1], [0, 0]])
    g.op("Softmax", "prob", ["out"])
    r = model_report(g.to_bytes(), guest)
    assert r["loadable"], r["error"]
    status = {o["op"]: o["status"] for o in r["ops"]}
    assert status["Pad"] == "folded" and r["steps"] == 2  # depthwise, softmax


@pytest.mark.parametrize(
    "case",
    [
        # padding on the batch or the channels is no window's padding
        dict(paddings=[[1, 0], [1, 1], [1, 1], [0, 0]]),
        dict(paddings=[[0, 0], [1, 1], [1, 1], [0, 2]]),
        # a SAME convolution pads again on its own
        dict(paddings=[[0, 0], [0, 1], [0, 1], [0, 0]], padding="SAME"),
        dict(paddings=[[0, 0], [0, 1], [0, 1], [0, 0]], reader="Conv2D", padding="SAME"),
        # pools: MaxPool would take the zeros as values, AvgPool would count them
        dict(paddings=[[0, 0], [1, 1], [1, 1], [0, 0]], reader="MaxPool"),
        dict(paddings=[[0, 0], [1, 1], [1, 1], [0, 0]], reader="AvgPool"),
    ],
    ids=["batch", "channels", "same-depthwise", "same-conv", "maxpool", "avgpool"],
)
def test_pad_stays_a_step_when_the_pattern_does_not_hold(guest: Guest, case: dict) -> None:
    g, x = padded_graph(**case)
    assert_matches(guest, g, x)
    assert "Pad" in ops(plan_steps(guest, g.to_bytes(), "out"))


def test_pad_with_another_reader_stays_a_step(guest: Guest) -> None:
    g, x = padded_graph([[0, 0], [1, 1], [1, 1], [0, 0]])
    # The padded map is read again (a second convolution), so it must exist.
    w = np.random.default_rng(5).standard_normal((3, 3, 16, 1)).astype(np.float32)
    g.op(
        "DepthwiseConv2dNative",
        "other",
        ["pad", g.const("w2", w)],
        strides=[1, 2, 2, 1],
        padding="VALID",
    )
    g.op("AddV2", "both", ["out", "other"])
    assert_matches(guest, g, x, "both")
    assert "Pad" in ops(plan_steps(guest, g.to_bytes(), "both"))


def test_pad_as_the_output_stays_a_step(guest: Guest) -> None:
    g, x = padded_graph([[0, 0], [0, 1], [0, 1], [0, 0]])
    # Reading the Pad itself as the output: nothing to fold it into.
    assert_matches(guest, g, x, "pad")
    assert ops(plan_steps(guest, g.to_bytes(), "pad")) == ["Pad"]


def test_padv2_with_a_value_is_refused_not_folded(guest: Guest) -> None:
    """`PadV2` pads with a chosen constant, which an explicit window cannot: the engine
    has no PadV2 and says so, rather than fold it as zeros."""
    rng = np.random.default_rng(7)
    g = GraphBuilder()
    p = g.placeholder("input", list(SHAPE))
    pads = g.const("paddings", np.array([[0, 0], [0, 1], [0, 1], [0, 0]], np.int32))
    pad = g.op("PadV2", "pad", [p, pads, g.const("value", np.float32(1.5))])
    w = rng.standard_normal((3, 3, 16, 1)).astype(np.float32)
    g.op(
        "DepthwiseConv2dNative",
        "out",
        [pad, g.const("w", w)],
        strides=[1, 2, 2, 1],
        padding="VALID",
    )
    x = rng.standard_normal(SHAPE).astype(np.float32)
    with pytest.raises(BadModelError, match="PadV2"):
        run_guest(guest, g.to_bytes(), x, "out")


def explicit_graph(reader: str, explicit: list[int] | None, seed: int = 11):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    g = GraphBuilder()
    p = g.placeholder("input", list(SHAPE))
    m = 5 if reader == "Conv2D" else 2  # output channels / channel multiplier
    w = rng.standard_normal((3, 2, SHAPE[3], m)).astype(np.float32)
    attrs = {"strides": [1, 2, 1, 1], "padding": "EXPLICIT"}
    if explicit is not None:
        attrs["explicit_paddings"] = explicit
    g.op(reader, "out", [p, g.const("w", w)], **attrs)
    return g, x, w


@pytest.mark.parametrize("reader", ["Conv2D", "DepthwiseConv2dNative"])
def test_explicit_padding_attribute(guest: Guest, reader: str) -> None:
    """TensorFlow's own `padding="EXPLICIT"` (what `tf.nn.conv2d(..., padding=[[0, 0],
    [1, 2], [0, 1], [0, 0]])` writes): NumPy pads, then slides a VALID window."""
    g, x, w = explicit_graph(reader, [0, 0, 1, 2, 0, 1, 0, 0])
    xp = np.pad(x, ((0, 0), (1, 2), (0, 1), (0, 0)))
    if reader == "Conv2D":
        want = reference.conv2d(xp, w, [1, 2, 1, 1], "VALID")
    else:
        want = reference.depthwise_conv2d(xp, w, [1, 2, 1, 1], "VALID")
    got = run_guest(guest, g.to_bytes(), x, "out")
    np.testing.assert_allclose(got, want.ravel(), rtol=1e-4, atol=1e-4)
    assert plan_steps(guest, g.to_bytes(), "out")[0]["window"]["pad_top"] == 1


@pytest.mark.parametrize(
    "explicit, message",
    [
        ([0, 0, 1, 1, 1, 1, 0, 1], "explicit_paddings"),  # on the channels
        ([1, 0, 1, 1, 1, 1, 0, 0], "explicit_paddings"),  # on the batch
        ([0, 0, 1, 1, 1, 1], "explicit_paddings"),  # six values
        ([0, 0, -1, 1, 1, 1, 0, 0], "explicit_paddings"),  # negative
        (None, "explicit_paddings"),  # missing
    ],
    ids=["channels", "batch", "short", "negative", "missing"],
)
def test_bad_explicit_paddings_are_refused_by_name(guest: Guest, explicit, message) -> None:
    g, x, _ = explicit_graph("Conv2D", explicit)
    with pytest.raises(BadModelError, match=message):
        run_guest(guest, g.to_bytes(), x, "out")


@pytest.mark.parametrize("name", ["keras3-mobilenetv2-1.0", "tfkeras-mobilenetv2-1.0"])
def test_keras_mobilenetv2_runs_no_pad_step(guest: Guest, name: str) -> None:
    """The four ZeroPadding2D before MobileNetV2's stride-2 depthwise convolutions fold: no
    Pad step is left in the plan (the oracle's cached graph; built with TensorFlow)."""
    from tests.oracle.cache import frozen_or_skip

    frozen = frozen_or_skip(name)
    assert frozen.ops["Pad"] == 4
    steps = plan_steps(guest, frozen.graph, frozen.output)
    assert "Pad" not in ops(steps)
    assert sum(s["op"] == "Depthwise 3x3/2" for s in steps) == 4
