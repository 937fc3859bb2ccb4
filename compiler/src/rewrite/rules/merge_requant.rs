//! Requantize chains: dropping identities, merging a widening requantize into the
//! next one, and turning a dequantize -> quantize pair between different quantized types
//! into one requantize.

use egg::{Id, Subst};
use qcc_ir::{Attr, ElemType, Op, QuantParams};

use crate::rewrite::analysis::{QEGraph, meta, ty};
use crate::rewrite::build::{add_op, attrs, ints, scales_tame};
use crate::rewrite::fixed_point::multiplier;
use crate::rewrite::rule::{Exactness, RuleDef, rule, var};

pub fn rules() -> Vec<RuleDef> {
    vec![
        rule(
            "drop-identity-requantize",
            Exactness::Exact,
            "(requantize ?m ?x)",
            drop_identity,
        ),
        rule(
            "merge-requantize-after-widen",
            Exactness::Exact,
            "(requantize ?om (requantize ?im ?x))",
            merge_after_widen,
        ),
        rule(
            "requantize-dequantize-quantize",
            Exactness::Bounded("at most one code of the result"),
            "(quantize ?qm (dequantize ?dm ?x))",
            requantize_qdq,
        ),
    ]
}

/// `requantize{1, 0}(x) -> x` when the result type is x's type and no clamp narrows
/// the type's range. Exact: `clamp((x - z) + z) = x`.
fn drop_identity(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let m = meta(eg, var(s, "?m"));
    let x = var(s, "?x");
    let a = m.attrs();
    if m.ty != *ty(eg, x) || a.ints("multiplier").ok()? != [1] || a.ints("shift").ok()? != [0] {
        return None;
    }
    let (lo, hi) = m.ty.elem.code_range()?;
    let narrows = a.opt_int("min").ok()?.is_some_and(|v| v > lo)
        || a.opt_int("max").ok()?.is_some_and(|v| v < hi);
    (!narrows).then_some(x)
}

/// The per-tensor zero point of an integer-valued type (0 for plain integers).
fn tensor_zero_point(e: &ElemType) -> Option<i64> {
    match e {
        ElemType::Int(_) => Some(0),
        ElemType::Quant(q) => match q.params {
            QuantParams::PerTensor { zero_point, .. } => Some(zero_point as i64),
            _ => None,
        },
        _ => None,
    }
}

/// `requantize_o(requantize{1, k <= 0}(x)) -> requantize_o{M, s + k}(x)` when the inner
/// one only multiplies by `2^-k` and its result type holds every value it can produce
/// (so it never clamps). Exact: the outer sees `(x - zx) * 2^-k`, and
/// `(x - zx) 2^-k M / 2^s = (x - zx) M / 2^(s + k)`.
fn merge_after_widen(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let om = meta(eg, var(s, "?om")).clone();
    let im = meta(eg, var(s, "?im")).clone();
    let x = var(s, "?x");
    let xt = ty(eg, x).clone();
    let ia = im.attrs();
    if ia.ints("multiplier").ok()? != [1]
        || ia.opt_int("min").ok()?.is_some()
        || ia.opt_int("max").ok()?.is_some()
    {
        return None;
    }
    let [k] = ia.ints("shift").ok()?[..] else {
        return None;
    };
    if k > 0 {
        return None;
    }
    let zx = tensor_zero_point(&xt.elem)?;
    let z1 = tensor_zero_point(&im.ty.elem)?;
    let (xlo, xhi) = xt.elem.code_range()?;
    let (lo, hi) = im.ty.elem.code_range()?;
    let f = 1i64.checked_shl((-k) as u32)?;
    let (a, b) = ((xlo - zx).checked_mul(f)?, (xhi - zx).checked_mul(f)?);
    if a + z1 < lo || b + z1 > hi {
        return None;
    }
    let oa = om.attrs();
    let shifts: Vec<i64> = oa.ints("shift").ok()?.iter().map(|&sh| sh + k).collect();
    if shifts.iter().any(|sh| !(-31..=62).contains(sh)) {
        return None;
    }
    let mut a2 = om.attrs.clone();
    a2.insert("shift".into(), Attr::Ints(shifts));
    Some(add_op(eg, Op::Requantize, om.ty.clone(), a2, &[x]))
}

/// `quantize_y(dequantize(x)) -> requantize_y(x)` between different quantized types,
/// with the fixed-point form of `sx / sy` (per channel when x or y is per axis along
/// the same axis). Within one code: the float path computes
/// `fl(fl((x - zx) sx) / sy)`, within `2^-23` relative of the exact ratio the
/// requantize rounds (itself within 2^-31), so the two can only round apart at a tie,
/// by one code; both clamp to y's range.
fn requantize_qdq(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let qm = meta(eg, var(s, "?qm")).clone();
    let x = var(s, "?x");
    let xt = ty(eg, x).clone();
    if xt == qm.ty {
        return None;
    }
    let (xq, yq) = (xt.elem.quant()?, qm.ty.elem.quant()?);
    if !scales_tame(xq) || !scales_tame(yq) || xq.storage.bits > 16 || yq.storage.bits > 16 {
        return None;
    }
    let (axis, ratios): (usize, Vec<f64>) = match (&xq.params, &yq.params) {
        (QuantParams::PerTensor { scale: a, .. }, QuantParams::PerTensor { scale: b, .. }) => {
            (1, vec![*a as f64 / *b as f64])
        }
        (QuantParams::PerAxis { axis, scales, .. }, QuantParams::PerTensor { scale: b, .. }) => (
            *axis,
            scales.iter().map(|&a| a as f64 / *b as f64).collect(),
        ),
        (QuantParams::PerTensor { scale: a, .. }, QuantParams::PerAxis { axis, scales, .. }) => (
            *axis,
            scales.iter().map(|&b| *a as f64 / b as f64).collect(),
        ),
        (
            QuantParams::PerAxis {
                axis, scales: sa, ..
            },
            QuantParams::PerAxis {
                axis: ay,
                scales: sb,
                ..
            },
        ) if axis == ay && sa.len() == sb.len() => (
            *axis,
            sa.iter()
                .zip(sb)
                .map(|(&a, &b)| a as f64 / b as f64)
                .collect(),
        ),
        _ => return None,
    };
    let mults: Option<Vec<(i64, i64)>> = ratios.iter().map(|&r| multiplier(r)).collect();
    let (ms, ss): (Vec<i64>, Vec<i64>) = mults?.into_iter().unzip();
    let a = attrs([
        ("multiplier", ints(ms)),
        ("shift", ints(ss)),
        ("axis", Attr::Int(axis as i64)),
        ("rounding", Attr::Enum(qm.attrs().word("rounding").ok()?)),
    ]);
    Some(add_op(eg, Op::Requantize, qm.ty.clone(), a, &[x]))
}
