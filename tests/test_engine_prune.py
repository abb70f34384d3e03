"""The guest plans only what the output needs, and names every op it cannot run at once.

Loading scans the GraphDef (names, ops, inputs), walks back from the output, and decodes
the attributes (weights included) of the live nodes only: an unused node, even a broken
constant or an unsupported op, no longer blocks loading. When live ops are unsupported,
one error lists each with its count and one node, before any weight is decoded.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_engine_ops import run_guest
from tests.test_redteam_guest import node, raw_const
from wasi_lab.models.graphdef import DataType, GraphBuilder, TensorShape
from wasi_lab.runtime import BadModelError, Guest

X = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)


def _input() -> bytes:
    return node("Placeholder", "input", [], dtype=DataType.DT_FLOAT, shape=TensorShape([1, 4]))


#: A float constant of 3 values whose tensor_content has 8 bytes: refused when decoded.
BROKEN = raw_const("broken", 1, [3], b"\x22\x08" + bytes(8))


def test_broken_constant_is_refused_when_live(guest: Guest) -> None:
    pb = _input() + BROKEN + node("AddV2", "out", ["input", "broken"])
    with pytest.raises(BadModelError, match="needs 12 bytes of tensor_content"):
        run_guest(guest, pb, X, "out")


def test_dead_branch_is_never_decoded(guest: Guest) -> None:
    """The same broken constant and an op the engine does not run, both off the path."""
    pb = (
        _input()
        + BROKEN
        + node("AddV2", "dead", ["input", "broken"])
        + node("Erf", "dead_erf", ["dead"])
        + node("Relu", "out", ["input"])
    )
    np.testing.assert_array_equal(run_guest(guest, pb, X, "out"), [0, 2, 0, 4])


def test_default_output_ignores_dead_branches(guest: Guest) -> None:
    """`load_model` (the classifier's Softmax) with an unsupported head on the side."""
    g = GraphBuilder()
    x = g.placeholder("input", [1, 4])
    g.op("Softmax", "prob", [x])
    g.op("Cumsum", "aux_head", [x, g.const("axis", np.array(1, np.int32))])
    pb = g.to_bytes()
    mp = guest.write_bytes(pb)
    h = guest.call("load_model", mp, len(pb))
    guest.dealloc(mp, len(pb))
    assert guest.call("model_output_len", h) == 4
    guest.call("free_model", h)


def test_every_unsupported_op_in_one_error(guest: Guest) -> None:
    g = GraphBuilder()
    r = g.op("Relu", "block0/relu", [g.placeholder("input", [1, 4])])
    e1 = g.op("Erf", "block1/erf", [r])
    s = g.op("Sin", "block1/sin", [e1])
    e2 = g.op("Erf", "block2/erf", [s])
    c = g.op("Cumsum", "block2/cumsum", [e2, g.const("axis", np.array(1, np.int32))])
    g.op("Relu", "out", [c])
    with pytest.raises(BadModelError) as info:
        run_guest(guest, g.to_bytes(), X, "out")
    msg = str(info.value)
    assert "unsupported ops on the path to output 'out'" in msg
    assert "Erf (2 nodes, e.g. 'block1/erf')" in msg
    assert "Sin (1 node, e.g. 'block1/sin')" in msg
    assert "Cumsum (1 node, e.g. 'block2/cumsum')" in msg
    assert "Supported ops: Placeholder, Const" in msg
    assert "load_model_with_output" in msg and "guest/src/engine/lower/" in msg
    # The ops are named before any weight is decoded: a broken live constant does not
    # hide them behind its own error.
    pb = _input() + BROKEN + node("AddV2", "sum", ["input", "broken"]) + node("Erf", "out", ["sum"])
    with pytest.raises(BadModelError, match=r"Erf \(1 node, e.g. 'out'\)"):
        run_guest(guest, pb, X, "out")
    # Cutting the graph before them is the first fix the message offers; it works.
    np.testing.assert_array_equal(run_guest(guest, g.to_bytes(), X, "block0/relu"), [0, 2, 0, 4])
