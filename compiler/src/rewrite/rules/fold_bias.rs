//! Folding a constant addition after conv2d, matmul or gemm into the kernel's bias, so
//! that the fusions see one kernel with a bias (and quantize the bias to i32).
//!
//! Bound (all rules): the left side rounds the kernel's exact sum to f32 and then rounds
//! the addition again; the right side adds the bias inside the exact sum and rounds once
//! (and an existing bias plus the added one is rounded once more in f32). The results
//! differ by at most `2^-23 (|y| + |b|)` per element.

use egg::{Id, Subst};
use qcc_ir::{Attr, ConstData, Op, TensorType};

use crate::rewrite::analysis::{QEGraph, meta, ty, value};
use crate::rewrite::build::{add_const, add_op, name_of};
use crate::rewrite::rule::{Exactness, RuleDef, opt_var, rule, var};

const ROUNDING: Exactness = Exactness::Bounded("2^-23 (|y| + |b|) per element");

pub fn rules() -> Vec<RuleDef> {
    vec![
        rule(
            "fold-add-into-conv2d",
            ROUNDING,
            "(add ?am (conv2d ?km ?x ?w) ?b)",
            fold_conv,
        ),
        rule(
            "fold-add-into-conv2d-commuted",
            ROUNDING,
            "(add ?am ?b (conv2d ?km ?x ?w))",
            fold_conv,
        ),
        rule(
            "fold-add-into-conv2d-bias",
            ROUNDING,
            "(add ?am (conv2d ?km ?x ?w ?c) ?b)",
            fold_conv,
        ),
        rule(
            "matmul-add-to-gemm",
            ROUNDING,
            "(add ?am (matmul ?km ?x ?w) ?b)",
            fold_matmul,
        ),
        rule(
            "matmul-add-to-gemm-commuted",
            ROUNDING,
            "(add ?am ?b (matmul ?km ?x ?w))",
            fold_matmul,
        ),
        rule(
            "fold-add-into-gemm",
            ROUNDING,
            "(add ?am (gemm ?km ?x ?w) ?b)",
            fold_gemm,
        ),
    ]
}

/// The constant `?b` as one value per channel of `channels`, when its shape broadcasts
/// only along `axis` of a result of rank `rank` (or it is a single value).
pub(crate) fn per_channel(
    eg: &QEGraph,
    b: Id,
    rank: usize,
    axis: usize,
    channels: usize,
) -> Option<Vec<f32>> {
    let v = value(eg, b)?.as_f32()?.to_vec();
    let shape = &ty(eg, b).shape;
    if v.len() == 1 {
        return Some(vec![v[0]; channels]);
    }
    if shape.len() > rank || v.len() != channels {
        return None;
    }
    // Right-align the bias shape with the result's; its one non-1 axis must be `axis`.
    let off = rank - shape.len();
    let ok = shape
        .iter()
        .enumerate()
        .all(|(i, &d)| d == 1 || i + off == axis);
    ok.then_some(v)
}

/// The add must not broadcast the kernel's result to a larger shape.
fn same_shape(eg: &QEGraph, s: &Subst) -> Option<TensorType> {
    let am = meta(eg, var(s, "?am"));
    let km = meta(eg, var(s, "?km"));
    (am.ty == km.ty).then(|| km.ty.clone())
}

/// The new bias constant: the existing one (if any) plus the added one, in f32.
fn bias_const(eg: &mut QEGraph, root: Id, s: &Subst, add: Vec<f32>) -> Option<Id> {
    let n = add.len();
    let total = match opt_var(s, "?c") {
        Some(c) => {
            let old = value(eg, c)?.as_f32()?.to_vec();
            if old.len() != n {
                return None;
            }
            old.iter().zip(&add).map(|(a, b)| a + b).collect()
        }
        None => add,
    };
    let name = format!("{}.bias", name_of(eg, root, "k"));
    Some(add_const(
        eg,
        &name,
        TensorType::f32(vec![n]),
        ConstData::F32(total),
    ))
}

/// `add(conv2d(x, w[, c]), b) -> conv2d(x, w, c + b)` for a per-channel (or scalar)
/// constant b.
fn fold_conv(eg: &mut QEGraph, root: Id, s: &Subst) -> Option<Id> {
    let t = same_shape(eg, s)?;
    let km = meta(eg, var(s, "?km")).clone();
    let m = *t.shape.get(1)?;
    let add = per_channel(eg, var(s, "?b"), t.rank(), 1, m)?;
    let bias = bias_const(eg, root, s, add)?;
    Some(add_op(
        eg,
        Op::Conv2d,
        t,
        km.attrs,
        &[var(s, "?x"), var(s, "?w"), bias],
    ))
}

/// `add(matmul(x, w), b) -> gemm(x, w, b)` for 2-D x and w and a per-column b.
fn fold_matmul(eg: &mut QEGraph, root: Id, s: &Subst) -> Option<Id> {
    let t = same_shape(eg, s)?;
    if ty(eg, var(s, "?x")).rank() != 2 || ty(eg, var(s, "?w")).rank() != 2 {
        return None;
    }
    let add = per_channel(eg, var(s, "?b"), 2, 1, t.shape[1])?;
    let bias = bias_const(eg, root, s, add)?;
    let attrs = crate::rewrite::build::attrs([]);
    Some(add_op(
        eg,
        Op::Gemm,
        t,
        attrs,
        &[var(s, "?x"), var(s, "?w"), bias],
    ))
}

/// `add(gemm(x, w), b) -> gemm(x, w, b)` (beta = 1) for a gemm without C and a
/// per-column b.
fn fold_gemm(eg: &mut QEGraph, root: Id, s: &Subst) -> Option<Id> {
    let t = same_shape(eg, s)?;
    let km = meta(eg, var(s, "?km")).clone();
    let add = per_channel(eg, var(s, "?b"), 2, 1, t.shape[1])?;
    let bias = bias_const(eg, root, s, add)?;
    let mut attrs = km.attrs;
    attrs.insert("beta".into(), Attr::Float(1.0));
    Some(add_op(
        eg,
        Op::Gemm,
        t,
        attrs,
        &[var(s, "?x"), var(s, "?w"), bias],
    ))
}
