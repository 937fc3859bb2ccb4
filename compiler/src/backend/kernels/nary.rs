//! Elementwise f32 kernels of several broadcast operands: `pow`, `fake_quant`, `trunc`.
//!
//! The loop nest walks the output in row-major order; every operand has an element
//! stride per output axis (0 where it broadcasts). Adjacent axes along which every
//! operand moves contiguously are merged, so the innermost axis has stride 1 or 0 for
//! every operand: it runs over f32x4 vectors (broadcast operands are loaded once and
//! splatted before the loop) with a scalar tail. The per-element function is given by
//! the op's module ([`super::pow`], [`super::quantsim`]); each lane computes exactly the
//! operations the interpreter performs, in its order, unless that module says
//! otherwise.

use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

use crate::backend::kb::Kb;

/// A broadcast loop nest: output dims and, per operand, its element strides.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Nest {
    pub dims: Vec<usize>,
    /// `strides[operand][axis]`.
    pub strides: Vec<Vec<usize>>,
}

impl Nest {
    /// The nest of an output of shape `out` whose operands (shapes `ops`) broadcast
    /// to it (numpy rules, aligned at the back).
    pub fn new(out: &[usize], ops: &[&[usize]]) -> Nest {
        let full: Vec<Vec<usize>> = ops
            .iter()
            .map(|s| {
                let off = out.len() - s.len();
                let nat = qcc_ir::shape::strides(s);
                (0..out.len())
                    .map(|d| {
                        if d < off || s[d - off] == 1 {
                            0
                        } else {
                            nat[d - off]
                        }
                    })
                    .collect()
            })
            .collect();
        let mut dims: Vec<usize> = Vec::new();
        let mut st: Vec<Vec<usize>> = vec![Vec::new(); ops.len()];
        for d in 0..out.len() {
            if out[d] == 1 {
                continue;
            }
            let merge = !dims.is_empty()
                && (0..ops.len()).all(|o| st[o][dims.len() - 1] == full[o][d] * out[d]);
            if merge {
                let k = dims.len() - 1;
                dims[k] *= out[d];
                for o in 0..ops.len() {
                    st[o][k] = full[o][d];
                }
                continue;
            }
            dims.push(out[d]);
            for o in 0..ops.len() {
                st[o].push(full[o][d]);
            }
        }
        if dims.is_empty() {
            dims.push(1);
            for s in &mut st {
                s.push(1);
            }
        }
        Nest { dims, strides: st }
    }
}

/// The per-element function: called with the operand values (all F32X4 or all F32,
/// as `ty` says) and returns the result of the same type.
pub(crate) type ElemFn<'a> = dyn Fn(&mut Kb<'_, '_>, Type, &[Value]) -> Value + 'a;

/// `out[i] = f(ops[0][i], ops[1][i], ...)` over the nest (f32 operands and result).
pub(crate) fn emit(kb: &mut Kb<'_, '_>, nest: &Nest, ops: &[Value], out: Value, f: &ElemFn<'_>) {
    level(kb, nest, 0, ops.to_vec(), out, f);
}

fn level(kb: &mut Kb<'_, '_>, nest: &Nest, d: usize, ops: Vec<Value>, out: Value, f: &ElemFn<'_>) {
    let last = nest.dims.len() - 1;
    if d < last {
        let inner: usize = nest.dims[d + 1..].iter().product();
        kb.for_range(0, nest.dims[d] as i64, 1, |kb, i| {
            let ps: Vec<Value> = ops
                .iter()
                .zip(&nest.strides)
                .map(|(&p, s)| kb.idx(p, i, (s[d] * 4) as i64))
                .collect();
            let o = kb.idx(out, i, (inner * 4) as i64);
            level(kb, nest, d + 1, ps, o, f);
        });
        return;
    }
    let n = nest.dims[d];
    // Broadcast operands: loaded once.
    let scal: Vec<Option<Value>> = ops
        .iter()
        .zip(&nest.strides)
        .map(|(&p, s)| (s[d] == 0).then(|| kb.load(F32, p, 0)))
        .collect();
    let splat: Vec<Option<Value>> = scal
        .iter()
        .map(|s| s.map(|v| kb.b.ins().splat(F32X4, v)))
        .collect();
    let nv = (n / 4) as i64;
    kb.for_range(0, nv, 1, |kb, i| {
        let vals: Vec<Value> = ops
            .iter()
            .zip(&splat)
            .map(|(&p, s)| match s {
                Some(v) => *v,
                None => {
                    let a = kb.idx(p, i, 16);
                    kb.load(F32X4, a, 0)
                }
            })
            .collect();
        let r = f(kb, F32X4, &vals);
        let o = kb.idx(out, i, 16);
        kb.store(r, o, 0);
    });
    for e in (nv * 4) as usize..n {
        let off = (e * 4) as i64;
        let vals: Vec<Value> = ops
            .iter()
            .zip(&scal)
            .map(|(&p, s)| match s {
                Some(v) => *v,
                None => kb.load(F32, p, off),
            })
            .collect();
        let r = f(kb, F32, &vals);
        kb.store(r, out, off);
    }
}
