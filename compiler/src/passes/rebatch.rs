//! `--batch N`: turns a module built for one sample (first input dimension 1) into one
//! that runs N samples at once, after quantization (so calibration and every method keep
//! working on single samples, and the plan they chose is the plan the batch runs).
//!
//! The batch axis is followed from the inputs: an input whose first dimension is 1 gets
//! N, and a node reading such a value must give a result whose first dimension was 1 and
//! becomes N, every other dimension unchanged, as the op's typing rule computes it from
//! the new operand types. Reshape targets starting with 1 start with N. A node that would
//! move, reduce, concatenate, slice or normalise along the batch axis fails that check (or
//! the explicit one for shape-preserving ops along an `axis`), and the error names it:
//! such a model needs a loop over single samples instead. Constants are shared by all
//! samples and keep their shapes (they broadcast).

use std::collections::BTreeMap;

use qcc_ir::ops::Attrs;
use qcc_ir::{Attr, Module, Op, TensorType};

/// The module `m` with batch `n` (`n >= 1`; 1 returns it unchanged).
pub fn rebatch(m: &Module, n: usize) -> Result<Module, String> {
    if n == 0 {
        return Err("--batch 0: the batch size is 1 or more".into());
    }
    let mut out = m.clone();
    if n == 1 {
        return Ok(out);
    }
    let mut batched = vec![false; m.values.len()];
    let with_batch = |t: &TensorType| {
        let mut t = t.clone();
        t.shape[0] = n;
        t
    };
    for &i in &m.inputs {
        let t = m.ty(i);
        if t.shape.first() != Some(&1) {
            return Err(format!(
                "--batch {n}: input {} is {t}; a batched build needs inputs whose first \
                 dimension is 1 (the sample axis; import with --input-shape NAME=1,...)",
                m.value(i).spelling()
            ));
        }
        batched[i.index()] = true;
        out.values[i.index()].ty = with_batch(t);
    }
    for (ni, node) in m.nodes.iter().enumerate() {
        if !node.operands.iter().any(|o| batched[o.index()]) {
            continue;
        }
        let line = || m.node_line(node);
        let mixes = |why: &str| {
            format!(
                "--batch {n}: {} {why}, which mixes the samples of a batch; compile with \
                 batch 1 and run it once per sample\n  {}",
                node.op.name(),
                line()
            )
        };
        let old = m.ty(node.result);
        if old.shape.first() != Some(&1) {
            return Err(mixes("gives a result without the batch axis first"));
        }
        let mut attrs: BTreeMap<String, Attr> = node.attrs.clone();
        if node.op == Op::Reshape {
            match attrs.get_mut("shape") {
                Some(Attr::Ints(s)) if s.first() == Some(&1) => s[0] = n as i64,
                _ => return Err(mixes("reshapes away the batch axis")),
            }
        }
        // Ops that keep the shape but combine values along an axis.
        let rank = m.ty(node.operands[0]).rank() as i64;
        let on_batch_axis = |a: i64| a == 0 || a == -rank;
        for key in ["axis", "axes"] {
            let hits = match attrs.get(key) {
                Some(Attr::Int(a)) => on_batch_axis(*a),
                Some(Attr::Ints(v)) => v.iter().any(|&a| on_batch_axis(a)),
                _ => false,
            };
            if hits && !matches!(node.op, Op::Reshape | Op::Concat | Op::Flatten) {
                return Err(mixes(&format!("works along axis 0 (`{key}`)")));
            }
        }
        let operand_types: Vec<TensorType> =
            node.operands.iter().map(|&o| out.ty(o).clone()).collect();
        let refs: Vec<&TensorType> = operand_types.iter().collect();
        let want = with_batch(old);
        let got = qcc_ir::typing::infer(node.op, &Attrs::new(node.op, &attrs), &refs, &want)
            .map_err(|e| mixes(&format!("does not take batched operands ({e})")))?;
        if got != want {
            return Err(mixes(&format!(
                "gives {got} for batched operands, not the batched {want}"
            )));
        }
        out.nodes[ni].attrs = attrs;
        out.values[node.result.index()].ty = want;
        batched[node.result.index()] = true;
    }
    for &o in &m.outputs {
        if !batched[o.index()] {
            return Err(format!(
                "--batch {n}: output {} does not depend on the input; it would be the same \
                 for every sample (a batched build needs every output computed per sample)",
                m.value(o).spelling()
            ));
        }
    }
    qcc_ir::verify::verify(&out).map_err(|e| format!("--batch {n}: internal: {e}"))?;
    Ok(out)
}
