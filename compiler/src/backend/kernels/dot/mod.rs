//! The u8 x i8 dot-product family on wide vectors: `conv2d_int` / `matmul_int` whose
//! register tile is assembled for the tier (`vpdpbusd` zmm with AVX512-VNNI,
//! `vpmaddubsw` + `vpmaddwd` ymm with AVX2), everything else shared with the 128-bit
//! `maddubs` kernel.
//!
//! - Applicability and cost ([`applies`]): the operand checks of `maddubs` (byte
//!   activations, constant weights of at most 8 bits whose zero-point corrected values
//!   fit i8), then the measured cost table's rows for the tier decide against the
//!   other integer kernels and against bit-serial. With VNNI there is no saturation
//!   check: `vpdpbusd` sums into i32, so every such layer is exact. The AVX2 tile
//!   widens every `vpmaddubsw` at once, so it needs the pair check with groups of one
//!   quad (the weights of each pair within the i16 range for the largest activation).
//! - Weight packing, im2col, activation offsets (signed activations are offset by
//!   `2^(b-1)` and the correction folded into the bias from the weight sums) and the
//!   requantize epilogue are `maddubs`'s, in its quad layout: the tile reads the same
//!   bytes, only the column pitch is a whole number of the tier's vectors. The
//!   i16-widening AVX2 tile is the exception: its weights are stored as i16
//!   ([`weights_i16`]; a matrix product's columns in panels of the tile's width,
//!   [`w16_col_offset`]), so that only the run-time operand is widened in its loop.
//! - Tiles per tier ([`tile`]): `rows` broadcast dwords x `vecs` column vectors of
//!   i32 accumulators, over the whole of K, stored to the workspace for the epilogue.
//!   Columns are pixels (conv) or output channels (matmul), so 16 output channels or
//!   pixels fill a zmm even when the other side is small (ResNet-20's first stage:
//!   16 channels, K = 144). The tile shape is chosen per layer ([`choose_tile`]).
//! - The GEMM driver ([`emit_gemm`]) loops over tiles in Cranelift and calls the
//!   assembled tile once per tile; one function per distinct tile (shape, K, strides).

mod check;
pub(crate) mod maddubs;
pub(crate) mod pmaddwd;
mod tile;
mod vpack;

use std::collections::BTreeMap;

use cranelift_codegen::ir::types::I32X4;
use cranelift_codegen::ir::{FuncRef, InstBuilder, Value};

use super::{ConstOf, Ecx};
use crate::backend::asm::AsmFn;
use crate::backend::costs::{self, CostTarget, Strategy};
use crate::backend::kb::Kb;
use crate::backend::kernels::quant::Requant;
use maddubs::Gemm;
use qcc_ir::{Module, Node};

pub(crate) use tile::{load_sums, peak_loop, requantize, requantize_avx2, store_ymm0, store_zmm};

/// The instruction set of a tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum DotIsa {
    /// AVX512-VNNI `vpdpbusd` on zmm (16 i32 lanes).
    Vnni512,
    /// AVX2 `vpmaddubsw` + `vpmaddwd` on ymm (8 i32 lanes).
    Avx2,
    /// AVX2 with both operands widened to i16 (`vpmovzxbw`, `vpmovsxbw`) and
    /// `vpmaddwd`: exact for every weight that fits i8 (8 columns per vector).
    Avx2Wide,
}

impl DotIsa {
    /// i32 lanes of one vector (columns per column vector).
    pub fn lanes(self) -> usize {
        match self {
            DotIsa::Vnni512 => 16,
            DotIsa::Avx2 | DotIsa::Avx2Wide => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DotIsa::Vnni512 => "vpdpbusd.zmm",
            DotIsa::Avx2 => "vpmaddubsw.ymm",
            DotIsa::Avx2Wide => "vpmaddwd.ymm",
        }
    }

    /// The tier the tile needs, as the report names it.
    pub fn tier(self) -> &'static str {
        match self {
            DotIsa::Vnni512 => "x86-64-v4+vnni",
            DotIsa::Avx2 | DotIsa::Avx2Wide => "x86-64-v3",
        }
    }

    fn strategy(self) -> Strategy {
        match self {
            DotIsa::Vnni512 => Strategy::DotVnni,
            DotIsa::Avx2 => Strategy::DotAvx2,
            DotIsa::Avx2Wide => Strategy::DotAvx2Wide,
        }
    }

    /// The most accumulator registers with `vecs` column vectors (the rest hold the
    /// columns, the broadcast rows and, for AVX2, the ones and two products).
    fn max_rows(self, vecs: usize) -> usize {
        match self {
            DotIsa::Vnni512 => ((30 - vecs) / vecs).min(16),
            DotIsa::Avx2 => (12 - vecs) / vecs,
            // Two accumulators and two widened column halves per vector; the row's
            // weights, a product and a temporary.
            DotIsa::Avx2Wide => (13 - 2 * vecs) / (2 * vecs),
        }
    }
}

/// One assembled tile: its shape and the constants it bakes in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DotTile {
    pub isa: DotIsa,
    pub rows: u8,
    pub vecs: u8,
    /// Quads of K (the loop count).
    pub quads: u32,
    /// Bytes between two rows.
    pub row_stride: u32,
    /// Bytes between two quads of the columns.
    pub col_stride: u32,
    /// Rows are the signed operand (conv: weights), else the unsigned one.
    pub rows_signed: bool,
    /// The signed operand (the weights) is stored as i16 (`Avx2Wide` only): rows of
    /// 4 i16 per quad (`row_stride` bytes apart), or columns in panels of the tile's
    /// width ([`w16_col_offset`]: `col_stride` is then `vecs * 64`).
    pub w16: bool,
    /// The requantize epilogue in the tile (AVX-512 only), instead of Cranelift's.
    pub epi: Option<DotEpi>,
    /// A direct convolution's columns ([`DotWindow`]), instead of the quad layout.
    pub window: Option<DotWindow>,
}

/// The columns of a direct convolution (no dilation): the input repacked as
/// `[C/4][Hp][Wp][4]` bytes (four channels per pixel, the padding included), so that
/// the quad of channels `4g..4g+3` at tap `(i, j)` for the output pixel `(oy, ox)` is
/// the dword at pixel `(oy + i) * wp + ox + j` of plane `g`. With stride 2 each plane is
/// four phase planes of `hq` rows of `wp` pixels (`[2][2][hq][wp]`: input rows and
/// columns by parity), so that tap `(i, j)` of `(oy, ox)` is pixel
/// `(oy + i / 2) * wp + ox + j / 2` of phase `(i % 2, j % 2)`: consecutive output pixels
/// again read consecutive dwords. A column vector holds `lanes` consecutive output pixels
/// of one row (`ow` a multiple of the lanes), so its quads are one load at a fixed
/// displacement per tap and vector; the K loop runs over the channel quads (`groups`,
/// `plane` bytes apart) with the taps unrolled, and the weight rows hold K in that
/// order (`[group][tap][4]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DotWindow {
    pub kh: u8,
    pub kw: u8,
    /// 1, or 2 in both directions.
    pub stride: u8,
    /// Pixels of a (phase plane's) padded input row, and of an output row.
    pub wp: u32,
    pub ow: u32,
    /// Rows of a phase plane (stride 2; 0 for stride 1).
    pub hq: u32,
    /// Channel quads, and bytes from one quad's plane to the next.
    pub groups: u32,
    pub plane: u32,
}

impl DotWindow {
    /// Bytes from a column tile's first pixel to its pixel `p` (tiles start at a row's
    /// start, or within a row they do not leave).
    pub fn pixel_disp(&self, p: usize) -> i32 {
        let ow = self.ow as usize;
        (4 * ((p / ow) * self.wp as usize + p % ow)) as i32
    }

    /// Bytes from a pixel's first tap to tap `t` (row-major over the window).
    pub fn tap_disp(&self, t: usize) -> i32 {
        let (i, j) = (t / self.kw as usize, t % self.kw as usize);
        let wp = self.wp as usize;
        if self.stride == 2 {
            let phase = (i % 2) * 2 + j % 2;
            let hq = self.hq as usize;
            (4 * (phase * hq * wp + (i / 2) * wp + j / 2)) as i32
        } else {
            (4 * (i * wp + j)) as i32
        }
    }

    pub fn taps(&self) -> usize {
        self.kh as usize * self.kw as usize
    }

    /// Pixels of one load of a column vector of `lanes` pixels: the whole vector where
    /// it lies in one output row, else one row's `ow` pixels (the vector is then
    /// `lanes / ow` rows, loaded in pieces).
    pub fn piece(&self, lanes: usize) -> usize {
        lanes.min(self.ow as usize)
    }

    /// Whether tiles of `vecs` vectors of `lanes` pixels fit the rows of `ow` pixels:
    /// every vector in one row (`ow` a multiple of the lanes, a tile within a row or
    /// whole rows), or every vector whole rows of at least 4 pixels (16 bytes a piece).
    pub fn fits(ow: usize, lanes: usize, vecs: usize) -> bool {
        let t = lanes * vecs;
        (ow.is_multiple_of(lanes) && (ow.is_multiple_of(t) || t.is_multiple_of(ow)))
            || (ow >= 4 && lanes.is_multiple_of(ow))
    }
}

/// The rounding of an in-tile requantize (one tile per mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum EpiRound {
    Floor,
    Ceil,
    Down,
    Up,
    HalfUp,
    HalfDown,
    HalfEven,
}

/// An in-tile requantize: one output channel per row (a convolution), the constants of
/// [`epi_table`], `elem`-byte outputs `row_bytes` apart; `valid`: columns of
/// the tile that exist (the others are not stored).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DotEpi {
    pub round: EpiRound,
    pub elem: u32,
    /// Unsigned outputs (u8, u16): the AVX2 store packs with unsigned saturation.
    pub unsigned: bool,
    pub row_bytes: u32,
    pub valid: usize,
    /// The AVX2 requantize's shifted value may not fit i32 ([`shift_fits_i32`] false):
    /// it is clamped in i64 lanes before the low halves are taken.
    pub wide_shift: bool,
    /// The AVX2 requantize in f64 lanes ([`f64_exact`]): rounding half to even by the
    /// `1.5 * 2^52` addition, about half the instructions of the integer form.
    pub f64_round: bool,
}

impl DotEpi {
    /// The part of a tile's symbol that names its in-tile requantize.
    pub(crate) fn suffix(&self) -> String {
        let sign = if self.unsigned { "u" } else { "s" };
        let form = if self.f64_round {
            "_f64"
        } else if self.wide_shift {
            "_x64"
        } else {
            ""
        };
        format!(
            "_rq{:?}_e{sign}{}_l{}_v{}{form}",
            self.round, self.elem, self.row_bytes, self.valid
        )
        .to_lowercase()
    }
}

/// Whether the AVX2 requantize may run in f64 lanes with the same results: rounding
/// half to even (the FPU's mode), and `bound` (on `|x + add|`) times every channel's
/// multiplier below `2^52`, so that `(x + add) * (multiplier * 2^-shift)` is exact in
/// f64 and its rounding the requantize's own.
pub(crate) fn f64_exact(rq: &Requant, bound: Option<u64>) -> bool {
    rq.rounding == qcc_ir::Rounding::HalfEven
        && bound.is_some_and(|b| {
            rq.chans
                .iter()
                .all(|c| (b as u128) * (c[0].unsigned_abs() as u128) < 1u128 << 52 && c[1] <= 62)
        })
}

/// Whether every channel's shifted value `((x + add) * multiplier) >> shift` fits i32:
/// with a shift of at least 32, a multiplier below `2^shift`, or `bound` (a bound on
/// `|x + add|` that the producing kernel guarantees, e.g. from K and the largest weight)
/// small enough. Then the AVX2 requantize finishes in i32 lanes; otherwise it clamps in
/// i64 lanes first (`DotEpi::wide_shift`).
pub(crate) fn shift_fits_i32(rq: &Requant, bound: Option<u64>) -> bool {
    rq.chans.iter().all(|c| {
        let (m, s) = (c[0].unsigned_abs(), c[1] as u32);
        s >= 32
            || m < 1u64 << s
            || bound.is_some_and(|a| (a as u128 * m as u128) >> s < 1u128 << 30)
    })
}

/// The constants of the in-tile requantize (`Requant::vector_ok` tables with one
/// output zero point only, else None): 64 bytes for the layer (`lo - zq` and `hi - zq`
/// as i64, `zq` as i32), then 16 bytes per channel: the multiplier and the i32 added to
/// the sums first (`add`: the correction plus a folded bias) as two i32, the shift as
/// an i64. The rounding terms follow from the shift in the tile.
///
/// The AVX2 tiles' layer block is 128 bytes: `lo - zq`, `hi - zq` and `zq` as 8 i32
/// each, then `2^63` as 4 u64 ([`epi_header`]).
pub(crate) fn epi_table(rq: &Requant, add: &[i32], isa: DotIsa) -> Option<Vec<u8>> {
    let zq = rq.chans.first().map_or(0, |c| c[5]);
    if rq.chans.iter().any(|c| c[5] != zq) {
        return None;
    }
    let header = epi_header(isa);
    let mut out = Vec::with_capacity(header + rq.chans.len() * 16);
    match isa {
        DotIsa::Vnni512 => {
            out.extend((rq.lo - zq).to_le_bytes());
            out.extend((rq.hi - zq).to_le_bytes());
            out.extend(zq.to_le_bytes());
        }
        DotIsa::Avx2 | DotIsa::Avx2Wide => {
            for v in [rq.lo - zq, rq.hi - zq, zq] {
                for _ in 0..8 {
                    out.extend((v as i32).to_le_bytes());
                }
            }
            for _ in 0..4 {
                out.extend((1u64 << 63).to_le_bytes());
            }
        }
    }
    out.resize(header, 0);
    for (ch, c) in rq.chans.iter().enumerate() {
        let folded = if rq.bias_folded { c[4] as i32 } else { 0 };
        let a = add.get(ch).copied().unwrap_or(0).wrapping_add(folded);
        out.extend((c[0] as i32).to_le_bytes());
        out.extend(a.to_le_bytes());
        out.extend(c[1].to_le_bytes());
    }
    Some(out)
}

/// Bytes of the layer block before the channels of [`epi_table`].
pub(crate) fn epi_header(isa: DotIsa) -> usize {
    match isa {
        DotIsa::Vnni512 => 64,
        DotIsa::Avx2 | DotIsa::Avx2Wide => 128,
    }
}

pub(crate) fn epi_round(r: qcc_ir::Rounding) -> EpiRound {
    use qcc_ir::Rounding as Q;
    match r {
        Q::Floor => EpiRound::Floor,
        Q::Ceil => EpiRound::Ceil,
        Q::Down => EpiRound::Down,
        Q::Up => EpiRound::Up,
        Q::HalfUp => EpiRound::HalfUp,
        Q::HalfDown => EpiRound::HalfDown,
        Q::HalfEven => EpiRound::HalfEven,
    }
}

impl DotTile {
    pub fn symbol(&self) -> String {
        format!(
            "dot_{}_{}x{}_q{}_r{}_c{}_{}",
            match self.isa {
                DotIsa::Vnni512 => "vnni_zmm",
                DotIsa::Avx2 => "avx2_ymm",
                DotIsa::Avx2Wide => "avx2w_ymm",
            },
            self.rows,
            self.vecs,
            self.quads,
            self.row_stride,
            self.col_stride,
            if self.rows_signed { "rs" } else { "ru" }
        ) + if self.w16 { "_w16" } else { "" }
            + &self.window.as_ref().map_or(String::new(), |w| {
                format!(
                    "_win{}x{}_s{}_wp{}_ow{}_hq{}_g{}_p{}",
                    w.kh, w.kw, w.stride, w.wp, w.ow, w.hq, w.groups, w.plane
                )
            })
            + &self.epi.as_ref().map_or(String::new(), DotEpi::suffix)
    }

    pub fn assemble(&self) -> Result<Vec<u8>, iced_x86::IcedError> {
        match self.isa {
            DotIsa::Vnni512 => tile::vnni512(self),
            DotIsa::Avx2 => tile::avx2(self),
            DotIsa::Avx2Wide => tile::avx2_wide(self),
        }
    }
}

/// The shuffles per quad that the i16-widening tile spends on widening: per row and per
/// column vector (`(0, 0)` for the other tiles). With i16 weights (`w16`) only the
/// run-time operand is widened: a convolution's columns, a matrix product's rows.
pub(crate) fn widening(isa: DotIsa, rows_signed: bool, w16: bool) -> (usize, usize) {
    match (isa, w16, rows_signed) {
        (DotIsa::Avx2Wide, false, _) => (1, 2),
        (DotIsa::Avx2Wide, true, true) => (0, 2),
        (DotIsa::Avx2Wide, true, false) => (1, 0),
        _ => (0, 0),
    }
}

/// The tile shape (rows, column vectors) for `m` rows and `vt` column vectors over
/// `quads` quads: the fewest modelled cycles, counting per tile and quad the larger of
/// the multiply-adds and the loads, and a fixed cost per tile (call and epilogue). The
/// i16-widening tile's widening shuffles (`widen`: per row and per column vector, see
/// [`widening`]) compete with its multiply-adds and additions for the same three
/// ports: a quarter of a multiply-add each.
pub(crate) fn choose_tile(
    isa: DotIsa,
    m: usize,
    vt: usize,
    quads: usize,
    widen: (usize, usize),
) -> (usize, usize) {
    choose_tile_of(isa, m, vt, quads, widen, |_| true)
}

/// [`choose_tile`] among the column vector counts `vecs_ok` accepts (1 always is).
pub(crate) fn choose_tile_of(
    isa: DotIsa,
    m: usize,
    vt: usize,
    quads: usize,
    widen: (usize, usize),
    vecs_ok: impl Fn(usize) -> bool,
) -> (usize, usize) {
    let mut best = (f64::INFINITY, (1, 1));
    for vecs in (1..=4.min(vt.max(1))).filter(|&v| v == 1 || vecs_ok(v)) {
        for rows in 1..=isa.max_rows(vecs).min(m.max(1)) {
            let tiles = |total: usize, size: usize| -> Vec<(usize, usize)> {
                let mut t = vec![(size, total / size)];
                if !total.is_multiple_of(size) {
                    t.push((total % size, 1));
                }
                t
            };
            let mut cost = 0.0;
            for &(r, rc) in &tiles(m.max(1), rows) {
                for &(v, vc) in &tiles(vt.max(1), vecs) {
                    let shuffles = (r * widen.0 + v * widen.1) as f64 / 4.0;
                    let step = ((r * v) as f64 + shuffles).max((r + v) as f64);
                    let per = quads as f64 * step + 4.0 * (r * v) as f64 + 20.0;
                    cost += per * (rc * vc) as f64;
                }
            }
            if cost < best.0 {
                best = (cost, (rows, vecs));
            }
        }
    }
    best.1
}

/// Which wide tile `node` takes on `target`, if any: `maddubs`'s operand checks, then
/// the cost table against the other integer kernels (and bit-serial, as `maddubs`
/// compares it).
pub(crate) fn applies(
    m: &Module,
    node: &Node,
    const_of: &ConstOf<'_>,
    target: CostTarget,
) -> Option<(DotIsa, Option<maddubs::KOrder>)> {
    // No wide rows on this target: skip the weights' checks.
    let wide = [Strategy::DotVnni, Strategy::DotAvx2, Strategy::DotAvx2Wide];
    costs::choose(&wide, 8, 8, 1, target)?;
    let c = maddubs::check(m, node, const_of)?;
    let mut cands = vec![
        Strategy::Int8PackedW,
        Strategy::Int8Pmaddwd,
        Strategy::DotVnni,
        Strategy::DotAvx2Wide,
    ];
    if c.group.is_some() {
        cands.extend([Strategy::Maddubs, Strategy::DotAvx2]);
    }
    let isa = match costs::choose(&cands, c.weff, c.ab, 1, target)? {
        Strategy::DotVnni => DotIsa::Vnni512,
        Strategy::DotAvx2 => DotIsa::Avx2,
        Strategy::DotAvx2Wide => DotIsa::Avx2Wide,
        _ => return None,
    };
    // Bipolar layers (+-1 codes as 2-bit ones): against the XNOR-popcount kernel.
    let bipolar = |i: usize| m.ty(node.operands[i]).elem == qcc_ir::ElemType::Bipolar;
    if bipolar(0) && bipolar(1) {
        let xnor = super::xnor::best_gmacs(target);
        let tile = costs::gmacs(isa.strategy(), c.weff, c.ab, target).unwrap_or(0.0);
        return (tile > xnor).then_some((isa, None));
    }
    // Only `vpmaddubsw` needs a K order that keeps it exact.
    let order = if isa == DotIsa::Avx2 {
        c.order.clone()
    } else {
        None
    };
    maddubs::beats_bitserial(m, node, const_of, target, &c, isa.strategy()).then_some((isa, order))
}

/// Element offset of a matrix product's i16 weight (quad `qq`, column `j`, K value `t`
/// of the quad) for the i16-widening tile whose column tiles hold `nv` vectors: panels
/// of `nv * 8` columns (the last one narrower), each `[quads][width][4]`, so that a
/// column tile reads one contiguous panel (`width * 8` bytes per quad) and the panel of
/// the tile starting at column `c0` is at element `c0 * quads * 4`.
pub(crate) fn w16_col_offset(
    npp: usize,
    quads: usize,
    nv: usize,
    qq: usize,
    j: usize,
    t: usize,
) -> usize {
    let pw = nv * 8;
    let c0 = j / pw * pw;
    let width = pw.min(npp - c0);
    c0 * quads * 4 + (qq * width + (j - c0)) * 4 + t
}

/// Whether a layer on tile `isa` stores its weights as i16 (`DotTile::w16`): the
/// i16-widening tile's weights when the object holds them unpacked (8-bit weights; the
/// narrower ones are bit-packed), so that the tile widens only the run-time operand. It
/// doubles those weights' bytes in the object. Bit-packed weights are unpacked to i8 at
/// run time and keep the widening of both operands in the loop.
pub(crate) fn weights_i16(isa: Option<DotIsa>, bit_packed: bool) -> bool {
    isa == Some(DotIsa::Avx2Wide) && !bit_packed
}

/// What an in-tile requantize needs besides the per-channel table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WideEpi {
    pub round: qcc_ir::Rounding,
    /// Output element bytes (1, 2 or 4) and bytes between output rows.
    pub elem: u32,
    pub row_bytes: u32,
    pub unsigned: bool,
    /// See [`DotEpi::wide_shift`] and [`DotEpi::f64_round`].
    pub wide_shift: bool,
    pub f64_round: bool,
}

impl WideEpi {
    /// The tile's epilogue for `valid` output columns. The f64 form never reads
    /// `wide_shift`, so it is cleared there: two layers that differ only in it share
    /// one assembled function (whose symbol does not name it).
    pub(crate) fn dot(&self, valid: usize) -> DotEpi {
        DotEpi {
            round: epi_round(self.round),
            elem: self.elem,
            unsigned: self.unsigned,
            row_bytes: self.row_bytes,
            valid,
            wide_shift: self.wide_shift && !self.f64_round,
            f64_round: self.f64_round,
        }
    }
}

/// The tiles of one GEMM, assembled and declared in the kernel's function.
#[derive(Debug)]
pub(crate) struct Wide {
    pub isa: DotIsa,
    pub rows: usize,
    pub vecs: usize,
    /// Whether the tiles requantize and store the outputs themselves.
    pub epi: bool,
    /// The weights are i16 (`DotTile::w16`).
    pub w16: bool,
    /// A direct convolution's columns (see [`DotWindow`]).
    pub window: Option<DotWindow>,
    /// Column tiles: `clean` whole tiles from column 0 that end within n, then the
    /// others as (first column, vectors).
    clean: usize,
    rest: Vec<(usize, usize)>,
    fns: BTreeMap<(usize, usize, usize), FuncRef>,
}

impl Wide {
    /// Bytes of the tile's i32 sums in the workspace.
    pub const ACC_BYTES: usize = 32 * 64;

    /// The tiles for a GEMM of `m` rows by `n` columns over `quads` quads; `w16`: the
    /// weights are stored as i16 (see [`weights_i16`]), strides in bytes.
    #[allow(clippy::too_many_arguments, reason = "one GEMM's geometry")]
    pub fn new(
        cx: &mut Ecx<'_, '_, '_, '_>,
        isa: DotIsa,
        m: usize,
        n: usize,
        quads: usize,
        row_stride: usize,
        col_stride: usize,
        rows_signed: bool,
        w16: bool,
        epi: Option<WideEpi>,
    ) -> Wide {
        Wide::with_window(
            cx,
            isa,
            (m, n, quads),
            (row_stride, col_stride),
            rows_signed,
            w16,
            epi,
            None,
        )
    }

    /// [`Wide::new`], the columns a direct convolution's `window` when given (`n` its
    /// output pixels, `quads` its channel quads times taps).
    #[allow(clippy::too_many_arguments, reason = "one GEMM's geometry")]
    pub fn with_window(
        cx: &mut Ecx<'_, '_, '_, '_>,
        isa: DotIsa,
        (m, n, quads): (usize, usize, usize),
        (row_stride, col_stride): (usize, usize),
        rows_signed: bool,
        w16: bool,
        epi: Option<WideEpi>,
        window: Option<DotWindow>,
    ) -> Wide {
        debug_assert!(!w16 || isa == DotIsa::Avx2Wide);
        debug_assert!(cx.kb.feat.tier.is_some_and(|t| match isa {
            DotIsa::Vnni512 => t.avx512_vnni(),
            DotIsa::Avx2 | DotIsa::Avx2Wide => t.avx2(),
        }));
        let lanes = isa.lanes();
        let vt = n.div_ceil(lanes);
        let (rows, vecs) =
            choose_tile_of(isa, m, vt, quads, widening(isa, rows_signed, w16), |v| {
                window
                    .as_ref()
                    .is_none_or(|w| DotWindow::fits(w.ow as usize, lanes, v))
            });
        let full = vt / vecs;
        let clean = if full > 0 && full * vecs * lanes > n {
            full - 1
        } else {
            full
        };
        let mut rest: Vec<(usize, usize)> =
            (clean..full).map(|t| (t * vecs * lanes, vecs)).collect();
        if !vt.is_multiple_of(vecs) {
            rest.push((full * vecs * lanes, vt % vecs));
        }
        let mut shapes = vec![rows];
        if !m.is_multiple_of(rows) {
            shapes.push(m % rows);
        }
        let mut cols: Vec<(usize, usize)> = Vec::new();
        if clean > 0 {
            cols.push((vecs, vecs * lanes));
        }
        cols.extend(
            rest.iter()
                .map(|&(first, v)| (v, (n - first).min(v * lanes))),
        );
        let mut fns = BTreeMap::new();
        for &r in &shapes {
            for &(v, valid) in &cols {
                let f = AsmFn::Dot(DotTile {
                    isa,
                    rows: r as u8,
                    vecs: v as u8,
                    quads: quads as u32,
                    row_stride: row_stride as u32,
                    col_stride: if w16 && !rows_signed {
                        (v * 64) as u32
                    } else {
                        col_stride as u32
                    },
                    rows_signed,
                    w16,
                    epi: epi.map(|e| e.dot(valid)),
                    window: window.clone(),
                });
                let fr = cx.data.asm_func(cx.kb.b.func, &f);
                fns.insert((r, v, valid), fr);
            }
        }
        Wide {
            isa,
            rows,
            vecs,
            epi: epi.is_some(),
            w16,
            window,
            clean,
            rest,
            fns,
        }
    }
}

/// The GEMM of `g` with the tiles of `w`: Cranelift loops over row and column tiles and
/// calls the tile, which stores its i32 sums for `maddubs`'s epilogue or (`w.epi`)
/// requantizes and stores the outputs itself (its table at `g.epi_tab`).
pub(crate) fn emit_gemm(kb: &mut Kb<'_, '_>, g: &Gemm<'_>, w: &Wide) {
    let lanes = w.isa.lanes();
    let (mr, nv) = (w.rows, w.vecs);
    let vt = g.n.div_ceil(lanes);
    let mut row_groups = Vec::new();
    if g.m / mr > 0 {
        row_groups.push((0, mr, g.m / mr));
    }
    if !g.m.is_multiple_of(mr) {
        row_groups.push((g.m / mr * mr, g.m % mr, 1));
    }
    let (clean, rest) = (w.clean, &w.rest);
    // Bytes from one column tile's first column to the next's (i16 panels: a whole
    // panel per column tile), and of one quad of a row.
    let (col_elem, row_quad) = match (w.w16, g.rows_signed) {
        (true, false) => (g.quads as i64 * 8, 4),
        (true, true) => (4, 8),
        (false, _) => (4, 4),
    };
    let one =
        |kb: &mut Kb<'_, '_>, rows: usize, row0: Value, col: Result<Value, (usize, usize)>| {
            let (col0, vecs, tail) = match col {
                Ok(c) => (c, nv, None),
                Err((first, vecs)) => (kb.c(first as i64), vecs, Some(first)),
            };
            let valid = tail.map_or(nv * lanes, |first| (g.n - first).min(vecs * lanes));
            let a = kb.idx(g.rows, row0, g.row_stride);
            let b = match &w.window {
                // Pixel col0 = (oy, ox) is at (oy * wp + ox) * 4 of the window's plane.
                Some(win) => {
                    let (ow, wp) = (win.ow as i64, win.wp as i64);
                    let b = kb.idx(g.cols, col0, 4);
                    if wp == ow {
                        b
                    } else {
                        let oy = kb.b.ins().udiv_imm_u(col0, ow);
                        kb.idx(b, oy, 4 * (wp - ow))
                    }
                }
                None => kb.idx(g.cols, col0, col_elem),
            };
            let f = w.fns[&(rows, vecs, valid)];
            if w.epi {
                let ob = g.acc.st_out.bytes() as i64;
                let out_row = kb.idx(g.out, row0, g.acc.ldc as i64 * ob);
                let out_tile = kb.idx(out_row, col0, ob);
                let (tab, chans) = g.epi_tab.expect("an in-tile requantize has its table");
                let chans = kb.idx(chans, row0, 16);
                let chans = kb.off(chans, epi_header(w.isa) as i64);
                kb.b.ins().call(f, &[a, b, g.acc_mem, out_tile, tab, chans]);
                return;
            }
            kb.b.ins().call(f, &[a, b, g.acc_mem]);
            let vecs4 = vecs * lanes / 4;
            maddubs::store_tile(kb, g, rows, vecs4, row0, col0, tail, |kb, r, v| {
                kb.load(I32X4, g.acc_mem, ((r * vecs4 + v) * 16) as i64)
            });
        };
    let row_tiles = |kb: &mut Kb<'_, '_>, col: Result<Value, (usize, usize)>| {
        for &(first, rows, count) in &row_groups {
            kb.for_range(0, count as i64, 1, |kb, ti| {
                let row0 = kb.b.ins().imul_imm_s(ti, mr as i64);
                let row0 = kb.b.ins().iadd_imm_s(row0, first as i64);
                one(kb, rows, row0, col);
            });
        }
    };
    // Columns outer when re-reading the rows costs less than re-reading the columns.
    let row_bytes = g.m * g.quads * row_quad;
    let col_bytes = g.quads * g.pitch * if w.w16 && !g.rows_signed { 8 } else { 4 };
    let col_passes = vt.div_ceil(nv);
    if col_passes * row_bytes <= g.m.div_ceil(mr) * col_bytes {
        if clean > 0 {
            kb.for_range(0, clean as i64, 1, |kb, tj| {
                let col0 = kb.b.ins().imul_imm_s(tj, (nv * lanes) as i64);
                row_tiles(kb, Ok(col0));
            });
        }
        for &r in rest {
            row_tiles(kb, Err(r));
        }
    } else {
        for &(first, rows, count) in &row_groups {
            kb.for_range(0, count as i64, 1, |kb, ti| {
                let row0 = kb.b.ins().imul_imm_s(ti, mr as i64);
                let row0 = kb.b.ins().iadd_imm_s(row0, first as i64);
                if clean > 0 {
                    kb.for_range(0, clean as i64, 1, |kb, tj| {
                        let col0 = kb.b.ins().imul_imm_s(tj, (nv * lanes) as i64);
                        one(kb, rows, row0, Ok(col0));
                    });
                }
                for &r in rest {
                    one(kb, rows, row0, Err(r));
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_fit_the_registers_and_fill_small_layers() {
        for isa in [DotIsa::Vnni512, DotIsa::Avx2, DotIsa::Avx2Wide] {
            for (m, vt, q) in [
                (16, 64, 36),
                (64, 4, 144),
                (1, 1, 16),
                (10, 1, 16),
                (3, 7, 1),
            ] {
                let (r, v) = choose_tile(isa, m, vt, q, widening(isa, m % 2 == 0, vt % 2 == 0));
                assert!(r >= 1 && v >= 1 && r <= m.max(1) && v <= vt.max(1));
                assert!(r <= isa.max_rows(v), "{isa:?} {m} {vt}: {r}x{v}");
            }
        }
        // ResNet-20's first stage: 16 channels by 1024 pixels, K = 144.
        let (r, v) = choose_tile(DotIsa::Vnni512, 16, 64, 36, (0, 0));
        assert!(r * v >= 16, "{r}x{v}");
    }

    #[test]
    fn i16_weight_panels_are_a_permutation_with_contiguous_tiles() {
        for (npp, quads, nv) in [(8, 1, 1), (24, 3, 2), (40, 5, 2), (256, 4, 2), (72, 2, 3)] {
            let mut seen = vec![false; npp * quads * 4];
            for qq in 0..quads {
                for j in 0..npp {
                    for t in 0..4 {
                        let o = w16_col_offset(npp, quads, nv, qq, j, t);
                        assert!(!seen[o], "{npp} {quads} {nv}: {qq} {j} {t}");
                        seen[o] = true;
                    }
                }
            }
            // A column tile from c0 reads its panel at c0 * quads * 4, a quad per row
            // of `width * 4` elements.
            for c0 in (0..npp).step_by(nv * 8) {
                let width = (nv * 8).min(npp - c0);
                for qq in 0..quads {
                    let o = w16_col_offset(npp, quads, nv, qq, c0, 0);
                    assert_eq!(o, c0 * quads * 4 + qq * width * 4);
                }
            }
        }
    }
}
