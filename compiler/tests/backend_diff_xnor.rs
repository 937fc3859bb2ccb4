//! Differential tests of the assembled wide 1-bit tiles (`kernels::xnor`), for every
//! x86-64 tier the host has: the JIT built for the tier, with the tile forced, must
//! equal the interpreter bit for bit on random binary convolutions and matrix products
//! (K not a multiple of 64 or 512, odd channel counts, strides, pads, dilations,
//! groups, whole-byte channel groups, bias, a fused requantize or threshold, batches).
//!
//! - `x86-64-v3`: the ymm tile (`vpshufb` nibble lookup, `vpsadbw`); every x86-64 host
//!   with AVX2 runs it.
//! - `x86-64-v4+vpopcntdq`: the zmm tile (`vpopcntq`).
//!
//! Each test prints the tiers it exercised and skipped. With `CI=true`, a tier the host
//! has whose kernel never ran is a failure.

mod backend_common;

use std::sync::Mutex;

use backend_common::{B, Rng, attrs, ints};
use proptest::prelude::*;
use qcc::backend::costs::{self, Strategy};
use qcc::backend::{JitModel, Target, Tier};
use qcc_ir::interp;
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType, ValueId};

/// The tiers with a wide 1-bit tile: `--cpu` name, the kernel's name part, the
/// strategies disabled to force it, and whether the host can run it.
#[allow(clippy::type_complexity, reason = "a table")]
fn tiers() -> Vec<(&'static str, &'static str, &'static [Strategy], bool)> {
    const NOT_YMM: &[Strategy] = &[
        Strategy::Xnor,
        Strategy::XnorZmm,
        Strategy::DotVnni,
        Strategy::DotAvx2,
        Strategy::DotAvx2Wide,
    ];
    const NOT_ZMM: &[Strategy] = &[
        Strategy::Xnor,
        Strategy::XnorYmm,
        Strategy::DotVnni,
        Strategy::DotAvx2,
        Strategy::DotAvx2Wide,
    ];
    let h = Tier::host();
    let x86 = cfg!(target_arch = "x86_64");
    vec![
        (
            "x86-64-v3",
            "xnor-popcnt.vpshufb.ymm",
            NOT_YMM,
            x86 && h.avx2(),
        ),
        (
            "x86-64-v4+vpopcntdq",
            "xnor-popcnt.vpopcntq.zmm",
            NOT_ZMM,
            x86 && h.avx512_vpopcntdq(),
        ),
    ]
}

/// Per tier: cases where its tile ran.
static RAN: Mutex<[usize; 2]> = Mutex::new([0; 2]);

fn bits(r: &mut Rng, n: usize) -> Vec<i64> {
    (0..n)
        .map(|_| if r.next() & 1 == 1 { -1 } else { 1 })
        .collect()
}

/// Runs `b` in every tier the host has, its tile forced, and compares with the
/// interpreter; the first layer must take the tile.
fn check_tiers(b: &B) -> Result<(), String> {
    qcc_ir::verify::verify(&b.m).map_err(|e| format!("invalid test module:\n{e}"))?;
    let want = interp::run(&b.m, &b.inputs).map_err(|e| format!("interp: {e}"))?;
    let host = target_lexicon::Triple::host().to_string();
    for (ti, (cpu, kname, disabled, has)) in tiers().into_iter().enumerate() {
        if !has {
            continue;
        }
        let t = Target::new(&host, cpu).map_err(|e| e.to_string())?;
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
        if !kernel.contains(kname) {
            return Err(format!("{cpu}: expected {kname}, got {kernel}"));
        }
        RAN.lock().unwrap()[ti] += 1;
    }
    Ok(())
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

/// An epilogue after `y` (channels along `axis`, `c` of them): 0 none, 1 a per-tensor
/// requantize, 2 per channel, 3 a threshold to b1, 4 a threshold to a few i8 levels, 5
/// a per-channel requantize whose shifted value fits i32 (what the AVX2 tile's in-tile
/// requantize takes).
fn epilogue(b: &mut B, r: &mut Rng, y: ValueId, kind: usize, c: usize, axis: i64) -> ValueId {
    match kind {
        0 => y,
        1 | 2 | 5 => {
            let cnt = if kind == 1 { 1 } else { c };
            let mult: Vec<i64> = (0..cnt).map(|_| r.i(1 << 20, 1 << 30)).collect();
            let lo = if kind == 5 { 30 } else { 24 };
            let shift: Vec<i64> = (0..cnt).map(|_| r.i(lo, 32)).collect();
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
        3 | 4 => {
            let k = if kind == 3 { 1 } else { r.i(1, 4) as usize };
            let rows = if r.i(0, 1) == 0 { 1 } else { c };
            let mut t = Vec::new();
            for _ in 0..rows {
                // Also at the ends of the i32 range (never / always reached).
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
            b.node(
                Op::Threshold,
                &[y, th],
                attrs(&[("axis", Attr::Int(axis)), ("offset", Attr::Int(offset))]),
                out,
            )
        }
        _ => unreachable!("epilogue kind {kind}"),
    }
}

/// A binary convolution with `cg` channels per group.
#[allow(clippy::too_many_arguments, reason = "a test case's shape")]
fn conv_case(
    r: &mut Rng,
    cg: usize,
    group: usize,
    m: usize,
    (h, w): (usize, usize),
    (kh, kw): (usize, usize),
    pads: &[i64],
    (sh, sw): (usize, usize),
    (dh, dw): (usize, usize),
    with_bias: bool,
    epi: usize,
) -> B {
    let n = r.i(1, 2) as usize;
    let c = cg * group;
    let mut b = B::new();
    let xd = bits(r, n * c * h * w);
    let x = b.input_int(ElemType::Bipolar, &[n, c, h, w], xd);
    let wd = bits(r, m * cg * kh * kw);
    let wt = b.const_int(ElemType::Bipolar, &[m, cg, kh, kw], wd);
    let mut ops = vec![x, wt];
    if with_bias {
        let bd = r.is(m, -300, 300);
        ops.push(b.const_int(ElemType::I32, &[m], bd));
    }
    let a = attrs(&[
        ("strides", ints(&[sh as i64, sw as i64])),
        ("pads", ints(pads)),
        ("dilations", ints(&[dh as i64, dw as i64])),
        ("group", Attr::Int(group as i64)),
    ]);
    let y = b.node(Op::Conv2dInt, &ops, a, ElemType::I32);
    let y = epilogue(&mut b, r, y, epi, m, 1);
    b.output(y);
    b
}

proptest! {
    #![proptest_config(backend_common::cfg())]

    /// Byte im2col (any channel count) and channel-packed (whole-byte groups) lowerings.
    #[test]
    fn conv2d_xnor_wide(seed: u64, with_bias: bool, epi in 0usize..6, group in 1usize..3, whole: bool) {
        let mut r = Rng(seed | 1);
        let cg = if whole {
            [8, 16, 32, 64, 128][r.i(0, 4) as usize]
        } else {
            r.i(1, 75) as usize
        };
        let m = r.i(1, 21) as usize * group;
        let (kh, kw) = (r.i(1, 3) as usize, r.i(1, 3) as usize);
        let (sh, sw) = (r.i(1, 2) as usize, r.i(1, 3) as usize);
        let (dh, dw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let pads: Vec<i64> = (0..4).map(|_| r.i(0, 2)).collect();
        let (h, w) = (r.i(1, 12) as usize, r.i(1, 23) as usize);
        let fits = |len: usize, k: usize, d: usize, p0: i64, p1: i64| {
            len as i64 + p0 + p1 >= (d * (k - 1) + 1) as i64
        };
        prop_assume!(fits(h, kh, dh, pads[0], pads[2]) && fits(w, kw, dw, pads[1], pads[3]));
        let b = conv_case(
            &mut r, cg, group, m, (h, w), (kh, kw), &pads, (sh, sw), (dh, dw), with_bias, epi,
        );
        check_tiers(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn matmul_xnor_wide(seed: u64, with_bias: bool, epi in 0usize..5, batched: bool) {
        let mut r = Rng(seed | 1);
        let (m, n) = (r.i(1, 19) as usize, r.i(1, 41) as usize);
        let k = match r.i(0, 4) {
            0 => r.i(1, 20),
            1 => r.i(60, 70),
            2 => r.i(120, 200),
            3 => r.i(500, 530),
            _ => r.i(1980, 2100),
        } as usize;
        let bs = if batched { vec![2, k, n] } else { vec![k, n] };
        let asz = if batched { vec![2, m, k] } else { vec![m, k] };
        let mut b = B::new();
        let ad = bits(&mut r, asz.iter().product());
        let x = b.input_int(ElemType::Bipolar, &asz, ad);
        let bd = bits(&mut r, bs.iter().product());
        let y = b.const_int(ElemType::Bipolar, &bs, bd);
        let mut ops = vec![x, y];
        if with_bias {
            let d = r.is(n, -300, 300);
            ops.push(b.const_int(ElemType::I32, &[n], d));
        }
        let z = b.node(Op::MatMulInt, &ops, attrs(&[]), ElemType::I32);
        let axis = if batched { 2 } else { 1 };
        let z = epilogue(&mut b, &mut r, z, epi, n, axis);
        b.output(z);
        check_tiers(&b).map_err(TestCaseError::fail)?;
    }
}

/// Long K (several folds of the ymm tile's byte counters; many panels and row tiles):
/// Bi-Real's last stage, 512 channels, 3x3, 7x7, pad 1, and without padding.
#[test]
fn long_k_convolutions() {
    let mut r = Rng(77);
    for (cg, m, hw, pad) in [(512, 37, 7, 1), (200, 19, 9, 0), (64, 64, 14, 1)] {
        let b = conv_case(
            &mut r,
            cg,
            1,
            m,
            (hw, hw),
            (3, 3),
            &[pad; 4],
            (1, 1),
            (1, 1),
            true,
            1,
        );
        check_tiers(&b).unwrap();
    }
}

/// A convolution with a per-channel requantize takes the in-tile requantize on both
/// tiers, one with a threshold the in-tile threshold (the assembled functions' names
/// say so).
#[test]
fn in_tile_epilogues() {
    let mut r = Rng(5);
    // (epilogue kind, name part of the zmm tile, of the ymm tile)
    for (epi, zmm, ymm) in [
        (5, "_rqhalf", Some("_rqhalf")),
        (3, "_th1_b-1_i2", Some("_th1_b-1_i2")),
        (4, "_th", Some("_th")),
    ] {
        let b = conv_case(
            &mut r,
            24,
            1,
            20,
            (9, 11),
            (3, 3),
            &[1; 4],
            (1, 1),
            (1, 1),
            true,
            epi,
        );
        check_tiers(&b).unwrap();
        let host = target_lexicon::Triple::host().to_string();
        for (cpu, isa, disabled, part) in [
            (
                "x86-64-v4+vpopcntdq",
                "xnor_zmm",
                [Strategy::Xnor, Strategy::XnorYmm],
                Some(zmm),
            ),
            (
                "x86-64-v3",
                "xnor_ymm",
                [Strategy::Xnor, Strategy::XnorZmm],
                ymm,
            ),
        ] {
            let t = Target::new(&host, cpu).unwrap();
            let asm = costs::without(&disabled, || qcc::backend::emit_asm(&b.m, "t", &t)).unwrap();
            assert!(asm.contains(isa), "{cpu}");
            match part {
                Some(p) => assert!(asm.contains(p), "{cpu}: {p}"),
                None => assert!(!asm.contains("_rq") && !asm.contains("_th"), "{cpu}"),
            }
        }
    }
}

/// The tiers: which ran, which were skipped (printed); with CI=true every tier the host
/// has must have run its tile.
#[test]
fn zz_tiers_exercised() {
    long_k_convolutions();
    let ran = *RAN.lock().unwrap();
    let mut missing = Vec::new();
    for (ti, (cpu, kname, _, has)) in tiers().into_iter().enumerate() {
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
