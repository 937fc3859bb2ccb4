//! A layer split by output channels joined again: integer convolutions of one input,
//! each requantized, whose channels a concat joins (whole, or as channel slices in any
//! order), become one convolution whose filters are the joined channels.
//!
//! `--sq-ratio` (`quant/sq.rs`) splits a layer into a low-width and a high-width group
//! of filters, each its own `conv2d_int` with its own weight codes, and joins the two
//! results with a concat: of the two results in group order (the permutation folded
//! into the layers around), or of slices of them in the original channel order. The
//! same layer can run as one kernel: the filters of both groups in the concat's order
//! in one weight tensor (the widest storage holds the narrower codes; scales and zero
//! points per output channel, as both groups have them), the biases and the requantize
//! parameters in the same order. Both forms stay in the e-graph and extraction keeps
//! the one the cost model prices lower: two kernels at their own widths (plus the
//! slices' and the concat's copies), or one at the widest width.
//!
//! Exact: every output channel's accumulator `bias[m] + sum (x - zx)(w - zw[m])` and its
//! requantize are the same in both forms, and the slices and the concat only place the
//! channels.

use egg::{Id, Language as _, Subst};
use qcc_ir::{Attr, ConstData, ElemType, IntType, Op, QuantParams, QuantType, TensorType};

use crate::rewrite::analysis::{QEGraph, meta, ty, value};
use crate::rewrite::build::{
    add_const, add_op, i32_ty, inherit_loc, name_of, scales_along, zero_points_along,
};
use crate::rewrite::intern::Meta;
use crate::rewrite::rule::{Exactness, RuleDef, rule_on_op};

pub fn rules() -> Vec<RuleDef> {
    vec![rule_on_op(
        "merge-split-conv2d",
        Exactness::Exact,
        Op::Concat,
        merge,
    )]
}

/// One filter group: `requantize(conv2d_int(x, w[, b]))` with constant `w`.
#[derive(Clone)]
struct Group {
    conv: Id,
    x: Id,
    k: Meta,
    w: Id,
    b: Option<Id>,
    r: Meta,
    /// Its output channels.
    m: usize,
}

/// The filter group class `id` holds, if any.
fn group_of(eg: &QEGraph, id: Id) -> Option<Group> {
    for n in &eg[id].nodes {
        if n.op() != Some(Op::Requantize) {
            continue;
        }
        let acc = eg.find(n.operands()[0]);
        for kn in &eg[acc].nodes {
            if kn.op() != Some(Op::Conv2dInt) {
                continue;
            }
            let ops = kn.operands();
            let w = eg.find(ops[1]);
            if value(eg, w).and_then(|v| v.as_int()).is_none() {
                continue;
            }
            let k = meta(eg, kn.children()[0]).clone();
            let m = *k.ty.shape.get(1)?;
            return Some(Group {
                conv: acc,
                x: eg.find(ops[0]),
                k,
                w,
                b: ops.get(2).map(|&b| eg.find(b)),
                r: meta(eg, n.children()[0]).clone(),
                m,
            });
        }
    }
    None
}

/// The group and channel range concat operand `id` takes: a whole group result, or a
/// unit-step slice of one along axis 1.
fn source_of(eg: &QEGraph, id: Id) -> Option<(Group, usize, usize)> {
    if let Some(g) = group_of(eg, id) {
        let m = g.m;
        return Some((g, 0, m));
    }
    for n in &eg[id].nodes {
        if n.op() != Some(Op::Slice) {
            continue;
        }
        let sm = meta(eg, n.children()[0]);
        let a = sm.attrs();
        let one = |k: &str| match a.ints(k).ok()?[..] {
            [v] => Some(v),
            _ => None,
        };
        if one("axes") != Some(1) || one("steps") != Some(1) {
            continue;
        }
        let Some(g) = group_of(eg, eg.find(n.operands()[0])) else {
            continue;
        };
        let (lo, hi) = (one("starts")?, one("ends")?);
        if lo < 0 || hi <= lo || hi as usize > g.m {
            continue;
        }
        return Some((g, lo as usize, hi as usize));
    }
    None
}

/// A requantize's per-channel list (one entry for all channels, or one per channel).
fn per_channel(v: &[i64], m: usize) -> Option<Vec<i64>> {
    match v.len() {
        1 => Some(vec![v[0]; m]),
        n if n == m => Some(v.to_vec()),
        _ => None,
    }
}

/// See the module documentation.
fn merge(eg: &mut QEGraph, root: Id, _s: &Subst) -> Option<Id> {
    let concats: Vec<(Id, Vec<Id>)> = eg[root]
        .nodes
        .iter()
        .filter(|n| n.op() == Some(Op::Concat))
        .map(|n| (n.children()[0], n.operands().to_vec()))
        .collect();
    for (cm, operands) in concats {
        let cm = meta(eg, cm).clone();
        if cm.attrs().int("axis").ok()? != 1 || operands.len() < 2 {
            continue;
        }
        let Some(parts) = operands
            .iter()
            .map(|&o| source_of(eg, eg.find(o)))
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        if let Some(id) = merged(eg, root, &cm, &parts) {
            return Some(id);
        }
    }
    None
}

/// The one convolution computing the concat of `parts`, when they agree on the input,
/// the convolution's attributes and the requantize's rounding, clamps and result type.
fn merged(eg: &mut QEGraph, root: Id, cm: &Meta, parts: &[(Group, usize, usize)]) -> Option<Id> {
    let g0 = &parts[0].0;
    let wt0 = ty(eg, g0.w).clone();
    if wt0.shape.len() != 4 || g0.k.attrs().int("group").ok()? != 1 {
        return None;
    }
    let groups: Vec<Id> = {
        let mut v: Vec<Id> = parts.iter().map(|p| p.0.conv).collect();
        v.sort();
        v.dedup();
        v
    };
    if groups.len() < 2 {
        return None;
    }
    let keep = ["rounding", "min", "max"];
    let mut wq: Vec<QuantType> = Vec::new();
    for (g, _, _) in parts {
        let wt = ty(eg, g.w);
        if g.x != g0.x
            || g.k.attrs != g0.k.attrs
            || g.r.ty.elem != cm.ty.elem
            || keep.iter().any(|k| g.r.attrs.get(*k) != g0.r.attrs.get(*k))
            || wt.shape[1..] != wt0.shape[1..]
        {
            return None;
        }
        wq.push(wt.elem.quant()?.clone());
    }
    // The joined weight type: the widest storage, narrow when the widest ones are.
    let signed = wq[0].storage.signed;
    let bits = wq.iter().map(|q| q.storage.bits).max()?;
    if wq.iter().any(|q| q.storage.signed != signed) {
        return None;
    }
    let narrow = wq
        .iter()
        .filter(|q| q.storage.bits == bits)
        .all(|q| q.narrow);
    let row: usize = wt0.shape[1..].iter().product();
    let mut codes = Vec::new();
    let (mut scales, mut zps) = (Vec::new(), Vec::new());
    let (mut bias, mut mult, mut shift) = (Vec::new(), Vec::new(), Vec::new());
    for ((g, lo, hi), q) in parts.iter().zip(&wq) {
        let w = value(eg, g.w)?.as_int()?;
        codes.extend_from_slice(w.get(lo * row..hi * row)?);
        let sc = scales_along(q, 0, g.m)?;
        let zp = zero_points_along(q, 0, g.m)?;
        scales.extend(sc[*lo..*hi].iter().map(|&s| s as f32));
        zps.extend(zp[*lo..*hi].iter().map(|&z| z as i32));
        match g.b {
            Some(b) => bias.extend_from_slice(value(eg, b)?.as_int()?.get(*lo..*hi)?),
            None => bias.extend(std::iter::repeat_n(0, hi - lo)),
        }
        let a = g.r.attrs();
        let (mu, sh) = (a.ints("multiplier").ok()?, a.ints("shift").ok()?);
        if (mu.len() > 1 || sh.len() > 1) && a.int("axis").ok()? != 1 {
            return None;
        }
        mult.extend_from_slice(&per_channel(&mu, g.m)?[*lo..*hi]);
        shift.extend_from_slice(&per_channel(&sh, g.m)?[*lo..*hi]);
    }
    let m = scales.len();
    if cm.ty.shape.get(1) != Some(&m) {
        return None;
    }
    let wtype = QuantType {
        storage: IntType::new(bits, signed),
        narrow,
        pow2: wq.iter().all(|q| q.pow2),
        params: QuantParams::PerAxis {
            axis: 0,
            scales,
            zero_points: zps,
        },
    };
    let mut wshape = wt0.shape.clone();
    wshape[0] = m;
    let name = name_of(eg, root, "k");
    let w = add_const(
        eg,
        &format!("{name}.w"),
        TensorType::new(ElemType::Quant(wtype), wshape),
        ConstData::Int(codes),
    );
    let b = add_const(
        eg,
        &format!("{name}.bias"),
        i32_ty(vec![m]),
        ConstData::Int(bias),
    );
    let mut shape = g0.k.ty.shape.clone();
    shape[1] = m;
    let acc = add_op(
        eg,
        Op::Conv2dInt,
        i32_ty(shape.clone()),
        g0.k.attrs.clone(),
        &[g0.x, w, b],
    );
    // The layer's name: the first group's, without the group suffix.
    inherit_loc(eg, acc, g0.conv);
    let t = eg[acc].data.tensor_mut();
    if let Some(base) = t.loc.as_deref().and_then(|l| {
        l.strip_suffix(".sq_low")
            .or_else(|| l.strip_suffix(".sq_high"))
    }) {
        t.loc = Some(base.to_string());
    }
    let mut ra = g0.r.attrs.clone();
    ra.insert("multiplier".into(), Attr::Ints(mult));
    ra.insert("shift".into(), Attr::Ints(shift));
    ra.insert("axis".into(), Attr::Int(1));
    Some(add_op(
        eg,
        Op::Requantize,
        TensorType::new(cm.ty.elem.clone(), shape),
        ra,
        &[acc],
    ))
}
