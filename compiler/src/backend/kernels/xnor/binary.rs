//! 1-bit kernels: `conv2d_int` and `matmul_int` with both operands `b1` (+-1) and
//! constant weights, as XNOR-popcount (docs/kernels.md, ir-spec/SPEC.md).
//!
//! - Bits: 1 for -1, 0 for +1 (the sign bit of the stored code byte), 64 per word along
//!   K, bit `kk % 64` of word `kk / 64`. The dot of K elements is `K - 2 * popcount(a XOR
//!   w)`; bits past K are 0 on both sides, so they add nothing.
//! - The GEMM is `out[r, c] = epi(dot(L[r], R[c]))`: `L` row-major `[R][KW]` words, `R` in
//!   panels of two columns `[C/2][KW][2]` (what a 2x2 tile reads in one step). Rows and
//!   columns are padded to even counts with zero words; padded results are never stored.
//!   The tile keeps four i64 popcount sums in registers, unrolled 4 along K, scalar
//!   `popcnt` (with `has_popcnt`; Cranelift otherwise emits a bit-trick sequence, the
//!   baseline's fallback).
//! - matmul: `L` = activations, packed at run time into the workspace (16 sign bits at a
//!   time with `vhigh_bits`, i.e. `pmovmskb`); `R` = weights, packed at compile time.
//! - conv: `L` = weights (compile time), `R` = patches: an im2col of the code bytes into a
//!   pixel-major `[Npix][KW*64]` byte workspace (zero bytes for padded taps and past K),
//!   then packed per pixel. Zero padding has no +-1 encoding, so when some tap of some
//!   pixel falls in the padding, a compile-time validity mask in R's layout is ANDed
//!   into every XOR and the dot is `valid_K(p) - 2 * popcount((a ^ w) & mask)`, with
//!   `valid_K(p)` from a compile-time table: exact at the borders. Only column pairs
//!   with a border pixel take the masked tile (a compile-time flag per pair); interior
//!   pairs run the plain one. Pixel patches are a cache line more than their size apart
//!   (a 4 KiB stride would put every im2col store into one L1 set).
//! - conv with whole-byte group channels (`cg` 8, 16, 32, 64, 128, ...: planes.rs):
//!   `conv2d_int.chanbits+...`. K runs tap-major (weights, mask and valid counts packed
//!   in that order); the input's sign bits are transposed into per-pixel channel bytes
//!   and each tap of each pixel is one load + store straight into R's panels, no byte
//!   patches. Padded taps are never written: only masked pairs hold them, and the mask
//!   clears them; the bits past K are zeroed once per call.
//! - aarch64 (`Features::vector_popcnt`): the scalar popcount round-trips through a SIMD
//!   register there, so the tile counts 16 bytes at a time instead: per K word each
//!   row's word is splatted (`dup`), XORed with both columns' words in one vector
//!   (`eor`, masked with `and`), counted per byte (`cnt.16b`) and added to byte sums,
//!   which are widened (`uaddlp` twice) only every 31 words, before a byte could wrap.
//! - Wide tiles (`kernels::xnor`, x86-64-v3 and v4 + VPOPCNTDQ, where the cost table
//!   prefers them): the same bits, but R (and the mask) in panels of 8 columns
//!   (`[C/8][KW][8]`, one 64-byte load per K word of 8 columns), every panel of a padded
//!   conv masked, the tile's own epilogue (`valid - 2 * popcount`, then an in-tile
//!   requantize or threshold where it applies, else i32 rows for `AccStore::flush_rows`).
//! - Epilogue: bias, then the fused requantize of `quant` (or the i32 store). For a conv
//!   whose requantize has a vector form the tiles write their i32 results into a
//!   two-row buffer instead (at the end of the workspace), which
//!   `AccStore::flush_rows` requantizes four pixels at a time after each row pair.

use cranelift_codegen::ir::types::{F32X4, I8, I8X16, I32, I32X4, I64, I64X2};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value};
use qcc_ir::{ElemType, Module, Node, Op};

use super::super::conv::{self, ConvGeom};
use super::super::dot::WideEpi;
use super::super::planes;
use super::super::quant::{AccStore, IntEpi, Requant, Thresh, const_ints, int_epi};
use super::super::{ConstOf, Ecx, matmul_geom};
use super::{EpiKind, WideFns, WideGemm, XnorWide};
use crate::backend::costs::CostTarget;
use crate::backend::kb::{BYTE_SUMS, Kb, MF};
use crate::backend::kernels::xnor;
use crate::backend::storage::Store;

/// Words along K.
fn kw(k: usize) -> usize {
    k.div_ceil(64)
}

fn even(x: usize) -> usize {
    x.div_ceil(2) * 2
}

/// `x` columns rounded up to whole panels of `pw`.
fn padc(x: usize, pw: usize) -> usize {
    x.div_ceil(pw) * pw
}

/// Bytes between two pixels' byte patches: one cache line more than the patch, so that
/// the im2col's stores along pixels do not all fall into one L1 set (a 4 KiB stride).
fn pixel_stride(w: usize) -> usize {
    w * 64 + 64
}

/// Steps of the K loop unrolled in one iteration.
const UNROLL: usize = 1;

#[derive(Clone, Debug)]
pub(crate) enum BinKind {
    MatMul {
        m: usize,
        n: usize,
        k: usize,
        batches: Vec<(usize, usize)>,
    },
    Conv {
        g: ConvGeom,
        /// Some tap of some pixel falls in the zero padding.
        masked: bool,
        /// Channel-packed lowering (planes.rs): tap-major K, no byte im2col.
        chan: bool,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct BinLowering {
    pub kind: BinKind,
    pub epi: IntEpi,
    /// The assembled wide tile (`kernels::xnor`), where the cost table prefers it.
    pub wide: Option<XnorWide>,
}

impl BinLowering {
    pub fn kernel_name(&self) -> String {
        let rq = if self.epi.rq.is_some() {
            "+requantize"
        } else if self.epi.thr.is_some() {
            "+threshold"
        } else {
            ""
        };
        let tile = match self.wide {
            Some(w) => format!("xnor-popcnt.{}", w.isa.name()),
            None => "xnor-popcnt2x2".into(),
        };
        match &self.kind {
            BinKind::MatMul { .. } => format!("matmul_int.{tile}.b1{rq}"),
            BinKind::Conv { masked, chan, .. } => format!(
                "conv2d_int.{}+{tile}{}.b1{rq}",
                if *chan { "chanbits" } else { "im2col" },
                if *masked { ".masked" } else { "" }
            ),
        }
    }

    /// Columns per panel of the right-hand side: 2 for the Cranelift tile, whole
    /// vectors for the wide ones.
    fn pw(&self) -> usize {
        if self.wide.is_some() { xnor::PANEL } else { 2 }
    }

    pub fn workspace(&self) -> usize {
        let pw = self.pw();
        match &self.kind {
            BinKind::MatMul { m, n, k, .. } => {
                even(*m) * kw(*k) * 8 + self.wide.map_or(0, |w| w.buf_bytes(*n))
            }
            BinKind::Conv { g, chan, .. } => {
                let (np, w) = (padc(g.npix(), pw), kw(g.kdim()));
                let main = if *chan {
                    np * w * 8 + planes::chan_bytes(g, 1)
                } else {
                    np * pixel_stride(w) + np * w * 8
                };
                main + match self.wide {
                    Some(wd) => wd.buf_bytes(g.npix()),
                    None => 2 * buf_row(g.npix()),
                }
            }
        }
    }

    pub fn macs(&self) -> u64 {
        match &self.kind {
            BinKind::MatMul {
                m, n, k, batches, ..
            } => (batches.len() * m * n * k) as u64,
            BinKind::Conv { g, .. } => g.macs(),
        }
    }
}

/// Whether `node` (a `conv2d_int` or `matmul_int`) is for this kernel: both operands
/// `b1`, the weights a constant.
pub(crate) fn applies(m: &Module, node: &Node, const_of: &ConstOf<'_>) -> bool {
    matches!(node.op, Op::Conv2dInt | Op::MatMulInt)
        && node.operands.len() >= 2
        && m.ty(node.operands[0]).elem == ElemType::Bipolar
        && m.ty(node.operands[1]).elem == ElemType::Bipolar
        && const_of(node.operands[1]).is_some()
}

pub(crate) fn select(
    m: &Module,
    node: &Node,
    fused: Option<&Node>,
    target: CostTarget,
) -> Result<BinLowering, String> {
    match node.op {
        Op::MatMulInt => {
            let (sa, sb) = (&m.ty(node.operands[0]).shape, &m.ty(node.operands[1]).shape);
            let g = matmul_geom(sa, sb)?;
            if g.batches.len() > 256 {
                return Err("matmul_int with more than 256 batches is not lowered yet".into());
            }
            let out_rank = m.ty(node.result).shape.len();
            let epi = int_epi(m, node, fused, out_rank.saturating_sub(1), true)?;
            if epi.deq.is_some() {
                return Err("this kernel does not fuse a dequantize".into());
            }
            if epi.rq.as_ref().is_some_and(|r| r.chans.len() > 1) && sb.len() < 2 {
                return Err("per-channel requantize of a matrix-vector product".into());
            }
            let macs = (g.batches.len() * g.m * g.n * g.k) as u64;
            let wide = xnor::choose(macs, target)
                .map(|isa| XnorWide::new(isa, (g.m, g.n, g.k), false, false, None));
            Ok(BinLowering {
                kind: BinKind::MatMul {
                    m: g.m,
                    n: g.n,
                    k: g.k,
                    batches: g.batches,
                },
                epi,
                wide,
            })
        }
        Op::Conv2dInt => {
            let g = conv::conv_geom(m, node)?;
            let epi = int_epi(m, node, fused, 1, true)?;
            if epi.deq.is_some() {
                return Err("this kernel does not fuse a dequantize".into());
            }
            let masked = conv_masked(&g);
            let chan = planes::applies(&g);
            let wide = xnor::choose(g.macs(), target).map(|isa| {
                // The tile requantizes (or thresholds) by itself in most cases.
                let in_tile = epi.rq.is_some() || epi.thr.is_some();
                XnorWide::new(isa, (g.mg(), g.npix(), g.kdim()), masked, in_tile, None)
            });
            Ok(BinLowering {
                kind: BinKind::Conv { g, masked, chan },
                epi,
                wide,
            })
        }
        _ => Err(format!("{} is not a 1-bit kernel", node.op)),
    }
}

/// Whether some tap of some output pixel falls in the zero padding.
pub(crate) fn conv_masked(g: &ConvGeom) -> bool {
    (0..g.kh).any(|i| g.rows_valid(i) != (0, g.oh))
        || (0..g.kw).any(|j| g.cols_valid(j) != (0, g.ow))
}

/// Packs `bit(r, kk)` of `rows` rows into row-major `[even(rows)][KW]` words.
fn pack_left(rows: usize, k: usize, bit: impl Fn(usize, usize) -> bool) -> Vec<u64> {
    let w = kw(k);
    let mut v = vec![0u64; even(rows) * w];
    for r in 0..rows {
        for kk in 0..k {
            if bit(r, kk) {
                v[r * w + kk / 64] |= 1 << (kk % 64);
            }
        }
    }
    v
}

/// Packs `bit(kk, c)` of `cols` columns into the panel layout `[cols/pw][KW][pw]`
/// (`cols` rounded up to whole panels).
fn pack_right(cols: usize, k: usize, pw: usize, bit: impl Fn(usize, usize) -> bool) -> Vec<u64> {
    let w = kw(k);
    let mut v = vec![0u64; padc(cols, pw) * w];
    for c in 0..cols {
        for kk in 0..k {
            if bit(kk, c) {
                v[((c / pw) * w + kk / 64) * pw + c % pw] |= 1 << (kk % 64);
            }
        }
    }
    v
}

fn words_bytes(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|w| w.to_le_bytes()).collect()
}

pub(crate) fn emit(cx: &mut Ecx<'_, '_, '_, '_>, q: &BinLowering) {
    match &q.kind {
        BinKind::MatMul { m, n, k, batches } => {
            emit_matmul(cx, *m, *n, *k, batches, &q.epi, q.wide);
        }
        BinKind::Conv { g, masked, chan } => emit_conv(cx, g, *masked, *chan, &q.epi, q.wide),
    }
}

fn emit_matmul(
    cx: &mut Ecx<'_, '_, '_, '_>,
    m: usize,
    n: usize,
    k: usize,
    batches: &[(usize, usize)],
    epi: &IntEpi,
    wide: Option<XnorWide>,
) {
    let w = kw(k);
    let pw = if wide.is_some() { xnor::PANEL } else { 2 };
    let a = cx.operand(0);
    let nb_b = batches.iter().map(|b| b.1).max().unwrap_or(0) + 1;
    let b = const_ints(cx, 1).to_vec();
    let mut packed = Vec::new();
    for s in 0..nb_b {
        packed.extend(pack_right(n, k, pw, |kk, j| b[s * k * n + kk * n + j] < 0));
    }
    let fns = wide.map(|wd| WideFns::new(cx, wd, m, n, k, false, EpiKind::Store));
    let bp = cx.rodata(words_bytes(&packed), 16);
    let bias = epi.has_bias.then(|| cx.operand(2));
    let rq = epi.rq.as_ref().map(|r| (r, cx.rodata(r.table(), 16)));
    let thr = epi
        .thr
        .as_ref()
        .map(|t| (t, cx.rodata(t.table_bytes(), 16)));
    let (out, ws) = (cx.out, cx.ws);
    let ob = epi.st_out.bytes();
    let kb = &mut *cx.kb;
    if m % 2 == 1 {
        let z = kb.c(0);
        for u in 0..w {
            kb.store(z, ws, ((m * w + u) * 8) as i64);
        }
    }
    for (bi, &(ba, bb)) in batches.iter().enumerate() {
        let ab = kb.off(a, (ba * m * k) as i64);
        kb.for_range(0, m as i64, 1, |kb, i| {
            let src = kb.idx(ab, i, k as i64);
            let dst = kb.idx(ws, i, (w * 8) as i64);
            pack_row(kb, src, k, dst, 8);
        });
        let right = kb.off(bp, (bb * padc(n, pw) * w * 8) as i64);
        let o = kb.off(out, (bi * m * n * ob) as i64);
        if let Some(fns) = &fns {
            let buf = kb.off(ws, (even(m) * w * 8) as i64);
            let acc = AccStore {
                ldc: n,
                chan_of_row: false,
                bias,
                rq,
                thr,
                deq: None,
                st_out: epi.st_out,
            };
            let g = WideGemm {
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
            xnor::emit_gemm(kb, &g, fns);
            continue;
        }
        emit_tiles(
            kb,
            &Tiles {
                left: ws,
                right,
                mask: None,
                masked_pairs: None,
                valid: None,
                rows: m,
                cols: n,
                k,
                out: o,
                ldc: n,
                chan_of_row: false,
                bias,
                rq,
                thr,
                st_out: epi.st_out,
                buf: None,
            },
        );
    }
}

/// Packs the sign bits of the `nbytes` code bytes at `src` into words written at `dst`,
/// `dst_stride` bytes apart (bits past `nbytes` are 0).
fn pack_row(kb: &mut Kb<'_, '_>, src: Value, nbytes: usize, dst: Value, dst_stride: i64) {
    let full = nbytes / 64;
    let word = |kb: &mut Kb<'_, '_>, s: Value, len: usize| -> Value {
        let mut acc: Option<Value> = None;
        let mut or = |kb: &mut Kb<'_, '_>, v: Value| {
            acc = Some(match acc {
                None => v,
                Some(a) => kb.b.ins().bor(a, v),
            });
        };
        for ch in 0..len / 16 {
            let v = kb.load(I8X16, s, (ch * 16) as i64);
            let bits = kb.b.ins().vhigh_bits(I64, v);
            let bits = if ch == 0 {
                bits
            } else {
                kb.b.ins().ishl_imm_u(bits, (ch * 16) as i64)
            };
            or(kb, bits);
        }
        for e in len / 16 * 16..len {
            let v = kb.b.ins().uload8(I64, MF, s, e as i32);
            let v = kb.b.ins().ushr_imm_u(v, 7);
            let v = if e == 0 {
                v
            } else {
                kb.b.ins().ishl_imm_u(v, e as i64)
            };
            or(kb, v);
        }
        acc.unwrap_or_else(|| kb.c(0))
    };
    kb.for_range(0, full as i64, 1, |kb, u| {
        let s = kb.idx(src, u, 64);
        let v = word(kb, s, 64);
        let d = kb.idx(dst, u, dst_stride);
        kb.store(v, d, 0);
    });
    let rest = nbytes % 64;
    if rest > 0 {
        let s = kb.off(src, (full * 64) as i64);
        let v = word(kb, s, rest);
        kb.store(v, dst, full as i64 * dst_stride);
    }
}

fn emit_conv(
    cx: &mut Ecx<'_, '_, '_, '_>,
    g: &ConvGeom,
    masked: bool,
    chan: bool,
    epi: &IntEpi,
    wide: Option<XnorWide>,
) {
    let (cg, mg, k, npix) = (g.cg(), g.mg(), g.kdim(), g.npix());
    let pw = if wide.is_some() { xnor::PANEL } else { 2 };
    let (w, np, mgp) = (kw(k), padc(npix, pw), even(mg));
    let x = cx.operand(0);
    let wt = const_ints(cx, 1).to_vec();
    // The weights' K index of the GEMM's K index (tap-major with `chan`).
    let wk = |kk: usize| if chan { planes::weight_k(g, kk) } else { kk };
    let mut packed = Vec::new();
    for grp in 0..g.group {
        packed.extend(pack_left(mg, k, |i, kk| {
            wt[(grp * mg + i) * k + wk(kk)] < 0
        }));
    }
    let wp = cx.rodata(words_bytes(&packed), 16);
    // Tap kk = (c*kh + i)*kw + j of pixel p = oy*ow + ox lies inside the input?
    let inside = |kk: usize, p: usize| {
        let kk = wk(kk);
        let (i, j) = ((kk / g.kw) % g.kh, kk % g.kw);
        let (oy, ox) = (p / g.ow, p % g.ow);
        let y = (oy * g.sh + i * g.dh) as i64 - g.top as i64;
        let xx = (ox * g.sw + j * g.dw) as i64 - g.left as i64;
        (0..g.h as i64).contains(&y) && (0..g.w as i64).contains(&xx)
    };
    let (maskp, validp, pairsp) = if masked {
        let mask = pack_right(npix, k, pw, inside);
        let valid: Vec<u8> = (0..np)
            .flat_map(|p| {
                let v = if p < npix {
                    (0..k).filter(|&kk| inside(kk, p)).count() as i32
                } else {
                    0
                };
                v.to_le_bytes()
            })
            .collect();
        // The Cranelift tile's flags per column pair (the wide tiles mask every panel).
        let pairs = wide.is_none().then(|| {
            let pairs: Vec<u8> = (0..np / 2)
                .map(|pp| {
                    let border = |p: usize| p < npix && (0..k).any(|kk| !inside(kk, p));
                    u8::from(border(2 * pp) || border(2 * pp + 1))
                })
                .collect();
            cx.rodata(pairs, 16)
        });
        (
            Some(cx.rodata(words_bytes(&mask), 16)),
            Some(cx.rodata(valid, 16)),
            pairs,
        )
    } else {
        (None, None, None)
    };
    let bias = epi.has_bias.then(|| cx.operand(2));
    // |dot + bias| <= K + max |bias| (a constant bias) for the vector requantize.
    let bias_max = if epi.has_bias {
        const_ints(cx, 2).iter().map(|v| v.unsigned_abs()).max()
    } else {
        Some(0)
    };
    let rq_own = epi.rq.as_ref().map(|r| Requant {
        acc_max: bias_max.map(|b| k as u64 + b),
        ..r.clone()
    });
    // The wide tiles requantize (or threshold) and store by themselves where the
    // requantize has the vector form and the bias (if any) is a constant.
    let bias_const = !epi.has_bias || (cx.const_of)(cx.node.operands[2]).is_some();
    let bias_c: Vec<i64> = if epi.has_bias {
        const_ints(cx, 2).to_vec()
    } else {
        Vec::new()
    };
    let ob = epi.st_out.bytes();
    let (mut kind, mut tab) = (EpiKind::Store, None);
    match (wide, rq_own.as_ref(), epi.thr.as_ref()) {
        (Some(wd), Some(r), _) if bias_const => {
            let add: Vec<i32> = bias_c.iter().map(|&b| b as i32).collect();
            if let Some(t) = wd.rq_table(r, &add) {
                kind = EpiKind::Requant(WideEpi {
                    round: r.rounding,
                    elem: ob as u32,
                    row_bytes: (npix * ob) as u32,
                    unsigned: matches!(epi.st_out, Store::U8 | Store::U16 | Store::U32),
                    wide_shift: wd.isa == xnor::XnorIsa::Ymm
                        && !super::super::dot::shift_fits_i32(r, r.acc_max),
                    f64_round: wd.isa == xnor::XnorIsa::Ymm
                        && super::super::dot::f64_exact(r, r.acc_max),
                });
                tab = Some(t);
            }
        }
        (Some(wd), None, Some(th)) if bias_const => {
            if let Some(t) = wd.thr_table(th, g.m, k, &bias_c) {
                kind = EpiKind::Thresh {
                    k: th.k as u8,
                    base: if th.bipolar { -1 } else { th.offset as i32 },
                    inc: if th.bipolar { 2 } else { 1 },
                    elem: ob as u32,
                    unsigned: matches!(epi.st_out, Store::U8 | Store::U16 | Store::U32),
                    row_bytes: (npix * ob) as u32,
                };
                tab = Some(t);
            }
        }
        _ => {}
    }
    let epi_tab = tab.map(|t| cx.rodata(t, 64));
    let in_tile = epi_tab.is_some();
    let rq = match in_tile {
        true => None,
        false => rq_own.as_ref().map(|r| (r, cx.rodata(r.table(), 16))),
    };
    let thr = match in_tile {
        true => None,
        false => epi
            .thr
            .as_ref()
            .map(|t| (t, cx.rodata(t.table_bytes(), 16))),
    };
    let fns = wide.map(|wd| WideFns::new(cx, wd, mg, npix, k, masked, kind));
    let (out, ws) = (cx.out, cx.ws);
    let g = *g;
    let kb = &mut *cx.kb;
    // The two-row result buffer at the end of the workspace, with a vector epilogue
    // (the wide tiles' result rows in the same place).
    let main_bytes = if chan {
        np * w * 8 + planes::chan_bytes(&g, 1)
    } else {
        np * pixel_stride(w) + np * w * 8
    };
    let vector = AccStore {
        ldc: npix,
        chan_of_row: true,
        bias,
        rq,
        thr,
        deq: None,
        st_out: epi.st_out,
    }
    .vectorizes();
    let buf = vector.then(|| (kb.off(ws, main_bytes as i64), buf_row(npix) as i64));
    let tiles = |kb: &mut Kb<'_, '_>, grp: Value, og: Value, right: Value| {
        let wg = kb.idx(wp, grp, (mgp * w * 8) as i64);
        let bias_g = bias.map(|b| kb.idx(b, grp, (mg * 4) as i64));
        let rq_g = rq.map(|(r, t)| (r, kb.idx(t, grp, mg as i64 * r.stride())));
        let thr_g = thr.map(|(h, t)| (h, kb.idx(t, grp, mg as i64 * h.stride())));
        if let Some(fns) = &fns {
            let buf = kb.off(ws, main_bytes as i64);
            let acc = AccStore {
                ldc: npix,
                chan_of_row: true,
                bias: bias_g,
                rq: rq_g,
                thr: thr_g,
                deq: None,
                st_out: epi.st_out,
            };
            let epi_g = epi_tab.map(|t| (t, kb.idx(t, grp, (mg * 16) as i64)));
            let gm = WideGemm {
                left: wg,
                right,
                mask: maskp.zip(validp),
                rows: mg,
                cols: npix,
                k,
                out: og,
                buf,
                acc,
                epi_tab: epi_g,
            };
            xnor::emit_gemm(kb, &gm, fns);
            return;
        }
        emit_tiles(
            kb,
            &Tiles {
                left: wg,
                right,
                mask: maskp,
                masked_pairs: pairsp,
                valid: validp,
                rows: mg,
                cols: npix,
                k,
                out: og,
                ldc: npix,
                chan_of_row: true,
                bias: bias_g,
                rq: rq_g,
                thr: thr_g,
                st_out: epi.st_out,
                buf,
            },
        );
    };
    if chan {
        // Panels [np/pw][KW][pw] at ws: the valid taps are rewritten for every image
        // and group from the channel bits after them. Bits past K must be 0 (zeroed
        // once here, in the last word); padded taps are never written and need not be:
        // only panels with a padded tap hold them, and those take the masked tile.
        if !k.is_multiple_of(64) {
            let z = kb.fconst(F32X4, 0.0);
            kb.for_range(0, (np / pw) as i64, 1, |kb, q| {
                let d = kb.idx(ws, q, (w * pw * 8) as i64);
                for h in 0..pw / 2 {
                    kb.store(z, d, ((w - 1) * pw * 8 + h * 16) as i64);
                }
            });
        }
        let cbits = kb.off(ws, (np * w * 8) as i64);
        kb.for_range(0, g.n as i64, 1, |kb, n| {
            let xn = kb.idx(x, n, (g.c * g.h * g.w) as i64);
            let on = kb.idx(out, n, (g.m * npix * ob) as i64);
            kb.for_range(0, g.group as i64, 1, |kb, grp| {
                let xg = kb.idx(xn, grp, (cg * g.h * g.w) as i64);
                let og = kb.idx(on, grp, (mg * npix * ob) as i64);
                planes::pack(kb, &g, xg, cbits, planes::Planes::sign());
                let dst = planes::Dst::Panels {
                    kw: w,
                    width: pw,
                    planes: 1,
                };
                planes::gather(kb, &g, cbits, ws, dst, 1);
                tiles(kb, grp, og, ws);
            });
        });
        return;
    }
    // Byte patches [np][w*64]: padded taps, bytes past K and padding pixels stay 0
    // (bit 0, and masked off); the valid taps are rewritten for every image and group.
    let (pb, ps) = (w * 64, pixel_stride(w)); // bytes per pixel, pixel stride
    conv::fill_zero(kb, ws, 0, np * ps / 4);
    let right = kb.off(ws, (np * ps) as i64);
    kb.for_range(0, g.n as i64, 1, |kb, n| {
        let xn = kb.idx(x, n, (g.c * g.h * g.w) as i64);
        let on = kb.idx(out, n, (g.m * npix * ob) as i64);
        kb.for_range(0, g.group as i64, 1, |kb, grp| {
            let xg = kb.idx(xn, grp, (cg * g.h * g.w) as i64);
            let og = kb.idx(on, grp, (mg * npix * ob) as i64);
            im2col_bytes(kb, &g, xg, ws, ps);
            // Pack each pixel's bytes into its panel column.
            kb.for_range(0, np as i64, 1, |kb, p| {
                let src = kb.idx(ws, p, ps as i64);
                let panel = kb.b.ins().ushr_imm_u(p, pw.trailing_zeros() as i64);
                let lane = kb.b.ins().band_imm_s(p, pw as i64 - 1);
                let d = kb.idx(right, panel, (w * pw * 8) as i64);
                let d = kb.idx(d, lane, 8);
                pack_row(kb, src, pb, d, (pw * 8) as i64);
            });
            tiles(kb, grp, og, right);
        });
    });
}

/// Copies the code bytes of one group's valid taps into the pixel-major byte patches
/// (`pb` bytes apart).
pub(crate) fn im2col_bytes(kb: &mut Kb<'_, '_>, g: &ConvGeom, x: Value, ws: Value, pb: usize) {
    let g = *g;
    kb.for_range(0, g.cg() as i64, 1, |kb, c| {
        let xc = kb.idx(x, c, (g.h * g.w) as i64);
        let kc = kb.b.ins().imul_imm_s(c, (g.kh * g.kw) as i64);
        let wsc = kb.b.ins().iadd(ws, kc);
        for i in 0..g.kh {
            for j in 0..g.kw {
                let (ylo, yhi) = g.rows_valid(i);
                let (xlo, xhi) = g.cols_valid(j);
                if ylo >= yhi || xlo >= xhi {
                    continue;
                }
                let tap = (i * g.kw + j) as i64;
                let x0 = ((xlo * g.sw + j * g.dw) as i64 - g.left as i64)
                    + ((i * g.dh) as i64 - g.top as i64) * g.w as i64;
                kb.for_range(ylo as i64, yhi as i64, 1, |kb, oy| {
                    let src = kb.idx(xc, oy, (g.sh * g.w) as i64);
                    let dst = kb.idx(wsc, oy, (g.ow * pb) as i64);
                    let len = xhi - xlo;
                    let doff = (xlo * pb) as i64 + tap;
                    if len > 8 {
                        kb.for_range(0, len as i64, 1, |kb, e| {
                            let s = kb.idx(src, e, g.sw as i64);
                            let d = kb.idx(dst, e, pb as i64);
                            let v = kb.b.ins().uload8(I32, MF, s, x0 as i32);
                            kb.b.ins().istore8(MF, v, d, doff as i32);
                        });
                    } else {
                        for e in 0..len as i64 {
                            let v =
                                kb.b.ins()
                                    .uload8(I32, MF, src, (x0 + e * g.sw as i64) as i32);
                            kb.b.ins()
                                .istore8(MF, v, dst, (doff + e * pb as i64) as i32);
                        }
                    }
                });
            }
        }
    });
}

/// One 1-bit GEMM: `out[r*ldc + c] = epi(valid(c) - 2 * popcount((L[r] ^ R[c]) & M[c]))`.
#[derive(Clone, Copy)]
struct Tiles<'t> {
    left: Value,
    right: Value,
    /// Validity mask in R's layout (conv with padding).
    mask: Option<Value>,
    /// With `mask`: one byte per column pair, non-zero where some tap of one of its
    /// pixels is padding; the other pairs take the unmasked tile (all K taps valid).
    masked_pairs: Option<Value>,
    /// Per column: the number of valid taps (i32), with `mask`; otherwise K.
    valid: Option<Value>,
    rows: usize,
    cols: usize,
    k: usize,
    out: Value,
    ldc: usize,
    chan_of_row: bool,
    bias: Option<Value>,
    rq: Option<(&'t Requant, Value)>,
    thr: Option<(&'t Thresh, Value)>,
    st_out: Store,
    /// With rows as channels and a vector epilogue: two rows of i32 results (`cols`
    /// rounded up to 4, this many bytes apart) that the tiles fill and
    /// [`AccStore::flush_rows`] stores after each row pair.
    buf: Option<(Value, i64)>,
}

impl Tiles<'_> {
    fn acc(&self) -> AccStore<'_> {
        AccStore {
            ldc: self.ldc,
            chan_of_row: self.chan_of_row,
            bias: self.bias,
            rq: self.rq,
            thr: self.thr,
            deq: None,
            st_out: self.st_out,
        }
    }
}

/// Bytes of one row of the result buffer of [`Tiles::buf`] for `cols` columns.
fn buf_row(cols: usize) -> usize {
    cols.div_ceil(4) * 16
}

fn emit_tiles(kb: &mut Kb<'_, '_>, t: &Tiles<'_>) {
    let (fr, fc) = (t.rows / 2, t.cols / 2);
    let cols = |kb: &mut Kb<'_, '_>, row0: Value, rv: usize| {
        if fc > 0 {
            kb.for_range(0, fc as i64, 1, |kb, tj| {
                let col0 = kb.b.ins().imul_imm_s(tj, 2);
                tile_sel(kb, t, row0, col0, rv, 2);
            });
        }
        if t.cols % 2 == 1 {
            let col0 = kb.c((fc * 2) as i64);
            tile_sel(kb, t, row0, col0, rv, 1);
        }
        if let Some((buf, row)) = t.buf {
            let ob = t.st_out.bytes() as i64;
            t.acc()
                .flush_rows(kb, buf, row, row0, rv, t.cols, t.out, ob);
        }
    };
    if fr > 0 {
        kb.for_range(0, fr as i64, 1, |kb, ti| {
            let row0 = kb.b.ins().imul_imm_s(ti, 2);
            cols(kb, row0, 2);
        });
    }
    if t.rows % 2 == 1 {
        let row0 = kb.c((fr * 2) as i64);
        cols(kb, row0, 1);
    }
}

/// The masked tile where the column pair at `col0` has padded taps, else the plain one.
fn tile_sel(kb: &mut Kb<'_, '_>, t: &Tiles<'_>, row0: Value, col0: Value, rv: usize, cv: usize) {
    let Some(flags) = t.masked_pairs else {
        return tile(kb, t, row0, col0, rv, cv);
    };
    let plain = Tiles {
        mask: None,
        masked_pairs: None,
        valid: None,
        ..*t
    };
    let pair = kb.b.ins().ushr_imm_u(col0, 1);
    let fp = kb.b.ins().iadd(flags, pair);
    let f = kb.b.ins().uload8(I32, MF, fp, 0);
    let (bm, bp, join) = (
        kb.b.create_block(),
        kb.b.create_block(),
        kb.b.create_block(),
    );
    kb.b.ins().brif(f, bm, &[], bp, &[]);
    for (blk, tt) in [(bm, t), (bp, &plain)] {
        kb.b.switch_to_block(blk);
        kb.b.seal_block(blk);
        tile(kb, tt, row0, col0, rv, cv);
        kb.b.ins().jump(join, &[]);
    }
    kb.b.switch_to_block(join);
    kb.b.seal_block(join);
}

/// The 2x2 tile's four popcounts (row-major) with the vector popcount (aarch64: `cnt`
/// on 16 bytes, byte sums widened by `uaddlp` only every [`BYTE_SUMS`] words): per K
/// word, each row's word is splatted and XORed with both columns' words at once.
fn vector_popcounts(
    kb: &mut Kb<'_, '_>,
    w: usize,
    lp: Value,
    rp: Value,
    mp: Option<Value>,
) -> [Value; 4] {
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let z32 = kb.b.ins().iconst(I32, 0);
    let z32 = kb.b.ins().splat(I32X4, z32);
    let z8 = kb.b.ins().iconst(I8, 0);
    let z8 = kb.b.ins().splat(I8X16, z8);
    // Per row: u32 lanes 0-1 count column 0, lanes 2-3 column 1.
    let totals: Vec<_> = (0..2).map(|_| kb.var(I32X4, z32)).collect();
    let mut start = 0;
    while start < w {
        let end = (start + BYTE_SUMS).min(w);
        let bytes: Vec<_> = (0..2).map(|_| kb.var(I8X16, z8)).collect();
        kb.for_range(start as i64, end as i64, 1, |kb, u| {
            let r = kb.idx(rp, u, 16);
            let bv = kb.load(I64X2, r, 0);
            let mv = mp.map(|m| {
                let m = kb.idx(m, u, 16);
                kb.load(I64X2, m, 0)
            });
            let l = kb.idx(lp, u, 8);
            for (ri, acc) in bytes.iter().enumerate() {
                let a = kb.load(I64, l, (ri * w * 8) as i64);
                let a = kb.b.ins().splat(I64X2, a);
                let x = kb.b.ins().bxor(a, bv);
                let x = match mv {
                    Some(m) => kb.b.ins().band(x, m),
                    None => x,
                };
                let x = kb.b.ins().bitcast(I8X16, le, x);
                let pc = kb.b.ins().popcnt(x);
                let s = kb.b.use_var(*acc);
                let s = kb.b.ins().iadd(s, pc);
                kb.b.def_var(*acc, s);
            }
        });
        kb.fold_byte_sums(&bytes, &totals);
        start = end;
    }
    let mut out = [z32; 4];
    for (ri, total) in totals.iter().enumerate() {
        let t = kb.b.use_var(*total);
        for ci in 0..2 {
            let a = kb.b.ins().extractlane(t, (2 * ci) as u8);
            let b = kb.b.ins().extractlane(t, (2 * ci + 1) as u8);
            let s = kb.b.ins().iadd(a, b);
            out[ri * 2 + ci] = kb.b.ins().uextend(I64, s);
        }
    }
    out
}

/// A 2x2 tile at (`row0`, `col0`), both even; stores `rv` rows and `cv` columns.
fn tile(kb: &mut Kb<'_, '_>, t: &Tiles<'_>, row0: Value, col0: Value, rv: usize, cv: usize) {
    let w = kw(t.k);
    let lp = kb.idx(t.left, row0, (w * 8) as i64);
    let rp = kb.idx(t.right, col0, (w * 8) as i64);
    let mp = t.mask.map(|m| kb.idx(m, col0, (w * 8) as i64));
    let zero = kb.c(0);
    let accs: Vec<_> = (0..4).map(|_| kb.var(I64, zero)).collect();
    let step = |kb: &mut Kb<'_, '_>, l: Value, r: Value, msk: Option<Value>, u: i64| {
        let a = [
            kb.load(I64, l, u * 8),
            kb.load(I64, l, (w * 8) as i64 + u * 8),
        ];
        let b = [kb.load(I64, r, u * 16), kb.load(I64, r, u * 16 + 8)];
        let mk = msk.map(|m| [kb.load(I64, m, u * 16), kb.load(I64, m, u * 16 + 8)]);
        for (ri, &av) in a.iter().enumerate() {
            for (ci, &bv) in b.iter().enumerate() {
                let x = kb.b.ins().bxor(av, bv);
                let x = match mk {
                    Some(mm) => kb.b.ins().band(x, mm[ci]),
                    None => x,
                };
                let pc = kb.b.ins().popcnt(x);
                let acc = accs[ri * 2 + ci];
                let s = kb.b.use_var(acc);
                let s = kb.b.ins().iadd(s, pc);
                kb.b.def_var(acc, s);
            }
        }
    };
    if kb.feat.vector_popcnt {
        let pcs = vector_popcounts(kb, w, lp, rp, mp);
        for (acc, pc) in accs.iter().zip(pcs) {
            kb.b.def_var(*acc, pc);
        }
    } else {
        let main = w / UNROLL * UNROLL;
        if main > 0 {
            kb.for_range(0, main as i64, UNROLL as i64, |kb, u| {
                let l = kb.idx(lp, u, 8);
                let r = kb.idx(rp, u, 16);
                let m = mp.map(|m| kb.idx(m, u, 16));
                for s in 0..UNROLL as i64 {
                    step(kb, l, r, m, s);
                }
            });
        }
        for u in main..w {
            step(kb, lp, rp, mp, u as i64);
        }
    }
    // Epilogue.
    let ob = t.st_out.bytes() as i64;
    let out_row = kb.idx(t.out, row0, t.ldc as i64 * ob);
    let out_tile = kb.idx(out_row, col0, ob);
    for r in 0..rv {
        for c in 0..cv {
            let pc = kb.b.use_var(accs[r * 2 + c]);
            let pc = kb.b.ins().ireduce(I32, pc);
            let twice = kb.b.ins().ishl_imm_u(pc, 1);
            let valid = match t.valid {
                Some(vt) => {
                    let p = kb.idx(vt, col0, 4);
                    kb.load(I32, p, (c * 4) as i64)
                }
                None => kb.b.ins().iconst(I32, t.k as i64),
            };
            let x = kb.b.ins().isub(valid, twice);
            match t.buf {
                Some((buf, row)) => {
                    let p = kb.idx(buf, col0, 4);
                    kb.store(x, p, r as i64 * row + c as i64 * 4);
                }
                None => t.acc().store(kb, x, (row0, col0), (r, c), out_tile, ob),
            }
        }
    }
}
