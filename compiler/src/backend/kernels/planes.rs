//! Channel-packed bit planes: the activation side of the 1-bit (binary.rs) and
//! bit-serial (bitserial.rs) convolutions without a byte im2col, for groups whose
//! input channels `cg` make whole bytes that never straddle a 64-bit word (`cg % 8 ==
//! 0` and `cg/8` divides 8 or is a multiple of 8: 8, 16, 32, 64, 128, ...).
//!
//! - K order. The GEMM's K runs tap-major, `kk' = (i*kw + j)*cg + c`, instead of the
//!   weights' `(c*kh + i)*kw + j` ([`weight_k`] maps one to the other). The dot product
//!   is a sum over K, so any order is exact as long as both sides use the same one:
//!   the weights, and the 1-bit kernel's validity mask and valid counts, are packed in
//!   this order at compile time. A tap's `cg` bits are then `cg/8` consecutive bytes of
//!   the K bit string (bit `kk' % 64` of word `kk' / 64`), inside one word or filling
//!   whole words.
//! - Pack ([`pack`]). Per image and group the input codes (NCHW bytes) go into a
//!   channel workspace `[planes][H*W][cg/8]` bytes: per plane and pixel, that pixel's
//!   `cg` channel bits (bit `c % 8` of byte `c / 8`). 16 pixels x 16 channels at a
//!   time: 16 vector loads (one channel's 16 consecutive pixels each), the offset and
//!   shift of the planes (a plane's bit in the byte's sign position), a 16x16 byte
//!   transpose by four stages of interleaves (`punpckl/h bw, wd, dq, qdq`: constant
//!   shuffles), then per pixel vector and plane one `vhigh_bits` (`pmovmskb`) is the
//!   pixel's 16 channel bits. `cg = 8` transposes 8 rows (three stages, two pixels per
//!   vector). A last partial block of pixels is redone as the block ending at `H*W`
//!   (it rewrites the same bits); fewer than 16 pixels take a scalar loop.
//! - Gather ([`gather`]). For each tap `(i, j)`, the output rows and columns it reaches
//!   inside the input (`ConvGeom::rows_valid` / `cols_valid`, compile time), each output
//!   pixel's word bytes of that tap are one load + one store per plane (1, 2, 4 or 8
//!   bytes; several words for `cg > 64`) from the input pixel's channel bytes, straight
//!   into the layout the tiles read ([`Dst`]). Taps in the padding are never written:
//!   the 1-bit kernel masks them off (only bits past K are zeroed, once per call); the
//!   bit-serial kernel fills the pixels with a padded tap once per call with the zero
//!   point's code in every plane, which their padded taps keep.

use cranelift_codegen::ir::types::{I8, I8X16, I32, I64};
use cranelift_codegen::ir::{ConstantData, InstBuilder, Value};

use super::conv::ConvGeom;
use crate::backend::kb::{Kb, MF};

/// Whether a group's channels fit the channel-packed lowering.
pub(crate) fn applies(g: &ConvGeom) -> bool {
    let cg = g.cg();
    let nb = cg / 8;
    cg > 0 && cg.is_multiple_of(8) && (8 % nb == 0 || nb.is_multiple_of(8))
}

/// The weights' K index `(c*kh + i)*kw + j` of the tap-major index `kk' = (i*kw + j)*cg
/// + c`.
pub(crate) fn weight_k(g: &ConvGeom, kk: usize) -> usize {
    let (t, c) = (kk / g.cg(), kk % g.cg());
    c * g.kh * g.kw + t
}

/// Bytes of the channel workspace with `planes` planes (a multiple of 16).
pub(crate) fn chan_bytes(g: &ConvGeom, planes: usize) -> usize {
    (planes * g.h * g.w * (g.cg() / 8)).div_ceil(16) * 16
}

/// The output rows `[r0, r1)` and columns `[c0, c1)` where every tap lies inside the
/// input; the pixels outside that box have some tap in the padding.
pub(crate) fn interior(g: &ConvGeom) -> ((usize, usize), (usize, usize)) {
    let meet = |r: &mut (usize, usize), v: (usize, usize)| *r = (r.0.max(v.0), r.1.min(v.1));
    let (mut rows, mut cols) = ((0, g.oh), (0, g.ow));
    (0..g.kh).for_each(|i| meet(&mut rows, g.rows_valid(i)));
    (0..g.kw).for_each(|j| meet(&mut cols, g.cols_valid(j)));
    (rows, cols)
}

/// Which bits of a code byte are the planes: plane `p` is bit `first + p` of `code +
/// off` (wrapping in 8 bits).
#[derive(Clone, Copy)]
pub(crate) struct Planes {
    pub n: usize,
    pub first: usize,
    pub off: i64,
}

impl Planes {
    /// `b1`: one plane, the sign bit (1 for -1).
    pub fn sign() -> Planes {
        Planes {
            n: 1,
            first: 7,
            off: 0,
        }
    }
}

/// The layout the tiles read, per output pixel `p`, K word `u`, plane `i`.
#[derive(Clone, Copy)]
pub(crate) enum Dst {
    /// Panels of `width` pixels, `[np/width][KW][planes][width]` words: binary.rs (one
    /// plane; `width` 2 for the Cranelift tile, 8 for the wide tiles) and the
    /// bit-serial wide tiles (`width` 8).
    Panels {
        kw: usize,
        width: usize,
        planes: usize,
    },
    /// bitserial.rs: vectors `[npix][KW][planes]` words.
    Vectors { kw: usize, planes: usize },
}

impl Dst {
    /// Offset of word `u`, plane `i` from the pixel's first word.
    fn word(self, u: usize, i: usize) -> i64 {
        match self {
            Dst::Panels { width, planes, .. } => ((u * planes + i) * width * 8) as i64,
            Dst::Vectors { planes, .. } => ((u * planes + i) * 8) as i64,
        }
    }
    /// Pixels after which the layout repeats ([`Dst::step`] bytes further).
    fn period(self) -> usize {
        match self {
            Dst::Panels { width, .. } => width,
            Dst::Vectors { .. } => 2,
        }
    }
    /// Offset from pixel `p` to pixel `p + period`.
    fn step(self) -> i64 {
        match self {
            Dst::Panels { kw, width, planes } => (kw * planes * width * 8) as i64,
            Dst::Vectors { kw, planes } => (2 * kw * planes * 8) as i64,
        }
    }
    /// Offset of pixel `p` (run time).
    fn pixel(self, kb: &mut Kb<'_, '_>, p: Value) -> Value {
        match self {
            Dst::Panels { kw, width, planes } => {
                debug_assert!(width.is_power_of_two());
                let panel = kb.b.ins().ushr_imm_u(p, width.trailing_zeros() as i64);
                let lane = kb.b.ins().band_imm_s(p, width as i64 - 1);
                let a =
                    kb.b.ins()
                        .imul_imm_s(panel, (kw * planes * width * 8) as i64);
                let h = kb.b.ins().ishl_imm_u(lane, 3);
                kb.b.ins().iadd(a, h)
            }
            Dst::Vectors { kw, planes } => kb.b.ins().imul_imm_s(p, (kw * planes * 8) as i64),
        }
    }
}

/// The byte-transpose network on `v.len()` (8 or 16) row vectors: stages of
/// interleaves of 1-, 2-, 4- (and 8-) byte elements of adjacent vectors, the low
/// halves first. `unpack(a, b, e, hi)` interleaves the `e`-byte elements of the low
/// (`hi`: high) halves of `a` and `b`.
fn transpose<T>(mut v: Vec<T>, mut unpack: impl FnMut(&T, &T, usize, bool) -> T) -> Vec<T> {
    let rows = v.len();
    let mut e = 1;
    while e < rows {
        let mut next = Vec::with_capacity(rows);
        for hi in [false, true] {
            for k in 0..rows / 2 {
                next.push(unpack(&v[2 * k], &v[2 * k + 1], e, hi));
            }
        }
        v = next;
        e *= 2;
    }
    v
}

/// The lanes of `shuffle(a, b)` (16..32 pick from `b`) that interleave the `e`-byte
/// elements of the low or high halves: `punpckl/h{bw, wd, dq, qdq}`.
fn unpack_lanes(e: usize, hi: bool) -> [u8; 16] {
    let base = if hi { 8 } else { 0 };
    std::array::from_fn(|j| {
        let (el, within) = (j / e, j % e);
        let src = base + (el / 2) * e + within;
        (if el % 2 == 0 { src } else { 16 + src }) as u8
    })
}

/// For each vector out of the network on `rows` rows: the first pixel (column) it
/// holds. Rows 16: lane `c` holds channel `c` of that pixel; rows 8: lanes 0..8 the
/// channels of that pixel and lanes 8..16 those of the next one.
fn transposed_pixels(rows: usize) -> Vec<usize> {
    let start: Vec<[(usize, usize); 16]> =
        (0..rows).map(|r| std::array::from_fn(|l| (r, l))).collect();
    let out = transpose(start, |a, b, e, hi| {
        let m = unpack_lanes(e, hi);
        std::array::from_fn(|j| {
            let s = m[j] as usize;
            if s < 16 { a[s] } else { b[s - 16] }
        })
    });
    out.iter()
        .map(|v| {
            let p = v[0].1;
            for (l, &(r, c)) in v.iter().enumerate() {
                let want = if rows == 16 {
                    (l, p)
                } else {
                    (l % 8, p + l / 8)
                };
                assert_eq!((r, c), want, "byte transpose network");
            }
            p
        })
        .collect()
}

/// Packs one group's input codes (`cg` channels of `H*W` bytes at `x`) into the
/// channel workspace `[planes][H*W][cg/8]` at `chan`.
pub(crate) fn pack(kb: &mut Kb<'_, '_>, g: &ConvGeom, x: Value, chan: Value, pl: Planes) {
    let (hw, cg) = (g.h * g.w, g.cg());
    let nb = cg / 8;
    if hw < 16 {
        pack_scalar(kb, hw, nb, x, chan, pl);
        return;
    }
    let rows = if cg.is_multiple_of(16) { 16 } else { 8 };
    let pixels = transposed_pixels(rows);
    let offv = (pl.off != 0).then(|| {
        let o = kb.b.ins().iconst(I8, pl.off);
        kb.b.ins().splat(I8X16, o)
    });
    let shift = 8 - (pl.first + pl.n);
    // One block: 16 pixels from `pix0` of the `rows` channels at `xc`, into the bytes
    // of those channels at `cc`.
    let block = |kb: &mut Kb<'_, '_>, xc: Value, cc: Value, pix0: Value| {
        let xs = kb.b.ins().iadd(xc, pix0);
        let v: Vec<Value> = (0..rows)
            .map(|r| {
                let v = kb.load(I8X16, xs, (r * hw) as i64);
                let v = match offv {
                    Some(o) => kb.b.ins().iadd(v, o),
                    None => v,
                };
                if shift > 0 {
                    kb.ishl_k(v, shift as i64)
                } else {
                    v
                }
            })
            .collect();
        let t = transpose(v, |&a, &b, e, hi| {
            let lanes = unpack_lanes(e, hi);
            let imm =
                kb.b.func
                    .dfg
                    .immediates
                    .push(ConstantData::from(&lanes[..]));
            kb.b.ins().shuffle(a, b, imm)
        });
        let cs = kb.idx(cc, pix0, nb as i64);
        for (&tv, &p) in t.iter().zip(&pixels) {
            let mut s = tv;
            for i in (0..pl.n).rev() {
                if i + 1 < pl.n {
                    s = kb.b.ins().iadd(s, s);
                }
                let m = kb.b.ins().vhigh_bits(I32, s);
                kb.b.ins().istore16(MF, m, cs, ((i * hw + p) * nb) as i32);
            }
        }
    };
    kb.for_range(0, (cg / rows) as i64, 1, |kb, cb| {
        let xc = kb.idx(x, cb, (rows * hw) as i64);
        let cc = kb.idx(chan, cb, (rows / 8) as i64);
        kb.for_range(0, (hw / 16) as i64, 1, |kb, pb| {
            let pix0 = kb.b.ins().imul_imm_s(pb, 16);
            block(kb, xc, cc, pix0);
        });
        if !hw.is_multiple_of(16) {
            let pix0 = kb.c((hw - 16) as i64);
            block(kb, xc, cc, pix0);
        }
    });
}

/// [`pack`] one code at a time (fewer than 16 pixels).
fn pack_scalar(kb: &mut Kb<'_, '_>, hw: usize, nb: usize, x: Value, chan: Value, pl: Planes) {
    kb.for_range(0, hw as i64, 1, |kb, p| {
        let xp = kb.b.ins().iadd(x, p);
        let cp = kb.idx(chan, p, nb as i64);
        kb.for_range(0, nb as i64, 1, |kb, ch| {
            let xs = kb.idx(xp, ch, (8 * hw) as i64);
            let cs = kb.b.ins().iadd(cp, ch);
            let mut acc: Vec<Option<Value>> = vec![None; pl.n];
            for c in 0..8 {
                let v = kb.b.ins().uload8(I32, MF, xs, (c * hw) as i32);
                let v = if pl.off != 0 {
                    kb.b.ins().iadd_imm_s(v, pl.off)
                } else {
                    v
                };
                for (i, a) in acc.iter_mut().enumerate() {
                    let bit = kb.b.ins().ushr_imm_u(v, (pl.first + i) as i64);
                    let bit = kb.b.ins().band_imm_s(bit, 1);
                    let bit = if c == 0 {
                        bit
                    } else {
                        kb.b.ins().ishl_imm_u(bit, c as i64)
                    };
                    *a = Some(match *a {
                        None => bit,
                        Some(o) => kb.b.ins().bor(o, bit),
                    });
                }
            }
            for (i, a) in acc.into_iter().enumerate() {
                let a = a.expect("8 channels");
                kb.b.ins().istore8(MF, a, cs, (i * hw * nb) as i32);
            }
        });
    });
}

/// One copy of a tap's bytes: from the channel workspace at `src` (plus the input
/// pixel's offset) to `dst` (plus the output pixel's offset), `bytes` of them.
#[derive(Clone, Copy)]
struct Piece {
    src: i64,
    dst: i64,
    bytes: usize,
}

fn copy(kb: &mut Kb<'_, '_>, pc: Piece, s: Value, soff: i64, d: Value, doff: i64) {
    let (so, dof) = ((pc.src + soff) as i32, (pc.dst + doff) as i32);
    match pc.bytes {
        1 => {
            let v = kb.b.ins().uload8(I32, MF, s, so);
            kb.b.ins().istore8(MF, v, d, dof);
        }
        2 => {
            let v = kb.b.ins().uload16(I32, MF, s, so);
            kb.b.ins().istore16(MF, v, d, dof);
        }
        4 => {
            let v = kb.b.ins().load(I32, MF, s, so);
            kb.b.ins().store(MF, v, d, dof);
        }
        _ => {
            let v = kb.b.ins().load(I64, MF, s, so);
            kb.b.ins().store(MF, v, d, dof);
        }
    }
}

/// Writes every valid tap of every output pixel from the channel workspace at `chan`
/// (`planes` planes) into the panels at `dst` (layout `d`); padded taps are left as
/// they are.
pub(crate) fn gather(
    kb: &mut Kb<'_, '_>,
    g: &ConvGeom,
    chan: Value,
    dst: Value,
    d: Dst,
    planes: usize,
) {
    let g = *g;
    let (hw, nb) = (g.h * g.w, g.cg() / 8);
    let (period, step) = (d.period(), d.step());
    for i in 0..g.kh {
        for j in 0..g.kw {
            let (ylo, yhi) = g.rows_valid(i);
            let (xlo, xhi) = g.cols_valid(j);
            if ylo >= yhi || xlo >= xhi {
                continue;
            }
            let t = i * g.kw + j;
            let mut pieces = Vec::new();
            for p in 0..planes {
                let src = (p * hw * nb) as i64;
                if nb <= 8 {
                    let b = t * nb;
                    let dst = d.word(b / 8, p) + (b % 8) as i64;
                    pieces.push(Piece {
                        src,
                        dst,
                        bytes: nb,
                    });
                } else {
                    for q in 0..nb / 8 {
                        let dst = d.word(t * nb / 8 + q, p);
                        pieces.push(Piece {
                            src: src + (q * 8) as i64,
                            dst,
                            bytes: 8,
                        });
                    }
                }
            }
            // Pixels per loop step (a multiple of the period: the pixel offsets repeat).
            let unroll = (8 / pieces.len()).max(1).next_multiple_of(period);
            let len = xhi - xlo;
            // Input pixel of output (0, xlo) for this tap (may be negative: row 0 of
            // the output may be outside the tap's valid rows).
            let x0 = ((i * g.dh) as i64 - g.top as i64) * g.w as i64
                + (xlo * g.sw + j * g.dw) as i64
                - g.left as i64;
            let sstep = (g.sw * nb) as i64;
            kb.for_range(ylo as i64, yhi as i64, 1, |kb, oy| {
                let s = kb.idx(chan, oy, (g.sh * g.w * nb) as i64);
                let soff = x0 * nb as i64;
                let p0 = kb.b.ins().imul_imm_s(oy, g.ow as i64);
                let p0 = kb.b.ins().iadd_imm_s(p0, xlo as i64);
                // The addresses of the first `period` pixels; pixel e is at a[e % period]
                // plus e / period steps.
                let a: Vec<Value> = (0..period.min(len))
                    .map(|e| {
                        let pe = kb.b.ins().iadd_imm_s(p0, e as i64);
                        let ae = d.pixel(kb, pe);
                        kb.b.ins().iadd(dst, ae)
                    })
                    .collect();
                let body = |kb: &mut Kb<'_, '_>, s: Value, a: &[Value], e0: usize, n: usize| {
                    for e in e0..e0 + n {
                        let so = soff + e as i64 * sstep;
                        let doff = (e / period) as i64 * step;
                        for &pc in &pieces {
                            copy(kb, pc, s, so, a[e % period], doff);
                        }
                    }
                };
                let main = len / unroll;
                if main > 1 {
                    kb.for_range(0, main as i64, 1, |kb, m| {
                        let sm = kb.idx(s, m, unroll as i64 * sstep);
                        let am: Vec<Value> = a
                            .iter()
                            .map(|&av| kb.idx(av, m, (unroll / period) as i64 * step))
                            .collect();
                        body(kb, sm, &am, 0, unroll);
                    });
                    let sm = kb.off(s, (main * unroll) as i64 * sstep);
                    let am: Vec<Value> = a
                        .iter()
                        .map(|&av| kb.off(av, (main * unroll / period) as i64 * step))
                        .collect();
                    body(kb, sm, &am, 0, len - main * unroll);
                } else {
                    body(kb, s, &a, 0, len);
                }
            });
        }
    }
}
