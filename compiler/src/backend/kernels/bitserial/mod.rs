//! Bit-serial kernels: `conv2d_int` and `matmul_int` with constant weights of 2..4 bits
//! and activations of 2..4 bits, as AND-popcount over bit planes (docs/kernels.md).
//!
//! - Exactness. The op computes `acc = bias + sum_k (x - zx) * (w - zw)` wrapped to
//!   i32. Signed activations are made unsigned by adding `off = 2^(ab-1)` to every code
//!   (unsigned: `off = 0`); with `xu = x + off`, `zu = zx + off` and sums over K:
//!   `sum (x - zx)(w - zw) = sum xu*w - zu*sum w - zw*sum xu + K*zu*zw`. The dot
//!   `sum xu*w` is the bit-serial part; `- zu*sum w + K*zu*zw` is a per-channel
//!   constant computed at compile time and folded (with a constant bias) into one i32
//!   table added in the epilogue; only when some weight zero point is nonzero, the
//!   per-vector `sum xu` is computed at run time from the packed planes (`ab`
//!   popcounts per word, last word masked to K) and `zw[ch] * sum xu` subtracted.
//!   Everything is i32 wrap-around arithmetic, i.e. the interpreter's wrap. Padded taps
//!   of a convolution are written as the code `zx` (`xu = zu`): in every term above
//!   they add `zu*w - zu*w - zw*zu + zu*zw = 0`, exactly as the op's padding (this needs
//!   `zu` to be a code of the activation's bits, which a zero point of the type is;
//!   otherwise a padded convolution goes to the int8 kernel).
//! - Planes. Weights: plane `j` holds bit `j` of the two's complement code, 64 K-bits
//!   per u64 word (bit `kk % 64` of word `kk / 64`); the top plane of a signed weight
//!   has weight `-2^(wb-1)`. Activations: plane `i` holds bit `i` of `xu`. With `p_ij =
//!   popcount(a_i & w_j)`, `sum xu * w = sum_{i,j} s_j 2^(i+j) p_ij` (`s_j = -1` only for
//!   the signed top weight plane). Per output the tile keeps at most four i64 sums:
//!   positive and negative terms, each split at `i + j >= 4`, so that every term is
//!   added as `acc + (p_ij << sh)` with `sh <= 3`, one `lea` (the same cost as a plain
//!   add, and fewer live sums than one per `i + j`: no spills in the 2x1 tile); the
//!   sums are combined once at the end. Bits past K are 0 in the weight planes, so they
//!   add nothing whatever the activation planes hold there.
//! - Layout: one "vector" (a weight row or column, an activation row or pixel) is
//!   `[KW][planes]` words, the planes of one word adjacent; vectors are contiguous. The
//!   weights are packed at compile time (`.rodata` shrinks with the bits: `wb` bits per
//!   weight), padded with zero vectors to a multiple of the tile; a weight vector stores
//!   its last, partial K word in only 1, 2, 4 or 8 bytes per plane (`tail_bytes`, read
//!   zero-extended), so K = 144 costs 144 bits per plane, not 192. A tile is `TW` weight vectors by one activation vector (`TW = 2` for 2x2,
//!   2x3 and 3x2 bits, else 1); scalar `popcnt` (with `has_popcnt`; Cranelift otherwise
//!   emits a bit-trick sequence, the baseline's fallback).
//! - Activations are packed at run time into the workspace: 16 codes at a time, `xu`
//!   shifted so that bit `i` is the byte's sign bit, then `vhigh_bits` (`pmovmskb`).
//!   matmul: rows of A straight from the input. conv: an im2col of the code bytes into
//!   pixel-major byte patches (a cache line more than the patch apart; padded taps and
//!   the bytes past K hold `zx`), then packed per pixel. With whole-byte group channels
//!   (`cg` 8, 16, 32, 64, 128, ...) the conv is `conv2d_int.chanbits+...` (planes.rs):
//!   K runs tap-major (the weight planes packed in that order), the planes of `xu` are
//!   transposed into per-pixel channel bytes and each tap of each pixel is one load +
//!   store per plane straight into the activation vectors, no byte patches. The pixels
//!   with a padded tap start as `zu` in every plane word (once per call), which their
//!   padded taps keep: the padding rule above.
//! - aarch64 (`Features::vector_popcnt`; the scalar popcount round-trips through a SIMD
//!   register there): two adjacent activation planes form one vector, each weight
//!   plane word is splatted and ANDed with it, `cnt.16b` counts bytes into byte sums
//!   (one per row, plane pair and weight plane) widened by `uaddlp` every 31 words; the
//!   plane counts are weighted by `s_j 2^(i+j)` once at the end.
//! - Wide tiles (x86-64-v3 and v4 + VPOPCNTDQ; `choose`, the cost table's
//!   `BitSerialYmm` / `BitSerialZmm` rows): matrix products and channel-packed
//!   convolutions whose weights have zero point 0 and whose bias is absent or constant
//!   run the assembled popcount tiles of `kernels::xnor` with `BsPlanes` (AND for
//!   XOR, planes on both sides, the weighting by `s_j 2^(i+j)` in the tile's
//!   epilogue): whole K words (no tail bytes), weights in panels of 8 columns
//!   (matrix products) or in rows (convolutions, the pixels in panels), the
//!   correction table added as the bias or by the in-tile requantize
//!   (`emit_matmul_wide`, `emit_conv_wide`; layouts in `kernels/xnor/README.md`).
//! - Epilogue: the correction/bias table (folded into the fused requantize's own
//!   per-channel table when there is one: `Requant::fold_bias`), then `AccStore`
//!   (run-time bias, fused requantize of `quant`, or the i32 store), bit-exact with the
//!   interpreter.

use cranelift_codegen::ir::types::{I8, I8X16, I32, I32X4, I64, I64X2};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value};
use qcc_ir::{ConstData, ElemType, Module, Node, Op};

use super::binary::im2col_bytes;
use super::conv::{self, ConvGeom};
use super::planes;
use super::quant::{AccStore, Deq, IntEpi, Requant, axis_zps, int_epi, tensor_zp};
mod wide;

use super::xnor::{BsPlanes, XnorIsa, XnorWide};
use super::{ConstOf, Ecx, matmul_geom};
use crate::backend::costs::{self, CostTarget, Strategy};
use crate::backend::kb::{BYTE_SUMS, Kb, MF};
use crate::backend::storage::Store;
use wide::{emit_conv_wide, emit_matmul_wide, wide_conv_main};

/// The bit-serial strategy for `wbits`-bit weights and `abits`-bit activations on
/// `target`, if the measured cost table (`backend::costs`) prefers one to the int8
/// kernel over packed weights: the 128-bit Cranelift tile (`Some(None)`) or, where
/// `wide` allows, an assembled tile of the tier (`Some(Some(isa))`, `xnor::BsPlanes`)
/// whose accumulators fit the registers.
///
/// The bit-serial inner loop costs `wbits * abits` AND-popcount-adds per 64 MACs (per
/// 512 with `vpopcntq` zmm), so it wins while that product is small (the 128-bit tile
/// on the project's machine: 2x2 ~48 G MAC/s, 2x3 ~30, 2x4 ~24 against ~22 for the int8
/// kernel over packed weights); combinations without rows take the int8 kernel, and
/// so does the baseline x86_64 ISA, which has no `popcnt`. (On aarch64 the scalar
/// popcount round-trips through SIMD registers; its rows are unmeasured.) Where the
/// u8 x i8 tiles apply, `dot::applies` compares them with the strategy chosen here.
fn choose(wbits: u32, abits: u32, target: CostTarget, wide: bool) -> Option<Option<XnorIsa>> {
    let fits = |isa: XnorIsa| isa.bs_fits(BsPlanes::new(abits, wbits));
    let mut cands = vec![Strategy::Int8PackedW, Strategy::BitSerial];
    if wide && fits(XnorIsa::Zmm) {
        cands.push(Strategy::BitSerialZmm);
    }
    if wide && fits(XnorIsa::Ymm) {
        cands.push(Strategy::BitSerialYmm);
    }
    match costs::choose(&cands, wbits, abits, 1, target)? {
        Strategy::BitSerial => Some(None),
        Strategy::BitSerialZmm => Some(Some(XnorIsa::Zmm)),
        Strategy::BitSerialYmm => Some(Some(XnorIsa::Ymm)),
        _ => None,
    }
}

/// The G MAC/s of the bit-serial strategy `applies` chose for `bits` on `target`.
pub(crate) fn gmacs(bits: &Bits, target: CostTarget) -> Option<f64> {
    let s = match bits.wide {
        None => Strategy::BitSerial,
        Some(XnorIsa::Zmm) => Strategy::BitSerialZmm,
        Some(XnorIsa::Ymm) => Strategy::BitSerialYmm,
    };
    costs::gmacs(s, bits.wb as u32, bits.ab as u32, target)
}

/// Words along K.
fn kw(k: usize) -> usize {
    k.div_ceil(64)
}

/// Bytes between two pixels' byte patches (see binary.rs: avoids one L1 set).
fn pixel_stride(w: usize) -> usize {
    w * 64 + 64
}

/// The operands' bits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bits {
    /// Weight bits and signedness.
    pub wb: usize,
    pub wsigned: bool,
    /// Activation bits; `off` is added to each code (2^(ab-1) for signed, else 0).
    pub ab: usize,
    pub off: i64,
    /// The activations' zero point (a code of their storage type).
    pub zx: i64,
    /// The assembled tile of the tier (`xnor::BsPlanes`) for this layer.
    pub wide: Option<XnorIsa>,
}

impl Bits {
    /// Weight vectors per tile: 2 for 2x2, 2x3 and 3x2 bits, 1 beyond (2 measured no
    /// faster there: more loaded words live than registers).
    fn tw(&self) -> usize {
        if self.ab + self.wb <= 5 { 2 } else { 1 }
    }
    /// The sum that `popcount(a_i & w_j)` goes to, and its shift there: slot bit 1 for
    /// the negative (signed top) weight plane, bit 0 for `i + j >= 4` (sums of terms
    /// shifted by 4 more, so every in-loop shift is at most 3: one `lea`).
    fn slot(&self, i: usize, j: usize) -> (usize, usize) {
        let neg = self.wsigned && j + 1 == self.wb;
        let t = i + j;
        (usize::from(neg) * 2 + usize::from(t >= 4), t % 4)
    }
    /// Which of the four sums some term uses.
    fn slots(&self) -> [bool; 4] {
        let mut used = [false; 4];
        for i in 0..self.ab {
            for j in 0..self.wb {
                used[self.slot(i, j).0] = true;
            }
        }
        used
    }
}

#[derive(Clone, Debug)]
pub(crate) enum BsKind {
    MatMul {
        m: usize,
        n: usize,
        k: usize,
        batches: Vec<(usize, usize)>,
    },
    Conv {
        g: ConvGeom,
        /// Channel-packed lowering (planes.rs): tap-major K, no byte im2col.
        chan: bool,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct BsLowering {
    pub kind: BsKind,
    pub bits: Bits,
    /// The weights' zero point per output channel; empty when all are 0.
    pub zw: Vec<i64>,
    pub epi: IntEpi,
    /// The assembled tiles' shape, when `bits.wide` has one (matrix products and
    /// channel-packed convolutions).
    pub wide: Option<XnorWide>,
}

impl BsLowering {
    pub fn kernel_name(&self) -> String {
        let rq = self.epi.suffix();
        let b = &self.bits;
        let ty = format!("w{}{}a{}", if b.wsigned { "i" } else { "u" }, b.wb, b.ab);
        if let Some(w) = &self.wide {
            let isa = match w.isa {
                XnorIsa::Zmm => "vpopcntq.zmm",
                XnorIsa::Ymm => "vpshufb.ymm",
            };
            return match &self.kind {
                BsKind::MatMul { .. } => format!("matmul_int.bitserial.{isa}.{ty}{rq}"),
                BsKind::Conv { .. } => format!("conv2d_int.chanbits+bitserial.{isa}.{ty}{rq}"),
            };
        }
        let tw = b.tw();
        let ty = if self.zw.is_empty() {
            ty
        } else {
            format!("{ty}.wzp")
        };
        match &self.kind {
            BsKind::MatMul { .. } => format!("matmul_int.bitserial1x{tw}.{ty}{rq}"),
            BsKind::Conv { chan, .. } => format!(
                "conv2d_int.{}+bitserial{tw}x1.{ty}{rq}",
                if *chan { "chanbits" } else { "im2col" }
            ),
        }
    }

    pub fn workspace(&self) -> usize {
        let ab = self.bits.ab;
        // Per activation vector: its planes, and `sum xu` (i32) with weight zero points.
        let sx = if self.zw.is_empty() { 0 } else { 4 };
        if let Some(w) = &self.wide {
            return match &self.kind {
                BsKind::MatMul { m, n, k, .. } => m * kw(*k) * ab * 8 + w.buf_bytes(*n),
                BsKind::Conv { g, .. } => wide_conv_main(g, ab) + w.buf_bytes(g.npix()),
            };
        }
        match &self.kind {
            BsKind::MatMul { m, k, .. } => m * (kw(*k) * ab * 8 + sx),
            BsKind::Conv { g, chan } => {
                conv_main_bytes(g, *chan, ab, sx) + self.bits.tw() * buf_row(g.npix())
            }
        }
    }

    pub fn macs(&self) -> u64 {
        match &self.kind {
            BsKind::MatMul { m, n, k, batches } => (batches.len() * m * n * k) as u64,
            BsKind::Conv { g, .. } => g.macs(),
        }
    }

    /// Chooses the assembled tiles' shape for the current geometry (again after a
    /// convolution is cut into bands of rows).
    pub fn reshape_wide(&mut self) {
        let b = self.bits;
        let Some(isa) = b.wide else {
            self.wide = None;
            return;
        };
        self.wide = match &self.kind {
            BsKind::MatMul { m, n, k, .. } => Some(XnorWide::new(
                isa,
                (*m, *n, *k),
                false,
                false,
                Some(BsPlanes {
                    rows: b.ab as u8,
                    cols: b.wb as u8,
                    row_signed: false,
                    col_signed: b.wsigned,
                }),
            )),
            BsKind::Conv { g, chan: true } => Some(XnorWide::new(
                isa,
                (g.mg(), g.npix(), g.kdim()),
                false,
                self.epi.rq.is_some(),
                Some(BsPlanes {
                    rows: b.wb as u8,
                    cols: b.ab as u8,
                    row_signed: b.wsigned,
                    col_signed: false,
                }),
            )),
            BsKind::Conv { chan: false, .. } => None,
        };
    }
}

/// Storage bits and signedness of an integer (not `b1`) element type.
pub(crate) fn int_bits(e: &ElemType) -> Option<(usize, bool)> {
    e.storage().map(|t| (t.bits as usize, t.signed))
}

/// The operand bits of `node` if it is for this kernel: a `conv2d_int` or `matmul_int`
/// with constant integer weights of 2..4 bits (zero points per tensor or per output
/// channel), activations of 2..4 bits with a per-tensor zero point (a code of their
/// bits when a convolution pads), and [`choose`] prefers a bit-serial strategy.
pub(crate) fn applies(
    m: &Module,
    node: &Node,
    const_of: &ConstOf<'_>,
    target: CostTarget,
) -> Option<Bits> {
    if !matches!(node.op, Op::Conv2dInt | Op::MatMulInt) || node.operands.len() < 2 {
        return None;
    }
    let (xe, we) = (&m.ty(node.operands[0]).elem, &m.ty(node.operands[1]).elem);
    let (ab, asigned) = int_bits(xe)?;
    let (wb, wsigned) = int_bits(we)?;
    if !(2..=4).contains(&ab) || !(2..=4).contains(&wb) {
        return None;
    }
    if !matches!(const_of(node.operands[1]), Some(ConstData::Int(_))) {
        return None;
    }
    let zx = tensor_zp(xe).ok()?;
    let off = if asigned { 1i64 << (ab - 1) } else { 0 };
    let zw = weight_zps(m, node).ok()?;
    let mut chan = true;
    if node.op == Op::Conv2dInt {
        let g = conv::conv_geom(m, node).ok()?;
        let padded = (0..g.kh).any(|i| g.rows_valid(i) != (0, g.oh))
            || (0..g.kw).any(|j| g.cols_valid(j) != (0, g.ow));
        if padded && !(0..1i64 << ab).contains(&(zx + off)) {
            return None;
        }
        chan = planes::applies(&g);
    }
    // The assembled tiles take the correction table as a constant bias: no weight zero
    // points (their per-vector term) and no run-time bias beside it; convolutions
    // only channel-packed.
    let bias_const = node.operands.get(2).is_none_or(|&b| const_of(b).is_some());
    let wide_ok = chan && bias_const && zw.iter().all(|&z| z == 0);
    let wide = choose(wb as u32, ab as u32, target, wide_ok)?;
    Some(Bits {
        wb,
        wsigned,
        ab,
        off,
        zx,
        wide,
    })
}

/// The weights' zero point per output channel (conv: `M` of them, matmul: `N`), or
/// one for all.
pub(crate) fn weight_zps(m: &Module, node: &Node) -> Result<Vec<i64>, String> {
    let we = &m.ty(node.operands[1]).elem;
    let ws = &m.ty(node.operands[1]).shape;
    match (node.op, ws.len()) {
        (Op::Conv2dInt, r) if r >= 1 => axis_zps(we, 0, ws[0]),
        (Op::MatMulInt, r) if r >= 2 => axis_zps(we, r - 1, ws[r - 1]),
        _ => Ok(vec![tensor_zp(we)?]),
    }
}

pub(crate) fn select(
    m: &Module,
    node: &Node,
    fused: Option<&Node>,
    bits: Bits,
) -> Result<BsLowering, String> {
    let zw = weight_zps(m, node)?;
    let zw = if zw.iter().all(|&z| z == 0) {
        Vec::new()
    } else {
        zw
    };
    match node.op {
        Op::MatMulInt => {
            let (sa, sb) = (&m.ty(node.operands[0]).shape, &m.ty(node.operands[1]).shape);
            let g = matmul_geom(sa, sb)?;
            if g.batches.len() > 256 {
                return Err("matmul_int with more than 256 batches is not lowered yet".into());
            }
            let out_rank = m.ty(node.result).shape.len();
            let epi = int_epi(m, node, fused, out_rank.saturating_sub(1), false)?;
            if epi.rq.as_ref().is_some_and(|r| r.chans.len() > 1) && sb.len() < 2 {
                return Err("per-channel requantize of a matrix-vector product".into());
            }
            if epi.deq.is_some() && sb.len() < 2 {
                return Err("dequantize fused after a matrix-vector product".into());
            }
            let zw = match zw.len() {
                0 => zw,
                1 => vec![zw[0]; g.n],
                _ => zw,
            };
            let mut q = BsLowering {
                kind: BsKind::MatMul {
                    m: g.m,
                    n: g.n,
                    k: g.k,
                    batches: g.batches,
                },
                bits,
                zw,
                epi,
                wide: None,
            };
            q.reshape_wide();
            Ok(q)
        }
        Op::Conv2dInt => {
            let g = conv::conv_geom(m, node)?;
            let epi = int_epi(m, node, fused, 1, false)?;
            let chan = planes::applies(&g);
            let mut q = BsLowering {
                kind: BsKind::Conv { g, chan },
                bits,
                zw,
                epi,
                wide: None,
            };
            q.reshape_wide();
            Ok(q)
        }
        _ => Err(format!("{} is not a bit-serial kernel", node.op)),
    }
}

/// Packs `vecs` vectors of K codes `get(v, kk)` into `[round_up(vecs, tw)][KW][wb]`
/// plane words (padding vectors zero).
/// Bytes of the last K word of one weight plane: the K bits past the last full 64-bit
/// word, rounded up to 1, 2, 4 or 8 bytes (0 when K is a multiple of 64). Weight rows
/// store only those bytes, so the K padding costs at most a few bits per plane.
fn tail_bytes(k: usize) -> usize {
    match k % 64 {
        0 => 0,
        1..=8 => 1,
        9..=16 => 2,
        17..=32 => 4,
        _ => 8,
    }
}

/// Bytes of one weight vector's planes: full words `[K/64][wb]` of 8 bytes, then the
/// tail word of each plane in [`tail_bytes`].
pub(crate) fn row_bytes(k: usize, wb: usize) -> usize {
    (k / 64) * wb * 8 + wb * tail_bytes(k)
}

/// Packs `vecs` weight vectors (rows padded to a multiple of `tw` with zero vectors)
/// into bit planes: per vector, the full K words `[K/64][wb]` (plane j holds bit j of
/// the two's-complement code, bit `kk % 64` of word `kk / 64`), then the planes' tail
/// words, little-endian, in [`tail_bytes`] each.
fn pack_weights(
    vecs: usize,
    tw: usize,
    k: usize,
    wb: usize,
    get: impl Fn(usize, usize) -> i64,
) -> Vec<u8> {
    let (full, tb, rb) = (k / 64, tail_bytes(k), row_bytes(k, wb));
    let mut v = vec![0u8; vecs.div_ceil(tw) * tw * rb];
    for vi in 0..vecs {
        let row = &mut v[vi * rb..(vi + 1) * rb];
        for kk in 0..k {
            let code = get(vi, kk) as u64;
            let (word, bit) = (kk / 64, kk % 64);
            for j in 0..wb {
                if (code >> j) & 1 == 1 {
                    let at = if word < full {
                        (word * wb + j) * 8
                    } else {
                        full * wb * 8 + j * tb
                    };
                    row[at + bit / 8] |= 1 << (bit % 8);
                }
            }
        }
    }
    v
}

/// The fused requantize with the correction table folded into its per-channel table
/// (`Requant::fold_bias`: exact, the same i32 wrap-around), so no separate table is
/// stored; None without a requantize or when it cannot take it.
fn fold_table(epi: &IntEpi, table: &[i32]) -> Option<super::quant::Requant> {
    if table.iter().all(|&v| v == 0) {
        return None;
    }
    let b: Vec<i64> = table.iter().map(|&v| v as i64).collect();
    epi.rq.as_ref()?.fold_bias(&b)
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The epilogue table of `chans` channels: constant bias (if any) `- zu * sum_k w[ch, k]
/// + K * zu * zw[ch]`, wrapped to i32. `bias` is the constant bias (empty: none or a
/// run-time one), `zw` the weight zero points (empty: all 0).
fn corr_table(
    chans: usize,
    k: usize,
    zu: i64,
    bias: &[i64],
    zw: &[i64],
    w: impl Fn(usize, usize) -> i64,
) -> Vec<i32> {
    (0..chans)
        .map(|ch| {
            let s: i64 = (0..k).map(|kk| w(ch, kk)).sum();
            let b = bias.get(ch).copied().unwrap_or(0);
            let z = zw.get(ch).copied().unwrap_or(0);
            let kz = (k as i64).wrapping_mul(zu).wrapping_mul(z);
            b.wrapping_sub(zu.wrapping_mul(s)).wrapping_add(kz) as i32
        })
        .collect()
}

/// The bias operand: `(constant codes, run-time pointer)`; a constant bias goes into the
/// epilogue table, a run-time one to `AccStore`.
fn bias_of(cx: &mut Ecx<'_, '_, '_, '_>, epi: &IntEpi) -> (Vec<i64>, Option<Value>) {
    if !epi.has_bias {
        return (Vec::new(), None);
    }
    match (cx.const_of)(cx.node.operands[2]) {
        Some(ConstData::Int(v)) => (v.clone(), None),
        _ => (Vec::new(), Some(cx.operand(2))),
    }
}

pub(crate) fn emit(cx: &mut Ecx<'_, '_, '_, '_>, q: &BsLowering) {
    if let Some(w) = q.wide {
        match &q.kind {
            BsKind::MatMul { m, n, k, batches } => {
                emit_matmul_wide(cx, (*m, *n, *k), batches, q, w)
            }
            BsKind::Conv { g, .. } => emit_conv_wide(cx, g, q, w),
        }
        return;
    }
    match &q.kind {
        BsKind::MatMul { m, n, k, batches } => {
            emit_matmul(cx, (*m, *n, *k), batches, q);
        }
        BsKind::Conv { g, chan } => emit_conv(cx, g, *chan, q),
    }
}

fn weights_of(cx: &Ecx<'_, '_, '_, '_>) -> Vec<i64> {
    match (cx.const_of)(cx.node.operands[1]) {
        Some(ConstData::Int(v)) => v.clone(),
        _ => Vec::new(),
    }
}

/// The splatted activation offset (`I8X16`), defined once before every loop.
fn off_vec(kb: &mut Kb<'_, '_>, off: i64) -> Option<Value> {
    (off != 0).then(|| {
        let o = kb.b.ins().iconst(I8, off);
        kb.b.ins().splat(I8X16, o)
    })
}

/// A matrix product's constants: the `nb_b` weight matrices of `b` (`[K, N]` each)
/// packed by `pack` one after the other (`align`ed), their correction table (constant
/// bias `bias_c`, weight zero points `q.zw`) and, with one matrix, that table folded
/// into the fused requantize (`Requant::fold_bias`); else the table stays its own
/// (None when all 0).
#[allow(clippy::type_complexity, reason = "three results")]
fn matmul_consts(
    cx: &mut Ecx<'_, '_, '_, '_>,
    q: &BsLowering,
    (n, k, nb_b): (usize, usize, usize),
    b: &[i64],
    bias_c: &[i64],
    align: u64,
    pack: &dyn Fn(&dyn Fn(usize, usize) -> i64) -> Vec<u8>,
) -> (Value, Option<Value>, Option<Requant>) {
    let zu = q.bits.zx + q.bits.off;
    let mut packed = Vec::new();
    let mut table = Vec::new();
    for s in 0..nb_b {
        let at = |j: usize, kk: usize| b[s * k * n + kk * n + j];
        packed.extend(pack(&at));
        table.extend(corr_table(n, k, zu, bias_c, &q.zw, at));
    }
    let bp = cx.rodata(packed, align);
    let folded = if nb_b == 1 {
        fold_table(&q.epi, &table)
    } else {
        None
    };
    let tab = (folded.is_none() && table.iter().any(|&v| v != 0))
        .then(|| cx.rodata(i32_bytes(&table), 16));
    (bp, tab, folded)
}

fn emit_matmul(
    cx: &mut Ecx<'_, '_, '_, '_>,
    (m, n, k): (usize, usize, usize),
    batches: &[(usize, usize)],
    q: &BsLowering,
) {
    let (bits, epi) = (&q.bits, &q.epi);
    let (w, tw, wb, ab) = (kw(k), bits.tw(), bits.wb, bits.ab);
    let np = n.div_ceil(tw) * tw;
    let a = cx.operand(0);
    let nb_b = batches.iter().map(|b| b.1).max().unwrap_or(0) + 1;
    let b = weights_of(cx);
    let (bias_c, bias_rt) = bias_of(cx, epi);
    let (bp, tab, folded) = matmul_consts(cx, q, (n, k, nb_b), &b, &bias_c, 16, &|at| {
        pack_weights(n, tw, k, wb, at)
    });
    let rq = folded
        .as_ref()
        .or(epi.rq.as_ref())
        .map(|r| (r, cx.rodata(r.table(), 16)));
    let zwt = zw_table(cx, &q.zw);
    let deq = epi.deq.as_ref().map(|d| (d, cx.rodata(d.table(), 16)));
    let (out, ws) = (cx.out, cx.ws);
    let ob = epi.st_out.bytes();
    let bits = *bits;
    let kb = &mut *cx.kb;
    let offv = off_vec(kb, bits.off);
    let sx = kb.off(ws, (m * w * ab * 8) as i64);
    let zwsx = zwt.map(|z| (z, sx));
    for (bi, &(ba, bb)) in batches.iter().enumerate() {
        let abase = kb.off(a, (ba * m * k) as i64);
        kb.for_range(0, m as i64, 1, |kb, i| {
            let src = kb.idx(abase, i, k as i64);
            let dst = kb.idx(ws, i, (w * ab * 8) as i64);
            pack_planes(kb, src, k, dst, &bits, offv);
            if zwt.is_some() {
                let d = kb.idx(sx, i, 4);
                vector_sum(kb, dst, k, ab, d);
            }
        });
        let wts = kb.off(bp, (bb * np * row_bytes(k, wb)) as i64);
        let tab_b = tab.map(|t| kb.off(t, (bb * n * 4) as i64));
        let o = kb.off(out, (bi * m * n * ob) as i64);
        emit_tiles(
            kb,
            &Tiles {
                wts,
                acts: ws,
                nw: n,
                na: m,
                k,
                bits,
                wrows: false,
                out: o,
                ldc: n,
                zw: zwsx,
                table: tab_b,
                bias: bias_rt,
                rq,
                deq,
                st_out: epi.st_out,
                buf: None,
            },
        );
    }
}

/// Packs the `nbytes` code bytes at `src` into `[KW][ab]` plane words at `dst` (bits
/// past `nbytes` are 0): plane `i` holds bit `i` of `code + off`.
fn pack_planes(
    kb: &mut Kb<'_, '_>,
    src: Value,
    nbytes: usize,
    dst: Value,
    bits: &Bits,
    offv: Option<Value>,
) {
    let ab = bits.ab;
    let words = |kb: &mut Kb<'_, '_>, s: Value, len: usize| -> Vec<Value> {
        let mut acc: Vec<Option<Value>> = vec![None; ab];
        let or = |kb: &mut Kb<'_, '_>, acc: &mut Option<Value>, v: Value| {
            *acc = Some(match *acc {
                None => v,
                Some(a) => kb.b.ins().bor(a, v),
            });
        };
        for ch in 0..len / 16 {
            let v = kb.load(I8X16, s, (ch * 16) as i64);
            let v = match offv {
                Some(o) => kb.b.ins().iadd(v, o),
                None => v,
            };
            // Bit ab-1 to the sign bit, then one bit further per plane (paddb).
            let mut t = kb.ishl_k(v, (8 - ab) as i64);
            for i in (0..ab).rev() {
                if i + 1 < ab {
                    t = kb.b.ins().iadd(t, t);
                }
                let m = kb.b.ins().vhigh_bits(I64, t);
                let m = if ch == 0 {
                    m
                } else {
                    kb.b.ins().ishl_imm_u(m, (ch * 16) as i64)
                };
                or(kb, &mut acc[i], m);
            }
        }
        for e in len / 16 * 16..len {
            let v = kb.b.ins().uload8(I64, MF, s, e as i32);
            let v = if bits.off != 0 {
                kb.b.ins().iadd_imm_s(v, bits.off)
            } else {
                v
            };
            for (i, a) in acc.iter_mut().enumerate() {
                let bit = if i == 0 {
                    v
                } else {
                    kb.b.ins().ushr_imm_u(v, i as i64)
                };
                let bit = kb.b.ins().band_imm_s(bit, 1);
                let bit = if e == 0 {
                    bit
                } else {
                    kb.b.ins().ishl_imm_u(bit, e as i64)
                };
                or(kb, a, bit);
            }
        }
        acc.into_iter()
            .map(|a| a.unwrap_or_else(|| kb.c(0)))
            .collect()
    };
    let full = nbytes / 64;
    kb.for_range(0, full as i64, 1, |kb, u| {
        let s = kb.idx(src, u, 64);
        let v = words(kb, s, 64);
        let d = kb.idx(dst, u, (ab * 8) as i64);
        for (i, &x) in v.iter().enumerate() {
            kb.store(x, d, (i * 8) as i64);
        }
    });
    let rest = nbytes % 64;
    if rest > 0 {
        let s = kb.off(src, (full * 64) as i64);
        let v = words(kb, s, rest);
        for (i, &x) in v.iter().enumerate() {
            kb.store(x, dst, ((full * ab + i) * 8) as i64);
        }
    }
}

/// The i32 table of the weight zero points (None when all are 0).
fn zw_table(cx: &mut Ecx<'_, '_, '_, '_>, zw: &[i64]) -> Option<Value> {
    (!zw.is_empty()).then(|| {
        let v: Vec<i32> = zw.iter().map(|&z| z as i32).collect();
        cx.rodata(i32_bytes(&v), 16)
    })
}

/// `sum_{kk < k} xu[kk] = sum_i 2^i popcount(plane_i)` of the `[KW][ab]` plane words at
/// `src` (the last word masked to K), stored as an i32 at `dst`.
fn vector_sum(kb: &mut Kb<'_, '_>, src: Value, k: usize, ab: usize, dst: Value) {
    let zero = kb.c(0);
    let sums: Vec<_> = (0..ab).map(|_| kb.var(I64, zero)).collect();
    let add = |kb: &mut Kb<'_, '_>, p: Value, off: i64, mask: Option<i64>| {
        for (i, &s) in sums.iter().enumerate() {
            let v = kb.load(I64, p, off + (i * 8) as i64);
            let v = match mask {
                Some(mk) => kb.b.ins().band_imm_s(v, mk),
                None => v,
            };
            let pc = kb.b.ins().popcnt(v);
            let acc = kb.b.use_var(s);
            let acc = kb.b.ins().iadd(acc, pc);
            kb.b.def_var(s, acc);
        }
    };
    let full = k / 64;
    kb.for_range(0, full as i64, 1, |kb, u| {
        let p = kb.idx(src, u, (ab * 8) as i64);
        add(kb, p, 0, None);
    });
    if !k.is_multiple_of(64) {
        add(
            kb,
            src,
            (full * ab * 8) as i64,
            Some(((1u64 << (k % 64)) - 1) as i64),
        );
    }
    let mut total = zero;
    for (i, &s) in sums.iter().enumerate() {
        let v = kb.b.use_var(s);
        let v = if i == 0 {
            v
        } else {
            kb.b.ins().ishl_imm_u(v, i as i64)
        };
        total = kb.b.ins().iadd(total, v);
    }
    kb.b.ins().istore32(MF, total, dst, 0);
}

/// Fills `len` bytes (a multiple of 16) at `p` with the byte `v`.
fn fill_bytes(kb: &mut Kb<'_, '_>, p: Value, len: usize, v: i64) {
    let b = kb.b.ins().iconst(I8, v as u8 as i64);
    let s = kb.b.ins().splat(I8X16, b);
    kb.for_range(0, (len / 16) as i64, 1, |kb, i| {
        let d = kb.idx(p, i, 16);
        kb.store(s, d, 0);
    });
}

/// Workspace bytes of a conv before its result buffer (`sx`: bytes of `sum xu` per
/// activation vector).
fn conv_main_bytes(g: &ConvGeom, chan: bool, ab: usize, sx: usize) -> usize {
    let (np, w) = (g.npix(), kw(g.kdim()));
    if chan {
        (np * (w * ab * 8 + sx)).next_multiple_of(16) + planes::chan_bytes(g, ab)
    } else {
        np * pixel_stride(w) + np * (w * ab * 8 + sx)
    }
}

/// Bytes of one row of a conv's result buffer (see [`Tiles::buf`]) for `cols` pixels.
fn buf_row(cols: usize) -> usize {
    cols.div_ceil(4) * 16
}

fn emit_conv(cx: &mut Ecx<'_, '_, '_, '_>, g: &ConvGeom, chan: bool, q: &BsLowering) {
    let (bits, epi) = (&q.bits, &q.epi);
    let (mg, k, npix) = (g.mg(), g.kdim(), g.npix());
    let (w, tw, wb, ab) = (kw(k), bits.tw(), bits.wb, bits.ab);
    let mgp = mg.div_ceil(tw) * tw;
    let x = cx.operand(0);
    let wt = weights_of(cx);
    let (bias_c, bias_rt) = bias_of(cx, epi);
    let zu = bits.zx + bits.off;
    // The weights' K index of the GEMM's K index (tap-major with `chan`).
    let wk = |kk: usize| if chan { planes::weight_k(g, kk) } else { kk };
    let mut packed = Vec::new();
    for grp in 0..g.group {
        packed.extend(pack_weights(mg, tw, k, wb, |i, kk| {
            wt[(grp * mg + i) * k + wk(kk)]
        }));
    }
    let wp = cx.rodata(packed, 16);
    let table = corr_table(g.m, k, zu, &bias_c, &q.zw, |ch, kk| wt[ch * k + kk]);
    let folded = fold_table(epi, &table);
    let tab = (folded.is_none() && table.iter().any(|&v| v != 0))
        .then(|| cx.rodata(i32_bytes(&table), 16));
    let rq = folded
        .as_ref()
        .or(epi.rq.as_ref())
        .map(|r| (r, cx.rodata(r.table(), 16)));
    let zwt = zw_table(cx, &q.zw);
    let deq = epi.deq.as_ref().map(|d| (d, cx.rodata(d.table(), 16)));
    let (out, ws) = (cx.out, cx.ws);
    let ob = epi.st_out.bytes();
    let (g, bits) = (*g, *bits);
    let cg = g.cg();
    let kb = &mut *cx.kb;
    // With a vector epilogue, the tiles' i32 results go to a buffer at the end of the
    // workspace, requantized four pixels at a time after each tile row.
    let vector = AccStore {
        ldc: npix,
        chan_of_row: true,
        bias: bias_rt,
        rq,
        thr: None,
        deq,
        st_out: epi.st_out,
    }
    .vectorizes();
    let sxb = if q.zw.is_empty() { 0 } else { 4 };
    let buf = vector.then(|| {
        let b = kb.off(ws, conv_main_bytes(&g, chan, ab, sxb) as i64);
        (b, buf_row(npix) as i64)
    });
    let tiles = |kb: &mut Kb<'_, '_>, grp: Value, og: Value, acts: Value, sx: Value| {
        let wg = kb.idx(wp, grp, (mgp * row_bytes(k, wb)) as i64);
        let zwsx = zwt.map(|z| (kb.idx(z, grp, (mg * 4) as i64), sx));
        let tab_g = tab.map(|t| kb.idx(t, grp, (mg * 4) as i64));
        let bias_g = bias_rt.map(|b| kb.idx(b, grp, (mg * 4) as i64));
        let rq_g = rq.map(|(r, t)| (r, kb.idx(t, grp, mg as i64 * r.stride())));
        let deq_g = deq.map(|(d, t)| (d, kb.idx(t, grp, (mg * 4) as i64)));
        emit_tiles(
            kb,
            &Tiles {
                wts: wg,
                acts,
                nw: mg,
                na: npix,
                k,
                bits,
                wrows: true,
                out: og,
                ldc: npix,
                zw: zwsx,
                table: tab_g,
                bias: bias_g,
                rq: rq_g,
                deq: deq_g,
                st_out: epi.st_out,
                buf,
            },
        );
    };
    let sums = |kb: &mut Kb<'_, '_>, acts: Value, sx: Value| {
        if zwt.is_some() {
            kb.for_range(0, npix as i64, 1, |kb, p| {
                let d = kb.idx(acts, p, (w * ab * 8) as i64);
                let s = kb.idx(sx, p, 4);
                vector_sum(kb, d, k, ab, s);
            });
        }
    };
    if chan {
        // Activation vectors [npix][KW][ab] at ws: the valid taps are rewritten for
        // every image and group from the channel bits after them. The pixels with a
        // padded tap start as the code zu in every plane word (all ones where its bit
        // is set), which their padded taps keep; the bits past K meet zero weight bits.
        let sx = kb.off(ws, (npix * w * ab * 8) as i64);
        let sxb = if zwt.is_some() { npix * 4 } else { 0 };
        let cbits = kb.off(ws, (npix * w * ab * 8 + sxb).next_multiple_of(16) as i64);
        let pat: Vec<Value> = (0..ab)
            .map(|i| kb.c(if (zu >> i) & 1 == 1 { -1 } else { 0 }))
            .collect();
        let fill = |kb: &mut Kb<'_, '_>, row: Value, lo: usize, hi: usize| {
            kb.for_range(lo as i64, hi as i64, 1, |kb, ox| {
                let p = kb.b.ins().iadd(row, ox);
                let d = kb.idx(ws, p, (w * ab * 8) as i64);
                kb.for_range(0, w as i64, 1, |kb, u| {
                    let du = kb.idx(d, u, (ab * 8) as i64);
                    for (i, &pv) in pat.iter().enumerate() {
                        kb.store(pv, du, (i * 8) as i64);
                    }
                });
            });
        };
        let ((r0, r1), (c0, c1)) = planes::interior(&g);
        let zero = kb.c(0);
        if r0 >= r1 || c0 >= c1 {
            fill(kb, zero, 0, npix);
        } else {
            fill(kb, zero, 0, r0 * g.ow);
            fill(kb, zero, r1 * g.ow, npix);
            kb.for_range(r0 as i64, r1 as i64, 1, |kb, oy| {
                let row = kb.b.ins().imul_imm_s(oy, g.ow as i64);
                fill(kb, row, 0, c0);
                fill(kb, row, c1, g.ow);
            });
        }
        let pl = planes::Planes {
            n: ab,
            first: 0,
            off: bits.off,
        };
        let dst = planes::Dst::Vectors { kw: w, planes: ab };
        kb.for_range(0, g.n as i64, 1, |kb, n| {
            let xn = kb.idx(x, n, (g.c * g.h * g.w) as i64);
            let on = kb.idx(out, n, (g.m * npix * ob) as i64);
            kb.for_range(0, g.group as i64, 1, |kb, grp| {
                let xg = kb.idx(xn, grp, (cg * g.h * g.w) as i64);
                let og = kb.idx(on, grp, (mg * npix * ob) as i64);
                planes::pack(kb, &g, xg, cbits, pl);
                planes::gather(kb, &g, cbits, ws, dst, ab);
                sums(kb, ws, sx);
                tiles(kb, grp, og, ws, sx);
            });
        });
        return;
    }
    let offv = off_vec(kb, bits.off);
    // Byte patches [npix][ps]: padded taps and bytes past K hold zx; the valid taps are
    // rewritten for every image and group.
    let (pb, ps) = (w * 64, pixel_stride(w));
    fill_bytes(kb, ws, npix * ps, bits.zx);
    let acts = kb.off(ws, (npix * ps) as i64);
    let sx = kb.off(acts, (npix * w * ab * 8) as i64);
    kb.for_range(0, g.n as i64, 1, |kb, n| {
        let xn = kb.idx(x, n, (g.c * g.h * g.w) as i64);
        let on = kb.idx(out, n, (g.m * npix * ob) as i64);
        kb.for_range(0, g.group as i64, 1, |kb, grp| {
            let xg = kb.idx(xn, grp, (cg * g.h * g.w) as i64);
            let og = kb.idx(on, grp, (mg * npix * ob) as i64);
            im2col_bytes(kb, &g, xg, ws, ps);
            kb.for_range(0, npix as i64, 1, |kb, p| {
                let src = kb.idx(ws, p, ps as i64);
                let d = kb.idx(acts, p, (w * ab * 8) as i64);
                pack_planes(kb, src, pb, d, &bits, offv);
            });
            sums(kb, acts, sx);
            tiles(kb, grp, og, acts, sx);
        });
    });
}

/// One bit-serial GEMM: for weight vector `v` and activation vector `a`, the result
/// `table[v] + sum_{i,j} s_j 2^(i+j) popcount(A[a]_i & W[v]_j)` goes through the
/// epilogue to `out[v*ldc + a]` (`wrows`, conv) or `out[a*ldc + v]` (matmul).
#[derive(Clone, Copy)]
struct Tiles<'t> {
    wts: Value,
    acts: Value,
    nw: usize,
    na: usize,
    k: usize,
    bits: Bits,
    wrows: bool,
    out: Value,
    ldc: usize,
    /// With weight zero points: their i32 table (per channel) and the activation
    /// vectors' `sum xu` (i32 per vector); `zw[ch] * sum xu` is subtracted.
    zw: Option<(Value, Value)>,
    table: Option<Value>,
    bias: Option<Value>,
    rq: Option<(&'t Requant, Value)>,
    deq: Option<(&'t Deq, Value)>,
    st_out: Store,
    /// Conv with a vector epilogue: `tw` rows of i32 results (this many bytes apart),
    /// which the tiles fill and [`AccStore::flush_rows`] stores after each tile row.
    buf: Option<(Value, i64)>,
}

impl Tiles<'_> {
    fn acc(&self) -> AccStore<'_> {
        AccStore {
            ldc: self.ldc,
            chan_of_row: self.wrows,
            bias: self.bias,
            rq: self.rq,
            thr: None,
            deq: self.deq,
            st_out: self.st_out,
        }
    }
}

fn emit_tiles(kb: &mut Kb<'_, '_>, t: &Tiles<'_>) {
    let tw = t.bits.tw();
    let full = t.nw / tw;
    let acts = |kb: &mut Kb<'_, '_>, v0: Value, rows: usize| {
        kb.for_range(0, t.na as i64, 1, |kb, a| tile(kb, t, v0, a, rows));
        if let Some((buf, row)) = t.buf {
            let ob = t.st_out.bytes() as i64;
            t.acc().flush_rows(kb, buf, row, v0, rows, t.na, t.out, ob);
        }
    };
    if full > 0 {
        kb.for_range(0, full as i64, 1, |kb, wt| {
            let v0 = kb.b.ins().imul_imm_s(wt, tw as i64);
            acts(kb, v0, tw);
        });
    }
    if !t.nw.is_multiple_of(tw) {
        let v0 = kb.c((full * tw) as i64);
        acts(kb, v0, t.nw % tw);
    }
}

/// The tile's dot products `sum_{i,j} s_j 2^(i+j) popcount(a_i & w_j)` (i64 per row) with
/// the vector popcount (aarch64 `cnt.16b`): per K word, two activation planes sit in one
/// vector (they are adjacent), each weight plane word is splatted, ANDed, counted per
/// byte and added to byte sums that are widened (`uaddlp` twice) every 31 words.
fn vector_dots(
    kb: &mut Kb<'_, '_>,
    t: &Tiles<'_>,
    wp: Value,
    ap: Value,
    rows: usize,
) -> Vec<Value> {
    let b = t.bits;
    let (wb, ab) = (b.wb, b.ab);
    let wstride = row_bytes(t.k, wb) as i64;
    let (full, tb) = (t.k / 64, tail_bytes(t.k));
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let pv = ab.div_ceil(2); // activation vectors per K word
    let z32 = kb.b.ins().iconst(I32, 0);
    let z32 = kb.b.ins().splat(I32X4, z32);
    let z8 = kb.b.ins().iconst(I8, 0);
    let z8 = kb.b.ins().splat(I8X16, z8);
    let idx = |r: usize, p: usize, j: usize| (r * pv + p) * wb + j;
    let n = rows * pv * wb;
    let totals: Vec<_> = (0..n).map(|_| kb.var(I32X4, z32)).collect();
    // One K word: activation planes at `au`, weight planes of row r at `wu + r*wstride +
    // j*wstep`, `wbytes` bytes each (zero-extended).
    let step = |kb: &mut Kb<'_, '_>,
                sums: &[cranelift_frontend::Variable],
                wu: Value,
                au: Value,
                wstep: usize,
                wbytes: usize| {
        let av: Vec<Value> = (0..pv)
            .map(|p| {
                if 2 * p + 1 < ab {
                    kb.load(I64X2, au, (p * 16) as i64)
                } else {
                    // The last, odd plane alone (the next word's plane must not count).
                    let x = kb.load(I64, au, (p * 16) as i64);
                    kb.b.ins().scalar_to_vector(I64X2, x)
                }
            })
            .collect();
        for r in 0..rows {
            for j in 0..wb {
                let off = (r as i64 * wstride + (j * wstep) as i64) as i32;
                let wv = match wbytes {
                    1 => kb.b.ins().uload8(I64, MF, wu, off),
                    2 => kb.b.ins().uload16(I64, MF, wu, off),
                    4 => kb.b.ins().uload32(MF, wu, off),
                    _ => kb.b.ins().load(I64, MF, wu, off),
                };
                let wv = kb.b.ins().splat(I64X2, wv);
                for (p, &a) in av.iter().enumerate() {
                    let x = kb.b.ins().band(a, wv);
                    let x = kb.b.ins().bitcast(I8X16, le, x);
                    let pc = kb.b.ins().popcnt(x);
                    let v = sums[idx(r, p, j)];
                    let acc = kb.b.use_var(v);
                    let acc = kb.b.ins().iadd(acc, pc);
                    kb.b.def_var(v, acc);
                }
            }
        }
    };
    let fold = |kb: &mut Kb<'_, '_>, sums: &[cranelift_frontend::Variable]| {
        kb.fold_byte_sums(sums, &totals)
    };
    let mut start = 0;
    while start < full {
        let end = (start + BYTE_SUMS).min(full);
        let sums: Vec<_> = (0..n).map(|_| kb.var(I8X16, z8)).collect();
        kb.for_range(start as i64, end as i64, 1, |kb, u| {
            let wu = kb.idx(wp, u, (wb * 8) as i64);
            let au = kb.idx(ap, u, (ab * 8) as i64);
            step(kb, &sums, wu, au, 8, 8);
        });
        fold(kb, &sums);
        start = end;
    }
    if tb > 0 {
        let sums: Vec<_> = (0..n).map(|_| kb.var(I8X16, z8)).collect();
        let wu = kb.off(wp, (full * wb * 8) as i64);
        let au = kb.off(ap, (full * ab * 8) as i64);
        step(kb, &sums, wu, au, tb, tb);
        fold(kb, &sums);
    }
    // u32 lanes 0-1 count plane 2p, lanes 2-3 plane 2p + 1.
    (0..rows)
        .map(|r| {
            let mut dot = kb.b.ins().iconst(I64, 0);
            for p in 0..pv {
                for j in 0..wb {
                    let tv = kb.b.use_var(totals[idx(r, p, j)]);
                    for half in 0..2 {
                        let i = 2 * p + half;
                        if i >= ab {
                            continue;
                        }
                        let x = kb.b.ins().extractlane(tv, (2 * half) as u8);
                        let y = kb.b.ins().extractlane(tv, (2 * half + 1) as u8);
                        let c = kb.b.ins().iadd(x, y);
                        let c = kb.b.ins().uextend(I64, c);
                        let c = kb.b.ins().ishl_imm_u(c, (i + j) as i64);
                        dot = if b.wsigned && j + 1 == wb {
                            kb.b.ins().isub(dot, c)
                        } else {
                            kb.b.ins().iadd(dot, c)
                        };
                    }
                }
            }
            dot
        })
        .collect()
}

/// A tile of `rows` weight vectors from `v0` by the activation vector `a`.
fn tile(kb: &mut Kb<'_, '_>, t: &Tiles<'_>, v0: Value, a: Value, rows: usize) {
    let b = t.bits;
    let (w, wb, ab) = (kw(t.k), b.wb, b.ab);
    let wstride = row_bytes(t.k, wb) as i64;
    let (full, tb) = (t.k / 64, tail_bytes(t.k));
    let wp = kb.idx(t.wts, v0, wstride);
    let ap = kb.idx(t.acts, a, (w * ab * 8) as i64);
    let zero = kb.c(0);
    let slots = b.slots();
    let sums: Vec<Vec<Option<_>>> = (0..rows)
        .map(|_| {
            slots
                .iter()
                .map(|&used| used.then(|| kb.var(I64, zero)))
                .collect()
        })
        .collect();
    // One K word: activation planes at `au`, weight plane j of row r at
    // `wu + r * wstride + j * wstep`, `wbytes` bytes each (zero-extended to 64 bits;
    // the activation bits past K are 0).
    let step = |kb: &mut Kb<'_, '_>, wu: Value, au: Value, wstep: usize, wbytes: usize| {
        let av: Vec<Value> = (0..ab).map(|i| kb.load(I64, au, (i * 8) as i64)).collect();
        for (r, sr) in sums.iter().enumerate() {
            for j in 0..wb {
                let off = (r as i64 * wstride + (j * wstep) as i64) as i32;
                let wv = match wbytes {
                    1 => kb.b.ins().uload8(I64, MF, wu, off),
                    2 => kb.b.ins().uload16(I64, MF, wu, off),
                    4 => kb.b.ins().uload32(MF, wu, off),
                    _ => kb.b.ins().load(I64, MF, wu, off),
                };
                for (i, &x) in av.iter().enumerate() {
                    let m = kb.b.ins().band(x, wv);
                    let pc = kb.b.ins().popcnt(m);
                    // acc += pc << sh: one `lea` for sh <= 3.
                    let (slot, sh) = b.slot(i, j);
                    let pc = if sh == 0 {
                        pc
                    } else {
                        kb.b.ins().ishl_imm_u(pc, sh as i64)
                    };
                    let var = sr[slot].expect("a used slot has a sum");
                    let acc = kb.b.use_var(var);
                    let acc = kb.b.ins().iadd(acc, pc);
                    kb.b.def_var(var, acc);
                }
            }
        }
    };
    let vdots = if kb.feat.vector_popcnt {
        Some(vector_dots(kb, t, wp, ap, rows))
    } else {
        // The K loop is not unrolled: unrolling by 2 measured slower on the project's
        // machine (more live values than registers).
        kb.for_range(0, full as i64, 1, |kb, u| {
            let wu = kb.idx(wp, u, (wb * 8) as i64);
            let au = kb.idx(ap, u, (ab * 8) as i64);
            step(kb, wu, au, 8, 8);
        });
        if tb > 0 {
            let wu = kb.off(wp, (full * wb * 8) as i64);
            let au = kb.off(ap, (full * ab * 8) as i64);
            step(kb, wu, au, tb, tb);
        }
        None
    };
    // Epilogue.
    let ob = t.st_out.bytes() as i64;
    let (row0, col0) = if t.wrows { (v0, a) } else { (a, v0) };
    let out_row = kb.idx(t.out, row0, t.ldc as i64 * ob);
    let out_tile = kb.idx(out_row, col0, ob);
    let acc = t.acc();
    for (r, sr) in sums.iter().enumerate() {
        // dot = P + (P4 << 4) - N - (N4 << 4).
        let mut dot = vdots.as_ref().map_or(zero, |d| d[r]);
        for (slot, var) in sr.iter().enumerate() {
            if vdots.is_some() {
                break;
            }
            let Some(var) = *var else { continue };
            let v = kb.b.use_var(var);
            let v = if slot & 1 == 1 {
                kb.b.ins().ishl_imm_u(v, 4)
            } else {
                v
            };
            dot = if slot & 2 == 2 {
                kb.b.ins().isub(dot, v)
            } else {
                kb.b.ins().iadd(dot, v)
            };
        }
        let mut x = kb.b.ins().ireduce(I32, dot);
        if let Some((zt, sx)) = t.zw {
            let zp = kb.idx(zt, v0, 4);
            let z = kb.load(I32, zp, (r * 4) as i64);
            let sp = kb.idx(sx, a, 4);
            let s = kb.load(I32, sp, 0);
            let p = kb.b.ins().imul(z, s);
            x = kb.b.ins().isub(x, p);
        }
        if let Some(tab) = t.table {
            let p = kb.idx(tab, v0, 4);
            let c = kb.load(I32, p, (r * 4) as i64);
            x = kb.b.ins().iadd(x, c);
        }
        match t.buf {
            Some((buf, row)) => {
                let p = kb.idx(buf, a, 4);
                kb.store(x, p, r as i64 * row);
            }
            None => {
                let rc = if t.wrows { (r, 0) } else { (0, r) };
                acc.store(kb, x, (row0, col0), rc, out_tile, ob);
            }
        }
    }
}
