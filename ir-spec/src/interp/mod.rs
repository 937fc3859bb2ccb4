//! The reference interpreter: the executable definition of every op.
//!
//! It is written for clarity, not speed: every op is a direct transcription of its
//! description in the op table (`ops.rs`). Float ops that sum many products (conv,
//! matmul, gemm, pooling, reductions) accumulate in f64 and round once to f32; other
//! float ops compute in f32. Integer ops are exact (i64/i128, with the documented
//! wrapping to i32), and every rounding is the one the op names.
//!
//! Values of integer-valued types (plain integers, quantized codes, bipolar +-1) are held
//! as `i64` codes; f32 values as `f32`. The element types (and therefore scales and zero
//! points) come from the module: [`eval_node`] reads the operand and result types with
//! `module.ty(..)`.
//!
//! The interpreter never panics on a module the verifier accepts; anything it cannot
//! evaluate (bad attributes, inconsistent shapes, wrong element kinds) is an error that
//! names the node.
//!
//! Where an op's description leaves a case open, the interpreter decides as follows
//! (each is also stated at the op's implementation):
//! - `pad` with negative amounts crops first; the positive amounts then pad the cropped
//!   tensor (as ONNX Runtime does), so `reflect`/`edge`/`wrap` read the cropped tensor.
//! - `requantize` clamps to the result's narrow-aware code range (`QuantType::qmin/qmax`),
//!   intersected with `min`/`max`; an empty range is an error.
//! - `threshold` results must be codes of the result type (checked, not wrapped).
//! - `max_pool`/`avg_pool` windows that cover no input element are an error.
//! - `cast` to `b1` accepts only +-1 codes; f32 cannot be cast to `b1`.
//! - `resize` also accepts integer codes in `nearest` mode; `linear` needs f32.
//! - `softmax` is computed in f64 and rounded once, like the other reductions.
//!
//! Layout: this file holds [`Tensor`], [`run`] and the dispatch over [`Op`]; the ops
//! live by family in `float.rs` (elementwise, matmul, reductions), `nn.rs` (conv,
//! pooling, resize), `movement.rs` (reshape, transpose, concat, pad, slice, ...),
//! `logic.rs` (comparisons, booleans, where, arg_max/arg_min, top_k, one_hot) and
//! `quant.rs` (cast, quantization and integer ops, binarization, bit packing).

use std::fmt;

use crate::module::{ConstData, Module, Node, NodeId, ValueDef, ValueId};
use crate::ops::{Attrs, Op};
use crate::types::{ElemType, TensorType};

mod float;
mod logic;
mod movement;
mod nn;
mod quant;

/// The elements of a tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Values of `f32` tensors.
    F32(Vec<f32>),
    /// Codes of integer-valued tensors (integers, quantized codes, bipolar +-1).
    Int(Vec<i64>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::Int(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `"f32"` or `"integer"`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "f32",
            TensorData::Int(_) => "integer",
        }
    }

    /// The elements at the given flat indices (which must be in range).
    pub(crate) fn gather(&self, idx: &[usize]) -> TensorData {
        match self {
            TensorData::F32(v) => TensorData::F32(idx.iter().map(|&i| v[i]).collect()),
            TensorData::Int(v) => TensorData::Int(idx.iter().map(|&i| v[i]).collect()),
        }
    }
}

/// A tensor value: shape and row-major data (`data.len()` is the product of `shape`).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    /// An f32 tensor.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `shape` (use [`Tensor::new`] to check).
    pub fn f32(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Tensor {
        Tensor::new(shape, TensorData::F32(data)).expect("tensor data matches its shape")
    }

    /// An integer-valued tensor (codes).
    ///
    /// # Panics
    /// If `data.len()` is not the product of `shape` (use [`Tensor::new`] to check).
    pub fn int(shape: impl Into<Vec<usize>>, data: Vec<i64>) -> Tensor {
        Tensor::new(shape, TensorData::Int(data)).expect("tensor data matches its shape")
    }

    /// A tensor, or an error when the data length does not match the shape.
    pub fn new(shape: impl Into<Vec<usize>>, data: TensorData) -> Result<Tensor, String> {
        let shape = shape.into();
        let n = checked_numel(&shape)?;
        if n != data.len() {
            return Err(format!(
                "shape {shape:?} has {n} elements but the data has {}",
                data.len()
            ));
        }
        Ok(Tensor { shape, data })
    }

    /// A scalar f32 tensor (shape `[]`).
    pub fn scalar_f32(x: f32) -> Tensor {
        Tensor::f32(Vec::new(), vec![x])
    }

    /// A scalar integer-valued tensor (shape `[]`).
    pub fn scalar_int(x: i64) -> Tensor {
        Tensor::int(Vec::new(), vec![x])
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn is_float(&self) -> bool {
        matches!(self.data, TensorData::F32(_))
    }

    /// The f32 elements, if this is an f32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::Int(_) => None,
        }
    }

    /// The integer codes, if this is an integer-valued tensor.
    pub fn as_int(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::Int(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }

    /// The f32 elements, if this is an f32 tensor.
    pub fn into_f32(self) -> Option<Vec<f32>> {
        match self.data {
            TensorData::F32(v) => Some(v),
            TensorData::Int(_) => None,
        }
    }

    /// The integer codes, if this is an integer-valued tensor.
    pub fn into_int(self) -> Option<Vec<i64>> {
        match self.data {
            TensorData::Int(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }

    /// The elements as f64 (codes converted exactly up to 2^53), whatever the kind.
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Int(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    /// Whether this tensor can be a value of type `ty`: same shape, the data kind the
    /// element type is held as, and (for integer-valued types) every code admitted.
    pub fn check_type(&self, ty: &TensorType) -> Result<(), String> {
        if self.shape != ty.shape {
            return Err(format!(
                "has shape {:?}, but its type {ty} has shape {:?}",
                self.shape, ty.shape
            ));
        }
        if self.data.len() != self.numel() {
            return Err(format!(
                "has shape {:?} but {} elements",
                self.shape,
                self.data.len()
            ));
        }
        match (&self.data, ty.elem.is_float()) {
            (TensorData::F32(_), true) => Ok(()),
            (TensorData::Int(v), false) => match v.iter().find(|&&c| !ty.elem.admits(c)) {
                Some(c) => Err(format!("holds code {c}, which type {ty} does not admit")),
                None => Ok(()),
            },
            (d, _) => Err(format!("holds {} data, but its type is {ty}", d.kind())),
        }
    }
}

/// An interpreter error. When `node` is `Some`, `message` starts with the node's result
/// and op (`%v3 = conv2d: ...`), so that the error reads on its own.
#[derive(Clone, Debug, PartialEq)]
pub struct InterpError {
    pub node: Option<NodeId>,
    pub message: String,
}

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InterpError {}

fn module_error(message: String) -> InterpError {
    InterpError {
        node: None,
        message,
    }
}

/// Runs `module` on `inputs` (one per module input, in order) and returns its outputs.
pub fn run(module: &Module, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
    run_with(module, inputs, &mut |_, _| {})
}

/// Like [`run`], calling `observe` with every node's result right after the node runs.
pub fn run_with(
    module: &Module,
    inputs: &[Tensor],
    observe: &mut dyn FnMut(NodeId, &Tensor),
) -> Result<Vec<Tensor>, InterpError> {
    let nvalues = module.values.len();
    let spell = |id: ValueId| match module.values.get(id.index()) {
        Some(v) => v.spelling(),
        None => format!("%<invalid value {}>", id.0),
    };
    if inputs.len() != module.inputs.len() {
        return Err(module_error(format!(
            "module `{}` takes {} inputs, {} given",
            module.name,
            module.inputs.len(),
            inputs.len()
        )));
    }
    let mut vals: Vec<Option<Tensor>> = vec![None; nvalues];
    for (&id, t) in module.inputs.iter().zip(inputs) {
        let Some(v) = module.values.get(id.index()) else {
            return Err(module_error(format!("input {} does not exist", spell(id))));
        };
        t.check_type(&v.ty)
            .map_err(|e| module_error(format!("input {}: {e}", spell(id))))?;
        vals[id.index()] = Some(t.clone());
    }

    // Free each value after its last use (outputs are kept).
    let mut last_use: Vec<Option<usize>> = vec![None; nvalues];
    for (ni, n) in module.nodes.iter().enumerate() {
        for &o in &n.operands {
            if let Some(l) = last_use.get_mut(o.index()) {
                *l = Some(ni);
            }
        }
    }
    for &o in &module.outputs {
        if let Some(l) = last_use.get_mut(o.index()) {
            *l = Some(usize::MAX);
        }
    }

    for (ni, node) in module.nodes.iter().enumerate() {
        let nid = NodeId(ni as u32);
        let fail = |msg: String| InterpError {
            node: Some(nid),
            message: format!("{} = {}: {msg}", spell(node.result), node.op),
        };
        for &o in &node.operands {
            if o.index() >= nvalues {
                return Err(fail(format!("operand {} does not exist", spell(o))));
            }
            if vals[o.index()].is_none() {
                vals[o.index()] = Some(load_const(module, o).map_err(&fail)?);
            }
        }
        let ops: Vec<&Tensor> = node
            .operands
            .iter()
            .filter_map(|o| vals[o.index()].as_ref())
            .collect();
        let out = eval_node(module, node, &ops).map_err(&fail)?;
        observe(nid, &out);
        if node.result.index() >= nvalues {
            return Err(fail("the result does not exist".into()));
        }
        vals[node.result.index()] = Some(out);
        for &o in &node.operands {
            if last_use[o.index()] == Some(ni) {
                vals[o.index()] = None;
            }
        }
    }

    module
        .outputs
        .iter()
        .map(|&o| match vals.get(o.index()) {
            Some(Some(t)) => Ok(t.clone()),
            Some(None) => {
                load_const(module, o).map_err(|e| module_error(format!("output {}: {e}", spell(o))))
            }
            None => Err(module_error(format!("output {} does not exist", spell(o)))),
        })
        .collect()
}

/// The tensor of a constant operand, or why there is none.
fn load_const(module: &Module, id: ValueId) -> Result<Tensor, String> {
    let v = module.value(id);
    match &v.def {
        ValueDef::Const(_) => {
            let t = const_tensor(module, id).ok_or_else(|| {
                format!(
                    "constant {} does not match its type {} (element count or kind)",
                    v.spelling(),
                    v.ty
                )
            })?;
            t.check_type(&v.ty)
                .map_err(|e| format!("constant {} {e}", v.spelling()))?;
            Ok(t)
        }
        ValueDef::Input | ValueDef::Node(_) => Err(format!(
            "operand {} is used before it is defined",
            v.spelling()
        )),
    }
}

/// The value of constant `id`, or `None` if `id` is not a constant or its data does not
/// match its type (element count, or f32 data for an integer-valued type and vice versa).
pub fn const_tensor(module: &Module, id: ValueId) -> Option<Tensor> {
    let v = module.values.get(id.index())?;
    let ValueDef::Const(data) = &v.def else {
        return None;
    };
    let data = match (data, v.ty.elem.is_float()) {
        (ConstData::F32(d), true) => TensorData::F32(d.clone()),
        (ConstData::Int(d), false) => TensorData::Int(d.clone()),
        // An empty list parses as whatever the type wants.
        (ConstData::F32(d), false) if d.is_empty() => TensorData::Int(Vec::new()),
        (ConstData::Int(d), true) if d.is_empty() => TensorData::F32(Vec::new()),
        _ => return None,
    };
    Tensor::new(v.ty.shape.clone(), data).ok()
}

/// Evaluates one node on its operand values. The element types of operands and result
/// (scales, zero points, storage) are read from `module`. The operands must match their
/// declared types in shape and kind; the result is checked against the declared type's
/// shape and kind.
pub fn eval_node(module: &Module, node: &Node, operands: &[&Tensor]) -> Result<Tensor, String> {
    let info = node.op.info();
    let (min, max) = info.operand_count_range();
    let n = node.operands.len();
    if n < min || max.is_some_and(|m| n > m) {
        return Err(format!(
            "{n} operands given, {} takes {}",
            node.op,
            count_text(min, max)
        ));
    }
    if operands.len() != n {
        return Err(format!(
            "the node has {n} operands but {} values were supplied",
            operands.len()
        ));
    }
    let ty_of = |id: ValueId| {
        module
            .values
            .get(id.index())
            .map(|v| &v.ty)
            .ok_or_else(|| format!("value {} does not exist", id.0))
    };
    let mut tys = Vec::with_capacity(n);
    for (i, (&id, t)) in node.operands.iter().zip(operands).enumerate() {
        let ty = ty_of(id)?;
        check_shape_kind(t, ty).map_err(|e| format!("operand {i} {e}"))?;
        tys.push(ty);
    }
    let out_ty = ty_of(node.result)?;
    for ty in tys.iter().copied().chain([out_ty]) {
        if let Some(st) = ty.elem.storage()
            && !st.is_valid()
        {
            return Err(format!("type {ty} has an invalid storage width"));
        }
    }
    let cx = Cx {
        attrs: Attrs::new(node.op, &node.attrs),
        ins: operands,
        tys,
        out: out_ty,
    };
    let t = match node.op {
        Op::Conv2d => nn::conv2d(&cx),
        Op::ConvTranspose2d => nn::conv_transpose2d(&cx),
        Op::MatMul => float::matmul(&cx),
        Op::Gemm => float::gemm(&cx),
        Op::Add if !cx.elem(0).is_float() => quant::int_binary(&cx, i128::wrapping_add),
        Op::Sub if !cx.elem(0).is_float() => quant::int_binary(&cx, i128::wrapping_sub),
        Op::Mul if !cx.elem(0).is_float() => quant::int_binary(&cx, i128::wrapping_mul),
        Op::Add => float::binary(&cx, |a, b| a + b),
        Op::Sub => float::binary(&cx, |a, b| a - b),
        Op::Mul => float::binary(&cx, |a, b| a * b),
        Op::Div => float::binary(&cx, |a, b| a / b),
        Op::Pow => float::binary(&cx, f32::powf),
        Op::Sqrt => float::unary(&cx, f32::sqrt),
        Op::Exp => float::unary(&cx, f32::exp),
        Op::Relu => float::unary(&cx, |x| if x < 0.0 { 0.0 } else { x }),
        Op::Clip => float::clip(&cx),
        Op::LeakyRelu => float::leaky_relu(&cx),
        Op::Sigmoid => float::unary(&cx, |x| 1.0 / (1.0 + (-x).exp())),
        Op::HardSigmoid => float::hard_sigmoid(&cx),
        Op::HardSwish => float::unary(&cx, |x| x * float::clamp01(x / 6.0 + 0.5)),
        Op::Silu => float::unary(&cx, |x| x * (1.0 / (1.0 + (-x).exp()))),
        Op::Softmax => float::softmax(&cx),
        Op::Sign => float::unary(&cx, float::sign),
        Op::Abs => float::unary(&cx, f32::abs),
        Op::Neg => float::unary(&cx, |x| -x),
        Op::Floor => float::unary(&cx, f32::floor),
        Op::Ceil => float::unary(&cx, f32::ceil),
        Op::Round => float::unary(&cx, f32::round_ties_even),
        Op::Log => float::unary(&cx, f32::ln),
        Op::Tanh => float::unary(&cx, f32::tanh),
        Op::Erf => float::unary(&cx, float::erf),
        Op::Max if !cx.elem(0).is_float() => logic::int_extreme(&cx, true),
        Op::Min if !cx.elem(0).is_float() => logic::int_extreme(&cx, false),
        Op::Max => float::binary(&cx, float::max),
        Op::Min => float::binary(&cx, float::min),
        Op::Equal => logic::compare(&cx, logic::Cmp::Eq),
        Op::Less => logic::compare(&cx, logic::Cmp::Lt),
        Op::LessOrEqual => logic::compare(&cx, logic::Cmp::Le),
        Op::Not => logic::not(&cx),
        Op::And => logic::logic(&cx, |a, b| a && b),
        Op::Or => logic::logic(&cx, |a, b| a || b),
        Op::Xor => logic::logic(&cx, |a, b| a != b),
        Op::Where => logic::where_(&cx),
        Op::BatchNorm => float::batch_norm(&cx),
        Op::MaxPool => nn::max_pool(&cx),
        Op::AvgPool => nn::avg_pool(&cx),
        Op::GlobalAvgPool => float::global_avg_pool(&cx),
        Op::ReduceMean => float::reduce(&cx, float::Reduce::Mean),
        Op::ReduceSum => float::reduce(&cx, float::Reduce::Sum),
        Op::ReduceMax => float::reduce(&cx, float::Reduce::Max),
        Op::ReduceMin => float::reduce(&cx, float::Reduce::Min),
        Op::ReduceProd => float::reduce(&cx, float::Reduce::Prod),
        Op::ArgMax => logic::arg_reduce(&cx, true),
        Op::ArgMin => logic::arg_reduce(&cx, false),
        Op::TopK => logic::top_k(&cx, true),
        Op::TopKIndices => logic::top_k(&cx, false),
        Op::OneHot => logic::one_hot(&cx),
        Op::Resize => nn::resize(&cx),
        Op::Reshape => movement::reshape(&cx),
        Op::Flatten => movement::flatten(&cx),
        Op::Transpose => movement::transpose(&cx),
        Op::Concat => movement::concat(&cx),
        Op::Pad => movement::pad(&cx),
        Op::Slice => movement::slice(&cx),
        Op::Squeeze => movement::squeeze(&cx),
        Op::Unsqueeze => movement::unsqueeze(&cx),
        Op::Cast => quant::cast(&cx),
        Op::Quantize => quant::quantize(&cx),
        Op::Dequantize => quant::dequantize(&cx),
        Op::FakeQuant => quant::fake_quant(&cx),
        Op::Trunc => quant::trunc(&cx),
        Op::Requantize => quant::requantize(&cx),
        Op::Conv2dInt => quant::conv2d_int(&cx),
        Op::MatMulInt => quant::matmul_int(&cx),
        Op::Binarize => quant::binarize(&cx),
        Op::Threshold => quant::threshold(&cx),
        Op::Lookup => quant::lookup(&cx),
        Op::BitPack => quant::bit_pack(&cx),
        Op::BitUnpack => quant::bit_unpack(&cx),
    }?;
    if t.shape != out_ty.shape {
        return Err(format!(
            "computed shape {:?}, but the result type {out_ty} says {:?}",
            t.shape, out_ty.shape
        ));
    }
    if t.is_float() != out_ty.elem.is_float() {
        return Err(format!(
            "computed {} data, but the result type is {out_ty}",
            t.data.kind()
        ));
    }
    Ok(t)
}

fn count_text(min: usize, max: Option<usize>) -> String {
    match max {
        Some(m) if m == min => format!("{min}"),
        Some(m) => format!("{min} to {m}"),
        None => format!("at least {min}"),
    }
}

fn check_shape_kind(t: &Tensor, ty: &TensorType) -> Result<(), String> {
    if t.shape != ty.shape {
        return Err(format!(
            "has shape {:?}, but its type {ty} has shape {:?}",
            t.shape, ty.shape
        ));
    }
    if t.data.len() != t.numel() {
        return Err(format!(
            "has shape {:?} but {} elements",
            t.shape,
            t.data.len()
        ));
    }
    if t.is_float() != ty.elem.is_float() {
        return Err(format!(
            "holds {} data, but its type is {ty}",
            t.data.kind()
        ));
    }
    Ok(())
}

/// Product of a shape's dimensions, or an error on overflow.
pub(crate) fn checked_numel(shape: &[usize]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))
}

/// What an op implementation sees: its operands with their declared types, its
/// attributes and its declared result type.
pub(crate) struct Cx<'a> {
    pub attrs: Attrs<'a>,
    pub ins: &'a [&'a Tensor],
    pub tys: Vec<&'a TensorType>,
    pub out: &'a TensorType,
}

impl<'a> Cx<'a> {
    /// Operand `i` (present: the operand count was checked against the op table).
    pub fn t(&self, i: usize) -> &'a Tensor {
        self.ins[i]
    }

    /// Optional operand `i`.
    pub fn opt(&self, i: usize) -> Option<&'a Tensor> {
        self.ins.get(i).copied()
    }

    pub fn ty(&self, i: usize) -> &'a TensorType {
        self.tys[i]
    }

    pub fn elem(&self, i: usize) -> &'a ElemType {
        &self.tys[i].elem
    }

    /// The f32 data of operand `i`.
    pub fn f32(&self, i: usize) -> Result<&'a [f32], String> {
        self.ins[i].as_f32().ok_or_else(|| {
            format!(
                "operand {i} must be f32, found {}",
                self.tys.get(i).map_or("?".to_string(), |t| t.to_string())
            )
        })
    }

    /// The integer codes of operand `i`.
    pub fn int(&self, i: usize) -> Result<&'a [i64], String> {
        self.ins[i]
            .as_int()
            .ok_or_else(|| format!("operand {i} must be integer-valued, found f32"))
    }

    pub fn shape(&self, i: usize) -> &'a [usize] {
        &self.ins[i].shape
    }
}

/// Advances a row-major multi-index; returns false after the last one.
pub(crate) fn next_index(idx: &mut [usize], shape: &[usize]) -> bool {
    for d in (0..shape.len()).rev() {
        idx[d] += 1;
        if idx[d] < shape[d] {
            return true;
        }
        idx[d] = 0;
    }
    false
}

/// `(outer, dim, inner)`: the sizes before, at and after `axis`.
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// A spatial attribute (`strides`, `pads`, ...) with exactly `n` non-negative entries.
pub(crate) fn usizes_n(cx: &Cx<'_>, name: &str, n: usize) -> Result<Vec<usize>, String> {
    let v = cx.attrs.usizes(name)?;
    if v.len() != n {
        return Err(format!(
            "attribute `{name}` must have {n} entries, found {}",
            v.len()
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests;
