//! The Brevitas QONNX digits models (W4A4, W2A2, W1A1; issue 5) compiled end to end:
//! imported, cleaned up (with `lower-fake-quant` first), lowered by the rewrite engine
//! and compiled by the JIT. Checks that every convolution and matrix product runs in an
//! integer kernel (the W1A1 binary conv in the XNOR-popcount kernel, with batch norm and
//! the bipolar quantizer as integer thresholds), that no float batch norm or quantizer
//! is left, that the outputs match the qonnx executor's reference outputs within one
//! quantization step of the output, and the top-1 accuracy on the 360-image test split.

use std::collections::BTreeMap;
use std::path::PathBuf;

use qcc::backend::JitModel;
use qcc::driver::load;
use qcc_ir::interp::Tensor;
use qcc_ir::{ElemType, Module, Op, ValueDef};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/models")
}

fn npz_f32(path: &PathBuf, name: &str) -> (Vec<usize>, Vec<f32>) {
    let mut npz = npyz::npz::NpzArchive::open(path).unwrap();
    let a = npz.by_name(name).unwrap().unwrap();
    let shape = a.shape().iter().map(|&d| d as usize).collect();
    (shape, a.into_vec().unwrap())
}

fn labels(path: &PathBuf) -> Vec<i64> {
    let mut npz = npyz::npz::NpzArchive::open(path).unwrap();
    npz.by_name("y").unwrap().unwrap().into_vec().unwrap()
}

/// The model at batch 1, as the compiler lowers it.
fn lowered(name: &str) -> Module {
    let mut shapes = BTreeMap::new();
    shapes.insert("input".to_string(), vec![1, 1, 8, 8]);
    load(&models_dir().join(name), &shapes)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"))
        .module
}

/// The quantization step of the (single) output: the largest scale of the quantized
/// value its final `dequantize` reads (before the float bias add, if any).
fn output_step(m: &Module) -> f32 {
    let producer = |v: qcc_ir::ValueId| match m.value(v).def {
        ValueDef::Node(n) => &m.nodes[n.index()],
        _ => panic!("the output is not computed"),
    };
    let mut node = producer(m.outputs[0]);
    if node.op == Op::Add {
        node = producer(node.operands[0]);
    }
    assert_eq!(
        node.op,
        Op::Dequantize,
        "the output comes from a dequantize"
    );
    let q = m
        .ty(node.operands[0])
        .elem
        .quant()
        .expect("dequantize of a quantized value")
        .clone();
    q.params.scales().iter().copied().fold(0.0, f32::max)
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

struct Outcome {
    /// Max |compiled - qonnx| over the reference samples, in output steps.
    steps: f32,
    accuracy: f64,
    kernels: Vec<String>,
}

fn check(name: &str, float_accuracy: f64, binary: bool) -> Outcome {
    let m = lowered(&format!("{name}.onnx"));
    for n in &m.nodes {
        assert!(
            !matches!(
                n.op,
                Op::FakeQuant | Op::BatchNorm | Op::Conv2d | Op::Gemm | Op::MatMul
            ),
            "{name}: a float {} is left:\n{m}",
            n.op
        );
    }
    let jit = JitModel::new(&m).unwrap_or_else(|e| panic!("{name}: {e}"));
    let report = jit.report();
    let mut kernels = Vec::new();
    for l in &report.layers {
        if l.op.starts_with("conv2d") || l.op.starts_with("matmul") || l.op.starts_with("gemm") {
            assert!(
                l.integer && (l.op.contains("_int")),
                "{name}: layer {} ({}) runs in {}",
                l.index,
                l.op,
                l.kernel
            );
        }
        kernels.push(format!("{}: {}", l.op, l.kernel));
    }
    if binary {
        // Binary layers run XNOR-popcount, or the wide u8 x i8 tiles where the cost table
        // prefers them on this CPU (`backend_diff_binary.rs`).
        let xnor = report
            .layers
            .iter()
            .filter(|l| {
                l.kernel.contains("xnor")
                    || (l.tier.is_some() && l.inputs.iter().take(2).all(|i| i == "b1"))
            })
            .count();
        assert!(xnor >= 1, "{name}: no binary layer:\n{kernels:?}\n{report}");
        // Batch norm + sign as thresholds: one after the int8 first conv, one fused
        // into the XNOR conv's epilogue (which writes b1 directly).
        let thresholds = report
            .layers
            .iter()
            .filter(|l| l.op == "threshold" || l.op.ends_with("+threshold"))
            .count();
        assert_eq!(thresholds, 2, "{name}: batch norm + sign as thresholds");
        assert!(
            report
                .layers
                .iter()
                .any(|l| (l.kernel.contains("xnor") || l.tier.is_some())
                    && l.kernel.ends_with("+threshold")),
            "{name}: the threshold after the XNOR conv is fused:\n{kernels:?}"
        );
        // The binary layers chain in the bit domain: b1 between them.
        let b1 = m
            .nodes
            .iter()
            .filter(|n| m.ty(n.result).elem == ElemType::Bipolar)
            .count();
        assert!(b1 >= 4, "{name}: b1 values between the binary layers:\n{m}");
    }

    // Against the qonnx executor.
    let step = output_step(&m);
    let refp = models_dir().join(format!("{name}.ref.npz"));
    let (xs, x) = npz_f32(&refp, "x");
    let (_, y) = npz_f32(&refp, "y");
    let per: usize = xs[1..].iter().product();
    let classes = y.len() / xs[0];
    let mut worst = 0.0f32;
    for i in 0..xs[0] {
        let input = Tensor::f32(vec![1, 1, 8, 8], x[i * per..(i + 1) * per].to_vec());
        let got = jit.run(std::slice::from_ref(&input)).unwrap();
        let got = got[0].as_f32().unwrap();
        for (g, w) in got.iter().zip(&y[i * classes..(i + 1) * classes]) {
            worst = worst.max((g - w).abs());
        }
    }
    let steps = worst / step;
    assert!(
        steps <= 1.0,
        "{name}: max |compiled - qonnx| = {worst} = {steps} output steps (step {step})"
    );

    // Accuracy on the test split.
    let testp = models_dir().join("digits_test.npz");
    let (ts, tx) = npz_f32(&testp, "x");
    let ty = labels(&testp);
    let per: usize = ts[1..].iter().product();
    let mut right = 0;
    for (i, &label) in ty.iter().enumerate() {
        let input = Tensor::f32(vec![1, 1, 8, 8], tx[i * per..(i + 1) * per].to_vec());
        let got = jit.run(std::slice::from_ref(&input)).unwrap();
        if argmax(got[0].as_f32().unwrap()) as i64 == label {
            right += 1;
        }
    }
    let accuracy = 100.0 * right as f64 / ty.len() as f64;
    eprintln!(
        "{name}: max |compiled - qonnx| = {worst:.3e} ({steps:.3} output steps of {step:.4}); \
         test top-1 {accuracy:.2}% (float-domain {float_accuracy:.2}%)\n  {}",
        kernels.join("\n  ")
    );
    assert!(
        accuracy >= float_accuracy - 0.3,
        "{name}: accuracy {accuracy:.2}% is more than 0.3 points below {float_accuracy:.2}%"
    );
    Outcome {
        steps,
        accuracy,
        kernels,
    }
}

#[test]
fn digits_w4a4() {
    let o = check("digits_w4a4", 99.72, false);
    assert!(o.steps <= 1.0 && o.accuracy > 99.0, "{:?}", o.kernels);
}

#[test]
fn digits_w2a2() {
    let o = check("digits_w2a2", 99.17, false);
    assert!(o.steps <= 1.0 && o.accuracy > 98.5, "{:?}", o.kernels);
}

#[test]
fn digits_w1a1() {
    let o = check("digits_w1a1", 99.44, true);
    assert!(o.steps <= 1.0 && o.accuracy > 98.8, "{:?}", o.kernels);
}

/// The hand-built QONNX edge graphs whose quantizers have constant parameters with
/// integer zero points (the ones with fractional zero points and the Trunc graphs are
/// not lowered: see `lower-fake-quant`): compiled, with every quantizer lowered, and run
/// by the JIT against the qonnx executor's outputs.
#[test]
fn qonnx_edge_models() {
    let lowered_ones = [
        "qonnx_bipolarquant",
        "qonnx_quant_bw1_signed",
        "qonnx_quant_bw1_unsigned",
        "qonnx_quant_ceil",
        "qonnx_quant_conv_weight",
        "qonnx_quant_down",
        "qonnx_quant_floor",
        "qonnx_quant_half_down",
        "qonnx_quant_half_up",
        "qonnx_quant_perchannel",
        "qonnx_quant_round",
        "qonnx_quant_signed_narrow",
        "qonnx_quant_unsigned",
        "qonnx_quant_unsigned_narrow",
        "qonnx_quant_up",
    ];
    for name in lowered_ones {
        let path = models_dir().join(format!("{name}.onnx"));
        let refp = models_dir().join(format!("{name}.ref.npz"));
        let (xs, x) = npz_f32(&refp, "x");
        let (_, y) = npz_f32(&refp, "y");
        let inputs = qcc::driver::onnx_graph_inputs(&path).unwrap();
        let mut shapes = BTreeMap::new();
        shapes.insert(inputs[0].clone(), xs.clone());
        let m = load(&path, &shapes)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"))
            .module;
        assert!(
            m.nodes.iter().all(|n| n.op != Op::FakeQuant),
            "{name}: a fake_quant is left:\n{m}"
        );
        let jit = JitModel::new(&m).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = jit.run(&[Tensor::f32(xs.clone(), x)]).unwrap();
        let got = got[0].as_f32().unwrap();
        assert_eq!(got.len(), y.len(), "{name}");
        let worst = got
            .iter()
            .zip(&y)
            .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
            .fold(0.0f32, f32::max);
        eprintln!("{name}: max relative |compiled - qonnx| = {worst:.3e}");
        assert!(worst <= 1e-5, "{name}: compiled output differs by {worst}");
    }
}
