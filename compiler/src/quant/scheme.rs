//! The quantization scheme: how weights and activations get their types.
//!
//! - Weights: per output channel, symmetric, narrow range (`[-(2^(b-1)-1), 2^(b-1)-1]`,
//!   zero point 0), so the integer kernel needs no weight zero point. Below 8 bits the
//!   scale is searched (clipping ratios 1.0 down to 0.5 of the channel's max |w|) for the
//!   least squared error; at 8 bits it is `max|w| / qmax`.
//! - Activations: per tensor (the integer kernels take one input zero point); asymmetric
//!   by default (`u<b>`, zero point from the range), or symmetric (`i<b>` with zero point
//!   0, or `u<b>` when the range is non-negative). The range comes from calibration by
//!   the chosen method, always widened to contain 0 so that zero padding is exact.
//! - Power-of-two scales on request: the scale is rounded up to a power of two (weights:
//!   the power of two with the least squared error), so requantization can be a shift.

use std::collections::BTreeMap;

use qcc_ir::{IntType, QuantParams, QuantType};

use super::calibrate::{CalibMethod, RangeSource, TensorStats};

/// Options of [`quantize_model`](super::quantize_model).
#[derive(Clone, Debug)]
pub struct QuantOptions {
    /// Weight bits, 2..8, or 1 together with `abits = 1` (`--wbits`; `--bits N` sets both).
    pub wbits: u8,
    /// Activation bits, 1..8 (`--abits`).
    pub abits: u8,
    /// Symmetric activations (zero point 0) instead of asymmetric.
    pub symmetric_acts: bool,
    /// Power-of-two scales (`--pow2`).
    pub pow2: bool,
    /// Keep the first and last conv/gemm/matmul (weights and input) at 8 bits.
    pub keep_edges: bool,
    /// Quantize the outputs of the kernels too (8 bits unless they feed a kernel), so
    /// each fuses into `requantize`; otherwise outputs no kernel reads stay f32.
    pub quantize_outputs: bool,
    /// A per-layer plan (layer name, as the quantization report spells it -> weight and
    /// activation bits), e.g. chosen under a `--budget`. Layers it names take its bits
    /// (`(1, 1)` binarizes), edges included; layers it leaves out follow the flags above.
    /// The layers reading one activation must agree on its bits.
    pub layer_bits: BTreeMap<String, (u8, u8)>,
    /// Quantize only the layers `layer_bits` names; the others stay f32 (how the
    /// sensitivity of one layer is measured).
    pub only_planned: bool,
    /// 2-bit weights by TWN's rule ([`ternary_weights`]) instead of the error-minimising
    /// scale search.
    pub ternary: bool,
    /// `--act-method dqa`'s important channels in DQA's own form (`important.rs`):
    /// activation (the value its quantizer follows) -> the channels that get
    /// `dqa_extra` more bits. Such an activation is quantized on the `N + dqa_extra`-bit
    /// grid of the finer step, its other channels quantized at the `N`-bit step and their
    /// codes shifted onto that grid (multiples of `2^dqa_extra`).
    pub dqa_fine: BTreeMap<String, Vec<usize>>,
    pub dqa_extra: u8,
}

impl Default for QuantOptions {
    fn default() -> Self {
        QuantOptions {
            wbits: 8,
            abits: 8,
            symmetric_acts: false,
            pow2: false,
            keep_edges: true,
            quantize_outputs: true,
            layer_bits: BTreeMap::new(),
            only_planned: false,
            ternary: false,
            dqa_fine: BTreeMap::new(),
            dqa_extra: 0,
        }
    }
}

impl QuantOptions {
    /// `bits` for weights and activations.
    pub fn bits(bits: u8) -> Self {
        QuantOptions {
            wbits: bits,
            abits: bits,
            ..Default::default()
        }
    }

    /// Whether the middle layers are binarized (`--bits 1`, or `--wbits 1 --abits 1`).
    pub fn binary(&self) -> bool {
        self.wbits == 1 && self.abits == 1
    }

    /// Checks the bit-widths: 1..8 for weights and activations (1 for both is the
    /// binarized path); every error names the flag and what works.
    pub fn check(&self) -> Result<(), String> {
        for (layer, &(w, a)) in &self.layer_bits {
            check_pair(w, a).map_err(|e| format!("plan for layer {layer}: {e}"))?;
        }
        if self.ternary && (self.wbits != 2 || self.pow2) {
            return Err(format!(
                "--ternary quantizes 2-bit weights (TWN: -alpha, 0, +alpha per channel): give --wbits 2 (found --wbits {}){}",
                self.wbits,
                if self.pow2 { ", without --pow2" } else { "" }
            ));
        }
        if self.binary() {
            return Ok(());
        }
        if !(1..=8).contains(&self.wbits) {
            return Err(format!(
                "--wbits {}: weights take 1..8 bits (1: sign(w) times a per-channel scale; with --abits 1 the layers binarize)",
                self.wbits
            ));
        }
        if !(1..=8).contains(&self.abits) {
            return Err(format!(
                "--abits {}: activations take 1..8 bits",
                self.abits
            ));
        }
        Ok(())
    }
}

/// Checks one layer's (weight, activation) bits: 1..8 each (1-bit weights are binary,
/// `sign(w)` times a per-channel scale; (1, 1) binarizes the layer).
pub fn check_pair(w: u8, a: u8) -> Result<(), String> {
    match (w, a) {
        (1..=8, 1..=8) => Ok(()),
        _ => Err(format!(
            "{w}-bit weights with {a}-bit activations: weights and activations take 1..8 bits"
        )),
    }
}

/// Chosen parameters of one activation.
#[derive(Clone, Debug, PartialEq)]
pub struct ActParams {
    pub ty: QuantType,
    /// The range the parameters represent (after the method's clipping).
    pub lo: f32,
    pub hi: f32,
}

fn pow2_up(s: f64) -> f64 {
    2f64.powi(s.log2().ceil() as i32)
}

/// The quantized type representing `[lo, hi]` (widened to contain 0) with `bits`.
pub fn act_type(
    lo: f32,
    hi: f32,
    bits: u8,
    symmetric: bool,
    pow2: bool,
) -> Result<QuantType, String> {
    let (lo, hi) = (lo.min(0.0) as f64, hi.max(0.0) as f64);
    let span = (hi - lo).max(1e-8);
    let levels = ((1u64 << bits) - 1) as f64;
    let mut q = if symmetric && lo < 0.0 {
        if bits < 2 {
            return Err(
                "symmetric 1-bit activations cannot hold a signed range; use asymmetric ones"
                    .into(),
            );
        }
        let qmax = ((1u64 << (bits - 1)) - 1) as f64;
        let mut s = lo.abs().max(hi).max(1e-8) / qmax;
        if pow2 {
            s = pow2_up(s);
        }
        QuantType::per_tensor(IntType::new(bits, true), s as f32, 0)
    } else {
        let mut s = span / levels;
        if pow2 {
            s = pow2_up(s);
        }
        let zp = if symmetric {
            0.0
        } else {
            (-lo / s).round_ties_even().clamp(0.0, levels)
        };
        QuantType::per_tensor(IntType::new(bits, false), s as f32, zp as i32)
    };
    q.pow2 = pow2;
    Ok(q)
}

/// `x.round_ties_even()` without the libm call the baseline x86-64 target makes for it
/// (no SSE4.1 `roundsd`): adding and subtracting 2^52 rounds to an integer in the
/// default rounding mode (to nearest, ties to even), exactly; larger magnitudes are
/// integers already. The weight scale search calls this tens of millions of times.
#[inline]
pub(crate) fn round_even(x: f64) -> f64 {
    const BIG: f64 = 4_503_599_627_370_496.0; // 2^52
    if x.abs() < BIG {
        let b = BIG.copysign(x);
        ((x + b) - b).copysign(x)
    } else {
        x
    }
}

fn fake_quant(x: f64, s: f64, zp: f64, qmin: f64, qmax: f64) -> f64 {
    (round_even(x / s) + zp).clamp(qmin, qmax) * s - zp * s
}

fn params(q: &QuantType) -> (f64, f64, f64, f64) {
    let (s, zp) = match q.params {
        QuantParams::PerTensor { scale, zero_point } => (scale as f64, zero_point as f64),
        _ => (1.0, 0.0),
    };
    (s, zp, q.qmin() as f64, q.qmax() as f64)
}

/// Expected squared error of quantizing the histogram with `q`.
fn hist_mse(st: &TensorStats, q: &QuantType) -> f64 {
    let (s, zp, qmin, qmax) = params(q);
    let h = &st.hist;
    h.counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, &c)| {
            let x = h.center(i);
            let e = x - fake_quant(x, s, zp, qmin, qmax);
            c as f64 * e * e
        })
        .sum()
}

/// KL divergence between the histogram clipped to `q`'s range (outliers moved into the
/// edge bins) and the quantized form of the in-range counts (each code's mass spread
/// evenly over the bins of that code holding mass), as in TensorRT's entropy calibration.
fn hist_kl(st: &TensorStats, q: &QuantType) -> f64 {
    let (s, zp, qmin, qmax) = params(q);
    let h = &st.hist;
    let (lo, hi) = ((qmin - zp) * s, (qmax - zp) * s);
    let n = h.counts.len();
    let mut p = vec![0.0f64; n];
    // Q is built from the in-range counts only, so clipped mass shows up as divergence.
    let mut inside = vec![0.0f64; n];
    let first = (0..n).find(|&i| h.center(i) >= lo).unwrap_or(0);
    let last = (0..n).rev().find(|&i| h.center(i) <= hi).unwrap_or(n - 1);
    if first > last {
        return f64::INFINITY;
    }
    for (i, &c) in h.counts.iter().enumerate() {
        p[i.clamp(first, last)] += c as f64;
        if (first..=last).contains(&i) {
            inside[i] = c as f64;
        }
    }
    let code = |i: usize| ((h.center(i) / s).round_ties_even() + zp).clamp(qmin, qmax) as i64;
    let mut qd = vec![0.0f64; n];
    let mut i = first;
    while i <= last {
        let c = code(i);
        let mut j = i;
        while j <= last && code(j) == c {
            j += 1;
        }
        let mass: f64 = inside[i..j].iter().sum();
        let nonzero = inside[i..j].iter().filter(|&&x| x > 0.0).count();
        for k in i..j {
            if inside[k] > 0.0 {
                qd[k] = mass / nonzero as f64;
            }
        }
        i = j;
    }
    let tp: f64 = p.iter().sum();
    let tq: f64 = qd.iter().sum::<f64>().max(1e-300);
    p.iter()
        .zip(&qd)
        .filter(|(p, _)| **p > 0.0)
        .map(|(p, q)| {
            let (pp, qq) = (p / tp, (q / tq).max(1e-12));
            pp * (pp / qq).ln()
        })
        .sum()
}

/// The activation range and type for `st` by the source's method.
pub fn choose_range(
    st: &TensorStats,
    source: &RangeSource,
    bits: u8,
    symmetric: bool,
    pow2: bool,
) -> Result<ActParams, String> {
    let (min, max) = (st.min, st.max);
    if !min.is_finite() || !max.is_finite() {
        return Err("no finite values were observed".into());
    }
    let method = match source {
        RangeSource::Data(m) if !st.hist.is_empty() => *m,
        _ => CalibMethod::MinMax,
    };
    let mk = |lo: f32, hi: f32| -> Result<ActParams, String> {
        Ok(ActParams {
            ty: act_type(lo, hi, bits, symmetric, pow2)?,
            lo,
            hi,
        })
    };
    let chosen = choose_range_of(st, method, (min, max), &mk)?;
    if !pow2 || st.hist.is_empty() {
        return Ok(chosen);
    }
    // A power-of-two scale rounds the method's scale up, which can cost most of a bit;
    // the power of two below it (clipping the top of the range) is the other candidate,
    // and the histogram's squared error decides.
    let half = mk(chosen.lo * 0.5, chosen.hi * 0.5)?;
    Ok(if hist_mse(st, &half.ty) < hist_mse(st, &chosen.ty) {
        half
    } else {
        chosen
    })
}

/// The `N`-bit range of an activation in DQA's own form (`--dqa-form fused`): its
/// important fraction `frac` of channels is read on the grid `2^extra` times finer. With
/// power-of-two scales the method's scale rounded up and the one below it are judged by
/// the histogram's squared error of that mix (the fine grid clips less, the coarse one
/// rounds more), where [`choose_range`] judges the `N`-bit grid alone.
pub fn choose_range_dqa(
    st: &TensorStats,
    source: &RangeSource,
    bits: u8,
    extra: u8,
    frac: f64,
    symmetric: bool,
    pow2: bool,
) -> Result<ActParams, String> {
    let chosen = choose_range(st, source, bits, symmetric, false)?;
    if !pow2 {
        return Ok(chosen);
    }
    let mk = |lo: f32, hi: f32| -> Result<ActParams, String> {
        Ok(ActParams {
            ty: act_type(lo, hi, bits, symmetric, true)?,
            lo,
            hi,
        })
    };
    let up = mk(chosen.lo, chosen.hi)?;
    if st.hist.is_empty() {
        return Ok(up);
    }
    let mixed = |p: &ActParams| {
        let mut fine = p.ty.clone();
        if let QuantParams::PerTensor { scale, zero_point } = p.ty.params {
            let f = 1i32 << extra;
            fine.storage.bits = bits + extra;
            fine.params = QuantParams::PerTensor {
                scale: scale / f as f32,
                zero_point: zero_point * f,
            };
        }
        frac * hist_mse(st, &fine) + (1.0 - frac) * hist_mse(st, &p.ty)
    };
    let half = mk(chosen.lo * 0.5, chosen.hi * 0.5)?;
    Ok(if mixed(&half) < mixed(&up) { half } else { up })
}

fn choose_range_of(
    st: &TensorStats,
    method: CalibMethod,
    (min, max): (f32, f32),
    mk: &dyn Fn(f32, f32) -> Result<ActParams, String>,
) -> Result<ActParams, String> {
    match method {
        CalibMethod::MinMax => mk(min, max),
        CalibMethod::Percentile => {
            let lo = (st.hist.quantile(1e-4) as f32).max(min);
            let hi = (st.hist.quantile(1.0 - 1e-4) as f32).min(max);
            mk(lo.min(hi), hi)
        }
        CalibMethod::Mse | CalibMethod::Kl => {
            let mut best: Option<(f64, ActParams)> = None;
            for step in 0..=70 {
                let a = 1.0 - step as f32 * 0.01;
                let cand = mk(min * a, max * a)?;
                let err = if method == CalibMethod::Mse {
                    hist_mse(st, &cand.ty)
                } else {
                    hist_kl(st, &cand.ty)
                };
                if best.as_ref().is_none_or(|(e, _)| err < *e) {
                    best = Some((err, cand));
                }
            }
            Ok(best.expect("candidates").1)
        }
    }
}

/// Ternary weights by the rule of Ternary Weight Networks (Li and Liu, 2016), per
/// channel along `axis`: threshold `t = 0.7 mean|w|`, codes `sign(w)` where `|w| > t` and
/// 0 elsewhere, scale `alpha` the mean of `|w|` above the threshold. Returned as the
/// 2-bit narrow type of [`quantize_weights`] (codes -1, 0, +1), so every 2-bit kernel
/// runs it. A channel with no weight above its threshold (all zero) gets the mean scale
/// of the others and zero codes.
pub fn ternary_weights(w: &[f32], shape: &[usize], axis: usize) -> (QuantType, Vec<i64>) {
    let c = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product::<usize>().max(1);
    let ch = |i: usize| (i / inner) % c;
    let mut abs_sum = vec![0f64; c];
    let mut n = vec![0usize; c];
    for (i, &x) in w.iter().enumerate() {
        abs_sum[ch(i)] += (x as f64).abs();
        n[ch(i)] += 1;
    }
    let t: Vec<f64> = abs_sum
        .iter()
        .zip(&n)
        .map(|(&s, &k)| if k == 0 { 0.0 } else { 0.7 * s / k as f64 })
        .collect();
    let mut above = vec![(0f64, 0usize); c];
    for (i, &x) in w.iter().enumerate() {
        let a = (x as f64).abs();
        if a > t[ch(i)] {
            above[ch(i)].0 += a;
            above[ch(i)].1 += 1;
        }
    }
    let mut scales: Vec<f64> = above
        .iter()
        .map(|&(s, k)| if k == 0 { 0.0 } else { s / k as f64 })
        .collect();
    let usable = |s: f64| s >= MIN_WEIGHT_SCALE && (s as f32).is_normal();
    let good: Vec<f64> = scales.iter().copied().filter(|&s| usable(s)).collect();
    let fill = if good.is_empty() {
        1.0
    } else {
        good.iter().sum::<f64>() / good.len() as f64
    };
    for s in &mut scales {
        if !usable(*s) {
            *s = fill;
        }
    }
    let codes = w
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let k = ch(i);
            if (x as f64).abs() > t[k] && usable(above[k].0 / above[k].1.max(1) as f64) {
                if x > 0.0 { 1 } else { -1 }
            } else {
                0
            }
        })
        .collect();
    let ty = QuantType {
        storage: IntType::new(2, true),
        narrow: true,
        pow2: false,
        params: QuantParams::PerAxis {
            axis,
            scales: scales.iter().map(|&s| s as f32).collect(),
            zero_points: vec![0; c],
        },
    };
    (ty, codes)
}

/// The smallest per-channel weight scale [`quantize_weights`] gives: below it (weights
/// under about 1e-18) a channel counts as zero. With activation scales down to 1e-18 the
/// accumulator step stays a normal f32.
pub const MIN_WEIGHT_SCALE: f64 = 1e-20;

/// Quantizes float weights per channel along `axis` to signed narrow `bits`; returns the
/// type (per-axis scales, zero points 0) and the codes.
pub fn quantize_weights(
    w: &[f32],
    shape: &[usize],
    axis: usize,
    bits: u8,
    pow2: bool,
) -> (QuantType, Vec<i64>) {
    let c = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let ch = |i: usize| (i / inner.max(1)) % c;
    let qmax = ((1i64 << (bits - 1)) - 1) as f64;
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); c];
    for (i, &x) in w.iter().enumerate() {
        per[ch(i)].push(x as f64);
    }
    // Four partial sums: one long chain of dependent adds would bound the search by the
    // add latency.
    let sse = |v: &[f64], s: f64| -> f64 {
        let err = |x: f64| {
            let e = x - fake_quant(x, s, 0.0, -qmax, qmax);
            e * e
        };
        let mut acc = [0f64; 4];
        let mut quads = v.chunks_exact(4);
        for q in &mut quads {
            for (a, &x) in acc.iter_mut().zip(q) {
                *a += err(x);
            }
        }
        let tail: f64 = quads.remainder().iter().map(|&x| err(x)).sum();
        (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
    };
    let mut scales: Vec<f64> = per
        .iter()
        .map(|v| {
            let m = v.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            if m == 0.0 {
                return 0.0;
            }
            let base = m / qmax;
            let cands: Vec<f64> = if pow2 {
                let k = base.log2().ceil() as i32;
                (k - 3..=k).map(|e| 2f64.powi(e)).collect()
            } else if bits < 8 {
                (0..=50).map(|i| base * (1.0 - i as f64 * 0.01)).collect()
            } else {
                vec![base]
            };
            cands
                .into_iter()
                .map(|s| (sse(v, s), s))
                .fold((f64::INFINITY, base), |b, x| if x.0 < b.0 { x } else { b })
                .1
        })
        .collect();
    // A channel whose weights are all zero, or so small (a pruned channel stored as
    // 1e-39, say) that its scale would be subnormal or make the accumulator's step
    // subnormal, takes the mean scale of the others: its codes are then 0, and every
    // scale stays one the integer kernels can requantize with.
    let usable = |s: f64| s >= MIN_WEIGHT_SCALE && (s as f32).is_normal();
    let nonzero: Vec<f64> = scales.iter().copied().filter(|&s| usable(s)).collect();
    let fill = if nonzero.is_empty() {
        1.0
    } else {
        nonzero.iter().sum::<f64>() / nonzero.len() as f64
    };
    for s in &mut scales {
        if !usable(*s) {
            *s = if pow2 { pow2_up(fill) } else { fill };
        }
    }
    let scales: Vec<f32> = scales.iter().map(|&s| s as f32).collect();
    let codes = w
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            ((x / scales[ch(i)]).round_ties_even() as i64).clamp(-qmax as i64, qmax as i64)
        })
        .collect();
    let ty = QuantType {
        storage: IntType::new(bits, true),
        narrow: true,
        pow2,
        params: QuantParams::PerAxis {
            axis,
            scales,
            zero_points: vec![0; c],
        },
    };
    (ty, codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TWN's rule on two channels: threshold 0.7 mean|w|, codes sign(w) above it, scale
    /// the mean |w| above it; an all-zero channel gets zero codes and a usable scale.
    #[test]
    fn ternary_weights_follow_twn() {
        // Channel 0: mean |w| = 0.5, threshold 0.35: 0.9, -0.6, 0.4 pass (mean 0.6333).
        // Channel 1: all zero.
        let w = [0.9, -0.6, 0.4, -0.1, 0.0, 0.0, 0.0, 0.0];
        let (ty, codes) = ternary_weights(&w, &[2, 4], 0);
        assert_eq!(codes, vec![1, -1, 1, 0, 0, 0, 0, 0]);
        let s = ty.params.scales();
        assert!((s[0] - 0.633_333_3).abs() < 1e-6, "{s:?}");
        assert!(s[1].is_normal() && s[1] > 0.0, "{s:?}");
        assert_eq!(
            (ty.storage.bits, ty.storage.signed, ty.narrow),
            (2, true, true)
        );
        let opts = QuantOptions {
            wbits: 4,
            ternary: true,
            ..Default::default()
        };
        let e = opts.check().unwrap_err();
        assert!(e.contains("--ternary") && e.contains("--wbits 2"), "{e}");
    }

    /// A power-of-two activation scale is the method's scale rounded up, or down when
    /// that lowers the histogram's squared error: values spread over [0, 1] with one
    /// outlier at 1.9 (min-max step 1.9/7 rounds up to 0.5, wasting most of the codes;
    /// 0.25 clips only the outlier), and values filling [0, 1.6] keep the step above.
    #[test]
    fn power_of_two_scales_round_down_when_that_is_closer() {
        let stats = |xs: &[f32]| {
            let mut st = TensorStats::empty();
            st.observe_f32(&[xs.len()], xs);
            st
        };
        let mut xs: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        xs.push(1.9);
        let st = stats(&xs);
        let p = choose_range(&st, &RangeSource::Data(CalibMethod::MinMax), 3, false, true).unwrap();
        assert_eq!(p.ty.params.scales(), vec![0.25], "{p:?}");
        assert!(p.ty.pow2);
        let up = act_type(0.0, 1.9, 3, false, true).unwrap();
        assert_eq!(up.params.scales(), vec![0.5]);
        assert!(hist_mse(&st, &p.ty) < hist_mse(&st, &up));
        let even: Vec<f32> = (0..1000).map(|i| 1.6 * i as f32 / 999.0).collect();
        let p = choose_range(
            &stats(&even),
            &RangeSource::Data(CalibMethod::MinMax),
            3,
            false,
            true,
        )
        .unwrap();
        assert_eq!(p.ty.params.scales(), vec![0.25], "{p:?}");
        // Without --pow2 the step is min-max's.
        let p = choose_range(
            &st,
            &RangeSource::Data(CalibMethod::MinMax),
            3,
            false,
            false,
        )
        .unwrap();
        assert!((p.ty.params.scales()[0] - 1.9 / 7.0).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn round_even_matches_std() {
        let mut xs = vec![
            0.5,
            1.5,
            2.5,
            -0.5,
            -1.5,
            -2.5,
            0.49999999999999994,
            -0.0,
            0.0,
        ];
        xs.extend([
            1e300,
            -1e300,
            4503599627370495.5,
            -4503599627370497.0,
            3.7,
            -3.2,
        ]);
        let mut r = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..100_000 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            xs.push((r as i64 as f64) / (1u64 << (r % 60)) as f64);
        }
        for x in xs {
            assert_eq!(
                round_even(x).to_bits(),
                x.round_ties_even().to_bits(),
                "{x}"
            );
        }
    }

    #[test]
    fn activation_types() {
        let q = act_type(-1.0, 3.0, 8, false, false).unwrap();
        assert_eq!(q.storage, IntType::U8);
        let (s, z) = (q.params.scales()[0], q.params.zero_points()[0]);
        assert!((s - 4.0 / 255.0).abs() < 1e-7 && z == 64);
        let q = act_type(-1.0, 3.0, 4, true, false).unwrap();
        assert_eq!(q.storage, IntType::new(4, true));
        assert_eq!(q.params.zero_points()[0], 0);
        let q = act_type(0.0, 3.0, 4, false, true).unwrap();
        assert_eq!(q.params.scales()[0], 0.25);
        assert!(act_type(-1.0, 1.0, 1, true, false).is_err());
    }

    #[test]
    fn weights_per_channel_narrow() {
        let w = [1.0, -0.5, 0.25, 0.0, 0.0, 0.0, -2.0, 2.0];
        let (q, codes) = quantize_weights(&w, &[4, 2], 0, 4, false);
        assert!(q.narrow && q.storage == IntType::new(4, true));
        assert!(codes.iter().all(|&c| (-7..=7).contains(&c)));
        assert_eq!(codes[6..], [-7, 7]);
        // An all-zero channel gets a usable (nonzero) scale and zero codes.
        assert!(q.params.scales()[2] > 0.0);
        assert_eq!(codes[4..6], [0, 0]);
    }
}
