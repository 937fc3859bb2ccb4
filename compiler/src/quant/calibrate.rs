//! The calibration engine: activation statistics from calibration data, streamed, or
//! from the batch-norm statistics a model keeps (data-free).
//!
//! Calibration data is an `.npz` with `x` (first axis = samples). It is read row by row
//! in batches through npyz's streaming reader, never whole; every sample runs through the
//! module compiled once with its float values as extra outputs (`tap.rs`; the module is
//! imported with batch 1), or through the reference interpreter ([`Engine::Interp`], the
//! tests' oracle, and the fallback when the backend cannot compile the module). For
//! every float value (graph inputs and node results) the engine keeps the per-tensor
//! min/max, a histogram (for the percentile, MSE and KL range methods) and the
//! per-channel (axis 1) min/max; nothing else grows with the number of samples.

use std::collections::BTreeMap;
use std::path::Path;

use npyz::{DType, TypeChar};
use qcc_ir::interp::Tensor;
use qcc_ir::{Attr, Attrs, ElemType, Module, Op, ValueDef, ValueId};

use super::tap::{Engine, RunOptions, Tapped, progress_bar};

/// How a calibrated value's range is chosen (`--calib-method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CalibMethod {
    /// The observed minimum and maximum.
    #[default]
    MinMax,
    /// The 0.01 % and 99.99 % quantiles of the observed values (both tails clipped).
    Percentile,
    /// The clipping range (a shrink factor of min/max) minimising the expected squared
    /// quantization error over the histogram.
    Mse,
    /// The clipping range minimising the KL divergence between the histogram and its
    /// quantized form (TensorRT's entropy calibration, on the same candidates as `mse`).
    Kl,
}

impl CalibMethod {
    pub const NAMES: [&'static str; 4] = ["minmax", "percentile", "mse", "kl"];

    pub fn name(self) -> &'static str {
        match self {
            CalibMethod::MinMax => "minmax",
            CalibMethod::Percentile => "percentile",
            CalibMethod::Mse => "mse",
            CalibMethod::Kl => "kl",
        }
    }
}

impl std::str::FromStr for CalibMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "minmax" => Ok(CalibMethod::MinMax),
            "percentile" => Ok(CalibMethod::Percentile),
            "mse" => Ok(CalibMethod::Mse),
            "kl" => Ok(CalibMethod::Kl),
            _ => Err(format!(
                "unknown calibration method `{s}` (methods: {})",
                CalibMethod::NAMES.join(", ")
            )),
        }
    }
}

impl std::fmt::Display for CalibMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Options of [`calibrate`] and [`data_free`].
#[derive(Clone, Debug)]
pub struct CalibOptions {
    pub method: CalibMethod,
    /// Use at most this many samples (the first ones).
    pub limit: Option<usize>,
    /// Samples read from the archive at a time.
    pub batch: usize,
    /// Show a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// What runs the module on the samples.
    pub engine: Engine,
    /// Data-free only: the range of the graph inputs. `None` assumes `[0, 1]` (images
    /// scaled to the unit interval) and the report warns.
    pub input_range: Option<(f32, f32)>,
}

impl Default for CalibOptions {
    fn default() -> Self {
        CalibOptions {
            method: CalibMethod::MinMax,
            limit: None,
            batch: 64,
            progress: true,
            engine: Engine::Jit,
            input_range: None,
        }
    }
}

/// Where the ranges came from.
#[derive(Clone, Debug, PartialEq)]
pub enum RangeSource {
    /// Calibration data, with the method that turns statistics into ranges.
    Data(CalibMethod),
    /// Batch-norm statistics: `beta +- k * |gamma|` per channel (see [`data_free`]).
    BatchNorm { k: f32 },
}

impl std::fmt::Display for RangeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RangeSource::Data(m) => write!(f, "{m}"),
            RangeSource::BatchNorm { k } => write!(f, "data-free (batch norm, k = {k})"),
        }
    }
}

/// Number of histogram bins.
pub const BINS: usize = 2048;

/// A histogram with a fixed number of equal bins whose range grows by doubling (two
/// neighbouring bins merge) whenever a value falls outside it, so it needs one pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Left edge of bin 0.
    pub lo: f64,
    /// Width of every bin.
    pub width: f64,
    /// `BINS` counts, or none before the first value.
    pub counts: Vec<u64>,
}

impl Histogram {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Right edge of the last bin.
    pub fn hi(&self) -> f64 {
        self.lo + self.width * self.counts.len() as f64
    }

    /// Centre of bin `i`.
    pub fn center(&self, i: usize) -> f64 {
        self.lo + (i as f64 + 0.5) * self.width
    }

    /// Makes the range cover `[min, max]`.
    fn cover(&mut self, min: f64, max: f64) {
        if self.counts.is_empty() {
            let span = (max - min).max(1e-6);
            self.lo = min;
            self.width = span * (1.0 + 1e-6) / BINS as f64;
            self.counts = vec![0; BINS];
            return;
        }
        while max >= self.hi() {
            let old = std::mem::replace(&mut self.counts, vec![0; BINS]);
            for (i, pair) in old.chunks(2).enumerate() {
                self.counts[i] = pair.iter().sum();
            }
            self.width *= 2.0;
        }
        while min < self.lo {
            let span = self.width * BINS as f64;
            let old = std::mem::replace(&mut self.counts, vec![0; BINS]);
            for (i, pair) in old.chunks(2).enumerate() {
                self.counts[BINS / 2 + i] = pair.iter().sum();
            }
            self.lo -= span;
            self.width *= 2.0;
        }
    }

    /// Adds values (all finite).
    pub fn add(&mut self, xs: &[f32]) {
        let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
        for &x in xs {
            min = min.min(x);
            max = max.max(x);
        }
        self.add_range(xs, min, max);
    }

    /// Adds values (all finite) whose minimum and maximum are `min` and `max`.
    fn add_range(&mut self, xs: &[f32], min: f32, max: f32) {
        if xs.is_empty() || !min.is_finite() || !max.is_finite() {
            return;
        }
        self.cover(min as f64, max as f64);
        let (lo, width) = (self.lo, self.width);
        // Runs of one bin (a relu's zeros) are counted before they are stored: one
        // read-modify-write per element to the same counter would serialize on it.
        let (mut bin, mut run) = (usize::MAX, 0u64);
        for &x in xs {
            let i = (((x as f64 - lo) / width) as usize).min(BINS - 1);
            if i == bin {
                run += 1;
            } else {
                if run > 0 {
                    self.counts[bin] += run;
                }
                bin = i;
                run = 1;
            }
        }
        if run > 0 {
            self.counts[bin] += run;
        }
    }

    /// The value below which a fraction `q` of the values lie (bin resolution: the lower
    /// edge of the bin reaching `q` for `q < 0.5`, its upper edge otherwise).
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.total() as f64;
        let target = q * total;
        let mut acc = 0.0;
        for (i, &c) in self.counts.iter().enumerate() {
            acc += c as f64;
            if acc >= target && c > 0 {
                return if q < 0.5 {
                    self.lo + i as f64 * self.width
                } else {
                    self.lo + (i + 1) as f64 * self.width
                };
            }
        }
        self.hi()
    }
}

/// Statistics of one value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorStats {
    pub min: f32,
    pub max: f32,
    /// Elements seen.
    pub count: u64,
    /// Empty for data-free statistics.
    pub hist: Histogram,
    /// Per-channel (axis 1) min/max; empty for rank < 2.
    pub ch_min: Vec<f32>,
    pub ch_max: Vec<f32>,
}

impl TensorStats {
    /// No values seen yet.
    pub fn empty() -> Self {
        TensorStats {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            ..Default::default()
        }
    }

    /// A range without samples (data-free).
    pub fn range(min: f32, max: f32) -> Self {
        TensorStats {
            min,
            max,
            ..Default::default()
        }
    }

    /// Adds the values `v` of a tensor of shape `shape`.
    pub(crate) fn observe_f32(&mut self, shape: &[usize], v: &[f32]) {
        // One pass for the per-channel and overall extremes and the finite count, one
        // for the histogram.
        let (mut lo, mut hi, mut n) = (f32::INFINITY, f32::NEG_INFINITY, 0usize);
        let mut minmax = |run: &[f32], clo: &mut f32, chi: &mut f32| {
            let (mut a, mut b, mut k) = (*clo, *chi, 0usize);
            // Branch-free, so that it vectorizes.
            for &x in run {
                let ok = x.is_finite();
                a = a.min(if ok { x } else { f32::INFINITY });
                b = b.max(if ok { x } else { f32::NEG_INFINITY });
                k += usize::from(ok);
            }
            *clo = a;
            *chi = b;
            lo = lo.min(a);
            hi = hi.max(b);
            n += k;
        };
        if shape.len() >= 2 && shape[1] > 0 {
            let c = shape[1];
            let inner: usize = shape[2..].iter().product::<usize>().max(1);
            if self.ch_min.len() != c {
                self.ch_min = vec![f32::INFINITY; c];
                self.ch_max = vec![f32::NEG_INFINITY; c];
            }
            for (i, run) in v.chunks(inner).enumerate() {
                let ch = i % c;
                minmax(run, &mut self.ch_min[ch], &mut self.ch_max[ch]);
            }
        } else {
            let (mut a, mut b) = (f32::INFINITY, f32::NEG_INFINITY);
            minmax(v, &mut a, &mut b);
        }
        self.min = self.min.min(lo);
        self.max = self.max.max(hi);
        self.count += n as u64;
        if n == v.len() {
            self.hist.add_range(v, lo, hi);
        } else {
            let finite: Vec<f32> = v.iter().copied().filter(|x| x.is_finite()).collect();
            self.hist.add(&finite);
        }
    }
}

/// Statistics of a module's float values, by value name.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibStats {
    pub values: BTreeMap<String, TensorStats>,
    /// Samples the statistics were collected on (0 when data-free).
    pub samples: usize,
    pub source: RangeSource,
    /// Assumptions the user should know about.
    pub warnings: Vec<String>,
}

impl CalibStats {
    pub fn get(&self, m: &Module, v: ValueId) -> Option<&TensorStats> {
        self.values.get(&m.value(v).name)
    }
}

/// Calls `f` with every sample of `x` in the `.npz` at `path` (as a tensor of shape
/// `[1, rest..]`), reading `batch` rows at a time; returns the number of samples.
pub fn stream_samples(
    path: &Path,
    limit: Option<usize>,
    batch: usize,
    f: &mut dyn FnMut(usize, Tensor) -> Result<(), String>,
) -> Result<usize, String> {
    let what = path.display();
    let mut npz = npyz::npz::NpzArchive::open(path)
        .map_err(|e| format!("cannot open {what} as an .npz archive: {e}"))?;
    let x = npz
        .by_name("x")
        .map_err(|e| format!("{what}: cannot read `x`: {e}"))?
        .ok_or_else(|| format!("{what} has no array `x` (samples along the first axis)"))?;
    if x.order() == npyz::Order::Fortran {
        return Err(format!(
            "{what}: `x` is Fortran-ordered; save it in C order"
        ));
    }
    let shape: Vec<usize> = x.shape().iter().map(|&d| d as usize).collect();
    if shape.is_empty() {
        return Err(format!(
            "{what}: `x` is a scalar; it needs a sample axis first"
        ));
    }
    let n = limit.map_or(shape[0], |l| l.min(shape[0]));
    let per: usize = shape[1..].iter().product();
    let mut sample_shape = vec![1];
    sample_shape.extend_from_slice(&shape[1..]);
    let DType::Plain(ts) = x.dtype() else {
        return Err(format!("{what}: `x` must be a plain float array"));
    };
    let rows = batch.max(1);
    let mut buf: Vec<f32> = Vec::with_capacity(rows * per);
    let mut done = 0;
    let mut flush = |buf: &mut Vec<f32>, done: &mut usize| -> Result<(), String> {
        for row in buf.chunks(per.max(1)) {
            f(*done, Tensor::f32(sample_shape.clone(), row.to_vec()))?;
            *done += 1;
        }
        buf.clear();
        Ok(())
    };
    let read_err = |e: std::io::Error| format!("{what}: reading `x`: {e}");
    match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 4) => {
            let data = x.data::<f32>().map_err(|e| format!("{what}: `x`: {e}"))?;
            for v in data.take(n * per) {
                buf.push(v.map_err(read_err)?);
                if buf.len() == rows * per {
                    flush(&mut buf, &mut done)?;
                }
            }
        }
        (TypeChar::Float, 8) => {
            let data = x.data::<f64>().map_err(|e| format!("{what}: `x`: {e}"))?;
            for v in data.take(n * per) {
                buf.push(v.map_err(read_err)? as f32);
                if buf.len() == rows * per {
                    flush(&mut buf, &mut done)?;
                }
            }
        }
        (c, s) => {
            return Err(format!(
                "{what}: `x` has dtype {c:?}{}; calibration needs float32 or float64",
                s * 8
            ));
        }
    }
    flush(&mut buf, &mut done)?;
    Ok(done)
}

pub(super) fn check_single_input(m: &Module) -> Result<ValueId, String> {
    match m.inputs.as_slice() {
        [x] => Ok(*x),
        _ => Err(format!(
            "calibration supports models with one input; `{}` has {}",
            m.name,
            m.inputs.len()
        )),
    }
}

/// The number of samples [`stream_samples`] gives for `path` and `limit` (reads only
/// the header of `x`).
pub fn sample_count(path: &Path, limit: Option<usize>) -> Result<usize, String> {
    let n = samples_shape(path)?.first().copied().unwrap_or(0);
    Ok(limit.map_or(n, |l| l.min(n)))
}

/// The shape of `x` in the `.npz` at `path` (samples first), from its header alone.
pub fn samples_shape(path: &Path) -> Result<Vec<usize>, String> {
    let what = path.display();
    let mut npz = npyz::npz::NpzArchive::open(path)
        .map_err(|e| format!("cannot open {what} as an .npz archive: {e}"))?;
    let x = npz
        .by_name("x")
        .map_err(|e| format!("{what}: cannot read `x`: {e}"))?
        .ok_or_else(|| format!("{what} has no array `x` (samples along the first axis)"))?;
    Ok(x.shape().iter().map(|&d| d as usize).collect())
}

/// The float values [`calibrate`] observes: the graph input and every f32 node result.
fn observed_values(m: &Module, input: ValueId) -> Vec<ValueId> {
    let mut seen = vec![false; m.values.len()];
    let mut out = Vec::new();
    for v in std::iter::once(input).chain(m.nodes.iter().map(|n| n.result)) {
        if m.ty(v).elem == ElemType::F32 && !seen[v.index()] {
            seen[v.index()] = true;
            out.push(v);
        }
    }
    out
}

/// Reshapes a calibration sample to the model input's shape, checking its size.
pub(crate) fn as_input(m: &Module, input: ValueId, i: usize, x: Tensor) -> Result<Tensor, String> {
    let ty = m.ty(input);
    if x.numel() != ty.numel() {
        return Err(format!(
            "calibration sample {i} has shape {:?}, the model's input {} is {}",
            x.shape,
            m.value(input).spelling(),
            ty
        ));
    }
    Ok(Tensor {
        shape: ty.shape.clone(),
        data: x.data,
    })
}

/// Collects statistics of every float value of `m` over the samples of `npz`, running
/// `m` compiled with taps on those values (or the interpreter, by `opts.engine`).
pub fn calibrate(m: &Module, npz: &Path, opts: &CalibOptions) -> Result<CalibStats, String> {
    let input = check_single_input(m)?;
    let values = observed_values(m, input);
    let total = sample_count(npz, opts.limit)?;
    let tapped = Tapped::new(m, &values, opts.engine, "calibration");
    let mut stats = vec![TensorStats::empty(); values.len()];
    let pb = progress_bar(opts.progress, total, "calibrating");
    let count = stream_samples(npz, opts.limit, opts.batch, &mut |i, x| {
        let x = as_input(m, input, i, x)?;
        tapped
            .run(std::slice::from_ref(&x), &mut |k, shape, v| {
                stats[k].observe_f32(shape, v)
            })
            .map_err(|e| format!("calibration sample {i}: {e}"))?;
        pb.inc(1);
        Ok(())
    })?;
    pb.finish_and_clear();
    if count == 0 {
        return Err(format!("{}: `x` holds no samples", npz.display()));
    }
    Ok(CalibStats {
        values: values
            .iter()
            .map(|&v| m.value(v).name.clone())
            .zip(stats)
            .collect(),
        samples: count,
        source: RangeSource::Data(opts.method),
        warnings: tapped.note.into_iter().collect(),
    })
}

/// Standard deviations around the batch-norm mean that a data-free range covers.
///
/// Batch norm's output per channel has mean `beta` and standard deviation `|gamma|` on
/// the training data; `k = 4` keeps all but about 6e-5 of a Gaussian and is close to the
/// MSE-optimal clipping of a Gaussian at 8 bits (3.9 sigma, Banner et al., ACIQ).
pub const DATA_FREE_K: f32 = 4.0;

fn floats(a: Option<&Attr>) -> Option<&[f32]> {
    match a {
        Some(Attr::Floats(v)) => Some(v),
        _ => None,
    }
}

/// Ranges without data: a conv2d/gemm with a folded batch norm (meta `bn_scale`,
/// `bn_bias`) produces per channel `bn_bias +- k * |bn_scale|` (k = [`DATA_FREE_K`]); the
/// range then follows monotone activations (relu, clip, leaky relu, hard sigmoid),
/// data movement and pooling, adds and products by interval arithmetic. Graph inputs take
/// `opts.input_range` (default `[0, 1]`, with a warning). A value whose range cannot be
/// derived is left out; quantization then asks for calibration data naming it.
pub fn data_free(m: &Module, opts: &CalibOptions) -> Result<CalibStats, String> {
    let mut ranges: Vec<Option<(f32, f32)>> = vec![None; m.values.len()];
    let mut warnings = Vec::new();
    let (ilo, ihi) = opts.input_range.unwrap_or((0.0, 1.0));
    for &i in &m.inputs {
        ranges[i.index()] = Some((ilo, ihi));
        if opts.input_range.is_none() {
            warnings.push(format!(
                "data-free: input {} assumed in [0, 1] (give --input-range LO,HI or --calib DATA.npz)",
                m.value(i).spelling()
            ));
        }
    }
    let mut any_bn = false;
    for n in &m.nodes {
        let r = |k: usize| n.operands.get(k).and_then(|o| ranges[o.index()]);
        let out = match n.op {
            Op::Conv2d | Op::Gemm | Op::MatMul => {
                match (
                    floats(n.meta.get("bn_scale")),
                    floats(n.meta.get("bn_bias")),
                ) {
                    (Some(g), Some(b)) if g.len() == b.len() && !g.is_empty() => {
                        any_bn = true;
                        let lo = g
                            .iter()
                            .zip(b)
                            .map(|(g, b)| b - DATA_FREE_K * g.abs())
                            .fold(f32::INFINITY, f32::min);
                        let hi = g
                            .iter()
                            .zip(b)
                            .map(|(g, b)| b + DATA_FREE_K * g.abs())
                            .fold(f32::NEG_INFINITY, f32::max);
                        Some((lo, hi))
                    }
                    _ => None,
                }
            }
            Op::Relu => r(0).map(|(lo, hi)| (lo.max(0.0), hi.max(0.0))),
            Op::LeakyRelu
            | Op::HardSigmoid
            | Op::Clip
            | Op::Sigmoid
            | Op::Tanh
            | Op::Floor
            | Op::Ceil
            | Op::Round => r(0).map(|(lo, hi)| {
                // Monotone non-decreasing: the image of the endpoints.
                let a = Attrs::new(n.op, &n.attrs);
                let f = |x: f32| match n.op {
                    Op::LeakyRelu => {
                        let alpha = a.float("alpha").unwrap_or(0.01);
                        if x >= 0.0 { x } else { alpha * x }
                    }
                    Op::HardSigmoid => {
                        let alpha = a.float("alpha").unwrap_or(0.2);
                        let beta = a.float("beta").unwrap_or(0.5);
                        (alpha * x + beta).clamp(0.0, 1.0)
                    }
                    Op::Sigmoid => 1.0 / (1.0 + (-x).exp()),
                    Op::Tanh => x.tanh(),
                    Op::Floor => x.floor(),
                    Op::Ceil => x.ceil(),
                    Op::Round => x.round_ties_even(),
                    _ => {
                        let x = a.float("min").map_or(x, |m| x.max(m));
                        a.float("max").map_or(x, |m| x.min(m))
                    }
                };
                (f(lo), f(hi))
            }),
            Op::MaxPool
            | Op::AvgPool
            | Op::GlobalAvgPool
            | Op::ReduceMean
            | Op::ReduceMax
            | Op::ReduceMin
            | Op::Reshape
            | Op::Flatten
            | Op::Transpose
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Slice
            | Op::Resize => r(0),
            Op::Add => r(0).zip(r(1)).map(|(a, b)| (a.0 + b.0, a.1 + b.1)),
            Op::Mul => r(0).zip(r(1)).map(|(a, b)| {
                let p = [a.0 * b.0, a.0 * b.1, a.1 * b.0, a.1 * b.1];
                (
                    p.iter().copied().fold(f32::INFINITY, f32::min),
                    p.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                )
            }),
            _ => None,
        };
        ranges[n.result.index()] = out;
    }
    if !any_bn {
        return Err(format!(
            "`{}` has no batch-norm statistics for data-free calibration; give calibration data with --calib DATA.npz",
            m.name
        ));
    }
    let values = ranges
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let v = &m.values[i];
            let (lo, hi) = (*r)?;
            (v.ty.elem == ElemType::F32 && !matches!(v.def, ValueDef::Const(_)))
                .then(|| (v.name.clone(), TensorStats::range(lo, hi)))
        })
        .collect();
    Ok(CalibStats {
        values,
        samples: 0,
        source: RangeSource::BatchNorm { k: DATA_FREE_K },
        warnings,
    })
}

/// How far a quantized model's outputs are from the float model's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutputError {
    pub samples: usize,
    /// Mean over samples of KL(softmax(float) || softmax(quantized)) of the first output.
    pub mean_kl: f64,
    /// Largest absolute difference of any output element.
    pub max_abs: f64,
    /// Fraction of samples whose first output has the same arg-max.
    pub top1_agreement: f64,
}

impl OutputError {
    /// Adds one sample's outputs to the sums (`mean_kl` holds the sum until the end).
    fn add(&mut self, a: &[f32], b: &[f32]) {
        self.mean_kl += kl_logits(a, b);
        for (x, y) in a.iter().zip(b) {
            self.max_abs = self.max_abs.max((x - y).abs() as f64);
        }
    }
}

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "on {} samples: mean KL {:.2e}, max |diff| {:.4}, top-1 agreement {:.2}%",
            self.samples,
            self.mean_kl,
            self.max_abs,
            self.top1_agreement * 100.0
        )
    }
}

/// How far one layer's result in the quantized model is from the float model's, over
/// calibration samples: the error accumulated through every quantized layer up to and
/// including this one (inputs and weights on their grids, exact integer accumulation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerError {
    /// Sum over samples and elements of the float value squared.
    pub signal: f64,
    /// Sum of the squared difference.
    pub noise: f64,
    /// Largest absolute difference.
    pub max_abs: f64,
}

impl LayerError {
    /// Signal-to-quantization-noise ratio in dB (infinite when exact).
    pub fn sqnr_db(&self) -> f64 {
        if self.noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.signal / self.noise).log10()
        }
    }

    fn add(&mut self, float: &[f32], quant: &[f32]) {
        for (&a, &b) in float.iter().zip(quant) {
            let d = (a - b) as f64;
            self.signal += (a as f64) * (a as f64);
            self.noise += d * d;
            self.max_abs = self.max_abs.max(d.abs());
        }
    }
}

impl std::fmt::Display for LayerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SQNR {:.1} dB, max |diff| {:.4}",
            self.sqnr_db(),
            self.max_abs
        )
    }
}

/// Per-layer errors: runs `float` and its QDQ form `qdq` (the quantize pass's output, in
/// which every original value keeps its id), compiled, on the first `limit` samples of
/// `npz`, and compares each value of `values` between the two.
pub fn layer_errors(
    float: &Module,
    qdq: &Module,
    values: &[ValueId],
    npz: &Path,
    limit: Option<usize>,
) -> Result<Vec<LayerError>, String> {
    layer_errors_with(
        float,
        qdq,
        values,
        npz,
        limit,
        &RunOptions::default(),
        &mut Vec::new(),
    )
}

/// [`layer_errors`] run by `run`; a fallback to the interpreter adds a note to `notes`.
pub fn layer_errors_with(
    float: &Module,
    qdq: &Module,
    values: &[ValueId],
    npz: &Path,
    limit: Option<usize>,
    run: &RunOptions,
    notes: &mut Vec<String>,
) -> Result<Vec<LayerError>, String> {
    let input = check_single_input(float)?;
    // The values each module computes (the others are left out of the comparison).
    let computed = |m: &Module| -> Vec<(usize, ValueId)> {
        values
            .iter()
            .enumerate()
            .filter(|(_, v)| {
                matches!(
                    m.values.get(v.index()).map(|x| &x.def),
                    Some(ValueDef::Node(_))
                )
            })
            .map(|(k, &v)| (k, v))
            .collect()
    };
    let (fc, qc) = (computed(float), computed(qdq));
    let ft: Vec<ValueId> = fc.iter().map(|p| p.1).collect();
    let qt: Vec<ValueId> = qc.iter().map(|p| p.1).collect();
    let fr = Tapped::new(float, &ft, run.engine, "the per-layer error report");
    let qr = Tapped::new(qdq, &qt, run.engine, "the per-layer error report");
    notes.extend(fr.note.clone().or(qr.note.clone()));
    let mut errs = vec![LayerError::default(); values.len()];
    let pb = progress_bar(run.progress, sample_count(npz, limit)?, "per-layer errors");
    stream_samples(npz, limit, 64, &mut |i, x| {
        let x = as_input(float, input, i, x)?;
        let mut fv: Vec<Option<Vec<f32>>> = vec![None; values.len()];
        fr.run(std::slice::from_ref(&x), &mut |j, _, v| {
            fv[fc[j].0] = Some(v.to_vec());
        })
        .map_err(|e| format!("sample {i}: {e}"))?;
        qr.run(std::slice::from_ref(&x), &mut |j, _, v| {
            let k = qc[j].0;
            if let Some(f) = &fv[k] {
                errs[k].add(f, v);
            }
        })
        .map_err(|e| format!("sample {i}: {e}"))?;
        pb.inc(1);
        Ok(())
    })?;
    pb.finish_and_clear();
    Ok(errs)
}

/// [`layer_errors_with`] and [`compare_outputs_with`] in one pass over the samples, so
/// the float model runs once per sample: per-layer errors of `values` between `float`
/// and its QDQ form `qdq`, and the output error of `quant` (the fused form of `qdq`).
#[allow(
    clippy::too_many_arguments,
    reason = "the two measurements' arguments, shared"
)]
pub fn measure_errors(
    float: &Module,
    qdq: &Module,
    quant: &Module,
    values: &[ValueId],
    npz: &Path,
    limit: Option<usize>,
    run: &RunOptions,
    notes: &mut Vec<String>,
) -> Result<(Vec<LayerError>, OutputError), String> {
    let input = check_single_input(float)?;
    let computed = |m: &Module| -> Vec<(usize, ValueId)> {
        values
            .iter()
            .enumerate()
            .filter(|(_, v)| {
                matches!(
                    m.values.get(v.index()).map(|x| &x.def),
                    Some(ValueDef::Node(_))
                )
            })
            .map(|(k, &v)| (k, v))
            .collect()
    };
    let (fc, qc) = (computed(float), computed(qdq));
    let ft: Vec<ValueId> = fc.iter().map(|p| p.1).collect();
    let qt: Vec<ValueId> = qc.iter().map(|p| p.1).collect();
    let what = "the error report";
    let fr = Tapped::new(float, &ft, run.engine, what);
    let qr = Tapped::new(qdq, &qt, run.engine, what);
    let ur = Tapped::new(quant, &[], run.engine, what);
    notes.extend(fr.note.clone().or(qr.note.clone()).or(ur.note.clone()));
    let mut errs = vec![LayerError::default(); values.len()];
    let mut e = OutputError::default();
    let mut agree = 0usize;
    let pb = progress_bar(run.progress, sample_count(npz, limit)?, "measuring errors");
    let n = stream_samples(npz, limit, 64, &mut |i, x| {
        let x = as_input(float, input, i, x)?;
        let mut fv: Vec<Option<Vec<f32>>> = vec![None; values.len()];
        let a = fr
            .run(std::slice::from_ref(&x), &mut |j, _, v| {
                fv[fc[j].0] = Some(v.to_vec());
            })
            .map_err(|e| format!("sample {i}: {e}"))?;
        qr.run(std::slice::from_ref(&x), &mut |j, _, v| {
            let k = qc[j].0;
            if let Some(f) = &fv[k] {
                errs[k].add(f, v);
            }
        })
        .map_err(|e| format!("sample {i}: {e}"))?;
        let b = ur
            .run(std::slice::from_ref(&x), &mut |_, _, _| {})
            .map_err(|e| format!("sample {i}: {e}"))?;
        let (Some(a), Some(b)) = (a[0].as_f32(), b[0].as_f32()) else {
            return Err("outputs are not f32".into());
        };
        e.add(a, b);
        agree += usize::from(argmax(a) == argmax(b));
        pb.inc(1);
        Ok(())
    })?;
    pb.finish_and_clear();
    e.samples = n;
    if n > 0 {
        e.mean_kl /= n as f64;
        e.top1_agreement = agree as f64 / n as f64;
    }
    Ok((errs, e))
}

/// Softmax in f64.
pub(crate) fn softmax(v: &[f32]) -> Vec<f64> {
    let mx = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = v.iter().map(|&x| (x as f64 - mx).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// KL(p || q) of two logit vectors' softmaxes.
pub(crate) fn kl_logits(p: &[f32], q: &[f32]) -> f64 {
    let (p, q) = (softmax(p), softmax(q));
    p.iter()
        .zip(&q)
        .filter(|(p, _)| **p > 0.0)
        .map(|(p, q)| p * (p / q.max(1e-300)).ln())
        .sum()
}

pub(crate) fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// Runs both modules, compiled, on the first `limit` samples of `npz` and compares
/// their first outputs.
pub fn compare_outputs(
    float: &Module,
    quant: &Module,
    npz: &Path,
    limit: Option<usize>,
) -> Result<OutputError, String> {
    compare_outputs_with(
        float,
        quant,
        npz,
        limit,
        &RunOptions::default(),
        &mut Vec::new(),
    )
}

/// [`compare_outputs`] run by `run`; a fallback to the interpreter adds a note to
/// `notes`.
pub fn compare_outputs_with(
    float: &Module,
    quant: &Module,
    npz: &Path,
    limit: Option<usize>,
    run: &RunOptions,
    notes: &mut Vec<String>,
) -> Result<OutputError, String> {
    let input = check_single_input(float)?;
    let fr = Tapped::new(float, &[], run.engine, "the output comparison");
    let qr = Tapped::new(quant, &[], run.engine, "the output comparison");
    notes.extend(fr.note.clone().or(qr.note.clone()));
    let mut e = OutputError::default();
    let mut agree = 0usize;
    let pb = progress_bar(run.progress, sample_count(npz, limit)?, "output error");
    let n = stream_samples(npz, limit, 64, &mut |i, x| {
        let x = as_input(float, input, i, x)?;
        let a = fr
            .run(std::slice::from_ref(&x), &mut |_, _, _| {})
            .map_err(|e| format!("sample {i}: {e}"))?;
        let b = qr
            .run(std::slice::from_ref(&x), &mut |_, _, _| {})
            .map_err(|e| format!("sample {i}: {e}"))?;
        let (Some(a), Some(b)) = (a[0].as_f32(), b[0].as_f32()) else {
            return Err("outputs are not f32".into());
        };
        e.add(a, b);
        agree += usize::from(argmax(a) == argmax(b));
        pb.inc(1);
        Ok(())
    })?;
    pb.finish_and_clear();
    e.samples = n;
    if n > 0 {
        e.mean_kl /= n as f64;
        e.top1_agreement = agree as f64 / n as f64;
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_grows_both_ways_and_keeps_counts() {
        let mut h = Histogram::default();
        h.add(&[0.0, 0.0, 0.0]);
        h.add(&[0.5, 1.0]);
        h.add(&[-3.0]);
        h.add(&(0..1000).map(|i| i as f32 / 100.0).collect::<Vec<_>>());
        assert_eq!(h.total(), 1006);
        assert!(h.lo <= -3.0 && h.hi() > 9.99);
        let med = h.quantile(0.5);
        assert!((med - 4.97).abs() < 0.1, "median {med}");
    }

    #[test]
    fn methods_parse_and_print() {
        for n in CalibMethod::NAMES {
            assert_eq!(n.parse::<CalibMethod>().unwrap().name(), n);
        }
        assert!(
            "entropy"
                .parse::<CalibMethod>()
                .unwrap_err()
                .contains("minmax")
        );
    }
}
