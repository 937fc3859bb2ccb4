//! `qcc::build` (the build-script API) and the `qcc-runtime` crate: a model compiled by
//! `Build::compile` is linked into a Rust program through the generated module and the
//! runtime's safe wrapper, built here with `rustc` the way cargo would (the archive
//! through `-l static=qcc_NAME`, the runtime as an `--extern` crate), and its outputs
//! equal the JIT's bit for bit (also through the threaded entry on the runtime's pool);
//! the wrapper's size checks and errors hold.

use std::path::{Path, PathBuf};
use std::process::Command;

use qcc::backend::JitModel;
use qcc::build::Build;
use qcc::frontend::onnx::{ImportOptions, import_file};
use qcc::passes::cleanup;
use qcc_ir::interp::Tensor;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const APP: &str = r#"
mod digits {
    include!(concat!(env!("GEN_DIR"), "/digits.rs"));
}

fn main() {
    let m = digits::model();
    assert_eq!(m.name(), "digits");
    assert_eq!((m.num_inputs(), m.num_outputs()), (1, 1));
    assert_eq!((m.input_len(0), m.output_len(0)), (64, 10));
    let x: Vec<f32> = (0..64).map(|i| ((i * 7) % 17) as f32 / 16.0).collect();
    // Sessions on two threads at once, each with its own scratch.
    let t = std::thread::spawn(move || m.session().infer(&[&x]).unwrap());
    let mut s = m.session();
    let x: Vec<f32> = (0..64).map(|i| ((i * 7) % 17) as f32 / 16.0).collect();
    let y = s.infer(&[&x]).unwrap();
    assert_eq!(y, t.join().unwrap());
    println!("error: {}", s.infer(&[&x[..10]]).unwrap_err());
    println!("error: {}", s.infer(&[]).unwrap_err());
    let mut short = vec![0.0f32; 3];
    println!("error: {}", s.run(&[&x], &mut [&mut short]).unwrap_err());
    // The threaded entry on a pool of std threads gives the same bits.
    assert!(m.has_threads());
    assert!(m.scratch_bytes_threads(2) >= m.scratch_bytes());
    let pool = std::sync::Arc::new(qcc_runtime::ThreadPool::new(3));
    let mut st = m.session_on(pool.clone());
    assert_eq!(st.infer(&[&x]).unwrap(), y);
    let mut st2 = m.session_on(pool);
    assert_eq!(st2.infer(&[&x]).unwrap(), y);
    for v in &y[0] {
        println!("{}", v.to_bits());
    }
}
"#;

/// `rustc` when it, `cc` and `ar` are there (with `CI=true` their absence fails).
fn toolchain() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let have = |p: &str| Command::new(p).arg("--version").output().is_ok();
    if !have(&rustc) || !have("cc") || !have("ar") {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "rustc, cc and ar are needed under CI"
        );
        eprintln!("skipped: no rustc, cc or ar");
        return None;
    }
    Some(rustc)
}

/// Builds the runtime crate as cargo would, then the application `src` in `dir`
/// (including `GEN_DIR/*.rs`, linking the archive `lib`); returns the program.
fn build_app(rustc: &str, dir: &Path, src: &str, lib: &str) -> PathBuf {
    run(Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "rlib",
            "--crate-name",
            "qcc_runtime",
        ])
        .args(["-D", "warnings"])
        .arg(root().join("runtime/src/lib.rs"))
        .arg("--out-dir")
        .arg(dir));
    std::fs::write(dir.join("app.rs"), src).unwrap();
    let exe = dir.join("app");
    run(Command::new(rustc)
        .args(["--edition", "2024", "-D", "warnings"])
        .arg(dir.join("app.rs"))
        .arg("--extern")
        .arg(format!(
            "qcc_runtime={}",
            dir.join("libqcc_runtime.rlib").display()
        ))
        .arg("-L")
        .arg(dir)
        .args(["-l", &format!("static={lib}")])
        .arg("-o")
        .arg(&exe)
        .env("GEN_DIR", dir));
    exe
}

#[test]
fn build_api_links_a_model_into_a_rust_program() {
    let Some(rustc) = toolchain() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("qcc-build-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = root().join("tests/models/digits_cnn_folded.onnx");
    let generated = Build::new(&model)
        .name("digits")
        .out_dir(&dir)
        .cargo_metadata(false)
        .compile()
        .unwrap();
    assert!(generated.archive.is_file() && generated.module.is_file());
    let exe = build_app(&rustc, &dir, APP, "qcc_digits");
    let out = run(&mut Command::new(&exe));
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error: ")).collect();
    assert!(
        errors[0].contains("input 0 holds 10 elements, the model wants 64"),
        "{out}"
    );
    assert!(errors[1].contains("takes 1 inputs, 0 given"), "{out}");
    assert!(
        errors[2].contains("output 0 holds 3 elements, the model wants 10"),
        "{out}"
    );
    let got: Vec<f32> = out
        .lines()
        .filter(|l| !l.starts_with("error: "))
        .map(|l| f32::from_bits(l.parse().unwrap()))
        .collect();
    let mut m = import_file(&model, &ImportOptions::default())
        .unwrap()
        .module;
    cleanup::pipeline().run(&mut m, &mut |_| {}).unwrap();
    let x: Vec<f32> = (0..64).map(|i| ((i * 7) % 17) as f32 / 16.0).collect();
    let want = JitModel::new(&m)
        .unwrap()
        .run(&[Tensor::f32(vec![1, 1, 8, 8], x)])
        .unwrap();
    assert_eq!(got, want[0].as_f32().unwrap(), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn build_api_names_bad_flags() {
    let err = Build::new(root().join("tests/models/digits_cnn_folded.onnx"))
        .flags(["--bits", "banana"])
        .out_dir(std::env::temp_dir())
        .cargo_metadata(false)
        .compile()
        .unwrap_err()
        .to_string();
    assert!(err.contains("--bits") && err.contains("banana"), "{err}");
    let err = Build::new("no/such/model.onnx")
        .out_dir(std::env::temp_dir())
        .cargo_metadata(false)
        .compile()
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("no/such/model.onnx"), "{text}");
}

const TYPED_APP: &str = r#"
mod ids {
    include!(concat!(env!("GEN_DIR"), "/ids.rs"));
}
use qcc_runtime::Elem;

fn main() {
    let m = ids::model();
    assert_eq!((m.input_type(0), m.output_type(0), m.output_type(1)), (Elem::I64, Elem::I64, Elem::F32));
    let mut s = m.session();
    let ids: [i64; 6] = [3, -7, 49, 0, 12, 3];
    let (mut cls, mut scores) = ([-1i64; 1], [0f32; 5]);
    s.run_typed(&[(&ids[..]).into()], &mut [(&mut cls[..]).into(), (&mut scores[..]).into()])
        .unwrap();
    println!("{}", cls[0]);
    for v in scores {
        println!("{}", v.to_bits());
    }
    // A slice of another type, a float-only call, a value beyond int32.
    let wrong = [0i32; 6];
    println!("error: {}", s.run_typed(&[(&wrong[..]).into()], &mut [(&mut cls[..]).into(), (&mut scores[..]).into()]).unwrap_err());
    println!("error: {}", s.run(&[&[0f32; 6]], &mut [&mut [0f32; 1], &mut scores]).unwrap_err());
    let big: [i64; 6] = [3, -7, 1 << 40, 0, 12, 3];
    println!("error: {}", s.run_typed(&[(&big[..]).into()], &mut [(&mut cls[..]).into(), (&mut scores[..]).into()]).unwrap_err());
    // The threaded entry takes the same typed slices.
    let pool = std::sync::Arc::new(qcc_runtime::ThreadPool::new(2));
    let mut st = m.session_on(pool);
    let mut cls2 = [-1i64; 1];
    st.run_typed(&[(&ids[..]).into()], &mut [(&mut cls2[..]).into(), (&mut scores[..]).into()]).unwrap();
    assert_eq!(cls2, cls);
}
"#;

/// Typed inputs and outputs through the Rust wrapper: the int64 token-id model
/// (`tests/models/int64_io.onnx`) runs with `&[i64]` slices and gives ONNX Runtime's
/// class; a slice of the wrong type, float slices for typed tensors and a value beyond
/// int32 are errors that say so.
#[test]
fn build_api_passes_typed_tensors() {
    let Some(rustc) = toolchain() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("qcc-build-typed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = root().join("tests/models/int64_io.onnx");
    Build::new(&model)
        .name("ids")
        .out_dir(&dir)
        .cargo_metadata(false)
        .compile()
        .unwrap();
    let exe = build_app(&rustc, &dir, TYPED_APP, "qcc_ids");
    let out = run(&mut Command::new(&exe));
    let lines: Vec<&str> = out.lines().collect();
    let refs = root().join("tests/models/int64_io.ref.npz");
    let cls = qcc::npy::read_npz_array(&refs, "cls").unwrap();
    let m_ref = qcc::npy::read_npz_array(&refs, "m").unwrap();
    assert_eq!(lines[0], cls.as_int().unwrap()[0].to_string(), "{out}");
    for (l, r) in lines[1..6].iter().zip(m_ref.as_f32().unwrap()) {
        let g = f32::from_bits(l.parse().unwrap());
        assert!((g - r).abs() <= 1e-4 * r.abs().max(1.0), "{out}");
    }
    assert!(
        lines[6].contains("input 0 is a slice of int32_t, the model's tensor holds int64_t"),
        "{out}"
    );
    assert!(
        lines[7].contains("input 0 is a slice of float, the model's tensor holds int64_t"),
        "{out}"
    );
    assert!(
        lines[8].contains("returned 3") && lines[8].contains("beyond int32"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
