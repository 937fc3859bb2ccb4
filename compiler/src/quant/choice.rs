//! A `--budget` plan as a choice in the e-graph (issue 12, step 3; the design is
//! "Bit-width choices" in `crate::rewrite`'s README).
//!
//! [`extract_plan`] takes the QDQ module of the solver's plan (built by `quantize_model`
//! and, for 1-2-bit layers, fitted by `refine_binary_with`), converts it to the
//! e-graph, and adds every other candidate of every layer as an alternative:
//!
//! - weights: the float weights re-quantized at each candidate's bits
//!   (`quantize_weights`, or `binarize_weights` for a binary candidate, each with its
//!   own per-channel scales) behind a `dequantize`, unioned into the chosen weight's
//!   `dequantize` class;
//! - activations: `dequantize(quantize_a(y))` at each candidate's activation bits, with
//!   parameters from `choose_range` of the calibrated statistics, unioned into the
//!   chosen `dequantize(quantize(y))` class, so every reader of `y` shares them.
//!
//! These unions are declared approximations (the values differ by each alternative's
//! quantization error). The rewrite groups then run as the `rewrite` pass runs them, and
//! `fuse-int` multiplies the choices out into one integer kernel per (activation bits,
//! weight bits) pair. Extraction forbids every unchosen alternative by type: each added
//! alternative has a quantized type that the plan's module does not have (checked; an
//! alternative whose type collides is left out), every node derived from it carries
//! that type or has it below, and a node of such a type costs [`FORBIDDEN`]. The
//! extracted module is therefore the plan's, which the tests check against the plain
//! `rewrite` pipeline.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use egg::Id;
use qcc_ir::{ConstData, ElemType, Module, Op, QuantParams, TensorType, ValueDef, ValueId};

use super::binary::binarize_weights;
use super::calibrate::CalibStats;
use super::insert::QuantReport;
use super::scheme::{QuantOptions, choose_range, quantize_weights};
use crate::rewrite::analysis::{QEGraph, info};
use crate::rewrite::lang::QNode;
use crate::rewrite::rules::{GROUPS, rules_of};
use crate::rewrite::{
    Converted, Limits, QRewrite, Report, StopReason, extract_with, run_rules, to_egraph,
};

/// The extra cost of a node of a forbidden (unchosen alternative's) type.
pub const FORBIDDEN: f64 = 1e15;

/// What [`extract_plan`] built and found.
#[derive(Clone, Debug, Default)]
pub struct ChoiceStats {
    /// E-nodes and e-classes of the plan's module as converted.
    pub nodes_plain: usize,
    pub classes_plain: usize,
    /// ... after the alternatives were added (before the rules ran).
    pub nodes_with_alts: usize,
    pub classes_with_alts: usize,
    /// Weight and activation alternatives added.
    pub weight_alts: usize,
    pub act_alts: usize,
    /// Alternatives left out because their type collides with a type of the plan.
    pub skipped: usize,
    /// Per layer: the (activation bits, weight bits) pairs of the integer kernels
    /// (`conv2d_int`/`matmul_int`) whose weights are one of the layer's alternatives.
    pub fused_pairs: BTreeMap<String, BTreeSet<(u32, u32)>>,
    /// The rewrite run's report (size at the end, stop reason, rules applied).
    pub report: Option<Report>,
    /// Seconds: adding the alternatives, running the rules, extracting.
    pub secs: (f64, f64, f64),
}

/// The class of value `v` of `q` in `eg` (which holds `q`, converted), by looking its
/// nodes up bottom-up.
fn class_of(
    eg: &mut QEGraph,
    q: &Module,
    v: ValueId,
    memo: &mut HashMap<ValueId, Id>,
) -> Option<Id> {
    if let Some(&id) = memo.get(&v) {
        return Some(eg.find(id));
    }
    let val = q.value(v);
    let node = match &val.def {
        ValueDef::Input => {
            let k = q.inputs.iter().position(|&i| i == v)?;
            QNode::Input(k as u32)
        }
        ValueDef::Const(data) => {
            let c = eg
                .analysis
                .tables
                .constant(&val.name, val.ty.clone(), data.clone());
            QNode::Const(c)
        }
        ValueDef::Node(nid) => {
            let n = q.node(*nid);
            let mt = eg.analysis.tables.meta(n.op, val.ty.clone(), &n.attrs);
            let mut ch = vec![eg.lookup(QNode::Meta(mt))?];
            for &o in &n.operands {
                ch.push(class_of(eg, q, o, memo)?);
            }
            QNode::Op(n.op, ch.into())
        }
    };
    let id = eg.lookup(node)?;
    memo.insert(v, id);
    Some(id)
}

fn def_node(q: &Module, v: ValueId) -> Option<&qcc_ir::Node> {
    match q.value(v).def {
        ValueDef::Node(n) => Some(q.node(n)),
        _ => None,
    }
}

/// The type of the value a node stands for.
fn node_type<'a>(eg: &'a QEGraph, n: &QNode) -> Option<&'a TensorType> {
    match n {
        QNode::Const(c) => Some(&eg.analysis.tables.get_const(*c).ty),
        QNode::Op(_, ch) => Some(&crate::rewrite::analysis::meta(eg, ch[0]).ty),
        _ => None,
    }
}

/// Builds the e-graph of `q` (the QDQ module of the plan `report` describes, from float
/// module `m`), adds the `candidates` ((weight bits, activation bits) per layer name) of
/// every layer as alternatives, runs every rewrite group, and extracts with every
/// unchosen alternative forbidden. Errors when the runner stopped early (a node or
/// iteration limit) or when the extracted module holds an alternative: the caller then
/// keeps the plain `rewrite` pipeline.
pub fn extract_plan(
    m: &Module,
    q: &Module,
    report: &QuantReport,
    stats: &CalibStats,
    opts: &QuantOptions,
    candidates: &BTreeMap<String, Vec<(u8, u8)>>,
    limits: Limits,
) -> Result<(Module, ChoiceStats), String> {
    let mut st = ChoiceStats::default();
    let t0 = Instant::now();
    let Converted {
        mut egraph,
        outputs,
        name,
    } = to_egraph(q);
    st.nodes_plain = egraph.total_number_of_nodes();
    st.classes_plain = egraph.number_of_classes();
    let plan_types: HashSet<String> = q.values.iter().map(|v| format!("{:?}", v.ty)).collect();
    let mut forbidden: HashSet<String> = HashSet::new();
    let mut memo = HashMap::new();
    // Weight-code classes per layer, to count the fused pairs.
    let mut layer_of_w: HashMap<Id, String> = HashMap::new();
    let mut acts_done: HashSet<(Id, u8)> = HashSet::new();
    let allow = |ty: &TensorType, st: &mut ChoiceStats, forbidden: &mut HashSet<String>| {
        let s = format!("{ty:?}");
        if plan_types.contains(&s) {
            st.skipped += 1;
            false
        } else {
            forbidden.insert(s);
            true
        }
    };
    for l in &report.layers {
        let Some(cands) = candidates.get(&l.name) else {
            continue;
        };
        let Some(kn) = def_node(q, l.output) else {
            continue;
        };
        let Some(fk) = def_node(m, l.output) else {
            continue;
        };
        // Weights: `dequantize(@w)` with a constant `@w`.
        let wq = kn.operands[1];
        if let Some(dq) = def_node(q, wq).filter(|n| n.op == Op::Dequantize)
            && let Some(wc) = dq.operands.first().copied()
            && q.const_data(wc).is_some()
            && let Some(ConstData::F32(wd)) = m.const_data(fk.operands[1])
            && let ElemType::Quant(qt) = &q.ty(wc).elem
            && let QuantParams::PerAxis { axis, .. } = &qt.params
            && let Some(wclass) = class_of(&mut egraph, q, wq, &mut memo)
        {
            let axis = *axis;
            let shape = m.ty(fk.operands[1]).shape.clone();
            if let Some(c) = class_of(&mut egraph, q, wc, &mut memo) {
                layer_of_w.insert(c, l.name.clone());
            }
            let wbits: BTreeSet<u8> = cands.iter().map(|&(w, _)| w).collect();
            for w in wbits {
                if w == l.wbits {
                    continue;
                }
                let (qt, codes) = if w == 1 {
                    binarize_weights(wd, &shape, axis)
                } else {
                    quantize_weights(wd, &shape, axis, w, opts.pow2)
                };
                let ty = TensorType::new(ElemType::Quant(qt), shape.clone());
                if !allow(&ty, &mut st, &mut forbidden) {
                    continue;
                }
                let cname = format!("{}.w{w}", q.value(wc).name);
                let c = egraph
                    .analysis
                    .tables
                    .constant(&cname, ty, ConstData::Int(codes));
                let cid = egraph.add(QNode::Const(c));
                layer_of_w.insert(cid, l.name.clone());
                let mt = egraph
                    .analysis
                    .tables
                    .meta(Op::Dequantize, q.ty(wq).clone(), &dq.attrs);
                let mid = egraph.add(QNode::Meta(mt));
                let alt = egraph.add(QNode::Op(Op::Dequantize, vec![mid, cid].into()));
                egraph.union(wclass, alt);
                st.weight_alts += 1;
            }
        }
        // The input activation: `dequantize(quantize(y))`.
        let xq = kn.operands[0];
        if let Some(dq) = def_node(q, xq).filter(|n| n.op == Op::Dequantize)
            && let Some(qn) = def_node(q, dq.operands[0]).filter(|n| n.op == Op::Quantize)
            && let Some(ys) = stats.get(q, qn.operands[0])
            && let Some(xclass) = class_of(&mut egraph, q, xq, &mut memo)
            && let Some(yclass) = class_of(&mut egraph, q, qn.operands[0], &mut memo)
        {
            let y = qn.operands[0];
            let abits: BTreeSet<u8> = cands.iter().map(|&(_, a)| a).filter(|&a| a > 1).collect();
            let shape = q.ty(y).shape.clone();
            for a in abits {
                if a == l.abits || !acts_done.insert((egraph.find(xclass), a)) {
                    continue;
                }
                let p = choose_range(ys, &stats.source, a, opts.symmetric_acts, opts.pow2)?;
                let ty = TensorType::new(ElemType::Quant(p.ty), shape.clone());
                if !allow(&ty, &mut st, &mut forbidden) {
                    continue;
                }
                let qm = egraph.analysis.tables.meta(Op::Quantize, ty, &qn.attrs);
                let qmid = egraph.add(QNode::Meta(qm));
                let qid = egraph.add(QNode::Op(Op::Quantize, vec![qmid, yclass].into()));
                let dm = egraph
                    .analysis
                    .tables
                    .meta(Op::Dequantize, q.ty(xq).clone(), &dq.attrs);
                let dmid = egraph.add(QNode::Meta(dm));
                let alt = egraph.add(QNode::Op(Op::Dequantize, vec![dmid, qid].into()));
                egraph.union(xclass, alt);
                st.act_alts += 1;
            }
        }
    }
    egraph.rebuild();
    st.nodes_with_alts = egraph.total_number_of_nodes();
    st.classes_with_alts = egraph.number_of_classes();
    let t1 = Instant::now();
    let names: Vec<&str> = GROUPS.iter().map(|g| g.name).collect();
    let defs = rules_of(&names, true)?;
    let refs: Vec<&QRewrite> = defs.iter().map(|d| &d.rewrite).collect();
    let (egraph, rep) = run_rules(egraph, &outputs, &refs, limits);
    let t2 = Instant::now();
    // The fused kernels each layer's classes hold, by (activation bits, weight bits).
    let layer_of_w: HashMap<Id, String> = layer_of_w
        .into_iter()
        .map(|(k, v)| (egraph.find(k), v))
        .collect();
    for class in egraph.classes() {
        for n in &class.nodes {
            if let QNode::Op(Op::Conv2dInt | Op::MatMulInt, ch) = n
                && ch.len() >= 3
                && let Some(layer) = layer_of_w.get(&egraph.find(ch[2]))
            {
                let a = info(&egraph, ch[1]).bits();
                let w = info(&egraph, ch[2]).bits();
                st.fused_pairs
                    .entry(layer.clone())
                    .or_default()
                    .insert((a, w));
            }
        }
    }
    let stopped = rep.stop_reason.clone();
    st.report = Some(rep);
    if stopped != StopReason::Saturated {
        return Err(format!(
            "the e-graph with the bit-width alternatives did not saturate ({stopped:?})"
        ));
    }
    let outputs: Vec<Id> = outputs.iter().map(|&o| egraph.find(o)).collect();
    // The metas and constants of a forbidden type, found once.
    let mut bad_metas: HashSet<Id> = HashSet::new();
    let mut bad_consts: HashSet<QNode> = HashSet::new();
    for class in egraph.classes() {
        for n in &class.nodes {
            if let Some(t) = node_type(&egraph, n)
                && forbidden.contains(&format!("{t:?}"))
            {
                match n {
                    QNode::Op(_, ch) => {
                        bad_metas.insert(egraph.find(ch[0]));
                    }
                    _ => {
                        bad_consts.insert(n.clone());
                    }
                }
            }
        }
    }
    let penalty = |n: &QNode| {
        let bad = match n {
            QNode::Op(_, ch) => bad_metas.contains(&egraph.find(ch[0])),
            _ => bad_consts.contains(n),
        };
        if bad { FORBIDDEN } else { 0.0 }
    };
    let out = extract_with(&egraph, &name, &outputs, Some(&penalty));
    let t3 = Instant::now();
    st.secs = (
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        (t3 - t2).as_secs_f64(),
    );
    if let Some(v) = out
        .values
        .iter()
        .find(|v| forbidden.contains(&format!("{:?}", v.ty)))
    {
        return Err(format!(
            "internal: the extracted plan holds an unchosen alternative ({})",
            v.name
        ));
    }
    Ok((out, st))
}
