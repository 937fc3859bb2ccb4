//! Per-layer bit-widths under a budget (`--budget`).
//!
//! The choice is a small integer program over the layers' candidates:
//!
//! - every conv/gemm/matmul layer `l` picks exactly one candidate `(w, a)` (weight bits,
//!   activation bits) from those measured for it, at the measured error `e(l, w, a)`;
//! - an activation has one width: the layers reading the same activation pick the same
//!   `a` (a binary candidate, `(1, 1)`, thresholds the activation's codes, so every reader
//!   of a binarized activation is binary too). The constraint is part of the model: one
//!   0/1 variable per (activation, width), tied to the readers' choices by equalities;
//! - the budget terms are linear in the choices: average weight bits, weight bytes of the
//!   object, modelled latency from the backend's cost table.
//!
//! The objective is the sum of the per-layer errors (the additive model of the
//! sensitivity measurement). [`solve_exact`] solves it exactly by branch and bound (good_lp
//! with the pure-Rust microlp solver); [`solve_attention`] is the DQA-attention
//! counterpart: softmax attention over each layer's candidates, annealed, with the budget
//! as a penalty whose weight is found by bisection. Both give a [`Plan`] that
//! `quantize_model` takes as `QuantOptions::layer_bits`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::sensitivity::Sensitivity;
use crate::backend::costs::{self, CostTarget, Strategy};

/// One term of a `--budget`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BudgetTerm {
    /// `avg-bits=X`: weight bits averaged over all conv/gemm/matmul weights (edges
    /// included), weighted by their element counts.
    AvgBits(f64),
    /// `size=N[KB|MB]`: the weights' bytes in the object (codes bit-packed, plus one f32
    /// scale per output channel).
    Size(u64),
    /// `latency=Tms`: the conv/gemm/matmul layers' time modelled from the measured cost
    /// table of the target, in milliseconds.
    LatencyMs(f64),
}

impl BudgetTerm {
    pub fn key(&self) -> &'static str {
        match self {
            BudgetTerm::AvgBits(_) => "avg-bits",
            BudgetTerm::Size(_) => "size",
            BudgetTerm::LatencyMs(_) => "latency",
        }
    }

    pub fn limit(&self) -> f64 {
        match *self {
            BudgetTerm::AvgBits(x) => x,
            BudgetTerm::Size(n) => n as f64,
            BudgetTerm::LatencyMs(t) => t,
        }
    }

    /// The term's value spelled like the flag (`avg-bits=2.50`, `size=12.3KB`, ...).
    pub fn show(&self, v: f64) -> String {
        match self {
            BudgetTerm::AvgBits(_) => format!("avg-bits={v:.3}"),
            BudgetTerm::Size(_) => format!("size={:.2}KB", v / 1000.0),
            BudgetTerm::LatencyMs(_) => format!("latency={v:.4}ms"),
        }
    }
}

/// A `--budget`: one or more terms, all to be met.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub terms: Vec<BudgetTerm>,
}

const FORMS: &str = "avg-bits=X (1..8), size=N[B|KB|MB] or latency=Tms, comma-separated";

impl FromStr for Budget {
    type Err = String;

    fn from_str(s: &str) -> Result<Budget, String> {
        let mut terms: Vec<BudgetTerm> = Vec::new();
        for part in s.split(',').map(str::trim) {
            let Some((key, val)) = part.split_once('=') else {
                return Err(format!(
                    "--budget `{part}`: expected KEY=VALUE, one of {FORMS}"
                ));
            };
            let (key, val) = (key.trim(), val.trim());
            let term = match key {
                "avg-bits" => {
                    let x: f64 = val.parse().map_err(|_| {
                        format!(
                            "--budget avg-bits={val}: expected a number of bits, e.g. avg-bits=3"
                        )
                    })?;
                    if !(1.0..=8.0).contains(&x) {
                        return Err(format!(
                            "--budget avg-bits={val}: the average weight bits must lie in 1..8 (weights take 1, 2, 3, 4 or 8 bits)"
                        ));
                    }
                    BudgetTerm::AvgBits(x)
                }
                "size" => {
                    let lower = val.to_ascii_lowercase();
                    let (num, mult) = if let Some(n) = lower.strip_suffix("mb") {
                        (n, 1e6)
                    } else if let Some(n) = lower.strip_suffix("kb") {
                        (n, 1e3)
                    } else if let Some(n) = lower.strip_suffix('b') {
                        (n, 1.0)
                    } else {
                        (lower.as_str(), 1.0)
                    };
                    let x: f64 = num.trim().parse().map_err(|_| {
                        format!("--budget size={val}: expected a byte count such as size=40KB, size=1.5MB or size=30000")
                    })?;
                    if !(x.is_finite() && x > 0.0) {
                        return Err(format!(
                            "--budget size={val}: the weight size must be a positive number of bytes"
                        ));
                    }
                    BudgetTerm::Size((x * mult).round() as u64)
                }
                "latency" => {
                    let num = val.strip_suffix("ms").ok_or_else(|| {
                        format!("--budget latency={val}: expected milliseconds, e.g. latency=0.8ms")
                    })?;
                    let x: f64 = num.trim().parse().map_err(|_| {
                        format!("--budget latency={val}: expected milliseconds, e.g. latency=0.8ms")
                    })?;
                    if !(x.is_finite() && x > 0.0) {
                        return Err(format!(
                            "--budget latency={val}: the latency must be a positive number of milliseconds"
                        ));
                    }
                    BudgetTerm::LatencyMs(x)
                }
                _ => {
                    return Err(format!(
                        "--budget: unknown key `{key}`; the forms are {FORMS}"
                    ));
                }
            };
            if terms.iter().any(|t| t.key() == term.key()) {
                return Err(format!("--budget gives {} twice", term.key()));
            }
            terms.push(term);
        }
        Ok(Budget { terms })
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.terms.iter().map(|t| t.show(t.limit())).collect();
        f.write_str(&parts.join(","))
    }
}

/// One candidate of a layer and its measured error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    pub wbits: u8,
    pub abits: u8,
    pub error: f64,
}

/// A layer of the choice problem.
#[derive(Clone, Debug)]
pub struct LayerChoices {
    /// The layer's name as the quantization report spells it (the plan's key).
    pub layer: String,
    /// The activation it reads (its name): readers of one activation share its bits.
    pub input: String,
    pub weight_count: u64,
    pub out_channels: u64,
    pub macs: u64,
    pub choices: Vec<Choice>,
}

/// The choice problem: layers, candidates, and the target whose cost table prices them.
#[derive(Clone, Debug)]
pub struct Problem {
    pub layers: Vec<LayerChoices>,
    pub target: CostTarget,
}

/// The chosen bits, one candidate index per layer, and the plan's modelled totals.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub pick: Vec<usize>,
    /// Sum of the chosen candidates' errors.
    pub predicted_error: f64,
    pub avg_bits: f64,
    pub size_bytes: f64,
    pub latency_ms: f64,
}

impl Plan {
    /// The plan as `QuantOptions::layer_bits`.
    pub fn layer_bits(&self, p: &Problem) -> BTreeMap<String, (u8, u8)> {
        p.layers
            .iter()
            .zip(&self.pick)
            .map(|(l, &c)| (l.layer.clone(), (l.choices[c].wbits, l.choices[c].abits)))
            .collect()
    }

    pub fn value(&self, t: &BudgetTerm) -> f64 {
        match t {
            BudgetTerm::AvgBits(_) => self.avg_bits,
            BudgetTerm::Size(_) => self.size_bytes,
            BudgetTerm::LatencyMs(_) => self.latency_ms,
        }
    }
}

/// The weight bits the kernels see for a layer at (`w`, `a`): 1-bit weights under
/// multi-bit activations are codes +-1 of a 2-bit signed type (`binarize_weights`), so
/// they run, and are stored, as 2-bit weights; only binarized layers (`(1, 1)`) have
/// 1-bit kernels.
pub fn kernel_wbits(w: u8, a: u8) -> u8 {
    if w == 1 && a > 1 { 2 } else { w }
}

/// Modelled time (ns) of `macs` multiply-accumulates at (`w`, `a`) bits on `target`: the
/// fastest integer strategy's measured rate.
pub fn layer_ns(w: u8, a: u8, macs: u64, target: CostTarget) -> f64 {
    let w = kernel_wbits(w, a);
    Strategy::ALL
        .iter()
        .filter(|&&s| s != Strategy::F32Gemm)
        .map(|&s| costs::estimate_ns(s, w as u32, a as u32, macs, target))
        .fold(f64::INFINITY, f64::min)
}

impl Problem {
    /// The problem of a measured sensitivity, priced on `target`.
    pub fn from_sensitivity(s: &Sensitivity, target: CostTarget) -> Problem {
        Problem {
            layers: s
                .layers
                .iter()
                .map(|l| LayerChoices {
                    layer: l.layer.clone(),
                    input: l.input.clone(),
                    weight_count: l.weight_count,
                    out_channels: l.out_channels,
                    macs: l.macs,
                    choices: l
                        .candidates
                        .iter()
                        .map(|c| Choice {
                            wbits: c.wbits,
                            abits: c.abits,
                            error: c.error,
                        })
                        .collect(),
                })
                .collect(),
            target,
        }
    }

    /// Keeps, in every layer `fusable` names, only the candidates it lists (those the
    /// saturated e-graph holds an integer kernel for: `choice::fusable_candidates`);
    /// layers it does not name keep all theirs. Returns the number of candidates taken
    /// out, and the layers left with none (their candidates are kept: the build then
    /// reports what did not fuse).
    pub fn restrict(
        &mut self,
        fusable: &BTreeMap<String, std::collections::BTreeSet<(u8, u8)>>,
    ) -> (usize, Vec<String>) {
        let mut removed = 0;
        let mut empty = Vec::new();
        for l in &mut self.layers {
            let Some(ok) = fusable.get(&l.layer) else {
                continue;
            };
            let kept: Vec<Choice> = l
                .choices
                .iter()
                .copied()
                .filter(|c| ok.contains(&(c.wbits, c.abits)))
                .collect();
            if kept.is_empty() {
                empty.push(l.layer.clone());
                continue;
            }
            removed += l.choices.len() - kept.len();
            l.choices = kept;
        }
        (removed, empty)
    }

    fn total_weights(&self) -> f64 {
        self.layers
            .iter()
            .map(|l| l.weight_count as f64)
            .sum::<f64>()
            .max(1.0)
    }

    /// What candidate `c` of layer `l` adds to budget term `t` (in the term's unit).
    pub fn term_cost(&self, t: &BudgetTerm, l: usize, c: usize) -> f64 {
        let ly = &self.layers[l];
        let ch = ly.choices[c];
        match t {
            BudgetTerm::AvgBits(_) => {
                ly.weight_count as f64 * ch.wbits as f64 / self.total_weights()
            }
            BudgetTerm::Size(_) => {
                (ly.weight_count * kernel_wbits(ch.wbits, ch.abits) as u64).div_ceil(8) as f64
                    + 4.0 * ly.out_channels as f64
            }
            BudgetTerm::LatencyMs(_) => layer_ns(ch.wbits, ch.abits, ly.macs, self.target) / 1e6,
        }
    }

    /// The plan of candidate indices `pick`, with its totals.
    pub fn plan(&self, pick: Vec<usize>) -> Plan {
        let sum = |t: BudgetTerm| -> f64 {
            pick.iter()
                .enumerate()
                .map(|(l, &c)| self.term_cost(&t, l, c))
                .sum()
        };
        Plan {
            predicted_error: pick
                .iter()
                .enumerate()
                .map(|(l, &c)| self.layers[l].choices[c].error)
                .sum(),
            avg_bits: sum(BudgetTerm::AvgBits(0.0)),
            size_bytes: sum(BudgetTerm::Size(0)),
            latency_ms: sum(BudgetTerm::LatencyMs(0.0)),
            pick,
        }
    }

    /// Whether `pick` gives every activation one width.
    pub fn consistent(&self, pick: &[usize]) -> bool {
        let mut width: BTreeMap<&str, u8> = BTreeMap::new();
        self.layers.iter().zip(pick).all(|(l, &c)| {
            let a = l.choices[c].abits;
            *width.entry(l.input.as_str()).or_insert(a) == a
        })
    }

    fn check(&self) -> Result<(), String> {
        if self.layers.is_empty() {
            return Err("no conv/gemm/matmul layer to choose bits for".into());
        }
        for l in &self.layers {
            if l.choices.is_empty() {
                return Err(format!("layer {} has no candidate bit-widths", l.layer));
            }
            if let Some(c) = l.choices.iter().find(|c| !c.error.is_finite()) {
                return Err(format!(
                    "layer {}: the error of {}-bit weights x {}-bit activations is {} (sensitivity measurement failed)",
                    l.layer, c.wbits, c.abits, c.error
                ));
            }
        }
        Ok(())
    }

    /// Activation widths every reader of each activation offers: (activation, width).
    fn shared_widths(&self) -> BTreeMap<(&str, u8), Vec<(usize, usize)>> {
        let mut m: BTreeMap<(&str, u8), Vec<(usize, usize)>> = BTreeMap::new();
        for (l, ly) in self.layers.iter().enumerate() {
            for (c, ch) in ly.choices.iter().enumerate() {
                m.entry((ly.input.as_str(), ch.abits))
                    .or_default()
                    .push((l, c));
            }
        }
        m
    }
}

/// The integer program: minimise `objective` (per candidate) subject to one candidate
/// per layer, shared activation widths, and `limits` (term, limit) on the budget terms.
fn solve_ilp(
    p: &Problem,
    objective: &dyn Fn(usize, usize) -> f64,
    limits: &[(BudgetTerm, f64)],
) -> Result<Option<Vec<usize>>, String> {
    use good_lp::{
        Expression, ProblemVariables, ResolutionError, Solution, SolverModel, Variable, microlp,
        variable,
    };
    let mut vars = ProblemVariables::new();
    let x: Vec<Vec<Variable>> = p
        .layers
        .iter()
        .map(|l| {
            l.choices
                .iter()
                .map(|_| vars.add(variable().binary()))
                .collect()
        })
        .collect();
    let shared = p.shared_widths();
    let y: BTreeMap<(&str, u8), Variable> = shared
        .keys()
        .map(|&k| (k, vars.add(variable().binary())))
        .collect();
    let mut obj = Expression::from(0.0);
    for (l, xs) in x.iter().enumerate() {
        for (c, &v) in xs.iter().enumerate() {
            obj += objective(l, c) * v;
        }
    }
    let mut model = vars.minimise(obj).using(microlp);
    for xs in &x {
        let one: Expression = xs.iter().map(|&v| Expression::from(v)).sum();
        model = model.with(one.eq(1.0));
    }
    // Each reader's choice of width equals its activation's width.
    for (l, ly) in p.layers.iter().enumerate() {
        let widths: std::collections::BTreeSet<u8> = ly.choices.iter().map(|c| c.abits).collect();
        for (&(act, a), &yv) in &y {
            if act != ly.input {
                continue;
            }
            let sel: Expression = ly
                .choices
                .iter()
                .enumerate()
                .filter(|(_, c)| c.abits == a)
                .map(|(c, _)| Expression::from(x[l][c]))
                .sum();
            if widths.contains(&a) {
                model = model.with(sel.eq(yv));
            } else {
                model = model.with(Expression::from(yv).eq(0.0));
            }
        }
    }
    for (t, limit) in limits {
        let mut e = Expression::from(0.0);
        for (l, xs) in x.iter().enumerate() {
            for (c, &v) in xs.iter().enumerate() {
                e += p.term_cost(t, l, c) * v;
            }
        }
        model = model.with(e.leq(*limit));
    }
    // microlp reports trouble on hard instances by panicking; turn that into an error.
    let solved =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.solve())).map_err(|_| {
            "internal: the ILP solver (microlp) failed on the bit-width problem".to_string()
        })?;
    let sol = match solved {
        Ok(s) => s,
        Err(ResolutionError::Infeasible) => return Ok(None),
        Err(e) => return Err(format!("internal: the ILP solver: {e}")),
    };
    let pick: Vec<usize> = x
        .iter()
        .map(|xs| {
            xs.iter()
                .enumerate()
                .max_by(|a, b| sol.value(*a.1).total_cmp(&sol.value(*b.1)))
                .map(|(c, _)| c)
                .unwrap_or(0)
        })
        .collect();
    Ok(Some(pick))
}

/// Relative slack on budget limits, so that a plan exactly at the limit is not lost to
/// the solver's floating-point tolerance.
const SLACK: f64 = 1e-9;

fn infeasible(p: &Problem, budget: &Budget) -> Result<String, String> {
    let mut msg = String::new();
    for t in &budget.terms {
        let min = solve_ilp(p, &|l, c| p.term_cost(t, l, c), &[])?
            .map(|pick| p.plan(pick).value(t))
            .unwrap_or(f64::INFINITY);
        if min > t.limit() * (1.0 + SLACK) {
            return Ok(format!(
                "--budget {} is infeasible: the smallest feasible value is {} (every layer at its cheapest candidate that keeps activations consistent)",
                t.show(t.limit()),
                t.show(min)
            ));
        }
        msg.push_str(&format!(
            "{} (alone feasible down to {}); ",
            t.show(t.limit()),
            t.show(min)
        ));
    }
    Ok(format!(
        "--budget {budget}: the terms cannot all be met at once: {}relax one of them",
        msg
    ))
}

fn limits(budget: &Budget) -> Vec<(BudgetTerm, f64)> {
    budget
        .terms
        .iter()
        .map(|t| (*t, t.limit() * (1.0 + SLACK)))
        .collect()
}

/// The exact choice: least total error under the budget.
pub fn solve_exact(p: &Problem, budget: &Budget) -> Result<Plan, String> {
    p.check()?;
    match solve_ilp(p, &|l, c| p.layers[l].choices[c].error, &limits(budget))? {
        Some(pick) => Ok(p.plan(pick)),
        None => Err(infeasible(p, budget)?),
    }
}

/// Options of [`solve_attention`].
#[derive(Clone, Debug)]
pub struct AttentionOptions {
    /// Gradient steps over the annealing schedule.
    pub steps: usize,
    pub lr: f64,
    /// Start and end temperature of the softmax (annealed geometrically).
    pub t_start: f64,
    pub t_end: f64,
    /// Bisection steps on the penalty weight.
    pub bisect: usize,
}

impl Default for AttentionOptions {
    fn default() -> Self {
        AttentionOptions {
            steps: 400,
            lr: 0.5,
            t_start: 100.0,
            t_end: 0.03,
            bisect: 40,
        }
    }
}

/// One run of the attention relaxation at penalty weight `lambda`: the argmax of each
/// layer's attention after annealing (activation widths made consistent by letting the
/// reader with the most weights decide and the others take their best candidate at it).
fn attention_run(p: &Problem, budget: &Budget, lambda: f64, o: &AttentionOptions) -> Vec<usize> {
    // Normalised errors and costs: the penalty is lambda * g^T a / S, g the bit cost of
    // each candidate summed over the budget's terms relative to their limits.
    let emax = p
        .layers
        .iter()
        .flat_map(|l| l.choices.iter().map(|c| c.error))
        .fold(0f64, f64::max)
        .max(1e-30);
    let g: Vec<Vec<f64>> = (0..p.layers.len())
        .map(|l| {
            (0..p.layers[l].choices.len())
                .map(|c| {
                    budget
                        .terms
                        .iter()
                        .map(|t| p.term_cost(t, l, c) / t.limit())
                        .sum()
                })
                .collect()
        })
        .collect();
    let s = budget.terms.len().max(1) as f64;
    let mut alpha: Vec<Vec<f64>> = p
        .layers
        .iter()
        .map(|l| vec![0.0; l.choices.len()])
        .collect();
    for step in 0..o.steps {
        let frac = step as f64 / (o.steps.max(2) - 1) as f64;
        let temp = o.t_start * (o.t_end / o.t_start).powf(frac);
        for (l, al) in alpha.iter_mut().enumerate() {
            // Normalise the logits by their standard deviation.
            let n = al.len() as f64;
            let mean = al.iter().sum::<f64>() / n;
            let sd = (al.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / n).sqrt();
            if sd > 1e-12 {
                for a in al.iter_mut() {
                    *a = (*a - mean) / sd;
                }
            }
            let z: Vec<f64> = al.iter().map(|a| a / temp).collect();
            let zm = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let ex: Vec<f64> = z.iter().map(|v| (v - zm).exp()).collect();
            let sum: f64 = ex.iter().sum();
            let pr: Vec<f64> = ex.iter().map(|v| v / sum).collect();
            // Loss_l = sum_c pr_c * (e_c / emax + lambda * g_c / S).
            let f: Vec<f64> = (0..al.len())
                .map(|c| p.layers[l].choices[c].error / emax + lambda * g[l][c] / s)
                .collect();
            let fbar: f64 = pr.iter().zip(&f).map(|(a, b)| a * b).sum();
            // d(sum pr f)/d alpha_c = pr_c (f_c - fbar) / T; the step is scaled to its
            // largest component, as the logits are renormalised every step anyway.
            let grad: Vec<f64> = (0..al.len())
                .map(|c| pr[c] * (f[c] - fbar) / temp)
                .collect();
            let gmax = grad.iter().fold(0f64, |m, g| m.max(g.abs()));
            if gmax > 0.0 {
                for (a, g) in al.iter_mut().zip(&grad) {
                    *a -= o.lr * g / gmax;
                }
            }
        }
    }
    let mut pick: Vec<usize> = alpha
        .iter()
        .map(|al| {
            al.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(c, _)| c)
                .unwrap_or(0)
        })
        .collect();
    // Consistent activation widths: the reader with the most weights decides.
    let mut order: Vec<usize> = (0..p.layers.len()).collect();
    order.sort_by_key(|&l| std::cmp::Reverse(p.layers[l].weight_count));
    let mut width: BTreeMap<&str, u8> = BTreeMap::new();
    for &l in &order {
        let ly = &p.layers[l];
        match width.get(ly.input.as_str()) {
            None => {
                width.insert(&ly.input, ly.choices[pick[l]].abits);
            }
            Some(&a) if ly.choices[pick[l]].abits != a => {
                let al = &alpha[l];
                if let Some(c) = (0..ly.choices.len())
                    .filter(|&c| ly.choices[c].abits == a)
                    .max_by(|&x, &y| al[x].total_cmp(&al[y]))
                {
                    pick[l] = c;
                }
            }
            Some(_) => {}
        }
    }
    pick
}

/// The DQA-attention choice: the smallest penalty weight (by bisection) whose annealed
/// attention meets the budget.
pub fn solve_attention(p: &Problem, budget: &Budget, o: &AttentionOptions) -> Result<Plan, String> {
    p.check()?;
    let meets = |pick: &[usize]| -> bool {
        p.consistent(pick) && {
            let plan = p.plan(pick.to_vec());
            budget
                .terms
                .iter()
                .all(|t| plan.value(t) <= t.limit() * (1.0 + SLACK))
        }
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    let mut best: Option<Vec<usize>> = None;
    let first = attention_run(p, budget, lo, o);
    if meets(&first) {
        return Ok(p.plan(first));
    }
    // Grow the penalty until the budget is met.
    loop {
        let pick = attention_run(p, budget, hi, o);
        if meets(&pick) {
            best = Some(pick);
            break;
        }
        if hi > 1e9 {
            break;
        }
        lo = hi;
        hi *= 4.0;
    }
    let Some(mut best) = best else {
        return Err(infeasible(p, budget)?);
    };
    for _ in 0..o.bisect {
        let mid = 0.5 * (lo + hi);
        let pick = attention_run(p, budget, mid, o);
        if meets(&pick) {
            hi = mid;
            best = pick;
        } else {
            lo = mid;
        }
    }
    Ok(p.plan(best))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(w: u8, a: u8, e: f64) -> Choice {
        Choice {
            wbits: w,
            abits: a,
            error: e,
        }
    }

    #[test]
    fn budgets_parse_and_bad_ones_name_the_problem() {
        let b: Budget = "avg-bits=3,size=40KB, latency=0.5ms".parse().unwrap();
        assert_eq!(
            b.terms,
            vec![
                BudgetTerm::AvgBits(3.0),
                BudgetTerm::Size(40_000),
                BudgetTerm::LatencyMs(0.5)
            ]
        );
        assert_eq!(
            "size=1.5MB".parse::<Budget>().unwrap().terms,
            vec![BudgetTerm::Size(1_500_000)]
        );
        for (bad, says) in [
            ("avg-bits=0.5", "1..8"),
            ("size=-3", "positive"),
            ("latency=fast", "milliseconds"),
            ("speed=3", "unknown key `speed`"),
            ("avg-bits", "KEY=VALUE"),
            ("avg-bits=3,avg-bits=4", "twice"),
        ] {
            let e = bad.parse::<Budget>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    /// A small problem: two layers read activation `a`, one reads `b`; every layer
    /// offers 2/4/8-bit weights at 2/4/8-bit activations and the middle one binary.
    fn small(seed: u64) -> Problem {
        let mut s = seed;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f64) / (1u64 << 31) as f64
        };
        let inputs = ["x", "a", "a", "b"];
        let layers = inputs
            .iter()
            .enumerate()
            .map(|(i, inp)| {
                let mut choices = Vec::new();
                for w in [2u8, 4, 8] {
                    for a in [2u8, 4, 8] {
                        choices.push(ch(w, a, rnd() * 2f64.powi(-(w as i32 + a as i32) / 2)));
                    }
                }
                if *inp == "a" {
                    choices.push(ch(1, 1, rnd()));
                }
                LayerChoices {
                    layer: format!("l{i}"),
                    input: inp.to_string(),
                    weight_count: 100 * (i as u64 + 1),
                    out_channels: 8,
                    macs: 10_000 * (i as u64 + 1),
                    choices,
                }
            })
            .collect();
        Problem {
            layers,
            target: CostTarget::X86_64Native,
        }
    }

    fn brute(p: &Problem, budget: &Budget) -> Option<Plan> {
        let n = p.layers.len();
        let mut pick = vec![0usize; n];
        let mut best: Option<Plan> = None;
        loop {
            if p.consistent(&pick) {
                let plan = p.plan(pick.clone());
                if budget
                    .terms
                    .iter()
                    .all(|t| plan.value(t) <= t.limit() * (1.0 + SLACK))
                    && best
                        .as_ref()
                        .is_none_or(|b| plan.predicted_error < b.predicted_error)
                {
                    best = Some(plan);
                }
            }
            let mut i = 0;
            loop {
                if i == n {
                    return best;
                }
                pick[i] += 1;
                if pick[i] < p.layers[i].choices.len() {
                    break;
                }
                pick[i] = 0;
                i += 1;
            }
        }
    }

    #[test]
    fn exact_choice_equals_brute_force() {
        for seed in 0..12u64 {
            let p = small(seed);
            for budget in [
                "avg-bits=3",
                "avg-bits=2.2",
                "avg-bits=5,size=600B",
                "avg-bits=1.6",
            ] {
                let b: Budget = budget.parse().unwrap();
                let want = brute(&p, &b);
                let got = solve_exact(&p, &b);
                match (want, got) {
                    (Some(w), Ok(g)) => {
                        assert!(p.consistent(&g.pick), "seed {seed} {budget}: inconsistent");
                        assert!(
                            (w.predicted_error - g.predicted_error).abs()
                                <= 1e-9 * w.predicted_error.max(1e-12),
                            "seed {seed} {budget}: brute force {} vs solver {}",
                            w.predicted_error,
                            g.predicted_error
                        );
                    }
                    (None, Err(e)) => {
                        assert!(e.contains("infeasible") || e.contains("cannot all"), "{e}")
                    }
                    (w, g) => panic!("seed {seed} {budget}: brute force {w:?}, solver {g:?}"),
                }
            }
        }
    }

    #[test]
    fn infeasible_budget_names_the_smallest_value() {
        let p = small(1);
        // The smallest average: l0 and l3 at 2 bits, l1 and l2 binary.
        let e = solve_exact(&p, &"avg-bits=1".parse().unwrap()).unwrap_err();
        let wmin = (100.0 * 2.0 + 200.0 + 300.0 + 400.0 * 2.0) / 1000.0;
        assert!(e.contains(&format!("avg-bits={wmin:.3}")), "{e}");
    }

    #[test]
    fn attention_meets_the_budget_and_is_never_better_than_exact() {
        for seed in 0..6u64 {
            let p = small(seed);
            let b: Budget = "avg-bits=3".parse().unwrap();
            let ex = solve_exact(&p, &b).unwrap();
            let at = solve_attention(&p, &b, &AttentionOptions::default()).unwrap();
            assert!(p.consistent(&at.pick));
            assert!(at.avg_bits <= 3.0 + 1e-9, "{}", at.avg_bits);
            assert!(at.predicted_error >= ex.predicted_error - 1e-12);
        }
    }
}
