//! Where values come from: the one input (`Placeholder`) and the constants (`Const`).

use super::attrs::describe;
use super::{bad, Builder, Val};
use crate::abi::GuestResult;
use crate::engine::graphdef::{self, AttrValue, NodeDef, DT_FLOAT};

/// The input: a float tensor of static shape (an unknown batch means one image).
pub fn placeholder<'g>(
    b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    _ins: &[Val],
) -> GuestResult<Val> {
    if let Some((first, _, _)) = &b.input {
        return bad(format!(
            "the graph needs two Placeholders ('{}' and '{}'); the engine feeds exactly one",
            first, node.name
        ));
    }
    if let Some(AttrValue::Type(t)) = node.attr("dtype") {
        if *t != DT_FLOAT {
            return bad(format!(
                "{}: input dtype {} is not float",
                describe(node),
                t
            ));
        }
    }
    let dims = match node.attr("shape") {
        Some(AttrValue::Shape(s)) => s.dims.clone(),
        _ => None,
    };
    let dims = match dims {
        Some(d) => d,
        None => {
            return bad(format!(
                "{}: the input shape is unknown; the engine needs a static shape",
                describe(node)
            ))
        }
    };
    let mut shape = Vec::new();
    for (i, &d) in dims.iter().enumerate() {
        if d == -1 && i == 0 {
            shape.push(1); // unknown batch: one image
        } else if d < 1 {
            return bad(format!(
                "{}: input dimension {} is {} (must be known)",
                describe(node),
                i,
                d
            ));
        } else {
            match graphdef::dim(d) {
                Some(d) => shape.push(d),
                None => {
                    return bad(format!(
                        "{}: input dimension {} is {}, larger than any tensor can be",
                        describe(node),
                        i,
                        d
                    ))
                }
            }
        }
    }
    let (buf, _) = b.new_buf(node, &shape)?;
    b.input = Some((node.name.clone(), buf, shape.clone()));
    Ok(Val::Dyn { shape, buf })
}

/// A constant: its decoded tensor, shared (not copied) by every step that reads it.
pub fn constant<'g>(
    _b: &mut Builder<'g>,
    node: &'g NodeDef,
    _names: &[&'g str],
    _ins: &[Val],
) -> GuestResult<Val> {
    match node.attr("value") {
        Some(AttrValue::Tensor(t)) => Ok(Val::Const {
            shape: t.shape.clone(),
            data: t.data.clone(),
        }),
        _ => bad(format!("{}: no 'value' tensor", describe(node))),
    }
}
