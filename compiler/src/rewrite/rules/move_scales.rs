//! Moving quantization through data movement: `dequantize` and `quantize` are
//! elementwise, so they commute with ops that only move or select elements, and with
//! `max_pool`, since both are monotone (a positive scale keeps order).
//!
//! Directions: dequantize moves *down* (`op(dequantize(x)) -> dequantize(op(x))`), so
//! data movement happens on narrow codes and the dequantize meets the next float op;
//! quantize moves *up* (`quantize(op(y)) -> op(quantize(y))`), so it meets the op that
//! produced `y` (a conv2d, a relu) and can fuse with it. The quantized type of the moved
//! op's result follows the op's type rule (`qcc_ir::typing::infer`), which moves a
//! per-axis parameter axis with the data and refuses to split or merge it; where it
//! refuses, the rule does not apply.
//!
//! Selection and order: `where` selects elements and `max`/`min` pick one of two, so a
//! dequantize of one per-tensor type on both operands moves below them (quantize moves
//! above `where`); `arg_max`, `arg_min`, `top_k`, `top_k_indices` and the comparisons
//! read only the order of their operands, which a dequantize keeps exactly where it is
//! strictly increasing on the codes (storage of at most 16 bits, a tame scale: see
//! [`strictly_increasing`]), so they run on the codes.

use egg::{Id, Subst};
use qcc_ir::typing::infer;
use qcc_ir::verify::verify_types;
use qcc_ir::{ElemType, Op, QuantParams, QuantType, TensorType};

use crate::rewrite::analysis::{QEGraph, meta, per_tensor, ty};
use crate::rewrite::build::{add_op, attrs, op_nodes, scales_tame};
use crate::rewrite::rule::{Exactness, RuleDef, rule, rule_on_op, var};

/// Unary ops quantization moves through, with their rule names.
const MOVERS: &[(Op, &str, &str)] = &[
    (
        Op::MaxPool,
        "dequantize-through-max-pool",
        "quantize-through-max-pool",
    ),
    (
        Op::Reshape,
        "dequantize-through-reshape",
        "quantize-through-reshape",
    ),
    (
        Op::Flatten,
        "dequantize-through-flatten",
        "quantize-through-flatten",
    ),
    (
        Op::Transpose,
        "dequantize-through-transpose",
        "quantize-through-transpose",
    ),
    (
        Op::Squeeze,
        "dequantize-through-squeeze",
        "quantize-through-squeeze",
    ),
    (
        Op::Unsqueeze,
        "dequantize-through-unsqueeze",
        "quantize-through-unsqueeze",
    ),
    (
        Op::Slice,
        "dequantize-through-slice",
        "quantize-through-slice",
    ),
];

pub fn rules() -> Vec<RuleDef> {
    let mut out = Vec::new();
    out.push(rule(
        "dequantize-through-where",
        Exactness::Exact,
        "(where ?om ?c (dequantize ?da ?a) (dequantize ?db ?b))",
        dequantize_through_pair,
    ));
    out.push(rule(
        "quantize-through-where",
        Exactness::Exact,
        "(quantize ?qm (where ?om ?c ?y1 ?y2))",
        quantize_through_where,
    ));
    for (op, name) in [
        (Op::Max, "dequantize-through-max"),
        (Op::Min, "dequantize-through-min"),
    ] {
        out.push(rule(
            name,
            Exactness::Exact,
            &format!(
                "({} ?om (dequantize ?da ?a) (dequantize ?db ?b))",
                op.name()
            ),
            dequantize_through_pair,
        ));
    }
    for (op, name) in [
        (Op::Equal, "compare-codes-equal"),
        (Op::Less, "compare-codes-less"),
        (Op::LessOrEqual, "compare-codes-less-or-equal"),
    ] {
        out.push(rule(
            name,
            Exactness::Exact,
            &format!(
                "({} ?om (dequantize ?da ?a) (dequantize ?db ?b))",
                op.name()
            ),
            compare_codes,
        ));
    }
    for (op, name) in [
        (Op::ArgMax, "arg-max-of-codes"),
        (Op::ArgMin, "arg-min-of-codes"),
        (Op::TopKIndices, "top-k-indices-of-codes"),
    ] {
        out.push(rule(
            name,
            Exactness::Exact,
            &format!("({} ?om (dequantize ?d ?x))", op.name()),
            order_of_codes,
        ));
    }
    out.push(rule(
        "dequantize-through-top-k",
        Exactness::Exact,
        "(top_k ?om (dequantize ?d ?x))",
        dequantize_through_top_k,
    ));
    for &(op, down, up) in MOVERS {
        let name = op.name();
        out.push(rule(
            down,
            Exactness::Exact,
            &format!("({name} ?om (dequantize ?dm ?x))"),
            dequantize_through,
        ));
        out.push(rule(
            up,
            Exactness::Exact,
            &format!("(quantize ?qm ({name} ?om ?y))"),
            quantize_through,
        ));
    }
    out.push(rule_on_op(
        "dequantize-through-concat",
        Exactness::Exact,
        Op::Concat,
        dequantize_through_concat,
    ));
    out.push(rule(
        "quantize-through-concat",
        Exactness::Exact,
        "(quantize ?qm ?y)",
        quantize_through_concat,
    ));
    for &(op, name) in BIPOLAR_MOVERS {
        out.push(rule(
            name,
            Exactness::Exact,
            &format!("({} ?om (cast ?cm ?x))", op.name()),
            cast_bipolar_through,
        ));
    }
    out
}

/// Ops a cast of `b1` codes moves down through, with their rule names.
const BIPOLAR_MOVERS: &[(Op, &str)] = &[
    (Op::MaxPool, "bipolar-cast-through-max-pool"),
    (Op::Reshape, "bipolar-cast-through-reshape"),
    (Op::Flatten, "bipolar-cast-through-flatten"),
];

/// `op(cast_T(x)) -> cast_T'(op(x))` for `b1` `x` and a signed integer-valued `T` of at
/// least 2 bits (`T'` = the op's result type): the cast keeps the codes -1 and +1
/// (increasing, elementwise), so it commutes with moving elements and with max
/// pooling, which compares codes (padded positions are ignored). Exact. The data
/// movement then runs on `b1` values and the integer kernels after it can read them as
/// `b1` (see `conv2d-int-bipolar-operands`).
fn cast_bipolar_through(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let om = meta(eg, var(s, "?om")).clone();
    let cm = meta(eg, var(s, "?cm")).clone();
    let x = var(s, "?x");
    let xt = ty(eg, x).clone();
    if xt.elem != ElemType::Bipolar {
        return None;
    }
    match cm.ty.elem.storage() {
        Some(st) if st.signed && st.bits >= 2 => {}
        _ => return None,
    }
    if om.ty.elem != cm.ty.elem {
        return None;
    }
    let nt = TensorType::new(ElemType::Bipolar, om.ty.shape.clone());
    let moved = add_op(eg, om.op, nt, om.attrs.clone(), &[x]);
    Some(add_op(
        eg,
        Op::Cast,
        om.ty.clone(),
        cm.attrs.clone(),
        &[moved],
    ))
}

/// Max pooling compares within one channel, so per-channel parameters (axis 1) keep
/// the order of codes; other axes would compare codes of different scales.
fn order_kept(op: Op, q: &QuantType) -> bool {
    op != Op::MaxPool
        || match &q.params {
            QuantParams::PerTensor { .. } => true,
            QuantParams::PerAxis { axis, .. } => *axis == 1,
            QuantParams::Blocked { .. } => false,
        }
}

/// `op(dequantize(x)) -> dequantize(op(x))` for a data-movement op (or max_pool).
/// Exact: elementwise maps commute with moving elements; for max_pool, dequantize is
/// increasing per channel, so the maximum of dequantized codes is the dequantized
/// maximum.
fn dequantize_through(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let om = meta(eg, var(s, "?om")).clone();
    let x = var(s, "?x");
    let xt = ty(eg, x).clone();
    if !order_kept(om.op, xt.elem.quant()?) {
        return None;
    }
    let nt = infer(om.op, &om.attrs(), &[&xt], &om.ty).ok()?;
    if !verify_types(&nt).is_empty() {
        return None;
    }
    let shape = nt.shape.clone();
    let moved = add_op(eg, om.op, nt, om.attrs.clone(), &[x]);
    Some(add_op(
        eg,
        Op::Dequantize,
        TensorType::f32(shape),
        attrs([]),
        &[moved],
    ))
}

/// The quantized element types an operand of shape `shape` may have so that a
/// data-movement op gives `q`: `q` itself for per-tensor parameters, `q` with its axis
/// moved to each axis of the operand otherwise (the op's type rule picks the right one).
fn operand_candidates(q: &QuantType, rank: usize) -> Vec<ElemType> {
    match q.params.axis() {
        None => vec![ElemType::Quant(q.clone())],
        Some(_) => (0..rank)
            .map(|a| {
                ElemType::Quant(QuantType {
                    params: q.params.with_axis(a),
                    ..q.clone()
                })
            })
            .collect(),
    }
}

/// `quantize(op(y)) -> op(quantize(y))` for a data-movement op (or max_pool). Exact:
/// quantize is elementwise, and non-decreasing (division by a positive scale, rounding
/// and clamping all keep order), so it commutes with taking a maximum.
fn quantize_through(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let qm = meta(eg, var(s, "?qm")).clone();
    let om = meta(eg, var(s, "?om")).clone();
    let y = var(s, "?y");
    let yt = ty(eg, y).clone();
    let q = qm.ty.elem.quant()?;
    if !order_kept(om.op, q) {
        return None;
    }
    for elem in operand_candidates(q, yt.rank()) {
        let t = TensorType::new(elem, yt.shape.clone());
        if !verify_types(&t).is_empty() {
            continue;
        }
        if infer(om.op, &om.attrs(), &[&t], &qm.ty).is_ok_and(|out| out == qm.ty) {
            let qy = add_op(eg, Op::Quantize, t, qm.attrs.clone(), &[y]);
            return Some(add_op(eg, om.op, qm.ty.clone(), om.attrs.clone(), &[qy]));
        }
    }
    None
}

/// `concat(dequantize(x1), .., dequantize(xn)) -> dequantize(concat(x1, .., xn))` when
/// every `xi` has the same quantized element type. Exact (elementwise map with one set
/// of parameters).
fn dequantize_through_concat(eg: &mut QEGraph, root: Id, _s: &Subst) -> Option<Id> {
    for (cm, parts) in op_nodes(eg, root, Op::Concat) {
        let mut inner = Vec::new();
        for &p in &parts {
            let found = op_nodes(eg, p, Op::Dequantize)
                .into_iter()
                .map(|(_, o)| o[0])
                .find(|&x| ty(eg, x).elem.quant().is_some());
            match found {
                Some(x) => inner.push(x),
                None => break,
            }
        }
        if inner.len() != parts.len() {
            continue;
        }
        let elem = ty(eg, inner[0]).elem.clone();
        if inner.iter().any(|&x| ty(eg, x).elem != elem) {
            continue;
        }
        let cmeta = meta(eg, cm).clone();
        let types: Vec<TensorType> = inner.iter().map(|&x| ty(eg, x).clone()).collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let Ok(nt) = infer(Op::Concat, &cmeta.attrs(), &refs, &cmeta.ty) else {
            continue;
        };
        if !verify_types(&nt).is_empty() {
            continue;
        }
        let shape = nt.shape.clone();
        let joined = add_op(eg, Op::Concat, nt, cmeta.attrs.clone(), &inner);
        return Some(add_op(
            eg,
            Op::Dequantize,
            TensorType::f32(shape),
            attrs([]),
            &[joined],
        ));
    }
    None
}

/// `quantize(concat(y1, .., yn)) -> concat(quantize(y1), .., quantize(yn))`, each part
/// quantized with the result's element type (per-tensor parameters, or per-axis ones
/// along an axis the concat does not join). Exact (elementwise).
fn quantize_through_concat(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let y = var(s, "?y");
    let qm = meta(eg, var(s, "?qm")).clone();
    for (cm, parts) in op_nodes(eg, y, Op::Concat) {
        let cmeta = meta(eg, cm).clone();
        let types: Vec<TensorType> = parts
            .iter()
            .map(|&p| TensorType::new(qm.ty.elem.clone(), ty(eg, p).shape.clone()))
            .collect();
        if types.iter().any(|t| !verify_types(t).is_empty()) {
            continue;
        }
        let refs: Vec<&TensorType> = types.iter().collect();
        if !infer(Op::Concat, &cmeta.attrs(), &refs, &qm.ty).is_ok_and(|t| t == qm.ty) {
            continue;
        }
        let qs: Vec<Id> = parts
            .iter()
            .zip(types)
            .map(|(&p, t)| add_op(eg, Op::Quantize, t, qm.attrs.clone(), &[p]))
            .collect();
        return Some(add_op(
            eg,
            Op::Concat,
            qm.ty.clone(),
            cmeta.attrs.clone(),
            &qs,
        ));
    }
    None
}

/// The two dequantized operands `?a` and `?b` when they have one per-tensor quantized
/// type.
fn same_per_tensor(eg: &QEGraph, s: &Subst) -> Option<(Id, Id, TensorType, TensorType)> {
    let (a, b) = (var(s, "?a"), var(s, "?b"));
    let (at, bt) = (ty(eg, a).clone(), ty(eg, b).clone());
    let q = at.elem.quant()?;
    if at.elem != bt.elem || !per_tensor(q) {
        return None;
    }
    Some((a, b, at, bt))
}

/// `op(.., dequantize(a), dequantize(b)) -> dequantize(op(.., a, b))` for `where`, `max`
/// and `min`, `a` and `b` of one per-tensor quantized type. Exact: `where` selects
/// elements and dequantize maps each on its own; dequantize is non-decreasing (a
/// positive scale), so the larger (smaller) code gives the larger (smaller) value, and
/// its results are never NaN or -0, where f32 `max`/`min` have rules of their own.
fn dequantize_through_pair(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let om = meta(eg, var(s, "?om")).clone();
    let (a, b, at, bt) = same_per_tensor(eg, s)?;
    let mut ops = Vec::new();
    let mut types = Vec::new();
    if om.op == Op::Where {
        let c = var(s, "?c");
        types.push(ty(eg, c).clone());
        ops.push(c);
    }
    ops.extend([a, b]);
    types.extend([at, bt]);
    let declared = TensorType::new(types[types.len() - 1].elem.clone(), om.ty.shape.clone());
    let refs: Vec<&TensorType> = types.iter().collect();
    let nt = infer(om.op, &om.attrs(), &refs, &declared).ok()?;
    if nt != declared {
        return None;
    }
    let moved = add_op(eg, om.op, nt, om.attrs.clone(), &ops);
    Some(add_op(
        eg,
        Op::Dequantize,
        om.ty.clone(),
        attrs([]),
        &[moved],
    ))
}

/// `quantize(where(c, y1, y2)) -> where(c, quantize(y1), quantize(y2))`, each quantized
/// with the result's (per-tensor) element type. Exact: quantize maps every element on
/// its own, whichever operand `where` takes it from (NaN included).
fn quantize_through_where(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let qm = meta(eg, var(s, "?qm")).clone();
    let om = meta(eg, var(s, "?om")).clone();
    let q = qm.ty.elem.quant()?;
    if !per_tensor(q) {
        return None;
    }
    let c = var(s, "?c");
    let mut ops = vec![c];
    for y in [var(s, "?y1"), var(s, "?y2")] {
        let t = TensorType::new(qm.ty.elem.clone(), ty(eg, y).shape.clone());
        ops.push(add_op(eg, Op::Quantize, t, qm.attrs.clone(), &[y]));
    }
    Some(add_op(eg, Op::Where, qm.ty.clone(), om.attrs.clone(), &ops))
}

/// Whether dequantize is strictly increasing on the codes of `q`: per tensor, at most
/// 16 storage bits (so `q - z` is exact in f32 and below 2^17 in magnitude) and a tame
/// scale ([`scales_tame`]: normal, products below `f32::MAX`). Then codes `d1 < d2`
/// give `(d2 - d1) * s >= s` apart, while each rounding of `d * s` errs by at most
/// `2^-24 |d s| < 2^-7 s`: distinct codes give distinct values in the same order, and
/// equal codes equal values.
fn strictly_increasing(q: &QuantType) -> bool {
    per_tensor(q) && q.storage.bits <= 16 && scales_tame(q)
}

/// `cmp(dequantize(a), dequantize(b)) -> cmp(a, b)` for `equal`, `less` and
/// `less_or_equal`, `a` and `b` of one type on which dequantize is strictly increasing
/// ([`strictly_increasing`]). Exact: the codes compare as their values.
fn compare_codes(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let om = meta(eg, var(s, "?om")).clone();
    let (a, b, at, _) = same_per_tensor(eg, s)?;
    if !strictly_increasing(at.elem.quant()?) {
        return None;
    }
    Some(add_op(eg, om.op, om.ty.clone(), om.attrs.clone(), &[a, b]))
}

/// `op(dequantize(x)) -> op(x)` for `arg_max`, `arg_min` and `top_k_indices`, where
/// dequantize is strictly increasing on x's codes ([`strictly_increasing`]). Exact: the
/// codes have the order and the ties of their values (and no NaN).
fn order_of_codes(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let om = meta(eg, var(s, "?om")).clone();
    let x = var(s, "?x");
    if !strictly_increasing(ty(eg, x).elem.quant()?) {
        return None;
    }
    Some(add_op(eg, om.op, om.ty.clone(), om.attrs.clone(), &[x]))
}

/// `top_k(dequantize(x)) -> dequantize(top_k(x))` where dequantize is strictly
/// increasing on x's codes. Exact: the same elements are picked in the same order
/// ([`order_of_codes`]), and dequantized one by one.
fn dequantize_through_top_k(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let om = meta(eg, var(s, "?om")).clone();
    let x = var(s, "?x");
    let xt = ty(eg, x).clone();
    if !strictly_increasing(xt.elem.quant()?) {
        return None;
    }
    let nt = TensorType::new(xt.elem.clone(), om.ty.shape.clone());
    let picked = add_op(eg, Op::TopK, nt, om.attrs.clone(), &[x]);
    Some(add_op(
        eg,
        Op::Dequantize,
        om.ty.clone(),
        attrs([]),
        &[picked],
    ))
}
