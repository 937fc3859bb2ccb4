//! Bit-level ops: `threshold` with run-time thresholds (constant ones go to the
//! table-driven kernel in `quant/`, as does `binarize`), `bit_pack`, `bit_unpack`.
//! All integer arithmetic is exact, so every kernel is bit-exact with the interpreter.
//!
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

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{InstBuilder, Value};
use qcc_ir::shape::normalize_axis;
use qcc_ir::{Attrs, ElemType, Module, Node, Op};

use super::Ecx;
use crate::backend::kb::Kb;
use crate::backend::storage::Store;

/// Thresholds unrolled (and held in registers) up to this count.
const UNROLL_K: usize = 16;

#[derive(Clone, Debug)]
pub(crate) enum BitsLowering {
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
