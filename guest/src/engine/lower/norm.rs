//! Per-channel affine ops: inference-mode batch normalisation (`FusedBatchNorm(V3)`) and
//! `BiasAdd`. Both are `x * s + t` per channel; right after a convolution (or a MatMul, or
//! another affine step) they fold into it, so they cost nothing at run time.

use super::attrs::{attr_bool, check_nhwc, describe};
use super::{arity, bad, const_f32, rank, Builder, Val};
use crate::abi::GuestResult;
use crate::engine::graphdef::{AttrValue, NodeDef};
use crate::engine::ops::Act;
use crate::engine::plan::Kind;

pub fn fused_batch_norm<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    if ins.len() != 5 {
        return bad(format!(
            "{}: expected 5 data inputs, got {}",
            describe(node),
            ins.len()
        ));
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
        return bad(format!(
            "{}: scale/offset/mean/variance lengths differ",
            describe(node)
        ));
    }
    // Inference batch norm: (x - mean) / sqrt(var + eps) * gamma + beta = x * s + t.
    let s: Vec<f32> = (0..c)
        .map(|i| (gamma[i] as f64 / (var[i] as f64 + eps).sqrt()) as f32)
        .collect();
    let t: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * s[i]).collect();
    b.affine(node, names[0], &ins[0], Some(s), t)
}

pub fn bias_add<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 2)?;
    check_nhwc(node)?;
    rank(node, &ins[1], 1, "the bias")?;
    let bias = const_f32(node, &ins[1], "the bias")?;
    let bias = b.copy(node, bias)?;
    b.affine(node, names[0], &ins[0], None, bias)
}

/// `bias = bias * scale + shift` (scale `None` = 1).
fn fold(bias: &mut [f32], scale: Option<&[f32]>, shift: &[f32]) {
    for (i, b) in bias.iter_mut().enumerate() {
        *b = *b * scale.map_or(1.0, |s| s[i]) + shift[i];
    }
}

impl<'g> Builder<'g> {
    /// `y = x * scale + shift` per channel (scale `None` = 1), fused when possible.
    pub fn affine(
        &mut self,
        node: &NodeDef,
        x_name: &str,
        x: &Val,
        scale: Option<Vec<f32>>,
        shift: Vec<f32>,
    ) -> GuestResult<Val> {
        let channels = *x.shape().last().unwrap_or(&0);
        if channels == 0
            || shift.len() != channels
            || scale.as_ref().map_or(false, |s| s.len() != channels)
        {
            return bad(format!(
                "{}: {} per-channel values for input of shape {:?}",
                describe(node),
                shift.len(),
                x.shape()
            ));
        }
        if let Some(step) = self.fusable(x_name, x) {
            let folded = match &mut step.kind {
                // Not after a fused residual: (conv + r) * s + t is not a folded conv + r.
                Kind::Conv {
                    w,
                    bias,
                    act: Act::None,
                    residual: false,
                    ..
                }
                | Kind::Depthwise {
                    w,
                    bias,
                    act: Act::None,
                    ..
                } => {
                    // Output channel = innermost index of the weights in both layouts.
                    if let Some(s) = &scale {
                        for (i, v) in w.iter_mut().enumerate() {
                            *v *= s[i % channels];
                        }
                    }
                    fold(bias, scale.as_deref(), &shift);
                    true
                }
                Kind::MatMul {
                    w: Some(w),
                    bias,
                    act: Act::None,
                    ..
                } => {
                    if let Some(s) = &scale {
                        for (i, v) in w.iter_mut().enumerate() {
                            *v *= s[i % channels];
                        }
                    }
                    fold(bias, scale.as_deref(), &shift);
                    true
                }
                Kind::Affine {
                    scale: s0,
                    shift: t0,
                    act: Act::None,
                    ..
                } => {
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
        let kind = Kind::Affine {
            channels,
            scale,
            shift: Some(shift),
            act: Act::None,
        };
        self.push_step(node, kind, &[x], x.shape().to_vec())
    }
}
