"""An inference allocates nothing: everything it needs is planned when the model is loaded.

Each test loads a model, then caps the store's memory at exactly the pages the guest has
grown to (`store.set_limits`), and runs inferences. Any allocation the running plan still
made (a MatMul transpose, a Mean's sums, a kernel's packing buffer, a list per step) would
need `memory.grow`, which the cap refuses: Rust then aborts, a trap. A model whose
scratch does not fit fails to *load*, with OutOfMemory, and the guest keeps working.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wasi_lab.hosts import grace_hopper
from wasi_lab.models.graphdef import GraphBuilder
from wasi_lab.paths import REPO_ROOT
from wasi_lab.runtime import Guest, GuestOutOfMemoryError

PAGE = 65536


def _load(guest: Guest, pb: bytes, output: str) -> int:
    mp, name = guest.write_bytes(pb), output.encode()
    npp = guest.write_bytes(name)
    try:
        return guest.call("load_model_with_output", mp, len(pb), npp, len(name))
    finally:
        guest.dealloc(mp, len(pb))
        guest.dealloc(npp, len(name))


def _cap_at_current_size(guest: Guest) -> int:
    pages = guest.memory.size(guest.store)
    guest.store.set_limits(memory_size=pages * PAGE)
    return pages


def _matmul_graph(
    transpose_a: bool, rng: np.random.Generator
) -> tuple[bytes, np.ndarray, np.ndarray]:
    """`x^T @ w` (a transpose of the 2 MiB input at run time) or `x @ x^T` (of input 1)."""
    g = GraphBuilder()
    if transpose_a:
        x = rng.standard_normal((512, 1024)).astype(np.float32)
        w = rng.standard_normal((512, 8)).astype(np.float32)
        g.op(
            "MatMul",
            "out",
            [g.placeholder("input", list(x.shape)), g.const("w", w)],
            transpose_a=True,
            transpose_b=False,
        )
        want = x.T.astype(np.float64) @ w
    else:
        x = rng.standard_normal((16, 32768)).astype(np.float32)
        p = g.placeholder("input", list(x.shape))
        g.op("MatMul", "out", [p, p], transpose_a=False, transpose_b=True)
        want = x.astype(np.float64) @ x.T.astype(np.float64)
    return g.to_bytes(), x, want


@pytest.mark.parametrize("transpose_a", [True, False], ids=["transpose_a", "computed_transpose_b"])
def test_matmul_transposes_are_planned_at_load(module_path: Path, transpose_a: bool) -> None:
    pb, x, want = _matmul_graph(transpose_a, np.random.default_rng(7))
    guest = Guest(module_path)
    h = _load(guest, pb, "out")
    n_out = guest.call("model_output_len", h)
    ip = guest.write_bytes(np.ascontiguousarray(x, "<f4").tobytes())
    op = guest.alloc(4 * n_out)
    _cap_at_current_size(guest)
    for _ in range(3):  # the transposed copy (2 MiB) must not be allocated per inference
        n = guest.call("infer_raw", h, ip, x.nbytes, op, 4 * n_out)
        np.testing.assert_allclose(guest.read_f32(op, n), want.ravel(), rtol=1e-3, atol=1e-2)


def test_bundled_model_runs_under_a_cap_at_its_loaded_size(module_path: Path) -> None:
    pb = (REPO_ROOT / "models" / "efficientnet-lite0.pb").read_bytes()
    guest = Guest(module_path)
    mp = guest.write_bytes(pb)
    h = guest.call("load_model", mp, len(pb))
    guest.dealloc(mp, len(pb))
    jpeg = grace_hopper().read_bytes()
    img = guest.write_bytes(jpeg)
    out = guest.alloc(8 * 5)
    tensor = guest.alloc(4 * 224 * 224 * 3)
    probs = guest.alloc(4 * 1000)
    # Once, uncapped: the image decoder's own buffers (not the plan's) find their place.
    assert guest.call("classify", h, img, len(jpeg), 1, out, 5) == 5
    _cap_at_current_size(guest)
    first = None
    for _ in range(3):
        assert guest.call("infer_tensor", h, tensor, probs) == 1000
        got = guest.read_f32(probs, 1000)
        if first is None:
            first = got
        np.testing.assert_array_equal(got, first)
        assert guest.call("classify", h, img, len(jpeg), 1, out, 5) == 5


def test_scratch_that_does_not_fit_fails_the_load_cleanly(module_path: Path) -> None:
    pb, x, _ = _matmul_graph(True, np.random.default_rng(8))
    guest = Guest(module_path)
    # Room for the model bytes and little more: the 2 MiB input slot and the 2 MiB
    # transpose scratch cannot both fit.
    pages = guest.memory.size(guest.store) + (len(pb) + 3 * 2**20) // PAGE
    guest.store.set_limits(memory_size=pages * PAGE)
    with pytest.raises(GuestOutOfMemoryError):
        _load(guest, pb, "out")
    # Not a trap: the same instance still loads and runs a small model.
    g = GraphBuilder()
    g.op("Relu", "out", [g.placeholder("input", [1, 4])])
    h = _load(guest, g.to_bytes(), "out")
    ip = guest.write_bytes(np.array([-1, 2, -3, 4], "<f4").tobytes())
    op = guest.alloc(16)
    assert guest.call("infer_raw", h, ip, 16, op, 16) == 4
    np.testing.assert_array_equal(guest.read_f32(op, 4), [0, 2, 0, 4])
