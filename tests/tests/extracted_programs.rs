//! Snapshots of the programs the rewrite engine extracts from the committed quantized
//! digits models (imported, then `fold-constants`, `rewrite`, `dce`): which integer
//! kernels, requantizations and types each layer ends up with. Constant data is left out
//! of the snapshot (only its declaration line is kept, without the values), so a change
//! of rule or cost model shows as a readable diff.
//! `INSTA_UPDATE=always cargo test -p qcc-tests --test extracted_programs` blesses.

use std::path::PathBuf;

use qcc::frontend::onnx::{ImportOptions, import_file};
use qcc::passes::Pipeline;

fn extracted(model: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(model);
    let mut m = import_file(&path, &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{model}: {e}"))
        .module;
    let mut p = Pipeline::from_names("test", &["fold-constants", "rewrite", "dce"]).unwrap();
    p.verify_each = true;
    p.run(&mut m, &mut |_| {}).unwrap();
    m.to_string()
        .lines()
        .map(|l| match l.split_once(" = [") {
            Some((decl, _)) if l.trim_start().starts_with("const ") => format!("{decl} = [...]"),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn digits_cnn_qdq() {
    insta::assert_snapshot!(extracted("digits_cnn_qdq.onnx"));
}

#[test]
fn digits_cnn_qop() {
    insta::assert_snapshot!(extracted("digits_cnn_qop.onnx"));
}

#[test]
fn digits_resnet_qdq() {
    insta::assert_snapshot!(extracted("digits_resnet_qdq.onnx"));
}
