//! Dead-code elimination: a node stays only if some output depends on it; a constant
//! stays only if a kept node or an output uses it. Graph inputs always stay: they are part
//! of the compiled function's signature.

use qcc_ir::Module;

pub fn run(m: &mut Module) -> Result<bool, String> {
    let mut live = vec![false; m.values.len()];
    for &o in &m.outputs {
        live[o.index()] = true;
    }
    let mut keep = vec![false; m.nodes.len()];
    // Nodes are in topological order, so one backward sweep finds every live node.
    for (i, n) in m.nodes.iter().enumerate().rev() {
        if live[n.result.index()] {
            keep[i] = true;
            for &o in &n.operands {
                live[o.index()] = true;
            }
        }
    }
    let consts_before = m.values.iter().filter(|v| v.is_const()).count();
    let nodes_before = m.nodes.len();
    let mut i = 0;
    m.nodes.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    // Values nothing refers to any more (dead results, unused constants) go.
    m.compact();
    let consts_after = m.values.iter().filter(|v| v.is_const()).count();
    Ok(m.nodes.len() != nodes_before || consts_after != consts_before)
}
