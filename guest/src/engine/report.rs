//! "Will my model run?": a JSON report about a frozen graph, without running it.
//!
//! The report scans the graph, picks the classifier's output, lists the ops of the nodes
//! that output needs (each `supported`, `folded` into a neighbouring step, or
//! `unsupported`, with a count and one node), then tries the real load: if it succeeds the
//! report adds the input and output, the weights, the multiply-adds, and an estimate of
//! the memory pages an instance needs to load the model and run it. Whatever fails, the
//! answer is a report with `"loadable": false` and the error the load would give, never
//! an error code: a host asks once and shows the learner what to fix.

use super::graph;
use super::graphdef::{self, AttrValue, GraphDef};
use super::lower;
use super::plan::{json_dims, json_string};
use super::plan::{LiveOp, Model};

/// A wasm page.
const PAGE: usize = 65536;

/// Where the heap starts (the module's data and stack lie below): the part of memory a
/// model cannot use. 0 off wasm32, where the report is only unit-tested.
fn heap_base() -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        extern "C" {
            static __heap_base: u8;
        }
        // SAFETY: only the symbol's address is taken; the linker defines it.
        unsafe { &__heap_base as *const u8 as usize }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

/// Pages to load the model from `model_len` bytes and run it once through `infer_tensor`
/// or `infer_raw`, an estimate from above: the model's bytes (the host writes them in),
/// the decoded constants, the plan's weights twice (a convolution's folded copy and its
/// packed panels exist together while it is packed, and freed blocks are not always
/// reusable), activations and scratch, the input and output blocks, and one sixteenth
/// more for the allocator's headers and fragmentation, above the heap's start. Measured
/// on the bundled EfficientNet-Lite0: 1383 pages estimated, 1090 really used (1.27x).
pub fn estimate_pages(
    model_len: usize,
    info: &super::ModelInfo,
    input_len: usize,
    output_len: usize,
) -> usize {
    let bytes = model_len
        + info.constant_bytes
        + 2 * info.weight_bytes
        + info.activation_bytes
        + info.scratch_bytes
        + 4 * (input_len + output_len);
    let bytes = heap_base() + bytes + bytes / 16 + 4 * PAGE;
    (bytes + PAGE - 1) / PAGE
}

fn op_json(op: &str, count: usize, status: &str, example: &str) -> String {
    format!(
        "{{\"op\":{},\"count\":{},\"status\":\"{}\",\"example\":{}}}",
        json_string(op),
        count,
        status,
        json_string(example)
    )
}

/// The ops of `ops` (op, count, first node) with the status the registry gives them.
fn registry_ops(ops: &[(String, usize, String)]) -> Vec<String> {
    ops.iter()
        .map(|(op, n, ex)| {
            op_json(
                op,
                *n,
                if lower::lookup(op).is_some() {
                    "supported"
                } else {
                    "unsupported"
                },
                ex,
            )
        })
        .collect()
}

/// Every node's op, when the output (so the live part) is not known.
fn all_ops(graph: &GraphDef) -> Vec<(String, usize, String)> {
    let mut ops: Vec<(String, usize, String)> = Vec::new();
    for n in &graph.nodes {
        match ops.iter_mut().find(|o| o.0 == n.op) {
            Some(o) => o.1 += 1,
            None => ops.push((n.op.clone(), 1, n.name.clone())),
        }
    }
    ops
}

/// A loaded model's ops: a node that ran as its own step makes the op `supported`; an op
/// whose every node folded into another step (or became a renaming) is `folded`.
fn loaded_ops(ops: &[LiveOp]) -> Vec<String> {
    ops.iter()
        .map(|o| {
            let status = if o.steps > 0 || o.op == "Placeholder" || o.op == "Const" {
                "supported"
            } else {
                "folded"
            };
            op_json(&o.op, o.count, status, &o.example)
        })
        .collect()
}

/// The report, as one JSON object (see the module docs and `wasi_lab.models.check`).
pub fn report(bytes: &[u8]) -> String {
    let mut r = Report {
        model_bytes: bytes.len(),
        ..Report::default()
    };
    let graph = match graphdef::scan_graph(bytes) {
        Ok(g) => g,
        Err(e) => {
            r.error = Some(format!("not a TensorFlow GraphDef: {}", e));
            return r.to_json();
        }
    };
    r.nodes = Some(graph.nodes.len());
    let live = match graph::live(bytes, None) {
        Ok(l) => l,
        Err((_, m)) => {
            r.ops = registry_ops(&all_ops(&graph));
            r.error = Some(m);
            return r.to_json();
        }
    };
    r.live_nodes = Some(live.order.len());
    r.output = Some((live.output.clone(), None));
    r.input = live
        .nodes()
        .find(|n| n.op == "Placeholder")
        .map(|n| (n.name.clone(), placeholder_dims(bytes, n)));
    let uses: Vec<(String, usize, String)> = lower::op_uses(&live)
        .into_iter()
        .map(|u| (u.op, u.count, u.example))
        .collect();
    r.ops = registry_ops(&uses);
    drop(live);
    match Model::load(bytes, None) {
        Ok(model) => {
            let info = &model.info;
            r.loadable = true;
            r.ops = loaded_ops(&info.live_ops);
            r.input = Some((
                info.input_name.clone(),
                Some(info.input_shape.iter().map(|&d| d as i64).collect()),
            ));
            r.output = Some((info.output_name.clone(), Some(info.output_shape.clone())));
            r.weight_bytes = Some(info.weight_bytes);
            r.macs = Some(info.macs);
            r.steps = Some(info.steps);
            r.memory = Some(format!(
                "{{\"model_bytes\":{},\"constant_bytes\":{},\"weight_bytes\":{},\"activation_bytes\":{},\"scratch_bytes\":{},\"pages\":{}}}",
                bytes.len(),
                info.constant_bytes,
                info.weight_bytes,
                info.activation_bytes,
                info.scratch_bytes,
                estimate_pages(bytes.len(), info, model.input_len(), model.output_len())
            ));
            r.pages = Some(estimate_pages(
                bytes.len(),
                info,
                model.input_len(),
                model.output_len(),
            ));
        }
        Err((_, m)) => r.error = Some(m),
    }
    r.to_json()
}

/// The Placeholder's declared shape (`-1` unknown), read from its attribute alone.
fn placeholder_dims(bytes: &[u8], node: &graphdef::NodeDef) -> Option<Vec<i64>> {
    let mut n = node.clone();
    let mut budget = graphdef::MODEL_BUDGET_BYTES;
    graphdef::decode_attrs(bytes, &mut n, &mut budget).ok()?;
    match n.attr("shape") {
        Some(AttrValue::Shape(s)) => s.dims.clone(),
        _ => None,
    }
}

#[derive(Default)]
struct Report {
    loadable: bool,
    error: Option<String>,
    model_bytes: usize,
    nodes: Option<usize>,
    live_nodes: Option<usize>,
    input: Option<(String, Option<Vec<i64>>)>,
    output: Option<(String, Option<Vec<usize>>)>,
    ops: Vec<String>,
    weight_bytes: Option<usize>,
    macs: Option<u64>,
    steps: Option<usize>,
    memory: Option<String>,
    pages: Option<usize>,
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "null".to_string(), |v| v.to_string())
}

impl Report {
    fn to_json(&self) -> String {
        let tensor = |t: Option<String>| t.unwrap_or_else(|| "null".into());
        let input = tensor(self.input.as_ref().map(|(name, dims)| {
            let shape = dims.as_ref().map_or("null".to_string(), |d| {
                format!(
                    "[{}]",
                    d.iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            });
            format!("{{\"name\":{},\"shape\":{}}}", json_string(name), shape)
        }));
        let output = tensor(self.output.as_ref().map(|(name, dims)| {
            format!(
                "{{\"name\":{},\"shape\":{}}}",
                json_string(name),
                dims.as_ref().map_or("null".to_string(), |d| json_dims(d))
            )
        }));
        format!(
            "{{\"loadable\":{},\"error\":{},\"model_bytes\":{},\"nodes\":{},\"live_nodes\":{},\"input\":{},\"output\":{},\"ops\":[{}],\"weight_bytes\":{},\"macs\":{},\"steps\":{},\"memory\":{},\"pages\":{},\"supported_ops\":[{}]}}",
            self.loadable,
            self.error.as_ref().map_or("null".to_string(), |e| json_string(e)),
            self.model_bytes,
            opt(&self.nodes),
            opt(&self.live_nodes),
            input,
            output,
            self.ops.join(","),
            opt(&self.weight_bytes),
            opt(&self.macs),
            opt(&self.steps),
            self.memory.clone().unwrap_or_else(|| "null".into()),
            opt(&self.pages),
            lower::supported_ops().iter().map(|o| json_string(o)).collect::<Vec<_>>().join(","),
        )
    }
}
