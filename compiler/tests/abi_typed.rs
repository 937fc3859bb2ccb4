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
