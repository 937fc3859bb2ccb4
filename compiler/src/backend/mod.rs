//! The Cranelift backend: lowers a verified qcc-ir module to native code.
//!
//! Why it is shaped this way (see docs/design.md and docs/kernels.md):
//!
//! - **One Cranelift function per kernel** (usually one per node), with every shape and
//!   stride baked in as a constant: Cranelift neither unrolls nor vectorizes, and
//!   constant trip counts and offsets are what let register-tiled kernels keep their
//!   accumulators in registers.
//! - **Weights are packed at compile time** into read-only data objects, in the layout
//!   the kernel reads (interleaved panels for GEMM, i16 pairs for `pmaddwd`); integer
//!   weights of fewer than 8 bits stay bit-packed and are widened into the workspace at
//!   the start of the layer (`kernels::packw`).
//! - **Kernel costs are measured**, per target and bit-width, in [`costs`].
//! - **One scratch arena** sized by a liveness-based memory plan ([`plan`]): buffers of
//!   dead values are reused, offsets are 64-byte aligned, views (reshape and friends)
//!   alias their operand.
//! - **No runtime, no libm**: exp and sigmoid are inline polynomials ([`math`]), and no
//!   instruction that Cranelift would lower to a libcall (`fma` without FMA hardware,
//!   `nearest`/`floor`/`ceil` without SSE4.1) is ever emitted.
//! - The same lowering serves the object writer ([`compile_object`]) and the JIT
//!   ([`JitModel`]); the only `unsafe` is the call into JIT code, in [`jit`].
//!
//! Selection and emission are separate steps: [`select`] decides, for every node, the
//! kernel and its workspace (and reports every node it cannot lower at once); the
//! memory plan then places values; [`emit`] generates the functions.

mod asm;
pub mod costs;
mod emit;
mod fold;
mod header;
pub mod huffman;
mod jit;
mod kb;
mod kernels;
pub mod math;
pub mod plan;
pub mod report;
mod select;
mod split;
mod storage;
mod target;

use std::fmt;

use qcc_ir::Module;

pub use huffman::Compress;
pub use jit::{
    CtxCase, JitModel, OutputRef, PeakMix, QccCtx, ThreadPool, huffman_round_trip, measure_peak,
};
pub use kernels::dot::maddubs::with_direct as direct_conv;
pub use report::{BlobReport, Compression, LayerReport, Report};
pub use split::with_grain as split_grain;
pub use target::{Target, Tier};

/// Why the backend could not compile a module. Errors say whose fault they are.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendError {
    /// The module does not pass the verifier (the caller's fault: give a valid module).
    Invalid(String),
    /// Nodes the backend cannot lower yet: every one of them, not just the first.
    Unsupported(Vec<Unsupported>),
    /// A graph input or output cannot cross the object boundary (it has no elements).
    Boundary(String),
    /// The target triple or CPU name is not known or not available.
    Target(String),
    /// Wrong arguments to [`JitModel::run`] (count, shape or kind of a tensor).
    BadArguments(String),
    /// qcc's own fault: Cranelift rejected generated code, or an invariant broke.
    Internal(String),
}

/// One node the backend cannot lower, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsupported {
    /// The node's printed line (`%y: f32[..] = op(..) {..}`).
    pub node: String,
    pub op: String,
    pub reason: String,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Invalid(e) => write!(f, "the module is invalid:\n{e}"),
            BackendError::Unsupported(list) => {
                writeln!(
                    f,
                    "the backend cannot lower {} node(s) of this module yet:",
                    list.len()
                )?;
                for u in list {
                    writeln!(f, "  {}: {}\n    {}", u.op, u.reason, u.node)?;
                }
                Ok(())
            }
            BackendError::Boundary(e) => write!(f, "{e}"),
            BackendError::Target(e) => write!(f, "target: {e}"),
            BackendError::BadArguments(e) => write!(f, "bad arguments: {e}"),
            BackendError::Internal(e) => write!(f, "internal error in the backend: {e}"),
        }
    }
}

impl std::error::Error for BackendError {}

/// A compiled object: the object file's bytes, the C header and the compile report.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub object: Vec<u8>,
    pub header: String,
    pub report: Report,
}

/// How the object is built, beyond its target: what the flags of `qcc compile` (and the
/// JIT's callers) choose. The default is what no flag gives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `--compress-weights`: how the constant data the kernels read is stored.
    pub compress: Compress,
    /// The int32 inputs and outputs that the object's boundary takes and gives as
    /// int64 (a model file's int64 tensors).
    pub int64: Int64Io,
}

/// Inputs and outputs (bit `i` of `inputs` for module input `i`, of `outputs` for output
/// `i`) that the module computes as int32 but that cross the object's boundary as
/// int64: `NAME_run` narrows each input (returning 3, before running anything, when a
/// value is beyond int32) and widens each output. The IR has no 64-bit integers; a
/// model file's int64 tensors (token ids, indices) are int32 inside.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Int64Io {
    pub inputs: u64,
    pub outputs: u64,
}

impl Int64Io {
    /// From one flag per input and per output (at most 64 of each may be set).
    pub fn from_flags(inputs: &[bool], outputs: &[bool]) -> Result<Int64Io, BackendError> {
        let mask =
            |f: &[bool], what: &str| -> Result<u64, BackendError> {
                f.iter().enumerate().filter(|e| *e.1).try_fold(0u64, |m, (i, _)| {
                if i < 64 {
                    Ok(m | 1 << i)
                } else {
                    Err(BackendError::BadArguments(format!(
                        "{what} {i} is int64: qcc takes int64 only among the first 64 {what}s"
                    )))
                }
            })
            };
        Ok(Int64Io {
            inputs: mask(inputs, "input")?,
            outputs: mask(outputs, "output")?,
        })
    }

    pub fn input(&self, i: usize) -> bool {
        i < 64 && self.inputs >> i & 1 == 1
    }

    pub fn output(&self, i: usize) -> bool {
        i < 64 && self.outputs >> i & 1 == 1
    }

    /// Every flagged tensor is an int32 tensor of `m`.
    fn check(&self, m: &Module) -> Result<(), BackendError> {
        for (what, ids, mask) in [
            ("input", &m.inputs, self.inputs),
            ("output", &m.outputs, self.outputs),
        ] {
            if ids.len() < 64 && mask >> ids.len() != 0 {
                return Err(BackendError::BadArguments(format!(
                    "int64 {what}s flagged beyond the module's {} {what}s",
                    ids.len()
                )));
            }
            for (i, &v) in ids.iter().enumerate() {
                if i < 64 && mask >> i & 1 == 1 && m.ty(v).elem != qcc_ir::ElemType::I32 {
                    return Err(BackendError::BadArguments(format!(
                        "{what} {i} (%{}) crosses the boundary as int64 but is {}, not i32",
                        m.value(v).name,
                        m.ty(v).elem
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Compiles `m` into a relocatable object exporting ABI v1 (docs/design.md) under the C
/// identifier `name` (`NAME_run`, `NAME_input_size`, ...), plus its header and report.
/// The same module, name and target give byte-identical object and header.
pub fn compile_object(m: &Module, name: &str, target: &Target) -> Result<Compiled, BackendError> {
    compile_object_with(m, name, target, &Options::default())
}

/// [`compile_object`] with [`Options`] (`--compress-weights`); the same module, name,
/// target and options give byte-identical object and header.
pub fn compile_object_with(
    m: &Module,
    name: &str,
    target: &Target,
    opts: &Options,
) -> Result<Compiled, BackendError> {
    if !is_c_identifier(name) {
        return Err(BackendError::BadArguments(format!(
            "the name `{name}` is not a C identifier (letters, digits and `_`, not starting \
             with a digit)"
        )));
    }
    check_boundary(m)?;
    opts.int64.check(m)?;
    let isa = target.isa(true)?;
    let out = emit::compile_object(m, name, isa, target.tier()?, *opts)?;
    let header = header::header(
        m,
        name,
        (out.report.arena_bytes, out.report.arena_ctx_bytes),
        out.report.tier.as_deref(),
        opts.int64,
    );
    Ok(Compiled {
        object: out.object,
        header,
        report: out.report,
    })
}

/// The Cranelift IR of every kernel of `m`, each function preceded by a comment with the
/// qcc node (its printed line) it was generated from: what `--emit clif` writes.
pub fn emit_clif(m: &Module, name: &str, target: &Target) -> Result<String, BackendError> {
    emit_clif_with(m, name, target, &Options::default())
}

/// [`emit_clif`] with [`Options`] (with compressed weights, the decoder's functions
/// follow the kernels).
pub fn emit_clif_with(
    m: &Module,
    name: &str,
    target: &Target,
    opts: &Options,
) -> Result<String, BackendError> {
    let isa = target.isa(true)?;
    emit::text(m, name, isa, target.tier()?, emit::Text::Clif, *opts)
}

/// The machine code of every kernel and of the entry function, as Cranelift
/// disassembles it, each kernel preceded by the qcc node it was generated from: what
/// `--emit asm` writes.
pub fn emit_asm(m: &Module, name: &str, target: &Target) -> Result<String, BackendError> {
    emit_asm_with(m, name, target, &Options::default())
}

/// [`emit_asm`] with [`Options`].
pub fn emit_asm_with(
    m: &Module,
    name: &str,
    target: &Target,
    opts: &Options,
) -> Result<String, BackendError> {
    let isa = target.isa(true)?;
    emit::text(m, name, isa, target.tier()?, emit::Text::Asm, *opts)
}

/// The report of compiling `m` for `target` without writing anything.
pub fn report(m: &Module, target: &Target) -> Result<Report, BackendError> {
    report_with(m, target, &Options::default())
}

/// [`report`] with [`Options`].
pub fn report_with(m: &Module, target: &Target, opts: &Options) -> Result<Report, BackendError> {
    let isa = target.isa(true)?;
    Ok(emit::compile_object(m, "model", isa, target.tier()?, *opts)?.report)
}

/// Turns any string into a C identifier (used for default model names).
pub fn c_identifier(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn is_c_identifier(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Every boundary tensor holds at least one element. (Its element type may be any the
/// IR has: float32, or integer-valued types passed as their codes in the storage
/// `storage::Store` gives them; the header names each one's C type.)
fn check_boundary(m: &Module) -> Result<(), BackendError> {
    for (what, ids) in [("input", &m.inputs), ("output", &m.outputs)] {
        for &id in ids {
            let ty = m.ty(id);
            if ty.numel() == 0 {
                return Err(BackendError::Boundary(format!(
                    "{what} {} has type {ty}, with no elements; qcc compiles only tensors \
                     of at least one element (give the input a nonzero size, e.g. with \
                     --input-shape)",
                    m.value(id).spelling()
                )));
            }
        }
    }
    Ok(())
}
