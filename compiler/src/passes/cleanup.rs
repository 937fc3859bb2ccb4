//! The cleanup pipeline an importer's caller runs on a freshly imported module.

use super::{Pipeline, PipelineError};

/// The cleanup passes, in order: lower QONNX quantizers to quantized types (before
/// anything folds them away), fold constants (shape arithmetic left over, constant
/// subgraphs), fold batch norms into the convolutions and gemms before them, drop no-op
/// nodes, then remove what nothing uses.
pub const PASSES: &[&str] = &[
    "lower-fake-quant",
    "fold-constants",
    "fold-batch-norm",
    "remove-identity",
    "dce",
];

/// A pipeline of [`PASSES`].
pub fn pipeline() -> Pipeline {
    match Pipeline::from_names("cleanup", PASSES) {
        Ok(p) => p,
        Err(e @ PipelineError::UnknownPass { .. }) => {
            unreachable!("cleanup passes are registered: {e}")
        }
        Err(e) => unreachable!("{e}"),
    }
}
