//! The threaded entry `NAME_run_ctx` (issue 15): layers split into tasks give exactly
//! what `NAME_run` gives (integer and float paths alike: the bands keep each float
//! layer's algorithm), for every kernel family, on random shapes, with pools of 1, 2, 3
//! and 7 threads (task counts that do not divide evenly); and the context's argument
//! checks.
//!
//! Every case is compiled with the grain at its smallest (`split_grain(1, 1)`: every
//! layer that can be split is, into as many tasks as it allows, up to 8), and checks
//! that the layer under test was split.

mod backend_common;

use backend_common::{B, Rng, attrs, codes, ints, requant_to};
use proptest::prelude::*;
use qcc::backend::costs::{self, Strategy};
use qcc::backend::{JitModel, Target, ThreadPool, Tier, split_grain};
use qcc_ir::interp::{Tensor, TensorData};
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType};

/// Threads of the pools every case runs with.
const THREADS: [usize; 4] = [1, 2, 3, 7];

fn same(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.shape == y.shape
                && match (&x.data, &y.data) {
                    (TensorData::F32(p), TensorData::F32(q)) => {
                        p.len() == q.len()
                            && p.iter().zip(q).all(|(u, v)| u.to_bits() == v.to_bits())
                    }
                    (p, q) => p == q,
                }
        })
}

/// Compiles `b` for `cpu` with `disabled` strategies off and the smallest grains; the
/// first layer's kernel must contain `kernel` and be split into tasks; then every pool
/// of [`THREADS`] must give `NAME_run`'s outputs bit for bit.
fn check(b: &B, cpu: &str, disabled: &[Strategy], kernel: &str) -> Result<(), String> {
    qcc_ir::verify::verify(&b.m).map_err(|e| format!("invalid test module:\n{e}"))?;
    // Grain 1: every split layer with bit-packed weights shares them (a first phase);
    // grain 2: small ones are unpacked by every band.
    for chunk in [1, 2] {
        check_grain(b, cpu, disabled, kernel, chunk)?;
    }
    Ok(())
}

fn check_grain(
    b: &B,
    cpu: &str,
    disabled: &[Strategy],
    kernel: &str,
    chunk: u64,
) -> Result<(), String> {
    let host = target_lexicon::Triple::host().to_string();
    let t = Target::new(&host, cpu).map_err(|e| e.to_string())?;
    let jit = split_grain(1, chunk, || {
        costs::without(disabled, || JitModel::with_target(&b.m, &t))
    })
    .map_err(|e| format!("{cpu}: compile: {e}\n{}", b.m))?;
    let layer = &jit.report().layers[0];
    if !layer.kernel.contains(kernel) {
        return Err(format!(
            "{cpu}: expected {kernel}, got {}\n{}",
            layer.kernel,
            jit.report()
        ));
    }
    // Float layers split only where every band keeps the layer's algorithm (a
    // Winograd layer whose tiles cannot be cut into bands runs inline).
    if layer.tasks < 2 && !layer.kernel.contains("winograd") {
        return Err(format!(
            "{cpu}: the layer was not split\n{}\n{}",
            b.m,
            jit.report()
        ));
    }
    let want = jit.run(&b.inputs).map_err(|e| format!("{cpu}: run: {e}"))?;
    for threads in THREADS {
        let pool = ThreadPool::new(threads);
        // Twice: the second call sees the scratch the first left.
        for _ in 0..2 {
            let got = jit
                .run_threads(&b.inputs, &pool)
                .map_err(|e| format!("{cpu}: run_ctx: {e}"))?;
            if !same(&want, &got) {
                return Err(format!(
                    "{cpu}, {threads} threads: run_ctx differs from run\n{}\n{}",
                    b.m,
                    jit.report()
                ));
            }
        }
    }
    Ok(())
}

fn host_has(level4: bool) -> bool {
    let h = Tier::host();
    cfg!(target_arch = "x86_64") && if level4 { h.level >= 4 } else { h.avx2() }
}

/// Conv attributes.
fn conv_attrs(
    s: usize,
    pads: &[i64],
    d: usize,
    group: usize,
) -> std::collections::BTreeMap<String, Attr> {
    attrs(&[
        ("strides", ints(&[s as i64, s as i64])),
        ("pads", ints(pads)),
        ("dilations", ints(&[d as i64, d as i64])),
        ("group", Attr::Int(group as i64)),
    ])
}

/// Random conv geometry: (n, c, m, h, w, k, stride, pads, dilation, group) whose
/// output has at least 2 rows.
#[allow(clippy::type_complexity, reason = "a tuple of shape parameters")]
fn geometry(
    r: &mut Rng,
) -> Option<(
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    Vec<i64>,
    usize,
    usize,
)> {
    let group = if r.i(0, 4) == 0 { 2 } else { 1 };
    let c = r.i(1, 12) as usize * group;
    let m = r.i(1, 12) as usize * group;
    let (h, w) = (r.i(2, 19) as usize, r.i(1, 21) as usize);
    let k = [1, 3, 3, 5][r.i(0, 3) as usize];
    let s = r.i(1, 2) as usize;
    let d = if r.i(0, 5) == 0 { 2 } else { 1 };
    let span = d * (k - 1) + 1;
    // Pads within the window (every output row then reads some input row).
    let pads: Vec<i64> = (0..4).map(|_| r.i(0, 2.min(span as i64 - 1))).collect();
    let oh = (h as i64 + pads[0] + pads[2] - span as i64).div_euclid(s as i64) + 1;
    let ow = (w as i64 + pads[1] + pads[3] - span as i64).div_euclid(s as i64) + 1;
    (oh >= 2 && ow >= 1).then_some((r.i(1, 2) as usize, c, m, h, w, k, s, pads, d, group))
}

/// An f32 convolution (bias, maybe a fused relu) on random data.
fn f32_conv(r: &mut Rng, winograd: bool) -> Option<B> {
    let (n, c, m, h, w, k, s, pads, d, group) = if winograd {
        let side = [16, 24, 32][r.i(0, 2) as usize];
        (
            1,
            r.i(4, 20) as usize,
            r.i(4, 20) as usize,
            side,
            side,
            3,
            1,
            vec![1; 4],
            1,
            1,
        )
    } else {
        geometry(r)?
    };
    let mut b = B::new();
    let xd = r.fs(n * c * h * w, -1.0, 1.0);
    let x = b.input_f32(&[n, c, h, w], xd);
    let wd = r.fs(m * (c / group) * k * k, -0.5, 0.5);
    let wt = b.const_f32(&[m, c / group, k, k], wd);
    let bd = r.fs(m, -0.1, 0.1);
    let bias = b.const_f32(&[m], bd);
    let y = b.f(Op::Conv2d, &[x, wt, bias], conv_attrs(s, &pads, d, group));
    let y = if r.i(0, 1) == 0 {
        b.f(Op::Relu, &[y], attrs(&[]))
    } else {
        y
    };
    b.output(y);
    Some(b)
}

fn qt(bits: u8, signed: bool, params: QuantParams) -> ElemType {
    ElemType::Quant(QuantType {
        storage: IntType::new(bits, signed),
        narrow: false,
        pow2: false,
        params,
    })
}

fn out_q() -> ElemType {
    qt(
        8,
        true,
        QuantParams::PerTensor {
            scale: 0.05,
            zero_point: -3,
        },
    )
}

/// An integer convolution: `abits`-bit activations, `wbits`-bit weights (per-channel
/// zero points), a constant bias, a requantize (none, per tensor, per channel); `deep`:
/// more channels than pixels (the u8 x i8 kernels split those by channels).
fn int_conv(r: &mut Rng, abits: u8, wbits: u8, small_w: bool, deep: bool) -> Option<B> {
    let (n, c, m, h, w, k, s, pads, d, group) = geometry(r)?;
    let (c, m, h, w, group) = if deep {
        (
            r.i(8, 40) as usize,
            r.i(17, 90) as usize,
            r.i(2, 6) as usize,
            r.i(2, 6) as usize,
            1,
        )
    } else {
        (c, m, h, w, group)
    };
    // Sometimes 16 channels per group: the channel-packed lowering (the bit-serial
    // wide tiles need it).
    let c = if r.i(0, 1) == 0 { 16 * group } else { c };
    let oh = (h as i64 + pads[0] + pads[2] - (d * (k - 1) + 1) as i64).div_euclid(s as i64) + 1;
    let ow = (w as i64 + pads[1] + pads[3] - (d * (k - 1) + 1) as i64).div_euclid(s as i64) + 1;
    if oh < 1 || ow < 1 {
        return None;
    }
    let mut b = B::new();
    let asigned = r.i(0, 1) == 1;
    let ax = qt(
        abits,
        asigned,
        QuantParams::PerTensor {
            scale: 0.1,
            zero_point: 0,
        },
    );
    let xd = codes(r, &ax, n * c * h * w);
    let x = b.input_int(ax, &[n, c, h, w], xd);
    let we = qt(
        wbits,
        true,
        QuantParams::PerAxis {
            axis: 0,
            scales: vec![0.02; m],
            zero_points: vec![0; m],
        },
    );
    let count = m * (c / group) * k * k;
    let wd = if small_w {
        // Small weights pass pmaddubsw's pair check.
        let lim = (1i64 << (wbits - 1)).min(8) - 1;
        r.is(count, -lim.max(1), lim.max(1))
    } else {
        codes(r, &we, count)
    };
    let wt = b.const_int(we, &[m, c / group, k, k], wd);
    let bd = r.is(m, -3000, 3000);
    let bias = b.const_int(ElemType::I32, &[m], bd);
    let y = b.node(
        Op::Conv2dInt,
        &[x, wt, bias],
        conv_attrs(s, &pads, d, group),
        ElemType::I32,
    );
    let kind = r.i(0, 2) as usize;
    let y = requant_to(&mut b, r, y, kind, m, 1, (24, 38), out_q());
    b.output(y);
    Some(b)
}

/// A 1-bit convolution (bipolar activations and weights), maybe with a bias and a
/// threshold back to b1.
fn bin_conv(r: &mut Rng) -> Option<B> {
    let (n, c, m, h, w, k, s, pads, d, group) = geometry(r)?;
    let c = if r.i(0, 2) == 0 { 16 * group } else { c };
    let mut b = B::new();
    let bits = |r: &mut Rng, n: usize| -> Vec<i64> {
        (0..n)
            .map(|_| if r.next() & 1 == 1 { -1 } else { 1 })
            .collect()
    };
    let xd = bits(r, n * c * h * w);
    let x = b.input_int(ElemType::Bipolar, &[n, c, h, w], xd);
    let wd = bits(r, m * (c / group) * k * k);
    let wt = b.const_int(ElemType::Bipolar, &[m, c / group, k, k], wd);
    let bd = r.is(m, -30, 30);
    let bias = b.const_int(ElemType::I32, &[m], bd);
    let y = b.node(
        Op::Conv2dInt,
        &[x, wt, bias],
        conv_attrs(s, &pads, d, group),
        ElemType::I32,
    );
    let y = if r.i(0, 1) == 0 {
        let t: Vec<i64> = r.is(m, -20, 20);
        let th = b.const_int(ElemType::Int(IntType::new(32, true)), &[m, 1], t);
        b.node(
            Op::Threshold,
            &[y, th],
            attrs(&[("axis", Attr::Int(1)), ("offset", Attr::Int(0))]),
            ElemType::Bipolar,
        )
    } else {
        y
    };
    b.output(y);
    Some(b)
}

/// Every strategy but the ones named.
fn only(keep: &[Strategy]) -> Vec<Strategy> {
    [
        Strategy::F32Gemm,
        Strategy::Int8Pmaddwd,
        Strategy::Int8PackedW,
        Strategy::BitSerial,
        Strategy::Xnor,
        Strategy::Maddubs,
        Strategy::DotVnni,
        Strategy::DotAvx2,
        Strategy::DotAvx2Wide,
        Strategy::F32Zmm,
        Strategy::F32Ymm,
        Strategy::XnorZmm,
        Strategy::XnorYmm,
        Strategy::BitSerialZmm,
        Strategy::BitSerialYmm,
    ]
    .into_iter()
    .filter(|s| !keep.contains(s))
    .collect()
}

proptest! {
    #![proptest_config(backend_common::cfg())]

    /// f32 im2col / pointwise / Winograd convolutions on the 128-bit kernels, the ymm
    /// and the zmm FMA tiles.
    #[test]
    fn f32_convolutions(seed: u64, winograd: bool) {
        let mut r = Rng(seed | 1);
        let Some(b) = f32_conv(&mut r, winograd) else { return Ok(()) };
        check(&b, "x86-64-v2", &[], "conv2d").map_err(TestCaseError::fail)?;
        if host_has(false) {
            check(&b, "x86-64-v3", &[], "conv2d").map_err(TestCaseError::fail)?;
        }
        if host_has(true) {
            check(&b, "native", &[], "conv2d").map_err(TestCaseError::fail)?;
        }
    }

    /// u8 x i8: the zmm `vpdpbusd` tile, the ymm tiles and the 128-bit `pmaddubsw`.
    #[test]
    fn u8_i8_convolutions(seed: u64, abits in 2u8..=8, wbits in 2u8..=8, deep: bool) {
        let mut r = Rng(seed | 1);
        // Deep layers are split by channels when their weights are bit-packed.
        let wbits = if deep { wbits.min(7) } else { wbits };
        let Some(b) = int_conv(&mut r, abits, wbits, true, deep) else { return Ok(()) };
        check(&b, "x86-64-v2", &only(&[Strategy::Maddubs]), "pmaddubsw")
            .map_err(TestCaseError::fail)?;
        if host_has(false) {
            check(&b, "x86-64-v3", &only(&[Strategy::DotAvx2, Strategy::DotAvx2Wide]), ".ymm")
                .map_err(TestCaseError::fail)?;
            // The i16-widening tile alone (8-bit weights: read as i16 by every band).
            check(&b, "x86-64-v3", &only(&[Strategy::DotAvx2Wide]), "vpmaddwd.ymm")
                .map_err(TestCaseError::fail)?;
        }
        if Tier::host().avx512_vnni() {
            check(&b, "native", &only(&[Strategy::DotVnni]), "vpdpbusd.zmm")
                .map_err(TestCaseError::fail)?;
        }
    }

    /// i16 pairs and `pmaddwd` (8-bit and bit-packed narrower weights).
    #[test]
    fn pmaddwd_convolutions(seed: u64, abits in 2u8..=8, wbits in 2u8..=8) {
        let mut r = Rng(seed | 1);
        let Some(b) = int_conv(&mut r, abits, wbits, false, false) else { return Ok(()) };
        check(&b, "x86-64-v2", &only(&[Strategy::Int8Pmaddwd, Strategy::Int8PackedW]), "conv2d_int")
            .map_err(TestCaseError::fail)?;
    }

    /// Bit-serial AND-popcount (2..4-bit weights and activations).
    #[test]
    fn bitserial_convolutions(seed: u64, combo in 0usize..5) {
        let (wbits, abits) = [(2, 2), (2, 3), (3, 2), (2, 4), (4, 2)][combo];
        let mut r = Rng(seed | 1);
        let Some(b) = int_conv(&mut r, abits, wbits, false, false) else { return Ok(()) };
        check(&b, "x86-64-v2", &only(&[Strategy::BitSerial]), "bitserial")
            .map_err(TestCaseError::fail)?;
        // The wide tiles take channel-packed convolutions (16 channels per group).
        let chan = b.m.ty(b.m.nodes[0].operands[1]).shape[1] == 16;
        if chan && host_has(false) {
            check(&b, "x86-64-v3", &only(&[Strategy::BitSerialYmm]), "bitserial.vpshufb.ymm")
                .map_err(TestCaseError::fail)?;
        }
        if chan && Tier::host().avx512_vpopcntdq() {
            check(&b, "native", &only(&[Strategy::BitSerialZmm]), "bitserial.vpopcntq.zmm")
                .map_err(TestCaseError::fail)?;
        }
    }

    /// XNOR-popcount: the 128-bit kernel, the ymm and zmm tiles.
    #[test]
    fn xnor_convolutions(seed: u64) {
        let mut r = Rng(seed | 1);
        let Some(b) = bin_conv(&mut r) else { return Ok(()) };
        check(&b, "x86-64-v2", &only(&[Strategy::Xnor]), "xnor").map_err(TestCaseError::fail)?;
        if host_has(false) {
            check(&b, "x86-64-v3", &only(&[Strategy::XnorYmm]), "xnor-popcnt.vpshufb.ymm")
                .map_err(TestCaseError::fail)?;
        }
        if Tier::host().avx512_vpopcntdq() {
            check(&b, "native", &only(&[Strategy::XnorZmm]), "xnor-popcnt.vpopcntq.zmm")
                .map_err(TestCaseError::fail)?;
        }
    }

    /// Elementwise kernels split by ranges: the fused quantized add (zmm and 128-bit)
    /// and an f32 unary op.
    #[test]
    fn elementwise_ranges(seed: u64, len in 64usize..5000) {
        let mut r = Rng(seed | 1);
        let shape = [1, len];
        // requantize(a) + requantize(b) -> requantize
        let mut b = B::new();
        let e = qt(8, false, QuantParams::PerTensor { scale: 0.1, zero_point: 3 });
        let ad = codes(&mut r, &e, len);
        let bd = codes(&mut r, &e, len);
        let a = b.input_int(e.clone(), &shape, ad);
        let c = b.input_int(e, &shape, bd);
        let i16t = ElemType::Int(IntType::new(16, true));
        let ra = requant_to(&mut b, &mut r, a, 1, 1, 1, (24, 30), i16t.clone());
        let rb = requant_to(&mut b, &mut r, c, 1, 1, 1, (24, 30), i16t.clone());
        let s = b.node(Op::Add, &[ra, rb], attrs(&[]), i16t);
        let y = requant_to(&mut b, &mut r, s, 1, 1, 1, (24, 30), out_q());
        b.output(y);
        check(&b, "x86-64-v2", &[], "add").map_err(TestCaseError::fail)?;
        if host_has(true) {
            check(&b, "native", &[], "add").map_err(TestCaseError::fail)?;
        }
        let mut b = B::new();
        let xd = r.fs(len, -3.0, 3.0);
        let x = b.input_f32(&shape, xd);
        let y = b.f(Op::Sigmoid, &[x], attrs(&[]));
        b.output(y);
        check(&b, "native", &[], "sigmoid").map_err(TestCaseError::fail)?;
    }
}

/// The u8 activations of the banded cases (scale 0.1, zero point 3).
fn act_u8() -> ElemType {
    qt(
        8,
        false,
        QuantParams::PerTensor {
            scale: 0.1,
            zero_point: 3,
        },
    )
}

/// Symmetric i8 weights of `m` output channels (scale 0.02 each).
fn weights_i8(m: usize) -> ElemType {
    qt(
        8,
        true,
        QuantParams::PerAxis {
            axis: 0,
            scales: vec![0.02; m],
            zero_points: vec![0; m],
        },
    )
}

/// A conv split into bands of rows, then a fused quantized add reading its result: the
/// add is split into the same bands (every channel's rows of each band).
#[test]
fn banded_elementwise_after_a_conv() {
    let mut r = Rng(11);
    for case in 0..12 {
        let (c, m) = (r.i(2, 12) as usize, r.i(2, 12) as usize);
        let (h, w) = (r.i(4, 20) as usize, r.i(4, 20) as usize);
        let mut b = B::new();
        let ax = act_u8();
        let xd = codes(&mut r, &ax, c * h * w);
        let x = b.input_int(ax.clone(), &[1, c, h, w], xd);
        let we = weights_i8(m);
        let wd = r.is(m * c * 9, -7, 7);
        let wt = b.const_int(we, &[m, c, 3, 3], wd);
        let y = b.node(
            Op::Conv2dInt,
            &[x, wt],
            conv_attrs(1, &[1, 1, 1, 1], 1, 1),
            ElemType::I32,
        );
        // The conv's own requantize (fused into it), as in the models.
        let y = requant_to(&mut b, &mut r, y, 1, 1, 1, (28, 34), ax.clone());
        let yd = codes(&mut r, &ax, m * h * w);
        let other = b.input_int(ax, &[1, m, h, w], yd);
        let i16t = ElemType::Int(IntType::new(16, true));
        let ra = requant_to(&mut b, &mut r, y, 1, 1, 1, (24, 30), i16t.clone());
        let rb = requant_to(&mut b, &mut r, other, 1, 1, 1, (24, 30), i16t.clone());
        let s = b.node(Op::Add, &[ra, rb], attrs(&[]), i16t);
        let z = requant_to(&mut b, &mut r, s, 1, 1, 1, (24, 30), out_q());
        b.output(z);
        for cpu in ["x86-64-v2", "native"] {
            if cpu == "native" && !host_has(true) {
                continue;
            }
            check(&b, cpu, &[], "conv2d_int").unwrap_or_else(|e| panic!("case {case}: {e}"));
            let host = target_lexicon::Triple::host().to_string();
            let t = Target::new(&host, cpu).unwrap();
            let jit = split_grain(1, 1, || JitModel::with_target(&b.m, &t)).unwrap();
            let add = &jit.report().layers[1];
            assert!(
                add.op.starts_with("add") && add.tasks > 1,
                "case {case}: {}",
                jit.report()
            );
            // ... and runs in the conv's job (one fork/join for both).
            assert_eq!(add.job, Some(0), "case {case}: {}", jit.report());
            assert_eq!(jit.report().layers[0].job, Some(0));
        }
    }
}

/// A u8 x i8 conv of `m` output channels (`k` x `k`, same padding) with its requantize
/// to `out`.
fn conv_requant(
    b: &mut B,
    r: &mut Rng,
    x: qcc_ir::ValueId,
    (cin, m, k): (usize, usize, usize),
    out: ElemType,
) -> qcc_ir::ValueId {
    let wd = r.is(m * cin * k * k, -7, 7);
    let wt = b.const_int(weights_i8(m), &[m, cin, k, k], wd);
    let p = (k / 2) as i64;
    let y = b.node(
        Op::Conv2dInt,
        &[x, wt],
        conv_attrs(1, &[p, p, p, p], 1, 1),
        ElemType::I32,
    );
    requant_to(b, r, y, 1, 1, 1, (28, 34), out)
}

/// A residual block's tail on a `[1, c, h, h]` u8 input: a 3x3 conv and a 1x1 conv of
/// it, their requantized sum in `out`.
fn conv_pair_sum(
    b: &mut B,
    r: &mut Rng,
    (c, m, h): (usize, usize, usize),
    out: ElemType,
) -> qcc_ir::ValueId {
    let ax = act_u8();
    let xd = codes(r, &ax, c * h * h);
    let x = b.input_int(ax.clone(), &[1, c, h, h], xd);
    let y = conv_requant(b, r, x, (c, m, 3), ax.clone());
    let z = conv_requant(b, r, x, (c, m, 1), ax);
    let i16t = ElemType::Int(IntType::new(16, true));
    let ra = requant_to(b, r, y, 1, 1, 1, (24, 30), i16t.clone());
    let rb = requant_to(b, r, z, 1, 1, 1, (24, 30), i16t.clone());
    let s = b.node(Op::Add, &[ra, rb], attrs(&[]), i16t);
    requant_to(b, r, s, 1, 1, 1, (24, 30), out)
}

/// `b` compiled for `cpu` at the default grain (None where the host lacks the tier),
/// after `check` looked at its report; then every pool of [`THREADS`], twice each,
/// must give `NAME_run`'s outputs bit for bit.
fn default_grain_on_pools(b: &B, cpu: &str, check: impl Fn(&qcc::backend::Report)) {
    if cpu == "native" && !host_has(true) {
        return;
    }
    qcc_ir::verify::verify(&b.m).unwrap();
    let host = target_lexicon::Triple::host().to_string();
    let t = Target::new(&host, cpu).unwrap();
    let jit = JitModel::with_target(&b.m, &t).unwrap();
    check(jit.report());
    let want = jit.run(&b.inputs).unwrap();
    for threads in THREADS {
        let pool = ThreadPool::new(threads);
        for _ in 0..2 {
            let got = jit.run_threads(&b.inputs, &pool).unwrap();
            assert!(
                same(&want, &got),
                "{cpu}, {threads} threads\n{}",
                jit.report()
            );
        }
    }
}

/// The same block on 8x8 images (ResNet-20's last stage): bands of 4 rows of a u8
/// plane would be half a cache line each, both cores writing every line, so the convs
/// are split by output channels (whole planes per task) and the add by the same
/// element ranges, all in one job; bit for bit with `NAME_run` on every pool.
#[test]
fn small_planes_split_by_channels() {
    let mut r = Rng(29);
    let mut b = B::new();
    let s = conv_pair_sum(&mut b, &mut r, (64, 64, 8), out_q());
    b.output(s);
    for cpu in ["x86-64-v2", "native"] {
        default_grain_on_pools(&b, cpu, |rep| {
            let got: Vec<_> = rep
                .layers
                .iter()
                .map(|l| (l.tasks > 1, l.split_by, l.job))
                .collect();
            assert_eq!(
                got,
                [
                    (true, Some("channels"), Some(0)),
                    (true, Some("channels"), Some(0)),
                    (true, Some("elements"), Some(0)),
                ],
                "{cpu}\n{rep}"
            );
            assert!(
                rep.to_string().contains("[2 tasks by channels, job 0]"),
                "{rep}"
            );
        });
    }
}

/// A residual block's tail as the models have it: a 3x3 conv worth splitting, a 1x1
/// conv too small to split on its own and an add of both. At the default grain the
/// three run as one job (the small conv split into the 3x3's bands to join it); a
/// second 3x3 conv reading the first one's rows across its bands starts a new job; the
/// threaded results equal `NAME_run`'s bit for bit with every pool.
#[test]
fn small_layers_join_the_job_before_them() {
    let mut r = Rng(23);
    for case in 0..4 {
        let (c, m, h) = (16, 16, 32 - 4 * case);
        let mut b = B::new();
        let s = conv_pair_sum(&mut b, &mut r, (c, m, h), act_u8());
        let t = conv_requant(&mut b, &mut r, s, (m, m, 3), out_q());
        b.output(t);
        for cpu in ["x86-64-v2", "native"] {
            default_grain_on_pools(&b, cpu, |rep| {
                let jobs: Vec<_> = rep.layers.iter().map(|l| (l.tasks, l.job)).collect();
                assert!(
                    rep.layers[1].macs < 400_000
                        && jobs[..3].iter().all(|&(n, j)| n > 1 && j == Some(0)),
                    "case {case}, {cpu}: {jobs:?}\n{rep}"
                );
                assert!(
                    jobs[3].0 > 1 && jobs[3].1.is_none(),
                    "case {case}, {cpu}: {jobs:?}\n{rep}"
                );
            });
        }
    }
}

/// A whole model: the digits CNN (QOperator, integer kernels) and the float ResNet,
/// threaded against plain, at the default grain and the smallest.
#[test]
fn models() {
    use qcc::frontend::onnx::{ImportOptions, import_file};
    use qcc::passes::cleanup;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for name in ["digits_cnn_qop.onnx", "digits_resnet_folded.onnx"] {
        let path = root.join("tests/models").join(name);
        let mut m = import_file(&path, &ImportOptions::default())
            .unwrap()
            .module;
        cleanup::pipeline().run(&mut m, &mut |_| {}).unwrap();
        let ty = m.ty(m.inputs[0]).clone();
        let mut r = Rng(7);
        let x = Tensor::f32(ty.shape.clone(), r.fs(ty.numel(), 0.0, 1.0));
        for small in [false, true] {
            let jit = if small {
                split_grain(1, 1, || JitModel::new(&m)).unwrap()
            } else {
                JitModel::new(&m).unwrap()
            };
            if small && name.contains("resnet") {
                // The residual blocks' convs and adds share jobs.
                assert!(
                    jit.report().layers.iter().any(|l| l.job.is_some()),
                    "{name}: no job of several layers\n{}",
                    jit.report()
                );
            }
            let want = jit.run(std::slice::from_ref(&x)).unwrap();
            for threads in THREADS {
                let pool = ThreadPool::new(threads);
                let got = jit.run_threads(std::slice::from_ref(&x), &pool).unwrap();
                assert!(
                    same(&want, &got),
                    "{name}, {threads} threads, small grain {small}"
                );
            }
        }
    }
}

/// `NAME_run_ctx`'s checks: NULL context, zero threads, no callback, scratch declared
/// too small, NULL or misaligned scratch, NULL arrays: return 1.
#[test]
fn context_checks() {
    use qcc::backend::CtxCase;
    let mut r = Rng(3);
    let mut b = B::new();
    let xd = r.fs(8 * 20 * 20, -1.0, 1.0);
    let x = b.input_f32(&[1, 8, 20, 20], xd);
    let wd = r.fs(12 * 8 * 9, -0.5, 0.5);
    let wt = b.const_f32(&[12, 8, 3, 3], wd);
    let y = b.f(Op::Conv2d, &[x, wt], conv_attrs(2, &[1, 1, 1, 1], 1, 1));
    b.output(y);
    let jit = split_grain(1, 1, || JitModel::new(&b.m)).unwrap();
    assert!(jit.report().layers[0].tasks > 1, "{}", jit.report());
    let pool = ThreadPool::new(2);
    let need1 = jit.scratch_bytes_threads(1);
    let need2 = jit.scratch_bytes_threads(2);
    assert!(need2 > need1, "{need2} <= {need1}");
    for case in [
        CtxCase::NullCtx,
        CtxCase::ZeroThreads,
        CtxCase::NoCallback,
        CtxCase::ScratchShort(1),
        CtxCase::ScratchShort(2),
        CtxCase::ScratchShort(3),
        CtxCase::MisalignedScratch,
        CtxCase::NullScratch,
        CtxCase::NullInputs,
        CtxCase::NullOutputs,
    ] {
        assert_eq!(
            jit.run_ctx_case(&b.inputs, &pool, case).unwrap(),
            1,
            "{case:?}"
        );
    }
    for case in [
        CtxCase::Good(1),
        CtxCase::Good(2),
        CtxCase::Good(5),
        CtxCase::OneThreadNoCallback,
    ] {
        assert_eq!(
            jit.run_ctx_case(&b.inputs, &pool, case).unwrap(),
            0,
            "{case:?}"
        );
    }
}

/// A convolution whose bands are not all direct (`MdLowering::window`: 11 rows of 8
/// pixels, zmm vectors of two rows, so odd bands take im2col) with 2-bit weights
/// unpacked once for all bands (grain 1): the first phase must unpack them in the K
/// order every band reads, or run per band (found by `u8_i8_convolutions`).
#[test]
fn direct_and_im2col_bands_with_shared_weights() {
    let mut r = Rng(17908988436616188334u64 | 1);
    let b = int_conv(&mut r, 2, 2, true, false).expect("a case");
    if Tier::host().avx512_vnni() {
        check(&b, "native", &only(&[Strategy::DotVnni]), "vpdpbusd.zmm").unwrap();
    }
    if host_has(false) {
        check(
            &b,
            "x86-64-v3",
            &only(&[Strategy::DotAvx2, Strategy::DotAvx2Wide]),
            ".ymm",
        )
        .unwrap();
    }
}
