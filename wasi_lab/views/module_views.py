"""Notebook 02's views of a compiled module: its sections, imports, exports and memory,
and its interface written back as WAT (each takes an `inspect.ModuleReport`); and the tiny
module the notebook writes by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def section_figure(report, title: str | None = None) -> Figure:
    """Horizontal bars: bytes per section (custom sections by their name), log scale."""
    labels = [f"{s.name}:{s.custom_name}" if s.custom_name else s.name for s in report.sections]
    sizes = [s.size for s in report.sections]
    order = np.argsort(sizes)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.5), layout="constrained")
    colours = [
        "#55a868"
        if labels[i] == "code"
        else "#c44e52"
        if labels[i] == "data"
        else "#8172b3"
        if labels[i].startswith("custom")
        else "#4c72b0"
        for i in order
    ]
    bars = ax.barh([labels[i] for i in order], [sizes[i] for i in order], color=colours)
    for b in bars:
        ax.annotate(
            f"{int(b.get_width()):,} B",
            (b.get_width(), b.get_y() + b.get_height() / 2),
            va="center",
            fontsize=10,
            xytext=(4, 0),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("section size (bytes, log scale)")
    ax.set_title(
        title or f"Sections of {Path(report.path).name} ({report.size:,} bytes)", fontsize=13
    )
    ax.margins(x=0.25)
    return fig


def imports_table(report):
    """The module's imports as an HTML table (module, name, kind, signature)."""
    from IPython.display import HTML

    return HTML(
        html_table(
            [
                {"module": i.module, "name": i.name, "kind": i.kind, "signature": i.signature}
                for i in report.imports
            ]
        )
    )


def exports_table(report):
    """The module's exports as an HTML table; exported globals with their values."""
    from IPython.display import HTML

    rows = []
    for e in report.exports:
        sig = e.signature
        if e.kind == "global" and e.name in report.globals:
            sig += f" = {report.globals[e.name]:#x} ({report.globals[e.name]:,})"
        rows.append({"name": e.name, "kind": e.kind, "signature": sig})
    return HTML(html_table(rows))


def memory_summary(report) -> str:
    """Memory limits and the two linker globals, in words."""
    m = report.memory
    g = report.globals
    lines = [
        f"memory: {m.get('min_pages')} pages ({m.get('min_bytes', 0):,} bytes) at start, "
        f"maximum {m.get('max_pages') or 'none (it may grow to 4 GiB)'}"
    ]
    if "__data_end" in g:
        lines.append(f"__data_end  = {g['__data_end']:#x}: static data ends here")
    if "__heap_base" in g:
        lines.append(
            f"__heap_base = {g['__heap_base']:#x}: the allocator's heap starts here "
            f"(page {g['__heap_base'] // 65536}); the shadow stack lies below it"
        )
    return "\n".join(lines)


def wat_interface(report) -> str:
    """The module's interface as a WAT module that assembles: its memory, its exported
    globals with their values, and every exported function as a stub with the same signature
    (body `unreachable`). Reading it is reading the ABI; `wasmtime.wat2wasm` accepts it."""
    lines = [f";; the exports of {Path(report.path).name}, bodies left out", "(module"]
    for e in report.exports:
        if e.kind == "memory":
            m = report.memory
            limits = f"{m.get('min_pages', 0)}" + (
                f" {m['max_pages']}" if m.get("max_pages") else ""
            )
            lines.append(f'  (memory (export "{e.name}") {limits})')
        elif e.kind == "global":
            value = report.globals.get(e.name, 0)
            vtype = e.signature.split()[-1]
            gtype = f"(mut {vtype})" if e.signature.startswith("mut") else vtype
            lines.append(
                f'  (global (export "{e.name}") {gtype} ({vtype}.const {value}))  ;; {value:#x}'
            )
        elif e.kind == "func":
            params, results = (p.strip("[] ") for p in e.signature.split("->"))
            p = f" (param {' '.join(params.replace(',', ' ').split())})" if params else ""
            r = f" (result {' '.join(results.replace(',', ' ').split())})" if results else ""
            lines.append(f'  (func (export "{e.name}"){p}{r} unreachable)')
        else:
            lines.append(f'  ;; export "{e.name}": a {e.kind}')
    lines.append(")")
    return "\n".join(lines)


def html_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A plain HTML table (no pandas needed) for imports/exports/comparisons."""
    import html

    if not rows:
        return "<p><i>(none)</i></p>"
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td style='text-align:left'><code>{html.escape(str(r.get(c, '')))}</code></td>"
            for c in cols
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


#: A complete module in text format: one page of memory, a bump allocator, and the two
#: globals a Rust/LLVM module exports. Small enough to read in one glance.
TINY_WAT = """\
(module
  ;; one 64 KiB page, exported so the host can read and write it
  (memory (export "memory") 1)
  ;; everything below 1024 is 'static data'; the heap starts at 1024
  (global $heap (mut i32) (i32.const 1024))
  (global (export "__data_end") i32 (i32.const 1024))
  (global (export "__heap_base") i32 (i32.const 1024))
  ;; alloc: hand out the next `len` bytes, never reuse them (a bump allocator)
  (func (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    (local.get $ptr))
  ;; sum: add up `len` bytes at `ptr` -- the host writes, the guest reads
  (func (export "sum") (param $ptr i32) (param $len i32) (result i32)
    (local $acc i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $len)))
        (local.set $acc (i32.add (local.get $acc) (i32.load8_u (local.get $ptr))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next)))
    (local.get $acc))
  (data (i32.const 16) "hello from static data"))
"""


def tiny_module() -> bytes:
    """TINY_WAT assembled to binary by wasmtime."""
    import wasmtime

    return wasmtime.wat2wasm(TINY_WAT)
