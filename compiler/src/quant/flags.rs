//! The quantization flags shared by `qcc compile`, `run` and `eval`, and the one call
//! that applies them to a loaded float module (calibrate, quantize, fuse).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use qcc_ir::{Module, Op};

use super::binary::{REFINE_SAMPLES, refine_layers_with};
use super::budget::{AttentionOptions, Budget, BudgetTerm, Problem, solve_attention, solve_exact};
use super::calibrate::CalibStats;
use super::calibrate::{CalibMethod, CalibOptions, calibrate, data_free, measure_errors};
use super::choice::{extract_plan, fusable_candidates};
use super::equalize::equalize_activations;
use super::important::{ImportantOptions, Rank, split_important};
use super::insert::Selection;
use super::insert::{QuantReport, float_kernels, quant_layers, quantize_model};
use super::profile::Profile;
use super::profile::load_stats;
use super::qil::qil_intervals;
use super::requantize::{dequantize_model, is_quantized};
use super::scheme::QuantOptions;
use super::sensitivity::{
    Metric, SENS_SAMPLES, SensOptions, Sensitivity, measure_sensitivity, measured_error,
};
use super::sequential::{ActCalib, SEQUENTIAL_SAMPLES, sequential_weights};
use super::sq::{Pick, SqOptions, SqPlan};
use super::tap::RunOptions;
use crate::backend::costs::CostTarget;
use crate::passes::Pipeline;
use crate::rewrite::Limits;

/// How many times a latency budget is chosen and measured before giving up.
const LATENCY_TRIES: usize = 4;
/// Runs of the compiled plan whose best time is its measured latency.
const LATENCY_RUNS: usize = 30;

/// Best time (ms) of `LATENCY_RUNS` calls of `q` compiled for this machine (JIT), on an
/// input of `m`'s shape filled with 0.5.
fn measure_latency_ms(m: &Module, q: &Module) -> Result<f64, String> {
    let input = super::calibrate::check_single_input(m)?;
    let ty = m.ty(input);
    let x = qcc_ir::interp::Tensor::f32(ty.shape.clone(), vec![0.5; ty.numel()]);
    let jit = crate::backend::JitModel::new(q).map_err(|e| format!("timing the plan: {e}"))?;
    let (_, t) = jit
        .run_timed(std::slice::from_ref(&x), LATENCY_RUNS)
        .map_err(|e| format!("timing the plan: {e}"))?;
    Ok(t.as_secs_f64() * 1e3)
}

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
    /// Weight bits (1..8; 1 is sign(w) times a per-channel scale, and with --abits 1 the
    /// layers binarize), overriding --bits for weights.
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
          value_parser = ["minmax", "percentile", "mse", "kl", "qil"])]
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
    /// Power-of-two scales, so every requantize is a shift (an activation's scale is
    /// its range's step rounded up, or down where that quantizes its histogram with less
    /// squared error).
    #[arg(long)]
    pub pow2: bool,
    /// 2-bit weights by the rule of Ternary Weight Networks (threshold 0.7 mean|w|, scale
    /// the mean |w| above it, per channel); needs --wbits 2.
    #[arg(long)]
    pub ternary: bool,
    /// Quantize the weights bottom-up, each layer against the input correlation it sees
    /// with the layers below it already quantized, rounding with error feedback (the
    /// compile-time counterpart of BiTAT; GPTQ-style); needs --calib.
    #[arg(long)]
    pub sequential: bool,
    /// Stochastic quantization (SQ) per filter: in every conv/gemm layer between the
    /// edges, this fraction (0 < R <= 1) of the filters takes the low width (--wbits, or
    /// --bits), drawn by a fixed-seed roulette favouring the filters that quantize with
    /// the least error, in stages 0.5, 0.75, 0.875, 1 up to R with the weights re-fitted
    /// on the calibration data after each (--sq-refit); the other filters keep --sq-high
    /// bits. Needs --calib.
    #[arg(long, value_name = "R")]
    pub sq_ratio: Option<f64>,
    /// Weight bits of the filters --sq-ratio leaves out of the low group (default 8; at
    /// least the low width).
    #[arg(long, value_name = "B")]
    pub sq_high: Option<u8>,
    /// How --sq-ratio picks the low filters: `roulette` (SQ) or `index` (the first
    /// filters of each layer, in one stage, with only the fit every 1- or 2-bit layer
    /// gets: the same split without SQ's choice, for comparison).
    #[arg(long, value_name = "HOW", value_parser = ["roulette", "index"])]
    pub sq_pick: Option<String>,
    /// How --sq-ratio re-fits the weights after each stage on the calibration data:
    /// `feedback` (default: every layer bottom-up, its float weights least-squares on the
    /// inputs the quantized layers below give it, then rounded with error feedback, the
    /// pass of --sequential) or `gain` (only each low filter's scale and bias).
    #[arg(long, value_name = "HOW", value_parser = ["feedback", "gain"])]
    pub sq_refit: Option<String>,
    /// How activations are scaled: one scale per tensor, or `dqa`: per channel, folded
    /// into the weights of the layers around each activation where the ops between
    /// allow (needs --calib).
    #[arg(long, value_name = "METHOD", default_value = "per-tensor",
          value_parser = ["per-tensor", "dqa"])]
    pub act_method: String,
    /// With --act-method dqa: the fraction of each activation's channels (0 <= r < 1)
    /// that gets --dqa-extra-bits more bits, its readers split in two layers (0 turns
    /// it off; default 0.4).
    #[arg(long, value_name = "R")]
    pub dqa_ratio: Option<f64>,
    /// With --act-method dqa: the extra bits m of the important channels (1..=7; at
    /// most 8 bits in all; default 3).
    #[arg(long, value_name = "M")]
    pub dqa_extra_bits: Option<u8>,
    /// With --act-method dqa: how the important channels are ranked, `greedy` (on the
    /// readers' output error from the channels' quantization noise) or `energy` (the
    /// channels' mean square; default greedy).
    #[arg(long, value_name = "HOW", value_parser = ["greedy", "energy"])]
    pub dqa_rank: Option<String>,
    /// With --act-method dqa: how the important channels are computed, `fused`
    /// (default: DQA's own form, the activation on the (N+m)-bit grid with the other
    /// channels' N-bit codes shifted onto it, one kernel per reader) or `split`
    /// (each reader split along its input channels into an N+m-bit and an N-bit layer).
    #[arg(long, value_name = "FORM", value_parser = ["fused", "split"])]
    pub dqa_form: Option<String>,
    /// With --act-method dqa: how results are requantized, `shift` (default: every scale
    /// a power of two, so requantizing is a shift with no multiply, as DQA does; implies
    /// --pow2) or `multiply` (free scales, a fixed-point multiply per requantize).
    #[arg(long, value_name = "HOW", value_parser = ["shift", "multiply"])]
    pub dqa_requant: Option<String>,
    /// Range of the model's input values for data-free quantization (default 0,1).
    #[arg(long, value_name = "LO,HI", value_parser = parse_range)]
    pub input_range: Option<(f32, f32)>,
    /// Turn a model that arrives quantized (QDQ, QONNX) back into float first, so that
    /// --bits or --budget choose its bit-widths again.
    #[arg(long)]
    pub requantize: bool,
    /// Choose each conv/gemm/matmul layer's bits under a budget, from each layer's
    /// measured sensitivity (needs --calib, or a --profile written by `qcc calibrate
    /// --sensitivity`): avg-bits=X (average weight bits, edges included), size=N[KB|MB]
    /// (weight bytes), latency=Tms (modelled from the target's cost table);
    /// comma-separated terms are all met.
    #[arg(long, value_name = "SPEC", value_parser = parse_budget)]
    pub budget: Option<Budget>,
    /// How --budget chooses: `exact` (integer program, least summed error) or
    /// `attention` (DQA-style annealed softmax attention over each layer's candidates).
    #[arg(long, value_name = "METHOD", default_value = "exact",
          value_parser = ["exact", "attention"])]
    pub select: String,
    /// The output error the sensitivity measures: kl (softmax outputs of a classifier)
    /// or mse; default kl for a [1, C] output, else mse.
    #[arg(long, value_name = "METRIC", value_parser = ["kl", "mse"])]
    pub metric: Option<String>,
    /// No progress bars (they are drawn only on a terminal anyway).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Per-layer (weight, activation) bits by layer name.
type LayerBits = BTreeMap<String, (u8, u8)>;

fn parse_budget(s: &str) -> Result<Budget, String> {
    s.parse()
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
    /// `--calib-method qil`: intervals searched against the output error.
    pub fn qil(&self) -> bool {
        self.calib_method == "qil"
    }

    /// Power-of-two scales: `--pow2`, or DQA's shift requantization.
    pub fn pow2(&self) -> bool {
        self.pow2 || (self.act_method == "dqa" && self.dqa_requant.as_deref() != Some("multiply"))
    }

    /// Whether the bottom-up pass of `--sequential` runs: asked for, or as the re-fit
    /// of `--sq-ratio` (roulette, `--sq-refit feedback`).
    pub fn sequential_pass(&self) -> bool {
        self.sequential || self.sq_feedback()
    }

    /// `--sq-ratio`'s re-fit is the bottom-up pass with error feedback.
    fn sq_feedback(&self) -> bool {
        self.sq_ratio.is_some()
            && self.calib.is_some()
            && self.sq_pick.as_deref() != Some("index")
            && self.sq_refit.as_deref() != Some("gain")
    }

    pub fn requested(&self) -> bool {
        self.bits.is_some() || self.wbits.is_some() || self.abits.is_some() || self.budget.is_some()
    }

    /// The sensitivity options the flags describe.
    pub fn sens_options(&self) -> Result<SensOptions, String> {
        Ok(SensOptions {
            metric: self.metric.as_deref().map(str::parse).transpose()?,
            symmetric_acts: self.symmetric,
            pow2: self.pow2(),
            run: RunOptions {
                progress: !self.quiet,
                ..Default::default()
            },
            whole: false,
        })
    }

    /// The scheme the flags describe (`--bits` defaults to 8 when only one of
    /// `--wbits`/`--abits` is given).
    pub fn options(&self) -> QuantOptions {
        let b = self.bits.unwrap_or(8);
        QuantOptions {
            wbits: self.wbits.unwrap_or(b),
            abits: self.abits.unwrap_or(b),
            symmetric_acts: self.symmetric,
            pow2: self.pow2(),
            keep_edges: self.keep_edges,
            ternary: self.ternary,
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
        if let Some(b) = &self.budget {
            if self.ternary {
                return Err(format!(
                    "--budget {b} and --ternary: a budget measures and chooses its own candidates; --ternary applies to --wbits 2"
                ));
            }
            if let Some(flag) = [
                ("--bits", self.bits),
                ("--wbits", self.wbits),
                ("--abits", self.abits),
            ]
            .iter()
            .find_map(|(f, v)| v.map(|v| format!("{f} {v}")))
            {
                return Err(format!(
                    "--budget {b} and {flag} both set bit-widths: --budget chooses each layer's bits, {flag} sets them all; give one"
                ));
            }
            if is_quantized(m) {
                return Err(format!(
                    "--budget {b}: `{}` arrives quantized and keeps its bit-widths; add --requantize to choose them again from its float form",
                    m.name
                ));
            }
            if self.calib.is_none() && self.profile.is_none() {
                return Err(format!(
                    "--budget {b} needs calibration data to measure each layer's sensitivity: give --calib DATA.npz (or --profile FILE.qprof from `qcc calibrate --sensitivity`)"
                ));
            }
        }
        if self.act_method == "dqa" && self.calib.is_none() {
            return Err(
                "--act-method dqa scales each activation channel from its calibrated range: give --calib DATA.npz".into(),
            );
        }
        self.check_dqa()?;
        if self.qil() && self.calib.is_none() {
            return Err(
                "--calib-method qil searches each layer's intervals against the output error on calibration data: give --calib DATA.npz".into(),
            );
        }
        if self.sequential && self.calib.is_none() {
            return Err(
                "--sequential quantizes each layer against the inputs it sees on calibration data: give --calib DATA.npz".into(),
            );
        }
        self.check_sq()?;
        if !self.requested() {
            if self.sequential {
                return Err("--sequential needs --bits, --wbits, --abits or --budget".into());
            }
            if self.calib.is_some() {
                return Err("--calib needs --bits, --wbits or --abits".into());
            }
            if self.profile.is_some() {
                return Err("--profile needs --bits, --wbits or --abits".into());
            }
            return Ok(None);
        }
        let mut opts = self.options();
        opts.check()?;
        let copts = CalibOptions {
            // QIL starts from min-max ranges and searches the intervals after quantizing.
            method: if self.qil() {
                CalibMethod::MinMax
            } else {
                self.calib_method.parse::<CalibMethod>()?
            },
            limit: self.calib_limit,
            input_range: self.input_range,
            progress: !self.quiet,
            ..Default::default()
        };
        let run = RunOptions {
            engine: copts.engine,
            progress: !self.quiet,
        };
        let mut timer = PhaseTimer::from_env();
        let stats = match (&self.calib, &self.profile) {
            (Some(_), Some(_)) => return Err("give --calib or --profile, not both".into()),
            (Some(p), None) => calibrate(m, p, &copts)?,
            (None, Some(p)) => load_stats(p, m, copts.method)?,
            (None, None) => data_free(m, &copts)?,
        };
        timer.lap("calibration");
        // --act-method dqa: per-channel activation scales, folded into the weights.
        let equalized;
        let mut dqa_note: Option<String> = None;
        let mut dqa_notes: Vec<String> = Vec::new();
        let (m, stats) = match (&self.calib, self.act_method.as_str()) {
            (Some(p), "dqa") => {
                let mut e = m.clone();
                let rep = equalize_activations(&mut e, &stats, &quant_layers(m)?);
                let mut stats = calibrate(&e, p, &copts)?;
                timer.lap("dqa equalization");
                if let Some(iopts) = self.important() {
                    let (split, irep) = split_important(
                        &e,
                        &stats,
                        &quant_layers(&e)?,
                        p,
                        self.calib_limit,
                        &run,
                        &iopts,
                    )?;
                    if irep.split.iter().any(|a| !a.fused) {
                        e = split;
                        stats = calibrate(&e, p, &copts)?;
                    }
                    opts.layer_bits.extend(irep.bits.clone());
                    opts.dqa_fine = irep.fine.clone();
                    opts.dqa_extra = iopts.extra;
                    dqa_notes = irep.describe(&iopts);
                    timer.lap("dqa important channels");
                } else if self.dqa_ratio != Some(0.0) {
                    let o = self.options();
                    let why = if self.budget.is_some() {
                        "--budget chooses each layer's activation bits"
                    } else if o.binary() {
                        "binarized layers read 1-bit inputs"
                    } else {
                        "the activations have 8 bits already"
                    };
                    dqa_notes.push(format!(
                        "--act-method dqa: per-channel scales only, no important channels with extra bits ({why})"
                    ));
                }
                let spread: Vec<String> = rep
                    .equalized
                    .iter()
                    .map(|(n, c, s)| format!("{n} ({c} channels, ranges {s:.1}:1)"))
                    .collect();
                let skipped: Vec<String> = rep
                    .skipped
                    .iter()
                    .map(|(n, why)| format!("{n}: {why}"))
                    .collect();
                dqa_note = Some(format!(
                    "--act-method dqa: {} activation(s) scaled per channel, folded into the weights around them ({}): {}{}",
                    rep.equalized.len(),
                    if self.dqa_requant.as_deref() == Some("multiply") {
                        "requantized by a multiply, --dqa-requant multiply"
                    } else {
                        "requantized by shifts: every scale a power of two, --dqa-requant multiply for free scales"
                    },
                    if spread.is_empty() {
                        "none".to_string()
                    } else {
                        spread.join(", ")
                    },
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!("; per tensor: {}", skipped.join("; "))
                    }
                ));
                equalized = e;
                (&equalized, stats)
            }
            _ => (m, stats),
        };
        if let (Some(ratio), Some(p)) = (self.sq_ratio, &self.calib) {
            // --sq-ratio: the staged draw, then the final split built as usual.
            let sq = self.sq_stages(m, ratio, p, &copts, &opts, &run, &mut timer)?;
            let mut sopts = opts.clone();
            sopts.layer_bits = sq.bits;
            let (q, qdq, mut report) = self.build(
                &sq.module,
                &sq.stats,
                &sopts,
                None,
                sq.refit.as_ref(),
                &run,
                &mut timer,
            )?;
            report.notes.extend(dqa_note);
            report.notes.extend(dqa_notes);
            report.notes.extend(sq.notes);
            return self.finish(&sq.module, q, qdq, report, &run, &mut timer);
        }
        let Some(budget) = &self.budget else {
            let (q, qdq, mut report) =
                self.build(m, &stats, &opts, None, None, &run, &mut timer)?;
            report.notes.extend(dqa_note);
            report.notes.extend(dqa_notes);
            return self.finish(m, q, qdq, report, &run, &mut timer);
        };
        let sens = self.sensitivity(m, &stats, budget)?;
        timer.lap("sensitivity");
        // Every measured candidate of every layer: the alternatives of the e-graph.
        let candidates: BTreeMap<String, Vec<(u8, u8)>> = sens
            .layers
            .iter()
            .map(|l| {
                let c = l.candidates.iter().map(|c| (c.wbits, c.abits)).collect();
                (l.layer.clone(), c)
            })
            .collect();
        // The choice is made among the candidates the e-graph fuses into integer kernels.
        let fusable_note;
        let fusable = match fusable_candidates(m, &stats, &opts, &candidates, Limits::default()) {
            Ok((f, _)) => {
                let offered: usize = candidates.values().map(|c| c.len()).sum();
                let fused: usize = f.values().map(|c| c.len()).sum();
                fusable_note = Some(format!(
                    "{fused} of {offered} measured candidates fuse into integer kernels in the e-graph; the choice is made among them"
                ));
                Some(f)
            }
            Err(e) => {
                fusable_note = Some(format!(
                    "the e-graph of all candidates gave up ({e}); the choice is made among all measured candidates"
                ));
                None
            }
        };
        timer.lap("candidates in the e-graph");
        // A latency budget is checked on the compiled plan: the model covers conv/gemm
        // time only, so when the plan runs slower than asked on this machine (JIT, the
        // code `--cpu native` objects hold), the modelled limit shrinks by the ratio and
        // the choice is made again.
        let asked_ms = budget.terms.iter().find_map(|t| match t {
            BudgetTerm::LatencyMs(ms) => Some(*ms),
            _ => None,
        });
        let mut modelled = budget.clone();
        let mut tries = 0;
        loop {
            let (mut sel, bits) = self.choose(&sens, fusable.as_ref(), &modelled, budget)?;
            let same = tries > 0 && bits == opts.layer_bits;
            opts.layer_bits = bits;
            timer.lap("choice");
            let (q, qdq, mut report) =
                self.build(m, &stats, &opts, Some(&candidates), None, &run, &mut timer)?;
            report.notes.extend(fusable_note.clone());
            report.notes.extend(dqa_note.clone());
            report.notes.extend(dqa_notes.clone());
            let Some(limit) = asked_ms else {
                report.selection = Some(sel);
                return self.finish(m, q, qdq, report, &run, &mut timer);
            };
            let ms = measure_latency_ms(m, &q)?;
            sel.measured_latency_ms = Some(ms);
            tries += 1;
            if ms <= limit || same || tries == LATENCY_TRIES {
                if ms > limit {
                    report.notes.push(format!(
                        "the plan runs in {ms:.4} ms on this machine (JIT, best of {LATENCY_RUNS}), above the asked {limit} ms after {tries} measured choice(s){}: the budget is tighter than these bit-widths reach",
                        if same { "; the cost table offers no faster plan" } else { "" }
                    ));
                }
                report.selection = Some(sel);
                return self.finish(m, q, qdq, report, &run, &mut timer);
            }
            for t in &mut modelled.terms {
                if let BudgetTerm::LatencyMs(x) = t {
                    *x *= 0.98 * limit / ms;
                }
            }
        }
    }

    /// Quantizes `m` by `opts` (1- and 2-bit layers fitted on the calibration data) and
    /// fuses it into integer kernels: the integer module, its QDQ form (with calibration
    /// data) and the report. With the `candidates` of a `--budget` plan, the fusion is
    /// the choice in the e-graph (`choice::extract_plan`: every other candidate is an
    /// alternative there, extraction forbids them), falling back to the plain `rewrite`
    /// pipeline with a note when that e-graph does not saturate.
    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        m: &Module,
        stats: &CalibStats,
        opts: &QuantOptions,
        candidates: Option<&BTreeMap<String, Vec<(u8, u8)>>>,
        sq_refit: Option<&BTreeSet<String>>,
        run: &RunOptions,
        timer: &mut PhaseTimer,
    ) -> Result<(Module, Option<Module>, QuantReport), String> {
        let (mut q, mut report) = quantize_model(m, stats, opts)?;
        timer.lap("quantize");
        if self.qil()
            && let Some(p) = &self.calib
        {
            let r = qil_intervals(
                m,
                &mut q,
                &mut report,
                stats,
                opts.symmetric_acts,
                opts.pow2,
                // --sequential quantizes the weights again on their uniform grids.
                !self.sequential_pass(),
                p,
                self.calib_limit,
                run,
            )?;
            let acts = r.layers.iter().filter(|l| l.act.is_some()).count();
            let clipped = r.layers.iter().filter(|l| l.w_factor != 1.0).count();
            let pruned: Vec<String> = r
                .layers
                .iter()
                .filter(|l| l.prune > 0.5)
                .map(|l| format!("{} {:.1} %", l.name, 100.0 * l.sparsity))
                .collect();
            let grids: Vec<String> = r
                .layers
                .iter()
                .filter(|l| l.gamma != 1.0)
                .map(|l| format!("{} gamma {}", l.name, l.gamma))
                .collect();
            report.notes.push(format!(
                "--calib-method qil: intervals searched layer by layer against the output error on {} calibration samples ({} evaluations): {acts} activation range(s) narrowed, {clipped} layer(s) of weights re-clipped, {} pruned below c - d{}, {} on a non-uniform grid{}; output error {:.3e} -> {:.3e}",
                r.samples,
                r.evaluations,
                pruned.len(),
                if pruned.is_empty() { String::new() } else { format!(" (zero weights: {})", pruned.join(", ")) },
                grids.len(),
                if grids.is_empty() { String::new() } else { format!(" ({}: their 2^b - 1 levels stored as i8 codes, run on 8-bit kernels)", grids.join(", ")) },
                r.before,
                r.after
            ));
            timer.lap("qil intervals");
        }
        let mut fitted = false;
        if self.sequential_pass()
            && let Some(p) = &self.calib
        {
            let lim = Some(
                self.calib_limit
                    .unwrap_or(usize::MAX)
                    .min(SEQUENTIAL_SAMPLES),
            );
            // Every layer's input is calibrated again on the layers below as quantized
            // (with QIL, its interval is one of the candidates).
            let acts = Some(ActCalib {
                source: stats.source.clone(),
                symmetric: opts.symmetric_acts,
                pow2: opts.pow2,
            });
            let seq = sequential_weights(m, &mut q, &mut report, p, lim, run, acts.as_ref())?;
            let who = if self.sequential {
                "--sequential"
            } else {
                "--sq-ratio's re-fit (--sq-refit feedback, the --sequential pass)"
            };
            let (before, after) = seq
                .layers
                .iter()
                .fold((0.0, 0.0), |(b, a), (_, x, y)| (b + x, a + y));
            if seq.acts_seen > 0 {
                let narrowed = seq
                    .acts
                    .iter()
                    .filter(|a| a.after.1 - a.after.0 < a.before.1 - a.before.0)
                    .count();
                report.notes.push(format!(
                    "{who}: {} of {} layer input activation(s) took a new range, chosen on the quantized layers below them against the float model's values ({narrowed} narrower)",
                    seq.acts.len(),
                    seq.acts_seen,
                ));
            }
            report.notes.extend(seq.notes);
            fitted = true;
            report.notes.push(format!(
                "{who}: {} layer(s) re-quantized bottom-up with error feedback on {} calibration samples; their summed output error on those inputs fell by {:.1} %",
                seq.layers.len(),
                super::calibrate::sample_count(p, lim)?,
                if before > 0.0 { 100.0 * (1.0 - after / before) } else { 0.0 }
            ));
            if seq.fitted > 0 {
                report.notes.push(format!(
                    "{} layer(s) of 1- or 2-bit weights fitted per channel to the float results, each right after its weights (gain into the weight scales, offset into the bias)",
                    seq.fitted
                ));
            }
            timer.lap("sequential weights");
        }
        // 1- and 2-bit layers, and the low groups of --sq-ratio, get their per-filter gain
        // and offset fitted.
        // Matrix products take no bias for the fitted offsets: they are not fitted.
        let refit = |l: &super::insert::LayerReport| {
            l.op != Op::MatMul && (l.wbits <= 2 || sq_refit.is_some_and(|s| s.contains(&l.name)))
        };
        if opts.pow2 && self.calib.is_some() && report.layers.iter().any(refit) {
            report.notes.push(
                "power-of-two scales: the per-channel fit's gains of the 1- or 2-bit layers are rounded to powers of two (the offsets fitted for them)"
                    .into(),
            );
        }
        if let Some(p) = &self.calib
            && report.layers.iter().any(refit)
            && !fitted
        {
            let mut notes = Vec::new();
            let n = refine_layers_with(
                m,
                &mut q,
                &mut report,
                p,
                self.calib_limit,
                run,
                &mut notes,
                &refit,
            )?;
            report.notes.extend(notes);
            timer.lap("binary fitting");
            if n > 0 {
                report.notes.push(format!(
                    "{n} layer(s) of {} weights fitted per channel to the float results on {} calibration samples (gain into the weight scales, offset into the bias)",
                    if sq_refit.is_some() { "1- or 2-bit or --sq-ratio low-group" } else { "1- or 2-bit" },
                    self.calib_limit.unwrap_or(usize::MAX).min(REFINE_SAMPLES)
                ));
            }
        }
        // Per-layer errors are measured on the QDQ form, whose values keep their ids;
        // the output error on the fused form.
        let qdq = self.calib.as_ref().map(|_| q.clone());
        let quantized: std::collections::BTreeSet<String> = report
            .layers
            .iter()
            .map(|l| q.value(l.output).spelling())
            .collect();
        let chosen = match candidates {
            Some(c) => match extract_plan(m, &q, &report, stats, opts, c, Limits::default()) {
                Ok((out, _)) => Some(out),
                Err(e) => {
                    report.notes.push(format!(
                        "the bit-width choice in the e-graph gave up ({e}); the plan was fused by the plain rewrite pipeline instead"
                    ));
                    None
                }
            },
            None => None,
        };
        let passes: &[&str] = if let Some(out) = chosen {
            q = out;
            &["dce"]
        } else {
            &["rewrite", "dce"]
        };
        Pipeline::from_names("quantize", passes)
            .map_err(|e| e.to_string())?
            .run(&mut q, &mut |_| {})
            .map_err(|e| e.to_string())?;
        timer.lap("rewrite");
        // Layers `quantize_model` quantized must have fused into integer kernels; the
        // others (e.g. a matrix product of two run-time operands) stay f32 by design.
        let left = float_kernels(&q);
        // (quantize_model's notes name the ones it left in f32.)
        let unfused: Vec<String> = left.into_iter().filter(|k| quantized.contains(k)).collect();
        if !unfused.is_empty() {
            return Err(format!(
                "internal: these quantized layers did not become integer kernels: {}",
                unfused.join(", ")
            ));
        }
        Ok((q, qdq, report))
    }

    /// Checks the `--sq-*` flags: every error names the flag and what works.
    /// The important-channel split of `--act-method dqa`, when it applies.
    fn important(&self) -> Option<ImportantOptions> {
        if self.act_method != "dqa" || self.budget.is_some() {
            return None;
        }
        let ratio = self.dqa_ratio.unwrap_or(0.4);
        let opts = self.options();
        if ratio == 0.0 || opts.abits >= 8 || opts.binary() {
            return None;
        }
        Some(ImportantOptions {
            ratio,
            extra: self.dqa_extra_bits.unwrap_or(3),
            rank: if self.dqa_rank.as_deref() == Some("energy") {
                Rank::Energy
            } else {
                Rank::Greedy
            },
            abits: opts.abits,
            wbits: opts.wbits,
            keep_edges: opts.keep_edges,
            fused: self.dqa_form.as_deref() != Some("split"),
            pow2: opts.pow2,
        })
    }

    fn check_dqa(&self) -> Result<(), String> {
        let given = [
            self.dqa_ratio.map(|r| format!("--dqa-ratio {r}")),
            self.dqa_extra_bits.map(|m| format!("--dqa-extra-bits {m}")),
            self.dqa_rank.as_ref().map(|h| format!("--dqa-rank {h}")),
            self.dqa_form.as_ref().map(|h| format!("--dqa-form {h}")),
        ];
        if self.act_method != "dqa" {
            if let Some(f) = given.iter().flatten().next() {
                return Err(format!(
                    "{f} sets DQA's important channels: give --act-method dqa too"
                ));
            }
            if let Some(h) = &self.dqa_requant {
                return Err(format!(
                    "--dqa-requant {h} sets how --act-method dqa requantizes: give --act-method dqa too (or --pow2 for power-of-two scales without it)"
                ));
            }
            return Ok(());
        }
        if self.dqa_requant.as_deref() == Some("multiply") && self.pow2 {
            return Err(
                "--dqa-requant multiply with --pow2: --pow2 makes every scale a power of two, so requantizing is a shift; drop one of them".into(),
            );
        }
        if self.ternary && self.pow2() && !self.pow2 {
            return Err(
                "--ternary with --act-method dqa: TWN's per-channel scale (the mean |w| above the threshold) is not a power of two, and DQA requantizes by shifts; add --dqa-requant multiply".into(),
            );
        }
        if let Some(r) = self.dqa_ratio
            && !(0.0..1.0).contains(&r)
        {
            return Err(format!(
                "--dqa-ratio {r}: the fraction of each activation's channels given extra bits must be in [0, 1), e.g. --dqa-ratio 0.4 (0 turns it off)"
            ));
        }
        if let Some(m) = self.dqa_extra_bits
            && !(1..=7).contains(&m)
        {
            return Err(format!(
                "--dqa-extra-bits {m}: the important channels' extra bits must be 1..=7 (default 3)"
            ));
        }
        if let (Some(b), Some(f)) = (&self.budget, given.iter().flatten().next()) {
            return Err(format!(
                "{f} and --budget {b}: --budget chooses each layer's activation bits itself; drop {f}"
            ));
        }
        if let (Some(r), Some(_)) = (self.sq_ratio, self.important()) {
            return Err(format!(
                "--sq-ratio {r} with --act-method dqa's important channels: both split layers in two; add --dqa-ratio 0 to keep per-channel scales only"
            ));
        }
        let opts = self.options();
        if let Some(f) = given.iter().flatten().next()
            && self.dqa_ratio != Some(0.0)
        {
            if opts.abits >= 8 {
                return Err(format!(
                    "{f}: the important channels get more bits than --abits, which is 8 already; give --abits 2..7"
                ));
            }
            if opts.binary() {
                return Err(format!(
                    "{f} with binarized layers (--bits 1): a binarized layer reads 1-bit inputs; give --abits 2..7"
                ));
            }
        }
        Ok(())
    }

    fn check_sq(&self) -> Result<(), String> {
        let Some(r) = self.sq_ratio else {
            if let Some(h) = self.sq_high {
                return Err(format!(
                    "--sq-high {h} sets the width of the filters --sq-ratio leaves out of the low group: give --sq-ratio R too"
                ));
            }
            if let Some(p) = &self.sq_pick {
                return Err(format!("--sq-pick {p} needs --sq-ratio R"));
            }
            if let Some(h) = &self.sq_refit {
                return Err(format!("--sq-refit {h} needs --sq-ratio R"));
            }
            return Ok(());
        };
        if let Some(h) = &self.sq_refit {
            if self.sq_pick.as_deref() == Some("index") {
                return Err(format!(
                    "--sq-refit {h} with --sq-pick index: the index split is SQ's split without its choice or re-fit; drop one of them"
                ));
            }
            if h == "gain" && self.sequential {
                return Err(
                    "--sq-refit gain with --sequential: --sequential re-fits every layer with error feedback (the --sq-refit feedback pass); drop one of them".into(),
                );
            }
        }
        if !(r > 0.0 && r <= 1.0) {
            return Err(format!(
                "--sq-ratio {r}: the fraction of each layer's filters at the low width must be in (0, 1], e.g. --sq-ratio 0.75"
            ));
        }
        if self.calib.is_none() {
            return Err(format!(
                "--sq-ratio {r} re-fits the low filters' scales and biases on calibration data between its stages: give --calib DATA.npz"
            ));
        }
        if let Some(b) = &self.budget {
            return Err(format!(
                "--sq-ratio {r} and --budget {b}: --budget chooses each layer's bits, --sq-ratio splits every layer's filters between --wbits and --sq-high; give one"
            ));
        }
        if !self.requested() {
            return Err(format!(
                "--sq-ratio {r} quantizes a fraction of the filters at the low width: give it with --wbits N (or --bits N)"
            ));
        }
        let opts = self.options();
        let (low, high) = (opts.wbits, self.sq_high.unwrap_or(8));
        if opts.binary() {
            return Err(format!(
                "--sq-ratio {r} with binarized layers (--wbits 1 --abits 1): the two filter groups share one input, which a binarized layer reads as 1 bit; give --abits 2..8"
            ));
        }
        if !(1..=8).contains(&high) {
            return Err(format!(
                "--sq-high {high}: the high group takes {low}..8 bits (at least the low width, --wbits {low})"
            ));
        }
        if high == low {
            return Err(format!(
                "--sq-high {high} equals the low width {low} (--wbits, or --bits): both groups would have the same bits; {}",
                if low < 8 {
                    format!("give --sq-high {}..8 or a lower --wbits", low + 1)
                } else {
                    "give a lower --wbits".to_string()
                }
            ));
        }
        if high < low {
            return Err(format!(
                "--sq-high {high} is lower than the low width {low} (--wbits, or --bits): the filters left out of the low group keep --sq-high bits; give --sq-high {low}..8 or a lower --wbits"
            ));
        }
        Ok(())
    }

    /// `--sq-ratio`: draws the low filters of every layer stage by stage (each stage but
    /// the last built, its low groups fitted and its output error measured on the
    /// calibration samples), and returns the float module split by the final draw, its
    /// statistics and bits, the low groups to fit and the report's notes.
    #[allow(clippy::too_many_arguments)]
    fn sq_stages(
        &self,
        m: &Module,
        ratio: f64,
        p: &std::path::Path,
        copts: &CalibOptions,
        opts: &QuantOptions,
        run: &RunOptions,
        timer: &mut PhaseTimer,
    ) -> Result<SqBuild, String> {
        let pick: Pick = self.sq_pick.as_deref().unwrap_or("roulette").parse()?;
        let sopts = SqOptions {
            ratio,
            low: opts.wbits,
            high: self.sq_high.unwrap_or(8),
            ternary: opts.ternary,
            pow2: opts.pow2,
            pick,
        };
        let feedback = self.sq_feedback();
        let mut plan = SqPlan::new(m, &quant_layers(m)?, sopts, opts.keep_edges);
        let stages = plan.opts.stages();
        let limit = self.calib_limit.unwrap_or(usize::MAX).min(REFINE_SAMPLES);
        let metric = Metric::default_for(m);
        let mut trace = Vec::new();
        let mut notes = Vec::new();
        for (si, &r) in stages.iter().enumerate() {
            plan.grow(r);
            let (sm, bits) = plan.split(m, opts.abits)?;
            let stats = calibrate(&sm, p, copts)?;
            timer.lap("sq split");
            if si + 1 == stages.len() {
                // (With `--sq-refit feedback` the --sequential pass re-fits every layer.)
                let refit = (pick == Pick::Roulette).then(|| plan.low_names());
                notes.push(format!(
                    "--sq-ratio {ratio} ({}, {} at the low width, {} bits for the others): {}",
                    match pick {
                        Pick::Roulette => format!(
                            "filters drawn by a fixed-seed roulette weighted 1 / (e + {}) in stages {}",
                            super::sq::EPS,
                            stages
                                .iter()
                                .map(|s| format!("{s}"))
                                .collect::<Vec<_>>()
                                .join(" -> ")
                        ),
                        Pick::Index => "the first filters of each layer, no re-fit".into(),
                    },
                    plan.opts.low,
                    plan.opts.high,
                    if trace.is_empty() {
                        "one stage".to_string()
                    } else {
                        format!(
                            "output error ({}) after each earlier stage's re-fit ({}) on {limit} samples: {}",
                            metric.name(),
                            if feedback {
                                "bottom-up, least squares and error feedback"
                            } else {
                                "the low filters' gains and biases"
                            },
                            trace.join(", ")
                        )
                    }
                ));
                notes.extend(
                    plan.describe()
                        .into_iter()
                        .map(|l| format!("--sq-ratio: {l}")),
                );
                return Ok(SqBuild {
                    module: sm,
                    stats,
                    bits,
                    refit,
                    notes,
                });
            }
            // An earlier stage: the model with the filters drawn so far, the low groups
            // fitted, and its output error.
            let mut sopts = opts.clone();
            sopts.layer_bits = bits;
            let (mut q, mut report) = quantize_model(&sm, &stats, &sopts)?;
            let lows = plan.low_names();
            if feedback {
                let acts = ActCalib {
                    source: stats.source.clone(),
                    symmetric: opts.symmetric_acts,
                    pow2: opts.pow2,
                };
                // Its notes repeat in the final build's report.
                sequential_weights(&sm, &mut q, &mut report, p, Some(limit), run, Some(&acts))?;
            } else {
                refine_layers_with(
                    &sm,
                    &mut q,
                    &mut report,
                    p,
                    Some(limit),
                    run,
                    &mut notes,
                    &|l| l.op != Op::MatMul && (l.wbits <= 2 || lows.contains(&l.name)),
                )?;
            }
            let e = measured_error(&sm, &q, p, Some(limit), metric)?;
            trace.push(format!("{}: {e:.3e}", r));
            timer.lap("sq stage");
        }
        Err("internal: --sq-ratio ran no stage".into())
    }

    /// The per-layer and output errors of the built module, and the measured error of a
    /// `--budget` plan.
    fn finish(
        &self,
        m: &Module,
        q: Module,
        qdq: Option<Module>,
        mut report: QuantReport,
        run: &RunOptions,
        timer: &mut PhaseTimer,
    ) -> Result<Option<(Module, QuantReport)>, String> {
        if let (Some(p), Some(qdq)) = (&self.calib, &qdq) {
            let n = self.calib_limit.unwrap_or(usize::MAX).min(ERROR_SAMPLES);
            let outs: Vec<_> = report.layers.iter().map(|l| l.output).collect();
            let mut notes = Vec::new();
            let (errs, out) = measure_errors(m, qdq, &q, &outs, p, Some(n), run, &mut notes)?;
            for (l, e) in report.layers.iter_mut().zip(errs) {
                l.error = Some(e);
            }
            report.output_error = Some(out);
            report.notes.extend(notes);
            timer.lap("error report");
        }
        if let (Some(sel), Some(p)) = (&mut report.selection, &self.calib) {
            let metric: Metric = sel.metric_key.parse()?;
            let limit = Some(self.calib_limit.unwrap_or(SENS_SAMPLES).min(SENS_SAMPLES));
            sel.measured = Some(measured_error(m, &q, p, limit, metric)?);
        }
        Ok(Some((q, report)))
    }

    /// The per-layer sensitivity for `--budget`: from the profile, else measured on the
    /// calibration data.
    fn sensitivity(
        &self,
        m: &Module,
        stats: &CalibStats,
        budget: &Budget,
    ) -> Result<Sensitivity, String> {
        let sopts = self.sens_options()?;
        let stored = match &self.profile {
            Some(p) => Profile::load(p)?.sensitivity()?,
            None => None,
        };
        Ok(match (stored, &self.calib) {
            (Some(s), _) if sopts.metric.is_none_or(|mt| mt == s.metric) => s,
            (_, Some(data)) => measure_sensitivity(m, stats, data, self.calib_limit, &sopts)?,
            (Some(s), None) => {
                return Err(format!(
                    "--metric {}: the profile's sensitivity measures {}; measure again with --calib DATA.npz",
                    sopts.metric.map_or("", Metric::name),
                    s.metric
                ));
            }
            (None, None) => {
                return Err(format!(
                    "--budget {budget}: the profile holds no sensitivity; write it with `qcc calibrate MODEL --calib DATA.npz --sensitivity -o FILE.qprof`, or give --calib DATA.npz"
                ));
            }
        })
    }

    /// The per-layer bits of `sens` under `modelled` (the asked `budget`, its latency
    /// limit perhaps tightened after a measurement): the exact or attention choice.
    fn choose(
        &self,
        sens: &Sensitivity,
        fusable: Option<&BTreeMap<String, BTreeSet<(u8, u8)>>>,
        modelled: &Budget,
        budget: &Budget,
    ) -> Result<(Selection, LayerBits), String> {
        // Latency is modelled for the host's tier (what `--cpu native` compiles for).
        let target =
            CostTarget::of(&crate::backend::Target::host()).unwrap_or(CostTarget::X86_64Native);
        let mut problem = Problem::from_sensitivity(sens, target);
        if let Some(f) = fusable {
            problem.restrict(f);
        }
        let plan = match self.select.as_str() {
            "attention" => solve_attention(&problem, modelled, &AttentionOptions::default())?,
            _ => solve_exact(&problem, modelled)?,
        };
        let sel = Selection {
            how: format!("--budget {budget} ({})", self.select),
            metric: sens.metric.describe().into(),
            metric_key: sens.metric.name().into(),
            candidates: sens
                .layers
                .iter()
                .map(|l| {
                    l.candidates
                        .iter()
                        .map(|c| (c.wbits, c.abits, c.error))
                        .collect()
                })
                .collect(),
            predicted: plan.predicted_error,
            measured: None,
            avg_bits: plan.avg_bits,
            size_bytes: plan.size_bytes,
            latency_ms: plan.latency_ms,
            measured_latency_ms: None,
        };
        Ok((sel, plan.layer_bits(&problem)))
    }
}

/// The float module split by `--sq-ratio`'s final draw, with what the build needs.
struct SqBuild {
    module: Module,
    stats: CalibStats,
    bits: LayerBits,
    /// The low groups to fit (none for `--sq-pick index`).
    refit: Option<BTreeSet<String>>,
    notes: Vec<String>,
}

/// Phase times of [`QuantFlags::apply`] on stderr, when `QCC_PHASE_TIMES` is set (for
/// the compile-time benchmark; the report itself stays deterministic).
struct PhaseTimer {
    on: bool,
    last: std::time::Instant,
}

impl PhaseTimer {
    fn from_env() -> Self {
        PhaseTimer {
            on: std::env::var_os("QCC_PHASE_TIMES").is_some(),
            last: std::time::Instant::now(),
        }
    }

    fn lap(&mut self, what: &str) {
        if self.on {
            eprintln!("phase {what}: {:.2} s", self.last.elapsed().as_secs_f64());
        }
        self.last = std::time::Instant::now();
    }
}
