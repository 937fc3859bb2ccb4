//! The f32 register tiles, assembled with iced-x86 (see `backend::asm`): `rows` x
//! `vecs` vector accumulators over the whole of K, then the epilogue and the stores.
//!
//! `void tile(const f32 *a, const f32 *b, f32 *c[, const f32 *bias])` (System V:
//! `rdi`, `rsi`, `rdx`, `rcx`):
//! - `a`: A at `a + k * a_step + r * a_row` (a packed row block `[K][block]`, or a
//!   run-time matrix in either order), one broadcast per row and k: EVEX embedded
//!   broadcast (`{1to16}`) on zmm, `vbroadcastss` on ymm;
//! - `b`: `vecs` column vectors `panel_bytes` apart, row k of B `k * b_k` bytes on
//!   (packed panels: `[K][lanes]` each, `b_k` one vector; or a row-major matrix whose
//!   rows are padded to whole vectors: `panel_bytes` one vector, `b_k` the row);
//!   packed: `vecs` column panels of `lanes` floats, `[K][lanes]` each, `panel_bytes`
//!   apart (the last panel of a matrix is padded with zeros to whole vectors);
//! - `c`: row r at `c + r * ldc_bytes`; the last vector stores only `valid` columns
//!   (an opmask on zmm; 16-, 8- and 4-byte pieces on ymm);
//! - the epilogue: `+ bias[r]` or `+ bias[col]` (whole vectors: the bias is padded),
//!   then `v < lo ? lo : v` and `v > hi ? hi : v` (as
//!   `vmaxps v, lo, v` and `vminps v, hi, v`: a NaN stays a NaN, like the 128-bit
//!   kernels' selects);
//! - a fused SiLU (zmm only, [`silu_zmm`]): after the stores every vector of the tile
//!   is loaded again (from L1), replaced by `x * sigmoid(x)` and stored; all 32
//!   registers are free by then, so the constants stay in registers.

use iced_x86::code_asm::registers::{xmm::get_xmm, ymm::get_ymm, zmm::get_zmm};
use iced_x86::code_asm::*;
use iced_x86::{IcedError, Register};

use super::{FmaIsa, FmaTile};

fn zmm(i: usize) -> AsmRegisterZmm {
    get_zmm(Register::ZMM0 + i as u32).expect("zmm0..zmm31")
}

fn ymm(i: usize) -> AsmRegisterYmm {
    get_ymm(Register::YMM0 + i as u32).expect("ymm0..ymm15")
}

fn xmm(i: usize) -> AsmRegisterXmm {
    get_xmm(Register::XMM0 + i as u32).expect("xmm0..xmm31")
}

/// The K loop, unrolled by two: `body(a, u)` emits step u of an iteration (operands
/// at `rdi + u * a_step`, `rsi + u * lanes * 4`).
fn k_loop(
    a: &mut CodeAssembler,
    t: &FmaTile,
    mut body: impl FnMut(&mut CodeAssembler, usize) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    const U: usize = 2;
    let k = t.k as usize;
    let bk = t.b_k as i32;
    if k / U > 0 {
        let mut top = a.create_label();
        a.mov(r10d, (k / U) as u32)?;
        a.set_label(&mut top)?;
        for u in 0..U {
            body(a, u)?;
        }
        a.add(rdi, (U as u32 * t.a_step) as i32)?;
        a.add(rsi, U as i32 * bk)?;
        a.sub(r10d, 1)?;
        a.jnz(top)?;
    }
    for u in 0..k % U {
        body(a, u)?;
    }
    Ok(())
}

/// A constant f32 broadcast into `dst` (through `eax` and `dst`'s low xmm).
fn splat_zmm(a: &mut CodeAssembler, dst: usize, bits: u32) -> Result<(), IcedError> {
    a.mov(eax, bits)?;
    a.vmovd(xmm(dst), eax)?;
    a.vbroadcastss(zmm(dst), xmm(dst))
}

fn splat_ymm(a: &mut CodeAssembler, dst: usize, bits: u32) -> Result<(), IcedError> {
    a.mov(eax, bits)?;
    a.vmovd(xmm(dst), eax)?;
    a.vbroadcastss(ymm(dst), xmm(dst))
}

pub(super) fn zmm_tile(t: &FmaTile) -> Result<Vec<u8>, IcedError> {
    let (rows, vecs) = (t.rows as usize, t.vecs as usize);
    let mut a = crate::backend::asm::assembler(true)?;
    let acc = |r: usize, v: usize| r * vecs + v;
    let col = |v: usize| rows * vecs + v;
    let pb = t.panel_bytes as i32;
    let valid = t.valid as usize;
    if valid < 16 {
        a.mov(eax, (1u32 << valid) - 1)?;
        a.kmovw(k1, eax)?;
    }
    for r in 0..rows {
        for v in 0..vecs {
            let i = acc(r, v);
            if !t.acc_in {
                a.vxorps(zmm(i), zmm(i), zmm(i))?;
                continue;
            }
            let m = zmmword_ptr(rdx + (r as u32 * t.ldc_bytes + v as u32 * 64) as i32);
            if v == vecs - 1 && valid < 16 {
                a.vmovups(zmm(i).k1().z(), m)?;
            } else {
                a.vmovups(zmm(i), m)?;
            }
        }
    }
    k_loop(&mut a, t, |a, u| {
        for v in 0..vecs {
            a.vmovups(
                zmm(col(v)),
                zmmword_ptr(rsi + (v as i32 * pb + u as i32 * t.b_k as i32)),
            )?;
        }
        for r in 0..rows {
            let m = rdi + (u as u32 * t.a_step + r as u32 * t.a_row) as i32;
            for v in 0..vecs {
                a.vfmadd231ps(zmm(acc(r, v)), zmm(col(v)), dword_bcst(m))?;
            }
        }
        Ok(())
    })?;
    if t.bias {
        for r in 0..rows {
            for v in 0..vecs {
                let i = acc(r, v);
                a.vaddps(zmm(i), zmm(i), dword_bcst(rcx + (r * 4) as i32))?;
            }
        }
    }
    if t.col_bias {
        for v in 0..vecs {
            a.vmovups(zmm(col(v)), zmmword_ptr(rcx + (v * 64) as i32))?;
            for r in 0..rows {
                let i = acc(r, v);
                a.vaddps(zmm(i), zmm(i), zmm(col(v)))?;
            }
        }
    }
    // The column registers are free now.
    let (lo, hi) = (col(0), rows * vecs + vecs.max(2) - 1);
    let hi = if vecs >= 2 { hi } else { 31 };
    if let Some(l) = t.lo {
        splat_zmm(&mut a, lo, l)?;
    }
    if let Some(h) = t.hi {
        splat_zmm(&mut a, hi, h)?;
    }
    for r in 0..rows {
        for v in 0..vecs {
            let i = acc(r, v);
            if t.lo.is_some() {
                a.vmaxps(zmm(i), zmm(lo), zmm(i))?;
            }
            if t.hi.is_some() {
                a.vminps(zmm(i), zmm(hi), zmm(i))?;
            }
            let m = zmmword_ptr(rdx + (r as u32 * t.ldc_bytes + v as u32 * 64) as i32);
            if v == vecs - 1 && valid < 16 {
                a.vmovups(m.k1(), zmm(i))?;
            } else {
                a.vmovups(m, zmm(i))?;
            }
        }
    }
    if t.silu {
        let vectors: Vec<(i32, bool)> = (0..rows)
            .flat_map(|r| {
                (0..vecs).map(move |v| {
                    (
                        (r as u32 * t.ldc_bytes + v as u32 * 64) as i32,
                        v == vecs - 1 && valid < 16,
                    )
                })
            })
            .collect();
        silu_zmm(&mut a, &vectors)?;
    }
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}

/// The constants of [`silu_zmm`] (f32): the clamp of x, `-log2(e)`, `ln 2` in two
/// parts, exp's polynomial (`math.rs`), 1.
const SILU_LO: f32 = -80.0;
const SILU_HI: f32 = 88.0;
const SILU_C: [f32; 11] = [
    SILU_LO,
    SILU_HI,
    -std::f32::consts::LOG2_E,
    0.693_359_4,
    -2.121_944_4e-4,
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `x * sigmoid(x)` in place on the zmm vectors at `rdx + off` (`masked`: the lanes of
/// `k1` only), every register free. Per vector: `c = clamp(x, -80, 88)` (NaN stays),
/// `n = round(-c log2 e)`, `r = -c - n ln2` (two parts), `e^-c = 2^n (1 + r + r^2
/// p(r))` with `math.rs`'s polynomial and `vscalefps`, `d = 1 + e^-c`, `1/d` by
/// `vrcp14ps` and one Newton step (`2^-14` to about one ulp), `x * (1/d)`, with `1/d`
/// set to 0 below -80 (where the interpreter's is below `2e-35`, or 0 past -88.7). The
/// clamp keeps `1/d` a normal number and `r` finite. Within a few ulps of the
/// interpreter's `x * (1 / (1 + e^-x))` above -80, within `1e-32` below (-0 for
/// finite x, NaN at -inf, as the interpreter).
fn silu_zmm(a: &mut CodeAssembler, vectors: &[(i32, bool)]) -> Result<(), IcedError> {
    silu_consts(a)?;
    for &(off, masked) in vectors {
        silu_vector(a, rdx, rdx, off, masked)?;
    }
    Ok(())
}

/// The constants of [`silu_vector`]: zmm20..30 ([`SILU_C`]) and 1 in zmm31.
fn silu_consts(a: &mut CodeAssembler) -> Result<(), IcedError> {
    for (i, v) in SILU_C.iter().enumerate() {
        splat_zmm(a, 20 + i, v.to_bits())?;
    }
    splat_zmm(a, 31, 1f32.to_bits())
}

/// One vector of [`silu_zmm`]: from `src + off` to `dst + off` (the lanes of `k1`
/// where `masked`), with zmm0..4 and `k2` as temporaries.
fn silu_vector(
    a: &mut CodeAssembler,
    src: AsmRegister64,
    dst: AsmRegister64,
    off: i32,
    masked: bool,
) -> Result<(), IcedError> {
    let c = |i: usize| zmm(20 + i);
    let one = zmm(31);
    let (x, r, n, p, rr) = (zmm(0), zmm(1), zmm(2), zmm(3), zmm(4));
    let m = zmmword_ptr(src + off);
    if masked {
        a.vmovups(x.k1().z(), m)?;
    } else {
        a.vmovups(x, m)?;
    }
    // k2: x < -80, where 1/d is taken as 0 (x * 0: -0, or NaN at -inf).
    a.vcmpps(k2, x, c(0), 0x11)?;
    a.vmaxps(r, c(0), x)?;
    a.vminps(r, c(1), r)?;
    a.vmulps(n, r, c(2))?;
    a.vrndscaleps(n, n, 0x08)?;
    // r = -c - n ln2_hi - n ln2_lo
    a.vfnmsub231ps(r, n, c(3))?;
    a.vfnmadd231ps(r, n, c(4))?;
    // p = ((((P0 r + P1) r + P2) r + P3) r + P4) r + P5
    a.vmovaps(p, c(6))?;
    a.vfmadd231ps(p, r, c(5))?;
    for k in 7..11 {
        a.vfmadd213ps(p, r, c(k))?;
    }
    a.vmulps(rr, r, r)?;
    a.vfmadd213ps(p, rr, r)?;
    a.vaddps(p, p, one)?;
    a.vscalefps(p, p, n)?;
    // d = 1 + e^-c; 1/d
    a.vaddps(p, p, one)?;
    a.vrcp14ps(rr, p)?;
    a.vfnmadd213ps(p, rr, one)?;
    a.vfmadd231ps(rr, rr, p)?;
    a.vxorps(rr.k2(), rr, rr)?;
    a.vmulps(x, x, rr)?;
    let m = zmmword_ptr(dst + off);
    if masked {
        a.vmovups(m.k1(), x)?;
    } else {
        a.vmovups(m, x)?;
    }
    Ok(())
}

/// `void silu(const f32 *x, f32 *out)` over `n` floats on zmm ([`silu_zmm`]'s steps,
/// the last vector masked): every element through the same code, however a layer is
/// cut into tasks.
pub(crate) fn silu_loop(n: u32) -> Result<Vec<u8>, IcedError> {
    let mut a = crate::backend::asm::assembler(true)?;
    silu_consts(&mut a)?;
    let steps = n / 16;
    if steps > 0 {
        let mut top = a.create_label();
        a.mov(r10d, steps)?;
        a.set_label(&mut top)?;
        silu_vector(&mut a, rdi, rsi, 0, false)?;
        a.add(rdi, 64)?;
        a.add(rsi, 64)?;
        a.sub(r10d, 1)?;
        a.jnz(top)?;
    }
    if !n.is_multiple_of(16) {
        a.mov(eax, (1u32 << (n % 16)) - 1)?;
        a.kmovw(k1, eax)?;
        silu_vector(&mut a, rdi, rsi, 0, true)?;
    }
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}

/// Loads `w` (1..=7) floats at `rdx + off` into ymm `dst` (the other lanes are zeros),
/// with `tmp`'s xmm for the upper half.
fn load_partial_ymm(
    a: &mut CodeAssembler,
    dst: usize,
    tmp: usize,
    off: i32,
    w: usize,
) -> Result<(), IcedError> {
    // Up to three floats at `p` into xmm `x` (upper lanes zeroed).
    let small = |a: &mut CodeAssembler, x: usize, p: i32, n: usize| -> Result<(), IcedError> {
        match n {
            0 => a.vxorps(xmm(x), xmm(x), xmm(x)),
            1 => a.vmovss(xmm(x), dword_ptr(rdx + p)),
            2 => a.vmovsd(xmm(x), qword_ptr(rdx + p)),
            _ => {
                a.vmovsd(xmm(x), qword_ptr(rdx + p))?;
                a.vinsertps(xmm(x), xmm(x), dword_ptr(rdx + p + 8), 0x20)
            }
        }
    };
    if w >= 4 {
        a.vmovups(xmm(dst), xmmword_ptr(rdx + off))?;
        small(a, tmp, off + 16, w - 4)?;
        a.vinsertf128(ymm(dst), ymm(dst), xmm(tmp), 1)
    } else {
        small(a, dst, off, w)
    }
}

pub(super) fn ymm_tile(t: &FmaTile) -> Result<Vec<u8>, IcedError> {
    let (rows, vecs) = (t.rows as usize, t.vecs as usize);
    let mut a = crate::backend::asm::assembler(false)?;
    let acc = |r: usize, v: usize| r * vecs + v;
    let col = |v: usize| rows * vecs + v;
    let bc = rows * vecs + vecs;
    let pb = t.panel_bytes as i32;
    for r in 0..rows {
        for v in 0..vecs {
            let i = acc(r, v);
            if !t.acc_in {
                a.vxorps(ymm(i), ymm(i), ymm(i))?;
                continue;
            }
            let off = (r as u32 * t.ldc_bytes + v as u32 * 32) as i32;
            if v < vecs - 1 || t.valid == 8 {
                a.vmovups(ymm(i), ymmword_ptr(rdx + off))?;
            } else {
                load_partial_ymm(&mut a, i, bc, off, t.valid as usize)?;
            }
        }
    }
    k_loop(&mut a, t, |a, u| {
        for v in 0..vecs {
            a.vmovups(
                ymm(col(v)),
                ymmword_ptr(rsi + (v as i32 * pb + u as i32 * t.b_k as i32)),
            )?;
        }
        for r in 0..rows {
            let m = rdi + (u as u32 * t.a_step + r as u32 * t.a_row) as i32;
            a.vbroadcastss(ymm(bc), dword_ptr(m))?;
            for v in 0..vecs {
                a.vfmadd231ps(ymm(acc(r, v)), ymm(col(v)), ymm(bc))?;
            }
        }
        Ok(())
    })?;
    if t.bias {
        for r in 0..rows {
            a.vbroadcastss(ymm(bc), dword_ptr(rcx + (r * 4) as i32))?;
            for v in 0..vecs {
                let i = acc(r, v);
                a.vaddps(ymm(i), ymm(i), ymm(bc))?;
            }
        }
    }
    if t.col_bias {
        for v in 0..vecs {
            a.vmovups(ymm(col(v)), ymmword_ptr(rcx + (v * 32) as i32))?;
            for r in 0..rows {
                let i = acc(r, v);
                a.vaddps(ymm(i), ymm(i), ymm(col(v)))?;
            }
        }
    }
    let (lo, hi) = (col(0), bc);
    if let Some(l) = t.lo {
        splat_ymm(&mut a, lo, l)?;
    }
    if let Some(h) = t.hi {
        splat_ymm(&mut a, hi, h)?;
    }
    let valid = t.valid as usize;
    for r in 0..rows {
        for v in 0..vecs {
            let i = acc(r, v);
            if t.lo.is_some() {
                a.vmaxps(ymm(i), ymm(lo), ymm(i))?;
            }
            if t.hi.is_some() {
                a.vminps(ymm(i), ymm(hi), ymm(i))?;
            }
            let mut off = (r as u32 * t.ldc_bytes + v as u32 * 32) as i32;
            if v < vecs - 1 || valid == 8 {
                a.vmovups(ymmword_ptr(rdx + off), ymm(i))?;
                continue;
            }
            // A partial vector: pieces of 4, 2 and 1 floats; the accumulator's own
            // register holds what is left.
            let mut w = valid;
            if w >= 4 {
                a.vmovups(xmmword_ptr(rdx + off), xmm(i))?;
                a.vextractf128(xmm(i), ymm(i), 1)?;
                off += 16;
                w -= 4;
            }
            if w >= 2 {
                a.vmovlps(qword_ptr(rdx + off), xmm(i))?;
                off += 8;
                w -= 2;
                if w == 1 {
                    a.vextractps(dword_ptr(rdx + off), xmm(i), 2)?;
                }
            } else if w == 1 {
                a.vmovss(dword_ptr(rdx + off), xmm(i))?;
            }
        }
    }
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}

/// A loop of `chains` independent `vfmadd231ps` chains on the isa's registers, `rdi`
/// iterations: the peak of the tiles' instruction mix, for the benchmark.
/// `int loop(u64 iters)`.
pub(crate) fn peak_loop(isa: FmaIsa, chains: usize) -> Result<Vec<u8>, IcedError> {
    let mut a = crate::backend::asm::assembler(isa == FmaIsa::Zmm)?;
    let mut top = a.create_label();
    match isa {
        FmaIsa::Zmm => {
            for c in 0..chains + 2 {
                a.vxorps(zmm(c), zmm(c), zmm(c))?;
            }
            a.set_label(&mut top)?;
            for c in 0..chains {
                a.vfmadd231ps(zmm(c), zmm(chains), zmm(chains + 1))?;
            }
        }
        FmaIsa::Ymm => {
            for c in 0..chains + 2 {
                a.vxorps(ymm(c), ymm(c), ymm(c))?;
            }
            a.set_label(&mut top)?;
            for c in 0..chains {
                a.vfmadd231ps(ymm(c), ymm(chains), ymm(chains + 1))?;
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
