//! The bit-width report page (`--report FILE.html`) opened in headless Chromium: one
//! table row and one graph node per conv/gemm/matmul layer, each with the bits the JSON
//! report gives. Without Chromium the test skips, except under `CI=true` (`.ci/run`
//! installs Debian's `chromium`), where a missing browser is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Values of attribute `attr` in the elements of `dom` that start with `open`.
fn elements<'a>(dom: &'a str, open: &str) -> Vec<&'a str> {
    dom.match_indices(open)
        .map(|(i, _)| {
            let rest = &dom[i..];
            &rest[..rest.find('>').unwrap_or(rest.len())]
        })
        .collect()
}

fn attr<'a>(el: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let i = el.find(&key)? + key.len();
    let end = el[i..].find('"')?;
    Some(&el[i..i + end])
}

/// (name, wbits, abits) of each layer in the JSON report's `quantization` section.
fn json_layers(json: &str) -> Vec<(String, u32, u32)> {
    let q = &json[json.find("\"quantization\"").expect("quantization section")..];
    q.match_indices("{\"name\": \"")
        .map(|(i, m)| {
            let rest = &q[i + m.len()..];
            let name = rest[..rest.find('"').unwrap()].replace("\\\"", "\"");
            let num = |key: &str| -> u32 {
                let k = format!("\"{key}\": ");
                let j = rest.find(&k).unwrap() + k.len();
                rest[j..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            (name, num("wbits"), num("abits"))
        })
        .collect()
}

#[test]
fn page_in_chromium_has_a_row_and_a_node_per_layer_with_the_json_bits() {
    let Some(browser) = chromium() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but no chromium: .ci/run installs Debian's chromium package");
        }
        eprintln!("skipped: no chromium (apt-get install chromium)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("qcc-report-page-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let models = root().join("tests/models");
    let (html, json) = (dir.join("r.html"), dir.join("r.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_qcc"))
        .args([
            "compile",
            models.join("digits_resnet_folded.onnx").to_str().unwrap(),
            "--budget",
            "avg-bits=3",
            "--calib",
            models.join("digits_train.npz").to_str().unwrap(),
            "--calib-limit",
            "32",
            "-o",
            dir.join("m.o").to_str().unwrap(),
            "--report",
            json.to_str().unwrap(),
            "--report",
            html.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = json_layers(&std::fs::read_to_string(&json).unwrap());
    assert_eq!(want.len(), 4, "{want:?}");
    let profile = dir.join("chromium-profile");
    let dom = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            &format!("file://{}", html.display()),
        ])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        dom.contains("<svg"),
        "chromium rendered no page: {dom:.500}"
    );
    let rows = elements(&dom, "<tr class=\"layer\"");
    let nodes = elements(&dom, "<g class=\"node\"");
    assert_eq!(rows.len(), want.len(), "rows: {rows:?}");
    assert_eq!(nodes.len(), want.len(), "nodes: {nodes:?}");
    // The sensitivity curves (one per layer) and the predicted beside the measured error.
    assert_eq!(
        elements(&dom, "<polyline class=\"curve\"").len(),
        want.len()
    );
    assert!(
        !dom.contains("<td id=\"measured\">-</td>"),
        "no measured error"
    );
    for (name, w, a) in &want {
        for set in [&rows, &nodes] {
            let el = set
                .iter()
                .find(|e| attr(e, "data-layer") == Some(name.as_str()))
                .unwrap_or_else(|| panic!("no element for layer {name}"));
            assert_eq!(attr(el, "data-wbits"), Some(w.to_string().as_str()), "{el}");
            assert_eq!(attr(el, "data-abits"), Some(a.to_string().as_str()), "{el}");
        }
    }
}
