//! Sign and binarization after batch normalisation (or directly after a dequantize)
//! become per-channel integer thresholds on the codes.
//!
//! The thresholds are found by evaluating the left side with the reference interpreter
//! on every code of the operand's type, channel by channel, so they reproduce its f32
//! arithmetic exactly; the rules apply only where that evaluation is non-decreasing in
//! the code (a batch norm with a negative scale would need "at most" thresholds, which
//! `threshold` does not have) and free of NaN, and for operands of at most 8 bits.

use egg::{Id, Subst};
use qcc_ir::interp::run;
use qcc_ir::{Attr, ConstData, ElemType, IntType, Module, Op, QuantParams, TensorType};

use crate::rewrite::analysis::{QEGraph, meta, ty, value};
use crate::rewrite::build::{add_const, add_op, attrs, i32_ty, name_of};
use crate::rewrite::intern::Meta;
use crate::rewrite::rule::{Exactness, RuleDef, rule, var};

pub fn rules() -> Vec<RuleDef> {
    let bn = "(batch_norm ?bm (dequantize ?dm ?x) ?s ?b ?mu ?v)";
    vec![
        rule(
            "binarize-batch-norm-to-threshold",
            Exactness::Exact,
            &format!("(binarize ?om {bn})"),
            binarize_bn,
        ),
        rule(
            "sign-batch-norm-to-threshold",
            Exactness::Exact,
            &format!("(sign ?om {bn})"),
            sign_bn,
        ),
        rule(
            "sign-dequantize-to-threshold",
            Exactness::Exact,
            "(sign ?om (dequantize ?dm ?x))",
            sign_dequantize,
        ),
    ]
}

/// For each channel (axis 1) of quantized class `x`, the batch norm's f32 result at
/// every code `qmin..=qmax`, and `qmin`.
fn bn_over_codes(eg: &QEGraph, s: &Subst) -> Option<(Vec<Vec<f32>>, i64)> {
    let x = var(s, "?x");
    let xt = ty(eg, x);
    let q = xt.elem.quant()?;
    if q.storage.bits > 8 || xt.rank() < 2 {
        return None;
    }
    match q.params {
        QuantParams::PerTensor { .. } => {}
        QuantParams::PerAxis { axis: 1, .. } => {}
        _ => return None,
    }
    let c = xt.shape[1];
    let (lo, hi) = (q.qmin(), q.qmax());
    let n = (hi - lo + 1) as usize;
    let mut m = Module::new("codes");
    let codes: Vec<i64> = (0..c).flat_map(|_| lo..=hi).collect();
    let xs = m.add_const(
        "x",
        TensorType::new(xt.elem.clone(), vec![1, c, n]),
        ConstData::Int(codes),
    );
    let mut ops = vec![m.add_node(
        Op::Dequantize,
        vec![xs],
        attrs([]),
        "d",
        TensorType::f32(vec![1, c, n]),
    )];
    for (i, v) in ["?s", "?b", "?mu", "?v"].into_iter().enumerate() {
        let id = var(s, v);
        let data = value(eg, id)?.as_f32()?.to_vec();
        ops.push(m.add_const(format!("p{i}"), ty(eg, id).clone(), ConstData::F32(data)));
    }
    let bm: &Meta = meta(eg, var(s, "?bm"));
    let out = m.add_node(
        Op::BatchNorm,
        ops,
        bm.attrs.clone(),
        "y",
        TensorType::f32(vec![1, c, n]),
    );
    m.outputs = vec![out];
    let r = run(&m, &[]).ok()?;
    let v = r.into_iter().next()?.into_f32()?;
    let per: Vec<Vec<f32>> = v.chunks(n).map(|ch| ch.to_vec()).collect();
    let monotone = per
        .iter()
        .all(|ch| ch.iter().all(|f| !f.is_nan()) && ch.windows(2).all(|w| w[0] <= w[1]));
    monotone.then_some((per, lo))
}

/// The first code whose value satisfies `pred` (one past the last code if none).
fn first(ch: &[f32], lo: i64, pred: impl Fn(f32) -> bool) -> i64 {
    lo + ch.iter().position(|&v| pred(v)).unwrap_or(ch.len()) as i64
}

/// `threshold(x, t)` with `t` an i32 [C, K] constant, offset and result type given.
fn add_threshold(
    eg: &mut QEGraph,
    x: Id,
    t: Vec<i64>,
    k: usize,
    offset: i64,
    elem: ElemType,
) -> Id {
    let c = t.len() / k;
    let name = format!("{}.thresholds", name_of(eg, x, "x"));
    let tid = add_const(eg, &name, i32_ty(vec![c, k]), ConstData::Int(t));
    let shape = ty(eg, x).shape.clone();
    let a = attrs([("axis", Attr::Int(1)), ("offset", Attr::Int(offset))]);
    add_op(
        eg,
        Op::Threshold,
        TensorType::new(elem, shape),
        a,
        &[x, tid],
    )
}

/// `binarize(batch_norm(dequantize(x))) -> threshold_b1(x, t)`, `t[c]` the first code
/// whose normalised value is >= 0. Exact (thresholds from the interpreter's values).
fn binarize_bn(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let (per, lo) = bn_over_codes(eg, s)?;
    let t: Vec<i64> = per.iter().map(|ch| first(ch, lo, |v| v >= 0.0)).collect();
    Some(add_threshold(eg, var(s, "?x"), t, 1, 0, ElemType::Bipolar))
}

/// `sign(batch_norm(dequantize(x))) -> cast_f32(threshold_i8(x, [t0, t1], offset -1))`:
/// sign is `-1 + [v >= 0] + [v > 0]`, with `t0`/`t1` the first codes where the
/// normalised value is >= 0 / > 0. Exact.
fn sign_bn(eg: &mut QEGraph, root: Id, s: &Subst) -> Option<Id> {
    let (per, lo) = bn_over_codes(eg, s)?;
    let t: Vec<i64> = per
        .iter()
        .flat_map(|ch| [first(ch, lo, |v| v >= 0.0), first(ch, lo, |v| v > 0.0)])
        .collect();
    let th = add_threshold(eg, var(s, "?x"), t, 2, -1, ElemType::Int(IntType::I8));
    Some(add_op(eg, Op::Cast, ty(eg, root).clone(), attrs([]), &[th]))
}

/// `sign(dequantize(x)) -> cast_f32(threshold_i8(x, [z, z + 1], offset -1))`. Exact:
/// with a positive scale, the sign of `(q - z) * s` is the sign of `q - z`.
fn sign_dequantize(eg: &mut QEGraph, root: Id, s: &Subst) -> Option<Id> {
    let x = var(s, "?x");
    let q = ty(eg, x).elem.quant()?.clone();
    let zs: Vec<i64> = match &q.params {
        QuantParams::PerTensor { zero_point, .. } => vec![*zero_point as i64],
        QuantParams::PerAxis {
            axis: 1,
            zero_points,
            ..
        } => zero_points.iter().map(|&z| z as i64).collect(),
        _ => return None,
    };
    if ty(eg, x).rank() < 2 {
        return None;
    }
    let t: Vec<i64> = zs.iter().flat_map(|&z| [z, z + 1]).collect();
    let th = add_threshold(eg, x, t, 2, -1, ElemType::Int(IntType::I8));
    Some(add_op(eg, Op::Cast, ty(eg, root).clone(), attrs([]), &[th]))
}
