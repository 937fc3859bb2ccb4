//! `reduce_mean`, `reduce_sum`, `reduce_max`, `reduce_min` and `reduce_prod` over any set
//! of axes, accumulated in f64 and rounded once to f32, as the interpreter does; the sums
//! and products run in the interpreter's order (row-major over the reduced axes), so
//! results are bit-exact
//! (max and min are exact in any order; Cranelift's `fmax`/`fmin` propagate NaN and put
//! +0 over -0, as the interpreter does).
//!
//! The input shape is collapsed into runs of reduced and kept axes (size-1 axes
//! dropped). When the innermost run is kept, each f32x4 of 4 adjacent outputs is summed
//! as two f64x2 accumulators while a loop nest walks the reduced axes (one lane per
//! output, each in the interpreter's order). When the innermost run is reduced it is
//! contiguous and each output is summed by a scalar f64 chain; when it is the only
//! reduced run (a layer norm's mean over rows), four rows go at once, their chains
//! interleaved in two f64x2 accumulators (so four additions overlap instead of one
//! waiting for the last), each chain still in the interpreter's order. The mean is
//! `sum / count` in f64 (0 / 0 = NaN for an empty reduction, as in the interpreter).

use cranelift_codegen::ir::types::{F32, F32X4, F64, F64X2, I8X16};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Value};
use qcc_ir::shape::normalize_axis;
use qcc_ir::{Attrs, Module, Node, Op};

use super::Ecx;
use crate::backend::kb::Kb;

/// The reduction: collapsed input dims with their byte strides in the input and (kept
/// dims) in the output.
#[derive(Clone, Debug)]
pub(crate) struct ReduceMean {
    /// (size, input stride, output stride or None when reduced), outermost first.
    dims: Vec<(usize, i64, Option<i64>)>,
    count: usize,
    kind: Kind,
}

/// What the reduction computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Mean => "reduce_mean",
            Kind::Sum => "reduce_sum",
            Kind::Max => "reduce_max",
            Kind::Min => "reduce_min",
            Kind::Prod => "reduce_prod",
        }
    }

    /// The accumulator's start.
    fn init(self) -> f64 {
        match self {
            Kind::Mean | Kind::Sum => 0.0,
            Kind::Max => f64::NEG_INFINITY,
            Kind::Min => f64::INFINITY,
            Kind::Prod => 1.0,
        }
    }

    /// `a (op) v` on f64 or f64x2.
    fn combine(self, kb: &mut Kb<'_, '_>, a: Value, v: Value) -> Value {
        match self {
            Kind::Mean | Kind::Sum => kb.b.ins().fadd(a, v),
            Kind::Max => kb.b.ins().fmax(a, v),
            Kind::Min => kb.b.ins().fmin(a, v),
            Kind::Prod => kb.b.ins().fmul(a, v),
        }
    }
}

pub(crate) fn select(m: &Module, node: &Node) -> Result<ReduceMean, String> {
    let kind = match node.op {
        Op::ReduceMean => Kind::Mean,
        Op::ReduceSum => Kind::Sum,
        Op::ReduceMax => Kind::Max,
        Op::ReduceMin => Kind::Min,
        Op::ReduceProd => Kind::Prod,
        op => return Err(format!("internal: {op} is not a reduction")),
    };
    let a = Attrs::new(node.op, &node.attrs);
    let shape = &m.ty(node.operands[0]).shape;
    let r = shape.len();
    let list = a.ints("axes")?;
    let mut red = vec![list.is_empty(); r];
    for &ax in &list {
        let ax = normalize_axis(ax, r)?;
        if red[ax] && !list.is_empty() {
            return Err(format!("axis {ax} is listed twice in `axes`"));
        }
        red[ax] = true;
    }
    // Collapse runs of the same kind (element counts, then strides).
    let mut runs: Vec<(usize, bool)> = Vec::new();
    for d in 0..r {
        if shape[d] == 1 {
            continue;
        }
        match runs.last_mut() {
            Some((n, k)) if *k == red[d] => *n *= shape[d],
            _ => runs.push((shape[d], red[d])),
        }
    }
    let count: usize = (0..r).filter(|&d| red[d]).map(|d| shape[d]).product();
    let mut dims = Vec::with_capacity(runs.len());
    let mut in_st = 4i64;
    let mut out_st = 4i64;
    for &(n, is_red) in runs.iter().rev() {
        dims.push((n, in_st, (!is_red).then_some(out_st)));
        in_st *= n as i64;
        if !is_red {
            out_st *= n as i64;
        }
    }
    dims.reverse();
    Ok(ReduceMean { dims, count, kind })
}

impl ReduceMean {
    pub fn kernel_name(&self) -> String {
        match self.dims.last() {
            Some((_, _, Some(_))) => format!("{}.f64x2", self.kind.name()),
            _ => format!("{}.f64", self.kind.name()),
        }
    }
}

/// `f(p)` for every point of the nest `dims` (size, byte stride) from `p`.
fn walk(
    kb: &mut Kb<'_, '_>,
    dims: &[(usize, i64)],
    p: Value,
    f: &mut dyn FnMut(&mut Kb<'_, '_>, Value),
) {
    match dims.split_first() {
        None => f(kb, p),
        Some((&(n, st), rest)) => kb.for_range(0, n as i64, 1, |kb, i| {
            let q = kb.idx(p, i, st);
            walk(kb, rest, q, f);
        }),
    }
}

/// `f(x, o)` for every point of the kept nest `dims` (size, input stride, output stride).
fn walk2(
    kb: &mut Kb<'_, '_>,
    dims: &[(usize, i64, i64)],
    x: Value,
    o: Value,
    f: &mut dyn FnMut(&mut Kb<'_, '_>, Value, Value),
) {
    match dims.split_first() {
        None => f(kb, x, o),
        Some((&(n, si, so), rest)) => kb.for_range(0, n as i64, 1, |kb, i| {
            let xq = kb.idx(x, i, si);
            let oq = kb.idx(o, i, so);
            walk2(kb, rest, xq, oq, f);
        }),
    }
}

fn shuffle_bytes(kb: &mut Kb<'_, '_>, a: Value, b: Value, lanes: [u8; 4]) -> Value {
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let ai = kb.b.ins().bitcast(I8X16, le, a);
    let bi = kb.b.ins().bitcast(I8X16, le, b);
    let bytes: Vec<u8> = lanes
        .iter()
        .flat_map(|&l| (0..4).map(move |k| l * 4 + k))
        .collect();
    let mask = kb.b.func.dfg.immediates.push(ConstantData::from(bytes));
    let r = kb.b.ins().shuffle(ai, bi, mask);
    kb.b.ins().bitcast(F32X4, le, r)
}

pub(crate) fn emit(cx: &mut Ecx<'_, '_, '_, '_>, q: &ReduceMean) {
    let x = cx.operand(0);
    let out = cx.out;
    let kb = &mut *cx.kb;
    let kept: Vec<(usize, i64, i64)> = q
        .dims
        .iter()
        .filter_map(|&(n, si, so)| so.map(|so| (n, si, so)))
        .collect();
    let red: Vec<(usize, i64)> = q
        .dims
        .iter()
        .filter(|d| d.2.is_none())
        .map(|&(n, si, _)| (n, si))
        .collect();
    let count = q.count as f64;
    let kind = q.kind;
    let mean = kind == Kind::Mean;
    match q.dims.last() {
        Some(&(k, _, Some(_))) => {
            // Innermost run kept: 4 outputs per step, one f64 lane each.
            let outer = &kept[..kept.len() - 1];
            let cnt2 = kb.b.ins().f64const(count);
            let cnt2 = kb.b.ins().splat(F64X2, cnt2);
            let cnt1 = kb.b.ins().f64const(count);
            let zero2 = {
                let z = kb.b.ins().f64const(kind.init());
                kb.b.ins().splat(F64X2, z)
            };
            let zero1 = kb.b.ins().f64const(kind.init());
            walk2(kb, outer, x, out, &mut |kb, xp, op| {
                let nv = (k / 4) as i64;
                kb.for_range(0, nv, 1, |kb, j| {
                    let xj = kb.idx(xp, j, 16);
                    let lo = kb.var(F64X2, zero2);
                    let hi = kb.var(F64X2, zero2);
                    walk(kb, &red, xj, &mut |kb, p| {
                        let v = kb.load(F32X4, p, 0);
                        let vl = kb.b.ins().fvpromote_low(v);
                        let vh = shuffle_bytes(kb, v, v, [2, 3, 2, 3]);
                        let vh = kb.b.ins().fvpromote_low(vh);
                        let a = kb.b.use_var(lo);
                        let a = kind.combine(kb, a, vl);
                        kb.b.def_var(lo, a);
                        let a = kb.b.use_var(hi);
                        let a = kind.combine(kb, a, vh);
                        kb.b.def_var(hi, a);
                    });
                    let mut l = kb.b.use_var(lo);
                    let mut h = kb.b.use_var(hi);
                    if mean {
                        l = kb.b.ins().fdiv(l, cnt2);
                        h = kb.b.ins().fdiv(h, cnt2);
                    }
                    let l = kb.b.ins().fvdemote(l);
                    let h = kb.b.ins().fvdemote(h);
                    let r = shuffle_bytes(kb, l, h, [0, 1, 4, 5]);
                    let oj = kb.idx(op, j, 16);
                    kb.store(r, oj, 0);
                });
                for e in (nv * 4) as usize..k {
                    let xe = kb.off(xp, (e * 4) as i64);
                    let acc = kb.var(F64, zero1);
                    walk(kb, &red, xe, &mut |kb, p| {
                        let v = kb.load(F32, p, 0);
                        let v = kb.b.ins().fpromote(F64, v);
                        let a = kb.b.use_var(acc);
                        let a = kind.combine(kb, a, v);
                        kb.b.def_var(acc, a);
                    });
                    let mut a = kb.b.use_var(acc);
                    if mean {
                        a = kb.b.ins().fdiv(a, cnt1);
                    }
                    let r = kb.b.ins().fdemote(F32, a);
                    kb.store(r, op, (e * 4) as i64);
                }
            });
        }
        Some(&(n, 4, None)) if red.len() == 1 && !kept.is_empty() && n >= 4 => {
            // One contiguous reduced run under kept rows: four rows at a time, their
            // four chains interleaved (two f64x2 accumulators, rows 0-1 and 2-3), each
            // still in the interpreter's order; then the rows left one by one.
            let (rows, si, so) = kept[kept.len() - 1];
            let outer = &kept[..kept.len() - 1];
            let cnt1 = kb.b.ins().f64const(count);
            let zero2 = {
                let z = kb.b.ins().f64const(kind.init());
                kb.b.ins().splat(F64X2, z)
            };
            let zero1 = kb.b.ins().f64const(kind.init());
            let groups = (rows / 4) as i64;
            let nv = (n / 4) as i64;
            walk2(kb, outer, x, out, &mut |kb, xp, op| {
                kb.for_range(0, groups, 1, |kb, g| {
                    let xg = kb.idx(xp, g, 4 * si);
                    let og = kb.idx(op, g, 4 * so);
                    let accs = [kb.var(F64X2, zero2), kb.var(F64X2, zero2)];
                    kb.for_range(0, nv, 1, |kb, j| {
                        let xj = kb.idx(xg, j, 16);
                        let v: Vec<Value> =
                            (0..4).map(|r| kb.load(F32X4, xj, r as i64 * si)).collect();
                        // Columns c of rows (2h, 2h + 1) as f64 pairs: interleave
                        // the two rows (`punpckldq` / `punpckhdq`), widen each half.
                        let mut cols: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
                        for (h, ch) in cols.iter_mut().enumerate() {
                            let (a, b) = (v[2 * h], v[2 * h + 1]);
                            for half in [[0u8, 4, 1, 5], [2, 6, 3, 7]] {
                                let il = shuffle_bytes(kb, a, b, half);
                                let up = shuffle_bytes(kb, il, il, [2, 3, 2, 3]);
                                ch.push(kb.b.ins().fvpromote_low(il));
                                ch.push(kb.b.ins().fvpromote_low(up));
                            }
                        }
                        for (c0, c1) in cols[0].iter().zip(&cols[1]) {
                            for (acc, &col) in accs.iter().zip([c0, c1]) {
                                let a = kb.b.use_var(*acc);
                                let a = kind.combine(kb, a, col);
                                kb.b.def_var(*acc, a);
                            }
                        }
                    });
                    for (h, acc) in accs.iter().enumerate() {
                        for lane in 0..2u8 {
                            let r = 2 * h as i64 + lane as i64;
                            let a = kb.b.use_var(*acc);
                            let mut a = kb.b.ins().extractlane(a, lane);
                            for e in (nv * 4) as usize..n {
                                let v = kb.load(F32, xg, r * si + (e * 4) as i64);
                                let v = kb.b.ins().fpromote(F64, v);
                                a = kind.combine(kb, a, v);
                            }
                            if mean {
                                a = kb.b.ins().fdiv(a, cnt1);
                            }
                            let y = kb.b.ins().fdemote(F32, a);
                            kb.store(y, og, r * so);
                        }
                    }
                });
                for r in (groups * 4) as usize..rows {
                    let xr = kb.off(xp, r as i64 * si);
                    let acc = kb.var(F64, zero1);
                    walk(kb, &red, xr, &mut |kb, p| {
                        let v = kb.load(F32, p, 0);
                        let v = kb.b.ins().fpromote(F64, v);
                        let a = kb.b.use_var(acc);
                        let a = kind.combine(kb, a, v);
                        kb.b.def_var(acc, a);
                    });
                    let mut a = kb.b.use_var(acc);
                    if mean {
                        a = kb.b.ins().fdiv(a, cnt1);
                    }
                    let y = kb.b.ins().fdemote(F32, a);
                    kb.store(y, op, r as i64 * so);
                }
            });
        }
        _ => {
            // Innermost run reduced (or nothing left): one scalar f64 chain per output.
            let cnt1 = kb.b.ins().f64const(count);
            let zero1 = kb.b.ins().f64const(kind.init());
            walk2(kb, &kept, x, out, &mut |kb, xp, op| {
                let acc = kb.var(F64, zero1);
                walk(kb, &red, xp, &mut |kb, p| {
                    let v = kb.load(F32, p, 0);
                    let v = kb.b.ins().fpromote(F64, v);
                    let a = kb.b.use_var(acc);
                    let a = kind.combine(kb, a, v);
                    kb.b.def_var(acc, a);
                });
                let mut a = kb.b.use_var(acc);
                if mean {
                    a = kb.b.ins().fdiv(a, cnt1);
                }
                let r = kb.b.ins().fdemote(F32, a);
                kb.store(r, op, 0);
            });
        }
    }
}
