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
//!    EfficientNet-Lite's conv → BN → ReLU6 triple runs as one pass over memory; so do
//!    Keras' conv → BN → swish (or hard swish, or a squeeze-excite gate's sigmoid), once
//!    [`super::rewrite`] has made one node of the ops Keras writes for the activation.
//! 4. **Memory.** Each step writes a fresh logical buffer. A buffer is dead after its last
//!    reader has run, so logical buffers are mapped onto a few physical *slots* (a linear
//!    scan, best fit by size) that are allocated once and reused by every inference. The
//!    weights stay resident in the steps.

use super::graph;
use super::graphdef::{self, NodeDef, TensorData};
use super::kernels;
use super::lower::{self, charge, probe, Builder, Val};
use super::ops::{self, Act, Window};
use super::rewrite;
use crate::abi::{ErrorCode, GuestResult};
use std::rc::Rc;

/// Step-through hooks (`step_info`, `run_to_step`): where each step's tensors live.
mod steps;

fn bad<T>(message: String) -> GuestResult<T> {
    Err((ErrorCode::BadModel, message))
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
    Conv {
        win: Window,
        w: Vec<f32>,
        cout: usize,
        bias: Vec<f32>,
        act: Act,
        packed: Option<kernels::Packed>,
        residual: bool,
    },
    Depthwise {
        win: Window,
        w: Vec<f32>,
        mult: usize,
        bias: Vec<f32>,
        act: Act,
    },
    Pool {
        win: Window,
        max: bool,
    },
    Affine {
        channels: usize,
        scale: Option<Vec<f32>>,
        shift: Option<Vec<f32>>,
        act: Act,
    },
    Add {
        a: Vec<usize>,
        b: Vec<usize>,
        out: Vec<usize>,
        act: Act,
    },
    /// `y = a @ B + bias`: `w` is B as `[k, n]` when it is a constant, else B is input 1.
    MatMul {
        m: usize,
        k: usize,
        n: usize,
        w: Option<Vec<f32>>,
        bias: Vec<f32>,
        act: Act,
        trans_a: bool,
        trans_b: bool,
    },
    Mean {
        shape: Vec<usize>,
        reduce: Vec<bool>,
    },
    Softmax {
        classes: usize,
    },
    Pad {
        shape: Vec<usize>,
        pads: Vec<(usize, usize)>,
        out: Vec<usize>,
    },
    /// `Sub`, `Mul`, `RealDiv`, `Maximum`, `Minimum` with broadcasting.
    Binary {
        op: ops::BinOp,
        a: Vec<usize>,
        b: Vec<usize>,
        out: Vec<usize>,
    },
    Unary {
        op: ops::UnOp,
    },
    /// `ConcatV2`: `outer` rows, input `i` contributing `inners[i]` values to each.
    Concat {
        outer: usize,
        inners: Vec<usize>,
    },
    /// `out[i] = in[idx[i]]`: a layout op (`Transpose`, `StridedSlice`) as the index table
    /// planned at load time (its runs of consecutive indices, when long: slice copies);
    /// `op` names it.
    Gather {
        op: &'static str,
        idx: ops::GatherPlan,
    },
}

impl Kind {
    pub(crate) fn act_mut(&mut self) -> Option<&mut Act> {
        match self {
            Kind::Conv { act, .. }
            | Kind::Depthwise { act, .. }
            | Kind::Affine { act, .. }
            | Kind::Add { act, .. }
            | Kind::MatMul { act, .. } => Some(act),
            _ => None,
        }
    }

    /// A short name for profiles: the kernel shape, e.g. `Conv 1x1`, `Depthwise 5x5/2`.
    fn label(&self) -> String {
        fn window(name: &str, w: &Window) -> String {
            let stride = if w.sh == 1 && w.sw == 1 {
                String::new()
            } else {
                format!("/{}", w.sh)
            };
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
            Kind::Binary { op, .. } => op.name().into(),
            Kind::Unary { op } => op.name().into(),
            Kind::Concat { .. } => "ConcatV2".into(),
            Kind::Gather { op, .. } => (*op).into(),
        }
    }

    /// Multiply-adds per run: what a kernel's speed is measured against.
    fn macs(&self) -> u64 {
        let m = |v: usize| v as u64;
        match self {
            Kind::Conv { win, cout, .. } => {
                m(win.n * win.oh * win.ow) * m(win.kh * win.kw * win.c) * m(*cout)
            }
            Kind::Depthwise { win, mult, .. } => {
                m(win.n * win.oh * win.ow * win.c * mult) * m(win.kh * win.kw)
            }
            Kind::MatMul { m: rows, k, n, .. } => m(*rows) * m(*k) * m(*n),
            _ => 0,
        }
    }

    fn weight_count(&self) -> usize {
        match self {
            Kind::Conv {
                w, bias, packed, ..
            } => w.len() + bias.len() + packed.as_ref().map_or(0, |p| p.weight_count()),
            Kind::Depthwise { w, bias, .. } => w.len() + bias.len(),
            Kind::MatMul { w, bias, .. } => w.as_ref().map_or(0, |w| w.len()) + bias.len(),
            Kind::Affine { scale, shift, .. } => {
                scale.as_ref().map_or(0, |s| s.len()) + shift.as_ref().map_or(0, |s| s.len())
            }
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
    /// For `model_report` (not in `to_json`): the live nodes' ops, with how many of each
    /// run as a step of their own (the others fold into a neighbour or cost nothing).
    pub live_ops: Vec<LiveOp>,
    /// Bytes of the live constants as decoded, and of the plan's scratch.
    pub constant_bytes: usize,
    pub scratch_bytes: usize,
    /// Multiply-adds of one inference.
    pub macs: u64,
}

/// One op of the live graph: its node count, how many of them run as their own step, and
/// the first node's name.
#[derive(Clone, Debug, Default)]
pub struct LiveOp {
    pub op: String,
    pub count: usize,
    pub steps: usize,
    pub example: String,
}

pub(crate) fn json_string(s: &str) -> String {
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

pub(crate) fn json_dims(d: &[usize]) -> String {
    format!(
        "[{}]",
        d.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

impl ModelInfo {
    /// A one-line JSON summary (hand-written: no serde in the guest).
    pub fn to_json(&self) -> String {
        let ops: Vec<String> = self
            .op_counts
            .iter()
            .map(|(k, v)| format!("{}:{}", json_string(k), v))
            .collect();
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
    /// Scratch the steps share while running (MatMul transposes, Mean's f64 sums), sized
    /// when the model is loaded: an inference allocates nothing, so it cannot trap on a
    /// store memory limit that the load fitted under.
    scratch: Vec<f32>,
    wide: Vec<f64>,
}

fn alloc_slot(size: usize) -> GuestResult<Vec<f32>> {
    let mut v: Vec<f32> = Vec::new();
    v.try_reserve_exact(size).map_err(|_| {
        (
            ErrorCode::OutOfMemory,
            format!("cannot allocate an activation buffer of {} floats", size),
        )
    })?;
    v.resize(size, 0.0);
    Ok(v)
}

impl Model {
    /// Parse a frozen graph and plan it. `output` names the output node (`name` or
    /// `name:0`); `None` picks the classifier's output (see [`graph::default_output`]).
    pub fn load(bytes: &[u8], output: Option<&str>) -> GuestResult<Model> {
        let (mut model, mut budget) = Model::plan(bytes, output)?;
        // The scratch is allocated once the graph is gone (where the first inference used
        // to allocate it), so the heap is laid out as before this scratch was planned.
        let planner = NodeDef {
            name: model.info.output_name.clone(),
            op: "scratch".into(),
            ..NodeDef::default()
        };
        let (scratch, wide, scratch_bytes) = plan_scratch(&model.steps, &mut budget, &planner)?;
        model.scratch = scratch;
        model.wide = wide;
        model.info.scratch_bytes = scratch_bytes;
        Ok(model)
    }

    /// [`Model::load`] without the scratch; also returns what is left of the budget.
    fn plan(bytes: &[u8], output: Option<&str>) -> GuestResult<(Model, usize)> {
        let mut live = graph::live(bytes, output)?;
        lower::check_supported(&live)?;
        live.decode(bytes)?;
        // The ops as TensorFlow wrote them, for `model_info` and the report: the rewrite
        // turns some into the engine's own (`_Swish` ...) and leaves others unread.
        let mut op_counts: Vec<(String, usize)> = Vec::new();
        for n in &live.graph.nodes {
            match op_counts.iter_mut().find(|(k, _)| *k == n.op) {
                Some(e) => e.1 += 1,
                None => op_counts.push((n.op.clone(), 1)),
            }
        }
        op_counts.sort();
        let written: Vec<(usize, String)> = live
            .order
            .iter()
            .map(|&i| (i, live.graph.nodes[i].op.clone()))
            .collect();
        let folded = rewrite::pads(&mut live.graph, &live.order, &live.output);
        if rewrite::activations(&mut live.graph, &live.order, &live.output) + folded > 0 {
            live.reorder()?;
        }
        let (graph, order, output_name) = (&live.graph, &live.order, live.output.clone());
        let mut b = Builder::new(graph, order, output_name.as_str(), graph.budget_left);
        for &i in order {
            b.lower(&graph.nodes[i])?;
        }
        let (input_name, input_buf, input_shape) = match b.input.take() {
            Some(i) => i,
            None => {
                return bad(format!(
                    "output '{}' does not depend on any Placeholder",
                    output_name
                ))
            }
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
                TensorData::I64(_) => {
                    return bad(format!("output '{}' is an integer tensor", output_name))
                }
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
            let fit = free
                .iter()
                .enumerate()
                .filter(|(_, &s)| slot_size[s] >= len)
                .min_by_key(|(_, &s)| slot_size[s])
                .map(|(i, _)| i);
            let pick = fit.or_else(|| {
                free.iter()
                    .enumerate()
                    .max_by_key(|(_, &s)| slot_size[s])
                    .map(|(i, _)| i)
            });
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
            let mut dead: Vec<usize> = s
                .inputs
                .iter()
                .filter_map(|src| match src {
                    Src::Buf(k) if last_use[*k] == Some(i) => Some(*k),
                    _ => None,
                })
                .collect();
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
            if let Kind::Conv {
                win,
                w,
                cout,
                bias,
                packed,
                ..
            } = &mut s.kind
            {
                // The packed copy: panels rounded up to whole column groups, and the bias.
                let k = win.kh * win.kw * win.c;
                let floats = (*cout + 8).saturating_mul(k).saturating_add(*cout + 8);
                let node = NodeDef {
                    name: s.node.clone(),
                    op: "Conv2D".into(),
                    ..NodeDef::default()
                };
                charge(&mut budget, &node, floats)?;
                probe(&node, floats)?;
                *packed = kernels::pack_conv(win, w, *cout, bias);
                if packed.is_some() {
                    // The packed copy is the only one the kernel reads: the unpacked one is
                    // freed, so its floats go back to the budget (charged when it was copied).
                    // Without this, ResNet50's 98 MiB of weights counted three times.
                    budget = budget.saturating_add(w.len().saturating_mul(4));
                    *w = Vec::new();
                }
            }
        }
        let mut slots = Vec::new();
        let planner = NodeDef {
            name: output_name.clone(),
            op: "activations".into(),
            ..NodeDef::default()
        };
        charge(
            &mut budget,
            &planner,
            slot_size.iter().fold(0usize, |a, &s| a.saturating_add(s)),
        )?;
        for &size in &slot_size {
            slots.push(alloc_slot(size)?);
        }

        let weight_floats: usize = consts.iter().map(|c| c.as_f32().len()).sum::<usize>()
            + steps.iter().map(|s| s.kind.weight_count()).sum::<usize>();
        // Each node as TensorFlow wrote it: a node the rewrite absorbed ran no step.
        let mut stepped_node = vec![false; graph.nodes.len()];
        for (&i, &stepped) in order.iter().zip(&b.stepped) {
            stepped_node[i] = stepped;
        }
        let mut live_ops: Vec<LiveOp> = Vec::new();
        for (i, op) in &written {
            let stepped = stepped_node[*i];
            match live_ops.iter_mut().find(|o| o.op == *op) {
                Some(o) => {
                    o.count += 1;
                    o.steps += stepped as usize;
                }
                None => live_ops.push(LiveOp {
                    op: op.clone(),
                    count: 1,
                    steps: stepped as usize,
                    example: graph.nodes[*i].name.clone(),
                }),
            }
        }
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
            live_ops,
            constant_bytes: graphdef::MODEL_BUDGET_BYTES - graph.budget_left,
            scratch_bytes: 0,
            macs: steps.iter().map(|s| s.kind.macs()).sum(),
        };
        let model = Model {
            info,
            consts,
            steps,
            slots,
            input_slot: assign[input_buf],
            input_len,
            output: remap(output),
            output_len,
            scratch: Vec::new(),
            wide: Vec::new(),
        };
        Ok((model, budget))
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
        let mut times = Vec::new();
        times.try_reserve_exact(self.steps.len()).map_err(|_| {
            (
                ErrorCode::OutOfMemory,
                "cannot allocate the step timings".to_string(),
            )
        })?;
        self.run_with(input, Some(&mut times), self.steps.len())?;
        Ok(self
            .steps
            .iter()
            .zip(times)
            .map(|(s, (ns, skipped))| StepTime {
                node: s.node.clone(),
                op: s.kind.label(),
                macs: s.kind.macs(),
                skipped,
                ns,
            })
            .collect())
    }

    /// Run the first `count` steps. With `clock`, push each step's (nanoseconds,
    /// multiply-adds skipped) to it.
    fn run_with(
        &mut self,
        input: &[f32],
        mut clock: Option<&mut Vec<(u64, u64)>>,
        count: usize,
    ) -> GuestResult<()> {
        if input.len() != self.input_len {
            return Err((
                ErrorCode::BadArgument,
                format!(
                    "the input has {} values; the model's input {:?} needs {}",
                    input.len(),
                    self.info.input_shape,
                    self.input_len
                ),
            ));
        }
        self.slots[self.input_slot][..self.input_len].copy_from_slice(input);
        kernels::gemm::take_skipped_macs();
        for step in &self.steps[..count] {
            let start = clock.as_ref().map(|_| std::time::Instant::now());
            // Move the output slot out so it can be written while the inputs are borrowed.
            let mut out = std::mem::take(&mut self.slots[step.out]);
            let ins = Inputs {
                step,
                slots: &self.slots,
                consts: &self.consts,
            };
            exec(
                &step.kind,
                &ins,
                &mut out[..step.out_len],
                &mut self.scratch,
                &mut self.wide,
            );
            self.slots[step.out] = out;
            if let (Some(times), Some(start)) = (clock.as_mut(), start) {
                times.push((
                    start.elapsed().as_nanos() as u64,
                    kernels::gemm::take_skipped_macs(),
                ));
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

/// A step's inputs, resolved one at a time (a list of slices would be an allocation per
/// step of every inference).
struct Inputs<'a> {
    step: &'a Step,
    slots: &'a [Vec<f32>],
    consts: &'a [Rc<TensorData>],
}

impl<'a> Inputs<'a> {
    fn get(&self, i: usize) -> &'a [f32] {
        let n = self.step.in_lens[i];
        match self.step.inputs[i] {
            Src::Const(c) => &self.consts[c].as_f32()[..n],
            Src::Buf(s) => &self.slots[s][..n],
        }
    }
}

/// The scratch a step needs while it runs: (f32 for transposes, f64 for sums).
fn step_scratch(kind: &Kind, out_len: usize) -> (usize, usize) {
    match kind {
        Kind::MatMul {
            m,
            k,
            n,
            w,
            trans_a,
            trans_b,
            ..
        } => {
            let a = if *trans_a { m * k } else { 0 };
            let b = if w.is_none() && *trans_b { k * n } else { 0 };
            (a + b, 0)
        }
        Kind::Mean { shape, reduce } => (0, ops::mean_scratch(shape, reduce, out_len)),
        _ => (0, 0),
    }
}

/// Allocate, once, the scratch every step of the plan runs in: the largest of each kind,
/// and the convolutions' packing buffers. Charged to the model's budget; OutOfMemory if
/// the memory is not there, now rather than in the middle of an inference.
fn plan_scratch(
    steps: &[Step],
    budget: &mut usize,
    planner: &NodeDef,
) -> GuestResult<(Vec<f32>, Vec<f64>, usize)> {
    let (mut floats, mut wide, mut packing) = (0usize, 0usize, 0usize);
    for s in steps {
        let (f, w) = step_scratch(&s.kind, s.out_len);
        floats = floats.max(f);
        wide = wide.max(w);
        if let Kind::Conv { win, packed, .. } = &s.kind {
            let bytes = kernels::reserve_conv(win, packed.as_ref()).map_err(|bytes| {
                (
                    ErrorCode::OutOfMemory,
                    format!(
                        "node '{}': cannot allocate {} bytes of convolution scratch",
                        s.node, bytes
                    ),
                )
            })?;
            packing = packing.max(bytes);
        }
    }
    charge(
        budget,
        planner,
        floats.saturating_add(wide.saturating_mul(2)),
    )?;
    let scratch = graphdef::try_filled(floats, 0f32)
        .map_err(|m| (ErrorCode::OutOfMemory, format!("the plan's scratch: {}", m)))?;
    let wide_buf = graphdef::try_filled(wide, 0f64)
        .map_err(|m| (ErrorCode::OutOfMemory, format!("the plan's scratch: {}", m)))?;
    Ok((scratch, wide_buf, floats * 4 + wide * 8 + packing))
}

/// Run one step. Shapes were checked when the plan was built; `scratch` and `wide` hold
/// what [`step_scratch`] asked for.
fn exec(kind: &Kind, ins: &Inputs<'_>, out: &mut [f32], scratch: &mut [f32], wide: &mut [f64]) {
    match kind {
        Kind::Conv {
            win,
            w,
            cout,
            bias,
            act,
            packed,
            residual,
        } => {
            let r = if *residual { Some(ins.get(1)) } else { None };
            kernels::conv2d(
                ins.get(0),
                win,
                w,
                packed.as_ref(),
                *cout,
                bias,
                *act,
                r,
                out,
            )
        }
        Kind::Depthwise {
            win,
            w,
            mult,
            bias,
            act,
        } => kernels::depthwise(ins.get(0), win, w, *mult, bias, *act, out),
        Kind::Pool { win, max } => ops::pool(ins.get(0), win, *max, out),
        Kind::Affine {
            channels,
            scale,
            shift,
            act,
        } => ops::channel_affine(
            ins.get(0),
            *channels,
            scale.as_deref(),
            shift.as_deref(),
            *act,
            out,
        ),
        Kind::Add {
            a,
            b,
            out: shape,
            act,
        } => ops::add(ins.get(0), a, ins.get(1), b, shape, *act, out),
        Kind::MatMul {
            m,
            k,
            n,
            w,
            bias,
            act,
            trans_a,
            trans_b,
        } => {
            let (a_t, b_t) = scratch.split_at_mut(if *trans_a { m * k } else { 0 });
            let a = if *trans_a {
                ops::transpose_into(ins.get(0), *k, *m, a_t);
                &a_t[..]
            } else {
                ins.get(0)
            };
            let b = match w {
                Some(w) => &w[..],
                None if *trans_b => {
                    ops::transpose_into(ins.get(1), *n, *k, b_t);
                    &b_t[..k * n]
                }
                None => ins.get(1),
            };
            ops::matmul(a, b, *m, *k, *n, bias, *act, out)
        }
        Kind::Mean { shape, reduce } => ops::mean(ins.get(0), shape, reduce, out, wide),
        Kind::Softmax { classes } => ops::softmax(ins.get(0), *classes, out),
        Kind::Pad {
            shape,
            pads,
            out: oshape,
        } => ops::pad(ins.get(0), shape, pads, oshape, out),
        Kind::Binary {
            op,
            a,
            b,
            out: shape,
        } => ops::binary(*op, ins.get(0), a, ins.get(1), b, shape, out),
        Kind::Unary { op } => ops::unary(*op, ins.get(0), out),
        Kind::Concat { outer, inners } => ops::concat(|i| ins.get(i), *outer, inners, out),
        Kind::Gather { idx, .. } => match idx {
            ops::GatherPlan::Elements(idx) => ops::gather(ins.get(0), idx, out),
            ops::GatherPlan::Runs(runs) => ops::gather_runs(ins.get(0), runs, out),
        },
    }
}
