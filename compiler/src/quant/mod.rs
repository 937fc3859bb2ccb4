//! Post-training quantization of float models: calibration, the quantization scheme and
//! the pass that rewrites a float module into QDQ form.
//!
//! The flow (docs/design.md, "The pipeline"): [`calibrate`] streams calibration samples through
//! the module compiled with taps on its values (`tap.rs`; the reference interpreter is
//! the oracle and the fallback) and collects per-tensor ranges and histograms of every float
//! value (or [`data_free`] derives ranges from the batch-norm statistics kept by
//! `fold-batch-norm`); [`quantize_model`] picks each layer's parameters by the scheme
//! ([`QuantOptions`]) and inserts `quantize`/`dequantize` pairs; the `rewrite` pass then
//! fuses them into integer kernels (`conv2d_int`, `matmul_int` + `requantize`).
//!
//! Sub-8-bit codes are stored one per byte and run in the 8-bit integer kernels until
//! the bit-serial kernels exist; the report says so.

mod binary;
pub mod budget;
mod calibrate;
pub mod choice;
pub mod equalize;
mod flags;
pub mod html;
pub mod important;
mod insert;
pub mod profile;
pub mod qil;
pub mod requantize;
mod scheme;
mod segments;
pub mod sensitivity;
pub mod sequential;
pub mod sq;
mod tap;

pub use binary::{BinaryAct, REFINE_SAMPLES, binarize_weights, refine_binary, refine_binary_with};
pub use calibrate::{
    CalibMethod, CalibOptions, CalibStats, Histogram, LayerError, OutputError, RangeSource,
    TensorStats, calibrate, compare_outputs, compare_outputs_with, data_free, layer_errors,
    layer_errors_with, sample_count, samples_shape, stream_samples,
};
pub use flags::QuantFlags;
pub use insert::{
    LayerReport, QuantLayer, QuantReport, Selection, float_kernels, quant_layers, quantize_model,
};
pub use profile::Profile;
pub use scheme::{ActParams, QuantOptions, choose_range, quantize_weights};
pub use tap::{Engine, RunOptions};
