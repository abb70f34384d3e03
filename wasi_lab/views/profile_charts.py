"""Notebook 07's chart of a `plan_profile.LayerProfile`: where one inference's time goes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from wasi_lab.plan_profile import LayerProfile


def layers_figure(prof: LayerProfile) -> Figure:
    """Milliseconds per kind of op (bars) and the rate each reaches (labels)."""
    import matplotlib.pyplot as plt

    rows = prof.by_op()[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2), layout="constrained")
    bars = ax.barh(
        [f"{r.op} (x{r.steps})" for r in rows],
        [r.ms for r in rows],
        color=["#4c72b0" if r.macs else "#999999" for r in rows],
    )
    for b, r in zip(bars, rows, strict=True):
        note = f"{r.ms:.2f} ms, {r.share:.0%}"
        if r.gmacs:
            note += f", {r.gmacs:.1f} G MAC/s"
        if r.skipped:
            note += f" ({r.skipped_share:.0%} skipped)"
        ax.annotate(
            note,
            (b.get_width(), b.get_y() + b.get_height() / 2),
            va="center",
            xytext=(6, 0),
            textcoords="offset points",
            fontsize=9,
        )
    ax.margins(x=0.7)  # room for the labels past the longest bar
    ax.set_xlabel("milliseconds per inference (median per step, summed by op)")
    ax.set_title(f"{prof.model}: where {prof.total_ms:.1f} ms go", fontsize=12, loc="left")
    return fig
