//! ONNX backend node tests (conformance): every case named in
//! `tests/onnx-node-allowlist.txt` is imported (graph inputs bound to the case's input
//! data, so that inputs the IR needs as constants — shapes, scales, zero points, clip
//! bounds — are constants and the rest stay run-time inputs), run through the reference
//! interpreter, and compared with the case's expected outputs: floats within
//! `1e-5 + 1e-3 * |expected|` (the ONNX backend test's default rtol), integers exactly.
//!
//! The data (`onnx/backend/test/data/node` of the onnx 1.22.0 wheel) is found through
//! `QCC_ONNX_NODE_TESTS`; `.ci/run` fetches it. Without it the test is skipped, except
//! under CI (`CI=true`), where it fails. With `QCC_ONNX_NODE_REPORT=FILE` every case of
//! the data is run and its result written to FILE (for maintaining the allow-list).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qcc::frontend::onnx::tensor::{CData, CTensor, read_tensor_file};
use qcc::frontend::onnx::{ImportOptions, import_model, read_model};
use qcc_ir::interp::{Tensor, TensorData};

fn allowlist_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx-node-allowlist.txt")
}

/// `(cases that must pass, excluded cases with their reasons)`.
fn read_allowlist() -> (Vec<String>, BTreeMap<String, String>) {
    let text = std::fs::read_to_string(allowlist_path()).expect("the allow-list exists");
    let mut pass = Vec::new();
    let mut skip = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("skip ") {
            let (name, reason) = rest
                .split_once(':')
                .unwrap_or_else(|| panic!("line {}: `skip NAME: reason`", i + 1));
            assert!(!reason.trim().is_empty(), "line {}: give a reason", i + 1);
            skip.insert(name.trim().to_string(), reason.trim().to_string());
        } else {
            assert!(line.starts_with("test_"), "line {}: {line:?}", i + 1);
            pass.push(line.to_string());
        }
    }
    (pass, skip)
}

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("QCC_ONNX_NODE_TESTS").map(PathBuf::from);
    match dir {
        Some(d) if d.join("test_abs").is_dir() || d.is_dir() => Some(d),
        _ => {
            let msg = "ONNX node test data not found: set QCC_ONNX_NODE_TESTS to the onnx 1.22.0 wheel's onnx/backend/test/data/node (.ci/run fetches it into .data/onnx-node)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("skipped: {msg}");
            None
        }
    }
}

fn close(got: &Tensor, want: &CTensor) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!("shape {:?}, expected {:?}", got.shape, want.shape));
    }
    match (&got.data, &want.data) {
        (TensorData::F32(g), CData::F(w)) => {
            for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
                let ok =
                    (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-5 + 1e-3 * w.abs();
                if !ok {
                    return Err(format!("element {i}: {g}, expected {w}"));
                }
            }
            Ok(())
        }
        (TensorData::Int(g), CData::I(w)) => match g.iter().zip(w).position(|(a, b)| a != b) {
            Some(i) => Err(format!("element {i}: {}, expected {}", g[i], w[i])),
            None => Ok(()),
        },
        (TensorData::Int(g), CData::F(w)) => {
            // e.g. a bool or integer output compared with float data: compare values.
            match g.iter().zip(w).position(|(&a, &b)| a as f32 != b) {
                Some(i) => Err(format!("element {i}: {}, expected {}", g[i], w[i])),
                None => Ok(()),
            }
        }
        (TensorData::F32(_), CData::I(_)) => {
            Err(format!("float output, expected {} data", want.dtype.name()))
        }
    }
}

/// Runs one case; `Err` says why it failed.
fn run_case(dir: &Path) -> Result<(), String> {
    let model = read_model(&dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let graph = model.graph.as_ref().ok_or("no graph")?;
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let data = dir.join("test_data_set_0");
    let mut opts = ImportOptions::default();
    let mut k = 0;
    for vi in &graph.input {
        if inits.contains(vi.name.as_str()) {
            continue;
        }
        let p = data.join(format!("input_{k}.pb"));
        k += 1;
        if !p.exists() {
            continue; // an optional input left out
        }
        let (_, c) = read_tensor_file(&p)?;
        opts.bindings.insert(vi.name.clone(), c.to_tensor());
    }
    let imp = import_model(&model, Some(dir), &opts).map_err(|e| e.to_string())?;
    let inputs: Vec<Tensor> = imp
        .input_names
        .iter()
        .map(|n| {
            opts.bindings
                .get(n)
                .cloned()
                .ok_or(format!("no data for input `{n}`"))
        })
        .collect::<Result<_, _>>()?;
    let outs = qcc_ir::interp::run(&imp.module, &inputs).map_err(|e| e.to_string())?;
    for (k, (name, got)) in imp.output_names.iter().zip(&outs).enumerate() {
        let (_, want) = read_tensor_file(&data.join(format!("output_{k}.pb")))?;
        close(got, &want).map_err(|e| format!("output `{name}`: {e}"))?;
    }
    Ok(())
}

fn run_guarded(dir: &Path) -> Result<(), String> {
    match std::panic::catch_unwind(|| run_case(dir)) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "PANIC: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

#[test]
fn onnx_node_tests() {
    let (pass, skip) = read_allowlist();
    assert!(
        pass.len() >= 300,
        "the allow-list names {} cases, at least 300 are expected",
        pass.len()
    );
    for p in &pass {
        assert!(!skip.contains_key(p), "{p} is both allowed and skipped");
    }
    let Some(dir) = data_dir() else {
        return;
    };
    if let Ok(report) = std::env::var("QCC_ONNX_NODE_REPORT") {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        let mut lines = Vec::new();
        for n in names {
            let line = match run_guarded(&dir.join(&n)) {
                Ok(()) => format!("pass {n}"),
                Err(e) => format!("fail {n}: {}", e.replace('\n', " ")),
            };
            lines.push(line);
        }
        std::fs::write(report, lines.join("\n") + "\n").unwrap();
    }
    let mut failures = Vec::new();
    for name in &pass {
        let case = dir.join(name);
        if !case.is_dir() {
            failures.push(format!("{name}: no such case in {}", dir.display()));
            continue;
        }
        if let Err(e) = run_guarded(&case) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} allow-listed ONNX node tests failed:\n{}",
        failures.len(),
        pass.len(),
        failures.join("\n")
    );
}
