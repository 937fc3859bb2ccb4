//! The memory plan: where every run-time value lives while the model runs.
//!
//! Graph inputs stay in the caller's input buffers and outputs are written straight
//! into the caller's output buffers; every other value, and every kernel's workspace,
//! gets an offset in one scratch arena. A value occupies its bytes from the step that
//! writes it to the last step that reads it (or reads a view of it); values whose
//! lifetimes do not overlap share bytes. Placement is greedy in step order at the
//! lowest 64-byte-aligned offset that overlaps no live value (deterministic).

use qcc_ir::{Module, ValueDef, ValueId};

use super::select::{Dest, Schedule};
use super::storage::Store;

/// Alignment of every arena offset and of the arena itself.
pub const ALIGN: u64 = 64;

/// Where a value's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// Not materialised (a constant, or a value fused away).
    None,
    Input(usize),
    Output(usize),
    Scratch(u64),
}

#[derive(Clone, Debug)]
pub struct MemoryPlan {
    /// Per value (views resolved to their root's location).
    pub loc: Vec<Loc>,
    /// Per step: the workspace's arena offset and size in bytes.
    pub workspace: Vec<(u64, u64)>,
    /// Bytes of scratch the caller provides.
    pub arena: u64,
    /// Sum of the sizes of all run-time tensors (what a plan without reuse would need).
    pub tensor_bytes: u64,
}

pub(crate) fn value_bytes(m: &Module, v: ValueId) -> u64 {
    let ty = m.ty(v);
    (ty.numel() * Store::of(&ty.elem).bytes()) as u64
}

fn align(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

pub(crate) fn plan(m: &Module, s: &Schedule) -> MemoryPlan {
    plan_with(m, s, &|si| s.steps[si].lowering.workspace() as u64, &|si| {
        si..si + 1
    })
}

/// The plan with step `si`'s workspace `ws(si)` bytes (the threaded entry gives a split
/// step one slot per task), where the steps of `span(si)` (a range holding `si`) run at
/// once: a value live at any step of a span is live through all of it, so that steps
/// running as one job (`split::jobs`) never write what another of them reads.
pub(crate) fn plan_with(
    m: &Module,
    s: &Schedule,
    ws: &dyn Fn(usize) -> u64,
    span: &dyn Fn(usize) -> std::ops::Range<usize>,
) -> MemoryPlan {
    let nv = m.values.len();
    let mut loc = vec![Loc::None; nv];
    for (i, &id) in m.inputs.iter().enumerate() {
        loc[id.index()] = Loc::Input(i);
    }
    // Intervals [first step, last step] of arena-resident roots.
    let mut def_step: Vec<Option<usize>> = vec![None; nv];
    let mut last_use: Vec<Option<usize>> = vec![None; nv];
    for (si, st) in s.steps.iter().enumerate() {
        if let Dest::Value(v) = st.dest {
            def_step[v.index()] = Some(si);
            last_use[v.index()] = Some(si);
        }
        if let Dest::Output(j) = st.dest
            && st.node.is_some()
        {
            let v = m.outputs[j];
            loc[v.index()] = Loc::Output(j);
        }
        for &r in &st.reads {
            let root = s.root[r.index()];
            let l = &mut last_use[root.index()];
            *l = Some(l.map_or(si, |x| x.max(si)));
        }
    }
    // Items to place: (start, end, size, what).
    enum What {
        Value(ValueId),
        Workspace(usize),
    }
    let mut items: Vec<(usize, usize, u64, What)> = Vec::new();
    for (si, st) in s.steps.iter().enumerate() {
        if let Dest::Value(v) = st.dest {
            let end = last_use[v.index()].unwrap_or(si);
            items.push((si, end, value_bytes(m, v), What::Value(v)));
        }
        let ws = ws(si);
        if ws > 0 {
            items.push((si, si, ws, What::Workspace(si)));
        }
    }
    let mut placed: Vec<(usize, usize, u64, u64)> = Vec::new(); // start, end, off, size
    let mut workspace = vec![(0u64, 0u64); s.steps.len()];
    let mut arena = 0u64;
    for (start, end, size, what) in items {
        let (start, end) = (span(start).start, span(end).end - 1);
        let size = align(size.max(1));
        let mut live: Vec<(u64, u64)> = placed
            .iter()
            .filter(|p| p.0 <= end && start <= p.1)
            .map(|p| (p.2, p.2 + p.3))
            .collect();
        live.sort();
        let mut off = 0u64;
        for (a, b) in live {
            if off + size <= a {
                break;
            }
            off = off.max(align(b));
        }
        placed.push((start, end, off, size));
        arena = arena.max(off + size);
        match what {
            What::Value(v) => loc[v.index()] = Loc::Scratch(off),
            What::Workspace(si) => workspace[si] = (off, size),
        }
    }
    // Views share their root's location.
    for v in 0..nv {
        let r = s.root[v];
        if r.index() != v && loc[v] == Loc::None {
            loc[v] = loc[r.index()];
        }
    }
    let tensor_bytes = m
        .values
        .iter()
        .enumerate()
        .filter(|(i, v)| {
            !matches!(v.def, ValueDef::Const(_)) && s.root[*i].index() == *i && !s.absorbed[*i]
        })
        .map(|(i, _)| value_bytes(m, ValueId(i as u32)))
        .sum();
    MemoryPlan {
        loc,
        workspace,
        arena,
        tensor_bytes,
    }
}
