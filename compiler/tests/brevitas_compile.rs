//! The Brevitas QONNX digits models (W4A4, W2A2, W1A1; issue 5) compiled end to end:
//! imported, cleaned up (with `lower-fake-quant` first), lowered by the rewrite engine
//! and compiled by the JIT. Checks that every convolution and matrix product runs in an
//! integer kernel (the W1A1 binary conv in the XNOR-popcount kernel, with batch norm and
//! the bipolar quantizer as integer thresholds), that no float batch norm or quantizer
//! is left, that the outputs match the qonnx executor's reference outputs within one
//! quantization step of the output, and the top-1 accuracy on the 360-image test split.
//!
//! The models trained the way the quantization methods train them (issue 13,
//! `tests/models/gen_brevitas_methods.py`) get the same checks plus the operand types of
//! every conv/gemm layer: `digits_mixed` (a different Quant bit-width per layer, odd
//! ones included), `digits_ternary` (2-bit narrow {-1, 0, 1} weights, per tensor and
//! per channel) and `digits_bipolar_mul` (BipolarQuant weights with XNOR-Net's
//! per-channel alpha as a separate Mul after the conv).

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
    /// Operand element types (activations, weights) of each conv/gemm layer, in order.
    operands: Vec<(String, String)>,
    /// The op (with what is fused into it) of each conv/gemm layer, in order.
    conv_ops: Vec<String>,
}

/// `binary`: the model has binary layers, with at least this many `b1` values between them.
fn check(name: &str, float_accuracy: f64, binary: Option<usize>) -> Outcome {
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
    let mut operands = Vec::new();
    let mut conv_ops = Vec::new();
    for l in &report.layers {
        if l.op.starts_with("conv2d") || l.op.starts_with("matmul") || l.op.starts_with("gemm") {
            operands.push((l.inputs[0].clone(), l.inputs[1].clone()));
            conv_ops.push(l.op.clone());
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
    if let Some(min_b1) = binary {
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
        assert!(
            b1 >= min_b1,
            "{name}: {b1} b1 values between the binary layers, expected {min_b1}"
        );
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
        operands,
        conv_ops,
    }
}

/// Checks the (activation, weight) element types of the conv/gemm layers, in order,
/// against type prefixes (`q<u5`, `q<i3 narrow`, `b1`).
fn expect_operands(name: &str, o: &Outcome, want: &[(&str, &str)]) {
    let ok = o.operands.len() == want.len()
        && o.operands
            .iter()
            .zip(want)
            .all(|((x, w), (px, pw))| x.starts_with(px) && w.starts_with(pw));
    assert!(
        ok,
        "{name}: conv/gemm operand types {:?}, expected {want:?}\n{:?}",
        o.operands, o.kernels
    );
}

#[test]
fn digits_w4a4() {
    let o = check("digits_w4a4", 99.72, None);
    assert!(o.steps <= 1.0 && o.accuracy > 99.0, "{:?}", o.kernels);
}

#[test]
fn digits_w2a2() {
    let o = check("digits_w2a2", 99.17, None);
    assert!(o.steps <= 1.0 && o.accuracy > 98.5, "{:?}", o.kernels);
}

#[test]
fn digits_w1a1() {
    let o = check("digits_w1a1", 99.44, Some(4));
    assert!(o.steps <= 1.0 && o.accuracy > 98.8, "{:?}", o.kernels);
}

/// Mixed precision per layer (as DQA-attention / SQ-style selection trains it): 8-bit
/// input, conv1 w8 -> a5, conv2 w3 -> a4, conv3 w2 -> a7, linear w6. Each layer keeps
/// its Quant bit-widths in an integer kernel (the weights packed at 3, 2 and 6 bits).
#[test]
fn digits_mixed() {
    let o = check("digits_mixed", 99.44, None);
    expect_operands(
        "digits_mixed",
        &o,
        &[
            ("q<i8,", "q<i8 narrow"),
            ("q<u5,", "q<i3 narrow"),
            ("q<u4,", "q<i2 narrow"),
            ("q<u7,", "q<i6 narrow"),
        ],
    );
    assert!(o.steps <= 1.0 && o.accuracy > 99.0, "{:?}", o.kernels);
}

/// TWN-style ternary hidden convs: 2-bit narrow weights (codes -1, 0, 1), conv2 with
/// Brevitas' SignedTernaryWeightPerTensorConst, conv3 per output channel (scale mean
/// |w| of the filter); 8-bit per-channel first conv and linear, 8-bit activations. The
/// ternary layers run u8 x i2 kernels (batch norm folded into per-channel scales).
#[test]
fn digits_ternary() {
    let o = check("digits_ternary", 98.89, None);
    expect_operands(
        "digits_ternary",
        &o,
        &[
            ("q<i8,", "q<i8 narrow, axis=0"),
            ("q<u8,", "q<i2 narrow, axis=0"),
            ("q<u8,", "q<i2 narrow, axis=0"),
            ("q<u8,", "q<i8 narrow, axis=1"),
        ],
    );
    // The ternary weights use the zero code: they are ternary, not binary.
    let m = lowered("digits_ternary.onnx");
    let ternary: Vec<_> = m
        .nodes
        .iter()
        .filter(|n| n.op == Op::Conv2dInt)
        .filter_map(|n| {
            let w = n.operands[1];
            let q = m.ty(w).elem.quant()?;
            (q.storage.bits == 2).then(|| qcc_ir::interp::const_tensor(&m, w))?
        })
        .collect();
    assert_eq!(ternary.len(), 2, "digits_ternary: two ternary convs:\n{m}");
    for t in ternary {
        let codes = t.as_int().expect("integer codes").to_vec();
        assert!(codes.iter().all(|c| (-1..=1).contains(c)), "{codes:?}");
        let zeros = codes.iter().filter(|&&c| c == 0).count();
        assert!(
            zeros > 0 && zeros < codes.len(),
            "digits_ternary: {zeros} zero codes of {}",
            codes.len()
        );
    }
    assert!(o.steps <= 1.0 && o.accuracy > 98.5, "{:?}", o.kernels);
}

/// XNOR-Net / Bi-Real binary convs as exported: BipolarQuant weights with scale 1, the
/// conv, then a Mul by the per-channel alpha = mean |w| (`fold-mul-into-weight-scale`
/// puts alpha into the weights' scales). Both binary convs run XNOR-popcount: conv2
/// with batch norm + sign as a fused threshold (b1 out), conv3 with alpha in the
/// requantize to the 8-bit quantizer before the linear layer; no float mul is left.
#[test]
fn digits_bipolar_mul() {
    let o = check("digits_bipolar_mul", 98.61, Some(3));
    expect_operands(
        "digits_bipolar_mul",
        &o,
        &[
            ("q<i8,", "q<i8 narrow"),
            ("b1", "b1"),
            ("b1", "b1"),
            ("q<i8,", "q<i8 narrow"),
        ],
    );
    let m = lowered("digits_bipolar_mul.onnx");
    assert!(
        m.nodes.iter().all(|n| n.op != Op::Mul),
        "digits_bipolar_mul: a float mul is left:\n{m}"
    );
    // conv2: batch norm + sign as a threshold in the XNOR kernel's epilogue (b1 out);
    // conv3: alpha in the requantize to the 8-bit quantizer before the linear layer.
    assert!(
        o.conv_ops[1].ends_with("+threshold") && o.conv_ops[2].ends_with("+requantize"),
        "digits_bipolar_mul: {:?}\n{:?}",
        o.conv_ops,
        o.kernels
    );
    assert!(o.steps <= 1.0 && o.accuracy > 98.0, "{:?}", o.kernels);
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
