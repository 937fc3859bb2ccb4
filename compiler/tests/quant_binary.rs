//! Post-training binarization (`--bits 1`, issue 6) of the committed float digits models:
//! calibrate, binarize the middle layers (weights `sign(w)` with per-channel `mean |w|`,
//! inputs `sign(x - t)` with a per-tensor scale), fit them per channel to the float
//! results (`refine_binary`), fuse with `rewrite`, and check that
//! every middle convolution runs in the XNOR-popcount kernel, that the JIT reproduces
//! the interpreter on the quantized module exactly, and report the top-1 accuracy on
//! the 360-image test split (a model not trained for binarization loses much of it).

mod cli_common;

use std::path::PathBuf;

use cli_common::qcc;
use qcc::backend::JitModel;
use qcc::frontend::onnx::{ImportOptions, import_file};
use qcc::passes::{Pipeline, cleanup};
use qcc::quant::{
    CalibOptions, QuantOptions, calibrate, float_kernels, quantize_model, refine_binary,
};
use qcc_ir::interp::{Tensor, run};
use qcc_ir::{ElemType, Module, Op};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/models")
}

fn float_module(name: &str) -> Module {
    let mut m = import_file(&models_dir().join(name), &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .module;
    cleanup::pipeline()
        .run(&mut m, &mut |_| {})
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    m
}

/// The test split: samples as [1, 1, 8, 8] tensors and labels.
fn test_set() -> (Vec<Tensor>, Vec<i64>) {
    let mut npz = npyz::npz::NpzArchive::open(models_dir().join("digits_test.npz")).unwrap();
    let x = npz.by_name("x").unwrap().unwrap();
    let shape: Vec<usize> = x.shape().iter().map(|&d| d as usize).collect();
    let per: usize = shape[1..].iter().product();
    let data: Vec<f32> = x.into_vec().unwrap();
    let xs = data
        .chunks(per)
        .map(|c| Tensor::f32(vec![1, 1, 8, 8], c.to_vec()))
        .collect();
    let ys: Vec<i64> = npz.by_name("y").unwrap().unwrap().into_vec().unwrap();
    (xs, ys)
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn accuracy(l: &[Vec<f32>], ys: &[i64]) -> f64 {
    let right = l
        .iter()
        .zip(ys)
        .filter(|(l, y)| argmax(l) as i64 == **y)
        .count();
    100.0 * right as f64 / ys.len() as f64
}

/// Binarizes `name` (edges at 8 bits), checks the kernels and the JIT against the
/// interpreter; returns (float accuracy, binarized accuracy, binarized layers).
fn check(name: &str) -> (f64, f64, usize) {
    let m = float_module(name);
    let copts = CalibOptions {
        limit: Some(200),
        ..Default::default()
    };
    let train = models_dir().join("digits_train.npz");
    let stats = calibrate(&m, &train, &copts).unwrap();
    let (mut q, mut report) = quantize_model(&m, &stats, &QuantOptions::bits(1))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let refined = refine_binary(&m, &mut q, &mut report, &train, Some(200))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(refined, report.layers.len() - 2, "{name}");
    let nk = report.layers.len();
    for (i, l) in report.layers.iter().enumerate() {
        let edge = i == 0 || i + 1 == nk;
        assert_eq!(l.edge, edge, "{name}: {}", l.name);
        let bits = if edge { 8 } else { 1 };
        assert_eq!((l.wbits, l.abits), (bits, bits), "{name}: {}", l.name);
    }
    let mut p = Pipeline::from_names("test", &["rewrite", "dce"]).unwrap();
    p.verify_each = true;
    p.run(&mut q, &mut |_| {})
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let left = float_kernels(&q);
    assert!(left.is_empty(), "{name}: float kernels left: {left:?}\n{q}");
    // No float binarization is left: the inputs of the binary layers are thresholds on
    // the 8-bit codes.
    for n in &q.nodes {
        if n.op == Op::Binarize {
            assert_ne!(
                q.ty(n.operands[0]).elem,
                ElemType::F32,
                "{name}: a float binarize is left:\n{q}"
            );
        }
    }

    let jit = JitModel::new(&q).unwrap_or_else(|e| panic!("{name}: {e}"));
    let kernels: Vec<_> = jit
        .report()
        .layers
        .iter()
        .filter(|l| l.op.starts_with("conv2d") || l.op.starts_with("matmul"))
        // `int-pool`'s global average pool: a depthwise conv2d_int with u1 ones.
        .filter(|l| l.inputs.get(1).is_none_or(|w| w != "u1"))
        .map(|l| {
            // XNOR-popcount, or a wide u8 x i8 tile on bipolar operands where the cost
            // table prefers it on this CPU.
            let binary = l.kernel.contains("xnor")
                || (l.tier.is_some() && l.inputs.iter().take(2).all(|i| i == "b1"));
            (l.op.clone(), l.kernel.clone(), binary)
        })
        .collect();
    assert_eq!(kernels.len(), nk, "{name}: {kernels:?}");
    for (i, (op, kernel, binary)) in kernels.iter().enumerate() {
        assert!(op.contains("_int"), "{name}: layer {i} is {op}");
        let middle = i > 0 && i + 1 < nk;
        assert_eq!(*binary, middle, "{name}: layer {i} ({op}) runs in {kernel}");
    }

    let (xs, ys) = test_set();
    let logits = |f: &dyn Fn(&Tensor) -> Vec<f32>| xs.iter().map(f).collect::<Vec<_>>();
    let lf = logits(&|x| {
        run(&m, std::slice::from_ref(x)).unwrap()[0]
            .as_f32()
            .unwrap()
            .to_vec()
    });
    let li = logits(&|x| {
        run(&q, std::slice::from_ref(x)).unwrap()[0]
            .as_f32()
            .unwrap()
            .to_vec()
    });
    let lj = logits(&|x| {
        jit.run(std::slice::from_ref(x)).unwrap()[0]
            .as_f32()
            .unwrap()
            .to_vec()
    });
    let diff = li
        .iter()
        .flatten()
        .zip(lj.iter().flatten())
        .fold(0f32, |d, (a, b)| d.max((a - b).abs()));
    assert_eq!(diff, 0.0, "{name}: JIT and interpreter differ by {diff}");
    let (af, ab) = (accuracy(&lf, &ys), accuracy(&li, &ys));
    eprintln!(
        "{name} binarized ({} of {nk} layers at 1 bit): float {af:.2}%, binarized {ab:.2}%\n{report}",
        nk - 2
    );
    (af, ab, nk - 2)
}

#[test]
fn digits_cnn_binarized() {
    let (af, ab, n) = check("digits_cnn_folded.onnx");
    assert!(n >= 1);
    assert!(af > 95.0);
    // Post-training binarization of a float model keeps well above chance (10%):
    // 68.1% when written (200 calibration samples).
    assert!(ab > 60.0, "binarized accuracy {ab:.2}%");
}

#[test]
fn digits_resnet_binarized() {
    let (_, ab, n) = check("digits_resnet_folded.onnx");
    assert!(n >= 2);
    // 45.8% when written (200 calibration samples; chance is 10%).
    assert!(ab > 40.0, "binarized accuracy {ab:.2}%");
}

/// 1-bit weights under 8-bit activations (`--wbits 1 --abits 8`): the middle layers'
/// weights are `sign(w)` times a per-channel scale, their inputs stay 8-bit codes, so
/// they run in the u8 x i8 kernels (not XNOR); the JIT reproduces the interpreter on the
/// quantized module, and the weight-only binarization keeps far more accuracy than
/// binarizing activations too.
#[test]
fn one_bit_weights_with_eight_bit_activations() {
    let name = "digits_resnet_folded.onnx";
    let m = float_module(name);
    let train = models_dir().join("digits_train.npz");
    let copts = CalibOptions {
        limit: Some(200),
        ..Default::default()
    };
    let stats = calibrate(&m, &train, &copts).unwrap();
    let opts = QuantOptions {
        wbits: 1,
        abits: 8,
        ..Default::default()
    };
    opts.check().unwrap();
    let (mut q, mut report) = quantize_model(&m, &stats, &opts).unwrap();
    let nk = report.layers.len();
    for (i, l) in report.layers.iter().enumerate() {
        let w = if i == 0 || i + 1 == nk { 8 } else { 1 };
        assert_eq!((l.wbits, l.abits), (w, 8), "{}", l.name);
    }
    let refined = refine_binary(&m, &mut q, &mut report, &train, Some(200)).unwrap();
    assert_eq!(refined, nk - 2);
    Pipeline::from_names("test", &["rewrite", "dce"])
        .unwrap()
        .run(&mut q, &mut |_| {})
        .unwrap();
    let left = float_kernels(&q);
    assert!(left.is_empty(), "float kernels left: {left:?}\n{q}");
    let jit = JitModel::new(&q).unwrap();
    for l in &jit.report().layers {
        if l.op.starts_with("conv2d") || l.op.starts_with("matmul") {
            assert!(!l.kernel.contains("xnor"), "{}: {}", l.op, l.kernel);
        }
    }
    let (xs, ys) = test_set();
    let mut li = Vec::new();
    for x in &xs {
        let i = run(&q, std::slice::from_ref(x)).unwrap()[0]
            .as_f32()
            .unwrap()
            .to_vec();
        let j = jit.run(std::slice::from_ref(x)).unwrap()[0]
            .as_f32()
            .unwrap()
            .to_vec();
        assert_eq!(i, j, "JIT and interpreter differ");
        li.push(i);
    }
    let a = accuracy(&li, &ys);
    eprintln!("{name} --wbits 1 --abits 8: {a:.2}%\n{report}");
    // Weights binarized, activations at 8 bits, fitted per channel.
    assert!(a > 90.0, "accuracy {a:.2}%");
}

/// Bit-widths out of range name the flag and what works.
#[test]
fn bits_out_of_range_name_the_flag() {
    let (ok, _, err) = qcc(&[
        "compile",
        "tests/models/digits_cnn_folded.onnx",
        "--wbits",
        "9",
        "-o",
        "/dev/null",
    ]);
    assert!(!ok);
    assert!(err.contains("--wbits 9"), "{err}");
}
