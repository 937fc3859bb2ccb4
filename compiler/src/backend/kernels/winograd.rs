//! f32 3x3 convolution by Winograd's minimal filtering F(2x2, 3x3): each 2x2 output tile
//! costs 16 multiply-accumulates per channel pair instead of 36 (2.25x fewer), the rest
//! being additions in the transforms.
//!
//! `Y = Aᵀ [ Σ_c (G g_mc Gᵀ) ⊙ (Bᵀ d_c B) ] A` for every output channel m and 2x2 tile,
//! with `d_c` the 4x4 input tile of channel c (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016):
//!
//! ```text
//! Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]
//! Aᵀ = [1 1 1 0; 0 1 -1 -1]
//! ```
//!
//! The sum over c at each of the 16 transform positions e is one GEMM
//! `M_e[m, t] = Σ_c U_e[m, c] V_e[c, t]` (t = tile), run by the f32 micro-kernel
//! (`gemm.rs`): `U_e` is computed in f64 and packed at compile time as its A matrix, and
//! the input transform writes `V_e` directly in its packed B layout (no im2col, no
//! repacking). Steps, per image:
//!
//! 1. copy the input into a zero-bordered buffer `[C][OH+2][OW+2]` (padding and the
//!    tiles' overhang become reads of zeros, so no step has a bounds test);
//! 2. input transform, four tiles of a tile row at once in f32x4 lanes: the four 4x4
//!    tiles of one buffer row are the even/odd lanes (`shufps`) of four overlapping loads;
//! 3. 16 GEMMs (a run-time loop over e);
//! 4. output transform of four tiles at once, bias, the fused ReLU/clip clamp, and the
//!    2x2 outputs interleaved back into rows (`unpcklps`/`unpckhps`).
//!
//! Applies to stride 1, dilation 1, one group, OH even, OW a multiple of 8 and a tile
//! count that is a multiple of 8 (whole GEMM panels); other 3x3 convolutions take the
//! im2col path. Rounding differs from direct summation (the transforms add and
//! subtract): the backend's f32 tolerance covers it (the differential tests check it).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, F32X4, I8X16};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Value};

use super::conv::{ConvGeom, copy_run, fill_zero};
use super::gemm::{self, AIn, BIn, Epilogue, Gemm, NR};

const _: () = assert!(NR.is_power_of_two() && NR.is_multiple_of(4));
use crate::backend::kb::Kb;

/// Whether the F(2x2, 3x3) kernel handles this convolution.
pub(crate) fn applies(g: &ConvGeom) -> bool {
    let tiles = (g.oh / 2) * (g.ow / 2);
    g.kh == 3
        && g.kw == 3
        && g.sh == 1
        && g.sw == 1
        && g.dh == 1
        && g.dw == 1
        && g.group == 1
        && g.oh >= 2
        && g.oh.is_multiple_of(2)
        && g.ow >= 8
        && g.ow.is_multiple_of(8)
        && tiles.is_multiple_of(NR)
        // Below a few channels the transforms cost more than the multiplies saved.
        && g.c >= 4
        && g.m >= 4
}

fn tiles(g: &ConvGeom) -> usize {
    (g.oh / 2) * (g.ow / 2)
}

/// Rows and columns of the zero-bordered input buffer.
fn padded(g: &ConvGeom) -> (usize, usize) {
    (g.oh + 2, g.ow + 2)
}

fn align64(b: usize) -> usize {
    b.div_ceil(64) * 64
}

/// Bytes between consecutive transform positions' matrices: a cache line more than the
/// matrix, so that the 16 stores (and later loads) of one tile group, one per position,
/// do not all map to one L1 set, as they would at a multiple of 4 KiB.
fn pos_stride(rows: usize, t: usize) -> usize {
    align64(rows * t * 4) + 64
}

/// Workspace bytes: the bordered input, then V (16 x C x T), then M (16 x M x T).
pub(crate) fn workspace(g: &ConvGeom) -> usize {
    let (hp, wp) = padded(g);
    let t = tiles(g);
    align64(g.c * hp * wp * 4) + 16 * pos_stride(g.c, t) + 16 * pos_stride(g.m, t)
}

/// `U_e = (G g Gᵀ)[e]` for every output/input channel pair, each packed as the GEMM's A
/// matrix (`gemm::pack_a`), e = 0..16 one after another.
pub(crate) fn pack_weights(g: &ConvGeom, w: &[f32]) -> Vec<f32> {
    const GM: [[f64; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let (m, c) = (g.m, g.c);
    // u[(mi * c + ci) * 16 + e]
    let mut u = vec![0f32; m * c * 16];
    for mi in 0..m {
        for ci in 0..c {
            let k = &w[(mi * c + ci) * 9..(mi * c + ci) * 9 + 9];
            // t = G k  (4x3)
            let mut t = [[0f64; 3]; 4];
            for (r, tr) in t.iter_mut().enumerate() {
                for (j, tv) in tr.iter_mut().enumerate() {
                    *tv = (0..3).map(|q| GM[r][q] * k[q * 3 + j] as f64).sum();
                }
            }
            // t Gᵀ (4x4)
            for r in 0..4 {
                for s in 0..4 {
                    let v: f64 = (0..3).map(|q| t[r][q] * GM[s][q]).sum();
                    u[(mi * c + ci) * 16 + r * 4 + s] = v as f32;
                }
            }
        }
    }
    let mut out = Vec::with_capacity(u.len());
    for e in 0..16 {
        out.extend(gemm::pack_a(m, c, |i, kk| u[(i * c + kk) * 16 + e]));
    }
    out
}

/// Emits the convolution (batch loop included). `w`: [`pack_weights`]; `bias`: M floats.
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
) {
    let g = *g;
    let (hp, wp) = padded(&g);
    let t = tiles(&g);
    let buf = ws;
    let vbuf = kb.off(ws, align64(g.c * hp * wp * 4) as i64);
    let mbuf = kb.off(vbuf, (16 * pos_stride(g.c, t)) as i64);
    kb.for_range(0, g.n as i64, 1, |kb, n| {
        let xn = kb.idx(x, n, (g.c * g.h * g.w * 4) as i64);
        let on = kb.idx(out, n, (g.m * g.oh * g.ow * 4) as i64);
        border_copy(kb, &g, xn, buf);
        input_transform(kb, &g, buf, vbuf);
        kb.for_range(0, 16, 1, |kb, e| {
            let a = kb.idx(w, e, (g.m * g.c * 4) as i64);
            let b = kb.idx(vbuf, e, pos_stride(g.c, t) as i64);
            let o = kb.idx(mbuf, e, pos_stride(g.m, t) as i64);
            gemm::emit(
                kb,
                &Gemm {
                    m: g.m,
                    n: t,
                    k: g.c,
                    a: AIn::Packed(a),
                    b: BIn::Packed(b),
                    out: o,
                    ldc: t,
                    epi: Epilogue::plain(),
                },
            );
        });
        output_transform(kb, &g, mbuf, bias, on, lo, hi);
    });
}

/// `buf[c][y][x] = x[c][y - top][x - left]`, zero outside the input.
fn border_copy(kb: &mut Kb<'_, '_>, g: &ConvGeom, x: Value, buf: Value) {
    let (hp, wp) = padded(g);
    let g = *g;
    // Interior rows: buffer rows top..top+h (all inside, since hp = h + top + bottom).
    let (r0, r1) = (g.top.min(hp), (g.top + g.h).min(hp));
    let (c0, c1) = (g.left.min(wp), (g.left + g.w).min(wp));
    kb.for_range(0, g.c as i64, 1, |kb, c| {
        let bc = kb.idx(buf, c, (hp * wp * 4) as i64);
        let xc = kb.idx(x, c, (g.h * g.w * 4) as i64);
        fill_zero(kb, bc, 0, r0 * wp);
        fill_zero(kb, bc, (r1 * wp * 4) as i64, (hp - r1) * wp);
        kb.for_range(r0 as i64, r1 as i64, 1, |kb, y| {
            let dst = kb.idx(bc, y, (wp * 4) as i64);
            // Input row y - top.
            let src = kb.idx(xc, y, (g.w * 4) as i64);
            let src = kb.off(src, -((g.top * g.w * 4) as i64));
            fill_zero(kb, dst, 0, c0);
            copy_run(kb, dst, (c0 * 4) as i64, src, 0, c1 - c0, 1);
            fill_zero(kb, dst, (c1 * 4) as i64, wp - c1);
        });
    });
}

fn shuffle(kb: &mut Kb<'_, '_>, a: Value, b: Value, lanes: [u8; 4]) -> Value {
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let ai = kb.b.ins().bitcast(I8X16, le, a);
    let bi = kb.b.ins().bitcast(I8X16, le, b);
    let bytes: Vec<u8> = lanes
        .iter()
        .flat_map(|&l| (0..4).map(move |k| l * 4 + k))
        .collect();
    let mask = kb.b.func.dfg.immediates.push(ConstantData::from(bytes));
    let r = kb.b.ins().shuffle(ai, bi, mask);
    kb.b.ins().bitcast(F32X4, le, r)
}

/// Lanes of `shuffle`: 0..4 pick from the first operand, 4..8 from the second.
const EVENS: [u8; 4] = [0, 2, 4, 6];
const ODDS: [u8; 4] = [1, 3, 5, 7];
const LOWS: [u8; 4] = [0, 4, 1, 5];
const HIGHS: [u8; 4] = [2, 6, 3, 7];

/// `Bᵀ v B` along one axis: `[v0 - v2, v1 + v2, v2 - v1, v1 - v3]`.
fn bt(kb: &mut Kb<'_, '_>, v: [Value; 4]) -> [Value; 4] {
    let i = kb.b.ins();
    let r0 = i.fsub(v[0], v[2]);
    let r1 = kb.b.ins().fadd(v[1], v[2]);
    let r2 = kb.b.ins().fsub(v[2], v[1]);
    let r3 = kb.b.ins().fsub(v[1], v[3]);
    [r0, r1, r2, r3]
}

/// `Aᵀ v` along one axis: `[v0 + v1 + v2, v1 - v2 - v3]`.
fn at(kb: &mut Kb<'_, '_>, v: [Value; 4]) -> [Value; 2] {
    let s = kb.b.ins().fadd(v[0], v[1]);
    let r0 = kb.b.ins().fadd(s, v[2]);
    let d = kb.b.ins().fsub(v[1], v[2]);
    let r1 = kb.b.ins().fsub(d, v[3]);
    [r0, r1]
}

/// Writes `V_e[c, t]` in the packed B layout: tile t of channel c of position e at
/// element `(t & !(NR-1)) * C + c * NR + (t & (NR-1))` of matrix e, which starts
/// `e * pos_stride` bytes into V (full GEMM panels of `NR` tiles; groups of four tiles
/// never straddle two panels since NR is a multiple of 4).
fn input_transform(kb: &mut Kb<'_, '_>, g: &ConvGeom, buf: Value, vbuf: Value) {
    let (hp, wp) = padded(g);
    let g = *g;
    let (th, tw) = (g.oh / 2, g.ow / 2);
    let t = tiles(&g);
    kb.for_range(0, g.c as i64, 1, |kb, c| {
        let bc = kb.idx(buf, c, (hp * wp * 4) as i64);
        let vc = kb.idx(vbuf, c, (NR * 4) as i64);
        kb.for_range(0, th as i64, 1, |kb, ty| {
            // Buffer row 2*ty.
            let row = kb.idx(bc, ty, (2 * wp * 4) as i64);
            // First tile of the row: t0 = ty * tw.
            let t0 = kb.b.ins().imul_imm_s(ty, tw as i64);
            for gx in 0..tw / 4 {
                // Tiles t0 + 4gx .. +4: panel (t & !7), lane offset (t & 7).
                let tt = kb.b.ins().iadd_imm_s(t0, (4 * gx) as i64);
                let hi = kb.b.ins().band_imm_s(tt, !(NR as i64 - 1));
                let lo = kb.b.ins().band_imm_s(tt, NR as i64 - 1);
                let base = kb.idx(vc, hi, (g.c * 4) as i64);
                let base = kb.idx(base, lo, 4);
                let mut d = [[row; 4]; 4];
                for (i, di) in d.iter_mut().enumerate() {
                    let off = ((i * wp + 8 * gx) * 4) as i64;
                    let a = kb.load(F32X4, row, off);
                    let b = kb.load(F32X4, row, off + 16);
                    let c2 = kb.load(F32X4, row, off + 8);
                    let d2 = kb.load(F32X4, row, off + 24);
                    let e0 = shuffle(kb, a, b, EVENS);
                    let o0 = shuffle(kb, a, b, ODDS);
                    let e1 = shuffle(kb, c2, d2, EVENS);
                    let o1 = shuffle(kb, c2, d2, ODDS);
                    *di = bt(kb, [e0, o0, e1, o1]);
                }
                for j in 0..4 {
                    let col = bt(kb, d.map(|row| row[j]));
                    for (i, v) in col.into_iter().enumerate() {
                        let e = i * 4 + j;
                        kb.store(v, base, (e * pos_stride(g.c, t)) as i64);
                    }
                }
            }
        });
    });
}

/// `Y = Aᵀ M A` per output channel and tile, bias, clamp, interleaved into rows.
fn output_transform(
    kb: &mut Kb<'_, '_>,
    g: &ConvGeom,
    mbuf: Value,
    bias: Option<Value>,
    out: Value,
    lo: Option<f32>,
    hi: Option<f32>,
) {
    let g = *g;
    let (th, tw) = (g.oh / 2, g.ow / 2);
    let t = tiles(&g);
    kb.for_range(0, g.m as i64, 1, |kb, m| {
        let mm = kb.idx(mbuf, m, (t * 4) as i64);
        let om = kb.idx(out, m, (g.oh * g.ow * 4) as i64);
        let bv = bias.map(|b| {
            let s = kb.idx(b, m, 4);
            let s = kb.load(F32, s, 0);
            kb.b.ins().splat(F32X4, s)
        });
        let lov = lo.map(|v| kb.fconst(F32X4, v));
        let hiv = hi.map(|v| kb.fconst(F32X4, v));
        kb.for_range(0, th as i64, 1, |kb, ty| {
            let mt = kb.idx(mm, ty, (tw * 4) as i64);
            let orow = kb.idx(om, ty, (2 * g.ow * 4) as i64);
            for gx in 0..tw / 4 {
                // s[a][j] = (Aᵀ M)[a][j], column j at a time.
                let cols: [[Value; 2]; 4] = std::array::from_fn(|j| {
                    let col: [Value; 4] = std::array::from_fn(|i| {
                        let e = i * 4 + j;
                        kb.load(F32X4, mt, (e * pos_stride(g.m, t) + 16 * gx) as i64)
                    });
                    at(kb, col)
                });
                let s: [[Value; 4]; 2] = std::array::from_fn(|a| cols.map(|c| c[a]));
                for (a, sa) in s.iter().enumerate() {
                    let mut y = at(kb, *sa);
                    for v in y.iter_mut() {
                        if let Some(b) = bv {
                            *v = kb.b.ins().fadd(*v, b);
                        }
                        // As the GEMM epilogue: `v < lo ? lo : v`, then `v > hi ? hi : v`.
                        if let Some(l) = lov {
                            *v = kb.fselect(F32X4, FloatCC::LessThan, *v, l, l, *v);
                        }
                        if let Some(h) = hiv {
                            *v = kb.fselect(F32X4, FloatCC::GreaterThan, *v, h, h, *v);
                        }
                    }
                    let p0 = shuffle(kb, y[0], y[1], LOWS);
                    let p1 = shuffle(kb, y[0], y[1], HIGHS);
                    let off = ((a * g.ow + 8 * gx) * 4) as i64;
                    kb.store(p0, orow, off);
                    kb.store(p1, orow, off + 16);
                }
            }
        });
    });
}
