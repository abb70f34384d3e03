//! The TensorFlow messages a frozen graph is made of, decoded with [`super::proto`].
//!
//! Field numbers are TensorFlow's own (`tensorflow/core/framework/*.proto`):
//!
//! ```text
//! GraphDef    { repeated NodeDef node = 1; ... }
//! NodeDef     { string name = 1; string op = 2; repeated string input = 3;
//!               string device = 4; map<string, AttrValue> attr = 5; }
//! AttrValue   { oneof { ListValue list = 1; bytes s = 2; int64 i = 3; float f = 4;
//!               bool b = 5; DataType type = 6; TensorShapeProto shape = 7;
//!               TensorProto tensor = 8; ... } }
//! TensorProto { DataType dtype = 1; TensorShapeProto tensor_shape = 2;
//!               bytes tensor_content = 4; repeated float float_val = 5;
//!               repeated int32 int_val = 7; repeated int64 int64_val = 10; ... }
//! TensorShapeProto { repeated Dim dim = 2 { int64 size = 1; }; bool unknown_rank = 3; }
//! ```
//!
//! A `map<K, V>` is sent as repeated entry messages `{ K key = 1; V value = 2; }`. Fields we
//! do not need (device, library, versions ...) are skipped, as protobuf allows.

use super::proto::{
    err, packed_f32s, packed_varints, string, ProtoResult, Reader, Value, OUT_OF_MEMORY,
};
use std::rc::Rc;

/// The most elements one constant may hold (256 MiB of f32): more is a corrupt file, and
/// allocating it would exhaust the 4 GiB a wasm32 memory can address.
pub const MAX_ELEMENTS: usize = 1 << 26;
/// The bytes one model may hold: its constants once expanded (a constant may announce a
/// million values with a single `float_val`), then the planner's weight copies (folded and
/// packed filters, biases) and its activation buffers. One budget for the whole model, so
/// many tensors each under [`MAX_ELEMENTS`] cannot exhaust memory together either.
pub const MODEL_BUDGET_BYTES: usize = 1 << 28;
/// TensorFlow tensors of image models have rank <= 5; 8 leaves room.
pub const MAX_RANK: usize = 8;

/// `tensorflow.DataType` values we read.
pub const DT_FLOAT: i64 = 1;
pub const DT_INT32: i64 = 3;
pub const DT_INT64: i64 = 9;
/// A bool tensor (a `tf.cond` predicate): held as integers 0 and 1.
pub const DT_BOOL: i64 = 10;

/// A decoded `GraphDef`: its nodes in file order.
#[derive(Clone, Debug, Default)]
pub struct GraphDef {
    pub nodes: Vec<NodeDef>,
    /// What is left of [`MODEL_BUDGET_BYTES`] after the constants: the planner charges
    /// its weight copies and activation buffers to it, so the whole model has one budget.
    pub budget_left: usize,
}

/// One `NodeDef`. `inputs` keep TensorFlow's spelling: `"name"`, `"name:1"` or `"^name"`
/// (a control dependency, which carries no data).
#[derive(Clone, Debug, Default)]
pub struct NodeDef {
    pub name: String,
    pub op: String,
    pub inputs: Vec<String>,
    pub attrs: Vec<(String, AttrValue)>,
    /// Where the node's attribute entries lie in the model's bytes (offset, length) until
    /// [`decode_attrs`] reads them: [`scan_graph`] leaves attributes (weights included)
    /// undecoded, so nodes the output does not need are never decoded at all.
    pub attr_spans: Vec<(usize, usize)>,
}

impl NodeDef {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A decoded `TensorShapeProto`: `None` means unknown rank, `-1` an unknown dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeProto {
    pub dims: Option<Vec<i64>>,
}

/// The values of a constant. Integer tensors (int32 and int64 alike) are widened to i64:
/// in image models they are only shapes, axes and paddings.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl TensorData {
    /// The float values (empty for an integer tensor: the planner refuses those as data).
    pub fn as_f32(&self) -> &[f32] {
        match self {
            TensorData::F32(v) => v,
            TensorData::I64(_) => &[],
        }
    }
}

/// A decoded `TensorProto`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorProto {
    pub dtype: i64,
    pub shape: Vec<usize>,
    /// Shared, not copied, by every node of the plan that reads the constant.
    pub data: Rc<TensorData>,
}

/// `AttrValue.ListValue`: only the lists image graphs use (strides, ksize, squeeze_dims ...).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListValue {
    pub s: Vec<Vec<u8>>,
    pub i: Vec<i64>,
    pub f: Vec<f32>,
    pub b: Vec<bool>,
    pub types: Vec<i64>,
}

/// A decoded `AttrValue`.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    List(ListValue),
    S(Vec<u8>),
    I(i64),
    F(f32),
    B(bool),
    Type(i64),
    Shape(ShapeProto),
    Tensor(TensorProto),
    /// A kind we do not decode (function, placeholder): kept so the node still loads.
    Other,
}

/// A dimension read from the graph as a `usize`: refuses negative values and anything above
/// [`MAX_ELEMENTS`] (no tensor can have a longer axis), so that nothing larger than 2^32 is
/// ever silently truncated by `as usize` on wasm32.
pub fn dim(d: i64) -> Option<usize> {
    usize::try_from(d).ok().filter(|&d| d <= MAX_ELEMENTS)
}

/// A vector of `n` copies of `v`, or an out-of-memory error instead of an aborting allocation.
pub fn try_filled<T: Clone>(n: usize, v: T) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| {
        format!(
            "{}{} values of {} bytes",
            OUT_OF_MEMORY,
            n,
            std::mem::size_of::<T>()
        )
    })?;
    out.resize(n, v);
    Ok(out)
}

/// Number of elements of a shape, refusing overflow and absurd sizes.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    let mut n: usize = 1;
    for &d in shape {
        n = n.checked_mul(d)?;
    }
    if n > MAX_ELEMENTS {
        None
    } else {
        Some(n)
    }
}

/// Parse a whole `GraphDef`, every node's attributes included.
pub fn parse_graph(bytes: &[u8]) -> ProtoResult<GraphDef> {
    let mut graph = scan_graph(bytes)?;
    let mut budget = MODEL_BUDGET_BYTES;
    for i in 0..graph.nodes.len() {
        decode_attrs(bytes, &mut graph.nodes[i], &mut budget)
            .map_err(|e| super::proto::ProtoError(format!("node #{}: {}", i, e)))?;
    }
    graph.budget_left = budget;
    Ok(graph)
}

/// Read a `GraphDef`'s nodes (names, ops, inputs) without decoding their attributes: the
/// planner decodes only the nodes its output depends on ([`decode_attrs`]), so a dead
/// branch costs neither memory nor a failure. `budget_left` is the whole budget.
pub fn scan_graph(bytes: &[u8]) -> ProtoResult<GraphDef> {
    let mut r = Reader::new(bytes, "GraphDef");
    let mut graph = GraphDef::default();
    while let Some((field, value)) = r.next_field()? {
        if field == 1 {
            match value {
                Value::Bytes(b) => {
                    let base = b.as_ptr() as usize - bytes.as_ptr() as usize;
                    let node = scan_node(b, base).map_err(|e| {
                        super::proto::ProtoError(format!("node #{}: {}", graph.nodes.len(), e))
                    })?;
                    graph.nodes.push(node);
                }
                other => {
                    return err(format!(
                        "GraphDef.node has wire type {}, expected LEN",
                        other.wire_name()
                    ))
                }
            }
        }
        // 2 = library, 3 = version (deprecated), 4 = versions: not needed to run the graph.
    }
    if graph.nodes.is_empty() {
        return err("GraphDef has no nodes (empty or not a GraphDef)");
    }
    graph.budget_left = MODEL_BUDGET_BYTES;
    Ok(graph)
}

/// Decode the attributes [`scan_graph`] left in `bytes` (the same bytes), charging
/// constants to `budget`. Decoding twice is a no-op.
pub fn decode_attrs(bytes: &[u8], node: &mut NodeDef, budget: &mut usize) -> ProtoResult<()> {
    for (offset, len) in std::mem::take(&mut node.attr_spans) {
        node.attrs
            .push(parse_attr_entry(&bytes[offset..offset + len], budget)?);
    }
    Ok(())
}

fn bytes_of<'a>(value: Value<'a>, what: &'static str) -> ProtoResult<&'a [u8]> {
    match value {
        Value::Bytes(b) => Ok(b),
        other => err(format!(
            "{} has wire type {}, expected LEN",
            what,
            other.wire_name()
        )),
    }
}

fn varint_of(value: Value<'_>, what: &'static str) -> ProtoResult<u64> {
    match value {
        Value::Varint(v) => Ok(v),
        other => err(format!(
            "{} has wire type {}, expected VARINT",
            what,
            other.wire_name()
        )),
    }
}

/// A `NodeDef` at offset `base` of the model: name, op and inputs now, attributes later.
fn scan_node(bytes: &[u8], base: usize) -> ProtoResult<NodeDef> {
    let mut r = Reader::new(bytes, "NodeDef");
    let mut node = NodeDef::default();
    while let Some((field, value)) = r.next_field()? {
        match field {
            1 => node.name = string(bytes_of(value, "NodeDef.name")?, "NodeDef.name")?,
            2 => node.op = string(bytes_of(value, "NodeDef.op")?, "NodeDef.op")?,
            3 => node
                .inputs
                .push(string(bytes_of(value, "NodeDef.input")?, "NodeDef.input")?),
            5 => {
                let entry = bytes_of(value, "NodeDef.attr")?;
                node.attr_spans.push((
                    base + (entry.as_ptr() as usize - bytes.as_ptr() as usize),
                    entry.len(),
                ));
            }
            _ => {} // 4 = device, 6 = experimental debug info
        }
    }
    if node.name.is_empty() {
        return err("NodeDef without a name");
    }
    if node.op.is_empty() {
        return err(format!("node '{}' has no op", node.name));
    }
    Ok(node)
}

/// One `map<string, AttrValue>` entry: `{ string key = 1; AttrValue value = 2; }`.
fn parse_attr_entry(bytes: &[u8], budget: &mut usize) -> ProtoResult<(String, AttrValue)> {
    let mut r = Reader::new(bytes, "NodeDef.attr entry");
    let mut key = String::new();
    let mut value = AttrValue::Other;
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => key = string(bytes_of(v, "attr key")?, "attr key")?,
            2 => value = parse_attr(bytes_of(v, "attr value")?, budget)?,
            _ => {}
        }
    }
    Ok((key, value))
}

fn parse_attr(bytes: &[u8], budget: &mut usize) -> ProtoResult<AttrValue> {
    let mut r = Reader::new(bytes, "AttrValue");
    let mut value = AttrValue::Other;
    // A oneof: if several members appear, the last one wins (protobuf's rule).
    while let Some((field, v)) = r.next_field()? {
        value = match field {
            1 => AttrValue::List(parse_list(bytes_of(v, "AttrValue.list")?)?),
            2 => AttrValue::S(bytes_of(v, "AttrValue.s")?.to_vec()),
            3 => AttrValue::I(varint_of(v, "AttrValue.i")? as i64),
            4 => match v {
                Value::Fixed32(bits) => AttrValue::F(f32::from_bits(bits)),
                other => {
                    return err(format!(
                        "AttrValue.f has wire type {}, expected I32",
                        other.wire_name()
                    ))
                }
            },
            5 => AttrValue::B(varint_of(v, "AttrValue.b")? != 0),
            6 => AttrValue::Type(varint_of(v, "AttrValue.type")? as i64),
            7 => AttrValue::Shape(parse_shape(bytes_of(v, "AttrValue.shape")?)?),
            8 => AttrValue::Tensor(parse_tensor_within(
                bytes_of(v, "AttrValue.tensor")?,
                budget,
            )?),
            _ => AttrValue::Other,
        };
    }
    Ok(value)
}

/// Repeated integers may be *packed* (one LEN field) or not (one VARINT per value);
/// a conforming reader accepts both.
fn push_ints(out: &mut Vec<i64>, value: Value<'_>, what: &'static str) -> ProtoResult<()> {
    match value {
        Value::Varint(v) => out.push(v as i64),
        Value::Bytes(b) => out.extend(packed_varints(b, what)?.into_iter().map(|v| v as i64)),
        other => return err(format!("{} has wire type {}", what, other.wire_name())),
    }
    Ok(())
}

/// Same for floats: packed (LEN) or one I32 field per value.
fn push_floats(out: &mut Vec<f32>, value: Value<'_>, what: &'static str) -> ProtoResult<()> {
    match value {
        Value::Fixed32(bits) => out.push(f32::from_bits(bits)),
        Value::Bytes(b) => out.extend(packed_f32s(b, what)?),
        other => return err(format!("{} has wire type {}", what, other.wire_name())),
    }
    Ok(())
}

fn parse_list(bytes: &[u8]) -> ProtoResult<ListValue> {
    let mut r = Reader::new(bytes, "AttrValue.ListValue");
    let mut list = ListValue::default();
    while let Some((field, v)) = r.next_field()? {
        match field {
            2 => list.s.push(bytes_of(v, "ListValue.s")?.to_vec()),
            3 => push_ints(&mut list.i, v, "ListValue.i")?,
            4 => push_floats(&mut list.f, v, "ListValue.f")?,
            5 => {
                let mut bs = Vec::new();
                push_ints(&mut bs, v, "ListValue.b")?;
                list.b.extend(bs.into_iter().map(|x| x != 0));
            }
            6 => push_ints(&mut list.types, v, "ListValue.type")?,
            _ => {}
        }
    }
    Ok(list)
}

/// `TensorShapeProto`.
pub fn parse_shape(bytes: &[u8]) -> ProtoResult<ShapeProto> {
    let mut r = Reader::new(bytes, "TensorShapeProto");
    let mut dims = Vec::new();
    let mut unknown_rank = false;
    while let Some((field, v)) = r.next_field()? {
        match field {
            2 => {
                // Dim { int64 size = 1; string name = 2; }; proto3 omits size 0.
                let mut d =
                    Reader::new(bytes_of(v, "TensorShapeProto.dim")?, "TensorShapeProto.Dim");
                let mut size = 0i64;
                while let Some((f, dv)) = d.next_field()? {
                    if f == 1 {
                        size = varint_of(dv, "Dim.size")? as i64;
                    }
                }
                if dims.len() == MAX_RANK {
                    return err(format!("shape has more than {} dimensions", MAX_RANK));
                }
                dims.push(size);
            }
            3 => unknown_rank = varint_of(v, "TensorShapeProto.unknown_rank")? != 0,
            _ => {}
        }
    }
    Ok(ShapeProto {
        dims: if unknown_rank { None } else { Some(dims) },
    })
}

/// `TensorProto`: a constant. Values come either as raw little-endian bytes in
/// `tensor_content` (what TensorFlow writes for big tensors) or in the typed repeated
/// fields (`float_val` ...), where fewer values than elements means "repeat the last one"
/// (a single value fills the whole shape) and none means zeros.
pub fn parse_tensor(bytes: &[u8]) -> ProtoResult<TensorProto> {
    parse_tensor_within(bytes, &mut MODEL_BUDGET_BYTES.clone())
}

/// [`parse_tensor`], charging the expanded values' bytes to `budget` (what the graph's
/// constants may still hold) before they are allocated.
pub fn parse_tensor_within(bytes: &[u8], budget: &mut usize) -> ProtoResult<TensorProto> {
    let mut r = Reader::new(bytes, "TensorProto");
    let mut dtype = 0i64;
    let mut shape: Option<Vec<i64>> = None;
    let mut content: Option<&[u8]> = None;
    let mut floats = Vec::new();
    let mut ints = Vec::new();
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => dtype = varint_of(v, "TensorProto.dtype")? as i64,
            2 => {
                shape = parse_shape(bytes_of(v, "TensorProto.tensor_shape")?)?.dims;
                if shape.is_none() {
                    return err("constant tensor with unknown rank");
                }
            }
            4 => content = Some(bytes_of(v, "TensorProto.tensor_content")?),
            5 => push_floats(&mut floats, v, "TensorProto.float_val")?,
            7 => push_ints(&mut ints, v, "TensorProto.int_val")?,
            10 => push_ints(&mut ints, v, "TensorProto.int64_val")?,
            11 => push_ints(&mut ints, v, "TensorProto.bool_val")?,
            _ => {}
        }
    }
    let dims = shape.unwrap_or_default();
    let mut shape = Vec::with_capacity(dims.len());
    for &d in &dims {
        match dim(d) {
            Some(d) => shape.push(d),
            None if d < 0 => return err(format!("constant tensor with dimension {}", d)),
            None => {
                return err(format!(
                    "constant tensor of shape {:?} is too large (a dimension above {})",
                    dims, MAX_ELEMENTS
                ))
            }
        }
    }
    let n = match element_count(&shape) {
        Some(n) => n,
        None => return err(format!("constant tensor of shape {:?} is too large", shape)),
    };
    let bytes_needed = n * if dtype == DT_FLOAT { 4 } else { 8 };
    if bytes_needed > *budget {
        return err(format!(
            "constant tensor of shape {:?} ({} bytes) exceeds what is left of the model's budget of {} bytes for constants",
            shape, bytes_needed, MODEL_BUDGET_BYTES
        ));
    }
    *budget -= bytes_needed;
    let data = match dtype {
        DT_FLOAT => TensorData::F32(match content {
            Some(raw) => {
                if raw.len() != n * 4 {
                    return err(format!(
                        "float tensor {:?} needs {} bytes of tensor_content, has {}",
                        shape,
                        n * 4,
                        raw.len()
                    ));
                }
                packed_f32s(raw, "tensor_content")?
            }
            None => fill(floats, n, 0.0, &shape)?,
        }),
        DT_INT32 | DT_INT64 | DT_BOOL => {
            let size = match dtype {
                DT_INT32 => 4,
                DT_BOOL => 1,
                _ => 8,
            };
            TensorData::I64(match content {
                Some(raw) => {
                    if raw.len() != n * size {
                        return err(format!(
                            "int tensor {:?} needs {} bytes of tensor_content, has {}",
                            shape,
                            n * size,
                            raw.len()
                        ));
                    }
                    let mut out: Vec<i64> = Vec::new();
                    out.try_reserve_exact(n).map_err(|_| {
                        super::proto::ProtoError(format!("{}{} integers", OUT_OF_MEMORY, n))
                    })?;
                    out.extend(raw.chunks_exact(size).map(|c| {
                        if size == 1 {
                            (c[0] != 0) as i64
                        } else if size == 4 {
                            i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64
                        } else {
                            let mut a = [0u8; 8];
                            a.copy_from_slice(c);
                            i64::from_le_bytes(a)
                        }
                    }));
                    out
                }
                // int32 values travel as sign-extended 64-bit varints; truncate back.
                None => {
                    let ints = if dtype == DT_INT32 {
                        ints.into_iter().map(|v| v as i32 as i64).collect()
                    } else if dtype == DT_BOOL {
                        ints.into_iter().map(|v| (v != 0) as i64).collect()
                    } else {
                        ints
                    };
                    fill(ints, n, 0, &shape)?
                }
            })
        }
        other => {
            return err(format!(
                "unsupported tensor dtype {} (float, int32, int64 and bool are supported)",
                other
            ))
        }
    };
    Ok(TensorProto {
        dtype,
        shape,
        data: Rc::new(data),
    })
}

/// Expand repeated values to `n` elements with TensorFlow's rule (repeat the last value).
fn fill<T: Copy>(mut values: Vec<T>, n: usize, zero: T, shape: &[usize]) -> ProtoResult<Vec<T>> {
    if values.len() > n {
        return err(format!(
            "tensor {:?} has {} values for {} elements",
            shape,
            values.len(),
            n
        ));
    }
    let last = values.last().copied().unwrap_or(zero);
    values.try_reserve_exact(n - values.len()).map_err(|_| {
        super::proto::ProtoError(format!("{}a constant of {} values", OUT_OF_MEMORY, n))
    })?;
    values.resize(n, last);
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn len_field(field: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }
    fn shape(dims: &[u64]) -> Vec<u8> {
        let mut s = Vec::new();
        for &d in dims {
            let mut dim = Vec::new();
            if d != 0 {
                varint(8, &mut dim);
                varint(d, &mut dim);
            }
            len_field(2, &dim, &mut s);
        }
        s
    }

    #[test]
    fn tensor_content_and_broadcast() {
        let mut t = vec![0x08, 0x01];
        len_field(2, &shape(&[2, 2]), &mut t);
        let raw: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        len_field(4, &raw, &mut t);
        let p = parse_tensor(&t).unwrap();
        assert_eq!(p.shape, vec![2, 2]);
        assert_eq!(*p.data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]));

        // One float_val broadcast to 3 elements (unpacked I32 field).
        let mut t = vec![0x08, 0x01];
        len_field(2, &shape(&[3]), &mut t);
        t.push(5 << 3 | 5);
        t.extend_from_slice(&0.5f32.to_le_bytes());
        assert_eq!(
            *parse_tensor(&t).unwrap().data,
            TensorData::F32(vec![0.5; 3])
        );

        // Packed int_val with a negative value (10-byte varint), int32.
        let mut t = vec![0x08, 0x03];
        len_field(2, &shape(&[2]), &mut t);
        let mut packed = Vec::new();
        varint(7, &mut packed);
        varint(-1i64 as u64, &mut packed);
        len_field(7, &packed, &mut t);
        assert_eq!(
            *parse_tensor(&t).unwrap().data,
            TensorData::I64(vec![7, -1])
        );

        // Scalar int64 with no value: zero.
        let mut t = vec![0x08, 0x09];
        len_field(2, &[], &mut t);
        let p = parse_tensor(&t).unwrap();
        assert_eq!(p.shape, Vec::<usize>::new());
        assert_eq!(*p.data, TensorData::I64(vec![0]));
    }

    #[test]
    fn bool_tensors_are_zero_and_one() {
        // tensor_content: one byte each, any non-zero byte is true.
        let mut t = vec![0x08, DT_BOOL as u8];
        len_field(2, &shape(&[3]), &mut t);
        len_field(4, &[1, 0, 7], &mut t);
        assert_eq!(
            *parse_tensor(&t).unwrap().data,
            TensorData::I64(vec![1, 0, 1])
        );
        // bool_val (field 11), a scalar; wrong content length is an error.
        let mut t = vec![0x08, DT_BOOL as u8];
        len_field(2, &[], &mut t);
        t.extend_from_slice(&[11 << 3, 1]);
        assert_eq!(*parse_tensor(&t).unwrap().data, TensorData::I64(vec![1]));
        let mut t = vec![0x08, DT_BOOL as u8];
        len_field(2, &shape(&[2]), &mut t);
        len_field(4, &[1], &mut t);
        assert!(parse_tensor(&t).is_err());
    }

    #[test]
    fn bad_tensors_fail() {
        let mut t = vec![0x08, 0x01];
        len_field(2, &shape(&[3]), &mut t);
        len_field(4, &[0u8; 8], &mut t); // 8 bytes for 3 floats
        assert!(parse_tensor(&t).is_err());
        let mut t = vec![0x08, 0x01];
        len_field(2, &shape(&[1 << 40, 1 << 40]), &mut t); // overflow
        assert!(parse_tensor(&t).is_err());
        let t = vec![0x08, 0x07]; // string dtype
        assert!(parse_tensor(&t).is_err());
    }

    /// Dimensions are checked as wasm32 would need them, on every host: nothing above
    /// MAX_ELEMENTS (so nothing of 2^32 or more that `as usize` would truncate on wasm32).
    #[test]
    fn dimensions_are_checked_not_truncated() {
        assert_eq!(dim(224), Some(224));
        assert_eq!(dim(0), Some(0));
        assert_eq!(dim(-1), None);
        assert_eq!(dim(MAX_ELEMENTS as i64 + 1), None);
        assert_eq!(dim((1i64 << 32) + 224), None);
        // A zero-element constant may not carry a huge other dimension either.
        let mut t = vec![0x08, 0x01];
        len_field(2, &shape(&[0, 1 << 30]), &mut t);
        assert!(parse_tensor(&t).unwrap_err().0.contains("too large"));
    }

    /// All constants of a graph share one budget: each below the per-tensor cap, together
    /// above it, is refused before the values are expanded.
    #[test]
    fn constants_share_the_model_budget() {
        let mut t = vec![0x08, 0x01];
        len_field(2, &shape(&[1 << 24]), &mut t); // 64 MiB once expanded, one float_val
        t.push(5 << 3 | 5);
        t.extend_from_slice(&1.0f32.to_le_bytes());
        let mut budget = MODEL_BUDGET_BYTES;
        for _ in 0..4 {
            parse_tensor_within(&t, &mut budget).unwrap();
        }
        assert_eq!(budget, 0);
        assert!(parse_tensor_within(&t, &mut budget)
            .unwrap_err()
            .0
            .contains("budget"));
    }

    #[test]
    fn node_with_attrs() {
        let mut node = Vec::new();
        len_field(1, b"conv", &mut node);
        len_field(2, b"Conv2D", &mut node);
        len_field(3, b"input", &mut node);
        len_field(3, b"w:0", &mut node);
        let mut attr = Vec::new();
        len_field(1, b"padding", &mut attr);
        let mut v = Vec::new();
        len_field(2, b"SAME", &mut v);
        len_field(2, &v, &mut attr);
        len_field(5, &attr, &mut node);
        let mut attr = Vec::new();
        len_field(1, b"strides", &mut attr);
        let mut list = Vec::new();
        len_field(3, &[1, 2, 2, 1], &mut list);
        let mut v = Vec::new();
        len_field(1, &list, &mut v);
        len_field(2, &v, &mut attr);
        len_field(5, &attr, &mut node);
        let mut g = Vec::new();
        len_field(1, &node, &mut g);
        let graph = parse_graph(&g).unwrap();
        let n = &graph.nodes[0];
        assert_eq!((n.name.as_str(), n.op.as_str()), ("conv", "Conv2D"));
        assert_eq!(n.inputs, vec!["input".to_string(), "w:0".to_string()]);
        assert_eq!(n.attr("padding"), Some(&AttrValue::S(b"SAME".to_vec())));
        match n.attr("strides") {
            Some(AttrValue::List(l)) => assert_eq!(l.i, vec![1, 2, 2, 1]),
            other => panic!("{:?}", other),
        }
        // Every truncation of a valid graph is an error or a smaller valid graph, never a panic.
        for cut in 0..g.len() {
            let _ = parse_graph(&g[..cut]);
        }
    }

    /// Fuzz-ish: random bytes, and random mutations of a valid graph, never panic.
    #[test]
    fn random_bytes_never_panic() {
        let mut state: u64 = 0x9e3779b97f4a7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20000 {
            let len = (next() % 200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && !bytes.is_empty() {
                bytes[0] = 0x0a; // GraphDef.node, LEN: exercise the nested readers
            }
            let _ = parse_graph(&bytes);
            let _ = parse_tensor(&bytes);
        }
    }
}
