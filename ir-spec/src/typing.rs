//! Type rules: the result type of every op, from its attributes and operand types.
//!
//! [`infer`] matches over [`Op`] exhaustively, so a new op makes the compiler point
//! here. The rules follow the op descriptions of the table in `ops.rs`:
//!
//! - float ops (everything without the `integer` or `data-movement` trait, except
//!   `cast`, `binarize` and the quantization ops) take and give `f32`;
//! - data-movement ops keep the element type; where they move the axis of a per-axis or
//!   blocked quantized type, the result type carries the moved axis (and, for a blocked
//!   type under `transpose`, the permuted parameter tensor); where they would split,
//!   merge, cut or join the quantization axis, they are rejected;
//! - ops whose result element type is chosen by the producer (`quantize`, `requantize`,
//!   `cast`, `threshold`, `bit_unpack`) check the declared element type is acceptable
//!   and return it with the computed shape;
//! - `conv2d_int` and `matmul_int` give `i32`, `binarize` gives `b1`, `bit_pack` gives
//!   unsigned words;
//! - comparisons and `one_hot` give booleans (`u1`), `not`/`and`/`or`/`xor` take and
//!   give them, `where` takes its condition as `u1` and gives the element type of its
//!   two values; `arg_max`, `arg_min` and `top_k_indices` give `i32`. Comparisons,
//!   `where`, `arg_*` and `top_k` take f32 or integer-valued operands whose codes order
//!   as their values (plain integers, `b1`, per-tensor quantized types).
//!
//! Errors name the op, the operand or attribute at fault and what was found, so that the
//! verifier can print them under the offending line as they are.

use crate::ops::{Arity, Attrs, Op};
use crate::shape::{broadcast, broadcasts_to, normalize_axis, window_out};
use crate::types::{ElemType, IntType, QuantParams, TensorType};

/// The type the result of `op` must have, given its attributes, operand types and the
/// declared result type.
///
/// Ops whose result element type is chosen by the producer (quantize, requantize, cast,
/// threshold, bit_unpack) check the declared element type is acceptable and return it
/// with the computed shape; every other op computes the whole type. The caller compares
/// the returned type with the declared one.
pub fn infer(
    op: Op,
    attrs: &Attrs<'_>,
    operands: &[&TensorType],
    declared: &TensorType,
) -> Result<TensorType, String> {
    let cx = Cx { op, operands };
    cx.check_count()?;
    for (i, t) in operands.iter().enumerate() {
        if let Some(e) = crate::verify::verify_types(t).into_iter().next() {
            return Err(format!(
                "operand `{}` of {op} has an invalid type {t}: {e}",
                cx.name(i)
            ));
        }
    }
    match op {
        Op::Conv2d => conv2d(&cx, attrs),
        Op::ConvTranspose2d => conv_transpose2d(&cx, attrs),
        Op::MatMul => {
            let a = cx.f32(0)?;
            let b = cx.f32(1)?;
            Ok(TensorType::f32(matmul_shape(op, &a.shape, &b.shape)?))
        }
        Op::Gemm => gemm(&cx, attrs),
        Op::Add | Op::Sub | Op::Mul => int_or_f32_binary(&cx),
        Op::Max | Op::Min if !cx.get(0).elem.is_float() => {
            let shape = same_elem_pair(&cx, 0, 1)?;
            Ok(TensorType::new(cx.get(0).elem.clone(), shape))
        }
        Op::Div | Op::Pow | Op::Max | Op::Min => {
            let a = cx.f32(0)?;
            let b = cx.f32(1)?;
            let shape = broadcast(&a.shape, &b.shape)
                .map_err(|e| format!("operands of {op} do not broadcast: {e}"))?;
            Ok(TensorType::f32(shape))
        }
        Op::Sqrt
        | Op::Exp
        | Op::Relu
        | Op::Sigmoid
        | Op::HardSwish
        | Op::Silu
        | Op::Sign
        | Op::Abs
        | Op::Neg
        | Op::Floor
        | Op::Ceil
        | Op::Round
        | Op::Log
        | Op::Tanh
        | Op::Erf
        | Op::LeakyRelu
        | Op::HardSigmoid => Ok(TensorType::f32(cx.f32(0)?.shape.clone())),
        Op::Clip => {
            let x = cx.f32(0)?;
            for name in ["min", "max"] {
                if attrs.opt_float(name)?.is_some_and(f32::is_nan) {
                    return Err(format!("attribute `{name}` of clip must not be NaN"));
                }
            }
            Ok(TensorType::f32(x.shape.clone()))
        }
        Op::Softmax => {
            let x = cx.f32(0)?;
            cx.axis(attrs, "axis", x.rank())?;
            Ok(TensorType::f32(x.shape.clone()))
        }
        Op::BatchNorm => batch_norm(&cx, attrs),
        Op::MaxPool => max_pool(&cx, attrs),
        Op::AvgPool => avg_pool(&cx, attrs),
        Op::GlobalAvgPool => {
            let x = cx.f32(0)?;
            if x.rank() < 2 {
                return Err(format!(
                    "operand `x` of global_avg_pool must have rank >= 2 ([N, C, ...]), found {x}"
                ));
            }
            let mut shape = x.shape.clone();
            shape[2..].iter_mut().for_each(|d| *d = 1);
            Ok(TensorType::f32(shape))
        }
        Op::ReduceMean | Op::ReduceSum | Op::ReduceMax | Op::ReduceMin | Op::ReduceProd => {
            reduce_mean(&cx, attrs)
        }
        Op::Equal | Op::Less | Op::LessOrEqual => compare(&cx),
        Op::Not => {
            let x = cx.boolean(0)?;
            Ok(TensorType::new(ElemType::U1, x.shape.clone()))
        }
        Op::And | Op::Or | Op::Xor => {
            let (a, b) = (cx.boolean(0)?, cx.boolean(1)?);
            let shape = broadcast(&a.shape, &b.shape)
                .map_err(|e| format!("operands of {op} do not broadcast: {e}"))?;
            Ok(TensorType::new(ElemType::U1, shape))
        }
        Op::Where => where_(&cx),
        Op::ArgMax | Op::ArgMin => arg_reduce(&cx, attrs),
        Op::TopK | Op::TopKIndices => top_k(&cx, attrs),
        Op::OneHot => one_hot(&cx, attrs),
        Op::Resize => resize(&cx, attrs),
        Op::Reshape => reshape(&cx, attrs),
        Op::Flatten => flatten(&cx, attrs),
        Op::Transpose => transpose(&cx, attrs),
        Op::Concat => concat(&cx, attrs),
        Op::Pad => pad(&cx, attrs),
        Op::Slice => slice(&cx, attrs),
        Op::Squeeze => squeeze(&cx, attrs),
        Op::Unsqueeze => unsqueeze(&cx, attrs),
        Op::Cast => {
            // Integer-valued -> b1 keeps the codes (they must be +-1 at run time).
            let x = cx.get(0);
            if declared.elem == ElemType::Bipolar && x.elem.is_float() {
                return Err(
                    "cast cannot produce b1 from f32 (a cast keeps values, and b1 holds only +1 and -1); use binarize"
                        .into(),
                );
            }
            Ok(TensorType::new(declared.elem.clone(), x.shape.clone()))
        }
        Op::Quantize => {
            let x = cx.f32(0)?;
            if !matches!(declared.elem, ElemType::Quant(_)) {
                return Err(format!(
                    "the result of quantize must have a quantized type (q<...>), found {}",
                    declared.elem
                ));
            }
            Ok(TensorType::new(declared.elem.clone(), x.shape.clone()))
        }
        Op::Dequantize => {
            let q = cx.get(0);
            if !matches!(q.elem, ElemType::Quant(_)) {
                return Err(format!(
                    "operand `q` of dequantize must have a quantized type (q<...>), found {q}"
                ));
            }
            Ok(TensorType::f32(q.shape.clone()))
        }
        Op::FakeQuant => {
            let x = cx.f32(0)?;
            cx.f32_broadcast_to(1, x)?;
            cx.f32_broadcast_to(2, x)?;
            bit_width(op, attrs, "bits")?;
            Ok(TensorType::f32(x.shape.clone()))
        }
        Op::Trunc => {
            let x = cx.f32(0)?;
            cx.f32_broadcast_to(1, x)?;
            cx.f32_broadcast_to(2, x)?;
            if cx.opt(3).is_some() {
                cx.f32_broadcast_to(3, x)?;
            }
            bit_width(op, attrs, "in_bits")?;
            bit_width(op, attrs, "out_bits")?;
            Ok(TensorType::f32(x.shape.clone()))
        }
        Op::Requantize => requantize(&cx, attrs, declared),
        Op::Conv2dInt => conv2d_int(&cx, attrs),
        Op::MatMulInt => matmul_int(&cx),
        Op::Binarize => Ok(TensorType::new(ElemType::Bipolar, cx.get(0).shape.clone())),
        Op::Threshold => threshold(&cx, attrs, declared),
        Op::Lookup => lookup(&cx),
        Op::BitPack => bit_pack(&cx, attrs),
        Op::BitUnpack => bit_unpack(&cx, attrs, declared),
    }
}

/// The operands of one node, with their names from the op table for messages.
struct Cx<'a, 'b> {
    op: Op,
    operands: &'b [&'a TensorType],
}

impl<'a> Cx<'a, '_> {
    fn check_count(&self) -> Result<(), String> {
        check_operand_count(self.op, self.operands.len())
    }

    /// The table's name of operand `i` (`xs[2]` for the third value of a variadic slot).
    fn name(&self, i: usize) -> String {
        let specs = self.op.info().operands;
        match specs.iter().position(|s| s.arity == Arity::Variadic) {
            Some(v) if i >= v => format!("{}[{}]", specs[v].name, i - v),
            _ => specs
                .get(i)
                .map_or_else(|| format!("#{i}"), |s| s.name.into()),
        }
    }

    fn get(&self, i: usize) -> &'a TensorType {
        self.operands[i]
    }

    fn opt(&self, i: usize) -> Option<&'a TensorType> {
        self.operands.get(i).copied()
    }

    fn f32(&self, i: usize) -> Result<&'a TensorType, String> {
        let t = self.get(i);
        if !t.elem.is_float() {
            return Err(format!(
                "operand `{}` of {} must be f32, found {t}",
                self.name(i),
                self.op
            ));
        }
        Ok(t)
    }

    /// A boolean (`u1`) operand.
    fn boolean(&self, i: usize) -> Result<&'a TensorType, String> {
        let t = self.get(i);
        if t.elem != ElemType::U1 {
            return Err(format!(
                "operand `{}` of {} must be a boolean (u1), found {t}",
                self.name(i),
                self.op
            ));
        }
        Ok(t)
    }

    /// An integer-valued operand (plain integer, quantized or bipolar).
    fn int_valued(&self, i: usize) -> Result<&'a TensorType, String> {
        let t = self.get(i);
        if !t.elem.is_integer() {
            return Err(format!(
                "operand `{}` of {} must be integer-valued (integer, quantized or b1), found {t}",
                self.name(i),
                self.op
            ));
        }
        Ok(t)
    }

    fn rank(&self, i: usize, t: &TensorType, rank: usize, layout: &str) -> Result<(), String> {
        if t.rank() != rank {
            return Err(format!(
                "operand `{}` of {} must have rank {rank} ({layout}), found {t}",
                self.name(i),
                self.op
            ));
        }
        Ok(())
    }

    fn f32_broadcast_to(&self, i: usize, x: &TensorType) -> Result<(), String> {
        let t = self.f32(i)?;
        if !broadcasts_to(&t.shape, &x.shape) {
            return Err(format!(
                "operand `{}` of {} must broadcast to the shape of `x` {:?}, found {t}",
                self.name(i),
                self.op,
                x.shape
            ));
        }
        Ok(())
    }

    /// An axis attribute resolved against `rank`.
    fn axis(&self, attrs: &Attrs<'_>, name: &str, rank: usize) -> Result<usize, String> {
        let a = attrs.int(name)?;
        normalize_axis(a, rank).map_err(|e| format!("attribute `{name}` of {}: {e}", self.op))
    }
}

/// Checks `n` operands fit the op's operand slots (the table's arities).
pub(crate) fn check_operand_count(op: Op, n: usize) -> Result<(), String> {
    let (min, max) = op.info().operand_count_range();
    if n < min || max.is_some_and(|max| n > max) {
        return Err(format!(
            "{op} takes {} operands ({}), found {n}",
            count_text(min, max),
            operand_list(op)
        ));
    }
    Ok(())
}

fn count_text(min: usize, max: Option<usize>) -> String {
    match max {
        Some(max) if max == min => format!("{min}"),
        Some(max) => format!("{min} to {max}"),
        None => format!("at least {min}"),
    }
}

fn operand_list(op: Op) -> String {
    op.info()
        .operands
        .iter()
        .map(|o| match o.arity {
            Arity::One => o.name.to_string(),
            Arity::Optional => format!("{}?", o.name),
            Arity::Variadic => format!("{}...", o.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn bit_width(op: Op, attrs: &Attrs<'_>, name: &str) -> Result<u32, String> {
    let b = attrs.int(name)?;
    if !(1..=32).contains(&b) {
        return Err(format!(
            "attribute `{name}` of {op} must be in 1..=32, found {b}"
        ));
    }
    Ok(b as u32)
}

/// A list attribute of exactly `len` entries.
fn ints_len(op: Op, attrs: &Attrs<'_>, name: &str, len: usize) -> Result<Vec<i64>, String> {
    let v = attrs.ints(name)?;
    if v.len() != len {
        return Err(format!(
            "attribute `{name}` of {op} must have {len} entries, found {v:?}"
        ));
    }
    Ok(v)
}

/// The largest kernel, stride, dilation or padding accepted (keeps size arithmetic far
/// from overflow).
const MAX_SIZE: i64 = i32::MAX as i64;

/// A list attribute of `len` positive entries.
fn positive(op: Op, attrs: &Attrs<'_>, name: &str, len: usize) -> Result<Vec<usize>, String> {
    let v = ints_len(op, attrs, name, len)?;
    if v.iter().any(|&x| !(1..=MAX_SIZE).contains(&x)) {
        return Err(format!(
            "attribute `{name}` of {op} must be positive (at most {MAX_SIZE}), found {v:?}"
        ));
    }
    Ok(v.into_iter().map(|x| x as usize).collect())
}

/// A list attribute of `len` non-negative entries.
fn non_negative(op: Op, attrs: &Attrs<'_>, name: &str, len: usize) -> Result<Vec<usize>, String> {
    let v = ints_len(op, attrs, name, len)?;
    if v.iter().any(|&x| !(0..=MAX_SIZE).contains(&x)) {
        return Err(format!(
            "attribute `{name}` of {op} must be non-negative (at most {MAX_SIZE}), found {v:?}"
        ));
    }
    Ok(v.into_iter().map(|x| x as usize).collect())
}

fn fmt_params(p: &QuantParams) -> String {
    match p {
        QuantParams::PerTensor { .. } => "per-tensor".into(),
        QuantParams::PerAxis { axis, .. } => format!("per-axis along axis {axis}"),
        QuantParams::Blocked {
            axis, block_size, ..
        } => format!("blocked along axis {axis} (block {block_size})"),
    }
}

/// The parameters of a quantized element type that are not per-tensor.
fn axis_params(elem: &ElemType) -> Option<&QuantParams> {
    elem.quant()
        .map(|q| &q.params)
        .filter(|p| !matches!(p, QuantParams::PerTensor { .. }))
}

fn with_params(elem: &ElemType, params: QuantParams) -> ElemType {
    match elem {
        ElemType::Quant(q) => {
            let mut q = q.clone();
            q.params = params;
            ElemType::Quant(q)
        }
        other => other.clone(),
    }
}

/// The element type with the quantization axis moved by `f` (identity for other types).
fn remap_axis(
    elem: &ElemType,
    f: impl FnOnce(usize) -> Result<usize, String>,
) -> Result<ElemType, String> {
    match axis_params(elem) {
        None => Ok(elem.clone()),
        Some(p) => {
            let axis = p.axis().expect("per-axis or blocked params have an axis");
            Ok(with_params(elem, p.with_axis(f(axis)?)))
        }
    }
}

/// Rejects blocked quantization, for ops that would have to cut its parameter tensor.
fn no_blocked(op: Op, name: &str, t: &TensorType, why: &str) -> Result<(), String> {
    if let Some(p @ QuantParams::Blocked { .. }) = axis_params(&t.elem) {
        return Err(format!(
            "operand `{name}` of {op} is {}: {why}; dequantize it first or requantize it per-axis",
            fmt_params(p)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- convolution, matmul

struct ConvAttrs {
    strides: Vec<usize>,
    pads: Vec<usize>,
    dilations: Vec<usize>,
    group: usize,
}

fn conv_attrs(op: Op, attrs: &Attrs<'_>) -> Result<ConvAttrs, String> {
    let group = attrs.int("group")?;
    if group < 1 {
        return Err(format!(
            "attribute `group` of {op} must be positive, found {group}"
        ));
    }
    Ok(ConvAttrs {
        strides: positive(op, attrs, "strides", 2)?,
        pads: non_negative(op, attrs, "pads", 4)?,
        dilations: positive(op, attrs, "dilations", 2)?,
        group: group as usize,
    })
}

/// Output [N, M, OH, OW] of a convolution of `x` [N, C, H, W] by `w` [M, C/g, kh, kw]
/// (ranks already checked); `bias` must be [M].
fn conv_shape(
    cx: &Cx<'_, '_>,
    c: &ConvAttrs,
    x: &TensorType,
    w: &TensorType,
) -> Result<Vec<usize>, String> {
    let op = cx.op;
    let (n, ch, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (m, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
    let g = c.group;
    if ch % g != 0 || m % g != 0 {
        return Err(format!(
            "{op} with group = {g} needs the input channels C = {ch} and the output channels M = {m} to be divisible by the group count"
        ));
    }
    if cg * g != ch {
        return Err(format!(
            "operand `w` of {op} must have C/group = {} input channels per group (dimension 1), found {w}",
            ch / g
        ));
    }
    // Kernel extents come from `w`'s shape: check they fit before the window
    // arithmetic, which works in usize.
    for (i, (n, k, what)) in [(h, kh, "height"), (wd, kw, "width")]
        .into_iter()
        .enumerate()
    {
        let span = c.dilations[i] as u128 * (k as u128).saturating_sub(1) + 1;
        if span > n as u128 + c.pads[i] as u128 + c.pads[i + 2] as u128 {
            return Err(format!(
                "{op} output {what}: the kernel of extent {span} does not fit in the padded input ({n} + {} + {})",
                c.pads[i],
                c.pads[i + 2]
            ));
        }
    }
    let oh = window_out(
        h,
        kh,
        c.strides[0],
        c.dilations[0],
        c.pads[0],
        c.pads[2],
        false,
    )
    .map_err(|e| format!("{op} output height: {e}"))?;
    let ow = window_out(
        wd,
        kw,
        c.strides[1],
        c.dilations[1],
        c.pads[1],
        c.pads[3],
        false,
    )
    .map_err(|e| format!("{op} output width: {e}"))?;
    Ok(vec![n, m, oh, ow])
}

fn conv2d(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = cx.f32(0)?;
    let w = cx.f32(1)?;
    cx.rank(0, x, 4, "[N, C, H, W]")?;
    cx.rank(1, w, 4, "[M, C/group, kh, kw]")?;
    let c = conv_attrs(cx.op, attrs)?;
    let shape = conv_shape(cx, &c, x, w)?;
    if cx.opt(2).is_some() {
        let b = cx.f32(2)?;
        if b.shape != [shape[1]] {
            return Err(format!(
                "operand `bias` of conv2d must have shape [M] = [{}], found {b}",
                shape[1]
            ));
        }
    }
    Ok(TensorType::f32(shape))
}

fn conv_transpose2d(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let op = cx.op;
    let x = cx.f32(0)?;
    let w = cx.f32(1)?;
    cx.rank(0, x, 4, "[N, C, H, W]")?;
    cx.rank(1, w, 4, "[C, M/group, kh, kw]")?;
    let c = conv_attrs(op, attrs)?;
    let opad = non_negative(op, attrs, "output_padding", 2)?;
    let (n, ch) = (x.shape[0], x.shape[1]);
    if w.shape[0] != ch {
        return Err(format!(
            "operand `w` of {op} must have C = {ch} rows (dimension 0, the input channels), found {w}"
        ));
    }
    if ch % c.group != 0 {
        return Err(format!(
            "{op} with group = {} needs the input channels C = {ch} to be divisible by it",
            c.group
        ));
    }
    let m = w.shape[1] * c.group;
    let mut shape = vec![n, m];
    for (i, what) in ["height", "width"].into_iter().enumerate() {
        let (len, k) = (x.shape[2 + i] as i128, w.shape[2 + i] as i128);
        let (s, d) = (c.strides[i] as i128, c.dilations[i] as i128);
        let out = s * (len - 1) + opad[i] as i128 + d * (k - 1) + 1
            - c.pads[i] as i128
            - c.pads[i + 2] as i128;
        if len < 1 || k < 1 || out < 1 {
            return Err(format!(
                "{op} output {what} is {out} (stride {s} * (input {len} - 1) + output_padding {} + dilation {d} * (kernel {k} - 1) + 1 - pads {} - {}); it must be positive",
                opad[i],
                c.pads[i],
                c.pads[i + 2]
            ));
        }
        shape.push(usize::try_from(out).map_err(|_| format!("{op} output {what} is too large"))?);
    }
    if cx.opt(2).is_some() {
        let b = cx.f32(2)?;
        if b.shape != [m] {
            return Err(format!(
                "operand `bias` of {op} must have shape [M] = [{m}], found {b}"
            ));
        }
    }
    Ok(TensorType::f32(shape))
}

/// numpy `matmul` shapes: rank-1 operands are promoted (`[K]` becomes `[1, K]` on the
/// left, `[K, 1]` on the right) and the added dimension removed from the result; batch
/// dimensions broadcast. Shared with `matmul_int`.
pub fn matmul_shape(op: Op, a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    if a.is_empty() || b.is_empty() {
        return Err(format!(
            "operands of {op} must have rank >= 1, found shapes {a:?} and {b:?}"
        ));
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (ra, rb) = (a2.len(), b2.len());
    let (m, ka) = (a2[ra - 2], a2[ra - 1]);
    let (kb, n) = (b2[rb - 2], b2[rb - 1]);
    if ka != kb {
        return Err(format!(
            "inner dimensions of {op} differ: `a` {a:?} has K = {ka}, `b` {b:?} has K = {kb}"
        ));
    }
    let mut out = broadcast(&a2[..ra - 2], &b2[..rb - 2])
        .map_err(|e| format!("batch dimensions of {op} do not broadcast: {e}"))?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(out)
}

fn gemm(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let a = cx.f32(0)?;
    let b = cx.f32(1)?;
    let ta = attrs.bool("trans_a")?;
    let tb = attrs.bool("trans_b")?;
    attrs.float("alpha")?;
    attrs.float("beta")?;
    cx.rank(0, a, 2, if ta { "[K, M]" } else { "[M, K]" })?;
    cx.rank(1, b, 2, if tb { "[N, K]" } else { "[K, N]" })?;
    let (m, ka) = if ta {
        (a.shape[1], a.shape[0])
    } else {
        (a.shape[0], a.shape[1])
    };
    let (kb, n) = if tb {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    if ka != kb {
        return Err(format!(
            "inner dimensions of gemm differ: A' is [{m}, {ka}], B' is [{kb}, {n}] (trans_a = {ta}, trans_b = {tb})"
        ));
    }
    if cx.opt(2).is_some() {
        let c = cx.f32(2)?;
        if !broadcasts_to(&c.shape, &[m, n]) {
            return Err(format!(
                "operand `c` of gemm must broadcast to [M, N] = [{m}, {n}], found {c}"
            ));
        }
    }
    Ok(TensorType::f32(vec![m, n]))
}

fn batch_norm(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = cx.f32(0)?;
    if x.rank() < 2 {
        return Err(format!(
            "operand `x` of batch_norm must have rank >= 2 ([N, C, ...]), found {x}"
        ));
    }
    let c = x.shape[1];
    for i in 1..5 {
        let t = cx.f32(i)?;
        if t.shape != [c] {
            return Err(format!(
                "operand `{}` of batch_norm must have shape [C] = [{c}], found {t}",
                cx.name(i)
            ));
        }
    }
    let eps = attrs.float("epsilon")?;
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(format!(
            "attribute `epsilon` of batch_norm must be finite and non-negative, found {eps}"
        ));
    }
    Ok(TensorType::f32(x.shape.clone()))
}

// ---------------------------------------------------------------- pooling

/// Output [N, C, OH, OW] of a pooling window sweep over `x` (rank already checked).
fn pool_shape(
    op: Op,
    attrs: &Attrs<'_>,
    x: &TensorType,
    dilations: &[usize],
) -> Result<Vec<usize>, String> {
    let kernel = positive(op, attrs, "kernel", 2)?;
    let strides = positive(op, attrs, "strides", 2)?;
    let pads = non_negative(op, attrs, "pads", 4)?;
    let ceil = attrs.bool("ceil_mode")?;
    let mut shape = x.shape[..2].to_vec();
    for (i, what) in ["height", "width"].into_iter().enumerate() {
        let span = dilations[i] * (kernel[i] - 1) + 1;
        if pads[i] >= span || pads[i + 2] >= span {
            return Err(format!(
                "{op} pads {:?} must be smaller than the window extent {span} along the {what}, or a window could lie in the padding only",
                pads
            ));
        }
        shape.push(
            window_out(
                x.shape[2 + i],
                kernel[i],
                strides[i],
                dilations[i],
                pads[i],
                pads[i + 2],
                ceil,
            )
            .map_err(|e| format!("{op} output {what}: {e}"))?,
        );
    }
    Ok(shape)
}

fn max_pool(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = cx.get(0);
    cx.rank(0, x, 4, "[N, C, H, W]")?;
    if let Some(p) = axis_params(&x.elem) {
        let axis = p.axis().unwrap_or(0);
        if matches!(p, QuantParams::Blocked { .. }) || axis >= 2 {
            return Err(format!(
                "operand `x` of max_pool is {}: a window would mix elements with different quantization parameters (only per-axis along N or C is allowed)",
                fmt_params(p)
            ));
        }
    }
    let dilations = positive(cx.op, attrs, "dilations", 2)?;
    let shape = pool_shape(cx.op, attrs, x, &dilations)?;
    Ok(TensorType::new(x.elem.clone(), shape))
}

fn avg_pool(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = cx.f32(0)?;
    cx.rank(0, x, 4, "[N, C, H, W]")?;
    attrs.bool("count_include_pad")?;
    let shape = pool_shape(cx.op, attrs, x, &[1, 1])?;
    Ok(TensorType::f32(shape))
}

/// Distinct axes, resolved against `rank`.
fn axes_list(op: Op, name: &str, axes: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = normalize_axis(a, rank).map_err(|e| format!("attribute `{name}` of {op}: {e}"))?;
        if out.contains(&n) {
            return Err(format!(
                "attribute `{name}` of {op} lists axis {n} twice ({axes:?})"
            ));
        }
        out.push(n);
    }
    Ok(out)
}

fn reduce_mean(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = cx.f32(0)?;
    let axes = axes_list(cx.op, "axes", &attrs.ints("axes")?, x.rank())?;
    let keep = attrs.bool("keepdims")?;
    let reduced = |i: usize| axes.is_empty() || axes.contains(&i);
    let mut shape = Vec::new();
    for (i, &d) in x.shape.iter().enumerate() {
        if !reduced(i) {
            shape.push(d);
        } else if keep {
            shape.push(1);
        }
    }
    Ok(TensorType::f32(shape))
}

/// Linear resize interpolates, so it needs f32; nearest resize only copies elements and
/// takes any element type, provided it leaves a quantization axis alone.
fn resize(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let mode = attrs.word("mode")?;
    let x = if mode == "nearest" {
        cx.get(0)
    } else {
        cx.f32(0)?
    };
    let r = x.rank();
    let sizes = attrs.usizes("sizes")?;
    if sizes.len() != r || sizes.contains(&0) {
        return Err(format!(
            "attribute `sizes` of resize must hold {r} positive sizes (one per axis of {x}), found {sizes:?}"
        ));
    }
    let scales = attrs.floats("scales")?;
    if scales.len() != r || scales.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
        return Err(format!(
            "attribute `scales` of resize must hold {r} positive finite scales (one per axis of {x}), found {scales:?}"
        ));
    }
    if x.shape.contains(&0) {
        return Err(format!(
            "resize of {x}: an empty axis has no element to resample"
        ));
    }
    if let Some(p) = axis_params(&x.elem) {
        // An axis of unchanged size and scale 1 maps every output index to itself
        // under every coordinate transformation.
        let same = |a: usize| sizes[a] == x.shape[a] && scales[a] == 1.0;
        let axis = p.axis().unwrap_or(0);
        if matches!(p, QuantParams::Blocked { .. }) && !(0..r).all(same) {
            no_blocked(
                cx.op,
                "x",
                x,
                "resampling would change its parameter tensor",
            )?;
        }
        if !same(axis) {
            return Err(format!(
                "resize moves elements along quantization axis {axis} of {x}; keep that axis's size and scale 1"
            ));
        }
    }
    Ok(TensorType::new(x.elem.clone(), sizes))
}

// ---------------------------------------------------------------- data movement

/// The quantization axis survives a reshape from `old` to `new` only if the dimensions
/// up to and including it are unchanged.
fn reshape_elem(op: Op, x: &TensorType, new: &[usize]) -> Result<ElemType, String> {
    remap_axis(&x.elem, |axis| {
        if new.len() > axis && new[..=axis] == x.shape[..=axis] {
            Ok(axis)
        } else {
            Err(format!(
                "{op} of {x} to {new:?} changes the dimensions up to quantization axis {axis}; the per-axis parameters would no longer follow one axis"
            ))
        }
    })
}

fn reshape(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = cx.get(0);
    let shape = attrs.usizes("shape").map_err(|e| {
        format!("{e} (the shape of reshape is fully specified: no -1 or 0 placeholders)")
    })?;
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .unwrap_or(usize::MAX);
    if n != x.numel() {
        return Err(format!(
            "reshape of {x} ({} elements) to {shape:?} ({n} elements) changes the element count",
            x.numel()
        ));
    }
    let elem = reshape_elem(cx.op, x, &shape)?;
    Ok(TensorType::new(elem, shape))
}

fn flatten(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = cx.get(0);
    let r = x.rank() as i64;
    let a = attrs.int("axis")?;
    if a < -r || a > r {
        return Err(format!(
            "attribute `axis` of flatten must be in -{r}..={r} for {x}, found {a}"
        ));
    }
    let a = if a < 0 { a + r } else { a } as usize;
    let shape = vec![x.shape[..a].iter().product(), x.shape[a..].iter().product()];
    let elem = reshape_elem(cx.op, x, &shape)?;
    Ok(TensorType::new(elem, shape))
}

/// A permutation of `0..rank`, checked.
fn permutation(op: Op, perm: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut seen = vec![false; rank];
    let mut out = Vec::with_capacity(rank);
    for &p in perm {
        match usize::try_from(p) {
            Ok(p) if p < rank && !seen[p] => {
                seen[p] = true;
                out.push(p);
            }
            _ => break,
        }
    }
    if out.len() != rank || perm.len() != rank {
        return Err(format!(
            "attribute `perm` of {op} must be a permutation of 0..{rank}, found {perm:?}"
        ));
    }
    Ok(out)
}

/// Permutes a row-major tensor of `shape`: output axis i is input axis perm[i].
fn permute<T: Copy>(data: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let strides = crate::shape::strides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let total: usize = out_shape.iter().product();
    let mut idx = vec![0usize; perm.len()];
    let mut out = Vec::with_capacity(total);
    for _ in 0..total {
        let flat: usize = idx.iter().zip(perm).map(|(&i, &p)| i * strides[p]).sum();
        out.push(data[flat]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn transpose(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = cx.get(0);
    let perm = permutation(cx.op, &attrs.ints("perm")?, x.rank())?;
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let new_axis = |axis: usize| perm.iter().position(|&p| p == axis).unwrap_or(axis);
    let elem = match axis_params(&x.elem) {
        Some(QuantParams::Blocked {
            axis,
            block_size,
            scales,
            zero_points,
        }) => {
            // The parameter tensor has x's shape with ceil(D / block) along the axis; it
            // is permuted like x.
            // (The operand's type is valid: `infer` checked it.)
            let mut pshape = x.shape.clone();
            pshape[*axis] = x.shape[*axis].div_ceil(*block_size);
            with_params(
                &x.elem,
                QuantParams::Blocked {
                    axis: new_axis(*axis),
                    block_size: *block_size,
                    scales: permute(scales, &pshape, &perm),
                    zero_points: permute(zero_points, &pshape, &perm),
                },
            )
        }
        _ => remap_axis(&x.elem, |a| Ok(new_axis(a)))?,
    };
    Ok(TensorType::new(elem, shape))
}

fn concat(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let op = cx.op;
    let first = cx.get(0);
    let axis = cx.axis(attrs, "axis", first.rank())?;
    let mut shape = first.shape.clone();
    for i in 1..cx.operands.len() {
        let t = cx.get(i);
        if t.elem != first.elem {
            return Err(format!(
                "operands of concat must have one element type: `{}` is {}, `{}` is {}",
                cx.name(0),
                first.elem,
                cx.name(i),
                t.elem
            ));
        }
        let same_others = t.rank() == first.rank()
            && (0..t.rank()).all(|d| d == axis || t.shape[d] == first.shape[d]);
        if !same_others {
            return Err(format!(
                "operand `{}` of concat is {t}, but `{}` is {first}: every dimension other than axis {axis} must agree",
                cx.name(i),
                cx.name(0)
            ));
        }
        shape[axis] = shape[axis]
            .checked_add(t.shape[axis])
            .ok_or_else(|| format!("concat along axis {axis} gives a dimension too large"))?;
    }
    if cx.operands.len() > 1
        && let Some(p) = axis_params(&first.elem)
    {
        if matches!(p, QuantParams::Blocked { .. }) {
            no_blocked(
                op,
                &cx.name(0),
                first,
                "joining would change its parameter tensor",
            )?;
        }
        if p.axis() == Some(axis) {
            return Err(format!(
                "concat along axis {axis}, the quantization axis of {}, would have to join the per-axis parameters too; requantize to per-tensor or concat along another axis",
                first.elem
            ));
        }
    }
    Ok(TensorType::new(first.elem.clone(), shape))
}

fn pad(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let op = cx.op;
    let x = cx.get(0);
    let r = x.rank();
    let pads = ints_len(op, attrs, "pads", 2 * r)?;
    let mode = attrs.word("mode")?;
    let mut shape = Vec::with_capacity(r);
    for (d, &len) in x.shape.iter().enumerate() {
        // Negative amounts crop first; positive ones then pad the cropped axis.
        let (b, e) = (pads[d] as i128, pads[d + r] as i128);
        let kept = len as i128 - (-b).max(0) - (-e).max(0);
        if kept < 0 {
            return Err(format!(
                "pads {b} and {e} of axis {d} crop more than its {len} elements"
            ));
        }
        let grow = b.max(0) + e.max(0);
        if grow > 0 && mode != "constant" && kept == 0 {
            return Err(format!(
                "pad in {mode} mode cannot fill axis {d}, which has no element left after cropping"
            ));
        }
        shape.push(usize::try_from(kept + grow).map_err(|_| {
            format!("pad of axis {d} (length {len}) by {b} and {e} gives a length too large")
        })?);
    }
    if pads.iter().any(|&p| p > 0) && mode == "constant" && x.elem.is_integer() {
        let v = attrs.float("value")?;
        if v.fract() != 0.0 || !x.elem.admits(v as i64) {
            return Err(format!(
                "attribute `value` of pad is the fill code of {} elements and must be an integer the type admits, found {v:?}",
                x.elem
            ));
        }
    }
    if let Some(p) = axis_params(&x.elem) {
        let changed = |d: usize| pads[d] != 0 || pads[d + r] != 0;
        let axis = p.axis().unwrap_or(0);
        if matches!(p, QuantParams::Blocked { .. }) && (0..r).any(changed) {
            no_blocked(op, "x", x, "padding would change its parameter tensor")?;
        }
        if axis < r && changed(axis) {
            return Err(format!(
                "pad changes quantization axis {axis} of {x}; the new elements would have no parameters"
            ));
        }
    }
    Ok(TensorType::new(x.elem.clone(), shape))
}

fn slice(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let op = cx.op;
    let x = cx.get(0);
    let starts = attrs.ints("starts")?;
    let ends = attrs.ints("ends")?;
    let axes_raw = attrs.ints("axes")?;
    let steps = attrs.ints("steps")?;
    let k = axes_raw.len();
    if starts.len() != k || ends.len() != k || steps.len() != k {
        return Err(format!(
            "attributes `starts` {starts:?}, `ends` {ends:?}, `axes` {axes_raw:?} and `steps` {steps:?} of slice must have one entry per sliced axis"
        ));
    }
    let axes = axes_list(op, "axes", &axes_raw, x.rank())?;
    let mut shape = x.shape.clone();
    let mut whole = vec![true; x.rank()];
    for i in 0..k {
        let (a, step) = (axes[i], steps[i]);
        let d = x.shape[a] as i64;
        if step == 0 {
            return Err(format!(
                "attribute `steps` of slice must be non-zero, found {steps:?}"
            ));
        }
        let (s, len) = crate::shape::slice_range(starts[i], ends[i], step, x.shape[a]);
        let len = len as i64;
        shape[a] = len as usize;
        whole[a] = step == 1 && s == 0 && len == d;
    }
    if let Some(p) = axis_params(&x.elem) {
        let axis = p.axis().unwrap_or(0);
        if matches!(p, QuantParams::Blocked { .. }) && whole.contains(&false) {
            no_blocked(op, "x", x, "slicing would change its parameter tensor")?;
        }
        if axis < whole.len() && !whole[axis] {
            return Err(format!(
                "slice cuts quantization axis {axis} of {x}; the result's parameters would be a subset (requantize or dequantize first)"
            ));
        }
    }
    Ok(TensorType::new(x.elem.clone(), shape))
}

fn squeeze(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = cx.get(0);
    let axes = axes_list(cx.op, "axes", &attrs.ints("axes")?, x.rank())?;
    for &a in &axes {
        if x.shape[a] != 1 {
            return Err(format!(
                "squeeze removes axis {a} of {x}, which has size {}, not 1",
                x.shape[a]
            ));
        }
    }
    let shape: Vec<usize> = (0..x.rank())
        .filter(|d| !axes.contains(d))
        .map(|d| x.shape[d])
        .collect();
    let elem = remap_axis(&x.elem, |axis| {
        if axes.contains(&axis) {
            Err(format!(
                "squeeze removes quantization axis {axis} of {x}; requantize to per-tensor first"
            ))
        } else {
            Ok(axis - axes.iter().filter(|&&a| a < axis).count())
        }
    })?;
    Ok(TensorType::new(elem, shape))
}

fn unsqueeze(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = cx.get(0);
    let raw = attrs.ints("axes")?;
    let out_rank = x.rank() + raw.len();
    let axes = axes_list(cx.op, "axes", &raw, out_rank)?;
    // Output position of every input axis.
    let kept: Vec<usize> = (0..out_rank).filter(|d| !axes.contains(d)).collect();
    let mut shape = vec![1; out_rank];
    for (i, &pos) in kept.iter().enumerate() {
        shape[pos] = x.shape[i];
    }
    let elem = remap_axis(&x.elem, |axis| Ok(kept.get(axis).copied().unwrap_or(axis)))?;
    Ok(TensorType::new(elem, shape))
}

// ---------------------------------------------------------------- integer ops

fn requantize(
    cx: &Cx<'_, '_>,
    attrs: &Attrs<'_>,
    declared: &TensorType,
) -> Result<TensorType, String> {
    let x = cx.get(0);
    if !matches!(x.elem, ElemType::Int(_) | ElemType::Quant(_)) {
        return Err(format!(
            "operand `x` of requantize must be an integer or quantized type, found {x}"
        ));
    }
    if !matches!(declared.elem, ElemType::Int(_) | ElemType::Quant(_)) {
        return Err(format!(
            "the result of requantize must be an integer or quantized type, found {}",
            declared.elem
        ));
    }
    let mult = attrs.ints("multiplier")?;
    let shift = attrs.ints("shift")?;
    let per_channel = mult.len() > 1 || shift.len() > 1;
    if per_channel {
        let axis = cx.axis(attrs, "axis", x.rank())?;
        let c = x.shape[axis];
        for (name, v) in [("multiplier", &mult), ("shift", &shift)] {
            if v.len() != 1 && v.len() != c {
                return Err(format!(
                    "attribute `{name}` of requantize must have 1 entry or one per channel ({c} along axis {axis} of {x}), found {}",
                    v.len()
                ));
            }
        }
    } else if mult.len() != 1 || shift.len() != 1 {
        return Err(format!(
            "attributes `multiplier` and `shift` of requantize need at least one entry, found {mult:?} and {shift:?}"
        ));
    }
    if let Some(m) = mult.iter().find(|&&m| i32::try_from(m).is_err()) {
        return Err(format!(
            "attribute `multiplier` of requantize holds {m}, which does not fit in i32"
        ));
    }
    if let Some(s) = shift.iter().find(|&&s| !(-31..=62).contains(&s)) {
        return Err(format!(
            "attribute `shift` of requantize holds {s}, outside -31..=62"
        ));
    }
    let (lo, hi) = declared.elem.code_range().expect("integer result");
    let min = attrs.opt_int("min")?;
    let max = attrs.opt_int("max")?;
    let (clo, chi) = (min.unwrap_or(lo).max(lo), max.unwrap_or(hi).min(hi));
    if clo > chi {
        return Err(format!(
            "the clamp of requantize (min {}, max {}) leaves no code of the result type {} (codes {lo}..={hi})",
            min.map_or("-".into(), |v| v.to_string()),
            max.map_or("-".into(), |v| v.to_string()),
            declared.elem
        ));
    }
    Ok(TensorType::new(declared.elem.clone(), x.shape.clone()))
}

/// Checks an integer operand's quantization is per-tensor, or per-axis along
/// `allowed_axis` (with `what` naming it) when given.
fn int_params(
    cx: &Cx<'_, '_>,
    i: usize,
    t: &TensorType,
    allowed_axis: Option<(usize, &str)>,
) -> Result<(), String> {
    let Some(p) = axis_params(&t.elem) else {
        return Ok(());
    };
    let ok =
        matches!(p, QuantParams::PerAxis { axis, .. } if Some(*axis) == allowed_axis.map(|a| a.0));
    if !ok {
        let want = match allowed_axis {
            Some((a, what)) => format!("per-tensor or per-axis along axis {a} ({what})"),
            None => "per-tensor".into(),
        };
        return Err(format!(
            "operand `{}` of {} must have {want} quantization, found {} in {t}",
            cx.name(i),
            cx.op,
            fmt_params(p)
        ));
    }
    Ok(())
}

fn i32_bias(cx: &Cx<'_, '_>, i: usize, len: usize, what: &str) -> Result<(), String> {
    if let Some(b) = cx.opt(i)
        && (b.elem != ElemType::I32 || b.shape != [len])
    {
        return Err(format!(
            "operand `{}` of {} must be i32[{len}] ({what}), found {b}",
            cx.name(i),
            cx.op
        ));
    }
    Ok(())
}

fn conv2d_int(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = cx.int_valued(0)?;
    let w = cx.int_valued(1)?;
    cx.rank(0, x, 4, "[N, C, H, W]")?;
    cx.rank(1, w, 4, "[M, C/group, kh, kw]")?;
    int_params(cx, 0, x, None)?;
    int_params(cx, 1, w, Some((0, "the output channels")))?;
    let c = conv_attrs(cx.op, attrs)?;
    let shape = conv_shape(cx, &c, x, w)?;
    i32_bias(cx, 2, shape[1], "one per output channel")?;
    Ok(TensorType::new(ElemType::I32, shape))
}

fn matmul_int(cx: &Cx<'_, '_>) -> Result<TensorType, String> {
    let a = cx.int_valued(0)?;
    let b = cx.int_valued(1)?;
    let shape = matmul_shape(cx.op, &a.shape, &b.shape)?;
    int_params(cx, 0, a, None)?;
    let last = b.rank() - 1;
    if b.rank() >= 2 {
        int_params(cx, 1, b, Some((last, "the columns, its last axis")))?;
    } else {
        int_params(cx, 1, b, None)?;
    }
    let n = if b.rank() >= 2 { b.shape[last] } else { 1 };
    i32_bias(cx, 2, n, "one per column of `b`")?;
    Ok(TensorType::new(ElemType::I32, shape))
}

fn threshold(
    cx: &Cx<'_, '_>,
    attrs: &Attrs<'_>,
    declared: &TensorType,
) -> Result<TensorType, String> {
    let x = cx.get(0);
    let t = cx.get(1);
    if !matches!(x.elem, ElemType::Int(_) | ElemType::Quant(_)) {
        return Err(format!(
            "operand `x` of threshold must be an integer or quantized type, found {x}"
        ));
    }
    let axis = cx.axis(attrs, "axis", x.rank())?;
    let c = x.shape[axis];
    if !matches!(t.elem, ElemType::Int(_)) || t.rank() != 2 || (t.shape[0] != c && t.shape[0] != 1)
    {
        return Err(format!(
            "operand `t` of threshold must be a plain integer tensor [C, K] or [1, K] with C = {c} (axis {axis} of {x}), found {t}"
        ));
    }
    let k = t.shape[1] as i64;
    let offset = attrs.int("offset")?;
    match &declared.elem {
        ElemType::Bipolar => {
            if k != 1 || offset != 0 {
                return Err(format!(
                    "threshold with a b1 result needs one threshold per channel (K = 1, found {k}) and offset 0 (found {offset})"
                ));
            }
        }
        ElemType::Int(_) | ElemType::Quant(_) => {
            let (lo, hi) = declared.elem.code_range().expect("integer result");
            let top = offset as i128 + k as i128;
            if (offset as i128) < lo as i128 || top > hi as i128 {
                return Err(format!(
                    "threshold results are codes {offset}..={top} (offset + 0..=K), which {} (codes {lo}..={hi}) does not hold",
                    declared.elem
                ));
            }
        }
        ElemType::F32 => {
            return Err(
                "the result of threshold must be an integer, quantized or b1 type, found f32"
                    .into(),
            );
        }
    }
    Ok(TensorType::new(declared.elem.clone(), x.shape.clone()))
}

/// `add`/`sub`/`mul`: two f32 operands, or two operands of one plain integer type.
/// An operand that is f32, a plain integer, b1 or a per-tensor quantized type: one whose
/// elements compare as values (a per-axis or blocked type's codes do not, under
/// different scales).
fn comparable<'a>(cx: &Cx<'a, '_>, i: usize) -> Result<&'a TensorType, String> {
    let t = cx.get(i);
    if let ElemType::Quant(q) = &t.elem
        && !matches!(q.params, QuantParams::PerTensor { .. })
    {
        return Err(format!(
            "operand `{}` of {} must be f32, integer or per-tensor quantized (codes under per-axis or blocked scales do not compare as values), found {t}",
            cx.name(i),
            cx.op
        ));
    }
    Ok(t)
}

/// Two operands of one element type (`b` of `a`'s), broadcast together.
fn same_elem_pair(cx: &Cx<'_, '_>, i: usize, j: usize) -> Result<Vec<usize>, String> {
    let (a, b) = (comparable(cx, i)?, comparable(cx, j)?);
    if a.elem != b.elem {
        return Err(format!(
            "operands `{}` and `{}` of {} must have one element type, found {a} and {b}",
            cx.name(i),
            cx.name(j),
            cx.op
        ));
    }
    broadcast(&a.shape, &b.shape)
        .map_err(|e| format!("operands of {} do not broadcast: {e}", cx.op))
}

fn compare(cx: &Cx<'_, '_>) -> Result<TensorType, String> {
    let shape = same_elem_pair(cx, 0, 1)?;
    Ok(TensorType::new(ElemType::U1, shape))
}

fn where_(cx: &Cx<'_, '_>) -> Result<TensorType, String> {
    let c = cx.boolean(0)?;
    let ab = same_elem_pair(cx, 1, 2)?;
    let shape =
        broadcast(&c.shape, &ab).map_err(|e| format!("operands of where do not broadcast: {e}"))?;
    Ok(TensorType::new(cx.get(1).elem.clone(), shape))
}

/// The axis attribute of an op that works along one axis of `x`, which must be neither
/// empty nor longer than `i32` indices reach.
fn index_axis(cx: &Cx<'_, '_>, attrs: &Attrs<'_>, x: &TensorType) -> Result<usize, String> {
    let axis = cx.axis(attrs, "axis", x.rank())?;
    let d = x.shape[axis];
    if d == 0 || d > i32::MAX as usize {
        return Err(format!(
            "axis {axis} of `x` ({x}) of {} must hold 1 to 2^31-1 elements (indices are i32)",
            cx.op
        ));
    }
    Ok(axis)
}

fn arg_reduce(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = comparable(cx, 0)?;
    let axis = index_axis(cx, attrs, x)?;
    let mut shape = x.shape.clone();
    if attrs.bool("keepdims")? {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    Ok(TensorType::new(ElemType::I32, shape))
}

fn top_k(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = comparable(cx, 0)?;
    let axis = index_axis(cx, attrs, x)?;
    let k = attrs.int("k")?;
    if k < 0 || k as u64 > x.shape[axis] as u64 {
        return Err(format!(
            "attribute `k` of {} must be in 0..={} (the length of axis {axis} of {x}), found {k}",
            cx.op, x.shape[axis]
        ));
    }
    let mut shape = x.shape.clone();
    shape[axis] = k as usize;
    let elem = if cx.op == Op::TopK {
        x.elem.clone()
    } else {
        ElemType::I32
    };
    Ok(TensorType::new(elem, shape))
}

fn one_hot(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = cx.get(0);
    if !matches!(x.elem, ElemType::Int(_)) {
        return Err(format!(
            "operand `indices` of one_hot must be a plain integer tensor, found {x}"
        ));
    }
    let depth = attrs.int("depth")?;
    if !(1..=MAX_SIZE).contains(&depth) {
        return Err(format!(
            "attribute `depth` of one_hot must be in 1..={MAX_SIZE}, found {depth}"
        ));
    }
    let axis = cx.axis(attrs, "axis", x.rank() + 1)?;
    let mut shape = x.shape.clone();
    shape.insert(axis, depth as usize);
    Ok(TensorType::new(ElemType::U1, shape))
}

fn int_or_f32_binary(cx: &Cx<'_, '_>) -> Result<TensorType, String> {
    let (a, b) = (cx.get(0), cx.get(1));
    let op = cx.op;
    let elem = match (&a.elem, &b.elem) {
        (ElemType::F32, ElemType::F32) => ElemType::F32,
        (ElemType::Int(x), ElemType::Int(y)) if x == y => a.elem.clone(),
        (ElemType::Int(_), ElemType::Int(_)) => {
            return Err(format!(
                "operands of {op} must have one integer type, found {a} and {b}"
            ));
        }
        _ => {
            return Err(format!(
                "operands of {op} must both be f32 or both of one plain integer type (quantized operands need dequantize or requantize first), found {a} and {b}"
            ));
        }
    };
    let shape = broadcast(&a.shape, &b.shape)
        .map_err(|e| format!("operands of {op} do not broadcast: {e}"))?;
    Ok(TensorType::new(elem, shape))
}

fn lookup(cx: &Cx<'_, '_>) -> Result<TensorType, String> {
    let x = cx.get(0);
    let t = cx.get(1);
    if !matches!(x.elem, ElemType::Int(_) | ElemType::Quant(_)) || x.elem.bits() > 8 {
        return Err(format!(
            "operand `x` of lookup must be an integer or quantized type of at most 8 bits, found {x}"
        ));
    }
    let per_tensor = match &t.elem {
        ElemType::Int(_) => true,
        ElemType::Quant(q) => matches!(q.params, QuantParams::PerTensor { .. }),
        _ => false,
    };
    let n = 1usize << x.elem.bits();
    if !per_tensor || t.shape != [n] {
        return Err(format!(
            "operand `table` of lookup must be a plain integer or per-tensor quantized tensor [{n}] (one entry per code of {}), found {t}",
            x.elem
        ));
    }
    Ok(TensorType::new(t.elem.clone(), x.shape.clone()))
}

fn word_bits(op: Op, attrs: &Attrs<'_>) -> Result<u32, String> {
    let wb = attrs.int("word_bits")?;
    if ![8, 16, 32].contains(&wb) {
        return Err(format!(
            "attribute `word_bits` of {op} must be 8, 16 or 32, found {wb}"
        ));
    }
    Ok(wb as u32)
}

fn bit_pack(cx: &Cx<'_, '_>, attrs: &Attrs<'_>) -> Result<TensorType, String> {
    let x = cx.int_valued(0)?;
    let axis = cx.axis(attrs, "axis", x.rank())?;
    let wb = word_bits(cx.op, attrs)? as usize;
    let b = x.elem.bits() as usize;
    let mut shape = x.shape.clone();
    shape[axis] = usize::try_from((x.shape[axis] as u128 * b as u128).div_ceil(wb as u128))
        .map_err(|_| format!("bit_pack of {x} gives a dimension too large"))?;
    Ok(TensorType::new(
        ElemType::Int(IntType::new(wb as u8, false)),
        shape,
    ))
}

fn bit_unpack(
    cx: &Cx<'_, '_>,
    attrs: &Attrs<'_>,
    declared: &TensorType,
) -> Result<TensorType, String> {
    let x = cx.get(0);
    let wb = match x.elem {
        ElemType::Int(t) if !t.signed && [8, 16, 32].contains(&t.bits) => t.bits as usize,
        _ => {
            return Err(format!(
                "operand `x` of bit_unpack must hold unsigned words (u8, u16 or u32), found {x}"
            ));
        }
    };
    if declared.elem.is_float() {
        return Err(
            "the result of bit_unpack must be an integer, quantized or b1 type, found f32".into(),
        );
    }
    let axis = cx.axis(attrs, "axis", x.rank())?;
    let count = attrs.int("count")?;
    let count = usize::try_from(count).map_err(|_| {
        format!("attribute `count` of bit_unpack must be non-negative, found {count}")
    })?;
    let b = declared.elem.bits() as usize;
    let words = count
        .checked_mul(b)
        .map(|bits| bits.div_ceil(wb))
        .unwrap_or(usize::MAX);
    if words != x.shape[axis] {
        return Err(format!(
            "bit_unpack of {count} codes of {b} bits needs {words} words of {wb} bits along axis {axis}, but {x} has {}",
            x.shape[axis]
        ));
    }
    let mut shape = x.shape.clone();
    shape[axis] = count;
    Ok(TensorType::new(declared.elem.clone(), shape))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::module::Attr;
    use crate::parse::parse_type;

    fn ty(s: &str) -> TensorType {
        parse_type(s).unwrap()
    }

    fn run(
        op: Op,
        attrs: &[(&str, Attr)],
        operands: &[&str],
        declared: &str,
    ) -> Result<TensorType, String> {
        let map: BTreeMap<String, Attr> = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let tys: Vec<TensorType> = operands.iter().map(|s| ty(s)).collect();
        let refs: Vec<&TensorType> = tys.iter().collect();
        infer(op, &Attrs::new(op, &map), &refs, &ty(declared))
    }

    fn shape_of(r: Result<TensorType, String>) -> Vec<usize> {
        r.unwrap().shape
    }

    #[test]
    fn matmul_rank1_promotion() {
        let mm = |a: &[usize], b: &[usize]| matmul_shape(Op::MatMul, a, b);
        assert_eq!(mm(&[3], &[3]).unwrap(), Vec::<usize>::new());
        assert_eq!(mm(&[3], &[3, 4]).unwrap(), vec![4]);
        assert_eq!(mm(&[2, 3], &[3]).unwrap(), vec![2]);
        assert_eq!(mm(&[5, 2, 3], &[3]).unwrap(), vec![5, 2]);
        assert_eq!(mm(&[3], &[7, 3, 4]).unwrap(), vec![7, 4]);
        assert_eq!(mm(&[2, 1, 2, 3], &[5, 3, 4]).unwrap(), vec![2, 5, 2, 4]);
        assert!(mm(&[2, 3], &[4, 5]).unwrap_err().contains("K = 3"));
        assert!(mm(&[2, 2, 3], &[3, 3, 4]).unwrap_err().contains("batch"));
        assert!(mm(&[], &[3]).is_err());
        assert_eq!(
            shape_of(run(Op::MatMul, &[], &["f32[3]", "f32[3,4]"], "f32[4]")),
            vec![4]
        );
    }

    #[test]
    fn conv_output_sizes() {
        let attrs = [
            ("strides", Attr::Ints(vec![2, 1])),
            ("pads", Attr::Ints(vec![1, 0, 1, 0])),
            ("dilations", Attr::Ints(vec![1, 2])),
            ("group", Attr::Int(2)),
        ];
        // H: (7 + 2 - 3) / 2 + 1 = 4; W: (9 - 2*(3-1) - 1) / 1 + 1 = 5.
        let r = run(
            Op::Conv2d,
            &attrs,
            &["f32[1,4,7,9]", "f32[6,2,3,3]", "f32[6]"],
            "f32[1,6,4,5]",
        );
        assert_eq!(r.unwrap(), ty("f32[1,6,4,5]"));
        // Wrong channels per group.
        let e = run(
            Op::Conv2d,
            &attrs,
            &["f32[1,4,7,9]", "f32[6,4,3,3]"],
            "f32[1,6,4,5]",
        )
        .unwrap_err();
        assert!(e.contains("C/group = 2"), "{e}");
        // Quantized weights into a float conv.
        let e = run(
            Op::Conv2d,
            &[],
            &["f32[1,1,3,3]", "q<i8, 0.1:0>[8,1,3,3]"],
            "f32[1,8,1,1]",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "operand `w` of conv2d must be f32, found q<i8, 0.1:0>[8,1,3,3]"
        );
        // Transposed: 2*(3-1) + 1 + 1*(3-1) + 1 - 1 - 1 = 6.
        let r = run(
            Op::ConvTranspose2d,
            &[
                ("strides", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![1, 1, 1, 1])),
                ("output_padding", Attr::Ints(vec![1, 1])),
            ],
            &["f32[1,4,3,3]", "f32[4,2,3,3]"],
            "f32[1,2,6,6]",
        );
        assert_eq!(r.unwrap().shape, vec![1, 2, 6, 6]);
        // Pools with ceil mode.
        let r = run(
            Op::MaxPool,
            &[
                ("kernel", Attr::Ints(vec![2, 2])),
                ("strides", Attr::Ints(vec![2, 2])),
                ("ceil_mode", Attr::Bool(true)),
            ],
            &["i8[1,1,5,5]"],
            "i8[1,1,3,3]",
        );
        assert_eq!(r.unwrap(), ty("i8[1,1,3,3]"));
    }

    #[test]
    fn transpose_remaps_quant_axis() {
        let r = run(
            Op::Transpose,
            &[("perm", Attr::Ints(vec![0, 2, 3, 1]))],
            &["q<i8, axis=1, [0.5:0, 0.25:0]>[1,2,3,4]"],
            "f32[]",
        );
        assert_eq!(r.unwrap(), ty("q<i8, axis=3, [0.5:0, 0.25:0]>[1,3,4,2]"));
        let r = run(
            Op::Transpose,
            &[("perm", Attr::Ints(vec![1, 0]))],
            &["q<u4, axis=0, [1.0:0, 2.0:1, 4.0:2]>[3,2]"],
            "f32[]",
        );
        assert_eq!(r.unwrap(), ty("q<u4, axis=1, [1.0:0, 2.0:1, 4.0:2]>[2,3]"));
    }

    #[test]
    fn transpose_permutes_blocked_params() {
        // [2, 4] blocked along axis 1 by 2: parameter tensor [2, 2] = [[a, b], [c, d]].
        let r = run(
            Op::Transpose,
            &[("perm", Attr::Ints(vec![1, 0]))],
            &["q<i4, axis=1, block=2, [1.0:0, 2.0:0, 3.0:0, 4.0:0]>[2,4]"],
            "f32[]",
        );
        assert_eq!(
            r.unwrap(),
            ty("q<i4, axis=0, block=2, [1.0:0, 3.0:0, 2.0:0, 4.0:0]>[4,2]")
        );
    }

    #[test]
    fn squeeze_unsqueeze_shift_quant_axis() {
        let r = run(
            Op::Squeeze,
            &[("axes", Attr::Ints(vec![0]))],
            &["q<i8, axis=1, [0.5:0, 0.25:0]>[1,2]"],
            "f32[]",
        );
        assert_eq!(r.unwrap(), ty("q<i8, axis=0, [0.5:0, 0.25:0]>[2]"));
        let r = run(
            Op::Unsqueeze,
            &[("axes", Attr::Ints(vec![0, -1]))],
            &["q<i8, axis=0, [0.5:0, 0.25:0]>[2]"],
            "f32[]",
        );
        assert_eq!(r.unwrap(), ty("q<i8, axis=1, [0.5:0, 0.25:0]>[1,2,1]"));
        let e = run(
            Op::Squeeze,
            &[("axes", Attr::Ints(vec![0]))],
            &["q<i8, axis=0, [0.5:0]>[1,2]"],
            "f32[]",
        )
        .unwrap_err();
        assert!(e.contains("removes quantization axis 0"), "{e}");
    }

    #[test]
    fn reshape_keeps_quant_axis_only_when_prefix_unchanged() {
        let x = "q<i8, axis=1, [0.5:0, 0.25:0]>[1,2,3,4]";
        let r = run(
            Op::Reshape,
            &[("shape", Attr::Ints(vec![1, 2, 12]))],
            &[x],
            "f32[]",
        );
        assert_eq!(r.unwrap(), ty("q<i8, axis=1, [0.5:0, 0.25:0]>[1,2,12]"));
        let e = run(
            Op::Reshape,
            &[("shape", Attr::Ints(vec![2, 12]))],
            &[x],
            "f32[]",
        )
        .unwrap_err();
        assert!(e.contains("quantization axis 1"), "{e}");
        let r = run(Op::Flatten, &[("axis", Attr::Int(2))], &[x], "f32[]");
        assert!(r.is_err());
    }

    #[test]
    fn slice_lengths() {
        let run_slice = |starts: i64, ends: i64, step: i64| {
            run(
                Op::Slice,
                &[
                    ("starts", Attr::Ints(vec![starts])),
                    ("ends", Attr::Ints(vec![ends])),
                    ("axes", Attr::Ints(vec![0])),
                    ("steps", Attr::Ints(vec![step])),
                ],
                &["f32[10]"],
                "f32[]",
            )
            .unwrap()
            .shape[0]
        };
        assert_eq!(run_slice(0, 10, 1), 10);
        assert_eq!(run_slice(1, 100, 3), 3); // 1, 4, 7
        assert_eq!(run_slice(-1, -100, -1), 10);
        assert_eq!(run_slice(-3, 0, -2), 4); // 7, 5, 3, 1
        assert_eq!(run_slice(5, 2, 1), 0);
        assert_eq!(run_slice(i64::MIN, i64::MAX, 1), 10);
    }

    #[test]
    fn bit_pack_and_unpack_shapes() {
        let r = run(
            Op::BitPack,
            &[("axis", Attr::Int(1)), ("word_bits", Attr::Int(32))],
            &["q<i4, 1.0:0>[2,9]"],
            "f32[]",
        );
        assert_eq!(r.unwrap(), ty("u32[2,2]"));
        let r = run(
            Op::BitUnpack,
            &[("axis", Attr::Int(1)), ("count", Attr::Int(9))],
            &["u32[2,2]"],
            "q<i4, 1.0:0>[2,9]",
        );
        assert_eq!(r.unwrap(), ty("q<i4, 1.0:0>[2,9]"));
        let r = run(
            Op::BitUnpack,
            &[("axis", Attr::Int(1)), ("count", Attr::Int(17))],
            &["u32[2,2]"],
            "q<i4, 1.0:0>[2,17]",
        );
        assert!(r.unwrap_err().contains("needs 3 words"));
    }

    #[test]
    fn wrong_operand_count_is_an_error_not_a_panic() {
        for &op in Op::ALL {
            let e = run(op, &[], &[], "f32[1]");
            if op.info().operand_count_range().0 > 0 {
                assert!(e.unwrap_err().contains("operands"), "{op}");
            }
        }
    }
}
