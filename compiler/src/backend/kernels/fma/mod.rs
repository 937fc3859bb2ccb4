//! The f32 GEMM family on wide vectors: `vfmadd231ps` on zmm (x86-64-v4, AVX-512F) and
//! on ymm (x86-64-v3, AVX2 + FMA), register tiles assembled with iced-x86 (see
//! `backend::asm`), called from Cranelift drivers. The family's 128-bit Cranelift
//! kernels live here too: the GEMM (`gemm.rs`) for lower tiers and aarch64, and the
//! Winograd convolutions (`winograd.rs`), which run either tile.
//!
//! - Applicability and cost ([`choose`]): the measured cost table's rows
//!   ([`Strategy::F32Zmm`], [`Strategy::F32Ymm`]) decide against [`Strategy::F32Gemm`]
//!   for the target's tier.
//! - Layout: A (the weights of a convolution, or Winograd's transformed weights) is
//!   packed at compile time in row blocks of the tile's `rows` ([`pack_a`]): `[K][rows]`
//!   per block, the last block shorter. B (im2col patches, pixels, or Winograd's
//!   transformed input) is in column panels of one vector (`lanes` floats): `[K][lanes]`
//!   per panel, the last panel padded with zeros ([`pack_b_runtime`]).
//! - Tiles ([`FmaTile`], `tile.rs`): `rows` x `vecs` accumulators over the whole of K,
//!   then `+ bias[row]`, the fused ReLU/clip clamp, and the stores, masked for the last
//!   partial vector; on zmm a fused SiLU over the stored vectors. The shape is chosen per GEMM ([`shape`]) by a small cost model.
//! - The driver ([`emit`]): column groups outer (a group of B stays in L1 across the
//!   row blocks), row blocks inner; one call per tile; one function per distinct tile.

pub(crate) mod gemm;
mod tile;
pub(crate) mod winograd;

use std::collections::BTreeMap;

use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{FuncRef, Function, InstBuilder, Value};

use super::DataSink;
use crate::backend::asm::AsmFn;
use crate::backend::costs::{self, CostTarget, Strategy};
use crate::backend::kb::Kb;

pub(crate) use tile::peak_loop;

/// `void silu(const f32 *x, f32 *out)`: `x * sigmoid(x)` over `n` floats on zmm (the
/// zmm tiles' SiLU epilogue as a loop), for a fused SiLU the tiles do not apply.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SiluZmm {
    pub n: u32,
}

impl SiluZmm {
    pub fn symbol(&self) -> String {
        format!("silu_zmm_n{}", self.n)
    }

    pub fn assemble(&self) -> Result<Vec<u8>, iced_x86::IcedError> {
        tile::silu_loop(self.n)
    }
}

/// The vector width of a tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum FmaIsa {
    /// AVX-512F `vfmadd231ps` zmm (16 lanes), A broadcast from memory (`{1to16}`).
    Zmm,
    /// AVX2 + FMA `vfmadd231ps` ymm (8 lanes).
    Ymm,
}

impl FmaIsa {
    pub fn lanes(self) -> usize {
        match self {
            FmaIsa::Zmm => 16,
            FmaIsa::Ymm => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FmaIsa::Zmm => "vfmadd231ps.zmm",
            FmaIsa::Ymm => "vfmadd231ps.ymm",
        }
    }

    /// The tier the tile needs, as the report names it.
    pub fn tier(self) -> &'static str {
        match self {
            FmaIsa::Zmm => "x86-64-v4",
            FmaIsa::Ymm => "x86-64-v3",
        }
    }

    /// The most rows with `vecs` column vectors: the accumulators, the column vectors
    /// and (ymm) the broadcast row, with a register to spare for the clamp's bounds.
    pub fn max_rows(self, vecs: usize) -> usize {
        match self {
            FmaIsa::Zmm => ((31 - vecs) / vecs).min(24),
            FmaIsa::Ymm => (15 - vecs) / vecs,
        }
    }
}

/// The wide f32 tile for `macs` multiply-accumulates on `target`, if the cost table
/// prefers one to the 128-bit kernel.
pub(crate) fn choose(macs: u64, target: CostTarget) -> Option<FmaIsa> {
    let c = [Strategy::F32Gemm, Strategy::F32Zmm, Strategy::F32Ymm];
    match costs::choose(&c, 32, 32, macs, target)? {
        Strategy::F32Zmm => Some(FmaIsa::Zmm),
        Strategy::F32Ymm => Some(FmaIsa::Ymm),
        _ => None,
    }
}

/// One assembled tile and the constants it bakes in (see `tile.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FmaTile {
    pub isa: FmaIsa,
    pub rows: u8,
    pub vecs: u8,
    pub k: u32,
    /// Bytes of A per k (packed: the row block's width times 4).
    pub a_step: u32,
    /// Bytes of A between two rows (packed: 4).
    pub a_row: u32,
    /// Bytes between two column panels of B.
    pub panel_bytes: u32,
    /// Bytes between two rows (k) of B: one vector in packed panels, the row of a
    /// row-major B.
    pub b_k: u32,
    /// Bytes between two output rows.
    pub ldc_bytes: u32,
    /// Columns of the last vector that are stored (1..=lanes).
    pub valid: u32,
    /// `+ bias[row]` (a fourth pointer parameter).
    pub bias: bool,
    /// `+ bias[col]` (a fourth pointer parameter, padded to whole vectors).
    pub col_bias: bool,
    /// Clamp bounds (f32 bits).
    pub lo: Option<u32>,
    pub hi: Option<u32>,
    /// Start from the sums in C (a K block after the first) instead of zeros.
    pub acc_in: bool,
    /// `silu` after the clamp, over the stored results (zmm only).
    pub silu: bool,
}

impl FmaTile {
    pub fn symbol(&self) -> String {
        let mut s = format!(
            "fma_{}_{}x{}_k{}_a{}_{}_p{}_l{}_v{}",
            match self.isa {
                FmaIsa::Zmm => "zmm",
                FmaIsa::Ymm => "ymm",
            },
            self.rows,
            self.vecs,
            self.k,
            self.a_step,
            self.a_row,
            self.panel_bytes,
            self.ldc_bytes,
            self.valid
        );
        if self.bias {
            s.push_str("_b");
        }
        if self.col_bias {
            s.push_str("_cb");
        }
        if let Some(l) = self.lo {
            s.push_str(&format!("_lo{l:08x}"));
        }
        if let Some(h) = self.hi {
            s.push_str(&format!("_hi{h:08x}"));
        }
        if self.acc_in {
            s.push_str("_acc");
        }
        if self.silu {
            s.push_str("_silu");
        }
        if self.b_k != self.isa.lanes() as u32 * 4 {
            s.push_str(&format!("_bk{}", self.b_k));
        }
        s
    }

    pub fn params(&self) -> usize {
        if self.bias || self.col_bias { 4 } else { 3 }
    }

    pub fn assemble(&self) -> Result<Vec<u8>, iced_x86::IcedError> {
        match self.isa {
            FmaIsa::Zmm => tile::zmm_tile(self),
            FmaIsa::Ymm => tile::ymm_tile(self),
        }
    }
}

/// The tile shape (rows, column vectors) for an `m` x `n` GEMM of depth `k`: the fewest
/// modelled cycles, per tile and k the larger of the FMAs and the loads (two of each
/// per cycle), plus the stores and a fixed cost per tile (the call).
pub(crate) fn shape(isa: FmaIsa, m: usize, n: usize, k: usize) -> (usize, usize) {
    shape_capped(isa, m, n, k, usize::MAX)
}

/// [`shape`] with at most `max_rows` rows.
fn shape_capped(isa: FmaIsa, m: usize, n: usize, k: usize, max_rows: usize) -> (usize, usize) {
    let vt = n.div_ceil(isa.lanes()).max(1);
    let m = m.max(1);
    let mut best = (f64::INFINITY, (1, 1));
    for vecs in 1..=4.min(vt) {
        for rows in 1..=isa.max_rows(vecs).min(m).min(max_rows.max(1)) {
            let split = |total: usize, size: usize| -> Vec<(usize, usize)> {
                let mut t = vec![(size, total / size)];
                if !total.is_multiple_of(size) {
                    t.push((total % size, 1));
                }
                t
            };
            let mut cost = 0.0;
            for &(r, rc) in &split(m, rows) {
                for &(v, vc) in &split(vt, vecs) {
                    let per = (k * (r * v).max(r + v)) as f64 + 2.0 * (r * v) as f64 + 24.0;
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

/// Packs A (`get(i, k)`) into row blocks of `rows` rows (see the module notes).
pub(crate) fn pack_a(
    rows: usize,
    m: usize,
    k: usize,
    get: impl Fn(usize, usize) -> f32,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(m * k);
    let mut i = 0;
    while i < m {
        let r = rows.min(m - i);
        for kk in 0..k {
            for ii in i..i + r {
                out.push(get(ii, kk));
            }
        }
        i += r;
    }
    out
}

/// Packs B (`get(k, j)`, `k` x `n`) into panels of one vector, the last padded with
/// zeros (the layout [`pack_b_runtime`] writes).
pub(crate) fn pack_b(
    isa: FmaIsa,
    k: usize,
    n: usize,
    get: impl Fn(usize, usize) -> f32,
) -> Vec<f32> {
    let l = isa.lanes();
    let mut out = Vec::with_capacity(b_bytes(isa, n, k) / 4);
    for p in 0..n.div_ceil(l) {
        for kk in 0..k {
            for j in p * l..(p + 1) * l {
                out.push(if j < n { get(kk, j) } else { 0.0 });
            }
        }
    }
    out
}

/// Bytes of B packed in panels: `k` rows of `n` columns rounded up to whole vectors.
pub(crate) fn b_bytes(isa: FmaIsa, n: usize, k: usize) -> usize {
    k * n.div_ceil(isa.lanes()) * isa.lanes() * 4
}

/// Packs a row-major `[k][n]` f32 matrix at `src` (row stride `row` elements) into
/// panels of one vector at `dst`, at run time; the last panel's missing columns are
/// zeros.
pub(crate) fn pack_b_runtime(
    kb: &mut Kb<'_, '_>,
    isa: FmaIsa,
    src: Value,
    row: usize,
    k: usize,
    n: usize,
    dst: Value,
) {
    let l = isa.lanes();
    let full = n / l;
    if full > 0 {
        // Panel by panel: the stores are sequential, the loads one vector from each row.
        kb.for_range(0, full as i64, 1, |kb, p| {
            let sp = kb.idx(src, p, (l * 4) as i64);
            let dp = kb.idx(dst, p, (k * l * 4) as i64);
            kb.for_range(0, k as i64, 1, |kb, kk| {
                let s = kb.idx(sp, kk, (row * 4) as i64);
                let d = kb.idx(dp, kk, (l * 4) as i64);
                for c in (0..l).step_by(4) {
                    let v = kb.load(F32X4, s, (c * 4) as i64);
                    kb.store(v, d, (c * 4) as i64);
                }
            });
        });
    }
    let w = n - full * l;
    if w > 0 {
        let s0 = kb.off(src, (full * l * 4) as i64);
        let d0 = kb.off(dst, (full * k * l * 4) as i64);
        let zv = kb.fconst(F32X4, 0.0);
        let zs = kb.fconst(F32, 0.0);
        kb.for_range(0, k as i64, 1, |kb, kk| {
            let s = kb.idx(s0, kk, (row * 4) as i64);
            let d = kb.idx(d0, kk, (l * 4) as i64);
            let mut c = 0;
            while c + 4 <= w {
                let v = kb.load(F32X4, s, (c * 4) as i64);
                kb.store(v, d, (c * 4) as i64);
                c += 4;
            }
            while c < w {
                let v = kb.load(F32, s, (c * 4) as i64);
                kb.store(v, d, (c * 4) as i64);
                c += 1;
            }
            while c < l {
                if c.is_multiple_of(4) {
                    kb.store(zv, d, (c * 4) as i64);
                    c += 4;
                } else {
                    kb.store(zs, d, (c * 4) as i64);
                    c += 1;
                }
            }
        });
    }
}

/// How the tiles read A.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AKind {
    /// Row blocks of [`pack_a`].
    Packed,
    /// Row-major `[M][K]` (a run-time operand).
    Rows,
    /// Column-major: `[K][M]` row-major (a transposed run-time operand).
    Cols,
}

/// The bias of the epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bias {
    None,
    /// One value per row (a convolution's output channel).
    Row,
    /// One value per column, N floats padded with zeros to whole vectors.
    Col,
}

/// A GEMM `C[i, j] = clamp(bias + sum_k A[i, k] B[k, j])` with B in panels, `C`
/// row-major with `ldc` floats per row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FmaSpec {
    pub isa: FmaIsa,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ldc: usize,
    pub a: AKind,
    pub bias: Bias,
    pub lo: Option<f32>,
    pub hi: Option<f32>,
    /// `silu` after the clamp (zmm only).
    pub silu: bool,
    /// B row-major with rows of this many floats (at least N rounded up to whole
    /// vectors) instead of packed in panels.
    pub b_row: Option<usize>,
}

impl FmaSpec {
    /// The tile shape A is packed for.
    pub fn shape(&self) -> (usize, usize) {
        match self.a {
            AKind::Rows => shape_capped(
                self.isa,
                self.m,
                self.n,
                self.k,
                rows_in_l1_sets(self.k * 4),
            ),
            _ => shape(self.isa, self.m, self.n, self.k),
        }
    }
}

/// Sets of the L1 data cache (64-byte lines): 64 on the x86 cores this backend targets
/// (Zen 1-4: 32 KB 8-way; Intel since Ice Lake: 48 KB 12-way; before: 32 KB 8-way).
const L1_SETS: usize = 64;

/// At most this many of a tile's A rows may share an L1 set: the rows are read in
/// lockstep along k, so rows in one set compete for its ways (8 on the smallest L1s),
/// and the B panels' lines need some too. (Zen 4, 256x256x1024 with A in place: at most
/// 2, 4, 6 or 8 rows per set gave the zmm tile 88, 97, 95 and 98 % of peak and the ymm
/// tile 87, 87, 97 and 96 %; no cap, 54 and 96 %.)
const ROWS_PER_SET: usize = 6;

/// The most rows a tile reading A in place (rows `stride` bytes apart) may have: rows
/// whose addresses fall into the same L1 set evict each other when there are more of
/// them than the set has ways. A row stride of a multiple of 4 KB puts every row in one
/// set (a 1024-deep f32 GEMM).
fn rows_in_l1_sets(stride: usize) -> usize {
    let mut count = [0usize; L1_SETS];
    for r in 0..24 {
        let set = (r * stride / 64) % L1_SETS;
        count[set] += 1;
        if count[set] > ROWS_PER_SET {
            return r;
        }
    }
    24
}

/// GEMMs deeper than this are split into K blocks of [`KC`], so that a column group
/// of B and a row block of A stay in L1 across the tiles that reuse them.
pub(crate) const K_SPLIT: usize = 512;
pub(crate) const KC: usize = 256;

/// One class of K blocks: depth, first k of the first block, count (consecutive
/// blocks `KC` apart), whether the tile starts from C's sums, whether it applies the
/// epilogue (the last block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KBlocks {
    depth: usize,
    k0: usize,
    count: usize,
    acc_in: bool,
    epi: bool,
}

fn k_blocks(k: usize) -> Vec<KBlocks> {
    let one = |depth, k0, count, acc_in, epi| KBlocks {
        depth,
        k0,
        count,
        acc_in,
        epi,
    };
    if k <= K_SPLIT {
        return vec![one(k, 0, 1, false, true)];
    }
    let nb = k.div_ceil(KC);
    let mut v = vec![one(KC, 0, 1, false, false)];
    if nb > 2 {
        v.push(one(KC, KC, nb - 2, true, false));
    }
    v.push(one(k - (nb - 1) * KC, (nb - 1) * KC, 1, true, true));
    v
}

/// The tiles of one GEMM, declared in the kernel's function.
pub(crate) struct FmaGemm {
    spec: FmaSpec,
    rows: usize,
    vecs: usize,
    /// By (rows, vecs, valid columns, K block class).
    fns: BTreeMap<(usize, usize, usize, usize), FuncRef>,
}

/// Row groups (first row, count of tiles, rows per tile).
fn row_groups(m: usize, rows: usize) -> Vec<(usize, usize, usize)> {
    let mut g = Vec::new();
    if m / rows > 0 {
        g.push((0, m / rows, rows));
    }
    if !m.is_multiple_of(rows) {
        g.push((m / rows * rows, 1, m % rows));
    }
    g
}

/// Column groups (first vector, count of tiles, vectors per tile, valid columns of the
/// last vector).
fn col_groups(isa: FmaIsa, n: usize, vecs: usize) -> Vec<(usize, usize, usize, usize)> {
    let l = isa.lanes();
    let nv = n.div_ceil(l);
    let last = n - (nv - 1) * l;
    let full = nv / vecs;
    let clean = if last < l && nv.is_multiple_of(vecs) {
        full - 1
    } else {
        full
    };
    let mut g = Vec::new();
    if clean > 0 {
        g.push((0, clean, vecs, l));
    }
    if clean < full {
        g.push((clean * vecs, 1, vecs, last));
    }
    if !nv.is_multiple_of(vecs) {
        g.push((full * vecs, 1, nv % vecs, last));
    }
    g
}

impl FmaGemm {
    pub fn isa(&self) -> FmaIsa {
        self.spec.isa
    }

    pub fn new(data: &mut dyn DataSink, func: &mut Function, spec: FmaSpec) -> FmaGemm {
        let (rows, vecs) = spec.shape();
        let mut fns = BTreeMap::new();
        for (ci, kbk) in k_blocks(spec.k).into_iter().enumerate() {
            for &(_, _, r) in &row_groups(spec.m, rows) {
                for &(_, _, v, valid) in &col_groups(spec.isa, spec.n, vecs) {
                    let (a_step, a_row) = match spec.a {
                        AKind::Packed => (r * 4, 4),
                        AKind::Rows => (4, spec.k * 4),
                        AKind::Cols => (spec.m * 4, 4),
                    };
                    let t = FmaTile {
                        isa: spec.isa,
                        rows: r as u8,
                        vecs: v as u8,
                        k: kbk.depth as u32,
                        a_step: a_step as u32,
                        a_row: a_row as u32,
                        panel_bytes: panel_bytes(&spec) as u32,
                        b_k: b_k(&spec) as u32,
                        ldc_bytes: (spec.ldc * 4) as u32,
                        valid: valid as u32,
                        bias: kbk.epi && spec.bias == Bias::Row,
                        col_bias: kbk.epi && spec.bias == Bias::Col,
                        lo: spec.lo.filter(|_| kbk.epi).map(f32::to_bits),
                        hi: spec.hi.filter(|_| kbk.epi).map(f32::to_bits),
                        acc_in: kbk.acc_in,
                        silu: spec.silu && kbk.epi,
                    };
                    let f = data.asm_func(func, &AsmFn::Fma(t));
                    fns.insert((r, v, valid, ci), f);
                }
            }
        }
        FmaGemm {
            spec,
            rows,
            vecs,
            fns,
        }
    }
}

/// Bytes between two column vectors of B.
fn panel_bytes(s: &FmaSpec) -> usize {
    let l = s.isa.lanes();
    match s.b_row {
        Some(_) => l * 4,
        None => s.k * l * 4,
    }
}

/// Bytes between two rows of B.
fn b_k(s: &FmaSpec) -> usize {
    s.b_row.unwrap_or(s.isa.lanes()) * 4
}

/// Emits the GEMM of `g`: A at `a` (packed by [`pack_a`] with `g`'s rows, or a run-time
/// matrix), B in panels at `b`, C at `out`, `bias` when the spec has one.
pub(crate) fn emit(
    kb: &mut Kb<'_, '_>,
    g: &FmaGemm,
    a: Value,
    b: Value,
    out: Value,
    bias: Option<Value>,
) {
    let s = g.spec;
    let l = s.isa.lanes();
    let rows = row_groups(s.m, g.rows);
    let cols = col_groups(s.isa, s.n, g.vecs);
    let (stride_r, stride_v) = (g.rows, g.vecs);
    for (ci, kbk) in k_blocks(s.k).into_iter().enumerate() {
        kb.for_range(0, kbk.count as i64, 1, |kb, bi| {
            // First k of this block.
            let k0 = kb.b.ins().imul_imm_s(bi, KC as i64);
            let k0 = kb.b.ins().iadd_imm_s(k0, kbk.k0 as i64);
            let bk = kb.idx(b, k0, b_k(&s) as i64);
            for &(v0, vcount, vecs, valid) in &cols {
                kb.for_range(0, vcount as i64, 1, |kb, tj| {
                    let vi = kb.b.ins().imul_imm_s(tj, stride_v as i64);
                    let vi = kb.b.ins().iadd_imm_s(vi, v0 as i64);
                    let bp = kb.idx(bk, vi, panel_bytes(&s) as i64);
                    let op = kb.idx(out, vi, (l * 4) as i64);
                    for &(r0, rcount, r) in &rows {
                        let f = g.fns[&(r, vecs, valid, ci)];
                        // A at k0: the block's row width (packed), 1 (rows) or M
                        // (columns) floats per k.
                        let a_k = match s.a {
                            AKind::Packed => r * 4,
                            AKind::Rows => 4,
                            AKind::Cols => s.m * 4,
                        };
                        let ak = kb.idx(a, k0, a_k as i64);
                        kb.for_range(0, rcount as i64, 1, |kb, ti| {
                            let ri = kb.b.ins().imul_imm_s(ti, stride_r as i64);
                            let ri = kb.b.ins().iadd_imm_s(ri, r0 as i64);
                            let a_rows = match s.a {
                                AKind::Packed | AKind::Rows => s.k * 4,
                                AKind::Cols => 4,
                            };
                            let ap = kb.idx(ak, ri, a_rows as i64);
                            let cp = kb.idx(op, ri, (s.ldc * 4) as i64);
                            match (bias, s.bias) {
                                (Some(bi), Bias::Row) if kbk.epi => {
                                    let bp2 = kb.idx(bi, ri, 4);
                                    kb.b.ins().call(f, &[ap, bp, cp, bp2]);
                                }
                                (Some(bi), Bias::Col) if kbk.epi => {
                                    let bp2 = kb.idx(bi, vi, (l * 4) as i64);
                                    kb.b.ins().call(f, &[ap, bp, cp, bp2]);
                                }
                                _ => {
                                    kb.b.ins().call(f, &[ap, bp, cp]);
                                }
                            }
                        });
                    }
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_fit_the_registers() {
        for isa in [FmaIsa::Zmm, FmaIsa::Ymm] {
            for (m, n, k) in [
                (16, 1024, 144),
                (64, 16, 64),
                (1, 1, 1),
                (7, 33, 5),
                (256, 256, 1024),
            ] {
                let (r, v) = shape(isa, m, n, k);
                assert!(
                    r >= 1 && v >= 1 && r <= m && r <= isa.max_rows(v),
                    "{isa:?} {r}x{v}"
                );
                let regs = match isa {
                    FmaIsa::Zmm => 32,
                    FmaIsa::Ymm => 16,
                };
                // Accumulators, column vectors and a spare (broadcast or bound).
                assert!(r * v + v < regs, "{isa:?} {r}x{v}");
            }
        }
    }

    /// Rows of A read in place at a stride of a multiple of 4 KB share one L1 set: the
    /// tile takes at most `ROWS_PER_SET` of them; other strides spread over the sets.
    #[test]
    fn rows_read_in_place_do_not_crowd_one_l1_set() {
        assert_eq!(rows_in_l1_sets(4096), ROWS_PER_SET);
        assert_eq!(rows_in_l1_sets(8192), ROWS_PER_SET);
        assert_eq!(rows_in_l1_sets(2048), 2 * ROWS_PER_SET);
        assert_eq!(rows_in_l1_sets(4100), ROWS_PER_SET);
        assert_eq!(rows_in_l1_sets(4160), 24);
        assert_eq!(rows_in_l1_sets(576), 24);
        let spec = |k| FmaSpec {
            isa: FmaIsa::Zmm,
            m: 256,
            n: 256,
            k,
            ldc: 256,
            a: AKind::Rows,
            bias: Bias::None,
            lo: None,
            hi: None,
            silu: false,
            b_row: None,
        };
        assert!(spec(1024).shape().0 <= ROWS_PER_SET);
        assert!(spec(1000).shape().0 > ROWS_PER_SET);
    }

    #[test]
    fn column_groups_cover_the_columns() {
        for isa in [FmaIsa::Zmm, FmaIsa::Ymm] {
            for n in 1..80 {
                for vecs in 1..=4 {
                    let l = isa.lanes();
                    let mut covered = 0;
                    for (v0, count, v, valid) in col_groups(isa, n, vecs) {
                        assert_eq!(v0 * l, covered);
                        covered += count * v * l;
                        if valid < l {
                            covered -= l - valid;
                            assert_eq!(covered, n);
                        }
                    }
                    assert_eq!(covered, n, "{isa:?} n {n} vecs {vecs}");
                }
            }
        }
    }
}
