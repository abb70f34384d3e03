"""Small helpers the workshop notebooks call, so each cell stays one or two lines.

Notebook 01 charts the guest's build variants (from `wasi_lab.buildrecord`); notebook 02
draws a module's sections, writes a tiny module by hand and writes the guest's interface as
WAT; notebook 04 charts predictions. Nothing here is clever: it gathers numbers from
`buildrecord`, `inspect`, `runtime` and `predict` and draws them so they read well on a
projector.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from wasi_lab.buildrecord import RAYON_FEATURE, BuildRecord

# --------------------------------------------------------------------------- figures


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """Render a figure to PNG bytes and close it (widgets show PNGs, not live figures)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def _bar_labels(ax, bars, fmt: str) -> None:
    for b in bars:
        ax.annotate(fmt.format(b.get_height()), (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=11, xytext=(0, 3),
                    textcoords="offset points")


# --------------------------------------------------------------------------- notebook 01: builds


def size_figure(builds: BuildRecord, names: Sequence[str] = ("debug", "release")) -> Figure:
    """Module size per build profile (log scale when the spread is large, as debug vs release).

    `builds` is the stored record or a live one (`wasi_lab.buildrecord.results`); the title
    says which, so a number on the chart is never mistaken for this machine's.
    """
    sizes = {n: builds.size(n) for n in names if builds.size(n) is not None}
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    kib = [sizes[n] / 1024 for n in sizes]
    colours = ["#dd8452" if n.startswith("debug") else "#4c72b0" for n in sizes]
    bars = ax.bar(list(sizes), kib, color=colours)
    _bar_labels(ax, bars, "{:,.0f} KiB")
    if kib and max(kib) / max(min(kib), 1) > 8:
        ax.set_yscale("log")
        ax.set_ylabel("module size (KiB, log scale)")
    else:
        ax.set_ylabel("module size (KiB)")
    ax.set_title(f"Guest module size by build profile\n({builds.where(short=True)})",
                 fontsize=12)
    ax.margins(y=0.2)
    return fig


def feature_cost_figure(builds: BuildRecord, base: str = "release",
                        other: str = f"release-{RAYON_FEATURE}") -> Figure:
    """What threads you cannot use still cost: module size, crates in the build, cold build
    seconds; every bar from the same record (stored or live)."""
    names = [n for n in (base, other) if n in builds.variants]
    runs = [builds.variants[n] for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    colours = ["#4c72b0", "#c44e52"][:len(names)]
    panels = [
        ([v.size / 1024 for v in runs], "{:,.0f} KiB", "module size (KiB)", "Module size"),
        ([len(v.crates) for v in runs], "{:.0f} crates", "crates in the build",
         "Dependencies (cargo tree)"),
        ([v.seconds for v in runs], "{:.0f} s", "seconds",
         "Cold build time" if all(v.cold for v in runs) else
         "Build time (" + ", ".join("cold" if v.cold else "cached" for v in runs) + ")"),
    ]
    for ax, (values, fmt, ylabel, title) in zip(axes, panels, strict=True):
        bars = ax.bar(names, values, color=colours)
        _bar_labels(ax, bars, fmt)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=13)
        ax.margins(y=0.3)
        ax.tick_params(axis="x", labelsize=10)
    fig.suptitle("The cost of a dependency you cannot use on wasm32-wasi (rayon)\n"
                 f"{builds.where(short=True)}", fontsize=13)
    return fig


# --------------------------------------------------------------------------- notebook 02


def imports_table(report):
    from IPython.display import HTML

    return HTML(html_table([{"module": i.module, "name": i.name, "kind": i.kind,
                             "signature": i.signature} for i in report.imports]))


def exports_table(report):
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
    lines = [f"memory: {m.get('min_pages')} pages ({m.get('min_bytes', 0):,} bytes) at start, "
             f"maximum {m.get('max_pages') or 'none (it may grow to 4 GiB)'}"]
    if "__data_end" in g:
        lines.append(f"__data_end  = {g['__data_end']:#x}: static data ends here")
    if "__heap_base" in g:
        lines.append(f"__heap_base = {g['__heap_base']:#x}: the allocator's heap starts here "
                     f"(page {g['__heap_base'] // 65536}); the shadow stack lies below it")
    return "\n".join(lines)


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


def trap_or_value(fn: Callable[[], object] | None) -> str | None:
    """What calling `fn()` did, in words: "trap: ..." when wasm trapped, "returned X" when it
    returned a value, None when `fn` is missing or returned nothing (not written yet).

    Notebook 02's out-of-bounds exercise: the learner's call should trap, and a trap is an
    exception, so the check needs the outcome as a value.
    """
    import wasmtime

    if fn is None or not callable(fn):
        return None
    try:
        result = fn()
    except wasmtime.Trap as exc:
        # The last line is the cause ("wasm trap: out of bounds memory access"); the first
        # is a generic "error while executing".
        cause = str(exc).strip().splitlines()[-1].strip()
        return "trap: " + re.sub(r"^\d+:\s*", "", cause)
    if result is None or result is Ellipsis:
        return None
    return f"returned {result!r}"


def wat_interface(report) -> str:
    """The module's interface as a WAT module that assembles: its memory, its exported
    globals with their values, and every exported function as a stub with the same signature
    (body `unreachable`). Reading it is reading the ABI; `wasmtime.wat2wasm` accepts it."""
    lines = [f";; the exports of {Path(report.path).name}, bodies left out", "(module"]
    for e in report.exports:
        if e.kind == "memory":
            m = report.memory
            limits = f"{m.get('min_pages', 0)}" + (f" {m['max_pages']}" if m.get("max_pages")
                                                   else "")
            lines.append(f'  (memory (export "{e.name}") {limits})')
        elif e.kind == "global":
            value = report.globals.get(e.name, 0)
            vtype = e.signature.split()[-1]
            gtype = f"(mut {vtype})" if e.signature.startswith("mut") else vtype
            lines.append(f'  (global (export "{e.name}") {gtype} ({vtype}.const {value}))'
                         f"  ;; {value:#x}")
        elif e.kind == "func":
            params, results = (p.strip("[] ") for p in e.signature.split("->"))
            p = f" (param {' '.join(params.replace(',', ' ').split())})" if params else ""
            r = f" (result {' '.join(results.replace(',', ' ').split())})" if results else ""
            lines.append(f'  (func (export "{e.name}"){p}{r} unreachable)')
        else:
            lines.append(f'  ;; export "{e.name}": a {e.kind}')
    lines.append(")")
    return "\n".join(lines)


def section_figure(report, title: str | None = None) -> Figure:
    """Horizontal bars: bytes per section (custom sections by their name), log scale."""
    labels = [f"{s.name}:{s.custom_name}" if s.custom_name else s.name
              for s in report.sections]
    sizes = [s.size for s in report.sections]
    order = np.argsort(sizes)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.5), layout="constrained")
    colours = ["#55a868" if labels[i] == "code" else "#c44e52" if labels[i] == "data"
               else "#8172b3" if labels[i].startswith("custom") else "#4c72b0" for i in order]
    bars = ax.barh([labels[i] for i in order], [sizes[i] for i in order], color=colours)
    for b in bars:
        ax.annotate(f"{int(b.get_width()):,} B", (b.get_width(), b.get_y() + b.get_height() / 2),
                    va="center", fontsize=10, xytext=(4, 0), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("section size (bytes, log scale)")
    ax.set_title(title or f"Sections of {Path(report.path).name} ({report.size:,} bytes)",
                 fontsize=13)
    ax.margins(x=0.25)
    return fig


def html_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A plain HTML table (no pandas needed) for imports/exports/comparisons."""
    import html

    if not rows:
        return "<p><i>(none)</i></p>"
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'><code>"
                                    f"{html.escape(str(r.get(c, '')))}</code></td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------- notebook 04: charts


def top5_figure(pred, title: str | None = None) -> Figure:
    """Top-k classes as horizontal bars, best on top."""
    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    labels = [f"{t.label} ({t.index})" for t in pred.top][::-1]
    probs = [t.prob * 100 for t in pred.top][::-1]
    colours = ["#c7d3e8"] * (len(probs) - 1) + ["#4c72b0"]
    bars = ax.barh(labels, probs, color=colours)
    for b in bars:
        ax.annotate(f"{b.get_width():.1f} %", (b.get_width(), b.get_y() + b.get_height() / 2),
                    va="center", fontsize=11, xytext=(4, 0), textcoords="offset points")
    ax.set_xlim(0, 110)
    ax.set_xlabel("probability (%)")
    name = Path(pred.image).name if pred.image != "<bytes>" else "uploaded image"
    ax.set_title(title or f"{name} — {pred.model}, {pred.mode} preprocessing", fontsize=13)
    return fig


def timings_figure(pred, title: str | None = None) -> Figure:
    """Where the time went: one-off costs (compile, instantiate, load model) vs per image."""
    fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
    names = list(pred.timings_ms)
    values = [pred.timings_ms[n] for n in names]
    once = {"compile", "instantiate", "load_model"}
    colours = ["#8172b3" if n in once else "#55a868" for n in names]
    bars = ax.barh(names[::-1], values[::-1], color=colours[::-1])
    for b in bars:
        ax.annotate(f"{b.get_width():,.1f} ms", (b.get_width(), b.get_y() + b.get_height() / 2),
                    va="center", fontsize=10, xytext=(4, 0), textcoords="offset points")
    ax.set_xlabel("milliseconds")
    ax.margins(x=0.25)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="#8172b3", label="once per process"),
                       Patch(color="#55a868", label="per image")], loc="lower right")
    ax.set_title(title or "Timing breakdown", fontsize=13)
    return fig


def tensor_image(tensor: np.ndarray) -> np.ndarray:
    """A 1xHxWx3 input tensor rescaled to [0, 1] for display (the range differs by mode)."""
    t = np.asarray(tensor, dtype=np.float32).reshape(tensor.shape[-3:])
    lo, hi = float(t.min()), float(t.max())
    return (t - lo) / (hi - lo) if hi > lo else np.zeros_like(t)


def tensors_figure(tensors: dict[str, np.ndarray]) -> Figure:
    """The preprocessed tensors side by side, with each one's value range."""
    fig, axes = plt.subplots(1, len(tensors), figsize=(4 * len(tensors), 4.2),
                             layout="constrained", squeeze=False)
    for ax, (name, t) in zip(axes[0], tensors.items(), strict=True):
        ax.imshow(tensor_image(t))
        ax.set_title(f"{name}\nvalues {float(t.min()):.2f} .. {float(t.max()):.2f}",
                     fontsize=12)
        ax.axis("off")
    fig.suptitle("What the network sees (224x224x3 tensors, rescaled for display)",
                 fontsize=13)
    return fig


def compare_models(images: Sequence[Path | str], models: Sequence[str], mode: str = "model",
                   progress: bool = True, modes: Sequence[str] | None = None) -> list[dict]:
    """The same images through several models (and preprocessing modes): one row per
    image, top-1 with its probability per model and mode, and the time per image."""
    from tqdm.auto import tqdm

    from wasi_lab.predict import Classifier

    modes = list(modes) if modes else [mode]
    rows: dict[str, dict] = {}
    for m in models:
        clf = Classifier(m)
        for md in modes:
            column = m if len(modes) == 1 else f"{m} ({md})"
            for img in tqdm(list(images), desc=column, disable=not progress, leave=False):
                t0 = time.perf_counter()
                pred = clf.classify(img, top=1, mode=md)
                row = rows.setdefault(Path(str(img)).name, {"image": Path(str(img)).name})
                row[column] = f"{pred.top[0].label} ({pred.top[0].prob:.0%})"
                row[f"{column} ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return list(rows.values())


def grace_hopper_bytes() -> bytes:
    """The article's test image: images/grace_hopper.jpg, else matplotlib's copy."""
    from wasi_lab.paths import IMAGES_DIR

    local = IMAGES_DIR / "grace_hopper.jpg"
    if local.exists():
        return local.read_bytes()
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()


def available_models() -> list[str]:
    """Registered models whose file is present (the bundled one always, after setup)."""
    from wasi_lab.models.registry import list_models

    return [str(r["name"]) for r in list_models() if r["present"]]
