//! The programs of `examples/` (C and Rust), built against an object that `qcc compile`
//! wrote for the digits CNN, run on the whole digits test split and compared with the
//! reference interpreter: every score within 1e-4 (relative to 1 + |score|), the same
//! class for every image, hence the same accuracy.

mod examples_common;

use std::process::Command;

use examples_common::*;

const TOL: f32 = 1e-4;

fn check_program_output(text: &str, tag: &str) {
    let (x, y) = digits_test();
    let m = load_batch1(&model("digits_cnn_folded"));
    let want = interpret_all(&m, &x);
    let got = parse_predictions(text);
    assert_eq!(got.len(), 360, "{tag}: one line per image");
    let scores: Vec<Vec<f32>> = got.iter().map(|(_, s)| s.clone()).collect();
    let d = max_rel_diff(&want, &scores);
    assert!(d <= TOL, "{tag}: scores differ from the interpreter by {d}");
    for (i, ((c, s), w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            *c,
            argmax(s),
            "{tag}: image {i}: the printed class is the argmax"
        );
        assert_eq!(*c, argmax(w), "{tag}: image {i}: the interpreter's class");
    }
    let acc = correct(got.iter().map(|(c, _)| *c), &y);
    assert_eq!(acc, correct(want.iter().map(|w| argmax(w)), &y));
    assert!(acc >= 350, "{tag}: accuracy {acc}/360");
}

#[test]
fn c_example_classifies_the_test_split_like_the_interpreter() {
    if !have("cc") {
        eprintln!("skipped: no C compiler `cc`");
        return;
    }
    let dir = temp_dir("c");
    let obj = qcc_compile(&model("digits_cnn_folded"), &dir, &[]);
    let exe = build_c("cc", &obj, &[]);
    let (x, _) = digits_test();
    write_images(&dir.join("x.npy"), &x);
    let text = run(Command::new(&exe).arg(dir.join("x.npy")));
    check_program_output(&text, "examples/c");
    // A raw float32 file works too, and a wrong size is refused with a message.
    let raw: Vec<u8> = x
        .as_f32()
        .unwrap()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.join("x.f32"), &raw).unwrap();
    assert_eq!(run(Command::new(&exe).arg(dir.join("x.f32"))), text);
    std::fs::write(dir.join("bad.f32"), &raw[..4 * 63]).unwrap();
    let out = Command::new(&exe)
        .arg(dir.join("bad.f32"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a multiple of 64"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rust_example_classifies_the_test_split_like_the_interpreter() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if !have(&rustc) || !have("cc") {
        eprintln!("skipped: no rustc or no linker `cc`");
        return;
    }
    let dir = temp_dir("rust");
    let obj = qcc_compile(&model("digits_cnn_folded"), &dir, &[]);
    let exe = dir.join("digits_rs");
    run(Command::new(&rustc)
        .args(["--edition", "2024", "-O", "-D", "warnings"])
        .arg(root().join("examples/rust/main.rs"))
        .arg("-C")
        .arg(format!("link-arg={}", obj.display()))
        .arg("-o")
        .arg(&exe));
    let (x, _) = digits_test();
    write_images(&dir.join("x.npy"), &x);
    let text = run(Command::new(&exe).arg(dir.join("x.npy")));
    check_program_output(&text, "examples/rust");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `examples/c/CMakeLists.txt`: CMake runs qcc at build time and links the object, and the
/// threaded variant with the C runtime's pool; both print what the interpreter computes.
/// With `CI=true` a missing cmake fails (`.ci/run` installs it).
#[test]
fn cmake_example_builds_and_classifies_like_the_interpreter() {
    if !have("cmake") || !have("cc") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but cmake or cc is missing; install them with `apt-get install -y cmake gcc`"
        );
        eprintln!("skipped: no cmake or C compiler");
        return;
    }
    let dir = temp_dir("cmake");
    let build = dir.join("build");
    run(Command::new("cmake")
        .arg("-S")
        .arg(root().join("examples/c"))
        .arg("-B")
        .arg(&build)
        .arg(format!("-DQCC={}", env!("CARGO_BIN_EXE_qcc"))));
    run(Command::new("cmake").arg("--build").arg(&build));
    let (x, _) = digits_test();
    write_images(&dir.join("x.npy"), &x);
    let text = run(Command::new(build.join("digits")).arg(dir.join("x.npy")));
    check_program_output(&text, "examples/c with CMake");
    let threaded = run(Command::new(build.join("digits_threads")).arg(dir.join("x.npy")));
    assert_eq!(threaded, text, "the threaded variant prints the same");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `examples/rust-build`, built by `cargo build` alone (its build script compiles the
/// model through `qcc::build`; `./test.sh` builds it before the tests): it classifies the
/// test split as the interpreter does. With `CI=true` the binary must be there.
#[test]
fn rust_build_example_classifies_the_test_split_like_the_interpreter() {
    let exe = root().join("examples/rust-build/target/debug/qcc-digits-example");
    if !exe.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {} is missing; ./test.sh builds it with \
             `cargo build --manifest-path examples/rust-build/Cargo.toml`",
            exe.display()
        );
        eprintln!("skipped: examples/rust-build is not built");
        return;
    }
    let dir = temp_dir("rust-build");
    let (x, _) = digits_test();
    write_images(&dir.join("x.npy"), &x);
    let text = run(Command::new(&exe).arg(dir.join("x.npy")));
    check_program_output(&text, "examples/rust-build");
    let _ = std::fs::remove_dir_all(&dir);
}
