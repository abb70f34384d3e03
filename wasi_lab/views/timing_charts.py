"""Notebook 05's charts: where one request's time goes in each host, cold vs cached
compiles, and the article's figures beside this machine's. Each takes measured data
(`hosts.wasmtime_timings`, the Node host's result, `reproduction.article_table` rows);
`views.render` writes the same charts to docs/figures/ for the README.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wasi_lab.views.style import STAGE_COLOURS, STATUS_COLOURS, wrap

if TYPE_CHECKING:  # pyplot is imported when drawing, so `wasi-lab --help` stays quick
    from matplotlib.figure import Figure


def article_table_figure(rows: list) -> Figure:
    """The article's figures beside this machine's, as a table image (colour = status)."""
    import matplotlib.pyplot as plt

    cols = ("#", "article figure", "article", "this machine", "status")
    widths = (0.03, 0.27, 0.29, 0.29, 0.12)
    cells = [
        [str(i), wrap(r.figure, 34), wrap(r.article, 36), wrap(r.this_machine, 36), r.status]
        for i, r in enumerate(rows, 1)
    ]
    lines = [max(c.count("\n") + 1 for c in row) for row in cells]
    height = 0.9 + 0.28 * sum(lines) + 0.3 * len(rows)
    fig, ax = plt.subplots(figsize=(14, height))
    ax.axis("off")
    table = ax.table(
        cellText=cells,
        colLabels=cols,
        colWidths=widths,
        loc="upper center",
        cellLoc="left",
        colLoc="left",
    )
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


def host_stages_figure(timings, node: dict | None = None) -> Figure:
    """One request, stage by stage, in wasmtime-py (article-style and kit-style) and Node.

    "article-style" pays instantiate + model parse on every request, as the article's hosts
    did; "kit" keeps the instance and the parsed model and pays write + decode + infer.
    """
    import matplotlib.pyplot as plt

    bars: list[tuple[str, dict[str, float]]] = [
        (
            "wasmtime-py, kit\n(instance + model kept)",
            {"write": timings.write_ms, "decode": timings.decode_ms, "infer": timings.infer_ms},
        ),
        (
            "wasmtime-py, article-style\n(new instance + model per request)",
            {
                "instantiate": timings.instantiate_ms,
                "write": timings.fresh_write_ms,
                "load_model": timings.load_model_ms,
                "decode": timings.fresh_decode_ms,
                "infer": timings.fresh_infer_ms,
            },
        ),
        (
            "wasmtime-py, first request\n(cold compile too)",
            {
                "compile": timings.compile_cold_ms,
                "instantiate": timings.instantiate_ms,
                "write": timings.fresh_write_ms,
                "load_model": timings.load_model_ms,
                "decode": timings.fresh_decode_ms,
                "infer": timings.fresh_infer_ms,
            },
        ),
    ]
    if node is not None:
        bars.append(
            (
                f"Node {node['host'].split()[1]}\n(node:wasi, one run)",
                {k: node["timings_ms"].get(k, 0.0) for k in STAGE_COLOURS},
            )
        )
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
    ax.set_title(
        f"Where one prediction's time goes ({timings.model}, {timings.image}, "
        f"median of {timings.repeat})",
        fontsize=12,
        loc="left",
    )
    from matplotlib.patches import Patch

    handles = [
        Patch(color=c, label=k.replace("_", " ")) for k, c in STAGE_COLOURS.items() if k in seen
    ]  # stage order, not order of first appearance
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9, frameon=False
    )
    return fig


def cold_cached_figure(timings) -> Figure:
    """Compile from scratch vs load the cached .cwasm vs instantiate an InstancePre (log)."""
    import matplotlib.pyplot as plt

    names = [
        "compile, cold\n(Cranelift)",
        "compile, cached\n(.cwasm)",
        "instantiate\n(InstancePre)",
    ]
    values = [timings.compile_cold_ms, timings.compile_cached_ms, timings.instantiate_ms]
    colours = [STAGE_COLOURS["compile"], "#8fa8d4", STAGE_COLOURS["instantiate"]]
    fig, ax = plt.subplots(figsize=(9, 4.2), layout="constrained")
    ax.bar(names, values, color=colours)
    for x, v in enumerate(values):
        ax.text(x, v * 1.15, f"{v:.2f} ms" if v < 10 else f"{v:.0f} ms", ha="center", fontsize=10)
    ax.axhline(774.715145, color="grey", linestyle="--", linewidth=1)
    ax.text(
        2.45,
        774.7 * 1.1,
        "article: module instantiation 774.7 ms",
        ha="right",
        fontsize=9,
        color="grey",
    )
    ax.set_yscale("log")
    ax.set_ylim(min(values) / 3, max(max(values), 774.7) * 4)
    ax.set_ylabel("milliseconds (log scale)")
    ax.set_title(
        f"Getting an instance: cold vs cached (median of {timings.repeat})", fontsize=12, loc="left"
    )
    return fig
