//! Calibration and the error measurements run JIT-compiled code; the reference
//! interpreter is their oracle. On the committed digits models, both engines must give
//! the same statistics (up to float rounding: Winograd convolutions, FMA), the same
//! ranges for every calibration method, the same per-layer and output errors and the
//! same `--bits 1` fit; a module the backend cannot compile falls back to the
//! interpreter with a note.

mod cli_common;

use std::path::PathBuf;

use qcc::frontend::onnx::{ImportOptions, import_file};
use qcc::passes::cleanup;
use qcc::quant::{
    CalibMethod, CalibOptions, CalibStats, Engine, QuantOptions, RangeSource, RunOptions,
    TensorStats, calibrate, choose_range, compare_outputs_with, layer_errors_with, quantize_model,
    refine_binary_with,
};
use qcc_ir::{ConstData, Module, QuantParams, ValueDef};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/models")
}

fn train() -> PathBuf {
    models_dir().join("digits_train.npz")
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

fn stats(m: &Module, engine: Engine, limit: usize) -> CalibStats {
    let opts = CalibOptions {
        limit: Some(limit),
        progress: false,
        engine,
        ..Default::default()
    };
    calibrate(m, &train(), &opts).unwrap()
}

fn close(a: f64, b: f64, scale: f64, what: &str) {
    let tol = 1e-4 * scale.max(1e-3);
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b} (tolerance {tol})");
}

fn same_stats(name: &str, j: &TensorStats, i: &TensorStats) {
    let span = (i.max - i.min).abs() as f64;
    assert_eq!(j.count, i.count, "{name}: element count");
    close(j.min as f64, i.min as f64, span, &format!("{name}: min"));
    close(j.max as f64, i.max as f64, span, &format!("{name}: max"));
    assert_eq!(j.hist.total(), i.hist.total(), "{name}: histogram total");
    assert_eq!(j.ch_min.len(), i.ch_min.len(), "{name}: channels");
    for c in 0..i.ch_min.len() {
        close(
            j.ch_min[c] as f64,
            i.ch_min[c] as f64,
            span,
            &format!("{name}: ch_min[{c}]"),
        );
        close(
            j.ch_max[c] as f64,
            i.ch_max[c] as f64,
            span,
            &format!("{name}: ch_max[{c}]"),
        );
    }
    // The histograms put the same values in the same bins but for rounding at bin
    // edges: the ranges every method picks agree to a fraction of a bin.
    for method in [
        CalibMethod::MinMax,
        CalibMethod::Percentile,
        CalibMethod::Mse,
        CalibMethod::Kl,
    ] {
        for bits in [2, 4, 8] {
            let src = RangeSource::Data(method);
            let a = choose_range(j, &src, bits, false, false).unwrap();
            let b = choose_range(i, &src, bits, false, false).unwrap();
            let bin = i.hist.width.max(j.hist.width);
            for (x, y, what) in [(a.lo, b.lo, "lo"), (a.hi, b.hi, "hi")] {
                assert!(
                    ((x - y) as f64).abs() <= 2.0 * bin + 1e-4 * span,
                    "{name} {method} {bits} bits: range {what} {x} vs {y} (bin {bin})"
                );
            }
        }
    }
}

#[test]
fn jit_calibration_matches_the_interpreter() {
    for model in ["digits_cnn.onnx", "digits_resnet.onnx"] {
        let m = float_module(model);
        let j = stats(&m, Engine::Jit, 64);
        let i = stats(&m, Engine::Interp, 64);
        assert!(j.warnings.is_empty(), "{model}: {:?}", j.warnings);
        assert_eq!(j.samples, 64);
        assert_eq!(
            j.values.keys().collect::<Vec<_>>(),
            i.values.keys().collect::<Vec<_>>(),
            "{model}: observed values"
        );
        for (name, s) in &i.values {
            same_stats(&format!("{model} {name}"), &j.values[name], s);
        }
    }
}

fn run(engine: Engine) -> RunOptions {
    RunOptions {
        engine,
        progress: false,
    }
}

#[test]
fn jit_error_measurements_match_the_interpreter() {
    let m = float_module("digits_resnet.onnx");
    let st = stats(&m, Engine::Jit, 64);
    let (q, report) = quantize_model(&m, &st, &QuantOptions::bits(4)).unwrap();
    let outs: Vec<_> = report.layers.iter().map(|l| l.output).collect();
    let mut notes = Vec::new();
    let lj = layer_errors_with(
        &m,
        &q,
        &outs,
        &train(),
        Some(16),
        &run(Engine::Jit),
        &mut notes,
    )
    .unwrap();
    let li = layer_errors_with(
        &m,
        &q,
        &outs,
        &train(),
        Some(16),
        &run(Engine::Interp),
        &mut notes,
    )
    .unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    for ((a, b), l) in lj.iter().zip(&li).zip(&report.layers) {
        close(a.signal, b.signal, b.signal, &format!("{}: signal", l.name));
        // The noise is a difference of two nearly equal results: looser, and it may move
        // a value across a rounding edge of its quantizer.
        assert!(
            (a.noise - b.noise).abs() <= 2e-2 * b.noise + 1e-6 * b.signal,
            "{}: noise {} vs {}",
            l.name,
            a.noise,
            b.noise
        );
    }
    let oj =
        compare_outputs_with(&m, &q, &train(), Some(16), &run(Engine::Jit), &mut notes).unwrap();
    let oi =
        compare_outputs_with(&m, &q, &train(), Some(16), &run(Engine::Interp), &mut notes).unwrap();
    assert_eq!(oj.samples, 16);
    assert_eq!(oj.top1_agreement, oi.top1_agreement);
    assert!(
        (oj.mean_kl - oi.mean_kl).abs() <= 1e-2 * oi.mean_kl + 1e-7,
        "KL {} vs {}",
        oj.mean_kl,
        oi.mean_kl
    );
}

/// The weight scales and biases of the binarized layers.
fn binary_params(q: &Module, report: &qcc::quant::QuantReport) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for l in report.layers.iter().filter(|l| l.wbits == 1) {
        let ValueDef::Node(n) = q.value(l.output).def else {
            panic!("{} not computed", l.name)
        };
        let n = q.node(n);
        let ValueDef::Node(d) = q.value(n.operands[1]).def else {
            panic!("weights of {} not dequantized", l.name)
        };
        let wc = q.node(d).operands[0];
        let Some(QuantParams::PerAxis { scales, .. }) =
            q.ty(wc).elem.quant().map(|t| t.params.clone())
        else {
            panic!("weights of {} not per axis", l.name)
        };
        out.push(scales);
        let Some(ConstData::F32(b)) = q.const_data(n.operands[2]) else {
            panic!("bias of {} not constant", l.name)
        };
        out.push(b.clone());
    }
    out
}

#[test]
fn jit_binary_fit_matches_the_interpreter() {
    let m = float_module("digits_resnet.onnx");
    let st = stats(&m, Engine::Jit, 64);
    let (q0, r0) = quantize_model(&m, &st, &QuantOptions::bits(1)).unwrap();
    let fit = |engine| {
        let (mut q, mut r) = (q0.clone(), r0.clone());
        let mut notes = Vec::new();
        let n = refine_binary_with(
            &m,
            &mut q,
            &mut r,
            &train(),
            Some(48),
            &run(engine),
            &mut notes,
        )
        .unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert!(n >= 2, "{n} layers refined");
        binary_params(&q, &r)
    };
    let (j, i) = (fit(Engine::Jit), fit(Engine::Interp));
    let before = binary_params(&q0, &r0);
    assert_ne!(i, before, "the fit changes the parameters");
    for (a, b) in j.iter().zip(&i) {
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
        for (x, y) in a.iter().zip(b) {
            assert!(
                ((x - y) as f64).abs() <= 1e-3 * scale,
                "{x} vs {y} (largest {scale})"
            );
        }
    }
}

#[test]
fn a_module_the_jit_cannot_compile_falls_back_with_a_note() {
    // A convolution whose weights are computed at run time: the backend refuses it.
    let text = "module runtime_weights {
  input %x: f32[1,1,8,8]
  %w: f32[1,1,8,8] = relu(%x)
  %y: f32[1,1,1,1] = conv2d(%x, %w)
  output %y
}
";
    let m = qcc_ir::parse_module(text).unwrap();
    let opts = |engine| CalibOptions {
        limit: Some(8),
        progress: false,
        engine,
        ..Default::default()
    };
    let j = calibrate(&m, &train(), &opts(Engine::Jit)).unwrap();
    let i = calibrate(&m, &train(), &opts(Engine::Interp)).unwrap();
    assert_eq!(j.values, i.values);
    assert!(
        j.warnings.len() == 1
            && j.warnings[0].contains("calibration ran on the reference interpreter")
            && j.warnings[0].contains("conv2d"),
        "{:?}",
        j.warnings
    );
}

#[test]
fn segmented_sensitivity_matches_whole_modules() {
    use qcc::quant::sensitivity::{SensOptions, measure_sensitivity};
    for (model, samples) in [("digits_resnet.onnx", 24), ("digits_cnn.onnx", 8)] {
        let m = float_module(model);
        let st = stats(&m, Engine::Jit, 64);
        let opts = |engine, whole| SensOptions {
            run: RunOptions {
                engine,
                progress: false,
            },
            whole,
            ..Default::default()
        };
        let measure =
            |o: &SensOptions, n: usize| measure_sensitivity(&m, &st, &train(), Some(n), o).unwrap();
        let whole = measure(&opts(Engine::Jit, true), samples);
        let seg = measure(&opts(Engine::Jit, false), samples);
        // The interpreter runs the same segments (few samples: it is slow).
        let interp = measure(&opts(Engine::Interp, false), 4);
        let whole4 = measure(&opts(Engine::Jit, true), 4);
        for (a, b, tol, what) in [
            (&seg, &whole, 1e-4, "jit"),
            (&interp, &whole4, 1e-3, "interp"),
        ] {
            assert_eq!(a.samples, b.samples);
            assert_eq!(a.layers.len(), b.layers.len());
            for (la, lb) in a.layers.iter().zip(&b.layers) {
                assert_eq!(
                    (&la.layer, &la.node, &la.input, la.macs),
                    (&lb.layer, &lb.node, &lb.input, lb.macs)
                );
                assert_eq!(la.candidates.len(), lb.candidates.len(), "{}", la.layer);
                for (ca, cb) in la.candidates.iter().zip(&lb.candidates) {
                    assert_eq!((ca.wbits, ca.abits), (cb.wbits, cb.abits));
                    assert!(
                        (ca.error - cb.error).abs() <= tol * cb.error + 1e-9,
                        "{model} {} w{}a{} ({what}): segmented {} vs whole {}",
                        la.layer,
                        ca.wbits,
                        ca.abits,
                        ca.error,
                        cb.error
                    );
                }
            }
        }
    }
}

#[test]
fn quiet_is_accepted_everywhere() {
    let dir = cli_common::temp_dir("quant-jit", "quiet");
    let p = dir.join("d.qprof");
    let (ok, _, err) = cli_common::qcc(&[
        "calibrate",
        "tests/models/digits_cnn.onnx",
        "--calib",
        "tests/models/digits_train.npz",
        "--calib-limit",
        "8",
        "--quiet",
        "-o",
        p.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let o = dir.join("m.o");
    for args in [
        vec![
            "compile",
            "tests/models/digits_cnn.onnx",
            "-q",
            "-o",
            o.to_str().unwrap(),
        ],
        vec![
            "eval",
            "tests/models/digits_cnn.onnx",
            "--data",
            "tests/models/digits_test.npz",
            "--limit",
            "8",
            "--quiet",
        ],
    ] {
        let mut args = args.clone();
        args.extend(["--bits", "4", "--profile", p.to_str().unwrap()]);
        let (ok, _, err) = cli_common::qcc(&args);
        assert!(ok, "{args:?}: {err}");
        assert!(!err.contains("samples/s"), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
