//! `--batch N` (`passes::rebatch`): a module built for one sample runs N at once. On the
//! committed digits models, float and quantized, the batched module's results are the
//! single-sample results stacked (interpreter: bit for bit; JIT: bit for bit against the
//! interpreter on integer paths, within float rounding otherwise). Models that mix the
//! samples of a batch are refused with the node named.

use std::path::PathBuf;

use qcc::frontend::onnx::{ImportOptions, import_file};
use qcc::passes::cleanup;
use qcc::passes::rebatch::rebatch;
use qcc::quant::{CalibOptions, QuantOptions, calibrate, quantize_model, stream_samples};
use qcc_ir::Module;
use qcc_ir::interp::{self, Tensor};

const N: usize = 5;

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

fn quantized(m: &Module, bits: u8) -> Module {
    let opts = CalibOptions {
        limit: Some(100),
        progress: false,
        ..Default::default()
    };
    let stats = calibrate(m, &models_dir().join("digits_train.npz"), &opts).unwrap();
    quantize_model(m, &stats, &QuantOptions::bits(bits))
        .unwrap()
        .0
}

/// The first `N` test samples, one tensor each ([1,1,8,8]).
fn samples() -> Vec<Tensor> {
    let mut out = Vec::new();
    stream_samples(
        &models_dir().join("digits_test.npz"),
        Some(N),
        N,
        &mut |_, x| {
            out.push(x);
            Ok(())
        },
    )
    .unwrap();
    out
}

fn stack(ts: &[Tensor]) -> Tensor {
    let mut shape = ts[0].shape.clone();
    shape[0] = ts.len();
    let data: Vec<f32> = ts
        .iter()
        .flat_map(|t| t.as_f32().unwrap().to_vec())
        .collect();
    Tensor::f32(shape, data)
}

#[test]
fn batched_modules_stack_the_single_sample_results() {
    let xs = samples();
    let x = stack(&xs);
    for name in ["digits_cnn.onnx", "digits_resnet.onnx"] {
        let float = float_module(name);
        for bits in [None, Some(8), Some(4), Some(2)] {
            let what = format!("{name} bits {bits:?}");
            let one = match bits {
                None => float.clone(),
                Some(b) => quantized(&float, b),
            };
            let many = rebatch(&one, N).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(many.ty(many.inputs[0]).shape, [N, 1, 8, 8], "{what}");
            // The interpreter: the batch is the samples, bit for bit.
            let singles: Vec<Tensor> = xs
                .iter()
                .map(|s| {
                    interp::run(&one, std::slice::from_ref(s))
                        .unwrap()
                        .remove(0)
                })
                .collect();
            let want = stack(&singles);
            let got = interp::run(&many, std::slice::from_ref(&x))
                .unwrap()
                .remove(0);
            assert_eq!(got.shape, want.shape, "{what}");
            assert_eq!(got.as_f32(), want.as_f32(), "{what}: interpreter");
            // The compiled batch against the interpreter.
            let jit = qcc::backend::JitModel::new(&many).unwrap_or_else(|e| panic!("{what}: {e}"));
            let out = jit.run(std::slice::from_ref(&x)).unwrap().remove(0);
            let (g, w) = (out.as_f32().unwrap(), want.as_f32().unwrap());
            let span = w.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (p, q) in g.iter().zip(w) {
                assert!(
                    (p - q).abs() <= 1e-4 * span.max(1.0),
                    "{what}: JIT {p} vs interpreter {q}"
                );
            }
            if bits.is_some() {
                assert_eq!(g, w, "{what}: integer path, JIT vs interpreter");
            }
        }
    }
}

fn refused(text: &str, n: usize, needles: &[&str]) {
    let m = qcc_ir::parse_module(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let e = rebatch(&m, n)
        .err()
        .unwrap_or_else(|| panic!("accepted:\n{text}"));
    for k in needles {
        assert!(e.contains(k), "`{k}` not in: {e}");
    }
}

#[test]
fn models_that_mix_samples_are_refused() {
    refused(
        "module m {\n input %x: f32[1,4]\n %y: f32[1,4] = softmax(%x) {axis = 0}\n output %y\n}",
        3,
        &["--batch 3", "softmax", "axis 0", "%y"],
    );
    refused(
        "module m {\n input %x: f32[1,4]\n %y: f32[4] = reshape(%x) {shape = [4]}\n output %y\n}",
        2,
        &["reshape", "batch axis", "%y"],
    );
    refused(
        "module m {\n input %x: f32[1,4]\n %y: f32[2,4] = concat(%x, %x) {axis = 0}\n output %y\n}",
        2,
        &["concat", "%y"],
    );
    refused(
        "module m {\n input %x: f32[2,4]\n %y: f32[2,4] = relu(%x)\n output %y\n}",
        2,
        &["input %x is f32[2,4]", "first dimension is 1"],
    );
    refused(
        "module m {\n input %x: f32[1,4]\n const @c: f32[1,4] = [1, 2, 3, 4]\n %y: f32[1,4] = relu(%x)\n %z: f32[1,4] = relu(@c)\n output %y, %z\n}",
        2,
        &["output %z", "does not depend on the input"],
    );
    let m = qcc_ir::parse_module(
        "module m {\n input %x: f32[1,4]\n %y: f32[1,4] = relu(%x)\n output %y\n}",
    )
    .unwrap();
    assert!(rebatch(&m, 0).unwrap_err().contains("--batch 0"));
    assert_eq!(rebatch(&m, 1).unwrap(), m);
}

#[test]
fn compile_and_bench_take_batch() {
    let dir = std::env::temp_dir().join(format!("qcc-batch-{}", std::process::id()));
    let model = models_dir().join("digits_cnn.onnx");
    let calib = models_dir().join("digits_train.npz");
    let qcc = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_qcc"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let obj = dir.join("m.o");
    let (ok, _, err) = qcc(&[
        "compile",
        model.to_str().unwrap(),
        "--batch",
        "4",
        "--bits",
        "4",
        "--calib",
        calib.to_str().unwrap(),
        "-o",
        obj.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let h = std::fs::read_to_string(dir.join("m.h")).unwrap();
    assert!(
        h.contains("input 0: %input f32[4,1,8,8] (256 elements)"),
        "{h}"
    );
    assert!(h.contains("f32[4,10]"), "{h}");
    let (ok, out, err) = qcc(&[
        "bench",
        model.to_str().unwrap(),
        "--batch",
        "3",
        "--runs",
        "5",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("(5 runs, 1 thread, batch 3)"), "{out}");
    let (ok, _, err) = qcc(&["bench", model.to_str().unwrap(), "--batch", "0"]);
    assert!(!ok && err.contains("--batch 0"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `qcc eval --batch N` runs the compiled model on N samples per call (the last call
/// padded) and prints what it prints one sample at a time.
#[test]
fn eval_takes_batch() {
    let model = models_dir().join("digits_cnn.onnx");
    let data = models_dir().join("digits_test.npz");
    let calib = models_dir().join("digits_train.npz");
    let eval = |quant: &[&str], batch: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_qcc"))
            .arg("eval")
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .args(["--limit", "30", "--batch", batch, "--quiet"])
            .args(quant)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let calib = calib.to_str().unwrap();
    for quant in [
        &[][..],
        &["--bits", "4", "--calib", calib, "--calib-limit", "50"],
    ] {
        let (ok, one, err) = eval(quant, "1");
        assert!(ok, "{err}");
        assert!(one.contains("samples: 30"), "{one}");
        for batch in ["4", "7"] {
            let (ok, out, err) = eval(quant, batch);
            assert!(ok, "{err}");
            assert_eq!(out, one, "--batch {batch} {quant:?}");
        }
    }
    let (ok, _, err) = eval(&[], "0");
    assert!(!ok && err.contains("--batch 0"), "{err}");
}
