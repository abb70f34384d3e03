"""Step-through inference: run the network one step at a time inside the guest and look at it.

The guest's engine turns the frozen graph into a flat plan of steps (a convolution with its
batch norm, bias and ReLU6 folded in is one step) whose activations live in a few buffers in
linear memory. Two exports open that plan to the host:

* ``step_info(handle, out, cap)`` — JSON: per step the op, the node, the shapes, and the
  offsets and byte lengths of its inputs, output and weights in linear memory;
* ``run_to_step(handle, in_ptr, in_len, step)`` — run steps ``0..=step`` on an input.

After ``run_to_step`` the host reads the step's bytes straight out of memory at those offsets
(:class:`StepThrough`), views them as NumPy arrays, and recomputes one output value from them
(:func:`recompute`), which must agree with what the guest wrote. :class:`StepThroughWidget` is
the notebook view: a slider and a play button over the steps, the page map with the step's
pages lit, the first output channels as images, and the recomputed value.

What the bytes are, as the guest lays them out (``guest/src/engine/plan.rs``):

* activations are NHWC float32 (little-endian), batch 1;
* a convolution's weights are already multiplied by the folded batch-norm scale and its bias
  is ``b * s + t``, so ``act(x · w + bias)`` is the whole step; a ``residual`` convolution
  also adds its second input (the skip connection) before the activation;
* a convolution's filter is stored as the GEMM kernel reads it: packed panels of ``nr = 8``
  output channels, value ``W[p, col]`` (``p`` the flattened ``ky, kx, ci`` index) at
  ``((col // nr) * k + p) * nr + col % nr``, the bias zero-padded to whole panels
  (:func:`unpack_panels` undoes it); unpacked filters are HWIO;
* a depthwise filter is ``[kh, kw, c, mult]`` (output channel ``c * mult + m``);
* a MatMul's constant matrix is ``[k, n]``.
"""

from __future__ import annotations

import html
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as W
import matplotlib
import numpy as np
from PIL import Image

from wasi_lab.predict import Classifier
from wasi_lab.runtime import PAGE_SIZE, Guest

#: What `step_info` needs room for on a first try (EfficientNet-Lite0's plan is ~28 KB).
_INFO_CAP = 64 * 1024
_MAGMA = matplotlib.colormaps["magma"]


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Span:
    """A tensor in linear memory: `bytes` bytes of f32 from offset `ptr`, of `shape`."""

    ptr: int
    nbytes: int
    shape: tuple[int, ...]
    kind: str = "activation"
    name: str = ""
    layout: str = "NHWC"

    @property
    def end(self) -> int:
        return self.ptr + self.nbytes

    @property
    def pages(self) -> range:
        """The 64 KiB pages the tensor touches."""
        if self.nbytes <= 0:
            return range(0)
        return range(self.ptr // PAGE_SIZE, (self.end - 1) // PAGE_SIZE + 1)

    def describe(self) -> str:
        label = self.name or self.kind
        return (
            f"{label} {list(self.shape)} ({self.layout}): {self.nbytes:,} B at "
            f"{self.ptr:#x}..{self.end:#x}, pages {self.pages.start}–{self.pages.stop - 1}"
        )


def _span(d: dict[str, Any], kind: str = "activation") -> Span:
    return Span(
        int(d["ptr"]),
        int(d["bytes"]),
        tuple(int(v) for v in d["shape"]),
        kind=d.get("kind", kind),
        name=d.get("name", ""),
        layout=d.get("layout", "NHWC"),
    )


@dataclass(frozen=True)
class StepInfo:
    """One step of the guest's plan, as `step_info` describes it."""

    index: int
    op: str
    node: str
    macs: int
    inputs: tuple[Span, ...]
    output: Span
    weights: tuple[Span, ...]
    #: The op's parameters: `act`, and `window`, `cout`, `packed`, `residual`, `mult` ...
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def act(self) -> str:
        return str(self.params.get("act", "none"))

    def weight(self, name: str) -> Span:
        for w in self.weights:
            if w.name == name:
                return w
        raise KeyError(f"step {self.index} ({self.op}) has no weight named {name!r}")


@dataclass(frozen=True)
class Plan:
    """The whole plan: where the model's input and output live, and every step."""

    input: Span
    output: Span
    steps: tuple[StepInfo, ...]

    def find(self, op: str) -> StepInfo:
        """The first step whose op label is `op` (e.g. ``"Depthwise 5x5"``)."""
        for s in self.steps:
            if s.op == op:
                return s
        raise KeyError(f"no step with op {op!r}; ops: {sorted({s.op for s in self.steps})}")


_STEP_KEYS = {"index", "op", "node", "macs", "inputs", "output", "weights"}


def parse_plan(text: str | bytes) -> Plan:
    """Turn `step_info`'s JSON into a :class:`Plan`."""
    d = json.loads(text)
    steps = tuple(
        StepInfo(
            index=int(s["index"]),
            op=s["op"],
            node=s["node"],
            macs=int(s["macs"]),
            inputs=tuple(_span(i) for i in s["inputs"]),
            output=_span(s["output"]),
            weights=tuple(_span(w, "weights") for w in s["weights"]),
            params={k: v for k, v in s.items() if k not in _STEP_KEYS},
        )
        for s in d["steps"]
    )
    return Plan(_span(d["input"]), _span(d["output"]), steps)


def read_plan(guest: Guest, handle: int) -> Plan:
    """Call `step_info` (asking again with a bigger buffer when the first was short)."""
    cap = _INFO_CAP
    while True:
        out = guest.alloc(cap, "step_info")
        try:
            n = guest.call("step_info", handle, out, cap)
            if n <= cap:
                return parse_plan(guest.read_bytes(out, n))
        finally:
            guest.dealloc(out, cap)
        cap = n


def read_array(guest: Guest, span: Span) -> np.ndarray:
    """A tensor's bytes, copied out of linear memory, as float32 of its shape."""
    return guest.read_f32(span.ptr, span.nbytes // 4).reshape(span.shape)


# --------------------------------------------------------------------------- running


@dataclass
class StepValues:
    """A step's tensors as they were in memory right after `run_to_step(step)`."""

    step: StepInfo
    inputs: list[np.ndarray]
    output: np.ndarray
    weights: dict[str, np.ndarray]
    run_ms: float


class StepThrough:
    """One input tensor, resident in the guest, and the plan of the classifier's model.

    The tensor is written into a guest block once; `run_to(step)` then calls `run_to_step`
    and reads the step's input, weights and output out of memory. Call `close()` (or use it
    as a context manager) to give the block back.
    """

    def __init__(self, classifier: Classifier, tensor: np.ndarray):
        self.classifier = classifier
        self.guest = classifier.guest
        self.handle = classifier.handle
        self.plan = read_plan(self.guest, self.handle)
        self.tensor = np.ascontiguousarray(tensor, dtype="<f4")
        if self.tensor.nbytes != self.plan.input.nbytes:
            raise ValueError(
                f"the tensor has {self.tensor.nbytes:,} bytes; the model's input "
                f"{list(self.plan.input.shape)} takes {self.plan.input.nbytes:,}"
            )
        self.tensor_ptr: int | None = self.guest.write_bytes(self.tensor, "step input tensor")

    def __enter__(self) -> StepThrough:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.tensor_ptr is not None and self.guest.poisoned is None:
            self.guest.dealloc(self.tensor_ptr, self.tensor.nbytes)
        self.tensor_ptr = None

    def __len__(self) -> int:
        return len(self.plan.steps)

    def run_raw(self, step: int) -> int:
        """`run_to_step` as is: steps run, or the guest's error (as a GuestError)."""
        if self.tensor_ptr is None:
            raise RuntimeError("this StepThrough was closed")
        return self.guest.call(
            "run_to_step", self.handle, self.tensor_ptr, self.tensor.nbytes, int(step)
        )

    def run_to(self, step: int) -> StepValues:
        """Run steps 0..=step in the guest and copy the step's tensors out of memory."""
        t0 = time.perf_counter()
        self.run_raw(step)
        run_ms = (time.perf_counter() - t0) * 1000
        info = self.plan.steps[step]
        return StepValues(
            step=info,
            inputs=[read_array(self.guest, s) for s in info.inputs],
            output=read_array(self.guest, info.output),
            weights={w.name: read_array(self.guest, w) for w in info.weights},
            run_ms=run_ms,
        )


# --------------------------------------------------------------------------- NumPy side


def unpack_panels(panels: np.ndarray, k: int, n: int, nr: int = 8) -> np.ndarray:
    """The GEMM's packed panels back to ``W[k, n]``.

    The guest stores column ``col`` of ``W[k, n]`` in panel ``col // nr``, lane
    ``col % nr``: ``panels[(col // nr) * k + p, col % nr]`` reshaped as
    ``[n_panels, k, nr]``; the last panel is zero-padded.
    """
    flat = np.asarray(panels).reshape(-1)
    n_panels = (n + nr - 1) // nr
    if flat.size != n_panels * k * nr:
        raise ValueError(f"{flat.size} values are not {n_panels} panels of {k}x{nr}")
    # [panel, p, lane] -> [p, panel, lane] -> [p, panel * nr + lane]
    return flat.reshape(n_panels, k, nr).transpose(1, 0, 2).reshape(k, n_panels * nr)[:, :n]


def conv_filter(values: StepValues) -> tuple[np.ndarray, np.ndarray]:
    """A convolution step's filter as HWIO and its bias, read from the step's weights."""
    s = values.step
    win, cin = s.params["window"], s.inputs[0].shape[3]
    cout = int(s.params["cout"])
    if s.params.get("packed"):
        k = win["kh"] * win["kw"] * cin
        w = unpack_panels(values.weights["panels"], k, cout, int(s.params["nr"]))
        return w.reshape(win["kh"], win["kw"], cin, cout), values.weights["bias"][:cout]
    return values.weights["filter"], values.weights["bias"]


def activation(name: str, v: float) -> float:
    """The activation the plan fused into the step."""
    if name == "relu":
        return max(v, 0.0)
    if name == "relu6":
        return min(max(v, 0.0), 6.0)
    if name in ("sigmoid", "swish"):  # Keras' swish and squeeze-excite gate
        s = 0.0 if v < -700 else 1.0 / (1.0 + math.exp(-v))
        return s if name == "sigmoid" else v * s
    if name in ("hard_sigmoid", "hard_swish"):  # MobileNetV3's
        h = min(max(v + 3.0, 0.0), 6.0) / 6.0
        return h if name == "hard_sigmoid" else v * h
    return v


def _window_taps(
    win: dict[str, int], h: int, w: int, oy: int, ox: int
) -> list[tuple[int, int, int, int]]:
    """(ky, kx, iy, ix) of the taps inside the image; the others read zero padding. Taps
    are `dh` rows and `dw` columns apart in a dilated convolution."""
    taps = []
    dh, dw = win.get("dh", 1), win.get("dw", 1)
    for ky in range(win["kh"]):
        iy = oy * win["sh"] + ky * dh - win["pad_top"]
        for kx in range(win["kw"]):
            ix = ox * win["sw"] + kx * dw - win["pad_left"]
            if 0 <= iy < h and 0 <= ix < w:
                taps.append((ky, kx, iy, ix))
    return taps


@dataclass
class Recomputed:
    """One output value recomputed in NumPy from the bytes the guest read and wrote."""

    step: int
    op: str
    position: tuple[int, ...]
    guest: float
    numpy: float
    pre_activation: float
    formula: str

    @property
    def difference(self) -> float:
        return abs(self.guest - self.numpy)

    def summary(self) -> str:
        return (
            f"step {self.step} ({self.op}), output{list(self.position)}: guest "
            f"{self.guest:.7g}, NumPy {self.numpy:.7g}, difference {self.difference:.2g}"
        )


def pick_position(values: StepValues) -> tuple[int, ...]:
    """The output value to recompute: the largest one the activation did not clip (more
    telling than a zero after ReLU6), else the largest."""
    out = values.output
    act = values.step.act
    ok = np.ones(out.shape, bool)
    if act in ("relu", "relu6"):
        ok &= out > 0
    if act == "relu6":
        ok &= out < 6
    flat = np.where(ok, out, -np.inf).reshape(-1)
    i = int(np.argmax(flat)) if np.isfinite(flat).any() else int(np.argmax(out))
    return tuple(int(v) for v in np.unravel_index(i, out.shape))


def recompute(values: StepValues, position: Sequence[int] | None = None) -> Recomputed | None:
    """Recompute output value `position` (default :func:`pick_position`) of a Conv,
    Depthwise, MatMul, Mean or Softmax step in float64 from the step's bytes; None for
    ops this does not cover (pooling, pads, adds)."""
    s = values.step
    pos = tuple(int(v) for v in (position if position is not None else pick_position(values)))
    if len(pos) != values.output.ndim or any(
        not 0 <= p < d for p, d in zip(pos, values.output.shape, strict=True)
    ):
        raise IndexError(f"position {list(pos)} is outside the output {list(values.output.shape)}")
    x = values.inputs[0].astype(np.float64) if values.inputs else None
    kind = s.op.split()[0]
    if kind == "Conv" and x is not None:
        w, bias = conv_filter(values)
        n, oy, ox, co = pos
        taps = _window_taps(s.params["window"], x.shape[1], x.shape[2], oy, ox)
        pre = float(bias[co]) + sum(
            float(x[n, iy, ix, :] @ w[ky, kx, :, co].astype(np.float64)) for ky, kx, iy, ix in taps
        )
        formula = (
            f"bias[{co}] + Σ over {len(taps)} taps × {x.shape[3]} channels of "
            f"input · filter[..., {co}]"
        )
        if s.params.get("residual"):
            pre += float(values.inputs[1][pos])
            formula += " + skip input"
    elif kind == "Depthwise" and x is not None:
        w, bias = values.weights["filter"], values.weights["bias"]
        mult = int(s.params["mult"])
        n, oy, ox, oc = pos
        c, m = divmod(oc, mult)
        taps = _window_taps(s.params["window"], x.shape[1], x.shape[2], oy, ox)
        pre = float(bias[oc]) + sum(
            float(x[n, iy, ix, c]) * float(w[ky, kx, c, m]) for ky, kx, iy, ix in taps
        )
        win = s.params["window"]
        formula = (
            f"bias[{oc}] + Σ over the {len(taps)} taps of the {win['kh']}x{win['kw']} "
            f"window of channel {c}"
        )
    elif kind == "MatMul" and x is not None and "matrix" in values.weights:
        if s.params.get("trans_a"):
            x = x.T
        i, j = pos
        mat = values.weights["matrix"].astype(np.float64)
        pre = float(values.weights["bias"][j]) + float(x[i, :] @ mat[:, j])
        formula = f"bias[{j}] + input row {i} · matrix column {j}"
    elif kind == "Mean" and x is not None and x.ndim == 4 and values.output.ndim in (2, 4):
        n, c = pos[0], pos[-1]
        pre = float(x[n, :, :, c].mean())
        formula = f"mean of channel {c} over {x.shape[1]}x{x.shape[2]} pixels"
    elif kind == "Softmax" and x is not None:
        row = x[pos[:-1]]
        e = np.exp(row - row.max())
        pre = float(e[pos[-1]] / e.sum())
        formula = f"exp(x[{pos[-1]}] - max) / Σ exp(x - max) over {row.size} classes"
    else:
        return None
    num = activation(s.act, pre)
    if s.act != "none":
        formula = f"{s.act}({formula})"
    return Recomputed(
        step=s.index,
        op=s.op,
        position=pos,
        guest=float(values.output[pos]),
        numpy=num,
        pre_activation=pre,
        formula=formula,
    )


# --------------------------------------------------------------------------- figures


#: Page categories of the step map, lowest priority first (a page shared by two tensors
#: shows the later one).
PAGE_KINDS: tuple[str, ...] = (
    "rest of the heap",
    "data + stack",
    "weights (other steps)",
    "activation buffers",
    "this step's weights",
    "this step's input",
    "this step's output",
)
PAGE_COLOURS: dict[str, str] = {
    "rest of the heap": "#f0f0f0",
    "data + stack": "#c6d4ea",
    "weights (other steps)": "#cfe8d0",
    "activation buffers": "#f2d7c4",
    "this step's weights": "#2f8a3b",
    "this step's input": "#4c72b0",
    "this step's output": "#c44e52",
}


def page_kinds(plan: Plan, step: StepInfo, pages: int, heap_base: int) -> np.ndarray:
    """One `PAGE_KINDS` index per page of memory for `step`."""
    codes = np.zeros(pages, dtype=np.int8)
    idx = {k: i for i, k in enumerate(PAGE_KINDS)}
    codes[: min(pages, (heap_base + PAGE_SIZE - 1) // PAGE_SIZE)] = idx["data + stack"]

    def light(spans: Sequence[Span], kind: str) -> None:
        for sp in spans:
            r = sp.pages
            codes[r.start : min(r.stop, pages)] = idx[kind]

    light([w for s in plan.steps for w in s.weights], "weights (other steps)")
    light([plan.input] + [s.output for s in plan.steps], "activation buffers")
    light(step.weights, "this step's weights")
    light([i for i in step.inputs if i.kind == "constant"], "this step's weights")
    light([i for i in step.inputs if i.kind != "constant"], "this step's input")
    light([step.output], "this step's output")
    return codes


def _png(rgb: np.ndarray) -> bytes:
    """Encode an ``[h, w, 3]`` uint8 array as PNG (no figure: a few milliseconds)."""
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def page_map_png(codes: np.ndarray, cols: int = 64, cell: int = 9) -> bytes:
    """Pages as squares of `cell` pixels, `cols` per row from address 0 (as in notebook
    03's map), coloured by `PAGE_KINDS` index, with a 1-pixel white gap between squares."""
    rows = (len(codes) + cols - 1) // cols
    palette = np.array(
        [_hex_rgb(PAGE_COLOURS[k]) for k in PAGE_KINDS] + [(255, 255, 255)], dtype=np.uint8
    )
    grid = np.full(rows * cols, len(PAGE_KINDS), dtype=np.int64)
    grid[: len(codes)] = codes
    rgb = palette[grid.reshape(rows, cols)]
    big = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
    big[cell - 1 :: cell, :, :] = 255
    big[:, cell - 1 :: cell, :] = 255
    return _png(big)


def page_legend_html(codes: np.ndarray, cols: int = 64) -> str:
    """The map's legend and scale, as HTML (drawn by the browser, not rendered per step)."""
    counts = np.bincount(codes.astype(np.int64), minlength=len(PAGE_KINDS))
    items = "".join(
        f"<span style='white-space:nowrap; margin-right:12px'><span style='display:inline-block;"
        f" width:11px; height:11px; background:{PAGE_COLOURS[k]}; border:1px solid #999'>"
        f"</span> {html.escape(k)} ({counts[i]})</span>"
        for i, k in enumerate(PAGE_KINDS)
        if counts[i]
    )
    return (
        f"<div style='font-size:12px'>{len(codes)} pages of 64 KiB, {cols} per row "
        f"({cols * PAGE_SIZE // 2**20} MiB), address 0 at the top left: {items}</div>"
    )


def _colourise(channel: np.ndarray, size: int) -> np.ndarray:
    """One feature map scaled to its own min..max, coloured (magma), upscaled to ~`size`."""
    lo, hi = float(channel.min()), float(channel.max())
    norm = (channel - lo) / (hi - lo) if hi > lo else np.zeros_like(channel)
    rgb = (_MAGMA(norm)[..., :3] * 255).astype(np.uint8)
    k = max(1, size // max(channel.shape))
    return np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)


def feature_maps_png(output: np.ndarray, channels: int = 8, size: int = 112) -> bytes:
    """The first `channels` channels of an NHWC output side by side, each scaled to its own
    range; a flat output (the logits, the probabilities) as a bar per value."""
    if output.ndim == 4 and output.shape[1] * output.shape[2] > 1:
        tiles = [
            _colourise(output[0, :, :, j], size) for j in range(min(channels, output.shape[3]))
        ]
        h = max(t.shape[0] for t in tiles)
        gap = np.full((h, 6, 3), 255, dtype=np.uint8)
        row: list[np.ndarray] = []
        for t in tiles:
            pad = np.full((h, t.shape[1], 3), 255, dtype=np.uint8)
            pad[: t.shape[0]] = t
            row += [pad, gap]
        return _png(np.concatenate(row[:-1], axis=1))
    flat = output.reshape(-1).astype(np.float64)
    height, width = 90, len(flat)
    lo, hi = min(0.0, float(flat.min())), max(0.0, float(flat.max()))
    span = (hi - lo) or 1.0
    top = np.round((hi - flat) / span * (height - 1)).astype(int)
    zero = int(round(hi / span * (height - 1)))
    rgb = np.full((height, width, 3), 255, dtype=np.uint8)
    ys = np.arange(height)[:, None]
    on = (ys >= np.minimum(top, zero)[None, :]) & (ys <= np.maximum(top, zero)[None, :])
    rgb[on] = _hex_rgb("#4c72b0")
    rgb[zero] = 0
    return _png(rgb)


def feature_maps_caption(output: np.ndarray, channels: int = 8) -> str:
    """What the feature-map image shows, in words."""
    if output.ndim == 4 and output.shape[1] * output.shape[2] > 1:
        c = min(channels, output.shape[3])
        return (
            f"output channels 0–{c - 1} of {output.shape[3]} "
            f"({output.shape[1]}x{output.shape[2]} pixels each, each scaled to its own "
            f"min..max, dark = low)"
        )
    flat = output.reshape(-1)
    return (
        f"all {flat.size} output values, one pixel column each (min {flat.min():.3g}, "
        f"max {flat.max():.3g} at index {int(flat.argmax())})"
    )


# --------------------------------------------------------------------------- widget


@dataclass
class StepView:
    """Everything the widget shows for one step, computed once and cached."""

    caption: str
    page_map: bytes
    page_legend: str
    feature_maps: bytes
    feature_caption: str
    recomputed: Recomputed | None
    build_ms: float


class StepThroughWidget:
    """A slider (and play button) over the plan's steps; per step the op, shapes, addresses,
    the page map, the output channels and one value recomputed in NumPy.

    Each step is computed the first time it is shown and cached (`views`; `hits` and
    `misses` count), so moving back to a step answers at once.
    """

    def __init__(self, stepper: StepThrough, start: int = 0, play_interval_ms: int = 1200):
        self.stepper = stepper
        self.views: dict[int, StepView] = {}
        self.hits = 0
        self.misses = 0
        self.index = -1
        self.last_ms = 0.0
        n = len(stepper)
        self.slider = W.IntSlider(
            value=start,
            min=0,
            max=n - 1,
            description="step",
            continuous_update=False,
            layout=W.Layout(width="460px"),
        )
        self.slider.add_class("wasi-step-slider")
        self.play = W.Play(
            value=start, min=0, max=n - 1, interval=play_interval_ms, description="play"
        )
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.caption = W.HTML()
        self.caption.add_class("wasi-step-caption")
        self.recomputed = W.HTML()
        self.recomputed.add_class("wasi-step-recomputed")
        self.page_map = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.page_map.add_class("wasi-step-pagemap")
        self.page_legend = W.HTML()
        self.feature_maps = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.feature_caption = W.HTML()
        self.slider.observe(self._on_slider, names="value")
        self.widget = W.VBox(
            [
                W.HBox([self.play, self.slider]),
                self.caption,
                self.recomputed,
                self.feature_caption,
                self.feature_maps,
                self.page_legend,
                self.page_map,
            ]
        )
        self.show(start)

    def _on_slider(self, change: dict[str, Any]) -> None:
        if change["new"] != self.index:
            self.show(change["new"])

    def view(self, i: int) -> StepView:
        """The cached view of step `i`, built on first use."""
        if i in self.views:
            self.hits += 1
            return self.views[i]
        self.misses += 1
        t0 = time.perf_counter()
        st = self.stepper
        values = st.run_to(i)
        rec = recompute(values)
        guest = st.guest
        pages = guest.pages
        codes = page_kinds(st.plan, values.step, pages, guest.global_value("__heap_base") or 0)
        view = StepView(
            caption=self._caption(values),
            page_map=page_map_png(codes),
            page_legend=page_legend_html(codes),
            feature_maps=feature_maps_png(values.output),
            feature_caption=feature_maps_caption(values.output),
            recomputed=rec,
            build_ms=(time.perf_counter() - t0) * 1000,
        )
        self.views[i] = view
        return view

    @staticmethod
    def _caption(values: StepValues) -> str:
        s = values.step
        rows = (
            [("input", sp) for sp in s.inputs]
            + [("output", s.output)]
            + [("weights", sp) for sp in s.weights]
        )
        table = "".join(
            f"<tr><td>{html.escape(role)}</td><td>{html.escape(sp.name or sp.kind)}</td>"
            f"<td>{list(sp.shape)}</td><td>{html.escape(sp.layout)}</td>"
            f"<td style='text-align:right'>{sp.nbytes:,}</td><td>{sp.ptr:#x}</td>"
            f"<td>{sp.pages.start}–{sp.pages.stop - 1}</td></tr>"
            for role, sp in rows
        )
        extra = f", act {s.act}" + (", + skip input" if s.params.get("residual") else "")
        return (
            f"<b>step {s.index}: {html.escape(s.op)}</b>{html.escape(extra)} — node "
            f"<code>{html.escape(s.node)}</code>; {s.macs:,} multiply-adds; guest ran steps "
            f"0–{s.index} in {values.run_ms:.0f} ms"
            "<table style='font-size:12px'><tr><th>role</th><th>tensor</th><th>shape</th>"
            "<th>layout</th><th>bytes</th><th>offset</th><th>pages</th></tr>"
            f"{table}</table>"
        )

    def show(self, i: int) -> StepView:
        """Show step `i` (what the slider calls)."""
        t0 = time.perf_counter()
        i = int(i)
        view = self.view(i)
        self.index = i  # before moving the slider, so its observer does not show it again
        if self.slider.value != i:
            self.slider.value = i
        self.caption.value = view.caption
        r = view.recomputed
        self.recomputed.value = (
            f"<b>recomputed in NumPy</b>: {html.escape(r.summary())}<br><small>"
            f"{html.escape(r.formula)} = {r.numpy:.7g}</small>"
            if r is not None
            else "<b>recomputed in NumPy</b>: not covered for this op"
        )
        self.feature_caption.value = f"<small>{html.escape(view.feature_caption)}</small>"
        self.feature_maps.value = view.feature_maps
        self.page_legend.value = view.page_legend
        self.page_map.value = view.page_map
        self.last_ms = (time.perf_counter() - t0) * 1000
        return view
