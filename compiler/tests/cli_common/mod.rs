//! Running the `qcc` binary from integration tests (shared by the CLI test files).

#![allow(dead_code, reason = "each test binary uses a subset of these helpers")]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `qcc ARGS` in the repository root: (success, stdout, stderr).
pub fn qcc(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qcc"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run qcc");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh, empty folder for one test: `qcc-<prefix>-<pid>-<name>` in the temp dir.
pub fn temp_dir(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qcc-{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
