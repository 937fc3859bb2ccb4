//! `qcc bench` (median first, then min, max, throughput; `--threads`; clear errors for
//! flags it does not take) and a compiled model shared by threads (`JitModel` is
//! `Send + Sync`).

mod cli_common;

use std::sync::Arc;

use cli_common::qcc;
use qcc::backend::JitModel;
use qcc::frontend::onnx::{ImportOptions, import_file};
use qcc::passes::cleanup;
use qcc_ir::interp::Tensor;

#[test]
fn bench_prints_the_median_first() {
    let (ok, out, err) = qcc(&[
        "bench",
        "tests/models/digits_cnn_folded.onnx",
        "--runs",
        "25",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 4, "{out}");
    let value = |l: &str, key: &str| -> f64 {
        l.strip_prefix(key)
            .and_then(|r| r.trim().split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("`{key}` line expected, found {l:?}"))
    };
    let median = value(lines[0], "median");
    let min = value(lines[1], "min");
    let max = value(lines[2], "max");
    assert!(min > 0.0 && min <= median && median <= max, "{out}");
    let thr = value(lines[3], "throughput");
    assert!((thr - 1000.0 / median).abs() <= 0.01 * thr, "{out}");
    assert!(lines[3].contains("25 runs"), "{out}");
    // Two threads: the threaded entry on a pool.
    let (ok, out, err) = qcc(&[
        "bench",
        "tests/models/digits_cnn_folded.onnx",
        "--runs",
        "5",
        "--threads",
        "2",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("(5 runs, 2 threads)"), "{out}");
    for (flag, value, needle) in [
        ("--threads", "0", "--threads 0"),
        ("--runs", "0", "--runs 0"),
    ] {
        let (ok, _, err) = qcc(&["bench", "tests/models/digits_cnn_folded.onnx", flag, value]);
        assert!(!ok);
        assert!(err.contains(needle), "{err}");
    }
}

/// One compiled model run from 8 threads at once, each with its own inputs, gives each
/// thread what a single-threaded run gives.
#[test]
fn one_model_many_threads() {
    let path = cli_common::root().join("tests/models/digits_resnet_folded.onnx");
    let mut m = import_file(&path, &ImportOptions::default())
        .unwrap()
        .module;
    cleanup::pipeline().run(&mut m, &mut |_| {}).unwrap();
    let jit = Arc::new(JitModel::new(&m).unwrap());
    let input = |k: usize| {
        let data: Vec<f32> = (0..64)
            .map(|i| ((i * 7 + k * 13) % 17) as f32 / 16.0)
            .collect();
        vec![Tensor::f32(vec![1, 1, 8, 8], data)]
    };
    let want: Vec<Vec<Tensor>> = (0..8).map(|k| jit.run(&input(k)).unwrap()).collect();
    let handles: Vec<_> = (0..8)
        .map(|k| {
            let jit = Arc::clone(&jit);
            std::thread::spawn(move || {
                let x = input(k);
                (0..200).map(|_| jit.run(&x).unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    for (k, h) in handles.into_iter().enumerate() {
        for got in h.join().unwrap() {
            assert_eq!(got, want[k], "thread {k}");
        }
    }
}
