//! What each fuzz target does with one input. The `fuzz_targets/` binaries are thin
//! wrappers, so that a finding can be replayed by calling these functions.
//!
//! - [`import`]: bytes as an ONNX `ModelProto` through the importer and the cleanup
//!   passes, and small results through the backend (object and report only).
//! - [`parse_ir`]: bytes as IR text through the parser; verified modules must print
//!   and parse back to the same text, and go through the cleanup passes.
//! - [`diff`]: bytes drive a generator of small quantized integer graphs, run by the
//!   JIT and by the reference interpreter; integer outputs must agree bit for bit.
//!
//! Errors are fine (bad input must get one); a panic, an abort, a hang or a mismatch is
//! a finding.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Unstructured;
use qcc::backend::{BackendError, JitModel, Target};
use qcc::frontend::onnx::proto::{Message, ModelProto};
use qcc::frontend::onnx::{ImportOptions, import_model};
use qcc_ir::interp::{self, Tensor, TensorData};
use qcc_ir::{
    Attr, Attrs, ConstData, ElemType, IntType, Module, Op, QuantParams, QuantType, Rounding,
    TensorType, ValueId,
};

/// An empty folder for external data lookups: a fuzzed model must not read the
/// machine's files.
fn empty_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("qcc-fuzz-empty-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d
    })
}

fn baseline() -> &'static Target {
    static T: OnceLock<Target> = OnceLock::new();
    T.get_or_init(|| qcc::driver::target(None, Some("baseline")).expect("the host target"))
}

/// The code generation tiers the differential target compares: this machine's best,
/// the SSE2 baseline and, where the CPU has it, AVX2 (x86-64-v3).
fn tiers() -> &'static [(&'static str, Target)] {
    static T: OnceLock<Vec<(&'static str, Target)>> = OnceLock::new();
    T.get_or_init(|| {
        let mut v = vec![
            (
                "native",
                qcc::driver::target(None, None).expect("the host target"),
            ),
            ("baseline", baseline().clone()),
        ];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            v.push((
                "x86-64-v3",
                qcc::driver::target(None, Some("x86-64-v3")).expect("the x86-64-v3 target"),
            ));
        }
        v
    })
}

/// Whether the backend is worth running on `m` (small enough for a fuzzing rate).
fn small(m: &Module) -> bool {
    m.nodes.len() <= 32
        && m.values.iter().all(|v| {
            v.ty.shape.len() <= 6
                && v.ty
                    .shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .is_some_and(|n| n <= 1 << 14)
        })
}

/// The ONNX importer target. Inputs starting with `M` are structured: the rest picks a
/// committed model and edits it ([`mutate`]), so that most inputs are nearly valid
/// models that reach the op handlers; other inputs are read as protobuf bytes.
pub fn import(data: &[u8]) {
    let model = match data.split_first() {
        Some((b'M', rest)) => {
            let mut u = Unstructured::new(rest);
            match mutated(&mut u) {
                Ok(m) => m,
                Err(_) => return,
            }
        }
        _ => match ModelProto::parse_from_bytes(data) {
            Ok(m) => m,
            Err(_) => return,
        },
    };
    import_parsed(&model);
}

fn import_parsed(model: &ModelProto) {
    let opts = ImportOptions::default();
    let Ok(imported) = import_model(model, Some(empty_dir()), &opts) else {
        return;
    };
    let mut m = imported.module;
    if qcc::passes::cleanup::pipeline()
        .run(&mut m, &mut |_| {})
        .is_err()
    {
        return;
    }
    if small(&m) {
        let _ = qcc::backend::compile_object(&m, "m", baseline());
    }
}

/// The models the structured mode edits: float, QDQ, QOperator, int4 and QONNX.
const SEEDS: &[&[u8]] = &[
    include_bytes!("../../tests/models/digits_cnn.onnx"),
    include_bytes!("../../tests/models/digits_cnn_qop.onnx"),
    include_bytes!("../../tests/models/digits_cnn_int4.onnx"),
    include_bytes!("../../tests/models/digits_resnet_qdq.onnx"),
    include_bytes!("../../tests/models/digits_w2a2.onnx"),
    include_bytes!("../../tests/models/qonnx_quant_conv_weight.onnx"),
    include_bytes!("../../tests/models/qonnx_trunc_v2_half_up_signed_zeropt.onnx"),
];

/// Integers that sit on edges: signs, zero, powers of two, the ends of the types.
const EDGES: &[i64] = &[
    0,
    1,
    -1,
    2,
    3,
    -2,
    4,
    7,
    8,
    16,
    255,
    65535,
    1 << 31,
    -(1 << 31),
    1 << 32,
    1 << 40,
    i64::MAX,
    i64::MIN,
];

fn edge(u: &mut Unstructured<'_>) -> arbitrary::Result<i64> {
    if u.ratio(3, 4)? {
        Ok(EDGES[u.choose_index(EDGES.len())?])
    } else {
        u.arbitrary()
    }
}

/// A committed model with one to four edits chosen by `u`.
fn mutated(u: &mut Unstructured<'_>) -> arbitrary::Result<ModelProto> {
    let seed = SEEDS[u.choose_index(SEEDS.len())?];
    let mut model = ModelProto::parse_from_bytes(seed).expect("a committed model parses");
    for _ in 0..u.int_in_range(1..=4)? {
        mutate(&mut model, u)?;
    }
    Ok(model)
}

/// One edit: an op type, an attribute, an input or output name, an initializer's
/// dims, type or data, a graph input's shape, the node order, the opset or IR version.
fn mutate(model: &mut ModelProto, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    static OPS: OnceLock<Vec<String>> = OnceLock::new();
    let ops = OPS.get_or_init(qcc::frontend::onnx::supported_ops);
    let g = model.graph.mut_or_insert_default();
    let names: Vec<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().chain(&n.output).cloned())
        .chain(g.initializer.iter().map(|t| t.name.clone()))
        .collect();
    let nn = g.node.len();
    let ni = g.initializer.len();
    match u.choose_index(12)? {
        0 if nn > 0 => {
            let n = &mut g.node[u.choose_index(nn)?];
            let op = &ops[u.choose_index(ops.len())?];
            match op.split_once(':') {
                Some((d, o)) => {
                    n.domain = d.to_string();
                    n.op_type = o.to_string();
                }
                None => {
                    n.domain.clear();
                    n.op_type = op.clone();
                }
            }
        }
        1 if nn > 0 => {
            let n = &mut g.node[u.choose_index(nn)?];
            if !n.attribute.is_empty() {
                let k = u.choose_index(n.attribute.len())?;
                let a = &mut n.attribute[k];
                match u.choose_index(4)? {
                    0 => a.i = edge(u)?,
                    1 if !a.ints.is_empty() => {
                        let j = u.choose_index(a.ints.len())?;
                        a.ints[j] = edge(u)?;
                    }
                    2 => a.f = edge(u)? as f32 * if u.arbitrary()? { 0.5 } else { -1e30 },
                    _ => {
                        let more = edge(u)?;
                        a.ints.push(more);
                    }
                }
            }
        }
        2 if nn > 0 && !names.is_empty() => {
            let n = &mut g.node[u.choose_index(nn)?];
            let name = names[u.choose_index(names.len())?].clone();
            match u.choose_index(4)? {
                0 if !n.input.is_empty() => {
                    let j = u.choose_index(n.input.len())?;
                    n.input[j] = name;
                }
                1 => {
                    n.input.pop();
                }
                2 => n
                    .input
                    .push(if u.arbitrary()? { name } else { String::new() }),
                _ if !n.output.is_empty() => {
                    let j = u.choose_index(n.output.len())?;
                    n.output[j] = name;
                }
                _ => {}
            }
        }
        3 if ni > 0 => {
            let t = &mut g.initializer[u.choose_index(ni)?];
            if !t.dims.is_empty() {
                let j = u.choose_index(t.dims.len())?;
                t.dims[j] = edge(u)?;
            } else {
                t.dims.push(edge(u)?);
            }
        }
        4 if ni > 0 => {
            let t = &mut g.initializer[u.choose_index(ni)?];
            t.data_type = u.int_in_range(0..=27)?;
        }
        5 if ni > 0 => {
            let t = &mut g.initializer[u.choose_index(ni)?];
            let keep = u.int_in_range(0..=t.raw_data.len())?;
            t.raw_data.truncate(keep);
            let keep = u.int_in_range(0..=t.float_data.len())?;
            t.float_data.truncate(keep);
            if u.arbitrary()? {
                let len = t.raw_data.len();
                if len > 0 {
                    let j = u.choose_index(len)?;
                    t.raw_data[j] = u.arbitrary()?;
                }
            }
        }
        6 if !g.input.is_empty() => {
            let k = u.choose_index(g.input.len())?;
            let vi = &mut g.input[k];
            if let Some(tt) = vi.type_.as_mut().and_then(|t| {
                if t.has_tensor_type() {
                    Some(t.mut_tensor_type())
                } else {
                    None
                }
            }) {
                let shape = tt.shape.mut_or_insert_default();
                if !shape.dim.is_empty() && u.arbitrary()? {
                    let j = u.choose_index(shape.dim.len())?;
                    if u.ratio(1, 4)? {
                        shape.dim[j].set_dim_param("n".into());
                    } else {
                        let d = edge(u)?;
                        shape.dim[j].set_dim_value(d);
                    }
                } else if u.arbitrary()? {
                    shape.dim.pop();
                } else {
                    tt.elem_type = u.int_in_range(0..=27)?;
                }
            }
        }
        7 if nn > 1 => {
            let (a, b) = (u.choose_index(nn)?, u.choose_index(nn)?);
            g.node.swap(a, b);
        }
        8 if nn > 0 => {
            let k = u.choose_index(nn)?;
            if u.arbitrary()? {
                g.node.remove(k);
            } else {
                let copy = g.node[k].clone();
                g.node.insert(k, copy);
            }
        }
        9 => {
            if let Some(o) = model.opset_import.first_mut() {
                o.version = u.int_in_range(0..=27)?;
            }
        }
        10 => model.ir_version = u.int_in_range(-1..=14)?,
        _ if ni > 0 => {
            // A constant's values at the edges (zero scales, huge zero points, ...).
            let t = &mut g.initializer[u.choose_index(ni)?];
            if !t.float_data.is_empty() {
                let j = u.choose_index(t.float_data.len())?;
                t.float_data[j] =
                    [0.0, -0.0, 1e-30, 1e30, f32::NAN, f32::INFINITY, -1.0][u.choose_index(7)?];
            } else if t.raw_data.len() >= 4 {
                let j = u.choose_index(t.raw_data.len() / 4)? * 4;
                let v: [u8; 4] = u.arbitrary()?;
                t.raw_data[j..j + 4].copy_from_slice(&v);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The IR text parser target.
pub fn parse_ir(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = qcc_ir::parse_module(text) else {
        return;
    };
    let printed = m.to_string();
    if qcc_ir::verify::verify(&m).is_err() {
        return;
    }
    let again = qcc_ir::parse_module(&printed).unwrap_or_else(|e| {
        panic!("a verified module prints as text that does not parse: {e}\n{printed}")
    });
    assert_eq!(
        again.to_string(),
        printed,
        "print -> parse -> print changed the text"
    );
    let mut m = m;
    let _ = qcc::passes::cleanup::pipeline().run(&mut m, &mut |_| {});
}

// ---- the differential target ----

const STORAGES: [(u8, bool); 7] = [
    (8, true),
    (8, false),
    (4, true),
    (4, false),
    (16, true),
    (2, false),
    (2, true),
];

fn qtype(st: IntType, params: QuantParams) -> ElemType {
    ElemType::Quant(QuantType {
        storage: st,
        narrow: false,
        pow2: false,
        params,
    })
}

fn int_in(u: &mut Unstructured<'_>, lo: i64, hi: i64) -> arbitrary::Result<i64> {
    u.int_in_range(lo..=hi)
}

fn codes(u: &mut Unstructured<'_>, st: IntType, n: usize) -> arbitrary::Result<Vec<i64>> {
    (0..n)
        .map(|_| int_in(u, st.min_code(), st.max_code()))
        .collect()
}

fn per_tensor(u: &mut Unstructured<'_>, st: IntType) -> arbitrary::Result<QuantParams> {
    let zp = int_in(u, st.min_code().max(-20), st.max_code().min(20))? as i32;
    Ok(QuantParams::PerTensor {
        scale: 0.01 + int_in(u, 0, 100)? as f32 / 200.0,
        zero_point: zp,
    })
}

/// A graph being generated: the module, its inputs' values, and the current value.
struct Gen {
    m: Module,
    inputs: Vec<Tensor>,
}

impl Gen {
    /// Adds `op(operands)` when the type rules accept it.
    fn node(
        &mut self,
        op: Op,
        operands: &[ValueId],
        attrs: &[(&str, Attr)],
        elem: ElemType,
    ) -> Option<ValueId> {
        let a: std::collections::BTreeMap<String, Attr> = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let tys: Vec<&TensorType> = operands.iter().map(|&o| self.m.ty(o)).collect();
        let declared = TensorType::new(elem, Vec::<usize>::new());
        let ty = qcc_ir::typing::infer(op, &Attrs::new(op, &a), &tys, &declared).ok()?;
        if ty.numel() == 0 || ty.numel() > 1 << 14 {
            return None;
        }
        let name = self.m.fresh_name("v");
        Some(self.m.add_node(op, operands.to_vec(), a, name, ty))
    }

    fn konst(&mut self, elem: ElemType, shape: Vec<usize>, data: Vec<i64>) -> ValueId {
        let name = self.m.fresh_name("c");
        self.m
            .add_const(name, TensorType::new(elem, shape), ConstData::Int(data))
    }
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

/// A requantize of `x` to a random storage of at most 8 bits.
fn requant(
    g: &mut Gen,
    u: &mut Unstructured<'_>,
    x: ValueId,
) -> arbitrary::Result<Option<ValueId>> {
    let shape = g.m.ty(x).shape.clone();
    let per_ch = shape.len() >= 2 && u.arbitrary::<bool>()?;
    let cnt = if per_ch { shape[1] } else { 1 };
    let mut mult = Vec::with_capacity(cnt);
    let mut shift = Vec::with_capacity(cnt);
    for _ in 0..cnt {
        mult.push(if u.ratio(1, 4)? {
            int_in(u, i32::MIN as i64, i32::MAX as i64)?
        } else {
            int_in(u, 1 << 20, 1 << 30)?
        });
        shift.push(int_in(u, 0, 45)?);
    }
    let (bits, signed) = STORAGES[u.choose_index(4)?];
    let st = IntType::new(bits, signed);
    let out = qtype(st, per_tensor(u, st)?);
    let rounding = Rounding::ALL[u.choose_index(Rounding::ALL.len())?];
    let mut a = vec![
        ("multiplier", ints(&mult)),
        ("shift", ints(&shift)),
        ("axis", Attr::Int(1)),
        ("rounding", Attr::Enum(rounding.name().into())),
    ];
    if u.ratio(1, 3)? {
        a.push(("min", Attr::Int(st.min_code() + 1)));
    }
    Ok(g.node(Op::Requantize, &[x], &a, out))
}

/// Builds a random quantized graph from `u`: one quantized input, then up to four
/// steps (integer conv or matmul with a requantize, max pool, data movement, a
/// requantize); the last value is the output.
fn generate(u: &mut Unstructured<'_>) -> arbitrary::Result<Gen> {
    let mut g = Gen {
        m: Module::new("fuzz"),
        inputs: Vec::new(),
    };
    let (bits, signed) = STORAGES[u.choose_index(STORAGES.len())?];
    let st = IntType::new(bits, signed);
    let rank = int_in(u, 1, 4)? as usize;
    let shape: Vec<usize> = (0..rank)
        .map(|_| int_in(u, 1, 9).map(|d| d as usize))
        .collect::<Result<_, _>>()?;
    let elem = qtype(st, per_tensor(u, st)?);
    let n: usize = shape.iter().product();
    let data = codes(u, st, n)?;
    let name = g.m.fresh_name("x");
    let mut cur = g.m.add_input(name, TensorType::new(elem, shape.clone()));
    g.inputs.push(Tensor::int(shape, data));
    let steps = int_in(u, 1, 4)?;
    for _ in 0..steps {
        let ty = g.m.ty(cur).clone();
        let next = match u.choose_index(13)? {
            0 if ty.shape.len() == 4 => {
                // conv2d_int with i8 weights, optional bias, then a requantize.
                let c = ty.shape[1];
                let group = if u.arbitrary::<bool>()? { c } else { 1 };
                let cg = c / group;
                let mg = int_in(u, 1, 4)? as usize;
                let m = mg * group;
                let (kh, kw) = (int_in(u, 1, 3)? as usize, int_in(u, 1, 3)? as usize);
                let wst = IntType::new(8, true);
                let wq = qtype(wst, per_tensor(u, wst)?);
                let wd = codes(u, wst, m * cg * kh * kw)?;
                let w = g.konst(wq, vec![m, cg, kh, kw], wd);
                let mut ops = vec![cur, w];
                if u.arbitrary::<bool>()? {
                    let bd = (0..m)
                        .map(|_| int_in(u, -3000, 3000))
                        .collect::<Result<_, _>>()?;
                    ops.push(g.konst(ElemType::I32, vec![m], bd));
                }
                let s = [int_in(u, 1, 2)?, int_in(u, 1, 2)?];
                let p = [
                    int_in(u, 0, 2)?,
                    int_in(u, 0, 2)?,
                    int_in(u, 0, 2)?,
                    int_in(u, 0, 2)?,
                ];
                let d = [int_in(u, 1, 2)?, int_in(u, 1, 2)?];
                let a = [
                    ("strides", ints(&s)),
                    ("pads", ints(&p)),
                    ("dilations", ints(&d)),
                    ("group", Attr::Int(group as i64)),
                ];
                match g.node(Op::Conv2dInt, &ops, &a, ElemType::I32) {
                    Some(y) => requant(&mut g, u, y)?.or(Some(y)),
                    None => None,
                }
            }
            1 if ty.shape.len() == 2 => {
                let (k, n) = (ty.shape[1], int_in(u, 1, 20)? as usize);
                let wst = IntType::new(8, true);
                let wq = qtype(
                    wst,
                    QuantParams::PerAxis {
                        axis: 1,
                        scales: vec![0.1; n],
                        zero_points: (0..n)
                            .map(|_| int_in(u, -20, 20).map(|z| z as i32))
                            .collect::<Result<_, _>>()?,
                    },
                );
                let wd = codes(u, wst, k * n)?;
                let w = g.konst(wq, vec![k, n], wd);
                match g.node(Op::MatMulInt, &[cur, w], &[], ElemType::I32) {
                    Some(y) => requant(&mut g, u, y)?.or(Some(y)),
                    None => None,
                }
            }
            2 if ty.shape.len() == 4 => {
                let k = [int_in(u, 1, 3)?, int_in(u, 1, 3)?];
                let s = [int_in(u, 1, 3)?, int_in(u, 1, 3)?];
                g.node(
                    Op::MaxPool,
                    &[cur],
                    &[("kernel", ints(&k)), ("strides", ints(&s))],
                    ty.elem.clone(),
                )
            }
            3 => {
                let mut perm: Vec<i64> = (0..ty.shape.len() as i64).collect();
                for i in (1..perm.len()).rev() {
                    let j = u.choose_index(i + 1)?;
                    perm.swap(i, j);
                }
                g.node(
                    Op::Transpose,
                    &[cur],
                    &[("perm", ints(&perm))],
                    ty.elem.clone(),
                )
            }
            4 => g.node(
                Op::Flatten,
                &[cur],
                &[("axis", Attr::Int(1))],
                ty.elem.clone(),
            ),
            5 => g.node(
                Op::Concat,
                &[cur, cur],
                &[("axis", Attr::Int(int_in(u, 0, ty.shape.len() as i64 - 1)?))],
                ty.elem.clone(),
            ),
            6 => {
                let r = ty.shape.len();
                let mut pads = Vec::with_capacity(2 * r);
                for _ in 0..2 * r {
                    pads.push(int_in(u, -1, 2)?);
                }
                let mode = ["constant", "reflect", "edge", "wrap"][u.choose_index(4)?];
                let value = int_in(u, -3, 3)? as f32;
                g.node(
                    Op::Pad,
                    &[cur],
                    &[
                        ("pads", ints(&pads)),
                        ("mode", Attr::Enum(mode.into())),
                        ("value", Attr::Float(value)),
                    ],
                    ty.elem.clone(),
                )
            }
            7 => {
                let axis = int_in(u, 0, ty.shape.len() as i64 - 1)?;
                let step = [1, 2, 3, -1, -2][u.choose_index(5)?];
                let a = [
                    ("starts", ints(&[int_in(u, -10, 10)?])),
                    ("ends", ints(&[int_in(u, -10, 10)?])),
                    ("axes", ints(&[axis])),
                    ("steps", ints(&[step])),
                ];
                g.node(Op::Slice, &[cur], &a, ty.elem.clone())
            }
            8 if ty.elem.bits() <= 8 => {
                // A table of 2^bits codes of another quantized type.
                let (bits, signed) = STORAGES[u.choose_index(4)?];
                let st = IntType::new(bits, signed);
                let out = qtype(st, per_tensor(u, st)?);
                let n = 1usize << ty.elem.bits();
                let table = codes(u, st, n)?;
                let t = g.konst(out.clone(), vec![n], table);
                g.node(Op::Lookup, &[cur, t], &[], out)
            }
            9 => {
                // Plain integers: the codes as i32, then wrapping arithmetic.
                let y = g.node(Op::Cast, &[cur], &[], ElemType::I32);
                match y {
                    Some(y) => {
                        let op = [Op::Add, Op::Sub, Op::Mul][u.choose_index(3)?];
                        let other = if u.arbitrary::<bool>()? {
                            y
                        } else {
                            let shape = g.m.ty(y).shape.clone();
                            let n: usize = shape.iter().product();
                            let d = (0..n)
                                .map(|_| edge(u).map(|v| v.clamp(i32::MIN as i64, i32::MAX as i64)))
                                .collect::<Result<_, _>>()?;
                            g.konst(ElemType::I32, shape, d)
                        };
                        g.node(op, &[y, other], &[], ElemType::I32)
                    }
                    None => None,
                }
            }
            10 => g.node(Op::Relu, &[cur], &[], ty.elem.clone()),
            11 if ty.shape.len() == 4 => {
                let k = [int_in(u, 1, 3)?, int_in(u, 1, 3)?];
                let s = [int_in(u, 1, 2)?, int_in(u, 1, 2)?];
                let p = [
                    int_in(u, 0, 1)?,
                    int_in(u, 0, 1)?,
                    int_in(u, 0, 1)?,
                    int_in(u, 0, 1)?,
                ];
                let a = [
                    ("kernel", ints(&k)),
                    ("strides", ints(&s)),
                    ("pads", ints(&p)),
                    ("dilations", ints(&[int_in(u, 1, 2)?, int_in(u, 1, 2)?])),
                    ("ceil_mode", Attr::Bool(u.arbitrary()?)),
                ];
                g.node(Op::MaxPool, &[cur], &a, ty.elem.clone())
            }
            12 if ty.shape.len() >= 3 => g.node(Op::GlobalAvgPool, &[cur], &[], ty.elem.clone()),
            _ => requant(&mut g, u, cur)?,
        };
        if let Some(v) = next {
            cur = v;
        }
    }
    g.m.outputs.push(cur);
    Ok(g)
}

/// Prints how far an input got when `QCC_FUZZ_VERBOSE` is set (to check that the
/// generator reaches the comparison).
fn note(what: &str) {
    if std::env::var_os("QCC_FUZZ_VERBOSE").is_some() {
        eprintln!("qcc-fuzz: {what}");
    }
}

/// The differential target.
pub fn diff(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(g) = generate(&mut u) else {
        return;
    };
    if g.m.nodes.is_empty() || qcc_ir::verify::verify(&g.m).is_err() {
        return;
    }
    let Ok(want) = interp::run(&g.m, &g.inputs) else {
        return;
    };
    for (tier, target) in tiers() {
        let jit = match JitModel::with_target(&g.m, target) {
            Ok(j) => j,
            Err(BackendError::Unsupported(_)) => {
                note("unsupported");
                return;
            }
            Err(e) => panic!("the backend ({tier}) rejects a valid module: {e}\n{}", g.m),
        };
        let got = jit.run(&g.inputs).unwrap_or_else(|e| {
            panic!("the JIT ({tier}) does not run a valid module: {e}\n{}", g.m)
        });
        for (k, (w, c)) in want.iter().zip(&got).enumerate() {
            assert_eq!(
                w.shape, c.shape,
                "output {k} ({tier}): shapes differ\n{}",
                g.m
            );
            match (&w.data, &c.data) {
                (TensorData::Int(w), TensorData::Int(c)) => {
                    if let Some(i) = (0..w.len()).find(|&i| w[i] != c[i]) {
                        panic!(
                            "output {k}[{i}] ({tier}): interpreter {}, JIT {}\nmodule:\n{}\nreport:\n{}",
                            w[i],
                            c[i],
                            g.m,
                            jit.report()
                        );
                    }
                }
                (TensorData::F32(_), TensorData::F32(_)) => {}
                _ => {
                    panic!("output {k} ({tier}): the interpreter and the JIT give different kinds")
                }
            }
        }
    }
    note(&format!(
        "compared {} nodes: {}",
        g.m.nodes.len(),
        g.m.nodes
            .iter()
            .map(|n| n.op.name())
            .collect::<Vec<_>>()
            .join(",")
    ));
}
