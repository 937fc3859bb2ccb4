//! The reference interpreter against independent implementations.
//!
//! Every `tests/fixtures/interp/<op>_<n>.qir` is a small module; `<op>_<n>.npz` holds its
//! inputs (`in0, in1, ...`) and expected outputs (`out0, ...`), computed by
//! `tests/fixtures/gen_interp.py` with onnx.reference, numpy or plain Python integers,
//! never with qcc. Integer outputs must match exactly; f32 outputs within
//! `1e-5 + 1e-4 * |expected|` (NaN matches NaN, infinities match themselves).
//!
//! Regenerate the fixtures with `/work/venv/bin/python ir-spec/tests/fixtures/gen_interp.py`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use npyz::npz::NpzArchive;
use qcc_ir::interp::{self, Tensor, TensorData};
use qcc_ir::{Op, TensorType, parse_module};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interp")
}

/// Every fixture module, sorted.
fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("tests/fixtures/interp exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "qir"))
        .collect();
    v.sort();
    v
}

/// The op a fixture is named after: `conv_transpose2d_3` -> `conv_transpose2d`.
fn op_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    stem.rsplit_once('_').map_or(stem, |(op, _)| op).to_string()
}

/// Reads array `name` as a tensor of the kind `ty` is held as.
fn load(
    npz: &mut NpzArchive<impl std::io::Read + std::io::Seek>,
    name: &str,
    ty: &TensorType,
) -> Result<Tensor, String> {
    let npy = npz
        .by_name(name)
        .map_err(|e| format!("{name}: {e}"))?
        .ok_or_else(|| format!("the npz has no array `{name}`"))?;
    if npy.order() != npyz::Order::C {
        return Err(format!("{name} is stored in Fortran order"));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let data = if ty.elem.is_float() {
        TensorData::F32(
            npy.into_vec::<f32>()
                .map_err(|e| format!("{name} as f32: {e}"))?,
        )
    } else {
        TensorData::Int(
            npy.into_vec::<i64>()
                .map_err(|e| format!("{name} as i64: {e}"))?,
        )
    };
    Tensor::new(shape, data).map_err(|e| format!("{name}: {e}"))
}

fn close(got: f32, want: f32) -> bool {
    got == want || (got.is_nan() && want.is_nan()) || (got - want).abs() <= 1e-5 + 1e-4 * want.abs()
}

/// Compares one output; the message lists the first few differing elements.
fn compare(name: &str, got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!(
            "{name}: shape {:?}, expected {:?}",
            got.shape, want.shape
        ));
    }
    let bad: Vec<String> = match (&got.data, &want.data) {
        (TensorData::F32(g), TensorData::F32(w)) => g
            .iter()
            .zip(w)
            .enumerate()
            .filter(|(_, (g, w))| !close(**g, **w))
            .map(|(i, (g, w))| format!("[{i}] {g:?} vs {w:?}"))
            .collect(),
        (TensorData::Int(g), TensorData::Int(w)) => g
            .iter()
            .zip(w)
            .enumerate()
            .filter(|(_, (g, w))| g != w)
            .map(|(i, (g, w))| format!("[{i}] {g} vs {w}"))
            .collect(),
        (g, w) => return Err(format!("{name}: {} data, expected {}", g.kind(), w.kind())),
    };
    if bad.is_empty() {
        Ok(())
    } else {
        let shown: Vec<&str> = bad.iter().take(6).map(String::as_str).collect();
        Err(format!(
            "{name}: {} of {} elements differ (got vs expected): {}",
            bad.len(),
            got.numel(),
            shown.join(", ")
        ))
    }
}

fn check(qir: &Path) -> Result<(), String> {
    let src = std::fs::read_to_string(qir).map_err(|e| e.to_string())?;
    let module = parse_module(&src).map_err(|e| format!("parse: {e}"))?;
    let npz_path = qir.with_extension("npz");
    let mut npz =
        NpzArchive::open(&npz_path).map_err(|e| format!("{}: {e}", npz_path.display()))?;
    let mut inputs = Vec::new();
    for (i, &id) in module.inputs.iter().enumerate() {
        inputs.push(load(&mut npz, &format!("in{i}"), module.ty(id))?);
    }
    let outputs = interp::run(&module, &inputs).map_err(|e| format!("run: {e}"))?;
    let mut errors = Vec::new();
    for (i, (&id, got)) in module.outputs.iter().zip(&outputs).enumerate() {
        let name = format!("out{i}");
        let want = load(&mut npz, &name, module.ty(id))?;
        if let Err(e) = compare(&name, got, &want) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[test]
fn every_fixture_matches() {
    let all = fixtures();
    assert!(
        !all.is_empty(),
        "no fixtures in {}",
        fixture_dir().display()
    );
    let failures: Vec<String> = all
        .iter()
        .filter_map(|p| {
            check(p).err().map(|e| {
                format!(
                    "{}: {e}",
                    p.file_name().unwrap_or_default().to_string_lossy()
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures fail:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn every_op_has_a_fixture() {
    let named: BTreeSet<String> = fixtures().iter().map(|p| op_name(p)).collect();
    let missing: Vec<&str> = Op::ALL
        .iter()
        .map(|op| op.name())
        .filter(|n| !named.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "ops without an interpreter fixture: {missing:?}"
    );
    let unknown: Vec<&String> = named
        .iter()
        .filter(|n| Op::from_name(n).is_none())
        .collect();
    assert!(
        unknown.is_empty(),
        "fixtures named after no op: {unknown:?}"
    );
}

#[test]
fn every_fixture_uses_the_op_it_is_named_after() {
    for p in fixtures() {
        let src = std::fs::read_to_string(&p).expect("readable fixture");
        let m = parse_module(&src).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let op = op_name(&p);
        assert!(
            m.nodes.iter().any(|n| n.op.name() == op),
            "{} has no `{op}` node",
            p.display()
        );
    }
}
