"""Turn the guest's multiply-add marker calls into relaxed-SIMD `f32x4.relaxed_madd`.

Why a binary rewrite: wasm SIMD128 has no fused multiply-add, so every multiply-add in the
engine's kernels costs two instructions (`f32x4.mul`, `f32x4.add`). Relaxed SIMD adds
`f32x4.relaxed_madd`, which wasmtime compiles to one `vfmadd` on x86-64 with FMA (and to
`fmla` on arm64): half the arithmetic instructions of a convolution. But Debian's rustc 1.63
cannot emit it (the intrinsic came with Rust 1.82), and we build with that rustc.

So the guest's kernels (feature `relaxed-fma`) call an out-of-line function,
`__wasi_lab_relaxed_madd(a, b, c) = a * b + c`, of type `(v128, v128, v128) -> v128`. A call
to it takes exactly the operands `f32x4.relaxed_madd` takes, in the same order, and leaves the
same result on the stack, so replacing each `call` instruction with the relaxed instruction
is a local, type-preserving edit. This module does that edit on the linked module: it reads
the `name` section to find the marker, decodes every function body instruction by
instruction (an instruction must be decoded to know where the next one starts), swaps the
calls and writes new body sizes. It is the same on every toolchain, old or new.

Results may differ from the unfused build by rounding only (one rounding instead of two),
and between hosts with and without FMA; the kit's checks compare to 1e-4.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wasi_lab.postlink import rewrite_code, rewrite_file
from wasi_lab.wasmbin import (
    CALL,
    V128,
    Reader,
    WasmFormatError,
    func_type,
    function_names,
    instructions,
)

#: The marker's name as the `name` section spells it (a substring: Rust may mangle it).
MARKER = "__wasi_lab_relaxed_madd"
#: `f32x4.relaxed_madd`: the 0xFD (SIMD) prefix and sub-opcode 0x105 as LEB128.
RELAXED_MADD = b"\xfd\x85\x02"


@dataclass
class FuseReport:
    """What a rewrite changed: which function was the marker and how many calls became FMAs."""

    marker_index: int
    rewritten: int
    functions_touched: int
    size_before: int
    size_after: int


def find_marker(data: bytes) -> int:
    """The marker's function index; a clear error if it is missing, ambiguous or mistyped."""
    names = function_names(data)
    if not names:
        raise WasmFormatError(
            "the module has no `name` section: build without stripping "
            "symbols so the multiply-add marker can be found"
        )
    found = [i for i, n in names.items() if MARKER in n and "command_export" not in n]
    if len(found) != 1:
        raise WasmFormatError(
            f"expected one function named {MARKER}, found {len(found)}: "
            "was the guest built with the `relaxed-fma` feature?"
        )
    params, results = func_type(data, found[0])
    if params != [V128] * 3 or results != [V128]:
        raise WasmFormatError(
            f"{MARKER} has type {params} -> {results}, not "
            "(v128, v128, v128) -> v128; the rewrite would not be stack-safe"
        )
    return found[0]


def _rewrite_body(data: bytes, start: int, end: int, marker: int) -> tuple[bytes, int]:
    """One function body with marker calls replaced; and how many were replaced."""
    first, instrs = instructions(data, start, end)
    out = bytearray(data[start:first])
    count = 0
    for at, stop, op in instrs:
        if op == CALL and Reader(data, at + 1, stop).u32() == marker:
            out += RELAXED_MADD
            count += 1
        else:
            out += data[at:stop]
    return bytes(out), count


def fuse_multiply_adds(data: bytes) -> tuple[bytes, FuseReport]:
    """The module with every marker call turned into `f32x4.relaxed_madd`."""
    return rewrite_calls(data, find_marker(data))


def rewrite_calls(data: bytes, marker: int) -> tuple[bytes, FuseReport]:
    """Replace every `call marker` with `f32x4.relaxed_madd`, decoding each body in full.

    With an index nothing calls, the result is the input byte for byte: the test that the
    decoder walks every instruction of a module (a misread immediate would derail it).
    No calls left is not an error: the module was fused already (cargo found nothing to
    rebuild, so the file on disk is the rewritten one).
    """
    out, total, touched = rewrite_code(data, lambda d, s, e, _: _rewrite_body(d, s, e, marker))
    return out, FuseReport(marker, total, touched, len(data), len(out))


def fuse_file(path: Path) -> FuseReport:
    """Rewrite a module file in place (atomically: a failed rewrite leaves it untouched)."""
    return rewrite_file(path, fuse_multiply_adds)
