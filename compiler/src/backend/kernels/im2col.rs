//! im2col of the integer convolution: `x - zx` of one group's patches, as i16, into
//! the `[Kp/2][Np][2]` pair workspace of the `pmaddwd` GEMM (`dot/pmaddwd.rs`).
//!
//! Row `kk = (c*kh + i)*kw + j` of the patch matrix and row `kk + 1` share pair
//! `kk/2`: the i16 of pixel `p` of row `kk` is at `((kk/2)*Np + p)*2 + kk%2`. The two
//! taps of a pair are written together: for a chunk of 8 (or 4) output pixels of one
//! output row, each tap's codes are loaded as one vector (stride 1: `uload8x8`/
//! `sload8x8`; stride 2: 16 bytes keeping the even or odd bytes), widened to i16, the
//! zero point subtracted, and the two taps interleaved (`punpcklwd`/`punpckhwd`) into
//! 16-byte stores. When `kh*kw` is odd a pair can span two channels, so channels go
//! in blocks of two (and a last odd channel pairs its last tap with the zero row).
//!
//! Everything is decided at compile time from the geometry: which output rows and
//! columns each tap reaches (padding taps are written as zeros, so the workspace needs
//! no separate zero fill), and for each chunk how each tap's vector is made: a plain
//! load when all its lanes are inside the input, else a load moved to the valid lanes
//! and shifted into place (`palignr`) and/or masked, provided the load stays inside
//! the channel's plane for every row it serves (a vector read may cross into the next
//! or previous row, never out of the plane); otherwise the chunk is scalar. Other
//! strides, narrow outputs and non-byte storage take the scalar path.

use cranelift_codegen::ir::types::{I8X16, I16, I16X8, I32};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Value};

use super::conv::{self, ConvGeom};
use crate::backend::kb::{Kb, MF};
use crate::backend::storage::Store;

/// One tap of the window: channel within the block, window row and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tap {
    dc: usize,
    i: usize,
    j: usize,
}

/// How one tap's lanes of a vector chunk are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    /// Every lane is padding.
    Zero,
    /// Load 8 codes, loaded lane `t` being the source of pixel `ox0 + s0 + t` (stride 2
    /// and `odd`: the 16 bytes start one code early and the odd bytes are kept), then
    /// result lane `l` = loaded lane `l - s0` (0 outside), then lanes outside
    /// `keep` zeroed.
    Load {
        s0: i64,
        odd: bool,
        keep: Option<(usize, usize)>,
    },
}

/// One piece of an output row of one pair.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// A vector chunk at pixel `ox0`.
    Chunk { ox0: usize, srcs: [Src; 2] },
    /// `count` chunks at `ox0`, `ox0 + W`, ... with the same sources (a run-time loop).
    Run {
        ox0: usize,
        count: usize,
        srcs: [Src; 2],
    },
    /// Pixels `lo..hi` one by one.
    Scalar { lo: usize, hi: usize },
}

/// Chunk counts per row above which runs of equal chunks become loops.
const UNROLL_CHUNKS: usize = 8;

struct Im2col {
    g: ConvGeom,
    st: Store,
    zx: i64,
    /// Padded pixel count (the workspace's row length).
    np: usize,
    /// Pixels per vector chunk: 8, 4, or 0 (scalar only).
    cw: usize,
    shuffle: bool,
}

/// Writes `x - zx` of one group's patches into the `[Kp/2][Np][2]` i16 workspace `ws`
/// (`np`: pixels rounded up to the GEMM's column padding; padding columns and the odd
/// K row are written as zeros).
pub(crate) fn im2col_pairs(
    kb: &mut Kb<'_, '_>,
    g: &ConvGeom,
    np: usize,
    zx: i64,
    st: Store,
    x: Value,
    ws: Value,
) {
    let eb = st.bytes();
    let cx = Im2col::new(g, np, zx, st, kb.feat.shuffle);
    let (cb, full, tail) = pairs(g);
    let pair_bytes = (np * 4) as i64;
    let blk_x = (cb * g.h * g.w * eb) as i64;
    let blk_ws = full.len() as i64 * pair_bytes;
    let nblk = g.cg() / cb;
    kb.for_range(0, nblk as i64, 1, |kb, b| {
        let xb = kb.idx(x, b, blk_x);
        let wb = kb.idx(ws, b, blk_ws);
        for (q, &p) in full.iter().enumerate() {
            let d = kb.off(wb, q as i64 * pair_bytes);
            cx.pair(kb, p, xb, d);
        }
    });
    if !tail.is_empty() {
        let xb = kb.off(x, nblk as i64 * blk_x);
        let wb = kb.off(ws, nblk as i64 * blk_ws);
        for (q, &p) in tail.iter().enumerate() {
            let d = kb.off(wb, q as i64 * pair_bytes);
            cx.pair(kb, p, xb, d);
        }
    }
}

type Pair = (Tap, Option<Tap>);

/// Channels per block (2 when `kh*kw` is odd, so that pairs never straddle blocks),
/// the pairs of a block, and the pairs of the last, partial block (one channel of an
/// odd count when `kh*kw` is odd: its last tap pairs with the zero row, K odd).
fn pairs(g: &ConvGeom) -> (usize, Vec<Pair>, Vec<Pair>) {
    let t = g.kh * g.kw;
    let cb = if t.is_multiple_of(2) { 1 } else { 2 };
    let taps = |n: usize| -> Vec<Pair> {
        let v: Vec<Tap> = (0..n * t)
            .map(|k| Tap {
                dc: k / t,
                i: (k % t) / g.kw,
                j: k % g.kw,
            })
            .collect();
        v.chunks(2).map(|c| (c[0], c.get(1).copied())).collect()
    };
    let tail = if !g.cg().is_multiple_of(cb) {
        taps(1)
    } else {
        vec![]
    };
    (cb, taps(cb), tail)
}

fn le() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// `shuffle` of two i16x8 (as bytes) with byte mask `m` (0..16: `a`, 16..32: `b`).
fn shuffle16(kb: &mut Kb<'_, '_>, a: Value, b: Value, m: [u8; 16]) -> Value {
    let ai = kb.b.ins().bitcast(I8X16, le(), a);
    let bi = kb.b.ins().bitcast(I8X16, le(), b);
    let mask =
        kb.b.func
            .dfg
            .immediates
            .push(ConstantData::from(m.to_vec()));
    let r = kb.b.ins().shuffle(ai, bi, mask);
    kb.b.ins().bitcast(I16X8, le(), r)
}

/// Lanes `half*4 .. half*4 + 4` of `a` and `b` interleaved: `punpck{l,h}wd`.
fn interleave(kb: &mut Kb<'_, '_>, a: Value, b: Value, half: usize) -> Value {
    let mut m = [0u8; 16];
    for l in 0..4 {
        let s = (2 * (half * 4 + l)) as u8;
        m[4 * l..4 * l + 4].copy_from_slice(&[s, s + 1, 16 + s, 17 + s]);
    }
    shuffle16(kb, a, b, m)
}

fn splat16(kb: &mut Kb<'_, '_>, v: i64) -> Value {
    let s = kb.b.ins().iconst(I16, v);
    kb.b.ins().splat(I16X8, s)
}

impl Im2col {
    fn new(g: &ConvGeom, np: usize, zx: i64, st: Store, shuffle: bool) -> Im2col {
        let vec_ok = st.bytes() == 1 && (g.sw == 1 || g.sw == 2);
        let cw = match g.ow {
            _ if !vec_ok => 0,
            8.. => 8,
            4.. => 4,
            _ => 0,
        };
        Im2col {
            g: *g,
            st,
            zx,
            np,
            cw,
            shuffle,
        }
    }

    fn plane(&self) -> i64 {
        (self.g.h * self.g.w) as i64
    }

    /// Offset (in codes) of tap `t`'s source of pixel 0 from the output row's base
    /// `x_block + oy*sh*w`.
    fn tap_base(&self, t: Tap) -> i64 {
        let g = &self.g;
        t.dc as i64 * self.plane()
            + ((t.i * g.dh) as i64 - g.top as i64) * g.w as i64
            + (t.j * g.dw) as i64
            - g.left as i64
    }

    /// Input row of tap `t` for output row `oy` (inside the input by the caller).
    fn in_row(&self, t: Tap, oy: usize) -> i64 {
        (oy * self.g.sh + t.i * self.g.dh) as i64 - self.g.top as i64
    }

    fn rows(&self, t: Tap) -> (usize, usize) {
        self.g.rows_valid(t.i)
    }

    fn cols(&self, t: Tap) -> (usize, usize) {
        self.g.cols_valid(t.j)
    }

    /// Emits pair `(a, b)` (`b` None: the zero row) of one channel block: source block
    /// `xb`, pair row `d`.
    /// The output rows `y0..y1` of pair `(a, b)` in which each tap is inside the input
    /// (Some) or padding (None) throughout.
    fn classes(&self, (a, b): Pair) -> Vec<(usize, usize, [Option<Tap>; 2])> {
        let taps = [Some(a), b];
        let mut ys = vec![0, self.g.oh];
        for t in taps.iter().flatten() {
            let (lo, hi) = self.rows(*t);
            if lo < hi {
                ys.extend([lo, hi]);
            }
        }
        ys.sort_unstable();
        ys.dedup();
        ys.windows(2)
            .map(|w| {
                let (y0, y1) = (w[0], w[1]);
                let valid = taps.map(|t| {
                    t.filter(|&t| {
                        let (lo, hi) = self.rows(t);
                        lo < hi && lo <= y0 && y1 <= hi
                    })
                });
                (y0, y1, valid)
            })
            .collect()
    }

    fn pair(&self, kb: &mut Kb<'_, '_>, p: Pair, xb: Value, d: Value) {
        let g = self.g;
        let row_bytes = (g.ow * 4) as i64;
        for (y0, y1, valid) in self.classes(p) {
            if valid.iter().all(Option::is_none) {
                conv::fill_zero(kb, d, y0 as i64 * row_bytes, (y1 - y0) * g.ow);
                continue;
            }
            let pieces = self.plan_row(valid, y0, y1);
            let eb = self.st.bytes() as i64;
            kb.for_range(y0 as i64, y1 as i64, 1, |kb, oy| {
                let xrow = kb.idx(xb, oy, (g.sh * g.w) as i64 * eb);
                let drow = kb.idx(d, oy, row_bytes);
                self.emit_row(kb, &pieces, valid, xrow, drow);
            });
        }
        let npix = g.npix();
        if self.np > npix {
            conv::fill_zero(kb, d, (npix * 4) as i64, self.np - npix);
        }
    }

    /// The pieces of every output row `y0..y1` (where each tap is valid or not as
    /// `valid` says).
    fn plan_row(&self, valid: [Option<Tap>; 2], y0: usize, y1: usize) -> Vec<Piece> {
        let (ow, cw) = (self.g.ow, self.cw);
        if cw == 0 {
            return vec![Piece::Scalar { lo: 0, hi: ow }];
        }
        let mut starts: Vec<usize> = (0..ow / cw).map(|k| k * cw).collect();
        if ow % cw != 0 {
            starts.push(ow - cw);
        }
        let plans: Vec<Option<[Src; 2]>> = starts
            .iter()
            .map(|&ox0| {
                let a = self.plan_src(valid[0], y0, y1, ox0)?;
                let b = self.plan_src(valid[1], y0, y1, ox0)?;
                Some([a, b])
            })
            .collect();
        let mut out = Vec::new();
        let mut k = 0;
        while k < starts.len() {
            let ox0 = starts[k];
            let Some(srcs) = plans[k] else {
                out.push(Piece::Scalar {
                    lo: ox0,
                    hi: ox0 + cw,
                });
                k += 1;
                continue;
            };
            // A run of equal chunks at regular positions.
            let mut e = k + 1;
            while e < starts.len() && plans[e] == plans[k] && starts[e] == starts[e - 1] + cw {
                e += 1;
            }
            if starts.len() > UNROLL_CHUNKS && e - k >= 3 {
                out.push(Piece::Run {
                    ox0,
                    count: e - k,
                    srcs,
                });
                k = e;
            } else {
                out.push(Piece::Chunk { ox0, srcs });
                k += 1;
            }
        }
        out
    }

    /// How tap `t` (None: padding in these rows) fills the chunk at `ox0` for rows
    /// `y0..y1`; None if no vector load stays inside the plane.
    fn plan_src(&self, t: Option<Tap>, y0: usize, y1: usize, ox0: usize) -> Option<Src> {
        let Some(t) = t else {
            return Some(Src::Zero);
        };
        let g = &self.g;
        let cw = self.cw as i64;
        let (xl, xh) = self.cols(t);
        let l0 = (xl as i64 - ox0 as i64).clamp(0, cw);
        let l1 = (xh as i64 - ox0 as i64).clamp(0, cw);
        if l0 >= l1 {
            return Some(Src::Zero);
        }
        let (iy0, iy1) = (self.in_row(t, y0), self.in_row(t, y1 - 1));
        let (w, sw) = (g.w as i64, g.sw as i64);
        let read = if g.sw == 1 { 8 } else { 16 };
        let mut best: Option<(u32, Src)> = None;
        let mut s0s = vec![0, l0, l1 - 8];
        s0s.dedup();
        for s0 in s0s {
            if s0 != 0 && !self.shuffle {
                continue;
            }
            for odd in [false, true] {
                if odd && g.sw != 2 {
                    continue;
                }
                // In-row position of the first code read.
                let p = (ox0 as i64 + s0) * sw + (t.j * g.dw) as i64 - g.left as i64 - odd as i64;
                if iy0 * w + p < 0 || iy1 * w + p + read > self.plane() {
                    continue;
                }
                let garbage = (0..cw).any(|l| (l < l0 || l >= l1) && (0..8).contains(&(l - s0)));
                let keep = garbage.then_some((l0 as usize, l1 as usize));
                let cost = (s0 != 0) as u32 + garbage as u32;
                if best.is_none_or(|(c, _)| cost < c) {
                    best = Some((cost, Src::Load { s0, odd, keep }));
                }
            }
        }
        best.map(|(_, s)| s)
    }

    fn emit_row(
        &self,
        kb: &mut Kb<'_, '_>,
        pieces: &[Piece],
        valid: [Option<Tap>; 2],
        xrow: Value,
        drow: Value,
    ) {
        for p in pieces {
            match *p {
                Piece::Chunk { ox0, srcs } => self.chunk(kb, xrow, drow, ox0, srcs, valid),
                Piece::Run { ox0, count, srcs } => {
                    let (cw, sw) = (self.cw as i64, self.g.sw as i64);
                    kb.for_range(0, count as i64, 1, |kb, k| {
                        let xr = kb.idx(xrow, k, cw * sw);
                        let dr = kb.idx(drow, k, cw * 4);
                        self.chunk(kb, xr, dr, ox0, srcs, valid);
                    });
                }
                Piece::Scalar { lo, hi } => self.scalar(kb, xrow, drow, lo, hi, valid),
            }
        }
    }

    /// One vector chunk: pixels `ox0..ox0 + cw` of the row at `xrow`/`drow`.
    fn chunk(
        &self,
        kb: &mut Kb<'_, '_>,
        xrow: Value,
        drow: Value,
        ox0: usize,
        srcs: [Src; 2],
        taps: [Option<Tap>; 2],
    ) {
        let off = (ox0 * 4) as i64;
        if srcs == [Src::Zero; 2] {
            let z = splat16(kb, 0);
            for h in 0..self.cw / 4 {
                kb.store(z, drow, off + 16 * h as i64);
            }
            return;
        }
        let v: Vec<Value> = (0..2)
            .map(|k| match (srcs[k], taps[k]) {
                (Src::Load { s0, odd, keep }, Some(t)) => {
                    self.load_src(kb, xrow, t, ox0, s0, odd, keep)
                }
                _ => splat16(kb, 0),
            })
            .collect();
        for h in 0..self.cw / 4 {
            let r = interleave(kb, v[0], v[1], h);
            kb.store(r, drow, off + 16 * h as i64);
        }
    }

    /// Tap `t`'s i16x8 `x - zx` of the chunk at `ox0` (see [`Src::Load`]).
    #[allow(clippy::too_many_arguments, reason = "one Src::Load")]
    fn load_src(
        &self,
        kb: &mut Kb<'_, '_>,
        xrow: Value,
        t: Tap,
        ox0: usize,
        s0: i64,
        odd: bool,
        keep: Option<(usize, usize)>,
    ) -> Value {
        let g = &self.g;
        let signed = self.st == Store::I8;
        let off = self.tap_base(t) + (ox0 as i64 + s0) * g.sw as i64 - odd as i64;
        let o = off as i32;
        let mut v = if g.sw == 1 {
            if signed {
                kb.b.ins().sload8x8(MF, xrow, o)
            } else {
                kb.b.ins().uload8x8(MF, xrow, o)
            }
        } else {
            let raw = kb.load(I16X8, xrow, off);
            let eight = kb.b.ins().iconst(I32, 8);
            match (odd, signed) {
                (true, true) => kb.b.ins().sshr(raw, eight),
                (true, false) => kb.b.ins().ushr(raw, eight),
                (false, true) => {
                    let s = kb.b.ins().ishl(raw, eight);
                    kb.b.ins().sshr(s, eight)
                }
                (false, false) => {
                    let m = splat16(kb, 0xff);
                    kb.b.ins().band(raw, m)
                }
            }
        };
        if self.zx != 0 {
            let z = splat16(kb, self.zx);
            v = kb.b.ins().isub(v, z);
        }
        if s0 != 0 {
            let z = splat16(kb, 0);
            let mut m = [0u8; 16];
            if s0 > 0 {
                // Up by s0 lanes, zeros below: bytes 16 - 2*s0 .. of (zero, v).
                for (k, b) in m.iter_mut().enumerate() {
                    *b = (16 - 2 * s0 + k as i64) as u8;
                }
                v = shuffle16(kb, z, v, m);
            } else {
                // Down by -s0 lanes, zeros above: bytes -2*s0 .. of (v, zero).
                for (k, b) in m.iter_mut().enumerate() {
                    *b = (-2 * s0 + k as i64) as u8;
                }
                v = shuffle16(kb, v, z, m);
            }
        }
        if let Some((l0, l1)) = keep {
            let bytes: Vec<u8> = (0..8)
                .flat_map(|l| {
                    let b = if (l0..l1).contains(&l) { 0xff } else { 0 };
                    [b, b]
                })
                .collect();
            let c = kb.b.func.dfg.constants.insert(ConstantData::from(bytes));
            let m = kb.b.ins().vconst(I16X8, c);
            v = kb.b.ins().band(v, m);
        }
        v
    }

    /// Pixels `lo..hi` of the row one by one (runs of more than 8 equal pixels loop).
    fn scalar(
        &self,
        kb: &mut Kb<'_, '_>,
        xrow: Value,
        drow: Value,
        lo: usize,
        hi: usize,
        taps: [Option<Tap>; 2],
    ) {
        let mut xs = vec![lo, hi];
        for t in taps.iter().flatten() {
            let (a, b) = self.cols(*t);
            xs.extend([a.clamp(lo, hi), b.clamp(lo, hi)]);
        }
        xs.sort_unstable();
        xs.dedup();
        let eb = self.st.bytes() as i64;
        let sw = self.g.sw as i64;
        for w in xs.windows(2) {
            let (s, e) = (w[0], w[1]);
            let on = taps.map(|t| {
                t.filter(|&t| {
                    let (a, b) = self.cols(t);
                    a <= s && e <= b
                })
            });
            if on.iter().all(Option::is_none) {
                conv::fill_zero(kb, drow, (s * 4) as i64, e - s);
                continue;
            }
            if e - s > 8 {
                kb.for_range(s as i64, e as i64, 1, |kb, ox| {
                    let xr = kb.idx(xrow, ox, sw * eb);
                    let dr = kb.idx(drow, ox, 4);
                    self.pixel(kb, xr, dr, 0, on);
                });
            } else {
                for ox in s..e {
                    self.pixel(kb, xrow, drow, ox, on);
                }
            }
        }
    }

    /// The pair word of pixel `ox` (taps None are padding).
    fn pixel(
        &self,
        kb: &mut Kb<'_, '_>,
        xrow: Value,
        drow: Value,
        ox: usize,
        taps: [Option<Tap>; 2],
    ) {
        let eb = self.st.bytes() as i64;
        let v = taps.map(|t| {
            t.map(|t| {
                let off = (self.tap_base(t) + (ox * self.g.sw) as i64) * eb;
                let c = kb.load_i32(self.st, xrow, off);
                kb.b.ins().iadd_imm_s(c, -self.zx)
            })
        });
        let lo = v[0].map(|a| kb.b.ins().band_imm_s(a, 0xffff));
        let hi = v[1].map(|b| kb.b.ins().ishl_imm_u(b, 16));
        let word = match (lo, hi) {
            (Some(l), Some(h)) => kb.b.ins().bor(l, h),
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => kb.b.ins().iconst(I32, 0),
        };
        kb.store(word, drow, (ox * 4) as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays every vector chunk's plan on a plane holding `pos + 1` at in-plane
    /// position `pos` (so that a lane read from a wrong place, or left unmasked, is not
    /// 0): each load must stay inside the plane for every row it serves, each lane
    /// must be the tap's code or 0 for padding, and the pieces must cover every pixel.
    fn replay(g: &ConvGeom, shuffle: bool) -> Result<(), String> {
        let cx = Im2col::new(g, g.npix().div_ceil(4) * 4, 0, Store::U8, shuffle);
        let plane = (g.h * g.w) as i64;
        let (w, sw, cw) = (g.w as i64, g.sw as i64, cx.cw);
        let (_, full, tail) = pairs(g);
        for p in full.iter().chain(&tail) {
            let mut rows = vec![false; g.oh];
            for (y0, y1, valid) in cx.classes(*p) {
                rows[y0..y1].iter_mut().for_each(|r| *r = true);
                if valid.iter().all(Option::is_none) {
                    continue;
                }
                let mut cols = vec![false; g.ow];
                let mut chunks = Vec::new();
                for piece in cx.plan_row(valid, y0, y1) {
                    match piece {
                        Piece::Chunk { ox0, srcs } => chunks.push((ox0, srcs)),
                        Piece::Run { ox0, count, srcs } => {
                            chunks.extend((0..count).map(|k| (ox0 + k * cw, srcs)))
                        }
                        Piece::Scalar { lo, hi } => cols[lo..hi].iter_mut().for_each(|c| *c = true),
                    }
                }
                for (ox0, srcs) in chunks {
                    if ox0 + cw > g.ow {
                        return Err(format!("chunk at {ox0} past the row"));
                    }
                    cols[ox0..ox0 + cw].iter_mut().for_each(|c| *c = true);
                    for oy in y0..y1 {
                        for (k, src) in srcs.iter().enumerate() {
                            let want: Vec<i64> = (0..cw)
                                .map(|l| {
                                    valid[k].map_or(0, |t| {
                                        let ix =
                                            ((ox0 + l) * g.sw + t.j * g.dw) as i64 - g.left as i64;
                                        if (0..w).contains(&ix) {
                                            cx.in_row(t, oy) * w + ix + 1
                                        } else {
                                            0
                                        }
                                    })
                                })
                                .collect();
                            let got: Vec<i64> = match (*src, valid[k]) {
                                (Src::Zero, _) => vec![0; cw],
                                (Src::Load { s0, odd, keep }, Some(t)) => {
                                    let start = cx.in_row(t, oy) * w
                                        + (ox0 as i64 + s0) * sw
                                        + (t.j * g.dw) as i64
                                        - g.left as i64
                                        - odd as i64;
                                    let read = if g.sw == 1 { 8 } else { 16 };
                                    if start < 0 || start + read > plane {
                                        return Err(format!(
                                            "row {oy} chunk {ox0} tap {t:?}: reads \
                                             {start}..{} of {plane}",
                                            start + read
                                        ));
                                    }
                                    (0..cw as i64)
                                        .map(|l| {
                                            let kept = keep.is_none_or(|(a, b)| {
                                                (a as i64..b as i64).contains(&l)
                                            });
                                            if (0..8).contains(&(l - s0)) && kept {
                                                start + (l - s0) * sw + odd as i64 + 1
                                            } else {
                                                0
                                            }
                                        })
                                        .collect()
                                }
                                (Src::Load { .. }, None) => return Err("load of padding".into()),
                            };
                            if got != want {
                                return Err(format!(
                                    "row {oy} chunk {ox0} {src:?}: {got:?} != {want:?}"
                                ));
                            }
                        }
                    }
                }
                if let Some(ox) = cols.iter().position(|c| !c) {
                    return Err(format!("rows {y0}..{y1}: pixel {ox} not written"));
                }
            }
            if let Some(oy) = rows.iter().position(|r| !r) {
                return Err(format!("row {oy} not written"));
            }
        }
        Ok(())
    }

    #[test]
    fn plans_stay_in_bounds_and_are_exact() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |lo: usize, hi: usize| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (s % (hi - lo + 1) as u64) as usize
        };
        let mut vector = 0;
        for _ in 0..4000 {
            let (h, w) = (rnd(1, 12), rnd(1, 90));
            let (kh, kw) = (rnd(1, 4), rnd(1, 4));
            let (sh, sw) = (rnd(1, 3), rnd(1, 3));
            let (dh, dw) = (rnd(1, 2), rnd(1, 2));
            let pads = [rnd(0, 3), rnd(0, 3), rnd(0, 3), rnd(0, 3)];
            let (eh, ew) = (dh * (kh - 1) + 1, dw * (kw - 1) + 1);
            if h + pads[0] + pads[2] < eh || w + pads[1] + pads[3] < ew {
                continue;
            }
            let cg = rnd(1, 3);
            let g = ConvGeom {
                n: 1,
                c: cg,
                h,
                w,
                m: 1,
                kh,
                kw,
                oh: (h + pads[0] + pads[2] - eh) / sh + 1,
                ow: (w + pads[1] + pads[3] - ew) / sw + 1,
                sh,
                sw,
                dh,
                dw,
                top: pads[0],
                left: pads[1],
                group: 1,
            };
            for shuffle in [true, false] {
                replay(&g, shuffle).unwrap_or_else(|e| panic!("{g:?} shuffle {shuffle}: {e}"));
            }
            vector += (Im2col::new(&g, 0, 0, Store::U8, true).cw > 0) as usize;
        }
        assert!(vector > 1000, "{vector} geometries took the vector path");
    }
}
