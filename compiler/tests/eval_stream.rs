//! `qcc eval` streams its samples: over 100,000 generated samples of 32x32 floats
//! (410 MB of data) its peak resident memory stays under 200 MB, and the figures it
//! prints are those of the samples (a linear model whose predictions are known).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const SAMPLES: usize = 100_000;
const PIXELS: usize = 32 * 32;
const CLASSES: usize = 4;

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("qcc-eval-stream-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The `.npy` bytes of a C-ordered little-endian array with `descr`, `shape` and `body`.
fn npy(descr: &str, shape: &[usize], body: impl Iterator<Item = u8>) -> impl Iterator<Item = u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut head = b"\x93NUMPY\x01\x00".to_vec();
    head.extend((header.len() as u16).to_le_bytes());
    head.extend(header.into_bytes());
    head.into_iter().chain(body)
}

/// Sample `i`: every pixel is `(i % 7) as f32 / 7.0` except a bright quarter chosen by
/// `i % CLASSES`; its label is that quarter.
fn sample(i: usize) -> impl Iterator<Item = f32> {
    let quarter = i % CLASSES;
    let base = (i % 7) as f32 / 7.0;
    (0..PIXELS).map(move |p| {
        if p / (PIXELS / CLASSES) == quarter {
            base + 2.0
        } else {
            base
        }
    })
}

#[test]
fn eval_streams_100k_samples_in_flat_memory() {
    let dir = temp_dir();
    // The data: stored (not deflated) so the archive is as large as the samples.
    let data = dir.join("samples.npz");
    {
        let f = std::io::BufWriter::new(std::fs::File::create(&data).unwrap());
        let mut z = zip::ZipWriter::new(f);
        let opts = zip::write::FileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true);
        z.start_file("x.npy", opts).unwrap();
        let body = (0..SAMPLES).flat_map(sample).flat_map(f32::to_le_bytes);
        let bytes: Vec<u8> = npy("<f4", &[SAMPLES, 1, 32, 32], std::iter::empty()).collect();
        z.write_all(&bytes).unwrap();
        let mut buf = Vec::with_capacity(1 << 20);
        for b in body {
            buf.push(b);
            if buf.len() == 1 << 20 {
                z.write_all(&buf).unwrap();
                buf.clear();
            }
        }
        z.write_all(&buf).unwrap();
        z.start_file("y.npy", opts).unwrap();
        let labels = (0..SAMPLES).flat_map(|i| ((i % CLASSES) as i64).to_le_bytes());
        let bytes: Vec<u8> = npy("<i8", &[SAMPLES], labels).collect();
        z.write_all(&bytes).unwrap();
        z.finish().unwrap();
    }
    assert!(std::fs::metadata(&data).unwrap().len() > 400_000_000);
    // The model: the sum of each quarter of the image (a flatten and a 1024x4 gemm).
    let w: Vec<String> = (0..PIXELS * CLASSES)
        .map(|k| {
            let (p, c) = (k / CLASSES, k % CLASSES);
            if p / (PIXELS / CLASSES) == c {
                "1"
            } else {
                "0"
            }
            .to_string()
        })
        .collect();
    let model = dir.join("quarters.qir");
    std::fs::write(
        &model,
        format!(
            "module quarters {{\n input %x: f32[1,1,32,32]\n const @w: f32[{PIXELS},{CLASSES}] = [{}]\n %f: f32[1,{PIXELS}] = flatten(%x) {{axis = 1}}\n %y: f32[1,{CLASSES}] = gemm(%f, @w)\n output %y\n}}\n",
            w.join(", ")
        ),
    )
    .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_qcc"))
        .args([
            "eval",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Peak resident memory (VmHWM only grows), sampled while the process runs.
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status)
            && let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("samples: 100000"), "{stdout}");
    assert!(
        stdout.contains("compiled (JIT) top-1:          100.00% (100000/100000)"),
        "{stdout}"
    );
    assert!(peak_kb > 0, "no VmHWM read from {status}");
    eprintln!(
        "qcc eval over {SAMPLES} samples: peak RSS {} MB",
        peak_kb / 1024
    );
    assert!(
        peak_kb < 200 * 1024,
        "peak RSS {} MB over {SAMPLES} samples",
        peak_kb / 1024
    );
    let _ = std::fs::remove_dir_all(&dir);
}
