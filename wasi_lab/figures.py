"""`make figures`: the charts the notebooks draw, rendered to docs/figures/ as PNG.

Each `*_figure` function takes measured data and returns a matplotlib Figure, so notebook 05
draws exactly what the README shows. `render_all` measures once (wasmtime-py timings, the
Node host, the article table, one prediction, one memory snapshot) and writes every PNG.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from wasi_lab.paths import REPO_ROOT

if TYPE_CHECKING:  # pyplot is imported when drawing, so `wasi-lab --help` stays quick
    from matplotlib.figure import Figure

FIGURES_DIR = REPO_ROOT / "docs" / "figures"

#: One colour per stage, shared by every timing chart.
STAGE_COLOURS = {
    "compile": "#4c72b0", "instantiate": "#dd8452", "write": "#8172b3",
    "load_model": "#937860", "decode": "#55a868", "infer": "#c44e52",
}
STATUS_COLOURS = {"measured": "#d5ecd4", "stand-in": "#fdf0c9", "needs network": "#e8e8e8",
                  "unavailable": "#f6d5d5"}


def _wrap(text: str | None, width: int) -> str:
    import textwrap

    if text is None:
        return "—"
    return "\n".join(textwrap.wrap(" ".join(text.split()), width)[:6]) or "—"


def article_table_figure(rows: list) -> Figure:
    """The article's figures beside this machine's, as a table image (colour = status)."""
    import matplotlib.pyplot as plt

    cols = ("#", "article figure", "article", "this machine", "status")
    widths = (0.03, 0.27, 0.29, 0.29, 0.12)
    cells = [[str(i), _wrap(r.figure, 34), _wrap(r.article, 36), _wrap(r.this_machine, 36),
              r.status] for i, r in enumerate(rows, 1)]
    lines = [max(c.count("\n") + 1 for c in row) for row in cells]
    height = 0.9 + 0.28 * sum(lines) + 0.3 * len(rows)
    fig, ax = plt.subplots(figsize=(14, height))
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=cols, colWidths=widths, loc="upper center",
                     cellLoc="left", colLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    total = sum(lines) + len(rows) * 0.6 + 1.2
    table[0, 0].set_height(1.2 / total)
    for j in range(len(cols)):
        table[0, j].set_facecolor("#404040")
        table[0, j].get_text().set_color("white")
        table[0, j].set_height(1.2 / total)
    for i, (row, n) in enumerate(zip(rows, lines, strict=True), 1):
        for j in range(len(cols)):
            cell = table[i, j]
            cell.set_height((n + 0.6) / total)
            cell.set_facecolor(STATUS_COLOURS.get(row.status, "white") if j >= 3 else "white")
    ax.set_title("The article's figures (2020) beside this machine's", fontsize=13, loc="left")
    return fig


def timing_figure(timings, node: dict | None = None) -> Figure:
    """One request, stage by stage, in wasmtime-py (article-style and kit-style) and Node.

    "article-style" pays instantiate + model parse on every request, as the article's hosts
    did; "kit" keeps the instance and the parsed model and pays write + decode + infer.
    """
    import matplotlib.pyplot as plt

    bars: list[tuple[str, dict[str, float]]] = [
        ("wasmtime-py, kit\n(instance + model kept)",
         {"write": timings.write_ms, "decode": timings.decode_ms, "infer": timings.infer_ms}),
        ("wasmtime-py, article-style\n(new instance + model per request)",
         {"instantiate": timings.instantiate_ms, "write": timings.fresh_write_ms,
          "load_model": timings.load_model_ms, "decode": timings.fresh_decode_ms,
          "infer": timings.fresh_infer_ms}),
        ("wasmtime-py, first request\n(cold compile too)",
         {"compile": timings.compile_cold_ms, "instantiate": timings.instantiate_ms,
          "write": timings.fresh_write_ms, "load_model": timings.load_model_ms,
          "decode": timings.fresh_decode_ms, "infer": timings.fresh_infer_ms}),
    ]
    if node is not None:
        bars.append((f"Node {node['host'].split()[1]}\n(node:wasi, one run)",
                     {k: node["timings_ms"].get(k, 0.0) for k in STAGE_COLOURS}))
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.9 * len(bars)), layout="constrained")
    seen: set[str] = set()
    for y, (_, parts) in enumerate(bars):
        left = 0.0
        for stage in STAGE_COLOURS:
            ms = parts.get(stage, 0.0)
            if ms <= 0:
                continue
            ax.barh(y, ms, left=left, color=STAGE_COLOURS[stage], edgecolor="white")
            seen.add(stage)
            left += ms
        ax.text(left, y, f"  {left:.0f} ms", va="center", fontsize=9)
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([b[0] for b in bars], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds")
    ax.set_xlim(0, ax.get_xlim()[1] * 1.12)
    ax.set_title(f"Where one prediction's time goes ({timings.model}, {timings.image}, "
                 f"median of {timings.repeat})", fontsize=12, loc="left")
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=k.replace("_", " ")) for k, c in STAGE_COLOURS.items()
               if k in seen]  # stage order, not order of first appearance
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9,
              frameon=False)
    return fig


def cold_cached_figure(timings) -> Figure:
    """Compile from scratch vs load the cached .cwasm vs instantiate an InstancePre (log)."""
    import matplotlib.pyplot as plt

    names = ["compile, cold\n(Cranelift)", "compile, cached\n(.cwasm)",
             "instantiate\n(InstancePre)"]
    values = [timings.compile_cold_ms, timings.compile_cached_ms, timings.instantiate_ms]
    colours = [STAGE_COLOURS["compile"], "#8fa8d4", STAGE_COLOURS["instantiate"]]
    fig, ax = plt.subplots(figsize=(9, 4.2), layout="constrained")
    ax.bar(names, values, color=colours)
    for x, v in enumerate(values):
        ax.text(x, v * 1.15, f"{v:.2f} ms" if v < 10 else f"{v:.0f} ms", ha="center",
                fontsize=10)
    ax.axhline(774.715145, color="grey", linestyle="--", linewidth=1)
    ax.text(2.45, 774.7 * 1.1, "article: module instantiation 774.7 ms", ha="right",
            fontsize=9, color="grey")
    ax.set_yscale("log")
    ax.set_ylim(min(values) / 3, max(max(values), 774.7) * 4)
    ax.set_ylabel("milliseconds (log scale)")
    ax.set_title("Getting an instance: cold vs cached (median of "
                 f"{timings.repeat})", fontsize=12, loc="left")
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write a PNG and close the figure (a batch run would otherwise keep them all)."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def render_all(out_dir: Path | str = FIGURES_DIR, repeat: int = 3,
               build_rayon: bool | None = None,
               progress: bool = True) -> list[Path]:
    """Measure once and write every figure as PNG; returns the paths written."""
    from tqdm.auto import tqdm

    from wasi_lab.article import article_table
    from wasi_lab.bench import bench_figure, run_bench
    from wasi_lab.hosts import HostError, grace_hopper, run_node, wasmtime_timings
    from wasi_lab.predict import Classifier
    from wasi_lab.workshop import top5_figure

    out = Path(out_dir)
    gh = grace_hopper()
    written: list[Path] = []
    steps: list[tuple[str, Callable[[], Figure | None]]] = []
    timings = wasmtime_timings(image=gh, repeat=repeat)
    try:
        node = run_node(gh)
    except HostError:
        node = None
    clf = Classifier()
    pred = clf.classify(gh)
    steps.append(("article-table.png",
                  lambda: article_table_figure(article_table(
                      repeat=repeat, build_rayon=build_rayon, timings=timings,
                      node_result=node))))
    steps.append(("timing-breakdown.png", lambda: timing_figure(timings, node)))
    steps.append(("cold-vs-cached.png", lambda: cold_cached_figure(timings)))
    steps.append(("top5-grace-hopper.png", lambda: top5_figure(pred)))
    steps.append(("page-map.png", lambda: _page_map(clf)))
    steps.append(("bench.png", lambda: bench_figure(run_bench(repeat=max(10, repeat),
                                                              progress=False))))
    for name, make in tqdm(steps, desc="figures", disable=not progress, leave=False):
        fig = make()
        if fig is not None:
            written.append(save(fig, out / name))
    return written


def _page_map(clf) -> Figure | None:
    """memviz's page map of the guest after a prediction, when memviz is available."""
    try:
        from wasi_lab.memviz import page_map_figure
    except ImportError:
        return None
    snap = clf.guest.snapshot("after one prediction (model loaded, buffers freed)")
    return page_map_figure(snap, color_by="entropy")


def _cmd_figures(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    plt.switch_backend("Agg")  # headless: `make figures` runs in CI
    paths = render_all(args.out, repeat=args.repeat, build_rayon=False if args.no_build else None,
                       progress=sys.stderr.isatty())
    for p in paths:
        try:
            shown = p.resolve().relative_to(REPO_ROOT)
        except ValueError:
            shown = p
        print(f"wrote {shown} ({p.stat().st_size:,} bytes)")
    return 0


def add_figures_parser(subparsers: argparse._SubParsersAction) -> None:
    """`wasi-lab figures`: render docs/figures/*.png (what `make figures` runs)."""
    p = subparsers.add_parser("figures", help="render the README's figures to docs/figures/")
    p.add_argument("--out", type=Path, default=FIGURES_DIR, help="output folder")
    p.add_argument("--repeat", type=int, default=3, help="timing repetitions (median)")
    p.add_argument("--no-build", action="store_true",
                   help="do not run cargo for the rayon-demo guest (use an earlier build)")
    p.set_defaults(func=_cmd_figures)
