//! The e-graph language: one e-node per IR op, derived from the op table.
//!
//! An op node is `Op(op, [meta, operands...])`: its first child is always a [`QNode::Meta`]
//! leaf, which stands for the node's declared result type and its canonical attributes
//! (interned in [`Tables`](super::intern::Tables), so nodes stay small, hashable and
//! ordered). Two nodes are the same e-node exactly when they apply the same op, with the
//! same type and attributes, to the same operand classes. Graph inputs and constants are
//! leaves. Because the op is the [`Op`] enum itself, the language covers every op of the
//! table with no per-op code, and a new op needs nothing here.
//!
//! Rule patterns name the meta leaf with a variable, so a condition can read the exact
//! type and attributes of the matched node: `(quantize ?qm (dequantize ?dm ?x))`.
//!
//! Text spelling (patterns and debugging dumps): ops by their IR name, `in3` for graph
//! input 3, `c5` for constant 5, `m7` for meta 7.

use std::fmt;

use egg::{Id, Language};
use qcc_ir::Op;

/// Index of an interned (type, attributes) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetaId(pub u32);

/// Index of an interned constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConstId(pub u32);

/// An e-node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QNode {
    /// Graph input number `n` (in the module's input order).
    Input(u32),
    /// A constant of the tables.
    Const(ConstId),
    /// The result type and attributes of an op node (always its first child).
    Meta(MetaId),
    /// An op applied to `[meta, operands...]`.
    Op(Op, Box<[Id]>),
}

/// What e-matching compares before children: the op (arity is checked by `matches`),
/// or the leaf itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QDisc {
    Input(u32),
    Const(ConstId),
    Meta(MetaId),
    Op(Op),
}

impl QNode {
    /// The op of an op node.
    pub fn op(&self) -> Option<Op> {
        match self {
            QNode::Op(op, _) => Some(*op),
            _ => None,
        }
    }

    /// The meta child of an op node.
    pub fn meta_child(&self) -> Option<Id> {
        match self {
            QNode::Op(_, ch) => ch.first().copied(),
            _ => None,
        }
    }

    /// The operand children of an op node (without the meta child).
    pub fn operands(&self) -> &[Id] {
        match self {
            QNode::Op(_, ch) => &ch[1..],
            _ => &[],
        }
    }
}

impl Language for QNode {
    type Discriminant = QDisc;

    fn discriminant(&self) -> QDisc {
        match self {
            QNode::Input(i) => QDisc::Input(*i),
            QNode::Const(c) => QDisc::Const(*c),
            QNode::Meta(m) => QDisc::Meta(*m),
            QNode::Op(op, _) => QDisc::Op(*op),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (QNode::Op(a, ca), QNode::Op(b, cb)) => a == b && ca.len() == cb.len(),
            _ => self == other,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            QNode::Op(_, ch) => ch,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            QNode::Op(_, ch) => ch,
            _ => &mut [],
        }
    }
}

impl fmt::Display for QNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QNode::Input(i) => write!(f, "in{i}"),
            QNode::Const(c) => write!(f, "c{}", c.0),
            QNode::Meta(m) => write!(f, "m{}", m.0),
            QNode::Op(op, _) => f.write_str(op.name()),
        }
    }
}

/// Why a pattern's operator is not an e-node.
#[derive(Debug)]
pub struct UnknownOp(pub String);

impl fmt::Display for UnknownOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not an op, `inN`, `cN` or `mN`", self.0)
    }
}

impl egg::FromOp for QNode {
    type Error = UnknownOp;

    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, Self::Error> {
        let leaf = |prefix: &str| -> Option<u32> {
            op.strip_prefix(prefix)
                .filter(|_| children.is_empty())
                .and_then(|n| n.parse().ok())
        };
        if let Some(i) = leaf("in") {
            return Ok(QNode::Input(i));
        }
        if let Some(c) = leaf("c") {
            return Ok(QNode::Const(ConstId(c)));
        }
        if let Some(m) = leaf("m") {
            return Ok(QNode::Meta(MetaId(m)));
        }
        match Op::from_name(op) {
            Some(o) if !children.is_empty() => Ok(QNode::Op(o, children.into())),
            _ => Err(UnknownOp(op.to_string())),
        }
    }
}
