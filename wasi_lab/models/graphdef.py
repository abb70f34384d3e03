"""Read and write TensorFlow ``GraphDef`` files with nothing but the protobuf wire format.

A frozen TensorFlow graph (``.pb``) is a single protobuf message, ``GraphDef``.
We deliberately do not depend on the ``protobuf`` or ``tensorflow`` packages: the
wire format is small enough to write by hand, and reading it is one of the
lessons of the kit.

The wire format in five lines:

* A message is a sequence of *fields*; each starts with a varint *key*
  ``(field_number << 3) | wire_type``.
* Wire type 0 (VARINT): integers/bools/enums, 7 bits per byte, low bits first,
  the high bit of each byte says "more bytes follow".
* Wire type 2 (LEN): a varint length, then that many bytes (strings, bytes,
  nested messages, and *packed* repeated scalars).
* Wire type 5 (I32) / 1 (I64): 4 / 8 little-endian bytes (``float`` / ``double``).
* Unknown fields are skipped, repeated fields simply appear several times.

Field numbers below are TensorFlow's own (``tensorflow/core/framework/*.proto``),
so TensorFlow itself can load what :class:`GraphBuilder` writes.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wasi_lab.wasmbin import uleb128

__all__ = [
    "DataType",
    "Graph",
    "GraphBuilder",
    "GraphDefError",
    "Node",
    "TensorShape",
    "decode_tensor",
    "encode_graph",
    "encode_tensor",
    "parse_graphdef",
]


class GraphDefError(ValueError):
    """The bytes are not a GraphDef we understand (truncated, garbage, unsupported)."""


# --------------------------------------------------------------------------- field numbers
# graph.proto
GRAPH_NODE = 1
GRAPH_LIBRARY = 2
GRAPH_VERSION_DEPRECATED = 3
GRAPH_VERSIONS = 4
# versions.proto (VersionDef)
VERSIONS_PRODUCER = 1
VERSIONS_MIN_CONSUMER = 2
# node_def.proto
NODE_NAME = 1
NODE_OP = 2
NODE_INPUT = 3
NODE_DEVICE = 4
NODE_ATTR = 5  # map<string, AttrValue> == repeated {key = 1; value = 2}
MAP_KEY = 1
MAP_VALUE = 2
# attr_value.proto (AttrValue oneof and AttrValue.ListValue share numbers 2..8)
ATTR_LIST = 1
ATTR_S = 2
ATTR_I = 3
ATTR_F = 4
ATTR_B = 5
ATTR_TYPE = 6
ATTR_SHAPE = 7
ATTR_TENSOR = 8
# tensor.proto
TENSOR_DTYPE = 1
TENSOR_SHAPE = 2
TENSOR_VERSION_NUMBER = 3
TENSOR_CONTENT = 4
TENSOR_FLOAT_VAL = 5
TENSOR_INT_VAL = 7
TENSOR_INT64_VAL = 10
TENSOR_BOOL_VAL = 11
# tensor_shape.proto
SHAPE_DIM = 2
SHAPE_UNKNOWN_RANK = 3
DIM_SIZE = 1
DIM_NAME = 2

# A sanity cap so garbage shapes cannot make us allocate terabytes.
_MAX_ELEMENTS = 1 << 31

# wire types
VARINT = 0
I64 = 1
LEN = 2
I32 = 5


class DataType(enum.IntEnum):
    """The subset of ``tensorflow.DataType`` (types.proto) that frozen image classifiers use."""

    DT_FLOAT = 1
    DT_INT32 = 3
    DT_INT64 = 9
    DT_BOOL = 10  # a Switch's predicate (tf_keras' frozen learning phase)

    @classmethod
    def parse(cls, value: str | int | np.dtype | DataType) -> DataType:
        """Accept "float"/"int32"/"int64", a NumPy dtype, or the enum number."""
        if isinstance(value, DataType):
            return value
        if isinstance(value, int):
            return cls(value)
        if isinstance(value, str) and value in _NAME_TO_DT:
            return _NAME_TO_DT[value]
        try:
            return _NP_TO_DT[np.dtype(value)]
        except (KeyError, TypeError) as exc:
            raise GraphDefError(f"unsupported dtype {value!r} (float, int32, int64, bool)") from exc

    @property
    def numpy(self) -> np.dtype:
        return _DT_TO_NP[self]


_DT_TO_NP = {
    DataType.DT_FLOAT: np.dtype("<f4"),
    DataType.DT_INT32: np.dtype("<i4"),
    DataType.DT_INT64: np.dtype("<i8"),
    DataType.DT_BOOL: np.dtype("?"),
}
_NP_TO_DT = {np.dtype(v): k for k, v in _DT_TO_NP.items()}
_NAME_TO_DT = {
    "float": DataType.DT_FLOAT,
    "float32": DataType.DT_FLOAT,
    "int32": DataType.DT_INT32,
    "int64": DataType.DT_INT64,
    "bool": DataType.DT_BOOL,
}


@dataclass(frozen=True)
class TensorShape:
    """A ``TensorShapeProto``: ``dims=None`` means unknown rank, a ``-1`` dim means unknown size."""

    dims: tuple[int, ...] | None

    def __init__(self, dims: Sequence[int] | None) -> None:
        object.__setattr__(self, "dims", None if dims is None else tuple(int(d) for d in dims))


@dataclass
class Node:
    """One ``NodeDef``. ``attrs`` values are Python/NumPy values (see :func:`_decode_attr`)."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    device: str = ""


@dataclass
class Graph:
    """A decoded ``GraphDef``: nodes in file order (TF frozen graphs are topologically sorted)."""

    nodes: list[Node] = field(default_factory=list)
    producer: int = 0
    min_consumer: int = 0

    def node(self, name: str) -> Node:
        """Look a node up by name (raises ``KeyError`` with the name if absent)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in graph")

    @property
    def by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def op_counts(self) -> dict[str, int]:
        """How many nodes of each op type: a quick summary for notebooks."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts


# =========================================================================== encoding
def encode_varint(value: int) -> bytes:
    """Unsigned LEB128; negative numbers become their 64-bit two's complement (10 bytes),
    exactly as protobuf does for ``int32``/``int64``."""
    if value < 0:
        value += 1 << 64
    if value >= 1 << 64:
        raise GraphDefError(f"varint out of range: {value}")
    return uleb128(value)


def _key(field_no: int, wire_type: int) -> bytes:
    return encode_varint((field_no << 3) | wire_type)


def _varint_field(field_no: int, value: int) -> bytes:
    return _key(field_no, VARINT) + encode_varint(int(value))


def _len_field(field_no: int, payload: bytes) -> bytes:
    return _key(field_no, LEN) + encode_varint(len(payload)) + payload


def _float_field(field_no: int, value: float) -> bytes:
    return _key(field_no, I32) + struct.pack("<f", value)


def _str(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def encode_shape(shape: TensorShape | Sequence[int] | None) -> bytes:
    """Encode a ``TensorShapeProto``."""
    if not isinstance(shape, TensorShape):
        shape = TensorShape(shape)
    if shape.dims is None:
        return _varint_field(SHAPE_UNKNOWN_RANK, 1)
    # An empty Dim message is size 0, which proto3 does not write at all.
    return b"".join(
        _len_field(SHAPE_DIM, _varint_field(DIM_SIZE, d) if d else b"") for d in shape.dims
    )


def encode_tensor(
    array: Any, dtype: str | DataType | None = None, *, use_content: bool = True
) -> bytes:
    """Encode a ``TensorProto``.

    ``use_content=True`` writes raw little-endian bytes in ``tensor_content`` (what
    TF's freezer does for large constants); ``False`` writes the repeated
    ``float_val``/``int_val``/``int64_val`` (packed), which TF uses for small ones.
    """
    dt = DataType.parse(dtype) if dtype is not None else DataType.parse(np.asarray(array).dtype)
    arr = np.asarray(array, dtype=dt.numpy, order="C")  # (ascontiguousarray would make 0-d 1-d)
    out = _varint_field(TENSOR_DTYPE, dt)
    out += _len_field(TENSOR_SHAPE, encode_shape(arr.shape))
    if arr.size == 0:
        return out
    if use_content:
        return out + _len_field(TENSOR_CONTENT, arr.tobytes())
    if dt == DataType.DT_FLOAT:
        return out + _len_field(TENSOR_FLOAT_VAL, arr.astype("<f4").tobytes())
    number = {DataType.DT_INT32: TENSOR_INT_VAL, DataType.DT_BOOL: TENSOR_BOOL_VAL}.get(
        dt, TENSOR_INT64_VAL
    )
    return out + _len_field(number, b"".join(encode_varint(int(v)) for v in arr.ravel()))


class _TensorAttr(np.ndarray):
    """An ndarray remembering whether to write it as tensor_content or repeated values."""

    use_content: bool

    def __new__(cls, arr: np.ndarray, use_content: bool) -> _TensorAttr:
        obj = np.asarray(arr).view(cls)
        obj.use_content = use_content
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        self.use_content = getattr(obj, "use_content", True)


def encode_attr(value: Any) -> bytes:
    """Encode an ``AttrValue`` from a Python value.

    Mapping (checked in this order, because ``bool`` and ``DataType`` are ``int``s):
    ``bool`` → b, ``DataType`` → type, ``int`` → i, ``float`` → f, ``str``/``bytes`` → s,
    ``TensorShape`` → shape, ``np.ndarray`` → tensor, ``list``/``tuple`` of int → list(i),
    of str/bytes → list(s).
    """
    if isinstance(value, _TensorAttr):
        arr = np.asarray(value).view(np.ndarray)
        return _len_field(ATTR_TENSOR, encode_tensor(arr, use_content=value.use_content))
    if isinstance(value, (bool, np.bool_)):
        return _varint_field(ATTR_B, int(bool(value)))
    if isinstance(value, DataType):
        return _varint_field(ATTR_TYPE, value)
    if isinstance(value, (int, np.integer)):
        return _varint_field(ATTR_I, int(value))
    if isinstance(value, (float, np.floating)):
        return _float_field(ATTR_F, float(value))
    if isinstance(value, (str, bytes)):
        return _len_field(ATTR_S, _str(value))
    if isinstance(value, TensorShape):
        return _len_field(ATTR_SHAPE, encode_shape(value))
    if isinstance(value, np.ndarray):
        return _len_field(ATTR_TENSOR, encode_tensor(value))
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (str, bytes)) for v in value):
            payload = b"".join(_len_field(ATTR_S, _str(v)) for v in value)
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
            packed = b"".join(encode_varint(int(v)) for v in value)
            payload = _len_field(ATTR_I, packed) if value else b""
        else:
            raise GraphDefError(f"unsupported list attr {value!r} (list of int or of str)")
        return _len_field(ATTR_LIST, payload)
    raise GraphDefError(f"unsupported attr value {value!r} of type {type(value).__name__}")


def encode_node(node: Node) -> bytes:
    """Encode a ``NodeDef``; attrs are written sorted by key so output is deterministic."""
    out = _len_field(NODE_NAME, _str(node.name)) + _len_field(NODE_OP, _str(node.op))
    for inp in node.inputs:
        out += _len_field(NODE_INPUT, _str(inp))
    if node.device:
        out += _len_field(NODE_DEVICE, _str(node.device))
    for key in sorted(node.attrs):
        entry = _len_field(MAP_KEY, _str(key)) + _len_field(MAP_VALUE, encode_attr(node.attrs[key]))
        out += _len_field(NODE_ATTR, entry)
    return out


def encode_graph(graph: Graph) -> bytes:
    """Encode a whole ``GraphDef``."""
    parts = [_len_field(GRAPH_NODE, encode_node(n)) for n in graph.nodes]
    versions = b""
    if graph.producer:
        versions += _varint_field(VERSIONS_PRODUCER, graph.producer)
    if graph.min_consumer:
        versions += _varint_field(VERSIONS_MIN_CONSUMER, graph.min_consumer)
    parts.append(_len_field(GRAPH_VERSIONS, versions))
    return b"".join(parts)


class GraphBuilder:
    """Build a frozen graph node by node, then :meth:`to_bytes` it.

    Every method returns the node's name so calls chain naturally::

        g = GraphBuilder()
        x = g.placeholder("input", [1, 4, 4, 3])
        w = g.const("w", np.ones((3, 3, 3, 8), np.float32))
        y = g.op("Conv2D", "conv", [x, w], strides=[1, 1, 1, 1], padding="SAME")
    """

    def __init__(self, producer: int = 27) -> None:
        self.graph = Graph(producer=producer)
        self._names: set[str] = set()

    def _add(self, node: Node) -> str:
        if node.name in self._names:
            raise GraphDefError(f"duplicate node name {node.name!r}")
        for inp in node.inputs:
            base = inp.lstrip("^").split(":")[0]
            if base not in self._names:
                raise GraphDefError(f"node {node.name!r}: input {inp!r} is not defined yet")
        self._names.add(node.name)
        self.graph.nodes.append(node)
        return node.name

    def placeholder(
        self, name: str, shape: Sequence[int] | None, dtype: str | DataType = "float"
    ) -> str:
        dt = DataType.parse(dtype)
        return self._add(Node(name, "Placeholder", [], {"dtype": dt, "shape": TensorShape(shape)}))

    def const(
        self,
        name: str,
        value: Any,
        dtype: str | DataType | None = None,
        *,
        use_content: bool = True,
    ) -> str:
        """A ``Const`` node. ``use_content=False`` stores values in ``float_val``/``int_val``."""
        dt = (
            DataType.parse(dtype)
            if dtype is not None
            else DataType.parse(
                np.asarray(value).dtype if np.asarray(value).dtype != np.float64 else "float"
            )
        )
        arr = np.asarray(value, dtype=dt.numpy)
        attrs = {"dtype": dt, "value": _TensorAttr(arr, use_content)}
        return self._add(Node(name, "Const", [], attrs))

    def op(self, op_type: str, name: str, inputs: Sequence[str], **attrs: Any) -> str:
        """Any other op; attr values follow :func:`encode_attr`'s mapping."""
        return self._add(Node(name, op_type, list(inputs), dict(attrs)))

    def to_bytes(self) -> bytes:
        return encode_graph(self.graph)


# =========================================================================== decoding
class _Reader:
    """Walks one message's bytes, yielding ``(field_number, wire_type, value)``."""

    def __init__(self, data: bytes | memoryview, what: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    def varint(self) -> int:
        result = shift = 0
        data, pos = self.data, self.pos
        while True:
            if pos >= len(data):
                raise GraphDefError(f"truncated varint in {self.what}")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift >= 70:
                raise GraphDefError(f"varint too long in {self.what}")
        self.pos = pos
        return result & ((1 << 64) - 1)

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise GraphDefError(
                f"truncated {self.what}: need {n} bytes at offset {self.pos}, "
                f"have {len(self.data) - self.pos}"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def fields(self) -> Iterator[tuple[int, int, Any]]:
        while self.pos < len(self.data):
            key = self.varint()
            number, wire = key >> 3, key & 7
            if number == 0:
                raise GraphDefError(f"field number 0 in {self.what} (not a protobuf message?)")
            if wire == VARINT:
                yield number, wire, self.varint()
            elif wire == LEN:
                yield number, wire, self.take(self.varint())
            elif wire == I32:
                yield number, wire, self.take(4)
            elif wire == I64:
                yield number, wire, self.take(8)
            else:
                raise GraphDefError(f"unsupported wire type {wire} (field {number}) in {self.what}")


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _expect(wire: int, expected: int, number: int, what: str) -> None:
    if wire != expected:
        raise GraphDefError(f"{what}: field {number} has wire type {wire}, expected {expected}")


def _text(raw: memoryview, what: str) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GraphDefError(f"{what} is not valid UTF-8") from exc


def _packed_varints(wire: int, value: Any, what: str) -> list[int]:
    """Repeated integers may arrive packed (LEN) or one per field (VARINT); accept both."""
    if wire == VARINT:
        return [_signed64(value)]
    if wire == LEN:
        r = _Reader(value, what)
        out = []
        while r.pos < len(r.data):
            out.append(_signed64(r.varint()))
        return out
    raise GraphDefError(f"{what}: wire type {wire} for repeated integers")


def _packed_floats(wire: int, value: Any, what: str) -> np.ndarray:
    if wire == I32:
        return np.frombuffer(bytes(value), "<f4")
    if wire == LEN:
        if len(value) % 4:
            raise GraphDefError(f"{what}: packed floats length {len(value)} not a multiple of 4")
        return np.frombuffer(bytes(value), "<f4")
    raise GraphDefError(f"{what}: wire type {wire} for repeated floats")


def decode_shape(data: bytes | memoryview) -> TensorShape:
    dims: list[int] = []
    unknown = False
    for number, wire, value in _Reader(data, "TensorShapeProto").fields():
        if number == SHAPE_DIM:
            _expect(wire, LEN, number, "TensorShapeProto.dim")
            size = 0
            for n2, w2, v2 in _Reader(value, "TensorShapeProto.Dim").fields():
                if n2 == DIM_SIZE:
                    _expect(w2, VARINT, n2, "Dim.size")
                    size = _signed64(v2)
            dims.append(size)
        elif number == SHAPE_UNKNOWN_RANK and wire == VARINT:
            unknown = bool(value)
    return TensorShape(None if unknown else dims)


def decode_tensor(data: bytes | memoryview) -> np.ndarray:
    """Decode a ``TensorProto`` into a NumPy array of its own dtype and shape.

    Follows TF's rules for the repeated ``*_val`` fields: if fewer values than
    elements are present, the last value is repeated (a scalar fills a tensor).
    """
    dtype_num = 0
    shape = TensorShape([])
    content: bytes | None = None
    floats: list[np.ndarray] = []
    ints: list[int] = []
    for number, wire, value in _Reader(data, "TensorProto").fields():
        if number == TENSOR_DTYPE:
            _expect(wire, VARINT, number, "TensorProto.dtype")
            dtype_num = value
        elif number == TENSOR_SHAPE:
            _expect(wire, LEN, number, "TensorProto.tensor_shape")
            shape = decode_shape(value)
        elif number == TENSOR_CONTENT:
            _expect(wire, LEN, number, "TensorProto.tensor_content")
            content = bytes(value)
        elif number == TENSOR_FLOAT_VAL:
            floats.append(_packed_floats(wire, value, "TensorProto.float_val"))
        elif number in (TENSOR_INT_VAL, TENSOR_INT64_VAL, TENSOR_BOOL_VAL):
            ints.extend(_packed_varints(wire, value, "TensorProto.int_val"))
    try:
        dt = DataType(dtype_num)
    except ValueError as exc:
        raise GraphDefError(
            f"unsupported tensor dtype {dtype_num} "
            "(supported: DT_FLOAT=1, DT_INT32=3, DT_INT64=9, DT_BOOL=10)"
        ) from exc
    if shape.dims is None or any(d < 0 for d in shape.dims):
        raise GraphDefError(f"constant tensor has an unknown shape {shape.dims}")
    dims = shape.dims
    count = 1
    for d in dims:
        count *= d
    if count > _MAX_ELEMENTS:
        raise GraphDefError(f"constant of shape {list(dims)} is implausibly large")
    npdt = dt.numpy
    if content is not None:
        if len(content) != count * npdt.itemsize:
            raise GraphDefError(
                f"tensor_content has {len(content)} bytes, shape {list(dims)} of {dt.name} "
                f"needs {count * npdt.itemsize}"
            )
        return np.frombuffer(content, npdt).reshape(dims).copy()
    if dt == DataType.DT_FLOAT:
        values = np.concatenate(floats) if floats else np.zeros(0, npdt)
    else:
        values = np.array(ints, dtype=np.int64).astype(npdt)
    if len(values) > count:
        raise GraphDefError(f"tensor has {len(values)} values for shape {list(dims)}")
    if len(values) < count:
        fill = values[-1] if len(values) else npdt.type(0)
        values = np.concatenate([values, np.full(count - len(values), fill, npdt)])
    return values.astype(npdt).reshape(dims)


def _decode_list(data: memoryview) -> list[Any]:
    """``AttrValue.ListValue``: we return whichever repeated field is populated."""
    strs: list[str | bytes] = []
    ints: list[int] = []
    floats: list[float] = []
    types: list[DataType | int] = []
    shapes: list[TensorShape] = []
    tensors: list[np.ndarray] = []
    bools: list[bool] = []
    for number, wire, value in _Reader(data, "AttrValue.ListValue").fields():
        if number == ATTR_S:
            strs.append(_maybe_text(value))
        elif number == ATTR_I:
            ints.extend(_packed_varints(wire, value, "list(i)"))
        elif number == ATTR_F:
            floats.extend(float(x) for x in _packed_floats(wire, value, "list(f)"))
        elif number == ATTR_B:
            bools.extend(bool(x) for x in _packed_varints(wire, value, "list(b)"))
        elif number == ATTR_TYPE:
            types.extend(_dtype_or_int(x) for x in _packed_varints(wire, value, "list(type)"))
        elif number == ATTR_SHAPE:
            shapes.append(decode_shape(value))
        elif number == ATTR_TENSOR:
            tensors.append(decode_tensor(value))
    for candidate in (strs, ints, floats, bools, types, shapes, tensors):
        if candidate:
            return list(candidate)
    return []


def _maybe_text(raw: memoryview) -> str | bytes:
    """``s`` attrs are bytes in the proto, but in practice ASCII ("SAME", "NHWC")."""
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return bytes(raw)


def _dtype_or_int(value: int) -> DataType | int:
    try:
        return DataType(value)
    except ValueError:
        return value  # e.g. DT_UINT8 on a Cast node: keep the number, we never evaluate it


def decode_attr(data: memoryview) -> Any:
    """Decode an ``AttrValue`` into the Python value :func:`encode_attr` would accept."""
    result: Any = None
    for number, wire, value in _Reader(data, "AttrValue").fields():
        if number == ATTR_LIST:
            _expect(wire, LEN, number, "AttrValue.list")
            result = _decode_list(value)
        elif number == ATTR_S:
            _expect(wire, LEN, number, "AttrValue.s")
            result = _maybe_text(value)
        elif number == ATTR_I:
            _expect(wire, VARINT, number, "AttrValue.i")
            result = _signed64(value)
        elif number == ATTR_F:
            _expect(wire, I32, number, "AttrValue.f")
            result = struct.unpack("<f", bytes(value))[0]
        elif number == ATTR_B:
            _expect(wire, VARINT, number, "AttrValue.b")
            result = bool(value)
        elif number == ATTR_TYPE:
            _expect(wire, VARINT, number, "AttrValue.type")
            result = _dtype_or_int(value)
        elif number == ATTR_SHAPE:
            _expect(wire, LEN, number, "AttrValue.shape")
            result = decode_shape(value)
        elif number == ATTR_TENSOR:
            _expect(wire, LEN, number, "AttrValue.tensor")
            result = decode_tensor(value)
    return result


def decode_node(data: memoryview) -> Node:
    node = Node(name="", op="")
    for number, wire, value in _Reader(data, "NodeDef").fields():
        if number in (NODE_NAME, NODE_OP, NODE_INPUT, NODE_DEVICE, NODE_ATTR):
            _expect(wire, LEN, number, "NodeDef")
        if number == NODE_NAME:
            node.name = _text(value, "NodeDef.name")
        elif number == NODE_OP:
            node.op = _text(value, "NodeDef.op")
        elif number == NODE_INPUT:
            node.inputs.append(_text(value, "NodeDef.input"))
        elif number == NODE_DEVICE:
            node.device = _text(value, "NodeDef.device")
        elif number == NODE_ATTR:
            key, attr = "", None
            for n2, w2, v2 in _Reader(value, "NodeDef.attr entry").fields():
                if n2 == MAP_KEY:
                    _expect(w2, LEN, n2, "attr key")
                    key = _text(v2, "attr key")
                elif n2 == MAP_VALUE:
                    _expect(w2, LEN, n2, "attr value")
                    attr = v2
            try:
                node.attrs[key] = decode_attr(attr) if attr is not None else None
            except GraphDefError as exc:
                raise GraphDefError(f"node {node.name or '?'!r} attr {key!r}: {exc}") from exc
    if not node.name or not node.op:
        raise GraphDefError(f"NodeDef without name or op (name={node.name!r}, op={node.op!r})")
    return node


def parse_graphdef(data: bytes | bytearray | memoryview) -> Graph:
    """Decode a serialized ``GraphDef`` (the content of a frozen ``.pb``)."""
    graph = Graph()
    if len(data) == 0:
        raise GraphDefError("empty file: not a GraphDef")
    for number, wire, value in _Reader(data, "GraphDef").fields():
        if number == GRAPH_NODE:
            _expect(wire, LEN, number, "GraphDef.node")
            graph.nodes.append(decode_node(value))
        elif number == GRAPH_VERSIONS:
            _expect(wire, LEN, number, "GraphDef.versions")
            for n2, w2, v2 in _Reader(value, "VersionDef").fields():
                if n2 == VERSIONS_PRODUCER and w2 == VARINT:
                    graph.producer = _signed64(v2)
                elif n2 == VERSIONS_MIN_CONSUMER and w2 == VARINT:
                    graph.min_consumer = _signed64(v2)
    if not graph.nodes:
        raise GraphDefError("GraphDef has no nodes")
    return graph
