//! End to end: compile the digits CNN to an object, link it with a C program using `cc`,
//! run it, and compare with the reference interpreter. Also: the object needs no
//! external symbol (no libm, no runtime), and compiling twice gives the same bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

use qcc::backend::{Target, compile_object};
use qcc_ir::interp;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn digits() -> (qcc_ir::Module, interp::Tensor) {
    let text = std::fs::read_to_string(root().join("examples/interp/digits_cnn.qir")).unwrap();
    let m = qcc_ir::parse_module(&text).unwrap();
    let x = qcc::npy::read_npy(&root().join("examples/interp/digit0.npy")).unwrap();
    (m, x)
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qcc-backend-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

const MAIN_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include "digits.h"

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 3;
    size_t n = digits_input_size(0);
    float *x = malloc(n * sizeof(float));
    if (fread(x, sizeof(float), n, f) != n) return 4;
    fclose(f);
    size_t m = digits_output_size(0);
    float *y = malloc(m * sizeof(float));
    size_t s = digits_scratch_size();
    void *scratch = aligned_alloc(64, (s + 63) / 64 * 64 + 64);
    const float *ins[1] = {x};
    float *outs[1] = {y};
    /* Bad arguments are refused. */
    if (digits_run(ins, outs, NULL) == 0 && s > 0) return 5;
    if (digits_run(ins, outs, (char *)scratch + 4) == 0 && s > 0) return 6;
    if (digits_run(ins, outs, scratch) != 0) return 7;
    printf("rank %zu dims", digits_output_rank(0));
    for (size_t i = 0; i < digits_output_rank(0); i++) printf(" %lld", (long long)digits_output_dims(0)[i]);
    printf("\n");
    for (size_t i = 0; i < m; i++) printf("%.9g\n", y[i]);
    return 0;
}
"#;

#[test]
fn digits_object_links_with_c_and_matches_interpreter() {
    if !have("cc") {
        eprintln!("skipped: no C compiler `cc`");
        return;
    }
    let (m, x) = digits();
    let c = compile_object(&m, "digits", &Target::host()).unwrap();
    let dir = temp_dir("e2e");
    std::fs::write(dir.join("digits.o"), &c.object).unwrap();
    std::fs::write(dir.join("digits.h"), &c.header).unwrap();
    std::fs::write(dir.join("main.c"), MAIN_C).unwrap();
    let xs = x.as_f32().unwrap();
    let bytes: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("x.bin"), bytes).unwrap();
    let st = Command::new("cc")
        .current_dir(&dir)
        .args([
            "-std=c11", "-Wall", "-Werror", "-o", "app", "main.c", "digits.o",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "link failed");
    if have("nm") {
        let out = Command::new("nm")
            .arg("-u")
            .arg(dir.join("digits.o"))
            .output()
            .unwrap();
        let undefined = String::from_utf8_lossy(&out.stdout);
        assert!(
            undefined.trim().is_empty(),
            "the object needs symbols: {undefined}"
        );
    }
    let out = Command::new(dir.join("app"))
        .arg(dir.join("x.bin"))
        .output()
        .unwrap();
    assert!(out.status.success(), "app failed: {:?}", out.status);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), "rank 2 dims 1 10");
    let got: Vec<f32> = lines.map(|l| l.parse().unwrap()).collect();
    let want = interp::run(&m, &[x]).unwrap();
    let want = want[0].as_f32().unwrap();
    assert_eq!(got.len(), want.len());
    for (a, b) in want.iter().zip(&got) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn objects_and_headers_are_deterministic() {
    let (m, _) = digits();
    for cpu in ["baseline", "haswell"] {
        let t = Target::new("x86_64-unknown-linux-gnu", cpu).unwrap();
        let a = compile_object(&m, "digits", &t).unwrap();
        let b = compile_object(&m, "digits", &t).unwrap();
        assert_eq!(a.object, b.object, "{cpu}");
        assert_eq!(a.header, b.header);
    }
    let t = Target::new("aarch64-unknown-linux-gnu", "baseline").unwrap();
    let a = compile_object(&m, "digits", &t).unwrap();
    let b = compile_object(&m, "digits", &t).unwrap();
    assert_eq!(a.object, b.object);
}

#[test]
fn clif_is_annotated_with_nodes() {
    let (m, _) = digits();
    let clif = qcc::backend::emit_clif(&m, "digits", &Target::host()).unwrap();
    assert!(
        clif.contains("; qcc node: %features/features.0/Conv_output_0: f32[1,8,8,8] = conv2d(")
    );
    assert!(clif.contains(";   fused: %features/features.2/Relu_output_0"));
    assert!(clif.contains("function u0:0("));
}

#[test]
fn report_json_and_text() {
    let (m, _) = digits();
    let r = qcc::backend::report(&m, &Target::host()).unwrap();
    assert_eq!(r.layers.len(), 5);
    assert_eq!(r.total_macs, 4608 + 18432 + 640);
    let j = r.to_json();
    // The GEMM is the host tier's: `gemm6x8` (128-bit), `vfmadd231ps.ymm` or `.zmm`.
    assert!(j.contains("\"kernel\": \"conv2d.im2col+"), "{j}");
    assert!(j.contains(".f32+relu\""), "{j}");
    assert!(r.to_string().contains("totals: 23680 MACs"));
}

#[test]
fn integer_boundaries_take_the_typed_header() {
    // Quantized codes cross the boundary as their storage (typed I/O, abi_typed.rs).
    let m = qcc_ir::parse_module(
        "module q {\n  input %x: f32[4]\n  %q: q<i8, 0.5:0>[4] = quantize(%x)\n  output %q\n}\n",
    )
    .unwrap();
    let c = compile_object(&m, "q", &Target::host()).unwrap();
    assert!(
        c.header
            .contains("/* output 0: %q q<i8, 0.5:0>[4] (4 elements of int8_t) */"),
        "{}",
        c.header
    );
    assert!(
        c.header.contains("#define q_OUTPUT_TYPE_0 QCC_I8"),
        "{}",
        c.header
    );
}
