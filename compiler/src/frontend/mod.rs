//! Model importers. ONNX (float, QDQ, QOperator, QONNX) is the one there is.

pub mod onnx;
