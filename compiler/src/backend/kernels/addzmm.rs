//! The fused quantized residual add (`requantize(add(requantize(a), requantize(b)))`,
//! `intelem.rs`'s vectorised form) on zmm with AVX-512, assembled with iced-x86: the
//! same f64 steps as the 128-bit kernel, 8 elements per step instead of 2 per vector.
//!
//! Per 8 codes of each operand: the code minus the zero point as f64, exactly (the bytes
//! zero-extended to qwords, `vpmovzxbq`, OR-ed with the exponent of `2^52` and, for
//! signed codes, XOR-ed with 0x80, minus `2^52 + z` (`+ 128`); or `vpmovsxbd`/`vpmovzxbd`
//! and `vcvtdq2pd` then `vsubpd` where the zero point is not an integer), times the
//! operand's multiplier (`vmulpd`: the same values as the 128-bit kernel's `2^52`
//! bit-pattern conversion), the two combined (`vaddpd`, `vsubpd` or `vmulpd`), times the
//! output multiplier, plus `1.5 * 2^52` (rounding half to even, as the 128-bit kernel
//! does); the rounded value plus the output zero point is then the qword's bit pattern
//! minus a constant (`vpsubq`), clamped in i64 lanes and stored by a truncating
//! `vpmovqb` (8 bytes).
//!
//! With AVX2 only (`ymm`), the same steps on ymm, 4 elements per f64 vector: the low
//! dwords of the two halves gathered by `vshufps` + `vpermq`, and the 8 clamped codes
//! narrowed by `vpackssdw` and `vpacksswb`/`vpackuswb` (no saturation happens: they are
//! in range) and stored by `vmovq`.

use iced_x86::IcedError;
use iced_x86::code_asm::*;

/// The combining operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum AddOp {
    Add,
    Sub,
    Mul,
}

/// One assembled kernel: its constants (f64 as bits) and its step count.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct AddZmm {
    pub op: AddOp,
    /// Steps of 8 elements.
    pub steps: u32,
    pub signed: [bool; 2],
    /// Per operand: the zero point and the multiplier, as f64 bits.
    pub z: [u64; 2],
    pub m: [u64; 2],
    /// The output multiplier as f64 bits, the output zero point and clamp.
    pub c: u64,
    pub zq: i32,
    pub lo: i32,
    pub hi: i32,
    /// AVX2 only: ymm registers (see the module's documentation).
    pub ymm: bool,
}

impl AddZmm {
    pub fn symbol(&self) -> String {
        let s = |b: bool| if b { "s" } else { "u" };
        format!(
            "resadd_{}_{:?}_n{}_{}{}_z{:x}_{:x}_m{:x}_{:x}_c{:x}_q{}_{}_{}",
            if self.ymm { "ymm" } else { "zmm" },
            self.op,
            self.steps,
            s(self.signed[0]),
            s(self.signed[1]),
            self.z[0],
            self.z[1],
            self.m[0],
            self.m[1],
            self.c,
            self.zq,
            self.lo,
            self.hi
        )
        .to_lowercase()
    }

    /// The f64 constants as bits: each operand's zero point and multiplier, the output
    /// multiplier, and `1.5 * 2^52` (the rounding addend).
    fn f64_consts(&self) -> [u64; 6] {
        [
            self.z[0],
            self.m[0],
            self.z[1],
            self.m[1],
            self.c,
            6_755_399_441_055_744f64.to_bits(),
        ]
    }

    /// `void add(const u8 *a, const u8 *b, u8 *out)`: `steps` x 8 elements.
    pub fn assemble(&self) -> Result<Vec<u8>, IcedError> {
        if self.ymm {
            return self.assemble_ymm();
        }
        let mut a = crate::backend::asm::assembler(true)?;
        // Constants broadcast once: zmm8.. for the f64s, ymm16.. for the i32s.
        let f64s = self.f64_consts();
        let (za, ma, zb, mb, c, magic) = (zmm8, zmm9, zmm10, zmm11, zmm12, zmm13);
        for (reg, bits) in [za, ma, zb, mb, c, magic].into_iter().zip(f64s) {
            a.mov(rax, bits)?;
            a.vpbroadcastq(reg, rax)?;
        }
        // Per operand, the codes as f64 minus the zero point: where the zero point is an
        // integer, `2^52 + u` from the zero-extended byte `u` (OR-ing the exponent in;
        // for signed codes XOR-ing 0x80 too, `u = x + 128`) minus `2^52 + z (+ 128)`:
        // exact, and one shuffle instead of a widening and a conversion.
        let exact = |o: usize| {
            let z = f64::from_bits(self.z[o]);
            z.fract() == 0.0 && z.abs() < (1u64 << 40) as f64
        };
        let (bits_a, bits_b) = (zmm14, zmm15);
        for (o, (reg, zreg)) in [(bits_a, za), (bits_b, zb)].into_iter().enumerate() {
            if exact(o) {
                let z = f64::from_bits(self.z[o]) + if self.signed[o] { 128.0 } else { 0.0 };
                a.mov(rax, (4_503_599_627_370_496f64 + z).to_bits())?;
                a.vpbroadcastq(zreg, rax)?;
                let xor =
                    4_503_599_627_370_496f64.to_bits() | if self.signed[o] { 0x80 } else { 0 };
                a.mov(rax, xor)?;
                a.vpbroadcastq(reg, rax)?;
            }
        }
        // The output: `r + zq` in i64 lanes is the bit pattern after the rounding add
        // minus that of `1.5 * 2^52` plus zq, then the clamp and a truncating store.
        let (zq64, lo64, hi64) = (zmm16, zmm17, zmm18);
        a.mov(
            rax,
            6_755_399_441_055_744f64
                .to_bits()
                .wrapping_sub(self.zq as i64 as u64),
        )?;
        a.vpbroadcastq(zq64, rax)?;
        a.mov(rax, self.lo as i64 as u64)?;
        a.vpbroadcastq(lo64, rax)?;
        a.mov(rax, self.hi as i64 as u64)?;
        a.vpbroadcastq(hi64, rax)?;
        let mut top = a.create_label();
        a.mov(r10d, self.steps)?;
        a.set_label(&mut top)?;
        for (o, (src, x, z, m, bits)) in [(rdi, zmm0, za, ma, bits_a), (rsi, zmm1, zb, mb, bits_b)]
            .into_iter()
            .enumerate()
        {
            if exact(o) {
                a.vpmovzxbq(x, qword_ptr(src))?;
                a.vpxorq(x, x, bits)?;
            } else {
                let xi = iced_x86::code_asm::registers::ymm::get_ymm(
                    iced_x86::Register::YMM0 + o as u32,
                )
                .expect("ymm0, ymm1");
                if self.signed[o] {
                    a.vpmovsxbd(xi, qword_ptr(src))?;
                } else {
                    a.vpmovzxbd(xi, qword_ptr(src))?;
                }
                a.vcvtdq2pd(x, xi)?;
            }
            a.vsubpd(x, x, z)?;
            a.vmulpd(x, x, m)?;
        }
        match self.op {
            AddOp::Add => a.vaddpd(zmm0, zmm0, zmm1)?,
            AddOp::Sub => a.vsubpd(zmm0, zmm0, zmm1)?,
            AddOp::Mul => a.vmulpd(zmm0, zmm0, zmm1)?,
        }
        a.vmulpd(zmm0, zmm0, c)?;
        a.vaddpd(zmm0, zmm0, magic)?;
        a.vpsubq(zmm0, zmm0, zq64)?;
        a.vpmaxsq(zmm0, zmm0, lo64)?;
        a.vpminsq(zmm0, zmm0, hi64)?;
        a.vpmovqb(qword_ptr(rdx), zmm0)?;
        a.add(rdi, 8)?;
        a.add(rsi, 8)?;
        a.add(rdx, 8)?;
        a.sub(r10d, 1)?;
        a.jnz(top)?;
        a.vzeroupper()?;
        a.ret()?;
        a.assemble(0)
    }

    /// The AVX2 form (`ymm`): the same steps, 4 f64 per vector.
    fn assemble_ymm(&self) -> Result<Vec<u8>, IcedError> {
        // VEX encodings only: this runs where AVX-512 does not.
        let mut a = crate::backend::asm::assembler(false)?;
        let f64s = self.f64_consts();
        let (za, ma, zb, mb, c, magic) = (ymm8, ymm9, ymm10, ymm11, ymm12, ymm13);
        for (reg, bits) in [za, ma, zb, mb, c, magic].into_iter().zip(f64s) {
            a.mov(rax, bits)?;
            a.vmovq(xmm0, rax)?;
            a.vpbroadcastq(reg, xmm0)?;
        }
        // zq, lo and hi as 8 i32: ymm14, ymm15 and ymm7.
        let (zq, lo, hi) = (ymm14, ymm15, ymm7);
        for (reg, v) in [(zq, self.zq), (lo, self.lo), (hi, self.hi)] {
            a.mov(eax, v as u32)?;
            a.vmovd(xmm0, eax)?;
            a.vpbroadcastd(reg, xmm0)?;
        }
        let mut top = a.create_label();
        a.mov(r10d, self.steps)?;
        a.set_label(&mut top)?;
        // ymm0/ymm1: elements 0..4 and 4..8 of the result.
        for (h, acc) in [ymm0, ymm1].into_iter().enumerate() {
            for (o, (src, x, z, m)) in [(rdi, acc, za, ma), (rsi, ymm2, zb, mb)]
                .into_iter()
                .enumerate()
            {
                let xi = if o == 0 { xmm3 } else { xmm4 };
                let at = dword_ptr(src + (4 * h) as i32);
                if self.signed[o] {
                    a.vpmovsxbd(xi, at)?;
                } else {
                    a.vpmovzxbd(xi, at)?;
                }
                a.vcvtdq2pd(x, xi)?;
                a.vsubpd(x, x, z)?;
                a.vmulpd(x, x, m)?;
            }
            match self.op {
                AddOp::Add => a.vaddpd(acc, acc, ymm2)?,
                AddOp::Sub => a.vsubpd(acc, acc, ymm2)?,
                AddOp::Mul => a.vmulpd(acc, acc, ymm2)?,
            }
            a.vmulpd(acc, acc, c)?;
            a.vaddpd(acc, acc, magic)?;
        }
        // The low dwords: [0 1 4 5 | 2 3 6 7] from the shuffle, in order after vpermq.
        a.vshufps(ymm0, ymm0, ymm1, 0x88)?;
        a.vpermq(ymm0, ymm0, 0xD8)?;
        a.vpaddd(ymm0, ymm0, zq)?;
        a.vpmaxsd(ymm0, ymm0, lo)?;
        a.vpminsd(ymm0, ymm0, hi)?;
        a.vextracti128(xmm1, ymm0, 1)?;
        a.vpackssdw(xmm0, xmm0, xmm1)?;
        if self.lo < 0 {
            a.vpacksswb(xmm0, xmm0, xmm0)?;
        } else {
            a.vpackuswb(xmm0, xmm0, xmm0)?;
        }
        a.vmovq(qword_ptr(rdx), xmm0)?;
        a.add(rdi, 8)?;
        a.add(rsi, 8)?;
        a.add(rdx, 8)?;
        a.sub(r10d, 1)?;
        a.jnz(top)?;
        a.vzeroupper()?;
        a.ret()?;
        a.assemble(0)
    }
}
