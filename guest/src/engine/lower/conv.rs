//! Sliding-window ops on NHWC tensors: `Conv2D`, `DepthwiseConv2dNative`, `AvgPool`,
//! `MaxPool`. Weights are copied (the batch norm after a convolution folds into the copy).

use super::attrs::{check_nhwc, describe, padding, spatial};
use super::{arity, bad, const_f32, rank, Builder, Val};
use crate::abi::{ErrorCode, GuestResult};
use crate::engine::graphdef::NodeDef;
use crate::engine::ops::{Act, Window};
use crate::engine::plan::Kind;

pub fn conv2d<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    convolution(b, node, ins, false)
}

pub fn depthwise<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    convolution(b, node, ins, true)
}

/// Both convolutions: the same checks, the same window; the filter is HWIO for `Conv2D`
/// and HWCM (channel multiplier) for the depthwise one.
fn convolution(
    b: &mut Builder<'_>,
    node: &NodeDef,
    ins: &[Val],
    depthwise: bool,
) -> GuestResult<Val> {
    arity(node, ins, 2)?;
    check_nhwc(node)?;
    rank(node, &ins[0], 4, "the input")?;
    rank(node, &ins[1], 4, "the filter")?;
    let f = ins[1].shape().to_vec();
    let w = const_f32(node, &ins[1], "the filter")?;
    if w.is_empty() {
        return bad(format!(
            "{}: the filter {:?} has no values",
            describe(node),
            f
        ));
    }
    let w = b.copy(node, w)?;
    let (sh, sw) = spatial(node, "strides")?;
    let win = Window::new(ins[0].shape(), f[0], f[1], sh, sw, padding(node)?)
        .map_err(|e| (ErrorCode::BadModel, format!("{}: {}", describe(node), e)))?;
    if f[2] != win.c {
        return bad(format!(
            "{}: the input has {} channels, the filter {:?} expects {}",
            describe(node),
            win.c,
            f,
            f[2]
        ));
    }
    let shape_out;
    let kind = if !depthwise {
        shape_out = vec![win.n, win.oh, win.ow, f[3]];
        let bias = b.zeros(node, f[3])?;
        Kind::Conv {
            win,
            w,
            cout: f[3],
            bias,
            act: Act::None,
            packed: None,
            residual: false,
        }
    } else {
        shape_out = vec![win.n, win.oh, win.ow, f[2] * f[3]];
        let bias = b.zeros(node, f[2] * f[3])?;
        Kind::Depthwise {
            win,
            w,
            mult: f[3],
            bias,
            act: Act::None,
        }
    };
    b.push_step(node, kind, &[&ins[0]], shape_out)
}

pub fn avg_pool<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    pool(b, node, ins, false)
}

pub fn max_pool<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    pool(b, node, ins, true)
}

fn pool(b: &mut Builder<'_>, node: &NodeDef, ins: &[Val], max: bool) -> GuestResult<Val> {
    arity(node, ins, 1)?;
    check_nhwc(node)?;
    rank(node, &ins[0], 4, "the input")?;
    let (kh, kw) = spatial(node, "ksize")?;
    let (sh, sw) = spatial(node, "strides")?;
    let win = Window::new(ins[0].shape(), kh, kw, sh, sw, padding(node)?)
        .map_err(|e| (ErrorCode::BadModel, format!("{}: {}", describe(node), e)))?;
    let shape = vec![win.n, win.oh, win.ow, win.c];
    b.push_step(node, Kind::Pool { win, max }, &[&ins[0]], shape)
}
