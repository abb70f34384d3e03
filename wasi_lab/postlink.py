"""Post-link passes over the guest module: rewrite function bodies instruction by instruction.

The guest is linked by whatever rustc/LLVM the machine has; a few edits that the old
toolchain cannot make (or makes badly) are done afterwards, on the wasm itself, the same on
every toolchain. Each pass decodes every instruction of every body with `wasi_lab.wasmbin`
(an instruction must be decoded to know where the next one starts), rewrites what it looks
for, and writes the code section back with new body sizes. Nothing else in the module moves.

Passes:
- [`fold_offsets`]: in the engine's kernels, `i32.const C; i32.add; load offset=O` becomes
  `load offset=O+C`. Rust's `ptr.add(4)` reaches LLVM 14's wasm backend as an add it
  cannot prove free of wraparound, so each such load pays its own address add, and under
  Cranelift a `lea` plus a zero extension; folded, loads from one base share one. Always
  applied by the build (measured: depthwise 4.29 -> 3.93 ms, the whole guest about 2 %).
- `wasi_lab.relaxed`: multiply-add marker calls become `f32x4.relaxed_madd` (opt-in).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from wasi_lab.wasmbin import (
    I32_ADD,
    I32_CONST,
    Reader,
    WasmFormatError,
    function_names,
    import_kinds,
    instructions,
    read_sections,
    section_start,
    uleb128,
)

__all__ = ["FOLD_SCOPE", "BodyRewrite", "fold_file", "fold_offsets", "rewrite_code", "rewrite_file"]

T = TypeVar("T")

#: Rewrites one function body (`data[start:end]`, function index last): the new body and
#: how many edits it made.
BodyRewrite = Callable[[bytes, int, int, int], tuple[bytes, int]]

#: Whose loads [`fold_offsets`] folds: the engine's kernels (`wasi_lab_guest::engine::
#: kernels::*`, as the `name` section spells them in Rust's mangling). See there for why.
FOLD_SCOPE = "wasi_lab_guest6engine7kernels"


def rewrite_code(data: bytes, rewrite: BodyRewrite) -> tuple[bytes, int, int]:
    """The module with every function body passed through `rewrite`; and how many edits,
    in how many functions. With no edits the result is the input byte for byte."""
    sections = read_sections(data)
    code = next((s for s in sections if s.id == 10), None)
    if code is None:
        raise WasmFormatError("the module has no code section")
    r = Reader(data, code.offset, code.offset + code.size)
    new_code = bytearray()
    n_bodies = r.u32()
    new_code += uleb128(n_bodies)
    total = touched = 0
    first = sum(1 for kind, _ in import_kinds(data, sections) if kind == 0)
    for i in range(n_bodies):
        size = r.u32()
        body, count = rewrite(data, r.pos, r.pos + size, first + i)
        r.pos += size
        new_code += uleb128(len(body)) + body
        total += count
        touched += bool(count)
    start = section_start(data, code.offset)
    out = (
        data[:start]
        + b"\x0a"
        + uleb128(len(new_code))
        + bytes(new_code)
        + data[code.offset + code.size :]
    )
    return out, total, touched


def rewrite_file(path: Path, transform: Callable[[bytes], tuple[bytes, T]]) -> T:
    """Apply a pass to a module file in place and return its report. Atomic: a failed
    rewrite leaves the file untouched, and an unchanged module is not written at all."""
    data = path.read_bytes()
    out, report = transform(data)
    if out != data:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(out)
        tmp.replace(path)
    return report


# Plain loads (i32.load .. i64.load32_u) and SIMD loads (v128.load .. load64_splat,
# load32_zero, load64_zero): one memarg, the address their only operand.
_LOADS = set(range(0x28, 0x36))
_V128_LOADS = set(range(0, 11)) | {92, 93}


def _fold_body(data: bytes, start: int, end: int) -> tuple[bytes, int]:
    first, instrs = instructions(data, start, end)
    # The body so far as (opcode, bytes, i32.const value); a load looks back at it, so a
    # chain of adds (`X; C1; add; C2; add; load`) folds completely in one pass.
    out: list[tuple[int, bytes, int | None]] = []
    folds = 0
    for at, stop, op in instrs:
        code = data[at:stop]
        r = Reader(data, at + 1, stop)
        sub = r.u32() if op == 0xFD else None
        if op in _LOADS or sub in _V128_LOADS:
            align, offset = r.u32(), r.u32()
            while (
                len(out) >= 2
                and out[-1][0] == I32_ADD
                and out[-2][0] == I32_CONST
                and 0 <= out[-2][2]
                and offset + out[-2][2] < 2**32
            ):
                offset += out[-2][2]
                del out[-2:]
                folds += 1
            prefix = bytes([op]) + (uleb128(sub) if sub is not None else b"")
            code = prefix + uleb128(align) + uleb128(offset)
        const = r.s32() if op == I32_CONST else None
        out.append((op, code, const))
    return data[start:first] + b"".join(c for _, c, _ in out), folds


def fold_offsets(data: bytes, scope: str = FOLD_SCOPE) -> tuple[bytes, int]:
    """Fold constant address adds into the offsets of the loads that use them, in the
    functions whose name contains `scope`.

    `X; i32.const C; i32.add; load offset=O` reads `(X + C) mod 2^32 + O`; the folded
    `X; load offset=O+C` reads `X + C + O` without the wrap. The two differ when `X + C`
    wraps past 4 GiB: there the folded load traps where the original read low memory.
    For a pointer into a live buffer plus an in-bounds offset that never happens (Rust
    forbids `ptr.add` past its allocation), and the kernels address their buffers that
    way. Integer code may wrap on purpose (the JPEG decoder does: folded, it traps), so
    the pass is scoped to the kernels, where the time goes, and nothing else is touched.
    A module without a `name` section is returned as it is.

    Returns the module and the number of folds; chains of adds fold completely, so a
    second pass finds nothing more.
    """
    names = function_names(data)
    chosen = {i for i, n in names.items() if scope in n}

    def fold(d: bytes, start: int, end: int, index: int) -> tuple[bytes, int]:
        return _fold_body(d, start, end) if index in chosen else (d[start:end], 0)

    out, folds, _ = rewrite_code(data, fold)
    return out, folds


def fold_file(path: Path) -> int:
    """[`fold_offsets`] on a module file, in place; the number of folds."""
    return rewrite_file(path, fold_offsets)
