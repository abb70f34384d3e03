"""Look inside a .wasm file: sections, imports, exports, memory, custom sections.

The binary format is simple enough to read by hand, and reading it is a lesson: a magic
number and version, then sections, each an id byte, a LEB128 size and a payload. We read
the section table, the custom sections (`name`, `producers`) and the exported globals'
initial values ourselves, with the primitives of `wasi_lab.wasmbin`; the typed view of
imports and exports comes from wasmtime, which has to understand them anyway.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import wasmtime

from wasi_lab.runtime import get_engine
from wasi_lab.wasmbin import (
    Reader,
    Section,
    WasmFormatError,
    function_names,
    import_kinds,
    read_sections,
)

# The readers are `wasi_lab.wasmbin`'s; named here too, as the notebook and CLI know them.
__all__ = [
    "FuncSig",
    "ModuleReport",
    "Section",
    "WasmFormatError",
    "exported_globals",
    "format_report",
    "inspect_module",
    "read_producers",
    "read_sections",
]

PAGE_SIZE = 65536


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
            memory = {
                "name": exp.name,
                "min_pages": lim.min,
                "max_pages": lim.max,
                "min_bytes": lim.min * PAGE_SIZE,
            }
    producers: dict[str, list[str]] = {}
    for s in sections:
        if s.custom_name == "producers":
            producers = read_producers(data, s)
    return ModuleReport(
        path=name,
        size=len(data),
        sections=sections,
        imports=imports,
        exports=exports,
        memory=memory,
        globals=exported_globals(data, sections),
        producers=producers,
        function_names=len(function_names(data, sections)),
        custom_sections=[s.custom_name for s in sections if s.custom_name],
    )


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
        lines += [
            "",
            f"memory: {m['min_pages']} pages ({m['min_bytes']:,} bytes) at start, "
            f"max {m['max_pages'] or 'none (up to 4 GiB)'}",
        ]
    for k, v in rep.globals.items():
        lines.append(f"global {k} = {v:#x} ({v:,})")
    for k, vals in rep.producers.items():
        lines.append(f"producers.{k}: {', '.join(vals)}")
    return "\n".join(lines)
