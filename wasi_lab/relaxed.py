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

from wasi_lab.inspect import Reader, WasmFormatError, import_kinds, read_sections

# Protobuf's varint is unsigned LEB128, the same encoding wasm uses for sizes and indices.
from wasi_lab.models.graphdef import encode_varint as uleb128

#: The marker's name as the `name` section spells it (a substring: Rust may mangle it).
MARKER = "__wasi_lab_relaxed_madd"
#: `f32x4.relaxed_madd`: the 0xFD (SIMD) prefix and sub-opcode 0x105 as LEB128.
RELAXED_MADD = b"\xfd\x85\x02"
V128 = 0x7B
_CALL = 0x10


@dataclass
class FuseReport:
    """What a rewrite changed: which function was the marker and how many calls became FMAs."""
    marker_index: int
    rewritten: int
    functions_touched: int
    size_before: int
    size_after: int


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
    if op in _ONE_U32 or op == _CALL:
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


def function_names(data: bytes) -> dict[int, str]:
    """Function index -> name, from the `name` custom section (subsection 1)."""
    for s in read_sections(data):
        if s.custom_name != "name":
            continue
        r = Reader(data, s.offset, s.offset + s.size)
        r.name()
        while r.pos < r.end:
            sub_id, size = r.byte(), r.u32()
            if sub_id == 1:
                sub = Reader(data, r.pos, r.pos + size)
                return {sub.u32(): sub.name() for _ in range(sub.u32())}
            r.pos += size
    return {}


def _func_type_of(data: bytes, index: int) -> tuple[list[int], list[int]]:
    """(params, results) of function `index`, counting imported functions first."""
    by_id = {s.id: s for s in read_sections(data)}
    types: list[tuple[list[int], list[int]]] = []
    r = Reader(data, by_id[1].offset, by_id[1].offset + by_id[1].size)
    for _ in range(r.u32()):
        if r.byte() != 0x60:
            raise WasmFormatError("only function types are supported in the type section")
        params = [r.byte() for _ in range(r.u32())]
        results = [r.byte() for _ in range(r.u32())]
        types.append((params, results))
    imported = [t for kind, t in import_kinds(data, read_sections(data)) if kind == 0]
    if index < len(imported):
        return types[imported[index]]
    r = Reader(data, by_id[3].offset, by_id[3].offset + by_id[3].size)
    declared = [r.u32() for _ in range(r.u32())]
    return types[declared[index - len(imported)]]


def find_marker(data: bytes) -> int:
    """The marker's function index; a clear error if it is missing, ambiguous or mistyped."""
    names = function_names(data)
    if not names:
        raise WasmFormatError("the module has no `name` section: build without stripping "
                              "symbols so the multiply-add marker can be found")
    found = [i for i, n in names.items() if MARKER in n and "command_export" not in n]
    if len(found) != 1:
        raise WasmFormatError(f"expected one function named {MARKER}, found {len(found)}: "
                              "was the guest built with the `relaxed-fma` feature?")
    params, results = _func_type_of(data, found[0])
    if params != [V128] * 3 or results != [V128]:
        raise WasmFormatError(f"{MARKER} has type {params} -> {results}, not "
                              "(v128, v128, v128) -> v128; the rewrite would not be stack-safe")
    return found[0]


def _rewrite_body(data: bytes, start: int, end: int, marker: int) -> tuple[bytes, int]:
    """One function body with marker calls replaced; and how many were replaced."""
    r = Reader(data, start, end)
    for _ in range(r.u32()):  # local declarations: count and type
        r.u32()
        r.byte()
    out = bytearray(data[start:r.pos])
    count = 0
    while r.pos < end:
        at = r.pos
        op = next_instruction(r)
        if op == _CALL and Reader(data, at + 1, r.pos).u32() == marker:
            out += RELAXED_MADD
            count += 1
        else:
            out += data[at:r.pos]
    if r.pos != end or data[end - 1] != 0x0B:
        raise WasmFormatError(f"function body at {start} does not end with `end`")
    return bytes(out), count


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


def fuse_multiply_adds(data: bytes) -> tuple[bytes, FuseReport]:
    """The module with every marker call turned into `f32x4.relaxed_madd`."""
    return rewrite_calls(data, find_marker(data))


def rewrite_calls(data: bytes, marker: int) -> tuple[bytes, FuseReport]:
    """Replace every `call marker` with `f32x4.relaxed_madd`, decoding each body in full.

    With an index nothing calls, the result is the input byte for byte: the test that the
    decoder walks every instruction of a module (a misread immediate would derail it).
    """
    sections = read_sections(data)
    code = next((s for s in sections if s.id == 10), None)
    if code is None:
        raise WasmFormatError("the module has no code section")
    r = Reader(data, code.offset, code.offset + code.size)
    new_code = bytearray()
    n_bodies = r.u32()
    new_code += uleb128(n_bodies)
    total = touched = 0
    for _ in range(n_bodies):
        size = r.u32()
        body, count = _rewrite_body(data, r.pos, r.pos + size, marker)
        r.pos += size
        new_code += uleb128(len(body)) + body
        total += count
        touched += bool(count)
    # No calls left is not an error: the module was fused already (cargo found nothing to
    # rebuild, so the file on disk is the rewritten one).
    start = _section_start(data, code.offset)
    out = (data[:start] + b"\x0a" + uleb128(len(new_code)) + bytes(new_code)
           + data[code.offset + code.size:])
    return out, FuseReport(marker, total, touched, len(data), len(out))


def fuse_file(path: Path) -> FuseReport:
    """Rewrite a module file in place (atomically: a failed rewrite leaves it untouched)."""
    data = path.read_bytes()
    out, report = fuse_multiply_adds(data)
    if out == data:
        return report
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(out)
    tmp.replace(path)
    return report
