//! Comparisons, booleans, `where`, integer `max`/`min`, indices along an axis
//! (`arg_max`, `arg_min`, `top_k`, `top_k_indices`) and `one_hot`: scalar kernels,
//! bit-exact with the interpreter, for f32 and every integer storage.
//!
//! - Elementwise ops (`equal`, `less`, `less_or_equal`, `not`, `and`, `or`, `xor`,
//!   `where`, and `max`/`min` on integer codes) walk the broadcast loop nest of [`super::nary::Nest`] (adjacent axes along
//!   which every operand moves alike merged), one element per step, each operand at its
//!   own element size. f32 operands compare with ordered IEEE comparisons (false on
//!   NaN), integer codes as exact i64. Booleans are `u1` bytes (0 or 1). `where` copies
//!   the chosen element's bytes, so NaN payloads and signed zeros stay.
//! - `arg_max`/`arg_min` keep the best value and index in registers along the axis;
//!   the NaN and tie rules of the op table are the comparisons below.
//! - `top_k` and `top_k_indices` pick the k elements one after another: pick `j` is the
//!   best element that ranks after pick `j - 1` in the output order (value, then index),
//!   found by one scan of the axis, so a line costs `k * d` comparisons and no scratch.
//!   That suits the small k of detection and classification heads; a sort would be the
//!   thing for large k.
//! - `one_hot` compares each (normalised) index with the positions of the new axis.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, I8, I16, I32, I64};
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use qcc_ir::shape::normalize_axis;
use qcc_ir::{Attrs, Module, Node, Op};

use super::Ecx;
use super::nary::Nest;
use crate::backend::kb::{Kb, MF};
use crate::backend::storage::Store;

/// An elementwise comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Lt,
    Le,
}

/// A boolean operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BoolOp {
    Not,
    And,
    Or,
    Xor,
}

/// The kernels of this module.
#[derive(Clone, Debug)]
pub(crate) enum LogicLowering {
    Compare {
        cmp: Cmp,
        st: Store,
        nest: Nest,
    },
    Bool {
        op: BoolOp,
        nest: Nest,
    },
    /// `max` (`max`) or `min` of integer codes of storage `st`.
    Extreme {
        max: bool,
        st: Store,
        nest: Nest,
    },
    /// `where`: `eb` bytes per element of a, b and the result.
    Where {
        eb: usize,
        nest: Nest,
    },
    Arg {
        max: bool,
        last: bool,
        line: Line,
    },
    TopK {
        values: bool,
        largest: bool,
        k: usize,
        line: Line,
    },
    OneHot {
        st: Store,
        outer: usize,
        inner: usize,
        depth: usize,
    },
}

/// The lines along one axis of x: `outer` x `inner` lines of `d` elements of storage
/// `st`, `inner` elements apart.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Line {
    st: Store,
    outer: usize,
    d: usize,
    inner: usize,
}

fn line_of(m: &Module, node: &Node) -> Result<Line, String> {
    let a = Attrs::new(node.op, &node.attrs);
    let x = m.ty(node.operands[0]);
    let axis = normalize_axis(a.int("axis")?, x.rank())?;
    let s = &x.shape;
    let d = s[axis];
    if d == 0 {
        return Err(format!("{}: axis {axis} is empty", node.op));
    }
    Ok(Line {
        st: Store::of(&x.elem),
        outer: s[..axis].iter().product(),
        d,
        inner: s[axis + 1..].iter().product(),
    })
}

pub(crate) fn select(m: &Module, node: &Node) -> Result<LogicLowering, String> {
    let a = Attrs::new(node.op, &node.attrs);
    let out = m.ty(node.result);
    let shapes: Vec<&[usize]> = node
        .operands
        .iter()
        .map(|&o| m.ty(o).shape.as_slice())
        .collect();
    let nest = || {
        for s in &shapes {
            if !qcc_ir::shape::broadcasts_to(s, &out.shape) {
                return Err(format!(
                    "{}: operand shape {s:?} does not broadcast to {:?}",
                    node.op, out.shape
                ));
            }
        }
        Ok(Nest::new(&out.shape, &shapes))
    };
    let st0 = Store::of(&m.ty(node.operands[0]).elem);
    Ok(match node.op {
        Op::Equal | Op::Less | Op::LessOrEqual => LogicLowering::Compare {
            cmp: match node.op {
                Op::Equal => Cmp::Eq,
                Op::Less => Cmp::Lt,
                _ => Cmp::Le,
            },
            st: st0,
            nest: nest()?,
        },
        Op::Not | Op::And | Op::Or | Op::Xor => LogicLowering::Bool {
            op: match node.op {
                Op::Not => BoolOp::Not,
                Op::And => BoolOp::And,
                Op::Or => BoolOp::Or,
                _ => BoolOp::Xor,
            },
            nest: nest()?,
        },
        Op::Max | Op::Min if st0 != Store::F32 => LogicLowering::Extreme {
            max: node.op == Op::Max,
            st: st0,
            nest: nest()?,
        },
        Op::Where => LogicLowering::Where {
            eb: Store::of(&out.elem).bytes(),
            nest: nest()?,
        },
        Op::ArgMax | Op::ArgMin => LogicLowering::Arg {
            max: node.op == Op::ArgMax,
            last: a.bool("select_last_index")?,
            line: line_of(m, node)?,
        },
        Op::TopK | Op::TopKIndices => {
            let line = line_of(m, node)?;
            let k = usize::try_from(a.int("k")?)
                .ok()
                .filter(|&k| k <= line.d)
                .ok_or_else(|| format!("{}: k must be in 0..={}", node.op, line.d))?;
            LogicLowering::TopK {
                values: node.op == Op::TopK,
                largest: a.bool("largest")?,
                k,
                line,
            }
        }
        Op::OneHot => {
            let x = m.ty(node.operands[0]);
            let axis = normalize_axis(a.int("axis")?, x.rank() + 1)?;
            let depth = usize::try_from(a.int("depth")?)
                .ok()
                .filter(|&d| d >= 1)
                .ok_or("one_hot: depth must be positive")?;
            LogicLowering::OneHot {
                st: st0,
                outer: x.shape[..axis].iter().product(),
                inner: x.shape[axis..].iter().product(),
                depth,
            }
        }
        op => return Err(format!("internal: {op} is not a logic op")),
    })
}

impl LogicLowering {
    pub fn kernel_name(&self) -> String {
        match self {
            LogicLowering::Compare { cmp, st, .. } => {
                let n = match cmp {
                    Cmp::Eq => "equal",
                    Cmp::Lt => "less",
                    Cmp::Le => "less_or_equal",
                };
                format!("{n}.{}", st.name())
            }
            LogicLowering::Bool { op, .. } => format!("{}.u1", format!("{op:?}").to_lowercase()),
            LogicLowering::Extreme { max, st, .. } => {
                format!(
                    "{}.broadcast.{}",
                    if *max { "max" } else { "min" },
                    st.name()
                )
            }
            LogicLowering::Where { eb, .. } => format!("where.{}bit", eb * 8),
            LogicLowering::Arg { max, line, .. } => {
                format!(
                    "arg_{}.{}",
                    if *max { "max" } else { "min" },
                    line.st.name()
                )
            }
            LogicLowering::TopK { values, line, .. } => format!(
                "{}.scan.{}",
                if *values { "top_k" } else { "top_k_indices" },
                line.st.name()
            ),
            LogicLowering::OneHot { st, .. } => format!("one_hot.{}", st.name()),
        }
    }
}

/// `f(ptrs, out)` for every element of the nest from axis `d` on: `ops` holds each
/// operand's pointer and element size, and `ptrs[o]` points at operand o's element;
/// `out` the result's pointer and element size (contiguous).
fn walk(
    kb: &mut Kb<'_, '_>,
    nest: &Nest,
    d: usize,
    ops: &[(Value, usize)],
    out: (Value, usize),
    f: &mut dyn FnMut(&mut Kb<'_, '_>, &[Value], Value),
) {
    if d == nest.dims.len() {
        let ptrs: Vec<Value> = ops.iter().map(|o| o.0).collect();
        f(kb, &ptrs, out.0);
        return;
    }
    let inner: usize = nest.dims[d + 1..].iter().product();
    kb.for_range(0, nest.dims[d] as i64, 1, |kb, i| {
        let ps: Vec<(Value, usize)> = ops
            .iter()
            .zip(&nest.strides)
            .map(|(&(p, b), s)| {
                if s[d] == 0 {
                    (p, b)
                } else {
                    (kb.idx(p, i, (s[d] * b) as i64), b)
                }
            })
            .collect();
        let o = kb.idx(out.0, i, (inner * out.1) as i64);
        walk(kb, nest, d + 1, &ps, (o, out.1), f);
    });
}

/// The integer type of `eb` bytes (element copies).
fn int_of(eb: usize) -> Type {
    match eb {
        1 => I8,
        2 => I16,
        _ => I32,
    }
}

/// An element of storage `st` at `p + off`: f32, or the code as an i64.
fn load_key(kb: &mut Kb<'_, '_>, st: Store, p: Value, off: i64) -> Value {
    if st == Store::F32 {
        kb.load(F32, p, off)
    } else {
        kb.load_i64(st, p, off)
    }
}

/// Stores an i8 truth value as a `u1` byte.
fn store_bool(kb: &mut Kb<'_, '_>, v: Value, p: Value) {
    kb.b.ins().store(MF, v, p, 0);
}

/// The comparisons of the keys of `arg_*` and `top_k` for one storage.
struct Keys {
    float: bool,
}

impl Keys {
    /// `a` ranks strictly above `b` (f32: NaN above every number, zeros equal).
    fn gt(&self, kb: &mut Kb<'_, '_>, a: Value, b: Value) -> Value {
        if self.float {
            let g = kb.b.ins().fcmp(FloatCC::GreaterThan, a, b);
            let an = kb.b.ins().fcmp(FloatCC::Unordered, a, a);
            let bn = kb.b.ins().fcmp(FloatCC::Ordered, b, b);
            let nan_over = kb.b.ins().band(an, bn);
            kb.b.ins().bor(g, nan_over)
        } else {
            kb.b.ins().icmp(IntCC::SignedGreaterThan, a, b)
        }
    }

    /// `a` and `b` rank equal (f32: all NaNs equal, zeros equal).
    fn eq(&self, kb: &mut Kb<'_, '_>, a: Value, b: Value) -> Value {
        if self.float {
            let e = kb.b.ins().fcmp(FloatCC::Equal, a, b);
            let an = kb.b.ins().fcmp(FloatCC::Unordered, a, a);
            let bn = kb.b.ins().fcmp(FloatCC::Unordered, b, b);
            let both = kb.b.ins().band(an, bn);
            kb.b.ins().bor(e, both)
        } else {
            kb.b.ins().icmp(IntCC::Equal, a, b)
        }
    }
}

pub(crate) fn emit(cx: &mut Ecx<'_, '_, '_, '_>, l: &LogicLowering) {
    let out = cx.out;
    match l {
        LogicLowering::Compare { cmp, st, nest } => {
            let a = cx.operand(0);
            let b = cx.operand(1);
            let (st, cmp) = (*st, *cmp);
            let eb = st.bytes();
            walk(
                cx.kb,
                nest,
                0,
                &[(a, eb), (b, eb)],
                (out, 1),
                &mut |kb, p, o| {
                    let x = load_key(kb, st, p[0], 0);
                    let y = load_key(kb, st, p[1], 0);
                    let r = if st == Store::F32 {
                        let cc = match cmp {
                            Cmp::Eq => FloatCC::Equal,
                            Cmp::Lt => FloatCC::LessThan,
                            Cmp::Le => FloatCC::LessThanOrEqual,
                        };
                        kb.b.ins().fcmp(cc, x, y)
                    } else {
                        let cc = match cmp {
                            Cmp::Eq => IntCC::Equal,
                            Cmp::Lt => IntCC::SignedLessThan,
                            Cmp::Le => IntCC::SignedLessThanOrEqual,
                        };
                        kb.b.ins().icmp(cc, x, y)
                    };
                    store_bool(kb, r, o);
                },
            );
        }
        LogicLowering::Bool { op, nest } => {
            let op = *op;
            let ptrs: Vec<(Value, usize)> = (0..cx.node.operands.len())
                .map(|i| (cx.operand(i), 1))
                .collect();
            walk(cx.kb, nest, 0, &ptrs, (out, 1), &mut |kb, p, o| {
                let a = kb.load(I8, p[0], 0);
                let r = match op {
                    BoolOp::Not => kb.b.ins().bxor_imm_u(a, 1),
                    _ => {
                        let b = kb.load(I8, p[1], 0);
                        match op {
                            BoolOp::And => kb.b.ins().band(a, b),
                            BoolOp::Or => kb.b.ins().bor(a, b),
                            _ => kb.b.ins().bxor(a, b),
                        }
                    }
                };
                store_bool(kb, r, o);
            });
        }
        LogicLowering::Extreme { max, st, nest } => {
            let a = cx.operand(0);
            let b = cx.operand(1);
            let (st, max) = (*st, *max);
            let eb = st.bytes();
            walk(
                cx.kb,
                nest,
                0,
                &[(a, eb), (b, eb)],
                (out, eb),
                &mut |kb, p, o| {
                    let x = kb.load_i64(st, p[0], 0);
                    let y = kb.load_i64(st, p[1], 0);
                    let r = if max {
                        kb.b.ins().smax(x, y)
                    } else {
                        kb.b.ins().smin(x, y)
                    };
                    kb.store_int(st, r, o, 0);
                },
            );
        }
        LogicLowering::Where { eb, nest } => {
            let eb = *eb;
            let ptrs = [(cx.operand(0), 1), (cx.operand(1), eb), (cx.operand(2), eb)];
            let ty = int_of(eb);
            walk(cx.kb, nest, 0, &ptrs, (out, eb), &mut |kb, p, o| {
                let c = kb.load(I8, p[0], 0);
                let a = kb.load(ty, p[1], 0);
                let b = kb.load(ty, p[2], 0);
                let r = kb.b.ins().select(c, a, b);
                kb.store(r, o, 0);
            });
        }
        LogicLowering::Arg { max, last, line } => {
            let x = cx.operand(0);
            emit_arg(cx.kb, *max, *last, line, x, out);
        }
        LogicLowering::TopK {
            values,
            largest,
            k,
            line,
        } => {
            let x = cx.operand(0);
            emit_top_k(cx.kb, *values, *largest, *k, line, x, out);
        }
        LogicLowering::OneHot {
            st,
            outer,
            inner,
            depth,
        } => {
            let x = cx.operand(0);
            let (st, inner, depth) = (*st, *inner as i64, *depth as i64);
            let eb = st.bytes() as i64;
            cx.kb.for_range(0, *outer as i64, 1, |kb, o| {
                let xo = kb.idx(x, o, inner * eb);
                let oo = kb.idx(out, o, inner * depth);
                kb.for_range(0, depth, 1, |kb, j| {
                    let oj = kb.idx(oo, j, inner);
                    kb.for_range(0, inner, 1, |kb, i| {
                        let p = kb.idx(xo, i, eb);
                        let v = kb.load_i64(st, p, 0);
                        // Negative indices count from the back.
                        let neg = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, v, 0);
                        let vd = kb.b.ins().iadd_imm_s(v, depth);
                        let v = kb.b.ins().select(neg, vd, v);
                        let hit = kb.b.ins().icmp(IntCC::Equal, v, j);
                        let q = kb.idx(oj, i, 1);
                        store_bool(kb, hit, q);
                    });
                });
            });
        }
    }
}

/// `arg_max` (`max`) or `arg_min` along each line.
fn emit_arg(kb: &mut Kb<'_, '_>, max: bool, last: bool, line: &Line, x: Value, out: Value) {
    let Line {
        st,
        outer,
        d,
        inner,
    } = *line;
    let float = st == Store::F32;
    let eb = st.bytes() as i64;
    let vty = if float { F32 } else { I64 };
    let keys = Keys { float };
    kb.for_range(0, outer as i64, 1, |kb, o| {
        let xo = kb.idx(x, o, d as i64 * inner as i64 * eb);
        let oo = kb.idx(out, o, inner as i64 * 4);
        kb.for_range(0, inner as i64, 1, |kb, i| {
            let xi = kb.idx(xo, i, eb);
            let v0 = load_key(kb, st, xi, 0);
            let zero = kb.c(0);
            let best = kb.var(vty, v0);
            let bidx = kb.var(I64, zero);
            kb.for_range(1, d as i64, 1, |kb, k| {
                let p = kb.idx(xi, k, inner as i64 * eb);
                let v = load_key(kb, st, p, 0);
                let b = kb.b.use_var(best);
                // Strictly better (f32: a NaN beats a number, for arg_min too), or a
                // tie that the last index wins (NaN ties NaN).
                let mut better = if float && !max {
                    let lt = kb.b.ins().fcmp(FloatCC::LessThan, v, b);
                    let vn = kb.b.ins().fcmp(FloatCC::Unordered, v, v);
                    let bo = kb.b.ins().fcmp(FloatCC::Ordered, b, b);
                    let nan_wins = kb.b.ins().band(vn, bo);
                    kb.b.ins().bor(lt, nan_wins)
                } else if max {
                    keys.gt(kb, v, b)
                } else {
                    keys.gt(kb, b, v)
                };
                if last {
                    let tie = keys.eq(kb, v, b);
                    better = kb.b.ins().bor(better, tie);
                }
                let nb = kb.b.ins().select(better, v, b);
                kb.b.def_var(best, nb);
                let bi = kb.b.use_var(bidx);
                let ni = kb.b.ins().select(better, k, bi);
                kb.b.def_var(bidx, ni);
            });
            let r = kb.b.use_var(bidx);
            let q = kb.idx(oo, i, 4);
            kb.store_int(Store::I32, r, q, 0);
        });
    });
}

/// `top_k` (values) or `top_k_indices` along each line: k scans (see the module docs).
fn emit_top_k(
    kb: &mut Kb<'_, '_>,
    values: bool,
    largest: bool,
    k: usize,
    line: &Line,
    x: Value,
    out: Value,
) {
    let Line {
        st,
        outer,
        d,
        inner,
    } = *line;
    if k == 0 {
        return;
    }
    let float = st == Store::F32;
    let eb = st.bytes() as i64;
    let ob = if values { eb } else { 4 };
    let vty = if float { F32 } else { I64 };
    let keys = Keys { float };
    // The key before every element in output order: the top of the order for largest
    // (NaN, or above every code), its bottom for smallest (-inf, or below every code),
    // with index -1.
    let sentinel = |kb: &mut Kb<'_, '_>| match (float, largest) {
        (true, true) => kb.b.ins().f32const(f32::NAN),
        (true, false) => kb.b.ins().f32const(f32::NEG_INFINITY),
        (false, true) => kb.c(i64::MAX),
        (false, false) => kb.c(i64::MIN),
    };
    kb.for_range(0, outer as i64, 1, |kb, o| {
        let xo = kb.idx(x, o, d as i64 * inner as i64 * eb);
        let oo = kb.idx(out, o, k as i64 * inner as i64 * ob);
        kb.for_range(0, inner as i64, 1, |kb, i| {
            let xi = kb.idx(xo, i, eb);
            let oi = kb.idx(oo, i, ob);
            let s = sentinel(kb);
            let m1 = kb.c(-1);
            let pv = kb.var(vty, s);
            let pi = kb.var(I64, m1);
            kb.for_range(0, k as i64, 1, |kb, j| {
                let prev_v = kb.b.use_var(pv);
                let prev_i = kb.b.use_var(pi);
                let zero8 = kb.b.ins().iconst(I8, 0);
                let z = kb.c(0);
                let have = kb.var(I8, zero8);
                let cv = kb.var(vty, prev_v);
                let ci = kb.var(I64, z);
                kb.for_range(0, d as i64, 1, |kb, e| {
                    let p = kb.idx(xi, e, inner as i64 * eb);
                    let v = load_key(kb, st, p, 0);
                    // e ranks after the previous pick: a worse key, or an equal key
                    // and a larger index.
                    let worse = if largest {
                        keys.gt(kb, prev_v, v)
                    } else {
                        keys.gt(kb, v, prev_v)
                    };
                    let tie = keys.eq(kb, v, prev_v);
                    let later = kb.b.ins().icmp(IntCC::SignedGreaterThan, e, prev_i);
                    let tie_later = kb.b.ins().band(tie, later);
                    let valid = kb.b.ins().bor(worse, tie_later);
                    // ... and ranks strictly before the current candidate (ties keep
                    // the earlier index, scanned first).
                    let c = kb.b.use_var(cv);
                    let before = if largest {
                        keys.gt(kb, v, c)
                    } else {
                        keys.gt(kb, c, v)
                    };
                    let h = kb.b.use_var(have);
                    let none = kb.b.ins().icmp_imm_s(IntCC::Equal, h, 0);
                    let take = kb.b.ins().bor(none, before);
                    let take = kb.b.ins().band(take, valid);
                    let nc = kb.b.ins().select(take, v, c);
                    kb.b.def_var(cv, nc);
                    let cidx = kb.b.use_var(ci);
                    let ni = kb.b.ins().select(take, e, cidx);
                    kb.b.def_var(ci, ni);
                    let nh = kb.b.ins().bor(h, take);
                    kb.b.def_var(have, nh);
                });
                let c = kb.b.use_var(cv);
                let cidx = kb.b.use_var(ci);
                kb.b.def_var(pv, c);
                kb.b.def_var(pi, cidx);
                let q = kb.idx(oi, j, inner as i64 * ob);
                if values {
                    // Copy the element's bytes (NaN payloads kept).
                    let src = kb.idx(xi, cidx, inner as i64 * eb);
                    let v = kb.load(int_of(eb as usize), src, 0);
                    kb.store(v, q, 0);
                } else {
                    kb.store_int(Store::I32, cidx, q, 0);
                }
            });
        });
    });
}
