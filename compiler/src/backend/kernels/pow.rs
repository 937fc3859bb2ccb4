//! `pow(x, y)` on f32x4 lanes with broadcasting (the nest of [`super::nary`]), inline:
//! objects need no libm.
//!
//! `pow(x, y) = e^(y ln|x|)`, with `ln` Cephes' `logf` scheme (below) and `e^t` the
//! polynomial of `math.rs`, then IEEE `powf`'s special cases as selects: a negative
//! `x` with an odd integer `y` negates the result (odd: `y` integral and `y / 2` not),
//! a finite negative `x` with a non-integral `y` gives NaN, and `y == 0`, `x == 1` and
//! `x == -1` with an infinite `y` give 1 (even for NaN operands). Zeros and infinities
//! of `x` or `y` follow from `ln 0 = -inf`, `ln inf = inf` and `e^(+-inf) = inf, 0`.
//!
//! `ln a`: `a = m 2^e` with `m` in `[sqrt(1/2), sqrt 2)` read from the bits (subnormals
//! are first scaled by 2^23), `ln a = e ln2 + ln m` with `ln(1 + f)` for `f = m - 1` a
//! degree-8 polynomial `f - f^2/2 + f^3 P(f)` and `ln 2` in two parts. Its error is
//! below 2 ulp; `ln 1` is exactly 0.
//!
//! **Error bound**: the relative error of the result is that of `e^t` (3e-7) plus the
//! absolute error of `t = y ln|x|`, about `|t| * 3e-7`: below [`POW_MAX_REL_ERROR`]
//! (3e-5) wherever the result is a normal f32 (`|t| <= 88`), measured by the
//! `pow_error_bound` test against f64. Results that underflow to subnormals keep an
//! absolute error below 1e-37.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value};
use qcc_ir::Rounding;

use super::quantsim::RoundConsts;
use crate::backend::kb::Kb;
use crate::backend::math::{ExpConsts, LogConsts};

/// The stated bound on pow's relative error for normal results (see the module docs).
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "checked by the error-bound test")
)]
pub const POW_MAX_REL_ERROR: f64 = 3e-5;

/// Constants of log and pow for one type, made before the loops.
pub(crate) struct PowConsts {
    ty: Type,
    exp: ExpConsts,
    round: RoundConsts,
    log: LogConsts,
    zero: Value,
    one: Value,
    m1: Value,
    half: Value,
    inf: Value,
    ninf: Value,
    nan: Value,
}

impl PowConsts {
    pub fn new(kb: &mut Kb<'_, '_>, ty: Type) -> PowConsts {
        PowConsts {
            ty,
            exp: ExpConsts::new(kb, ty),
            round: RoundConsts::new(kb, ty),
            log: LogConsts::new(kb, ty),
            zero: kb.fconst(ty, 0.0),
            one: kb.fconst(ty, 1.0),
            m1: kb.fconst(ty, -1.0),
            half: kb.fconst(ty, 0.5),
            inf: kb.fconst(ty, f32::INFINITY),
            ninf: kb.fconst(ty, f32::NEG_INFINITY),
            nan: kb.fconst(ty, f32::NAN),
        }
    }

    /// `ln a` for `a >= 0` (or NaN).
    pub fn ln(&self, kb: &mut Kb<'_, '_>, a: Value) -> Value {
        self.log.ln(kb, a)
    }

    /// `powf(x, y)`.
    pub fn pow(&self, kb: &mut Kb<'_, '_>, x: Value, y: Value) -> Value {
        let ty = self.ty;
        let ax = kb.b.ins().fabs(x);
        let l = self.ln(kb, ax);
        let t = kb.b.ins().fmul(y, l);
        let r = self.exp.exp(kb, t);
        // Integral and odd y.
        let yi = self.round.round(kb, y, Rounding::HalfEven);
        let h = kb.b.ins().fmul(yi, self.half);
        let hi = self.round.round(kb, h, Rounding::HalfEven);
        let is_int = kb.b.ins().fcmp(FloatCC::Equal, yi, y);
        let is_odd_half = kb.b.ins().fcmp(FloatCC::NotEqual, hi, h);
        let odd = kb.b.ins().band(is_int, is_odd_half);
        // x's sign bit set (including -0 and -inf).
        let ity = if ty == F32 { I32 } else { I32X4 };
        let xb = kb.b.ins().bitcast(ity, MemFlagsData::new(), x);
        let zero_i = kb.iconst_t(ity, 0);
        // Scalar masks are i8 and vector masks i32x4 for both comparisons.
        let neg = kb.b.ins().icmp(IntCC::SignedLessThan, xb, zero_i);
        let odd_neg = kb.b.ins().band(odd, neg);
        let nr = kb.b.ins().fneg(r);
        let r = self.sel(kb, odd_neg, nr, r);
        // Finite negative x, non-integral y: NaN.
        let lt0 = kb.b.ins().fcmp(FloatCC::LessThan, x, self.zero);
        let fin = kb.b.ins().fcmp(FloatCC::GreaterThan, x, self.ninf);
        let not_int = kb.b.ins().fcmp(FloatCC::NotEqual, yi, y);
        let bad = kb.b.ins().band(lt0, fin);
        let bad = kb.b.ins().band(bad, not_int);
        let r = self.sel(kb, bad, self.nan, r);
        // Exact ones.
        let y0 = kb.b.ins().fcmp(FloatCC::Equal, y, self.zero);
        let x1 = kb.b.ins().fcmp(FloatCC::Equal, x, self.one);
        let xm1 = kb.b.ins().fcmp(FloatCC::Equal, x, self.m1);
        let ay = kb.b.ins().fabs(y);
        let yinf = kb.b.ins().fcmp(FloatCC::Equal, ay, self.inf);
        let m1inf = kb.b.ins().band(xm1, yinf);
        let ones = kb.b.ins().bor(y0, x1);
        let ones = kb.b.ins().bor(ones, m1inf);
        self.sel(kb, ones, self.one, r)
    }

    /// `mask ? a : b` for a float-comparison mask of this type.
    fn sel(&self, kb: &mut Kb<'_, '_>, mask: Value, a: Value, b: Value) -> Value {
        if self.ty == F32 {
            kb.b.ins().select(mask, a, b)
        } else {
            let m = kb.b.ins().bitcast(F32X4, MemFlagsData::new(), mask);
            kb.b.ins().bitselect(m, a, b)
        }
    }
}

/// Emits `pow` over the broadcast nest.
pub(crate) fn emit(cx: &mut super::Ecx<'_, '_, '_, '_>, nest: &super::nary::Nest) {
    let a = cx.operand(0);
    let b = cx.operand(1);
    let out = cx.out;
    let cv = PowConsts::new(cx.kb, F32X4);
    let cs = PowConsts::new(cx.kb, F32);
    let f = |kb: &mut Kb<'_, '_>, ty: Type, v: &[Value]| {
        let c = if ty == F32 { &cs } else { &cv };
        c.pow(kb, v[0], v[1])
    };
    super::nary::emit(cx.kb, nest, &[a, b], out, &f);
}

/// `pow` as the kernel computes it, for positive `x` (for the error test).
#[cfg(test)]
fn pow_model(x: f32, y: f32) -> f32 {
    crate::backend::math::exp_model(y * crate::backend::math::ln_model(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pow_error_bound() {
        let mut worst = 0f64;
        let n = 600;
        for i in 0..=n {
            let x = (2f64).powf(-60.0 + 120.0 * (i as f64 / n as f64)) as f32;
            for j in 0..=n {
                let y = (-40.0 + 80.0 * (j as f64 / n as f64)) as f32;
                let want = (x as f64).powf(y as f64);
                if !(1.2e-38..3.0e38).contains(&want) {
                    continue;
                }
                let got = pow_model(x, y) as f64;
                worst = worst.max(((got - want) / want).abs());
            }
        }
        assert!(worst < POW_MAX_REL_ERROR, "worst relative error {worst}");
    }
}
