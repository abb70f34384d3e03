"""The WebAssembly binary format, read by hand: bytes, LEB128, sections, instructions.

Everything the kit's wasm tools share lives here, once: the byte cursor and its two
encodings (LEB128 numbers and names), the section table, the two custom-section and
import readers the passes need, and the instruction decoder with its opcode tables. It
imports nothing of the kit, so `inspect` (the lesson), `postlink` and `relaxed` (the
rewrites) can all build on it without importing each other or the runtime.

The format: a magic number and a version, then sections, each an id byte, a LEB128 size
and a payload. A function body is its local declarations and then instructions, each an
opcode and its immediates; an instruction must be decoded to know where the next starts.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CALL",
    "FUNC_TYPE",
    "I32_ADD",
    "I32_CONST",
    "MAGIC",
    "SECTION_NAMES",
    "V128",
    "VERSION",
    "Reader",
    "Section",
    "WasmFormatError",
    "func_type",
    "function_names",
    "import_kinds",
    "instructions",
    "next_instruction",
    "read_sections",
    "section_start",
    "uleb128",
]

MAGIC = b"\0asm"
VERSION = b"\x01\0\0\0"
SECTION_NAMES = {
    0: "custom",
    1: "type",
    2: "import",
    3: "function",
    4: "table",
    5: "memory",
    6: "global",
    7: "export",
    8: "start",
    9: "element",
    10: "code",
    11: "data",
    12: "datacount",
    13: "tag",
}
#: `call`: its immediate is a function index.
CALL = 0x10
I32_CONST, I32_ADD = 0x41, 0x6A
#: The type section's tag for a function type, and the `v128` value type.
FUNC_TYPE, V128 = 0x60, 0x7B


class WasmFormatError(ValueError):
    """The bytes are not a WebAssembly module we can read."""


class Reader:
    """A cursor over bytes with the two encodings wasm uses: LEB128 and names."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise WasmFormatError(f"unexpected end of data at offset {self.pos}")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self) -> int:
        """Unsigned LEB128: 7 bits a byte, low bits first, high bit says 'more'."""
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 35:
                raise WasmFormatError(f"LEB128 number too long at offset {self.pos}")

    def s32(self) -> int:
        """Signed LEB128 (used by i32.const)."""
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if b & 0x40:
                    result -= 1 << shift
                return result
            if shift > 35:
                raise WasmFormatError(f"LEB128 number too long at offset {self.pos}")

    def skip_leb(self) -> None:
        """Step over a LEB128 number of any width (i64.const's immediate)."""
        while self.byte() & 0x80:
            pass

    def bytes(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise WasmFormatError(f"{n} bytes at offset {self.pos} run past the end")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def name(self) -> str:
        return self.bytes(self.u32()).decode("utf-8", "replace")


def uleb128(value: int) -> bytes:
    """Unsigned LEB128, the writer's side of [`Reader.u32`] (protobuf's varint is the same
    encoding for non-negative numbers: `models.graphdef.encode_varint`)."""
    if value < 0:
        raise ValueError(f"unsigned LEB128 of a negative number: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# ------------------------------------------------------------------------------ sections
@dataclass
class Section:
    id: int
    name: str
    offset: int
    size: int
    custom_name: str | None = None


def read_sections(data: bytes) -> list[Section]:
    """The section table: id, payload offset and size of each section."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise WasmFormatError("not a WebAssembly module (missing \\0asm magic)")
    if data[4:8] != VERSION:
        raise WasmFormatError(f"unsupported wasm binary version {data[4:8].hex()}")
    r = Reader(data, 8)
    sections = []
    while r.pos < r.end:
        sid = r.byte()
        size = r.u32()
        start = r.pos
        if start + size > len(data):
            raise WasmFormatError(f"section {sid} at {start} runs past the end of the file")
        custom = None
        if sid == 0:
            custom = Reader(data, start, start + size).name()
        sections.append(
            Section(sid, SECTION_NAMES.get(sid, f"unknown({sid})"), start, size, custom)
        )
        r.pos = start + size
    return sections


def section_start(data: bytes, payload: int) -> int:
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


def function_names(data: bytes, sections: list[Section] | None = None) -> dict[int, str]:
    """Function index -> name, from the `name` custom section (subsection 1); empty when
    the module has none (stripped)."""
    for s in sections if sections is not None else read_sections(data):
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


def import_kinds(data: bytes, sections: list[Section]) -> list[tuple[int, int]]:
    """Each import's kind (0 func, 1 table, 2 memory, 3 global) and, for a function, its
    type index: imports come first in their index spaces, so every reader needs them."""
    sec = next((s for s in sections if s.id == 2), None)
    if sec is None:
        return []
    out = []
    r = Reader(data, sec.offset, sec.offset + sec.size)
    for _ in range(r.u32()):
        r.name()
        r.name()
        kind = r.byte()
        type_index = 0
        if kind == 0:
            type_index = r.u32()
        elif kind == 1:
            r.byte()
            _limits(r)
        elif kind == 2:
            _limits(r)
        elif kind == 3:
            r.byte()
            r.byte()
        else:
            raise WasmFormatError(f"unsupported import kind {kind}")
        out.append((kind, type_index))
    return out


def _limits(r: Reader) -> None:
    flags = r.byte()
    r.u32()
    if flags & 1:
        r.u32()


def func_type(data: bytes, index: int) -> tuple[list[int], list[int]]:
    """(params, results) of function `index` as value-type bytes, imported functions first."""
    sections = read_sections(data)
    by_id = {s.id: s for s in sections}
    types: list[tuple[list[int], list[int]]] = []
    r = Reader(data, by_id[1].offset, by_id[1].offset + by_id[1].size)
    for _ in range(r.u32()):
        if r.byte() != FUNC_TYPE:
            raise WasmFormatError("only function types are supported in the type section")
        params = [r.byte() for _ in range(r.u32())]
        results = [r.byte() for _ in range(r.u32())]
        types.append((params, results))
    imported = [t for kind, t in import_kinds(data, sections) if kind == 0]
    if index < len(imported):
        return types[imported[index]]
    r = Reader(data, by_id[3].offset, by_id[3].offset + by_id[3].size)
    declared = [r.u32() for _ in range(r.u32())]
    return types[declared[index - len(imported)]]


# -------------------------------------------------------------------------- instructions
# Opcodes whose immediates are one u32 (indices, depths, memory.size/grow's memory byte).
_ONE_U32 = {0x0C, 0x0D, 0x12, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x3F, 0x40, 0xD2}
# Plain opcodes with no immediates: control, parametric and the whole numeric range.
_NO_IMM = {0x00, 0x01, 0x05, 0x0B, 0x0F, 0x1A, 0x1B, 0xD1} | set(range(0x45, 0xC5))


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
    elif op == I32_CONST:
        r.s32()
    elif op == 0x42:
        r.skip_leb()
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
