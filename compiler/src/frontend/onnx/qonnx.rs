//! QONNX quantizers (Brevitas, FINN): Quant / IntQuant, BipolarQuant and Trunc (v1 and
//! v2), in the `qonnx.custom_op.general`, `finn.custom_op.general` and `onnx.brevitas`
//! domains. They stay float-domain ops (`fake_quant`, `trunc`) that keep bit-width,
//! signedness, narrow range and rounding mode; later passes decide when an integer form
//! is exact.
//!
//! `narrow`: the QONNX document gives it a default of 0, but the qonnx implementation
//! (which models are checked against) requires it and defaults to 1. qcc follows the
//! implementation and warns when a Quant node leaves it out.

use qcc_ir::{Attr, Op, Rounding, TensorType};

use super::ctx::NodeCx;
use super::elementwise::f32_operand;
use super::{Handler, OpReg};

const DOMAINS: [&str; 3] = [
    "qonnx.custom_op.general",
    "finn.custom_op.general",
    "onnx.brevitas",
];

const fn reg(domain: &'static str, op: &'static str, handler: Handler) -> OpReg {
    OpReg {
        domain,
        op,
        since: 1,
        until: 2,
        handler,
    }
}

macro_rules! in_all_domains {
    ($($op:literal => $h:ident),* $(,)?) => {
        &[
            $(reg(DOMAINS[0], $op, $h), reg(DOMAINS[1], $op, $h), reg(DOMAINS[2], $op, $h),)*
        ]
    };
}

pub(crate) const OPS: &[OpReg] = in_all_domains! {
    "Quant" => quant,
    "IntQuant" => quant,
    "BipolarQuant" => bipolar_quant,
    "Trunc" => trunc,
};

fn rounding(cx: &NodeCx<'_, '_>, default: &str) -> Result<Rounding, String> {
    let s = cx.a_str("rounding_mode")?.unwrap_or_else(|| default.into());
    Rounding::from_qonnx(&s).ok_or_else(|| {
        format!(
            "attribute `rounding_mode` = {s:?} is not one of ROUND, HALF_EVEN, CEIL, FLOOR, UP, DOWN, HALF_UP, HALF_DOWN"
        )
    })
}

/// A bit-width input: a constant positive integer.
fn bit_width(cx: &NodeCx<'_, '_>, i: usize, what: &str) -> Result<i64, String> {
    let c = cx.konst(i, what)?;
    let v = c
        .scalar_f64()
        .ok_or_else(|| format!("input `{what}` must be a single value"))?;
    if v.fract() != 0.0 || !(1.0..=32.0).contains(&v) {
        return Err(format!(
            "input `{what}` is {v}; qcc needs an integer bit-width from 1 to 32"
        ));
    }
    Ok(v as i64)
}

/// A scale or zero-point input: constant, broadcastable, and (scales) positive.
fn param(
    cx: &mut NodeCx<'_, '_>,
    i: usize,
    what: &str,
    positive: bool,
) -> Result<qcc_ir::ValueId, String> {
    let c = cx.konst(i, what)?;
    let v = c.to_f32();
    if positive && let Some(s) = v.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
        return Err(format!(
            "input `{what}` holds {s}; scales must be positive and finite"
        ));
    }
    if !positive && let Some(s) = v.iter().find(|s| !s.is_finite()) {
        return Err(format!("input `{what}` holds {s}; it must be finite"));
    }
    let ty = TensorType::f32(c.shape.clone());
    cx.const_as(i, ty)
}

fn bool_attr(cx: &NodeCx<'_, '_>, name: &str, default: i64) -> Result<bool, String> {
    match cx.a_int(name, default)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(format!("attribute `{name}` must be 0 or 1, found {v}")),
    }
}

fn quant(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let x = f32_operand(cx, 0)?;
    let scale = param(cx, 1, "scale", true)?;
    let zp = param(cx, 2, "zeropt", false)?;
    let bits = bit_width(cx, 3, "bitwidth")?;
    let signed = bool_attr(cx, "signed", 1)?;
    if cx.attr("narrow").is_none() {
        cx.warn(
            "attribute `narrow` is missing; assuming narrow = 1 as the qonnx implementation does (the QONNX document says 0)".into(),
        );
    }
    let narrow = bool_attr(cx, "narrow", 1)?;
    // A 1-bit grid has no narrow form (signed 1-bit is the bipolar case).
    let narrow = narrow && bits > 1;
    let r = rounding(cx, "ROUND")?;
    let y = cx.emit(
        Op::FakeQuant,
        vec![x, scale, zp],
        vec![
            ("bits", Attr::Int(bits)),
            ("signed", Attr::Bool(signed)),
            ("narrow", Attr::Bool(narrow)),
            ("rounding", Attr::Enum(r.name().into())),
        ],
        None,
        "",
    )?;
    cx.set_ir(0, y);
    Ok(())
}

fn bipolar_quant(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let x = f32_operand(cx, 0)?;
    let scale = param(cx, 1, "scale", true)?;
    let zp = cx.f32_const("zeropt", vec![], vec![0.0]);
    let y = cx.emit(
        Op::FakeQuant,
        vec![x, scale, zp],
        vec![
            ("bits", Attr::Int(1)),
            ("signed", Attr::Bool(true)),
            ("narrow", Attr::Bool(false)),
            ("rounding", Attr::Enum(Rounding::HalfEven.name().into())),
        ],
        None,
        "",
    )?;
    cx.set_ir(0, y);
    Ok(())
}

fn trunc(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let v2 = cx.opset >= 2;
    let want = if v2 { 6 } else { 5 };
    if cx.n_inputs() != want {
        return Err(format!(
            "Trunc of opset {} (v{}) takes {want} inputs, found {} (v1: X, scale, zeropt, in_bitwidth, out_bitwidth; v2 adds out_scale before out_bitwidth)",
            cx.opset,
            if v2 { 2 } else { 1 },
            cx.n_inputs()
        ));
    }
    let x = f32_operand(cx, 0)?;
    let scale = param(cx, 1, "scale", true)?;
    let zp = param(cx, 2, "zeropt", false)?;
    let in_bits = bit_width(cx, 3, "in_bitwidth")?;
    let r = rounding(cx, "FLOOR")?;
    let mut ops = vec![x, scale, zp];
    let mut attrs = vec![
        ("in_bits", Attr::Int(in_bits)),
        ("rounding", Attr::Enum(r.name().into())),
    ];
    if v2 {
        ops.push(param(cx, 4, "out_scale", true)?);
        attrs.push(("out_bits", Attr::Int(bit_width(cx, 5, "out_bitwidth")?)));
        attrs.push(("signed", Attr::Bool(bool_attr(cx, "signed", 1)?)));
        attrs.push(("narrow", Attr::Bool(bool_attr(cx, "narrow", 0)?)));
    } else {
        attrs.push(("out_bits", Attr::Int(bit_width(cx, 4, "out_bitwidth")?)));
    }
    let y = cx.emit(Op::Trunc, ops, attrs, None, "")?;
    cx.set_ir(0, y);
    Ok(())
}
