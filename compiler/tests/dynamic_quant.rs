//! Models quantized by ONNX Runtime's dynamic quantizer (issue 14): the committed models
//! of `tests/models/gen_dynamic_quant.py` — an MLP (DynamicQuantizeLinear + MatMulInteger,
//! int8 per tensor and uint8 per channel, and the com.microsoft DynamicQuantizeMatMul
//! that ONNX Runtime's optimizer fuses them into), a conv net (ConvInteger with a
//! run-time zero point, per tensor and per channel), the CRNN-shaped bidirectional
//! LSTM (com.microsoft DynamicQuantizeLSTM, int8 per tensor and per channel, uint8) and
//! an LSTM with every optional input (reverse, batch 2, peepholes, initial states) —
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
//! magnitude ~1. Measured when this was written: bit-exact (0) for the three CRNN
//! models, 1.2e-7 (one ulp of an output) for the peephole LSTM. The
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
    ("dyn_lstm_peep", &["DynamicQuantizeLSTM"], (2e-3, 0.0)),
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
        if d.is_nan() || d > rel * w.abs() {
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

// ---- DynamicQuantizeLinear on edge inputs ----

use qcc::frontend::onnx::import_model;
use qcc::frontend::onnx::proto::{
    self, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
};

fn float_vi(name: &str, dims: &[i64]) -> ValueInfoProto {
    let mut vi = ValueInfoProto::new();
    vi.name = name.into();
    let tt = vi.type_.mut_or_insert_default().mut_tensor_type();
    tt.elem_type = 1;
    let shape = tt.shape.mut_or_insert_default();
    for &d in dims {
        let mut dim = proto::tensor_shape_proto::Dimension::new();
        dim.set_dim_value(d);
        shape.dim.push(dim);
    }
    vi
}

fn node(op: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.name = outs[0].into();
    n.input = ins.iter().map(|s| s.to_string()).collect();
    n.output = outs.iter().map(|s| s.to_string()).collect();
    n
}

/// `DynamicQuantizeLinear(x)`, its u8 results cast to float (the object ABI returns
/// float tensors): outputs `yf` [n], `s` [], `zf` [].
fn dql_model(n: i64) -> ModelProto {
    let mut to_float = proto::AttributeProto::new();
    to_float.name = "to".into();
    to_float.type_ = proto::attribute_proto::AttributeType::INT.into();
    to_float.i = 1;
    let mut cy = node("Cast", &["y"], &["yf"]);
    cy.attribute.push(to_float.clone());
    let mut cz = node("Cast", &["z"], &["zf"]);
    cz.attribute.push(to_float);
    let mut g = GraphProto::new();
    g.name = "dql".into();
    g.node = vec![
        node("DynamicQuantizeLinear", &["x"], &["y", "s", "z"]),
        cy,
        cz,
    ];
    g.input.push(float_vi("x", &[n]));
    g.output.push(float_vi("yf", &[n]));
    g.output.push(float_vi("s", &[]));
    g.output.push(float_vi("zf", &[]));
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut op = OperatorSetIdProto::new();
    op.version = 13;
    m.opset_import.push(op);
    m.graph = Some(g).into();
    m
}

/// ONNX Runtime's DynamicQuantizeLinear (`GetQuantizationParameter` and
/// `MlasQuantizeLinear`), in f32: codes, scale, zero point.
fn dql_reference(x: &[f32]) -> (Vec<f32>, f32, f32) {
    let mx = x.iter().copied().fold(0f32, f32::max);
    let mn = x.iter().copied().fold(0f32, f32::min);
    let scale = if mx == mn { 1.0 } else { (mx - mn) / 255.0 };
    let zp = (0.0 - mn / scale).clamp(0.0, 255.0).round_ties_even();
    let y = x
        .iter()
        .map(|&v| ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0))
        .collect();
    (y, scale, zp)
}

#[test]
fn dynamic_quantize_linear_edge_inputs_match_onnx_runtime_formula() {
    let host = target_lexicon::Triple::host().to_string();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 40) as f32 / (1u64 << 24) as f32
    };
    let n = 37;
    let cases: Vec<(&str, Vec<f32>)> = vec![
        // Range 0: ONNX Runtime takes scale 1 (the ONNX formula would divide by 0).
        ("all zero", vec![0.0; n]),
        (
            "all negative",
            (0..n).map(|i| -1.0 - i as f32 * 0.37).collect(),
        ),
        (
            "all positive",
            (0..n).map(|i| 0.01 + i as f32 * 0.11).collect(),
        ),
        ("mixed", (0..n).map(|_| uniform() * 6.0 - 2.0).collect()),
        // x / scale at exact halves: scale = 255 / 255 = 1 (range [-127.5, 127.5]).
        (
            "ties",
            (0..n)
                .map(|i| {
                    if i == 0 {
                        -127.5
                    } else if i == 1 {
                        127.5
                    } else {
                        i as f32 - 18.5
                    }
                })
                .collect(),
        ),
    ];
    for (what, x) in cases {
        let (want_y, want_s, want_z) = dql_reference(&x);
        let imp = import_model(&dql_model(n as i64), None, &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let m = imp.module;
        let input = Tensor::f32(vec![n], x.clone());
        let mut runs = vec![(
            "interpreter".to_string(),
            qcc_ir::interp::run(&m, std::slice::from_ref(&input)).unwrap(),
        )];
        for cpu in tiers() {
            let t = Target::new(&host, cpu).unwrap();
            let jit = JitModel::with_target(&m, &t).unwrap_or_else(|e| panic!("{what} {cpu}: {e}"));
            runs.push((
                cpu.to_string(),
                jit.run(std::slice::from_ref(&input)).unwrap(),
            ));
        }
        for (who, out) in runs {
            let y = out[0].as_f32().unwrap();
            let s = out[1].as_f32().unwrap();
            let z = out[2].as_f32().unwrap();
            assert_eq!(y, &want_y[..], "{what} ({who}): codes");
            assert_eq!(s[0].to_bits(), want_s.to_bits(), "{what} ({who}): scale");
            assert_eq!(z[0], want_z, "{what} ({who}): zero point");
        }
    }
}
