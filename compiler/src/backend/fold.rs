//! Compile-time evaluation of constant subgraphs before lowering.
//!
//! The cleanup passes keep `dequantize`, `fake_quant` and `trunc` of constant weights as
//! nodes (later passes read their quantization). By code generation time nothing reads
//! them any more: a node whose operands are all constants is evaluated here with the
//! reference interpreter (so it means exactly what running it would), and kernels see
//! plain constant weights they can pack into `.rodata`. Float convolutions of QDQ
//! models thus get their dequantized weights as constants.

use std::borrow::Cow;

use qcc_ir::interp::{Tensor, TensorData, const_tensor, eval_node};
use qcc_ir::{ConstData, Module, ValueDef};

/// Results larger than this (elements) stay nodes.
const MAX_ELEMS: usize = 1 << 24;

/// `m` with every all-constant node (views included) replaced by its value; borrowed
/// when there is none. A node that fails to evaluate is left for selection to report.
pub(crate) fn constants(m: &Module) -> Cow<'_, Module> {
    let foldable = |m: &Module, i: usize| {
        let n = &m.nodes[i];
        !n.operands.is_empty()
            && n.operands.iter().all(|&o| m.value(o).is_const())
            && m.ty(n.result)
                .shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .is_some_and(|k| k <= MAX_ELEMS)
    };
    if !(0..m.nodes.len()).any(|i| foldable(m, i)) {
        return Cow::Borrowed(m);
    }
    let mut out = m.clone();
    let mut keep = vec![true; out.nodes.len()];
    // Node order is topological: folding one node can make a later one foldable.
    for (i, k) in keep.iter_mut().enumerate() {
        if !foldable(&out, i) {
            continue;
        }
        let node = &out.nodes[i];
        let ins: Option<Vec<Tensor>> = node
            .operands
            .iter()
            .map(|&o| const_tensor(&out, o))
            .collect();
        let Some(ins) = ins else { continue };
        let refs: Vec<&Tensor> = ins.iter().collect();
        let Ok(t) = eval_node(&out, node, &refs) else {
            continue;
        };
        let data = match t.data {
            TensorData::F32(v) => ConstData::F32(v),
            TensorData::Int(v) => ConstData::Int(v),
        };
        let r = node.result;
        out.value_mut(r).def = ValueDef::Const(data);
        *k = false;
    }
    let mut it = keep.into_iter();
    out.nodes.retain(|_| it.next().unwrap_or(true));
    out.compact();
    Cow::Owned(out)
}
