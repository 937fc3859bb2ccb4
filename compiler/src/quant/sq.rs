//! `--sq-ratio R`: per-filter mixed precision chosen by stochastic quantization (issue 13,
//! the compile-time counterpart of SQ, Dong et al. 2017; `docs/methods.md`).
//!
//! SQ trains a network whose filters are quantized a fraction at a time: each filter `i`
//! of a layer has the relative error `e_i = |W_i - Q_i|_1 / |W_i|_1` of its low-width
//! form, and a fraction `r` of the filters is drawn for quantization by roulette without
//! replacement, with probability proportional to `1 / (e_i + eps)`, the others staying
//! in full precision; `r` grows 50 % -> 75 % -> 87.5 % -> 100 %. At compile time there
//! is no training to recover between the stages, so the fraction stops at `R` and the
//! filters not drawn keep a higher width (`--sq-high`, default 8): every conv/gemm layer
//! between the edges runs in two precision groups.
//!
//! - Draw: per layer, a fixed-seed generator (seeded from the layer's name) draws the
//!   filters stage by stage (`R` capped at each of 0.5, 0.75, 0.875, 1), each stage
//!   adding to the filters drawn before, so builds are identical run to run.
//! - After each stage (`QuantFlags::apply`, `flags.rs`) the model is built with the
//!   filters drawn so far and its weights are re-fitted on the calibration samples, and
//!   the output error of the stages before the last is measured for the report. SQ
//!   retrains the weights not yet quantized between its stages so that they make up
//!   for the quantized ones; here (`--sq-refit feedback`, the default) that is the
//!   bottom-up pass of `--sequential` (`sequential.rs`) over both groups of every layer:
//!   float weights solved by least squares for the inputs the quantized layers below
//!   give, rounded with error feedback onto the taps not yet rounded. `--sq-refit gain`
//!   fits only every low group's per-filter scales and biases by least squares to the
//!   float layer's result (`binary.rs`'s gain and offset fit). The errors `e_i` depend
//!   on the weights alone, so the earlier stages change the report, not the final
//!   model.
//! - Realisation: the layer is split into two layers of the same op, one with the low
//!   filters' weights and one with the high filters' (each then fuses into its own
//!   integer kernel), and a concat joins their results (a relu or leaky relu that is the
//!   result's only reader is applied to each part before the concat). When the joined
//!   value's channels meet only layers that can take a permutation (`important.rs`'s
//!   `closure`: through ops that treat every channel alike, elementwise ops with scalar
//!   constants, adds and products of such values, pooling and flatten, to conv/gemm
//!   readers, and through a residual add to the stream's other producers), the concat
//!   keeps the two groups in order (`low ++ high`), the readers' input channels and the
//!   other producers' output channels are permuted to match, and nothing moves at run
//!   time. Otherwise (a graph output, a channel split or concat, two split layers
//!   writing one stream) the concat joins slices of the two results in the original
//!   channel order: runs of consecutive filters of one group are copied, no gather is
//!   needed.
//!
//! - In the e-graph: a split layer whose two parts reach the concat as they are
//!   requantized (directly or through channel slices) is also offered as one kernel
//!   over all its filters (`rewrite/rules/merge_split.rs`), and extraction keeps the form
//!   the cost model prices lower.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use qcc_ir::{Attr, ConstData, Module, Node, NodeId, Op, TensorType, ValueDef, ValueId};

use super::binary::binarize_weights;
use super::equalize::{Reader, can_permute, f32_const, permute_reader};
use super::important::{closure, permute_producer};
use super::insert::QuantLayer;
use super::scheme::{quantize_weights, ternary_weights};

/// The stages of the fraction of low filters (the last one is `R`).
pub const STAGES: [f64; 4] = [0.5, 0.75, 0.875, 1.0];

/// Added to each filter's error in the roulette's weights `1 / (e_i + EPS)`.
pub const EPS: f64 = 1e-3;

/// The generator's fixed seed (mixed with each layer's name).
const SEED: u64 = 0x5153_2017_0801_1001;

/// Per-layer (weight, activation) bits by layer name.
pub type LayerBits = BTreeMap<String, (u8, u8)>;

/// Suffixes of the two parts' layer names.
pub const LOW: &str = ".sq_low";
pub const HIGH: &str = ".sq_high";

/// How the low filters are picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// SQ: roulette without replacement, weights `1 / (e_i + eps)`, staged, re-fitted.
    Roulette,
    /// The first filters by index, in one stage and without the re-fit: the split
    /// without SQ's choice, for comparison at the same average bits.
    Index,
}

impl std::str::FromStr for Pick {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "roulette" => Ok(Pick::Roulette),
            "index" => Ok(Pick::Index),
            _ => Err(format!("--sq-pick {s}: expected roulette or index")),
        }
    }
}

/// The flags of one SQ build.
#[derive(Clone, Debug)]
pub struct SqOptions {
    /// The fraction of each layer's filters at the low width, in (0, 1].
    pub ratio: f64,
    pub low: u8,
    pub high: u8,
    /// The low form of 2-bit weights is TWN's ternary rule.
    pub ternary: bool,
    pub pow2: bool,
    pub pick: Pick,
}

impl SqOptions {
    /// The fractions of the stages: those of [`STAGES`] below the ratio, then the ratio
    /// (one stage for [`Pick::Index`]).
    pub fn stages(&self) -> Vec<f64> {
        if self.pick == Pick::Index {
            return vec![self.ratio];
        }
        let mut s: Vec<f64> = STAGES.iter().copied().filter(|&r| r < self.ratio).collect();
        s.push(self.ratio);
        s
    }
}

/// A small fixed-seed generator (SplitMix64).
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn from_name(name: &str) -> Self {
        // FNV-1a of the name, mixed with the seed.
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in name.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Rng(h ^ SEED)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws `count` more of the filters not in `taken` by roulette without replacement,
/// filter `i` with weight `1 / (errors[i] + EPS)`; appends them to `taken`.
fn roulette(errors: &[f64], taken: &mut Vec<usize>, count: usize, rng: &mut Rng) {
    let mut is_taken = vec![false; errors.len()];
    for &i in taken.iter() {
        is_taken[i] = true;
    }
    let w: Vec<f64> = errors.iter().map(|&e| 1.0 / (e + EPS)).collect();
    for _ in 0..count {
        let left: Vec<usize> = (0..errors.len()).filter(|&i| !is_taken[i]).collect();
        let Some(&last) = left.last() else {
            return;
        };
        let total: f64 = left.iter().map(|&i| w[i]).sum();
        let mut x = rng.unit() * total;
        let mut pick = last;
        for &i in &left {
            if x < w[i] {
                pick = i;
                break;
            }
            x -= w[i];
        }
        is_taken[pick] = true;
        taken.push(pick);
    }
}

/// Per filter (along `axis` of `shape`), `|W_i - Q_i|_1 / |W_i|_1` of its form at `bits`
/// (0 for a filter of zeros).
pub fn filter_errors(
    w: &[f32],
    shape: &[usize],
    axis: usize,
    bits: u8,
    ternary: bool,
    pow2: bool,
) -> Vec<f64> {
    let (qt, codes) = if bits == 1 {
        binarize_weights(w, shape, axis)
    } else if ternary && bits == 2 {
        ternary_weights(w, shape, axis)
    } else {
        quantize_weights(w, shape, axis, bits, pow2)
    };
    let c = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product::<usize>().max(1);
    let scales = qt.params.scales();
    let mut num = vec![0f64; c];
    let mut den = vec![0f64; c];
    for (i, (&x, &q)) in w.iter().zip(&codes).enumerate() {
        let ch = (i / inner) % c;
        num[ch] += (x as f64 - q as f64 * scales[ch] as f64).abs();
        den[ch] += (x as f64).abs();
    }
    num.iter()
        .zip(&den)
        .map(|(&n, &d)| if d > 0.0 { n / d } else { 0.0 })
        .collect()
}

/// One layer's split.
#[derive(Clone, Debug)]
pub struct SqLayer {
    /// The layer's name (the report's).
    pub name: String,
    /// Its node in the float module.
    pub node: usize,
    /// The weights' output-channel axis.
    pub axis: usize,
    pub errors: Vec<f64>,
    /// The filters at the low width, in the order drawn.
    pub low: Vec<usize>,
    /// How the output order was kept in the last split: the readers whose input
    /// channels were permuted, or why the original order is restored by slices.
    pub order: Result<Vec<String>, String>,
    rng: Rng,
}

impl SqLayer {
    pub fn filters(&self) -> usize {
        self.errors.len()
    }

    /// The low and high filters, each in index order.
    pub fn groups(&self) -> (Vec<usize>, Vec<usize>) {
        let mut is_low = vec![false; self.filters()];
        for &i in &self.low {
            is_low[i] = true;
        }
        let low = (0..self.filters()).filter(|&i| is_low[i]).collect();
        let high = (0..self.filters()).filter(|&i| !is_low[i]).collect();
        (low, high)
    }
}

/// The SQ plan of a model: every split layer and its draw so far.
#[derive(Clone, Debug)]
pub struct SqPlan {
    pub opts: SqOptions,
    pub layers: Vec<SqLayer>,
    /// Layers left out, and why.
    pub skipped: Vec<(String, String)>,
}

fn out_channels(m: &Module, l: &QuantLayer, axis: usize) -> usize {
    m.ty(m.nodes[l.node].operands[1]).shape[axis]
}

/// The weight axis of output channels of layer node `n` (as `quantize_model` reads it).
fn weight_axis(m: &Module, n: usize) -> usize {
    match m.nodes[n].op {
        Op::Gemm if super::equalize::bool_attr(m, n, "trans_b") => 0,
        Op::Gemm | Op::MatMul => 1,
        _ => 0,
    }
}

impl SqPlan {
    /// The plan for float module `m` with quantized layers `layers`: every layer but
    /// the edges (with `keep_edges`) gets the errors of its filters; nothing drawn yet.
    pub fn new(m: &Module, layers: &[QuantLayer], opts: SqOptions, keep_edges: bool) -> Self {
        let mut plan = SqPlan {
            opts,
            layers: Vec::new(),
            skipped: Vec::new(),
        };
        let n = layers.len();
        for (k, l) in layers.iter().enumerate() {
            if keep_edges && (k == 0 || k + 1 == n) {
                continue;
            }
            let node = &m.nodes[l.node];
            let axis = weight_axis(m, l.node);
            let w = node.operands[1];
            let wshape = m.ty(w).shape.clone();
            let why =
                if node.op == Op::Conv2d && super::equalize::int_attr(m, l.node, "group", 1) != 1 {
                    Some("a grouped convolution keeps one width".to_string())
                } else if wshape.len() != if node.op == Op::Conv2d { 4 } else { 2 } {
                    Some(format!("its weights have rank {}", wshape.len()))
                } else if node.operands.get(2).is_some_and(|&b| {
                    f32_const(m, b).is_none_or(|d| d.len() != 1 && d.len() != wshape[axis])
                }) {
                    Some("its bias is not a constant per filter".to_string())
                } else if out_channels(m, l, axis) < 2 {
                    Some("it has one filter".to_string())
                } else {
                    None
                };
            if let Some(why) = why {
                plan.skipped.push((l.name.clone(), why));
                continue;
            }
            let wd = f32_const(m, w).expect("a quantized layer has f32 weights");
            let errors = filter_errors(
                &wd,
                &wshape,
                axis,
                plan.opts.low,
                plan.opts.ternary,
                plan.opts.pow2,
            );
            plan.layers.push(SqLayer {
                name: l.name.clone(),
                node: l.node,
                axis,
                errors,
                low: Vec::new(),
                order: Ok(Vec::new()),
                rng: Rng::from_name(&l.name),
            });
        }
        plan
    }

    /// Grows every layer's low group to `round(r * filters)` filters.
    pub fn grow(&mut self, r: f64) {
        let pick = self.opts.pick;
        for l in &mut self.layers {
            let want = ((r * l.filters() as f64).round() as usize).min(l.filters());
            let more = want.saturating_sub(l.low.len());
            match pick {
                Pick::Roulette => roulette(&l.errors, &mut l.low, more, &mut l.rng),
                Pick::Index => {
                    // The first `want` filters (the earlier stages took a prefix).
                    let from = l.low.len();
                    l.low.extend(from..want.max(from));
                }
            }
        }
    }

    /// The names of the low parts (of split layers) and of layers wholly at the low
    /// width.
    pub fn low_names(&self) -> BTreeSet<String> {
        self.layers
            .iter()
            .filter(|l| !l.low.is_empty())
            .map(|l| {
                if l.low.len() == l.filters() {
                    l.name.clone()
                } else {
                    format!("{}{LOW}", l.name)
                }
            })
            .collect()
    }

    /// `m` with every layer of the plan split into its low and high parts (a layer with
    /// one empty group keeps its node), and the bits of each part (`abits` for their
    /// input): the float module's function is unchanged.
    pub fn split(&mut self, m: &Module, abits: u8) -> Result<(Module, LayerBits), String> {
        let (lo, hi) = (self.opts.low, self.opts.high);
        let mut bits = BTreeMap::new();
        let mut out = m.clone();
        let users = m.users();
        // Per split node: its parts' filters, the activation node applied to each part,
        // the joined value and whether the readers took the permutation.
        struct Split {
            layer: usize,
            low: Vec<usize>,
            high: Vec<usize>,
            act: Option<usize>,
            joined: ValueId,
            folded: bool,
        }
        let mut splits: HashMap<usize, Split> = HashMap::new();
        let mut absorbed: HashSet<usize> = HashSet::new();
        // The layers this split divides (a closure holding two of them cannot take
        // both orders).
        let divided: HashSet<usize> = self
            .layers
            .iter()
            .filter(|l| {
                let (low, high) = l.groups();
                !low.is_empty() && !high.is_empty()
            })
            .map(|l| l.node)
            .collect();
        for (li, l) in self.layers.iter_mut().enumerate() {
            let (low, high) = l.groups();
            if high.is_empty() || low.is_empty() {
                bits.insert(
                    l.name.clone(),
                    (if high.is_empty() { lo } else { hi }, abits),
                );
                l.order = Ok(Vec::new());
                continue;
            }
            bits.insert(format!("{}{LOW}", l.name), (lo, abits));
            bits.insert(format!("{}{HIGH}", l.name), (hi, abits));
            let r = m.nodes[l.node].result;
            let act = match users[r.index()].as_slice() {
                [u] if matches!(m.node(*u).op, Op::Relu | Op::LeakyRelu)
                    && !m.outputs.contains(&r) =>
                {
                    Some(u.index())
                }
                _ => None,
            };
            let joined = act.map_or(r, |u| m.nodes[u].result);
            // low ++ high: new channel j is old channel perm[j].
            let perm: Vec<usize> = low.iter().chain(&high).copied().collect();
            // Every layer whose channels meet the joined value's (its readers, and where
            // it joins a residual stream the stream's other producers and readers,
            // through ops that treat all channels alike) takes the permutation.
            let node_name = |n: usize| {
                m.nodes[n]
                    .loc
                    .clone()
                    .unwrap_or_else(|| m.value(m.nodes[n].result).spelling())
            };
            let folded = closure(m, &users, joined).and_then(|cl| {
                if !cl.producers.contains(&l.node) {
                    return Err("the joined value is not this layer's alone".to_string());
                }
                for &p in &cl.producers {
                    if p == l.node {
                        continue;
                    }
                    if divided.contains(&p) {
                        return Err(format!(
                            "{} writes the same channels and is split too",
                            node_name(p)
                        ));
                    }
                    if users[m.nodes[p].operands[1].index()].len() != 1 {
                        return Err(format!("the weights of {} are shared", node_name(p)));
                    }
                }
                for r in &cl.readers {
                    can_permute(m, &users, r)?;
                }
                Ok(cl)
            });
            l.order = match folded {
                Ok(cl) => {
                    for r in &cl.readers {
                        permute_reader(&mut out, r, &perm);
                    }
                    let mut names: Vec<String> = cl
                        .readers
                        .iter()
                        .map(|r| match *r {
                            Reader::Conv(n) | Reader::Dense(n, _) => node_name(n),
                        })
                        .collect();
                    for &p in cl.producers.iter().filter(|&&p| p != l.node) {
                        permute_producer(&mut out, p, &perm);
                        names.push(format!("{} (its outputs)", node_name(p)));
                    }
                    Ok(names)
                }
                Err(e) => Err(e),
            };
            absorbed.extend(act);
            splits.insert(
                l.node,
                Split {
                    layer: li,
                    low,
                    high,
                    act,
                    joined,
                    folded: l.order.is_ok(),
                },
            );
        }
        let old = std::mem::take(&mut out.nodes);
        for (ni, node) in old.into_iter().enumerate() {
            if absorbed.contains(&ni) {
                continue;
            }
            let Some(sp) = splits.get(&ni) else {
                out.value_mut(node.result).def = ValueDef::Node(NodeId(out.nodes.len() as u32));
                out.nodes.push(node);
                continue;
            };
            let l = &self.layers[sp.layer];
            let mut parts = Vec::new();
            for (filters, suffix) in [(&sp.low, LOW), (&sp.high, HIGH)] {
                let mut part = node.clone();
                let w = node.operands[1];
                let wshape = out.ty(w).shape.clone();
                let wd = f32_const(&out, w).expect("checked");
                let (pw, pshape) = take(&wd, &wshape, l.axis, filters);
                let wn = out.fresh_name(&format!("{}{suffix}", out.value(w).name));
                part.operands[1] = out.add_const(wn, TensorType::f32(pshape), ConstData::F32(pw));
                // A conv/gemm without a bias gets zeros, which the low group's fitted
                // offsets go into.
                if node.operands.len() == 2 && matches!(node.op, Op::Conv2d | Op::Gemm) {
                    let bn = out.fresh_name(&format!("{}{suffix}.bias", l.name));
                    let zeros = ConstData::F32(vec![0.0; filters.len()]);
                    part.operands.push(out.add_const(
                        bn,
                        TensorType::f32(vec![filters.len()]),
                        zeros,
                    ));
                } else if let Some(&b) = node.operands.get(2) {
                    let bd = f32_const(&out, b).expect("checked");
                    if bd.len() > 1 {
                        let bshape = out.ty(b).shape.clone();
                        let axis = bshape.len() - 1;
                        let (pb, pbs) = take(&bd, &bshape, axis, filters);
                        let bn = out.fresh_name(&format!("{}{suffix}", out.value(b).name));
                        part.operands[2] =
                            out.add_const(bn, TensorType::f32(pbs), ConstData::F32(pb));
                    }
                }
                let mut rshape = out.ty(node.result).shape.clone();
                rshape[1] = filters.len();
                let rn = out.fresh_name(&format!("{}{suffix}", out.value(node.result).name));
                let y = out.add_node(
                    part.op,
                    part.operands.clone(),
                    part.attrs.clone(),
                    rn,
                    TensorType::f32(rshape.clone()),
                );
                out.nodes.last_mut().expect("added").loc = Some(format!("{}{suffix}", l.name));
                let y = match sp.act {
                    Some(a) => {
                        let an = &m.nodes[a];
                        let name = out.fresh_name(&format!("{}{suffix}", m.value(an.result).name));
                        out.add_node(
                            an.op,
                            vec![y],
                            an.attrs.clone(),
                            name,
                            TensorType::f32(rshape),
                        )
                    }
                    None => y,
                };
                parts.push(y);
            }
            // The joined value: both groups in order, or slices in the original order.
            let operands = if sp.folded {
                parts
            } else {
                let mut group = vec![(0usize, 0usize); sp.low.len() + sp.high.len()];
                for (g, fs) in [&sp.low, &sp.high].into_iter().enumerate() {
                    for (p, &f) in fs.iter().enumerate() {
                        group[f] = (g, p);
                    }
                }
                let mut ops = Vec::new();
                let mut f = 0;
                while f < group.len() {
                    let (g, start) = group[f];
                    let mut end = start + 1;
                    while f + (end - start) < group.len() && group[f + (end - start)] == (g, end) {
                        end += 1;
                    }
                    let src = parts[g];
                    let name = out.fresh_name(&format!("{}.run", out.value(src).name));
                    ops.push(slice_channels(&mut out, src, start, end, name));
                    f += end - start;
                }
                ops
            };
            let mut attrs = BTreeMap::new();
            attrs.insert("axis".into(), Attr::Int(1));
            out.value_mut(sp.joined).def = ValueDef::Node(NodeId(out.nodes.len() as u32));
            out.nodes.push(Node {
                op: Op::Concat,
                operands,
                attrs,
                result: sp.joined,
                loc: None,
                meta: BTreeMap::new(),
            });
        }
        // The results of the split layers (and of their absorbed activations) are no
        // longer computed.
        out.compact();
        Ok((out, bits))
    }

    /// One line per layer: its filters at each width and how the order is kept.
    pub fn describe(&self) -> Vec<String> {
        let (lo, hi) = (self.opts.low, self.opts.high);
        let mut out: Vec<String> = self
            .layers
            .iter()
            .map(|l| {
                let n = l.filters();
                let k = l.low.len();
                let avg = (k as f64 * lo as f64 + (n - k) as f64 * hi as f64) / n as f64;
                let order = match (&l.order, k == 0 || k == n) {
                    (_, true) => "one width, not split".to_string(),
                    (Ok(rs), _) => format!("channels reordered, folded into {}", rs.join(", ")),
                    (Err(e), _) => format!("original order kept by slices ({e})"),
                };
                let (low, _) = l.groups();
                let low: Vec<String> = low.iter().map(|i| i.to_string()).collect();
                format!(
                    "{}: {k} of {n} filters at {lo} bits, {} at {hi} bits (average {avg:.3} weight bits; {order}); low filters {}",
                    l.name,
                    n - k,
                    if low.is_empty() { "none".into() } else { low.join(" ") }
                )
            })
            .collect();
        out.extend(
            self.skipped
                .iter()
                .map(|(n, why)| format!("{n}: not split ({why})")),
        );
        out
    }
}

/// The channels `filters` (in that order) along `axis` of `w` (shape `shape`).
/// Appends `slice(src)` of channels `lo..hi` along axis 1 (an f32 value), named `name`.
pub(super) fn slice_channels(
    m: &mut Module,
    src: ValueId,
    lo: usize,
    hi: usize,
    name: String,
) -> ValueId {
    let mut shape = m.ty(src).shape.clone();
    shape[1] = hi - lo;
    let mut attrs = BTreeMap::new();
    attrs.insert("starts".into(), Attr::Ints(vec![lo as i64]));
    attrs.insert("ends".into(), Attr::Ints(vec![hi as i64]));
    attrs.insert("axes".into(), Attr::Ints(vec![1]));
    attrs.insert("steps".into(), Attr::Ints(vec![1]));
    m.add_node(Op::Slice, vec![src], attrs, name, TensorType::f32(shape))
}

fn take(w: &[f32], shape: &[usize], axis: usize, filters: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let c = shape[axis];
    let mut out = Vec::with_capacity(outer * filters.len() * inner);
    for o in 0..outer {
        for &f in filters {
            let at = (o * c + f) * inner;
            out.extend_from_slice(&w[at..at + inner]);
        }
    }
    let mut s = shape.to_vec();
    s[axis] = filters.len();
    (out, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roulette_is_fixed_and_favours_small_errors() {
        let errors = [0.9, 0.01, 0.5, 0.02, 0.8, 0.03];
        let draw = |n| {
            let mut rng = Rng::from_name("layer");
            let mut t = Vec::new();
            roulette(&errors, &mut t, n, &mut rng);
            t
        };
        assert_eq!(draw(3), draw(3));
        let t = draw(6);
        let mut s = t.clone();
        s.sort_unstable();
        assert_eq!(s, vec![0, 1, 2, 3, 4, 5], "without replacement: {t:?}");
        // Over many seeds, the three small-error filters are drawn first far more often.
        let mut small = 0;
        for k in 0..200 {
            let mut rng = Rng::from_name(&format!("l{k}"));
            let mut t = Vec::new();
            roulette(&errors, &mut t, 3, &mut rng);
            small += t.iter().filter(|&&i| errors[i] < 0.1).count();
        }
        assert!(small > 500, "{small} of 600");
    }

    #[test]
    fn filter_errors_are_relative_l1() {
        // Two filters of two weights at 2 bits (codes -1..1): [1, -1] is exact; [1, 0.25]
        // rounds 0.25 to 0 with the scale 1: error 0.25 / 1.25.
        let e = filter_errors(&[1.0, -1.0, 1.0, 0.25], &[2, 2], 0, 2, false, false);
        assert!(e[0].abs() < 1e-12, "{e:?}");
        assert!((e[1] - 0.2).abs() < 1e-6, "{e:?}");
        // A filter of zeros has no error.
        let e = filter_errors(&[0.0, 0.0, 1.0, 0.5], &[2, 2], 0, 2, false, false);
        assert_eq!(e[0], 0.0);
    }

    /// Dense layers: a gemm with `[K, N]` weights split by columns, its reordered
    /// outputs folded into a gemm and a matmul that read them (through a relu), and a
    /// gemm whose result is the graph output restored by slices; the function is kept.
    #[test]
    fn dense_splits_keep_the_function() {
        let mut m = Module::new("dense");
        let x = m.add_input("x", TensorType::f32(vec![2, 4]));
        let vals = |n: usize, k: u32| -> Vec<f32> {
            (0..n)
                .map(|i| (((i as u32 * 7 + k * 13) % 17) as f32 - 8.0) / 5.0)
                .collect()
        };
        let gemm = |m: &mut Module,
                    a: ValueId,
                    w: Vec<f32>,
                    ws: Vec<usize>,
                    b: Vec<f32>,
                    n: &str,
                    trans_b: bool| {
            let out = if trans_b { ws[0] } else { ws[1] };
            let wc = m.add_const(format!("{n}.w"), TensorType::f32(ws), ConstData::F32(w));
            let bc = m.add_const(
                format!("{n}.b"),
                TensorType::f32(vec![out]),
                ConstData::F32(b),
            );
            let mut attrs = BTreeMap::new();
            attrs.insert("alpha".to_string(), Attr::Float(1.0));
            attrs.insert("beta".to_string(), Attr::Float(1.0));
            attrs.insert("trans_a".to_string(), Attr::Bool(false));
            attrs.insert("trans_b".to_string(), Attr::Bool(trans_b));
            let y = m.add_node(
                Op::Gemm,
                vec![a, wc, bc],
                attrs,
                n,
                TensorType::f32(vec![2, out]),
            );
            m.nodes.last_mut().unwrap().loc = Some(n.to_string());
            y
        };
        let h = gemm(&mut m, x, vals(24, 1), vec![4, 6], vals(6, 2), "g1", false);
        let r = m.add_node(
            Op::Relu,
            vec![h],
            BTreeMap::new(),
            "r",
            TensorType::f32(vec![2, 6]),
        );
        let y1 = gemm(&mut m, r, vals(30, 3), vec![5, 6], vals(5, 4), "g2", true);
        let w3 = m.add_const(
            "m3.w",
            TensorType::f32(vec![6, 3]),
            ConstData::F32(vals(18, 5)),
        );
        let y2 = m.add_node(
            Op::MatMul,
            vec![r, w3],
            BTreeMap::new(),
            "m3",
            TensorType::f32(vec![2, 3]),
        );
        m.nodes.last_mut().unwrap().loc = Some("m3".into());
        m.outputs = vec![y1, y2];
        let layers = super::super::insert::quant_layers(&m).unwrap();
        let opts = SqOptions {
            ratio: 0.5,
            low: 2,
            high: 8,
            ternary: false,
            pow2: false,
            pick: Pick::Roulette,
        };
        let mut plan = SqPlan::new(&m, &layers, opts, false);
        plan.grow(0.5);
        let (s, bits) = plan.split(&m, 8).unwrap();
        qcc_ir::verify::verify(&s).unwrap();
        // g1 folds into g2 and m3; g2 and m3 are outputs (slices); m3 has 3 filters.
        assert_eq!(plan.layers[0].order.as_ref().map(|r| r.len()), Ok(2));
        assert!(plan.layers[1].order.is_err());
        assert_eq!(bits.get("g1.sq_low"), Some(&(2, 8)));
        assert!(s.nodes.iter().any(|n| n.op == Op::Slice));
        let xs = qcc_ir::interp::Tensor::f32(vec![2, 4], vals(8, 6));
        let a = qcc_ir::interp::run(&m, std::slice::from_ref(&xs)).unwrap();
        let b = qcc_ir::interp::run(&s, std::slice::from_ref(&xs)).unwrap();
        for (a, b) in a.iter().zip(&b) {
            for (p, q) in a.as_f32().unwrap().iter().zip(b.as_f32().unwrap()) {
                assert!((p - q).abs() < 1e-5, "{p} {q}");
            }
        }
    }

    /// A conv without a bias, read by a grouped conv (which cannot take a permutation):
    /// its parts get zero biases, the original order is restored by slices, and the
    /// grouped conv is not split.
    #[test]
    fn conv_without_bias_before_a_grouped_reader() {
        let mut m = Module::new("conv");
        let x = m.add_input("x", TensorType::f32(vec![1, 2, 5, 5]));
        let vals = |n: usize, k: u32| -> Vec<f32> {
            (0..n)
                .map(|i| (((i as u32 * 5 + k * 11) % 13) as f32 - 6.0) / 4.0)
                .collect()
        };
        let conv = |m: &mut Module, a: ValueId, ws: Vec<usize>, k: u32, group: i64, n: &str| {
            let out = ws[0];
            let w = m.add_const(
                format!("{n}.w"),
                TensorType::f32(ws.clone()),
                ConstData::F32(vals(ws.iter().product(), k)),
            );
            let mut attrs = BTreeMap::new();
            attrs.insert("group".to_string(), Attr::Int(group));
            attrs.insert("pads".to_string(), Attr::Ints(vec![1, 1, 1, 1]));
            let y = m.add_node(
                Op::Conv2d,
                vec![a, w],
                attrs,
                n,
                TensorType::f32(vec![1, out, 5, 5]),
            );
            m.nodes.last_mut().unwrap().loc = Some(n.to_string());
            y
        };
        let a = conv(&mut m, x, vec![4, 2, 3, 3], 1, 1, "a");
        let r = m.add_node(
            Op::Relu,
            vec![a],
            BTreeMap::new(),
            "r",
            TensorType::f32(vec![1, 4, 5, 5]),
        );
        let d = conv(&mut m, r, vec![4, 1, 3, 3], 2, 4, "d");
        let e = conv(&mut m, d, vec![3, 4, 3, 3], 3, 1, "e");
        m.outputs = vec![e];
        let layers = super::super::insert::quant_layers(&m).unwrap();
        let opts = SqOptions {
            ratio: 0.5,
            low: 3,
            high: 6,
            ternary: false,
            pow2: false,
            pick: Pick::Roulette,
        };
        let mut plan = SqPlan::new(&m, &layers, opts, false);
        assert_eq!(plan.skipped.len(), 1, "{:?}", plan.skipped);
        plan.grow(0.5);
        let (s, bits) = plan.split(&m, 8).unwrap();
        qcc_ir::verify::verify(&s).unwrap();
        assert!(
            plan.layers[0]
                .order
                .as_ref()
                .is_err_and(|e| e.contains("grouped"))
        );
        assert_eq!(bits.get("a.sq_high"), Some(&(6, 8)));
        // Every part of `a` has a bias operand.
        assert!(
            s.nodes
                .iter()
                .filter(
                    |n| n.op == Op::Conv2d && n.loc.as_deref().is_some_and(|l| l.starts_with("a."))
                )
                .all(|n| n.operands.len() == 3)
        );
        let xs = qcc_ir::interp::Tensor::f32(vec![1, 2, 5, 5], vals(50, 4));
        let p = qcc_ir::interp::run(&m, std::slice::from_ref(&xs)).unwrap();
        let q = qcc_ir::interp::run(&s, std::slice::from_ref(&xs)).unwrap();
        for (a, b) in p[0].as_f32().unwrap().iter().zip(q[0].as_f32().unwrap()) {
            assert!((a - b).abs() < 1e-4, "{a} {b}");
        }
    }

    #[test]
    fn take_picks_channels_on_either_axis() {
        let w: Vec<f32> = (0..6).map(|x| x as f32).collect();
        assert_eq!(
            take(&w, &[3, 2], 0, &[2, 0]),
            (vec![4.0, 5.0, 0.0, 1.0], vec![2, 2])
        );
        assert_eq!(take(&w, &[2, 3], 1, &[1]), (vec![1.0, 4.0], vec![2, 1]));
    }
}
