//! The graph as the planner sees it: node references, the output a classifier means, and
//! the nodes that output depends on, in an order where every input comes first.
//!
//! Everything here reads only names, ops and inputs, never weights, so it runs before any
//! weight is decoded: [`live`] scans the graph, picks the output, and keeps the nodes it
//! depends on; [`Live::decode`] then decodes those nodes' attributes only. An unused node,
//! or an unsupported op on a dead branch, costs nothing. The one exception is a `Switch`'s
//! predicate: when it is a bool constant, [`live`] decodes it and drops the branch it never
//! takes (see `prune_dead_branches`).

use super::graphdef::{self, GraphDef, NodeDef, MODEL_BUDGET_BYTES};
use crate::abi::{ErrorCode, GuestResult};
use std::collections::HashMap;

fn bad<T>(message: String) -> GuestResult<T> {
    Err((ErrorCode::BadModel, message))
}

/// `"name:1"` -> `("name", 1)`; `"name"` -> `("name", 0)`.
pub fn split_ref(r: &str) -> (&str, usize) {
    if let Some(pos) = r.rfind(':') {
        if let Ok(i) = r[pos + 1..].parse::<usize>() {
            return (&r[..pos], i);
        }
    }
    (r, 0)
}

/// Inputs that carry data (`^name` is a control dependency: ordering only).
pub fn data_inputs(node: &NodeDef) -> impl Iterator<Item = &str> {
    node.inputs
        .iter()
        .filter(|i| !i.starts_with('^'))
        .map(|i| i.as_str())
}

/// The output a classifier graph means: the last `Softmax`, followed through any
/// `Reshape`/`Identity`/`Squeeze` that consumes it (TF-slim's `Predictions/Reshape_1`).
pub fn default_output(graph: &GraphDef) -> GuestResult<String> {
    let mut current = match graph.nodes.iter().rev().find(|n| n.op == "Softmax") {
        Some(n) => n.name.clone(),
        None => return bad("the graph has no Softmax node; name the output node explicitly (load_model_with_output)".into()),
    };
    // The last Reshape/Identity/Squeeze reading each node, found in one pass: following a
    // chain of them is then linear in its length (a reverse scan per link was quadratic).
    let mut follower: HashMap<&str, &NodeDef> = HashMap::new();
    for n in &graph.nodes {
        if matches!(n.op.as_str(), "Reshape" | "Identity" | "Squeeze") {
            if let Some(i) = data_inputs(n).next() {
                follower.insert(split_ref(i).0, n);
            }
        }
    }
    for _ in 0..graph.nodes.len() {
        match follower.get(current.as_str()) {
            Some(n) if n.name != current => current = n.name.clone(),
            _ => break,
        }
    }
    Ok(current)
}

/// Depth-first order of the nodes `out` depends on, inputs first; errors on a cycle.
pub fn order(
    graph: &GraphDef,
    index: &HashMap<&str, usize>,
    out: usize,
) -> GuestResult<Vec<usize>> {
    const NEW: u8 = 0;
    const ACTIVE: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; graph.nodes.len()];
    let mut order = Vec::new();
    // (node, how many of its inputs were already visited)
    let mut stack: Vec<(usize, usize)> = vec![(out, 0)];
    state[out] = ACTIVE;
    while let Some(top) = stack.last_mut() {
        let node = &graph.nodes[top.0];
        match data_inputs(node).nth(top.1) {
            Some(input) => {
                top.1 += 1;
                let name = split_ref(input).0;
                let i = match index.get(name) {
                    Some(&i) => i,
                    None => {
                        return bad(format!(
                            "node '{}' ({}): input '{}' is not a node of the graph",
                            node.name, node.op, input
                        ))
                    }
                };
                match state[i] {
                    NEW => {
                        state[i] = ACTIVE;
                        stack.push((i, 0));
                    }
                    ACTIVE => {
                        let start = stack.iter().position(|&(n, _)| n == i).unwrap_or(0);
                        let mut path: Vec<&str> = stack[start..]
                            .iter()
                            .map(|&(n, _)| graph.nodes[n].name.as_str())
                            .collect();
                        path.push(name);
                        return bad(format!("the graph has a cycle: {}", path.join(" -> ")));
                    }
                    _ => {}
                }
            }
            None => {
                state[top.0] = DONE;
                order.push(top.0);
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// The part of a graph the output needs: every node (attributes undecoded until
/// [`Live::decode`]), the live ones in input-first order, and the output's name.
#[derive(Debug)]
pub struct Live {
    pub graph: GraphDef,
    pub order: Vec<usize>,
    pub output: String,
}

/// Scan `bytes`, choose the output (`output`, or the classifier's: [`default_output`]),
/// and order the nodes it depends on.
pub fn live(bytes: &[u8], output: Option<&str>) -> GuestResult<Live> {
    let mut graph = graphdef::scan_graph(bytes).map_err(|e| {
        (
            ErrorCode::BadModel,
            format!("not a TensorFlow GraphDef: {}", e),
        )
    })?;
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        if index.insert(n.name.as_str(), i).is_some() {
            return bad(format!("two nodes are named '{}'", n.name));
        }
    }
    let output_name = match output {
        Some(o) => {
            let (name, i) = split_ref(o);
            if i != 0 {
                return Err((
                    ErrorCode::BadArgument,
                    format!("output '{}': only output 0 of a node can be read", o),
                ));
            }
            if !index.contains_key(name) {
                return Err((
                    ErrorCode::BadArgument,
                    format!("no node named '{}' in the graph", name),
                ));
            }
            name.to_string()
        }
        None => default_output(&graph)?,
    };
    let out = index[output_name.as_str()];
    let mut order = order(&graph, &index, out)?;
    drop(index);
    if order.iter().any(|&i| graph.nodes[i].op == "Switch")
        && prune_dead_branches(&mut graph, bytes, &order, out)?
    {
        order = self::order(&graph, &name_index(&graph), out)?;
    }
    Ok(Live {
        graph,
        order,
        output: output_name,
    })
}

/// The `Const` a `Switch` node's predicate comes from, maybe behind `Identity` or
/// `PlaceholderWithDefault` (nothing feeds a placeholder here, so its default decides:
/// tf_keras' learning phase); `None` for a computed predicate.
fn predicate_const(graph: &GraphDef, index: &HashMap<&str, usize>, i: usize) -> Option<usize> {
    let mut at = split_ref(data_inputs(&graph.nodes[i]).nth(1)?).0;
    for _ in 0..graph.nodes.len() {
        let j = *index.get(at)?;
        let n = &graph.nodes[j];
        match n.op.as_str() {
            "Identity" | "PlaceholderWithDefault" => at = split_ref(data_inputs(n).next()?).0,
            "Const" => return Some(j),
            _ => return None,
        }
    }
    None
}

/// The output of a `Switch` whose predicate is constant `c` that it never takes: 0 (the
/// false branch) when the predicate is true, 1 when it is false.
fn untaken_output(c: &NodeDef) -> Option<usize> {
    match c.attr("value") {
        Some(graphdef::AttrValue::Tensor(t)) => match &*t.data {
            graphdef::TensorData::I64(v) if v.len() == 1 => Some(if v[0] != 0 { 0 } else { 1 }),
            _ => None,
        },
        _ => None,
    }
}

fn name_index(graph: &GraphDef) -> HashMap<&str, usize> {
    graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect()
}

/// Fold `Switch`/`Merge` on constant predicates (what `tf.cond` on a known value and TF1's
/// learning phase leave in a frozen graph): a node fed by the output a `Switch` never takes
/// is dead, as is any node fed by a dead one, except a `Merge`, which takes whichever input
/// is live. Each `Merge` keeps only its live inputs, so reordering from the output drops
/// the dead branches (and any op on them the engine does not run, such as Dropout's
/// `RandomUniform`). Returns whether anything was pruned.
fn prune_dead_branches(
    graph: &mut GraphDef,
    bytes: &[u8],
    order: &[usize],
    out: usize,
) -> GuestResult<bool> {
    // Decode the predicates' constants first (a few bools; decoding again later is a no-op).
    let preds: Vec<(usize, usize)> = {
        let index = name_index(graph);
        order
            .iter()
            .filter(|&&i| graph.nodes[i].op == "Switch")
            .filter_map(|&i| predicate_const(graph, &index, i).map(|c| (i, c)))
            .collect()
    };
    for &(_, c) in &preds {
        let mut budget = MODEL_BUDGET_BYTES;
        graphdef::decode_attrs(bytes, &mut graph.nodes[c], &mut budget).map_err(|e| {
            (
                ErrorCode::BadModel,
                format!("not a TensorFlow GraphDef: node #{}: {}", c, e),
            )
        })?;
    }
    let never: HashMap<usize, usize> = preds
        .iter()
        .filter_map(|&(i, c)| untaken_output(&graph.nodes[c]).map(|k| (i, k)))
        .collect();
    if never.is_empty() {
        return Ok(false);
    }
    let mut dead = vec![false; graph.nodes.len()];
    let mut merges: Vec<(usize, Vec<String>)> = Vec::new();
    {
        let index = name_index(graph);
        for &i in order {
            let n = &graph.nodes[i];
            let is_dead = |r: &str| {
                let (name, k) = split_ref(r);
                let j = index[name];
                dead[j] || never.get(&j) == Some(&k)
            };
            if n.op == "Merge" {
                let live: Vec<String> = n
                    .inputs
                    .iter()
                    .filter(|r| r.starts_with('^') || !is_dead(r))
                    .cloned()
                    .collect();
                if live.iter().all(|r| r.starts_with('^')) {
                    dead[i] = true;
                } else if live.len() != n.inputs.len() {
                    merges.push((i, live));
                }
            } else if data_inputs(n).any(is_dead) {
                dead[i] = true;
            }
        }
    }
    if dead[out] {
        return bad(format!(
            "the output '{}' is on a branch that its constant Switch predicate never takes",
            graph.nodes[out].name
        ));
    }
    let pruned = !merges.is_empty();
    for (i, inputs) in merges {
        graph.nodes[i].inputs = inputs;
    }
    Ok(pruned)
}

impl Live {
    /// Decode the live nodes' attributes (their constants charged to the model's budget).
    pub fn decode(&mut self, bytes: &[u8]) -> GuestResult<()> {
        let mut budget = MODEL_BUDGET_BYTES;
        for &i in &self.order {
            graphdef::decode_attrs(bytes, &mut self.graph.nodes[i], &mut budget).map_err(|e| {
                (
                    ErrorCode::BadModel,
                    format!("not a TensorFlow GraphDef: node #{}: {}", i, e),
                )
            })?;
        }
        self.graph.budget_left = budget;
        Ok(())
    }

    /// Order the live nodes again, from the same output: after [`super::rewrite`] has
    /// changed some nodes' inputs, the nodes nothing reads any more drop out.
    pub fn reorder(&mut self) -> GuestResult<()> {
        let out = match self.graph.nodes.iter().position(|n| n.name == self.output) {
            Some(i) => i,
            None => return bad(format!("no node named '{}' in the graph", self.output)),
        };
        self.order = order(&self.graph, &name_index(&self.graph), out)?;
        Ok(())
    }

    /// The live nodes, in order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeDef> {
        self.order.iter().map(move |&i| &self.graph.nodes[i])
    }
}
