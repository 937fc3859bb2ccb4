//! Shapes and data movement: Reshape, Flatten, Transpose, Concat, Pad, Slice, Squeeze,
//! Unsqueeze, Gather, Expand, Identity, Constant, Cast/CastLike, Split (into slices),
//! DepthToSpace/SpaceToDepth (reshape, transpose, reshape), Tile (concats), and the shape
//! arithmetic that folds once input shapes are fixed (Shape, Size, ConstantOfShape,
//! Range), which is evaluated here on import-time constants and never reaches the IR.

use qcc_ir::shape::{broadcast, broadcast_indices, normalize_axis, strides};
use qcc_ir::{Attr, ConstData, ElemType, Op, Rounding, TensorType};

use super::ctx::{NodeCx, ints, norm_axes, usz};
use super::tensor::{CData, CTensor, DType};
use super::{OpReg, onnx_op as op};

pub(crate) const OPS: &[OpReg] = &[
    op("Identity", 1, identity),
    op("Dropout", 7, dropout),
    op("Constant", 1, constant),
    op("Shape", 1, shape),
    op("Size", 1, size),
    op("ConstantOfShape", 9, constant_of_shape),
    op("Range", 11, range),
    op("Gather", 1, gather),
    op("Reshape", 5, reshape),
    op("Flatten", 1, flatten),
    op("Transpose", 1, transpose),
    op("Concat", 4, concat),
    op("Squeeze", 1, squeeze),
    op("Unsqueeze", 1, unsqueeze),
    op("Slice", 1, slice),
    op("Pad", 2, pad),
    op("Expand", 8, expand),
    op("Cast", 6, cast),
    op("CastLike", 15, cast_like),
    op("Split", 2, split),
    op("DepthToSpace", 1, depth_to_space),
    op("SpaceToDepth", 1, space_to_depth),
    op("Tile", 6, tile),
];

/// Element count, saturating (sizes that large are rejected where they matter).
fn numel(shape: &[usize]) -> usize {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX)
}

/// Largest tensor the importer materialises itself (ConstantOfShape, Range, Expand,
/// and Gather, Concat, Tile and Expand of import-time constants).
const MAX_MADE: usize = 1 << 26;

/// Refuses to materialise `shape` at import time when it has more than [`MAX_MADE`]
/// elements; `what` names the tensor.
pub(crate) fn check_made(shape: &[usize], what: &str) -> Result<usize, String> {
    let n = numel(shape);
    if n > MAX_MADE {
        return Err(format!(
            "{what} would have shape {shape:?}, too large: qcc computes constants of at most \
             {MAX_MADE} (2^26) elements when importing"
        ));
    }
    Ok(n)
}

/// The most copies (Tile) or slices (Gather) the importer writes for one run-time tensor.
const MAX_PIECES: usize = 1 << 16;

// ---- import-time evaluation on constants ----

fn ct_reshape(c: &CTensor, shape: Vec<usize>) -> CTensor {
    CTensor::new(c.dtype, shape, c.data.clone())
}

pub(crate) fn ct_transpose(c: &CTensor, perm: &[usize]) -> CTensor {
    let out_shape: Vec<usize> = perm.iter().map(|&p| c.shape[p]).collect();
    let st = strides(&c.shape);
    let n = numel(&out_shape);
    let mut idx = vec![0usize; out_shape.len()];
    let mut flat = Vec::with_capacity(n);
    for _ in 0..n {
        flat.push(idx.iter().zip(perm).map(|(&i, &p)| i * st[p]).sum());
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    CTensor::new(c.dtype, out_shape, c.data.gather(&flat))
}

/// Flat indices of `c` selected by taking `sel[d]` along each axis d.
fn select(shape: &[usize], sel: &[Vec<usize>]) -> Vec<usize> {
    let st = strides(shape);
    let mut out = vec![0usize];
    for (d, s) in sel.iter().enumerate() {
        let mut next = Vec::with_capacity(out.len() * s.len());
        for &base in &out {
            for &i in s {
                next.push(base + i * st[d]);
            }
        }
        out = next;
    }
    out
}

/// The indices ONNX Slice takes along an axis of length `dim`.
pub(crate) fn slice_indices(start: i64, end: i64, step: i64, dim: usize) -> Vec<usize> {
    let d = dim as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = if step > 0 {
        (norm(start).clamp(0, d), norm(end).clamp(0, d))
    } else {
        (norm(start).clamp(-1, d - 1), norm(end).clamp(-1, d - 1))
    };
    let mut out = Vec::new();
    let mut i = s;
    while (step > 0 && i < e) || (step < 0 && i > e) {
        out.push(i as usize);
        i = i.saturating_add(step);
    }
    out
}

fn ct_concat(parts: &[&CTensor], axis: usize) -> CTensor {
    let first = parts[0];
    let mut shape = first.shape.clone();
    shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
    let outer: usize = first.shape[..axis].iter().product();
    let is_float = matches!(first.data, CData::F(_));
    let mut f = Vec::new();
    let mut iv = Vec::new();
    for o in 0..outer {
        for p in parts {
            let inner: usize = p.shape[axis..].iter().product();
            let range = o * inner..(o + 1) * inner;
            match &p.data {
                CData::F(v) => f.extend_from_slice(&v[range]),
                CData::I(v) => iv.extend_from_slice(&v[range]),
            }
        }
    }
    let data = if is_float { CData::F(f) } else { CData::I(iv) };
    CTensor::new(first.dtype, shape, data)
}

/// Casts constant data to `to` (float to integer truncates toward zero and wraps, as
/// numpy's `astype` does).
pub(crate) fn ct_cast(c: &CTensor, to: DType) -> Result<CTensor, String> {
    let data = match (&c.data, to) {
        (_, DType::F32 | DType::F64) => CData::F(c.to_f32()),
        (CData::F(v), DType::Bool) => CData::I(v.iter().map(|&x| (x != 0.0) as i64).collect()),
        (CData::I(v), DType::Bool) => CData::I(v.iter().map(|&x| (x != 0) as i64).collect()),
        (d, t) if t.is_int() => {
            let raw: Vec<i64> = match d {
                CData::F(v) => v
                    .iter()
                    .map(|&x| if x.is_nan() { 0 } else { x.trunc() as i64 })
                    .collect(),
                CData::I(v) => v.clone(),
            };
            match t.int_type() {
                Some(it) => CData::I(raw.into_iter().map(|x| it.wrap(x)).collect()),
                None => CData::I(raw),
            }
        }
        _ => {
            return Err(format!(
                "cast to {} is not supported (float, double and integer types are)",
                to.name()
            ));
        }
    };
    Ok(CTensor::new(to, c.shape.clone(), data))
}

// ---- handlers ----

fn identity(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    cx.alias(0, 0)
}

fn dropout(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    // Inference: the identity. A requested mask output is all true.
    if cx.has(2) {
        let t = cx.konst(2, "training_mode")?;
        if t.scalar_f64().is_some_and(|v| v != 0.0) {
            return Err("training_mode = true is not supported (inference only)".into());
        }
    }
    if cx.a_int("is_test", 1)? == 0 && cx.opset < 7 {
        return Err("training-mode Dropout is not supported".into());
    }
    if cx.wants_output(1) {
        let shape = cx.shape_of(0)?;
        let n = check_made(&shape, "the `mask` output")?;
        cx.set_const(1, CTensor::new(DType::Bool, shape, CData::I(vec![1; n])));
    }
    cx.alias(0, 0)
}

fn constant(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let c = if let Some(t) = cx.a_tensor("value")? {
        t
    } else if let Some(f) = cx.a_opt_float("value_float")? {
        CTensor::f32s(vec![], vec![f])
    } else if let Some(v) = cx.a_floats("value_floats")? {
        CTensor::f32s(vec![v.len()], v)
    } else if let Some(i) = cx.a_opt_int("value_int")? {
        CTensor::i64s(vec![], vec![i])
    } else if let Some(v) = cx.a_ints("value_ints")? {
        CTensor::i64s(vec![v.len()], v)
    } else if cx.attr("sparse_value").is_some() {
        return Err("attribute `sparse_value` is not supported (give a dense `value`)".into());
    } else if cx.attr("value_string").is_some() || cx.attr("value_strings").is_some() {
        return Err("string constants are not supported".into());
    } else {
        return Err(
            "no value: give one of the attributes `value`, `value_float`, `value_floats`, \
             `value_int` and `value_ints`"
                .into(),
        );
    };
    cx.set_const(0, c);
    Ok(())
}

fn shape(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let s = cx.shape_of(0)?;
    let r = s.len() as i64;
    let norm = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = norm(cx.a_int("start", 0)?);
    let end = norm(cx.a_int("end", r)?);
    let v: Vec<i64> = if start < end {
        s[start..end].iter().map(|&d| d as i64).collect()
    } else {
        vec![]
    };
    cx.set_const(0, CTensor::i64s(vec![v.len()], v));
    Ok(())
}

fn size(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let n = numel(&cx.shape_of(0)?) as i64;
    cx.set_const(0, CTensor::i64s(vec![], vec![n]));
    Ok(())
}

/// Input `i` (a shape, `what`) as sizes.
fn shape_arg(cx: &NodeCx<'_, '_>, i: usize, what: &str) -> Result<Vec<usize>, String> {
    cx.konst_ints(i, what)?
        .into_iter()
        .map(|d| {
            usize::try_from(d)
                .map_err(|_| format!("input {i} (`{what}`) has a negative dimension {d}"))
        })
        .collect()
}

fn constant_of_shape(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let shape = shape_arg(cx, 0, "input")?;
    let value = cx
        .a_tensor("value")?
        .unwrap_or_else(|| CTensor::f32s(vec![1], vec![0.0]));
    if value.numel() != 1 {
        return Err("attribute `value` must hold one element".into());
    }
    let n = check_made(&shape, "the result")?;
    let data = match &value.data {
        CData::F(v) => CData::F(vec![v[0]; n]),
        CData::I(v) => CData::I(vec![v[0]; n]),
    };
    cx.set_const(0, CTensor::new(value.dtype, shape, data));
    Ok(())
}

fn range(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let start = cx.konst(0, "start")?;
    let limit = cx.konst(1, "limit")?;
    let delta = cx.konst(2, "delta")?;
    let (Some(s), Some(l), Some(d)) = (start.scalar_f64(), limit.scalar_f64(), delta.scalar_f64())
    else {
        return Err("start, limit and delta must be scalars".into());
    };
    if d == 0.0 {
        return Err("delta must not be 0".into());
    }
    let n = ((l - s) / d).ceil().max(0.0);
    if n > MAX_MADE as f64 {
        return Err(format!(
            "the range from {s} to {l} by {d} has {n} elements, too many: qcc computes \
             constants of at most {MAX_MADE} (2^26) elements when importing"
        ));
    }
    let n = n as usize;
    let data = match &start.data {
        CData::F(_) => {
            let (s, d) = (s as f32, d as f32);
            CData::F((0..n).map(|i| s + i as f32 * d).collect())
        }
        CData::I(_) => {
            // In i128: the values run from the first to the last, both checked.
            let (s, d) = (s as i64 as i128, d as i64 as i128);
            let last = s + (n as i128 - 1).max(0) * d;
            if i64::try_from(last).is_err() {
                return Err(format!(
                    "the range from {s} by {d} ends at {last}, beyond int64"
                ));
            }
            CData::I((0..n as i128).map(|i| (s + i * d) as i64).collect())
        }
    };
    cx.set_const(0, CTensor::new(start.dtype, vec![n], data));
    Ok(())
}

fn gather(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let dshape = cx.shape_of(0)?;
    let axis = normalize_axis(cx.a_int("axis", 0)?, dshape.len())
        .map_err(|e| format!("attribute `axis`: {e}"))?;
    let idx = cx.konst(1, "indices")?;
    let dim = dshape[axis] as i64;
    let flat: Vec<usize> = cx
        .konst_ints(1, "indices")?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + dim } else { i };
            if (0..dim).contains(&j) {
                Ok(j as usize)
            } else {
                Err(format!(
                    "index {i} is out of range for axis {axis} of length {dim}"
                ))
            }
        })
        .collect::<Result<_, String>>()?;
    let mut out_shape = dshape[..axis].to_vec();
    out_shape.extend_from_slice(&idx.shape);
    out_shape.extend_from_slice(&dshape[axis + 1..]);
    if cx.is_pure_const(0) {
        check_made(&out_shape, "the result")?;
        let data = cx.konst(0, "data")?;
        let mut sel: Vec<Vec<usize>> = dshape.iter().map(|&d| (0..d).collect()).collect();
        sel[axis] = flat;
        let picked = data.data.gather(&select(&dshape, &sel));
        cx.set_const(0, CTensor::new(data.dtype, out_shape, picked));
        return Ok(());
    }
    // Run-time data, constant indices: one slice per index, joined, then reshaped.
    if flat.len() > MAX_PIECES {
        return Err(format!(
            "input 1 (`indices`) holds {} indices; qcc gathers from a run-time tensor with \
             one slice per index, at most {MAX_PIECES}",
            flat.len()
        ));
    }
    let x = cx.ir(0)?;
    let r = dshape.len();
    let mut pieces = Vec::new();
    for (k, &i) in flat.iter().enumerate() {
        pieces.push(cx.emit(
            Op::Slice,
            vec![x],
            vec![
                ("starts", ints(&[i as i64])),
                ("ends", ints(&[i as i64 + 1])),
                ("axes", ints(&[axis as i64])),
                ("steps", ints(&[1])),
            ],
            None,
            &format!(".g{k}"),
        )?);
    }
    let joined = if pieces.len() == 1 {
        pieces[0]
    } else if pieces.is_empty() {
        return Err("Gather with no indices is not supported".into());
    } else {
        cx.emit(
            Op::Concat,
            pieces,
            vec![("axis", Attr::Int(axis as i64))],
            None,
            ".cat",
        )?
    };
    let _ = r;
    let y = cx.emit(
        Op::Reshape,
        vec![joined],
        vec![("shape", usz(&out_shape))],
        None,
        "",
    )?;
    cx.set_ir(0, y);
    Ok(())
}

/// The target shape of ONNX Reshape.
pub(crate) fn reshape_target(
    input: &[usize],
    spec: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 => {
                if infer.is_some() {
                    return Err(format!("the shape {spec:?} has more than one -1"));
                }
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| {
                format!(
                    "shape entry {i} is 0 (copy), but the input has rank {}",
                    input.len()
                )
            })?),
            d if d < 0 => {
                return Err(format!(
                    "shape entry {i} is {d}; entries are sizes, 0 (copy) or -1 (infer)"
                ));
            }
            d => out.push(d as usize),
        }
    }
    let total = numel(input);
    if let Some(i) = infer {
        let rest = numel(&out);
        if rest == 0 || !total.is_multiple_of(rest) {
            return Err(format!(
                "cannot infer the -1 of shape {spec:?} for an input of shape {input:?}"
            ));
        }
        out[i] = total / rest;
    }
    if numel(&out) != total {
        return Err(format!(
            "shape {spec:?} ({out:?}) does not hold the {total} elements of the input {input:?}"
        ));
    }
    Ok(out)
}

fn reshape_to(cx: &mut NodeCx<'_, '_>, target: Vec<usize>) -> Result<(), String> {
    if cx.is_pure_const(0) {
        let c = cx.konst(0, "data")?;
        cx.set_const(0, ct_reshape(&c, target));
        return Ok(());
    }
    let x = cx.ir(0)?;
    if cx.ty(x).shape == target {
        cx.set_ir(0, x);
        return Ok(());
    }
    let y = cx.emit(
        Op::Reshape,
        vec![x],
        vec![("shape", usz(&target))],
        None,
        "",
    )?;
    cx.set_ir(0, y);
    Ok(())
}

fn reshape(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let spec = cx.konst_ints(1, "shape")?;
    let allowzero = cx.a_int("allowzero", 0)? != 0;
    let target = reshape_target(&cx.shape_of(0)?, &spec, allowzero)?;
    reshape_to(cx, target)
}

fn flatten(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let s = cx.shape_of(0)?;
    let r = s.len() as i64;
    let a = cx.a_int("axis", 1)?;
    let axis = if a < 0 { a + r } else { a };
    if !(0..=r).contains(&axis) {
        return Err(format!(
            "attribute `axis` = {a} is out of range for rank {r}"
        ));
    }
    let axis = axis as usize;
    let target = vec![numel(&s[..axis]), numel(&s[axis..])];
    reshape_to(cx, target)
}

fn transpose(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let r = cx.shape_of(0)?.len();
    let perm: Vec<usize> = match cx.a_ints("perm")? {
        Some(p) => {
            let p: Vec<usize> = p
                .iter()
                .map(|&a| normalize_axis(a, r))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("attribute `perm`: {e}"))?;
            let mut sorted = p.clone();
            sorted.sort_unstable();
            if sorted != (0..r).collect::<Vec<_>>() {
                return Err(format!(
                    "attribute `perm` = {p:?} is not a permutation of 0..{r}"
                ));
            }
            p
        }
        None => (0..r).rev().collect(),
    };
    if cx.is_pure_const(0) {
        let c = cx.konst(0, "data")?;
        cx.set_const(0, ct_transpose(&c, &perm));
        return Ok(());
    }
    let x = cx.ir(0)?;
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        cx.set_ir(0, x);
        return Ok(());
    }
    let y = cx.emit(Op::Transpose, vec![x], vec![("perm", usz(&perm))], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

fn concat(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let n = cx.n_inputs();
    if n == 0 {
        return Err("at least one input is required".into());
    }
    let r = cx.shape_of(0)?.len();
    let axis = match cx.a_opt_int("axis")? {
        Some(a) => a,
        None if cx.opset < 4 => 1,
        None => return Err("attribute `axis` is required".into()),
    };
    let axis = normalize_axis(axis, r).map_err(|e| format!("attribute `axis`: {e}"))?;
    // Empty pieces add nothing (shape arithmetic often concatenates `[]`).
    let mut live = Vec::new();
    for i in 0..n {
        let s = cx.shape_of(i)?;
        if s.len() != r {
            return Err(format!("input {i} has rank {}, input 0 rank {r}", s.len()));
        }
        if numel(&s) > 0 || i == n - 1 && live.is_empty() {
            live.push(i);
        }
    }
    if live.iter().all(|&i| cx.is_pure_const(i)) {
        let parts: Vec<_> = live
            .iter()
            .map(|&i| cx.konst(i, ""))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&CTensor> = parts.iter().map(|p| p.as_ref()).collect();
        let mut joined = refs[0].shape.clone();
        joined[axis] = refs.iter().map(|p| p.shape[axis]).sum();
        check_made(&joined, "the result")?;
        let shape0 = &refs[0].shape;
        for (k, p) in refs.iter().enumerate() {
            for d in 0..r {
                if d != axis && p.shape[d] != shape0[d] {
                    return Err(format!(
                        "input {} has shape {:?}, incompatible with {shape0:?} outside axis {axis}",
                        live[k], p.shape
                    ));
                }
            }
        }
        cx.set_const(0, ct_concat(&refs, axis));
        return Ok(());
    }
    let mut ops = Vec::new();
    for &i in &live {
        ops.push(cx.ir(i)?);
    }
    if ops.len() == 1 {
        cx.set_ir(0, ops[0]);
        return Ok(());
    }
    let y = cx.emit(
        Op::Concat,
        ops,
        vec![("axis", Attr::Int(axis as i64))],
        None,
        "",
    )?;
    cx.set_ir(0, y);
    Ok(())
}

/// Axes from the `axes` attribute (before opset 13) or input 1 (from 13), and where
/// they came from (for errors).
fn axes_arg(
    cx: &NodeCx<'_, '_>,
    input_since: i64,
) -> Result<(Option<Vec<i64>>, &'static str), String> {
    if cx.opset >= input_since {
        Ok((cx.opt_konst_ints(1, "axes")?, "input 1 (`axes`)"))
    } else {
        Ok((cx.a_ints("axes")?, "attribute `axes`"))
    }
}

fn squeeze(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let s = cx.shape_of(0)?;
    let axes: Vec<usize> = match axes_arg(cx, 13)? {
        (Some(a), what) => norm_axes(&a, s.len(), what)?,
        (None, _) => (0..s.len()).filter(|&d| s[d] == 1).collect(),
    };
    for &a in &axes {
        if s[a] != 1 {
            return Err(format!(
                "axis {a} of the input {s:?} has size {}, not 1: it cannot be squeezed",
                s[a]
            ));
        }
    }
    let target: Vec<usize> = (0..s.len())
        .filter(|d| !axes.contains(d))
        .map(|d| s[d])
        .collect();
    if cx.is_pure_const(0) {
        return reshape_to(cx, target);
    }
    let x = cx.ir(0)?;
    if axes.is_empty() {
        cx.set_ir(0, x);
        return Ok(());
    }
    let y = cx.emit(Op::Squeeze, vec![x], vec![("axes", usz(&axes))], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

fn unsqueeze(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let s = cx.shape_of(0)?;
    let (axes, what) = axes_arg(cx, 13)?;
    let axes = axes.ok_or_else(|| format!("{what} is required"))?;
    let out_rank = s.len() + axes.len();
    let mut norm = norm_axes(&axes, out_rank, what)?;
    norm.sort_unstable();
    if norm.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("{what} {axes:?} repeat an axis"));
    }
    let mut target = Vec::with_capacity(out_rank);
    let mut it = s.iter();
    for d in 0..out_rank {
        if norm.contains(&d) {
            target.push(1);
        } else {
            target.push(*it.next().expect("rank adds up"));
        }
    }
    if cx.is_pure_const(0) {
        return reshape_to(cx, target);
    }
    let x = cx.ir(0)?;
    let y = cx.emit(Op::Unsqueeze, vec![x], vec![("axes", usz(&norm))], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

fn slice(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let s = cx.shape_of(0)?;
    let r = s.len();
    let (starts, ends, axes, steps, what) = if cx.opset < 10 {
        let starts = cx
            .a_ints("starts")?
            .ok_or("attribute `starts` is required")?;
        let ends = cx.a_ints("ends")?.ok_or("attribute `ends` is required")?;
        let axes = cx.a_ints("axes")?;
        (starts, ends, axes, None, "attribute `axes`")
    } else {
        let starts = cx.konst_ints(1, "starts")?;
        let ends = cx.konst_ints(2, "ends")?;
        let axes = cx.opt_konst_ints(3, "axes")?;
        let steps = cx.opt_konst_ints(4, "steps")?;
        (starts, ends, axes, steps, "input 3 (`axes`)")
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(format!(
            "starts, ends, axes and steps must have the same length (found {}, {}, {} and {})",
            starts.len(),
            ends.len(),
            axes.len(),
            steps.len()
        ));
    }
    let axes_n = norm_axes(&axes, r, what)?;
    if steps.contains(&0) {
        return Err(format!("steps {steps:?}: a step must not be 0"));
    }
    if cx.is_pure_const(0) {
        let c = cx.konst(0, "data")?;
        let mut sel: Vec<Vec<usize>> = s.iter().map(|&d| (0..d).collect()).collect();
        for k in 0..axes_n.len() {
            sel[axes_n[k]] = slice_indices(starts[k], ends[k], steps[k], s[axes_n[k]]);
        }
        let shape: Vec<usize> = sel.iter().map(|v| v.len()).collect();
        let data = c.data.gather(&select(&s, &sel));
        cx.set_const(0, CTensor::new(c.dtype, shape, data));
        return Ok(());
    }
    let x = cx.ir(0)?;
    let y = cx.emit(
        Op::Slice,
        vec![x],
        vec![
            ("starts", ints(&starts)),
            ("ends", ints(&ends)),
            ("axes", usz(&axes_n)),
            ("steps", ints(&steps)),
        ],
        None,
        "",
    )?;
    cx.set_ir(0, y);
    Ok(())
}

fn pad(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let s = cx.shape_of(0)?;
    let r = s.len();
    let mode = cx.a_str("mode")?.unwrap_or_else(|| "constant".into());
    if !["constant", "reflect", "edge", "wrap"].contains(&mode.as_str()) {
        return Err(format!(
            "attribute `mode` = {mode:?} is not supported (constant, reflect, edge and wrap \
             are)"
        ));
    }
    let (pads, value) = if cx.opset < 11 {
        let pads = cx.a_ints("pads")?.ok_or("attribute `pads` is required")?;
        (pads, cx.a_float("value", 0.0)?)
    } else {
        let pads = cx.konst_ints(1, "pads")?;
        let value = match cx.opt_konst(2, "constant_value")? {
            Some(c) => {
                c.scalar_f64()
                    .ok_or("input 2 (`constant_value`) must be a scalar")? as f32
            }
            None => 0.0,
        };
        (pads, value)
    };
    let pads = match if cx.opset >= 18 {
        cx.opt_konst_ints(3, "axes")?
    } else {
        None
    } {
        Some(axes) => {
            if pads.len() != 2 * axes.len() {
                return Err(format!(
                    "pads has {} entries, the {} axes of input 3 (`axes`) need {}",
                    pads.len(),
                    axes.len(),
                    2 * axes.len()
                ));
            }
            let mut full = vec![0i64; 2 * r];
            for (k, &a) in norm_axes(&axes, r, "input 3 (`axes`)")?.iter().enumerate() {
                full[a] = pads[k];
                full[r + a] = pads[axes.len() + k];
            }
            full
        }
        None => pads,
    };
    if pads.len() != 2 * r {
        return Err(format!(
            "pads has {} entries, rank {r} needs {}",
            pads.len(),
            2 * r
        ));
    }
    let x = cx.ir(0)?;
    if pads.iter().all(|&p| p == 0) {
        cx.set_ir(0, x);
        return Ok(());
    }
    let y = cx.emit(
        Op::Pad,
        vec![x],
        vec![
            ("pads", ints(&pads)),
            ("mode", Attr::Enum(mode)),
            ("value", Attr::Float(value)),
        ],
        None,
        "",
    )?;
    cx.set_ir(0, y);
    Ok(())
}

fn expand(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let s = cx.shape_of(0)?;
    let spec = shape_arg(cx, 1, "shape")?;
    let out = broadcast(&s, &spec)?;
    if cx.is_pure_const(0) {
        check_made(&out, "the result")?;
        let c = cx.konst(0, "input")?;
        let idx = broadcast_indices(&s, &out);
        cx.set_const(0, CTensor::new(c.dtype, out, c.data.gather(&idx)));
        return Ok(());
    }
    let x = cx.f32_in(0)?;
    if out == s {
        cx.set_ir(0, x);
        return Ok(());
    }
    // x * 1 is exactly x (signed zeros and NaNs included), broadcast to the shape.
    let n = check_made(&out, "the result")?;
    let ones = cx.f32_const("ones", out, vec![1.0; n]);
    let y = cx.emit(Op::Mul, vec![x, ones], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

fn cast_to(cx: &mut NodeCx<'_, '_>, to: DType) -> Result<(), String> {
    if cx.is_pure_const(0) {
        let c = cx.konst(0, "input")?;
        cx.set_const(0, ct_cast(&c, to)?);
        return Ok(());
    }
    let x = cx.ir(0)?;
    let from = cx.ty(x).elem.clone();
    if to == DType::Bool && from != ElemType::U1 {
        // Nonzero is true (NaN too): not(x == 0).
        let zero = match &from {
            ElemType::F32 => ConstData::F32(vec![0.0]),
            // Integer-valued types compare codes with code 0 (ONNX casts the codes).
            e if e.admits(0) => ConstData::Int(vec![0]),
            e => return Err(format!("cast of {e} to bool is not supported")),
        };
        let zero = cx.new_const(
            "zero",
            TensorType::new(from.clone(), Vec::<usize>::new()),
            zero,
        );
        let e = cx.emit(Op::Equal, vec![x, zero], vec![], None, ".is_zero")?;
        let y = cx.emit(Op::Not, vec![e], vec![], None, "")?;
        cx.set_ir(0, y);
        return Ok(());
    }
    let elem = match to {
        DType::F32 => ElemType::F32,
        d => match d.int_type() {
            Some(t) => ElemType::Int(t),
            _ => {
                return Err(format!(
                    "cast of a run-time value to {} is not supported (float32 and 2..32-bit integers are)",
                    to.name()
                ));
            }
        },
    };
    if from == elem {
        cx.set_ir(0, x);
        return Ok(());
    }
    // ONNX (and numpy) wrap out-of-range integers where the IR's f32 -> integer cast
    // saturates: go through i32 (which holds every value that matters), then
    // reinterpret the low bits.
    let x = match (&from, &elem) {
        (ElemType::F32, ElemType::Int(t)) if t.bits < 32 => cx.emit(
            Op::Cast,
            vec![x],
            vec![("rounding", Attr::Enum(Rounding::Down.name().into()))],
            Some(ElemType::I32),
            ".i32",
        )?,
        _ => x,
    };
    let y = cx.emit(
        Op::Cast,
        vec![x],
        vec![("rounding", Attr::Enum(Rounding::Down.name().into()))],
        Some(elem),
        "",
    )?;
    cx.set_ir(0, y);
    Ok(())
}

fn cast(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let to = cx.a_opt_int("to")?.ok_or("attribute `to` is required")?;
    if cx.a_int("saturate", 1)? != 1 {
        // Only matters for float8 targets, which are not supported anyway.
    }
    cast_to(cx, DType::from_code(to as i32))
}

fn cast_like(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let to = cx.dtype_of(1)?;
    cast_to(cx, to)
}

/// A shape-changing reshape of an IR value, for handlers in other families.
pub(crate) fn reshape_ir(
    cx: &mut NodeCx<'_, '_>,
    x: qcc_ir::ValueId,
    shape: &[usize],
    suffix: &str,
) -> Result<qcc_ir::ValueId, String> {
    if cx.ty(x).shape == shape {
        return Ok(x);
    }
    cx.emit(
        Op::Reshape,
        vec![x],
        vec![("shape", usz(shape))],
        None,
        suffix,
    )
}

/// One `slice` per output along `axis`: sizes from the `split` input (opset 13 on) or
/// attribute, else `num_outputs` (opset 18; the last piece may be smaller), else equal.
fn split(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let s = cx.shape_of(0)?;
    let axis = normalize_axis(cx.a_int("axis", 0)?, s.len())
        .map_err(|e| format!("attribute `axis`: {e}"))?;
    let d = s[axis];
    let outs = cx.node_outputs();
    let sizes: Vec<usize> = match if cx.opset >= 13 {
        cx.opt_konst_ints(1, "split")?
    } else {
        cx.a_ints("split")?
    } {
        Some(v) => {
            if v.len() != outs || v.iter().any(|&x| x < 0) {
                return Err(format!(
                    "`split` {v:?} must hold {outs} non-negative sizes, one per output"
                ));
            }
            v.iter().map(|&x| x as usize).collect()
        }
        None => {
            let n = match cx.a_opt_int("num_outputs")? {
                Some(n) if n as usize != outs => {
                    return Err(format!("num_outputs = {n} but the node has {outs} outputs"));
                }
                _ => outs,
            };
            if n == 0 {
                return Err("the node has no outputs".into());
            }
            let each = d.div_ceil(n);
            if cx.opset < 18 && d % n != 0 {
                return Err(format!(
                    "axis {axis} of length {d} does not split into {n} equal parts; give `split`"
                ));
            }
            (0..n)
                .map(|k| each.min(d.saturating_sub(k * each)))
                .collect()
        }
    };
    let total = sizes.iter().map(|&n| n as u128).sum::<u128>();
    if total != d as u128 {
        return Err(format!(
            "split sizes {sizes:?} add up to {total}, but axis {axis} has length {d}"
        ));
    }
    let x = cx.ir(0)?;
    let mut start = 0usize;
    for (k, &n) in sizes.iter().enumerate() {
        let y = cx.emit(
            Op::Slice,
            vec![x],
            vec![
                ("starts", ints(&[start as i64])),
                ("ends", ints(&[(start + n) as i64])),
                ("axes", usz(&[axis])),
                ("steps", ints(&[1])),
            ],
            None,
            &format!(".split{k}"),
        )?;
        cx.set_ir(k, y);
        start += n;
    }
    Ok(())
}

/// `x` reshaped to `a`, permuted by `perm`, reshaped to `b`.
fn reshape_permute(
    cx: &mut NodeCx<'_, '_>,
    a: &[usize],
    perm: &[usize],
    b: &[usize],
) -> Result<(), String> {
    let x = cx.ir(0)?;
    let r = cx.emit(
        Op::Reshape,
        vec![x],
        vec![("shape", usz(a))],
        None,
        ".blocks",
    )?;
    let t = cx.emit(
        Op::Transpose,
        vec![r],
        vec![("perm", usz(perm))],
        None,
        ".moved",
    )?;
    let y = cx.emit(Op::Reshape, vec![t], vec![("shape", usz(b))], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

/// The [N, C, H, W] shape of input 0 and the `blocksize` attribute.
fn nchw_block(cx: &NodeCx<'_, '_>) -> Result<([usize; 4], usize), String> {
    let s = cx.shape_of(0)?;
    let [n, c, h, w] = s[..] else {
        return Err(format!(
            "input of shape {s:?}: expected rank 4 [N, C, H, W]"
        ));
    };
    let b = cx
        .a_opt_int("blocksize")?
        .ok_or("attribute `blocksize` is required")?;
    if b < 1 {
        return Err(format!("attribute `blocksize` = {b} must be at least 1"));
    }
    Ok(([n, c, h, w], b as usize))
}

/// [N, C, H, W] -> [N, C/b^2, H b, W b]: mode DCR (default) takes the depth as
/// (b, b, C/b^2), CRD as (C/b^2, b, b).
fn depth_to_space(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let ([n, c, h, w], b) = nchw_block(cx)?;
    let Some(b2) = b.checked_mul(b).filter(|&bb| c % bb == 0) else {
        return Err(format!(
            "{c} channels do not divide by blocksize^2 = {}",
            (b as u128) * (b as u128)
        ));
    };
    let mode = cx.a_str("mode")?.unwrap_or_else(|| "DCR".into());
    let c2 = c / b2;
    let out = [n, c2, h * b, w * b];
    match mode.as_str() {
        "DCR" => reshape_permute(cx, &[n, b, b, c2, h, w], &[0, 3, 4, 1, 5, 2], &out),
        "CRD" => reshape_permute(cx, &[n, c2, b, b, h, w], &[0, 1, 4, 2, 5, 3], &out),
        other => Err(format!(
            "attribute `mode` = {other:?}: expected \"DCR\" or \"CRD\""
        )),
    }
}

/// [N, C, H, W] -> [N, C b^2, H/b, W/b], the depth as (b, b, C).
fn space_to_depth(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let ([n, c, h, w], b) = nchw_block(cx)?;
    if h % b != 0 || w % b != 0 {
        return Err(format!("H = {h} and W = {w} must divide by blocksize {b}"));
    }
    reshape_permute(
        cx,
        &[n, c, h / b, b, w / b, b],
        &[0, 3, 5, 1, 2, 4],
        &[n, c * b * b, h / b, w / b],
    )
}

/// Each axis repeated `repeats[d]` times: a concat of copies per repeated axis
/// (import-time constants are tiled at once).
fn tile(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let s = cx.shape_of(0)?;
    let reps = cx.konst_ints(1, "repeats")?;
    if reps.len() != s.len() || reps.iter().any(|&r| r < 0) {
        return Err(format!(
            "`repeats` {reps:?} must hold {} non-negative counts, one per axis",
            s.len()
        ));
    }
    if reps.contains(&0) {
        return Err(format!(
            "`repeats` {reps:?} makes an empty tensor, which qcc does not represent"
        ));
    }
    let out: Vec<usize> = s
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| d.saturating_mul(r as usize))
        .collect();
    if cx.is_pure_const(0) {
        check_made(&out, "the result")?;
        let c = cx.konst(0, "input")?;
        let mut t = (*c).clone();
        for (axis, &r) in reps.iter().enumerate() {
            if r > 1 {
                let copies: Vec<&CTensor> = (0..r).map(|_| &t).collect();
                t = ct_concat(&copies, axis);
            }
        }
        cx.set_const(0, t);
        return Ok(());
    }
    if super::checked_numel(&out).is_none() {
        return Err(format!(
            "the result would have shape {out:?}: more than 2^32 elements; qcc takes tensors \
             of at most {} elements",
            super::MAX_ELEMENTS
        ));
    }
    if let Some((axis, r)) = reps
        .iter()
        .enumerate()
        .find(|(_, r)| **r as usize > MAX_PIECES)
    {
        return Err(format!(
            "`repeats` asks for {r} copies along axis {axis}; qcc tiles a run-time tensor by \
             concatenating copies, at most {MAX_PIECES} per axis"
        ));
    }
    let mut y = cx.ir(0)?;
    for (axis, &r) in reps.iter().enumerate() {
        if r > 1 {
            y = cx.emit(
                Op::Concat,
                vec![y; r as usize],
                vec![("axis", Attr::Int(axis as i64))],
                None,
                &format!(".tile{axis}"),
            )?;
        }
    }
    cx.set_ir(0, y);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices() {
        assert_eq!(slice_indices(0, 10, 1, 5), [0, 1, 2, 3, 4]);
        assert_eq!(slice_indices(-1, i64::MIN, -1, 3), [2, 1, 0]);
        assert_eq!(slice_indices(1, -1, 2, 6), [1, 3]);
        assert!(slice_indices(3, 1, 1, 5).is_empty());
    }

    #[test]
    fn reshape_targets() {
        assert_eq!(
            reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(),
            [2, 12]
        );
        assert_eq!(reshape_target(&[0, 3], &[0, 3], true).unwrap(), [0, 3]);
        assert!(reshape_target(&[2, 3], &[-1, -1], false).is_err());
        assert!(reshape_target(&[2, 3], &[4, -1], false).is_err());
    }

    #[test]
    fn transposes_and_concats() {
        let c = CTensor::i64s(vec![2, 3], vec![0, 1, 2, 3, 4, 5]);
        let t = ct_transpose(&c, &[1, 0]);
        assert_eq!(t.shape, [3, 2]);
        assert_eq!(t.data, CData::I(vec![0, 3, 1, 4, 2, 5]));
        let j = ct_concat(&[&c, &c], 1);
        assert_eq!(j.data, CData::I(vec![0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5]));
    }
}
