//! Lowering: one graph node at a time, from TensorFlow ops to the plan's steps.
//!
//! The planner walks the live nodes in order (see [`super::graph`]) and, for each, looks its
//! op up in [`REGISTRY`]: the op's name and the small function that lowers one node of it.
//! A lowering function gets the node and its inputs as [`Val`]s (a constant, or a buffer an
//! earlier step fills, each with its shape known at load time) and returns the node's value:
//! a renamed buffer (`Reshape`), a constant (`Shape`), a new step, or the previous step
//! changed in place (a batch norm folded into the convolution before it).
//!
//! A new op is a new function in the file of its family, plus one line in [`REGISTRY`]:
//! - [`source`]: `Placeholder`, `Const`;
//! - [`shape`]: `Identity`, `IdentityN`, `PlaceholderWithDefault`, `Shape`, `Reshape`,
//!   `Squeeze`, `ExpandDims`, `Pad`, `ConcatV2`, `NoOp`, `StridedSlice`, `Pack`, `Transpose`,
//!   `Switch`, `Merge` (on a constant predicate, see [`super::graph`]);
//! - [`conv`]: `Conv2D`, `DepthwiseConv2dNative`, `AvgPool`, `MaxPool`;
//! - [`norm`]: `FusedBatchNorm(V3)`, `BiasAdd`, and the per-channel affine fusion they share;
//! - [`elementwise`]: `Add`/`AddV2` (with the residual fusion), `Relu`, `Relu6`, and the
//!   activations [`crate::engine::rewrite`] recognises (`_Swish`, `_HardSwish`,
//!   `_HardSigmoid`: [`REWRITTEN`]), all fused into the step before when it allows;
//! - [`math`]: `Sub`, `Mul`, `RealDiv`, `Maximum`, `Minimum`, `Rsqrt`, `Sqrt`, `Sigmoid`
//!   (fused into the step before, like `Relu6`), `Tanh`, `LeakyRelu`, folded over constants
//!   (a batch norm written out in them folds into the convolution before it);
//! - [`reduce`]: `Mean`, `Softmax`; [`matmul`]: `MatMul`.
//!
//! [`Builder`] holds what lowering builds: the values by node name, the steps, the float
//! constants steps read, the logical buffers' sizes, and the model's byte budget.

pub mod attrs;
mod conv;
mod elementwise;
mod math;
mod matmul;
mod norm;
mod reduce;
mod shape;
mod source;

use super::graph::{data_inputs, split_ref, Live};
use super::graphdef::{self, element_count, GraphDef, NodeDef, TensorData, MAX_ELEMENTS};
use super::plan::{Kind, Src, Step};
use super::rewrite;
use crate::abi::{ErrorCode, GuestResult};
use attrs::describe;
use std::collections::HashMap;
use std::rc::Rc;

pub(crate) fn bad<T>(message: String) -> GuestResult<T> {
    Err((ErrorCode::BadModel, message))
}

/// Lower one node: the builder, the node, its inputs' node names and values.
pub type Lower = for<'g> fn(&mut Builder<'g>, &'g NodeDef, &[&'g str], &[Val]) -> GuestResult<Val>;

/// The op registry: every op the engine runs, and the function that lowers it.
pub const REGISTRY: &[(&str, Lower)] = &[
    ("Placeholder", source::placeholder as Lower),
    ("Const", source::constant as Lower),
    ("Identity", shape::identity as Lower),
    ("Conv2D", conv::conv2d as Lower),
    ("DepthwiseConv2dNative", conv::depthwise as Lower),
    ("FusedBatchNorm", norm::fused_batch_norm as Lower),
    ("FusedBatchNormV3", norm::fused_batch_norm as Lower),
    ("BiasAdd", norm::bias_add as Lower),
    ("Add", elementwise::add as Lower),
    ("AddV2", elementwise::add as Lower),
    ("Relu", elementwise::relu as Lower),
    ("Relu6", elementwise::relu6 as Lower),
    ("AvgPool", conv::avg_pool as Lower),
    ("MaxPool", conv::max_pool as Lower),
    ("Mean", reduce::mean as Lower),
    ("Squeeze", shape::squeeze as Lower),
    ("Reshape", shape::reshape as Lower),
    ("Shape", shape::shape as Lower),
    ("MatMul", matmul::matmul as Lower),
    ("Softmax", reduce::softmax as Lower),
    ("Pad", shape::pad as Lower),
    ("Sub", math::sub as Lower),
    ("Mul", math::mul as Lower),
    ("RealDiv", math::real_div as Lower),
    ("Maximum", math::maximum as Lower),
    ("Minimum", math::minimum as Lower),
    ("Rsqrt", math::rsqrt as Lower),
    ("Sqrt", math::sqrt as Lower),
    ("Sigmoid", math::sigmoid as Lower),
    ("Tanh", math::tanh as Lower),
    ("LeakyRelu", math::leaky_relu as Lower),
    ("ConcatV2", shape::concat as Lower),
    ("ExpandDims", shape::expand_dims as Lower),
    ("IdentityN", shape::identity_n as Lower),
    (
        "PlaceholderWithDefault",
        shape::placeholder_with_default as Lower,
    ),
    ("NoOp", shape::no_op as Lower),
    ("StridedSlice", shape::strided_slice as Lower),
    ("Pack", shape::pack as Lower),
    ("Transpose", shape::transpose as Lower),
    ("Switch", shape::switch as Lower),
    ("Merge", shape::merge as Lower),
];

/// The ops [`crate::engine::rewrite`] makes of several TensorFlow ones: lowered like the
/// registry's, but no graph may name them itself (they are not in [`supported_ops`]).
pub const REWRITTEN: &[(&str, Lower)] = &[
    (rewrite::SWISH, elementwise::swish as Lower),
    (rewrite::HARD_SIGMOID, elementwise::hard_sigmoid as Lower),
    (rewrite::HARD_SWISH, elementwise::hard_swish as Lower),
];

/// The lowering function of `op`, if the engine runs it.
pub fn lookup(op: &str) -> Option<Lower> {
    REGISTRY
        .iter()
        .find(|(name, _)| *name == op)
        .map(|(_, f)| *f)
}

/// The names of the ops the engine runs, in registry order.
pub fn supported_ops() -> Vec<&'static str> {
    REGISTRY.iter().map(|(name, _)| *name).collect()
}

/// How a graph's live nodes use one op: how many nodes, and the first one's name.
#[derive(Clone, Debug)]
pub struct OpUse {
    pub op: String,
    pub count: usize,
    pub example: String,
}

/// The ops of the live nodes, in the order they first appear.
pub fn op_uses(live: &Live) -> Vec<OpUse> {
    let mut uses: Vec<OpUse> = Vec::new();
    for n in live.nodes() {
        match uses.iter_mut().find(|u| u.op == n.op) {
            Some(u) => u.count += 1,
            None => uses.push(OpUse {
                op: n.op.clone(),
                count: 1,
                example: n.name.clone(),
            }),
        }
    }
    uses
}

/// One error naming every op the output needs that the engine does not run (with a
/// count and one node each), and what to do about it; before any weight is decoded.
pub fn check_supported(live: &Live) -> GuestResult<()> {
    let missing: Vec<String> = op_uses(live)
        .into_iter()
        .filter(|u| lookup(&u.op).is_none())
        .map(|u| {
            format!(
                "{} ({} node{}, e.g. '{}')",
                u.op,
                u.count,
                if u.count == 1 { "" } else { "s" },
                u.example
            )
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    bad(format!(
        "unsupported op{} on the path to output '{}': {}. Supported ops: {}. To run this graph: name an \
         earlier output node (load_model_with_output) if these ops come after it, re-export the model \
         with supported ops, or add a lowering function for each op in guest/src/engine/lower/",
        if missing.len() == 1 { "" } else { "s" },
        live.output,
        missing.join(", "),
        supported_ops().join(", ")
    ))
}

/// `n` zeros (a bias the graph did not give), refusing absurd sizes and answering
/// OutOfMemory instead of an aborting allocation.
pub fn zeros(node: &NodeDef, n: usize) -> GuestResult<Vec<f32>> {
    if n > MAX_ELEMENTS {
        return bad(format!(
            "{}: {} output channels is too many",
            describe(node),
            n
        ));
    }
    graphdef::try_filled(n, 0.0)
        .map_err(|m| (ErrorCode::OutOfMemory, format!("{}: {}", describe(node), m)))
}

/// A tensor while the plan is being built: a constant, or a buffer some step will fill.
#[derive(Clone, Debug)]
pub enum Val {
    Const {
        shape: Vec<usize>,
        data: Rc<TensorData>,
    },
    Dyn {
        shape: Vec<usize>,
        buf: usize,
    },
}

impl Val {
    pub fn shape(&self) -> &[usize] {
        match self {
            Val::Const { shape, .. } | Val::Dyn { shape, .. } => shape,
        }
    }
}

/// The same values under another shape (a renaming: no copy, no step).
pub fn with_shape(v: &Val, shape: Vec<usize>) -> Val {
    match v {
        Val::Const { data, .. } => Val::Const {
            shape,
            data: data.clone(),
        },
        Val::Dyn { buf, .. } => Val::Dyn { shape, buf: *buf },
    }
}

pub struct Builder<'g> {
    pub vals: HashMap<&'g str, Val>,
    /// Outputs after the first, by node name and output index (`IdentityN`, `Switch`).
    pub outs: HashMap<(&'g str, usize), Val>,
    pub consumers: HashMap<&'g str, usize>,
    pub steps: Vec<Step>,
    pub consts: Vec<Rc<TensorData>>,
    pub buf_len: Vec<usize>,
    pub input: Option<(String, usize, Vec<usize>)>,
    /// Bytes left of the model's budget (see `graphdef::MODEL_BUDGET_BYTES`).
    pub budget: usize,
    /// For each node lowered, in order: whether it added a step of its own (else it was
    /// folded into the step before, or became a renaming or a constant).
    pub stepped: Vec<bool>,
}

/// Take `floats` f32 from the model's byte budget, or refuse the model.
pub fn charge(budget: &mut usize, node: &NodeDef, floats: usize) -> GuestResult<()> {
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
pub fn probe(node: &NodeDef, floats: usize) -> GuestResult<()> {
    let mut v: Vec<f32> = Vec::new();
    v.try_reserve_exact(floats).map_err(|_| {
        (
            ErrorCode::OutOfMemory,
            format!(
                "{}: cannot allocate {} floats of weights",
                describe(node),
                floats
            ),
        )
    })
}

impl<'g> Builder<'g> {
    /// `n` zeros charged to the budget.
    pub fn zeros(&mut self, node: &NodeDef, n: usize) -> GuestResult<Vec<f32>> {
        charge(&mut self.budget, node, n)?;
        zeros(node, n)
    }

    /// A copy of constant values the step will change (folding), charged to the budget.
    pub fn copy(&mut self, node: &NodeDef, values: &[f32]) -> GuestResult<Vec<f32>> {
        charge(&mut self.budget, node, values.len())?;
        let mut v: Vec<f32> = Vec::new();
        v.try_reserve_exact(values.len()).map_err(|_| {
            (
                ErrorCode::OutOfMemory,
                format!(
                    "{}: cannot copy {} floats of weights",
                    describe(node),
                    values.len()
                ),
            )
        })?;
        v.extend_from_slice(values);
        Ok(v)
    }
}

pub fn const_f32<'a>(node: &NodeDef, v: &'a Val, what: &str) -> GuestResult<&'a [f32]> {
    match v {
        Val::Const { data, .. } => match &**data {
            TensorData::F32(d) => Ok(d),
            TensorData::I64(_) => bad(format!(
                "{}: {} must be a float constant",
                describe(node),
                what
            )),
        },
        Val::Dyn { .. } => bad(format!(
            "{}: {} must be a constant (a frozen graph), not computed",
            describe(node),
            what
        )),
    }
}

pub fn const_ints(node: &NodeDef, v: &Val, what: &str) -> GuestResult<Vec<i64>> {
    match v {
        Val::Const { data, .. } => match &**data {
            TensorData::I64(d) => Ok(d.clone()),
            TensorData::F32(_) => bad(format!(
                "{}: {} must be an integer constant",
                describe(node),
                what
            )),
        },
        Val::Dyn { .. } => bad(format!("{}: {} must be a constant", describe(node), what)),
    }
}

pub fn arity(node: &NodeDef, ins: &[Val], n: usize) -> GuestResult<()> {
    if ins.len() != n {
        return bad(format!(
            "{}: expected {} data inputs, got {}",
            describe(node),
            n,
            ins.len()
        ));
    }
    Ok(())
}

pub fn rank(node: &NodeDef, v: &Val, r: usize, what: &str) -> GuestResult<()> {
    if v.shape().len() != r {
        return bad(format!(
            "{}: {} must have rank {}, has shape {:?}",
            describe(node),
            what,
            r,
            v.shape()
        ));
    }
    Ok(())
}

/// Normalise an axis (negative counts from the end).
pub fn axis(node: &NodeDef, a: i64, rank: usize) -> GuestResult<usize> {
    let r = rank as i64;
    if a < -r || a >= r {
        return bad(format!(
            "{}: axis {} is out of range for rank {}",
            describe(node),
            a,
            rank
        ));
    }
    Ok(((a + r) % r.max(1)) as usize)
}

impl<'g> Builder<'g> {
    pub fn new_buf(&mut self, node: &NodeDef, shape: &[usize]) -> GuestResult<(usize, usize)> {
        let len = match element_count(shape) {
            Some(n) => n,
            None => {
                return bad(format!(
                    "{}: tensor of shape {:?} is too large",
                    describe(node),
                    shape
                ))
            }
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

    pub fn push_step(
        &mut self,
        node: &NodeDef,
        kind: Kind,
        ins: &[&Val],
        shape: Vec<usize>,
    ) -> GuestResult<Val> {
        let mut inputs = Vec::new();
        let mut in_lens = Vec::new();
        let in_shapes = ins.iter().map(|v| v.shape().to_vec()).collect();
        for v in ins {
            let (s, n) = self.src(node, v)?;
            inputs.push(s);
            in_lens.push(n);
        }
        let (buf, out_len) = self.new_buf(node, &shape)?;
        self.steps.push(Step {
            node: node.name.clone(),
            kind,
            inputs,
            in_lens,
            out: buf,
            out_len,
            in_shapes,
            out_shape: shape.clone(),
        });
        Ok(Val::Dyn { shape, buf })
    }

    /// The step that produced `v`, if its result may be changed in place: `v` is the last
    /// step's output, produced for node `name`, and nothing else reads that node.
    pub fn fusable(&mut self, name: &str, v: &Val) -> Option<&mut Step> {
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
}

impl<'g> Builder<'g> {
    /// A builder for the live nodes of `graph` (`order`), whose node `output` is read by
    /// the host; `budget` is what is left of the model's byte budget.
    pub fn new(
        graph: &'g GraphDef,
        order: &[usize],
        output: &'g str,
        budget: usize,
    ) -> Builder<'g> {
        let mut consumers: HashMap<&'g str, usize> = HashMap::new();
        for &i in order {
            for r in data_inputs(&graph.nodes[i]) {
                *consumers.entry(split_ref(r).0).or_insert(0) += 1;
            }
        }
        *consumers.entry(output).or_insert(0) += 1;
        Builder {
            vals: HashMap::new(),
            outs: HashMap::new(),
            consumers,
            steps: Vec::new(),
            consts: Vec::new(),
            buf_len: Vec::new(),
            input: None,
            budget,
            stepped: Vec::new(),
        }
    }

    /// Lower one node (its inputs are lowered already) with its op's registry function.
    pub fn lower(&mut self, node: &'g NodeDef) -> GuestResult<()> {
        let mut names: Vec<&str> = Vec::new();
        let mut ins: Vec<Val> = Vec::new();
        for r in data_inputs(node) {
            let (name, index) = split_ref(r);
            let v = if index == 0 {
                self.vals.get(name)
            } else {
                self.outs.get(&(name, index))
            };
            if v.is_none() && index != 0 {
                return bad(format!(
                    "{}: input '{}' uses output {} of a node that has no such output here \
                     (only IdentityN and Switch give more than output 0)",
                    describe(node),
                    r,
                    index
                ));
            }
            match v {
                Some(v) => ins.push(v.clone()),
                None => return bad(format!("{}: input '{}' has no value", describe(node), r)),
            }
            names.push(name);
        }
        let rewritten = REWRITTEN.iter().find(|(op, _)| *op == node.op).map(|e| e.1);
        let f = match lookup(&node.op).or(rewritten) {
            Some(f) => f,
            None => {
                return bad(format!(
                    "unsupported op '{}' (node '{}'); supported ops: {}",
                    node.op,
                    node.name,
                    supported_ops().join(", ")
                ));
            }
        };
        let before = self.steps.len();
        let v = f(self, node, &names, &ins)?;
        self.stepped.push(self.steps.len() > before);
        self.vals.insert(node.name.as_str(), v);
        Ok(())
    }
}
