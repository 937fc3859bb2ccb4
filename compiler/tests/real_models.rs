//! The real-model suite in CI: the PP-OCR text detector (v4), recognizer (v4) and
//! direction classifier (mobile v2) of the `rapidocr-onnxruntime` 1.4.4 wheel, which
//! `.ci/run` downloads into `.data/ocr` (or `QCC_REAL_MODELS`), compile at float, 8 and 4
//! bits and run: the float build matches the reference interpreter (SQNR >= 80 dB), and
//! the quantized builds stay above a floor against float (regressions, not the bars:
//! `bench/real_models.py` compares them with ONNX Runtime). Inputs are scikit-image's
//! page scan, photos and text-line crops (`tests/models/ocr_inputs.npz`, written by
//! `gen_ocr_inputs.py`); the detector runs at 128x128 so the interpreter stays quick.
//! With `CI=true` missing models fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use npyz::WriterBuilder;
use qcc_ir::interp::Tensor;

fn models_dir() -> Option<PathBuf> {
    let d = std::env::var_os("QCC_REAL_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.data/ocr"));
    if d.join("ch_PP-OCRv4_det_infer.onnx").exists() {
        return Some(d);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but the PP-OCR models are not in {} (.ci/run extracts them from the \
         rapidocr-onnxruntime 1.4.4 wheel)",
        d.display()
    );
    eprintln!("skipped: no PP-OCR models in {}", d.display());
    None
}

/// Samples `key` of `tests/models/ocr_inputs.npz` (uint8 RGB, `gen_ocr_inputs.py`),
/// normalised as the model expects (`det`: ImageNet mean/std; else to [-1, 1]), one
/// tensor of batch 1 each.
fn samples(key: &str, det: bool) -> Vec<Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/models/ocr_inputs.npz");
    let t = qcc::npy::read_npz_array(&path, key).unwrap();
    let v: Vec<f32> = match &t.data {
        qcc_ir::interp::TensorData::Int(v) => v.iter().map(|&c| c as f32 / 255.0).collect(),
        qcc_ir::interp::TensorData::F32(_) => panic!("{key}: expected uint8"),
    };
    let (mean, std) = if det {
        ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225])
    } else {
        ([0.5; 3], [0.5; 3])
    };
    let per: usize = t.shape[1..].iter().product();
    let plane = per / 3;
    let mut shape = t.shape.clone();
    shape[0] = 1;
    v.chunks(per)
        .map(|x| {
            let data = x
                .iter()
                .enumerate()
                .map(|(i, g)| (g - mean[i / plane]) / std[i / plane])
                .collect();
            Tensor::f32(shape.clone(), data)
        })
        .collect()
}

fn write_npz(path: &Path, xs: &[Tensor]) {
    let mut shape = xs[0].shape.clone();
    shape[0] = xs.len();
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut npz = npyz::npz::NpzWriter::create(path).unwrap();
    let mut w = npz
        .array::<f32>("x", Default::default())
        .unwrap()
        .default_dtype()
        .shape(&shape)
        .begin_nd()
        .unwrap();
    for x in xs {
        w.extend(x.as_f32().unwrap().iter().copied()).unwrap();
    }
    w.finish().unwrap();
}

/// `qcc run` (or `interp`) of `model` on `x`: its one output, or with `size`, the output
/// of that many elements (the one a reference holds, of several).
fn qcc(
    cmd: &str,
    model: &Path,
    shape: &str,
    x: &Path,
    dir: &Path,
    flags: &[&str],
    size: Option<usize>,
) -> Vec<f32> {
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let o = Command::new(env!("CARGO_BIN_EXE_qcc"))
        .arg(cmd)
        .arg(model)
        .args(["--input-shape", shape, "--input"])
        .arg(x)
        .arg("--out")
        .arg(&out)
        .args(flags)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "qcc {cmd} {} {flags:?}:\n{}",
        model.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let outs: Vec<Tensor> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| qcc::npy::read_npy(&e.unwrap().path()).unwrap())
        .collect();
    let t = match size {
        Some(n) => outs.into_iter().find(|t| t.numel() == n),
        None => {
            assert_eq!(outs.len(), 1, "{} has one output", model.display());
            outs.into_iter().next()
        }
    };
    t.expect("an output of the reference's size")
        .as_f32()
        .unwrap()
        .to_vec()
}

fn sqnr(r: &[f32], g: &[f32]) -> f64 {
    let s: f64 = r.iter().map(|&v| (v as f64).powi(2)).sum();
    let e: f64 = r
        .iter()
        .zip(g)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    if e == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (s / e).log10()
    }
}

// Measured (Sapphire Rapids, 2026-12-05): det 4.4 dB (the page squeezed to 128x128 leaves
// little text; `bench/real_models.py` runs it at 320x320), rec 15.4 dB, cls 18.5 dB.
const FLOOR_DET: f64 = 2.0;
const FLOOR_REC: f64 = 12.0;
const FLOOR_CLS: f64 = 15.0;

#[test]
fn pp_ocr_models_compile_at_float_8_and_4_bits() {
    let Some(dir) = models_dir() else { return };
    let tmp = std::env::temp_dir().join(format!("qcc-real-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // (model, inputs' key, input shape, det normalisation, floor of the 8-bit SQNR
    // against float, measured minus a margin).
    let cases = [
        (
            "ch_PP-OCRv4_det_infer.onnx",
            "det",
            [128, 128],
            true,
            FLOOR_DET,
        ),
        (
            "ch_PP-OCRv4_rec_infer.onnx",
            "rec",
            [48, 320],
            false,
            FLOOR_REC,
        ),
        (
            "ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "cls",
            [48, 192],
            false,
            FLOOR_CLS,
        ),
    ];
    for (name, key, [h, w], det, floor8) in cases {
        let model = dir.join(name);
        let shape = format!("x=1,3,{h},{w}");
        let calib = tmp.join(format!("{key}.calib.npz"));
        write_npz(&calib, &samples(&format!("{key}_calib"), det));
        let calib = calib.to_str().unwrap();
        let (mut want, mut float, mut q8, mut q4) = (vec![], vec![], vec![], vec![]);
        for (i, s) in samples(&format!("{key}_x"), det).iter().enumerate() {
            let x = tmp.join(format!("{key}.x{i}.npy"));
            qcc::npy::write_npy(&x, s).unwrap();
            want.extend(qcc("interp", &model, &shape, &x, &tmp, &[], None));
            float.extend(qcc("run", &model, &shape, &x, &tmp, &[], None));
            q8.extend(qcc(
                "run",
                &model,
                &shape,
                &x,
                &tmp,
                &["--bits", "8", "--calib", calib, "--quiet"],
                None,
            ));
            q4.extend(qcc(
                "run",
                &model,
                &shape,
                &x,
                &tmp,
                &["--bits", "4", "--calib", calib, "--quiet"],
                None,
            ));
        }
        let db = sqnr(&want, &float);
        eprintln!("{name}: float JIT vs interpreter {db:.1} dB");
        assert!(db >= 80.0, "{name}: float JIT vs interpreter {db:.1} dB");
        for (bits, q, floor) in [("8", &q8, floor8), ("4", &q4, f64::NEG_INFINITY)] {
            assert!(
                q.iter().all(|v| v.is_finite()),
                "{name} --bits {bits}: non-finite output"
            );
            let db = sqnr(&float, q);
            eprintln!("{name}: --bits {bits} vs float {db:.1} dB");
            assert!(
                db >= floor,
                "{name}: --bits {bits} vs float {db:.1} dB (floor {floor})"
            );
        }
    }
    if std::env::var_os("QCC_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

/// The generated suite models (`tests/models/gen_suite_models.py`, committed with ONNX
/// Runtime's outputs): a YOLOv8-style detector and a BERT-style encoder. The float build
/// matches ONNX Runtime at 80 dB or more; 8 and 4 bits (calibrated on other random
/// inputs) compile, run and stay above measured floors.
#[test]
fn generated_suite_models_match_onnx_runtime() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/models");
    let tmp = std::env::temp_dir().join(format!("qcc-suite-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // (model, input shape, floors of the 8- and 4-bit SQNR against float; measured on
    // Sapphire Rapids 2026-12-05: yolo 57.5 / 35.4 dB, bert 32.1 / 10.3 dB).
    for (name, shape, floor8, floor4) in [
        ("yolo_tiny", "images=1,3,160,160", 45.0, 25.0),
        ("bert_tiny", "embeddings=1,32,64", 25.0, 6.0),
    ] {
        let model = dir.join(format!("{name}.onnx"));
        let refs = dir.join(format!("{name}.ref.npz"));
        let x = qcc::npy::read_npz_array(&refs, "x").unwrap();
        let y0 = qcc::npy::read_npz_array(&refs, "y").unwrap();
        let per_x = x.numel() / x.shape[0];
        let per_y = y0.numel() / y0.shape[0];
        let xs = x.as_f32().unwrap();
        let ys = y0.as_f32().unwrap();
        // Calibration: other inputs of the same kind (uniform images, normal embeddings).
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut shape1 = x.shape.clone();
        shape1[0] = 1;
        let calib: Vec<Tensor> = (0..4)
            .map(|_| {
                let v = (0..per_x)
                    .map(|_| {
                        if name == "yolo_tiny" {
                            next()
                        } else {
                            // Sum of four uniforms, centred: roughly normal, unit variance.
                            ((next() + next() + next() + next()) - 2.0) * 1.732
                        }
                    })
                    .collect();
                Tensor::f32(shape1.clone(), v)
            })
            .collect();
        let calib_path = tmp.join(format!("{name}.calib.npz"));
        write_npz(&calib_path, &calib);
        let calib_path = calib_path.to_str().unwrap();
        let (mut float, mut q8, mut q4, mut want) = (vec![], vec![], vec![], vec![]);
        for i in 0..x.shape[0] {
            let xi = tmp.join(format!("{name}.x{i}.npy"));
            qcc::npy::write_npy(
                &xi,
                &Tensor::f32(shape1.clone(), xs[i * per_x..(i + 1) * per_x].to_vec()),
            )
            .unwrap();
            want.extend_from_slice(&ys[i * per_y..(i + 1) * per_y]);
            float.extend(qcc("run", &model, shape, &xi, &tmp, &[], Some(per_y)));
            q8.extend(qcc(
                "run",
                &model,
                shape,
                &xi,
                &tmp,
                &["--bits", "8", "--calib", calib_path, "--quiet"],
                Some(per_y),
            ));
            q4.extend(qcc(
                "run",
                &model,
                shape,
                &xi,
                &tmp,
                &["--bits", "4", "--calib", calib_path, "--quiet"],
                Some(per_y),
            ));
        }
        let db = sqnr(&want, &float);
        eprintln!("{name}: float vs ONNX Runtime {db:.1} dB");
        assert!(db >= 80.0, "{name}: float vs ONNX Runtime {db:.1} dB");
        for (bits, q, floor) in [("8", &q8, floor8), ("4", &q4, floor4)] {
            let db = sqnr(&float, q);
            eprintln!("{name}: --bits {bits} vs float {db:.1} dB");
            assert!(
                db >= floor,
                "{name}: --bits {bits} vs float {db:.1} dB (floor {floor})"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
