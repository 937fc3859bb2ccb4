//! Elementwise ops: arithmetic (Add, Sub, Mul, Div, Pow, Reciprocal), Sqrt, Exp, Log,
//! Tanh, Erf, Abs, Neg, Floor, Ceil, Round, activations (Relu, Clip, LeakyRelu, PRelu,
//! Elu, Softplus, Gelu, Sigmoid, HardSigmoid, HardSwish), Sign, and the n-ary Min, Max,
//! Sum and Mean. Float32 at run time (Max and Min also on one integer type, comparing
//! codes); on integer constants (shape arithmetic) they are evaluated at import time. Reciprocal, PRelu, Elu, Softplus, Gelu, Sum and Mean are
//! written with the IR's smaller ops (see each handler for its formula).

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
    op("Abs", 6, abs),
    op("Neg", 6, neg),
    op("Floor", 6, floor),
    op("Ceil", 6, ceil),
    op("Round", 11, round),
    op("Reciprocal", 6, reciprocal),
    op("Log", 6, log),
    op("Tanh", 6, tanh),
    op("Erf", 9, erf),
    op("Gelu", 20, gelu),
    op("Softplus", 1, softplus),
    op("Elu", 6, elu),
    op("PRelu", 7, prelu),
    op("Max", 6, max),
    op("Min", 6, min),
    op("Sum", 6, sum),
    op("Mean", 6, mean),
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

/// A unary op, evaluated at import time on an integer constant by `fi` where given.
fn unary_or_int(
    cx: &mut NodeCx<'_, '_>,
    op: Op,
    fi: Option<fn(i64) -> Option<i64>>,
) -> Result<(), String> {
    if let Some(f) = fi
        && cx.is_pure_const(0)
    {
        let c = cx.konst(0, "X")?;
        if let CData::I(v) = &c.data {
            let v = v
                .iter()
                .map(|&x| f(x).ok_or_else(|| "integer overflow".to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            let t = CTensor::new(c.dtype, c.shape.clone(), CData::I(v));
            cx.set_const(0, t);
            return Ok(());
        }
    }
    unary(cx, op, vec![])
}

fn abs(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    unary_or_int(cx, Op::Abs, Some(i64::checked_abs))
}

fn neg(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    unary_or_int(cx, Op::Neg, Some(i64::checked_neg))
}

fn floor(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    unary(cx, Op::Floor, vec![])
}

fn ceil(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    unary(cx, Op::Ceil, vec![])
}

fn round(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    unary(cx, Op::Round, vec![])
}

fn log(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    unary(cx, Op::Log, vec![])
}

fn tanh(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    unary(cx, Op::Tanh, vec![])
}

fn erf(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    unary(cx, Op::Erf, vec![])
}

/// A scalar f32 constant (broadcasts to anything).
fn scalar(cx: &mut NodeCx<'_, '_>, name: &str, v: f32) -> ValueId {
    cx.f32_const(name, vec![], vec![v])
}

/// `1 / x`.
fn reciprocal(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let x = cx.f32_in(0)?;
    let one = scalar(cx, "one", 1.0);
    let y = cx.emit(Op::Div, vec![one, x], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

/// `ln(1 + e^x)` as `relu(x) + ln(1 + e^-|x|)`, which neither overflows nor loses
/// small values.
fn softplus(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let x = cx.f32_in(0)?;
    let one = scalar(cx, "one", 1.0);
    let a = cx.emit(Op::Abs, vec![x], vec![], None, ".abs")?;
    let na = cx.emit(Op::Neg, vec![a], vec![], None, ".neg")?;
    let e = cx.emit(Op::Exp, vec![na], vec![], None, ".exp")?;
    let e1 = cx.emit(Op::Add, vec![one, e], vec![], None, ".add1")?;
    let l = cx.emit(Op::Log, vec![e1], vec![], None, ".log")?;
    let r = cx.emit(Op::Relu, vec![x], vec![], None, ".relu")?;
    let y = cx.emit(Op::Add, vec![r, l], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

/// `x > 0 ? x : alpha (e^x - 1)` as `relu(x) + alpha (e^min(x, 0) - 1)`.
fn elu(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let alpha = cx.a_float("alpha", 1.0)?;
    let x = cx.f32_in(0)?;
    let zero = scalar(cx, "zero", 0.0);
    let one = scalar(cx, "one", 1.0);
    let al = scalar(cx, "alpha", alpha);
    let m = cx.emit(Op::Min, vec![x, zero], vec![], None, ".min0")?;
    let e = cx.emit(Op::Exp, vec![m], vec![], None, ".exp")?;
    let e = cx.emit(Op::Sub, vec![e, one], vec![], None, ".expm1")?;
    let e = cx.emit(Op::Mul, vec![al, e], vec![], None, ".neg_part")?;
    let r = cx.emit(Op::Relu, vec![x], vec![], None, ".relu")?;
    let y = cx.emit(Op::Add, vec![r, e], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

/// `x < 0 ? slope x : x` as `relu(x) + slope min(x, 0)`; `slope` broadcasts to `x`.
fn prelu(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let x = cx.f32_in(0)?;
    let xs = cx.ty(x).shape.clone();
    let slope = f32_operand(cx, 1)?;
    let ss = cx.ty(slope).shape.clone();
    // ONNX broadcasts the slope to X one way; opset 7 also allows a slope of shape [C]
    // against [N, C, ...], which numpy broadcasting would not line up.
    let slope = if ss.len() == 1 && xs.len() > 2 && ss[0] == xs[1] && ss[0] != xs[xs.len() - 1] {
        let mut shape = vec![ss[0]];
        shape.extend(std::iter::repeat_n(1, xs.len() - 2));
        cx.emit(
            Op::Reshape,
            vec![slope],
            vec![("shape", super::ctx::usz(&shape))],
            None,
            ".slope",
        )?
    } else {
        slope
    };
    let out = broadcast(&xs, &cx.ty(slope).shape)
        .map_err(|e| format!("slope does not broadcast to X: {e}"))?;
    if out != xs {
        return Err(format!(
            "slope of shape {:?} does not broadcast to X of shape {xs:?}",
            cx.ty(slope).shape
        ));
    }
    let zero = scalar(cx, "zero", 0.0);
    let m = cx.emit(Op::Min, vec![x, zero], vec![], None, ".min0")?;
    let n = cx.emit(Op::Mul, vec![slope, m], vec![], None, ".neg_part")?;
    let r = cx.emit(Op::Relu, vec![x], vec![], None, ".relu")?;
    let y = cx.emit(Op::Add, vec![r, n], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

/// `x/2 (1 + erf(x / sqrt 2))`, or with `approximate = "tanh"`
/// `x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
fn gelu(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let approx = cx.a_str("approximate")?.unwrap_or_else(|| "none".into());
    let x = cx.f32_in(0)?;
    let one = scalar(cx, "one", 1.0);
    let half = scalar(cx, "half", 0.5);
    let inner = match approx.as_str() {
        "none" => {
            let k = scalar(cx, "inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2);
            let t = cx.emit(Op::Mul, vec![x, k], vec![], None, ".scaled")?;
            cx.emit(Op::Erf, vec![t], vec![], None, ".erf")?
        }
        "tanh" => {
            let c = scalar(cx, "c", 0.044_715);
            let k = scalar(cx, "sqrt_2_over_pi", (2.0 / std::f32::consts::PI).sqrt());
            let x2 = cx.emit(Op::Mul, vec![x, x], vec![], None, ".x2")?;
            let x3 = cx.emit(Op::Mul, vec![x2, x], vec![], None, ".x3")?;
            let t = cx.emit(Op::Mul, vec![c, x3], vec![], None, ".cx3")?;
            let t = cx.emit(Op::Add, vec![x, t], vec![], None, ".poly")?;
            let t = cx.emit(Op::Mul, vec![k, t], vec![], None, ".scaled")?;
            cx.emit(Op::Tanh, vec![t], vec![], None, ".tanh")?
        }
        other => {
            return Err(format!(
                "attribute `approximate` = {other:?}: expected \"none\" or \"tanh\""
            ));
        }
    };
    let p = cx.emit(Op::Add, vec![one, inner], vec![], None, ".plus1")?;
    let hx = cx.emit(Op::Mul, vec![half, x], vec![], None, ".half_x")?;
    let y = cx.emit(Op::Mul, vec![hx, p], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

/// Folds the inputs of a variadic op left to right with `op`; on integer constants
/// with `fi` at import time, setting output 0 (then `None`).
fn variadic(
    cx: &mut NodeCx<'_, '_>,
    op: Op,
    fi: Option<fn(i64, i64) -> Option<i64>>,
) -> Result<Option<ValueId>, String> {
    let n = cx.n_inputs();
    if n == 0 {
        return Err("at least one input is required".into());
    }
    if let Some(f) = fi
        && (0..n).all(|i| cx.is_pure_const(i))
    {
        let first = cx.konst(0, "data_0")?;
        if matches!(first.data, CData::I(_)) {
            let mut acc = (*first).clone();
            for i in 1..n {
                let b = cx.konst(i, "")?;
                if !matches!(b.data, CData::I(_)) {
                    return Err(format!(
                        "input {i} is {}, input 0 {}; the inputs must have one element type",
                        b.dtype.name(),
                        first.dtype.name()
                    ));
                }
                acc = int_binary(&acc, &b, f)?;
            }
            cx.set_const(0, acc);
            return Ok(None);
        }
    }
    // Max and Min of run-time integers compare codes (the other ops compute in f32).
    let int_elem = if matches!(op, Op::Max | Op::Min) {
        match (0..n).find(|&i| !cx.is_pure_const(i)) {
            Some(i) => {
                let v = cx.ir(i)?;
                matches!(cx.ty(v).elem, ElemType::Int(_)).then(|| cx.ty(v).elem.clone())
            }
            None => None,
        }
    } else {
        None
    };
    let operand = |cx: &mut NodeCx<'_, '_>, i: usize| -> Result<ValueId, String> {
        let Some(e) = &int_elem else {
            return f32_operand(cx, i);
        };
        if cx.is_pure_const(i) {
            let ty = TensorType::new(e.clone(), cx.shape_of(i)?);
            return cx.const_as(i, ty).map_err(|m| format!("input {i}: {m}"));
        }
        let v = cx.ir(i)?;
        if cx.ty(v).elem != *e {
            return Err(format!(
                "input {i} is {}, another input {}; the inputs must have one element type",
                super::tensor::DType::of_elem(&cx.ty(v).elem).name(),
                super::tensor::DType::of_elem(e).name()
            ));
        }
        Ok(v)
    };
    let mut acc = operand(cx, 0)?;
    for i in 1..n {
        let b = operand(cx, i)?;
        acc = cx.emit(op, vec![acc, b], vec![], None, &format!(".{i}"))?;
    }
    Ok(Some(acc))
}

/// Runs [`variadic`] and sets output 0.
fn set_variadic(
    cx: &mut NodeCx<'_, '_>,
    op: Op,
    fi: Option<fn(i64, i64) -> Option<i64>>,
) -> Result<(), String> {
    if let Some(y) = variadic(cx, op, fi)? {
        cx.set_ir(0, y);
    }
    Ok(())
}

fn max(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    set_variadic(cx, Op::Max, Some(|a, b| Some(a.max(b))))
}

fn min(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    set_variadic(cx, Op::Min, Some(|a, b| Some(a.min(b))))
}

fn sum(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    set_variadic(cx, Op::Add, Some(i64::checked_add))
}

/// The sum divided by the number of inputs.
fn mean(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let n = cx.n_inputs();
    let Some(s) = variadic(cx, Op::Add, None)? else {
        return Ok(());
    };
    if n == 1 {
        cx.set_ir(0, s);
        return Ok(());
    }
    let d = scalar(cx, "count", n as f32);
    let y = cx.emit(Op::Div, vec![s, d], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}
