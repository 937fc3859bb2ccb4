//! The integer path: quantize, dequantize, requantize, and the integer convolution and
//! matrix product with i32 accumulation (bit-exact with the interpreter).
//!
//! - `quantize`/`dequantize` run on f32x4 lanes: the division is an f32 division as in
//!   the interpreter, rounding uses the 1.5 * 2^23 trick plus exact fix-ups for the
//!   other modes (no SSE4.1 `round` needed), then saturation to the storage range.
//!   With AVX-512, `quantize` runs of 16 elements go to the zmm kernel of
//!   `quantzmm.rs` (rounding by `vrndscaleps`: half-even, floor, ceil, toward zero).
//! - `conv2d_int`/`matmul_int` (operands of at most 8 bits) subtract the zero points
//!   while packing into i16 *pairs* along K (`[K/2][N][2]`, at run time by im2col, at
//!   compile time for constant weights), so that one `pmaddwd` (docs/kernels.md's
//!   `iadd_pairwise(imul(swiden_low a, swiden_low b), imul(swiden_high ..))` tree) does
//!   two multiply-adds per lane; products of two 9-bit values and their pair sums fit in
//!   i32, and i32 wrap-around addition is the interpreter's wrap of the exact sum. Tile:
//!   4 rows x 8 columns of i32x4 accumulators.
//!   Constant weights of fewer than 8 bits are stored bit-packed instead and widened
//!   into the workspace at the start of the layer (`packw`, zero points subtracted
//!   there), so the object's weight bytes shrink with the bits.
//! - `requantize` is exact 64-bit fixed point: `a * multiplier` fits in i64 (|a| < 2^32,
//!   |multiplier| <= 2^31); left shifts saturate first (the bound is chosen so the
//!   clamp to the 32-bit output range is unchanged); right shifts round by the named
//!   mode from the floor and the remainder. Fused after an integer conv/matmul it runs
//!   on the accumulators before they are stored, so the i32 tensor never exists.
//!   Its per-channel table is compact (see `Requant::table`): parameters equal across
//!   channels become constants in the code, the others are packed into 32-bit words,
//!   and a constant bias is folded in when the accumulator zero points are 0 (about 8
//!   bytes per channel for a per-channel requantize with bias, instead of 52).

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I8, I8X16, I16X8, I32, I32X4, I64, I64X2};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value};
use qcc_ir::shape::normalize_axis;
use qcc_ir::{Attrs, ConstData, ElemType, Module, Node, Op, QuantParams, Rounding};

use super::conv::{self, ConvGeom};
use super::im2col;
use super::packw::{PackedW, Unpack, zp_mode};
use super::quantzmm::QuantZmm;
use super::{ConstOf, Ecx, matmul_geom};
use crate::backend::asm::AsmFn;
use crate::backend::kb::{Kb, MF, RO};
use crate::backend::storage::Store;

/// Exact fixed-point rescale, one entry per channel.
#[derive(Clone, Debug)]
pub(crate) struct Requant {
    pub rounding: Rounding,
    pub lo: i64,
    pub hi: i64,
    /// Per channel: multiplier, right shift, left shift, pre-shift bound, zx, zq.
    /// With `bias_folded`, the fifth entry is the channel's i32 bias (and zx is 0).
    pub chans: Vec<[i64; 6]>,
    /// Whether the producer's constant bias is in the table (see [`Requant::fold_bias`]).
    pub bias_folded: bool,
    /// A bound on |value requantized| (after any bias) that the producing kernel
    /// guarantees, e.g. K plus the largest |bias| for a 1-bit dot: it lets the vector
    /// form finish in i32 lanes where the bound keeps the result within i32.
    pub acc_max: Option<u64>,
}

/// Where one per-channel parameter of a [`Requant`] lives: a constant when all channels
/// agree, else `width` bits at bit `pos` of table column `col` (sign-extended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Const(i64),
    Packed { col: usize, pos: u32, width: u32 },
}

/// The compact table layout: fields multiplier, signed shift (right > 0, left < 0),
/// offset (zx, or the folded bias), zq; columns of `word` bytes, each an array over
/// the channels.
#[derive(Clone, Debug)]
struct RqLayout {
    fields: [Field; 4],
    cols: usize,
    word: usize,
}

/// Bits of a two's complement field holding every value of `v`.
fn signed_width(v: impl Iterator<Item = i64>) -> u32 {
    v.map(|x| 65 - if x < 0 { !x } else { x }.leading_zeros())
        .max()
        .unwrap_or(1)
}

impl Requant {
    /// Per channel: (multiplier, signed shift, offset, zq).
    fn params(&self) -> impl Iterator<Item = [i64; 4]> + '_ {
        self.chans.iter().map(|c| [c[0], c[1] - c[2], c[4], c[5]])
    }

    /// The compact layout: constant fields cost nothing; the others are packed first-fit
    /// (widest first) into 32-bit words (64-bit when one needs more than 32 bits), one
    /// column array per word.
    fn layout(&self) -> RqLayout {
        let p: Vec<[i64; 4]> = self.params().collect();
        let mut fields = [Field::Const(0); 4];
        let mut varying = Vec::new();
        for f in 0..4 {
            let v0 = p.first().map_or(0, |c| c[f]);
            if p.iter().all(|c| c[f] == v0) {
                fields[f] = Field::Const(v0);
            } else {
                varying.push((signed_width(p.iter().map(|c| c[f])), f));
            }
        }
        let word_bits = if varying.iter().any(|&(w, _)| w > 32) {
            64
        } else {
            32
        };
        varying.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut used: Vec<u32> = Vec::new();
        for (w, f) in varying {
            let col = match used.iter().position(|&u| u + w <= word_bits) {
                Some(c) => c,
                None => {
                    used.push(0);
                    used.len() - 1
                }
            };
            fields[f] = Field::Packed {
                col,
                pos: used[col],
                width: w,
            };
            used[col] += w;
        }
        RqLayout {
            fields,
            cols: used.len(),
            word: word_bits as usize / 8,
        }
    }

    /// The table's bytes: column after column, each `word` bytes per channel.
    pub(crate) fn table(&self) -> Vec<u8> {
        let l = self.layout();
        let p: Vec<[i64; 4]> = self.params().collect();
        let mut out = Vec::with_capacity(l.cols * l.word * p.len());
        for col in 0..l.cols {
            for c in &p {
                let mut w = 0u64;
                for (f, field) in l.fields.iter().enumerate() {
                    if let Field::Packed {
                        col: fc,
                        pos,
                        width,
                    } = *field
                        && fc == col
                    {
                        let mask = if width == 64 {
                            u64::MAX
                        } else {
                            (1u64 << width) - 1
                        };
                        w |= (c[f] as u64 & mask) << pos;
                    }
                }
                out.extend_from_slice(&w.to_le_bytes()[..l.word]);
            }
        }
        out
    }

    /// Bytes between consecutive channels' entries of the table (0: no per-channel data).
    pub(crate) fn stride(&self) -> i64 {
        let l = self.layout();
        if l.cols == 0 { 0 } else { l.word as i64 }
    }

    /// The table pointer of channel `chan` (a run-time index) for [`requant_scalar`].
    pub(crate) fn chan_ptr(&self, kb: &mut Kb<'_, '_>, tab: Value, chan: Value) -> Value {
        match self.stride() {
            0 => tab,
            s => kb.idx(tab, chan, s),
        }
    }

    /// With the producer's constant `bias` (one i32 per channel of the epilogue) folded
    /// in, when every accumulator zero point is 0 (then `x + bias - zx` is `x + bias`,
    /// which [`requant_scalar`] adds with the same i32 wrap as the unfused kernel);
    /// None when it cannot be folded.
    pub(crate) fn fold_bias(&self, bias: &[i64]) -> Option<Requant> {
        if self.chans.iter().any(|c| c[4] != 0)
            || bias.is_empty()
            || (self.chans.len() != 1 && self.chans.len() != bias.len())
        {
            return None;
        }
        let chans = bias
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let mut c = self.chans[if self.chans.len() == 1 { 0 } else { i }];
                c[4] = b;
                c
            })
            .collect();
        Some(Requant {
            chans,
            bias_folded: true,
            ..self.clone()
        })
    }
}

/// The fused requantize of an integer conv/matmul epilogue with `chans` channels, with
/// a constant bias folded into its table where possible, and the bias pointer still
/// needed otherwise: `(requantize, its table, bias)`.
pub(crate) fn epilogue_tables(
    cx: &mut Ecx<'_, '_, '_, '_>,
    epi: &IntEpi,
    chans: usize,
) -> (Option<Requant>, Option<Value>, Option<Value>) {
    let bias_const = epi.has_bias.then(|| const_ints(cx, 2).to_vec());
    let folded = match (&epi.rq, &bias_const) {
        (Some(rq), Some(b)) if b.len() == chans => rq.fold_bias(b),
        _ => None,
    };
    let rq = folded.clone().or_else(|| epi.rq.clone());
    let tab = rq.as_ref().map(|r| cx.rodata(r.table(), 16));
    let bias = (epi.has_bias && folded.is_none()).then(|| cx.operand(2));
    (rq, tab, bias)
}

/// Integer results: optional bias, optional fused requantize, threshold or dequantize,
/// storage of the result.
#[derive(Clone, Debug)]
pub(crate) struct IntEpi {
    pub has_bias: bool,
    pub rq: Option<Requant>,
    pub thr: Option<Thresh>,
    /// A fused dequantize to f32 (and constant bias add) instead of a requantize.
    pub deq: Option<Deq>,
    pub st_out: Store,
}

impl IntEpi {
    /// What the kernel's name says of the epilogue.
    pub(crate) fn suffix(&self) -> &'static str {
        match (&self.rq, &self.thr, &self.deq) {
            (Some(_), _, _) => "+requantize",
            (_, Some(_), _) => "+threshold",
            (_, _, Some(d)) if d.bias.is_some() => "+dequantize+bias",
            (_, _, Some(_)) => "+dequantize",
            _ => "",
        }
    }
}

/// A `dequantize` fused after an integer conv/matmul (through the `cast` naming the
/// accumulator's scale), optionally followed by the `add` of a constant f32 bias along
/// the channels: per channel, `(x as f32 - zp) * scale (+ bias)` in f32, the
/// interpreter's operations in its order (no fused multiply-add), so the result is the
/// unfused kernels' bit for bit.
#[derive(Clone, Debug)]
pub(crate) struct Deq {
    pub scales: Vec<f32>,
    /// Zero points as f32 (exact: dequantized types have zero points within 2^24).
    pub zps: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

impl Deq {
    /// The dequantize (`f`: a `dequantize` of the kernel's relabelled result, or an
    /// `add` of such a dequantize and a constant) over `node`'s result, with channels
    /// along `axis`.
    pub(crate) fn of(m: &Module, node: &Node, f: &Node, axis: usize) -> Result<Deq, String> {
        let oshape = &m.ty(node.result).shape;
        let c = *oshape.get(axis).ok_or("no channel axis")?;
        let producer = |v: qcc_ir::ValueId| match m.value(v).def {
            qcc_ir::ValueDef::Node(n) => Some(&m.nodes[n.index()]),
            _ => None,
        };
        let (dq, bias_v) = match f.op {
            Op::Dequantize => (f, None),
            Op::Add => {
                let [a, b] = f.operands[..] else {
                    return Err("add of two operands expected".into());
                };
                match (producer(a), producer(b)) {
                    (Some(p), _) if p.op == Op::Dequantize => (p, Some(b)),
                    (_, Some(p)) if p.op == Op::Dequantize => (p, Some(a)),
                    _ => return Err("a fused add must add to the dequantize".into()),
                }
            }
            _ => return Err(format!("{} does not fuse as a dequantize", f.op)),
        };
        let from = dq.operands[0];
        let relabelled = from == node.result
            || producer(from).is_some_and(|p| {
                p.op == Op::Cast
                    && p.operands[0] == node.result
                    && super::is_relabel(&m.ty(node.result).elem, &m.ty(from).elem)
            });
        if !relabelled {
            return Err("the dequantize must read the kernel's result".into());
        }
        let qty = m.ty(from);
        let q = qty
            .elem
            .quant()
            .ok_or("the dequantize's operand must be quantized")?;
        if m.ty(dq.result).elem != ElemType::F32 || &m.ty(dq.result).shape != oshape {
            return Err("the dequantize must keep the shape".into());
        }
        let scales = match &q.params {
            QuantParams::PerTensor { scale, .. } => vec![*scale; c],
            QuantParams::PerAxis {
                axis: a, scales, ..
            } if *a == axis && scales.len() == c => scales.clone(),
            _ => {
                return Err(format!(
                    "{} is not per tensor or along axis {axis}",
                    qty.elem
                ));
            }
        };
        let zps: Vec<f32> = axis_zps(&qty.elem, axis, c)?
            .iter()
            .map(|&z| z as f32)
            .collect();
        if zps.iter().any(|z| z.abs() >= (1 << 24) as f32) {
            return Err("zero points beyond 2^24".into());
        }
        let bias = match bias_v {
            None => None,
            Some(b) => {
                let Some(ConstData::F32(v)) = m.const_data(b) else {
                    return Err("the fused add's other operand must be a constant f32".into());
                };
                let bs = &m.ty(b).shape;
                let rt = m.ty(f.result);
                if rt.elem != ElemType::F32 || &rt.shape != oshape || bs.len() > oshape.len() {
                    return Err("the fused add must keep the shape".into());
                }
                let lead = oshape.len() - bs.len();
                let along = bs
                    .iter()
                    .enumerate()
                    .all(|(i, &d)| d == 1 || (i + lead == axis && d == c));
                match v.len() {
                    1 => Some(vec![v[0]; c]),
                    n if n == c && along => Some(v.clone()),
                    _ => return Err("the fused add's bias must run along the channels".into()),
                }
            }
        };
        Ok(Deq { scales, zps, bias })
    }

    /// Channels rounded up to whole f32x4 vectors (the table's row length).
    fn padded(&self) -> usize {
        self.scales.len().div_ceil(4) * 4
    }

    /// The table: scales, zero points, biases, each `padded()` f32 (zeros after the
    /// channels, so a vector of a partial tail reads defined bytes).
    pub(crate) fn table(&self) -> Vec<u8> {
        let p = self.padded();
        let mut out = Vec::with_capacity(12 * p);
        let zero = vec![0f32; p];
        for v in [&self.scales, &self.zps, self.bias.as_ref().unwrap_or(&zero)] {
            for i in 0..p {
                out.extend(v.get(i).copied().unwrap_or(0.0).to_le_bytes());
            }
        }
        out
    }

    fn has_zp(&self) -> bool {
        self.zps.iter().any(|&z| z != 0.0)
    }

    /// `x` (i32, or i32x4 whose lanes are channels `chan..chan + 4` when `lanes`, else
    /// all channel `chan`) dequantized: f32 or f32x4 bits as i32 / i32x4.
    fn apply(
        &self,
        kb: &mut Kb<'_, '_>,
        tab: Value,
        chan: Value,
        x: Value,
        vec: bool,
        lanes: bool,
    ) -> Value {
        let p = self.padded() as i64 * 4;
        let at = kb.idx(tab, chan, 4);
        let get = |kb: &mut Kb<'_, '_>, off: i64| -> Value {
            if !vec {
                kb.load(F32, at, off)
            } else if lanes {
                kb.load(F32X4, at, off)
            } else {
                let s = kb.load(F32, at, off);
                kb.b.ins().splat(F32X4, s)
            }
        };
        let (fty, ity) = if vec { (F32X4, I32X4) } else { (F32, I32) };
        let mut f = kb.b.ins().fcvt_from_sint(fty, x);
        if self.has_zp() {
            let z = get(kb, p);
            f = kb.b.ins().fsub(f, z);
        }
        let s = get(kb, 0);
        f = kb.b.ins().fmul(f, s);
        if self.bias.is_some() {
            let b = get(kb, 2 * p);
            f = kb.b.ins().fadd(f, b);
        }
        let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
        kb.b.ins().bitcast(ity, le, f)
    }
}

/// A `threshold` fused after an integer conv/matmul: per channel (or shared) `k` sorted
/// thresholds; the result is `offset + count(t <= x)` (`b1`: count 0 gives -1, 1 gives
/// +1).
#[derive(Clone, Debug)]
pub(crate) struct Thresh {
    pub table: Vec<i64>,
    pub k: usize,
    pub shared: bool,
    pub offset: i64,
    pub bipolar: bool,
}

impl Thresh {
    /// The fused `threshold` node `f` on the producer's i32 result, channels along `axis`.
    fn of(m: &Module, f: &Node, axis: usize) -> Result<Thresh, String> {
        let a = Attrs::new(f.op, &f.attrs);
        let xty = m.ty(f.operands[0]);
        if normalize_axis(a.int("axis")?, xty.shape.len())? != axis {
            return Err("the threshold's axis is not the producer's channels".into());
        }
        let offset = a.int("offset")?;
        let table = match m.const_data(f.operands[1]) {
            Some(ConstData::Int(v)) => v.clone(),
            _ => return Err("a fused threshold needs constant integer thresholds".into()),
        };
        let (rows, k) = match m.ty(f.operands[1]).shape[..] {
            [r, k] => (r, k),
            _ => return Err("thresholds must be [C, K]".into()),
        };
        if rows != 1 && rows != xty.shape[axis] {
            return Err("threshold rows do not match the channels".into());
        }
        let oty = m.ty(f.result);
        let bipolar = oty.elem == ElemType::Bipolar;
        let (lo, hi) = oty.elem.code_range().ok_or("result has no code range")?;
        if bipolar && (k != 1 || offset != 0) {
            return Err("a b1 threshold needs K = 1 and offset 0".into());
        }
        if !bipolar && (offset < lo || offset + k as i64 > hi) {
            return Err("threshold results do not fit the result type".into());
        }
        if k > 16 {
            return Err("more than 16 thresholds are not fused".into());
        }
        Ok(Thresh {
            table,
            k,
            shared: rows == 1,
            offset,
            bipolar,
        })
    }

    /// The run-time table: per channel row, `k` pairs of i32 (the threshold clamped to
    /// i32, and -1 where it is above every i32 so that no accumulator reaches it).
    pub(crate) fn table_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.table.len() * 8);
        for &t in &self.table {
            let c = t.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
            let never: i32 = if t > i32::MAX as i64 { -1 } else { 0 };
            b.extend_from_slice(&c.to_le_bytes());
            b.extend_from_slice(&never.to_le_bytes());
        }
        b
    }

    /// Bytes between consecutive channels' rows of [`Thresh::table_bytes`].
    pub(crate) fn stride(&self) -> i64 {
        if self.shared { 0 } else { (self.k * 8) as i64 }
    }

    /// `offset + count` (or `2 * count - 1` for b1) of the i32 `x` (scalar or i32x4)
    /// against the thresholds of the channel row at `tp`.
    fn apply(&self, kb: &mut Kb<'_, '_>, tp: Value, x: Value) -> Value {
        let ty = kb.b.func.dfg.value_type(x);
        let vector = ty == I32X4;
        let one = kb.iconst_t(ty, 1);
        let mut count = kb.iconst_t(ty, 0);
        for j in 0..self.k {
            let mut t = kb.b.ins().load(I32, RO, tp, (j * 8) as i32);
            let mut never = kb.b.ins().load(I32, RO, tp, (j * 8 + 4) as i32);
            if vector {
                t = kb.b.ins().splat(I32X4, t);
                never = kb.b.ins().splat(I32X4, never);
            }
            let ge = kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, x, t);
            let ge = if vector {
                ge
            } else {
                let g = kb.b.ins().uextend(I32, ge);
                kb.b.ins().ineg(g)
            };
            let m = kb.b.ins().band_not(ge, never);
            let c = kb.b.ins().band(m, one);
            count = kb.b.ins().iadd(count, c);
        }
        if self.bipolar {
            let two = kb.b.ins().iadd(count, count);
            kb.b.ins().isub(two, one)
        } else {
            let off = kb.iconst_t(ty, self.offset);
            kb.b.ins().iadd(count, off)
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum QuantLowering {
    Quantize {
        outer: usize,
        d: usize,
        inner: usize,
        scales: Vec<f32>,
        zps: Vec<i64>,
        rounding: Rounding,
        lo: i64,
        hi: i64,
        st: Store,
    },
    Dequantize {
        outer: usize,
        d: usize,
        inner: usize,
        scales: Vec<f32>,
        zps: Vec<i64>,
        st: Store,
    },
    Requantize {
        outer: usize,
        d: usize,
        inner: usize,
        rq: Requant,
        st_in: Store,
        st_out: Store,
    },
    ConvInt {
        g: ConvGeom,
        zx: i64,
        zw: Vec<i64>,
        st_x: Store,
        /// Weights of fewer than 8 bits: stored bit-packed, widened at run time.
        wpack: Option<PackedW>,
        epi: IntEpi,
    },
    /// `threshold`: per channel, the count of thresholds the code reaches, plus the
    /// offset (`b1`: count 0 gives -1, 1 gives +1).
    Threshold {
        outer: usize,
        d: usize,
        inner: usize,
        /// Thresholds per channel (`k` each), or one shared set.
        table: Vec<i64>,
        k: usize,
        shared: bool,
        offset: i64,
        bipolar: bool,
        st_in: Store,
        st_out: Store,
    },
    /// `binarize` to `b1`: +1 where the code is at least its zero point (f32: `x >= 0`,
    /// NaN gives -1), else -1.
    Binarize {
        outer: usize,
        d: usize,
        inner: usize,
        /// Zero point per index along the parameter axis (one for per tensor).
        zps: Vec<i64>,
        st_in: Store,
    },
    MatMulInt {
        m: usize,
        n: usize,
        k: usize,
        batches: Vec<(usize, usize)>,
        za: i64,
        zb: Vec<i64>,
        st_a: Store,
        st_b: Store,
        b_const: bool,
        /// A constant B of fewer than 8 bits: stored bit-packed, widened at run time.
        wpack: Option<PackedW>,
        epi: IntEpi,
    },
}

const MR: usize = 4;
const NV: usize = 2; // vectors of 4 columns per tile

fn kp(k: usize) -> usize {
    k.div_ceil(2) * 2
}
fn np(n: usize) -> usize {
    n.div_ceil(4) * 4
}

impl QuantLowering {
    pub fn kernel_name(&self) -> String {
        match self {
            QuantLowering::Quantize { st, .. } => format!("quantize.f32x4->{}", st.name()),
            QuantLowering::Dequantize { st, .. } => format!("dequantize.{}->f32x4", st.name()),
            QuantLowering::Requantize { st_in, st_out, .. } => {
                format!("requantize.{}->{}", st_in.name(), st_out.name())
            }
            QuantLowering::Threshold { st_in, st_out, .. } => {
                format!("threshold.{}->{}", st_in.name(), st_out.name())
            }
            QuantLowering::Binarize { st_in, .. } => format!("binarize.{}->b1", st_in.name()),
            QuantLowering::ConvInt {
                st_x, wpack, epi, ..
            } => format!(
                "conv2d_int.im2col+pmaddwd4x8.{}{}{}",
                st_x.name(),
                packed_suffix(*wpack),
                epi.suffix()
            ),
            QuantLowering::MatMulInt {
                st_a, wpack, epi, ..
            } => format!(
                "matmul_int.pmaddwd4x8.{}{}{}",
                st_a.name(),
                packed_suffix(*wpack),
                epi.suffix()
            ),
        }
    }

    pub fn workspace(&self) -> usize {
        match self {
            QuantLowering::ConvInt { g, wpack, .. } => {
                im2col_bytes(g)
                    + if wpack.is_some() {
                        g.m * kp(g.kdim()) * 2
                    } else {
                        0
                    }
            }
            QuantLowering::MatMulInt {
                m,
                n,
                k,
                b_const,
                wpack,
                ..
            } => {
                m * kp(*k) * 2
                    + if *b_const && wpack.is_none() {
                        0
                    } else {
                        kp(*k) * np(*n) * 2
                    }
            }
            _ => 0,
        }
    }

    pub fn macs(&self) -> u64 {
        match self {
            QuantLowering::ConvInt { g, .. } => g.macs(),
            QuantLowering::MatMulInt {
                m, n, k, batches, ..
            } => (batches.len() * m * n * k) as u64,
            _ => 0,
        }
    }
}

/// `.wNpacked` for bit-packed weights of N bits.
fn packed_suffix(w: Option<PackedW>) -> String {
    w.map_or(String::new(), |w| format!(".w{}packed", w.bits))
}

/// Bytes of the conv's im2col workspace (16-byte multiple; unpacked weights follow).
fn im2col_bytes(g: &ConvGeom) -> usize {
    (kp(g.kdim()) * np(g.npix()) * 2).div_ceil(16) * 16
}

/// The packed form of constant weights of element type `e`, if it has fewer than 8 bits.
fn packed_of(e: &ElemType) -> Option<PackedW> {
    match e {
        ElemType::Int(t) | ElemType::Quant(qcc_ir::QuantType { storage: t, .. }) => {
            PackedW::of(t.bits as u32, t.signed)
        }
        ElemType::F32 | ElemType::Bipolar => None,
    }
}

/// `(outer, d, inner, scales, zero points)`.
type ParamLayout = (usize, usize, usize, Vec<f32>, Vec<i64>);

/// `(outer, d, inner)` of per-tensor or per-axis parameters over `shape`, with the
/// parameters per index.
fn param_layout(p: &QuantParams, shape: &[usize]) -> Result<ParamLayout, String> {
    let n: usize = shape.iter().product();
    match p {
        QuantParams::PerTensor { scale, zero_point } => {
            Ok((1, 1, n, vec![*scale], vec![*zero_point as i64]))
        }
        QuantParams::PerAxis {
            axis,
            scales,
            zero_points,
        } => Ok((
            shape[..*axis].iter().product(),
            shape[*axis],
            shape[*axis + 1..].iter().product(),
            scales.clone(),
            zero_points.iter().map(|&z| z as i64).collect(),
        )),
        QuantParams::Blocked { .. } => {
            Err("blocked quantization parameters are not lowered yet".into())
        }
    }
}

/// Zero point per index along `axis` of length `len` (per-tensor repeats).
pub(crate) fn axis_zps(e: &ElemType, axis: usize, len: usize) -> Result<Vec<i64>, String> {
    match e {
        ElemType::Quant(q) => match &q.params {
            QuantParams::PerTensor { zero_point, .. } => Ok(vec![*zero_point as i64; len]),
            QuantParams::PerAxis {
                axis: a,
                zero_points,
                ..
            } if *a == axis => Ok(zero_points.iter().map(|&z| z as i64).collect()),
            _ => Err(format!(
                "{e} must be quantized per tensor or along axis {axis}"
            )),
        },
        _ => Ok(vec![0; len]),
    }
}

pub(crate) fn tensor_zp(e: &ElemType) -> Result<i64, String> {
    match e {
        ElemType::Quant(q) => match &q.params {
            QuantParams::PerTensor { zero_point, .. } => Ok(*zero_point as i64),
            _ => Err(format!("{e} must be quantized per tensor")),
        },
        _ => Ok(0),
    }
}

/// The requantize of `node` as per-channel constants over `shape`; `want_axis`: the
/// channel axis the caller iterates (None: take the node's own, or per tensor).
/// Returns the table and the axis its channels run along (None: one channel).
pub(crate) fn requant_of(
    m: &Module,
    node: &Node,
    want_axis: Option<usize>,
) -> Result<(Requant, Option<usize>), String> {
    let a = Attrs::new(node.op, &node.attrs);
    let xty = m.ty(node.operands[0]);
    let oty = m.ty(node.result);
    let shape = &xty.shape;
    let rank = shape.len();
    let mult = a.ints("multiplier")?;
    let shift = a.ints("shift")?;
    let rounding = a.rounding("rounding")?;
    if oty.elem == ElemType::Bipolar {
        return Err("requantize to b1".into());
    }
    let (out_lo, out_hi) = oty.elem.code_range().ok_or("result has no code range")?;
    let lo = a.opt_int("min")?.map_or(out_lo, |v| v.max(out_lo));
    let hi = a.opt_int("max")?.map_or(out_hi, |v| v.min(out_hi));
    if lo > hi {
        return Err("empty clamp range".into());
    }
    // Axes of the three per-channel parameter sets.
    let mut axis: Option<usize> = None;
    let mut join = |ax: Option<usize>| -> Result<(), String> {
        match (axis, ax) {
            (_, None) => Ok(()),
            (None, Some(x)) => {
                axis = Some(x);
                Ok(())
            }
            (Some(y), Some(x)) if x == y => Ok(()),
            _ => Err("per-channel parameters along different axes are not lowered yet".into()),
        }
    };
    if mult.len() > 1 || shift.len() > 1 {
        join(Some(normalize_axis(a.int("axis")?, rank)?))?;
    }
    let px = xty.elem.quant().map(|q| q.params.axis()).unwrap_or(None);
    let po = oty.elem.quant().map(|q| q.params.axis()).unwrap_or(None);
    if matches!(
        xty.elem.quant().map(|q| &q.params),
        Some(QuantParams::Blocked { .. })
    ) || matches!(
        oty.elem.quant().map(|q| &q.params),
        Some(QuantParams::Blocked { .. })
    ) {
        return Err("blocked quantization parameters are not lowered yet".into());
    }
    join(px)?;
    join(po)?;
    if let (Some(w), Some(x)) = (want_axis, axis)
        && w != x
    {
        return Err(format!(
            "requantize channels along axis {x}, the producer's along {w}"
        ));
    }
    let axis = axis.or(want_axis);
    let c = axis.map_or(1, |ax| shape[ax]);
    let zx = match axis {
        Some(ax) => axis_zps(&xty.elem, ax, c)?,
        None => vec![tensor_zp(&xty.elem)?; 1],
    };
    let zq = match axis {
        Some(ax) => axis_zps(&oty.elem, ax, c)?,
        None => vec![tensor_zp(&oty.elem)?; 1],
    };
    let pick = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
    let chans = (0..c)
        .map(|i| {
            let sh = pick(&shift, i);
            let (s, k) = if sh >= 0 {
                (sh.min(62), 0)
            } else {
                (0, (-sh).min(62))
            };
            let bound = if k == 0 {
                i64::MAX
            } else if k <= 34 {
                1i64 << (34 - k)
            } else {
                1
            };
            [pick(&mult, i), s, k, bound, pick(&zx, i), pick(&zq, i)]
        })
        .collect();
    Ok((
        Requant {
            rounding,
            lo,
            hi,
            chans,
            bias_folded: false,
            acc_max: None,
        },
        axis,
    ))
}

pub(crate) fn select(
    m: &Module,
    node: &Node,
    fused: Option<&Node>,
    const_of: &ConstOf<'_>,
) -> Result<QuantLowering, String> {
    select_thr(m, node, fused, const_of, false)
}

/// [`select`] for a kernel that applies a fused threshold too (`thr_ok`, see
/// [`int_epi`]).
pub(crate) fn select_thr(
    m: &Module,
    node: &Node,
    fused: Option<&Node>,
    const_of: &ConstOf<'_>,
    thr_ok: bool,
) -> Result<QuantLowering, String> {
    let xty = m.ty(node.operands[0]);
    let oty = m.ty(node.result);
    match node.op {
        Op::Quantize => {
            let q = oty.elem.quant().ok_or("the result must be quantized")?;
            let st = Store::of(&oty.elem);
            if st.bytes() > 2 {
                return Err("quantize to 32-bit storage is not lowered yet".into());
            }
            let (outer, d, inner, scales, zps) = param_layout(&q.params, &oty.shape)?;
            Ok(QuantLowering::Quantize {
                outer,
                d,
                inner,
                scales,
                zps,
                rounding: Attrs::new(node.op, &node.attrs).rounding("rounding")?,
                lo: q.qmin(),
                hi: q.qmax(),
                st,
            })
        }
        Op::Dequantize => {
            let q = xty.elem.quant().ok_or("the operand must be quantized")?;
            let st = Store::of(&xty.elem);
            if st == Store::U32 {
                return Err("dequantize of u32 storage is not lowered yet".into());
            }
            let (outer, d, inner, scales, zps) = param_layout(&q.params, &xty.shape)?;
            Ok(QuantLowering::Dequantize {
                outer,
                d,
                inner,
                scales,
                zps,
                st,
            })
        }
        Op::Requantize => {
            let (rq, axis) = requant_of(m, node, None)?;
            let s = &xty.shape;
            let (outer, d, inner) = match axis {
                Some(ax) => (
                    s[..ax].iter().product(),
                    s[ax],
                    s[ax + 1..].iter().product(),
                ),
                None => (1, 1, s.iter().product()),
            };
            Ok(QuantLowering::Requantize {
                outer,
                d,
                inner,
                rq,
                st_in: Store::of(&xty.elem),
                st_out: Store::of(&oty.elem),
            })
        }
        Op::Threshold => {
            let a = Attrs::new(node.op, &node.attrs);
            let rank = xty.shape.len();
            let axis = normalize_axis(a.int("axis")?, rank)?;
            let offset = a.int("offset")?;
            let table = const_of(node.operands[1])
                .ok_or("threshold with run-time thresholds is not lowered yet")?;
            let table = match table {
                ConstData::Int(v) => v.clone(),
                ConstData::F32(_) => return Err("thresholds must be integers".into()),
            };
            let tshape = &m.ty(node.operands[1]).shape;
            let (rows, k) = match tshape[..] {
                [r, k] => (r, k),
                _ => return Err("thresholds must be [C, K]".into()),
            };
            let d = xty.shape[axis];
            if rows != d && rows != 1 {
                return Err(format!("{rows} threshold rows for {d} channels"));
            }
            let bipolar = oty.elem == ElemType::Bipolar;
            let (lo, hi) = oty.elem.code_range().ok_or("result has no code range")?;
            if bipolar {
                if k != 1 || offset != 0 {
                    return Err("a b1 threshold needs K = 1 and offset 0".into());
                }
            } else if offset < lo || offset + k as i64 > hi {
                return Err(format!(
                    "threshold results {offset}..={} do not all fit {}",
                    offset + k as i64,
                    oty.elem
                ));
            }
            if xty.elem.storage().is_none() || Store::of(&xty.elem) == Store::F32 {
                return Err("threshold needs an integer-valued operand".into());
            }
            Ok(QuantLowering::Threshold {
                outer: xty.shape[..axis].iter().product(),
                d,
                inner: xty.shape[axis + 1..].iter().product(),
                table,
                k,
                shared: rows == 1,
                offset,
                bipolar,
                st_in: Store::of(&xty.elem),
                st_out: Store::of(&oty.elem),
            })
        }
        Op::Binarize => {
            let st_in = Store::of(&xty.elem);
            let n: usize = xty.shape.iter().product();
            let (outer, d, inner, zps) = match &xty.elem {
                ElemType::Quant(q) => {
                    let (o, d, i, _, z) = param_layout(&q.params, &xty.shape)?;
                    (o, d, i, z)
                }
                ElemType::Bipolar => return Err("binarize of b1 is a copy; not lowered".into()),
                _ => (1, 1, n, vec![0]),
            };
            Ok(QuantLowering::Binarize {
                outer,
                d,
                inner,
                zps,
                st_in,
            })
        }
        Op::Conv2dInt => {
            let wty = m.ty(node.operands[1]);
            let st_x = Store::of(&xty.elem);
            if xty.elem.bits() > 8 || wty.elem.bits() > 8 {
                return Err("conv2d_int on operands wider than 8 bits is not lowered yet".into());
            }
            let g = conv::conv_geom(m, node)?;
            if const_of(node.operands[1]).is_none() {
                return Err("conv2d_int with run-time weights is not lowered yet".into());
            }
            let zx = tensor_zp(&xty.elem)?;
            let zw = axis_zps(&wty.elem, 0, g.m)?;
            let epi = int_epi(m, node, fused, 1, thr_ok)?;
            Ok(QuantLowering::ConvInt {
                g,
                zx,
                zw,
                st_x,
                wpack: packed_of(&wty.elem),
                epi,
            })
        }
        Op::MatMulInt => {
            let bty = m.ty(node.operands[1]);
            if xty.elem.bits() > 8 || bty.elem.bits() > 8 {
                return Err("matmul_int on operands wider than 8 bits is not lowered yet".into());
            }
            let g = matmul_geom(&xty.shape, &bty.shape)?;
            if g.batches.len() > 256 {
                return Err("matmul_int with more than 256 batches is not lowered yet".into());
            }
            let za = tensor_zp(&xty.elem)?;
            let rb = bty.shape.len();
            let zb = if rb >= 2 {
                axis_zps(&bty.elem, rb - 1, g.n)?
            } else {
                vec![tensor_zp(&bty.elem)?; g.n]
            };
            let out_rank = oty.shape.len();
            let epi = int_epi(m, node, fused, out_rank.saturating_sub(1), thr_ok)?;
            if epi.rq.as_ref().is_some_and(|r| r.chans.len() > 1) && bty.shape.len() < 2 {
                return Err("per-channel requantize of a matrix-vector product".into());
            }
            if epi.deq.is_some() && bty.shape.len() < 2 {
                return Err("dequantize fused after a matrix-vector product".into());
            }
            Ok(QuantLowering::MatMulInt {
                m: g.m,
                n: g.n,
                k: g.k,
                batches: g.batches,
                za,
                zb,
                st_a: Store::of(&xty.elem),
                st_b: Store::of(&bty.elem),
                b_const: const_of(node.operands[1]).is_some(),
                wpack: const_of(node.operands[1])
                    .is_some()
                    .then(|| packed_of(&bty.elem))
                    .flatten(),
                epi,
            })
        }
        _ => Err(format!("{} is not an integer-path op", node.op)),
    }
}

/// The epilogue of an integer conv/matmul whose channels run along `axis` of the result.
/// The epilogue of an integer conv/matmul `node` with channels along `axis` and the
/// `fused` requantize or threshold; `thr_ok`: the kernel applies a fused threshold (the
/// others refuse it, and the threshold keeps its own kernel).
pub(crate) fn int_epi(
    m: &Module,
    node: &Node,
    fused: Option<&Node>,
    axis: usize,
    thr_ok: bool,
) -> Result<IntEpi, String> {
    let has_bias = node.operands.len() > 2;
    match fused {
        None => Ok(IntEpi {
            has_bias,
            rq: None,
            thr: None,
            deq: None,
            st_out: Store::of(&m.ty(node.result).elem),
        }),
        Some(f) if f.op == Op::Threshold => {
            if !thr_ok {
                return Err("this kernel does not fuse a threshold".into());
            }
            Ok(IntEpi {
                has_bias,
                rq: None,
                thr: Some(Thresh::of(m, f, axis)?),
                deq: None,
                st_out: Store::of(&m.ty(f.result).elem),
            })
        }
        Some(f) if matches!(f.op, Op::Dequantize | Op::Add) => Ok(IntEpi {
            has_bias,
            rq: None,
            thr: None,
            deq: Some(Deq::of(m, node, f, axis)?),
            st_out: Store::F32,
        }),
        Some(f) => {
            let (rq, _) = requant_of(m, f, Some(axis))?;
            Ok(IntEpi {
                has_bias,
                rq: Some(rq),
                thr: None,
                deq: None,
                st_out: Store::of(&m.ty(f.result).elem),
            })
        }
    }
}

pub(crate) fn emit(cx: &mut Ecx<'_, '_, '_, '_>, q: &QuantLowering) {
    match q {
        QuantLowering::Quantize {
            outer,
            d,
            inner,
            scales,
            zps,
            rounding,
            lo,
            hi,
            st,
        } => {
            let x = cx.operand(0);
            let tab = param_table(cx, scales, zps);
            let out = cx.out;
            // With AVX-512, runs of 16 on zmm (`quantzmm.rs`), the tail here.
            let steps = *inner / 16;
            let zmm = match QuantZmm::mode_of(*rounding) {
                Some(mode)
                    if cx.kb.feat.tier.is_some_and(|t| t.level >= 4)
                        && steps > 0
                        && st.bytes() <= 2 =>
                {
                    let f = AsmFn::QuantZmm(QuantZmm {
                        steps: steps as u32,
                        mode,
                        elem: st.bytes() as u8,
                        lo: *lo as i32,
                        hi: *hi as i32,
                    });
                    Some(cx.data.asm_func(cx.kb.b.func, &f))
                }
                _ => None,
            };
            if let Some(f) = zmm {
                let (d, inner, st) = (*d, *inner, *st);
                let ob = st.bytes();
                let kb = &mut *cx.kb;
                kb.for_range(0, (*outer * d) as i64, 1, |kb, od| {
                    let ch = kb.b.ins().urem_imm_u(od, d as i64);
                    let tp = kb.idx(tab, ch, 8);
                    let xp = kb.idx(x, od, (inner * 4) as i64);
                    let op = kb.idx(out, od, (inner * ob) as i64);
                    kb.b.ins().call(f, &[xp, op, tp]);
                    let done = steps * 16;
                    if done < inner {
                        let c = QuantizeConsts::new(kb, tp, *rounding, *lo, *hi);
                        let n8 = (inner - done) / 8;
                        for e in (0..n8).map(|i| done + 8 * i).chain(done + 8 * n8..inner) {
                            let lanes = if e < done + 8 * n8 { 8 } else { 1 };
                            let s = kb.off(xp, (e * 4) as i64);
                            let dd = kb.off(op, (e * ob) as i64);
                            c.store(kb, st, s, lanes, dd);
                        }
                    }
                });
                return;
            }
            per_channel(
                cx.kb,
                *outer,
                *d,
                *inner,
                tab,
                x,
                4,
                out,
                st.bytes(),
                |kb, ch| QuantizeConsts::new(kb, ch, *rounding, *lo, *hi),
                |kb, c, v, lanes, dst| c.store(kb, *st, v, lanes, dst),
            );
        }
        QuantLowering::Dequantize {
            outer,
            d,
            inner,
            scales,
            zps,
            st,
        } => {
            let x = cx.operand(0);
            let tab = param_table(cx, scales, zps);
            let out = cx.out;
            let st = *st;
            let kb = &mut *cx.kb;
            kb.for_range(0, (*outer * *d) as i64, 1, |kb, od| {
                let ch = kb.b.ins().urem_imm_u(od, *d as i64);
                let tp = kb.idx(tab, ch, 8);
                let s = kb.load(F32, tp, 0);
                let zi = kb.load(I32, tp, 4);
                let z = kb.b.ins().fcvt_from_sint(F32, zi);
                let (sv, zv) = (kb.b.ins().splat(F32X4, s), kb.b.ins().splat(F32X4, z));
                let xp = kb.idx(x, od, (*inner * st.bytes()) as i64);
                let op = kb.idx(out, od, (*inner * 4) as i64);
                let n8 = (*inner / 8) as i64;
                kb.for_range(0, n8, 1, |kb, i| {
                    let p = kb.idx(xp, i, 8 * st.bytes() as i64);
                    let (a, b) = load_codes_x8(kb, st, p);
                    let o = kb.idx(op, i, 32);
                    for (h, v) in [a, b].into_iter().enumerate() {
                        let f = kb.b.ins().fcvt_from_sint(F32X4, v);
                        let f = kb.b.ins().fsub(f, zv);
                        let f = kb.b.ins().fmul(f, sv);
                        kb.store(f, o, (h * 16) as i64);
                    }
                });
                for e in (n8 * 8) as usize..*inner {
                    let c = kb.load_i32(st, xp, (e * st.bytes()) as i64);
                    let f = kb.b.ins().fcvt_from_sint(F32, c);
                    let f = kb.b.ins().fsub(f, z);
                    let f = kb.b.ins().fmul(f, s);
                    kb.store(f, op, (e * 4) as i64);
                }
            });
        }
        QuantLowering::Requantize {
            outer,
            d,
            inner,
            rq,
            st_in,
            st_out,
        } => {
            let x = cx.operand(0);
            let tab = cx.rodata(rq.table(), 16);
            let out = cx.out;
            let (st_in, st_out) = (*st_in, *st_out);
            let kb = &mut *cx.kb;
            kb.for_range(0, (*outer * *d) as i64, 1, |kb, od| {
                let ch = kb.b.ins().urem_imm_u(od, *d as i64);
                let xp = kb.idx(x, od, (*inner * st_in.bytes()) as i64);
                let op = kb.idx(out, od, (*inner * st_out.bytes()) as i64);
                let tp = rq.chan_ptr(kb, tab, ch);
                kb.for_range(0, *inner as i64, 1, |kb, i| {
                    let s = kb.idx(xp, i, st_in.bytes() as i64);
                    let v = kb.load_i64(st_in, s, 0);
                    let r = requant_scalar(kb, rq, tp, v);
                    let o = kb.idx(op, i, st_out.bytes() as i64);
                    kb.store_int(st_out, r, o, 0);
                });
            });
        }
        QuantLowering::Threshold {
            outer,
            d,
            inner,
            table,
            k,
            shared,
            offset,
            bipolar,
            st_in,
            st_out,
        } => {
            // Each channel's sorted thresholds, padded to 2^m - 1 with i64::MAX (never
            // reached by a code), are searched by branch-free bisection: m compares.
            let x = cx.operand(0);
            let k = *k;
            let m = (k + 1).next_power_of_two().trailing_zeros() as usize;
            let padded = (1usize << m) - 1;
            let rows = if *shared { 1 } else { *d };
            let mut bytes = Vec::with_capacity(rows * padded * 8);
            for r in 0..rows {
                for j in 0..padded {
                    let t = if j < k { table[r * k + j] } else { i64::MAX };
                    bytes.extend_from_slice(&t.to_le_bytes());
                }
            }
            let tab = cx.rodata(bytes, 16);
            let (st_in, st_out, d) = (*st_in, *st_out, *d);
            let (shared, offset, bipolar, inner) = (*shared, *offset, *bipolar, *inner);
            // Byte codes in and out: 16 codes per compare, each threshold a byte (clamped
            // to the code range) and a "never reached" mask, per channel.
            let vec = matches!(st_in, Store::U8 | Store::I8)
                && st_out.bytes() == 1
                && inner >= 16
                && k <= 16;
            let vtab = vec.then(|| {
                let (lo, hi) = if st_in == Store::U8 {
                    (0, 255)
                } else {
                    (-128, 127)
                };
                let mut b = Vec::with_capacity(rows * k * 2);
                for r in 0..rows {
                    for j in 0..k {
                        let t = table[r * k + j];
                        b.push(t.clamp(lo, hi) as u8);
                        b.push(if t > hi { 0xff } else { 0 });
                    }
                }
                cx.rodata(b, 16)
            });
            let out = cx.out;
            let kb = &mut *cx.kb;
            kb.for_range(0, (*outer * d) as i64, 1, |kb, od| {
                let ch = kb.b.ins().urem_imm_u(od, d as i64);
                let xp = kb.idx(x, od, (inner * st_in.bytes()) as i64);
                let op = kb.idx(out, od, (inner * st_out.bytes()) as i64);
                let tp = if shared {
                    tab
                } else {
                    kb.idx(tab, ch, (padded * 8) as i64)
                };
                let first = match vtab {
                    Some(vt) => {
                        let vp = if shared {
                            vt
                        } else {
                            kb.idx(vt, ch, (k * 2) as i64)
                        };
                        let cmp = if st_in == Store::U8 {
                            IntCC::UnsignedGreaterThanOrEqual
                        } else {
                            IntCC::SignedGreaterThanOrEqual
                        };
                        let ts: Vec<(Value, Value)> = (0..k)
                            .map(|j| {
                                let t = kb.b.ins().load(I8, RO, vp, (j * 2) as i32);
                                let n = kb.b.ins().load(I8, RO, vp, (j * 2 + 1) as i32);
                                (kb.b.ins().splat(I8X16, t), kb.b.ins().splat(I8X16, n))
                            })
                            .collect();
                        let one = kb.b.ins().iconst(I8, 1);
                        let one = kb.b.ins().splat(I8X16, one);
                        let base = kb.b.ins().iconst(I8, if bipolar { -1 } else { offset });
                        let base = kb.b.ins().splat(I8X16, base);
                        kb.for_range(0, (inner / 16) as i64, 1, |kb, q| {
                            let v = kb.idx(xp, q, 16);
                            let v = kb.load(I8X16, v, 0);
                            // count = number of thresholds <= v (each mask & 1).
                            let mut count = None;
                            for &(t, never) in &ts {
                                let m = kb.b.ins().icmp(cmp, v, t);
                                let m = kb.b.ins().band_not(m, never);
                                let c = kb.b.ins().band(m, one);
                                count = Some(match count {
                                    None => c,
                                    Some(a) => kb.b.ins().iadd(a, c),
                                });
                            }
                            let count = count.expect("k >= 1");
                            let r = if bipolar {
                                // 0 -> -1, 1 -> +1.
                                let two = kb.b.ins().iadd(count, count);
                                kb.b.ins().iadd(two, base)
                            } else {
                                kb.b.ins().iadd(count, base)
                            };
                            let o = kb.idx(op, q, 16);
                            kb.store(r, o, 0);
                        });
                        inner / 16 * 16
                    }
                    None => 0,
                };
                kb.for_range(first as i64, inner as i64, 1, |kb, i| {
                    let s = kb.idx(xp, i, st_in.bytes() as i64);
                    let v = kb.load_i64(st_in, s, 0);
                    // count = number of thresholds <= v: descend by halves.
                    let mut count = kb.b.ins().iconst(I64, 0);
                    for b in (0..m).rev() {
                        let step = 1i64 << b;
                        let at = kb.b.ins().iadd_imm_s(count, step - 1);
                        let tpp = kb.idx(tp, at, 8);
                        let t = kb.load(I64, tpp, 0);
                        let ge = kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, v, t);
                        let add = kb.b.ins().uextend(I64, ge);
                        let add = kb.b.ins().imul_imm_s(add, step);
                        count = kb.b.ins().iadd(count, add);
                    }
                    let r = if bipolar {
                        // 0 -> -1, 1 -> +1.
                        let two = kb.b.ins().iadd(count, count);
                        kb.b.ins().iadd_imm_s(two, -1)
                    } else {
                        kb.b.ins().iadd_imm_s(count, offset)
                    };
                    let o = kb.idx(op, i, st_out.bytes() as i64);
                    kb.store_int(st_out, r, o, 0);
                });
            });
        }
        QuantLowering::Binarize {
            outer,
            d,
            inner,
            zps,
            st_in,
        } => {
            let x = cx.operand(0);
            let bytes: Vec<u8> = zps.iter().flat_map(|v| v.to_le_bytes()).collect();
            let tab = cx.rodata(bytes, 16);
            let out = cx.out;
            let (st_in, d, inner) = (*st_in, *d, *inner);
            let kb = &mut *cx.kb;
            kb.for_range(0, (*outer * d) as i64, 1, |kb, od| {
                let ch = kb.b.ins().urem_imm_u(od, d as i64);
                let xp = kb.idx(x, od, (inner * st_in.bytes()) as i64);
                let op = kb.idx(out, od, inner as i64);
                let zp = kb.idx(tab, ch, 8);
                let z = kb.load(I64, zp, 0);
                kb.for_range(0, inner as i64, 1, |kb, i| {
                    let s = kb.idx(xp, i, st_in.bytes() as i64);
                    let ge = if st_in == Store::F32 {
                        let v = kb.load(F32, s, 0);
                        let zero = kb.b.ins().f32const(0.0);
                        kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, v, zero)
                    } else {
                        let v = kb.load_i64(st_in, s, 0);
                        kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, v, z)
                    };
                    let one = kb.b.ins().iconst(I64, 1);
                    let m1 = kb.b.ins().iconst(I64, -1);
                    let r = kb.b.ins().select(ge, one, m1);
                    let o = kb.idx(op, i, 1);
                    kb.store_int(Store::I8, r, o, 0);
                });
            });
        }
        QuantLowering::ConvInt {
            g,
            zx,
            zw,
            st_x,
            wpack,
            epi,
        } => emit_conv_int(cx, g, *zx, zw, *st_x, *wpack, epi),
        QuantLowering::MatMulInt { .. } => emit_matmul_int(cx, q),
    }
}

/// (scale f32, zero point i32) pairs.
fn param_table(cx: &mut Ecx<'_, '_, '_, '_>, scales: &[f32], zps: &[i64]) -> Value {
    let mut b = Vec::new();
    for (s, z) in scales.iter().zip(zps) {
        b.extend_from_slice(&s.to_le_bytes());
        b.extend_from_slice(&(*z as i32).to_le_bytes());
    }
    cx.rodata(b, 16)
}

/// Loads 8 codes of 1- or 2-byte storage (or two i32x4 of 4-byte storage) as i32x4s.
fn load_codes_x8(kb: &mut Kb<'_, '_>, st: Store, p: Value) -> (Value, Value) {
    match st {
        Store::I8 | Store::U8 => {
            let v = if st == Store::I8 {
                kb.b.ins().sload8x8(MF, p, 0)
            } else {
                kb.b.ins().uload8x8(MF, p, 0)
            };
            if st == Store::I8 {
                (kb.b.ins().swiden_low(v), kb.b.ins().swiden_high(v))
            } else {
                (kb.b.ins().uwiden_low(v), kb.b.ins().uwiden_high(v))
            }
        }
        Store::I16 | Store::U16 => {
            let v = kb.load(I16X8, p, 0);
            if st == Store::I16 {
                (kb.b.ins().swiden_low(v), kb.b.ins().swiden_high(v))
            } else {
                (kb.b.ins().uwiden_low(v), kb.b.ins().uwiden_high(v))
            }
        }
        _ => (kb.load(I32X4, p, 0), kb.load(I32X4, p, 16)),
    }
}

/// Constants of one quantize channel, for vectors and scalars.
struct QuantizeConsts {
    s: [Value; 2],
    z: [Value; 2],
    lim: [Value; 4],
    magic: [Value; 2],
    one: [Value; 2],
    half: [Value; 2],
    zero: [Value; 2],
    lo: [Value; 2],
    hi: [Value; 2],
    rounding: Rounding,
}

impl QuantizeConsts {
    /// `ch`: pointer to the channel's (scale, zero point).
    fn new(kb: &mut Kb<'_, '_>, ch: Value, rounding: Rounding, lo: i64, hi: i64) -> QuantizeConsts {
        let s = kb.load(F32, ch, 0);
        let z = kb.load(I32, ch, 4);
        let sv = kb.b.ins().splat(F32X4, s);
        let zv = kb.b.ins().splat(I32X4, z);
        let both = |kb: &mut Kb<'_, '_>, x: f32| [kb.fconst(F32X4, x), kb.fconst(F32, x)];
        let ints = |kb: &mut Kb<'_, '_>, x: i64| [kb.iconst_t(I32X4, x), kb.iconst_t(I32, x)];
        let l = both(kb, -(1 << 20) as f32);
        let h = both(kb, (1 << 20) as f32);
        QuantizeConsts {
            s: [sv, s],
            z: [zv, z],
            lim: [l[0], l[1], h[0], h[1]],
            magic: both(kb, 12_582_912.0),
            one: both(kb, 1.0),
            half: both(kb, 0.5),
            zero: both(kb, 0.0),
            lo: ints(kb, lo),
            hi: ints(kb, hi),
            rounding,
        }
    }

    /// Quantizes `x` (F32X4 or F32) to i32 codes, clamped.
    fn codes(&self, kb: &mut Kb<'_, '_>, x: Value, vec: bool) -> Value {
        let i = if vec { 0 } else { 1 };
        let (ft, it) = if vec { (F32X4, I32X4) } else { (F32, I32) };
        let y = kb.b.ins().fdiv(x, self.s[i]);
        // Clamp to +-2^20 (beyond every <= 16-bit range; NaN stays NaN).
        let (l, h) = (self.lim[i], self.lim[2 + i]);
        let y = kb.fselect(ft, FloatCC::LessThan, y, l, l, y);
        let y = kb.fselect(ft, FloatCC::GreaterThan, y, h, h, y);
        let t = kb.b.ins().fadd(y, self.magic[i]);
        let r = kb.b.ins().fsub(t, self.magic[i]); // nearest, ties to even
        let one = self.one[i];
        let fl = {
            let rm1 = kb.b.ins().fsub(r, one);
            kb.fselect(ft, FloatCC::GreaterThan, r, y, rm1, r)
        };
        let ce = {
            let rp1 = kb.b.ins().fadd(r, one);
            kb.fselect(ft, FloatCC::LessThan, r, y, rp1, r)
        };
        let zero = self.zero[i];
        let rounded = match self.rounding {
            Rounding::HalfEven => r,
            Rounding::Floor => fl,
            Rounding::Ceil => ce,
            Rounding::Down => kb.fselect(ft, FloatCC::GreaterThanOrEqual, y, zero, fl, ce),
            Rounding::Up => kb.fselect(ft, FloatCC::GreaterThanOrEqual, y, zero, ce, fl),
            Rounding::HalfUp | Rounding::HalfDown => {
                // A tie is |y - r| = 1/2 with r the nearest integer: y - r is exact
                // (|y| < 2^20), unlike y - floor(y), which rounds for |y| < 1/2 (e.g.
                // -0.49999997 + 1 is 0.5 in f32). At a tie y -+ 1/2 are exact integers.
                let e = kb.b.ins().fsub(y, r);
                let d = kb.b.ins().fabs(e);
                let half = self.half[i];
                let yp = kb.b.ins().fadd(y, half);
                let ym = kb.b.ins().fsub(y, half);
                let tie_val = if self.rounding == Rounding::HalfUp {
                    kb.fselect(ft, FloatCC::GreaterThan, y, zero, yp, ym)
                } else {
                    kb.fselect(ft, FloatCC::GreaterThan, y, zero, ym, yp)
                };
                kb.fselect(ft, FloatCC::Equal, d, half, tie_val, r)
            }
        };
        let c = kb.b.ins().fcvt_to_sint_sat(it, rounded); // NaN -> 0
        let c = kb.b.ins().iadd(c, self.z[i]);
        let c = kb.b.ins().smax(c, self.lo[i]);
        kb.b.ins().smin(c, self.hi[i])
    }

    /// Quantizes 8 (vector) or 1 (scalar) elements at `src` and stores them at `dst`.
    fn store(&self, kb: &mut Kb<'_, '_>, st: Store, src: Value, lanes: usize, dst: Value) {
        if lanes == 1 {
            let x = kb.load(F32, src, 0);
            let c = self.codes(kb, x, false);
            kb.store_int(st, c, dst, 0);
            return;
        }
        let a = kb.load(F32X4, src, 0);
        let b = kb.load(F32X4, src, 16);
        let ca = self.codes(kb, a, true);
        let cb = self.codes(kb, b, true);
        // Values are inside the storage range, so the saturating narrows are exact.
        match st {
            Store::I16 => {
                let v = kb.b.ins().snarrow(ca, cb);
                kb.store(v, dst, 0);
            }
            Store::U16 => {
                let v = kb.b.ins().unarrow(ca, cb);
                kb.store(v, dst, 0);
            }
            _ => {
                let v = kb.b.ins().snarrow(ca, cb);
                let v = if st == Store::U8 {
                    kb.b.ins().unarrow(v, v)
                } else {
                    kb.b.ins().snarrow(v, v)
                };
                let v = kb.b.ins().bitcast(
                    I64X2,
                    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little),
                    v,
                );
                let lo = kb.b.ins().extractlane(v, 0);
                kb.store(lo, dst, 0);
            }
        }
    }
}

/// A loop over `outer * d` channel runs of `inner` f32 elements, 8 at a time.
#[allow(clippy::too_many_arguments, reason = "one loop nest")]
fn per_channel<C>(
    kb: &mut Kb<'_, '_>,
    outer: usize,
    d: usize,
    inner: usize,
    tab: Value,
    x: Value,
    in_bytes: usize,
    out: Value,
    out_bytes: usize,
    consts: impl Fn(&mut Kb<'_, '_>, Value) -> C,
    body: impl Fn(&mut Kb<'_, '_>, &C, Value, usize, Value),
) {
    kb.for_range(0, (outer * d) as i64, 1, |kb, od| {
        let ch = kb.b.ins().urem_imm_u(od, d as i64);
        let tp = kb.idx(tab, ch, 8);
        let c = consts(kb, tp);
        let xp = kb.idx(x, od, (inner * in_bytes) as i64);
        let op = kb.idx(out, od, (inner * out_bytes) as i64);
        let n8 = (inner / 8) as i64;
        kb.for_range(0, n8, 1, |kb, i| {
            let s = kb.idx(xp, i, (8 * in_bytes) as i64);
            let dd = kb.idx(op, i, (8 * out_bytes) as i64);
            body(kb, &c, s, 8, dd);
        });
        for e in (n8 * 8) as usize..inner {
            let s = kb.off(xp, (e * in_bytes) as i64);
            let dd = kb.off(op, (e * out_bytes) as i64);
            body(kb, &c, s, 1, dd);
        }
    });
}

/// Loads of one channel's requantize parameters from the compact table at `tp`
/// (constants for the fields equal across channels), each table word loaded once.
struct RqFields {
    l: RqLayout,
    n: i64,
    tp: Value,
    words: Vec<Option<Value>>,
}

impl RqFields {
    fn new(rq: &Requant, tp: Value) -> RqFields {
        let l = rq.layout();
        let words = vec![None; l.cols];
        RqFields {
            l,
            n: rq.chans.len() as i64,
            tp,
            words,
        }
    }

    /// Field `f` (0 multiplier, 1 signed shift, 2 offset, 3 zq) as an i64.
    fn get(&mut self, kb: &mut Kb<'_, '_>, f: usize) -> Value {
        match self.l.fields[f] {
            Field::Const(v) => kb.c(v),
            Field::Packed { col, pos, width } => {
                let (word, n, tp) = (self.l.word, self.n, self.tp);
                let w = *self.words[col].get_or_insert_with(|| {
                    // Plain loads with `RO` flags: pure, so hoisted out of pixel loops.
                    let off = ((col * word) as i64 * n) as i32;
                    if word == 4 {
                        let w = kb.b.ins().load(I32, RO, tp, off);
                        kb.b.ins().sextend(I64, w)
                    } else {
                        kb.b.ins().load(I64, RO, tp, off)
                    }
                });
                let up = 64 - (pos + width) as i64;
                let v = if up > 0 {
                    kb.b.ins().ishl_imm_s(w, up)
                } else {
                    w
                };
                if width < 64 {
                    kb.b.ins().sshr_imm_s(v, 64 - width as i64)
                } else {
                    v
                }
            }
        }
    }
}

/// Exact requantize of the i64 code `x` with the channel constants at `tp`.
///
/// `tp` is [`Requant::chan_ptr`]'s pointer. Parameters equal across channels are
/// constants; the others are loaded from the compact table and sign-extended.
pub(crate) fn requant_scalar(kb: &mut Kb<'_, '_>, rq: &Requant, tp: Value, x: Value) -> Value {
    let mut fields = RqFields::new(rq, tp);
    let shift_field = fields.l.fields[1];
    let mut field = |kb: &mut Kb<'_, '_>, f: usize| fields.get(kb, f);
    let mult = field(kb, 0);
    let (s, k, bound) = match shift_field {
        Field::Const(_) => {
            let c = rq.chans[0];
            (kb.c(c[1]), kb.c(c[2]), kb.c(c[3]))
        }
        Field::Packed { .. } => {
            // Signed shift: s = max(sh, 0), k = max(-sh, 0); bound as in `requant_of`.
            let sh = field(kb, 1);
            let zero = kb.c(0);
            let s = kb.b.ins().smax(sh, zero);
            let nsh = kb.b.ins().ineg(sh);
            let k = kb.b.ins().smax(nsh, zero);
            let c34 = kb.c(34);
            let e = kb.b.ins().isub(c34, k);
            let e = kb.b.ins().smax(e, zero);
            let one = kb.c(1);
            let b = kb.b.ins().ishl(one, e);
            let max = kb.c(i64::MAX);
            let k0 = kb.b.ins().icmp_imm_s(IntCC::Equal, k, 0);
            (s, k, kb.b.ins().select(k0, max, b))
        }
    };
    let off = field(kb, 2);
    let zq = field(kb, 3);
    let a = if rq.bias_folded {
        // x + bias with the i32 wrap of the accumulator (zx is 0).
        let x32 = kb.b.ins().ireduce(I32, x);
        let b32 = kb.b.ins().ireduce(I32, off);
        let t = kb.b.ins().iadd(x32, b32);
        kb.b.ins().sextend(I64, t)
    } else {
        kb.b.ins().isub(x, off)
    };
    let p = kb.b.ins().imul(a, mult);
    // Left shift (k > 0): saturate to +-bound first.
    let nb = kb.b.ins().ineg(bound);
    let p = kb.b.ins().smin(p, bound);
    let p = kb.b.ins().smax(p, nb);
    let p = kb.b.ins().ishl(p, k);
    // Right shift by s with rounding.
    let one = kb.c(1);
    let pow = kb.b.ins().ishl(one, s);
    let mask = kb.b.ins().isub(pow, one);
    let half = kb.b.ins().ushr_imm_u(pow, 1);
    let floor = kb.b.ins().sshr(p, s);
    let rem = kb.b.ins().band(p, mask);
    let inexact = kb.b.ins().icmp_imm_s(IntCC::NotEqual, rem, 0);
    let inexact64 = kb.b.ins().uextend(I64, inexact);
    let ceil = kb.b.ins().iadd(floor, inexact64);
    let neg = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, p, 0);
    let r = match rq.rounding {
        Rounding::Floor => floor,
        Rounding::Ceil => ceil,
        Rounding::Down => kb.b.ins().select(neg, ceil, floor),
        Rounding::Up => kb.b.ins().select(neg, floor, ceil),
        Rounding::HalfEven | Rounding::HalfUp | Rounding::HalfDown => {
            let fl1 = kb.b.ins().iadd_imm_s(floor, 1);
            let tie = match rq.rounding {
                Rounding::HalfUp => kb.b.ins().select(neg, floor, fl1),
                Rounding::HalfDown => kb.b.ins().select(neg, fl1, floor),
                _ => {
                    let odd = kb.b.ins().band_imm_s(floor, 1);
                    kb.b.ins().iadd(floor, odd)
                }
            };
            let gt = kb.b.ins().icmp(IntCC::SignedGreaterThan, rem, half);
            let eq = kb.b.ins().icmp(IntCC::Equal, rem, half);
            let eq = kb.b.ins().band(eq, inexact);
            let r = kb.b.ins().select(gt, fl1, floor);
            kb.b.ins().select(eq, tie, r)
        }
    };
    let big = kb.c(1 << 40);
    let nbig = kb.c(-(1 << 40));
    let r = kb.b.ins().smin(r, big);
    let r = kb.b.ins().smax(r, nbig);
    let r = kb.b.ins().iadd(r, zq);
    let lo = kb.c(rq.lo);
    let hi = kb.c(rq.hi);
    let r = kb.b.ins().smax(r, lo);
    kb.b.ins().smin(r, hi)
}

impl Requant {
    /// Whether [`requant_vec`] computes this requantize: no left shifts, multipliers
    /// that fit i32 (so `x * multiplier` is one widening `pmuldq`), and an accumulator
    /// zero point of 0 or a folded bias (so the value multiplied is the i32 itself).
    pub(crate) fn vector_ok(&self) -> bool {
        self.chans.iter().all(|c| {
            c[2] == 0
                && i32::try_from(c[0]).is_ok()
                && (0..=62).contains(&c[1])
                && (self.bias_folded || c[4] == 0)
        })
    }
}

/// [`requant_scalar`] on four i32 accumulators of one channel (`tp` its table pointer),
/// for a [`Requant::vector_ok`] table: the result codes as i32x4, clamped to the output
/// range.
///
/// Exact as the scalar form: `p = x * multiplier` in i64 lanes (|p| < 2^62); the rounded
/// right shift by `s` is `floor((p + add) / 2^s)` with `add` chosen per rounding mode
/// (e.g. half-even: `2^(s-1) - 1 + bit s of p`; nothing when `s = 0`), the floor as a
/// logical shift of `p + add + 2^63` minus `2^(63-s)`; the result is clamped to
/// `[lo - zq, hi - zq]` in i64 before `zq` is added in i32 (the scalar form's clamp to
/// +-2^40 never binds inside that range).
pub(crate) fn requant_vec(kb: &mut Kb<'_, '_>, rq: &Requant, tp: Value, x: Value) -> Value {
    // Where the shifted value provably fits i32 its low halves are exact and the rest
    // runs on i32 lanes: with a shift of at least 32 (|p| <= 2^62), or with
    // |multiplier| < 2^s (then |p| / 2^s <= 2^31 - 2^(31-s), whatever the rounding).
    let narrow_first = rq.chans.iter().all(|c| {
        let (m, s) = (c[0].unsigned_abs(), c[1] as u32);
        s >= 32
            || m < 1u64 << s
            || rq
                .acc_max
                .is_some_and(|a| (a as u128 * m as u128) >> s < 1u128 << 30)
    });
    let mut fields = RqFields::new(rq, tp);
    let mult = fields.get(kb, 0);
    let s = fields.get(kb, 1);
    let off = fields.get(kb, 2);
    let zq = fields.get(kb, 3);
    let x = if rq.bias_folded {
        let b = kb.b.ins().ireduce(I32, off);
        let b = kb.b.ins().splat(I32X4, b);
        kb.b.ins().iadd(x, b)
    } else {
        x
    };
    // The multiplier in every i32 lane, built as a splat of `m | m << 32` bitcast to
    // i32x4: Cranelift's mid-end rewrites `swiden_low(splat(m))` into a splat of i64,
    // which no longer matches `pmuldq` (a three-`pmuludq` sequence instead).
    let lo32 = kb.b.ins().band_imm_s(mult, 0xffff_ffff);
    let hi32 = kb.b.ins().ishl_imm_s(mult, 32);
    let m2 = kb.b.ins().bor(lo32, hi32);
    let m = kb.b.ins().splat(I64X2, m2);
    let le4 = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
    let m = kb.b.ins().bitcast(I32X4, le4, m);
    let one = kb.c(1);
    let pow = kb.b.ins().ishl(one, s);
    let mask = kb.b.ins().isub(pow, one);
    let half = kb.b.ins().ushr_imm_u(pow, 1);
    // 1 when s > 0 (the rounding adjustments vanish for s = 0).
    let spos = kb.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, s, 0);
    let spos = kb.b.ins().uextend(I64, spos);
    let bias63 = kb.c(i64::MIN);
    let unbias = kb.b.ins().ushr(bias63, s);
    let zq32 = kb.b.ins().ireduce(I32, zq);
    let lo = kb.c(rq.lo);
    let hi = kb.c(rq.hi);
    let lo = kb.b.ins().isub(lo, zq);
    let hi = kb.b.ins().isub(hi, zq);
    let splat = |kb: &mut Kb<'_, '_>, v: Value| kb.b.ins().splat(I64X2, v);
    let (vmask, vhalf, vspos, vbias, vunbias, vlo, vhi) = (
        splat(kb, mask),
        splat(kb, half),
        splat(kb, spos),
        splat(kb, bias63),
        splat(kb, unbias),
        splat(kb, lo),
        splat(kb, hi),
    );
    let zero = kb.b.ins().iconst(I64, 0);
    let vzero = splat(kb, zero);
    let mut halves = [x; 2];
    for (h, out) in halves.iter_mut().enumerate() {
        // pmuldq: imul of the sign-extended halves.
        let (xw, mw) = if h == 0 {
            (kb.b.ins().swiden_low(x), kb.b.ins().swiden_low(m))
        } else {
            (kb.b.ins().swiden_high(x), kb.b.ins().swiden_high(m))
        };
        let p = kb.b.ins().imul(xw, mw);
        let negm = || IntCC::SignedLessThan;
        let add = match rq.rounding {
            Rounding::Floor => None,
            Rounding::Ceil => Some(vmask),
            Rounding::Down | Rounding::Up => {
                let neg = kb.b.ins().icmp(negm(), p, vzero);
                Some(if rq.rounding == Rounding::Down {
                    kb.b.ins().band(neg, vmask)
                } else {
                    kb.b.ins().band_not(vmask, neg)
                })
            }
            Rounding::HalfUp | Rounding::HalfDown => {
                // Ties away from zero: half - [p < 0]; towards zero: half - 1 + [p < 0].
                let neg = kb.b.ins().icmp(negm(), p, vzero);
                let n1 = kb.b.ins().band(neg, vspos);
                Some(if rq.rounding == Rounding::HalfUp {
                    kb.b.ins().isub(vhalf, n1)
                } else {
                    let t = kb.b.ins().isub(vhalf, vspos);
                    kb.b.ins().iadd(t, n1)
                })
            }
            Rounding::HalfEven => {
                let q = kb.b.ins().ushr(p, s);
                let odd = kb.b.ins().band(q, vspos);
                let t = kb.b.ins().isub(vhalf, vspos);
                Some(kb.b.ins().iadd(t, odd))
            }
        };
        let p = match add {
            Some(a) => kb.b.ins().iadd(p, a),
            None => p,
        };
        // Arithmetic shift by s: logical shift of p + 2^63, minus 2^(63-s).
        let u = kb.b.ins().bxor(p, vbias);
        let u = kb.b.ins().ushr(u, s);
        if narrow_first {
            *out = u;
            continue;
        }
        let r = kb.b.ins().isub(u, vunbias);
        let lt = kb.b.ins().icmp(IntCC::SignedLessThan, r, vlo);
        let r = kb.b.ins().bitselect(lt, vlo, r);
        let gt = kb.b.ins().icmp(IntCC::SignedGreaterThan, r, vhi);
        *out = kb.b.ins().bitselect(gt, vhi, r);
    }
    // The low i32 of each i64 lane, in order.
    let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
    let a = kb.b.ins().bitcast(I32X4, le, halves[0]);
    let b = kb.b.ins().bitcast(I32X4, le, halves[1]);
    let a8 = kb.b.ins().bitcast(I8X16, le, a);
    let b8 = kb.b.ins().bitcast(I8X16, le, b);
    let lanes: [u8; 16] = [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27];
    let imm = kb.b.func.dfg.immediates.push(lanes.to_vec().into());
    let v = kb.b.ins().shuffle(a8, b8, imm);
    let mut v = kb.b.ins().bitcast(I32X4, le, v);
    if narrow_first {
        // |result| < 2^31: finish the shift and clamp on the low halves, in i32.
        let t = |kb: &mut Kb<'_, '_>, x: Value| {
            let x = kb.b.ins().ireduce(I32, x);
            kb.b.ins().splat(I32X4, x)
        };
        let (un, lo32, hi32) = (t(kb, unbias), t(kb, lo), t(kb, hi));
        v = kb.b.ins().isub(v, un);
        v = kb.b.ins().smax(v, lo32);
        v = kb.b.ins().smin(v, hi32);
    }
    let zq = kb.b.ins().splat(I32X4, zq32);
    kb.b.ins().iadd(v, zq)
}

/// Stores lanes `0..lanes` of the i32x4 `v`, each within `st`'s range, at `p`.
fn store_lanes(kb: &mut Kb<'_, '_>, st: Store, v: Value, lanes: usize, p: Value) {
    let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
    let (v, ty) = match st {
        Store::I8 | Store::U8 => {
            let h = kb.b.ins().snarrow(v, v);
            let b = if st == Store::I8 {
                kb.b.ins().snarrow(h, h)
            } else {
                kb.b.ins().unarrow(h, h)
            };
            (b, I8X16)
        }
        Store::I16 => (kb.b.ins().snarrow(v, v), I16X8),
        Store::U16 => (kb.b.ins().unarrow(v, v), I16X8),
        _ => (v, I32X4),
    };
    let eb = st.bytes();
    if lanes * eb == 4 || lanes * eb == 8 || lanes * eb == 16 {
        let wide = match lanes * eb {
            4 => I32X4,
            8 => I64X2,
            _ => ty,
        };
        let w = kb.b.ins().bitcast(wide, le, v);
        if lanes * eb == 16 {
            kb.store(w, p, 0);
        } else {
            let e = kb.b.ins().extractlane(w, 0);
            kb.store(e, p, 0);
        }
    } else {
        for lane in 0..lanes {
            let e = kb.b.ins().extractlane(v, lane as u8);
            kb.store(e, p, (lane * eb) as i64);
        }
    }
}

/// The i16-pair GEMM: `out[i, j] = epi(sum_p A2[i, p] . B2[p, j])` where `A2[i, p]` is
/// the i32 holding two i16 at `a + i*a_row + p*4` and `B2` is `[P][Np][2]` i16 at `b`.
/// `chan_of_row`: the epilogue's channel is the row (conv) or the column (matmul).
struct IntGemm<'t> {
    m: usize,
    n: usize,
    pairs: usize,
    a: Value,
    a_row: i64,
    b: Value,
    out: Value,
    ldc: usize,
    bias: Option<Value>,
    rq: Option<(&'t Requant, Value)>,
    deq: Option<(&'t Deq, Value)>,
    st_out: Store,
    chan_of_row: bool,
}

/// Where an integer GEMM-like kernel puts an i32 accumulator: plus the channel's bias,
/// then through the fused requantize, or stored as it is.
#[derive(Clone, Copy)]
pub(crate) struct AccStore<'t> {
    pub ldc: usize,
    /// Whether output rows (else columns) are the channels of bias and requantize.
    pub chan_of_row: bool,
    pub bias: Option<Value>,
    pub rq: Option<(&'t Requant, Value)>,
    /// A fused threshold instead of the requantize, with its table (`table_bytes`).
    pub thr: Option<(&'t Thresh, Value)>,
    /// A fused dequantize instead of the requantize, with its table (`Deq::table`,
    /// from the kernel's channel 0).
    pub deq: Option<(&'t Deq, Value)>,
    pub st_out: Store,
}

impl AccStore<'_> {
    /// Stores accumulator `x` (i32) of tile element `(r, c)`; the tile starts at output
    /// row and column `origin` and at address `out_tile`; `ob` is the output element size.
    pub(crate) fn store(
        &self,
        kb: &mut Kb<'_, '_>,
        mut x: Value,
        origin: (Value, Value),
        (r, c): (usize, usize),
        out_tile: Value,
        ob: i64,
    ) {
        let chan = if self.chan_of_row {
            kb.b.ins().iadd_imm_s(origin.0, r as i64)
        } else {
            kb.b.ins().iadd_imm_s(origin.1, c as i64)
        };
        if let Some(bp) = self.bias {
            let a = kb.idx(bp, chan, 4);
            let bv = kb.load(I32, a, 0);
            x = kb.b.ins().iadd(x, bv);
        }
        let off = (r as i64 * self.ldc as i64 + c as i64) * ob;
        if let Some((dq, tab)) = self.deq {
            let y = dq.apply(kb, tab, chan, x, false, false);
            kb.store_int(self.st_out, y, out_tile, off);
            return;
        }
        if let Some((th, tab)) = self.thr {
            let tp = kb.idx(tab, chan, th.stride());
            let y = th.apply(kb, tp, x);
            kb.store_int(self.st_out, y, out_tile, off);
            return;
        }
        match self.rq {
            Some((rq, tab)) => {
                let tp = rq.chan_ptr(kb, tab, chan);
                let x64 = kb.b.ins().sextend(I64, x);
                let y = requant_scalar(kb, rq, tp, x64);
                kb.store_int(self.st_out, y, out_tile, off);
            }
            None => kb.store_int(self.st_out, x, out_tile, off),
        }
    }
}

impl AccStore<'_> {
    /// Whether [`AccStore::store_vec`] runs the vector epilogue (else lane by lane): the
    /// lanes are one channel (rows are channels, or nothing is per channel) and the
    /// requantize has a vector form (or there is none and the store is of i32).
    pub(crate) fn vectorizes(&self) -> bool {
        if self.deq.is_some() {
            // Lanes of several channels read the dequantize's table as vectors; a
            // run-time bias is read per channel.
            return self.rq.is_none()
                && self.thr.is_none()
                && (self.chan_of_row || self.bias.is_none());
        }
        let uniform = self.chan_of_row
            || (self.bias.is_none()
                && self
                    .rq
                    .is_none_or(|(rq, _)| rq.stride() == 0 && !rq.bias_folded));
        let uniform = uniform && self.thr.is_none_or(|(th, _)| th.shared || self.chan_of_row);
        uniform
            && match (self.rq, self.thr) {
                (Some((rq, _)), _) => rq.vector_ok(),
                (None, Some(_)) => true,
                (None, None) => matches!(self.st_out, Store::I32 | Store::U32),
            }
    }

    /// The epilogue of kernels whose tiles produce scalars: `buf` holds `rows` rows of
    /// `cols` i32 results (`buf_row` bytes apart, each row readable up to a multiple of
    /// 4 columns), the tile rows from `row0` (a run-time row index); stores them
    /// through [`AccStore::store_vec`], four columns at a time, into `out` (the output
    /// base, `ldc` and `ob` as for `store`).
    #[allow(
        clippy::too_many_arguments,
        reason = "a block of rows and where it goes"
    )]
    pub(crate) fn flush_rows(
        &self,
        kb: &mut Kb<'_, '_>,
        buf: Value,
        buf_row: i64,
        row0: Value,
        rows: usize,
        cols: usize,
        out: Value,
        ob: i64,
    ) {
        let out_row = kb.idx(out, row0, self.ldc as i64 * ob);
        let full = cols / 4;
        for r in 0..rows {
            let src = kb.off(buf, r as i64 * buf_row);
            if full > 0 {
                kb.for_range(0, full as i64, 1, |kb, q| {
                    let col0 = kb.b.ins().imul_imm_s(q, 4);
                    let v = kb.idx(src, q, 16);
                    let v = kb.load(I32X4, v, 0);
                    let out_tile = kb.idx(out_row, col0, ob);
                    self.store_vec(kb, v, (row0, col0), (r, 0), 4, out_tile, ob);
                });
            }
            if !cols.is_multiple_of(4) {
                let v = kb.load(I32X4, src, (full * 16) as i64);
                let col0 = kb.c((full * 4) as i64);
                let out_tile = kb.off(out_row, (full * 4) as i64 * ob);
                self.store_vec(kb, v, (row0, col0), (r, 0), cols % 4, out_tile, ob);
            }
        }
    }

    /// Stores lanes `0..lanes` of the i32x4 accumulators `v` as tile elements `(r, c0)`,
    /// `(r, c0 + 1)`, ...: the vector epilogue when every lane is one channel (rows are
    /// channels) and the requantize has a vector form, else lane by lane.
    #[allow(clippy::too_many_arguments, reason = "one vector's place in the tile")]
    pub(crate) fn store_vec(
        &self,
        kb: &mut Kb<'_, '_>,
        v: Value,
        origin: (Value, Value),
        (r, c0): (usize, usize),
        lanes: usize,
        out_tile: Value,
        ob: i64,
    ) {
        if !self.vectorizes() {
            for lane in 0..lanes {
                let x = kb.b.ins().extractlane(v, lane as u8);
                self.store(kb, x, origin, (r, c0 + lane), out_tile, ob);
            }
            return;
        }
        let chan = if self.chan_of_row {
            kb.b.ins().iadd_imm_s(origin.0, r as i64)
        } else {
            kb.b.ins().iadd_imm_s(origin.1, c0 as i64)
        };
        let mut v = v;
        if let Some(bp) = self.bias {
            let a = kb.idx(bp, chan, 4);
            let bv = kb.load(I32, a, 0);
            let bv = kb.b.ins().splat(I32X4, bv);
            v = kb.b.ins().iadd(v, bv);
        }
        if let Some((rq, tab)) = self.rq {
            let tp = rq.chan_ptr(kb, tab, chan);
            v = requant_vec(kb, rq, tp, v);
        }
        if let Some((th, tab)) = self.thr {
            let tp = kb.idx(tab, chan, th.stride());
            v = th.apply(kb, tp, v);
        }
        if let Some((dq, tab)) = self.deq {
            v = dq.apply(kb, tab, chan, v, true, !self.chan_of_row);
        }
        let p = kb.off(out_tile, (r as i64 * self.ldc as i64 + c0 as i64) * ob);
        store_lanes(kb, self.st_out, v, lanes, p);
    }
}

fn emit_int_gemm(kb: &mut Kb<'_, '_>, g: &IntGemm<'_>) {
    let npad = np(g.n);
    let row_groups: Vec<(usize, usize, usize)> = {
        // (first row, rows per tile, tile count)
        let mut v = Vec::new();
        if g.m / MR > 0 {
            v.push((0, MR, g.m / MR));
        }
        if !g.m.is_multiple_of(MR) {
            v.push((g.m / MR * MR, g.m % MR, 1));
        }
        v
    };
    // Tiles entirely inside the n columns, then one tile of the rest (padding lanes are
    // computed on the zeroed workspace columns but never stored).
    let tiles_full = g.n / (4 * NV);
    let col_tail = (g.n - tiles_full * 4 * NV).div_ceil(4);
    let _ = npad;
    for (first, rows, count) in row_groups {
        kb.for_range(0, count as i64, 1, |kb, ti| {
            let row0 = kb.b.ins().imul_imm_s(ti, MR as i64);
            let row0 = kb.b.ins().iadd_imm_s(row0, first as i64);
            let a_base = kb.idx(g.a, row0, g.a_row);
            if tiles_full > 0 {
                kb.for_range(0, tiles_full as i64, 1, |kb, tj| {
                    let col0 = kb.b.ins().imul_imm_s(tj, (4 * NV) as i64);
                    int_tile(kb, g, rows, NV, row0, a_base, col0, Some(4 * NV));
                });
            }
            if col_tail > 0 {
                let col0 = kb.c((tiles_full * 4 * NV) as i64);
                int_tile(kb, g, rows, col_tail, row0, a_base, col0, None);
            }
        });
    }
}

#[allow(clippy::too_many_arguments, reason = "one tile's geometry")]
fn int_tile(
    kb: &mut Kb<'_, '_>,
    g: &IntGemm<'_>,
    rows: usize,
    vecs: usize,
    row0: Value,
    a_base: Value,
    col0: Value,
    full: Option<usize>,
) {
    let npad = np(g.n);
    let b_base = kb.idx(g.b, col0, 4);
    let zero = kb.iconst_t(I32X4, 0);
    let accs: Vec<Vec<_>> = (0..rows)
        .map(|_| (0..vecs).map(|_| kb.var(I32X4, zero)).collect())
        .collect();
    let step = |kb: &mut Kb<'_, '_>, ap: Value, bp: Value, u: i64| {
        let bv: Vec<Value> = (0..vecs)
            .map(|v| kb.load(I16X8, bp, u * (npad * 4) as i64 + (v * 16) as i64))
            .collect();
        for (r, acc_r) in accs.iter().enumerate() {
            let pair = kb.load(I32, ap, u * 4 + r as i64 * g.a_row);
            let av = kb.b.ins().splat(I32X4, pair);
            let av = kb.b.ins().bitcast(
                I16X8,
                MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little),
                av,
            );
            let al = kb.b.ins().swiden_low(av);
            let ah = kb.b.ins().swiden_high(av);
            for (v, &bvv) in bv.iter().enumerate() {
                // pmaddwd: iadd_pairwise(imul(swiden_low a, swiden_low b), imul(swiden_high ..)).
                let bl = kb.b.ins().swiden_low(bvv);
                let bh = kb.b.ins().swiden_high(bvv);
                let pl = kb.b.ins().imul(bl, al);
                let ph = kb.b.ins().imul(bh, ah);
                let d = kb.b.ins().iadd_pairwise(pl, ph);
                let acc = kb.b.use_var(acc_r[v]);
                let s = kb.b.ins().iadd(acc, d);
                kb.b.def_var(acc_r[v], s);
            }
        }
    };
    let p = g.pairs as i64;
    let main = p / 2 * 2;
    if main > 0 {
        kb.for_range(0, main, 2, |kb, pi| {
            let ap = kb.idx(a_base, pi, 4);
            let bp = kb.idx(b_base, pi, (npad * 4) as i64);
            step(kb, ap, bp, 0);
            step(kb, ap, bp, 1);
        });
    }
    if main < p {
        let ap = kb.off(a_base, main * 4);
        let bp = kb.off(b_base, main * (npad * 4) as i64);
        step(kb, ap, bp, 0);
    }
    // Epilogue, lane by lane (columns past n are padding and never stored).
    let ob = g.st_out.bytes() as i64;
    let out_row = kb.idx(g.out, row0, g.ldc as i64 * ob);
    let out_tile = kb.idx(out_row, col0, ob);
    let acc = AccStore {
        ldc: g.ldc,
        chan_of_row: g.chan_of_row,
        bias: g.bias,
        rq: g.rq,
        thr: None,
        deq: g.deq,
        st_out: g.st_out,
    };
    for (r, acc_r) in accs.iter().enumerate() {
        for (v, &acc_v) in acc_r.iter().enumerate() {
            // Tail tile (col0 a constant): skip the padding columns.
            let lanes = match full {
                Some(_) => 4,
                None => {
                    let first = (g.n / (4 * NV)) * 4 * NV + v * 4;
                    g.n.saturating_sub(first).min(4)
                }
            };
            if lanes > 0 {
                let accv = kb.b.use_var(acc_v);
                acc.store_vec(kb, accv, (row0, col0), (r, v * 4), lanes, out_tile, ob);
            }
        }
    }
}

/// Packs `get(kk, j)` (already zero-point corrected) into the `[P][Np][2]` i16 layout.
fn pack_pairs(k: usize, n: usize, get: impl Fn(usize, usize) -> i64) -> Vec<u8> {
    let (kpp, npp) = (kp(k), np(n));
    let mut v = vec![0u8; kpp * npp * 2];
    for kk in 0..k {
        for j in 0..n {
            let at = ((kk / 2) * npp + j) * 2 + kk % 2;
            v[at * 2..at * 2 + 2].copy_from_slice(&(get(kk, j) as i16).to_le_bytes());
        }
    }
    v
}

/// Packs rows `get(i, kk)` into `[M][Kp]` i16 (pairs along K, zero-padded).
fn pack_rows(m: usize, k: usize, get: impl Fn(usize, usize) -> i64) -> Vec<u8> {
    let kpp = kp(k);
    let mut v = vec![0u8; m * kpp * 2];
    for i in 0..m {
        for kk in 0..k {
            let at = i * kpp + kk;
            v[at * 2..at * 2 + 2].copy_from_slice(&(get(i, kk) as i16).to_le_bytes());
        }
    }
    v
}

pub(crate) fn const_ints<'a>(cx: &Ecx<'_, '_, '_, 'a>, i: usize) -> &'a [i64] {
    match (cx.const_of)(cx.node.operands[i]) {
        Some(ConstData::Int(v)) => v,
        _ => &[],
    }
}

#[allow(clippy::too_many_arguments, reason = "one lowering's fields")]
fn emit_conv_int(
    cx: &mut Ecx<'_, '_, '_, '_>,
    g: &ConvGeom,
    zx: i64,
    zw: &[i64],
    st_x: Store,
    wpack: Option<PackedW>,
    epi: &IntEpi,
) {
    let (cg, mg, k, npix) = (g.cg(), g.mg(), g.kdim(), g.npix());
    let kpp = kp(k);
    let x = cx.operand(0);
    let w = const_ints(cx, 1).to_vec();
    let wp = match wpack {
        None => {
            let packed = pack_rows(g.m, k, |oc, kk| w[oc * k + kk] - zw[oc]);
            cx.rodata(packed, 16)
        }
        Some(pw) => {
            // Bit-packed rows (one per output channel), widened into `[M][Kp]` i16 rows
            // after the im2col workspace, once per call.
            let src = cx.rodata(pw.pack(g.m, k, |oc, kk| w[oc * k + kk]), 16);
            let zp = zp_mode(zw, true, |b| cx.rodata(b, 16));
            let dst = cx.kb.off(cx.ws, im2col_bytes(g) as i64);
            let row = (kpp * 2) as i64;
            Unpack {
                pw,
                rows: g.m,
                cols: k,
                src,
                zp,
                elem: 2,
                dst_row: |kb: &mut Kb<'_, '_>, r| kb.idx(dst, r, row),
            }
            .emit(cx.kb);
            if kpp > k {
                // The odd K's padding tap of every row.
                let zero = cx.kb.c(0);
                cx.kb.for_range(0, g.m as i64, 1, |kb, r| {
                    let p = kb.idx(dst, r, row);
                    kb.b.ins().istore16(MF, zero, p, (k * 2) as i32);
                });
            }
            dst
        }
    };
    let (rq_own, rq_tab, bias) = epilogue_tables(cx, epi, g.m);
    let rq = rq_own.as_ref().zip(rq_tab);
    let deq = epi.deq.as_ref().map(|d| (d, cx.rodata(d.table(), 16)));
    let (out, ws) = (cx.out, cx.ws);
    let ob = epi.st_out.bytes();
    let g = *g;
    let kb = &mut *cx.kb;
    kb.for_range(0, g.n as i64, 1, |kb, n| {
        let xn = kb.idx(x, n, (g.c * g.h * g.w * st_x.bytes()) as i64);
        let on = kb.idx(out, n, (g.m * npix * ob) as i64);
        kb.for_range(0, g.group as i64, 1, |kb, grp| {
            let xg = kb.idx(xn, grp, (cg * g.h * g.w * st_x.bytes()) as i64);
            let og = kb.idx(on, grp, (mg * npix * ob) as i64);
            let wg = kb.idx(wp, grp, (mg * kpp * 2) as i64);
            im2col::im2col_pairs(kb, &g, np(npix), zx, st_x, xg, ws);
            let bias_g = bias.map(|b| kb.idx(b, grp, (mg * 4) as i64));
            let rq_g = rq.map(|(r, t)| (r, kb.idx(t, grp, mg as i64 * r.stride())));
            let deq_g = deq.map(|(d, t)| (d, kb.idx(t, grp, (mg * 4) as i64)));
            emit_int_gemm(
                kb,
                &IntGemm {
                    m: mg,
                    n: npix,
                    pairs: kpp / 2,
                    a: wg,
                    a_row: (kpp * 2) as i64,
                    b: ws,
                    out: og,
                    ldc: npix,
                    bias: bias_g,
                    rq: rq_g,
                    deq: deq_g,
                    st_out: epi.st_out,
                    chan_of_row: true,
                },
            );
        });
    });
}

fn emit_matmul_int(cx: &mut Ecx<'_, '_, '_, '_>, q: &QuantLowering) {
    let QuantLowering::MatMulInt {
        m,
        n,
        k,
        batches,
        za,
        zb,
        st_a,
        st_b,
        b_const,
        wpack,
        epi,
    } = q
    else {
        return;
    };
    let (m, n, k) = (*m, *n, *k);
    let (kpp, npp) = (kp(k), np(n));
    let a = cx.operand(0);
    let nb_b = batches.iter().map(|b| b.1).max().unwrap_or(0) + 1;
    // Bit-packed B: one packed row per K index of every slab, and the zero points.
    let b_bits = match (*b_const, *wpack) {
        (true, Some(pw)) => {
            let b = const_ints(cx, 1).to_vec();
            let src = cx.rodata(pw.pack(nb_b * k, n, |r, j| b[r * n + j]), 16);
            let zp = zp_mode(zb, false, |t| cx.rodata(t, 16));
            Some((pw, src, zp))
        }
        _ => None,
    };
    let b_packed = if *b_const && b_bits.is_none() {
        let b = const_ints(cx, 1).to_vec();
        let mut packed = Vec::new();
        for s in 0..nb_b {
            packed.extend(pack_pairs(k, n, |kk, j| b[s * k * n + kk * n + j] - zb[j]));
        }
        Some(cx.rodata(packed, 16))
    } else {
        None
    };
    let b_rt = if *b_const { None } else { Some(cx.operand(1)) };
    let zb_tab = if *b_const || b_bits.is_some() {
        None
    } else {
        let bytes = zb.iter().flat_map(|&z| z.to_le_bytes()).collect();
        Some(cx.rodata(bytes, 16))
    };
    let (rq_own, rq_tab, bias) = epilogue_tables(cx, epi, n);
    let rq = rq_own.as_ref().zip(rq_tab);
    let deq = epi.deq.as_ref().map(|d| (d, cx.rodata(d.table(), 16)));
    let (out, ws) = (cx.out, cx.ws);
    let ob = epi.st_out.bytes();
    let (st_a, st_b, za) = (*st_a, *st_b, *za);
    let kb = &mut *cx.kb;
    let a_ws = ws;
    let b_ws = kb.off(ws, (m * kpp * 2) as i64);
    let zav = kb.c(za);
    let mut unpacked: Option<usize> = None;
    for (bi, &(ba, bb)) in batches.iter().enumerate() {
        // A rows -> [M][Kp] i16 of (a - za).
        let ab = kb.off(a, (ba * m * k * st_a.bytes()) as i64);
        conv::fill_zero(kb, a_ws, 0, m * kpp / 2);
        kb.for_range(0, m as i64, 1, |kb, i| {
            let src = kb.idx(ab, i, (k * st_a.bytes()) as i64);
            let dst = kb.idx(a_ws, i, (kpp * 2) as i64);
            kb.for_range(0, k as i64, 1, |kb, kk| {
                let s = kb.idx(src, kk, st_a.bytes() as i64);
                let v = kb.load_i64(st_a, s, 0);
                let v = kb.b.ins().isub(v, zav);
                let d = kb.idx(dst, kk, 2);
                kb.b.ins().istore16(MF, v, d, 0);
            });
        });
        let bp = match (b_packed, b_rt, zb_tab) {
            (Some(p), _, _) => kb.off(p, (bb * kpp * npp * 2) as i64),
            (None, None, None) => {
                let Some((pw, src, zp)) = b_bits else { return };
                if unpacked != Some(bb) {
                    // Widen slab `bb` into `[Kp/2][Np][2]`: row kk at pair kk/2, half kk%2.
                    conv::fill_zero(kb, b_ws, 0, kpp * npp / 2);
                    let src = kb.off(src, (bb * k * pw.row_bytes(n)) as i64);
                    Unpack {
                        pw,
                        rows: k,
                        cols: n,
                        src,
                        zp,
                        elem: 4,
                        dst_row: |kb: &mut Kb<'_, '_>, kk| {
                            let pair = kb.b.ins().ushr_imm_u(kk, 1);
                            let half = kb.b.ins().band_imm_s(kk, 1);
                            let row = kb.idx(b_ws, pair, (npp * 4) as i64);
                            kb.idx(row, half, 2)
                        },
                    }
                    .emit(kb);
                    unpacked = Some(bb);
                }
                b_ws
            }
            (None, Some(br), Some(zt)) => {
                let bsrc = kb.off(br, (bb * k * n * st_b.bytes()) as i64);
                conv::fill_zero(kb, b_ws, 0, kpp * npp / 2);
                kb.for_range(0, k as i64, 1, |kb, kk| {
                    let pair = kb.b.ins().ushr_imm_u(kk, 1);
                    let half = kb.b.ins().band_imm_s(kk, 1);
                    let row = kb.idx(b_ws, pair, (npp * 4) as i64);
                    let row = kb.idx(row, half, 2);
                    let src = kb.idx(bsrc, kk, (n * st_b.bytes()) as i64);
                    kb.for_range(0, n as i64, 1, |kb, j| {
                        let s = kb.idx(src, j, st_b.bytes() as i64);
                        let v = kb.load_i64(st_b, s, 0);
                        let zp = kb.idx(zt, j, 8);
                        let z = kb.load(I64, zp, 0);
                        let v = kb.b.ins().isub(v, z);
                        let d = kb.idx(row, j, 4);
                        kb.b.ins().istore16(MF, v, d, 0);
                    });
                });
                b_ws
            }
            _ => return,
        };
        let o = kb.off(out, (bi * m * n * ob) as i64);
        emit_int_gemm(
            kb,
            &IntGemm {
                m,
                n,
                pairs: kpp / 2,
                a: a_ws,
                a_row: (kpp * 2) as i64,
                b: bp,
                out: o,
                ldc: n,
                bias,
                rq,
                deq,
                st_out: epi.st_out,
                chan_of_row: false,
            },
        );
    }
    let _: Type = I64;
}
