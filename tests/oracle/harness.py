"""Run a frozen graph in the real guest, the way the kit's Python host feeds one.

The GraphDef bytes go into linear memory, `load_model_with_output` parses and plans them
(the output named, as TensorFlow's freezer named it), `infer_raw` runs the tensor of the
graph's own input shape, and `model_info` says which shape came out. Every buffer is freed
whatever happens, so one guest instance runs a whole table of graphs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from tests.oracle.cache import Frozen
from wasi_lab.runtime import Guest

#: The oracle's tolerance (issue 15): relative 1e-5, or, for values near zero, absolute 1e-5
#: of the tensor's largest magnitude (so 1000 probabilities of about 1e-3 each are held to
#: about 1e-8, not to a 1e-5 that would let a 1% error through).
RTOL = 1e-5
ATOL = 1e-5


@dataclass(frozen=True)
class GuestRun:
    y: np.ndarray
    info: dict


def load(guest: Guest, frozen: Frozen) -> int:
    """The model handle; raises the guest's BadModelError (with its message) on refusal."""
    pb, name = frozen.graph, frozen.output.encode()
    mp = guest.write_bytes(pb, "model")
    try:
        np_ = guest.write_bytes(name, "output name")
        try:
            return guest.call("load_model_with_output", mp, len(pb), np_, len(name))
        finally:
            guest.dealloc(np_, len(name))
    finally:
        guest.dealloc(mp, len(pb))


def info(guest: Guest, handle: int) -> dict:
    cap = 1 << 16
    ptr = guest.alloc(cap, "model info")
    try:
        n = guest.call("model_info", handle, ptr, cap)
        return json.loads(guest.read_bytes(ptr, min(n, cap)))
    finally:
        guest.dealloc(ptr, cap)


def run(guest: Guest, frozen: Frozen) -> GuestRun:
    """The guest's output for TensorFlow's input tensor, in the shape the guest reports."""
    handle = load(guest, frozen)
    try:
        meta = info(guest, handle)
        x = np.ascontiguousarray(frozen.x, dtype="<f4")
        n_out = guest.call("model_output_len", handle)
        ip = guest.write_bytes(x, "input")
        try:
            op = guest.alloc(4 * n_out, "output")
            try:
                n = guest.call("infer_raw", handle, ip, x.nbytes, op, 4 * n_out)
                y = guest.read_f32(op, n).copy()
            finally:
                guest.dealloc(op, 4 * n_out)
        finally:
            guest.dealloc(ip, x.nbytes)
    finally:
        guest.call("free_model", handle)
    return GuestRun(y.reshape(meta["output_shape"]), meta)


def mismatch(got: np.ndarray, want: np.ndarray) -> str | None:
    """None when `got` matches TensorFlow's `want` (shape, then RTOL/ATOL); else one line."""
    if got.shape != want.shape:
        return f"shape {list(got.shape)}, TensorFlow's is {list(want.shape)}"
    if not np.all(np.isfinite(got)):
        return f"{int(np.sum(~np.isfinite(got)))} values are not finite"
    atol = ATOL * float(np.max(np.abs(want), initial=0.0))
    bad = np.abs(got - want) > atol + RTOL * np.abs(want)
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.abs(got - want))), got.shape)
        return (
            f"{int(bad.sum())} of {got.size} values differ beyond rtol {RTOL}/atol {atol:.3g}; "
            f"worst at {list(map(int, i))}: guest {got[i]!r}, TensorFlow {want[i]!r}"
        )
    return None
