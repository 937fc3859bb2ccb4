//! Convolution, pooling and resize.

use super::{Cx, Tensor, TensorData, usizes_n};
use crate::shape::{ConvGeom, window_out};

/// Checks the shapes of a convolution's `x` [N, C, H, W] and `w` [M, C/group, kh, kw] and
/// computes the output geometry from the node's attributes.
pub(super) fn conv_geom(cx: &Cx<'_>) -> Result<ConvGeom, String> {
    let (xs, ws) = (cx.shape(0), cx.shape(1));
    if xs.len() != 4 || ws.len() != 4 {
        return Err(format!("x and w must have rank 4, found {xs:?} and {ws:?}"));
    }
    let strides = usizes_n(cx, "strides", 2)?;
    let pads = usizes_n(cx, "pads", 4)?;
    let dil = usizes_n(cx, "dilations", 2)?;
    let group = group_attr(cx)?;
    let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let (m, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    if c % group != 0 || m % group != 0 || cg != c / group {
        return Err(format!(
            "with group {group}, x's {c} channels and w {ws:?} do not match"
        ));
    }
    let oh = window_out(h, kh, strides[0], dil[0], pads[0], pads[2], false)?;
    let ow = window_out(w, kw, strides[1], dil[1], pads[1], pads[3], false)?;
    if let Some(b) = cx.opt(2)
        && b.numel() != m
    {
        return Err(format!(
            "bias must have {m} elements, found shape {:?}",
            b.shape
        ));
    }
    Ok(ConvGeom {
        n,
        c,
        h,
        w,
        m,
        kh,
        kw,
        oh,
        ow,
        sh: strides[0],
        sw: strides[1],
        dh: dil[0],
        dw: dil[1],
        top: pads[0],
        left: pads[1],
        group,
    })
}

fn group_attr(cx: &Cx<'_>) -> Result<usize, String> {
    let g = cx.attrs.int("group")?;
    usize::try_from(g)
        .ok()
        .filter(|&g| g > 0)
        .ok_or_else(|| format!("group must be positive, found {g}"))
}

/// Sums `step(acc, x_index, w_index)` over every in-input tap of every output element
/// of a convolution, starting from `init(m)`. Padded taps are skipped (they read 0).
pub(super) fn conv_sum<A: Copy>(
    g: &ConvGeom,
    init: impl Fn(usize) -> A,
    step: impl Fn(A, usize, usize) -> A,
) -> Vec<A> {
    let cg = g.c / g.group;
    let mg = g.m / g.group;
    let mut out = Vec::with_capacity(g.n * g.m * g.oh * g.ow);
    for b in 0..g.n {
        for oc in 0..g.m {
            let grp = oc / mg;
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = init(oc);
                    for ic in 0..cg {
                        let ch = grp * cg + ic;
                        for i in 0..g.kh {
                            let Some(y) = g.in_y(oy, i) else { continue };
                            for j in 0..g.kw {
                                let Some(x) = g.in_x(ox, j) else { continue };
                                let xi = ((b * g.c + ch) * g.h + y) * g.w + x;
                                let wi = ((oc * cg + ic) * g.kh + i) * g.kw + j;
                                acc = step(acc, xi, wi);
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    out
}

pub(super) fn conv2d(cx: &Cx<'_>) -> Result<Tensor, String> {
    let (x, w) = (cx.f32(0)?, cx.f32(1)?);
    let bias = match cx.opt(2) {
        Some(_) => Some(cx.f32(2)?),
        None => None,
    };
    let g = conv_geom(cx)?;
    let acc = conv_sum(
        &g,
        |m| bias.map_or(0.0, |b| b[m] as f64),
        |a, xi, wi| a + x[xi] as f64 * w[wi] as f64,
    );
    Ok(Tensor::f32(
        g.out_shape(),
        acc.into_iter().map(|v| v as f32).collect(),
    ))
}

pub(super) fn conv_transpose2d(cx: &Cx<'_>) -> Result<Tensor, String> {
    let (x, w) = (cx.f32(0)?, cx.f32(1)?);
    let (xs, ws) = (cx.shape(0), cx.shape(1));
    if xs.len() != 4 || ws.len() != 4 {
        return Err(format!("x and w must have rank 4, found {xs:?} and {ws:?}"));
    }
    let s = usizes_n(cx, "strides", 2)?;
    let pads = usizes_n(cx, "pads", 4)?;
    let d = usizes_n(cx, "dilations", 2)?;
    let op = usizes_n(cx, "output_padding", 2)?;
    let group = group_attr(cx)?;
    let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (wc, mg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    if wc != c || c % group != 0 {
        return Err(format!(
            "with group {group}, x's {c} channels and w {ws:?} do not match"
        ));
    }
    if s.contains(&0) || d.contains(&0) {
        return Err("strides and dilations must be positive".into());
    }
    let m = mg * group;
    let size = |len: usize, st: usize, dl: usize, k: usize, opad: usize, b: usize, e: usize| {
        if len == 0 || k == 0 {
            return Err("input and kernel extents must be positive".to_string());
        }
        let full = st
            .checked_mul(len - 1)
            .and_then(|v| v.checked_add(dl.checked_mul(k - 1)?))
            .and_then(|v| v.checked_add(opad + 1))
            .ok_or("output size out of range")?;
        full.checked_sub(b.saturating_add(e))
            .ok_or_else(|| "padding exceeds the output".to_string())
    };
    let oh = size(h, s[0], d[0], kh, op[0], pads[0], pads[2])?;
    let ow = size(wd, s[1], d[1], kw, op[1], pads[1], pads[3])?;
    let bias = match cx.opt(2) {
        Some(b) => {
            if b.numel() != m {
                return Err(format!(
                    "bias must have {m} elements, found shape {:?}",
                    b.shape
                ));
            }
            Some(cx.f32(2)?)
        }
        None => None,
    };
    let cg = c / group;
    let mut acc = vec![0f64; n * m * oh * ow];
    for b in 0..n {
        for ic in 0..c {
            let grp = ic / cg;
            for iy in 0..h {
                for ix in 0..wd {
                    let xv = x[((b * c + ic) * h + iy) * wd + ix] as f64;
                    for om in 0..mg {
                        let oc = grp * mg + om;
                        for i in 0..kh {
                            let Some(oy) = (iy * s[0] + i * d[0])
                                .checked_sub(pads[0])
                                .filter(|&y| y < oh)
                            else {
                                continue;
                            };
                            for j in 0..kw {
                                let Some(ox) = (ix * s[1] + j * d[1])
                                    .checked_sub(pads[1])
                                    .filter(|&v| v < ow)
                                else {
                                    continue;
                                };
                                let wv = w[((ic * mg + om) * kh + i) * kw + j] as f64;
                                acc[((b * m + oc) * oh + oy) * ow + ox] += xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(bias) = bias {
        for (i, a) in acc.iter_mut().enumerate() {
            *a += bias[(i / (oh * ow)) % m] as f64;
        }
    }
    Ok(Tensor::f32(
        vec![n, m, oh, ow],
        acc.into_iter().map(|v| v as f32).collect(),
    ))
}

/// The geometry of a pooling sweep over `x` [N, C, H, W].
fn pool_geom(cx: &Cx<'_>, dilations: bool) -> Result<ConvGeom, String> {
    let xs = cx.shape(0);
    if xs.len() != 4 {
        return Err(format!("x must have rank 4, found {xs:?}"));
    }
    let k = usizes_n(cx, "kernel", 2)?;
    let s = usizes_n(cx, "strides", 2)?;
    let p = usizes_n(cx, "pads", 4)?;
    let d = if dilations {
        usizes_n(cx, "dilations", 2)?
    } else {
        vec![1, 1]
    };
    let ceil = cx.attrs.bool("ceil_mode")?;
    let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    Ok(ConvGeom {
        n,
        c,
        h,
        w,
        m: c,
        kh: k[0],
        kw: k[1],
        oh: window_out(h, k[0], s[0], d[0], p[0], p[2], ceil)?,
        ow: window_out(w, k[1], s[1], d[1], p[1], p[3], ceil)?,
        sh: s[0],
        sw: s[1],
        dh: d[0],
        dw: d[1],
        top: p[0],
        left: p[1],
        group: c,
    })
}

/// For every output element of a pooling sweep, the flat input indices its window
/// covers (padding and positions past it left out).
fn pool_windows(
    g: &ConvGeom,
    mut f: impl FnMut(&[usize]) -> Result<(), String>,
) -> Result<(), String> {
    let mut taps = Vec::with_capacity(g.kh * g.kw);
    for bc in 0..g.n * g.c {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                taps.clear();
                for i in 0..g.kh {
                    let Some(y) = g.in_y(oy, i) else { continue };
                    for j in 0..g.kw {
                        let Some(x) = g.in_x(ox, j) else { continue };
                        taps.push((bc * g.h + y) * g.w + x);
                    }
                }
                if taps.is_empty() {
                    return Err(format!(
                        "the window of output ({oy}, {ox}) covers no input element"
                    ));
                }
                f(&taps)?;
            }
        }
    }
    Ok(())
}

pub(super) fn max_pool(cx: &Cx<'_>) -> Result<Tensor, String> {
    let g = pool_geom(cx, true)?;
    let data = match &cx.t(0).data {
        TensorData::F32(x) => {
            let mut out = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
            pool_windows(&g, |taps| {
                // NaN propagates, as numpy's max does.
                let m = taps.iter().map(|&i| x[i]).fold(f32::NEG_INFINITY, |a, v| {
                    if a.is_nan() || v.is_nan() {
                        f32::NAN
                    } else {
                        a.max(v)
                    }
                });
                out.push(m);
                Ok(())
            })?;
            TensorData::F32(out)
        }
        TensorData::Int(x) => {
            let mut out = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
            pool_windows(&g, |taps| {
                out.push(taps.iter().map(|&i| x[i]).max().unwrap_or(0));
                Ok(())
            })?;
            TensorData::Int(out)
        }
    };
    Tensor::new(g.out_shape(), data)
}

pub(super) fn avg_pool(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = cx.f32(0)?;
    let g = pool_geom(cx, false)?;
    let include_pad = cx.attrs.bool("count_include_pad")?;
    let p = usizes_n(cx, "pads", 4)?;
    // Window positions inside the input or its padding (not past it, from ceil_mode).
    let padded = |o: usize, s: usize, k: usize, n: usize, b: usize, e: usize| {
        let start = o * s;
        let end = (start + k).min(n + b + e);
        end.saturating_sub(start)
    };
    let mut out = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
    let mut pos = 0usize;
    pool_windows(&g, |taps| {
        let sum: f64 = taps.iter().map(|&i| x[i] as f64).sum();
        let count = if include_pad {
            let oy = (pos / g.ow) % g.oh;
            let ox = pos % g.ow;
            padded(oy, g.sh, g.kh, g.h, p[0], p[2]) * padded(ox, g.sw, g.kw, g.w, p[1], p[3])
        } else {
            taps.len()
        };
        out.push((sum / count as f64) as f32);
        pos += 1;
        Ok(())
    })?;
    Ok(Tensor::f32(g.out_shape(), out))
}

pub(super) fn resize(cx: &Cx<'_>) -> Result<Tensor, String> {
    let shape = cx.shape(0);
    let rank = shape.len();
    let crate::shape::ResizePlan {
        linear,
        sizes,
        taps,
    } = crate::shape::resize_plan(&cx.attrs, shape)?;
    let in_strides = crate::shape::strides(shape);
    let nout = super::checked_numel(&sizes)?;
    let mut idx = vec![0usize; rank];
    let data = match &cx.t(0).data {
        TensorData::F32(x) => {
            let mut out = Vec::with_capacity(nout);
            for _ in 0..nout {
                // n-linear: the product of the per-axis weights over all tap combinations.
                let mut sum = 0f64;
                let mut pick = vec![0usize; rank];
                let counts: Vec<usize> = (0..rank).map(|a| taps[a][idx[a]].len()).collect();
                loop {
                    let mut flat = 0;
                    let mut wgt = 1f64;
                    for a in 0..rank {
                        let (i, wa) = taps[a][idx[a]][pick[a]];
                        flat += i * in_strides[a];
                        wgt *= wa;
                    }
                    sum += wgt * x[flat] as f64;
                    if !super::next_index(&mut pick, &counts) {
                        break;
                    }
                }
                out.push(sum as f32);
                super::next_index(&mut idx, &sizes);
            }
            TensorData::F32(out)
        }
        TensorData::Int(x) => {
            if linear {
                return Err("linear resize needs an f32 operand".into());
            }
            let mut out = Vec::with_capacity(nout);
            for _ in 0..nout {
                let flat: usize = (0..rank)
                    .map(|a| taps[a][idx[a]][0].0 * in_strides[a])
                    .sum();
                out.push(x[flat]);
                super::next_index(&mut idx, &sizes);
            }
            TensorData::Int(out)
        }
    };
    Tensor::new(sizes, data)
}
