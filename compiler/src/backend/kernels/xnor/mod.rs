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

mod tile;

use std::collections::BTreeMap;

use cranelift_codegen::ir::{FuncRef, InstBuilder, Value};

use super::Ecx;
use crate::backend::asm::AsmFn;
use crate::backend::costs::{self, CostTarget, Strategy};
use crate::backend::kb::Kb;
use crate::backend::kernels::quant::AccStore;

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
    /// nibble mask and two temporaries, must fit the registers.
    fn max_rows(self, panels: usize) -> usize {
        match self {
            XnorIsa::Zmm => ((32 - panels - 4) / panels).min(16),
            XnorIsa::Ymm => (16 - 5 - 2 * panels) / (2 * panels),
        }
    }

    /// Modelled cycles of one step (one K word) of a `rows x panels` tile: the larger
    /// of the vector instructions over the ports that take them and the loads.
    fn step_cycles(self, rows: usize, panels: usize, masked: bool) -> f64 {
        let (r, p, m) = (rows as f64, panels as f64, f64::from(u8::from(masked)));
        match self {
            // Three instructions per row and panel on two ports; loads: the panels,
            // the rows, and with a mask one per row and panel, two per cycle.
            XnorIsa::Zmm => (1.5 * r * p).max((r + p + m * r * p) / 2.0),
            // Eight (nine with a mask) per row and half panel on three ports.
            XnorIsa::Ymm => ((8.0 + m) * r * 2.0 * p / 3.0).max((r + 2.0 * p) / 2.0),
        }
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
}

impl XnorTile {
    pub fn symbol(&self) -> String {
        format!(
            "xnor_{}_{}x{}_w{}_r{}_p{}_b{}_{}",
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
        )
    }

    /// Pointer parameters: rows, columns, results (and mask, valid counts).
    pub fn params(&self) -> usize {
        if self.masked { 5 } else { 3 }
    }

    pub fn assemble(&self) -> Result<Vec<u8>, iced_x86::IcedError> {
        match self.isa {
            XnorIsa::Zmm => tile::zmm_tile(self),
            XnorIsa::Ymm => tile::ymm_tile(self),
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
/// fewest modelled cycles over the whole GEMM, counting partial tiles at the edges and
/// a fixed cost per tile (the call, the epilogue).
pub(crate) fn choose_tile(
    isa: XnorIsa,
    m: usize,
    np: usize,
    words: usize,
    masked: bool,
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
        for rows in 1..=isa.max_rows(panels).min(m.max(1)) {
            let mut cost = 0.0;
            for &(r, rc) in &split(m.max(1), rows) {
                for &(p, pc) in &split(np.max(1), panels) {
                    let per =
                        words as f64 * isa.step_cycles(r, p, masked) + 4.0 * (r * p) as f64 + 20.0;
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
}

impl XnorWide {
    /// The tile for a GEMM of `m` rows and `n` columns over `k` bits.
    pub fn new(isa: XnorIsa, m: usize, n: usize, k: usize, masked: bool) -> XnorWide {
        let (rows, panels) = choose_tile(isa, m, n.div_ceil(PANEL), k.div_ceil(64), masked);
        XnorWide { isa, rows, panels }
    }

    /// Bytes of one result row for `n` columns (whole panels of i32).
    pub fn buf_row(n: usize) -> usize {
        n.div_ceil(PANEL) * PANEL * 4
    }

    /// Bytes of the result rows for `n` columns.
    pub fn buf_bytes(&self, n: usize) -> usize {
        self.rows * Self::buf_row(n)
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
}

/// The assembled tiles of one GEMM shape, declared in the kernel's function.
pub(crate) struct WideFns {
    w: XnorWide,
    fns: BTreeMap<(usize, usize), FuncRef>,
}

impl WideFns {
    /// Declares the tiles that a GEMM of `m x n` over `k` bits needs.
    pub fn new(
        cx: &mut Ecx<'_, '_, '_, '_>,
        w: XnorWide,
        m: usize,
        n: usize,
        k: usize,
        masked: bool,
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
        let mut panels = vec![w.panels.min(np)];
        if np > w.panels && !np.is_multiple_of(w.panels) {
            panels.push(np % w.panels);
        }
        let mut fns = BTreeMap::new();
        for &r in &rows {
            for &p in &panels {
                let f = AsmFn::Xnor(XnorTile {
                    isa: w.isa,
                    rows: r as u8,
                    panels: p as u8,
                    words: words as u32,
                    row_stride: (words * 8) as u32,
                    panel_stride: (words * PANEL * 8) as u32,
                    buf_row: XnorWide::buf_row(n) as u32,
                    masked,
                    k: k as u32,
                });
                let fr = cx.data.asm_func(cx.kb.b.func, &f);
                fns.insert((r, p), fr);
            }
        }
        WideFns { w, fns }
    }
}

/// The GEMM `g` with the tiles of `f`: for each row tile, the tiles along all columns
/// fill the result rows, then Cranelift's epilogue stores them.
pub(crate) fn emit_gemm(kb: &mut Kb<'_, '_>, g: &WideGemm<'_>, f: &WideFns) {
    let words = g.k.div_ceil(64);
    let np = g.cols.div_ceil(PANEL);
    let (mr, pp) = (f.w.rows, f.w.panels);
    let ps = (words * PANEL * 8) as i64;
    let buf_row = XnorWide::buf_row(g.cols) as i64;
    let ob = g.acc.st_out.bytes() as i64;
    let row_tile = |kb: &mut Kb<'_, '_>, row0: Value, rv: usize| {
        let lp = kb.idx(g.left, row0, (words * 8) as i64);
        let call = |kb: &mut Kb<'_, '_>, p0: Value, pv: usize| {
            let fr = f.fns[&(rv, pv)];
            let rp = kb.idx(g.right, p0, ps);
            let bp = kb.idx(g.buf, p0, (PANEL * 4) as i64);
            let mut args = vec![lp, rp, bp];
            if let Some((mask, valid)) = g.mask {
                let mp = kb.idx(mask, p0, ps);
                let vp = kb.idx(valid, p0, (PANEL * 4) as i64);
                args.extend([mp, vp]);
            }
            kb.b.ins().call(fr, &args);
        };
        let full = np / pp;
        if full > 0 {
            kb.for_range(0, full as i64, 1, |kb, t| {
                let p0 = kb.b.ins().imul_imm_s(t, pp as i64);
                call(kb, p0, pp);
            });
        }
        if !np.is_multiple_of(pp) {
            let p0 = kb.c((full * pp) as i64);
            call(kb, p0, np % pp);
        }
        g.acc
            .flush_rows(kb, g.buf, buf_row, row0, rv, g.cols, g.out, ob);
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
                let (r, p) = choose_tile(isa, m, np, w, masked);
                assert!(r >= 1 && p >= 1 && r <= m.max(1) && p <= np.max(1));
                assert!(p <= isa.max_panels() && r <= isa.max_rows(p), "{isa:?}");
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
