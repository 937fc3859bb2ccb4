//! Data movement: ops that move or select elements without changing them. They work
//! on any element type (codes are moved as they are).

use super::{Cx, Tensor, TensorData, checked_numel, next_index};
use crate::shape::{normalize_axis, strides};

/// The elements of `t` at `idx`, as a tensor of `shape`.
fn gathered(t: &Tensor, shape: Vec<usize>, idx: &[usize]) -> Result<Tensor, String> {
    Tensor::new(shape, t.data.gather(idx))
}

pub(super) fn reshape(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = cx.t(0);
    let shape = cx.attrs.usizes("shape")?;
    if checked_numel(&shape)? != x.numel() {
        return Err(format!(
            "cannot reshape {:?} ({} elements) to {shape:?}",
            x.shape,
            x.numel()
        ));
    }
    Tensor::new(shape, x.data.clone())
}

pub(super) fn flatten(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = cx.t(0);
    let r = x.rank() as i64;
    let axis = cx.attrs.int("axis")?;
    // Unlike other axes, the flatten axis may equal the rank.
    if axis < -r || axis > r {
        return Err(format!("axis {axis} is out of range for rank {r}"));
    }
    let axis = if axis < 0 { axis + r } else { axis } as usize;
    let a: usize = x.shape[..axis].iter().product();
    let b: usize = x.shape[axis..].iter().product();
    Tensor::new(vec![a, b], x.data.clone())
}

pub(super) fn transpose(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = cx.t(0);
    let r = x.rank();
    let perm = cx.attrs.usizes("perm")?;
    let mut seen = vec![false; r];
    if perm.len() != r
        || perm
            .iter()
            .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!("perm {perm:?} is not a permutation of {r} axes"));
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let st = strides(&x.shape);
    let n = x.numel();
    let mut idx = vec![0usize; r];
    let mut flat = Vec::with_capacity(n);
    for _ in 0..n {
        flat.push(idx.iter().zip(&perm).map(|(&i, &p)| i * st[p]).sum());
        next_index(&mut idx, &out_shape);
    }
    gathered(x, out_shape, &flat)
}

pub(super) fn concat(cx: &Cx<'_>) -> Result<Tensor, String> {
    let first = cx.t(0);
    let r = first.rank();
    let axis = normalize_axis(cx.attrs.int("axis")?, r)?;
    let mut out_shape = first.shape.clone();
    out_shape[axis] = 0;
    for (i, t) in cx.ins.iter().enumerate() {
        let same_rest = t.rank() == r
            && t.shape
                .iter()
                .zip(&first.shape)
                .enumerate()
                .all(|(d, (a, b))| d == axis || a == b);
        if !same_rest {
            return Err(format!(
                "operand {i} has shape {:?}, which does not join {:?} along axis {axis}",
                t.shape, first.shape
            ));
        }
        if t.is_float() != first.is_float() {
            return Err(format!("operand {i} holds {} data", t.data.kind()));
        }
        out_shape[axis] += t.shape[axis];
    }
    let outer: usize = first.shape[..axis].iter().product();
    let inner: usize = first.shape[axis + 1..].iter().product();
    let data = match &first.data {
        TensorData::F32(_) => {
            let mut out = Vec::with_capacity(checked_numel(&out_shape)?);
            for o in 0..outer {
                for (i, t) in cx.ins.iter().enumerate() {
                    let chunk = t.shape[axis] * inner;
                    out.extend_from_slice(&cx.f32(i)?[o * chunk..(o + 1) * chunk]);
                }
            }
            TensorData::F32(out)
        }
        TensorData::Int(_) => {
            let mut out = Vec::with_capacity(checked_numel(&out_shape)?);
            for o in 0..outer {
                for (i, t) in cx.ins.iter().enumerate() {
                    let chunk = t.shape[axis] * inner;
                    out.extend_from_slice(&cx.int(i)?[o * chunk..(o + 1) * chunk]);
                }
            }
            TensorData::Int(out)
        }
    };
    Tensor::new(out_shape, data)
}

/// Pad or crop. Negative amounts crop first; the positive amounts then pad the cropped
/// tensor (so `reflect`, `edge` and `wrap` read the cropped tensor).
pub(super) fn pad(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = cx.t(0);
    let r = x.rank();
    let pads = cx.attrs.ints("pads")?;
    if pads.len() != 2 * r {
        return Err(format!(
            "pads must have {} entries (begin and end of each axis), found {}",
            2 * r,
            pads.len()
        ));
    }
    let mode = cx.attrs.word("mode")?;
    let value = cx.attrs.float("value")?;
    // Per axis: the cropped range of the input and the padding around it.
    let mut out_shape = Vec::with_capacity(r);
    let mut lo = Vec::with_capacity(r); // first kept input index
    let mut kept = Vec::with_capacity(r); // kept length
    let mut before = Vec::with_capacity(r); // padding before
    for (a, &d) in x.shape.iter().enumerate() {
        let (b, e) = (pads[a], pads[r + a]);
        let crop_b = usize::try_from(b.saturating_neg().max(0)).map_err(|_| "pad out of range")?;
        let crop_e = usize::try_from(e.saturating_neg().max(0)).map_err(|_| "pad out of range")?;
        let k = d
            .checked_sub(crop_b.saturating_add(crop_e))
            .ok_or_else(|| format!("pads {b}, {e} crop more than the {d} elements of axis {a}"))?;
        let pb = usize::try_from(b.max(0)).map_err(|_| "pad out of range")?;
        let pe = usize::try_from(e.max(0)).map_err(|_| "pad out of range")?;
        if k == 0 && pb + pe > 0 && mode != "constant" {
            return Err(format!(
                "{mode} padding of axis {a}, which has no element left"
            ));
        }
        out_shape.push(
            k.checked_add(pb)
                .and_then(|v| v.checked_add(pe))
                .ok_or("pad out of range")?,
        );
        lo.push(crop_b);
        kept.push(k);
        before.push(pb);
    }
    // Source index along an axis for output position `o`, or None for a constant fill.
    let source = |a: usize, o: usize| -> Option<usize> {
        let k = kept[a] as i64;
        let i = o as i64 - before[a] as i64; // index into the cropped axis
        let j = if (0..k).contains(&i) {
            i
        } else {
            match mode.as_str() {
                "edge" => i.clamp(0, k - 1),
                "wrap" => i.rem_euclid(k),
                "reflect" => {
                    if k == 1 {
                        0
                    } else {
                        let period = 2 * (k - 1);
                        let m = i.rem_euclid(period);
                        if m < k { m } else { period - m }
                    }
                }
                _ => return None,
            }
        };
        Some(lo[a] + j as usize)
    };
    if !["constant", "edge", "wrap", "reflect"].contains(&mode.as_str()) {
        return Err(format!("unknown mode `{mode}`"));
    }
    let n = checked_numel(&out_shape)?;
    let st = strides(&x.shape);
    let mut idx = vec![0usize; r];
    let mut flat: Vec<Option<usize>> = Vec::with_capacity(n);
    for _ in 0..n {
        let mut f = Some(0);
        for (a, &o) in idx.iter().enumerate() {
            f = match (f, source(a, o)) {
                (Some(f), Some(s)) => Some(f + s * st[a]),
                _ => None,
            };
        }
        flat.push(f);
        next_index(&mut idx, &out_shape);
    }
    let data = match &x.data {
        TensorData::F32(v) => {
            TensorData::F32(flat.iter().map(|f| f.map_or(value, |i| v[i])).collect())
        }
        TensorData::Int(v) => {
            let code = value as i64;
            let elem = &cx.out.elem;
            let needs_fill = flat.iter().any(Option::is_none);
            if needs_fill && (code as f32 != value || !elem.admits(code)) {
                return Err(format!(
                    "fill value {value} is not a code of the element type {elem}"
                ));
            }
            TensorData::Int(flat.iter().map(|f| f.map_or(code, |i| v[i])).collect())
        }
    };
    Tensor::new(out_shape, data)
}

pub(super) fn slice(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = cx.t(0);
    let r = x.rank();
    let starts = cx.attrs.ints("starts")?;
    let ends = cx.attrs.ints("ends")?;
    let axes = cx.attrs.ints("axes")?;
    let steps = cx.attrs.ints("steps")?;
    let k = axes.len();
    if starts.len() != k || ends.len() != k || steps.len() != k {
        return Err(format!(
            "starts, ends, axes and steps must have the same length, found {}, {}, {k}, {}",
            starts.len(),
            ends.len(),
            steps.len()
        ));
    }
    // Per axis: (first index, step, count).
    let mut sel: Vec<(i64, i64, usize)> = x.shape.iter().map(|&d| (0, 1, d)).collect();
    let mut seen = vec![false; r];
    for i in 0..k {
        let a = normalize_axis(axes[i], r)?;
        if std::mem::replace(&mut seen[a], true) {
            return Err(format!("axis {a} is sliced twice"));
        }
        if steps[i] == 0 {
            return Err(format!("step of axis {a} is 0"));
        }
        let (s, count) = crate::shape::slice_range(starts[i], ends[i], steps[i], x.shape[a]);
        sel[a] = (s, steps[i], count);
    }
    let out_shape: Vec<usize> = sel.iter().map(|s| s.2).collect();
    let st = strides(&x.shape);
    let n = checked_numel(&out_shape)?;
    let mut idx = vec![0usize; r];
    let mut flat = Vec::with_capacity(n);
    for _ in 0..n {
        let f: i64 = idx
            .iter()
            .zip(&sel)
            .zip(&st)
            .map(|((&i, &(s, step, _)), &stride)| (s + i as i64 * step) * stride as i64)
            .sum();
        flat.push(f as usize);
        next_index(&mut idx, &out_shape);
    }
    gathered(x, out_shape, &flat)
}

pub(super) fn squeeze(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = cx.t(0);
    let r = x.rank();
    let mut drop = vec![false; r];
    for a in cx.attrs.ints("axes")? {
        let a = normalize_axis(a, r)?;
        if x.shape[a] != 1 {
            return Err(format!("axis {a} has size {}, not 1", x.shape[a]));
        }
        if std::mem::replace(&mut drop[a], true) {
            return Err(format!("axis {a} is listed twice"));
        }
    }
    let shape = x
        .shape
        .iter()
        .zip(&drop)
        .filter(|(_, d)| !**d)
        .map(|(&s, _)| s)
        .collect::<Vec<_>>();
    Tensor::new(shape, x.data.clone())
}

pub(super) fn unsqueeze(cx: &Cx<'_>) -> Result<Tensor, String> {
    let x = cx.t(0);
    let axes = cx.attrs.ints("axes")?;
    let r = x.rank() + axes.len();
    let mut ins = vec![false; r];
    for &a in &axes {
        let a = normalize_axis(a, r)?;
        if std::mem::replace(&mut ins[a], true) {
            return Err(format!("axis {a} is listed twice"));
        }
    }
    let mut dims = x.shape.iter();
    let shape = ins
        .iter()
        .map(|&i| if i { 1 } else { *dims.next().unwrap_or(&1) })
        .collect::<Vec<_>>();
    Tensor::new(shape, x.data.clone())
}
