//! Elementwise ops: `Add`/`AddV2` (a per-channel constant is a bias; a convolution's output
//! plus a skip tensor is a residual fused into the convolution; anything else is a
//! broadcasting add) and the activations `Relu`, `Relu6`, and `_Swish`, `_HardSwish`,
//! `_HardSigmoid` (what [`crate::engine::rewrite`] makes of Keras' ops), each fused into
//! the step before when that step allows, else a step of its own.

use super::attrs::describe;
use super::math::{float_const, folded};
use super::{arity, charge, const_f32, zeros, Builder, Val};
use crate::abi::{ErrorCode, GuestResult};
use crate::engine::graphdef::NodeDef;
use crate::engine::ops::{self, Act, BinOp};
use crate::engine::plan::{Kind, Src};

pub fn add<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 2)?;
    let out = ops::broadcast_shape(ins[0].shape(), ins[1].shape())
        .map_err(|e| (ErrorCode::BadModel, format!("{}: {}", describe(node), e)))?;
    if let (Some(x), Some(y)) = (float_const(&ins[0]), float_const(&ins[1])) {
        // Over constants: folded (a batch norm's `variance + epsilon`).
        let (sx, sy) = (ins[0].shape(), ins[1].shape());
        return folded(b, node, out.clone(), |v| {
            ops::binary(BinOp::Add, x, sx, y, sy, &out, v)
        });
    }
    if per_channel(&ins[1], &ins[0], &out) {
        let bias = channel_values(node, &ins[1], &ins[0])?;
        charge(&mut b.budget, node, bias.len())?;
        b.affine(node, names[0], &ins[0], None, bias)
    } else if per_channel(&ins[0], &ins[1], &out) {
        let bias = channel_values(node, &ins[0], &ins[1])?;
        charge(&mut b.budget, node, bias.len())?;
        b.affine(node, names[1], &ins[1], None, bias)
    } else if let Some(v) = b.fuse_residual(node, names, ins, &out)? {
        Ok(v)
    } else {
        let kind = Kind::Add {
            a: ins[0].shape().to_vec(),
            b: ins[1].shape().to_vec(),
            out: out.clone(),
            act: Act::None,
        };
        b.push_step(node, kind, &[&ins[0], &ins[1]], out)
    }
}

/// A constant that is one value per channel of `x` (or a scalar), where `x` is computed
/// and already has the result's shape: a bias, or a per-channel scale.
pub fn per_channel(c: &Val, x: &Val, out: &[usize]) -> bool {
    let (cs, xs) = (c.shape(), x.shape());
    let n: usize = cs.iter().product();
    matches!(c, Val::Const { .. })
        && matches!(x, Val::Dyn { .. })
        && out == xs
        && !xs.is_empty()
        && (n == 1
            || (cs.len() <= xs.len() && cs.last() == xs.last() && n == *xs.last().unwrap_or(&0)))
}

/// The per-channel values of `c` for `x` (a scalar repeated).
pub fn channel_values(node: &NodeDef, c: &Val, x: &Val) -> GuestResult<Vec<f32>> {
    let d = const_f32(node, c, "the per-channel constant")?;
    let ch = *x.shape().last().unwrap_or(&1);
    Ok(if d.len() == 1 {
        let mut b = zeros(node, ch)?;
        b.iter_mut().for_each(|v| *v = d[0]);
        b
    } else {
        d.to_vec()
    })
}

pub fn relu<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 1)?;
    b.activation(node, names[0], &ins[0], Act::Relu)
}

pub fn relu6<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 1)?;
    b.activation(node, names[0], &ins[0], Act::Relu6)
}

/// `_Swish(x)`: `x * sigmoid(x)`, from [`crate::engine::rewrite`].
pub fn swish<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 1)?;
    b.activation(node, names[0], &ins[0], Act::Swish)
}

/// `_HardSigmoid(x)`: `relu6(x + 3) / 6`, from [`crate::engine::rewrite`].
pub fn hard_sigmoid<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 1)?;
    b.activation(node, names[0], &ins[0], Act::HardSigmoid)
}

/// `_HardSwish(x)`: `x * relu6(x + 3) / 6`, from [`crate::engine::rewrite`].
pub fn hard_swish<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 1)?;
    b.activation(node, names[0], &ins[0], Act::HardSwish)
}

impl<'g> Builder<'g> {
    /// `Add(conv, skip)` of two same-shaped tensors where `conv` is the last step's output,
    /// read by nothing else: the convolution adds `skip` itself (one pass over memory
    /// instead of three). `None` when the pattern does not apply.
    fn fuse_residual(
        &mut self,
        node: &NodeDef,
        names: &[&str],
        ins: &[Val],
        out: &[usize],
    ) -> GuestResult<Option<Val>> {
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
                if let Kind::Conv {
                    act: Act::None,
                    residual,
                    ..
                } = &mut step.kind
                {
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

    /// `a` as the activation of the step that computes `x`, when that step may change (it
    /// is the last one, nothing else reads `x`) and has none yet: `x` again, else `None`.
    pub fn fuse_activation(
        &mut self,
        node: &NodeDef,
        x_name: &str,
        x: &Val,
        a: Act,
    ) -> Option<Val> {
        let step = self.fusable(x_name, x)?;
        let act = step.kind.act_mut()?;
        if *act != Act::None {
            return None;
        }
        *act = a;
        step.node = node.name.clone();
        Some(x.clone())
    }

    /// `a` fused into the step before, or a step of its own (a per-channel affine step
    /// with no scale or shift).
    fn activation(&mut self, node: &NodeDef, x_name: &str, x: &Val, a: Act) -> GuestResult<Val> {
        if let Some(v) = self.fuse_activation(node, x_name, x, a) {
            return Ok(v);
        }
        let channels = (*x.shape().last().unwrap_or(&1)).max(1);
        let kind = Kind::Affine {
            channels,
            scale: None,
            shift: None,
            act: a,
        };
        self.push_step(node, kind, &[x], x.shape().to_vec())
    }
}
