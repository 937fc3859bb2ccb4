//! `--act-method dqa`, second part: the important channels of an activation get `N + m`
//! bits (issue 13; the compile-time counterpart of DQA's important-channel
//! quantization; `docs/methods.md`).
//!
//! DQA ranks the channels of each activation and gives the important fraction `r`
//! (`--dqa-ratio`, default 0.4) `m` more bits (`--dqa-extra-bits`, default 3) than the
//! others' `N`. It stores such a channel's `(N + m)`-bit code `c` as the `N`-bit code
//! `q = c >> m` plus the `m` shifted-out bits `e = c & (2^m - 1)`, and computes the
//! reader as `y = s_N (W q) + (s_N / 2^m) (W_imp e)`. Two realisations:
//!
//! - DQA's own form (`--dqa-form fused`, the default): this pass only ranks; the
//!   quantize pass (`insert.rs`, `QuantOptions::dqa_fine`) quantizes the important
//!   channels at step `s_N / 2^m` and the others at `s_N`, and shifts the others' codes
//!   onto the one `N + m`-bit grid (a left shift by `m`), so each reader is one
//!   kernel whose sum is DQA's two terms on one scale. An activation whose important
//!   channels span much more than the others (`one_grid`) is split instead.
//! - `--dqa-form split`: the reader is split along its input channels,
//!   `y = W_rest x_rest + W_imp x_imp` with `x_rest` quantized to `N` bits and `x_imp` to
//!   `N + m` bits, each slice with its own calibrated range; each part runs on an
//!   existing integer kernel (each dequantizes its sum, and the two are added in f32).
//!
//! Its shift-only requantization is the default of `--act-method dqa` (power-of-two
//! scales, as `--pow2`; `--dqa-requant multiply` keeps free scales).
//!
//! - Ranking (`--dqa-rank`): `greedy` (default) takes, one channel at a time, the
//!   channel whose move to `N + m` bits lowers the readers' summed output error
//!   `sum_{c,d not important} M_cd G_cd` the most, with `G` the Gram matrix of the
//!   `N`-bit quantization noise of the channels on the calibration samples and `M_cd`
//!   the readers' weights of channel `c` dotted with those of channel `d` (the noise
//!   taken as spatially white); `energy` ranks by the mean square of the channel.
//! - Realisation: the producer's output channels are reordered so that the important
//!   ones come first (its weights and bias; every reader's input channels follow), and
//!   each reader between the edge layers becomes two layers of the same op reading the
//!   two slices (`<layer>.dqa_imp` at `N + m` bits, `<layer>.dqa_rest` at `N` with the
//!   bias), whose results are added. An activation qualifies when every op between
//!   the conv/gemm layers that write it and those that read it treats all channels
//!   alike (elementwise ops with scalar constants, sums and products of such values,
//!   pooling, flatten before a gemm): then all of those layers take one permutation
//!   of its channels (`closure`; a residual stream is one such set). Activations in
//!   one such set (a stream read at several points) share the permutation, so they
//!   share one choice of important channels, ranked on the sum of their readers' noise
//!   (or of their mean squares).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use qcc_ir::{ConstData, Module, Node, NodeId, Op, TensorType, ValueDef, ValueId};

use super::calibrate::{CalibStats, as_input, check_single_input, stream_samples};
use super::equalize::{Reader, bool_attr, can_permute, f32_const, int_attr, permute_reader};
use super::insert::{QuantLayer, source};
use super::sq::{LayerBits, slice_channels};
use super::tap::{RunOptions, Tapped};

/// Suffixes of the two parts' layer names.
pub const IMP: &str = ".dqa_imp";
pub const REST: &str = ".dqa_rest";

/// Calibration samples the ranking runs on (at most).
pub const RANK_SAMPLES: usize = 256;

/// Positions per sample the ranking looks at (at most, evenly spaced).
const RANK_POSITIONS: usize = 256;

/// How the important channels are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rank {
    /// Greedy on the readers' output error from the channels' quantization noise.
    Greedy,
    /// The channels' mean square.
    Energy,
}

/// The options of the important-channel split.
#[derive(Clone, Copy, Debug)]
pub struct ImportantOptions {
    /// Fraction of each activation's channels that is important (0 < r < 1).
    pub ratio: f64,
    /// Extra bits `m` of the important channels.
    pub extra: u8,
    pub rank: Rank,
    /// The activations' bits `N` (the flags').
    pub abits: u8,
    /// The layers' weight bits (the flags').
    pub wbits: u8,
    /// Whether the first and last layers stay at 8 bits (they are not split).
    pub keep_edges: bool,
    /// DQA's own form (`--dqa-form fused`, the default): every channel of the activation
    /// on the `N + m`-bit grid, the others' `N`-bit codes shifted onto it, one
    /// reader kernel. Otherwise (`split`) each reader is split along its input channels.
    pub fused: bool,
    /// Power-of-two scales (`--dqa-requant shift`, `--pow2`).
    pub pow2: bool,
}

/// One activation whose important channels were split off.
#[derive(Clone, Debug)]
pub struct ImportantAct {
    /// The activation.
    pub name: String,
    pub channels: usize,
    /// The important channels (original indices, in the order ranked).
    pub important: Vec<usize>,
    /// The readers split (or, in DQA's own form, reading the one grid).
    pub readers: Vec<String>,
    /// In DQA's own form (one grid), not split.
    pub fused: bool,
}

/// What [`split_important`] did.
#[derive(Clone, Debug, Default)]
pub struct ImportantReport {
    pub split: Vec<ImportantAct>,
    /// Activations left whole, and why.
    pub skipped: Vec<(String, String)>,
    /// The parts' bits.
    pub bits: LayerBits,
    /// DQA's own form: activation (where it is quantized, `insert::source`) -> its
    /// important channels, for `QuantOptions::dqa_fine`.
    pub fine: BTreeMap<String, Vec<usize>>,
    /// Activations whose readers were split although DQA's own form was asked, and why.
    pub split_why: Vec<(String, String)>,
}

impl ImportantReport {
    /// One line per activation for the report's notes.
    pub fn describe(&self, opts: &ImportantOptions) -> Vec<String> {
        let hi = (opts.abits + opts.extra).min(8);
        let mut out: Vec<String> = self
            .split
            .iter()
            .map(|a| {
                let mut imp = a.important.clone();
                imp.sort_unstable();
                format!(
                    "--act-method dqa: {}: {} of {} channels at {hi} bits, the others at {} ({}: {}); important channels {}",
                    a.name,
                    a.important.len(),
                    a.channels,
                    opts.abits,
                    if a.fused {
                        "one grid of the finer step, the others' codes multiples of 2^m; read by"
                    } else {
                        "readers split"
                    },
                    a.readers.join(", "),
                    imp.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" ")
                )
            })
            .collect();
        if !self.split_why.is_empty() {
            out.push(format!(
                "--act-method dqa: readers split, not one grid (--dqa-form fused): {}",
                self.split_why
                    .iter()
                    .map(|(n, why)| format!("{n} ({why})"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        if !self.skipped.is_empty() {
            out.push(format!(
                "--act-method dqa: no important channels for {}",
                self.skipped
                    .iter()
                    .map(|(n, why)| format!("{n} ({why})"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        out
    }
}

/// The index of a reader's weight of (output, input channel, inner position).
type WeightAt = Box<dyn Fn(usize, usize, usize) -> usize>;

/// `M_cd` of reader `r`: its weights of input channel `c` dotted with those of `d`, over
/// outputs and inner positions (conv `[M, C, kh, kw]`; dense with `per` features per
/// channel, `[K, N]`, or `[N, K]` with `trans_b`).
fn reader_gram(m: &Module, r: &Reader, c: usize) -> Vec<f64> {
    let mut g = vec![0f64; c * c];
    let (n, per) = match *r {
        Reader::Conv(n) => (n, None),
        Reader::Dense(n, per) => (n, Some(per)),
    };
    let w = m.nodes[n].operands[1];
    let shape = m.ty(w).shape.clone();
    let wd = f32_const(m, w).expect("readers have constant weights");
    // rows[o][ch] = the weights of output o on channel ch (inner positions in order).
    let (outs, inner, at): (usize, usize, WeightAt) = match per {
        None => {
            let inner: usize = shape[2..].iter().product();
            let cs = shape[1];
            (
                shape[0],
                inner,
                Box::new(move |o, ch, s| (o * cs + ch) * inner + s),
            )
        }
        Some(per) => {
            let trans_b = m.nodes[n].op == Op::Gemm && bool_attr(m, n, "trans_b");
            let cols = shape[shape.len() - 1];
            let rows = shape[shape.len() - 2];
            if trans_b {
                (rows, per, Box::new(move |o, ch, s| o * cols + ch * per + s))
            } else {
                (
                    cols,
                    per,
                    Box::new(move |o, ch, s| (ch * per + s) * cols + o),
                )
            }
        }
    };
    for o in 0..outs {
        for s in 0..inner {
            for a in 0..c {
                let wa = wd[at(o, a, s)] as f64;
                if wa == 0.0 {
                    continue;
                }
                for b in a..c {
                    g[a * c + b] += wa * wd[at(o, b, s)] as f64;
                }
            }
        }
    }
    for a in 0..c {
        for b in 0..a {
            g[a * c + b] = g[b * c + a];
        }
    }
    g
}

/// The layers around an activation whose channel order can change together: the
/// conv/gemm layers whose output channels make it (`producers`) and those that read
/// it (`readers`), where every op in between works channel by channel and in the same
/// way on every channel (elementwise ops with scalar constants, adds and products of
/// such values, pooling, flatten before a gemm). Reordering the producers' output
/// channels and the readers' input channels by one permutation leaves the function
/// unchanged. A residual stream is one such closure.
pub(super) struct Closure {
    pub producers: Vec<usize>,
    pub readers: Vec<Reader>,
}

fn node_of(m: &Module, v: ValueId) -> Option<usize> {
    match m.value(v).def {
        ValueDef::Node(n) => Some(n.index()),
        _ => None,
    }
}

/// Whether node `n` maps each channel by itself, the same way for all.
fn channelwise(m: &Module, n: usize) -> bool {
    let node = &m.nodes[n];
    let ok_op = match node.op {
        Op::MaxPool | Op::AvgPool | Op::GlobalAvgPool => true,
        Op::Quantize | Op::Dequantize | Op::Lookup | Op::Binarize | Op::Cast => false,
        op => op.info().has_trait(qcc_ir::ops::Trait::Elementwise),
    };
    // Constant operands must be scalars (a per-channel constant would need the
    // permutation too).
    ok_op
        && node
            .operands
            .iter()
            .all(|&o| m.const_data(o).is_none() || m.ty(o).numel() <= 1)
}

pub(super) fn closure(m: &Module, users: &[Vec<NodeId>], a: ValueId) -> Result<Closure, String> {
    let c = m.ty(a).shape.get(1).copied().unwrap_or(0);
    let mut out = Closure {
        producers: Vec::new(),
        readers: Vec::new(),
    };
    let mut seen: Vec<ValueId> = vec![a];
    let mut stack = vec![a];
    let name = |n: usize| m.value(m.nodes[n].result).spelling();
    let visit = |v: ValueId, seen: &mut Vec<ValueId>, stack: &mut Vec<ValueId>| {
        if !seen.contains(&v) {
            seen.push(v);
            stack.push(v);
        }
    };
    while let Some(v) = stack.pop() {
        let shape = m.ty(v).shape.clone();
        if shape.len() < 2 || shape[1] != c {
            return Err(format!("{} has other channels", m.value(v).spelling()));
        }
        if m.outputs.contains(&v) {
            return Err(format!("{} is a graph output", m.value(v).spelling()));
        }
        // Where it comes from.
        let Some(n) = node_of(m, v) else {
            return Err(format!("{} is a graph input", m.value(v).spelling()));
        };
        let node = &m.nodes[n];
        let layer_ok = |n: usize| {
            let node = &m.nodes[n];
            f32_const(m, node.operands[1]).is_some()
                && node
                    .operands
                    .get(2)
                    .is_none_or(|&b| f32_const(m, b).is_some())
        };
        match node.op {
            Op::Conv2d if layer_ok(n) && int_attr(m, n, "group", 1) == 1 => {
                if !out.producers.contains(&n) {
                    out.producers.push(n);
                }
            }
            Op::Gemm if layer_ok(n) && !bool_attr(m, n, "trans_a") => {
                if !out.producers.contains(&n) {
                    out.producers.push(n);
                }
            }
            _ if channelwise(m, n) => {
                for &o in &node.operands {
                    if m.const_data(o).is_none() {
                        visit(o, &mut seen, &mut stack);
                    }
                }
            }
            op => return Err(format!("it meets {} ({})", op.name(), name(n))),
        }
        // Where it goes.
        for &u in &users[v.index()] {
            let n = u.index();
            let node = &m.nodes[n];
            let dense = |n: usize, x: ValueId| {
                let g = &m.nodes[n];
                matches!(g.op, Op::Gemm | Op::MatMul)
                    && g.operands[0] == x
                    && !bool_attr(m, n, "trans_a")
                    && f32_const(m, g.operands[1]).is_some()
            };
            match node.op {
                Op::Conv2d if node.operands[0] == v && f32_const(m, node.operands[1]).is_some() => {
                    out.readers.push(Reader::Conv(n));
                }
                Op::Gemm | Op::MatMul if shape.len() == 2 && dense(n, v) => {
                    out.readers.push(Reader::Dense(n, 1));
                }
                Op::Flatten | Op::Reshape => {
                    let to = &m.ty(node.result).shape;
                    let flat = to.len() == 2
                        && to[0] == shape[0]
                        && to[1] == shape[1..].iter().product::<usize>()
                        && (node.op == Op::Reshape || int_attr(m, n, "axis", 1) == 1);
                    if !flat || m.outputs.contains(&node.result) {
                        return Err(format!("{} ({}) reads it", node.op.name(), name(n)));
                    }
                    let per: usize = shape[2..].iter().product::<usize>().max(1);
                    for &g in &users[node.result.index()] {
                        if !dense(g.index(), node.result) {
                            return Err(format!(
                                "{} reads {}",
                                m.nodes[g.index()].op.name(),
                                name(n)
                            ));
                        }
                        out.readers.push(Reader::Dense(g.index(), per));
                    }
                }
                _ if channelwise(m, n) => {
                    visit(node.result, &mut seen, &mut stack);
                    for &o in &node.operands {
                        if m.const_data(o).is_none() {
                            visit(o, &mut seen, &mut stack);
                        }
                    }
                }
                op => return Err(format!("{} reads it ({})", op.name(), name(n))),
            }
        }
    }
    if out.producers.is_empty() {
        return Err("no conv/gemm makes it".into());
    }
    Ok(out)
}

/// The `k` channels moved to `N + m` bits first by the greedy search on
/// `sum_{c,d rest} p_cd`, `p_cd = M_cd G_cd` (`c x c`, row-major).
fn greedy(p: &[f64], c: usize, k: usize) -> Vec<usize> {
    // row[c] = sum over the channels still at N bits of p[c][d].
    let mut row: Vec<f64> = (0..c).map(|a| p[a * c..(a + 1) * c].iter().sum()).collect();
    let mut rest = vec![true; c];
    let mut out = Vec::with_capacity(k);
    for _ in 0..k {
        let mut best: Option<(usize, f64)> = None;
        for a in (0..c).filter(|&a| rest[a]) {
            let gain = 2.0 * row[a] - p[a * c + a];
            if best.is_none_or(|(_, g)| gain > g) {
                best = Some((a, gain));
            }
        }
        let Some((a, _)) = best else { break };
        rest[a] = false;
        out.push(a);
        for (d, r) in row.iter_mut().enumerate() {
            *r -= p[d * c + a];
        }
    }
    out
}

/// The per-tensor `bits`-bit quantizer of values in `[lo, hi]` (min-max, zero exact):
/// the quantization noise `deq(q(x)) - x`.
fn noise_fn(lo: f32, hi: f32, bits: u8) -> impl Fn(f32) -> f32 {
    let lo = lo.min(0.0);
    let hi = hi.max(0.0);
    let levels = ((1u32 << bits) - 1) as f32;
    let s = ((hi - lo) / levels).max(f32::MIN_POSITIVE);
    let zp = (-lo / s).round();
    move |x: f32| {
        let q = ((x / s).round() + zp).clamp(0.0, levels);
        (q - zp) * s - x
    }
}

/// The activations of `m` that `layers` read (the per-channel-scaled model of
/// `--act-method dqa`, with statistics `stats`): the eligible ones get their important
/// channels ranked on the calibration samples in `npz` and their readers split. Returns
/// the split module (same function) and what was done.
pub fn split_important(
    m: &Module,
    stats: &CalibStats,
    layers: &[QuantLayer],
    npz: &Path,
    limit: Option<usize>,
    run: &RunOptions,
    opts: &ImportantOptions,
) -> Result<(Module, ImportantReport), String> {
    let mut rep = ImportantReport::default();
    let users = m.users();
    let n_layers = layers.len();
    let is_edge = |node: usize| {
        opts.keep_edges
            && (layers.first().is_some_and(|l| l.node == node)
                || (n_layers > 0 && layers[n_layers - 1].node == node))
    };
    // Eligible activations: value, producer, readers (all), readers to split.
    struct Cand {
        a: ValueId,
        producers: Vec<usize>,
        readers: Vec<Reader>,
        split: Vec<usize>,
    }
    let mut cands: Vec<Cand> = Vec::new();
    let mut seen: Vec<ValueId> = Vec::new();
    for l in layers {
        let a = l.input;
        if seen.contains(&a) {
            continue;
        }
        seen.push(a);
        let name = m.value(a).spelling();
        if m.inputs.contains(&a) {
            continue;
        }
        let shape = m.ty(a).shape.clone();
        let c = shape.get(1).copied().unwrap_or(0);
        let plan = closure(m, &users, a).and_then(|cl| {
            for r in &cl.readers {
                can_permute(m, &users, r)?;
            }
            for &p in &cl.producers {
                if users[m.nodes[p].operands[1].index()].len() != 1 {
                    return Err(format!("the weights of {} are shared", layer_name(m, p)));
                }
            }
            Ok(cl)
        });
        let cl = match plan {
            Ok(x) => x,
            Err(e) => {
                rep.skipped.push((name, e));
                continue;
            }
        };
        let k = (opts.ratio * c as f64).round() as usize;
        if c < 2 || k == 0 || k >= c {
            rep.skipped
                .push((name, format!("{c} channel(s) leave no important fraction")));
            continue;
        }
        // The readers of this activation itself (through pooling and flatten) are split;
        // the other readers of the closure only follow the new channel order.
        let split: Vec<usize> = cl
            .readers
            .iter()
            .map(|r| match *r {
                Reader::Conv(n) | Reader::Dense(n, _) => n,
            })
            .filter(|&n| !is_edge(n) && source(m, m.nodes[n].operands[0]) == a)
            .collect();
        if split.is_empty() {
            rep.skipped.push((
                name,
                "only the first or last layer reads it (kept at 8 bits)".into(),
            ));
            continue;
        }
        cands.push(Cand {
            a,
            producers: cl.producers,
            readers: cl.readers,
            split,
        });
    }
    if cands.is_empty() {
        return Ok((m.clone(), rep));
    }
    // Statistics on the calibration samples: per activation, the channels' mean
    // squares and the Gram matrix of their N-bit quantization noise.
    let taps: Vec<ValueId> = cands.iter().map(|c| c.a).collect();
    let chans: Vec<usize> = cands.iter().map(|c| m.ty(c.a).shape[1]).collect();
    let noise: Vec<Box<dyn Fn(f32) -> f32>> = cands
        .iter()
        .map(|c| {
            let (lo, hi) = stats.get(m, c.a).map_or((0.0, 0.0), |s| (s.min, s.max));
            Box::new(noise_fn(lo, hi, opts.abits)) as Box<dyn Fn(f32) -> f32>
        })
        .collect();
    let mut energy: Vec<Vec<f64>> = chans.iter().map(|&c| vec![0.0; c]).collect();
    let mut gram: Vec<Vec<f64>> = chans.iter().map(|&c| vec![0.0; c * c]).collect();
    let input = check_single_input(m)?;
    let tapped = Tapped::new(m, &taps, run.engine, "the --act-method dqa ranking");
    let limit = Some(limit.unwrap_or(RANK_SAMPLES).min(RANK_SAMPLES));
    let mut nv = Vec::new();
    stream_samples(npz, limit, 64, &mut |i, s| {
        let s = as_input(m, input, i, s)?;
        tapped.run(std::slice::from_ref(&s), &mut |k, shape, v| {
            let c = chans[k];
            let pos: usize = shape.iter().skip(2).product::<usize>().max(1);
            let batch = shape.first().copied().unwrap_or(1).max(1);
            let step = pos.div_ceil(RANK_POSITIONS).max(1);
            for b in 0..batch {
                let base = b * c * pos;
                for p in (0..pos).step_by(step) {
                    nv.clear();
                    for ch in 0..c {
                        let x = v[base + ch * pos + p];
                        energy[k][ch] += (x as f64) * (x as f64);
                        nv.push(noise[k](x) as f64);
                    }
                    let g = &mut gram[k];
                    for a in 0..c {
                        if nv[a] == 0.0 {
                            continue;
                        }
                        for d in 0..c {
                            g[a * c + d] += nv[a] * nv[d];
                        }
                    }
                }
            }
        })?;
        Ok(())
    })?;
    // Activations in one closure (a residual stream read at several points) share the
    // producers, so they take one permutation: one choice of important channels for
    // all of them, on the sum of their readers' noise (or of their mean squares).
    let mut groups: Vec<(Vec<usize>, Vec<usize>)> = Vec::new(); // (producers, cands)
    for (ci, cand) in cands.iter().enumerate() {
        let mut key = cand.producers.clone();
        key.sort_unstable();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(ci),
            None => groups.push((key, vec![ci])),
        }
    }
    // Rank, then reorder the producers' and readers' channels.
    let mut out = m.clone();
    let mut splits: HashMap<usize, (usize, usize)> = HashMap::new(); // reader node -> (k, per)
    for (_, members) in &groups {
        let first = &cands[members[0]];
        let c = chans[members[0]];
        let k = (opts.ratio * c as f64).round() as usize;
        let important = match opts.rank {
            Rank::Energy => {
                let mut e = vec![0f64; c];
                for &ci in members {
                    for (x, y) in e.iter_mut().zip(&energy[ci]) {
                        *x += y;
                    }
                }
                let mut idx: Vec<usize> = (0..c).collect();
                idx.sort_by(|&a, &b| e[b].total_cmp(&e[a]).then(a.cmp(&b)));
                idx.truncate(k);
                idx
            }
            Rank::Greedy => {
                let mut p = vec![0f64; c * c];
                for &ci in members {
                    let cand = &cands[ci];
                    let mut mm = vec![0f64; c * c];
                    for r in &cand.readers {
                        let n = match *r {
                            Reader::Conv(n) | Reader::Dense(n, _) => n,
                        };
                        if cand.split.contains(&n) {
                            for (x, y) in mm.iter_mut().zip(reader_gram(m, r, c)) {
                                *x += y;
                            }
                        }
                    }
                    for ((x, a), g) in p.iter_mut().zip(&mm).zip(&gram[ci]) {
                        *x += a * g;
                    }
                }
                greedy(&p, c, k)
            }
        };
        let one_grid = if opts.fused {
            members
                .iter()
                .map(|&ci| one_grid(m, stats, cands[ci].a, &important, opts))
                .collect::<Result<Vec<()>, String>>()
                .map(|_| ())
        } else {
            Err(String::new())
        };
        if let Err(why) = &one_grid
            && !why.is_empty()
        {
            for &ci in members {
                rep.split_why
                    .push((m.value(cands[ci].a).spelling(), why.clone()));
            }
        }
        if one_grid.is_ok() {
            for &ci in members {
                let cand = &cands[ci];
                let src = source(m, cand.a);
                rep.fine.insert(m.value(src).spelling(), important.clone());
                rep.split.push(ImportantAct {
                    name: m.value(cand.a).spelling(),
                    channels: c,
                    important: important.clone(),
                    readers: cand.split.iter().map(|&n| layer_name(m, n)).collect(),
                    fused: true,
                });
            }
            continue;
        }
        let mut sorted = important.clone();
        sorted.sort_unstable();
        let perm: Vec<usize> = sorted
            .iter()
            .copied()
            .chain((0..c).filter(|ch| !sorted.contains(ch)))
            .collect();
        for &p in &first.producers {
            permute_producer(&mut out, p, &perm);
        }
        for r in &first.readers {
            permute_reader(&mut out, r, &perm);
        }
        for &ci in members {
            let cand = &cands[ci];
            for r in &cand.readers {
                if let Reader::Conv(n) | Reader::Dense(n, _) = *r
                    && cand.split.contains(&n)
                {
                    let per = match *r {
                        Reader::Conv(_) => 1,
                        Reader::Dense(_, per) => per,
                    };
                    splits.insert(n, (k, per));
                }
            }
            rep.split.push(ImportantAct {
                name: m.value(cand.a).spelling(),
                channels: c,
                important: important.clone(),
                readers: cand.split.iter().map(|&n| layer_name(m, n)).collect(),
                fused: false,
            });
        }
    }
    let hi = (opts.abits + opts.extra).min(8);
    let old = std::mem::take(&mut out.nodes);
    for (ni, node) in old.into_iter().enumerate() {
        let Some(&(k, per)) = splits.get(&ni) else {
            out.value_mut(node.result).def = ValueDef::Node(NodeId(out.nodes.len() as u32));
            out.nodes.push(node);
            continue;
        };
        let name = layer_name(m, ni);
        rep.bits.insert(format!("{name}{IMP}"), (opts.wbits, hi));
        rep.bits
            .insert(format!("{name}{REST}"), (opts.wbits, opts.abits));
        let x = node.operands[0];
        let xshape = out.ty(x).shape.clone();
        let cut = k * per;
        let mut parts = Vec::new();
        for (lo, hi_, suffix) in [(0, cut, IMP), (cut, xshape[1], REST)] {
            let sn = out.fresh_name(&format!("{}{suffix}", out.value(x).name));
            let xs = slice_channels(&mut out, x, lo, hi_, sn);
            let mut operands = node.operands.clone();
            operands[0] = xs;
            let w = node.operands[1];
            let (pw, pshape) = take_inputs(&out, ni, &node, w, lo, hi_);
            let wn = out.fresh_name(&format!("{}{suffix}", out.value(w).name));
            operands[1] = out.add_const(wn, TensorType::f32(pshape), ConstData::F32(pw));
            if suffix == IMP {
                // The bias goes with the other part.
                operands.truncate(2);
            }
            let rn = out.fresh_name(&format!("{}{suffix}", out.value(node.result).name));
            let ty = out.ty(node.result).clone();
            let y = out.add_node(node.op, operands, node.attrs.clone(), rn, ty);
            out.nodes.last_mut().expect("added").loc = Some(format!("{name}{suffix}"));
            parts.push(y);
        }
        out.value_mut(node.result).def = ValueDef::Node(NodeId(out.nodes.len() as u32));
        out.nodes.push(Node {
            op: Op::Add,
            operands: parts,
            attrs: BTreeMap::new(),
            result: node.result,
            loc: None,
            meta: BTreeMap::new(),
        });
    }
    out.compact();
    Ok((out, rep))
}

/// Whether activation `a` can take DQA's own form with these important channels: one
/// grid, whose step `s` the `N`-bit codes of the other channels use and whose `N + m`-bit
/// codes of step `s / 2^m` the important ones use, must cover both; the form is kept when
/// that step is no coarser than the other channels' own (after rounding to a power of
/// two, or within 1/4 with free scales). Activations whose important channels span much
/// more than the others (no per-channel scales folded in, e.g. a hard-swish output) are
/// split instead, each part with its own range.
fn one_grid(
    m: &Module,
    stats: &CalibStats,
    a: ValueId,
    important: &[usize],
    opts: &ImportantOptions,
) -> Result<(), String> {
    let Some(st) = stats.get(m, source(m, a)) else {
        return Err("no per-channel ranges".into());
    };
    let c = st.ch_max.len();
    if c == 0 || st.ch_min.len() != c {
        return Err("no per-channel ranges".into());
    }
    let span = |imp: bool| {
        let (mut lo, mut hi) = (0f64, 0f64);
        for ch in (0..c).filter(|ch| important.contains(ch) == imp) {
            lo = lo.min(st.ch_min[ch] as f64);
            hi = hi.max(st.ch_max[ch] as f64);
        }
        hi - lo
    };
    let (wi, wr) = (span(true), span(false));
    let n = (1u64 << opts.abits) as f64;
    let rest = wr / (n - 1.0);
    let shared = rest.max(wi / (n - 1.0 / (1u64 << opts.extra) as f64));
    let up = |s: f64| 2f64.powi(s.log2().ceil() as i32);
    let same = if opts.pow2 {
        up(shared) <= up(rest)
    } else {
        shared <= 1.25 * rest
    };
    if same {
        Ok(())
    } else {
        Err(format!(
            "its important channels span {wi:.3}, the others {wr:.3}: one grid would coarsen the others' step"
        ))
    }
}

fn layer_name(m: &Module, n: usize) -> String {
    m.nodes[n]
        .loc
        .clone()
        .unwrap_or_else(|| m.value(m.nodes[n].result).spelling())
}

/// The weights of reader `node` (index `n` in `m`) on input features `[lo, hi)` (conv:
/// input channels; dense: rows of `[K, N]`, columns of `[N, K]` with `trans_b`).
fn take_inputs(
    m: &Module,
    n: usize,
    node: &Node,
    w: ValueId,
    lo: usize,
    hi: usize,
) -> (Vec<f32>, Vec<usize>) {
    let shape = m.ty(w).shape.clone();
    let wd = f32_const(m, w).expect("readers have constant weights");
    let mut out = Vec::new();
    let mut pshape = shape.clone();
    match node.op {
        Op::Conv2d => {
            let (mo, c) = (shape[0], shape[1]);
            let inner: usize = shape[2..].iter().product();
            for o in 0..mo {
                out.extend_from_slice(&wd[(o * c + lo) * inner..(o * c + hi) * inner]);
            }
            pshape[1] = hi - lo;
        }
        Op::Gemm if bool_attr(m, n, "trans_b") => {
            let (rows, cols) = (shape[0], shape[1]);
            for r in 0..rows {
                out.extend_from_slice(&wd[r * cols + lo..r * cols + hi]);
            }
            pshape[1] = hi - lo;
        }
        _ => {
            let cols = shape[1];
            out.extend_from_slice(&wd[lo * cols..hi * cols]);
            pshape[0] = hi - lo;
        }
    }
    (out, pshape)
}

/// Reorders the output channels of producer `p`: its new channel `j` is old `perm[j]`
/// (weights and a per-channel bias).
pub(super) fn permute_producer(m: &mut Module, p: usize, perm: &[usize]) {
    let node = m.nodes[p].clone();
    let w = node.operands[1];
    let shape = m.ty(w).shape.clone();
    let old = f32_const(m, w).expect("producers have constant weights");
    let mut new = old.clone();
    let trans_b = node.op == Op::Gemm && bool_attr(m, p, "trans_b");
    if node.op == Op::Conv2d || trans_b {
        let inner: usize = shape[1..].iter().product();
        for (j, &o) in perm.iter().enumerate() {
            new[j * inner..(j + 1) * inner].copy_from_slice(&old[o * inner..(o + 1) * inner]);
        }
    } else {
        let cols = shape[1];
        for (i, x) in new.iter_mut().enumerate() {
            *x = old[i - i % cols + perm[i % cols]];
        }
    }
    m.value_mut(w).def = ValueDef::Const(ConstData::F32(new));
    if let Some(&b) = node.operands.get(2)
        && let Some(bd) = f32_const(m, b)
        && bd.len() == perm.len()
    {
        let nb: Vec<f32> = perm.iter().map(|&o| bd[o]).collect();
        m.value_mut(b).def = ValueDef::Const(ConstData::F32(nb));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x[1, 4] -> g1 -> relu -> r`; `g2(r)`; `t = add(r, g2(r)) * k -> g3 -> relu ->
    /// g4`, with `k` a scalar or a per-channel constant.
    fn residual(k_shape: Vec<usize>) -> (Module, ValueId) {
        let mut m = Module::new("res");
        let x = m.add_input("x", TensorType::f32(vec![1, 4]));
        let gemm = |m: &mut Module, a: ValueId, k: usize, n: &str| {
            let w = m.add_const(
                format!("{n}.w"),
                TensorType::f32(vec![k, 6]),
                ConstData::F32(
                    (0..k * 6)
                        .map(|i| ((i * 7 + n.len() * 3) % 11) as f32 * 0.2 - 1.0)
                        .collect(),
                ),
            );
            let y = m.add_node(
                Op::Gemm,
                vec![a, w],
                BTreeMap::new(),
                n,
                TensorType::f32(vec![1, 6]),
            );
            m.nodes.last_mut().unwrap().loc = Some(n.to_string());
            y
        };
        let h = gemm(&mut m, x, 4, "g1");
        let r = m.add_node(
            Op::Relu,
            vec![h],
            BTreeMap::new(),
            "r",
            TensorType::f32(vec![1, 6]),
        );
        let g2 = gemm(&mut m, r, 6, "g2");
        let s = m.add_node(
            Op::Add,
            vec![r, g2],
            BTreeMap::new(),
            "s",
            TensorType::f32(vec![1, 6]),
        );
        let n: usize = k_shape.iter().product();
        let k = m.add_const("k", TensorType::f32(k_shape), ConstData::F32(vec![0.5; n]));
        let t = m.add_node(
            Op::Mul,
            vec![s, k],
            BTreeMap::new(),
            "t",
            TensorType::f32(vec![1, 6]),
        );
        let g3 = gemm(&mut m, t, 6, "g3");
        let h3 = m.add_node(
            Op::Relu,
            vec![g3],
            BTreeMap::new(),
            "h3",
            TensorType::f32(vec![1, 6]),
        );
        let y = gemm(&mut m, h3, 6, "g4");
        m.outputs = vec![y];
        (m, r)
    }

    #[test]
    fn one_closure_takes_one_choice() {
        // r and t are both read by a layer between the edges (g2, g3) and lie in one
        // closure (the stream g1 and g2 write): one permutation, one set of channels.
        let (m, _) = residual(vec![1]);
        let dir = std::env::temp_dir().join(format!("qcc_important_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let npz = dir.join("calib.npz");
        use npyz::WriterBuilder;
        {
            let mut w = npyz::npz::NpzWriter::create(&npz).unwrap();
            let mut a = w
                .array::<f32>("x", Default::default())
                .unwrap()
                .default_dtype()
                .shape(&[32, 4])
                .begin_nd()
                .unwrap();
            a.extend((0..128).map(|i| ((i * 37 % 29) as f32) / 7.0 - 2.0))
                .unwrap();
            a.finish().unwrap();
        }
        let layers = super::super::insert::quant_layers(&m).unwrap();
        let stats = super::super::calibrate::calibrate(&m, &npz, &Default::default()).unwrap();
        for rank in [Rank::Greedy, Rank::Energy] {
            let opts = ImportantOptions {
                ratio: 0.5,
                extra: 3,
                rank,
                abits: 3,
                wbits: 8,
                keep_edges: true,
                fused: false,
                pow2: false,
            };
            let run_opts = RunOptions {
                progress: false,
                ..Default::default()
            };
            let (split, rep) =
                split_important(&m, &stats, &layers, &npz, None, &run_opts, &opts).unwrap();
            assert_eq!(rep.split.len(), 2, "{rep:?}");
            assert_eq!(rep.split[0].important, rep.split[1].important, "{rep:?}");
            assert_eq!(rep.bits.len(), 4, "{rep:?}");
            for i in 0..8 {
                let x = qcc_ir::interp::Tensor::f32(
                    vec![1, 4],
                    (0..4).map(|j| ((i * 5 + j * 3) % 7) as f32 - 3.0).collect(),
                );
                let a = qcc_ir::interp::run(&m, std::slice::from_ref(&x)).unwrap();
                let b = qcc_ir::interp::run(&split, std::slice::from_ref(&x)).unwrap();
                for (p, q) in a[0].as_f32().unwrap().iter().zip(b[0].as_f32().unwrap()) {
                    assert!((p - q).abs() <= 1e-4 * (1.0 + p.abs()), "{p} vs {q}");
                }
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn residual_streams_take_one_permutation() {
        let (m, r) = residual(vec![1]);
        let cl = closure(&m, &m.users(), r).unwrap();
        let mut producers = cl.producers.clone();
        producers.sort_unstable();
        assert_eq!(producers, vec![0, 2], "g1 and g2 write the stream");
        let mut readers: Vec<usize> = cl
            .readers
            .iter()
            .map(|r| match *r {
                Reader::Conv(n) | Reader::Dense(n, _) => n,
            })
            .collect();
        readers.sort_unstable();
        assert_eq!(readers, vec![2, 5], "g2 and g3 read it");
        assert_eq!(cl.producers.len(), 2);
        // A per-channel constant on the way would need the permutation too.
        let (m, r) = residual(vec![1, 6]);
        let err = closure(&m, &m.users(), r).err().unwrap();
        assert!(err.contains("mul"), "{err}");
    }

    #[test]
    fn greedy_takes_the_noisiest_weighted_channel_first() {
        // Three channels, independent noise; channel 1 has the most noise times weight.
        let c = 3;
        let mm = [1.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 1.0];
        let gg = [2.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0];
        let p: Vec<f64> = mm.iter().zip(&gg).map(|(a, b)| a * b).collect();
        assert_eq!(greedy(&p, c, 2), vec![1, 2]);
    }

    #[test]
    fn greedy_counts_correlated_noise() {
        // Channels 0 and 1 carry the same noise through weights that add up; channel 2
        // alone is a little larger than either, but moving 0 removes its cross term too.
        let c = 3;
        let mm = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.5];
        let gg = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let p: Vec<f64> = mm.iter().zip(&gg).map(|(a, b)| a * b).collect();
        assert_eq!(greedy(&p, c, 1), vec![0]);
    }

    #[test]
    fn noise_is_the_rounding_error_inside_the_range() {
        let f = noise_fn(0.0, 7.0, 3);
        assert_eq!(f(3.0), 0.0);
        assert!((f(3.4) + 0.4).abs() < 1e-6);
        assert!((f(9.0) + 2.0).abs() < 1e-6);
    }
}
