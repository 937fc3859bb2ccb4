//! Folding quantize/dequantize pairs.

use egg::{Id, Subst};
use qcc_ir::{ElemType, Op, Rounding, TensorType};

use crate::rewrite::analysis::{QEGraph, meta, ty};
use crate::rewrite::build::{add_op, attrs, scales_tame};
use crate::rewrite::rule::{Exactness, RuleDef, rule, var};

pub fn rules() -> Vec<RuleDef> {
    vec![
        rule(
            "fold-quantize-dequantize",
            Exactness::Exact,
            "(quantize ?qm (dequantize ?dm ?x))",
            fold_quantize_dequantize,
        ),
        rule(
            "binarize-dequantize",
            Exactness::Exact,
            "(binarize ?bm (dequantize ?dm ?x))",
            binarize_dequantize,
        ),
    ]
}

/// Whether `r` rounds to nearest (any tie rule).
pub fn nearest(r: Rounding) -> bool {
    matches!(
        r,
        Rounding::HalfEven | Rounding::HalfUp | Rounding::HalfDown
    )
}

/// `quantize(dequantize(x)) -> x` when the quantize produces x's own type and rounds to
/// nearest. Exact: a code k gives `fl(fl((k - z) * s) / s)`, within `2^-23 |k - z|` of
/// `k - z`, which is below one half for storage of at most 16 bits, so rounding to
/// nearest gives back `k - z`, and k is already inside the type's range. (Directed
/// roundings are not folded: the quotient may land just below or above the integer.)
/// Scales must be normal and small enough that `(k - z) * s` stays finite.
fn fold_quantize_dequantize(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let x = var(s, "?x");
    let m = meta(eg, var(s, "?qm"));
    if m.ty != *ty(eg, x) {
        return None;
    }
    let q = m.ty.elem.quant()?;
    let ok =
        nearest(m.attrs().rounding("rounding").ok()?) && q.storage.bits <= 16 && scales_tame(q);
    ok.then_some(x)
}

/// `binarize(dequantize(x)) -> binarize(x)`. Exact: with a positive scale,
/// `(q - z) * s >= 0` in f32 exactly when `q >= z`, which is binarize's rule for
/// quantized operands.
fn binarize_dequantize(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let x = var(s, "?x");
    let shape = ty(eg, x).shape.clone();
    Some(add_op(
        eg,
        Op::Binarize,
        TensorType::new(ElemType::Bipolar, shape),
        attrs([]),
        &[x],
    ))
}
