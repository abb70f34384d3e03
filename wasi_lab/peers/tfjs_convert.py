"""A frozen GraphDef as a TensorFlow.js graph model, without TensorFlow.

A tfjs graph model is a folder: `model.json` holds the GraphDef in protobuf's JSON mapping
(`modelTopology`) and a `weightsManifest` naming each constant's dtype and shape; the
constants' bytes follow, concatenated, in 4 MiB `.bin` shards. `tensorflowjs_converter`
needs TensorFlow (hundreds of MB); the kit already reads GraphDefs
(`wasi_lab.models.graphdef`), so it writes the JSON itself.

Like `tensorflowjs_converter` (which runs TensorFlow's graph optimiser first), it folds each
inference batch norm into the convolution before it and fuses bias and ReLU6 into the
convolution (`_FusedConv2D`, `FusedDepthwiseConv2dNative`) and the bias into the dense layer
(`_FusedMatMul`): TF.js then runs the graph the way its own converter would give it, not a
slower unfused one, so the benchmark is fair to it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wasi_lab.models.graphdef import (
    DataType,
    Graph,
    GraphDefError,
    Node,
    TensorShape,
    parse_graphdef,
)

#: Bumped when the output changes, so a stale folder is rewritten.
CONVERTER_VERSION = 1
SHARD_BYTES = 4 * 1024 * 1024
_DTYPES = {DataType.DT_FLOAT: "float32", DataType.DT_INT32: "int32"}


class TfjsConvertError(GraphDefError):
    """The graph has something a tfjs graph model (or this converter) cannot hold."""


# ------------------------------------------------------------------------ attr -> JSON
def _shape_json(shape: TensorShape | Sequence[int]) -> dict[str, Any]:
    dims = shape.dims if isinstance(shape, TensorShape) else tuple(shape)
    if dims is None:
        return {"unknownRank": True}
    return {"dim": [{"size": str(int(d))} for d in dims]} if dims else {}


def _b64(text: str | bytes) -> str:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def _list_json(values: list[Any]) -> dict[str, Any]:
    if not values:
        return {"list": {}}
    first = values[0]
    if isinstance(first, DataType):
        return {"list": {"type": [v.name for v in values]}}
    if isinstance(first, bool):
        return {"list": {"b": list(values)}}
    if isinstance(first, int):
        return {"list": {"i": [str(int(v)) for v in values]}}
    if isinstance(first, float):
        return {"list": {"f": [float(v) for v in values]}}
    if isinstance(first, (str, bytes)):
        return {"list": {"s": [_b64(v) for v in values]}}
    if isinstance(first, TensorShape):
        return {"list": {"shape": [_shape_json(v) for v in values]}}
    raise TfjsConvertError(f"cannot write a list attr of {type(first).__name__}")


def attr_json(value: Any) -> dict[str, Any]:
    """One `AttrValue` in protobuf's JSON mapping (bytes base64, 64-bit ints as strings)."""
    if isinstance(value, DataType):
        return {"type": value.name}
    if isinstance(value, bool):
        return {"b": value}
    if isinstance(value, int):
        return {"i": str(value)}
    if isinstance(value, float):
        return {"f": value}
    if isinstance(value, (str, bytes)):
        return {"s": _b64(value)}
    if isinstance(value, TensorShape):
        return {"shape": _shape_json(value)}
    if isinstance(value, list):
        return _list_json(value)
    if isinstance(value, np.ndarray):
        dt = DataType.parse(value.dtype)
        return {"tensor": {"dtype": dt.name, "tensorShape": _shape_json(value.shape)}}
    raise TfjsConvertError(f"cannot write an attr of {type(value).__name__}")


# ----------------------------------------------------------------------------- fusing
def _consumers(graph: Graph) -> dict[str, list[Node]]:
    users: dict[str, list[Node]] = {}
    for n in graph.nodes:
        for i in n.inputs:
            users.setdefault(i.split(":")[0].lstrip("^"), []).append(n)
    return users


def _const(nodes: dict[str, Node], name: str) -> np.ndarray:
    node = nodes.get(name)
    if node is None or node.op != "Const" or not isinstance(node.attrs.get("value"), np.ndarray):
        raise TfjsConvertError(f"{name!r} is not a constant")
    return node.attrs["value"]


def fuse(graph: Graph) -> Graph:
    """Fold inference batch norms into convolutions; fuse bias and ReLU6 (see module doc).

    Only a node's sole consumer is fused into it, so no intermediate output another node
    needs disappears; the fused node takes the name of the last node it replaces, so every
    reference to it still resolves.
    """
    nodes = graph.by_name
    users = _consumers(graph)
    replaced: dict[str, Node] = {}  # the name of the first node of a fused chain -> new node
    dropped: set[str] = set()

    def only_user(name: str, op: str) -> Node | None:
        us = users.get(name, [])
        return us[0] if len(us) == 1 and us[0].op == op and us[0].inputs[0] == name else None

    for n in graph.nodes:
        if n.op in ("Conv2D", "DepthwiseConv2dNative"):
            bn = only_user(n.name, "FusedBatchNormV3")
            if bn is None or bn.attrs.get("is_training", False):
                continue
            w = _const(nodes, n.inputs[1]).astype(np.float64)
            gamma, beta, mean, var = (_const(nodes, i).astype(np.float64) for i in bn.inputs[1:5])
            scale = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-3)))
            if n.op == "Conv2D":
                w = w * scale
            else:  # [kh, kw, channels, multiplier]; output channel c * multiplier + m
                w = w * scale.reshape(w.shape[2], w.shape[3])
            bias = beta - mean * scale
            last, fused_ops = bn, ["BiasAdd"]
            relu = only_user(bn.name, "Relu6")
            if relu is not None:
                last, fused_ops = relu, ["BiasAdd", "Relu6"]
            attrs = {k: v for k, v in n.attrs.items() if k != "use_cudnn_on_gpu"}
            attrs.update(num_args=1, fused_ops=fused_ops, epsilon=0.0)
            op = "_FusedConv2D" if n.op == "Conv2D" else "FusedDepthwiseConv2dNative"
            wname, bname = f"{last.name}/fused_weights", f"{last.name}/fused_bias"
            replaced[n.name] = Node(last.name, op, [n.inputs[0], wname, bname], attrs)
            replaced[wname] = Node(
                wname, "Const", [], {"dtype": DataType.DT_FLOAT, "value": w.astype(np.float32)}
            )
            replaced[bname] = Node(
                bname, "Const", [], {"dtype": DataType.DT_FLOAT, "value": bias.astype(np.float32)}
            )
            dropped.update({bn.name, last.name})
        elif n.op == "MatMul":
            add = only_user(n.name, "BiasAdd")
            if add is None:
                continue
            attrs = {k: n.attrs[k] for k in ("T", "transpose_a", "transpose_b") if k in n.attrs}
            attrs.update(num_args=1, fused_ops=["BiasAdd"], epsilon=0.0)
            replaced[n.name] = Node(add.name, "_FusedMatMul", [*n.inputs, add.inputs[1]], attrs)
            dropped.add(add.name)
    out = Graph(producer=graph.producer, min_consumer=graph.min_consumer)
    # A folded weight is emitted just before its convolution, so the order stays topological.
    for n in graph.nodes:
        if n.name in replaced:
            new = replaced[n.name]
            out.nodes += [replaced[i] for i in new.inputs if i in replaced and i != n.name]
            out.nodes.append(new)
        elif n.name not in dropped:
            out.nodes.append(n)
    # The folded constants (raw kernels, batch-norm parameters) are dropped unless another
    # node still reads them.
    still_used = {i.split(":")[0].lstrip("^") for m in out.nodes for i in m.inputs}
    out.nodes = [m for m in out.nodes if m.op != "Const" or m.name in still_used]
    return out


# ----------------------------------------------------------------------------- writing
@dataclass
class TfjsModel:
    """Where a converted model lives and what it holds."""

    folder: Path
    nodes: int
    weights: int
    weight_bytes: int
    shards: int
    op_counts: dict[str, int]

    @property
    def model_json(self) -> Path:
        return self.folder / "model.json"


def graph_model_json(graph: Graph, weight_paths: list[str]) -> tuple[dict[str, Any], bytes]:
    """The model.json document (minus nothing) and the concatenated weight bytes."""
    topo_nodes: list[dict[str, Any]] = []
    specs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for n in graph.nodes:
        entry: dict[str, Any] = {"name": n.name, "op": n.op}
        if n.inputs:
            entry["input"] = list(n.inputs)
        if n.op == "Const":
            value = n.attrs.get("value")
            if not isinstance(value, np.ndarray):
                raise TfjsConvertError(f"Const {n.name!r} has no tensor value")
            dt = DataType.parse(value.dtype)
            if dt not in _DTYPES:
                raise TfjsConvertError(f"Const {n.name!r}: tfjs has no {dt.name} weights")
            specs.append(
                {"name": n.name, "shape": [int(d) for d in value.shape], "dtype": _DTYPES[dt]}
            )
            blobs.append(np.ascontiguousarray(value, dtype=dt.numpy).tobytes())
        if n.attrs:
            entry["attr"] = {k: attr_json(v) for k, v in sorted(n.attrs.items()) if v is not None}
        topo_nodes.append(entry)
    doc = {
        "format": "graph-model",
        "generatedBy": f"GraphDef producer {graph.producer}",
        "convertedBy": f"wasi-lab tfjs_convert {CONVERTER_VERSION}",
        "modelTopology": {
            "node": topo_nodes,
            "library": {},
            "versions": {"producer": graph.producer},
        },
        "weightsManifest": [{"paths": weight_paths, "weights": specs}],
    }
    return doc, b"".join(blobs)


def write_graph_model(graph: Graph, folder: Path, stamp: dict[str, Any] | None = None) -> TfjsModel:
    """Write `graph` as a tfjs graph model in `folder`, replacing it whole (never half)."""
    _, data = graph_model_json(graph, [])
    count = max(1, -(-len(data) // SHARD_BYTES))
    names = [f"group1-shard{i + 1}of{count}.bin" for i in range(count)]
    doc, data = graph_model_json(graph, names)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        for i, name in enumerate(names):
            (tmp / name).write_bytes(data[i * SHARD_BYTES : (i + 1) * SHARD_BYTES])
        (tmp / "model.json").write_text(json.dumps(doc))
        if stamp is not None:
            (tmp / "stamp.json").write_text(json.dumps(stamp))
        tmp.chmod(0o755)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TfjsModel(
        folder,
        len(graph.nodes),
        len(doc["weightsManifest"][0]["weights"]),
        len(data),
        count,
        graph.op_counts(),
    )


def convert_graphdef(pb: Path, folder: Path, *, fused: bool = True) -> TfjsModel:
    """Convert the frozen graph `pb` into a tfjs graph model in `folder`."""
    data = Path(pb).read_bytes()
    graph = parse_graphdef(data)
    if fused:
        graph = fuse(graph)
    stamp = {
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "fused": fused,
        "converter": CONVERTER_VERSION,
    }
    return write_graph_model(graph, folder, stamp)


def ensure_tfjs_model(pb: Path, folder: Path | None = None) -> Path:
    """The tfjs graph model of `pb` (next to it, `<name>.tfjs/`), converted when absent or
    stale (another .pb, another converter version). Returns the folder."""
    pb = Path(pb)
    folder = Path(folder) if folder else pb.with_suffix(".tfjs")
    data = pb.read_bytes()
    want = {
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "fused": True,
        "converter": CONVERTER_VERSION,
    }
    try:
        if (
            json.loads((folder / "stamp.json").read_text()) == want
            and (folder / "model.json").exists()
        ):
            return folder
    except (OSError, ValueError):
        pass
    convert_graphdef(pb, folder)
    return folder
