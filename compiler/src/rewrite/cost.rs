//! The cost model extraction minimises: modelled latency of each kernel.
//!
//! A node costs a fixed per-kernel overhead plus its work times the per-unit cost of its
//! kernel kind at its bit-width, from [`COSTS`]. Work is multiply-accumulates for
//! convolutions and matrix products, window reads for pooling, elements otherwise.
//! The numbers are relative (an f32 multiply-accumulate is 1.0), modelled on the kernels
//! docs/design.md plans: integer dot products are cheaper than float ones and get cheaper
//! with fewer bits (XNOR-popcount at one bit, bit-serial planes at 2..4 bits,
//! `pmaddwd`-style widening at 8); quantize divides and rounds, requantize is one
//! widening multiply and a shift. Graph inputs, constants and metas cost nothing.
//! Integer multiply-accumulates of at most 8 bits are priced from the backend's measured
//! table (`backend::costs`, x86_64 native, the project's machine), relative to its
//! measured f32 GEMM; the other rows are still relative estimates.

use qcc_ir::{Op, TensorType};

use super::intern::Meta;
use crate::backend::costs::{self, CostTarget};

/// Kinds of kernels the table prices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// f32 convolution / matrix product, per multiply-accumulate.
    FloatMac,
    /// Integer convolution / matrix product, per multiply-accumulate, by the wider of
    /// the two operands' bits.
    IntMac,
    /// f32 elementwise arithmetic, per element.
    FloatElementwise,
    /// Integer elementwise arithmetic (add, sub, mul on plain integers), per element.
    IntElementwise,
    /// Table lookup, per element.
    Lookup,
    /// Transcendental f32 functions (exp, sigmoid, softmax), per element.
    FloatTranscendental,
    /// Pooling and means, per window element read.
    Pool,
    /// `quantize` (f32 division and rounding), per element.
    Quantize,
    /// `dequantize` and casts, per element.
    Dequantize,
    /// `requantize` (widening multiply, rounding shift, clamp), per element.
    Requantize,
    /// `requantize` whose multipliers are all 1 (rounding shift and clamp), per element.
    Shift,
    /// `threshold`, per element and bisection step (log2(K + 1) per element).
    Threshold,
    /// Data movement, per byte moved.
    Movement,
}

/// Per-unit cost by kernel kind and bit-width: `(kernel, max bits, cost)`; the first
/// row whose kind matches and whose bits are at least the node's applies.
pub const COSTS: &[(Kernel, u32, f64)] = &[
    (Kernel::FloatMac, 32, 1.0),
    // IntMac at 1..8 bits: `backend::costs` (see `unit_cost`).
    (Kernel::IntMac, 16, 0.6),
    (Kernel::IntMac, 32, 0.8),
    (Kernel::FloatElementwise, 32, 1.0),
    (Kernel::IntElementwise, 32, 0.3),
    (Kernel::Lookup, 32, 0.3),
    (Kernel::FloatTranscendental, 32, 4.0),
    (Kernel::Pool, 8, 0.3),
    (Kernel::Pool, 32, 0.6),
    (Kernel::Quantize, 32, 2.0),
    (Kernel::Dequantize, 32, 0.6),
    (Kernel::Requantize, 32, 0.5),
    (Kernel::Shift, 32, 0.3),
    (Kernel::Threshold, 32, 0.1),
    (Kernel::Movement, 32, 0.05),
];

/// Fixed cost of running any kernel (call, loop setup): favours fewer nodes.
pub const KERNEL_OVERHEAD: f64 = 16.0;

/// The table's cost of one unit of `kernel` work at `bits`.
pub fn unit_cost(kernel: Kernel, bits: u32) -> f64 {
    if kernel == Kernel::IntMac && bits <= 8 {
        return costs::relative_mac_cost(bits, bits, CostTarget::X86_64Native);
    }
    COSTS
        .iter()
        .find(|(k, b, _)| *k == kernel && *b >= bits)
        .or_else(|| COSTS.iter().rev().find(|(k, _, _)| *k == kernel))
        .map_or(1.0, |r| r.2)
}

/// The modelled latency of one op node (its meta gives op, result type and attributes)
/// with operand types `operands`.
pub fn node_cost(meta: &Meta, operands: &[&TensorType]) -> f64 {
    let (op, out) = (meta.op, &meta.ty);
    let n = out.numel() as f64;
    let bits = |t: &TensorType| t.elem.bits();
    let arg = |i: usize| operands.get(i).copied();
    let window = |w: Option<&TensorType>| {
        w.map_or(1.0, |w| w.shape.iter().skip(1).product::<usize>() as f64)
    };
    let k_of = |a: Option<&TensorType>| a.and_then(|a| a.shape.last().copied()).unwrap_or(1) as f64;
    let (kernel, work, b) = match op {
        Op::Conv2d => (Kernel::FloatMac, n * window(arg(1)), 32),
        Op::ConvTranspose2d => {
            let x = arg(0).map_or(1.0, |x| x.numel() as f64);
            (Kernel::FloatMac, x * window(arg(1)), 32)
        }
        Op::MatMul | Op::Gemm => (Kernel::FloatMac, n * k_of(arg(0)), 32),
        Op::Conv2dInt => {
            let b = arg(0).map_or(8, bits).max(arg(1).map_or(8, bits));
            (Kernel::IntMac, n * window(arg(1)), b)
        }
        Op::MatMulInt => {
            let b = arg(0).map_or(8, bits).max(arg(1).map_or(8, bits));
            (Kernel::IntMac, n * k_of(arg(0)), b)
        }
        Op::Add | Op::Sub | Op::Mul | Op::Max | Op::Min if !out.elem.is_float() => {
            (Kernel::IntElementwise, n, 32)
        }
        Op::Lookup => (Kernel::Lookup, n, 32),
        Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Sqrt
        | Op::Relu
        | Op::Clip
        | Op::LeakyRelu
        | Op::HardSigmoid
        | Op::HardSwish
        | Op::Sign
        | Op::Abs
        | Op::Neg
        | Op::Floor
        | Op::Ceil
        | Op::Round
        | Op::Max
        | Op::Min
        | Op::Equal
        | Op::Less
        | Op::LessOrEqual
        | Op::Not
        | Op::And
        | Op::Or
        | Op::Xor
        | Op::Where
        | Op::OneHot
        | Op::BatchNorm
        | Op::FakeQuant
        | Op::Trunc
        | Op::Binarize => (Kernel::FloatElementwise, n, 32),
        Op::Pow | Op::Exp | Op::Sigmoid | Op::Silu | Op::Softmax | Op::Log | Op::Tanh | Op::Erf => {
            (Kernel::FloatTranscendental, n, 32)
        }
        Op::MaxPool | Op::AvgPool => {
            let b = arg(0).map_or(32, bits);
            let k: usize = meta
                .attrs()
                .usizes("kernel")
                .map_or(4, |k| k.iter().product());
            (Kernel::Pool, n * k as f64, b)
        }
        Op::GlobalAvgPool
        | Op::ReduceMean
        | Op::ReduceSum
        | Op::ReduceMax
        | Op::ReduceMin
        | Op::ReduceProd
        | Op::ArgMax
        | Op::ArgMin
        | Op::Resize => {
            let x = arg(0).map_or(n, |x| x.numel() as f64);
            (Kernel::Pool, x, arg(0).map_or(32, bits))
        }
        Op::TopK | Op::TopKIndices => {
            // k scans of each line (kernels/logic.rs).
            let x = arg(0).map_or(n, |x| x.numel() as f64);
            let k = meta.attrs().int("k").map_or(1, |k| k.max(1));
            (Kernel::Pool, x * k as f64, arg(0).map_or(32, bits))
        }
        Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze => (Kernel::Movement, 0.0, 32),
        Op::Transpose | Op::Concat | Op::Pad | Op::Slice | Op::BitPack | Op::BitUnpack => {
            (Kernel::Movement, n * bits(out).div_ceil(8) as f64, 32)
        }
        Op::Cast | Op::Dequantize => (Kernel::Dequantize, n, 32),
        Op::Quantize => (Kernel::Quantize, n, 32),
        Op::Requantize => {
            let shift_only = meta
                .attrs()
                .ints("multiplier")
                .is_ok_and(|m| m.iter().all(|&v| v == 1));
            (
                if shift_only {
                    Kernel::Shift
                } else {
                    Kernel::Requantize
                },
                n,
                32,
            )
        }
        Op::Threshold => {
            // A bisection over the sorted thresholds: log2(K + 1) compares per element,
            // plus the table itself (i32 entries, read in once per run and stored in
            // the object: as data movement, 0.05 per byte, i.e. two compares per entry),
            // which a 7- or 8-bit result makes 127 or 255 entries per channel.
            let k = arg(1).and_then(|t| t.shape.get(1).copied()).unwrap_or(1);
            let steps = (k + 1).next_power_of_two().trailing_zeros().max(1) as f64;
            let entries = arg(1).map_or(0, |t| t.numel()) as f64;
            (Kernel::Threshold, n * steps + 2.0 * entries, 32)
        }
    };
    KERNEL_OVERHEAD + work * unit_cost(kernel, b)
}
