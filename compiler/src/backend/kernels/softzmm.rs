//! Softmax along the last axis on zmm with AVX-512 and FMA, assembled with iced-x86:
//! the 128-bit kernel's results bit for bit (`elementwise::emit_softmax`, rows of `d`
//! contiguous elements).
//!
//! Per row: the maximum (order-free; a NaN anywhere makes every output NaN either way,
//! and `exp(+-0)` is exactly 1, so the sign of a zero maximum does not matter); `exp(x -
//! max)` 16 lanes at a time with the 128-bit kernel's operations (`erfzmm::exp`),
//! stored; their sum in the 128-bit kernel's order, read back from the output: four
//! lanes accumulated over the quads, `(l0 + l1) + (l2 + l3)`, then the `d % 4` last
//! ones one by one; the division, 16 lanes at a time. The row's last partial vector is
//! a masked load and store.

use iced_x86::IcedError;
use iced_x86::code_asm::*;

use super::erfzmm::{T_NINF, T_ONE, T_P, exp};

/// One assembled kernel: `void softmax(const f32 *x, f32 *out, const u32 *table)` over
/// `rows` rows of `d` elements (`table`: `erfzmm::table`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SoftmaxZmm {
    pub rows: u32,
    pub d: u32,
}

impl SoftmaxZmm {
    pub fn symbol(&self) -> String {
        format!("softmax_zmm_r{}_d{}", self.rows, self.d)
    }

    pub fn assemble(&self) -> Result<Vec<u8>, IcedError> {
        let mut a = crate::backend::asm::assembler(true)?;
        let m = |w: usize| dword_ptr(rdx + (4 * w) as i32);
        let d = self.d as usize;
        let (full, rem) = (d / 16, d % 16);
        let (quads, tail) = (d / 4, d % 4);
        let one = zmm16;
        let p = [zmm17, zmm18, zmm19, zmm20, zmm21, zmm22];
        a.vbroadcastss(one, m(T_ONE))?;
        for (i, &r) in p.iter().enumerate() {
            a.vbroadcastss(r, m(T_P + i))?;
        }
        if rem > 0 {
            a.mov(eax, (1u32 << rem) - 1)?;
            a.kmovw(k4, eax)?;
        }
        // A counted loop over `n` steps (none when n is 0).
        fn counted(
            a: &mut CodeAssembler,
            n: usize,
            body: &mut dyn FnMut(&mut CodeAssembler) -> Result<(), IcedError>,
        ) -> Result<(), IcedError> {
            if n == 0 {
                return Ok(());
            }
            let mut top = a.create_label();
            a.mov(ecx, n as u32)?;
            a.set_label(&mut top)?;
            body(a)?;
            a.sub(ecx, 1)?;
            a.jnz(top)
        }
        let mut row = a.create_label();
        a.mov(r8d, self.rows)?;
        a.set_label(&mut row)?;
        // The maximum.
        let mx = zmm13;
        a.vbroadcastss(mx, m(T_NINF))?;
        a.mov(r9, rdi)?;
        counted(&mut a, full, &mut |a| {
            a.vmaxps(mx, mx, zmmword_ptr(r9))?;
            a.add(r9, 64)
        })?;
        if rem > 0 {
            a.vbroadcastss(zmm14, m(T_NINF))?;
            a.vmovups(zmm14.k4(), zmmword_ptr(r9))?;
            a.vmaxps(mx, mx, zmm14)?;
        }
        a.vextractf64x4(ymm14, mx, 1)?;
        a.vmaxps(ymm13, ymm13, ymm14)?;
        a.vextractf128(xmm14, ymm13, 1)?;
        a.vmaxps(xmm13, xmm13, xmm14)?;
        a.vshufps(xmm14, xmm13, xmm13, 0x4E)?;
        a.vmaxps(xmm13, xmm13, xmm14)?;
        a.vshufps(xmm14, xmm13, xmm13, 0xB1)?;
        a.vmaxps(xmm13, xmm13, xmm14)?;
        a.vbroadcastss(mx, xmm13)?;
        // exp(x - max), stored.
        a.mov(r9, rdi)?;
        a.mov(r10, rsi)?;
        counted(&mut a, full, &mut |a| {
            a.vmovups(zmm5, zmmword_ptr(r9))?;
            a.vsubps(zmm5, zmm5, mx)?;
            let e = exp(a, zmm5, &p, one)?;
            a.vmovups(zmmword_ptr(r10), e)?;
            a.add(r9, 64)?;
            a.add(r10, 64)
        })?;
        if rem > 0 {
            a.vmovups(zmm5.k4().z(), zmmword_ptr(r9))?;
            a.vsubps(zmm5, zmm5, mx)?;
            let e = exp(&mut a, zmm5, &p, one)?;
            a.vmovups(zmmword_ptr(r10).k4(), e)?;
        }
        // The sum, in the 128-bit kernel's order.
        a.vxorps(xmm15, xmm15, xmm15)?;
        a.mov(r10, rsi)?;
        counted(&mut a, quads, &mut |a| {
            a.vaddps(xmm15, xmm15, xmmword_ptr(r10))?;
            a.add(r10, 16)
        })?;
        a.vmovshdup(xmm1, xmm15)?;
        a.vaddps(xmm1, xmm15, xmm1)?;
        a.vmovhlps(xmm2, xmm1, xmm1)?;
        a.vaddss(xmm1, xmm1, xmm2)?;
        for j in 0..tail {
            a.vaddss(xmm1, xmm1, dword_ptr(rsi + (4 * (4 * quads + j)) as i32))?;
        }
        // The division.
        a.vbroadcastss(zmm1, xmm1)?;
        a.mov(r10, rsi)?;
        counted(&mut a, full, &mut |a| {
            a.vmovups(zmm2, zmmword_ptr(r10))?;
            a.vdivps(zmm2, zmm2, zmm1)?;
            a.vmovups(zmmword_ptr(r10), zmm2)?;
            a.add(r10, 64)
        })?;
        if rem > 0 {
            a.vmovups(zmm2.k4().z(), zmmword_ptr(r10))?;
            a.vdivps(zmm2, zmm2, zmm1)?;
            a.vmovups(zmmword_ptr(r10).k4(), zmm2)?;
        }
        a.add(rdi, (4 * d) as i32)?;
        a.add(rsi, (4 * d) as i32)?;
        a.sub(r8d, 1)?;
        a.jnz(row)?;
        a.vzeroupper()?;
        a.ret()?;
        a.assemble(0)
    }
}
