//! Typed inputs and outputs at the object boundary: integer, boolean and quantized-code
//! tensors keep their types (the header names each one's C type and `qcc_elem`), float-
//! only models keep ABI v1's float header, and a C program linking the object computes
//! what the interpreter does.

mod examples_common;

use std::process::Command;

use examples_common::*;
use qcc_ir::interp::{self, Tensor};

const MODEL: &str = "module typed {
 input %x: f32[2,5]
 input %k: i32[2,5]
 input %b: u1[2,5]
 %kf: f32[2,5] = cast(%k)
 %s: f32[2,5] = add(%x, %kf)
 %w: f32[2,5] = where(%b, %s, %x)
 %am: i32[2,1] = arg_max(%w) {axis = 1}
 %q: q<u8, 0.1:3>[2,5] = quantize(%w)
 %n: u1[2,5] = not(%b)
 output %w, %am, %q, %n
}
";

/// Fills the inputs as the C program below does.
fn inputs() -> Vec<Tensor> {
    let x: Vec<f32> = (0..10).map(|i| (i as f32 - 4.5) * 0.37).collect();
    let k: Vec<i64> = (0..10).map(|i| (i * 7) % 5 - 2).collect();
    let b: Vec<i64> = (0..10).map(|i| (i % 3 != 0) as i64).collect();
    vec![
        Tensor::f32(vec![2, 5], x),
        Tensor::int(vec![2, 5], k),
        Tensor::int(vec![2, 5], b),
    ]
}

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include "typed.h"

_Static_assert(typed_INPUT_TYPE_0 == QCC_F32, "x is float");
_Static_assert(typed_INPUT_TYPE_1 == QCC_I32, "k is int32");
_Static_assert(typed_INPUT_TYPE_2 == QCC_U8, "b is bool as uint8");
_Static_assert(typed_OUTPUT_TYPE_1 == QCC_I32, "arg_max is int32");
_Static_assert(typed_OUTPUT_TYPE_2 == QCC_U8, "codes are uint8");

int main(void) {
    float x[10]; int32_t k[10]; uint8_t b[10];
    for (int i = 0; i < 10; i++) {
        x[i] = (i - 4.5f) * 0.37f;
        k[i] = (i * 7) % 5 - 2;
        b[i] = i % 3 != 0;
    }
    float w[10]; int32_t am[2]; uint8_t q[10], n[10];
    const void *in[3] = {x, k, b};
    void *out[4] = {w, am, q, n};
    void *scratch = aligned_alloc(64, (typed_scratch_size() + 63) / 64 * 64 + 64);
    int rc = typed_run(in, out, scratch);
    if (rc != 0) { printf("rc %d\n", rc); return 1; }
    for (int i = 0; i < 10; i++) printf("%.9g ", w[i]);
    printf("\n%d %d\n", am[0], am[1]);
    for (int i = 0; i < 10; i++) printf("%d ", q[i]);
    printf("\n");
    for (int i = 0; i < 10; i++) printf("%d ", n[i]);
    printf("\n");
    free(scratch);
    return 0;
}
"#;

#[test]
fn typed_boundary_from_c_matches_the_interpreter() {
    let m = qcc_ir::parse_module(MODEL).unwrap();
    let want = interp::run(&m, &inputs()).unwrap();
    let ints = |t: &Tensor| {
        t.as_int()
            .unwrap()
            .iter()
            .map(|v| format!("{v} "))
            .collect::<String>()
    };
    let floats: String = want[0]
        .as_f32()
        .unwrap()
        .iter()
        .map(|v| format!("{} ", v))
        .collect();
    // The JIT takes and gives the same typed tensors.
    let jit = qcc::backend::JitModel::new(&m).unwrap();
    assert_eq!(jit.run(&inputs()).unwrap(), want);

    if !have("cc") {
        eprintln!("skipped the C program: no C compiler `cc`");
        return;
    }
    let dir = temp_dir("typed");
    std::fs::write(dir.join("typed.qir"), MODEL).unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_qcc"))
        .arg("compile")
        .arg(dir.join("typed.qir"))
        .arg("-o")
        .arg(dir.join("typed.o")));
    let h = std::fs::read_to_string(dir.join("typed.h")).unwrap();
    assert!(
        h.contains(
            "int typed_run(const void *const *inputs, void *const *outputs, void *scratch);"
        ),
        "{h}"
    );
    assert!(
        h.contains("/* input 1: %k i32[2,5] (10 elements of int32_t) */"),
        "{h}"
    );
    assert!(
        h.contains("/* output 2: %q q<u8, 0.1:3>[2,5] (10 elements of uint8_t) */"),
        "{h}"
    );
    std::fs::write(dir.join("main.c"), PROGRAM).unwrap();
    let exe = dir.join("typed");
    run(Command::new("cc")
        .args(["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(&dir)
        .arg(dir.join("main.c"))
        .arg(dir.join("typed.o"))
        .arg("-o")
        .arg(&exe));
    let text = run(&mut Command::new(&exe));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let got_w: Vec<f32> = lines[0]
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(got_w.as_slice(), want[0].as_f32().unwrap(), "{floats}");
    assert_eq!(format!("{} ", lines[1]), ints(&want[1]));
    assert_eq!(lines[2], ints(&want[2]));
    assert_eq!(lines[3], ints(&want[3]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A float-only model's header is ABI v1's float form, without the typed additions.
#[test]
fn float_models_keep_the_float_header() {
    let m = qcc_ir::parse_module(
        "module f {\n input %x: f32[1,4]\n %y: f32[1,4] = relu(%x)\n output %y\n}",
    )
    .unwrap();
    let host = target_lexicon::Triple::host().to_string();
    let t = qcc::backend::Target::new(&host, "native").unwrap();
    let h = qcc::backend::compile_object(&m, "f", &t).unwrap().header;
    assert!(
        h.contains("int f_run(const float *const *inputs, float *const *outputs, void *scratch);")
    );
    assert!(h.contains("dense row-major float32 tensors at the boundary"));
    assert!(!h.contains("qcc_elem") && !h.contains("_TYPE_"), "{h}");
}

const INT64_PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include "int64_io.h"

_Static_assert(int64_io_INPUT_TYPE_0 == QCC_I64, "ids are int64");
_Static_assert(int64_io_OUTPUT_TYPE_0 == QCC_I64, "the class index is int64");
_Static_assert(int64_io_OUTPUT_TYPE_1 == QCC_F32, "m is float");

static void serial_for(void *pool, size_t n, void (*task)(void *, size_t), void *arg) {
    (void)pool;
    for (size_t i = 0; i < n; i++) task(arg, i);
}

int main(void) {
    int64_t ids[6] = {3, -7, 49, 0, 12, 3};
    int64_t cls[1] = {-99};
    float m[5];
    const void *in[1] = {ids};
    void *out[2] = {cls, m};
    void *scratch = aligned_alloc(64, (int64_io_scratch_size() + 63) / 64 * 64 + 64);
    int rc = int64_io_run(in, out, scratch);
    printf("%d %lld\n", rc, (long long)cls[0]);
    for (int i = 0; i < 5; i++) printf("%.9g ", m[i]);
    printf("\n");
    /* Values beyond int32: 3, and nothing written. */
    cls[0] = -99;
    ids[4] = (int64_t)1 << 40;
    int big = int64_io_run(in, out, scratch);
    ids[4] = -((int64_t)1 << 31) - 1;
    int low = int64_io_run(in, out, scratch);
    long long untouched = (long long)cls[0];
    ids[4] = -((int64_t)1 << 31);
    int edge = int64_io_run(in, out, scratch);
    printf("%d %d %d %lld\n", big, low, edge, untouched);
    /* The threaded entry converts too (a serial parallel_for with two threads). */
    ids[4] = 12;
    cls[0] = -99;
    size_t bytes = int64_io_scratch_size_threads(2);
    void *scratch2 = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    qcc_ctx ctx = {NULL, serial_for, 2, bytes};
    int rc2 = int64_io_run_ctx(&ctx, in, out, scratch2);
    ids[4] = (int64_t)1 << 40;
    int big2 = int64_io_run_ctx(&ctx, in, out, scratch2);
    printf("%d %lld %d\n", rc2, (long long)cls[0], big2);
    free(scratch2);
    free(scratch);
    return 0;
}
"#;

/// An ONNX model whose input (token ids) and one output (an ArgMax index) are int64:
/// int32 inside, int64 at the object's boundary (the header says `int64_t` and
/// `QCC_I64`); a C program gets ONNX Runtime's results, and `NAME_run` returns 3 for an
/// input value beyond int32 (int32's own extremes pass).
#[test]
fn int64_boundary_from_c_matches_onnx_runtime() {
    use qcc::frontend::onnx::{ImportOptions, import_file};
    let path = model("int64_io");
    let imported = import_file(&path, &ImportOptions::default()).unwrap();
    assert_eq!(imported.int64_inputs, [true]);
    assert_eq!(imported.int64_outputs, [true, false]);
    let refs = root().join("tests/models/int64_io.ref.npz");
    let ids = qcc::npy::read_npz_array(&refs, "ids").unwrap();
    let cls = qcc::npy::read_npz_array(&refs, "cls").unwrap();
    let m_ref = qcc::npy::read_npz_array(&refs, "m").unwrap();
    let want = interp::run(&imported.module, std::slice::from_ref(&ids)).unwrap();
    assert_eq!(want[0].as_int().unwrap(), cls.as_int().unwrap());

    if !have("cc") {
        eprintln!("skipped the C program: no C compiler `cc`");
        return;
    }
    let dir = temp_dir("int64");
    run(Command::new(env!("CARGO_BIN_EXE_qcc"))
        .arg("compile")
        .arg(&path)
        .arg("-o")
        .arg(dir.join("int64_io.o")));
    let h = std::fs::read_to_string(dir.join("int64_io.h")).unwrap();
    assert!(
        h.contains("/* input 0: %ids i32[1,6] as int64 (6 elements of int64_t) */"),
        "{h}"
    );
    assert!(h.contains("beyond int32 (3, before anything runs)"), "{h}");
    std::fs::write(dir.join("main.c"), INT64_PROGRAM).unwrap();
    let exe = dir.join("int64_io");
    run(Command::new("cc")
        .args(["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(&dir)
        .arg(dir.join("main.c"))
        .arg(dir.join("int64_io.o"))
        .arg("-o")
        .arg(&exe));
    let text = run(&mut Command::new(&exe));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(
        lines[0],
        format!("0 {}", cls.as_int().unwrap()[0]),
        "{text}"
    );
    let got_m: Vec<f32> = lines[1]
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    // Float sums in another order than the interpreter's and ONNX Runtime's.
    for (g, r) in got_m.iter().zip(m_ref.as_f32().unwrap()) {
        assert!(
            (g - r).abs() <= 1e-4 * r.abs().max(1.0),
            "{got_m:?} against {m_ref:?}"
        );
    }
    // Beyond int32 above and below: 3 with the output untouched; int32's minimum: 0.
    assert_eq!(lines[2], "3 3 0 -99", "{text}");
    assert_eq!(
        lines[3],
        format!("0 {} 3", cls.as_int().unwrap()[0]),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
