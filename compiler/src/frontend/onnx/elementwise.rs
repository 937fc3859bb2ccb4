//! Elementwise ops: arithmetic (Add, Sub, Mul, Div, Pow), Sqrt, Exp, activations (Relu,
//! Clip, LeakyRelu, Sigmoid, HardSigmoid, HardSwish) and Sign. Float32 at run time;
//! on integer constants (shape arithmetic) they are evaluated at import time.

use qcc_ir::shape::{broadcast, broadcast_indices};
use qcc_ir::{Attr, ElemType, Op, TensorType, ValueId};

use super::ctx::NodeCx;
use super::tensor::{CData, CTensor};
use super::{OpReg, onnx_op as op};

pub(crate) const OPS: &[OpReg] = &[
    op("Add", 7, add),
    op("Sub", 7, sub),
    op("Mul", 7, mul),
    op("Div", 7, div),
    op("Pow", 7, pow),
    op("Sqrt", 6, sqrt),
    op("Exp", 6, exp),
    op("Relu", 6, relu),
    op("Sigmoid", 6, sigmoid),
    op("HardSigmoid", 6, hard_sigmoid),
    op("HardSwish", 14, hard_swish),
    op("LeakyRelu", 6, leaky_relu),
    op("Clip", 6, clip),
    op("Sign", 9, sign),
];

/// Input `i` as an f32 IR value; integer constants (e.g. a Pow exponent) are converted.
pub(crate) fn f32_operand(cx: &mut NodeCx<'_, '_>, i: usize) -> Result<ValueId, String> {
    if cx.is_pure_const(i) {
        let c = cx.konst(i, "")?;
        if !c.dtype.is_float() {
            let ty = TensorType::f32(c.shape.clone());
            return cx.const_as(i, ty);
        }
    }
    let id = cx.ir(i)?;
    if matches!(cx.ty(id).elem, ElemType::Int(_)) && cx.op_type() == "Pow" {
        // An integer exponent (Pow allows one) is converted exactly.
        return cx.emit(
            Op::Cast,
            vec![id],
            vec![],
            Some(ElemType::F32),
            &format!(".in{i}"),
        );
    }
    cx.f32_in(i)
}

/// Integer arithmetic on two integer constants (shape arithmetic).
fn int_binary(a: &CTensor, b: &CTensor, f: fn(i64, i64) -> Option<i64>) -> Result<CTensor, String> {
    let (CData::I(x), CData::I(y)) = (&a.data, &b.data) else {
        return Err("integer operands expected".into());
    };
    let shape = broadcast(&a.shape, &b.shape)?;
    let ia = broadcast_indices(&a.shape, &shape);
    let ib = broadcast_indices(&b.shape, &shape);
    let v = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| {
            f(x[i], y[j]).ok_or_else(|| "integer overflow or division by zero".to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CTensor::new(a.dtype, shape, CData::I(v)))
}

fn binary(
    cx: &mut NodeCx<'_, '_>,
    op: Op,
    fi: Option<fn(i64, i64) -> Option<i64>>,
) -> Result<(), String> {
    if cx.is_pure_const(0) && cx.is_pure_const(1) {
        let a = cx.konst(0, "A")?;
        let b = cx.konst(1, "B")?;
        if let (Some(f), CData::I(_), CData::I(_)) = (fi, &a.data, &b.data) {
            let c = int_binary(&a, &b, f)?;
            cx.set_const(0, c);
            return Ok(());
        }
    }
    let a = f32_operand(cx, 0)?;
    let b = f32_operand(cx, 1)?;
    let y = cx.emit(op, vec![a, b], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

fn add(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    binary(cx, Op::Add, Some(i64::checked_add))
}

fn sub(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    binary(cx, Op::Sub, Some(i64::checked_sub))
}

fn mul(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    binary(cx, Op::Mul, Some(i64::checked_mul))
}

fn div(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    // Integer Div truncates toward zero (C semantics, as ONNX Runtime does).
    binary(cx, Op::Div, Some(i64::checked_div))
}

fn pow(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    binary(cx, Op::Pow, None)
}

fn unary(cx: &mut NodeCx<'_, '_>, op: Op, attrs: Vec<(&str, Attr)>) -> Result<(), String> {
    let x = cx.f32_in(0)?;
    let y = cx.emit(op, vec![x], attrs, None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

fn sqrt(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    unary(cx, Op::Sqrt, vec![])
}

fn exp(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    unary(cx, Op::Exp, vec![])
}

fn relu(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    unary(cx, Op::Relu, vec![])
}

fn sigmoid(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    unary(cx, Op::Sigmoid, vec![])
}

fn sign(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    unary(cx, Op::Sign, vec![])
}

fn hard_swish(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    unary(cx, Op::HardSwish, vec![])
}

fn hard_sigmoid(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let alpha = cx.a_float("alpha", 0.2)?;
    let beta = cx.a_float("beta", 0.5)?;
    unary(
        cx,
        Op::HardSigmoid,
        vec![("alpha", Attr::Float(alpha)), ("beta", Attr::Float(beta))],
    )
}

fn leaky_relu(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let alpha = cx.a_float("alpha", 0.01)?;
    unary(cx, Op::LeakyRelu, vec![("alpha", Attr::Float(alpha))])
}

fn clip(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let (min, max) = if cx.opset < 11 {
        (cx.a_opt_float("min")?, cx.a_opt_float("max")?)
    } else {
        let get = |i: usize, what: &str| -> Result<Option<f32>, String> {
            match cx.opt_konst(i, what)? {
                Some(c) => Ok(Some(
                    c.scalar_f64()
                        .ok_or_else(|| format!("input `{what}` must be a scalar"))?
                        as f32,
                )),
                None => Ok(None),
            }
        };
        (get(1, "min")?, get(2, "max")?)
    };
    let mut attrs = vec![];
    if let Some(v) = min.filter(|v| *v != f32::NEG_INFINITY) {
        attrs.push(("min", Attr::Float(v)));
    }
    if let Some(v) = max.filter(|v| *v != f32::INFINITY) {
        attrs.push(("max", Attr::Float(v)));
    }
    if attrs.is_empty() {
        let x = cx.f32_in(0)?;
        cx.set_ir(0, x);
        return Ok(());
    }
    unary(cx, Op::Clip, attrs)
}
