//! Differential tests of the kernels of `kernels/logic.rs` (equal, less, less_or_equal,
//! not, and, or, xor, where, max and min of integer codes, arg_max, arg_min, top_k,
//! top_k_indices, one_hot): the JIT
//! against the reference interpreter on random shapes (odd sizes, every kind of
//! broadcasting), attributes and data full of ties, NaNs and signed zeros, on f32 and
//! on integer storages of 1 to 4 bytes. Every result must be identical, f32 results bit
//! for bit (where and top_k copy elements).

mod backend_common;

use backend_common::{B, Rng, attrs, cfg, check};
use proptest::prelude::*;
use qcc_ir::interp::TensorData;
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType, ValueId};

fn shape(r: &mut Rng, rank: usize, max: i64) -> Vec<usize> {
    (0..rank).map(|_| r.i(1, max) as usize).collect()
}

/// A shape that broadcasts to `out`: a suffix with some dims set to 1.
fn bshape(r: &mut Rng, out: &[usize]) -> Vec<usize> {
    let drop = r.i(0, out.len() as i64) as usize;
    out[drop..]
        .iter()
        .map(|&d| if r.i(0, 2) == 0 { 1 } else { d })
        .collect()
}

fn int(bits: u8, signed: bool) -> ElemType {
    ElemType::Int(IntType::new(bits, signed))
}

/// The element types the kernels are tried on: f32, integers of 1, 2 and 4 bytes
/// (signed and not), a per-tensor quantized type.
fn elem(which: usize) -> ElemType {
    match which {
        0 => ElemType::F32,
        1 => int(8, true),
        2 => int(8, false),
        3 => int(16, true),
        4 => int(16, false),
        5 => int(32, true),
        6 => int(32, false),
        7 => int(4, true),
        _ => ElemType::Quant(QuantType::per_tensor(IntType::U8, 0.1, 128)),
    }
}

const ELEMS: usize = 9;

/// f32 values with many ties, signed zeros, infinities and NaNs.
fn floats(r: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| match r.i(0, 9) {
            0 => f32::NAN,
            1 => 0.0,
            2 => -0.0,
            3 => f32::INFINITY,
            4 => f32::NEG_INFINITY,
            5 => r.f(-4.0, 4.0),
            _ => r.i(-3, 3) as f32,
        })
        .collect()
}

/// Codes of `e` with many ties and both ends of the range.
fn codes(r: &mut Rng, e: &ElemType, n: usize) -> Vec<i64> {
    if *e == ElemType::Bipolar {
        return (0..n)
            .map(|_| if r.i(0, 1) == 0 { 1 } else { -1 })
            .collect();
    }
    let (lo, hi) = e.code_range().unwrap();
    (0..n)
        .map(|_| match r.i(0, 5) {
            0 => lo,
            1 => hi,
            2 => r.i(lo, hi),
            _ => r.i(lo.max(-3), hi.min(3)),
        })
        .collect()
}

/// An input or constant of type `e` and shape `s` with tie-heavy data.
fn operand(b: &mut B, r: &mut Rng, e: &ElemType, s: &[usize], constant: bool) -> ValueId {
    let n: usize = s.iter().product();
    if e.is_float() {
        let d = floats(r, n);
        b.f32_operand(constant, s, d)
    } else {
        let d = codes(r, e, n);
        if constant {
            b.const_int(e.clone(), s, d)
        } else {
            b.input_int(e.clone(), s, d)
        }
    }
}

fn bools(b: &mut B, r: &mut Rng, s: &[usize], constant: bool) -> ValueId {
    let n: usize = s.iter().product();
    let d = r.is(n, 0, 1);
    if constant {
        b.const_int(ElemType::U1, s, d)
    } else {
        b.input_int(ElemType::U1, s, d)
    }
}

/// Like `check`, and f32 outputs must have the same bits.
fn check_bits(b: &B) -> Result<(), String> {
    check(b)?;
    let want = qcc_ir::interp::run(&b.m, &b.inputs).map_err(|e| e.to_string())?;
    let jit = qcc::backend::JitModel::new(&b.m).map_err(|e| e.to_string())?;
    let got = jit.run(&b.inputs).map_err(|e| e.to_string())?;
    for (k, (w, g)) in want.iter().zip(&got).enumerate() {
        if let (TensorData::F32(w), TensorData::F32(g)) = (&w.data, &g.data) {
            for (i, (a, c)) in w.iter().zip(g).enumerate() {
                if a.to_bits() != c.to_bits() {
                    return Err(format!(
                        "output {k}[{i}]: interp {a:e} ({:#x}), jit {c:e} ({:#x})\n{}",
                        a.to_bits(),
                        c.to_bits(),
                        b.m
                    ));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn compare(seed: u64, rank in 0usize..5, which in 0usize..3, e in 0usize..ELEMS, ca: bool, cb: bool) {
        let mut r = Rng(seed | 1);
        let op = [Op::Equal, Op::Less, Op::LessOrEqual][which];
        let e = elem(e);
        let out = shape(&mut r, rank, 7);
        let (sa, sb) = (bshape(&mut r, &out), bshape(&mut r, &out));
        let mut b = B::new();
        let x = operand(&mut b, &mut r, &e, &sa, ca && cb);
        let y = operand(&mut b, &mut r, &e, &sb, cb && !ca);
        let z = b.node(op, &[x, y], attrs(&[]), ElemType::U1);
        b.output(z);
        if b.m.inputs.is_empty() { return Ok(()); }
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn int_max_min(seed: u64, rank in 0usize..5, max: bool, e in 1usize..=ELEMS, ca: bool) {
        let mut r = Rng(seed | 1);
        let e = if e == ELEMS { ElemType::Bipolar } else { elem(e) };
        let out = shape(&mut r, rank, 7);
        let (sa, sb) = (bshape(&mut r, &out), bshape(&mut r, &out));
        let mut b = B::new();
        let x = operand(&mut b, &mut r, &e, &sa, ca);
        let y = operand(&mut b, &mut r, &e, &sb, false);
        let op = if max { Op::Max } else { Op::Min };
        let z = b.node(op, &[x, y], attrs(&[]), e.clone());
        b.output(z);
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn logic(seed: u64, rank in 0usize..5, which in 0usize..4, ca: bool) {
        let mut r = Rng(seed | 1);
        let op = [Op::Not, Op::And, Op::Or, Op::Xor][which];
        let out = shape(&mut r, rank, 7);
        let mut b = B::new();
        let z = if op == Op::Not {
            let x = bools(&mut b, &mut r, &out, false);
            b.node(op, &[x], attrs(&[]), ElemType::U1)
        } else {
            let (sa, sb) = (bshape(&mut r, &out), bshape(&mut r, &out));
            let x = bools(&mut b, &mut r, &sa, ca);
            let y = bools(&mut b, &mut r, &sb, false);
            b.node(op, &[x, y], attrs(&[]), ElemType::U1)
        };
        b.output(z);
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn where_(seed: u64, rank in 0usize..5, e in 0usize..ELEMS, cc: bool, ca: bool, cb: bool) {
        let mut r = Rng(seed | 1);
        let e = elem(e);
        let out = shape(&mut r, rank, 7);
        let (sc, sa, sb) = (bshape(&mut r, &out), bshape(&mut r, &out), bshape(&mut r, &out));
        let mut b = B::new();
        let c = bools(&mut b, &mut r, &sc, cc);
        let x = operand(&mut b, &mut r, &e, &sa, ca);
        let y = operand(&mut b, &mut r, &e, &sb, cb);
        let z = b.node(Op::Where, &[c, x, y], attrs(&[]), e.clone());
        b.output(z);
        if b.m.inputs.is_empty() { return Ok(()); }
        check_bits(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn arg_max_min(seed: u64, rank in 1usize..5, max: bool, keep: bool, last: bool, e in 0usize..ELEMS) {
        let mut r = Rng(seed | 1);
        let e = elem(e);
        let s = shape(&mut r, rank, 7);
        let axis = r.i(-(rank as i64), rank as i64 - 1);
        let mut b = B::new();
        let x = operand(&mut b, &mut r, &e, &s, false);
        let op = if max { Op::ArgMax } else { Op::ArgMin };
        let a = attrs(&[
            ("axis", Attr::Int(axis)),
            ("keepdims", Attr::Bool(keep)),
            ("select_last_index", Attr::Bool(last)),
        ]);
        let z = b.node(op, &[x], a, ElemType::I32);
        b.output(z);
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn top_k(seed: u64, rank in 1usize..4, largest: bool, e in 0usize..ELEMS) {
        let mut r = Rng(seed | 1);
        let e = elem(e);
        let s = shape(&mut r, rank, 9);
        let axis = r.i(-(rank as i64), rank as i64 - 1);
        let d = s[axis.rem_euclid(rank as i64) as usize] as i64;
        let k = r.i(0, d);
        let mut b = B::new();
        let x = operand(&mut b, &mut r, &e, &s, false);
        let a = || attrs(&[
            ("axis", Attr::Int(axis)),
            ("k", Attr::Int(k)),
            ("largest", Attr::Bool(largest)),
        ]);
        let v = b.node(Op::TopK, &[x], a(), e.clone());
        let i = b.node(Op::TopKIndices, &[x], a(), ElemType::I32);
        b.output(v);
        b.output(i);
        if k == 0 { return Ok(()); }
        check_bits(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn one_hot(seed: u64, rank in 0usize..4, which in 0usize..4) {
        let mut r = Rng(seed | 1);
        let e = [int(8, true), int(8, false), int(16, true), int(32, true)][which].clone();
        let s = shape(&mut r, rank, 6);
        let n: usize = s.iter().product();
        let depth = r.i(1, 9);
        let axis = r.i(-(rank as i64) - 1, rank as i64);
        let (lo, hi) = e.code_range().unwrap();
        // Mostly in [-depth, depth), some outside.
        let data: Vec<i64> = (0..n)
            .map(|_| r.i((-depth - 2).max(lo), (depth + 1).min(hi)))
            .collect();
        let mut b = B::new();
        let x = b.input_int(e, &s, data);
        let z = b.node(
            Op::OneHot,
            &[x],
            attrs(&[("depth", Attr::Int(depth)), ("axis", Attr::Int(axis))]),
            ElemType::U1,
        );
        b.output(z);
        check(&b).map_err(TestCaseError::fail)?;
    }
}

/// A float model built from the new ops end to end, f32 at the boundary as ABI v1
/// wants: `where(x < y, x, y)`, arg_max cast to f32, the top 3 values, and a one-hot of
/// the arg_max scaled by `where`.
#[test]
fn float_model_with_logic_compiles_and_matches() {
    let mut r = Rng(7);
    let mut b = B::new();
    let xs = [2, 5, 7];
    let x = b.input_f32(&xs, floats(&mut r, 70));
    let y = b.input_f32(&[7], floats(&mut r, 7));
    let lt = b.node(Op::Less, &[x, y], attrs(&[]), ElemType::U1);
    let m = b.node(Op::Where, &[lt, x, y], attrs(&[]), ElemType::F32);
    let am = b.node(
        Op::ArgMax,
        &[m],
        attrs(&[("axis", Attr::Int(2)), ("keepdims", Attr::Bool(false))]),
        ElemType::I32,
    );
    let amf = b.node(Op::Cast, &[am], attrs(&[]), ElemType::F32);
    let t = b.node(
        Op::TopK,
        &[m],
        attrs(&[("axis", Attr::Int(-1)), ("k", Attr::Int(3))]),
        ElemType::F32,
    );
    let oh = b.node(
        Op::OneHot,
        &[am],
        attrs(&[("depth", Attr::Int(7))]),
        ElemType::U1,
    );
    let on = b.const_f32(&[], vec![2.5]);
    let off = b.const_f32(&[], vec![-1.0]);
    let ohf = b.node(Op::Where, &[oh, on, off], attrs(&[]), ElemType::F32);
    for v in [m, amf, t, ohf] {
        b.output(v);
    }
    check_bits(&b).unwrap();
    // And as an object (ABI v1: f32 only at the boundary).
    let t = qcc::backend::Target::host();
    qcc::backend::compile_object(&b.m, "logic", &t).unwrap();
}

/// Per-tensor quantized codes through where and comparisons keep their type; the
/// kernels report their names.
#[test]
fn kernel_names() {
    let q = ElemType::Quant(QuantType {
        storage: IntType::I8,
        narrow: false,
        pow2: false,
        params: QuantParams::PerTensor {
            scale: 0.5,
            zero_point: -3,
        },
    });
    let mut b = B::new();
    let x = b.input_int(q.clone(), &[4], vec![-128, -3, 0, 127]);
    let y = b.input_int(q.clone(), &[4], vec![-3, -3, 5, 127]);
    let e = b.node(Op::LessOrEqual, &[x, y], attrs(&[]), ElemType::U1);
    let w = b.node(Op::Where, &[e, x, y], attrs(&[]), q);
    b.output(w);
    check(&b).unwrap();
    let jit = qcc::backend::JitModel::new(&b.m).unwrap();
    let names: Vec<String> = jit
        .report()
        .layers
        .iter()
        .map(|l| l.kernel.clone())
        .collect();
    assert_eq!(names, ["less_or_equal.i8", "where.8bit"]);
}

/// The kernels in an aarch64 object (baseline features), run under qemu, match the
/// interpreter: every op of `kernels/logic.rs` on f32 and on 1-, 2- and 4-byte integers
/// (cast from the f32 inputs, results cast back, as ABI v1 passes f32 only).
#[test]
fn aarch64_objects_match_the_interpreter() {
    if !backend_common::have_aarch64_tools() {
        return;
    }
    let mut r = Rng(11);
    let mut b = B::new();
    let mut xd = floats(&mut r, 21);
    xd.iter_mut().for_each(|v| {
        if v.is_infinite() {
            *v = 2.0;
        }
    });
    let x = b.input_f32(&[3, 7], xd);
    let y = b.input_f32(&[7], floats(&mut r, 7));
    let u1 = ElemType::U1;
    let (i8t, i16t, u32t) = (int(8, true), int(16, true), int(32, false));
    let cast = |b: &mut B, v: ValueId, e: &ElemType| b.node(Op::Cast, &[v], attrs(&[]), e.clone());
    let (x8, y8) = (cast(&mut b, x, &i8t), cast(&mut b, y, &i8t));
    let (x16, y16) = (cast(&mut b, x, &i16t), cast(&mut b, y, &i16t));
    let (x32, y32) = (cast(&mut b, x, &u32t), cast(&mut b, y, &u32t));
    let lt = b.node(Op::Less, &[x, y], attrs(&[]), u1.clone());
    let eq = b.node(Op::Equal, &[x8, y8], attrs(&[]), u1.clone());
    let le = b.node(Op::LessOrEqual, &[y32, x32], attrs(&[]), u1.clone());
    let n = b.node(Op::Not, &[lt], attrs(&[]), u1.clone());
    let a = b.node(Op::And, &[n, eq], attrs(&[]), u1.clone());
    let o = b.node(Op::Or, &[a, le], attrs(&[]), u1.clone());
    let xo = b.node(Op::Xor, &[o, lt], attrs(&[]), u1.clone());
    let wf = b.node(Op::Where, &[xo, x, y], attrs(&[]), ElemType::F32);
    let w16 = b.node(Op::Where, &[o, x16, y16], attrs(&[]), i16t.clone());
    let mx = b.node(Op::Max, &[x8, y8], attrs(&[]), i8t.clone());
    let mn = b.node(Op::Min, &[x32, y32], attrs(&[]), u32t.clone());
    let am = b.node(
        Op::ArgMax,
        &[x],
        attrs(&[("axis", Attr::Int(1)), ("keepdims", Attr::Bool(false))]),
        ElemType::I32,
    );
    let an = b.node(
        Op::ArgMin,
        &[x16],
        attrs(&[
            ("axis", Attr::Int(0)),
            ("select_last_index", Attr::Bool(true)),
        ]),
        ElemType::I32,
    );
    let tk = b.node(Op::TopK, &[x], attrs(&[("k", Attr::Int(3))]), ElemType::F32);
    let ti = b.node(
        Op::TopKIndices,
        &[x8],
        attrs(&[
            ("axis", Attr::Int(0)),
            ("k", Attr::Int(2)),
            ("largest", Attr::Bool(false)),
        ]),
        ElemType::I32,
    );
    let oh = b.node(
        Op::OneHot,
        &[am],
        attrs(&[("depth", Attr::Int(7))]),
        u1.clone(),
    );
    let rp = b.f(
        Op::ReduceProd,
        &[x],
        attrs(&[("axes", Attr::Ints(vec![0]))]),
    );
    for v in [wf, tk, rp] {
        b.output(v);
    }
    for v in [xo, w16, mx, mn, am, an, ti, oh] {
        let f = cast(&mut b, v, &ElemType::F32);
        b.output(f);
    }
    let want: Vec<f32> = qcc_ir::interp::run(&b.m, &b.inputs)
        .unwrap()
        .iter()
        .flat_map(|t| t.as_f32().unwrap().to_vec())
        .collect();
    let (_, got) = backend_common::run_aarch64(&b, "logic");
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "element {i}: aarch64 {g}, interpreter {w}"
        );
    }
}
