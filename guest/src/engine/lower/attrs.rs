//! Reading a node's attributes, with the error a learner can act on when one is wrong.

use super::bad;
use crate::abi::GuestResult;
use crate::engine::graphdef::{AttrValue, NodeDef};
use crate::engine::ops::Padding;

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
