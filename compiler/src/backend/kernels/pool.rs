//! Pooling: max (f32 or integer codes), average, global average.
//!
//! Each spatial axis is cut at compile time into segments of outputs whose windows
//! cover the same taps (the border outputs, where the window hangs over the padding,
//! and the interior); each segment is a loop whose body is the window, unrolled, with
//! no bounds tests. Unit-stride sweeps of at least four outputs run on f32x4 vectors.

use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::conv::ConvGeom;
use crate::backend::kb::Kb;
use crate::backend::storage::Store;

/// Outputs `[o0, o1)` of one axis whose windows cover taps `[t0, t1)`; `div` is the
/// window's divisor contribution along this axis with `count_include_pad`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Seg {
    o0: usize,
    o1: usize,
    t0: usize,
    t1: usize,
    div: usize,
}

#[allow(clippy::too_many_arguments, reason = "one axis of a window sweep")]
fn segments(
    out: usize,
    len: usize,
    k: usize,
    s: usize,
    d: usize,
    pb: usize,
    pe: usize,
) -> Vec<Seg> {
    let mut v: Vec<Seg> = Vec::new();
    for o in 0..out {
        let ok = |i: usize| {
            let p = o * s + i * d;
            p >= pb && p - pb < len
        };
        let t0 = (0..k).find(|&i| ok(i)).unwrap_or(k);
        let t1 = (t0..k).find(|&i| !ok(i)).unwrap_or(k);
        let start = o * s;
        let div = (start + k).min(len + pb + pe).saturating_sub(start);
        match v.last_mut() {
            Some(l) if l.t0 == t0 && l.t1 == t1 && l.div == div && l.o1 == o => l.o1 = o + 1,
            _ => v.push(Seg {
                o0: o,
                o1: o + 1,
                t0,
                t1,
                div,
            }),
        }
    }
    v
}

/// The pooling function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum PoolKind {
    Max,
    /// Average; with `count_include_pad`.
    Avg(bool),
}

/// Whether every window covers at least one input element (the interpreter rejects
/// the module otherwise).
pub(crate) fn windows_nonempty(g: &ConvGeom, pads: [usize; 4]) -> bool {
    let ys = segments(g.oh, g.h, g.kh, g.sh, g.dh, pads[0], pads[2]);
    let xs = segments(g.ow, g.w, g.kw, g.sw, g.dw, pads[1], pads[3]);
    ys.iter().all(|s| s.t0 < s.t1) && xs.iter().all(|s| s.t0 < s.t1)
}

/// The widest row [`emit_max_separable`] keeps in registers.
const SEPARABLE_MAX_W: usize = 32;

/// Whether an f32 max pool runs separably ([`emit_max_separable`]): unit strides and
/// dilations, "same" padding along the row (the output rows as wide as the input's),
/// rows of at most [`SEPARABLE_MAX_W`].
pub(crate) fn separable(g: &ConvGeom, kind: PoolKind, st: Store) -> bool {
    kind == PoolKind::Max
        && st == Store::F32
        && g.sh == 1
        && g.sw == 1
        && g.dh == 1
        && g.dw == 1
        && g.ow == g.w
        && g.w <= SEPARABLE_MAX_W
        && g.kh > 1
}

/// An f32 max pool in two passes over each plane: the window's rows first (each
/// output row the elementwise max of the input rows its windows cover, f32x4 along
/// the row, written to the output), then along each output row in place (the row
/// loaded into registers, each output the max of its window's columns). A max of the
/// same elements in another order: the same value (NaN if any is NaN, +0 over -0).
pub(crate) fn emit_max_separable(
    kb: &mut Kb<'_, '_>,
    g: &ConvGeom,
    pads: [usize; 4],
    x: Value,
    out: Value,
) {
    let ys = segments(g.oh, g.h, g.kh, g.sh, g.dh, pads[0], pads[2]);
    let xs = segments(g.ow, g.w, g.kw, g.sw, g.dw, pads[1], pads[3]);
    let g = *g;
    let w = g.w;
    kb.for_range(0, (g.n * g.c) as i64, 1, |kb, pl| {
        let xp = kb.idx(x, pl, (g.h * w * 4) as i64);
        let op = kb.idx(out, pl, (g.oh * w * 4) as i64);
        for ys in &ys {
            kb.for_range(ys.o0 as i64, ys.o1 as i64, 1, |kb, oy| {
                // Input row of tap 0 for this oy: oy - top (may be negative).
                let xrow = kb.idx(xp, oy, (w * 4) as i64);
                let orow = kb.idx(op, oy, (w * 4) as i64);
                let row_off = |i: usize| ((i as i64) - g.top as i64) * (w * 4) as i64;
                let mut c = 0;
                while c < w {
                    let (ty, step) = if c + 4 <= w { (F32X4, 4) } else { (F32, 1) };
                    let mut acc = kb.load(ty, xrow, row_off(ys.t0) + (c * 4) as i64);
                    for i in ys.t0 + 1..ys.t1 {
                        let v = kb.load(ty, xrow, row_off(i) + (c * 4) as i64);
                        acc = kb.b.ins().fmax(acc, v);
                    }
                    kb.store(acc, orow, (c * 4) as i64);
                    c += step;
                }
            });
        }
        // Along the rows, in place.
        kb.for_range(0, g.oh as i64, 1, |kb, oy| {
            let orow = kb.idx(op, oy, (w * 4) as i64);
            let vals: Vec<Value> = (0..w).map(|c| kb.load(F32, orow, (c * 4) as i64)).collect();
            for seg in &xs {
                for ox in seg.o0..seg.o1 {
                    // Input column of tap j: ox + j - left.
                    let col = |j: usize| ox + j - g.left;
                    let mut acc = vals[col(seg.t0)];
                    for j in seg.t0 + 1..seg.t1 {
                        acc = kb.b.ins().fmax(acc, vals[col(j)]);
                    }
                    kb.store(acc, orow, (ox * 4) as i64);
                }
            }
        });
    });
}

/// Emits a pooling sweep over `[N*C, H, W]` with elements of storage `st`.
pub(crate) fn emit_pool(
    kb: &mut Kb<'_, '_>,
    g: &ConvGeom,
    pads: [usize; 4],
    kind: PoolKind,
    st: Store,
    x: Value,
    out: Value,
) {
    if separable(g, kind, st) {
        emit_max_separable(kb, g, pads, x, out);
        return;
    }
    let ys = segments(g.oh, g.h, g.kh, g.sh, g.dh, pads[0], pads[2]);
    let xs = segments(g.ow, g.w, g.kw, g.sw, g.dw, pads[1], pads[3]);
    let eb = st.bytes() as i64;
    let g = *g;
    kb.for_range(0, (g.n * g.c) as i64, 1, |kb, pl| {
        let xp = kb.idx(x, pl, g.h as i64 * g.w as i64 * eb);
        let op = kb.idx(out, pl, g.oh as i64 * g.ow as i64 * eb);
        for ys in &ys {
            for xsg in &xs {
                let count = match kind {
                    PoolKind::Avg(true) => ys.div * xsg.div,
                    _ => (ys.t1 - ys.t0) * (xsg.t1 - xsg.t0),
                };
                kb.for_range(ys.o0 as i64, ys.o1 as i64, 1, |kb, oy| {
                    // Input row of tap 0 for this oy: oy*sh - top (may be negative).
                    let xrow = kb.idx(xp, oy, (g.sh * g.w) as i64 * eb);
                    let orow = kb.idx(op, oy, g.ow as i64 * eb);
                    let len = xsg.o1 - xsg.o0;
                    let vec = st == Store::F32 && g.sw == 1 && len >= 4;
                    let nv = if vec { len / 4 } else { 0 };
                    let window = |kb: &mut Kb<'_, '_>, base: Value, lanes: usize| -> Value {
                        let mut acc: Option<Value> = None;
                        for i in ys.t0..ys.t1 {
                            for j in xsg.t0..xsg.t1 {
                                let off = ((i * g.dh) as i64 - g.top as i64) * g.w as i64
                                    + (j * g.dw) as i64
                                    - g.left as i64;
                                let v = if st == Store::F32 {
                                    kb.load(if lanes == 4 { F32X4 } else { F32 }, base, off * eb)
                                } else {
                                    kb.load_i32(st, base, off * eb)
                                };
                                acc = Some(match acc {
                                    None => v,
                                    Some(a) => match (kind, st) {
                                        (PoolKind::Max, Store::F32) => kb.b.ins().fmax(a, v),
                                        (PoolKind::Max, _) => kb.b.ins().smax(a, v),
                                        (PoolKind::Avg(_), _) => kb.b.ins().fadd(a, v),
                                    },
                                });
                            }
                        }
                        let acc = acc.expect("windows cover an element");
                        match kind {
                            PoolKind::Max => acc,
                            PoolKind::Avg(_) => {
                                let c =
                                    kb.fconst(if lanes == 4 { F32X4 } else { F32 }, count as f32);
                                kb.b.ins().fdiv(acc, c)
                            }
                        }
                    };
                    if nv > 0 {
                        kb.for_range(0, nv as i64, 1, |kb, v| {
                            let ox = kb.b.ins().imul_imm_s(v, 4);
                            let ox = kb.b.ins().iadd_imm_s(ox, xsg.o0 as i64);
                            let base = kb.idx(xrow, ox, (g.sw as i64) * eb);
                            let r = window(kb, base, 4);
                            let d = kb.idx(orow, ox, eb);
                            kb.store(r, d, 0);
                        });
                    }
                    let rest0 = xsg.o0 + nv * 4;
                    if rest0 < xsg.o1 {
                        kb.for_range(rest0 as i64, xsg.o1 as i64, 1, |kb, ox| {
                            let base = kb.idx(xrow, ox, (g.sw as i64) * eb);
                            let r = window(kb, base, 1);
                            let d = kb.idx(orow, ox, eb);
                            if st == Store::F32 {
                                kb.store(r, d, 0);
                            } else {
                                kb.store_int(st, r, d, 0);
                            }
                        });
                    }
                });
            }
        }
    });
}

/// Mean over the `inner` elements of each of `planes` planes.
pub(crate) fn emit_global_avg(
    kb: &mut Kb<'_, '_>,
    planes: usize,
    inner: usize,
    x: Value,
    out: Value,
) {
    let nv = (inner / 4) as i64;
    kb.for_range(0, planes as i64, 1, |kb, pl| {
        let xp = kb.idx(x, pl, (inner * 4) as i64);
        let zero = kb.fconst(F32X4, 0.0);
        let acc = kb.var(F32X4, zero);
        kb.for_range(0, nv, 1, |kb, i| {
            let p = kb.idx(xp, i, 16);
            let v = kb.load(F32X4, p, 0);
            let a = kb.b.use_var(acc);
            let a = kb.b.ins().fadd(a, v);
            kb.b.def_var(acc, a);
        });
        let a = kb.b.use_var(acc);
        let mut s = kb.hsum(a);
        for e in (nv * 4) as usize..inner {
            let v = kb.load(F32, xp, (e * 4) as i64);
            s = kb.b.ins().fadd(s, v);
        }
        let c = kb.fconst(F32, inner as f32);
        let m = kb.b.ins().fdiv(s, c);
        let o = kb.idx(out, pl, 4);
        kb.store(m, o, 0);
    });
}
