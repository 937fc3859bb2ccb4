//! Differential tests of the assembled wide u8 x i8 tiles (`kernels::dot`), for every
//! x86-64 tier the host has: the JIT built for the tier must equal the interpreter bit
//! for bit on random convolutions and matrix products (small channel counts, odd K,
//! strides, pads, groups, 1..8-bit activations and weights, zero points, bias, a fused
//! requantize, batched matmuls).
//!
//! - `x86-64-v3`: the AVX2 ymm tiles: `vpmaddubsw` + `vpmaddwd` for layers whose
//!   weights pass the pair check, i16 widening + `vpmaddwd` for the others whose
//!   corrected weights fit i8; always run on an x86-64 host with AVX2.
//! - `x86-64-v4+vnni`: the zmm `vpdpbusd` tile, for every layer whose corrected weights
//!   fit i8 (8-bit layers included: no saturation).
//!
//! Each test prints the tiers it exercised and skipped. With `CI=true`, a tier the host
//! has whose kernel never ran is a failure.

mod backend_common;

use std::sync::Mutex;

use backend_common::{B, Rng, attrs, codes, ints, requant_to};
use proptest::prelude::*;
use qcc::backend::costs::{self, Strategy};
use qcc::backend::{JitModel, Target, Tier};
use qcc_ir::interp;
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType, ValueId};

/// The tiers with a wide tile: `--cpu` name, the kernel's name part, and whether the
/// host can run it.
fn tiers() -> Vec<(&'static str, &'static str, bool)> {
    let h = Tier::host();
    let x86 = cfg!(target_arch = "x86_64");
    vec![
        ("x86-64-v3", ".ymm", x86 && h.avx2()),
        ("x86-64-v4+vnni", "vpdpbusd.zmm", x86 && h.avx512_vnni()),
    ]
}

/// Per tier: cases where its wide kernel ran.
static RAN: Mutex<[usize; 2]> = Mutex::new([0; 2]);

/// Cases where a tile computed a convolution directly (`.direct+` kernels).
static RAN_DIRECT: Mutex<usize> = Mutex::new(0);

/// Cases where the i16-widening ymm tile ran on 8-bit weights, which it reads
/// pre-widened to i16 from the object (`dot::weights_i16`).
static RAN_I16: Mutex<usize> = Mutex::new(0);

/// The other kernels, disabled so that every layer the tile can take takes it.
const OTHERS: [Strategy; 6] = [
    Strategy::Int8Pmaddwd,
    Strategy::Int8PackedW,
    Strategy::BitSerial,
    Strategy::BitSerialZmm,
    Strategy::BitSerialYmm,
    Strategy::Maddubs,
];

fn qt(bits: u8, signed: bool, narrow: bool, params: QuantParams) -> ElemType {
    ElemType::Quant(QuantType {
        storage: IntType::new(bits, signed),
        narrow,
        pow2: false,
        params,
    })
}

fn act_type(r: &mut Rng, bits: u8, signed: bool) -> ElemType {
    let st = IntType::new(bits, signed);
    if r.i(0, 4) == 0 {
        return ElemType::Int(st);
    }
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

/// Weights: type, codes, and which tiles must take them (`[avx2, vnni]`).
struct Weights {
    elem: ElemType,
    codes: Vec<i64>,
    takes: [bool; 2],
}

fn weights(r: &mut Rng, bits: u8, axis: usize, c: usize, count: usize, conv: bool) -> Weights {
    let signed = r.i(0, 3) > 0;
    let narrow = signed && bits > 1 && r.i(0, 1) == 1;
    let st = IntType::new(bits, signed);
    let (lo, hi) = (st.min_code() + i64::from(narrow), st.max_code());
    let small = r.i(0, 2) > 0;
    let zps: Vec<i64> = match r.i(0, 2) {
        0 => vec![0; c],
        1 => vec![r.i(lo, hi); c],
        _ => (0..c).map(|_| r.i(lo, hi)).collect(),
    };
    let chan = |i: usize| if conv { i / (count / c) } else { i % c };
    let codes: Vec<i64> = (0..count)
        .map(|i| {
            let z = zps[chan(i)];
            if small {
                r.i((z - 64).max(lo), (z + 64).min(hi))
            } else {
                r.i(lo, hi)
            }
        })
        .collect();
    let fits = (0..count).all(|i| (-128..=127).contains(&(codes[i] - zps[chan(i)])));
    let params = QuantParams::PerAxis {
        axis,
        scales: vec![0.02; c],
        zero_points: zps.iter().map(|&z| z as i32).collect(),
    };
    Weights {
        elem: qt(bits, signed, narrow, params),
        codes,
        takes: [fits, fits],
    }
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

fn requant(b: &mut B, r: &mut Rng, y: ValueId, kind: usize, c: usize, axis: i64) -> ValueId {
    requant_to(b, r, y, kind, c, axis, (24, 38), out_q())
}

fn bias(b: &mut B, r: &mut Rng, kind: usize, n: usize) -> Option<ValueId> {
    let v = if r.i(0, 3) == 0 {
        r.is(n, i32::MIN as i64, i32::MAX as i64)
    } else {
        r.is(n, -3000, 3000)
    };
    match kind {
        1 => Some(b.const_int(ElemType::I32, &[n], v)),
        2 => Some(b.input_int(ElemType::I32, &[n], v)),
        _ => None,
    }
}

/// Runs `b` in every tier the host has (its wide kernel forced where it applies) and
/// compares with the interpreter; `takes[t]`: tier `t`'s tile must take the layer.
fn check_tiers(b: &B, takes: [bool; 2]) -> Result<(), String> {
    qcc_ir::verify::verify(&b.m).map_err(|e| format!("invalid test module:\n{e}"))?;
    let want = interp::run(&b.m, &b.inputs).map_err(|e| format!("interp: {e}"))?;
    let host = target_lexicon::Triple::host().to_string();
    for (ti, (cpu, kname, has)) in tiers().into_iter().enumerate() {
        if !has {
            continue;
        }
        let t = Target::new(&host, cpu).map_err(|e| e.to_string())?;
        // x86-64-v3 also with the `vpmaddubsw` tile off: the i16-widening tile then
        // takes every layer whose corrected weights fit i8, pair check or not.
        let passes: &[(bool, bool)] = if ti == 0 {
            &[(true, false), (true, true), (false, false)]
        } else {
            &[(true, false), (false, false)]
        };
        let only_wide: Vec<Strategy> = OTHERS.into_iter().chain([Strategy::DotAvx2]).collect();
        for &(forced, widening) in passes {
            let disabled: &[Strategy] = match (forced, widening) {
                (_, true) => &only_wide,
                (true, false) => &OTHERS,
                (false, false) => &[],
            };
            let jit = costs::without(disabled, || JitModel::with_target(&b.m, &t))
                .map_err(|e| format!("{cpu}: compile: {e}\n{}", b.m))?;
            let got = jit.run(&b.inputs).map_err(|e| format!("{cpu}: run: {e}"))?;
            let kernel = &jit.report().layers[0].kernel;
            for (w, g) in want.iter().zip(&got) {
                if w.shape != g.shape || w.data != g.data {
                    return Err(format!(
                        "{cpu} ({kernel}) differs from the interpreter\n{}\n{}",
                        b.m,
                        jit.report()
                    ));
                }
            }
            if widening {
                if takes[ti] && !kernel.contains("vpmaddwd.ymm") {
                    return Err(format!("{cpu}: expected vpmaddwd.ymm, got {kernel}"));
                }
                // 8-bit weights are stored unpacked, so as i16 for this tile.
                if kernel.contains("vpmaddwd.ymm") && !kernel.contains("packed") {
                    *RAN_I16.lock().unwrap() += 1;
                }
            } else if forced {
                if takes[ti] && !kernel.contains(kname) {
                    return Err(format!("{cpu}: expected {kname}, got {kernel}"));
                }
                if kernel.contains(kname) {
                    RAN.lock().unwrap()[ti] += 1;
                }
                if kernel.contains(".direct+") {
                    *RAN_DIRECT.lock().unwrap() += 1;
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(backend_common::cfg())]

    #[test]
    fn conv2d_wide(
        seed: u64,
        abits in 1u8..=8,
        wbits in 1u8..=8,
        asigned: bool,
        bias_kind in 0usize..3,
        requant_kind in 0usize..3,
        grouping in 0usize..4,
    ) {
        conv_case(seed, abits, wbits, asigned, bias_kind, requant_kind, grouping)?;
    }

    /// 8-bit weights, which the i16-widening tile reads as i16 from the object: small
    /// channel counts, odd K (zero-padded to whole quads), pixel counts that leave
    /// partial column vectors, row counts that leave partial row tiles.
    #[test]
    fn conv2d_i16_weights(
        seed: u64,
        abits in 1u8..=8,
        asigned: bool,
        bias_kind in 0usize..3,
        requant_kind in 0usize..3,
        grouping in 0usize..4,
    ) {
        conv_case(seed, abits, 8, asigned, bias_kind, requant_kind, grouping)?;
    }

    /// Matrix products with 8-bit weights (the columns, as i16 for the widening tile):
    /// odd K, N not a multiple of the column block, batched weights.
    #[test]
    fn matmul_i16_weights(
        seed: u64,
        abits in 1u8..=8,
        asigned: bool,
        bias_kind in 0usize..3,
        requant_kind in 0usize..3,
        batched in 0usize..3,
    ) {
        matmul_case(seed, abits, 8, asigned, bias_kind, requant_kind, batched)?;
    }


    /// The zmm tile's own requantize: every rounding mode, shifts from 0 to 40,
    /// negative multipliers, clamps, i8 / u8 / i16 outputs, pixel counts that leave
    /// partial vectors, a constant bias folded in.
    #[test]
    fn conv2d_in_tile_requantize(
        seed: u64,
        rnd in 0usize..7,
        out_kind in 0usize..3,
        per_channel: bool,
        with_bias: bool,
        clamp: bool,
    ) {
        let mut r = Rng(seed | 1);
        let (c, m) = (r.i(1, 20) as usize, r.i(1, 40) as usize);
        let (h, w) = (r.i(1, 12) as usize, r.i(1, 21) as usize);
        let mut b = B::new();
        let xe = qt(8, false, false, QuantParams::PerTensor { scale: 0.1, zero_point: r.i(0, 255) as i32 });
        let xd = codes(&mut r, &xe, c * h * w);
        let x = b.input_int(xe, &[1, c, h, w], xd);
        let we = qt(8, true, false, QuantParams::PerAxis { axis: 0, scales: vec![0.02; m], zero_points: vec![0; m] });
        let wd = r.is(m * c * 9, -128, 127);
        let wc = b.const_int(we, &[m, c, 3, 3], wd);
        let mut ops = vec![x, wc];
        if with_bias {
            let bv = r.is(m, -100_000, 100_000);
            ops.push(b.const_int(ElemType::I32, &[m], bv));
        }
        let y = b.node(Op::Conv2dInt, &ops, attrs(&[("pads", ints(&[1; 4]))]), ElemType::I32);
        let cnt = if per_channel { m } else { 1 };
        let mbits = if r.i(0, 1) == 0 { 26 } else { 30 };
        let mult: Vec<i64> = (0..cnt).map(|_| r.i(-(1 << mbits), 1 << mbits)).collect();
        let shift: Vec<i64> = (0..cnt).map(|_| if r.i(0, 4) == 0 { r.i(0, 3) } else { r.i(20, 40) }).collect();
        let out = match out_kind {
            0 => qt(8, true, false, QuantParams::PerTensor { scale: 0.05, zero_point: r.i(-20, 20) as i32 }),
            1 => qt(8, false, false, QuantParams::PerTensor { scale: 0.05, zero_point: r.i(0, 255) as i32 }),
            _ => qt(16, true, false, QuantParams::PerTensor { scale: 0.05, zero_point: r.i(-300, 300) as i32 }),
        };
        let mut a = vec![
            ("multiplier", ints(&mult)),
            ("shift", ints(&shift)),
            ("axis", Attr::Int(1)),
            ("rounding", Attr::Enum(qcc_ir::Rounding::ALL[rnd].name().into())),
        ];
        if clamp {
            a.push(("min", Attr::Int(if out_kind == 1 { 10 } else { -5 })));
            a.push(("max", Attr::Int(100)));
        }
        let z = b.node(Op::Requantize, &[y], attrs(&a), out);
        b.output(z);
        check_tiers(&b, [true, true]).map_err(TestCaseError::fail)?;
        // The requantize is the tile's (a `_rq` tile), not Cranelift's, in both tiers.
        // The AVX2 tile runs in f64 lanes (`_f64`) when it rounds half to even and the
        // products stay below 2^52 (K = 9c, weights and codes of 8 bits, multipliers
        // below 2^27: always here), else clamps in i64 lanes (`_x64`) only where a
        // shifted value may not fit i32 (a multiplier of at least 2^shift, and sums that
        // large), and does so on the cases with small shifts.
        let half_even = qcc_ir::Rounding::ALL[rnd] == qcc_ir::Rounding::HalfEven;
        let small = mult.iter().all(|&m| m.unsigned_abs() < 1 << 27);
        let wide_shift = mult.iter().zip(&shift).any(|(&m, &s)| s < 32 && m.unsigned_abs() >= 1 << s);
        let host = target_lexicon::Triple::host().to_string();
        for (ti, (cpu, _, has)) in tiers().into_iter().enumerate() {
            if !has {
                continue;
            }
            let t = Target::new(&host, cpu).unwrap();
            let asm = costs::without(&OTHERS, || qcc::backend::emit_asm(&b.m, "t", &t)).unwrap();
            prop_assert!(asm.contains("_rq"), "{cpu}: no in-tile requantize");
            if ti == 0 {
                prop_assert!(!asm.contains("_x64") || wide_shift, "{}: i64 clamp", cpu);
                if half_even && small {
                    prop_assert!(asm.contains("_f64"), "{}: no f64 requantize", cpu);
                } else if !half_even
                    && mult.iter().zip(&shift).any(|(&m, &s)| s < 3 && m.unsigned_abs() >= 1 << 20)
                {
                    prop_assert!(asm.contains("_x64"), "{}: no i64 clamp", cpu);
                }
            }
        }
    }

    /// Direct convolutions (see `direct_case`).
    #[test]
    fn conv2d_direct(
        seed: u64,
        abits in 1u8..=8,
        wbits in 1u8..=8,
        asigned: bool,
        bias_kind in 0usize..3,
        requant_kind in 0usize..3,
    ) {
        direct_case(seed, abits, wbits, asigned, bias_kind, requant_kind)?;
    }

    #[test]
    fn matmul_wide(
        seed: u64,
        abits in 1u8..=8,
        wbits in 1u8..=8,
        asigned: bool,
        bias_kind in 0usize..3,
        requant_kind in 0usize..3,
        batched in 0usize..3,
    ) {
        matmul_case(seed, abits, wbits, asigned, bias_kind, requant_kind, batched)?;
    }

}

/// A random convolution (see `conv2d_wide`) checked on every tier.
#[allow(clippy::too_many_arguments, reason = "the test's parameters")]
fn conv_case(
    seed: u64,
    abits: u8,
    wbits: u8,
    asigned: bool,
    bias_kind: usize,
    requant_kind: usize,
    grouping: usize,
) -> Result<(), TestCaseError> {
    let mut r = Rng(seed | 1);
    let n = r.i(1, 2) as usize;
    let (group, cg, mpg) = match grouping {
        2 => (2, r.i(1, 12) as usize, r.i(1, 20) as usize),
        3 => {
            let c = r.i(1, 9) as usize;
            (c, 1, r.i(1, 2) as usize)
        }
        _ => (1, r.i(1, 24) as usize, r.i(1, 40) as usize),
    };
    let c = cg * group;
    let m = mpg * group;
    let (kh, kw) = (r.i(1, 3) as usize, r.i(1, 3) as usize);
    let (sh, sw) = (r.i(1, 2) as usize, if r.i(0, 2) == 0 { 2 } else { 1 });
    let (dh, dw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
    let pads: Vec<i64> = (0..4).map(|_| r.i(0, 2)).collect();
    let (h, w) = (r.i(1, 14) as usize, r.i(1, 40) as usize);
    let fits = |len: usize, k: usize, d: usize, p0: i64, p1: i64| {
        len as i64 + p0 + p1 >= (d * (k - 1) + 1) as i64
    };
    if !(fits(h, kh, dh, pads[0], pads[2]) && fits(w, kw, dw, pads[1], pads[3])) {
        return Ok(());
    }
    let mut b = B::new();
    let xe = act_type(&mut r, abits, asigned);
    let xd = codes(&mut r, &xe, n * c * h * w);
    let x = b.input_int(xe, &[n, c, h, w], xd);
    let wt = weights(&mut r, wbits, 0, m, m * cg * kh * kw, true);
    let wc = b.const_int(wt.elem, &[m, cg, kh, kw], wt.codes);
    let mut ops = vec![x, wc];
    if let Some(bv) = bias(&mut b, &mut r, bias_kind, m) {
        ops.push(bv);
    }
    let a = attrs(&[
        ("strides", ints(&[sh as i64, sw as i64])),
        ("pads", ints(&pads)),
        ("dilations", ints(&[dh as i64, dw as i64])),
        ("group", Attr::Int(group as i64)),
    ]);
    let y = b.node(Op::Conv2dInt, &ops, a, ElemType::I32);
    let y = requant(&mut b, &mut r, y, requant_kind, m, 1);
    b.output(y);
    check_tiers(&b, wt.takes).map_err(TestCaseError::fail)
}

/// A random convolution the wide tiles compute directly (stride 1 or 2, no dilation, output
/// rows a whole number of vectors: `MdLowering::window`), checked on every tier, and the
/// report must name the direct kernel where the tier's tile takes it: channel counts
/// that leave a partial quad, windows up to 5x5, pads 0..3 on each side, batches, rows
/// narrower than a vector (loaded a row at a time), strides 1 and 2 (phase planes).
#[allow(clippy::too_many_arguments, reason = "the test's parameters")]
fn direct_case(
    seed: u64,
    abits: u8,
    wbits: u8,
    asigned: bool,
    bias_kind: usize,
    requant_kind: usize,
) -> Result<(), TestCaseError> {
    let mut r = Rng(seed | 1);
    let n = r.i(1, 2) as usize;
    let (c, m) = (r.i(1, 21) as usize, r.i(1, 40) as usize);
    let (kh, kw) = (r.i(1, 5) as usize, r.i(1, 5) as usize);
    let pads: Vec<i64> = (0..4).map(|_| r.i(0, 3)).collect();
    // Output rows of 4 or 8 pixels (several per vector) or of whole vectors, and rows
    // that fit neither (24 on zmm).
    let ow: usize = [4, 8, 8, 16, 24, 32, 48][r.i(0, 6) as usize];
    let oh = r.i(1, 9) as usize;
    // Stride 1 or 2 (the input one row or column longer where stride 2 allows).
    let st = r.i(1, 2);
    let (ex, ey) = if st == 2 {
        (r.i(0, 1), r.i(0, 1))
    } else {
        (0, 0)
    };
    let w = st * (ow as i64 - 1) + kw as i64 + ex - pads[1] - pads[3];
    let h = st * (oh as i64 - 1) + kh as i64 + ey - pads[0] - pads[2];
    if w < 1 || h < 1 {
        return Ok(());
    }
    let (h, w) = (h as usize, w as usize);
    let mut b = B::new();
    let xe = act_type(&mut r, abits, asigned);
    let xd = codes(&mut r, &xe, n * c * h * w);
    let x = b.input_int(xe, &[n, c, h, w], xd);
    let wt = weights(&mut r, wbits, 0, m, m * c * kh * kw, true);
    let wc = b.const_int(wt.elem, &[m, c, kh, kw], wt.codes);
    let mut ops = vec![x, wc];
    if let Some(bv) = bias(&mut b, &mut r, bias_kind, m) {
        ops.push(bv);
    }
    let y = b.node(
        Op::Conv2dInt,
        &ops,
        attrs(&[("pads", ints(&pads)), ("strides", ints(&[st, st]))]),
        ElemType::I32,
    );
    let y = requant(&mut b, &mut r, y, requant_kind, m, 1);
    b.output(y);
    check_tiers(&b, wt.takes).map_err(TestCaseError::fail)?;
    let host = target_lexicon::Triple::host().to_string();
    for (ti, (cpu, kname, has)) in tiers().into_iter().enumerate() {
        let lanes: usize = if ti == 0 { 8 } else { 16 };
        let fits = ow.is_multiple_of(lanes)
            || (lanes.is_multiple_of(ow) && (oh * ow).is_multiple_of(lanes));
        if !has || !wt.takes[ti] || !fits {
            continue;
        }
        let t = Target::new(&host, cpu).unwrap();
        let jit = costs::without(&OTHERS, || JitModel::with_target(&b.m, &t)).unwrap();
        let kernel = &jit.report().layers[0].kernel;
        prop_assert!(
            !kernel.contains(kname) || kernel.contains(".direct+"),
            "{cpu}: {kernel} is not the direct convolution"
        );
    }
    Ok(())
}

/// A random matrix product (see `matmul_wide`) checked on every tier.
#[allow(clippy::too_many_arguments, reason = "the test's parameters")]
fn matmul_case(
    seed: u64,
    abits: u8,
    wbits: u8,
    asigned: bool,
    bias_kind: usize,
    requant_kind: usize,
    batched: usize,
) -> Result<(), TestCaseError> {
    let mut r = Rng(seed | 1);
    let (m, n) = (r.i(1, 30) as usize, r.i(1, 70) as usize);
    let k = match r.i(0, 3) {
        0 => r.i(1, 20),
        1 => r.i(60, 70),
        2 => r.i(120, 300),
        _ => 513,
    } as usize;
    let bs = if batched == 1 {
        vec![2, k, n]
    } else {
        vec![k, n]
    };
    let asz = match batched {
        0 => vec![m, k],
        _ => vec![2, m, k],
    };
    let mut b = B::new();
    let xe = act_type(&mut r, abits, asigned);
    let ad = codes(&mut r, &xe, asz.iter().product());
    let x = b.input_int(xe, &asz, ad);
    let wt = weights(&mut r, wbits, bs.len() - 1, n, bs.iter().product(), false);
    let y = b.const_int(wt.elem, &bs, wt.codes);
    let mut ops = vec![x, y];
    if let Some(bv) = bias(&mut b, &mut r, bias_kind, n) {
        ops.push(bv);
    }
    let z = b.node(Op::MatMulInt, &ops, attrs(&[]), ElemType::I32);
    let axis = if batched > 0 { 2 } else { 1 };
    let z = requant(&mut b, &mut r, z, requant_kind, n, axis);
    b.output(z);
    check_tiers(&b, wt.takes).map_err(TestCaseError::fail)
}

/// 8-bit weights that fail the pair check in K's natural order but pass it in another:
/// rows 0, 1 of every quad are large (70..100, one sign per channel: two of them
/// saturate `vpmaddubsw` with 8-bit activations), rows 2, 3 small (at most 28). The
/// `vpmaddubsw` tiles (ymm, and the 128-bit one on x86-64-v2) then take the layer with
/// its K rows paired large with small (`kpaired`), exactly; the extreme activations are
/// the case that would saturate.
#[test]
fn eight_bit_weights_paired_along_k() {
    let mut r = Rng(11);
    for (c, m, pads, xfill) in [
        (16, 16, 1, None),
        (16, 24, 1, Some(255)),
        (5, 7, 0, Some(255)),
        (3, 9, 1, None),
    ] {
        let k = c * 9;
        let mut b = B::new();
        let xe = qt(
            8,
            false,
            false,
            QuantParams::PerTensor {
                scale: 0.1,
                zero_point: 3,
            },
        );
        let xd = match xfill {
            Some(v) => vec![v; c * 10 * 10],
            None => codes(&mut r, &xe, c * 10 * 10),
        };
        let x = b.input_int(xe, &[1, c, 10, 10], xd);
        let sign: Vec<i64> = (0..m)
            .map(|_| if r.i(0, 1) == 0 { -1 } else { 1 })
            .collect();
        let wd: Vec<i64> = (0..m * k)
            .map(|i| {
                let (ch, kk) = (i / k, i % k);
                if kk % 4 < 2 {
                    sign[ch] * r.i(70, 100)
                } else {
                    r.i(-28, 28)
                }
            })
            .collect();
        let we = qt(
            8,
            true,
            false,
            QuantParams::PerAxis {
                axis: 0,
                scales: vec![0.01; m],
                zero_points: vec![0; m],
            },
        );
        let w = b.const_int(we, &[m, c, 3, 3], wd);
        let y = b.node(
            Op::Conv2dInt,
            &[x, w],
            attrs(&[("pads", ints(&[pads; 4]))]),
            ElemType::I32,
        );
        let y = requant(&mut b, &mut r, y, 2, m, 1);
        b.output(y);
        check_tiers(&b, [true, true]).unwrap();
        if !(tiers()[0].2) {
            continue;
        }
        let host = target_lexicon::Triple::host().to_string();
        for cpu in ["x86-64-v3", "x86-64-v2"] {
            let t = Target::new(&host, cpu).unwrap();
            let jit = costs::without(&OTHERS[..2], || JitModel::with_target(&b.m, &t)).unwrap();
            let kernel = &jit.report().layers[0].kernel;
            assert!(kernel.contains("kpaired"), "{cpu}: {kernel}");
            assert!(kernel.contains("pmaddubsw"), "{cpu}: {kernel}");
            let want = qcc_ir::interp::run(&b.m, &b.inputs).unwrap();
            assert_eq!(jit.run(&b.inputs).unwrap()[0].data, want[0].data, "{cpu}");
        }
    }
}

/// ResNet-20's first stage: 16 channels, 3x3, K = 144, 32x32 pixels, 8-bit weights
/// anywhere in i8 (the pair check fails, VNNI is still exact), extreme activations.
#[test]
fn resnet_stage_one_eight_bit() {
    stage_one(-128, 127, [true, true]);
}

/// The same layer with weights within +-64: both tiles take it.
#[test]
fn resnet_stage_one_small_weights() {
    stage_one(-64, 64, [true, true]);
}

fn stage_one(lo: i64, hi: i64, takes: [bool; 2]) {
    let mut r = Rng(3);
    for xfill in [None, Some(255), Some(0)] {
        let mut b = B::new();
        let xe = qt(
            8,
            false,
            false,
            QuantParams::PerTensor {
                scale: 0.1,
                zero_point: 7,
            },
        );
        let xd = match xfill {
            Some(v) => vec![v; 16 * 32 * 32],
            None => codes(&mut r, &xe, 16 * 32 * 32),
        };
        let x = b.input_int(xe, &[1, 16, 32, 32], xd);
        let mut wd = r.is(16 * 144, lo, hi);
        wd[0] = lo;
        wd[1] = lo;
        let we = qt(
            8,
            true,
            false,
            QuantParams::PerAxis {
                axis: 0,
                scales: vec![0.01; 16],
                zero_points: vec![0; 16],
            },
        );
        let w = b.const_int(we, &[16, 16, 3, 3], wd);
        let y = b.node(
            Op::Conv2dInt,
            &[x, w],
            attrs(&[("pads", ints(&[1; 4]))]),
            ElemType::I32,
        );
        let y = requant(&mut b, &mut r, y, 2, 16, 1);
        b.output(y);
        check_tiers(&b, takes).unwrap();
    }
}

/// The tiers: which ran, which were skipped (printed); with CI=true every tier the host
/// has must have run its kernel. Runs after the other tests of this file when they
/// share a process (`--test-threads=1` orders them by name; otherwise it counts what
/// ran so far and checks itself).
#[test]
fn zz_tiers_exercised() {
    resnet_stage_one_small_weights();
    let ran = *RAN.lock().unwrap();
    let mut missing = Vec::new();
    let direct = *RAN_DIRECT.lock().unwrap();
    println!("{direct} cases computed a convolution directly");
    if direct == 0 && (tiers()[0].2 || tiers()[1].2) {
        missing.push("a direct convolution");
    }
    if tiers()[0].2 {
        let n = *RAN_I16.lock().unwrap();
        println!("x86-64-v3: {n} cases took vpmaddwd.ymm with i16 weights");
        if n == 0 {
            missing.push("x86-64-v3 (vpmaddwd.ymm, i16 weights)");
        }
    }
    for (ti, (cpu, kname, has)) in tiers().into_iter().enumerate() {
        if has {
            println!("tier {cpu}: exercised ({} cases took {kname})", ran[ti]);
            if ran[ti] == 0 {
                missing.push(cpu);
            }
        } else {
            println!("tier {cpu}: skipped (this CPU does not have it)");
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(
            missing.is_empty(),
            "tiers this CPU has whose kernels did not run: {missing:?}"
        );
    }
}
