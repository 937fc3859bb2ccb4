//! Module -> e-graph -> module.
//!
//! [`to_egraph`] adds every input, constant and node of a module (identical nodes
//! become one e-node) and records each value's origin (name, location, meta) in its
//! class. [`to_module`] prints one chosen node per class back into a module: graph
//! inputs first and in their original order (unused ones too: they are the signature),
//! then the nodes the outputs need, children before parents, in the order of a
//! depth-first walk from the outputs; outputs in their original order. Values keep
//! their original names where their class has one; values rules created get their
//! class's hint, made unique. A node keeps its location and meta when it has the op
//! its class originally had.

use std::collections::{HashMap, HashSet};

use egg::{Id, Language};
use qcc_ir::{Module, ValueDef, ValueId};

use super::analysis::{ClassData, Origin, QAnalysis, QEGraph, info, meta};
use super::lang::QNode;

/// A module as an e-graph: the graph and the classes of the outputs, in order.
#[derive(Debug)]
pub struct Converted {
    pub egraph: QEGraph,
    pub outputs: Vec<Id>,
    pub name: String,
}

/// Builds the e-graph of `m`.
pub fn to_egraph(m: &Module) -> Converted {
    let mut analysis = QAnalysis::default();
    analysis.tables.inputs = m
        .inputs
        .iter()
        .map(|&i| (m.value(i).name.clone(), m.ty(i).clone()))
        .collect();
    let mut eg = QEGraph::new(analysis);
    let mut ids: Vec<Option<Id>> = vec![None; m.values.len()];
    let set_origin = |eg: &mut QEGraph, id: Id, origin: Origin| {
        let t = eg[id].data.tensor_mut();
        if t.origin.as_ref().is_none_or(|o| origin.order < o.order) {
            t.origin = Some(origin);
        }
    };
    for (k, &i) in m.inputs.iter().enumerate() {
        let id = eg.add(QNode::Input(k as u32));
        ids[i.index()] = Some(id);
        let origin = Origin {
            order: i.0,
            name: m.value(i).name.clone(),
            op: None,
            loc: None,
            meta: Default::default(),
        };
        set_origin(&mut eg, id, origin);
    }
    for (i, v) in m.values.iter().enumerate() {
        if let ValueDef::Const(data) = &v.def {
            let c = eg
                .analysis
                .tables
                .constant(&v.name, v.ty.clone(), data.clone());
            let id = eg.add(QNode::Const(c));
            ids[i] = Some(id);
            let origin = Origin {
                order: i as u32,
                name: v.name.clone(),
                op: None,
                loc: None,
                meta: Default::default(),
            };
            set_origin(&mut eg, id, origin);
        }
    }
    for n in &m.nodes {
        let mt = eg
            .analysis
            .tables
            .meta(n.op, m.ty(n.result).clone(), &n.attrs);
        let mut ch = vec![eg.add(QNode::Meta(mt))];
        for &o in &n.operands {
            ch.push(ids[o.index()].unwrap_or_else(|| {
                panic!(
                    "internal error: operand {} used before its definition (run the verifier first)",
                    m.value(o).spelling()
                )
            }));
        }
        let id = eg.add(QNode::Op(n.op, ch.into()));
        ids[n.result.index()] = Some(id);
        let origin = Origin {
            order: n.result.0,
            name: m.value(n.result).name.clone(),
            op: Some(n.op),
            loc: n.loc.clone(),
            meta: n.meta.clone(),
        };
        set_origin(&mut eg, id, origin);
    }
    eg.rebuild();
    let outputs = m
        .outputs
        .iter()
        .map(|o| eg.find(ids[o.index()].expect("outputs are defined")))
        .collect();
    Converted {
        egraph: eg,
        outputs,
        name: m.name.clone(),
    }
}

/// Builds a module from the node `choose` picks in each class needed by `outputs`.
/// `choose` must pick an acyclic set of nodes (any extractor does).
pub fn to_module(eg: &QEGraph, name: &str, outputs: &[Id], choose: &dyn Fn(Id) -> QNode) -> Module {
    let mut m = Module::new(name);
    let mut used: HashSet<String> = HashSet::new();
    let mut fresh = |base: &str| -> String {
        let base = if base.is_empty() { "v" } else { base };
        if used.insert(base.to_string()) {
            return base.to_string();
        }
        let mut i = 1;
        loop {
            let n = format!("{base}.{i}");
            if used.insert(n.clone()) {
                return n;
            }
            i += 1;
        }
    };
    let tables = &eg.analysis.tables;
    let mut inputs = Vec::new();
    for (iname, ity) in &tables.inputs {
        inputs.push(m.add_input(fresh(iname), ity.clone()));
    }
    // The classes to print, children first: an iterative post-order walk.
    let mut order: Vec<(Id, QNode)> = Vec::new();
    let mut seen: HashSet<Id> = HashSet::new();
    let mut stack: Vec<(Id, bool)> = outputs.iter().rev().map(|&o| (eg.find(o), false)).collect();
    while let Some((c, expanded)) = stack.pop() {
        if expanded {
            order.push((c, choose(c)));
            continue;
        }
        if !seen.insert(c) {
            continue;
        }
        let node = choose(c);
        stack.push((c, true));
        for &ch in node.operands().iter().rev() {
            let ch = eg.find(ch);
            if !seen.contains(&ch) {
                stack.push((ch, false));
            }
        }
    }
    // Original names first, so that values rules created never take them.
    let mut names: HashMap<Id, String> = HashMap::new();
    for (c, node) in &order {
        if let (Some(o), false) = (&info(eg, *c).origin, matches!(node, QNode::Input(_))) {
            names.insert(*c, fresh(&o.name));
        }
    }
    let mut done: HashMap<Id, ValueId> = HashMap::new();
    for (c, node) in order {
        let t = info(eg, c);
        let mut name = |fallback: &str| {
            names
                .remove(&c)
                .unwrap_or_else(|| fresh(t.name().unwrap_or(fallback)))
        };
        let v = match &node {
            QNode::Input(i) => inputs[*i as usize],
            QNode::Const(k) => {
                let e = tables.get_const(*k);
                let n = name(&e.name);
                m.add_const(n, e.ty.clone(), e.data.clone())
            }
            QNode::Meta(_) => panic!("internal error: a meta class is not a value"),
            QNode::Op(op, ch) => {
                let mt = meta(eg, ch[0]);
                let operands: Vec<ValueId> = ch[1..].iter().map(|&o| done[&eg.find(o)]).collect();
                let fallback = match operands.first() {
                    Some(&o) => {
                        let base = &m.value(o).name;
                        let stem = base.split('.').next().unwrap_or(base);
                        format!("{stem}.{}", op.name())
                    }
                    None => op.name().to_string(),
                };
                let n = name(&fallback);
                let r = m.add_node(*op, operands, mt.attrs.clone(), n, mt.ty.clone());
                let node = m.nodes.last_mut().expect("just added");
                node.loc = t
                    .origin
                    .as_ref()
                    .and_then(|o| o.loc.clone())
                    .or(t.loc.clone());
                if let Some(o) = t.origin.as_ref().filter(|o| o.op == Some(*op)) {
                    node.meta = o.meta.clone();
                }
                r
            }
        };
        done.insert(c, v);
    }
    m.outputs = outputs.iter().map(|&o| done[&eg.find(o)]).collect();
    m
}

/// Whether class data belongs to a tensor (not a meta leaf).
pub fn is_tensor_class(eg: &QEGraph, id: Id) -> bool {
    matches!(eg[id].data, ClassData::Tensor(_))
}

/// The children of `node` that are tensors (operands), for walkers.
pub fn operand_children(node: &QNode) -> Vec<Id> {
    node.children().iter().skip(1).copied().collect()
}
