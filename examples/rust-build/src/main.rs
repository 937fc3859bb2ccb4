//! Classifies 8x8 digit images with the model `build.rs` compiled, through the safe
//! wrapper of `qcc-runtime` (no `unsafe`, no hand-written ABI):
//!
//!     cargo build --release
//!     ./target/release/qcc-digits-example images.npy    (float32 .npy or raw float32)
//!
//! Prints one line per image: the predicted class, then the model's scores.

use std::process::ExitCode;

mod digits {
    include!(concat!(env!("OUT_DIR"), "/digits.rs"));
}

/// The floats of an .npy file (float32, little-endian, C order) or of a raw file.
fn read_floats(path: &str) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let data = if bytes.starts_with(b"\x93NUMPY") && bytes.len() >= 10 {
        let (hlen, start) = if bytes[6] == 1 {
            (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
        } else {
            let b = bytes.get(8..12).ok_or("malformed .npy header")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        };
        let header = bytes
            .get(start..start + hlen)
            .ok_or("malformed .npy header")?;
        let header = String::from_utf8_lossy(header);
        if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
            return Err(format!("{path}: need a float32 (<f4), C-ordered array"));
        }
        &bytes[start + hlen..]
    } else {
        &bytes[..]
    };
    Ok(data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 2 {
        eprintln!("usage: {} IMAGES.npy|IMAGES.f32", args[0]);
        return ExitCode::from(2);
    }
    let x = match read_floats(&args[1]) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let model = digits::model();
    let per = model.input_len(0);
    if x.len() % per != 0 {
        eprintln!("{} floats is not a multiple of {per} (one image)", x.len());
        return ExitCode::FAILURE;
    }
    let mut session = model.session();
    for image in x.chunks(per) {
        match session.infer(&[image]) {
            Ok(out) => {
                let scores = &out[0];
                let class = (0..scores.len()).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
                let s: Vec<String> = scores.iter().map(|v| format!("{v:.4}")).collect();
                println!("{class} {}", s.join(" "));
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
