//! Helpers of the backend's differential tests: building modules node by node, random
//! data, and comparing the JIT with the reference interpreter.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::collections::BTreeMap;

use qcc::backend::JitModel;
use qcc_ir::interp::{self, Tensor, TensorData};
use qcc_ir::{Attr, Attrs, ConstData, ElemType, Module, Op, TensorType, ValueId};

/// Float tolerance of compiled code against the interpreter (which accumulates in f64):
/// `|jit - interp| <= TOL * (1 + |interp|)`.
pub const TOL: f32 = 1e-4;

/// A small deterministic generator (xorshift64*), seeded by proptest.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi).
    pub fn f(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub fn fs(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.f(lo, hi)).collect()
    }
    /// Uniform in [lo, hi].
    pub fn i(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }
    pub fn is(&mut self, n: usize, lo: i64, hi: i64) -> Vec<i64> {
        (0..n).map(|_| self.i(lo, hi)).collect()
    }
}

/// `n` random codes over the whole range of `e`.
pub fn codes(r: &mut Rng, e: &ElemType, n: usize) -> Vec<i64> {
    let (lo, hi) = e.code_range().unwrap();
    r.is(n, lo, hi)
}

/// A requantize after `y` (channels along `axis`, `c` of them) to `out`: `kind` 0 none,
/// 1 per tensor, 2 per channel; multipliers in [2^20, 2^30], shifts in `shifts`.
#[allow(
    clippy::too_many_arguments,
    reason = "one requantize's random parameters"
)]
pub fn requant_to(
    b: &mut B,
    r: &mut Rng,
    y: ValueId,
    kind: usize,
    c: usize,
    axis: i64,
    shifts: (i64, i64),
    out: ElemType,
) -> ValueId {
    if kind == 0 {
        return y;
    }
    let cnt = if kind == 2 { c } else { 1 };
    let mult: Vec<i64> = (0..cnt).map(|_| r.i(1 << 20, 1 << 30)).collect();
    let shift: Vec<i64> = (0..cnt).map(|_| r.i(shifts.0, shifts.1)).collect();
    b.node(
        Op::Requantize,
        &[y],
        attrs(&[
            ("multiplier", ints(&mult)),
            ("shift", ints(&shift)),
            ("axis", Attr::Int(axis)),
        ]),
        out,
    )
}

pub fn attrs(list: &[(&str, Attr)]) -> BTreeMap<String, Attr> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

pub fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

/// Builds a module and the inputs to run it on.
pub struct B {
    pub m: Module,
    pub inputs: Vec<Tensor>,
}

impl B {
    pub fn new() -> B {
        B {
            m: Module::new("t"),
            inputs: Vec::new(),
        }
    }

    pub fn input_f32(&mut self, shape: &[usize], data: Vec<f32>) -> ValueId {
        let name = self.m.fresh_name("x");
        self.inputs.push(Tensor::f32(shape.to_vec(), data));
        self.m.add_input(name, TensorType::f32(shape.to_vec()))
    }

    pub fn input_int(&mut self, elem: ElemType, shape: &[usize], data: Vec<i64>) -> ValueId {
        let name = self.m.fresh_name("x");
        self.inputs.push(Tensor::int(shape.to_vec(), data));
        self.m
            .add_input(name, TensorType::new(elem, shape.to_vec()))
    }

    pub fn const_f32(&mut self, shape: &[usize], data: Vec<f32>) -> ValueId {
        let name = self.m.fresh_name("c");
        self.m
            .add_const(name, TensorType::f32(shape.to_vec()), ConstData::F32(data))
    }

    pub fn const_int(&mut self, elem: ElemType, shape: &[usize], data: Vec<i64>) -> ValueId {
        let name = self.m.fresh_name("c");
        self.m.add_const(
            name,
            TensorType::new(elem, shape.to_vec()),
            ConstData::Int(data),
        )
    }

    /// Either an input or a constant holding `data`.
    pub fn f32_operand(&mut self, constant: bool, shape: &[usize], data: Vec<f32>) -> ValueId {
        if constant {
            self.const_f32(shape, data)
        } else {
            self.input_f32(shape, data)
        }
    }

    /// Adds `op(operands)`; the result type comes from the type rules (`elem` is the
    /// declared element type for ops whose result type the producer chooses).
    pub fn node(
        &mut self,
        op: Op,
        operands: &[ValueId],
        a: BTreeMap<String, Attr>,
        elem: ElemType,
    ) -> ValueId {
        let tys: Vec<TensorType> = operands.iter().map(|&o| self.m.ty(o).clone()).collect();
        let refs: Vec<&TensorType> = tys.iter().collect();
        let declared = TensorType::new(elem, vec![]);
        let ty = qcc_ir::typing::infer(op, &Attrs::new(op, &a), &refs, &declared)
            .unwrap_or_else(|e| panic!("{op}: {e}"));
        let name = self.m.fresh_name("v");
        self.m.add_node(op, operands.to_vec(), a, name, ty)
    }

    pub fn f(&mut self, op: Op, operands: &[ValueId], a: BTreeMap<String, Attr>) -> ValueId {
        self.node(op, operands, a, ElemType::F32)
    }

    pub fn output(&mut self, v: ValueId) {
        self.m.outputs.push(v);
    }
}

/// Runs `b` through the interpreter and the JIT; integer outputs must be identical,
/// float outputs within [`TOL`]. Returns Err with a description on mismatch.
pub fn check(b: &B) -> Result<(), String> {
    qcc_ir::verify::verify(&b.m).map_err(|e| format!("invalid test module:\n{e}"))?;
    let want = interp::run(&b.m, &b.inputs).map_err(|e| format!("interp: {e}"))?;
    let jit = JitModel::new(&b.m).map_err(|e| format!("compile: {e}\n{}", b.m))?;
    let got = jit.run(&b.inputs).map_err(|e| format!("run: {e}"))?;
    for (k, (w, g)) in want.iter().zip(&got).enumerate() {
        if w.shape != g.shape {
            return Err(format!("output {k}: shape {:?} vs {:?}", w.shape, g.shape));
        }
        match (&w.data, &g.data) {
            (TensorData::F32(w), TensorData::F32(g)) => {
                for (i, (a, c)) in w.iter().zip(g).enumerate() {
                    let ok = (a.is_nan() && c.is_nan())
                        || a == c
                        || (a - c).abs() <= TOL * (1.0 + a.abs());
                    if !ok {
                        return Err(format!(
                            "output {k}[{i}]: interp {a}, jit {c}\nmodule:\n{}\nreport:\n{}",
                            b.m,
                            jit.report()
                        ));
                    }
                }
            }
            (TensorData::Int(w), TensorData::Int(g)) => {
                if let Some(i) = (0..w.len()).find(|&i| w[i] != g[i]) {
                    return Err(format!(
                        "output {k}[{i}]: interp {}, jit {}\nmodule:\n{}\nreport:\n{}",
                        w[i],
                        g[i],
                        b.m,
                        jit.report()
                    ));
                }
            }
            _ => return Err(format!("output {k}: data kinds differ")),
        }
    }
    Ok(())
}

/// Whether `aarch64-linux-gnu-gcc` and `qemu-aarch64` are installed; CI must have them.
pub fn have_aarch64_tools() -> bool {
    use std::process::Command;
    let have = |t: &str| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have("aarch64-linux-gnu-gcc") && have("qemu-aarch64") {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but aarch64-linux-gnu-gcc or qemu-aarch64 is missing"
    );
    eprintln!("skipped: aarch64-linux-gnu-gcc / qemu-aarch64 not installed");
    false
}

/// Compiles `b` (f32 inputs and outputs) into an aarch64 object (baseline features),
/// links it statically with a small C driver, runs it under qemu on `b`'s inputs and
/// returns the compile report and every output value. Call after
/// [`have_aarch64_tools`].
pub fn run_aarch64(b: &B, tag: &str) -> (qcc::backend::Report, Vec<f32>) {
    run_aarch64_cpu(b, tag, "baseline")
}

/// [`run_aarch64`] for the aarch64 `--cpu` feature set `cpu` (`baseline+dotprod`: qemu
/// runs it as its `max` CPU, which has every extension qcc can name).
pub fn run_aarch64_cpu(b: &B, tag: &str, cpu: &str) -> (qcc::backend::Report, Vec<f32>) {
    use std::process::Command;
    let t = qcc::backend::Target::new("aarch64-unknown-linux-gnu", cpu).unwrap();
    let c = qcc::backend::compile_object(&b.m, "t", &t).unwrap();
    let dir = std::env::temp_dir().join(format!("qcc-{tag}-a64-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("t.o"), &c.object).unwrap();
    std::fs::write(dir.join("t.h"), &c.header).unwrap();
    std::fs::write(dir.join("main.c"), HARNESS).unwrap();
    let inputs: Vec<u8> = b
        .inputs
        .iter()
        .flat_map(|t| t.as_f32().unwrap().to_vec())
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.join("in.bin"), inputs).unwrap();
    let out = Command::new("aarch64-linux-gnu-gcc")
        .args(["-O2", "-std=c11", "-static", "-I"])
        .arg(&dir)
        .arg(dir.join("main.c"))
        .arg(dir.join("t.o"))
        .arg("-o")
        .arg(dir.join("t"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("qemu-aarch64")
        .args(["-cpu", "max"])
        .arg(dir.join("t"))
        .arg(dir.join("in.bin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<f32> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    (c.report, got)
}

/// Reads the inputs (raw f32) from argv[1], runs the model, prints every output value.
const HARNESS: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include "t.h"
int main(int argc, char **argv) {
    if (argc < 2) return 1;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 1;
    const float *ins[t_NUM_INPUTS];
    float *outs[t_NUM_OUTPUTS];
    for (size_t i = 0; i < t_NUM_INPUTS; i++) {
        size_t n = t_input_size(i);
        float *p = malloc(n * sizeof(float) + 4);
        if (!p || fread(p, sizeof(float), n, f) != n) return 2;
        ins[i] = p;
    }
    for (size_t i = 0; i < t_NUM_OUTPUTS; i++) outs[i] = malloc(t_output_size(i) * sizeof(float) + 4);
    size_t s = (t_scratch_size() + 127) / 64 * 64;
    void *scratch = aligned_alloc(64, s);
    if (!scratch || t_run(ins, outs, scratch) != 0) return 3;
    for (size_t i = 0; i < t_NUM_OUTPUTS; i++)
        for (size_t j = 0; j < t_output_size(i); j++) printf("%.9g\n", outs[i][j]);
    return 0;
}
"#;

/// The proptest configuration of the differential tests: `PROPTEST_CASES` cases (48 by
/// default), no failure files.
pub fn cfg() -> proptest::prelude::ProptestConfig {
    proptest::prelude::ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(48),
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    }
}

/// The JIT for the host triple with the `baseline` feature set (x86_64: SSE2, no
/// `popcnt`) must equal the interpreter exactly.
pub fn check_baseline(b: &B) -> Result<(), String> {
    check_cpu(b, "baseline")
}

/// The JIT for the host triple with the `--cpu` feature set `cpu` (one the host runs)
/// must equal the interpreter exactly.
pub fn check_cpu(b: &B, cpu: &str) -> Result<(), String> {
    let want = interp::run(&b.m, &b.inputs).map_err(|e| format!("interp: {e}"))?;
    let t = qcc::backend::Target::new(&target_lexicon::Triple::host().to_string(), cpu)
        .map_err(|e| e.to_string())?;
    let jit = JitModel::with_target(&b.m, &t).map_err(|e| format!("{cpu}: compile: {e}"))?;
    let got = jit.run(&b.inputs).map_err(|e| format!("{cpu}: run: {e}"))?;
    for (w, g) in want.iter().zip(&got) {
        if w.shape != g.shape || w.data != g.data {
            return Err(format!(
                "{cpu} differs from the interpreter\n{}\n{}",
                b.m,
                jit.report()
            ));
        }
    }
    Ok(())
}

/// The kernel the JIT chose for the module's first step.
pub fn kernel_of(b: &B) -> String {
    let jit = JitModel::new(&b.m).unwrap();
    jit.report().layers[0].kernel.clone()
}
