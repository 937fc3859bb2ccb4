//! The bit-width choice in the e-graph (issue 12, step 3; the design is "Bit-width
//! choices" in `crate::rewrite`'s README). Two steps use one construction:
//!
//! 1. [`fusable_candidates`] decides what the choice is made among. It quantizes the
//!    model with every layer at its widest candidate, converts that QDQ module to the
//!    e-graph and adds every other candidate of every layer as an alternative:
//!    - weights: the float weights re-quantized at each candidate's bits
//!      (`quantize_weights`, or `binarize_weights` for 1-bit weights, each with its own
//!      per-channel scales) behind a `dequantize`, unioned into the weight's
//!      `dequantize` class;
//!    - activations: `dequantize(quantize_a(y))` at each candidate's activation bits,
//!      parameters from `choose_range` of the calibrated statistics, unioned into the
//!      `dequantize(quantize(y))` class, so every reader of `y` shares one choice;
//!    - binarized layers: the layer as `quantize_model` binarizes it (the input
//!      `binarize(x - t)`, binary weights, the folded bias), unioned into the layer's
//!      result class.
//!
//!    The rewrite groups then run to saturation; `fuse-int` multiplies the choices out
//!    into integer kernels, one per (weight bits, activation bits) pair that fuses, and
//!    each `conv2d_int`/`matmul_int` node is read back as a candidate (its weight
//!    constant's name, through the suffixes rewrites add; its input's quantized type).
//!    The exact solver (`budget::solve_exact`, an ILP with the shared-activation
//!    constraint) and `--select attention` choose among these candidates only.
//! 2. [`extract_plan`] fuses the chosen plan: its QDQ module (built by `quantize_model`
//!    and, for 1-2-bit layers, fitted by `refine_binary_with`, which needs the plan) gets
//!    the same alternatives, the rules run again, and extraction forbids every unchosen
//!    alternative by type: each added alternative has a quantized type that the plan's
//!    module does not have (checked; an alternative whose type collides is left out),
//!    every node derived from it carries that type or has it below, and a node of such a
//!    type costs [`FORBIDDEN`]. The extracted module is therefore the plan's, which the
//!    tests check against the plain `rewrite` pipeline.
//!
//! These unions are declared approximations (the values differ by each alternative's
//! quantization error), never exact rewrites.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use egg::Id;
use qcc_ir::{ConstData, ElemType, Module, Op, QuantParams, TensorType, ValueDef, ValueId};

use super::binary::binarize_weights;
use super::calibrate::CalibStats;
use super::insert::{QuantReport, source};
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
    /// Binarized layers added as alternatives of their results.
    pub binary_alts: usize,
    /// Per layer: the candidates, (weight bits, activation bits), that the saturated
    /// e-graph holds an integer kernel (`conv2d_int`/`matmul_int`) for.
    pub fused_pairs: BTreeMap<String, BTreeSet<(u8, u8)>>,
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
    class_in(eg, q, v, None, memo)
}

/// The class of value `v` of `q` in `eg`: with `add`, nodes that are new are added
/// (constants named in the map take that name when new); without it, every node must be
/// there already.
fn class_in(
    eg: &mut QEGraph,
    q: &Module,
    v: ValueId,
    add: Option<&HashMap<ValueId, String>>,
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
            let name = add.and_then(|r| r.get(&v)).unwrap_or(&val.name);
            QNode::Const(
                eg.analysis
                    .tables
                    .constant(name, val.ty.clone(), data.clone()),
            )
        }
        ValueDef::Node(nid) => {
            let n = q.node(*nid);
            let mt = QNode::Meta(eg.analysis.tables.meta(n.op, val.ty.clone(), &n.attrs));
            let mut ch = vec![if add.is_some() {
                eg.add(mt)
            } else {
                eg.lookup(mt)?
            }];
            for &o in &n.operands {
                ch.push(class_in(eg, q, o, add, memo)?);
            }
            QNode::Op(n.op, ch.into())
        }
    };
    let id = if add.is_some() {
        eg.add(node)
    } else {
        eg.lookup(node)?
    };
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

/// How the alternatives of an e-graph are recognised after the rules ran.
#[derive(Default)]
struct Alternatives {
    /// The types of the added alternatives (none is a type of the plan's module).
    forbidden: HashSet<String>,
    /// Weight constants by name (a transposed copy adds `.t`): (layer, weight bits).
    weights: HashMap<String, (String, u8)>,
    /// The element types of binarized inputs (codes of a 2-bit type, one bit each);
    /// other quantized inputs stand for their storage bits.
    binarized: HashSet<String>,
}

impl Alternatives {
    /// The (weight bits, activation bits) candidate an integer kernel node stands for,
    /// with its layer.
    fn kernel_candidate(&self, eg: &QEGraph, n: &QNode) -> Option<(String, (u8, u8))> {
        let QNode::Op(Op::Conv2dInt | Op::MatMulInt, ch) = n else {
            return None;
        };
        if ch.len() < 3 {
            return None;
        }
        let (layer, w) = eg[ch[2]].nodes.iter().find_map(|wn| match wn {
            QNode::Const(c) => {
                // Rewrites name what they derive from a weight constant by a suffix:
                // `.t` (transposed), `.b1` (bipolar), `.bn` (batch norm folded).
                let mut name = eg.analysis.tables.get_const(*c).name.as_str();
                while let Some(base) = [".t", ".b1", ".bn"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                {
                    name = base;
                }
                self.weights.get(name).cloned()
            }
            _ => None,
        })?;
        let elem = &info(eg, ch[1]).ty.elem;
        let a = match elem {
            ElemType::Bipolar => 1,
            ElemType::Quant(_) if self.binarized.contains(&format!("{elem:?}")) => 1,
            ElemType::Quant(q) => q.storage.bits,
            _ => return None,
        };
        Some((layer, (w, a)))
    }

    /// Per layer, the candidates the e-graph holds an integer kernel for.
    fn kernels(&self, eg: &QEGraph) -> BTreeMap<String, BTreeSet<(u8, u8)>> {
        let mut out: BTreeMap<String, BTreeSet<(u8, u8)>> = BTreeMap::new();
        for class in eg.classes() {
            for n in &class.nodes {
                if let Some((layer, c)) = self.kernel_candidate(eg, n) {
                    out.entry(layer).or_default().insert(c);
                }
            }
        }
        out
    }
}

/// Adds every candidate of `candidates` ((weight bits, activation bits) per layer name)
/// other than the plan's as an alternative to `egraph`, which holds `q` (the QDQ module
/// of the plan `report` describes, from float module `m`), converted:
/// weight codes at the other weight bits and activation quantizers at the other
/// activation bits (above 1). Binarized layers (`(1, 1)`) are added by
/// [`add_binarized`].
#[allow(clippy::too_many_arguments)]
fn add_alternatives(
    egraph: &mut QEGraph,
    m: &Module,
    q: &Module,
    report: &QuantReport,
    stats: &CalibStats,
    opts: &QuantOptions,
    candidates: &BTreeMap<String, Vec<(u8, u8)>>,
    memo: &mut HashMap<ValueId, Id>,
    st: &mut ChoiceStats,
) -> Result<Alternatives, String> {
    let plan_types: HashSet<String> = q.values.iter().map(|v| format!("{:?}", v.ty)).collect();
    let mut alts = Alternatives::default();
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
        // The plan's own binarized input (a cast of `binarize`, not a quantize).
        if l.wbits == 1
            && l.abits == 1
            && let Some(dq) = def_node(q, kn.operands[0]).filter(|n| n.op == Op::Dequantize)
        {
            alts.binarized
                .insert(format!("{:?}", q.ty(dq.operands[0]).elem));
        }
        // Weights: `dequantize(@w)` with a constant `@w`.
        let wq = kn.operands[1];
        if let Some(dq) = def_node(q, wq).filter(|n| n.op == Op::Dequantize)
            && let Some(wc) = dq.operands.first().copied()
            && q.const_data(wc).is_some()
            && let Some(ConstData::F32(wd)) = m.const_data(fk.operands[1])
            && let ElemType::Quant(qt) = &q.ty(wc).elem
            && let QuantParams::PerAxis { axis, .. } = &qt.params
            && let Some(wclass) = class_of(egraph, q, wq, memo)
        {
            let axis = *axis;
            let shape = m.ty(fk.operands[1]).shape.clone();
            let wname = q.value(wc).name.clone();
            alts.weights
                .insert(wname.clone(), (l.name.clone(), l.wbits));
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
                if !allow(&ty, st, &mut alts.forbidden) {
                    continue;
                }
                let cname = format!("{wname}.w{w}");
                alts.weights.insert(cname.clone(), (l.name.clone(), w));
                let c = egraph
                    .analysis
                    .tables
                    .constant(&cname, ty, ConstData::Int(codes));
                let cid = egraph.add(QNode::Const(c));
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
        // The input activation: `dequantize(quantize(y))`, possibly under data movement
        // (max-pool, flatten, ...) that the rules move the quantizers through.
        let xq = source(q, kn.operands[0]);
        if let Some(dq) = def_node(q, xq).filter(|n| n.op == Op::Dequantize)
            && let Some(qn) = def_node(q, dq.operands[0]).filter(|n| n.op == Op::Quantize)
            && let Some(ys) = stats.get(q, qn.operands[0])
            && let Some(xclass) = class_of(egraph, q, xq, memo)
            && let Some(yclass) = class_of(egraph, q, qn.operands[0], memo)
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
                if !allow(&ty, st, &mut alts.forbidden) {
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
    Ok(alts)
}

/// Per layer name, the (weight bits, activation bits) candidates with an integer kernel.
pub type Fusable = BTreeMap<String, BTreeSet<(u8, u8)>>;

/// Adds the binarized form of every layer `qb` binarizes (the QDQ module of the same
/// float module with those layers at `(1, 1)`) as an alternative of that layer's result
/// in `egraph`, which holds `q` (`report` describes it): the binarized input, the
/// binary weights (named as the 1-bit weight alternative) and the folded bias.
#[allow(clippy::too_many_arguments)]
fn add_binarized(
    egraph: &mut QEGraph,
    q: &Module,
    report: &QuantReport,
    qb: &Module,
    report_b: &QuantReport,
    memo: &mut HashMap<ValueId, Id>,
    alts: &mut Alternatives,
    st: &mut ChoiceStats,
) {
    let mut rename = HashMap::new();
    let mut outs = Vec::new();
    for lb in report_b
        .layers
        .iter()
        .filter(|l| l.wbits == 1 && l.abits == 1)
    {
        let Some(l) = report.layers.iter().find(|l| l.name == lb.name) else {
            continue;
        };
        let Some(kn) = def_node(qb, lb.output) else {
            continue;
        };
        if let Some(dq) = def_node(qb, kn.operands[1]).filter(|n| n.op == Op::Dequantize)
            && let Some(&wc) = dq.operands.first()
        {
            let name = format!("{}.w1", qb.value(wc).name);
            alts.weights.insert(name.clone(), (l.name.clone(), 1));
            rename.insert(wc, name);
        }
        if let Some(dq) = def_node(qb, kn.operands[0]).filter(|n| n.op == Op::Dequantize) {
            let ty = qb.ty(dq.operands[0]);
            alts.binarized.insert(format!("{:?}", ty.elem));
            alts.forbidden.insert(format!("{ty:?}"));
        }
        outs.push((l.output, lb.output));
    }
    let mut memo_b = HashMap::new();
    for (o, ob) in outs {
        if let (Some(c), Some(cb)) = (
            class_of(egraph, q, o, memo),
            class_in(egraph, qb, ob, Some(&rename), &mut memo_b),
        ) {
            egraph.union(c, cb);
            st.binary_alts += 1;
        }
    }
}

/// Runs every rewrite group on `egraph`.
fn saturate(egraph: QEGraph, outputs: &[Id], limits: Limits) -> Result<(QEGraph, Report), String> {
    let names: Vec<&str> = GROUPS.iter().map(|g| g.name).collect();
    let defs = rules_of(&names, true)?;
    let refs: Vec<&QRewrite> = defs.iter().map(|d| &d.rewrite).collect();
    Ok(run_rules(egraph, outputs, &refs, limits))
}

/// The candidates that fuse: per layer, the (weight bits, activation bits) of
/// `candidates` for which the saturated e-graph holds an integer kernel. The e-graph
/// starts from `m` quantized with every layer at its widest candidate (8 bits where
/// offered), every other candidate added as an alternative ([`add_alternatives`]), and
/// every binarizable layer's binarized form ([`add_binarized`]); the rules then multiply
/// the alternatives out, and each `conv2d_int`/`matmul_int` node is read back as the
/// candidate of its weight constant and its input's quantized type. The choice under a
/// budget is made among these (`budget::Problem::restrict`), so it never picks a
/// combination the rewrites cannot fuse.
pub fn fusable_candidates(
    m: &Module,
    stats: &CalibStats,
    opts: &QuantOptions,
    candidates: &BTreeMap<String, Vec<(u8, u8)>>,
    limits: Limits,
) -> Result<(Fusable, ChoiceStats), String> {
    let mut st = ChoiceStats::default();
    let t0 = Instant::now();
    let widest = |c: &Vec<(u8, u8)>| c.iter().copied().filter(|&(w, a)| (w, a) != (1, 1)).max();
    let mut base = opts.clone();
    base.layer_bits = candidates
        .iter()
        .filter_map(|(l, c)| Some((l.clone(), widest(c)?)))
        .collect();
    let (q, report) = super::quantize_model(m, stats, &base)?;
    let Converted {
        mut egraph,
        outputs,
        ..
    } = to_egraph(&q);
    st.nodes_plain = egraph.total_number_of_nodes();
    st.classes_plain = egraph.number_of_classes();
    let mut memo = HashMap::new();
    let mut alts = add_alternatives(
        &mut egraph,
        m,
        &q,
        &report,
        stats,
        opts,
        candidates,
        &mut memo,
        &mut st,
    )?;
    // Readers of one activation must agree on its bits: a layer is binarized where
    // every reader of its input can be.
    let mut all_binary: HashMap<&str, bool> = HashMap::new();
    for l in &report.layers {
        let b = candidates.get(&l.name).is_some_and(|c| c.contains(&(1, 1)));
        *all_binary.entry(l.act_value.as_str()).or_insert(true) &= b;
    }
    let mut bin = base.clone();
    for l in &report.layers {
        if all_binary.get(l.act_value.as_str()) == Some(&true) {
            bin.layer_bits.insert(l.name.clone(), (1, 1));
        }
    }
    if bin.layer_bits != base.layer_bits {
        match super::quantize_model(m, stats, &bin) {
            Ok((qb, report_b)) => add_binarized(
                &mut egraph,
                &q,
                &report,
                &qb,
                &report_b,
                &mut memo,
                &mut alts,
                &mut st,
            ),
            Err(e) => return Err(format!("the binarized alternatives: {e}")),
        }
    }
    egraph.rebuild();
    st.nodes_with_alts = egraph.total_number_of_nodes();
    st.classes_with_alts = egraph.number_of_classes();
    let t1 = Instant::now();
    let (egraph, rep) = saturate(egraph, &outputs, limits)?;
    let t2 = Instant::now();
    // (The binarized input also meets the other weight alternatives, since the binary
    // weights are the 1-bit alternative's constant: pairs no candidate asks for.)
    let mut kernels = alts.kernels(&egraph);
    for (l, ks) in &mut kernels {
        if let Some(c) = candidates.get(l) {
            ks.retain(|k| c.contains(k));
        }
    }
    st.fused_pairs = kernels.clone();
    let stopped = rep.stop_reason.clone();
    st.report = Some(rep);
    st.secs = ((t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64(), 0.0);
    if stopped != StopReason::Saturated {
        return Err(format!(
            "the e-graph with the bit-width alternatives did not saturate ({stopped:?})"
        ));
    }
    Ok((kernels, st))
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
    let mut memo = HashMap::new();
    let alts = add_alternatives(
        &mut egraph,
        m,
        q,
        report,
        stats,
        opts,
        candidates,
        &mut memo,
        &mut st,
    )?;
    egraph.rebuild();
    st.nodes_with_alts = egraph.total_number_of_nodes();
    st.classes_with_alts = egraph.number_of_classes();
    let t1 = Instant::now();
    let (egraph, rep) = saturate(egraph, &outputs, limits)?;
    let t2 = Instant::now();
    st.fused_pairs = alts.kernels(&egraph);
    let forbidden = alts.forbidden;
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
