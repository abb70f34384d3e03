"""Layout ops and constant folding in the real wasm guest, against NumPy with TensorFlow's
rules: `StridedSlice` (every mask), `Transpose`, `Pack`, Keras' `Shape` -> `StridedSlice` ->
`Pack` -> `Reshape` folded to a constant shape, `IdentityN`'s output k, and `Switch`/`Merge`
on a constant predicate (a bool `Const`, or a `PlaceholderWithDefault` of one), with the
branch the predicate never takes pruned before the ops are checked.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_engine_ops import run_guest
from tests.test_redteam_guest import node, raw_const
from wasi_lab.models.graphdef import GraphBuilder
from wasi_lab.runtime import BadModelError, Guest

DT_BOOL = 10


def _x(*shape: int) -> np.ndarray:
    return np.random.default_rng(16).standard_normal(shape).astype(np.float32)


def _ints(v: list[int]) -> np.ndarray:
    """int32 as TensorFlow writes them, int64 for values that need it."""
    return np.array(v, np.int64 if any(abs(i) >= 2**31 for i in v) else np.int32)


def steps(guest: Guest, pb: bytes, output: str) -> list[str]:
    """The ops of the plan's steps: what runs per inference."""
    mp, np_ = guest.write_bytes(pb), guest.write_bytes(output.encode())
    h = guest.call("load_model_with_output", mp, len(pb), np_, len(output))
    out = guest.alloc(1 << 16)
    info = json.loads(guest.read_bytes(out, guest.call("step_info", h, out, 1 << 16)))
    return [s["op"] for s in info["steps"]]


# (begin, end, strides, masks, the same slice in NumPy)
SLICES = {
    "rows-every-other-col": ([0, 1, 0, 0], [1, 4, 6, 3], [1, 1, 2, 1], {}, np.s_[:, 1:4, ::2, :]),
    "negative-stride": ([0, -1, 0, 0], [1, 0, 6, 3], [1, -1, 1, 1], {}, np.s_[:, -1:0:-1, :, :]),
    "begin-end-masks": (
        [0, 2, 0, 1],
        [0, 0, -1, 0],
        [1, 1, 1, 1],
        {"begin_mask": 0b0101, "end_mask": 0b1011},
        np.s_[:, 2:, :-1, 1:],
    ),
    "shrink": ([0, 2, 0, 0], [1, 3, 6, 3], [1, 1, 1, 1], {"shrink_axis_mask": 0b10}, np.s_[:, 2]),
    "ellipsis-new-axis": (
        [0, 0, 1],
        [0, 0, 3],
        [1, 1, 1],
        {"ellipsis_mask": 0b001, "new_axis_mask": 0b010},
        np.s_[..., None, 1:3],
    ),
    "clamped": ([0, -9, 0, 0], [1, 99, 6, 3], [1, 2, 1, 1], {}, np.s_[:, -9:99:2]),
    "everything": ([0], [0], [1], {"end_mask": 1}, np.s_[:]),
    "huge-steps": (
        [0, 0, -1, 0],
        [1, 5, -7, 3],
        [1, 2**63 - 1, -(2**63), 1],
        {},
        np.s_[:, :: 2**63 - 1, -1 : -7 : -(2**63)],
    ),
}


@pytest.mark.parametrize("case", list(SLICES))
@pytest.mark.parametrize("const", [False, True], ids=["computed", "constant"])
def test_strided_slice(guest: Guest, case: str, const: bool) -> None:
    begin, end, strides, masks, np_slice = SLICES[case]
    x, c = _x(1, 5, 6, 3), _x(1, 5, 6, 3) + 1
    want = (c if const else np.maximum(x, 0))[np_slice]
    g = GraphBuilder()
    # A constant's slice is read by a step (Mul by the input: ones), a computed one is output.
    p = g.placeholder("input", list(want.shape if const else x.shape))
    src = g.const("c", c) if const else g.op("Relu", "r", [p])
    ins = [src, g.const("b", _ints(begin)), g.const("e", _ints(end)), g.const("s", _ints(strides))]
    sl = g.op("StridedSlice", "sl", ins, **masks)
    out = g.op("Mul", "out", [sl, p]) if const else sl
    feed = np.ones(want.shape, np.float32) if const else x
    np.testing.assert_array_equal(run_guest(guest, g.to_bytes(), feed, out), want.ravel())


def test_strided_slice_of_a_computed_tensor_is_one_gather_step(guest: Guest) -> None:
    g = GraphBuilder()
    p = g.placeholder("input", [1, 5, 6, 3])
    b, e, s = g.const("b", _ints([0, 1])), g.const("e", _ints([1, 4])), g.const("s", _ints([1, 1]))
    g.op("StridedSlice", "out", [g.op("Relu", "r", [p]), b, e, s])
    assert steps(guest, g.to_bytes(), "out") == [
        "Affine",
        "StridedSlice",
    ]  # Relu runs as an Affine step


@pytest.mark.parametrize(
    "begin,end,stride",
    [
        ([0, 1, 1, 0], [1, 4, 5, 3], [1, 1, 1, 1]),  # whole pixels in rows: runs of 12
        ([0, 1, 0, 0], [1, 5, 6, 3], [1, 2, 1, 1]),  # every other row: runs of 18
        ([0, 0, 0, 1], [1, 5, 6, 3], [1, 1, 1, 1]),  # channels 1..3: runs of 2, one by one
        ([0, 0, 0, 0], [1, 5, 6, 3], [1, 1, -1, 1]),  # columns reversed: runs of 3
    ],
)
def test_strided_slice_copies_runs_like_single_values(
    guest: Guest, begin: list[int], end: list[int], stride: list[int]
) -> None:
    """The Gather step copies runs of consecutive source values as slices when they are
    long enough (`ops::GatherPlan`): exactly NumPy's slice either way."""
    x = _x(1, 5, 6, 3)
    g = GraphBuilder()
    r = g.op("Relu", "r", [g.placeholder("input", [1, 5, 6, 3])])
    if stride[2] < 0:
        begin, end = [0, 0, 5, 0], [1, 5, -7, 3]
    ins = [r, g.const("b", _ints(begin)), g.const("e", _ints(end)), g.const("s", _ints(stride))]
    g.op("StridedSlice", "out", ins)
    sl = tuple(
        slice(b, e if e > -7 else None, st) for b, e, st in zip(begin, end, stride, strict=True)
    )
    want = np.maximum(x, 0)[sl]
    np.testing.assert_array_equal(run_guest(guest, g.to_bytes(), x, "out"), want.ravel())


def test_strided_slice_out_of_range_index_is_refused(guest: Guest) -> None:
    g = GraphBuilder()
    p = g.placeholder("input", [1, 5])
    b, e, s = g.const("b", _ints([0, 7])), g.const("e", _ints([1, 8])), g.const("s", _ints([1, 1]))
    g.op("StridedSlice", "out", [p, b, e, s], shrink_axis_mask=2)
    with pytest.raises(BadModelError, match="index 7 is out of range"):
        run_guest(guest, g.to_bytes(), _x(1, 5), "out")


@pytest.mark.parametrize("perm", [[0, 3, 1, 2], [3, 2, 1, 0], [0, 1, 2, 3]])
def test_transpose(guest: Guest, perm: list[int]) -> None:
    x = _x(1, 4, 5, 3)
    g = GraphBuilder()
    p = g.placeholder("input", list(x.shape))
    g.op("Transpose", "out", [g.op("Relu", "r", [p]), g.const("perm", _ints(perm))])
    want = np.transpose(np.maximum(x, 0), perm)
    np.testing.assert_array_equal(run_guest(guest, g.to_bytes(), x, "out"), want.ravel())


def test_transpose_refuses_a_non_permutation(guest: Guest) -> None:
    g = GraphBuilder()
    g.op("Transpose", "out", [g.placeholder("input", [2, 3]), g.const("perm", _ints([0, 0]))])
    with pytest.raises(BadModelError, match="is not a permutation"):
        run_guest(guest, g.to_bytes(), _x(2, 3), "out")


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_pack_of_computed_tensors(guest: Guest, axis: int) -> None:
    x = _x(2, 3)
    g = GraphBuilder()
    p = g.placeholder("input", [2, 3])
    c = _x(2, 3) + 2
    g.op("Pack", "out", [p, g.op("Relu", "r", [p]), g.const("c", c)], axis=axis)
    want = np.stack([x, np.maximum(x, 0), c], axis=axis)
    np.testing.assert_array_equal(run_guest(guest, g.to_bytes(), x, "out"), want.ravel())


def test_flatten_by_shape_folds_to_a_constant_shape(guest: Guest) -> None:
    """Keras' Flatten: Shape -> StridedSlice -> Pack -> Reshape; no step but the Relu."""
    x = _x(1, 4, 5, 3)
    g = GraphBuilder()
    p = g.placeholder("input", list(x.shape))
    r = g.op("Relu", "r", [p])
    shape = g.op("Shape", "shape", [r], out_type="int32")
    n = g.op(
        "StridedSlice",
        "n",
        [shape, g.const("b", _ints([0])), g.const("e", _ints([1])), g.const("s", _ints([1]))],
        shrink_axis_mask=1,
    )
    packed = g.op("Pack", "packed", [n, g.const("m1", np.array(-1, np.int32))])
    flat = g.op("Reshape", "flat", [r, packed])
    g.op("Softmax", "out", [flat])
    pb = g.to_bytes()
    z = np.maximum(x, 0).reshape(1, -1).astype(np.float64)
    want = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(run_guest(guest, pb, x, "out"), want.ravel(), rtol=1e-5, atol=1e-7)
    assert steps(guest, pb, "out") == ["Affine", "Softmax"]  # Relu runs as an Affine step


def test_identity_n_output_k_is_input_k(guest: Guest) -> None:
    x = _x(2, 3)
    c = _x(2, 3)
    g = GraphBuilder()
    p = g.placeholder("input", [2, 3])
    n = g.op("IdentityN", "n", [p, g.const("c", c), g.op("Relu", "r", [p])])
    g.op("Sub", "out", [f"{n}:2", f"{n}:1"])
    want = np.maximum(x, 0) - c
    np.testing.assert_allclose(run_guest(guest, g.to_bytes(), x, "out"), want.ravel(), atol=1e-6)


def test_output_k_of_a_one_output_op_is_refused(guest: Guest) -> None:
    g = GraphBuilder()
    p = g.placeholder("input", [2, 3])
    g.op("Relu", "r", [p])
    g.op("Mul", "out", [p, "r:1"])
    with pytest.raises(BadModelError, match="uses output 1 of a node that has no such output"):
        run_guest(guest, g.to_bytes(), _x(2, 3), "out")


def _bool(name: str, value: bool, content: bool) -> bytes:
    """A bool Const (DT_BOOL), as tensor_content or as bool_val."""
    payload = bytes([0x22, 1, int(value)]) if content else bytes([11 << 3, int(value)])
    return raw_const(name, DT_BOOL, [], payload)


def _switch_merge(pred_nodes: bytes, pred: str, dead_op: str = "Relu") -> bytes:
    """Merge(dead_op(Switch:0), Switch:1 * 2) with Switch(input, pred), written by hand: the
    GraphBuilder refuses the inputs it has not seen (the predicates built here)."""
    g = GraphBuilder()
    g.placeholder("input", [2, 3])
    g.const("two", np.float32(2))
    return (
        pred_nodes
        + g.to_bytes()
        + node("Switch", "sw", ["input", pred])
        + node(dead_op, "f", ["sw:0"])
        + node("Mul", "t", ["sw:1", "two"])
        + node("Merge", "out", ["f", "t"])
    )


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("content", [True, False], ids=["tensor_content", "bool_val"])
def test_switch_merge_on_a_bool_const(guest: Guest, value: bool, content: bool) -> None:
    x = _x(2, 3)
    pb = _switch_merge(_bool("pred", value, content), "pred")
    want = x * 2 if value else np.maximum(x, 0)
    np.testing.assert_allclose(run_guest(guest, pb, x, "out"), want.ravel())


def test_switch_merge_on_a_placeholder_with_default(guest: Guest) -> None:
    """tf_keras' learning phase: PlaceholderWithDefault(False); the default decides."""
    x = _x(2, 3)
    pred = _bool("dflt", False, True) + node("PlaceholderWithDefault", "learning_phase", ["dflt"])
    pb = _switch_merge(pred, "learning_phase")
    np.testing.assert_allclose(run_guest(guest, pb, x, "out"), np.maximum(x, 0).ravel())


def test_the_untaken_branch_is_pruned_before_ops_are_checked(guest: Guest) -> None:
    """An op the engine does not run (Dropout's RandomUniform in TF1) on the dead branch."""
    x = _x(2, 3)
    pb = _switch_merge(_bool("pred", True, True), "pred", dead_op="RandomUniform")
    np.testing.assert_allclose(run_guest(guest, pb, x, "out"), (x * 2).ravel())
    with pytest.raises(BadModelError, match=r"unsupported op .*RandomUniform"):
        pb = _switch_merge(_bool("pred", False, True), "pred", dead_op="RandomUniform")
        run_guest(guest, pb, x, "out")


def test_a_computed_predicate_is_refused(guest: Guest) -> None:
    pb = _switch_merge(node("Relu", "pred", ["input"]), "pred")
    with pytest.raises(BadModelError, match="predicate is computed at run time"):
        run_guest(guest, pb, _x(2, 3), "out")
