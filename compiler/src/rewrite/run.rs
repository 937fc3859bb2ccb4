//! Running rules to a fixed point, within iteration and e-node limits (never a clock,
//! so results are the same on every machine), and the report of what happened.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use egg::{Id, Runner, SimpleScheduler};

use super::analysis::QEGraph;
use super::rule::QRewrite;

/// When the runner stops trying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Rounds of search-then-apply.
    pub iterations: usize,
    /// E-nodes in the graph.
    pub nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            iterations: 32,
            nodes: 200_000,
        }
    }
}

/// Why the runner stopped: a value, not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// No rule added anything new.
    Saturated,
    IterationLimit(usize),
    NodeLimit(usize),
    Other(String),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Saturated => f.write_str("saturated"),
            StopReason::IterationLimit(n) => write!(f, "iteration limit ({n})"),
            StopReason::NodeLimit(n) => write!(f, "e-node limit ({n})"),
            StopReason::Other(s) => write!(f, "stopped: {s}"),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub iterations: usize,
    pub stop_reason: StopReason,
    /// E-nodes and e-classes at the end.
    pub nodes: usize,
    pub classes: usize,
    /// Rule name -> how many times it changed the graph.
    pub applied: BTreeMap<String, usize>,
}

impl Report {
    /// Total rule applications.
    pub fn total_applied(&self) -> usize {
        self.applied.values().sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "e-graph: {} nodes, {} classes after {} iterations ({})",
            self.nodes, self.classes, self.iterations, self.stop_reason
        )?;
        if self.applied.is_empty() {
            return writeln!(f, "rules applied: none");
        }
        writeln!(f, "rules applied:")?;
        for (name, n) in &self.applied {
            writeln!(f, "  {name:<40} {n}")?;
        }
        Ok(())
    }
}

/// Runs `rules` on `egraph` (whose roots are `roots`) until saturation or a limit.
pub fn run_rules(
    egraph: QEGraph,
    roots: &[Id],
    rules: &[&QRewrite],
    limits: Limits,
) -> (QEGraph, Report) {
    let mut runner = Runner::default()
        .with_egraph(egraph)
        .with_scheduler(SimpleScheduler)
        .with_iter_limit(limits.iterations)
        .with_node_limit(limits.nodes)
        // No wall-clock limit: only iterations and nodes bound the work.
        .with_time_limit(Duration::from_secs(u64::MAX / 4));
    runner.roots = roots.to_vec();
    let runner = runner.run(rules.iter().copied());
    let mut applied = BTreeMap::new();
    for it in &runner.iterations {
        for (name, n) in &it.applied {
            *applied.entry(name.to_string()).or_insert(0) += n;
        }
    }
    let stop_reason = match runner.stop_reason.clone() {
        Some(egg::StopReason::Saturated) | None => StopReason::Saturated,
        Some(egg::StopReason::IterationLimit(n)) => StopReason::IterationLimit(n),
        Some(egg::StopReason::NodeLimit(n)) => StopReason::NodeLimit(n),
        Some(egg::StopReason::TimeLimit(t)) => StopReason::Other(format!("time limit {t}s")),
        Some(egg::StopReason::Other(s)) => StopReason::Other(s),
    };
    let report = Report {
        iterations: runner.iterations.len(),
        stop_reason,
        nodes: runner.egraph.total_size(),
        classes: runner.egraph.number_of_classes(),
        applied,
    };
    (runner.egraph, report)
}
