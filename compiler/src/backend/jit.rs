//! The JIT: the same lowering as objects, compiled into this process's memory.
//!
//! The internal entry is the object's `NAME_run`, so the JIT exercises exactly the code
//! that objects contain. Unlike ABI v1, the JIT also accepts and returns integer-valued
//! tensors (their codes, stored as the backend stores them), which the differential
//! tests use to drive integer kernels directly.
#![allow(
    unsafe_code,
    reason = "calling generated code is the one unsafe operation of the compiler"
)]

use std::sync::Mutex;

use cranelift_jit::{JITBuilder, JITModule};
use qcc_ir::interp::{Tensor, TensorData};
use qcc_ir::{Module, TensorType};
pub use qcc_runtime::{QccCtx, ThreadPool};

use super::emit;
use super::plan::ALIGN;
use super::storage::Store;
use super::target::Target;
use super::{BackendError, Report};

/// A module compiled for this machine, callable from Rust.
pub struct JitModel {
    module: Option<JITModule>,
    entry: *const u8,
    /// `NAME_run_ctx`, the threaded entry.
    entry_ctx: *const u8,
    /// Its scratch bytes with two or more threads.
    arena_ctx: u64,
    inputs: Vec<TensorType>,
    outputs: Vec<TensorType>,
    arena: u64,
    report: Report,
    /// Scratch and output buffers kept between calls of [`JitModel::run_visit`].
    buffers: Mutex<Buffers>,
}

/// Buffers reused across calls: fresh multi-megabyte allocations per call cost more in
/// page faults than a small model takes to run.
#[derive(Default)]
struct Buffers {
    scratch: Vec<u8>,
    outputs: Vec<OutBuf>,
}

/// One output's buffer: f32 values held as `f32` (so they can be lent out as a slice),
/// other types as their storage bytes.
enum OutBuf {
    F32(Vec<f32>),
    Bytes(Vec<u8>),
}

/// One output of [`JitModel::run_visit`].
#[derive(Debug)]
pub enum OutputRef<'a> {
    /// An f32 output, borrowed from the model's buffer.
    F32(&'a [f32]),
    /// An integer-valued output: its codes.
    Int(Vec<i64>),
}

impl std::fmt::Debug for JitModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitModel")
            .field("arena", &self.arena)
            .finish_non_exhaustive()
    }
}

impl JitModel {
    /// Compiles `m` for the host (its detected CPU features).
    pub fn new(m: &Module) -> Result<JitModel, BackendError> {
        Self::with_target(m, &Target::host())
    }

    /// Compiles `m` for `target`, which must run on the host: its triple with a feature
    /// set the host has (e.g. `baseline`, to test the kernels' fallbacks).
    pub fn with_target(m: &Module, target: &Target) -> Result<JitModel, BackendError> {
        Self::with_options(m, target, &super::Options::default())
    }

    /// [`JitModel::with_target`] with [`super::Options`] (`--compress-weights`; the
    /// JIT's boundary is the module's types, int64 flags aside).
    pub fn with_options(
        m: &Module,
        target: &Target,
        opts: &super::Options,
    ) -> Result<JitModel, BackendError> {
        if target.triple != target_lexicon::Triple::host() {
            return Err(BackendError::Target(format!(
                "the JIT runs on the host ({}), not on {}",
                target_lexicon::Triple::host(),
                target.triple
            )));
        }
        let isa = target.isa(false)?;
        let mut module = JITModule::new(JITBuilder::with_isa(
            isa,
            cranelift_module::default_libcall_names(),
        ));
        let built = emit::build(
            &mut module,
            m,
            "jit",
            emit::Text::None,
            target.tier()?,
            // The JIT's callers pass and get the module's own tensors: int64 boundaries
            // are the object's (their conversions are tested through objects).
            super::Options {
                int64: super::Int64Io::default(),
                ..*opts
            },
        )?;
        module
            .finalize_definitions()
            .map_err(|e| BackendError::Internal(format!("JIT finalize: {e}")))?;
        let entry = module.get_finalized_function(built.run);
        let entry_ctx = module.get_finalized_function(built.run_ctx);
        Ok(JitModel {
            module: Some(module),
            entry,
            entry_ctx,
            arena_ctx: built.plan_ctx.arena,
            inputs: m.inputs.iter().map(|&v| m.ty(v).clone()).collect(),
            outputs: m.outputs.iter().map(|&v| m.ty(v).clone()).collect(),
            arena: built.plan.arena,
            report: built.report,
            buffers: Mutex::new(Buffers::default()),
        })
    }

    /// The compile report.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Bytes of scratch one call needs with `threads` threads (`NAME_scratch_size_threads`).
    pub fn scratch_bytes_threads(&self, threads: usize) -> u64 {
        if threads <= 1 {
            self.arena
        } else {
            self.arena_ctx
        }
    }

    /// Runs the model on `inputs` (one per module input, in order).
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        Ok(self.run_timed(inputs, 1)?.0)
    }

    /// Runs the model `iters` times (at least once) on the same buffers; returns the
    /// outputs and the fastest call's time (argument conversion not included).
    pub fn run_timed(
        &self,
        inputs: &[Tensor],
        iters: usize,
    ) -> Result<(Vec<Tensor>, std::time::Duration), BackendError> {
        let (out, times) = self.run_times(inputs, iters)?;
        let best = times.into_iter().min().unwrap_or_default();
        Ok((out, best))
    }

    /// Runs the model `runs` times (at least once) on the same buffers; returns the
    /// outputs and every call's time, in order (argument conversion not included).
    pub fn run_times(
        &self,
        inputs: &[Tensor],
        runs: usize,
    ) -> Result<(Vec<Tensor>, Vec<std::time::Duration>), BackendError> {
        self.run_times_on(inputs, runs, None)
    }

    /// Runs the model through the threaded entry `NAME_run_ctx` with `pool`'s threads.
    pub fn run_threads(
        &self,
        inputs: &[Tensor],
        pool: &ThreadPool,
    ) -> Result<Vec<Tensor>, BackendError> {
        Ok(self.run_times_on(inputs, 1, Some(pool))?.0)
    }

    /// [`JitModel::run_times`], through `NAME_run_ctx` with `pool`'s threads when given
    /// (a pool of one thread runs `NAME_run` through it).
    pub fn run_times_on(
        &self,
        inputs: &[Tensor],
        runs: usize,
        pool: Option<&ThreadPool>,
    ) -> Result<(Vec<Tensor>, Vec<std::time::Duration>), BackendError> {
        let in_bufs = self.encode_inputs(inputs)?;
        let mut out_bufs: Vec<Vec<u8>> = self
            .outputs
            .iter()
            .map(|ty| vec![0u8; ty.numel() * Store::of(&ty.elem).bytes()])
            .collect();
        // Not zeroed: the object ABI's scratch is uninitialized memory, so kernels must
        // not rely on zeros they did not write (a fixed pattern keeps runs repeatable
        // and makes such a bug show up in the differential tests).
        let arena = match pool {
            Some(p) => self.scratch_bytes_threads(p.threads()),
            None => self.arena,
        };
        let mut scratch = vec![0xA5u8; arena as usize + ALIGN as usize];
        let skip = scratch.as_ptr().align_offset(ALIGN as usize);
        let scratch_ptr = scratch[skip..].as_mut_ptr();
        // Zero-sized buffers still need distinct non-null pointers.
        let ins: Vec<*const u8> = in_bufs.iter().map(|b| b.as_ptr()).collect();
        let outs: Vec<*mut u8> = out_bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let mut times = Vec::with_capacity(runs.max(1));
        for _ in 0..runs.max(1) {
            let t = std::time::Instant::now();
            let rc = match pool {
                Some(p) => call_ctx(
                    self.entry_ctx,
                    &p.ctx(arena as usize),
                    &ins,
                    &outs,
                    scratch_ptr,
                ),
                None => call(self.entry, &ins, &outs, scratch_ptr),
            };
            times.push(t.elapsed());
            if rc != 0 {
                return Err(BackendError::Internal(format!(
                    "the compiled entry returned {rc}"
                )));
            }
        }
        let outputs = out_bufs
            .iter()
            .zip(&self.outputs)
            .map(|(b, ty)| {
                let st = Store::of(&ty.elem);
                let data = if st == Store::F32 {
                    TensorData::F32(
                        b.chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                    )
                } else {
                    TensorData::Int(st.decode_ints(b))
                };
                Tensor {
                    shape: ty.shape.clone(),
                    data,
                }
            })
            .collect();
        Ok((outputs, times))
    }
}

// SAFETY: a `JitModel` is shared between threads only through `&self`. The `JITModule`
// is not touched after `new` finalized it, except by `Drop` (which needs ownership); its
// code is immutable, and `entry` points into it. Each call gets its own input, output
// and scratch buffers (`run`, `run_times`), or takes the `Mutex` around the kept ones
// (`run_visit`), so two threads never share memory the generated code writes, except
// the tier's CPU-check word, which every caller may store and always stores as the same
// value 1 (an aligned 32-bit store). The report, types and sizes are plain data.
unsafe impl Send for JitModel {}
// SAFETY: as for `Send`: every `&self` method is safe to call from several threads.
unsafe impl Sync for JitModel {}

impl JitModel {
    /// The inputs in the backend's storage layout, checked against the model's types.
    fn encode_inputs(&self, inputs: &[Tensor]) -> Result<Vec<Vec<u8>>, BackendError> {
        if inputs.len() != self.inputs.len() {
            return Err(BackendError::BadArguments(format!(
                "the model takes {} inputs, {} given",
                self.inputs.len(),
                inputs.len()
            )));
        }
        let mut in_bufs: Vec<Vec<u8>> = Vec::with_capacity(inputs.len());
        for (i, (t, ty)) in inputs.iter().zip(&self.inputs).enumerate() {
            if t.shape != ty.shape {
                return Err(BackendError::BadArguments(format!(
                    "input {i} has shape {:?}, the model wants {ty}",
                    t.shape
                )));
            }
            let st = Store::of(&ty.elem);
            let mut b = Vec::with_capacity(t.numel() * st.bytes() + 16);
            match (&t.data, st) {
                (TensorData::F32(v), Store::F32) => {
                    b.extend(v.iter().flat_map(|x| x.to_le_bytes()))
                }
                (TensorData::Int(v), st) if st != Store::F32 => {
                    if let Some(c) = v.iter().find(|&&c| !ty.elem.admits(c)) {
                        return Err(BackendError::BadArguments(format!(
                            "input {i} holds code {c}, which {ty} does not admit"
                        )));
                    }
                    st.encode_ints(v, &mut b)
                }
                _ => {
                    return Err(BackendError::BadArguments(format!(
                        "input {i} holds {} data, the model wants {ty}",
                        t.data.kind()
                    )));
                }
            }
            if b.len() != t.numel() * st.bytes() {
                return Err(BackendError::BadArguments(format!(
                    "input {i} has {} elements for shape {:?}",
                    t.data.len(),
                    t.shape
                )));
            }
            in_bufs.push(b);
        }
        Ok(in_bufs)
    }

    /// Runs the model once on `inputs` and calls `f(j, output)` for every output `j`,
    /// in order. Scratch and output buffers are kept for the next call (the scratch
    /// starts with the same pattern as [`JitModel::run`]'s), so running a model with
    /// large outputs many times costs no allocation per call.
    pub fn run_visit(
        &self,
        inputs: &[Tensor],
        f: &mut dyn FnMut(usize, OutputRef<'_>),
    ) -> Result<(), BackendError> {
        let in_bufs = self.encode_inputs(inputs)?;
        // A panic in `f` while the lock was held leaves the buffers as they were, which
        // the next call overwrites anyway.
        let mut guard = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let b = &mut *guard;
        if b.outputs.len() != self.outputs.len() {
            b.outputs = self
                .outputs
                .iter()
                .map(|ty| {
                    let st = Store::of(&ty.elem);
                    if st == Store::F32 {
                        OutBuf::F32(vec![0.0; ty.numel()])
                    } else {
                        OutBuf::Bytes(vec![0u8; ty.numel() * st.bytes()])
                    }
                })
                .collect();
        }
        // Filled with the pattern once; later calls see what the previous one left,
        // which is as uninitialized to the kernels (and as repeatable).
        let want = self.arena as usize + ALIGN as usize;
        if b.scratch.len() != want {
            b.scratch.clear();
            b.scratch.resize(want, 0xA5u8);
        }
        let skip = b.scratch.as_ptr().align_offset(ALIGN as usize);
        let scratch_ptr = b.scratch[skip..].as_mut_ptr();
        let ins: Vec<*const u8> = in_bufs.iter().map(|b| b.as_ptr()).collect();
        let outs: Vec<*mut u8> = b
            .outputs
            .iter_mut()
            .map(|o| match o {
                OutBuf::F32(v) => v.as_mut_ptr().cast::<u8>(),
                OutBuf::Bytes(v) => v.as_mut_ptr(),
            })
            .collect();
        let rc = call(self.entry, &ins, &outs, scratch_ptr);
        if rc != 0 {
            return Err(BackendError::Internal(format!(
                "the compiled entry returned {rc}"
            )));
        }
        for (j, (o, ty)) in b.outputs.iter().zip(&self.outputs).enumerate() {
            match o {
                OutBuf::F32(v) => f(j, OutputRef::F32(v)),
                OutBuf::Bytes(v) => f(j, OutputRef::Int(Store::of(&ty.elem).decode_ints(v))),
            }
        }
        Ok(())
    }

    /// The types of the model's outputs.
    pub fn output_types(&self) -> &[TensorType] {
        &self.outputs
    }
}

/// Calls the compiled entry `NAME_run(inputs, outputs, scratch)`.
///
/// Sound because: `entry` is the finalized address of the function `emit::build`
/// defined with exactly this signature (three pointers in, i32 out, the platform's C
/// calling convention) and the `JITModule` owning the code lives in the `JitModel`
/// that holds `entry`; `ins`/`outs` hold one pointer per model input/output, each to a
/// buffer of exactly the tensor's size in the backend's storage layout (checked by
/// `encode_inputs`; output buffers are sized from the output types, as bytes or as f32
/// values); `scratch` points at `arena` writable bytes aligned to 64, and
/// the memory plan keeps every access of the generated code inside these buffers.
fn call(entry: *const u8, ins: &[*const u8], outs: &[*mut u8], scratch: *mut u8) -> i32 {
    type Entry = extern "C" fn(*const *const u8, *const *mut u8, *mut u8) -> i32;
    // SAFETY: see the function's documentation.
    let f: Entry = unsafe { std::mem::transmute::<*const u8, Entry>(entry) };
    f(ins.as_ptr(), outs.as_ptr(), scratch)
}

/// Argument cases of [`JitModel::run_ctx_case`]: what is wrong with the call of
/// `NAME_run_ctx` (every context is built from a live pool, so each case is safe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtxCase {
    /// A proper call with this many threads.
    Good(usize),
    /// One thread and no callback (allowed: `NAME_run` runs).
    OneThreadNoCallback,
    NullCtx,
    ZeroThreads,
    /// Two or more threads and no callback.
    NoCallback,
    /// `scratch_bytes` one less than `NAME_scratch_size_threads(threads)`.
    ScratchShort(usize),
    MisalignedScratch,
    NullScratch,
    NullInputs,
    NullOutputs,
}

impl JitModel {
    /// Calls `NAME_run_ctx` on `inputs` with the context and pointers of `case`, and
    /// returns its code (0, or 1 for bad arguments). Outputs are not returned.
    #[doc(hidden)]
    pub fn run_ctx_case(
        &self,
        inputs: &[Tensor],
        pool: &ThreadPool,
        case: CtxCase,
    ) -> Result<i32, BackendError> {
        let in_bufs = self.encode_inputs(inputs)?;
        let mut out_bufs: Vec<Vec<u8>> = self
            .outputs
            .iter()
            .map(|ty| vec![0u8; ty.numel() * Store::of(&ty.elem).bytes()])
            .collect();
        let threads = match case {
            CtxCase::Good(t) | CtxCase::ScratchShort(t) => t,
            CtxCase::OneThreadNoCallback => 1,
            _ => pool.threads().max(2),
        };
        let arena = self.scratch_bytes_threads(threads) as usize;
        let mut scratch = vec![0xA5u8; arena + 2 * ALIGN as usize];
        let skip = scratch.as_ptr().align_offset(ALIGN as usize);
        let mut sp = scratch[skip..].as_mut_ptr();
        let mut ctx = pool.ctx(arena);
        ctx.threads = threads;
        let ins: Vec<*const u8> = in_bufs.iter().map(|b| b.as_ptr()).collect();
        let outs: Vec<*mut u8> = out_bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let (mut insp, mut outsp) = (ins.as_ptr(), outs.as_ptr());
        let mut null_ctx = false;
        match case {
            CtxCase::Good(_) => {}
            CtxCase::OneThreadNoCallback | CtxCase::NoCallback => ctx.parallel_for = None,
            CtxCase::NullCtx => null_ctx = true,
            CtxCase::ZeroThreads => ctx.threads = 0,
            CtxCase::ScratchShort(_) => ctx.scratch_bytes = arena.saturating_sub(1),
            CtxCase::MisalignedScratch => sp = sp.wrapping_add(8),
            CtxCase::NullScratch => sp = std::ptr::null_mut(),
            CtxCase::NullInputs => insp = std::ptr::null(),
            CtxCase::NullOutputs => outsp = std::ptr::null(),
        }
        let ctxp: *const QccCtx = if null_ctx { std::ptr::null() } else { &ctx };
        type Entry = extern "C" fn(*const QccCtx, *const *const u8, *const *mut u8, *mut u8) -> i32;
        // SAFETY: as `call_ctx`: the entry checks the context and pointers before using
        // them (NULL, zero threads, a missing callback, too little or misaligned scratch
        // give 1); every non-NULL pointer here is valid, the scratch buffer holds
        // `arena` bytes past the (mis)aligned pointer, and the pool is alive.
        let f: Entry = unsafe { std::mem::transmute::<*const u8, Entry>(self.entry_ctx) };
        Ok(f(ctxp, insp, outsp, sp))
    }
}

/// Calls the threaded entry `NAME_run_ctx(ctx, inputs, outputs, scratch)`.
///
/// Sound because: as [`call`], with `entry` the function `emit::build` defined with
/// one more leading pointer, and `ctx` a context whose pool is alive for the call and
/// whose `scratch_bytes` is what `scratch` points at (`run_times_on` allocates it so);
/// the tasks the entry hands to the pool's `parallel_for` write disjoint parts of the
/// outputs and scratch, and `parallel_for` returns only when all of them are done.
fn call_ctx(
    entry: *const u8,
    ctx: &QccCtx,
    ins: &[*const u8],
    outs: &[*mut u8],
    scratch: *mut u8,
) -> i32 {
    type Entry = extern "C" fn(*const QccCtx, *const *const u8, *const *mut u8, *mut u8) -> i32;
    // SAFETY: see the function's documentation.
    let f: Entry = unsafe { std::mem::transmute::<*const u8, Entry>(entry) };
    f(ctx, ins.as_ptr(), outs.as_ptr(), scratch)
}

/// The instruction mixes of the assembled tiles, whose peak rate `bench_kernels`
/// measures on the machine at hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeakMix {
    /// `vpdpbusd` zmm (AVX512-VNNI): 64 u8 x i8 MACs per instruction.
    VpdpbusdZmm,
    /// `vpmaddubsw` + `vpmaddwd` + `vpaddd` ymm (AVX2): 32 MACs per triple.
    VpmaddubswYmm,
    /// `vpmaddwd` + `vpaddd` ymm on i16 (AVX2): 16 MACs per pair.
    VpmaddwdYmm,
    /// `vfmadd231ps` zmm (AVX-512F): 16 f32 MACs per instruction.
    VfmaddpsZmm,
    /// `vfmadd231ps` ymm (AVX2 + FMA): 8 f32 MACs per instruction.
    VfmaddpsYmm,
    /// `vpxorq` + `vpopcntq` + `vpaddq` zmm (AVX-512 VPOPCNTDQ): 512 binary MACs per
    /// triple.
    XnorZmm,
    /// `vpxor`, `vpsrlw`, two `vpand`, two `vpshufb`, two `vpaddb` ymm (AVX2): 256
    /// binary MACs per step of the nibble lookup.
    XnorYmm,
    /// The bit-serial tiles' mix: `vpandq` + `vpopcntq` + `vpaddq` zmm, 512 binary
    /// MACs (bit products) per triple.
    AndZmm,
    /// The bit-serial tiles' mix on AVX2: [`PeakMix::XnorYmm`] with `vpand`.
    AndYmm,
}

impl PeakMix {
    pub fn name(self) -> &'static str {
        match self {
            PeakMix::VpdpbusdZmm => "vpdpbusd zmm",
            PeakMix::VpmaddubswYmm => "vpmaddubsw+vpmaddwd+vpaddd ymm",
            PeakMix::VpmaddwdYmm => "vpmaddwd+vpaddd ymm",
            PeakMix::VfmaddpsZmm => "vfmadd231ps zmm",
            PeakMix::VfmaddpsYmm => "vfmadd231ps ymm",
            PeakMix::XnorZmm => "vpxorq+vpopcntq+vpaddq zmm",
            PeakMix::XnorYmm => "vpxor+vpshufb nibble lookup+vpaddb ymm",
            PeakMix::AndZmm => "vpandq+vpopcntq+vpaddq zmm",
            PeakMix::AndYmm => "vpand+vpshufb nibble lookup+vpaddb ymm",
        }
    }
}

/// The peak G MAC/s of `mix` on this CPU: a loop of independent chains (12 for
/// `vpdpbusd`, 10 for the AVX2 triple: more than latency x throughput), assembled like
/// the tiles and run through the JIT; the best of `reps` runs of `iters` iterations.
/// None when the host lacks the tier.
pub fn measure_peak(mix: PeakMix, iters: u64, reps: usize) -> Option<f64> {
    use super::kernels::dot::{DotIsa, peak_loop};
    use super::kernels::fma::{self, FmaIsa};
    use super::kernels::xnor::{self, XnorIsa};
    use cranelift_module::{Linkage, Module as _};
    let host = super::target::Tier::host();
    let (bytes, chains, macs) = match mix {
        PeakMix::VpdpbusdZmm if host.avx512_vnni() => (peak_loop(DotIsa::Vnni512, 12), 12, 64),
        PeakMix::VpmaddubswYmm if host.avx2() => (peak_loop(DotIsa::Avx2, 10), 10, 32),
        PeakMix::VpmaddwdYmm if host.avx2() => (peak_loop(DotIsa::Avx2Wide, 10), 10, 16),
        // FMA latency 4 x 2 pipes: 12 chains are more than enough.
        PeakMix::VfmaddpsZmm if host.level >= 4 => (fma::peak_loop(FmaIsa::Zmm, 12), 12, 16),
        PeakMix::VfmaddpsYmm if host.avx2() => (fma::peak_loop(FmaIsa::Ymm, 12), 12, 8),
        // vpopcntq: latency 3, one port; 12 chains hide it.
        PeakMix::XnorZmm if host.avx512_vpopcntdq() => {
            (xnor::peak_loop(XnorIsa::Zmm, 12, false), 12, 512)
        }
        PeakMix::XnorYmm if host.avx2() => (xnor::peak_loop(XnorIsa::Ymm, 10, false), 10, 256),
        PeakMix::AndZmm if host.avx512_vpopcntdq() => {
            (xnor::peak_loop(XnorIsa::Zmm, 12, true), 12, 512)
        }
        PeakMix::AndYmm if host.avx2() => (xnor::peak_loop(XnorIsa::Ymm, 10, true), 10, 256),
        _ => return None,
    };
    let bytes = bytes.ok()?;
    let mut module = JITModule::new(JITBuilder::with_isa(
        Target::host().isa(false).ok()?,
        cranelift_module::default_libcall_names(),
    ));
    let mut sig = module.make_signature();
    sig.params.push(cranelift_codegen::ir::AbiParam::new(
        cranelift_codegen::ir::types::I64,
    ));
    sig.returns.push(cranelift_codegen::ir::AbiParam::new(
        cranelift_codegen::ir::types::I32,
    ));
    let id = module.declare_function("peak", Linkage::Local, &sig).ok()?;
    module.define_function_bytes(id, 64, &bytes, &[]).ok()?;
    module.finalize_definitions().ok()?;
    let f = module.get_finalized_function(id);
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = std::time::Instant::now();
        call_peak(f, iters.max(1));
        best = best.min(t.elapsed().as_secs_f64());
    }
    // SAFETY: nothing refers to the module's code any more.
    unsafe { module.free_memory() };
    Some((iters.max(1) * chains as u64 * macs) as f64 / best / 1e9)
}

/// Calls a peak loop `int loop(u64 iters)`.
///
/// Sound because: `f` is the finalized address of a function defined from
/// `kernels::dot::peak_loop`'s bytes, which follow the System V convention with this
/// signature, touch only caller-saved registers, read and write no memory, and return.
fn call_peak(f: *const u8, iters: u64) -> i32 {
    type Loop = extern "C" fn(u64) -> i32;
    // SAFETY: see the function's documentation.
    let g: Loop = unsafe { std::mem::transmute::<*const u8, Loop>(f) };
    g(iters)
}

impl Drop for JitModel {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the code is no longer reachable: `entry` is only used through
            // `&self`, and `self` is being dropped.
            unsafe { m.free_memory() };
        }
    }
}

/// Codes `data` with [`super::huffman::encode`] and decodes it with the decoder the
/// backend emits into objects (`NAME__huff_decode`), compiled for this machine: what
/// the tests compare with `data` on blobs no model holds (odd lengths, a few bytes).
pub fn huffman_round_trip(data: &[u8]) -> Result<Vec<u8>, BackendError> {
    use super::huffman::{self, DECODER_SCRATCH};
    let e = huffman::encode(data);
    let isa = Target::host().isa(false)?;
    let mut module = JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ));
    let mut ctx = cranelift_module::Module::make_context(&module);
    let mut fctx = cranelift_frontend::FunctionBuilderContext::new();
    let (fid, _) = huffman::define_decoder(&mut module, (&mut ctx, &mut fctx), "t", None)?;
    module
        .finalize_definitions()
        .map_err(|e| BackendError::Internal(format!("JIT finalize: {e}")))?;
    let f = module.get_finalized_function(fid);
    let mut out = vec![0u8; data.len()];
    let mut table = vec![0u8; DECODER_SCRATCH as usize];
    type Decode = extern "C" fn(*const u8, *const u8, *mut u8, u64, *mut u8);
    // SAFETY: `f` is the finalized decoder, defined with this signature (five pointer-
    // sized integers, no result, the platform's C calling convention), alive until
    // `module` is freed below; `e` comes from the encoder, so its code lengths and
    // stream starts are consistent, every read stays within `e.bytes` (the stream's
    // padding covers the 8-byte loads), the table and its work area get
    // DECODER_SCRATCH bytes and `out` the `data.len()` bytes decoded.
    let dec: Decode = unsafe { std::mem::transmute::<*const u8, Decode>(f) };
    let base = e.bytes.as_ptr();
    dec(
        base,
        base.wrapping_add(e.stream_at),
        out.as_mut_ptr(),
        data.len() as u64,
        table.as_mut_ptr(),
    );
    // SAFETY: nothing of the module is used after this.
    unsafe { module.free_memory() };
    Ok(out)
}
