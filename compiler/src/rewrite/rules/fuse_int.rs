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
    let mut v = Vec::from([
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
    ]);
    v.extend(bn_and_bipolar_rules());
    v
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
    // A bias that is not finite or not within i32 in accumulator units (a tiny scale)
    // cannot be an i32 bias.
    if p.bias
        .as_ref()
        .is_some_and(|b| b.iter().any(|v| !v.is_finite() || v.abs() >= 2f64.powi(31)))
    {
        return None;
    }
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

/// The largest shift of a requantized result (in its codes) that rounding the bias to
/// accumulator steps may cause before `fuse_requant` adds a folded batch norm's bias at
/// a finer scale (`fine_bias_requant`): about the f32 evaluation's own error on results
/// of up to 2^8 codes (a few 2^-24 relative steps), so the integer layer matches the
/// float one except where the float one is itself within rounding error of a code
/// boundary.
const BIAS_CODES_TOLERANCE: f64 = 1.0 / 4096.0;

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
    // The location of the float kernel this one replaces (the quantize's operand).
    let kclass = op_nodes(eg, root, Op::Quantize)
        .into_iter()
        .map(|(_, o)| o[0])
        .find(|&k| eg[k].nodes.iter().any(|n| n.op() == Some(p.float_op)));
    // The bias rounded to whole accumulator steps moves a channel's results by up to
    // half a step, `0.5 * ratio` codes: near one code when the accumulator is about as
    // coarse as the result (low-bit inputs and weights, a 7- or 8-bit result), and
    // enough to move codes near a boundary otherwise; against the float layer (and
    // QONNX's executor) those codes are one off, and the differences add up over the
    // layers. For a folded batch norm (a Brevitas conv / batch norm / act / Quant layer,
    // whose bias is rarely a whole number of steps) the bias is then added at a finer
    // scale after the kernel (`fine_bias_requant`).
    let bias_codes_err = p.bias.as_ref().map_or(0.0, |b| {
        b.iter()
            .zip(&ratios)
            .map(|(v, r)| (v - v.round_ties_even()).abs() * r)
            .fold(0.0f64, f64::max)
    });
    if bias_codes_err > BIAS_CODES_TOLERANCE
        && kclass.is_some_and(|k| eg[k].nodes.iter().any(|n| n.op() == Some(Op::BatchNorm)))
    {
        return fine_bias_requant(eg, &qm, p, &ratios, kclass);
    }
    let mults: Option<Vec<(i64, i64)>> = ratios.iter().map(|&r| multiplier(r)).collect();
    let mults = mults?;
    let (mut ms, mut ss): (Vec<i64>, Vec<i64>) = mults.into_iter().unzip();
    if ms.iter().all(|&m| m == ms[0]) && ss.iter().all(|&x| x == ss[0]) {
        ms.truncate(1);
        ss.truncate(1);
    }
    let acc = kernel(eg, &p)?;
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

/// The requantize of a kernel whose bias is not a whole number of accumulator steps,
/// with the bias added at `2^-k` of an output code instead of rounded to accumulator
/// steps: `requantize_{1, k}(add(requantize_{r 2^k}(kernel_int(x, w)), round(b r 2^k)))`
/// (`r` the accumulator-to-output ratio per channel, `k <= 12` as large as keeps every
/// intermediate within 2^30). Error against the real result: the fine requantize's
/// rounding and multiplier (half a fine step and 2^-31 relative) and the bias's (half
/// a fine step), so at most `2^-k` codes plus the float path's own bound, where a
/// bias rounded to accumulator steps moves results by up to `0.5 r` codes. Two integer
/// elementwise passes more than the fused requantize. `None` when `k` would be below 8.
fn fine_bias_requant(
    eg: &mut QEGraph,
    qm: &Meta,
    mut p: Plan,
    ratios: &[f64],
    kclass: Option<Id>,
) -> Option<Id> {
    let bias = p.bias.take()?;
    let acc_max = p.k as f64 * p.max_product;
    let reach = ratios
        .iter()
        .zip(&bias)
        .map(|(&r, &b)| (acc_max + b.abs()) * r + 1.0)
        .fold(0.0f64, f64::max);
    let k = (0..=12)
        .rev()
        .find(|&k| reach * 2f64.powi(k) < 2f64.powi(30))?;
    if k < 8 {
        return None;
    }
    let scale = 2f64.powi(k);
    let fine: Option<Vec<(i64, i64)>> = ratios.iter().map(|&r| multiplier(r * scale)).collect();
    let (mut ms, mut ss): (Vec<i64>, Vec<i64>) = fine?.into_iter().unzip();
    if ms.iter().all(|&m| m == ms[0]) && ss.iter().all(|&x| x == ss[0]) {
        ms.truncate(1);
        ss.truncate(1);
    }
    let fine_bias: Vec<i64> = bias
        .iter()
        .zip(ratios)
        .map(|(&b, &r)| (b * r * scale).round_ties_even() as i64)
        .collect();
    let m_len = fine_bias.len();
    let acc = kernel(eg, &p)?;
    if let Some(kc) = kclass {
        inherit_loc(eg, acc, kc);
    }
    let fine_attrs = attrs([
        ("multiplier", ints(ms)),
        ("shift", ints(ss)),
        ("axis", Attr::Int(p.axis as i64)),
        ("rounding", Attr::Enum("half_even".into())),
    ]);
    let fine = add_op(
        eg,
        Op::Requantize,
        i32_ty(p.shape.clone()),
        fine_attrs,
        &[acc],
    );
    hint(eg, fine, format!("{}.fine", p.name));
    let mut bshape = vec![1usize; p.shape.len()];
    bshape[p.axis] = m_len;
    let b = add_const(
        eg,
        &format!("{}.fine_bias", p.name),
        i32_ty(bshape),
        ConstData::Int(fine_bias),
    );
    let sum = add_op(eg, Op::Add, i32_ty(p.shape.clone()), attrs([]), &[fine, b]);
    hint(eg, sum, format!("{}.biased", p.name));
    let a = attrs([
        ("multiplier", ints(vec![1])),
        ("shift", ints(vec![k as i64])),
        ("axis", Attr::Int(p.axis as i64)),
        ("rounding", Attr::Enum(qm.attrs().word("rounding").ok()?)),
    ]);
    Some(add_op(eg, Op::Requantize, qm.ty.clone(), a, &[sum]))
}

/// `kernel(dequantize(x), dequantize(w), b) -> dequantize(cast_{q<i32,
/// sx*sw>}(kernel_int(x, w, bq)))` when the bias is a whole number of accumulator steps
/// (within 2^-10 of one), else `-> add(dequantize(cast_{q<i32, sx*sw>}(kernel_int(x, w))),
/// b)`: the float bias is added to the float result (in f32) instead of being rounded to
/// accumulator steps, so a final layer's output keeps its bias (a coarse accumulator
/// step, e.g. of 2-bit operands, would otherwise move the logits by up to half a step).
fn fuse_float(eg: &mut QEGraph, root: Id, s: &Subst) -> Option<Id> {
    let mut p = plan(eg, root, s, true)?;
    let whole = p.bias.as_ref().is_none_or(|b| {
        b.iter()
            .all(|v| (v - v.round_ties_even()).abs() <= 2f64.powi(-10))
    });
    let bias = match (p.bias.take_if(|_| !whole), opt_var(s, "?b")) {
        (Some(_), Some(b)) => {
            let bt = ty(eg, b).clone();
            if p.float_op == Op::Conv2d {
                // [M] -> [M, 1, 1] to broadcast along the channels of [N, M, H, W].
                let v = float_value(eg, b)?;
                let m_len = p.acc_scales.len();
                let v = if v.len() == 1 { vec![v[0]; m_len] } else { v };
                if v.len() != m_len {
                    return None;
                }
                let name = format!("{}.bias", p.name);
                Some(add_const(
                    eg,
                    &name,
                    TensorType::f32(vec![m_len, 1, 1]),
                    ConstData::F32(v),
                ))
            } else if bt.elem == ElemType::F32 {
                Some(b)
            } else {
                let v = float_value(eg, b)?;
                let name = format!("{}.bias", p.name);
                Some(add_const(
                    eg,
                    &name,
                    TensorType::f32(bt.shape),
                    ConstData::F32(v),
                ))
            }
        }
        _ => None,
    };
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
    match bias {
        None => Some(out),
        Some(b) => {
            hint(eg, out, format!("{}.unbiased", p.name));
            Some(add_op(
                eg,
                Op::Add,
                ty(eg, root).clone(),
                attrs([]),
                &[out, b],
            ))
        }
    }
}

/// The batch-norm and bipolar rules of this group (QONNX / Brevitas layers).
pub fn bn_and_bipolar_rules() -> Vec<RuleDef> {
    let conv = "(conv2d ?km (dequantize ?dx ?x) (dequantize ?dw ?w)";
    let bn = |inner: &str| format!("(batch_norm ?bm {inner}) ?s ?b ?mu ?v)");
    vec![
        rule(
            "fold-batch-norm-into-weight-scale",
            BN_SCALE_BOUND,
            &bn(conv),
            fold_bn_scale,
        ),
        rule(
            "fold-batch-norm-into-weight-scale-bias",
            BN_SCALE_BOUND,
            &bn(&format!("{conv} ?cb")),
            fold_bn_scale,
        ),
        rule(
            "fold-mul-into-weight-scale",
            MUL_SCALE_BOUND,
            &format!("(mul ?mm {conv}) ?c)"),
            fold_mul_scale,
        ),
        rule(
            "fold-mul-into-weight-scale-commuted",
            MUL_SCALE_BOUND,
            &format!("(mul ?mm ?c {conv}))"),
            fold_mul_scale,
        ),
        rule(
            "fold-mul-into-weight-scale-bias",
            MUL_SCALE_BOUND,
            &format!("(mul ?mm {conv} ?cb) ?c)"),
            fold_mul_scale,
        ),
        rule(
            "fold-mul-into-weight-scale-bias-commuted",
            MUL_SCALE_BOUND,
            &format!("(mul ?mm ?c {conv} ?cb))"),
            fold_mul_scale,
        ),
        rule(
            "conv2d-int-bipolar-operands",
            Exactness::Exact,
            "(conv2d_int ?km (cast ?cm ?x) ?w)",
            bipolar_operands,
        ),
        rule(
            "conv2d-int-bias-bipolar-operands",
            Exactness::Exact,
            "(conv2d_int ?km (cast ?cm ?x) ?w ?ib)",
            bipolar_operands,
        ),
        rule(
            "matmul-int-bipolar-operands",
            Exactness::Exact,
            "(matmul_int ?km (cast ?cm ?x) ?w)",
            bipolar_operands,
        ),
        rule(
            "matmul-int-bias-bipolar-operands",
            Exactness::Exact,
            "(matmul_int ?km (cast ?cm ?x) ?w ?ib)",
            bipolar_operands,
        ),
    ]
}

const BN_SCALE_BOUND: Exactness = Exactness::Bounded(
    "f32 rounding only: 2^-21 of (K*max|x|*max|w'| + |bias'|) plus 2^-21 of the batch norm's operand and result",
);

/// `batch_norm(conv2d(dequantize(x), dequantize(w), b?)) -> conv2d(dequantize(x),
/// dequantize(w'), b')`: the batch norm's per-channel factor `a[c] = scale[c] /
/// sqrt(var[c] + eps)` (f64) goes into the weights' **scales** (`sw'[c] = sw[c] a[c]`,
/// the codes and zero points unchanged, so the weights keep their grid and bit-width)
/// and `b'[c] = (b[c] - mean[c]) a[c] + bias[c]`. Applies when every `a[c] > 0` (scales
/// stay positive), the weights are a quantized constant (per tensor or per output
/// channel) and the batch norm's parameters are constants. Bounded: the real-number
/// results are equal; the two sides differ by the f32 roundings of the dequantized
/// weights (2^-24 relative each, so `K max|x| max|w'| 2^-23` on the sum) and of the
/// batch norm's four f32 steps on the left (a few ulps of its operand and result).
/// Batch-norm folding on float weights (the `fold-batch-norm` pass) would put the
/// weights off their grid; this keeps the layer integer.
fn fold_bn_scale(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let bm = meta(eg, var(s, "?bm")).clone();
    let m_len = *ty(eg, var(s, "?w")).shape.first()?;
    let eps = bm.attrs().float("epsilon").ok()? as f64;
    let p: Option<Vec<Vec<f32>>> = ["?s", "?b", "?mu", "?v"]
        .iter()
        .map(|v| float_value(eg, var(s, v)))
        .collect();
    let p = p?;
    if p.iter().any(|v| v.len() != m_len) {
        return None;
    }
    let a: Vec<f64> = (0..m_len)
        .map(|c| p[0][c] as f64 / (p[3][c] as f64 + eps).sqrt())
        .collect();
    rescale_conv(eg, s, "bn", &a, |c, old| {
        (old as f64 - p[2][c] as f64) * a[c] + p[1][c] as f64
    })
}

const MUL_SCALE_BOUND: Exactness = Exactness::Bounded(
    "f32 rounding only: 2^-21 of (K*max|x|*max|w'| + |bias'|) plus 2^-23 of the product",
);

/// `mul(conv2d(dequantize(x), dequantize(w), b?), c) -> conv2d(dequantize(x),
/// dequantize(w'), b')` (either operand order of the `mul`) for a constant `c`, per
/// output channel (`[1, M, 1, 1]`, `[M, 1, 1]`) or a single value, with every `c[m] > 0`:
/// the factor goes into the weights' **scales** (`sw'[m] = sw[m] c[m]`, codes and zero
/// points unchanged) and `b'[m] = b[m] c[m]`, as for a batch norm
/// (`fold-batch-norm-into-weight-scale`). This is the form XNOR-Net / Bi-Real binary
/// layers export in (`BipolarQuant(w)` with scale 1, the conv, then a `Mul` by the
/// per-channel `alpha[m] = mean |w[m]|`): the weights stay +-1 codes (the XNOR kernels
/// still apply) and `alpha` becomes the accumulator's per-channel scale, which a
/// following batch norm, threshold or requantize then takes in. Bounded: equal as real
/// numbers; the f32 roundings of the dequantized weights (2^-24 relative each) and of
/// the product on the left (2^-24 relative) differ.
fn fold_mul_scale(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let km = meta(eg, var(s, "?km")).clone();
    if meta(eg, var(s, "?mm")).ty != km.ty || km.ty.rank() != 4 {
        return None;
    }
    let m_len = km.ty.shape[1];
    let c = super::fold_bias::per_channel(eg, var(s, "?c"), 4, 1, m_len)?;
    let a: Vec<f64> = c.iter().map(|&v| v as f64).collect();
    rescale_conv(eg, s, "mul", &a, |m, old| old as f64 * a[m])
}

/// `conv2d(dequantize(x), dequantize(w'), b')` for the match of `?km`, `?dx`, `?x`, `?w`
/// and `?cb` (the bias, absent = 0; the new constants are named after `w` and `tag`): `w'` has the codes and zero points of the constant
/// quantized `w` (per tensor or per output channel) and the scales `sw[m] a[m]` (per
/// output channel), `b'[m] = bias(m, b[m])`. `None` unless every `a[m]` is positive
/// and finite and the new scales and bias are usable.
fn rescale_conv(
    eg: &mut QEGraph,
    s: &Subst,
    tag: &str,
    a: &[f64],
    bias: impl Fn(usize, f32) -> f64,
) -> Option<Id> {
    let km = meta(eg, var(s, "?km")).clone();
    let (x, w) = (var(s, "?x"), var(s, "?w"));
    let wt = ty(eg, w).clone();
    let wq = wt.elem.quant()?.clone();
    let codes = value(eg, w)?.as_int()?.to_vec();
    let m_len = *wt.shape.first()?;
    if a.len() != m_len || a.iter().any(|&v| !(v.is_finite() && v > 0.0)) {
        return None;
    }
    let sw = scales_along(&wq, 0, m_len)?;
    let zw = crate::rewrite::build::zero_points_along(&wq, 0, m_len)?;
    let scales: Vec<f32> = sw.iter().zip(a).map(|(&s, &f)| (s * f) as f32).collect();
    let nq = QuantType {
        storage: wq.storage,
        narrow: wq.narrow,
        pow2: false,
        params: QuantParams::PerAxis {
            axis: 0,
            scales,
            zero_points: zw.iter().map(|&z| z as i32).collect(),
        },
    };
    if !scales_tame(&nq) {
        return None;
    }
    let old_bias = match opt_var(s, "?cb") {
        None => vec![0.0f32; m_len],
        Some(b) => {
            let v = float_value(eg, b)?;
            if v.len() != m_len {
                return None;
            }
            v
        }
    };
    let bias: Vec<f32> = (0..m_len).map(|c| bias(c, old_bias[c]) as f32).collect();
    if bias.iter().any(|b| !b.is_finite()) {
        return None;
    }
    let wname = format!("{}.{tag}", name_of(eg, w, "w"));
    let w2 = add_const(
        eg,
        &wname,
        TensorType::new(ElemType::Quant(nq), wt.shape.clone()),
        ConstData::Int(codes),
    );
    let dw = add_op(
        eg,
        Op::Dequantize,
        TensorType::f32(wt.shape.clone()),
        attrs([]),
        &[w2],
    );
    let dxm = meta(eg, var(s, "?dx")).clone();
    let dx = add_op(eg, Op::Dequantize, dxm.ty, attrs([]), &[x]);
    let mut operands = vec![dx, dw];
    // No bias before and none after (a `mul` of a conv without one): none added.
    if opt_var(s, "?cb").is_some() || bias.iter().any(|&b| b != 0.0) {
        let bname = format!("{}.{tag}_bias", name_of(eg, w, "w"));
        let b2 = add_const(
            eg,
            &bname,
            TensorType::f32(vec![m_len]),
            ConstData::F32(bias),
        );
        operands.push(b2);
    }
    Some(add_op(eg, Op::Conv2d, km.ty, km.attrs, &operands))
}

/// `conv2d_int(cast_T(x), w, b?) -> conv2d_int(x, w', b?)` (likewise `matmul_int`) for
/// `b1` `x` and `T` with zero point 0 (per tensor): the kernels read `b1` codes as +-1,
/// which the cast keeps, and the accumulator `sum (x - 0)(w - zw)` is the same. A
/// constant `w` whose codes are all +-1 with zero points 0 becomes a `b1` constant
/// (`w'`), so both operands are `b1` and the XNOR-popcount kernels apply. Exact.
fn bipolar_operands(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let km = meta(eg, var(s, "?km")).clone();
    let cm = meta(eg, var(s, "?cm")).clone();
    let (x, w) = (var(s, "?x"), var(s, "?w"));
    if ty(eg, x).elem != ElemType::Bipolar {
        return None;
    }
    match &cm.ty.elem {
        ElemType::Quant(q) => {
            if !matches!(q.params, QuantParams::PerTensor { zero_point: 0, .. })
                || !q.storage.signed
                || q.storage.bits < 2
            {
                return None;
            }
        }
        ElemType::Int(t) if t.signed && t.bits >= 2 => {}
        _ => return None,
    }
    let wt = ty(eg, w).clone();
    let w_b1 = match (&wt.elem, value(eg, w).and_then(|v| v.as_int())) {
        (ElemType::Bipolar, _) => w,
        (ElemType::Quant(q), Some(codes))
            if q.params.zero_points().iter().all(|&z| z == 0)
                && codes.iter().all(|&c| c == 1 || c == -1) =>
        {
            let codes = codes.to_vec();
            let name = format!("{}.b1", name_of(eg, w, "w"));
            add_const(
                eg,
                &name,
                TensorType::new(ElemType::Bipolar, wt.shape.clone()),
                ConstData::Int(codes),
            )
        }
        _ => w,
    };
    let mut ops = vec![x, w_b1];
    if let Some(b) = opt_var(s, "?ib") {
        ops.push(b);
    }
    Some(add_op(eg, km.op, km.ty, km.attrs, &ops))
}
