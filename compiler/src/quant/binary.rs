//! Post-training binarization (`--bits 1`): the parameters of the 1-bit layers.
//!
//! - Weights (XNOR-Net): `sign(w)` (zero to +1) per element, times one scale per output
//!   channel, `alpha[m] = mean |w[m, ..]|` (the least-squares scale for sign codes). They
//!   become constant codes +-1 of `q<i2 narrow, alpha:0>` (per axis) behind a
//!   `dequantize`, the form `lower-fake-quant` gives Brevitas' bipolar weights, so the
//!   `rewrite` pass turns them into `b1` constants of the XNOR-popcount kernels.
//! - Activations: a two-level quantizer per tensor, `x ~ t + beta * sign(x - t)`, with
//!   threshold `t` and scale `beta` of the least squared error (Lloyd's iteration: the
//!   threshold is the midpoint of the two levels, each level the mean of its side). A
//!   threshold is needed because the inputs of the middle layers usually follow a relu,
//!   whose sign is +1 everywhere. The module computes `binarize(x - t)` (as `b1`), casts
//!   it to `q<i2 narrow, beta:0>` and dequantizes it; the constant part `t * sum(w)` goes
//!   into the layer's bias (exact up to the zero padding at the borders, where the float
//!   layer saw zeros instead of `t`). The rewrite turns `binarize(dequantize(q) - t)` into
//!   an integer threshold on the 8-bit codes `q` of the activation.
//!
//! The activation distribution comes from the calibration histogram, or, data-free, from
//! the batch-norm statistics: each channel of a conv/gemm with a folded batch norm is
//! taken as Gaussian (`bn_bias`, `bn_scale^2`), moments follow relu (rectified Gaussian),
//! adds (independent sums) and data movement, and the distribution of the binarized value
//! is the mixture of its channels.
//!
//! With calibration data, [`refine_binary`] then fits each binarized layer's result to
//! the float model's per output channel (gain into the weight scales, offset into the
//! bias): the binary product correlates imperfectly with the float one, so `alpha *
//! beta` alone overstates its gain.

use std::path::Path;

use qcc_ir::interp::{Tensor, run_with};
use qcc_ir::{
    Attr, ConstData, ElemType, IntType, Module, Op, QuantParams, QuantType, ValueDef, ValueId,
};

use super::calibrate::{TensorStats, as_input, check_single_input, stream_samples};
use super::insert::{LayerReport, QuantReport};
use super::segments::{Chain, State};
use super::tap::{Engine, RunOptions, progress_bar};

/// The two-level quantizer of one activation: `x ~ t + beta * sign(x - t)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BinaryAct {
    /// Threshold (and midpoint of the two levels).
    pub t: f32,
    /// Half the distance between the levels (> 0).
    pub beta: f32,
}

/// Weights binarized per output channel along `axis`: the type `q<i2 narrow, alpha:0>`
/// (per axis) and the codes +-1 (`w >= 0` gives +1). A channel of zeros gets the mean of
/// the other scales (its codes are +1, so it contributes `alpha * sum x`; the scale only
/// has to be usable), or 1 when every channel is zero.
pub fn binarize_weights(w: &[f32], shape: &[usize], axis: usize) -> (QuantType, Vec<i64>) {
    let c = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product::<usize>().max(1);
    let ch = |i: usize| (i / inner) % c;
    let mut sum = vec![0f64; c];
    let mut n = vec![0usize; c];
    for (i, &x) in w.iter().enumerate() {
        sum[ch(i)] += (x as f64).abs();
        n[ch(i)] += 1;
    }
    let mut alpha: Vec<f64> = sum
        .iter()
        .zip(&n)
        .map(|(&s, &k)| if k == 0 { 0.0 } else { s / k as f64 })
        .collect();
    let nonzero: Vec<f64> = alpha
        .iter()
        .copied()
        .filter(|&a| a > 0.0 && (a as f32).is_normal())
        .collect();
    let fill = if nonzero.is_empty() {
        1.0
    } else {
        nonzero.iter().sum::<f64>() / nonzero.len() as f64
    };
    for a in &mut alpha {
        if !(*a > 0.0 && (*a as f32).is_normal()) {
            *a = fill;
        }
    }
    let codes = w.iter().map(|&x| if x >= 0.0 { 1 } else { -1 }).collect();
    let ty = QuantType {
        storage: IntType::new(2, true),
        narrow: true,
        pow2: false,
        params: QuantParams::PerAxis {
            axis,
            scales: alpha.iter().map(|&a| a as f32).collect(),
            zero_points: vec![0; c],
        },
    };
    (ty, codes)
}

/// The least-squares two-level quantizer of the weighted points `(x, weight)`: Lloyd's
/// iteration from the mean. `None` without points of positive weight.
fn lloyd(points: &[(f64, f64)]) -> Option<BinaryAct> {
    let total: f64 = points.iter().map(|p| p.1).sum();
    if total <= 0.0 || !total.is_finite() {
        return None;
    }
    let mut t = points.iter().map(|p| p.0 * p.1).sum::<f64>() / total;
    let (lo, hi) = points
        .iter()
        .filter(|p| p.1 > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let mut beta = 0.0;
    for _ in 0..100 {
        let (mut sa, mut wa, mut sb, mut wb) = (0.0, 0.0, 0.0, 0.0);
        for &(x, w) in points {
            if x >= t {
                sb += x * w;
                wb += w;
            } else {
                sa += x * w;
                wa += w;
            }
        }
        if wa <= 0.0 || wb <= 0.0 {
            // One level only (a constant, or the threshold at the minimum).
            beta = ((hi - lo) / 2.0).max(0.0);
            t = (hi + lo) / 2.0;
            break;
        }
        let (a, b) = (sa / wa, sb / wb);
        let nt = (a + b) / 2.0;
        beta = (b - a) / 2.0;
        if (nt - t).abs() <= 1e-9 * (hi - lo).abs().max(1e-30) {
            t = nt;
            break;
        }
        t = nt;
    }
    let scale = lo.abs().max(hi.abs()).max(1e-6);
    let beta = if beta > 1e-6 * scale { beta } else { scale };
    Some(BinaryAct {
        t: t as f32,
        beta: beta as f32,
    })
}

/// Error function (Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7).
fn erf(x: f64) -> f64 {
    let s = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    s * y
}

fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
}

/// Mean and variance of `relu(y)` for Gaussian `y ~ N(mu, var)`.
fn rectified(mu: f64, var: f64) -> (f64, f64) {
    let s = var.max(0.0).sqrt();
    if s <= 1e-12 {
        let m = mu.max(0.0);
        return (m, 0.0);
    }
    let z = mu / s;
    let (pdf, cdf) = (normal_pdf(z), normal_cdf(z));
    let m1 = mu * cdf + s * pdf;
    let m2 = (mu * mu + var) * cdf + mu * s * pdf;
    (m1, (m2 - m1 * m1).max(0.0))
}

fn floats(a: Option<&Attr>) -> Option<&[f32]> {
    match a {
        Some(Attr::Floats(v)) => Some(v),
        _ => None,
    }
}

/// Per-channel (axis 1) mean and variance of `v` derived from batch-norm statistics, as
/// described in the module comment; `None` where they cannot be derived.
fn moments(m: &Module, v: ValueId, depth: usize) -> Option<Vec<(f64, f64)>> {
    if depth > 256 {
        return None;
    }
    let ValueDef::Node(id) = m.value(v).def else {
        return None;
    };
    let n = m.node(id);
    match n.op {
        Op::Conv2d | Op::Gemm | Op::MatMul => {
            let g = floats(n.meta.get("bn_scale"))?;
            let b = floats(n.meta.get("bn_bias"))?;
            if g.len() != b.len() || g.is_empty() {
                return None;
            }
            Some(
                g.iter()
                    .zip(b)
                    .map(|(&g, &b)| (b as f64, (g as f64) * (g as f64)))
                    .collect(),
            )
        }
        Op::Relu => Some(
            moments(m, n.operands[0], depth + 1)?
                .into_iter()
                .map(|(mu, var)| rectified(mu, var))
                .collect(),
        ),
        Op::Add => {
            let a = moments(m, n.operands[0], depth + 1)?;
            let b = moments(m, *n.operands.get(1)?, depth + 1)?;
            if a.len() != b.len() {
                return None;
            }
            Some(
                a.iter()
                    .zip(&b)
                    .map(|(x, y)| (x.0 + y.0, x.1 + y.1))
                    .collect(),
            )
        }
        Op::MaxPool | Op::AvgPool | Op::GlobalAvgPool => moments(m, n.operands[0], depth + 1),
        _ => None,
    }
}

/// Points of the Gaussian channels `ch` (rectified when `relu`), equal weight per channel.
fn gaussian_points(ch: &[(f64, f64)], relu: bool) -> Vec<(f64, f64)> {
    let mut pts = Vec::with_capacity(ch.len() * 161);
    for &(mu, var) in ch {
        let s = var.max(0.0).sqrt();
        let zs: Vec<f64> = (-80..=80).map(|i| i as f64 * 0.05).collect();
        let ws: Vec<f64> = zs.iter().map(|&z| normal_pdf(z)).collect();
        let tw: f64 = ws.iter().sum();
        for (z, w) in zs.iter().zip(&ws) {
            let x = mu + s * z;
            pts.push((if relu { x.max(0.0) } else { x }, w / tw));
        }
    }
    pts
}

/// The two-level quantizer of activation `v` (statistics `st`): from the calibration
/// histogram when there is one, else from batch-norm statistics (see the module
/// comment), else from the range alone (uniform over `[min, max]`).
pub fn binary_act(m: &Module, v: ValueId, st: &TensorStats) -> Result<BinaryAct, String> {
    if !st.min.is_finite() || !st.max.is_finite() {
        return Err("no finite values were observed".into());
    }
    let points: Vec<(f64, f64)> = if !st.hist.is_empty() {
        (0..st.hist.counts.len())
            .filter(|&i| st.hist.counts[i] > 0)
            .map(|i| {
                let x = st.hist.center(i).clamp(st.min as f64, st.max as f64);
                (x, st.hist.counts[i] as f64)
            })
            .collect()
    } else {
        let relu_of = match m.value(v).def {
            ValueDef::Node(id) if m.node(id).op == Op::Relu => Some(m.node(id).operands[0]),
            _ => None,
        };
        let derived = match relu_of {
            Some(u) => moments(m, u, 0).map(|ch| gaussian_points(&ch, true)),
            None => moments(m, v, 0).map(|ch| gaussian_points(&ch, false)),
        };
        derived.unwrap_or_else(|| {
            (0..=100)
                .map(|i| {
                    let f = i as f64 / 100.0;
                    (st.min as f64 + f * (st.max as f64 - st.min as f64), 1.0)
                })
                .collect()
        })
    };
    lloyd(&points).ok_or_else(|| "no samples to binarize from".to_string())
}

/// The scales of the quantized codes `v` was dequantized from, looking through moves
/// that keep values (a gemm's transposed weights, a flattened input, max pooling).
fn dequantized_scales(qdq: &Module, mut v: ValueId) -> Option<Vec<f32>> {
    while let ValueDef::Node(d) = &qdq.value(v).def {
        let d = qdq.node(*d);
        match d.op {
            Op::Dequantize => {
                return qdq
                    .ty(d.operands[0])
                    .elem
                    .quant()
                    .map(|q| q.params.scales().to_vec());
            }
            Op::Transpose
            | Op::Reshape
            | Op::Flatten
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::MaxPool => v = d.operands[0],
            _ => return None,
        }
    }
    None
}

/// The largest gain each output channel of binarized kernel `n` (result `out`, `ch`
/// channels) may take so that its requantize still fuses: the accumulator step `alpha *
/// beta * g` at most 4/3 of the 8-bit output scale (the bound `quantize_model` keeps
/// with its 3/4 rule). Where the output is not quantized (a model output: the kernel
/// dequantizes its sums, any scale fuses) the gain is bounded only by [`GAIN_CAP`]; where
/// the scales cannot be read, by 1.
fn gain_limits(qdq: &Module, n: &qcc_ir::Node, out: ValueId, ch: usize) -> Vec<f64> {
    let ones = vec![1.0; ch];
    let users = qdq.users();
    // The quantize after the result, or after its relu.
    let mut v = out;
    let mut sy = None;
    // Through a relu, and through the concat (and slices) joining the parts of a layer
    // split by `--sq-ratio` (`sq.rs`).
    for _ in 0..4 {
        let us = &users[v.index()];
        if let Some(q) = us
            .iter()
            .map(|&u| qdq.node(u))
            .find(|u| u.op == Op::Quantize)
        {
            sy = qdq.ty(q.result).elem.quant().and_then(|q| match q.params {
                QuantParams::PerTensor { scale, .. } => Some(scale as f64),
                _ => None,
            });
            break;
        }
        match us.as_slice() {
            [u] if matches!(qdq.node(*u).op, Op::Relu | Op::Concat | Op::Slice) => {
                v = qdq.node(*u).result
            }
            _ => break,
        }
    }
    let beta = dequantized_scales(qdq, n.operands[0]).map(|s| s[0] as f64);
    let alpha = dequantized_scales(qdq, n.operands[1]);
    if sy.is_none() {
        return vec![GAIN_CAP; ch];
    }
    match (sy, beta, alpha) {
        (Some(sy), Some(beta), Some(alpha)) if alpha.len() == ch && beta > 0.0 => alpha
            .iter()
            .map(|&a| ((4.0 / 3.0) * 0.99 * sy / (a as f64 * beta)).max(1.0))
            .collect(),
        _ => ones,
    }
}

/// The largest gain a fit may put into a layer whose output is not requantized: a
/// sanity bound (least squares on a channel that barely varies can ask for anything).
const GAIN_CAP: f64 = 64.0;

/// Samples [`refine_binary`] fits on (at most).
pub const REFINE_SAMPLES: usize = 200;

/// Per output channel: n, sum y, sum f, sum y^2, sum y*f.
type Sums = Vec<[f64; 5]>;

/// Adds one sample's binarized result `q` and float result `f` (`ch` channels of `inner`
/// elements, axis 1) to `acc`.
fn accumulate(acc: &mut Sums, q: &[f32], f: &[f32], inner: usize) {
    let ch = acc.len();
    for (j, (&y, &f)) in q.iter().zip(f).enumerate() {
        let a = &mut acc[(j / inner) % ch];
        let (y, f) = (y as f64, f as f64);
        a[0] += 1.0;
        a[1] += y;
        a[2] += f;
        a[3] += y * y;
        a[4] += y * f;
    }
}

/// The least-squares gain and offset per channel, the gain kept in `[1e-3, gmax]`. With
/// `pow2` (power-of-two weight scales, `--pow2`) the gain is the power of two nearest it
/// (in log scale, at most `gmax`), so that the scales stay powers of two, and the offset
/// the least-squares one for that gain.
fn fit(acc: &Sums, gmax: &[f64], pow2: bool) -> Vec<(f64, f64)> {
    acc.iter()
        .zip(gmax)
        .map(|(a, &gmax)| {
            if a[0] == 0.0 {
                return (1.0, 0.0);
            }
            let (my, mf) = (a[1] / a[0], a[2] / a[0]);
            let vy = a[3] / a[0] - my * my;
            let cyf = a[4] / a[0] - my * mf;
            let g = if vy > 0.0 { cyf / vy } else { 1.0 };
            let g = if g.is_finite() {
                g.clamp(1e-3, gmax)
            } else {
                1.0
            };
            let g = if pow2 {
                let e = (g.log2().round() as i32).min(gmax.log2().floor() as i32);
                2f64.powi(e.clamp(-10, 10))
            } else {
                g
            };
            (g, mf - g * my)
        })
        .collect()
}

/// Whether the weights of layer node `n` have power-of-two scales.
fn weights_pow2(qdq: &Module, n: &qcc_ir::Node) -> bool {
    match &qdq.value(n.operands[1]).def {
        ValueDef::Node(d) if qdq.node(*d).op == Op::Dequantize => qdq
            .ty(qdq.node(*d).operands[0])
            .elem
            .quant()
            .is_some_and(|q| q.pow2),
        _ => false,
    }
}

/// Gives every picked conv2d/gemm layer of `qdq` without a bias a zero one, where the
/// fitted offsets go; matrix products (which take no bias) cannot be fitted.
fn give_biases(
    qdq: &mut Module,
    report: &QuantReport,
    pick: &dyn Fn(&LayerReport) -> bool,
) -> Result<(), String> {
    for layer in report.layers.iter().filter(|l| pick(l)) {
        let ValueDef::Node(id) = qdq.value(layer.output).def else {
            return Err(format!("internal: {} is not computed", layer.name));
        };
        let node = qdq.node(id);
        if node.operands.len() >= 3 {
            continue;
        }
        if !matches!(node.op, Op::Conv2d | Op::Gemm) {
            return Err(format!(
                "internal: {} ({}) takes no bias, so its channels cannot be fitted",
                layer.name,
                node.op.name()
            ));
        }
        let channels = qdq.ty(layer.output).shape.get(1).copied().unwrap_or(0);
        let base = qdq.value(layer.output).name.clone();
        let name = qdq.fresh_name(&format!("{base}.bias"));
        let b = qdq.add_const(
            name,
            qcc_ir::TensorType::f32(vec![channels]),
            qcc_ir::ConstData::F32(vec![0.0; channels]),
        );
        qdq.nodes[id.index()].operands.push(b);
    }
    Ok(())
}

/// The binarized layer `layer` of `qdq`: its node, channels and elements per channel.
fn layer_shape(qdq: &Module, layer: &LayerReport) -> Result<(qcc_ir::Node, usize, usize), String> {
    let out = layer.output;
    let ValueDef::Node(qnode) = qdq.value(out).def else {
        return Err(format!("internal: {} is not computed", layer.name));
    };
    let n = qdq.node(qnode).clone();
    let rshape = &qdq.ty(out).shape;
    if rshape.len() < 2 || rshape[1] == 0 || n.operands.len() < 3 {
        return Err(format!("internal: {} has no channels or bias", layer.name));
    }
    let inner: usize = rshape[2..].iter().product::<usize>().max(1);
    Ok((n, rshape[1], inner))
}

/// Puts the fitted gains into the weight scales and the offsets into the bias of
/// binarized layer `layer` (node `n`) of `qdq`.
fn apply_fit(
    qdq: &mut Module,
    layer: &mut LayerReport,
    n: &qcc_ir::Node,
    fits: &[(f64, f64)],
) -> Result<(), String> {
    let ch = fits.len();
    // The weight constant behind its dequantize, and the bias constant.
    let wc = match &qdq.value(n.operands[1]).def {
        ValueDef::Node(d) if qdq.node(*d).op == Op::Dequantize => qdq.node(*d).operands[0],
        _ => {
            return Err(format!(
                "internal: weights of {} not dequantized",
                layer.name
            ));
        }
    };
    let mut wq = qdq
        .ty(wc)
        .elem
        .quant()
        .ok_or_else(|| format!("internal: weights of {} not quantized", layer.name))?
        .clone();
    let QuantParams::PerAxis { scales, .. } = &mut wq.params else {
        return Err(format!(
            "internal: weights of {} not per channel",
            layer.name
        ));
    };
    if scales.len() != ch {
        return Err(format!(
            "internal: {} has {} scales for {ch} channels",
            layer.name,
            scales.len()
        ));
    }
    for (s, (g, _)) in scales.iter_mut().zip(fits) {
        *s = (*s as f64 * g) as f32;
    }
    layer.w_scales = (
        scales.iter().copied().fold(f32::INFINITY, f32::min),
        scales.iter().copied().fold(f32::NEG_INFINITY, f32::max),
    );
    qdq.value_mut(wc).ty.elem = ElemType::Quant(wq);
    let b = n.operands[2];
    let Some(ConstData::F32(old)) = qdq.const_data(b) else {
        return Err(format!(
            "internal: bias of {} is not an f32 constant",
            layer.name
        ));
    };
    if old.len() != ch {
        return Err(format!(
            "internal: bias of {} has {} values",
            layer.name,
            old.len()
        ));
    }
    let new: Vec<f32> = old
        .iter()
        .zip(fits)
        .map(|(&b, &(g, c))| (g * b as f64 + c) as f32)
        .collect();
    qdq.value_mut(b).def = ValueDef::Const(ConstData::F32(new));
    Ok(())
}

/// Refines the binarized layers (`wbits == 1` in `report`) of QDQ module `qdq` (made
/// from `float` by `quantize_model`) on the calibration samples of `npz`: per output
/// channel (axis 1 of the layer's result), the least-squares gain `g` and offset `c`
/// with `y_float ~ g * y + c` on the layer's result go into the weight scales (`alpha *
/// g`) and the bias (`g * b + c`). Layers are fitted in order, each on the module with
/// the layers before it refined. `g` is kept in `[1e-3, gmax]`, `gmax` the largest gain
/// that keeps the accumulator step (`alpha` times `beta`) within 4/3 of the output scale
/// `quantize_model` chose (so the requantize still fuses), at least 1. Returns the
/// number of layers refined.
///
/// Runs compiled code: both modules cut at the binarized layers (`segments.rs`), every
/// segment run once per sample.
pub fn refine_binary(
    float: &Module,
    qdq: &mut Module,
    report: &mut QuantReport,
    npz: &Path,
    limit: Option<usize>,
) -> Result<usize, String> {
    refine_binary_with(
        float,
        qdq,
        report,
        npz,
        limit,
        &RunOptions::default(),
        &mut Vec::new(),
    )
}

/// [`refine_binary`] run by `run`; a fallback to the interpreter adds a note to `notes`.
pub fn refine_binary_with(
    float: &Module,
    qdq: &mut Module,
    report: &mut QuantReport,
    npz: &Path,
    limit: Option<usize>,
    run: &RunOptions,
    notes: &mut Vec<String>,
) -> Result<usize, String> {
    // Matrix products take no bias for the offsets: they keep their weights' scales.
    refine_layers_with(float, qdq, report, npz, limit, run, notes, &|l| {
        l.wbits <= 2 && l.op != Op::MatMul
    })
}

/// [`refine_binary_with`] on the layers `pick` chooses (of any width): the per-filter
/// gain and offset fit of `--sq-ratio`'s low groups.
#[allow(clippy::too_many_arguments)]
pub fn refine_layers_with(
    float: &Module,
    qdq: &mut Module,
    report: &mut QuantReport,
    npz: &Path,
    limit: Option<usize>,
    run: &RunOptions,
    notes: &mut Vec<String>,
    pick: &dyn Fn(&LayerReport) -> bool,
) -> Result<usize, String> {
    let input = check_single_input(float)?;
    let limit = Some(limit.unwrap_or(usize::MAX).min(REFINE_SAMPLES));
    let ends: Vec<ValueId> = report
        .layers
        .iter()
        .filter(|l| pick(l))
        .map(|l| l.output)
        .collect();
    if ends.is_empty() {
        return Ok(0);
    }
    give_biases(qdq, report, pick)?;
    if run.engine == Engine::Interp {
        return refine_binary_interp(float, qdq, report, npz, limit, pick);
    }
    let what = "the --bits 1 fitting";
    let chains = Chain::new(float, &ends, run.engine, what)
        .and_then(|f| Ok((f, Chain::new(qdq, &ends, run.engine, what)?)));
    let (fchain, qchain) = match chains {
        Ok((f, q)) if f.note.is_none() && q.note.is_none() => (f, q),
        Ok((f, q)) => {
            notes.extend(f.note.or(q.note));
            return refine_binary_interp(float, qdq, report, npz, limit, pick);
        }
        Err(e) => {
            notes.push(format!(
                "{what} ran on the reference interpreter (slow): {e}"
            ));
            return refine_binary_interp(float, qdq, report, npz, limit, pick);
        }
    };
    // Every sample's state in both modules, kept between the layers' passes.
    let mut states: Vec<(State, State)> = Vec::new();
    stream_samples(npz, limit, 64, &mut |i, x| {
        let x = as_input(float, input, i, x)?;
        states.push((
            fchain.start(float, vec![x.clone()]),
            qchain.start(qdq, vec![x]),
        ));
        Ok(())
    })?;
    let pb = progress_bar(
        run.progress,
        states.len() * ends.len(),
        "fitting binary layers",
    );
    let mut refined = 0;
    for (k, layer) in report.layers.iter_mut().filter(|l| pick(l)).enumerate() {
        let (n, ch, inner) = layer_shape(qdq, layer)?;
        let mut acc: Sums = vec![[0f64; 5]; ch];
        for (i, (fs, qs)) in states.iter_mut().enumerate() {
            let f = fchain.run(k, fs).map_err(|e| format!("sample {i}: {e}"))?;
            let q = qchain.run(k, qs).map_err(|e| format!("sample {i}: {e}"))?;
            let (Some(f), Some(q)) = (f.as_f32(), q.as_f32()) else {
                return Err(format!("sample {i}: no f32 result at {}", layer.name));
            };
            accumulate(&mut acc, q, f, inner);
            pb.inc(1);
        }
        let gmax = gain_limits(qdq, &n, layer.output, ch);
        let fits = fit(&acc, &gmax, weights_pow2(qdq, &n));
        apply_fit(qdq, layer, &n, &fits)?;
        // The refined layer computes g * y + c from the same input.
        for (_, qs) in &mut states {
            if let Some(t) = qs.get_mut(&layer.output)
                && let qcc_ir::interp::TensorData::F32(v) = &mut t.data
            {
                for (j, y) in v.iter_mut().enumerate() {
                    let (g, c) = fits[(j / inner) % ch];
                    *y = (g * *y as f64 + c) as f32;
                }
            }
        }
        refined += 1;
    }
    pb.finish_and_clear();
    Ok(refined)
}

/// [`refine_binary`] on the reference interpreter: each layer's pass runs both whole
/// modules per sample (the oracle of the compiled path).
fn refine_binary_interp(
    float: &Module,
    qdq: &mut Module,
    report: &mut QuantReport,
    npz: &Path,
    limit: Option<usize>,
    pick: &dyn Fn(&LayerReport) -> bool,
) -> Result<usize, String> {
    let input = check_single_input(float)?;
    let shape = float.ty(input).shape.clone();
    let mut refined = 0;
    for layer in report.layers.iter_mut().filter(|l| pick(l)) {
        let out = layer.output;
        let (ValueDef::Node(fnode), ValueDef::Node(qnode)) =
            (&float.value(out).def, &qdq.value(out).def)
        else {
            return Err(format!("internal: {} is not computed", layer.name));
        };
        let (fnode, qnode) = (*fnode, *qnode);
        let (n, ch, inner) = layer_shape(qdq, layer)?;
        let mut acc: Sums = vec![[0f64; 5]; ch];
        stream_samples(npz, limit, 64, &mut |i, x| {
            let x = Tensor {
                shape: shape.clone(),
                data: x.data,
            };
            let mut fv: Option<Vec<f32>> = None;
            run_with(float, std::slice::from_ref(&x), &mut |id, t| {
                if id == fnode {
                    fv = t.as_f32().map(|d| d.to_vec());
                }
            })
            .map_err(|e| format!("sample {i}: {e}"))?;
            let mut qv: Option<Vec<f32>> = None;
            run_with(qdq, std::slice::from_ref(&x), &mut |id, t| {
                if id == qnode {
                    qv = t.as_f32().map(|d| d.to_vec());
                }
            })
            .map_err(|e| format!("sample {i}: {e}"))?;
            let (Some(f), Some(q)) = (fv, qv) else {
                return Err(format!("sample {i}: no f32 result at {}", layer.name));
            };
            accumulate(&mut acc, &q, &f, inner);
            Ok(())
        })?;
        let gmax = gain_limits(qdq, &n, out, ch);
        let fits = fit(&acc, &gmax, weights_pow2(qdq, &n));
        apply_fit(qdq, layer, &n, &fits)?;
        refined += 1;
    }
    Ok(refined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sign_and_mean_abs() {
        let w = [1.0, -3.0, 0.0, 0.5, 0.0, 0.0];
        let (q, codes) = binarize_weights(&w, &[3, 2], 0);
        assert_eq!(codes, [1, -1, 1, 1, 1, 1]);
        let s = q.params.scales();
        assert_eq!(s[0], 2.0);
        assert_eq!(s[1], 0.25);
        // The zero channel gets the mean of the others.
        assert_eq!(s[2], 1.125);
        assert!(q.narrow && q.storage == IntType::new(2, true));
    }

    #[test]
    fn lloyd_two_clusters() {
        let pts: Vec<(f64, f64)> = [0.0, 0.1, 0.0, 2.0, 2.1, 1.9]
            .iter()
            .map(|&x| (x, 1.0))
            .collect();
        let b = lloyd(&pts).unwrap();
        // Levels 1/30 and 2, the threshold their midpoint.
        let lo = 0.1 / 3.0;
        assert!((b.t as f64 - (lo + 2.0) / 2.0).abs() < 1e-5, "{b:?}");
        assert!((b.beta as f64 - (2.0 - lo) / 2.0).abs() < 1e-5, "{b:?}");
        // A constant keeps a usable scale.
        let c = lloyd(&[(0.5, 1.0), (0.5, 2.0)]).unwrap();
        assert!(c.beta > 0.0);
    }

    #[test]
    fn rectified_moments() {
        let (m, v) = rectified(0.0, 1.0);
        assert!((m - 1.0 / (2.0 * std::f64::consts::PI).sqrt()).abs() < 1e-6);
        assert!((v - (0.5 - m * m)).abs() < 1e-6);
        assert!((erf(1.0) - 0.842_700_79).abs() < 2e-7);
    }
}
