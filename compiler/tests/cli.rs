//! The `qcc` binary: commands and their error messages.

mod cli_common;

use cli_common::{qcc, root, temp_dir};

#[test]
fn interp_runs_the_bundled_example() {
    let out = temp_dir("cli", "interp");
    let (ok, _, err) = qcc(&[
        "interp",
        "examples/interp/digits_cnn.qir",
        "--input",
        "examples/interp/digit0.npy",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let logits = qcc::npy::read_npy(&out.join("logits.npy")).unwrap();
    assert_eq!(logits.shape, vec![1, 10]);
    let qcc_ir::interp::TensorData::F32(v) = logits.data else {
        panic!("f32 logits")
    };
    let best = (0..10).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
    assert_eq!(best, 2, "the bundled image is a 2");
}

#[test]
fn interp_errors_name_the_problem() {
    let out = temp_dir("cli", "errors");
    let o = out.to_str().unwrap();
    let (ok, _, err) = qcc(&["interp", "no/such.qir", "--out", o]);
    assert!(!ok && err.contains("cannot read no/such.qir"), "{err}");
    let (ok, _, err) = qcc(&["interp", "examples/interp/digits_cnn.qir", "--out", o]);
    assert!(
        !ok && err.contains("takes 1 input(s) (%input: f32[1,1,8,8])"),
        "{err}"
    );
    let bad = out.join("bad.qir");
    std::fs::write(
        &bad,
        "module m {\n  input %x: f32[2]\n  %y: f32[2] = rleu(%x)\n}\n",
    )
    .unwrap();
    let (ok, _, err) = qcc(&["interp", bad.to_str().unwrap(), "--out", o]);
    assert!(
        !ok && err.contains("bad.qir:3:16: unknown op `rleu`"),
        "{err}"
    );
    let wrong = out.join("wrong.npy");
    std::fs::copy(root().join("examples/interp/digit0.npy"), &wrong).unwrap();
    let two_in = out.join("two.qir");
    std::fs::write(
        &two_in,
        "module m {\n  input %x: f32[2]\n  %y: f32[2] = relu(%x)\n  output %y\n}\n",
    )
    .unwrap();
    let (ok, _, err) = qcc(&[
        "interp",
        two_in.to_str().unwrap(),
        "--input",
        wrong.to_str().unwrap(),
        "--out",
        o,
    ]);
    assert!(
        !ok && err.contains("input %x has shape [2], the array has shape [1, 1, 8, 8]"),
        "{err}"
    );
}

#[test]
fn opt_runs_named_passes_and_rejects_unknown_ones() {
    let (ok, _, err) = qcc(&[
        "opt",
        "examples/interp/digits_cnn.qir",
        "--passes",
        "dce,nope",
    ]);
    assert!(
        !ok && err.contains("no pass named `nope`") && err.contains("dce"),
        "{err}"
    );
    let (ok, out, err) = qcc(&[
        "opt",
        "examples/interp/digits_cnn.qir",
        "--passes",
        "dce",
        "--time-passes",
        "--print-after",
        "dce",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("// after dce\nmodule digits_cnn {"),
        "{out}"
    );
    assert!(err.contains("dce"), "timing report: {err}");
}

#[test]
fn verify_reports_violations() {
    let dir = temp_dir("cli", "verify");
    let bad = dir.join("bad.qir");
    std::fs::write(
        &bad,
        "module m {\n  input %x: f32[2]\n  %y: f32[3] = relu(%x)\n  output %y\n}\n",
    )
    .unwrap();
    let (ok, _, err) = qcc(&["verify", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("not a valid module"), "{err}");
    let (ok, out, _) = qcc(&["verify", "examples/interp/digits_cnn.qir"]);
    assert!(ok && out.contains("ok"), "{out}");
}

#[test]
fn passes_lists_the_registry() {
    let (ok, out, _) = qcc(&["passes"]);
    assert!(ok);
    assert!(out.contains("dce"), "{out}");
}

#[test]
fn compile_creates_the_output_folder() {
    let dir = temp_dir("cli", "outdir").join("not/yet/there");
    let obj = dir.join("digits.o");
    let (ok, _, err) = qcc(&[
        "compile",
        "examples/interp/digits_cnn.qir",
        "--name",
        "digits",
        "-o",
        obj.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(obj.is_file() && dir.join("digits.h").is_file(), "{err}");
}
