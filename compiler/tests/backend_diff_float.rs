//! Differential tests of the f32 kernels: the JIT against the reference interpreter on
//! random shapes, attributes and data (tolerance: `backend_common::TOL`).

mod backend_common;

use backend_common::{B, Rng, TOL, attrs, cfg, check, ints};
use proptest::prelude::*;
use qcc_ir::{Attr, Op};

fn shape(r: &mut Rng, rank: usize, max: i64) -> Vec<usize> {
    (0..rank).map(|_| r.i(1, max) as usize).collect()
}

const UNARY: [Op; 18] = [
    Op::Abs,
    Op::Neg,
    Op::Floor,
    Op::Ceil,
    Op::Round,
    Op::Log,
    Op::Tanh,
    Op::Erf,
    Op::Relu,
    Op::Clip,
    Op::LeakyRelu,
    Op::HardSigmoid,
    Op::HardSwish,
    Op::Sigmoid,
    Op::Silu,
    Op::Exp,
    Op::Sqrt,
    Op::Sign,
];

/// Winograd's transforms add, subtract and scale partial sums by up to 8 before the sum
/// over channels, so its rounding error grows with the magnitude of the summed terms,
/// not of the result: |jit - interp| <= TOL (1 + |interp|) + WINOGRAD_REL * sum |x| |w|
/// over the output's receptive field.
// 2e-6 was exceeded once (x86-64-v3, F(4x4, 3x3), 38 channels: |error| 2.3e-4 with the
// summed terms under 66, proptest seed 1263768341191334444 of winograd_fwide).
// 4e-6 was exceeded once (conv2d_winograd at 300 cases: |error| 1.9e-4 against a
// tolerance of 1.87e-4); F(4x4, 3x3) scales partial sums by up to 8 in both transforms.
const WINOGRAD_REL: f32 = 8e-6;

fn check_winograd(b: &B, babs: &B) -> Result<(), String> {
    use qcc_ir::interp::{self, TensorData};
    let want = interp::run(&b.m, &b.inputs).map_err(|e| format!("interp: {e}"))?;
    let mag = interp::run(&babs.m, &babs.inputs).map_err(|e| format!("interp: {e}"))?;
    let jit = qcc::backend::JitModel::new(&b.m).map_err(|e| format!("compile: {e}"))?;
    if !jit.report().to_string().contains("winograd") {
        return Err(format!("no Winograd kernel chosen:\n{}", jit.report()));
    }
    let got = jit.run(&b.inputs).map_err(|e| format!("run: {e}"))?;
    let (TensorData::F32(w), TensorData::F32(g), TensorData::F32(s)) =
        (&want[0].data, &got[0].data, &mag[0].data)
    else {
        return Err("f32 outputs expected".into());
    };
    let mut worst = 0f32;
    for i in 0..w.len() {
        let err = (w[i] - g[i]).abs();
        let tol = TOL * (1.0 + w[i].abs()) + WINOGRAD_REL * s[i];
        worst = worst.max((err - TOL * (1.0 + w[i].abs())) / s[i].max(1e-30));
        if err > tol {
            return Err(format!(
                "output[{i}]: interp {}, jit {}, sum |x||w| {}\nreport:\n{}",
                w[i],
                g[i],
                s[i],
                jit.report()
            ));
        }
    }
    if std::env::var_os("QCC_WINOGRAD_ERR").is_some() {
        eprintln!("worst (err - TOL(1+|y|)) / sum|x||w| = {worst:e}");
    }
    Ok(())
}

/// `op` over `xs` on the JIT (one f32 input of that length).
fn jit_unary(op: Op, xs: &[f32]) -> Vec<f32> {
    let mut b = B::new();
    let x = b.input_f32(&[xs.len()], xs.to_vec());
    let y = b.f(op, &[x], attrs(&[]));
    b.output(y);
    let jit = qcc::backend::JitModel::new(&b.m).unwrap();
    let out = jit.run(&b.inputs).unwrap();
    out[0].as_f32().unwrap().to_vec()
}

/// Values that trip rounding and special cases: signed zeros, ties, the 2^23 boundary,
/// infinities, NaN, subnormals, and a sweep.
fn hard_values() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        -2.5,
        0.49999997,
        -0.49999997,
        0.3,
        -0.3,
        0.7,
        -0.7,
        1.0,
        -1.0,
        8388607.5,
        -8388607.5,
        8388608.0,
        -8388609.0,
        1e10,
        -1e10,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-40,
        -1e-40,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
    ];
    v.extend((0..2000).map(|i| (i as f32 - 1000.0) * 0.0137));
    v
}

/// Floor, ceil and round on the JIT equal Rust's bit for bit (sign of zero included).
#[test]
fn rounding_is_exact() {
    let xs = hard_values();
    for (op, f) in [
        (Op::Floor, f32::floor as fn(f32) -> f32),
        (Op::Ceil, f32::ceil),
        (Op::Round, f32::round_ties_even),
    ] {
        let got = jit_unary(op, &xs);
        for (x, g) in xs.iter().zip(got) {
            let want = f(*x);
            assert!(
                want.to_bits() == g.to_bits() || (want.is_nan() && g.is_nan()),
                "{op}({x}) = {g}, expected {want}"
            );
        }
    }
}

/// ln, tanh and erf on the JIT against the interpreter (Rust's `ln` and `tanh`, the f64
/// erf of `interp::float`): relative error within the bounds of `backend/math.rs`, and
/// the same special values.
#[test]
fn transcendental_error_bounds() {
    let mut xs = hard_values();
    xs.extend((1..3000).map(|i| (i as f32 * 0.37).exp2() * 1e-30));
    xs.extend((1..2000).map(|i| 1.0 + i as f32 * 1e-4));
    for (op, bound) in [(Op::Log, 1e-6f64), (Op::Tanh, 1e-6), (Op::Erf, 4e-7)] {
        let got = jit_unary(op, &xs);
        let mut b = B::new();
        let x = b.input_f32(&[xs.len()], xs.clone());
        let y = b.f(op, &[x], attrs(&[]));
        b.output(y);
        let want = qcc_ir::interp::run(&b.m, &b.inputs).unwrap();
        let want = want[0].as_f32().unwrap();
        for ((x, g), w) in xs.iter().zip(got).zip(want) {
            let (g, w) = (g as f64, *w as f64);
            let ok = (g.is_nan() && w.is_nan())
                || g == w
                || (g - w).abs() <= bound * w.abs().max(if op == Op::Erf { 1e-30 } else { 0.0 });
            assert!(
                ok,
                "{op}({x}): jit {g}, interpreter {w}, relative error {:e}",
                ((g - w) / w).abs()
            );
        }
    }
}

/// erf with AVX-512 runs on zmm (`kernels/erfzmm.rs`) the operations of the 128-bit
/// kernel with FMA: the two must agree bit for bit (x86-64-v4 against x86-64-v3), on
/// the hard values, a sweep across both branches (|x| below and above 1/2) and every
/// length from 1 to 40 (whole zmm runs and the 128-bit tail).
#[test]
fn erf_zmm_equals_the_fma_kernel() {
    if !qcc::backend::Tier::host().avx512_vnni() {
        eprintln!("skipped: this CPU has no AVX-512");
        return;
    }
    let host = target_lexicon::Triple::host().to_string();
    let run = |cpu: &str, xs: &[f32]| -> (Vec<f32>, String) {
        let mut b = B::new();
        let x = b.input_f32(&[xs.len()], xs.to_vec());
        let y = b.f(Op::Erf, &[x], attrs(&[]));
        b.output(y);
        let t = qcc::backend::Target::new(&host, cpu).unwrap();
        let jit = qcc::backend::JitModel::with_target(&b.m, &t).unwrap();
        let out = jit.run(&b.inputs).unwrap()[0].as_f32().unwrap().to_vec();
        (out, qcc::backend::emit_asm(&b.m, "t", &t).unwrap())
    };
    let mut xs = hard_values();
    xs.extend((0..4000).map(|i| -6.0 + i as f32 * 3e-3));
    xs.extend((1..400).map(|i| (i as f32 * 0.37).exp2() * 1e-30));
    let mut r = Rng(11);
    let mut cases = vec![xs];
    cases.extend((1..=40).map(|n| r.fs(n, -4.0, 4.0)));
    for xs in cases {
        let (wide, asm) = run("x86-64-v4", &xs);
        let (narrow, _) = run("x86-64-v3", &xs);
        assert_eq!(asm.contains("erf_zmm"), xs.len() >= 16, "zmm kernel use");
        for ((x, a), b) in xs.iter().zip(&wide).zip(&narrow) {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "erf({x}): zmm {a}, fma kernel {b}"
            );
        }
    }
}

/// Softmax rows of 16 or more with AVX-512 run on zmm (`kernels/softzmm.rs`): bit for
/// bit the 128-bit kernel with FMA (x86-64-v4 against x86-64-v3), on row lengths 16 to
/// 70 (whole vectors, masked tails, quads and single tails of the sum), several rows,
/// large and tiny values, infinities, a NaN, signed zeros.
#[test]
fn softmax_zmm_equals_the_fma_kernel() {
    if !qcc::backend::Tier::host().avx512_vnni() {
        eprintln!("skipped: this CPU has no AVX-512");
        return;
    }
    let host = target_lexicon::Triple::host().to_string();
    let mut r = Rng(5);
    for d in 16..=70usize {
        let rows = r.i(1, 5) as usize;
        let mut xs = r.fs(rows * d, -30.0, 30.0);
        match d % 7 {
            0 => xs[r.i(0, (rows * d - 1) as i64) as usize] = f32::NAN,
            1 => xs[0] = f32::INFINITY,
            2 => xs[d - 1] = f32::NEG_INFINITY,
            3 => xs
                .iter_mut()
                .take(d)
                .for_each(|v| *v = if *v < 0.0 { -0.0 } else { 0.0 }),
            4 => xs.iter_mut().for_each(|v| *v *= 1e4),
            _ => {}
        }
        let mut b = B::new();
        let x = b.input_f32(&[rows, d], xs.clone());
        let y = b.f(Op::Softmax, &[x], attrs(&[("axis", Attr::Int(-1))]));
        b.output(y);
        let run = |cpu: &str| {
            let t = qcc::backend::Target::new(&host, cpu).unwrap();
            let jit = qcc::backend::JitModel::with_target(&b.m, &t).unwrap();
            let out = jit.run(&b.inputs).unwrap()[0].as_f32().unwrap().to_vec();
            (out, qcc::backend::emit_asm(&b.m, "t", &t).unwrap())
        };
        let (wide, asm) = run("x86-64-v4");
        let (narrow, _) = run("x86-64-v3");
        assert!(asm.contains("softmax_zmm"), "d = {d}: no zmm kernel");
        for (i, (a, c)) in wide.iter().zip(&narrow).enumerate() {
            assert!(
                a.to_bits() == c.to_bits() || (a.is_nan() && c.is_nan()),
                "d = {d}, element {i} (x {}): zmm {a}, fma kernel {c}",
                xs[i]
            );
        }
    }
}

/// f32 add, sub, mul and div whose innermost run has 16 or more elements run on zmm
/// with AVX-512 (`kernels/binzmm.rs`): exactly the interpreter's results for both
/// operands contiguous, a scalar on either side, a broadcast row or column, run lengths
/// 16..70 (whole steps and the 128-bit tail), infinities, NaN and signed zeros.
#[test]
fn binary_zmm_is_exact() {
    let mut r = Rng(9);
    for case in 0..60usize {
        let op = [Op::Add, Op::Sub, Op::Mul, Op::Div][case % 4];
        let (rows, n) = (r.i(1, 4) as usize, r.i(16, 70) as usize);
        let (sa, sb): (Vec<usize>, Vec<usize>) = match (case / 4) % 5 {
            0 => (vec![rows, n], vec![rows, n]),
            1 => (vec![rows, n], vec![1]),
            2 => (vec![1], vec![rows, n]),
            3 => (vec![rows, n], vec![rows, 1]),
            _ => (vec![rows, n], vec![n]),
        };
        let data = |r: &mut Rng, s: &[usize]| -> Vec<f32> {
            let len: usize = s.iter().product();
            let mut v = r.fs(len, -50.0, 50.0);
            for x in v.iter_mut() {
                match r.i(0, 30) {
                    0 => *x = f32::NAN,
                    1 => *x = f32::INFINITY,
                    2 => *x = -0.0,
                    3 => *x = 0.0,
                    _ => {}
                }
            }
            v
        };
        let mut b = B::new();
        let (da, db) = (data(&mut r, &sa), data(&mut r, &sb));
        let xa = b.input_f32(&sa, da);
        let xb = b.input_f32(&sb, db);
        let y = b.f(op, &[xa, xb], attrs(&[]));
        b.output(y);
        let want = qcc_ir::interp::run(&b.m, &b.inputs).unwrap();
        let jit = qcc::backend::JitModel::new(&b.m).unwrap();
        let got = jit.run(&b.inputs).unwrap();
        let (w, g) = (want[0].as_f32().unwrap(), got[0].as_f32().unwrap());
        for (i, (x, y)) in w.iter().zip(g).enumerate() {
            assert!(
                x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                "{op} {sa:?} {sb:?} [{i}]: interp {x}, jit {y}"
            );
        }
        if qcc::backend::Tier::host().level >= 4 {
            let host = target_lexicon::Triple::host().to_string();
            let t = qcc::backend::Target::new(&host, "x86-64-v4").unwrap();
            let asm = qcc::backend::emit_asm(&b.m, "t", &t).unwrap();
            assert!(asm.contains("_zmm_n"), "{op} {sa:?} {sb:?}: no zmm kernel");
        }
    }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn unary(seed: u64, which in 0..UNARY.len(), rank in 0usize..4) {
        let mut r = Rng(seed | 1);
        let op = UNARY[which];
        let s = shape(&mut r, rank, 9);
        let n = s.iter().product();
        let (lo, hi) = if matches!(op, Op::Sqrt | Op::Log) { (0.0, 50.0) } else { (-20.0, 20.0) };
        let mut data = r.fs(n, lo, hi);
        if n > 2 && !matches!(op, Op::Sqrt | Op::Log) { data[0] = 0.0; data[1] = -0.0; }
        let mut b = B::new();
        let x = b.input_f32(&s, data);
        let a = match op {
            Op::Clip => attrs(&[("min", Attr::Float(r.f(-5.0, 0.0))), ("max", Attr::Float(r.f(0.0, 5.0)))]),
            Op::LeakyRelu => attrs(&[("alpha", Attr::Float(r.f(0.0, 0.5)))]),
            Op::HardSigmoid => attrs(&[("alpha", Attr::Float(r.f(0.05, 0.5))), ("beta", Attr::Float(r.f(0.0, 1.0)))]),
            _ => attrs(&[]),
        };
        let y = b.f(op, &[x], a);
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn binary_broadcast(seed: u64, which in 0usize..6, rank in 0usize..5, ca: bool, cb: bool) {
        let mut r = Rng(seed | 1);
        let op = [Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Max, Op::Min][which];
        let out = shape(&mut r, rank, 7);
        let pick = |r: &mut Rng| -> Vec<usize> {
            let drop = r.i(0, out.len() as i64) as usize;
            out[drop..].iter().map(|&d| if r.i(0, 2) == 0 { 1 } else { d }).collect()
        };
        let (sa, sb) = (pick(&mut r), pick(&mut r));
        let na: usize = sa.iter().product();
        let nb: usize = sb.iter().product();
        let mut b = B::new();
        let da = r.fs(na, -3.0, 3.0);
        let db: Vec<f32> = (0..nb).map(|_| { let v = r.f(0.5, 2.0); if r.i(0, 1) == 0 { v } else { -v } }).collect();
        let x = b.f32_operand(ca && cb, &sa, da);
        let y = b.f32_operand(cb && !ca, &sb, db);
        let z = b.f(op, &[x, y], attrs(&[]));
        b.output(z);
        if b.m.inputs.is_empty() { return Ok(()); }
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn conv2d(seed: u64, fuse in 0usize..3, with_bias: bool, depthwise: bool) {
        let mut r = Rng(seed | 1);
        let n = r.i(1, 2) as usize;
        let group = if depthwise { r.i(1, 6) as usize } else { r.i(1, 3) as usize };
        let cg = if depthwise { 1 } else { r.i(1, 4) as usize };
        let mg = r.i(1, if depthwise { 2 } else { 5 }) as usize;
        let (c, m) = (cg * group, mg * group);
        let (kh, kw) = (r.i(1, 3) as usize, r.i(1, 3) as usize);
        let (sh, sw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let (dh, dw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let pads: Vec<i64> = (0..4).map(|_| r.i(0, 2)).collect();
        // Depthwise rows up to 48 wide reach the direct kernel's vector loops.
        let (h, w) = (r.i(1, 11) as usize, r.i(1, if depthwise { 48 } else { 11 }) as usize);
        let fits = |len: usize, k: usize, d: usize, p0: i64, p1: i64| len as i64 + p0 + p1 >= (d * (k - 1) + 1) as i64;
        prop_assume!(fits(h, kh, dh, pads[0], pads[2]) && fits(w, kw, dw, pads[1], pads[3]));
        let mut b = B::new();
        let x = b.input_f32(&[n, c, h, w], r.fs(n * c * h * w, -1.0, 1.0));
        let wt = b.const_f32(&[m, cg, kh, kw], r.fs(m * cg * kh * kw, -1.0, 1.0));
        let mut ops = vec![x, wt];
        if with_bias { ops.push(b.const_f32(&[m], r.fs(m, -1.0, 1.0))); }
        let a = attrs(&[
            ("strides", ints(&[sh as i64, sw as i64])),
            ("pads", ints(&pads)),
            ("dilations", ints(&[dh as i64, dw as i64])),
            ("group", Attr::Int(group as i64)),
        ]);
        let mut y = b.f(Op::Conv2d, &ops, a);
        y = match fuse {
            1 => b.f(Op::Relu, &[y], attrs(&[])),
            2 => b.f(Op::Clip, &[y], attrs(&[("min", Attr::Float(-0.5)), ("max", Attr::Float(0.7))])),
            _ => y,
        };
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
    }

    /// 3x3 stride-1 convolutions of the sizes the Winograd kernels take (F(4x4, 3x3):
    /// OH a multiple of 4, OW of 16; F(2x2, 3x3): OH even, OW a multiple of 8; whole GEMM
    /// panels of tiles), any padding. Tolerance: [`winograd_tol`].
    #[test]
    fn conv2d_winograd(seed: u64, fuse in 0usize..3, with_bias: bool) {
        let mut r = Rng(seed | 1);
        let n = r.i(1, 2) as usize;
        let (c, m) = (r.i(4, 20) as usize, r.i(4, 20) as usize);
        let pads: Vec<i64> = (0..4).map(|_| r.i(0, 2)).collect();
        let oh = 2 * r.i(1, 8) as usize;
        let ow = 8 * r.i(1, 4) as usize;
        prop_assume!((oh / 2 * (ow / 2)).is_multiple_of(8));
        let h = oh as i64 + 2 - pads[0] - pads[2];
        let w = ow as i64 + 2 - pads[1] - pads[3];
        prop_assume!(h >= 1 && w >= 1);
        let (h, w) = (h as usize, w as usize);
        let xs = r.fs(n * c * h * w, -4.0, 4.0);
        let ws = r.fs(m * c * 9, -1.0, 1.0);
        let a = attrs(&[
            ("strides", ints(&[1, 1])),
            ("pads", ints(&pads)),
            ("dilations", ints(&[1, 1])),
            ("group", Attr::Int(1)),
        ]);
        // The magnitude of each output's sum, conv(|x|, |w|), scales the tolerance.
        let mut babs = B::new();
        let xa = babs.input_f32(&[n, c, h, w], xs.iter().map(|v| v.abs()).collect());
        let wa = babs.const_f32(&[m, c, 3, 3], ws.iter().map(|v| v.abs()).collect());
        let ya = babs.f(Op::Conv2d, &[xa, wa], a.clone());
        babs.output(ya);
        let mut b = B::new();
        let x = b.input_f32(&[n, c, h, w], xs);
        let wt = b.const_f32(&[m, c, 3, 3], ws);
        let mut ops = vec![x, wt];
        if with_bias { ops.push(b.const_f32(&[m], r.fs(m, -1.0, 1.0))); }
        let mut y = b.f(Op::Conv2d, &ops, a);
        y = match fuse {
            1 => b.f(Op::Relu, &[y], attrs(&[])),
            2 => b.f(Op::Clip, &[y], attrs(&[("min", Attr::Float(-0.5)), ("max", Attr::Float(0.7))])),
            _ => y,
        };
        b.output(y);
        check_winograd(&b, &babs).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn gemm(seed: u64, ta: bool, tb: bool, bconst: bool, with_c in 0usize..5, relu: bool) {
        let mut r = Rng(seed | 1);
        let (m, n, k) = (r.i(1, 19) as usize, r.i(1, 37) as usize, r.i(1, 40) as usize);
        let bconst = bconst || tb;
        let mut b = B::new();
        let sa = if ta { [k, m] } else { [m, k] };
        let sb = if tb { [n, k] } else { [k, n] };
        let x = b.input_f32(&sa, r.fs(m * k, -1.0, 1.0));
        let y = b.f32_operand(bconst, &sb, r.fs(n * k, -1.0, 1.0));
        let mut ops = vec![x, y];
        let cs: Option<Vec<usize>> = match with_c { 1 => Some(vec![n]), 2 => Some(vec![m, 1]), 3 => Some(vec![m, n]), 4 => Some(vec![]), _ => None };
        if let Some(cs) = &cs {
            let nc = cs.iter().product();
            let d = r.fs(nc, -1.0, 1.0);
            ops.push(b.f32_operand(r.i(0, 1) == 0, cs, d));
        }
        let a = attrs(&[
            ("trans_a", Attr::Bool(ta)), ("trans_b", Attr::Bool(tb)),
            ("alpha", Attr::Float(if r.i(0, 1) == 0 { 1.0 } else { r.f(-2.0, 2.0) })),
            ("beta", Attr::Float(if r.i(0, 1) == 0 { 1.0 } else { r.f(-2.0, 2.0) })),
        ]);
        let mut z = b.f(Op::Gemm, &ops, a);
        if relu { z = b.f(Op::Relu, &[z], attrs(&[])); }
        b.output(z);
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn matmul(seed: u64, bconst: bool, ra in 1usize..4, rb in 1usize..4) {
        let mut r = Rng(seed | 1);
        let (m, n, k) = (r.i(1, 9) as usize, r.i(1, 13) as usize, r.i(1, 17) as usize);
        let batch = shape(&mut r, 2, 3);
        let mk = |r: &mut Rng, rank: usize, last2: [usize; 2]| -> Vec<usize> {
            if rank == 1 { return vec![last2[1]]; }
            let mut s: Vec<usize> = batch[2 - (rank - 2).min(2)..].iter().map(|&d| if r.i(0, 2) == 0 { 1 } else { d }).collect();
            s.extend(last2);
            s
        };
        let sa = mk(&mut r, ra, [m, k]);
        let sb = if rb == 1 { vec![k] } else { mk(&mut r, rb, [k, n]) };
        let mut b = B::new();
        let x = b.input_f32(&sa, r.fs(sa.iter().product(), -1.0, 1.0));
        let y = b.f32_operand(bconst, &sb, r.fs(sb.iter().product(), -1.0, 1.0));
        let z = b.f(Op::MatMul, &[x, y], attrs(&[]));
        b.output(z);
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn pooling(seed: u64, max: bool, ceil: bool, include_pad: bool) {
        let mut r = Rng(seed | 1);
        let (n, c) = (r.i(1, 2) as usize, r.i(1, 3) as usize);
        let (h, w) = (r.i(1, 12) as usize, r.i(1, 12) as usize);
        let (kh, kw) = (r.i(1, 3) as usize, r.i(1, 3) as usize);
        let (sh, sw) = (r.i(1, 3) as usize, r.i(1, 3) as usize);
        let d: Vec<i64> = if max { vec![r.i(1, 2), r.i(1, 2)] } else { vec![1, 1] };
        let pads: Vec<i64> = vec![r.i(0, (kh as i64 - 1).min(1)), r.i(0, (kw as i64 - 1).min(1)), r.i(0, (kh as i64 - 1).min(1)), r.i(0, (kw as i64 - 1).min(1))];
        let fits = |len: usize, k: usize, dd: i64, p0: i64, p1: i64| len as i64 + p0 + p1 > dd * (k as i64 - 1);
        prop_assume!(fits(h, kh, d[0], pads[0], pads[2]) && fits(w, kw, d[1], pads[1], pads[3]));
        let mut b = B::new();
        let x = b.input_f32(&[n, c, h, w], r.fs(n * c * h * w, -4.0, 4.0));
        let mut a = vec![
            ("kernel", ints(&[kh as i64, kw as i64])),
            ("strides", ints(&[sh as i64, sw as i64])),
            ("pads", ints(&pads)),
            ("ceil_mode", Attr::Bool(ceil)),
        ];
        if max { a.push(("dilations", ints(&d))); } else { a.push(("count_include_pad", Attr::Bool(include_pad))); }
        let y = b.f(if max { Op::MaxPool } else { Op::AvgPool }, &[x], attrs(&a));
        b.output(y);
        // Windows that cover only padding are rejected by the interpreter; skip those.
        if qcc_ir::interp::run(&b.m, &b.inputs).is_err() { return Ok(()); }
        check(&b).map_err(TestCaseError::fail)?;
    }

    /// Max pools with unit strides and "same" padding along the rows (SPPF's 5x5 and
    /// the like): the separable kernel up to rows of 32, the window kernel past them.
    #[test]
    fn max_pool_same(seed: u64, k in 2usize..8, planes in 1usize..4) {
        let mut r = Rng(seed | 1);
        let (h, w) = (r.i(1, 12) as usize, r.i(1, 40) as usize);
        let kh = r.i(1, k as i64) as usize;
        let pl = r.i(0, k as i64 - 1);
        let pt = r.i(0, kh as i64 - 1);
        let pb = r.i(0, kh as i64 - 1 - pt);
        let pads = [pt, pl, pb, k as i64 - 1 - pl];
        prop_assume!(h as i64 + pt + pb >= kh as i64);
        let mut b = B::new();
        let mut xs = r.fs(planes * h * w, -4.0, 4.0);
        if xs.len() > 2 { xs[0] = -0.0; xs[1] = 0.0; }
        let x = b.input_f32(&[1, planes, h, w], xs);
        let a = vec![
            ("kernel", ints(&[kh as i64, k as i64])),
            ("strides", ints(&[1, 1])),
            ("pads", ints(&pads)),
            ("dilations", ints(&[1, 1])),
            ("ceil_mode", Attr::Bool(false)),
        ];
        let y = b.f(Op::MaxPool, &[x], attrs(&a));
        b.output(y);
        if qcc_ir::interp::run(&b.m, &b.inputs).is_err() { return Ok(()); }
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn reductions_and_norms(seed: u64, which in 0usize..3) {
        let mut r = Rng(seed | 1);
        let rank = r.i(2, 4) as usize;
        let s = shape(&mut r, rank, 9);
        let n: usize = s.iter().product();
        let mut b = B::new();
        let x = b.input_f32(&s, r.fs(n, -6.0, 6.0));
        let y = match which {
            0 => b.f(Op::GlobalAvgPool, &[x], attrs(&[])),
            1 => {
                let c = s[1];
                let p: Vec<_> = (0..4).map(|i| {
                    let d = if i == 3 { r.fs(c, 0.1, 2.0) } else { r.fs(c, -1.0, 1.0) };
                    b.const_f32(&[c], d)
                }).collect();
                b.f(Op::BatchNorm, &[x, p[0], p[1], p[2], p[3]], attrs(&[("epsilon", Attr::Float(1e-5))]))
            }
            _ => {
                let axis = r.i(-(rank as i64), rank as i64 - 1);
                b.f(Op::Softmax, &[x], attrs(&[("axis", Attr::Int(axis))]))
            }
        };
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn movement(seed: u64, which in 0usize..6) {
        let mut r = Rng(seed | 1);
        let rank = r.i(1, 4) as usize;
        let s = shape(&mut r, rank, 6);
        let n: usize = s.iter().product();
        let mut b = B::new();
        let x = b.input_f32(&s, r.fs(n, -3.0, 3.0));
        let y = match which {
            0 => {
                let mut perm: Vec<i64> = (0..rank as i64).collect();
                for i in (1..rank).rev() { perm.swap(i, r.i(0, i as i64) as usize); }
                b.f(Op::Transpose, &[x], attrs(&[("perm", ints(&perm))]))
            }
            1 => {
                let ax = r.i(0, rank as i64 - 1);
                let d = s[ax as usize] as i64;
                let step = [1, 2, -1, -2][r.i(0, 3) as usize];
                let (st, en) = (r.i(-d - 1, d + 1), r.i(-d - 1, d + 1));
                b.f(Op::Slice, &[x], attrs(&[("starts", ints(&[st])), ("ends", ints(&[en])), ("axes", ints(&[ax])), ("steps", ints(&[step]))]))
            }
            2 => {
                let mode = ["constant", "reflect", "edge", "wrap"][r.i(0, 3) as usize];
                let pads: Vec<i64> = (0..2 * rank).map(|i| {
                    let d = s[i % rank] as i64;
                    if mode == "constant" { r.i(-1.min(d - 1), 2) } else { r.i(0, (d - 1).min(2)) }
                }).collect();
                b.f(Op::Pad, &[x], attrs(&[("pads", ints(&pads)), ("mode", Attr::Enum(mode.into())), ("value", Attr::Float(1.5))]))
            }
            3 => {
                let ax = r.i(0, rank as i64 - 1) as usize;
                let mut s2 = s.clone();
                s2[ax] = r.i(1, 4) as usize;
                let n2 = s2.iter().product();
                let d = r.fs(n2, -1.0, 1.0);
                let z = b.f32_operand(r.i(0, 1) == 0, &s2, d);
                b.f(Op::Concat, &[x, z, x], attrs(&[("axis", Attr::Int(ax as i64))]))
            }
            4 => {
                // A view that is an output is copied.
                b.f(Op::Flatten, &[x], attrs(&[("axis", Attr::Int(r.i(0, rank as i64)))]))
            }
            _ => {
                // A view in the middle aliases; an input that is also an output is copied.
                let v = b.f(Op::Reshape, &[x], attrs(&[("shape", ints(&[n as i64]))]));
                let z = b.f(Op::Relu, &[v], attrs(&[]));
                b.output(x);
                z
            }
        };
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
    }
}

/// Both Winograd variants as an aarch64 object under qemu (the transforms' lane
/// shuffles lower differently there): within the tolerance of the interpreter.
#[test]
fn winograd_aarch64_object_runs_under_qemu() {
    if !backend_common::have_aarch64_tools() {
        return;
    }
    let mut r = Rng(31);
    let mut b = B::new();
    let conv = |b: &mut B, r: &mut Rng, c: usize, m: usize, hw: usize| {
        let x = b.input_f32(&[1, c, hw, hw], r.fs(c * hw * hw, -2.0, 2.0));
        let w = b.const_f32(&[m, c, 3, 3], r.fs(m * c * 9, -1.0, 1.0));
        let bias = b.const_f32(&[m], r.fs(m, -1.0, 1.0));
        let a = attrs(&[
            ("strides", ints(&[1, 1])),
            ("pads", ints(&[1, 1, 1, 1])),
            ("dilations", ints(&[1, 1])),
            ("group", Attr::Int(1)),
        ]);
        let y = b.f(Op::Conv2d, &[x, w, bias], a);
        let y = b.f(Op::Relu, &[y], attrs(&[]));
        b.output(y);
    };
    conv(&mut b, &mut r, 6, 5, 16); // F(4x4, 3x3)
    conv(&mut b, &mut r, 5, 7, 8); // F(2x2, 3x3)
    let want: Vec<f32> = qcc_ir::interp::run(&b.m, &b.inputs)
        .unwrap()
        .iter()
        .flat_map(|t| t.as_f32().unwrap().to_vec())
        .collect();
    let (report, got) = backend_common::run_aarch64(&b, "winograd");
    let kernels: Vec<&str> = report.layers.iter().map(|l| l.kernel.as_str()).collect();
    assert!(
        kernels.iter().any(|k| k.contains("winograd4x4"))
            && kernels.iter().any(|k| k.contains("winograd2x2")),
        "{kernels:?}"
    );
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "[{i}]: aarch64 {g}, interp {w}"
        );
    }
}
