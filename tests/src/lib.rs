//! Test support for qcc: the file-test runner.
//!
//! A file test is `tests/filetests/<pass>/<topic>.qir`: a header of `// run: PASS[, PASS]`
//! (the passes to run, in order; the folder is named after the pass under test), comment
//! lines saying what the cases show, then one or more modules separated by `// -----`.
//! Each case is parsed, verified, run through the passes (verifying after each), and
//! printed; the outputs, joined by `// -----`, are the file's insta snapshot in
//! `tests/filetests/<pass>/snapshots/<topic>.snap`. An expected failure (a pass error, an
//! invalid module) is printed in place of the module, so it is snapshotted too.
//! `INSTA_UPDATE=always cargo test -p qcc-tests --test filetests` blesses new output.

use qcc::passes::Pipeline;

/// The case separator.
pub const SEPARATOR: &str = "// -----";

/// Runs one file test's text; returns the output to snapshot, or an error in the test
/// file itself (a missing header, an unknown pass).
pub fn run_filetest(text: &str) -> Result<String, String> {
    let passes: Vec<String> = text
        .lines()
        .take_while(|l| l.starts_with("//"))
        .find_map(|l| l.strip_prefix("// run:"))
        .ok_or("the file must start with a `// run: PASS[, PASS]` line")?
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut pipeline = Pipeline::from_names("// run:", &passes).map_err(|e| e.to_string())?;
    pipeline.verify_each = true;
    let mut outputs = Vec::new();
    for (i, case) in text.split(SEPARATOR).enumerate() {
        let out = match qcc_ir::parse_module(case) {
            Err(e) => format!("// case {}: parse error: {e}\n", i + 1),
            Ok(mut m) => match pipeline.run(&mut m, &mut |_| {}) {
                Ok(_) => m.to_string(),
                Err(e) => format!("// case {}: error: {e}\n", i + 1),
            },
        };
        outputs.push(out);
    }
    Ok(outputs.join(&format!("{SEPARATOR}\n")))
}
