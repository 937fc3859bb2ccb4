//! Builds are reproducible: the same model compiled twice, from different folders and
//! with the flags in another order, gives byte-identical objects and headers.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qcc-determinism-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a temporary folder");
    d
}

/// Runs `qcc ARGS` in `dir`; panics with its stderr when it fails.
fn qcc_in(dir: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_qcc"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run qcc");
    assert!(
        out.status.success(),
        "qcc {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies `model` (and `extra` files) into two folders, compiles it in each with
/// `flags_a` and `flags_b` (the same flags in another order) and compares the outputs.
fn same_bytes(tag: &str, model: &str, extra: &[&str], flags_a: &[&str], flags_b: &[&str]) {
    let a = temp_dir(&format!("{tag}-a"));
    let b = temp_dir(&format!("{tag}-b")).join("deeper/folder");
    std::fs::create_dir_all(&b).expect("a nested folder");
    for dir in [&a, &b] {
        for f in std::iter::once(&model).chain(extra) {
            let src = root().join("tests/models").join(f);
            std::fs::copy(&src, dir.join(f)).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        }
    }
    let mut args_a = vec!["compile", model];
    args_a.extend_from_slice(flags_a);
    args_a.extend_from_slice(&["-o", "out/m.o"]);
    let mut args_b = vec!["compile", "-o", "build/m.o"];
    args_b.extend_from_slice(flags_b);
    args_b.push(model);
    qcc_in(&a, &args_a);
    qcc_in(&b, &args_b);
    for (x, y) in [("out/m.o", "build/m.o"), ("out/m.h", "build/m.h")] {
        let xa = std::fs::read(a.join(x)).expect("the first build");
        let yb = std::fs::read(b.join(y)).expect("the second build");
        assert!(
            xa == yb,
            "{tag}: {x} ({} bytes) differs from {y} ({} bytes), built from another folder",
            xa.len(),
            yb.len()
        );
    }
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(b.parent().unwrap().parent().unwrap());
}

const TARGET: &[&str] = &["--target", "x86_64-unknown-linux-gnu", "--cpu", "haswell"];

#[test]
fn float_model_builds_are_byte_identical() {
    let mut a = vec!["--name", "digits", "--input-shape", "input=1,1,8,8"];
    a.extend_from_slice(TARGET);
    let b = vec![
        "--cpu",
        "haswell",
        "--input-shape",
        "input=1,1,8,8",
        "--target",
        "x86_64-unknown-linux-gnu",
        "--name",
        "digits",
    ];
    same_bytes("float", "digits_cnn.onnx", &[], &a, &b);
}

#[test]
fn quantized_model_builds_are_byte_identical() {
    // Quantized here with calibration data (a path relative to each folder).
    let mut a = vec![
        "--bits",
        "4",
        "--calib",
        "digits_train.npz",
        "--calib-limit",
        "64",
        "--name",
        "digits",
    ];
    a.extend_from_slice(TARGET);
    let b = vec![
        "--name",
        "digits",
        "--cpu",
        "haswell",
        "--calib-limit",
        "64",
        "--target",
        "x86_64-unknown-linux-gnu",
        "--calib",
        "digits_train.npz",
        "--bits",
        "4",
    ];
    same_bytes("quant", "digits_resnet.onnx", &["digits_train.npz"], &a, &b);
}

/// `--sq-ratio` draws its filters by a fixed-seed roulette: the same object every build.
#[test]
fn sq_ratio_builds_are_byte_identical() {
    let mut a = vec![
        "--wbits",
        "2",
        "--abits",
        "8",
        "--sq-ratio",
        "0.75",
        "--calib",
        "digits_train.npz",
        "--calib-limit",
        "64",
    ];
    a.extend_from_slice(TARGET);
    let b = vec![
        "--sq-ratio",
        "0.75",
        "--calib-limit",
        "64",
        "--cpu",
        "haswell",
        "--abits",
        "8",
        "--target",
        "x86_64-unknown-linux-gnu",
        "--calib",
        "digits_train.npz",
        "--wbits",
        "2",
    ];
    same_bytes("sq", "digits_resnet.onnx", &["digits_train.npz"], &a, &b);
}

#[test]
fn qonnx_and_qdq_builds_are_byte_identical() {
    for model in [
        "digits_w2a2.onnx",
        "digits_cnn_qdq.onnx",
        "digits_cnn_qop.onnx",
    ] {
        let mut a = vec!["--name", "m"];
        a.extend_from_slice(TARGET);
        let b = vec![
            "--target",
            "x86_64-unknown-linux-gnu",
            "--name",
            "m",
            "--cpu",
            "haswell",
        ];
        same_bytes(model, model, &[], &a, &b);
    }
}
