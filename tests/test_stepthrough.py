"""Step-through inference against the real guest and the bundled EfficientNet-Lite0."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from wasi_lab import stepthrough as st
from wasi_lab.predict import Classifier
from wasi_lab.runtime import BadArgumentError, BadHandleError, LengthMismatchError


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier("efficientnet-lite0")


@pytest.fixture(scope="module")
def tensor(clf: Classifier) -> np.ndarray:
    return clf.preprocess("images/grace_hopper.jpg")


@pytest.fixture(scope="module")
def stepper(clf: Classifier, tensor: np.ndarray):
    with st.StepThrough(clf, tensor) as s:
        yield s


def test_step_info_lists_every_step_inside_memory(
    clf: Classifier, tensor: np.ndarray, stepper: st.StepThrough
) -> None:
    plan = stepper.plan
    g = clf.guest
    cap = 4096
    out = g.alloc(cap)
    try:
        n = g.call("model_info", clf.handle, out, cap)
        info = json.loads(g.read_bytes(out, n))
    finally:
        g.dealloc(out, cap)
    assert len(plan.steps) == info["steps"] > 40
    assert [s.index for s in plan.steps] == list(range(len(plan.steps)))
    # The same steps, in the same order, as the guest's own timed profile.
    profile = clf.profile(tensor)
    assert [(s.node, s.op) for s in plan.steps] == [(p["node"], p["op"]) for p in profile]
    size = g.memory.data_len(g.store)
    heap_base = g.global_value("__heap_base")
    for s in plan.steps:
        spans = [*s.inputs, s.output, *s.weights]
        for sp in spans:
            assert heap_base <= sp.ptr and sp.end <= size, (s.index, sp)
            assert sp.nbytes == 4 * int(np.prod(sp.shape)), (s.index, sp)
        # A step never writes over what it reads.
        for sp in [*s.inputs, *s.weights]:
            assert sp.end <= s.output.ptr or s.output.end <= sp.ptr, (s.index, sp)
    assert plan.steps[0].inputs[0] == plan.input
    assert plan.input.shape == (1, 224, 224, 3)
    ops = {s.op for s in plan.steps}
    assert {"Conv 1x1", "Conv 3x3/2", "Depthwise 3x3", "Depthwise 5x5", "MatMul"} <= ops


def test_step_info_reports_its_length_when_the_buffer_is_short(clf: Classifier) -> None:
    g = clf.guest
    out = g.alloc(16)
    try:
        n = g.call("step_info", clf.handle, out, 16)
        head = g.read_bytes(out, 16)
    finally:
        g.dealloc(out, 16)
    assert n > 10_000
    assert head == b'{"input":{"ptr":'


def test_last_step_is_bit_identical_to_infer_tensor(
    clf: Classifier, tensor: np.ndarray, stepper: st.StepThrough
) -> None:
    last = len(stepper) - 1
    values = stepper.run_to(last)
    ref = clf.infer_tensor(tensor)
    assert values.output.reshape(-1).tobytes() == ref.tobytes()
    assert stepper.plan.output == values.step.output
    # Stopping half-way leaves the plan usable: a full inference afterwards is unchanged.
    stepper.run_to(10)
    assert clf.infer_tensor(tensor).tobytes() == ref.tobytes()


def _steps(plan: st.Plan, op: str, **params: object) -> list[st.StepInfo]:
    return [
        s for s in plan.steps if s.op == op and all(s.params.get(k) == v for k, v in params.items())
    ]


@pytest.mark.parametrize(
    ("op", "params"),
    [
        ("Conv 1x1", {}),
        ("Conv 1x1", {"residual": True}),
        ("Conv 3x3/2", {}),
        ("Depthwise 3x3", {}),
        ("Depthwise 5x5", {}),
        ("Depthwise 3x3/2", {}),
        ("MatMul", {}),
        ("Mean", {}),
        ("Softmax", {}),
    ],
)
def test_numpy_recomputes_the_guests_value(stepper: st.StepThrough, op: str, params: dict) -> None:
    step = _steps(stepper.plan, op, **params)[0]
    values = stepper.run_to(step.index)
    corner = tuple(0 for _ in values.output.shape)  # padding taps for the windows
    for pos in (None, corner):
        r = st.recompute(values, pos)
        assert r is not None
        assert r.difference <= 1e-4, r.summary()
        assert r.guest == float(values.output[r.position])
    # The recomputed value is not trivially equal: it depends on the weights read back.
    if values.weights:
        before = st.recompute(values)
        name = next(iter(values.weights))
        values.weights[name] = values.weights[name] * 1.5
        after = st.recompute(values, before.position)
        assert abs(after.pre_activation - before.pre_activation) > 1e-3


def test_unpack_panels_inverts_the_guests_packing() -> None:
    rng = np.random.default_rng(0)
    k, n, nr = 5, 19, 8
    w = rng.standard_normal((k, n)).astype(np.float32)
    n_panels = (n + nr - 1) // nr
    panels = np.zeros(n_panels * k * nr, np.float32)
    for col in range(n):  # guest/src/engine/kernels/gemm.rs, PackedB::new
        for p in range(k):
            panels[((col // nr) * k + p) * nr + col % nr] = w[p, col]
    assert np.array_equal(st.unpack_panels(panels, k, n, nr), w)
    with pytest.raises(ValueError):
        st.unpack_panels(panels[:-1], k, n, nr)


def test_bad_step_bad_handle_bad_length_are_guest_errors(
    clf: Classifier, stepper: st.StepThrough
) -> None:
    g = clf.guest
    n = len(stepper)
    for bad in (n, n + 100, -1):
        with pytest.raises(BadArgumentError) as e:
            stepper.run_raw(bad)
        assert e.value.code == -7 and f"0..={n - 1}" in e.value.message
    with pytest.raises(BadHandleError) as e:
        g.call("run_to_step", 9999, stepper.tensor_ptr, stepper.tensor.nbytes, 0)
    assert e.value.code == -6
    with pytest.raises(LengthMismatchError) as e:
        g.call("run_to_step", clf.handle, stepper.tensor_ptr, stepper.tensor.nbytes - 4, 0)
    assert e.value.code == -2
    out = g.alloc(64)
    try:
        with pytest.raises(BadHandleError):
            g.call("step_info", 9999, out, 64)
    finally:
        g.dealloc(out, 64)
    assert g.poisoned is None
    assert stepper.run_raw(3) == 4


def test_widget_answers_from_its_cache(stepper: st.StepThrough) -> None:
    w = st.StepThroughWidget(stepper)
    assert (w.misses, w.hits) == (1, 0)
    assert w.play.max == w.slider.max == len(stepper) - 1
    target = _steps(stepper.plan, "Depthwise 5x5")[0].index
    t0 = time.perf_counter()
    w.slider.value = target
    first = time.perf_counter() - t0
    assert w.index == target and (w.misses, w.hits) == (2, 0)
    assert "Depthwise 5x5" in w.caption.value and "difference" in w.recomputed.value
    assert bytes(w.page_map.value[:4]) == b"\x89PNG" and len(w.feature_maps.value) > 100
    assert "this step&#x27;s output" in w.page_legend.value
    t0 = time.perf_counter()
    w.slider.value = 0
    back = time.perf_counter() - t0
    assert (w.misses, w.hits) == (2, 1)
    assert w.caption.value.startswith("<b>step 0: Conv 3x3/2")
    assert first < 0.5 and back < 0.5, (first, back)


def test_host_side_checks(
    clf: Classifier, stepper: st.StepThrough, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="the model's input"):
        st.StepThrough(clf, np.zeros((1, 224, 224, 1), np.float32))
    values = stepper.run_to(1)
    with pytest.raises(IndexError, match="outside the output"):
        st.recompute(values, (0, 0, 0, values.output.shape[3]))
    # A buffer too short for the plan: step_info says how long it is and read_plan asks again.
    monkeypatch.setattr(st, "_INFO_CAP", 16)
    assert st.read_plan(clf.guest, clf.handle) == stepper.plan
