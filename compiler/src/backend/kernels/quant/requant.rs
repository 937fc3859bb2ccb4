//! The exact integer rescale shared by every integer kernel: the fused requantize's
//! per-channel tables (`Requant`), its scalar and i32x4 forms, the fused dequantize
//! (`Deq`) and threshold (`Thresh`) epilogues, and `AccStore`, which finishes an i32
//! accumulator (bias, requantize, threshold or dequantize, the store). The rules are
//! in `super`'s module documentation.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I8X16, I16X8, I32, I32X4, I64, I64X2};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};
use qcc_ir::shape::normalize_axis;
use qcc_ir::{Attrs, ConstData, ElemType, Module, Node, Op, QuantParams, Rounding};

use super::super::Ecx;
use super::*;
use crate::backend::kb::{Kb, RO};
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
pub(crate) enum Field {
    Const(i64),
    Packed { col: usize, pos: u32, width: u32 },
}

/// The compact table layout: fields multiplier, signed shift (right > 0, left < 0),
/// offset (zx, or the folded bias), zq; columns of `word` bytes, each an array over
/// the channels.
#[derive(Clone, Debug)]
pub(crate) struct RqLayout {
    fields: [Field; 4],
    cols: usize,
    word: usize,
}

/// Bits of a two's complement field holding every value of `v`.
pub(crate) fn signed_width(v: impl Iterator<Item = i64>) -> u32 {
    v.map(|x| 65 - if x < 0 { !x } else { x }.leading_zeros())
        .max()
        .unwrap_or(1)
}

impl Requant {
    /// Per channel: (multiplier, signed shift, offset, zq).
    pub(crate) fn params(&self) -> impl Iterator<Item = [i64; 4]> + '_ {
        self.chans.iter().map(|c| [c[0], c[1] - c[2], c[4], c[5]])
    }

    /// The compact layout: constant fields cost nothing; the others are packed first-fit
    /// (widest first) into 32-bit words (64-bit when one needs more than 32 bits), one
    /// column array per word.
    pub(crate) fn layout(&self) -> RqLayout {
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
                    && super::super::is_relabel(&m.ty(node.result).elem, &m.ty(from).elem)
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
    pub(crate) fn padded(&self) -> usize {
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

    pub(crate) fn has_zp(&self) -> bool {
        self.zps.iter().any(|&z| z != 0.0)
    }

    /// `x` (i32, or i32x4 whose lanes are channels `chan..chan + 4` when `lanes`, else
    /// all channel `chan`) dequantized: f32 or f32x4 bits as i32 / i32x4.
    pub(crate) fn apply(
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
    pub(crate) fn of(m: &Module, f: &Node, axis: usize) -> Result<Thresh, String> {
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
    pub(crate) fn apply(&self, kb: &mut Kb<'_, '_>, tp: Value, x: Value) -> Value {
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

/// Loads of one channel's requantize parameters from the compact table at `tp`
/// (constants for the fields equal across channels), each table word loaded once.
pub(crate) struct RqFields {
    l: RqLayout,
    n: i64,
    tp: Value,
    words: Vec<Option<Value>>,
}

impl RqFields {
    pub(crate) fn new(rq: &Requant, tp: Value) -> RqFields {
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
    pub(crate) fn get(&mut self, kb: &mut Kb<'_, '_>, f: usize) -> Value {
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
pub(crate) fn store_lanes(kb: &mut Kb<'_, '_>, st: Store, v: Value, lanes: usize, p: Value) {
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
