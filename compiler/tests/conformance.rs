//! The conformance suite of the integer kernels: every kernel family (int8 `pmaddwd`,
//! int8 over bit-packed weights, bit-serial, XNOR-popcount, the fused requantize in
//! every rounding mode) on random shapes and data, compiled for every target variant —
//! x86_64 `baseline` (SSE2, no `popcnt`), `ssse3`, `nehalem` (SSE4.2 + `popcnt`),
//! `sandybridge` (AVX), `haswell` (AVX2, FMA, BMI), the tiers with assembled wide tiles
//! that this CPU has (`x86-64-v3`, `x86-64-v4+vnni`, and `x86-64-v4+vpopcntdq`, where
//! the bit-serial and XNOR zmm tiles take the layers that VNNI would) and this machine
//! through the JIT, and aarch64 as a linked object under qemu — must give the
//! interpreter's results bit for bit. Models take and return f32 (the object ABI):
//! quantize (or binarize), the integer layer, requantize, dequantize; every step of
//! that is exact.
//!
//! `QCC_CONFORMANCE_SEEDS` sets the number of random instances per case (default 2).

mod backend_common;

use backend_common::{B, Rng, attrs, have_aarch64_tools, ints, run_aarch64};
use qcc::backend::{JitModel, Target};
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType, Rounding, interp};

fn qt(bits: u8, signed: bool, scale: f32, zero_point: i32) -> ElemType {
    ElemType::Quant(QuantType {
        storage: IntType::new(bits, signed),
        narrow: false,
        pow2: false,
        params: QuantParams::PerTensor { scale, zero_point },
    })
}

/// Activation and weight widths of a layer; 1 means bipolar (b1) on both sides.
#[derive(Clone, Copy, Debug)]
struct Bits {
    a: u8,
    a_signed: bool,
    w: u8,
}

/// The quantized (or binarized) f32 input `x` as the layer's activation type.
fn activation(b: &mut B, r: &mut Rng, x: qcc_ir::ValueId, bits: Bits) -> qcc_ir::ValueId {
    if bits.a == 1 {
        return b.node(Op::Binarize, &[x], attrs(&[]), ElemType::Bipolar);
    }
    let (lo, hi) = if bits.a_signed {
        (-(1i64 << (bits.a - 1)), (1i64 << (bits.a - 1)) - 1)
    } else {
        (0, (1i64 << bits.a) - 1)
    };
    let zp = r.i(lo, hi.min(lo + 3)) as i32;
    // Inputs lie in [-1, 2]: a scale spreading them over the code range.
    let scale = 3.0 / (hi - lo) as f32;
    b.node(
        Op::Quantize,
        &[x],
        attrs(&[]),
        qt(bits.a, bits.a_signed, scale, zp),
    )
}

/// Constant weights of `bits.w` bits (b1 for 1), with a weight zero point of 0.
fn weights(b: &mut B, r: &mut Rng, shape: &[usize], bits: Bits) -> qcc_ir::ValueId {
    let n = shape.iter().product();
    if bits.w == 1 {
        let d = (0..n)
            .map(|_| if r.next() & 1 == 1 { -1 } else { 1 })
            .collect();
        return b.const_int(ElemType::Bipolar, shape, d);
    }
    let hi = (1i64 << (bits.w - 1)) - 1;
    let d = r.is(n, -hi - 1, hi);
    b.const_int(qt(bits.w, true, 0.05, 0), shape, d)
}

/// requantize (random multipliers and rounding, per channel along `axis` or per
/// tensor) to u8, then dequantize to f32.
fn finish(b: &mut B, r: &mut Rng, acc: qcc_ir::ValueId, chans: usize, axis: i64) {
    let cnt = if r.next() & 1 == 1 { chans } else { 1 };
    let mult: Vec<i64> = (0..cnt).map(|_| r.i(1 << 24, (1 << 31) - 1)).collect();
    let shift: Vec<i64> = (0..cnt).map(|_| r.i(28, 36)).collect();
    let rnd = Rounding::ALL[r.i(0, Rounding::ALL.len() as i64 - 1) as usize];
    let y = b.node(
        Op::Requantize,
        &[acc],
        attrs(&[
            ("multiplier", ints(&mult)),
            ("shift", ints(&shift)),
            ("axis", Attr::Int(axis)),
            ("rounding", Attr::Enum(rnd.name().into())),
        ]),
        qt(8, false, 0.1, r.i(0, 40) as i32),
    );
    let z = b.f(Op::Dequantize, &[y], attrs(&[]));
    b.output(z);
}

/// A conv layer: `c` -> `m` channels, `k`x`k`, stride `s`, padding `k/2`, `group`s.
fn conv(r: &mut Rng, bits: Bits, c: usize, m: usize, k: usize, s: usize, group: usize) -> B {
    let (h, w) = (r.i(k as i64, 11) as usize, r.i(k as i64, 13) as usize);
    let mut b = B::new();
    let x = b.input_f32(&[1, c, h, w], r.fs(c * h * w, -1.0, 2.0));
    let xq = activation(&mut b, r, x, bits);
    let wt = weights(&mut b, r, &[m, c / group, k, k], bits);
    let mut ops = vec![xq, wt];
    if r.next() & 1 == 1 {
        let bd = r.is(m, -200, 200);
        ops.push(b.const_int(ElemType::I32, &[m], bd));
    }
    let p = (k / 2) as i64;
    let acc = b.node(
        Op::Conv2dInt,
        &ops,
        attrs(&[
            ("strides", ints(&[s as i64, s as i64])),
            ("pads", ints(&[p, p, p, p])),
            ("group", Attr::Int(group as i64)),
        ]),
        ElemType::I32,
    );
    finish(&mut b, r, acc, m, 1);
    b
}

/// A matmul layer `[m, k] x [k, n]` with constant B.
fn matmul(r: &mut Rng, bits: Bits, m: usize, k: usize, n: usize) -> B {
    let mut b = B::new();
    let x = b.input_f32(&[m, k], r.fs(m * k, -1.0, 2.0));
    let xq = activation(&mut b, r, x, bits);
    let wt = weights(&mut b, r, &[k, n], bits);
    let acc = b.node(Op::MatMulInt, &[xq, wt], attrs(&[]), ElemType::I32);
    finish(&mut b, r, acc, n, 1);
    b
}

struct Case {
    name: &'static str,
    build: fn(&mut Rng) -> B,
    /// On this machine (JIT, native features) the integer layer must run one of these
    /// kernels (substrings of the kernel name).
    native: &'static [&'static str],
}

const U8: Bits = Bits {
    a: 8,
    a_signed: false,
    w: 8,
};
const B1: Bits = Bits {
    a: 1,
    a_signed: false,
    w: 1,
};

fn lowbit(a: u8, w: u8, a_signed: bool) -> Bits {
    Bits { a, a_signed, w }
}

const CASES: &[Case] = &[
    Case {
        name: "int8 conv 3x3",
        build: |r| conv(r, U8, 8, 12, 3, 1, 1),
        native: &["pmaddwd", "pmaddubsw"],
    },
    Case {
        name: "int8 conv 3x3 stride 2, i8 activations",
        build: |r| conv(r, lowbit(8, 8, true), 16, 8, 3, 2, 1),
        native: &["pmaddwd", "pmaddubsw"],
    },
    Case {
        name: "int8 depthwise conv",
        build: |r| conv(r, U8, 6, 6, 3, 1, 6),
        native: &["pmaddwd", "pmaddubsw"],
    },
    Case {
        name: "int8 matmul",
        build: |r| matmul(r, U8, 5, 70, 19),
        native: &["pmaddwd", "pmaddubsw"],
    },
    Case {
        name: "u8 x i7 conv",
        build: |r| conv(r, lowbit(8, 7, false), 16, 8, 3, 1, 1),
        native: &["pmaddwd", "pmaddubsw"],
    },
    Case {
        name: "u4 x i4 conv",
        build: |r| conv(r, lowbit(4, 4, false), 16, 16, 3, 1, 1),
        native: &["w4packed", "pmaddubsw", "bitserial"],
    },
    Case {
        name: "u3 x i3 conv",
        build: |r| conv(r, lowbit(3, 3, false), 8, 8, 3, 1, 1),
        native: &["w3packed", "pmaddubsw", "bitserial"],
    },
    Case {
        name: "u2 x i2 conv",
        build: |r| conv(r, lowbit(2, 2, false), 16, 16, 3, 1, 1),
        native: &["bitserial"],
    },
    Case {
        name: "i2 x i2 conv stride 2",
        build: |r| conv(r, lowbit(2, 2, true), 5, 8, 3, 2, 1),
        native: &["bitserial"],
    },
    Case {
        name: "u3 x i2 matmul",
        build: |r| matmul(r, lowbit(3, 2, false), 3, 200, 9),
        native: &["bitserial"],
    },
    Case {
        name: "u4 x i2 matmul",
        build: |r| matmul(r, lowbit(4, 2, false), 2, 300, 5),
        native: &["bitserial"],
    },
    Case {
        name: "u2 x i4 conv 1x1",
        build: |r| conv(r, lowbit(2, 4, false), 70, 6, 1, 1, 1),
        native: &["bitserial"],
    },
    Case {
        name: "b1 conv 3x3, 16 channels",
        build: |r| conv(r, B1, 16, 8, 3, 1, 1),
        native: &["xnor"],
    },
    Case {
        name: "b1 conv 3x3 stride 2, 5 channels",
        build: |r| conv(r, B1, 5, 6, 3, 2, 1),
        native: &["xnor"],
    },
    Case {
        name: "b1 grouped conv",
        build: |r| conv(r, B1, 32, 8, 3, 1, 2),
        native: &["xnor"],
    },
    Case {
        name: "b1 matmul",
        build: |r| matmul(r, B1, 4, 150, 7),
        native: &["xnor"],
    },
];

/// The x86_64 CPU presets the JIT compiles every case for (besides `native`).
const X86_CPUS: &[&str] = &["baseline", "ssse3", "nehalem", "sandybridge", "haswell"];

/// The x86-64 tiers with assembled wide tiles, run where the host has them.
const X86_TIERS: &[&str] = &["x86-64-v3", "x86-64-v4+vnni", "x86-64-v4+vpopcntdq"];

/// [`X86_CPUS`] and the tiers of [`X86_TIERS`] this CPU has (printed: run or skipped).
fn x86_cpus() -> Vec<&'static str> {
    let host = target_lexicon::Triple::host().to_string();
    let mut cpus = X86_CPUS.to_vec();
    for &tier in X86_TIERS {
        let t = Target::new(&host, tier).unwrap().tier().unwrap().unwrap();
        if t.within(qcc::backend::Tier::host()) {
            cpus.push(tier);
        } else {
            eprintln!("tier {tier}: skipped (this CPU does not have it)");
        }
    }
    cpus
}

fn seeds() -> u64 {
    std::env::var("QCC_CONFORMANCE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn outputs(t: &[qcc_ir::interp::Tensor]) -> Vec<f32> {
    t.iter()
        .flat_map(|t| t.as_f32().unwrap().to_vec())
        .collect()
}

/// The integer layer's kernel (the one named conv2d_int / matmul_int).
fn layer_kernel(report: &qcc::backend::Report) -> String {
    report
        .layers
        .iter()
        .find(|l| l.op.starts_with("conv2d_int") || l.op.starts_with("matmul_int"))
        .map(|l| l.kernel.clone())
        .unwrap_or_default()
}

#[test]
fn x86_64_variants() {
    x86_64_cases(true);
    // Again without the pmaddubsw kernel: the bit-serial and pmaddwd kernels it takes
    // over on this machine's rows stay covered.
    qcc::backend::costs::without(&[qcc::backend::costs::Strategy::Maddubs], || {
        x86_64_cases(false)
    });
}

/// `maddubs`: the pmaddubsw kernel may take the low-bit layers (it replaces the
/// bit-serial kernel where the cost table says so).
fn x86_64_cases(maddubs: bool) {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipped: the host is not x86_64");
        return;
    }
    let host = target_lexicon::Triple::host().to_string();
    let mut seen: Vec<String> = Vec::new();
    for case in CASES {
        for seed in 0..seeds() {
            let mut r = Rng(0x9e37_79b9 ^ (seed * 1000 + case.name.len() as u64) | 1);
            let b = (case.build)(&mut r);
            let want = outputs(&interp::run(&b.m, &b.inputs).unwrap());
            let native = JitModel::new(&b.m).unwrap();
            let k = layer_kernel(native.report());
            let low_bit = case.native.contains(&"bitserial");
            assert!(
                case.native.iter().any(|n| k.contains(n))
                    || (k.contains("pmaddwd") && case.native.iter().any(|n| n.contains("packed")))
                    || (maddubs && low_bit && k.contains("pmaddubsw"))
                    || ((k.contains("vpdpbusd") || k.contains("vpmaddubsw.ymm"))
                        && case.native.iter().any(|n| {
                            ["pmaddwd", "pmaddubsw", "bitserial", "packed", "xnor"]
                                .iter()
                                .any(|f| n.contains(f))
                        })),
                "{}: native kernel {k}, expected one of {:?}",
                case.name,
                case.native
            );
            assert_eq!(
                outputs(&native.run(&b.inputs).unwrap()),
                want,
                "{} (seed {seed}) on native [{k}]",
                case.name
            );
            seen.push(k);
            for cpu in x86_cpus() {
                let t = Target::new(&host, cpu).unwrap();
                let jit = JitModel::with_target(&b.m, &t).unwrap();
                let k = layer_kernel(jit.report());
                assert_eq!(
                    outputs(&jit.run(&b.inputs).unwrap()),
                    want,
                    "{} (seed {seed}) on {cpu} [{k}]",
                    case.name
                );
                seen.push(k);
            }
        }
    }
    seen.sort();
    seen.dedup();
    eprintln!("x86_64 kernels exercised:\n  {}", seen.join("\n  "));
}

#[test]
fn aarch64_objects_under_qemu() {
    if !have_aarch64_tools() {
        return;
    }
    let mut seen: Vec<String> = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let mut r = Rng(0x5eed ^ (i as u64 * 7919) | 1);
        let b = (case.build)(&mut r);
        let want = outputs(&interp::run(&b.m, &b.inputs).unwrap());
        let (report, got) = run_aarch64(&b, &format!("conf{i}"));
        let k = layer_kernel(&report);
        assert_eq!(got, want, "{} on aarch64 [{k}]", case.name);
        seen.push(k);
    }
    seen.sort();
    seen.dedup();
    eprintln!("aarch64 kernels exercised:\n  {}", seen.join("\n  "));
}
