//! Safe Rust wrappers for models compiled by qcc (object ABI v1).
//!
//! A compiled model is an object file exporting `NAME_run` and the functions that give
//! its sizes (see the generated C header). [`ModelAbi`] holds those entry points;
//! `qcc::build` (the build-script API) generates it, together with an `extern` block
//! and a `model()` function, so an application writes no `unsafe` code:
//!
//! ```ignore
//! // build.rs: qcc::build::Build::new("digits.onnx").name("digits").compile()?;
//! mod digits { include!(concat!(env!("OUT_DIR"), "/digits.rs")); }
//!
//! let model = digits::model();          // a `Model`: Copy, Send + Sync
//! let mut session = model.session();    // owns its aligned scratch
//! let scores = session.infer(&[&image])?;
//! ```
//!
//! A [`Model`] may be shared by any number of threads; each thread runs it through its
//! own [`Session`] (the object's code is reentrant, and all the state of a call lives
//! in the session's scratch and the caller's buffers).
//!
//! One inference can also use several threads: [`Model::session_on`] runs the object's
//! threaded entry `NAME_run_ctx`, whose larger layers are split into tasks, on a
//! [`ThreadPool`] (std threads; the outputs are bit-identical to a plain session's):
//!
//! ```ignore
//! let pool = std::sync::Arc::new(qcc_runtime::ThreadPool::new(4));
//! let mut session = digits::model().session_on(pool);
//! let scores = session.infer(&[&image])?;
//! ```
#![allow(
    unsafe_code,
    reason = "calling the compiled object through its C ABI; each call's contract is checked first"
)]

mod pool;

pub use pool::{ParallelForFn, QccCtx, TaskFn, ThreadPool, qcc_pool_parallel_for};

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ffi::c_void;
use std::fmt;
use std::sync::Arc;

/// The alignment the object ABI requires of the scratch memory.
pub const SCRATCH_ALIGN: usize = 64;

/// `NAME_run(inputs, outputs, scratch)`.
pub type RunFn = unsafe extern "C" fn(*const *const f32, *const *mut f32, *mut c_void) -> i32;
/// `NAME_input_size(i)` / `NAME_output_size(i)`: floats of tensor `i`.
pub type SizeFn = unsafe extern "C" fn(usize) -> usize;
/// `NAME_scratch_size()`: bytes.
pub type ScratchFn = unsafe extern "C" fn() -> usize;
/// `NAME_run_ctx(ctx, inputs, outputs, scratch)`: the threaded entry.
pub type RunCtxFn =
    unsafe extern "C" fn(*const QccCtx, *const *const f32, *const *mut f32, *mut c_void) -> i32;
/// `NAME_scratch_size_threads(threads)`: bytes.
pub type ScratchThreadsFn = unsafe extern "C" fn(usize) -> usize;

/// The element type of a tensor at the object's boundary: the header's `qcc_elem`
/// (`NAME_INPUT_TYPE_i`, `NAME_OUTPUT_TYPE_i`; float-only models are all `F32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    F32,
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
}

impl Elem {
    /// The C type's name (`float`, `int64_t`, ...).
    pub fn c_name(self) -> &'static str {
        match self {
            Elem::F32 => "float",
            Elem::I8 => "int8_t",
            Elem::U8 => "uint8_t",
            Elem::I16 => "int16_t",
            Elem::U16 => "uint16_t",
            Elem::I32 => "int32_t",
            Elem::U32 => "uint32_t",
            Elem::I64 => "int64_t",
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The Rust types that cross the boundary: `f32`, `i8`, `u8`, `i16`, `u16`, `i32`,
/// `u32` and `i64` (booleans and u8 quantized codes are `u8`).
pub trait Element: Copy + sealed::Sealed {
    const ELEM: Elem;
}

macro_rules! element {
    ($($t:ty => $e:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const ELEM: Elem = Elem::$e;
        }
    )*};
}
element!(f32 => F32, i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32, i64 => I64);

/// One input of [`Session::run_typed`]: a slice of any [`Element`] type.
#[derive(Clone, Copy, Debug)]
pub struct In<'a> {
    elem: Elem,
    ptr: *const c_void,
    len: usize,
    _borrow: std::marker::PhantomData<&'a ()>,
}

impl<'a, T: Element> From<&'a [T]> for In<'a> {
    fn from(s: &'a [T]) -> In<'a> {
        In {
            elem: T::ELEM,
            ptr: s.as_ptr().cast(),
            len: s.len(),
            _borrow: std::marker::PhantomData,
        }
    }
}

/// One output of [`Session::run_typed`]: a mutable slice of any [`Element`] type.
#[derive(Debug)]
pub struct Out<'a> {
    elem: Elem,
    ptr: *mut c_void,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut ()>,
}

impl<'a, T: Element> From<&'a mut [T]> for Out<'a> {
    fn from(s: &'a mut [T]) -> Out<'a> {
        Out {
            elem: T::ELEM,
            ptr: s.as_mut_ptr().cast(),
            len: s.len(),
            _borrow: std::marker::PhantomData,
        }
    }
}

/// The entry points of one compiled model (ABI v1).
#[derive(Clone, Copy)]
pub struct ModelAbi {
    name: &'static str,
    num_inputs: usize,
    num_outputs: usize,
    input_size: SizeFn,
    output_size: SizeFn,
    scratch_size: ScratchFn,
    run: RunFn,
    /// The threaded entry and its scratch size, when the object has them.
    threaded: Option<(RunCtxFn, ScratchThreadsFn)>,
    /// The inputs' and outputs' element types (None: all float32).
    types: Option<(&'static [Elem], &'static [Elem])>,
}

impl fmt::Debug for ModelAbi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelAbi")
            .field("name", &self.name)
            .field("num_inputs", &self.num_inputs)
            .field("num_outputs", &self.num_outputs)
            .finish_non_exhaustive()
    }
}

impl ModelAbi {
    /// The entry points of model `name`.
    ///
    /// # Safety
    ///
    /// The functions must be the ones a qcc object exports for one model (`NAME_run`,
    /// `NAME_input_size`, `NAME_output_size`, `NAME_scratch_size`), and the counts must
    /// be the header's `NAME_NUM_INPUTS` and `NAME_NUM_OUTPUTS`. `qcc::build` writes
    /// this call.
    #[allow(clippy::too_many_arguments)]
    pub const unsafe fn new(
        name: &'static str,
        num_inputs: usize,
        num_outputs: usize,
        input_size: SizeFn,
        output_size: SizeFn,
        scratch_size: ScratchFn,
        run: RunFn,
    ) -> ModelAbi {
        ModelAbi {
            name,
            num_inputs,
            num_outputs,
            input_size,
            output_size,
            scratch_size,
            run,
            threaded: None,
            types: None,
        }
    }

    /// The same entry points with the element types of a typed header (one per input
    /// and per output).
    ///
    /// # Safety
    ///
    /// The types must be the header's `NAME_INPUT_TYPE_i` and `NAME_OUTPUT_TYPE_i`, in
    /// order: the object reads and writes its tensors in them.
    pub const unsafe fn with_types(
        self,
        inputs: &'static [Elem],
        outputs: &'static [Elem],
    ) -> ModelAbi {
        ModelAbi {
            types: Some((inputs, outputs)),
            ..self
        }
    }

    /// The same entry points with the threaded entry (objects of qcc with issue 15's
    /// `NAME_run_ctx`).
    ///
    /// # Safety
    ///
    /// The functions must be the object's `NAME_run_ctx` and `NAME_scratch_size_threads`
    /// of the same model as the other entry points.
    pub const unsafe fn with_threads(
        self,
        run_ctx: RunCtxFn,
        scratch_size_threads: ScratchThreadsFn,
    ) -> ModelAbi {
        ModelAbi {
            threaded: Some((run_ctx, scratch_size_threads)),
            ..self
        }
    }
}

/// A compiled model: cheap to copy, safe to share between threads.
#[derive(Clone, Copy, Debug)]
pub struct Model {
    abi: &'static ModelAbi,
}

impl Model {
    pub const fn new(abi: &'static ModelAbi) -> Model {
        Model { abi }
    }

    /// The symbol prefix the model was compiled with.
    pub fn name(&self) -> &'static str {
        self.abi.name
    }

    pub fn num_inputs(&self) -> usize {
        self.abi.num_inputs
    }

    pub fn num_outputs(&self) -> usize {
        self.abi.num_outputs
    }

    /// The element type of input `i` (panics when `i` is out of range).
    pub fn input_type(&self, i: usize) -> Elem {
        assert!(
            i < self.abi.num_inputs,
            "input {i} of {}",
            self.abi.num_inputs
        );
        self.abi.types.map_or(Elem::F32, |t| t.0[i])
    }

    /// The element type of output `i` (panics when `i` is out of range).
    pub fn output_type(&self, i: usize) -> Elem {
        assert!(
            i < self.abi.num_outputs,
            "output {i} of {}",
            self.abi.num_outputs
        );
        self.abi.types.map_or(Elem::F32, |t| t.1[i])
    }

    /// Elements of input `i` (panics when `i` is out of range).
    pub fn input_len(&self, i: usize) -> usize {
        assert!(
            i < self.abi.num_inputs,
            "input {i} of {}",
            self.abi.num_inputs
        );
        // SAFETY: an ABI v1 size function, called with an index below the count.
        unsafe { (self.abi.input_size)(i) }
    }

    /// Elements of output `i` (panics when `i` is out of range).
    pub fn output_len(&self, i: usize) -> usize {
        assert!(
            i < self.abi.num_outputs,
            "output {i} of {}",
            self.abi.num_outputs
        );
        // SAFETY: as `input_len`.
        unsafe { (self.abi.output_size)(i) }
    }

    /// Bytes of scratch one call needs.
    pub fn scratch_bytes(&self) -> usize {
        // SAFETY: an ABI v1 function without arguments.
        unsafe { (self.abi.scratch_size)() }
    }

    /// A session: the scratch for running this model on one thread at a time.
    pub fn session(&self) -> Session {
        Session {
            model: *self,
            scratch: Scratch::new(self.scratch_bytes()),
            pool: None,
        }
    }

    /// Whether the object has the threaded entry `NAME_run_ctx`.
    pub fn has_threads(&self) -> bool {
        self.abi.threaded.is_some()
    }

    /// Bytes of scratch one call needs on `threads` threads (`scratch_bytes()` for a
    /// model without the threaded entry).
    pub fn scratch_bytes_threads(&self, threads: usize) -> usize {
        match self.abi.threaded {
            // SAFETY: an ABI function taking a count.
            Some((_, f)) => unsafe { f(threads) },
            None => self.scratch_bytes(),
        }
    }

    /// A session that runs the model on `pool`'s threads: its layers split into tasks
    /// by `NAME_run_ctx` (outputs bit-identical to [`Model::session`]'s). A model
    /// without the threaded entry runs on the calling thread. Several sessions may
    /// share a pool; one whose job finds the pool busy runs its tasks itself.
    pub fn session_on(&self, pool: Arc<ThreadPool>) -> Session {
        let bytes = if self.has_threads() {
            self.scratch_bytes_threads(pool.threads())
        } else {
            self.scratch_bytes()
        };
        Session {
            model: *self,
            scratch: Scratch::new(bytes),
            pool: self.has_threads().then_some(pool),
        }
    }
}

/// Why a run did not happen or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunError {
    /// The number of input (or output) slices differs from the model's.
    Count {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A slice has the wrong number of elements.
    Len {
        what: &'static str,
        index: usize,
        expected: usize,
        got: usize,
    },
    /// A slice has another element type than the model's tensor.
    Type {
        what: &'static str,
        index: usize,
        expected: Elem,
        got: Elem,
    },
    /// `NAME_run` returned this nonzero code.
    Code(i32),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Count {
                what,
                expected,
                got,
            } => write!(f, "the model takes {expected} {what}s, {got} given"),
            RunError::Len {
                what,
                index,
                expected,
                got,
            } => write!(f, "{what} {index} holds {got} elements, the model wants {expected}"),
            RunError::Type {
                what,
                index,
                expected,
                got,
            } => write!(
                f,
                "{what} {index} is a slice of {}, the model's tensor holds {}",
                got.c_name(),
                expected.c_name()
            ),
            RunError::Code(3) => f.write_str(
                "the model returned 3: an int64 input holds a value beyond int32 (the model computes it as int32)",
            ),
            RunError::Code(2) => f.write_str(
                "the model returned 2: this CPU lacks the instruction set the object was compiled for (see NAME_CPU_TIER in its header; recompile with --cpu)",
            ),
            RunError::Code(c) => write!(f, "the model returned {c}: bad arguments"),
        }
    }
}

impl std::error::Error for RunError {}

/// Scratch memory aligned to [`SCRATCH_ALIGN`].
struct Scratch {
    ptr: *mut u8,
    layout: Layout,
}

impl Scratch {
    fn new(bytes: usize) -> Scratch {
        let layout = Layout::from_size_align(bytes.max(SCRATCH_ALIGN), SCRATCH_ALIGN)
            .expect("scratch size overflows");
        // SAFETY: the layout's size is nonzero.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Scratch { ptr, layout }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

// SAFETY: the scratch is plain memory owned by one `Session`; moving it to another
// thread moves the only pointer to it.
unsafe impl Send for Scratch {}

/// A model with its own scratch: runs on one thread at a time (it is `Send`, not
/// shared); make one per thread.
pub struct Session {
    model: Model,
    scratch: Scratch,
    /// The pool of a threaded session.
    pool: Option<Arc<ThreadPool>>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("model", &self.model)
            .field("scratch_bytes", &self.scratch.layout.size())
            .field("threads", &self.pool.as_ref().map_or(1, |p| p.threads()))
            .finish()
    }
}

impl Session {
    pub fn model(&self) -> Model {
        self.model
    }

    /// Runs a float32 model: one slice per input and per output, each of the model's
    /// length ([`Session::run_typed`] for models with other element types).
    pub fn run(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) -> Result<(), RunError> {
        let ins: Vec<In<'_>> = inputs.iter().map(|&x| In::from(x)).collect();
        let mut outs: Vec<Out<'_>> = outputs.iter_mut().map(|y| Out::from(&mut **y)).collect();
        self.run_typed(&ins, &mut outs)
    }

    /// Runs the model: one slice per input and per output, each of the model's element
    /// type ([`Model::input_type`]) and length:
    ///
    /// ```ignore
    /// let (ids, mut cls, mut scores) = ([3i64, 7, 1], [0i64; 1], [0f32; 5]);
    /// session.run_typed(&[(&ids[..]).into()], &mut [(&mut cls[..]).into(), (&mut scores[..]).into()])?;
    /// ```
    pub fn run_typed(
        &mut self,
        inputs: &[In<'_>],
        outputs: &mut [Out<'_>],
    ) -> Result<(), RunError> {
        let m = self.model;
        if inputs.len() != m.num_inputs() {
            return Err(RunError::Count {
                what: "input",
                expected: m.num_inputs(),
                got: inputs.len(),
            });
        }
        if outputs.len() != m.num_outputs() {
            return Err(RunError::Count {
                what: "output",
                expected: m.num_outputs(),
                got: outputs.len(),
            });
        }
        let slices = inputs
            .iter()
            .map(|x| ("input", x.elem, x.len))
            .enumerate()
            .chain(
                outputs
                    .iter()
                    .map(|y| ("output", y.elem, y.len))
                    .enumerate(),
            );
        for (index, (what, elem, len)) in slices {
            let (expected, want) = if what == "input" {
                (m.input_type(index), m.input_len(index))
            } else {
                (m.output_type(index), m.output_len(index))
            };
            if elem != expected {
                return Err(RunError::Type {
                    what,
                    index,
                    expected,
                    got: elem,
                });
            }
            if len != want {
                return Err(RunError::Len {
                    what,
                    index,
                    expected: want,
                    got: len,
                });
            }
        }
        // Empty tensors still get distinct non-null pointers (slices' dangling ones).
        let ins: Vec<*const f32> = inputs.iter().map(|x| x.ptr.cast()).collect();
        let outs: Vec<*mut f32> = outputs.iter_mut().map(|y| y.ptr.cast()).collect();
        let rc = match (&self.pool, m.abi.threaded) {
            (Some(pool), Some((run_ctx, _))) => {
                let ctx = pool.ctx(self.scratch.layout.size());
                // SAFETY: as for `run` below, with the context of a pool this session
                // keeps alive and the scratch's real size (at least
                // `scratch_bytes_threads` of the pool's threads, as `session_on`
                // allocated it); the pool's `parallel_for` returns only when every task
                // has, so nothing of the call outlives it.
                unsafe {
                    run_ctx(
                        &ctx,
                        ins.as_ptr(),
                        outs.as_ptr(),
                        self.scratch.ptr.cast::<c_void>(),
                    )
                }
            }
            // SAFETY: one pointer per input and output, each to exactly the number of
            // elements of the type the model reads or writes (checked above; the C
            // function takes them as `void *`); the scratch is this session's, at least
            // `scratch_bytes()` long and aligned to 64; the borrows keep every buffer
            // alive and unaliased for the call.
            _ => unsafe {
                (m.abi.run)(
                    ins.as_ptr(),
                    outs.as_ptr(),
                    self.scratch.ptr.cast::<c_void>(),
                )
            },
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(RunError::Code(rc))
        }
    }

    /// Runs the model and returns freshly allocated outputs.
    pub fn infer(&mut self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, RunError> {
        let m = self.model;
        let mut outs: Vec<Vec<f32>> = (0..m.num_outputs())
            .map(|i| vec![0.0; m.output_len(i)])
            .collect();
        let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        self.run(inputs, &mut refs)?;
        Ok(outs)
    }
}
