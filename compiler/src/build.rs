//! Compiling a model from a build script, the way `cc` and `prost-build` work.
//!
//! ```ignore
//! // build.rs (with `qcc` as a build dependency and `qcc-runtime` as a dependency)
//! fn main() {
//!     qcc::build::Build::new("models/digits.onnx")
//!         .name("digits")
//!         .flags(["--bits", "4", "--calib", "models/calib.npz"])
//!         .compile()
//!         .unwrap();
//! }
//!
//! // src/main.rs
//! mod digits {
//!     include!(concat!(env!("OUT_DIR"), "/digits.rs"));
//! }
//! let mut session = digits::model().session();
//! let scores = session.infer(&[&image])?;
//! ```
//!
//! [`Build::compile`] writes `NAME.o` and `NAME.h` as `qcc compile` does, an archive
//! `libqcc_NAME.a` holding the object, and `NAME.rs`: the `extern "C"` declarations of
//! the object's ABI v1 functions and `pub fn model() -> qcc_runtime::Model`. Under cargo
//! (the default) it prints the directives that link the archive and rebuild when the
//! model or a flag's file changes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::driver::{CompileArgs, compile};
use crate::quant::QuantFlags;

/// The command-line flags a build script may pass.
#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
struct Flags {
    #[arg(long)]
    target: Option<String>,
    #[arg(long)]
    cpu: Option<String>,
    #[arg(long = "input-shape")]
    input_shapes: Vec<String>,
    #[arg(long = "max-scratch")]
    max_scratch: Option<String>,
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long = "compress-weights")]
    compress_weights: Option<String>,
    #[command(flatten)]
    quant: QuantFlags,
}

/// A model to compile at build time.
#[derive(Clone, Debug)]
pub struct Build {
    model: PathBuf,
    name: Option<String>,
    flags: Vec<String>,
    out_dir: Option<PathBuf>,
    cargo: bool,
}

/// What [`Build::compile`] wrote.
#[derive(Clone, Debug)]
pub struct Generated {
    pub object: PathBuf,
    pub header: PathBuf,
    pub archive: PathBuf,
    /// The Rust module to `include!`.
    pub module: PathBuf,
    /// The symbol prefix.
    pub name: String,
}

impl Build {
    pub fn new(model: impl AsRef<Path>) -> Build {
        Build {
            model: model.as_ref().to_path_buf(),
            name: None,
            flags: Vec::new(),
            out_dir: None,
            cargo: true,
        }
    }

    /// The symbol prefix and file stem (default: the model's stem, as `qcc compile`).
    pub fn name(mut self, name: &str) -> Build {
        self.name = Some(name.to_string());
        self
    }

    /// Flags as `qcc compile` takes them: `--bits`, `--wbits`, `--calib`, `--budget`,
    /// ..., `--cpu`, `--target`, `--input-shape`, `--max-scratch`, `--compress-weights`.
    pub fn flags<I, S>(mut self, flags: I) -> Build
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.flags
            .extend(flags.into_iter().map(|s| s.as_ref().to_string()));
        self
    }

    /// Where the files go (default: `$OUT_DIR`).
    pub fn out_dir(mut self, dir: impl AsRef<Path>) -> Build {
        self.out_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Whether to print cargo's `cargo:` directives (default: true).
    pub fn cargo_metadata(mut self, on: bool) -> Build {
        self.cargo = on;
        self
    }

    pub fn compile(self) -> Result<Generated> {
        let flags = Flags::try_parse_from(&self.flags)
            .map_err(|e| anyhow::anyhow!("qcc::build flags {:?}: {e}", self.flags))?;
        let out_dir = match &self.out_dir {
            Some(d) => d.clone(),
            None => PathBuf::from(std::env::var_os("OUT_DIR").context(
                "OUT_DIR is not set: call qcc::build from a build script, or give .out_dir(...)",
            )?),
        };
        let name = match &self.name {
            Some(n) => n.clone(),
            None => self
                .model
                .file_stem()
                .map(|s| {
                    s.to_string_lossy()
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                })
                .unwrap_or_else(|| "model".into()),
        };
        let object = out_dir.join(format!("{name}.o"));
        compile(&CompileArgs {
            model: self.model.clone(),
            output: Some(object.clone()),
            name: Some(name.clone()),
            target: flags.target.clone(),
            cpu: flags.cpu.clone(),
            input_shapes: flags.input_shapes.clone(),
            emit: Vec::new(),
            report: Vec::new(),
            max_scratch: flags.max_scratch.clone(),
            batch: flags.batch,
            compress_weights: flags.compress_weights.clone(),
            quant: flags.quant.clone(),
        })
        .with_context(|| format!("qcc::build: compiling {}", self.model.display()))?;
        let header = object.with_extension("h");
        let h = std::fs::read_to_string(&header)
            .with_context(|| format!("reading {}", header.display()))?;
        let count = |key: &str| -> Result<usize> {
            let pat = format!("{name}_{key} = ");
            h.split(&pat)
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
                .with_context(|| format!("{}: no {name}_{key}", header.display()))
        };
        let (ni, no) = (count("NUM_INPUTS")?, count("NUM_OUTPUTS")?);
        // Element types of a typed header (`NAME_INPUT_TYPE_i QCC_...`); float-only
        // headers have none.
        let types = if h.contains("ABI v1, typed") {
            let elem = |what: &str, i: usize| -> Result<&'static str> {
                let pat = format!("#define {name}_{what}_TYPE_{i} QCC_");
                let code = h
                    .split(&pat)
                    .nth(1)
                    .and_then(|r| r.split(|c: char| !c.is_ascii_alphanumeric()).next())
                    .with_context(|| format!("{}: no {name}_{what}_TYPE_{i}", header.display()))?;
                Ok(match code {
                    "F32" => "F32",
                    "I8" => "I8",
                    "U8" => "U8",
                    "I16" => "I16",
                    "U16" => "U16",
                    "I32" => "I32",
                    "U32" => "U32",
                    "I64" => "I64",
                    other => bail!(
                        "{}: element type QCC_{other} of {what} {i} is not one qcc-runtime knows",
                        header.display()
                    ),
                })
            };
            let list = |what: &str, n: usize| -> Result<Vec<&'static str>> {
                (0..n).map(|i| elem(what, i)).collect()
            };
            Some((list("INPUT", ni)?, list("OUTPUT", no)?))
        } else {
            None
        };
        let archive = out_dir.join(format!("libqcc_{name}.a"));
        let _ = std::fs::remove_file(&archive);
        let ar = std::env::var("AR").unwrap_or_else(|_| "ar".into());
        let status = Command::new(&ar)
            .arg("crs")
            .arg(&archive)
            .arg(&object)
            .status()
            .with_context(|| format!("running `{ar}` to archive {}: is binutils installed? (set AR to another archiver)", object.display()))?;
        if !status.success() {
            bail!("`{ar} crs {}` failed ({status})", archive.display());
        }
        let module = out_dir.join(format!("{name}.rs"));
        std::fs::write(&module, rust_module(&name, ni, no, types.as_ref()))
            .with_context(|| format!("writing {}", module.display()))?;
        if self.cargo {
            println!("cargo:rerun-if-changed={}", self.model.display());
            for (i, f) in self.flags.iter().enumerate() {
                if matches!(f.as_str(), "--calib" | "--profile")
                    && let Some(p) = self.flags.get(i + 1)
                {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
            println!("cargo:rustc-link-search=native={}", out_dir.display());
            println!("cargo:rustc-link-lib=static=qcc_{name}");
        }
        Ok(Generated {
            object,
            header,
            archive,
            module,
            name,
        })
    }
}

/// The Rust module for model `name` with `ni` inputs and `no` outputs (of the element
/// types `types`, when not all float32).
fn rust_module(
    name: &str,
    ni: usize,
    no: usize,
    types: Option<&(Vec<&'static str>, Vec<&'static str>)>,
) -> String {
    let with_types = types.map_or(String::new(), |(i, o)| {
        let list = |v: &[&str]| {
            v.iter()
                .map(|e| format!("::qcc_runtime::Elem::{e}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!("\n\x20   .with_types(&[{}], &[{}])", list(i), list(o))
    });
    format!(
        "// Generated by qcc::build for model `{name}`; do not edit.\n\
         // The object's ABI v1 entry points (with the threaded entry), and the model as a\n\
         // safe `qcc_runtime::Model`.\n\
         \n\
         unsafe extern \"C\" {{\n\
         \x20   fn {name}_input_size(i: usize) -> usize;\n\
         \x20   fn {name}_output_size(i: usize) -> usize;\n\
         \x20   fn {name}_scratch_size() -> usize;\n\
         \x20   fn {name}_run(\n\
         \x20       inputs: *const *const f32,\n\
         \x20       outputs: *const *mut f32,\n\
         \x20       scratch: *mut ::core::ffi::c_void,\n\
         \x20   ) -> i32;\n\
         \x20   fn {name}_scratch_size_threads(threads: usize) -> usize;\n\
         \x20   fn {name}_run_ctx(\n\
         \x20       ctx: *const ::qcc_runtime::QccCtx,\n\
         \x20       inputs: *const *const f32,\n\
         \x20       outputs: *const *mut f32,\n\
         \x20       scratch: *mut ::core::ffi::c_void,\n\
         \x20   ) -> i32;\n\
         }}\n\
         \n\
         // SAFETY: the functions are the ones the object compiled as `{name}` exports, and\n\
         // the counts are its header's.\n\
         static ABI: ::qcc_runtime::ModelAbi = unsafe {{\n\
         \x20   ::qcc_runtime::ModelAbi::new(\n\
         \x20       \"{name}\",\n\
         \x20       {ni},\n\
         \x20       {no},\n\
         \x20       {name}_input_size,\n\
         \x20       {name}_output_size,\n\
         \x20       {name}_scratch_size,\n\
         \x20       {name}_run,\n\
         \x20   )\n\
         \x20   .with_threads({name}_run_ctx, {name}_scratch_size_threads){with_types}\n\
         }};\n\
         \n\
         /// The compiled model `{name}`.\n\
         pub fn model() -> ::qcc_runtime::Model {{\n\
         \x20   ::qcc_runtime::Model::new(&ABI)\n\
         }}\n"
    )
}
