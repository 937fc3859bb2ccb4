//! Differential tests of the assembled f32 tiles (`kernels::fma`), for every x86-64
//! tier the host has: the JIT built for the tier must agree with the interpreter within
//! the float tolerance (`backend_common::TOL`; Winograd's, scaled by the magnitude of
//! the summed terms, as in `backend_diff_float.rs`) on random convolutions: small and
//! odd M (output channels), N (pixels) and K (channels x taps), groups, strides, pads,
//! dilations, bias, a fused ReLU, clip or SiLU (in the zmm tile's epilogue, or a
//! 128-bit pass over the result), and Winograd's batched GEMMs; `gemm` and
//! batched `matmul` with constant B (A read in place in either order, a per-column C).
//!
//! - `x86-64-v2`: the 128-bit Cranelift kernel (`kernels/fma/gemm.rs`), the reference point.
//! - `x86-64-v3`: the ymm `vfmadd231ps` tile (AVX2 + FMA).
//! - `x86-64-v4+vnni`: the zmm `vfmadd231ps` tile (the v4 row set is the VNNI one).
//!
//! Each test prints the tiers it exercised and skipped. With `CI=true`, a tier the host
//! has whose tile never ran is a failure.

mod backend_common;

use std::sync::Mutex;

use backend_common::{B, Rng, TOL, attrs, ints};
use proptest::prelude::*;
use qcc::backend::{JitModel, Target, Tier, compile_object};
use qcc_ir::interp::{self, TensorData};
use qcc_ir::{Attr, Op};

/// `--cpu` name, the kernel's name part (None: the 128-bit kernel), whether the host
/// can run it.
fn tiers() -> Vec<(&'static str, Option<&'static str>, bool)> {
    let h = Tier::host();
    let x86 = cfg!(target_arch = "x86_64");
    vec![
        ("x86-64-v2", None, x86 && h.level >= 2),
        ("x86-64-v3", Some("vfmadd231ps.ymm"), x86 && h.avx2()),
        (
            "x86-64-v4+vnni",
            Some("vfmadd231ps.zmm"),
            x86 && h.avx512_vnni(),
        ),
    ]
}

/// Per tier: cases where its wide tile ran.
static RAN: Mutex<[usize; 3]> = Mutex::new([0; 3]);

/// See `backend_diff_float.rs`.
// 4e-6 was exceeded once (conv2d_winograd at 300 cases: |error| 1.9e-4 against a
// tolerance of 1.87e-4); F(4x4, 3x3) scales partial sums by up to 8 in both transforms.
const WINOGRAD_REL: f32 = 8e-6;

/// Runs `b` in every tier the host has and compares with the interpreter; `babs`: the
/// same model on |x| and |w| (the Winograd tolerance), if Winograd may run.
fn check_tiers(b: &B, babs: Option<&B>) -> Result<(), String> {
    qcc_ir::verify::verify(&b.m).map_err(|e| format!("invalid test module:\n{e}"))?;
    let want = interp::run(&b.m, &b.inputs).map_err(|e| format!("interp: {e}"))?;
    let mag = match babs {
        Some(a) => Some(interp::run(&a.m, &a.inputs).map_err(|e| format!("interp: {e}"))?),
        None => None,
    };
    let host = target_lexicon::Triple::host().to_string();
    for (ti, (cpu, kname, has)) in tiers().into_iter().enumerate() {
        if !has {
            continue;
        }
        let t = Target::new(&host, cpu).map_err(|e| e.to_string())?;
        let jit = JitModel::with_target(&b.m, &t).map_err(|e| format!("{cpu}: compile: {e}"))?;
        let got = jit.run(&b.inputs).map_err(|e| format!("{cpu}: run: {e}"))?;
        let report = jit.report().to_string();
        for (k, (w, g)) in want.iter().zip(&got).enumerate() {
            let (TensorData::F32(w), TensorData::F32(g)) = (&w.data, &g.data) else {
                return Err("f32 outputs expected".into());
            };
            if w.len() != g.len() {
                return Err(format!(
                    "{cpu}: output {k} has {} values, not {}",
                    g.len(),
                    w.len()
                ));
            }
            for i in 0..w.len() {
                let s = match &mag {
                    Some(m) => match &m[k].data {
                        TensorData::F32(s) => s[i],
                        _ => 0.0,
                    },
                    None => 0.0,
                };
                let tol = TOL * (1.0 + w[i].abs()) + WINOGRAD_REL * s;
                let ok =
                    (w[i].is_nan() && g[i].is_nan()) || w[i] == g[i] || (w[i] - g[i]).abs() <= tol;
                if !ok {
                    return Err(format!(
                        "{cpu}: output {k}[{i}]: interp {}, jit {}\nmodule:\n{}\nreport:\n{report}",
                        w[i], g[i], b.m
                    ));
                }
            }
        }
        if let Some(kn) = kname
            && report.contains(kn)
        {
            RAN.lock().unwrap()[ti] += 1;
        }
    }
    Ok(())
}

fn conv_attrs(
    s: [usize; 2],
    pads: &[i64],
    d: [usize; 2],
    group: usize,
) -> std::collections::BTreeMap<String, Attr> {
    attrs(&[
        ("strides", ints(&[s[0] as i64, s[1] as i64])),
        ("pads", ints(pads)),
        ("dilations", ints(&[d[0] as i64, d[1] as i64])),
        ("group", Attr::Int(group as i64)),
    ])
}

/// A convolution `x [n, c, h, w] * w [m, c / group, kh, kw]` (+ bias, + fused ReLU,
/// clip or SiLU), and its magnitude model when `mag`.
#[allow(clippy::too_many_arguments)]
fn conv_model(
    r: &mut Rng,
    n: usize,
    c: usize,
    m: usize,
    hw: [usize; 2],
    k: [usize; 2],
    a: std::collections::BTreeMap<String, Attr>,
    group: usize,
    with_bias: bool,
    fuse: usize,
) -> (B, B) {
    let [h, w] = hw;
    let cg = c / group;
    let xs = r.fs(n * c * h * w, -2.0, 2.0);
    let ws = r.fs(m * cg * k[0] * k[1], -1.0, 1.0);
    let mut babs = B::new();
    let xa = babs.input_f32(&[n, c, h, w], xs.iter().map(|v| v.abs()).collect());
    let wa = babs.const_f32(&[m, cg, k[0], k[1]], ws.iter().map(|v| v.abs()).collect());
    let ya = babs.f(Op::Conv2d, &[xa, wa], a.clone());
    babs.output(ya);
    let mut b = B::new();
    let x = b.input_f32(&[n, c, h, w], xs);
    let wt = b.const_f32(&[m, cg, k[0], k[1]], ws);
    let mut ops = vec![x, wt];
    if with_bias {
        ops.push(b.const_f32(&[m], r.fs(m, -1.0, 1.0)));
    }
    let mut y = b.f(Op::Conv2d, &ops, a);
    y = match fuse {
        1 => b.f(Op::Relu, &[y], attrs(&[])),
        2 => b.f(
            Op::Clip,
            &[y],
            attrs(&[("min", Attr::Float(-0.5)), ("max", Attr::Float(0.7))]),
        ),
        3 => b.f(Op::Silu, &[y], attrs(&[])),
        _ => y,
    };
    b.output(y);
    (b, babs)
}

proptest! {
    #![proptest_config(backend_common::cfg())]

    /// im2col convolutions of any geometry (small and odd channel and pixel counts).
    #[test]
    fn conv2d_fwide(seed: u64, fuse in 0usize..4, with_bias: bool, grouped: bool) {
        let mut r = Rng(seed | 1);
        let n = r.i(1, 2) as usize;
        let group = if grouped { r.i(1, 4) as usize } else { 1 };
        let cg = r.i(1, 12) as usize;
        let mg = r.i(1, 40) as usize;
        let (c, m) = (cg * group, mg * group);
        let (kh, kw) = (r.i(1, 3) as usize, r.i(1, 3) as usize);
        let (sh, sw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let (dh, dw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let pads: Vec<i64> = (0..4).map(|_| r.i(0, 2)).collect();
        let (h, w) = (r.i(1, 14) as usize, r.i(1, 40) as usize);
        let fits = |len: usize, k: usize, d: usize, p0: i64, p1: i64| len as i64 + p0 + p1 >= (d * (k - 1) + 1) as i64;
        prop_assume!(fits(h, kh, dh, pads[0], pads[2]) && fits(w, kw, dw, pads[1], pads[3]));
        let a = conv_attrs([sh, sw], &pads, [dh, dw], group);
        let (b, babs) = conv_model(&mut r, n, c, m, [h, w], [kh, kw], a, group, with_bias, fuse);
        check_tiers(&b, Some(&babs)).map_err(TestCaseError::fail)?;
    }

    /// Pointwise convolutions as plain GEMMs: M = output channels, N = pixels,
    /// K = channels, each from 1 to a few hundred (odd sizes, partial vectors).
    #[test]
    fn pointwise_gemm_fwide(seed: u64, fuse in 0usize..4, with_bias: bool) {
        let mut r = Rng(seed | 1);
        let m = match r.i(0, 2) { 0 => r.i(1, 7), 1 => r.i(8, 40), _ => r.i(41, 130) } as usize;
        // Past 512, K is split into blocks (the tiles accumulate into C).
        let k = match r.i(0, 3) { 0 => r.i(1, 5), 1 => r.i(6, 70), 2 => r.i(100, 300), _ => r.i(513, 1100) } as usize;
        let (h, w) = (r.i(1, 9) as usize, r.i(1, 40) as usize);
        let a = conv_attrs([1, 1], &[0; 4], [1, 1], 1);
        let (b, _) = conv_model(&mut r, 1, k, m, [h, w], [1, 1], a, 1, with_bias, fuse);
        check_tiers(&b, None).map_err(TestCaseError::fail)?;
    }

    /// 3x3 stride-1 convolutions of the sizes Winograd takes: its per-position GEMMs
    /// run on the wide tile when the tiles fill whole vectors.
    #[test]
    fn winograd_fwide(seed: u64, fuse in 0usize..4, with_bias: bool) {
        let mut r = Rng(seed | 1);
        let n = r.i(1, 2) as usize;
        let (c, m) = (r.i(4, 40) as usize, r.i(4, 40) as usize);
        let pads: Vec<i64> = (0..4).map(|_| r.i(0, 2)).collect();
        let oh = 2 * r.i(1, 10) as usize;
        let ow = 8 * r.i(1, 4) as usize;
        prop_assume!((oh / 2 * (ow / 2)).is_multiple_of(8));
        let h = oh as i64 + 2 - pads[0] - pads[2];
        let w = ow as i64 + 2 - pads[1] - pads[3];
        prop_assume!(h >= 1 && w >= 1);
        let a = conv_attrs([1, 1], &pads, [1, 1], 1);
        let (b, babs) = conv_model(&mut r, n, c, m, [h as usize, w as usize], [3, 3], a, 1, with_bias, fuse);
        check_tiers(&b, Some(&babs)).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(backend_common::cfg())]

    /// `gemm` with constant B (either order), A in either order, odd M, N, K; C: none,
    /// per column (constant: the tile adds it), or kinds the 128-bit kernel keeps
    /// (per row, full, scalar, run-time, alpha or beta not 1).
    #[test]
    fn gemm_fwide(seed: u64, ta: bool, tb: bool, with_c in 0usize..6, fuse in 0usize..3, scaled: bool) {
        let mut r = Rng(seed | 1);
        let m = match r.i(0, 2) { 0 => r.i(1, 5), 1 => r.i(6, 40), _ => r.i(41, 100) } as usize;
        let n = match r.i(0, 2) { 0 => r.i(1, 9), 1 => r.i(10, 40), _ => r.i(41, 130) } as usize;
        let k = match r.i(0, 3) { 0 => r.i(1, 5), 1 => r.i(6, 70), 2 => r.i(100, 260), _ => r.i(513, 1100) } as usize;
        let mut b = B::new();
        let sa = if ta { [k, m] } else { [m, k] };
        let sb = if tb { [n, k] } else { [k, n] };
        let x = b.input_f32(&sa, r.fs(m * k, -1.0, 1.0));
        let y = b.const_f32(&sb, r.fs(n * k, -1.0, 1.0));
        let mut ops = vec![x, y];
        let cs: Option<Vec<usize>> = match with_c {
            1 | 5 => Some(vec![n]),
            2 => Some(vec![1, n]),
            3 => Some(vec![m, 1]),
            4 => Some(vec![m, n]),
            _ => None,
        };
        if let Some(cs) = &cs {
            let d = r.fs(cs.iter().product(), -1.0, 1.0);
            ops.push(if with_c == 5 { b.input_f32(cs, d) } else { b.const_f32(cs, d) });
        }
        let (alpha, beta) = if scaled { (r.f(-2.0, 2.0), r.f(-2.0, 2.0)) } else { (1.0, 1.0) };
        let a = attrs(&[
            ("trans_a", Attr::Bool(ta)), ("trans_b", Attr::Bool(tb)),
            ("alpha", Attr::Float(alpha)), ("beta", Attr::Float(beta)),
        ]);
        let mut z = b.f(Op::Gemm, &ops, a);
        z = match fuse {
            1 => b.f(Op::Relu, &[z], attrs(&[])),
            2 => b.f(Op::Clip, &[z], attrs(&[("min", Attr::Float(-0.5)), ("max", Attr::Float(0.7))])),
            _ => z,
        };
        b.output(z);
        check_tiers(&b, None).map_err(TestCaseError::fail)?;
    }

    /// Batched `matmul` with constant B (broadcast batches, a vector B).
    #[test]
    fn matmul_fwide(seed: u64, ra in 1usize..4, rb in 1usize..4) {
        let mut r = Rng(seed | 1);
        let (m, n, k) = (r.i(1, 20) as usize, r.i(1, 40) as usize, r.i(1, 70) as usize);
        let batch = [r.i(1, 3) as usize, r.i(1, 2) as usize];
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
        let y = b.const_f32(&sb, r.fs(sb.iter().product(), -1.0, 1.0));
        let z = b.f(Op::MatMul, &[x, y], attrs(&[]));
        b.output(z);
        check_tiers(&b, None).map_err(TestCaseError::fail)?;
    }
}

/// ResNet-20's layer shapes: Winograd F(4x4) at 32x32 and 16x16, F(2x2) at 8x8, the
/// stride-2 im2col and 1x1 shortcut convolutions.
#[test]
fn resnet20_shapes() {
    let mut r = Rng(20);
    for (c, m, hw, k, s, pad) in [
        (16, 16, 32, 3, 1, 1),
        (32, 32, 16, 3, 1, 1),
        (64, 64, 8, 3, 1, 1),
        (16, 32, 32, 3, 2, 1),
        (16, 32, 32, 1, 2, 0),
        (3, 16, 32, 3, 1, 1),
    ] {
        let a = conv_attrs([s, s], &[pad; 4], [1, 1], 1);
        let (b, babs) = conv_model(&mut r, 1, c, m, [hw, hw], [k, k], a, 1, true, 1);
        check_tiers(&b, Some(&babs)).unwrap();
    }
}

/// A fused SiLU on values that trip its clamps and special cases (signed zeros, the
/// ends of the clamp at -80 and 88, huge values, infinities, NaN) and a sweep: a
/// pointwise conv of one input channel with weights 1 (the conv is exact), then `silu`, on
/// every tier (the zmm tile's epilogue on x86-64-v4, the 128-bit pass below), at odd
/// pixel counts (masked last vectors); and after a depthwise conv (the zmm SiLU loop
/// on x86-64-v4).
#[test]
fn silu_on_hard_values() {
    let mut xs = vec![
        0.0,
        -0.0,
        1e-40,
        -1e-40,
        0.5,
        -1.278,
        -79.9,
        -80.0,
        -80.1,
        -87.0,
        -88.8,
        -104.0,
        -1e10,
        f32::MIN,
        f32::NEG_INFINITY,
        16.0,
        17.0,
        87.9,
        88.0,
        88.1,
        1e10,
        f32::MAX,
        f32::INFINITY,
        f32::NAN,
    ];
    xs.extend((0..1999).map(|i| (i as f32 - 1000.0) * 0.0137));
    let n = xs.len();
    // Depthwise (two channels of weight 1): the zmm SiLU loop after the conv.
    let mut d = B::new();
    let mut xs2 = xs.clone();
    xs2.extend(xs.iter().rev());
    let x = d.input_f32(&[1, 2, 1, n], xs2);
    let w = d.const_f32(&[2, 1, 1, 1], vec![1.0; 2]);
    let y = d.f(Op::Conv2d, &[x, w], conv_attrs([1, 1], &[0; 4], [1, 1], 2));
    let z = d.f(Op::Silu, &[y], attrs(&[]));
    d.output(z);
    check_tiers(&d, None).unwrap();
    if Tier::host().avx512_vnni() {
        let t = Target::new("x86_64-unknown-linux-gnu", "x86-64-v4+vnni").unwrap();
        let asm = qcc::backend::emit_asm(&d.m, "fd", &t).unwrap();
        assert!(asm.contains("silu_zmm"), "no zmm SiLU loop");
    }
    let mut b = B::new();
    let x = b.input_f32(&[1, 1, 1, n], xs);
    // 16 channels of weight 1: enough work for the wide tiles.
    let w = b.const_f32(&[16, 1, 1, 1], vec![1.0; 16]);
    let a = conv_attrs([1, 1], &[0; 4], [1, 1], 1);
    let y = b.f(Op::Conv2d, &[x, w], a);
    let z = b.f(Op::Silu, &[y], attrs(&[]));
    b.output(z);
    check_tiers(&b, None).unwrap();
    if Tier::host().avx512_vnni() {
        let t = Target::new("x86_64-unknown-linux-gnu", "x86-64-v4+vnni").unwrap();
        let jit = JitModel::with_target(&b.m, &t).unwrap();
        assert!(
            jit.report().to_string().contains("zmm.f32+silu"),
            "{}",
            jit.report()
        );
        let asm = qcc::backend::emit_asm(&b.m, "fs", &t).unwrap();
        assert!(asm.contains("vscalefps"), "no zmm SiLU in the tile");
    }
}

/// Pointwise convolutions whose pixels fill whole vectors (the tiles read the input
/// in place, rows of one or more vectors, K split into blocks past 512) and whose
/// pixels do not (packed), with each fused activation.
#[test]
fn pointwise_in_place_shapes() {
    let mut r = Rng(11);
    for (c, m, h, w) in [
        (600, 24, 8, 8),
        (20, 7, 4, 4),
        (33, 40, 2, 24),
        (64, 16, 5, 5),
        (1100, 9, 4, 8),
    ] {
        for fuse in 0..4 {
            let a = conv_attrs([1, 1], &[0; 4], [1, 1], 1);
            let (b, _) = conv_model(&mut r, 1, c, m, [h, w], [1, 1], a, 1, fuse % 2 == 0, fuse);
            check_tiers(&b, None).unwrap();
        }
    }
}

/// `gemm` reading A in place with rows a multiple of 4 KB apart (K = 1024, 2048): the
/// tiles take at most 6 such rows (one L1 set), M not a multiple of the tile's rows.
#[test]
fn gemm_rows_4k_apart() {
    let mut r = Rng(4096);
    for (m, n, k) in [(40, 33, 1024), (13, 70, 2048), (7, 16, 1024)] {
        let mut b = B::new();
        let x = b.input_f32(&[m, k], r.fs(m * k, -1.0, 1.0));
        let y = b.const_f32(&[k, n], r.fs(n * k, -1.0, 1.0));
        let z = b.f(Op::Gemm, &[x, y], attrs(&[]));
        b.output(z);
        check_tiers(&b, None).unwrap();
    }
}

/// The same model and flags give byte-identical objects; the tile is in the code.
#[test]
fn fwide_objects_are_deterministic() {
    let mut r = Rng(7);
    let a = conv_attrs([1, 1], &[1; 4], [1, 1], 1);
    let (b, _) = conv_model(&mut r, 1, 16, 16, [16, 16], [3, 3], a, 1, true, 1);
    for (cpu, want) in [
        ("x86-64-v3", "vfmadd231ps ymm"),
        ("x86-64-v4+vnni", "vfmadd231ps zmm"),
    ] {
        let t = Target::new("x86_64-unknown-linux-gnu", cpu).unwrap();
        let o1 = compile_object(&b.m, "fw", &t).unwrap();
        let o2 = compile_object(&b.m, "fw", &t).unwrap();
        assert_eq!(o1.object, o2.object, "{cpu}");
        assert_eq!(o1.header, o2.header, "{cpu}");
        let asm = qcc::backend::emit_asm(&b.m, "fw", &t).unwrap();
        assert!(asm.contains(want), "{cpu}: no {want}");
        assert!(
            o1.report.layers.iter().any(|l| l.tier.is_some()),
            "{}",
            o1.report
        );
    }
}

/// The tiers: which ran, which were skipped (printed); with CI=true every tier the host
/// has must have run its tile.
#[test]
fn zz_tiers_exercised() {
    resnet20_shapes();
    let ran = *RAN.lock().unwrap();
    let mut missing = Vec::new();
    for (ti, (cpu, kname, has)) in tiers().into_iter().enumerate() {
        let Some(kname) = kname else {
            println!(
                "tier {cpu}: {} (the 128-bit kernel)",
                if has { "exercised" } else { "skipped" }
            );
            continue;
        };
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
            "tiers this CPU has whose tiles did not run: {missing:?}"
        );
    }
}

const MAIN_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include "fw.h"

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 3;
    size_t n = fw_input_size(0);
    float *x = malloc(n * sizeof(float));
    if (fread(x, sizeof(float), n, f) != n) return 4;
    fclose(f);
    size_t m = fw_output_size(0);
    float *y = malloc(m * sizeof(float));
    void *scratch = aligned_alloc(64, (fw_scratch_size() + 63) / 64 * 64 + 64);
    const float *ins[1] = {x};
    float *outs[1] = {y};
    int rc = fw_run(ins, outs, scratch);
    if (rc != 0) return 10 + rc;
    for (size_t i = 0; i < m; i++) printf("%.9g\n", y[i]);
    return 0;
}
"#;

/// Objects with the f32 tiles (a Winograd convolution, then a strided im2col one and a
/// pointwise one with partial vectors) linked with `cc` and run where the host has the
/// tier: within the tolerance of the interpreter.
#[test]
fn fwide_objects_link_and_match_the_interpreter() {
    use std::process::Command;
    if !cfg!(target_arch = "x86_64") || Command::new("cc").arg("--version").output().is_err() {
        eprintln!("skipped: not x86-64 or no C compiler `cc`");
        return;
    }
    let mut r = Rng(11);
    let mut b = B::new();
    let x = b.input_f32(&[1, 8, 16, 16], r.fs(8 * 256, -1.0, 1.0));
    let w1 = b.const_f32(&[24, 8, 3, 3], r.fs(24 * 72, -0.5, 0.5));
    let b1 = b.const_f32(&[24], r.fs(24, -0.5, 0.5));
    let y = b.f(
        Op::Conv2d,
        &[x, w1, b1],
        conv_attrs([1, 1], &[1; 4], [1, 1], 1),
    );
    let y = b.f(Op::Relu, &[y], attrs(&[]));
    let w2 = b.const_f32(&[19, 24, 3, 3], r.fs(19 * 216, -0.3, 0.3));
    let y = b.f(Op::Conv2d, &[y, w2], conv_attrs([2, 2], &[1; 4], [1, 1], 1));
    let w3 = b.const_f32(&[5, 19, 1, 1], r.fs(5 * 19, -0.5, 0.5));
    let b3 = b.const_f32(&[5], r.fs(5, -0.5, 0.5));
    let y = b.f(
        Op::Conv2d,
        &[y, w3, b3],
        conv_attrs([1, 1], &[0; 4], [1, 1], 1),
    );
    b.output(y);
    let want = interp::run(&b.m, &b.inputs).unwrap();
    let want = want[0].as_f32().unwrap().to_vec();
    let dir = std::env::temp_dir().join(format!("qcc-fwide-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let xs = b.inputs[0].as_f32().unwrap();
    let bytes: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("x.bin"), bytes).unwrap();
    std::fs::write(dir.join("main.c"), MAIN_C).unwrap();
    let host = Tier::host();
    for cpu in ["x86-64-v3", "x86-64-v4+vnni"] {
        let t = Target::new("x86_64-unknown-linux-gnu", cpu).unwrap();
        if !t.tier().unwrap().unwrap().within(host) {
            println!("tier {cpu}: skipped (this CPU does not have it)");
            continue;
        }
        let c = compile_object(&b.m, "fw", &t).unwrap();
        assert_eq!(
            c.report.layers.iter().filter(|l| l.tier.is_some()).count(),
            3,
            "{}",
            c.report
        );
        std::fs::write(dir.join("fw.o"), &c.object).unwrap();
        std::fs::write(dir.join("fw.h"), &c.header).unwrap();
        let st = Command::new("cc")
            .current_dir(&dir)
            .args([
                "-std=c11", "-Wall", "-Werror", "-o", "app", "main.c", "fw.o",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "link failed");
        let out = Command::new(dir.join("app"))
            .arg(dir.join("x.bin"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{cpu}: app failed: {:?}", out.status);
        let got: Vec<f32> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(got.len(), want.len());
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert!(
                (w - g).abs() <= 1e-3 * (1.0 + w.abs()),
                "{cpu}: [{i}] {w} vs {g}"
            );
        }
        println!("tier {cpu}: linked, ran, matches the interpreter");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
