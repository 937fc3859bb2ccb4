//! `resize` (ONNX Resize to the shape `sizes`).
//!
//! Every output coordinate's input taps are computed at compile time, per axis, with
//! the interpreter's formulas in f64 (coordinate transformation, clamping, nearest
//! rounding): the kernels read tables and never round a coordinate at run time.
//!
//! - `nearest` (any element type) is a gather ([`super::movement`]): each axis maps the
//!   output index to an input byte offset, affine where the picks are evenly spaced,
//!   from a table otherwise. Exact (codes and f32 bits are copied; the interpreter's
//!   f32 path turns -0 into +0, which compares equal).
//! - `linear` (f32) is n-linear interpolation computed as the interpreter computes it:
//!   per output element, `sum += (w_0 * w_1 * ...) * x` in f64 over the tap
//!   combinations in the same row-major order, the weight products formed in axis
//!   order (and hoisted out of inner loops), then rounded once to f32: bit-exact. An
//!   axis whose every output has one tap of weight 1 (e.g. N and C) contributes no
//!   factor; on the other axes an output with a single tap gets a second tap of weight
//!   0, whose products are skipped by a select (so an infinite input stays exact too).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, F64, I64};
use cranelift_codegen::ir::{InstBuilder, Value};
use qcc_ir::{Attrs, Module, Node};

use super::movement::{AxisMap, Gather};
use super::{Ecx, Lowering};
use crate::backend::kb::Kb;
use crate::backend::storage::Store;

/// One axis of a linear resize: one tap of weight 1 everywhere, or two taps.
#[derive(Clone, Debug)]
enum LinAxis {
    /// Input byte offset per output index.
    One(Vec<i64>),
    /// (offset 0, offset 1, weight 0, weight 1) per output index.
    Two(Vec<(i64, i64, f64, f64)>),
}

/// A linear resize: output dims and one entry per axis.
#[derive(Clone, Debug)]
pub(crate) struct ResizeLinear {
    dims: Vec<usize>,
    axes: Vec<LinAxis>,
}

impl ResizeLinear {
    pub fn kernel_name(&self) -> String {
        let n = self
            .axes
            .iter()
            .filter(|a| matches!(a, LinAxis::Two(_)))
            .count();
        format!("resize.linear{n}d.f64")
    }

    fn table(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for a in &self.axes {
            match a {
                LinAxis::One(t) => t.iter().for_each(|o| b.extend_from_slice(&o.to_le_bytes())),
                LinAxis::Two(t) => {
                    for (o0, o1, w0, w1) in t {
                        b.extend_from_slice(&o0.to_le_bytes());
                        b.extend_from_slice(&o1.to_le_bytes());
                        b.extend_from_slice(&w0.to_le_bytes());
                        b.extend_from_slice(&w1.to_le_bytes());
                    }
                }
            }
        }
        b
    }
}

pub(crate) fn select(m: &Module, node: &Node) -> Result<Lowering, String> {
    let a = Attrs::new(node.op, &node.attrs);
    let xty = m.ty(node.operands[0]);
    let shape = &xty.shape;
    let rank = shape.len();
    // The interpreter's sampling (its errors name the attribute that is wrong).
    let qcc_ir::shape::ResizePlan {
        linear,
        sizes,
        taps,
    } = qcc_ir::shape::resize_plan(&a, shape).map_err(|e| format!("resize: {e}"))?;
    if m.ty(node.result).shape != sizes {
        return Err("resize result shape differs from `sizes`".into());
    }
    if linear && !xty.elem.is_float() {
        return Err("linear resize needs an f32 operand".into());
    }
    let eb = Store::of(&xty.elem).bytes();
    let st = qcc_ir::shape::strides(shape);
    if !linear {
        let maps = (0..rank)
            .map(|d| {
                let t: Vec<i64> = taps[d]
                    .iter()
                    .map(|v| (v[0].0 * st[d] * eb) as i64)
                    .collect();
                affine(&t).unwrap_or(AxisMap::Table(t))
            })
            .collect();
        return Ok(Lowering::Gather(Gather {
            dims: sizes,
            maps,
            elem: eb,
            fill: 0,
        }));
    }
    let axes = (0..rank)
        .map(|d| {
            let b = (st[d] * 4) as i64;
            if taps[d].iter().all(|v| v.len() == 1) {
                LinAxis::One(taps[d].iter().map(|v| v[0].0 as i64 * b).collect())
            } else {
                LinAxis::Two(
                    taps[d]
                        .iter()
                        .map(|v| match v[..] {
                            [(i0, w0), (i1, w1)] => (i0 as i64 * b, i1 as i64 * b, w0, w1),
                            _ => (v[0].0 as i64 * b, v[0].0 as i64 * b, v[0].1, 0.0),
                        })
                        .collect(),
                )
            }
        })
        .collect();
    Ok(Lowering::Resize(ResizeLinear { dims: sizes, axes }))
}

/// The affine map of an evenly spaced table, if it is one.
fn affine(t: &[i64]) -> Option<AxisMap> {
    let start = *t.first()?;
    let stride = if t.len() > 1 { t[1] - t[0] } else { 0 };
    t.iter()
        .enumerate()
        .all(|(i, &v)| v == start + i as i64 * stride)
        .then_some(AxisMap::Affine { start, stride })
}

/// A tap combination: input pointer and weight product (None: no factor yet).
type Combo = (Value, Option<Value>);

pub(crate) fn emit(cx: &mut Ecx<'_, '_, '_, '_>, q: &ResizeLinear) {
    let x = cx.operand(0);
    let out = cx.out;
    let tab = cx.rodata(q.table(), 16);
    let kb = &mut *cx.kb;
    let mut bases = Vec::with_capacity(q.axes.len());
    let mut at = 0i64;
    for a in &q.axes {
        bases.push(kb.off(tab, at));
        at += match a {
            LinAxis::One(t) => t.len() as i64 * 8,
            LinAxis::Two(t) => t.len() as i64 * 32,
        };
    }
    let zero = kb.b.ins().f64const(0.0);
    if q.dims.iter().product::<usize>() == 0 {
        return;
    }
    level(kb, q, &bases, 0, vec![(x, None)], out, zero);
}

#[allow(clippy::too_many_arguments, reason = "one level of the nest")]
fn level(
    kb: &mut Kb<'_, '_>,
    q: &ResizeLinear,
    bases: &[Value],
    d: usize,
    combos: Vec<Combo>,
    out: Value,
    zero: Value,
) {
    if d == q.dims.len() {
        // The sum over the combinations, in order.
        let mut sum = zero;
        for (p, w) in combos {
            let v = kb.load(F32, p, 0);
            let v = kb.b.ins().fpromote(F64, v);
            match w {
                None => sum = kb.b.ins().fadd(sum, v),
                Some(w) => {
                    let t = kb.b.ins().fmul(w, v);
                    let s = kb.b.ins().fadd(sum, t);
                    let skip = kb.b.ins().fcmp(FloatCC::Equal, w, zero);
                    sum = kb.b.ins().select(skip, sum, s);
                }
            }
        }
        let r = kb.b.ins().fdemote(F32, sum);
        kb.store(r, out, 0);
        return;
    }
    let inner: usize = q.dims[d + 1..].iter().product();
    kb.for_range(0, q.dims[d] as i64, 1, |kb, o| {
        let ob = kb.idx(out, o, (inner * 4) as i64);
        let next: Vec<Combo> = match &q.axes[d] {
            LinAxis::One(_) => {
                let e = kb.idx(bases[d], o, 8);
                let off = kb.load(I64, e, 0);
                combos
                    .iter()
                    .map(|&(p, w)| (kb.b.ins().iadd(p, off), w))
                    .collect()
            }
            LinAxis::Two(_) => {
                let e = kb.idx(bases[d], o, 32);
                let o0 = kb.load(I64, e, 0);
                let o1 = kb.load(I64, e, 8);
                let w0 = kb.load(F64, e, 16);
                let w1 = kb.load(F64, e, 24);
                let mut v = Vec::with_capacity(combos.len() * 2);
                for &(p, w) in &combos {
                    for (off, wt) in [(o0, w0), (o1, w1)] {
                        let np = kb.b.ins().iadd(p, off);
                        let nw = match w {
                            None => wt,
                            Some(w) => kb.b.ins().fmul(w, wt),
                        };
                        v.push((np, Some(nw)));
                    }
                }
                v
            }
        };
        level(kb, q, bases, d + 1, next, ob, zero);
    });
}
