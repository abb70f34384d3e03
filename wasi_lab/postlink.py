"""Post-link passes over the guest module: rewrite function bodies instruction by instruction.

The guest is linked by whatever rustc/LLVM the machine has; a few edits that the old
toolchain cannot make (or makes badly) are done afterwards, on the wasm itself, the same on
every toolchain. Each pass decodes every instruction of every body (an instruction must be
decoded to know where the next one starts), rewrites what it looks for, and writes the code
section back with new body sizes. Nothing else in the module moves.

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

from wasi_lab.inspect import (
    Reader,
    WasmFormatError,
    function_names,
    import_kinds,
    read_sections,
)

# Protobuf's varint is unsigned LEB128, the same encoding wasm uses for sizes and indices.
from wasi_lab.models.graphdef import encode_varint as uleb128

__all__ = ["CALL", "FOLD_SCOPE", "fold_file", "fold_offsets", "instructions",
           "next_instruction", "rewrite_code", "rewrite_file", "uleb128"]

T = TypeVar("T")

#: `call`: its immediate is a function index.
CALL = 0x10

#: Rewrites one function body (`data[start:end]`, function index last): the new body and
#: how many edits it made.
BodyRewrite = Callable[[bytes, int, int, int], tuple[bytes, int]]

#: Whose loads [`fold_offsets`] folds: the engine's kernels (`wasi_lab_guest::engine::
#: kernels::*`, as the `name` section spells them in Rust's mangling). See there for why.
FOLD_SCOPE = "wasi_lab_guest6engine7kernels"


def _memarg(r: Reader) -> None:
    r.u32()  # alignment (and, with multi-memory, a flag for a memory index)
    r.u32()  # offset


def _blocktype(r: Reader) -> None:
    b = r.data[r.pos] if r.pos < r.end else None
    if b is None:
        raise WasmFormatError(f"unexpected end of code at offset {r.pos}")
    if b == 0x40 or b in (0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F):
        r.pos += 1
    else:
        r.s32()  # a type index, as a signed 33-bit LEB128


# Opcodes whose immediates are one u32 (indices, depths, memory.size/grow's memory byte).
_ONE_U32 = {0x0C, 0x0D, 0x12, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x3F, 0x40, 0xD2}
# Plain opcodes with no immediates: control, parametric and the whole numeric range.
_NO_IMM = {0x00, 0x01, 0x05, 0x0B, 0x0F, 0x1A, 0x1B, 0xD1} | set(range(0x45, 0xC5))


def _skip_fc(r: Reader) -> None:
    """0xFC prefix: saturating truncations, bulk memory and table operations."""
    sub = r.u32()
    if sub <= 7:
        return
    if sub in (8, 12, 14, 10):  # memory.init, table.init, table.copy, memory.copy: two
        r.u32()
        r.u32()
    elif sub in (9, 11, 13, 15, 16, 17):  # data.drop, memory.fill, elem.drop, table.*: one
        r.u32()
    else:
        raise WasmFormatError(f"unknown 0xFC {sub} instruction at offset {r.pos}")


def _skip_fd(r: Reader) -> None:
    """0xFD prefix: SIMD128 and relaxed SIMD."""
    sub = r.u32()
    if sub <= 11 or sub in (92, 93):  # loads, splat loads, store, load*_zero
        _memarg(r)
    elif sub in (12, 13):  # v128.const, i8x16.shuffle
        r.bytes(16)
    elif 21 <= sub <= 34:  # extract_lane / replace_lane
        r.byte()
    elif 84 <= sub <= 91:  # load*_lane / store*_lane
        _memarg(r)
        r.byte()
    elif sub <= 0x113:  # every other SIMD and relaxed-SIMD op has no immediates
        return
    else:
        raise WasmFormatError(f"unknown SIMD instruction 0xFD {sub} at offset {r.pos}")


def _skip_fe(r: Reader) -> None:
    """0xFE prefix: threads' atomics (memory.atomic.* and friends)."""
    sub = r.u32()
    if sub == 0x03:  # atomic.fence
        r.byte()
    elif sub <= 0x4E:
        _memarg(r)
    else:
        raise WasmFormatError(f"unknown atomic instruction 0xFE {sub} at offset {r.pos}")


def next_instruction(r: Reader) -> int:
    """Step over one instruction and return its opcode (the prefix byte for prefixed ones)."""
    op = r.byte()
    if op in _NO_IMM:
        return op
    if op in _ONE_U32 or op == CALL:
        r.u32()
    elif op in (0x02, 0x03, 0x04):
        _blocktype(r)
    elif op == 0x0E:  # br_table: a vector of depths and a default
        for _ in range(r.u32()):
            r.u32()
        r.u32()
    elif op in (0x11, 0x13):  # call_indirect / return_call_indirect: type and table
        r.u32()
        r.u32()
    elif op == 0x1C:  # select with types
        for _ in range(r.u32()):
            r.byte()
    elif 0x28 <= op <= 0x3E:
        _memarg(r)
    elif op == 0x41:
        r.s32()
    elif op == 0x42:
        _s64(r)
    elif op == 0x43:
        r.bytes(4)
    elif op == 0x44:
        r.bytes(8)
    elif op == 0xD0:
        r.byte()
    elif op == 0xFC:
        _skip_fc(r)
    elif op == 0xFD:
        _skip_fd(r)
    elif op == 0xFE:
        _skip_fe(r)
    else:
        raise WasmFormatError(f"unknown opcode {op:#04x} at offset {r.pos - 1}")
    return op


def _s64(r: Reader) -> None:
    while r.byte() & 0x80:
        pass


def instructions(data: bytes, start: int, end: int) -> tuple[int, list[tuple[int, int, int]]]:
    """Where a body's instructions start, and each one as (start, end, opcode)."""
    r = Reader(data, start, end)
    for _ in range(r.u32()):  # local declarations: count and type
        r.u32()
        r.byte()
    first = r.pos
    instrs = []
    while r.pos < end:
        at = r.pos
        op = next_instruction(r)
        instrs.append((at, r.pos, op))
    if r.pos != end or data[end - 1] != 0x0B:
        raise WasmFormatError(f"function body at {start} does not end with `end`")
    return first, instrs


def _section_start(data: bytes, payload: int) -> int:
    """Where the section whose payload starts at `payload` begins (its id byte)."""
    r = Reader(data, 8)
    while r.pos < r.end:
        start = r.pos
        r.byte()
        size = r.u32()
        if r.pos == payload:
            return start
        r.pos += size
    raise WasmFormatError(f"no section has its payload at offset {payload}")


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
    start = _section_start(data, code.offset)
    out = (data[:start] + b"\x0a" + uleb128(len(new_code)) + bytes(new_code)
           + data[code.offset + code.size:])
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
_I32_CONST, _I32_ADD = 0x41, 0x6A


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
            while (len(out) >= 2 and out[-1][0] == _I32_ADD and out[-2][0] == _I32_CONST
                   and 0 <= out[-2][2] and offset + out[-2][2] < 2**32):
                offset += out[-2][2]
                del out[-2:]
                folds += 1
            prefix = bytes([op]) + (uleb128(sub) if sub is not None else b"")
            code = prefix + uleb128(align) + uleb128(offset)
        const = r.s32() if op == _I32_CONST else None
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
