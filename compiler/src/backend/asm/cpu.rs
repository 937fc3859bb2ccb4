//! The CPU check at the entry of `NAME_run`: `cpuid` and `xgetbv` against a tier.
//!
//! An object built for a tier faults with an illegal instruction on a CPU without it;
//! the entry calls this first and returns a nonzero code instead.

use iced_x86::IcedError;
use iced_x86::code_asm::*;

use crate::backend::target::Tier;

/// The `cpuid` bits a tier needs: (leaf 1 ECX, leaf 7 EBX, leaf 7 ECX, leaf
/// 0x8000_0001 ECX, XCR0 bits the OS must enable).
fn masks(t: Tier) -> (u32, u32, u32, u32, u32) {
    let (mut l1c, mut l7b, mut l7c, mut e1c, mut xcr0) = (0u32, 0u32, 0u32, 0u32, 0u32);
    if t.level >= 2 {
        // SSE3, SSSE3, CMPXCHG16B, SSE4.1, SSE4.2, POPCNT.
        l1c |= 1 | 1 << 9 | 1 << 13 | 1 << 19 | 1 << 20 | 1 << 23;
    }
    if t.level >= 3 {
        // FMA, OSXSAVE, AVX; BMI1, AVX2, BMI2; LZCNT; XMM and YMM state.
        l1c |= 1 << 12 | 1 << 27 | 1 << 28;
        l7b |= 1 << 3 | 1 << 5 | 1 << 8;
        e1c |= 1 << 5;
        xcr0 |= 0b110;
    }
    if t.level >= 4 {
        // AVX512 F, DQ, BW, VL; opmask and ZMM state.
        l7b |= 1 << 16 | 1 << 17 | 1 << 30 | 1 << 31;
        xcr0 |= 0b1110_0000;
    }
    if t.vnni {
        l7c |= 1 << 11;
    }
    if t.bitalg {
        l7c |= 1 << 12;
    }
    if t.vpopcntdq {
        l7c |= 1 << 14;
    }
    (l1c, l7b, l7c, e1c, xcr0)
}

/// `int check(void)`: 1 when every bit of [`masks`] is set, else 0.
pub(super) fn assemble(t: Tier) -> Result<Vec<u8>, IcedError> {
    let (l1c, l7b, l7c, e1c, xcr0) = masks(t);
    let mut a = super::assembler(false)?;
    let mut fail = a.create_label();
    let mut done = a.create_label();
    // cpuid writes ebx, callee-saved in System V.
    a.push(rbx)?;
    let check = |a: &mut CodeAssembler, reg: AsmRegister32, mask: u32, fail: CodeLabel| {
        if mask == 0 {
            return Ok::<(), IcedError>(());
        }
        a.mov(r8d, reg)?;
        a.and(r8d, mask)?;
        a.cmp(r8d, mask)?;
        a.jne(fail)
    };
    a.xor(eax, eax)?;
    a.xor(ecx, ecx)?;
    a.cpuid()?;
    a.cmp(eax, 7)?;
    a.jb(fail)?;
    a.mov(eax, 1u32)?;
    a.xor(ecx, ecx)?;
    a.cpuid()?;
    check(&mut a, ecx, l1c, fail)?;
    a.mov(eax, 7u32)?;
    a.xor(ecx, ecx)?;
    a.cpuid()?;
    a.mov(r9d, ecx)?;
    check(&mut a, ebx, l7b, fail)?;
    check(&mut a, r9d, l7c, fail)?;
    if e1c != 0 {
        a.mov(eax, 0x8000_0001u32)?;
        a.xor(ecx, ecx)?;
        a.cpuid()?;
        check(&mut a, ecx, e1c, fail)?;
    }
    if xcr0 != 0 {
        // OSXSAVE was checked with leaf 1 (level 3 and up), so xgetbv exists.
        a.xor(ecx, ecx)?;
        a.xgetbv()?;
        check(&mut a, eax, xcr0, fail)?;
    }
    a.mov(eax, 1u32)?;
    a.jmp(done)?;
    a.set_label(&mut fail)?;
    a.xor(eax, eax)?;
    a.set_label(&mut done)?;
    a.pop(rbx)?;
    a.ret()?;
    a.assemble(0)
}

/// Whether this tier needs a check at all (the x86-64 baseline is every x86-64 CPU).
pub(crate) fn cpu_check(t: Tier) -> bool {
    t != Tier::BASELINE
}
