//! qcc-ir: the quantization-aware intermediate representation of qcc.
//!
//! - [`types`]: element types (f32, integers, quantized integers, bipolar) and shapes;
//! - [`ops`]: the op table, from which the op enum, printer, parser, verifier checks and
//!   SPEC.md's op section follow;
//! - [`module`]: the SSA graph;
//! - [`print`](mod@print) and [`parse`]: the text form (print then parse gives the same module);
//! - [`verify`]: the verifier, which reports every violation at once;
//! - [`interp`]: the reference interpreter, the executable definition of every op.

pub mod interp;
pub mod module;
pub mod ops;
pub mod parse;
pub mod print;
pub mod rounding;
pub mod shape;
pub mod spec;
pub mod types;
pub mod typing;
pub mod verify;

pub use module::{Attr, ConstData, Module, Node, NodeId, Value, ValueDef, ValueId};
pub use ops::{Attrs, Op, OpInfo};
pub use parse::{ParseError, parse_module};
pub use rounding::Rounding;
pub use types::{ElemType, IntType, QuantParams, QuantType, TensorType};
