"""The hand-written protobuf codec for TensorFlow GraphDef files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wasi_lab.models.graphdef import (
    DataType,
    GraphBuilder,
    GraphDefError,
    TensorShape,
    decode_tensor,
    encode_graph,
    encode_varint,
    parse_graphdef,
)

# A one-node graph computed by hand from TF's .proto files, byte by byte:
#   GraphDef.node(1, LEN) -> NodeDef{name(1)="c", op(2)="Const",
#     attr(5) {key(1)="dtype", value(2)=AttrValue{type(6)=DT_FLOAT}},
#     attr(5) {key(1)="value", value(2)=AttrValue{tensor(8)=TensorProto{
#         dtype(1)=1, tensor_shape(2)={}, float_val(5, packed)=[1.5]}}}}
#   GraphDef.versions(4, LEN) -> VersionDef{producer(1)=27}
HAND_BYTES = bytes.fromhex(
    "0a2e"  # node, 46 bytes
    "0a0163"  # name "c"
    "1205436f6e7374"  # op "Const"
    "2a0b"
    "0a056474797065"
    "12023001"  # attr dtype: type = 1
    "2a15"
    "0a0576616c7565"
    "120c"
    "420a"
    "0801"
    "1200"
    "2a040000c03f"  # attr value
    "2202081b"  # versions { producer: 27 }
)


def test_varint_known_values() -> None:
    assert encode_varint(0) == b"\x00"
    assert encode_varint(1) == b"\x01"
    assert encode_varint(300) == b"\xac\x02"  # the protobuf documentation's example
    assert encode_varint(-1) == b"\xff" * 9 + b"\x01"  # int64 -1: ten bytes


def test_hand_computed_graph_decodes() -> None:
    graph = parse_graphdef(HAND_BYTES)
    assert graph.producer == 27
    (node,) = graph.nodes
    assert (node.name, node.op, node.inputs) == ("c", "Const", [])
    assert node.attrs["dtype"] is DataType.DT_FLOAT
    value = node.attrs["value"]
    assert value.dtype == np.float32 and value.shape == () and value == 1.5


def test_builder_produces_hand_computed_bytes() -> None:
    g = GraphBuilder(producer=27)
    g.const("c", np.float32(1.5), use_content=False)
    assert g.to_bytes() == HAND_BYTES


def _rich_graph() -> GraphBuilder:
    g = GraphBuilder()
    x = g.placeholder("input", [1, 224, 224, 3])
    w = g.const("w", np.arange(3 * 3 * 3 * 8, dtype=np.float32).reshape(3, 3, 3, 8) - 50.5)
    small = g.const("small", np.array([-1.25, 2.5], np.float32), use_content=False)
    axes = g.const("axes", np.array([1, 2], np.int32))
    neg = g.const("neg", np.array([-7, 1 << 40], np.int64), use_content=False)
    negi = g.const("negi", np.array([[-3, 4]], np.int32), use_content=False)
    c = g.op(
        "Conv2D",
        "conv",
        [x, w],
        T=DataType.DT_FLOAT,
        strides=[1, 2, 2, 1],
        padding="SAME",
        data_format="NHWC",
        use_cudnn_on_gpu=True,
        dilations=[1, 1, 1, 1],
    )
    bn = g.op(
        "FusedBatchNormV3",
        "bn",
        [c, small, small, small, small],
        epsilon=1e-3,
        is_training=False,
        U=DataType.DT_FLOAT,
    )
    g.op("Mean", "mean", [bn, axes], keep_dims=False, Tidx=DataType.DT_INT32)
    g.op("Squeeze", "sq", ["mean"], squeeze_dims=[-1, 2], names=["a", "b"])
    g.op("Identity", "id", [neg + ":0", "^" + negi], shape=TensorShape(None), n=-5)
    return g


def test_round_trip_all_attr_kinds() -> None:
    g = _rich_graph()
    data = g.to_bytes()
    graph = parse_graphdef(data)
    assert [n.name for n in graph.nodes] == [n.name for n in g.graph.nodes]
    byname = graph.by_name
    assert byname["input"].attrs == {
        "dtype": DataType.DT_FLOAT,
        "shape": TensorShape([1, 224, 224, 3]),
    }
    np.testing.assert_array_equal(byname["w"].attrs["value"], g.graph.node("w").attrs["value"])
    np.testing.assert_array_equal(byname["small"].attrs["value"], [-1.25, 2.5])
    assert byname["axes"].attrs["value"].dtype == np.int32
    np.testing.assert_array_equal(byname["neg"].attrs["value"], [-7, 1 << 40])
    assert byname["neg"].attrs["value"].dtype == np.int64
    np.testing.assert_array_equal(byname["negi"].attrs["value"], [[-3, 4]])
    conv = byname["conv"].attrs
    assert conv["strides"] == [1, 2, 2, 1] and conv["padding"] == "SAME"
    assert conv["use_cudnn_on_gpu"] is True and conv["T"] is DataType.DT_FLOAT
    assert byname["bn"].attrs["epsilon"] == pytest.approx(1e-3)
    assert byname["bn"].attrs["is_training"] is False
    assert byname["bn"].inputs == ["conv", "small", "small", "small", "small"]
    assert byname["sq"].attrs == {"squeeze_dims": [-1, 2], "names": ["a", "b"]}
    ident = byname["id"]
    assert ident.inputs == ["neg:0", "^negi"]
    assert ident.attrs == {"shape": TensorShape(None), "n": -5}
    # Re-encoding what we decoded and decoding again loses nothing.
    again = parse_graphdef(encode_graph(graph))
    for a, b in zip(graph.nodes, again.nodes, strict=True):
        assert (a.name, a.op, a.inputs, a.attrs.keys()) == (b.name, b.op, b.inputs, b.attrs.keys())
        for key, value in a.attrs.items():
            if isinstance(value, np.ndarray):
                assert value.dtype == b.attrs[key].dtype
                np.testing.assert_array_equal(value, b.attrs[key])
            else:
                assert value == b.attrs[key]


def test_scalar_value_fills_shape_like_tensorflow() -> None:
    # TensorProto{dtype=DT_FLOAT, shape=[2,3], float_val=[4.0]}: TF repeats the last value.
    shape = bytes.fromhex("1202080212020803")  # dim{size:2} dim{size:3}
    proto = bytes.fromhex("0801") + b"\x12" + bytes([len(shape)]) + shape
    proto += bytes.fromhex("2a0400008040")
    arr = decode_tensor(proto)
    assert arr.shape == (2, 3) and np.all(arr == 4.0)


def test_unpacked_repeated_and_unknown_fields_are_accepted() -> None:
    # int_val (7) written unpacked as two VARINT fields, plus an unknown fixed64 field 99
    # and an unknown varint field 50: a proto3 parser must accept all of it.
    shape = bytes.fromhex("12020802")
    proto = bytes.fromhex("0803") + b"\x12" + bytes([len(shape)]) + shape
    proto += bytes.fromhex("380538ffffffffffffffffff01")  # 5, -1
    proto += encode_varint((99 << 3) | 1) + b"\x00" * 8 + encode_varint(50 << 3) + b"\x07"
    arr = decode_tensor(proto)
    assert arr.dtype == np.int32
    np.testing.assert_array_equal(arr, [5, -1])


def test_content_size_mismatch_is_an_error() -> None:
    shape = bytes.fromhex("12020803")
    proto = bytes.fromhex("0801") + b"\x12" + bytes([len(shape)]) + shape + b"\x22\x04abcd"
    with pytest.raises(GraphDefError, match="tensor_content has 4 bytes"):
        decode_tensor(proto)


def test_unsupported_dtype_names_itself() -> None:
    with pytest.raises(GraphDefError, match="dtype 7"):
        decode_tensor(bytes.fromhex("0807"))


def test_truncated_graph_raises_graphdef_error() -> None:
    data = _rich_graph().to_bytes()
    for cut in (1, 2, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(GraphDefError):
            parse_graphdef(data[:cut])


@pytest.mark.parametrize(
    "garbage", [b"", b"\x00\x00", b"\xff" * 20, b"hello world", b"\x0a\x05ab", b"\x0b\x01"]
)
def test_garbage_raises_graphdef_error(garbage: bytes) -> None:
    with pytest.raises(GraphDefError):
        parse_graphdef(garbage)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_with_other_errors(data: bytes) -> None:
    try:
        parse_graphdef(data)
    except GraphDefError:
        pass


def test_builder_rejects_bad_graphs() -> None:
    g = GraphBuilder()
    g.placeholder("x", [1])
    with pytest.raises(GraphDefError, match="duplicate"):
        g.placeholder("x", [1])
    with pytest.raises(GraphDefError, match="not defined"):
        g.op("Relu", "r", ["nope"])
    with pytest.raises(GraphDefError, match="unsupported attr"):
        g.op("Relu", "r2", ["x"], bad={"a": 1})
        g.to_bytes()
