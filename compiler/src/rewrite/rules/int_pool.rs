//! Quantized global average pooling in the integer domain (ONNX Runtime's
//! QLinearGlobalAveragePool).
//!
//! `quantize_y(global_avg_pool(dequantize(x)))` with x `[N, C, H, W]` per-tensor
//! quantized becomes `requantize_y{sx / (sy * H * W)}(conv2d_int(x, ones, group = C))`:
//! a depthwise integer convolution with an all-ones `[C, 1, H, W]` `u1` kernel (stored
//! one bit per weight) sums the
//! centred codes `x - zx` of each plane exactly in `i32` (the rule requires
//! `H * W * max|x - zx| < 2^31`), and one requantize divides by the plane size and
//! rescales. No new op is needed and the existing integer convolution kernel runs it.
//!
//! Bound: **at most one code of the result**, checked per match. The float path is
//! within `2^-21 |v|` of the exact mean `v` in output steps (f32 dequantize, the mean
//! rounded to f32, the division by `sy`), the integer path within `2^-31 |v|` (the
//! multiplier) before its rounding; when the sum is below one step the codes differ by
//! at most one.

use egg::{Id, Subst};
use qcc_ir::{Attr, ConstData, ElemType, IntType, Op, TensorType};

use super::int_add::tensor_params;
use crate::rewrite::analysis::{QEGraph, meta, ty};
use crate::rewrite::build::{
    add_const, add_op, attrs, hint, i32_ty, inherit_loc, ints, max_centered, name_of,
};
use crate::rewrite::fixed_point::multiplier;
use crate::rewrite::rule::{Exactness, RuleDef, rule, var};

pub fn rules() -> Vec<RuleDef> {
    vec![rule(
        "int-global-avg-pool",
        Exactness::Bounded("at most one code of the result"),
        "(quantize ?qm (global_avg_pool ?pm (dequantize ?dx ?x)))",
        int_gap,
    )]
}

/// See the module documentation.
fn int_gap(eg: &mut QEGraph, root: Id, s: &Subst) -> Option<Id> {
    let qm = meta(eg, var(s, "?qm")).clone();
    let x = var(s, "?x");
    let xt = ty(eg, x).clone();
    let xq = xt.elem.quant()?;
    let (sx, _) = tensor_params(xq)?;
    let (sy, _) = tensor_params(qm.ty.elem.quant()?)?;
    let [n, c, h, w] = xt.shape[..] else {
        return None;
    };
    let plane = h * w;
    let mx = max_centered(xq);
    if plane == 0 || c == 0 || (plane as i128) * (mx as i128) >= 1i128 << 31 {
        return None;
    }
    let r = sx / (sy * plane as f64);
    let v = mx as f64 * sx / sy;
    if v * (2f64.powi(-21) + 2f64.powi(-31)) >= 1.0 {
        return None;
    }
    let (m, sh) = multiplier(r)?;
    let name = format!("{}.ones", name_of(eg, root, "gap"));
    let ones = add_const(
        eg,
        &name,
        TensorType::new(ElemType::Int(IntType::new(1, false)), vec![c, 1, h, w]),
        ConstData::Int(vec![1; c * plane]),
    );
    let conv_attrs = attrs([
        ("strides", Attr::Ints(vec![1, 1])),
        ("pads", Attr::Ints(vec![0, 0, 0, 0])),
        ("dilations", Attr::Ints(vec![1, 1])),
        ("group", Attr::Int(c as i64)),
    ]);
    let acc = add_op(
        eg,
        Op::Conv2dInt,
        i32_ty(vec![n, c, 1, 1]),
        conv_attrs,
        &[x, ones],
    );
    inherit_loc(eg, acc, root);
    hint(eg, acc, "sum");
    let a = attrs([
        ("multiplier", ints(vec![m])),
        ("shift", ints(vec![sh])),
        ("rounding", Attr::Enum(qm.attrs().word("rounding").ok()?)),
    ]);
    Some(add_op(eg, Op::Requantize, qm.ty.clone(), a, &[acc]))
}
