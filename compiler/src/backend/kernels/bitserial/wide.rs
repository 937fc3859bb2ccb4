//! The bit-serial layers on the assembled wide tiles (x86-64-v3 `vpand` nibble
//! lookup on ymm, x86-64-v4 + VPOPCNTDQ `vpandq` + `vpopcntq` on zmm): the packing of
//! their operands (weights at compile time, activations per call) into the layouts of
//! `kernels::xnor`'s popcount tiles with `BsPlanes`, and the drivers Cranelift emits
//! around those tiles. The exactness rules (offsets, correction table, padding with
//! the zero point's code) are the module's (`super`); the layouts are in
//! `kernels/xnor/README.md`.

use cranelift_codegen::ir::types::I64X2;
use cranelift_codegen::ir::{InstBuilder, Value};

use super::super::conv::ConvGeom;
use super::super::planes;
use super::super::quant::{AccStore, Requant};
use super::super::xnor::{self, EpiKind, PANEL, WideFns, WideGemm, XnorIsa, XnorWide};
use super::{
    BsLowering, bias_of, corr_table, fold_table, i32_bytes, kw, matmul_consts, off_vec,
    pack_planes, weights_of,
};
use crate::backend::kernels::Ecx;
use crate::backend::kernels::dot::WideEpi;
use crate::backend::storage::Store;

/// Workspace bytes of a convolution on the wide tiles before their result rows: the
/// activation panels `[npix/8][KW][ab][8]` words, then the channel workspace.
pub(super) fn wide_conv_main(g: &ConvGeom, ab: usize) -> usize {
    g.npix().div_ceil(PANEL) * PANEL * kw(g.kdim()) * ab * 8 + planes::chan_bytes(g, ab)
}

/// Packs `n` vectors of K codes `get(v, kk)` (`planes` bits of each) into panels of
/// [`PANEL`] vectors for the wide tiles' columns: `[n/8][KW][planes][8]` words (plane
/// `j` holds bit `j` of the code, bit `kk % 64` of word `kk / 64`; vectors past `n`
/// and bits past K are 0).
fn pack_panels(n: usize, k: usize, planes: usize, get: impl Fn(usize, usize) -> i64) -> Vec<u8> {
    let w = kw(k);
    let mut v = vec![0u64; n.div_ceil(PANEL) * w * planes * PANEL];
    for c in 0..n {
        let (panel, lane) = (c / PANEL, c % PANEL);
        for kk in 0..k {
            let code = get(c, kk) as u64;
            for j in 0..planes {
                if (code >> j) & 1 == 1 {
                    v[((panel * w + kk / 64) * planes + j) * PANEL + lane] |= 1 << (kk % 64);
                }
            }
        }
    }
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Packs `n` vectors of K codes into the wide tiles' rows: `[n][KW][planes]` whole
/// words (bits past K 0).
fn pack_rows(n: usize, k: usize, planes: usize, get: impl Fn(usize, usize) -> i64) -> Vec<u8> {
    let w = kw(k);
    let mut v = vec![0u64; n * w * planes];
    for r in 0..n {
        for kk in 0..k {
            let code = get(r, kk) as u64;
            for j in 0..planes {
                if (code >> j) & 1 == 1 {
                    v[(r * w + kk / 64) * planes + j] |= 1 << (kk % 64);
                }
            }
        }
    }
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A matrix product on the wide tiles (`xnor::BsPlanes`): the rows are A's rows,
/// packed per call into `[m][KW][ab]` plane words (as the 128-bit kernel packs them),
/// the columns the weights' output channels in panels packed at compile time; the
/// tiles write `sum xu * w` as i32 result rows, and Cranelift's epilogue adds the
/// correction table (as the bias, or folded into the requantize) and stores them.
pub(super) fn emit_matmul_wide(
    cx: &mut Ecx<'_, '_, '_, '_>,
    (m, n, k): (usize, usize, usize),
    batches: &[(usize, usize)],
    q: &BsLowering,
    wd: XnorWide,
) {
    let (bits, epi) = (&q.bits, &q.epi);
    let (w, wb, ab) = (kw(k), bits.wb, bits.ab);
    let a = cx.operand(0);
    let nb_b = batches.iter().map(|b| b.1).max().unwrap_or(0) + 1;
    let b = weights_of(cx);
    let (bias_c, _) = bias_of(cx, epi);
    // The wide tiles take weights with zero point 0 only (`q.zw` is empty).
    let (bp, tab, folded) = matmul_consts(cx, q, (n, k, nb_b), &b, &bias_c, 64, &|at| {
        pack_panels(n, k, wb, at)
    });
    let panel_bytes = n.div_ceil(PANEL) * w * wb * PANEL * 8;
    let rq = folded
        .as_ref()
        .or(epi.rq.as_ref())
        .map(|r| (r, cx.rodata(r.table(), 16)));
    let deq = epi.deq.as_ref().map(|d| (d, cx.rodata(d.table(), 16)));
    let fns = WideFns::new(cx, wd, m, n, k, false, EpiKind::Store);
    let (out, ws) = (cx.out, cx.ws);
    let ob = epi.st_out.bytes();
    let bits = *bits;
    let kb = &mut *cx.kb;
    let offv = off_vec(kb, bits.off);
    let buf = kb.off(ws, (m * w * ab * 8) as i64);
    for (bi, &(ba, bb)) in batches.iter().enumerate() {
        let abase = kb.off(a, (ba * m * k) as i64);
        kb.for_range(0, m as i64, 1, |kb, i| {
            let src = kb.idx(abase, i, k as i64);
            let dst = kb.idx(ws, i, (w * ab * 8) as i64);
            pack_planes(kb, src, k, dst, &bits, offv);
        });
        let right = kb.off(bp, (bb * panel_bytes) as i64);
        let acc = AccStore {
            ldc: n,
            chan_of_row: false,
            bias: tab.map(|t| kb.off(t, (bb * n * 4) as i64)),
            rq,
            thr: None,
            deq,
            st_out: epi.st_out,
        };
        let o = kb.off(out, (bi * m * n * ob) as i64);
        let gm = WideGemm {
            left: ws,
            right,
            mask: None,
            rows: m,
            cols: n,
            k,
            out: o,
            buf,
            acc,
            epi_tab: None,
        };
        xnor::emit_gemm(kb, &gm, &fns);
    }
}

/// A channel-packed convolution on the wide tiles: the rows are the group's weight
/// channels (`[mg][KW][wb]` words, compile time), the columns its output pixels in
/// panels `[npix/8][KW][ab][8]` words, gathered per image and group from the channel
/// planes (`planes::gather`). Every pixel word starts once per call as the code `zu` in
/// every plane, which the padded taps keep (the padding rule of the module docs). The
/// tiles requantize and store by themselves where the requantize has the vector form
/// (the correction table is the bias they add), else Cranelift's epilogue does.
pub(super) fn emit_conv_wide(
    cx: &mut Ecx<'_, '_, '_, '_>,
    g: &ConvGeom,
    q: &BsLowering,
    wd: XnorWide,
) {
    let (bits, epi) = (&q.bits, &q.epi);
    let (mg, k, npix) = (g.mg(), g.kdim(), g.npix());
    let (w, wb, ab) = (kw(k), bits.wb, bits.ab);
    let x = cx.operand(0);
    let wt = weights_of(cx);
    let (bias_c, _) = bias_of(cx, epi);
    let zu = bits.zx + bits.off;
    let mut packed = Vec::new();
    for grp in 0..g.group {
        packed.extend(pack_rows(mg, k, wb, |i, kk| {
            wt[(grp * mg + i) * k + planes::weight_k(g, kk)]
        }));
    }
    let wp = cx.rodata(packed, 64);
    let table = corr_table(g.m, k, zu, &bias_c, &[], |ch, kk| wt[ch * k + kk]);
    // |sum xu * w + table| for the in-tile requantize's choice of form.
    let wmax = if bits.wsigned {
        1u64 << (wb - 1)
    } else {
        (1u64 << wb) - 1
    };
    let tmax = table
        .iter()
        .map(|v| v.unsigned_abs() as u64)
        .max()
        .unwrap_or(0);
    let bound = k as u64 * ((1u64 << ab) - 1) * wmax + tmax;
    let ob = epi.st_out.bytes();
    let rq_own = epi.rq.as_ref().map(|r| Requant {
        acc_max: Some(bound),
        ..r.clone()
    });
    let in_tile = rq_own.as_ref().and_then(|r| {
        let t = wd.rq_table(r, &table)?;
        let e = WideEpi {
            round: r.rounding,
            elem: ob as u32,
            row_bytes: (npix * ob) as u32,
            unsigned: matches!(epi.st_out, Store::U8 | Store::U16 | Store::U32),
            wide_shift: wd.isa == XnorIsa::Ymm
                && !crate::backend::kernels::dot::shift_fits_i32(r, r.acc_max),
            f64_round: wd.isa == XnorIsa::Ymm
                && crate::backend::kernels::dot::f64_exact(r, r.acc_max),
        };
        Some((e, t))
    });
    let (kind, epi_tab, tab, rq) = match in_tile {
        Some((e, t)) => (EpiKind::Requant(e), Some(cx.rodata(t, 64)), None, None),
        None => {
            let folded = fold_table(epi, &table);
            let tab = (folded.is_none() && table.iter().any(|&v| v != 0))
                .then(|| cx.rodata(i32_bytes(&table), 16));
            let rq = match folded {
                Some(f) => Some(f),
                None => epi.rq.clone(),
            };
            (EpiKind::Store, None, tab, rq)
        }
    };
    let rq = rq.as_ref().map(|r| (r, cx.rodata(r.table(), 16)));
    let deq = epi.deq.as_ref().map(|d| (d, cx.rodata(d.table(), 16)));
    let fns = WideFns::new(cx, wd, mg, npix, k, false, kind);
    let (out, ws) = (cx.out, cx.ws);
    let (g, cg) = (*g, g.cg());
    let kb = &mut *cx.kb;
    let np = npix.div_ceil(PANEL);
    let main = wide_conv_main(&g, ab);
    let cbits = kb.off(ws, (np * PANEL * w * ab * 8) as i64);
    let buf = kb.off(ws, main as i64);
    // Every pixel word of every plane as the code zu (padded taps, bits past K, the
    // pixels past npix of the last panel).
    let pat: Vec<Value> = (0..ab)
        .map(|i| {
            let v = kb.c(if (zu >> i) & 1 == 1 { -1 } else { 0 });
            kb.b.ins().splat(I64X2, v)
        })
        .collect();
    kb.for_range(0, (np * w) as i64, 1, |kb, u| {
        let d = kb.idx(ws, u, (ab * PANEL * 8) as i64);
        for (i, &pv) in pat.iter().enumerate() {
            for h in 0..PANEL / 2 {
                kb.store(pv, d, ((i * PANEL + 2 * h) * 8) as i64);
            }
        }
    });
    let pl = planes::Planes {
        n: ab,
        first: 0,
        off: bits.off,
    };
    let dst = planes::Dst::Panels {
        kw: w,
        width: PANEL,
        planes: ab,
    };
    kb.for_range(0, g.n as i64, 1, |kb, n| {
        let xn = kb.idx(x, n, (g.c * g.h * g.w) as i64);
        let on = kb.idx(out, n, (g.m * npix * ob) as i64);
        kb.for_range(0, g.group as i64, 1, |kb, grp| {
            let xg = kb.idx(xn, grp, (cg * g.h * g.w) as i64);
            let og = kb.idx(on, grp, (mg * npix * ob) as i64);
            planes::pack(kb, &g, xg, cbits, pl);
            planes::gather(kb, &g, cbits, ws, dst, ab);
            let acc = AccStore {
                ldc: npix,
                chan_of_row: true,
                bias: tab.map(|t| kb.idx(t, grp, (mg * 4) as i64)),
                rq: rq.map(|(r, t)| (r, kb.idx(t, grp, mg as i64 * r.stride()))),
                thr: None,
                deq: deq.map(|(d, t)| (d, kb.idx(t, grp, (mg * 4) as i64))),
                st_out: epi.st_out,
            };
            let gm = WideGemm {
                left: kb.idx(wp, grp, (mg * w * wb * 8) as i64),
                right: ws,
                mask: None,
                rows: mg,
                cols: npix,
                k,
                out: og,
                buf,
                acc,
                epi_tab: epi_tab.map(|t| (t, kb.idx(t, grp, (mg * 16) as i64))),
            };
            xnor::emit_gemm(kb, &gm, &fns);
        });
    });
}
