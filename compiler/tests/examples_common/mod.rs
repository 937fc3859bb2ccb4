//! Helpers of the tests that compile models with the `qcc` binary, link them with the
//! programs of `examples/` and compare what those print with the reference interpreter.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use qcc_ir::interp::{self, Tensor};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository root")
}

pub fn model(name: &str) -> PathBuf {
    root().join("tests/models").join(format!("{name}.onnx"))
}

/// A fresh folder for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qcc-examples-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a temporary folder");
    d
}

pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a command; panics with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `qcc compile MODEL --name digits -o DIR/digits.o EXTRA...`; returns the object's path.
pub fn qcc_compile(model: &Path, dir: &Path, extra: &[&str]) -> PathBuf {
    let obj = dir.join("digits.o");
    run(Command::new(env!("CARGO_BIN_EXE_qcc"))
        .arg("compile")
        .arg(model)
        .args(["--name", "digits", "-o"])
        .arg(&obj)
        .args(extra));
    assert!(
        dir.join("digits.h").exists(),
        "the header is written beside the object"
    );
    obj
}

/// Builds `examples/c/main.c` with `obj` using the C compiler `cc` (plus `flags`).
pub fn build_c(cc: &str, obj: &Path, flags: &[&str]) -> PathBuf {
    let dir = obj.parent().expect("a folder");
    let exe = dir.join("digits_c");
    run(Command::new(cc)
        .args(["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"])
        .args(flags)
        .arg("-I")
        .arg(dir)
        .arg(root().join("examples/c/main.c"))
        .arg(obj)
        .arg("-o")
        .arg(&exe));
    exe
}

/// The digits test split: images [360,1,8,8] and labels.
pub fn digits_test() -> (Tensor, Vec<i64>) {
    let path = root().join("tests/models/digits_test.npz");
    let x = qcc::npy::read_npz_array(&path, "x").expect("x");
    let y = qcc::npy::read_npz_array(&path, "y").expect("y");
    (x, y.into_int().expect("integer labels"))
}

/// Writes `x` as a float32 .npy.
pub fn write_images(path: &Path, x: &Tensor) {
    qcc::npy::write_npy(path, x).expect("write the images");
}

/// Parses the example programs' output: per image, the class then the scores.
pub fn parse_predictions(text: &str) -> Vec<(usize, Vec<f32>)> {
    text.lines()
        .map(|l| {
            let mut it = l.split_whitespace();
            let class = it.next().expect("a class").parse().expect("a class index");
            let scores = it.map(|s| s.parse().expect("a score")).collect();
            (class, scores)
        })
        .collect()
}

/// The model as the backend sees it (frontend + cleanup), for one image.
pub fn load_batch1(model: &Path) -> qcc_ir::Module {
    let mut shapes = BTreeMap::new();
    shapes.insert("input".to_string(), vec![1, 1, 8, 8]);
    qcc::driver::load(model, &shapes)
        .unwrap_or_else(|e| panic!("{}: {e:#}", model.display()))
        .module
}

/// The `i`-th image of `x` as a [1, ...] tensor.
pub fn image(x: &Tensor, i: usize) -> Tensor {
    let per = x.numel() / x.shape[0];
    let mut shape = x.shape.clone();
    shape[0] = 1;
    Tensor::f32(
        shape,
        x.as_f32().expect("f32")[i * per..(i + 1) * per].to_vec(),
    )
}

/// The reference interpreter's scores for every image of `x`.
pub fn interpret_all(m: &qcc_ir::Module, x: &Tensor) -> Vec<Vec<f32>> {
    (0..x.shape[0])
        .map(|i| {
            let out = interp::run(m, &[image(x, i)]).expect("the interpreter runs");
            out[0].as_f32().expect("f32 scores").to_vec()
        })
        .collect()
}

pub fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// Correct predictions among `classes`.
pub fn correct(classes: impl Iterator<Item = usize>, y: &[i64]) -> usize {
    classes.zip(y).filter(|(c, y)| *c as i64 == **y).count()
}

/// Largest `|a - b| / (1 + |a|)` over two lists of score vectors of equal shapes.
pub fn max_rel_diff(want: &[Vec<f32>], got: &[Vec<f32>]) -> f32 {
    assert_eq!(want.len(), got.len(), "as many images");
    let mut worst = 0f32;
    for (w, g) in want.iter().zip(got) {
        assert_eq!(w.len(), g.len(), "as many scores");
        for (a, b) in w.iter().zip(g) {
            worst = worst.max((a - b).abs() / (1.0 + a.abs()));
        }
    }
    worst
}
