//! Reading a node's attributes, with the error a learner can act on when one is wrong.

use super::bad;
use crate::abi::GuestResult;
use crate::engine::graphdef::{AttrValue, NodeDef};
use crate::engine::ops::{Padding, Window};

// ------------------------------------------------------------------------------ attrs
pub fn attr_ints(node: &NodeDef, key: &str) -> Option<Vec<i64>> {
    match node.attr(key) {
        Some(AttrValue::List(l)) => Some(l.i.clone()),
        _ => None,
    }
}

pub fn attr_str(node: &NodeDef, key: &str) -> Option<String> {
    match node.attr(key) {
        Some(AttrValue::S(s)) => Some(String::from_utf8_lossy(s).into_owned()),
        _ => None,
    }
}

pub fn attr_bool(node: &NodeDef, key: &str) -> Option<bool> {
    match node.attr(key) {
        Some(AttrValue::B(b)) => Some(*b),
        _ => None,
    }
}

pub fn describe(node: &NodeDef) -> String {
    format!("node '{}' ({})", node.name, node.op)
}

/// NHWC only: anything else is refused by name.
pub fn check_format(node: &NodeDef) -> GuestResult<()> {
    if let Some(f) = attr_str(node, "data_format") {
        if f != "NHWC" {
            return bad(format!(
                "{}: data_format {} is not supported (NHWC only)",
                describe(node),
                f
            ));
        }
    }
    Ok(())
}

/// A convolution's `dilations` `[1, h, w, 1]` (1 and 1 when absent).
pub fn dilations(node: &NodeDef) -> GuestResult<(usize, usize)> {
    match attr_ints(node, "dilations") {
        Some(_) => spatial(node, "dilations"),
        None => Ok((1, 1)),
    }
}

/// NHWC only, dilations of 1 only: anything else is refused by name.
pub fn check_nhwc(node: &NodeDef) -> GuestResult<()> {
    check_format(node)?;
    if let Some(d) = attr_ints(node, "dilations") {
        if d.iter().any(|&v| v != 1) {
            return bad(format!(
                "{}: dilations {:?} are not supported (only 1)",
                describe(node),
                d
            ));
        }
    }
    Ok(())
}

/// A `[1, h, w, 1]` list attribute (strides, ksize).
pub fn spatial(node: &NodeDef, key: &str) -> GuestResult<(usize, usize)> {
    match attr_ints(node, key) {
        Some(v)
            if v.len() == 4
                && v[0] == 1
                && v[3] == 1
                && v[1] >= 1
                && v[2] >= 1
                && v[1] <= 1 << 16
                && v[2] <= 1 << 16 =>
        {
            Ok((v[1] as usize, v[2] as usize))
        }
        Some(v) => bad(format!(
            "{}: {} {:?} is not supported (expected [1, h, w, 1])",
            describe(node),
            key,
            v
        )),
        None => bad(format!("{}: missing attr '{}'", describe(node), key)),
    }
}

pub fn padding(node: &NodeDef) -> GuestResult<Padding> {
    match attr_str(node, "padding").as_deref() {
        Some("SAME") => Ok(Padding::Same),
        Some("VALID") => Ok(Padding::Valid),
        Some(other) => bad(format!(
            "{}: padding {} is not supported (SAME or VALID)",
            describe(node),
            other
        )),
        None => bad(format!("{}: missing attr 'padding'", describe(node))),
    }
}

/// The largest explicit padding accepted on a side (as `Pad`'s paddings).
const MAX_PAD: i64 = 1 << 20;

/// A convolution's window: `padding` SAME or VALID as for a pool, or `EXPLICIT` with
/// `explicit_paddings` `[0, 0, top, bottom, left, right, 0, 0]` (NHWC; what
/// `tf.nn.conv2d(..., padding=[[0, 0], [t, b], [l, r], [0, 0]])` writes, and what the
/// rewrite makes of a `Pad` before a VALID convolution).
pub fn conv_window(
    node: &NodeDef,
    shape: &[usize],
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
) -> GuestResult<Window> {
    let win = if attr_str(node, "padding").as_deref() == Some("EXPLICIT") {
        Window::explicit(shape, kh, kw, sh, sw, explicit_paddings(node)?)
    } else {
        Window::new(shape, kh, kw, sh, sw, padding(node)?)
    };
    win.map_err(|e| {
        (
            crate::abi::ErrorCode::BadModel,
            format!("{}: {}", describe(node), e),
        )
    })
}

/// `explicit_paddings` as `[top, bottom, left, right]`: eight values, none on N or C.
fn explicit_paddings(node: &NodeDef) -> GuestResult<[usize; 4]> {
    match attr_ints(node, "explicit_paddings") {
        Some(p)
            if p.len() == 8
                && p[..2] == [0, 0]
                && p[6..] == [0, 0]
                && p.iter().all(|v| (0..=MAX_PAD).contains(v)) =>
        {
            Ok([p[2] as usize, p[3] as usize, p[4] as usize, p[5] as usize])
        }
        Some(p) => bad(format!(
            "{}: explicit_paddings {:?} are not supported (8 values, 0 to {} each, none on \
             the batch or channels)",
            describe(node),
            p,
            MAX_PAD
        )),
        None => bad(format!(
            "{}: padding EXPLICIT without the attr 'explicit_paddings'",
            describe(node)
        )),
    }
}
