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

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use qcc_ir::Module;
use qcc_ir::interp::Tensor;

use super::binary::refine_binary_with;
use super::calibrate::{CalibStats, check_single_input, kl_logits, stream_samples};
use super::insert::{quant_layers, quantize_model};
use super::scheme::QuantOptions;
use super::tap::RunOptions;
use crate::backend::JitModel;

/// Weight bits the sensitivity covers (1 only with 1-bit activations: binarized).
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
}

/// The candidates measured for a layer: every (w, a) of [`WEIGHT_BITS`] x [`ACT_BITS`]
/// with w > 1, and (1, 1) where the layer can be binarized.
pub fn candidate_bits(binarizable: bool) -> Vec<(u8, u8)> {
    let mut v: Vec<(u8, u8)> = WEIGHT_BITS
        .iter()
        .filter(|&&w| w > 1)
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
            let qo = QuantOptions {
                layer_bits: [(l.name.clone(), (w, a))].into_iter().collect(),
                only_planned: true,
                quantize_outputs: false,
                keep_edges: false,
                symmetric_acts: opts.symmetric_acts,
                pow2: opts.pow2,
                ..QuantOptions::default()
            };
            let (mut q, mut report) = quantize_model(m, stats, &qo)
                .map_err(|e| format!("sensitivity of {} at w{w}a{a}: {e}", l.name))?;
            // 1- and 2-bit weights are fitted to the float results in the compiled plan
            // (`refine_binary`); measure them so.
            if w <= 2 {
                let run = RunOptions {
                    progress: false,
                    ..RunOptions::default()
                };
                refine_binary_with(m, &mut q, &mut report, npz, limit, &run, &mut Vec::new())
                    .map_err(|e| format!("sensitivity of {} at w{w}a{a}: {e}", l.name))?;
            }
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
        layers.push(LayerSensitivity {
            layer: l.name,
            node: m.value(m.nodes[l.node].result).name.clone(),
            op: l.op.name().to_string(),
            macs: l.macs,
            weight_count: l.weight_count,
            out_channels: l.out_channels,
            input: m.value(l.input).name.clone(),
            candidates,
        });
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
