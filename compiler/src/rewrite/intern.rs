//! Interning of the heavy parts of e-nodes: result types with attributes ("metas") and
//! constants. E-nodes hold small ids into these tables, so they hash and compare cheaply
//! and deterministically; identical metas and identical constants get the same id.

use std::collections::{BTreeMap, HashMap};

use qcc_ir::interp::{Tensor, TensorData};
use qcc_ir::ops::Attrs;
use qcc_ir::{Attr, ConstData, Op, TensorType};

use super::lang::{ConstId, MetaId};

/// The declared result type and the canonical attributes of an op node.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    pub op: Op,
    pub ty: TensorType,
    /// Every attribute with a default is present (filled from the op table).
    pub attrs: BTreeMap<String, Attr>,
}

impl Meta {
    /// Typed attribute access (defaults from the op table).
    pub fn attrs(&self) -> Attrs<'_> {
        Attrs::new(self.op, &self.attrs)
    }
}

/// A constant: its name (for printing back), type and data.
#[derive(Clone, Debug, PartialEq)]
pub struct ConstEntry {
    pub name: String,
    pub ty: TensorType,
    pub data: ConstData,
}

impl ConstEntry {
    pub fn tensor(&self) -> Tensor {
        let data = match &self.data {
            ConstData::F32(v) => TensorData::F32(v.clone()),
            ConstData::Int(v) => TensorData::Int(v.clone()),
        };
        Tensor {
            shape: self.ty.shape.clone(),
            data,
        }
    }
}

/// Exact identity of constant data (f32 by bits, so -0.0 and NaN payloads are kept).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum DataKey {
    F32(Vec<u32>),
    Int(Vec<i64>),
}

/// The interning tables, plus the module's graph inputs.
#[derive(Debug, Default)]
pub struct Tables {
    metas: Vec<Meta>,
    meta_ids: HashMap<String, MetaId>,
    consts: Vec<ConstEntry>,
    const_ids: HashMap<(String, DataKey), ConstId>,
    /// Name and type of each graph input.
    pub inputs: Vec<(String, TensorType)>,
}

/// `attrs` with every defaulted attribute of `op` filled in.
pub fn canonical_attrs(op: Op, attrs: &BTreeMap<String, Attr>) -> BTreeMap<String, Attr> {
    let mut out = attrs.clone();
    for spec in op.info().attrs {
        if let Some(v) = spec.default.value() {
            out.entry(spec.name.to_string()).or_insert(v);
        }
    }
    out
}

impl Tables {
    /// The id of (op, type, attributes), interning it if new. Attributes are made
    /// canonical first.
    pub fn meta(&mut self, op: Op, ty: TensorType, attrs: &BTreeMap<String, Attr>) -> MetaId {
        let attrs = canonical_attrs(op, attrs);
        let key = format!("{op} {ty} {attrs:?}");
        if let Some(&id) = self.meta_ids.get(&key) {
            return id;
        }
        let id = MetaId(self.metas.len() as u32);
        self.metas.push(Meta { op, ty, attrs });
        self.meta_ids.insert(key, id);
        id
    }

    pub fn get_meta(&self, id: MetaId) -> &Meta {
        &self.metas[id.0 as usize]
    }

    /// The id of a constant, interning it if new (an identical constant keeps its first
    /// name).
    pub fn constant(&mut self, name: &str, ty: TensorType, data: ConstData) -> ConstId {
        let dk = match &data {
            ConstData::F32(v) => DataKey::F32(v.iter().map(|f| f.to_bits()).collect()),
            ConstData::Int(v) => DataKey::Int(v.clone()),
        };
        let key = (ty.to_string(), dk);
        if let Some(&id) = self.const_ids.get(&key) {
            return id;
        }
        let id = ConstId(self.consts.len() as u32);
        self.consts.push(ConstEntry {
            name: name.to_string(),
            ty,
            data,
        });
        self.const_ids.insert(key, id);
        id
    }

    /// Interns a tensor as a constant of type `ty`.
    pub fn constant_tensor(&mut self, name: &str, ty: TensorType, t: &Tensor) -> ConstId {
        let data = match &t.data {
            TensorData::F32(v) => ConstData::F32(v.clone()),
            TensorData::Int(v) => ConstData::Int(v.clone()),
        };
        self.constant(name, ty, data)
    }

    pub fn get_const(&self, id: ConstId) -> &ConstEntry {
        &self.consts[id.0 as usize]
    }
}
