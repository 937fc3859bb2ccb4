//! Differential tests of the 1-bit (b1 x b1) XNOR-popcount kernels: the JIT must equal
//! the interpreter bit for bit, on random shapes (K not a multiple of 64, strides, pads,
//! dilations, groups), with and without bias and a fused requantize.

mod backend_common;

use backend_common::{B, Rng, attrs, cfg, check_baseline, ints};
use qcc::backend::costs::{self, Strategy};

/// The u8 x i8 wide tiles take bipolar layers where the cost table prefers them
/// (`backend_diff_wide.rs` tests that): these tests keep them out to test XNOR.
const WIDE: [Strategy; 3] = [Strategy::DotVnni, Strategy::DotAvx2, Strategy::DotAvx2Wide];

fn check(b: &B) -> Result<(), String> {
    costs::without(&WIDE, || backend_common::check(b))
}

fn kernel_of(b: &B) -> String {
    costs::without(&WIDE, || backend_common::kernel_of(b))
}
use proptest::prelude::*;
use qcc::backend::Target;
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType};

fn bits(r: &mut Rng, n: usize) -> Vec<i64> {
    (0..n)
        .map(|_| if r.next() & 1 == 1 { -1 } else { 1 })
        .collect()
}

fn out_q() -> ElemType {
    ElemType::Quant(QuantType {
        storage: IntType::new(8, true),
        narrow: false,
        pow2: false,
        params: QuantParams::PerTensor {
            scale: 0.05,
            zero_point: -2,
        },
    })
}

/// A requantize after `y` (channels along `axis`, `c` of them): 0 none, 1 per tensor,
/// 2 per channel; or a threshold: 3 to b1, 4 to a few levels.
fn requant(
    b: &mut B,
    r: &mut Rng,
    y: qcc_ir::ValueId,
    kind: usize,
    c: usize,
    axis: i64,
) -> qcc_ir::ValueId {
    if kind == 0 {
        return y;
    }
    if kind >= 3 {
        // A threshold (fused into the epilogue): b1 (kind 3) or 1..4 levels of i8, per
        // channel or shared, thresholds also at the ends of the i32 range.
        let k = if kind == 3 { 1 } else { r.i(1, 4) as usize };
        let rows = if r.i(0, 1) == 0 { 1 } else { c };
        let mut t = Vec::new();
        for _ in 0..rows {
            let mut row: Vec<i64> = (0..k)
                .map(|_| match r.i(0, 9) {
                    0 => i32::MIN as i64,
                    1 => i32::MAX as i64,
                    _ => r.i(-150, 150),
                })
                .collect();
            row.sort();
            t.extend(row);
        }
        let th = b.const_int(ElemType::Int(IntType::new(32, true)), &[rows, k], t);
        let (out, offset) = if kind == 3 {
            (ElemType::Bipolar, 0)
        } else {
            (ElemType::Int(IntType::new(8, true)), r.i(-5, 3))
        };
        return b.node(
            Op::Threshold,
            &[y, th],
            attrs(&[("axis", Attr::Int(axis)), ("offset", Attr::Int(offset))]),
            out,
        );
    }
    let cnt = if kind == 2 { c } else { 1 };
    let mult: Vec<i64> = (0..cnt).map(|_| r.i(1 << 20, 1 << 30)).collect();
    let shift: Vec<i64> = (0..cnt).map(|_| r.i(24, 32)).collect();
    b.node(
        Op::Requantize,
        &[y],
        attrs(&[
            ("multiplier", ints(&mult)),
            ("shift", ints(&shift)),
            ("axis", Attr::Int(axis)),
        ]),
        out_q(),
    )
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn conv2d_b1(seed: u64, with_bias: bool, requant_kind in 0usize..5, group in 1usize..3) {
        let mut r = Rng(seed | 1);
        let n = r.i(1, 2) as usize;
        let cg = r.i(1, 12) as usize;
        let c = cg * group;
        let m = r.i(1, 5) as usize * group;
        let (kh, kw) = (r.i(1, 3) as usize, r.i(1, 3) as usize);
        let (sh, sw) = (r.i(1, 2) as usize, r.i(1, 3) as usize);
        let (dh, dw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let pads: Vec<i64> = (0..4).map(|_| r.i(0, 2)).collect();
        let (h, w) = (r.i(1, 10) as usize, r.i(1, 13) as usize);
        let fits = |len: usize, k: usize, d: usize, p0: i64, p1: i64| len as i64 + p0 + p1 >= (d * (k - 1) + 1) as i64;
        prop_assume!(fits(h, kh, dh, pads[0], pads[2]) && fits(w, kw, dw, pads[1], pads[3]));
        let mut b = B::new();
        let xd = bits(&mut r, n * c * h * w);
        let x = b.input_int(ElemType::Bipolar, &[n, c, h, w], xd);
        let wd = bits(&mut r, m * cg * kh * kw);
        let wt = b.const_int(ElemType::Bipolar, &[m, cg, kh, kw], wd);
        let mut ops = vec![x, wt];
        if with_bias { let bd = r.is(m, -300, 300); ops.push(b.const_int(ElemType::I32, &[m], bd)); }
        let a = attrs(&[
            ("strides", ints(&[sh as i64, sw as i64])), ("pads", ints(&pads)),
            ("dilations", ints(&[dh as i64, dw as i64])), ("group", Attr::Int(group as i64)),
        ]);
        let y = b.node(Op::Conv2dInt, &ops, a, ElemType::I32);
        let y = requant(&mut b, &mut r, y, requant_kind, m, 1);
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
        // The cost table's own choice: the wide u8 x i8 tiles where the host has them.
        backend_common::check(&b).map_err(TestCaseError::fail)?;
        check_baseline(&b).map_err(TestCaseError::fail)?;
        prop_assert!(kernel_of(&b).contains("xnor-popcnt"));
    }

    /// Group channels 8, 16, 32, 64 (and 128): the channel-packed lowering
    /// (tap-major K, bit transpose + gather), with pixel counts below 16, multiples of
    /// 16 and odd ones (the overlapping last block).
    #[test]
    fn conv2d_b1_chanbits(seed: u64, with_bias: bool, requant_kind in 0usize..5, group in 1usize..3) {
        let mut r = Rng(seed | 1);
        let n = r.i(1, 2) as usize;
        let cg = [8, 16, 32, 64, 128][r.i(0, 4) as usize];
        let cg = if cg == 128 && r.i(0, 2) > 0 { 16 } else { cg };
        let c = cg * group;
        let m = r.i(1, 5) as usize * group;
        let (kh, kw) = (r.i(1, 3) as usize, r.i(1, 3) as usize);
        let (sh, sw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let (dh, dw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let pads: Vec<i64> = (0..4).map(|_| r.i(0, 2)).collect();
        let (h, w) = (r.i(1, 12) as usize, r.i(1, 21) as usize);
        let fits = |len: usize, k: usize, d: usize, p0: i64, p1: i64| len as i64 + p0 + p1 >= (d * (k - 1) + 1) as i64;
        prop_assume!(fits(h, kh, dh, pads[0], pads[2]) && fits(w, kw, dw, pads[1], pads[3]));
        let mut b = B::new();
        let xd = bits(&mut r, n * c * h * w);
        let x = b.input_int(ElemType::Bipolar, &[n, c, h, w], xd);
        let wd = bits(&mut r, m * cg * kh * kw);
        let wt = b.const_int(ElemType::Bipolar, &[m, cg, kh, kw], wd);
        let mut ops = vec![x, wt];
        if with_bias { let bd = r.is(m, -300, 300); ops.push(b.const_int(ElemType::I32, &[m], bd)); }
        let a = attrs(&[
            ("strides", ints(&[sh as i64, sw as i64])), ("pads", ints(&pads)),
            ("dilations", ints(&[dh as i64, dw as i64])), ("group", Attr::Int(group as i64)),
        ]);
        let y = b.node(Op::Conv2dInt, &ops, a, ElemType::I32);
        let y = requant(&mut b, &mut r, y, requant_kind, m, 1);
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
        // The cost table's own choice: the wide u8 x i8 tiles where the host has them.
        backend_common::check(&b).map_err(TestCaseError::fail)?;
        check_baseline(&b).map_err(TestCaseError::fail)?;
        let kernel = kernel_of(&b);
        prop_assert!(kernel.contains("chanbits+xnor-popcnt"), "{}", kernel);
        prop_assert_eq!(kernel.ends_with("+threshold"), requant_kind >= 3, "{}", kernel);
    }

    #[test]
    fn matmul_b1(seed: u64, with_bias: bool, requant_kind in 0usize..5, batched: bool) {
        let mut r = Rng(seed | 1);
        let (m, n) = (r.i(1, 9) as usize, r.i(1, 11) as usize);
        let k = match r.i(0, 3) { 0 => r.i(1, 20), 1 => r.i(60, 70), 2 => r.i(120, 200), _ => 256 } as usize;
        let bs = if batched { vec![2, k, n] } else { vec![k, n] };
        let asz = if batched { vec![2, m, k] } else { vec![m, k] };
        let mut b = B::new();
        let ad = bits(&mut r, asz.iter().product());
        let x = b.input_int(ElemType::Bipolar, &asz, ad);
        let bd = bits(&mut r, bs.iter().product());
        let y = b.const_int(ElemType::Bipolar, &bs, bd);
        let mut ops = vec![x, y];
        if with_bias { let d = r.is(n, -300, 300); ops.push(b.const_int(ElemType::I32, &[n], d)); }
        let z = b.node(Op::MatMulInt, &ops, attrs(&[]), ElemType::I32);
        let axis = if batched { 2 } else { 1 };
        let z = requant(&mut b, &mut r, z, requant_kind, n, axis);
        b.output(z);
        check(&b).map_err(TestCaseError::fail)?;
        // The cost table's own choice: the wide u8 x i8 tiles where the host has them.
        backend_common::check(&b).map_err(TestCaseError::fail)?;
        check_baseline(&b).map_err(TestCaseError::fail)?;
        prop_assert!(kernel_of(&b).contains("xnor-popcnt"));
    }
}

/// A padded 3x3 binary convolution takes the masked kernel; an unpadded one does not.
#[test]
fn masked_only_with_padding() {
    for (pad, masked) in [(1, true), (0, false)] {
        let mut r = Rng(11);
        let mut b = B::new();
        let xd = bits(&mut r, 70 * 36);
        let x = b.input_int(ElemType::Bipolar, &[1, 70, 6, 6], xd);
        let wd = bits(&mut r, 3 * 70 * 9);
        let w = b.const_int(ElemType::Bipolar, &[3, 70, 3, 3], wd);
        let y = b.node(
            Op::Conv2dInt,
            &[x, w],
            attrs(&[("pads", ints(&[pad; 4]))]),
            ElemType::I32,
        );
        b.output(y);
        check(&b).unwrap();
        assert_eq!(kernel_of(&b).contains(".masked"), masked);
    }
}

/// The 1-bit kernels also generate code for aarch64 (scalar `popcnt` and `vhigh_bits`
/// have lowerings there); running them needs qemu (see tests/aarch64.rs).
#[test]
fn aarch64_code_generates() {
    let mut r = Rng(5);
    let mut b = B::new();
    let xd = bits(&mut r, 2 * 9 * 5 * 7);
    let x = b.input_int(ElemType::Bipolar, &[2, 9, 5, 7], xd);
    let wd = bits(&mut r, 4 * 9 * 9);
    let w = b.const_int(ElemType::Bipolar, &[4, 9, 3, 3], wd);
    let y = b.node(
        Op::Conv2dInt,
        &[x, w],
        attrs(&[("pads", ints(&[1, 0, 2, 1]))]),
        ElemType::I32,
    );
    let ad = bits(&mut r, 3 * 100);
    let a = b.input_int(ElemType::Bipolar, &[3, 100], ad);
    let bd = bits(&mut r, 100 * 5);
    let bw = b.const_int(ElemType::Bipolar, &[100, 5], bd);
    let z = b.node(Op::MatMulInt, &[a, bw], attrs(&[]), ElemType::I32);
    b.output(y);
    b.output(z);
    check(&b).unwrap();
    let t = Target::new("aarch64-unknown-linux-gnu", "baseline").unwrap();
    let asm = qcc::backend::emit_asm(&b.m, "t", &t).unwrap();
    assert!(asm.contains("xnor-popcnt2x2.masked"));
    assert!(asm.contains("matmul_int.xnor-popcnt2x2"));
}

/// Which 1-bit convolutions take the channel-packed lowering: group channels whose bytes
/// never straddle a K word.
#[test]
fn chanbits_selection() {
    for (cg, group, chan) in [
        (8, 1, true),
        (16, 2, true),
        (32, 1, true),
        (64, 1, true),
        (128, 1, true),
        (24, 1, false),
        (40, 1, false),
        (12, 1, false),
        (4, 4, false),
    ] {
        let mut r = Rng(13);
        let mut b = B::new();
        let c = cg * group;
        let xd = bits(&mut r, c * 5 * 6);
        let x = b.input_int(ElemType::Bipolar, &[1, c, 5, 6], xd);
        let wd = bits(&mut r, 2 * group * cg * 9);
        let w = b.const_int(ElemType::Bipolar, &[2 * group, cg, 3, 3], wd);
        let y = b.node(
            Op::Conv2dInt,
            &[x, w],
            attrs(&[("pads", ints(&[1; 4])), ("group", Attr::Int(group as i64))]),
            ElemType::I32,
        );
        b.output(y);
        check(&b).unwrap();
        let k = kernel_of(&b);
        assert_eq!(k.contains("chanbits"), chan, "cg {cg}: {k}");
    }
}

/// The channel-packed 1-bit convolutions (cg 16 with an odd pixel count, cg 8 with fewer
/// than 16 pixels, cg 64 strided) compiled as an aarch64 object, linked with
/// `aarch64-linux-gnu-gcc -static` and run under `qemu-aarch64`, print what the
/// interpreter computes. Skipped when the tools are missing.
#[test]
fn aarch64_chanbits_runs_under_qemu() {
    if !backend_common::have_aarch64_tools() {
        return;
    }
    let mut r = Rng(29);
    let mut b = B::new();
    for (c, h, w, s, pad) in [(16, 7, 9, 1, 1), (8, 3, 4, 1, 1), (64, 6, 6, 2, 0)] {
        let xd = r.fs(2 * c * h * w, -1.0, 1.0);
        let x = b.input_f32(&[2, c, h, w], xd);
        let xb = b.node(Op::Binarize, &[x], attrs(&[]), ElemType::Bipolar);
        let wd = bits(&mut r, 3 * c * 9);
        let wt = b.const_int(ElemType::Bipolar, &[3, c, 3, 3], wd);
        let y = b.node(
            Op::Conv2dInt,
            &[xb, wt],
            attrs(&[("pads", ints(&[pad; 4])), ("strides", ints(&[s, s]))]),
            ElemType::I32,
        );
        let y = requant(&mut b, &mut r, y, 2, 3, 1);
        let y = b.f(Op::Dequantize, &[y], attrs(&[]));
        b.output(y);
    }
    check(&b).unwrap();
    let want = qcc_ir::interp::run(&b.m, &b.inputs).unwrap();
    let want: Vec<f32> = want
        .iter()
        .flat_map(|t| t.as_f32().unwrap().to_vec())
        .collect();
    let (report, got) = backend_common::run_aarch64(&b, "chanbits-b1");
    let convs = report
        .layers
        .iter()
        .filter(|l| l.op.starts_with("conv2d_int"));
    for l in convs {
        assert!(l.kernel.contains("chanbits+xnor"), "{}", l.kernel);
    }
    assert_eq!(got, want, "aarch64 differs from the interpreter");
}
