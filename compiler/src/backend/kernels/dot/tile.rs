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
//! - AVX2, i16 widening: `vpmaddwd ymm` on both operands widened to i16 (exact for
//!   every i8 weight); with `DotTile::w16` the weights come as i16 from the object
//!   (conv rows `[M][Kp]`, matmul column panels), only the run-time bytes are widened.
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

/// The loop over K: `rdi` rows, `rsi` columns, `rdx` acc; `body(a, col, row)` emits
/// one quad whose columns are `col` bytes and whose row dwords `row` bytes past `rsi`
/// and `rdi`. The quad layout advances both per quad; a direct convolution's window
/// ([`super::DotWindow`]) unrolls its taps at fixed displacements per channel quad.
fn k_loop(
    a: &mut CodeAssembler,
    t: &DotTile,
    mut body: impl FnMut(&mut CodeAssembler, i32, i32) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    // Bytes of one quad of a row: 4 bytes, or 4 i16 for pre-widened weight rows.
    let row_quad = if t.w16 && t.rows_signed { 8 } else { 4 };
    let mut top = a.create_label();
    match &t.window {
        None => {
            a.mov(r10d, t.quads)?;
            a.set_label(&mut top)?;
            body(a, 0, 0)?;
            a.add(rdi, row_quad)?;
            a.add(rsi, t.col_stride as i32)?;
        }
        Some(w) => {
            a.mov(r10d, w.groups)?;
            a.set_label(&mut top)?;
            for tap in 0..w.taps() {
                body(a, w.tap_disp(tap), tap as i32 * row_quad)?;
            }
            a.add(rdi, row_quad * w.taps() as i32)?;
            a.add(rsi, w.plane as i32)?;
        }
    }
    a.sub(r10d, 1)?;
    a.jnz(top)?;
    Ok(())
}

/// Bytes from the tile's columns to its column `p` (`lanes` i32 per vector): the quad
/// layout's columns are consecutive, a window's follow its rows.
fn col_disp(t: &DotTile, p: usize) -> i32 {
    match &t.window {
        Some(w) => w.pixel_disp(p),
        None => (p * 4) as i32,
    }
}

/// Loads column vector `v` of `lanes` pixels (the quad at `co` bytes) into `reg` (a
/// zmm, or a ymm with `lanes` 8): one load, or for a window whose rows are narrower than
/// the vector one load of the first row's pixels and an insert per further row.
fn load_cols(
    a: &mut CodeAssembler,
    t: &DotTile,
    reg: usize,
    v: usize,
    lanes: usize,
    co: i32,
) -> Result<(), IcedError> {
    let at = |p: usize| rsi + (co + col_disp(t, v * lanes + p));
    let piece = t.window.as_ref().map_or(lanes, |w| w.piece(lanes));
    match (lanes, piece) {
        (16, 16) => a.vmovdqu32(zmm(reg), zmmword_ptr(at(0))),
        (8, 8) => a.vmovdqu(ymm(reg), ymmword_ptr(at(0))),
        (16, 8) => {
            a.vmovdqu32(ymm(reg), ymmword_ptr(at(0)))?;
            a.vinserti32x8(zmm(reg), zmm(reg), ymmword_ptr(at(8)), 1)
        }
        (16, 4) => {
            a.vmovdqu32(get_xmm_of(reg), xmmword_ptr(at(0)))?;
            for k in 1..4 {
                a.vinserti32x4(zmm(reg), zmm(reg), xmmword_ptr(at(4 * k)), k as u32)?;
            }
            Ok(())
        }
        (8, 4) => {
            a.vmovdqu(get_xmm_of(reg), xmmword_ptr(at(0)))?;
            a.vinserti128(ymm(reg), ymm(reg), xmmword_ptr(at(4)), 1)
        }
        _ => unreachable!("DotWindow::fits admits rows of 4, 8 or a multiple of the lanes"),
    }
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
    k_loop(&mut a, t, |a, co, ro| {
        for v in 0..vecs {
            load_cols(a, t, rows * vecs + v, v, 16, co)?;
        }
        for r in 0..rows {
            a.vpbroadcastd(
                bc(r),
                dword_ptr(rdi + (ro + (r as u32 * t.row_stride) as i32)),
            )?;
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
    if let Some(e) = &t.epi {
        requantize(&mut a, t.rows as usize, t.vecs as usize, e)?;
    }
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}

/// The requantize of a tile's sums (`rows` x `vecs` vectors of 16 i32 at `rdx`, row by
/// row; also the 1-bit tiles' in-tile epilogue): the layer's constants at `r8` and row r's
/// channel at `r9 + 16 r` (see [`super::epi_table`]); outputs stored at
/// `rcx + r * row_bytes + v * 16 * elem` (lanes past `valid` columns masked off). Per
/// 16 sums, in i64 lanes: `x + add`, then `p = x * mult` (`vpmuldq` on the even and
/// the odd lanes), the rounding term, `p >> s` (`vpsravq`), the clamp to
/// `[lo - zq, hi - zq]`, then `+ zq` and a narrowing store.
pub(crate) fn requantize(
    a: &mut CodeAssembler,
    rows: usize,
    vecs: usize,
    e: &super::DotEpi,
) -> Result<(), IcedError> {
    use super::EpiRound as R;
    // k1: the even dwords (low halves of the qwords).
    a.mov(eax, 0x5555u32)?;
    a.kmovw(k1, eax)?;
    let (x, xo, pe, po, t1, t2) = (zmm0, zmm1, zmm2, zmm3, zmm4, zmm5);
    let (sh, one, spos, c1) = (zmm6, zmm7, zmm8, zmm9);
    a.mov(eax, 1u32)?;
    a.vpbroadcastq(one, rax)?;
    for r in 0..rows {
        let c = |f: i32| r9 + (r as i32 * 16 + f);
        // The row's shift and rounding terms: c1 (2^s - 1, half, or half - [s > 0]).
        a.vpbroadcastq(sh, qword_ptr(c(8)))?;
        a.vpminuq(spos, sh, one)?;
        a.vpsllvq(c1, one, sh)?;
        match e.round {
            R::Floor => {}
            R::Ceil | R::Down | R::Up => a.vpsubq(c1, c1, one)?,
            R::HalfUp => a.vpsrlq(c1, c1, 1)?,
            R::HalfDown | R::HalfEven => {
                a.vpsrlq(c1, c1, 1)?;
                a.vpsubq(c1, c1, spos)?;
            }
        }
        for v in 0..vecs {
            let valid = e.valid.saturating_sub(v * 16).min(16);
            if valid == 0 {
                continue;
            }
            a.vmovdqu32(x, zmmword_ptr(rdx + ((r * vecs + v) * 64) as i32))?;
            a.vpaddd(x, x, dword_bcst(c(4)))?;
            a.vpsrlq(xo, x, 32)?;
            a.vpmuldq(pe, x, qword_bcst(c(0)))?;
            a.vpmuldq(po, xo, qword_bcst(c(0)))?;
            for p in [pe, po] {
                match e.round {
                    R::Floor => {}
                    R::Ceil => a.vpaddq(p, p, c1)?,
                    R::Down | R::Up => {
                        // All ones where p < 0.
                        a.vpsraq(t1, p, 63)?;
                        if e.round == R::Down {
                            a.vpandq(t1, t1, c1)?;
                        } else {
                            a.vpandnq(t1, t1, c1)?;
                        }
                        a.vpaddq(p, p, t1)?;
                    }
                    R::HalfUp | R::HalfDown => {
                        a.vpsraq(t1, p, 63)?;
                        a.vpandq(t1, t1, spos)?;
                        a.vpaddq(p, p, c1)?;
                        if e.round == R::HalfUp {
                            a.vpsubq(p, p, t1)?;
                        } else {
                            a.vpaddq(p, p, t1)?;
                        }
                    }
                    R::HalfEven => {
                        // Plus bit s of p.
                        a.vpsrlvq(t1, p, sh)?;
                        a.vpandq(t1, t1, spos)?;
                        a.vpaddq(t2, p, c1)?;
                        a.vpaddq(p, t2, t1)?;
                    }
                }
                a.vpsravq(p, p, sh)?;
                a.vpmaxsq(p, p, qword_bcst(r8))?;
                a.vpminsq(p, p, qword_bcst(r8 + 8))?;
            }
            a.vpsllq(po, po, 32)?;
            a.vpblendmd(x.k1(), po, pe)?;
            a.vpaddd(x, x, dword_bcst(r8 + 16))?;
            let off = (r * e.row_bytes as usize + v * 16 * e.elem as usize) as i32;
            store_zmm(a, x, e.elem, valid, off)?;
        }
    }
    Ok(())
}

/// [`requantize`] with AVX2 only (`rows` x `vecs` vectors of 8 i32 at `rdx`): 8 sums
/// per ymm; the arithmetic shift is a logical one of `p + add + 2^63` (`vpsrlvq`).
/// Where the shifted value fits i32 (`super::shift_fits_i32`) it is finished on the i32
/// halves by subtracting `2^(63-s)` (the low halves are exact there) and clamped in i32;
/// otherwise (`e.wide_shift`) `2^(63-s)` is subtracted and the clamp done in i64 lanes
/// (`vpcmpgtq` + `vblendvpd`) before the halves are taken. Then `+ zq` and a narrowing
/// store (lane by lane past `valid` columns). Layer constants at `r8` (8 x lo
/// - zq, 8 x hi - zq, 8 x zq as i32, 4 x 2^63), row r's channel at `r9 + 16 r`.
pub(crate) fn requantize_avx2(
    a: &mut CodeAssembler,
    rows: usize,
    vecs: usize,
    e: &super::DotEpi,
) -> Result<(), IcedError> {
    if e.f64_round {
        return requantize_avx2_f64(a, rows, vecs, e);
    }
    use super::EpiRound as R;
    let (x, xo, pe, po, t1, zero) = (ymm0, ymm1, ymm2, ymm3, ymm4, ymm5);
    let (m, sh, c1, spos, ub, add, one) = (ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12);
    // With `wide_shift`: 2^(63-s) and the clamp bounds as i64.
    let (ub64, lo64, hi64) = (ymm13, ymm14, ymm15);
    a.vpxor(zero, zero, zero)?;
    a.mov(eax, 1u32)?;
    a.vmovq(xmm12, rax)?;
    a.vpbroadcastq(one, xmm12)?;
    if e.wide_shift {
        a.vpmovsxdq(lo64, xmmword_ptr(r8))?;
        a.vpmovsxdq(hi64, xmmword_ptr(r8 + 32))?;
    }
    for r in 0..rows {
        let c = |f: i32| r9 + (r as i32 * 16 + f);
        a.vpbroadcastq(m, qword_ptr(c(0)))?;
        a.vpbroadcastd(add, dword_ptr(c(4)))?;
        a.vpbroadcastq(sh, qword_ptr(c(8)))?;
        // [s > 0], the rounding term c1, and 2^(63-s) in every i32 lane.
        a.vpcmpgtq(spos, sh, zero)?;
        a.vpsrlq(spos, spos, 63)?;
        a.vpsllvq(c1, one, sh)?;
        match e.round {
            R::Floor => {}
            R::Ceil | R::Down | R::Up => a.vpsubq(c1, c1, one)?,
            R::HalfUp => a.vpsrlq(c1, c1, 1)?,
            R::HalfDown | R::HalfEven => {
                a.vpsrlq(c1, c1, 1)?;
                a.vpsubq(c1, c1, spos)?;
            }
        }
        a.vmovdqu(t1, ymmword_ptr(r8 + 96))?;
        a.vpsrlvq(ub, t1, sh)?;
        if e.wide_shift {
            a.vmovdqa(ub64, ub)?;
        }
        a.vpshufd(ub, ub, 0xA0)?;
        for v in 0..vecs {
            let valid = e.valid.saturating_sub(v * 8).min(8);
            if valid == 0 {
                continue;
            }
            load_sums(a, 0, rdx + ((r * vecs + v) * 32) as i32)?;
            a.vpaddd(x, x, add)?;
            a.vpsrlq(xo, x, 32)?;
            a.vpmuldq(pe, x, m)?;
            a.vpmuldq(po, xo, m)?;
            for p in [pe, po] {
                match e.round {
                    R::Floor => {}
                    R::Ceil => a.vpaddq(p, p, c1)?,
                    R::Down | R::Up => {
                        a.vpcmpgtq(t1, zero, p)?;
                        if e.round == R::Down {
                            a.vpand(t1, t1, c1)?;
                        } else {
                            a.vpandn(t1, t1, c1)?;
                        }
                        a.vpaddq(p, p, t1)?;
                    }
                    R::HalfUp | R::HalfDown => {
                        a.vpcmpgtq(t1, zero, p)?;
                        a.vpand(t1, t1, spos)?;
                        a.vpaddq(p, p, c1)?;
                        if e.round == R::HalfUp {
                            a.vpsubq(p, p, t1)?;
                        } else {
                            a.vpaddq(p, p, t1)?;
                        }
                    }
                    R::HalfEven => {
                        a.vpsrlvq(t1, p, sh)?;
                        a.vpand(t1, t1, spos)?;
                        a.vpaddq(p, p, c1)?;
                        a.vpaddq(p, p, t1)?;
                    }
                }
                a.vpxor(p, p, ymmword_ptr(r8 + 96))?;
                a.vpsrlvq(p, p, sh)?;
                if e.wide_shift {
                    a.vpsubq(p, p, ub64)?;
                    a.vpcmpgtq(t1, p, hi64)?;
                    a.vblendvpd(p, p, hi64, t1)?;
                    a.vpcmpgtq(t1, lo64, p)?;
                    a.vblendvpd(p, p, lo64, t1)?;
                }
            }
            a.vpsllq(po, po, 32)?;
            a.vpblendd(x, pe, po, 0xAA)?;
            if !e.wide_shift {
                a.vpsubd(x, x, ub)?;
                a.vpmaxsd(x, x, ymmword_ptr(r8))?;
                a.vpminsd(x, x, ymmword_ptr(r8 + 32))?;
            }
            a.vpaddd(x, x, ymmword_ptr(r8 + 64))?;
            let off = (r * e.row_bytes as usize + v * 8 * e.elem as usize) as i32;
            store_ymm0(a, e.elem, e.unsigned, valid, off)?;
        }
    }
    Ok(())
}

/// [`requantize_avx2`] in f64 lanes (`e.f64_round`, see `super::f64_exact`): per 4
/// sums, `x + add` converted to f64 (exact), times the channel's `multiplier * 2^-shift`
/// (exact: the product has fewer than 53 significant bits), clamped to `[lo - zq,
/// hi - zq]` (integers, so clamping before rounding is clamping after), plus
/// `1.5 * 2^52`, which rounds half to even and leaves the integer in the low 32 bits;
/// those of the two halves gathered by `vshufps` + `vpermq`, then `+ zq` and the store.
fn requantize_avx2_f64(
    a: &mut CodeAssembler,
    rows: usize,
    vecs: usize,
    e: &super::DotEpi,
) -> Result<(), IcedError> {
    let (x, lo, hi, t) = (ymm0, ymm1, ymm2, ymm3);
    let (mf, add, e1023, lof, hif, magic) = (ymm6, ymm7, ymm12, ymm13, ymm14, ymm15);
    a.vcvtdq2pd(lof, xmmword_ptr(r8))?;
    a.vcvtdq2pd(hif, xmmword_ptr(r8 + 32))?;
    a.mov(rax, 6_755_399_441_055_744f64.to_bits())?;
    a.vmovq(xmm15, rax)?;
    a.vpbroadcastq(magic, xmm15)?;
    a.mov(eax, 1023u32)?;
    a.vmovq(xmm12, rax)?;
    a.vpbroadcastq(e1023, xmm12)?;
    for r in 0..rows {
        let c = |f: i32| r9 + (r as i32 * 16 + f);
        a.vpbroadcastd(add, dword_ptr(c(4)))?;
        // 2^-s as f64 (exponent 1023 - s), times the multiplier.
        a.vpbroadcastq(t, qword_ptr(c(8)))?;
        a.vpsubq(t, e1023, t)?;
        a.vpsllq(t, t, 52)?;
        a.vpbroadcastd(xmm8, dword_ptr(c(0)))?;
        a.vcvtdq2pd(mf, xmm8)?;
        a.vmulpd(mf, mf, t)?;
        for v in 0..vecs {
            let valid = e.valid.saturating_sub(v * 8).min(8);
            if valid == 0 {
                continue;
            }
            load_sums(a, 0, rdx + ((r * vecs + v) * 32) as i32)?;
            a.vpaddd(x, x, add)?;
            a.vextracti128(xmm2, x, 1)?;
            a.vcvtdq2pd(lo, xmm0)?;
            a.vcvtdq2pd(hi, xmm2)?;
            for h in [lo, hi] {
                a.vmulpd(h, h, mf)?;
                a.vminpd(h, h, hif)?;
                a.vmaxpd(h, h, lof)?;
                a.vaddpd(h, h, magic)?;
            }
            a.vshufps(x, lo, hi, 0x88)?;
            a.vpermq(x, x, 0xD8)?;
            a.vpaddd(x, x, ymmword_ptr(r8 + 64))?;
            let off = (r * e.row_bytes as usize + v * 8 * e.elem as usize) as i32;
            store_ymm0(a, e.elem, e.unsigned, valid, off)?;
        }
    }
    Ok(())
}

/// Loads 8 i32 sums into ymm `reg` as two 16-byte halves: the 1-bit tiles store their
/// sums 4 at a time, and one 32-byte load over two such stores waits for them to retire
/// (no store forwarding); halves of a 32-byte store forward as well.
pub(crate) fn load_sums(
    a: &mut CodeAssembler,
    reg: usize,
    at: AsmMemoryOperand,
) -> Result<(), IcedError> {
    a.vmovdqu(get_xmm_of(reg), xmmword_ptr(at))?;
    a.vinserti128(ymm(reg), ymm(reg), xmmword_ptr(at + 16), 1)
}

/// Stores the 16 i32 codes of `x` (in the output's range) as `elem`-byte codes at
/// `rcx + off` (truncating `vpmovdb`/`vpmovdw`), the first `valid` of them under mask
/// `k2`. Shared by the u8 x i8 and 1-bit zmm tiles' epilogues.
pub(crate) fn store_zmm(
    a: &mut CodeAssembler,
    x: AsmRegisterZmm,
    elem: u32,
    valid: usize,
    off: i32,
) -> Result<(), IcedError> {
    let masked = valid < 16;
    if masked {
        a.mov(eax, (1u32 << valid) - 1)?;
        a.kmovw(k2, eax)?;
    }
    match elem {
        1 => {
            let m = xmmword_ptr(rcx + off);
            a.vpmovdb(if masked { m.k2() } else { m }, x)
        }
        2 => {
            let m = ymmword_ptr(rcx + off);
            a.vpmovdw(if masked { m.k2() } else { m }, x)
        }
        _ => {
            let m = zmmword_ptr(rcx + off);
            a.vmovdqu32(if masked { m.k2() } else { m }, x)
        }
    }
}

/// Stores the 8 i32 codes of `ymm0` (in the output's range) as `elem`-byte codes at
/// `rcx + off`, the first `valid` of them (lane by lane when fewer than 8), narrowing
/// with unsigned saturation for `unsigned` outputs. Also the 1-bit tiles' store.
pub(crate) fn store_ymm0(
    a: &mut CodeAssembler,
    elem: u32,
    unsigned: bool,
    valid: usize,
    off: i32,
) -> Result<(), IcedError> {
    let x = ymm0;
    let at = |i: usize| rcx + (off + (i * elem as usize) as i32);
    match elem {
        1 | 2 => {
            // i32 -> i16 (in range), then -> i8/u8; 8 outputs in the low bytes.
            if unsigned && elem == 2 {
                a.vpackusdw(x, x, x)?;
            } else {
                a.vpackssdw(x, x, x)?;
            }
            a.vpermq(x, x, 0x08)?;
            if elem == 1 {
                if unsigned {
                    a.vpackuswb(x, x, x)?;
                } else {
                    a.vpacksswb(x, x, x)?;
                }
            }
            if valid == 8 {
                if elem == 1 {
                    a.vmovq(qword_ptr(rcx + off), xmm0)?;
                } else {
                    a.vmovdqu(xmmword_ptr(rcx + off), xmm0)?;
                }
            } else {
                for i in 0..valid {
                    if elem == 1 {
                        a.vpextrb(byte_ptr(at(i)), xmm0, i as i32)?;
                    } else {
                        a.vpextrw(word_ptr(at(i)), xmm0, i as i32)?;
                    }
                }
            }
        }
        _ => {
            if valid == 8 {
                a.vmovdqu(ymmword_ptr(rcx + off), x)?;
            } else {
                for i in 0..valid {
                    if i == 4 {
                        a.vextracti128(xmm0, x, 1)?;
                    }
                    a.vpextrd(dword_ptr(at(i)), xmm0, (i % 4) as i32)?;
                }
            }
        }
    }
    Ok(())
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
    k_loop(&mut a, t, |a, co, ro| {
        for v in 0..vecs {
            load_cols(a, t, rows * vecs + v, v, 8, co)?;
        }
        let mut i = 0;
        for r in 0..rows {
            a.vpbroadcastd(bc, dword_ptr(rdi + (ro + (r as u32 * t.row_stride) as i32)))?;
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
    if let Some(e) = &t.epi {
        requantize_avx2(&mut a, t.rows as usize, t.vecs as usize, e)?;
    }
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}

/// The AVX2 tile for weights that fail the pair check: both operands widened to i16,
/// `vpmaddwd` (two exact products per i32 lane) into two accumulators per column
/// vector (columns 0-3 and 4-7, two partial sums per column), combined at the end with
/// `vphaddd` and a `vpermq`. With `t.w16` the weights come pre-widened from the object
/// (conv rows: `[M][Kp]` i16; matmul columns: the tile's panel `[K/4][8 vecs][4]` i16,
/// `col_stride = vecs * 64`), so
/// that the loop widens only the run-time operand: per quad one shuffle per row
/// (matmul) or two per column vector (conv), where it was both.
pub(super) fn avx2_wide(t: &DotTile) -> Result<Vec<u8>, IcedError> {
    let (rows, vecs) = (t.rows as usize, t.vecs as usize);
    let mut a = crate::backend::asm::assembler(false)?;
    let acc = |r: usize, v: usize, h: usize| ymm((r * vecs + v) * 2 + h);
    let col = |v: usize, h: usize| ymm(2 * rows * vecs + 2 * v + h);
    let base = 2 * rows * vecs + 2 * vecs;
    let (w, wx) = (ymm(base), get_xmm_of(base));
    let prod = |i: usize| ymm(base + 1 + i % 2);
    for r in 0..rows {
        for v in 0..vecs {
            for h in 0..2 {
                a.vpxor(acc(r, v, h), acc(r, v, h), acc(r, v, h))?;
            }
        }
    }
    // With `w16` the weights (rows of a convolution, columns of a matrix product) are
    // i16 already: a column vector is two plain loads, a row one `vpbroadcastq` (a
    // load only); only the run-time bytes are widened here.
    let (rows_w16, cols_w16) = (t.w16 && t.rows_signed, t.w16 && !t.rows_signed);
    k_loop(&mut a, t, |a, co, ro| {
        for v in 0..vecs {
            for h in 0..2 {
                if cols_w16 {
                    a.vmovdqu(col(v, h), ymmword_ptr(rsi + (v * 64 + h * 32) as i32))?;
                    continue;
                }
                // Four pixels (16 bytes) at a time: within one row.
                let m = xmmword_ptr(rsi + (co + col_disp(t, v * 8 + h * 4)));
                if t.rows_signed {
                    a.vpmovzxbw(col(v, h), m)?;
                } else {
                    a.vpmovsxbw(col(v, h), m)?;
                }
            }
        }
        let mut i = 0;
        for r in 0..rows {
            let at = rdi + (ro + (r as u32 * t.row_stride) as i32);
            if rows_w16 {
                // The row's 4 K values as i16, broadcast to every 64 bits.
                a.vpbroadcastq(w, qword_ptr(at))?;
            } else {
                // The row's 4 K values as i16 in every 64 bits: the dword broadcast to
                // 16 bytes (a load), widened to 16 words (one shuffle).
                a.vpbroadcastd(wx, dword_ptr(at))?;
                if t.rows_signed {
                    a.vpmovsxbw(w, wx)?;
                } else {
                    a.vpmovzxbw(w, wx)?;
                }
            }
            for v in 0..vecs {
                for h in 0..2 {
                    let p = prod(i);
                    i += 1;
                    a.vpmaddwd(p, col(v, h), w)?;
                    a.vpaddd(acc(r, v, h), acc(r, v, h), p)?;
                }
            }
        }
        Ok(())
    })?;
    let tmp = prod(0);
    for r in 0..rows {
        for v in 0..vecs {
            a.vphaddd(tmp, acc(r, v, 0), acc(r, v, 1))?;
            a.vpermq(tmp, tmp, 0xD8)?;
            a.vmovdqu(ymmword_ptr(rdx + ((r * vecs + v) * 32) as i32), tmp)?;
        }
    }
    if let Some(e) = &t.epi {
        requantize_avx2(&mut a, t.rows as usize, t.vecs as usize, e)?;
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
        DotIsa::Avx2Wide => {
            for c in 0..16 {
                a.vpxor(ymm(c), ymm(c), ymm(c))?;
            }
            a.set_label(&mut top)?;
            for c in 0..chains {
                let p = ymm(chains + c % 3);
                a.vpmaddwd(p, ymm(14), ymm(15))?;
                a.vpaddd(ymm(c), ymm(c), p)?;
            }
        }
        DotIsa::Avx2 => {
            for c in 0..16 {
                a.vpxor(ymm(c), ymm(c), ymm(c))?;
            }
            a.set_label(&mut top)?;
            // chains accumulators, two products in flight, ones and two operands.
            for c in 0..chains {
                let p = ymm(chains + c % 3);
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
