//! Float fusions that exporters leave undone, so that a float model runs fewer passes
//! over its activations (and a quantized one quantizes fewer intermediate values):
//!
//! - a per-channel (or scalar) constant multiplying a conv2d's result goes into its
//!   weights and bias (`mul(c, conv2d(x, w, b)) -> conv2d(x, c w, c b)`); a constant
//!   added after it then folds into the bias (`fold-bias`);
//! - hard-swish written out, `x * clip(x + 3, 0, 6) / 6`, becomes `hard_swish(x)`;
//! - (group `fuse-silu`, float builds only) SiLU written out, `x * sigmoid(x)` (either
//!   order), becomes `silu(x)`, which the backend fuses into the producing
//!   convolution's epilogue.
//!
//! Bounds: the conv's sum of `c w_k x_k` rounds each product once where the original
//! rounded the sum and then the product, at most `2^-23 |c| sum |w_k x_k|` apart per
//! element (a few ulps in practice); hard-swish computes `x * clamp(x / 6 + 1/2, 0, 1)`,
//! within `2^-22 |x|` of the written-out form; `silu` is defined as the written-out form
//! (exact).

use egg::{Id, Subst};
use qcc_ir::{Attr, ConstData, ElemType, Op, TensorType};

use super::fold_bias::per_channel;
use crate::rewrite::analysis::{QEGraph, meta, ty, value};
use crate::rewrite::build::{add_const, add_op, attrs, name_of};
use crate::rewrite::rule::{Exactness, RuleDef, opt_var, rule, var};

const SCALE: Exactness = Exactness::Bounded("2^-23 |c| sum |w_k x_k| per element");
const HARD_SWISH: Exactness = Exactness::Bounded("2^-22 |x| per element");

pub fn rules() -> Vec<RuleDef> {
    let mut v = vec![
        rule(
            "fold-mul-into-conv2d",
            SCALE,
            "(mul ?mm ?c (conv2d ?km ?x ?w))",
            fold_scale,
        ),
        rule(
            "fold-mul-into-conv2d-commuted",
            SCALE,
            "(mul ?mm (conv2d ?km ?x ?w) ?c)",
            fold_scale,
        ),
        rule(
            "fold-mul-into-conv2d-bias",
            SCALE,
            "(mul ?mm ?c (conv2d ?km ?x ?w ?b))",
            fold_scale,
        ),
        rule(
            "fold-mul-into-conv2d-bias-commuted",
            SCALE,
            "(mul ?mm (conv2d ?km ?x ?w ?b) ?c)",
            fold_scale,
        ),
    ];
    for (name, lhs) in [
        (
            "hard-swish",
            "(div ?dm (mul ?mm ?x (clip ?cm (add ?am ?x ?three))) ?six)",
        ),
        (
            "hard-swish-mul-commuted",
            "(div ?dm (mul ?mm (clip ?cm (add ?am ?x ?three)) ?x) ?six)",
        ),
        (
            "hard-swish-add-commuted",
            "(div ?dm (mul ?mm ?x (clip ?cm (add ?am ?three ?x))) ?six)",
        ),
        (
            "hard-swish-both-commuted",
            "(div ?dm (mul ?mm (clip ?cm (add ?am ?three ?x)) ?x) ?six)",
        ),
    ] {
        v.push(rule(name, HARD_SWISH, lhs, hard_swish));
    }
    v
}

/// The `fuse-silu` group: `x * sigmoid(x)` in either order becomes `silu(x)`.
pub fn silu_rules() -> Vec<RuleDef> {
    vec![
        rule(
            "silu",
            Exactness::Exact,
            "(mul ?mm ?x (sigmoid ?sm ?x))",
            silu,
        ),
        rule(
            "silu-commuted",
            Exactness::Exact,
            "(mul ?mm (sigmoid ?sm ?x) ?x)",
            silu,
        ),
    ]
}

/// The f32 scalar constant of class `id`.
fn scalar(eg: &QEGraph, id: Id) -> Option<f32> {
    match value(eg, id)?.as_f32()? {
        [v] => Some(*v),
        _ => None,
    }
}

/// `mul(c, conv2d(x, w[, b])) -> conv2d(x, c w, c b)` for a constant w and a
/// per-channel (or scalar) constant c that does not change the result's shape.
fn fold_scale(eg: &mut QEGraph, root: Id, s: &Subst) -> Option<Id> {
    let km = meta(eg, var(s, "?km")).clone();
    let t = km.ty.clone();
    if meta(eg, var(s, "?mm")).ty != t || t.elem != ElemType::F32 || t.rank() != 4 {
        return None;
    }
    let m = t.shape[1];
    let c = per_channel(eg, var(s, "?c"), 4, 1, m)?;
    let w = value(eg, var(s, "?w"))?.as_f32()?.to_vec();
    let wt = ty(eg, var(s, "?w")).clone();
    if wt.shape.first() != Some(&m) || w.len() % m != 0 {
        return None;
    }
    let per = w.len() / m;
    let scaled: Vec<f32> = w.iter().enumerate().map(|(i, v)| v * c[i / per]).collect();
    let base = name_of(eg, root, "k");
    let w2 = add_const(eg, &format!("{base}.ws"), wt, ConstData::F32(scaled));
    let mut operands = vec![var(s, "?x"), w2];
    if let Some(b) = opt_var(s, "?b") {
        let b = value(eg, b)?.as_f32()?.to_vec();
        if b.len() != m {
            return None;
        }
        let bs: Vec<f32> = b.iter().zip(&c).map(|(b, c)| b * c).collect();
        operands.push(add_const(
            eg,
            &format!("{base}.bs"),
            TensorType::f32(vec![m]),
            ConstData::F32(bs),
        ));
    }
    Some(add_op(eg, Op::Conv2d, t, km.attrs, &operands))
}

/// `x * clip(x + 3, 0, 6) / 6 -> hard_swish(x)` (f32, no broadcasting).
fn hard_swish(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let x = var(s, "?x");
    let t = ty(eg, x).clone();
    if t.elem != ElemType::F32 || meta(eg, var(s, "?dm")).ty != t {
        return None;
    }
    if scalar(eg, var(s, "?three"))? != 3.0 || scalar(eg, var(s, "?six"))? != 6.0 {
        return None;
    }
    let cm = meta(eg, var(s, "?cm"));
    let bound = |k: &str| match cm.attrs.get(k) {
        Some(Attr::Float(v)) => Some(*v),
        _ => None,
    };
    if bound("min")? != 0.0 || bound("max")? != 6.0 {
        return None;
    }
    Some(add_op(eg, Op::HardSwish, t, attrs([]), &[x]))
}

/// `x * sigmoid(x) -> silu(x)` (f32, no broadcasting).
fn silu(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let x = var(s, "?x");
    let t = ty(eg, x).clone();
    if t.elem != ElemType::F32 || meta(eg, var(s, "?mm")).ty != t {
        return None;
    }
    Some(add_op(eg, Op::Silu, t, attrs([]), &[x]))
}
