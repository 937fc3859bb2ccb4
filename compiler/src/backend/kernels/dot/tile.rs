//! The register tiles of the u8 x i8 dot-product family, one per tier, assembled with
//! iced-x86 (see `backend::asm`).
//!
//! Both read the operands of `maddubs`'s layout: `rows` are bytes, one dword (4 K values)
//! per row and quad, `row_stride` bytes apart; `cols` is the quad layout, one vector of
//! 16 (zmm) or 8 (ymm) columns x 4 K per load, `col_stride` bytes per quad. The row
//! dword is broadcast to every lane, so a column vector of 16 output channels or
//! pixels is filled whatever the number of rows. Rows hold the signed operand for a
//! convolution (weights x im2col pixels) and the unsigned one for a matrix product
//! (activations x weights).
//!
//! - AVX512-VNNI: `vpdpbusd zmm` accumulates 64 u8 x i8 products into 16 i32 lanes,
//!   exactly (no saturation; it is `vpdpbusds` that saturates).
//! - AVX2: `vpmaddubsw ymm` (two products into a saturating i16) then `vpmaddwd` by
//!   ones into i32 and `vpaddd`: exact only for weights that pass `maddubs`'s pair
//!   check, which the selection asks for.
//!
//! The sums go to `acc` as `[rows][vecs * lanes]` i32, the order the epilogue reads.

use iced_x86::code_asm::registers::{ymm::get_ymm, zmm::get_zmm};
use iced_x86::code_asm::*;
use iced_x86::{IcedError, Register};

use super::{DotIsa, DotTile};

fn zmm(i: usize) -> AsmRegisterZmm {
    get_zmm(Register::ZMM0 + i as u32).expect("zmm0..zmm31")
}

fn ymm(i: usize) -> AsmRegisterYmm {
    get_ymm(Register::YMM0 + i as u32).expect("ymm0..ymm15")
}

/// The loop over K: `rdi` rows, `rsi` columns, `rdx` acc; `body` emits one quad.
fn k_loop(
    a: &mut CodeAssembler,
    t: &DotTile,
    mut body: impl FnMut(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    let mut top = a.create_label();
    a.mov(ecx, t.quads)?;
    a.set_label(&mut top)?;
    body(a)?;
    a.add(rdi, 4)?;
    a.add(rsi, t.col_stride as i32)?;
    a.sub(ecx, 1)?;
    a.jnz(top)?;
    Ok(())
}

pub(super) fn vnni512(t: &DotTile) -> Result<Vec<u8>, IcedError> {
    let (rows, vecs) = (t.rows as usize, t.vecs as usize);
    let mut a = crate::backend::asm::assembler(true)?;
    let acc = |r: usize, v: usize| zmm(r * vecs + v);
    let col = |v: usize| zmm(rows * vecs + v);
    let bc = |r: usize| zmm(rows * vecs + vecs + r % 2);
    for r in 0..rows {
        for v in 0..vecs {
            a.vpxord(acc(r, v), acc(r, v), acc(r, v))?;
        }
    }
    k_loop(&mut a, t, |a| {
        for v in 0..vecs {
            a.vmovdqu32(col(v), zmmword_ptr(rsi + (v * 64) as i32))?;
        }
        for r in 0..rows {
            a.vpbroadcastd(bc(r), dword_ptr(rdi + (r as u32 * t.row_stride) as i32))?;
            for v in 0..vecs {
                // vpdpbusd acc, unsigned, signed.
                if t.rows_signed {
                    a.vpdpbusd(acc(r, v), col(v), bc(r))?;
                } else {
                    a.vpdpbusd(acc(r, v), bc(r), col(v))?;
                }
            }
        }
        Ok(())
    })?;
    for r in 0..rows {
        for v in 0..vecs {
            a.vmovdqu32(zmmword_ptr(rdx + ((r * vecs + v) * 64) as i32), acc(r, v))?;
        }
    }
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}

pub(super) fn avx2(t: &DotTile) -> Result<Vec<u8>, IcedError> {
    let (rows, vecs) = (t.rows as usize, t.vecs as usize);
    let mut a = crate::backend::asm::assembler(false)?;
    let acc = |r: usize, v: usize| ymm(r * vecs + v);
    let col = |v: usize| ymm(rows * vecs + v);
    let base = rows * vecs + vecs;
    let (ones, bc) = (ymm(base), ymm(base + 1));
    let prod = |i: usize| ymm(base + 2 + i % 2);
    for r in 0..rows {
        for v in 0..vecs {
            a.vpxor(acc(r, v), acc(r, v), acc(r, v))?;
        }
    }
    // i16 ones for vpmaddwd.
    a.mov(eax, 0x0001_0001u32)?;
    let ones_x = get_xmm_of(base);
    a.vmovd(ones_x, eax)?;
    a.vpbroadcastd(ones, ones_x)?;
    k_loop(&mut a, t, |a| {
        for v in 0..vecs {
            a.vmovdqu(col(v), ymmword_ptr(rsi + (v * 32) as i32))?;
        }
        let mut i = 0;
        for r in 0..rows {
            a.vpbroadcastd(bc, dword_ptr(rdi + (r as u32 * t.row_stride) as i32))?;
            for v in 0..vecs {
                let p = prod(i);
                i += 1;
                // vpmaddubsw dst, unsigned, signed.
                if t.rows_signed {
                    a.vpmaddubsw(p, col(v), bc)?;
                } else {
                    a.vpmaddubsw(p, bc, col(v))?;
                }
                a.vpmaddwd(p, p, ones)?;
                a.vpaddd(acc(r, v), acc(r, v), p)?;
            }
        }
        Ok(())
    })?;
    for r in 0..rows {
        for v in 0..vecs {
            a.vmovdqu(ymmword_ptr(rdx + ((r * vecs + v) * 32) as i32), acc(r, v))?;
        }
    }
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}

fn get_xmm_of(i: usize) -> AsmRegisterXmm {
    iced_x86::code_asm::registers::xmm::get_xmm(Register::XMM0 + i as u32).expect("xmm0..xmm15")
}

/// A loop of independent `vpdpbusd zmm` chains (`isa` Vnni512) or `vpmaddubsw` +
/// `vpmaddwd` + `vpaddd` ymm chains (Avx2), `rdi` iterations: the peak of the tiles'
/// instruction mix, for the benchmark. `int loop(u64 iters)`; each iteration does
/// `chains` tile steps.
pub(crate) fn peak_loop(isa: DotIsa, chains: usize) -> Result<Vec<u8>, IcedError> {
    let mut a = crate::backend::asm::assembler(isa == DotIsa::Vnni512)?;
    let mut top = a.create_label();
    match isa {
        DotIsa::Vnni512 => {
            for c in 0..chains + 2 {
                a.vpxord(zmm(c), zmm(c), zmm(c))?;
            }
            a.set_label(&mut top)?;
            for c in 0..chains {
                a.vpdpbusd(zmm(c), zmm(chains), zmm(chains + 1))?;
            }
        }
        DotIsa::Avx2 => {
            for c in 0..16 {
                a.vpxor(ymm(c), ymm(c), ymm(c))?;
            }
            a.set_label(&mut top)?;
            // chains accumulators, two products in flight, ones and two operands.
            for c in 0..chains {
                let p = ymm(chains + c % 2);
                a.vpmaddubsw(p, ymm(13), ymm(14))?;
                a.vpmaddwd(p, p, ymm(15))?;
                a.vpaddd(ymm(c), ymm(c), p)?;
            }
        }
    }
    a.sub(rdi, 1)?;
    a.jnz(top)?;
    a.xor(eax, eax)?;
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}
