"""Dilated `Conv2D` and `DepthwiseConv2dNative` in the real wasm guest against NumPy, SAME
padded for the spread kernel's size (TensorFlow's rule): a `Conv2D` visits only its real
taps (`Window::dilated`), a depthwise filter is spread with zeros between its taps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_engine_ops import run_guest
from wasi_lab.models.graphdef import GraphBuilder
from wasi_lab.runtime import Guest


def reference(x: np.ndarray, w: np.ndarray, d: tuple[int, int], same: bool, depthwise: bool):
    """NHWC convolution with dilation, stride 1, in float64."""
    kh, kw = (w.shape[0] - 1) * d[0] + 1, (w.shape[1] - 1) * d[1] + 1
    _, h, wd, c = x.shape
    if same:
        ph, pw = kh - 1, kw - 1
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    oh, ow = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = []
    for i in range(oh):
        row = []
        for j in range(ow):
            patch = x[0, i : i + kh : d[0], j : j + kw : d[1]].astype(np.float64)
            if depthwise:  # [kh, kw, c, m]
                row.append(np.einsum("hwc,hwcm->cm", patch, w).ravel())
            else:
                row.append(np.tensordot(patch, w, axes=3))
        out.append(row)
    return np.array(out)[None]


@pytest.mark.parametrize("depthwise", [False, True], ids=["conv2d", "depthwise"])
@pytest.mark.parametrize("same", [True, False], ids=["same", "valid"])
@pytest.mark.parametrize("d", [(2, 2), (3, 1)])
def test_dilated(guest: Guest, depthwise: bool, same: bool, d: tuple[int, int]) -> None:
    rng = np.random.default_rng(17)
    x = rng.standard_normal((1, 9, 8, 3)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 2 if depthwise else 4)).astype(np.float32)
    g = GraphBuilder()
    p = g.placeholder("input", list(x.shape))
    op = "DepthwiseConv2dNative" if depthwise else "Conv2D"
    g.op(
        op,
        "out",
        [p, g.const("w", w)],
        strides=[1, 1, 1, 1],
        padding="SAME" if same else "VALID",
        dilations=[1, d[0], d[1], 1],
    )
    want = reference(x, w, d, same, depthwise)
    got = run_guest(guest, g.to_bytes(), x, "out")
    np.testing.assert_allclose(got, want.ravel(), rtol=1e-4, atol=1e-4)


def test_step_through_recomputes_a_dilated_conv(tmp_path: Path, module_path: Path) -> None:
    """A dilated Conv2D's step lists its real taps (kh, kw) and their spacing (dh, dw), so
    the step-through view's NumPy recomputation walks the same taps, at a border too."""
    from wasi_lab import stepthrough as st
    from wasi_lab.predict import Classifier

    rng = np.random.default_rng(5)
    g = GraphBuilder()
    x = g.placeholder("input", [1, 224, 224, 3])
    w = rng.standard_normal((3, 3, 3, 8)).astype(np.float32)
    c = g.op(
        "Conv2D",
        "dil",
        [x, g.const("w", w)],
        strides=[1, 1, 1, 1],
        padding="SAME",
        dilations=[1, 3, 2, 1],
    )
    m = g.op("Mean", "m", [c, g.const("axes", np.array([1, 2], np.int32))])
    g.op("Softmax", "out", [m])
    pb = tmp_path / "dilated.pb"
    pb.write_bytes(g.to_bytes())
    clf = Classifier(pb, module=module_path)
    tensor = rng.standard_normal((1, 224, 224, 3)).astype(np.float32)
    with st.StepThrough(clf, tensor) as s:
        step = next(p for p in s.plan.steps if p.op.startswith("Conv"))
        assert (step.params["window"]["kh"], step.params["window"]["dh"]) == (3, 3)
        values = s.run_to(step.index)
        for pos in (None, (0, 0, 0, 0), (0, 223, 1, 5)):
            r = st.recompute(values, pos)
            assert r is not None and r.difference <= 1e-4, r.summary()
