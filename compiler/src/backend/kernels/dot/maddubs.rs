//! `conv2d_int` / `matmul_int` with SSSE3 `pmaddubsw` (u8 x i8, 16 multiply-adds per
//! instruction) for the layers where it is exact, proven at compile time from the
//! constant weights.
//!
//! - Operands. Activations become unsigned bytes `xu = x + off` (`off = 2^(ab-1)` for
//!   signed codes, else 0; `0 <= xu <= xmax = 2^ab - 1`, padded taps hold `zu = zx +
//!   off`); weights become `w' = w - zw[ch]`, which must fit i8. Then
//!   `sum (x - zx)(w - zw) = sum xu*w' - zu*sum_k w'`: the last term is a per-channel
//!   constant, folded with a constant bias into the fused requantize's table
//!   (`Requant::fold_bias`) or added from a small i32 table; everything is i32
//!   wrap-around arithmetic, i.e. the interpreter's wrap.
//! - Saturation. `pmaddubsw` adds two u8 x i8 products into a saturating i16. It never
//!   saturates when every weight pair it multiplies has `xmax * (pos_a + pos_b) <= 32767`
//!   and `xmax * (neg_a + neg_b) <= 32768` (positive and negative parts of the two
//!   weights). Several results are summed in i16 (`paddw`, wrapping) before one
//!   `pmaddwd` by ones widens them into i32: a group of `G` quads along K, `G` a power
//!   of two chosen per layer (`group_len`) so that the same bound holds for every i16
//!   lane's sum over every aligned group of every weight vector. Every partial sum then
//!   lies between the sums of the negative and of the positive parts, so no i16
//!   addition wraps. With 8-bit activations a pair fails when its weights have one
//!   sign and magnitudes adding up to more than 128. A convolution with 8-bit weights
//!   that fail in K's natural order is given another order of its K rows (shared by all
//!   channels, so one im2col serves them; `pair_order`) in which every pair passes: the
//!   weights are stored in that order and the quad transposition reads the im2col rows
//!   through a table of row offsets (`kpaired` in the kernel name). A layer that fails
//!   in every order tried keeps the `pmaddwd` kernels (i16 widening). Narrow operands give long groups: 4-bit
//!   weights with 8-bit activations 8 quads, with 4-bit ones 128.
//! - Layout (quads along K). The column operand is `[K/4][Np][4]` bytes: one 16-byte
//!   vector holds 4 columns x 4 K; the row operand is rows of K bytes, 4 of them read as
//!   an i32 and splatted. `pmaddubsw` gives 8 i16 (two per column), the i16 group sums
//!   go through `pmaddwd` by ones into 4 i32 per column vector. Conv: rows are the
//!   weights (i8), columns the im2col of `xu` (u8); matmul: rows are the activations
//!   (u8, copied with `off` added), columns the weights (i8, packed at compile time).
//! - Tile: `MR` = 2 rows x `NV` = 4 vectors of 4 columns: 8 i16 sums in registers. With
//!   one group over all of K (or `G = 1`, every product widened at once) the i32 sums
//!   are registers too; with several groups they live in the workspace and take one
//!   load-add-store per group (short groups of 2 are run as `G = 1` instead). The first
//!   quad defines the sums (no zero vector lives across the loops). The rows are read
//!   with `RO` flags where no store follows in the kernel (pure loads, placed next to
//!   their use; the column loads stay in program order, hence no K unrolling). The
//!   tiles run rows-outer or columns-outer, whichever re-reads fewer bytes from L2.
//! - im2col (conv): the valid taps are copied row by row into `[Kp][P16]` byte rows
//!   (vector copies for unit strides, everything else prefilled with `zu` once per
//!   call), then transposed 4 rows at a time into the quad layout with `punpck*`.
//! - Weights of fewer than 8 bits are stored bit-packed (`VPack`: `b` bits per weight,
//!   each row padded to a vector of 16) and unpacked to i8 at the start of the layer
//!   with vector shifts and masks, 16 weights at a time (`packw`'s scalar unpacking
//!   would cost about as much as the GEMM on the small layers).
//! - Epilogue: `AccStore::store_vec` (run-time bias, fused requantize, or the i32 store)
//!   on each i32x4 accumulator, after the correction (per row or per column vector).
//! - Selection: [`applies`] (SSSE3 through the cost target, the check, and the measured
//!   cost table against the other integer kernels and the bit-serial one).

use cranelift_codegen::ir::types::{I8X16, I16X8, I32, I32X4, I64, I64X2};
use cranelift_codegen::ir::{ConstantData, InstBuilder, Value};
use cranelift_frontend::Variable;
use qcc_ir::{ConstData, Module, Node, Op};

use super::super::bitserial;
use super::super::conv::ConvGeom;
use super::super::quant::{self, AccStore, IntEpi, QuantLowering, Requant};
use super::super::{ConstOf, Ecx};
use super::check::*;
pub(crate) use super::check::{Checked, KOrder, Plan, check};
pub(crate) use super::vpack::VPack;
use super::vpack::*;
use super::{DotIsa, DotWindow, Wide};
use crate::backend::asm::{AsmFn, Touch};
use crate::backend::costs::{self, CostTarget, Strategy};
use crate::backend::kb::{Kb, MF, RO};
use crate::backend::storage::Store;

/// The plan of `node` if it is for this kernel: [`check`] passes, with a group, on a
/// target with SSSE3, where the cost table prefers it to the other integer kernels
/// (and to the bit-serial kernel where that one applies).
pub(crate) fn applies(
    m: &Module,
    node: &Node,
    const_of: &ConstOf<'_>,
    target: CostTarget,
) -> Option<Plan> {
    if !matches!(node.op, Op::Conv2dInt | Op::MatMulInt) || node.operands.len() < 2 {
        return None;
    }
    let (xe, we) = (&m.ty(node.operands[0]).elem, &m.ty(node.operands[1]).elem);
    let (ab, _) = int_bits(xe)?;
    let (wb, _) = int_bits(we)?;
    if costs::choose(&[Strategy::Sdot], wb.min(8), ab.min(8), 1, target).is_some() {
        // `sdot` never saturates: every layer whose corrected weights fit i8.
        let c = check(m, node, const_of)?;
        let cands = [Strategy::Int8PackedW, Strategy::Int8Pmaddwd, Strategy::Sdot];
        if costs::choose(&cands, c.weff, c.ab, 1, target) != Some(Strategy::Sdot) {
            return None;
        }
        return beats_bitserial(m, node, const_of, target, &c, Strategy::Sdot).then_some(Plan {
            group: 1,
            order: None,
            sdot: true,
        });
    }
    // No row on this target (no SSSE3, aarch64) or disabled: skip the weights' check.
    costs::choose(&[Strategy::Maddubs], wb.min(8), ab.min(8), 1, target)?;
    let c = check(m, node, const_of)?;
    let group = c.group?;
    let cands = [
        Strategy::Int8PackedW,
        Strategy::Int8Pmaddwd,
        Strategy::Maddubs,
    ];
    if costs::choose(&cands, c.weff, c.ab, 1, target) != Some(Strategy::Maddubs) {
        return None;
    }
    beats_bitserial(m, node, const_of, target, &c, Strategy::Maddubs).then_some(Plan {
        group,
        order: c.order.clone(),
        sdot: false,
    })
}

/// Whether a u8 x i8 kernel (`strategy`) should take a layer that the bit-serial kernel
/// could also run: against the table's rates (long K) scaled by the share of useful
/// bits (bit-serial pays for whole 64-bit words along K, so K = 144 runs 192; these
/// kernels for K rounded to 4), and only where its packed weights take no more bytes
/// than the bit planes (a row's last partial block of 8 vectors costs whole 16-byte
/// inputs here), so that the object's weights keep shrinking with the bits. The wide
/// tiles, several times faster than bit-serial, may spend one 16-byte input more per
/// row (ResNet-20 at 2 bits: K = 144 and 288 cost 48 and 80 bytes per row against
/// 36 and 72).
pub(crate) fn beats_bitserial(
    m: &Module,
    node: &Node,
    const_of: &ConstOf<'_>,
    target: CostTarget,
    c: &Checked,
    strategy: Strategy,
) -> bool {
    let Some(bits) = bitserial::applies(m, node, const_of, target) else {
        return true;
    };
    let (k, wb, ab) = (c.k, c.wb, c.ab);
    let share = |unit: usize| k as f64 / (k.div_ceil(unit) * unit) as f64;
    let bs = bitserial::gmacs(&bits, target).map(|g| g * share(64));
    let md = costs::gmacs(strategy, wb, ab, target).map(|g| g * share(4));
    let md_bytes = VPack {
        bits: wb,
        signed: true,
    }
    .row_vecs(k)
        * 16;
    let slack = if strategy == Strategy::Maddubs { 0 } else { 16 };
    bs.unwrap_or(0.0) < md.unwrap_or(0.0)
        && md_bytes <= bitserial::row_bytes(k, wb as usize) + slack
}

#[derive(Clone, Debug)]
pub(crate) enum MdKind {
    Conv {
        g: ConvGeom,
    },
    MatMul {
        m: usize,
        n: usize,
        k: usize,
        batches: Vec<(usize, usize)>,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct MdLowering {
    pub kind: MdKind,
    /// The activations' zero point, and what is added to each code (`xu = x + off`).
    pub zx: i64,
    pub off: i64,
    pub st_x: Store,
    /// The weights' zero point per channel (conv: `M`, matmul: `N`).
    pub zw: Vec<i64>,
    /// Weights of fewer than 8 bits: stored bit-packed, unpacked at run time.
    pub pack: Option<VPack>,
    /// Quads per i16 group (1: every `pmaddubsw` is widened at once).
    pub group: usize,
    /// Conv: the K order that makes `pmaddubsw` exact, if not the natural one.
    pub order: Option<KOrder>,
    pub epi: IntEpi,
    /// The assembled wide tile's instruction set (`dot`), instead of the 128-bit tile.
    pub wide: Option<DotIsa>,
    /// aarch64 `sdot` instead of `pmaddubsw` in the 128-bit tile: both operands signed,
    /// the activations' bytes `xs = x + off` with `off` 128 less than `pmaddubsw`'s
    /// (so `xs = xu - 128`, and the correction's `zu` 128 less too).
    pub sdot: bool,
    /// What a conv kernel with bit-packed weights does with them (the threaded entry
    /// unpacks them once per layer, in parallel, for all its bands: `split.rs`).
    pub phase: MdPhase,
    /// Conv: the elements of one channel plane of the input and of the output when they
    /// are not the geometry's (a band of rows of a larger image, read and written in
    /// place; `split.rs`).
    pub planes: Option<(usize, usize)>,
}

/// The part of a conv with bit-packed weights a kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MdPhase {
    /// Everything: unpack the weights into the workspace, then the convolution.
    Full,
    /// Only unpack weight rows `r0..r1` (output channels) into the result, at their
    /// place in the `[M][Kp]` i8 rows.
    UnpackRows(usize, usize),
    /// The whole im2col, but only output channels `c0..c1` (one group): their weight
    /// rows unpacked, their GEMM rows, their outputs (a task of the threaded entry).
    Chans(usize, usize),
    /// The convolution, with the unpacked `[M][Kp]` rows given as the run-time operand
    /// in the weights' place.
    Prepared,
}

impl MdLowering {
    /// Bytes of the unpacked `[M][Kp]` weight rows of a conv with bit-packed weights
    /// (what [`MdPhase::UnpackRows`] writes; None for other lowerings), and whether
    /// disjoint ranges of rows may be unpacked concurrently (each row's writes stay in
    /// the row: `Kp` a multiple of 16).
    pub(crate) fn unpacked_rows(&self) -> Option<(usize, bool)> {
        match (&self.kind, self.pack) {
            (MdKind::Conv { g }, Some(_)) if g.group == 1 => {
                let kpp = self.krow();
                Some(((g.m * kpp).div_ceil(16) * 16 + 16, kpp.is_multiple_of(16)))
            }
            _ => None,
        }
    }

    /// A convolution the wide tile computes directly ([`DotWindow`]): stride 1, no
    /// dilation, one group, output rows a whole number of the tile's vectors (or rows of
    /// 4 or 8 pixels that fill whole vectors), on activations in the natural K order. Its input is repacked per call into
    /// `[C/4][Hp][Wp][4]` (padding taps holding the zero point) instead of im2col's
    /// patch rows and their transposition, about a ninth of the bytes for a 3x3 window.
    pub(crate) fn window(&self) -> Option<DotWindow> {
        let (MdKind::Conv { g }, Some(isa)) = (&self.kind, self.wide) else {
            return None;
        };
        let s2 = (g.sh, g.sw) == (2, 2);
        let ok = g.group == 1
            && ((g.sh, g.sw) == (1, 1) || s2)
            && (g.dh, g.dw) == (1, 1)
            && g.oh > 0
            && g.ow > 0
            && DotWindow::fits(g.ow, isa.lanes(), 1)
            // Vectors of several rows: no vector past the last row.
            && (g.ow >= isa.lanes() || g.npix().is_multiple_of(isa.lanes()))
            && self.order.is_none()
            && !self.sdot
            && DIRECT.with(|d| d.get());
        // The padded input the window reads (stride 2: in four phase planes of half
        // its rows and columns, rounded up).
        let (hp, wp) = (g.sh * (g.oh - 1) + g.kh, g.sw * (g.ow - 1) + g.kw);
        let (hq, wq, phases) = if s2 {
            (hp.div_ceil(2), wp.div_ceil(2), 4)
        } else {
            (hp, wp, 1)
        };
        ok.then(|| DotWindow {
            kh: g.kh as u8,
            kw: g.kw as u8,
            stride: g.sh as u8,
            wp: wq as u32,
            ow: g.ow as u32,
            hq: if s2 { hq as u32 } else { 0 },
            groups: g.c.div_ceil(4) as u32,
            plane: (phases * hq * wq * 4) as u32,
        })
    }

    /// Workspace bytes of a convolution's patches: im2col's byte rows and their quad
    /// layout, or the direct convolution's repacked input (whole 64-byte lines).
    fn patch_bytes(&self, g: &ConvGeom) -> usize {
        match self.window() {
            Some(w) => (w.groups as usize * w.plane as usize).div_ceil(64) * 64,
            None => 2 * kp(g.kdim()) * p16(g.npix()),
        }
    }

    /// K positions of a weight row: K rounded to quads, or for a direct convolution
    /// `[C/4][taps][4]` rounded to 16 (rows unpacked 16 at a time stay in their row).
    pub(crate) fn krow(&self) -> usize {
        match (&self.kind, self.window()) {
            (_, Some(w)) => (w.groups as usize * w.taps() * 4).div_ceil(16) * 16,
            (MdKind::Conv { g }, None) => kp(g.kdim()),
            (MdKind::MatMul { k, .. }, None) => kp(*k),
        }
    }
}

thread_local! {
    static DIRECT: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Runs `f` (a compilation on this thread) with direct convolutions
/// ([`MdLowering::window`]) allowed or not: tests and benchmarks compare them with
/// im2col.
pub fn with_direct<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let saved = DIRECT.with(|d| d.replace(on));
    let r = f();
    DIRECT.with(|d| d.set(saved));
    r
}

/// Quads per iteration of the K loops (1 and 2 measured alike; 4 spills).
const UNROLL: usize = 1;

/// Workspace bytes of one tile's i32 sums (at most 16 vectors).
const ACC_BYTES: usize = 256;

/// The tile: `MR` rows x `NV` vectors of 4 columns (measured on the project's
/// machine: 2x4 beat 4x2, 3x4, 4x3, 2x5 and 1x8; 8 i16 sums, 4 column vectors, a
/// row vector and a product in 14 of the 16 xmm registers).
const MR: usize = 2;
const NV: usize = 4;

pub(super) fn kp(k: usize) -> usize {
    k.div_ceil(4) * 4
}

/// Columns of the quad layout of a matmul's weights: whole vectors of the tile
/// (4 columns for xmm, 8 for ymm, 16 for zmm).
fn np4(n: usize, wide: Option<DotIsa>) -> usize {
    let a = wide.map_or(4, |w| w.lanes());
    n.div_ceil(a) * a
}

/// Pixels of one im2col row (a multiple of 16 for the transposition).
fn p16(npix: usize) -> usize {
    npix.div_ceil(16) * 16
}

impl MdLowering {
    pub fn kernel_name(&self) -> String {
        if let Some(w) = self.wide {
            let packed = self
                .pack
                .map_or(String::new(), |p| format!(".w{}packed", p.bits));
            let rq = self.epi.suffix();
            let kpair = if self.order.is_some() { ".kpaired" } else { "" };
            let body = format!("{}.{}{packed}{kpair}{rq}", w.name(), self.st_x.name());
            return match &self.kind {
                MdKind::Conv { .. } if self.window().is_some() => {
                    format!("conv2d_int.direct+{body}")
                }
                MdKind::Conv { .. } => format!("conv2d_int.im2col+{body}"),
                MdKind::MatMul { .. } => format!("matmul_int.{body}"),
            };
        }
        let (mr, nv) = (MR, NV);
        let packed = self
            .pack
            .map_or(String::new(), |p| format!(".w{}packed", p.bits));
        let rq = self.epi.suffix();
        let kpair = if self.order.is_some() { ".kpaired" } else { "" };
        if self.sdot {
            let body = format!("sdot{mr}x{}.{}{packed}{rq}", 4 * nv, self.st_x.name());
            return match &self.kind {
                MdKind::Conv { .. } => format!("conv2d_int.im2col+{body}"),
                MdKind::MatMul { .. } => format!("matmul_int.{body}"),
            };
        }
        let body = format!(
            "pmaddubsw{mr}x{}.{}{packed}{kpair}.g{}{rq}",
            4 * nv,
            self.st_x.name(),
            self.group
        );
        match &self.kind {
            MdKind::Conv { .. } => format!("conv2d_int.im2col+{body}"),
            MdKind::MatMul { .. } => format!("matmul_int.{body}"),
        }
    }

    /// Workspace: conv: byte rows of the patches, their quad layout, the unpacked
    /// weights; matmul: the activation rows, the unpacked weights; then the tile's i32
    /// sums ([`ACC_BYTES`]).
    pub fn workspace(&self) -> usize {
        self.acc_offset()
            + if self.wide.is_some() {
                super::Wide::ACC_BYTES
            } else {
                ACC_BYTES
            }
    }

    /// The CPU tier the kernel needs beyond the target's 128-bit code, if any.
    pub fn tier(&self) -> Option<&'static str> {
        self.wide.map(|w| w.tier())
    }

    /// Where the tile's i32 sums are in the workspace.
    fn acc_offset(&self) -> usize {
        match &self.kind {
            MdKind::Conv { g } => {
                self.patch_bytes(g)
                    + if self.pack.is_some() {
                        (g.m * self.krow()).div_ceil(16) * 16 + 16
                    } else {
                        0
                    }
            }
            MdKind::MatMul { m, n, k, .. } => {
                (m * kp(*k)).div_ceil(16) * 16
                    + if self.pack.is_some() {
                        kp(*k) * np4(*n, self.wide)
                    } else {
                        0
                    }
            }
        }
    }

    pub fn macs(&self) -> u64 {
        match &self.kind {
            MdKind::Conv { g } => g.macs(),
            MdKind::MatMul {
                m, n, k, batches, ..
            } => (batches.len() * m * n * k) as u64,
        }
    }
}

/// The lowering of a node [`applies`] accepted: the integer path's own checks and
/// epilogue (`quant::select`), then this kernel's operands.
pub(crate) fn select(
    m: &Module,
    node: &Node,
    fused: Option<&Node>,
    const_of: &ConstOf<'_>,
    plan: Plan,
    wide: Option<DotIsa>,
) -> Result<MdLowering, String> {
    let xe = &m.ty(node.operands[0]).elem;
    let we = &m.ty(node.operands[1]).elem;
    let (ab, asigned) = int_bits(xe).ok_or("integer activations expected")?;
    let off = if asigned { 1i64 << (ab - 1) } else { 0 };
    let off = if plan.sdot { off - 128 } else { off };
    let pack_of = |zw: &[i64]| -> Option<VPack> {
        let (wb, ws) = int_bits(we)?;
        let (lo, hi) = we.code_range()?;
        // Padding codes are the zero point (unpacked to 0): it must be a code.
        (wb < 8 && zw.iter().all(|z| (lo..=hi).contains(z))).then_some(VPack {
            bits: wb,
            signed: ws,
        })
    };
    // Only the wide tiles' epilogue (Cranelift's `AccStore`) applies a fused threshold.
    match quant::select_thr(m, node, fused, const_of, wide.is_some())? {
        QuantLowering::ConvInt {
            g,
            zx,
            zw,
            st_x,
            epi,
            ..
        } => Ok(MdLowering {
            kind: MdKind::Conv { g },
            zx,
            off,
            st_x,
            pack: pack_of(&zw),
            zw,
            group: plan.group,
            order: plan.order.clone(),
            epi,
            wide,
            sdot: plan.sdot,
            phase: MdPhase::Full,
            planes: None,
        }),
        QuantLowering::MatMulInt {
            m,
            n,
            k,
            batches,
            za,
            zb,
            st_a,
            b_const: true,
            epi,
            ..
        } => Ok(MdLowering {
            kind: MdKind::MatMul { m, n, k, batches },
            zx: za,
            off,
            st_x: st_a,
            pack: pack_of(&zb),
            zw: zb,
            group: plan.group,
            order: None,
            epi,
            wide,
            sdot: plan.sdot,
            phase: MdPhase::Full,
            planes: None,
        }),
        _ => Err("pmaddubsw: not a conv2d_int or matmul_int with constant weights".into()),
    }
}

// ---------------------------------------------------------------------------------
// The GEMM.

/// `out[i, j] = epi(corr[ch] + sum_kk R[i, kk] * C[kk, j])` with `R` rows of bytes at
/// `rows + i * row_stride` and `C` in the quad layout `[quads][pitch][4]` at `cols`;
/// `rows_signed`: the rows are the i8 operand (conv), else the columns (matmul).
pub(crate) struct Gemm<'t> {
    pub m: usize,
    pub n: usize,
    pub quads: usize,
    pub rows: Value,
    pub row_stride: i64,
    pub cols: Value,
    pub pitch: usize,
    pub rows_signed: bool,
    /// Both operands signed, each quad summed by the `sdot` tree ([`sdot_quads`]).
    pub sdot: bool,
    /// Whether the rows may be read with `RO` flags (pure loads, which become
    /// `vbroadcastss` from memory next to their use): true when every row byte is written
    /// before the first GEMM that reads it and never again in the kernel.
    pub rows_ro: bool,
    pub group: usize,
    /// Scratch for one tile's i32 sums (`MR * NV * 16` bytes).
    pub acc_mem: Value,
    pub out: Value,
    /// i32 per channel, added to the accumulators (rows or columns: `acc.chan_of_row`).
    pub corr: Option<Value>,
    pub acc: AccStore<'t>,
    /// The assembled wide tiles, when the layer takes them (`dot`).
    pub wide: Option<&'t super::Wide>,
    /// The tiles' own requantize (`dot::epi_table`): the table, and the address from
    /// which this GEMM's channels count (the channels follow the table's 64 bytes).
    pub epi_tab: Option<(Value, Value)>,
}

fn emit_gemm(kb: &mut Kb<'_, '_>, g: &Gemm<'_>) {
    if let Some(w) = g.wide {
        return super::emit_gemm(kb, g, w);
    }
    let (mr, nv) = (MR, NV);
    let mut row_groups = Vec::new();
    if g.m / mr > 0 {
        row_groups.push((0, mr, g.m / mr));
    }
    if !g.m.is_multiple_of(mr) {
        row_groups.push((g.m / mr * mr, g.m % mr, 1));
    }
    let tiles_full = g.n / (4 * nv);
    let col_tail = (g.n - tiles_full * 4 * nv).div_ceil(4);
    // One row tile (`rows` rows from `row0`) by the column tile at `col0`.
    let one = |kb: &mut Kb<'_, '_>, rows: usize, row0: Value, col0: Option<Value>| match col0 {
        Some(c) => tile(kb, g, rows, nv, row0, c, None),
        None => {
            let first = tiles_full * 4 * nv;
            let c = kb.c(first as i64);
            tile(kb, g, rows, col_tail, row0, c, Some(first));
        }
    };
    let row_tiles = |kb: &mut Kb<'_, '_>, col0: Option<Value>| {
        for &(first, rows, count) in &row_groups {
            kb.for_range(0, count as i64, 1, |kb, ti| {
                let row0 = kb.b.ins().imul_imm_s(ti, mr as i64);
                let row0 = kb.b.ins().iadd_imm_s(row0, first as i64);
                one(kb, rows, row0, col0);
            });
        }
    };
    // Loop order: the operand read again by every tile of the inner loop should be
    // the one that stays in cache; read from L2 per pass, the rows cost
    // (column tiles) x (row bytes) and the columns (row tiles) x (column bytes).
    let row_bytes = g.m * g.quads * 16;
    let col_bytes = g.quads * g.pitch * 4;
    let col_passes = g.n.div_ceil(4 * nv);
    if col_passes * row_bytes <= g.m.div_ceil(mr) * col_bytes {
        if tiles_full > 0 {
            kb.for_range(0, tiles_full as i64, 1, |kb, tj| {
                let col0 = kb.b.ins().imul_imm_s(tj, (4 * nv) as i64);
                row_tiles(kb, Some(col0));
            });
        }
        if col_tail > 0 {
            row_tiles(kb, None);
        }
    } else {
        for &(first, rows, count) in &row_groups {
            kb.for_range(0, count as i64, 1, |kb, ti| {
                let row0 = kb.b.ins().imul_imm_s(ti, mr as i64);
                let row0 = kb.b.ins().iadd_imm_s(row0, first as i64);
                if tiles_full > 0 {
                    kb.for_range(0, tiles_full as i64, 1, |kb, tj| {
                        let col0 = kb.b.ins().imul_imm_s(tj, (4 * nv) as i64);
                        one(kb, rows, row0, Some(col0));
                    });
                }
                if col_tail > 0 {
                    one(kb, rows, row0, None);
                }
            });
        }
    }
}

/// `acc` plus the four quad sums `a[4i..4i+4] . b[4i..4i+4]` of two i8x16 vectors, as
/// the exact i32 tree (i16 products of the widened halves, widened and summed
/// pairwise) that Cranelift lowers to one `sdot` on aarch64 with FEAT_DotProd (and,
/// elsewhere, to the widening multiplies it stands for).
fn sdot_quads(kb: &mut Kb<'_, '_>, a: Value, b: Value, acc: Value) -> Value {
    let ins = |kb: &mut Kb<'_, '_>, lo: bool| {
        let (x, y) = if lo {
            (kb.b.ins().swiden_low(a), kb.b.ins().swiden_low(b))
        } else {
            (kb.b.ins().swiden_high(a), kb.b.ins().swiden_high(b))
        };
        let p = kb.b.ins().imul(x, y);
        let pl = kb.b.ins().swiden_low(p);
        let ph = kb.b.ins().swiden_high(p);
        kb.b.ins().iadd_pairwise(pl, ph)
    };
    let lo = ins(kb, true);
    let hi = ins(kb, false);
    let t = kb.b.ins().iadd_pairwise(lo, hi);
    kb.b.ins().iadd(t, acc)
}

/// The `i16x8 -> i32x4` pair sums: one `pmaddwd` by ones (docs/kernels.md).
fn widen_pairs(kb: &mut Kb<'_, '_>, v: Value) -> Value {
    let lo = kb.b.ins().swiden_low(v);
    let hi = kb.b.ins().swiden_high(v);
    kb.b.ins().iadd_pairwise(lo, hi)
}

/// One tile of `rows` rows from `row0` by `vecs` vectors of 4 columns from `col0`;
/// `tail`: the tail tile's first column (a constant), whose padding lanes are not
/// stored.
///
/// Accumulators: with one i16 group per K (`group >= quads`, or `group == 1`) the i32
/// sums are registers; with several groups they are `g.acc_mem` (one flush per group),
/// so that only the i16 sums are live in the K loop. The first quad of a run defines
/// the sums instead of adding to zero (no zero vector lives across the loops).
#[allow(clippy::too_many_arguments, reason = "one tile's geometry")]
fn tile(
    kb: &mut Kb<'_, '_>,
    g: &Gemm<'_>,
    rows: usize,
    vecs: usize,
    row0: Value,
    col0: Value,
    tail: Option<usize>,
) {
    let ap = kb.idx(g.rows, row0, g.row_stride);
    let bp = kb.idx(g.cols, col0, 4);
    let qb = (g.pitch * 4) as i64;
    let (quads, gl) = (g.quads, g.group);
    let direct = gl == 1;
    let in_mem = !direct && gl < quads;
    let decl = |kb: &mut Kb<'_, '_>, ty| -> Vec<Vec<Variable>> {
        (0..rows)
            .map(|_| (0..vecs).map(|_| kb.b.declare_var(ty)).collect())
            .collect()
    };
    let acc32 = decl(kb, I32X4);
    let acc16 = decl(kb, I16X8);
    // One quad: row bytes at `a + u*4`, column bytes at `b + u*qb`; `init`: the first
    // quad of a run, which defines the sums.
    let step = |kb: &mut Kb<'_, '_>, a: Value, b: Value, u: i64, init: bool| {
        let bv: Vec<Value> = (0..vecs)
            .map(|v| kb.load(I8X16, b, u * qb + (v * 16) as i64))
            .collect();
        for r in 0..rows {
            let off = (u * 4 + r as i64 * g.row_stride) as i32;
            let q =
                kb.b.ins()
                    .load(I32, if g.rows_ro { RO } else { MF }, a, off);
            let av = kb.b.ins().splat(I32X4, q);
            let av = cast(kb, I8X16, av);
            for (v, &bvv) in bv.iter().enumerate() {
                if g.sdot {
                    let var = acc32[r][v];
                    let s = if init {
                        kb.iconst_t(I32X4, 0)
                    } else {
                        kb.b.use_var(var)
                    };
                    let s = sdot_quads(kb, av, bvv, s);
                    kb.b.def_var(var, s);
                    continue;
                }
                // x86_pmaddubsw(signed, unsigned).
                let p = if g.rows_signed {
                    kb.b.ins().x86_pmaddubsw(av, bvv)
                } else {
                    kb.b.ins().x86_pmaddubsw(bvv, av)
                };
                let (var, p) = if direct {
                    (acc32[r][v], widen_pairs(kb, p))
                } else {
                    (acc16[r][v], p)
                };
                let s = if init {
                    p
                } else {
                    let s = kb.b.use_var(var);
                    kb.b.ins().iadd(s, p)
                };
                kb.b.def_var(var, s);
            }
        }
    };
    // `len` quads from quad `q0`: the first one peeled, the rest `unroll` per
    // iteration (the column loads of an iteration are all live at once: they are not
    // pure, so they stay in program order ahead of the arithmetic).
    let unroll = UNROLL;
    let run = |kb: &mut Kb<'_, '_>, q0: Value, len: usize| {
        let a0 = kb.idx(ap, q0, 4);
        let b0 = kb.idx(bp, q0, qb);
        step(kb, a0, b0, 0, true);
        let rest = len - 1;
        if rest <= unroll {
            for u in 1..len {
                step(kb, a0, b0, u as i64, false);
            }
            return;
        }
        let main = rest / unroll * unroll;
        let a1 = kb.off(a0, 4);
        let b1 = kb.off(b0, qb);
        kb.for_range(0, main as i64, unroll as i64, |kb, qi| {
            let a = kb.idx(a1, qi, 4);
            let b = kb.idx(b1, qi, qb);
            for u in 0..unroll {
                step(kb, a, b, u as i64, false);
            }
        });
        for u in main..rest {
            step(kb, a1, b1, u as i64, false);
        }
    };
    let slot = |r: usize, v: usize| ((r * vecs + v) * 16) as i64;
    if in_mem {
        let z = kb.iconst_t(I32X4, 0);
        for r in 0..rows {
            for v in 0..vecs {
                kb.store(z, g.acc_mem, slot(r, v));
            }
        }
        // Each group's i16 sums, widened and added to the tile's i32 sums in memory.
        let group = |kb: &mut Kb<'_, '_>, q0: Value, len: usize| {
            run(kb, q0, len);
            for (r, row) in acc16.iter().enumerate() {
                for (v, &var) in row.iter().enumerate() {
                    let s = kb.b.use_var(var);
                    let d = widen_pairs(kb, s);
                    let m = kb.load(I32X4, g.acc_mem, slot(r, v));
                    let m = kb.b.ins().iadd(m, d);
                    kb.store(m, g.acc_mem, slot(r, v));
                }
            }
        };
        let ng = quads / gl;
        kb.for_range(0, (ng * gl) as i64, gl as i64, |kb, q0| group(kb, q0, gl));
        if !quads.is_multiple_of(gl) {
            let q0 = kb.c((ng * gl) as i64);
            group(kb, q0, quads % gl);
        }
    } else {
        let q0 = kb.c(0);
        run(kb, q0, quads);
        if !direct {
            for (a16, a32) in acc16.iter().zip(&acc32) {
                for (&v16, &v32) in a16.iter().zip(a32) {
                    let s = kb.b.use_var(v16);
                    let d = widen_pairs(kb, s);
                    kb.b.def_var(v32, d);
                }
            }
        }
    }
    // Epilogue.
    store_tile(kb, g, rows, vecs, row0, col0, tail, |kb, r, v| {
        if in_mem {
            kb.load(I32X4, g.acc_mem, slot(r, v))
        } else {
            kb.b.use_var(acc32[r][v])
        }
    });
}

/// The epilogue of one tile of `rows` rows from `row0` by `vecs` i32x4 vectors of
/// columns from `col0` (`tail`: the constant first column of a tile whose columns may
/// run past n; those lanes are not stored): the correction, then `AccStore::store_vec`
/// on each accumulator `sum(kb, r, v)`.
#[allow(clippy::too_many_arguments, reason = "one tile's geometry")]
pub(crate) fn store_tile(
    kb: &mut Kb<'_, '_>,
    g: &Gemm<'_>,
    rows: usize,
    vecs: usize,
    row0: Value,
    col0: Value,
    tail: Option<usize>,
    sum: impl Fn(&mut Kb<'_, '_>, usize, usize) -> Value,
) {
    let ob = g.acc.st_out.bytes() as i64;
    let out_row = kb.idx(g.out, row0, g.acc.ldc as i64 * ob);
    let out_tile = kb.idx(out_row, col0, ob);
    for r in 0..rows {
        for v in 0..vecs {
            let lanes = match tail {
                None => 4,
                Some(first) => g.n.saturating_sub(first + v * 4).min(4),
            };
            if lanes == 0 {
                continue;
            }
            let mut x = sum(kb, r, v);
            if let Some(c) = g.corr {
                let cv = if g.acc.chan_of_row {
                    let p = kb.idx(c, row0, 4);
                    let s = kb.b.ins().load(I32, RO, p, (r * 4) as i32);
                    kb.b.ins().splat(I32X4, s)
                } else {
                    let p = kb.idx(c, col0, 4);
                    kb.b.ins().load(I32X4, RO, p, (v * 16) as i32)
                };
                x = kb.b.ins().iadd(x, cv);
            }
            g.acc
                .store_vec(kb, x, (row0, col0), (r, v * 4), lanes, out_tile, ob);
        }
    }
}

// ---------------------------------------------------------------------------------
// Operand preparation.

/// The splatted activation offset, if any.
fn off_vec(kb: &mut Kb<'_, '_>, off: i64) -> Option<Value> {
    (off != 0).then(|| splat8(kb, off))
}

/// Fills `len` bytes (a multiple of 16) at `p` with the byte `v`.
fn fill_bytes(kb: &mut Kb<'_, '_>, p: Value, len: usize, v: i64) {
    let s = splat8(kb, v);
    let n = (len / 16) as i64;
    if n <= 4 {
        for i in 0..n {
            kb.store(s, p, i * 16);
        }
        return;
    }
    kb.for_range(0, n, 1, |kb, i| {
        let d = kb.idx(p, i, 16);
        kb.store(s, d, 0);
    });
}

/// Copies `len` codes from `src` (`stride` bytes apart) to consecutive bytes at `dst`,
/// adding the activation offset. Unit strides copy vectors (the last one overlapping
/// the previous when `len` is not a multiple: the same bytes again), never touching a
/// byte outside the `len` of either side.
fn copy_codes(
    kb: &mut Kb<'_, '_>,
    src: Value,
    dst: Value,
    len: usize,
    stride: usize,
    off: i64,
    offv: Option<Value>,
) {
    if len == 0 {
        return;
    }
    if stride == 2 && len >= 16 {
        // 16 codes from 32 bytes: the even bytes (`pshufb`s and a `por`); the last
        // chunk overlaps the previous one and takes the odd bytes of a load one byte
        // earlier, so that no byte past the last code is read.
        let even: [u8; 16] = std::array::from_fn(|i| (2 * i) as u8);
        let odd: [u8; 16] = std::array::from_fn(|i| (2 * i + 1) as u8);
        let chunk = |kb: &mut Kb<'_, '_>, s: Value, d: Value, mask: [u8; 16]| {
            let a = kb.load(I8X16, s, 0);
            let b = kb.load(I8X16, s, 16);
            let v = shuffle(kb, a, b, mask);
            let v = match offv {
                Some(o) => kb.b.ins().iadd(v, o),
                None => v,
            };
            kb.store(v, d, 0);
        };
        let full = len / 16;
        if full > 2 {
            kb.for_range(0, full as i64, 1, |kb, i| {
                let s = kb.idx(src, i, 32);
                let d = kb.idx(dst, i, 16);
                chunk(kb, s, d, even);
            });
        } else {
            for i in 0..full {
                let s = kb.off(src, (32 * i) as i64);
                let d = kb.off(dst, (16 * i) as i64);
                chunk(kb, s, d, even);
            }
        }
        if !len.is_multiple_of(16) {
            let s = kb.off(src, (2 * (len - 16)) as i64 - 1);
            let d = kb.off(dst, (len - 16) as i64);
            chunk(kb, s, d, odd);
        }
        return;
    }
    if stride != 1 {
        let body = |kb: &mut Kb<'_, '_>, s: Value, d: Value| {
            let v = kb.b.ins().uload8(I32, MF, s, 0);
            let v = if off != 0 {
                kb.b.ins().iadd_imm_s(v, off)
            } else {
                v
            };
            kb.b.ins().istore8(MF, v, d, 0);
        };
        if len > 8 {
            kb.for_range(0, len as i64, 1, |kb, e| {
                let s = kb.idx(src, e, stride as i64);
                let d = kb.off(dst, 0);
                let d = kb.b.ins().iadd(d, e);
                body(kb, s, d);
            });
        } else {
            for e in 0..len as i64 {
                let s = kb.off(src, e * stride as i64);
                let d = kb.off(dst, e);
                body(kb, s, d);
            }
        }
        return;
    }
    let chunk = |kb: &mut Kb<'_, '_>, at: i64, w: usize| match w {
        16 => {
            let v = kb.load(I8X16, src, at);
            let v = match offv {
                Some(o) => kb.b.ins().iadd(v, o),
                None => v,
            };
            kb.store(v, dst, at);
        }
        8 | 4 => {
            let (st, vt) = if w == 8 { (I64, I64X2) } else { (I32, I32X4) };
            let v = kb.load(st, src, at);
            let v = match offv {
                Some(o) => {
                    let x = kb.b.ins().scalar_to_vector(vt, v);
                    let x = cast(kb, I8X16, x);
                    let x = kb.b.ins().iadd(x, o);
                    let x = cast(kb, vt, x);
                    kb.b.ins().extractlane(x, 0)
                }
                None => v,
            };
            kb.store(v, dst, at);
        }
        _ => {
            let v = kb.b.ins().uload8(I32, MF, src, at as i32);
            let v = if off != 0 {
                kb.b.ins().iadd_imm_s(v, off)
            } else {
                v
            };
            kb.b.ins().istore8(MF, v, dst, at as i32);
        }
    };
    let w = match len {
        16.. => 16,
        8.. => 8,
        4.. => 4,
        _ => 1,
    };
    let full = len / w;
    if w == 16 && full > 4 {
        kb.for_range(0, full as i64, 1, |kb, i| {
            let s = kb.idx(src, i, 16);
            let d = kb.idx(dst, i, 16);
            let v = kb.load(I8X16, s, 0);
            let v = match offv {
                Some(o) => kb.b.ins().iadd(v, o),
                None => v,
            };
            kb.store(v, d, 0);
        });
    } else {
        for i in 0..full {
            chunk(kb, (i * w) as i64, w);
        }
    }
    if !len.is_multiple_of(w) {
        chunk(kb, (len - w) as i64, w);
    }
}

/// A `shuffle` of two i8x16 by a constant byte mask.
fn shuffle(kb: &mut Kb<'_, '_>, a: Value, b: Value, mask: [u8; 16]) -> Value {
    let m =
        kb.b.func
            .dfg
            .immediates
            .push(ConstantData::from(mask.to_vec()));
    kb.b.ins().shuffle(a, b, m)
}

/// Interleave masks (`punpckl/hbw`, `punpckl/hwd`).
fn unpack_masks() -> [[u8; 16]; 4] {
    let mut m = [[0u8; 16]; 4];
    for i in 0..8 {
        m[0][2 * i] = i as u8;
        m[0][2 * i + 1] = 16 + i as u8;
        m[1][2 * i] = 8 + i as u8;
        m[1][2 * i + 1] = 24 + i as u8;
    }
    for i in 0..4 {
        for h in 0..2 {
            m[2][4 * i + h] = (2 * i + h) as u8;
            m[2][4 * i + 2 + h] = (16 + 2 * i + h) as u8;
            m[3][4 * i + h] = (8 + 2 * i + h) as u8;
            m[3][4 * i + 2 + h] = (24 + 2 * i + h) as u8;
        }
    }
    m
}

/// Transposes byte rows `[4q][p16]` at `t` into the quad layout `[q][p16][4]` at `b`.
fn transpose_quads(
    kb: &mut Kb<'_, '_>,
    t: Value,
    b: Value,
    quads: usize,
    p16: usize,
    rows_of: Option<Value>,
) {
    let chunks = (p16 / 16) as i64;
    kb.for_range(0, quads as i64, 1, |kb, q| {
        let bq = kb.idx(b, q, (4 * p16) as i64);
        // The quad's four rows: consecutive, or where the K order puts them.
        let rows: Vec<Value> = match rows_of {
            None => {
                let tq = kb.idx(t, q, (4 * p16) as i64);
                (0..4).map(|i| kb.off(tq, (i * p16) as i64)).collect()
            }
            Some(tab) => {
                let tq = kb.idx(tab, q, 16);
                (0..4)
                    .map(|i| {
                        let o = kb.load(I32, tq, (4 * i) as i64);
                        let o = kb.b.ins().sextend(I64, o);
                        kb.b.ins().iadd(t, o)
                    })
                    .collect()
            }
        };
        let body = |kb: &mut Kb<'_, '_>, c: Value| {
            let r: Vec<Value> = rows
                .iter()
                .map(|&row| {
                    let s = kb.idx(row, c, 16);
                    kb.load(I8X16, s, 0)
                })
                .collect();
            let o = interleave4(kb, [r[0], r[1], r[2], r[3]]);
            let dp = kb.idx(bq, c, 64);
            for (i, &v) in o.iter().enumerate() {
                kb.store(v, dp, (i * 16) as i64);
            }
        };
        kb.for_range(0, chunks, 1, body);
    });
}

/// Fills the padding taps of the byte rows `[K][p16]` at `t` with `zu`: per tap, the
/// output rows above and below the valid ones and the columns left and right of them,
/// in 16-byte stores that may run into valid bytes (im2col writes those afterwards,
/// every call) or into the next row's (the same value).
fn fill_padding(kb: &mut Kb<'_, '_>, g: &ConvGeom, t: Value, p16: usize, zu: i64) {
    let g = *g;
    let s = splat8(kb, zu);
    let span = |kb: &mut Kb<'_, '_>, row: Value, a: usize, b: usize| {
        let n = (b - a).div_ceil(16);
        if n <= 4 {
            for i in 0..n {
                kb.store(s, row, (a + 16 * i) as i64);
            }
        } else {
            let p = kb.off(row, a as i64);
            kb.for_range(0, n as i64, 1, |kb, i| {
                let d = kb.idx(p, i, 16);
                kb.store(s, d, 0);
            });
        }
    };
    let npix = g.npix();
    let mut taps = Vec::new();
    for i in 0..g.kh {
        for j in 0..g.kw {
            let (ylo, yhi) = g.rows_valid(i);
            let (xlo, xhi) = g.cols_valid(j);
            if ylo >= yhi || xlo >= xhi {
                taps.push((i * g.kw + j, vec![(0, npix)], None));
                continue;
            }
            let mut spans = Vec::new();
            if ylo > 0 {
                spans.push((0, ylo * g.ow));
            }
            if yhi < g.oh {
                spans.push((yhi * g.ow, npix));
            }
            let sides = (xlo > 0 || xhi < g.ow).then_some((ylo, yhi, xlo, xhi));
            if !spans.is_empty() || sides.is_some() {
                taps.push((i * g.kw + j, spans, sides));
            }
        }
    }
    if taps.is_empty() {
        return;
    }
    kb.for_range(0, g.cg() as i64, 1, |kb, c| {
        let tc = kb.idx(t, c, (g.kh * g.kw * p16) as i64);
        for (tap, spans, sides) in &taps {
            let row = kb.off(tc, (tap * p16) as i64);
            for &(a, b) in spans {
                span(kb, row, a, b);
            }
            if let Some((ylo, yhi, xlo, xhi)) = *sides {
                kb.for_range(ylo as i64, yhi as i64, 1, |kb, oy| {
                    let r = kb.idx(row, oy, g.ow as i64);
                    if xlo > 0 {
                        span(kb, r, 0, xlo);
                    }
                    if xhi < g.ow {
                        span(kb, r, xhi, g.ow);
                    }
                });
            }
        }
    });
}

/// Writes the valid taps of one group's patches as byte rows `[K][p16]` at `t`
/// (`xu = x + off`; the rest was prefilled with `zu`).
#[allow(clippy::too_many_arguments, reason = "the pieces of one im2col")]
fn im2col_rows(
    kb: &mut Kb<'_, '_>,
    g: &ConvGeom,
    x_plane: usize,
    x: Value,
    t: Value,
    p16: usize,
    off: i64,
    offv: Option<Value>,
) {
    let g = *g;
    kb.for_range(0, g.cg() as i64, 1, |kb, c| {
        let xc = kb.idx(x, c, x_plane as i64);
        let tc = kb.idx(t, c, (g.kh * g.kw * p16) as i64);
        for i in 0..g.kh {
            for j in 0..g.kw {
                let (ylo, yhi) = g.rows_valid(i);
                let (xlo, xhi) = g.cols_valid(j);
                if ylo >= yhi || xlo >= xhi {
                    continue;
                }
                let row = kb.off(tc, ((i * g.kw + j) * p16) as i64);
                let x0 = ((xlo * g.sw + j * g.dw) as i64 - g.left as i64)
                    + ((i * g.dh) as i64 - g.top as i64) * g.w as i64;
                let len = xhi - xlo;
                kb.for_range(ylo as i64, yhi as i64, 1, |kb, oy| {
                    let s = kb.idx(xc, oy, (g.sh * g.w) as i64);
                    let s = kb.off(s, x0);
                    let d = kb.idx(row, oy, g.ow as i64);
                    let d = kb.off(d, xlo as i64);
                    copy_codes(kb, s, d, len, g.sw, off, offv);
                });
            }
        }
    });
}

/// Rows and columns of the input that a direct convolution's window reads (the rest of
/// `[Hp][Wp]` is padding).
fn window_extent(g: &ConvGeom, w: &DotWindow) -> (usize, usize) {
    let (hp, wp) = padded(w);
    (
        g.h.min(hp.saturating_sub(g.top)),
        g.w.min(wp.saturating_sub(g.left)),
    )
}

/// Rows and columns of the padded input a window's planes hold (stride 2: twice a
/// phase plane's).
fn padded(w: &DotWindow) -> (usize, usize) {
    let wp = w.wp as usize;
    if w.stride == 2 {
        (2 * w.hq as usize, 2 * wp)
    } else {
        (w.plane as usize / (4 * wp), wp)
    }
}

/// Stores the byte `zu` over `len` bytes (a multiple of 4) from `p + at`: 16 bytes at a
/// time (`v16`), then words (`w32`).
fn fill_words(kb: &mut Kb<'_, '_>, p: Value, at: usize, len: usize, (v16, w32): (Value, Value)) {
    let n = len / 16;
    if n > 4 {
        let base = kb.off(p, at as i64);
        kb.for_range(0, n as i64, 1, |kb, i| {
            let d = kb.idx(base, i, 16);
            kb.store(v16, d, 0);
        });
    } else {
        for i in 0..n {
            kb.store(v16, p, (at + 16 * i) as i64);
        }
    }
    for i in 0..(len % 16) / 4 {
        kb.store(w32, p, (at + 16 * n + 4 * i) as i64);
    }
}

/// Fills the padding of a direct convolution's repacked input `[C/4][Hp][Wp][4]` at `t`
/// with `zu`, in every channel quad's plane: the rows above and below the input's and,
/// beside each of the input's rows, the columns left and right of it (the rest is
/// [`window_pack`]'s, every call).
fn window_border(kb: &mut Kb<'_, '_>, g: &ConvGeom, w: &DotWindow, t: Value, zu: i64) {
    let (hp, wp) = padded(w);
    let (rows, cols) = window_extent(g, w);
    let right = wp - g.left.min(wp) - cols;
    let v16 = splat8(kb, zu);
    let w32 = kb.b.ins().iconst(I32, (zu as u8 as i64) * 0x0101_0101);
    if w.stride == 2 {
        // The phase planes: all of them (the packing writes the input's pixels after).
        let all = w.groups as usize * w.plane as usize;
        fill_words(kb, t, 0, all, (v16, w32));
        return;
    }
    kb.for_range(0, w.groups as i64, 1, |kb, gq| {
        let tg = kb.idx(t, gq, w.plane as i64);
        fill_words(kb, tg, 0, g.top.min(hp) * wp * 4, (v16, w32));
        let below = g.top.min(hp) + rows;
        fill_words(kb, tg, below * wp * 4, (hp - below) * wp * 4, (v16, w32));
        if (g.left > 0 || right > 0) && rows > 0 {
            kb.for_range(g.top as i64, below as i64, 1, |kb, y| {
                let r = kb.idx(tg, y, (4 * wp) as i64);
                for i in 0..g.left.min(wp) {
                    kb.store(w32, r, (4 * i) as i64);
                }
                for i in 0..right {
                    kb.store(w32, r, (4 * (g.left + cols + i)) as i64);
                }
            });
        }
    });
}

/// Four channel rows' 16 bytes at `s` (`x_plane` bytes apart; `zv` for channels past
/// `chans`), plus the activation offset, interleaved into four vectors of four pixels x
/// four channels (pixel `k` is dword `k % 4` of vector `k / 4`).
fn channel_quad(
    kb: &mut Kb<'_, '_>,
    s: Value,
    x_plane: usize,
    chans: usize,
    (zv, offv): (Value, Option<Value>),
) -> [Value; 4] {
    let r: Vec<Value> = (0..4)
        .map(|i| {
            if i >= chans {
                return zv;
            }
            let v = kb.load(I8X16, s, (i * x_plane) as i64);
            match offv {
                Some(o) => kb.b.ins().iadd(v, o),
                None => v,
            }
        })
        .collect();
    interleave4(kb, [r[0], r[1], r[2], r[3]])
}

/// Interleaves four byte rows of 16 into four vectors of four dwords (`punpck{l,h}bw`
/// then `punpck{l,h}wd`): dword `k % 4` of vector `k / 4` holds byte `k` of each row.
fn interleave4(kb: &mut Kb<'_, '_>, r: [Value; 4]) -> [Value; 4] {
    let [lo8, hi8, lo16, hi16] = unpack_masks();
    let a = shuffle(kb, r[0], r[1], lo8);
    let bb = shuffle(kb, r[0], r[1], hi8);
    let c2 = shuffle(kb, r[2], r[3], lo8);
    let dd = shuffle(kb, r[2], r[3], hi8);
    [
        shuffle(kb, a, c2, lo16),
        shuffle(kb, a, c2, hi16),
        shuffle(kb, bb, dd, lo16),
        shuffle(kb, bb, dd, hi16),
    ]
}

/// One pixel's four channel bytes from `src + px` (`zu` past `chans`), plus the
/// activation offset, stored at `dst`.
fn pack_pixel(
    kb: &mut Kb<'_, '_>,
    (src, px, x_plane, chans): (Value, usize, usize, usize),
    (zu, off): (i64, i64),
    dst: Value,
    at: i32,
) {
    for i in 0..4 {
        let v = if i < chans {
            let v = kb.b.ins().uload8(I32, MF, src, (i * x_plane + px) as i32);
            kb.b.ins().iadd_imm_s(v, off)
        } else {
            kb.b.ins().iconst(I32, zu as u8 as i64)
        };
        kb.b.ins().istore8(MF, v, dst, at + i as i32);
    }
}

/// Runs `group(kb, gq, chans)` for every channel quad of `c` channels: a loop over the
/// full quads, then the last one with `c % 4` channels.
fn for_quads(kb: &mut Kb<'_, '_>, c: usize, mut group: impl FnMut(&mut Kb<'_, '_>, Value, usize)) {
    let (full, part) = (c / 4, c % 4);
    if full > 0 {
        kb.for_range(0, full as i64, 1, |kb, gq| group(kb, gq, 4));
    }
    if part > 0 {
        let gq = kb.c(full as i64);
        group(kb, gq, part);
    }
}

/// Repacks the input `[C][h][w]` at `x` (channel planes `x_plane` bytes apart) into a
/// direct convolution's `[C/4][Hp][Wp][4]` at `t`, adding the activation offset: four
/// channel rows interleaved 16 pixels at a time (`punpck{l,h}bw` then `punpck{l,h}wd`,
/// the last 16 overlapping the previous ones where the row is not a multiple), byte by
/// byte for rows narrower than 16. Channels past C (in the last quad) hold `zu`, which
/// meets zero weights.
#[allow(clippy::too_many_arguments, reason = "the pieces of one repacking")]
fn window_pack(
    kb: &mut Kb<'_, '_>,
    g: &ConvGeom,
    w: &DotWindow,
    x_plane: usize,
    x: Value,
    t: Value,
    (zu, off, offv): (i64, i64, Option<Value>),
) {
    let (rows, cols) = window_extent(g, w);
    if rows == 0 || cols == 0 {
        return;
    }
    if w.stride == 2 {
        return window_pack2(kb, g, w, x_plane, x, t, (zu, off, offv), (rows, cols));
    }
    let wp = w.wp as usize;
    let zv = splat8(kb, zu);
    let first = ((g.top * wp + g.left) * 4) as i64;
    for_quads(kb, g.c, |kb, gq, chans| {
        let xg = kb.idx(x, gq, (4 * x_plane) as i64);
        let tg = kb.idx(t, gq, w.plane as i64);
        kb.for_range(0, rows as i64, 1, |kb, y| {
            let src = kb.idx(xg, y, g.w as i64);
            let dst = kb.idx(tg, y, (4 * wp) as i64);
            let dst = kb.off(dst, first);
            if cols < 16 {
                for px in 0..cols {
                    pack_pixel(kb, (src, px, x_plane, chans), (zu, off), dst, 4 * px as i32);
                }
                return;
            }
            let chunk = |kb: &mut Kb<'_, '_>, s: Value, d: Value| {
                let o = channel_quad(kb, s, x_plane, chans, (zv, offv));
                for (i, &v) in o.iter().enumerate() {
                    kb.store(v, d, (i * 16) as i64);
                }
            };
            let n = cols / 16;
            if n > 4 {
                kb.for_range(0, n as i64, 1, |kb, i| {
                    let s = kb.idx(src, i, 16);
                    let d = kb.idx(dst, i, 64);
                    chunk(kb, s, d);
                });
            } else {
                for i in 0..n {
                    let s = kb.off(src, (16 * i) as i64);
                    let d = kb.off(dst, (64 * i) as i64);
                    chunk(kb, s, d);
                }
            }
            if !cols.is_multiple_of(16) {
                let s = kb.off(src, (cols - 16) as i64);
                let d = kb.off(dst, (4 * (cols - 16)) as i64);
                chunk(kb, s, d);
            }
        });
    });
}

/// [`window_pack`] for stride 2: input row `Y = top + y` goes to the phase planes of
/// parity `Y % 2`, row `Y / 2`; of 16 interleaved pixels from column `X0 = left + x0`,
/// the even ones (gathered by a dword shuffle) to the planes of parity `X0 % 2` from
/// column `X0 / 2`, the odd ones to the others from `(X0 + 1) / 2`.
#[allow(clippy::too_many_arguments, reason = "the pieces of one repacking")]
fn window_pack2(
    kb: &mut Kb<'_, '_>,
    g: &ConvGeom,
    w: &DotWindow,
    x_plane: usize,
    x: Value,
    t: Value,
    (zu, off, offv): (i64, i64, Option<Value>),
    (rows, cols): (usize, usize),
) {
    let (wq, hq) = (w.wp as usize, w.hq as usize);
    // Bytes of one phase plane.
    let pb = (4 * hq * wq) as i64;
    let even: [u8; 16] = std::array::from_fn(|i| (8 * (i / 4) + i % 4) as u8);
    let odd: [u8; 16] = std::array::from_fn(|i| (8 * (i / 4) + 4 + i % 4) as u8);
    let zv = splat8(kb, zu);
    for_quads(kb, g.c, |kb, gq, chans| {
        let xg = kb.idx(x, gq, (4 * x_plane) as i64);
        let tg = kb.idx(t, gq, w.plane as i64);
        kb.for_range(0, rows as i64, 1, |kb, y| {
            let src = kb.idx(xg, y, g.w as i64);
            // Row Y of the padded input: phase rows of parity Y % 2, row Y / 2.
            let yy = kb.b.ins().iadd_imm_s(y, g.top as i64);
            let par = kb.b.ins().band_imm_u(yy, 1);
            let half = kb.b.ins().ushr_imm_u(yy, 1);
            let rb = kb.idx(tg, par, 2 * pb);
            let rb = kb.idx(rb, half, (4 * wq) as i64);
            // Pixel X of the row: phase column parity X % 2, column X / 2.
            let at = |xx: usize| ((xx % 2) as i64) * pb + (4 * (xx / 2)) as i64;
            if cols < 16 {
                for px in 0..cols {
                    let d = kb.off(rb, at(g.left + px));
                    pack_pixel(kb, (src, px, x_plane, chans), (zu, off), d, 0);
                }
                return;
            }
            let chunk = |kb: &mut Kb<'_, '_>, x0: usize| {
                let s = kb.off(src, x0 as i64);
                let o = channel_quad(kb, s, x_plane, chans, (zv, offv));
                let xx = g.left + x0;
                for (k, mask) in [(0usize, even), (1, odd)] {
                    let d = kb.off(rb, at(xx + k));
                    let lo = shuffle(kb, o[0], o[1], mask);
                    let hi = shuffle(kb, o[2], o[3], mask);
                    kb.store(lo, d, 0);
                    kb.store(hi, d, 16);
                }
            };
            for i in 0..cols / 16 {
                chunk(kb, 16 * i);
            }
            if !cols.is_multiple_of(16) {
                chunk(kb, cols - 16);
            }
        });
    });
}

// ---------------------------------------------------------------------------------
// Emission.

/// The bias operand: `(constant codes, run-time pointer)`.
fn bias_of(cx: &mut Ecx<'_, '_, '_, '_>, epi: &IntEpi) -> (Vec<i64>, Option<Value>) {
    if !epi.has_bias {
        return (Vec::new(), None);
    }
    match (cx.const_of)(cx.node.operands[2]) {
        Some(ConstData::Int(v)) => (v.clone(), None),
        _ => (Vec::new(), Some(cx.operand(2))),
    }
}

/// The requantize, with the correction `corr` (one entry per channel) folded in where
/// it can be (`foldable`: one weight slab; and a requantize that takes it), and whether
/// the correction still needs its own table.
fn epilogue(epi: &IntEpi, corr: &[i32], foldable: bool) -> (Option<Requant>, bool) {
    if corr.iter().all(|&v| v == 0) {
        return (epi.rq.clone(), false);
    }
    let folded = if foldable {
        let b: Vec<i64> = corr.iter().map(|&v| v as i64).collect();
        epi.rq.as_ref().and_then(|r| r.fold_bias(&b))
    } else {
        None
    };
    match folded {
        Some(r) => (Some(r), false),
        None => (epi.rq.clone(), true),
    }
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// `bias - zu * sum_k w'` per channel, wrapped to i32.
fn corr_of(
    count: usize,
    k: usize,
    zu: i64,
    bias: &[i64],
    w: impl Fn(usize, usize) -> i64,
) -> Vec<i32> {
    (0..count)
        .map(|ch| {
            let s: i64 = (0..k).map(|kk| w(ch, kk)).sum();
            let b = bias.get(ch).copied().unwrap_or(0);
            b.wrapping_sub(zu.wrapping_mul(s)) as i32
        })
        .collect()
}

/// The zero-point mode of unpacked rows (or lanes) with zero points `zps`.
fn zp_mode(cx: &mut Ecx<'_, '_, '_, '_>, zps: &[i64], per_lane: bool) -> VZp {
    match zps.first() {
        Some(&z0) if zps.iter().any(|&z| z != z0) => {
            let bytes: Vec<u8> = zps.iter().map(|&z| z as i8 as u8).collect();
            let t = cx.rodata(bytes, 16);
            if per_lane {
                VZp::PerLane(t)
            } else {
                VZp::PerRow(t)
            }
        }
        Some(&z0) => VZp::Const(z0),
        None => VZp::Const(0),
    }
}

pub(crate) fn emit(cx: &mut Ecx<'_, '_, '_, '_>, q: &MdLowering) {
    match &q.kind {
        MdKind::Conv { g } => emit_conv(cx, q, g),
        MdKind::MatMul { m, n, k, batches } => emit_matmul(cx, q, (*m, *n, *k), batches),
    }
}

fn emit_conv(cx: &mut Ecx<'_, '_, '_, '_>, q: &MdLowering, g: &ConvGeom) {
    let (cg, mg, k, npix) = (g.cg(), g.mg(), g.kdim(), g.npix());
    // A direct convolution's window; the row length of the weights (K in quads, or in
    // the window's order) and the pixels of im2col's rows.
    let win = q.window();
    let (kpp, pp) = (q.krow(), p16(npix));
    // Channel planes of the input and the output (a band's are its image's).
    let (x_plane, o_plane) = q.planes.unwrap_or((g.h * g.w, npix));
    let tbytes = kpp * pp;
    let patches = q.patch_bytes(g);
    let x = cx.operand(0);
    let w = quant::const_ints(cx, 1).to_vec();
    let zw = q.zw.clone();
    let wv = |ch: usize, kk: usize| w[ch * k + kk] - zw[ch];
    let zu = q.zx + q.off;
    let ws = cx.ws;
    let acc_off = q.acc_offset();
    // K row at position `i` of a weight row (None: padding, weight 0).
    let k_at = |i: usize| -> Option<usize> {
        match &win {
            Some(wn) => {
                let taps = wn.taps();
                let (gq, t, c4) = (i / (4 * taps), (i / 4) % taps, i % 4);
                let c = 4 * gq + c4;
                (c < cg).then_some(c * taps + t)
            }
            None => {
                let kk = q.order.as_ref().map_or(i, |o| o[i] as usize);
                (kk < k).then_some(kk)
            }
        }
    };
    let quads = match &win {
        Some(wn) => wn.groups as usize * wn.taps(),
        None => kpp / 4,
    };
    // Bytes of one weight: i16 for the widening tile (`dot::weights_i16`), else i8.
    let w16 = super::weights_i16(q.wide, q.pack.is_some());
    let we = if w16 { 2 } else { 1 };
    // Weight rows [M][Kp] i8 or i16 (padding 0): in `.rodata`, or unpacked from the
    // bit-packed rows once per call.
    let wrows = match q.pack {
        None => {
            let mut bytes = vec![0u8; g.m * kpp * we];
            for ch in 0..g.m {
                for i in 0..kpp {
                    // Position i of the row holds K row `k_at(i)` (padding: 0).
                    let Some(kk) = k_at(i) else {
                        continue;
                    };
                    let at = (ch * kpp + i) * we;
                    let v = wv(ch, kk) as i16;
                    bytes[at..at + we].copy_from_slice(&v.to_le_bytes()[..we]);
                }
            }
            cx.rodata(bytes, 16)
        }
        Some(_) if q.phase == MdPhase::Prepared => cx.ops[1].expect("the unpacked weights"),
        Some(pk) => {
            // Natural K order packs K values (the rest up to 16 is padding); a window's
            // order the whole row.
            let len = if win.is_some() { kpp } else { k };
            let src = cx.rodata(
                pk.pack(g.m, len, |ch, i| {
                    k_at(i)
                        .filter(|_| i < len)
                        .map_or(zw[ch], |kk| w[ch * k + kk])
                }),
                16,
            );
            let zp = zp_mode(cx, &zw, false);
            let (r0, r1, dst) = match q.phase {
                MdPhase::UnpackRows(r0, r1) => (r0, r1, cx.out),
                MdPhase::Chans(c0, c1) => (c0, c1, cx.kb.off(ws, patches as i64)),
                _ => (0, g.m, cx.kb.off(ws, patches as i64)),
            };
            let zp = match zp {
                VZp::PerRow(t) => VZp::PerRow(cx.kb.off(t, r0 as i64)),
                z => z,
            };
            let src_r = cx.kb.off(src, (r0 * pk.row_vecs(len) * 16) as i64);
            let dst_r = cx.kb.off(dst, (r0 * kpp) as i64);
            Unpack {
                pk,
                rows: r1 - r0,
                len,
                src: src_r,
                dst: dst_r,
                stride: kpp as i64,
                zp,
            }
            .emit(cx.kb);
            if matches!(q.phase, MdPhase::UnpackRows(..)) {
                return;
            }
            dst
        }
    };
    let (bias_c, bias_rt) = bias_of(cx, &q.epi);
    let corr = corr_of(g.m, k, zu, &bias_c, wv);
    let (rq_own, need) = epilogue(&q.epi, &corr, true);
    // The zmm tile requantizes and stores by itself where the requantize has the vector
    // form and no run-time bias is added.
    let in_tile = match (&rq_own, q.wide) {
        (Some(r), Some(isa)) if r.vector_ok() && bias_rt.is_none() => {
            let add = if need { corr.clone() } else { Vec::new() };
            super::epi_table(r, &add, isa).map(|t| (r, t))
        }
        _ => None,
    };
    // |sums + correction + folded bias| for the AVX2 tile's i32 finish: K u8 codes
    // times the largest |weight|, plus the largest constant added.
    let acc_bound = in_tile.as_ref().map(|(r, _)| {
        let wmax = (0..g.m)
            .flat_map(|ch| (0..k).map(move |kk| (ch, kk)))
            .map(|(ch, kk)| wv(ch, kk).unsigned_abs())
            .max()
            .unwrap_or(0);
        let added = (0..g.m)
            .map(|ch| {
                let c = if need {
                    corr.get(ch).copied().unwrap_or(0) as i64
                } else {
                    0
                };
                let b = if r.bias_folded {
                    r.chans[ch % r.chans.len()][4]
                } else {
                    0
                };
                (c + b).unsigned_abs()
            })
            .max()
            .unwrap_or(0);
        k as u64 * 255 * wmax + added
    });
    let corr_tab = (need && in_tile.is_none()).then(|| cx.rodata(i32_bytes(&corr), 16));
    let rq = match in_tile {
        Some(_) => None,
        None => rq_own.as_ref().map(|r| (r, cx.rodata(r.table(), 16))),
    };
    let thr = q
        .epi
        .thr
        .as_ref()
        .map(|t| (t, cx.rodata(t.table_bytes(), 16)));
    let deq = q.epi.deq.as_ref().map(|d| (d, cx.rodata(d.table(), 16)));
    let out = cx.out;
    let ob = q.epi.st_out.bytes();
    let epi_tab = in_tile.as_ref().map(|(_, t)| cx.rodata(t.clone(), 64));
    let wide_epi = in_tile.as_ref().map(|&(r, _)| super::WideEpi {
        round: r.rounding,
        elem: ob as u32,
        row_bytes: (o_plane * ob) as u32,
        unsigned: matches!(q.epi.st_out, Store::U8 | Store::U16 | Store::U32),
        wide_shift: q.wide != Some(DotIsa::Vnni512) && !super::shift_fits_i32(r, acc_bound),
        f64_round: q.wide != Some(DotIsa::Vnni512) && super::f64_exact(r, acc_bound),
    });
    // The channels this kernel computes (of each group): all, or a task's.
    let (c0, c1) = match q.phase {
        MdPhase::Chans(c0, c1) => (c0, c1),
        _ => (0, mg),
    };
    let wide = q.wide.map(|isa| {
        Wide::with_window(
            cx,
            isa,
            (c1 - c0, npix, quads),
            (kpp * we, pp * 4),
            true,
            w16,
            wide_epi,
            win.clone(),
        )
    });
    // With a K order: each quad's four byte rows, as offsets into the im2col rows.
    let rows_of = q.order.as_ref().map(|o| {
        let offs: Vec<u8> = o
            .iter()
            .flat_map(|&kk| ((kk as usize * pp) as i32).to_le_bytes())
            .collect();
        cx.rodata(offs, 16)
    });
    // A task of the threaded entry (a band in place, or some output channels): its
    // input and output rows prefetched first (`asm::Touch`), for the lines another core
    // wrote or read in the job before.
    let touch = (q.wide.is_some() && (q.planes.is_some() || matches!(q.phase, MdPhase::Chans(..))))
        .then(|| {
            let eb = q.st_x.bytes();
            let r = AsmFn::Touch(Touch {
                planes: g.c as u32,
                stride: (x_plane * eb) as u32,
                bytes: (g.h * g.w * eb) as u32,
                write: false,
            });
            let w = AsmFn::Touch(Touch {
                planes: (c1 - c0) as u32,
                stride: (o_plane * ob) as u32,
                bytes: (npix * ob) as u32,
                write: true,
            });
            (
                cx.data.asm_func(cx.kb.b.func, &r),
                cx.data.asm_func(cx.kb.b.func, &w),
            )
        });
    let (g, off, group, st_out) = (*g, q.off, q.group, q.epi.st_out);
    let kb = &mut *cx.kb;
    let offv = off_vec(kb, off);
    let (t, b) = (ws, kb.off(ws, tbytes as i64));
    match &win {
        // The window's padding, once per call.
        Some(wn) => window_border(kb, &g, wn, t, zu),
        None => {
            // Padding taps: zu, once per call (columns past the pixels are never
            // stored, so they may hold anything).
            fill_padding(kb, &g, t, pp, zu);
            // Rows past K meet zero weights, so any bytes there give the same sums;
            // they are zeroed all the same, so that no sum is computed from bytes
            // never written (which valgrind reports as uninitialised values reaching
            // the outputs).
            if kpp > k {
                let tail = kb.off(t, (k * pp) as i64);
                fill_bytes(kb, tail, (kpp - k) * pp, 0);
            }
        }
    }
    kb.for_range(0, g.n as i64, 1, |kb, n| {
        let xn = kb.idx(x, n, (g.c * x_plane) as i64);
        let on = kb.idx(out, n, (g.m * o_plane * ob) as i64);
        kb.for_range(0, g.group as i64, 1, |kb, grp| {
            let xg = kb.idx(xn, grp, (cg * x_plane) as i64);
            let og = kb.idx(on, grp, (mg * o_plane * ob) as i64);
            let og = kb.off(og, (c0 * o_plane * ob) as i64);
            if let Some((tr, tw)) = touch {
                kb.b.ins().call(tr, &[xg]);
                kb.b.ins().call(tw, &[og]);
            }
            let wg = kb.idx(wrows, grp, (mg * kpp * we) as i64);
            let wg = kb.off(wg, (c0 * kpp * we) as i64);
            let cols = match &win {
                Some(wn) => {
                    window_pack(kb, &g, wn, x_plane, xg, t, (zu, off, offv));
                    t
                }
                None => {
                    im2col_rows(kb, &g, x_plane, xg, t, pp, off, offv);
                    transpose_quads(kb, t, b, kpp / 4, pp, rows_of);
                    b
                }
            };
            let corr_g = corr_tab.map(|c| {
                let c = kb.idx(c, grp, (mg * 4) as i64);
                kb.off(c, (c0 * 4) as i64)
            });
            let acc_mem = kb.off(ws, acc_off as i64);
            let bias_g = bias_rt.map(|p| {
                let p = kb.idx(p, grp, (mg * 4) as i64);
                kb.off(p, (c0 * 4) as i64)
            });
            let rq_g = rq.map(|(r, tab)| {
                let t = kb.idx(tab, grp, mg as i64 * r.stride());
                (r, kb.off(t, c0 as i64 * r.stride()))
            });
            // The layer's constants, then the group's channels (16 bytes each).
            let thr_g = thr.map(|(h, t)| {
                let t = kb.idx(t, grp, mg as i64 * h.stride());
                (h, kb.off(t, c0 as i64 * h.stride()))
            });
            let deq_g = deq.map(|(d, t)| {
                let t = kb.idx(t, grp, (mg * 4) as i64);
                (d, kb.off(t, (c0 * 4) as i64))
            });
            let epi_g = epi_tab.map(|t| {
                let c = kb.idx(t, grp, (mg * 16) as i64);
                (t, kb.off(c, (c0 * 16) as i64))
            });
            emit_gemm(
                kb,
                &Gemm {
                    m: c1 - c0,
                    n: npix,
                    quads,
                    rows: wg,
                    row_stride: (kpp * we) as i64,
                    cols,
                    pitch: pp,
                    rows_signed: true,
                    sdot: q.sdot,
                    rows_ro: true,
                    group,
                    acc_mem,
                    wide: wide.as_ref(),
                    epi_tab: epi_g,
                    out: og,
                    corr: corr_g,
                    acc: AccStore {
                        ldc: o_plane,
                        chan_of_row: true,
                        bias: bias_g,
                        rq: rq_g,
                        thr: thr_g,
                        deq: deq_g,
                        st_out,
                    },
                },
            );
        });
    });
}

fn emit_matmul(
    cx: &mut Ecx<'_, '_, '_, '_>,
    q: &MdLowering,
    (m, n, k): (usize, usize, usize),
    batches: &[(usize, usize)],
) {
    let (kpp, npp) = (kp(k), np4(n, q.wide));
    let quads = kpp / 4;
    let slab = kpp * npp;
    let a = cx.operand(0);
    let b = quant::const_ints(cx, 1).to_vec();
    let slabs = batches.iter().map(|x| x.1).max().unwrap_or(0) + 1;
    let zw = q.zw.clone();
    let zu = q.zx + q.off;
    // Code of the quad layout's byte `e` of slab `s` (zero point for padding taps of a
    // column, 0 for padding columns), and its zero-point corrected value.
    let code = |s: usize, e: usize| -> i64 {
        let (qq, j, t) = (e / (4 * npp), (e / 4) % npp, e % 4);
        let kk = 4 * qq + t;
        if j >= n {
            0
        } else if kk < k {
            b[s * k * n + kk * n + j]
        } else {
            zw[j]
        }
    };
    let ws = cx.ws;
    let acc_off = q.acc_offset();
    let a_bytes = (m * kpp).div_ceil(16) * 16;
    let b_ws = cx.kb.off(ws, a_bytes as i64);
    // Bytes of one weight: i16 for the widening tile (`dot::weights_i16`), else i8.
    let w16 = super::weights_i16(q.wide, q.pack.is_some());
    let we = if w16 { 2 } else { 1 };
    // The i16 weights' column panels follow the tile's width (`dot::w16_col_offset`).
    let nv = q.wide.map_or(1, |isa| {
        super::choose_tile(
            isa,
            m,
            npp / isa.lanes(),
            quads,
            super::widening(isa, false, w16),
        )
        .1
    });
    let (cols, unpack) = match q.pack {
        None => {
            let mut bytes = vec![0u8; slabs * slab * we];
            for s in 0..slabs {
                for e in 0..slab {
                    let (qq, j, t) = (e / (4 * npp), (e / 4) % npp, e % 4);
                    let z = if j < n { zw[j] } else { 0 };
                    let v = (code(s, e) - z) as i8 as i16;
                    let at = if w16 {
                        (s * slab + super::w16_col_offset(npp, quads, nv, qq, j, t)) * 2
                    } else {
                        s * slab + e
                    };
                    bytes[at..at + we].copy_from_slice(&v.to_le_bytes()[..we]);
                }
            }
            (cx.rodata(bytes, 16), None)
        }
        Some(pk) => {
            // Rows of the packed stream: the quads of every slab.
            let src = cx.rodata(
                pk.pack(slabs * quads, 4 * npp, |r, e| {
                    code(r / quads, (r % quads) * 4 * npp + e)
                }),
                16,
            );
            let lane_zps: Vec<i64> = (0..4 * npp)
                .map(|e| if e / 4 < n { zw[e / 4] } else { 0 })
                .collect();
            let zp = zp_mode(cx, &lane_zps, true);
            (b_ws, Some((pk, src, zp)))
        }
    };
    let (bias_c, bias_rt) = bias_of(cx, &q.epi);
    let mut corr = Vec::with_capacity(slabs * npp);
    for s in 0..slabs {
        let c = corr_of(n, k, zu, &bias_c, |j, kk| b[s * k * n + kk * n + j] - zw[j]);
        corr.extend(c);
        corr.extend(std::iter::repeat_n(0, npp - n));
    }
    // Folded: one slab, its n channels (the table read as vectors has npp per slab).
    let (rq_own, need) = if slabs == 1 {
        epilogue(&q.epi, &corr[..n], true)
    } else {
        epilogue(&q.epi, &corr, false)
    };
    let corr_tab = need.then(|| cx.rodata(i32_bytes(&corr), 16));
    let rq = rq_own.as_ref().map(|r| (r, cx.rodata(r.table(), 16)));
    let thr = q
        .epi
        .thr
        .as_ref()
        .map(|t| (t, cx.rodata(t.table_bytes(), 16)));
    let deq = q.epi.deq.as_ref().map(|d| (d, cx.rodata(d.table(), 16)));
    let out = cx.out;
    let ob = q.epi.st_out.bytes();
    let wide = q
        .wide
        .map(|isa| Wide::new(cx, isa, m, n, quads, kpp, npp * 4 * we, false, w16, None));
    debug_assert!(
        wide.as_ref().is_none_or(|w| w.vecs == nv),
        "the panels' width"
    );
    let (off, group, st_x, st_out) = (q.off, q.group, q.st_x, q.epi.st_out);
    let kb = &mut *cx.kb;
    let offv = off_vec(kb, off);
    let a_ws = ws;
    // Padding bytes of the activation rows (their weights are 0): defined once.
    fill_bytes(kb, a_ws, a_bytes, 0);
    let mut unpacked: Option<usize> = None;
    for (bi, &(ba, bb)) in batches.iter().enumerate() {
        let ab = kb.off(a, (ba * m * k * st_x.bytes()) as i64);
        kb.for_range(0, m as i64, 1, |kb, i| {
            let s = kb.idx(ab, i, k as i64);
            let d = kb.idx(a_ws, i, kpp as i64);
            copy_codes(kb, s, d, k, 1, off, offv);
        });
        let cp = match unpack {
            None => kb.off(cols, (bb * slab * we) as i64),
            Some((pk, src, zp)) => {
                if unpacked != Some(bb) {
                    let s = kb.off(src, (bb * quads * pk.row_vecs(4 * npp) * 16) as i64);
                    Unpack {
                        pk,
                        rows: quads,
                        len: 4 * npp,
                        src: s,
                        dst: b_ws,
                        stride: (4 * npp) as i64,
                        zp,
                    }
                    .emit(kb);
                    unpacked = Some(bb);
                }
                b_ws
            }
        };
        let corr_b = corr_tab.map(|c| kb.off(c, (bb * npp * 4) as i64));
        let acc_mem = kb.off(ws, acc_off as i64);
        let o = kb.off(out, (bi * m * n * ob) as i64);
        emit_gemm(
            kb,
            &Gemm {
                m,
                n,
                quads,
                rows: a_ws,
                row_stride: kpp as i64,
                cols: cp,
                pitch: npp,
                rows_signed: false,
                sdot: q.sdot,
                rows_ro: batches.len() == 1,
                group,
                acc_mem,
                wide: wide.as_ref(),
                epi_tab: None,
                out: o,
                corr: corr_b,
                acc: AccStore {
                    ldc: n,
                    chan_of_row: false,
                    bias: bias_rt,
                    rq,
                    thr,
                    deq,
                    st_out,
                },
            },
        );
    }
}
