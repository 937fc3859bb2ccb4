//! The quantization flags shared by `qcc compile`, `run` and `eval`, and the one call
//! that applies them to a loaded float module (calibrate, quantize, fuse).

use std::path::PathBuf;

use qcc_ir::Module;

use super::binary::{REFINE_SAMPLES, refine_binary};
use super::calibrate::{
    CalibMethod, CalibOptions, calibrate, compare_outputs, data_free, layer_errors,
};
use super::insert::{QuantReport, float_kernels, quantize_model};
use super::profile::load_stats;
use super::requantize::dequantize_model;
use super::scheme::QuantOptions;
use crate::passes::Pipeline;

/// Calibration samples the report's output error is measured on.
const ERROR_SAMPLES: usize = 32;

/// `--bits`, `--wbits`, `--abits`, `--calib`, `--profile`, `--calib-method`, `--keep-edges`, ...
#[derive(Clone, Debug, Default, clap::Args)]
pub struct QuantFlags {
    /// Quantize a float model to N bits (weights and activations, 2..8); 1 binarizes the
    /// middle conv/gemm layers into XNOR-popcount kernels (sign weights with per-channel
    /// mean |w| scales, sign of the centred input; edges stay at 8 bits).
    #[arg(long, value_name = "N")]
    pub bits: Option<u8>,
    /// Weight bits (2..8, or 1 together with --abits 1), overriding --bits for weights.
    #[arg(long, value_name = "N")]
    pub wbits: Option<u8>,
    /// Activation bits (1..8; 1 with --wbits 1 binarizes), overriding --bits for
    /// activations.
    #[arg(long, value_name = "N")]
    pub abits: Option<u8>,
    /// Calibration data (.npz with `x`, samples along the first axis); without it, ranges
    /// come from the model's batch-norm statistics.
    #[arg(long, value_name = "DATA.npz")]
    pub calib: Option<PathBuf>,
    /// A calibration profile written by `qcc calibrate` for this model, used instead of
    /// calibrating again (ranges are still chosen by --calib-method).
    #[arg(long, value_name = "FILE.qprof", conflicts_with_all = ["calib", "calib_limit"])]
    pub profile: Option<PathBuf>,
    /// How activation ranges are chosen from calibration data.
    #[arg(long, value_name = "METHOD", default_value = "minmax",
          value_parser = ["minmax", "percentile", "mse", "kl"])]
    pub calib_method: String,
    /// Use at most this many calibration samples.
    #[arg(long, value_name = "N")]
    pub calib_limit: Option<usize>,
    /// Keep the first and last conv/gemm at 8 bits.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub keep_edges: bool,
    /// Symmetric activations (zero point 0).
    #[arg(long)]
    pub symmetric: bool,
    /// Power-of-two scales.
    #[arg(long)]
    pub pow2: bool,
    /// Range of the model's input values for data-free quantization (default 0,1).
    #[arg(long, value_name = "LO,HI", value_parser = parse_range)]
    pub input_range: Option<(f32, f32)>,
    /// Turn a model that arrives quantized (QDQ, QONNX) back into float first, so that
    /// --bits or --budget choose its bit-widths again.
    #[arg(long)]
    pub requantize: bool,
}

fn parse_range(s: &str) -> Result<(f32, f32), String> {
    let bad = || format!("expected LO,HI with finite LO < HI (e.g. -1,1), found `{s}`");
    let (lo, hi) = s.split_once(',').ok_or_else(bad)?;
    let (lo, hi): (f32, f32) = (
        lo.trim().parse().map_err(|_| bad())?,
        hi.trim().parse().map_err(|_| bad())?,
    );
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(bad());
    }
    Ok((lo, hi))
}

impl QuantFlags {
    /// Whether any flag asks for quantization.
    pub fn requested(&self) -> bool {
        self.bits.is_some() || self.wbits.is_some() || self.abits.is_some()
    }

    /// The scheme the flags describe (`--bits` defaults to 8 when only one of
    /// `--wbits`/`--abits` is given).
    pub fn options(&self) -> QuantOptions {
        let b = self.bits.unwrap_or(8);
        QuantOptions {
            wbits: self.wbits.unwrap_or(b),
            abits: self.abits.unwrap_or(b),
            symmetric_acts: self.symmetric,
            pow2: self.pow2,
            keep_edges: self.keep_edges,
            ..Default::default()
        }
    }

    /// Calibrates (or derives data-free ranges), quantizes and fuses `m` into integer
    /// kernels; `None` when no quantization was asked for.
    pub fn apply(&self, m: &Module) -> Result<Option<(Module, QuantReport)>, String> {
        let requantized;
        let m = if self.requantize {
            if !self.requested() {
                return Err("--requantize needs --bits, --wbits, --abits or --budget to choose the new bit-widths".into());
            }
            requantized = dequantize_model(m)?;
            &requantized
        } else {
            m
        };
        if !self.requested() {
            if self.calib.is_some() {
                return Err("--calib needs --bits, --wbits or --abits".into());
            }
            if self.profile.is_some() {
                return Err("--profile needs --bits, --wbits or --abits".into());
            }
            return Ok(None);
        }
        let opts = self.options();
        opts.check()?;
        let copts = CalibOptions {
            method: self.calib_method.parse::<CalibMethod>()?,
            limit: self.calib_limit,
            input_range: self.input_range,
            ..Default::default()
        };
        let stats = match (&self.calib, &self.profile) {
            (Some(_), Some(_)) => return Err("give --calib or --profile, not both".into()),
            (Some(p), None) => calibrate(m, p, &copts)?,
            (None, Some(p)) => load_stats(p, m, copts.method)?,
            (None, None) => data_free(m, &copts)?,
        };
        let (mut q, mut report) = quantize_model(m, &stats, &opts)?;
        if let Some(p) = &self.calib
            && opts.binary()
        {
            let n = refine_binary(m, &mut q, &mut report, p, self.calib_limit)?;
            if n > 0 {
                report.notes.push(format!(
                    "{n} binarized layer(s) fitted per channel to the float results on {} calibration samples (gain into the weight scales, offset into the bias)",
                    self.calib_limit.unwrap_or(usize::MAX).min(REFINE_SAMPLES)
                ));
            }
        }
        // Per-layer errors are measured on the QDQ form, whose values keep their ids.
        if let Some(p) = &self.calib {
            let n = self.calib_limit.unwrap_or(usize::MAX).min(ERROR_SAMPLES);
            let outs: Vec<_> = report.layers.iter().map(|l| l.output).collect();
            let errs = layer_errors(m, &q, &outs, p, Some(n))?;
            for (l, e) in report.layers.iter_mut().zip(errs) {
                l.error = Some(e);
            }
        }
        Pipeline::from_names("quantize", &["rewrite", "dce"])
            .map_err(|e| e.to_string())?
            .run(&mut q, &mut |_| {})
            .map_err(|e| e.to_string())?;
        let left = float_kernels(&q);
        if !left.is_empty() {
            return Err(format!(
                "internal: these kernels did not become integer kernels: {}",
                left.join(", ")
            ));
        }
        // The output error against the float model, on the first calibration samples
        // (both run through the interpreter; a handful of samples keeps it cheap).
        if let Some(p) = &self.calib {
            let n = self.calib_limit.unwrap_or(usize::MAX).min(ERROR_SAMPLES);
            report.output_error = Some(compare_outputs(m, &q, p, Some(n))?);
        }
        Ok(Some((q, report)))
    }
}
