//! From a `GraphDef` to an execution plan, and running it.
//!
//! Loading does all the thinking once, so that running is a flat loop over steps:
//!
//! 1. **Order.** Walk back from the output node through data inputs (depth-first, with an
//!    explicit stack so deep graphs cannot overflow ours) to get the nodes it needs in an
//!    order where every input comes first. Meeting a node that is still "in progress" means
//!    the graph has a cycle, which is reported with its path.
//! 2. **Shapes.** The input shape is fixed by the `Placeholder`, so every tensor's shape is
//!    known at load time. `Shape` becomes a constant, `Reshape`/`Squeeze`/`Identity` become
//!    renamings of a buffer (no copy, no step), and shape mistakes in the graph are load
//!    errors rather than crashes in the middle of an inference.
//! 3. **Fusion.** Inference-mode batch normalisation is `x * s + t` per channel: right after
//!    a convolution it is folded into the weights and bias (`w * s`, `b * s + t`); a
//!    following `BiasAdd` joins the bias and a `Relu6` becomes the step's activation.
//!    EfficientNet-Lite's conv → BN → ReLU6 triple runs as one pass over memory.
//! 4. **Memory.** Each step writes a fresh logical buffer. A buffer is dead after its last
//!    reader has run, so logical buffers are mapped onto a few physical *slots* (a linear
//!    scan, best fit by size) that are allocated once and reused by every inference. The
//!    weights stay resident in the steps.

use super::graphdef::{self, element_count, AttrValue, GraphDef, NodeDef, TensorData, DT_FLOAT, MAX_ELEMENTS};
use super::kernels;
use super::ops::{self, Act, Padding, Window};
use crate::abi::{ErrorCode, GuestResult};
use std::collections::HashMap;
use std::rc::Rc;

/// Step-through hooks (`step_info`, `run_to_step`): where each step's tensors live.
mod steps;

fn bad<T>(message: String) -> GuestResult<T> {
    Err((ErrorCode::BadModel, message))
}

/// `n` zeros (a bias the graph did not give), refusing absurd sizes and answering
/// OutOfMemory instead of an aborting allocation.
fn zeros(node: &NodeDef, n: usize) -> GuestResult<Vec<f32>> {
    if n > MAX_ELEMENTS {
        return bad(format!("{}: {} output channels is too many", describe(node), n));
    }
    graphdef::try_filled(n, 0.0).map_err(|m| (ErrorCode::OutOfMemory, format!("{}: {}", describe(node), m)))
}

/// The ops this engine runs (`Placeholder` and `Const` included).
pub const SUPPORTED_OPS: &[&str] = &[
    "Placeholder", "Const", "Identity", "Conv2D", "DepthwiseConv2dNative", "FusedBatchNorm",
    "FusedBatchNormV3", "BiasAdd", "Add", "AddV2", "Relu", "Relu6", "AvgPool", "MaxPool", "Mean",
    "Squeeze", "Reshape", "Shape", "MatMul", "Softmax", "Pad",
];

/// A tensor while the plan is being built: a constant, or a buffer some step will fill.
#[derive(Clone, Debug)]
enum Val {
    Const { shape: Vec<usize>, data: Rc<TensorData> },
    Dyn { shape: Vec<usize>, buf: usize },
}

impl Val {
    fn shape(&self) -> &[usize] {
        match self {
            Val::Const { shape, .. } | Val::Dyn { shape, .. } => shape,
        }
    }
}

/// Where a step reads an input: a float constant of the model, or an activation slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    Const(usize),
    Buf(usize),
}

/// What a step computes. Weights live here, already in the layout the kernel wants.
#[derive(Debug)]
pub enum Kind {
    /// `residual`: a skip connection's `Add` fused in; the step's input 1 is the skip tensor.
    Conv { win: Window, w: Vec<f32>, cout: usize, bias: Vec<f32>, act: Act, packed: Option<kernels::Packed>, residual: bool },
    Depthwise { win: Window, w: Vec<f32>, mult: usize, bias: Vec<f32>, act: Act },
    Pool { win: Window, max: bool },
    Affine { channels: usize, scale: Option<Vec<f32>>, shift: Option<Vec<f32>>, act: Act },
    Add { a: Vec<usize>, b: Vec<usize>, out: Vec<usize>, act: Act },
    /// `y = a @ B + bias`: `w` is B as `[k, n]` when it is a constant, else B is input 1.
    MatMul { m: usize, k: usize, n: usize, w: Option<Vec<f32>>, bias: Vec<f32>, act: Act, trans_a: bool, trans_b: bool },
    Mean { shape: Vec<usize>, reduce: Vec<bool> },
    Softmax { classes: usize },
    Pad { shape: Vec<usize>, pads: Vec<(usize, usize)>, out: Vec<usize> },
}

impl Kind {
    fn act_mut(&mut self) -> Option<&mut Act> {
        match self {
            Kind::Conv { act, .. } | Kind::Depthwise { act, .. } | Kind::Affine { act, .. } | Kind::Add { act, .. } | Kind::MatMul { act, .. } => Some(act),
            _ => None,
        }
    }

    /// A short name for profiles: the kernel shape, e.g. `Conv 1x1`, `Depthwise 5x5/2`.
    fn label(&self) -> String {
        fn window(name: &str, w: &Window) -> String {
            let stride = if w.sh == 1 && w.sw == 1 { String::new() } else { format!("/{}", w.sh) };
            format!("{} {}x{}{}", name, w.kh, w.kw, stride)
        }
        match self {
            Kind::Conv { win, .. } => window("Conv", win),
            Kind::Depthwise { win, .. } => window("Depthwise", win),
            Kind::Pool { win, max } => window(if *max { "MaxPool" } else { "AvgPool" }, win),
            Kind::Affine { .. } => "Affine".into(),
            Kind::Add { .. } => "Add".into(),
            Kind::MatMul { .. } => "MatMul".into(),
            Kind::Mean { .. } => "Mean".into(),
            Kind::Softmax { .. } => "Softmax".into(),
            Kind::Pad { .. } => "Pad".into(),
        }
    }

    /// Multiply-adds per run: what a kernel's speed is measured against.
    fn macs(&self) -> u64 {
        let m = |v: usize| v as u64;
        match self {
            Kind::Conv { win, cout, .. } => m(win.n * win.oh * win.ow) * m(win.kh * win.kw * win.c) * m(*cout),
            Kind::Depthwise { win, mult, .. } => m(win.n * win.oh * win.ow * win.c * mult) * m(win.kh * win.kw),
            Kind::MatMul { m: rows, k, n, .. } => m(*rows) * m(*k) * m(*n),
            _ => 0,
        }
    }

    fn weight_count(&self) -> usize {
        match self {
            Kind::Conv { w, bias, packed, .. } => w.len() + bias.len() + packed.as_ref().map_or(0, |p| p.weight_count()),
            Kind::Depthwise { w, bias, .. } => w.len() + bias.len(),
            Kind::MatMul { w, bias, .. } => w.as_ref().map_or(0, |w| w.len()) + bias.len(),
            Kind::Affine { scale, shift, .. } => scale.as_ref().map_or(0, |s| s.len()) + shift.as_ref().map_or(0, |s| s.len()),
            _ => 0,
        }
    }
}

/// One step of the plan.
#[derive(Debug)]
pub struct Step {
    /// The graph node whose value this step produces (after fusion, the last one fused).
    pub node: String,
    pub kind: Kind,
    pub inputs: Vec<Src>,
    /// Number of values each input holds.
    pub in_lens: Vec<usize>,
    pub out: usize,
    pub out_len: usize,
    /// Shapes of the inputs and of the output, for the step-through view (`step_info`).
    pub in_shapes: Vec<Vec<usize>>,
    pub out_shape: Vec<usize>,
}

/// What `model_info` reports.
#[derive(Clone, Debug, Default)]
pub struct ModelInfo {
    pub node_count: usize,
    pub op_counts: Vec<(String, usize)>,
    pub input_name: String,
    pub input_shape: Vec<usize>,
    pub output_name: String,
    pub output_shape: Vec<usize>,
    pub weight_bytes: usize,
    pub activation_bytes: usize,
    pub steps: usize,
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_dims(d: &[usize]) -> String {
    format!("[{}]", d.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","))
}

impl ModelInfo {
    /// A one-line JSON summary (hand-written: no serde in the guest).
    pub fn to_json(&self) -> String {
        let ops: Vec<String> = self.op_counts.iter().map(|(k, v)| format!("{}:{}", json_string(k), v)).collect();
        format!(
            "{{\"nodes\":{},\"ops\":{{{}}},\"input\":{},\"input_shape\":{},\"output\":{},\"output_shape\":{},\"output_len\":{},\"weight_bytes\":{},\"activation_bytes\":{},\"steps\":{},\"kernels\":{}}}",
            self.node_count,
            ops.join(","),
            json_string(&self.input_name),
            json_dims(&self.input_shape),
            json_string(&self.output_name),
            json_dims(&self.output_shape),
            self.output_shape.iter().product::<usize>(),
            self.weight_bytes,
            self.activation_bytes,
            self.steps,
            json_string(kernels::NAME),
        )
    }
}

/// A loaded model: weights, the plan, and the activation slots, ready to run many times.
#[derive(Debug)]
pub struct Model {
    pub info: ModelInfo,
    /// Float constants steps read directly, shared with the parsed graph (never copied).
    consts: Vec<Rc<TensorData>>,
    steps: Vec<Step>,
    slots: Vec<Vec<f32>>,
    input_slot: usize,
    input_len: usize,
    output: Src,
    output_len: usize,
}

/// `"name:1"` -> `("name", 1)`; `"name"` -> `("name", 0)`.
fn split_ref(r: &str) -> (&str, usize) {
    if let Some(pos) = r.rfind(':') {
        if let Ok(i) = r[pos + 1..].parse::<usize>() {
            return (&r[..pos], i);
        }
    }
    (r, 0)
}

/// Inputs that carry data (`^name` is a control dependency: ordering only).
fn data_inputs(node: &NodeDef) -> impl Iterator<Item = &str> {
    node.inputs.iter().filter(|i| !i.starts_with('^')).map(|i| i.as_str())
}

/// The output a classifier graph means: the last `Softmax`, followed through any
/// `Reshape`/`Identity`/`Squeeze` that consumes it (TF-slim's `Predictions/Reshape_1`).
fn default_output(graph: &GraphDef) -> GuestResult<String> {
    let mut current = match graph.nodes.iter().rev().find(|n| n.op == "Softmax") {
        Some(n) => n.name.clone(),
        None => return bad("the graph has no Softmax node; name the output node explicitly (load_model_with_output)".into()),
    };
    // The last Reshape/Identity/Squeeze reading each node, found in one pass: following a
    // chain of them is then linear in its length (a reverse scan per link was quadratic).
    let mut follower: HashMap<&str, &NodeDef> = HashMap::new();
    for n in &graph.nodes {
        if matches!(n.op.as_str(), "Reshape" | "Identity" | "Squeeze") {
            if let Some(i) = data_inputs(n).next() {
                follower.insert(split_ref(i).0, n);
            }
        }
    }
    for _ in 0..graph.nodes.len() {
        match follower.get(current.as_str()) {
            Some(n) if n.name != current => current = n.name.clone(),
            _ => break,
        }
    }
    Ok(current)
}

/// Depth-first order of the nodes `out` depends on, inputs first; errors on a cycle.
fn order(graph: &GraphDef, index: &HashMap<&str, usize>, out: usize) -> GuestResult<Vec<usize>> {
    const NEW: u8 = 0;
    const ACTIVE: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; graph.nodes.len()];
    let mut order = Vec::new();
    // (node, how many of its inputs were already visited)
    let mut stack: Vec<(usize, usize)> = vec![(out, 0)];
    state[out] = ACTIVE;
    while let Some(top) = stack.last_mut() {
        let node = &graph.nodes[top.0];
        match data_inputs(node).nth(top.1) {
            Some(input) => {
                top.1 += 1;
                let name = split_ref(input).0;
                let i = match index.get(name) {
                    Some(&i) => i,
                    None => return bad(format!("node '{}' ({}): input '{}' is not a node of the graph", node.name, node.op, input)),
                };
                match state[i] {
                    NEW => {
                        state[i] = ACTIVE;
                        stack.push((i, 0));
                    }
                    ACTIVE => {
                        let start = stack.iter().position(|&(n, _)| n == i).unwrap_or(0);
                        let mut path: Vec<&str> = stack[start..].iter().map(|&(n, _)| graph.nodes[n].name.as_str()).collect();
                        path.push(name);
                        return bad(format!("the graph has a cycle: {}", path.join(" -> ")));
                    }
                    _ => {}
                }
            }
            None => {
                state[top.0] = DONE;
                order.push(top.0);
                stack.pop();
            }
        }
    }
    Ok(order)
}

// ------------------------------------------------------------------------------ attrs
fn attr_ints(node: &NodeDef, key: &str) -> Option<Vec<i64>> {
    match node.attr(key) {
        Some(AttrValue::List(l)) => Some(l.i.clone()),
        _ => None,
    }
}

fn attr_str(node: &NodeDef, key: &str) -> Option<String> {
    match node.attr(key) {
        Some(AttrValue::S(s)) => Some(String::from_utf8_lossy(s).into_owned()),
        _ => None,
    }
}

fn attr_bool(node: &NodeDef, key: &str) -> Option<bool> {
    match node.attr(key) {
        Some(AttrValue::B(b)) => Some(*b),
        _ => None,
    }
}

fn describe(node: &NodeDef) -> String {
    format!("node '{}' ({})", node.name, node.op)
}

/// NHWC only, dilations of 1 only: anything else is refused by name.
fn check_nhwc(node: &NodeDef) -> GuestResult<()> {
    if let Some(f) = attr_str(node, "data_format") {
        if f != "NHWC" {
            return bad(format!("{}: data_format {} is not supported (NHWC only)", describe(node), f));
        }
    }
    if let Some(d) = attr_ints(node, "dilations") {
        if d.iter().any(|&v| v != 1) {
            return bad(format!("{}: dilations {:?} are not supported (only 1)", describe(node), d));
        }
    }
    Ok(())
}

/// A `[1, h, w, 1]` list attribute (strides, ksize).
fn spatial(node: &NodeDef, key: &str) -> GuestResult<(usize, usize)> {
    match attr_ints(node, key) {
        Some(v) if v.len() == 4 && v[0] == 1 && v[3] == 1 && v[1] >= 1 && v[2] >= 1 && v[1] <= 1 << 16 && v[2] <= 1 << 16 => {
            Ok((v[1] as usize, v[2] as usize))
        }
        Some(v) => bad(format!("{}: {} {:?} is not supported (expected [1, h, w, 1])", describe(node), key, v)),
        None => bad(format!("{}: missing attr '{}'", describe(node), key)),
    }
}

fn padding(node: &NodeDef) -> GuestResult<Padding> {
    match attr_str(node, "padding").as_deref() {
        Some("SAME") => Ok(Padding::Same),
        Some("VALID") => Ok(Padding::Valid),
        Some(other) => bad(format!("{}: padding {} is not supported (SAME or VALID)", describe(node), other)),
        None => bad(format!("{}: missing attr 'padding'", describe(node))),
    }
}

// ------------------------------------------------------------------------------ builder
struct Builder<'g> {
    vals: HashMap<&'g str, Val>,
    consumers: HashMap<&'g str, usize>,
    steps: Vec<Step>,
    consts: Vec<Rc<TensorData>>,
    buf_len: Vec<usize>,
    input: Option<(String, usize, Vec<usize>)>,
    /// Bytes left of the model's budget (see `graphdef::MODEL_BUDGET_BYTES`).
    budget: usize,
}

/// Take `floats` f32 from the model's byte budget, or refuse the model.
fn charge(budget: &mut usize, node: &NodeDef, floats: usize) -> GuestResult<()> {
    match floats.checked_mul(4) {
        Some(bytes) if bytes <= *budget => {
            *budget -= bytes;
            Ok(())
        }
        _ => bad(format!(
            "{}: the model needs more than its budget of {} MiB for weights and activations",
            describe(node),
            graphdef::MODEL_BUDGET_BYTES >> 20
        )),
    }
}

/// Check that `floats` f32 can be allocated now (then give them back), before a copy whose
/// allocation cannot fail cleanly (a transpose, a packing).
fn probe(node: &NodeDef, floats: usize) -> GuestResult<()> {
    let mut v: Vec<f32> = Vec::new();
    v.try_reserve_exact(floats)
        .map_err(|_| (ErrorCode::OutOfMemory, format!("{}: cannot allocate {} floats of weights", describe(node), floats)))
}

impl<'g> Builder<'g> {
    /// `n` zeros charged to the budget.
    fn zeros(&mut self, node: &NodeDef, n: usize) -> GuestResult<Vec<f32>> {
        charge(&mut self.budget, node, n)?;
        zeros(node, n)
    }

    /// A copy of constant values the step will change (folding), charged to the budget.
    fn copy(&mut self, node: &NodeDef, values: &[f32]) -> GuestResult<Vec<f32>> {
        charge(&mut self.budget, node, values.len())?;
        let mut v: Vec<f32> = Vec::new();
        v.try_reserve_exact(values.len())
            .map_err(|_| (ErrorCode::OutOfMemory, format!("{}: cannot copy {} floats of weights", describe(node), values.len())))?;
        v.extend_from_slice(values);
        Ok(v)
    }
}

fn const_f32<'a>(node: &NodeDef, v: &'a Val, what: &str) -> GuestResult<&'a [f32]> {
    match v {
        Val::Const { data, .. } => match &**data {
            TensorData::F32(d) => Ok(d),
            TensorData::I64(_) => bad(format!("{}: {} must be a float constant", describe(node), what)),
        },
        Val::Dyn { .. } => bad(format!("{}: {} must be a constant (a frozen graph), not computed", describe(node), what)),
    }
}

fn const_ints(node: &NodeDef, v: &Val, what: &str) -> GuestResult<Vec<i64>> {
    match v {
        Val::Const { data, .. } => match &**data {
            TensorData::I64(d) => Ok(d.clone()),
            TensorData::F32(_) => bad(format!("{}: {} must be an integer constant", describe(node), what)),
        },
        Val::Dyn { .. } => bad(format!("{}: {} must be a constant", describe(node), what)),
    }
}

fn arity(node: &NodeDef, ins: &[Val], n: usize) -> GuestResult<()> {
    if ins.len() != n {
        return bad(format!("{}: expected {} data inputs, got {}", describe(node), n, ins.len()));
    }
    Ok(())
}

fn rank(node: &NodeDef, v: &Val, r: usize, what: &str) -> GuestResult<()> {
    if v.shape().len() != r {
        return bad(format!("{}: {} must have rank {}, has shape {:?}", describe(node), what, r, v.shape()));
    }
    Ok(())
}

/// Normalise an axis (negative counts from the end).
fn axis(node: &NodeDef, a: i64, rank: usize) -> GuestResult<usize> {
    let r = rank as i64;
    if a < -r || a >= r {
        return bad(format!("{}: axis {} is out of range for rank {}", describe(node), a, rank));
    }
    Ok(((a + r) % r.max(1)) as usize)
}

impl<'g> Builder<'g> {
    fn new_buf(&mut self, node: &NodeDef, shape: &[usize]) -> GuestResult<(usize, usize)> {
        let len = match element_count(shape) {
            Some(n) => n,
            None => return bad(format!("{}: tensor of shape {:?} is too large", describe(node), shape)),
        };
        self.buf_len.push(len);
        Ok((self.buf_len.len() - 1, len))
    }

    fn src(&mut self, node: &NodeDef, v: &Val) -> GuestResult<(Src, usize)> {
        match v {
            Val::Dyn { buf, .. } => Ok((Src::Buf(*buf), self.buf_len[*buf])),
            Val::Const { data, .. } => {
                let n = const_f32(node, v, "a data input")?.len();
                self.consts.push(data.clone());
                Ok((Src::Const(self.consts.len() - 1), n))
            }
        }
    }

    fn push_step(&mut self, node: &NodeDef, kind: Kind, ins: &[&Val], shape: Vec<usize>) -> GuestResult<Val> {
        let mut inputs = Vec::new();
        let mut in_lens = Vec::new();
        let in_shapes = ins.iter().map(|v| v.shape().to_vec()).collect();
        for v in ins {
            let (s, n) = self.src(node, v)?;
            inputs.push(s);
            in_lens.push(n);
        }
        let (buf, out_len) = self.new_buf(node, &shape)?;
        self.steps.push(Step { node: node.name.clone(), kind, inputs, in_lens, out: buf, out_len, in_shapes, out_shape: shape.clone() });
        Ok(Val::Dyn { shape, buf })
    }

    /// The step that produced `v`, if its result may be changed in place: `v` is the last
    /// step's output, produced for node `name`, and nothing else reads that node.
    fn fusable(&mut self, name: &str, v: &Val) -> Option<&mut Step> {
        let buf = match v {
            Val::Dyn { buf, .. } => *buf,
            _ => return None,
        };
        if self.consumers.get(name).copied() != Some(1) {
            return None;
        }
        match self.steps.last_mut() {
            Some(s) if s.out == buf && s.node == name => Some(s),
            _ => None,
        }
    }

    /// `y = x * scale + shift` per channel (scale `None` = 1), fused when possible.
    fn affine(&mut self, node: &NodeDef, x_name: &str, x: &Val, scale: Option<Vec<f32>>, shift: Vec<f32>) -> GuestResult<Val> {
        let channels = *x.shape().last().unwrap_or(&0);
        if channels == 0 || shift.len() != channels || scale.as_ref().map_or(false, |s| s.len() != channels) {
            return bad(format!("{}: {} per-channel values for input of shape {:?}", describe(node), shift.len(), x.shape()));
        }
        if let Some(step) = self.fusable(x_name, x) {
            let folded = match &mut step.kind {
                // Not after a fused residual: (conv + r) * s + t is not a folded conv + r.
                Kind::Conv { w, bias, act: Act::None, residual: false, .. } | Kind::Depthwise { w, bias, act: Act::None, .. } => {
                    // Output channel = innermost index of the weights in both layouts.
                    if let Some(s) = &scale {
                        for (i, v) in w.iter_mut().enumerate() {
                            *v *= s[i % channels];
                        }
                    }
                    fold(bias, scale.as_deref(), &shift);
                    true
                }
                Kind::MatMul { w: Some(w), bias, act: Act::None, .. } => {
                    if let Some(s) = &scale {
                        for (i, v) in w.iter_mut().enumerate() {
                            *v *= s[i % channels];
                        }
                    }
                    fold(bias, scale.as_deref(), &shift);
                    true
                }
                Kind::Affine { scale: s0, shift: t0, act: Act::None, .. } => {
                    // (x * s0 + t0) * s + t = x * (s0 * s) + (t0 * s + t)
                    let mut t = t0.take().unwrap_or_else(|| vec![0.0; channels]);
                    fold(&mut t, scale.as_deref(), &shift);
                    *t0 = Some(t);
                    if let Some(s) = &scale {
                        let combined = match s0.take() {
                            Some(a) => a.iter().zip(s).map(|(a, b)| a * b).collect(),
                            None => s.clone(),
                        };
                        *s0 = Some(combined);
                    }
                    true
                }
                _ => false,
            };
            if folded {
                step.node = node.name.clone();
                return Ok(x.clone());
            }
        }
        let kind = Kind::Affine { channels, scale, shift: Some(shift), act: Act::None };
        self.push_step(node, kind, &[x], x.shape().to_vec())
    }

    /// `Add(conv, skip)` of two same-shaped tensors where `conv` is the last step's output,
    /// read by nothing else: the convolution adds `skip` itself (one pass over memory
    /// instead of three). `None` when the pattern does not apply.
    fn fuse_residual(&mut self, node: &NodeDef, names: &[&str], ins: &[Val], out: &[usize]) -> GuestResult<Option<Val>> {
        if ins.len() != 2 || ins[0].shape() != out || ins[1].shape() != out {
            return Ok(None);
        }
        for (x, skip) in [(0, 1), (1, 0)] {
            let skip_buf = match &ins[skip] {
                Val::Dyn { buf, .. } => *buf,
                _ => continue,
            };
            let skip_len = self.buf_len[skip_buf];
            if let Some(step) = self.fusable(names[x], &ins[x]) {
                if step.out == skip_buf {
                    continue;
                }
                if let Kind::Conv { act: Act::None, residual, .. } = &mut step.kind {
                    if !*residual {
                        *residual = true;
                        step.inputs.push(Src::Buf(skip_buf));
                        step.in_lens.push(skip_len);
                        step.in_shapes.push(out.to_vec());
                        step.node = node.name.clone();
                        return Ok(Some(ins[x].clone()));
                    }
                }
            }
        }
        Ok(None)
    }

    fn activation(&mut self, node: &NodeDef, x_name: &str, x: &Val, a: Act) -> GuestResult<Val> {
        if let Some(step) = self.fusable(x_name, x) {
            if let Some(act) = step.kind.act_mut() {
                if *act == Act::None {
                    *act = a;
                    step.node = node.name.clone();
                    return Ok(x.clone());
                }
            }
        }
        let channels = (*x.shape().last().unwrap_or(&1)).max(1);
        let kind = Kind::Affine { channels, scale: None, shift: None, act: a };
        self.push_step(node, kind, &[x], x.shape().to_vec())
    }

    fn lower(&mut self, node: &'g NodeDef) -> GuestResult<()> {
        let mut names: Vec<&str> = Vec::new();
        let mut ins: Vec<Val> = Vec::new();
        for r in data_inputs(node) {
            let (name, index) = split_ref(r);
            if index != 0 {
                return bad(format!("{}: input '{}' uses output {} of a node; only output 0 is supported", describe(node), r, index));
            }
            match self.vals.get(name) {
                Some(v) => ins.push(v.clone()),
                None => return bad(format!("{}: input '{}' has no value", describe(node), r)),
            }
            names.push(name);
        }
        let v = match node.op.as_str() {
            "Placeholder" => {
                if let Some((first, _, _)) = &self.input {
                    return bad(format!("the graph needs two Placeholders ('{}' and '{}'); the engine feeds exactly one", first, node.name));
                }
                if let Some(AttrValue::Type(t)) = node.attr("dtype") {
                    if *t != DT_FLOAT {
                        return bad(format!("{}: input dtype {} is not float", describe(node), t));
                    }
                }
                let dims = match node.attr("shape") {
                    Some(AttrValue::Shape(s)) => s.dims.clone(),
                    _ => None,
                };
                let dims = match dims {
                    Some(d) => d,
                    None => return bad(format!("{}: the input shape is unknown; the engine needs a static shape", describe(node))),
                };
                let mut shape = Vec::new();
                for (i, &d) in dims.iter().enumerate() {
                    if d == -1 && i == 0 {
                        shape.push(1); // unknown batch: one image
                    } else if d < 1 {
                        return bad(format!("{}: input dimension {} is {} (must be known)", describe(node), i, d));
                    } else {
                        match graphdef::dim(d) {
                            Some(d) => shape.push(d),
                            None => return bad(format!("{}: input dimension {} is {}, larger than any tensor can be", describe(node), i, d)),
                        }
                    }
                }
                let (buf, _) = self.new_buf(node, &shape)?;
                self.input = Some((node.name.clone(), buf, shape.clone()));
                Val::Dyn { shape, buf }
            }
            "Const" => match node.attr("value") {
                Some(AttrValue::Tensor(t)) => Val::Const { shape: t.shape.clone(), data: t.data.clone() },
                _ => return bad(format!("{}: no 'value' tensor", describe(node))),
            },
            "Identity" => {
                arity(node, &ins, 1)?;
                ins[0].clone()
            }
            "Shape" => {
                arity(node, &ins, 1)?;
                let s = ins[0].shape();
                Val::Const { shape: vec![s.len()], data: Rc::new(TensorData::I64(s.iter().map(|&d| d as i64).collect())) }
            }
            "Reshape" => {
                arity(node, &ins, 2)?;
                let want = const_ints(node, &ins[1], "the shape")?;
                let total: usize = ins[0].shape().iter().product();
                let unknown = want.iter().filter(|&&d| d == -1).count();
                // Every known dimension as a checked usize: an i64 such as 2^32 must not
                // become 0 (or 2^32 + 224 become 224) on wasm32.
                let dims: Option<Vec<usize>> = want.iter().filter(|&&d| d != -1).map(|&d| graphdef::dim(d)).collect();
                let known = dims.as_ref().and_then(|d| d.iter().try_fold(1usize, |a, &b| a.checked_mul(b)));
                let known = match known {
                    Some(k) if unknown <= 1 && !(unknown == 1 && k == 0) => k,
                    _ => return bad(format!("{}: invalid target shape {:?}", describe(node), want)),
                };
                let shape: Vec<usize> = want.iter().map(|&d| if d == -1 { total / known } else { d as usize }).collect();
                if element_count(&shape) != Some(total) {
                    return bad(format!("{}: cannot reshape {:?} to {:?}", describe(node), ins[0].shape(), want));
                }
                with_shape(&ins[0], shape)
            }
            "Squeeze" => {
                arity(node, &ins, 1)?;
                let s = ins[0].shape();
                let dims = attr_ints(node, "squeeze_dims").or_else(|| attr_ints(node, "axis")).unwrap_or_default();
                let mut drop = vec![false; s.len()];
                if dims.is_empty() {
                    for (i, &d) in s.iter().enumerate() {
                        drop[i] = d == 1;
                    }
                } else {
                    for &a in &dims {
                        let a = axis(node, a, s.len())?;
                        if s[a] != 1 {
                            return bad(format!("{}: cannot squeeze dimension {} of shape {:?}", describe(node), a, s));
                        }
                        drop[a] = true;
                    }
                }
                let shape = s.iter().zip(&drop).filter(|(_, &d)| !d).map(|(&v, _)| v).collect();
                with_shape(&ins[0], shape)
            }
            "Conv2D" | "DepthwiseConv2dNative" => {
                arity(node, &ins, 2)?;
                check_nhwc(node)?;
                rank(node, &ins[0], 4, "the input")?;
                rank(node, &ins[1], 4, "the filter")?;
                let f = ins[1].shape().to_vec();
                let w = const_f32(node, &ins[1], "the filter")?;
                if w.is_empty() {
                    return bad(format!("{}: the filter {:?} has no values", describe(node), f));
                }
                let w = self.copy(node, w)?;
                let (sh, sw) = spatial(node, "strides")?;
                let win = Window::new(ins[0].shape(), f[0], f[1], sh, sw, padding(node)?).map_err(|e| (ErrorCode::BadModel, format!("{}: {}", describe(node), e)))?;
                if f[2] != win.c {
                    return bad(format!("{}: the input has {} channels, the filter {:?} expects {}", describe(node), win.c, f, f[2]));
                }
                let shape_out;
                let kind = if node.op == "Conv2D" {
                    shape_out = vec![win.n, win.oh, win.ow, f[3]];
                    let bias = self.zeros(node, f[3])?;
                    Kind::Conv { win, w, cout: f[3], bias, act: Act::None, packed: None, residual: false }
                } else {
                    shape_out = vec![win.n, win.oh, win.ow, f[2] * f[3]];
                    let bias = self.zeros(node, f[2] * f[3])?;
                    Kind::Depthwise { win, w, mult: f[3], bias, act: Act::None }
                };
                self.push_step(node, kind, &[&ins[0]], shape_out)?
            }
            "FusedBatchNorm" | "FusedBatchNormV3" => {
                if ins.len() != 5 {
                    return bad(format!("{}: expected 5 data inputs, got {}", describe(node), ins.len()));
                }
                check_nhwc(node)?;
                if attr_bool(node, "is_training").unwrap_or(true) {
                    return bad(format!("{}: is_training is true (batch statistics); a frozen inference graph sets is_training=false", describe(node)));
                }
                let eps = match node.attr("epsilon") {
                    Some(AttrValue::F(e)) => *e as f64,
                    _ => 1e-4,
                };
                let gamma = const_f32(node, &ins[1], "scale")?;
                let beta = const_f32(node, &ins[2], "offset")?;
                let mean = const_f32(node, &ins[3], "mean")?;
                let var = const_f32(node, &ins[4], "variance")?;
                let c = gamma.len();
                if beta.len() != c || mean.len() != c || var.len() != c {
                    return bad(format!("{}: scale/offset/mean/variance lengths differ", describe(node)));
                }
                // Inference batch norm: (x - mean) / sqrt(var + eps) * gamma + beta = x * s + t.
                let s: Vec<f32> = (0..c).map(|i| (gamma[i] as f64 / (var[i] as f64 + eps).sqrt()) as f32).collect();
                let t: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * s[i]).collect();
                self.affine(node, names[0], &ins[0], Some(s), t)?
            }
            "BiasAdd" => {
                arity(node, &ins, 2)?;
                check_nhwc(node)?;
                rank(node, &ins[1], 1, "the bias")?;
                let b = const_f32(node, &ins[1], "the bias")?;
                let b = self.copy(node, b)?;
                self.affine(node, names[0], &ins[0], None, b)?
            }
            "Add" | "AddV2" => {
                arity(node, &ins, 2)?;
                let out = ops::broadcast_shape(ins[0].shape(), ins[1].shape()).map_err(|e| (ErrorCode::BadModel, format!("{}: {}", describe(node), e)))?;
                // A constant that is one value per channel (or a scalar) is a bias.
                let per_channel = |c: &Val, x: &Val| -> bool {
                    let (cs, xs) = (c.shape(), x.shape());
                    let n: usize = cs.iter().product();
                    matches!(c, Val::Const { .. }) && matches!(x, Val::Dyn { .. }) && out.as_slice() == xs && !xs.is_empty()
                        && (n == 1 || (cs.len() <= xs.len() && cs.last() == xs.last() && n == *xs.last().unwrap_or(&0)))
                };
                let bias_of = |node: &NodeDef, c: &Val, x: &Val| -> GuestResult<Vec<f32>> {
                    let d = const_f32(node, c, "the addend")?;
                    let ch = *x.shape().last().unwrap_or(&1);
                    Ok(if d.len() == 1 { let mut b = zeros(node, ch)?; b.iter_mut().for_each(|v| *v = d[0]); b } else { d.to_vec() })
                };
                if per_channel(&ins[1], &ins[0]) {
                    let b = bias_of(node, &ins[1], &ins[0])?;
                    charge(&mut self.budget, node, b.len())?;
                    self.affine(node, names[0], &ins[0], None, b)?
                } else if per_channel(&ins[0], &ins[1]) {
                    let b = bias_of(node, &ins[0], &ins[1])?;
                    charge(&mut self.budget, node, b.len())?;
                    self.affine(node, names[1], &ins[1], None, b)?
                } else if let Some(v) = self.fuse_residual(node, &names, &ins, &out)? {
                    v
                } else {
                    let kind = Kind::Add { a: ins[0].shape().to_vec(), b: ins[1].shape().to_vec(), out: out.clone(), act: Act::None };
                    self.push_step(node, kind, &[&ins[0], &ins[1]], out)?
                }
            }
            "Relu" | "Relu6" => {
                arity(node, &ins, 1)?;
                let a = if node.op == "Relu" { Act::Relu } else { Act::Relu6 };
                self.activation(node, names[0], &ins[0], a)?
            }
            "AvgPool" | "MaxPool" => {
                arity(node, &ins, 1)?;
                check_nhwc(node)?;
                rank(node, &ins[0], 4, "the input")?;
                let (kh, kw) = spatial(node, "ksize")?;
                let (sh, sw) = spatial(node, "strides")?;
                let win = Window::new(ins[0].shape(), kh, kw, sh, sw, padding(node)?).map_err(|e| (ErrorCode::BadModel, format!("{}: {}", describe(node), e)))?;
                let shape = vec![win.n, win.oh, win.ow, win.c];
                self.push_step(node, Kind::Pool { win, max: node.op == "MaxPool" }, &[&ins[0]], shape)?
            }
            "Mean" => {
                arity(node, &ins, 2)?;
                let s = ins[0].shape().to_vec();
                let mut reduce = vec![false; s.len()];
                for a in const_ints(node, &ins[1], "the axes")? {
                    reduce[axis(node, a, s.len())?] = true;
                }
                let keep = attr_bool(node, "keep_dims").unwrap_or(false);
                let shape = s.iter().zip(&reduce).filter(|(_, &r)| keep || !r).map(|(&d, &r)| if r { 1 } else { d }).collect();
                self.push_step(node, Kind::Mean { shape: s, reduce }, &[&ins[0]], shape)?
            }
            "MatMul" => {
                arity(node, &ins, 2)?;
                rank(node, &ins[0], 2, "a")?;
                rank(node, &ins[1], 2, "b")?;
                let ta = attr_bool(node, "transpose_a").unwrap_or(false);
                let tb = attr_bool(node, "transpose_b").unwrap_or(false);
                let (a, b) = (ins[0].shape(), ins[1].shape());
                let (m, k) = if ta { (a[1], a[0]) } else { (a[0], a[1]) };
                let (k2, n) = if tb { (b[1], b[0]) } else { (b[0], b[1]) };
                if k != k2 {
                    return bad(format!("{}: cannot multiply {:?} by {:?}", describe(node), a, b));
                }
                if m.checked_mul(n).map_or(true, |v| v > MAX_ELEMENTS) {
                    return bad(format!("{}: the product of {:?} and {:?} is too large", describe(node), a, b));
                }
                if let Val::Const { .. } = ins[1] {
                    let w = const_f32(node, &ins[1], "b")?;
                    let w = if tb {
                        charge(&mut self.budget, node, w.len())?;
                        probe(node, w.len())?;
                        ops::transpose(w, n, k)
                    } else {
                        self.copy(node, w)?
                    };
                    let bias = self.zeros(node, n)?;
                    let kind = Kind::MatMul { m, k, n, w: Some(w), bias, act: Act::None, trans_a: ta, trans_b: false };
                    self.push_step(node, kind, &[&ins[0]], vec![m, n])?
                } else {
                    let bias = self.zeros(node, n)?;
                    let kind = Kind::MatMul { m, k, n, w: None, bias, act: Act::None, trans_a: ta, trans_b: tb };
                    self.push_step(node, kind, &[&ins[0], &ins[1]], vec![m, n])?
                }
            }
            "Softmax" => {
                arity(node, &ins, 1)?;
                let classes = *ins[0].shape().last().unwrap_or(&0);
                if classes == 0 {
                    return bad(format!("{}: softmax over an empty or scalar tensor {:?}", describe(node), ins[0].shape()));
                }
                self.push_step(node, Kind::Softmax { classes }, &[&ins[0]], ins[0].shape().to_vec())?
            }
            "Pad" => {
                arity(node, &ins, 2)?;
                let s = ins[0].shape().to_vec();
                let p = const_ints(node, &ins[1], "the paddings")?;
                if p.len() != 2 * s.len() || p.iter().any(|&v| !(0..=1 << 20).contains(&v)) {
                    return bad(format!("{}: paddings {:?} do not fit shape {:?}", describe(node), p, s));
                }
                let pads: Vec<(usize, usize)> = p.chunks(2).map(|c| (c[0] as usize, c[1] as usize)).collect();
                let out: Vec<usize> = s.iter().zip(&pads).map(|(&d, &(a, b))| d + a + b).collect();
                self.push_step(node, Kind::Pad { shape: s, pads, out: out.clone() }, &[&ins[0]], out)?
            }
            other => {
                return Err((
                    ErrorCode::BadModel,
                    format!("unsupported op '{}' (node '{}'); supported ops: {}", other, node.name, SUPPORTED_OPS.join(", ")),
                ))
            }
        };
        self.vals.insert(node.name.as_str(), v);
        Ok(())
    }
}

fn fold(bias: &mut [f32], scale: Option<&[f32]>, shift: &[f32]) {
    for (i, b) in bias.iter_mut().enumerate() {
        *b = *b * scale.map_or(1.0, |s| s[i]) + shift[i];
    }
}

fn with_shape(v: &Val, shape: Vec<usize>) -> Val {
    match v {
        Val::Const { data, .. } => Val::Const { shape, data: data.clone() },
        Val::Dyn { buf, .. } => Val::Dyn { shape, buf: *buf },
    }
}

fn alloc_slot(size: usize) -> GuestResult<Vec<f32>> {
    let mut v: Vec<f32> = Vec::new();
    v.try_reserve_exact(size)
        .map_err(|_| (ErrorCode::OutOfMemory, format!("cannot allocate an activation buffer of {} floats", size)))?;
    v.resize(size, 0.0);
    Ok(v)
}

impl Model {
    /// Parse a frozen graph and plan it. `output` names the output node (`name` or
    /// `name:0`); `None` picks the classifier's output (see [`default_output`]).
    pub fn load(bytes: &[u8], output: Option<&str>) -> GuestResult<Model> {
        let graph = graphdef::parse_graph(bytes).map_err(|e| (ErrorCode::BadModel, format!("not a TensorFlow GraphDef: {}", e)))?;
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, n) in graph.nodes.iter().enumerate() {
            if index.insert(n.name.as_str(), i).is_some() {
                return bad(format!("two nodes are named '{}'", n.name));
            }
        }
        let output_name = match output {
            Some(o) => {
                let (name, i) = split_ref(o);
                if i != 0 {
                    return Err((ErrorCode::BadArgument, format!("output '{}': only output 0 of a node can be read", o)));
                }
                if !index.contains_key(name) {
                    return Err((ErrorCode::BadArgument, format!("no node named '{}' in the graph", name)));
                }
                name.to_string()
            }
            None => default_output(&graph)?,
        };
        let out_idx = index[output_name.as_str()];
        let order = order(&graph, &index, out_idx)?;

        let mut consumers: HashMap<&str, usize> = HashMap::new();
        for &i in &order {
            for r in data_inputs(&graph.nodes[i]) {
                *consumers.entry(split_ref(r).0).or_insert(0) += 1;
            }
        }
        *consumers.entry(output_name.as_str()).or_insert(0) += 1;

        let mut b = Builder { vals: HashMap::new(), consumers, steps: Vec::new(), consts: Vec::new(), buf_len: Vec::new(), input: None, budget: graph.budget_left };
        for &i in &order {
            b.lower(&graph.nodes[i])?;
        }
        let (input_name, input_buf, input_shape) = match b.input.take() {
            Some(i) => i,
            None => return bad(format!("output '{}' does not depend on any Placeholder", output_name)),
        };
        let out_val = b.vals[output_name.as_str()].clone();
        let output_shape = out_val.shape().to_vec();
        let mut consts = b.consts;
        let output = match &out_val {
            Val::Dyn { buf, .. } => Src::Buf(*buf),
            Val::Const { data, .. } => match &**data {
                TensorData::F32(_) => {
                    consts.push(data.clone());
                    Src::Const(consts.len() - 1)
                }
                TensorData::I64(_) => return bad(format!("output '{}' is an integer tensor", output_name)),
            },
        };

        // ---- memory plan: logical buffers -> reusable slots
        let nbuf = b.buf_len.len();
        let mut last_use: Vec<Option<usize>> = vec![None; nbuf];
        for (i, s) in b.steps.iter().enumerate() {
            for src in &s.inputs {
                if let Src::Buf(k) = src {
                    last_use[*k] = Some(i);
                }
            }
        }
        if let Src::Buf(k) = output {
            last_use[k] = Some(usize::MAX);
        }
        let mut slot_size: Vec<usize> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut assign = vec![usize::MAX; nbuf];
        let take = |len: usize, free: &mut Vec<usize>, slot_size: &mut Vec<usize>| -> usize {
            // Best fit among the free slots; else grow the biggest free one; else a new slot.
            let fit = free.iter().enumerate().filter(|(_, &s)| slot_size[s] >= len).min_by_key(|(_, &s)| slot_size[s]).map(|(i, _)| i);
            let pick = fit.or_else(|| free.iter().enumerate().max_by_key(|(_, &s)| slot_size[s]).map(|(i, _)| i));
            match pick {
                Some(i) => {
                    let s = free.swap_remove(i);
                    slot_size[s] = slot_size[s].max(len);
                    s
                }
                None => {
                    slot_size.push(len);
                    slot_size.len() - 1
                }
            }
        };
        assign[input_buf] = take(b.buf_len[input_buf], &mut free, &mut slot_size);
        if last_use[input_buf].is_none() {
            free.push(assign[input_buf]);
        }
        for (i, s) in b.steps.iter().enumerate() {
            assign[s.out] = take(s.out_len, &mut free, &mut slot_size);
            let mut dead: Vec<usize> = s.inputs.iter().filter_map(|src| match src {
                Src::Buf(k) if last_use[*k] == Some(i) => Some(*k),
                _ => None,
            }).collect();
            if last_use[s.out].is_none() {
                dead.push(s.out);
            }
            dead.sort_unstable();
            dead.dedup();
            for k in dead {
                free.push(assign[k]);
            }
        }
        let remap = |src: Src| match src {
            Src::Buf(k) => Src::Buf(assign[k]),
            c => c,
        };
        let mut budget = b.budget;
        let mut steps = b.steps;
        for s in steps.iter_mut() {
            s.out = assign[s.out];
            for src in s.inputs.iter_mut() {
                *src = remap(*src);
            }
            if let Kind::Conv { win, w, cout, bias, packed, .. } = &mut s.kind {
                // The packed copy: panels rounded up to whole column groups, and the bias.
                let k = win.kh * win.kw * win.c;
                let floats = (*cout + 8).saturating_mul(k).saturating_add(*cout + 8);
                let node = NodeDef { name: s.node.clone(), op: "Conv2D".into(), ..NodeDef::default() };
                charge(&mut budget, &node, floats)?;
                probe(&node, floats)?;
                *packed = kernels::pack_conv(win, w, *cout, bias);
                if packed.is_some() {
                    *w = Vec::new(); // the packed copy is the only one the kernel reads
                }
            }
        }
        let mut slots = Vec::new();
        let planner = NodeDef { name: output_name.clone(), op: "activations".into(), ..NodeDef::default() };
        charge(&mut budget, &planner, slot_size.iter().fold(0usize, |a, &s| a.saturating_add(s)))?;
        for &size in &slot_size {
            slots.push(alloc_slot(size)?);
        }

        let weight_floats: usize = consts.iter().map(|c| c.as_f32().len()).sum::<usize>() + steps.iter().map(|s| s.kind.weight_count()).sum::<usize>();
        let mut op_counts: Vec<(String, usize)> = Vec::new();
        for n in &graph.nodes {
            match op_counts.iter_mut().find(|(k, _)| *k == n.op) {
                Some(e) => e.1 += 1,
                None => op_counts.push((n.op.clone(), 1)),
            }
        }
        op_counts.sort();
        let input_len = b.buf_len[input_buf];
        let output_len = output_shape.iter().product();
        let info = ModelInfo {
            node_count: graph.nodes.len(),
            op_counts,
            input_name,
            input_shape,
            output_name,
            output_shape,
            weight_bytes: weight_floats * 4,
            activation_bytes: slot_size.iter().sum::<usize>() * 4,
            steps: steps.len(),
        };
        Ok(Model { info, consts, steps, slots, input_slot: assign[input_buf], input_len, output: remap(output), output_len })
    }

    /// Number of values the input must have.
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// Number of values the output has (1000 or 1001 for the bundled classifiers).
    pub fn output_len(&self) -> usize {
        self.output_len
    }

    /// Run the plan on one input tensor (NHWC, `input_len()` values) and borrow the output.
    pub fn run(&mut self, input: &[f32]) -> GuestResult<&[f32]> {
        self.run_with(input, None, self.steps.len())?;
        Ok(self.output())
    }

    /// Like [`Model::run`], and time every step: what `profile_tensor` reports, so the
    /// workshop can show where an inference spends its time. Timing is a WASI clock call
    /// (`clock_time_get`) before and after each step, so plain runs leave it out.
    pub fn run_timed(&mut self, input: &[f32]) -> GuestResult<Vec<StepTime>> {
        let mut times = Vec::with_capacity(self.steps.len());
        self.run_with(input, Some(&mut times), self.steps.len())?;
        Ok(self
            .steps
            .iter()
            .zip(times)
            .map(|(s, (ns, skipped))| StepTime { node: s.node.clone(), op: s.kind.label(), macs: s.kind.macs(), skipped, ns })
            .collect())
    }

    /// Run the first `count` steps. With `clock`, push each step's (nanoseconds,
    /// multiply-adds skipped) to it.
    fn run_with(&mut self, input: &[f32], mut clock: Option<&mut Vec<(u64, u64)>>, count: usize) -> GuestResult<()> {
        if input.len() != self.input_len {
            return Err((
                ErrorCode::BadArgument,
                format!("the input has {} values; the model's input {:?} needs {}", input.len(), self.info.input_shape, self.input_len),
            ));
        }
        self.slots[self.input_slot][..self.input_len].copy_from_slice(input);
        kernels::gemm::take_skipped_macs();
        for step in &self.steps[..count] {
            let start = clock.as_ref().map(|_| std::time::Instant::now());
            // Move the output slot out so it can be written while the inputs are borrowed.
            let mut out = std::mem::take(&mut self.slots[step.out]);
            {
                let slots = &self.slots;
                let consts = &self.consts;
                let ins: Vec<&[f32]> = step
                    .inputs
                    .iter()
                    .zip(&step.in_lens)
                    .map(|(src, &n)| match *src {
                        Src::Const(i) => &consts[i].as_f32()[..n],
                        Src::Buf(s) => &slots[s][..n],
                    })
                    .collect();
                exec(&step.kind, &ins, &mut out[..step.out_len]);
            }
            self.slots[step.out] = out;
            if let (Some(times), Some(start)) = (clock.as_mut(), start) {
                times.push((start.elapsed().as_nanos() as u64, kernels::gemm::take_skipped_macs()));
            }
        }
        Ok(())
    }

    fn output(&self) -> &[f32] {
        match self.output {
            Src::Const(i) => &self.consts[i].as_f32()[..self.output_len],
            Src::Buf(s) => &self.slots[s][..self.output_len],
        }
    }
}

/// One step's share of a timed inference.
#[derive(Clone, Debug)]
pub struct StepTime {
    pub node: String,
    pub op: String,
    /// Multiply-adds the step does (0 for steps that only move or normalise values).
    pub macs: u64,
    /// Of those, the ones by zero the kernel skipped (see `kernels::gemm`).
    pub skipped: u64,
    pub ns: u64,
}

impl StepTime {
    pub fn to_json(&self) -> String {
        format!(
            "{{\"node\":{},\"op\":{},\"macs\":{},\"skipped\":{},\"ns\":{}}}",
            json_string(&self.node),
            json_string(&self.op),
            self.macs,
            self.skipped,
            self.ns
        )
    }
}

/// Run one step. Shapes were checked when the plan was built.
fn exec(kind: &Kind, ins: &[&[f32]], out: &mut [f32]) {
    match kind {
        Kind::Conv { win, w, cout, bias, act, packed, residual } => {
            let r = if *residual { Some(ins[1]) } else { None };
            kernels::conv2d(ins[0], win, w, packed.as_ref(), *cout, bias, *act, r, out)
        }
        Kind::Depthwise { win, w, mult, bias, act } => kernels::depthwise(ins[0], win, w, *mult, bias, *act, out),
        Kind::Pool { win, max } => ops::pool(ins[0], win, *max, out),
        Kind::Affine { channels, scale, shift, act } => ops::channel_affine(ins[0], *channels, scale.as_deref(), shift.as_deref(), *act, out),
        Kind::Add { a, b, out: shape, act } => ops::add(ins[0], a, ins[1], b, shape, *act, out),
        Kind::MatMul { m, k, n, w, bias, act, trans_a, trans_b } => {
            let a_t;
            let a = if *trans_a {
                a_t = ops::transpose(ins[0], *k, *m);
                &a_t[..]
            } else {
                ins[0]
            };
            let b_t;
            let b = match w {
                Some(w) => &w[..],
                None if *trans_b => {
                    b_t = ops::transpose(ins[1], *n, *k);
                    &b_t[..]
                }
                None => ins[1],
            };
            ops::matmul(a, b, *m, *k, *n, bias, *act, out)
        }
        Kind::Mean { shape, reduce } => ops::mean(ins[0], shape, reduce, out),
        Kind::Softmax { classes } => ops::softmax(ins[0], *classes, out),
        Kind::Pad { shape, pads, out: oshape } => ops::pad(ins[0], shape, pads, oshape, out),
    }
}
