//! `--compress-weights huffman` (issue 13): the code construction (canonical,
//! prefix-free, length-limited, optimal, deterministic; round trips including the
//! degenerate blobs), the emitted decoder on crafted blobs, and whole models compiled
//! with and without the flag: outputs bit-identical through the JIT (`NAME_run` and the
//! threaded `NAME_run_ctx`) and through linked objects, and the object's weight bytes
//! shrinking by exactly what the report says. A snapshot of the compression plan on a
//! small model, and the flag's errors.

mod backend_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use backend_common::{B, Rng, attrs};
use clap::Parser;
use qcc::backend::huffman::{
    self, Compress, MAX_LEN, MIN_BLOB, canonical_codes, code_lengths, compress_blob, decode, encode,
};
use qcc::backend::{JitModel, Options, Target, ThreadPool};
use qcc_ir::interp::{Tensor, TensorData};
use qcc_ir::{Module, Op};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn models() -> PathBuf {
    root().join("tests/models")
}

fn huff() -> Options {
    Options {
        compress: Compress::Huffman,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------
// The code.

fn freq_of(data: &[u8]) -> [u64; 256] {
    let mut f = [0u64; 256];
    for &b in data {
        f[b as usize] += 1;
    }
    f
}

/// Bits of `freq` coded with lengths `len`.
fn cost(freq: &[u64; 256], len: &[u8; 256]) -> u64 {
    (0..256).map(|s| freq[s] * u64::from(len[s])).sum()
}

/// Textbook Huffman (no length limit): the optimal cost for 2+ symbols.
fn huffman_cost(freq: &[u64; 256]) -> u64 {
    let mut w: Vec<u64> = freq.iter().copied().filter(|&f| f > 0).collect();
    let mut total = 0;
    while w.len() > 1 {
        w.sort_unstable_by(|a, b| b.cmp(a));
        let a = w.pop().unwrap();
        let b = w.pop().unwrap();
        total += a + b;
        w.push(a + b);
    }
    total
}

/// The code of `len` is valid: lengths within the limit, only used symbols coded,
/// Kraft sum exactly 1 (complete) for two or more symbols, canonical and prefix-free.
fn check_code(freq: &[u64; 256], len: &[u8; 256], max_len: u32) {
    let used: Vec<usize> = (0..256).filter(|&s| freq[s] > 0).collect();
    for s in 0..256 {
        assert_eq!(len[s] > 0, freq[s] > 0, "symbol {s}: length {}", len[s]);
        assert!(u32::from(len[s]) <= max_len, "symbol {s}: {} bits", len[s]);
    }
    if used.len() == 1 {
        assert_eq!(len[used[0]], 1);
        return;
    }
    if used.is_empty() {
        return;
    }
    let kraft: u64 = used
        .iter()
        .map(|&s| 1u64 << (max_len - u32::from(len[s])))
        .sum();
    assert_eq!(kraft, 1 << max_len, "the code is complete");
    let codes = canonical_codes(len);
    let mut order = used.clone();
    order.sort_by_key(|&s| (len[s], s));
    for w in order.windows(2) {
        let (a, b) = (codes[w[0]], codes[w[1]]);
        // Canonical: codes increase in (length, symbol) order, read as left-aligned.
        assert!(
            u64::from(a.0) << (max_len - u32::from(a.1))
                < u64::from(b.0) << (max_len - u32::from(b.1)),
            "canonical order at symbols {} and {}",
            w[0],
            w[1]
        );
    }
    for &x in &used {
        for &y in &used {
            if x == y {
                continue;
            }
            let ((cx, lx), (cy, ly)) = (codes[x], codes[y]);
            if lx <= ly {
                assert_ne!(cy >> (ly - lx), cx, "code of {x} is a prefix of {y}'s");
            }
        }
    }
}

/// Blobs of every shape the coder must handle.
fn sample_blobs() -> Vec<(&'static str, Vec<u8>)> {
    let mut r = Rng(7);
    let mut fib = Vec::new();
    let (mut a, mut b) = (1usize, 1usize);
    for s in 0..24u8 {
        fib.extend(std::iter::repeat_n(s, a));
        (a, b) = (b, a + b);
    }
    // Deterministic shuffle.
    for i in (1..fib.len()).rev() {
        let j = (r.next() % (i as u64 + 1)) as usize;
        fib.swap(i, j);
    }
    let mut skew: Vec<u8> = (0..20_000)
        .map(|_| {
            let x = r.next() % 100;
            if x < 80 { 0 } else { (r.next() % 256) as u8 }
        })
        .collect();
    skew.extend(0..=255u8);
    vec![
        ("empty", Vec::new()),
        ("one byte", vec![42]),
        ("one symbol", vec![0x3f; 5000]),
        (
            "two symbols",
            (0..3000).map(|i| (i % 3 == 0) as u8).collect(),
        ),
        ("all 256 uniform", (0..4096).map(|i| i as u8).collect()),
        (
            "all 256 random",
            (0..5000).map(|_| r.next() as u8).collect(),
        ),
        ("all 256 skewed", skew),
        ("fibonacci (limit active)", fib),
        (
            "int8-like weights",
            (0..9000)
                .map(|_| ((r.f(-1.0, 1.0) * r.f(-1.0, 1.0) * 60.0).round() as i8) as u8)
                .collect(),
        ),
    ]
}

#[test]
fn codes_are_canonical_prefix_free_complete_and_length_limited() {
    for (_, data) in sample_blobs() {
        let f = freq_of(&data);
        for max_len in [MAX_LEN, 8, 12, 15] {
            let used = f.iter().filter(|&&x| x > 0).count();
            if used > 1 << max_len {
                continue;
            }
            let len = code_lengths(&f, max_len);
            check_code(&f, &len, max_len);
        }
    }
}

#[test]
fn length_limited_codes_are_optimal() {
    for (what, data) in sample_blobs() {
        let f = freq_of(&data);
        if f.iter().filter(|&&x| x > 0).count() < 2 {
            continue;
        }
        // With room for the longest Huffman code the limit changes nothing.
        let free = code_lengths(&f, 16);
        let max_free = *free.iter().max().unwrap();
        if max_free < 16 {
            assert_eq!(cost(&f, &free), huffman_cost(&f), "{what}");
        }
        // Limited: never better than Huffman, and no worse than any other code
        // within the limit we can name (here: the flat code of 8 bits).
        let lim = code_lengths(&f, MAX_LEN);
        assert!(cost(&f, &lim) >= huffman_cost(&f), "{what}");
        assert!(cost(&f, &lim) <= 8 * data.len() as u64, "{what}");
    }
    // The Fibonacci blob needs more than MAX_LEN bits without the limit.
    let (_, fib) = sample_blobs().remove(7);
    let f = freq_of(&fib);
    assert!(*code_lengths(&f, 16).iter().max().unwrap() as u32 > MAX_LEN);
    assert_eq!(
        *code_lengths(&f, MAX_LEN).iter().max().unwrap() as u32,
        MAX_LEN
    );
}

#[test]
fn codes_are_deterministic_and_break_ties_by_byte_value() {
    let mut f = [0u64; 256];
    for s in [3usize, 200, 17, 99, 5] {
        f[s] = 10;
    }
    let a = code_lengths(&f, MAX_LEN);
    assert_eq!(a, code_lengths(&f, MAX_LEN));
    // Five equal weights: three codes of 2 bits and two of 3, the longer ones going to
    // the smallest byte values (the merge takes leaves in (weight, byte) order).
    let mut by_len: Vec<(u8, usize)> = [3usize, 5, 17, 99, 200]
        .iter()
        .map(|&s| (a[s], s))
        .collect();
    by_len.sort();
    assert_eq!(by_len, vec![(2, 17), (2, 99), (2, 200), (3, 3), (3, 5)]);
    for (what, data) in sample_blobs() {
        assert_eq!(encode(&data), encode(&data.clone()), "{what}");
    }
}

#[test]
fn encode_decode_round_trips() {
    for (what, data) in sample_blobs() {
        let e = encode(&data);
        assert_eq!(decode(&e), data, "{what}");
        assert_eq!(e.raw_len, data.len());
        assert!(e.max_len <= MAX_LEN, "{what}");
        assert_eq!(&e.bytes[e.bytes.len() - huffman::PAD..], &[0; huffman::PAD]);
        // The code in the smaller form: counts and symbols for up to 106 distinct
        // bytes, 128 bytes of length nibbles above.
        assert_eq!(e.bytes[0], u8::from(e.symbols > 106), "{what}");
    }
    // Random blobs of random lengths (every remainder of the four streams' split) and
    // alphabets.
    let mut r = Rng(11);
    for _ in 0..200 {
        let n = (r.next() % 3000) as usize;
        let alphabet = 1 + r.next() % 256;
        let data: Vec<u8> = (0..n).map(|_| (r.next() % alphabet) as u8).collect();
        assert_eq!(decode(&encode(&data)), data);
    }
}

#[test]
fn only_blobs_that_shrink_are_compressed() {
    for (what, data) in sample_blobs() {
        match compress_blob(&data) {
            Some(e) => {
                assert!(data.len() >= MIN_BLOB, "{what}");
                assert!(e.bytes.len() < data.len(), "{what}");
            }
            None => assert!(
                data.len() < MIN_BLOB || encode(&data).bytes.len() >= data.len(),
                "{what}: would have shrunk"
            ),
        }
    }
    assert!(compress_blob(&[0x3f; 5000]).is_some());
    assert!(compress_blob(&[0x3f; 100]).is_none(), "under the minimum");
    let uniform: Vec<u8> = (0..4096).map(|i| i as u8).collect();
    assert!(
        compress_blob(&uniform).is_none(),
        "8 bits a byte cannot shrink"
    );
}

#[test]
fn the_emitted_decoder_round_trips_every_length() {
    // Directly: every split of a blob into the four streams (lengths 0 to 40 cover
    // every remainder and streams of 0 to 10 bytes), and the sample blobs.
    let mut r = Rng(5);
    for n in 0..=40usize {
        for alphabet in [1u64, 2, 3, 17, 256] {
            let data: Vec<u8> = (0..n).map(|_| (r.next() % alphabet) as u8).collect();
            let got = qcc::backend::huffman_round_trip(&data).unwrap();
            assert_eq!(got, data, "{n} bytes of {alphabet} symbols");
        }
    }
    for n in [511usize, 513, 1022, 4097] {
        let data: Vec<u8> = (0..n).map(|_| (r.next() % 7) as u8 * 31).collect();
        assert_eq!(
            qcc::backend::huffman_round_trip(&data).unwrap(),
            data,
            "{n}"
        );
    }
    for (what, data) in sample_blobs() {
        assert_eq!(
            qcc::backend::huffman_round_trip(&data).unwrap(),
            data,
            "{what}"
        );
    }
    // Both forms of the code around the switch (106 distinct bytes), skewed so that
    // the lengths differ.
    for alphabet in [100u64, 106, 107, 120, 200] {
        let data: Vec<u8> = (0..5000)
            .map(|_| {
                let a = r.next() % alphabet;
                let b = r.next() % alphabet;
                (a.min(b) * 251 % 256) as u8
            })
            .collect();
        let mut seen = [false; 256];
        data.iter().for_each(|&b| seen[b as usize] = true);
        let used = seen.iter().filter(|&&x| x).count();
        assert_eq!(encode(&data).bytes[0], u8::from(used > 106), "{alphabet}");
        assert_eq!(
            qcc::backend::huffman_round_trip(&data).unwrap(),
            data,
            "{alphabet} symbols"
        );
    }
}

// ---------------------------------------------------------------------------------
// The emitted decoder, on crafted blobs: y = x + c with x = 0 gives c's bits back.

/// Floats whose little-endian bytes are `bytes` (a multiple of 4; the sign and top
/// exponent bits cleared so that every value is finite and positive, and 0 + c = c).
fn floats_of(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_bits(u32::from_le_bytes([c[0], c[1], c[2], c[3] & 0x3f])))
        .collect()
}

#[test]
fn the_emitted_decoder_restores_crafted_blobs() {
    for (what, data) in sample_blobs() {
        let data = &data[..data.len() / 4 * 4];
        if data.len() < MIN_BLOB {
            continue;
        }
        let c = floats_of(data);
        let n = c.len();
        let mut b = B::new();
        let x = b.input_f32(&[n], vec![0.0; n]);
        let k = b.const_f32(&[n], c.clone());
        let y = b.f(Op::Add, &[x, k], attrs(&[]));
        b.output(y);
        let jit = JitModel::with_options(&b.m, &Target::host(), &huff())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let comp = jit
            .report()
            .compression
            .clone()
            .expect("a compression report");
        let bytes: Vec<u8> = c.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            comp.blobs.len(),
            usize::from(compress_blob(&bytes).is_some()),
            "{what}"
        );
        let out = jit.run(&b.inputs).unwrap();
        let got = out[0].as_f32().unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(got), bits(&c), "{what}");
        // Twice: the scratch holds the previous call's decoded bytes and table.
        let out = jit.run(&b.inputs).unwrap();
        assert_eq!(
            bits(out[0].as_f32().unwrap()),
            bits(&c),
            "{what}, second call"
        );
    }
}

// ---------------------------------------------------------------------------------
// Whole models.

#[derive(Parser)]
struct Q {
    #[command(flatten)]
    q: qcc::quant::QuantFlags,
}

/// The digits model `name`, for one image, quantized to `bits` (None: float).
fn digits(name: &str, bits: Option<u8>) -> Module {
    let mut shapes = BTreeMap::new();
    shapes.insert("input".to_string(), vec![1, 1, 8, 8]);
    let m = qcc::driver::load(&models().join(name), &shapes)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"))
        .module;
    let Some(bits) = bits else { return m };
    let calib = models().join("digits_train.npz");
    let args = [
        "q".to_string(),
        "--bits".into(),
        bits.to_string(),
        "--calib".into(),
        calib.display().to_string(),
        "--calib-limit".into(),
        "64".into(),
    ];
    Q::parse_from(args)
        .q
        .apply(&m)
        .unwrap_or_else(|e| panic!("{name} --bits {bits}: {e}"))
        .expect("quantization was asked for")
        .0
}

fn test_images(count: usize) -> Vec<Tensor> {
    let x = qcc::npy::read_npz_array(&models().join("digits_test.npz"), "x").unwrap();
    let per = x.numel() / x.shape[0];
    let v = x.as_f32().unwrap();
    (0..count)
        .map(|i| Tensor::f32(vec![1, 1, 8, 8], v[i * per..(i + 1) * per].to_vec()))
        .collect()
}

fn bits_of(t: &[Tensor]) -> Vec<Vec<u32>> {
    t.iter()
        .map(|t| match &t.data {
            TensorData::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
            TensorData::Int(v) => v.iter().map(|&x| x as u32).collect(),
        })
        .collect()
}

/// Outputs through the JIT with and without compression (`NAME_run`, and the
/// threaded `NAME_run_ctx` with every splittable layer split) are bit-identical.
fn same_outputs(name: &str, bits: Option<u8>) {
    let m = digits(name, bits);
    let what = format!("{name} bits {bits:?}");
    let plain = JitModel::with_target(&m, &Target::host()).unwrap();
    let coded = JitModel::with_options(&m, &Target::host(), &huff()).unwrap();
    let split = qcc::backend::split_grain(1, 1, || {
        JitModel::with_options(&m, &Target::host(), &huff())
    })
    .unwrap();
    assert!(
        split.report().layers.iter().any(|l| l.tasks > 1),
        "{what}: no layer split"
    );
    let comp = coded.report().compression.clone().unwrap();
    assert!(!comp.blobs.is_empty(), "{what}: nothing compressed");
    assert!(comp.stored_bytes < comp.raw_bytes, "{what}");
    assert_eq!(
        plain.report().weight_bytes - coded.report().weight_bytes,
        comp.saved_bytes(),
        "{what}: the report's weight bytes"
    );
    assert_eq!(
        plain.report().float_weight_bytes,
        coded.report().float_weight_bytes,
        "{what}"
    );
    assert!(
        coded.report().arena_bytes >= plain.report().arena_bytes + comp.decoded_bytes,
        "{what}: the scratch holds the decoded weights"
    );
    assert_eq!(
        coded.scratch_bytes_threads(1),
        coded.report().arena_bytes,
        "{what}"
    );
    // Which entry decodes what: `NAME_run` the blobs its kernels read (with the default
    // grain no digits layer is split, so all of them, and the threaded entry too); with
    // every layer split, `NAME_run` still decodes the same blobs, and the band kernels'
    // own ones only the threaded entry does.
    assert!(comp.blobs.iter().all(|b| b.run && b.run_ctx), "{what}");
    let sc = split.report().compression.clone().unwrap();
    let key = |b: &qcc::backend::BlobReport| (b.raw_bytes, b.stored_bytes, b.offset);
    let run_blobs: Vec<_> = sc.blobs.iter().filter(|b| b.run).map(key).collect();
    assert_eq!(
        run_blobs,
        comp.blobs.iter().map(key).collect::<Vec<_>>(),
        "{what}"
    );
    assert!(sc.blobs.iter().all(|b| b.run || b.run_ctx), "{what}");
    assert!(
        sc.blobs.iter().filter(|b| !b.run).all(|b| b.run_ctx),
        "{what}: a band kernel's blob"
    );
    // The threaded entry's scratch holds the decoded weights too.
    assert!(
        coded.scratch_bytes_threads(2) >= plain.scratch_bytes_threads(2) + comp.decoded_bytes,
        "{what}: threaded scratch"
    );
    let pool = ThreadPool::new(3);
    for (i, x) in test_images(24).iter().enumerate() {
        let x = std::slice::from_ref(x);
        let want = bits_of(&plain.run(x).unwrap());
        assert_eq!(bits_of(&coded.run(x).unwrap()), want, "{what}: image {i}");
        assert_eq!(
            bits_of(&split.run_threads(x, &pool).unwrap()),
            want,
            "{what}: image {i}, NAME_run_ctx on 3 threads"
        );
        assert_eq!(
            bits_of(&coded.run_threads(x, &pool).unwrap()),
            want,
            "{what}: image {i}, NAME_run_ctx unsplit"
        );
    }
}

#[test]
fn digits_cnn_outputs_are_bit_identical() {
    for bits in [None, Some(8), Some(4), Some(2)] {
        same_outputs("digits_cnn.onnx", bits);
    }
}

#[test]
fn digits_resnet_outputs_are_bit_identical() {
    for bits in [None, Some(8), Some(4), Some(2)] {
        same_outputs("digits_resnet.onnx", bits);
    }
}

#[test]
fn quantized_and_binary_models_are_bit_identical() {
    // Models that arrive quantized: QOperator int8, QONNX 2-bit and 1-bit (XNOR).
    for name in [
        "digits_cnn_qop.onnx",
        "digits_w2a2.onnx",
        "digits_w1a1.onnx",
    ] {
        let m = digits(name, None);
        let plain = JitModel::with_target(&m, &Target::host()).unwrap();
        let coded = JitModel::with_options(&m, &Target::host(), &huff()).unwrap();
        for x in test_images(8) {
            let x = std::slice::from_ref(&x);
            assert_eq!(
                bits_of(&coded.run(x).unwrap()),
                bits_of(&plain.run(x).unwrap()),
                "{name}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Objects.

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qcc-huffman-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Sizes of the ELF64 object's symbols whose names start with `prefix`.
fn symbol_sizes(obj: &[u8], prefix: &str) -> Vec<(String, u64)> {
    let u16_at = |o: usize| u16::from_le_bytes(obj[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(obj[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(obj[o..o + 8].try_into().unwrap());
    assert_eq!(&obj[..5], b"\x7fELF\x02", "an ELF64 object");
    let shoff = u64_at(0x28) as usize;
    let (shentsize, shnum) = (u16_at(0x3a), u16_at(0x3c));
    let sh = |i: usize| shoff + i * shentsize;
    let mut out = Vec::new();
    for i in 0..shnum {
        if u32_at(sh(i) + 4) != 2 {
            continue; // not SHT_SYMTAB
        }
        let (off, size) = (u64_at(sh(i) + 0x18) as usize, u64_at(sh(i) + 0x20) as usize);
        let strtab = u64_at(sh(u32_at(sh(i) + 0x28)) + 0x18) as usize;
        for s in (off..off + size).step_by(24) {
            let name_at = strtab + u32_at(s);
            let end = obj[name_at..].iter().position(|&b| b == 0).unwrap();
            let name = String::from_utf8_lossy(&obj[name_at..name_at + end]).into_owned();
            if name.starts_with(prefix) {
                out.push((name, u64_at(s + 16)));
            }
        }
    }
    out
}

/// A JSON report's `"key": N` (the first one).
fn json_u64(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\": ");
    let rest = &json[json.find(&pat).unwrap_or_else(|| panic!("no {key}")) + pat.len()..];
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap()]
        .parse()
        .unwrap()
}

/// Compiles `model` (with `flags`) as `digits` into `dir`; returns the object's bytes
/// and the JSON report.
fn compile(model: &str, dir: &Path, flags: &[&str]) -> (Vec<u8>, String) {
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_qcc"))
        .arg("compile")
        .arg(models().join(model))
        .args(["--name", "digits", "--input-shape", "input=1,1,8,8", "-o"])
        .arg(dir.join("digits.o"))
        .arg("--report")
        .arg(dir.join("report.json"))
        .args(flags));
    (
        std::fs::read(dir.join("digits.o")).unwrap(),
        std::fs::read_to_string(dir.join("report.json")).unwrap(),
    )
}

/// Links examples/c/main.c with the object in `dir` and runs it on the test images
/// (it prints every score with `%.9g`, which round-trips an f32).
fn run_c(dir: &Path, images: &Path) -> String {
    let exe = dir.join("digits_c");
    run(Command::new("cc")
        .args(["-O1", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(dir)
        .arg(root().join("examples/c/main.c"))
        .arg(dir.join("digits.o"))
        .arg("-o")
        .arg(&exe));
    run(Command::new(&exe).arg(images))
}

#[test]
fn objects_shrink_by_the_reported_bytes_and_give_identical_outputs() {
    let tmp = temp_dir("objects");
    let images = tmp.join("images.npy");
    let (x, _) = {
        let p = models().join("digits_test.npz");
        (qcc::npy::read_npz_array(&p, "x").unwrap(), ())
    };
    qcc::npy::write_npy(&images, &x).unwrap();
    let calib = models().join("digits_train.npz");
    let calib = calib.to_str().unwrap();
    let cases: [(&str, &[&str]); 4] = [
        ("digits_cnn.onnx", &[]),
        (
            "digits_cnn.onnx",
            &["--bits", "4", "--calib", calib, "--calib-limit", "64"],
        ),
        (
            "digits_resnet.onnx",
            &["--bits", "8", "--calib", calib, "--calib-limit", "64"],
        ),
        ("digits_w1a1.onnx", &[]),
    ];
    for (i, (model, flags)) in cases.iter().enumerate() {
        let what = format!("{model} {flags:?}");
        let a = tmp.join(format!("{i}-plain"));
        let b = tmp.join(format!("{i}-huffman"));
        let (obj_a, rep_a) = compile(model, &a, flags);
        let mut fl = flags.to_vec();
        fl.extend(["--compress-weights", "huffman"]);
        let (obj_b, rep_b) = compile(model, &b, &fl);
        // The weight bytes: the data objects' symbol sizes.
        let data = |o: &[u8]| -> u64 { symbol_sizes(o, "digits__d").iter().map(|s| s.1).sum() };
        let saved = json_u64(&rep_b, "saved_bytes");
        assert!(saved > 0, "{what}: nothing saved");
        assert_eq!(data(&obj_a) - data(&obj_b), saved, "{what}");
        assert_eq!(
            json_u64(&rep_a, "weight_bytes") - json_u64(&rep_b, "weight_bytes"),
            saved,
            "{what}"
        );
        assert!(
            !rep_a.contains("\"compression\""),
            "{what}: no flag, no section"
        );
        // The decoder is in the object; without the flag it is not.
        assert_eq!(
            symbol_sizes(&obj_b, "digits__huff_decode").len(),
            1,
            "{what}"
        );
        assert!(symbol_sizes(&obj_a, "digits__huff").is_empty(), "{what}");
        // The header's scratch sizes grow by at least the decoded bytes.
        let ha = std::fs::read_to_string(a.join("digits.h")).unwrap();
        let hb = std::fs::read_to_string(b.join("digits.h")).unwrap();
        assert_ne!(ha, hb, "{what}: the scratch size is in the header");
        assert_eq!(
            run_c(&a, &images),
            run_c(&b, &images),
            "{what}: outputs of the linked objects"
        );
        // Deterministic: the same flags give the same bytes.
        let (obj_c, _) = compile(model, &tmp.join(format!("{i}-again")), &fl);
        assert!(obj_b == obj_c, "{what}: not reproducible");
    }
}

#[test]
fn aarch64_objects_give_identical_outputs() {
    if !backend_common::have_aarch64_tools() {
        return;
    }
    let tmp = temp_dir("aarch64");
    let images = tmp.join("images.npy");
    let x = qcc::npy::read_npz_array(&models().join("digits_test.npz"), "x").unwrap();
    let per = x.numel() / x.shape[0];
    let first = Tensor::f32(
        [vec![40], x.shape[1..].to_vec()].concat(),
        x.as_f32().unwrap()[..40 * per].to_vec(),
    );
    qcc::npy::write_npy(&images, &first).unwrap();
    let calib = models().join("digits_train.npz");
    let calib = calib.to_str().unwrap();
    let target = ["--target", "aarch64-unknown-linux-gnu", "--cpu", "baseline"];
    let cases: [(&str, &[&str]); 2] = [
        ("digits_cnn.onnx", &[]),
        (
            "digits_resnet.onnx",
            &["--bits", "4", "--calib", calib, "--calib-limit", "64"],
        ),
    ];
    for (i, (model, flags)) in cases.iter().enumerate() {
        let what = format!("{model} {flags:?} on aarch64");
        let mut outs = Vec::new();
        for huffman in [false, true] {
            let dir = tmp.join(format!("{i}-{huffman}"));
            let mut fl = [flags, &target[..]].concat();
            if huffman {
                fl.extend(["--compress-weights", "huffman"]);
            }
            let (obj, rep) = compile(model, &dir, &fl);
            if huffman {
                assert!(json_u64(&rep, "saved_bytes") > 0, "{what}");
                assert_eq!(symbol_sizes(&obj, "digits__huff_decode").len(), 1);
            }
            let exe = dir.join("digits_a64");
            run(Command::new("aarch64-linux-gnu-gcc")
                .args(["-O1", "-std=c11", "-static", "-I"])
                .arg(&dir)
                .arg(root().join("examples/c/main.c"))
                .arg(dir.join("digits.o"))
                .arg("-o")
                .arg(&exe));
            outs.push(run(Command::new("qemu-aarch64").arg(&exe).arg(&images)));
        }
        assert_eq!(outs[0].lines().count(), 40, "{what}");
        assert_eq!(outs[0], outs[1], "{what}");
    }
}

#[test]
fn no_flag_and_none_give_the_same_object() {
    let tmp = temp_dir("none");
    let (a, ra) = compile("digits_cnn.onnx", &tmp.join("a"), &[]);
    let (b, rb) = compile(
        "digits_cnn.onnx",
        &tmp.join("b"),
        &["--compress-weights", "none"],
    );
    assert!(a == b);
    assert_eq!(ra, rb);
}

// ---------------------------------------------------------------------------------
// The plan, and the flag's errors.

#[test]
fn compression_plan_snapshot() {
    // A fixed target, so the kernels (and their data) do not depend on the host.
    let t = Target::new("x86_64-unknown-linux-gnu", "x86-64-v3").unwrap();
    let mut text = String::new();
    for name in ["digits_cnn.onnx", "digits_cnn_qop.onnx"] {
        let m = digits(name, None);
        let r = qcc::backend::report_with(&m, &t, &huff()).unwrap();
        let plain = qcc::backend::report(&m, &t).unwrap();
        let c = r.compression.clone().unwrap();
        text.push_str(&format!(
            "{name}: weights {} B -> {} B; coded {} B -> {} B, saved {} B (ratio {:.4}); \
             scratch {} B -> {} B (decoded {} B)\n",
            plain.weight_bytes,
            r.weight_bytes,
            c.raw_bytes,
            c.stored_bytes,
            c.saved_bytes(),
            c.ratio(),
            plain.arena_bytes,
            r.arena_bytes,
            c.decoded_bytes
        ));
        for b in &c.blobs {
            let layer = b.layer.map(|l| &r.layers[l]);
            text.push_str(&format!(
                "  layer {:?} {} ({}): {} B -> {} B, {} symbols, codes up to {} bits, at +{}, \
                 decoded by run {} run_ctx {}\n",
                b.layer,
                layer.map_or("-", |l| l.op.as_str()),
                layer.map_or("-", |l| l.kernel.as_str()),
                b.raw_bytes,
                b.stored_bytes,
                b.symbols,
                b.max_code_bits,
                b.offset,
                b.run,
                b.run_ctx
            ));
        }
    }
    insta::assert_snapshot!("compression_plan_digits", text);
}

#[test]
fn bad_values_are_errors_naming_the_flag() {
    let model = models().join("digits_cnn.onnx");
    let tmp = temp_dir("bad");
    for cmd in ["compile", "bench"] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_qcc"));
        c.arg(cmd).arg(&model).args(["--compress-weights", "zstd"]);
        if cmd == "compile" {
            c.arg("-o").arg(tmp.join("m.o"));
        }
        let out = c.output().unwrap();
        assert!(!out.status.success(), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--compress-weights zstd") && err.contains("none, huffman"),
            "{cmd}: {err}"
        );
        assert!(!err.contains("panicked"), "{cmd}: {err}");
    }
    assert!("huffman".parse::<Compress>().is_ok());
    let e = "Huffman".parse::<Compress>().unwrap_err();
    assert!(e.contains("--compress-weights Huffman") && e.contains("none, huffman"));
}

#[test]
fn bench_runs_with_the_flag() {
    let r = qcc::driver::bench(&qcc::driver::BenchArgs {
        model: models().join("digits_cnn.onnx"),
        input_shapes: vec!["input=1,1,8,8".into()],
        runs: 3,
        threads: 2,
        compress_weights: Some("huffman".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(r.runs, 3);
    assert!(r.min_ms > 0.0 && r.min_ms <= r.median_ms);
}

#[test]
fn build_api_takes_the_flag() {
    let dir = temp_dir("build");
    let g = qcc::build::Build::new(models().join("digits_cnn.onnx"))
        .name("m")
        .flags([
            "--input-shape",
            "input=1,1,8,8",
            "--compress-weights",
            "huffman",
        ])
        .out_dir(&dir)
        .cargo_metadata(false)
        .compile()
        .unwrap();
    let obj = std::fs::read(&g.object).unwrap();
    assert_eq!(symbol_sizes(&obj, "m__huff_decode").len(), 1);
    let err = qcc::build::Build::new(models().join("digits_cnn.onnx"))
        .flags(["--compress-weights", "gzip"])
        .out_dir(&dir)
        .cargo_metadata(false)
        .compile()
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("--compress-weights gzip") && text.contains("none, huffman"),
        "{text}"
    );
}

#[test]
fn emit_clif_and_asm_show_the_decoder() {
    let m = digits("digits_cnn.onnx", None);
    let t = Target::host();
    let clif = qcc::backend::emit_clif_with(&m, "m", &t, &huff()).unwrap();
    let asm = qcc::backend::emit_asm_with(&m, "m", &t, &huff()).unwrap();
    for f in ["m__huff_decode", "m__huff_unpack", "m__huff_task"] {
        assert!(clif.contains(f) && asm.contains(&format!("{f}:")), "{f}");
    }
    assert!(clif.contains("bswap"), "the decoder's byte swap");
    let plain = qcc::backend::emit_clif(&m, "m", &t).unwrap();
    assert!(!plain.contains("huff"));
}

#[test]
fn c_threaded_entry_decodes_in_parallel_with_the_runtime_pool() {
    // examples/c/threads.c runs `digits_run_ctx` on runtime/c's pool, whose
    // `parallel_for` decodes one blob per task; its output must be main.c's (which
    // calls `digits_run`), natively and, where installed, under valgrind (x86-64-v3:
    // valgrind decodes no AVX-512).
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let tmp = temp_dir("c-threads");
    let images = tmp.join("images.npy");
    let x = qcc::npy::read_npz_array(&models().join("digits_test.npz"), "x").unwrap();
    let per = x.numel() / x.shape[0];
    let first = Tensor::f32(
        [vec![24], x.shape[1..].to_vec()].concat(),
        x.as_f32().unwrap()[..24 * per].to_vec(),
    );
    qcc::npy::write_npy(&images, &first).unwrap();
    let calib = models().join("digits_train.npz");
    let flags = [
        "--bits",
        "2",
        "--calib",
        calib.to_str().unwrap(),
        "--calib-limit",
        "64",
        "--cpu",
        "x86-64-v3",
        "--compress-weights",
        "huffman",
    ];
    let (_, rep) = compile("digits_resnet.onnx", &tmp, &flags);
    assert!(json_u64(&rep, "saved_bytes") > 0);
    let want = run_c(&tmp, &images);
    let rt = root().join("runtime/c");
    let exe = tmp.join("digits_threads");
    run(Command::new("cc")
        .args(["-O1", "-g", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(&tmp)
        .arg("-I")
        .arg(&rt)
        .arg(root().join("examples/c/threads.c"))
        .arg(tmp.join("digits.o"))
        .arg(rt.join("qcc_runtime.c"))
        .arg("-lpthread")
        .arg("-o")
        .arg(&exe));
    for threads in ["2", "3"] {
        let got = run(Command::new(&exe).arg(&images).arg(threads));
        assert_eq!(got, want, "{threads} threads");
    }
    let have_valgrind = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if have_valgrind {
        let got = run(Command::new("valgrind")
            .args(["-q", "--error-exitcode=9"])
            .arg(&exe)
            .arg(&images)
            .arg("2"));
        assert_eq!(got, want, "under valgrind");
    } else {
        eprintln!("skipped: valgrind not installed");
    }
}
