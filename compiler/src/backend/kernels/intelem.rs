//! Integer elementwise kernels: `add`/`sub`/`mul` on plain integers, the fused quantized
//! residual add, and table lookups. All bit-exact with the interpreter.
//!
//! - Plain integer `add`/`sub`/`mul` (unfused): a broadcast loop nest over i64 codes; the
//!   exact result is wrapped to the result's storage bits (a truncating store for 8-,
//!   16- and 32-bit types, shift/mask for narrower ones).
//! - `requantize(add(requantize(a), requantize(b)))` (also `sub`), every requantize per
//!   tensor and a, b and the result of one shape, is one kernel: each element of a and b
//!   is rescaled, the two are added and wrapped to the intermediate type, and the sum is
//!   requantized, in registers, so the intermediates are never stored. In the common
//!   case (8-bit operands and result, operand requantizes that only multiply, as the
//!   `int-add` rule makes them, a half-even output requantize whose products stay below
//!   2^52) it runs 8 elements at a time on f64x2 lanes, where every step is exact and the
//!   rounding is the `+ 1.5 * 2^52` trick; otherwise (and for the tail) a scalar loop
//!   specialised on the constants (multiplier, shifts, zero points and clamps are
//!   immediates; steps that cannot change a value of the known input range are left out).
//! - `lookup(x, table)`: the table is in read-only data in the result's storage; one
//!   load of the code, one indexed load of the entry.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{InstBuilder, Value};
use qcc_ir::shape::broadcast;
use qcc_ir::{ConstData, ElemType, Module, Node, Op, Rounding};

use super::addzmm::{AddOp, AddZmm};
use super::elementwise::Broadcast;
use super::quant::{Requant, requant_of};
use super::{ConstOf, Ecx};
use crate::backend::asm::AsmFn;
use crate::backend::kb::Kb;
use crate::backend::storage::Store;

/// An integer binary operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntOp {
    Add,
    Sub,
    Mul,
}

impl IntOp {
    fn of(op: Op) -> Result<IntOp, String> {
        match op {
            Op::Add => Ok(IntOp::Add),
            Op::Sub => Ok(IntOp::Sub),
            Op::Mul => Ok(IntOp::Mul),
            _ => Err(format!("{op} is not an integer binary op")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            IntOp::Add => "add",
            IntOp::Sub => "sub",
            IntOp::Mul => "mul",
        }
    }

    fn apply(self, kb: &mut Kb<'_, '_>, a: Value, b: Value) -> Value {
        match self {
            IntOp::Add => kb.b.ins().iadd(a, b),
            IntOp::Sub => kb.b.ins().isub(a, b),
            IntOp::Mul => kb.b.ins().imul(a, b),
        }
    }
}

/// What an integer elementwise node (with what is fused into it) is lowered to.
#[derive(Clone, Debug)]
pub(crate) enum IntLowering {
    Binary {
        op: IntOp,
        bc: Broadcast,
        st_a: Store,
        st_b: Store,
        st_out: Store,
        /// Storage bits and signedness of the result type (the wrap).
        bits: u32,
        signed: bool,
    },
    /// `rq_out(op(rq_a(a), rq_b(b)))` over `n` elements.
    FusedRequant {
        op: IntOp,
        n: usize,
        rq_a: Requant,
        rq_b: Requant,
        rq_out: Requant,
        /// The intermediate (the add's) type: bits and signedness of the wrap.
        bits: u32,
        signed: bool,
        st_a: Store,
        st_b: Store,
        st_out: Store,
    },
    Lookup {
        n: usize,
        lo: i64,
        st_x: Store,
        st_out: Store,
    },
}

/// The width of the fused add's vectorised form on a tier: the assembled zmm or ymm
/// kernel (`addzmm.rs`), or Cranelift's f64x2 loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AddWidth {
    Zmm,
    Ymm,
    F64x2,
}

impl IntLowering {
    /// The form the fused add takes on `tier` (None: not the vectorised kernel): the
    /// assembled kernel with AVX2 (ymm) or AVX-512 (zmm) for 8 elements or more.
    pub(crate) fn add_width(&self, tier: Option<crate::backend::Tier>) -> Option<AddWidth> {
        let IntLowering::FusedRequant { n, .. } = self else {
            return None;
        };
        self.vec_plan()?;
        let level = tier.map_or(0, |t| t.level);
        Some(match (level, *n >= 8) {
            (4.., true) => AddWidth::Zmm,
            (3, true) => AddWidth::Ymm,
            _ => AddWidth::F64x2,
        })
    }

    /// [`IntLowering::kernel_name`] for the report of code built for `tier`, which
    /// decides the fused add's vector width.
    pub fn kernel_name_on(&self, tier: Option<crate::backend::Tier>) -> String {
        let name = self.kernel_name();
        match self.add_width(tier) {
            Some(AddWidth::Zmm) => name.replacen(".f64x2", ".zmm", 1),
            Some(AddWidth::Ymm) => name.replacen(".f64x2", ".ymm", 1),
            _ => name,
        }
    }

    /// The x86-64 tier the kernel takes on `tier` beyond the 128-bit code, for the
    /// report.
    pub fn tier_on(&self, tier: Option<crate::backend::Tier>) -> Option<&'static str> {
        match self.add_width(tier)? {
            AddWidth::Zmm => Some("x86-64-v4"),
            AddWidth::Ymm => Some("x86-64-v3"),
            AddWidth::F64x2 => None,
        }
    }

    pub fn kernel_name(&self) -> String {
        match self {
            IntLowering::Binary { op, st_out, .. } => {
                format!("{}.broadcast.{}", op.name(), st_out.name())
            }
            IntLowering::FusedRequant {
                op,
                st_a,
                st_b,
                st_out,
                ..
            } => format!(
                "requantize+{}+requantize{}.{}.{}->{}",
                op.name(),
                if self.vec_plan().is_some() {
                    ".f64x2"
                } else {
                    ""
                },
                st_a.name(),
                st_b.name(),
                st_out.name()
            ),
            IntLowering::Lookup { st_x, st_out, .. } => {
                format!("lookup.{}->{}", st_x.name(), st_out.name())
            }
        }
    }
}

fn int_parts(e: &ElemType) -> Result<(u32, bool), String> {
    match e {
        ElemType::Int(t) => Ok((t.bits as u32, t.signed)),
        _ => Err(format!("{e} is not a plain integer type")),
    }
}

/// The lowering of a plain integer `add`/`sub`/`mul` or of a `lookup`.
pub(crate) fn select(
    m: &Module,
    node: &Node,
    const_of: &ConstOf<'_>,
) -> Result<IntLowering, String> {
    let ty = |i: usize| m.ty(node.operands[i]);
    let out = m.ty(node.result);
    match node.op {
        Op::Add | Op::Sub | Op::Mul => {
            let (bits, signed) = int_parts(&out.elem)?;
            broadcast(&ty(0).shape, &ty(1).shape)?;
            Ok(IntLowering::Binary {
                op: IntOp::of(node.op)?,
                bc: Broadcast::new(&ty(0).shape, &ty(1).shape, &out.shape),
                st_a: Store::of(&ty(0).elem),
                st_b: Store::of(&ty(1).elem),
                st_out: Store::of(&out.elem),
                bits,
                signed,
            })
        }
        Op::Lookup => {
            let st = ty(0)
                .elem
                .storage()
                .ok_or("lookup of a type without integer storage")?;
            if st.bits > 8 {
                return Err("lookup of codes wider than 8 bits".into());
            }
            if !matches!(const_of(node.operands[1]), Some(ConstData::Int(_))) {
                return Err("lookup with a run-time table is not lowered".into());
            }
            Ok(IntLowering::Lookup {
                n: out.numel(),
                lo: st.min_code(),
                st_x: Store::of(&ty(0).elem),
                st_out: Store::of(&out.elem),
            })
        }
        op => Err(format!("{op} is not an integer elementwise op")),
    }
}

/// The fused lowering of `rq_out(node(rq_a(a), rq_b(b)))`, where `node` is a plain
/// integer add/sub/mul; fails (and the nodes run unfused) unless every requantize is per
/// tensor and a, b and the result have one shape.
pub(crate) fn select_fused(
    m: &Module,
    node: &Node,
    rq_a: &Node,
    rq_b: &Node,
    rq_out: &Node,
) -> Result<IntLowering, String> {
    let op = IntOp::of(node.op)?;
    let (bits, signed) = int_parts(&m.ty(node.result).elem)?;
    let (a, b) = (rq_a.operands[0], rq_b.operands[0]);
    let shape = &m.ty(node.result).shape;
    if &m.ty(a).shape != shape || &m.ty(b).shape != shape {
        return Err("fused integer add needs operands of the result's shape".into());
    }
    let one = |n: &Node| -> Result<Requant, String> {
        let (rq, _) = requant_of(m, n, None)?;
        if rq.chans.len() != 1 {
            return Err("fused integer add needs per-tensor requantizes".into());
        }
        Ok(rq)
    };
    Ok(IntLowering::FusedRequant {
        op,
        n: shape.iter().product(),
        rq_a: one(rq_a)?,
        rq_b: one(rq_b)?,
        rq_out: one(rq_out)?,
        bits,
        signed,
        st_a: Store::of(&m.ty(a).elem),
        st_b: Store::of(&m.ty(b).elem),
        st_out: Store::of(&m.ty(rq_out.result).elem),
    })
}

/// Wraps the i64 `v` to `bits` (two's complement, sign- or zero-extended back to i64).
fn wrap(kb: &mut Kb<'_, '_>, v: Value, bits: u32, signed: bool) -> Value {
    if bits >= 64 {
        return v;
    }
    if signed {
        let sh = kb.b.ins().ishl_imm_u(v, (64 - bits) as i64);
        kb.b.ins().sshr_imm_u(sh, (64 - bits) as i64)
    } else {
        kb.b.ins().band_imm_s(v, ((1u64 << bits) - 1) as i64)
    }
}

/// A range of i64 values known at compile time (inclusive), kept in i128.
type Range = (i128, i128);

/// Exact requantize of the i64 code `x` (whose values lie in `range`) with the
/// (single-channel) constants of `rq` as immediates: the interpreter's
/// `rounding((x - zx) * multiplier / 2^shift) + zq`, clamped; the same steps as
/// `quant::requant_scalar`, with the ones that cannot change a value of `range` left
/// out (a multiply by 1, a shift by 0, a clamp the range never reaches). Returns the
/// result and its range.
fn requant_imm(kb: &mut Kb<'_, '_>, rq: &Requant, x: Value, range: Range) -> (Value, Range) {
    let [mult, s, k, bound, zx, zq] = rq.chans[0];
    let (mut lo, mut hi) = (range.0 - zx as i128, range.1 - zx as i128);
    let mut p = if zx != 0 {
        kb.b.ins().iadd_imm_s(x, -zx)
    } else {
        x
    };
    if mult != 1 {
        p = kb.b.ins().imul_imm_s(p, mult);
        let (a, b) = (lo * mult as i128, hi * mult as i128);
        (lo, hi) = (a.min(b), a.max(b));
    }
    if k > 0 {
        let bd = bound as i128;
        if lo < -bd || hi > bd {
            let (b, nb) = (kb.c(bound), kb.c(-bound));
            p = kb.b.ins().smin(p, b);
            p = kb.b.ins().smax(p, nb);
            (lo, hi) = (lo.clamp(-bd, bd), hi.clamp(-bd, bd));
        }
        p = kb.b.ins().ishl_imm_u(p, k);
        (lo, hi) = (lo << k, hi << k);
    }
    let r = if s == 0 {
        p
    } else if rq.rounding == Rounding::HalfEven {
        // With p = q 2^s + rem: floor((p + 2^(s-1) - 1 + (q & 1)) / 2^s) is q below the
        // half, q + 1 above it, and at the half q + (q & 1), the even neighbour.
        (lo, hi) = (lo >> s, (hi >> s) + 1);
        let q = kb.b.ins().sshr_imm_u(p, s);
        let odd = kb.b.ins().band_imm_s(q, 1);
        let t = kb.b.ins().iadd_imm_s(p, (1i64 << (s - 1)) - 1);
        let t = kb.b.ins().iadd(t, odd);
        kb.b.ins().sshr_imm_u(t, s)
    } else {
        let mask = (1i64 << s) - 1;
        let half = 1i64 << (s - 1);
        (lo, hi) = (lo >> s, (hi >> s) + 1);
        let floor = kb.b.ins().sshr_imm_u(p, s);
        let rem = kb.b.ins().band_imm_s(p, mask);
        let inexact = kb.b.ins().icmp_imm_s(IntCC::NotEqual, rem, 0);
        let inexact64 = kb.b.ins().uextend(I64, inexact);
        let ceil = kb.b.ins().iadd(floor, inexact64);
        let neg = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, p, 0);
        match rq.rounding {
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
                let gt = kb.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, rem, half);
                let eq = kb.b.ins().icmp_imm_s(IntCC::Equal, rem, half);
                let r = kb.b.ins().select(gt, fl1, floor);
                kb.b.ins().select(eq, tie, r)
            }
        }
    };
    let big = 1i128 << 40;
    let r = if lo < -big || hi > big {
        let (b, nb) = (kb.c(1 << 40), kb.c(-(1 << 40)));
        let r = kb.b.ins().smin(r, b);
        (lo, hi) = (lo.clamp(-big, big), hi.clamp(-big, big));
        kb.b.ins().smax(r, nb)
    } else {
        r
    };
    let mut r = if zq != 0 {
        kb.b.ins().iadd_imm_s(r, zq)
    } else {
        r
    };
    (lo, hi) = (lo + zq as i128, hi + zq as i128);
    if lo < rq.lo as i128 {
        let c = kb.c(rq.lo);
        r = kb.b.ins().smax(r, c);
    }
    if hi > rq.hi as i128 {
        let c = kb.c(rq.hi);
        r = kb.b.ins().smin(r, c);
    }
    let (lo, hi) = (
        lo.clamp(rq.lo as i128, rq.hi as i128),
        hi.clamp(rq.lo as i128, rq.hi as i128),
    );
    (r, (lo.min(hi), hi.max(lo)))
}

/// The range of `op(x, y)` for x in `a`, y in `b`.
fn op_range(op: IntOp, a: Range, b: Range) -> Range {
    let mut lo = i128::MAX;
    let mut hi = i128::MIN;
    for x in [a.0, a.1] {
        for y in [b.0, b.1] {
            let v = match op {
                IntOp::Add => x + y,
                IntOp::Sub => x - y,
                IntOp::Mul => x * y,
            };
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    (lo, hi)
}

/// The codes of a `bits`-wide integer.
fn int_range(bits: u32, signed: bool) -> Range {
    if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

/// The constants of the vectorised fused kernel (see [`emit_vec_add`]).
#[derive(Clone, Debug)]
pub(crate) struct VecPlan {
    op: IntOp,
    /// Per operand: 128 for signed 8-bit storage (codes are biased to 0..255), else 0.
    bias: [i64; 2],
    /// Per operand: the zero point (plus the bias) and the exact integer multiplier.
    z: [f64; 2],
    m: [f64; 2],
    signed: [bool; 2],
    /// The output multiplier `multiplier * 2^-shift` (exact in f64), zero point, clamp.
    c: f64,
    zq: i64,
    lo: i64,
    hi: i64,
    out_signed: bool,
}

impl IntLowering {
    /// The vectorised form of a fused requantize-add-requantize, when it applies: 8-bit
    /// operands and result, operand requantizes that only multiply (shift 0) and never
    /// clamp, an intermediate that never wraps, and a half-even output requantize whose
    /// products stay below 2^52. Then every step is exact in f64 (integers below 2^53,
    /// a multiply by a power of two), and rounding half to even is the `+ 1.5 * 2^52`
    /// trick of the f64 adder, so the result equals the interpreter's.
    pub(crate) fn vec_plan(&self) -> Option<VecPlan> {
        let IntLowering::FusedRequant {
            op,
            rq_a,
            rq_b,
            rq_out,
            bits,
            signed,
            st_a,
            st_b,
            st_out,
            ..
        } = self
        else {
            return None;
        };
        let byte = |st: &Store| matches!(st, Store::I8 | Store::U8);
        if !byte(st_a) || !byte(st_b) || !byte(st_out) {
            return None;
        }
        let operand = |rq: &Requant, st: &Store| -> Option<(Range, f64, f64)> {
            let [mult, s, k, bound, zx, zq] = rq.chans[0];
            if s != 0 || zq != 0 {
                return None;
            }
            let (lo, hi) = store_range(*st);
            let (a, b) = (
                (lo - zx as i128) * mult as i128,
                (hi - zx as i128) * mult as i128,
            );
            let (lo, hi) = (a.min(b), a.max(b));
            // A left shift whose pre-shift saturation never acts is a multiply by 2^k.
            if k > 0 && (lo < -(bound as i128) || hi > bound as i128) {
                return None;
            }
            let mult = (mult as i128) << k;
            let (lo, hi) = (lo << k, hi << k);
            let big = 1i128 << 40;
            if lo < (rq.lo as i128).max(-big) || hi > (rq.hi as i128).min(big) {
                return None;
            }
            Some(((lo, hi), zx as f64, mult as f64))
        };
        let (ga, za, ma) = operand(rq_a, st_a)?;
        let (gb, zb, mb) = operand(rq_b, st_b)?;
        let (slo, shi) = op_range(*op, ga, gb);
        let (tlo, thi) = int_range(*bits, *signed);
        if slo < tlo || shi > thi {
            return None;
        }
        let [mult, s, k, _, zx, zq] = rq_out.chans[0];
        let smax = slo.abs().max(shi.abs());
        if rq_out.rounding != Rounding::HalfEven
            || k != 0
            || zx != 0
            || smax * (mult.unsigned_abs() as i128) >= 1i128 << 52
            || ((smax * (mult.unsigned_abs() as i128)) >> s) + 1 + zq.unsigned_abs() as i128
                >= 1i128 << 31
        {
            return None;
        }
        let bias = |st: &Store| if *st == Store::I8 { 128 } else { 0 };
        let (bia, bib) = (bias(st_a), bias(st_b));
        Some(VecPlan {
            op: *op,
            bias: [bia, bib],
            z: [za + bia as f64, zb + bib as f64],
            m: [ma, mb],
            signed: [*st_a == Store::I8, *st_b == Store::I8],
            c: mult as f64 * 2f64.powi(-(s as i32)),
            zq,
            lo: rq_out.lo,
            hi: rq_out.hi,
            out_signed: *st_out == Store::I8,
        })
    }
}

/// `nv` groups of 8 elements of the fused kernel on f64x2 lanes (see
/// [`IntLowering::vec_plan`]). Codes become f64 through the `2^52 | code` bit pattern
/// (exact for 0..2^32), results go back through `1.5 * 2^52 + r`, whose low 32 bits are
/// `r` in two's complement; even and odd elements travel in separate vectors, so that
/// one shift and or put them back in order.
fn emit_vec_add(kb: &mut Kb<'_, '_>, p: &VecPlan, nv: usize, a: Value, b: Value, out: Value) {
    use cranelift_codegen::ir::types::{F64X2, I32X4, I64X2};
    let le = cranelift_codegen::ir::MemFlagsData::new()
        .with_endianness(cranelift_codegen::ir::Endianness::Little);
    let magic = kb.b.ins().f64const(6_755_399_441_055_744.0);
    let magic = kb.b.ins().splat(F64X2, magic);
    let isplat = |kb: &mut Kb<'_, '_>, v: i64| {
        let s = kb.c(v);
        kb.b.ins().splat(I64X2, s)
    };
    let exp_bits = isplat(kb, 0x4330_0000_0000_0000);
    let low32 = isplat(kb, 0xFFFF_FFFF);
    let fsplat = |kb: &mut Kb<'_, '_>, v: f64| {
        let s = kb.b.ins().f64const(v);
        kb.b.ins().splat(F64X2, s)
    };
    // `2^52 + code - z` in one subtraction (2^52 + z is exact).
    let z = [
        fsplat(kb, p.z[0] + 4_503_599_627_370_496.0),
        fsplat(kb, p.z[1] + 4_503_599_627_370_496.0),
    ];
    let m = [fsplat(kb, p.m[0]), fsplat(kb, p.m[1])];
    let c = fsplat(kb, p.c);
    let (zq, lo, hi) = (
        kb.iconst_t(I32X4, p.zq),
        kb.iconst_t(I32X4, p.lo),
        kb.iconst_t(I32X4, p.hi),
    );
    let bias = [kb.iconst_t(I32X4, p.bias[0]), kb.iconst_t(I32X4, p.bias[1])];
    kb.for_range(0, nv as i64, 1, |kb, i| {
        // Per operand: 8 codes as f64 (x - z) * m, in even/odd lane pairs per half.
        let mut vals = [[[magic; 2]; 2]; 2]; // [operand][half][even/odd]
        for (o, base) in [a, b].into_iter().enumerate() {
            let ptr = kb.idx(base, i, 8);
            let v16 = if p.signed[o] {
                kb.b.ins().sload8x8(crate::backend::kb::MF, ptr, 0)
            } else {
                kb.b.ins().uload8x8(crate::backend::kb::MF, ptr, 0)
            };
            let halves = if p.signed[o] {
                [kb.b.ins().swiden_low(v16), kb.b.ins().swiden_high(v16)]
            } else {
                [kb.b.ins().uwiden_low(v16), kb.b.ins().uwiden_high(v16)]
            };
            for (h, v) in halves.into_iter().enumerate() {
                let v = if p.bias[o] != 0 {
                    kb.b.ins().iadd(v, bias[o])
                } else {
                    v
                };
                let w = kb.b.ins().bitcast(I64X2, le, v);
                let even = kb.b.ins().band(w, low32);
                let odd = kb.b.ins().ushr_imm_u(w, 32);
                for (e, x) in [even, odd].into_iter().enumerate() {
                    let x = kb.b.ins().bor(x, exp_bits);
                    let x = kb.b.ins().bitcast(F64X2, le, x);
                    let x = kb.b.ins().fsub(x, z[o]);
                    vals[o][h][e] = kb.b.ins().fmul(x, m[o]);
                }
            }
        }
        let mut halves = [magic; 2];
        for h in 0..2 {
            let mut words = [magic; 2];
            for e in 0..2 {
                let (x, y) = (vals[0][h][e], vals[1][h][e]);
                let s = match p.op {
                    IntOp::Add => kb.b.ins().fadd(x, y),
                    IntOp::Sub => kb.b.ins().fsub(x, y),
                    IntOp::Mul => kb.b.ins().fmul(x, y),
                };
                let r = kb.b.ins().fmul(s, c);
                // Rounds half to even; the low 32 bits are then the rounded value.
                let r = kb.b.ins().fadd(r, magic);
                words[e] = kb.b.ins().bitcast(I64X2, le, r);
            }
            let even = kb.b.ins().band(words[0], low32);
            let odd = kb.b.ins().ishl_imm_u(words[1], 32);
            let w = kb.b.ins().bor(even, odd);
            let r = kb.b.ins().bitcast(I32X4, le, w);
            let r = kb.b.ins().iadd(r, zq);
            let r = kb.b.ins().smax(r, lo);
            halves[h] = kb.b.ins().smin(r, hi);
        }
        // The values are inside the 8-bit range, so the saturating narrows are exact.
        let v = kb.b.ins().snarrow(halves[0], halves[1]);
        let v = if p.out_signed {
            kb.b.ins().snarrow(v, v)
        } else {
            kb.b.ins().unarrow(v, v)
        };
        let v = kb.b.ins().bitcast(I64X2, le, v);
        let lo8 = kb.b.ins().extractlane(v, 0);
        let dst = kb.idx(out, i, 8);
        kb.store(lo8, dst, 0);
    });
}

/// The codes storage `st` can hold.
fn store_range(st: Store) -> Range {
    match st {
        Store::I8 => (-128, 127),
        Store::U8 => (0, 255),
        Store::I16 => (-32768, 32767),
        Store::U16 => (0, 65535),
        Store::I32 | Store::F32 => (i32::MIN as i128, i32::MAX as i128),
        Store::U32 => (0, u32::MAX as i128),
    }
}

pub(crate) fn emit(cx: &mut Ecx<'_, '_, '_, '_>, l: &IntLowering) {
    let out = cx.out;
    match l {
        IntLowering::Binary {
            op,
            bc,
            st_a,
            st_b,
            st_out,
            bits,
            signed,
        } => {
            let a = cx.operand(0);
            let b = cx.operand(1);
            let sts = [*st_a, *st_b, *st_out];
            nest(cx.kb, *op, bc, 0, [a, b, out], sts, (*bits, *signed));
        }
        IntLowering::FusedRequant {
            op,
            n,
            rq_a,
            rq_b,
            rq_out,
            bits,
            signed,
            st_a,
            st_b,
            st_out,
        } => {
            let a = cx.operand(0);
            let b = cx.operand(1);
            // With AVX-512 the vectorised form runs on zmm (`addzmm.rs`), with AVX2 on
            // ymm, 8 elements per step; the tail stays scalar.
            let plan = l.vec_plan();
            let width = l.add_width(cx.kb.feat.tier);
            let wide = match (&plan, width) {
                (Some(p), Some(w @ (AddWidth::Zmm | AddWidth::Ymm))) => {
                    let f = AsmFn::AddZmm(AddZmm {
                        op: match p.op {
                            IntOp::Add => AddOp::Add,
                            IntOp::Sub => AddOp::Sub,
                            IntOp::Mul => AddOp::Mul,
                        },
                        steps: (*n / 8) as u32,
                        signed: p.signed,
                        z: [p.z[0] - p.bias[0] as f64, p.z[1] - p.bias[1] as f64].map(f64::to_bits),
                        m: p.m.map(f64::to_bits),
                        c: p.c.to_bits(),
                        zq: p.zq as i32,
                        lo: p.lo as i32,
                        hi: p.hi as i32,
                        ymm: w == AddWidth::Ymm,
                    });
                    Some(cx.data.asm_func(cx.kb.b.func, &f))
                }
                _ => None,
            };
            let kb = &mut *cx.kb;
            let (ba, bb, bo) = (st_a.bytes(), st_b.bytes(), st_out.bytes());
            let scalar = |kb: &mut Kb<'_, '_>, i: Value| {
                let pa = kb.idx(a, i, ba as i64);
                let pb = kb.idx(b, i, bb as i64);
                let va = kb.load_i64(*st_a, pa, 0);
                let vb = kb.load_i64(*st_b, pb, 0);
                let (ra, ga) = requant_imm(kb, rq_a, va, store_range(*st_a));
                let (rb, gb) = requant_imm(kb, rq_b, vb, store_range(*st_b));
                let s = op.apply(kb, ra, rb);
                let (slo, shi) = op_range(*op, ga, gb);
                // The wrap is an identity when every result fits the intermediate type.
                let (tlo, thi) = int_range(*bits, *signed);
                let (s, range) = if slo >= tlo && shi <= thi {
                    (s, (slo, shi))
                } else {
                    (wrap(kb, s, *bits, *signed), (tlo, thi))
                };
                let (r, _) = requant_imm(kb, rq_out, s, range);
                let po = kb.idx(out, i, bo as i64);
                kb.store_int(*st_out, r, po, 0);
            };
            let nv = if plan.is_some() { *n / 8 } else { 0 };
            match (&plan, wide) {
                (Some(_), Some(f)) => {
                    kb.b.ins().call(f, &[a, b, out]);
                }
                (Some(p), None) => emit_vec_add(kb, p, nv, a, b, out),
                _ => {}
            }
            if nv * 8 < *n {
                kb.for_range((nv * 8) as i64, *n as i64, 1, scalar);
            }
        }
        IntLowering::Lookup {
            n,
            lo,
            st_x,
            st_out,
        } => {
            let x = cx.operand(0);
            let table = match (cx.const_of)(cx.node.operands[1]) {
                Some(ConstData::Int(v)) => v.clone(),
                _ => Vec::new(),
            };
            let mut bytes = Vec::new();
            st_out.encode_ints(&table, &mut bytes);
            let t = cx.rodata(bytes, 16);
            let kb = &mut *cx.kb;
            let (bx, bo) = (st_x.bytes() as i64, st_out.bytes() as i64);
            kb.for_range(0, *n as i64, 1, |kb, i| {
                let px = kb.idx(x, i, bx);
                let v = kb.load_i64(*st_x, px, 0);
                let j = kb.b.ins().iadd_imm_s(v, -*lo);
                let pt = kb.idx(t, j, bo);
                let y = kb.load_i64(*st_out, pt, 0);
                let po = kb.idx(out, i, bo);
                kb.store_int(*st_out, y, po, 0);
            });
        }
    }
}

/// The broadcast loop nest of a plain integer binary op over `[a, b, out]`.
fn nest(
    kb: &mut Kb<'_, '_>,
    op: IntOp,
    bc: &Broadcast,
    d: usize,
    p: [Value; 3],
    st: [Store; 3],
    wrap_to: (u32, bool),
) {
    let last = bc.dims.len() - 1;
    let inner: usize = bc.dims[d + 1..].iter().product();
    let strides = [
        (bc.sa[d] * st[0].bytes()) as i64,
        (bc.sb[d] * st[1].bytes()) as i64,
        (inner * st[2].bytes()) as i64,
    ];
    kb.for_range(0, bc.dims[d] as i64, 1, |kb, i| {
        let q = [
            kb.idx(p[0], i, strides[0]),
            kb.idx(p[1], i, strides[1]),
            kb.idx(p[2], i, strides[2]),
        ];
        if d < last {
            nest(kb, op, bc, d + 1, q, st, wrap_to);
        } else {
            let a = kb.load_i64(st[0], q[0], 0);
            let b = kb.load_i64(st[1], q[1], 0);
            let r = op.apply(kb, a, b);
            let r = wrap(kb, r, wrap_to.0, wrap_to.1);
            kb.store_int(st[2], r, q[2], 0);
        }
    });
}
