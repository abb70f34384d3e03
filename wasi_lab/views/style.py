"""What every chart shares: PNG rendering, bar labels, the stage and status colours.

Colours are fixed per stage so a colour means the same thing in every chart of the course.
"""

from __future__ import annotations

import io
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyplot is imported when drawing, so `wasi-lab --help` stays quick
    from matplotlib.figure import Figure

#: One colour per stage, shared by every timing chart.
STAGE_COLOURS = {
    "compile": "#4c72b0",
    "instantiate": "#dd8452",
    "write": "#8172b3",
    "load_model": "#937860",
    "decode": "#55a868",
    "infer": "#c44e52",
}
STATUS_COLOURS = {
    "measured": "#d5ecd4",
    "stand-in": "#fdf0c9",
    "needs network": "#e8e8e8",
    "unavailable": "#f6d5d5",
}


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """Render a figure to PNG bytes and close it (widgets show PNGs, not live figures)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def bar_labels(ax, bars, fmt: str) -> None:
    """Each bar's height written above it, with `fmt` (e.g. "{:,.0f} KiB")."""
    for b in bars:
        ax.annotate(
            fmt.format(b.get_height()),
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=11,
            xytext=(0, 3),
            textcoords="offset points",
        )


def wrap(text: str | None, width: int) -> str:
    """At most six lines of `width` characters, "—" for nothing (table cells)."""
    if text is None:
        return "—"
    return "\n".join(textwrap.wrap(" ".join(text.split()), width)[:6]) or "—"
