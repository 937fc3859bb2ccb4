//! Kernel selection (what each node becomes, decided before any code exists) and
//! emission (the Cranelift code of one kernel).
//!
//! [`select`] maps a node to a [`Lowering`]: the kernel family with every constant it
//! needs (geometry, strides, fused epilogue). It fails with a reason for what cannot be
//! lowered yet. [`emit`] turns a lowering into the body of the kernel's function.
//!
//! The GEMM-like families have a folder each, holding their applicability and cost,
//! their weight packing, a tile per tier and their epilogue: `dot/` (u8 x i8: the
//! assembled `vpdpbusd` / `vpmaddubsw` tiles, the 128-bit `pmaddubsw` / aarch64 `sdot`
//! kernel, the i16-pair `pmaddwd` kernel), `xnor/` (1-bit XNOR-popcount, and the
//! assembled popcount tiles the bit-serial family shares), `bitserial/` (2-4-bit bit
//! planes), `fma/` (f32: the assembled FMA tiles, the 128-bit GEMM and Winograd).
//! `quant/` holds the element-wise quantize kernels and the exact requantize every
//! integer epilogue shares; `conv.rs` the convolution geometry and f32 convolutions.

pub(crate) mod addzmm;
pub(crate) mod binzmm;
pub(crate) mod bits;
pub(crate) mod bitserial;
pub(crate) mod conv;
pub(crate) mod deconv;
pub(crate) mod dot;
/// The u8 x i8 family's 128-bit kernel (`pmaddubsw`, aarch64 `sdot`), in `dot/`.
pub(crate) use dot::maddubs;
pub(crate) mod elementwise;
pub(crate) mod erfzmm;
pub(crate) mod fma;
/// The f32 family's 128-bit GEMM and Winograd convolutions, in `fma/`.
pub(crate) use fma::{gemm, winograd};
mod im2col;
pub(crate) mod intelem;
pub(crate) mod logic;
pub(crate) mod movement;
pub(crate) mod nary;
pub(crate) mod packw;
mod planes;
pub(crate) mod pool;
pub(crate) mod pow;
pub(crate) mod quant;
pub(crate) mod quantsim;
pub(crate) mod quantzmm;
pub(crate) mod reduce;
pub(crate) mod resize;
pub(crate) mod softzmm;
pub(crate) mod xnor;
/// The 1-bit family's lowering (packing, the 128-bit tile), in `xnor/`.
pub(crate) use xnor::binary;

use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{FuncRef, Function, GlobalValue, InstBuilder, Value};
use qcc_ir::shape::{broadcast, normalize_axis, strides};
use qcc_ir::{Attrs, ConstData, ElemType, Module, Node, Op, ValueId};

use self::conv::ConvGeom;
use self::elementwise::{Binary, Broadcast, Unary};
use self::movement::{AxisMap, FILL, Gather};
use self::pool::PoolKind;
use super::kb::Kb;
use super::storage::Store;

/// What a node (with any nodes fused into it) is lowered to.
#[derive(Clone, Debug)]
pub(crate) enum Lowering {
    Unary {
        op: Unary,
        n: usize,
    },
    Binary {
        op: Binary,
        bc: Broadcast,
    },
    Conv {
        g: ConvGeom,
        lo: Option<f32>,
        hi: Option<f32>,
        /// A fused `silu` after the bias (and any clamp): in the zmm tiles' epilogue, or
        /// a pass over the result while it is in cache ([`conv::silu_in_tile`]).
        silu: bool,
        /// The assembled wide tile of the GEMMs (`kernels::fma`), if the tier has one.
        wide: Option<fma::FmaIsa>,
    },
    Gemm(GemmPlan),
    Pool {
        g: ConvGeom,
        pads: [usize; 4],
        kind: PoolKind,
        st: Store,
    },
    GlobalAvg {
        planes: usize,
        inner: usize,
    },
    BatchNorm {
        n: usize,
        c: usize,
        inner: usize,
        eps: f32,
    },
    Softmax {
        outer: usize,
        d: usize,
        inner: usize,
    },
    /// A plain copy of `bytes` bytes (views that must be materialised, outputs).
    Copy {
        bytes: usize,
    },
    Gather(Gather),
    Concat {
        outer: usize,
        chunks: Vec<usize>,
    },
    Quant(quant::QuantLowering),
    /// Integer elementwise: add/sub/mul on plain integers (alone or fused between
    /// requantizes) and table lookups.
    Int(intelem::IntLowering),
    /// 1-bit (b1 x b1) XNOR-popcount conv/matmul.
    Xnor(binary::BinLowering),
    /// `pow` with broadcasting.
    Pow(nary::Nest),
    /// `fake_quant`, `trunc`.
    Sim(quantsim::SimLowering),
    /// A cast that changes the bytes.
    Cast(quantsim::CastLowering),
    /// `reduce_mean`, `reduce_sum`, `reduce_max`, `reduce_min`, `reduce_prod`.
    Reduce(reduce::ReduceMean),
    /// Comparisons, booleans, `where`, integer `max`/`min`, `arg_max`/`arg_min`,
    /// `top_k`, `one_hot`.
    Logic(logic::LogicLowering),
    /// `resize` in linear mode (nearest is a gather).
    Resize(resize::ResizeLinear),
    /// `conv_transpose2d`.
    Deconv(deconv::Deconv),
    /// `binarize`, `threshold`, `bit_pack`, `bit_unpack`.
    Bits(bits::BitsLowering),
    /// 2..4-bit weights and activations: bit-serial AND-popcount conv/matmul.
    BitSerial(bitserial::BsLowering),
    /// u8 x i8 `pmaddubsw` conv/matmul, where the constant weights make it exact.
    Maddubs(maddubs::MdLowering),
}

/// A matrix product (gemm or batched matmul) on f32.
#[derive(Clone, Debug)]
pub(crate) struct GemmPlan {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Per output batch: batch index into a and into b.
    pub batches: Vec<(usize, usize)>,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
    /// The bias operand's strides along i and j (elements; 0 broadcasts).
    pub c: Option<(i64, i64)>,
    /// B is a constant, packed at compile time.
    pub b_const: bool,
    pub lo: Option<f32>,
    pub hi: Option<f32>,
    /// The assembled wide tile (`kernels::fma`): constant B, alpha 1, and no C or a
    /// constant per-column C with beta 1.
    pub wide: Option<fma::FmaIsa>,
}

impl Lowering {
    /// The kernel's name in reports.
    pub fn kernel_name(&self) -> String {
        match self {
            Lowering::Unary { op, .. } => format!("{}.f32x4", op.name()),
            Lowering::Binary { op, .. } => {
                format!("{}.broadcast.f32x4", format!("{op:?}").to_lowercase())
            }
            Lowering::Conv {
                g,
                lo,
                hi,
                silu,
                wide,
            } => {
                let act = match (lo, hi) {
                    _ if *silu => "+silu",
                    (None, None) => "",
                    (Some(l), None) if *l == 0.0 => "+relu",
                    _ => "+clip",
                };
                if conv::is_depthwise(g) {
                    return format!("conv2d.depthwise.f32x4{act}");
                }
                let kind = if g.is_pointwise() {
                    "pointwise"
                } else if let Some(v) = winograd::variant(g) {
                    v.name()
                } else {
                    "im2col"
                };
                match conv::wide_gemm(g, *wide) {
                    Some(isa) => format!("conv2d.{kind}+{}.f32{act}", isa.name()),
                    None => format!("conv2d.{kind}+gemm{}x{}.f32{act}", gemm::MR, gemm::NR),
                }
            }
            Lowering::Gemm(p) => {
                let b = if p.b_const { "packed" } else { "strided" };
                let act = if p.lo.is_some() || p.hi.is_some() {
                    "+clamp"
                } else {
                    ""
                };
                match p.wide {
                    Some(isa) => format!("gemm.{}.f32.b-{b}{act}", isa.name()),
                    None => format!("gemm{}x{}.f32.b-{b}{act}", gemm::MR, gemm::NR),
                }
            }
            Lowering::Pool { g, kind, st, .. } => match kind {
                PoolKind::Max if pool::separable(g, *kind, *st) => {
                    format!("max_pool.separable.{}", st.name())
                }
                PoolKind::Max => format!("max_pool.{}", st.name()),
                PoolKind::Avg(_) => "avg_pool.f32".into(),
            },
            Lowering::GlobalAvg { .. } => "global_avg_pool.f32x4".into(),
            Lowering::BatchNorm { .. } => "batch_norm.f32x4".into(),
            Lowering::Softmax { inner, .. } => {
                if *inner == 1 {
                    "softmax.f32x4".into()
                } else if *inner >= 4 {
                    "softmax.strided.f32x4".into()
                } else {
                    "softmax.strided.f32".into()
                }
            }
            Lowering::Copy { .. } => "copy".into(),
            Lowering::Gather(g) => {
                if g.maps.iter().any(|m| matches!(m, AxisMap::Table(_))) {
                    "gather.table".into()
                } else {
                    "gather.affine".into()
                }
            }
            Lowering::Concat { .. } => "concat.copy".into(),
            Lowering::Quant(q) => q.kernel_name(),
            Lowering::Int(l) => l.kernel_name(),
            Lowering::Xnor(q) => q.kernel_name(),
            Lowering::Pow(_) => "pow.broadcast.f32x4".into(),
            Lowering::Sim(q) => q.kernel_name(),
            Lowering::Cast(q) => q.kernel_name(),
            Lowering::Reduce(q) => q.kernel_name(),
            Lowering::Logic(q) => q.kernel_name(),
            Lowering::Resize(q) => q.kernel_name(),
            Lowering::Deconv(q) => q.kernel_name(),
            Lowering::Bits(q) => q.kernel_name(),
            Lowering::BitSerial(q) => q.kernel_name(),
            Lowering::Maddubs(q) => q.kernel_name(),
        }
    }

    /// Bytes of scratch the kernel needs while it runs.
    pub fn workspace(&self) -> usize {
        match self {
            Lowering::Conv { g, wide, .. } => conv::workspace(g, *wide),
            Lowering::Quant(q) => q.workspace(),
            Lowering::Xnor(q) => q.workspace(),
            Lowering::Deconv(q) => q.workspace(),
            Lowering::BitSerial(q) => q.workspace(),
            Lowering::Maddubs(q) => q.workspace(),
            _ => 0,
        }
    }

    /// The kernel's name in the report of code built for `tier` (the fused add's
    /// vector width is the tier's, decided when it is emitted).
    pub fn kernel_name_on(&self, tier: Option<crate::backend::Tier>) -> String {
        match self {
            Lowering::Int(l) => l.kernel_name_on(tier),
            _ => self.kernel_name(),
        }
    }

    /// [`Lowering::tier`] for code built for `tier`.
    pub fn tier_on(&self, tier: Option<crate::backend::Tier>) -> Option<&'static str> {
        match self {
            Lowering::Int(l) => l.tier_on(tier),
            _ => self.tier(),
        }
    }

    /// The x86-64 tier the kernel needs beyond the 128-bit code every tier runs (the
    /// assembled wide tiles), for the report.
    pub fn tier(&self) -> Option<&'static str> {
        match self {
            Lowering::Maddubs(q) => q.tier(),
            Lowering::Conv { g, wide, .. } => conv::wide_gemm(g, *wide).map(|i| i.tier()),
            Lowering::Gemm(p) => p.wide.map(|i| i.tier()),
            Lowering::Xnor(q) => q.wide.map(|w| w.isa.tier()),
            Lowering::BitSerial(q) => q.wide.map(|w| w.isa.tier()),
            _ => None,
        }
    }

    /// Multiply-accumulates performed.
    pub fn macs(&self) -> u64 {
        match self {
            Lowering::Conv { g, .. } => g.macs(),
            Lowering::Gemm(p) => (p.batches.len() * p.m * p.n * p.k) as u64,
            Lowering::Quant(q) => q.macs(),
            Lowering::Xnor(q) => q.macs(),
            Lowering::Deconv(q) => q.macs(),
            Lowering::BitSerial(q) => q.macs(),
            Lowering::Maddubs(q) => q.macs(),
            _ => 0,
        }
    }
}

/// Constant data of a value (following views back to a constant), if it is one.
pub(crate) type ConstOf<'a> = dyn Fn(ValueId) -> Option<&'a ConstData> + 'a;

pub(crate) fn f32_data(d: &ConstData) -> Option<&[f32]> {
    match d {
        ConstData::F32(v) => Some(v),
        ConstData::Int(_) => None,
    }
}

/// Chooses the lowering of `node` for `target`; `fused` is an activation node absorbed
/// into it.
pub(crate) fn select(
    m: &Module,
    node: &Node,
    fused: Option<&Node>,
    const_of: &ConstOf<'_>,
    target: crate::backend::costs::CostTarget,
) -> Result<Lowering, String> {
    let a = Attrs::new(node.op, &node.attrs);
    let ty = |i: usize| m.ty(node.operands[i]);
    let out = m.ty(node.result);
    let all_f32 = node.operands.iter().all(|&o| m.ty(o).elem.is_float()) && out.elem.is_float();
    let need_f32 = || {
        if all_f32 {
            Ok(())
        } else {
            Err(format!(
                "{} on non-f32 operands is not lowered yet",
                node.op
            ))
        }
    };
    // A requantize, threshold or (integer kernels) dequantize and bias add fuse as an
    // epilogue of their own; the other fused nodes are activations.
    let epilogue = |f: &Node| {
        matches!(f.op, Op::Requantize | Op::Threshold)
            || (matches!(node.op, Op::Conv2dInt | Op::MatMulInt)
                && matches!(f.op, Op::Dequantize | Op::Add))
    };
    let (lo, hi) = match fused {
        Some(f) if !epilogue(f) => activation_bounds(f)?,
        _ => (None, None),
    };
    let silu = fused.is_some_and(|f| f.op == Op::Silu);
    if silu && node.op != Op::Conv2d {
        return Err(format!("silu is not fused into {}", node.op));
    }
    let unary = |op: Unary| -> Result<Lowering, String> {
        need_f32()?;
        Ok(Lowering::Unary { op, n: out.numel() })
    };
    let binary = |op: Binary| -> Result<Lowering, String> {
        need_f32()?;
        broadcast(&ty(0).shape, &ty(1).shape)?;
        Ok(Lowering::Binary {
            op,
            bc: Broadcast::new(&ty(0).shape, &ty(1).shape, &out.shape),
        })
    };
    match node.op {
        Op::Conv2d => {
            need_f32()?;
            let g = conv::conv_geom(m, node)?;
            if const_of(node.operands[1]).is_none() {
                return Err(
                    "conv2d with run-time weights is not lowered yet (weights must be a constant)"
                        .into(),
                );
            }
            let wide = fma::choose(g.macs(), target);
            Ok(Lowering::Conv {
                g,
                lo,
                hi,
                silu,
                wide,
            })
        }
        Op::Gemm => {
            need_f32()?;
            let (sa, sb) = (&ty(0).shape, &ty(1).shape);
            if sa.len() != 2 || sb.len() != 2 {
                return Err("gemm operands must have rank 2".into());
            }
            let trans_a = a.bool("trans_a")?;
            let trans_b = a.bool("trans_b")?;
            let (mm, k) = if trans_a {
                (sa[1], sa[0])
            } else {
                (sa[0], sa[1])
            };
            let n = if trans_b { sb[0] } else { sb[1] };
            let b_const = const_of(node.operands[1]).is_some();
            if trans_b && !b_const {
                return Err("gemm with a run-time transposed B is not lowered yet".into());
            }
            let c = if node.operands.len() > 2 {
                let cs = &ty(2).shape;
                if !qcc_ir::shape::broadcasts_to(cs, &[mm, n]) {
                    return Err(format!(
                        "c of shape {cs:?} does not broadcast to [{mm}, {n}]"
                    ));
                }
                let (cm, cn) = match cs.len() {
                    0 => (1, 1),
                    1 => (1, cs[0]),
                    _ => (cs[cs.len() - 2], cs[cs.len() - 1]),
                };
                Some((
                    if cm == 1 { 0 } else { cn as i64 },
                    if cn == 1 { 0 } else { 1 },
                ))
            } else {
                None
            };
            let (alpha, beta) = (a.float("alpha")?, a.float("beta")?);
            let c_ok = match c {
                None => true,
                Some(cs) => cs == (0, 1) && beta == 1.0 && const_of(node.operands[2]).is_some(),
            };
            let wide = if b_const && alpha == 1.0 && c_ok {
                fma::choose((mm * n * k) as u64, target)
            } else {
                None
            };
            Ok(Lowering::Gemm(GemmPlan {
                m: mm,
                n,
                k,
                batches: vec![(0, 0)],
                trans_a,
                trans_b,
                alpha,
                beta,
                c,
                b_const,
                lo,
                hi,
                wide,
            }))
        }
        Op::MatMul => {
            need_f32()?;
            let g = matmul_geom(&ty(0).shape, &ty(1).shape)?;
            if g.batches.len() > 256 {
                return Err(format!(
                    "matmul with {} batches is not lowered yet (at most 256)",
                    g.batches.len()
                ));
            }
            let wide = if const_of(node.operands[1]).is_some() {
                fma::choose((g.batches.len() * g.m * g.n * g.k) as u64, target)
            } else {
                None
            };
            Ok(Lowering::Gemm(GemmPlan {
                m: g.m,
                n: g.n,
                k: g.k,
                batches: g.batches,
                trans_a: false,
                trans_b: false,
                alpha: 1.0,
                beta: 1.0,
                c: None,
                b_const: const_of(node.operands[1]).is_some(),
                lo,
                hi,
                wide,
            }))
        }
        Op::Add | Op::Sub | Op::Mul | Op::Lookup if !out.elem.is_float() => {
            intelem::select(m, node, const_of).map(Lowering::Int)
        }
        Op::Lookup => Err("lookup with an f32 result".into()),
        Op::Add => binary(Binary::Add),
        Op::Sub => binary(Binary::Sub),
        Op::Mul => binary(Binary::Mul),
        Op::Div => binary(Binary::Div),
        Op::Relu => unary(Unary::Relu),
        Op::Clip => unary(Unary::Clip(a.opt_float("min")?, a.opt_float("max")?)),
        Op::LeakyRelu => unary(Unary::LeakyRelu(a.float("alpha")?)),
        Op::HardSigmoid => unary(Unary::HardSigmoid(a.float("alpha")?, a.float("beta")?)),
        Op::HardSwish => unary(Unary::HardSwish),
        Op::Sigmoid => unary(Unary::Sigmoid),
        Op::Silu => unary(Unary::Silu),
        Op::Exp => unary(Unary::Exp),
        Op::Sqrt => unary(Unary::Sqrt),
        Op::Sign => unary(Unary::Sign),
        Op::Abs => unary(Unary::Abs),
        Op::Neg => unary(Unary::Neg),
        Op::Floor => unary(Unary::Round(qcc_ir::Rounding::Floor)),
        Op::Ceil => unary(Unary::Round(qcc_ir::Rounding::Ceil)),
        Op::Round => unary(Unary::Round(qcc_ir::Rounding::HalfEven)),
        Op::Log => unary(Unary::Log),
        Op::Tanh => unary(Unary::Tanh),
        Op::Erf => unary(Unary::Erf),
        Op::Max | Op::Min if !out.elem.is_float() => logic::select(m, node).map(Lowering::Logic),
        Op::Max => binary(Binary::Max),
        Op::Min => binary(Binary::Min),
        Op::Softmax => {
            need_f32()?;
            let axis = normalize_axis(a.int("axis")?, out.rank())?;
            let s = &out.shape;
            Ok(Lowering::Softmax {
                outer: s[..axis].iter().product(),
                d: s[axis],
                inner: s[axis + 1..].iter().product(),
            })
        }
        Op::BatchNorm => {
            need_f32()?;
            let s = &ty(0).shape;
            if s.len() < 2 {
                return Err("batch_norm needs x of rank 2 or more".into());
            }
            Ok(Lowering::BatchNorm {
                n: s[0],
                c: s[1],
                inner: s[2..].iter().product(),
                eps: a.float("epsilon")?,
            })
        }
        Op::MaxPool | Op::AvgPool => {
            let xs = &ty(0).shape;
            if xs.len() != 4 {
                return Err("pooling needs x of rank 4".into());
            }
            let k = a.usizes("kernel")?;
            let s = a.usizes("strides")?;
            let p = a.usizes("pads")?;
            let d = if node.op == Op::MaxPool {
                a.usizes("dilations")?
            } else {
                vec![1, 1]
            };
            if k.len() != 2 || s.len() != 2 || p.len() != 4 || d.len() != 2 {
                return Err("bad kernel, strides, pads or dilations".into());
            }
            let g = ConvGeom {
                n: xs[0],
                c: xs[1],
                h: xs[2],
                w: xs[3],
                m: xs[1],
                kh: k[0],
                kw: k[1],
                oh: out.shape[2],
                ow: out.shape[3],
                sh: s[0],
                sw: s[1],
                dh: d[0],
                dw: d[1],
                top: p[0],
                left: p[1],
                group: xs[1],
            };
            let pads = [p[0], p[1], p[2], p[3]];
            if !pool::windows_nonempty(&g, pads) {
                return Err("a pooling window covers no input element".into());
            }
            let (kind, st) = if node.op == Op::MaxPool {
                (PoolKind::Max, Store::of(&ty(0).elem))
            } else {
                need_f32()?;
                (PoolKind::Avg(a.bool("count_include_pad")?), Store::F32)
            };
            Ok(Lowering::Pool { g, pads, kind, st })
        }
        Op::GlobalAvgPool => {
            need_f32()?;
            let s = &ty(0).shape;
            if s.len() < 2 {
                return Err("global_avg_pool needs x of rank 2 or more".into());
            }
            Ok(Lowering::GlobalAvg {
                planes: s[0] * s[1],
                inner: s[2..].iter().product(),
            })
        }
        Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze => Ok(Lowering::Copy {
            bytes: out.numel() * Store::of(&out.elem).bytes(),
        }),
        Op::Cast if is_relabel(&ty(0).elem, &out.elem) => Ok(Lowering::Copy {
            bytes: out.numel() * Store::of(&out.elem).bytes(),
        }),
        Op::Transpose => {
            let perm = a.usizes("perm")?;
            let xs = &ty(0).shape;
            let eb = Store::of(&ty(0).elem).bytes();
            let st = strides(xs);
            Ok(Lowering::Gather(Gather {
                dims: out.shape.clone(),
                maps: perm
                    .iter()
                    .map(|&p| AxisMap::Affine {
                        start: 0,
                        stride: (st[p] * eb) as i64,
                    })
                    .collect(),
                elem: eb,
                fill: 0,
            }))
        }
        Op::Slice => slice_gather(m, node),
        Op::Pad => pad_gather(m, node),
        Op::Concat => {
            let axis = normalize_axis(a.int("axis")?, out.rank())?;
            let eb = Store::of(&out.elem).bytes();
            let inner: usize = out.shape[axis + 1..].iter().product();
            Ok(Lowering::Concat {
                outer: out.shape[..axis].iter().product(),
                chunks: node
                    .operands
                    .iter()
                    .map(|&o| m.ty(o).shape[axis] * inner * eb)
                    .collect(),
            })
        }
        Op::Conv2dInt | Op::MatMulInt
            if let Some((isa, order)) = dot::applies(m, node, const_of, target) =>
        {
            let plan = maddubs::Plan {
                group: 1,
                order,
                sdot: false,
            };
            maddubs::select(m, node, fused, const_of, plan, Some(isa)).map(Lowering::Maddubs)
        }
        Op::Conv2dInt | Op::MatMulInt if binary::applies(m, node, const_of) => {
            binary::select(m, node, fused, target).map(Lowering::Xnor)
        }
        Op::Conv2dInt | Op::MatMulInt
            if let Some(plan) = maddubs::applies(m, node, const_of, target) =>
        {
            maddubs::select(m, node, fused, const_of, plan, None).map(Lowering::Maddubs)
        }
        Op::Conv2dInt | Op::MatMulInt
            if let Some(bits) = bitserial::applies(m, node, const_of, target) =>
        {
            bitserial::select(m, node, fused, bits).map(Lowering::BitSerial)
        }
        Op::Quantize
        | Op::Dequantize
        | Op::Requantize
        | Op::Conv2dInt
        | Op::MatMulInt
        | Op::Binarize => quant::select(m, node, fused, const_of).map(Lowering::Quant),
        Op::Threshold if const_of(node.operands[1]).is_some() => {
            quant::select(m, node, fused, const_of).map(Lowering::Quant)
        }
        Op::Cast if ty(0).elem == out.elem => Ok(Lowering::Copy {
            bytes: out.numel() * Store::of(&out.elem).bytes(),
        }),
        Op::Cast => quantsim::select_cast(m, node).map(Lowering::Cast),
        Op::Pow => {
            need_f32()?;
            let s = [ty(0).shape.as_slice(), ty(1).shape.as_slice()];
            Ok(Lowering::Pow(nary::Nest::new(&out.shape, &s)))
        }
        Op::FakeQuant | Op::Trunc => quantsim::select_sim(m, node, const_of).map(Lowering::Sim),
        Op::ReduceMean | Op::ReduceSum | Op::ReduceMax | Op::ReduceMin | Op::ReduceProd => {
            need_f32()?;
            reduce::select(m, node).map(Lowering::Reduce)
        }
        Op::Resize => resize::select(m, node),
        Op::Equal
        | Op::Less
        | Op::LessOrEqual
        | Op::Not
        | Op::And
        | Op::Or
        | Op::Xor
        | Op::Where
        | Op::ArgMax
        | Op::ArgMin
        | Op::TopK
        | Op::TopKIndices
        | Op::OneHot => logic::select(m, node).map(Lowering::Logic),
        Op::ConvTranspose2d => {
            need_f32()?;
            deconv::select(m, node, const_of).map(Lowering::Deconv)
        }
        Op::Threshold | Op::BitPack | Op::BitUnpack => bits::select(m, node).map(Lowering::Bits),
    }
}

/// Whether a cast from `from` to `to` keeps every code as it is: both integer-valued
/// with the same storage (e.g. `i32` to `q<i32, s:0>`), or `b1` to a signed type of 2
/// to 8 bits, so the wrap it defines is the identity and the bytes need not change.
pub(crate) fn is_relabel(from: &ElemType, to: &ElemType) -> bool {
    match (from, to.storage()) {
        // b1 is stored as the code bytes -1 / +1, which a signed type of 2 to 8 bits
        // stores the same way (its cast keeps both codes).
        (ElemType::Bipolar, Some(b)) => b.signed && (2..=8).contains(&b.bits),
        _ => matches!((from.storage(), to.storage()), (Some(a), Some(b)) if a == b),
    }
}

/// The clamp bounds of an activation that can be fused into a GEMM epilogue.
pub(crate) fn activation_bounds(n: &Node) -> Result<(Option<f32>, Option<f32>), String> {
    let a = Attrs::new(n.op, &n.attrs);
    match n.op {
        Op::Relu => Ok((Some(0.0), None)),
        Op::Clip => Ok((a.opt_float("min")?, a.opt_float("max")?)),
        // No clamp: a conv2d's epilogue applies it (`Lowering::Conv::silu`).
        Op::Silu => Ok((None, None)),
        _ => Err(format!("{} is not a fusable activation", n.op)),
    }
}

pub(crate) use qcc_ir::shape::matmul_geom;

fn slice_gather(m: &Module, node: &Node) -> Result<Lowering, String> {
    let a = Attrs::new(node.op, &node.attrs);
    let xs = &m.ty(node.operands[0]).shape;
    let eb = Store::of(&m.ty(node.operands[0]).elem).bytes();
    let r = xs.len();
    let (starts, ends, axes, steps) = (
        a.ints("starts")?,
        a.ints("ends")?,
        a.ints("axes")?,
        a.ints("steps")?,
    );
    let st = strides(xs);
    let mut sel: Vec<(i64, i64)> = vec![(0, 1); r];
    for i in 0..axes.len() {
        let ax = normalize_axis(axes[i], r)?;
        let d = xs[ax] as i64;
        let step = steps[i];
        if step == 0 {
            return Err("slice step 0".into());
        }
        // The spec's clamping (shared with the interpreter): for negative steps the
        // start clamps to [0, d-1].
        let (s, _) = qcc_ir::shape::slice_range(starts[i], ends[i], step, d as usize);
        sel[ax] = (s, step);
    }
    let out = &m.ty(node.result).shape;
    Ok(Lowering::Gather(Gather {
        dims: out.clone(),
        maps: (0..r)
            .map(|ax| AxisMap::Affine {
                start: sel[ax].0 * (st[ax] * eb) as i64,
                stride: sel[ax].1 * (st[ax] * eb) as i64,
            })
            .collect(),
        elem: eb,
        fill: 0,
    }))
}

fn pad_gather(m: &Module, node: &Node) -> Result<Lowering, String> {
    let a = Attrs::new(node.op, &node.attrs);
    let xty = m.ty(node.operands[0]);
    let xs = &xty.shape;
    let eb = Store::of(&xty.elem).bytes();
    let r = xs.len();
    let pads = a.ints("pads")?;
    let mode = a.word("mode")?;
    let value = a.float("value")?;
    if pads.len() != 2 * r {
        return Err("pads must have two entries per axis".into());
    }
    let st = strides(xs);
    let out = &m.ty(node.result).shape;
    let mut maps = Vec::with_capacity(r);
    let mut needs_fill = false;
    for ax in 0..r {
        let (b, e) = (pads[ax], pads[r + ax]);
        let d = xs[ax] as i64;
        let crop_b = (-b).max(0);
        let crop_e = (-e).max(0);
        let k = d - crop_b - crop_e;
        let pb = b.max(0);
        if k < 0 {
            return Err("pads crop more than the axis holds".into());
        }
        let mut t = Vec::with_capacity(out[ax]);
        for o in 0..out[ax] as i64 {
            let i = o - pb;
            let j = if (0..k).contains(&i) {
                Some(i)
            } else if k == 0 {
                None
            } else {
                match mode.as_str() {
                    "edge" => Some(i.clamp(0, k - 1)),
                    "wrap" => Some(i.rem_euclid(k)),
                    "reflect" => Some(if k == 1 {
                        0
                    } else {
                        let period = 2 * (k - 1);
                        let mm = i.rem_euclid(period);
                        if mm < k { mm } else { period - mm }
                    }),
                    _ => None,
                }
            };
            t.push(match j {
                Some(j) => (crop_b + j) * (st[ax] * eb) as i64,
                None => {
                    needs_fill = true;
                    FILL
                }
            });
        }
        maps.push(AxisMap::Table(t));
    }
    let fill = match &xty.elem {
        ElemType::F32 => value.to_bits() as i32 as i64,
        e => {
            let code = value as i64;
            if needs_fill && (code as f32 != value || !e.admits(code)) {
                return Err(format!("fill value {value} is not a code of {e}"));
            }
            code
        }
    };
    Ok(Lowering::Gather(Gather {
        dims: out.clone(),
        maps,
        elem: eb,
        fill,
    }))
}

/// Where a kernel's constant data is at run time.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Placed {
    /// A read-only data object, declared in the kernel's function.
    Rodata(GlobalValue),
    /// This offset from the decoded weights' region (`--compress-weights huffman`: the
    /// kernel's last parameter points at the region).
    Scratch(u64),
}

/// Where the kernel's data comes from while its body is generated.
pub(crate) trait DataSink {
    /// Defines `bytes` as constant data (a read-only data object, or coded in one and
    /// decoded into the scratch arena) and says where `func` finds them.
    fn define(&mut self, func: &mut Function, bytes: Vec<u8>, align: u64) -> Placed;
    /// Declares the assembled function `f` in `func` (defined once per module).
    fn asm_func(&mut self, func: &mut Function, f: &crate::backend::asm::AsmFn) -> FuncRef;
}

/// The emission context of one kernel.
pub(crate) struct Ecx<'k, 'a, 'f, 'd> {
    pub kb: &'k mut Kb<'a, 'f>,
    pub m: &'d Module,
    pub node: &'d Node,
    pub data: &'k mut dyn DataSink,
    pub const_of: &'k ConstOf<'d>,
    /// Run-time pointer of each operand of `node` (None for constants).
    pub ops: Vec<Option<Value>>,
    pub out: Value,
    pub ws: Value,
    /// The decoded weights' region (`--compress-weights huffman`), None without it.
    pub wbase: Option<Value>,
}

/// A pointer to constant data placed by a [`DataSink`]: its symbol, or its offset in
/// the decoded weights' region at `wbase`.
pub(crate) fn placed_ptr(kb: &mut Kb<'_, '_>, p: Placed, wbase: Option<Value>) -> Value {
    match (p, wbase) {
        (Placed::Rodata(gv), _) => kb.b.ins().symbol_value(I64, gv),
        (Placed::Scratch(off), Some(w)) => kb.off(w, off as i64),
        (Placed::Scratch(_), None) => {
            unreachable!("data is decoded into scratch only for kernels given its region")
        }
    }
}

impl Ecx<'_, '_, '_, '_> {
    /// A pointer to read-only `bytes`.
    pub fn rodata(&mut self, bytes: Vec<u8>, align: u64) -> Value {
        let p = self.data.define(self.kb.b.func, bytes, align);
        placed_ptr(self.kb, p, self.wbase)
    }

    pub fn rodata_f32(&mut self, v: &[f32]) -> Value {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.rodata(bytes, 16)
    }

    /// Operand `i`: its run-time pointer, or its constant data in its storage layout.
    pub fn operand(&mut self, i: usize) -> Value {
        if let Some(p) = self.ops[i] {
            return p;
        }
        let id = self.node.operands[i];
        let data = (self.const_of)(id).expect("a constant operand has data");
        let st = Store::of(&self.m.ty(id).elem);
        let bytes = match data {
            ConstData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ConstData::Int(v) => {
                let mut b = Vec::new();
                st.encode_ints(v, &mut b);
                b
            }
        };
        self.rodata(bytes, 16)
    }

    pub fn const_f32(&self, i: usize) -> Option<&'_ [f32]> {
        (self.const_of)(self.node.operands[i]).and_then(f32_data)
    }
}

/// Emits the body of a kernel.
pub(crate) fn emit(cx: &mut Ecx<'_, '_, '_, '_>, low: &Lowering) {
    let out = cx.out;
    match low {
        Lowering::Unary { op, n } => {
            let x = cx.operand(0);
            // erf with AVX-512 and FMA: runs of 16 on zmm (`erfzmm.rs`, the same
            // operations), the rest here.
            let steps = *n / 16;
            let zmm = *op == elementwise::Unary::Erf
                && steps > 0
                && cx.kb.feat.fma
                && cx.kb.feat.tier.is_some_and(|t| t.level >= 4);
            if zmm {
                let tab = cx.rodata(erfzmm::table(), 16);
                let f = crate::backend::asm::AsmFn::ErfZmm(erfzmm::ErfZmm {
                    steps: steps as u32,
                });
                let f = cx.data.asm_func(cx.kb.b.func, &f);
                cx.kb.b.ins().call(f, &[x, out, tab]);
                let done = (steps * 16 * 4) as i64;
                let (xr, or) = (cx.kb.off(x, done), cx.kb.off(out, done));
                elementwise::emit_unary(cx.kb, *op, *n - steps * 16, xr, or);
            } else {
                elementwise::emit_unary(cx.kb, *op, *n, x, out);
            }
        }
        Lowering::Binary { op, bc } => {
            let a = cx.operand(0);
            let b = cx.operand(1);
            // With AVX-512, the innermost runs of 16 or more on zmm (`binzmm.rs`).
            let n = bc.dims[bc.dims.len() - 1];
            let bop = match op {
                elementwise::Binary::Add => Some(binzmm::BinOp::Add),
                elementwise::Binary::Sub => Some(binzmm::BinOp::Sub),
                elementwise::Binary::Mul => Some(binzmm::BinOp::Mul),
                elementwise::Binary::Div => Some(binzmm::BinOp::Div),
                _ => None,
            };
            let zmm = match bop {
                Some(bop) if n >= 16 && cx.kb.feat.tier.is_some_and(|t| t.level >= 4) => {
                    let last = bc.dims.len() - 1;
                    let f = crate::backend::asm::AsmFn::BinZmm(binzmm::BinZmm {
                        op: bop,
                        steps: (n / 16) as u32,
                        a_vec: bc.sa[last] != 0,
                        b_vec: bc.sb[last] != 0,
                    });
                    Some(cx.data.asm_func(cx.kb.b.func, &f))
                }
                _ => None,
            };
            elementwise::emit_binary(cx.kb, *op, bc, a, b, out, zmm);
        }
        Lowering::Conv {
            g,
            lo,
            hi,
            silu,
            wide,
        } => {
            let x = cx.operand(0);
            let w = cx.const_f32(1).expect("conv weights are constant").to_vec();
            let packed = conv::pack_weights(g, &w, *wide);
            let wp = cx.rodata_f32(&packed);
            let bias = (cx.node.operands.len() > 2).then(|| cx.operand(2));
            let ws = cx.ws;
            let in_tile = *silu && conv::silu_in_tile(g, *wide);
            let tiles = conv::wide_spec(g, *wide, bias.is_some(), *lo, *hi, in_tile)
                .map(|s| fma::FmaGemm::new(cx.data, cx.kb.b.func, s));
            conv::emit(cx.kb, g, x, wp, bias, out, ws, *lo, *hi, tiles.as_ref());
            if *silu && !in_tile {
                // Over the result just written (in place; still in cache for the
                // layers of a small model): on zmm with AVX-512 (the tiles' code), else
                // the 128-bit kernel.
                let n = g.n * g.m * g.npix();
                let zmm = cx.kb.feat.tier.is_some_and(|t| t.level >= 4);
                match u32::try_from(n) {
                    Ok(n32) if zmm => {
                        let f = crate::backend::asm::AsmFn::SiluZmm(fma::SiluZmm { n: n32 });
                        let f = cx.data.asm_func(cx.kb.b.func, &f);
                        cx.kb.b.ins().call(f, &[out, out]);
                    }
                    _ => elementwise::emit_unary(cx.kb, Unary::Silu, n, out, out),
                }
            }
        }
        Lowering::Gemm(p) => emit_gemm(cx, p),
        Lowering::Pool { g, pads, kind, st } => {
            let x = cx.operand(0);
            pool::emit_pool(cx.kb, g, *pads, *kind, *st, x, out);
        }
        Lowering::GlobalAvg { planes, inner } => {
            let x = cx.operand(0);
            pool::emit_global_avg(cx.kb, *planes, *inner, x, out);
        }
        Lowering::BatchNorm { n, c, inner, eps } => {
            let x = cx.operand(0);
            let p = [cx.operand(1), cx.operand(2), cx.operand(3), cx.operand(4)];
            elementwise::emit_batch_norm(cx.kb, *n, *c, *inner, *eps, x, p, out);
        }
        Lowering::Softmax { outer, d, inner } => {
            let x = cx.operand(0);
            // Rows of 16 or more with AVX-512 and FMA: on zmm (`softzmm.rs`, the same
            // results).
            let zmm = *inner == 1
                && *d >= 16
                && *d < 1 << 28
                && *outer > 0
                && *outer <= u32::MAX as usize
                && cx.kb.feat.fma
                && cx.kb.feat.tier.is_some_and(|t| t.level >= 4);
            if zmm {
                let tab = cx.rodata(erfzmm::table(), 16);
                let f = crate::backend::asm::AsmFn::SoftmaxZmm(softzmm::SoftmaxZmm {
                    rows: *outer as u32,
                    d: *d as u32,
                });
                let f = cx.data.asm_func(cx.kb.b.func, &f);
                cx.kb.b.ins().call(f, &[x, out, tab]);
            } else {
                elementwise::emit_softmax(cx.kb, *outer, *d, *inner, x, out);
            }
        }
        Lowering::Copy { bytes } => {
            let x = cx.operand(0);
            cx.kb.copy_bytes(out, x, *bytes as i64);
        }
        Lowering::Gather(g) => {
            let x = cx.operand(0);
            let tb = g.table_bytes();
            let t = (!tb.is_empty()).then(|| cx.rodata(tb, 16));
            movement::emit_gather(cx.kb, g, x, out, t);
        }
        Lowering::Concat { outer, chunks } => {
            let srcs: Vec<Value> = (0..chunks.len()).map(|i| cx.operand(i)).collect();
            movement::emit_concat(cx.kb, *outer, chunks, &srcs, out);
        }
        Lowering::Quant(q) => quant::emit(cx, q),
        Lowering::Int(l) => intelem::emit(cx, l),
        Lowering::Xnor(q) => binary::emit(cx, q),
        Lowering::Pow(nest) => pow::emit(cx, nest),
        Lowering::Sim(q) => quantsim::emit_sim(cx, q),
        Lowering::Cast(q) => quantsim::emit_cast(cx, q),
        Lowering::Reduce(q) => reduce::emit(cx, q),
        Lowering::Logic(q) => logic::emit(cx, q),
        Lowering::Resize(q) => resize::emit(cx, q),
        Lowering::Deconv(q) => deconv::emit(cx, q),
        Lowering::Bits(q) => bits::emit(cx, q),
        Lowering::BitSerial(q) => bitserial::emit(cx, q),
        Lowering::Maddubs(q) => maddubs::emit(cx, q),
    }
}

fn emit_gemm(cx: &mut Ecx<'_, '_, '_, '_>, p: &GemmPlan) {
    if let Some(isa) = p.wide {
        emit_gemm_wide(cx, p, isa);
        return;
    }
    let (m, n, k) = (p.m, p.n, p.k);
    let a = cx.operand(0);
    let nb_b = p.batches.iter().map(|b| b.1).max().unwrap_or(0) + 1;
    let b_packed = if p.b_const {
        let b = cx.const_f32(1).expect("constant B").to_vec();
        let mut packed = Vec::with_capacity(b.len());
        for s in 0..nb_b {
            let slab = &b[s * k * n..(s + 1) * k * n];
            packed.extend(gemm::pack_b(k, n, |kk, j| {
                if p.trans_b {
                    slab[j * k + kk]
                } else {
                    slab[kk * n + j]
                }
            }));
        }
        Some(cx.rodata_f32(&packed))
    } else {
        None
    };
    let b_rt = if p.b_const { None } else { Some(cx.operand(1)) };
    let c = p.c.map(|(rs, cs)| (cx.operand(2), rs, cs));
    let out = cx.out;
    for (bi, &(ba, bb)) in p.batches.iter().enumerate() {
        let a_in = {
            let base = cx.kb.off(a, (ba * m * k * 4) as i64);
            if p.trans_a {
                gemm::AIn::Strided {
                    p: base,
                    row: 1,
                    col: m as i64,
                }
            } else {
                gemm::AIn::Strided {
                    p: base,
                    row: k as i64,
                    col: 1,
                }
            }
        };
        let b_in = match (b_packed, b_rt) {
            (Some(bp), _) => gemm::BIn::Packed(cx.kb.off(bp, (bb * k * n * 4) as i64)),
            (None, Some(br)) => gemm::BIn::Strided {
                p: cx.kb.off(br, (bb * k * n * 4) as i64),
                row: n as i64,
            },
            (None, None) => unreachable!("B is either constant or a run-time operand"),
        };
        let o = cx.kb.off(out, (bi * m * n * 4) as i64);
        gemm::emit(
            cx.kb,
            &gemm::Gemm {
                m,
                n,
                k,
                a: a_in,
                b: b_in,
                out: o,
                ldc: n,
                epi: gemm::Epilogue {
                    bias: c,
                    alpha: p.alpha,
                    beta: p.beta,
                    lo: p.lo,
                    hi: p.hi,
                },
            },
        );
    }
}

/// [`emit_gemm`] with the wide tile `isa`: B packed at compile time in panels of one
/// vector, A read in place (either order), a per-column C padded to whole vectors.
fn emit_gemm_wide(cx: &mut Ecx<'_, '_, '_, '_>, p: &GemmPlan, isa: fma::FmaIsa) {
    let (m, n, k) = (p.m, p.n, p.k);
    let a = cx.operand(0);
    let nb_b = p.batches.iter().map(|b| b.1).max().unwrap_or(0) + 1;
    let b = cx.const_f32(1).expect("constant B").to_vec();
    let mut packed = Vec::new();
    for s in 0..nb_b {
        let slab = &b[s * k * n..(s + 1) * k * n];
        packed.extend(fma::pack_b(isa, k, n, |kk, j| {
            if p.trans_b {
                slab[j * k + kk]
            } else {
                slab[kk * n + j]
            }
        }));
    }
    let slab_bytes = fma::b_bytes(isa, n, k);
    let bp = cx.rodata_f32(&packed);
    let bias = p.c.map(|_| {
        let c = cx.const_f32(2).expect("a constant C").to_vec();
        let mut v = vec![0f32; n.div_ceil(isa.lanes()) * isa.lanes()];
        // C is [n] or [1, n] (per column).
        v[..n].copy_from_slice(&c[c.len() - n..]);
        cx.rodata_f32(&v)
    });
    let spec = fma::FmaSpec {
        isa,
        m,
        n,
        k,
        ldc: n,
        a: if p.trans_a {
            fma::AKind::Cols
        } else {
            fma::AKind::Rows
        },
        bias: if bias.is_some() {
            fma::Bias::Col
        } else {
            fma::Bias::None
        },
        lo: p.lo,
        hi: p.hi,
        silu: false,
        b_row: None,
    };
    let tiles = fma::FmaGemm::new(cx.data, cx.kb.b.func, spec);
    let out = cx.out;
    for (bi, &(ba, bb)) in p.batches.iter().enumerate() {
        let ab = cx.kb.off(a, (ba * m * k * 4) as i64);
        let bb = cx.kb.off(bp, (bb * slab_bytes) as i64);
        let o = cx.kb.off(out, (bi * m * n * 4) as i64);
        fma::emit(cx.kb, &tiles, ab, bb, o, bias);
    }
}
