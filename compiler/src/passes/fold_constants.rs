//! Constant folding: a node whose operands are all constants becomes a constant, computed
//! by the reference interpreter (so folding means exactly what running would).
//!
//! Not folded, because their constant operands carry quantization that later passes
//! read: `dequantize` (of quantized weights), `fake_quant` and `trunc` (QONNX quantizers
//! of weights). Results larger than [`MAX_FOLDED_ELEMS`] stay nodes.

use qcc_ir::interp::{Tensor, TensorData, const_tensor, eval_node};
use qcc_ir::{ConstData, Module, Node, Op, ValueDef};

/// The largest result (in elements) that folding materialises.
pub const MAX_FOLDED_ELEMS: usize = 1 << 24;

/// Whether folding `node` would lose quantization information.
pub fn keeps_quant_info(op: Op) -> bool {
    matches!(op, Op::Dequantize | Op::FakeQuant | Op::Trunc)
}

/// The value of `node` when all its operands are constants and it may be folded;
/// `Ok(None)` when it may not; an error when evaluating it fails.
pub fn fold_node(m: &Module, node: &Node) -> Result<Option<Tensor>, String> {
    if keeps_quant_info(node.op)
        || node.operands.is_empty()
        || m.ty(node.result)
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .is_none_or(|n| n > MAX_FOLDED_ELEMS)
    {
        return Ok(None);
    }
    let mut ins = Vec::with_capacity(node.operands.len());
    for &o in &node.operands {
        match const_tensor(m, o) {
            Some(t) => ins.push(t),
            None => return Ok(None),
        }
    }
    let refs: Vec<&Tensor> = ins.iter().collect();
    eval_node(m, node, &refs).map(Some)
}

pub fn run(m: &mut Module) -> Result<bool, String> {
    let mut keep = Vec::with_capacity(m.nodes.len());
    for i in 0..m.nodes.len() {
        // A node that fails to evaluate is left for the interpreter to report.
        match fold_node(m, &m.nodes[i]) {
            Ok(Some(t)) => {
                let data = match t.data {
                    TensorData::F32(v) => ConstData::F32(v),
                    TensorData::Int(v) => ConstData::Int(v),
                };
                let r = m.nodes[i].result;
                m.value_mut(r).def = ValueDef::Const(data);
                keep.push(false);
            }
            _ => keep.push(true),
        }
    }
    if keep.iter().all(|&k| k) {
        return Ok(false);
    }
    let mut it = keep.into_iter();
    m.nodes.retain(|_| it.next().unwrap_or(true));
    m.compact();
    Ok(true)
}
