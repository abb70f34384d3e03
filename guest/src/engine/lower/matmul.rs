//! `MatMul` of rank-2 tensors. A constant right-hand side is stored as `[k, n]` (transposed
//! once at load time when `transpose_b` is set); a computed one is input 1 of the step.

use super::attrs::{attr_bool, describe};
use super::{arity, bad, charge, const_f32, probe, rank, Builder, Val};
use crate::abi::GuestResult;
use crate::engine::graphdef::{NodeDef, MAX_ELEMENTS};
use crate::engine::ops::{self, Act};
use crate::engine::plan::Kind;

pub fn matmul<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 2)?;
    rank(node, &ins[0], 2, "a")?;
    rank(node, &ins[1], 2, "b")?;
    let ta = attr_bool(node, "transpose_a").unwrap_or(false);
    let tb = attr_bool(node, "transpose_b").unwrap_or(false);
    let (sa, sb) = (ins[0].shape(), ins[1].shape());
    let (m, k) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
    let (k2, n) = if tb { (sb[1], sb[0]) } else { (sb[0], sb[1]) };
    if k != k2 {
        return bad(format!(
            "{}: cannot multiply {:?} by {:?}",
            describe(node),
            sa,
            sb
        ));
    }
    if m.checked_mul(n).map_or(true, |v| v > MAX_ELEMENTS) {
        return bad(format!(
            "{}: the product of {:?} and {:?} is too large",
            describe(node),
            sa,
            sb
        ));
    }
    if let Val::Const { .. } = ins[1] {
        let w = const_f32(node, &ins[1], "b")?;
        let w = if tb {
            charge(&mut b.budget, node, w.len())?;
            probe(node, w.len())?;
            ops::transpose(w, n, k)
        } else {
            b.copy(node, w)?
        };
        let bias = b.zeros(node, n)?;
        let kind = Kind::MatMul {
            m,
            k,
            n,
            w: Some(w),
            bias,
            act: Act::None,
            trans_a: ta,
            trans_b: false,
        };
        b.push_step(node, kind, &[&ins[0]], vec![m, n])
    } else {
        let bias = b.zeros(node, n)?;
        let kind = Kind::MatMul {
            m,
            k,
            n,
            w: None,
            bias,
            act: Act::None,
            trans_a: ta,
            trans_b: tb,
        };
        b.push_step(node, kind, &[&ins[0], &ins[1]], vec![m, n])
    }
}
