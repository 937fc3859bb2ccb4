//! The u8 x i8 family's i16-pair kernel for every tier (`pmaddwd` on x86, the same
//! widening-multiply tree elsewhere): `conv2d_int` / `matmul_int` of at most 8-bit
//! operands packed into i16 pairs along K with the zero points subtracted, 4 rows x 8
//! columns of i32x4 accumulators, the fused epilogue of `quant::AccStore`. The layer's
//! lowering is `quant::QuantLowering::{ConvInt, MatMulInt}` (see `quant`'s module
//! documentation for the exactness rules).

use cranelift_codegen::ir::types::{I16X8, I32, I32X4, I64};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};

use super::super::Ecx;
use super::super::conv::{self, ConvGeom};
use super::super::im2col;
use super::super::packw::{PackedW, Unpack, zp_mode};
use super::super::quant::*;
use crate::backend::kb::{Kb, MF};
use crate::backend::storage::Store;

pub(crate) const MR: usize = 4;
pub(crate) const NV: usize = 2; // vectors of 4 columns per tile

pub(crate) fn kp(k: usize) -> usize {
    k.div_ceil(2) * 2
}
pub(crate) fn np(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// The i16-pair GEMM: `out[i, j] = epi(sum_p A2[i, p] . B2[p, j])` where `A2[i, p]` is
/// the i32 holding two i16 at `a + i*a_row + p*4` and `B2` is `[P][Np][2]` i16 at `b`.
/// `chan_of_row`: the epilogue's channel is the row (conv) or the column (matmul).
pub(crate) struct IntGemm<'t> {
    m: usize,
    n: usize,
    pairs: usize,
    a: Value,
    a_row: i64,
    b: Value,
    out: Value,
    ldc: usize,
    bias: Option<Value>,
    rq: Option<(&'t Requant, Value)>,
    deq: Option<(&'t Deq, Value)>,
    st_out: Store,
    chan_of_row: bool,
}

pub(crate) fn emit_int_gemm(kb: &mut Kb<'_, '_>, g: &IntGemm<'_>) {
    let npad = np(g.n);
    let row_groups: Vec<(usize, usize, usize)> = {
        // (first row, rows per tile, tile count)
        let mut v = Vec::new();
        if g.m / MR > 0 {
            v.push((0, MR, g.m / MR));
        }
        if !g.m.is_multiple_of(MR) {
            v.push((g.m / MR * MR, g.m % MR, 1));
        }
        v
    };
    // Tiles entirely inside the n columns, then one tile of the rest (padding lanes are
    // computed on the zeroed workspace columns but never stored).
    let tiles_full = g.n / (4 * NV);
    let col_tail = (g.n - tiles_full * 4 * NV).div_ceil(4);
    let _ = npad;
    for (first, rows, count) in row_groups {
        kb.for_range(0, count as i64, 1, |kb, ti| {
            let row0 = kb.b.ins().imul_imm_s(ti, MR as i64);
            let row0 = kb.b.ins().iadd_imm_s(row0, first as i64);
            let a_base = kb.idx(g.a, row0, g.a_row);
            if tiles_full > 0 {
                kb.for_range(0, tiles_full as i64, 1, |kb, tj| {
                    let col0 = kb.b.ins().imul_imm_s(tj, (4 * NV) as i64);
                    int_tile(kb, g, rows, NV, row0, a_base, col0, Some(4 * NV));
                });
            }
            if col_tail > 0 {
                let col0 = kb.c((tiles_full * 4 * NV) as i64);
                int_tile(kb, g, rows, col_tail, row0, a_base, col0, None);
            }
        });
    }
}

#[allow(clippy::too_many_arguments, reason = "one tile's geometry")]
pub(crate) fn int_tile(
    kb: &mut Kb<'_, '_>,
    g: &IntGemm<'_>,
    rows: usize,
    vecs: usize,
    row0: Value,
    a_base: Value,
    col0: Value,
    full: Option<usize>,
) {
    let npad = np(g.n);
    let b_base = kb.idx(g.b, col0, 4);
    let zero = kb.iconst_t(I32X4, 0);
    let accs: Vec<Vec<_>> = (0..rows)
        .map(|_| (0..vecs).map(|_| kb.var(I32X4, zero)).collect())
        .collect();
    let step = |kb: &mut Kb<'_, '_>, ap: Value, bp: Value, u: i64| {
        let bv: Vec<Value> = (0..vecs)
            .map(|v| kb.load(I16X8, bp, u * (npad * 4) as i64 + (v * 16) as i64))
            .collect();
        for (r, acc_r) in accs.iter().enumerate() {
            let pair = kb.load(I32, ap, u * 4 + r as i64 * g.a_row);
            let av = kb.b.ins().splat(I32X4, pair);
            let av = kb.b.ins().bitcast(
                I16X8,
                MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little),
                av,
            );
            let al = kb.b.ins().swiden_low(av);
            let ah = kb.b.ins().swiden_high(av);
            for (v, &bvv) in bv.iter().enumerate() {
                // pmaddwd: iadd_pairwise(imul(swiden_low a, swiden_low b), imul(swiden_high ..)).
                let bl = kb.b.ins().swiden_low(bvv);
                let bh = kb.b.ins().swiden_high(bvv);
                let pl = kb.b.ins().imul(bl, al);
                let ph = kb.b.ins().imul(bh, ah);
                let d = kb.b.ins().iadd_pairwise(pl, ph);
                let acc = kb.b.use_var(acc_r[v]);
                let s = kb.b.ins().iadd(acc, d);
                kb.b.def_var(acc_r[v], s);
            }
        }
    };
    let p = g.pairs as i64;
    let main = p / 2 * 2;
    if main > 0 {
        kb.for_range(0, main, 2, |kb, pi| {
            let ap = kb.idx(a_base, pi, 4);
            let bp = kb.idx(b_base, pi, (npad * 4) as i64);
            step(kb, ap, bp, 0);
            step(kb, ap, bp, 1);
        });
    }
    if main < p {
        let ap = kb.off(a_base, main * 4);
        let bp = kb.off(b_base, main * (npad * 4) as i64);
        step(kb, ap, bp, 0);
    }
    // Epilogue, lane by lane (columns past n are padding and never stored).
    let ob = g.st_out.bytes() as i64;
    let out_row = kb.idx(g.out, row0, g.ldc as i64 * ob);
    let out_tile = kb.idx(out_row, col0, ob);
    let acc = AccStore {
        ldc: g.ldc,
        chan_of_row: g.chan_of_row,
        bias: g.bias,
        rq: g.rq,
        thr: None,
        deq: g.deq,
        st_out: g.st_out,
    };
    for (r, acc_r) in accs.iter().enumerate() {
        for (v, &acc_v) in acc_r.iter().enumerate() {
            // Tail tile (col0 a constant): skip the padding columns.
            let lanes = match full {
                Some(_) => 4,
                None => {
                    let first = (g.n / (4 * NV)) * 4 * NV + v * 4;
                    g.n.saturating_sub(first).min(4)
                }
            };
            if lanes > 0 {
                let accv = kb.b.use_var(acc_v);
                acc.store_vec(kb, accv, (row0, col0), (r, v * 4), lanes, out_tile, ob);
            }
        }
    }
}

/// Packs `get(kk, j)` (already zero-point corrected) into the `[P][Np][2]` i16 layout.
pub(crate) fn pack_pairs(k: usize, n: usize, get: impl Fn(usize, usize) -> i64) -> Vec<u8> {
    let (kpp, npp) = (kp(k), np(n));
    let mut v = vec![0u8; kpp * npp * 2];
    for kk in 0..k {
        for j in 0..n {
            let at = ((kk / 2) * npp + j) * 2 + kk % 2;
            v[at * 2..at * 2 + 2].copy_from_slice(&(get(kk, j) as i16).to_le_bytes());
        }
    }
    v
}

/// Packs rows `get(i, kk)` into `[M][Kp]` i16 (pairs along K, zero-padded).
pub(crate) fn pack_rows(m: usize, k: usize, get: impl Fn(usize, usize) -> i64) -> Vec<u8> {
    let kpp = kp(k);
    let mut v = vec![0u8; m * kpp * 2];
    for i in 0..m {
        for kk in 0..k {
            let at = i * kpp + kk;
            v[at * 2..at * 2 + 2].copy_from_slice(&(get(i, kk) as i16).to_le_bytes());
        }
    }
    v
}

#[allow(clippy::too_many_arguments, reason = "one lowering's fields")]
pub(crate) fn emit_conv_int(
    cx: &mut Ecx<'_, '_, '_, '_>,
    g: &ConvGeom,
    zx: i64,
    zw: &[i64],
    st_x: Store,
    wpack: Option<PackedW>,
    epi: &IntEpi,
) {
    let (cg, mg, k, npix) = (g.cg(), g.mg(), g.kdim(), g.npix());
    let kpp = kp(k);
    let x = cx.operand(0);
    let w = const_ints(cx, 1).to_vec();
    let wp = match wpack {
        None => {
            let packed = pack_rows(g.m, k, |oc, kk| w[oc * k + kk] - zw[oc]);
            cx.rodata(packed, 16)
        }
        Some(pw) => {
            // Bit-packed rows (one per output channel), widened into `[M][Kp]` i16 rows
            // after the im2col workspace, once per call.
            let src = cx.rodata(pw.pack(g.m, k, |oc, kk| w[oc * k + kk]), 16);
            let zp = zp_mode(zw, true, |b| cx.rodata(b, 16));
            let dst = cx.kb.off(cx.ws, im2col_bytes(g) as i64);
            let row = (kpp * 2) as i64;
            Unpack {
                pw,
                rows: g.m,
                cols: k,
                src,
                zp,
                elem: 2,
                dst_row: |kb: &mut Kb<'_, '_>, r| kb.idx(dst, r, row),
            }
            .emit(cx.kb);
            if kpp > k {
                // The odd K's padding tap of every row.
                let zero = cx.kb.c(0);
                cx.kb.for_range(0, g.m as i64, 1, |kb, r| {
                    let p = kb.idx(dst, r, row);
                    kb.b.ins().istore16(MF, zero, p, (k * 2) as i32);
                });
            }
            dst
        }
    };
    let (rq_own, rq_tab, bias) = epilogue_tables(cx, epi, g.m);
    let rq = rq_own.as_ref().zip(rq_tab);
    let deq = epi.deq.as_ref().map(|d| (d, cx.rodata(d.table(), 16)));
    let (out, ws) = (cx.out, cx.ws);
    let ob = epi.st_out.bytes();
    let g = *g;
    let kb = &mut *cx.kb;
    kb.for_range(0, g.n as i64, 1, |kb, n| {
        let xn = kb.idx(x, n, (g.c * g.h * g.w * st_x.bytes()) as i64);
        let on = kb.idx(out, n, (g.m * npix * ob) as i64);
        kb.for_range(0, g.group as i64, 1, |kb, grp| {
            let xg = kb.idx(xn, grp, (cg * g.h * g.w * st_x.bytes()) as i64);
            let og = kb.idx(on, grp, (mg * npix * ob) as i64);
            let wg = kb.idx(wp, grp, (mg * kpp * 2) as i64);
            im2col::im2col_pairs(kb, &g, np(npix), zx, st_x, xg, ws);
            let bias_g = bias.map(|b| kb.idx(b, grp, (mg * 4) as i64));
            let rq_g = rq.map(|(r, t)| (r, kb.idx(t, grp, mg as i64 * r.stride())));
            let deq_g = deq.map(|(d, t)| (d, kb.idx(t, grp, (mg * 4) as i64)));
            emit_int_gemm(
                kb,
                &IntGemm {
                    m: mg,
                    n: npix,
                    pairs: kpp / 2,
                    a: wg,
                    a_row: (kpp * 2) as i64,
                    b: ws,
                    out: og,
                    ldc: npix,
                    bias: bias_g,
                    rq: rq_g,
                    deq: deq_g,
                    st_out: epi.st_out,
                    chan_of_row: true,
                },
            );
        });
    });
}

pub(crate) fn emit_matmul_int(cx: &mut Ecx<'_, '_, '_, '_>, q: &QuantLowering) {
    let QuantLowering::MatMulInt {
        m,
        n,
        k,
        batches,
        za,
        zb,
        st_a,
        st_b,
        b_const,
        wpack,
        epi,
    } = q
    else {
        return;
    };
    let (m, n, k) = (*m, *n, *k);
    let (kpp, npp) = (kp(k), np(n));
    let a = cx.operand(0);
    let nb_b = batches.iter().map(|b| b.1).max().unwrap_or(0) + 1;
    // Bit-packed B: one packed row per K index of every slab, and the zero points.
    let b_bits = match (*b_const, *wpack) {
        (true, Some(pw)) => {
            let b = const_ints(cx, 1).to_vec();
            let src = cx.rodata(pw.pack(nb_b * k, n, |r, j| b[r * n + j]), 16);
            let zp = zp_mode(zb, false, |t| cx.rodata(t, 16));
            Some((pw, src, zp))
        }
        _ => None,
    };
    let b_packed = if *b_const && b_bits.is_none() {
        let b = const_ints(cx, 1).to_vec();
        let mut packed = Vec::new();
        for s in 0..nb_b {
            packed.extend(pack_pairs(k, n, |kk, j| b[s * k * n + kk * n + j] - zb[j]));
        }
        Some(cx.rodata(packed, 16))
    } else {
        None
    };
    let b_rt = if *b_const { None } else { Some(cx.operand(1)) };
    let zb_tab = if *b_const || b_bits.is_some() {
        None
    } else {
        let bytes = zb.iter().flat_map(|&z| z.to_le_bytes()).collect();
        Some(cx.rodata(bytes, 16))
    };
    let (rq_own, rq_tab, bias) = epilogue_tables(cx, epi, n);
    let rq = rq_own.as_ref().zip(rq_tab);
    let deq = epi.deq.as_ref().map(|d| (d, cx.rodata(d.table(), 16)));
    let (out, ws) = (cx.out, cx.ws);
    let ob = epi.st_out.bytes();
    let (st_a, st_b, za) = (*st_a, *st_b, *za);
    let kb = &mut *cx.kb;
    let a_ws = ws;
    let b_ws = kb.off(ws, (m * kpp * 2) as i64);
    let zav = kb.c(za);
    let mut unpacked: Option<usize> = None;
    for (bi, &(ba, bb)) in batches.iter().enumerate() {
        // A rows -> [M][Kp] i16 of (a - za).
        let ab = kb.off(a, (ba * m * k * st_a.bytes()) as i64);
        conv::fill_zero(kb, a_ws, 0, m * kpp / 2);
        kb.for_range(0, m as i64, 1, |kb, i| {
            let src = kb.idx(ab, i, (k * st_a.bytes()) as i64);
            let dst = kb.idx(a_ws, i, (kpp * 2) as i64);
            kb.for_range(0, k as i64, 1, |kb, kk| {
                let s = kb.idx(src, kk, st_a.bytes() as i64);
                let v = kb.load_i64(st_a, s, 0);
                let v = kb.b.ins().isub(v, zav);
                let d = kb.idx(dst, kk, 2);
                kb.b.ins().istore16(MF, v, d, 0);
            });
        });
        let bp = match (b_packed, b_rt, zb_tab) {
            (Some(p), _, _) => kb.off(p, (bb * kpp * npp * 2) as i64),
            (None, None, None) => {
                let Some((pw, src, zp)) = b_bits else { return };
                if unpacked != Some(bb) {
                    // Widen slab `bb` into `[Kp/2][Np][2]`: row kk at pair kk/2, half kk%2.
                    conv::fill_zero(kb, b_ws, 0, kpp * npp / 2);
                    let src = kb.off(src, (bb * k * pw.row_bytes(n)) as i64);
                    Unpack {
                        pw,
                        rows: k,
                        cols: n,
                        src,
                        zp,
                        elem: 4,
                        dst_row: |kb: &mut Kb<'_, '_>, kk| {
                            let pair = kb.b.ins().ushr_imm_u(kk, 1);
                            let half = kb.b.ins().band_imm_s(kk, 1);
                            let row = kb.idx(b_ws, pair, (npp * 4) as i64);
                            kb.idx(row, half, 2)
                        },
                    }
                    .emit(kb);
                    unpacked = Some(bb);
                }
                b_ws
            }
            (None, Some(br), Some(zt)) => {
                let bsrc = kb.off(br, (bb * k * n * st_b.bytes()) as i64);
                conv::fill_zero(kb, b_ws, 0, kpp * npp / 2);
                kb.for_range(0, k as i64, 1, |kb, kk| {
                    let pair = kb.b.ins().ushr_imm_u(kk, 1);
                    let half = kb.b.ins().band_imm_s(kk, 1);
                    let row = kb.idx(b_ws, pair, (npp * 4) as i64);
                    let row = kb.idx(row, half, 2);
                    let src = kb.idx(bsrc, kk, (n * st_b.bytes()) as i64);
                    kb.for_range(0, n as i64, 1, |kb, j| {
                        let s = kb.idx(src, j, st_b.bytes() as i64);
                        let v = kb.load_i64(st_b, s, 0);
                        let zp = kb.idx(zt, j, 8);
                        let z = kb.load(I64, zp, 0);
                        let v = kb.b.ins().isub(v, z);
                        let d = kb.idx(row, j, 4);
                        kb.b.ins().istore16(MF, v, d, 0);
                    });
                });
                b_ws
            }
            _ => return,
        };
        let o = kb.off(out, (bi * m * n * ob) as i64);
        emit_int_gemm(
            kb,
            &IntGemm {
                m,
                n,
                pairs: kpp / 2,
                a: a_ws,
                a_row: (kpp * 2) as i64,
                b: bp,
                out: o,
                ldc: n,
                bias,
                rq,
                deq,
                st_out: epi.st_out,
                chan_of_row: false,
            },
        );
    }
}
