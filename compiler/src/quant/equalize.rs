//! `--act-method dqa`: per-channel activation scales (issue 13, the first part of the
//! compile-time counterpart of DQA's activation quantization; `docs/methods.md`).
//!
//! DQA quantizes each activation channel with its own scale, `s_c = max |A_c| / 2^(N-1)`:
//! one per-tensor scale wastes the few levels of a 3-bit code on the widest channel. The
//! integer kernels take one scale per input tensor, so the per-channel scales are folded
//! into the weights around the activation instead: when an activation `a` is made from
//! the result of one conv/gemm `P` by ops that commute with a positive per-channel
//! factor (relu, leaky relu, max and average pooling), and every reader of `a` reaches a
//! conv/gemm `C` through such ops (and flatten), then scaling `P`'s output channel `c` by
//! `k_c` (its weights and bias) and `C`'s input channel `c` by `1 / k_c` leaves the float
//! model's function unchanged while every channel of `a` spans the same range. A
//! per-tensor quantizer of the equalized activation is then a per-channel quantizer of
//! the original, with `s_c = max |A_c| / k_c`-proportional scales, and everything fuses
//! as before. `k_c = R / r_c` with `r_c` the channel's calibrated range and `R` the
//! widest, capped at [`MAX_FACTOR`] (the reader's weights of a boosted channel shrink by
//! the same factor, and lose precision on their own per-channel grid).
//!
//! Activations that do not have that shape (a residual add, a concat, a graph output, a
//! non-homogeneous activation such as hard-swish) keep their per-tensor scale; the report
//! names them. The important channels' extra bits are `important.rs`.

use qcc_ir::{ConstData, Module, Op, ValueDef, ValueId};

use super::calibrate::CalibStats;
use super::insert::QuantLayer;

/// The largest factor a channel is scaled by.
pub const MAX_FACTOR: f32 = 32.0;

/// What [`equalize_activations`] did.
#[derive(Clone, Debug, Default)]
pub struct EqualizeReport {
    /// Activations equalized: name, channels, widest over narrowest channel range
    /// before (the spread a per-tensor scale pays for).
    pub equalized: Vec<(String, usize, f32)>,
    /// Activations left per-tensor, and why.
    pub skipped: Vec<(String, String)>,
}

/// How a reader sees the activation's channels.
pub(super) enum Reader {
    /// A conv2d reading it as its input `x`.
    Conv(usize),
    /// A gemm/matmul reading it flattened: node, features per channel.
    Dense(usize, usize),
}

fn def(m: &Module, v: ValueId) -> Option<usize> {
    match m.value(v).def {
        ValueDef::Node(n) => Some(n.index()),
        _ => None,
    }
}

pub(super) fn f32_const(m: &Module, v: ValueId) -> Option<Vec<f32>> {
    match m.const_data(v) {
        Some(ConstData::F32(d)) => Some(d.clone()),
        _ => None,
    }
}

pub(super) fn int_attr(m: &Module, n: usize, name: &str, default: i64) -> i64 {
    qcc_ir::ops::Attrs::new(m.nodes[n].op, &m.nodes[n].attrs)
        .int(name)
        .unwrap_or(default)
}

pub(super) fn bool_attr(m: &Module, n: usize, name: &str) -> bool {
    qcc_ir::ops::Attrs::new(m.nodes[n].op, &m.nodes[n].attrs)
        .bool(name)
        .unwrap_or(false)
}

/// Ops through which a positive per-channel factor passes unchanged.
fn homogeneous(op: Op) -> bool {
    matches!(
        op,
        Op::Relu | Op::LeakyRelu | Op::MaxPool | Op::AvgPool | Op::GlobalAvgPool
    )
}

/// The conv/gemm whose output channels make `a` (through homogeneous single-use ops).
pub(super) fn producer(
    m: &Module,
    users: &[Vec<qcc_ir::NodeId>],
    a: ValueId,
) -> Result<usize, String> {
    let mut v = a;
    loop {
        let Some(n) = def(m, v) else {
            return Err("it is not computed by a layer".into());
        };
        let node = &m.nodes[n];
        if homogeneous(node.op) {
            v = node.operands[0];
            if users[v.index()].len() != 1 || m.outputs.contains(&v) {
                return Err(format!("{} is read elsewhere too", m.value(v).spelling()));
            }
            continue;
        }
        return match node.op {
            Op::Conv2d
                if f32_const(m, node.operands[1]).is_some()
                    && node
                        .operands
                        .get(2)
                        .is_none_or(|&b| f32_const(m, b).is_some()) =>
            {
                Ok(n)
            }
            Op::Gemm
                if !bool_attr(m, n, "trans_a")
                    && f32_const(m, node.operands[1]).is_some()
                    && node
                        .operands
                        .get(2)
                        .is_none_or(|&b| f32_const(m, b).is_some()) =>
            {
                Ok(n)
            }
            op => Err(format!(
                "it comes from {} ({})",
                op.name(),
                m.value(node.result).spelling()
            )),
        };
    }
}

/// Whether `to` is `from` flattened from axis 1 (`[N, C, ...]` -> `[N, C * ...]`).
fn flattens(from: &[usize], to: &[usize]) -> bool {
    from.len() >= 2 && to.len() == 2 && to[0] == from[0] && to[1] == from[1..].iter().product()
}

/// Every reader of `a`, through homogeneous ops and flatten.
pub(super) fn readers(
    m: &Module,
    users: &[Vec<qcc_ir::NodeId>],
    a: ValueId,
) -> Result<Vec<Reader>, String> {
    let mut out = Vec::new();
    let mut stack = vec![(a, None::<usize>)];
    while let Some((v, per)) = stack.pop() {
        if m.outputs.contains(&v) {
            return Err(format!("{} is a graph output", m.value(v).spelling()));
        }
        for &u in &users[v.index()] {
            let n = u.index();
            let node = &m.nodes[n];
            match node.op {
                op if homogeneous(op) && per.is_none() => {
                    stack.push((node.result, None));
                }
                Op::Flatten | Op::Reshape
                    if per.is_none()
                        && flattens(m.ty(v).shape.as_slice(), &m.ty(node.result).shape)
                        && (node.op == Op::Reshape || int_attr(m, n, "axis", 1) == 1) =>
                {
                    let shape = &m.ty(v).shape;
                    let per: usize = shape.get(2..).map_or(1, |s| s.iter().product());
                    stack.push((node.result, Some(per.max(1))));
                }
                Op::Conv2d
                    if per.is_none()
                        && node.operands[0] == v
                        && f32_const(m, node.operands[1]).is_some() =>
                {
                    out.push(Reader::Conv(n));
                }
                Op::Gemm
                    if node.operands[0] == v
                        && !bool_attr(m, n, "trans_a")
                        && f32_const(m, node.operands[1]).is_some() =>
                {
                    out.push(Reader::Dense(n, per.unwrap_or(1)));
                }
                Op::MatMul if node.operands[0] == v && f32_const(m, node.operands[1]).is_some() => {
                    out.push(Reader::Dense(n, per.unwrap_or(1)));
                }
                op => {
                    return Err(format!(
                        "{} reads it ({})",
                        op.name(),
                        m.value(node.result).spelling()
                    ));
                }
            }
        }
    }
    if out.is_empty() {
        return Err("no conv/gemm reads it".into());
    }
    Ok(out)
}

/// Multiplies output channel `c` of producer `p` by `k[c]`.
fn scale_producer(m: &mut Module, p: usize, k: &[f32]) {
    let node = m.nodes[p].clone();
    let w = node.operands[1];
    let shape = m.ty(w).shape.clone();
    let mut wd = f32_const(m, w).expect("checked");
    match node.op {
        Op::Conv2d => {
            let inner: usize = shape[1..].iter().product();
            for (i, x) in wd.iter_mut().enumerate() {
                *x *= k[i / inner];
            }
        }
        _ => {
            // Gemm: B is [K, N], or [N, K] with trans_b.
            let trans_b = bool_attr(m, p, "trans_b");
            let cols = shape[1];
            for (i, x) in wd.iter_mut().enumerate() {
                let c = if trans_b { i / cols } else { i % cols };
                *x *= k[c];
            }
        }
    }
    m.value_mut(w).def = ValueDef::Const(ConstData::F32(wd));
    if let Some(&b) = node.operands.get(2) {
        let mut bd = f32_const(m, b).expect("checked");
        if bd.len() == k.len() {
            for (x, &f) in bd.iter_mut().zip(k) {
                *x *= f;
            }
            m.value_mut(b).def = ValueDef::Const(ConstData::F32(bd));
        }
    }
}

/// Divides the weights of reader `r` on input channel `c` by `k[c]`.
fn scale_reader(m: &mut Module, r: &Reader, k: &[f32]) {
    match *r {
        Reader::Conv(n) => {
            let w = m.nodes[n].operands[1];
            let shape = m.ty(w).shape.clone();
            let (mo, cg) = (shape[0], shape[1]);
            let inner: usize = shape[2..].iter().product();
            let group = int_attr(m, n, "group", 1).max(1) as usize;
            let mg = (mo / group).max(1);
            let mut wd = f32_const(m, w).expect("checked");
            for (i, x) in wd.iter_mut().enumerate() {
                let o = i / (cg * inner);
                let cl = (i / inner) % cg;
                let c = (o / mg) * cg + cl;
                *x /= k[c];
            }
            m.value_mut(w).def = ValueDef::Const(ConstData::F32(wd));
        }
        Reader::Dense(n, per) => {
            let w = m.nodes[n].operands[1];
            let shape = m.ty(w).shape.clone();
            let trans_b = m.nodes[n].op == Op::Gemm && bool_attr(m, n, "trans_b");
            let cols = shape[shape.len() - 1];
            let mut wd = f32_const(m, w).expect("checked");
            for (i, x) in wd.iter_mut().enumerate() {
                // The input feature this weight multiplies.
                let f = if trans_b {
                    i % cols
                } else {
                    (i / cols) % shape[shape.len() - 2]
                };
                *x /= k[f / per];
            }
            m.value_mut(w).def = ValueDef::Const(ConstData::F32(wd));
        }
    }
}

/// Whether reader `r` can take a permutation of its input channels: a conv2d without
/// groups, any dense reader; its weights used by it alone.
pub(super) fn can_permute(
    m: &Module,
    users: &[Vec<qcc_ir::NodeId>],
    r: &Reader,
) -> Result<(), String> {
    let n = match *r {
        Reader::Conv(n) | Reader::Dense(n, _) => n,
    };
    let w = m.nodes[n].operands[1];
    if users[w.index()].len() != 1 {
        return Err(format!(
            "the weights of {} are shared",
            m.value(m.nodes[n].result).spelling()
        ));
    }
    if let Reader::Conv(n) = *r
        && int_attr(m, n, "group", 1) != 1
    {
        return Err(format!(
            "{} is a grouped convolution",
            m.value(m.nodes[n].result).spelling()
        ));
    }
    Ok(())
}

/// Permutes the input channels of reader `r`: its new input channel `j` is the old
/// channel `perm[j]` (the producer's output channels were reordered by `perm`). Checked
/// by [`can_permute`] first.
pub(super) fn permute_reader(m: &mut Module, r: &Reader, perm: &[usize]) {
    let (n, per) = match *r {
        Reader::Conv(n) => (n, None),
        Reader::Dense(n, per) => (n, Some(per)),
    };
    let w = m.nodes[n].operands[1];
    let shape = m.ty(w).shape.clone();
    let old = f32_const(m, w).expect("checked");
    let mut new = old.clone();
    match per {
        None => {
            // [M, C, kh, kw], no groups.
            let c = shape[1];
            let inner: usize = shape[2..].iter().product();
            for (i, x) in new.iter_mut().enumerate() {
                let (o, j, s) = (i / (c * inner), (i / inner) % c, i % inner);
                *x = old[(o * c + perm[j]) * inner + s];
            }
        }
        Some(per) => {
            let trans_b = m.nodes[n].op == Op::Gemm && bool_attr(m, n, "trans_b");
            let cols = shape[shape.len() - 1];
            let rows = shape[shape.len() - 2];
            // The old index of the weight at `i` whose input feature is `f` now.
            let moved = |f: usize| perm[f / per] * per + f % per;
            for (i, x) in new.iter_mut().enumerate() {
                let src = if trans_b {
                    i - i % cols + moved(i % cols)
                } else {
                    let (blk, f, col) = (i / (rows * cols), (i / cols) % rows, i % cols);
                    (blk * rows + moved(f)) * cols + col
                };
                *x = old[src];
            }
        }
    }
    m.value_mut(w).def = ValueDef::Const(ConstData::F32(new));
}

/// Equalizes the channel ranges of every activation `layers` read (their `input`, with
/// statistics in `stats`) where the ops around it allow; `m` keeps its function.
pub fn equalize_activations(
    m: &mut Module,
    stats: &CalibStats,
    layers: &[QuantLayer],
) -> EqualizeReport {
    let mut rep = EqualizeReport::default();
    let mut done: Vec<ValueId> = Vec::new();
    for l in layers {
        let a = l.input;
        if done.contains(&a) {
            continue;
        }
        done.push(a);
        let name = m.value(a).spelling();
        let shape = m.ty(a).shape.clone();
        if m.inputs.contains(&a) {
            rep.skipped
                .push((name, "the model's input keeps its range".into()));
            continue;
        }
        let Some(st) = stats.get(m, a) else {
            rep.skipped.push((name, "no statistics".into()));
            continue;
        };
        let c = shape.get(1).copied().unwrap_or(0);
        if shape.len() < 2 || st.ch_max.len() != c || c < 2 {
            rep.skipped.push((name, "no per-channel statistics".into()));
            continue;
        }
        let users = m.users();
        let plan = producer(m, &users, a).and_then(|p| {
            let pc = m.ty(m.nodes[p].result).shape.get(1).copied();
            if pc != Some(c) {
                return Err("its producer's channels differ".into());
            }
            Ok((p, readers(m, &users, a)?))
        });
        let (p, rs) = match plan {
            Ok(x) => x,
            Err(e) => {
                rep.skipped.push((name, e));
                continue;
            }
        };
        let r: Vec<f32> = st
            .ch_min
            .iter()
            .zip(&st.ch_max)
            .map(|(&lo, &hi)| lo.abs().max(hi.abs()))
            .collect();
        let widest = r.iter().copied().fold(0.0f32, f32::max);
        if widest <= 0.0 || !widest.is_finite() {
            rep.skipped.push((name, "all channels are zero".into()));
            continue;
        }
        let k: Vec<f32> = r
            .iter()
            .map(|&x| {
                if x > widest / MAX_FACTOR {
                    widest / x
                } else if x > 0.0 {
                    MAX_FACTOR
                } else {
                    1.0
                }
            })
            .collect();
        let narrowest = r
            .iter()
            .copied()
            .filter(|&x| x > 0.0)
            .fold(f32::INFINITY, f32::min);
        scale_producer(m, p, &k);
        for reader in &rs {
            scale_reader(m, reader, &k);
        }
        rep.equalized.push((name, c, widest / narrowest));
    }
    rep
}
