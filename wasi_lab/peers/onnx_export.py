"""A frozen TensorFlow GraphDef as an ONNX model, so tract and ONNX Runtime run the same graph.

`wasi-lab bench --model FILE.pb` times the guest against the native peers, which read ONNX.
tf2onnx would convert the graph, but it pins an old protobuf that TensorFlow 2.21 refuses, and
TensorFlow is no dependency of the benchmark; so the kit converts the graph itself, with its
own GraphDef reader (`wasi_lab.models.graphdef`), NumPy and the `onnx` package only.

What the exporter does, in the guest's own order:

* **Prune** to the output: by default the graph's last node, which is what `get_model` names
  (and so what the guest loads) for a user's `.pb`; the input is the one `Placeholder` that
  output depends on. Control inputs (`^name`) order nothing here and are dropped.
* **Fold** everything that does not depend on the input with NumPy: Keras' `Shape` /
  `StridedSlice` / `Pack` chains that end in a `Reshape`'s shape, batch norm spelled as
  `Rsqrt`/`Mul`/`Sub`/`AddV2` over the statistics, `Identity`/`IdentityN` chains (the frozen
  `ReadVariableOp`s), and `Switch`/`Merge` on a constant predicate (tf_keras' learning phase,
  a `PlaceholderWithDefault` whose default decides), whose untaken branch is dead and never
  looked at (so the dropout's `RandomUniform` there costs nothing).
* **Emit NCHW**: ONNX convolutions and pools are channels-first. Every run-time tensor keeps
  its layout as a permutation of TF's axes (`_Dyn.perm`), so a 4-D tensor stays NCHW from the
  first convolution to the last and only the NHWC input (and a 4-D output) is transposed;
  constants are re-laid out for broadcasting instead, and a layout change that only moves
  size-1 axes is a `Reshape`, not a `Transpose`.
* **Fuse** what tf2onnx's optimiser would: a zero `Pad` into the next convolution's pads,
  batch norm (fused or spelled out, folded to a per-channel `Mul` and `Add`) and `BiasAdd`
  into the convolution's weights and bias, `MatMul` + bias into `Gemm`, a multiplication by one
  away (Keras 3's swish has `beta * x`), `Reshape` chains into one, so ONNX Runtime and tract
  get a graph as lean as a converter would give them, and the benchmark does not handicap them.

A graph with an op the exporter does not know is refused with one `OnnxExportError` naming
every such op on the path to the output (count and an example node), never exported wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wasi_lab.models.graphdef import Graph, GraphDefError, Node, parse_graphdef
from wasi_lab.models.registry import ModelSpec
from wasi_lab.paths import MODELS_DIR

__all__ = [
    "EXPORTER_VERSION",
    "OnnxExportError",
    "ensure_onnx_export",
    "export_graphdef",
    "exported_ops",
    "onnx_for",
]

#: Bump when the exported graph changes, so cached exports are written again.
EXPORTER_VERSION = 2
#: Opset 13 and IR version 8: read by onnxruntime 1.32 and tract 0.23 (as the bundled export).
OPSET = 13
IR_VERSION = 8
#: Where `ensure_onnx_export` keeps the exports of users' graphs (the kit's models/ folder).
CACHE_DIR = MODELS_DIR / "onnx-exports"
NCHW = (0, 3, 1, 2)


class OnnxExportError(ValueError):
    """The graph cannot be exported (unknown op, no input, ...): the message says why."""


class _Refuse(Exception):
    """One node cannot be exported as it is: the reason joins the final error's list."""


class _Special:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: The untaken side of a Switch, and everything computed from it (except a Merge).
DEAD = _Special("DEAD")
#: Downstream of a node that could not be exported (its error is already recorded).
UNKNOWN = _Special("UNKNOWN")


@dataclass(frozen=True)
class _Dyn:
    """A tensor computed at run time: ONNX tensor `name` is TF's tensor of `shape`
    transposed by `perm` (ONNX axis i holds TF axis perm[i])."""

    name: str
    shape: tuple[int, ...]
    perm: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def onnx_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[p] for p in self.perm)


Value = Any  # np.ndarray (a constant) | _Dyn | DEAD | UNKNOWN


@dataclass
class _ONode:
    op: str
    inputs: list[str]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)


def _identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def _split_ref(ref: str) -> tuple[str, int]:
    name, _, idx = ref.rpartition(":")
    if name and idx.isdigit():
        return name, int(idx)
    return ref, 0


class _Emitter:
    """The ONNX graph being written: nodes, initializers, and each tensor's ONNX shape."""

    def __init__(self) -> None:
        self.nodes: list[_ONode] = []
        self.inits: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.used: set[str] = set()
        self._perm_cache: dict[tuple[str, tuple[int, ...], tuple[int, ...]], _Dyn] = {}

    def fresh(self, hint: str) -> str:
        name, i = hint, 0
        while name in self.used:
            i += 1
            name = f"{hint}_{i}"
        self.used.add(name)
        return name

    def const(self, arr: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.inits[name] = np.ascontiguousarray(arr)
        self.shapes[name] = tuple(np.shape(arr))
        return name

    def emit(self, op: str, inputs: list[str], hint: str, shape: Sequence[int], **attrs) -> str:
        out = self.fresh(hint)
        self.nodes.append(_ONode(op, list(inputs), out, attrs))
        self.shapes[out] = tuple(int(d) for d in shape)
        return out

    def dyn(self, op: str, inputs: list[str], hint: str, shape, perm, **attrs) -> _Dyn:
        shape = tuple(int(d) for d in shape)
        perm = tuple(perm)
        return _Dyn(self.emit(op, inputs, hint, [shape[p] for p in perm], **attrs), shape, perm)

    def reshape(self, name: str, shape: Sequence[int], hint: str) -> str:
        target = self.const(np.array(shape, np.int64), f"{hint}/shape")
        return self.emit("Reshape", [name, target], hint, shape)

    def to_perm(self, v: _Dyn, perm: tuple[int, ...]) -> _Dyn:
        """`v` laid out as `perm`: a Reshape when only size-1 axes move, else a Transpose."""
        perm = tuple(perm)
        if v.perm == perm:
            return v
        key = (v.name, v.perm, perm)  # a Transpose relabels a tensor: the name is not enough
        if key not in self._perm_cache:
            out_shape = [v.shape[p] for p in perm]
            same_order = [p for p in v.perm if v.shape[p] != 1] == [
                p for p in perm if v.shape[p] != 1
            ]
            if same_order:
                name = self.reshape(v.name, out_shape, f"{v.name}/layout")
            else:
                onnx_perm = [v.perm.index(p) for p in perm]
                name = self.emit(
                    "Transpose", [v.name], f"{v.name}/layout", out_shape, perm=onnx_perm
                )
            self._perm_cache[key] = _Dyn(name, v.shape, perm)
        return self._perm_cache[key]

    def to_rank(self, v: _Dyn, rank: int) -> _Dyn:
        """`v` with leading size-1 axes up to `rank` (TF's broadcasting), in TF's order."""
        if v.rank == rank:
            return v
        v = self.to_perm(v, _identity(v.rank))
        shape = (1,) * (rank - v.rank) + v.shape
        return _Dyn(self.reshape(v.name, shape, f"{v.name}/rank{rank}"), shape, _identity(rank))

    def operand(self, v: Value, rank: int, perm: tuple[int, ...], hint: str) -> str:
        """`v` (constant or run-time) as an ONNX input broadcasting like TF in layout `perm`."""
        if isinstance(v, np.ndarray):
            arr = v.astype(np.float32) if v.dtype != np.float32 else v
            if arr.ndim == 0:
                return self.const(arr, hint)
            arr = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
            return self.const(np.transpose(arr, perm), hint)
        return self.to_perm(self.to_rank(v, rank), perm).name


# =========================================================================== helpers


def _const(v: Value, what: str) -> np.ndarray:
    if not isinstance(v, np.ndarray):
        raise _Refuse(f"{what} is not constant")
    return v


def _ints(v: Value, what: str) -> list[int]:
    return [int(i) for i in np.ravel(_const(v, what))]


def _dyn(v: Value) -> _Dyn:
    """`v` as a run-time tensor; a constant where the op needs one is refused, not folded."""
    if not isinstance(v, _Dyn):
        raise _Refuse("a constant input where a run-time tensor is expected (not folded)")
    return v


def _nhwc(node: Node) -> None:
    fmt = node.attrs.get("data_format", "NHWC")
    if fmt not in ("NHWC", b"NHWC"):
        raise _Refuse(f"data_format {fmt} (NHWC only)")


def _spatial(node: Node, key: str, default: int = 1) -> tuple[int, int]:
    vals = node.attrs.get(key) or [default] * 4
    if len(vals) != 4 or vals[0] != 1 or vals[3] != 1:
        raise _Refuse(f"{key} {vals} (expected [1, h, w, 1])")
    return int(vals[1]), int(vals[2])


def _pads(
    node: Node, size: tuple[int, int], kernel: tuple[int, int], strides, dilations
) -> tuple[list[int], tuple[int, int]]:
    """ONNX pads [top, left, bottom, right] and the output size, by TF's padding rule."""
    padding = node.attrs.get("padding", "VALID")
    padding = padding.decode() if isinstance(padding, bytes) else padding
    begin, end, out = [], [], []
    for axis in range(2):
        n, k, s, d = size[axis], kernel[axis], strides[axis], dilations[axis]
        eff = (k - 1) * d + 1
        if padding == "SAME":
            o = -(-n // s)
            total = max((o - 1) * s + eff - n, 0)
            b, e = total // 2, total - total // 2
        elif padding == "VALID":
            o = -(-(n - eff + 1) // s)
            b = e = 0
        elif padding == "EXPLICIT":
            explicit = node.attrs.get("explicit_paddings") or []
            if len(explicit) != 8:
                raise _Refuse(f"explicit_paddings {explicit}")
            b, e = int(explicit[2 + 2 * axis]), int(explicit[3 + 2 * axis])
            o = (n + b + e - eff) // s + 1
        else:
            raise _Refuse(f"padding {padding} (SAME, VALID or EXPLICIT)")
        if o <= 0:
            raise _Refuse(f"an empty output ({n} wide input, kernel {eff})")
        begin.append(b)
        end.append(e)
        out.append(o)
    return begin + end, (out[0], out[1])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(x.dtype)


# =========================================================================== lowering

Lower = Callable[["_Lowering", Node, list[Value]], list[Value]]
_LOWER: dict[str, Lower] = {}


def _op(*names: str) -> Callable[[Lower], Lower]:
    def register(fn: Lower) -> Lower:
        for n in names:
            _LOWER[n] = fn
        return fn

    return register


def exported_ops() -> list[str]:
    """The TF ops the exporter knows, sorted (what its refusal lists as supported)."""
    return sorted(_LOWER)


@_op("Identity", "Snapshot", "StopGradient", "PlaceholderWithDefault")
def _pass(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    if not ins:
        raise _Refuse("no input")
    return [ins[0]]


@_op("IdentityN")
def _pass_n(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    return list(ins)


@_op("NoOp")
def _noop(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    return []


@_op("Const")
def _const_op(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    value = node.attrs.get("value")
    if not isinstance(value, np.ndarray):
        raise _Refuse("no value")
    return [np.asarray(value)]


@_op("Switch")
def _switch(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    data, pred = ins
    if not isinstance(pred, np.ndarray):
        raise _Refuse("the predicate is not constant")
    return [DEAD, data] if bool(pred) else [data, DEAD]


@_op("Shape")
def _shape(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    x = ins[0]
    shape = x.shape if isinstance(x, (np.ndarray, _Dyn)) else ()
    dt = np.int64 if int(node.attrs.get("out_type", 3)) == 9 else np.int32
    return [np.array(shape, dt)]


_UNARY_NP: dict[str, Callable[[np.ndarray, Node], np.ndarray]] = {
    "Relu": lambda x, n: np.maximum(x, 0).astype(x.dtype),
    "Relu6": lambda x, n: np.clip(x, 0, 6).astype(x.dtype),
    "Sigmoid": lambda x, n: _sigmoid(x),
    "Tanh": lambda x, n: np.tanh(x),
    "LeakyRelu": lambda x, n: np.where(x > 0, x, x * np.float32(n.attrs.get("alpha", 0.2))),
    "Sqrt": lambda x, n: np.sqrt(x),
    "Rsqrt": lambda x, n: (1.0 / np.sqrt(x)).astype(x.dtype),
}


@_op(*_UNARY_NP)
def _unary(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    x = ins[0]
    if isinstance(x, np.ndarray):
        return [_UNARY_NP[node.op](x, node)]
    e, x = lo.e, _dyn(x)
    shape = x.onnx_shape
    if node.op == "Relu6":
        lo_, hi = e.const(np.float32(0), "relu6/min"), e.const(np.float32(6), "relu6/max")
        return [_Dyn(e.emit("Clip", [x.name, lo_, hi], node.name, shape), x.shape, x.perm)]
    if node.op == "Rsqrt":
        root = e.emit("Sqrt", [x.name], f"{node.name}/sqrt", shape)
        return [_Dyn(e.emit("Reciprocal", [root], node.name, shape), x.shape, x.perm)]
    attrs = {"alpha": float(node.attrs.get("alpha", 0.2))} if node.op == "LeakyRelu" else {}
    onnx_op = {"Relu6": "Clip"}.get(node.op, node.op)
    return [_Dyn(e.emit(onnx_op, [x.name], node.name, shape, **attrs), x.shape, x.perm)]


_BINARY: dict[str, tuple[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]] = {
    "Add": ("Add", np.add),
    "AddV2": ("Add", np.add),
    "BiasAdd": ("Add", np.add),
    "Sub": ("Sub", np.subtract),
    "Mul": ("Mul", np.multiply),
    "RealDiv": ("Div", np.true_divide),
    "Maximum": ("Max", np.maximum),
    "Minimum": ("Min", np.minimum),
}


@_op(*_BINARY)
def _binary(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    a, b = ins
    onnx_op, fn = _BINARY[node.op]
    if node.op == "BiasAdd":
        _nhwc(node)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        out = fn(a, b)
        return [out.astype(np.result_type(a.dtype, b.dtype))]
    try:
        shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    except ValueError as exc:
        raise _Refuse(f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast") from exc
    rank = len(shape)
    perm = next(
        (
            v.perm
            for v in (a, b)
            if isinstance(v, _Dyn) and v.rank == rank and v.perm != tuple(range(rank))
        ),
        _identity(rank),
    )
    e = lo.e
    ia = e.operand(a, rank, perm, f"{node.name}/a")
    ib = e.operand(b, rank, perm, f"{node.name}/b")
    return [e.dyn(onnx_op, [ia, ib], node.name, shape, perm)]


def _conv_like(lo: _Lowering, node: Node, ins: list[Value], depthwise: bool) -> list[Value]:
    _nhwc(node)
    x, w = _dyn(ins[0]), _const(ins[1], "the filter")
    if x.rank != 4 or w.ndim != 4:
        raise _Refuse(f"input of rank {x.rank}, filter of rank {w.ndim} (4 each)")
    kh, kw, cin, m = (int(d) for d in w.shape)
    c = x.shape[3]
    if depthwise:
        if cin != c:
            raise _Refuse(f"filter for {cin} channels, input has {c}")
        weight = w.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None]  # [C*M, 1, KH, KW]
        group, cout = c, c * m
    else:
        if cin == 0 or c % cin:
            raise _Refuse(f"filter for {cin} input channels, input has {c}")
        weight = w.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        group, cout = c // cin, m
    strides = _spatial(node, "strides")
    dilations = _spatial(node, "dilations")
    pads, (oh, ow) = _pads(node, (x.shape[1], x.shape[2]), (kh, kw), strides, dilations)
    e = lo.e
    xin = e.to_perm(x, NCHW)
    wname = e.const(weight.astype(np.float32), f"{node.name}/weight")
    return [
        e.dyn(
            "Conv",
            [xin.name, wname],
            node.name,
            (x.shape[0], oh, ow, cout),
            NCHW,
            kernel_shape=[kh, kw],
            strides=list(strides),
            dilations=list(dilations),
            pads=pads,
            group=group,
        )
    ]


@_op("Conv2D")
def _conv2d(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    return _conv_like(lo, node, ins, depthwise=False)


@_op("DepthwiseConv2dNative")
def _depthwise(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    return _conv_like(lo, node, ins, depthwise=True)


@_op("MaxPool", "AvgPool")
def _pool(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    _nhwc(node)
    x = _dyn(ins[0])
    if x.rank != 4:
        raise _Refuse(f"input of rank {x.rank}")
    kernel = _spatial(node, "ksize")
    strides = _spatial(node, "strides")
    pads, (oh, ow) = _pads(node, (x.shape[1], x.shape[2]), kernel, strides, (1, 1))
    e = lo.e
    xin = e.to_perm(x, NCHW)
    extra = {"count_include_pad": 0} if node.op == "AvgPool" else {}
    onnx_op = "MaxPool" if node.op == "MaxPool" else "AveragePool"
    return [
        e.dyn(
            onnx_op,
            [xin.name],
            node.name,
            (x.shape[0], oh, ow, x.shape[3]),
            NCHW,
            kernel_shape=list(kernel),
            strides=list(strides),
            pads=pads,
            **extra,
        )
    ]


@_op("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
def _fused_bn(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    _nhwc(node)
    if node.attrs.get("is_training", False):
        raise _Refuse("is_training is true (freeze the graph for inference)")
    x = ins[0]
    scale, offset, mean, var = (_const(v, "a batch-norm statistic") for v in ins[1:5])
    eps = np.float32(node.attrs.get("epsilon", 1e-4))
    rest = [mean, var, mean, var, np.zeros(0, np.float32)]
    if isinstance(x, np.ndarray):
        return [((x - mean) / np.sqrt(var + eps) * scale + offset).astype(np.float32), *rest]
    x = _dyn(x)
    if x.rank != 4:
        raise _Refuse(f"input of rank {x.rank}")
    e = lo.e
    xin = e.to_perm(x, NCHW)
    params = [
        e.const(p.astype(np.float32), f"{node.name}/{k}")
        for k, p in (("scale", scale), ("offset", offset), ("mean", mean), ("var", var))
    ]
    y = e.dyn(
        "BatchNormalization", [xin.name, *params], node.name, x.shape, NCHW, epsilon=float(eps)
    )
    return [y, *rest]


@_op("MatMul")
def _matmul(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    a, b = ins
    ta, tb = bool(node.attrs.get("transpose_a")), bool(node.attrs.get("transpose_b"))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return [(a.T if ta else a) @ (b.T if tb else b)]
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise _Refuse("operands of rank other than 2")
    e = lo.e
    names = []
    shapes = []
    for v, t, which in ((a, ta, "a"), (b, tb, "b")):
        if isinstance(v, np.ndarray):
            arr = (v.T if t else v).astype(np.float32)
            names.append(e.const(arr, f"{node.name}/{which}"))
            shapes.append(arr.shape)
        else:
            v = e.to_perm(_dyn(v), (1, 0) if t else (0, 1))
            names.append(v.name)
            shapes.append(v.onnx_shape)
    if shapes[0][1] != shapes[1][0]:
        raise _Refuse(f"shapes {list(shapes[0])} and {list(shapes[1])} do not multiply")
    return [e.dyn("MatMul", names, node.name, (shapes[0][0], shapes[1][1]), (0, 1))]


def _reduced_perm(perm: tuple[int, ...], removed: set[int]) -> tuple[int, ...]:
    """The layout of a tensor after TF axes `removed` are dropped, ONNX order kept."""
    kept = sorted(set(perm) - removed)
    return tuple(kept.index(p) for p in perm if p not in removed)


@_op("Mean")
def _mean(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    x, axes_v = ins
    axes = [a % len(x.shape) for a in _ints(axes_v, "the axes")] if len(x.shape) else []
    keep = bool(node.attrs.get("keep_dims", False))
    if isinstance(x, np.ndarray):
        return [np.mean(x, axis=tuple(axes), keepdims=keep).astype(x.dtype)]
    x, e = _dyn(x), lo.e
    kept_shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    out_shape = kept_shape if keep else tuple(d for i, d in enumerate(x.shape) if i not in axes)
    if x.rank == 4 and set(axes) == {1, 2}:
        # The global average pool of every classifier head: one op ORT and tract know well.
        xin = e.to_perm(x, NCHW)
        pooled = e.dyn("GlobalAveragePool", [xin.name], node.name, kept_shape, NCHW)
        if keep:
            return [pooled]
        return [_Dyn(e.reshape(pooled.name, out_shape, f"{node.name}/squeeze"), out_shape, (0, 1))]
    onnx_axes = sorted(x.perm.index(a) for a in axes)
    perm = x.perm if keep else _reduced_perm(x.perm, set(axes))
    return [
        e.dyn(
            "ReduceMean", [x.name], node.name, out_shape, perm, axes=onnx_axes, keepdims=int(keep)
        )
    ]


@_op("Softmax")
def _softmax(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    x = ins[0]
    if isinstance(x, np.ndarray):
        z = np.exp(x - x.max(axis=-1, keepdims=True))
        return [(z / z.sum(axis=-1, keepdims=True)).astype(x.dtype)]
    x = _dyn(x)
    axis = x.perm.index(x.rank - 1)
    return [lo.e.dyn("Softmax", [x.name], node.name, x.shape, x.perm, axis=axis)]


def _resolve_shape(target: list[int], size: int) -> tuple[int, ...]:
    if target.count(-1) > 1:
        raise _Refuse(f"shape {target} has more than one -1")
    known = int(np.prod([d for d in target if d != -1])) if target else 1
    if -1 in target:
        if known == 0 or size % known:
            raise _Refuse(f"cannot reshape {size} values into {target}")
        target = [size // known if d == -1 else d for d in target]
    if int(np.prod(target)) != size:
        raise _Refuse(f"cannot reshape {size} values into {target}")
    return tuple(target)


def _reshaped(lo: _Lowering, node: Node, x: _Dyn, shape: tuple[int, ...]) -> _Dyn:
    """`x` reshaped to TF shape `shape` (the data in TF's order), as a run-time tensor."""
    e = lo.e
    x = e.to_perm(x, _identity(x.rank))
    return _Dyn(e.reshape(x.name, shape, node.name), shape, _identity(len(shape)))


@_op("Reshape")
def _reshape(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    x, target_v = ins
    size = int(np.prod(x.shape))
    shape = _resolve_shape(_ints(target_v, "the shape"), size)
    if isinstance(x, np.ndarray):
        return [x.reshape(shape)]
    return [_reshaped(lo, node, _dyn(x), shape)]


@_op("Squeeze")
def _squeeze(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    x = ins[0]
    rank = len(x.shape)
    dims = [int(d) % rank for d in (node.attrs.get("squeeze_dims") or [])]
    axes = set(dims) if dims else {i for i, d in enumerate(x.shape) if d == 1}
    if any(x.shape[a] != 1 for a in axes):
        raise _Refuse(f"squeezing axes {sorted(axes)} of shape {list(x.shape)}")
    if isinstance(x, np.ndarray):
        return [np.squeeze(x, axis=tuple(sorted(axes)))]
    x, e = _dyn(x), lo.e
    out_shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    perm = _reduced_perm(x.perm, axes)
    name = e.reshape(x.name, [out_shape[p] for p in perm], node.name)
    return [_Dyn(name, out_shape, perm)]


@_op("ExpandDims")
def _expand_dims(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    x, axis_v = ins
    rank = len(x.shape)
    (axis,) = _ints(axis_v, "the axis")
    axis = axis + rank + 1 if axis < 0 else axis
    if not 0 <= axis <= rank:
        raise _Refuse(f"axis {axis} for rank {rank}")
    if isinstance(x, np.ndarray):
        return [np.expand_dims(x, axis)]
    x, e = _dyn(x), lo.e
    out_shape = x.shape[:axis] + (1,) + x.shape[axis:]
    renum = [p + 1 if p >= axis else p for p in x.perm]
    at = renum.index(axis - 1) + 1 if axis > 0 else 0
    perm = tuple(renum[:at] + [axis] + renum[at:])
    name = e.reshape(x.name, [out_shape[p] for p in perm], node.name)
    return [_Dyn(name, out_shape, perm)]


@_op("ConcatV2")
def _concat(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    *values, axis_v = ins
    rank = len(values[0].shape)
    (axis,) = _ints(axis_v, "the axis")
    axis %= rank
    if all(isinstance(v, np.ndarray) for v in values):
        return [np.concatenate(values, axis=axis)]
    if any(len(v.shape) != rank for v in values):
        raise _Refuse("inputs of different ranks")
    perm = next(v.perm for v in values if isinstance(v, _Dyn))
    e = lo.e
    names = [e.operand(v, rank, perm, f"{node.name}/in{i}") for i, v in enumerate(values)]
    shape = list(values[0].shape)
    shape[axis] = sum(int(v.shape[axis]) for v in values)
    return [e.dyn("Concat", names, node.name, shape, perm, axis=perm.index(axis))]


@_op("Pack")
def _pack(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    if not ins or any(tuple(v.shape) != tuple(ins[0].shape) for v in ins):
        raise _Refuse("inputs of different shapes")
    rank = len(ins[0].shape)
    axis = int(node.attrs.get("axis", 0))
    axis = axis + rank + 1 if axis < 0 else axis
    if not 0 <= axis <= rank:
        raise _Refuse(f"axis {axis} for rank {rank}")
    if all(isinstance(v, np.ndarray) for v in ins):
        return [np.stack(ins, axis=axis)]
    # Run-time inputs: each gets the new axis (in TF's order), then one Concat along it.
    e = lo.e
    shape = tuple(ins[0].shape)
    one = shape[:axis] + (1,) + shape[axis:]
    names = []
    for i, v in enumerate(ins):
        if isinstance(v, np.ndarray):
            names.append(e.const(v.reshape(one).astype(np.float32), f"{node.name}/in{i}"))
        else:
            names.append(_reshaped(lo, node, _dyn(v), one).name)
    out = shape[:axis] + (len(ins),) + shape[axis:]
    return [e.dyn("Concat", names, node.name, out, _identity(rank + 1), axis=axis)]


@_op("Transpose")
def _transpose(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    x, perm_v = ins
    q = _ints(perm_v, "the permutation")
    if sorted(q) != list(range(len(x.shape))):
        raise _Refuse(f"permutation {q} for rank {len(x.shape)}")
    if isinstance(x, np.ndarray):
        return [np.transpose(x, q)]
    x = _dyn(x)
    # No ONNX node: only the bookkeeping of which TF axis each ONNX axis holds changes.
    qinv = [q.index(i) for i in range(len(q))]
    return [_Dyn(x.name, tuple(x.shape[i] for i in q), tuple(qinv[p] for p in x.perm))]


@_op("Pad")
def _pad(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    x, pads_v = ins
    pads = _const(pads_v, "the paddings").astype(np.int64)
    rank = len(x.shape)
    if pads.shape != (rank, 2) or (pads < 0).any():
        raise _Refuse(f"paddings {pads.tolist()} for rank {rank}")
    if isinstance(x, np.ndarray):
        return [np.pad(x, pads)]
    x, e = _dyn(x), lo.e
    onnx_pads = [int(pads[p, 0]) for p in x.perm] + [int(pads[p, 1]) for p in x.perm]
    shape = tuple(d + int(pads[i].sum()) for i, d in enumerate(x.shape))
    pname = e.const(np.array(onnx_pads, np.int64), f"{node.name}/pads")
    return [e.dyn("Pad", [x.name, pname], node.name, shape, x.perm, mode="constant")]


def _strided_index(node: Node, rank: int, begin, end, strides) -> tuple:
    """TF's StridedSlice spec as a NumPy index (NumPy's slicing rules are TF's)."""
    masks = {
        k: int(node.attrs.get(f"{k}_mask", 0))
        for k in ("begin", "end", "ellipsis", "new_axis", "shrink_axis")
    }
    index: list[Any] = []
    for i, (b, en, s) in enumerate(zip(begin, end, strides, strict=True)):
        bit = 1 << i
        if masks["ellipsis"] & bit:
            index.append(Ellipsis)
        elif masks["new_axis"] & bit:
            index.append(None)
        elif masks["shrink_axis"] & bit:
            index.append(int(b))
        else:
            if s == 0:
                raise _Refuse("stride 0")
            index.append(
                slice(None if masks["begin"] & bit else b, None if masks["end"] & bit else en, s)
            )
    return tuple(index)


@_op("StridedSlice")
def _strided_slice(lo: _Lowering, node: Node, ins: list[Value]) -> list[Value]:
    x = ins[0]
    begin, end, strides = (_ints(v, "the slice bounds") for v in ins[1:4])
    if not len(begin) == len(end) == len(strides):
        raise _Refuse("begin, end and strides of different lengths")
    index = _strided_index(node, len(x.shape), begin, end, strides)
    probe = np.broadcast_to(np.zeros((), np.int8), tuple(x.shape))
    try:
        out_shape = probe[index].shape
    except IndexError as exc:
        raise _Refuse(f"index out of range: {exc}") from exc
    if isinstance(x, np.ndarray):
        return [x[index]]
    x, e = _dyn(x), lo.e
    # Expand to one entry per input axis: ints (shrink) and slices; new axes come last.
    n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
    full: list[Any] = []
    for i in index:
        if i is Ellipsis:
            full += [slice(None)] * (x.rank - n_real)
        elif i is not None:
            full.append(i)
    full += [slice(None)] * (x.rank - len(full))
    starts, ends, axes, steps = [], [], [], []
    tf_shape = list(x.shape)
    for axis, i in enumerate(full):
        dim = x.shape[axis]
        if isinstance(i, int):
            j = i + dim if i < 0 else i
            start, stop, step = j, j + 1, 1
        else:
            start, stop, step = i.indices(dim)
            if (start, stop, step) == (0, dim, 1):
                continue
        tf_shape[axis] = len(range(start, stop, step))
        starts.append(start)
        ends.append(-(1 << 62) if stop < 0 else stop)  # -1: "before index 0", step < 0
        axes.append(x.perm.index(axis))
        steps.append(step)
    cur = x
    if axes:
        names = [
            e.const(np.array(v, np.int64), f"{node.name}/{k}")
            for k, v in (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps))
        ]
        onnx_shape = [tf_shape[p] for p in x.perm]
        cur = _Dyn(
            e.emit("Slice", [x.name, *names], node.name, onnx_shape), tuple(tf_shape), x.perm
        )
    if tuple(cur.shape) != tuple(out_shape):  # shrunk or new axes
        cur = _reshaped(lo, node, cur, tuple(out_shape))
    return [cur]


# =========================================================================== the walk


class _Lowering:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.by_name = graph.by_name
        self.e = _Emitter()
        self.values: dict[str, Any] = {}
        self.refused: dict[str, list[str]] = {}  # "op (reason)" -> node names

    def order(self, output: str) -> list[Node]:
        """The nodes `output` depends on, inputs first (iterative: graphs are deep)."""
        if output not in self.by_name:
            raise OnnxExportError(f"no node named {output!r} in the graph")
        done: set[str] = set()
        active: set[str] = set()
        out: list[Node] = []
        stack: list[tuple[str, int]] = [(output, 0)]
        active.add(output)
        while stack:
            name, i = stack[-1]
            node = self.by_name[name]
            data = [r for r in node.inputs if not r.startswith("^")]
            if i < len(data):
                stack[-1] = (name, i + 1)
                dep = _split_ref(data[i])[0]
                if dep not in self.by_name:
                    raise OnnxExportError(
                        f"node {name!r} ({node.op}): input {data[i]!r} is not a node of the graph"
                    )
                if dep in active:
                    raise OnnxExportError(f"the graph has a cycle through {dep!r}")
                if dep not in done:
                    active.add(dep)
                    stack.append((dep, 0))
            else:
                stack.pop()
                active.discard(name)
                done.add(name)
                out.append(node)
        return out

    def get(self, ref: str) -> Value:
        name, idx = _split_ref(ref)
        vals = self.values[name]
        if vals is DEAD or vals is UNKNOWN:
            return vals
        if idx >= len(vals):
            raise OnnxExportError(f"{ref!r}: node {name!r} has {len(vals)} outputs")
        return vals[idx]

    def input(self, name: str, shape: tuple[int, ...]) -> _Dyn:
        """The graph's input: NHWC as the guest takes it; a 4-D one goes NCHW at once (one
        Transpose), with its NHWC form remembered so a reader that wants it costs nothing."""
        e = self.e
        e.used.add(name)
        e.shapes[name] = shape
        nhwc = _Dyn(name, shape, _identity(len(shape)))
        if len(shape) != 4:
            return nhwc
        nchw = e.to_perm(nhwc, NCHW)
        e._perm_cache[(nchw.name, NCHW, _identity(4))] = nhwc
        return nchw

    def refuse(self, what: str, node: Node) -> None:
        self.refused.setdefault(what, []).append(node.name)

    def run(self, nodes: list[Node], input_name: str, input_shape: tuple[int, ...]) -> None:
        for node in nodes:
            ins = [self.get(r) for r in node.inputs if not r.startswith("^")]
            if node.name == input_name:
                self.values[node.name] = [self.input(node.name, input_shape)]
                continue
            if node.op == "Merge":
                live = [v for v in ins if v is not DEAD]
                self.values[node.name] = [live[0], np.int32(ins.index(live[0]))] if live else DEAD
                continue
            if any(v is DEAD for v in ins):
                self.values[node.name] = DEAD
                continue
            fn = _LOWER.get(node.op)
            if fn is None:
                self.refuse(node.op, node)
                self.values[node.name] = UNKNOWN
                continue
            if any(v is UNKNOWN for v in ins):
                self.values[node.name] = UNKNOWN
                continue
            try:
                # NumPy answers a scalar (np.int32) where TF has a 0-d tensor: keep arrays.
                outs = fn(self, node, ins)
                self.values[node.name] = [
                    np.asarray(v) if isinstance(v, np.generic) else v for v in outs
                ]
            except _Refuse as exc:
                self.refuse(f"{node.op} ({exc})", node)
                self.values[node.name] = UNKNOWN


def _pick_input(nodes: list[Node], input_shape: Sequence[int] | None) -> tuple[str, tuple]:
    placeholders = [n for n in nodes if n.op == "Placeholder"]
    if len(placeholders) != 1:
        names = ", ".join(repr(n.name) for n in placeholders) or "none"
        raise OnnxExportError(
            f"the output depends on {len(placeholders)} Placeholders ({names}); "
            "the exporter takes graphs with exactly one input"
        )
    ph = placeholders[0]
    dtype = ph.attrs.get("dtype")
    if int(dtype or 1) != 1:
        raise OnnxExportError(f"input {ph.name!r} has dtype {dtype}, not float")
    if input_shape is not None:
        return ph.name, tuple(int(d) for d in input_shape)
    shape_attr = ph.attrs.get("shape")
    dims = getattr(shape_attr, "dims", None)
    if dims is None:
        raise OnnxExportError(f"input {ph.name!r} has an unknown rank: pass input_shape")
    dims = tuple(1 if (i == 0 and d < 0) else d for i, d in enumerate(dims))
    if any(d < 0 for d in dims):
        raise OnnxExportError(
            f"input {ph.name!r} has the unknown dimensions of {list(dims)}: pass input_shape"
        )
    return ph.name, dims


# =========================================================================== fusions


def _per_channel(c: np.ndarray, channels: int) -> np.ndarray | None:
    """`c` as a [channels] vector when it broadcasts over NCHW's channel axis only."""
    if c.ndim == 0 or c.size == 1:
        return np.full(channels, float(c.reshape(-1)[0]), np.float32)
    shape = c.shape
    if len(shape) > 4 or c.size != channels:
        return None
    padded = (1,) * (4 - len(shape)) + shape
    if padded[1] == channels and padded[0] == padded[2] == padded[3] == 1:
        return c.reshape(channels).astype(np.float32)
    return None


class _Optimiser:
    def __init__(self, e: _Emitter, graph_output: str) -> None:
        self.e = e
        self.out = graph_output

    def consumers(self) -> dict[str, list[_ONode]]:
        uses: dict[str, list[_ONode]] = {}
        for n in self.e.nodes:
            for i in n.inputs:
                uses.setdefault(i, []).append(n)
        return uses

    def producer(self) -> dict[str, _ONode]:
        return {n.output: n for n in self.e.nodes}

    def rename(self, old: str, new: str) -> None:
        for n in self.e.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]

    def prune(self) -> None:
        prod = self.producer()
        live: set[str] = set()
        stack = [self.out]
        while stack:
            t = stack.pop()
            if t in live:
                continue
            live.add(t)
            if t in prod:
                stack.extend(prod[t].inputs)
        self.e.nodes = [n for n in self.e.nodes if n.output in live]
        self.e.inits = {k: v for k, v in self.e.inits.items() if k in live}

    def init(self, name: str) -> np.ndarray | None:
        return self.e.inits.get(name)

    def run(self) -> None:
        self.prune()
        for _ in range(8):
            changed = self.fuse_once()
            self.prune()
            if not changed:
                break

    def fuse_once(self) -> bool:
        """One sweep of the peepholes; True when any fired (the graph changed)."""
        changed = False
        uses, prod = self.consumers(), self.producer()
        e = self.e
        for n in list(e.nodes):
            if prod.get(n.output) is not n:  # fused into another node this sweep
                continue
            readers = uses.get(n.output, [])
            nxt = readers[0] if len(readers) == 1 and n.output != self.out else None
            hit = False
            if n.op == "Conv" and nxt is not None:
                hit = self.fold_into_conv(n, nxt)
            elif n.op == "Pad" and nxt is not None and nxt.op == "Conv":
                hit = self.pad_into_conv(n, nxt)
            elif n.op == "MatMul" and nxt is not None:
                hit = self.gemm(n, nxt)
            elif n.op == "Reshape" and n.inputs[0] in prod and prod[n.inputs[0]].op == "Reshape":
                n.inputs[0] = prod[n.inputs[0]].inputs[0]  # a chain of reshapes is the last
                hit = True
            if not hit and n.op in ("Reshape", "Mul", "Div", "Add", "Sub") and n.output != self.out:
                if self.is_noop(n):
                    self.rename(n.output, n.inputs[0])
                    hit = True
            if hit:
                changed = True
                uses, prod = self.consumers(), self.producer()
        return changed

    def is_noop(self, n: _ONode) -> bool:
        e = self.e
        if n.op == "Reshape":
            return e.shapes.get(n.inputs[0]) == e.shapes[n.output]
        a, b = n.inputs
        unit = 1.0 if n.op in ("Mul", "Div") else 0.0
        for data, c in ((a, b), (b, a)) if n.op in ("Mul", "Add") else ((a, b),):
            arr = e.inits.get(c)
            if (
                arr is not None
                and data not in e.inits
                and np.all(arr == unit)
                and e.shapes.get(data) == e.shapes[n.output]
            ):
                if data != n.inputs[0]:
                    n.inputs = [data, c]
                return True
        return False

    def fold_into_conv(self, conv: _ONode, nxt: _ONode) -> bool:
        """Conv then a per-channel Mul/Div/Add/Sub or BatchNormalization: one Conv."""
        e = self.e
        w = e.inits[conv.inputs[1]]
        cout = w.shape[0]
        b = e.inits[conv.inputs[2]] if len(conv.inputs) > 2 else np.zeros(cout, np.float32)
        other = [i for i in nxt.inputs if i != conv.output]
        if nxt.op == "BatchNormalization" and nxt.inputs[0] == conv.output:
            scale, offset, mean, var = (e.inits.get(i) for i in nxt.inputs[1:5])
            if any(p is None for p in (scale, offset, mean, var)):
                return False
            s = scale / np.sqrt(var + np.float32(nxt.attrs["epsilon"]))
            w2, b2 = w * s[:, None, None, None], (b - mean) * s + offset
        elif nxt.op in ("Mul", "Div", "Add", "Sub") and len(other) == 1 and other[0] in e.inits:
            if nxt.op == "Div" and nxt.inputs[0] != conv.output:
                return False
            c = _per_channel(e.inits[other[0]], cout)
            if c is None:
                return False
            if nxt.op == "Mul":
                w2, b2 = w * c[:, None, None, None], b * c
            elif nxt.op == "Div":
                w2, b2 = w / c[:, None, None, None], b / c
            elif nxt.op == "Add":
                w2, b2 = w, b + c
            elif nxt.inputs[0] == conv.output:
                w2, b2 = w, b - c
            else:
                # c - conv(x) is conv(x) with -W and c - b. Folded here also because tract
                # 0.23.9 computes Sub(C, Conv(x)) as Conv(x) + C (its own bias fusion).
                w2, b2 = -w, c - b
        else:
            return False
        wname = e.const(w2.astype(np.float32), conv.inputs[1])
        bname = e.const(b2.astype(np.float32), f"{conv.output}/bias")
        conv.inputs = [conv.inputs[0], wname, bname]
        # The Conv takes over the consumer's output name: its readers need no change.
        e.nodes.remove(nxt)
        old = conv.output
        conv.output = nxt.output
        e.shapes[conv.output] = e.shapes[old]
        return True

    def pad_into_conv(self, pad: _ONode, conv: _ONode) -> bool:
        pads = self.e.inits.get(pad.inputs[1])
        if pads is None or len(pads) != 8 or len(pad.inputs) > 2 or conv.inputs[0] != pad.output:
            return False
        if pads[0] or pads[1] or pads[4] or pads[5]:  # batch or channel padding
            return False
        cp = conv.attrs["pads"]
        conv.attrs["pads"] = [
            cp[0] + int(pads[2]),
            cp[1] + int(pads[3]),
            cp[2] + int(pads[6]),
            cp[3] + int(pads[7]),
        ]
        conv.inputs[0] = pad.inputs[0]
        return True

    def gemm(self, mm: _ONode, nxt: _ONode) -> bool:
        e = self.e
        if nxt.op != "Add" or mm.inputs[1] not in e.inits or mm.inputs[0] in e.inits:
            return False
        other = [i for i in nxt.inputs if i != mm.output]
        if len(other) != 1 or other[0] not in e.inits:
            return False
        bias = e.inits[other[0]]
        m = e.inits[mm.inputs[1]].shape[1]
        if bias.size not in (1, m) or bias.ndim > 2:
            return False
        bname = e.const(
            np.broadcast_to(bias.reshape(-1), (m,)).astype(np.float32), f"{mm.output}/bias"
        )
        e.nodes.remove(nxt)
        mm.op, mm.inputs, mm.output = "Gemm", [mm.inputs[0], mm.inputs[1], bname], nxt.output
        return True


# =========================================================================== the model


def export_graphdef(
    pb: bytes | Graph,
    output: str | None = None,
    input_shape: Sequence[int] | None = None,
) -> Any:
    """The ONNX model (``onnx.ModelProto``, checked) computing `output` of the frozen graph.

    `output` defaults to the graph's last node (as `get_model` names it for a user's file);
    the input is the one Placeholder the output depends on, fed NHWC exactly as the guest is
    fed, with the shape its `shape` attribute gives (an unknown batch is 1) or `input_shape`.
    Raises `OnnxExportError` (every op it cannot export, listed) or `GraphDefError`.
    """
    import onnx  # optional: the `bench` extra
    from onnx import helper, numpy_helper

    graph = pb if isinstance(pb, Graph) else parse_graphdef(pb)
    out_name = output or graph.nodes[-1].name
    lo = _Lowering(graph)
    nodes = lo.order(out_name)
    input_name, shape = _pick_input(nodes, input_shape)
    lo.e.used.add(out_name)
    lo.run(nodes, input_name, shape)
    if lo.refused:
        items = [
            f"{what} ({len(names)} node{'s' if len(names) > 1 else ''}, e.g. {names[0]!r})"
            for what, names in sorted(lo.refused.items())
        ]
        raise OnnxExportError(
            f"cannot export to ONNX: unsupported op{'s' if len(items) > 1 else ''} on the path "
            f"to output {out_name!r}: {', '.join(items)}. Exported ops: "
            f"{', '.join(exported_ops() + ['Merge', 'Placeholder'])}"
        )
    result = lo.get(out_name)
    if not isinstance(result, _Dyn):
        raise OnnxExportError(
            f"output {out_name!r} does not depend on the input (it is {result!r}): nothing to run"
        )
    e = lo.e
    final = e.to_perm(result, _identity(result.rank))
    if final.name == input_name:  # the output is the input itself
        e.nodes.append(_ONode("Identity", [final.name], out_name))
        e.shapes[out_name] = final.onnx_shape
        _Optimiser(e, out_name).run()
    else:
        _Optimiser(e, final.name).run()
        for n in e.nodes:
            if n.output == final.name:
                n.output = out_name
            n.inputs = [out_name if i == final.name else i for i in n.inputs]
    onnx_graph = helper.make_graph(
        [helper.make_node(n.op, n.inputs, [n.output], name=n.output, **n.attrs) for n in e.nodes],
        "tf_graphdef",
        [helper.make_tensor_value_info(input_name, onnx.TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(out_name, onnx.TensorProto.FLOAT, list(result.shape))],
        [numpy_helper.from_array(arr, name) for name, arr in e.inits.items()],
    )
    model = helper.make_model(
        onnx_graph,
        producer_name="wasi-lab onnx_export",
        producer_version=str(EXPORTER_VERSION),
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def ensure_onnx_export(
    pb_path: Path,
    output: str | None = None,
    input_shape: Sequence[int] | None = None,
    cache: Path | None = None,
) -> Path:
    """The ONNX export of the `.pb` at `pb_path`, written once into `cache` (default
    `CACHE_DIR`), keyed by the file's SHA-256, the output, the input shape and the exporter's
    version: a changed graph or exporter is a new file, never a stale one."""
    from wasi_lab.models.efficientnet import atomic_write

    data = Path(pb_path).read_bytes()
    key = hashlib.sha256(data)
    key.update(f"\0{output or ''}\0{list(input_shape or [])}\0{EXPORTER_VERSION}".encode())
    target = Path(cache or CACHE_DIR) / f"{Path(pb_path).stem}-{key.hexdigest()[:20]}.onnx"
    if not target.exists():
        atomic_write(target, export_graphdef(data, output, input_shape).SerializeToString())
    return target


def onnx_for(
    spec: ModelSpec, input_shape: Sequence[int], cache: Path | None = None
) -> tuple[Path | None, str]:
    """The ONNX graph the native peers run for `spec`, or None and why not (one line).

    The bundled model has its own export (written from the same weights); any other frozen
    graph (a user's `.pb`, the article's MobileNet) is exported here, once."""
    if spec.onnx_path is not None and spec.onnx_path.exists():
        return spec.onnx_path, ""
    if not spec.path.exists():
        return None, f"no ONNX export for {spec.name}: {spec.path} is missing"
    try:
        return ensure_onnx_export(spec.path, spec.output, input_shape, cache), ""
    except ImportError as exc:
        return None, f"no ONNX export for {spec.name}: {exc} (pip install -e '.[bench]')"
    except (OnnxExportError, GraphDefError, OSError) as exc:
        return None, f"no ONNX export for {spec.name}: {exc}"
