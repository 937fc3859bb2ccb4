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

pub(crate) const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
pub(crate) const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];
pub(crate) const HI: f32 = 88.722_84;
pub(crate) const LO: f32 = -104.0;

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

/// `x | (sign bit of s)`: the sign of `s` put on a non-negative `x` (F32 or F32X4).
fn or_sign(k: &mut Kb<'_, '_>, ty: Type, x: Value, s: Value, sign: Value) -> Value {
    let ity = if ty == F32 { I32 } else { I32X4 };
    let xi = k.b.ins().bitcast(ity, MemFlagsData::new(), x);
    let si = k.b.ins().bitcast(ity, MemFlagsData::new(), s);
    let sb = k.b.ins().band(si, sign);
    let r = k.b.ins().bor(xi, sb);
    k.b.ins().bitcast(ty, MemFlagsData::new(), r)
}

const SQRTHF: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// Cephes `logf`'s polynomial: `ln(1 + f) = f - f^2/2 + f^3 P(f)` on
/// `sqrt(1/2) - 1 <= f < sqrt(2) - 1`.
const LOG_P: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_9e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_8e-1,
    2.000_071_4e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];
const TWO23: f32 = 8_388_608.0;

/// Constants of `ln` (Cephes' `logf` scheme; shared by the `log` op and `pow`): `a = m
/// 2^e` with `m` in `[sqrt(1/2), sqrt 2)` read from the bits (subnormals first scaled by
/// 2^23), `ln a = e ln2 + ln m` with `ln(1 + f)` for `f = m - 1` a degree-8 polynomial
/// `f - f^2/2 + f^3 P(f)` and `ln 2` in two parts, evaluated without FMA (the same
/// result on every target). Error below 2 ulp ([`ln_model`]'s test); `ln 1 = 0` exactly;
/// `ln(+-0) = -inf`, `ln(inf) = inf`, NaN below zero and for NaN.
pub(crate) struct LogConsts {
    ty: Type,
    sqrthf: Value,
    lp: [Value; 9],
    ln2_lo: Value,
    ln2_hi: Value,
    min_normal: Value,
    two23: Value,
    m23: Value,
    zero: Value,
    one: Value,
    half: Value,
    inf: Value,
    ninf: Value,
    nan: Value,
    mant: Value,
    half_bits: Value,
    bias: Value,
}

impl LogConsts {
    /// `ty` is F32 or F32X4.
    pub fn new(kb: &mut Kb<'_, '_>, ty: Type) -> LogConsts {
        let ity = if ty == F32 { I32 } else { I32X4 };
        LogConsts {
            ty,
            sqrthf: kb.fconst(ty, SQRTHF),
            lp: LOG_P.map(|c| kb.fconst(ty, c)),
            ln2_lo: kb.fconst(ty, LN2_LO),
            ln2_hi: kb.fconst(ty, LN2_HI),
            min_normal: kb.fconst(ty, f32::MIN_POSITIVE),
            two23: kb.fconst(ty, TWO23),
            m23: kb.fconst(ty, -23.0),
            zero: kb.fconst(ty, 0.0),
            one: kb.fconst(ty, 1.0),
            half: kb.fconst(ty, 0.5),
            inf: kb.fconst(ty, f32::INFINITY),
            ninf: kb.fconst(ty, f32::NEG_INFINITY),
            nan: kb.fconst(ty, f32::NAN),
            mant: kb.iconst_t(ity, 0x007f_ffff),
            half_bits: kb.iconst_t(ity, 0x3f00_0000),
            bias: kb.iconst_t(ity, 126),
        }
    }

    /// `ln a`.
    pub fn ln(&self, kb: &mut Kb<'_, '_>, a: Value) -> Value {
        let ty = self.ty;
        let ity = if ty == F32 { I32 } else { I32X4 };
        let f = MemFlagsData::new();
        let scaled = kb.b.ins().fmul(a, self.two23);
        let a2 = kb.fselect(ty, FloatCC::LessThan, a, self.min_normal, scaled, a);
        let eadj = kb.fselect(
            ty,
            FloatCC::LessThan,
            a,
            self.min_normal,
            self.m23,
            self.zero,
        );
        let bits = kb.b.ins().bitcast(ity, f, a2);
        let sh = kb.b.ins().iconst(I32, 23);
        let ei = kb.b.ins().ushr(bits, sh);
        let ei = kb.b.ins().isub(ei, self.bias);
        let mb = kb.b.ins().band(bits, self.mant);
        let mb = kb.b.ins().bor(mb, self.half_bits);
        let m = kb.b.ins().bitcast(ty, f, mb); // [0.5, 1)
        let e = kb.b.ins().fcvt_from_sint(ty, ei);
        let e = kb.b.ins().fadd(e, eadj);
        // m < sqrt(1/2): e -= 1, m = 2m - 1; else m = m - 1.
        let em1 = kb.b.ins().fsub(e, self.one);
        let e = kb.fselect(ty, FloatCC::LessThan, m, self.sqrthf, em1, e);
        let m2 = kb.b.ins().fadd(m, m);
        let mm = kb.fselect(ty, FloatCC::LessThan, m, self.sqrthf, m2, m);
        let x = kb.b.ins().fsub(mm, self.one);
        let z = kb.b.ins().fmul(x, x);
        let mut p = self.lp[0];
        for &c in &self.lp[1..] {
            let t = kb.b.ins().fmul(p, x);
            p = kb.b.ins().fadd(t, c);
        }
        let y = kb.b.ins().fmul(z, p);
        let y = kb.b.ins().fmul(x, y);
        let t = kb.b.ins().fmul(self.ln2_lo, e);
        let y = kb.b.ins().fadd(y, t);
        let t = kb.b.ins().fmul(self.half, z);
        let y = kb.b.ins().fsub(y, t);
        let r = kb.b.ins().fadd(x, y);
        let t = kb.b.ins().fmul(self.ln2_hi, e);
        let r = kb.b.ins().fadd(r, t);
        // Special values: ln(+-0) = -inf, ln inf = inf, NaN below zero, NaN stays NaN.
        let r = kb.fselect(ty, FloatCC::Equal, a, self.zero, self.ninf, r);
        let r = kb.fselect(ty, FloatCC::LessThan, a, self.zero, self.nan, r);
        let r = kb.fselect(ty, FloatCC::Equal, a, self.inf, self.inf, r);
        kb.fselect(ty, FloatCC::Unordered, a, a, a, r)
    }
}

/// The algorithm of [`LogConsts::ln`] in Rust, step for step (for the error test).
pub fn ln_model(a: f32) -> f32 {
    if a.is_nan() || a < 0.0 {
        return f32::NAN;
    }
    if a == 0.0 {
        return f32::NEG_INFINITY;
    }
    if a == f32::INFINITY {
        return a;
    }
    let (a2, eadj) = if a < f32::MIN_POSITIVE {
        (a * TWO23, -23.0)
    } else {
        (a, 0.0)
    };
    let bits = a2.to_bits();
    let mut e = ((bits >> 23) as i32 - 126) as f32 + eadj;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    let x = if m < SQRTHF {
        e -= 1.0;
        (m + m) - 1.0
    } else {
        m - 1.0
    };
    let z = x * x;
    let mut p = LOG_P[0];
    for &c in &LOG_P[1..] {
        p = p * x + c;
    }
    let mut y = x * (z * p);
    y += LN2_LO * e;
    y -= 0.5 * z;
    (x + y) + LN2_HI * e
}
/// Cephes `tanhf`'s odd polynomial below |x| = 0.625.
const TANH_P: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_909e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328e-1,
];

/// Constants of tanh (Cephes' `tanhf`): `x + x^3 P(x^2)` below |x| = 0.625, else
/// `1 - 2 / (e^(2|x|) + 1)` with [`ExpConsts::exp`], the sign put back; NaN stays NaN.
pub(crate) struct TanhConsts {
    ty: Type,
    exp: ExpConsts,
    split: Value,
    one: Value,
    two: Value,
    p: [Value; 5],
    sign: Value,
}

impl TanhConsts {
    pub fn new(k: &mut Kb<'_, '_>, ty: Type) -> TanhConsts {
        let ity = if ty == F32 { I32 } else { I32X4 };
        TanhConsts {
            ty,
            exp: ExpConsts::new(k, ty),
            split: k.fconst(ty, 0.625),
            one: k.fconst(ty, 1.0),
            two: k.fconst(ty, 2.0),
            p: TANH_P.map(|c| k.fconst(ty, c)),
            sign: k.iconst_t(ity, i32::MIN as i64),
        }
    }

    pub fn tanh(&self, k: &mut Kb<'_, '_>, x: Value) -> Value {
        let ty = self.ty;
        let a = k.b.ins().fabs(x);
        let a2 = k.b.ins().fadd(a, a);
        let e = self.exp.exp(k, a2);
        let d = k.b.ins().fadd(e, self.one);
        let q = k.b.ins().fdiv(self.two, d);
        let t = k.b.ins().fsub(self.one, q);
        let big = or_sign(k, ty, t, x, self.sign);
        let z = k.b.ins().fmul(x, x);
        let mut p = self.p[0];
        for &c in &self.p[1..] {
            p = k.madd(p, z, c);
        }
        let xz = k.b.ins().fmul(x, z);
        let s = k.madd(xz, p, x);
        k.fselect(ty, FloatCC::LessThan, a, self.split, s, big)
    }
}

/// `2/sqrt(pi) (-1)^n / (n! (2n + 1))`, n = 0..5: erf's Maclaurin series.
pub(crate) const ERF_S: [f32; 6] = [
    std::f32::consts::FRAC_2_SQRT_PI,
    -3.761_264e-1,
    1.128_379_2e-1,
    -2.686_617e-2,
    5.223_977_6e-3,
    -8.548_327e-4,
];
/// Abramowitz and Stegun 7.1.26: `1 - t (a1 + t (a2 + ...)) e^(-x^2)`, `t = 1/(1 + p x)`.
pub(crate) const ERF_P: f32 = 0.327_591_1;
pub(crate) const ERF_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_7,
    -1.453_152,
    1.061_405_4,
];

/// Constants of erf: its Maclaurin series to `x^11` below |x| = 0.5 (truncation under
/// 3e-8 relative), Abramowitz and Stegun 7.1.26 above (absolute error under 1.5e-7, so
/// under 3e-7 relative as erf(0.5) > 0.52), the sign put back; NaN stays NaN.
pub(crate) struct ErfConsts {
    ty: Type,
    exp: ExpConsts,
    split: Value,
    one: Value,
    p: Value,
    s: [Value; 6],
    a: [Value; 5],
    sign: Value,
}

impl ErfConsts {
    pub fn new(k: &mut Kb<'_, '_>, ty: Type) -> ErfConsts {
        let ity = if ty == F32 { I32 } else { I32X4 };
        ErfConsts {
            ty,
            exp: ExpConsts::new(k, ty),
            split: k.fconst(ty, 0.5),
            one: k.fconst(ty, 1.0),
            p: k.fconst(ty, ERF_P),
            s: ERF_S.map(|c| k.fconst(ty, c)),
            a: ERF_A.map(|c| k.fconst(ty, c)),
            sign: k.iconst_t(ity, i32::MIN as i64),
        }
    }

    pub fn erf(&self, k: &mut Kb<'_, '_>, x: Value) -> Value {
        let ty = self.ty;
        let a = k.b.ins().fabs(x);
        // Large: 1 - t P(t) e^(-a^2).
        let pa = k.madd(self.p, a, self.one);
        let t = k.b.ins().fdiv(self.one, pa);
        let mut q = self.a[4];
        for &c in self.a[..4].iter().rev() {
            q = k.madd(q, t, c);
        }
        let q = k.b.ins().fmul(q, t);
        let na2 = k.b.ins().fmul(a, a);
        let na2 = k.b.ins().fneg(na2);
        let e = self.exp.exp(k, na2);
        let qe = k.b.ins().fmul(q, e);
        let big = k.b.ins().fsub(self.one, qe);
        let big = or_sign(k, ty, big, x, self.sign);
        // Small: x S(x^2).
        let z = k.b.ins().fmul(x, x);
        let mut s = self.s[5];
        for &c in self.s[..5].iter().rev() {
            s = k.madd(s, z, c);
        }
        let small = k.b.ins().fmul(x, s);
        k.fselect(ty, FloatCC::LessThan, a, self.split, small, big)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_error_bound() {
        let mut worst = 0f64;
        let n = 1_000_000;
        for i in 0..=n {
            let x = (2f64).powf(-140.0 + 268.0 * (i as f64 / n as f64)) as f32;
            let want = (x as f64).ln();
            let got = ln_model(x) as f64;
            let ulp = (want.abs() as f32).max(f32::MIN_POSITIVE);
            let ulp = (f32::from_bits(ulp.to_bits() + 1) - ulp) as f64;
            worst = worst.max((got - want).abs() / ulp);
        }
        assert!(worst < 2.0, "worst error {worst} ulp");
        assert_eq!(ln_model(1.0), 0.0);
        assert!(ln_model(-1.0).is_nan());
    }

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
