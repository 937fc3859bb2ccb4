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
//!   bytes, only the column pitch is a whole number of the tier's vectors.
//! - Tiles per tier ([`tile`]): `rows` broadcast dwords x `vecs` column vectors of
//!   i32 accumulators, over the whole of K, stored to the workspace for the epilogue.
//!   Columns are pixels (conv) or output channels (matmul), so 16 output channels or
//!   pixels fill a zmm even when the other side is small (ResNet-20's first stage:
//!   16 channels, K = 144). The tile shape is chosen per layer ([`choose_tile`]).
//! - The GEMM driver ([`emit_gemm`]) loops over tiles in Cranelift and calls the
//!   assembled tile once per tile; one function per distinct tile (shape, K, strides).

mod tile;

use std::collections::BTreeMap;

use cranelift_codegen::ir::types::I32X4;
use cranelift_codegen::ir::{FuncRef, InstBuilder, Value};

use super::maddubs::{self, Gemm};
use super::{ConstOf, Ecx};
use crate::backend::asm::AsmFn;
use crate::backend::costs::{self, CostTarget, Strategy};
use crate::backend::kb::Kb;
use qcc_ir::{Module, Node};

pub(crate) use tile::peak_loop;

/// The instruction set of a tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum DotIsa {
    /// AVX512-VNNI `vpdpbusd` on zmm (16 i32 lanes).
    Vnni512,
    /// AVX2 `vpmaddubsw` + `vpmaddwd` on ymm (8 i32 lanes).
    Avx2,
}

impl DotIsa {
    /// i32 lanes of one vector (columns per column vector).
    pub fn lanes(self) -> usize {
        match self {
            DotIsa::Vnni512 => 16,
            DotIsa::Avx2 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DotIsa::Vnni512 => "vpdpbusd.zmm",
            DotIsa::Avx2 => "vpmaddubsw.ymm",
        }
    }

    /// The tier the tile needs, as the report names it.
    pub fn tier(self) -> &'static str {
        match self {
            DotIsa::Vnni512 => "x86-64-v4+vnni",
            DotIsa::Avx2 => "x86-64-v3",
        }
    }

    fn strategy(self) -> Strategy {
        match self {
            DotIsa::Vnni512 => Strategy::DotVnni,
            DotIsa::Avx2 => Strategy::DotAvx2,
        }
    }

    /// The most accumulator registers with `vecs` column vectors (the rest hold the
    /// columns, the broadcast rows and, for AVX2, the ones and two products).
    fn max_rows(self, vecs: usize) -> usize {
        match self {
            DotIsa::Vnni512 => ((30 - vecs) / vecs).min(16),
            DotIsa::Avx2 => (12 - vecs) / vecs,
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
}

impl DotTile {
    pub fn symbol(&self) -> String {
        format!(
            "dot_{}_{}x{}_q{}_r{}_c{}_{}",
            match self.isa {
                DotIsa::Vnni512 => "vnni_zmm",
                DotIsa::Avx2 => "avx2_ymm",
            },
            self.rows,
            self.vecs,
            self.quads,
            self.row_stride,
            self.col_stride,
            if self.rows_signed { "rs" } else { "ru" }
        )
    }

    pub fn assemble(&self) -> Result<Vec<u8>, iced_x86::IcedError> {
        match self.isa {
            DotIsa::Vnni512 => tile::vnni512(self),
            DotIsa::Avx2 => tile::avx2(self),
        }
    }
}

/// The tile shape (rows, column vectors) for `m` rows and `vt` column vectors over
/// `quads` quads: the fewest modelled cycles, counting per tile and quad the larger of
/// the multiply-adds and the loads, and a fixed cost per tile (call and epilogue).
pub(crate) fn choose_tile(isa: DotIsa, m: usize, vt: usize, quads: usize) -> (usize, usize) {
    let mut best = (f64::INFINITY, (1, 1));
    for vecs in 1..=4.min(vt.max(1)) {
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
                    let per = (quads * (r * v).max(r + v)) as f64 + 4.0 * (r * v) as f64 + 20.0;
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
) -> Option<DotIsa> {
    // No wide rows on this target: skip the weights' checks.
    let wide = [Strategy::DotVnni, Strategy::DotAvx2];
    costs::choose(&wide, 8, 8, 1, target)?;
    let c = maddubs::check(m, node, const_of)?;
    let mut cands = vec![
        Strategy::Int8PackedW,
        Strategy::Int8Pmaddwd,
        Strategy::DotVnni,
    ];
    if c.group.is_some() {
        cands.extend([Strategy::Maddubs, Strategy::DotAvx2]);
    }
    let isa = match costs::choose(&cands, c.weff, c.ab, 1, target)? {
        Strategy::DotVnni => DotIsa::Vnni512,
        Strategy::DotAvx2 => DotIsa::Avx2,
        _ => return None,
    };
    maddubs::beats_bitserial(m, node, const_of, target, &c, isa.strategy()).then_some(isa)
}

/// The tiles of one GEMM, assembled and declared in the kernel's function.
#[derive(Debug)]
pub(crate) struct Wide {
    pub isa: DotIsa,
    pub rows: usize,
    pub vecs: usize,
    fns: BTreeMap<(usize, usize), FuncRef>,
}

impl Wide {
    /// Bytes of the tile's i32 sums in the workspace.
    pub const ACC_BYTES: usize = 32 * 64;

    /// The tiles for a GEMM of `m` rows by `n` columns over `quads` quads.
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
    ) -> Wide {
        debug_assert!(cx.kb.feat.tier.is_some_and(|t| match isa {
            DotIsa::Vnni512 => t.avx512_vnni(),
            DotIsa::Avx2 => t.avx2(),
        }));
        let vt = n.div_ceil(isa.lanes());
        let (rows, vecs) = choose_tile(isa, m, vt, quads);
        let mut fns = BTreeMap::new();
        let mut shapes = vec![rows];
        if !m.is_multiple_of(rows) {
            shapes.push(m % rows);
        }
        let mut vshapes = vec![vecs];
        if !vt.is_multiple_of(vecs) {
            vshapes.push(vt % vecs);
        }
        for &r in &shapes {
            for &v in &vshapes {
                let f = AsmFn::Dot(DotTile {
                    isa,
                    rows: r as u8,
                    vecs: v as u8,
                    quads: quads as u32,
                    row_stride: row_stride as u32,
                    col_stride: col_stride as u32,
                    rows_signed,
                });
                let fr = cx.data.asm_func(cx.kb.b.func, &f);
                fns.insert((r, v), fr);
            }
        }
        Wide {
            isa,
            rows,
            vecs,
            fns,
        }
    }
}

/// The GEMM of `g` with the tiles of `w`: Cranelift loops over row and column tiles,
/// calls the tile, and runs `maddubs`'s epilogue on its sums.
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
    // Column tiles: a loop over whole tiles that end within n, then each remaining
    // tile (a partial last vector, a narrower tail) at a constant column.
    let full = vt / nv;
    let clean = if full > 0 && (full * nv * lanes) > g.n {
        full - 1
    } else {
        full
    };
    let mut rest: Vec<(usize, usize)> = (clean..full).map(|t| (t * nv * lanes, nv)).collect();
    if !vt.is_multiple_of(nv) {
        rest.push((full * nv * lanes, vt % nv));
    }
    let one =
        |kb: &mut Kb<'_, '_>, rows: usize, row0: Value, col: Result<Value, (usize, usize)>| {
            let (col0, vecs, tail) = match col {
                Ok(c) => (c, nv, None),
                Err((first, vecs)) => (kb.c(first as i64), vecs, Some(first)),
            };
            let a = kb.idx(g.rows, row0, g.row_stride);
            let b = kb.idx(g.cols, col0, 4);
            let f = w.fns[&(rows, vecs)];
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
    let row_bytes = g.m * g.quads * 4;
    let col_bytes = g.quads * g.pitch * 4;
    let col_passes = vt.div_ceil(nv);
    if col_passes * row_bytes <= g.m.div_ceil(mr) * col_bytes {
        if clean > 0 {
            kb.for_range(0, clean as i64, 1, |kb, tj| {
                let col0 = kb.b.ins().imul_imm_s(tj, (nv * lanes) as i64);
                row_tiles(kb, Ok(col0));
            });
        }
        for &r in &rest {
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
                for &r in &rest {
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
        for isa in [DotIsa::Vnni512, DotIsa::Avx2] {
            for (m, vt, q) in [
                (16, 64, 36),
                (64, 4, 144),
                (1, 1, 16),
                (10, 1, 16),
                (3, 7, 1),
            ] {
                let (r, v) = choose_tile(isa, m, vt, q);
                assert!(r >= 1 && v >= 1 && r <= m.max(1) && v <= vt.max(1));
                assert!(r <= isa.max_rows(v), "{isa:?} {m} {vt}: {r}x{v}");
            }
        }
        // ResNet-20's first stage: 16 channels by 1024 pixels, K = 144.
        let (r, v) = choose_tile(DotIsa::Vnni512, 16, 64, 36);
        assert!(r * v >= 16, "{r}x{v}");
    }
}
