//! `--bits`, `--wbits`, `--abits`, `--calib`, `--calib-method`, `--keep-edges` on
//! `qcc compile` and `qcc eval`.

mod cli_common;

use cli_common::qcc;

#[test]
fn eval_quantized_with_calibration() {
    let (ok, out, err) = qcc(&[
        "eval",
        "tests/models/digits_cnn_folded.onnx",
        "--data",
        "tests/models/digits_test.npz",
        "--limit",
        "60",
        "--bits",
        "4",
        "--calib",
        "tests/models/digits_train.npz",
        "--calib-limit",
        "50",
        "--calib-method",
        "mse",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("compiled (JIT) top-1"), "{out}");
    assert!(
        err.contains("activation ranges by mse on 50 samples"),
        "{err}"
    );
    assert!(err.contains("edge layer, kept at 8 bits"), "{err}");
    assert!(
        err.contains("output error vs float on 32 samples: mean KL"),
        "{err}"
    );
    assert!(
        err.contains("weights below 8 bits are stored bit-packed"),
        "{err}"
    );
}

#[test]
fn compile_with_wbits_abits_and_no_edges() {
    let dir = std::env::temp_dir().join(format!("qcc-quant-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let o = dir.join("m.o");
    let (ok, _, err) = qcc(&[
        "compile",
        "tests/models/digits_resnet_folded.onnx",
        "--wbits",
        "4",
        "--abits",
        "8",
        "--keep-edges",
        "false",
        "--calib",
        "tests/models/digits_train.npz",
        "--calib-limit",
        "20",
        "-o",
        o.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(o.exists() && o.with_extension("h").exists());
    assert!(!err.contains("edge layer"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_say_what_works() {
    let (ok, _, err) = qcc(&[
        "eval",
        "tests/models/digits_cnn_folded.onnx",
        "--data",
        "tests/models/digits_test.npz",
        "--wbits",
        "9",
        "--abits",
        "4",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--wbits 9") && err.contains("1..8 bits"),
        "{err}"
    );
    let (ok, _, err) = qcc(&[
        "eval",
        "tests/models/digits_cnn_folded.onnx",
        "--data",
        "tests/models/digits_test.npz",
        "--bits",
        "8",
    ]);
    assert!(!ok);
    assert!(err.contains("--calib"), "{err}");
}

/// Data-free quantization (ranges from the batch-norm statistics kept by fold-batch-norm)
/// compiles and runs on the JIT; the logits gemm, which has no range, keeps an f32 output
/// through a code-preserving cast.
#[test]
fn data_free_eval_runs_on_the_jit() {
    let (ok, out, err) = qcc(&[
        "eval",
        "tests/models/digits_cnn.onnx",
        "--data",
        "tests/models/digits_test.npz",
        "--limit",
        "60",
        "--bits",
        "8",
        "--input-range",
        "0,1",
    ]);
    assert!(ok, "{err}");
    assert!(!err.contains("assumed in [0, 1]"), "{err}");
    let agreement = out
        .lines()
        .find_map(|l| l.strip_prefix("agreement:"))
        .and_then(|l| l.trim().split('%').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no agreement line in {out}"));
    assert!(agreement >= 95.0, "{out}");
    let (ok, _, err) = qcc(&[
        "eval",
        "tests/models/digits_cnn.onnx",
        "--data",
        "tests/models/digits_test.npz",
        "--bits",
        "8",
        "--input-range",
        "1,0",
    ]);
    assert!(!ok && err.contains("expected LO,HI"), "{err}");
}

/// Regressions from PP-OCRv4 rec at `--bits 8` (issue 14), which stopped with "internal:
/// these kernels did not become integer kernels": a pruned output channel (weights of
/// 1e-39) got a subnormal weight scale, so its layer could not fuse; and a matrix product
/// of two run-time operands (attention), which is not quantized, was counted as a failed
/// fusion. Both now compile, the conv in an integer kernel, the matmul in f32.
#[test]
fn pruned_channel_and_activation_matmul_compile_at_8_bits() {
    let dir = cli_common::temp_dir("quant", "pruned");
    let model = dir.join("m.qir");
    std::fs::write(
        &model,
        "module pruned {
  input %x: f32[1,2,4,4]
  const @w: f32[3,2,1,1] = [0.5, -0.25, 1e-39, -1e-39, 0.3, 0.7]
  const @b: f32[3] = [0.1, 0.0, -0.2]
  const @g: f32[3] = [1.0, 1.0, 1.0]
  const @be: f32[3] = [0.0, 0.0, 0.0]
  const @mu: f32[3] = [0.2, 0.0, -0.1]
  const @v: f32[3] = [0.5, 0.1, 0.8]
  %c: f32[1,3,4,4] = conv2d(%x, @w, @b)
  %n: f32[1,3,4,4] = batch_norm(%c, @g, @be, @mu, @v)
  %r: f32[1,3,4,4] = relu(%n)
  %m: f32[1,3,4,4] = matmul(%r, %r)
  output %m
}
",
    )
    .unwrap();
    let out = dir.join("m.o");
    let (ok, stdout, err) = qcc(&[
        "compile",
        model.to_str().unwrap(),
        "--bits",
        "8",
        "--calib",
        "tests/models/small_calib_2x4x4.npz",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}{err}");
    assert!(!err.contains("internal"), "{err}");
    let text = format!("{stdout}{err}");
    assert!(
        text.contains("conv2d_int"),
        "the conv is not an integer kernel:\n{text}"
    );
    assert!(text.contains("stays f32"), "{text}");
}

/// Linear layers as exported (`matmul` then the `add` of a bias, on either side): the
/// matmul's result is not quantized to 8 bits (it would be dequantized at once for the
/// add); the integer kernel dequantizes its accumulator and adds the bias itself.
#[test]
fn linear_layers_keep_f32_results_before_their_bias() {
    let dir = cli_common::temp_dir("quant", "linear");
    let model = dir.join("m.qir");
    std::fs::write(
        &model,
        "module linear {
  input %x: f32[1,2,4,4]
  const @w1: f32[4,6] = [0.5, -0.25, 0.1, 0.3, 0.7, -0.6, 0.2, 0.4, -0.3, 0.9, 0.05, 0.3, -0.8, 0.6, 0.2, -0.1, 0.4, 0.5, 0.3, -0.2, 0.7, 0.1, -0.4, 0.6]
  const @b1: f32[6] = [0.1, 0.0, -0.2, 0.3, 0.05, -0.15]
  const @w2: f32[6,3] = [0.2, -0.5, 0.3, 0.6, 0.1, -0.4, 0.25, 0.35, 0.45, -0.3, 0.2, 0.1, 0.5, -0.6, 0.7, 0.15, 0.05, -0.25]
  const @b2: f32[3] = [0.5, -0.5, 0.25]
  %m1: f32[1,2,4,6] = matmul(%x, @w1)
  %a1: f32[1,2,4,6] = add(%m1, @b1)
  %r: f32[1,2,4,6] = relu(%a1)
  %m2: f32[1,2,4,3] = matmul(%r, @w2)
  %a2: f32[1,2,4,3] = add(@b2, %m2)
  output %a2
}
",
    )
    .unwrap();
    let out = dir.join("m.o");
    let (ok, stdout, err) = qcc(&[
        "compile",
        model.to_str().unwrap(),
        "--bits",
        "8",
        "--calib",
        "tests/models/small_calib_2x4x4.npz",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}{err}");
    let text = format!("{stdout}{err}");
    assert!(
        text.contains("2 kernel output(s) stay f32 before their bias add"),
        "{text}"
    );
    assert!(
        !text.contains("quantized to 8 bits so that they fuse"),
        "{text}"
    );
    assert_eq!(
        text.matches("+dequantize+bias").count(),
        2,
        "the dequantize and bias add are not fused:\n{text}"
    );
}

/// `--ternary` (TWN 2-bit weights): compiles and runs with 2-bit weights under 8-bit
/// activations (the plan, with the layers that took ternary weights, is snapshotted),
/// and needs 2-bit weights.
#[test]
fn ternary_weights_compile_and_need_two_bits() {
    let (ok, out, err) = qcc(&[
        "eval",
        "tests/models/digits_resnet_folded.onnx",
        "--data",
        "tests/models/digits_test.npz",
        "--calib",
        "tests/models/digits_train.npz",
        "--calib-limit",
        "200",
        "--wbits",
        "2",
        "--abits",
        "8",
        "--ternary",
        "--quiet",
    ]);
    assert!(ok, "{out}{err}");
    let text = format!("{out}{err}");
    let acc: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("compiled (JIT) top-1:"))
        .and_then(|l| l.trim().split('%').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    // 99.72 % when written (float 99.72 %).
    assert!(acc > 97.0, "{acc}%\n{text}");
    // The plan: every layer with its bits, and which took ternary weights.
    let plan: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with('/'))
        .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .chain(
            text.lines()
                .filter(|l| l.contains("--ternary:"))
                .map(String::from),
        )
        .collect();
    insta::assert_snapshot!("ternary_resnet_wbits_2_plan", plan.join("\n"));
    let (ok, _, err) = qcc(&[
        "compile",
        "tests/models/digits_cnn_folded.onnx",
        "--wbits",
        "4",
        "--ternary",
        "--calib",
        "tests/models/digits_train.npz",
        "-o",
        "/dev/null",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--ternary") && err.contains("--wbits 2"),
        "{err}"
    );
}

/// Top-1 accuracy and mean KL against float over the evaluated samples, from `qcc
/// eval`'s output.
fn accuracy_and_kl(text: &str) -> (f64, f64) {
    let acc = text
        .lines()
        .find_map(|l| l.strip_prefix("compiled (JIT) top-1:"))
        .and_then(|l| l.trim().split('%').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in\n{text}"));
    let kl = text
        .lines()
        .find_map(|l| l.strip_prefix("mean KL vs reference:"))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no KL in\n{text}"));
    (acc, kl)
}

/// `qcc eval MODEL` on the digits test split, calibrated on `calib` (`limit` samples), with
/// `flags`; the printed text (the run must succeed).
fn eval_digits(model: &str, calib: &str, limit: &str, flags: &[&str]) -> String {
    let path = format!("tests/models/{model}");
    let mut args = vec![
        "eval",
        path.as_str(),
        "--data",
        "tests/models/digits_test.npz",
        "--calib",
        calib,
        "--calib-limit",
        limit,
        "--quiet",
    ];
    args.extend_from_slice(flags);
    let (ok, out, err) = qcc(&args);
    assert!(ok, "{out}{err}");
    format!("{out}{err}")
}

/// `--sequential` (bottom-up weights with error feedback): on the digits CNN at
/// `--bits 1` it beats plain `--bits 1` in accuracy and in KL against float (71.67 % /
/// KL 0.94 plain, 83.06 % / KL 0.093 sequential on 200 calibration samples when
/// written); the plan, which layers it re-quantized at which bits, is snapshotted;
/// without `--calib` it is an error.
#[test]
fn sequential_binary_beats_plain_binary_on_the_cnn() {
    let train = "tests/models/digits_train.npz";
    let eval = |extra: &[&str]| {
        let mut flags = vec!["--bits", "1"];
        flags.extend_from_slice(extra);
        eval_digits("digits_cnn_folded.onnx", train, "200", &flags)
    };
    let plain = eval(&[]);
    let seq = eval(&["--sequential"]);
    let (a0, k0) = accuracy_and_kl(&plain);
    let (a1, k1) = accuracy_and_kl(&seq);
    eprintln!("--bits 1: {a0}% KL {k0}; --sequential: {a1}% KL {k1}");
    assert!(
        a1 > a0 && k1 < k0,
        "{a1}% KL {k1} against {a0}% KL {k0}\n{seq}"
    );
    // The plan: every layer with its bits, and what the pass did.
    let mut plan: Vec<String> = seq
        .lines()
        .filter(|l| l.starts_with('/'))
        .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .collect();
    plan.extend(
        seq.lines()
            .filter(|l| l.contains("--sequential:") || l.contains("each right after"))
            .map(|l| l.split(';').next().unwrap_or(l).to_string()),
    );
    insta::assert_snapshot!("sequential_cnn_bits_1_plan", plan.join("\n"));
    let (ok, _, err) = qcc(&[
        "compile",
        "tests/models/digits_cnn_folded.onnx",
        "--bits",
        "1",
        "--sequential",
        "-o",
        "/dev/null",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--sequential") && err.contains("--calib"),
        "{err}"
    );
}

/// `--sequential` calibrates each layer's input activation again on the layers below it
/// as quantized (against the float model's values): on the digits ResNet at `--bits 2`
/// it reaches 98.33 % / KL 4.9e-2 on 200 calibration samples when written, where the
/// weights alone (activation ranges from the float model) reached 88 % / KL 0.33 and
/// min-max 75 % / KL 0.72; with `--calib-method qil` as well, the same.
#[test]
fn sequential_calibrates_activations_on_the_quantized_layers() {
    let train = "tests/models/digits_train.npz";
    let eval = |extra: &[&str]| {
        let mut flags = vec!["--bits", "2"];
        flags.extend_from_slice(extra);
        eval_digits("digits_resnet_folded.onnx", train, "200", &flags)
    };
    let plain = eval(&[]);
    let seq = eval(&["--sequential"]);
    let (a0, k0) = accuracy_and_kl(&plain);
    let (a1, k1) = accuracy_and_kl(&seq);
    eprintln!("--bits 2: {a0}% KL {k0}; --sequential: {a1}% KL {k1}");
    assert!(a1 >= 95.0 && k1 < 0.1 && a1 > a0 && k1 < k0, "{seq}");
    assert!(
        seq.lines()
            .any(|l| l.contains("layer input activation(s) took a new range")),
        "{seq}"
    );
    // With QIL, its interval is one of the candidates, and the pass still runs.
    let qil = eval(&["--sequential", "--calib-method", "qil"]);
    let (a2, k2) = accuracy_and_kl(&qil);
    assert!(
        qil.contains("layer input activation(s) took a new range"),
        "{qil}"
    );
    assert!(a2 >= 95.0 && k2 < 0.1, "{a2}% KL {k2}\n{qil}");
}

/// `--calib-method qil` (intervals and the weight grid's exponent gamma searched against
/// the output error): on the digits ResNet at `--bits 3` it beats min-max in accuracy
/// and KL (97.78 % / KL 7.1e-2 min-max, 98.33 % / 2.8e-2 with two layers on
/// non-uniform grids when written, 500 calibration samples); calibrated on photo
/// patches (another distribution) it still compiles a working model; without `--calib`
/// it is an error.
#[test]
fn qil_intervals_beat_min_max_on_the_resnet() {
    let eval = |calib: &str, extra: &[&str]| {
        let mut flags = vec!["--bits", "3"];
        flags.extend_from_slice(extra);
        eval_digits("digits_resnet_folded.onnx", calib, "500", &flags)
    };
    let digits = "tests/models/digits_train.npz";
    let plain = eval(digits, &[]);
    let qil = eval(digits, &["--calib-method", "qil"]);
    let (a0, k0) = accuracy_and_kl(&plain);
    let (a1, k1) = accuracy_and_kl(&qil);
    eprintln!("min-max: {a0}% KL {k0}; qil: {a1}% KL {k1}");
    assert!(
        a1 > a0 && k1 < k0,
        "{a1}% KL {k1} against {a0}% KL {k0}\n{qil}"
    );
    // The plan: per layer, its bits and the weight and input scales chosen (the report's
    // table), and the search's summary without the measured errors.
    let mut plan: Vec<String> = qil
        .lines()
        .filter(|l| l.starts_with('/'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!(
                "{} {} w{} a{} weight scales {} input {}",
                f[0], f[1], f[2], f[3], f[4], f[5]
            )
        })
        .collect();
    plan.extend(
        qil.lines()
            .filter(|l| l.contains("--calib-method qil:"))
            .map(|l| l.split("; output error").next().unwrap_or(l).to_string()),
    );
    assert!(plan.len() > 4, "{qil}");
    assert!(qil.contains("on a non-uniform grid (/"), "{qil}");
    insta::assert_snapshot!("qil_resnet_bits_3_plan", plan.join("\n"));
    let photos = eval(
        "tests/models/photo_patches_8x8.npz",
        &["--calib-method", "qil"],
    );
    let (a2, _) = accuracy_and_kl(&photos);
    // 93.33 % when written (min-max on the same patches: 97.78 %).
    assert!(a2 > 90.0, "{a2}%\n{photos}");
    let (ok, _, err) = qcc(&[
        "compile",
        "tests/models/digits_cnn_folded.onnx",
        "--bits",
        "3",
        "--calib-method",
        "qil",
        "-o",
        "/dev/null",
    ]);
    assert!(!ok);
    assert!(err.contains("qil") && err.contains("--calib"), "{err}");
}

/// `--act-method dqa` (shift requantization, the default). Its per-channel activation
/// scales (folded into the weights; `--dqa-ratio 0` keeps only them): at `--wbits 8
/// --abits 3` they beat per-tensor scales in accuracy and KL on both digits models
/// (ResNet 97.22 % / KL 8.5e-2 -> 98.89 % / 2.7e-2, CNN 98.33 % / 1.2e-2 -> 98.89 % /
/// 7.1e-3 when written). Its important channels (the default, 0.4 of each activation's
/// channels at 3 + 3 bits in DQA's own form: one 6-bit grid, the others' codes
/// multiples of 8, one kernel per reader) lower the KL further and beat per-tensor
/// scales in both columns (issue 13's bar; ResNet 99.17 % / 1.7e-2, CNN 98.61 % /
/// 3.4e-3 when written; the CNN's predictions then agree with float on 356 images,
/// per-tensor's on 357). The split form (`--dqa-form split`) lowers the KL too and
/// agrees with float on at least as many images as the scales alone. `--dqa-requant multiply` (free scales) beats
/// per-tensor scales in KL too. Bad values and a missing `--calib` are errors.
#[test]
fn dqa_activation_scales_beat_per_tensor_at_three_bits() {
    let agreement = |out: &str| -> f64 {
        let l = out
            .lines()
            .find(|l| l.starts_with("agreement:"))
            .unwrap_or_else(|| panic!("{out}"));
        l.split_whitespace()
            .nth(1)
            .unwrap()
            .trim_end_matches('%')
            .parse()
            .unwrap()
    };
    for model in ["digits_resnet_folded.onnx", "digits_cnn_folded.onnx"] {
        let eval = |extra: &[&str]| {
            let mut flags = vec!["--wbits", "8", "--abits", "3"];
            flags.extend_from_slice(extra);
            eval_digits(model, "tests/models/digits_train.npz", "500", &flags)
        };
        let plain = eval(&[]);
        let scales = eval(&["--act-method", "dqa", "--dqa-ratio", "0"]);
        let dqa = eval(&["--act-method", "dqa"]);
        let (a0, k0) = accuracy_and_kl(&plain);
        let (a1, k1) = accuracy_and_kl(&scales);
        let (a2, k2) = accuracy_and_kl(&dqa);
        eprintln!(
            "{model}: per-tensor {a0}% KL {k0}; per-channel scales {a1}% KL {k1}; with important channels {a2}% KL {k2}"
        );
        assert!(
            a1 > a0 && k1 < k0,
            "{model}: {a1}% KL {k1} against {a0}% KL {k0}\n{scales}"
        );
        assert!(
            k2 < k1,
            "{model}: {a2}% KL {k2} against {a1}% KL {k1}\n{dqa}"
        );
        assert!(
            a2 > a0 && k2 < k0,
            "{model}: {a2}% KL {k2} against per-tensor {a0}% KL {k0}\n{dqa}"
        );
        assert!(dqa.contains("one grid of the finer step"), "{dqa}");
        let split = eval(&["--act-method", "dqa", "--dqa-form", "split"]);
        let (_, k5) = accuracy_and_kl(&split);
        assert!(split.contains("readers split"), "{split}");
        assert!(
            k5 < k1 && agreement(&split) >= agreement(&scales),
            "{model}: split KL {k5} against {k1}\n{split}"
        );
        // The plan: which activations are scaled per channel and why the others are
        // not, which channels are important and which readers were split.
        let plan = dqa
            .lines()
            .filter(|l| l.contains("--act-method dqa:"))
            .map(|l| l.replace("; ", "\n  ").replace("), %", "),\n  %"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            plan.contains("channels at 6 bits, the others at 3"),
            "{dqa}"
        );
        insta::assert_snapshot!(
            format!("dqa_plan_{}", model.trim_end_matches(".onnx")),
            plan
        );
        // The cheap ranking (mean square) still beats per-tensor scales (ResNet KL
        // 6.0e-2, CNN 4.7e-3 when written) but picks other channels.
        let energy = eval(&["--act-method", "dqa", "--dqa-rank", "energy"]);
        let (_, k3) = accuracy_and_kl(&energy);
        assert!(k3 < k0, "{model}: energy KL {k3} against {k0}\n{energy}");
        let picks = |out: &str| -> Vec<String> {
            out.lines()
                .filter(|l| l.contains("important channels "))
                .map(|l| l.to_string())
                .collect()
        };
        assert_ne!(picks(&energy), picks(&dqa), "{model}");
        // DQA requantizes by shifts (every scale a power of two) unless asked to
        // multiply; the multiplying form beats per-tensor scales in KL too (ResNet
        // 1.7e-2, CNN 3.2e-3 when written; its CNN top-1 is one image below).
        assert!(dqa.contains("scales are powers of two"), "{dqa}");
        let mul = eval(&["--act-method", "dqa", "--dqa-requant", "multiply"]);
        assert!(!mul.contains("scales are powers of two"), "{mul}");
        let (_, k4) = accuracy_and_kl(&mul);
        assert!(k4 < k0, "{model}: multiply KL {k4} against {k0}\n{mul}");
    }
    for (flags, want) in [
        (&["--act-method", "dqa"][..], "--calib"),
        (
            &[
                "--act-method",
                "dqa",
                "--dqa-ratio",
                "1.5",
                "--calib",
                "tests/models/digits_train.npz",
            ][..],
            "[0, 1)",
        ),
        (&["--dqa-ratio", "0.5"][..], "--act-method dqa"),
        (
            &[
                "--act-method",
                "dqa",
                "--dqa-extra-bits",
                "9",
                "--calib",
                "tests/models/digits_train.npz",
            ][..],
            "1..=7",
        ),
        (
            &[
                "--act-method",
                "dqa",
                "--dqa-rank",
                "foo",
                "--calib",
                "tests/models/digits_train.npz",
            ][..],
            "greedy",
        ),
        (&["--dqa-requant", "shift"][..], "--act-method dqa"),
        (&["--dqa-form", "split"][..], "--act-method dqa"),
        (
            &[
                "--act-method",
                "dqa",
                "--dqa-form",
                "both",
                "--calib",
                "tests/models/digits_train.npz",
            ][..],
            "fused",
        ),
        (
            &[
                "--act-method",
                "dqa",
                "--dqa-requant",
                "multiply",
                "--pow2",
                "--calib",
                "tests/models/digits_train.npz",
            ][..],
            "drop one of them",
        ),
        (
            &[
                "--act-method",
                "dqa",
                "--wbits",
                "2",
                "--ternary",
                "--calib",
                "tests/models/digits_train.npz",
            ][..],
            "--dqa-requant multiply",
        ),
    ] {
        let mut args = vec![
            "compile",
            "tests/models/digits_cnn_folded.onnx",
            "--abits",
            "3",
        ];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-o", "/dev/null"]);
        let (ok, _, err) = qcc(&args);
        assert!(!ok, "{flags:?}");
        assert!(err.contains(want), "{flags:?}: {err}");
    }
}

/// `--sq-ratio 0.75` (stochastic quantization per filter: 3/4 of each middle layer's
/// filters at 2 bits, drawn by roulette favouring small errors, the others at 8 bits,
/// the weights re-fitted bottom-up with error feedback) beats uniform min-max at the
/// same average weight bits, interpolated between `--wbits 3` and `--wbits 4`, in
/// accuracy and in KL against float, on both digits models (the bar). When
/// written, 500 calibration samples: ResNet 99.72 % / KL 1.1e-3 at 3.69 bits against
/// 99.58 % / 7.5e-3 interpolated; CNN 98.33 % / 6.6e-3 at 5.22 bits against 98.19 % /
/// 9.8e-3. With only the low filters' gains and biases re-fitted (`--sq-refit gain`,
/// SQ's re-fit as the issue states it) it misses that bar (ResNet KL 1.45e-2, CNN
/// 1.65e-2) but still beats uniform `--wbits 2` and the same 75/25 split taken by filter
/// index (`--sq-pick index`) in KL, matching their accuracy. The CNN's plan (each part's
/// bits, the split and where its channel order went) is snapshotted.
#[test]
fn sq_ratio_beats_uniform_and_the_index_split() {
    let avg_bits = |text: &str| -> f64 {
        text.lines()
            .find_map(|l| l.split("average weight bits ").nth(1))
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no average weight bits in\n{text}"))
    };
    for model in ["digits_cnn_folded.onnx", "digits_resnet_folded.onnx"] {
        let eval = |w: &str, extra: &[&str]| {
            let mut flags = vec!["--wbits", w, "--abits", "8"];
            flags.extend_from_slice(extra);
            eval_digits(model, "tests/models/digits_train.npz", "500", &flags)
        };
        let sq = eval("2", &["--sq-ratio", "0.75"]);
        let (a, k) = accuracy_and_kl(&sq);
        let bits = avg_bits(&sq);
        let (u3, u4) = (eval("3", &[]), eval("4", &[]));
        let (b3, b4) = (avg_bits(&u3), avg_bits(&u4));
        let t = (bits - b3) / (b4 - b3);
        assert!(
            (0.0..=1.0).contains(&t),
            "{model}: {bits} bits outside {b3}..{b4}"
        );
        let ((a3, k3), (a4, k4)) = (accuracy_and_kl(&u3), accuracy_and_kl(&u4));
        let (au, ku) = (a3 + t * (a4 - a3), k3 + t * (k4 - k3));
        eprintln!("{model}: sq {a}% KL {k} at {bits} bits; uniform there {au}% KL {ku}");
        assert!(
            a > au && k < ku,
            "{model}: sq {a}% KL {k} at {bits} bits, uniform {au}% KL {ku}\n{sq}"
        );
        assert!(sq.contains("--sq-refit feedback"), "{sq}");
        let uniform = eval("2", &[]);
        let gain = eval("2", &["--sq-ratio", "0.75", "--sq-refit", "gain"]);
        let index = eval("2", &["--sq-ratio", "0.75", "--sq-pick", "index"]);
        let (a0, k0) = accuracy_and_kl(&uniform);
        let (a1, k1) = accuracy_and_kl(&gain);
        let (a2, k2) = accuracy_and_kl(&index);
        eprintln!(
            "{model}: --wbits 2 {a0}% KL {k0}; sq gain re-fit {a1}% KL {k1}; index split {a2}% KL {k2}"
        );
        assert!(
            a1 >= a0 && k1 < k0 && a1 >= a2 && k1 < k2,
            "{model}: sq {a1}% KL {k1}, uniform {a0}% KL {k0}, index {a2}% KL {k2}\n{gain}"
        );
        assert!(k < k1, "{model}: feedback KL {k} against gain re-fit {k1}");
        // Every split layer averages 3.5 weight bits (12 of 16 or 18 of 24 at 2 bits).
        let splits: Vec<&str> = sq.lines().filter(|l| l.contains("--sq-ratio: ")).collect();
        assert!(!splits.is_empty(), "{sq}");
        assert!(
            splits
                .iter()
                .all(|l| l.contains("average 3.500 weight bits")),
            "{sq}"
        );
        if model == "digits_cnn_folded.onnx" {
            let mut plan: Vec<String> = sq
                .lines()
                .filter(|l| l.starts_with('/'))
                .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
                .collect();
            plan.extend(
                sq.lines()
                    .filter(|l| l.contains("--sq-ratio") || l.contains("average weight bits"))
                    // (the stages' measured errors vary with the CPU's float paths)
                    .map(|l| l.split(": output error").next().unwrap_or(l))
                    .map(|l| l.split(" fell by").next().unwrap_or(l).to_string()),
            );
            insta::assert_snapshot!("sq_cnn_ratio_0_75_plan", plan.join("\n"));
        }
    }
}

/// `--sq-ratio` with TWN's ternary weights as the low form (`--wbits 2 --ternary`) and
/// with `--sq-high 4`: both build, split the middle layers and run.
#[test]
fn sq_ratio_takes_ternary_and_a_lower_high_width() {
    let model = "digits_cnn_folded.onnx";
    let train = "tests/models/digits_train.npz";
    let t = eval_digits(
        model,
        train,
        "100",
        &[
            "--wbits",
            "2",
            "--abits",
            "8",
            "--ternary",
            "--sq-ratio",
            "0.75",
        ],
    );
    assert!(t.contains("12 of 16 filters at 2 bits, 4 at 8 bits"), "{t}");
    let h = eval_digits(
        model,
        train,
        "100",
        &[
            "--wbits",
            "2",
            "--abits",
            "8",
            "--sq-ratio",
            "0.75",
            "--sq-high",
            "4",
        ],
    );
    assert!(h.contains("12 of 16 filters at 2 bits, 4 at 4 bits"), "{h}");
    assert!(h.contains("average 2.500 weight bits"), "{h}");
}

/// `--sq-ratio` combines with `--sequential` (its default re-fit; each part re-quantized
/// bottom-up like any layer) and with `--calib-method qil` (each part's intervals
/// searched): both build the split and, on the CNN, `--sequential` gets a lower KL with
/// the split than without it (98.33 % / KL 6.6e-3 against 98.33 % / 8.7e-3 uniform
/// `--wbits 2 --sequential` on 500 samples when written). `--sq-refit gain` with
/// `--sequential`, and `--sq-refit` without `--sq-ratio` or with `--sq-pick index`, are
/// errors.
#[test]
fn sq_ratio_combines_with_sequential_and_qil() {
    let model = "digits_cnn_folded.onnx";
    let train = "tests/models/digits_train.npz";
    let eval = |extra: &[&str]| {
        let mut flags = vec!["--wbits", "2", "--abits", "8"];
        flags.extend_from_slice(extra);
        eval_digits(model, train, "500", &flags)
    };
    let seq = eval(&["--sequential"]);
    let sq_seq = eval(&["--sequential", "--sq-ratio", "0.75"]);
    let (_, k0) = accuracy_and_kl(&seq);
    let (_, k1) = accuracy_and_kl(&sq_seq);
    assert!(
        k1 < k0,
        "sq + sequential KL {k1} against sequential {k0}\n{sq_seq}"
    );
    assert!(sq_seq.contains("--sequential: 4 layer(s)"), "{sq_seq}");
    assert!(sq_seq.contains("12 of 16 filters at 2 bits"), "{sq_seq}");
    for (extra, want) in [
        (
            &["--sq-refit", "gain", "--sequential"][..],
            "drop one of them",
        ),
        (&["--sq-refit", "gain"][..], "needs --sq-ratio"),
        (
            &["--sq-refit", "feedback", "--sq-pick", "index"][..],
            "index split",
        ),
    ] {
        let mut args = vec![
            "compile",
            "tests/models/digits_cnn_folded.onnx",
            "--wbits",
            "2",
            "--calib",
            train,
            "-o",
            "/dev/null",
        ];
        if !want.contains("needs") {
            args.extend(["--sq-ratio", "0.75"]);
        }
        args.extend_from_slice(extra);
        let (ok, _, err) = qcc(&args);
        assert!(!ok && err.contains(want), "{extra:?}: {err}");
    }
    let qil = eval(&["--calib-method", "qil", "--sq-ratio", "0.75"]);
    assert!(
        qil.contains("--calib-method qil:") && qil.contains("12 of 16 filters"),
        "{qil}"
    );
}

/// Bad `--sq-*` flags are errors that name the flag and what works, never a panic.
#[test]
fn sq_flags_say_what_works() {
    let run = |extra: &[&str], calib: bool| {
        let mut args = vec!["compile", "tests/models/digits_cnn_folded.onnx"];
        if calib {
            args.extend([
                "--calib",
                "tests/models/digits_train.npz",
                "--calib-limit",
                "20",
            ]);
        }
        args.extend_from_slice(extra);
        args.extend(["-o", "/dev/null"]);
        let (ok, _, err) = qcc(&args);
        assert!(!ok, "{extra:?} should fail");
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let e = run(&["--wbits", "2", "--sq-ratio", "1.5"], true);
    assert!(e.contains("--sq-ratio 1.5") && e.contains("(0, 1]"), "{e}");
    let e = run(&["--wbits", "2", "--sq-ratio", "0"], true);
    assert!(e.contains("--sq-ratio 0") && e.contains("(0, 1]"), "{e}");
    let e = run(&["--wbits", "2", "--sq-ratio", "0.75"], false);
    assert!(e.contains("--sq-ratio") && e.contains("--calib"), "{e}");
    let e = run(
        &["--wbits", "4", "--sq-ratio", "0.75", "--sq-high", "3"],
        true,
    );
    assert!(
        e.contains("--sq-high 3") && e.contains("lower than the low width 4") && e.contains("4..8"),
        "{e}"
    );
    let e = run(&["--wbits", "8", "--sq-ratio", "0.5"], true);
    assert!(
        e.contains("--sq-high 8 equals the low width 8") && e.contains("lower --wbits"),
        "{e}"
    );
    let e = run(&["--wbits", "2", "--sq-high", "4"], true);
    assert!(e.contains("--sq-high") && e.contains("--sq-ratio"), "{e}");
    let e = run(&["--sq-ratio", "0.5"], true);
    assert!(e.contains("--sq-ratio") && e.contains("--wbits"), "{e}");
    let e = run(&["--bits", "1", "--sq-ratio", "0.5"], true);
    assert!(
        e.contains("--sq-ratio") && e.contains("--abits 2..8"),
        "{e}"
    );
}

/// `--wbits 2 --pow2 --calib`: the 1- and 2-bit layers keep power-of-two scales, the
/// per-channel fit's gains rounded to powers of two (unrounded gains left them, and the
/// module used to fail the verifier: "the module is invalid").
#[test]
fn two_bit_weights_with_pow2_keep_power_of_two_scales() {
    let (ok, out, err) = qcc(&[
        "eval",
        "tests/models/digits_resnet_folded.onnx",
        "--data",
        "tests/models/digits_test.npz",
        "--limit",
        "40",
        "--wbits",
        "2",
        "--abits",
        "8",
        "--pow2",
        "--calib",
        "tests/models/digits_train.npz",
        "--calib-limit",
        "50",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("compiled (JIT) top-1"), "{out}");
    assert!(err.contains("rounded to powers of two"), "{err}");
    // The same under --sequential, whose 1- and 2-bit layers took the fit's gains (and
    // binary layers a least-squares scale) after their weights: "the module is invalid:
    // pow2 is set but scale #0 ... is not an exact power of two".
    for bits in [&["--wbits", "2", "--abits", "8"][..], &["--bits", "1"][..]] {
        let mut args = vec![
            "eval",
            "tests/models/digits_cnn_folded.onnx",
            "--data",
            "tests/models/digits_test.npz",
            "--limit",
            "40",
            "--pow2",
            "--sequential",
            "--calib",
            "tests/models/digits_train.npz",
            "--calib-limit",
            "50",
        ];
        args.extend_from_slice(bits);
        let (ok, out, err) = qcc(&args);
        assert!(ok, "{bits:?}: {err}");
        assert!(out.contains("compiled (JIT) top-1"), "{bits:?}: {out}");
        assert!(err.contains("rounded to powers of two"), "{bits:?}: {err}");
    }
}

/// `--wbits 2 --calib` on convolutions without a bias: they get a zero one for the
/// fitted offsets (was "internal: ... has no channels or bias").
#[test]
fn two_bit_fit_on_convolutions_without_bias() {
    let dir = std::env::temp_dir().join(format!("qcc-nobias-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w = |n: usize, seed: usize| -> String {
        (0..n)
            .map(|i| format!("{:.3}", (((i * 37 + seed * 11) % 19) as f32 - 9.0) / 12.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let model = dir.join("nobias.qir");
    std::fs::write(
        &model,
        format!(
            "module nobias {{\n input %x: f32[1,1,8,8]\n const @w0: f32[8,1,3,3] = [{}]\n const @w1: f32[8,8,3,3] = [{}]\n const @w2: f32[8,8,3,3] = [{}]\n const @fc: f32[10,512] = [{}]\n %c0: f32[1,8,8,8] = conv2d(%x, @w0) {{pads = [1, 1, 1, 1]}}\n %r0: f32[1,8,8,8] = relu(%c0)\n %c1: f32[1,8,8,8] = conv2d(%r0, @w1) {{pads = [1, 1, 1, 1]}}\n %r1: f32[1,8,8,8] = relu(%c1)\n %c2: f32[1,8,8,8] = conv2d(%r1, @w2) {{pads = [1, 1, 1, 1]}}\n %r2: f32[1,8,8,8] = relu(%c2)\n %f: f32[1,512] = flatten(%r2) {{axis = 1}}\n %y: f32[1,10] = gemm(%f, @fc) {{trans_b = true}}\n output %y\n}}\n",
            w(72, 1),
            w(576, 2),
            w(576, 3),
            w(5120, 4)
        ),
    )
    .unwrap();
    let (ok, out, err) = qcc(&[
        "eval",
        model.to_str().unwrap(),
        "--data",
        "tests/models/digits_test.npz",
        "--limit",
        "20",
        "--wbits",
        "2",
        "--abits",
        "8",
        "--calib",
        "tests/models/digits_train.npz",
        "--calib-limit",
        "50",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("compiled (JIT) top-1"), "{out}");
    assert!(err.contains("fitted per channel"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The weight methods on the generated suite models (`tests/models/gen_suite_models.py`
/// and `gen_rnn.py`), calibrated on their reference inputs:
/// - the YOLOv8-style detector at `--wbits 2 --abits 8 --sq-ratio 0.75` (its split
///   layers joined by up to 40 slices each, in the original channel order): the
///   e-graph's tree cost, which counts a shared class once per user, reached 5.7e36 and
///   lost the differences between alternatives, so 36 layers stayed f32 and the build
///   failed ("these quantized layers did not become integer kernels"); extraction now
///   counts each class once on such graphs;
/// - the detector at `--wbits 2 --abits 8 --pow2`: the 2-bit layers' fitted gains are
///   rounded to powers of two instead of skipped (mean KL 0.45 without the fit, 2.0e-3
///   with it when written);
/// - the CRNN-shaped LSTM at `--wbits 2 --abits 8 --sequential`: its recurrent matrix
///   products (no bias for an offset) keep their scales instead of failing ("takes no
///   bias, so its channels cannot be fitted").
#[test]
fn weight_methods_build_on_the_suite_models() {
    let kl = |err: &str| -> f64 {
        err.lines()
            .find_map(|l| l.split("mean KL ").nth(1))
            .and_then(|r| r.split(',').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no KL in\n{err}"))
    };
    let build = |model: &str, flags: &[&str]| -> String {
        let path = format!("tests/models/{model}.onnx");
        let calib = format!("tests/models/{model}.ref.npz");
        let mut args = vec![
            "compile",
            path.as_str(),
            "--calib",
            calib.as_str(),
            "--quiet",
            "-o",
            "/dev/null",
        ];
        args.extend_from_slice(flags);
        let (ok, _, err) = qcc(&args);
        assert!(ok && !err.contains("panicked"), "{model} {flags:?}: {err}");
        err
    };
    let sq = build(
        "yolo_tiny",
        &[
            "--wbits",
            "2",
            "--abits",
            "8",
            "--sq-ratio",
            "0.75",
            "--sq-refit",
            "gain",
        ],
    );
    assert!(sq.contains("filters at 2 bits"), "{sq}");
    let p = build("yolo_tiny", &["--wbits", "2", "--abits", "8", "--pow2"]);
    assert!(p.contains("rounded to powers of two"), "{p}");
    assert!(kl(&p) < 2e-2, "{p}");
    let s = build(
        "crnn_lstm",
        &["--wbits", "2", "--abits", "8", "--sequential"],
    );
    assert!(s.contains("re-quantized bottom-up"), "{s}");
}
