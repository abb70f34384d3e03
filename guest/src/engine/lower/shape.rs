//! Ops that only move or rename values: `Identity`, `IdentityN`, `PlaceholderWithDefault`,
//! `Shape`, `Reshape`, `Squeeze`, `ExpandDims` become renamings of a buffer (no copy, no
//! step, since every shape is known at load time); `Pad` and `ConcatV2` are steps.
//! `StridedSlice`, `Pack` and `Transpose` fold over constants (Keras' `Shape` ->
//! `StridedSlice` -> `Pack` -> `Reshape` is a constant shape once shapes are known) and are
//! steps otherwise (`Transpose`/`StridedSlice` as an index table planned at load time).
//! `Switch`/`Merge` on a constant predicate are renamings once [`crate::engine::graph`] has
//! pruned the branch the predicate never takes.

use super::attrs::{attr_ints, describe};
use super::math::{float_const, folded};
use super::{arity, axis, bad, charge, const_ints, with_shape, Builder, Val};
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
    join(b, node, parts, out, outer, inners)
}

/// The end ConcatV2 and Pack share: `parts` (each `outer` blocks of `inners[i]` values)
/// joined block by block; folded when every part is a float constant, else one Concat step.
fn join<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    parts: &[Val],
    out: Vec<usize>,
    outer: usize,
    inners: Vec<usize>,
) -> GuestResult<Val> {
    let consts: Option<Vec<&[f32]>> = parts.iter().map(float_const).collect();
    if let Some(values) = consts {
        return folded(b, node, out, |v| {
            ops::concat(|i| values[i], outer, &inners, v)
        });
    }
    let refs: Vec<&Val> = parts.iter().collect();
    b.push_step(node, Kind::Concat { outer, inners }, &refs, out)
}

/// `IdentityN`: its output `k` is its input `k`.
pub fn identity_n<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    for (k, v) in ins.iter().enumerate().skip(1) {
        b.outs.insert((node.name.as_str(), k), v.clone());
    }
    match ins.first() {
        Some(v) => Ok(v.clone()),
        None => bad(format!("{}: no inputs", describe(node))),
    }
}

/// `Switch(data, pred)`: both outputs are `data`. Only a constant predicate is run: the
/// graph's pruning ([`crate::engine::graph`]) has already removed every node reading the
/// output it never takes, so whichever output is read is the live one.
pub fn switch<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 2)?;
    if !matches!(&ins[1], Val::Const { data, .. } if matches!(&**data, TensorData::I64(v) if v.len() == 1))
    {
        return bad(format!(
            "{}: the predicate is computed at run time (or is not one bool); the engine folds \
             Switch/Merge only on a constant predicate (a bool Const, or a \
             PlaceholderWithDefault of one)",
            describe(node)
        ));
    }
    b.outs.insert((node.name.as_str(), 1), ins[0].clone());
    Ok(ins[0].clone())
}

/// `Merge`: the one input left live once the untaken branches are pruned.
pub fn merge<'g>(
    _b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    if ins.len() != 1 {
        return bad(format!(
            "{}: {} inputs are live; the engine folds Switch/Merge only on a constant predicate",
            describe(node),
            ins.len()
        ));
    }
    Ok(ins[0].clone())
}

/// The flat index of every element of a strided view: element `(k_0, k_1, ...)` (each
/// `k_i < dims[i].0`) is `base + sum k_i * dims[i].1`. Refuses tables too large to plan.
fn index_table(node: &NodeDef, base: i64, dims: &[(usize, i64)]) -> GuestResult<Vec<u32>> {
    let counts: Vec<usize> = dims.iter().map(|d| d.0).collect();
    let n = match element_count(&counts) {
        Some(n) => n,
        None => {
            return bad(format!(
                "{}: output {:?} is too large",
                describe(node),
                counts
            ))
        }
    };
    let mut idx: Vec<u32> = Vec::new();
    idx.try_reserve_exact(n).map_err(|_| {
        (
            crate::abi::ErrorCode::OutOfMemory,
            format!(
                "{}: cannot plan an index table of {} entries",
                describe(node),
                n
            ),
        )
    })?;
    if n == 0 {
        return Ok(idx);
    }
    let mut k = vec![0usize; dims.len()];
    let mut at = base;
    loop {
        idx.push(at as u32);
        let mut d = dims.len();
        loop {
            if d == 0 {
                return Ok(idx);
            }
            d -= 1;
            k[d] += 1;
            at += dims[d].1;
            if k[d] < dims[d].0 {
                break;
            }
            at -= dims[d].1 * dims[d].0 as i64;
            k[d] = 0;
        }
    }
}

/// Row-major element strides of `shape`.
fn strides_of(shape: &[usize]) -> Vec<i64> {
    let mut st = vec![1i64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        st[d] = st[d + 1] * shape[d + 1] as i64;
    }
    st
}

/// `input` gathered through `idx` into `shape`: a renaming when `idx` is every element in
/// order, folded over a constant, else a `Gather` step named `op`.
fn gathered<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    op: &'static str,
    input: &Val,
    idx: Vec<u32>,
    shape: Vec<usize>,
) -> GuestResult<Val> {
    let total: usize = input.shape().iter().product();
    if idx.len() == total && idx.iter().enumerate().all(|(i, &j)| i as u32 == j) {
        return Ok(with_shape(input, shape));
    }
    match input {
        Val::Const { data, .. } => match &**data {
            TensorData::I64(x) => {
                charge(&mut b.budget, node, 2 * idx.len())?;
                let mut v = vec![0i64; idx.len()];
                ops::gather(x, &idx, &mut v);
                Ok(Val::Const {
                    shape,
                    data: Rc::new(TensorData::I64(v)),
                })
            }
            TensorData::F32(x) => folded(b, node, shape, |v| ops::gather(x, &idx, v)),
        },
        Val::Dyn { .. } => {
            charge(&mut b.budget, node, idx.len())?;
            let idx = ops::GatherPlan::new(idx);
            b.push_step(node, Kind::Gather { op, idx }, &[input], shape)
        }
    }
}

fn int_attr(node: &NodeDef, key: &str) -> i64 {
    match node.attr(key) {
        Some(graphdef::AttrValue::I(v)) => *v,
        _ => 0,
    }
}

/// `StridedSlice(input, begin, end, strides)` with TensorFlow's masks (begin, end,
/// ellipsis, new axis, shrink axis): folded over a constant (`Shape(x)[0]`), else a step.
pub fn strided_slice<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 4)?;
    let begin = const_ints(node, &ins[1], "begin")?;
    let end = const_ints(node, &ins[2], "end")?;
    let step = const_ints(node, &ins[3], "strides")?;
    let m = begin.len();
    let in_shape = ins[0].shape().to_vec();
    if end.len() != m || step.len() != m || m > 64 || step.contains(&0) {
        return bad(format!(
            "{}: begin {:?}, end {:?} and strides {:?} must have one length, strides non-zero",
            describe(node),
            begin,
            end,
            step
        ));
    }
    let bit = |mask: i64, j: usize| mask >> j & 1 == 1;
    let (bm, em) = (int_attr(node, "begin_mask"), int_attr(node, "end_mask"));
    let (ell, new, shrink) = (
        int_attr(node, "ellipsis_mask"),
        int_attr(node, "new_axis_mask"),
        int_attr(node, "shrink_axis_mask"),
    );
    let rank = in_shape.len();
    let in_st = strides_of(&in_shape);
    let mut dims: Vec<(usize, i64)> = Vec::new(); // per kept input dim: (count, stride)
    let mut out_shape: Vec<usize> = Vec::new();
    let mut base = 0i64;
    let mut d = 0usize; // the input dimension the next spec entry reads
    let full = |d: usize, dims: &mut Vec<(usize, i64)>, out: &mut Vec<usize>| {
        dims.push((in_shape[d], in_st[d]));
        out.push(in_shape[d]);
    };
    let mut saw_ellipsis = false;
    for j in 0..m {
        if bit(ell, j) && !saw_ellipsis {
            saw_ellipsis = true;
            let rest = (j + 1..m).filter(|&k| !bit(new, k)).count();
            while d + rest < rank {
                full(d, &mut dims, &mut out_shape);
                d += 1;
            }
            continue;
        }
        if bit(new, j) {
            out_shape.push(1);
            continue;
        }
        if d >= rank {
            return bad(format!(
                "{}: the slice has more dimensions than the input's shape {:?}",
                describe(node),
                in_shape
            ));
        }
        let n = in_shape[d] as i64;
        // A step beyond the dimension takes one element, as a step of the dimension does:
        // clamped, no product below can overflow (i64::MIN included).
        let s = step[j].max(-n.max(1)).min(n.max(1));
        let norm = |v: i64| if v < 0 { v + n } else { v };
        if bit(shrink, j) {
            let i = norm(begin[j]);
            if i < 0 || i >= n {
                return bad(format!(
                    "{}: index {} is out of range for dimension {} of shape {:?}",
                    describe(node),
                    begin[j],
                    d,
                    in_shape
                ));
            }
            base += i * in_st[d];
            d += 1;
            continue;
        }
        let (lo, hi) = if s > 0 { (0, n) } else { (-1, n - 1) };
        let start = if bit(bm, j) {
            if s > 0 {
                0
            } else {
                n - 1
            }
        } else {
            norm(begin[j]).max(lo).min(hi)
        };
        let stop = if bit(em, j) {
            if s > 0 {
                n
            } else {
                -1
            }
        } else {
            norm(end[j]).max(lo).min(hi)
        };
        let span = if s > 0 { stop - start } else { start - stop };
        let count = if span <= 0 {
            0
        } else {
            ((span + s.abs() - 1) / s.abs()) as usize
        };
        if count > 0 {
            base += start * in_st[d];
        }
        dims.push((count, s * in_st[d]));
        out_shape.push(count);
        d += 1;
    }
    while d < rank {
        full(d, &mut dims, &mut out_shape);
        d += 1;
    }
    let idx = index_table(node, base, &dims)?;
    gathered(b, node, "StridedSlice", &ins[0], idx, out_shape)
}

/// `Transpose(x, perm)`: folded over a constant, else a step.
pub fn transpose<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    arity(node, ins, 2)?;
    let perm = const_ints(node, &ins[1], "the permutation")?;
    let s = ins[0].shape().to_vec();
    let mut seen = vec![false; s.len()];
    let ok = perm.len() == s.len()
        && perm.iter().all(|&p| {
            (0..s.len() as i64).contains(&p) && !std::mem::replace(&mut seen[p as usize], true)
        });
    if !ok {
        return bad(format!(
            "{}: {:?} is not a permutation of the {} dimensions of {:?}",
            describe(node),
            perm,
            s.len(),
            s
        ));
    }
    let st = strides_of(&s);
    let dims: Vec<(usize, i64)> = perm
        .iter()
        .map(|&p| (s[p as usize], st[p as usize]))
        .collect();
    let out: Vec<usize> = dims.iter().map(|d| d.0).collect();
    let idx = index_table(node, 0, &dims)?;
    gathered(b, node, "Transpose", &ins[0], idx, out)
}

/// `Pack` (`tf.stack`): the inputs stacked on a new axis `axis`. Folded over constants
/// (the integers of a shape being built), else a concatenation step.
pub fn pack<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    ins: &[Val],
) -> GuestResult<Val> {
    let first = match ins.first() {
        Some(v) => v.shape().to_vec(),
        None => return bad(format!("{}: no inputs", describe(node))),
    };
    if ins.iter().any(|v| v.shape() != first.as_slice()) || first.len() >= graphdef::MAX_RANK {
        return bad(format!(
            "{}: the inputs must share one shape of rank below {}",
            describe(node),
            graphdef::MAX_RANK
        ));
    }
    let at = axis(node, int_attr(node, "axis"), first.len() + 1)?;
    let mut out = first.clone();
    out.insert(at, ins.len());
    let outer: usize = first[..at].iter().product();
    let inner: usize = first[at..].iter().product();
    let inners = vec![inner; ins.len()];
    let ints: Option<Vec<&[i64]>> = ins
        .iter()
        .map(|v| match v {
            Val::Const { data, .. } => match &**data {
                TensorData::I64(d) => Some(&d[..]),
                TensorData::F32(_) => None,
            },
            Val::Dyn { .. } => None,
        })
        .collect();
    if let Some(values) = ints {
        charge(&mut b.budget, node, 2 * outer * inner * ins.len())?;
        let mut v = Vec::new();
        for o in 0..outer {
            for x in &values {
                v.extend_from_slice(&x[o * inner..(o + 1) * inner]);
            }
        }
        return Ok(Val::Const {
            shape: out,
            data: Rc::new(TensorData::I64(v)),
        });
    }
    join(b, node, ins, out, outer, inners)
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
