//! Step-through hooks: what each step of the plan reads and writes, and where in linear
//! memory those values live, so a host can run the plan up to one step and read the step's
//! input, weights and output straight out of memory.
//!
//! A child module of `plan`, so it sees the plan's private fields without widening them;
//! the exports that use it are in `crate::step_exports`. Nothing here runs on the normal
//! inference path: `Model::run` is untouched apart from running "all the steps".
//!
//! Addresses are valid until the model is freed: the activation slots and the weights are
//! allocated once at load time and never move (running a step takes a slot's `Vec` out and
//! puts the same `Vec` back). A slot is reused by later steps once its value is dead, so the
//! bytes at a step's addresses are that step's values only right after `run_to(.., step)`.

use super::{json_dims, json_string, Kind, Model, Src, Step};
use crate::abi::{ErrorCode, GuestResult};
use crate::engine::kernels::gemm::NR;
use crate::engine::ops::Act;

/// Where `len` f32 values start in linear memory (a wasm32 pointer is the offset).
fn span_json(values: &[f32], len: usize, shape: &[usize]) -> String {
    format!(
        "{{\"ptr\":{},\"bytes\":{},\"shape\":{}}}",
        values.as_ptr() as usize,
        len * 4,
        json_dims(shape)
    )
}

/// One weight tensor of a step: `layout` names how its values are ordered.
fn weight_json(name: &str, values: &[f32], layout: &str, shape: &[usize]) -> String {
    format!(
        "{{\"name\":{},\"ptr\":{},\"bytes\":{},\"layout\":{},\"shape\":{}}}",
        json_string(name),
        values.as_ptr() as usize,
        values.len() * 4,
        json_string(layout),
        json_dims(shape)
    )
}

fn act_name(a: Act) -> &'static str {
    a.name()
}

impl Model {
    /// Number of steps in the plan.
    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    /// Run steps `0..=last` on `input`; the values of step `last` (its inputs and its
    /// output) are then in memory at the addresses [`Model::steps_json`] gives.
    pub fn run_to(&mut self, input: &[f32], last: usize) -> GuestResult<()> {
        if last >= self.steps.len() {
            return Err((
                ErrorCode::BadArgument,
                format!(
                    "step {} does not exist: the plan has {} steps (0..={})",
                    last,
                    self.steps.len(),
                    self.steps.len().saturating_sub(1)
                ),
            ));
        }
        self.run_with(input, None, last + 1)
    }

    fn src_values(&self, src: Src) -> &[f32] {
        match src {
            Src::Const(i) => self.consts[i].as_f32(),
            Src::Buf(s) => &self.slots[s],
        }
    }

    /// `{"input": span, "output": span, "steps": [...]}`: every step's op, node, inputs,
    /// output and weights with their addresses and byte lengths in linear memory.
    pub fn steps_json(&self) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| self.step_json(i, s))
            .collect();
        let output = self.src_values(self.output);
        format!(
            "{{\"input\":{},\"output\":{},\"steps\":[{}]}}",
            span_json(
                &self.slots[self.input_slot],
                self.input_len,
                &self.info.input_shape
            ),
            span_json(output, self.output_len, &self.info.output_shape),
            steps.join(",")
        )
    }

    fn step_json(&self, index: usize, s: &Step) -> String {
        let inputs: Vec<String> = s
            .inputs
            .iter()
            .zip(&s.in_lens)
            .zip(&s.in_shapes)
            .map(|((&src, &n), shape)| {
                let kind = if let Src::Const(_) = src {
                    "constant"
                } else {
                    "activation"
                };
                let span = span_json(self.src_values(src), n, shape);
                format!("{{\"kind\":\"{}\",{}", kind, &span[1..])
            })
            .collect();
        let output = span_json(&self.slots[s.out], s.out_len, &s.out_shape);
        format!(
            "{{\"index\":{},\"op\":{},\"node\":{},\"macs\":{},\"inputs\":[{}],\"output\":{},\"weights\":[{}],{}}}",
            index,
            json_string(&s.kind.label()),
            json_string(&s.node),
            s.kind.macs(),
            inputs.join(","),
            output,
            weights(&s.kind).join(","),
            params(&s.kind)
        )
    }
}

/// The weights a step's kernel reads, in the layout it reads them.
fn weights(kind: &Kind) -> Vec<String> {
    match kind {
        Kind::Conv {
            win,
            w,
            cout,
            bias,
            packed,
            ..
        } => match packed {
            Some(p) => vec![
                weight_json(
                    "panels",
                    p.panels(),
                    "packed-panels",
                    &[(cout + NR - 1) / NR, p.k, NR],
                ),
                weight_json("bias", p.bias(), "padded", &[p.bias().len()]),
            ],
            None => vec![
                weight_json("filter", w, "HWIO", &[win.kh, win.kw, win.c, *cout]),
                weight_json("bias", bias, "per-channel", &[bias.len()]),
            ],
        },
        Kind::Depthwise {
            win, w, mult, bias, ..
        } => vec![
            weight_json("filter", w, "HWCM", &[win.kh, win.kw, win.c, *mult]),
            weight_json("bias", bias, "per-channel", &[bias.len()]),
        ],
        Kind::MatMul { k, n, w, bias, .. } => {
            let mut out = Vec::new();
            if let Some(w) = w {
                out.push(weight_json("matrix", w, "KN", &[*k, *n]));
            }
            out.push(weight_json("bias", bias, "per-channel", &[bias.len()]));
            out
        }
        Kind::Affine { scale, shift, .. } => {
            let mut out = Vec::new();
            if let Some(s) = scale {
                out.push(weight_json("scale", s, "per-channel", &[s.len()]));
            }
            if let Some(t) = shift {
                out.push(weight_json("shift", t, "per-channel", &[t.len()]));
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The op's parameters: window geometry, fused activation, channels.
fn params(kind: &Kind) -> String {
    let window = |w: &crate::engine::ops::Window| {
        format!(
            "\"window\":{{\"kh\":{},\"kw\":{},\"sh\":{},\"sw\":{},\"pad_top\":{},\"pad_left\":{},\"dh\":{},\"dw\":{}}}",
            w.kh, w.kw, w.sh, w.sw, w.pt, w.pl, w.dh, w.dw
        )
    };
    let act = |a: &Act| format!("\"act\":\"{}\"", act_name(*a));
    match kind {
        Kind::Conv {
            win,
            cout,
            act: a,
            packed,
            residual,
            ..
        } => format!(
            "{},{},\"cout\":{},\"packed\":{},\"residual\":{},\"nr\":{}",
            window(win),
            act(a),
            cout,
            packed.is_some(),
            residual,
            NR
        ),
        Kind::Depthwise {
            win, mult, act: a, ..
        } => format!("{},{},\"mult\":{}", window(win), act(a), mult),
        Kind::Pool { win, max } => format!("{},\"max\":{}", window(win), max),
        Kind::Affine {
            channels, act: a, ..
        } => format!("{},\"channels\":{}", act(a), channels),
        Kind::Add { act: a, .. } => act(a),
        Kind::MatMul {
            m,
            k,
            n,
            act: a,
            trans_a,
            trans_b,
            ..
        } => {
            format!(
                "{},\"m\":{},\"k\":{},\"n\":{},\"trans_a\":{},\"trans_b\":{}",
                act(a),
                m,
                k,
                n,
                trans_a,
                trans_b
            )
        }
        Kind::Mean { .. } => "\"act\":\"none\"".to_string(),
        Kind::Softmax { classes } => format!("\"act\":\"none\",\"classes\":{}", classes),
        Kind::Pad { .. }
        | Kind::Binary { .. }
        | Kind::Unary { .. }
        | Kind::Concat { .. }
        | Kind::Gather { .. } => "\"act\":\"none\"".to_string(),
    }
}
