//! Issue 12, step 3: a `--budget` plan as a choice in the e-graph. On the digits ResNet,
//! every layer's other candidates are added as alternatives (`quant::choice`); the
//! e-graph then holds fused integer kernels for several (activation bits, weight bits)
//! pairs per layer, and extraction with the unchosen alternatives forbidden gives the
//! same module as the plain `rewrite` pipeline, for two plans (one with a binary layer).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use qcc::frontend::onnx::{ImportOptions, import_file};
use qcc::passes::{Pipeline, cleanup};
use qcc::quant::choice::{extract_plan, fusable_candidates};
use qcc::quant::{
    CalibOptions, CalibStats, QuantOptions, calibrate, quant_layers, quantize_model, refine_binary,
};
use qcc::rewrite::Limits;
use qcc_ir::Module;
use qcc_ir::interp::{Tensor, run};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/models")
}

fn float_module(name: &str) -> Module {
    let mut m = import_file(&models_dir().join(name), &ImportOptions::default())
        .unwrap()
        .module;
    cleanup::pipeline().run(&mut m, &mut |_| {}).unwrap();
    m
}

fn test_samples(n: usize) -> Vec<Tensor> {
    let mut npz = npyz::npz::NpzArchive::open(models_dir().join("digits_test.npz")).unwrap();
    let x = npz.by_name("x").unwrap().unwrap();
    let data: Vec<f32> = x.into_vec().unwrap();
    data.chunks(64)
        .take(n)
        .map(|c| Tensor::f32(vec![1, 1, 8, 8], c.to_vec()))
        .collect()
}

/// Every candidate of every layer, as `--budget` measures them.
fn candidates(m: &Module) -> BTreeMap<String, Vec<(u8, u8)>> {
    quant_layers(m)
        .unwrap()
        .into_iter()
        .map(|l| {
            let mut c: Vec<(u8, u8)> = [1u8, 2, 3, 4, 8]
                .iter()
                .flat_map(|&w| [2u8, 3, 4, 8].map(|a| (w, a)))
                .collect();
            if l.binarizable {
                c.push((1, 1));
            }
            (l.name, c)
        })
        .collect()
}

/// Today's path and the e-graph choice for `plan`; checks they agree.
fn compare(
    m: &Module,
    stats: &CalibStats,
    train: &Path,
    plan: BTreeMap<String, (u8, u8)>,
    samples: &[Tensor],
) -> usize {
    let opts = QuantOptions {
        layer_bits: plan,
        ..QuantOptions::bits(4)
    };
    let (mut q, mut report) = quantize_model(m, stats, &opts).unwrap();
    if report.layers.iter().any(|l| l.wbits <= 2) {
        refine_binary(m, &mut q, &mut report, train, Some(200)).unwrap();
    }
    let mut today = q.clone();
    Pipeline::from_names("today", &["rewrite", "dce"])
        .unwrap()
        .run(&mut today, &mut |_| {})
        .unwrap();
    let cands = candidates(m);
    let (mut chosen, st) =
        extract_plan(m, &q, &report, stats, &opts, &cands, Limits::default()).unwrap();
    let mut p = Pipeline::from_names("choice", &["dce"]).unwrap();
    p.verify_each = true;
    p.run(&mut chosen, &mut |_| {}).unwrap();
    let rep = st.report.as_ref().unwrap();
    eprintln!(
        "plain: {} nodes / {} classes; with alternatives ({} weight, {} activation, {} skipped): {} nodes / {} classes; after the rules: {} nodes / {} classes, {} iterations, {:?}; times (add, rules, extract): {:.3} s, {:.3} s, {:.3} s",
        st.nodes_plain,
        st.classes_plain,
        st.weight_alts,
        st.act_alts,
        st.skipped,
        st.nodes_with_alts,
        st.classes_with_alts,
        rep.nodes,
        rep.classes,
        rep.iterations,
        rep.stop_reason,
        st.secs.0,
        st.secs.1,
        st.secs.2
    );
    for (l, pairs) in &st.fused_pairs {
        eprintln!("  {l}: {} fused (a, w) pairs: {pairs:?}", pairs.len());
    }
    assert!(st.weight_alts > 0 && st.act_alts > 0);
    let most = st.fused_pairs.values().map(|p| p.len()).max().unwrap_or(0);
    assert!(
        most >= 4,
        "too few fused alternatives: {:?}",
        st.fused_pairs
    );
    // The same module as today's path: the same text, the same interpreter outputs.
    assert_eq!(chosen.to_string(), today.to_string());
    for x in samples {
        let a = run(&today, std::slice::from_ref(x)).unwrap();
        let b = run(&chosen, std::slice::from_ref(x)).unwrap();
        assert_eq!(a, b);
    }
    most
}

#[test]
fn digits_resnet_plans_as_choices_in_the_egraph() {
    let m = float_module("digits_resnet_folded.onnx");
    let copts = CalibOptions {
        limit: Some(200),
        ..Default::default()
    };
    let stats = calibrate(&m, &models_dir().join("digits_train.npz"), &copts).unwrap();
    let layers = quant_layers(&m).unwrap();
    let n = layers.len();
    // Plan A: 8 bits at the edges, mixed weight bits at 4-bit activations.
    let plan_a: BTreeMap<String, (u8, u8)> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let b = if i == 0 || i + 1 == n {
                (8, 8)
            } else {
                ([4, 2, 3, 8][i % 4], 4)
            };
            (l.name.clone(), b)
        })
        .collect();
    let train = models_dir().join("digits_train.npz");
    let xs = test_samples(20);
    compare(&m, &stats, &train, plan_a, &xs);
    // Plan B: one binary layer (one whose input no other layer reads), the rest at 3
    // or 4 bits with 3-bit activations.
    let mut readers: HashMap<_, usize> = HashMap::new();
    for l in &layers {
        *readers.entry(l.input).or_default() += 1;
    }
    let bin = (1..n - 1)
        .find(|&i| layers[i].binarizable && readers[&layers[i].input] == 1)
        .expect("a binarizable layer");
    let plan_b: BTreeMap<String, (u8, u8)> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let b = if i == bin {
                (1, 1)
            } else if i == 0 || i + 1 == n {
                (8, 8)
            } else {
                ([3, 4][i % 2], 3)
            };
            (l.name.clone(), b)
        })
        .collect();
    compare(&m, &stats, &train, plan_b, &xs);
}

/// The candidates the choice is made among come from the e-graph: on the digits CNN
/// (two convs and a gemm classifier, whose integer kernel reads a transposed copy of its
/// weights) and the digits ResNet, every layer's kernels are found, gemm and binarized
/// layers included, and nothing outside the measured candidates is reported.
#[test]
fn fusable_candidates_come_from_the_egraph() {
    for name in ["digits_cnn_folded.onnx", "digits_resnet_folded.onnx"] {
        let m = float_module(name);
        let copts = CalibOptions {
            limit: Some(64),
            ..Default::default()
        };
        let stats = calibrate(&m, &models_dir().join("digits_train.npz"), &copts).unwrap();
        let cands = candidates(&m);
        let (fusable, st) = fusable_candidates(
            &m,
            &stats,
            &QuantOptions::bits(8),
            &cands,
            Limits::default(),
        )
        .unwrap();
        let rep = st.report.as_ref().unwrap();
        eprintln!(
            "{name}: {} weight, {} activation, {} binarized alternatives; {} nodes / {} classes after the rules; times (add, rules): {:.3} s, {:.3} s",
            st.weight_alts,
            st.act_alts,
            st.binary_alts,
            rep.nodes,
            rep.classes,
            st.secs.0,
            st.secs.1
        );
        let layers = quant_layers(&m).unwrap();
        assert_eq!(fusable.len(), layers.len(), "{name}: {fusable:?}");
        for l in &layers {
            let f = &fusable[&l.name];
            let c: std::collections::BTreeSet<(u8, u8)> = cands[&l.name].iter().copied().collect();
            eprintln!(
                "  {} ({:?}): {} of {} candidates fuse",
                l.name,
                l.op,
                f.len(),
                c.len()
            );
            assert!(f.is_subset(&c), "{}: {f:?} not within {c:?}", l.name);
            // Every multi-bit pair of weights and activations fuses (the 1-bit
            // weights under multi-bit activations are 2-bit codes).
            for w in [1u8, 2, 3, 4, 8] {
                for a in [2u8, 3, 4, 8] {
                    assert!(
                        f.contains(&(w, a)),
                        "{name}, {}: ({w}, {a}) missing: {f:?}",
                        l.name
                    );
                }
            }
        }
        // A layer whose input only binarizable layers read has its binarized kernel.
        let mut readers: HashMap<_, Vec<bool>> = HashMap::new();
        for l in &layers {
            readers.entry(l.input).or_default().push(l.binarizable);
        }
        let bin: Vec<_> = layers
            .iter()
            .filter(|l| readers[&l.input].iter().all(|&b| b))
            .collect();
        assert!(!bin.is_empty(), "{name}: no binarizable layer");
        for l in bin {
            assert!(
                fusable[&l.name].contains(&(1, 1)),
                "{name}, {}: no (1, 1)",
                l.name
            );
        }
    }
}

/// The ResNet-20-style model of the benchmark (`bench/gen_resnet20.py` writes
/// `bench/out/resnet20.onnx`; calibration data in `bench/out/r20_calib.npz`, key `x`):
/// the e-graph size and time with the alternatives of every layer.
#[test]
#[ignore = "needs bench/out/resnet20.onnx and bench/out/r20_calib.npz"]
fn resnet20_plan_as_choice() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/out");
    let mut m = import_file(&dir.join("resnet20.onnx"), &ImportOptions::default())
        .unwrap()
        .module;
    cleanup::pipeline().run(&mut m, &mut |_| {}).unwrap();
    let train = dir.join("r20_calib.npz");
    let copts = CalibOptions {
        limit: Some(16),
        ..Default::default()
    };
    let stats = calibrate(&m, &train, &copts).unwrap();
    let layers = quant_layers(&m).unwrap();
    let n = layers.len();
    let plan: BTreeMap<String, (u8, u8)> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let b = if i == 0 || i + 1 == n {
                (8, 8)
            } else {
                ([4, 2, 3, 8][i % 4], 4)
            };
            (l.name.clone(), b)
        })
        .collect();
    let mut npz = npyz::npz::NpzArchive::open(&train).unwrap();
    let data: Vec<f32> = npz.by_name("x").unwrap().unwrap().into_vec().unwrap();
    let xs: Vec<Tensor> = data
        .chunks(3 * 32 * 32)
        .take(2)
        .map(|c| Tensor::f32(vec![1, 3, 32, 32], c.to_vec()))
        .collect();
    compare(&m, &stats, &train, plan, &xs);
}
