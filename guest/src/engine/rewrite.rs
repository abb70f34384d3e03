//! Pattern rewrites on the live graph, between [`super::graph`] and [`super::lower`]: the
//! activations Keras writes out as several ops become one node, which the lowering then
//! fuses into the step before, as it fuses `Relu6` (see `lower/elementwise.rs`).
//!
//! | what TensorFlow wrote (either operand order)          | becomes           | written by |
//! | ----------------------------------------------------- | ----------------- | ---------- |
//! | `IdentityN(y, x, beta)` with outputs 1.. unread       | `Identity(y)`     | `tf.custom_gradient` around `tf.nn.silu` |
//! | `Mul(x, Sigmoid(x))`, `Mul(x, Sigmoid(Mul(1.0, x)))`  | `_Swish(x)`       | `tf.nn.silu`, Keras' `swish` |
//! | `RealDiv(Relu6(AddV2(x, 3)), 6)`, `Mul(Relu6(AddV2(x, 3)), 1/6)` | `_HardSigmoid(x)` | Keras 3's `hard_sigmoid`, tf_keras' MobileNetV3 |
//! | `Mul(x, _HardSigmoid(x))`                             | `_HardSwish(x)`   | Keras 3's `hard_swish`, tf_keras' MobileNetV3 |
//!
//! A lone `Sigmoid` needs no rewrite: its lowering fuses it like `Relu6`. The node that
//! ends a pattern keeps its name (what reads it still finds it); the inner nodes lose
//! their last reader and drop out when the graph is ordered again. A pattern is left alone
//! (and runs as the ops TensorFlow wrote, to the same values) when an inner node has
//! another reader (a `Sigmoid` the graph also outputs), when the constants differ (a
//! swish with `beta` 2, `relu6(x + 2)`), or when the gate reads another tensor than the
//! one it multiplies. Whether the new node then runs inside the step before is the
//! lowering's call (`Builder::fusable`): not when `x` has other readers, or when that step
//! already has an activation.
//!
//! A second pass, [`pads`], runs first: `Pad(x, const paddings)` read only by a VALID
//! `Conv2D`/`DepthwiseConv2dNative` (Keras' `ZeroPadding2D`) becomes that convolution with
//! `padding="EXPLICIT"` reading `x`, so no padded copy is made; see [`pads`] for the cases
//! it leaves alone.

use super::graph::{data_inputs, split_ref};
use super::graphdef::{AttrValue, GraphDef, ListValue, NodeDef, TensorData};
use std::collections::HashMap;

/// The ops this pass introduces, each lowered by a function of `lower/elementwise.rs`.
/// They are not TensorFlow ops: a graph that names one itself is refused as unsupported.
pub const SWISH: &str = "_Swish";
pub const HARD_SIGMOID: &str = "_HardSigmoid";
pub const HARD_SWISH: &str = "_HardSwish";

/// The graph being rewritten: its nodes by name, and how many readers each output has.
struct View<'a> {
    graph: &'a GraphDef,
    index: HashMap<&'a str, usize>,
    readers: HashMap<(&'a str, usize), usize>,
}

impl<'a> View<'a> {
    fn new(graph: &'a GraphDef, order: &[usize], output: &'a str) -> View<'a> {
        let mut readers: HashMap<(&str, usize), usize> = HashMap::new();
        for &i in order {
            for r in data_inputs(&graph.nodes[i]) {
                *readers.entry(split_ref(r)).or_insert(0) += 1;
            }
        }
        *readers.entry((output, 0)).or_insert(0) += 1;
        let index = order
            .iter()
            .map(|&i| (graph.nodes[i].name.as_str(), i))
            .collect();
        View {
            graph,
            index,
            readers,
        }
    }

    /// The node a reference reads output 0 of, if only the pattern reads it.
    fn private(&self, r: &str) -> Option<&'a NodeDef> {
        let (name, k) = split_ref(r);
        if k != 0 || self.readers.get(&(name, 0)).copied() != Some(1) {
            return None;
        }
        self.index.get(name).map(|&i| &self.graph.nodes[i])
    }

    /// The value of a float constant of one element (a scalar, or `[1]`).
    fn scalar(&self, r: &str) -> Option<f32> {
        let (name, k) = split_ref(r);
        let n = &self.graph.nodes[*self.index.get(name)?];
        if k != 0 || n.op != "Const" {
            return None;
        }
        match n.attr("value") {
            Some(AttrValue::Tensor(t)) => match &*t.data {
                TensorData::F32(v) if v.len() == 1 => Some(v[0]),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The node's two data inputs, if it has exactly two.
fn two(n: &NodeDef) -> Option<[&str; 2]> {
    let mut it = data_inputs(n);
    let pair = [it.next()?, it.next()?];
    match it.next() {
        None => Some(pair),
        Some(_) => None,
    }
}

fn one(n: &NodeDef) -> Option<&str> {
    let mut it = data_inputs(n);
    let x = it.next()?;
    match it.next() {
        None => Some(x),
        Some(_) => None,
    }
}

/// Two references to the same tensor (`x` and `x:0` alike).
fn same(a: &str, b: &str) -> bool {
    split_ref(a) == split_ref(b)
}

/// `x` when `r` is `x` scaled by the constant `c` (`Mul(c, x)` or `Mul(x, c)`, read by the
/// pattern alone), or is `x` itself when `c` is 1.
fn times<'a>(v: &View<'a>, r: &'a str, c: f32) -> Option<&'a str> {
    if let Some(n) = v.private(r) {
        if n.op == "Mul" {
            let [p, q] = two(n)?;
            if v.scalar(p) == Some(c) {
                return Some(q);
            }
            if v.scalar(q) == Some(c) {
                return Some(p);
            }
        }
    }
    if c == 1.0 {
        Some(r)
    } else {
        None
    }
}

/// `m` as a hard sigmoid, `relu6(x + 3) / 6` or `relu6(x + 3) * (1/6)`: its `x`.
fn hard_sigmoid<'a>(v: &View<'a>, m: &'a NodeDef) -> Option<&'a str> {
    let [p, q] = two(m)?;
    let h = match m.op.as_str() {
        "RealDiv" if v.scalar(q) == Some(6.0) => p,
        "Mul" if v.scalar(q) == Some(1.0 / 6.0) => p,
        "Mul" if v.scalar(p) == Some(1.0 / 6.0) => q,
        _ => return None,
    };
    let relu6 = v.private(h).filter(|n| n.op == "Relu6")?;
    let add = v
        .private(one(relu6)?)
        .filter(|n| n.op == "AddV2" || n.op == "Add")?;
    let [a, b] = two(add)?;
    if v.scalar(b) == Some(3.0) {
        Some(a)
    } else if v.scalar(a) == Some(3.0) {
        Some(b)
    } else {
        None
    }
}

/// `m = Mul(x, gate)` as a swish (`gate = Sigmoid(x)`, maybe of `1.0 * x`) or a hard swish
/// (`gate = _HardSigmoid(x)`, rewritten already): the new op and `x`.
fn gated<'a>(v: &View<'a>, m: &'a NodeDef) -> Option<(&'static str, &'a str)> {
    if m.op != "Mul" {
        return None;
    }
    let [p, q] = two(m)?;
    for (x, gate) in [(p, q), (q, p)] {
        let g = match v.private(gate) {
            Some(g) => g,
            None => continue,
        };
        let input = match one(g) {
            Some(i) => i,
            None => continue,
        };
        match g.op.as_str() {
            "Sigmoid" if times(v, input, 1.0).map_or(false, |y| same(y, x)) => {
                return Some((SWISH, x))
            }
            HARD_SIGMOID if same(input, x) => return Some((HARD_SWISH, x)),
            _ => {}
        }
    }
    None
}

/// `n` as an `IdentityN` of which only output 0 is read: the `Identity` it amounts to.
fn lone_identity_n<'a>(v: &View<'a>, n: &'a NodeDef) -> Option<&'a str> {
    if n.op != "IdentityN" {
        return None;
    }
    let k = data_inputs(n).count();
    if (1..k).any(|i| v.readers.contains_key(&(n.name.as_str(), i))) {
        return None;
    }
    data_inputs(n).next()
}

/// Make every reader of an `Identity` (a chain of them) read the tensor it passes on, so
/// the `Identity` itself drops out, unless the host reads it. tf_keras writes its inference
/// `Dropout` as one, between a block's last batch norm and the residual `Add`: read
/// through it, the `Add` fuses into the convolution as it does in the Keras 3 graph (a
/// renaming cannot be fused into: `Builder::fusable` wants the producing node's name).
/// Returns how many inputs were redirected.
fn read_through_identities(graph: &mut GraphDef, order: &[usize], output: &str) -> usize {
    // Each live Identity's source, followed to the end of its chain (order is input-first,
    // so an Identity's own input is resolved before it).
    let mut source: HashMap<String, String> = HashMap::new();
    for &i in order {
        let n = &graph.nodes[i];
        if n.op != "Identity" || n.name == output {
            continue;
        }
        if let Some(x) = one(n) {
            let x = match source.get(split_ref(x).0) {
                Some(root) if split_ref(x).1 == 0 => root.clone(),
                _ => x.to_string(),
            };
            source.insert(n.name.clone(), x);
        }
    }
    let mut done = 0;
    for &i in order {
        for r in graph.nodes[i].inputs.iter_mut() {
            if r.starts_with('^') {
                continue;
            }
            let (name, k) = split_ref(r);
            if k != 0 {
                continue;
            }
            if let Some(x) = source.get(name) {
                *r = x.clone();
                done += 1;
            }
        }
    }
    done
}

/// `n` reading `x` alone (its control inputs kept), as `op`.
fn rewritten(n: &NodeDef, op: &str, x: &str) -> NodeDef {
    let mut inputs = vec![x.to_string()];
    inputs.extend(n.inputs.iter().filter(|i| i.starts_with('^')).cloned());
    NodeDef {
        name: n.name.clone(),
        op: op.to_string(),
        inputs,
        attrs: n.attrs.clone(),
        attr_spans: Vec::new(),
    }
}

/// Rewrite the patterns above among the live nodes (`order`, input-first) of `graph`, whose
/// node `output` the host reads. Returns how many nodes were rewritten; when some were,
/// the caller orders the graph again so the nodes they absorbed drop out.
///
/// Three sweeps, each matching on the graph the one before left: `IdentityN` first (it
/// reads the swish's input, which must have no reader left but the swish for the swish to
/// fuse into the step computing it), then hard sigmoids, then the gated products (a hard
/// swish's gate is a hard sigmoid). No node takes part in two patterns of one sweep.
/// Between the first two, readers of an `Identity` read its input instead
/// ([`read_through_identities`]).
pub fn activations(graph: &mut GraphDef, order: &[usize], output: &str) -> usize {
    type Match = for<'a> fn(&View<'a>, &'a NodeDef) -> Option<(&'static str, &'a str)>;
    let sweeps: [Match; 3] = [
        |v, n| lone_identity_n(v, n).map(|y| ("Identity", y)),
        |v, n| hard_sigmoid(v, n).map(|x| (HARD_SIGMOID, x)),
        gated,
    ];
    let mut done = 0;
    for (k, sweep) in sweeps.into_iter().enumerate() {
        if k == 1 {
            done += read_through_identities(graph, order, output);
        }
        let found: Vec<(usize, NodeDef)> = {
            let v = View::new(graph, order, output);
            order
                .iter()
                .filter_map(|&i| {
                    let n = &graph.nodes[i];
                    sweep(&v, n).map(|(op, x)| (i, rewritten(n, op, x)))
                })
                .collect()
        };
        done += found.len();
        for (i, n) in found {
            graph.nodes[i] = n;
        }
    }
    done
}

// ------------------------------------------------------------------------ pad folding
/// `Pad(x, paddings)` whose only reader is a `Conv2D` or `DepthwiseConv2dNative` with
/// `padding="VALID"` (Keras' `ZeroPadding2D` before a stride-2 convolution): that
/// convolution reading `x` with `padding="EXPLICIT"` and the Pad's spatial paddings as its
/// `explicit_paddings`, so the padded copy of the feature map is never made (`Pad` pads
/// with zeros, and a VALID window over zeros adds `0 * w`: the same values). Left alone:
/// a Pad with another reader or a control input, non-constant paddings or any on the
/// batch or channels, a SAME or EXPLICIT convolution, a pool (`AvgPool` would count the
/// zeros, which an explicit window does not), a non-NHWC convolution. `PadV2` (a chosen
/// constant) is not an op the engine runs. Returns how many convolutions were rewritten.
pub fn pads(graph: &mut GraphDef, order: &[usize], output: &str) -> usize {
    let found: Vec<(usize, NodeDef)> = {
        let v = View::new(graph, order, output);
        order
            .iter()
            .filter_map(|&i| folded_pad(&v, &graph.nodes[i]).map(|n| (i, n)))
            .collect()
    };
    let done = found.len();
    for (i, n) in found {
        graph.nodes[i] = n;
    }
    done
}

/// The largest padding folded on a side (the lowering's limit for `explicit_paddings`).
const MAX_FOLDED_PAD: i64 = 1 << 20;

/// `conv` rewritten to read the Pad before it, when the pattern above holds.
fn folded_pad(v: &View<'_>, conv: &NodeDef) -> Option<NodeDef> {
    let text = |key: &str| match conv.attr(key) {
        Some(AttrValue::S(s)) => Some(s.as_slice()),
        _ => None,
    };
    if !matches!(conv.op.as_str(), "Conv2D" | "DepthwiseConv2dNative")
        || text("padding") != Some(b"VALID".as_slice())
        || !matches!(text("data_format"), None | Some(b"NHWC"))
    {
        return None;
    }
    let [p, filter] = two(conv)?;
    let pad = v.private(p).filter(|n| n.op == "Pad")?;
    if pad.inputs.iter().any(|i| i.starts_with('^')) {
        return None;
    }
    let [x, paddings] = two(pad)?;
    let (name, k) = split_ref(paddings);
    let c = &v.graph.nodes[*v.index.get(name)?];
    let p = match (k, c.op.as_str(), c.attr("value")) {
        (0, "Const", Some(AttrValue::Tensor(t))) => match &*t.data {
            TensorData::I64(p) if p.len() == 8 => p.clone(),
            _ => return None,
        },
        _ => return None,
    };
    if p[..2] != [0, 0] || p[6..] != [0, 0] || p.iter().any(|e| !(0..=MAX_FOLDED_PAD).contains(e)) {
        return None;
    }
    let mut inputs = vec![x.to_string(), filter.to_string()];
    inputs.extend(conv.inputs.iter().filter(|i| i.starts_with('^')).cloned());
    let mut attrs: Vec<(String, AttrValue)> = conv
        .attrs
        .iter()
        .filter(|(key, _)| key != "padding" && key != "explicit_paddings")
        .cloned()
        .collect();
    attrs.push(("padding".into(), AttrValue::S(b"EXPLICIT".to_vec())));
    let list = ListValue {
        i: p,
        ..ListValue::default()
    };
    attrs.push(("explicit_paddings".into(), AttrValue::List(list)));
    Some(NodeDef {
        name: conv.name.clone(),
        op: conv.op.clone(),
        inputs,
        attrs,
        attr_spans: Vec::new(),
    })
}
