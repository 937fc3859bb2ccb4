//! `--calib-method qil`: quantization intervals chosen against the end-to-end output
//! error (issue 13, the compile-time counterpart of QIL; `docs/methods.md`).
//!
//! QIL learns, per layer, an interval `[c - d, c + d]` for the weights and one for the
//! activations: values beyond `c + d` clip, weights below `c - d` prune to zero, and the
//! interval in between maps onto the quantization grid. At compile time the intervals
//! are searched, not trained. Starting from the min-max activation ranges and the
//! per-channel weight scales `quantize_model` chose, the layers are taken bottom-up and,
//! for each, with everything else frozen:
//!
//! 1. the interval of its input activation (the quantizer every reader shares): the top
//!    of the range (and the bottom, for a signed range) scaled by a grid of factors. The
//!    model's own input keeps its range: that belongs to the task, not to the
//!    calibration data, which may come from another distribution;
//! 2. the clipping of its weights, one factor (at most 1) on all its per-channel scales,
//!    then the pruning threshold `c - d` in steps of the grid (weights below it become
//!    code 0).
//!
//! Guards keep the intervals from fitting the calibration set too closely, since it may
//! come from another distribution than the task's: an activation interval clips at
//! most [`CLIP_MAX`] of the calibration values at either end, a weight factor clips at
//! most [`W_CLIP_MAX`] of the layer's weights, and the model's input keeps its range.
//!
//! Each candidate is judged by the error of the model's output against the float model
//! on the calibration samples (KL of the softmax for classifiers, MSE otherwise), run
//! as compiled code; a candidate is kept only when it lowers that error, so the result
//! is never worse than min-max on those samples. Every interval is realised exactly on
//! the integer kernels' uniform grids: an activation interval is an affine quantizer,
//! a weight interval a per-channel scale and a threshold.
//!
//! 3. QIL's exponent `gamma` (weights of 3 to 7 bits): QIL quantizes `w^gamma` on a
//!    uniform grid, so in the weights' own units the `2^b - 1` levels of a channel lie on
//!    a power-law grid, `L_k = s K (k / K)^(1 / gamma)` (`K` the top code; `gamma < 1`
//!    crowds them toward zero). The grid is realised through a compile-time lookup:
//!    each level becomes the i8 code `round(127 (k / K)^(1 / gamma))` on the scale
//!    `s K / 127` (within half an i8 step of `L_k`), and the layer runs on the 8-bit
//!    kernels, which multiply any i8 codes; the weights keep `2^b - 1` distinct values,
//!    so `--compress-weights huffman` stores them in about `b` bits. Exponents from 0.5
//!    to 1.5 are tried and kept only when they lower the output error.

use std::path::Path;

use qcc_ir::interp::Tensor;
use qcc_ir::{ConstData, ElemType, Module, Op, QuantParams, ValueDef, ValueId};

use super::calibrate::{CalibStats, as_input, check_single_input, stream_samples};
use super::insert::{QuantReport, source};
use super::scheme::act_type;
use super::sensitivity::Metric;
use super::tap::{RunOptions, progress_bar};
use crate::backend::JitModel;

/// Calibration samples the search judges candidates on (at most).
pub const QIL_SAMPLES: usize = 512;

/// The largest fraction of an activation's calibration values its interval may clip
/// at either end: the intervals must carry over to data the calibration set does not
/// show.
const CLIP_MAX: f64 = 1e-4;

/// Factors on the top (and bottom) of an activation range.
const ACT_FACTORS: [f32; 17] = [
    1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2,
];
/// The largest fraction of a layer's weights a re-clipping may clip (unless the
/// starting scales clip more).
const W_CLIP_MAX: f64 = 0.01;

/// Factors on a layer's per-channel weight scales.
const W_FACTORS: [f64; 9] = [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0];
/// Pruning thresholds `c - d`, in steps of the channel's scale (0.5: plain rounding).
const PRUNE: [f64; 3] = [0.5, 0.75, 1.0];

/// QIL's exponents `gamma` tried on a layer's weight grid (1: the uniform grid).
const GAMMAS: [f64; 7] = [0.5, 0.6, 0.7, 0.8, 0.9, 1.25, 1.5];

/// The top code of the i8 codes a non-uniform grid is stored in.
const GRID_TOP: f64 = 127.0;

/// One layer's chosen intervals.
#[derive(Clone, Debug)]
pub struct QilLayer {
    pub name: String,
    /// The input activation's range (when searched).
    pub act: Option<(f32, f32)>,
    /// The factor on the weight scales and the pruning threshold (in scale steps).
    pub w_factor: f64,
    pub prune: f64,
    /// Fraction of the layer's weights at code 0.
    pub sparsity: f64,
    /// QIL's exponent of the weight grid (1: uniform; else `2^b - 1` levels on a
    /// power-law grid, stored as i8 codes).
    pub gamma: f64,
}

/// What [`qil_intervals`] did.
#[derive(Clone, Debug, Default)]
pub struct QilReport {
    pub layers: Vec<QilLayer>,
    /// The output error before and after, on the search's samples.
    pub before: f64,
    pub after: f64,
    pub samples: usize,
    pub evaluations: usize,
}

fn def_node(q: &Module, v: ValueId) -> Option<&qcc_ir::Node> {
    match q.value(v).def {
        ValueDef::Node(n) => Some(q.node(n)),
        _ => None,
    }
}

/// The samples and the float model's outputs on them; judges a module by its output
/// error.
struct Judge {
    xs: Vec<Tensor>,
    float: Vec<Vec<f32>>,
    metric: Metric,
    evaluations: usize,
}

fn outputs(jit: &JitModel, xs: &[Tensor]) -> Result<Vec<Vec<f32>>, String> {
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

impl Judge {
    fn error(&mut self, q: &Module) -> Result<f64, String> {
        self.evaluations += 1;
        let jit = JitModel::new(q).map_err(|e| format!("--calib-method qil: {e}"))?;
        let outs = outputs(&jit, &self.xs)?;
        let sum: f64 = self
            .float
            .iter()
            .zip(&outs)
            .map(|(f, o)| self.metric.error(f, o))
            .sum();
        Ok(sum / self.xs.len().max(1) as f64)
    }
}

/// The weights of layer node `n` of `q`: the constant codes behind its dequantize.
fn weight_const(q: &Module, n: &qcc_ir::Node) -> Option<ValueId> {
    let dq = def_node(q, n.operands[1]).filter(|d| d.op == Op::Dequantize)?;
    let wc = dq.operands[0];
    matches!(q.value(wc).def, ValueDef::Const(_)).then_some(wc)
}

/// Re-quantizes float weights `wf` (output channels along `axis` of `shape`) with
/// `scales` times `factor`, codes in the type's range, and |w| below `prune` steps
/// pruned to 0; returns the scales and codes.
fn requantize_weights(
    wf: &[f32],
    shape: &[usize],
    axis: usize,
    scales: &[f32],
    factor: f64,
    prune: f64,
    (lo, hi): (i64, i64),
) -> (Vec<f32>, Vec<i64>) {
    let c = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product::<usize>().max(1);
    let s: Vec<f64> = scales.iter().map(|&s| s as f64 * factor).collect();
    let codes = wf
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let sc = s[(i / inner) % c];
            let w = w as f64;
            if sc <= 0.0 || w.abs() < prune * sc {
                0
            } else {
                ((w / sc).round_ties_even() as i64).clamp(lo, hi)
            }
        })
        .collect();
    (s.iter().map(|&x| x as f32).collect(), codes)
}

/// QIL's non-uniform weight grid: per channel, with `scales` the uniform grid's steps
/// and `top` its top code `K`, the levels `L_k = s K (k / K)^(1 / gamma)`, `k = 0..=K`
/// (both signs): QIL's transform `w^gamma` maps them onto the uniform grid. Each weight
/// takes the nearest level, below `prune * L_1` it takes 0. The levels are stored as i8
/// codes on the scale `s K / 127` (`round(127 (k / K)^(1 / gamma))`), which the 8-bit
/// kernels multiply as they are; returns those scales and codes.
fn gamma_weights(
    wf: &[f32],
    shape: &[usize],
    axis: usize,
    scales: &[f32],
    gamma: f64,
    prune: f64,
    top: i64,
) -> (Vec<f32>, Vec<i64>) {
    let c = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product::<usize>().max(1);
    let kk = top as f64;
    // Level k in units of the top level, and as an i8 code.
    let unit: Vec<f64> = (0..=top)
        .map(|k| (k as f64 / kk).powf(1.0 / gamma))
        .collect();
    let code8: Vec<i64> = unit
        .iter()
        .map(|&u| (u * GRID_TOP).round() as i64)
        .collect();
    let codes = wf
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let full = scales[(i / inner) % c] as f64 * kk;
            if full <= 0.0 {
                return 0;
            }
            let x = (w as f64).abs() / full;
            if x < prune * unit[1] {
                return 0;
            }
            // The nearest level (ties to the lower one).
            let k = match unit.binary_search_by(|u| u.total_cmp(&x)) {
                Ok(k) => k,
                Err(0) => 0,
                Err(k) if k > top as usize => top as usize,
                Err(k) => {
                    if x - unit[k - 1] <= unit[k] - x {
                        k - 1
                    } else {
                        k
                    }
                }
            };
            if w < 0.0 { -code8[k] } else { code8[k] }
        })
        .collect();
    let s8 = scales
        .iter()
        .map(|&s| (s as f64 * kk / GRID_TOP) as f32)
        .collect();
    (s8, codes)
}

/// Searches the intervals of every quantized layer of `qdq` (made from `float` by
/// `quantize_model`; `stats` its calibration statistics) on the first samples of `npz`;
/// with `gamma`, the exponent of each weight grid too (without it when a later pass
/// quantizes the weights again on the layer's uniform grid, e.g. `--sequential`).
#[allow(clippy::too_many_arguments)]
pub fn qil_intervals(
    float: &Module,
    qdq: &mut Module,
    report: &mut QuantReport,
    stats: &CalibStats,
    symmetric: bool,
    pow2: bool,
    gamma: bool,
    npz: &Path,
    limit: Option<usize>,
    run: &RunOptions,
) -> Result<QilReport, String> {
    let input = check_single_input(float)?;
    let mut xs = Vec::new();
    let lim = Some(limit.unwrap_or(usize::MAX).min(QIL_SAMPLES));
    stream_samples(npz, lim, 64, &mut |i, x| {
        xs.push(as_input(float, input, i, x)?);
        Ok(())
    })?;
    let fj = JitModel::new(float).map_err(|e| format!("--calib-method qil: {e}"))?;
    let mut judge = Judge {
        float: outputs(&fj, &xs)?,
        xs,
        metric: Metric::default_for(float),
        evaluations: 0,
    };
    let mut out = QilReport {
        samples: judge.xs.len(),
        ..Default::default()
    };
    let mut best = judge.error(qdq)?;
    out.before = best;
    let pb = progress_bar(run.progress, report.layers.len(), "quantization intervals");
    let mut searched_acts: Vec<ValueId> = Vec::new();
    for li in 0..report.layers.len() {
        let layer = report.layers[li].clone();
        pb.inc(1);
        let Some(n) = def_node(qdq, layer.output).cloned() else {
            continue;
        };
        let mut chosen = QilLayer {
            name: layer.name.clone(),
            act: None,
            w_factor: 1.0,
            prune: 0.5,
            sparsity: 0.0,
            gamma: 1.0,
        };
        // 1. The input activation's interval (not a binarized input).
        let xq = source(qdq, n.operands[0]);
        if !(layer.wbits == 1 && layer.abits == 1)
            && let Some(dq) = def_node(qdq, xq).filter(|d| d.op == Op::Dequantize)
            && let Some(qn) = def_node(qdq, dq.operands[0]).filter(|d| d.op == Op::Quantize)
            && !qdq.inputs.contains(&qn.operands[0])
            && let Some(st) = stats.get(qdq, qn.operands[0])
            && !searched_acts.contains(&dq.operands[0])
        {
            let qv = dq.operands[0];
            searched_acts.push(qv);
            let bits = layer.abits;
            let (lo0, hi0) = (st.min.min(0.0), st.max.max(0.0));
            let clip = CLIP_MAX;
            let (top, bottom) = if st.hist.is_empty() {
                (hi0 as f64, lo0 as f64)
            } else {
                (
                    st.hist.quantile(1.0 - clip),
                    st.hist.quantile(clip).min(0.0),
                )
            };
            let orig = qdq.ty(qv).elem.clone();
            let mut cur = (lo0, hi0);
            let mut cur_elem = orig.clone();
            // The top, then the bottom of a signed range.
            for side in [true, false] {
                if !side && lo0 >= 0.0 {
                    continue;
                }
                for &f in &ACT_FACTORS {
                    let cand = if side {
                        (cur.0, hi0 * f)
                    } else {
                        (lo0 * f, cur.1)
                    };
                    if cand == cur || cand.1 - cand.0 <= 0.0 {
                        continue;
                    }
                    // At most CLIP_MAX of the calibration values beyond either end.
                    if (cand.1 as f64) < top || (cand.0 as f64) > bottom {
                        continue;
                    }
                    let Ok(t) = act_type(cand.0, cand.1, bits, symmetric, pow2) else {
                        continue;
                    };
                    qdq.value_mut(qv).ty.elem = ElemType::Quant(t);
                    let e = judge.error(qdq)?;
                    if e < best {
                        best = e;
                        cur = cand;
                        cur_elem = qdq.ty(qv).elem.clone();
                    }
                }
                qdq.value_mut(qv).ty.elem = cur_elem.clone();
            }
            if cur_elem != orig {
                chosen.act = Some(cur);
            }
        }
        // 2. The weights' clipping and pruning (not binary weights).
        if layer.wbits >= 2
            && let Some(wc) = weight_const(qdq, &n)
            && let Some(fnode) = def_node(float, layer.output)
            && let Some(ConstData::F32(wf)) = float.const_data(fnode.operands[1]).cloned()
            && let Some(qt) = qdq.ty(wc).elem.quant().cloned()
            && let QuantParams::PerAxis { axis, scales, .. } = &qt.params
            && let Some(ConstData::Int(codes0)) = qdq.const_data(wc).cloned()
        {
            let (axis, scales0) = (*axis, scales.clone());
            let shape = qdq.ty(wc).shape.clone();
            let bits = qt.storage.bits as u32;
            let range = if qt.narrow {
                (-((1i64 << (bits - 1)) - 1), (1i64 << (bits - 1)) - 1)
            } else {
                (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
            };
            let set = |qdq: &mut Module, s: &[f32], codes: Vec<i64>| {
                let mut t = qt.clone();
                if let QuantParams::PerAxis { scales, .. } = &mut t.params {
                    *scales = s.to_vec();
                }
                qdq.value_mut(wc).ty.elem = ElemType::Quant(t);
                qdq.value_mut(wc).def = ValueDef::Const(ConstData::Int(codes));
            };
            let mut cur: (Vec<f32>, Vec<i64>) = (scales0.clone(), codes0);
            let (mut fbest, mut pbest) = (1.0, 0.5);
            // The fraction of the weights a factor clips (beyond the top code).
            let clipped = |f: f64| {
                let c = shape[axis];
                let inner: usize = shape[axis + 1..].iter().product::<usize>().max(1);
                let n = wf
                    .iter()
                    .enumerate()
                    .filter(|&(i, &w)| {
                        (w.abs() as f64)
                            > (range.1 as f64 + 0.5) * scales0[(i / inner) % c] as f64 * f
                    })
                    .count();
                n as f64 / wf.len().max(1) as f64
            };
            let base_clip = clipped(1.0);
            for &f in &W_FACTORS {
                if f == 1.0 || clipped(f) > base_clip.max(W_CLIP_MAX) {
                    continue;
                }
                let (s, c) = requantize_weights(&wf, &shape, axis, &scales0, f, 0.5, range);
                set(qdq, &s, c.clone());
                let e = judge.error(qdq)?;
                if e < best {
                    (best, fbest, cur) = (e, f, (s, c));
                }
            }
            for &p in &PRUNE[1..] {
                let (s, c) = requantize_weights(&wf, &shape, axis, &scales0, fbest, p, range);
                set(qdq, &s, c.clone());
                let e = judge.error(qdq)?;
                if e < best {
                    (best, pbest, cur) = (e, p, (s, c));
                }
            }
            let zeros = cur.1.iter().filter(|&&c| c == 0).count();
            chosen.sparsity = zeros as f64 / cur.1.len().max(1) as f64;
            chosen.w_factor = fbest;
            chosen.prune = pbest;
            report.layers[li].w_scales = (
                cur.0.iter().copied().fold(f32::INFINITY, f32::min),
                cur.0.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            );
            set(qdq, &cur.0.clone(), cur.1.clone());
            // 3. The exponent gamma: the same 2^b - 1 levels on a power-law grid, stored
            // as i8 codes (3 to 7 bits: at 2 bits the narrow grid has one level a side).
            if gamma && (2..GRID_TOP as i64).contains(&range.1) && range.0 == -range.1 {
                let mut t8 = qt.clone();
                t8.storage.bits = 8;
                t8.pow2 = false;
                let set8 = |qdq: &mut Module, s: &[f32], codes: Vec<i64>| {
                    let mut t = t8.clone();
                    if let QuantParams::PerAxis { scales, .. } = &mut t.params {
                        *scales = s.to_vec();
                    }
                    qdq.value_mut(wc).ty.elem = ElemType::Quant(t);
                    qdq.value_mut(wc).def = ValueDef::Const(ConstData::Int(codes));
                };
                let mut grid: Option<(f64, Vec<f32>, Vec<i64>)> = None;
                for &g in &GAMMAS {
                    let (s8, c8) = gamma_weights(&wf, &shape, axis, &cur.0, g, pbest, range.1);
                    set8(qdq, &s8, c8.clone());
                    let e = judge.error(qdq)?;
                    if e < best {
                        best = e;
                        grid = Some((g, s8, c8));
                    }
                }
                match grid {
                    Some((g, s8, c8)) => {
                        chosen.gamma = g;
                        let zeros = c8.iter().filter(|&&c| c == 0).count();
                        chosen.sparsity = zeros as f64 / c8.len().max(1) as f64;
                        set8(qdq, &s8, c8);
                    }
                    None => set(qdq, &cur.0, cur.1),
                }
            }
        }
        out.layers.push(chosen);
    }
    pb.finish_and_clear();
    out.after = best;
    out.evaluations = judge.evaluations;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_clip_and_prune_on_the_uniform_grid() {
        // Two channels of three weights, scales 0.1 and 0.2, 3-bit narrow codes.
        let w = [0.04, 0.26, -0.9, 0.05, -0.31, 0.5];
        let (s, c) = requantize_weights(&w, &[2, 3], 0, &[0.1, 0.2], 1.0, 0.5, (-3, 3));
        assert_eq!(s, vec![0.1, 0.2]);
        assert_eq!(c, vec![0, 3, -3, 0, -2, 2]);
        // Pruning below one step: 0.04 and 0.05 were 0 already; 0.26 (2.6 steps) stays.
        let (_, c) = requantize_weights(&w, &[2, 3], 0, &[0.1, 0.2], 1.0, 1.0, (-3, 3));
        assert_eq!(c, vec![0, 3, -3, 0, -2, 2]);
        // A factor 2 doubles the steps: 0.26 -> 1.3 -> 1; -0.31 / 0.4 -> -0.775, pruned
        // at 1.5 steps.
        let (s, c) = requantize_weights(&w, &[2, 3], 0, &[0.1, 0.2], 2.0, 1.5, (-3, 3));
        assert_eq!(s, vec![0.2, 0.4]);
        assert_eq!(c, vec![0, 0, -3, 0, 0, 0]);
        let (_, c) = requantize_weights(&w, &[2, 3], 0, &[0.1, 0.2], 2.0, 0.5, (-3, 3));
        assert_eq!(c, vec![0, 1, -3, 0, -1, 1]);
    }

    #[test]
    fn gamma_grids_are_power_laws_stored_as_i8_codes() {
        // One channel, step 0.1, K = 3: uniform levels 0.1, 0.2, 0.3 as i8 codes
        // 42, 85, 127 on the scale 0.3 / 127.
        let w = [0.0, 0.04, 0.06, 0.16, -0.26, 0.9];
        let (s, c) = gamma_weights(&w, &[1, 6], 0, &[0.1], 1.0, 0.5, 3);
        assert!((s[0] - 0.3 / 127.0).abs() < 1e-9);
        assert_eq!(c, vec![0, 0, 42, 85, -127, 127]);
        // gamma 0.5: levels 0.3 (k/3)^2 = 0.0333, 0.1333, 0.3 (codes 14, 56, 127); 0.04
        // is nearest 0.0333, 0.16 nearest 0.1333, -0.26 nearest -0.3.
        let (_, c) = gamma_weights(&w, &[1, 6], 0, &[0.1], 0.5, 0.5, 3);
        assert_eq!(c, vec![0, 14, 14, 56, -127, 127]);
        // Pruning below one first level: 0.04 and 0.06 become 0 at prune 2 (0.0667).
        let (_, c) = gamma_weights(&w, &[1, 6], 0, &[0.1], 0.5, 2.0, 3);
        assert_eq!(c, vec![0, 0, 0, 56, -127, 127]);
        // The dequantized weights lie within half an i8 step of the levels.
        for (k, &code) in [14i64, 56, 127].iter().enumerate() {
            let level = 0.3 * ((k + 1) as f64 / 3.0).powi(2);
            assert!((code as f64 * 0.3 / 127.0 - level).abs() <= 0.5 * 0.3 / 127.0);
        }
    }
}
