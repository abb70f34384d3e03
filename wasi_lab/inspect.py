"""Look inside a .wasm file: sections, imports, exports, memory, custom sections.

The binary format is simple enough to read by hand, and reading it is a lesson: a magic
number and version, then sections, each an id byte, a LEB128 size and a payload. We read
the section table, the custom sections (`name`, `producers`) and the exported globals'
initial values ourselves; the typed view of imports and exports comes from wasmtime, which
has to understand them anyway.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import wasmtime

from wasi_lab.runtime import get_engine

MAGIC = b"\0asm"
SECTION_NAMES = {
    0: "custom", 1: "type", 2: "import", 3: "function", 4: "table", 5: "memory",
    6: "global", 7: "export", 8: "start", 9: "element", 10: "code", 11: "data",
    12: "datacount", 13: "tag",
}
PAGE_SIZE = 65536


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

    def bytes(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise WasmFormatError(f"{n} bytes at offset {self.pos} run past the end")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def name(self) -> str:
        return self.bytes(self.u32()).decode("utf-8", "replace")


@dataclass
class Section:
    id: int
    name: str
    offset: int
    size: int
    custom_name: str | None = None


@dataclass
class FuncSig:
    name: str
    kind: str
    signature: str
    module: str | None = None


@dataclass
class ModuleReport:
    path: str
    size: int
    sections: list[Section]
    imports: list[FuncSig]
    exports: list[FuncSig]
    memory: dict
    globals: dict[str, int]
    producers: dict[str, list[str]]
    function_names: int
    custom_sections: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def read_sections(data: bytes) -> list[Section]:
    """The section table: id, payload offset and size of each section."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise WasmFormatError("not a WebAssembly module (missing \\0asm magic)")
    if data[4:8] != b"\x01\0\0\0":
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
        sections.append(Section(sid, SECTION_NAMES.get(sid, f"unknown({sid})"), start, size,
                                custom))
        r.pos = start + size
    return sections


def read_producers(data: bytes, sec: Section) -> dict[str, list[str]]:
    """The `producers` custom section: language, processed-by and sdk, with versions."""
    r = Reader(data, sec.offset, sec.offset + sec.size)
    r.name()  # "producers"
    out: dict[str, list[str]] = {}
    for _ in range(r.u32()):
        field_name = r.name()
        values = []
        for _ in range(r.u32()):
            values.append(f"{r.name()} {r.name()}".strip())
        out[field_name] = values
    return out


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


def exported_globals(data: bytes, sections: list[Section]) -> dict[str, int]:
    """Initial values of exported i32 globals, e.g. `__heap_base` and `__data_end`."""
    by_id = {s.id: s for s in sections}
    if 6 not in by_id or 7 not in by_id:
        return {}
    # Imported globals come first in the global index space.
    n_imported = sum(1 for kind, _ in import_kinds(data, sections) if kind == 3)
    values: list[int | None] = []
    r = Reader(data, by_id[6].offset, by_id[6].offset + by_id[6].size)
    for _ in range(r.u32()):
        valtype = r.byte()
        r.byte()  # mutability
        op = r.byte()
        value = r.s32() if (op == 0x41 and valtype == 0x7F) else None
        if value is None:  # skip an expression we do not evaluate
            while r.byte() != 0x0B:
                pass
        else:
            r.byte()  # end
        values.append(value)
    out: dict[str, int] = {}
    r = Reader(data, by_id[7].offset, by_id[7].offset + by_id[7].size)
    for _ in range(r.u32()):
        name = r.name()
        kind = r.byte()
        index = r.u32()
        if kind == 3 and index >= n_imported:
            v = values[index - n_imported]
            if v is not None:
                out[name] = v & 0xFFFFFFFF
    return out


def import_kinds(data: bytes, sections: list[Section]) -> list[tuple[int, int]]:
    """Each import's kind (0 func, 1 table, 2 memory, 3 global) and, for a function, its
    type index: imports come first in their index spaces, so both readers need them."""
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


def _describe(ty: object) -> tuple[str, str]:
    """(kind, signature) of an import/export type, e.g. ('func', '[i32] -> [i32]')."""
    if isinstance(ty, wasmtime.FuncType):
        params = ", ".join(str(p) for p in ty.params)
        results = ", ".join(str(p) for p in ty.results)
        return "func", f"[{params}] -> [{results}]"
    if isinstance(ty, wasmtime.MemoryType):
        lim = ty.limits
        return "memory", f"{lim.min} pages min, {lim.max if lim.max is not None else 'no'} max"
    if isinstance(ty, wasmtime.GlobalType):
        return "global", f"{ty.content}{' mut' if ty.mutable else ''}"
    if isinstance(ty, wasmtime.TableType):
        return "table", f"{ty.element} {ty.limits.min}.."
    return type(ty).__name__.lower(), ""


def inspect_module(path: Path | str | bytes) -> ModuleReport:
    """Everything notebook 02 shows about a module, as data."""
    if isinstance(path, bytes | bytearray):
        data, name = bytes(path), "<bytes>"
    else:
        data, name = Path(path).read_bytes(), str(path)
    sections = read_sections(data)
    try:
        module = wasmtime.Module(get_engine(), data)
    except wasmtime.WasmtimeError as exc:
        raise WasmFormatError(f"wasmtime cannot compile {name}: {exc}") from None
    imports = []
    for imp in module.imports:
        kind, sig = _describe(imp.type)
        imports.append(FuncSig(imp.name or "", kind, sig, imp.module))
    exports, memory = [], {}
    for exp in module.exports:
        kind, sig = _describe(exp.type)
        exports.append(FuncSig(exp.name, kind, sig))
        if isinstance(exp.type, wasmtime.MemoryType):
            lim = exp.type.limits
            memory = {"name": exp.name, "min_pages": lim.min, "max_pages": lim.max,
                      "min_bytes": lim.min * PAGE_SIZE}
    producers: dict[str, list[str]] = {}
    for s in sections:
        if s.custom_name == "producers":
            producers = read_producers(data, s)
    return ModuleReport(
        path=name, size=len(data), sections=sections, imports=imports, exports=exports,
        memory=memory, globals=exported_globals(data, sections), producers=producers,
        function_names=len(function_names(data, sections)),
        custom_sections=[s.custom_name for s in sections if s.custom_name])


def format_report(rep: ModuleReport) -> str:
    """A human-readable summary for the CLI."""
    lines = [f"{rep.path}: {rep.size:,} bytes", "", "sections:"]
    for s in rep.sections:
        label = f"{s.name} ({s.custom_name})" if s.custom_name else s.name
        lines.append(f"  {s.id:>2} {label:<28} {s.size:>10,} bytes")
    lines += ["", "imports:"]
    lines += [f"  {i.module}.{i.name}: {i.kind} {i.signature}" for i in rep.imports]
    lines += ["", "exports:"]
    lines += [f"  {e.name}: {e.kind} {e.signature}" for e in rep.exports]
    if rep.memory:
        m = rep.memory
        lines += ["", f"memory: {m['min_pages']} pages ({m['min_bytes']:,} bytes) at start, "
                      f"max {m['max_pages'] or 'none (up to 4 GiB)'}"]
    for k, v in rep.globals.items():
        lines.append(f"global {k} = {v:#x} ({v:,})")
    for k, vals in rep.producers.items():
        lines.append(f"producers.{k}: {', '.join(vals)}")
    return "\n".join(lines)
