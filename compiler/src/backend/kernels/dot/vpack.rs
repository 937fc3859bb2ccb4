//! Weights of fewer than 8 bits stored bit-packed for the u8 x i8 kernels (`VPack`) and
//! unpacked to i8 at the start of a layer with vector shifts and masks (`Unpack`).

use cranelift_codegen::ir::types::{I8, I8X16, I16X8, I32};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Type, Value};

use crate::backend::kb::{Kb, MF, RO};

/// Weights of `bits` (1..=7) bits, packed for vector unpacking.
///
/// A row of `len` codes is cut into vectors of 16 codes (the last one padded), and
/// those into blocks of 8 vectors. Lane `l` of the 8 vectors of a block forms a
/// little-endian string of `8 * bits` bits (code of vector `t` in bits `t*bits ..`), and
/// byte `i` of that string is lane `l` of the block's input vector `i`: a block takes
/// `bits` input vectors of 16 bytes, a last partial block of `T` vectors only the
/// `ceil(T * bits / 8)` it needs. Vector `t` is unpacked from input vectors
/// `t*bits/8` (and the next one when the code crosses a byte) by 16-bit shifts and byte
/// masks: about seven vector instructions per 16 weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VPack {
    pub bits: u32,
    pub signed: bool,
}

impl VPack {
    /// Input vectors of one packed row of `len` codes.
    pub(super) fn row_vecs(self, len: usize) -> usize {
        let nv = len.div_ceil(16);
        let b = self.bits as usize;
        (nv / 8) * b + ((nv % 8) * b).div_ceil(8)
    }

    /// Packs `rows` rows of `len` codes; `get(r, c)` for `c < len.div_ceil(16) * 16`
    /// (codes past `len` are the padding codes).
    pub(super) fn pack(
        self,
        rows: usize,
        len: usize,
        get: impl Fn(usize, usize) -> i64,
    ) -> Vec<u8> {
        let b = self.bits as usize;
        let rv = self.row_vecs(len);
        let mask = (1u64 << b) - 1;
        let mut out = vec![0u8; rows * rv * 16];
        for r in 0..rows {
            for c in 0..len.div_ceil(16) * 16 {
                let code = get(r, c) as u64 & mask;
                let (vt, lane) = (c / 16, c % 16);
                let (blk, t) = (vt / 8, vt % 8);
                for i in 0..b {
                    if (code >> i) & 1 == 1 {
                        let bit = t * b + i;
                        let at = (r * rv + blk * b + bit / 8) * 16 + lane;
                        out[at] |= 1 << (bit % 8);
                    }
                }
            }
        }
        out
    }
}

/// What is subtracted from each unpacked code (after sign extension).
#[derive(Clone, Copy)]
pub(super) enum VZp {
    /// The same zero point everywhere.
    Const(i64),
    /// One i8 per row at this address.
    PerRow(Value),
    /// One i8 per code of a row (the same for every row) at this address.
    PerLane(Value),
}

/// One unpacking: `rows` packed rows of `len` codes at `src` into i8 `code - zp` rows
/// at `dst + r * stride`; each row writes `len.div_ceil(16) * 16` bytes (rows are
/// written in order, so a row's padding may run into the next row's start).
pub(super) struct Unpack {
    pub(super) pk: VPack,
    pub(super) rows: usize,
    pub(super) len: usize,
    pub(super) src: Value,
    pub(super) dst: Value,
    pub(super) stride: i64,
    pub(super) zp: VZp,
}

pub(super) fn cast(kb: &mut Kb<'_, '_>, ty: Type, v: Value) -> Value {
    if kb.b.func.dfg.value_type(v) == ty {
        return v;
    }
    kb.b.ins().bitcast(
        ty,
        MemFlagsData::new().with_endianness(Endianness::Little),
        v,
    )
}

pub(super) fn splat8(kb: &mut Kb<'_, '_>, v: i64) -> Value {
    let c = kb.b.ins().iconst(I8, v as u8 as i64);
    kb.b.ins().splat(I8X16, c)
}

impl Unpack {
    pub(super) fn emit(&self, kb: &mut Kb<'_, '_>) {
        let b = self.pk.bits as usize;
        let nv = self.len.div_ceil(16);
        let rv = self.pk.row_vecs(self.len) as i64;
        let sbit = if self.pk.signed { 1i64 << (b - 1) } else { 0 };
        // Constants, defined once before the loops.
        let maskb = splat8(kb, (1 << b) - 1);
        let sbv = self.pk.signed.then(|| splat8(kb, sbit));
        let mut lo_masks = [None; 8];
        let mut hi_masks = [None; 8];
        for t in 0..8.min(nv) {
            let s = (t * b) % 8;
            if s + b > 8 {
                lo_masks[s] = Some(splat8(kb, 0xFF >> s));
                hi_masks[s] = Some(splat8(kb, (0xFF << (8 - s)) & 0xFF));
            }
        }
        let const_adj = match self.zp {
            VZp::Const(z) if z + sbit != 0 => Some(splat8(kb, z + sbit)),
            _ => None,
        };
        let sh16 = |kb: &mut Kb<'_, '_>, v: Value, s: usize, left: bool| {
            let v = cast(kb, I16X8, v);
            let a = kb.b.ins().iconst(I32, s as i64);
            let v = if left {
                kb.b.ins().ishl(v, a)
            } else {
                kb.b.ins().ushr(v, a)
            };
            cast(kb, I8X16, v)
        };
        kb.for_range(0, self.rows as i64, 1, |kb, r| {
            let srow = kb.idx(self.src, r, rv * 16);
            let drow = kb.idx(self.dst, r, self.stride);
            let row_adj = match self.zp {
                VZp::PerRow(t) => {
                    let p = kb.b.ins().iadd(t, r);
                    let z = kb.b.ins().sload8(I32, MF, p, 0);
                    let z = kb.b.ins().iadd_imm_s(z, sbit);
                    let z = kb.b.ins().ireduce(I8, z);
                    Some(kb.b.ins().splat(I8X16, z))
                }
                _ => const_adj,
            };
            // One block of `tn` vectors; `v0`: the index of its first vector in the row.
            let block = |kb: &mut Kb<'_, '_>, s: Value, d: Value, v0: Value, tn: usize| {
                let ins: Vec<Value> = (0..(tn * b).div_ceil(8))
                    .map(|i| kb.load(I8X16, s, (i * 16) as i64))
                    .collect();
                for t in 0..tn {
                    let (j, sh) = ((t * b) / 8, (t * b) % 8);
                    let mut v = ins[j];
                    if sh > 0 {
                        v = sh16(kb, v, sh, false);
                    }
                    if sh + b > 8 {
                        let lm = lo_masks[sh].expect("mask defined");
                        let hm = hi_masks[sh].expect("mask defined");
                        v = kb.b.ins().band(v, lm);
                        let u = sh16(kb, ins[j + 1], 8 - sh, true);
                        let u = kb.b.ins().band(u, hm);
                        v = kb.b.ins().bor(v, u);
                    }
                    v = kb.b.ins().band(v, maskb);
                    if let Some(sb) = sbv {
                        v = kb.b.ins().bxor(v, sb);
                    }
                    let adj = match self.zp {
                        VZp::PerLane(tab) => {
                            let p = kb.idx(tab, v0, 16);
                            let z = kb.b.ins().load(I8X16, RO, p, (t * 16) as i32);
                            Some(match sbv {
                                Some(sb) => kb.b.ins().iadd(z, sb),
                                None => z,
                            })
                        }
                        _ => row_adj,
                    };
                    if let Some(a) = adj {
                        v = kb.b.ins().isub(v, a);
                    }
                    kb.store(v, d, (t * 16) as i64);
                }
            };
            let full = nv / 8;
            if full > 0 {
                kb.for_range(0, full as i64, 1, |kb, bi| {
                    let s = kb.idx(srow, bi, (b * 16) as i64);
                    let d = kb.idx(drow, bi, 128);
                    let v0 = kb.b.ins().imul_imm_s(bi, 8);
                    block(kb, s, d, v0, 8);
                });
            }
            if !nv.is_multiple_of(8) {
                let s = kb.off(srow, (full * b * 16) as i64);
                let d = kb.off(drow, (full * 128) as i64);
                let v0 = kb.c((full * 8) as i64);
                block(kb, s, d, v0, nv % 8);
            }
        });
    }
}
