//! A module cut into consecutive segments, each compiled on its own, so that a
//! measurement can change what flows between them without recompiling anything.
//!
//! The `--bits 1` fitting refines the binarized layers in order, each on the module with
//! the layers before it refined. Rerunning the whole module (or even the prefix) per
//! layer and per sample costs `layers x samples` full runs and a recompile per layer.
//! Cut at the layers instead: segment `k` runs the nodes after layer `k - 1`'s result up
//! to layer `k`'s, from the values live at its start (the "state": the graph input for
//! the first segment) to those live at its end. Every sample's state is kept between
//! passes, so each segment runs once per sample in all, and a refinement of layer `k`
//! (an affine map of its result per channel) is applied to the stored result.
//!
//! Constant-only subgraphs (a weight's `dequantize`) are never cut: a segment that uses
//! one gets its nodes, so kernels keep constant weights.

use std::collections::BTreeMap;

use qcc_ir::interp::Tensor;
use qcc_ir::{Module, ValueDef, ValueId};

use super::tap::{Engine, Tapped};

/// The values live between segments, by id in the whole module.
pub(crate) type State = BTreeMap<ValueId, Tensor>;

struct Segment {
    run: Tapped<'static>,
    /// Its inputs and outputs, by id in the whole module.
    ins: Vec<ValueId>,
    outs: Vec<ValueId>,
    /// Values of the state that no later segment reads.
    dead: Vec<ValueId>,
}

/// `m` cut after each value of `ends` (node results, in node order).
pub(crate) struct Chain {
    segs: Vec<Segment>,
    ends: Vec<ValueId>,
    /// Why a segment runs on the interpreter, if one does.
    pub note: Option<String>,
}

/// Per value: whether it is computed from constants alone.
fn constant_derived(m: &Module) -> Vec<bool> {
    let mut cd: Vec<bool> = m
        .values
        .iter()
        .map(|v| matches!(v.def, ValueDef::Const(_)))
        .collect();
    for n in &m.nodes {
        if n.operands.iter().all(|o| cd[o.index()]) {
            cd[n.result.index()] = true;
        }
    }
    cd
}

impl Chain {
    /// Cuts `m` after the nodes computing `ends` (which must come in node order) and
    /// compiles the segments by `engine`. Nodes after the last end are left out.
    pub fn new(m: &Module, ends: &[ValueId], engine: Engine, what: &str) -> Result<Chain, String> {
        let node_of = |v: ValueId| match m.value(v).def {
            ValueDef::Node(n) => Ok(n.index()),
            _ => Err(format!(
                "internal: {} is not a node result",
                m.value(v).spelling()
            )),
        };
        let mut bounds = Vec::with_capacity(ends.len());
        for &v in ends {
            let b = node_of(v)?;
            if bounds.last().is_some_and(|&p| b <= p) {
                return Err(format!(
                    "internal: {} comes before the previous cut",
                    m.value(v).spelling()
                ));
            }
            bounds.push(b);
        }
        let cd = constant_derived(m);
        // Per node: its segment (usize::MAX after the last end).
        let mut seg_of = vec![usize::MAX; m.nodes.len()];
        let mut k = 0;
        for (i, s) in seg_of.iter_mut().enumerate() {
            while k < bounds.len() && i > bounds[k] {
                k += 1;
            }
            if k < bounds.len() {
                *s = k;
            }
        }
        // Per value: the last segment reading it at run time.
        let mut last_read: Vec<Option<usize>> = vec![None; m.values.len()];
        for (i, n) in m.nodes.iter().enumerate() {
            let s = seg_of[i];
            if s == usize::MAX {
                continue;
            }
            for &o in &n.operands {
                if !cd[o.index()] {
                    let l = &mut last_read[o.index()];
                    *l = Some(l.map_or(s, |x| x.max(s)));
                }
            }
        }
        let def_seg = |v: ValueId| match m.value(v).def {
            ValueDef::Node(n) => Some(seg_of[n.index()]),
            _ => None,
        };
        let mut segs = Vec::with_capacity(bounds.len());
        let mut note = None;
        let mut live: Vec<ValueId> = m.inputs.clone();
        for (k, &end) in ends.iter().enumerate() {
            // Inputs: values read by the segment's nodes but computed before it at run
            // time (constant subgraphs are recomputed inside).
            let mut ins: Vec<ValueId> = Vec::new();
            for (i, n) in m.nodes.iter().enumerate() {
                if seg_of[i] != k {
                    continue;
                }
                for &o in &n.operands {
                    let outside = match m.value(o).def {
                        ValueDef::Node(p) => seg_of[p.index()] != k && !cd[o.index()],
                        ValueDef::Input => true,
                        ValueDef::Const(_) => false,
                    };
                    if outside && !ins.contains(&o) {
                        ins.push(o);
                    }
                }
            }
            ins.sort();
            let mut outs: Vec<ValueId> = m
                .nodes
                .iter()
                .enumerate()
                .filter(|&(i, n)| {
                    seg_of[i] == k
                        && !cd[n.result.index()]
                        && last_read[n.result.index()].is_some_and(|l| l > k)
                })
                .map(|(_, n)| n.result)
                .collect();
            if !outs.contains(&end) {
                outs.push(end);
            }
            live.extend(outs.iter().copied());
            let dead: Vec<ValueId> = live
                .iter()
                .copied()
                .filter(|v| last_read[v.index()].is_none_or(|l| l <= k))
                .collect();
            live.retain(|v| !dead.contains(v));
            debug_assert!(ins.iter().all(|&v| def_seg(v).is_none_or(|s| s < k)));
            let run = Tapped::owned(slice(m, &ins, &outs)?, &[], engine, what);
            if note.is_none() {
                note = run.note.clone();
            }
            segs.push(Segment {
                run,
                ins,
                outs,
                dead,
            });
        }
        Ok(Chain {
            segs,
            ends: ends.to_vec(),
            note,
        })
    }

    /// The state before the first segment.
    pub fn start(&self, m: &Module, inputs: Vec<Tensor>) -> State {
        m.inputs.iter().copied().zip(inputs).collect()
    }

    /// Runs segment `k` on `state` (which then holds the values live after it) and
    /// returns the value it ends at.
    pub fn run(&self, k: usize, state: &mut State) -> Result<Tensor, String> {
        self.run_with(k, &self.segs[k].run, state)
    }

    /// The values segment `k` reads and those it gives (ids of the chain's module).
    pub fn segment_io(&self, k: usize) -> (&[ValueId], &[ValueId]) {
        let s = &self.segs[k];
        (&s.ins, &s.outs)
    }

    /// As [`Chain::run`], with segment `k` computed by `run` (a variant of the segment
    /// with the same inputs and outputs).
    pub fn run_with(
        &self,
        k: usize,
        run: &Tapped<'_>,
        state: &mut State,
    ) -> Result<Tensor, String> {
        let s = &self.segs[k];
        let ins: Vec<Tensor> = s
            .ins
            .iter()
            .map(|v| {
                state
                    .get(v)
                    .cloned()
                    .ok_or_else(|| format!("internal: segment {k} misses value {}", v.0))
            })
            .collect::<Result<_, _>>()?;
        let outs = run.run(&ins, &mut |_, _, _| {})?;
        let mut end = None;
        for (&v, t) in s.outs.iter().zip(outs) {
            if v == self.ends[k] {
                end = Some(t.clone());
            }
            state.insert(v, t);
        }
        for v in &s.dead {
            state.remove(v);
        }
        end.ok_or_else(|| format!("internal: segment {k} computes no end value"))
    }
}

/// The module computing `outs` of `m` from `ins` (made graph inputs): the nodes between
/// them, constant subgraphs included; value ids renumbered.
fn slice(m: &Module, ins: &[ValueId], outs: &[ValueId]) -> Result<Module, String> {
    Ok(shell(m, ins, outs)?.compacted())
}

/// `compact` as a method chain.
pub(crate) trait Compacted {
    fn compacted(self) -> Self;
}

impl Compacted for Module {
    fn compacted(mut self) -> Module {
        self.compact();
        self
    }
}

/// As [`slice`], keeping the value ids of `m`: values the slice does not use are left as
/// unreferenced stand-ins without data (so `compact` drops them and names stay taken).
pub(crate) fn shell(m: &Module, ins: &[ValueId], outs: &[ValueId]) -> Result<Module, String> {
    let mut is_in = vec![false; m.values.len()];
    for &v in ins {
        is_in[v.index()] = true;
    }
    let mut keep = vec![false; m.nodes.len()];
    let mut used = vec![false; m.values.len()];
    let mut stack: Vec<ValueId> = outs.to_vec();
    while let Some(v) = stack.pop() {
        if used[v.index()] {
            continue;
        }
        used[v.index()] = true;
        if is_in[v.index()] {
            continue;
        }
        match m.value(v).def {
            ValueDef::Node(n) => {
                keep[n.index()] = true;
                stack.extend(m.node(n).operands.iter().copied());
            }
            ValueDef::Const(_) => {}
            ValueDef::Input => {
                return Err(format!(
                    "internal: the segment needs input {} it is not given",
                    m.value(v).spelling()
                ));
            }
        }
    }
    let values = m
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if is_in[i] {
                qcc_ir::Value {
                    def: ValueDef::Input,
                    ..v.clone()
                }
            } else if used[i] {
                v.clone()
            } else {
                qcc_ir::Value {
                    name: v.name.clone(),
                    ty: v.ty.clone(),
                    def: ValueDef::Input,
                }
            }
        })
        .collect();
    let nodes = m
        .nodes
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(n, _)| n.clone())
        .collect();
    let mut c = Module {
        name: m.name.clone(),
        values,
        inputs: ins.to_vec(),
        nodes,
        outputs: outs.to_vec(),
    };
    for (i, n) in c.nodes.iter().enumerate() {
        let r = n.result;
        c.values[r.index()].def = ValueDef::Node(qcc_ir::NodeId(i as u32));
    }
    Ok(c)
}
