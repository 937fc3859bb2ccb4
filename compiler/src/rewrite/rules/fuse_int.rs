//! Fusing float convolutions and matrix products over dequantized operands into integer
//! kernels.
//!
//! `quantize_y(conv2d(dequantize(x), dequantize(w), b))` becomes
//! `requantize_y(conv2d_int(x, w, bq))`: the integer kernel accumulates
//! `sum (x - zx)(w - zw)` exactly in i32, the bias is quantized to i32 with the
//! accumulator's scale `sx * sw[m]` (rounded half-even), and the requantize multiplies
//! by the fixed-point form of `sx * sw[m] / sy` (31-bit multiplier, so a relative error
//! of at most 2^-31; one multiplier per output channel when the weights are per
//! channel). Without a quantize after it (the last layer), the float result is kept:
//! `dequantize(cast_{q<i32, sx*sw>}(conv2d_int(...)))`, the cast only naming the
//! accumulator's scale. `gemm` (no transposed A, alpha = beta = 1) and `matmul` fuse the
//! same way into `matmul_int`; a transposed constant B is transposed at compile time.
//!
//! Bound (checked per match, else the rule does not apply): the float path differs from
//! the exact real result by the f32 roundings of dequantize (2^-24 relative per
//! product, so at most `K * max|x - zx| * max|w - zw| * 2^-22` accumulator steps over
//! `K` products, with margin) and of the result; the integer path by the bias rounding
//! (half an accumulator step) and the multiplier (2^-31 relative). When the sum of both,
//! in output steps, is below one, the two results round to codes at most **one code**
//! apart (quantized results), or differ by at most that error (float results), which
//! the soundness test checks. The accumulator must not overflow i32 for any input codes.

use egg::{Id, Subst};
use qcc_ir::{Attr, ConstData, ElemType, IntType, Op, QuantParams, QuantType, TensorType};

use crate::rewrite::analysis::{QEGraph, meta, ty, value};
use crate::rewrite::build::{
    add_const, add_op, attrs, float_value, hint, i32_ty, inherit_loc, ints, max_centered, name_of,
    op_nodes, scales_along, scales_tame,
};
use crate::rewrite::fixed_point::multiplier;
use crate::rewrite::intern::Meta;
use crate::rewrite::rule::{Exactness, RuleDef, opt_var, rule, var};

const ONE_CODE: Exactness = Exactness::Bounded("at most one code of the result");
const FLOAT_BOUND: Exactness =
    Exactness::Bounded("(0.5 + K*max|x-zx|*max|w-zw|*2^-22) accumulator steps plus 2^-22 relative");

pub fn rules() -> Vec<RuleDef> {
    let dq2 = "(dequantize ?dx ?x) (dequantize ?dw ?w)";
    vec![
        rule(
            "fuse-conv2d-requantize",
            ONE_CODE,
            &format!("(quantize ?qm (conv2d ?km {dq2}))"),
            fuse_requant,
        ),
        rule(
            "fuse-conv2d-bias-requantize",
            ONE_CODE,
            &format!("(quantize ?qm (conv2d ?km {dq2} ?b))"),
            fuse_requant,
        ),
        rule(
            "fuse-gemm-requantize",
            ONE_CODE,
            &format!("(quantize ?qm (gemm ?km {dq2}))"),
            fuse_requant,
        ),
        rule(
            "fuse-gemm-bias-requantize",
            ONE_CODE,
            &format!("(quantize ?qm (gemm ?km {dq2} ?b))"),
            fuse_requant,
        ),
        rule(
            "fuse-matmul-requantize",
            ONE_CODE,
            &format!("(quantize ?qm (matmul ?km {dq2}))"),
            fuse_requant,
        ),
        rule(
            "fuse-conv2d-dequantize",
            FLOAT_BOUND,
            &format!("(conv2d ?km {dq2})"),
            fuse_float,
        ),
        rule(
            "fuse-conv2d-bias-dequantize",
            FLOAT_BOUND,
            &format!("(conv2d ?km {dq2} ?b)"),
            fuse_float,
        ),
        rule(
            "fuse-gemm-dequantize",
            FLOAT_BOUND,
            &format!("(gemm ?km {dq2})"),
            fuse_float,
        ),
        rule(
            "fuse-gemm-bias-dequantize",
            FLOAT_BOUND,
            &format!("(gemm ?km {dq2} ?b)"),
            fuse_float,
        ),
        rule(
            "fuse-matmul-dequantize",
            FLOAT_BOUND,
            &format!("(matmul ?km {dq2})"),
            fuse_float,
        ),
    ]
}

/// A matched float kernel, checked and ready to become an integer one.
struct Plan {
    /// The float op matched.
    float_op: Op,
    /// `conv2d_int` or `matmul_int`, its attributes and result shape.
    op: Op,
    attrs: std::collections::BTreeMap<String, Attr>,
    shape: Vec<usize>,
    x: Id,
    /// The integer weights (possibly a new transposed constant).
    w: Id,
    /// Accumulator scale per output channel (`sx * sw`), in f64.
    acc_scales: Vec<f64>,
    /// The bias in the accumulator's units, per output channel, when present.
    bias: Option<Vec<f64>>,
    /// Channel axis of the result.
    axis: usize,
    /// Products per output element.
    k: usize,
    /// `max|x - zx| * max|w - zw|`.
    max_product: f64,
    name: String,
}

/// Reads the match: checks operand types and builds the plan (transposing a constant B
/// of a gemm when needed).
fn plan(eg: &mut QEGraph, root: Id, s: &Subst, acc_scale_f32: bool) -> Option<Plan> {
    let km: Meta = meta(eg, var(s, "?km")).clone();
    let (x, mut w) = (var(s, "?x"), var(s, "?w"));
    let xq = ty(eg, x).elem.quant()?.clone();
    let mut wq = ty(eg, w).elem.quant()?.clone();
    let (sx, _) = match xq.params {
        QuantParams::PerTensor { scale, zero_point } => (scale, zero_point),
        _ => return None,
    };
    if !scales_tame(&xq) || !scales_tame(&wq) || xq.storage.bits > 16 || wq.storage.bits > 16 {
        return None;
    }
    let shape = km.ty.shape.clone();
    let name = name_of(eg, root, "k");
    let xs = ty(eg, x).shape.clone();
    let (op, kattrs, axis, k, m_len) = match km.op {
        Op::Conv2d => {
            let ws = &ty(eg, w).shape;
            let a = km.attrs();
            let g = a.int("group").ok()?;
            let kattrs = attrs([
                ("strides", Attr::Ints(a.ints("strides").ok()?)),
                ("pads", Attr::Ints(a.ints("pads").ok()?)),
                ("dilations", Attr::Ints(a.ints("dilations").ok()?)),
                ("group", Attr::Int(g)),
            ]);
            (Op::Conv2dInt, kattrs, 1, ws[1..].iter().product(), ws[0])
        }
        Op::MatMul => {
            let wr = ty(eg, w).rank();
            if xs.is_empty() || wr == 0 || shape.is_empty() {
                return None;
            }
            let n = if wr >= 2 { ty(eg, w).shape[wr - 1] } else { 1 };
            if wr < 2 && !matches!(wq.params, QuantParams::PerTensor { .. }) {
                return None;
            }
            (Op::MatMulInt, attrs([]), shape.len() - 1, *xs.last()?, n)
        }
        Op::Gemm => {
            let a = km.attrs();
            if a.bool("trans_a").ok()?
                || a.float("alpha").ok()? != 1.0
                || a.float("beta").ok()? != 1.0
            {
                return None;
            }
            if a.bool("trans_b").ok()? {
                let (wt, nq) = transpose_const(eg, w, &wq)?;
                w = wt;
                wq = nq;
            }
            let n = ty(eg, w).shape[1];
            (Op::MatMulInt, attrs([]), 1, xs[1], n)
        }
        _ => return None,
    };
    // Weight zero points/scales along the output-channel axis of the weights.
    let w_axis = if op == Op::Conv2dInt {
        0
    } else {
        ty(eg, w).rank().saturating_sub(1)
    };
    let sw = scales_along(&wq, w_axis, m_len)?;
    let acc_scales: Vec<f64> = sw
        .iter()
        .map(|&w| {
            if acc_scale_f32 {
                (sx * w as f32) as f64
            } else {
                sx as f64 * w
            }
        })
        .collect();
    if acc_scales
        .iter()
        .any(|&a| !(a.is_finite() && a > 0.0 && (a as f32).is_normal()))
    {
        return None;
    }
    let bias = match opt_var(s, "?b") {
        None => None,
        Some(b) => {
            let v = float_value(eg, b)?;
            let per: Vec<f32> = match v.len() {
                1 => vec![v[0]; m_len],
                n if n == m_len && ty(eg, b).shape.iter().filter(|&&d| d != 1).count() <= 1 => {
                    if op == Op::MatMulInt && ty(eg, b).shape.last() != Some(&m_len) {
                        return None;
                    }
                    v
                }
                _ => return None,
            };
            Some(
                per.iter()
                    .zip(&acc_scales)
                    .map(|(&b, &a)| b as f64 / a)
                    .collect(),
            )
        }
    };
    Some(Plan {
        float_op: km.op,
        op,
        attrs: kattrs,
        shape,
        x,
        w,
        acc_scales,
        bias,
        axis,
        k,
        max_product: (max_centered(&xq) * max_centered(&wq)) as f64,
        name,
    })
}

/// A transposed copy of the constant 2-D weights `w` ([N, K] -> [K, N]), with per-axis
/// parameters moved from axis 0 to axis 1.
fn transpose_const(eg: &mut QEGraph, w: Id, wq: &QuantType) -> Option<(Id, QuantType)> {
    let t = ty(eg, w).clone();
    if t.rank() != 2 {
        return None;
    }
    let codes = value(eg, w)?.as_int()?.to_vec();
    let (n, k) = (t.shape[0], t.shape[1]);
    let mut out = vec![0i64; n * k];
    for i in 0..n {
        for j in 0..k {
            out[j * n + i] = codes[i * k + j];
        }
    }
    let params = match &wq.params {
        QuantParams::PerTensor { .. } => wq.params.clone(),
        QuantParams::PerAxis { axis: 0, .. } => wq.params.with_axis(1),
        _ => return None,
    };
    let nq = QuantType {
        params,
        ..wq.clone()
    };
    let name = format!("{}.t", name_of(eg, w, "w"));
    let id = add_const(
        eg,
        &name,
        TensorType::new(ElemType::Quant(nq.clone()), vec![k, n]),
        ConstData::Int(out),
    );
    Some((id, nq))
}

/// The i32 bias and the integer kernel of a plan; `None` when the bias does not fit
/// i32 or the accumulator could overflow.
fn kernel(eg: &mut QEGraph, p: &Plan) -> Option<Id> {
    let bias_codes: Option<Vec<i64>> = p
        .bias
        .as_ref()
        .map(|b| b.iter().map(|v| v.round_ties_even() as i64).collect());
    let max_bias = bias_codes
        .as_ref()
        .map_or(0, |b| b.iter().map(|v| v.abs()).max().unwrap_or(0));
    let bound = p.k as f64 * p.max_product + max_bias as f64;
    if bound >= 2f64.powi(31) {
        return None;
    }
    let mut operands = vec![p.x, p.w];
    if let Some(b) = bias_codes {
        let n = b.len();
        let bid = add_const(
            eg,
            &format!("{}.bias", p.name),
            i32_ty(vec![n]),
            ConstData::Int(b),
        );
        operands.push(bid);
    }
    let acc = add_op(
        eg,
        p.op,
        i32_ty(p.shape.clone()),
        p.attrs.clone(),
        &operands,
    );
    hint(eg, acc, format!("{}.acc", p.name));
    Some(acc)
}

/// Rounding error of the float path, plus bias rounding, in accumulator steps.
fn acc_error(p: &Plan) -> f64 {
    0.5 + p.k as f64 * p.max_product * 2f64.powi(-22)
}

/// `quantize(kernel(dequantize(x), dequantize(w), b)) -> requantize(kernel_int(x, w, bq))`.
fn fuse_requant(eg: &mut QEGraph, root: Id, s: &Subst) -> Option<Id> {
    let qm = meta(eg, var(s, "?qm")).clone();
    let yq = qm.ty.elem.quant()?;
    if yq.storage.bits > 16 || !scales_tame(yq) {
        return None;
    }
    let p = plan(eg, root, s, false)?;
    let m_len = p.acc_scales.len();
    let sy = scales_along(yq, p.axis, m_len).or_else(|| {
        matches!(yq.params, QuantParams::PerTensor { .. })
            .then(|| vec![yq.params.scales()[0] as f64; m_len])
    })?;
    let ratios: Vec<f64> = p.acc_scales.iter().zip(&sy).map(|(a, y)| a / y).collect();
    // Error in output codes: accumulator error scaled, the f32 result and its division
    // by sy (2^-23 relative each, on results of at most 2^16 codes), the multiplier.
    let worst = ratios.iter().fold(0.0f64, |m, &r| m.max(r));
    if acc_error(&p) * worst + 2f64.powi(-6) >= 1.0 {
        return None;
    }
    let mults: Option<Vec<(i64, i64)>> = ratios.iter().map(|&r| multiplier(r)).collect();
    let mults = mults?;
    let (mut ms, mut ss): (Vec<i64>, Vec<i64>) = mults.into_iter().unzip();
    if ms.iter().all(|&m| m == ms[0]) && ss.iter().all(|&x| x == ss[0]) {
        ms.truncate(1);
        ss.truncate(1);
    }
    let acc = kernel(eg, &p)?;
    // The location of the float kernel this one replaces (the quantize's operand).
    let kclass = op_nodes(eg, root, Op::Quantize)
        .into_iter()
        .map(|(_, o)| o[0])
        .find(|&k| eg[k].nodes.iter().any(|n| n.op() == Some(p.float_op)));
    if let Some(k) = kclass {
        inherit_loc(eg, acc, k);
    }
    let a = attrs([
        ("multiplier", ints(ms)),
        ("shift", ints(ss)),
        ("axis", Attr::Int(p.axis as i64)),
        ("rounding", Attr::Enum(qm.attrs().word("rounding").ok()?)),
    ]);
    Some(add_op(eg, Op::Requantize, qm.ty.clone(), a, &[acc]))
}

/// `kernel(dequantize(x), dequantize(w), b) -> dequantize(cast_{q<i32, sx*sw>}(kernel_int(x, w, bq)))`.
fn fuse_float(eg: &mut QEGraph, root: Id, s: &Subst) -> Option<Id> {
    let p = plan(eg, root, s, true)?;
    let acc = kernel(eg, &p)?;
    inherit_loc(eg, acc, root);
    let scales: Vec<f32> = p.acc_scales.iter().map(|&a| a as f32).collect();
    let params = if scales.iter().all(|&a| a == scales[0]) {
        QuantParams::PerTensor {
            scale: scales[0],
            zero_point: 0,
        }
    } else {
        QuantParams::PerAxis {
            axis: p.axis,
            zero_points: vec![0; scales.len()],
            scales,
        }
    };
    let qt = QuantType {
        storage: IntType::I32,
        narrow: false,
        pow2: false,
        params,
    };
    let cast_ty = TensorType::new(ElemType::Quant(qt), p.shape.clone());
    let scaled = add_op(eg, Op::Cast, cast_ty, attrs([]), &[acc]);
    hint(eg, scaled, format!("{}.scaled", p.name));
    let out = add_op(
        eg,
        Op::Dequantize,
        ty(eg, root).clone(),
        attrs([]),
        &[scaled],
    );
    Some(out)
}
