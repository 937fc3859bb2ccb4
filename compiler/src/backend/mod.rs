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
    let isa = target.isa(true)?;
    let out = emit::compile_object(m, name, isa, target.tier()?, opts.compress)?;
    let header = header::header(
        m,
        name,
        (out.report.arena_bytes, out.report.arena_ctx_bytes),
        out.report.tier.as_deref(),
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
    emit::text(
        m,
        name,
        isa,
        target.tier()?,
        emit::Text::Clif,
        opts.compress,
    )
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
    emit::text(m, name, isa, target.tier()?, emit::Text::Asm, opts.compress)
}

/// The report of compiling `m` for `target` without writing anything.
pub fn report(m: &Module, target: &Target) -> Result<Report, BackendError> {
    report_with(m, target, &Options::default())
}

/// [`report`] with [`Options`].
pub fn report_with(m: &Module, target: &Target, opts: &Options) -> Result<Report, BackendError> {
    let isa = target.isa(true)?;
    Ok(emit::compile_object(m, "model", isa, target.tier()?, opts.compress)?.report)
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
