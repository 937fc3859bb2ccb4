//! Extraction: one program out of the e-graph, the cheapest under the cost model.
//!
//! Each class's cost is its cheapest node's [`node_cost`] plus the costs of its operand
//! classes (egg's bottom-up tree-cost extractor: a class shared by two users is counted
//! for each, which only matters when comparing alternatives that share work). Ties go to
//! the node egg orders first, which the `deterministic` feature makes stable. A caller
//! may add a penalty per node (the soundness test uses it to force a rule's right side;
//! bit-width selection can use it to price or forbid alternatives).

use std::collections::HashMap;

use egg::{CostFunction, Extractor, Id, Language};
use qcc_ir::{Module, TensorType};

use super::analysis::{QEGraph, meta, ty};
use super::convert::to_module;
use super::cost::node_cost;
use super::lang::QNode;

/// The latency cost function over an e-graph, with an optional extra cost per node.
pub struct LatencyCost<'a> {
    pub egraph: &'a QEGraph,
    pub extra: Option<&'a dyn Fn(&QNode) -> f64>,
}

impl CostFunction<QNode> for LatencyCost<'_> {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &QNode, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        let own = match enode {
            QNode::Input(_) | QNode::Const(_) | QNode::Meta(_) => 0.0,
            QNode::Op(_, ch) => {
                let operands: Vec<&TensorType> =
                    ch[1..].iter().map(|&c| ty(self.egraph, c)).collect();
                node_cost(meta(self.egraph, ch[0]), &operands)
            }
        };
        let extra = self.extra.map_or(0.0, |f| f(enode));
        enode.fold(own + extra, |acc, c| acc + costs(c))
    }
}

/// The cheapest module computing `outputs`.
pub fn extract(egraph: &QEGraph, name: &str, outputs: &[Id]) -> Module {
    extract_with(egraph, name, outputs, None)
}

/// Tree-cost totals above this are extracted again by [`dag_choice`]: repeated counts of
/// shared classes leave f64 no precision for the differences between alternatives
/// (2^50 cost units still resolve about 1/8 of a unit).
const TREE_COST_LIMIT: f64 = (1u64 << 50) as f64;

/// Like [`extract`], adding `extra(node)` to every node's cost.
///
/// The tree cost counts a class once per user, so where values are shared many times
/// over (a layer's result sliced into many runs, each run's cost carrying the whole
/// graph below it) the totals grow geometrically with depth; past [`TREE_COST_LIMIT`]
/// the alternatives' differences are lost to rounding and the first node of a class
/// wins whatever it costs (a model split by `--sq-ratio` kept float layers that way).
/// Such e-graphs are extracted by [`dag_choice`] instead, which counts each class once.
pub fn extract_with(
    egraph: &QEGraph,
    name: &str,
    outputs: &[Id],
    extra: Option<&dyn Fn(&QNode) -> f64>,
) -> Module {
    let mut cf = LatencyCost { egraph, extra };
    let ex = Extractor::new(egraph, LatencyCost { egraph, extra });
    let blown = outputs.iter().any(|&o| {
        ex.find_best_cost(o).partial_cmp(&TREE_COST_LIMIT) != Some(std::cmp::Ordering::Less)
    });
    if blown && let Some(choice) = dag_choice(egraph, outputs, &mut cf) {
        return to_module(egraph, name, outputs, &|id| {
            choice[&egraph.find(id)].clone()
        });
    }
    to_module(egraph, name, outputs, &|id| ex.find_best_node(id).clone())
}

/// A node's own cost (without its operands').
fn own_cost(cf: &mut LatencyCost<'_>, node: &QNode) -> f64 {
    cf.cost(node, |_| 0.0)
}

/// Greedy extraction by DAG cost: each class's choice is the node whose own cost plus
/// the own costs of every class below it, each counted once, is least. Classes are
/// swept until no choice improves (at most 64 sweeps); the set of classes below each
/// choice is a bitset. A node whose operands' sets hold its own class would close a
/// cycle and is skipped. `None` when an output has no choice, or when the choices
/// reachable from the outputs still form a cycle (a class's set can go stale when a
/// class below it changes its choice later); the caller then keeps the tree cost's
/// extraction.
fn dag_choice(
    egraph: &QEGraph,
    outputs: &[Id],
    cf: &mut LatencyCost<'_>,
) -> Option<HashMap<Id, QNode>> {
    let ids: Vec<Id> = egraph.classes().map(|c| c.id).collect();
    let index: HashMap<Id, usize> = ids.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    let words = ids.len().div_ceil(64);
    struct Best {
        node: QNode,
        own: f64,
        set: Vec<u64>,
        total: f64,
    }
    let mut best: Vec<Option<Best>> = (0..ids.len()).map(|_| None).collect();
    for _ in 0..64 {
        let mut changed = false;
        for (i, &id) in ids.iter().enumerate() {
            for node in egraph[id].iter() {
                let kids: Option<Vec<usize>> = node
                    .children()
                    .iter()
                    .map(|&c| index.get(&egraph.find(c)).copied())
                    .collect();
                let Some(kids) = kids else { continue };
                if kids.iter().any(|&k| best[k].is_none()) {
                    continue;
                }
                let mut set = vec![0u64; words];
                for &k in &kids {
                    let ks = &best[k].as_ref().expect("checked").set;
                    for (w, &b) in set.iter_mut().zip(ks) {
                        *w |= b;
                    }
                }
                if set[i / 64] >> (i % 64) & 1 == 1 {
                    continue;
                }
                let own = own_cost(cf, node);
                let mut total = own;
                for (wi, &w) in set.iter().enumerate() {
                    let mut w = w;
                    while w != 0 {
                        let b = w.trailing_zeros() as usize;
                        total += best[wi * 64 + b].as_ref().map_or(0.0, |x| x.own);
                        w &= w - 1;
                    }
                }
                let better = best[i]
                    .as_ref()
                    .is_none_or(|b| total < b.total - 1e-9 * b.total.abs().max(1.0));
                if better {
                    set[i / 64] |= 1 << (i % 64);
                    best[i] = Some(Best {
                        node: node.clone(),
                        own,
                        set,
                        total,
                    });
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    // The choices reachable from the outputs, checked for cycles (iterative DFS).
    let mut state = vec![0u8; ids.len()]; // 0 unseen, 1 on the stack, 2 done
    let mut stack: Vec<(usize, bool)> = Vec::new();
    for &o in outputs {
        stack.push((*index.get(&egraph.find(o))?, false));
        while let Some((c, done)) = stack.pop() {
            if done {
                state[c] = 2;
                continue;
            }
            match state[c] {
                2 => continue,
                1 => return None,
                _ => {}
            }
            state[c] = 1;
            stack.push((c, true));
            for &k in best[c].as_ref()?.node.children() {
                let k = index[&egraph.find(k)];
                match state[k] {
                    1 => return None,
                    0 => stack.push((k, false)),
                    _ => {}
                }
            }
        }
    }
    Some(
        ids.iter()
            .zip(best)
            .filter_map(|(&id, b)| b.map(|b| (id, b.node)))
            .collect(),
    )
}
