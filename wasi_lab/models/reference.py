"""A NumPy reference for every op the Rust engine supports (NHWC, TensorFlow semantics).

Why a reference at all: when the WebAssembly guest disagrees with ONNX Runtime,
we need a third implementation that is slow-but-obvious to decide who is right.
Each op is a few lines of NumPy written to mirror TensorFlow's documented
behaviour, including the corners that trip people up:

* ``"SAME"`` padding is *asymmetric*: ``pad_total = max((ceil(in/s)-1)*s + k - in, 0)``,
  ``pad_before = pad_total // 2`` and the extra row/column goes to the bottom/right.
* ``AvgPool`` with ``"SAME"`` divides by the number of *valid* cells under the window,
  not by ``kh*kw``.
* ``DepthwiseConv2dNative`` output channel ``c*multiplier + m`` comes from input channel ``c``.

Convolutions loop over the (small) kernel window and do one matmul / multiply per
tap on strided views of the whole image, so there is no Python loop over pixels
and EfficientNet-Lite0 runs in well under a second or two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from wasi_lab.models.graphdef import Graph, Node

__all__ = [
    "SUPPORTED_OPS",
    "GraphRunError",
    "UnsupportedOpError",
    "run_graph",
    "tf_padding",
    "conv2d",
    "depthwise_conv2d",
    "pool2d",
]


class GraphRunError(ValueError):
    """The graph cannot be evaluated (missing feed, bad attr, shape mismatch...)."""


class UnsupportedOpError(GraphRunError):
    """The graph uses an op this reference (and therefore the engine) does not implement."""


# ----------------------------------------------------------------------------- helpers
def tf_padding(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int, int]:
    """Return ``(out_size, pad_before, pad_after)`` for one spatial dimension, TF-style."""
    if padding == "VALID":
        out = (size - kernel) // stride + 1
        if out <= 0:
            raise GraphRunError(f"VALID window {kernel} larger than input {size}")
        return out, 0, 0
    if padding == "SAME":
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return out, total // 2, total - total // 2
    raise GraphRunError(f"unsupported padding {padding!r} (SAME or VALID)")


def _window_taps(
    x: np.ndarray, kh: int, kw: int, sh: int, sw: int, padding: str, pad_value: float = 0.0
) -> tuple[np.ndarray, int, int, Callable]:
    """Pad ``x`` (NHWC) and return a function giving the strided view for tap (i, j)."""
    _, h, w, _ = x.shape
    ho, pt, pb = tf_padding(h, kh, sh, padding)
    wo, pl, pr = tf_padding(w, kw, sw, padding)
    if pt or pb or pl or pr:
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)

    def tap(i: int, j: int) -> np.ndarray:
        return x[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :]

    return x, ho, wo, tap


def conv2d(x: np.ndarray, filt: np.ndarray, strides: Sequence[int], padding: str) -> np.ndarray:
    """TF ``Conv2D``: ``x`` NHWC, ``filt`` HWIO, ``strides`` = [1, sh, sw, 1]."""
    kh, kw, cin, cout = filt.shape
    if x.shape[3] != cin:
        raise GraphRunError(f"Conv2D: input has {x.shape[3]} channels, filter expects {cin}")
    _, ho, wo, tap = _window_taps(x, kh, kw, strides[1], strides[2], padding)
    out = np.zeros((x.shape[0], ho, wo, cout), np.float32)
    for i in range(kh):
        for j in range(kw):
            out += tap(i, j) @ filt[i, j]
    return out


def depthwise_conv2d(
    x: np.ndarray, filt: np.ndarray, strides: Sequence[int], padding: str
) -> np.ndarray:
    """TF ``DepthwiseConv2dNative``: ``filt`` is [kh, kw, C, multiplier]."""
    kh, kw, cin, mult = filt.shape
    if x.shape[3] != cin:
        raise GraphRunError(
            f"DepthwiseConv2dNative: input has {x.shape[3]} channels, filter expects {cin}"
        )
    _, ho, wo, tap = _window_taps(x, kh, kw, strides[1], strides[2], padding)
    out = np.zeros((x.shape[0], ho, wo, cin, mult), np.float32)
    for i in range(kh):
        for j in range(kw):
            out += tap(i, j)[..., None] * filt[i, j]
    return out.reshape(x.shape[0], ho, wo, cin * mult)


def pool2d(
    x: np.ndarray, ksize: Sequence[int], strides: Sequence[int], padding: str, kind: str
) -> np.ndarray:
    """TF ``MaxPool``/``AvgPool``; SAME average divides by the count of real cells."""
    kh, kw, sh, sw = ksize[1], ksize[2], strides[1], strides[2]
    if ksize[0] != 1 or ksize[3] != 1 or strides[0] != 1 or strides[3] != 1:
        raise GraphRunError("pooling over batch or channels is not supported")
    if kind == "max":
        _, ho, wo, tap = _window_taps(x, kh, kw, sh, sw, padding, pad_value=-np.inf)
        out = np.full((x.shape[0], ho, wo, x.shape[3]), -np.inf, np.float32)
        for i in range(kh):
            for j in range(kw):
                np.maximum(out, tap(i, j), out=out)
        return out
    _, ho, wo, tap = _window_taps(x, kh, kw, sh, sw, padding)
    ones = np.ones((1, x.shape[1], x.shape[2], 1), np.float32)
    _, _, _, tap_ones = _window_taps(ones, kh, kw, sh, sw, padding)
    total = np.zeros((x.shape[0], ho, wo, x.shape[3]), np.float32)
    count = np.zeros((1, ho, wo, 1), np.float32)
    for i in range(kh):
        for j in range(kw):
            total += tap(i, j)
            count += tap_ones(i, j)
    return total / count


# ----------------------------------------------------------------------------- ops
def _attr(node: Node, key: str, default: Any = None) -> Any:
    value = node.attrs.get(key, default)
    if value is None:
        raise GraphRunError(f"node {node.name!r} ({node.op}) is missing attr {key!r}")
    return value


def _check_nhwc(node: Node) -> None:
    fmt = node.attrs.get("data_format", "NHWC")
    fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
    if fmt != "NHWC":
        raise GraphRunError(f"node {node.name!r}: data_format {fmt!r} (only NHWC)")
    dil = node.attrs.get("dilations", [1, 1, 1, 1])
    if list(dil) != [1, 1, 1, 1]:
        raise GraphRunError(f"node {node.name!r}: dilations {dil} (only 1)")


def _op_conv(node: Node, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    _check_nhwc(node)
    return (conv2d(x, w, _attr(node, "strides"), _attr(node, "padding")),)


def _op_depthwise(node: Node, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    _check_nhwc(node)
    return (depthwise_conv2d(x, w, _attr(node, "strides"), _attr(node, "padding")),)


def _op_batchnorm(
    node: Node,
    x: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
) -> tuple[np.ndarray, ...]:
    _check_nhwc(node)
    if node.attrs.get("is_training", True):
        # TF's default is_training=True computes batch statistics: not inference.
        raise GraphRunError(
            f"node {node.name!r}: {node.op} with is_training=True "
            "(frozen inference graphs must set is_training=false)"
        )
    eps = float(node.attrs.get("epsilon", 1e-4))
    inv = (scale / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)
    y = (x - mean) * inv + offset
    return (y.astype(np.float32), mean, var)


def _op_pool(kind: str) -> Callable[..., tuple[np.ndarray, ...]]:
    def run(node: Node, x: np.ndarray) -> tuple[np.ndarray, ...]:
        _check_nhwc(node)
        return (
            pool2d(x, _attr(node, "ksize"), _attr(node, "strides"), _attr(node, "padding"), kind),
        )

    return run


def _op_mean(node: Node, x: np.ndarray, axes: np.ndarray) -> tuple[np.ndarray, ...]:
    keep = bool(node.attrs.get("keep_dims", False))
    axes_t = tuple(int(a) % x.ndim for a in np.atleast_1d(axes))
    return (x.mean(axis=axes_t, keepdims=keep, dtype=np.float64).astype(x.dtype),)


def _op_squeeze(node: Node, x: np.ndarray) -> tuple[np.ndarray, ...]:
    dims = list(node.attrs.get("squeeze_dims", []))
    if not dims:
        return (np.squeeze(x),)
    axes = tuple(int(d) % x.ndim for d in dims)
    for a in axes:
        if x.shape[a] != 1:
            raise GraphRunError(f"node {node.name!r}: cannot squeeze dim {a} of shape {x.shape}")
    return (np.squeeze(x, axis=axes),)


def _op_reshape(node: Node, x: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, ...]:
    try:
        return (x.reshape([int(s) for s in np.atleast_1d(shape)]),)
    except ValueError as exc:
        raise GraphRunError(
            f"node {node.name!r}: cannot reshape {x.shape} to {list(shape)}"
        ) from exc


def _op_matmul(node: Node, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    if node.attrs.get("transpose_a", False):
        a = a.T
    if node.attrs.get("transpose_b", False):
        b = b.T
    return ((a @ b).astype(np.float32),)


def _op_softmax(node: Node, x: np.ndarray) -> tuple[np.ndarray, ...]:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return ((e / e.sum(axis=-1, keepdims=True)).astype(np.float32),)


def _op_pad(node: Node, x: np.ndarray, pads: np.ndarray) -> tuple[np.ndarray, ...]:
    pads = np.asarray(pads).reshape(x.ndim, 2)
    return (np.pad(x, [(int(a), int(b)) for a, b in pads]),)


def _op_shape(node: Node, x: np.ndarray) -> tuple[np.ndarray, ...]:
    out_type = node.attrs.get("out_type")
    dtype = np.int64 if getattr(out_type, "value", out_type) == 9 else np.int32
    return (np.array(x.shape, dtype),)


def _op_bias_add(node: Node, x: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    _check_nhwc(node)
    if b.ndim != 1 or b.shape[0] != x.shape[-1]:
        raise GraphRunError(f"node {node.name!r}: bias {b.shape} for input {x.shape}")
    return (x + b,)


def _op_add(node: Node, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    try:
        return (a + b,)
    except ValueError as exc:
        raise GraphRunError(f"node {node.name!r}: cannot add {a.shape} and {b.shape}") from exc


_OPS: dict[str, Callable[..., tuple[np.ndarray, ...]]] = {
    "Identity": lambda node, x: (x,),
    "Conv2D": _op_conv,
    "DepthwiseConv2dNative": _op_depthwise,
    "FusedBatchNorm": _op_batchnorm,
    "FusedBatchNormV3": _op_batchnorm,
    "BiasAdd": _op_bias_add,
    "Add": _op_add,
    "AddV2": _op_add,
    "Relu": lambda node, x: (np.maximum(x, 0),),
    "Relu6": lambda node, x: (np.clip(x, 0, 6),),
    "AvgPool": _op_pool("avg"),
    "MaxPool": _op_pool("max"),
    "Mean": _op_mean,
    "Squeeze": _op_squeeze,
    "Reshape": _op_reshape,
    "Shape": _op_shape,
    "MatMul": _op_matmul,
    "Softmax": _op_softmax,
    "Pad": _op_pad,
}

SUPPORTED_OPS: tuple[str, ...] = ("Placeholder", "Const", *_OPS)


# ----------------------------------------------------------------------------- driver
def _split(ref: str) -> tuple[str, int]:
    """``"name:1"`` → ``("name", 1)``; ``"name"`` → ``("name", 0)``."""
    name, _, index = ref.partition(":")
    return name, int(index) if index else 0


def run_graph(graph: Graph, feeds: Mapping[str, Any], outputs: Sequence[str]) -> list[np.ndarray]:
    """Evaluate ``outputs`` (node names, optionally ``name:index``) given ``feeds``.

    Only the nodes the outputs depend on are evaluated; control inputs (``^x``) are
    ignored, as they carry no data. Float tensors are computed in float32.
    """
    nodes = graph.by_name
    fed = {_split(k)[0]: np.asarray(v) for k, v in feeds.items()}
    values: dict[str, tuple[np.ndarray, ...]] = {}

    def data_inputs(node: Node) -> list[str]:
        return [i for i in node.inputs if not i.startswith("^")]

    # Iterative post-order DFS: deep graphs would overflow Python's recursion limit.
    # A node whose "expanded" entry is still on the stack is an ancestor of whatever
    # is on top; meeting it again unexpanded means the graph has a cycle.
    pending: set[str] = set()
    for out in outputs:
        stack: list[tuple[str, bool]] = [(_split(out)[0], False)]
        while stack:
            name, expanded = stack.pop()
            if name in values:
                continue
            if name not in nodes:
                raise GraphRunError(f"no node named {name!r} in graph")
            node = nodes[name]
            if not expanded and name not in fed:
                if name in pending:
                    raise GraphRunError(f"graph has a cycle through node {name!r}")
                pending.add(name)
                stack.append((name, True))
                stack.extend(
                    (_split(i)[0], False) for i in data_inputs(node) if _split(i)[0] not in values
                )
                continue
            values[name] = _evaluate(node, fed, values, data_inputs(node))
            pending.discard(name)

    result = []
    for out in outputs:
        name, index = _split(out)
        produced = values[name]
        if index >= len(produced):
            raise GraphRunError(f"node {name!r} has no output {index}")
        result.append(produced[index])
    return result


def _evaluate(
    node: Node,
    fed: Mapping[str, np.ndarray],
    values: Mapping[str, tuple[np.ndarray, ...]],
    inputs: list[str],
) -> tuple[np.ndarray, ...]:
    if node.name in fed:
        value = fed[node.name]
        return (value.astype(np.float32) if value.dtype.kind == "f" else value,)
    if node.op == "Placeholder":
        raise GraphRunError(f"placeholder {node.name!r} was not fed")
    if node.op == "Const":
        return (np.asarray(_attr(node, "value")),)
    fn = _OPS.get(node.op)
    if fn is None:
        raise UnsupportedOpError(
            f"op {node.op!r} (node {node.name!r}) is not supported; supported ops: "
            + ", ".join(SUPPORTED_OPS)
        )
    args = []
    for ref in inputs:
        name, index = _split(ref)
        if index >= len(values[name]):
            raise GraphRunError(f"node {node.name!r}: input {ref!r} does not exist")
        args.append(values[name][index])
    try:
        return fn(node, *args)
    except TypeError as exc:
        raise GraphRunError(
            f"node {node.name!r} ({node.op}): wrong number of inputs ({len(args)})"
        ) from exc
