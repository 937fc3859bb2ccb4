//! The threaded entry from C, with the optional runtime's pool (runtime/c): the
//! checker `tests/c/threads_checks.c` (outputs of `m_run_ctx` with 1, 2, 3 and 7
//! threads equal to `m_run`'s, the context's argument checks) and the example
//! `examples/c/threads.c` (the digits classifier on threads, whose output must be
//! `examples/c/main.c`'s), natively and under valgrind.
//!
//! The digits models are small, so they are compiled with the smallest grain
//! (`split_grain(1, 1)`: every layer that can be split is) through the driver's
//! `compile`, for the host and, under valgrind (which cannot decode AVX-512), for
//! `x86-64-v3`, as `abi_sanitizers.rs` does; aarch64 objects run the checker under qemu.
//! With `CI=true` a missing valgrind or aarch64 tool fails.

mod examples_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use examples_common::*;

/// Models covering the kernel families: f32 (im2col and Winograd GEMMs), int8
/// (QOperator), 2-bit (u8 x i8 or bit-serial) and 1-bit (XNOR) QONNX models.
const MODELS: [&str; 5] = [
    "digits_cnn_folded",
    "digits_resnet_folded",
    "digits_cnn_qop",
    "digits_w2a2",
    "digits_w1a1",
];

/// `qcc compile MODEL --name NAME -o DIR/NAME.o [--cpu CPU]` with every splittable
/// layer split (checked in the report); returns the object.
fn compile_split(model: &Path, dir: &Path, name: &str, cpu: Option<&str>) -> PathBuf {
    compile_split_for(model, dir, name, None, cpu)
}

fn compile_split_for(
    model: &Path,
    dir: &Path,
    name: &str,
    target: Option<&str>,
    cpu: Option<&str>,
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let obj = dir.join(format!("{name}.o"));
    let args = qcc::driver::CompileArgs {
        model: model.to_path_buf(),
        output: Some(obj.clone()),
        name: Some(name.into()),
        target: target.map(str::to_string),
        cpu: cpu.map(str::to_string),
        input_shapes: vec!["input=1,1,8,8".into()],
        report: vec![dir.join("report.json")],
        ..Default::default()
    };
    qcc::backend::split_grain(1, 1, || qcc::driver::compile(&args))
        .unwrap_or_else(|e| panic!("{}: {e:#}", model.display()));
    let report = std::fs::read_to_string(dir.join("report.json")).unwrap();
    let split = report
        .split("\"tasks\": ")
        .skip(1)
        .filter_map(|r| {
            r.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<usize>()
                .ok()
        })
        .any(|t| t > 1);
    assert!(split, "{}: no layer was split", model.display());
    obj
}

/// Links `c` (with `-I dir -I runtime/c`) with `obj` and the runtime's source.
fn link(c: &Path, obj: &Path, out: &str) -> PathBuf {
    let dir = obj.parent().unwrap();
    let exe = dir.join(out);
    run(Command::new("cc")
        .args(["-O1", "-g", "-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(dir)
        .arg("-I")
        .arg(root().join("runtime/c"))
        .arg(c)
        .arg(obj)
        .arg(root().join("runtime/c/qcc_runtime.c"))
        .arg("-lpthread")
        .arg("-o")
        .arg(&exe));
    exe
}

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

fn have_valgrind() -> bool {
    let ok = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but valgrind is missing; install it with `apt-get install -y valgrind`"
        );
        eprintln!("skipped: valgrind is not available");
    }
    ok
}

const VALGRIND: &[&str] = &[
    "-q",
    "--error-exitcode=99",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite",
];

/// Runs the checker for every model (host CPU, or `cpu` under valgrind) and the example
/// on `images` test images; returns the failures.
fn check_all(tag: &str, cpu: Option<&str>, valgrind: bool, images: usize) -> Vec<String> {
    let dir = temp_dir(tag);
    let wrap = |exe: &Path| {
        if valgrind {
            let mut c = Command::new("valgrind");
            c.args(VALGRIND).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    };
    let mut bad = Vec::new();
    for name in MODELS {
        let d = dir.join(name);
        let obj = compile_split(&model(name), &d, "m", cpu);
        let exe = link(
            &root().join("compiler/tests/c/threads_checks.c"),
            &obj,
            "checks",
        );
        let (ok, text) = outcome(&mut wrap(&exe));
        if !ok || text.trim() != "ok" {
            bad.push(format!("{name} (threads_checks.c): {text}"));
        }
    }
    // The example against main.c, on the first test images.
    let (x, _) = digits_test();
    let per = x.numel() / x.shape[0];
    let x = qcc_ir::interp::Tensor::f32(
        vec![images, 1, 8, 8],
        x.as_f32().unwrap()[..images * per].to_vec(),
    );
    write_images(&dir.join("x.npy"), &x);
    for name in ["digits_resnet_folded", "digits_w2a2"] {
        let d = dir.join(format!("example-{}", name));
        let obj = compile_split(&model(name), &d, "digits", cpu);
        let plain = run(Command::new(build_c("cc", &obj, &["-g"])).arg(dir.join("x.npy")));
        let exe = link(&root().join("examples/c/threads.c"), &obj, "digits_threads");
        for threads in ["1", "2", "3"] {
            let (ok, text) = outcome(wrap(&exe).arg(dir.join("x.npy")).arg(threads));
            if !ok || text != plain {
                bad.push(format!(
                    "{name} (examples/c/threads.c, {threads} threads): {}",
                    text.lines().take(5).collect::<Vec<_>>().join("\n")
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    bad
}

#[test]
fn threaded_entry_from_c() {
    if !have("cc") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but cc is missing"
        );
        eprintln!("skipped: no C compiler");
        return;
    }
    let bad = check_all("threads-c", None, false, 60);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn threaded_entry_under_valgrind() {
    if !have("cc") || !have_valgrind() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    let cpu = if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        "x86-64-v3"
    } else {
        "x86-64-v2"
    };
    #[cfg(not(target_arch = "x86_64"))]
    let cpu = "baseline";
    let bad = check_all("threads-valgrind", Some(cpu), true, 20);
    assert!(bad.is_empty(), "valgrind found errors:\n{}", bad.join("\n"));
}

/// The threaded entry of aarch64 objects (its calls through the context's function
/// pointer, the task functions' addresses), with the C runtime built for aarch64, under
/// qemu.
#[test]
fn threaded_entry_on_aarch64() {
    let have_tool = |t: &str| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have_tool("aarch64-linux-gnu-gcc") || !have_tool("qemu-aarch64") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but aarch64-linux-gnu-gcc or qemu-aarch64 is missing"
        );
        eprintln!("skipped: aarch64-linux-gnu-gcc / qemu-aarch64 not installed");
        return;
    }
    let dir = temp_dir("threads-a64");
    let mut bad = Vec::new();
    for name in ["digits_resnet_folded", "digits_cnn_qop", "digits_w2a2"] {
        let d = dir.join(name);
        let obj = compile_split_for(
            &model(name),
            &d,
            "m",
            Some("aarch64-unknown-linux-gnu"),
            Some("baseline"),
        );
        let exe = d.join("checks");
        run(Command::new("aarch64-linux-gnu-gcc")
            .args(["-O1", "-std=c11", "-static", "-I"])
            .arg(&d)
            .arg("-I")
            .arg(root().join("runtime/c"))
            .arg(root().join("compiler/tests/c/threads_checks.c"))
            .arg(&obj)
            .arg(root().join("runtime/c/qcc_runtime.c"))
            .arg("-lpthread")
            .arg("-o")
            .arg(&exe));
        let (ok, text) = outcome(Command::new("qemu-aarch64").arg(&exe));
        if !ok || text.trim() != "ok" {
            bad.push(format!("{name}: {text}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
