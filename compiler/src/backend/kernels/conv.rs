//! f32 convolution: im2col into the kernel's workspace, packing into GEMM panels, then
//! the GEMM micro-kernel with the weights packed at compile time (one packed matrix per
//! group). The wide tiles (`kernels::fma`) read the patch matrix in place instead (rows
//! padded to whole vectors plus one, [`patch_row`]), and a pointwise convolution's input
//! too when its rows are whole vectors (else it is packed into their panels). A fused
//! `silu` runs in the zmm tiles' epilogue, or as a pass over the result
//! ([`silu_in_tile`]).
//!
//! `out[n, g*Mg + m, p] = bias + sum_kk W_g[m, kk] * P[kk, p]` where `P` is the patch
//! matrix `[Cg*kh*kw, OH*OW]` of group g (row-major, rows in the weights' (c, i, j)
//! order). A 1x1 convolution with unit strides and no padding reads `x` in place. The
//! batch and group loops are run-time loops (depthwise convolutions have many groups).
//! Padded taps are written as zeros by im2col; which output rows and columns a tap
//! reaches is computed at compile time, so the copy loops have no bounds tests.
//!
//! Stride-1 3x3 convolutions of suitable sizes go to Winograd F(2x2, 3x3) instead
//! (`fma/winograd.rs`).
//!
//! Depthwise convolutions (one input and one output channel per group) run directly,
//! with no patch matrix ([`emit_depthwise`]): each output row accumulates the taps
//! that reach it, four pixels per vector where the stride along the row is 1.

use cranelift_codegen::ir::types::{F32, F32X4, I8X16};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Value};
use qcc_ir::{Attrs, Module, Node};

use super::fma::{self, AKind, Bias, FmaGemm, FmaIsa, FmaSpec};
use super::gemm::{self, AIn, BIn, Epilogue, Gemm};
use super::winograd;
use crate::backend::kb::Kb;

pub(crate) use qcc_ir::shape::ConvGeom;

/// Reads a conv node's geometry from its operand and result types and attributes.
pub(crate) fn conv_geom(m: &Module, node: &Node) -> Result<ConvGeom, String> {
    let xs = &m.ty(node.operands[0]).shape;
    let ws = &m.ty(node.operands[1]).shape;
    let os = &m.ty(node.result).shape;
    if xs.len() != 4 || ws.len() != 4 || os.len() != 4 {
        return Err("x, w and the result must have rank 4".into());
    }
    let a = Attrs::new(node.op, &node.attrs);
    let s = a.usizes("strides")?;
    let p = a.usizes("pads")?;
    let d = a.usizes("dilations")?;
    let group = a.int("group")? as usize;
    if s.len() != 2 || p.len() != 4 || d.len() != 2 || group == 0 {
        return Err("bad strides, pads, dilations or group".into());
    }
    Ok(ConvGeom {
        n: xs[0],
        c: xs[1],
        h: xs[2],
        w: xs[3],
        m: ws[0],
        kh: ws[2],
        kw: ws[3],
        oh: os[2],
        ow: os[3],
        sh: s[0],
        sw: s[1],
        dh: d[0],
        dw: d[1],
        top: p[0],
        left: p[1],
        group,
    })
}

/// Whether the convolution runs as a direct depthwise one: every group has one input
/// and one output channel, and there is more than one group.
pub(crate) fn is_depthwise(g: &ConvGeom) -> bool {
    g.group > 1 && g.cg() == 1 && g.mg() == 1 && !winograd::applies(g)
}

/// The wide tile the convolution's GEMMs run with, given the tier's (`wide`): Winograd
/// takes it only when its tiles fill whole vectors; depthwise convolutions have no GEMM.
pub(crate) fn wide_gemm(g: &ConvGeom, wide: Option<FmaIsa>) -> Option<FmaIsa> {
    if is_depthwise(g) {
        return None;
    }
    if winograd::applies(g) {
        winograd::wide(g, wide)
    } else {
        wide
    }
}

/// Whether a fused `silu` runs in the wide tiles' epilogue (zmm tiles of an im2col or
/// pointwise GEMM); otherwise the kernel applies it in a pass over its result.
pub(crate) fn silu_in_tile(g: &ConvGeom, wide: Option<FmaIsa>) -> bool {
    !winograd::applies(g) && wide_gemm(g, wide) == Some(FmaIsa::Zmm)
}

/// The GEMM of the wide tiles (one group's, or one Winograd position's); `silu` only
/// where [`silu_in_tile`].
pub(crate) fn wide_spec(
    g: &ConvGeom,
    wide: Option<FmaIsa>,
    bias: bool,
    lo: Option<f32>,
    hi: Option<f32>,
    silu: bool,
) -> Option<FmaSpec> {
    let isa = wide_gemm(g, wide)?;
    if winograd::applies(g) {
        return Some(winograd::wide_spec(g, isa));
    }
    Some(FmaSpec {
        isa,
        m: g.mg(),
        n: g.npix(),
        k: g.kdim(),
        ldc: g.npix(),
        a: AKind::Packed,
        bias: if bias { Bias::Row } else { Bias::None },
        lo,
        hi,
        silu: silu && isa == FmaIsa::Zmm,
        b_row: b_row(g, isa),
    })
}

/// Packs f32 weights `[M, Cg, kh, kw]` into one packed A matrix per group (row blocks
/// of the wide tile's rows with `wide`).
pub(crate) fn pack_weights(g: &ConvGeom, w: &[f32], wide: Option<FmaIsa>) -> Vec<f32> {
    if is_depthwise(g) {
        // `[C, kh*kw]`: the taps of each channel, in row-major order.
        return w.to_vec();
    }
    if winograd::applies(g) {
        return winograd::pack_weights(g, w, wide);
    }
    let (mg, k) = (g.mg(), g.kdim());
    let mut out = Vec::with_capacity(w.len());
    let spec = wide_spec(g, wide, false, None, None, false);
    for grp in 0..g.group {
        let get = |i: usize, kk: usize| w[(grp * mg + i) * k + kk];
        match spec {
            Some(s) => out.extend(fma::pack_a(s.shape().0, mg, k, get)),
            None => out.extend(gemm::pack_a(mg, k, get)),
        }
    }
    out
}

/// Floats per row of the patch matrix the wide tiles read in place: the pixels rounded
/// up to whole vectors, plus one vector so that consecutive rows fall in different L1
/// sets.
pub(crate) fn patch_row(g: &ConvGeom, isa: FmaIsa) -> usize {
    let l = isa.lanes();
    g.npix().div_ceil(l) * l + l
}

/// The row of B the wide tiles read in place, if they do: the patch matrix's
/// ([`patch_row`]), or a pointwise convolution's input when its rows are whole
/// vectors (else it is packed into panels).
fn b_row(g: &ConvGeom, isa: FmaIsa) -> Option<usize> {
    if !g.is_pointwise() {
        Some(patch_row(g, isa))
    } else if g.npix().is_multiple_of(isa.lanes()) {
        Some(g.npix())
    } else {
        None
    }
}

/// Workspace bytes: the f32 patch matrix of one group (unless pointwise), then the
/// same matrix packed into GEMM panels (whole vectors for the wide tiles); the wide
/// tiles read the patch matrix in place (rows of [`patch_row`]), so it is the only
/// one there.
pub(crate) fn workspace(g: &ConvGeom, wide: Option<FmaIsa>) -> usize {
    if is_depthwise(g) {
        return 0;
    }
    if winograd::applies(g) {
        return winograd::workspace(g);
    }
    if let Some(isa) = wide_gemm(g, wide)
        && b_row(g, isa).is_some()
    {
        return if g.is_pointwise() {
            0
        } else {
            g.kdim() * patch_row(g, isa) * 4
        };
    }
    let m = g.kdim() * g.npix() * 4;
    let packed = match wide_gemm(g, wide) {
        Some(isa) => fma::b_bytes(isa, g.npix(), g.kdim()),
        None => m,
    };
    if g.is_pointwise() { packed } else { m + packed }
}

/// Emits the convolution. `w` points at the packed weights, `bias` at M floats;
/// `tiles`: the wide tiles of [`wide_spec`], when the weights were packed for them.
#[allow(clippy::too_many_arguments, reason = "the pointers of one kernel")]
pub(crate) fn emit(
    kb: &mut Kb<'_, '_>,
    g: &ConvGeom,
    x: Value,
    w: Value,
    bias: Option<Value>,
    out: Value,
    ws: Value,
    lo: Option<f32>,
    hi: Option<f32>,
    tiles: Option<&FmaGemm>,
) {
    if is_depthwise(g) {
        emit_depthwise(kb, g, x, w, bias, out, lo, hi);
        return;
    }
    if winograd::applies(g) {
        winograd::emit(kb, g, x, w, bias, out, ws, lo, hi, tiles);
        return;
    }
    let (cg, mg, k, npix) = (g.cg(), g.mg(), g.kdim(), g.npix());
    let gc = *g;
    kb.for_range(0, g.n as i64, 1, |kb, n| {
        let xn = kb.idx(x, n, (g.c * g.h * g.w * 4) as i64);
        let on = kb.idx(out, n, (g.m * npix * 4) as i64);
        kb.for_range(0, g.group as i64, 1, |kb, grp| {
            let xg = kb.idx(xn, grp, (cg * g.h * g.w * 4) as i64);
            let og = kb.idx(on, grp, (mg * npix * 4) as i64);
            let wg = kb.idx(w, grp, (mg * k * 4) as i64);
            // Patches (x itself when pointwise), packed into panels so that the
            // micro-kernel reads B contiguously; the wide tiles read the patches in
            // place (rows padded to whole vectors).
            if let Some(t) = tiles {
                let bias = bias.map(|bp| kb.idx(bp, grp, (mg * 4) as i64));
                let b = if !gc.is_pointwise() {
                    im2col(kb, &gc, xg, ws, patch_row(&gc, t.isa()));
                    ws
                } else if b_row(&gc, t.isa()).is_some() {
                    xg
                } else {
                    fma::pack_b_runtime(kb, t.isa(), xg, npix, k, npix, ws);
                    ws
                };
                fma::emit(kb, t, wg, b, og, bias);
                return;
            }
            let (src, packed) = if gc.is_pointwise() {
                (xg, ws)
            } else {
                im2col(kb, &gc, xg, ws, npix);
                (ws, kb.off(ws, (k * npix * 4) as i64))
            };
            gemm::pack_b_runtime(kb, src, npix, k, npix, packed);
            let b = BIn::Packed(packed);
            let bias = bias.map(|bp| (kb.idx(bp, grp, (mg * 4) as i64), 1, 0));
            gemm::emit(
                kb,
                &Gemm {
                    m: mg,
                    n: npix,
                    k,
                    a: AIn::Packed(wg),
                    b,
                    out: og,
                    ldc: npix,
                    epi: Epilogue {
                        bias,
                        lo,
                        hi,
                        ..Epilogue::plain()
                    },
                },
            );
        });
    });
}

/// A depthwise convolution computed directly: `out[n, c, oy, ox] = bias[c] + sum_(i, j)
/// w[c, i, j] x[n, c, oy*sh + i*dh - top, ox*sw + j*dw - left]`, the taps summed in
/// (i, j) order from zero and the bias added last, as the GEMM path does. The output
/// rows are cut at compile time into runs where the same kernel rows reach the input,
/// so the loops have no bounds tests; each row is accumulated in place (it stays in
/// L1), four pixels per `f32x4` where the row stride is 1.
#[allow(clippy::too_many_arguments, reason = "the pointers of one kernel")]
fn emit_depthwise(
    kb: &mut Kb<'_, '_>,
    g: &ConvGeom,
    x: Value,
    w: Value,
    bias: Option<Value>,
    out: Value,
    lo: Option<f32>,
    hi: Option<f32>,
) {
    let g = *g;
    let (k, npix) = (g.kdim(), g.npix());
    let mut cuts = vec![0, g.oh];
    for i in 0..g.kh {
        let (a, b) = g.rows_valid(i);
        cuts.extend([a.min(g.oh), b.min(g.oh)]);
    }
    cuts.sort_unstable();
    cuts.dedup();
    kb.for_range(0, g.n as i64, 1, |kb, n| {
        let xn = kb.idx(x, n, (g.c * g.h * g.w * 4) as i64);
        let on = kb.idx(out, n, (g.m * npix * 4) as i64);
        kb.for_range(0, g.group as i64, 1, |kb, c| {
            let xc = kb.idx(xn, c, (g.h * g.w * 4) as i64);
            let oc = kb.idx(on, c, (npix * 4) as i64);
            let wc = kb.idx(w, c, (k * 4) as i64);
            let bias = bias.map(|b| {
                let p = kb.idx(b, c, 4);
                kb.load(F32, p, 0)
            });
            for seg in cuts.windows(2) {
                let (a, b) = (seg[0], seg[1]);
                let rows: Vec<usize> = (0..g.kh)
                    .filter(|&i| {
                        let (ylo, yhi) = g.rows_valid(i);
                        ylo <= a && b <= yhi
                    })
                    .collect();
                kb.for_range(a as i64, b as i64, 1, |kb, oy| {
                    let orow = kb.idx(oc, oy, (g.ow * 4) as i64);
                    let srow = kb.idx(xc, oy, (g.sh * g.w * 4) as i64);
                    fill_zero(kb, orow, 0, g.ow);
                    for &i in &rows {
                        for j in 0..g.kw {
                            let (xlo, xhi) = g.cols_valid(j);
                            if xlo >= xhi {
                                continue;
                            }
                            // The input element of output column xlo, relative to the
                            // row's start `srow` (input row oy*sh).
                            let x0 = (xlo * g.sw + j * g.dw) as i64 - g.left as i64
                                + ((i * g.dh) as i64 - g.top as i64) * g.w as i64;
                            let wv = kb.load(F32, wc, ((i * g.kw + j) * 4) as i64);
                            acc_run(
                                kb,
                                orow,
                                (xlo * 4) as i64,
                                srow,
                                x0 * 4,
                                xhi - xlo,
                                g.sw as i64,
                                wv,
                            );
                        }
                    }
                    finish_row(kb, orow, g.ow, bias, lo, hi);
                });
            }
        });
    });
}

/// `dst[e] += w * src[e * stride]` for `len` f32 at `dst + doff`, `src + soff`.
#[allow(clippy::too_many_arguments, reason = "a strided run")]
fn acc_run(
    kb: &mut Kb<'_, '_>,
    dst: Value,
    doff: i64,
    src: Value,
    soff: i64,
    len: usize,
    stride: i64,
    w: Value,
) {
    let mut tail = 0;
    if stride == 1 {
        let wv = kb.b.ins().splat(F32X4, w);
        let nv = len / 4;
        let body = |kb: &mut Kb<'_, '_>, s: Value, d: Value, off: i64| {
            let xv = kb.load(F32X4, s, soff + off);
            let acc = kb.load(F32X4, d, doff + off);
            let r = kb.madd(xv, wv, acc);
            kb.store(r, d, doff + off);
        };
        if nv > 8 {
            kb.for_range(0, nv as i64, 1, |kb, v| {
                let s = kb.idx(src, v, 16);
                let d = kb.idx(dst, v, 16);
                body(kb, s, d, 0);
            });
        } else {
            for v in 0..nv as i64 {
                body(kb, src, dst, v * 16);
            }
        }
        tail = nv * 4;
    }
    let one = |kb: &mut Kb<'_, '_>, s: Value, d: Value, e: i64| {
        let xv = kb.load(F32, s, soff + e * stride * 4);
        let acc = kb.load(F32, d, doff + e * 4);
        let r = kb.madd(xv, w, acc);
        kb.store(r, d, doff + e * 4);
    };
    if len - tail > 8 {
        kb.for_range(tail as i64, len as i64, 1, |kb, e| {
            let s = kb.idx(src, e, stride * 4);
            let d = kb.idx(dst, e, 4);
            one(kb, s, d, 0);
        });
    } else {
        for e in tail as i64..len as i64 {
            one(kb, src, dst, e);
        }
    }
}

/// Adds the bias to the `len` f32 of a row at `p` and clamps them to `[lo, hi]` (NaN
/// passes), as the GEMM epilogue does.
fn finish_row(
    kb: &mut Kb<'_, '_>,
    p: Value,
    len: usize,
    bias: Option<Value>,
    lo: Option<f32>,
    hi: Option<f32>,
) {
    if bias.is_none() && lo.is_none() && hi.is_none() {
        return;
    }
    use cranelift_codegen::ir::condcodes::FloatCC;
    let fix = |kb: &mut Kb<'_, '_>, ty, off: i64, p: Value| {
        let vec = ty == F32X4;
        let mut v = kb.load(ty, p, off);
        if let Some(b) = bias {
            let b = if vec { kb.b.ins().splat(F32X4, b) } else { b };
            v = kb.b.ins().fadd(v, b);
        }
        if let Some(l) = lo {
            let l = kb.fconst(ty, l);
            v = kb.fselect(ty, FloatCC::LessThan, v, l, l, v);
        }
        if let Some(h) = hi {
            let h = kb.fconst(ty, h);
            v = kb.fselect(ty, FloatCC::GreaterThan, v, h, h, v);
        }
        kb.store(v, p, off);
    };
    let nv = len / 4;
    if nv > 8 {
        kb.for_range(0, nv as i64, 1, |kb, v| {
            let d = kb.idx(p, v, 16);
            fix(kb, F32X4, 0, d);
        });
    } else {
        for v in 0..nv as i64 {
            fix(kb, F32X4, v * 16, p);
        }
    }
    for e in nv * 4..len {
        fix(kb, F32, (e * 4) as i64, p);
    }
}

/// Writes the patch matrix `[Cg*kh*kw, OH*OW]` of the channels at `x` into `ws`, rows
/// `rs` floats apart (the pixels, or more: the padding is zeroed).
fn im2col(kb: &mut Kb<'_, '_>, g: &ConvGeom, x: Value, ws: Value, rs: usize) {
    let npix = g.npix();
    let g = *g;
    kb.for_range(0, g.cg() as i64, 1, |kb, c| {
        let xc = kb.idx(x, c, (g.h * g.w * 4) as i64);
        let wc = kb.idx(ws, c, (g.kh * g.kw * rs * 4) as i64);
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = kb.off(wc, (((i * g.kw + j) * rs) * 4) as i64);
                // The row's padding (read by the wide tiles' last vector, never stored)
                // is zeros all the same.
                fill_zero(kb, row, (npix * 4) as i64, rs - npix);
                let (ylo, yhi) = g.rows_valid(i);
                let (xlo, xhi) = g.cols_valid(j);
                if ylo >= yhi || xlo >= xhi {
                    fill_zero(kb, row, 0, npix);
                    continue;
                }
                fill_zero(kb, row, 0, ylo * g.ow);
                fill_zero(kb, row, (yhi * g.ow * 4) as i64, (g.oh - yhi) * g.ow);
                // First input element of the row's valid run (for oy = 0).
                let x0 = (xlo * g.sw + j * g.dw) as i64 - g.left as i64
                    + (i * g.dh) as i64 * g.w as i64
                    - (g.top * g.w) as i64;
                // Input elements of the row past the run's last one (vector reads may
                // take them).
                let last = ((xhi - 1) * g.sw + j * g.dw) as i64 - g.left as i64;
                let slack = (g.w as i64 - 1 - last).max(0) as usize;
                kb.for_range(ylo as i64, yhi as i64, 1, |kb, oy| {
                    let dst = kb.idx(row, oy, (g.ow * 4) as i64);
                    let src = kb.idx(xc, oy, (g.sh * g.w * 4) as i64);
                    fill_zero(kb, dst, 0, xlo);
                    copy_run(
                        kb,
                        dst,
                        (xlo * 4) as i64,
                        src,
                        x0 * 4,
                        xhi - xlo,
                        g.sw as i64,
                        slack,
                    );
                    fill_zero(kb, dst, (xhi * 4) as i64, g.ow - xhi);
                });
            }
        }
    });
}

/// Zeroes `len` f32 at `p + off`.
pub(crate) fn fill_zero(kb: &mut Kb<'_, '_>, p: Value, off: i64, len: usize) {
    if len == 0 {
        return;
    }
    let z = kb.fconst(F32X4, 0.0);
    let nv = len / 4;
    if nv > 8 {
        kb.for_range(0, nv as i64, 1, |kb, v| {
            let d = kb.idx(p, v, 16);
            kb.store(z, d, off);
        });
    } else {
        for v in 0..nv {
            kb.store(z, p, off + (v * 16) as i64);
        }
    }
    let zs = kb.fconst(F32, 0.0);
    for e in nv * 4..len {
        kb.store(zs, p, off + (e * 4) as i64);
    }
}

/// Copies `len` f32 from `src + soff` (element stride `stride`) to `dst + doff`;
/// `slack`: how many elements past the last one read may be read too (stride 2 reads
/// two vectors and keeps the even lanes while they stay within it).
#[allow(clippy::too_many_arguments, reason = "a strided run")]
pub(crate) fn copy_run(
    kb: &mut Kb<'_, '_>,
    dst: Value,
    doff: i64,
    src: Value,
    soff: i64,
    len: usize,
    stride: i64,
    slack: usize,
) {
    // Chunks of four outputs read source elements 8c .. 8c + 7; the last needed one
    // is 2 (len - 1).
    let nv2 = if stride == 2 && 2 * len + slack >= 9 {
        ((2 * len + slack - 9) / 8 + 1).min(len / 4)
    } else {
        0
    };
    if nv2 > 0 {
        let even = |kb: &mut Kb<'_, '_>, s: Value, off: i64| {
            let a = kb.load(F32X4, s, off);
            let b = kb.load(F32X4, s, off + 16);
            even_lanes(kb, a, b)
        };
        if nv2 > 8 {
            kb.for_range(0, nv2 as i64, 1, |kb, v| {
                let s = kb.idx(src, v, 32);
                let d = kb.idx(dst, v, 16);
                let x = even(kb, s, soff);
                kb.store(x, d, doff);
            });
        } else {
            for v in 0..nv2 as i64 {
                let x = even(kb, src, soff + v * 32);
                kb.store(x, dst, doff + v * 16);
            }
        }
        let done = nv2 * 4;
        for e in done as i64..len as i64 {
            let x = kb.load(F32, src, soff + e * 8);
            kb.store(x, dst, doff + e * 4);
        }
        return;
    }
    if stride == 1 {
        let nv = len / 4;
        if nv > 8 {
            kb.for_range(0, nv as i64, 1, |kb, v| {
                let s = kb.idx(src, v, 16);
                let d = kb.idx(dst, v, 16);
                let x = kb.load(F32X4, s, soff);
                kb.store(x, d, doff);
            });
        } else {
            for v in 0..nv as i64 {
                let x = kb.load(F32X4, src, soff + v * 16);
                kb.store(x, dst, doff + v * 16);
            }
        }
        for e in (nv * 4) as i64..len as i64 {
            let x = kb.load(F32, src, soff + e * 4);
            kb.store(x, dst, doff + e * 4);
        }
    } else if len > 8 {
        kb.for_range(0, len as i64, 1, |kb, e| {
            let s = kb.idx(src, e, stride * 4);
            let d = kb.idx(dst, e, 4);
            let x = kb.load(F32, s, soff);
            kb.store(x, d, doff);
        });
    } else {
        for e in 0..len as i64 {
            let x = kb.load(F32, src, soff + e * stride * 4);
            kb.store(x, dst, doff + e * 4);
        }
    }
}

/// Lanes 0 and 2 of `a`, then of `b` (`shufps` with 0x88).
fn even_lanes(kb: &mut Kb<'_, '_>, a: Value, b: Value) -> Value {
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let ai = kb.b.ins().bitcast(I8X16, le, a);
    let bi = kb.b.ins().bitcast(I8X16, le, b);
    let m: Vec<u8> = [0u8, 2, 4, 6]
        .iter()
        .flat_map(|&l| (0..4).map(move |k| l * 4 + k))
        .collect();
    let mask = kb.b.func.dfg.immediates.push(ConstantData::from(m));
    let r = kb.b.ins().shuffle(ai, bi, mask);
    kb.b.ins().bitcast(F32X4, le, r)
}
