//! Differential tests of the bit-serial (2..4-bit) AND-popcount kernels: the JIT must
//! equal the interpreter bit for bit, on random shapes (K not a multiple of 64, strides,
//! pads, dilations, groups incl. depthwise), every chosen bits combination, signed and
//! unsigned activations with nonzero zero points, narrow and unsigned weights with zero
//! or nonzero (per-tensor or per-channel) zero points, with and
//! without bias and a fused requantize; with the baseline ISA (no `popcnt`, where the cost
//! table picks the int8 kernel instead) the same modules must equal the interpreter too.

mod backend_common;

use backend_common::{B, Rng, attrs, cfg, check_baseline, codes, ints, requant_to};
use proptest::prelude::*;
use qcc::backend::costs::{self, Strategy};
use qcc::backend::{JitModel, Target};
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType, ValueId};

/// The cost table gives most of these layers to the u8 x i8 kernels on x86_64 (tested
/// in `backend_diff_maddubs.rs` and `backend_diff_wide.rs`) or to the assembled
/// bit-serial tiles (`backend_diff_bitserial_wide.rs`): these tests keep them out, so
/// that the 128-bit kernel runs on every host.
fn no_maddubs<R>(f: impl FnOnce() -> R) -> R {
    costs::without(
        &[
            Strategy::Maddubs,
            Strategy::DotVnni,
            Strategy::DotAvx2,
            Strategy::DotAvx2Wide,
            Strategy::BitSerialZmm,
            Strategy::BitSerialYmm,
        ],
        f,
    )
}

fn check(b: &B) -> Result<(), String> {
    no_maddubs(|| backend_common::check(b))
}

fn kernel_of(b: &B) -> String {
    no_maddubs(|| backend_common::kernel_of(b))
}

/// (weight bits, activation bits) that take the bit-serial kernel (wbits * abits <= 8).
const COMBOS: [(u8, u8); 5] = [(2, 2), (2, 3), (3, 2), (2, 4), (4, 2)];

fn qt(bits: u8, signed: bool, narrow: bool, params: QuantParams) -> ElemType {
    ElemType::Quant(QuantType {
        storage: IntType::new(bits, signed),
        narrow,
        pow2: false,
        params,
    })
}

/// Activation type: per tensor, zero point any code of the type.
fn act_type(r: &mut Rng, bits: u8, signed: bool) -> ElemType {
    let st = IntType::new(bits, signed);
    let zp = r.i(st.min_code(), st.max_code()) as i32;
    qt(
        bits,
        signed,
        false,
        QuantParams::PerTensor {
            scale: 0.1,
            zero_point: zp,
        },
    )
}

/// Weight type: per tensor or along `axis` (`c` channels), zero points 0 (mostly) or
/// any codes; signed (narrow or not) or, sometimes, unsigned.
fn weight_type(r: &mut Rng, bits: u8, axis: usize, c: usize) -> ElemType {
    let signed = r.i(0, 4) > 0;
    let narrow = signed && r.i(0, 1) == 1;
    let st = IntType::new(bits, signed);
    let nonzero = r.i(0, 2) == 0;
    let zp = |r: &mut Rng| {
        if nonzero {
            r.i(st.min_code() + i64::from(narrow), st.max_code()) as i32
        } else {
            0
        }
    };
    let params = if r.i(0, 1) == 1 {
        QuantParams::PerAxis {
            axis,
            scales: vec![0.02; c],
            zero_points: (0..c).map(|_| zp(r)).collect(),
        }
    } else {
        QuantParams::PerTensor {
            scale: 0.02,
            zero_point: zp(r),
        }
    };
    qt(bits, signed, narrow, params)
}

fn out_q() -> ElemType {
    qt(
        8,
        true,
        false,
        QuantParams::PerTensor {
            scale: 0.05,
            zero_point: -3,
        },
    )
}

/// A requantize after `y` (channels along `axis`, `c` of them) to `out_q()`: 0 none,
/// 1 per tensor, 2 per channel.
fn requant(b: &mut B, r: &mut Rng, y: ValueId, kind: usize, c: usize, axis: i64) -> ValueId {
    requant_to(b, r, y, kind, c, axis, (24, 36), out_q())
}

/// Bias values: small, or anywhere in i32 (the sum wraps).
fn bias(r: &mut Rng, n: usize) -> Vec<i64> {
    if r.i(0, 3) == 0 {
        r.is(n, i32::MIN as i64, i32::MAX as i64)
    } else {
        r.is(n, -3000, 3000)
    }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn conv2d_bitserial(
        seed: u64,
        combo in 0usize..5,
        asigned: bool,
        with_bias: bool,
        requant_kind in 0usize..3,
        grouping in 0usize..4,
    ) {
        let mut r = Rng(seed | 1);
        let (wbits, abits) = COMBOS[combo];
        let n = r.i(1, 2) as usize;
        // 0, 1: one group; 2: two groups; 3: depthwise (with a channel multiplier).
        let (group, cg, mpg) = match grouping {
            2 => (2, r.i(1, 12) as usize, r.i(1, 4) as usize),
            3 => { let c = r.i(1, 9) as usize; (c, 1, r.i(1, 2) as usize) }
            _ => (1, r.i(1, 40) as usize, r.i(1, 6) as usize),
        };
        let c = cg * group;
        let m = mpg * group;
        let (kh, kw) = (r.i(1, 3) as usize, r.i(1, 3) as usize);
        let (sh, sw) = (r.i(1, 2) as usize, r.i(1, 3) as usize);
        let (dh, dw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let pads: Vec<i64> = (0..4).map(|_| r.i(0, 2)).collect();
        let (h, w) = (r.i(1, 10) as usize, r.i(1, 13) as usize);
        let fits = |len: usize, k: usize, d: usize, p0: i64, p1: i64| len as i64 + p0 + p1 >= (d * (k - 1) + 1) as i64;
        prop_assume!(fits(h, kh, dh, pads[0], pads[2]) && fits(w, kw, dw, pads[1], pads[3]));
        let mut b = B::new();
        let xe = act_type(&mut r, abits, asigned);
        let xd = codes(&mut r, &xe, n * c * h * w);
        let x = b.input_int(xe, &[n, c, h, w], xd);
        let we = weight_type(&mut r, wbits, 0, m);
        let wd = codes(&mut r, &we, m * cg * kh * kw);
        let wt = b.const_int(we, &[m, cg, kh, kw], wd);
        let mut ops = vec![x, wt];
        if with_bias { let bd = bias(&mut r, m); ops.push(b.const_int(ElemType::I32, &[m], bd)); }
        let a = attrs(&[
            ("strides", ints(&[sh as i64, sw as i64])), ("pads", ints(&pads)),
            ("dilations", ints(&[dh as i64, dw as i64])), ("group", Attr::Int(group as i64)),
        ]);
        let y = b.node(Op::Conv2dInt, &ops, a, ElemType::I32);
        let y = requant(&mut b, &mut r, y, requant_kind, m, 1);
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
        check_baseline(&b).map_err(TestCaseError::fail)?;
        let kernel = kernel_of(&b);
        prop_assert!(kernel.contains("bitserial"), "{}", kernel);
    }

    /// Group channels 8, 16, 32, 64 (and 128): the channel-packed lowering (tap-major K,
    /// plane transpose + gather, padded taps as the zero point's code), with pixel
    /// counts below 16, multiples of 16 and odd ones.
    #[test]
    fn conv2d_bitserial_chanbits(
        seed: u64,
        combo in 0usize..5,
        asigned: bool,
        with_bias: bool,
        requant_kind in 0usize..3,
        group in 1usize..3,
    ) {
        let mut r = Rng(seed | 1);
        let (wbits, abits) = COMBOS[combo];
        let n = r.i(1, 2) as usize;
        let cg = [8, 16, 32, 64, 128][r.i(0, 4) as usize];
        let cg = if cg == 128 && r.i(0, 2) > 0 { 16 } else { cg };
        let c = cg * group;
        let m = r.i(1, 4) as usize * group;
        let (kh, kw) = (r.i(1, 3) as usize, r.i(1, 3) as usize);
        let (sh, sw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let (dh, dw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let pads: Vec<i64> = (0..4).map(|_| r.i(0, 2)).collect();
        let (h, w) = (r.i(1, 12) as usize, r.i(1, 21) as usize);
        let fits = |len: usize, k: usize, d: usize, p0: i64, p1: i64| len as i64 + p0 + p1 >= (d * (k - 1) + 1) as i64;
        prop_assume!(fits(h, kh, dh, pads[0], pads[2]) && fits(w, kw, dw, pads[1], pads[3]));
        let mut b = B::new();
        let xe = act_type(&mut r, abits, asigned);
        let xd = codes(&mut r, &xe, n * c * h * w);
        let x = b.input_int(xe, &[n, c, h, w], xd);
        let we = weight_type(&mut r, wbits, 0, m);
        let wd = codes(&mut r, &we, m * cg * kh * kw);
        let wt = b.const_int(we, &[m, cg, kh, kw], wd);
        let mut ops = vec![x, wt];
        if with_bias { let bd = bias(&mut r, m); ops.push(b.const_int(ElemType::I32, &[m], bd)); }
        let a = attrs(&[
            ("strides", ints(&[sh as i64, sw as i64])), ("pads", ints(&pads)),
            ("dilations", ints(&[dh as i64, dw as i64])), ("group", Attr::Int(group as i64)),
        ]);
        let y = b.node(Op::Conv2dInt, &ops, a, ElemType::I32);
        let y = requant(&mut b, &mut r, y, requant_kind, m, 1);
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
        check_baseline(&b).map_err(TestCaseError::fail)?;
        let kernel = kernel_of(&b);
        prop_assert!(kernel.contains("chanbits+bitserial"), "{}", kernel);
    }

    #[test]
    fn matmul_bitserial(
        seed: u64,
        combo in 0usize..5,
        asigned: bool,
        with_bias: bool,
        requant_kind in 0usize..3,
        batched: bool,
    ) {
        let mut r = Rng(seed | 1);
        let (wbits, abits) = COMBOS[combo];
        let (m, n) = (r.i(1, 9) as usize, r.i(1, 11) as usize);
        let k = match r.i(0, 3) { 0 => r.i(1, 20), 1 => r.i(60, 70), 2 => r.i(120, 200), _ => 256 } as usize;
        let bs = if batched { vec![2, k, n] } else { vec![k, n] };
        let asz = if batched && r.i(0, 1) == 1 { vec![2, m, k] } else { vec![m, k] };
        let mut b = B::new();
        let xe = act_type(&mut r, abits, asigned);
        let ad = codes(&mut r, &xe, asz.iter().product());
        let x = b.input_int(xe, &asz, ad);
        let we = weight_type(&mut r, wbits, bs.len() - 1, n);
        let bd = codes(&mut r, &we, bs.iter().product());
        let y = b.const_int(we, &bs, bd);
        let mut ops = vec![x, y];
        if with_bias { let d = bias(&mut r, n); ops.push(b.const_int(ElemType::I32, &[n], d)); }
        let z = b.node(Op::MatMulInt, &ops, attrs(&[]), ElemType::I32);
        let axis = if batched { 2 } else { 1 };
        let z = requant(&mut b, &mut r, z, requant_kind, n, axis);
        b.output(z);
        check(&b).map_err(TestCaseError::fail)?;
        check_baseline(&b).map_err(TestCaseError::fail)?;
        let kernel = kernel_of(&b);
        prop_assert!(kernel.contains("bitserial"), "{}", kernel);
    }
}

fn act_zp(bits: u8, signed: bool, zp: i32) -> ElemType {
    qt(
        bits,
        signed,
        false,
        QuantParams::PerTensor {
            scale: 0.1,
            zero_point: zp,
        },
    )
}

/// Which kernel the operand types choose: bit-serial for small products of bits (also
/// with weight zero points), the int8 kernel for wider ones.
#[test]
fn selection() {
    let conv = |xe: ElemType, we: ElemType, pad: i64| {
        let mut r = Rng(3);
        let mut b = B::new();
        let xd = codes(&mut r, &xe, 2 * 5 * 6 * 7);
        let x = b.input_int(xe, &[2, 5, 6, 7], xd);
        let wd = codes(&mut r, &we, 3 * 5 * 9);
        let w = b.const_int(we, &[3, 5, 3, 3], wd);
        let y = b.node(
            Op::Conv2dInt,
            &[x, w],
            attrs(&[("pads", ints(&[pad; 4]))]),
            ElemType::I32,
        );
        b.output(y);
        check(&b).unwrap();
        kernel_of(&b)
    };
    let w = |bits: u8, zp: i32| {
        qt(
            bits,
            true,
            false,
            QuantParams::PerTensor {
                scale: 0.1,
                zero_point: zp,
            },
        )
    };
    assert!(conv(act_zp(2, false, 1), w(2, 0), 1).contains("bitserial"));
    assert!(conv(act_zp(4, true, -8), w(2, 0), 1).contains("x1.wi2a4"));
    assert!(conv(act_zp(2, false, 1), w(4, 0), 1).contains("x1.wi4a2"));
    assert!(conv(act_zp(4, false, 3), w(4, 0), 1).contains("pmaddwd"));
    assert!(conv(act_zp(3, false, 3), w(3, 0), 1).contains("pmaddwd"));
    assert!(conv(act_zp(2, false, 1), w(2, 1), 1).contains("x1.wi2a2.wzp"));
    assert!(conv(act_zp(2, false, 1), w(2, -2), 0).contains("x1.wi2a2.wzp"));
    assert!(conv(act_zp(8, false, 1), w(2, 0), 1).contains("pmaddwd"));
    // Plain integer operands (zero points 0).
    let int = |bits: u8, signed: bool| ElemType::Int(IntType::new(bits, signed));
    assert!(conv(int(3, true), int(2, true), 1).contains("x1.wi2a3"));
    assert!(conv(int(2, false), int(3, false), 1).contains("x1.wu3a2"));
}

/// Extreme activation zero points (the first and last codes) are exact, also at padded
/// taps of a convolution.
#[test]
fn extreme_zero_points() {
    for (signed, zp) in [(false, 0), (false, 3), (true, -2), (true, 1)] {
        let mut r = Rng(9);
        let mut b = B::new();
        let xe = act_zp(2, signed, zp);
        let ad = codes(&mut r, &xe, 5 * 131);
        let x = b.input_int(xe.clone(), &[5, 131], ad);
        let we = qt(
            2,
            true,
            false,
            QuantParams::PerTensor {
                scale: 0.1,
                zero_point: 0,
            },
        );
        let bd = codes(&mut r, &we, 131 * 7);
        let w = b.const_int(we.clone(), &[131, 7], bd);
        let z = b.node(Op::MatMulInt, &[x, w], attrs(&[]), ElemType::I32);
        b.output(z);
        let xd = codes(&mut r, &xe, 30 * 4 * 5);
        let x = b.input_int(xe, &[1, 30, 4, 5], xd);
        let wd = codes(&mut r, &we, 3 * 30 * 9);
        let w = b.const_int(we, &[3, 30, 3, 3], wd);
        let y = b.node(
            Op::Conv2dInt,
            &[x, w],
            attrs(&[("pads", ints(&[2, 1, 0, 2]))]),
            ElemType::I32,
        );
        b.output(y);
        check(&b).unwrap();
        let jit = no_maddubs(|| JitModel::new(&b.m).unwrap());
        for l in &jit.report().layers {
            if l.op != "copy" {
                assert!(l.kernel.contains("bitserial"), "{}", l.kernel);
            }
        }
    }
}

/// The packed weights shrink with the bits: a 2-bit 256x4096 weight matrix is 256 KiB
/// of planes (plus a small correction table), not 1 MiB of bytes.
#[test]
fn weight_bytes_shrink() {
    let (k, n) = (4096usize, 256usize);
    let mut r = Rng(17);
    let mut b = B::new();
    let xe = act_zp(2, false, 1);
    let ad = codes(&mut r, &xe, 4 * k);
    let x = b.input_int(xe, &[4, k], ad);
    let we = qt(
        2,
        true,
        false,
        QuantParams::PerTensor {
            scale: 0.1,
            zero_point: 0,
        },
    );
    let bd = codes(&mut r, &we, k * n);
    let w = b.const_int(we, &[k, n], bd);
    let z = b.node(Op::MatMulInt, &[x, w], attrs(&[]), ElemType::I32);
    b.output(z);
    check(&b).unwrap();
    let jit = no_maddubs(|| JitModel::new(&b.m).unwrap());
    let wb = jit.report().weight_bytes;
    assert!(
        (k * n / 4) as u64 <= wb && wb <= (k * n / 4 + 4 * n + 64) as u64,
        "weight bytes {wb}"
    );
}

/// The bit-serial kernels also generate code for aarch64; running them needs qemu (see
/// tests/aarch64.rs).
#[test]
fn aarch64_code_generates() {
    let mut r = Rng(5);
    let mut b = B::new();
    let xe = act_zp(4, true, -2);
    let xd = codes(&mut r, &xe, 2 * 9 * 5 * 7);
    let x = b.input_int(xe, &[2, 9, 5, 7], xd);
    let we = qt(
        2,
        true,
        false,
        QuantParams::PerTensor {
            scale: 0.1,
            zero_point: 0,
        },
    );
    let wd = codes(&mut r, &we, 4 * 9 * 9);
    let w = b.const_int(we.clone(), &[4, 9, 3, 3], wd);
    let y = b.node(
        Op::Conv2dInt,
        &[x, w],
        attrs(&[("pads", ints(&[1, 0, 2, 1]))]),
        ElemType::I32,
    );
    let ae = act_zp(2, false, 1);
    let ad = codes(&mut r, &ae, 3 * 100);
    let a = b.input_int(ae, &[3, 100], ad);
    let bd = codes(&mut r, &we, 100 * 5);
    let bw = b.const_int(we, &[100, 5], bd);
    let z = b.node(Op::MatMulInt, &[a, bw], attrs(&[]), ElemType::I32);
    b.output(y);
    b.output(z);
    check(&b).unwrap();
    let t = Target::new("aarch64-unknown-linux-gnu", "baseline").unwrap();
    let asm = qcc::backend::emit_asm(&b.m, "t", &t).unwrap();
    assert!(asm.contains("conv2d_int.im2col+bitserial"));
    assert!(asm.contains("matmul_int.bitserial"));
}

/// A float-boundary model around both bit-serial kernels (quantize, conv2d_int and
/// matmul_int with 2-bit weights, the latter with weight zero points, requantize,
/// dequantize), compiled as an aarch64 object,
/// linked with `aarch64-linux-gnu-gcc -static` and run under `qemu-aarch64`, prints what
/// the interpreter computes. Skipped when the tools are missing (a failure with
/// `CI=true`).
#[test]
fn aarch64_object_runs_under_qemu() {
    if !backend_common::have_aarch64_tools() {
        return;
    }
    let mut r = Rng(23);
    let mut b = B::new();
    let rq = |b: &mut B, y: ValueId, shift: i64| {
        let q = b.node(
            Op::Requantize,
            &[y],
            attrs(&[("multiplier", ints(&[1 << 30])), ("shift", ints(&[shift]))]),
            out_q(),
        );
        b.f(Op::Dequantize, &[q], attrs(&[]))
    };
    let w2 = qt(
        2,
        true,
        false,
        QuantParams::PerTensor {
            scale: 0.1,
            zero_point: 0,
        },
    );
    // conv: u2 activations (zero point 1), padded 3x3, K = 9 * 20.
    let xd = r.fs(2 * 20 * 6 * 7, -0.5, 2.5);
    let x = b.input_f32(&[2, 20, 6, 7], xd);
    let xq = b.node(Op::Quantize, &[x], attrs(&[]), act_zp(2, false, 1));
    let wd = codes(&mut r, &w2, 5 * 20 * 9);
    let w = b.const_int(w2.clone(), &[5, 20, 3, 3], wd);
    let bd = r.is(5, -50, 50);
    let bias = b.const_int(ElemType::I32, &[5], bd);
    let y = b.node(
        Op::Conv2dInt,
        &[xq, w, bias],
        attrs(&[("pads", ints(&[1, 0, 2, 1]))]),
        ElemType::I32,
    );
    let y = rq(&mut b, y, 32);
    b.output(y);
    // Channel-packed convs: cg 16 over 42 pixels (an overlapping last block), cg 8 over
    // 12 pixels (the scalar pack), padded, with i2 / u2 activations.
    for (c, h, w, xe) in [
        (16, 6, 7, act_zp(2, true, -1)),
        (8, 3, 4, act_zp(2, false, 2)),
    ] {
        let xd = r.fs(2 * c * h * w, -0.5, 2.5);
        let x = b.input_f32(&[2, c, h, w], xd);
        let xq = b.node(Op::Quantize, &[x], attrs(&[]), xe);
        let wd = codes(&mut r, &w2, 3 * c * 9);
        let w = b.const_int(w2.clone(), &[3, c, 3, 3], wd);
        let y = b.node(
            Op::Conv2dInt,
            &[xq, w],
            attrs(&[("pads", ints(&[1, 1, 0, 2]))]),
            ElemType::I32,
        );
        let y = rq(&mut b, y, 30);
        b.output(y);
    }
    // matmul: i4 activations (zero point -3), K = 150, per-column weight zero points.
    let ad = r.fs(3 * 150, -0.8, 0.8);
    let a = b.input_f32(&[3, 150], ad);
    let aq = b.node(Op::Quantize, &[a], attrs(&[]), act_zp(4, true, -3));
    let w2z = qt(
        2,
        true,
        false,
        QuantParams::PerAxis {
            axis: 1,
            scales: vec![0.1; 6],
            zero_points: vec![-1, 0, 1, -2, 1, 0],
        },
    );
    let wd = codes(&mut r, &w2z, 150 * 6);
    let w = b.const_int(w2z, &[150, 6], wd);
    let z = b.node(Op::MatMulInt, &[aq, w], attrs(&[]), ElemType::I32);
    let z = rq(&mut b, z, 31);
    b.output(z);
    check(&b).unwrap();
    let want = qcc_ir::interp::run(&b.m, &b.inputs).unwrap();
    let want: Vec<f32> = want
        .iter()
        .flat_map(|t| t.as_f32().unwrap().to_vec())
        .collect();

    let (report, got) = backend_common::run_aarch64(&b, "bitserial");
    for l in &report.layers {
        if l.op.starts_with("conv2d_int") || l.op.starts_with("matmul_int") {
            assert!(l.kernel.contains("bitserial"), "{}", l.kernel);
        }
    }
    assert_eq!(got, want, "aarch64 differs from the interpreter");
}
