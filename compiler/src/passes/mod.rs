//! The pass registry and the pipeline that runs passes.
//!
//! Every pass has a name and a one-line summary, declared once in [`REGISTRY`]. The name
//! is what the CLI's `--passes`, `--print-after` and `--stop-after` take, the folder of
//! its file tests (`tests/filetests/<name>/`), and its row in the timing report. The
//! pipeline runs the verifier after every pass when asked to (tests and debug builds
//! do), and a failure names the pass that broke the module.

pub mod cleanup;
mod dce;
pub mod fold_batch_norm;
pub mod fold_constants;
pub mod lower_fake_quant;
pub mod rebatch;
pub mod remove_identity;
pub mod rewrite;

use std::fmt;
use std::time::{Duration, Instant};

use qcc_ir::Module;
use qcc_ir::verify::{VerifyErrors, verify};

/// A registered pass.
#[derive(Debug)]
pub struct Pass {
    /// Kebab-case name: CLI flag value, file-test folder, timing row.
    pub name: &'static str,
    /// One line: what the pass does.
    pub summary: &'static str,
    /// Runs the pass; returns whether the module changed.
    pub run: fn(&mut Module) -> Result<bool, String>,
}

/// Every pass qcc has, in the order the default pipeline runs them.
pub const REGISTRY: &[Pass] = &[
    Pass {
        name: "lower-fake-quant",
        summary: "QONNX fake_quant with constant parameters becomes quantize -> dequantize (bipolar: binarize -> cast)",
        run: lower_fake_quant::run,
    },
    Pass {
        name: "fold-constants",
        summary: "evaluate nodes whose operands are all constants (keeps dequantize of weights)",
        run: fold_constants::run,
    },
    Pass {
        name: "fold-batch-norm",
        summary: "fold batch_norm after conv2d/gemm into the weights and bias (statistics kept as meta)",
        run: fold_batch_norm::run,
    },
    Pass {
        name: "remove-identity",
        summary: "remove no-op nodes (same-shape reshapes, identity transposes, full slices, ...)",
        run: remove_identity::run,
    },
    Pass {
        name: "fold-qdq",
        summary: "egg: fold quantize(dequantize(x)) pairs and binarize of dequantize",
        run: rewrite::fold_qdq,
    },
    Pass {
        name: "move-scales",
        summary: "egg: move quantize/dequantize (and casts of b1) through max_pool, reshape, flatten, transpose, concat, ...",
        run: rewrite::move_scales,
    },
    Pass {
        name: "absorb-clamp",
        summary: "egg: absorb relu/clip before a quantize into requantize clamps",
        run: rewrite::absorb_clamp,
    },
    Pass {
        name: "fuse-int",
        summary: "egg: fuse dequantize -> conv2d/gemm/matmul (-> quantize) into integer kernels; batch norm into weight scales; b1 operands",
        run: rewrite::fuse_int,
    },
    Pass {
        name: "int-add",
        summary: "egg: quantized add/sub/mul become integer add/sub/mul between requantizes",
        run: rewrite::int_add,
    },
    Pass {
        name: "int-pool",
        summary: "egg: quantized global_avg_pool becomes a depthwise conv2d_int of ones and a requantize",
        run: rewrite::int_pool,
    },
    Pass {
        name: "lookup",
        summary: "egg: quantize(f(dequantize(x))) of a unary f on at most 8 bits becomes a table lookup",
        run: rewrite::lookup,
    },
    Pass {
        name: "merge-requant",
        summary: "egg: merge requantize chains, drop identities, requantize between quantized types",
        run: rewrite::merge_requant,
    },
    Pass {
        name: "merge-split",
        summary: "egg: integer convs of one input joined by a channel concat (a layer split by --sq-ratio) as one conv over all their filters",
        run: rewrite::merge_split,
    },
    Pass {
        name: "pow2-shift",
        summary: "egg: power-of-two requantize multipliers become shifts",
        run: rewrite::pow2_shift,
    },
    Pass {
        name: "fold-bias",
        summary: "egg: fold a constant add after conv2d/matmul/gemm into its bias",
        run: rewrite::fold_bias,
    },
    Pass {
        name: "fuse-float",
        summary: "egg: constant scales and adds after conv2d into its weights and bias, written-out hard-swish into hard_swish",
        run: rewrite::fuse_float,
    },
    Pass {
        name: "fuse-silu",
        summary: "egg: written-out SiLU, x * sigmoid(x), into silu (float builds)",
        run: rewrite::fuse_silu,
    },
    Pass {
        name: "fold-threshold",
        summary: "egg: sign/binarize/quantize after batch_norm (or of codes) become integer thresholds",
        run: rewrite::fold_threshold,
    },
    Pass {
        name: "rewrite",
        summary: "egg: every rewrite group together in one e-graph, cheapest program extracted",
        run: rewrite::all,
    },
    Pass {
        name: "dce",
        summary: "remove nodes and constants that no output depends on",
        run: dce::run,
    },
];

/// Looks a pass up by name.
pub fn find(name: &str) -> Option<&'static Pass> {
    REGISTRY.iter().find(|p| p.name == name)
}

/// The registered names, for error messages.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|p| p.name).collect()
}

/// Why a pipeline stopped with an error. Errors name the pass; a verifier failure after
/// a pass is qcc's fault (an internal error), not the user's.
#[derive(Debug)]
pub enum PipelineError {
    /// A name given to `--passes`, `--print-after` or `--stop-after` is not a pass.
    UnknownPass { flag: &'static str, name: String },
    /// The module was invalid before any pass ran.
    InvalidInput(VerifyErrors),
    /// A pass failed.
    Pass { pass: &'static str, message: String },
    /// A pass produced an invalid module.
    Verify {
        pass: &'static str,
        errors: VerifyErrors,
    },
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipelineError::UnknownPass { flag, name } => write!(
                f,
                "{flag}: no pass named `{name}` (passes: {})",
                names().join(", ")
            ),
            PipelineError::InvalidInput(e) => write!(f, "the input module is invalid:\n{e}"),
            PipelineError::Pass { pass, message } => write!(f, "pass `{pass}` failed: {message}"),
            PipelineError::Verify { pass, errors } => write!(
                f,
                "internal error: the module is invalid after pass `{pass}`:\n{errors}"
            ),
        }
    }
}

impl std::error::Error for PipelineError {}

/// One row of the timing report.
#[derive(Clone, Debug)]
pub struct PassTiming {
    pub pass: &'static str,
    pub time: Duration,
    pub changed: bool,
}

/// A sequence of passes with its debugging switches.
#[derive(Debug, Default)]
pub struct Pipeline {
    passes: Vec<&'static Pass>,
    /// Verify the input and the module after every pass.
    pub verify_each: bool,
    print_after: Vec<&'static str>,
    stop_after: Option<&'static str>,
}

impl Pipeline {
    /// A pipeline of the named passes (`flag` names the option they came from, for errors).
    pub fn from_names<S: AsRef<str>>(
        flag: &'static str,
        names: &[S],
    ) -> Result<Pipeline, PipelineError> {
        let passes = names
            .iter()
            .map(|n| {
                find(n.as_ref()).ok_or_else(|| PipelineError::UnknownPass {
                    flag,
                    name: n.as_ref().to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pipeline {
            passes,
            verify_each: cfg!(debug_assertions),
            ..Default::default()
        })
    }

    /// Print the module after each of these passes.
    pub fn print_after<S: AsRef<str>>(&mut self, names: &[S]) -> Result<(), PipelineError> {
        for n in names {
            let p = find(n.as_ref()).ok_or_else(|| PipelineError::UnknownPass {
                flag: "--print-after",
                name: n.as_ref().to_string(),
            })?;
            self.print_after.push(p.name);
        }
        Ok(())
    }

    /// Stop after this pass.
    pub fn stop_after(&mut self, name: &str) -> Result<(), PipelineError> {
        let p = find(name).ok_or_else(|| PipelineError::UnknownPass {
            flag: "--stop-after",
            name: name.to_string(),
        })?;
        self.stop_after = Some(p.name);
        Ok(())
    }

    /// Runs the passes in order. Modules requested by `print_after` go to `dump` as
    /// `// after <pass>` followed by the module text.
    pub fn run(
        &self,
        module: &mut Module,
        dump: &mut dyn FnMut(&str),
    ) -> Result<Vec<PassTiming>, PipelineError> {
        if self.verify_each {
            verify(module).map_err(PipelineError::InvalidInput)?;
        }
        let mut timings = Vec::new();
        for pass in &self.passes {
            let start = Instant::now();
            let changed = (pass.run)(module).map_err(|message| PipelineError::Pass {
                pass: pass.name,
                message,
            })?;
            timings.push(PassTiming {
                pass: pass.name,
                time: start.elapsed(),
                changed,
            });
            if self.verify_each {
                verify(module).map_err(|errors| PipelineError::Verify {
                    pass: pass.name,
                    errors,
                })?;
            }
            if self.print_after.contains(&pass.name) {
                dump(&format!("// after {}\n{module}", pass.name));
            }
            if self.stop_after == Some(pass.name) {
                break;
            }
        }
        Ok(timings)
    }
}

/// The timing report: one row per pass run.
pub fn format_timings(timings: &[PassTiming]) -> String {
    let mut s = String::from("pass                 time (ms)  changed\n");
    for t in timings {
        s += &format!(
            "{:<20} {:>9.3}  {}\n",
            t.pass,
            t.time.as_secs_f64() * 1e3,
            if t.changed { "yes" } else { "no" }
        );
    }
    s
}
