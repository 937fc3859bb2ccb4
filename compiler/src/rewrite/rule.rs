//! How a rule is written: a name, a left side, and a plain function for the right side.
//!
//! The left side is an egg pattern over [`QNode`] (`"(quantize ?qm (relu ?rm ?y))"`), or
//! "every class holding an `op` node" for variadic ops ([`rule_on_op`]). The right side is
//! a function that reads the match (types, attributes, constant values), checks the
//! rule's condition and builds the replacement, returning its class, or `None` when the
//! condition does not hold. The adapter unions the replacement with the matched class,
//! after checking the two have the same type (the analysis' merge contract), so a rule
//! that would break it panics naming itself.

use egg::{Applier, Id, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};
use qcc_ir::Op;

use super::analysis::{QAnalysis, QEGraph, ty};
use super::lang::QNode;

/// A rewrite over the qcc e-graph.
pub type QRewrite = Rewrite<QNode, QAnalysis>;

/// The right side of a rule: the class of the replacement for the match `(root, subst)`,
/// or `None` when the rule's condition does not hold.
pub type RhsFn = fn(&mut QEGraph, Id, &Subst) -> Option<Id>;

/// How close the right side is to the left side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exactness {
    /// The same values, bit for bit, on every input.
    Exact,
    /// Within a bound the rule states (e.g. one code of the result type); the soundness
    /// test checks the bound.
    Bounded(&'static str),
}

/// A named rule with its exactness.
pub struct RuleDef {
    pub name: &'static str,
    pub exactness: Exactness,
    pub rewrite: QRewrite,
}

impl std::fmt::Debug for RuleDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?})", self.name, self.exactness)
    }
}

/// The class bound to `name` (`"?x"`) in `s`. Panics if the pattern has no such
/// variable (a bug in the rule).
pub fn var(s: &Subst, name: &str) -> Id {
    opt_var(s, name).unwrap_or_else(|| panic!("internal error: pattern variable {name} not bound"))
}

/// The class bound to `name`, if the pattern binds it.
pub fn opt_var(s: &Subst, name: &str) -> Option<Id> {
    let v: Var = name.parse().expect("a pattern variable");
    s.get(v).copied()
}

/// A rule from a pattern and a right-side function.
pub fn rule(name: &'static str, exactness: Exactness, lhs: &str, rhs: RhsFn) -> RuleDef {
    let pattern: egg::Pattern<QNode> = lhs
        .parse()
        .unwrap_or_else(|e| panic!("rule {name}: bad pattern {lhs}: {e}"));
    RuleDef {
        name,
        exactness,
        rewrite: Rewrite::new(name, pattern, FnApplier(rhs))
            .unwrap_or_else(|e| panic!("rule {name}: {e}")),
    }
}

/// A rule whose left side is every class holding an `op` node (for variadic ops, which
/// patterns cannot match); the right side inspects the class's nodes itself.
pub fn rule_on_op(name: &'static str, exactness: Exactness, op: Op, rhs: RhsFn) -> RuleDef {
    RuleDef {
        name,
        exactness,
        rewrite: Rewrite::new(name, OpSearcher(op), FnApplier(rhs))
            .unwrap_or_else(|e| panic!("rule {name}: {e}")),
    }
}

struct FnApplier(RhsFn);

impl Applier<QNode, QAnalysis> for FnApplier {
    fn apply_one(
        &self,
        egraph: &mut QEGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<QNode>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        let Some(new) = (self.0)(egraph, eclass, subst) else {
            return vec![];
        };
        let (a, b) = (ty(egraph, eclass), ty(egraph, new));
        assert!(
            a == b,
            "internal error: rule `{rule_name}` would merge a class of type {a} with one of type {b}"
        );
        if egraph.union(eclass, new) {
            vec![eclass]
        } else {
            vec![]
        }
    }
}

/// Matches every class that holds a node of one op, binding nothing.
struct OpSearcher(Op);

impl Searcher<QNode, QAnalysis> for OpSearcher {
    fn search_eclass_with_limit(
        &self,
        egraph: &QEGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, QNode>> {
        if limit == 0 || !egraph[eclass].nodes.iter().any(|n| n.op() == Some(self.0)) {
            return None;
        }
        Some(SearchMatches {
            eclass,
            substs: vec![Subst::default()],
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        vec![]
    }
}
