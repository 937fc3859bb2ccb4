//! SPEC.md's op section must be the one generated from the op table.
//! `QCC_BLESS=1 cargo test -p qcc-ir --test spec` rewrites it.

use std::path::Path;

#[test]
fn spec_md_is_in_step_with_the_op_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("SPEC.md");
    let current = std::fs::read_to_string(&path).expect("ir-spec/SPEC.md exists");
    let fresh = qcc_ir::spec::splice(&current).expect("SPEC.md has the generated-section markers");
    if std::env::var_os("QCC_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write SPEC.md");
        return;
    }
    assert!(
        current == fresh,
        "ir-spec/SPEC.md is stale: its op section differs from the op table. \
         Run `QCC_BLESS=1 cargo test -p qcc-ir --test spec` and commit SPEC.md."
    );
}

#[test]
fn every_op_is_documented() {
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("SPEC.md")).unwrap();
    for op in qcc_ir::Op::ALL {
        assert!(
            spec.contains(&format!("\n### {}\n", op.name())),
            "SPEC.md lacks a section for {op}"
        );
    }
}
