//! Removes nodes that compute their operand unchanged: reshapes, flattens, squeezes and
//! unsqueezes that keep the type, identity transposes, full slices, zero pads, casts to
//! the same type, single-operand concats, clips without bounds, resizes to the same
//! shape with unit scales, multiplications and divisions by a constant 1, and
//! subtractions of a constant +0 (exact for every float, -0 included). Uses of the
//! result are redirected to the operand. When the result is a module output, the
//! operand takes over the output's name (so outputs keep their names); if the operand
//! is a graph input, a constant or another output, the node stays.

use std::collections::HashSet;

use qcc_ir::interp::TensorData;
use qcc_ir::{Attr, Module, Node, Op, ValueDef, ValueId};

fn const_all(m: &Module, id: ValueId, want: f32) -> bool {
    match qcc_ir::interp::const_tensor(m, id) {
        Some(t) => match &t.data {
            TensorData::F32(v) => v
                .iter()
                .all(|&x| x == want && x.is_sign_positive() == want.is_sign_positive()),
            TensorData::Int(_) => false,
        },
        None => false,
    }
}

/// The operand `node` passes through unchanged, if it is a no-op.
fn passthrough(m: &Module, node: &Node) -> Option<ValueId> {
    let x = *node.operands.first()?;
    let same_type = m.ty(node.result) == m.ty(x);
    let attr_ints = |k: &str| match node.attrs.get(k) {
        Some(Attr::Ints(v)) => Some(v.clone()),
        _ => None,
    };
    let ok = match node.op {
        Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze | Op::Cast => same_type,
        Op::Transpose => {
            attr_ints("perm").is_some_and(|p| p.iter().enumerate().all(|(i, &v)| v == i as i64))
        }
        Op::Slice => same_type && attr_ints("steps").is_some_and(|s| s.iter().all(|&v| v > 0)),
        Op::Pad => attr_ints("pads").is_some_and(|p| p.iter().all(|&v| v == 0)),
        Op::Concat => node.operands.len() == 1,
        Op::Clip => !node.attrs.contains_key("min") && !node.attrs.contains_key("max"),
        Op::Resize => {
            same_type
                && matches!(node.attrs.get("scales"), Some(Attr::Floats(s)) if s.iter().all(|&v| v == 1.0))
        }
        Op::Mul => {
            if node.operands.len() == 2 && same_type && const_all(m, node.operands[1], 1.0) {
                true
            } else if node.operands.len() == 2
                && m.ty(node.result) == m.ty(node.operands[1])
                && const_all(m, node.operands[0], 1.0)
            {
                return Some(node.operands[1]);
            } else {
                false
            }
        }
        Op::Div => node.operands.len() == 2 && same_type && const_all(m, node.operands[1], 1.0),
        Op::Sub => node.operands.len() == 2 && same_type && const_all(m, node.operands[1], 0.0),
        _ => false,
    };
    (ok && same_type).then_some(x)
}

/// Redirects every use of `from` (node operands and module outputs) to `to`. When `from`
/// is an output, `to` takes its name. Returns false (and changes nothing) when that is
/// not possible: `to` is an input, a constant or already an output.
pub(crate) fn replace_uses(m: &mut Module, from: ValueId, to: ValueId) -> bool {
    if m.outputs.contains(&from) {
        if !matches!(m.value(to).def, ValueDef::Node(_)) || m.outputs.contains(&to) {
            return false;
        }
        let name = m.value(from).name.clone();
        let spare = m.fresh_name(&format!("{name}.old"));
        m.value_mut(from).name = spare;
        m.value_mut(to).name = name;
        for o in &mut m.outputs {
            if *o == from {
                *o = to;
            }
        }
    }
    for n in &mut m.nodes {
        for o in &mut n.operands {
            if *o == from {
                *o = to;
            }
        }
    }
    true
}

pub fn run(m: &mut Module) -> Result<bool, String> {
    let mut removed = HashSet::new();
    for i in 0..m.nodes.len() {
        let Some(x) = passthrough(m, &m.nodes[i]) else {
            continue;
        };
        let r = m.nodes[i].result;
        if replace_uses(m, r, x) {
            removed.insert(i);
        }
    }
    if removed.is_empty() {
        return Ok(false);
    }
    let mut i = 0;
    m.nodes.retain(|_| {
        i += 1;
        !removed.contains(&(i - 1))
    });
    m.compact();
    Ok(true)
}
