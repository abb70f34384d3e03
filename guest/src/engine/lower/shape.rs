//! Ops that only move or rename values: `Identity`, `IdentityN`, `PlaceholderWithDefault`,
//! `Shape`, `Reshape`, `Squeeze`, `ExpandDims` become renamings of a buffer (no copy, no
//! step, since every shape is known at load time); `Pad` and `ConcatV2` are steps.

use super::attrs::{attr_ints, describe};
use super::math::{float_const, folded};
use super::{arity, axis, bad, const_ints, with_shape, Builder, Val};
use crate::abi::GuestResult;
use crate::engine::graphdef::{self, element_count, NodeDef, TensorData};
use crate::engine::ops;
use crate::engine::plan::Kind;
use std::rc::Rc;

pub fn identity<'g>(
    _b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 1)?;
    Ok(ins[0].clone())
}

/// `Shape` of a tensor whose shape is known: an integer constant.
pub fn shape<'g>(
    _b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 1)?;
    let s = ins[0].shape();
    Ok(Val::Const {
        shape: vec![s.len()],
        data: Rc::new(TensorData::I64(s.iter().map(|&d| d as i64).collect())),
    })
}

pub fn reshape<'g>(
    _b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 2)?;
    let want = const_ints(node, &ins[1], "the shape")?;
    if want.len() > graphdef::MAX_RANK {
        return bad(format!(
            "{}: target shape {:?} has more than {} dimensions",
            describe(node),
            want,
            graphdef::MAX_RANK
        ));
    }
    let total: usize = ins[0].shape().iter().product();
    let unknown = want.iter().filter(|&&d| d == -1).count();
    // Every known dimension as a checked usize: an i64 such as 2^32 must not
    // become 0 (or 2^32 + 224 become 224) on wasm32.
    let dims: Option<Vec<usize>> = want
        .iter()
        .filter(|&&d| d != -1)
        .map(|&d| graphdef::dim(d))
        .collect();
    let known = dims
        .as_ref()
        .and_then(|d| d.iter().try_fold(1usize, |a, &b| a.checked_mul(b)));
    let known = match known {
        Some(k) if unknown <= 1 && !(unknown == 1 && k == 0) => k,
        _ => {
            return bad(format!(
                "{}: invalid target shape {:?}",
                describe(node),
                want
            ))
        }
    };
    let shape: Vec<usize> = want
        .iter()
        .map(|&d| if d == -1 { total / known } else { d as usize })
        .collect();
    if element_count(&shape) != Some(total) {
        return bad(format!(
            "{}: cannot reshape {:?} to {:?}",
            describe(node),
            ins[0].shape(),
            want
        ));
    }
    Ok(with_shape(&ins[0], shape))
}

pub fn squeeze<'g>(
    _b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 1)?;
    let s = ins[0].shape();
    let dims = attr_ints(node, "squeeze_dims")
        .or_else(|| attr_ints(node, "axis"))
        .unwrap_or_default();
    let mut drop = vec![false; s.len()];
    if dims.is_empty() {
        for (i, &d) in s.iter().enumerate() {
            drop[i] = d == 1;
        }
    } else {
        for &a in &dims {
            let a = axis(node, a, s.len())?;
            if s[a] != 1 {
                return bad(format!(
                    "{}: cannot squeeze dimension {} of shape {:?}",
                    describe(node),
                    a,
                    s
                ));
            }
            drop[a] = true;
        }
    }
    let shape = s
        .iter()
        .zip(&drop)
        .filter(|(_, &d)| !d)
        .map(|(&v, _)| v)
        .collect();
    Ok(with_shape(&ins[0], shape))
}

/// `Pad` with zeros: a step (the padded tensor is a new buffer).
pub fn pad<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 2)?;
    let s = ins[0].shape().to_vec();
    let p = const_ints(node, &ins[1], "the paddings")?;
    if p.len() != 2 * s.len() || p.iter().any(|&v| !(0..=1 << 20).contains(&v)) {
        return bad(format!(
            "{}: paddings {:?} do not fit shape {:?}",
            describe(node),
            p,
            s
        ));
    }
    let pads: Vec<(usize, usize)> = p
        .chunks(2)
        .map(|c| (c[0] as usize, c[1] as usize))
        .collect();
    let out: Vec<usize> = s.iter().zip(&pads).map(|(&d, &(a, b))| d + a + b).collect();
    b.push_step(
        node,
        Kind::Pad {
            shape: s,
            pads,
            out: out.clone(),
        },
        &[&ins[0]],
        out,
    )
}

/// `ExpandDims`: a dimension of 1 inserted at `axis` (a renaming).
pub fn expand_dims<'g>(
    _b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 2)?;
    let a = const_ints(node, &ins[1], "the axis")?;
    let s = ins[0].shape();
    if a.len() != 1 || s.len() >= graphdef::MAX_RANK {
        return bad(format!(
            "{}: axis {:?} for shape {:?} (one axis, rank below {})",
            describe(node),
            a,
            s,
            graphdef::MAX_RANK
        ));
    }
    let at = axis(node, a[0], s.len() + 1)?;
    let mut shape = s.to_vec();
    shape.insert(at, 1);
    Ok(with_shape(&ins[0], shape))
}

/// `ConcatV2`: inputs `0..n`, then the axis. Folded when every input is a constant.
pub fn concat<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    if ins.len() < 2 {
        return bad(format!(
            "{}: expected at least one tensor and the axis",
            describe(node)
        ));
    }
    let (parts, last) = ins.split_at(ins.len() - 1);
    let a = const_ints(node, &last[0], "the axis")?;
    let first = parts[0].shape().to_vec();
    if a.len() != 1 || first.is_empty() {
        return bad(format!(
            "{}: axis {:?} for shape {:?}",
            describe(node),
            a,
            first
        ));
    }
    let at = axis(node, a[0], first.len())?;
    let mut out = first.clone();
    out[at] = 0;
    for p in parts {
        let s = p.shape();
        if s.len() != first.len() || (0..s.len()).any(|d| d != at && s[d] != first[d]) {
            return bad(format!(
                "{}: cannot concatenate {:?} and {:?} on axis {}",
                describe(node),
                first,
                s,
                at
            ));
        }
        out[at] += s[at];
    }
    let outer: usize = first[..at].iter().product();
    let inners: Vec<usize> = parts
        .iter()
        .map(|p| p.shape()[at..].iter().product())
        .collect();
    let consts: Option<Vec<&[f32]>> = parts.iter().map(float_const).collect();
    if let Some(values) = consts {
        return folded(b, node, out, |v| {
            ops::concat(|i| values[i], outer, &inners, v)
        });
    }
    let refs: Vec<&Val> = parts.iter().collect();
    b.push_step(node, Kind::Concat { outer, inners }, &refs, out)
}

/// `IdentityN`: its output 0 is its input 0 (the engine reads output 0 of a node only).
pub fn identity_n<'g>(
    _b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    match ins.first() {
        Some(v) => Ok(v.clone()),
        None => bad(format!("{}: no inputs", describe(node))),
    }
}

/// `PlaceholderWithDefault`: nothing feeds it here, so it is its default value.
pub fn placeholder_with_default<'g>(
    _b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 1)?;
    Ok(ins[0].clone())
}

/// `NoOp` carries no value: a graph may only depend on it by a control edge (`^name`).
pub fn no_op<'g>(
    _b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    _ins: &[Val],
) -> GuestResult<Val> {
    bad(format!(
        "{}: a NoOp has no value to read (only a control dependency may name it)",
        describe(node)
    ))
}
