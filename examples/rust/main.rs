//! Classifies 8x8 digit images with a model compiled by qcc, from Rust, declaring the
//! object ABI v1 by hand (no crate needed):
//!
//!     qcc compile ../../tests/models/digits_cnn_folded.onnx --name digits -o digits.o
//!     rustc --edition 2024 -O main.rs -C link-arg=digits.o -o digits
//!     ./digits images.npy     (float32 .npy, any number of images; or raw float32)
//!
//! Prints one line per image: the predicted class, then the model's scores.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ffi::c_void;
use std::process::ExitCode;

// Object ABI v1 (docs/design.md), for a model compiled with `--name digits`.
unsafe extern "C" {
    fn digits_input_size(i: usize) -> usize;
    fn digits_output_size(i: usize) -> usize;
    fn digits_scratch_size() -> usize;
    fn digits_run(inputs: *const *const f32, outputs: *const *mut f32, scratch: *mut c_void)
    -> i32;
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

/// Scratch memory aligned to 64 bytes, as `digits_run` requires.
struct Scratch {
    ptr: *mut u8,
    layout: Layout,
}

impl Scratch {
    fn new(bytes: usize) -> Scratch {
        let layout = Layout::from_size_align(bytes.max(64), 64).expect("a valid layout");
        // SAFETY: the layout has a nonzero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        Scratch { ptr, layout }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
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
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: the getters take any index and have no preconditions.
    let (in_n, out_n, scratch_n) =
        unsafe { (digits_input_size(0), digits_output_size(0), digits_scratch_size()) };
    if x.is_empty() || x.len() % in_n != 0 {
        eprintln!(
            "error: {} holds {} floats, not a multiple of {in_n} (one image)",
            args[1],
            x.len()
        );
        return ExitCode::FAILURE;
    }
    let scratch = Scratch::new(scratch_n);
    let mut y = vec![0f32; out_n];
    for image in x.chunks_exact(in_n) {
        let ins = [image.as_ptr()];
        let outs = [y.as_mut_ptr()];
        // SAFETY: one input of input_size(0) floats, one output of output_size(0)
        // floats, and scratch_size() bytes of scratch aligned to 64.
        let rc = unsafe { digits_run(ins.as_ptr(), outs.as_ptr(), scratch.ptr.cast()) };
        if rc != 0 {
            eprintln!("error: digits_run refused its arguments");
            return ExitCode::FAILURE;
        }
        let best = (0..out_n).fold(0, |b, i| if y[i] > y[b] { i } else { b });
        let scores: Vec<String> = y.iter().map(|v| format!("{v:?}")).collect();
        println!("{best} {}", scores.join(" "));
    }
    ExitCode::SUCCESS
}
