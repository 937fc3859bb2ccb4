//! Quantized elementwise add, sub and mul in the integer domain (a residual add of a
//! quantized network, ONNX Runtime's QLinearAdd / QLinearMul).
//!
//! `quantize_y(add(dequantize(a), dequantize(b)))` becomes
//! `requantize_y{Mo, so}(add(requantize_i32{Ma, 0}(a), requantize_i32{Mb, 0}(b)))`:
//! both operands are brought to the common scale `sc = max(sa, sb) / 2^L` by an exact
//! integer multiply (`Ma = round(sa / sc)`, `Mb = round(sb / sc)`, so the operand of the
//! larger scale gets `2^L` and no rounding happens in the operand requantizes), added in
//! `i32`, and the sum requantized once with the fixed-point form of `sc / sy` (a 22-bit
//! multiplier, so that the backend's vectorised kernel is exact in f64), the
//! output zero point, the output rounding and the output range (a ReLU before the
//! quantize is absorbed into that clamp by `absorb-clamp`). `L` is the largest left
//! headroom up to 20 (TFLite's choice for 8 bits) for which `(max|a-za| + max|b-zb|) *
//! 2^L` fits in `i32`, so the add never wraps. `sub` is the same with `sub`.
//!
//! `quantize_y(mul(dequantize(a), dequantize(b)))` becomes
//! `requantize_y{sa*sb/sy}(mul(requantize_i32{1, 0}(a), requantize_i32{1, 0}(b)))`: the
//! centred codes are multiplied exactly in `i32` (the rule requires
//! `max|a-za| * max|b-zb| < 2^31`).
//!
//! Bound: **at most one code of the result**, checked per match (else the rule does not
//! apply). Both sides approximate the exact real result `v` in output steps: the float
//! path within `2^-21 |v|` (f32 roundings of two dequantizes, the add or mul, and the
//! division by `sy`), the integer path within `(max|a-za| + max|b-zb|) * max(sa, sb) *
//! 2^-(L+1) / sy` (rounding of `Ma`, `Mb`; zero for mul) plus `2^-22 |v|` (the 22-bit
//! output multiplier). When the sum of both bounds is below one step, the two values are less
//! than one step apart, so after rounding (and the same monotone clamp) their codes
//! differ by at most one. Operands and result must be per-tensor quantized.

use egg::{Id, Subst};
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType, TensorType};

use crate::rewrite::analysis::{QEGraph, meta, ty};
use crate::rewrite::build::{add_op, attrs, hint, inherit_loc, ints, max_centered, scales_tame};
use crate::rewrite::fixed_point::multiplier;
use crate::rewrite::rule::{Exactness, RuleDef, rule, var};

const ONE_CODE: Exactness = Exactness::Bounded("at most one code of the result");

pub fn rules() -> Vec<RuleDef> {
    let dq2 = "(dequantize ?da ?a) (dequantize ?db ?b)";
    vec![
        rule(
            "int-add",
            ONE_CODE,
            &format!("(quantize ?qm (add ?om {dq2}))"),
            int_add,
        ),
        rule(
            "int-sub",
            ONE_CODE,
            &format!("(quantize ?qm (sub ?om {dq2}))"),
            int_add,
        ),
        rule(
            "int-mul",
            ONE_CODE,
            &format!("(quantize ?qm (mul ?om {dq2}))"),
            int_mul,
        ),
    ]
}

/// The per-tensor scale and zero point of a quantized type with tame scales of at most
/// 16 bits.
pub(crate) fn tensor_params(q: &QuantType) -> Option<(f64, i64)> {
    if !scales_tame(q) || q.storage.bits > 16 {
        return None;
    }
    match q.params {
        QuantParams::PerTensor { scale, zero_point } => Some((scale as f64, zero_point as i64)),
        _ => None,
    }
}

/// `requantize{multiplier, shift}` of class `x` to `i32` of x's shape.
fn to_i32(eg: &mut QEGraph, x: Id, mult: i64, from: Id) -> Id {
    let shape = ty(eg, x).shape.clone();
    let a = attrs([("multiplier", ints(vec![mult])), ("shift", ints(vec![0]))]);
    let id = add_op(
        eg,
        Op::Requantize,
        TensorType::new(ElemType::Int(IntType::I32), shape),
        a,
        &[x],
    );
    inherit_loc(eg, id, from);
    id
}

/// The fixed-point form of `r` with a 22-bit multiplier (relative error at most 2^-22):
/// with sums below 2^30, products stay below 2^52, which the backend's vectorised kernel
/// computes exactly in f64.
pub(crate) fn multiplier22(r: f64) -> Option<(i64, i64)> {
    let (m, sh) = multiplier(r)?;
    if m < 1 << 22 {
        return Some((m, sh));
    }
    let mut m22 = (m as f64 / 512.0).round_ties_even() as i64;
    let mut sh22 = sh - 9;
    if m22 == 1 << 22 {
        m22 = 1 << 21;
        sh22 -= 1;
    }
    (-31..=62).contains(&sh22).then_some((m22, sh22))
}

/// The final `requantize_y` of the i32 result `acc` by the real ratio `r`.
fn requant_out(eg: &mut QEGraph, s: &Subst, acc: Id, r: f64) -> Option<Id> {
    let qm = meta(eg, var(s, "?qm")).clone();
    let (m, sh) = multiplier22(r)?;
    let a = attrs([
        ("multiplier", ints(vec![m])),
        ("shift", ints(vec![sh])),
        ("rounding", Attr::Enum(qm.attrs().word("rounding").ok()?)),
    ]);
    Some(add_op(eg, Op::Requantize, qm.ty.clone(), a, &[acc]))
}

/// The matched operands and types: (a, b, (sa, ma), (sb, mb), sy), `m*` the largest
/// centred code magnitudes.
type Matched = (Id, Id, (f64, i64), (f64, i64), f64);

fn matched(eg: &QEGraph, s: &Subst) -> Option<Matched> {
    let qm = meta(eg, var(s, "?qm"));
    let yq = qm.ty.elem.quant()?;
    let (sy, _) = tensor_params(yq)?;
    let (a, b) = (var(s, "?a"), var(s, "?b"));
    let (aq, bq) = (ty(eg, a).elem.quant()?, ty(eg, b).elem.quant()?);
    let (sa, _) = tensor_params(aq)?;
    let (sb, _) = tensor_params(bq)?;
    Some((a, b, (sa, max_centered(aq)), (sb, max_centered(bq)), sy))
}

/// See the module documentation.
fn int_add(eg: &mut QEGraph, root: Id, s: &Subst) -> Option<Id> {
    let om = meta(eg, var(s, "?om")).clone();
    let (a, b, (sa, ma), (sb, mb), sy) = matched(eg, s)?;
    let smax = sa.max(sb);
    let sum_max = ma + mb;
    // Largest L <= 20 with sum_max * 2^L < 2^31.
    let l = (0..=20i64)
        .rev()
        .find(|&l| (sum_max as i128) << l < 1i128 << 31)?;
    let sc = smax / 2f64.powi(l as i32);
    let (ka, kb) = ((sa / sc).round() as i64, (sb / sc).round() as i64);
    // The bound, in output steps.
    let v = (ma as f64 * sa + mb as f64 * sb) / sy;
    let err = sum_max as f64 * smax * 2f64.powi(-(l as i32) - 1) / sy
        + v * (2f64.powi(-21) + 2f64.powi(-21));
    if err >= 1.0 || ka < 1 || kb < 1 {
        return None;
    }
    let ra = to_i32(eg, a, ka, root);
    let rb = to_i32(eg, b, kb, root);
    let shape = om.ty.shape.clone();
    let acc = add_op(
        eg,
        om.op,
        TensorType::new(ElemType::Int(IntType::I32), shape),
        attrs([]),
        &[ra, rb],
    );
    inherit_loc(eg, acc, root);
    hint(eg, acc, "acc");
    requant_out(eg, s, acc, sc / sy)
}

/// See the module documentation.
fn int_mul(eg: &mut QEGraph, root: Id, s: &Subst) -> Option<Id> {
    let om = meta(eg, var(s, "?om")).clone();
    let (a, b, (sa, ma), (sb, mb), sy) = matched(eg, s)?;
    if (ma as i128) * (mb as i128) >= 1i128 << 31 {
        return None;
    }
    let v = ma as f64 * mb as f64 * sa * sb / sy;
    if v * (2f64.powi(-21) + 2f64.powi(-21)) >= 1.0 {
        return None;
    }
    let ra = to_i32(eg, a, 1, root);
    let rb = to_i32(eg, b, 1, root);
    let acc = add_op(
        eg,
        Op::Mul,
        TensorType::new(ElemType::Int(IntType::I32), om.ty.shape.clone()),
        attrs([]),
        &[ra, rb],
    );
    inherit_loc(eg, acc, root);
    hint(eg, acc, "acc");
    requant_out(eg, s, acc, sa * sb / sy)
}
