//! Objects with assembled wide tiles (`kernels::dot`): byte-identical for the same
//! model and flags, one definition per distinct tile, the tier recorded in the header,
//! and (where the host has the tier and a C compiler) linked with `cc` and run: the
//! outputs equal the interpreter's.

mod backend_common;

use std::process::Command;

use backend_common::{B, Rng, attrs, ints, requant_to};
use qcc::backend::{Target, Tier, compile_object};
use qcc_ir::interp;
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType};

fn qt(bits: u8, signed: bool, zp: i32) -> ElemType {
    ElemType::Quant(QuantType {
        storage: IntType::new(bits, signed),
        narrow: false,
        pow2: false,
        params: QuantParams::PerTensor {
            scale: 0.05,
            zero_point: zp,
        },
    })
}

/// quantize -> two 3x3 conv2d_int (16 channels, the second with 4-bit weights) with
/// requantizes -> dequantize, on f32 at the boundary.
fn model() -> B {
    let mut r = Rng(99);
    let mut b = B::new();
    let x = b.input_f32(&[1, 16, 9, 11], r.fs(16 * 99, -3.0, 3.0));
    let xq = b.node(Op::Quantize, &[x], attrs(&[]), qt(8, false, 3));
    let w1 = b.const_int(qt(8, true, 0), &[16, 16, 3, 3], r.is(16 * 144, -128, 127));
    let pads = ("pads", ints(&[1; 4]));
    let y = b.node(
        Op::Conv2dInt,
        &[xq, w1],
        attrs(std::slice::from_ref(&pads)),
        ElemType::I32,
    );
    let y = requant_to(&mut b, &mut r, y, 2, 16, 1, (24, 30), qt(8, true, -1));
    let w2 = b.const_int(qt(4, true, 0), &[16, 16, 3, 3], r.is(16 * 144, -8, 7));
    let z = b.node(
        Op::Conv2dInt,
        &[y, w2],
        attrs(&[pads, ("group", Attr::Int(1))]),
        ElemType::I32,
    );
    let z = requant_to(&mut b, &mut r, z, 1, 16, 1, (24, 30), qt(8, true, 2));
    let out = b.f(Op::Dequantize, &[z], attrs(&[]));
    b.output(out);
    b
}

const MAIN_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include "wide.h"

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 3;
    size_t n = wide_input_size(0);
    float *x = malloc(n * sizeof(float));
    if (fread(x, sizeof(float), n, f) != n) return 4;
    fclose(f);
    size_t m = wide_output_size(0);
    float *y = malloc(m * sizeof(float));
    void *scratch = aligned_alloc(64, (wide_scratch_size() + 63) / 64 * 64 + 64);
    const float *ins[1] = {x};
    float *outs[1] = {y};
    int rc = wide_run(ins, outs, scratch);
    if (rc != 0) return 10 + rc;
    printf("%s\n", WIDE_CPU_TIER);
    for (size_t i = 0; i < m; i++) printf("%.9g\n", y[i]);
    return 0;
}
"#;

#[test]
fn wide_objects_are_deterministic_and_define_each_tile_once() {
    let b = model();
    for cpu in [
        "x86-64-v3",
        "x86-64-v4+vnni",
        "x86-64-v4+vnni+vpopcntdq+bitalg",
    ] {
        let t = Target::new("x86_64-unknown-linux-gnu", cpu).unwrap();
        let a = compile_object(&b.m, "wide", &t).unwrap();
        let c = compile_object(&b.m, "wide", &t).unwrap();
        assert_eq!(a.object, c.object, "{cpu}");
        assert_eq!(a.header, c.header);
        assert!(
            a.header
                .contains(&format!("#define WIDE_CPU_TIER \"{cpu}\""))
        );
        let wide: Vec<_> = a
            .report
            .layers
            .iter()
            .filter(|l| l.tier.is_some())
            .collect();
        // Both layers: v3 runs the 8-bit one (which fails the pair check) on the
        // i16-widening tile.
        assert_eq!(wide.len(), 2, "{}", a.report);
        // The 8-bit layer's weights (16 x 144): i8 rows, or i16 rows for the
        // i16-widening tile, and the report counts the bytes the object holds.
        let w8 = 16 * 144;
        let rodata = wide[0].rodata_bytes as usize;
        if cpu == "x86-64-v3" {
            assert!(rodata >= 2 * w8, "{rodata}\n{}", a.report);
        } else {
            assert!((w8..2 * w8).contains(&rodata), "{rodata}\n{}", a.report);
        }
        assert_eq!(a.report.tier.as_deref(), Some(cpu));
        let asm = qcc::backend::emit_asm(&b.m, "wide", &t).unwrap();
        let want = if cpu.contains("vnni") {
            "vpdpbusd zmm"
        } else {
            "vpmaddubsw ymm"
        };
        assert!(asm.contains(want), "{cpu}");
        assert!(asm.contains("wide__a_cpu_check_v"), "{cpu}");
        let tiles = asm
            .lines()
            .filter(|l| l.starts_with("wide__a_dot_") && l.ends_with(':'))
            .count();
        let mut names: Vec<&str> = asm
            .lines()
            .filter(|l| l.starts_with("wide__a_dot_") && l.ends_with(':'))
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(tiles, names.len(), "a tile defined twice:\n{names:?}");
    }
}

#[test]
fn bad_cpu_values_name_the_value_and_what_works() {
    let host = target_lexicon::Triple::host().to_string();
    for (cpu, says) in [
        ("x86-64-v5", "x86-64-v5"),
        ("x86-64-v3+vnni", "needs x86-64-v4"),
        ("x86-64-v4+avx9", "+avx9"),
    ] {
        let e = Target::new(&host, cpu).unwrap_err().to_string();
        assert!(e.contains(says) && e.contains("x86-64-v3"), "{cpu}: {e}");
    }
    let e = Target::new("aarch64-unknown-linux-gnu", "x86-64-v3")
        .unwrap_err()
        .to_string();
    assert!(e.contains("aarch64"), "{e}");
    for ok in ["baseline", "haswell", "x86-64-v2", "x86-64-v4+bitalg"] {
        Target::new(&host, ok).unwrap();
    }
}

#[test]
fn wide_objects_link_and_match_the_interpreter() {
    if !cfg!(target_arch = "x86_64") || Command::new("cc").arg("--version").output().is_err() {
        eprintln!("skipped: not x86-64 or no C compiler `cc`");
        return;
    }
    let b = model();
    let want = interp::run(&b.m, &b.inputs).unwrap();
    let want = want[0].as_f32().unwrap();
    let host = Tier::host();
    let dir = std::env::temp_dir().join(format!("qcc-wide-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let xs = b.inputs[0].as_f32().unwrap();
    let bytes: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("x.bin"), bytes).unwrap();
    std::fs::write(dir.join("main.c"), MAIN_C).unwrap();
    for cpu in ["x86-64-v3", "x86-64-v4+vnni"] {
        let t = Target::new("x86_64-unknown-linux-gnu", cpu).unwrap();
        let tier = t.tier().unwrap().unwrap();
        let c = compile_object(&b.m, "wide", &t).unwrap();
        std::fs::write(dir.join("wide.o"), &c.object).unwrap();
        std::fs::write(dir.join("wide.h"), &c.header).unwrap();
        let st = Command::new("cc")
            .current_dir(&dir)
            .args([
                "-std=c11", "-Wall", "-Werror", "-o", "app", "main.c", "wide.o",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "link failed");
        let out = Command::new(dir.join("app"))
            .arg(dir.join("x.bin"))
            .output()
            .unwrap();
        if !tier.within(host) {
            // The CPU check refuses to run: code 2 from NAME_run.
            assert_eq!(out.status.code(), Some(12), "{cpu}");
            println!("tier {cpu}: not on this CPU; NAME_run returned 2");
            continue;
        }
        assert!(out.status.success(), "{cpu}: app failed: {:?}", out.status);
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), cpu);
        let got: Vec<f32> = lines.map(|l| l.parse().unwrap()).collect();
        assert_eq!(got, want, "{cpu}");
        println!("tier {cpu}: linked, ran, matches the interpreter");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
