//! Absorbing ReLU and clip into the clamp of a requantize.
//!
//! `quantize` is non-decreasing, so it commutes with clamping: `quantize(relu(y)) =
//! max(quantize(y), quantize(0))` and `quantize(clip(y, lo, hi)) =
//! clamp(quantize(y), quantize(lo), quantize(hi))`. The clamp on codes is an identity
//! `requantize` (multiplier 1, shift 0, same type) with `min`/`max`, which then merges
//! into the requantize that produces `quantize(y)` once `y` is a fused integer kernel.
//! The bounds are the quantized bounds, so the clamp is exact whether or not the real
//! bound is on the grid.

use egg::{Id, Subst};
use qcc_ir::{Attr, Op, QuantType, Rounding};

use crate::rewrite::analysis::{QEGraph, meta};
use crate::rewrite::build::{add_op, attrs, ints};
use crate::rewrite::intern::Meta;
use crate::rewrite::rule::{Exactness, RuleDef, rule, var};

pub fn rules() -> Vec<RuleDef> {
    vec![
        rule(
            "absorb-relu-into-quantize",
            Exactness::Exact,
            "(quantize ?qm (relu ?rm ?y))",
            absorb_relu,
        ),
        rule(
            "absorb-clip-into-quantize",
            Exactness::Exact,
            "(quantize ?qm (clip ?cm ?y))",
            absorb_clip,
        ),
        rule(
            "merge-clamp-requantize",
            Exactness::Exact,
            "(requantize ?om (requantize ?im ?x))",
            merge_clamp,
        ),
    ]
}

/// The per-tensor (scale, zero point) of `q`.
fn per_tensor(q: &QuantType) -> Option<(f32, i64)> {
    match q.params {
        qcc_ir::QuantParams::PerTensor { scale, zero_point } => Some((scale, zero_point as i64)),
        _ => None,
    }
}

/// The code `quantize` gives `v` (as the interpreter computes it).
fn quantize_scalar(q: &QuantType, rounding: Rounding, v: f32) -> Option<i64> {
    let (s, z) = per_tensor(q)?;
    let y = v / s;
    if y.is_nan() {
        return None;
    }
    Some(
        (rounding.round_f32(y) as i64)
            .saturating_add(z)
            .clamp(q.qmin(), q.qmax()),
    )
}

/// `clamp(q, min, max)` on codes of the quantize's type, applied to `quantize(y)`.
fn clamped_quantize(eg: &mut QEGraph, qm: &Meta, y: Id, min: Option<i64>, max: Option<i64>) -> Id {
    let qy = add_op(eg, Op::Quantize, qm.ty.clone(), qm.attrs.clone(), &[y]);
    let mut a = attrs([("multiplier", ints(vec![1])), ("shift", ints(vec![0]))]);
    if let Some(m) = min {
        a.insert("min".into(), Attr::Int(m));
    }
    if let Some(m) = max {
        a.insert("max".into(), Attr::Int(m));
    }
    add_op(eg, Op::Requantize, qm.ty.clone(), a, &[qy])
}

/// `quantize(relu(y)) -> requantize{1, 0, min = quantize(0)}(quantize(y))` for
/// per-tensor parameters, or per-axis ones with one zero point (`quantize(0)` is that
/// zero point in every channel). Exact, NaN included (both sides give the zero point).
fn absorb_relu(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let qm = meta(eg, var(s, "?qm")).clone();
    let q = qm.ty.elem.quant()?;
    let r = qm.attrs().rounding("rounding").ok()?;
    let lo = match &q.params {
        qcc_ir::QuantParams::PerAxis { zero_points, .. } => {
            let z = *zero_points.first()?;
            if zero_points.iter().any(|&x| x != z) {
                return None;
            }
            (z as i64).clamp(q.qmin(), q.qmax())
        }
        _ => quantize_scalar(q, r, 0.0)?,
    };
    Some(clamped_quantize(eg, &qm, var(s, "?y"), Some(lo), None))
}

/// `quantize(clip(y, lo, hi)) -> requantize{1, 0, min = quantize(lo), max =
/// quantize(hi)}(quantize(y))` for per-tensor parameters. Exact for every non-NaN input
/// (a NaN quantizes to the zero point on the left, which the right side then clamps).
fn absorb_clip(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let qm = meta(eg, var(s, "?qm")).clone();
    let cm = meta(eg, var(s, "?cm")).clone();
    let q = qm.ty.elem.quant()?;
    let r = qm.attrs().rounding("rounding").ok()?;
    let lo = match cm.attrs().opt_float("min").ok()? {
        Some(v) => Some(quantize_scalar(q, r, v)?),
        None => None,
    };
    let hi = match cm.attrs().opt_float("max").ok()? {
        Some(v) => Some(quantize_scalar(q, r, v)?),
        None => None,
    };
    per_tensor(q)?;
    Some(clamped_quantize(eg, &qm, var(s, "?y"), lo, hi))
}

/// An identity requantize (multiplier 1, shift 0, operand type = result type) after a
/// requantize merges into it, the clamps intersected:
/// `requantize{1, 0, [a, b]}(requantize{M, s, [c, d]}(x)) -> requantize{M, s, [max(a, c),
/// min(b, d)]}(x)`. Exact when the intersection is not empty (clamp of a clamp).
fn merge_clamp(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let om = meta(eg, var(s, "?om")).clone();
    let im = meta(eg, var(s, "?im")).clone();
    let oa = om.attrs();
    if om.ty != im.ty || oa.ints("multiplier").ok()? != [1] || oa.ints("shift").ok()? != [0] {
        return None;
    }
    let ia = im.attrs();
    let pick = |a: Option<i64>, b: Option<i64>, f: fn(i64, i64) -> i64| match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    };
    let min = pick(oa.opt_int("min").ok()?, ia.opt_int("min").ok()?, i64::max);
    let max = pick(oa.opt_int("max").ok()?, ia.opt_int("max").ok()?, i64::min);
    let (lo, hi) = om.ty.elem.code_range()?;
    if min.unwrap_or(lo).max(lo) > max.unwrap_or(hi).min(hi) {
        return None;
    }
    let mut a = im.attrs.clone();
    a.remove("min");
    a.remove("max");
    if let Some(m) = min {
        a.insert("min".into(), Attr::Int(m));
    }
    if let Some(m) = max {
        a.insert("max".into(), Attr::Int(m));
    }
    Some(add_op(
        eg,
        Op::Requantize,
        im.ty.clone(),
        a,
        &[var(s, "?x")],
    ))
}
