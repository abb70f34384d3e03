"""Notebook 04's charts of one prediction: its top classes, what it cost once per process
and per image, and the tensors the network saw (each takes a `predict.Prediction`, or the
preprocessed tensors).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def top5_figure(pred, title: str | None = None) -> Figure:
    """Top-k classes as horizontal bars, best on top."""
    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    labels = [f"{t.label} ({t.index})" for t in pred.top][::-1]
    probs = [t.prob * 100 for t in pred.top][::-1]
    colours = ["#c7d3e8"] * (len(probs) - 1) + ["#4c72b0"]
    bars = ax.barh(labels, probs, color=colours)
    for b in bars:
        ax.annotate(
            f"{b.get_width():.1f} %",
            (b.get_width(), b.get_y() + b.get_height() / 2),
            va="center",
            fontsize=11,
            xytext=(4, 0),
            textcoords="offset points",
        )
    ax.set_xlim(0, 110)
    ax.set_xlabel("probability (%)")
    name = Path(pred.image).name if pred.image != "<bytes>" else "uploaded image"
    ax.set_title(title or f"{name} — {pred.model}, {pred.mode} preprocessing", fontsize=13)
    return fig


def setup_and_image_figure(pred, title: str | None = None) -> Figure:
    """Where the time went: one-off costs (compile, instantiate, load model) vs per image."""
    fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
    names = list(pred.timings_ms)
    values = [pred.timings_ms[n] for n in names]
    once = {"compile", "instantiate", "load_model"}
    colours = ["#8172b3" if n in once else "#55a868" for n in names]
    bars = ax.barh(names[::-1], values[::-1], color=colours[::-1])
    for b in bars:
        ax.annotate(
            f"{b.get_width():,.1f} ms",
            (b.get_width(), b.get_y() + b.get_height() / 2),
            va="center",
            fontsize=10,
            xytext=(4, 0),
            textcoords="offset points",
        )
    ax.set_xlabel("milliseconds")
    ax.margins(x=0.25)
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color="#8172b3", label="once per process"),
            Patch(color="#55a868", label="per image"),
        ],
        loc="lower right",
    )
    ax.set_title(title or "Timing breakdown", fontsize=13)
    return fig


def tensor_image(tensor: np.ndarray) -> np.ndarray:
    """A 1xHxWx3 input tensor rescaled to [0, 1] for display (the range differs by mode)."""
    t = np.asarray(tensor, dtype=np.float32).reshape(tensor.shape[-3:])
    lo, hi = float(t.min()), float(t.max())
    return (t - lo) / (hi - lo) if hi > lo else np.zeros_like(t)


def tensors_figure(tensors: dict[str, np.ndarray]) -> Figure:
    """The preprocessed tensors side by side, with each one's value range."""
    fig, axes = plt.subplots(
        1, len(tensors), figsize=(4 * len(tensors), 4.2), layout="constrained", squeeze=False
    )
    for ax, (name, t) in zip(axes[0], tensors.items(), strict=True):
        ax.imshow(tensor_image(t))
        ax.set_title(f"{name}\nvalues {float(t.min()):.2f} .. {float(t.max()):.2f}", fontsize=12)
        ax.axis("off")
    fig.suptitle("What the network sees (224x224x3 tensors, rescaled for display)", fontsize=13)
    return fig
