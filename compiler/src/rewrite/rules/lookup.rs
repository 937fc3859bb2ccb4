//! Quantized elementwise functions as table lookups (ONNX Runtime's QLinearLeakyRelu,
//! QLinearSigmoid, and any `DequantizeLinear -> f -> QuantizeLinear` of a unary
//! activation).
//!
//! `quantize_y(f(dequantize(x)))`, with x of at most 8 storage bits and per-tensor
//! parameters, y per tensor, and `f` one of relu, clip, leaky_relu, sigmoid,
//! hard_sigmoid, hard_swish, exp, sqrt, sign, abs, neg, floor, ceil, round, log, tanh,
//! erf, silu, becomes `lookup(x, T)` where `T` holds, for
//! every storage code `c` of x (`2^bits` of them, in order from the smallest), the code
//! the left side gives for `c`. `T` is computed at compile time by running the three
//! nodes of the left side through the reference interpreter on every code, so the rule
//! is **exact** by construction (each output element depends only on its input code).

use std::collections::BTreeMap;

use egg::{Id, Subst};
use qcc_ir::interp::{Tensor, run};
use qcc_ir::{ConstData, Module, Op, QuantParams, TensorType};

use crate::rewrite::analysis::{QEGraph, meta, ty};
use crate::rewrite::build::{add_const, add_op, inherit_loc, name_of};
use crate::rewrite::rule::{Exactness, RuleDef, rule, var};

/// The unary float ops a table can replace (their text names, for the patterns).
const UNARY: &[(&str, &str)] = &[
    ("lookup-relu", "relu"),
    ("lookup-clip", "clip"),
    ("lookup-leaky-relu", "leaky_relu"),
    ("lookup-sigmoid", "sigmoid"),
    ("lookup-hard-sigmoid", "hard_sigmoid"),
    ("lookup-hard-swish", "hard_swish"),
    ("lookup-exp", "exp"),
    ("lookup-sqrt", "sqrt"),
    ("lookup-sign", "sign"),
    ("lookup-abs", "abs"),
    ("lookup-neg", "neg"),
    ("lookup-floor", "floor"),
    ("lookup-ceil", "ceil"),
    ("lookup-round", "round"),
    ("lookup-log", "log"),
    ("lookup-tanh", "tanh"),
    ("lookup-erf", "erf"),
    ("lookup-silu", "silu"),
];

pub fn rules() -> Vec<RuleDef> {
    UNARY
        .iter()
        .map(|&(name, op)| {
            rule(
                name,
                Exactness::Exact,
                &format!("(quantize ?qm ({op} ?fm (dequantize ?dm ?x)))"),
                to_lookup,
            )
        })
        .collect()
}

/// See the module documentation.
fn to_lookup(eg: &mut QEGraph, root: Id, s: &Subst) -> Option<Id> {
    let qm = meta(eg, var(s, "?qm")).clone();
    let fm = meta(eg, var(s, "?fm")).clone();
    let x = var(s, "?x");
    let xt = ty(eg, x).clone();
    let xq = xt.elem.quant()?;
    let yq = qm.ty.elem.quant()?;
    if xq.storage.bits > 8
        || !matches!(xq.params, QuantParams::PerTensor { .. })
        || !matches!(yq.params, QuantParams::PerTensor { .. })
    {
        return None;
    }
    let table = table(&xt, &fm.attrs, fm.op, &qm.ty, &qm.attrs)?;
    let n = table.len();
    let name = format!("{}.table", name_of(eg, root, "lookup"));
    let t = add_const(
        eg,
        &name,
        TensorType::new(qm.ty.elem.clone(), vec![n]),
        ConstData::Int(table),
    );
    let id = add_op(eg, Op::Lookup, qm.ty.clone(), BTreeMap::new(), &[x, t]);
    inherit_loc(eg, id, root);
    Some(id)
}

/// `quantize(f(dequantize(c)))` for every storage code `c` of x's type, smallest first,
/// by the interpreter.
fn table(
    xt: &TensorType,
    f_attrs: &BTreeMap<String, qcc_ir::Attr>,
    f: Op,
    yt: &TensorType,
    q_attrs: &BTreeMap<String, qcc_ir::Attr>,
) -> Option<Vec<i64>> {
    let st = xt.elem.storage()?;
    let n = 1usize << st.bits;
    let codes: Vec<i64> = (0..n as i64).map(|i| st.min_code() + i).collect();
    let mut m = Module::new("table");
    let x = m.add_input("x", TensorType::new(xt.elem.clone(), vec![n]));
    let d = m.add_node(
        Op::Dequantize,
        vec![x],
        BTreeMap::new(),
        "d",
        TensorType::f32(vec![n]),
    );
    let y = m.add_node(f, vec![d], f_attrs.clone(), "f", TensorType::f32(vec![n]));
    let q = m.add_node(
        Op::Quantize,
        vec![y],
        q_attrs.clone(),
        "q",
        TensorType::new(yt.elem.clone(), vec![n]),
    );
    m.outputs.push(q);
    let out = run(&m, &[Tensor::int(vec![n], codes)]).ok()?;
    out.into_iter().next()?.into_int()
}
