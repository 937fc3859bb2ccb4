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

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qcc_ir::interp::{Tensor, run_with};
use qcc_ir::{Module, ValueDef, ValueId};

use crate::backend::JitModel;

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
            "{msg:<24} [{bar:30}] {pos}/{len} samples, {per_sec}, ETA {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// A module prepared to run with taps on some of its values.
pub(crate) struct Tapped<'m> {
    module: &'m Module,
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
        let mut t = Tapped {
            module: m,
            jit: None,
            tap_out: Vec::new(),
            node_taps,
            input_taps,
            note: None,
        };
        if engine == Engine::Jit {
            let mut c = m.clone();
            let mut tap_out = Vec::with_capacity(taps.len());
            for &v in taps {
                match c.outputs.iter().position(|&o| o == v) {
                    Some(j) => tap_out.push(j),
                    None => {
                        tap_out.push(c.outputs.len());
                        c.outputs.push(v);
                    }
                }
            }
            match JitModel::new(&c) {
                Ok(j) => {
                    t.jit = Some(j);
                    t.tap_out = tap_out;
                }
                Err(e) => {
                    let why = e.to_string();
                    let why = why.trim_end();
                    t.note = Some(format!(
                        "{what} ran on the reference interpreter (slow): the backend cannot compile `{}`: {}",
                        m.name,
                        why.lines().take(4).collect::<Vec<_>>().join("; ")
                    ));
                }
            }
        }
        t
    }

    /// Runs the module on `inputs`, calling `f(k, value)` for tap `k` (every tap once,
    /// in no particular order); returns the module's own outputs.
    pub fn run(
        &self,
        inputs: &[Tensor],
        f: &mut dyn FnMut(usize, &Tensor),
    ) -> Result<Vec<Tensor>, String> {
        let nout = self.module.outputs.len();
        match &self.jit {
            Some(j) => {
                let mut outs = j.run(inputs).map_err(|e| e.to_string())?;
                for (k, &o) in self.tap_out.iter().enumerate() {
                    f(k, &outs[o]);
                }
                outs.truncate(nout);
                Ok(outs)
            }
            None => {
                for (i, ks) in self.input_taps.iter().enumerate() {
                    for &k in ks {
                        if let Some(x) = inputs.get(i) {
                            f(k, x);
                        }
                    }
                }
                run_with(self.module, inputs, &mut |n, t| {
                    for &k in &self.node_taps[n.index()] {
                        f(k, t);
                    }
                })
                .map_err(|e| e.to_string())
            }
        }
    }
}
