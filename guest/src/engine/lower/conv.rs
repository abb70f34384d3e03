//! Sliding-window ops on NHWC tensors: `Conv2D`, `DepthwiseConv2dNative`, `AvgPool`,
//! `MaxPool`. Weights are copied (the batch norm after a convolution folds into the copy).
//! The convolutions also take `padding="EXPLICIT"` (`attrs::conv_window`); the pools take
//! SAME and VALID only.

use super::attrs::{check_format, check_nhwc, conv_window, describe, dilations, padding, spatial};
use super::{arity, bad, const_f32, rank, Builder, Val};
use crate::abi::{ErrorCode, GuestResult};
use crate::engine::graphdef::{element_count, NodeDef};
use crate::engine::ops::{spread, Act, Window};
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
    check_format(node)?;
    rank(node, &ins[0], 4, "the input")?;
    rank(node, &ins[1], 4, "the filter")?;
    let mut f = ins[1].shape().to_vec();
    let w = const_f32(node, &ins[1], "the filter")?;
    if w.is_empty() {
        return bad(format!(
            "{}: the filter {:?} has no values",
            describe(node),
            f
        ));
    }
    let (dh, dw) = dilations(node)?;
    // A dilated Conv2D visits its real taps only (`Window::with_taps`): the window is
    // sized for the spread kernel, the filter stays as written. The depthwise kernels do
    // not dilate, so a dilated depthwise filter is spread out with zeros.
    let taps = (f[0], f[1]);
    let w = if (dh, dw) == (1, 1) || !depthwise {
        if (dh, dw) != (1, 1) {
            spread_shape(node, &mut f, dh, dw)?;
        }
        b.copy(node, w)?
    } else {
        dilate(b, node, w, &mut f, dh, dw)?
    };
    let (sh, sw) = spatial(node, "strides")?;
    let win = conv_window(node, ins[0].shape(), (f[0], f[1]), (sh, sw))?;
    if f[2] != win.c {
        return bad(format!(
            "{}: the input has {} channels, the filter {:?} expects {}",
            describe(node),
            win.c,
            f,
            f[2]
        ));
    }
    let win = if depthwise {
        win
    } else {
        win.with_taps(taps, (dh, dw))
    };
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

/// `f`'s `[kh, kw]` as the kernel spread out by dilation `(dh, dw)`:
/// `[(kh - 1) * dh + 1, (kw - 1) * dw + 1]`, what TensorFlow sizes the window for.
fn spread_shape(node: &NodeDef, f: &mut [usize], dh: usize, dw: usize) -> GuestResult<()> {
    match (spread(f[0], dh), spread(f[1], dw)) {
        (Some(kh), Some(kw)) => {
            f[0] = kh;
            f[1] = kw;
            Ok(())
        }
        _ => bad(format!(
            "{}: dilations ({}, {}) of a {:?} filter are too large",
            describe(node),
            dh,
            dw,
            f
        )),
    }
}

/// A dilated filter as the plain one it equals: `[kh, kw, c, m]` spread to
/// `[(kh - 1) * dh + 1, (kw - 1) * dw + 1, c, m]` with zeros between the taps (TensorFlow
/// pads SAME for that effective size too). `f` becomes the new shape. The zeros cost
/// multiply-adds: only depthwise filters take this way (a `Conv2D` skips them).
fn dilate(
    b: &mut Builder<'_>,
    node: &NodeDef,
    w: &[f32],
    f: &mut [usize],
    dh: usize,
    dw: usize,
) -> GuestResult<Vec<f32>> {
    let (k0, k1) = (f[0], f[1]);
    spread_shape(node, f, dh, dw)?;
    let (kh, kw) = (f[0], f[1]);
    let inner = f[2] * f[3];
    let n = element_count(&[kh, kw, inner]).ok_or_else(|| {
        (
            ErrorCode::BadModel,
            format!("{}: dilated filter too large", describe(node)),
        )
    })?;
    let mut out = b.zeros(node, n)?;
    for i in 0..k0 {
        for j in 0..k1 {
            let from = (i * k1 + j) * inner;
            let to = (i * dh * kw + j * dw) * inner;
            out[to..to + inner].copy_from_slice(&w[from..from + inner]);
        }
    }
    Ok(out)
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
