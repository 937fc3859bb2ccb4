//! Recurrent layers (RNN, GRU, LSTM, unrolled by the importer; issue 14): the committed
//! models of `tests/models/gen_rnn.py` (a CRNN-shaped bidirectional LSTM, a reverse GRU
//! with `linear_before_reset`, an RNN with Relu and clip) compile, and the JIT on every
//! x86-64 tier the host has reproduces ONNX Runtime's outputs (`.ref.npz`) within 1e-4
//! relative, like the interpreter (`tests/tests/onnx_models.rs`).

use std::path::PathBuf;

use qcc::backend::{JitModel, Target, Tier};
use qcc::frontend::onnx::{ImportOptions, import_file};
use qcc::passes::cleanup;
use qcc_ir::interp::Tensor;

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/models")
}

#[test]
fn recurrent_models_match_onnx_runtime_on_every_tier() {
    let host = target_lexicon::Triple::host().to_string();
    let h = Tier::host();
    let tiers: Vec<&str> = [
        ("x86-64-v2", h.level >= 2),
        ("x86-64-v3", h.avx2()),
        ("native", true),
    ]
    .into_iter()
    .filter(|&(_, has)| has && cfg!(target_arch = "x86_64"))
    .map(|(t, _)| t)
    .collect();
    for name in ["crnn_lstm", "gru_reverse", "rnn_relu"] {
        let mut m = import_file(
            &models_dir().join(format!("{name}.onnx")),
            &ImportOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .module;
        cleanup::pipeline().run(&mut m, &mut |_| {}).unwrap();
        let mut npz =
            npyz::npz::NpzArchive::open(models_dir().join(format!("{name}.ref.npz"))).unwrap();
        let xa = npz.by_name("x").unwrap().unwrap();
        let xshape: Vec<usize> = xa.shape().iter().map(|&d| d as usize).collect();
        let x: Vec<f32> = xa.into_vec().unwrap();
        let want: Vec<f32> = npz.by_name("y").unwrap().unwrap().into_vec().unwrap();
        for cpu in &tiers {
            let t = Target::new(&host, cpu).unwrap();
            let jit = JitModel::with_target(&m, &t).unwrap_or_else(|e| panic!("{name} {cpu}: {e}"));
            let got = jit.run(&[Tensor::f32(xshape.clone(), x.clone())]).unwrap();
            let got = got[0].as_f32().unwrap();
            assert_eq!(got.len(), want.len(), "{name} {cpu}");
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                    "{name} {cpu}: {g} vs {w}"
                );
            }
        }
    }
}
