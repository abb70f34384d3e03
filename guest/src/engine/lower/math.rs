//! Broadcasting arithmetic (`Sub`, `Mul`, `RealDiv`, `Maximum`, `Minimum`) and elementwise
//! functions (`Rsqrt`, `Sqrt`, `Sigmoid`, `Tanh`, `LeakyRelu`), with TensorFlow's semantics.
//!
//! Over constants they are **folded** at load time (a new constant, no step): a batch norm
//! written out as `Rsqrt`/`Mul`/`Sub`/`AddV2` over its statistics (Keras 3) becomes one
//! per-channel scale and one shift. A `Mul` by a per-channel constant (and a `Sub` of one)
//! is then a per-channel affine step that folds into the convolution before it, exactly
//! like `FusedBatchNorm`: the model runs at fused speed.

use super::attrs::describe;
use super::elementwise::{channel_values, per_channel};
use super::{arity, bad, charge, zeros, Builder, Val};
use crate::abi::{ErrorCode, GuestResult};
use crate::engine::graphdef::{element_count, AttrValue, NodeDef, TensorData};
use crate::engine::ops::{self, Act, BinOp, UnOp};
use crate::engine::plan::Kind;
use std::rc::Rc;

/// The values of a float constant (`None` for a computed tensor or an integer one).
pub fn float_const(v: &Val) -> Option<&[f32]> {
    match v {
        Val::Const { data, .. } => match &**data {
            TensorData::F32(d) => Some(d),
            TensorData::I64(_) => None,
        },
        Val::Dyn { .. } => None,
    }
}

/// A new float constant of `shape`, filled by `fill`, charged to the model's budget.
pub fn folded(
    b: &mut Builder<'_>,
    node: &NodeDef,
    shape: Vec<usize>,
    fill: impl FnOnce(&mut [f32]),
) -> GuestResult<Val> {
    let n = match element_count(&shape) {
        Some(n) => n,
        None => {
            return bad(format!(
                "{}: a constant of shape {:?} is too large",
                describe(node),
                shape
            ))
        }
    };
    charge(&mut b.budget, node, n)?;
    let mut v = zeros(node, n)?;
    fill(&mut v);
    Ok(Val::Const {
        shape,
        data: Rc::new(TensorData::F32(v)),
    })
}

pub fn sub<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    binary(b, node, names, ins, BinOp::Sub)
}

pub fn mul<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    binary(b, node, names, ins, BinOp::Mul)
}

pub fn real_div<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    binary(b, node, names, ins, BinOp::Div)
}

pub fn maximum<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    binary(b, node, names, ins, BinOp::Max)
}

pub fn minimum<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    binary(b, node, names, ins, BinOp::Min)
}

/// `out = a (op) b`: folded over constants, a per-channel affine for `x * c` / `x - c`,
/// else a broadcasting step.
fn binary(
    b: &mut Builder<'_>,
    node: &NodeDef,
    names: &[&str],
    ins: &[Val],
    op: BinOp,
) -> GuestResult<Val> {
    arity(node, ins, 2)?;
    let out = ops::broadcast_shape(ins[0].shape(), ins[1].shape())
        .map_err(|e| (ErrorCode::BadModel, format!("{}: {}", describe(node), e)))?;
    if let (Some(x), Some(y)) = (float_const(&ins[0]), float_const(&ins[1])) {
        let (sx, sy) = (ins[0].shape(), ins[1].shape());
        return folded(b, node, out.clone(), |v| {
            ops::binary(op, x, sx, y, sy, &out, v)
        });
    }
    match op {
        BinOp::Mul => {
            for (x, c) in [(0, 1), (1, 0)] {
                if per_channel(&ins[c], &ins[x], &out) {
                    let scale = channel_values(node, &ins[c], &ins[x])?;
                    charge(&mut b.budget, node, scale.len())?;
                    let shift = b.zeros(node, scale.len())?;
                    return b.affine(node, names[x], &ins[x], Some(scale), shift);
                }
            }
        }
        BinOp::Sub if per_channel(&ins[1], &ins[0], &out) => {
            let mut shift = channel_values(node, &ins[1], &ins[0])?;
            charge(&mut b.budget, node, shift.len())?;
            shift.iter_mut().for_each(|v| *v = -*v);
            return b.affine(node, names[0], &ins[0], None, shift);
        }
        _ => {}
    }
    let kind = Kind::Binary {
        op,
        a: ins[0].shape().to_vec(),
        b: ins[1].shape().to_vec(),
        out: out.clone(),
    };
    b.push_step(node, kind, &[&ins[0], &ins[1]], out)
}

pub fn rsqrt<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    unary(b, node, ins, UnOp::Rsqrt)
}

pub fn sqrt<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    unary(b, node, ins, UnOp::Sqrt)
}

/// `Sigmoid`: the activation of the step before when it can be (a squeeze-excite gate
/// after its convolution), else a step of its own.
pub fn sigmoid<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 1)?;
    if let Some(v) = b.fuse_activation(node, names[0], &ins[0], Act::Sigmoid) {
        return Ok(v);
    }
    unary(b, node, ins, UnOp::Sigmoid)
}

pub fn tanh<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    unary(b, node, ins, UnOp::Tanh)
}

/// `LeakyRelu`: attribute `alpha`, 0.2 when absent (TensorFlow's default).
pub fn leaky_relu<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    let alpha = match node.attr("alpha") {
        Some(AttrValue::F(a)) => *a,
        _ => 0.2,
    };
    unary(b, node, ins, UnOp::LeakyRelu(alpha))
}

fn unary(b: &mut Builder<'_>, node: &NodeDef, ins: &[Val], op: UnOp) -> GuestResult<Val> {
    arity(node, ins, 1)?;
    if let Some(x) = float_const(&ins[0]) {
        return folded(b, node, ins[0].shape().to_vec(), |v| ops::unary(op, x, v));
    }
    b.push_step(
        node,
        Kind::Unary { op },
        &[&ins[0]],
        ins[0].shape().to_vec(),
    )
}
