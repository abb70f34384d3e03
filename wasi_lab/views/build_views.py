"""Notebook 01's views of a `buildrecord.BuildRecord`: charts of the build variants, and
the jpeg-decoder source lines that decide whether it uses rayon.

The record is the stored one or a live one; each title says which, so a number on a chart
is never mistaken for this machine's.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from wasi_lab import listings
from wasi_lab.buildrecord import BuildRecord, cfg_lines, find_crate_file
from wasi_lab.rayon_lesson import RAYON_FEATURE
from wasi_lab.views.style import bar_labels


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
    bar_labels(ax, bars, "{:,.0f} KiB")
    if kib and max(kib) / max(min(kib), 1) > 8:
        ax.set_yscale("log")
        ax.set_ylabel("module size (KiB, log scale)")
    else:
        ax.set_ylabel("module size (KiB)")
    ax.set_title(f"Guest module size by build profile\n({builds.where(short=True)})", fontsize=12)
    ax.margins(y=0.2)
    return fig


def feature_cost_figure(
    builds: BuildRecord, base: str = "release", other: str = f"release-{RAYON_FEATURE}"
) -> Figure:
    """What threads you cannot use still cost: module size, crates in the build, cold build
    seconds; every bar from the same record (stored or live)."""
    names = [n for n in (base, other) if n in builds.variants]
    runs = [builds.variants[n] for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    colours = ["#4c72b0", "#c44e52"][: len(names)]
    panels = [
        ([v.size / 1024 for v in runs], "{:,.0f} KiB", "module size (KiB)", "Module size"),
        (
            [len(v.crates) for v in runs],
            "{:.0f} crates",
            "crates in the build",
            "Dependencies (cargo tree)",
        ),
        (
            [v.seconds for v in runs],
            "{:.0f} s",
            "seconds",
            "Cold build time"
            if all(v.cold for v in runs)
            else "Build time (" + ", ".join("cold" if v.cold else "cached" for v in runs) + ")",
        ),
    ]
    for ax, (values, fmt, ylabel, title) in zip(axes, panels, strict=True):
        bars = ax.bar(names, values, color=colours)
        bar_labels(ax, bars, fmt)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=13)
        ax.margins(y=0.3)
        ax.tick_params(axis="x", labelsize=10)
    fig.suptitle(
        "The cost of a dependency you cannot use on wasm32-wasi (rayon)\n"
        f"{builds.where(short=True)}",
        fontsize=13,
    )
    return fig


def jpeg_worker_listing(probe: dict):
    """Where jpeg-decoder decides whether to use rayon: read from its source on this machine
    when it is there, else the lines the record kept (with the file they came from)."""
    title = probe.get("jpeg_worker_file", "jpeg-decoder src/worker/mod.rs")
    path = find_crate_file(title) if "jpeg_worker_file" in probe else None
    if path is not None:  # numbered like the stored lines, so the gaps between them show
        return listings.Listing(
            f"{title} (read from this machine's copy)",
            "\n".join(cfg_lines(path.read_text().splitlines())),
            "rust",
            path,
        )
    return listings.Listing(
        f"{title} (kept in the build record)", "\n".join(probe.get("jpeg_worker_cfg", [])), "rust"
    )
