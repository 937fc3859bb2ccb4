//! The e-class analysis: what is known about every e-class.
//!
//! A tensor class knows its type (element kind, bits and quantization parameters are
//! read from it: [`TensorInfo::quant`], [`TensorInfo::bits`]), its constant value when
//! one is known (a constant leaf, or an op over constants evaluated by the reference
//! interpreter, see [`QAnalysis::fold_limit`]), and where it came from in the input
//! module (its name, location and meta, so printing back keeps them). A meta class (the
//! first child of every op node) knows only its interned meta.
//!
//! Merge contract: classes are merged only by rules that prove (or, for a gated
//! approximate rule, declare) their values interchangeable, and **merged classes must
//! have equal types**; merging classes of different types, or a meta class with
//! anything but itself, is a bug in a rule and panics with both types. Of the other
//! facts, the merged class keeps the older (left) one when both sides have it: the first
//! constant value found (approximate rules may unite classes whose values differ within
//! their stated bound, so two values need not be equal bit for bit) and the origin of
//! the earliest value of the input module.
//!
//! When a class gets a constant value and has no constant leaf yet, `modify` adds one,
//! so extraction can pick the constant (folding inside the e-graph). `dequantize`,
//! `fake_quant` and `trunc` are never folded: their constant operands carry quantization
//! that rules read (as the `fold-constants` pass does).

use std::collections::BTreeMap;
use std::sync::Arc;

use egg::{Analysis, DidMerge, Id};
use qcc_ir::interp::{Tensor, TensorData, eval_node};
use qcc_ir::{Attr, ConstData, ElemType, Module, Op, QuantType, TensorType};

use super::intern::{Meta, Tables};
use super::lang::{MetaId, QNode};

/// The e-graph qcc rewrites.
pub type QEGraph = egg::EGraph<QNode, QAnalysis>;

/// The analysis: interning tables plus the folding limit.
#[derive(Debug)]
pub struct QAnalysis {
    pub tables: Tables,
    /// Largest result (elements) evaluated for a constant value.
    pub fold_limit: usize,
}

impl Default for QAnalysis {
    fn default() -> Self {
        QAnalysis {
            tables: Tables::default(),
            fold_limit: 1 << 18,
        }
    }
}

/// Where a class came from in the input module.
#[derive(Clone, Debug, PartialEq)]
pub struct Origin {
    /// Index of the value in the input module (the lowest wins on merge).
    pub order: u32,
    /// The value's name (without sigil).
    pub name: String,
    /// The op of the node that defined it, if a node did.
    pub op: Option<Op>,
    pub loc: Option<String>,
    pub meta: BTreeMap<String, Attr>,
}

/// What is known about a tensor class.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub ty: TensorType,
    pub value: Option<Arc<Tensor>>,
    pub origin: Option<Origin>,
    /// A name for values rules create in this class (when it has no origin).
    pub hint: Option<String>,
    /// A location for nodes rules create in this class (when it has no origin), e.g. the
    /// float conv2d's for the conv2d_int replacing it.
    pub loc: Option<String>,
}

impl TensorInfo {
    pub fn quant(&self) -> Option<&QuantType> {
        self.ty.elem.quant()
    }

    pub fn bits(&self) -> u32 {
        self.ty.elem.bits()
    }

    pub fn is_float(&self) -> bool {
        self.ty.elem.is_float()
    }

    /// The best name for the class: its origin's, else the hint.
    pub fn name(&self) -> Option<&str> {
        self.origin
            .as_ref()
            .map(|o| o.name.as_str())
            .or(self.hint.as_deref())
    }
}

/// The data of an e-class.
#[derive(Clone, Debug)]
pub enum ClassData {
    Meta(MetaId),
    Tensor(Box<TensorInfo>),
}

impl ClassData {
    /// The tensor facts. Panics on a meta class (rules only ask tensor classes).
    pub fn tensor(&self) -> &TensorInfo {
        match self {
            ClassData::Tensor(t) => t,
            ClassData::Meta(m) => panic!("internal error: meta class m{} used as a tensor", m.0),
        }
    }

    pub fn tensor_mut(&mut self) -> &mut TensorInfo {
        match self {
            ClassData::Tensor(t) => t,
            ClassData::Meta(m) => panic!("internal error: meta class m{} used as a tensor", m.0),
        }
    }
}

/// The type of tensor class `id`.
pub fn ty(eg: &QEGraph, id: Id) -> &TensorType {
    &eg[id].data.tensor().ty
}

/// The tensor facts of class `id`.
pub fn info(eg: &QEGraph, id: Id) -> &TensorInfo {
    eg[id].data.tensor()
}

/// The constant value of class `id`, if known.
pub fn value(eg: &QEGraph, id: Id) -> Option<&Tensor> {
    eg[id].data.tensor().value.as_deref()
}

/// The meta of meta class `id`.
pub fn meta(eg: &QEGraph, id: Id) -> &Meta {
    match &eg[id].data {
        ClassData::Meta(m) => eg.analysis.tables.get_meta(*m),
        ClassData::Tensor(t) => panic!(
            "internal error: tensor class of type {} used as a meta",
            t.ty
        ),
    }
}

/// Evaluates `op` over constant operands with the reference interpreter.
fn fold(meta: &Meta, operands: &[(&TensorType, &Tensor)]) -> Option<Tensor> {
    let mut m = Module::new("fold");
    let ids = operands
        .iter()
        .enumerate()
        .map(|(i, (ty, t))| {
            let data = match &t.data {
                TensorData::F32(v) => ConstData::F32(v.clone()),
                TensorData::Int(v) => ConstData::Int(v.clone()),
            };
            m.add_const(format!("c{i}"), (*ty).clone(), data)
        })
        .collect();
    m.add_node(meta.op, ids, meta.attrs.clone(), "r", meta.ty.clone());
    let refs: Vec<&Tensor> = operands.iter().map(|(_, t)| *t).collect();
    eval_node(&m, &m.nodes[0], &refs).ok()
}

impl Analysis<QNode> for QAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut QEGraph, enode: &QNode, _id: Id) -> ClassData {
        let tensor = |ty: TensorType, value: Option<Arc<Tensor>>| {
            ClassData::Tensor(Box::new(TensorInfo {
                ty,
                value,
                origin: None,
                hint: None,
                loc: None,
            }))
        };
        let tables = &egraph.analysis.tables;
        match enode {
            QNode::Meta(m) => ClassData::Meta(*m),
            QNode::Input(i) => {
                let (name, ty) = &tables.inputs[*i as usize];
                let mut d = tensor(ty.clone(), None);
                d.tensor_mut().hint = Some(name.clone());
                d
            }
            QNode::Const(c) => {
                let e = tables.get_const(*c);
                let mut d = tensor(e.ty.clone(), Some(Arc::new(e.tensor())));
                d.tensor_mut().hint = Some(e.name.clone());
                d
            }
            QNode::Op(op, ch) => {
                let meta = self::meta(egraph, ch[0]);
                let ty = meta.ty.clone();
                let foldable = !crate::passes::fold_constants::keeps_quant_info(*op)
                    && ty.numel() <= egraph.analysis.fold_limit;
                let value = if foldable {
                    let vals: Option<Vec<(&TensorType, &Tensor)>> = ch[1..]
                        .iter()
                        .map(|&c| {
                            let t = egraph[c].data.tensor();
                            t.value.as_deref().map(|v| (&t.ty, v))
                        })
                        .collect();
                    vals.and_then(|v| fold(meta, &v)).map(Arc::new)
                } else {
                    None
                };
                tensor(ty, value)
            }
        }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        match (a, b) {
            (ClassData::Meta(x), ClassData::Meta(y)) => {
                assert_eq!(*x, y, "internal error: two different metas merged");
                DidMerge(false, false)
            }
            (ClassData::Tensor(a), ClassData::Tensor(b)) => {
                let b = *b;
                assert!(
                    a.ty == b.ty,
                    "internal error: a rewrite merged classes of different types {} and {}",
                    a.ty,
                    b.ty
                );
                let mut changed_a = false;
                let mut changed_b = false;
                match (&a.value, b.value) {
                    (None, Some(v)) => {
                        a.value = Some(v);
                        changed_a = true;
                    }
                    (Some(_), None) => changed_b = true,
                    _ => {}
                }
                match (&a.origin, b.origin) {
                    (None, Some(o)) => {
                        a.origin = Some(o);
                        changed_a = true;
                    }
                    (Some(x), Some(o)) if o.order < x.order => {
                        a.origin = Some(o);
                        changed_a = true;
                        changed_b = true;
                    }
                    (Some(_), Some(_)) => changed_b = true,
                    (Some(_), None) => changed_b = true,
                    (None, None) => {}
                }
                if a.hint.is_none() && b.hint.is_some() {
                    a.hint = b.hint;
                    changed_a = true;
                }
                if a.loc.is_none() && b.loc.is_some() {
                    a.loc = b.loc;
                    changed_a = true;
                }
                DidMerge(changed_a, changed_b)
            }
            (a, b) => {
                panic!("internal error: a meta class merged with a tensor class ({a:?}, {b:?})")
            }
        }
    }

    fn modify(egraph: &mut QEGraph, id: Id) {
        let t = egraph[id].data.tensor_opt();
        let Some(t) = t else { return };
        let Some(v) = t.value.clone() else { return };
        if egraph[id]
            .nodes
            .iter()
            .any(|n| matches!(n, QNode::Const(_)))
        {
            return;
        }
        let name = t.name().unwrap_or("folded").to_string();
        let ty = t.ty.clone();
        let c = egraph.analysis.tables.constant_tensor(&name, ty, &v);
        let leaf = egraph.add(QNode::Const(c));
        egraph.union(id, leaf);
    }
}

impl ClassData {
    /// The tensor facts, or `None` for a meta class.
    pub fn tensor_opt(&self) -> Option<&TensorInfo> {
        match self {
            ClassData::Tensor(t) => Some(t),
            ClassData::Meta(_) => None,
        }
    }
}

/// Whether the element type is quantized per tensor.
pub fn per_tensor(q: &QuantType) -> bool {
    matches!(q.params, qcc_ir::QuantParams::PerTensor { .. })
}

/// Whether `e` is a quantized type.
pub fn is_quant(e: &ElemType) -> bool {
    matches!(e, ElemType::Quant(_))
}
