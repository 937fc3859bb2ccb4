//! Constant integer weights of fewer than 8 bits, stored bit-packed in `.rodata` and
//! widened at the start of the layer into the i16 layout the `pmaddwd` kernel reads
//! (docs/design.md's "int8-style dot products over unpacked values").
//!
//! Layout (for `b` = 1..7 bits): the weights form rows (conv: one row per output
//! channel, its K = C/group * kh * kw taps; matmul: one row per K index, its N
//! columns). Each row is cut into groups of 8 codes; a group is a little-endian bit
//! stream of exactly `b` bytes, code `t` of the group in bits `t*b .. t*b + b` (two's
//! complement for signed storage). The row's last group is padded with zero codes, so a
//! row takes `ceil(cols / 8) * b` bytes and every group starts on a byte. The whole
//! stream is followed by `8 - b` zero bytes, so the unpacker may load each group as one
//! unaligned 64-bit word. Zero points are *not* folded in (that would need `b + 1`
//! bits): they are subtracted while unpacking, as a constant when all are equal and from
//! a small i16 table (per row or per column) otherwise.
//!
//! Unpacking costs about four scalar operations per weight (shift, shift or mask,
//! subtract, 16-bit store) once per layer call, against `npix` (conv) or `m` (matmul)
//! multiply-accumulates per weight in the GEMM that follows.

use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{InstBuilder, Value};

use crate::backend::kb::{Kb, MF};

/// The packed storage of a constant weight operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PackedW {
    /// Bits per code, 1..=7.
    pub bits: u32,
    pub signed: bool,
}

impl PackedW {
    /// The packed form for storage of `bits` (None: 8 bits or more keep the pre-widened
    /// i16 layout).
    pub fn of(bits: u32, signed: bool) -> Option<PackedW> {
        (1..8).contains(&bits).then_some(PackedW { bits, signed })
    }

    /// Bytes of one packed row of `cols` codes.
    pub fn row_bytes(self, cols: usize) -> usize {
        cols.div_ceil(8) * self.bits as usize
    }

    /// Packs `rows x cols` codes `get(r, c)` (codes of the storage, not zero-point
    /// corrected) in the layout described in the module documentation.
    pub fn pack(self, rows: usize, cols: usize, get: impl Fn(usize, usize) -> i64) -> Vec<u8> {
        let b = self.bits as usize;
        let mask = (1u64 << b) - 1;
        let rb = self.row_bytes(cols);
        let mut out = vec![0u8; rows * rb + (8 - b)];
        for r in 0..rows {
            for g in 0..cols.div_ceil(8) {
                let mut word = 0u64;
                for t in 0..8 {
                    let c = g * 8 + t;
                    if c < cols {
                        word |= (get(r, c) as u64 & mask) << (t * b);
                    }
                }
                let at = r * rb + g * b;
                out[at..at + b].copy_from_slice(&word.to_le_bytes()[..b]);
            }
        }
        out
    }

    /// Decodes code `t` (0..8) of the 64-bit group word `w` as an i64.
    fn decode(self, kb: &mut Kb<'_, '_>, w: Value, t: usize) -> Value {
        let b = self.bits as i64;
        let t = t as i64;
        if self.signed {
            let v = kb.b.ins().ishl_imm_u(w, 64 - (t + 1) * b);
            kb.b.ins().sshr_imm_u(v, 64 - b)
        } else {
            let v = if t == 0 {
                w
            } else {
                kb.b.ins().ushr_imm_u(w, t * b)
            };
            kb.b.ins().band_imm_u(v, (1i64 << b) - 1)
        }
    }
}

/// How the zero points are subtracted while unpacking.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Zp {
    /// Every zero point is this constant (0: nothing to subtract).
    Const(i64),
    /// One i16 per row at this address.
    PerRow(Value),
    /// One i16 per column at this address.
    PerCol(Value),
}

/// The zero-point mode for `zps` (one per row or per column as `per_row` says), with
/// `table` defining the i16 table when they differ.
pub(crate) fn zp_mode(zps: &[i64], per_row: bool, table: impl FnOnce(Vec<u8>) -> Value) -> Zp {
    match zps.first() {
        Some(&z0) if zps.iter().any(|&z| z != z0) => {
            let bytes = zps.iter().flat_map(|&z| (z as i16).to_le_bytes()).collect();
            let t = table(bytes);
            if per_row {
                Zp::PerRow(t)
            } else {
                Zp::PerCol(t)
            }
        }
        Some(&z0) => Zp::Const(z0),
        None => Zp::Const(0),
    }
}

/// One unpacking: `rows x cols` packed codes at `src` into i16 values `code - zp`; row
/// `r` goes to `dst_row(r)`, its element `c` at byte offset `c * elem`.
pub(crate) struct Unpack<F> {
    pub pw: PackedW,
    pub rows: usize,
    pub cols: usize,
    pub src: Value,
    pub zp: Zp,
    pub elem: i64,
    pub dst_row: F,
}

impl<F: Fn(&mut Kb<'_, '_>, Value) -> Value> Unpack<F> {
    pub fn emit(&self, kb: &mut Kb<'_, '_>) {
        let b = self.pw.bits as i64;
        let rb = self.pw.row_bytes(self.cols) as i64;
        let full = self.cols / 8;
        let tail = self.cols % 8;
        kb.for_range(0, self.rows as i64, 1, |kb, r| {
            let srow = kb.idx(self.src, r, rb);
            let drow = (self.dst_row)(kb, r);
            let row_zp = match self.zp {
                Zp::Const(0) => None,
                Zp::Const(z) => Some(kb.c(z)),
                Zp::PerRow(t) => {
                    let p = kb.idx(t, r, 2);
                    Some(kb.b.ins().sload16(I64, MF, p, 0))
                }
                Zp::PerCol(_) => None,
            };
            // One group of `n` codes: group index `g` (run time), or constant `gc`.
            let group = |kb: &mut Kb<'_, '_>, sg: Value, dg: Value, zg: Option<Value>, n| {
                let w = kb.load(I64, sg, 0);
                for t in 0..n {
                    let mut v = self.pw.decode(kb, w, t);
                    if let Some(z) = row_zp {
                        v = kb.b.ins().isub(v, z);
                    }
                    if let Some(zt) = zg {
                        let z = kb.b.ins().sload16(I64, MF, zt, (t * 2) as i32);
                        v = kb.b.ins().isub(v, z);
                    }
                    kb.b.ins()
                        .istore16(MF, v, dg, (t as i64 * self.elem) as i32);
                }
            };
            let col_tab = match self.zp {
                Zp::PerCol(t) => Some(t),
                _ => None,
            };
            if full > 0 {
                kb.for_range(0, full as i64, 1, |kb, g| {
                    let sg = kb.idx(srow, g, b);
                    let dg = kb.idx(drow, g, 8 * self.elem);
                    let zg = col_tab.map(|t| kb.idx(t, g, 16));
                    group(kb, sg, dg, zg, 8);
                });
            }
            if tail > 0 {
                let sg = kb.off(srow, full as i64 * b);
                let dg = kb.off(drow, full as i64 * 8 * self.elem);
                let zg = col_tab.map(|t| kb.off(t, full as i64 * 16));
                group(kb, sg, dg, zg, tail);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::PackedW;

    #[test]
    fn packs_groups_of_eight_little_endian() {
        let pw = PackedW::of(3, true).unwrap();
        // Row of 9 codes: one full group (3 bytes) and a padded one (3 bytes).
        let codes = [-4i64, 3, -1, 0, 1, 2, -2, -3, 3];
        let v = pw.pack(1, 9, |_, c| codes[c]);
        assert_eq!(v.len(), 6 + 5);
        let mut word = 0u64;
        for (t, &c) in codes[..8].iter().enumerate() {
            word |= (c as u64 & 7) << (3 * t);
        }
        assert_eq!(&v[..3], &word.to_le_bytes()[..3]);
        assert_eq!(&v[3..6], &[3, 0, 0]);
        assert!(v[6..].iter().all(|&b| b == 0));
        assert_eq!(PackedW::of(8, true), None);
        assert_eq!(pw.row_bytes(16), 6);
    }
}
