"""`make figures`: the charts the notebooks draw, rendered to docs/figures/ as PNG.

The charts are the notebooks' own (`wasi_lab.views`), so notebook 05 draws exactly what the
README shows. `render_all` measures once (wasmtime-py timings, the
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


def save(fig: Figure, path: Path) -> Path:
    """Write a PNG and close the figure (a batch run would otherwise keep them all)."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def render_all(
    out_dir: Path | str = FIGURES_DIR,
    repeat: int = 3,
    build_rayon: bool | None = None,
    progress: bool = True,
) -> list[Path]:
    """Measure once and write every figure as PNG; returns the paths written."""
    from tqdm.auto import tqdm

    from wasi_lab.bench import bench_figure, run_bench
    from wasi_lab.hosts import HostError, grace_hopper, run_node, wasmtime_timings
    from wasi_lab.predict import Classifier
    from wasi_lab.reproduction import article_table
    from wasi_lab.views.prediction_charts import top5_figure
    from wasi_lab.views.timing_charts import (
        article_table_figure,
        cold_cached_figure,
        host_stages_figure,
    )

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
    steps.append(
        (
            "article-table.png",
            lambda: article_table_figure(
                article_table(
                    repeat=repeat, build_rayon=build_rayon, timings=timings, node_result=node
                )
            ),
        )
    )
    steps.append(("timing-breakdown.png", lambda: host_stages_figure(timings, node)))
    steps.append(("cold-vs-cached.png", lambda: cold_cached_figure(timings)))
    steps.append(("top5-grace-hopper.png", lambda: top5_figure(pred)))
    steps.append(("page-map.png", lambda: _page_map(clf)))
    steps.append(
        ("bench.png", lambda: bench_figure(run_bench(repeat=max(10, repeat), progress=False)))
    )
    for name, make in tqdm(steps, desc="figures", disable=not progress, leave=False):
        fig = make()
        if fig is not None:
            written.append(save(fig, out / name))
    return written


def _page_map(clf) -> Figure | None:
    """memviz's page map of the guest after a prediction, when memviz is available."""
    try:
        from wasi_lab.views.memviz import page_map_figure
    except ImportError:
        return None
    snap = clf.guest.snapshot("after one prediction (model loaded, buffers freed)")
    return page_map_figure(snap, color_by="entropy")


def _cmd_figures(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    plt.switch_backend("Agg")  # headless: `make figures` runs in CI
    paths = render_all(
        args.out,
        repeat=args.repeat,
        build_rayon=False if args.no_build else None,
        progress=sys.stderr.isatty(),
    )
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
    p.add_argument(
        "--no-build",
        action="store_true",
        help="do not run cargo for the rayon-demo guest (use an earlier build)",
    )
    p.set_defaults(func=_cmd_figures)
