//! Sign and binarization after batch normalisation (or directly after a dequantize)
//! become per-channel integer thresholds on the codes.
//!
//! The thresholds are found by evaluating the left side with the reference interpreter
//! on every code of the operand's type, channel by channel, so they reproduce its f32
//! arithmetic exactly; the rules apply only where that evaluation is non-decreasing in
//! the code (a batch norm with a negative scale would need "at most" thresholds, which
//! `threshold` does not have) and free of NaN. Operands of at most 8 bits are evaluated
//! at every code; wider ones (the i32 accumulators of integer convolutions, e.g. a
//! binary conv followed by batch norm and a bipolar quantizer) by bisection over the
//! codes, exact because the evaluation is provably non-decreasing (see
//! `bn_thresholds`).

use egg::{Id, Subst};
use qcc_ir::interp::run;
use qcc_ir::{Attr, ConstData, ElemType, IntType, Module, Op, QuantParams, TensorType};

use crate::rewrite::analysis::{QEGraph, meta, ty, value};
use crate::rewrite::build::{add_const, add_op, attrs, i32_ty, name_of};
use crate::rewrite::intern::Meta;
use crate::rewrite::lang::QNode;
use crate::rewrite::rule::{Exactness, RuleDef, opt_var, rule, var};

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
            "quantize-batch-norm-to-threshold",
            Exactness::Exact,
            &format!("(quantize ?qm {bn})"),
            quantize_bn,
        ),
        rule(
            "quantize-relu-batch-norm-to-threshold",
            Exactness::Exact,
            &format!("(quantize ?qm (relu ?rm {bn}))"),
            quantize_bn,
        ),
        rule(
            "binarize-integer-to-threshold",
            Exactness::Exact,
            "(binarize ?om ?x)",
            binarize_integer,
        ),
        rule(
            "binarize-centered-dequantize-to-threshold",
            Exactness::Exact,
            "(binarize ?om (sub ?sm (dequantize ?dm ?x) ?t))",
            binarize_centered,
        ),
        rule(
            "threshold-of-relabel-cast",
            Exactness::Exact,
            "(threshold ?tm (cast ?cm ?x) ?t)",
            threshold_relabel,
        ),
        rule(
            "threshold-of-requantize",
            Exactness::Exact,
            "(threshold ?tm (requantize ?rm ?x) ?t)",
            threshold_requantize,
        ),
        rule(
            "sign-dequantize-to-threshold",
            Exactness::Exact,
            "(sign ?om (dequantize ?dm ?x))",
            sign_dequantize,
        ),
    ]
}

/// A predicate on an evaluated value (an f32 result, or an integer code, as f64).
type Pred = Box<dyn Fn(f64) -> bool>;

/// The batch norm of the match (followed by the matched `relu` when `?rm` is bound and
/// the matched `quantize` when `?qm` is bound), evaluated by the interpreter on `codes`
/// ([C, n], codes of `x`'s type per channel along axis 1): the results as f64 (f32
/// values, or the quantize's codes), [C, n].
fn bn_eval(eg: &QEGraph, s: &Subst, codes: Vec<i64>, c: usize, n: usize) -> Option<Vec<f64>> {
    let xt = ty(eg, var(s, "?x"));
    let mut m = Module::new("codes");
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
    let mut out = m.add_node(
        Op::BatchNorm,
        ops,
        bm.attrs.clone(),
        "y",
        TensorType::f32(vec![1, c, n]),
    );
    if opt_var(s, "?rm").is_some() {
        out = m.add_node(
            Op::Relu,
            vec![out],
            attrs([]),
            "r",
            TensorType::f32(vec![1, c, n]),
        );
    }
    if let Some(qm) = opt_var(s, "?qm") {
        let qm: &Meta = meta(eg, qm);
        out = m.add_node(
            Op::Quantize,
            vec![out],
            qm.attrs.clone(),
            "q",
            TensorType::new(qm.ty.elem.clone(), vec![1, c, n]),
        );
    }
    m.outputs = vec![out];
    let r = run(&m, &[]).ok()?;
    let t = r.into_iter().next()?;
    if let Some(v) = t.as_f32() {
        return Some(v.iter().map(|&f| f as f64).collect());
    }
    Some(t.as_int()?.iter().map(|&k| k as f64).collect())
}

/// For each channel (axis 1) of quantized class `x` and each predicate, the first code
/// (from `qmin`) whose batch-norm value satisfies it, `qmax + 1` when none does; `None`
/// when the batch norm is not known to be non-decreasing in the code.
///
/// Up to 8 bits every code is evaluated and the values checked to be non-decreasing and
/// free of NaN. Wider codes (integer accumulators) are searched by bisection, which is
/// exact because the evaluated function is non-decreasing: `dequantize` (`f32(q) -
/// f32(z)`, times a positive scale), then `x - mean`, `/ sqrt(var + eps)` (positive),
/// `* scale` (required `>= 0` here) and `+ bias`, each a correctly rounded f32
/// operation that is non-decreasing in its operand; the parameters must be finite with
/// `var + eps > 0`. The result must fit i32 (a channel whose predicate holds for no code
/// of a 32-bit type does not apply).
fn bn_thresholds(eg: &QEGraph, s: &Subst, preds: &[Pred]) -> Option<Vec<Vec<i64>>> {
    let x = var(s, "?x");
    let xt = ty(eg, x);
    let q = xt.elem.quant()?;
    if xt.rank() < 2 {
        return None;
    }
    match q.params {
        QuantParams::PerTensor { .. } => {}
        QuantParams::PerAxis { axis: 1, .. } => {}
        _ => return None,
    }
    let c = xt.shape[1];
    let (lo, hi) = (q.qmin(), q.qmax());
    if q.storage.bits <= 8 {
        let n = (hi - lo + 1) as usize;
        let codes: Vec<i64> = (0..c).flat_map(|_| lo..=hi).collect();
        let v = bn_eval(eg, s, codes, c, n)?;
        let per: Vec<&[f64]> = v.chunks(n).collect();
        let monotone = per
            .iter()
            .all(|ch| ch.iter().all(|f| !f.is_nan()) && ch.windows(2).all(|w| w[0] <= w[1]));
        if !monotone {
            return None;
        }
        return Some(
            per.iter()
                .map(|ch| preds.iter().map(|p| first(ch, lo, p)).collect())
                .collect(),
        );
    }
    // Wide codes: the parameters must make the evaluation non-decreasing.
    let eps = meta(eg, var(s, "?bm")).attrs().float("epsilon").ok()?;
    let p: Option<Vec<Vec<f32>>> = ["?s", "?b", "?mu", "?v"]
        .iter()
        .map(|v| Some(value(eg, var(s, v))?.as_f32()?.to_vec()))
        .collect();
    let p = p?;
    if p.iter()
        .any(|v| v.len() != c || v.iter().any(|f| !f.is_finite()))
        || p[0].iter().any(|&g| g < 0.0)
        || p[3].iter().any(|&v| v + eps <= 0.0 || (v + eps).is_nan())
    {
        return None;
    }
    let mut out = vec![Vec::with_capacity(preds.len()); c];
    for pred in preds {
        let first = bisect(
            c,
            lo,
            hi,
            |mid| bn_eval(eg, s, mid, c, 1),
            |_, v: &f64| (!v.is_nan()).then(|| pred(*v)),
        )?;
        for ch in 0..c {
            if first[ch] > i32::MAX as i64 {
                return None;
            }
            out[ch].push(first[ch]);
        }
    }
    Some(out)
}

/// Per channel, the first code in `[lo, hi]` whose value satisfies `holds` (`hi + 1`
/// when none does), by bisection: `eval` gives every channel's value at one code per
/// channel, and must be non-decreasing in the code with `holds` monotone (false, then
/// true); `holds` may return None to give up (e.g. a NaN).
fn bisect<V>(
    c: usize,
    lo: i64,
    hi: i64,
    mut eval: impl FnMut(Vec<i64>) -> Option<Vec<V>>,
    holds: impl Fn(usize, &V) -> Option<bool>,
) -> Option<Vec<i64>> {
    // Per channel the answer lies in [a, b]; b = hi + 1 stands for "none".
    let mut a = vec![lo; c];
    let mut b = vec![hi + 1; c];
    while a.iter().zip(&b).any(|(a, b)| a < b) {
        let mid: Vec<i64> = a
            .iter()
            .zip(&b)
            .map(|(&a, &b)| if a < b { a + (b - a) / 2 } else { a.min(hi) })
            .collect();
        let v = eval(mid.clone())?;
        for ch in 0..c {
            if a[ch] >= b[ch] {
                continue;
            }
            if holds(ch, &v[ch])? {
                b[ch] = mid[ch];
            } else {
                a[ch] = mid[ch] + 1;
            }
        }
    }
    Some(a)
}

/// The first code whose value satisfies `pred` (one past the last code if none).
fn first(ch: &[f64], lo: i64, pred: &Pred) -> i64 {
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
    let t = bn_thresholds(eg, s, &[Box::new(|v| v >= 0.0)])?;
    let t: Vec<i64> = t.into_iter().flatten().collect();
    Some(add_threshold(eg, var(s, "?x"), t, 1, 0, ElemType::Bipolar))
}

/// `sign(batch_norm(dequantize(x))) -> cast_f32(threshold_i8(x, [t0, t1], offset -1))`:
/// sign is `-1 + [v >= 0] + [v > 0]`, with `t0`/`t1` the first codes where the
/// normalised value is >= 0 / > 0. Exact.
fn sign_bn(eg: &mut QEGraph, root: Id, s: &Subst) -> Option<Id> {
    let t = bn_thresholds(eg, s, &[Box::new(|v| v >= 0.0), Box::new(|v| v > 0.0)])?;
    let t: Vec<i64> = t.into_iter().flatten().collect();
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

/// `binarize(x) -> threshold_b1(x, t)` for integer-valued `x` (quantized or plain, of
/// rank 2 or more, per tensor or per channel along axis 1) with `t[c]` its zero point (0
/// for plain integers). Exact: binarize of codes is `q >= zero_point`, the threshold's count.
fn binarize_integer(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let x = var(s, "?x");
    let xt = ty(eg, x).clone();
    if xt.rank() < 2 {
        return None;
    }
    let c = xt.shape[1];
    let t: Vec<i64> = match &xt.elem {
        ElemType::Int(_) => vec![0],
        ElemType::Quant(q) => match &q.params {
            QuantParams::PerTensor { zero_point, .. } => vec![*zero_point as i64],
            QuantParams::PerAxis {
                axis: 1,
                zero_points,
                ..
            } => zero_points.iter().map(|&z| z as i64).collect(),
            _ => return None,
        },
        _ => return None,
    };
    let t = if t.len() == 1 { vec![t[0]; c] } else { t };
    Some(add_threshold(eg, x, t, 1, 0, ElemType::Bipolar))
}

/// `binarize(dequantize(x) - t) -> threshold_b1(x, T)` for a constant scalar `t` and
/// quantized `x` of at most 8 bits (rank 2 or more, per tensor or per channel along axis
/// 1), `T[c]` the first code of channel `c` whose value `dequantize(code) - t` is `>= 0`
/// (the binarized input of a post-training 1-bit layer). Exact: the left side is
/// evaluated with the reference interpreter on every code, and applies only where it is
/// non-decreasing in the code (it always is for positive scales) and free of NaN.
fn binarize_centered(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let x = var(s, "?x");
    let t = var(s, "?t");
    let xt = ty(eg, x).clone();
    let q = xt.elem.quant()?;
    if xt.rank() < 2 || q.storage.bits > 8 {
        return None;
    }
    match q.params {
        QuantParams::PerTensor { .. } | QuantParams::PerAxis { axis: 1, .. } => {}
        _ => return None,
    }
    let tv = value(eg, t)?.as_f32()?.to_vec();
    let tt = ty(eg, t).clone();
    if tv.len() != 1 || tt.rank() > 1 {
        return None;
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
    let d = m.add_node(
        Op::Dequantize,
        vec![xs],
        attrs([]),
        "d",
        TensorType::f32(vec![1, c, n]),
    );
    let tc = m.add_const("t", tt, ConstData::F32(tv));
    let y = m.add_node(
        Op::Sub,
        vec![d, tc],
        attrs([]),
        "y",
        TensorType::f32(vec![1, c, n]),
    );
    m.outputs = vec![y];
    let r = run(&m, &[]).ok()?.into_iter().next()?;
    let v = r.as_f32()?;
    let mut th = Vec::with_capacity(c);
    for ch in v.chunks(n) {
        if ch.iter().any(|f| f.is_nan()) {
            return None;
        }
        let nonneg: Vec<bool> = ch.iter().map(|&f| f >= 0.0).collect();
        if nonneg.windows(2).any(|w| w[0] && !w[1]) {
            return None;
        }
        th.push(lo + nonneg.iter().position(|&b| b).unwrap_or(n) as i64);
    }
    Some(add_threshold(eg, x, th, 1, 0, ElemType::Bipolar))
}

/// `threshold(cast_T(x), t) -> threshold(x, t)` when the cast only relabels the codes
/// (`x` integer-valued with the same storage as `T`, e.g. an `i32` accumulator named
/// `q<i32, s:z>`). Exact: the codes, which the thresholds compare, are unchanged.
fn threshold_relabel(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let tm = meta(eg, var(s, "?tm")).clone();
    let cm = meta(eg, var(s, "?cm")).clone();
    let x = var(s, "?x");
    let (Some(a), Some(b)) = (ty(eg, x).elem.storage(), cm.ty.elem.storage()) else {
        return None;
    };
    if a != b {
        return None;
    }
    Some(add_op(
        eg,
        Op::Threshold,
        tm.ty,
        tm.attrs,
        &[x, var(s, "?t")],
    ))
}

/// `quantize_y(relu?(batch_norm(dequantize(x)))) -> threshold_y(x, t, offset qmin)`:
/// a multi-threshold with `K = qmax - qmin` thresholds per channel, `t[c, k]` the first
/// code of `x` whose quantized result is at least `qmin + k + 1`. Exact: the left side is
/// a non-decreasing function of the code (see `bn_thresholds`; relu and quantize are
/// non-decreasing too) with values in `[qmin, qmax]`, so it equals `qmin` plus the number
/// of thresholds the code reaches. The batch norm stays in the integer domain without
/// rounding its bias to accumulator units (which `fuse-int`'s requantize does), e.g. a
/// Brevitas conv / batch norm / relu / Quant layer. Results of at most 8 bits.
fn quantize_bn(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let qm = meta(eg, var(s, "?qm")).clone();
    let q = qm.ty.elem.quant()?;
    if q.storage.bits > 8 {
        return None;
    }
    let (lo, hi) = (q.qmin(), q.qmax());
    let preds: Vec<Pred> = (lo + 1..=hi)
        .map(|k| Box::new(move |v: f64| v >= k as f64) as Pred)
        .collect();
    let k = preds.len();
    let t = bn_thresholds(eg, s, &preds)?;
    let t: Vec<i64> = t.into_iter().flatten().collect();
    Some(add_threshold(
        eg,
        var(s, "?x"),
        t,
        k,
        lo,
        qm.ty.elem.clone(),
    ))
}

/// `threshold(requantize(x), t) -> threshold(x, T)` for `x` the result of a binary
/// (b1 x b1) conv or matmul: `T[c, k]` is the first code of `x` (channel `c`, axis 1)
/// whose requantized code reaches `t[c, k]`, so the next layer's sign (or a few
/// levels) is taken on the accumulator itself, in the XNOR kernel's epilogue, and binary
/// layers chain in b1 (e.g. a post-training `--bits 1` conv whose requantized output
/// feeds only the next layer's binarization). Exact: with
/// every multiplier `>= 0` the requantize is non-decreasing in the code (fixed-point
/// product, a rounding mode, saturation, clamps: each non-decreasing), so the count of
/// thresholds reached is the same on both sides, and `T` is found by bisection over the
/// codes with the reference interpreter evaluating the requantize. Applies when every
/// `T` fits i32 (a threshold no code reaches has no i32 form).
fn threshold_requantize(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let tm = meta(eg, var(s, "?tm")).clone();
    let rm = meta(eg, var(s, "?rm")).clone();
    let x = var(s, "?x");
    // Only where `x` is a binary conv/matmul: its kernel applies the threshold in its
    // epilogue. (Elsewhere the requantize is the better form: it fuses into the int8
    // kernels and into integer adds.)
    let binary = eg[x].nodes.iter().any(|n| match n {
        QNode::Op(Op::Conv2dInt | Op::MatMulInt, ch) => {
            ch.len() >= 3
                && ty(eg, ch[1]).elem == ElemType::Bipolar
                && ty(eg, ch[2]).elem == ElemType::Bipolar
        }
        _ => false,
    });
    if !binary {
        return None;
    }
    let xt = ty(eg, x).clone();
    let rank = xt.rank();
    if rank < 2 {
        return None;
    }
    let c = xt.shape[1];
    let (lo, hi) = xt.elem.code_range()?;
    let ta = tm.attrs();
    if qcc_ir::shape::normalize_axis(ta.int("axis").ok()?, rank).ok()? != 1 {
        return None;
    }
    let offset = ta.int("offset").ok()?;
    let ra = rm.attrs();
    let mult = ra.ints("multiplier").ok()?;
    if mult.iter().any(|&m| m < 0) {
        return None;
    }
    if mult.len() > 1 && qcc_ir::shape::normalize_axis(ra.int("axis").ok()?, rank).ok()? != 1 {
        return None;
    }
    let tv = value(eg, var(s, "?t"))?.as_int()?.to_vec();
    let (rows, k) = match ty(eg, var(s, "?t")).shape[..] {
        [r, k] if r == 1 || r == c => (r, k),
        _ => return None,
    };
    // The requantize alone, on `[1, C, n]` codes of x's type.
    let eval = |codes: Vec<i64>, n: usize| -> Option<Vec<i64>> {
        let mut m = Module::new("codes");
        let xs = m.add_const(
            "x",
            TensorType::new(xt.elem.clone(), vec![1, c, n]),
            ConstData::Int(codes),
        );
        let mut a = rm.attrs.clone();
        if mult.len() > 1 {
            a.insert("axis".into(), Attr::Int(1));
        }
        let y = m.add_node(
            Op::Requantize,
            vec![xs],
            a,
            "y",
            TensorType::new(rm.ty.elem.clone(), vec![1, c, n]),
        );
        m.outputs = vec![y];
        let r = run(&m, &[]).ok()?;
        Some(r.into_iter().next()?.as_int()?.to_vec())
    };
    let mut out = vec![0i64; c * k];
    for j in 0..k {
        let t = |ch: usize| tv[if rows == 1 { j } else { ch * k + j }];
        let first = bisect(
            c,
            lo,
            hi,
            |mid| eval(mid, 1),
            |ch, v: &i64| Some(*v >= t(ch)),
        )?;
        for ch in 0..c {
            if first[ch] > i32::MAX as i64 || first[ch] < i32::MIN as i64 {
                return None;
            }
            out[ch * k + j] = first[ch];
        }
    }
    Some(add_threshold(eg, x, out, k, offset, tm.ty.elem.clone()))
}
