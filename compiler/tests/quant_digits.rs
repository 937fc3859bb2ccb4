//! Post-training quantization of the committed float digits models: calibrate on 200
//! training images, quantize, fuse with `rewrite`, and measure top-1 accuracy on the
//! 360-image test split (interpreter) against the float model (issue 5's targets).

use std::path::{Path, PathBuf};

use qcc::frontend::onnx::{ImportOptions, import_file};
use qcc::passes::{Pipeline, cleanup};
use qcc::quant::{
    CalibMethod, CalibOptions, CalibStats, QuantOptions, calibrate, data_free, float_kernels,
    quantize_model,
};
use qcc_ir::Module;
use qcc_ir::interp::{Tensor, run};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/models")
}

fn train() -> PathBuf {
    models_dir().join("digits_train.npz")
}

fn float_module(name: &str) -> Module {
    let mut m = import_file(&models_dir().join(name), &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .module;
    cleanup::pipeline()
        .run(&mut m, &mut |_| {})
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    m
}

/// The test split: samples as [1, 1, 8, 8] tensors and labels.
fn test_set() -> (Vec<Tensor>, Vec<i64>) {
    let mut npz = npyz::npz::NpzArchive::open(models_dir().join("digits_test.npz")).unwrap();
    let x = npz.by_name("x").unwrap().unwrap();
    let shape: Vec<usize> = x.shape().iter().map(|&d| d as usize).collect();
    let per: usize = shape[1..].iter().product();
    let data: Vec<f32> = x.into_vec().unwrap();
    let xs = data
        .chunks(per)
        .map(|c| Tensor::f32(vec![1, 1, 8, 8], c.to_vec()))
        .collect();
    let ys: Vec<i64> = npz.by_name("y").unwrap().unwrap().into_vec().unwrap();
    (xs, ys)
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn softmax(v: &[f32]) -> Vec<f64> {
    let mx = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = v.iter().map(|&x| (x as f64 - mx).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// Logits of every test sample (reference interpreter).
fn logits(m: &Module, xs: &[Tensor]) -> Vec<Vec<f32>> {
    xs.iter()
        .map(|x| {
            run(m, std::slice::from_ref(x)).unwrap()[0]
                .as_f32()
                .unwrap()
                .to_vec()
        })
        .collect()
}

fn accuracy(l: &[Vec<f32>], ys: &[i64]) -> f64 {
    let right = l
        .iter()
        .zip(ys)
        .filter(|(l, y)| argmax(l) as i64 == **y)
        .count();
    100.0 * right as f64 / ys.len() as f64
}

fn mean_kl(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let kl: f64 = a
        .iter()
        .zip(b)
        .map(|(a, b)| {
            let (p, q) = (softmax(a), softmax(b));
            p.iter()
                .zip(&q)
                .filter(|(p, _)| **p > 0.0)
                .map(|(p, q)| p * (p / q.max(1e-300)).ln())
                .sum::<f64>()
        })
        .sum();
    kl / a.len() as f64
}

/// Quantizes, fuses, checks every kernel is an integer one; returns (float accuracy,
/// quantized accuracy, mean KL of logits).
fn measure(name: &str, float: &Module, stats: &CalibStats, opts: &QuantOptions) -> (f64, f64, f64) {
    let (mut q, report) =
        quantize_model(float, stats, opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut p = Pipeline::from_names("test", &["rewrite", "dce"]).unwrap();
    p.verify_each = true;
    p.run(&mut q, &mut |_| {})
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let left = float_kernels(&q);
    assert!(left.is_empty(), "{name}: float kernels left: {left:?}\n{q}");
    let (xs, ys) = test_set();
    let lf = logits(float, &xs);
    let lq = logits(&q, &xs);
    let (af, aq, kl) = (accuracy(&lf, &ys), accuracy(&lq, &ys), mean_kl(&lf, &lq));
    eprintln!(
        "{name} w{}a{}: float {af:.2}%, quantized {aq:.2}%, mean KL {kl:.5}\n{report}",
        opts.wbits, opts.abits
    );
    (af, aq, kl)
}

fn calib(m: &Module, method: CalibMethod) -> CalibStats {
    let opts = CalibOptions {
        method,
        limit: Some(200),
        ..Default::default()
    };
    calibrate(m, &train(), &opts).unwrap()
}

fn check(name: &str, method: CalibMethod) {
    let m = float_module(name);
    let stats = calib(&m, method);
    let (af, a8, kl8) = measure(name, &m, &stats, &QuantOptions::bits(8));
    assert!(a8 >= af - 0.3, "{name} 8 bits: {a8:.2}% vs float {af:.2}%");
    assert!(kl8 < 0.01, "{name} 8 bits: mean KL {kl8}");
    let (_, a4, _) = measure(name, &m, &stats, &QuantOptions::bits(4));
    assert!(a4 >= af - 1.0, "{name} 4 bits: {a4:.2}% vs float {af:.2}%");
}

#[test]
fn digits_cnn_folded() {
    check("digits_cnn_folded.onnx", CalibMethod::MinMax);
}

#[test]
fn digits_resnet_folded() {
    check("digits_resnet_folded.onnx", CalibMethod::MinMax);
}

#[test]
fn data_free_cnn() {
    let m = float_module("digits_cnn.onnx");
    let stats = data_free(&m, &CalibOptions::default()).unwrap();
    let (af, a8, _) = measure(
        "digits_cnn.onnx (data-free)",
        &m,
        &stats,
        &QuantOptions::bits(8),
    );
    assert!(
        a8 >= af - 1.5,
        "data-free 8 bits: {a8:.2}% vs float {af:.2}%"
    );
}

#[test]
fn data_free_needs_batch_norm() {
    let m = float_module("digits_cnn_folded.onnx");
    let e = data_free(&m, &CalibOptions::default()).unwrap_err();
    assert!(e.contains("--calib"), "{e}");
}

#[test]
fn methods() {
    let m = float_module("digits_cnn_folded.onnx");
    for method in [CalibMethod::Percentile, CalibMethod::Mse, CalibMethod::Kl] {
        let stats = calib(&m, method);
        let (af, a8, _) = measure(&format!("cnn {method}"), &m, &stats, &QuantOptions::bits(8));
        assert!(a8 >= af - 1.0, "{method}: {a8:.2}% vs {af:.2}%");
    }
}

#[test]
fn streams_with_limit_and_batches() {
    let m = float_module("digits_cnn_folded.onnx");
    let opts = CalibOptions {
        limit: Some(37),
        batch: 5,
        ..Default::default()
    };
    let s = calibrate(&m, Path::new(&train()), &opts).unwrap();
    assert_eq!(s.samples, 37);
    let input = s.values.get("input").expect("input stats");
    assert_eq!(input.count, 37 * 64);
    assert!(input.min >= 0.0 && input.max <= 1.0);
    assert_eq!(input.hist.total(), 37 * 64);
}

/// The quantized program runs on the JIT (codes below 8 bits one per byte in the 8-bit
/// kernels) and agrees with the interpreter; all layers at 4 bits (`keep_edges` off).
#[test]
fn jit_runs_all_layers_at_4_bits() {
    let name = "digits_cnn_folded.onnx";
    let m = float_module(name);
    let stats = calib(&m, CalibMethod::MinMax);
    let opts = QuantOptions {
        keep_edges: false,
        ..QuantOptions::bits(4)
    };
    let (mut q, report) = quantize_model(&m, &stats, &opts).unwrap();
    assert!(report.layers.iter().all(|l| l.wbits == 4 && l.abits == 4));
    Pipeline::from_names("test", &["rewrite", "dce"])
        .unwrap()
        .run(&mut q, &mut |_| {})
        .unwrap();
    assert!(float_kernels(&q).is_empty());
    let jit = qcc::backend::JitModel::new(&q).unwrap_or_else(|e| panic!("JIT: {e}"));
    let (xs, ys) = test_set();
    let li = logits(&q, &xs);
    let lj: Vec<Vec<f32>> = xs
        .iter()
        .map(|x| {
            jit.run(std::slice::from_ref(x)).unwrap()[0]
                .as_f32()
                .unwrap()
                .to_vec()
        })
        .collect();
    let diff = li
        .iter()
        .flatten()
        .zip(lj.iter().flatten())
        .fold(0f32, |d, (a, b)| d.max((a - b).abs()));
    let lf = logits(&m, &xs);
    eprintln!(
        "{name} w4a4 all layers: float {:.2}%, interpreter {:.2}%, JIT {:.2}%, max |JIT - interp| {diff}",
        accuracy(&lf, &ys),
        accuracy(&li, &ys),
        accuracy(&lj, &ys)
    );
    assert!(diff < 1e-4, "JIT and interpreter differ by {diff}");
}

/// Per-layer errors against the float model: every layer measured, the first (8-bit)
/// layer's result close to float, the error growing when a layer drops to 4 bits, and
/// an exact QDQ form (the float model itself) at infinite SQNR.
#[test]
fn layer_errors_per_layer() {
    let m = float_module("digits_cnn_folded.onnx");
    let stats = calib(&m, CalibMethod::MinMax);
    let measure_at = |bits: u8| {
        let (q, report) = quantize_model(&m, &stats, &QuantOptions::bits(bits)).unwrap();
        let outs: Vec<_> = report.layers.iter().map(|l| l.output).collect();
        qcc::quant::layer_errors(&m, &q, &outs, &train(), Some(16)).unwrap()
    };
    let e8 = measure_at(8);
    let e4 = measure_at(4);
    assert_eq!(e8.len(), 3);
    assert!(e8[0].sqnr_db() > 35.0, "first layer at 8 bits: {}", e8[0]);
    for (a, b) in e8.iter().zip(&e4).skip(1) {
        assert!(a.sqnr_db() > b.sqnr_db() + 6.0, "8-bit {a} vs 4-bit {b}");
    }
    let outs: Vec<_> = m.nodes.iter().map(|n| n.result).collect();
    let same = qcc::quant::layer_errors(&m, &m, &outs, &train(), Some(4)).unwrap();
    assert!(
        same.iter()
            .all(|e| e.noise == 0.0 && e.sqnr_db().is_infinite())
    );
}

/// The residual block before the global average pool runs on codes: the quantizer
/// quantizes the pool's input too, so `int-pool` and `int-add` leave no f32 pool or add.
#[test]
fn resnet_pool_and_last_add_are_integer() {
    let m = float_module("digits_resnet_folded.onnx");
    assert!(m.nodes.iter().any(|n| n.op == qcc_ir::Op::GlobalAvgPool));
    let stats = calib(&m, CalibMethod::MinMax);
    let (mut q, _) = quantize_model(&m, &stats, &QuantOptions::bits(8)).unwrap();
    Pipeline::from_names("test", &["rewrite", "dce"])
        .unwrap()
        .run(&mut q, &mut |_| {})
        .unwrap();
    let float_ops: Vec<_> = q
        .nodes
        .iter()
        .filter(|n| {
            matches!(n.op, qcc_ir::Op::GlobalAvgPool | qcc_ir::Op::Add)
                && q.ty(n.result).elem == qcc_ir::ElemType::F32
        })
        .map(|n| n.op)
        .collect();
    assert!(float_ops.is_empty(), "f32 ops left: {float_ops:?}\n{q}");
}

/// A per-layer plan (what `--budget` chooses) sets each layer's bits, edges included,
/// binarizes where it says (1, 1), and runs on the JIT as the interpreter does.
#[test]
fn per_layer_plan_sets_each_layers_bits() {
    let name = "digits_resnet_folded.onnx";
    let m = float_module(name);
    let stats = calib(&m, CalibMethod::MinMax);
    let (_, uniform) = quantize_model(&m, &stats, &QuantOptions::bits(8)).unwrap();
    let names: Vec<String> = uniform.layers.iter().map(|l| l.name.clone()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    let plan = [(3u8, 8u8), (2, 4), (1, 1), (4, 3)];
    let opts = QuantOptions {
        layer_bits: names.iter().cloned().zip(plan).collect(),
        ..QuantOptions::bits(8)
    };
    let (mut q, report) = quantize_model(&m, &stats, &opts).unwrap();
    let got: Vec<(u8, u8)> = report.layers.iter().map(|l| (l.wbits, l.abits)).collect();
    assert_eq!(got, plan);
    assert!(report.layers.iter().all(|l| !l.edge));
    Pipeline::from_names("test", &["rewrite", "dce"])
        .unwrap()
        .run(&mut q, &mut |_| {})
        .unwrap();
    assert!(float_kernels(&q).is_empty());
    let jit = qcc::backend::JitModel::new(&q).unwrap_or_else(|e| panic!("JIT: {e}"));
    let (xs, _) = test_set();
    let xs = &xs[..40];
    let li = logits(&q, xs);
    for (x, want) in xs.iter().zip(&li) {
        let got = jit.run(std::slice::from_ref(x)).unwrap()[0]
            .as_f32()
            .unwrap()
            .to_vec();
        let d = got
            .iter()
            .zip(want)
            .fold(0f32, |d, (a, b)| d.max((a - b).abs()));
        assert!(d < 1e-4, "JIT and interpreter differ by {d}");
    }

    // Bad plans name the layer and what works.
    let bad = |plan: Vec<(&str, (u8, u8))>| {
        let opts = QuantOptions {
            layer_bits: plan.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..QuantOptions::bits(8)
        };
        quantize_model(&m, &stats, &opts).unwrap_err()
    };
    let e = bad(vec![("/nope/Conv", (4, 4))]);
    assert!(e.contains("/nope/Conv") && e.contains(&names[1]), "{e}");
    let e = bad(vec![(names[1].as_str(), (9, 4))]);
    assert!(e.contains(&names[1]) && e.contains("take 1..8 bits"), "{e}");
}

/// The exact choice on a real model's measured sensitivity equals brute force over every
/// combination of the digits CNN's candidates (21 x 21 x 21 plans), for several budgets;
/// and an 8-bit candidate is far less sensitive than a 2-bit one.
#[test]
fn exact_choice_matches_brute_force_on_the_digits_cnn() {
    use qcc::backend::costs::CostTarget;
    use qcc::quant::budget::{Budget, Problem, solve_exact};
    use qcc::quant::sensitivity::{SensOptions, measure_sensitivity};
    let m = float_module("digits_cnn_folded.onnx");
    let stats = calib(&m, CalibMethod::MinMax);
    let opts = SensOptions::default();
    let sens = measure_sensitivity(&m, &stats, &train(), Some(32), &opts).unwrap();
    assert_eq!(sens.layers.len(), 3);
    for l in &sens.layers {
        let err = |w, a| {
            l.candidates
                .iter()
                .find(|c| (c.wbits, c.abits) == (w, a))
                .unwrap()
                .error
        };
        assert!(
            err(8, 8) * 10.0 < err(2, 2),
            "{}: {:?}",
            l.layer,
            l.candidates
        );
    }
    let p = Problem::from_sensitivity(&sens, CostTarget::X86_64Native);
    for spec in [
        "avg-bits=2",
        "avg-bits=3",
        "avg-bits=5,size=1KB",
        "size=700B",
    ] {
        let b: Budget = spec.parse().unwrap();
        let got = solve_exact(&p, &b).unwrap();
        let n: Vec<usize> = p.layers.iter().map(|l| l.choices.len()).collect();
        let mut best = f64::INFINITY;
        for i in 0..n[0] {
            for j in 0..n[1] {
                for k in 0..n[2] {
                    let plan = p.plan(vec![i, j, k]);
                    let fits = b
                        .terms
                        .iter()
                        .all(|t| plan.value(t) <= t.limit() * (1.0 + 1e-9));
                    if p.consistent(&plan.pick) && fits {
                        best = best.min(plan.predicted_error);
                    }
                }
            }
        }
        assert!(
            (got.predicted_error - best).abs() <= 1e-12 + 1e-9 * best,
            "{spec}: solver {} vs brute force {best}",
            got.predicted_error
        );
    }
}

/// `--sq-ratio` splits layers into low- and high-bit parts joined by concats: the fused
/// module is integer (each split layer joined again into one kernel by the rewrite),
/// the JIT equals the interpreter on it bit for bit, and two builds are identical.
#[test]
fn sq_split_is_integer_exact_and_deterministic() {
    let (xs, _) = test_set();
    for name in ["digits_cnn_folded.onnx", "digits_resnet_folded.onnx"] {
        let m = float_module(name);
        let flags = qcc::quant::QuantFlags {
            wbits: Some(2),
            abits: Some(8),
            calib: Some(train()),
            calib_limit: Some(100),
            calib_method: "minmax".into(),
            act_method: "per-tensor".into(),
            select: "exact".into(),
            sq_ratio: Some(0.75),
            quiet: true,
            ..Default::default()
        };
        let (q, report) = flags.apply(&m).unwrap().unwrap();
        let (q2, _) = flags.apply(&m).unwrap().unwrap();
        assert_eq!(q.to_string(), q2.to_string(), "{name}: builds differ");
        assert!(float_kernels(&q).is_empty(), "{name}");
        assert!(
            report
                .layers
                .iter()
                .any(|l| l.name.ends_with(".sq_low") && l.wbits == 2),
            "{name}"
        );
        // The rewrite offers each split layer whose parts a concat joins as they are
        // requantized as one kernel over both filter groups (`merge-split-conv2d`); on
        // these small layers the cost model takes it: such a layer runs unsplit, its
        // 2-bit filters' codes in the 8-bit weight tensor. The ResNet's conv1 stays split:
        // its parts pass through their own leaky-relu lookups before the concat.
        let convs: Vec<&str> = q
            .nodes
            .iter()
            .filter(|n| n.op == qcc_ir::Op::Conv2dInt)
            .filter_map(|n| n.loc.as_deref())
            .collect();
        let (merged, split): (&[&str], &[&str]) = if name.starts_with("digits_cnn") {
            (&["/features/features.4/Conv"], &[])
        } else {
            (
                &["/conv2/Conv"],
                &["/conv1/Conv.sq_low", "/conv1/Conv.sq_high"],
            )
        };
        assert!(
            merged.iter().chain(split).all(|l| convs.contains(l))
                && convs.iter().filter(|l| l.contains(".sq_")).count() == split.len(),
            "{name}: {convs:?}\n{q}"
        );
        let jit = qcc::backend::JitModel::new(&q).unwrap_or_else(|e| panic!("JIT: {e}"));
        let li = logits(&q, &xs[..60]);
        for (x, i) in xs[..60].iter().zip(&li) {
            let j = jit.run(std::slice::from_ref(x)).unwrap()[0]
                .as_f32()
                .unwrap()
                .to_vec();
            assert_eq!(&j, i, "{name}: JIT and interpreter differ");
        }
    }
}

/// The split `--sq-ratio` makes keeps the float model's function: on the CNN the
/// reordered channels are folded into the gemm that reads them; on the ResNet conv1's
/// into conv2, and conv2's, which join the residual stream, into the stream's readers
/// and its other producer (the stem conv's output channels), so no slice is left.
#[test]
fn sq_split_keeps_the_float_function() {
    use qcc::quant::sq::{Pick, SqOptions, SqPlan};
    let (xs, _) = test_set();
    for name in ["digits_cnn_folded.onnx", "digits_resnet_folded.onnx"] {
        let m = float_module(name);
        let opts = SqOptions {
            ratio: 0.75,
            low: 2,
            high: 8,
            ternary: false,
            pow2: false,
            pick: Pick::Roulette,
        };
        let mut plan = SqPlan::new(&m, &qcc::quant::quant_layers(&m).unwrap(), opts, true);
        plan.grow(0.75);
        let (s, bits) = plan.split(&m, 8).unwrap();
        assert!(bits.values().any(|&b| b == (2, 8)) && bits.values().any(|&b| b == (8, 8)));
        assert!(plan.layers.iter().any(|l| l.order.is_ok()), "{name}");
        assert!(
            plan.layers.iter().all(|l| l.order.is_ok()),
            "{name}: {:?}",
            plan.describe()
        );
        assert!(!s.nodes.iter().any(|n| n.op == qcc_ir::Op::Slice), "{name}");
        if name.contains("resnet") {
            assert!(
                plan.layers.iter().any(|l| l
                    .order
                    .as_ref()
                    .is_ok_and(|o| o.iter().any(|r| r.ends_with("(its outputs)")))),
                "{name}: {:?}",
                plan.describe()
            );
        }
        let (a, b) = (logits(&m, &xs[..40]), logits(&s, &xs[..40]));
        let diff = a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .fold(0f32, |d, (x, y)| d.max((x - y).abs()));
        assert!(diff < 1e-4, "{name}: split differs from float by {diff}");
    }
}
