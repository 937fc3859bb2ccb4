//! Quantization simulated in f32 (`fake_quant`, `trunc`) and element type conversion
//! (`cast`), bit-exact with the interpreter.
//!
//! **Rounding** ([`RoundConsts::round`]) implements every [`Rounding`] mode on f32 or
//! f32x4 lanes without SSE4.1 `round` or a libcall: `r = RNE(|y|)` by adding and
//! subtracting 2^23 (exact for `|y| < 2^23`; larger floats are already integers), the
//! sign put back with a bit operation; floor/ceil correct `r` by one where it lies on
//! the wrong side of `y`; the half-way modes detect a tie as `|y - r| == 0.5`, which is
//! exact (`y - r` is computed without rounding: Sterbenz' lemma, or `r = 0`); finally
//! `y`'s sign bit is copied onto the result, so that zeros carry the sign the
//! interpreter's `f32::round`/`floor`/`trunc` give them. NaN stays NaN.
//!
//! - `fake_quant` (QONNX Quant): `y = x / s + z`, clamp to the grid (keeping NaN),
//!   round, `(y - z) * s`, or the bipolar `y >= 0 ? 1 : -1` at 1 signed bit; the same
//!   f32 operations in the same order as the interpreter, so results are bit-exact.
//! - `trunc` (QONNX Trunc): v1 divides by the constant `t = 2^(in_bits - out_bits)`;
//!   v2 needs constant `scale` and `out_scale`: `t = 2^RNE(log2(out_scale / scale))`
//!   is evaluated at compile time with the interpreter's own expression (a constant
//!   operand broadcast like the others), so the kernel is bit-exact too.
//! - `cast`: f32 -> integer rounds by the named mode, converts with saturation (NaN
//!   becomes 0) and clamps to the type's code range, as the interpreter's
//!   `round as i64` then `clamp` (f32x4 lanes for storages of at most 16 bits, exact
//!   i64 scalars for 32-bit storages); integer -> f32 converts the exact i64 code with
//!   round-to-nearest; integer -> integer wraps the code to the result's storage width
//!   (two's complement). A cast to `b1` from anything but `b1` would need a run-time
//!   check of every code, so it is not lowered.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4, I64};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value};
use qcc_ir::shape::broadcasts_to;
use qcc_ir::{Attrs, ElemType, Module, Node, Op, Rounding};

use super::nary::{self, Nest};
use super::{ConstOf, Ecx, f32_data};
use crate::backend::kb::Kb;
use crate::backend::storage::Store;

/// Rounding constants for one type (F32 or F32X4), made before the loops.
pub(crate) struct RoundConsts {
    ty: Type,
    two23: Value,
    one: Value,
    half: Value,
    zero: Value,
    sign: Value,
    mag: Value,
}

impl RoundConsts {
    pub fn new(kb: &mut Kb<'_, '_>, ty: Type) -> RoundConsts {
        let ity = int_ty(ty);
        RoundConsts {
            ty,
            two23: kb.fconst(ty, 8_388_608.0),
            one: kb.fconst(ty, 1.0),
            half: kb.fconst(ty, 0.5),
            zero: kb.fconst(ty, 0.0),
            sign: kb.iconst_t(ity, 0x8000_0000u32 as i32 as i64),
            mag: kb.iconst_t(ity, 0x7fff_ffff),
        }
    }

    /// `(mag bits of a) | (sign bit of s)`.
    fn with_sign_of(&self, kb: &mut Kb<'_, '_>, a: Value, s: Value) -> Value {
        let ity = int_ty(self.ty);
        let f = MemFlagsData::new();
        let ai = kb.b.ins().bitcast(ity, f, a);
        let si = kb.b.ins().bitcast(ity, f, s);
        let am = kb.b.ins().band(ai, self.mag);
        let sm = kb.b.ins().band(si, self.sign);
        let r = kb.b.ins().bor(am, sm);
        kb.b.ins().bitcast(self.ty, f, r)
    }

    /// `rounding(y)` exactly as [`Rounding::round_f32`].
    pub fn round(&self, kb: &mut Kb<'_, '_>, y: Value, rounding: Rounding) -> Value {
        let ty = self.ty;
        let a = kb.b.ins().fabs(y);
        let t = kb.b.ins().fadd(a, self.two23);
        let t = kb.b.ins().fsub(t, self.two23);
        let ra = kb.fselect(ty, FloatCC::LessThan, a, self.two23, t, a);
        let r = self.with_sign_of(kb, ra, y); // nearest, ties to even
        let one = self.one;
        let res = match rounding {
            Rounding::HalfEven => r,
            Rounding::Floor | Rounding::Ceil | Rounding::Down | Rounding::Up => {
                let rm1 = kb.b.ins().fsub(r, one);
                let fl = kb.fselect(ty, FloatCC::GreaterThan, r, y, rm1, r);
                let rp1 = kb.b.ins().fadd(r, one);
                let ce = kb.fselect(ty, FloatCC::LessThan, r, y, rp1, r);
                match rounding {
                    Rounding::Floor => fl,
                    Rounding::Ceil => ce,
                    Rounding::Down => {
                        kb.fselect(ty, FloatCC::GreaterThanOrEqual, y, self.zero, fl, ce)
                    }
                    _ => kb.fselect(ty, FloatCC::GreaterThanOrEqual, y, self.zero, ce, fl),
                }
            }
            Rounding::HalfUp | Rounding::HalfDown => {
                // y - r is exact; a tie is |y - r| == 0.5.
                let e = kb.b.ins().fsub(y, r);
                let ae = kb.b.ins().fabs(e);
                let up = kb.b.ins().fadd(y, self.half);
                let down = kb.b.ins().fsub(y, self.half);
                let tie = if rounding == Rounding::HalfUp {
                    kb.fselect(ty, FloatCC::GreaterThan, y, self.zero, up, down)
                } else {
                    kb.fselect(ty, FloatCC::GreaterThan, y, self.zero, down, up)
                };
                kb.fselect(ty, FloatCC::Equal, ae, self.half, tie, r)
            }
        };
        self.with_sign_of(kb, res, y)
    }
}

fn int_ty(ty: Type) -> Type {
    if ty == F32 { I32 } else { I32X4 }
}

/// `[min, max]` of a `bits`-wide grid as f32 (the interpreter's `grid`).
fn grid(bits: i64, signed: bool, narrow: bool) -> Result<(f32, f32), String> {
    if !(1..=32).contains(&bits) {
        return Err(format!("bit-width {bits} is outside 1..=32"));
    }
    let b = bits as i32;
    let (lo, hi) = if signed {
        let h = 2f64.powi(b - 1);
        (-h + if narrow { 1.0 } else { 0.0 }, h - 1.0)
    } else {
        (0.0, 2f64.powi(b) - 1.0 - if narrow { 1.0 } else { 0.0 })
    };
    Ok((lo as f32, hi as f32))
}

/// A `fake_quant` or `trunc` kernel.
#[derive(Clone, Debug)]
pub(crate) enum SimLowering {
    FakeQuant {
        nest: Nest,
        rounding: Rounding,
        /// Grid bounds, or None for the bipolar 1-bit grid.
        grid: Option<(f32, f32)>,
    },
    /// v1: `t` is a constant; v2: `t` is operand 4 (a constant computed here).
    Trunc {
        nest: Nest,
        rounding: Rounding,
        t: f32,
        v2: Option<V2>,
    },
}

/// Trunc v2: the grid and the per-element `t` (shape `shape`).
#[derive(Clone, Debug)]
pub(crate) struct V2 {
    pub lo: f32,
    pub hi: f32,
    pub t: Vec<f32>,
}

fn check_bc(m: &Module, node: &Node, i: usize) -> Result<(), String> {
    let s = &m.ty(node.operands[i]).shape;
    let x = &m.ty(node.operands[0]).shape;
    if !broadcasts_to(s, x) {
        return Err(format!(
            "operand {i} of shape {s:?} does not broadcast to {x:?}"
        ));
    }
    Ok(())
}

pub(crate) fn select_sim(
    m: &Module,
    node: &Node,
    const_of: &ConstOf<'_>,
) -> Result<SimLowering, String> {
    let a = Attrs::new(node.op, &node.attrs);
    if !node.operands.iter().all(|&o| m.ty(o).elem.is_float()) {
        return Err(format!("{} needs f32 operands", node.op));
    }
    for i in 1..node.operands.len() {
        check_bc(m, node, i)?;
    }
    let xs = m.ty(node.operands[0]).shape.clone();
    let shapes: Vec<Vec<usize>> = node
        .operands
        .iter()
        .map(|&o| m.ty(o).shape.clone())
        .collect();
    let rounding = a.rounding("rounding")?;
    if node.op == Op::FakeQuant {
        let bits = a.int("bits")?;
        let signed = a.bool("signed")?;
        let g = grid(bits, signed, a.bool("narrow")?)?;
        let refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
        return Ok(SimLowering::FakeQuant {
            nest: Nest::new(&xs, &refs),
            rounding,
            grid: (!(bits == 1 && signed)).then_some(g),
        });
    }
    let in_bits = a.int("in_bits")?;
    let out_bits = a.int("out_bits")?;
    if !(1..=64).contains(&in_bits) || !(1..=64).contains(&out_bits) {
        return Err(format!(
            "bit-widths {in_bits} -> {out_bits} are outside 1..=64"
        ));
    }
    if node.operands.len() < 4 {
        let refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
        return Ok(SimLowering::Trunc {
            nest: Nest::new(&xs, &refs),
            rounding,
            t: 2f32.powi((in_bits - out_bits) as i32),
            v2: None,
        });
    }
    let (lo, hi) = grid(out_bits, a.bool("signed")?, a.bool("narrow")?)?;
    let s = const_of(node.operands[1]).and_then(f32_data);
    let os = const_of(node.operands[3]).and_then(f32_data);
    let (Some(s), Some(os)) = (s, os) else {
        return Err(
            "trunc with out_scale (v2) needs constant scale and out_scale (t = \
             2^round(log2(out_scale / scale)) is computed at compile time)"
                .into(),
        );
    };
    // t over the broadcast of scale's and out_scale's shapes.
    let ts = qcc_ir::shape::broadcast(&shapes[1], &shapes[3])?;
    let is = qcc_ir::shape::broadcast_indices(&shapes[1], &ts);
    let ios = qcc_ir::shape::broadcast_indices(&shapes[3], &ts);
    let t: Vec<f32> = is
        .iter()
        .zip(&ios)
        .map(|(&i, &j)| (os[j] / s[i]).log2().round_ties_even().exp2())
        .collect();
    let mut refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
    refs.push(&ts);
    Ok(SimLowering::Trunc {
        nest: Nest::new(&xs, &refs),
        rounding,
        t: 1.0,
        v2: Some(V2 { lo, hi, t }),
    })
}

impl SimLowering {
    pub fn kernel_name(&self) -> String {
        match self {
            SimLowering::FakeQuant { rounding, .. } => format!("fake_quant.{rounding}.f32x4"),
            SimLowering::Trunc { rounding, v2, .. } => format!(
                "trunc{}.{rounding}.f32x4",
                if v2.is_some() { "_v2" } else { "" }
            ),
        }
    }
}

/// Per-type constants of the sim kernels.
struct SimConsts {
    r: RoundConsts,
    lo: Value,
    hi: Value,
    t: Value,
    one: Value,
    zero: Value,
}

impl SimConsts {
    fn new(kb: &mut Kb<'_, '_>, ty: Type, lo: f32, hi: f32, t: f32) -> SimConsts {
        SimConsts {
            r: RoundConsts::new(kb, ty),
            lo: kb.fconst(ty, lo),
            hi: kb.fconst(ty, hi),
            t: kb.fconst(ty, t),
            one: kb.fconst(ty, 1.0),
            zero: kb.fconst(ty, 0.0),
        }
    }

    /// `y > hi ? hi : y < lo ? lo : y` (NaN stays NaN).
    fn clamp(&self, kb: &mut Kb<'_, '_>, ty: Type, y: Value) -> Value {
        let y1 = kb.fselect(ty, FloatCC::LessThan, y, self.lo, self.lo, y);
        kb.fselect(ty, FloatCC::GreaterThan, y, self.hi, self.hi, y1)
    }
}

pub(crate) fn emit_sim(cx: &mut Ecx<'_, '_, '_, '_>, q: &SimLowering) {
    let mut ops: Vec<Value> = (0..cx.node.operands.len()).map(|i| cx.operand(i)).collect();
    let out = cx.out;
    match q {
        SimLowering::FakeQuant {
            nest,
            rounding,
            grid,
        } => {
            let (lo, hi) = grid.unwrap_or((-1.0, 1.0));
            let cv = SimConsts::new(cx.kb, F32X4, lo, hi, 1.0);
            let cs = SimConsts::new(cx.kb, F32, lo, hi, 1.0);
            let bipolar = grid.is_none();
            let f = |kb: &mut Kb<'_, '_>, ty: Type, v: &[Value]| {
                let c = if ty == F32 { &cs } else { &cv };
                let (x, s, z) = (v[0], v[1], v[2]);
                let y = kb.b.ins().fdiv(x, s);
                let y = kb.b.ins().fadd(y, z);
                let y = if bipolar {
                    let m1 = kb.b.ins().fneg(c.one);
                    kb.fselect(ty, FloatCC::GreaterThanOrEqual, y, c.zero, c.one, m1)
                } else {
                    let y = c.clamp(kb, ty, y);
                    c.r.round(kb, y, *rounding)
                };
                let y = kb.b.ins().fsub(y, z);
                kb.b.ins().fmul(y, s)
            };
            nary::emit(cx.kb, nest, &ops, out, &f);
        }
        SimLowering::Trunc {
            nest,
            rounding,
            t,
            v2,
        } => {
            let (lo, hi) = v2.as_ref().map_or((0.0, 0.0), |v| (v.lo, v.hi));
            if let Some(v) = v2 {
                let tp = cx.rodata_f32(&v.t);
                ops.push(tp);
            }
            let cv = SimConsts::new(cx.kb, F32X4, lo, hi, *t);
            let cs = SimConsts::new(cx.kb, F32, lo, hi, *t);
            let is_v2 = v2.is_some();
            let f = |kb: &mut Kb<'_, '_>, ty: Type, v: &[Value]| {
                let c = if ty == F32 { &cs } else { &cv };
                let (x, s, z) = (v[0], v[1], v[2]);
                let y = kb.b.ins().fdiv(x, s);
                let y = kb.b.ins().fadd(y, z);
                let y = c.r.round(kb, y, Rounding::HalfEven);
                if is_v2 {
                    let (os, t) = (v[3], v[4]);
                    let y = kb.b.ins().fdiv(y, t);
                    let y = c.clamp(kb, ty, y);
                    let y = c.r.round(kb, y, *rounding);
                    let zt = kb.b.ins().fdiv(z, t);
                    let y = kb.b.ins().fsub(y, zt);
                    kb.b.ins().fmul(y, os)
                } else {
                    let y = kb.b.ins().fdiv(y, c.t);
                    let y = c.r.round(kb, y, *rounding);
                    let y = kb.b.ins().fsub(y, z);
                    kb.b.ins().fmul(y, s)
                }
            };
            nary::emit(cx.kb, nest, &ops, out, &f);
        }
    }
}

// ---------------------------------------------------------------------------------
// cast

/// A cast that changes the bytes.
#[derive(Clone, Debug)]
pub(crate) enum CastLowering {
    /// f32 -> integer-valued: round, saturate, clamp to `[lo, hi]`.
    FromF32 {
        n: usize,
        rounding: Rounding,
        lo: i64,
        hi: i64,
        st: Store,
    },
    /// integer-valued -> f32.
    ToF32 { n: usize, st: Store },
    /// integer-valued -> integer-valued: wrap to `bits` (signed or not).
    Wrap {
        n: usize,
        st_in: Store,
        st_out: Store,
        bits: u8,
        signed: bool,
    },
}

/// The cast of `node` (not a relabel, which is a copy).
pub(crate) fn select_cast(m: &Module, node: &Node) -> Result<CastLowering, String> {
    let from = &m.ty(node.operands[0]).elem;
    let to = &m.ty(node.result).elem;
    let n = m.ty(node.result).numel();
    let a = Attrs::new(node.op, &node.attrs);
    match (from, to) {
        (ElemType::F32, ElemType::Bipolar) => {
            Err("f32 cannot be cast to b1 (binarize maps f32 to +-1)".into())
        }
        (ElemType::F32, ElemType::F32) => Err("a cast from f32 to f32 is a copy".into()),
        (ElemType::F32, _) => {
            let (lo, hi) = match to.code_range() {
                Some((lo, hi)) if lo <= hi => (lo, hi),
                _ => return Err(format!("{to} has no range of codes")),
            };
            Ok(CastLowering::FromF32 {
                n,
                rounding: a.rounding("rounding")?,
                lo,
                hi,
                st: Store::of(to),
            })
        }
        (_, ElemType::F32) => Ok(CastLowering::ToF32 {
            n,
            st: Store::of(from),
        }),
        (_, ElemType::Bipolar) => Err(format!(
            "cast from {from} to b1 is not lowered (every code would need a run-time \
             check that it is +1 or -1)"
        )),
        (_, _) => {
            let st = to.storage().ok_or_else(|| format!("{to} has no storage"))?;
            Ok(CastLowering::Wrap {
                n,
                st_in: Store::of(from),
                st_out: Store::of(to),
                bits: st.bits,
                signed: st.signed,
            })
        }
    }
}

impl CastLowering {
    pub fn kernel_name(&self) -> String {
        match self {
            CastLowering::FromF32 { st, rounding, .. } => {
                format!("cast.f32x4->{}.{rounding}", st.name())
            }
            CastLowering::ToF32 { st, .. } => format!("cast.{}->f32", st.name()),
            CastLowering::Wrap { st_in, st_out, .. } => {
                format!("cast.wrap.{}->{}", st_in.name(), st_out.name())
            }
        }
    }
}

pub(crate) fn emit_cast(cx: &mut Ecx<'_, '_, '_, '_>, c: &CastLowering) {
    let x = cx.operand(0);
    let out = cx.out;
    let kb = &mut *cx.kb;
    match *c {
        CastLowering::FromF32 {
            n,
            rounding,
            lo,
            hi,
            st,
        } => {
            let rs = RoundConsts::new(kb, F32);
            let (los, his) = (kb.c(lo), kb.c(hi));
            let ob = st.bytes() as i64;
            let scalar = |kb: &mut Kb<'_, '_>, xp: Value, op: Value| {
                let v = kb.load(F32, xp, 0);
                let r = rs.round(kb, v, rounding);
                let c = kb.b.ins().fcvt_to_sint_sat(I64, r); // NaN -> 0
                let c = kb.b.ins().smax(c, los);
                let c = kb.b.ins().smin(c, his);
                kb.store_int(st, c, op, 0);
            };
            let nv = if st.bytes() <= 2 { n / 4 } else { 0 };
            if nv > 0 {
                let rv = RoundConsts::new(kb, F32X4);
                let lov = kb.iconst_t(I32X4, lo);
                let hiv = kb.iconst_t(I32X4, hi);
                kb.for_range(0, nv as i64, 1, |kb, i| {
                    let xp = kb.idx(x, i, 16);
                    let op = kb.idx(out, i, 4 * ob);
                    let v = kb.load(F32X4, xp, 0);
                    let r = rv.round(kb, v, rounding);
                    // Saturates at the i32 range (beyond any <= 16-bit range), NaN -> 0.
                    let c = kb.b.ins().fcvt_to_sint_sat(I32X4, r);
                    let c = kb.b.ins().smax(c, lov);
                    let c = kb.b.ins().smin(c, hiv);
                    for l in 0..4u8 {
                        let e = kb.b.ins().extractlane(c, l);
                        kb.store_int(st, e, op, l as i64 * ob);
                    }
                });
            }
            // The tail (at most 3 elements), or every element of a 32-bit storage.
            let first = (nv * 4) as i64;
            let xt = kb.off(x, first * 4);
            let ot = kb.off(out, first * ob);
            kb.for_range(0, n as i64 - first, 1, |kb, e| {
                let xp = kb.idx(xt, e, 4);
                let op = kb.idx(ot, e, ob);
                scalar(kb, xp, op);
            });
        }
        CastLowering::ToF32 { n, st } => {
            let ib = st.bytes() as i64;
            kb.for_range(0, n as i64, 1, |kb, i| {
                let xp = kb.idx(x, i, ib);
                let op = kb.idx(out, i, 4);
                let c = kb.load_i64(st, xp, 0);
                let f = kb.b.ins().fcvt_from_sint(F32, c);
                kb.store(f, op, 0);
            });
        }
        CastLowering::Wrap {
            n,
            st_in,
            st_out,
            bits,
            signed,
        } => {
            let (ib, ob) = (st_in.bytes() as i64, st_out.bytes() as i64);
            kb.for_range(0, n as i64, 1, |kb, i| {
                let xp = kb.idx(x, i, ib);
                let op = kb.idx(out, i, ob);
                let c = kb.load_i64(st_in, xp, 0);
                let w = wrap(kb, c, bits, signed);
                kb.store_int(st_out, w, op, 0);
            });
        }
    }
}

/// Wraps an i64 code to `bits` (two's complement), sign- or zero-extending it back.
pub(crate) fn wrap(kb: &mut Kb<'_, '_>, c: Value, bits: u8, signed: bool) -> Value {
    if bits >= 64 {
        return c;
    }
    let sh = 64 - bits as i64;
    let hi = kb.ishl_k(c, sh);
    if signed {
        kb.sshr_k(hi, sh)
    } else {
        let a = kb.b.ins().iconst(I32, sh);
        kb.b.ins().ushr(hi, a)
    }
}
