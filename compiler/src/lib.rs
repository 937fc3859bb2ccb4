//! qcc: an ahead-of-time compiler for low-bit quantized neural networks.
//!
//! The pipeline (see docs/design.md): ONNX import, cleanup, calibration, quantization, egg
//! rewrites, bit-width selection, lowering and Cranelift code generation. This crate
//! holds the passes and their registry ([`passes`]), tensor file I/O ([`npy`]) and the
//! `qcc` command-line tool.

pub mod backend;
pub mod build;
pub mod driver;
pub mod frontend;
pub mod npy;
pub mod passes;
pub mod quant;
pub mod rewrite;
