//! The 1-bit XNOR-popcount family on wide vectors: `conv2d_int` / `matmul_int` with
//! both operands `b1` whose register tile is assembled for the tier (`vpopcntq` zmm
//! with AVX-512 VPOPCNTDQ, a `vpshufb` nibble lookup on ymm with AVX2); everything
//! around the tile is `binary.rs`'s.
//!
//! - Applicability and cost ([`choose`]): `binary::applies` (both operands `b1`,
//!   constant weights), then the measured cost table's rows for the tier decide between
//!   these tiles and the 128-bit Cranelift tile ([`Strategy::Xnor`]).
//! - Packing (`binary.rs`): the same bits (1 for -1, 64 per K word, bits past K zero on
//!   both sides), the rows row-major, the columns in panels of [`PANEL`] columns, `[KW]
//!   [8]` words per panel, so that one 64-byte load holds one K word of 8 columns.
//!   Convolutions with zero padding keep their compile-time validity mask in the same
//!   panel layout and a table of each pixel's valid tap count.
//! - Tiles ([`tile`]): `rows` broadcast row words x `panels` panels of columns,
//!   popcounts summed over the whole of K per column lane; the epilogue in the tile
//!   computes `valid - 2 * popcount` and stores i32 results into a block of result rows
//!   in the workspace, which `AccStore::flush_rows` (bias, requantize or threshold,
//!   the store) finishes once per row tile. The tile shape is chosen per layer
//!   ([`choose_tile`]).

pub(crate) mod binary;
mod tile;

use std::collections::BTreeMap;

use cranelift_codegen::ir::{FuncRef, InstBuilder, Value};

use super::Ecx;
use crate::backend::asm::AsmFn;
use crate::backend::costs::{self, CostTarget, Strategy};
use crate::backend::kb::Kb;
use crate::backend::kernels::dot::{DotEpi, DotIsa, WideEpi};
use crate::backend::kernels::quant::{AccStore, Requant, Thresh};

pub(crate) use tile::peak_loop;

/// Columns per panel: one zmm of u64 words, two ymm.
pub(crate) const PANEL: usize = 8;

/// The instruction set of a tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum XnorIsa {
    /// AVX-512 with VPOPCNTDQ: `vpxorq` / `vpternlogq`, `vpopcntq`, `vpaddq` on zmm.
    Zmm,
    /// AVX2: `vpxor`, the `vpshufb` nibble lookup and `vpsadbw` on ymm.
    Ymm,
}

impl XnorIsa {
    pub fn name(self) -> &'static str {
        match self {
            XnorIsa::Zmm => "vpopcntq.zmm",
            XnorIsa::Ymm => "vpshufb.ymm",
        }
    }

    /// The tier the tile needs, as `--cpu` names it.
    pub fn tier(self) -> &'static str {
        match self {
            XnorIsa::Zmm => "x86-64-v4+vpopcntdq",
            XnorIsa::Ymm => "x86-64-v3",
        }
    }

    /// The most panels one tile takes.
    fn max_panels(self) -> usize {
        match self {
            XnorIsa::Zmm => 4,
            XnorIsa::Ymm => 1,
        }
    }

    /// The most rows with `panels` panels: the accumulators, the column words, the
    /// broadcast row and (zmm) at least three temporaries, or (ymm) the table, the
    /// nibble mask and two temporaries, must fit the registers. Bit-serial tiles
    /// (`bs`) keep one accumulator per row plane and column plane: on zmm the
    /// column words of every plane stay in registers and two temporaries suffice; on
    /// ymm the tile runs its panels' half-panel vectors one after the other (the
    /// column words read from memory), so only one vector's accumulators are live.
    fn max_rows(self, panels: usize, bs: Option<BsPlanes>) -> usize {
        match (self, bs) {
            (XnorIsa::Zmm, None) => ((32 - panels - 4) / panels).min(16),
            (XnorIsa::Ymm, None) => (16 - 5 - 2 * panels) / (2 * panels),
            (XnorIsa::Zmm, Some(b)) => {
                let (pr, cols) = (b.rows as usize, panels * b.cols as usize);
                32usize.saturating_sub(cols + 3) / (pr * cols)
            }
            (XnorIsa::Ymm, Some(b)) => 11 / (b.rows as usize * b.cols as usize),
        }
    }

    /// Whether a bit-serial tile of these planes (either way round) has at least one
    /// row of one panel within the registers.
    pub fn bs_fits(self, b: BsPlanes) -> bool {
        let t = BsPlanes::new(b.cols.into(), b.rows.into());
        self.max_rows(1, Some(b)) >= 1 && self.max_rows(1, Some(t)) >= 1
    }

    /// Modelled cycles of one step (one K word) of a `rows x panels` tile: the larger
    /// of the vector instructions over the ports that take them and the loads.
    fn step_cycles(self, rows: usize, panels: usize, masked: bool, bs: Option<BsPlanes>) -> f64 {
        let (pr, pc) = bs.map_or((1.0, 1.0), |b| (f64::from(b.rows), f64::from(b.cols)));
        let (r, p, m) = (
            rows as f64 * pr,
            panels as f64 * pc,
            f64::from(u8::from(masked)),
        );
        match (self, bs.is_some()) {
            // Three instructions per row and panel on two ports; loads: the panels,
            // the rows, and with a mask one per row and panel, two per cycle.
            (XnorIsa::Zmm, _) => (1.5 * r * p).max((r + p + m * r * p) / 2.0),
            // Eight (nine with a mask) per row and half panel on three ports.
            (XnorIsa::Ymm, false) => ((8.0 + m) * r * 2.0 * p / 3.0).max((r + 2.0 * p) / 2.0),
            // The same, with the column word a memory operand of each `vpand` and the
            // row words broadcast again for each half panel.
            (XnorIsa::Ymm, true) => (8.0 * r * 2.0 * p / 3.0).max((2.0 * r + 2.0 * r * p) / 2.0),
        }
    }
}

/// The bit planes of a bit-serial tile's rows and columns (`kernels::bitserial`):
/// instead of the XNOR dot, the tile sums `s_i s_j 2^(i+j) popcount(row_i & col_j)`
/// over the row planes `i` and column planes `j`, where `s` is -1 for the top plane of
/// a signed side (two's complement codes) and 1 otherwise. A row is `[KW][rows]`
/// words (the planes of one K word adjacent), a panel `[KW][cols][8]` words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct BsPlanes {
    pub rows: u8,
    pub cols: u8,
    pub row_signed: bool,
    pub col_signed: bool,
}

impl BsPlanes {
    /// `rows` x `cols` planes, both sides unsigned (for [`XnorIsa::bs_fits`]).
    pub fn new(rows: u32, cols: u32) -> BsPlanes {
        BsPlanes {
            rows: rows as u8,
            cols: cols as u8,
            row_signed: false,
            col_signed: false,
        }
    }

    /// The shift and sign of the term of row plane `i` and column plane `j`.
    pub fn term(&self, i: usize, j: usize) -> (u32, bool) {
        let neg_r = self.row_signed && i + 1 == self.rows as usize;
        let neg_c = self.col_signed && j + 1 == self.cols as usize;
        ((i + j) as u32, neg_r != neg_c)
    }
}

/// One assembled tile: its shape and the constants it bakes in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct XnorTile {
    pub isa: XnorIsa,
    pub rows: u8,
    pub panels: u8,
    /// K words (the loop count).
    pub words: u32,
    /// Bytes between two rows' words.
    pub row_stride: u32,
    /// Bytes between two panels of columns (and of the mask).
    pub panel_stride: u32,
    /// Bytes between two result rows.
    pub buf_row: u32,
    /// A validity mask and per-column valid counts (a convolution with padding).
    pub masked: bool,
    /// The valid count of every column without a mask (K).
    pub k: u32,
    /// The in-tile epilogue (a convolution: one channel per row), instead of
    /// Cranelift's; `buf_row` is then its sums' row pitch.
    pub epi: Option<XnorEpi>,
    /// A bit-serial tile (AND instead of XOR, planes on both sides; never masked, `k`
    /// unused): see [`BsPlanes`].
    pub bs: Option<BsPlanes>,
}

/// What a tile does with its dot products by itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum XnorEpi {
    /// The u8 x i8 family's requantize (`dot::requantize`, `dot::requantize_avx2`).
    Requant(DotEpi),
    /// A fused threshold: see [`ThrEpi`].
    Thresh(ThrEpi),
}

/// An in-tile threshold: per channel (row) 16 bytes, the constant bias and up to three
/// thresholds as i32 (`XnorWide::thr_table`); the output is `base + inc * count` of the
/// thresholds that `dot + bias` reaches (`inc` 2 and `base` -1 for b1), stored as
/// `elem`-byte codes `row_bytes` apart (`unsigned`: an unsigned output type); `valid`
/// columns of the tile exist.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ThrEpi {
    pub k: u8,
    pub base: i32,
    pub inc: i32,
    pub elem: u32,
    pub unsigned: bool,
    pub row_bytes: u32,
    pub valid: usize,
}

/// How a GEMM's tiles finish (chosen by the kernel, the same for all its tiles).
#[derive(Clone, Copy, Debug)]
pub(crate) enum EpiKind {
    /// i32 results for Cranelift's epilogue.
    Store,
    Requant(WideEpi),
    /// `k` thresholds, `base`, `inc`, output element bytes, signedness and row pitch.
    Thresh {
        k: u8,
        base: i32,
        inc: i32,
        elem: u32,
        unsigned: bool,
        row_bytes: u32,
    },
}

impl XnorTile {
    pub fn symbol(&self) -> String {
        let family = match self.bs {
            None => "xnor".to_string(),
            Some(b) => format!(
                "bs{}{}{}{}",
                if b.row_signed { "i" } else { "u" },
                b.rows,
                if b.col_signed { "i" } else { "u" },
                b.cols
            ),
        };
        format!(
            "{family}_{}_{}x{}_w{}_r{}_p{}_b{}_{}",
            match self.isa {
                XnorIsa::Zmm => "zmm",
                XnorIsa::Ymm => "ymm",
            },
            self.rows,
            self.panels,
            self.words,
            self.row_stride,
            self.panel_stride,
            self.buf_row,
            if self.masked {
                "m".to_string()
            } else {
                format!("k{}", self.k)
            }
        ) + &match &self.epi {
            None => String::new(),
            Some(XnorEpi::Requant(e)) => e.suffix(),
            Some(XnorEpi::Thresh(e)) => format!(
                "_th{}_b{}_i{}_e{}{}_l{}_v{}",
                e.k,
                e.base,
                e.inc,
                if e.unsigned { "u" } else { "s" },
                e.elem,
                e.row_bytes,
                e.valid
            ),
        }
    }

    /// Pointer parameters: rows, columns, results, then mask and valid counts (null
    /// without a mask when the tile requantizes), then for the in-tile requantize the
    /// outputs, the layer's constants and the tile's first channel.
    pub fn params(&self) -> usize {
        match (&self.epi, self.masked) {
            (Some(_), _) => 8,
            (None, true) => 5,
            (None, false) => 3,
        }
    }

    pub fn assemble(&self) -> Result<Vec<u8>, iced_x86::IcedError> {
        match (self.isa, self.bs) {
            (XnorIsa::Zmm, None) => tile::zmm_tile(self),
            (XnorIsa::Ymm, None) => tile::ymm_tile(self),
            (XnorIsa::Zmm, Some(b)) => tile::bs_zmm_tile(self, b),
            (XnorIsa::Ymm, Some(b)) => tile::bs_ymm_tile(self, b),
        }
    }
}

/// The 1-bit strategies.
const CANDIDATES: [Strategy; 3] = [Strategy::Xnor, Strategy::XnorZmm, Strategy::XnorYmm];

/// The wide tile a 1-bit layer of `macs` MACs takes on `target`, if the cost table
/// prefers one to the 128-bit Cranelift tile (strategies disabled by
/// `costs::without` are skipped).
pub(crate) fn choose(macs: u64, target: CostTarget) -> Option<XnorIsa> {
    match costs::choose(&CANDIDATES, 1, 1, macs, target)? {
        Strategy::XnorZmm => Some(XnorIsa::Zmm),
        Strategy::XnorYmm => Some(XnorIsa::Ymm),
        _ => None,
    }
}

/// The G MAC/s of the fastest 1-bit strategy on `target` (0 when none may run): what
/// the u8 x i8 tiles compete with for bipolar layers.
pub(crate) fn best_gmacs(target: CostTarget) -> f64 {
    costs::choose(&CANDIDATES, 1, 1, 1, target)
        .and_then(|s| costs::gmacs(s, 1, 1, target))
        .unwrap_or(0.0)
}

/// The tile shape (rows, panels) for `m` rows, `np` panels and `words` K words: the
/// fewest modelled cycles over the whole GEMM, counting partial tiles at the edges, a
/// fixed cost per tile (the call) and the epilogue: per panel of i32 stores, or
/// (`in_tile`) per vector the tile requantizes (a zmm vector holds two panels, so an
/// odd panel count wastes half of one).
pub(crate) fn choose_tile(
    isa: XnorIsa,
    (m, np, words): (usize, usize, usize),
    masked: bool,
    in_tile: bool,
    bs: Option<BsPlanes>,
) -> (usize, usize) {
    let mut best = (f64::INFINITY, (1, 1));
    let split = |total: usize, size: usize| -> Vec<(usize, usize)> {
        let mut t = vec![(size, total / size)];
        if !total.is_multiple_of(size) {
            t.push((total % size, 1));
        }
        t
    };
    for panels in 1..=isa.max_panels().min(np.max(1)) {
        for rows in 1..=isa.max_rows(panels, bs).min(m.max(1)) {
            let mut cost = 0.0;
            for &(r, rc) in &split(m.max(1), rows) {
                for &(p, pc) in &split(np.max(1), panels) {
                    let epi = match (in_tile, isa) {
                        (false, _) => 4.0 * (r * p) as f64,
                        (true, XnorIsa::Zmm) => 16.0 * (r * p.div_ceil(2)) as f64,
                        (true, XnorIsa::Ymm) => 16.0 * (r * p) as f64,
                    };
                    let per = words as f64 * isa.step_cycles(r, p, masked, bs) + epi + 20.0;
                    cost += per * (rc * pc) as f64;
                }
            }
            if cost < best.0 {
                best = (cost, (rows, panels));
            }
        }
    }
    best.1
}

/// The wide tile of one 1-bit GEMM, chosen at selection (it decides the workspace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct XnorWide {
    pub isa: XnorIsa,
    pub rows: usize,
    pub panels: usize,
    /// A bit-serial GEMM's planes.
    pub bs: Option<BsPlanes>,
}

impl XnorWide {
    /// The tile for a GEMM of `m` rows and `n` columns over `k` bits; `in_tile`: its
    /// epilogue will likely be in the tile.
    pub fn new(
        isa: XnorIsa,
        (m, n, k): (usize, usize, usize),
        masked: bool,
        in_tile: bool,
        bs: Option<BsPlanes>,
    ) -> XnorWide {
        let (rows, panels) = choose_tile(
            isa,
            (m, n.div_ceil(PANEL), k.div_ceil(64)),
            masked,
            in_tile,
            bs,
        );
        XnorWide {
            isa,
            rows,
            panels,
            bs,
        }
    }

    /// Planes of a row and of a panel (1 and 1 for the XNOR tiles).
    pub fn planes(&self) -> (usize, usize) {
        self.bs
            .map_or((1, 1), |b| (b.rows as usize, b.cols as usize))
    }

    /// Bytes of one result row for `n` columns (whole panels of i32).
    pub fn buf_row(n: usize) -> usize {
        n.div_ceil(PANEL) * PANEL * 4
    }

    /// Bytes of the result rows for `n` columns (or of the in-tile requantize's sums:
    /// at most one panel more).
    pub fn buf_bytes(&self, n: usize) -> usize {
        self.rows * (Self::buf_row(n) + PANEL * 4)
    }

    /// The in-tile requantize's table (`dot::epi_table`) for `rq` with the constant
    /// bias `add` per channel, where the tile's tier has the form it needs.
    pub fn rq_table(&self, rq: &Requant, add: &[i32]) -> Option<Vec<u8>> {
        let isa = match self.isa {
            XnorIsa::Zmm => DotIsa::Vnni512,
            XnorIsa::Ymm => DotIsa::Avx2,
        };
        if !rq.vector_ok() {
            return None;
        }
        crate::backend::kernels::dot::epi_table(rq, add, isa)
    }

    /// Bytes of the layer block before the channels of [`XnorWide::rq_table`].
    pub fn rq_header(&self) -> usize {
        crate::backend::kernels::dot::epi_header(match self.isa {
            XnorIsa::Zmm => DotIsa::Vnni512,
            XnorIsa::Ymm => DotIsa::Avx2,
        })
    }

    /// The in-tile threshold's table for `th` (its i32 table, `k` entries per row or
    /// one row shared) on `m` channels with the constant `bias` (empty: none), where
    /// the tile has it (at most three thresholds) and every `dot + bias` stays
    /// below `i32::MAX` (so that thresholds above the i32 range, clamped to it, are
    /// never reached): per channel the bias and the thresholds as i32, 16 bytes.
    pub fn thr_table(&self, th: &Thresh, m: usize, k: usize, bias: &[i64]) -> Option<Vec<u8>> {
        let bmax = bias.iter().map(|b| b.unsigned_abs()).max().unwrap_or(0);
        if th.k > 3 || (k as u64) + bmax >= i32::MAX as u64 {
            return None;
        }
        let mut out = Vec::with_capacity(m * 16);
        for ch in 0..m {
            let b = bias.get(ch).copied().unwrap_or(0) as i32;
            out.extend(b.to_le_bytes());
            let row = if th.shared { 0 } else { ch };
            for j in 0..3 {
                let t = th.table.get(row * th.k + j).copied().unwrap_or(0);
                let t = t.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
                out.extend(t.to_le_bytes());
            }
        }
        Some(out)
    }
}

/// One 1-bit GEMM for the wide tiles: `out[r*ldc + c] = epi(valid(c) - 2 *
/// popcount((L[r] ^ R[c]) & M[c]))`, L row-major `[rows][KW]` words, R (and M) in
/// panels of [`PANEL`] columns.
pub(crate) struct WideGemm<'t> {
    pub left: Value,
    pub right: Value,
    /// The validity mask (panel layout) and the valid counts (i32 per column, whole
    /// panels), for a convolution with padding.
    pub mask: Option<(Value, Value)>,
    pub rows: usize,
    pub cols: usize,
    pub k: usize,
    pub out: Value,
    /// Result rows (`XnorWide::buf_bytes`), in the workspace.
    pub buf: Value,
    pub acc: AccStore<'t>,
    /// With the in-tile epilogue: its table (the requantize's layer constants) and
    /// the group's first channel in it (before any header).
    pub epi_tab: Option<(Value, Value)>,
}

/// The assembled tiles of one GEMM shape, declared in the kernel's function: per
/// (rows, panels, valid columns).
pub(crate) struct WideFns {
    w: XnorWide,
    fns: BTreeMap<(usize, usize, usize), FuncRef>,
    /// Leading column tiles whose columns all exist, then the others (first panel,
    /// panels).
    clean: usize,
    rest: Vec<(usize, usize)>,
    epi: bool,
    /// Bytes of the in-tile epilogue table's layer block.
    header: usize,
}

impl WideFns {
    /// Declares the tiles that a GEMM of `m x n` over `k` bits needs, with the
    /// epilogue `epi`.
    #[allow(clippy::too_many_arguments, reason = "one GEMM's geometry")]
    pub fn new(
        cx: &mut Ecx<'_, '_, '_, '_>,
        w: XnorWide,
        m: usize,
        n: usize,
        k: usize,
        masked: bool,
        epi: EpiKind,
    ) -> WideFns {
        debug_assert!(cx.kb.feat.tier.is_some_and(|t| match w.isa {
            XnorIsa::Zmm => t.avx512_vpopcntdq(),
            XnorIsa::Ymm => t.avx2(),
        }));
        let words = k.div_ceil(64);
        let np = n.div_ceil(PANEL);
        let mut rows = vec![w.rows.min(m)];
        if m > w.rows && !m.is_multiple_of(w.rows) {
            rows.push(m % w.rows);
        }
        let pp = w.panels;
        let full = np / pp;
        let clean = if full > 0 && full * pp * PANEL > n {
            full - 1
        } else {
            full
        };
        let mut rest: Vec<(usize, usize)> = (clean..full).map(|t| (t * pp, pp)).collect();
        if !np.is_multiple_of(pp) {
            rest.push((full * pp, np % pp));
        }
        let mut cols: Vec<(usize, usize)> = Vec::new();
        if clean > 0 {
            cols.push((pp, pp * PANEL));
        }
        cols.extend(
            rest.iter()
                .map(|&(p0, p)| (p, (n - p0 * PANEL).min(p * PANEL))),
        );
        let mut fns = BTreeMap::new();
        for &r in &rows {
            for &(p, valid) in &cols {
                // Without an in-tile epilogue the tiles differ by shape only.
                let in_tile = !matches!(epi, EpiKind::Store);
                let valid = if in_tile { valid } else { 0 };
                let buf_row = match (in_tile, w.isa) {
                    (false, _) => XnorWide::buf_row(n),
                    (true, XnorIsa::Zmm) => p.div_ceil(2) * 64,
                    (true, XnorIsa::Ymm) => p * 32,
                };
                let (pr, pc) = w.planes();
                let f = AsmFn::Xnor(XnorTile {
                    isa: w.isa,
                    rows: r as u8,
                    panels: p as u8,
                    words: words as u32,
                    row_stride: (words * 8 * pr) as u32,
                    panel_stride: (words * PANEL * 8 * pc) as u32,
                    buf_row: buf_row as u32,
                    masked,
                    k: if w.bs.is_some() { 0 } else { k as u32 },
                    bs: w.bs,
                    epi: match epi {
                        EpiKind::Store => None,
                        EpiKind::Requant(e) => Some(XnorEpi::Requant(e.dot(valid))),
                        EpiKind::Thresh {
                            k,
                            base,
                            inc,
                            elem,
                            unsigned,
                            row_bytes,
                        } => Some(XnorEpi::Thresh(ThrEpi {
                            k,
                            base,
                            inc,
                            elem,
                            unsigned,
                            row_bytes,
                            valid,
                        })),
                    },
                });
                let fr = cx.data.asm_func(cx.kb.b.func, &f);
                fns.insert((r, p, valid), fr);
            }
        }
        WideFns {
            w,
            fns,
            clean,
            rest,
            epi: !matches!(epi, EpiKind::Store),
            header: match epi {
                EpiKind::Requant(_) => w.rq_header(),
                _ => 0,
            },
        }
    }
}

/// The GEMM `g` with the tiles of `f`: for each row tile, the tiles along all columns
/// fill the result rows, then Cranelift's epilogue stores them; or each tile
/// requantizes and stores its own outputs.
pub(crate) fn emit_gemm(kb: &mut Kb<'_, '_>, g: &WideGemm<'_>, f: &WideFns) {
    let words = g.k.div_ceil(64);
    let (mr, pp) = (f.w.rows, f.w.panels);
    let (pr, pc) = f.w.planes();
    let ps = (words * PANEL * 8 * pc) as i64;
    let buf_row = XnorWide::buf_row(g.cols) as i64;
    let ob = g.acc.st_out.bytes() as i64;
    let row_tile = |kb: &mut Kb<'_, '_>, row0: Value, rv: usize| {
        let lp = kb.idx(g.left, row0, (words * 8 * pr) as i64);
        let call = |kb: &mut Kb<'_, '_>, p0: Value, pv: usize, valid: usize| {
            let rp = kb.idx(g.right, p0, ps);
            let (mp, vp) = match g.mask {
                Some((mask, valid)) => {
                    (kb.idx(mask, p0, ps), kb.idx(valid, p0, (PANEL * 4) as i64))
                }
                None => (kb.c(0), kb.c(0)),
            };
            if f.epi {
                let fr = f.fns[&(rv, pv, valid)];
                let out_row = kb.idx(g.out, row0, g.acc.ldc as i64 * ob);
                let out_tile = kb.idx(out_row, p0, PANEL as i64 * ob);
                let (tab, chans) = g.epi_tab.expect("an in-tile epilogue has its table");
                let chans = kb.idx(chans, row0, 16);
                let chans = kb.off(chans, f.header as i64);
                let args = [lp, rp, g.buf, mp, vp, out_tile, tab, chans];
                kb.b.ins().call(fr, &args);
                return;
            }
            let fr = f.fns[&(rv, pv, 0)];
            let bp = kb.idx(g.buf, p0, (PANEL * 4) as i64);
            let mut args = vec![lp, rp, bp];
            if g.mask.is_some() {
                args.extend([mp, vp]);
            }
            kb.b.ins().call(fr, &args);
        };
        if f.clean > 0 {
            kb.for_range(0, f.clean as i64, 1, |kb, t| {
                let p0 = kb.b.ins().imul_imm_s(t, pp as i64);
                call(kb, p0, pp, pp * PANEL);
            });
        }
        for &(p0, pv) in &f.rest {
            let valid = (g.cols - p0 * PANEL).min(pv * PANEL);
            let p0 = kb.c(p0 as i64);
            call(kb, p0, pv, valid);
        }
        if !f.epi {
            g.acc
                .flush_rows(kb, g.buf, buf_row, row0, rv, g.cols, g.out, ob);
        }
    };
    let full = g.rows / mr;
    if full > 0 {
        kb.for_range(0, full as i64, 1, |kb, t| {
            let row0 = kb.b.ins().imul_imm_s(t, mr as i64);
            row_tile(kb, row0, mr);
        });
    }
    if !g.rows.is_multiple_of(mr) {
        let row0 = kb.c((full * mr) as i64);
        row_tile(kb, row0, g.rows % mr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_fit_the_registers() {
        for isa in [XnorIsa::Zmm, XnorIsa::Ymm] {
            for (m, np, w, masked) in [
                (16, 128, 3, true),
                (64, 392, 9, false),
                (1, 1, 1, false),
                (10, 1, 72, true),
                (3, 7, 1, false),
            ] {
                let (r, p) = choose_tile(isa, (m, np, w), masked, masked, None);
                assert!(r >= 1 && p >= 1 && r <= m.max(1) && p <= np.max(1));
                assert!(
                    p <= isa.max_panels() && r <= isa.max_rows(p, None),
                    "{isa:?}"
                );
                let base = match isa {
                    XnorIsa::Zmm => r * p + p + 1 + 3,
                    XnorIsa::Ymm => 2 * r * p + 2 * p + 5,
                };
                assert!(base <= if isa == XnorIsa::Zmm { 32 } else { 16 });
            }
        }
    }

    #[test]
    fn tiles_disassemble_as_their_tier() {
        let t = |isa, masked| XnorTile {
            isa,
            rows: 3,
            panels: 1,
            words: 70,
            row_stride: 560,
            panel_stride: 4480,
            buf_row: 96,
            masked,
            k: 4444,
            epi: None,
            bs: None,
        };
        let z = crate::backend::asm::disassemble(&t(XnorIsa::Zmm, false).assemble().unwrap());
        assert!(
            z.contains("vpopcntq zmm") && z.contains("vpxorq zmm"),
            "{z}"
        );
        let zm = crate::backend::asm::disassemble(&t(XnorIsa::Zmm, true).assemble().unwrap());
        assert!(zm.contains("vpternlogq zmm"), "{zm}");
        let y = crate::backend::asm::disassemble(&t(XnorIsa::Ymm, true).assemble().unwrap());
        assert!(
            y.contains("vpshufb ymm") && y.contains("vpsadbw ymm"),
            "{y}"
        );
        assert!(!y.contains("zmm"), "{y}");
        assert!(
            y.trim_end().ends_with("ret") && y.contains("vzeroupper"),
            "{y}"
        );
        assert_ne!(
            t(XnorIsa::Zmm, true).symbol(),
            t(XnorIsa::Zmm, false).symbol()
        );
    }
}
