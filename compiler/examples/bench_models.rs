//! Single-thread latency of compiled models (JIT: the same code objects contain), batch 1:
//! the median of timed calls of the entry function on one random input.
//!
//!     cargo run -p qcc --example bench_models -- [--seconds S] MODEL.onnx|MODEL.qir ...
//!
//! Prints one line per model: `NAME median_us MIN_us calls MACs`. `bench/run.py` runs
//! this beside ONNX Runtime and prints the ratios.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use qcc::backend::JitModel;
use qcc_ir::interp::Tensor;

fn main() {
    let mut seconds = 2.0f64;
    let mut models = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--seconds" {
            seconds = args
                .next()
                .and_then(|s| s.parse().ok())
                .expect("--seconds takes a number");
        } else {
            models.push(a);
        }
    }
    for path in &models {
        let p = Path::new(path);
        // Symbolic batch dimensions become 1 (the frontend's default, with a warning).
        let loaded = match qcc::driver::load(p, &BTreeMap::new()) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {path}: {e:#}");
                std::process::exit(1);
            }
        };
        let m = &loaded.module;
        let jit = match JitModel::new(m) {
            Ok(j) => j,
            Err(e) => {
                eprintln!("error: {path}: {e}");
                std::process::exit(1);
            }
        };
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let inputs: Vec<Tensor> = m
            .inputs
            .iter()
            .map(|&v| {
                let ty = m.ty(v);
                let data = (0..ty.numel())
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed >> 40) as f32 / (1u64 << 24) as f32
                    })
                    .collect();
                Tensor::f32(ty.shape.clone(), data)
            })
            .collect();
        // Warm up, then time single calls until the budget is spent.
        for _ in 0..5 {
            jit.run_timed(&inputs, 1).expect("run");
        }
        let mut times: Vec<Duration> = Vec::new();
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < seconds || times.len() < 10 {
            times.push(jit.run_timed(&inputs, 1).expect("run").1);
        }
        times.sort();
        let median = times[times.len() / 2];
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!(
            "{name} {:.2} {:.2} {} {}",
            median.as_secs_f64() * 1e6,
            times[0].as_secs_f64() * 1e6,
            times.len(),
            jit.report().total_macs
        );
    }
}
