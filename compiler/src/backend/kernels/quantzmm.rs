//! `quantize` (f32 to 8- or 16-bit codes) on zmm with AVX-512, assembled with
//! iced-x86: 16 elements per step, one function per step count, output width and
//! rounding mode, called once per channel run with a pointer to the run's (scale, zero
//! point); Cranelift's 128-bit loop finishes each run's tail.
//!
//! Per 16 elements: `vdivps` by the scale (the interpreter's f32 division, so the same
//! quotient), NaN lanes zeroed (`vcmpps` ordered into a mask, `vrndscaleps` with zero
//! masking), `vrndscaleps` rounding (nearest-even, floor, ceil or toward zero: the
//! modes it has; the others keep the 128-bit kernel), the clamp to `[lo - zp, hi -
//! zp]` in f32 (integers, exact), `vcvtps2dq` (exact on integral values), plus the zero
//! point, and a truncating `vpmovdb` / `vpmovdw` store (the values are inside the
//! range). A NaN gives `clamp(zp)`, as in the interpreter: 0 clamped to `[lo - zp, hi -
//! zp]`, plus `zp`.

use iced_x86::IcedError;
use iced_x86::code_asm::*;
use qcc_ir::Rounding;

/// One assembled kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct QuantZmm {
    /// Steps of 16 elements.
    pub steps: u32,
    /// `vrndscaleps` mode: 0 nearest-even, 1 floor, 2 ceil, 3 toward zero.
    pub mode: u8,
    /// Output element bytes (1 or 2).
    pub elem: u8,
    pub lo: i32,
    pub hi: i32,
}

impl QuantZmm {
    /// The `vrndscaleps` mode of `r`, if it has one.
    pub fn mode_of(r: Rounding) -> Option<u8> {
        match r {
            Rounding::HalfEven => Some(0),
            Rounding::Floor => Some(1),
            Rounding::Ceil => Some(2),
            Rounding::Down => Some(3),
            _ => None,
        }
    }

    pub fn symbol(&self) -> String {
        format!(
            "quantize_zmm_n{}_r{}_e{}_{}_{}",
            self.steps, self.mode, self.elem, self.lo, self.hi
        )
    }

    /// `void q(const f32 *x, u8 *out, const u32 *params)`: `steps` x 16 elements;
    /// `params`: the scale (f32) and the zero point (i32).
    pub fn assemble(&self) -> Result<Vec<u8>, IcedError> {
        let mut a = crate::backend::asm::assembler(true)?;
        let (s, zp, lo, hi) = (zmm1, zmm2, zmm4, zmm5);
        a.vbroadcastss(s, dword_ptr(rdx))?;
        a.vpbroadcastd(zp, dword_ptr(rdx + 4))?;
        // lo - zp and hi - zp as f32 (exact: within 2^17).
        for (reg, v) in [(lo, self.lo), (hi, self.hi)] {
            a.mov(eax, v as u32)?;
            a.vpbroadcastd(reg, eax)?;
            a.vpsubd(reg, reg, zp)?;
            a.vcvtdq2ps(reg, reg)?;
        }
        let mut top = a.create_label();
        a.mov(ecx, self.steps)?;
        a.set_label(&mut top)?;
        a.vmovups(zmm0, zmmword_ptr(rdi))?;
        a.vdivps(zmm0, zmm0, s)?;
        // Ordered (not NaN) lanes; the others become 0.
        a.vcmpps(k1, zmm0, zmm0, 7)?;
        a.vrndscaleps(zmm0.k1().z(), zmm0, 8 | self.mode as u32)?;
        a.vmaxps(zmm0, zmm0, lo)?;
        a.vminps(zmm0, zmm0, hi)?;
        a.vcvtps2dq(zmm0, zmm0)?;
        a.vpaddd(zmm0, zmm0, zp)?;
        if self.elem == 1 {
            a.vpmovdb(xmmword_ptr(rsi), zmm0)?;
        } else {
            a.vpmovdw(ymmword_ptr(rsi), zmm0)?;
        }
        a.add(rdi, 64)?;
        a.add(rsi, 16 * self.elem as i32)?;
        a.sub(ecx, 1)?;
        a.jnz(top)?;
        a.vzeroupper()?;
        a.ret()?;
        a.assemble(0)
    }
}
