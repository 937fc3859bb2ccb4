//! Neural-network layers: Conv, ConvTranspose, Gemm, MatMul, BatchNormalization,
//! MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, ReduceMean, ReduceSum,
//! ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSum, ReduceLogSumExp,
//! LayerNormalization and InstanceNormalization (written with reductions), Softmax, Resize.
//!
//! The IR's windowed ops are 2-D; 1-D convolutions and pools are imported as 2-D ones
//! over an inserted axis of size 1.

use qcc_ir::shape::normalize_axis;
use qcc_ir::{Attr, Op, ValueId};

use super::ctx::{NodeCx, ints, norm_axes, usz};
use super::elementwise::f32_operand;
use super::shape::reshape_ir;
use super::{OpReg, onnx_op as op};

pub(crate) const OPS: &[OpReg] = &[
    op("Conv", 1, conv),
    op("ConvTranspose", 1, conv_transpose),
    op("Gemm", 7, gemm),
    op("MatMul", 1, matmul),
    op("BatchNormalization", 7, batch_norm),
    op("MaxPool", 1, max_pool),
    op("AveragePool", 1, avg_pool),
    op("GlobalAveragePool", 1, global_avg_pool),
    op("ReduceMean", 1, reduce_mean),
    op("ReduceSum", 1, reduce_sum),
    op("ReduceMax", 1, reduce_max),
    op("ReduceMin", 1, reduce_min),
    op("ReduceProd", 1, reduce_prod),
    op("ReduceL1", 1, reduce_l1),
    op("ReduceL2", 1, reduce_l2),
    op("ReduceSumSquare", 1, reduce_sum_square),
    op("ReduceLogSum", 1, reduce_log_sum),
    op("ReduceLogSumExp", 1, reduce_log_sum_exp),
    op("GlobalMaxPool", 1, global_max_pool),
    op("LayerNormalization", 17, layer_norm),
    op("InstanceNormalization", 6, instance_norm),
    op("Softmax", 1, softmax),
    op("Resize", 11, resize),
];

/// Window parameters resolved for the 2-D IR op.
pub(crate) struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// [top, left, bottom, right]
    pub pads: Vec<usize>,
    /// The input had one spatial axis (lifted to two).
    pub lifted: bool,
}

fn pos(v: &[i64], what: &str) -> Result<Vec<usize>, String> {
    v.iter()
        .map(|&x| {
            usize::try_from(x).map_err(|_| format!("attribute `{what}` has a negative entry {x}"))
        })
        .collect()
}

/// Reads kernel/strides/dilations/pads/auto_pad for an input of spatial size `spatial`.
pub(crate) fn window(
    cx: &NodeCx<'_, '_>,
    spatial: &[usize],
    kernel: Vec<usize>,
    transposed: bool,
) -> Result<Window, String> {
    let n = spatial.len();
    if n != 1 && n != 2 {
        return Err(format!(
            "only 1-D and 2-D windows are supported, this one has {n} spatial axes"
        ));
    }
    if kernel.len() != n {
        return Err(format!(
            "the kernel has {} axes, the input {n} spatial axes",
            kernel.len()
        ));
    }
    let get = |name: &str, default: usize, len: usize| -> Result<Vec<usize>, String> {
        match cx.a_ints(name)? {
            Some(v) => {
                if v.len() != len {
                    return Err(format!(
                        "attribute `{name}` has {} entries, {len} expected",
                        v.len()
                    ));
                }
                pos(&v, name)
            }
            None => Ok(vec![default; len]),
        }
    };
    let strides = get("strides", 1, n)?;
    let dilations = get("dilations", 1, n)?;
    if strides.contains(&0) || dilations.contains(&0) {
        return Err("strides and dilations must be positive".into());
    }
    let auto_pad = cx.a_str("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
    let mut pads = match auto_pad.as_str() {
        "NOTSET" => get("pads", 0, 2 * n)?,
        "VALID" => vec![0; 2 * n],
        "SAME_UPPER" | "SAME_LOWER" if !transposed => {
            let mut p = vec![0; 2 * n];
            for i in 0..n {
                let out = spatial[i].div_ceil(strides[i]);
                // Saturating: absurd kernels and dilations are refused by the type rules.
                let span = dilations[i]
                    .saturating_mul(kernel[i].max(1) - 1)
                    .saturating_add(1);
                let total = ((out.max(1) - 1) * strides[i])
                    .saturating_add(span)
                    .saturating_sub(spatial[i]);
                if total > i32::MAX as usize {
                    return Err(format!(
                        "attribute `auto_pad` = {auto_pad}: kernel_shape {kernel:?} with \
                         dilations {dilations:?} needs {total} elements of padding, more than \
                         qcc takes (2^31 - 1)"
                    ));
                }
                let small = total / 2;
                let (b, e) = if auto_pad == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                p[i] = b;
                p[n + i] = e;
            }
            p
        }
        "SAME_UPPER" | "SAME_LOWER" => vec![0; 2 * n],
        other => {
            return Err(format!(
                "attribute `auto_pad` = {other:?} is not supported (NOTSET, VALID, SAME_UPPER \
                 and SAME_LOWER are)"
            ));
        }
    };
    let mut w = Window {
        kernel,
        strides,
        dilations,
        pads: Vec::new(),
        lifted: n == 1,
    };
    if n == 1 {
        w.kernel.insert(0, 1);
        w.strides.insert(0, 1);
        w.dilations.insert(0, 1);
        pads = vec![0, pads[0], 0, pads[1]];
    }
    w.pads = pads;
    Ok(w)
}

/// Inserts a size-1 axis at 2 (1-D to 2-D).
fn lift(cx: &mut NodeCx<'_, '_>, x: ValueId, suffix: &str) -> Result<ValueId, String> {
    cx.emit(
        Op::Unsqueeze,
        vec![x],
        vec![("axes", ints(&[2]))],
        None,
        suffix,
    )
}

fn unlift(cx: &mut NodeCx<'_, '_>, y: ValueId) -> Result<ValueId, String> {
    cx.emit(
        Op::Squeeze,
        vec![y],
        vec![("axes", ints(&[2]))],
        None,
        ".1d",
    )
}

fn conv(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let mut x = cx.f32_in(0)?;
    let mut w = f32_operand(cx, 1)?;
    let xs = cx.ty(x).shape.clone();
    let ws = cx.ty(w).shape.clone();
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(format!(
            "input {xs:?} and weights {ws:?} must be [N,C,...] and [M,C/g,...] of the same rank"
        ));
    }
    let kernel = match cx.a_ints("kernel_shape")? {
        Some(k) => pos(&k, "kernel_shape")?,
        None => ws[2..].to_vec(),
    };
    let win = window(cx, &xs[2..], kernel, false)?;
    let group = cx.a_int("group", 1)?;
    if win.lifted {
        x = lift(cx, x, ".x2d")?;
        w = lift(cx, w, ".w2d")?;
    }
    let mut ops = vec![x, w];
    if cx.has(2) {
        ops.push(f32_operand(cx, 2)?);
    }
    let y = cx.emit(
        Op::Conv2d,
        ops,
        vec![
            ("strides", usz(&win.strides)),
            ("pads", usz(&win.pads)),
            ("dilations", usz(&win.dilations)),
            ("group", Attr::Int(group)),
        ],
        None,
        if win.lifted { ".2d" } else { "" },
    )?;
    let y = if win.lifted { unlift(cx, y)? } else { y };
    cx.set_ir(0, y);
    Ok(())
}

fn conv_transpose(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let mut x = cx.f32_in(0)?;
    let mut w = f32_operand(cx, 1)?;
    let xs = cx.ty(x).shape.clone();
    let ws = cx.ty(w).shape.clone();
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(format!(
            "input {xs:?} and weights {ws:?} must be [N,C,...] and [C,M/g,...] of the same rank"
        ));
    }
    let n = xs.len() - 2;
    let kernel = match cx.a_ints("kernel_shape")? {
        Some(k) => pos(&k, "kernel_shape")?,
        None => ws[2..].to_vec(),
    };
    let mut win = window(cx, &xs[2..], kernel.clone(), true)?;
    let mut out_pad = match cx.a_ints("output_padding")? {
        Some(v) => pos(&v, "output_padding")?,
        None => vec![0; n],
    };
    if out_pad.len() != n {
        return Err("attribute `output_padding` must have one entry per spatial axis".into());
    }
    let auto_pad = cx.a_str("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
    let output_shape = match cx.a_ints("output_shape")? {
        Some(s) => Some(pos(&s, "output_shape")?),
        None if auto_pad.starts_with("SAME") => {
            let (s, _) = strides_dil(&win, n);
            Some(xs[2..].iter().zip(&s).map(|(&i, &s)| i * s).collect())
        }
        None => None,
    };
    if let Some(os) = output_shape {
        let os = if os.len() == n + 2 {
            os[2..].to_vec()
        } else {
            os
        };
        if os.len() != n {
            return Err("attribute `output_shape` must have one entry per spatial axis".into());
        }
        let (strides, dil) = strides_dil(&win, n);
        let mut pads = vec![0usize; 2 * n];
        for i in 0..n {
            // In i128, saturating: absurd attributes are refused below or by the type rules.
            let natural = (strides[i] as i128)
                .saturating_mul(xs[2 + i].saturating_sub(1) as i128)
                .saturating_add(out_pad[i] as i128)
                .saturating_add(
                    (dil[i] as i128).saturating_mul(kernel[i].saturating_sub(1) as i128),
                )
                .saturating_add(1);
            let total = natural - os[i] as i128;
            let fits = |v: i128| {
                usize::try_from(v).map_err(|_| {
                    format!(
                        "attribute `output_shape` entry {} cannot be reached (the window \
                         arithmetic overflows)",
                        os[i]
                    )
                })
            };
            if total < 0 {
                // Both at most i64::MAX: the sum fits.
                out_pad[i] += fits(-total)?;
                continue;
            }
            let total = fits(total)?;
            let (b, e) = if auto_pad == "SAME_UPPER" {
                (total / 2, total - total / 2)
            } else {
                (total - total / 2, total / 2)
            };
            pads[i] = b;
            pads[n + i] = e;
        }
        win.pads = if win.lifted {
            vec![0, pads[0], 0, pads[1]]
        } else {
            pads
        };
    }
    if win.lifted {
        out_pad.insert(0, 0);
        x = lift(cx, x, ".x2d")?;
        w = lift(cx, w, ".w2d")?;
    }
    let mut ops = vec![x, w];
    if cx.has(2) {
        ops.push(f32_operand(cx, 2)?);
    }
    let group = cx.a_int("group", 1)?;
    let y = cx.emit(
        Op::ConvTranspose2d,
        ops,
        vec![
            ("strides", usz(&win.strides)),
            ("pads", usz(&win.pads)),
            ("dilations", usz(&win.dilations)),
            ("group", Attr::Int(group)),
            ("output_padding", usz(&out_pad)),
        ],
        None,
        if win.lifted { ".2d" } else { "" },
    )?;
    let y = if win.lifted { unlift(cx, y)? } else { y };
    cx.set_ir(0, y);
    Ok(())
}

/// The ONNX (not lifted) strides and dilations of a window.
fn strides_dil(win: &Window, n: usize) -> (Vec<usize>, Vec<usize>) {
    let skip = win.strides.len() - n;
    (win.strides[skip..].to_vec(), win.dilations[skip..].to_vec())
}

fn gemm(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let a = f32_operand(cx, 0)?;
    let b = f32_operand(cx, 1)?;
    let mut ops = vec![a, b];
    if cx.has(2) {
        ops.push(f32_operand(cx, 2)?);
    }
    let y = cx.emit(
        Op::Gemm,
        ops,
        vec![
            ("alpha", Attr::Float(cx.a_float("alpha", 1.0)?)),
            ("beta", Attr::Float(cx.a_float("beta", 1.0)?)),
            ("trans_a", Attr::Bool(cx.a_int("transA", 0)? != 0)),
            ("trans_b", Attr::Bool(cx.a_int("transB", 0)? != 0)),
        ],
        None,
        "",
    )?;
    cx.set_ir(0, y);
    Ok(())
}

fn matmul(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let a = f32_operand(cx, 0)?;
    let b = f32_operand(cx, 1)?;
    let y = cx.emit(Op::MatMul, vec![a, b], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

fn batch_norm(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    if cx.a_int("training_mode", 0)? != 0 {
        return Err("attribute `training_mode` = 1 is not supported (inference only)".into());
    }
    if cx.opset < 9 && cx.a_int("spatial", 1)? != 1 {
        return Err("attribute `spatial` = 0 is not supported".into());
    }
    if (1..5).any(|k| cx.wants_output(k)) {
        return Err("training outputs (running mean/var, saved mean/var) are not supported".into());
    }
    let x = cx.f32_in(0)?;
    let mut ops = vec![x];
    for i in 1..5 {
        ops.push(f32_operand(cx, i)?);
    }
    let eps = cx.a_float("epsilon", 1e-5)?;
    let y = cx.emit(
        Op::BatchNorm,
        ops,
        vec![("epsilon", Attr::Float(eps))],
        None,
        "",
    )?;
    cx.set_ir(0, y);
    Ok(())
}

fn pool(cx: &mut NodeCx<'_, '_>, max: bool) -> Result<(), String> {
    if max && cx.wants_output(1) {
        return Err("output `Indices` is not supported".into());
    }
    let mut x = cx.ir(0)?;
    if !max {
        x = cx.f32_in(0)?;
    }
    let xs = cx.ty(x).shape.clone();
    if xs.len() < 3 {
        return Err(format!("the input {xs:?} must be [N, C, ...]"));
    }
    let kernel = pos(
        &cx.a_ints("kernel_shape")?
            .ok_or("attribute `kernel_shape` is required")?,
        "kernel_shape",
    )?;
    let win = window(cx, &xs[2..], kernel, false)?;
    let ceil = cx.a_int("ceil_mode", 0)? != 0;
    if win.lifted {
        x = lift(cx, x, ".x2d")?;
    }
    let mut attrs = vec![
        ("kernel", usz(&win.kernel)),
        ("strides", usz(&win.strides)),
        ("pads", usz(&win.pads)),
        ("ceil_mode", Attr::Bool(ceil)),
    ];
    let op = if max {
        attrs.push(("dilations", usz(&win.dilations)));
        Op::MaxPool
    } else {
        if win.dilations.iter().any(|&d| d != 1) {
            return Err(
                "attribute `dilations` other than 1 is not supported for AveragePool".into(),
            );
        }
        attrs.push((
            "count_include_pad",
            Attr::Bool(cx.a_int("count_include_pad", 0)? != 0),
        ));
        Op::AvgPool
    };
    let y = cx.emit(
        op,
        vec![x],
        attrs,
        None,
        if win.lifted { ".2d" } else { "" },
    )?;
    let y = if win.lifted { unlift(cx, y)? } else { y };
    cx.set_ir(0, y);
    Ok(())
}

fn max_pool(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    pool(cx, true)
}

fn avg_pool(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    pool(cx, false)
}

fn global_avg_pool(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let x = cx.f32_in(0)?;
    let y = cx.emit(Op::GlobalAvgPool, vec![x], vec![], None, "")?;
    cx.set_ir(0, y);
    Ok(())
}

/// The reduced axes (normalised) and `keepdims` of a Reduce* node over `r` axes; `None`
/// when it is a no-op (`noop_with_empty_axes` with no axes). The axes are an input from
/// `axes_input_since` on, an attribute before.
fn reduce_axes(
    cx: &NodeCx<'_, '_>,
    r: usize,
    axes_input_since: i64,
) -> Result<Option<(Vec<usize>, bool)>, String> {
    let (axes, what) = if cx.opset >= axes_input_since {
        (
            cx.opt_konst_ints(1, "axes")?.unwrap_or_default(),
            "input 1 (`axes`)",
        )
    } else {
        (cx.a_ints("axes")?.unwrap_or_default(), "attribute `axes`")
    };
    if axes.is_empty() && cx.a_int("noop_with_empty_axes", 0)? != 0 {
        return Ok(None);
    }
    let axes = norm_axes(&axes, r, what)?;
    Ok(Some((axes, cx.a_int("keepdims", 1)? != 0)))
}

/// `op` over the node's axes of `x`.
fn reduce_ir(
    cx: &mut NodeCx<'_, '_>,
    op: Op,
    x: ValueId,
    axes: &[usize],
    keep: bool,
    suffix: &str,
) -> Result<ValueId, String> {
    cx.emit(
        op,
        vec![x],
        vec![("axes", usz(axes)), ("keepdims", Attr::Bool(keep))],
        None,
        suffix,
    )
}

/// A reduction of input 0, after `pre` (an elementwise op applied first, e.g. `x * x`)
/// and before `post` (e.g. `sqrt`).
fn reduce_with(
    cx: &mut NodeCx<'_, '_>,
    op: Op,
    axes_input_since: i64,
    pre: Option<Op>,
    post: Option<Op>,
) -> Result<(), String> {
    let x = cx.f32_in(0)?;
    let r = cx.ty(x).rank();
    let Some((axes, keep)) = reduce_axes(cx, r, axes_input_since)? else {
        // A no-op reduction still applies the elementwise parts.
        let y = match pre {
            Some(Op::Mul) => cx.emit(Op::Mul, vec![x, x], vec![], None, "")?,
            Some(p) => cx.emit(p, vec![x], vec![], None, "")?,
            None => x,
        };
        cx.set_ir(0, y);
        return Ok(());
    };
    let x = match pre {
        Some(Op::Mul) => cx.emit(Op::Mul, vec![x, x], vec![], None, ".sq")?,
        Some(p) => cx.emit(p, vec![x], vec![], None, ".pre")?,
        None => x,
    };
    let y = match post {
        Some(p) => {
            let s = reduce_ir(cx, op, x, &axes, keep, ".red")?;
            cx.emit(p, vec![s], vec![], None, "")?
        }
        None => reduce_ir(cx, op, x, &axes, keep, "")?,
    };
    cx.set_ir(0, y);
    Ok(())
}

fn reduce_mean(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    reduce_with(cx, Op::ReduceMean, 18, None, None)
}

fn reduce_sum(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    reduce_with(cx, Op::ReduceSum, 13, None, None)
}

fn reduce_max(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    reduce_with(cx, Op::ReduceMax, 18, None, None)
}

fn reduce_min(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    reduce_with(cx, Op::ReduceMin, 18, None, None)
}

fn reduce_prod(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    reduce_with(cx, Op::ReduceProd, 18, None, None)
}

/// `sum |x|`.
fn reduce_l1(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    reduce_with(cx, Op::ReduceSum, 18, Some(Op::Abs), None)
}

/// `sqrt(sum x^2)`.
fn reduce_l2(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    reduce_with(cx, Op::ReduceSum, 18, Some(Op::Mul), Some(Op::Sqrt))
}

/// `sum x^2`.
fn reduce_sum_square(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    reduce_with(cx, Op::ReduceSum, 18, Some(Op::Mul), None)
}

/// `ln(sum x)`.
fn reduce_log_sum(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    reduce_with(cx, Op::ReduceSum, 18, None, Some(Op::Log))
}

/// `ln(sum e^x)`.
fn reduce_log_sum_exp(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    reduce_with(cx, Op::ReduceSum, 18, Some(Op::Exp), Some(Op::Log))
}

/// The maximum over the spatial axes, kept as size 1.
fn global_max_pool(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let x = cx.f32_in(0)?;
    let r = cx.ty(x).rank();
    if r < 3 {
        return Err(format!("input of rank {r}: expected [N, C, spatial...]"));
    }
    let axes: Vec<usize> = (2..r).collect();
    let y = reduce_ir(cx, Op::ReduceMax, x, &axes, true, "")?;
    cx.set_ir(0, y);
    Ok(())
}

/// `(x - mean) / sqrt(var + epsilon) * scale + bias` with mean and (biased) variance
/// over `axes` of `x`; `scale` and `bias` already shaped to broadcast. Returns the
/// result, the mean and `1 / sqrt(var + epsilon)` (ONNX LayerNormalization's optional
/// outputs).
fn normalize(
    cx: &mut NodeCx<'_, '_>,
    x: ValueId,
    axes: &[usize],
    eps: f32,
    scale: ValueId,
    bias: Option<ValueId>,
) -> Result<(ValueId, ValueId, ValueId), String> {
    let mean = reduce_ir(cx, Op::ReduceMean, x, axes, true, ".mean")?;
    let d = cx.emit(Op::Sub, vec![x, mean], vec![], None, ".centered")?;
    let d2 = cx.emit(Op::Mul, vec![d, d], vec![], None, ".sq")?;
    let var = reduce_ir(cx, Op::ReduceMean, d2, axes, true, ".var")?;
    let e = cx.f32_const("epsilon", vec![], vec![eps]);
    let ve = cx.emit(Op::Add, vec![var, e], vec![], None, ".var_eps")?;
    let sd = cx.emit(Op::Sqrt, vec![ve], vec![], None, ".std")?;
    let one = cx.f32_const("one", vec![], vec![1.0]);
    let inv = cx.emit(Op::Div, vec![one, sd], vec![], None, ".inv_std")?;
    let n = cx.emit(Op::Div, vec![d, sd], vec![], None, ".normalized")?;
    let y = match bias {
        Some(b) => {
            let t = cx.emit(Op::Mul, vec![n, scale], vec![], None, ".scaled")?;
            cx.emit(Op::Add, vec![t, b], vec![], None, "")?
        }
        None => cx.emit(Op::Mul, vec![n, scale], vec![], None, "")?,
    };
    Ok((y, mean, inv))
}

/// Normalisation over the axes from `axis` on (opset 17), `stash_type` float32.
fn layer_norm(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let x = cx.f32_in(0)?;
    let r = cx.ty(x).rank();
    let axis =
        normalize_axis(cx.a_int("axis", -1)?, r).map_err(|e| format!("attribute `axis`: {e}"))?;
    let eps = cx.a_float("epsilon", 1e-5)?;
    let scale = cx.f32_in(1)?;
    let bias = if cx.has(2) { Some(cx.f32_in(2)?) } else { None };
    let axes: Vec<usize> = (axis..r).collect();
    let (y, mean, inv) = normalize(cx, x, &axes, eps, scale, bias)?;
    cx.set_ir(0, y);
    if cx.wants_output(1) {
        cx.set_ir(1, mean);
    }
    if cx.wants_output(2) {
        cx.set_ir(2, inv);
    }
    Ok(())
}

/// Normalisation of each (sample, channel) over the spatial axes; `scale` and `bias`
/// are per channel.
fn instance_norm(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let x = cx.f32_in(0)?;
    let s = cx.ty(x).shape.clone();
    let r = s.len();
    if r < 3 {
        return Err(format!("input of rank {r}: expected [N, C, spatial...]"));
    }
    let eps = cx.a_float("epsilon", 1e-5)?;
    let mut per_c = vec![s[1]];
    per_c.extend(std::iter::repeat_n(1, r - 2));
    let param = |cx: &mut NodeCx<'_, '_>, i: usize, what: &str| -> Result<ValueId, String> {
        let v = cx.f32_in(i)?;
        if cx.ty(v).shape != [s[1]] {
            return Err(format!(
                "input `{what}` has shape {:?}, expected [{}] (one per channel)",
                cx.ty(v).shape,
                s[1]
            ));
        }
        cx.emit(
            Op::Reshape,
            vec![v],
            vec![("shape", usz(&per_c))],
            None,
            &format!(".{what}"),
        )
    };
    let scale = param(cx, 1, "scale")?;
    let bias = param(cx, 2, "B")?;
    let axes: Vec<usize> = (2..r).collect();
    let (y, _, _) = normalize(cx, x, &axes, eps, scale, Some(bias))?;
    cx.set_ir(0, y);
    Ok(())
}

fn softmax(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let x = cx.f32_in(0)?;
    let s = cx.ty(x).shape.clone();
    let r = s.len();
    let legacy = cx.opset < 13;
    let axis = normalize_axis(cx.a_int("axis", if legacy { 1 } else { -1 })?, r)
        .map_err(|e| format!("attribute `axis`: {e}"))?;
    if !legacy || axis + 1 == r {
        let y = cx.emit(
            Op::Softmax,
            vec![x],
            vec![("axis", Attr::Int(axis as i64))],
            None,
            "",
        )?;
        cx.set_ir(0, y);
        return Ok(());
    }
    // Before opset 13 the input is viewed as 2-D [prod(d[..axis]), prod(d[axis..])].
    let flat = vec![s[..axis].iter().product(), s[axis..].iter().product()];
    let x2 = reshape_ir(cx, x, &flat, ".2d")?;
    let y2 = cx.emit(
        Op::Softmax,
        vec![x2],
        vec![("axis", Attr::Int(1))],
        None,
        ".sm",
    )?;
    let y = reshape_ir(cx, y2, &s, "")?;
    cx.set_ir(0, y);
    Ok(())
}

fn resize(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    let x = cx.f32_in(0)?;
    let s = cx.ty(x).shape.clone();
    let r = s.len();
    let mode = cx.a_str("mode")?.unwrap_or_else(|| "nearest".into());
    if mode != "nearest" && mode != "linear" {
        return Err(format!(
            "attribute `mode` = {mode:?} is not supported (nearest and linear are)"
        ));
    }
    let ctm = cx
        .a_str("coordinate_transformation_mode")?
        .unwrap_or_else(|| "half_pixel".into());
    if ![
        "half_pixel",
        "pytorch_half_pixel",
        "asymmetric",
        "align_corners",
    ]
    .contains(&ctm.as_str())
    {
        return Err(format!(
            "attribute `coordinate_transformation_mode` = {ctm:?} is not supported \
             (half_pixel, pytorch_half_pixel, asymmetric and align_corners are)"
        ));
    }
    let nearest = cx
        .a_str("nearest_mode")?
        .unwrap_or_else(|| "round_prefer_floor".into());
    if !["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"].contains(&nearest.as_str()) {
        return Err(format!(
            "attribute `nearest_mode` = {nearest:?} is not supported (round_prefer_floor, \
             round_prefer_ceil, floor and ceil are)"
        ));
    }
    cx.reject_int_attr("antialias", 0)?;
    cx.reject_int_attr("exclude_outside", 0)?;
    if let Some(p) = cx.a_str("keep_aspect_ratio_policy")?
        && p != "stretch"
    {
        return Err(format!(
            "attribute `keep_aspect_ratio_policy` = {p:?} is not supported (only \"stretch\")"
        ));
    }
    let axes: Vec<usize> = match cx.a_ints("axes")? {
        Some(a) => norm_axes(&a, r, "attribute `axes`")?,
        None => (0..r).collect(),
    };
    let scales_in = cx.opt_konst(2, "scales")?.filter(|c| c.numel() > 0);
    let sizes_in = cx.opt_konst(3, "sizes")?.filter(|c| c.numel() > 0);
    let mut scales = vec![1.0f32; r];
    let mut sizes = s.clone();
    match (scales_in, sizes_in) {
        (Some(sc), None) => {
            let v = sc.to_f32();
            if v.len() != axes.len() {
                return Err(format!(
                    "input 2 (`scales`) has {} entries, {} expected (one per axis)",
                    v.len(),
                    axes.len()
                ));
            }
            for (k, &a) in axes.iter().enumerate() {
                if v[k].is_nan() || v[k] <= 0.0 {
                    return Err(format!(
                        "input 2 (`scales`) entry {k} is {}; scales must be positive",
                        v[k]
                    ));
                }
                scales[a] = v[k];
                sizes[a] = (s[a] as f32 * v[k]).floor() as usize;
            }
        }
        (None, Some(_)) => {
            let v = cx.konst_ints(3, "sizes")?;
            if v.len() != axes.len() {
                return Err(format!(
                    "input 3 (`sizes`) has {} entries, {} expected (one per axis)",
                    v.len(),
                    axes.len()
                ));
            }
            for (k, &a) in axes.iter().enumerate() {
                let n = usize::try_from(v[k]).map_err(|_| {
                    format!(
                        "input 3 (`sizes`) entry {k} is {}; sizes must be non-negative",
                        v[k]
                    )
                })?;
                sizes[a] = n;
                scales[a] = n as f32 / s[a] as f32;
            }
        }
        _ => {
            return Err(
                "exactly one of input 2 (`scales`) and input 3 (`sizes`) must be given (and \
                 not empty)"
                    .into(),
            );
        }
    }
    let y = cx.emit(
        Op::Resize,
        vec![x],
        vec![
            ("mode", Attr::Enum(mode)),
            ("coordinate_transformation_mode", Attr::Enum(ctm)),
            ("nearest_mode", Attr::Enum(nearest)),
            ("scales", Attr::Floats(scales)),
            ("sizes", usz(&sizes)),
        ],
        None,
        "",
    )?;
    cx.set_ir(0, y);
    Ok(())
}
