//! `--act-method dqa`'s per-channel activation scales are folded into the weights around
//! each activation (`quant::equalize`): the float model keeps its function, and every
//! equalized activation's channels span the same range.

use std::path::PathBuf;

use qcc::frontend::onnx::{ImportOptions, import_file};
use qcc::passes::cleanup;
use qcc::quant::equalize::{MAX_FACTOR, equalize_activations};
use qcc::quant::{CalibOptions, calibrate, quant_layers};
use qcc_ir::interp::{Tensor, run};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/models")
}

#[test]
fn equalized_models_keep_their_function_and_level_the_channels() {
    let train = models_dir().join("digits_train.npz");
    let copts = CalibOptions {
        limit: Some(100),
        ..Default::default()
    };
    for (name, want) in [
        ("digits_cnn_folded.onnx", 2),
        ("digits_resnet_folded.onnx", 1),
    ] {
        let mut m = import_file(&models_dir().join(name), &ImportOptions::default())
            .unwrap()
            .module;
        cleanup::pipeline().run(&mut m, &mut |_| {}).unwrap();
        let stats = calibrate(&m, &train, &copts).unwrap();
        let layers = quant_layers(&m).unwrap();
        let mut e = m.clone();
        let rep = equalize_activations(&mut e, &stats, &layers);
        assert_eq!(rep.equalized.len(), want, "{name}: {rep:?}");
        // The model's input and the activations that are not made and read by layers
        // alone keep one scale, with a reason.
        assert!(rep.skipped.iter().all(|(_, why)| !why.is_empty()));
        // Same function (float rounding aside).
        let mut npz = npyz::npz::NpzArchive::open(models_dir().join("digits_test.npz")).unwrap();
        let x: Vec<f32> = npz.by_name("x").unwrap().unwrap().into_vec().unwrap();
        for c in x.chunks(64).take(20) {
            let t = Tensor::f32(vec![1, 1, 8, 8], c.to_vec());
            let a = run(&m, std::slice::from_ref(&t)).unwrap();
            let b = run(&e, std::slice::from_ref(&t)).unwrap();
            let (a, b) = (a[0].as_f32().unwrap(), b[0].as_f32().unwrap());
            for (p, q) in a.iter().zip(b) {
                assert!(
                    (p - q).abs() <= 1e-4 * (1.0 + p.abs()),
                    "{name}: {p} vs {q}"
                );
            }
        }
        // Every equalized activation now spans one range per channel (no channel of
        // these models is narrower than 1/MAX_FACTOR of the widest).
        assert!(
            rep.equalized
                .iter()
                .all(|(_, _, spread)| *spread < MAX_FACTOR)
        );
        let st2 = calibrate(&e, &train, &copts).unwrap();
        for (act, _, _) in &rep.equalized {
            let v = e
                .values
                .iter()
                .position(|v| v.spelling() == *act)
                .map(|i| qcc_ir::ValueId(i as u32))
                .unwrap();
            let s = st2.get(&e, v).unwrap();
            let r: Vec<f32> = s
                .ch_min
                .iter()
                .zip(&s.ch_max)
                .map(|(a, b)| a.abs().max(b.abs()))
                .filter(|&x| x > 0.0)
                .collect();
            let hi = r.iter().copied().fold(0.0f32, f32::max);
            let lo = r.iter().copied().fold(f32::INFINITY, f32::min);
            assert!(
                hi / lo < 1.01,
                "{act}: channel ranges {lo}..{hi} after equalization"
            );
        }
    }
}

/// `--act-method dqa`'s important channels (`quant::important`): the readers split in
/// two layers over the reordered channels keep the float model's function, the
/// important fraction of each split activation is `round(0.4 C)` channels, and the
/// parts take `N + m` and `N` activation bits.
#[test]
fn important_channel_splits_keep_the_function() {
    use qcc::quant::RunOptions;
    use qcc::quant::important::{IMP, ImportantOptions, REST, Rank, split_important};
    let train = models_dir().join("digits_train.npz");
    let copts = CalibOptions {
        limit: Some(100),
        ..Default::default()
    };
    // The ResNet's stem output is a residual stream (read by a conv and the add): its
    // channel order changes with every conv writing into the stream.
    for (name, want) in [
        ("digits_cnn_folded.onnx", 1),
        ("digits_resnet_folded.onnx", 2),
    ] {
        let mut m = import_file(&models_dir().join(name), &ImportOptions::default())
            .unwrap()
            .module;
        cleanup::pipeline().run(&mut m, &mut |_| {}).unwrap();
        let stats = calibrate(&m, &train, &copts).unwrap();
        let mut e = m.clone();
        equalize_activations(&mut e, &stats, &quant_layers(&m).unwrap());
        let stats = calibrate(&e, &train, &copts).unwrap();
        for rank in [Rank::Greedy, Rank::Energy] {
            let opts = ImportantOptions {
                ratio: 0.4,
                extra: 3,
                rank,
                abits: 3,
                wbits: 8,
                keep_edges: true,
                fused: false,
                pow2: false,
            };
            let run_opts = RunOptions {
                progress: false,
                ..Default::default()
            };
            let (s, rep) = split_important(
                &e,
                &stats,
                &quant_layers(&e).unwrap(),
                &train,
                Some(100),
                &run_opts,
                &opts,
            )
            .unwrap();
            assert_eq!(rep.split.len(), want, "{name}: {rep:?}");
            for a in &rep.split {
                let want = (0.4 * a.channels as f64).round() as usize;
                assert_eq!(a.important.len(), want, "{name}: {a:?}");
                let mut u = a.important.clone();
                u.sort_unstable();
                u.dedup();
                assert_eq!(u.len(), want, "{name}: {a:?}");
                for r in &a.readers {
                    assert_eq!(rep.bits[&format!("{r}{IMP}")], (8, 6));
                    assert_eq!(rep.bits[&format!("{r}{REST}")], (8, 3));
                }
            }
            let layers = quant_layers(&s).unwrap();
            assert_eq!(
                layers.len(),
                quant_layers(&e).unwrap().len() + rep.bits.len() / 2,
                "{name}"
            );
            let mut npz =
                npyz::npz::NpzArchive::open(models_dir().join("digits_test.npz")).unwrap();
            let x: Vec<f32> = npz.by_name("x").unwrap().unwrap().into_vec().unwrap();
            for c in x.chunks(64).take(20) {
                let t = Tensor::f32(vec![1, 1, 8, 8], c.to_vec());
                let a = run(&e, std::slice::from_ref(&t)).unwrap();
                let b = run(&s, std::slice::from_ref(&t)).unwrap();
                let (a, b) = (a[0].as_f32().unwrap(), b[0].as_f32().unwrap());
                for (p, q) in a.iter().zip(b) {
                    assert!(
                        (p - q).abs() <= 1e-4 * (1.0 + p.abs()),
                        "{name}: {p} vs {q}"
                    );
                }
            }
        }
    }
}
