//! The schedule: the ordered steps the entry function runs, decided for the whole module
//! before any code is generated.
//!
//! - Views (reshape, flatten, squeeze, unsqueeze) cost nothing: their result aliases the
//!   operand's bytes. A view of a constant is a constant.
//! - An activation (relu, clip; silu after a conv) whose operand is an f32 conv or gemm
//!   used only by it is fused into that kernel's epilogue; a requantize after an integer
//!   conv/matmul is fused the same way (see `kernels::quant`), and so is the f32 form of
//!   its result: the `cast` naming the accumulator's scale, the `dequantize`, and the
//!   `add` of a constant bias after it (`kernels::quant::Deq`).
//! - A plain integer add/sub/mul whose operands are requantizes used only by it and
//!   whose result is used only by a requantize becomes one fused kernel (see
//!   `kernels::intelem`): the step sits at the add, reads the requantizes' operands, and
//!   the three requantizes are fused into it.
//! - Every graph output is written by the kernel that computes it; outputs that are
//!   inputs, constants, views or repeated get a copy step at the end.
//!
//! Every node that cannot be lowered is collected, so the error lists them all.

use qcc_ir::{ConstData, Module, Node, Op, ValueDef, ValueId};

use super::kernels::{self, Lowering};
use super::storage::Store;
use super::{BackendError, Unsupported};

/// Where a step writes its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dest {
    Value(ValueId),
    Output(usize),
}

/// One call of the entry function.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    /// The node whose operands the kernel reads (None for output copies).
    pub node: Option<usize>,
    /// Nodes fused into it (their results are never materialised).
    pub fused: Vec<usize>,
    /// Run-time values read, in the node's operand order (constants left out).
    pub reads: Vec<ValueId>,
    /// Per operand of the node: whether it is read at run time.
    pub runtime_operand: Vec<bool>,
    pub dest: Dest,
    pub lowering: Lowering,
}

#[derive(Debug)]
pub(crate) struct Schedule {
    pub steps: Vec<Step>,
    /// Per value: the value whose bytes it shares (itself unless a view).
    pub root: Vec<ValueId>,
    /// Per value: the constant it is (following views), if any.
    pub const_root: Vec<Option<ValueId>>,
    /// Per value: whether it is a node result no step writes (fused away).
    pub absorbed: Vec<bool>,
}

impl Schedule {
    pub fn const_data<'m>(&self, m: &'m Module, v: ValueId) -> Option<&'m ConstData> {
        self.const_root[v.index()].and_then(|c| m.const_data(c))
    }
}

/// Nodes whose result is its operand's bytes unchanged.
fn is_view(m: &Module, node: &Node) -> bool {
    match node.op {
        Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze => true,
        Op::Cast => kernels::is_relabel(&m.ty(node.operands[0]).elem, &m.ty(node.result).elem),
        _ => false,
    }
}

/// The schedule of `m`'s nodes and their lowerings for `target` (whose measured kernel
/// costs decide between strategies).
pub(crate) fn schedule(
    m: &Module,
    target: crate::backend::costs::CostTarget,
) -> Result<Schedule, BackendError> {
    let nv = m.values.len();
    let users = m.users();
    let is_output = |v: ValueId| m.outputs.contains(&v);
    let mut root: Vec<ValueId> = (0..nv as u32).map(ValueId).collect();
    let mut const_root: Vec<Option<ValueId>> = m
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| matches!(v.def, ValueDef::Const(_)).then_some(ValueId(i as u32)))
        .collect();
    let mut absorbed = vec![false; nv];
    let mut direct_output: Vec<Option<usize>> = vec![None; nv];
    let mut steps = Vec::new();
    let mut bad = Vec::new();
    let mut skip = vec![false; m.nodes.len()];
    let mut int_groups = fused_int_groups(m, &users, &is_output);
    for g in int_groups.values() {
        skip[g.rq_a] = true;
        skip[g.rq_b] = true;
    }

    for (ni, node) in m.nodes.iter().enumerate() {
        if skip[ni] {
            continue;
        }
        if let Some(g) = int_groups.remove(&ni) {
            let srcs = [m.nodes[g.rq_a].operands[0], m.nodes[g.rq_b].operands[0]];
            if srcs.iter().any(|s| const_root[s.index()].is_some()) {
                bad.push(unsupported(
                    m,
                    ni,
                    "a fused integer add of a constant operand is not lowered".into(),
                ));
                continue;
            }
            let out_node = &m.nodes[g.rq_out];
            skip[g.rq_out] = true;
            for v in [m.nodes[g.rq_a].result, m.nodes[g.rq_b].result, node.result] {
                absorbed[v.index()] = true;
            }
            let final_res = out_node.result;
            let dest = match m.outputs.iter().position(|&o| o == final_res) {
                Some(j) => {
                    direct_output[final_res.index()] = Some(j);
                    Dest::Output(j)
                }
                None => Dest::Value(final_res),
            };
            steps.push(Step {
                node: Some(ni),
                fused: vec![g.rq_a, g.rq_b, g.rq_out],
                reads: srcs.to_vec(),
                runtime_operand: vec![true, true],
                dest,
                lowering: Lowering::Int(g.lowering),
            });
            continue;
        }
        let res = node.result;
        // Views alias their operand (unless the result must land in an output buffer).
        if is_view(m, node) && !is_output(res) {
            let src = node.operands[0];
            root[res.index()] = root[src.index()];
            const_root[res.index()] = const_root[src.index()];
            continue;
        }
        // An integer kernel's f32 result: `cast` (a relabel) -> `dequantize` [-> `add`
        // of a constant bias], fused into the kernel's epilogue, the longest chain the
        // kernel takes.
        if matches!(node.op, Op::Conv2dInt | Op::MatMulInt) {
            let chain = deq_chain(m, &users, res, &is_output);
            let const_of = |v: ValueId| const_root[v.index()].and_then(|c| m.const_data(c));
            let pick = (2..=chain.len()).rev().find_map(|len| {
                kernels::select(m, node, Some(&m.nodes[chain[len - 1]]), &const_of, target)
                    .ok()
                    .map(|l| (len, l))
            });
            if let Some((len, lowering)) = pick
                && lowering.workspace() <= i32::MAX as usize
            {
                let fused: Vec<usize> = chain[..len].to_vec();
                absorbed[res.index()] = true;
                for &f in &fused {
                    skip[f] = true;
                }
                for &f in &fused[..len - 1] {
                    absorbed[m.nodes[f].result.index()] = true;
                }
                let final_res = m.nodes[fused[len - 1]].result;
                let runtime_operand: Vec<bool> = node
                    .operands
                    .iter()
                    .map(|&o| const_root[o.index()].is_none())
                    .collect();
                let reads = node
                    .operands
                    .iter()
                    .zip(&runtime_operand)
                    .filter(|(_, rt)| **rt)
                    .map(|(&o, _)| o)
                    .collect();
                let dest = match m.outputs.iter().position(|&o| o == final_res) {
                    Some(j) => {
                        direct_output[final_res.index()] = Some(j);
                        Dest::Output(j)
                    }
                    None => Dest::Value(final_res),
                };
                steps.push(Step {
                    node: Some(ni),
                    fused,
                    reads,
                    runtime_operand,
                    dest,
                    lowering,
                });
                continue;
            }
        }
        // Fusion of a following activation or requantize.
        let mut fused_node = None;
        let fusable_producer = matches!(node.op, Op::Conv2d | Op::Gemm | Op::MatMul)
            || matches!(node.op, Op::Conv2dInt | Op::MatMulInt);
        if fusable_producer && !is_output(res) && users[res.index()].len() == 1 {
            let u = users[res.index()][0].index();
            let un = &m.nodes[u];
            let ok = match node.op {
                Op::Conv2d => matches!(un.op, Op::Relu | Op::Clip | Op::Silu),
                Op::Gemm | Op::MatMul => matches!(un.op, Op::Relu | Op::Clip),
                _ => matches!(un.op, Op::Requantize | Op::Threshold),
            };
            // A requantize that a fused integer add took as its operand stays there.
            if ok && un.operands[0] == res && !skip[u] {
                fused_node = Some(u);
            }
        }
        let const_of = |v: ValueId| const_root[v.index()].and_then(|c| m.const_data(c));
        let fused_ref = fused_node.map(|u| &m.nodes[u]);
        let lowering = match kernels::select(m, node, fused_ref, &const_of, target) {
            Ok(l) => l,
            Err(e) if fused_node.is_some() => {
                // Retry without fusion; the activation then gets its own kernel.
                fused_node = None;
                match kernels::select(m, node, None, &const_of, target) {
                    Ok(l) => l,
                    Err(_) => {
                        bad.push(unsupported(m, ni, e));
                        continue;
                    }
                }
            }
            Err(e) => {
                bad.push(unsupported(m, ni, e));
                continue;
            }
        };
        if lowering.workspace() > i32::MAX as usize {
            bad.push(unsupported(
                m,
                ni,
                "the kernel's workspace exceeds 2 GiB".into(),
            ));
            continue;
        }
        let final_res = match fused_node {
            Some(u) => {
                skip[u] = true;
                absorbed[res.index()] = true;
                m.nodes[u].result
            }
            None => res,
        };
        let runtime_operand: Vec<bool> = node
            .operands
            .iter()
            .map(|&o| const_root[o.index()].is_none())
            .collect();
        let reads = node
            .operands
            .iter()
            .zip(&runtime_operand)
            .filter(|(_, rt)| **rt)
            .map(|(&o, _)| o)
            .collect();
        let dest = match m.outputs.iter().position(|&o| o == final_res) {
            Some(j) => {
                direct_output[final_res.index()] = Some(j);
                Dest::Output(j)
            }
            None => Dest::Value(final_res),
        };
        steps.push(Step {
            node: Some(ni),
            fused: fused_node.into_iter().collect(),
            reads,
            runtime_operand,
            dest,
            lowering,
        });
    }
    if !bad.is_empty() {
        return Err(BackendError::Unsupported(bad));
    }
    // Outputs not written directly: copies at the end.
    for (j, &o) in m.outputs.iter().enumerate() {
        if direct_output[o.index()] == Some(j) {
            continue;
        }
        let ty = m.ty(o);
        let bytes = ty.numel() * Store::of(&ty.elem).bytes();
        let is_const = const_root[o.index()].is_some();
        steps.push(Step {
            node: None,
            fused: Vec::new(),
            reads: if is_const { Vec::new() } else { vec![o] },
            runtime_operand: vec![!is_const],
            dest: Dest::Output(j),
            lowering: Lowering::Copy { bytes },
        });
    }
    Ok(Schedule {
        steps,
        root,
        const_root,
        absorbed,
    })
}

/// A fused `requantize(op(requantize(a), requantize(b)))` group, by node index.
struct IntGroup {
    rq_a: usize,
    rq_b: usize,
    rq_out: usize,
    lowering: kernels::intelem::IntLowering,
}

/// The integer add/sub/mul nodes that fuse with their operand requantizes and their
/// result requantize (keyed by the add's node index): each requantize has that one user,
/// no value in between is a graph output, and the fused kernel can be selected.
fn fused_int_groups(
    m: &Module,
    users: &[Vec<qcc_ir::NodeId>],
    is_output: &dyn Fn(ValueId) -> bool,
) -> std::collections::BTreeMap<usize, IntGroup> {
    let mut out = std::collections::BTreeMap::new();
    let mut taken = std::collections::BTreeSet::new();
    let producer = |v: ValueId| match m.value(v).def {
        ValueDef::Node(n) if m.nodes[n.index()].op == Op::Requantize => Some(n.index()),
        _ => None,
    };
    let sole_user = |v: ValueId| -> Option<usize> {
        match users[v.index()][..] {
            [u] if !is_output(v) => Some(u.index()),
            _ => None,
        }
    };
    for (ni, node) in m.nodes.iter().enumerate() {
        if !matches!(node.op, Op::Add | Op::Sub | Op::Mul)
            || !matches!(m.ty(node.result).elem, qcc_ir::ElemType::Int(_))
        {
            continue;
        }
        let (a, b) = (node.operands[0], node.operands[1]);
        let (Some(ra), Some(rb)) = (producer(a), producer(b)) else {
            continue;
        };
        if ra == rb || sole_user(a) != Some(ni) || sole_user(b) != Some(ni) {
            continue;
        }
        let Some(ro) = sole_user(node.result) else {
            continue;
        };
        let on = &m.nodes[ro];
        if on.op != Op::Requantize || on.operands[0] != node.result {
            continue;
        }
        // A requantize between two fused adds belongs to the first group only.
        if [ra, rb, ro].iter().any(|n| taken.contains(n)) {
            continue;
        }
        if let Ok(lowering) =
            kernels::intelem::select_fused(m, node, &m.nodes[ra], &m.nodes[rb], on)
        {
            taken.extend([ra, rb, ro]);
            out.insert(
                ni,
                IntGroup {
                    rq_a: ra,
                    rq_b: rb,
                    rq_out: ro,
                    lowering,
                },
            );
        }
    }
    out
}

/// The nodes turning integer result `res` into f32: its `cast` that only relabels it,
/// the `dequantize` of that, then an `add` of the dequantized value and a constant when
/// there is one; each the only user of the value before it, which is not a graph
/// output. Empty when there is no such cast and dequantize.
fn deq_chain(
    m: &Module,
    users: &[Vec<qcc_ir::NodeId>],
    res: ValueId,
    is_output: &dyn Fn(ValueId) -> bool,
) -> Vec<usize> {
    let sole_user = |v: ValueId| -> Option<usize> {
        match users[v.index()][..] {
            [u] if !is_output(v) => Some(u.index()),
            _ => None,
        }
    };
    let Some(c) = sole_user(res) else {
        return Vec::new();
    };
    let cn = &m.nodes[c];
    if cn.op != Op::Cast || !kernels::is_relabel(&m.ty(res).elem, &m.ty(cn.result).elem) {
        return Vec::new();
    }
    let Some(d) = sole_user(cn.result) else {
        return Vec::new();
    };
    if m.nodes[d].op != Op::Dequantize {
        return Vec::new();
    }
    let dv = m.nodes[d].result;
    let mut chain = vec![c, d];
    if let Some(a) = sole_user(dv) {
        let an = &m.nodes[a];
        let other = an.operands.iter().find(|&&o| o != dv);
        if an.op == Op::Add
            && an.operands.len() == 2
            && other.is_some_and(|&o| matches!(m.value(o).def, ValueDef::Const(_)))
        {
            chain.push(a);
        }
    }
    chain
}

fn unsupported(m: &Module, ni: usize, reason: String) -> Unsupported {
    let node = &m.nodes[ni];
    Unsupported {
        node: m.node_line(node),
        op: node.op.name().to_string(),
        reason,
    }
}
