//! Per-layer sensitivity: the end-to-end output error when only one layer is quantized,
//! for every candidate bit-width of every conv/gemm/matmul layer.
//!
//! For each layer and candidate `(w, a)`, [`quantize_model`] quantizes that layer alone
//! (`QuantOptions::only_planned`: its weights to `w` bits, its input activation to `a`
//! bits, or both binarized for `(1, 1)`; every other layer stays f32). The QDQ module
//! runs on the JIT over the calibration samples and its first output is compared with
//! the float model's: KL divergence of the softmax outputs for classifiers (a `[1, C]`
//! output), mean squared error otherwise (`--metric`). The errors are the additive model
//! the budget solver minimises (`budget.rs`); the chosen plan's measured error is
//! reported beside its prediction.
//!
//! Compiling and running the whole QDQ module per candidate costs `layers x candidates`
//! full compiles and `layers x candidates x samples` full runs. A candidate changes the
//! float module in two places only: the layer itself (its weights, its binarized input)
//! and the activations it quantizes (`quantize -> dequantize` right after their
//! producer, read by every user). So the float module is cut into segments
//! (`segments.rs`) after every layer, every activation a candidate may quantize and the
//! first output, and compiled once. Per layer, the float prefix up to its first
//! quantized activation runs once per sample; per candidate, the quantized activations
//! are replaced in the stored values by their `dequantize(quantize(..))` (cut from the
//! candidate's module and compiled alone), the segment holding the layer is cut from the
//! candidate's module and compiled alone, and the float segments after it finish the
//! run. A candidate whose module quantizes anything else is measured whole.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use qcc_ir::Module;
use qcc_ir::interp::Tensor;

use super::binary::refine_binary_with;
use qcc_ir::interp::TensorData;
use qcc_ir::{Op, ValueDef, ValueId};

use super::calibrate::{
    CalibStats, as_input, check_single_input, kl_logits, sample_count, stream_samples,
};
use super::insert::{QuantLayer, quant_layers, quantize_model};
use super::scheme::QuantOptions;
use super::segments::{Chain, Compacted, State, shell};
use super::tap::{RunOptions, Tapped, progress_bar};
use crate::backend::JitModel;

/// Weight bits the sensitivity covers (1-bit weights with every activation width, and
/// with 1-bit activations where the layer binarizes).
pub const WEIGHT_BITS: [u8; 5] = [1, 2, 3, 4, 8];
/// Activation bits the sensitivity covers (besides binarized).
pub const ACT_BITS: [u8; 4] = [2, 3, 4, 8];
/// Calibration samples the sensitivity is measured on unless `--calib-limit` says fewer.
pub const SENS_SAMPLES: usize = 64;

/// What the output error measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Mean KL(softmax(float) || softmax(quantized)) of the first output.
    Kl,
    /// Mean squared difference of the first output's elements.
    Mse,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Kl => "kl",
            Metric::Mse => "mse",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Metric::Kl => "KL of the softmax outputs",
            Metric::Mse => "MSE of the outputs",
        }
    }

    /// The default for `m`: KL for a classifier (first output `[1, C]`, C > 1), else MSE.
    pub fn default_for(m: &Module) -> Metric {
        match m.outputs.first().map(|&o| m.ty(o).shape.as_slice()) {
            Some([1, c]) if *c > 1 => Metric::Kl,
            _ => Metric::Mse,
        }
    }

    /// The error of `quant` against `float` (one sample's first outputs).
    pub fn error(self, float: &[f32], quant: &[f32]) -> f64 {
        match self {
            Metric::Kl => kl_logits(float, quant),
            Metric::Mse => {
                float
                    .iter()
                    .zip(quant)
                    .map(|(&a, &b)| {
                        let d = a as f64 - b as f64;
                        d * d
                    })
                    .sum::<f64>()
                    / float.len().max(1) as f64
            }
        }
    }
}

impl FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Metric, String> {
        match s {
            "kl" => Ok(Metric::Kl),
            "mse" => Ok(Metric::Mse),
            _ => Err(format!("--metric {s}: use kl (classifiers) or mse")),
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One candidate of a layer and its measured error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub wbits: u8,
    pub abits: u8,
    pub error: f64,
}

/// The sensitivity of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSensitivity {
    /// The layer's name (the quantization report's and the plan's key).
    pub layer: String,
    /// The node's result value name.
    pub node: String,
    pub op: String,
    pub macs: u64,
    pub weight_count: u64,
    pub out_channels: u64,
    /// The activation it reads (its value name): readers of one activation share bits.
    pub input: String,
    pub candidates: Vec<Candidate>,
}

/// Sensitivity of every layer of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Sensitivity {
    pub metric: Metric,
    pub samples: usize,
    pub layers: Vec<LayerSensitivity>,
}

impl fmt::Display for Sensitivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sensitivity ({}, on {} samples): output error when only that layer is quantized",
            self.metric.describe(),
            self.samples
        )?;
        for l in &self.layers {
            let c: Vec<String> = l
                .candidates
                .iter()
                .map(|c| format!("w{}a{} {:.2e}", c.wbits, c.abits, c.error))
                .collect();
            writeln!(f, "  {:<28} {}", l.layer, c.join("  "))?;
        }
        Ok(())
    }
}

/// Options of [`measure_sensitivity`].
#[derive(Clone, Debug, Default)]
pub struct SensOptions {
    /// The error measure; `None`: [`Metric::default_for`] the model.
    pub metric: Option<Metric>,
    pub symmetric_acts: bool,
    pub pow2: bool,
    /// The engine (JIT, or the interpreter as the oracle) and the progress bar.
    pub run: RunOptions,
    /// Compile and run every candidate's whole module instead of the segments (the
    /// reference the segmented measurement is tested against; slow).
    pub whole: bool,
}

/// The candidates measured for a layer: every (w, a) of [`WEIGHT_BITS`] x [`ACT_BITS`]
/// (1-bit weights are `sign(w)` times a per-channel scale, under multi-bit activations),
/// and (1, 1) where the layer can be binarized.
pub fn candidate_bits(binarizable: bool) -> Vec<(u8, u8)> {
    let mut v: Vec<(u8, u8)> = WEIGHT_BITS
        .iter()
        .flat_map(|&w| ACT_BITS.iter().map(move |&a| (w, a)))
        .collect();
    if binarizable {
        v.push((1, 1));
    }
    v
}

fn jit_outputs(jit: &JitModel, xs: &[Tensor]) -> Result<Vec<Vec<f32>>, String> {
    xs.iter()
        .map(|x| {
            let out = jit
                .run(std::slice::from_ref(x))
                .map_err(|e| e.to_string())?;
            out.first()
                .and_then(|t| t.as_f32())
                .map(|d| d.to_vec())
                .ok_or_else(|| "the model's first output is not f32".to_string())
        })
        .collect()
}

/// Measures the sensitivity of every layer of float module `m` (statistics `stats`) on
/// the first `limit` (default [`SENS_SAMPLES`]) samples of `npz`.
pub fn measure_sensitivity(
    m: &Module,
    stats: &CalibStats,
    npz: &Path,
    limit: Option<usize>,
    opts: &SensOptions,
) -> Result<Sensitivity, String> {
    if opts.whole {
        measure_whole(m, stats, npz, limit, opts)
    } else {
        measure_segmented(m, stats, npz, limit, opts)
    }
}

/// The QDQ module of `m` with only layer `l` quantized at `(w, a)`.
fn candidate(
    m: &Module,
    stats: &CalibStats,
    l: &QuantLayer,
    (w, a): (u8, u8),
    opts: &SensOptions,
    npz: &Path,
    limit: Option<usize>,
) -> Result<Module, String> {
    let qo = QuantOptions {
        layer_bits: [(l.name.clone(), (w, a))].into_iter().collect(),
        only_planned: true,
        quantize_outputs: false,
        keep_edges: false,
        symmetric_acts: opts.symmetric_acts,
        pow2: opts.pow2,
        ..QuantOptions::default()
    };
    let what = |e: String| format!("sensitivity of {} at w{w}a{a}: {e}", l.name);
    let (mut q, mut report) = quantize_model(m, stats, &qo).map_err(what)?;
    // 1- and 2-bit weights are fitted to the float results in the compiled plan
    // (`refine_binary`); measure them so.
    if w <= 2 {
        let run = RunOptions {
            progress: false,
            ..opts.run
        };
        refine_binary_with(m, &mut q, &mut report, npz, limit, &run, &mut Vec::new())
            .map_err(what)?;
    }
    Ok(q)
}

fn layer_entry(m: &Module, l: &QuantLayer, candidates: Vec<Candidate>) -> LayerSensitivity {
    LayerSensitivity {
        layer: l.name.clone(),
        node: m.value(m.nodes[l.node].result).name.clone(),
        op: l.op.name().to_string(),
        macs: l.macs,
        weight_count: l.weight_count,
        out_channels: l.out_channels,
        input: m.value(l.input).name.clone(),
        candidates,
    }
}

/// The activations candidate module `q` (made from `m`) quantizes: per value of `m`,
/// the `dequantize` every user of it reads in `q`.
fn quantized_values(m: &Module, q: &Module) -> Vec<(ValueId, ValueId)> {
    let users = q.users();
    q.nodes
        .iter()
        .filter(|n| n.op == Op::Quantize && n.operands[0].index() < m.values.len())
        .filter_map(|n| {
            users[n.result.index()]
                .iter()
                .map(|&u| q.node(u))
                .find(|u| u.op == Op::Dequantize)
                .map(|d| (n.operands[0], d.result))
        })
        .collect()
}

/// One candidate, prepared to run on the segments: the activations it quantizes (with
/// their `quantize -> dequantize`, compiled alone) and its segment holding the layer.
struct Prepared {
    bits: (u8, u8),
    /// Per quantized activation: the value, the segment after which it exists (`None`:
    /// a graph input) and the compiled quantizer.
    acts: Vec<(ValueId, Option<usize>, Tapped<'static>)>,
    /// The layer's segment of the candidate's module.
    layer: Tapped<'static>,
}

fn measure_segmented(
    m: &Module,
    stats: &CalibStats,
    npz: &Path,
    limit: Option<usize>,
    opts: &SensOptions,
) -> Result<Sensitivity, String> {
    let input = check_single_input(m)?;
    let metric = opts.metric.unwrap_or_else(|| Metric::default_for(m));
    let limit = Some(limit.unwrap_or(SENS_SAMPLES));
    let n = sample_count(npz, limit)?;
    if n == 0 {
        return Err(format!("{}: `x` holds no samples", npz.display()));
    }
    let layers = quant_layers(m)?;
    let out_v = *m
        .outputs
        .first()
        .ok_or_else(|| format!("`{}` has no outputs", m.name))?;
    let node_of = |v: ValueId| match m.value(v).def {
        ValueDef::Node(id) => Some(id.index()),
        _ => None,
    };
    if node_of(out_v).is_none() {
        return measure_whole(m, stats, npz, limit, opts);
    }
    // Cuts: every layer's result, every activation a candidate may quantize (the
    // layers' inputs, and the inputs of global average pools, which the quantizer
    // quantizes with a quantized result) and the first output.
    let mut ends: Vec<ValueId> = layers.iter().map(|l| m.nodes[l.node].result).collect();
    ends.extend(layers.iter().map(|l| l.input));
    ends.extend(
        m.nodes
            .iter()
            .filter(|n| n.op == Op::GlobalAvgPool)
            .map(|n| super::insert::source(m, n.operands[0])),
    );
    ends.push(out_v);
    ends.retain(|&v| node_of(v).is_some());
    ends.sort_by_key(|&v| node_of(v));
    ends.dedup();
    let seg_of = |v: ValueId| ends.iter().position(|&e| e == v);
    let out_seg = seg_of(out_v).expect("the output is a cut");
    let what = "the sensitivity analysis";
    let chain = Chain::new(m, &ends, opts.run.engine, what)?;
    // A part the backend cannot compile runs on the interpreter: right, but slow.
    let mut noted = false;
    let mut note = |n: &Option<String>| {
        if let Some(n) = n
            && !noted
        {
            eprintln!("note: {n}");
            noted = true;
        }
    };
    note(&chain.note);
    let as_f32 = |t: Tensor| match t.data {
        TensorData::F32(v) => Ok(v),
        TensorData::Int(_) => Err("the model's first output is not f32".to_string()),
    };
    // The float model's first output per sample.
    let mut reference: Vec<Vec<f32>> = Vec::with_capacity(n);
    stream_samples(npz, limit, 64, &mut |i, x| {
        let x = as_input(m, input, i, x)?;
        let mut s = chain.start(m, vec![x]);
        for k in 0..out_seg {
            chain.run(k, &mut s)?;
        }
        reference.push(as_f32(chain.run(out_seg, &mut s)?)?);
        Ok(())
    })?;
    let pb = progress_bar(opts.run.progress, n * layers.len(), "measuring sensitivity");
    let mut result = Vec::with_capacity(layers.len());
    for l in &layers {
        let k = seg_of(m.nodes[l.node].result).expect("a layer is a cut");
        let mut prepared: Vec<Prepared> = Vec::new();
        let mut whole: Vec<((u8, u8), JitModel)> = Vec::new();
        for (w, a) in candidate_bits(l.binarizable) {
            let q = candidate(m, stats, l, (w, a), opts, npz, limit)?;
            let mut acts = Vec::new();
            let mut cut = true;
            for (v, dq) in quantized_values(m, &q) {
                let after = match m.value(v).def {
                    ValueDef::Input => None,
                    _ => match seg_of(v) {
                        Some(p) if p < k => Some(p),
                        _ => {
                            cut = false;
                            break;
                        }
                    },
                };
                let fq = Tapped::owned(
                    shell(&q, &[v], &[dq])?.compacted(),
                    &[],
                    opts.run.engine,
                    what,
                );
                note(&fq.note);
                acts.push((v, after, fq));
            }
            if !cut || k > out_seg {
                let jit = JitModel::new(&q)
                    .map_err(|e| format!("sensitivity of {} at w{w}a{a}: {e}", l.name))?;
                whole.push(((w, a), jit));
                continue;
            }
            let (ins, outs) = chain.segment_io(k);
            let layer = Tapped::owned(
                shell(&q, ins, outs)?.compacted(),
                &[],
                opts.run.engine,
                what,
            );
            note(&layer.note);
            prepared.push(Prepared {
                bits: (w, a),
                acts,
                layer,
            });
        }
        // Candidates start after the earliest segment producing a quantized activation.
        let start = prepared
            .iter()
            .flat_map(|p| p.acts.iter().map(|a| a.1.map_or(0, |s| s + 1)))
            .min()
            .unwrap_or(k)
            .min(k);
        let mut errs = vec![0f64; prepared.len()];
        let mut werrs = vec![0f64; whole.len()];
        let mut i = 0;
        stream_samples(npz, limit, 64, &mut |si, x| {
            let x = as_input(m, input, si, x)?;
            for ((_, jit), e) in whole.iter().zip(werrs.iter_mut()) {
                let out = jit
                    .run(std::slice::from_ref(&x))
                    .map_err(|e| e.to_string())?;
                let q = out
                    .first()
                    .and_then(|t| t.as_f32())
                    .ok_or("the model's first output is not f32")?;
                *e += metric.error(&reference[i], q);
            }
            let mut s = chain.start(m, vec![x]);
            for j in 0..start {
                chain.run(j, &mut s)?;
            }
            for (p, e) in prepared.iter().zip(errs.iter_mut()) {
                let mut cs: State = s.clone();
                let quantize = |cs: &mut State, seg: Option<usize>| -> Result<(), String> {
                    for (v, after, fq) in &p.acts {
                        if *after == seg
                            && let Some(t) = cs.get_mut(v)
                        {
                            let out = fq.run(std::slice::from_ref(t), &mut |_, _, _| {})?;
                            *t = out
                                .into_iter()
                                .next()
                                .ok_or("internal: no quantized value")?;
                        }
                    }
                    Ok(())
                };
                if start == 0 {
                    quantize(&mut cs, None)?;
                }
                for j in start..=out_seg {
                    if j > 0 {
                        quantize(&mut cs, Some(j - 1))?;
                    }
                    let y = if j == k {
                        chain.run_with(j, &p.layer, &mut cs)?
                    } else {
                        chain.run(j, &mut cs)?
                    };
                    if j == out_seg {
                        *e += metric.error(&reference[i], &as_f32(y)?);
                    }
                }
            }
            i += 1;
            pb.inc(1);
            Ok(())
        })?;
        let mut candidates: Vec<Candidate> = prepared
            .iter()
            .zip(&errs)
            .map(|(p, e)| (p.bits, *e))
            .chain(whole.iter().map(|w| w.0).zip(werrs.iter().copied()))
            .map(|((wbits, abits), e)| Candidate {
                wbits,
                abits,
                error: e / n as f64,
            })
            .collect();
        let order = candidate_bits(l.binarizable);
        candidates.sort_by_key(|c| order.iter().position(|&b| b == (c.wbits, c.abits)));
        result.push(layer_entry(m, l, candidates));
    }
    pb.finish_and_clear();
    Ok(Sensitivity {
        metric,
        samples: n,
        layers: result,
    })
}

/// [`measure_sensitivity`] by compiling every candidate's whole module (`opts.whole`).
fn measure_whole(
    m: &Module,
    stats: &CalibStats,
    npz: &Path,
    limit: Option<usize>,
    opts: &SensOptions,
) -> Result<Sensitivity, String> {
    let input = check_single_input(m)?;
    let shape = m.ty(input).shape.clone();
    let metric = opts.metric.unwrap_or_else(|| Metric::default_for(m));
    let mut xs = Vec::new();
    stream_samples(npz, Some(limit.unwrap_or(SENS_SAMPLES)), 64, &mut |_, x| {
        xs.push(Tensor {
            shape: shape.clone(),
            data: x.data,
        });
        Ok(())
    })?;
    if xs.is_empty() {
        return Err(format!("{}: `x` holds no samples", npz.display()));
    }
    let float = JitModel::new(m).map_err(|e| format!("sensitivity: the float model: {e}"))?;
    let reference = jit_outputs(&float, &xs)?;
    let mut layers = Vec::new();
    for l in quant_layers(m)? {
        let mut candidates = Vec::new();
        for (w, a) in candidate_bits(l.binarizable) {
            let q = candidate(m, stats, &l, (w, a), opts, npz, limit)?;
            let jit = JitModel::new(&q)
                .map_err(|e| format!("sensitivity of {} at w{w}a{a}: {e}", l.name))?;
            let outs = jit_outputs(&jit, &xs)?;
            let error = reference
                .iter()
                .zip(&outs)
                .map(|(f, q)| metric.error(f, q))
                .sum::<f64>()
                / xs.len() as f64;
            candidates.push(Candidate {
                wbits: w,
                abits: a,
                error,
            });
        }
        layers.push(layer_entry(m, &l, candidates));
    }
    Ok(Sensitivity {
        metric,
        samples: xs.len(),
        layers,
    })
}

/// The error `metric` of quantized `q` against float `m` (first outputs, both on the
/// JIT) over the first `limit` samples of `npz`: the measured error of a chosen plan.
pub fn measured_error(
    m: &Module,
    q: &Module,
    npz: &Path,
    limit: Option<usize>,
    metric: Metric,
) -> Result<f64, String> {
    let input = check_single_input(m)?;
    let shape = m.ty(input).shape.clone();
    let float = JitModel::new(m).map_err(|e| format!("measured error: the float model: {e}"))?;
    let quant =
        JitModel::new(q).map_err(|e| format!("measured error: the quantized model: {e}"))?;
    let (mut sum, mut n) = (0f64, 0usize);
    stream_samples(npz, limit, 64, &mut |_, x| {
        let x = Tensor {
            shape: shape.clone(),
            data: x.data,
        };
        let xs = std::slice::from_ref(&x);
        let (a, b) = (jit_outputs(&float, xs)?, jit_outputs(&quant, xs)?);
        sum += metric.error(&a[0], &b[0]);
        n += 1;
        Ok(())
    })?;
    Ok(sum / n.max(1) as f64)
}
