//! `erf` on zmm with AVX-512 (and FMA), assembled with iced-x86: the same operations
//! as the 128-bit kernel (`math::ErfConsts::erf` with its `exp`, fused multiply-adds
//! where it uses them), in the same order, 16 lanes per step instead of 4, so the
//! results are the 128-bit kernel's bit for bit. Its ~30 constants would not fit the
//! 16 xmm registers and Cranelift reloads them in the loop; here the hot ones live in
//! zmm16..zmm31 and the others are embedded broadcasts from a table ([`table`]).

use iced_x86::IcedError;
use iced_x86::code_asm::*;

use crate::backend::math::{ERF_A, ERF_P, ERF_S, HI, LN2_HI, LN2_LO, LO, LOG2E, MAGIC, P};

/// One assembled kernel: `void erf(const f32 *x, f32 *out, const u32 *table)` over
/// `steps` x 16 elements.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ErfZmm {
    pub steps: u32,
}

// Word offsets in the table.
const T_HI: usize = 0;
const T_LO: usize = 1;
const T_MAGIC: usize = 2;
const T_LOG2E: usize = 3;
const T_LN2_HI: usize = 4;
const T_LN2_LO: usize = 5;
pub(crate) const T_P: usize = 6; // 6 words
pub(crate) const T_ONE: usize = 12;
const T_INF: usize = 13;
const T_BIAS: usize = 14;
const T_127: usize = 15;
const T_SPLIT: usize = 16;
const T_ERF_P: usize = 17;
const T_S: usize = 18; // 6 words
const T_A: usize = 24; // 5 words
const T_SIGN: usize = 29;
const T_ABS: usize = 30;
pub(crate) const T_NINF: usize = 31;
const WORDS: usize = 32;

/// The constants the kernel reads (a 4-byte word each, little-endian).
pub(crate) fn table() -> Vec<u8> {
    let mut w = [0u32; WORDS];
    w[T_HI] = HI.to_bits();
    w[T_LO] = LO.to_bits();
    w[T_MAGIC] = MAGIC.to_bits();
    w[T_LOG2E] = LOG2E.to_bits();
    w[T_LN2_HI] = LN2_HI.to_bits();
    w[T_LN2_LO] = LN2_LO.to_bits();
    for (i, c) in P.iter().enumerate() {
        w[T_P + i] = c.to_bits();
    }
    w[T_ONE] = 1f32.to_bits();
    w[T_INF] = f32::INFINITY.to_bits();
    w[T_BIAS] = 0x4B40_0000;
    w[T_127] = 127;
    w[T_SPLIT] = 0.5f32.to_bits();
    w[T_ERF_P] = ERF_P.to_bits();
    for (i, c) in ERF_S.iter().enumerate() {
        w[T_S + i] = c.to_bits();
    }
    for (i, c) in ERF_A.iter().enumerate() {
        w[T_A + i] = c.to_bits();
    }
    w[T_SIGN] = 0x8000_0000;
    w[T_ABS] = 0x7FFF_FFFF;
    w[T_NINF] = f32::NEG_INFINITY.to_bits();
    w.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `vcmpps` predicates: less than, greater than (ordered: false for NaN, as
/// Cranelift's `fcmp lt` / `gt`).
const LT: u32 = 1;
const GT: u32 = 0x0E;

impl ErfZmm {
    pub fn symbol(&self) -> String {
        format!("erf_zmm_n{}", self.steps)
    }

    pub fn assemble(&self) -> Result<Vec<u8>, IcedError> {
        let mut a = crate::backend::asm::assembler(true)?;
        let c = |w: usize| dword_bcst(rdx + (4 * w) as i32);
        let m = |w: usize| dword_ptr(rdx + (4 * w) as i32);
        // Registers holding constants.
        let one = zmm16;
        let p = [zmm17, zmm18, zmm19, zmm20, zmm21, zmm22];
        let s = [zmm23, zmm24, zmm25, zmm26, zmm27, zmm28];
        let (erf_p, sign, abs) = (zmm29, zmm30, zmm31);
        a.vbroadcastss(one, m(T_ONE))?;
        for (i, &r) in p.iter().enumerate() {
            a.vbroadcastss(r, m(T_P + i))?;
        }
        for (i, &r) in s.iter().enumerate() {
            a.vbroadcastss(r, m(T_S + i))?;
        }
        a.vbroadcastss(erf_p, m(T_ERF_P))?;
        a.vbroadcastss(sign, m(T_SIGN))?;
        a.vbroadcastss(abs, m(T_ABS))?;
        let mut top = a.create_label();
        a.mov(ecx, self.steps)?;
        a.set_label(&mut top)?;
        let x = zmm0;
        a.vmovups(x, zmmword_ptr(rdi))?;
        // a = |x|; t = 1 / (p a + 1); q = t A(t).
        let abs_x = zmm1;
        a.vpandd(abs_x, x, abs)?;
        a.vmovaps(zmm2, erf_p)?;
        a.vfmadd213ps(zmm2, abs_x, one)?;
        a.vdivps(zmm3, one, zmm2)?;
        let q = zmm4;
        a.vbroadcastss(q, m(T_A + 4))?;
        for i in (0..4).rev() {
            a.vfmadd213ps(q, zmm3, c(T_A + i))?;
        }
        a.vmulps(q, q, zmm3)?;
        // e = exp(-(a * a)).
        let na2 = zmm5;
        a.vmulps(na2, abs_x, abs_x)?;
        a.vpxord(na2, na2, sign)?;
        let e = exp(&mut a, na2, &p, one)?;
        // big = (1 - q e) with the sign of x.
        a.vmulps(q, q, e)?;
        a.vsubps(q, one, q)?;
        a.vpandd(zmm7, x, sign)?;
        a.vpord(q, q, zmm7)?;
        // small = x S(x^2).
        let (z, sm) = (zmm8, zmm9);
        a.vmulps(z, x, x)?;
        a.vmovaps(sm, s[5])?;
        for i in (0..5).rev() {
            a.vfmadd213ps(sm, z, s[i])?;
        }
        a.vmulps(sm, x, sm)?;
        a.vcmpps(k1, abs_x, c(T_SPLIT), LT)?;
        a.vmovaps(q.k1(), sm)?;
        a.vmovups(zmmword_ptr(rsi), q)?;
        a.add(rdi, 64)?;
        a.add(rsi, 64)?;
        a.sub(ecx, 1)?;
        a.jnz(top)?;
        a.vzeroupper()?;
        a.ret()?;
        a.assemble(0)
    }
}

/// `math::ExpConsts::exp` of `xin` into zmm11 (temporaries zmm7..zmm12, k2 and k3;
/// `xin` kept), the constants `p` (`math::P`) and `one` in registers and the others
/// read from [`table`] at `rdx`.
pub(crate) fn exp(
    a: &mut CodeAssembler,
    xin: AsmRegisterZmm,
    p: &[AsmRegisterZmm; 6],
    one: AsmRegisterZmm,
) -> Result<AsmRegisterZmm, IcedError> {
    let c = |w: usize| dword_bcst(rdx + (4 * w) as i32);
    let m = |w: usize| dword_ptr(rdx + (4 * w) as i32);
    let x = zmm7;
    a.vmovaps(x, xin)?;
    a.vcmpps(k2, x, c(T_HI), GT)?;
    a.vbroadcastss(x.k2(), m(T_HI))?;
    a.vcmpps(k3, x, c(T_LO), LT)?;
    a.vbroadcastss(x.k3(), m(T_LO))?;
    let (tm, n, r, r2) = (zmm8, zmm9, zmm10, zmm12);
    a.vmulps(tm, x, c(T_LOG2E))?;
    a.vaddps(tm, tm, c(T_MAGIC))?;
    a.vsubps(n, tm, c(T_MAGIC))?;
    a.vmulps(r, n, c(T_LN2_HI))?;
    a.vsubps(r, x, r)?;
    a.vmulps(r2, n, c(T_LN2_LO))?;
    a.vsubps(r, r, r2)?;
    let y = zmm11;
    a.vmovaps(y, p[0])?;
    for &pc in &p[1..] {
        a.vfmadd213ps(y, r, pc)?;
    }
    a.vmulps(r2, r, r)?;
    a.vfmadd213ps(y, r2, r)?;
    a.vaddps(y, y, one)?;
    // 2^n as 2^a 2^(n - a), a = n >> 1, from the bits of tm.
    let (ea, eb) = (zmm10, zmm9);
    a.vpsubd(eb, tm, c(T_BIAS))?;
    a.vpsrad(ea, eb, 1)?;
    a.vpsubd(eb, eb, ea)?;
    a.vpaddd(ea, ea, c(T_127))?;
    a.vpslld(ea, ea, 23)?;
    a.vpaddd(eb, eb, c(T_127))?;
    a.vpslld(eb, eb, 23)?;
    a.vmulps(y, y, ea)?;
    a.vmulps(y, y, eb)?;
    a.vcmpps(k2, xin, c(T_HI), GT)?;
    a.vbroadcastss(y.k2(), m(T_INF))?;
    Ok(y)
}
