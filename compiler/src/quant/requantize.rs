//! `--requantize`: a float module back from a quantized one, so that `--budget` (or
//! `--bits`) can choose its bit-widths again.
//!
//! Weights stored as constant codes behind a `dequantize` (QDQ) or a `fake_quant` (QONNX)
//! become f32 constants holding the dequantized values (what the model computes with);
//! the quantize/dequantize pairs and `fake_quant` nodes on activations are dropped, so
//! the result is the float model the quantized one approximates. Models whose layers are
//! already integer kernels (ONNX QOperator, e.g. `QLinearConv`) hold no float form to go
//! back to and are refused.

use std::collections::HashMap;

use qcc_ir::interp::{const_tensor, eval_node};
use qcc_ir::{ConstData, ElemType, Module, Op, TensorType, ValueDef, ValueId};

use crate::passes::Pipeline;

/// Whether `m` carries quantization (quantize, dequantize, fake_quant, integer kernels).
pub fn is_quantized(m: &Module) -> bool {
    m.nodes.iter().any(|n| {
        matches!(
            n.op,
            Op::Quantize
                | Op::Dequantize
                | Op::FakeQuant
                | Op::Conv2dInt
                | Op::MatMulInt
                | Op::Requantize
        )
    })
}

/// The float module of a QDQ or QONNX-quantized `m` (see the module doc).
pub fn dequantize_model(m: &Module) -> Result<Module, String> {
    if let Some(n) = m
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::Conv2dInt | Op::MatMulInt | Op::Requantize))
    {
        return Err(format!(
            "--requantize: `{}` computes {} in integers already ({} at {}; an ONNX QOperator model such as QLinearConv); requantize its float original or a QDQ export of it",
            m.name,
            m.value(n.result).spelling(),
            n.op,
            n.loc.as_deref().unwrap_or("?")
        ));
    }
    let mut out = m.clone();
    let mut repl: HashMap<ValueId, ValueId> = HashMap::new();
    let nodes = std::mem::take(&mut out.nodes);
    for node in &nodes {
        let operand = |k: usize| -> ValueId {
            let v = node.operands[k];
            repl.get(&v).copied().unwrap_or(v)
        };
        let is_const = |v: ValueId| matches!(out.value(v).def, ValueDef::Const(_));
        match node.op {
            Op::Dequantize | Op::FakeQuant
                if node
                    .operands
                    .iter()
                    .all(|&v| is_const(repl.get(&v).copied().unwrap_or(v))) =>
            {
                // Constant weights: fold to their dequantized f32 values.
                let args: Vec<_> = (0..node.operands.len())
                    .map(|k| {
                        const_tensor(&out, operand(k)).ok_or_else(|| {
                            format!(
                                "internal: constant operand of {} has no data",
                                m.value(node.result).spelling()
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let refs: Vec<_> = args.iter().collect();
                let t = eval_node(&out, node, &refs)
                    .map_err(|e| format!("{}: {e}", m.value(node.result).spelling()))?;
                let data = t
                    .as_f32()
                    .ok_or_else(|| {
                        format!(
                            "internal: {} did not give f32",
                            m.value(node.result).spelling()
                        )
                    })?
                    .to_vec();
                let name = out.fresh_name(&format!("{}.f32", m.value(node.result).name));
                let c = out.add_const(name, TensorType::f32(t.shape.clone()), ConstData::F32(data));
                repl.insert(node.result, c);
            }
            Op::FakeQuant => {
                repl.insert(node.result, operand(0));
            }
            Op::Dequantize => {
                // An activation's quantize -> dequantize: the float value it rounds.
                let src = operand(0);
                let from_quantize = match out.value(src).def {
                    ValueDef::Node(p) => {
                        let pn = &nodes[p.index()];
                        (pn.op == Op::Quantize).then(|| pn.operands[0])
                    }
                    _ => None,
                };
                match from_quantize {
                    Some(x) if out.ty(repl.get(&x).copied().unwrap_or(x)).elem == ElemType::F32 => {
                        repl.insert(node.result, repl.get(&x).copied().unwrap_or(x));
                    }
                    _ => {
                        return Err(format!(
                            "--requantize: {} dequantizes a value that is not a quantized activation or constant; only QDQ and QONNX models can be requantized",
                            m.value(node.result).spelling()
                        ));
                    }
                }
            }
            _ => {}
        }
        let mut n = node.clone();
        for o in &mut n.operands {
            if let Some(&r) = repl.get(o) {
                *o = r;
            }
        }
        let id = qcc_ir::NodeId(out.nodes.len() as u32);
        out.value_mut(n.result).def = ValueDef::Node(id);
        out.nodes.push(n);
    }
    for o in &mut out.outputs {
        if let Some(&r) = repl.get(o) {
            *o = r;
        }
    }
    Pipeline::from_names("requantize", &["dce"])
        .map_err(|e| e.to_string())?
        .run(&mut out, &mut |_| {})
        .map_err(|e| format!("--requantize: {e}"))?;
    if is_quantized(&out) {
        return Err(format!(
            "--requantize: `{}` keeps quantization that is not a QDQ pair or a fake_quant ({}); it cannot be turned back into float",
            m.name,
            out.nodes
                .iter()
                .filter(|n| matches!(n.op, Op::Quantize | Op::Dequantize | Op::FakeQuant))
                .map(|n| out.value(n.result).spelling())
                .take(3)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(out)
}
