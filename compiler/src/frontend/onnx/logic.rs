//! Comparisons and booleans: Equal, Less, Greater, LessOrEqual, GreaterOrEqual, Not, And,
//! Or, Xor, Where; indices: ArgMax, ArgMin, TopK, OneHot.
//!
//! ONNX `bool` is the IR's `u1` (0 false, 1 true). Greater and GreaterOrEqual are `less`
//! and `less_or_equal` with the operands swapped. Comparisons, Where's values, ArgMax,
//! ArgMin and TopK take float32 or integers (also the per-tensor quantized codes of a
//! QuantizeLinear, compared as codes, as ONNX compares uint8/int8); two operands must
//! have one element type, and an integer constant beside a run-time integer takes the
//! run-time operand's type (its values must fit). ONNX's int64
//! indices (ArgMax, ArgMin, TopK) are the IR's i32. On import-time constants (shape
//! arithmetic, int64 included) every op here is evaluated at import time.

use qcc_ir::shape::{broadcast, broadcast_indices, normalize_axis};
use qcc_ir::{Attr, ConstData, ElemType, Op, TensorType, ValueId};

use super::ctx::{Importer, NodeCx};
use super::tensor::{CData, CTensor, DType};
use super::{OpReg, onnx_op as op};

pub(crate) const OPS: &[OpReg] = &[
    op("Equal", 7, equal),
    op("Less", 7, less),
    op("Greater", 7, greater),
    op("LessOrEqual", 12, less_or_equal),
    op("GreaterOrEqual", 12, greater_or_equal),
    op("Not", 1, not),
    op("And", 7, and),
    op("Or", 7, or),
    op("Xor", 7, xor),
    op("Where", 9, where_),
    op("ArgMax", 1, arg_max),
    op("ArgMin", 1, arg_min),
    op("TopK", 1, top_k),
    op("OneHot", 9, one_hot),
];

/// `f(a[i], b[j])` over two import-time constants with broadcasting, as a bool tensor.
fn fold2(
    a: &CTensor,
    b: &CTensor,
    fi: impl Fn(i64, i64) -> bool,
    ff: impl Fn(f64, f64) -> bool,
) -> Result<CTensor, String> {
    let shape = broadcast(&a.shape, &b.shape)?;
    super::shape::check_made(&shape, "the result")?;
    let ia = broadcast_indices(&a.shape, &shape);
    let ib = broadcast_indices(&b.shape, &shape);
    let v = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| match (&a.data, &b.data) {
            (CData::I(x), CData::I(y)) => fi(x[i], y[j]),
            _ => ff(a.data.get_f64(i), b.data.get_f64(j)),
        } as i64)
        .collect();
    Ok(CTensor::new(DType::Bool, shape, CData::I(v)))
}

/// Inputs `i` and `j` as IR values of one element type: float32 both, or one integer
/// type (a constant takes the other operand's type when that is a run-time integer or
/// quantized type: its values are codes).
fn same_type_pair(
    cx: &mut NodeCx<'_, '_>,
    i: usize,
    j: usize,
) -> Result<(ValueId, ValueId), String> {
    let as_other = |cx: &mut NodeCx<'_, '_>, c: usize, other: ValueId| -> Result<ValueId, String> {
        let ty = cx.ty(other).clone();
        let shape = cx.shape_of(c)?;
        let dt = cx.dtype_of(c)?;
        match &ty.elem {
            ElemType::F32 if dt.is_float() => cx.const_as(c, TensorType::f32(shape)),
            e if !e.is_float() && dt.is_int() => cx
                .const_as(c, TensorType::new(ty.elem.clone(), shape))
                .map_err(|e| format!("input {c}: {e}")),
            _ => Err(format!(
                "input {c} is {}, input {} {}; they must have one element type",
                dt.name(),
                if c == i { j } else { i },
                DType::of_elem(&ty.elem).name()
            )),
        }
    };
    let (a, b) = match (cx.is_pure_const(i), cx.is_pure_const(j)) {
        (true, false) => {
            let b = cx.ir(j)?;
            (as_other(cx, i, b)?, b)
        }
        (false, true) => {
            let a = cx.ir(i)?;
            (a, as_other(cx, j, a)?)
        }
        _ => (cx.ir(i)?, cx.ir(j)?),
    };
    let (ta, tb) = (&cx.ty(a).elem, &cx.ty(b).elem);
    if ta != tb {
        return Err(format!(
            "input {i} is {}, input {j} {}; they must have one element type",
            DType::of_elem(ta).name(),
            DType::of_elem(tb).name()
        ));
    }
    Ok((a, b))
}

/// A comparison `op(a, b)` (`swap`: `op(b, a)`).
fn compare(
    cx: &mut NodeCx<'_, '_>,
    op: Op,
    swap: bool,
    fi: fn(i64, i64) -> bool,
    ff: fn(f64, f64) -> bool,
) -> Result<(), String> {
    if cx.is_pure_const(0) && cx.is_pure_const(1) {
        let a = cx.konst(0, "A")?;
        let b = cx.konst(1, "B")?;
        let c = fold2(&a, &b, fi, ff)?;
        cx.set_const(0, c);
        return Ok(());
    }
    let (a, b) = same_type_pair(cx, 0, 1)?;
    let ops = if swap { vec![b, a] } else { vec![a, b] };
    let y = cx.emit(op, ops, vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

fn equal(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    compare(cx, Op::Equal, false, |a, b| a == b, |a, b| a == b)
}

fn less(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    compare(cx, Op::Less, false, |a, b| a < b, |a, b| a < b)
}

fn greater(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    compare(cx, Op::Less, true, |a, b| a > b, |a, b| a > b)
}

fn less_or_equal(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    compare(cx, Op::LessOrEqual, false, |a, b| a <= b, |a, b| a <= b)
}

fn greater_or_equal(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    compare(cx, Op::LessOrEqual, true, |a, b| a >= b, |a, b| a >= b)
}

/// Input `i` as a boolean (`u1`) IR value.
fn bool_in(cx: &mut NodeCx<'_, '_>, i: usize) -> Result<ValueId, String> {
    let dt = cx.dtype_of(i)?;
    if dt != DType::Bool {
        return Err(format!("input {i} must be bool, found {}", dt.name()));
    }
    cx.ir(i)
}

fn not(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    if cx.is_pure_const(0) {
        let c = cx.konst(0, "X")?;
        let v = (0..c.numel())
            .map(|i| (c.data.get_f64(i) == 0.0) as i64)
            .collect();
        cx.set_const(0, CTensor::new(DType::Bool, c.shape.clone(), CData::I(v)));
        return Ok(());
    }
    let x = bool_in(cx, 0)?;
    let y = cx.emit(Op::Not, vec![x], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

fn logic(cx: &mut NodeCx<'_, '_>, op: Op, f: fn(bool, bool) -> bool) -> Result<(), String> {
    if cx.is_pure_const(0) && cx.is_pure_const(1) {
        let a = cx.konst(0, "A")?;
        let b = cx.konst(1, "B")?;
        let c = fold2(
            &a,
            &b,
            |x, y| f(x != 0, y != 0),
            |x, y| f(x != 0.0, y != 0.0),
        )?;
        cx.set_const(0, c);
        return Ok(());
    }
    let a = bool_in(cx, 0)?;
    let b = bool_in(cx, 1)?;
    let y = cx.emit(op, vec![a, b], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

fn and(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    logic(cx, Op::And, |a, b| a && b)
}

fn or(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    logic(cx, Op::Or, |a, b| a || b)
}

fn xor(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    logic(cx, Op::Xor, |a, b| a != b)
}

fn where_(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    if (0..3).all(|i| cx.is_pure_const(i)) {
        let c = cx.konst(0, "condition")?;
        let x = cx.konst(1, "X")?;
        let y = cx.konst(2, "Y")?;
        if x.dtype != y.dtype {
            return Err(format!(
                "input 1 is {}, input 2 {}; they must have one element type",
                x.dtype.name(),
                y.dtype.name()
            ));
        }
        let shape = broadcast(&c.shape, &broadcast(&x.shape, &y.shape)?)?;
        super::shape::check_made(&shape, "the result")?;
        let ic = broadcast_indices(&c.shape, &shape);
        let ix = broadcast_indices(&x.shape, &shape);
        let iy = broadcast_indices(&y.shape, &shape);
        let pick = |k: usize| c.data.get_f64(ic[k]) != 0.0;
        let data = match (&x.data, &y.data) {
            (CData::I(a), CData::I(b)) => CData::I(
                (0..ic.len())
                    .map(|k| if pick(k) { a[ix[k]] } else { b[iy[k]] })
                    .collect(),
            ),
            (CData::F(a), CData::F(b)) => CData::F(
                (0..ic.len())
                    .map(|k| if pick(k) { a[ix[k]] } else { b[iy[k]] })
                    .collect(),
            ),
            _ => return Err("inputs 1 and 2 must have one element type".into()),
        };
        cx.set_const(0, CTensor::new(x.dtype, shape, data));
        return Ok(());
    }
    let c = bool_in(cx, 0)?;
    let (a, b) = same_type_pair(cx, 1, 2)?;
    let y = cx.emit(Op::Where, vec![c, a, b], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

fn arg(cx: &mut NodeCx<'_, '_>, op: Op) -> Result<(), String> {
    let x = cx.ir(0)?;
    let r = cx.ty(x).rank();
    let axis = cx.a_int("axis", 0)?;
    let ax = normalize_axis(axis, r).map_err(|e| format!("attribute `axis`: {e}"))?;
    let keep = cx.a_int("keepdims", 1)? != 0;
    let last = if cx.opset >= 12 {
        cx.a_int("select_last_index", 0)? != 0
    } else {
        false
    };
    let y = cx.emit(
        op,
        vec![x],
        vec![
            ("axis", Attr::Int(ax as i64)),
            ("keepdims", Attr::Bool(keep)),
            ("select_last_index", Attr::Bool(last)),
        ],
        None,
        "",
    )?;
    cx.set_ir(0, y);
    Ok(())
}

fn arg_max(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    arg(cx, Op::ArgMax)
}

fn arg_min(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    arg(cx, Op::ArgMin)
}

/// TopK with a constant k: output 0 the values (`top_k`), output 1 their int64 indices
/// (`top_k_indices`, i32 in the IR). `sorted = 0` allows any order, so the sorted one
/// is used.
fn top_k(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let x = cx.ir(0)?;
    let shape = cx.ty(x).shape.clone();
    let axis = cx.a_int("axis", -1)?;
    let ax = normalize_axis(axis, shape.len()).map_err(|e| format!("attribute `axis`: {e}"))?;
    let k = if cx.opset >= 10 {
        let c = cx.konst(1, "K")?;
        let v = c.to_i64().map_err(|e| format!("input 1 (`K`): {e}"))?;
        match v.as_slice() {
            [k] => *k,
            _ => {
                return Err(format!(
                    "input 1 (`K`) must hold one value, found {} values",
                    v.len()
                ));
            }
        }
    } else {
        cx.a_opt_int("k")?.ok_or("attribute `k` is required")?
    };
    let d = shape[ax];
    if k < 0 || k as u64 > d as u64 {
        return Err(format!(
            "k = {k} must be in 0..={d} (the length of axis {ax} of input 0, shape {shape:?})"
        ));
    }
    let largest = if cx.opset >= 11 {
        cx.a_int("largest", 1)? != 0
    } else {
        true
    };
    let attrs = || {
        vec![
            ("axis", Attr::Int(ax as i64)),
            ("k", Attr::Int(k)),
            ("largest", Attr::Bool(largest)),
        ]
    };
    if cx.wants_output(0) {
        let v = cx.emit(Op::TopK, vec![x], attrs(), None, "")?;
        cx.set_ir(0, v);
    }
    if cx.wants_output(1) {
        let i = cx.emit(Op::TopKIndices, vec![x], attrs(), None, ".indices")?;
        cx.set_ir(1, i);
    }
    Ok(())
}

/// `where(one_hot(indices), on, off)`: depth and values are constants; float indices are
/// truncated toward zero first (ONNX casts them to int64).
fn one_hot(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let depth = cx
        .konst(1, "depth")?
        .scalar_f64()
        .ok_or("input 1 (`depth`) must hold one value")?;
    if !(depth.trunc() >= 1.0 && depth.trunc() <= i32::MAX as f64) {
        return Err(format!(
            "input 1 (`depth`) = {depth} must be at least 1 (and at most 2^31-1)"
        ));
    }
    let depth = depth.trunc() as i64;
    let values = cx.konst(2, "values")?;
    if values.numel() != 2 {
        return Err(format!(
            "input 2 (`values`) must hold two values [off, on], found {}",
            values.numel()
        ));
    }
    let axis = cx.a_int("axis", -1)?;
    let x = cx.ir(0)?;
    let x = match cx.ty(x).elem {
        ElemType::Int(_) => x,
        ElemType::F32 => cx.emit(
            Op::Cast,
            vec![x],
            vec![("rounding", Attr::Enum(qcc_ir::Rounding::Down.name().into()))],
            Some(ElemType::I32),
            ".indices",
        )?,
        ref e => {
            return Err(format!(
                "input 0 (`indices`) of type {e} is not supported (float32 and integers are)"
            ));
        }
    };
    let r = cx.ty(x).rank();
    let ax = normalize_axis(axis, r + 1).map_err(|e| format!("attribute `axis`: {e}"))?;
    let mask = cx.emit(
        Op::OneHot,
        vec![x],
        vec![("depth", Attr::Int(depth)), ("axis", Attr::Int(ax as i64))],
        None,
        ".mask",
    )?;
    let vty = if values.dtype.is_float() {
        TensorType::f32(values.shape.clone())
    } else {
        Importer::default_type(&values).map_err(|e| format!("input 2 (`values`): {e}"))?
    };
    let (off, on) = match &values.data {
        CData::F(v) => (ConstData::F32(vec![v[0]]), ConstData::F32(vec![v[1]])),
        CData::I(v) if vty.elem.is_float() => (
            ConstData::F32(vec![v[0] as f32]),
            ConstData::F32(vec![v[1] as f32]),
        ),
        CData::I(v) => {
            if !(vty.elem.admits(v[0]) && vty.elem.admits(v[1])) {
                return Err(format!(
                    "input 2 (`values`) = {v:?} does not fit {}",
                    vty.elem
                ));
            }
            (ConstData::Int(vec![v[0]]), ConstData::Int(vec![v[1]]))
        }
    };
    let sty = TensorType::new(vty.elem.clone(), Vec::<usize>::new());
    let off = cx.new_const("off", sty.clone(), off);
    let on = cx.new_const("on", sty, on);
    let y = cx.emit(Op::Where, vec![mask, on, off], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}
