//! Reductions: `Mean` over constant axes, `Softmax` over the last dimension.

use super::attrs::{attr_bool, describe};
use super::{arity, axis, bad, const_ints, Builder, Val};
use crate::abi::GuestResult;
use crate::engine::graphdef::NodeDef;
use crate::engine::plan::Kind;

pub fn mean<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 2)?;
    let s = ins[0].shape().to_vec();
    let mut reduce = vec![false; s.len()];
    for a in const_ints(node, &ins[1], "the axes")? {
        reduce[axis(node, a, s.len())?] = true;
    }
    let keep = attr_bool(node, "keep_dims").unwrap_or(false);
    let shape = s
        .iter()
        .zip(&reduce)
        .filter(|(_, &r)| keep || !r)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    b.push_step(node, Kind::Mean { shape: s, reduce }, &[&ins[0]], shape)
}

pub fn softmax<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 1)?;
    let classes = *ins[0].shape().last().unwrap_or(&0);
    if classes == 0 {
        return bad(format!(
            "{}: softmax over an empty or scalar tensor {:?}",
            describe(node),
            ins[0].shape()
        ));
    }
    b.push_step(
        node,
        Kind::Softmax { classes },
        &[&ins[0]],
        ins[0].shape().to_vec(),
    )
}
