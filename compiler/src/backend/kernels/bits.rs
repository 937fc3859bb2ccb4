//! Bipolar and bit-level ops: `binarize`, `threshold`, `bit_pack`, `bit_unpack`.
//! All integer arithmetic is exact, so every kernel is bit-exact with the interpreter.
//!
//! - `binarize`: f32 on f32x4 lanes (`x >= 0` as a lane mask m, then `(m & 2) - 1`,
//!   narrowed to bytes; NaN gives -1); integer codes compare with their zero point
//!   (per tensor, or per channel from a compile-time table), one element at a time.
//! - `threshold`: per element `count = sum_k (x >= t[c, k])` on exact i64 codes; for at
//!   most 16 thresholds the channel's thresholds are loaded once per channel and the
//!   comparisons unrolled, otherwise a counted loop runs over them. The result code is
//!   `count + offset` (or `2 count - 1` for `b1`). The interpreter rejects a result code
//!   the type does not admit at run time; compiled code cannot report that, so a node
//!   whose codes `offset ..= offset + K` are not all admitted is not lowered.
//! - `bit_pack` / `bit_unpack`: the little-endian bit stream along the axis repeats
//!   every `lcm(b, word)` bits; within one period every word (or code) is an OR of
//!   shifted, masked codes (or words) whose positions are computed at compile time, so
//!   the period is unrolled and a run-time loop walks the periods (the partial last
//!   period is unrolled on its own). `b1` packs 1 for -1 and 0 for +1 and unpacks the
//!   same way; signed codes are sign-extended by a shift pair.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I8, I8X16, I16X8, I32, I32X4, I64};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};
use qcc_ir::shape::normalize_axis;
use qcc_ir::{Attrs, ElemType, Module, Node, Op, QuantParams};

use super::Ecx;
use crate::backend::kb::{Kb, MF};
use crate::backend::storage::Store;

/// Thresholds unrolled (and held in registers) up to this count.
const UNROLL_K: usize = 16;

#[derive(Clone, Debug)]
pub(crate) enum BitsLowering {
    BinarizeF32 {
        n: usize,
    },
    /// Codes of `outer * d * inner` elements; `zps[ch]` along the middle axis.
    BinarizeInt {
        outer: usize,
        d: usize,
        inner: usize,
        zps: Vec<i64>,
        st: Store,
    },
    Threshold {
        outer: usize,
        c: usize,
        inner: usize,
        k: usize,
        /// One set of thresholds for every channel.
        shared: bool,
        offset: i64,
        bipolar: bool,
        st_x: Store,
        st_t: Store,
        st_out: Store,
    },
    Pack(Packing),
    Unpack(Packing),
}

/// A packing along an axis: `outer x d x inner` codes of `b` bits <-> `outer x nw x
/// inner` words of `word` bits.
#[derive(Clone, Debug)]
pub(crate) struct Packing {
    outer: usize,
    inner: usize,
    /// Codes along the axis.
    d: usize,
    /// Words along the axis.
    nw: usize,
    b: usize,
    word: usize,
    bipolar: bool,
    signed: bool,
    st_codes: Store,
    st_words: Store,
}

fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

pub(crate) fn select(m: &Module, node: &Node) -> Result<BitsLowering, String> {
    let a = Attrs::new(node.op, &node.attrs);
    let xty = m.ty(node.operands[0]);
    let oty = m.ty(node.result);
    let shape = &xty.shape;
    match node.op {
        Op::Binarize => {
            let n = xty.numel();
            match &xty.elem {
                ElemType::F32 => Ok(BitsLowering::BinarizeF32 { n }),
                ElemType::Int(_) | ElemType::Bipolar => Ok(BitsLowering::BinarizeInt {
                    outer: 1,
                    d: 1,
                    inner: n,
                    zps: vec![0],
                    st: Store::of(&xty.elem),
                }),
                ElemType::Quant(q) => {
                    let st = Store::of(&xty.elem);
                    match &q.params {
                        QuantParams::PerTensor { zero_point, .. } => {
                            Ok(BitsLowering::BinarizeInt {
                                outer: 1,
                                d: 1,
                                inner: n,
                                zps: vec![*zero_point as i64],
                                st,
                            })
                        }
                        QuantParams::PerAxis {
                            axis, zero_points, ..
                        } if *axis < shape.len() && zero_points.len() == shape[*axis] => {
                            let (outer, d, inner) = split(shape, *axis);
                            Ok(BitsLowering::BinarizeInt {
                                outer,
                                d,
                                inner,
                                zps: zero_points.iter().map(|&z| z as i64).collect(),
                                st,
                            })
                        }
                        _ => Err(format!(
                            "binarize of {} (block-quantized) is not lowered",
                            xty.elem
                        )),
                    }
                }
            }
        }
        Op::Threshold => {
            let tty = m.ty(node.operands[1]);
            if xty.elem.is_float() || tty.elem.is_float() || oty.elem.is_float() {
                return Err("threshold needs integer-valued operands and result".into());
            }
            let axis = normalize_axis(a.int("axis")?, shape.len())?;
            let (outer, c, inner) = split(shape, axis);
            let ts = &tty.shape;
            if ts.len() != 2 || (ts[0] != 1 && ts[0] != c) {
                return Err(format!(
                    "thresholds must be [{c}, K] or [1, K], found {ts:?}"
                ));
            }
            let k = ts[1];
            let offset = a.int("offset")?;
            let bipolar = oty.elem == ElemType::Bipolar;
            if bipolar && (k != 1 || offset != 0) {
                return Err("a b1 threshold needs K = 1 and offset 0".into());
            }
            let admitted = oty.elem.admits(offset)
                && offset
                    .checked_add(k as i64)
                    .is_some_and(|hi| oty.elem.admits(hi));
            if !bipolar && !admitted {
                return Err(format!(
                    "threshold codes {offset}..={} are not all codes of {} (the \
                     interpreter's run-time check cannot be compiled)",
                    offset.saturating_add(k as i64),
                    oty.elem
                ));
            }
            Ok(BitsLowering::Threshold {
                outer,
                c,
                inner,
                k,
                shared: ts[0] == 1 && c != 1,
                offset,
                bipolar,
                st_x: Store::of(&xty.elem),
                st_t: Store::of(&tty.elem),
                st_out: Store::of(&oty.elem),
            })
        }
        Op::BitPack => {
            if xty.elem.is_float() {
                return Err("bit_pack needs an integer-valued operand".into());
            }
            let axis = normalize_axis(a.int("axis")?, shape.len())?;
            let word = a.int("word_bits")?;
            if ![8, 16, 32].contains(&word) {
                return Err(format!("word_bits must be 8, 16 or 32, found {word}"));
            }
            let word = word as usize;
            let st_words = Store::of(&oty.elem);
            if oty.elem.is_float() || st_words.bytes() * 8 != word {
                return Err(format!(
                    "bit_pack words of {word} bits stored as {}",
                    oty.elem
                ));
            }
            let (outer, d, inner) = split(shape, axis);
            let b = xty.elem.bits() as usize;
            Ok(BitsLowering::Pack(Packing {
                outer,
                inner,
                d,
                nw: (d * b).div_ceil(word),
                b,
                word,
                bipolar: xty.elem == ElemType::Bipolar,
                signed: false,
                st_codes: Store::of(&xty.elem),
                st_words,
            }))
        }
        _ => {
            let word = match &xty.elem {
                ElemType::Int(t) | ElemType::Quant(qcc_ir::QuantType { storage: t, .. }) => {
                    t.bits as usize
                }
                e => return Err(format!("bit_unpack needs integer words, found {e}")),
            };
            if oty.elem.is_float() {
                return Err("bit_unpack needs an integer-valued result".into());
            }
            let axis = normalize_axis(a.int("axis")?, shape.len())?;
            let count = usize::try_from(a.int("count")?)
                .map_err(|_| "count must be non-negative".to_string())?;
            let (outer, d, inner) = split(shape, axis);
            let b = oty.elem.bits() as usize;
            if count.checked_mul(b).is_none_or(|bits| bits > d * word) || b == 0 || word == 0 {
                return Err("bit_unpack codes do not fit in the words".into());
            }
            Ok(BitsLowering::Unpack(Packing {
                outer,
                inner,
                d: count,
                nw: d,
                b,
                word,
                bipolar: oty.elem == ElemType::Bipolar,
                signed: oty.elem.storage().is_some_and(|s| s.signed),
                st_codes: Store::of(&oty.elem),
                st_words: Store::of(&xty.elem),
            }))
        }
    }
}

impl BitsLowering {
    pub fn kernel_name(&self) -> String {
        match self {
            BitsLowering::BinarizeF32 { .. } => "binarize.f32x4->b1".into(),
            BitsLowering::BinarizeInt { st, .. } => format!("binarize.{}->b1", st.name()),
            BitsLowering::Threshold { st_x, k, .. } => {
                let kind = if *k <= UNROLL_K { "unrolled" } else { "loop" };
                format!("threshold.{kind}.{}", st_x.name())
            }
            BitsLowering::Pack(p) => format!("bit_pack.{}x{}->{}", p.b, p.d, p.word),
            BitsLowering::Unpack(p) => format!("bit_unpack.{}->{}x{}", p.word, p.b, p.d),
        }
    }
}

pub(crate) fn emit(cx: &mut Ecx<'_, '_, '_, '_>, q: &BitsLowering) {
    match q {
        BitsLowering::BinarizeF32 { n } => {
            let x = cx.operand(0);
            emit_binarize_f32(cx.kb, *n, x, cx.out);
        }
        BitsLowering::BinarizeInt {
            outer,
            d,
            inner,
            zps,
            st,
        } => {
            let x = cx.operand(0);
            let tab = cx.rodata(zps.iter().flat_map(|z| z.to_le_bytes()).collect(), 16);
            let out = cx.out;
            let kb = &mut *cx.kb;
            let (d, inner, st) = (*d, *inner, *st);
            let eb = st.bytes() as i64;
            let one = kb.b.ins().iconst(I32, 1);
            let m1 = kb.b.ins().iconst(I32, -1);
            kb.for_range(0, (outer * d) as i64, 1, |kb, od| {
                let ch = kb.b.ins().urem_imm_u(od, d as i64);
                let zp = kb.idx(tab, ch, 8);
                let z = kb.load(I64, zp, 0);
                let xp = kb.idx(x, od, inner as i64 * eb);
                let op = kb.idx(out, od, inner as i64);
                kb.for_range(0, inner as i64, 1, |kb, e| {
                    let p = kb.idx(xp, e, eb);
                    let c = kb.load_i64(st, p, 0);
                    let ge = kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, c, z);
                    let r = kb.b.ins().select(ge, one, m1);
                    let o = kb.idx(op, e, 1);
                    kb.b.ins().istore8(MF, r, o, 0);
                });
            });
        }
        BitsLowering::Threshold { .. } => emit_threshold(cx, q),
        BitsLowering::Pack(p) => {
            let x = cx.operand(0);
            emit_pack(cx.kb, p, x, cx.out);
        }
        BitsLowering::Unpack(p) => {
            let x = cx.operand(0);
            emit_unpack(cx.kb, p, x, cx.out);
        }
    }
}

fn emit_binarize_f32(kb: &mut Kb<'_, '_>, n: usize, x: Value, out: Value) {
    let zv = kb.fconst(F32X4, 0.0);
    let two = kb.iconst_t(I32X4, 2);
    let onev = kb.iconst_t(I32X4, 1);
    let nv = (n / 4) as i64;
    kb.for_range(0, nv, 1, |kb, i| {
        let xp = kb.idx(x, i, 16);
        let v = kb.load(F32X4, xp, 0);
        let m = kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, v, zv); // -1 / 0 lanes
        let r = kb.b.ins().band(m, two);
        let r = kb.b.ins().isub(r, onev); // +1 / -1
        let h = kb.b.ins().snarrow(r, r);
        let bq = kb.b.ins().snarrow(h, h);
        debug_assert_eq!(kb.b.func.dfg.value_type(h), I16X8);
        debug_assert_eq!(kb.b.func.dfg.value_type(bq), I8X16);
        let w = kb.b.ins().bitcast(
            I32X4,
            MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little),
            bq,
        );
        let w = kb.b.ins().extractlane(w, 0);
        let op = kb.idx(out, i, 4);
        kb.store(w, op, 0);
    });
    let z = kb.fconst(F32, 0.0);
    let one = kb.b.ins().iconst(I8, 1);
    let m1 = kb.b.ins().iconst(I8, -1);
    for e in (nv * 4) as usize..n {
        let v = kb.load(F32, x, (e * 4) as i64);
        let ge = kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, v, z);
        let r = kb.b.ins().select(ge, one, m1);
        kb.store(r, out, e as i64);
    }
}

fn emit_threshold(cx: &mut Ecx<'_, '_, '_, '_>, q: &BitsLowering) {
    let BitsLowering::Threshold {
        outer,
        c,
        inner,
        k,
        shared,
        offset,
        bipolar,
        st_x,
        st_t,
        st_out,
    } = *q
    else {
        return;
    };
    let x = cx.operand(0);
    let t = cx.operand(1);
    let out = cx.out;
    let kb = &mut *cx.kb;
    let (xb, tb, ob) = (
        st_x.bytes() as i64,
        st_t.bytes() as i64,
        st_out.bytes() as i64,
    );
    let finish = |kb: &mut Kb<'_, '_>, count: Value, op: Value| {
        let code = if bipolar {
            let t2 = kb.b.ins().ishl_imm_s(count, 1);
            kb.b.ins().iadd_imm_s(t2, -1)
        } else {
            kb.b.ins().iadd_imm_s(count, offset)
        };
        kb.store_int(st_out, code, op, 0);
    };
    kb.for_range(0, (outer * c) as i64, 1, |kb, oc| {
        let tp = if shared {
            t
        } else {
            let ch = kb.b.ins().urem_imm_u(oc, c as i64);
            kb.idx(t, ch, k as i64 * tb)
        };
        let xp = kb.idx(x, oc, inner as i64 * xb);
        let op = kb.idx(out, oc, inner as i64 * ob);
        if k <= UNROLL_K {
            let ts: Vec<Value> = (0..k as i64)
                .map(|j| kb.load_i64(st_t, tp, j * tb))
                .collect();
            kb.for_range(0, inner as i64, 1, |kb, e| {
                let p = kb.idx(xp, e, xb);
                let v = kb.load_i64(st_x, p, 0);
                let mut count = kb.c(0);
                for &th in &ts {
                    let ge = kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, v, th);
                    let ge = kb.b.ins().uextend(I64, ge);
                    count = kb.b.ins().iadd(count, ge);
                }
                let o = kb.idx(op, e, ob);
                finish(kb, count, o);
            });
        } else {
            kb.for_range(0, inner as i64, 1, |kb, e| {
                let p = kb.idx(xp, e, xb);
                let v = kb.load_i64(st_x, p, 0);
                let z = kb.c(0);
                let count = kb.var(I64, z);
                kb.for_range(0, k as i64, 1, |kb, j| {
                    let a = kb.idx(tp, j, tb);
                    let th = kb.load_i64(st_t, a, 0);
                    let ge = kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, v, th);
                    let ge = kb.b.ins().uextend(I64, ge);
                    let cnt = kb.b.use_var(count);
                    let cnt = kb.b.ins().iadd(cnt, ge);
                    kb.b.def_var(count, cnt);
                });
                let cnt = kb.b.use_var(count);
                let o = kb.idx(op, e, ob);
                finish(kb, cnt, o);
            });
        }
    });
}

fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}

/// `v << s` for s >= 0, logical `v >> -s` otherwise (i64).
fn shift(kb: &mut Kb<'_, '_>, v: Value, s: i64) -> Value {
    if s >= 0 {
        if s == 0 {
            v
        } else {
            kb.b.ins().ishl_imm_s(v, s)
        }
    } else {
        kb.b.ins().ushr_imm_s(v, -s)
    }
}

/// Walks `outer x inner` lines: `f(codes, words)` pointers at the line's first code
/// and first word.
fn lines(
    kb: &mut Kb<'_, '_>,
    p: &Packing,
    codes: Value,
    words: Value,
    f: &mut dyn FnMut(&mut Kb<'_, '_>, Value, Value),
) {
    let (cb, wb) = (p.st_codes.bytes() as i64, p.st_words.bytes() as i64);
    kb.for_range(0, p.outer as i64, 1, |kb, o| {
        let co = kb.idx(codes, o, (p.d * p.inner) as i64 * cb);
        let wo = kb.idx(words, o, (p.nw * p.inner) as i64 * wb);
        kb.for_range(0, p.inner as i64, 1, |kb, i| {
            let c = kb.idx(co, i, cb);
            let w = kb.idx(wo, i, wb);
            f(kb, c, w);
        });
    });
}

fn emit_pack(kb: &mut Kb<'_, '_>, p: &Packing, x: Value, out: Value) {
    let (b, word) = (p.b, p.word);
    let period = lcm(b, word);
    let (pe, pw) = (period / b, period / word);
    let full = p.d / pe;
    let (cb, wb) = (p.st_codes.bytes() as i64, p.st_words.bytes() as i64);
    let (cs, ws) = (p.inner as i64 * cb, p.inner as i64 * wb);
    let mask = if b >= 64 { -1i64 } else { (1i64 << b) - 1 };
    // Words `0..nwords` from codes `0..ncodes` at `c`, `w` (one period or the tail).
    let block = |kb: &mut Kb<'_, '_>, c: Value, w: Value, ncodes: usize, nwords: usize| {
        let bits: Vec<Value> = (0..ncodes)
            .map(|e| {
                let q = kb.off(c, e as i64 * cs);
                let v = kb.load_i64(p.st_codes, q, 0);
                if p.bipolar {
                    let neg = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, v, 0);
                    kb.b.ins().uextend(I64, neg)
                } else {
                    kb.b.ins().band_imm_s(v, mask)
                }
            })
            .collect();
        for wi in 0..nwords {
            let lo = wi * word;
            let hi = lo + word;
            let mut acc: Option<Value> = None;
            for (e, &v) in bits.iter().enumerate() {
                let (s, t) = (e * b, e * b + b);
                if t <= lo || s >= hi {
                    continue;
                }
                let sh = shift(kb, v, s as i64 - lo as i64);
                acc = Some(match acc {
                    None => sh,
                    Some(a) => kb.b.ins().bor(a, sh),
                });
            }
            let val = match acc {
                Some(a) => a,
                None => kb.c(0),
            };
            let q = kb.off(w, wi as i64 * ws);
            kb.store_int(p.st_words, val, q, 0);
        }
    };
    lines(kb, p, x, out, &mut |kb, c, w| {
        kb.for_range(0, full as i64, 1, |kb, k| {
            let cp = kb.idx(c, k, pe as i64 * cs);
            let wp = kb.idx(w, k, pw as i64 * ws);
            block(kb, cp, wp, pe, pw);
        });
        let rest = p.d - full * pe;
        let rest_w = p.nw - full * pw;
        if rest_w > 0 {
            let cp = kb.off(c, (full * pe) as i64 * cs);
            let wp = kb.off(w, (full * pw) as i64 * ws);
            block(kb, cp, wp, rest, rest_w);
        }
    });
}

fn emit_unpack(kb: &mut Kb<'_, '_>, p: &Packing, x: Value, out: Value) {
    let (b, word) = (p.b, p.word);
    let period = lcm(b, word);
    let (pe, pw) = (period / b, period / word);
    let full = p.d / pe;
    let (cb, wb) = (p.st_codes.bytes() as i64, p.st_words.bytes() as i64);
    let (cs, ws) = (p.inner as i64 * cb, p.inner as i64 * wb);
    let wmask = if word >= 64 {
        -1i64
    } else {
        (1i64 << word) - 1
    };
    let bmask = if b >= 64 { -1i64 } else { (1i64 << b) - 1 };
    // Codes `0..ncodes` from the words at `w` (one period or the tail).
    let block = |kb: &mut Kb<'_, '_>, w: Value, c: Value, ncodes: usize| {
        let nwords = (ncodes * b).div_ceil(word);
        let words: Vec<Value> = (0..nwords)
            .map(|wi| {
                let q = kb.off(w, wi as i64 * ws);
                let v = kb.load_i64(p.st_words, q, 0);
                kb.b.ins().band_imm_s(v, wmask)
            })
            .collect();
        for e in 0..ncodes {
            let (s, t) = (e * b, e * b + b);
            let mut acc: Option<Value> = None;
            for (wi, &v) in words.iter().enumerate() {
                let (lo, hi) = (wi * word, wi * word + word);
                if hi <= s || lo >= t {
                    continue;
                }
                let sh = shift(kb, v, lo as i64 - s as i64);
                acc = Some(match acc {
                    None => sh,
                    Some(a) => kb.b.ins().bor(a, sh),
                });
            }
            let v = match acc {
                Some(a) => kb.b.ins().band_imm_s(a, bmask),
                None => kb.c(0),
            };
            let code = if p.bipolar {
                // 1 -> -1, 0 -> +1.
                let t2 = kb.b.ins().ishl_imm_s(v, 1);
                let one = kb.c(1);
                kb.b.ins().isub(one, t2)
            } else if p.signed && b < 64 {
                let sh = 64 - b as i64;
                let u = kb.b.ins().ishl_imm_s(v, sh);
                kb.b.ins().sshr_imm_s(u, sh)
            } else {
                v
            };
            let q = kb.off(c, e as i64 * cs);
            kb.store_int(p.st_codes, code, q, 0);
        }
    };
    lines(kb, p, out, x, &mut |kb, c, w| {
        kb.for_range(0, full as i64, 1, |kb, k| {
            let cp = kb.idx(c, k, pe as i64 * cs);
            let wp = kb.idx(w, k, pw as i64 * ws);
            block(kb, wp, cp, pe);
        });
        let rest = p.d - full * pe;
        if rest > 0 {
            let cp = kb.off(c, (full * pe) as i64 * cs);
            let wp = kb.off(w, (full * pw) as i64 * ws);
            block(kb, wp, cp, rest);
        }
    });
}
