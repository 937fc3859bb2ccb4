//! The aarch64 objects of digits models (float and int8), linked with
//! `aarch64-linux-gnu-gcc -static` and run under `qemu-aarch64`, print the same scores
//! as the x86_64 objects of the same models on this machine (correctness only; qemu
//! timings mean nothing).
//!
//! Runs when both tools exist; with `CI=true` their absence is a failure (`.ci/run`
//! installs them: `apt-get install gcc-aarch64-linux-gnu qemu-user`).

mod examples_common;

use std::process::Command;

use examples_common::*;

/// Float scores may differ in the last bits (fused multiply-add on aarch64, the host's
/// FMA or not); integer models must agree exactly.
const FLOAT_TOL: f32 = 1e-5;

fn tools() -> bool {
    let ok = have("aarch64-linux-gnu-gcc") && have("qemu-aarch64") && have("cc");
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but aarch64-linux-gnu-gcc, qemu-aarch64 or cc is missing; install \
             them with `apt-get install -y gcc-aarch64-linux-gnu qemu-user`"
        );
        eprintln!("skipped: aarch64-linux-gnu-gcc / qemu-aarch64 not installed");
    }
    ok
}

fn check(name: &str, exact: bool) {
    if !tools() {
        return;
    }
    let (x, _) = digits_test();
    let n = 64;
    let per = x.numel() / x.shape[0];
    let x = qcc_ir::interp::Tensor::f32(vec![n, 1, 8, 8], x.as_f32().unwrap()[..n * per].to_vec());
    let a64 = temp_dir(&format!("a64-{name}"));
    let host = temp_dir(&format!("x64-{name}"));
    write_images(&a64.join("x.npy"), &x);
    let obj = qcc_compile(
        &model(name),
        &a64,
        &["--target", "aarch64-unknown-linux-gnu", "--cpu", "baseline"],
    );
    let exe = build_c("aarch64-linux-gnu-gcc", &obj, &["-static"]);
    let got = parse_predictions(&run(Command::new("qemu-aarch64")
        .arg(&exe)
        .arg(a64.join("x.npy"))));
    let obj = qcc_compile(&model(name), &host, &[]);
    let exe = build_c("cc", &obj, &[]);
    let want = parse_predictions(&run(Command::new(&exe).arg(a64.join("x.npy"))));
    assert_eq!(got.len(), n);
    assert_eq!(want.len(), n);
    let g: Vec<Vec<f32>> = got.iter().map(|(_, s)| s.clone()).collect();
    let w: Vec<Vec<f32>> = want.iter().map(|(_, s)| s.clone()).collect();
    if exact {
        assert_eq!(g, w, "{name}: aarch64 and x86_64 scores differ");
    } else {
        let d = max_rel_diff(&w, &g);
        assert!(d <= FLOAT_TOL, "{name}: aarch64 differs from x86_64 by {d}");
    }
    for (i, ((a, _), (b, _))) in got.iter().zip(&want).enumerate() {
        assert_eq!(a, b, "{name}: image {i}: classes differ");
    }
    let _ = std::fs::remove_dir_all(&a64);
    let _ = std::fs::remove_dir_all(&host);
}

#[test]
fn aarch64_digits_cnn_float() {
    check("digits_cnn_folded", false);
}

#[test]
fn aarch64_digits_resnet_float() {
    check("digits_resnet", false);
}

#[test]
fn aarch64_digits_cnn_int8() {
    check("digits_cnn_qop", true);
}

#[test]
fn aarch64_digits_resnet_int8() {
    check("digits_resnet_qop", true);
}
