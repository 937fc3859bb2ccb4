//! Extraction: one program out of the e-graph, the cheapest under the cost model.
//!
//! Each class's cost is its cheapest node's [`node_cost`] plus the costs of its operand
//! classes (egg's bottom-up tree-cost extractor: a class shared by two users is counted
//! for each, which only matters when comparing alternatives that share work). Ties go to
//! the node egg orders first, which the `deterministic` feature makes stable. A caller
//! may add a penalty per node (the soundness test uses it to force a rule's right side;
//! bit-width selection can use it to price or forbid alternatives).

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

/// Like [`extract`], adding `extra(node)` to every node's cost.
pub fn extract_with(
    egraph: &QEGraph,
    name: &str,
    outputs: &[Id],
    extra: Option<&dyn Fn(&QNode) -> f64>,
) -> Module {
    let ex = Extractor::new(egraph, LatencyCost { egraph, extra });
    to_module(egraph, name, outputs, &|id| ex.find_best_node(id).clone())
}
