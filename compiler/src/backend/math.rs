//! Inline transcendental functions: generated objects need no libm.
//!
//! `exp` is Cephes' `expf` scheme: `x = n ln2 + r` with `n = round(x log2 e)` (rounded
//! with the 1.5 * 2^23 trick, so no `nearest` instruction, which would need SSE4.1 or a
//! libcall), `r` reduced with a two-part (Cody-Waite) ln 2, a degree-6 polynomial for
//! `e^r` on `|r| <= ln2/2`, and the scale by `2^n` applied as two exact powers of two
//! (so that results down to the subnormal range are right).
//!
//! **Error bound**: relative error below [`EXP_MAX_REL_ERROR`] (3e-7, about 2.5 ulp) for
//! `x` in [-87, 88.72] (measured against f64 `exp` by the `exp_error_bound` test over
//! 2 million points); below -87 the result is subnormal or zero with absolute error
//! below 1e-37; above 88.7228 (where f32 overflows) it is +inf; NaN stays NaN.
//! `sigmoid(x) = 1 / (1 + exp(-x))` inherits the bound (relative error below 6e-7).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, I32, I32X4};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value};

use super::kb::Kb;

/// The stated bound on exp's relative error (see the module docs).
pub const EXP_MAX_REL_ERROR: f64 = 3e-7;

const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];
const HI: f32 = 88.722_84;
const LO: f32 = -104.0;

/// Constants of exp, materialised once per kernel (Cranelift does not hoist them).
pub(crate) struct ExpConsts {
    ty: Type,
    hi: Value,
    lo: Value,
    magic: Value,
    log2e: Value,
    ln2_hi: Value,
    ln2_lo: Value,
    p: [Value; 6],
    one: Value,
    inf: Value,
    bias: Value,
}

impl ExpConsts {
    /// `ty` is F32 or F32X4.
    pub fn new(k: &mut Kb<'_, '_>, ty: Type) -> ExpConsts {
        let ity = if ty == F32 { I32 } else { I32X4 };
        ExpConsts {
            ty,
            hi: k.fconst(ty, HI),
            lo: k.fconst(ty, LO),
            magic: k.fconst(ty, MAGIC),
            log2e: k.fconst(ty, LOG2E),
            ln2_hi: k.fconst(ty, LN2_HI),
            ln2_lo: k.fconst(ty, LN2_LO),
            p: P.map(|c| k.fconst(ty, c)),
            one: k.fconst(ty, 1.0),
            inf: k.fconst(ty, f32::INFINITY),
            bias: k.iconst_t(ity, 0x4B40_0000),
        }
    }

    /// `e^x` for x of type F32 or F32X4.
    pub fn exp(&self, k: &mut Kb<'_, '_>, x: Value) -> Value {
        let ty = self.ty;
        let ity = if ty == F32 { I32 } else { I32X4 };
        let over = x;
        // Clamp (comparisons keep NaN: both tests are false for it).
        let x = k.fselect(ty, FloatCC::GreaterThan, x, self.hi, self.hi, x);
        let x = k.fselect(ty, FloatCC::LessThan, x, self.lo, self.lo, x);
        // n = round(x * log2e); the sum's low mantissa bits hold n + 0x400000.
        let t = k.b.ins().fmul(x, self.log2e);
        let tm = k.b.ins().fadd(t, self.magic);
        let n = k.b.ins().fsub(tm, self.magic);
        // r = x - n ln2 (two parts: exact first product).
        let r = k.b.ins().fmul(n, self.ln2_hi);
        let r = k.b.ins().fsub(x, r);
        let r2 = k.b.ins().fmul(n, self.ln2_lo);
        let r = k.b.ins().fsub(r, r2);
        // Polynomial.
        let mut p = self.p[0];
        for &c in &self.p[1..] {
            p = k.madd(p, r, c);
        }
        let rr = k.b.ins().fmul(r, r);
        let y = k.madd(p, rr, r);
        let y = k.b.ins().fadd(y, self.one);
        // 2^n as two factors 2^a and 2^(n - a), a = floor(n / 2), each a normal number.
        let bits = k.b.ins().bitcast(ity, MemFlagsData::new(), tm);
        let n = k.b.ins().isub(bits, self.bias); // the magic's bits are 0x4B400000 + n
        let a = k.sshr_k(n, 1);
        let b = k.b.ins().isub(n, a);
        let ea = k.iadd_k(a, 127);
        let eb = k.iadd_k(b, 127);
        let sa = k.ishl_k(ea, 23);
        let sb = k.ishl_k(eb, 23);
        let fa = k.b.ins().bitcast(ty, MemFlagsData::new(), sa);
        let fb = k.b.ins().bitcast(ty, MemFlagsData::new(), sb);
        let y = k.b.ins().fmul(y, fa);
        let y = k.b.ins().fmul(y, fb);
        // Overflow: +inf above the f32 range.
        k.fselect(ty, FloatCC::GreaterThan, over, self.hi, self.inf, y)
    }

    /// `1 / (1 + e^-x)`.
    pub fn sigmoid(&self, k: &mut Kb<'_, '_>, x: Value) -> Value {
        let nx = k.b.ins().fneg(x);
        let e = self.exp(k, nx);
        let d = k.b.ins().fadd(self.one, e);
        k.b.ins().fdiv(self.one, d)
    }
}

/// The same algorithm in Rust, step for step (used by the error-bound test, and as
/// the documentation of what the generated code computes).
pub fn exp_model(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x > HI {
        return f32::INFINITY;
    }
    let x = x.max(LO);
    let tm = x * LOG2E + MAGIC;
    let n = tm - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = P[0];
    for &c in &P[1..] {
        p = p * r + c;
    }
    let y = p * (r * r) + r + 1.0;
    let n = n as i32;
    let a = n >> 1;
    let b = n - a;
    y * f32::from_bits(((a + 127) as u32) << 23) * f32::from_bits(((b + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_error_bound() {
        let mut worst = 0f64;
        let n = 2_000_000;
        for i in 0..=n {
            let x = -87.0 + (88.72 + 87.0) * (i as f64 / n as f64);
            let x = x as f32;
            let want = (x as f64).exp();
            let got = exp_model(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < EXP_MAX_REL_ERROR, "worst relative error {worst}");
        assert_eq!(exp_model(100.0), f32::INFINITY);
        assert!(exp_model(-200.0).abs() < 1e-37);
        assert!(exp_model(f32::NAN).is_nan());
    }
}
