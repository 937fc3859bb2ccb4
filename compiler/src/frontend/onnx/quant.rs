//! ONNX quantization: QuantizeLinear / DequantizeLinear (per-tensor, per-axis, blocked;
//! 2/4/8/16-bit and int32; also the `com.microsoft` variants), the QOperator ops
//! QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger, and the `com.microsoft`
//! QGemm, QLinearAdd, QLinearMul, QLinearLeakyRelu, QLinearSigmoid,
//! QLinearGlobalAveragePool and QLinearConcat; dynamic quantization: DynamicQuantizeLinear,
//! MatMulInteger / ConvInteger with a run-time zero point of their left operand, and the
//! `com.microsoft` DynamicQuantizeMatMul (DynamicQuantizeLSTM is in `rnn.rs`).
//!
//! Dynamic quantization computes the scale at run time, so it cannot be a quantized IR
//! type: DynamicQuantizeLinear is written with plain IR ops (reductions, f32 arithmetic,
//! `round` ties to even, `clip`, `cast` to u8), its codes are a plain `u8` tensor and its
//! zero point a run-time `u8` scalar. An integer product of such codes runs on them as
//! they are (zero point 0, so the u8 kernels apply) and subtracts `zero_point * S`, where
//! `S` is a constant of the weights: their column sums (less their zero points), or for a
//! convolution the convolution of ones, which also makes padding read the zero point (as
//! ONNX Runtime pads). All of it is exact i32 arithmetic.
//!
//! Quantized values carry their scale and zero point in their IR type. Constant integer
//! weights become constants of a quantized type; `dequantize` of them is kept (not
//! folded). QLinearConv, QLinearMatMul and QGemm become integer kernels
//! (`conv2d_int` / `matmul_int`, accumulating in i32) followed by `requantize`.
//!
//! Requantization: the real multiplier `r = x_scale * w_scale / y_scale` is computed in
//! f32, in that order, as ONNX's reference implementation and ONNX Runtime do, and then
//! written exactly as `multiplier * 2^-shift` with a 31-bit multiplier (an f32 has a
//! 24-bit significand, so nothing is lost). `requantize` rounds `acc * r` half to even,
//! exactly; the reference rounds the double-precision product `acc * r` half to even,
//! so the two agree except where that product's own rounding crosses a tie. The other
//! com.microsoft QLinear* ops are imported in the float domain: dequantize, the float
//! op, quantize (round half to even), which is how ONNX Runtime defines them; the
//! importer then runs the `lookup`, `int-add` and `int-pool` rewrite groups, which make
//! them integer kernels (a table lookup, add/mul on i32 between requantizes, a
//! depthwise `conv2d_int` of ones), each within one code of the float definition.

use qcc_ir::shape::normalize_axis;
use qcc_ir::{
    Attr, ConstData, ElemType, IntType, Op, QuantParams, QuantType, Rounding, TensorType, ValueId,
};

use super::ctx::{NodeCx, storage_of, usz};
use super::elementwise::f32_operand;
use super::nn::window;
use super::tensor::{CTensor, DType};
use super::{OpReg, op_in as op};

const MS: &str = "com.microsoft";

pub(crate) const OPS: &[OpReg] = &[
    op("", "QuantizeLinear", 10, quantize_linear),
    op("", "DequantizeLinear", 10, dequantize_linear),
    op("", "QLinearConv", 10, qlinear_conv),
    op("", "QLinearMatMul", 10, qlinear_matmul),
    op("", "ConvInteger", 10, conv_integer),
    op("", "MatMulInteger", 10, matmul_integer),
    op("", "DynamicQuantizeLinear", 11, dynamic_quantize_linear),
    op(MS, "QuantizeLinear", 1, quantize_linear),
    op(MS, "DequantizeLinear", 1, dequantize_linear),
    op(MS, "QGemm", 1, qgemm),
    op(MS, "QLinearAdd", 1, qlinear_add),
    op(MS, "QLinearMul", 1, qlinear_mul),
    op(MS, "QLinearLeakyRelu", 1, qlinear_leaky_relu),
    op(MS, "QLinearSigmoid", 1, qlinear_sigmoid),
    op(MS, "QLinearGlobalAveragePool", 1, qlinear_global_avg_pool),
    op(MS, "QLinearConcat", 1, qlinear_concat),
    op(MS, "DynamicQuantizeMatMul", 1, dynamic_quantize_matmul),
];

/// The quantized type described by ONNX `scale` / `zero_point` for a tensor of shape
/// `shape`: per tensor (one element), per axis (1-D of `shape[axis]`), or blocked
/// (`block_size > 0`: the scale has the tensor's rank). The storage is the zero point's
/// type, else `storage`.
pub(crate) fn qtype(
    shape: &[usize],
    scale: &CTensor,
    zp: Option<&CTensor>,
    axis: i64,
    block_size: i64,
    storage: DType,
) -> Result<QuantType, String> {
    let storage_dt = zp.map_or(storage, |z| z.dtype);
    let st = storage_of(storage_dt)?;
    let scales = scale.to_f32();
    if let Some((i, s)) = scales
        .iter()
        .enumerate()
        .find(|(_, s)| !(**s > 0.0 && s.is_finite()))
    {
        return Err(format!(
            "scale #{i} is {s}; qcc needs positive, finite scales"
        ));
    }
    let mut zps: Vec<i64> = match zp {
        Some(z) => z.to_i64()?,
        None => vec![0; scales.len()],
    };
    if zps.len() == 1 && scales.len() > 1 {
        zps = vec![zps[0]; scales.len()];
    }
    if zps.len() != scales.len() {
        return Err(format!(
            "the zero point has {} elements, the scale {}",
            zps.len(),
            scales.len()
        ));
    }
    if let Some(z) = zps
        .iter()
        .find(|&&z| z < st.min_code() || z > st.max_code())
    {
        return Err(format!(
            "zero point {z} is outside the range of {}",
            storage_dt.name()
        ));
    }
    let zps: Vec<i32> = zps.into_iter().map(|z| z as i32).collect();
    let params = if block_size > 0 {
        if scale.shape.len() != shape.len() {
            return Err(format!(
                "blocked quantization needs a scale of the input's rank {}, found shape {:?}",
                shape.len(),
                scale.shape
            ));
        }
        let a = normalize_axis(axis, shape.len()).map_err(|e| format!("attribute `axis`: {e}"))?;
        let b = block_size as usize;
        for (d, (&n, &sn)) in shape.iter().zip(&scale.shape).enumerate() {
            let want = if d == a { n.div_ceil(b) } else { n };
            if sn != want {
                return Err(format!(
                    "blocked scale shape {:?} does not fit input shape {shape:?} with block_size {b} along axis {a}",
                    scale.shape
                ));
            }
        }
        QuantParams::Blocked {
            axis: a,
            block_size: b,
            scales,
            zero_points: zps,
        }
    } else if scales.len() == 1 && scale.shape.len() <= 1 {
        QuantParams::PerTensor {
            scale: scales[0],
            zero_point: zps[0],
        }
    } else if scale.shape.len() == 1 {
        let a = normalize_axis(axis, shape.len()).map_err(|e| format!("attribute `axis`: {e}"))?;
        if shape[a] != scales.len() {
            return Err(format!(
                "per-axis scale has {} elements, axis {a} of {shape:?} has {}",
                scales.len(),
                shape[a]
            ));
        }
        QuantParams::PerAxis {
            axis: a,
            scales,
            zero_points: zps,
        }
    } else {
        return Err(format!(
            "scale of shape {:?} is neither per-tensor, per-axis nor blocked (give block_size)",
            scale.shape
        ));
    };
    Ok(QuantType {
        storage: st,
        narrow: false,
        pow2: false,
        params,
    })
}

/// Input `i` as an IR value of quantized type `q`: constants become quantized
/// constants; run-time integers are reinterpreted (`cast` keeps the codes).
pub(crate) fn as_quant(
    cx: &mut NodeCx<'_, '_>,
    i: usize,
    q: &QuantType,
) -> Result<ValueId, String> {
    let shape = cx.shape_of(i)?;
    let elem = ElemType::Quant(q.clone());
    if cx.is_pure_const(i) {
        return cx.const_as(i, TensorType::new(elem, shape));
    }
    let x = cx.ir(i)?;
    let from = cx.ty(x).elem.clone();
    if from == elem {
        return Ok(x);
    }
    match from.storage() {
        Some(st) if st == q.storage => {}
        _ => {
            return Err(format!(
                "input {i} has type {}, but its quantization parameters say {}",
                cx.ty(x),
                q.storage
            ));
        }
    }
    cx.emit(Op::Cast, vec![x], vec![], Some(elem), &format!(".in{i}"))
}

/// `(multiplier, shift)` with `r = multiplier * 2^-shift` exactly (r is an f32, so a
/// 31-bit multiplier holds it), trailing zero bits stripped.
pub(crate) fn fixed_point(r: f32) -> Result<(i64, i64), String> {
    if !(r > 0.0 && r.is_finite()) {
        return Err(format!(
            "requantization scale {r} is not positive and finite"
        ));
    }
    let bits = r.to_bits();
    let exp = ((bits >> 23) & 0xff) as i64;
    let (mut m, mut s) = if exp == 0 {
        ((bits & 0x7f_ffff) as i64, 149)
    } else {
        (((bits & 0x7f_ffff) | 0x80_0000) as i64, 150 - exp)
    };
    while m % 2 == 0 && m > 1 {
        m /= 2;
        s -= 1;
    }
    while s > 62 {
        // Below 2^-38 or so: precision is shed (never seen in practice).
        m = (m + 1) / 2;
        s -= 1;
    }
    if s < -62 {
        return Err(format!("requantization scale {r} is too large"));
    }
    Ok((m, s))
}

fn emit_requantize(
    cx: &mut NodeCx<'_, '_>,
    acc: ValueId,
    reals: &[f32],
    axis: usize,
    out: QuantType,
) -> Result<ValueId, String> {
    let mut ms = Vec::new();
    let mut ss = Vec::new();
    for &r in reals {
        let (m, s) = fixed_point(r).map_err(|e| {
            format!("{e} (the input scale times the weight scale over the output scale)")
        })?;
        ms.push(m);
        ss.push(s);
    }
    if ms.iter().all(|&m| m == ms[0]) && ss.iter().all(|&s| s == ss[0]) {
        ms.truncate(1);
        ss.truncate(1);
    }
    cx.emit(
        Op::Requantize,
        vec![acc],
        vec![
            ("multiplier", Attr::Ints(ms)),
            ("shift", Attr::Ints(ss)),
            ("axis", Attr::Int(axis as i64)),
            ("rounding", Attr::Enum(Rounding::HalfEven.name().into())),
        ],
        Some(ElemType::Quant(out)),
        "",
    )
}

fn precision_ok(cx: &NodeCx<'_, '_>) -> Result<(), String> {
    for name in ["precision", "output_dtype"] {
        if let Some(p) = cx.a_opt_int(name)?
            && p != 0
            && p != 1
            && name == "precision"
        {
            return Err(format!(
                "attribute `{name}` = {} is not supported (float32 only)",
                DType::from_code(p as i32).name()
            ));
        }
    }
    Ok(())
}

fn quantize_linear(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    precision_ok(cx)?;
    let x = f32_operand(cx, 0)?;
    let shape = cx.ty(x).shape.clone();
    let scale = cx.konst(1, "y_scale")?;
    let zp = cx.opt_konst(2, "y_zero_point")?;
    let storage = match cx.a_opt_int("output_dtype")? {
        Some(d) if d != 0 => DType::from_code(d as i32),
        _ => DType::U8,
    };
    if let (Some(z), Some(d)) = (&zp, cx.a_opt_int("output_dtype")?)
        && d != 0
        && DType::from_code(d as i32) != z.dtype
    {
        return Err(format!(
            "attribute `output_dtype` ({}) differs from the zero point's type ({})",
            DType::from_code(d as i32).name(),
            z.dtype.name()
        ));
    }
    let q = qtype(
        &shape,
        &scale,
        zp.as_deref(),
        cx.a_int("axis", 1)?,
        cx.a_int("block_size", 0)?,
        storage,
    )?;
    let y = cx.emit(
        Op::Quantize,
        vec![x],
        vec![("rounding", Attr::Enum(Rounding::HalfEven.name().into()))],
        Some(ElemType::Quant(q)),
        "",
    )?;
    cx.set_ir(0, y);
    Ok(())
}

fn dequantize_linear(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    if let Some(d) = cx.a_opt_int("output_dtype")?
        && d != 0
        && d != 1
    {
        return Err(format!(
            "attribute `output_dtype` = {} is not supported (float32 only)",
            DType::from_code(d as i32).name()
        ));
    }
    let shape = cx.shape_of(0)?;
    let dtype = cx.dtype_of(0)?;
    let scale = cx.konst(1, "x_scale")?;
    let zp = cx.opt_konst(2, "x_zero_point")?;
    if let Some(z) = &zp
        && z.dtype != dtype
    {
        return Err(format!(
            "the zero point is {}, the input {}",
            z.dtype.name(),
            dtype.name()
        ));
    }
    let q = qtype(
        &shape,
        &scale,
        zp.as_deref(),
        cx.a_int("axis", 1)?,
        cx.a_int("block_size", 0)?,
        dtype,
    )?;
    let x = as_quant(cx, 0, &q)?;
    let y = cx.emit(Op::Dequantize, vec![x], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

/// Per-tensor quantized type of input `x` from its scale and zero point inputs.
fn per_tensor(
    cx: &NodeCx<'_, '_>,
    x: usize,
    s: usize,
    z: usize,
    what: &str,
) -> Result<QuantType, String> {
    let shape = cx.shape_of(x)?;
    let scale = cx.konst(s, &format!("{what}_scale"))?;
    let zp = cx.opt_konst(z, &format!("{what}_zero_point"))?;
    let dtype = cx.dtype_of(x)?;
    if scale.numel() != 1 {
        return Err(format!(
            "`{what}_scale` must be a single value (per tensor)"
        ));
    }
    qtype(&shape, &scale, zp.as_deref(), 0, 0, dtype)
}

/// The output type from scale/zero point inputs (storage from the zero point, else
/// `default`).
fn out_type(
    cx: &NodeCx<'_, '_>,
    s: usize,
    z: usize,
    default: DType,
    what: &str,
) -> Result<QuantType, String> {
    let scale = cx.konst(s, &format!("{what}_scale"))?;
    let zp = cx.opt_konst(z, &format!("{what}_zero_point"))?;
    if scale.numel() != 1 {
        return Err(format!(
            "`{what}_scale` must be a single value (per tensor)"
        ));
    }
    qtype(&[], &scale, zp.as_deref(), 0, 0, default)
}

fn scale_of(q: &QuantType) -> f32 {
    q.params.scales()[0]
}

/// Per-channel weight type: scale and zero point scalar or 1-D along `axis`.
fn weight_type(
    cx: &NodeCx<'_, '_>,
    w: usize,
    s: Option<usize>,
    z: Option<usize>,
    axis: usize,
) -> Result<QuantType, String> {
    let shape = cx.shape_of(w)?;
    let dtype = cx.dtype_of(w)?;
    let scale = match s {
        Some(s) => (*cx.konst(s, "w_scale")?).clone(),
        None => CTensor::f32s(vec![], vec![1.0]),
    };
    let zp = match z {
        Some(z) => cx.opt_konst(z, "w_zero_point")?.map(|c| (*c).clone()),
        None => None,
    };
    let n = scale.numel().max(zp.as_ref().map_or(1, |z| z.numel()));
    let expand = |c: CTensor| -> CTensor {
        if c.numel() == 1 && n > 1 {
            let data = match &c.data {
                super::tensor::CData::F(v) => super::tensor::CData::F(vec![v[0]; n]),
                super::tensor::CData::I(v) => super::tensor::CData::I(vec![v[0]; n]),
            };
            CTensor::new(c.dtype, vec![n], data)
        } else if c.numel() == n && n > 1 {
            CTensor::new(c.dtype, vec![n], c.data)
        } else {
            c
        }
    };
    let scale = expand(scale);
    let zp = zp.map(expand);
    qtype(&shape, &scale, zp.as_ref(), axis as i64, 0, dtype)
}

fn conv_attrs(
    cx: &NodeCx<'_, '_>,
    xs: &[usize],
    ws: &[usize],
) -> Result<(super::nn::Window, i64), String> {
    if xs.len() != 4 || ws.len() != 4 {
        return Err(format!(
            "only 2-D convolutions are supported (input {xs:?}, weights {ws:?})"
        ));
    }
    let kernel = match cx.a_ints("kernel_shape")? {
        Some(k) => k.iter().map(|&v| v.max(0) as usize).collect(),
        None => ws[2..].to_vec(),
    };
    Ok((window(cx, &xs[2..], kernel, false)?, cx.a_int("group", 1)?))
}

fn int_conv(
    cx: &mut NodeCx<'_, '_>,
    x: ValueId,
    w: ValueId,
    bias: Option<ValueId>,
    suffix: &str,
) -> Result<ValueId, String> {
    let xs = cx.ty(x).shape.clone();
    let ws = cx.ty(w).shape.clone();
    let (win, group) = conv_attrs(cx, &xs, &ws)?;
    let mut ops = vec![x, w];
    ops.extend(bias);
    cx.emit(
        Op::Conv2dInt,
        ops,
        vec![
            ("strides", usz(&win.strides)),
            ("pads", usz(&win.pads)),
            ("dilations", usz(&win.dilations)),
            ("group", Attr::Int(group)),
        ],
        None,
        suffix,
    )
}

fn i32_bias(cx: &mut NodeCx<'_, '_>, i: usize, n: usize) -> Result<Option<ValueId>, String> {
    if !cx.has(i) {
        return Ok(None);
    }
    let b = cx.konst(i, "B")?;
    if b.numel() != n {
        return Err(format!("the bias has {} elements, {n} expected", b.numel()));
    }
    Ok(Some(
        cx.const_as(i, TensorType::new(ElemType::I32, vec![n]))?,
    ))
}

fn qlinear_conv(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let xq = per_tensor(cx, 0, 1, 2, "x")?;
    let wq = weight_type(cx, 3, Some(4), Some(5), 0)?;
    let yq = out_type(cx, 6, 7, cx.dtype_of(0)?, "y")?;
    let x = as_quant(cx, 0, &xq)?;
    let w = as_quant(cx, 3, &wq)?;
    let m = *cx
        .shape_of(3)?
        .first()
        .ok_or("input 3 (`w`) is a scalar; the weights must be [M, C/group, kH, kW]")?;
    let bias = i32_bias(cx, 8, m)?;
    let acc = int_conv(cx, x, w, bias, ".acc")?;
    let (xs, ys) = (scale_of(&xq), scale_of(&yq));
    let reals: Vec<f32> = wq.params.scales().iter().map(|&ws| xs * ws / ys).collect();
    let y = emit_requantize(cx, acc, &reals, 1, yq)?;
    cx.set_ir(0, y);
    Ok(())
}

fn qlinear_matmul(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let aq = per_tensor(cx, 0, 1, 2, "a")?;
    let bshape = cx.shape_of(3)?;
    let last = bshape.len().saturating_sub(1);
    let bq = weight_type(cx, 3, Some(4), Some(5), last)?;
    let yq = out_type(cx, 6, 7, cx.dtype_of(0)?, "y")?;
    let a = as_quant(cx, 0, &aq)?;
    let b = as_quant(cx, 3, &bq)?;
    let acc = cx.emit(Op::MatMulInt, vec![a, b], vec![], None, ".acc")?;
    let out_rank = cx.ty(acc).rank();
    let (as_, ys) = (scale_of(&aq), scale_of(&yq));
    let reals: Vec<f32> = bq.params.scales().iter().map(|&bs| as_ * bs / ys).collect();
    let y = emit_requantize(cx, acc, &reals, out_rank.saturating_sub(1), yq)?;
    cx.set_ir(0, y);
    Ok(())
}

/// An integer input with an optional constant zero point (ConvInteger, MatMulInteger).
fn int_operand(
    cx: &mut NodeCx<'_, '_>,
    i: usize,
    zp: usize,
    axis: Option<usize>,
) -> Result<ValueId, String> {
    if !cx.has(zp) {
        let dtype = cx.dtype_of(i)?;
        let st = storage_of(dtype)?;
        if cx.is_pure_const(i) {
            let shape = cx.shape_of(i)?;
            return cx.const_as(i, TensorType::new(ElemType::Int(st), shape));
        }
        return cx.ir(i);
    }
    let q = match axis {
        Some(a) => weight_type(cx, i, None, Some(zp), a)?,
        None => {
            let z = cx.konst(zp, "zero point")?;
            if z.numel() != 1 {
                return Err(format!(
                    "the zero point of input {i} must be a single value (per-row zero points are not supported)"
                ));
            }
            let shape = cx.shape_of(i)?;
            qtype(
                &shape,
                &CTensor::f32s(vec![], vec![1.0]),
                Some(&z),
                0,
                0,
                cx.dtype_of(i)?,
            )?
        }
    };
    as_quant(cx, i, &q)
}

/// Whether input `zp` (a zero point) is given and only known at run time.
fn run_time_zp(cx: &NodeCx<'_, '_>, zp: usize) -> bool {
    cx.has(zp) && cx.konst(zp, "").is_err()
}

/// Run-time zero point input `zp` of data input `i`: a single 8-bit value of `i`'s type.
fn check_rt_zp(cx: &mut NodeCx<'_, '_>, i: usize, zp: usize) -> Result<ValueId, String> {
    let (dx, dz) = (cx.dtype_of(i)?, cx.dtype_of(zp)?);
    if dx != dz {
        return Err(format!(
            "input {zp} (the zero point of input {i}) is {}, input {i} is {}",
            dz.name(),
            dx.name()
        ));
    }
    if !matches!(dx, DType::U8 | DType::I8) {
        return Err(format!(
            "input {i} is {}; a run-time zero point needs uint8 or int8",
            dx.name()
        ));
    }
    let n: usize = cx.shape_of(zp)?.iter().product();
    if n != 1 {
        return Err(format!(
            "input {zp} (the run-time zero point of input {i}) has shape {:?}; it must be a single value",
            cx.shape_of(zp)?
        ));
    }
    let z = cx.ir(zp)?;
    if cx.ty(z).rank() == 0 {
        return Ok(z);
    }
    cx.emit(
        Op::Reshape,
        vec![z],
        vec![("shape", usz(&[]))],
        None,
        &format!(".zp{zp}"),
    )
}

/// `acc - za * corr` in i32 (wrapping, as the integer kernels): the correction of an
/// integer product whose left operand was taken with zero point 0 although its zero
/// point is the run-time scalar `za`. `corr` holds the sums of the right operand's
/// (zero-point-corrected) codes that meet each output element.
pub(crate) fn sub_rt_zp(
    cx: &mut NodeCx<'_, '_>,
    acc: ValueId,
    za: ValueId,
    corr: ValueId,
    suffix: &str,
) -> Result<ValueId, String> {
    let zi = cx.emit(
        Op::Cast,
        vec![za],
        vec![],
        Some(ElemType::I32),
        &format!("{suffix}.zpi"),
    )?;
    let p = cx.emit(
        Op::Mul,
        vec![zi, corr],
        vec![],
        None,
        &format!("{suffix}.zpc"),
    )?;
    cx.emit(Op::Sub, vec![acc, p], vec![], None, suffix)
}

/// The column sums `sum_k (b[k, n] - zb[n])` of a constant integer matrix `[K, N]` of
/// quantized (or plain) type `ty`, as an i32 constant `[N]`.
pub(crate) fn col_sums(
    cx: &mut NodeCx<'_, '_>,
    codes: &[i64],
    ty: &TensorType,
    base: &str,
) -> Result<ValueId, String> {
    let (k, n) = match ty.shape[..] {
        [k, n] => (k, n),
        _ => {
            return Err(format!(
                "the integer matrix has shape {:?}; with a run-time zero point of the other operand it must be 2-D",
                ty.shape
            ));
        }
    };
    let zps: Vec<i64> = match &ty.elem {
        ElemType::Quant(q) => {
            let z = q.params.zero_points();
            if z.len() == 1 {
                vec![z[0] as i64; n]
            } else {
                z.iter().map(|&v| v as i64).collect()
            }
        }
        _ => vec![0; n],
    };
    let mut sums = vec![0i64; n];
    for r in 0..k {
        for (c, s) in sums.iter_mut().enumerate() {
            *s += codes[r * n + c] - zps[c];
        }
    }
    let sums = sums
        .into_iter()
        .map(|v| i64::from(v as i32))
        .collect::<Vec<_>>();
    Ok(cx.new_const(
        base,
        TensorType::new(ElemType::I32, vec![n]),
        ConstData::Int(sums),
    ))
}

fn conv_integer(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    if run_time_zp(cx, 3) {
        return Err("input 3 (`w_zero_point`) must be a constant (the weights' zero point)".into());
    }
    if !run_time_zp(cx, 2) {
        let x = int_operand(cx, 0, 2, None)?;
        let w = int_operand(cx, 1, 3, Some(0))?;
        let y = int_conv(cx, x, w, None, "")?;
        cx.set_ir(0, y);
        return Ok(());
    }
    // A run-time zero point of x (DynamicQuantizeLinear's): the convolution of the
    // codes, less zx times the sum of (w - zw) over the window's in-bounds positions
    // (padding reads zx, i.e. contributes nothing). That sum is a constant: the
    // convolution of a batch of ones.
    let za = check_rt_zp(cx, 0, 2)?;
    let x = cx.ir(0)?;
    if cx.konst(1, "").is_err() {
        return Err(
            "input 1 (`w`) must be a constant when `x_zero_point` is only known at run time".into(),
        );
    }
    let w = int_operand(cx, 1, 3, Some(0))?;
    let acc = int_conv(cx, x, w, None, ".acc")?;
    // (int_conv checked that x is [N, C, H, W].)
    let mut ones_shape = cx.ty(x).shape.clone();
    if let Some(n) = ones_shape.first_mut() {
        *n = 1;
    }
    let n: usize = ones_shape.iter().product();
    let st = storage_of(cx.dtype_of(0)?)?;
    let ones = cx.new_const(
        "ones",
        TensorType::new(ElemType::Int(st), ones_shape),
        ConstData::Int(vec![1; n]),
    );
    let corr = int_conv(cx, ones, w, None, ".wsum")?;
    let y = sub_rt_zp(cx, acc, za, corr, "")?;
    cx.set_ir(0, y);
    Ok(())
}

fn matmul_integer(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    if run_time_zp(cx, 3) {
        return Err("input 3 (`b_zero_point`) must be a constant (the weights' zero point)".into());
    }
    let last = cx.shape_of(1)?.len().saturating_sub(1);
    if !run_time_zp(cx, 2) {
        let a = int_operand(cx, 0, 2, None)?;
        let b = int_operand(cx, 1, 3, Some(last))?;
        let y = cx.emit(Op::MatMulInt, vec![a, b], vec![], None, "")?;
        cx.set_ir(0, y);
        return Ok(());
    }
    let za = check_rt_zp(cx, 0, 2)?;
    let a = cx.ir(0)?;
    if cx.konst(1, "").is_err() {
        return Err(
            "input 1 (`B`) must be a constant when `a_zero_point` is only known at run time".into(),
        );
    }
    let codes = cx.konst(1, "B")?.to_i64()?;
    let b = int_operand(cx, 1, 3, Some(last))?;
    let y = matmul_rt_zp(cx, a, za, b, &codes, "")?;
    cx.set_ir(0, y);
    Ok(())
}

/// `matmul_int(a, b)` for codes `a` with run-time scalar zero point `za` and constant
/// 2-D `b`: the product of the codes less `za` times `b`'s corrected column sums.
pub(crate) fn matmul_rt_zp(
    cx: &mut NodeCx<'_, '_>,
    a: ValueId,
    za: ValueId,
    b: ValueId,
    codes: &[i64],
    suffix: &str,
) -> Result<ValueId, String> {
    let bty = cx.ty(b).clone();
    let corr = col_sums(cx, codes, &bty, "colsum")?;
    let acc = cx.emit(
        Op::MatMulInt,
        vec![a, b],
        vec![],
        None,
        &format!("{suffix}.acc"),
    )?;
    sub_rt_zp(cx, acc, za, corr, suffix)
}

/// DynamicQuantizeLinear of f32 value `x`, as ONNX Runtime computes it:
/// `scale = (max(0, max x) - min(0, min x)) / 255` (1 when that range is 0, where the
/// ONNX formula divides by zero), `zp = round_half_even(clamp(-min(0, min x) / scale,
/// 0, 255))`, `y = clamp(round_half_even(x / scale) + zp, 0, 255)`, all in f32; `y` and
/// `zp` as u8. Returns `(y, scale, zp)`, `scale` and `zp` rank 0.
pub(crate) fn dyn_quantize(
    cx: &mut NodeCx<'_, '_>,
    x: ValueId,
    tag: &str,
) -> Result<(ValueId, ValueId, ValueId), String> {
    let all = || {
        vec![
            ("axes", Attr::Ints(vec![])),
            ("keepdims", Attr::Bool(false)),
        ]
    };
    let sfx = |s: &str| format!("{tag}.{s}");
    let mx = cx.emit(Op::ReduceMax, vec![x], all(), None, &sfx("max"))?;
    let mn = cx.emit(Op::ReduceMin, vec![x], all(), None, &sfx("min"))?;
    let zero = cx.f32_const("zero", vec![], vec![0.0]);
    let q255 = cx.f32_const("qmax", vec![], vec![255.0]);
    let mx = cx.emit(Op::Max, vec![mx, zero], vec![], None, &sfx("max0"))?;
    let mn = cx.emit(Op::Min, vec![mn, zero], vec![], None, &sfx("min0"))?;
    let range = cx.emit(Op::Sub, vec![mx, mn], vec![], None, &sfx("range"))?;
    let empty = cx.emit(Op::Equal, vec![range, zero], vec![], None, &sfx("empty"))?;
    let range = cx.emit(
        Op::Where,
        vec![empty, q255, range],
        vec![],
        None,
        &sfx("range1"),
    )?;
    let scale = cx.emit(Op::Div, vec![range, q255], vec![], None, &sfx("scale"))?;
    let clip = || vec![("min", Attr::Float(0.0)), ("max", Attr::Float(255.0))];
    let z = cx.emit(Op::Div, vec![mn, scale], vec![], None, &sfx("zdiv"))?;
    let z = cx.emit(Op::Neg, vec![z], vec![], None, &sfx("zneg"))?;
    let z = cx.emit(Op::Clip, vec![z], clip(), None, &sfx("zclip"))?;
    let z = cx.emit(Op::Round, vec![z], vec![], None, &sfx("zf"))?;
    let y = cx.emit(Op::Div, vec![x, scale], vec![], None, &sfx("div"))?;
    let y = cx.emit(Op::Round, vec![y], vec![], None, &sfx("round"))?;
    let y = cx.emit(Op::Add, vec![y, z], vec![], None, &sfx("addz"))?;
    let y = cx.emit(Op::Clip, vec![y], clip(), None, &sfx("clip"))?;
    let u8t = Some(ElemType::Int(IntType::U8));
    let y = cx.emit(Op::Cast, vec![y], vec![], u8t.clone(), &sfx("q"))?;
    let z = cx.emit(Op::Cast, vec![z], vec![], u8t, &sfx("zp"))?;
    Ok((y, scale, z))
}

fn dynamic_quantize_linear(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    if cx.n_inputs() != 1 {
        return Err(format!("expected 1 input (x), found {}", cx.n_inputs()));
    }
    let x = cx.f32_in(0)?;
    let (y, s, z) = dyn_quantize(cx, x, "")?;
    cx.set_ir(0, y);
    cx.set_ir(1, s);
    cx.set_ir(2, z);
    Ok(())
}

/// com.microsoft DynamicQuantizeMatMul(A, B, b_scale, b_zero_point, bias), imported as
/// ONNX Runtime's kernel computes it: A quantized as DynamicQuantizeLinear, the integer
/// product with B (zero points subtracted), `f32(acc) * (a_scale * b_scale[n])`, plus
/// the bias.
fn dynamic_quantize_matmul(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let n_in = cx.n_inputs();
    if !(3..=5).contains(&n_in) {
        return Err(format!(
            "expected 3 to 5 inputs (A, B, b_scale, b_zero_point, bias), found {n_in}"
        ));
    }
    let a = cx.f32_in(0)?;
    let bshape = cx.shape_of(1)?;
    if bshape.len() != 2 {
        return Err(format!(
            "input 1 (`B`) has shape {bshape:?}; qcc needs a constant 2-D B"
        ));
    }
    if cx.konst(1, "").is_err() {
        return Err("input 1 (`B`) must be a constant (the quantized weights)".into());
    }
    if !matches!(cx.dtype_of(1)?, DType::U8 | DType::I8) {
        return Err(format!(
            "input 1 (`B`) is {}; int8 or uint8 works",
            cx.dtype_of(1)?.name()
        ));
    }
    let n = bshape[1];
    let bscale = cx.konst(2, "b_scale")?;
    if bscale.numel() != 1 && bscale.numel() != n {
        return Err(format!(
            "input 2 (`b_scale`) has shape {:?}; one value or one per column ({n}) is needed",
            bscale.shape
        ));
    }
    if let Some(z) = cx.opt_konst(3, "b_zero_point")?
        && z.numel() != 1
        && z.numel() != n
    {
        return Err(format!(
            "input 3 (`b_zero_point`) has shape {:?}; one value or one per column ({n}) is needed",
            z.shape
        ));
    }
    let codes = cx.konst(1, "B")?.to_i64()?;
    let bq = weight_type(cx, 1, None, Some(3), 1)?;
    let b = as_quant(cx, 1, &bq)?;
    let (qa, sa, za) = dyn_quantize(cx, a, ".a")?;
    let acc = matmul_rt_zp(cx, qa, za, b, &codes, ".int")?;
    let accf = cx.emit(Op::Cast, vec![acc], vec![], Some(ElemType::F32), ".accf")?;
    let sv = bscale.to_f32();
    let sb = if sv.len() == 1 {
        cx.f32_const("b_scale", vec![], sv)
    } else {
        cx.f32_const("b_scale", vec![n], sv)
    };
    let mult = cx.emit(Op::Mul, vec![sa, sb], vec![], None, ".mult")?;
    let mut y = cx.emit(
        Op::Mul,
        vec![accf, mult],
        vec![],
        None,
        if cx.has(4) { ".scaled" } else { "" },
    )?;
    if cx.has(4) {
        let bias = cx.f32_in(4)?;
        if cx.ty(bias).shape != [n] {
            return Err(format!(
                "input 4 (`bias`) has shape {:?}; expected [{n}]",
                cx.ty(bias).shape
            ));
        }
        y = cx.emit(Op::Add, vec![y, bias], vec![], None, "")?;
    }
    cx.set_ir(0, y);
    Ok(())
}

fn qgemm(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let alpha = cx.a_float("alpha", 1.0)?;
    let trans_a = cx.a_int("transA", 0)? != 0;
    let trans_b = cx.a_int("transB", 0)? != 0;
    let aq = per_tensor(cx, 0, 1, 2, "a")?;
    let bq = weight_type(cx, 3, Some(4), Some(5), if trans_b { 0 } else { 1 })?;
    let mut a = as_quant(cx, 0, &aq)?;
    let mut b = as_quant(cx, 3, &bq)?;
    if trans_a {
        a = cx.emit(
            Op::Transpose,
            vec![a],
            vec![("perm", usz(&[1, 0]))],
            None,
            ".at",
        )?;
    }
    if trans_b {
        b = cx.emit(
            Op::Transpose,
            vec![b],
            vec![("perm", usz(&[1, 0]))],
            None,
            ".bt",
        )?;
    }
    let n = cx.ty(b).shape.get(1).copied().ok_or_else(|| {
        format!(
            "input 3 (`B`) has shape {:?}; it must be 2-D",
            cx.shape_of(3).unwrap_or_default()
        )
    })?;
    let bias = if cx.has(6) {
        let c = cx.konst(6, "C")?;
        if c.numel() != n {
            return Err(format!(
                "C has shape {:?}; only a bias of {n} elements (one per column) is supported",
                c.shape
            ));
        }
        Some(cx.const_as(6, TensorType::new(ElemType::I32, vec![n]))?)
    } else {
        None
    };
    let mut ops = vec![a, b];
    ops.extend(bias);
    let acc = cx.emit(Op::MatMulInt, ops, vec![], None, ".acc")?;
    let as_ = scale_of(&aq);
    let bscales = bq.params.scales().to_vec();
    if cx.has(7) {
        let yq = out_type(cx, 7, 8, cx.dtype_of(0)?, "y")?;
        let ys = scale_of(&yq);
        let reals: Vec<f32> = bscales.iter().map(|&bs| alpha * as_ * bs / ys).collect();
        let y = emit_requantize(cx, acc, &reals, 1, yq)?;
        cx.set_ir(0, y);
    } else {
        // Float output: the accumulator read as i32 codes with scale alpha*sa*sb.
        let scales: Vec<f32> = bscales.iter().map(|&bs| alpha * as_ * bs).collect();
        let params = if scales.len() == 1 {
            QuantParams::PerTensor {
                scale: scales[0],
                zero_point: 0,
            }
        } else {
            QuantParams::PerAxis {
                axis: 1,
                zero_points: vec![0; scales.len()],
                scales,
            }
        };
        let q = QuantType {
            storage: IntType::I32,
            narrow: false,
            pow2: false,
            params,
        };
        let accq = cx.emit(
            Op::Cast,
            vec![acc],
            vec![],
            Some(ElemType::Quant(q)),
            ".accq",
        )?;
        let y = cx.emit(Op::Dequantize, vec![accq], vec![], None, "")?;
        cx.set_ir(0, y);
    }
    Ok(())
}

/// Dequantized input `x` with scale/zero point inputs `s`/`z`.
fn dq_in(
    cx: &mut NodeCx<'_, '_>,
    x: usize,
    s: usize,
    z: usize,
    what: &str,
) -> Result<ValueId, String> {
    let q = per_tensor(cx, x, s, z, what)?;
    let v = as_quant(cx, x, &q)?;
    cx.emit(Op::Dequantize, vec![v], vec![], None, &format!(".dq{x}"))
}

fn q_out(
    cx: &mut NodeCx<'_, '_>,
    y: ValueId,
    s: usize,
    z: usize,
    default: DType,
) -> Result<(), String> {
    let q = out_type(cx, s, z, default, "y")?;
    let out = cx.emit(
        Op::Quantize,
        vec![y],
        vec![("rounding", Attr::Enum(Rounding::HalfEven.name().into()))],
        Some(ElemType::Quant(q)),
        "",
    )?;
    cx.set_ir(0, out);
    Ok(())
}

fn qlinear_binary(cx: &mut NodeCx<'_, '_>, op: Op) -> Result<(), String> {
    let a = dq_in(cx, 0, 1, 2, "A")?;
    let b = dq_in(cx, 3, 4, 5, "B")?;
    let y = cx.emit(op, vec![a, b], vec![], None, ".f")?;
    let d = cx.dtype_of(0)?;
    q_out(cx, y, 6, 7, d)
}

fn qlinear_add(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    qlinear_binary(cx, Op::Add)
}

fn qlinear_mul(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    qlinear_binary(cx, Op::Mul)
}

fn qlinear_unary(cx: &mut NodeCx<'_, '_>, op: Op, attrs: Vec<(&str, Attr)>) -> Result<(), String> {
    let x = dq_in(cx, 0, 1, 2, "X")?;
    let y = cx.emit(op, vec![x], attrs, None, ".f")?;
    let d = cx.dtype_of(0)?;
    q_out(cx, y, 3, 4, d)
}

fn qlinear_leaky_relu(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let alpha = cx.a_float("alpha", 0.01)?;
    qlinear_unary(cx, Op::LeakyRelu, vec![("alpha", Attr::Float(alpha))])
}

fn qlinear_sigmoid(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    qlinear_unary(cx, Op::Sigmoid, vec![])
}

fn qlinear_global_avg_pool(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    cx.reject_int_attr("channels_last", 0)?;
    qlinear_unary(cx, Op::GlobalAvgPool, vec![])
}

fn qlinear_concat(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let n = cx.n_inputs();
    if n < 5 || !(n - 2).is_multiple_of(3) {
        return Err(format!(
            "expected Y_scale, Y_zero_point and triples (X, scale, zero point), found {n} inputs"
        ));
    }
    let mut xs = Vec::new();
    for k in 0..(n - 2) / 3 {
        let i = 2 + 3 * k;
        xs.push(dq_in(cx, i, i + 1, i + 2, "X")?);
    }
    let r = cx.ty(xs[0]).rank();
    let axis = normalize_axis(
        cx.a_opt_int("axis")?
            .ok_or("attribute `axis` is required")?,
        r,
    )
    .map_err(|e| format!("attribute `axis`: {e}"))?;
    let y = cx.emit(
        Op::Concat,
        xs,
        vec![("axis", Attr::Int(axis as i64))],
        None,
        ".f",
    )?;
    let d = cx.dtype_of(2)?;
    q_out(cx, y, 0, 1, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_is_exact() {
        for r in [0.5f32, 0.0123, 1.0, 3.75, 1e-6, 0.00390625, 123456.7] {
            let (m, s) = fixed_point(r).unwrap();
            assert!(m < 1 << 31 && m > 0);
            assert_eq!(m as f64 * 2f64.powi(-s as i32), r as f64, "{r}");
        }
        assert_eq!(fixed_point(0.5).unwrap(), (1, 1));
        assert!(fixed_point(0.0).is_err());
    }
}
