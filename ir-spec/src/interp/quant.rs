//! Element type conversion, quantization and the integer ops: cast, quantize,
//! dequantize, fake_quant, trunc, requantize, conv2d_int, matmul_int, binarize,
//! threshold, lookup, bit_pack and bit_unpack, and add/sub/mul on plain integers.
//!
//! Integer arithmetic is exact: products and sums are formed in i64/i128, and the only
//! wrapping is the documented wrap of accumulators to i32 (sums wrapped in i64 and then
//! to i32 give the same result as the exact sum wrapped to i32, since 2^32 divides 2^64).

use super::{Cx, Tensor, TensorData, nn, split_at_axis};
use crate::rounding::Rounding;
use crate::shape::{broadcast_indices, broadcasts_to, normalize_axis};
use crate::types::{ElemType, IntType, QuantParams, QuantType};

/// Which scale and zero point each element of a quantized tensor uses.
pub(super) enum ParamIdx {
    /// Per-tensor: index 0 for every element.
    Tensor,
    /// Index for every element, row-major.
    Each(Vec<usize>),
}

impl ParamIdx {
    pub fn at(&self, i: usize) -> usize {
        match self {
            ParamIdx::Tensor => 0,
            ParamIdx::Each(v) => v[i],
        }
    }
}

/// The parameter index of every element of a tensor of `shape` with `params`, after
/// checking that the parameters fit the shape.
pub(super) fn param_indices(params: &QuantParams, shape: &[usize]) -> Result<ParamIdx, String> {
    let n_s = params.scales().len();
    let n_z = params.zero_points().len();
    match params.expected_count(shape) {
        Some(c) if c == n_s && c == n_z => {}
        _ => {
            return Err(format!(
                "quantization parameters ({n_s} scales, {n_z} zero points) do not fit shape {shape:?}"
            ));
        }
    }
    let n: usize = shape.iter().product();
    Ok(match params {
        QuantParams::PerTensor { .. } => ParamIdx::Tensor,
        QuantParams::PerAxis { axis, .. } => {
            let (_, d, inner) = split_at_axis(shape, *axis);
            ParamIdx::Each((0..n).map(|i| (i / inner) % d).collect())
        }
        QuantParams::Blocked { .. } => {
            let mut idx = vec![0usize; shape.len()];
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(params.param_index(shape, &idx));
                super::next_index(&mut idx, shape);
            }
            ParamIdx::Each(out)
        }
    })
}

/// The quantized type of operand `i`, or an error.
fn quant_operand<'a>(cx: &Cx<'a>, i: usize) -> Result<&'a QuantType, String> {
    cx.elem(i)
        .quant()
        .ok_or_else(|| format!("operand {i} must be quantized, found {}", cx.ty(i)))
}

/// The zero point of every element of operand `i` (0 for plain integers and bipolar).
fn zero_points(cx: &Cx<'_>, i: usize) -> Result<Vec<i64>, String> {
    let shape = cx.shape(i);
    let n: usize = shape.iter().product();
    match cx.elem(i) {
        ElemType::Quant(q) => {
            let p = param_indices(&q.params, shape)?;
            let zps = q.params.zero_points();
            Ok((0..n).map(|e| zps[p.at(e)] as i64).collect())
        }
        _ => Ok(vec![0; n]),
    }
}

/// The per-tensor zero point of integer-valued operand `i`.
fn tensor_zero_point(cx: &Cx<'_>, i: usize) -> Result<i64, String> {
    match cx.elem(i) {
        ElemType::Quant(q) => match q.params {
            QuantParams::PerTensor { zero_point, .. } => Ok(zero_point as i64),
            _ => Err(format!(
                "operand {i} must be quantized per tensor, found {}",
                cx.ty(i)
            )),
        },
        ElemType::F32 => Err(format!("operand {i} must be integer-valued, found f32")),
        ElemType::Int(_) | ElemType::Bipolar => Ok(0),
    }
}

/// Zero points of operand `i` per index along `axis` (`len` of them): per-tensor
/// parameters repeat, per-axis parameters must be along `axis`.
fn axis_zero_points(cx: &Cx<'_>, i: usize, axis: usize, len: usize) -> Result<Vec<i64>, String> {
    match cx.elem(i) {
        ElemType::Quant(q) => match &q.params {
            QuantParams::PerTensor { zero_point, .. } => Ok(vec![*zero_point as i64; len]),
            QuantParams::PerAxis {
                axis: a,
                zero_points,
                ..
            } if *a == axis && zero_points.len() == len => {
                Ok(zero_points.iter().map(|&z| z as i64).collect())
            }
            _ => Err(format!(
                "operand {i} must be quantized per tensor or along axis {axis}, found {}",
                cx.ty(i)
            )),
        },
        ElemType::F32 => Err(format!("operand {i} must be integer-valued, found f32")),
        ElemType::Int(_) | ElemType::Bipolar => Ok(vec![0; len]),
    }
}

/// The codes of operand `i` of an op that requires integers.
fn codes<'a>(cx: &Cx<'a>, i: usize) -> Result<&'a [i64], String> {
    cx.int(i)
}

/// f32 operand `i` broadcast (unidirectionally) to `shape`: an index per element.
fn broadcast_to(cx: &Cx<'_>, i: usize, shape: &[usize]) -> Result<Vec<usize>, String> {
    let s = cx.shape(i);
    if !broadcasts_to(s, shape) {
        return Err(format!(
            "operand {i} of shape {s:?} does not broadcast to {shape:?}"
        ));
    }
    Ok(broadcast_indices(s, shape))
}

// ---------------------------------------------------------------------------------
// cast

pub(super) fn cast(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = cx.t(0);
    let out = &cx.out.elem;
    let data = match (&x.data, out) {
        (TensorData::F32(v), ElemType::F32) => TensorData::F32(v.clone()),
        (TensorData::Int(v), ElemType::F32) => {
            TensorData::F32(v.iter().map(|&c| c as f32).collect())
        }
        (TensorData::F32(_), ElemType::Bipolar) => {
            return Err("f32 cannot be cast to b1 (binarize maps f32 to +-1)".into());
        }
        (TensorData::F32(v), ElemType::Int(_) | ElemType::Quant(_)) => {
            let rounding = cx.attrs.rounding("rounding")?;
            let (lo, hi) = code_range(out)?;
            // `as` saturates and maps NaN to 0.
            TensorData::Int(
                v.iter()
                    .map(|&f| (rounding.round_f32(f) as i64).clamp(lo, hi))
                    .collect(),
            )
        }
        (TensorData::Int(v), ElemType::Bipolar) => {
            if let Some(c) = v.iter().find(|&&c| c != 1 && c != -1) {
                return Err(format!("code {c} is not a b1 value (+1 or -1)"));
            }
            TensorData::Int(v.clone())
        }
        (
            TensorData::Int(v),
            ElemType::Int(st) | ElemType::Quant(QuantType { storage: st, .. }),
        ) => TensorData::Int(v.iter().map(|&c| st.wrap(c)).collect()),
    };
    Tensor::new(x.shape.clone(), data)
}

fn code_range(elem: &ElemType) -> Result<(i64, i64), String> {
    match elem.code_range() {
        Some((lo, hi)) if lo <= hi => Ok((lo, hi)),
        _ => Err(format!("{elem} has no range of codes")),
    }
}

// ---------------------------------------------------------------------------------
// quantize, dequantize

pub(super) fn quantize(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = cx.f32(0)?;
    let q = cx
        .out
        .elem
        .quant()
        .ok_or_else(|| format!("the result must be quantized, found {}", cx.out))?;
    let rounding = cx.attrs.rounding("rounding")?;
    let p = param_indices(&q.params, cx.shape(0))?;
    let (scales, zps) = (q.params.scales(), q.params.zero_points());
    let (lo, hi) = (q.qmin(), q.qmax());
    let out = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let k = p.at(i);
            let z = zps[k] as i64;
            let y = v / scales[k];
            if y.is_nan() {
                return z.clamp(lo, hi);
            }
            // `as` saturates at the i64 range, which is beyond any storage range.
            (rounding.round_f32(y) as i64)
                .saturating_add(z)
                .clamp(lo, hi)
        })
        .collect();
    Ok(Tensor::int(cx.shape(0), out))
}

pub(super) fn dequantize(cx: &Cx<'_>) -> Result<Tensor, String> {
    let c = codes(cx, 0)?;
    let q = quant_operand(cx, 0)?;
    let p = param_indices(&q.params, cx.shape(0))?;
    let (scales, zps) = (q.params.scales(), q.params.zero_points());
    let out = c
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let k = p.at(i);
            (v as f32 - zps[k] as f32) * scales[k]
        })
        .collect();
    Ok(Tensor::f32(cx.shape(0), out))
}

// ---------------------------------------------------------------------------------
// fake_quant, trunc (QONNX Quant and Trunc, in f32)

/// `[min, max]` of a `bits`-wide integer grid, as f32 (QONNX `min_int`/`max_int`).
fn grid(bits: i64, signed: bool, narrow: bool) -> Result<(f32, f32), String> {
    if !(1..=32).contains(&bits) {
        return Err(format!("bit-width {bits} is outside 1..=32"));
    }
    let b = bits as i32;
    let (lo, hi) = if signed {
        let h = 2f64.powi(b - 1);
        (-h + if narrow { 1.0 } else { 0.0 }, h - 1.0)
    } else {
        (0.0, 2f64.powi(b) - 1.0 - if narrow { 1.0 } else { 0.0 })
    };
    Ok((lo as f32, hi as f32))
}

/// `min(max(y, lo), hi)` that keeps NaN.
fn clamp_keep_nan(y: f32, lo: f32, hi: f32) -> f32 {
    if y > hi {
        hi
    } else if y < lo {
        lo
    } else {
        y
    }
}

pub(super) fn fake_quant(cx: &Cx<'_>) -> Result<Tensor, String> {
    let (x, s, z) = (cx.f32(0)?, cx.f32(1)?, cx.f32(2)?);
    let shape = cx.shape(0);
    let is = broadcast_to(cx, 1, shape)?;
    let iz = broadcast_to(cx, 2, shape)?;
    let bits = cx.attrs.int("bits")?;
    let signed = cx.attrs.bool("signed")?;
    let narrow = cx.attrs.bool("narrow")?;
    let rounding = cx.attrs.rounding("rounding")?;
    let (lo, hi) = grid(bits, signed, narrow)?;
    let bipolar = bits == 1 && signed;
    let out = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (s, z) = (s[is[i]], z[iz[i]]);
            let y = v / s + z;
            let y = if bipolar {
                if y >= 0.0 { 1.0 } else { -1.0 }
            } else {
                rounding.round_f32(clamp_keep_nan(y, lo, hi))
            };
            (y - z) * s
        })
        .collect();
    Ok(Tensor::f32(shape, out))
}

pub(super) fn trunc(cx: &Cx<'_>) -> Result<Tensor, String> {
    let (x, s, z) = (cx.f32(0)?, cx.f32(1)?, cx.f32(2)?);
    let shape = cx.shape(0);
    let is = broadcast_to(cx, 1, shape)?;
    let iz = broadcast_to(cx, 2, shape)?;
    let in_bits = cx.attrs.int("in_bits")?;
    let out_bits = cx.attrs.int("out_bits")?;
    let rounding = cx.attrs.rounding("rounding")?;
    if !(1..=64).contains(&in_bits) || !(1..=64).contains(&out_bits) {
        return Err(format!(
            "bit-widths {in_bits} -> {out_bits} are outside 1..=64"
        ));
    }
    let out = match cx.opt(3) {
        None => {
            // v1: no clamp.
            let t = 2f32.powi((in_bits - out_bits) as i32);
            x.iter()
                .enumerate()
                .map(|(i, &v)| {
                    let (s, z) = (s[is[i]], z[iz[i]]);
                    let y = (v / s + z).round_ties_even() / t;
                    (rounding.round_f32(y) - z) * s
                })
                .collect()
        }
        Some(_) => {
            // v2: power-of-two rescale to out_scale, clamp to the out_bits grid.
            let os = cx.f32(3)?;
            let ios = broadcast_to(cx, 3, shape)?;
            let (lo, hi) = grid(out_bits, cx.attrs.bool("signed")?, cx.attrs.bool("narrow")?)?;
            x.iter()
                .enumerate()
                .map(|(i, &v)| {
                    let (s, z, os) = (s[is[i]], z[iz[i]], os[ios[i]]);
                    let t = (os / s).log2().round_ties_even().exp2();
                    let y = (v / s + z).round_ties_even() / t;
                    let y = rounding.round_f32(clamp_keep_nan(y, lo, hi));
                    (y - z / t) * os
                })
                .collect()
        }
    };
    Ok(Tensor::f32(shape, out))
}

// ---------------------------------------------------------------------------------
// requantize

/// `rounding(n / 2^shift)` exactly, for any shift (see [`Rounding::shift_right_wide`]).
pub(super) fn round_shift(rounding: Rounding, n: i128, shift: i64) -> i128 {
    rounding.shift_right_wide(n, shift)
}

/// A per-channel attribute: one entry, or one per index of the channel axis.
fn per_channel(v: &[i64], name: &str, channels: Option<usize>) -> Result<(), String> {
    match (v.len(), channels) {
        (1, _) => Ok(()),
        (n, Some(c)) if n == c => Ok(()),
        (n, _) => Err(format!(
            "`{name}` must have 1 entry or one per channel ({}), found {n}",
            channels.map_or("no channel axis".to_string(), |c| c.to_string())
        )),
    }
}

pub(super) fn requantize(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = codes(cx, 0)?;
    let shape = cx.shape(0);
    let mult = cx.attrs.ints("multiplier")?;
    let shift = cx.attrs.ints("shift")?;
    let rounding = cx.attrs.rounding("rounding")?;
    let per_ch = mult.len() > 1 || shift.len() > 1;
    let (inner, d) = if per_ch {
        let axis = normalize_axis(cx.attrs.int("axis")?, shape.len())?;
        let (_, d, inner) = split_at_axis(shape, axis);
        (inner, Some(d))
    } else {
        (1, None)
    };
    per_channel(&mult, "multiplier", d)?;
    per_channel(&shift, "shift", d)?;
    let zx = zero_points(cx, 0)?;
    let (out_lo, out_hi) = code_range(&cx.out.elem)?;
    if cx.out.elem == ElemType::Bipolar {
        return Err("the result must be an integer or quantized type, found b1".into());
    }
    let lo = cx.attrs.opt_int("min")?.map_or(out_lo, |m| m.max(out_lo));
    let hi = cx.attrs.opt_int("max")?.map_or(out_hi, |m| m.min(out_hi));
    if lo > hi {
        return Err(format!("the clamp range [{lo}, {hi}] is empty"));
    }
    let zq: Vec<i64> = match &cx.out.elem {
        ElemType::Quant(q) => {
            let p = param_indices(&q.params, &cx.out.shape)?;
            let zps = q.params.zero_points();
            (0..x.len()).map(|i| zps[p.at(i)] as i64).collect()
        }
        _ => vec![0; x.len()],
    };
    let pick = |v: &[i64], i: usize| {
        if v.len() == 1 {
            v[0]
        } else {
            v[(i / inner) % v.len()]
        }
    };
    let out = x
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let a = c as i128 - zx[i] as i128;
            let r = round_shift(rounding, a * pick(&mult, i) as i128, pick(&shift, i));
            (r.saturating_add(zq[i] as i128)).clamp(lo as i128, hi as i128) as i64
        })
        .collect();
    Ok(Tensor::int(shape, out))
}

// ---------------------------------------------------------------------------------
// conv2d_int, matmul_int

/// Integer bias values (`len` of them), or zeros.
fn int_bias(cx: &Cx<'_>, i: usize, len: usize) -> Result<Vec<i64>, String> {
    match cx.opt(i) {
        None => Ok(vec![0; len]),
        Some(b) => {
            let v = codes(cx, i)?;
            if v.len() != len {
                return Err(format!(
                    "bias must have {len} elements, found shape {:?}",
                    b.shape
                ));
            }
            Ok(v.to_vec())
        }
    }
}

pub(super) fn conv2d_int(cx: &Cx<'_>) -> Result<Tensor, String> {
    let (x, w) = (codes(cx, 0)?, codes(cx, 1)?);
    let g = nn::conv_geom(cx)?;
    let zx = tensor_zero_point(cx, 0)?;
    let zw = axis_zero_points(cx, 1, 0, g.m)?;
    let bias = int_bias(cx, 2, g.m)?;
    let per_m = w.len() / g.m.max(1);
    let xc: Vec<i64> = x.iter().map(|&v| v - zx).collect();
    let wc: Vec<i64> = w
        .iter()
        .enumerate()
        .map(|(i, &v)| v - zw[i / per_m.max(1)])
        .collect();
    let acc = nn::conv_sum(
        &g,
        |m| bias[m],
        |a: i64, xi, wi| a.wrapping_add(xc[xi].wrapping_mul(wc[wi])),
    );
    Ok(Tensor::int(
        g.out_shape(),
        acc.into_iter().map(|v| IntType::I32.wrap(v)).collect(),
    ))
}

pub(super) fn matmul_int(cx: &Cx<'_>) -> Result<Tensor, String> {
    let (a, b) = (codes(cx, 0)?, codes(cx, 1)?);
    let g = crate::shape::matmul_geom(cx.shape(0), cx.shape(1))?;
    let (m, k, n) = (g.m, g.k, g.n);
    let za = tensor_zero_point(cx, 0)?;
    let rb = cx.shape(1).len();
    let zb = if rb >= 2 {
        axis_zero_points(cx, 1, rb - 1, n)?
    } else {
        vec![tensor_zero_point(cx, 1)?; n]
    };
    let bias = int_bias(cx, 2, n)?;
    let mut out = Vec::with_capacity(g.batches.len() * m * n);
    for &(ba, bb) in &g.batches {
        let (a0, b0) = (ba * m * k, bb * k * n);
        for i in 0..m {
            for j in 0..n {
                let mut acc = bias[j];
                for p in 0..k {
                    let av = a[a0 + i * k + p] - za;
                    let bv = b[b0 + p * n + j] - zb[j];
                    acc = acc.wrapping_add(av.wrapping_mul(bv));
                }
                out.push(IntType::I32.wrap(acc));
            }
        }
    }
    Ok(Tensor::int(g.out_shape, out))
}

// ---------------------------------------------------------------------------------
// binarize, threshold

pub(super) fn binarize(cx: &Cx<'_>) -> Result<Tensor, String> {
    let sign = |nonneg: bool| if nonneg { 1 } else { -1 };
    let out = match &cx.t(0).data {
        TensorData::F32(v) => v.iter().map(|&x| sign(x >= 0.0)).collect(),
        TensorData::Int(v) => {
            let z = zero_points(cx, 0)?;
            v.iter().zip(&z).map(|(&c, &z)| sign(c >= z)).collect()
        }
    };
    Ok(Tensor::int(cx.shape(0), out))
}

pub(super) fn threshold(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = codes(cx, 0)?;
    let t = codes(cx, 1)?;
    let shape = cx.shape(0);
    let ts = cx.shape(1);
    let axis = normalize_axis(cx.attrs.int("axis")?, shape.len())?;
    let (_, c, inner) = split_at_axis(shape, axis);
    if ts.len() != 2 || (ts[0] != 1 && ts[0] != c) {
        return Err(format!(
            "thresholds must be [{c}, K] or [1, K], found {ts:?}"
        ));
    }
    let k = ts[1];
    let offset = cx.attrs.int("offset")?;
    let bipolar = cx.out.elem == ElemType::Bipolar;
    if bipolar && (k != 1 || offset != 0) {
        return Err(format!(
            "a b1 result needs K = 1 and offset 0, found K = {k}, offset {offset}"
        ));
    }
    let mut out = Vec::with_capacity(x.len());
    for (i, &v) in x.iter().enumerate() {
        let ch = if ts[0] == 1 { 0 } else { (i / inner) % c };
        let count = t[ch * k..(ch + 1) * k]
            .iter()
            .filter(|&&th| v >= th)
            .count() as i64;
        let code = if bipolar {
            2 * count - 1
        } else {
            count.saturating_add(offset)
        };
        if !cx.out.elem.admits(code) {
            return Err(format!(
                "result code {code} (count {count} + offset {offset}) is not admitted by {}",
                cx.out.elem
            ));
        }
        out.push(code);
    }
    Ok(Tensor::int(shape, out))
}

// ---------------------------------------------------------------------------------
// add, sub, mul on plain integers; lookup

/// `f(a, b)` on the codes of two operands of one plain integer type, with broadcasting;
/// the exact result (i128, where codes of at most 32 bits cannot overflow) wrapped to
/// the result type's storage.
pub(super) fn int_binary(cx: &Cx<'_>, f: impl Fn(i128, i128) -> i128) -> Result<Tensor, String> {
    let (a, b) = (codes(cx, 0)?, codes(cx, 1)?);
    let ElemType::Int(st) = cx.out.elem else {
        return Err(format!(
            "integer add/sub/mul needs a plain integer result, found {}",
            cx.out.elem
        ));
    };
    let shape = crate::shape::broadcast(cx.shape(0), cx.shape(1))?;
    let ia = broadcast_indices(cx.shape(0), &shape);
    let ib = broadcast_indices(cx.shape(1), &shape);
    let data = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| {
            let r = f(a[i] as i128, b[j] as i128);
            // Wrap to 64 bits first (2^64 is a multiple of every storage's 2^bits).
            st.wrap(r as i64)
        })
        .collect();
    Ok(Tensor::int(shape, data))
}

/// `table[x - xmin]`, `xmin` the smallest code of x's storage.
pub(super) fn lookup(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = codes(cx, 0)?;
    let t = codes(cx, 1)?;
    let st = cx
        .elem(0)
        .storage()
        .ok_or_else(|| format!("lookup of {} (no integer storage)", cx.elem(0)))?;
    let lo = st.min_code();
    let out = x
        .iter()
        .map(|&v| {
            usize::try_from(v - lo)
                .ok()
                .and_then(|i| t.get(i).copied())
                .ok_or_else(|| format!("code {v} is outside the table of {} entries", t.len()))
        })
        .collect::<Result<Vec<i64>, String>>()?;
    Ok(Tensor::int(cx.shape(0), out))
}

// ---------------------------------------------------------------------------------
// bit_pack, bit_unpack

/// Bits per element of an integer-valued type (b1: 1).
fn elem_bits(elem: &ElemType) -> Result<usize, String> {
    match elem {
        ElemType::F32 => Err("f32 has no bit packing".into()),
        e => Ok(e.bits() as usize),
    }
}

pub(super) fn bit_pack(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = codes(cx, 0)?;
    let shape = cx.shape(0);
    let axis = normalize_axis(cx.attrs.int("axis")?, shape.len())?;
    let word = cx.attrs.int("word_bits")?;
    if ![8, 16, 32].contains(&word) {
        return Err(format!("word_bits must be 8, 16 or 32, found {word}"));
    }
    let word = word as usize;
    let elem = cx.elem(0);
    let b = elem_bits(elem)?;
    let bipolar = *elem == ElemType::Bipolar;
    let (outer, d, inner) = split_at_axis(shape, axis);
    let nw = (d * b).div_ceil(word);
    let mut out = vec![0i64; outer * nw * inner];
    for o in 0..outer {
        for i in 0..inner {
            for e in 0..d {
                let c = x[(o * d + e) * inner + i];
                // The low b bits, two's complement; b1 stores 1 for -1.
                let bits = if bipolar { (c < 0) as u64 } else { c as u64 };
                for bit in 0..b {
                    if (bits >> bit) & 1 == 1 {
                        let p = e * b + bit;
                        out[(o * nw + p / word) * inner + i] |= 1 << (p % word);
                    }
                }
            }
        }
    }
    let mut out_shape = shape.to_vec();
    out_shape[axis] = nw;
    Ok(Tensor::int(out_shape, out))
}

pub(super) fn bit_unpack(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = codes(cx, 0)?;
    let shape = cx.shape(0);
    let axis = normalize_axis(cx.attrs.int("axis")?, shape.len())?;
    let count = usize::try_from(cx.attrs.int("count")?)
        .map_err(|_| "count must be non-negative".to_string())?;
    let word = match cx.elem(0) {
        ElemType::Int(t) | ElemType::Quant(QuantType { storage: t, .. }) => t.bits as usize,
        e => return Err(format!("the operand must hold integer words, found {e}")),
    };
    let out_elem = &cx.out.elem;
    let b = elem_bits(out_elem)?;
    let bipolar = *out_elem == ElemType::Bipolar;
    let signed = out_elem.storage().is_some_and(|s| s.signed);
    let (outer, d, inner) = split_at_axis(shape, axis);
    if count.checked_mul(b).is_none_or(|bits| bits > d * word) {
        return Err(format!(
            "{count} codes of {b} bits do not fit in the {d} words of {word} bits along axis {axis}"
        ));
    }
    let mut out = Vec::with_capacity(outer * count * inner);
    for o in 0..outer {
        for e in 0..count {
            for i in 0..inner {
                let mut v: u64 = 0;
                for bit in 0..b {
                    let p = e * b + bit;
                    let w = x[(o * d + p / word) * inner + i] as u64;
                    v |= ((w >> (p % word)) & 1) << bit;
                }
                let code = if bipolar {
                    if v == 1 { -1 } else { 1 }
                } else if signed && b < 64 && (v >> (b - 1)) & 1 == 1 {
                    v as i64 - (1i64 << b)
                } else {
                    v as i64
                };
                out.push(code);
            }
        }
    }
    let mut out_shape = shape.to_vec();
    out_shape[axis] = count;
    Ok(Tensor::int(out_shape, out))
}
