//! f32 3x3 convolution by Winograd's minimal filtering F(4x4, 3x3) or F(2x2, 3x3): an
//! r x r output tile costs (r+2)^2 multiply-accumulates per channel pair instead of
//! 9 r^2 (4x fewer for r = 4, 2.25x for r = 2), the rest being additions and constant
//! multiplies in the transforms.
//!
//! `Y = Aᵀ [ Σ_c (G g_mc Gᵀ) ⊙ (Bᵀ d_c B) ] A` for every output channel m and tile, with
//! `d_c` the (r+2) x (r+2) input tile of channel c (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016):
//!
//! ```text
//! F(2,3): Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]
//!         Aᵀ = [1 1 1 0; 0 1 -1 -1]
//! F(4,3): Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0;
//!               0 2 -1 -2 1 0; 0 4 0 -5 0 1]
//!         G  = [¼ 0 0; -⅙ -⅙ -⅙; -⅙ ⅙ -⅙; 1/24 1/12 ⅙; 1/24 -1/12 ⅙; 0 0 1]
//!         Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
//! ```
//!
//! The sum over c at each of the (r+2)^2 transform positions e is one GEMM
//! `M_e[m, t] = Σ_c U_e[m, c] V_e[c, t]` (t = tile), run by the f32 micro-kernel
//! (`gemm.rs`): `U_e` is computed in f64 and packed at compile time as its A matrix, and
//! the input transform writes `V_e` directly in its packed B layout (no im2col, no
//! repacking). Steps, per image:
//!
//! 1. copy the input into a zero-bordered buffer (padding and the tiles' overhang
//!    become reads of zeros, so no step has a bounds test);
//! 2. input transform, four tiles of a tile row at once in f32x4 lanes. F(2,3): the
//!    four 4x4 tiles of one buffer row are the even/odd lanes (`shufps`) of four
//!    overlapping loads. F(4,3): five loads of a buffer row, transposed (`unpcklps`,
//!    `punpcklqdq`, ...) into the six tile columns; the vertical transform runs first,
//!    on the loaded rows, one output row at a time (reloading from L1 keeps the live
//!    values within the 16 xmm registers);
//! 3. one GEMM per position (a run-time loop over e);
//! 4. output transform of four tiles at once, bias, the fused ReLU/clip clamp, and the
//!    tiles' outputs interleaved back into rows.
//!
//! F(4,3) applies to stride 1, dilation 1, one group, OH a multiple of 4, OW of 16;
//! F(2,3) to OH even, OW a multiple of 8; both need a tile count filling whole GEMM
//! panels. Other 3x3 convolutions take the im2col path. Rounding differs from direct
//! summation (the transforms add, subtract and scale by up to 8): the backend's f32
//! tolerance covers it (the differential tests check it).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, F32X4, I8X16};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Value};

use super::super::conv::{ConvGeom, copy_run, fill_zero};
use super::super::fma::{self, AKind, Bias, FmaGemm, FmaIsa, FmaSpec};
use super::gemm::{self, AIn, BIn, Epilogue, Gemm, NR};
use crate::backend::kb::Kb;

const _: () = assert!(NR.is_power_of_two() && NR.is_multiple_of(4));

/// Output tile size r of F(r x r, 3x3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    F2,
    F4,
}

impl Variant {
    fn r(self) -> usize {
        match self {
            Variant::F2 => 2,
            Variant::F4 => 4,
        }
    }
    /// Input tile size, r + 2.
    fn a(self) -> usize {
        self.r() + 2
    }
    /// Transform positions, (r + 2)^2.
    fn positions(self) -> usize {
        self.a() * self.a()
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            Variant::F2 => "winograd2x2",
            Variant::F4 => "winograd4x4",
        }
    }
}

/// The Winograd variant for this convolution, if one applies (F(4,3) preferred).
pub(crate) fn variant(g: &ConvGeom) -> Option<Variant> {
    let common = g.kh == 3
        && g.kw == 3
        && g.sh == 1
        && g.sw == 1
        && g.dh == 1
        && g.dw == 1
        && g.group == 1
        // Below a few channels the transforms cost more than the multiplies saved.
        && g.c >= 4
        && g.m >= 4;
    if !common {
        return None;
    }
    [Variant::F4, Variant::F2].into_iter().find(|&v| {
        let r = v.r();
        g.oh >= r
            && g.oh.is_multiple_of(r)
            && g.ow >= 4 * r
            && g.ow.is_multiple_of(4 * r)
            && ((g.oh / r) * (g.ow / r)).is_multiple_of(NR)
    })
}

/// Whether a Winograd kernel handles this convolution.
pub(crate) fn applies(g: &ConvGeom) -> bool {
    variant(g).is_some()
}

/// The wide tile of the per-position GEMMs, given the tier's: when the tiles fill whole
/// vectors (V's panels are then one vector wide), else the 128-bit kernel.
pub(crate) fn wide(g: &ConvGeom, wide: Option<FmaIsa>) -> Option<FmaIsa> {
    let v = variant(g)?;
    wide.filter(|isa| tiles(g, v).is_multiple_of(isa.lanes()))
}

/// The GEMM of one transform position with the wide tile `isa`.
pub(crate) fn wide_spec(g: &ConvGeom, isa: FmaIsa) -> FmaSpec {
    let v = variant(g).expect("wide_spec is only called when a variant applies");
    let t = tiles(g, v);
    FmaSpec {
        isa,
        m: g.m,
        n: t,
        k: g.c,
        ldc: t,
        a: AKind::Packed,
        bias: Bias::None,
        lo: None,
        hi: None,
        silu: false,
        b_row: None,
    }
}

fn tiles(g: &ConvGeom, v: Variant) -> usize {
    (g.oh / v.r()) * (g.ow / v.r())
}

/// Rows and columns of the zero-bordered input buffer: tile rows reach row OH + 1;
/// F(4,3)'s five loads per row reach column OW + 3.
fn padded(g: &ConvGeom, v: Variant) -> (usize, usize) {
    match v {
        Variant::F2 => (g.oh + 2, g.ow + 2),
        Variant::F4 => (g.oh + 2, g.ow + 4),
    }
}

fn align64(b: usize) -> usize {
    b.div_ceil(64) * 64
}

/// Bytes between consecutive transform positions' matrices: a cache line more than the
/// matrix, so that the stores (and later loads) of one tile group, one per position, do
/// not all map to one L1 set, as they would at a multiple of 4 KiB.
fn pos_stride(rows: usize, t: usize) -> usize {
    align64(rows * t * 4) + 64
}

/// Workspace bytes: the bordered input, then V (P x C x T), then M (P x M x T).
pub(crate) fn workspace(g: &ConvGeom) -> usize {
    let Some(v) = variant(g) else { return 0 };
    let (hp, wp) = padded(g, v);
    let t = tiles(g, v);
    let p = v.positions();
    align64(g.c * hp * wp * 4) + p * pos_stride(g.c, t) + p * pos_stride(g.m, t)
}

const G2: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];
const G4: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// `U_e = (G g Gᵀ)[e]` for every output/input channel pair, each packed as the GEMM's A
/// matrix (`gemm::pack_a`, or `fma::pack_a` for the wide tile), positions e = 0..P one
/// after another.
pub(crate) fn pack_weights(g: &ConvGeom, w: &[f32], wide_isa: Option<FmaIsa>) -> Vec<f32> {
    let v = variant(g).expect("pack_weights is only called when a variant applies");
    let gm: &[[f64; 3]] = match v {
        Variant::F2 => &G2,
        Variant::F4 => &G4,
    };
    let (a, np) = (v.a(), v.positions());
    let (m, c) = (g.m, g.c);
    // u[(mi * c + ci) * np + e]
    let mut u = vec![0f32; m * c * np];
    for mi in 0..m {
        for ci in 0..c {
            let k = &w[(mi * c + ci) * 9..(mi * c + ci) * 9 + 9];
            // t = G k  (a x 3), then t Gᵀ (a x a).
            let t: Vec<[f64; 3]> = gm
                .iter()
                .map(|gr| {
                    std::array::from_fn(|j| (0..3).map(|q| gr[q] * k[q * 3 + j] as f64).sum())
                })
                .collect();
            for r in 0..a {
                for s in 0..a {
                    let val: f64 = (0..3).map(|q| t[r][q] * gm[s][q]).sum();
                    u[(mi * c + ci) * np + r * a + s] = val as f32;
                }
            }
        }
    }
    let mut out = Vec::with_capacity(u.len());
    let rows = wide(g, wide_isa).map(|isa| wide_spec(g, isa).shape().0);
    for e in 0..np {
        let get = |i: usize, kk: usize| u[(i * c + kk) * np + e];
        match rows {
            Some(r) => out.extend(fma::pack_a(r, m, c, get)),
            None => out.extend(gemm::pack_a(m, c, get)),
        }
    }
    out
}

/// Emits the convolution (batch loop included). `w`: [`pack_weights`]; `bias`: M floats;
/// `tiles`: the wide tiles of [`wide_spec`] (V then has panels of one vector).
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
    tiles_fn: Option<&FmaGemm>,
) {
    let g = *g;
    let v = variant(&g).expect("emit is only called when a variant applies");
    let pw = tiles_fn.map_or(NR, |t| t.isa().lanes());
    let (hp, wp) = padded(&g, v);
    let t = tiles(&g, v);
    let buf = ws;
    let vbuf = kb.off(ws, align64(g.c * hp * wp * 4) as i64);
    let mbuf = kb.off(vbuf, (v.positions() * pos_stride(g.c, t)) as i64);
    kb.for_range(0, g.n as i64, 1, |kb, n| {
        let xn = kb.idx(x, n, (g.c * g.h * g.w * 4) as i64);
        let on = kb.idx(out, n, (g.m * g.oh * g.ow * 4) as i64);
        border_copy(kb, &g, v, xn, buf);
        match v {
            Variant::F2 => input_transform_f2(kb, &g, buf, vbuf, pw),
            Variant::F4 => input_transform_f4(kb, &g, buf, vbuf, pw),
        }
        kb.for_range(0, v.positions() as i64, 1, |kb, e| {
            let a = kb.idx(w, e, (g.m * g.c * 4) as i64);
            let b = kb.idx(vbuf, e, pos_stride(g.c, t) as i64);
            let o = kb.idx(mbuf, e, pos_stride(g.m, t) as i64);
            if let Some(tf) = tiles_fn {
                fma::emit(kb, tf, a, b, o, None);
                return;
            }
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
        output_transform(kb, &g, v, mbuf, bias, on, lo, hi);
    });
}

/// `buf[c][y][x] = x[c][y - top][x - left]`, zero outside the input.
fn border_copy(kb: &mut Kb<'_, '_>, g: &ConvGeom, v: Variant, x: Value, buf: Value) {
    let (hp, wp) = padded(g, v);
    let g = *g;
    // Interior rows: buffer rows top..top+h (inside, since oh + 2 = h + top + bottom).
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
            copy_run(kb, dst, (c0 * 4) as i64, src, 0, c1 - c0, 1, 0);
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
const LO_HALVES: [u8; 4] = [0, 1, 4, 5];
const HI_HALVES: [u8; 4] = [2, 3, 6, 7];

/// The 4x4 transpose of four vectors (`unpcklps`/`unpckhps`, then the 64-bit halves).
fn transpose4(kb: &mut Kb<'_, '_>, v: [Value; 4]) -> [Value; 4] {
    let t0 = shuffle(kb, v[0], v[1], LOWS);
    let t1 = shuffle(kb, v[2], v[3], LOWS);
    let t2 = shuffle(kb, v[0], v[1], HIGHS);
    let t3 = shuffle(kb, v[2], v[3], HIGHS);
    [
        shuffle(kb, t0, t1, LO_HALVES),
        shuffle(kb, t0, t1, HI_HALVES),
        shuffle(kb, t2, t3, LO_HALVES),
        shuffle(kb, t2, t3, HI_HALVES),
    ]
}

/// `x * k + y` with a constant k (exact for the small integers of the transforms).
fn kmadd(kb: &mut Kb<'_, '_>, x: Value, k: f32, y: Value) -> Value {
    let kv = kb.fconst(F32X4, k);
    kb.madd(x, kv, y)
}

/// F(2,3) `Bᵀ v` along one axis: `[v0 - v2, v1 + v2, v2 - v1, v1 - v3]`.
fn bt2(kb: &mut Kb<'_, '_>, v: [Value; 4]) -> [Value; 4] {
    let r0 = kb.b.ins().fsub(v[0], v[2]);
    let r1 = kb.b.ins().fadd(v[1], v[2]);
    let r2 = kb.b.ins().fsub(v[2], v[1]);
    let r3 = kb.b.ins().fsub(v[1], v[3]);
    [r0, r1, r2, r3]
}

/// F(4,3) `Bᵀ v` along one axis, with shared partial sums.
fn bt4(kb: &mut Kb<'_, '_>, d: [Value; 6]) -> [Value; 6] {
    // r0 = 4 d0 - 5 d2 + d4
    let t = kmadd(kb, d[2], -5.0, d[4]);
    let r0 = kmadd(kb, d[0], 4.0, t);
    // a = d4 - 4 d2, b = d3 - 4 d1: r1 = a + b, r2 = a - b
    let a = kmadd(kb, d[2], -4.0, d[4]);
    let b = kmadd(kb, d[1], -4.0, d[3]);
    let r1 = kb.b.ins().fadd(a, b);
    let r2 = kb.b.ins().fsub(a, b);
    // c = d4 - d2, e = 2 (d3 - d1): r3 = c + e, r4 = c - e
    let c = kb.b.ins().fsub(d[4], d[2]);
    let e = kb.b.ins().fsub(d[3], d[1]);
    let r3 = kmadd(kb, e, 2.0, c);
    let r4 = kmadd(kb, e, -2.0, c);
    // r5 = 4 d1 - 5 d3 + d5
    let t = kmadd(kb, d[3], -5.0, d[5]);
    let r5 = kmadd(kb, d[1], 4.0, t);
    [r0, r1, r2, r3, r4, r5]
}

/// Row `xi` of F(4,3)'s `Bᵀ` applied to rows produced on demand by `row(i)`.
fn bt4_row(
    kb: &mut Kb<'_, '_>,
    xi: usize,
    row: &mut impl FnMut(&mut Kb<'_, '_>, usize) -> Value,
) -> Value {
    const BT: [[f32; 6]; 6] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
    let coef = BT[xi];
    // Start from a term with coefficient 1 (every row has one), then add the others.
    let one = coef
        .iter()
        .rposition(|&k| k == 1.0)
        .expect("each row of Bᵀ has a 1");
    let mut acc = row(kb, one);
    for (i, &k) in coef.iter().enumerate() {
        if i == one || k == 0.0 {
            continue;
        }
        let x = row(kb, i);
        acc = if k == 1.0 {
            kb.b.ins().fadd(acc, x)
        } else if k == -1.0 {
            kb.b.ins().fsub(acc, x)
        } else {
            kmadd(kb, x, k, acc)
        };
    }
    acc
}

/// F(2,3) `Aᵀ v` along one axis: `[v0 + v1 + v2, v1 - v2 - v3]`.
fn at2(kb: &mut Kb<'_, '_>, v: &[Value]) -> Vec<Value> {
    let s = kb.b.ins().fadd(v[0], v[1]);
    let r0 = kb.b.ins().fadd(s, v[2]);
    let d = kb.b.ins().fsub(v[1], v[2]);
    let r1 = kb.b.ins().fsub(d, v[3]);
    vec![r0, r1]
}

/// F(4,3) `Aᵀ v` along one axis.
fn at4(kb: &mut Kb<'_, '_>, m: &[Value]) -> Vec<Value> {
    let s12 = kb.b.ins().fadd(m[1], m[2]);
    let d12 = kb.b.ins().fsub(m[1], m[2]);
    let s34 = kb.b.ins().fadd(m[3], m[4]);
    let d34 = kb.b.ins().fsub(m[3], m[4]);
    let t = kb.b.ins().fadd(m[0], s12);
    let a0 = kb.b.ins().fadd(t, s34);
    let a1 = kmadd(kb, d34, 2.0, d12);
    let a2 = kmadd(kb, s34, 4.0, s12);
    let t = kmadd(kb, d34, 8.0, d12);
    let a3 = kb.b.ins().fadd(t, m[5]);
    vec![a0, a1, a2, a3]
}

/// Where the four tiles `t0 .. t0 + 4` of channel c land in V's packed B layout: element
/// `(t & !(pw-1)) * C + c * pw + (t & (pw-1))` of matrix e, which starts
/// `e * pos_stride` bytes into V (full GEMM panels of `pw` tiles: `NR`, or one vector of
/// the wide tile; groups of four tiles never straddle two panels since pw is a multiple
/// of 4). `vc` = V + c * pw floats.
fn v_base(kb: &mut Kb<'_, '_>, c: usize, vc: Value, t0: Value, pw: usize) -> Value {
    debug_assert!(pw.is_power_of_two() && pw.is_multiple_of(4));
    let hi = kb.b.ins().band_imm_s(t0, !(pw as i64 - 1));
    let lo = kb.b.ins().band_imm_s(t0, pw as i64 - 1);
    let base = kb.idx(vc, hi, (c * 4) as i64);
    kb.idx(base, lo, 4)
}

fn input_transform_f2(kb: &mut Kb<'_, '_>, g: &ConvGeom, buf: Value, vbuf: Value, pw: usize) {
    let v = Variant::F2;
    let (hp, wp) = padded(g, v);
    let g = *g;
    let (th, tw) = (g.oh / 2, g.ow / 2);
    let vs = pos_stride(g.c, tiles(&g, v));
    kb.for_range(0, g.c as i64, 1, |kb, c| {
        let bc = kb.idx(buf, c, (hp * wp * 4) as i64);
        let vc = kb.idx(vbuf, c, (pw * 4) as i64);
        kb.for_range(0, th as i64, 1, |kb, ty| {
            // Buffer row 2*ty; first tile of the row ty * tw.
            let row = kb.idx(bc, ty, (2 * wp * 4) as i64);
            let t0 = kb.b.ins().imul_imm_s(ty, tw as i64);
            for gx in 0..tw / 4 {
                let tt = kb.b.ins().iadd_imm_s(t0, (4 * gx) as i64);
                let base = v_base(kb, g.c, vc, tt, pw);
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
                    *di = bt2(kb, [e0, o0, e1, o1]);
                }
                for j in 0..4 {
                    let col = bt2(kb, d.map(|row| row[j]));
                    for (i, val) in col.into_iter().enumerate() {
                        kb.store(val, base, ((i * 4 + j) * vs) as i64);
                    }
                }
            }
        });
    });
}

fn input_transform_f4(kb: &mut Kb<'_, '_>, g: &ConvGeom, buf: Value, vbuf: Value, pw: usize) {
    let v = Variant::F4;
    let (hp, wp) = padded(g, v);
    let g = *g;
    let (th, tw) = (g.oh / 4, g.ow / 4);
    let vs = pos_stride(g.c, tiles(&g, v));
    kb.for_range(0, g.c as i64, 1, |kb, c| {
        let bc = kb.idx(buf, c, (hp * wp * 4) as i64);
        let vc = kb.idx(vbuf, c, (pw * 4) as i64);
        kb.for_range(0, th as i64, 1, |kb, ty| {
            // Buffer row 4*ty; first tile of the row ty * tw.
            let row = kb.idx(bc, ty, (4 * wp * 4) as i64);
            let t0 = kb.b.ins().imul_imm_s(ty, tw as i64);
            for gx in 0..tw / 4 {
                let tt = kb.b.ins().iadd_imm_s(t0, (4 * gx) as i64);
                let base = v_base(kb, g.c, vc, tt, pw);
                for xi in 0..6 {
                    // Vertical transform of the five vectors of the group's rows.
                    let w: [Value; 5] = std::array::from_fn(|q| {
                        bt4_row(kb, xi, &mut |kb, i| {
                            kb.load(F32X4, row, ((i * wp + 16 * gx + 4 * q) * 4) as i64)
                        })
                    });
                    // Tile l's column j is w[l + j / 4][j % 4].
                    let c03 = transpose4(kb, [w[0], w[1], w[2], w[3]]);
                    let u0 = shuffle(kb, w[1], w[2], LOWS);
                    let u1 = shuffle(kb, w[3], w[4], LOWS);
                    let c4 = shuffle(kb, u0, u1, LO_HALVES);
                    let c5 = shuffle(kb, u0, u1, HI_HALVES);
                    let r = bt4(kb, [c03[0], c03[1], c03[2], c03[3], c4, c5]);
                    for (nu, val) in r.into_iter().enumerate() {
                        kb.store(val, base, ((xi * 6 + nu) * vs) as i64);
                    }
                }
            }
        });
    });
}

/// `Y = Aᵀ M A` per output channel and tile, bias, clamp, interleaved into rows.
#[allow(clippy::too_many_arguments, reason = "the pointers of one kernel")]
fn output_transform(
    kb: &mut Kb<'_, '_>,
    g: &ConvGeom,
    v: Variant,
    mbuf: Value,
    bias: Option<Value>,
    out: Value,
    lo: Option<f32>,
    hi: Option<f32>,
) {
    let g = *g;
    let (r, a) = (v.r(), v.a());
    let (th, tw) = (g.oh / r, g.ow / r);
    let ms = pos_stride(g.m, tiles(&g, v));
    let at = |kb: &mut Kb<'_, '_>, x: &[Value]| match v {
        Variant::F2 => at2(kb, x),
        Variant::F4 => at4(kb, x),
    };
    kb.for_range(0, g.m as i64, 1, |kb, m| {
        let mm = kb.idx(mbuf, m, (tiles(&g, v) * 4) as i64);
        let om = kb.idx(out, m, (g.oh * g.ow * 4) as i64);
        let bv = bias.map(|b| {
            let s = kb.idx(b, m, 4);
            let s = kb.load(F32, s, 0);
            kb.b.ins().splat(F32X4, s)
        });
        let lov = lo.map(|x| kb.fconst(F32X4, x));
        let hiv = hi.map(|x| kb.fconst(F32X4, x));
        kb.for_range(0, th as i64, 1, |kb, ty| {
            let mt = kb.idx(mm, ty, (tw * 4) as i64);
            let orow = kb.idx(om, ty, (r * g.ow * 4) as i64);
            for gx in 0..tw / 4 {
                // cols[j][a'] = (Aᵀ M)[a'][j]: one column j of positions at a time.
                let cols: Vec<Vec<Value>> = (0..a)
                    .map(|j| {
                        let col: Vec<Value> = (0..a)
                            .map(|i| kb.load(F32X4, mt, ((i * a + j) * ms + 16 * gx) as i64))
                            .collect();
                        at(kb, &col)
                    })
                    .collect();
                for ro in 0..r {
                    let srow: Vec<Value> = cols.iter().map(|c| c[ro]).collect();
                    let mut y = at(kb, &srow);
                    for val in y.iter_mut() {
                        if let Some(b) = bv {
                            *val = kb.b.ins().fadd(*val, b);
                        }
                        // As the GEMM epilogue: `v < lo ? lo : v`, then `v > hi ? hi : v`.
                        if let Some(l) = lov {
                            *val = kb.fselect(F32X4, FloatCC::LessThan, *val, l, l, *val);
                        }
                        if let Some(h) = hiv {
                            *val = kb.fselect(F32X4, FloatCC::GreaterThan, *val, h, h, *val);
                        }
                    }
                    // y[b] holds output column b of the four tiles (lanes); pixel
                    // 4r*gx + r*l + b of the row.
                    let row_off = ((ro * g.ow + 4 * r * gx) * 4) as i64;
                    match v {
                        Variant::F2 => {
                            let p0 = shuffle(kb, y[0], y[1], LOWS);
                            let p1 = shuffle(kb, y[0], y[1], HIGHS);
                            kb.store(p0, orow, row_off);
                            kb.store(p1, orow, row_off + 16);
                        }
                        Variant::F4 => {
                            let px = transpose4(kb, [y[0], y[1], y[2], y[3]]);
                            for (l, p) in px.into_iter().enumerate() {
                                kb.store(p, orow, row_off + 16 * l as i64);
                            }
                        }
                    }
                }
            }
        });
    });
}
