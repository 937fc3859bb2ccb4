//! The register tiles of the 1-bit XNOR-popcount family, one per tier, assembled with
//! iced-x86 (see `backend::asm`).
//!
//! Both read the same operands: `rows` row-major, one 64-bit word of K per row and step
//! (`row_stride` bytes between rows), and the columns in panels of 8, `[KW][8]` words
//! per panel (`panel_stride` bytes between panels), so that one 64-byte load holds one
//! K word of 8 columns. Each step broadcasts one word of each row and XORs it with the
//! tile's column words; the popcounts are summed per column lane.
//!
//! - AVX-512 + VPOPCNTDQ: per row and panel, `vpxorq` (or, masked, one `vpternlogq`
//!   computing `(col ^ row) & mask`), `vpopcntq` and `vpaddq` into u64 lanes: three
//!   instructions per 512 binary MACs.
//! - AVX2: per row and half panel (4 columns), `vpxor` (and `vpand` with the mask),
//!   then the nibble lookup: `vpsrlw` by 4, two `vpand` with 0x0f, two `vpshufb` from
//!   the 16-entry popcount table and two `vpaddb` into byte counters. A byte counter
//!   gains at most 8 per step, so every [`CHUNK`] steps (and at the end) `vpsadbw`
//!   against zero sums each column's 8 bytes into its u64 lane; with more than one
//!   chunk the running u64 sums live on the stack.
//!
//! The epilogue turns each column's popcount `p` into the dot product `valid - 2 p`
//! (`valid`: K, or with a mask the column's count of valid taps from a table of i32)
//! and stores it as i32 into the result rows (`buf_row` bytes apart), which
//! Cranelift's epilogue then finishes, or (a convolution whose requantize has the
//! vector form) the tile requantizes and stores them itself with the u8 x i8 family's
//! in-tile requantize (`dot::requantize`, `dot::requantize_avx2`): the result rows are
//! then its sums, 16 (zmm) or 8 (ymm) columns per vector.

use iced_x86::code_asm::registers::{xmm::get_xmm, ymm::get_ymm, zmm::get_zmm};
use iced_x86::code_asm::*;
use iced_x86::{IcedError, Register};

use super::{ThrEpi, XnorEpi, XnorIsa, XnorTile};

/// Steps of the AVX2 tile between two folds of its byte counters (31 x 8 < 256).
pub(crate) const CHUNK: u32 = 31;

fn zmm(i: usize) -> AsmRegisterZmm {
    get_zmm(Register::ZMM0 + i as u32).expect("zmm0..zmm31")
}

fn ymm(i: usize) -> AsmRegisterYmm {
    get_ymm(Register::YMM0 + i as u32).expect("ymm0..ymm31")
}

fn xmm(i: usize) -> AsmRegisterXmm {
    get_xmm(Register::XMM0 + i as u32).expect("xmm0..xmm31")
}

/// `(col ^ row) & mask` as `vpternlogq`'s immediate with the mask in the destination
/// (operand A), the column B and the row C: set where A and exactly one of B, C.
const XOR_AND_MASK: i32 = 0x60;

/// The zmm tile. Registers: `rows x panels` u64 accumulators, the panels' column
/// words, the broadcast row word and temporaries. Arguments: `rdi` rows, `rsi` the
/// first panel, `rdx` the result rows, and with a mask `rcx` the mask's first panel,
/// `r8` the valid counts of the tile's first column.
pub(super) fn zmm_tile(t: &XnorTile) -> Result<Vec<u8>, IcedError> {
    let (rows, panels) = (t.rows as usize, t.panels as usize);
    let mut a = crate::backend::asm::assembler(true)?;
    let acc = |r: usize, j: usize| zmm(r * panels + j);
    let col = |j: usize| zmm(rows * panels + j);
    let base = rows * panels + panels;
    let bc = zmm(base);
    let ntmp = 32 - base - 1;
    let tmp = |i: usize| base + 1 + i % ntmp;
    let ps = t.panel_stride as i32;
    for r in 0..rows {
        for j in 0..panels {
            a.vpxorq(acc(r, j), acc(r, j), acc(r, j))?;
        }
    }
    let mut top = a.create_label();
    a.mov(r10d, t.words)?;
    a.set_label(&mut top)?;
    for j in 0..panels {
        a.vmovdqu64(col(j), zmmword_ptr(rsi + j as i32 * ps))?;
    }
    let mut i = 0;
    for r in 0..rows {
        a.vpbroadcastq(bc, qword_ptr(rdi + (r as u32 * t.row_stride) as i32))?;
        for j in 0..panels {
            let x = zmm(tmp(i));
            i += 1;
            if t.masked {
                a.vmovdqu64(x, zmmword_ptr(rcx + j as i32 * ps))?;
                a.vpternlogq(x, col(j), bc, XOR_AND_MASK)?;
            } else {
                a.vpxorq(x, col(j), bc)?;
            }
            a.vpopcntq(x, x)?;
            a.vpaddq(acc(r, j), acc(r, j), x)?;
        }
    }
    a.add(rdi, 8)?;
    a.add(rsi, 64)?;
    if t.masked {
        a.add(rcx, 64)?;
    }
    a.sub(r10d, 1)?;
    a.jnz(top)?;
    // Epilogue: valid - 2 p as i32, 8 columns per panel, two panels per store.
    let kv = ymm(tmp(0));
    if !t.masked {
        a.mov(eax, t.k)?;
        a.vpbroadcastd(kv, eax)?;
    }
    let dots = |a: &mut CodeAssembler, r: usize, j: usize, x: usize| -> Result<(), IcedError> {
        a.vpsllq(acc(r, j), acc(r, j), 1)?;
        a.vpmovqd(ymm(x), acc(r, j))?;
        if t.masked {
            a.vmovdqu32(kv, ymmword_ptr(r8 + j as i32 * 32))?;
        }
        a.vpsubd(ymm(x), kv, ymm(x))
    };
    for r in 0..rows {
        for j in (0..panels).step_by(2) {
            let off = (r as u32 * t.buf_row) as i32 + j as i32 * 32;
            dots(&mut a, r, j, tmp(1))?;
            if j + 1 < panels {
                dots(&mut a, r, j + 1, tmp(2))?;
                a.vinserti32x8(zmm(tmp(1)), zmm(tmp(1)), ymm(tmp(2)), 1)?;
                a.vmovdqu32(zmmword_ptr(rdx + off), zmm(tmp(1)))?;
            } else {
                a.vmovdqu32(ymmword_ptr(rdx + off), ymm(tmp(1)))?;
            }
        }
    }
    finish(a, t, rows)
}

/// The ymm tile (VEX only, 16 registers): `rows x 2 panels` byte counters, the column
/// halves, the nibble table, the 0x0f mask, the broadcast row word and two
/// temporaries. Arguments as for [`zmm_tile`].
pub(super) fn ymm_tile(t: &XnorTile) -> Result<Vec<u8>, IcedError> {
    let (rows, vecs) = (t.rows as usize, 2 * t.panels as usize);
    let mut a = crate::backend::asm::assembler(false)?;
    let acc = |r: usize, v: usize| ymm(r * vecs + v);
    let col = |v: usize| ymm(rows * vecs + v);
    let base = rows * vecs + vecs;
    let (lut, low, bc, x, y) = (
        ymm(base),
        ymm(base + 1),
        ymm(base + 2),
        ymm(base + 3),
        ymm(base + 4),
    );
    debug_assert!(base + 5 <= 16);
    let ps = t.panel_stride as i32;
    // Vector v is half v % 2 of panel v / 2.
    let voff = |v: usize| (v / 2) as i32 * ps + (v % 2) as i32 * 32;
    // The popcounts of 0..15 in both 128-bit lanes.
    a.mov(rax, 0x0302_0201_0201_0100u64)?;
    a.vmovq(xmm(base), rax)?;
    a.mov(rax, 0x0403_0302_0302_0201u64)?;
    a.vpinsrq(xmm(base), xmm(base), rax, 1)?;
    a.vpermq(lut, lut, 0x44)?;
    a.mov(eax, 0x0f0f_0f0fu32)?;
    a.vmovd(xmm(base + 1), eax)?;
    a.vpbroadcastd(low, xmm(base + 1))?;
    for r in 0..rows {
        for v in 0..vecs {
            a.vpxor(acc(r, v), acc(r, v), acc(r, v))?;
        }
    }
    let chunks = t.words.div_ceil(CHUNK);
    let nacc = rows * vecs;
    if chunks > 1 {
        // Running u64 sums on the stack (a leaf function: nothing else uses it).
        a.sub(rsp, (nacc * 32) as i32)?;
        a.vpxor(x, x, x)?;
        for i in 0..nacc {
            a.vmovdqu(ymmword_ptr(rsp + (i * 32) as i32), x)?;
        }
    }
    let body = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        for v in 0..vecs {
            a.vmovdqu(col(v), ymmword_ptr(rsi + voff(v)))?;
        }
        for r in 0..rows {
            a.vpbroadcastq(bc, qword_ptr(rdi + (r as u32 * t.row_stride) as i32))?;
            for v in 0..vecs {
                a.vpxor(x, col(v), bc)?;
                if t.masked {
                    a.vpand(x, x, ymmword_ptr(rcx + voff(v)))?;
                }
                a.vpsrlw(y, x, 4)?;
                a.vpand(x, x, low)?;
                a.vpand(y, y, low)?;
                a.vpshufb(x, lut, x)?;
                a.vpshufb(y, lut, y)?;
                a.vpaddb(acc(r, v), acc(r, v), x)?;
                a.vpaddb(acc(r, v), acc(r, v), y)?;
            }
        }
        a.add(rdi, 8)?;
        a.add(rsi, 64)?;
        if t.masked {
            a.add(rcx, 64)?;
        }
        Ok(())
    };
    // One chunk of `steps` steps, then (several chunks) the fold into the stack sums.
    let chunk = |a: &mut CodeAssembler, steps: u32| -> Result<(), IcedError> {
        let mut top = a.create_label();
        a.mov(r10d, steps)?;
        a.set_label(&mut top)?;
        body(a)?;
        a.sub(r10d, 1)?;
        a.jnz(top)?;
        if chunks > 1 {
            a.vpxor(y, y, y)?;
            for r in 0..rows {
                for v in 0..vecs {
                    let s = ymmword_ptr(rsp + ((r * vecs + v) * 32) as i32);
                    a.vpsadbw(x, acc(r, v), y)?;
                    a.vpaddq(x, x, s)?;
                    a.vmovdqu(s, x)?;
                    a.vpxor(acc(r, v), acc(r, v), acc(r, v))?;
                }
            }
        }
        Ok(())
    };
    in_chunks(&mut a, t.words, r11d, chunk)?;
    // The popcounts as u64 lanes in the accumulators.
    if chunks > 1 {
        for r in 0..rows {
            for v in 0..vecs {
                a.vmovdqu(acc(r, v), ymmword_ptr(rsp + ((r * vecs + v) * 32) as i32))?;
            }
        }
        a.add(rsp, (nacc * 32) as i32)?;
    } else {
        a.vpxor(y, y, y)?;
        for r in 0..rows {
            for v in 0..vecs {
                a.vpsadbw(acc(r, v), acc(r, v), y)?;
            }
        }
    }
    // Epilogue: valid - 2 p, narrowed to 4 i32 per vector.
    let kv = lut;
    if !t.masked {
        a.mov(eax, t.k)?;
        a.vmovq(xmm(base), rax)?;
        a.vpbroadcastq(kv, xmm(base))?;
    }
    for r in 0..rows {
        for v in 0..vecs {
            a.vpsllq(acc(r, v), acc(r, v), 1)?;
            if t.masked {
                a.vpmovzxdq(x, xmmword_ptr(r8 + (v * 16) as i32))?;
                a.vpsubq(x, x, acc(r, v))?;
            } else {
                a.vpsubq(x, kv, acc(r, v))?;
            }
            a.vpshufd(x, x, 0x08)?;
            a.vpermq(x, x, 0x08)?;
            let off = (r as u32 * t.buf_row) as i32 + (v * 16) as i32;
            a.vmovdqu(xmmword_ptr(rdx + off), xmm(base + 3))?;
        }
    }
    finish(a, t, rows)
}

/// The bit-serial zmm tile (see [`super::BsPlanes`]): per row, row plane `i`, panel
/// and column plane `j` one u64 accumulator of `popcount(row_i & col_j)` per column
/// lane; the column words of every panel and plane stay in registers for the step.
/// The epilogue weights each accumulator by `s_i s_j 2^(i+j)` (`vpsllq`, `vpaddq` or
/// `vpsubq` into the `(0, 0)` one, which is never negative: planes are at least two),
/// narrows the sums to i32 (`vpmovqd`: the i32 wrap-around of the exact i64 sum) and
/// stores 8 per panel at `rdx + r * buf_row + panel * 32`; the in-tile requantize
/// then reads them as the XNOR tile's. Arguments as for [`zmm_tile`] (no mask).
pub(super) fn bs_zmm_tile(t: &XnorTile, b: super::BsPlanes) -> Result<Vec<u8>, IcedError> {
    let (rows, panels) = (t.rows as usize, t.panels as usize);
    let (pr, pc) = (b.rows as usize, b.cols as usize);
    let cols = panels * pc;
    let mut a = crate::backend::asm::assembler(true)?;
    let acc = |r: usize, i: usize, g: usize, j: usize| zmm(((r * pr + i) * panels + g) * pc + j);
    let nacc = rows * pr * cols;
    let col = |g: usize, j: usize| zmm(nacc + g * pc + j);
    let bc = zmm(nacc + cols);
    let (t0, t1) = (nacc + cols + 1, nacc + cols + 2);
    debug_assert!(t1 < 32, "{rows}x{panels} tile of {pr}x{pc} planes");
    let ps = t.panel_stride as i32;
    for n in 0..nacc {
        a.vpxorq(zmm(n), zmm(n), zmm(n))?;
    }
    let mut top = a.create_label();
    a.mov(r10d, t.words)?;
    a.set_label(&mut top)?;
    for g in 0..panels {
        for j in 0..pc {
            a.vmovdqu64(
                col(g, j),
                zmmword_ptr(rsi + (g as i32 * ps + j as i32 * 64)),
            )?;
        }
    }
    let mut n = 0;
    for r in 0..rows {
        for i in 0..pr {
            let at = (r as u32 * t.row_stride) as i32 + (i * 8) as i32;
            a.vpbroadcastq(bc, qword_ptr(rdi + at))?;
            for g in 0..panels {
                for j in 0..pc {
                    // Two temporaries in turn: one popcount's result is added while
                    // the next one is computed.
                    let x = zmm(if n % 2 == 0 { t0 } else { t1 });
                    n += 1;
                    a.vpandq(x, col(g, j), bc)?;
                    a.vpopcntq(x, x)?;
                    a.vpaddq(acc(r, i, g, j), acc(r, i, g, j), x)?;
                }
            }
        }
    }
    a.add(rdi, (pr * 8) as i32)?;
    a.add(rsi, (pc * 64) as i32)?;
    a.sub(r10d, 1)?;
    a.jnz(top)?;
    for r in 0..rows {
        for g in 0..panels {
            let sum = acc(r, 0, g, 0);
            for i in 0..pr {
                for j in 0..pc {
                    if i + j == 0 {
                        continue;
                    }
                    let (sh, neg) = b.term(i, j);
                    let x = acc(r, i, g, j);
                    a.vpsllq(x, x, sh)?;
                    if neg {
                        a.vpsubq(sum, sum, x)?;
                    } else {
                        a.vpaddq(sum, sum, x)?;
                    }
                }
            }
            let y = ymm(t0);
            a.vpmovqd(y, sum)?;
            let off = (r as u32 * t.buf_row) as i32 + g as i32 * 32;
            a.vmovdqu32(ymmword_ptr(rdx + off), y)?;
        }
    }
    finish(a, t, rows)
}

/// The bit-serial ymm tile (VEX only): the nibble lookup of [`ymm_tile`] with `vpand`
/// for `vpxor`, one half panel (4 columns) at a time, each over the whole of K: per
/// row, row plane and column plane a vector of byte counters (at most 11 with the
/// table, the nibble mask, the broadcast row word and two temporaries), the column
/// word a memory operand of the `vpand`. Every [`CHUNK`] steps (and at the end) the
/// counters are summed per lane (`vpsadbw`), weighted by `s_i s_j 2^(i+j)` and added
/// into one u64 sum per row (on the stack with more than one chunk), which the
/// epilogue narrows to 4 i32 at `rdx + r * buf_row + vector * 16`.
pub(super) fn bs_ymm_tile(t: &XnorTile, b: super::BsPlanes) -> Result<Vec<u8>, IcedError> {
    let (rows, vecs) = (t.rows as usize, 2 * t.panels as usize);
    let (pr, pc) = (b.rows as usize, b.cols as usize);
    let mut a = crate::backend::asm::assembler(false)?;
    let acc = |r: usize, i: usize, j: usize| ymm((r * pr + i) * pc + j);
    let nacc = rows * pr * pc;
    debug_assert!(nacc <= 11, "{rows} rows of {pr}x{pc} planes");
    let (lut, low, bc, x, y) = (ymm(11), ymm(12), ymm(13), ymm(14), ymm(15));
    let ps = t.panel_stride as i32;
    let voff = |v: usize| (v / 2) as i32 * ps + (v % 2) as i32 * 32;
    a.mov(rax, 0x0302_0201_0201_0100u64)?;
    a.vmovq(xmm(11), rax)?;
    a.mov(rax, 0x0403_0302_0302_0201u64)?;
    a.vpinsrq(xmm(11), xmm(11), rax, 1)?;
    a.vpermq(lut, lut, 0x44)?;
    a.mov(eax, 0x0f0f_0f0fu32)?;
    a.vmovd(xmm(12), eax)?;
    a.vpbroadcastd(low, xmm(12))?;
    let chunks = t.words.div_ceil(CHUNK);
    if chunks > 1 {
        a.sub(rsp, (rows * 32) as i32)?;
    }
    // The weighted sums of the counters into `y` (row r), zeroing the counters.
    let fold = |a: &mut CodeAssembler, r: usize| -> Result<(), IcedError> {
        a.vpxor(bc, bc, bc)?;
        a.vpsadbw(y, acc(r, 0, 0), bc)?;
        a.vpxor(acc(r, 0, 0), acc(r, 0, 0), acc(r, 0, 0))?;
        for i in 0..pr {
            for j in 0..pc {
                if i + j == 0 {
                    continue;
                }
                let (sh, neg) = b.term(i, j);
                a.vpsadbw(x, acc(r, i, j), bc)?;
                a.vpxor(acc(r, i, j), acc(r, i, j), acc(r, i, j))?;
                a.vpsllq(x, x, sh)?;
                if neg {
                    a.vpsubq(y, y, x)?;
                } else {
                    a.vpaddq(y, y, x)?;
                }
            }
        }
        Ok(())
    };
    for v in 0..vecs {
        for n in 0..nacc {
            a.vpxor(ymm(n), ymm(n), ymm(n))?;
        }
        if chunks > 1 {
            a.vpxor(x, x, x)?;
            for r in 0..rows {
                a.vmovdqu(ymmword_ptr(rsp + (r * 32) as i32), x)?;
            }
        }
        // The K loop restarts at the first word: rdi and rsi are kept, the loop
        // pointers are rax (rows) and r11 (columns).
        a.mov(rax, rdi)?;
        a.lea(r11, qword_ptr(rsi + voff(v)))?;
        let chunk = |a: &mut CodeAssembler, steps: u32| -> Result<(), IcedError> {
            let mut top = a.create_label();
            a.mov(r10d, steps)?;
            a.set_label(&mut top)?;
            for r in 0..rows {
                for i in 0..pr {
                    let at = (r as u32 * t.row_stride) as i32 + (i * 8) as i32;
                    a.vpbroadcastq(bc, qword_ptr(rax + at))?;
                    for j in 0..pc {
                        a.vpand(x, bc, ymmword_ptr(r11 + (j * 64) as i32))?;
                        a.vpsrlw(y, x, 4)?;
                        a.vpand(x, x, low)?;
                        a.vpand(y, y, low)?;
                        a.vpshufb(x, lut, x)?;
                        a.vpshufb(y, lut, y)?;
                        a.vpaddb(acc(r, i, j), acc(r, i, j), x)?;
                        a.vpaddb(acc(r, i, j), acc(r, i, j), y)?;
                    }
                }
            }
            a.add(rax, (pr * 8) as i32)?;
            a.add(r11, (pc * 64) as i32)?;
            a.sub(r10d, 1)?;
            a.jnz(top)?;
            if chunks > 1 {
                for r in 0..rows {
                    let s = ymmword_ptr(rsp + (r * 32) as i32);
                    fold(a, r)?;
                    a.vpaddq(y, y, s)?;
                    a.vmovdqu(s, y)?;
                }
            }
            Ok(())
        };
        // ecx counts the chunks: the mask argument, which a bit-serial tile never has
        // (r9 holds the in-tile epilogue's outputs).
        in_chunks(&mut a, t.words, ecx, chunk)?;
        for r in 0..rows {
            if chunks > 1 {
                a.vmovdqu(y, ymmword_ptr(rsp + (r * 32) as i32))?;
            } else {
                fold(&mut a, r)?;
            }
            a.vpshufd(y, y, 0x08)?;
            a.vpermq(y, y, 0x08)?;
            let off = (r as u32 * t.buf_row) as i32 + (v * 16) as i32;
            a.vmovdqu(xmmword_ptr(rdx + off), xmm(15))?;
        }
    }
    if chunks > 1 {
        a.add(rsp, (rows * 32) as i32)?;
    }
    finish(a, t, rows)
}

/// The end of every tile once its sums are stored at `rdx`: the in-tile requantize or
/// threshold of `t.epi` for `rows` rows (zmm: 16 columns per vector, ymm: 8), then
/// `vzeroupper`, `ret`, and the machine code.
fn finish(mut a: CodeAssembler, t: &XnorTile, rows: usize) -> Result<Vec<u8>, IcedError> {
    let zmm = t.isa == XnorIsa::Zmm;
    let vecs = if zmm {
        (t.panels as usize).div_ceil(2)
    } else {
        t.panels as usize
    };
    match &t.epi {
        None => {}
        Some(XnorEpi::Requant(e)) => {
            in_tile_args(&mut a)?;
            if zmm {
                crate::backend::kernels::dot::requantize(&mut a, rows, vecs, e)?;
            } else {
                crate::backend::kernels::dot::requantize_avx2(&mut a, rows, vecs, e)?;
            }
        }
        Some(XnorEpi::Thresh(e)) => {
            in_tile_args(&mut a)?;
            if zmm {
                threshold(&mut a, rows, vecs, e)?;
            } else {
                threshold_avx2(&mut a, rows, vecs, e)?;
            }
        }
    }
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}

/// `words` steps of the AVX2 tiles as chunks of at most [`CHUNK`] (`chunk(a, steps)`
/// emits one), whole chunks in a loop counted in `counter` when there are several.
fn in_chunks(
    a: &mut CodeAssembler,
    words: u32,
    counter: AsmRegister32,
    chunk: impl Fn(&mut CodeAssembler, u32) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    let (full, tail) = (words / CHUNK, words % CHUNK);
    if full > 1 {
        let mut outer = a.create_label();
        a.mov(counter, full)?;
        a.set_label(&mut outer)?;
        chunk(a, CHUNK)?;
        a.sub(counter, 1)?;
        a.jnz(outer)?;
    } else if full == 1 {
        chunk(a, CHUNK)?;
    }
    if tail > 0 {
        chunk(a, tail)?;
    }
    Ok(())
}

/// The in-tile threshold of `rows` x `vecs` vectors of 16 dot products at `rdx` (row
/// by row): per row, the channel's bias and thresholds at `r9 + 16 r` (see
/// [`ThrEpi`]); per vector, `dot + bias`, then `base` plus `inc` for each threshold
/// reached (`vpcmpd` not-less-than into `k1`, a masked `vpaddd`), stored narrowed at
/// `rcx + r * row_bytes + v * 16 * elem` (columns past `valid` masked off with `k2`).
fn threshold(a: &mut CodeAssembler, rows: usize, vecs: usize, e: &ThrEpi) -> Result<(), IcedError> {
    let (x, out, base, inc) = (zmm0, zmm1, zmm2, zmm3);
    a.mov(eax, e.base as u32)?;
    a.vpbroadcastd(base, eax)?;
    a.mov(eax, e.inc as u32)?;
    a.vpbroadcastd(inc, eax)?;
    for r in 0..rows {
        let c = |f: i32| r9 + (r as i32 * 16 + f);
        for v in 0..vecs {
            let valid = e.valid.saturating_sub(v * 16).min(16);
            if valid == 0 {
                continue;
            }
            a.vmovdqu32(x, zmmword_ptr(rdx + ((r * vecs + v) * 64) as i32))?;
            a.vpaddd(x, x, dword_bcst(c(0)))?;
            a.vmovdqa32(out, base)?;
            for j in 0..e.k as i32 {
                // Predicate 5: not less than.
                a.vpcmpd(k1, x, dword_bcst(c(4 + 4 * j)), 5)?;
                a.vpaddd(out.k1(), out, inc)?;
            }
            let off = (r * e.row_bytes as usize + v * 16 * e.elem as usize) as i32;
            crate::backend::kernels::dot::store_zmm(a, out, e.elem, valid, off)?;
        }
    }
    Ok(())
}

/// [`threshold`] with AVX2 (`rows` x `vecs` vectors of 8 dot products at `rdx`): per
/// threshold not reached (`vpcmpgtd` of the threshold against `dot + bias`: -1 lanes)
/// `inc` less than `base + inc * k`; the codes stored by `dot::store_ymm0`.
fn threshold_avx2(
    a: &mut CodeAssembler,
    rows: usize,
    vecs: usize,
    e: &ThrEpi,
) -> Result<(), IcedError> {
    let (out, x, top, bias) = (ymm0, ymm1, ymm2, ymm3);
    let th = |j: usize| ymm(4 + j);
    let full = e.base.wrapping_add(e.inc.wrapping_mul(e.k as i32));
    a.mov(eax, full as u32)?;
    a.vmovd(xmm(2), eax)?;
    a.vpbroadcastd(top, xmm(2))?;
    for r in 0..rows {
        let c = |f: i32| r9 + (r as i32 * 16 + f);
        a.vpbroadcastd(bias, dword_ptr(c(0)))?;
        for j in 0..e.k as usize {
            a.vpbroadcastd(th(j), dword_ptr(c(4 + 4 * j as i32)))?;
        }
        for v in 0..vecs {
            let valid = e.valid.saturating_sub(v * 8).min(8);
            if valid == 0 {
                continue;
            }
            crate::backend::kernels::dot::load_sums(a, 1, rdx + ((r * vecs + v) * 32) as i32)?;
            a.vpaddd(x, x, bias)?;
            a.vmovdqa(out, top)?;
            for j in 0..e.k as usize {
                let lt = ymm(8 + j);
                a.vpcmpgtd(lt, th(j), x)?;
                if e.inc == 2 {
                    a.vpaddd(lt, lt, lt)?;
                }
                a.vpaddd(out, out, lt)?;
            }
            let off = (r * e.row_bytes as usize + v * 8 * e.elem as usize) as i32;
            crate::backend::kernels::dot::store_ymm0(a, e.elem, e.unsigned, valid, off)?;
        }
    }
    Ok(())
}

/// Moves the in-tile requantize's arguments where `dot`'s requantize reads them: the
/// outputs (6th argument, `r9`) to `rcx`, the layer's constants (7th, on the stack) to
/// `r8`, the tile's first channel (8th) to `r9`.
fn in_tile_args(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(rcx, r9)?;
    a.mov(r8, qword_ptr(rsp + 8))?;
    a.mov(r9, qword_ptr(rsp + 16))
}

/// A loop of independent chains of the tiles' instruction mix, `rdi` iterations, for
/// the benchmark's peak: `int loop(u64 iters)`; each iteration does `chains` steps of
/// 512 (zmm) or 256 (ymm) binary MACs; `and`: the bit-serial tiles' AND for the XOR.
pub(crate) fn peak_loop(isa: XnorIsa, chains: usize, and: bool) -> Result<Vec<u8>, IcedError> {
    let mut a = crate::backend::asm::assembler(isa == XnorIsa::Zmm)?;
    let mut top = a.create_label();
    match isa {
        XnorIsa::Zmm => {
            for c in 0..32 {
                a.vpxorq(zmm(c), zmm(c), zmm(c))?;
            }
            a.set_label(&mut top)?;
            // chains accumulators, temporaries after them, two operands at the end.
            for c in 0..chains {
                let x = zmm(chains + c % 4);
                if and {
                    a.vpandq(x, zmm(30), zmm(31))?;
                } else {
                    a.vpxorq(x, zmm(30), zmm(31))?;
                }
                a.vpopcntq(x, x)?;
                a.vpaddq(zmm(c), zmm(c), x)?;
            }
        }
        XnorIsa::Ymm => {
            for c in 0..16 {
                a.vpxor(ymm(c), ymm(c), ymm(c))?;
            }
            a.set_label(&mut top)?;
            // chains accumulators, two temporaries, the table, the mask, two operands.
            for c in 0..chains {
                let (x, y) = (ymm(chains), ymm(chains + 1));
                if and {
                    a.vpand(x, ymm(14), ymm(15))?;
                } else {
                    a.vpxor(x, ymm(14), ymm(15))?;
                }
                a.vpsrlw(y, x, 4)?;
                a.vpand(x, x, ymm(13))?;
                a.vpand(y, y, ymm(13))?;
                a.vpshufb(x, ymm(12), x)?;
                a.vpshufb(y, ymm(12), y)?;
                a.vpaddb(ymm(c), ymm(c), x)?;
                a.vpaddb(ymm(c), ymm(c), y)?;
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
