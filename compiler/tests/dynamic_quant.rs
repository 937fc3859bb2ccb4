//! Models quantized by ONNX Runtime's dynamic quantizer (issue 14): the committed models
//! of `tests/models/gen_dynamic_quant.py` — an MLP (DynamicQuantizeLinear + MatMulInteger,
//! int8 per tensor and uint8 per channel, and the com.microsoft DynamicQuantizeMatMul
//! that ONNX Runtime's optimizer fuses them into), a conv net (ConvInteger with a
//! run-time zero point, per tensor and per channel) and the CRNN-shaped bidirectional
//! LSTM (com.microsoft DynamicQuantizeLSTM, int8 per tensor and per channel, uint8) —
//! import with every op supported; the interpreter and the JIT on every x86-64 tier the
//! host has reproduce ONNX Runtime's outputs (`.ref.npz`), and the JIT equals the
//! interpreter.
//!
//! Tolerances. The MLP and conv net compute what ONNX Runtime computes, in its order:
//! the activation's scale and zero point, its u8 codes and the i32 accumulators are
//! exact integers or the same f32 operations, and the float steps after them (`f32(acc) *
//! (a_scale * w_scale)`, bias, Relu) are the same f32 operations too; they are compared
//! within 1e-5 relative (bit-exact when this was written). The LSTM quantizes H at every
//! step from a state that went through sigmoid and tanh, which ONNX Runtime computes
//! with its own kernels (MLAS, which differ by CPU); a one-ulp difference can move a
//! code of H across a rounding boundary and change that step's product by one code
//! times the scales, so the LSTM models are compared within 2e-3 absolute on logits of
//! magnitude ~1. Measured when this was written: bit-exact (0) for all three. The
//! alternative reading of DynamicQuantizeLSTM — a float LSTM with dequantized W and R,
//! no activation quantization — differs from ONNX Runtime by 0.009 to 0.011 on these
//! models, so the tolerance tells the two apart. ONNX Runtime quantizes H over the
//! rows one thread handles when it splits a batch across threads; the references are
//! made with one thread (and batch 1), where that is the whole H. JIT against
//! interpreter: within 1e-5 relative.
use std::path::PathBuf;

use qcc::backend::{JitModel, Target, Tier};
use qcc::frontend::onnx::{ImportOptions, import_file, is_supported, opset_version, read_model};
use qcc::passes::cleanup;
use qcc_ir::interp::Tensor;

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/models")
}

/// (model, ops it must contain, tolerance against ONNX Runtime: (absolute, relative)).
const MODELS: &[(&str, &[&str], (f32, f32))] = &[
    (
        "dyn_mlp",
        &["DynamicQuantizeLinear", "MatMulInteger"],
        (1e-6, 1e-5),
    ),
    (
        "dyn_mlp_u8pc",
        &["DynamicQuantizeLinear", "MatMulInteger"],
        (1e-6, 1e-5),
    ),
    ("dyn_mlp_fused", &["DynamicQuantizeMatMul"], (1e-6, 1e-5)),
    (
        "dyn_convnet",
        &["DynamicQuantizeLinear", "ConvInteger"],
        (1e-6, 1e-5),
    ),
    (
        "dyn_convnet_pc",
        &["DynamicQuantizeLinear", "ConvInteger"],
        (1e-6, 1e-5),
    ),
    (
        "dyn_crnn_lstm",
        &["DynamicQuantizeLSTM", "ConvInteger"],
        (2e-3, 0.0),
    ),
    (
        "dyn_crnn_lstm_pc",
        &["DynamicQuantizeLSTM", "ConvInteger"],
        (2e-3, 0.0),
    ),
    (
        "dyn_crnn_lstm_u8",
        &["DynamicQuantizeLSTM", "ConvInteger"],
        (2e-3, 0.0),
    ),
];

fn tiers() -> Vec<&'static str> {
    let h = Tier::host();
    [
        ("x86-64-v2", h.level >= 2),
        ("x86-64-v3", h.avx2()),
        ("native", true),
    ]
    .into_iter()
    .filter(|&(t, has)| has && (cfg!(target_arch = "x86_64") || t == "native"))
    .map(|(t, _)| t)
    .collect()
}

fn max_diff(got: &[f32], want: &[f32], rel: f32) -> (f32, bool) {
    assert_eq!(got.len(), want.len());
    let mut worst = 0f32;
    let mut ok = true;
    for (g, w) in got.iter().zip(want) {
        let d = (g - w).abs();
        worst = worst.max(d);
        if !(d <= rel * w.abs()) {
            ok = false;
        }
    }
    (worst, ok)
}

#[test]
fn dynamically_quantized_models_match_onnx_runtime() {
    let host = target_lexicon::Triple::host().to_string();
    for &(name, ops, (abs_tol, rel_tol)) in MODELS {
        let path = models_dir().join(format!("{name}.onnx"));
        // Every op is supported, and the model holds the ops it is meant to test.
        let model = read_model(&path).unwrap();
        let graph = model.graph.as_ref().unwrap();
        let unsupported: Vec<String> = graph
            .node
            .iter()
            .filter(|n| !is_supported(&n.domain, &n.op_type, opset_version(&model, &n.domain)))
            .map(|n| format!("{}:{}", n.domain, n.op_type))
            .collect();
        assert!(
            unsupported.is_empty(),
            "{name}: unsupported {unsupported:?}"
        );
        for op in ops {
            assert!(
                graph.node.iter().any(|n| n.op_type == *op),
                "{name} holds no {op}"
            );
        }
        let imp =
            import_file(&path, &ImportOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut m = imp.module;
        cleanup::pipeline().run(&mut m, &mut |_| {}).unwrap();
        let mut npz =
            npyz::npz::NpzArchive::open(models_dir().join(format!("{name}.ref.npz"))).unwrap();
        let xa = npz.by_name("x").unwrap().unwrap();
        let xshape: Vec<usize> = xa.shape().iter().map(|&d| d as usize).collect();
        let x: Vec<f32> = xa.into_vec().unwrap();
        let want: Vec<f32> = npz.by_name("y").unwrap().unwrap().into_vec().unwrap();
        let input = Tensor::f32(xshape, x);

        let interp = qcc_ir::interp::run(&m, std::slice::from_ref(&input)).unwrap();
        let interp = interp[0].as_f32().unwrap().to_vec();
        let (d, ok) = max_diff(&interp, &want, rel_tol);
        println!("{name}: interpreter vs ONNX Runtime: max |diff| {d:e}");
        assert!(
            ok || d <= abs_tol,
            "{name}: interpreter differs from ONNX Runtime by {d}"
        );
        // The tolerance is not vacuous: the outputs are not all near zero.
        assert!(
            want.iter().any(|w| w.abs() > 0.1),
            "{name}: reference is ~0"
        );

        for cpu in tiers() {
            let t = Target::new(&host, cpu).unwrap();
            let jit = JitModel::with_target(&m, &t).unwrap_or_else(|e| panic!("{name} {cpu}: {e}"));
            let got = jit.run(std::slice::from_ref(&input)).unwrap();
            let got = got[0].as_f32().unwrap();
            let (d, ok) = max_diff(got, &want, rel_tol);
            println!("{name} {cpu}: JIT vs ONNX Runtime: max |diff| {d:e}");
            assert!(
                ok || d <= abs_tol,
                "{name} {cpu}: JIT differs from ONNX Runtime by {d}"
            );
            let (d, ok) = max_diff(got, &interp, 1e-5);
            assert!(
                ok || d <= 1e-6,
                "{name} {cpu}: JIT differs from the interpreter by {d}"
            );
        }
    }
}
