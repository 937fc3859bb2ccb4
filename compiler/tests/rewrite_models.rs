//! The rewrite pass on the committed quantized digits models (QDQ form, imported with
//! the ONNX frontend): every conv/gemm must end in an integer kernel, and the rewritten
//! module must agree with the imported one on the test split.

use std::path::PathBuf;

use qcc::frontend::onnx::{ImportOptions, import_file};
use qcc::passes::Pipeline;
use qcc_ir::interp::{Tensor, run};
use qcc_ir::{Module, Op};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/models")
}

/// `x` and `y` of an .npz, the first `limit` samples.
fn load_npz(name: &str, limit: usize) -> (Vec<Tensor>, Vec<i64>) {
    let path = models_dir().join(name);
    let mut npz = npyz::npz::NpzArchive::open(&path).expect("npz opens");
    let x = npz.by_name("x").unwrap().expect("x");
    let shape: Vec<usize> = x.shape().iter().map(|&d| d as usize).collect();
    let per: usize = shape[1..].iter().product();
    let data: Vec<f32> = x.into_vec().expect("f32 x");
    let n = shape[0].min(limit);
    let xs = (0..n)
        .map(|i| {
            let mut s = vec![1];
            s.extend_from_slice(&shape[1..]);
            Tensor::f32(s, data[i * per..(i + 1) * per].to_vec())
        })
        .collect();
    let y = npz.by_name("y").unwrap().expect("y");
    let ys: Vec<i64> = match y.into_vec::<i64>() {
        Ok(v) => v,
        Err(_) => npz
            .by_name("y")
            .unwrap()
            .unwrap()
            .into_vec::<i32>()
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect(),
    };
    (xs, ys[..n].to_vec())
}

fn argmax(t: &Tensor) -> usize {
    let v = t.as_f32().expect("f32 logits");
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn rewritten(name: &str) -> (Module, Module) {
    let imported = import_file(&models_dir().join(name), &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .module;
    let mut m = imported.clone();
    let mut p = Pipeline::from_names("test", &["fold-constants", "rewrite", "dce"]).unwrap();
    p.verify_each = true;
    p.run(&mut m, &mut |_| {})
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (imported, m)
}

fn check_model(name: &str) {
    let (imported, m) = rewritten(name);
    let float_kernels: Vec<String> = m
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv2d | Op::Gemm | Op::MatMul))
        .map(|n| m.value(n.result).spelling())
        .collect();
    assert!(
        float_kernels.is_empty(),
        "{name}: float kernels left: {float_kernels:?}\n{m}"
    );
    let (xs, ys) = load_npz("digits_test.npz", 200);
    let (mut agree, mut right_a, mut right_b) = (0, 0, 0);
    for (x, &y) in xs.iter().zip(&ys) {
        let a = argmax(&run(&imported, std::slice::from_ref(x)).unwrap()[0]);
        let b = argmax(&run(&m, std::slice::from_ref(x)).unwrap()[0]);
        agree += usize::from(a == b);
        right_a += usize::from(a as i64 == y);
        right_b += usize::from(b as i64 == y);
    }
    let n = xs.len();
    eprintln!("{name}: imported {right_a}/{n}, rewritten {right_b}/{n}, agreement {agree}/{n}");
    assert!(agree * 100 >= n * 98, "{name}: agreement {agree}/{n}");
    assert!(
        right_b + 2 >= right_a,
        "{name}: accuracy {right_b} vs {right_a}"
    );
}

#[test]
fn digits_cnn_qdq() {
    check_model("digits_cnn_qdq.onnx");
}

#[test]
fn digits_cnn_int4() {
    check_model("digits_cnn_int4.onnx");
}

#[test]
fn digits_resnet_qdq() {
    check_model("digits_resnet_qdq.onnx");
}

#[test]
fn digits_resnet_int4() {
    check_model("digits_resnet_int4.onnx");
}

#[test]
fn digits_cnn_qop() {
    check_model("digits_cnn_qop.onnx");
}
