//! Power-of-two requantize multipliers become plain shifts.

use egg::{Id, Subst};
use qcc_ir::{Attr, Op};

use crate::rewrite::analysis::{QEGraph, meta};
use crate::rewrite::build::add_op;
use crate::rewrite::rule::{Exactness, RuleDef, rule, var};

pub fn rules() -> Vec<RuleDef> {
    vec![rule(
        "requantize-pow2-to-shift",
        Exactness::Exact,
        "(requantize ?m ?x)",
        pow2_to_shift,
    )]
}

/// `requantize{2^k, s}(x) -> requantize{1, s - k}(x)` (per channel: each multiplier a
/// power of two, the channel's shift adjusted; shifts must stay in -31..=62). Exact:
/// `a 2^k / 2^s = a / 2^(s - k)`, rounded the same way. The fusions produce such
/// multipliers (`2^30`) whenever the scale ratio is a power of two, e.g. for `pow2`
/// types.
fn pow2_to_shift(eg: &mut QEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let m = meta(eg, var(s, "?m")).clone();
    let a = m.attrs();
    let mults = a.ints("multiplier").ok()?;
    let shifts = a.ints("shift").ok()?;
    if mults.iter().all(|&v| v == 1) || mults.iter().any(|&v| v <= 0 || v.count_ones() != 1) {
        return None;
    }
    let n = mults.len().max(shifts.len());
    let pick = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
    let new_shifts: Vec<i64> = (0..n)
        .map(|i| pick(&shifts, i) - pick(&mults, i).trailing_zeros() as i64)
        .collect();
    if new_shifts.iter().any(|sh| !(-31..=62).contains(sh)) {
        return None;
    }
    let collapse = new_shifts.iter().all(|&v| v == new_shifts[0]);
    let mut attrs = m.attrs.clone();
    attrs.insert("multiplier".into(), Attr::Ints(vec![1]));
    attrs.insert(
        "shift".into(),
        Attr::Ints(if collapse {
            vec![new_shifts[0]]
        } else {
            new_shifts
        }),
    );
    Some(add_op(
        eg,
        Op::Requantize,
        m.ty.clone(),
        attrs,
        &[var(s, "?x")],
    ))
}
