//! The importer's state and what an op handler sees of it ([`NodeCx`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{AttributeProto, NodeProto};
use qcc_ir::interp::{Tensor, TensorData};
use qcc_ir::print::sanitize_name;
use qcc_ir::{
    Attr, Attrs, ConstData, ElemType, IntType, Module, Op, TensorType, ValueDef, ValueId,
};

use super::tensor::{self, CData, CTensor, DType, DataDir};

/// What an ONNX value name stands for.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    /// An import-time constant.
    Const(Rc<CTensor>),
    /// An IR value (a run-time input, a node result or an IR constant); `bound` is the
    /// value given for a graph input in [`super::ImportOptions::bindings`].
    Ir {
        id: ValueId,
        bound: Option<Rc<CTensor>>,
    },
    /// A value qcc cannot represent; using it is an error with this message.
    Unusable(String),
}

pub(crate) struct Importer<'a> {
    pub m: Module,
    pub vals: HashMap<String, Val>,
    pub warnings: Vec<String>,
    /// Where the node being imported came from (its ONNX name).
    pub loc: String,
    names: HashSet<String>,
    /// IR constants made from import-time constants, by ONNX name and IR type.
    cache: HashMap<(String, String), ValueId>,
    pub base_dir: Option<&'a Path>,
}

impl<'a> Importer<'a> {
    pub fn new(m: Module, base_dir: Option<&'a Path>) -> Self {
        Importer {
            m,
            vals: HashMap::new(),
            warnings: Vec::new(),
            loc: String::new(),
            names: HashSet::new(),
            cache: HashMap::new(),
            base_dir,
        }
    }

    /// A value name not used yet, made from `base` (sanitized).
    pub fn fresh(&mut self, base: &str) -> String {
        let base = sanitize_name(base);
        let mut name = base.clone();
        let mut i = 1;
        while self.names.contains(&name) {
            name = format!("{base}.{i}");
            i += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// An IR constant of type `ty` holding `c`'s values, shared between uses of the same
    /// ONNX value with the same type.
    pub fn const_value(
        &mut self,
        key: &str,
        ty: TensorType,
        c: &CTensor,
    ) -> Result<ValueId, String> {
        let cache_key = (key.to_string(), ty.to_string());
        if let Some(&id) = self.cache.get(&cache_key) {
            return Ok(id);
        }
        let data = match (&c.data, ty.elem.is_float()) {
            (CData::F(v), true) => ConstData::F32(v.clone()),
            (CData::I(v), true) => ConstData::F32(v.iter().map(|&x| x as f32).collect()),
            (CData::I(v), false) => {
                if let Some(bad) = v.iter().find(|&&x| !ty.elem.admits(x)) {
                    return Err(format!(
                        "constant `{key}` holds {bad}, which {} cannot hold",
                        ty.elem
                    ));
                }
                ConstData::Int(v.clone())
            }
            (CData::F(_), false) => {
                return Err(format!(
                    "constant `{key}` holds floats, but an integer type ({}) is needed",
                    ty.elem
                ));
            }
        };
        if ty.numel() != data.len() {
            return Err(format!(
                "constant `{key}` has {} elements, its type {ty} needs {}",
                data.len(),
                ty.numel()
            ));
        }
        let name = self.fresh(key);
        let id = self.m.add_const(name, ty, data);
        self.cache.insert(cache_key, id);
        Ok(id)
    }

    /// The IR type an import-time constant takes by default: f32 for float32, its
    /// integer type for integers (int64 as int32 when the values fit).
    pub fn default_type(c: &CTensor) -> Result<TensorType, String> {
        let elem = match c.dtype {
            DType::F32 => ElemType::F32,
            DType::I64 | DType::U64 => {
                let v = c.to_i64()?;
                if v.iter().all(|&x| i32::try_from(x).is_ok()) {
                    ElemType::I32
                } else {
                    return Err(
                        "an int64 tensor with values beyond int32 cannot be an IR value".into(),
                    );
                }
            }
            d => match d.int_type() {
                Some(t) => ElemType::Int(t),
                None => {
                    return Err(format!(
                        "element type {} is not supported by qcc's IR (only float32 and integers)",
                        d.name()
                    ));
                }
            },
        };
        Ok(TensorType::new(elem, c.shape.clone()))
    }

    /// The IR value for graph output `name`.
    pub fn output_value(&mut self, name: &str) -> Result<ValueId, String> {
        match self.vals.get(name).cloned() {
            None => Err("no node produces it".into()),
            Some(Val::Ir { id, .. }) => Ok(id),
            Some(Val::Const(c)) => {
                let ty = Self::default_type(&c)?;
                self.const_value(name, ty, &c)
            }
            Some(Val::Unusable(m)) => Err(m),
        }
    }

    /// Gives node results that are graph outputs the output's ONNX name where it is
    /// free (Identity and dropped no-ops can leave them under an earlier name).
    pub fn name_outputs(&mut self, names: &[String]) {
        for (k, name) in names.iter().enumerate() {
            let id = self.m.outputs[k];
            let want = sanitize_name(name);
            if self.m.value(id).name == want
                || !matches!(self.m.value(id).def, ValueDef::Node(_))
                || self.m.outputs.iter().filter(|&&o| o == id).count() > 1
            {
                continue;
            }
            if let Some(other) = self.m.values.iter().position(|v| v.name == want) {
                if self.m.outputs.contains(&ValueId(other as u32)) {
                    continue;
                }
                let fresh = self.fresh(&want);
                self.m.values[other].name = fresh;
            }
            self.m.value_mut(id).name = want;
        }
    }

    /// Appends `op(operands)`, with the result type from the type rules (`elem` is the
    /// result element type for ops whose producer chooses it), and folds it into a
    /// constant when every operand is constant.
    pub fn emit(
        &mut self,
        op: Op,
        operands: Vec<ValueId>,
        attrs: BTreeMap<String, Attr>,
        elem: Option<ElemType>,
        name: &str,
    ) -> Result<ValueId, String> {
        let ty = {
            let tys: Vec<&TensorType> = operands.iter().map(|&o| self.m.ty(o)).collect();
            let declared = TensorType::new(elem.unwrap_or(ElemType::F32), Vec::<usize>::new());
            qcc_ir::typing::infer(op, &Attrs::new(op, &attrs), &tys, &declared)?
        };
        if super::checked_numel(&ty.shape).is_none() {
            return Err(format!(
                "the {} result would have shape {:?}: more than 2^32 elements (or a count \
                 that overflows); qcc takes tensors of at most {} elements",
                op.name(),
                ty.shape,
                super::MAX_ELEMENTS
            ));
        }
        let vname = self.fresh(name);
        let id = self.m.add_node(op, operands, attrs, vname, ty);
        let last = self.m.nodes.len() - 1;
        self.m.nodes[last].loc = Some(self.loc.clone());
        let folded = crate::passes::fold_constants::fold_node(&self.m, &self.m.nodes[last])?;
        if let Some(t) = folded {
            self.m.nodes.pop();
            let data = match t.data {
                TensorData::F32(v) => ConstData::F32(v),
                TensorData::Int(v) => ConstData::Int(v),
            };
            self.m.value_mut(id).def = ValueDef::Const(data);
        }
        Ok(id)
    }
}

/// What an op handler sees: the node, its inputs and attributes, and the module being
/// built. Errors are plain messages; the importer adds the node's name and op.
pub struct NodeCx<'i, 'a> {
    pub(crate) imp: &'i mut Importer<'a>,
    pub node: &'i NodeProto,
    /// The opset version of the node's domain.
    pub opset: i64,
    pub name: String,
}

fn attr_kind(a: &AttributeProto) -> AttributeType {
    match a.type_.enum_value() {
        Ok(AttributeType::UNDEFINED) | Err(_) => {
            // Old exporters leave the type out: read it from the field that is set.
            if !a.ints.is_empty() {
                AttributeType::INTS
            } else if !a.floats.is_empty() {
                AttributeType::FLOATS
            } else if a.t.is_some() {
                AttributeType::TENSOR
            } else if !a.s.is_empty() {
                AttributeType::STRING
            } else if a.f != 0.0 {
                AttributeType::FLOAT
            } else {
                AttributeType::INT
            }
        }
        Ok(t) => t,
    }
}

impl<'i, 'a> NodeCx<'i, 'a> {
    pub(crate) fn new(
        imp: &'i mut Importer<'a>,
        node: &'i NodeProto,
        opset: i64,
        name: String,
    ) -> Self {
        NodeCx {
            imp,
            node,
            opset,
            name,
        }
    }

    pub fn op_type(&self) -> &str {
        &self.node.op_type
    }

    /// Number of inputs, trailing absent ones included.
    pub fn n_inputs(&self) -> usize {
        self.node.input.len()
    }

    /// Whether input `i` is given (present and not the empty name).
    pub fn has(&self, i: usize) -> bool {
        self.node.input.get(i).is_some_and(|s| !s.is_empty())
    }

    fn input_name(&self, i: usize) -> Result<&'i str, String> {
        match self.node.input.get(i) {
            Some(s) if !s.is_empty() => Ok(s.as_str()),
            _ => Err(format!("input {i} is missing")),
        }
    }

    pub(crate) fn val(&self, i: usize) -> Result<Val, String> {
        let n = self.input_name(i)?;
        match self.imp.vals.get(n) {
            Some(Val::Unusable(m)) => Err(m.clone()),
            Some(v) => Ok(v.clone()),
            None => Err(format!(
                "input {i} (`{n}`) is not produced by any node, initializer or graph input"
            )),
        }
    }

    /// Input `i` as an IR value (constants become IR constants of their default type).
    pub fn ir(&mut self, i: usize) -> Result<ValueId, String> {
        match self.val(i)? {
            Val::Ir { id, .. } => Ok(id),
            Val::Const(c) => {
                let ty = Importer::default_type(&c).map_err(|e| format!("input {i}: {e}"))?;
                let key = self.input_name(i)?;
                self.imp.const_value(key, ty, &c)
            }
            Val::Unusable(m) => Err(m),
        }
    }

    /// Input `i` as an f32 IR value.
    pub fn f32_in(&mut self, i: usize) -> Result<ValueId, String> {
        if let Val::Const(c) = self.val(i)?
            && !c.dtype.is_float()
            && c.dtype != DType::F32
        {
            return Err(format!(
                "input {i} must be float32, found {}",
                c.dtype.name()
            ));
        }
        let id = self.ir(i)?;
        let ty = self.imp.m.ty(id);
        if ty.elem != ElemType::F32 {
            return Err(format!(
                "input {i} must be float32, found {} (qcc computes this op in float32 only)",
                DType::of_elem(&ty.elem).name()
            ));
        }
        Ok(id)
    }

    /// Input `i` as an IR constant of type `ty` (e.g. quantized weights).
    pub fn const_as(&mut self, i: usize, ty: TensorType) -> Result<ValueId, String> {
        let c = self.konst(i, "")?;
        let key = self.input_name(i)?;
        self.imp.const_value(key, ty, &c)
    }

    /// Input `i` as an import-time constant; `what` names it in the error.
    pub fn konst(&self, i: usize, what: &str) -> Result<Rc<CTensor>, String> {
        let label = if what.is_empty() {
            format!("input {i}")
        } else {
            format!("input {i} (`{what}`)")
        };
        match self.val(i).map_err(|e| {
            if self.has(i) {
                e
            } else {
                format!("{label} is missing")
            }
        })? {
            Val::Const(c) => Ok(c),
            Val::Ir { bound: Some(b), .. } => Ok(b),
            Val::Ir { id, bound: None } => {
                if let Some(t) = qcc_ir::interp::const_tensor(&self.imp.m, id) {
                    let dtype = DType::of_elem(&self.imp.m.ty(id).elem);
                    return Ok(Rc::new(CTensor::from_tensor(&t, dtype)));
                }
                Err(format!(
                    "{label} must be a constant (an initializer, or computed from constants and shapes): qcc needs it when importing"
                ))
            }
            Val::Unusable(m) => Err(m),
        }
    }

    /// Optional constant input.
    pub fn opt_konst(&self, i: usize, what: &str) -> Result<Option<Rc<CTensor>>, String> {
        if self.has(i) {
            self.konst(i, what).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Input `i` as import-time integers (a shape, axes, indices); `what` names it in
    /// the error.
    pub fn konst_ints(&self, i: usize, what: &str) -> Result<Vec<i64>, String> {
        self.konst(i, what)?
            .to_i64()
            .map_err(|e| format!("input {i} (`{what}`): {e}"))
    }

    /// Optional [`Self::konst_ints`].
    pub fn opt_konst_ints(&self, i: usize, what: &str) -> Result<Option<Vec<i64>>, String> {
        if self.has(i) {
            self.konst_ints(i, what).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Whether input `i` is an import-time constant (not a bound run-time input).
    pub fn is_const(&self, i: usize) -> bool {
        match self.val(i) {
            Ok(Val::Const(_)) => true,
            Ok(Val::Ir { id, .. }) => self.imp.m.value(id).is_const(),
            _ => false,
        }
    }

    /// Whether input `i` is a constant known at import time without taking bindings
    /// into account: initializers, `Constant` outputs and shape arithmetic.
    pub fn is_pure_const(&self, i: usize) -> bool {
        matches!(self.val(i), Ok(Val::Const(_)))
    }

    pub fn ty(&self, id: ValueId) -> &TensorType {
        self.imp.m.ty(id)
    }

    /// The static shape of input `i` (IR or constant).
    pub fn shape_of(&self, i: usize) -> Result<Vec<usize>, String> {
        Ok(match self.val(i)? {
            Val::Const(c) => c.shape.clone(),
            Val::Ir { id, .. } => self.imp.m.ty(id).shape.clone(),
            Val::Unusable(m) => return Err(m),
        })
    }

    /// The ONNX element type of input `i`.
    pub fn dtype_of(&self, i: usize) -> Result<DType, String> {
        Ok(match self.val(i)? {
            Val::Const(c) => c.dtype,
            Val::Ir { id, .. } => DType::of_elem(&self.imp.m.ty(id).elem),
            Val::Unusable(m) => return Err(m),
        })
    }

    // ---- attributes ----

    pub fn attr(&self, name: &str) -> Option<&'i AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    fn want(&self, a: &AttributeProto, kind: AttributeType, what: &str) -> Result<(), String> {
        if attr_kind(a) == kind {
            Ok(())
        } else {
            Err(format!(
                "attribute `{}` must be {what}, found {:?}",
                a.name,
                attr_kind(a)
            ))
        }
    }

    pub fn a_opt_int(&self, name: &str) -> Result<Option<i64>, String> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                self.want(a, AttributeType::INT, "an integer")?;
                Ok(Some(a.i))
            }
        }
    }

    pub fn a_int(&self, name: &str, default: i64) -> Result<i64, String> {
        Ok(self.a_opt_int(name)?.unwrap_or(default))
    }

    pub fn a_opt_float(&self, name: &str) -> Result<Option<f32>, String> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                if attr_kind(a) == AttributeType::INT {
                    return Ok(Some(a.i as f32));
                }
                self.want(a, AttributeType::FLOAT, "a float")?;
                Ok(Some(a.f))
            }
        }
    }

    pub fn a_float(&self, name: &str, default: f32) -> Result<f32, String> {
        Ok(self.a_opt_float(name)?.unwrap_or(default))
    }

    pub fn a_ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                self.want(a, AttributeType::INTS, "a list of integers")?;
                Ok(Some(a.ints.clone()))
            }
        }
    }

    pub fn a_floats(&self, name: &str) -> Result<Option<Vec<f32>>, String> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                self.want(a, AttributeType::FLOATS, "a list of floats")?;
                Ok(Some(a.floats.clone()))
            }
        }
    }

    pub fn a_str(&self, name: &str) -> Result<Option<String>, String> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                self.want(a, AttributeType::STRING, "a string")?;
                Ok(Some(String::from_utf8_lossy(&a.s).into_owned()))
            }
        }
    }

    pub fn a_strs(&self, name: &str) -> Result<Option<Vec<String>>, String> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                self.want(a, AttributeType::STRINGS, "a list of strings")?;
                Ok(Some(
                    a.strings
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect(),
                ))
            }
        }
    }

    pub fn a_tensor(&self, name: &str) -> Result<Option<CTensor>, String> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                self.want(a, AttributeType::TENSOR, "a tensor")?;
                let t =
                    a.t.as_ref()
                        .ok_or_else(|| format!("attribute `{name}` has no tensor"))?;
                tensor::decode(t, DataDir(self.imp.base_dir))
                    .map(Some)
                    .map_err(|e| format!("attribute `{name}`: {e}"))
            }
        }
    }

    /// Attributes the handler does not implement, when set to something but their
    /// default: an error naming the attribute.
    pub fn reject_int_attr(&self, name: &str, default: i64) -> Result<(), String> {
        match self.a_opt_int(name)? {
            Some(v) if v != default => Err(format!(
                "attribute `{name}` = {v} is not supported (only {default})"
            )),
            _ => Ok(()),
        }
    }

    // ---- outputs ----

    /// The name for an IR value made for output `k`.
    pub fn out_name(&self, k: usize) -> String {
        match self.node.output.get(k) {
            Some(s) if !s.is_empty() => s.clone(),
            _ => format!("{}.out{k}", self.name),
        }
    }

    pub(crate) fn set(&mut self, k: usize, v: Val) {
        if let Some(name) = self.node.output.get(k)
            && !name.is_empty()
        {
            self.imp.vals.insert(name.clone(), v);
        }
    }

    /// Output `k` is IR value `id`.
    pub fn set_ir(&mut self, k: usize, id: ValueId) {
        self.set(k, Val::Ir { id, bound: None });
    }

    /// Output `k` is an import-time constant.
    pub fn set_const(&mut self, k: usize, c: CTensor) {
        self.set(k, Val::Const(Rc::new(c)));
    }

    /// Output `k` is the same as input `i` (Identity and no-ops).
    pub fn alias(&mut self, k: usize, i: usize) -> Result<(), String> {
        let v = self.val(i)?;
        self.set(k, v);
        Ok(())
    }

    /// Whether output `k` is used by the graph (named).
    /// The number of outputs the node lists (named or empty).
    pub fn node_outputs(&self) -> usize {
        self.node.output.len()
    }

    pub fn wants_output(&self, k: usize) -> bool {
        self.node.output.get(k).is_some_and(|s| !s.is_empty())
    }

    pub fn warn(&mut self, msg: String) {
        self.imp.warnings.push(format!(
            "node `{}` ({}): {msg}",
            self.name, self.node.op_type
        ));
    }

    /// Emits an IR node named after output 0 (or `suffix` appended for helpers).
    pub fn emit(
        &mut self,
        op: Op,
        operands: Vec<ValueId>,
        attrs: Vec<(&str, Attr)>,
        elem: Option<ElemType>,
        suffix: &str,
    ) -> Result<ValueId, String> {
        let attrs: BTreeMap<String, Attr> =
            attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let name = format!("{}{suffix}", self.out_name(0));
        self.imp.emit(op, operands, attrs, elem, &name)
    }

    /// Adds an IR constant (for values the handler makes up: zero points, padded
    /// weights, reshaped parameters).
    pub fn new_const(&mut self, base: &str, ty: TensorType, data: ConstData) -> ValueId {
        let name = self.imp.fresh(&format!("{}.{base}", self.out_name(0)));
        self.imp.m.add_const(name, ty, data)
    }

    pub fn f32_const(&mut self, base: &str, shape: Vec<usize>, v: Vec<f32>) -> ValueId {
        self.new_const(base, TensorType::f32(shape), ConstData::F32(v))
    }

    /// The interpreter value of IR constant `id`, if it is one.
    pub fn ir_const(&self, id: ValueId) -> Option<Tensor> {
        qcc_ir::interp::const_tensor(&self.imp.m, id)
    }
}

/// ONNX axes (negative counting from the end) for a tensor of rank `rank`; `what` names
/// where they come from in the error (`attribute `axes``, `input 1 (`axes`)`).
pub fn norm_axes(axes: &[i64], rank: usize, what: &str) -> Result<Vec<usize>, String> {
    axes.iter()
        .map(|&a| qcc_ir::shape::normalize_axis(a, rank).map_err(|e| format!("{what}: {e}")))
        .collect()
}

/// Helpers for building attributes.
pub fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

pub fn usz(v: &[usize]) -> Attr {
    Attr::Ints(v.iter().map(|&x| x as i64).collect())
}

/// The storage of an ONNX integer type, for quantized types.
pub fn storage_of(d: DType) -> Result<IntType, String> {
    match d {
        DType::U8
        | DType::I8
        | DType::U16
        | DType::I16
        | DType::I32
        | DType::U4
        | DType::I4
        | DType::U2
        | DType::I2 => Ok(d.int_type().expect("integer")),
        _ => Err(format!(
            "quantized element type {} is not supported (int2/uint2, int4/uint4, int8/uint8, int16/uint16 and int32 are)",
            d.name()
        )),
    }
}
