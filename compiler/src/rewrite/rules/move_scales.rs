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

use egg::{Id, Subst};
use qcc_ir::typing::infer;
use qcc_ir::verify::verify_types;
use qcc_ir::{ElemType, Op, QuantParams, QuantType, TensorType};

use crate::rewrite::analysis::{QEGraph, meta, ty};
use crate::rewrite::build::{add_op, attrs, op_nodes};
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
