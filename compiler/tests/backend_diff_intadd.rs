//! Differential tests of the integer elementwise kernels (`kernels::intelem`): plain
//! integer add/sub/mul with broadcasting, the fused
//! `requantize(add(requantize(a), requantize(b)))` kernel, and table lookups. The JIT
//! must equal the interpreter bit for bit. Also: the `int-add` rewrite of a quantized add
//! over every pair of u8 codes stays within one code of the float definition, and the
//! compiled result equals the interpreter's on all of them.

mod backend_common;

use backend_common::{B, Rng, attrs, cfg, check, check_cpu, codes, ints};
use proptest::prelude::*;
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType, Rounding};

fn qtype(bits: u8, signed: bool, scale: f32, zero_point: i32) -> ElemType {
    ElemType::Quant(QuantType {
        storage: IntType::new(bits, signed),
        narrow: false,
        pow2: false,
        params: QuantParams::PerTensor { scale, zero_point },
    })
}

/// Plain integer types the unfused kernel handles (storage bits, signed).
const INTS: [(u8, bool); 6] = [
    (32, true),
    (16, true),
    (8, true),
    (8, false),
    (4, true),
    (3, false),
];

const OPS: [Op; 3] = [Op::Add, Op::Sub, Op::Mul];

fn shape(r: &mut Rng, rank: usize, max: i64) -> Vec<usize> {
    (0..rank).map(|_| r.i(1, max) as usize).collect()
}

/// `b`'s shape: `a`'s with some dimensions set to 1 and some leading ones dropped.
fn bcast_shape(r: &mut Rng, a: &[usize]) -> Vec<usize> {
    let drop = r.i(0, a.len() as i64) as usize;
    a[drop..]
        .iter()
        .map(|&d| if r.i(0, 2) == 0 { 1 } else { d })
        .collect()
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn int_binary(seed: u64, ty in 0usize..6, op in 0usize..3, rank in 0usize..4, bc: bool, b_const: bool) {
        let mut r = Rng(seed | 1);
        let (bits, signed) = INTS[ty];
        let e = ElemType::Int(IntType::new(bits, signed));
        let sa = shape(&mut r, rank, 9);
        let sb = if bc { bcast_shape(&mut r, &sa) } else { sa.clone() };
        let mut b = B::new();
        let da = codes(&mut r, &e, sa.iter().product());
        let db = codes(&mut r, &e, sb.iter().product());
        let x = b.input_int(e.clone(), &sa, da);
        let y = if b_const { b.const_int(e.clone(), &sb, db) } else { b.input_int(e.clone(), &sb, db) };
        let z = b.node(OPS[op], &[x, y], attrs(&[]), e);
        b.output(z);
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn fused_requant_add(seed: u64, sta in 0usize..4, stb in 0usize..4, op in 0usize..3, rnd in 0usize..7, clamp: bool, i16_mid: bool, left: bool) {
        let mut r = Rng(seed | 1);
        let st = [(8u8, false), (8, true), (4, true), (16, true)];
        let s = shape(&mut r, 3, 9);
        let n: usize = s.iter().product();
        let ea = qtype(st[sta].0, st[sta].1, 0.1, r.i(0, 3) as i32);
        let eb = qtype(st[stb].0, st[stb].1, 0.2, r.i(0, 3) as i32);
        let mid = if i16_mid { ElemType::Int(IntType::new(16, true)) } else { ElemType::I32 };
        let mut b = B::new();
        let da = codes(&mut r, &ea, n);
        let db = codes(&mut r, &eb, n);
        let x = b.input_int(ea, &s, da);
        let y = b.input_int(eb, &s, db);
        // Operand rescales: an exact multiply (shift 0), a left shift, or a rounding one.
        let rq = |b: &mut B, v, r: &mut Rng| {
            let (m, sh) = match r.i(0, 2) {
                0 => (r.i(1, 1 << 12), 0),
                1 if left => (1, -r.i(1, 12)),
                _ => (r.i(1 << 20, 1 << 30), r.i(10, 30)),
            };
            let a = attrs(&[("multiplier", ints(&[m])), ("shift", ints(&[sh]))]);
            b.node(Op::Requantize, &[v], a, mid.clone())
        };
        let ra = rq(&mut b, x, &mut r);
        let rb = rq(&mut b, y, &mut r);
        let acc = b.node(OPS[op], &[ra, rb], attrs(&[]), mid.clone());
        let out = qtype(8, false, 0.05, r.i(0, 20) as i32);
        let mut a = vec![
            ("multiplier", ints(&[r.i(1 << 28, (1 << 31) - 1)])),
            ("shift", ints(&[r.i(20, 45)])),
            ("rounding", Attr::Enum(Rounding::ALL[rnd].name().into())),
        ];
        if clamp { a.push(("min", Attr::Int(10))); a.push(("max", Attr::Int(200))); }
        let z = b.node(Op::Requantize, &[acc], attrs(&a), out);
        b.output(z);
        check(&b).map_err(TestCaseError::fail)?;
        // The AVX2 form (`addzmm.rs`, ymm) where the host runs it.
        if qcc::backend::Tier::host().avx2() && cfg!(target_arch = "x86_64") {
            check_cpu(&b, "x86-64-v3").map_err(TestCaseError::fail)?;
        }
        // The three requantizes and the add are one kernel.
        let jit = qcc::backend::JitModel::new(&b.m).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let layers = &jit.report().layers;
        prop_assert_eq!(layers.len(), 1);
        prop_assert!(layers[0].kernel.starts_with("requantize+"), "{}", layers[0].kernel);
        prop_assert!(layers[0].integer);
    }

    #[test]
    fn lookup(seed: u64, st in 0usize..5, out_q: bool, rank in 0usize..4, t_const: bool) {
        let mut r = Rng(seed | 1);
        let sts = [(8u8, false), (8, true), (4, true), (2, false), (1, true)];
        let (bits, signed) = sts[st];
        let ex = qtype(bits, signed, 0.1, 0);
        let et = if out_q { qtype(8, true, 0.05, -3) } else { ElemType::Int(IntType::new(16, true)) };
        let s = shape(&mut r, rank, 9);
        let mut b = B::new();
        let dx = codes(&mut r, &ex, s.iter().product());
        let x = b.input_int(ex, &s, dx);
        let dt = codes(&mut r, &et, 1 << bits);
        let t = if t_const { b.const_int(et.clone(), &[1 << bits], dt) } else { b.input_int(et.clone(), &[1 << bits], dt) };
        let y = b.node(Op::Lookup, &[x, t], attrs(&[]), et);
        b.output(y);
        if t_const {
            check(&b).map_err(TestCaseError::fail)?;
        } else {
            // A run-time table is not lowered (the rewrite only makes constant ones); the
            // error names the node and op.
            let e = qcc::backend::JitModel::new(&b.m).err().map(|e| e.to_string()).unwrap_or_default();
            prop_assert!(e.contains("lookup"), "{}", e);
        }
    }
}

/// A quantized add over every pair of u8 codes: the `int-add` rewrite stays within one
/// code of the float definition, and its compiled form (the fused kernel) equals the
/// interpreter on all 65536 pairs.
#[test]
fn int_add_rewrite_on_every_code_pair() {
    for (sa, za, sb, zb, sy, zy) in [
        (0.029244836f32, 13, 0.10754064f32, 118, 0.06358664f32, 0),
        (0.041691583, 127, 0.019839767, 0, 0.040719517, 0),
        (0.05, 128, 0.05, 128, 0.1, 128),
    ] {
        let text = format!(
            "module m {{\n input %a: q<u8, {sa}:{za}>[256,256]\n input %b: q<u8, {sb}:{zb}>[256,256]\n %da: f32[256,256] = dequantize(%a)\n %db: f32[256,256] = dequantize(%b)\n %s: f32[256,256] = add(%da, %db)\n %y: q<u8, {sy}:{zy}>[256,256] = quantize(%s)\n output %y\n}}"
        );
        let m = qcc_ir::parse_module(&text).unwrap();
        let mut r = m.clone();
        qcc::rewrite::run_groups(&mut r, &["int-add"], &qcc::rewrite::Options::default()).unwrap();
        assert!(
            r.nodes
                .iter()
                .any(|n| n.op == Op::Add && !r.ty(n.result).elem.is_float()),
            "int-add applied:\n{r}"
        );
        let a: Vec<i64> = (0..65536).map(|i| i / 256).collect();
        let b: Vec<i64> = (0..65536).map(|i| i % 256).collect();
        let ins = [
            qcc_ir::interp::Tensor::int(vec![256, 256], a),
            qcc_ir::interp::Tensor::int(vec![256, 256], b),
        ];
        let want = qcc_ir::interp::run(&m, &ins).unwrap();
        let got = qcc_ir::interp::run(&r, &ins).unwrap();
        let (w, g) = (want[0].as_int().unwrap(), got[0].as_int().unwrap());
        let worst = w.iter().zip(g).map(|(x, y)| (x - y).abs()).max().unwrap();
        let differ = w.iter().zip(g).filter(|(x, y)| x != y).count();
        assert!(worst <= 1, "{worst} codes apart");
        eprintln!("int-add ({sa}, {sb} -> {sy}): {differ} of 65536 pairs one code apart");
        // Compiled: one fused kernel, equal to the interpreter on the rewritten module.
        let jit = qcc::backend::JitModel::new(&r).unwrap();
        assert_eq!(jit.report().layers.len(), 1);
        // The host's widest form: zmm with AVX-512, ymm with AVX2 (`addzmm.rs`), else
        // Cranelift's f64x2 loop; the report names it and its tier.
        let layer = &jit.report().layers[0];
        let host_tier = qcc::backend::Tier::host();
        let (width, tier) = if !cfg!(target_arch = "x86_64") || host_tier.level < 3 {
            ("f64x2", None)
        } else if host_tier.level >= 4 {
            ("zmm", Some("x86-64-v4"))
        } else {
            ("ymm", Some("x86-64-v3"))
        };
        assert!(
            layer.kernel.contains(&format!("requantize.{width}")),
            "the vectorised kernel: {}",
            layer.kernel
        );
        assert_eq!(layer.tier.as_deref(), tier, "{}", layer.kernel);
        let outs = jit.run(&ins).unwrap();
        assert_eq!(outs[0].as_int().unwrap(), g);
        // The ymm form on x86-64-v3 and the 128-bit f64x2 loop on x86-64-v2 here, where
        // the host runs them.
        if host_tier.avx2() && cfg!(target_arch = "x86_64") {
            let host = target_lexicon::Triple::host().to_string();
            for (cpu, width) in [("x86-64-v3", "ymm"), ("x86-64-v2", "f64x2")] {
                let t = qcc::backend::Target::new(&host, cpu).unwrap();
                let jit = qcc::backend::JitModel::with_target(&r, &t).unwrap();
                let kernel = &jit.report().layers[0].kernel;
                assert!(
                    kernel.contains(&format!("requantize.{width}")),
                    "{cpu}: {kernel}"
                );
                assert_eq!(jit.run(&ins).unwrap()[0].as_int().unwrap(), g, "{cpu}");
            }
        }
    }
}

/// A `conv2d_int`/`matmul_int` whose raw i32 result feeds straight into the operand
/// requantize of a fused integer add: the requantize belongs to the add's kernel, so the
/// product must not fuse it as well (both did once, and the add read a value no step
/// wrote: `NAME_run` crashed). JIT equals the interpreter.
#[test]
fn int_product_feeding_a_fused_add() {
    let convs = [
        (
            "[1,3,4,4]",
            "[1,2,4,4]",
            "const @w: q<i8, axis=0, [0.1:0, 0.3:0]>[2,3,3,3] = [1, -1, 1, 1, -1, -1, 1, 1, 1, -1, -1, -1, 1, -1, 1, 1, 1, -1, -1, 1, 1, -1, 1, -1, 1, 1, -1, 1, -1, -1, 1, 1, 1, -1, -1, 1, 1, 1, -1, -1, 1, 1, -1, 1, -1, 1, -1, 1, 1, -1, -1, 1, 1, 1]",
            "conv2d_int(%x, @w) {pads = [1, 1, 1, 1]}",
        ),
        (
            "[3,4]",
            "[3,2]",
            "const @w: q<i8, 0.5:0>[4,2] = [1, 2, 3, 4, -5, 6, 7, -8]",
            "matmul_int(%x, @w)",
        ),
    ];
    for (xs, ys, w, prod) in convs {
        let text = format!(
            "module m {{\n input %x: q<u8, 0.1:3>{xs}\n input %y: q<u8, 0.2:7>{ys}\n {w}\n %acc: i32{ys} = {prod}\n %ra: i32{ys} = requantize(%acc) {{multiplier = [3], shift = [1]}}\n %rb: i32{ys} = requantize(%y) {{multiplier = [1], shift = [-4]}}\n %s: i32{ys} = add(%ra, %rb)\n %z: q<u8, 0.05:9>{ys} = requantize(%s) {{multiplier = [1518500250], shift = [35]}}\n output %z\n}}"
        );
        let m = qcc_ir::parse_module(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let mut r = Rng(7);
        let ins: Vec<_> = m
            .inputs
            .iter()
            .map(|&v| {
                let ty = m.ty(v);
                qcc_ir::interp::Tensor::int(ty.shape.clone(), codes(&mut r, &ty.elem, ty.numel()))
            })
            .collect();
        let want = qcc_ir::interp::run(&m, &ins).unwrap();
        let jit = qcc::backend::JitModel::new(&m).unwrap();
        let got = jit.run(&ins).unwrap();
        assert_eq!(got[0].as_int(), want[0].as_int(), "{prod}");
        let pool = qcc::backend::ThreadPool::new(2);
        let got = jit.run_threads(&ins, &pool).unwrap();
        assert_eq!(got[0].as_int(), want[0].as_int(), "{prod}, 2 threads");
        // The add's kernel took both operand requantizes; the product wrote raw i32.
        let kernels: Vec<&str> = jit
            .report()
            .layers
            .iter()
            .map(|l| l.kernel.as_str())
            .collect();
        assert_eq!(kernels.len(), 2, "{kernels:?}");
        assert!(kernels[1].starts_with("requantize+"), "{kernels:?}");
    }
}
