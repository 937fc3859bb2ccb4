//! Helpers rules use to read matches and add nodes: typed attribute maps, op nodes
//! with their meta leaf, constants, and name hints for new values.

use std::collections::BTreeMap;

use egg::{Id, Language as _};
use qcc_ir::{Attr, ConstData, ElemType, IntType, Op, QuantParams, QuantType, TensorType};

use super::analysis::{QEGraph, info};
use super::lang::QNode;

/// An attribute map from pairs.
pub fn attrs<const N: usize>(pairs: [(&str, Attr); N]) -> BTreeMap<String, Attr> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Adds `op(operands)` with result type `ty` and attributes `attrs`; returns its class.
pub fn add_op(
    eg: &mut QEGraph,
    op: Op,
    ty: TensorType,
    attrs: BTreeMap<String, Attr>,
    operands: &[Id],
) -> Id {
    let m = eg.analysis.tables.meta(op, ty, &attrs);
    let meta = eg.add(QNode::Meta(m));
    let mut ch = Vec::with_capacity(operands.len() + 1);
    ch.push(meta);
    ch.extend_from_slice(operands);
    eg.add(QNode::Op(op, ch.into()))
}

/// Adds a constant; returns its class.
pub fn add_const(eg: &mut QEGraph, name: &str, ty: TensorType, data: ConstData) -> Id {
    let c = eg.analysis.tables.constant(name, ty, data);
    eg.add(QNode::Const(c))
}

/// Gives class `id` the name hint `name` unless it already has a name.
pub fn hint(eg: &mut QEGraph, id: Id, name: impl Into<String>) {
    let t = eg[id].data.tensor_mut();
    if t.origin.is_none() && t.hint.is_none() {
        t.hint = Some(name.into());
    }
}

/// Gives class `id` the location of class `from` (its origin's) unless it has one.
pub fn inherit_loc(eg: &mut QEGraph, id: Id, from: Id) {
    let src = info(eg, from);
    let loc = src
        .origin
        .as_ref()
        .and_then(|o| o.loc.clone())
        .or(src.loc.clone());
    let t = eg[id].data.tensor_mut();
    if t.loc.is_none() {
        t.loc = loc;
    }
}

/// The name of class `id` (or `fallback`), for naming values derived from it.
pub fn name_of(eg: &QEGraph, id: Id, fallback: &str) -> String {
    info(eg, id).name().unwrap_or(fallback).to_string()
}

/// The op nodes of `op` in class `id`, as (meta child, operands).
pub fn op_nodes(eg: &QEGraph, id: Id, op: Op) -> Vec<(Id, Vec<Id>)> {
    eg[id]
        .nodes
        .iter()
        .filter(|n| n.op() == Some(op))
        .map(|n| (n.children()[0], n.operands().to_vec()))
        .collect()
}

/// The quantized type of tensor class `id`, if it has one.
pub fn quant_of(eg: &QEGraph, id: Id) -> Option<QuantType> {
    info(eg, id).quant().cloned()
}

/// The scales of `q` for each of `len` indices along `axis`: per-tensor parameters
/// repeat; per-axis parameters must be along `axis`.
pub fn scales_along(q: &QuantType, axis: usize, len: usize) -> Option<Vec<f64>> {
    match &q.params {
        QuantParams::PerTensor { scale, .. } => Some(vec![*scale as f64; len]),
        QuantParams::PerAxis {
            axis: a, scales, ..
        } if *a == axis && scales.len() == len => Some(scales.iter().map(|&s| s as f64).collect()),
        _ => None,
    }
}

/// Zero points along `axis`, like [`scales_along`].
pub fn zero_points_along(q: &QuantType, axis: usize, len: usize) -> Option<Vec<i64>> {
    match &q.params {
        QuantParams::PerTensor { zero_point, .. } => Some(vec![*zero_point as i64; len]),
        QuantParams::PerAxis {
            axis: a,
            zero_points,
            ..
        } if *a == axis && zero_points.len() == len => {
            Some(zero_points.iter().map(|&z| z as i64).collect())
        }
        _ => None,
    }
}

/// The largest `|code - zero_point|` a value of `q` can have.
pub fn max_centered(q: &QuantType) -> i64 {
    q.params
        .zero_points()
        .iter()
        .map(|&z| (q.qmax() - z as i64).max(z as i64 - q.qmin()))
        .max()
        .unwrap_or(0)
}

/// A plain `i32` tensor type.
pub fn i32_ty(shape: Vec<usize>) -> TensorType {
    TensorType::new(ElemType::Int(IntType::I32), shape)
}

/// Ints attribute.
pub fn ints(v: Vec<i64>) -> Attr {
    Attr::Ints(v)
}

/// Whether every scale of `q` is a normal f32 whose products with codes of up to 17
/// bits stay normal and finite.
pub fn scales_tame(q: &QuantType) -> bool {
    q.params
        .scales()
        .iter()
        .all(|&s| s.is_normal() && s > 0.0 && s < f32::MAX / 131_072.0)
}

/// The f32 values of class `id` when they are known: its constant value, or a
/// dequantize of a constant (which the analysis does not fold, to keep the quantization
/// visible), evaluated as the interpreter does: `(q - z) * s` in f32.
pub fn float_value(eg: &QEGraph, id: Id) -> Option<Vec<f32>> {
    if let Some(v) = super::analysis::value(eg, id).and_then(|t| t.as_f32()) {
        return Some(v.to_vec());
    }
    op_nodes(eg, id, Op::Dequantize)
        .into_iter()
        .find_map(|(_, o)| {
            let t = info(eg, o[0]);
            let q = t.quant()?;
            let codes = t.value.as_deref()?.as_int()?;
            let scales = q.params.scales();
            let zps = q.params.zero_points();
            let idx = |i: usize| -> Option<usize> {
                match &q.params {
                    QuantParams::PerTensor { .. } => Some(0),
                    QuantParams::PerAxis { axis, .. } => {
                        let inner: usize = t.ty.shape[axis + 1..].iter().product();
                        Some((i / inner.max(1)) % t.ty.shape[*axis])
                    }
                    QuantParams::Blocked { .. } => None,
                }
            };
            codes
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    let k = idx(i)?;
                    Some((c as f32 - zps[k] as f32) * scales[k])
                })
                .collect()
        })
}
