//! The module: one graph in SSA form.
//!
//! Every tensor is a value, defined exactly once: by a graph input, by a constant of the
//! module's pool, or by a node. Nodes are kept in topological order, so an operand is
//! always defined before its use. Values are addressed by [`ValueId`] (an index into
//! `Module::values`); each has a name that is its text spelling (`%x`, `@w1`).

use std::collections::BTreeMap;

use crate::ops::Op;
use crate::types::TensorType;

/// Index of a value in [`Module::values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Index of a node in [`Module::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where a value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueDef {
    /// A graph input, supplied at run time.
    Input,
    /// A constant; its data is part of the module.
    Const(ConstData),
    /// The result of a node.
    Node(NodeId),
}

/// Constant data, row-major. Integer-valued types (plain integers, quantized codes,
/// bipolar +-1) are held as `i64` codes.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstData {
    F32(Vec<f32>),
    Int(Vec<i64>),
}

impl ConstData {
    pub fn len(&self) -> usize {
        match self {
            ConstData::F32(v) => v.len(),
            ConstData::Int(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A value: its name (the text spelling without the sigil), its type and its definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    pub ty: TensorType,
    pub def: ValueDef,
}

impl Value {
    pub fn is_const(&self) -> bool {
        matches!(self.def, ValueDef::Const(_))
    }

    /// The sigil this value is spelled with: `@` for constants, `%` otherwise.
    pub fn sigil(&self) -> char {
        if self.is_const() { '@' } else { '%' }
    }

    /// The text spelling, e.g. `%v3` or `@w1`.
    pub fn spelling(&self) -> String {
        format!("{}{}", self.sigil(), self.name)
    }
}

/// An attribute value. The op table declares which attributes each op takes and of
/// which kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Bool(bool),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    /// One of an enumerated set of words (e.g. a rounding mode, a resize mode).
    Enum(String),
}

/// A node: an operation applied to operands, defining one result value.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub operands: Vec<ValueId>,
    pub attrs: BTreeMap<String, Attr>,
    pub result: ValueId,
    /// Where the node came from (e.g. the ONNX node name), for messages.
    pub loc: Option<String>,
    /// Facts kept for later passes that are not part of the op's semantics (e.g. the
    /// statistics of a folded batch norm). Printed, parsed and ignored by the interpreter.
    pub meta: BTreeMap<String, Attr>,
}

/// One graph in SSA form.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Module {
    pub name: String,
    pub values: Vec<Value>,
    pub inputs: Vec<ValueId>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<ValueId>,
}

impl Module {
    pub fn new(name: impl Into<String>) -> Self {
        Module {
            name: name.into(),
            ..Default::default()
        }
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.index()]
    }

    pub fn value_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id.index()]
    }

    pub fn ty(&self, id: ValueId) -> &TensorType {
        &self.values[id.index()].ty
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// The constant data of `id`, if it is a constant.
    pub fn const_data(&self, id: ValueId) -> Option<&ConstData> {
        match &self.value(id).def {
            ValueDef::Const(d) => Some(d),
            _ => None,
        }
    }

    /// A name not yet used by any value, made from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        let used: std::collections::HashSet<&str> =
            self.values.iter().map(|v| v.name.as_str()).collect();
        if !base.is_empty() && !used.contains(base) {
            return base.to_string();
        }
        (0..)
            .map(|i| format!("{base}{i}"))
            .find(|n| !used.contains(n.as_str()))
            .expect("an unused name exists")
    }

    fn push_value(&mut self, name: String, ty: TensorType, def: ValueDef) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(Value { name, ty, def });
        id
    }

    /// Adds a graph input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let id = self.push_value(name.into(), ty, ValueDef::Input);
        self.inputs.push(id);
        id
    }

    /// Adds a constant.
    pub fn add_const(
        &mut self,
        name: impl Into<String>,
        ty: TensorType,
        data: ConstData,
    ) -> ValueId {
        self.push_value(name.into(), ty, ValueDef::Const(data))
    }

    /// Appends a node computing `op(operands)` with result type `ty`; returns the result.
    pub fn add_node(
        &mut self,
        op: Op,
        operands: Vec<ValueId>,
        attrs: BTreeMap<String, Attr>,
        name: impl Into<String>,
        ty: TensorType,
    ) -> ValueId {
        let node = NodeId(self.nodes.len() as u32);
        let result = self.push_value(name.into(), ty, ValueDef::Node(node));
        self.nodes.push(Node {
            op,
            operands,
            attrs,
            result,
            loc: None,
            meta: BTreeMap::new(),
        });
        result
    }

    /// For every value, the nodes that use it (in node order; a node using a value twice
    /// appears twice).
    pub fn users(&self) -> Vec<Vec<NodeId>> {
        let mut users = vec![Vec::new(); self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &o in &n.operands {
                if let Some(u) = users.get_mut(o.index()) {
                    u.push(NodeId(i as u32));
                }
            }
        }
        users
    }

    /// Removes values that are not referenced by any node, input or output and are not
    /// node results, renumbering the rest (order kept). Nodes must already be consistent.
    pub fn compact(&mut self) {
        let mut keep = vec![false; self.values.len()];
        for &i in self.inputs.iter().chain(&self.outputs) {
            keep[i.index()] = true;
        }
        for n in &self.nodes {
            keep[n.result.index()] = true;
            for &o in &n.operands {
                keep[o.index()] = true;
            }
        }
        let mut remap = vec![None; self.values.len()];
        let old = std::mem::take(&mut self.values);
        for (i, v) in old.into_iter().enumerate() {
            if keep[i] {
                remap[i] = Some(ValueId(self.values.len() as u32));
                self.values.push(v);
            }
        }
        let map = |id: &mut ValueId| *id = remap[id.index()].expect("kept value");
        self.inputs.iter_mut().for_each(map);
        self.outputs.iter_mut().for_each(map);
        for (ni, n) in self.nodes.iter_mut().enumerate() {
            map(&mut n.result);
            n.operands.iter_mut().for_each(map);
            self.values[n.result.index()].def = ValueDef::Node(NodeId(ni as u32));
        }
    }
}
