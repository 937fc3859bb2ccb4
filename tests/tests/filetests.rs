//! Runs every file test under `tests/filetests/` and checks its snapshot.

use std::path::{Path, PathBuf};

fn qir_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("tests/filetests exists") {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(qir_files(&p));
        } else if p.extension().is_some_and(|e| e == "qir") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn filetests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("filetests");
    let files = qir_files(&root);
    assert!(
        !files.is_empty(),
        "no file tests found under {}",
        root.display()
    );
    let pass_names = qcc::passes::names();
    let mut failures = Vec::new();
    for file in &files {
        let folder = file.parent().unwrap();
        let pass = folder.file_name().unwrap().to_string_lossy().to_string();
        if !pass_names.contains(&pass.as_str()) {
            failures.push(format!(
                "{}: folder `{pass}` is not a pass name",
                file.display()
            ));
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let output = match qcc_tests::run_filetest(&text) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        let topic = file.file_stem().unwrap().to_string_lossy().to_string();
        let result = std::panic::catch_unwind(|| {
            insta::with_settings!({
                snapshot_path => folder.join("snapshots"),
                prepend_module_to_snapshot => false,
                omit_expression => true,
                input_file => file,
            }, {
                insta::assert_snapshot!(topic, output);
            });
        });
        if result.is_err() {
            failures.push(format!(
                "{}: output differs from its snapshot",
                file.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "file tests failed:\n{}",
        failures.join("\n")
    );
}
