//! Running a module with taps: the engine under calibration, the per-layer error
//! report, the output comparison, the `--bits 1` fitting and the sensitivity analysis.
//!
//! All of them run a float (or QDQ) module once per calibration sample and look at some
//! of its intermediate values. Compiled code does this orders of magnitude faster than
//! the reference interpreter, but the compiled entry point only returns the graph
//! outputs. So [`Tapped`] compiles a clone of the module whose observed values ("taps")
//! are extra graph outputs: the backend writes an output straight into its buffer from
//! the kernel that computes it (a tapped conv no longer fuses its relu, the only
//! difference in the generated code). The module is compiled once and run per sample,
//! so memory stays flat in the number of samples.
//!
//! The interpreter stays the semantic reference: [`Engine::Interp`] runs the same taps
//! through it (the tests compare both), and a module the JIT cannot compile falls back
//! to it with a note saying why, never silently. Compiled float kernels differ from the
//! interpreter's only by float rounding (Winograd convolutions, FMA, summation order).
//!
//! `JitModel` holds raw code pointers and is not `Send`; all of this is single-threaded.

/// Called with (tap index, shape, values) for every f32 tap.
pub type TapVisitor<'a> = &'a mut dyn FnMut(usize, &[usize], &[f32]);

use std::borrow::Cow;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qcc_ir::interp::{Tensor, TensorData, run_with};
use qcc_ir::{Module, ValueDef, ValueId};

use crate::backend::{JitModel, OutputRef};

/// What runs the modules of calibration and of the error measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Engine {
    /// Compiled code (the JIT), falling back to the interpreter where the backend
    /// cannot compile the module.
    #[default]
    Jit,
    /// The reference interpreter (slow; the oracle of the tests).
    Interp,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Jit => "jit",
            Engine::Interp => "interp",
        }
    }
}

/// How the streaming measurements run: the engine and whether a progress bar is shown
/// (on a terminal only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    pub engine: Engine,
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            engine: Engine::Jit,
            progress: true,
        }
    }
}

/// A progress bar over `len` samples on stderr, drawn only when `show` and stderr is a
/// terminal: the phase, samples done, samples per second and the time left.
pub(crate) fn progress_bar(show: bool, len: usize, what: &str) -> ProgressBar {
    let target = if show && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(Some(len as u64), target);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{wide_bar}] {pos}/{len} samples, {per_sec}, ETA {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// A module prepared to run with taps on some of its values.
pub(crate) struct Tapped<'m> {
    module: Cow<'m, Module>,
    /// Compiled, with the taps as extra outputs; `None` runs the interpreter.
    jit: Option<JitModel>,
    /// Per tap: its output index in the compiled module.
    tap_out: Vec<usize>,
    /// Per node of `module`: the taps of its result (interpreter path).
    node_taps: Vec<Vec<usize>>,
    /// Per graph input of `module`: the taps of it (interpreter path).
    input_taps: Vec<Vec<usize>>,
    /// Why the interpreter runs although the JIT was asked for.
    pub note: Option<String>,
}

impl<'m> Tapped<'m> {
    /// Prepares `m` to run with taps on `taps` (graph inputs or node results) by
    /// `engine`. `what` names the measurement in the fallback note.
    pub fn new(m: &'m Module, taps: &[ValueId], engine: Engine, what: &str) -> Tapped<'m> {
        Self::from_cow(Cow::Borrowed(m), taps, engine, what)
    }

    /// As [`Tapped::new`], owning the module.
    pub fn owned(m: Module, taps: &[ValueId], engine: Engine, what: &str) -> Tapped<'static> {
        Tapped::from_cow(Cow::Owned(m), taps, engine, what)
    }

    fn from_cow(
        module: Cow<'m, Module>,
        taps: &[ValueId],
        engine: Engine,
        what: &str,
    ) -> Tapped<'m> {
        let m: &Module = &module;
        let mut node_taps = vec![Vec::new(); m.nodes.len()];
        let mut input_taps = vec![Vec::new(); m.inputs.len()];
        for (k, &v) in taps.iter().enumerate() {
            match m.value(v).def {
                ValueDef::Node(n) => node_taps[n.index()].push(k),
                _ => {
                    if let Some(i) = m.inputs.iter().position(|&i| i == v) {
                        input_taps[i].push(k);
                    }
                }
            }
        }
        let mut jit = None;
        let mut tap_out = Vec::new();
        let mut note = None;
        if engine == Engine::Jit {
            let mut outputs = m.outputs.clone();
            let mut outs = Vec::with_capacity(taps.len());
            for &v in taps {
                match outputs.iter().position(|&o| o == v) {
                    Some(j) => outs.push(j),
                    None => {
                        outs.push(outputs.len());
                        outputs.push(v);
                    }
                }
            }
            let t0 = std::time::Instant::now();
            let compiled = if outputs.len() == m.outputs.len() {
                JitModel::new(m)
            } else {
                let mut c = m.clone();
                c.outputs = outputs;
                JitModel::new(&c)
            };
            if std::env::var_os("QCC_PHASE_TIMES").is_some() {
                eprintln!(
                    "  jit compile ({what}, {} nodes): {:.3} s",
                    m.nodes.len(),
                    t0.elapsed().as_secs_f64()
                );
            }
            match compiled {
                Ok(j) => {
                    jit = Some(j);
                    tap_out = outs;
                }
                Err(e) => {
                    let why = e.to_string();
                    let why = why.trim_end();
                    note = Some(format!(
                        "{what} ran on the reference interpreter (slow): the backend cannot compile `{}`: {}",
                        m.name,
                        why.lines().take(4).collect::<Vec<_>>().join("; ")
                    ));
                }
            }
        }
        Tapped {
            module,
            jit,
            tap_out,
            node_taps,
            input_taps,
            note,
        }
    }

    /// Runs the module on `inputs`, calling `f(k, shape, values)` for every f32 tap `k`
    /// (once each, in no particular order; taps of other types are skipped); returns
    /// the module's own outputs.
    pub fn run(&self, inputs: &[Tensor], f: TapVisitor<'_>) -> Result<Vec<Tensor>, String> {
        let nout = self.module.outputs.len();
        match &self.jit {
            Some(j) => {
                let types = j.output_types();
                let mut outs: Vec<Option<Tensor>> = vec![None; nout];
                // Output index -> taps reading it.
                let mut taps_of: Vec<Vec<usize>> = vec![Vec::new(); types.len()];
                for (k, &o) in self.tap_out.iter().enumerate() {
                    taps_of[o].push(k);
                }
                j.run_visit(inputs, &mut |o, r| {
                    let shape = &types[o].shape;
                    if let OutputRef::F32(v) = &r {
                        for &k in &taps_of[o] {
                            f(k, shape, v);
                        }
                    }
                    if o < nout {
                        outs[o] = Some(Tensor {
                            shape: shape.clone(),
                            data: match r {
                                OutputRef::F32(v) => TensorData::F32(v.to_vec()),
                                OutputRef::Int(c) => TensorData::Int(c),
                            },
                        });
                    }
                })
                .map_err(|e| e.to_string())?;
                outs.into_iter()
                    .map(|t| t.ok_or_else(|| "internal: an output was not produced".to_string()))
                    .collect()
            }
            None => {
                for (i, ks) in self.input_taps.iter().enumerate() {
                    for &k in ks {
                        if let Some(x) = inputs.get(i)
                            && let Some(v) = x.as_f32()
                        {
                            f(k, &x.shape, v);
                        }
                    }
                }
                run_with(&self.module, inputs, &mut |n, t| {
                    if let Some(v) = t.as_f32() {
                        for &k in &self.node_taps[n.index()] {
                            f(k, &t.shape, v);
                        }
                    }
                })
                .map_err(|e| e.to_string())
            }
        }
    }
}
