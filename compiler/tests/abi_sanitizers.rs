//! The C ABI's argument checks, and the objects' memory accesses under valgrind and
//! AddressSanitizer.
//!
//! Every committed model with float32 inputs and outputs (tests/models/*.onnx) is
//! compiled and linked with
//! `tests/c/abi_checks.c`, which calls it with NULL arrays, NULL tensor pointers, NULL
//! and misaligned scratch (each must return nonzero, untouched outputs), then with good
//! arguments in buffers of exactly the advertised sizes. The example program
//! (`examples/c/main.c`) runs the digits models on test images, and the Rust one
//! (`examples/rust/main.rs`) the digits CNN. Under valgrind
//! (memcheck sees the object's own loads and stores) and with the harness built with
//! `-fsanitize=address,undefined`, no error may be reported. A harness with one input
//! float too few must be caught, so that a sanitizer that sees nothing fails the test.
//!
//! The sanitizer tests run where the tools exist; with `CI=true` their absence is a
//! failure (`.ci/run` installs valgrind).

mod examples_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use examples_common::*;

/// The committed models with float32 inputs and outputs (the harness passes floats;
/// typed boundaries are `abi_typed.rs`'s).
fn models() -> Vec<PathBuf> {
    use qcc::frontend::onnx::{ImportOptions, import_file};
    let float = |p: &Path| {
        let m = import_file(p, &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .module;
        m.inputs
            .iter()
            .chain(&m.outputs)
            .all(|&v| m.ty(v).elem == qcc_ir::ElemType::F32)
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/models"))
        .expect("tests/models")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx") && float(p))
        .collect();
    v.sort();
    assert!(v.len() >= 13, "the committed models");
    v
}

fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

/// The CPU to compile for under valgrind, which decodes AVX2 but not AVX-512.
fn valgrind_cpu() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return "haswell";
    }
    "baseline"
}

/// Compiles `model` as `m` into `dir/m.o` for `cpu` (None: this machine) and links the
/// ABI harness with `cflags`; returns the program.
fn harness(model: &Path, dir: &Path, cpu: Option<&str>, cflags: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("a folder");
    let obj = dir.join("m.o");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qcc"));
    cmd.arg("compile")
        .arg(model)
        .args(["--name", "m", "-o"])
        .arg(&obj);
    if let Some(c) = cpu {
        cmd.args(["--cpu", c]);
    }
    run(&mut cmd);
    let exe = dir.join("abi");
    run(Command::new("cc")
        .args(["-O1", "-g", "-std=c11", "-Wall", "-Wextra", "-Werror"])
        .args(cflags)
        .arg("-I")
        .arg(dir)
        .arg(root().join("compiler/tests/c/abi_checks.c"))
        .arg(&obj)
        .arg("-o")
        .arg(&exe));
    exe
}

/// Runs `cmd`; returns (success, stdout + stderr).
fn outcome(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Whether `tool` is there; with `CI=true` its absence fails the test.
fn need(tool: &str, ok: bool, install: &str) -> bool {
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {tool} is missing; {install}"
        );
        eprintln!("skipped: {tool} is not available");
    }
    ok
}

#[test]
fn abi_argument_checks_hold_for_every_model() {
    if !need("cc", have("cc"), "install a C compiler") {
        return;
    }
    let dir = temp_dir("abi-native");
    let mut bad = Vec::new();
    for m in models() {
        let exe = harness(&m, &dir.join(stem(&m)), None, &[]);
        let (ok, text) = outcome(&mut Command::new(&exe));
        if !ok || text.trim() != "ok" {
            bad.push(format!("{}: {text}", stem(&m)));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(bad.is_empty(), "ABI checks failed:\n{}", bad.join("\n"));
}

const VALGRIND: &[&str] = &[
    "-q",
    "--error-exitcode=99",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite",
];

#[test]
fn valgrind_reports_no_errors() {
    let ok = have("cc")
        && Command::new("valgrind")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !need(
        "valgrind",
        ok,
        "install it with `apt-get install -y valgrind`",
    ) {
        return;
    }
    let dir = temp_dir("abi-valgrind");
    let cpu = Some(valgrind_cpu());
    let mut bad = Vec::new();
    for m in models() {
        let exe = harness(&m, &dir.join(stem(&m)), cpu, &[]);
        let (ok, text) = outcome(Command::new("valgrind").args(VALGRIND).arg(&exe));
        if !ok || text.trim() != "ok" {
            bad.push(format!("{} (ABI harness): {text}", stem(&m)));
        }
    }
    // The example program on 40 test images, for every digits model.
    let (x, _) = digits_test();
    let n = 40;
    let per = x.numel() / x.shape[0];
    let x = qcc_ir::interp::Tensor::f32(vec![n, 1, 8, 8], x.as_f32().unwrap()[..n * per].to_vec());
    write_images(&dir.join("x.npy"), &x);
    for m in models().iter().filter(|m| stem(m).starts_with("digits_")) {
        let d = dir.join(format!("example-{}", stem(m)));
        std::fs::create_dir_all(&d).unwrap();
        let obj = qcc_compile(m, &d, &["--cpu", valgrind_cpu()]);
        let exe = build_c("cc", &obj, &["-g"]);
        let plain = run(Command::new(&exe).arg(dir.join("x.npy")));
        let (ok, text) = outcome(
            Command::new("valgrind")
                .args(VALGRIND)
                .arg(&exe)
                .arg(dir.join("x.npy")),
        );
        if !ok || text != plain {
            bad.push(format!("{} (examples/c/main.c): {text}", stem(m)));
        }
    }
    // The Rust example, linked with the digits CNN's object, on the same images.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if have(&rustc) {
        let d = dir.join("example-rust");
        std::fs::create_dir_all(&d).unwrap();
        let obj = qcc_compile(
            &root().join("tests/models/digits_cnn.onnx"),
            &d,
            &["--cpu", valgrind_cpu()],
        );
        let exe = d.join("digits_rs");
        run(Command::new(&rustc)
            .args(["--edition", "2024", "-O", "-g"])
            .arg(root().join("examples/rust/main.rs"))
            .arg("-C")
            .arg(format!("link-arg={}", obj.display()))
            .arg("-o")
            .arg(&exe));
        let plain = run(Command::new(&exe).arg(dir.join("x.npy")));
        let (ok, text) = outcome(
            Command::new("valgrind")
                .args(VALGRIND)
                .arg(&exe)
                .arg(dir.join("x.npy")),
        );
        if !ok || text != plain {
            bad.push(format!("digits_cnn (examples/rust/main.rs): {text}"));
        }
    }
    // The negative control: valgrind sees the object read past a short input.
    let exe = harness(
        &root().join("tests/models/digits_cnn.onnx"),
        &dir.join("short"),
        cpu,
        &["-DQCC_SHORT_INPUT"],
    );
    let (ok, text) = outcome(Command::new("valgrind").args(VALGRIND).arg(&exe));
    assert!(
        !ok && text.contains("Invalid read"),
        "valgrind did not see the object read past a short input buffer:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(bad.is_empty(), "valgrind found errors:\n{}", bad.join("\n"));
}

#[test]
fn address_sanitizer_reports_no_errors() {
    let probe = temp_dir("asan-probe");
    std::fs::write(probe.join("p.c"), "int main(void) { return 0; }\n").unwrap();
    let ok = have("cc")
        && Command::new("cc")
            .args(["-fsanitize=address,undefined"])
            .arg(probe.join("p.c"))
            .arg("-o")
            .arg(probe.join("p"))
            .status()
            .is_ok_and(|s| s.success())
        && Command::new(probe.join("p"))
            .status()
            .is_ok_and(|s| s.success());
    let _ = std::fs::remove_dir_all(&probe);
    if !need(
        "cc -fsanitize=address,undefined",
        ok,
        "install gcc with libasan and libubsan",
    ) {
        return;
    }
    let dir = temp_dir("abi-asan");
    let flags = [
        "-fsanitize=address,undefined",
        "-fno-omit-frame-pointer",
        "-fno-sanitize-recover=all",
    ];
    let mut bad = Vec::new();
    for m in models() {
        let exe = harness(&m, &dir.join(stem(&m)), None, &flags);
        let (ok, text) = outcome(&mut Command::new(&exe));
        if !ok || text.trim() != "ok" {
            bad.push(format!("{}: {text}", stem(&m)));
        }
    }
    // ASan instruments the harness, not the object (Cranelift code has no shadow
    // checks): what the object reads and writes is valgrind's part, above.
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        bad.is_empty(),
        "AddressSanitizer found errors:\n{}",
        bad.join("\n")
    );
}
