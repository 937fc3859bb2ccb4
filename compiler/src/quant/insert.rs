//! The quantize pass: rewrites a float module into QDQ form.
//!
//! - Every conv2d, gemm (A not transposed, alpha = 1) and matmul with constant f32
//!   weights gets its weights as constant codes (per-channel symmetric, see `scheme.rs`)
//!   followed by a `dequantize`.
//! - Every activation feeding such a kernel gets `quantize -> dequantize` with calibrated
//!   parameters. The pair is placed where the value is produced: the walk goes back
//!   through data movement that commutes with quantization (max_pool, reshape, flatten,
//!   transpose, squeeze, unsqueeze), so one quantize sits after the relu that follows the
//!   previous kernel and the `rewrite` pass absorbs the relu into a `requantize` clamp and
//!   moves the codes through the pooling. All uses of the value read the dequantized one
//!   (as in ONNX Runtime's QDQ form).
//! - Kernel outputs get a quantize too (`quantize_outputs`, default on; after the relu or
//!   clip that is their only user), at 8 bits unless they feed a kernel, so each kernel
//!   fuses into `requantize`; a graph output then reads the dequantized value. Without
//!   it, outputs no kernel reads stay f32 (`dequantize` of the i32 accumulator). A
//!   result whose users all add a constant to it (`matmul` + bias `add`, a linear layer
//!   as exported) stays f32 as well: the backend fuses the dequantize and the bias add
//!   into the integer kernel's epilogue, instead of rounding the result to 8 bits to
//!   dequantize it at once.
//!
//! - Binarized layers (`--bits 1`: every conv2d and gemm but the edge layers; see
//!   `binary.rs`): weights `sign(w)` as constant codes +-1 of `q<i2 narrow, alpha:0>`
//!   (per output channel) and a `dequantize`; the input `binarize(x - t)` (`b1`), cast to
//!   `q<i2 narrow, beta:0>` and dequantized, where `x` is the 8-bit QDQ value of the
//!   activation (so the rewrite makes the binarization an integer threshold on its
//!   codes); `t * sum(w)` added to the bias. The rewrite then gives `conv2d_int` /
//!   `matmul_int` with both operands `b1` (the XNOR-popcount kernels) and a requantize
//!   of the accumulator by `alpha * beta` to the 8-bit output.
//!
//! Running `rewrite` then `dce` turns the result into integer kernels.

use std::collections::{BTreeMap, HashMap};

use qcc_ir::{
    Attr, Attrs, ConstData, ElemType, IntType, Module, Node, NodeId, Op, QuantParams, QuantType,
    TensorType, ValueDef, ValueId,
};

use super::binary::{BinaryAct, binarize_weights, binary_act};
use super::calibrate::{CalibStats, LayerError, OutputError, RangeSource};
use super::scheme::{
    ActParams, QuantOptions, choose_range, choose_range_dqa, quantize_weights, ternary_weights,
};

/// What happened to one conv/gemm/matmul.
#[derive(Clone, Debug)]
pub struct LayerReport {
    /// The node's location (ONNX name) or its result's spelling.
    pub name: String,
    pub op: Op,
    pub wbits: u8,
    /// Bits of the quantized input activation.
    pub abits: u8,
    /// Smallest and largest per-channel weight scale.
    pub w_scales: (f32, f32),
    /// The input activation's parameters and the value they were calibrated on.
    pub act: ActParams,
    pub act_value: String,
    /// Kept at 8 bits as the first or last layer.
    pub edge: bool,
    /// Elements of the weight tensor.
    pub weight_count: u64,
    /// The layer's result (the same id in the float module and in the QDQ module).
    pub output: ValueId,
    /// The result's error against the float model on calibration data, when measured
    /// (see [`layer_errors`](super::layer_errors)).
    pub error: Option<LayerError>,
    /// The layers (indices into the report's list) whose results reach this layer's
    /// input through other ops: the edges of the report's layer graph.
    pub preds: Vec<usize>,
}

/// The quantization report.
#[derive(Clone, Debug)]
pub struct QuantReport {
    pub layers: Vec<LayerReport>,
    /// How activation ranges were chosen.
    pub source: RangeSource,
    pub samples: usize,
    pub notes: Vec<String>,
    /// Filled by a caller that measured it (see [`compare_outputs`](super::compare_outputs)).
    pub output_error: Option<OutputError>,
    /// How the per-layer bits were chosen under a `--budget`, when they were.
    pub selection: Option<Selection>,
}

/// A `--budget` choice: the candidates and the plan's predicted and measured error.
#[derive(Clone, Debug)]
pub struct Selection {
    /// `--budget avg-bits=3 (exact)`.
    pub how: String,
    /// What the errors measure (`KL of the softmax outputs`, `MSE of the outputs`).
    pub metric: String,
    /// Its key (`kl`, `mse`).
    pub metric_key: String,
    /// Per layer (the report's order): every candidate (weight bits, activation bits,
    /// error when only that layer is quantized so).
    pub candidates: Vec<Vec<(u8, u8, f64)>>,
    /// Sum of the chosen candidates' errors.
    pub predicted: f64,
    /// The chosen plan's error, measured end to end on calibration samples.
    pub measured: Option<f64>,
    /// The plan's modelled totals: average weight bits, weight bytes, latency (ms).
    pub avg_bits: f64,
    pub size_bytes: f64,
    pub latency_ms: f64,
    /// With a latency budget: the plan's whole-model time on this machine (JIT).
    pub measured_latency_ms: Option<f64>,
}

impl std::fmt::Display for QuantReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "quantization: activation ranges by {}", self.source)?;
        if self.samples > 0 {
            write!(f, " on {} samples", self.samples)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<28} {:<8} {:>5} {:>5}  {:<24} input activation",
            "layer", "op", "wbits", "abits", "weight scales"
        )?;
        for l in &self.layers {
            let a = &l.act;
            if l.wbits == 1 && l.abits == 1 {
                // A binarized layer: x ~ t + beta * sign(x - t).
                let beta = a.ty.params.scales()[0];
                writeln!(
                    f,
                    "{:<28} {:<8} {:>5} {:>5}  {:<24} b1 sign({} - {:.4}) scale {:.4e}",
                    l.name,
                    l.op.name(),
                    l.wbits,
                    l.abits,
                    format!("{:.3e}..{:.3e}", l.w_scales.0, l.w_scales.1),
                    l.act_value,
                    (a.lo + a.hi) / 2.0,
                    beta
                )?;
                if let Some(e) = &l.error {
                    writeln!(f, "{:<28} error vs float at its result: {e}", "")?;
                }
                continue;
            }
            let (s, z) = match &a.ty.params {
                QuantParams::PerTensor { scale, zero_point } => (*scale, *zero_point),
                _ => (0.0, 0),
            };
            writeln!(
                f,
                "{:<28} {:<8} {:>5} {:>5}  {:<24} {} {} scale {:.4e} zp {} range [{:.4}, {:.4}]{}",
                l.name,
                l.op.name(),
                l.wbits,
                l.abits,
                format!("{:.3e}..{:.3e}", l.w_scales.0, l.w_scales.1),
                a.ty.storage,
                l.act_value,
                s,
                z,
                a.lo,
                a.hi,
                if l.edge {
                    " (edge layer, kept at 8 bits)"
                } else {
                    ""
                }
            )?;
            if let Some(e) = &l.error {
                writeln!(f, "{:<28} error vs float at its result: {e}", "")?;
            }
        }
        let weights: u64 = self.layers.iter().map(|l| l.weight_count).sum();
        if weights > 0 {
            let bits: u64 = self
                .layers
                .iter()
                .map(|l| l.weight_count * l.wbits as u64)
                .sum();
            writeln!(
                f,
                "average weight bits {:.3} over {weights} conv/gemm/matmul weights",
                bits as f64 / weights as f64
            )?;
        }
        if let Some(s) = &self.selection {
            writeln!(
                f,
                "bits chosen by {}: predicted error {:.3e} ({}, sum of the layers' sensitivities), measured {}; modelled: average weight bits {:.3}, weight bytes {:.0}, conv/gemm latency {:.4} ms{}",
                s.how,
                s.predicted,
                s.metric,
                s.measured.map_or("-".into(), |m| format!("{m:.3e}")),
                s.avg_bits,
                s.size_bytes,
                s.latency_ms,
                s.measured_latency_ms.map_or(String::new(), |ms| format!(
                    "; measured whole-model latency {ms:.4} ms (JIT, this machine)"
                ))
            )?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        if let Some(e) = &self.output_error {
            writeln!(f, "output error vs float {e}")?;
        }
        Ok(())
    }
}

/// The conv2d/gemm/matmul nodes of `m` still computing in f32 (their result spellings).
pub fn float_kernels(m: &Module) -> Vec<String> {
    m.nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv2d | Op::Gemm | Op::MatMul))
        .map(|n| m.value(n.result).spelling())
        .collect()
}

/// A kernel to quantize: node index, weight axis.
struct Kernel {
    node: usize,
    axis: usize,
}

/// A conv/gemm/matmul layer that [`quantize_model`] quantizes.
#[derive(Clone, Debug)]
pub struct QuantLayer {
    /// The node's index in the float module.
    pub node: usize,
    /// The layer's name (the key of `QuantOptions::layer_bits`).
    pub name: String,
    pub op: Op,
    /// The activation it reads (after data movement that commutes with quantization):
    /// the layers reading one activation share its bits.
    pub input: ValueId,
    pub weight_count: u64,
    pub out_channels: u64,
    pub macs: u64,
    /// Whether it can be binarized (`(1, 1)`).
    pub binarizable: bool,
}

/// The layers of `m` that [`quantize_model`] quantizes, in node order.
pub fn quant_layers(m: &Module) -> Result<Vec<QuantLayer>, String> {
    let mut out = Vec::new();
    for (i, n) in m.nodes.iter().enumerate() {
        if !matches!(n.op, Op::Conv2d | Op::Gemm | Op::MatMul) {
            continue;
        }
        let Some(axis) = kernel(m, n)? else { continue };
        let w = n.operands[1];
        let wshape = &m.ty(w).shape;
        let weight_count = m.ty(w).numel() as u64;
        let out_channels = wshape[axis] as u64;
        let binarizable = match m.const_data(w) {
            Some(ConstData::F32(wd)) => corrected_bias(m, n, wd, wshape, axis, 0.0)?.is_some(),
            _ => false,
        };
        out.push(QuantLayer {
            node: i,
            name: layer_name(m, n),
            op: n.op,
            input: source(m, n.operands[0]),
            weight_count,
            out_channels,
            macs: m.ty(n.result).numel() as u64 * weight_count / out_channels.max(1),
            binarizable,
        });
    }
    Ok(out)
}

/// The bias of binarized kernel `n` (weights `wd` of shape `wshape`, output channels
/// along `axis`) with the constant part of its input, `t * sum(w[m, ..])`, added; `None`
/// when the kernel cannot take it (a non-constant or oddly shaped bias, gemm with beta
/// other than 1, matmul without a bias operand).
fn corrected_bias(
    m: &Module,
    n: &Node,
    wd: &[f32],
    wshape: &[usize],
    axis: usize,
    t: f32,
) -> Result<Option<Vec<f32>>, String> {
    match n.op {
        Op::Conv2d => {}
        Op::Gemm if Attrs::new(Op::Gemm, &n.attrs).float("beta")? == 1.0 => {}
        _ => return Ok(None),
    }
    let c = wshape[axis];
    let inner: usize = wshape[axis + 1..].iter().product::<usize>().max(1);
    let mut sum = vec![0f64; c];
    for (i, &w) in wd.iter().enumerate() {
        sum[(i / inner) % c] += w as f64;
    }
    let old: Vec<f32> = match n.operands.get(2) {
        None => vec![0.0; c],
        Some(&b) => match m.const_data(b) {
            Some(ConstData::F32(v)) if v.len() == c => {
                let bshape = &m.ty(b).shape;
                // [M] for conv2d; [N] or [1, N] for gemm.
                let ok = match n.op {
                    Op::Conv2d => bshape.len() == 1,
                    _ => bshape.last() == Some(&c) && bshape.iter().product::<usize>() == c,
                };
                if !ok {
                    return Ok(None);
                }
                v.clone()
            }
            Some(ConstData::F32(v)) if v.len() == 1 => vec![v[0]; c],
            _ => return Ok(None),
        },
    };
    Ok(Some(
        old.iter()
            .zip(&sum)
            .map(|(&b, &s)| (b as f64 + t as f64 * s) as f32)
            .collect(),
    ))
}

fn kernel(m: &Module, n: &Node) -> Result<Option<usize>, String> {
    let w = match n.operands.get(1) {
        Some(&w) => w,
        None => return Ok(None),
    };
    let x = n.operands[0];
    if m.const_data(w).is_none() || m.ty(w).elem != ElemType::F32 || m.const_data(x).is_some() {
        return Ok(None);
    }
    let rank = m.ty(w).rank();
    Ok(match n.op {
        Op::Conv2d => Some(0),
        Op::Gemm => {
            let a = Attrs::new(Op::Gemm, &n.attrs);
            if a.bool("trans_a")? || a.float("alpha")? != 1.0 {
                None
            } else if a.bool("trans_b")? {
                Some(0)
            } else {
                Some(1)
            }
        }
        Op::MatMul if rank == 2 => Some(1),
        _ => None,
    })
}

fn layer_name(m: &Module, n: &Node) -> String {
    n.loc
        .clone()
        .unwrap_or_else(|| m.value(n.result).spelling())
}

/// For each kernel, the kernels whose results reach its input (walking back through
/// every other op's operands).
fn kernel_preds(m: &Module, kernels: &[Kernel]) -> Vec<Vec<usize>> {
    let at: HashMap<ValueId, usize> = kernels
        .iter()
        .enumerate()
        .map(|(k, ker)| (m.nodes[ker.node].result, k))
        .collect();
    kernels
        .iter()
        .map(|ker| {
            let mut found = std::collections::BTreeSet::new();
            let mut seen = std::collections::HashSet::new();
            let mut stack = vec![m.nodes[ker.node].operands[0]];
            while let Some(v) = stack.pop() {
                if !seen.insert(v) {
                    continue;
                }
                if let Some(&k) = at.get(&v) {
                    found.insert(k);
                    continue;
                }
                if let ValueDef::Node(n) = m.value(v).def {
                    stack.extend(m.node(n).operands.iter().copied());
                }
            }
            found.into_iter().collect()
        })
        .collect()
}

/// An activation in DQA's own form: its important channels (`mask`), the extra bits
/// `m`, and the largest code of the other channels' `N`-bit grid.
struct Dqa {
    mask: Vec<bool>,
    extra: u8,
    qmax: i64,
    /// The zero point of the other channels' `N`-bit codes.
    zq: i32,
}

/// Walks back from `v` through ops quantization commutes with.
pub(super) fn source(m: &Module, mut v: ValueId) -> ValueId {
    while let ValueDef::Node(p) = m.value(v).def {
        let n = m.node(p);
        if matches!(
            n.op,
            Op::MaxPool | Op::Reshape | Op::Flatten | Op::Transpose | Op::Squeeze | Op::Unsqueeze
        ) && m.ty(n.operands[0]).elem == ElemType::F32
        {
            v = n.operands[0];
        } else {
            break;
        }
    }
    v
}

/// Appends `dequantize(cast_T(binarize(x - t)))` to `out`, `T = q<i2 narrow, beta:0>`
/// (codes +-1, the form of a lowered bipolar quantizer); returns the dequantized value
/// and `T`.
fn binarized_input(out: &mut Module, x: ValueId, b: &BinaryAct) -> (ValueId, QuantType) {
    let name = out.value(x).name.clone();
    let shape = out.ty(x).shape.clone();
    let tn = out.fresh_name(&format!("{name}.t"));
    let t = out.add_const(tn, TensorType::f32(vec![1]), ConstData::F32(vec![b.t]));
    let sn = out.fresh_name(&format!("{name}.centered"));
    let centered = out.add_node(
        Op::Sub,
        vec![x, t],
        BTreeMap::new(),
        sn,
        TensorType::f32(shape.clone()),
    );
    let bn = out.fresh_name(&format!("{name}.b1"));
    let bits = out.add_node(
        Op::Binarize,
        vec![centered],
        BTreeMap::new(),
        bn,
        TensorType::new(ElemType::Bipolar, shape.clone()),
    );
    let qt = QuantType {
        storage: IntType::new(2, true),
        narrow: true,
        pow2: false,
        params: QuantParams::PerTensor {
            scale: b.beta,
            zero_point: 0,
        },
    };
    let mut ca = BTreeMap::new();
    ca.insert("rounding".to_string(), Attr::Enum("down".into()));
    let cn = out.fresh_name(&format!("{name}.q1"));
    let c = out.add_node(
        Op::Cast,
        vec![bits],
        ca,
        cn,
        TensorType::new(ElemType::Quant(qt.clone()), shape.clone()),
    );
    let dn = out.fresh_name(&format!("{name}.dq1"));
    let dq = out.add_node(
        Op::Dequantize,
        vec![c],
        BTreeMap::new(),
        dn,
        TensorType::f32(shape),
    );
    (dq, qt)
}

/// Rewrites float module `m` into QDQ form by `opts` with ranges from `stats`.
pub fn quantize_model(
    m: &Module,
    stats: &CalibStats,
    opts: &QuantOptions,
) -> Result<(Module, QuantReport), String> {
    opts.check()?;
    if let Some(n) = m.nodes.iter().find(|n| {
        matches!(
            n.op,
            Op::Quantize | Op::Dequantize | Op::FakeQuant | Op::Conv2dInt | Op::MatMulInt
        )
    }) {
        return Err(format!(
            "`{}` is already quantized ({} at {}); quantized models keep their bit-widths (--requantize turns a QDQ or QONNX model back into float so that --bits or --budget choose again)",
            m.name,
            n.op,
            layer_name(m, n)
        ));
    }
    let mut kernels = Vec::new();
    let mut notes = stats.warnings.clone();
    for (i, n) in m.nodes.iter().enumerate() {
        if matches!(n.op, Op::Conv2d | Op::Gemm | Op::MatMul) {
            match kernel(m, n)? {
                Some(axis) => kernels.push(Kernel { node: i, axis }),
                None => notes.push(format!(
                    "{} ({}) stays f32: it needs constant f32 weights{}",
                    layer_name(m, n),
                    n.op,
                    if n.op == Op::Gemm {
                        ", no transposed A and alpha = 1"
                    } else {
                        ""
                    }
                )),
            }
        }
    }
    if kernels.is_empty() {
        return Err(format!(
            "`{}` has no conv2d/gemm/matmul to quantize",
            m.name
        ));
    }
    if let Some(name) = opts.layer_bits.keys().find(|name| {
        !kernels
            .iter()
            .any(|k| layer_name(m, &m.nodes[k.node]) == **name)
    }) {
        return Err(format!(
            "the bit-width plan names layer {name}, which `{}` does not have (its conv/gemm/matmul layers: {})",
            m.name,
            kernels
                .iter()
                .map(|k| layer_name(m, &m.nodes[k.node]))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if opts.only_planned {
        kernels.retain(|k| {
            opts.layer_bits
                .contains_key(&layer_name(m, &m.nodes[k.node]))
        });
    }
    let nk = kernels.len();
    let planned = |k: usize| {
        opts.layer_bits
            .get(&layer_name(m, &m.nodes[kernels[k].node]))
    };
    let is_edge = |k: usize| planned(k).is_none() && opts.keep_edges && (k == 0 || k + 1 == nk);
    // Asked bits per layer: the plan's, else 8 at the edges, else the flags'.
    let asked: Vec<(u8, u8)> = (0..nk)
        .map(|k| match planned(k) {
            Some(&p) => p,
            None if is_edge(k) => (8, 8),
            None => (opts.wbits, opts.abits),
        })
        .collect();
    // Binarized layers (`--bits 1`, or `(1, 1)` in a plan): conv2d/gemm whose bias can
    // take the constant part of the binarized input; the others stay at 8 bits.
    let mut binary: Vec<bool> = vec![false; nk];
    for (k, ker) in kernels.iter().enumerate() {
        if asked[k] != (1, 1) {
            continue;
        }
        let n = &m.nodes[ker.node];
        let w = n.operands[1];
        let Some(ConstData::F32(wd)) = m.const_data(w) else {
            continue;
        };
        if corrected_bias(m, n, wd, &m.ty(w).shape, ker.axis, 0.0)?.is_some() {
            binary[k] = true;
        } else if planned(k).is_some() {
            return Err(format!(
                "the bit-width plan binarizes {} ({}), but only conv2d and gemm (beta = 1) with a constant per-channel bias or none can be binarized",
                layer_name(m, n),
                n.op
            ));
        } else {
            notes.push(format!(
                "{} ({}) stays at 8 bits: only conv2d and gemm (beta = 1) with a constant per-channel bias or none are binarized",
                layer_name(m, n),
                n.op
            ));
        }
    }
    // Activation points: source value -> bits (the most any consumer kernel asks). A
    // binarized layer binarizes the 8-bit codes of its input; a layer that asked to be
    // binarized but cannot be stays at 8 bits.
    let mut points: BTreeMap<ValueId, u8> = BTreeMap::new();
    let mut point_layers: BTreeMap<ValueId, Vec<(usize, u8)>> = BTreeMap::new();
    for (k, ker) in kernels.iter().enumerate() {
        let x = m.nodes[ker.node].operands[0];
        let bits = if asked[k].1 == 1 && asked[k].0 == 1 {
            8
        } else {
            asked[k].1
        };
        let e = points.entry(source(m, x)).or_insert(0);
        *e = (*e).max(bits);
        point_layers
            .entry(source(m, x))
            .or_default()
            .push((k, asked[k].1));
    }
    // A plan gives each activation one width: its readers must agree.
    for (v, ls) in &point_layers {
        let planned_bits: Vec<(usize, u8)> = ls
            .iter()
            .copied()
            .filter(|&(k, _)| planned(k).is_some())
            .collect();
        if let Some(&(k0, a0)) = planned_bits.first()
            && let Some(&(k1, a1)) = planned_bits.iter().find(|&&(_, a)| a != a0)
        {
            return Err(format!(
                "the bit-width plan gives activation {} {a0} bits at {} but {a1} bits at {}; the layers reading one activation share its bits",
                m.value(*v).spelling(),
                layer_name(m, &m.nodes[kernels[k0].node]),
                layer_name(m, &m.nodes[kernels[k1].node]),
            ));
        }
    }
    // Kernel outputs: a quantize after each (after its relu/clip when that is the only
    // user), at 8 bits unless it also feeds a kernel, so the kernel fuses into
    // `requantize`; except before a bias add (`bias_added`), where the f32-output form
    // (dequantize and add fused into the kernel) is both faster and closer to float.
    let users = m.users();
    // Where a kernel's result is quantized: after its relu/clip when that is the only
    // user; for the parts of a layer split by `--sq-ratio` (`sq.rs`), after the concat
    // joining them (directly or through slices), which the rewrite's
    // quantize-through-concat moves onto each part.
    let out_point = |n: &Node| {
        let r = n.result;
        let mut p = r;
        if let [u] = users[r.index()].as_slice() {
            let un = m.node(*u);
            if matches!(un.op, Op::Relu | Op::Clip) && !m.outputs.contains(&r) {
                p = un.result;
            }
        }
        let name = layer_name(m, n);
        let split = name.ends_with(super::sq::LOW) || name.ends_with(super::sq::HIGH);
        if !split || m.outputs.contains(&p) {
            return p;
        }
        let concat_of = |v: ValueId| match users[v.index()].as_slice() {
            [u] if m.node(*u).op == Op::Concat => Some(m.node(*u).result),
            _ => None,
        };
        let us = &users[p.index()];
        if let Some(c) = concat_of(p) {
            return c;
        }
        let via_slices: Vec<Option<ValueId>> = us
            .iter()
            .map(|&u| {
                let un = m.node(u);
                (un.op == Op::Slice && !m.outputs.contains(&un.result))
                    .then(|| concat_of(un.result))
                    .flatten()
            })
            .collect();
        match via_slices.first() {
            Some(&Some(c)) if via_slices.iter().all(|&x| x == Some(c)) => c,
            _ => p,
        }
    };
    // A result whose every user adds a constant to it (a linear layer's bias, as
    // exported `matmul` + `add`) and is no graph output stays f32: the integer kernel
    // dequantizes its accumulator and adds the bias in its epilogue, where a quantize
    // would round it to 8 bits only to dequantize it again before the add.
    let bias_added = |p: ValueId| {
        let us = &users[p.index()];
        !us.is_empty()
            && !m.outputs.contains(&p)
            && us.iter().all(|&u| {
                let un = m.node(u);
                un.op == Op::Add
                    && un.operands.len() == 2
                    && un
                        .operands
                        .iter()
                        .any(|&o| o != p && m.const_data(o).is_some())
                    && m.ty(un.result).elem == ElemType::F32
            })
    };
    // The two parts of a reader split by `--act-method dqa`'s important channels
    // (`important.rs`) stay f32 too: each part's sum is half of the layer's, and the
    // add of the two dequantized sums is the layer's result.
    let dqa_part = |n: &Node, p: ValueId| {
        let name = layer_name(m, n);
        (name.ends_with(super::important::IMP) || name.ends_with(super::important::REST))
            && !m.outputs.contains(&p)
            && matches!(users[p.index()].as_slice(), [u] if m.node(*u).op == Op::Add)
    };
    let mut out_points: Vec<ValueId> = Vec::new();
    let mut kept_f32 = 0usize;
    if opts.quantize_outputs {
        for ker in &kernels {
            let p = out_point(&m.nodes[ker.node]);
            if points.contains_key(&p) {
                continue;
            }
            if bias_added(p) || dqa_part(&m.nodes[ker.node], p) {
                kept_f32 += 1;
                continue;
            }
            if stats.get(m, p).is_none() {
                notes.push(format!(
                    "{} stays f32 after its integer kernel (no range for it)",
                    m.value(p).spelling()
                ));
                continue;
            }
            points.insert(p, 8);
            out_points.push(p);
        }
    }
    // A global average pool feeding a quantized value gets its input quantized too (at
    // 8 bits), so `int-pool` runs it on codes and the add or relu before it (a
    // ResNet's last residual block) becomes integer as well.
    let pooled: Vec<ValueId> = m
        .nodes
        .iter()
        .filter(|n| n.op == Op::GlobalAvgPool && points.contains_key(&n.result))
        .map(|n| source(m, n.operands[0]))
        .filter(|v| !points.contains_key(v) && stats.get(m, *v).is_some())
        .collect();
    for v in pooled {
        points.insert(v, 8);
    }
    let mut act_params: HashMap<ValueId, ActParams> = HashMap::new();
    for (&v, &bits) in &points {
        let st = stats.get(m, v).ok_or_else(|| match stats.source {
            RangeSource::BatchNorm { .. } => format!(
                "no data-free range for {} (no batch-norm statistics lead to it); give calibration data with --calib DATA.npz",
                m.value(v).spelling()
            ),
            RangeSource::Data(_) => format!(
                "the calibration statistics have no entry for {}; calibrate this module",
                m.value(v).spelling()
            ),
        })?;
        let p = choose_range(st, &stats.source, bits, opts.symmetric_acts, opts.pow2)
            .map_err(|e| format!("{}: {e}", m.value(v).spelling()))?;
        act_params.insert(v, p);
    }
    // DQA's important channels in DQA's own form (`important.rs`, `--dqa-form fused`):
    // the readers take it on the grid of step `s / 2^m` with `N + m` bits (its zero point
    // chosen at that step); it is quantized to a per-channel type, the important channels
    // at that step and the others at `s` (their `N`-bit codes), and one requantize puts
    // the others' codes on the fine grid (shifted left by `m`) with a clamp at their
    // largest code (`add_qdq` below).
    let mut fine: HashMap<ValueId, Dqa> = HashMap::new();
    if !opts.dqa_fine.is_empty() {
        let mx = opts.dqa_extra;
        for (&v, &bits) in &points {
            let name = m.value(v).spelling();
            let Some(imp) = opts.dqa_fine.get(&name) else {
                continue;
            };
            let chans = m.ty(v).shape.get(1).copied().unwrap_or(0);
            let p = act_params
                .get_mut(&v)
                .ok_or_else(|| format!("internal: no parameters for {name}"))?;
            if bits == opts.abits
                && bits + mx <= 8
                && let Some(st) = stats.get(m, v)
            {
                let frac = imp.len() as f64 / chans.max(1) as f64;
                *p = choose_range_dqa(
                    st,
                    &stats.source,
                    bits,
                    mx,
                    frac,
                    opts.symmetric_acts,
                    opts.pow2,
                )
                .map_err(|e| format!("{name}: {e}"))?;
            }
            let (scale, zp) = match p.ty.params {
                QuantParams::PerTensor { scale, zero_point } => (scale, zero_point),
                _ => continue,
            };
            if bits != opts.abits || bits + mx > 8 || p.ty.narrow || chans < 2 {
                notes.push(format!(
                    "--act-method dqa: {name} keeps one grid ({bits}-bit readers)"
                ));
                continue;
            }
            let coarse = p.ty.clone();
            let f = 1i32 << mx;
            let sf = scale / f as f32;
            p.ty.storage.bits = bits + mx;
            // The fine grid's zero point at its own step (a coarse one times 2^m would
            // clip up to 2^m - 1 fine steps below zero); the other channels' N-bit codes
            // keep theirs, `round(z_fine / 2^m)`.
            let zf = if p.ty.storage.signed || opts.symmetric_acts {
                zp << mx
            } else {
                ((-(p.lo.min(0.0) as f64) / sf as f64).round_ties_even() as i64)
                    .clamp(p.ty.qmin(), p.ty.qmax()) as i32
            };
            p.ty.params = QuantParams::PerTensor {
                scale: sf,
                zero_point: zf,
            };
            let mut mask = vec![false; chans];
            for &c in imp {
                if let Some(x) = mask.get_mut(c) {
                    *x = true;
                }
            }
            fine.insert(
                v,
                Dqa {
                    mask,
                    extra: mx,
                    qmax: coarse.qmax(),
                    zq: ((zf as f64) / f as f64).round_ties_even() as i32,
                },
            );
        }
    }
    // The two-level quantizers of the binarized layers' inputs.
    let mut bin_acts: HashMap<usize, BinaryAct> = HashMap::new();
    for (k, ker) in kernels.iter().enumerate() {
        if !binary[k] {
            continue;
        }
        let v = source(m, m.nodes[ker.node].operands[0]);
        let st = stats
            .get(m, v)
            .ok_or_else(|| format!("no statistics for {}", m.value(v).spelling()))?;
        let b = binary_act(m, v, st).map_err(|e| format!("{}: {e}", m.value(v).spelling()))?;
        bin_acts.insert(k, b);
    }

    // Weights, and output scales no finer than the kernel's accumulator step allows: the
    // bias is rounded to accumulator steps (`sx * sw`), so `fuse-int` only proves the
    // integer kernel within one output code when the output scale exceeds half of it.
    let mut weights = Vec::with_capacity(nk);
    let mut ternary = 0usize;
    for (k, ker) in kernels.iter().enumerate() {
        let node = &m.nodes[ker.node];
        let wbits = if binary[k] {
            1
        } else if asked[k] == (1, 1) {
            8
        } else {
            asked[k].0
        };
        let w = node.operands[1];
        let Some(ConstData::F32(wd)) = m.const_data(w) else {
            return Err(format!(
                "internal: weights of {} are not f32",
                layer_name(m, node)
            ));
        };
        // Binary weights (`sign(w)` times a per-channel mean of |w|) serve both binarized
        // layers and 1-bit weights under multi-bit activations (`(1, a)` in a plan).
        let (qt, codes) = if binary[k] || wbits == 1 {
            binarize_weights(wd, &m.ty(w).shape, ker.axis)
        } else if opts.ternary && wbits == 2 {
            ternary += 1;
            ternary_weights(wd, &m.ty(w).shape, ker.axis)
        } else {
            quantize_weights(wd, &m.ty(w).shape, ker.axis, wbits, opts.pow2)
        };
        let sw = qt.params.scales().iter().copied().fold(0f32, f32::max) as f64;
        let sx = match bin_acts.get(&k) {
            Some(b) => b.beta as f64,
            None => act_params[&source(m, node.operands[0])].ty.params.scales()[0] as f64,
        };
        let p = out_point(node);
        if let Some(ap) = act_params.get_mut(&p) {
            let min_scale = 0.75 * sx * sw;
            let s = ap.ty.params.scales()[0] as f64;
            if s < min_scale {
                let mut s2 = min_scale;
                if opts.pow2 {
                    s2 = 2f64.powi(s2.log2().ceil() as i32);
                }
                let zp = if ap.ty.storage.signed || opts.symmetric_acts {
                    0
                } else {
                    ((-(ap.lo.min(0.0) as f64) / s2).round_ties_even() as i64)
                        .clamp(ap.ty.qmin(), ap.ty.qmax()) as i32
                };
                ap.ty.params = QuantParams::PerTensor {
                    scale: s2 as f32,
                    zero_point: zp,
                };
                notes.push(format!(
                    "{}: output scale raised to {:.4e} (3/4 of the accumulator step of {}) so that it fuses",
                    m.value(p).spelling(),
                    s2,
                    layer_name(m, node)
                ));
            }
        }
        weights.push((wbits, qt, codes));
    }

    let mut out = m.clone();
    let old = std::mem::take(&mut out.nodes);
    let mut remap: HashMap<ValueId, ValueId> = HashMap::new();
    let mut layers = Vec::new();
    let ker_axis: Vec<usize> = kernels.iter().map(|k| k.axis).collect();
    let kernel_at: HashMap<usize, usize> = kernels
        .iter()
        .enumerate()
        .map(|(k, ker)| (ker.node, k))
        .collect();

    // In DQA's own form the kernels read the activation with the other channels'
    // codes rounded (through the data movement `source` walks); other users (a
    // residual add, a graph output) read the fine grid.
    let mut fine_of: HashMap<ValueId, ValueId> = HashMap::new();
    let add_qdq = |out: &mut Module,
                   v: ValueId,
                   p: &ActParams,
                   remap: &mut HashMap<ValueId, ValueId>,
                   fine_of: &mut HashMap<ValueId, ValueId>| {
        let name = out.value(v).name.clone();
        let shape = out.ty(v).shape.clone();
        let mut attrs = BTreeMap::new();
        attrs.insert("rounding".to_string(), Attr::Enum("half_even".into()));
        let dqa = fine.get(&v);
        let qdq = |out: &mut Module, x: ValueId, ty: &QuantType, tag: &str| {
            let qn = out.fresh_name(&format!("{name}.{tag}q"));
            let q = out.add_node(
                Op::Quantize,
                vec![x],
                attrs.clone(),
                qn,
                TensorType::new(ElemType::Quant(ty.clone()), shape.clone()),
            );
            let dn = out.fresh_name(&format!("{name}.{tag}dq"));
            out.add_node(
                Op::Dequantize,
                vec![q],
                BTreeMap::new(),
                dn,
                TensorType::f32(shape.clone()),
            )
        };
        let clip = |out: &mut Module, x: ValueId, max: f32| {
            let mut ca = BTreeMap::new();
            ca.insert("max".to_string(), Attr::Float(max));
            let cn = out.fresh_name(&format!("{name}.dqa_clip"));
            out.add_node(Op::Clip, vec![x], ca, cn, TensorType::f32(shape.clone()))
        };
        let dq = match (dqa, &p.ty.params) {
            (Some(d), QuantParams::PerTensor { scale, zero_point }) => {
                // The kernels' path: the important channels on the fine grid and the
                // others at their own step `s = 2^m s_f` (their `N`-bit codes, zero
                // point `zq`), each quantized once, then all on the fine grid (a shift
                // left by m of the others' codes), clipped at the others' largest code,
                // `(qmax_N - zq) s` (fine codes above it would leave `N` bits).
                let f = 1i32 << d.extra;
                let mut coarse = p.ty.clone();
                coarse.params = QuantParams::PerAxis {
                    axis: 1,
                    scales: d
                        .mask
                        .iter()
                        .map(|&i| if i { *scale } else { scale * f as f32 })
                        .collect(),
                    zero_points: d
                        .mask
                        .iter()
                        .map(|&i| if i { *zero_point } else { d.zq })
                        .collect(),
                };
                let hi = ((d.qmax - d.zq as i64) << d.extra) as f32 * scale;
                let c = qdq(out, v, &coarse, "dqa_n");
                let c = clip(out, c, hi);
                // Other users (a residual add, a graph output) read the fine grid.
                let fv = clip(out, v, hi);
                let fdq = qdq(out, fv, &p.ty, "");
                fine_of.insert(v, fdq);
                qdq(out, c, &p.ty, "dqa_")
            }
            _ => qdq(out, v, &p.ty, ""),
        };
        remap.insert(v, dq);
    };

    for &i in &m.inputs {
        if let Some(p) = act_params.get(&i) {
            add_qdq(&mut out, i, p, &mut remap, &mut fine_of);
        }
    }
    for (ni, mut node) in old.into_iter().enumerate() {
        let to_kernel = matches!(
            node.op,
            Op::Conv2d
                | Op::Gemm
                | Op::MatMul
                | Op::MaxPool
                | Op::Reshape
                | Op::Flatten
                | Op::Transpose
                | Op::Squeeze
                | Op::Unsqueeze
        );
        for o in &mut node.operands {
            if let Some(&f) = fine_of.get(o)
                && !to_kernel
            {
                *o = f;
            } else if let Some(&r) = remap.get(o) {
                *o = r;
            }
        }
        if let Some(&k) = kernel_at.get(&ni) {
            let edge = is_edge(k);
            let (wbits, qt, codes) = weights[k].clone();
            let w = node.operands[1];
            let wty = out.ty(w).clone();
            let sc = qt.params.scales();
            let w_scales = (
                sc.iter().copied().fold(f32::INFINITY, f32::min),
                sc.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            );
            let wname = out.value(w).name.clone();
            let cn = out.fresh_name(&format!("{wname}.q{wbits}"));
            let c = out.add_const(
                cn,
                TensorType::new(ElemType::Quant(qt), wty.shape.clone()),
                ConstData::Int(codes),
            );
            let dn = out.fresh_name(&format!("{wname}.dq"));
            let dq = out.add_node(Op::Dequantize, vec![c], BTreeMap::new(), dn, wty.clone());
            node.operands[1] = dq;
            let x = m.nodes[ni].operands[0];
            let src = source(m, x);
            let mut act = act_params[&src].clone();
            if let Some(b) = bin_acts.get(&k) {
                let Some(ConstData::F32(wd)) = m.const_data(w) else {
                    return Err(format!(
                        "internal: weights of {} are not f32",
                        layer_name(m, &node)
                    ));
                };
                let bias = corrected_bias(m, &m.nodes[ni], wd, &m.ty(w).shape, ker_axis[k], b.t)?
                    .ok_or_else(|| {
                    format!(
                        "internal: {} cannot take a corrected bias",
                        layer_name(m, &node)
                    )
                })?;
                let (xb, bty) = binarized_input(&mut out, node.operands[0], b);
                node.operands[0] = xb;
                let bshape = match node.operands.get(2) {
                    Some(&old) => out.ty(old).shape.clone(),
                    None => vec![bias.len()],
                };
                let bn = out.fresh_name(&format!("{}.bias1", layer_name(m, &node)));
                let bc = out.add_const(bn, TensorType::f32(bshape), ConstData::F32(bias));
                if node.operands.len() > 2 {
                    node.operands[2] = bc;
                } else {
                    node.operands.push(bc);
                }
                act = ActParams {
                    ty: bty,
                    lo: b.t - b.beta,
                    hi: b.t + b.beta,
                };
            }
            layers.push(LayerReport {
                name: layer_name(m, &node),
                op: node.op,
                wbits,
                abits: if bin_acts.contains_key(&k) {
                    1
                } else {
                    act.ty.storage.bits
                },
                w_scales,
                act,
                act_value: m.value(src).spelling(),
                edge,
                weight_count: wty.numel() as u64,
                output: node.result,
                error: None,
                preds: Vec::new(),
            });
        }
        let result = node.result;
        let id = NodeId(out.nodes.len() as u32);
        out.value_mut(result).def = ValueDef::Node(id);
        out.nodes.push(node);
        if let Some(p) = act_params.get(&result) {
            add_qdq(&mut out, result, p, &mut remap, &mut fine_of);
        }
    }
    for o in &mut out.outputs {
        if let Some(&r) = fine_of.get(o).or_else(|| remap.get(o)) {
            *o = r;
        }
    }
    if ternary > 0 {
        notes.push(format!(
            "--ternary: {ternary} layer(s) with ternary weights (TWN: code sign(w) where |w| > 0.7 mean|w| per output channel, else 0; the channel's scale the mean |w| above that threshold)"
        ));
    }
    if !out_points.is_empty() {
        notes.push(format!(
            "{} kernel output(s) quantized to 8 bits so that they fuse into requantize",
            out_points.len()
        ));
    }
    if kept_f32 > 0 {
        notes.push(format!(
            "{kept_f32} kernel output(s) stay f32 before their bias add (the integer kernel dequantizes its accumulator and adds the bias)"
        ));
    }
    let nbin = binary.iter().filter(|&&b| b).count();
    if nbin > 0 {
        notes.push(format!(
            "{nbin} layer(s) binarized into XNOR-popcount kernels: weights sign(w) with per-channel scale mean |w|, inputs sign(x - t) of their 8-bit codes (t and the scale by least squares)"
        ));
    }
    if !opts.layer_bits.is_empty() {
        notes.push(format!(
            "{} layer(s) take their bits from a per-layer plan",
            opts.layer_bits.len()
        ));
    } else if nbin == 0 && layers.iter().any(|l| l.wbits < 8 || l.abits < 8) {
        notes.push(
            "weights below 8 bits are stored bit-packed; activations below 8 bits are stored one code per byte; the backend picks each layer's kernel (pmaddubsw, bit-serial, pmaddwd) from its cost table"
                .into(),
        );
    }
    if opts.keep_edges && nk > 0 && (0..nk).any(is_edge) && (opts.wbits < 8 || opts.abits < 8) {
        notes.push(
            "the first and last layers stay at 8 bits (--keep-edges=false to lower them)".into(),
        );
    }
    if opts.pow2 {
        notes.push("scales are powers of two".into());
    }
    let preds = kernel_preds(m, &kernels);
    for (l, p) in layers.iter_mut().zip(preds) {
        l.preds = p;
    }
    let report = QuantReport {
        layers,
        source: stats.source.clone(),
        samples: stats.samples,
        notes,
        output_error: None,
        selection: None,
    };
    Ok((out, report))
}
