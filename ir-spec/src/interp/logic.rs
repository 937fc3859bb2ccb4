//! Comparisons and booleans (`equal`, `less`, `less_or_equal`, `not`, `and`, `or`,
//! `xor`, `where`), `max`/`min` of integer codes, indices along an axis (`arg_max`, `arg_min`, `top_k`,
//! `top_k_indices`) and `one_hot`.
//!
//! Booleans are `u1` codes (0 false, 1 true). f32 elements compare as IEEE values, with
//! the NaN rules each op states; integer-valued elements compare their codes.

use std::cmp::Ordering;

use super::{Cx, Tensor, TensorData, split_at_axis};
use crate::shape::{broadcast, broadcast_indices, normalize_axis};

/// A comparison of two elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cmp {
    Eq,
    Lt,
    Le,
}

impl Cmp {
    fn f32(self, a: f32, b: f32) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
        }
    }

    fn int(self, a: i64, b: i64) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
        }
    }
}

/// `a (cmp) b` with broadcasting, as 0/1 codes.
pub(super) fn compare(cx: &Cx<'_>, cmp: Cmp) -> Result<Tensor, String> {
    let shape = broadcast(cx.shape(0), cx.shape(1))?;
    let ia = broadcast_indices(cx.shape(0), &shape);
    let ib = broadcast_indices(cx.shape(1), &shape);
    let data: Vec<i64> = match (&cx.t(0).data, &cx.t(1).data) {
        (TensorData::F32(a), TensorData::F32(b)) => ia
            .iter()
            .zip(&ib)
            .map(|(&i, &j)| cmp.f32(a[i], b[j]) as i64)
            .collect(),
        (TensorData::Int(a), TensorData::Int(b)) => ia
            .iter()
            .zip(&ib)
            .map(|(&i, &j)| cmp.int(a[i], b[j]) as i64)
            .collect(),
        (a, b) => {
            return Err(format!(
                "operands hold {} and {} data; they must have one element type",
                a.kind(),
                b.kind()
            ));
        }
    };
    Ok(Tensor::int(shape, data))
}

/// `max` (`max`) or `min` of integer codes with broadcasting.
pub(super) fn int_extreme(cx: &Cx<'_>, max: bool) -> Result<Tensor, String> {
    let (a, b) = (cx.int(0)?, cx.int(1)?);
    let shape = broadcast(cx.shape(0), cx.shape(1))?;
    let ia = broadcast_indices(cx.shape(0), &shape);
    let ib = broadcast_indices(cx.shape(1), &shape);
    let data = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| if max { a[i].max(b[j]) } else { a[i].min(b[j]) })
        .collect();
    Ok(Tensor::int(shape, data))
}

/// The boolean codes of operand `i` (0 or 1).
fn bools<'a>(cx: &Cx<'a>, i: usize) -> Result<&'a [i64], String> {
    let v = cx.int(i)?;
    if let Some(c) = v.iter().find(|&&c| c != 0 && c != 1) {
        return Err(format!(
            "operand {i} holds {c}, which is not a boolean (0 or 1)"
        ));
    }
    Ok(v)
}

pub(super) fn not(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = bools(cx, 0)?;
    Ok(Tensor::int(cx.shape(0), x.iter().map(|&v| 1 - v).collect()))
}

/// `f(a, b)` on booleans with broadcasting.
pub(super) fn logic(cx: &Cx<'_>, f: fn(bool, bool) -> bool) -> Result<Tensor, String> {
    let (a, b) = (bools(cx, 0)?, bools(cx, 1)?);
    let shape = broadcast(cx.shape(0), cx.shape(1))?;
    let ia = broadcast_indices(cx.shape(0), &shape);
    let ib = broadcast_indices(cx.shape(1), &shape);
    let data = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| f(a[i] != 0, b[j] != 0) as i64)
        .collect();
    Ok(Tensor::int(shape, data))
}

/// `cond ? a : b`, the three broadcast together.
pub(super) fn where_(cx: &Cx<'_>) -> Result<Tensor, String> {
    let c = bools(cx, 0)?;
    let shape = broadcast(cx.shape(0), &broadcast(cx.shape(1), cx.shape(2))?)?;
    let ic = broadcast_indices(cx.shape(0), &shape);
    let ia = broadcast_indices(cx.shape(1), &shape);
    let ib = broadcast_indices(cx.shape(2), &shape);
    let pick = |k: usize| c[ic[k]] != 0;
    let data = match (&cx.t(1).data, &cx.t(2).data) {
        (TensorData::F32(a), TensorData::F32(b)) => TensorData::F32(
            (0..ic.len())
                .map(|k| if pick(k) { a[ia[k]] } else { b[ib[k]] })
                .collect(),
        ),
        (TensorData::Int(a), TensorData::Int(b)) => TensorData::Int(
            (0..ic.len())
                .map(|k| if pick(k) { a[ia[k]] } else { b[ib[k]] })
                .collect(),
        ),
        (a, b) => {
            return Err(format!(
                "operands a and b hold {} and {} data; they must have one element type",
                a.kind(),
                b.kind()
            ));
        }
    };
    Tensor::new(shape, data)
}

/// The elements of operand 0 as keys that order them for `arg_*` and `top_k`: f32
/// values with NaN above every number (`-0.0` equal to `+0.0`), or codes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Key {
    F(f32),
    I(i64),
}

impl Key {
    /// The total order of the keys: NaN above `+inf`, all NaNs equal, zeros equal.
    fn cmp(self, other: Key) -> Ordering {
        match (self, other) {
            (Key::F(a), Key::F(b)) => match (a.is_nan(), b.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => a.partial_cmp(&b).expect("not NaN"),
            },
            (Key::I(a), Key::I(b)) => a.cmp(&b),
            // One tensor holds one kind.
            (Key::F(_), Key::I(_)) | (Key::I(_), Key::F(_)) => Ordering::Equal,
        }
    }
}

fn keys(t: &Tensor) -> Vec<Key> {
    match &t.data {
        TensorData::F32(v) => v.iter().map(|&x| Key::F(x)).collect(),
        TensorData::Int(v) => v.iter().map(|&x| Key::I(x)).collect(),
    }
}

/// `arg_max` (`max`) or `arg_min`: the index of the extreme along `axis`, the first or
/// (`select_last_index`) the last of a tie; NaN wins either way.
pub(super) fn arg_reduce(cx: &Cx<'_>, max: bool) -> Result<Tensor, String> {
    let x = keys(cx.t(0));
    let shape = cx.shape(0);
    let axis = normalize_axis(cx.attrs.int("axis")?, shape.len())?;
    let keep = cx.attrs.bool("keepdims")?;
    let last = cx.attrs.bool("select_last_index")?;
    let (outer, d, inner) = split_at_axis(shape, axis);
    if d == 0 {
        return Err(format!("axis {axis} is empty"));
    }
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| x[(o * d + k) * inner + i];
            let mut best = 0usize;
            for k in 1..d {
                let (v, b) = (at(k), at(best));
                let better = match (v, b) {
                    // NaN is the extreme of both: a NaN replaces a number, and ties
                    // with a NaN only under `select_last_index`.
                    (Key::F(v), Key::F(b)) if v.is_nan() || b.is_nan() => {
                        if v.is_nan() && b.is_nan() {
                            last
                        } else {
                            v.is_nan()
                        }
                    }
                    _ => {
                        let ord = v.cmp(b);
                        let ord = if max { ord } else { ord.reverse() };
                        ord == Ordering::Greater || (last && ord == Ordering::Equal)
                    }
                };
                if better {
                    best = k;
                }
            }
            out.push(best as i64);
        }
    }
    let mut oshape = shape.to_vec();
    if keep {
        oshape[axis] = 1;
    } else {
        oshape.remove(axis);
    }
    Ok(Tensor::int(oshape, out))
}

/// `top_k` (`values`) or `top_k_indices`.
pub(super) fn top_k(cx: &Cx<'_>, values: bool) -> Result<Tensor, String> {
    let t = cx.t(0);
    let x = keys(t);
    let shape = cx.shape(0);
    let axis = normalize_axis(cx.attrs.int("axis")?, shape.len())?;
    let largest = cx.attrs.bool("largest")?;
    let (outer, d, inner) = split_at_axis(shape, axis);
    let k = usize::try_from(cx.attrs.int("k")?)
        .ok()
        .filter(|&k| k <= d)
        .ok_or_else(|| format!("k must be in 0..={d} (the length of axis {axis})"))?;
    let mut idx = vec![0usize; outer * k * inner];
    let mut order: Vec<usize> = Vec::with_capacity(d);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| x[(o * d + j) * inner + i];
            order.clear();
            order.extend(0..d);
            // A stable sort keeps ties in index order.
            order.sort_by(|&p, &q| {
                let c = at(p).cmp(at(q));
                if largest { c.reverse() } else { c }
            });
            for (j, &src) in order[..k].iter().enumerate() {
                idx[(o * k + j) * inner + i] = (o * d + src) * inner + i;
            }
        }
    }
    let mut oshape = shape.to_vec();
    oshape[axis] = k;
    if values {
        Tensor::new(oshape, t.data.gather(&idx))
    } else {
        let pos = idx
            .iter()
            .map(|&f| ((f / inner) % d.max(1)) as i64)
            .collect();
        Ok(Tensor::int(oshape, pos))
    }
}

pub(super) fn one_hot(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = cx.int(0)?;
    let shape = cx.shape(0);
    let depth = cx.attrs.int("depth")?;
    if depth < 1 {
        return Err(format!("depth must be positive, found {depth}"));
    }
    let axis = normalize_axis(cx.attrs.int("axis")?, shape.len() + 1)?;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis..].iter().product();
    let d = depth as usize;
    let mut out = vec![0i64; outer * d * inner];
    for o in 0..outer {
        for i in 0..inner {
            let v = x[o * inner + i];
            let v = if v < 0 { v + depth } else { v };
            if (0..depth).contains(&v) {
                out[(o * d + v as usize) * inner + i] = 1;
            }
        }
    }
    let mut oshape = shape.to_vec();
    oshape.insert(axis, d);
    Ok(Tensor::int(oshape, out))
}
