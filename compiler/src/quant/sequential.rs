//! `--sequential`: bottom-up weight quantization with error feedback (issue 13, the
//! compile-time counterpart of BiTAT; `docs/methods.md`, "Sequential calibration").
//!
//! Layers are taken in order. For each, the module as quantized so far (the layers
//! below already re-quantized by this pass) runs on the calibration samples with a tap
//! on the layer's input, so the layer sees the quantized distributions of the layers
//! below it. From that input the pass accumulates the correlation of the layer's input
//! patches, `H = sum p p^T` over every output position (the im2col rows of a
//! convolution, the rows of a gemm), and re-quantizes the float weights of every output
//! channel against it, minimising `(w - q)^T H (w - q)`, the error of the layer's result
//! on those inputs rather than of the weights:
//!
//! - the weights are taken one input tap at a time; each is rounded onto the channel's
//!   grid (the scales `quantize_model` chose; for binary weights `alpha * sign(w)`), and
//!   its rounding error is spread over the taps not yet rounded through the upper
//!   Cholesky factor `U` of `H^-1` (`w[j+1..] -= e / U[j][j] * U[j][j+1..]`). This is
//!   the error feedback of GPTQ (Frantar et al., 2022), run per output channel;
//! - binary weights then get the scale that is least-squares in the same metric,
//!   `alpha = b^T H w / b^T H b` (not with `--pow2`: those scales stay powers of two).
//!
//! Before its weights, each layer's input activation is calibrated again (its range
//! chosen by the calibration method from the values it takes on the module as quantized
//! so far, not on the float model): the quantizer every reader of the activation
//! shares, set at its first reader; the range it has (QIL's interval, with
//! `--calib-method qil`) is one of the candidates. The model's own input and binarized
//! inputs (their threshold is part of the bias; the gain/offset fit below adjusts them)
//! keep their ranges.
//!
//! `H` is damped by 1 % of its mean diagonal, and inputs never seen non-zero keep the
//! plain rounding. Layers with groups, or with more than [`MAX_TAPS`] taps per output
//! (the factorisation is cubic), keep `quantize_model`'s weights; the returned notes
//! say which. A 1-2-bit layer gets the gain/offset fit of `binary.rs` right after its
//! weights, before the layers above it are taken (with power-of-two scales, its gains
//! rounded to powers of two).

use std::path::Path;

use qcc_ir::ops::Attrs;
use qcc_ir::{ConstData, ElemType, Module, Op, QuantParams, QuantType, ValueDef, ValueId};

use super::binary::refine_binary_with;
use super::calibrate::{RangeSource, TensorStats, as_input, check_single_input, stream_samples};
use super::insert::{QuantReport, source};
use super::scheme::{ActParams, act_type, choose_range};
use super::tap::{RunOptions, Tapped, progress_bar};

/// The most input taps per output (`K`) a layer may have to be re-quantized.
pub const MAX_TAPS: usize = 4608;

/// Calibration samples the pass runs on (at most).
pub const SEQUENTIAL_SAMPLES: usize = 1000;

/// At most this many input patches per layer feed `H` (spread evenly over the samples).
const MAX_PATCHES: usize = 32768;

/// The weight index of (output channel, tap).
type Index = Box<dyn Fn(usize, usize) -> usize>;

/// What [`sequential_weights`] did.
#[derive(Clone, Debug, Default)]
pub struct SequentialReport {
    /// Layers re-quantized, and the relative drop of the summed output error
    /// `sum (w - q)^T H (w - q)` against plain rounding, per layer.
    pub layers: Vec<(String, f64, f64)>,
    /// 1-2-bit layers whose gain and offset were fitted (`binary.rs`), each right after
    /// its weights, so the caller does not fit them again.
    pub fitted: usize,
    /// Layer input activations calibrated again on the quantized module.
    pub acts_seen: usize,
    /// Those whose range changed.
    pub acts: Vec<NewRange>,
    pub notes: Vec<String>,
}

/// An activation whose range [`sequential_weights`] chose again.
#[derive(Clone, Debug)]
pub struct NewRange {
    pub value: String,
    /// The range calibrated on the float model.
    pub before: (f32, f32),
    /// The range chosen on the quantized layers below.
    pub after: (f32, f32),
}

/// How [`sequential_weights`] calibrates the layers' input activations again: the
/// calibration method and the activation quantizer's options (`quantize_model`'s).
#[derive(Clone, Debug)]
pub struct ActCalib {
    pub source: RangeSource,
    pub symmetric: bool,
    pub pow2: bool,
}

/// The quantize result behind a layer input `x` of the QDQ module (through data
/// movement) and the f32 value it quantizes, unless that is a graph input.
fn input_quantizer(q: &Module, x: ValueId) -> Option<(ValueId, ValueId)> {
    let dq = def_node(q, source(q, x)).filter(|d| d.op == Op::Dequantize)?;
    let qn = def_node(q, dq.operands[0]).filter(|d| d.op == Op::Quantize)?;
    (!q.inputs.contains(&qn.operands[0])).then_some((dq.operands[0], qn.operands[0]))
}

/// How a layer reads its input: the patches whose products with a weight row are the
/// layer's outputs.
enum Patches {
    /// `x` [N, C, H, W] -> rows of C*kh*kw (w [M, C, kh, kw]).
    Conv {
        kh: usize,
        kw: usize,
        sh: usize,
        sw: usize,
        dh: usize,
        dw: usize,
        top: usize,
        left: usize,
        oh: usize,
        ow: usize,
    },
    /// `x` [.., K] -> rows of K.
    Rows,
}

fn def_node(q: &Module, v: ValueId) -> Option<&qcc_ir::Node> {
    match q.value(v).def {
        ValueDef::Node(n) => Some(q.node(n)),
        _ => None,
    }
}

fn usizes(a: &Attrs<'_>, name: &str, n: usize, default: usize) -> Result<Vec<usize>, String> {
    let v = a.ints(name).unwrap_or_default();
    if v.is_empty() {
        return Ok(vec![default; n]);
    }
    v.iter()
        .map(|&x| usize::try_from(x).map_err(|_| format!("{name} {x} is negative")))
        .collect()
}

/// The patches of one sample's input `x` (shape `shape`): rows of `k` values.
fn patch_rows(k: usize, x: &[f32], shape: &[usize], p: &Patches) -> Vec<f64> {
    match p {
        Patches::Rows => x.iter().map(|&v| v as f64).collect(),
        Patches::Conv {
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            top,
            left,
            oh,
            ow,
        } => {
            let (c, hh, ww) = (shape[1], shape[2], shape[3]);
            let mut out = Vec::with_capacity(shape[0] * oh * ow * k);
            for img in x.chunks(c * hh * ww) {
                for oy in 0..*oh {
                    for ox in 0..*ow {
                        for ci in 0..c {
                            for ky in 0..*kh {
                                for kx in 0..*kw {
                                    let iy = (oy * sh + ky * dh) as isize - *top as isize;
                                    let ix = (ox * sw + kx * dw) as isize - *left as isize;
                                    out.push(
                                        if iy >= 0
                                            && ix >= 0
                                            && (iy as usize) < hh
                                            && (ix as usize) < ww
                                        {
                                            img[(ci * hh + iy as usize) * ww + ix as usize] as f64
                                        } else {
                                            0.0
                                        },
                                    );
                                }
                            }
                        }
                    }
                }
            }
            out
        }
    }
}

/// Adds every `step`-th row pair of `rq` (the quantized module's patches) and `rf` (the
/// float module's, same positions) to `h += rq rq^T` and `g += rq rf^T` (K x K each).
fn accumulate(
    h: &mut [f64],
    g: &mut [f64],
    k: usize,
    rq: &[f64],
    rf: &[f64],
    step: usize,
    count: &mut usize,
) {
    for (q, f) in rq.chunks(k).zip(rf.chunks(k)) {
        *count += 1;
        if !(*count - 1).is_multiple_of(step) {
            continue;
        }
        for (i, &qi) in q.iter().enumerate() {
            if qi == 0.0 {
                continue;
            }
            let hr = &mut h[i * k..(i + 1) * k];
            for (hj, &qj) in hr.iter_mut().zip(q) {
                *hj += qi * qj;
            }
            let gr = &mut g[i * k..(i + 1) * k];
            for (gj, &fj) in gr.iter_mut().zip(f) {
                *gj += qi * fj;
            }
        }
    }
}

/// The upper Cholesky factor `U` (`A = U^T U`) of symmetric positive definite `a`
/// (n x n, row-major), or `None` when `a` is not positive definite.
fn cholesky_upper(a: &[f64], n: usize) -> Option<Vec<f64>> {
    // Lower factor L (A = L L^T); U = L^T.
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for t in 0..j {
                s -= l[i * n + t] * l[j * n + t];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = l[i * n + j];
        }
    }
    Some(u)
}

/// The inverse of symmetric positive definite `a` (n x n) from its upper factor `u`.
fn spd_inverse(u: &[f64], n: usize) -> Vec<f64> {
    // A = U^T U, A^-1 = U^-1 U^-T. Invert the upper triangular U column by column.
    let mut ui = vec![0f64; n * n];
    for j in 0..n {
        ui[j * n + j] = 1.0 / u[j * n + j];
        for i in (0..j).rev() {
            let mut s = 0.0;
            for t in i + 1..=j {
                s += u[i * n + t] * ui[t * n + j];
            }
            ui[i * n + j] = -s / u[i * n + i];
        }
    }
    let mut inv = vec![0f64; n * n];
    for i in 0..n {
        for j in i..n {
            let mut s = 0.0;
            for t in j..n {
                s += ui[i * n + t] * ui[j * n + t];
            }
            inv[i * n + j] = s;
            inv[j * n + i] = s;
        }
    }
    inv
}

/// `(a - b)^T H (a - b)`.
fn h_norm(h: &[f64], n: usize, a: &[f64], b: &[f64]) -> f64 {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let mut s = 0.0;
    for i in 0..n {
        if d[i] == 0.0 {
            continue;
        }
        let mut r = 0.0;
        for j in 0..n {
            r += h[i * n + j] * d[j];
        }
        s += d[i] * r;
    }
    s
}

/// One output channel's grid: scale and code range, or binary (`alpha * sign`).
#[derive(Clone, Copy)]
struct Grid {
    scale: f64,
    lo: i64,
    hi: i64,
    binary: bool,
}

impl Grid {
    fn code(&self, w: f64) -> i64 {
        if self.binary {
            if w < 0.0 { -1 } else { 1 }
        } else if self.scale > 0.0 {
            ((w / self.scale).round_ties_even() as i64).clamp(self.lo, self.hi)
        } else {
            0
        }
    }
}

/// Re-quantizes one output channel `w` (K taps) on `grid` with error feedback through
/// `u` (upper factor of `H^-1`); returns the codes.
fn quantize_row(w: &[f64], grid: Grid, u: &[f64], k: usize) -> Vec<i64> {
    let mut w = w.to_vec();
    let mut codes = vec![0i64; k];
    for j in 0..k {
        let c = grid.code(w[j]);
        codes[j] = c;
        let q = c as f64 * grid.scale;
        let e = (w[j] - q) / u[j * k + j];
        let ur = &u[j * k..(j + 1) * k];
        for t in j + 1..k {
            w[t] -= e * ur[t];
        }
    }
    codes
}

/// At most this many (quantized, float) value pairs judge an activation's candidate
/// ranges (spread evenly over the samples).
const MAX_ACT_PAIRS: usize = 1 << 20;

/// Factors on the quantized module's observed range of an activation, the candidates
/// besides the calibration method's range on those values.
const ACT_FACTORS: [f32; 11] = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5];

/// The smallest output scale the integer kernel computing `v` (through a relu or clip)
/// allows: 3/4 of its accumulator step, the product of its input's scale and its
/// largest weight scale (`quantize_model`'s rule). `None` when no kernel computes `v`.
fn producer_min_scale(q: &Module, mut v: ValueId) -> Option<f64> {
    loop {
        let n = def_node(q, v)?;
        match n.op {
            Op::Relu | Op::Clip => v = n.operands[0],
            Op::Conv2d | Op::Gemm | Op::MatMul => {
                let scale_of = |x: ValueId| -> Option<f64> {
                    let d = def_node(q, source(q, x)).filter(|d| d.op == Op::Dequantize)?;
                    let t = q.ty(d.operands[0]).elem.quant()?;
                    Some(t.params.scales().iter().copied().fold(0f32, f32::max) as f64)
                };
                return Some(0.75 * scale_of(n.operands[0])? * scale_of(n.operands[1])?);
            }
            _ => return None,
        }
    }
}

/// Whether `v` of the QDQ module is the float module's value of the same id (the QDQ
/// module keeps the float module's values and their ids).
fn same_value(float: &Module, qdq: &Module, v: ValueId) -> bool {
    v.index() < float.values.len() && float.value(v).name == qdq.value(v).name
}

/// The float model compiled once with taps on `values`.
struct FloatTaps<'a> {
    tapped: &'a Tapped<'a>,
    values: &'a [ValueId],
}

impl FloatTaps<'_> {
    /// Runs the float model on `x` and calls `f(shape, values)` with the tap on `v`.
    fn run(
        &self,
        x: &qcc_ir::interp::Tensor,
        v: ValueId,
        f: &mut dyn FnMut(&[usize], &[f32]),
    ) -> Result<(), String> {
        let k = self
            .values
            .binary_search(&v)
            .map_err(|_| "internal: the --sequential pass has no float tap".to_string())?;
        self.tapped
            .run(std::slice::from_ref(x), &mut |i, shape, vals| {
                if i == k {
                    f(shape, vals)
                }
            })?;
        Ok(())
    }
}

/// Chooses again the quantizer `qv` of the f32 value `fv` (its parameters now `cur`):
/// `fv` is observed on the QDQ module as quantized so far and on the float model, and
/// the candidate ranges (the calibration method's on the quantized module's values, that
/// range shrunk by [`ACT_FACTORS`], and `cur`) are judged by the squared error of the
/// quantized module's values, quantized by the candidate, against the float model's
/// values at the same positions. The new parameters, or `None` when the current ones stay
/// best.
#[allow(clippy::too_many_arguments)]
fn calibrate_input(
    float: &Module,
    floats: &FloatTaps<'_>,
    qdq: &Module,
    qv: ValueId,
    fv: ValueId,
    ac: &ActCalib,
    npz: &Path,
    limit: Option<usize>,
    run: &RunOptions,
) -> Result<Option<ActParams>, String> {
    let input = check_single_input(float)?;
    let Some(qt) = qdq.ty(qv).elem.quant().cloned() else {
        return Ok(None);
    };
    if !same_value(float, qdq, fv) {
        return Ok(None);
    }
    let total = super::calibrate::sample_count(npz, limit)?;
    let per_sample: usize = qdq.ty(fv).shape.iter().product();
    let step = (total * per_sample).div_ceil(MAX_ACT_PAIRS).max(1);
    let mut st = TensorStats::empty();
    let (mut xq, mut xf) = (Vec::new(), Vec::new());
    {
        let what = "the --sequential pass";
        let tq = Tapped::new(qdq, &[fv], run.engine, what);
        let mut offset = 0usize;
        stream_samples(npz, limit, 64, &mut |i, s| {
            let s = as_input(float, input, i, s)?;
            let mut vq = Vec::new();
            tq.run(std::slice::from_ref(&s), &mut |_, shape, v| {
                st.observe_f32(shape, v);
                vq = v.to_vec();
            })?;
            let mut vf = Vec::new();
            floats.run(&s, fv, &mut |_, v| vf = v.to_vec())?;
            if vq.len() != vf.len() {
                return Err(format!(
                    "internal: the --sequential pass saw {} and {} values of {}",
                    vq.len(),
                    vf.len(),
                    qdq.value(fv).spelling()
                ));
            }
            // Every `step`-th value over the whole stream.
            let first = (step - offset % step) % step;
            for j in (first..vq.len()).step_by(step) {
                if vq[j].is_finite() && vf[j].is_finite() {
                    xq.push(vq[j]);
                    xf.push(vf[j]);
                }
            }
            offset += vq.len();
            Ok(())
        })?;
    }
    if xq.is_empty() || !st.min.is_finite() || !st.max.is_finite() {
        return Ok(None);
    }
    let bits = qt.storage.bits;
    // (A range no quantizer takes, e.g. of an activation that is always 0, offers no
    // candidate: the current quantizer stays.)
    let mut cands: Vec<ActParams> = choose_range(&st, &ac.source, bits, ac.symmetric, ac.pow2)
        .into_iter()
        .collect();
    // A kernel's output scale must stay above 3/4 of its accumulator step, as
    // `quantize_model` keeps it, for `fuse-int` to prove the integer kernel.
    let floor = producer_min_scale(qdq, fv).unwrap_or(0.0);
    let (lo, hi) = (st.min.min(0.0), st.max.max(0.0));
    for &f in &ACT_FACTORS {
        if let Ok(ty) = act_type(lo * f, hi * f, bits, ac.symmetric, ac.pow2) {
            cands.push(ActParams {
                ty,
                lo: lo * f,
                hi: hi * f,
            });
        }
    }
    let err = |t: &QuantType| -> f64 {
        let QuantParams::PerTensor { scale, zero_point } = t.params else {
            return f64::INFINITY;
        };
        let (s, z) = (scale as f64, zero_point as f64);
        let (qmin, qmax) = (t.qmin() as f64, t.qmax() as f64);
        xq.iter()
            .zip(&xf)
            .map(|(&q, &f)| {
                let c = ((q as f64 / s).round_ties_even() + z).clamp(qmin, qmax);
                let e = (c - z) * s - f as f64;
                e * e
            })
            .sum()
    };
    let mut best = (err(&qt), None);
    for c in cands {
        if (c.ty.params.scales()[0] as f64) < floor {
            continue;
        }
        let e = err(&c.ty);
        if e < best.0 && c.ty != qt {
            best = (e, Some(c));
        }
    }
    Ok(best.1)
}

/// Runs the pass on `qdq` (made from `float` by `quantize_model`, `report` its layers)
/// with the calibration samples of `npz` (at most `limit`).
pub fn sequential_weights(
    float: &Module,
    qdq: &mut Module,
    report: &mut QuantReport,
    npz: &Path,
    limit: Option<usize>,
    run: &RunOptions,
    acts: Option<&ActCalib>,
) -> Result<SequentialReport, String> {
    let input = check_single_input(float)?;
    let mut out = SequentialReport::default();
    let mut calibrated: Vec<ValueId> = Vec::new();
    // The float model compiled once with a tap on every value the layers compare with:
    // each layer's input, and each activation calibrated again.
    let mut ftaps: Vec<ValueId> = Vec::new();
    for l in &report.layers {
        if let (Some(n), Some(f)) = (def_node(qdq, l.output), def_node(float, l.output)) {
            ftaps.push(f.operands[0]);
            if acts.is_some()
                && let Some((_, fv)) = input_quantizer(qdq, n.operands[0])
                && same_value(float, qdq, fv)
            {
                ftaps.push(fv);
            }
        }
    }
    ftaps.sort();
    ftaps.dedup();
    let tf = Tapped::new(float, &ftaps, run.engine, "the --sequential pass");
    out.notes.extend(tf.note.clone());
    let floats = FloatTaps {
        tapped: &tf,
        values: &ftaps,
    };
    let total = super::calibrate::sample_count(npz, limit)?;
    let pb = progress_bar(
        run.progress,
        total * report.layers.len(),
        "sequential weights",
    );
    for li in 0..report.layers.len() {
        let layer = report.layers[li].clone();
        let Some(n) = def_node(qdq, layer.output).cloned() else {
            continue;
        };
        let Some(fnode) = def_node(float, layer.output).cloned() else {
            continue;
        };
        // The input activation, calibrated on the module as quantized so far.
        if let Some(ac) = acts
            && !(layer.wbits == 1 && layer.abits == 1)
            && let Some((qv, fv)) = input_quantizer(qdq, n.operands[0])
            && !calibrated.contains(&qv)
        {
            calibrated.push(qv);
            out.acts_seen += 1;
            if let Some(p) = calibrate_input(float, &floats, qdq, qv, fv, ac, npz, limit, run)? {
                let before = (layer.act.lo, layer.act.hi);
                qdq.value_mut(qv).ty.elem = ElemType::Quant(p.ty.clone());
                // Every layer reading this activation reports the new range.
                for l in report.layers.iter_mut() {
                    if let Some(ln) = def_node(qdq, l.output)
                        && input_quantizer(qdq, ln.operands[0]).map(|(v, _)| v) == Some(qv)
                    {
                        l.act = p.clone();
                    }
                }
                out.acts.push(NewRange {
                    value: qdq.value(fv).spelling(),
                    before,
                    after: (p.lo, p.hi),
                });
            }
        }
        // The weight codes behind their dequantize, and the float weights.
        let Some(dq) = def_node(qdq, n.operands[1]).filter(|d| d.op == Op::Dequantize) else {
            continue;
        };
        let wc = dq.operands[0];
        let Some(ConstData::Int(codes)) = qdq.const_data(wc).cloned() else {
            continue;
        };
        let Some(ConstData::F32(wf)) = float.const_data(fnode.operands[1]).cloned() else {
            continue;
        };
        let Some(qt) = qdq.ty(wc).elem.quant().cloned() else {
            continue;
        };
        let QuantParams::PerAxis { axis, scales, .. } = &qt.params else {
            continue;
        };
        let wshape = qdq.ty(wc).shape.clone();
        let x = n.operands[0];
        let xshape = qdq.ty(x).shape.clone();
        // Output channels, taps per output, and the weight index of (channel, tap).
        let (m, k, patches, index): (usize, usize, Patches, Index) = match n.op {
            Op::Conv2d if wshape.len() == 4 && xshape.len() == 4 && *axis == 0 => {
                let a = Attrs::new(Op::Conv2d, &n.attrs);
                if a.int("group").unwrap_or(1) != 1 {
                    out.notes.push(format!(
                        "--sequential: {} has groups; it keeps its plain weights",
                        layer.name
                    ));
                    continue;
                }
                let s = usizes(&a, "strides", 2, 1)?;
                let d = usizes(&a, "dilations", 2, 1)?;
                let pads = usizes(&a, "pads", 4, 0)?;
                let (oh, ow) = {
                    let ys = &qdq.ty(layer.output).shape;
                    (ys[2], ys[3])
                };
                let k = wshape[1] * wshape[2] * wshape[3];
                (
                    wshape[0],
                    k,
                    Patches::Conv {
                        kh: wshape[2],
                        kw: wshape[3],
                        sh: s[0],
                        sw: s[1],
                        dh: d[0],
                        dw: d[1],
                        top: pads[0],
                        left: pads[1],
                        oh,
                        ow,
                    },
                    Box::new(move |c, j| c * k + j),
                )
            }
            Op::Gemm | Op::MatMul if wshape.len() == 2 && *axis < 2 => {
                if n.op == Op::Gemm {
                    let a = Attrs::new(Op::Gemm, &n.attrs);
                    if a.bool("trans_a").unwrap_or(false) {
                        continue;
                    }
                }
                // Output channels along `axis`, taps along the other axis.
                let (m, k) = if *axis == 0 {
                    (wshape[0], wshape[1])
                } else {
                    (wshape[1], wshape[0])
                };
                if xshape.last() != Some(&k) {
                    continue;
                }
                let ax = *axis;
                (
                    m,
                    k,
                    Patches::Rows,
                    Box::new(move |c, j| if ax == 0 { c * k + j } else { j * m + c }),
                )
            }
            _ => continue,
        };
        if k > MAX_TAPS {
            out.notes.push(format!(
                "--sequential: {} has {k} taps per output (more than {MAX_TAPS}); it keeps its plain weights",
                layer.name
            ));
            continue;
        }
        // The input correlation on the module as quantized so far.
        let per_sample = match &patches {
            Patches::Conv { oh, ow, .. } => xshape[0] * oh * ow,
            Patches::Rows => xshape.iter().product::<usize>() / k.max(1),
        };
        let step = (total * per_sample).div_ceil(MAX_PATCHES).max(1);
        // A binarized input is t + beta * sign(x - t) with t * sum(w) in the bias: its
        // product with the weights stands for (x - t) w.
        let binarized = layer.wbits == 1 && layer.abits == 1;
        let shift = binarized.then(|| (layer.act.lo + layer.act.hi) / 2.0);
        let mut h = vec![0f64; k * k];
        let mut g = vec![0f64; k * k];
        let mut count = 0usize;
        {
            let what = "the --sequential pass";
            let tq = Tapped::new(qdq, &[x], run.engine, what);
            out.notes.extend(tq.note.clone());
            stream_samples(npz, limit, 64, &mut |i, s| {
                let s = as_input(float, input, i, s)?;
                let mut rq = Vec::new();
                tq.run(std::slice::from_ref(&s), &mut |_, shape, v| {
                    rq = patch_rows(k, v, shape, &patches);
                })?;
                let mut rf = Vec::new();
                floats.run(&s, fnode.operands[0], &mut |shape, v| {
                    if let Some(t) = shift {
                        let c: Vec<f32> = v.iter().map(|&x| x - t).collect();
                        rf = patch_rows(k, &c, shape, &patches);
                    } else {
                        rf = patch_rows(k, v, shape, &patches);
                    }
                })?;
                if rq.len() != rf.len() {
                    return Err(format!(
                        "internal: the --sequential pass saw {} and {} input values at {}",
                        rq.len(),
                        rf.len(),
                        layer.name
                    ));
                }
                accumulate(&mut h, &mut g, k, &rq, &rf, step, &mut count);
                pb.inc(1);
                Ok(())
            })?;
        }
        let mean_diag = (0..k).map(|i| h[i * k + i]).sum::<f64>() / k as f64;
        if mean_diag <= 0.0 || !mean_diag.is_finite() {
            continue;
        }
        let h0 = h.clone();
        let dead: Vec<bool> = (0..k).map(|i| h[i * k + i] == 0.0).collect();
        for i in 0..k {
            if dead[i] {
                h[i * k + i] = 1.0;
            }
            h[i * k + i] += 0.01 * mean_diag;
        }
        let Some(hu) = cholesky_upper(&h, k) else {
            out.notes.push(format!(
                "--sequential: the input correlation of {} is not positive definite; it keeps its plain weights",
                layer.name
            ));
            continue;
        };
        let hinv = spd_inverse(&hu, k);
        let Some(u) = cholesky_upper(&hinv, k) else {
            continue;
        };
        let binary = layer.wbits == 1;
        let bits = qt.storage.bits as u32;
        let (lo, hi) = if binary {
            (-1, 1)
        } else if qt.narrow {
            (-((1i64 << (bits - 1)) - 1), (1i64 << (bits - 1)) - 1)
        } else {
            (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
        };
        let mut new_codes = codes.clone();
        let mut new_scales = scales.clone();
        let (mut before, mut after) = (0f64, 0f64);
        // Each layer aims at the float layer's result on the float inputs: w* = w + Hd^-1
        // (G - H) w is the (damped) least-squares weights on the quantized inputs, so it
        // makes up for the error of the layers below.
        for c in 0..m {
            let w: Vec<f64> = (0..k).map(|j| wf[index(c, j)] as f64).collect();
            let w: Vec<f64> = {
                // w + Hd^-1 (G - H) w: the damping shrinks the correction, not w.
                let r: Vec<f64> = (0..k)
                    .map(|i| (0..k).map(|j| (g[i * k + j] - h0[i * k + j]) * w[j]).sum())
                    .collect();
                (0..k)
                    .map(|i| w[i] + (0..k).map(|j| hinv[i * k + j] * r[j]).sum::<f64>())
                    .collect()
            };
            let grid = Grid {
                scale: scales[c] as f64,
                lo,
                hi,
                binary,
            };
            let plain: Vec<f64> = (0..k)
                .map(|j| codes[index(c, j)] as f64 * grid.scale)
                .collect();
            let mut q = quantize_row(&w, grid, &u, k);
            let mut scale = grid.scale;
            if binary && !qt.pow2 {
                // The least-squares scale of the chosen signs in the metric of H (power-of-
                // two scales stay as chosen: a shift cannot take it).
                let b: Vec<f64> = q.iter().map(|&v| v as f64).collect();
                let zero = vec![0f64; k];
                let bhb = h_norm(&h, k, &b, &zero);
                let mut bhw = 0.0;
                for i in 0..k {
                    let mut r = 0.0;
                    for j in 0..k {
                        r += h[i * k + j] * w[j];
                    }
                    bhw += b[i] * r;
                }
                if bhb > 0.0 && bhw > 0.0 {
                    scale = bhw / bhb;
                }
            }
            let seq: Vec<f64> = q.iter().map(|&v| v as f64 * scale).collect();
            let (e0, e1) = (h_norm(&h, k, &w, &plain), h_norm(&h, k, &w, &seq));
            if e1 > e0 {
                // Plain rounding was better on these inputs (rare): keep it.
                q = (0..k).map(|j| codes[index(c, j)]).collect();
                scale = grid.scale;
            }
            before += e0;
            after += e0.min(e1);
            for (j, &v) in q.iter().enumerate() {
                new_codes[index(c, j)] = v;
            }
            new_scales[c] = scale as f32;
        }
        let mut nq = qt.clone();
        if let QuantParams::PerAxis { scales, .. } = &mut nq.params {
            *scales = new_scales.clone();
        }
        qdq.value_mut(wc).ty.elem = ElemType::Quant(nq);
        qdq.value_mut(wc).def = ValueDef::Const(ConstData::Int(new_codes));
        let l = &mut report.layers[li];
        l.w_scales = (
            new_scales.iter().copied().fold(f32::INFINITY, f32::min),
            new_scales.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        );
        out.layers.push((layer.name.clone(), before, after));
        // A 1-2-bit layer gets its per-channel gain and offset now, so the layers above
        // it are fitted to what it finally computes.
        if layer.wbits <= 2 {
            let mut one = report.clone();
            one.layers = vec![report.layers[li].clone()];
            out.fitted +=
                refine_binary_with(float, qdq, &mut one, npz, limit, run, &mut out.notes)?;
            report.layers[li] = one.layers.remove(0);
        }
    }
    pb.finish_and_clear();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_and_inverse_agree() {
        let n = 3;
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let u = cholesky_upper(&a, n).unwrap();
        // U^T U = A.
        for i in 0..n {
            for j in 0..n {
                let s: f64 = (0..n).map(|t| u[t * n + i] * u[t * n + j]).sum();
                assert!((s - a[i * n + j]).abs() < 1e-12);
            }
        }
        let inv = spd_inverse(&u, n);
        for i in 0..n {
            for j in 0..n {
                let s: f64 = (0..n).map(|t| a[i * n + t] * inv[t * n + j]).sum();
                assert!((s - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert!(cholesky_upper(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    /// With correlated inputs, error feedback beats plain rounding in the metric of H,
    /// and with H = I it is plain rounding.
    #[test]
    fn error_feedback_beats_rounding_on_correlated_inputs() {
        let k = 6;
        let mut h = vec![0f64; k * k];
        for i in 0..k {
            for j in 0..k {
                h[i * k + j] =
                    0.9f64.powi((i as i32 - j as i32).abs()) + if i == j { 0.01 } else { 0.0 };
            }
        }
        let w = [0.34, -0.71, 0.12, 0.55, -0.26, 0.93];
        let grid = Grid {
            scale: 0.25,
            lo: -3,
            hi: 3,
            binary: false,
        };
        let plain: Vec<f64> = w.iter().map(|&x| grid.code(x) as f64 * 0.25).collect();
        let u = cholesky_upper(&spd_inverse(&cholesky_upper(&h, k).unwrap(), k), k).unwrap();
        let q: Vec<f64> = quantize_row(&w, grid, &u, k)
            .iter()
            .map(|&c| c as f64 * 0.25)
            .collect();
        assert!(h_norm(&h, k, &w, &q) < h_norm(&h, k, &w, &plain));
        let mut eye = vec![0f64; k * k];
        for i in 0..k {
            eye[i * k + i] = 1.0;
        }
        let ue = cholesky_upper(&eye, k).unwrap();
        let qe: Vec<i64> = quantize_row(&w, grid, &ue, k);
        let pe: Vec<i64> = w.iter().map(|&x| grid.code(x)).collect();
        assert_eq!(qe, pe);
    }
}
