//! The integer path: quantize, dequantize, requantize, and the integer convolution and
//! matrix product with i32 accumulation (bit-exact with the interpreter).
//!
//! Here: the lowering of those ops (`QuantLowering`, `select`) and the element-wise
//! quantize / dequantize / requantize kernels; in `requant.rs` the exact rescale every
//! integer kernel's epilogue shares (`Requant`, `AccStore`); the i16-pair GEMM that
//! runs `ConvInt` / `MatMulInt` is the u8 x i8 family's, in `../dot/pmaddwd.rs`.
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
use super::packw::PackedW;
use super::quantzmm::QuantZmm;
use super::{ConstOf, Ecx, matmul_geom};
use crate::backend::asm::AsmFn;
use crate::backend::kb::{Kb, MF, RO};
use crate::backend::storage::Store;

mod requant;
use super::dot::pmaddwd::{emit_conv_int, emit_matmul_int, kp, np};
pub(crate) use requant::*;

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
pub(crate) fn im2col_bytes(g: &ConvGeom) -> usize {
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
            // Runs of at least 8 codes go through the i32x4 form, 8 at a time.
            let fast = *inner >= 16 && shift_only_bytes(rq, *st_in, *st_out);
            let fast32 = !fast && *inner >= 8 && shift_only_i32(rq, *st_in, *st_out);
            let vform = (*inner >= 8 && !fast && !fast32)
                .then(|| vector_requant(rq, *st_in))
                .flatten();
            let vtab = vform.as_ref().map(|v| cx.rodata(v.table(), 16));
            let out = cx.out;
            let (st_in, st_out) = (*st_in, *st_out);
            let kb = &mut *cx.kb;
            kb.for_range(0, (*outer * *d) as i64, 1, |kb, od| {
                let ch = kb.b.ins().urem_imm_u(od, *d as i64);
                let xp = kb.idx(x, od, (*inner * st_in.bytes()) as i64);
                let op = kb.idx(out, od, (*inner * st_out.bytes()) as i64);
                let tp = rq.chan_ptr(kb, tab, ch);
                let mut done = 0usize;
                if fast {
                    let n16 = *inner / 16;
                    shift_codes_x16(kb, rq, tp, st_in, st_out, xp, op, n16);
                    done = n16 * 16;
                } else if fast32 {
                    let n8 = *inner / 8;
                    shift_codes_x8(kb, rq, tp, st_in, st_out, xp, op, n8);
                    done = n8 * 8;
                } else if let (Some(v), Some(vt)) = (&vform, vtab) {
                    let vp = v.chan_ptr(kb, vt, ch);
                    let n8 = *inner / 8;
                    kb.for_range(0, n8 as i64, 1, |kb, i| {
                        let s = kb.idx(xp, i, (8 * st_in.bytes()) as i64);
                        let o = kb.idx(op, i, (8 * st_out.bytes()) as i64);
                        let (a, b) = load_codes_x8(kb, st_in, s);
                        let a = requant_vec(kb, v, vp, a);
                        let b = requant_vec(kb, v, vp, b);
                        store_lanes(kb, st_out, a, 4, o);
                        let o4 = kb.off(o, (4 * st_out.bytes()) as i64);
                        store_lanes(kb, st_out, b, 4, o4);
                    });
                    done = n8 * 8;
                }
                let xt = kb.off(xp, (done * st_in.bytes()) as i64);
                let ot = kb.off(op, (done * st_out.bytes()) as i64);
                kb.for_range(0, (*inner - done) as i64, 1, |kb, i| {
                    let s = kb.idx(xt, i, st_in.bytes() as i64);
                    let v = kb.load_i64(st_in, s, 0);
                    let r = requant_scalar(kb, rq, tp, v);
                    let o = kb.idx(ot, i, st_out.bytes() as i64);
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

/// Whether a requantize of byte codes to byte codes only shifts (multiplier 1 in every
/// channel, right shifts up to 14, left shifts up to 6, rounding half to even or floor):
/// then [`shift_codes_x16`] computes it in i16 lanes, 16 codes at a time.
fn shift_only_bytes(rq: &Requant, st_in: Store, st_out: Store) -> bool {
    let byte = |s: Store| matches!(s, Store::U8 | Store::I8);
    byte(st_in)
        && byte(st_out)
        && !rq.bias_folded
        && matches!(rq.rounding, Rounding::HalfEven | Rounding::Floor)
        && rq
            .chans
            .iter()
            .all(|c| c[0] == 1 && (0..=14).contains(&c[1]) && (0..=6).contains(&c[2]))
}

/// The constants of a shift-only requantize of one channel (table pointer `tp`) in
/// `lanes` (`I16X8` or `I32X4`): `a = x - zx`, the right shift by `s` rounded as
/// `floor((a + 2^(s-1) - 1 + bit_s(a)) / 2^s)` for half to even (nothing added for floor
/// or `s = 0`), then the left shift by `k`, `+ zq` and the clamp to `[lo, hi]`.
struct ShiftLanes {
    s: Value,
    k: Value,
    zx: Value,
    zq: Value,
    lo: Value,
    hi: Value,
    add: Value,
    spos: Value,
    half_even: bool,
    /// `+-2^30` (i32 lanes of i32 values): `a` is clamped to it first.
    bound: Option<(Value, Value)>,
}

impl ShiftLanes {
    fn new(kb: &mut Kb<'_, '_>, rq: &Requant, tp: Value, lanes: Type, bound: bool) -> Self {
        let mut f = RqFields::new(rq, tp);
        let sh = f.get(kb, 1);
        let zx = f.get(kb, 2);
        let zq = f.get(kb, 3);
        let zero = kb.c(0);
        let s = kb.b.ins().smax(sh, zero);
        let nsh = kb.b.ins().ineg(sh);
        let k = kb.b.ins().smax(nsh, zero);
        let spos = kb.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, s, 0);
        let spos = kb.b.ins().uextend(I64, spos);
        let one = kb.c(1);
        let pow = kb.b.ins().ishl(one, s);
        let half = kb.b.ins().ushr_imm_u(pow, 1);
        let add = kb.b.ins().isub(half, spos);
        let lane = lanes.lane_type();
        let splat = |kb: &mut Kb<'_, '_>, v: Value| {
            let v = kb.b.ins().ireduce(lane, v);
            kb.b.ins().splat(lanes, v)
        };
        let (lo, hi) = (kb.c(rq.lo), kb.c(rq.hi));
        let bound = bound.then(|| {
            let (b, nb) = (kb.c(1 << 30), kb.c(-(1 << 30)));
            (splat(kb, b), splat(kb, nb))
        });
        ShiftLanes {
            s: kb.b.ins().ireduce(I32, s),
            k: kb.b.ins().ireduce(I32, k),
            zx: splat(kb, zx),
            zq: splat(kb, zq),
            lo: splat(kb, lo),
            hi: splat(kb, hi),
            add: splat(kb, add),
            spos: splat(kb, spos),
            half_even: rq.rounding == Rounding::HalfEven,
            bound,
        }
    }

    /// The requantized codes of the values `x`.
    fn apply(&self, kb: &mut Kb<'_, '_>, x: Value) -> Value {
        let mut a = kb.b.ins().isub(x, self.zx);
        if let Some((b, nb)) = self.bound {
            a = kb.b.ins().smax(a, nb);
            a = kb.b.ins().smin(a, b);
        }
        let t = if self.half_even {
            let q = kb.b.ins().sshr(a, self.s);
            let odd = kb.b.ins().band(q, self.spos);
            let t = kb.b.ins().iadd(a, self.add);
            kb.b.ins().iadd(t, odd)
        } else {
            a
        };
        let t = kb.b.ins().sshr(t, self.s);
        let t = kb.b.ins().ishl(t, self.k);
        let t = kb.b.ins().iadd(t, self.zq);
        let t = kb.b.ins().smax(t, self.lo);
        kb.b.ins().smin(t, self.hi)
    }
}

/// `n16` runs of 16 byte codes of one channel (table pointer `tp`) from `xp` to `op`,
/// requantized by shifts alone ([`shift_only_bytes`]) in i16 lanes: |x - zx| <= 255 and
/// the result at most 255 * 64 before the clamp, exact in i16; the scalar form's
/// saturation bounds never bind at these magnitudes.
#[allow(clippy::too_many_arguments, reason = "one loop")]
fn shift_codes_x16(
    kb: &mut Kb<'_, '_>,
    rq: &Requant,
    tp: Value,
    st_in: Store,
    st_out: Store,
    xp: Value,
    op: Value,
    n16: usize,
) {
    let c = ShiftLanes::new(kb, rq, tp, I16X8, false);
    kb.for_range(0, n16 as i64, 1, |kb, i| {
        let src = kb.idx(xp, i, 16);
        let v = kb.load(I8X16, src, 0);
        let halves = if st_in == Store::U8 {
            [kb.b.ins().uwiden_low(v), kb.b.ins().uwiden_high(v)]
        } else {
            [kb.b.ins().swiden_low(v), kb.b.ins().swiden_high(v)]
        };
        let [a, b] = halves.map(|x| c.apply(kb, x));
        let out = if st_out == Store::U8 {
            kb.b.ins().unarrow(a, b)
        } else {
            kb.b.ins().snarrow(a, b)
        };
        let dst = kb.idx(op, i, 16);
        kb.store(out, dst, 0);
    });
}

/// Whether a shift-only requantize (multiplier 1 in every channel, rounding half to
/// even or floor) runs in i32 lanes exactly ([`shift_codes_x8`]): codes of 1 or 2 bytes
/// with right shifts up to 30 or left shifts up to 22 or 14 (|x - zx| <= 2^8, 2^16) to any storage
/// of at most 4 bytes, or i32 values with zero point 0 and right shifts up to 22 to byte
/// codes. Result zero points within 2^16 keep every step inside i32.
fn shift_only_i32(rq: &Requant, st_in: Store, st_out: Store) -> bool {
    let one = |c: &[i64; 6]| c[0] == 1 && c[5].abs() <= 1 << 16;
    if rq.bias_folded
        || !matches!(rq.rounding, Rounding::HalfEven | Rounding::Floor)
        || st_out.bytes() > 4
        || !rq.chans.iter().all(one)
    {
        return false;
    }
    // |x - zx| is at most 2^8 for byte codes and 2^16 for 2-byte ones, so a left shift
    // by up to 22 or 14 stays within 2^30.
    let kmax = if st_in.bytes() == 1 { 22 } else { 14 };
    match st_in.bytes() {
        1 | 2 => rq
            .chans
            .iter()
            .all(|c| (0..=30).contains(&c[1]) && (0..=kmax).contains(&c[2])),
        4 => {
            st_out.bytes() == 1
                && rq
                    .chans
                    .iter()
                    .all(|c| (0..=22).contains(&c[1]) && c[2] == 0 && c[4] == 0)
        }
        _ => false,
    }
}

/// `n8` runs of 8 values of one channel (table pointer `tp`) from `xp` to `op`,
/// requantized by shifts alone ([`shift_only_i32`]) in i32 lanes; i32 inputs are clamped
/// to `+-2^30` first (with a right shift of at most 22 every such value still lands
/// beyond the byte range, so the clamp to it is unchanged).
#[allow(clippy::too_many_arguments, reason = "one loop")]
fn shift_codes_x8(
    kb: &mut Kb<'_, '_>,
    rq: &Requant,
    tp: Value,
    st_in: Store,
    st_out: Store,
    xp: Value,
    op: Value,
    n8: usize,
) {
    let (ib, ob) = (st_in.bytes(), st_out.bytes());
    let c = ShiftLanes::new(kb, rq, tp, I32X4, ib == 4);
    kb.for_range(0, n8 as i64, 1, |kb, i| {
        let src = kb.idx(xp, i, (8 * ib) as i64);
        let dst = kb.idx(op, i, (8 * ob) as i64);
        let (x0, x1) = load_codes_x8(kb, st_in, src);
        for (h, x) in [x0, x1].into_iter().enumerate() {
            let t = c.apply(kb, x);
            let o = kb.off(dst, (h * 4 * ob) as i64);
            store_lanes(kb, st_out, t, 4, o);
        }
    });
}

/// The [`requant_vec`] form of an elementwise requantize of `st_in` codes, when one
/// computes the same codes: a left shift by `k` becomes the multiplier times `2^k` (when
/// that fits i32; the scalar form's saturation before the shift only binds beyond
/// `2^34`, far outside every output range), and the input zero point of 1- and 2-byte
/// codes a folded bias of `-zx` (the i32 sum cannot wrap). i32 inputs need a zero point
/// of 0 and no left shift. None otherwise.
fn vector_requant(rq: &Requant, st_in: Store) -> Option<Requant> {
    let small = st_in.bytes() <= 2;
    if !small && !rq.vector_ok() {
        return None;
    }
    if !small {
        return Some(rq.clone());
    }
    let chans = rq
        .chans
        .iter()
        .map(|c| {
            let m = c[0].checked_shl(c[2] as u32).filter(|_| c[2] < 31)?;
            if m >> c[2] != c[0] || i32::try_from(m).is_err() {
                return None;
            }
            Some([m, c[1], 0, i64::MAX, -c[4], c[5]])
        })
        .collect::<Option<Vec<_>>>()?;
    let v = Requant {
        rounding: rq.rounding,
        lo: rq.lo,
        hi: rq.hi,
        chans,
        bias_folded: true,
        acc_max: Some(1 << 17),
    };
    v.vector_ok().then_some(v)
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

pub(crate) fn const_ints<'a>(cx: &Ecx<'_, '_, '_, 'a>, i: usize) -> &'a [i64] {
    match (cx.const_of)(cx.node.operands[i]) {
        Some(ConstData::Int(v)) => v,
        _ => &[],
    }
}
