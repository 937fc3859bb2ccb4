//! Float ops: elementwise arithmetic and activations (in f32), softmax, batch norm,
//! matrix products and reductions (accumulated in f64, rounded once to f32).

use super::{Cx, Tensor, split_at_axis};
use crate::shape::{broadcast, broadcast_indices, matmul_geom, normalize_axis};

/// `f(a, b)` elementwise with numpy broadcasting.
pub(super) fn binary(cx: &Cx<'_>, f: impl Fn(f32, f32) -> f32) -> Result<Tensor, String> {
    let (a, b) = (cx.f32(0)?, cx.f32(1)?);
    let shape = broadcast(cx.shape(0), cx.shape(1))?;
    let ia = broadcast_indices(cx.shape(0), &shape);
    let ib = broadcast_indices(cx.shape(1), &shape);
    let data = ia.iter().zip(&ib).map(|(&i, &j)| f(a[i], b[j])).collect();
    Ok(Tensor::f32(shape, data))
}

/// `f(x)` elementwise.
pub(super) fn unary(cx: &Cx<'_>, f: impl Fn(f32) -> f32) -> Result<Tensor, String> {
    let x = cx.f32(0)?;
    Ok(Tensor::f32(cx.shape(0), x.iter().map(|&v| f(v)).collect()))
}

/// `min(max(x, 0), 1)`, keeping NaN.
pub(super) fn clamp01(x: f32) -> f32 {
    x.clamp(0.0, 1.0)
}

/// ONNX Sign: -1, 0 or +1; NaN stays NaN.
pub(super) fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        // 0, -0 and NaN are returned as they are.
        x
    }
}

/// `max(a, b)`: NaN when either is NaN; `+0.0` over `-0.0`.
pub(super) fn max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a > b || (a == b && a.is_sign_positive()) {
        a
    } else {
        b
    }
}

/// `min(a, b)`: NaN when either is NaN; `-0.0` under `+0.0`.
pub(super) fn min(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a < b || (a == b && a.is_sign_negative()) {
        a
    } else {
        b
    }
}

/// The error function, evaluated in f64 and rounded once: the Maclaurin series below
/// |x| = 3 (at most 60 terms; the largest term is about 3e3, so cancellation costs
/// under 1e-12), the continued fraction of erfc above (converged after 60 levels).
pub(super) fn erf(x: f32) -> f32 {
    let x = x as f64;
    if x.is_nan() {
        return f32::NAN;
    }
    let a = x.abs();
    let v = if a < 3.0 {
        let x2 = a * a;
        let mut term = a; // (-1)^n x^(2n+1) / n!
        let mut sum = a;
        for n in 1..60 {
            term *= -x2 / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else if a < 10.0 {
        // erfc(a) = e^(-a^2)/sqrt(pi) * 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + ...)))).
        let mut f = a;
        for k in (1..60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
    } else {
        1.0
    };
    (v.copysign(x)) as f32
}

pub(super) fn clip(cx: &Cx<'_>) -> Result<Tensor, String> {
    let lo = cx.attrs.opt_float("min")?;
    let hi = cx.attrs.opt_float("max")?;
    unary(cx, |x| {
        let x = match lo {
            Some(lo) if x < lo => lo,
            _ => x,
        };
        match hi {
            Some(hi) if x > hi => hi,
            _ => x,
        }
    })
}

pub(super) fn leaky_relu(cx: &Cx<'_>) -> Result<Tensor, String> {
    let alpha = cx.attrs.float("alpha")?;
    unary(cx, |x| if x >= 0.0 { x } else { alpha * x })
}

pub(super) fn hard_sigmoid(cx: &Cx<'_>) -> Result<Tensor, String> {
    let alpha = cx.attrs.float("alpha")?;
    let beta = cx.attrs.float("beta")?;
    unary(cx, |x| clamp01(alpha * x + beta))
}

/// Softmax along `axis`, computed in f64 and rounded once.
pub(super) fn softmax(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = cx.f32(0)?;
    let shape = cx.shape(0);
    let axis = normalize_axis(cx.attrs.int("axis")?, shape.len())?;
    let (outer, d, inner) = split_at_axis(shape, axis);
    let mut out = vec![0f32; x.len()];
    let mut e = vec![0f64; d];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * d + k) * inner + i;
            let max = (0..d).map(|k| x[at(k)]).fold(f32::NEG_INFINITY, f32::max) as f64;
            let mut sum = 0f64;
            for (k, ek) in e.iter_mut().enumerate() {
                *ek = (x[at(k)] as f64 - max).exp();
                sum += *ek;
            }
            for (k, ek) in e.iter().enumerate() {
                out[at(k)] = (ek / sum) as f32;
            }
        }
    }
    Ok(Tensor::f32(shape, out))
}

/// Inference batch norm over axis 1, in f32.
pub(super) fn batch_norm(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = cx.f32(0)?;
    let shape = cx.shape(0);
    if shape.len() < 2 {
        return Err(format!("x must be [N, C, ...], found shape {shape:?}"));
    }
    let c = shape[1];
    let mut params = Vec::with_capacity(4);
    for (i, name) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
        let p = cx.f32(i)?;
        if p.len() != c {
            return Err(format!("{name} must have {c} elements, found {}", p.len()));
        }
        params.push(p);
    }
    let (scale, bias, mean, var) = (params[0], params[1], params[2], params[3]);
    let eps = cx.attrs.float("epsilon")?;
    let inner: usize = shape[2..].iter().product();
    let out = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / inner.max(1)) % c;
            (v - mean[ch]) / (var[ch] + eps).sqrt() * scale[ch] + bias[ch]
        })
        .collect();
    Ok(Tensor::f32(shape, out))
}

pub(super) fn matmul(cx: &Cx<'_>) -> Result<Tensor, String> {
    let (a, b) = (cx.f32(0)?, cx.f32(1)?);
    let g = matmul_geom(cx.shape(0), cx.shape(1))?;
    let (m, k, n) = (g.m, g.k, g.n);
    let mut out = Vec::with_capacity(g.batches.len() * m * n);
    for &(ba, bb) in &g.batches {
        let (a0, b0) = (ba * m * k, bb * k * n);
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|p| a[a0 + i * k + p] as f64 * b[b0 + p * n + j] as f64)
                    .sum();
                out.push(s as f32);
            }
        }
    }
    Ok(Tensor::f32(g.out_shape, out))
}

pub(super) fn gemm(cx: &Cx<'_>) -> Result<Tensor, String> {
    let (a, b) = (cx.f32(0)?, cx.f32(1)?);
    let (sa, sb) = (cx.shape(0), cx.shape(1));
    if sa.len() != 2 || sb.len() != 2 {
        return Err(format!("a and b must have rank 2, found {sa:?} and {sb:?}"));
    }
    let ta = cx.attrs.bool("trans_a")?;
    let tb = cx.attrs.bool("trans_b")?;
    let alpha = cx.attrs.float("alpha")? as f64;
    let beta = cx.attrs.float("beta")? as f64;
    let (m, k) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
    let (kb, n) = if tb { (sb[1], sb[0]) } else { (sb[0], sb[1]) };
    if k != kb {
        return Err(format!("inner dimensions differ ({k} vs {kb})"));
    }
    let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
    let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
    let cvals: Option<(Vec<usize>, &[f32])> = match cx.opt(2) {
        Some(c) => {
            let cs = &c.shape;
            if !crate::shape::broadcasts_to(cs, &[m, n]) {
                return Err(format!(
                    "c of shape {cs:?} does not broadcast to [{m}, {n}]"
                ));
            }
            Some((broadcast_indices(cs, &[m, n]), cx.f32(2)?))
        }
        None => None,
    };
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum();
            let mut r = alpha * s;
            if let Some((idx, c)) = &cvals {
                r += beta * c[idx[i * n + j]] as f64;
            }
            out.push(r as f32);
        }
    }
    Ok(Tensor::f32(vec![m, n], out))
}

/// Mean over the given (distinct, normalized) axes of an f32 tensor, in f64.
/// What a reduction computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reduce {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
}

fn mean_over(x: &[f32], shape: &[usize], axes: &[bool], keepdims: bool) -> Tensor {
    reduce_over(x, shape, axes, keepdims, Reduce::Mean)
}

/// `kind` over `axes` in f64 (exact for max and min), rounded once to f32.
fn reduce_over(x: &[f32], shape: &[usize], axes: &[bool], keepdims: bool, kind: Reduce) -> Tensor {
    let kept: Vec<usize> = shape
        .iter()
        .zip(axes)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let count: usize = shape
        .iter()
        .zip(axes)
        .filter(|(_, r)| **r)
        .map(|(&d, _)| d)
        .product();
    let nout: usize = kept.iter().product();
    let init = match kind {
        Reduce::Mean | Reduce::Sum => 0f64,
        Reduce::Max => f64::NEG_INFINITY,
        Reduce::Min => f64::INFINITY,
        Reduce::Prod => 1f64,
    };
    let mut sums = vec![init; nout];
    // Map each input element to its output element.
    let kept_strides = crate::shape::strides(&kept);
    let mut idx = vec![0usize; shape.len()];
    for &v in x {
        let o: usize = idx
            .iter()
            .zip(axes)
            .zip(&kept_strides)
            .map(|((&i, &r), &s)| if r { 0 } else { i * s })
            .sum();
        let (a, v) = (sums[o], v as f64);
        sums[o] = match kind {
            Reduce::Mean | Reduce::Sum => a + v,
            Reduce::Prod => a * v,
            Reduce::Max if a.is_nan() || v.is_nan() => f64::NAN,
            Reduce::Min if a.is_nan() || v.is_nan() => f64::NAN,
            // Ties of signed zeros as `max`/`min` resolve them: +0 over -0.
            Reduce::Max if a > v || (a == v && a.is_sign_positive()) => a,
            Reduce::Min if a < v || (a == v && a.is_sign_negative()) => a,
            Reduce::Max | Reduce::Min => v,
        };
        super::next_index(&mut idx, shape);
    }
    let data = sums
        .into_iter()
        .map(|s| match kind {
            Reduce::Mean => (s / count as f64) as f32,
            _ => s as f32,
        })
        .collect();
    let out_shape = if keepdims {
        kept
    } else {
        shape
            .iter()
            .zip(axes)
            .filter(|(_, r)| !**r)
            .map(|(&d, _)| d)
            .collect()
    };
    Tensor::f32(out_shape, data)
}

pub(super) fn global_avg_pool(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = cx.f32(0)?;
    let shape = cx.shape(0);
    if shape.len() < 2 {
        return Err(format!("x must be [N, C, ...], found shape {shape:?}"));
    }
    let axes: Vec<bool> = (0..shape.len()).map(|i| i >= 2).collect();
    Ok(mean_over(x, shape, &axes, true))
}

pub(super) fn reduce(cx: &Cx<'_>, kind: Reduce) -> Result<Tensor, String> {
    let x = cx.f32(0)?;
    let shape = cx.shape(0);
    let list = cx.attrs.ints("axes")?;
    let keepdims = cx.attrs.bool("keepdims")?;
    let mut axes = vec![list.is_empty(); shape.len()];
    for &a in &list {
        let a = normalize_axis(a, shape.len())?;
        if axes[a] {
            return Err(format!("axis {a} is listed twice in `axes`"));
        }
        axes[a] = true;
    }
    Ok(reduce_over(x, shape, &axes, keepdims, kind))
}

#[cfg(test)]
mod erf_tests {
    use super::erf;

    #[test]
    fn erf_matches_tabulated_values() {
        for (x, want) in [
            (0.0f64, 0.0f64),
            (1e-4, 1.128_379_134_828_993_5e-4),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (2.999, 0.999_977_769_841_553_8),
            (3.0, 0.999_977_909_503_001_4),
            (3.5, 0.999_999_256_901_627_7),
            (5.0, 0.999_999_999_998_462_5),
        ] {
            // The tabulated values are erf of the f32 nearest to x.
            for s in [1.0, -1.0] {
                let got = erf((s * x) as f32);
                let want = (s * want) as f32;
                assert_eq!(got, want, "erf({})", s * x);
            }
        }
        assert!(erf(f32::NAN).is_nan());
        assert_eq!(erf(f32::INFINITY), 1.0);
    }
}
