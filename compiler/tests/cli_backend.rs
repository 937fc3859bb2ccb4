//! `qcc compile`, `qcc run` and `qcc eval`: outputs, files, and error messages that name
//! the flag or the file (exit code 1, never a panic).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn model(name: &str) -> String {
    root()
        .join("tests/models")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qcc-cli-backend-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs qcc in `dir`; returns (exit code, stdout, stderr).
fn qcc_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qcc"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run qcc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs qcc expecting failure with a message containing every one of `needles`.
fn fails(dir: &Path, args: &[&str], needles: &[&str]) {
    let (code, _, err) = qcc_in(dir, args);
    assert_eq!(code, 1, "{args:?} should fail with exit code 1: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: `{n}` not in: {err}");
    }
}

#[test]
fn compile_writes_object_and_header_beside_it_by_default() {
    let dir = temp_dir("default");
    let (code, _, err) = qcc_in(&dir, &["compile", &model("digits_cnn_folded.onnx")]);
    assert_eq!(code, 0, "{err}");
    let h = std::fs::read_to_string(dir.join("digits_cnn_folded.h")).unwrap();
    assert!(h.contains("int digits_cnn_folded_run(const float *const *inputs"));
    assert!(h.contains("digits_cnn_folded_NUM_INPUTS = 1"));
    let o = std::fs::read(dir.join("digits_cnn_folded.o")).unwrap();
    assert_eq!(&o[..4], b"\x7fELF");
    // The text report goes to stderr.
    assert!(
        err.contains("qcc compile report: digits_cnn_folded"),
        "{err}"
    );
    // The GEMM is the host tier's: `gemm6x8` (128-bit), `vfmadd231ps.ymm` or `.zmm`.
    assert!(err.contains("conv2d.im2col+"), "{err}");
    assert!(err.contains(".f32+relu"), "{err}");
    assert!(err.contains("totals: 23680 MACs"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compile_flags_name_output_emit_report() {
    let dir = temp_dir("flags");
    let out = dir.join("sub/net.o");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let r = dir.join("report.json");
    let (code, _, err) = qcc_in(
        &dir,
        &[
            "compile",
            &model("digits_cnn_qop.onnx"),
            "-o",
            out.to_str().unwrap(),
            "--name",
            "net",
            "--cpu",
            "haswell",
            "--input-shape",
            "input=1,1,8,8",
            "--emit",
            "ir,clif,asm",
            "--report",
            r.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("symbolic first dimension"), "{err}");
    let h = std::fs::read_to_string(dir.join("sub/net.h")).unwrap();
    assert!(h.contains("size_t net_scratch_size(void);"));
    let ir = std::fs::read_to_string(dir.join("sub/net.qir")).unwrap();
    qcc_ir::verify::verify(&qcc_ir::parse_module(&ir).unwrap()).unwrap();
    let clif = std::fs::read_to_string(dir.join("sub/net.clif")).unwrap();
    assert!(clif.contains("; qcc node: ") && clif.contains("conv2d_int("));
    let asm = std::fs::read_to_string(dir.join("sub/net.s")).unwrap();
    assert!(asm.contains("net_run:") && asm.contains("; the entry function"));
    let json = std::fs::read_to_string(&r).unwrap();
    // pmaddwd with 128-bit code, a wide u8 x i8 tile on an x86-64 tier that has one
    // (8-bit weights on `vpmaddubsw` with their K rows paired).
    assert!(
        [
            "pmaddwd4x8.u8",
            "vpdpbusd.zmm.u8",
            "vpmaddubsw.ymm.u8",
            "vpmaddubsw.ymm.u8.kpaired",
            "vpmaddwd.ymm.u8"
        ]
        .iter()
        .any(|k| json.contains(&format!("\"kernel\": \"conv2d_int.im2col+{k}+requantize\""))),
        "{json}"
    );
    assert!(json.contains("\"integer\": true"));
    // Same model and flags: byte-identical object and header.
    let first = std::fs::read(&out).unwrap();
    let (code, _, err) = qcc_in(
        &dir,
        &[
            "compile",
            &model("digits_cnn_qop.onnx"),
            "-o",
            out.to_str().unwrap(),
            "--name",
            "net",
            "--cpu",
            "haswell",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), first);
    assert_eq!(std::fs::read_to_string(dir.join("sub/net.h")).unwrap(), h);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compile_for_aarch64_and_from_ir_text() {
    let dir = temp_dir("aarch64");
    let (code, _, err) = qcc_in(
        &dir,
        &[
            "compile",
            root()
                .join("examples/interp/digits_cnn.qir")
                .to_str()
                .unwrap(),
            "--target",
            "aarch64-unknown-linux-gnu",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let o = std::fs::read(dir.join("digits_cnn.o")).unwrap();
    assert_eq!(&o[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([o[18], o[19]]), 183, "EM_AARCH64");
    assert!(err.contains("aarch64"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compile_errors_name_the_flag_or_file() {
    let dir = temp_dir("errors");
    let m = model("digits_cnn_folded.onnx");
    fails(&dir, &["compile", "missing.onnx"], &["missing.onnx"]);
    fails(
        &dir,
        &["compile", "model.tflite"],
        &["model.tflite", ".onnx", ".qir"],
    );
    fails(
        &dir,
        &["compile", &m, "--emit", "llvm"],
        &["--emit llvm", "ir, clif or asm"],
    );
    fails(
        &dir,
        &["compile", &m, "--name", "3d-net"],
        &["--name 3d-net", "C identifier"],
    );
    fails(
        &dir,
        &["compile", &m, "--target", "sparc-unknown-linux-gnu"],
        &["--target sparc-unknown-linux-gnu"],
    );
    fails(
        &dir,
        &["compile", &m, "--target", "nonsense"],
        &["--target nonsense"],
    );
    fails(
        &dir,
        &["compile", &m, "--cpu", "pentium9"],
        &["--cpu pentium9", "haswell"],
    );
    fails(
        &dir,
        &[
            "compile",
            &m,
            "--target",
            "aarch64-unknown-linux-gnu",
            "--cpu",
            "native",
        ],
        &["--cpu native", "baseline"],
    );
    fails(
        &dir,
        &["compile", &m, "--input-shape", "input:1"],
        &["--input-shape input:1"],
    );
    fails(
        &dir,
        &["compile", &m, "--input-shape", "image=1,1,8,8"],
        &["image"],
    );
    fails(&dir, &["compile", &m, "-o", "x.h"], &["-o x.h", "x.o"]);
    // Nodes the backend cannot lower are all listed, with why.
    std::fs::write(
        dir.join("unlowerable.qir"),
        "module unlowerable {\n  input %x: f32[1,1,4,4]\n  input %w: f32[1,1,3,3]\n  \
         input %c: f32[4]\n  %y: f32[1,1,2,2] = conv2d(%x, %w) {dilations = [1, 1], group = 1, \
         pads = [0, 0, 0, 0], strides = [1, 1]}\n  %q: i8[4] = cast(%c)\n  \
         %b: b1[4] = cast(%q)\n  %o: f32[4] = cast(%b)\n  output %y, %o\n}\n",
    )
    .unwrap();
    fails(
        &dir,
        &["compile", "unlowerable.qir"],
        &[
            "unlowerable.qir",
            "cannot lower 2 node",
            "conv2d with run-time weights",
            "cast from i8 to b1",
        ],
    );
    assert!(!dir.join("digits_cnn_folded.o").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_writes_outputs_and_follows_the_batch_of_the_data() {
    let dir = temp_dir("run");
    let (x, _) = {
        let p = root().join("tests/models/digits_test.npz");
        let x = qcc::npy::read_npz_array(&p, "x").unwrap();
        (x, ())
    };
    let n = 16;
    let per = 64;
    let x16 =
        qcc_ir::interp::Tensor::f32(vec![n, 1, 8, 8], x.as_f32().unwrap()[..n * per].to_vec());
    qcc::npy::write_npy(&dir.join("x16.npy"), &x16).unwrap();
    let (code, _, err) = qcc_in(
        &dir,
        &[
            "run",
            &model("digits_cnn_qop.onnx"),
            "--input",
            "x16.npy",
            "--out",
            "out",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let y = qcc::npy::read_npy(&dir.join("out/logits.npy")).unwrap();
    assert_eq!(y.shape, vec![16, 10]);
    // The same as the interpreter on the module imported for this batch.
    let mut shapes = std::collections::BTreeMap::new();
    shapes.insert("input".to_string(), vec![n, 1, 8, 8]);
    let m = qcc::driver::load(Path::new(&model("digits_cnn_qop.onnx")), &shapes)
        .unwrap()
        .module;
    let want = qcc_ir::interp::run(&m, &[x16]).unwrap();
    assert_eq!(want[0].as_f32().unwrap(), y.as_f32().unwrap());

    // IR text works too.
    let (code, _, err) = qcc_in(
        &root(),
        &[
            "run",
            "examples/interp/digits_cnn.qir",
            "--input",
            "examples/interp/digit0.npy",
            "--out",
            dir.join("qir").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let y = qcc::npy::read_npy(&dir.join("qir/logits.npy")).unwrap();
    let v = y.as_f32().unwrap();
    assert_eq!((0..10).max_by(|&a, &b| v[a].total_cmp(&v[b])), Some(2));

    // Errors.
    let qir = root().join("examples/interp/digits_cnn.qir");
    let qir = qir.to_str().unwrap();
    fails(
        &dir,
        &["run", qir, "--out", "o"],
        &["takes 1 input(s) (%input: f32[1,1,8,8])"],
    );
    fails(
        &dir,
        &["run", qir, "--input", "x16.npy", "--out", "o"],
        &["x16.npy", "[1, 1, 8, 8]", "[16, 1, 8, 8]"],
    );
    fails(
        &dir,
        &["run", qir, "--input", "nope.npy", "--out", "o"],
        &["--input nope.npy"],
    );
    fails(
        &dir,
        &[
            "run",
            qir,
            "--input",
            "x16.npy",
            "--out",
            "o",
            "--input-shape",
            "input=1,1,8,8",
        ],
        &["--input-shape", "IR text"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_prints_accuracy_of_both_and_their_agreement() {
    let dir = temp_dir("eval");
    let data = root().join("tests/models/digits_test.npz");
    let data = data.to_str().unwrap();
    let (code, out, err) = qcc_in(
        &dir,
        &["eval", &model("digits_cnn_qop.onnx"), "--data", data],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("samples: 360"), "{out}");
    assert!(
        out.contains("reference (interpreter) top-1: 98.61% (355/360)"),
        "{out}"
    );
    assert!(
        out.contains("compiled (JIT) top-1:          98.61% (355/360)"),
        "{out}"
    );
    assert!(
        out.contains("agreement:                     100.00% (360/360)"),
        "{out}"
    );
    assert!(
        out.contains("max |compiled - reference|:    0.000e0"),
        "{out}"
    );
    let (code, out, err) = qcc_in(
        &dir,
        &[
            "eval",
            &model("digits_cnn_folded.onnx"),
            "--data",
            data,
            "--limit",
            "20",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("samples: 20"), "{out}");
    fails(
        &dir,
        &["eval", &model("digits_cnn_folded.onnx"), "--data", "no.npz"],
        &["no.npz"],
    );
    // An archive without `x`.
    let r = root().join("tests/models/qonnx_quant_round.ref.npz");
    let qir = root().join("examples/interp/digits_cnn.qir");
    fails(
        &dir,
        &["eval", qir.to_str().unwrap(), "--data", r.to_str().unwrap()],
        &["qonnx_quant_round.ref.npz"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--requantize` turns QDQ and QONNX models back into float so that new bits can be
/// chosen; integer (QOperator) models and a missing bit request get clear errors.
#[test]
fn requantize_takes_qdq_and_qonnx_and_refuses_qoperator() {
    let dir = temp_dir("requantize");
    let data = model("digits_test.npz");
    let calib = model("digits_train.npz");
    for m in ["digits_cnn_qdq.onnx", "digits_w2a2.onnx"] {
        let (code, out, err) = qcc_in(
            &dir,
            &[
                "eval",
                &model(m),
                "--data",
                &data,
                "--limit",
                "60",
                "--requantize",
                "--bits",
                "8",
                "--calib",
                &calib,
                "--calib-limit",
                "64",
            ],
        );
        assert_eq!(code, 0, "{m}: {err}");
        let agree: f64 = out
            .lines()
            .chain(err.lines())
            .find_map(|l| l.strip_prefix("agreement:"))
            .and_then(|l| l.trim().split('%').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{m}: no agreement line in {out}{err}"));
        assert!(agree >= 95.0, "{m}: 8-bit requantized agrees on {agree}%");
    }
    fails(
        &dir,
        &[
            "eval",
            &model("digits_cnn_qop.onnx"),
            "--data",
            &data,
            "--requantize",
            "--bits",
            "4",
            "--calib",
            &calib,
        ],
        &["--requantize", "conv2d_int", "QOperator"],
    );
    fails(
        &dir,
        &[
            "eval",
            &model("digits_cnn_qdq.onnx"),
            "--data",
            &data,
            "--requantize",
        ],
        &["--requantize needs --bits"],
    );
    fails(
        &dir,
        &[
            "eval",
            &model("digits_cnn_qdq.onnx"),
            "--data",
            &data,
            "--bits",
            "4",
            "--calib",
            &calib,
        ],
        &["already quantized", "--requantize"],
    );
}
