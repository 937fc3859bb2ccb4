//! Calibration profiles: `qcc calibrate ... -o FILE.qprof` and `--profile FILE.qprof`.

mod cli_common;

use std::path::Path;

use cli_common::{qcc, root, temp_dir};

use qcc::quant::{CalibMethod, CalibOptions, Profile, calibrate};

const MODEL: &str = "tests/models/digits_cnn_folded.onnx";
const OTHER: &str = "tests/models/digits_resnet_folded.onnx";
const DATA: &str = "tests/models/digits_train.npz";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `qcc calibrate MODEL --calib DATA --calib-limit n -o out`.
fn calibrate_cli(model: &str, n: usize, out: &Path) {
    let n = n.to_string();
    let (ok, _, err) = qcc(&[
        "calibrate",
        model,
        "--calib",
        DATA,
        "--calib-limit",
        &n,
        "-o",
        s(out),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("wrote"), "{err}");
}

#[test]
fn round_trip_gives_equal_stats() {
    let dir = temp_dir("qprof", "rt");
    let p = dir.join("cnn.qprof");
    calibrate_cli(MODEL, 12, &p);
    let loaded = qcc::driver::load(&root().join(MODEL), &Default::default()).unwrap();
    let m = &loaded.module;
    let opts = CalibOptions {
        limit: Some(12),
        progress: false,
        ..Default::default()
    };
    let stats = calibrate(m, &root().join(DATA), &opts).unwrap();
    assert_eq!(stats.samples, 12);
    assert!(stats.values.values().any(|v| !v.hist.is_empty()));
    assert!(stats.values.values().any(|v| !v.ch_min.is_empty()));
    // Written by the CLI, read by the library.
    let profile = Profile::load(&p).unwrap();
    assert_eq!(profile.version, qcc::quant::profile::VERSION);
    assert_eq!(profile.model_file, "digits_cnn_folded.onnx");
    assert_eq!(profile.data_file, "digits_train.npz");
    assert_eq!(profile.sample_limit, Some(12));
    profile.check_model(m, "p").unwrap();
    assert_eq!(profile.stats(CalibMethod::MinMax), stats);
    // Saved and loaded by the library.
    let q = dir.join("lib.qprof");
    Profile::new(&stats, m, Path::new(MODEL), Path::new(DATA), Some(12))
        .save(&q)
        .unwrap();
    let back = qcc::quant::profile::load_stats(&q, m, CalibMethod::MinMax).unwrap();
    assert_eq!(back, stats);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compile_with_profile_matches_compile_with_calib() {
    let dir = temp_dir("qprof", "same");
    let p = dir.join("cnn.qprof");
    calibrate_cli(MODEL, 16, &p);
    for method in ["minmax", "kl"] {
        let (a, b) = (
            dir.join(format!("calib-{method}.o")),
            dir.join(format!("prof-{method}.o")),
        );
        let common = ["compile", MODEL, "--bits", "8", "--calib-method", method];
        let mut with_calib = common.to_vec();
        with_calib.extend(["--calib", DATA, "--calib-limit", "16", "-o", s(&a)]);
        let (ok, _, err_calib) = qcc(&with_calib);
        assert!(ok, "{err_calib}");
        let mut with_profile = common.to_vec();
        with_profile.extend(["--profile", s(&p), "-o", s(&b)]);
        let (ok, _, err_prof) = qcc(&with_profile);
        assert!(ok, "{err_prof}");
        assert!(
            err_prof.contains(&format!("activation ranges by {method} on 16 samples")),
            "{err_prof}"
        );
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{method}: objects differ"
        );
        assert_eq!(
            std::fs::read(a.with_extension("h")).unwrap(),
            std::fs::read(b.with_extension("h")).unwrap()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn profile_of_another_model_is_rejected() {
    let dir = temp_dir("qprof", "wrong");
    let p = dir.join("cnn.qprof");
    calibrate_cli(MODEL, 4, &p);
    let o = dir.join("resnet.o");
    let (ok, _, err) = qcc(&[
        "compile",
        OTHER,
        "--bits",
        "8",
        "--profile",
        s(&p),
        "-o",
        s(&o),
    ]);
    assert!(!ok);
    assert!(err.contains(s(&p)), "{err}");
    assert!(err.contains("made for another model"), "{err}");
    assert!(err.contains("digits_cnn_folded.onnx"), "{err}");
    assert!(err.contains("qcc calibrate"), "{err}");
    assert!(!o.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn garbage_and_misuse_are_reported() {
    let dir = temp_dir("qprof", "bad");
    let g = dir.join("garbage.qprof");
    std::fs::write(&g, b"\x08\x96\x01 this is not a profile \xff\xff").unwrap();
    let o = dir.join("m.o");
    let (ok, _, err) = qcc(&[
        "compile",
        MODEL,
        "--bits",
        "8",
        "--profile",
        s(&g),
        "-o",
        s(&o),
    ]);
    assert!(!ok);
    assert!(
        err.contains(&format!("{} is not a qcc calibration profile", s(&g))),
        "{err}"
    );
    // An ONNX model is protobuf too, but not a profile.
    let (ok, _, err) = qcc(&[
        "compile",
        MODEL,
        "--bits",
        "8",
        "--profile",
        MODEL,
        "-o",
        s(&o),
    ]);
    assert!(!ok);
    assert!(err.contains("is not a qcc calibration profile"), "{err}");
    // A missing file.
    let missing = dir.join("missing.qprof");
    let (ok, _, err) = qcc(&[
        "compile",
        MODEL,
        "--bits",
        "8",
        "--profile",
        s(&missing),
        "-o",
        s(&o),
    ]);
    assert!(!ok);
    assert!(err.contains("cannot read calibration profile"), "{err}");
    assert!(err.contains(s(&missing)), "{err}");
    // --profile and --calib exclude each other; --profile needs --bits.
    let (ok, _, err) = qcc(&[
        "compile",
        MODEL,
        "--bits",
        "8",
        "--profile",
        s(&g),
        "--calib",
        DATA,
    ]);
    assert!(!ok);
    assert!(
        err.contains("--profile") && err.contains("--calib"),
        "{err}"
    );
    let (ok, _, err) = qcc(&["compile", MODEL, "--profile", s(&g), "-o", s(&o)]);
    assert!(!ok);
    assert!(err.contains("--profile needs --bits"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
