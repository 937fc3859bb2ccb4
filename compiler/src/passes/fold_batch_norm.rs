//! Folds `batch_norm` into the `conv2d` or `gemm` that produces its input, when that
//! result has no other use and the weights, bias and statistics are constants:
//! with `s[c] = scale[c] / sqrt(var[c] + epsilon)` (computed in f64),
//! `w'[c, ...] = w[c, ...] * s[c]` and `b'[c] = (b[c] - mean[c]) * s[c] + bias[c]`
//! (for gemm, `s` scales the columns of `B'` and `C' = (beta * C - mean) * s + bias`
//! with `beta` set to 1). The batch norm's parameters stay on the folded node as `meta`
//! (`bn_scale`, `bn_bias`, `bn_mean`, `bn_var`, `bn_epsilon`) for data-free calibration.

use qcc_ir::interp::{TensorData, const_tensor};
use qcc_ir::{Attr, Attrs, ConstData, Module, Op, TensorType, ValueDef, ValueId};

use super::remove_identity::replace_uses;

fn f32_const(m: &Module, id: ValueId) -> Option<Vec<f32>> {
    match const_tensor(m, id)?.data {
        TensorData::F32(v) => Some(v),
        TensorData::Int(_) => None,
    }
}

/// Folds the batch norm at node `bn`; returns whether it did.
fn fold_one(m: &mut Module, bn: usize) -> bool {
    let node = &m.nodes[bn];
    let x = node.operands[0];
    let ValueDef::Node(p) = m.value(x).def else {
        return false;
    };
    let p = p.index();
    let prod = &m.nodes[p];
    if !matches!(prod.op, Op::Conv2d | Op::Gemm) || m.outputs.contains(&x) {
        return false;
    }
    if m.users()[x.index()].len() != 1 {
        return false;
    }
    let Ok(eps) = Attrs::new(Op::BatchNorm, &node.attrs).float("epsilon") else {
        return false;
    };
    let params: Option<Vec<Vec<f32>>> = node.operands[1..5]
        .iter()
        .map(|&o| f32_const(m, o))
        .collect();
    let Some(params) = params else {
        return false;
    };
    let (scale, bias, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let c = m.ty(x).shape.get(1).copied().unwrap_or(0);
    if params.iter().any(|v| v.len() != c) {
        return false;
    }
    let s: Vec<f64> = (0..c)
        .map(|i| scale[i] as f64 / (var[i] as f64 + eps as f64).sqrt())
        .collect();
    let w_id = prod.operands[1];
    let Some(w) = f32_const(m, w_id) else {
        return false;
    };
    let w_ty = m.ty(w_id).clone();
    let old_bias: Vec<f64>;
    let (new_w, mut attrs) = match prod.op {
        Op::Conv2d => {
            old_bias = match prod.operands.get(2) {
                Some(&b) => match f32_const(m, b) {
                    Some(v) => v.iter().map(|&x| x as f64).collect(),
                    None => return false,
                },
                None => vec![0.0; c],
            };
            let per = w.len() / c.max(1);
            let nw: Vec<f32> = w
                .iter()
                .enumerate()
                .map(|(i, &v)| (v as f64 * s[i / per]) as f32)
                .collect();
            (nw, prod.attrs.clone())
        }
        _ => {
            let a = Attrs::new(Op::Gemm, &prod.attrs);
            let (Ok(beta), Ok(trans_b)) = (a.float("beta"), a.bool("trans_b")) else {
                return false;
            };
            old_bias = match prod.operands.get(2) {
                Some(&b) => {
                    let shape = &m.ty(b).shape;
                    if shape.iter().product::<usize>() != 1 && shape.last() != Some(&c)
                        || shape.len() == 2 && shape[0] != 1
                    {
                        return false;
                    }
                    match f32_const(m, b) {
                        Some(v) if v.len() == 1 => vec![beta as f64 * v[0] as f64; c],
                        Some(v) => v.iter().map(|&x| beta as f64 * x as f64).collect(),
                        None => return false,
                    }
                }
                None => vec![0.0; c],
            };
            let nw: Vec<f32> = w
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let col = if trans_b {
                        i / (w.len() / c.max(1))
                    } else {
                        i % c
                    };
                    (v as f64 * s[col]) as f32
                })
                .collect();
            let mut attrs = prod.attrs.clone();
            attrs.insert("beta".into(), Attr::Float(1.0));
            (nw, attrs)
        }
    };
    let new_b: Vec<f32> = (0..c)
        .map(|i| ((old_bias[i] - mean[i] as f64) * s[i] + bias[i] as f64) as f32)
        .collect();
    let base = m.value(w_id).name.clone();
    let wname = m.fresh_name(&format!("{base}.bn"));
    let w_new = m.add_const(wname, w_ty, ConstData::F32(new_w));
    let bname = m.fresh_name(&format!("{}.bn_bias", m.value(x).name));
    let b_new = m.add_const(bname, TensorType::f32(vec![c]), ConstData::F32(new_b));
    let bn_out = m.nodes[bn].result;
    let bn_operands = m.nodes[bn].operands.clone();
    let meta = [
        ("bn_scale", 1usize),
        ("bn_bias", 2),
        ("bn_mean", 3),
        ("bn_var", 4),
    ];
    let prod = &mut m.nodes[p];
    prod.operands.truncate(2);
    prod.operands[1] = w_new;
    prod.operands.push(b_new);
    attrs.retain(|_, _| true);
    prod.attrs = attrs;
    for (k, i) in meta {
        prod.meta
            .insert(k.into(), Attr::Floats(params[i - 1].clone()));
    }
    prod.meta.insert("bn_epsilon".into(), Attr::Float(eps));
    let _ = bn_operands;
    replace_uses(m, bn_out, x)
}

pub fn run(m: &mut Module) -> Result<bool, String> {
    let mut removed = Vec::new();
    for i in 0..m.nodes.len() {
        if m.nodes[i].op == Op::BatchNorm && fold_one(m, i) {
            removed.push(i);
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
