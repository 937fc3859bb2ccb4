//! The rewrite engine: qcc's IR as an egg e-graph, rules grouped by topic, extraction by
//! a latency model. See `README.md` beside this file for the design and for how to
//! write a rule.
//!
//! - [`lang`]: the e-node language (one node per IR op, with an interned meta leaf);
//! - [`intern`]: interned types/attributes and constants;
//! - [`analysis`]: what each e-class knows (type, constant value, origin) and the merge
//!   contract;
//! - [`convert`]: module -> e-graph -> module;
//! - [`cost`] and [`extract`]: the cost table and extraction;
//! - [`run`]: the runner with iteration and node limits, and its report;
//! - [`rule`], [`build`], [`fixed_point`]: writing rules;
//! - [`rules`]: the rule groups, each a pass of the registry.

pub mod analysis;
pub mod build;
pub mod convert;
pub mod cost;
pub mod extract;
pub mod fixed_point;
pub mod intern;
pub mod lang;
pub mod rule;
pub mod rules;
pub mod run;

pub use analysis::{ClassData, QAnalysis, QEGraph, TensorInfo};
pub use convert::{Converted, to_egraph, to_module};
pub use extract::{extract, extract_with};
pub use lang::QNode;
pub use rule::{Exactness, QRewrite, RuleDef};
pub use run::{Limits, Report, StopReason, run_rules};

use qcc_ir::Module;

/// How a rewrite pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub limits: Limits,
    /// Also run rules that are exact only within a stated bound (the fusions into
    /// integer kernels are such rules; turning this off keeps every value bit-exact).
    pub bounded: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: Limits::default(),
            bounded: true,
        }
    }
}

/// Rewrites `m` with `rules` and extracts the cheapest equivalent module. When no rule
/// changed anything, the module comes back as it was.
pub fn rewrite(m: &Module, rules: &[&QRewrite], limits: Limits) -> (Module, Report) {
    let Converted {
        egraph,
        outputs,
        name,
    } = to_egraph(m);
    let (egraph, report) = run_rules(egraph, &outputs, rules, limits);
    if report.total_applied() == 0 {
        return (m.clone(), report);
    }
    let outputs: Vec<_> = outputs.iter().map(|&o| egraph.find(o)).collect();
    (extract(&egraph, &name, &outputs), report)
}

/// Runs the rules of the named groups (see [`rules::GROUPS`]) on `m` in one e-graph.
pub fn run_groups(m: &mut Module, groups: &[&str], opts: &Options) -> Result<Report, String> {
    let defs = rules::rules_of(groups, opts.bounded)?;
    let refs: Vec<&QRewrite> = defs.iter().map(|d| &d.rewrite).collect();
    let (out, report) = rewrite(m, &refs, opts.limits);
    *m = out;
    Ok(report)
}
