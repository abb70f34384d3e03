"""Notebook 06's chart of the server under load (`server.lab.latency_under_load` rows)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def latency_figure(rows: list[dict]) -> Figure:
    """Median/max latency and throughput against the number of concurrent clients."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    xs = [r["clients"] for r in rows]
    ax1.plot(xs, [r["median_ms"] for r in rows], "o-", label="median")
    ax1.plot(xs, [r["max_ms"] for r in rows], "s--", label="max")
    ax1.set(
        xlabel="concurrent clients", ylabel="latency (ms)", xticks=xs, title="Latency per request"
    )
    ax1.legend()
    ax2.bar([str(x) for x in xs], [r["throughput_rps"] for r in rows], color="tab:green")
    ax2.set(xlabel="concurrent clients", ylabel="requests / s", title="Throughput")
    fig.tight_layout()
    return fig
