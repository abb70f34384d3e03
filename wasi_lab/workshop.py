"""Small helpers the workshop notebooks call, so each cell stays one or two lines.

Notebook 01 builds variants of the guest and compares them, and replays the article's rayon
panic; notebook 02 draws a module's sections and writes a tiny module by hand; notebook 04
charts predictions. Nothing here is clever: it gathers numbers from `build`, `inspect`,
`runtime` and `predict` and draws them so they read well on a projector.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from wasi_lab.build import BuildResult, build_guest, built_module, variant_name
from wasi_lab.paths import REPO_ROOT
from wasi_lab.runtime import Guest, GuestError, GuestTrap
from wasi_lab.toolchain import Toolchain, ToolchainError, find_toolchain

#: Where build timings are remembered between notebook runs (gitignored).
BUILD_LOG = REPO_ROOT / ".wasi-lab" / "builds.json"
RAYON_FEATURE = "rayon-demo"


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


def toolchain_or_none() -> tuple[Toolchain | None, str]:
    """The toolchain the kit would use, or None with the advice text (no exception)."""
    try:
        tc = find_toolchain(check_network=False)
    except ToolchainError as exc:
        return None, str(exc)
    return tc, f"{tc.version} for {tc.target}: {tc.reason}"


def _load_log() -> dict:
    try:
        return json.loads(BUILD_LOG.read_text())
    except (OSError, ValueError):
        return {}


def record_build(res: BuildResult) -> dict:
    """Remember this build's size and time; a build that compiled dependencies too is
    kept as the variant's 'cold' time, so a later cached run can still chart it."""
    log = _load_log()
    name = variant_name(res.profile == "release", res.features)
    entry = log.get(name, {})
    entry.update({"size": res.size, "last_seconds": round(res.seconds, 2),
                  "last_compiled": len(res.compiled)})
    if len(res.compiled) > 1:  # dependencies were compiled: a cold (or nearly cold) build
        entry.update({"cold_seconds": round(res.seconds, 2), "cold_crates": len(res.compiled),
                      "crates": res.compiled})
    log[name] = entry
    BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
    BUILD_LOG.write_text(json.dumps(log, indent=2))
    return entry


def build_log() -> dict:
    """Everything `record_build` remembered, by variant name (e.g. 'release-rayon-demo')."""
    return _load_log()


def cargo_echo(prefixes: Sequence[str] = ("Compiling", "Finished", "warning", "error")
               ) -> Callable[[str], None]:
    """A line printer for `build_guest(echo=...)` that keeps the notebook readable."""
    def echo(line: str) -> None:
        text = line.strip()
        if text.startswith(tuple(prefixes)):
            print(text, flush=True)
    return echo


def build_variant(release: bool = True, features: Sequence[str] = (),
                  echo: Callable[[str], None] | None = None) -> BuildResult | None:
    """Build one variant with cargo (output live) and record it; None without a toolchain.

    Each variant has its own target directory, so after the first (cold) build a rerun is
    a no-op for cargo and takes a second.
    """
    tc, why = toolchain_or_none()
    name = variant_name(release, features)
    if tc is None:
        print(f"[skipped] {name}: no wasm-capable Rust toolchain here, so the notebook uses "
              f"the prebuilt module.\n{why}")
        return None
    res = build_guest(release=release, features=features, toolchain=tc, progress=False,
                      echo=echo if echo is not None else cargo_echo())
    record_build(res)
    state = ("up to date (cached)" if res.up_to_date
             else f"compiled {len(res.compiled)} crates")
    print(f"{name}: {state} in {res.seconds:.1f} s -> {res.module.name} {res.size:,} bytes")
    return res


def variant_sizes(variants: Sequence[tuple[bool, Sequence[str]]] = (
        (False, ()), (True, ()), (True, (RAYON_FEATURE,)))) -> dict[str, int]:
    """Module size per variant, for the variants that have been built."""
    out: dict[str, int] = {}
    for release, features in variants:
        p = built_module(release, features)
        if p is not None:
            out[variant_name(release, features)] = p.stat().st_size
    return out


def size_figure(sizes: dict[str, int], title: str = "Guest module size by build profile"
                ) -> Figure:
    """Bars of module size in KiB (log scale when the spread is large, as debug vs release)."""
    if not sizes:  # nothing built here: show the module the kit ships
        from wasi_lab.build import PREBUILT_MODULE

        sizes = {"prebuilt (release)": PREBUILT_MODULE.stat().st_size}
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    names = list(sizes)
    kib = [sizes[n] / 1024 for n in names]
    colours = ["#dd8452" if n.startswith("debug") else "#4c72b0" for n in names]
    bars = ax.bar(names, kib, color=colours)
    _bar_labels(ax, bars, "{:,.0f} KiB")
    if kib and max(kib) / max(min(kib), 1) > 8:
        ax.set_yscale("log")
        ax.set_ylabel("module size (KiB, log scale)")
    else:
        ax.set_ylabel("module size (KiB)")
    ax.set_title(title, fontsize=13)
    ax.margins(y=0.2)
    return fig


def dependency_crates(features: Sequence[str] = ()) -> list[str] | None:
    """The crates (name version) the guest depends on for the wasm target with `features`,
    from `cargo tree` (offline, well under a second); None without a toolchain."""
    import subprocess

    from wasi_lab.paths import GUEST_DIR

    tc, _ = toolchain_or_none()
    if tc is None:
        return None
    cmd = [str(tc.cargo), "tree", "--target", tc.target, *tc.cargo_config_args(),
           "--manifest-path", str(GUEST_DIR / "Cargo.toml"), "-e", "normal",
           "--prefix", "none"]
    if features:
        cmd += ["--features", ",".join(features)]
    out = subprocess.run(cmd, env=tc.env(), capture_output=True, text=True, timeout=120,
                         cwd=GUEST_DIR)
    if out.returncode != 0:
        return None
    crates = {" ".join(line.split()[:2]) for line in out.stdout.splitlines() if line.strip()}
    return sorted(c for c in crates if not c.startswith("wasi-lab-guest"))


def feature_cost_figure(log: dict | None = None, base: str = "release",
                        other: str = f"release-{RAYON_FEATURE}") -> Figure:
    """What the threads you cannot use still cost: module size, crates to compile, and
    the cold build time when one was recorded on this machine."""
    log = _load_log() if log is None else log
    names = [n for n in (base, other) if n in log]
    feats = {base: (), other: (RAYON_FEATURE,)}
    crates = {n: dependency_crates(feats.get(n, ())) for n in names}
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    colours = ["#4c72b0", "#c44e52"][:len(names)]
    bars = axes[0].bar(names, [log[n]["size"] / 1024 for n in names], color=colours)
    _bar_labels(axes[0], bars, "{:,.0f} KiB")
    axes[0].set_ylabel("module size (KiB)")
    axes[0].set_title("Module size", fontsize=13)
    counts = [len(crates[n]) if crates[n] is not None else 0 for n in names]
    bars = axes[1].bar(names, counts, color=colours)
    _bar_labels(axes[1], bars, "{:.0f} crates")
    axes[1].set_ylabel("crates in the build")
    axes[1].set_title("Dependencies compiled (cargo tree)", fontsize=13)
    secs = [log[n].get("cold_seconds", 0.0) for n in names]
    bars = axes[2].bar(names, secs, color=colours)
    for b, n in zip(bars, names, strict=True):
        text = (f"{b.get_height():.0f} s" if log[n].get("cold_seconds")
                else "no cold build\nrecorded here")
        axes[2].annotate(text, (b.get_x() + b.get_width() / 2, b.get_height()),
                         ha="center", va="bottom", fontsize=11, xytext=(0, 3),
                         textcoords="offset points")
    axes[2].set_ylabel("seconds")
    axes[2].set_title("Last cold build (2 cores)", fontsize=13)
    for ax in axes:
        ax.margins(y=0.3)
        ax.tick_params(axis="x", labelsize=10)
    fig.suptitle("The cost of a dependency you cannot use on wasm32-wasi (rayon)", fontsize=14)
    return fig


def extra_crates(features: Sequence[str] = (RAYON_FEATURE,)) -> list[str]:
    """Crates a feature adds to the default build (empty without a toolchain)."""
    base, more = dependency_crates(()), dependency_crates(features)
    if base is None or more is None:
        return []
    return sorted(set(more) - set(base))


@contextlib.contextmanager
def capture_stderr() -> Iterator[io.StringIO]:
    """Capture what the guest writes to stderr (fd 2) while the block runs.

    The guest's WASI stderr is the process's fd 2, which in Jupyter goes to the server's
    console, not the notebook; a panic message would be invisible. We point fd 2 at a
    temporary file for the duration and hand back its text.
    """
    out = io.StringIO()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.write(tmp.read().decode("utf-8", "replace"))


@dataclass
class RayonDemoResult:
    """Both faces of the article's first failure, as this guest reproduces them."""

    module: Path
    pool_error: str  # Debug of the ThreadPoolBuildError, from last_error
    pool_error_type: str
    trap: GuestTrap | None
    panic_message: str  # what the guest printed to stderr before the trap
    rayon_frames: list[str] = field(default_factory=list)

    def explain(self) -> str:
        lines = [f"rayon_demo_build_pool -> {self.pool_error_type}: {self.pool_error}"]
        if self.trap is not None:
            lines += ["", "rayon_demo_global -> GuestTrap (the instance is now unusable)",
                      f"guest stderr: {self.panic_message.strip()}"]
            if self.rayon_frames:
                lines += ["wasm backtrace frames from rayon:"]
                lines += [f"    {f}" for f in self.rayon_frames]
        return "\n".join(lines)


def panic_text(stderr: str) -> str:
    """The panic payload between the quotes of Rust's `panicked at '...'` line."""
    m = re.search(r"panicked at '(.*)', ", stderr, re.S)
    if m:
        return m.group(1)
    m = re.search(r"panicked at [^\n]*:\n(.*)", stderr)  # newer Rust prints it on its own line
    return m.group(1).strip() if m else stderr.strip()


def run_rayon_demo(module: Path | str | None = None) -> RayonDemoResult:
    """Call the two rayon exports of a `rayon-demo` build and collect what went wrong."""
    path = Path(module) if module else built_module(True, (RAYON_FEATURE,))
    if path is None or not Path(path).exists():
        raise FileNotFoundError("no rayon-demo build found: run "
                                "`wasi-lab build --features rayon-demo`")
    guest = Guest(path)
    try:
        guest.call("rayon_demo_build_pool")
        pool_error, pool_type = "(the pool started: this platform has threads)", "none"
    except GuestError as exc:
        pool_error, pool_type = exc.message, type(exc).__name__
    trap = None
    with capture_stderr() as err:
        try:
            guest.raw_call("rayon_demo_global")
        except GuestTrap as exc:
            trap = exc
    frames = []
    if trap is not None:
        frames = [line.strip() for line in trap.detail.splitlines() if "rayon" in line]
    return RayonDemoResult(path, pool_error, pool_type, trap, panic_text(err.getvalue()),
                           frames)


def rayon_lesson() -> RayonDemoResult | None:
    """Run the rayon demo when a `rayon-demo` build exists; otherwise say why not."""
    if built_module(True, (RAYON_FEATURE,)) is None:
        print("No rayon-demo build here (no Rust toolchain, or the build was skipped).\n"
              "On a machine with one: `wasi-lab build --features rayon-demo`.\n"
              "What it shows is the article's panic, quoted above: rayon cannot start threads "
              "on wasm32-wasi.")
        return None
    demo = run_rayon_demo()
    print(demo.explain())
    return demo


# --------------------------------------------------------------------------- notebook 02


def show_error(fn: Callable, *args) -> Exception | None:
    """Call `fn(*args)` and print the exception it raises (the lesson is the error)."""
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - we show whatever the guest says
        print(f"{type(exc).__name__}: {exc}")
        return exc
    print(f"no error: returned {result!r}")
    return None


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


def side_by_side(left: str, right: str, titles: tuple[str, str] = ("", "")):
    """Two code listings next to each other (HTML)."""
    import html as _html

    from IPython.display import HTML

    def col(title: str, text: str) -> str:
        return (f"<div style='flex:1; min-width:0'><b>{_html.escape(title)}</b>"
                f"<pre style='font-size:12px'>{_html.escape(text)}</pre></div>")

    return HTML(f"<div style='display:flex; gap:1.5em'>{col(titles[0], left)}"
                f"{col(titles[1], right)}</div>")


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


def run_tiny_module(payload: bytes = b"\x01\x02\x03\x04") -> dict[str, int]:
    """Instantiate the tiny module, alloc + write + sum, like the article's host does."""
    import wasmtime

    from wasi_lab.runtime import get_engine

    store = wasmtime.Store(get_engine())
    module = wasmtime.Module(store.engine, tiny_module())
    inst = wasmtime.Instance(store, module, [])
    ex = inst.exports(store)
    ptr = ex["alloc"](store, len(payload))
    ex["memory"].write(store, payload, ptr)
    second = ex["alloc"](store, 8)
    return {"ptr": ptr, "next_ptr": second, "sum": ex["sum"](store, ptr, len(payload)),
            "pages": ex["memory"].size(store)}


def wat_exports(report) -> str:
    """The exports of a `ModuleReport`, written the way WAT would declare them."""
    lines = []
    for e in report.exports:
        if e.kind == "func":
            params, results = (p.strip("[] ") for p in e.signature.split("->"))
            p = f" (param {' '.join(params.replace(',', ' ').split())})" if params else ""
            r = f" (result {' '.join(results.replace(',', ' ').split())})" if results else ""
            lines.append(f'(export "{e.name}" (func{p}{r}))')
        elif e.kind == "memory":
            lines.append(f'(export "{e.name}" (memory {report.memory.get("min_pages", "?")}))')
        elif e.kind == "global":
            value = report.globals.get(e.name)
            v = f" ;; = {value:#x}" if value is not None else ""
            lines.append(f'(export "{e.name}" (global {e.signature})){v}')
        else:
            lines.append(f'(export "{e.name}" ({e.kind}))')
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
