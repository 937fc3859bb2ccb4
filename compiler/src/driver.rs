//! The commands that turn a model into native code and run it: `qcc compile`, `qcc run`
//! and `qcc eval` (docs/design.md, "Contracts"). `main.rs` parses the flags; everything else
//! is here, so that errors can name the flag or the file and say what would work.
//!
//! A model is either an ONNX file (`.onnx`: imported by the frontend, then the cleanup
//! pipeline) or a module in the IR text form (`.qir`: parsed and verified).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use qcc_ir::interp::{self, Tensor, TensorData};
use qcc_ir::{ElemType, Module};

use crate::backend::{self, JitModel, Target};
use crate::frontend::onnx::{ImportOptions, import_file, read_model};
use crate::npy;

/// A model loaded for the backend, with the names its inputs and outputs have in the
/// model file (ONNX names, or the IR's value names).
#[derive(Debug)]
pub struct Loaded {
    pub module: Module,
    pub input_names: Vec<String>,
    pub output_names: Vec<String>,
    /// The int64 inputs and outputs of the model file (int32 inside; the object's
    /// boundary keeps int64, see `backend::Int64Io`).
    pub int64: backend::Int64Io,
}

/// Parses `--input-shape NAME=D,D,...` values (the last `=` separates the name).
pub fn parse_input_shapes(specs: &[String]) -> Result<BTreeMap<String, Vec<usize>>> {
    let mut out = BTreeMap::new();
    for s in specs {
        let (name, dims) = s.rsplit_once('=').with_context(|| {
            format!("--input-shape {s}: expected NAME=D,D,... (e.g. input=1,3,32,32)")
        })?;
        let dims = dims
            .split(',')
            .map(|d| d.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| {
                format!("--input-shape {s}: dimensions must be non-negative integers")
            })?;
        if out.insert(name.to_string(), dims).is_some() {
            bail!("--input-shape: input `{name}` is given twice");
        }
    }
    Ok(out)
}

/// The run-time inputs of an ONNX graph (its inputs that are not initializers), by name.
pub fn onnx_graph_inputs(path: &Path) -> Result<Vec<String>> {
    let model = read_model(path)?;
    let Some(g) = model.graph.as_ref() else {
        bail!("{}: the model has no graph", path.display());
    };
    let inits: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name.as_str()).collect();
    Ok(g.input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .map(|i| i.name.clone())
        .collect())
}

/// The passes run after the cleanup on ONNX models with QONNX quantizers.
pub const QONNX_PASSES: &[&str] = &["rewrite", "dce"];

/// Whether `m` has no quantization in it (no quantize, dequantize, fake-quant, integer
/// kernel or quantized-type value).
fn is_float_only(m: &Module) -> bool {
    m.values
        .iter()
        .all(|v| !matches!(v.ty.elem, ElemType::Quant(_) | ElemType::Bipolar))
        && !m.nodes.iter().any(|n| {
            matches!(
                n.op,
                qcc_ir::Op::Quantize
                    | qcc_ir::Op::Dequantize
                    | qcc_ir::Op::FakeQuant
                    | qcc_ir::Op::Conv2dInt
                    | qcc_ir::Op::MatMulInt
            )
        })
}

/// Loads `path` (`.onnx` or `.qir`); `input_shapes` fixes ONNX input shapes.
pub fn load(path: &Path, input_shapes: &BTreeMap<String, Vec<usize>>) -> Result<Loaded> {
    load_for(path, input_shapes, &crate::quant::QuantFlags::default())
}

/// [`load`] for the quantization flags `quant`: with `--requantize` a QONNX model keeps
/// its quantizers as quantize/dequantize pairs (no integer lowering), so that they can
/// be taken out again.
pub fn load_for(
    path: &Path,
    input_shapes: &BTreeMap<String, Vec<usize>>,
    quant: &crate::quant::QuantFlags,
) -> Result<Loaded> {
    load_with(path, input_shapes, quant, !quant.requested())
}

/// [`load_for`]; `silu`: written-out SiLU becomes `silu` (`fuse-silu`; float builds
/// only, since the quantizer and calibration profiles know the written-out form).
fn load_with(
    path: &Path,
    input_shapes: &BTreeMap<String, Vec<usize>>,
    quant: &crate::quant::QuantFlags,
    silu: bool,
) -> Result<Loaded> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "onnx" => {
            let opts = ImportOptions {
                input_shapes: input_shapes.clone(),
                ..Default::default()
            };
            let imported = import_file(path, &opts)?;
            for w in &imported.warnings {
                eprintln!("warning: {w}");
            }
            let mut m = imported.module;
            let qonnx = m.nodes.iter().any(|n| n.op == qcc_ir::Op::FakeQuant);
            crate::passes::cleanup::pipeline()
                .run(&mut m, &mut |_| {})
                .with_context(|| format!("{}: the cleanup passes failed", path.display()))?;
            if !qonnx && is_float_only(&m) {
                // Fusions exporters leave undone (scales after convolutions, written-out
                // hard-swish): fewer passes over the activations, fewer values to
                // quantize. Models that arrive quantized keep their structure.
                crate::passes::Pipeline::from_names("fuse-float", &["fuse-float", "dce"])?
                    .run(&mut m, &mut |_| {})
                    .with_context(|| format!("{}: the float fusions failed", path.display()))?;
                if silu {
                    crate::passes::Pipeline::from_names("fuse-silu", &["fuse-silu", "dce"])?
                        .run(&mut m, &mut |_| {})
                        .with_context(|| format!("{}: the SiLU fusion failed", path.display()))?;
                }
            }
            if qonnx && !quant.requantize {
                // A QONNX (Brevitas, FINN) model: its quantizers are now quantize /
                // dequantize pairs; the rewrite engine fuses the layers into integer
                // kernels.
                crate::passes::Pipeline::from_names("qonnx", QONNX_PASSES)?
                    .run(&mut m, &mut |_| {})
                    .with_context(|| {
                        format!("{}: the integer lowering passes failed", path.display())
                    })?;
            }
            let int64 =
                backend::Int64Io::from_flags(&imported.int64_inputs, &imported.int64_outputs)?;
            Ok(Loaded {
                module: m,
                input_names: imported.input_names,
                output_names: imported.output_names,
                int64,
            })
        }
        "qir" => {
            if !input_shapes.is_empty() {
                bail!(
                    "--input-shape applies to ONNX models; {} is IR text, whose shapes are \
                     fixed (edit its input types instead)",
                    path.display()
                );
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let m = qcc_ir::parse_module(&text)
                .map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))?;
            qcc_ir::verify::verify(&m)
                .map_err(|e| anyhow::anyhow!("{} is not a valid module:\n{e}", path.display()))?;
            let names = |ids: &[qcc_ir::ValueId]| -> Vec<String> {
                ids.iter().map(|&v| m.value(v).name.clone()).collect()
            };
            let input_names = names(&m.inputs);
            let output_names = names(&m.outputs);
            Ok(Loaded {
                module: m,
                input_names,
                output_names,
                int64: backend::Int64Io::default(),
            })
        }
        _ => bail!(
            "{}: expected an ONNX model (.onnx) or a module in IR text form (.qir)",
            path.display()
        ),
    }
}

/// The default of `--max-scratch`: 1 GiB.
pub const DEFAULT_MAX_SCRATCH: u64 = 1 << 30;

/// Parses a byte size: a number, optionally followed by K, M or G (powers of 1024).
pub fn parse_size(flag: &str, s: &str) -> Result<u64> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let mult: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => bail!("{flag} {s}: expected a byte count such as 65536, 512K, 64M or 2G"),
    };
    let n: u64 = digits.parse().map_err(|_| {
        anyhow::anyhow!("{flag} {s}: expected a byte count such as 65536, 512K, 64M or 2G")
    })?;
    n.checked_mul(mult)
        .with_context(|| format!("{flag} {s}: too large"))
}

/// Fails when the scratch arena of a compiled model (`needed` bytes) exceeds
/// `--max-scratch` (`limit`, default [`DEFAULT_MAX_SCRATCH`]).
pub fn check_scratch(model: &Path, needed: u64, limit: Option<&str>) -> Result<()> {
    let max = match limit {
        Some(s) => parse_size("--max-scratch", s)?,
        None => DEFAULT_MAX_SCRATCH,
    };
    if needed > max {
        bail!(
            "{}: the model needs {needed} bytes ({:.1} MiB) of scratch memory, more than \
             --max-scratch allows ({max} bytes{}); raise it (e.g. --max-scratch {}M) or \
             give smaller input shapes",
            model.display(),
            needed as f64 / (1 << 20) as f64,
            if limit.is_none() { ", the default" } else { "" },
            needed.div_ceil(1 << 20)
        );
    }
    Ok(())
}

/// A file name for a tensor name (names may contain `/`, `:`, ...).
pub fn file_stem_for(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        format!("_{s}")
    } else {
        s
    }
}

/// `--target` and `--cpu`: the host with `native` by default; `baseline` by default for
/// another triple (`native` describes only this machine).
pub fn target(triple: Option<&str>, cpu: Option<&str>) -> Result<Target> {
    let host = target_lexicon::Triple::host().to_string();
    let triple = triple.unwrap_or(&host);
    let cpu = match cpu {
        Some(c) => c,
        None if triple == host => "native",
        None => "baseline",
    };
    Target::new(triple, cpu).map_err(|e| {
        anyhow::anyhow!(
            "--target {triple} --cpu {cpu}: {}",
            e.to_string().trim_end()
        )
    })
}

/// What to write beside the object (`--emit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmitKind {
    /// The module the backend compiles, in IR text form (`OUT.qir`).
    Ir,
    /// The Cranelift IR of every kernel (`OUT.clif`).
    Clif,
    /// The machine code of every function, disassembled (`OUT.s`).
    Asm,
}

impl EmitKind {
    /// Parses `--emit` values.
    pub fn parse_list(kinds: &[String]) -> Result<Vec<EmitKind>> {
        let mut out = Vec::new();
        for k in kinds {
            let kind = match k.trim() {
                "ir" => EmitKind::Ir,
                "clif" => EmitKind::Clif,
                "asm" => EmitKind::Asm,
                other => {
                    bail!("--emit {other}: unknown kind; use ir, clif or asm (comma-separated)")
                }
            };
            if !out.contains(&kind) {
                out.push(kind);
            }
        }
        Ok(out)
    }

    fn extension(self) -> &'static str {
        match self {
            EmitKind::Ir => "qir",
            EmitKind::Clif => "clif",
            EmitKind::Asm => "s",
        }
    }
}

/// The flags of `qcc compile`.
#[derive(Clone, Debug, Default)]
pub struct CompileArgs {
    pub model: PathBuf,
    pub output: Option<PathBuf>,
    pub name: Option<String>,
    pub target: Option<String>,
    pub cpu: Option<String>,
    pub input_shapes: Vec<String>,
    pub emit: Vec<String>,
    /// `--report`: `.html` paths get the page, others the JSON report.
    pub report: Vec<PathBuf>,
    /// `--max-scratch`: the most scratch bytes the object may ask for (default
    /// [`DEFAULT_MAX_SCRATCH`]).
    pub max_scratch: Option<String>,
    /// `--batch N`: the object runs N samples per call ([`crate::passes::rebatch`]).
    pub batch: Option<usize>,
    /// `--compress-weights`: `none` (the default) or `huffman`.
    pub compress_weights: Option<String>,
    /// `--bits`, `--calib`, ...: quantize a float model first.
    pub quant: crate::quant::QuantFlags,
}

/// `--compress-weights KIND` as backend options (none given: the default).
pub fn backend_options(compress_weights: Option<&str>) -> Result<backend::Options> {
    let compress = match compress_weights {
        None => backend::Compress::None,
        Some(s) => s.parse().map_err(|e: String| anyhow::anyhow!(e))?,
    };
    Ok(backend::Options {
        compress,
        ..Default::default()
    })
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

/// Writes a file, creating its folder first (`-o out/model.o` with no `out/` yet).
fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// `qcc compile`: writes OUT.o and OUT.h (and what `--emit` and `--report` ask for); the
/// compile report goes to stderr.
pub fn compile(a: &CompileArgs) -> Result<()> {
    // Check every flag before the (slower) import.
    let kinds = EmitKind::parse_list(&a.emit)?;
    let shapes = parse_input_shapes(&a.input_shapes)?;
    if let Some(s) = &a.max_scratch {
        parse_size("--max-scratch", s)?;
    }
    let opts = backend_options(a.compress_weights.as_deref())?;
    let t = target(a.target.as_deref(), a.cpu.as_deref())?;
    let name = match &a.name {
        Some(n) => {
            if backend::c_identifier(n) != *n {
                bail!(
                    "--name {n}: not a C identifier (letters, digits and `_`, not starting \
                     with a digit); e.g. --name {}",
                    backend::c_identifier(n)
                );
            }
            n.clone()
        }
        None => backend::c_identifier(&stem(&a.model)),
    };
    let out = match &a.output {
        Some(o) => o.clone(),
        None => PathBuf::from(format!("{}.o", stem(&a.model))),
    };
    if out.extension().is_some_and(|e| e == "h") {
        bail!(
            "-o {}: the header is written beside the object with extension .h; give the \
             object's path (e.g. -o {})",
            out.display(),
            out.with_extension("o").display()
        );
    }
    let header_path = out.with_extension("h");
    let times = std::env::var_os("QCC_PHASE_TIMES").is_some();
    let t0 = std::time::Instant::now();
    let loaded = load_for(&a.model, &shapes, &a.quant)?;
    if times {
        eprintln!("phase load: {:.2} s", t0.elapsed().as_secs_f64());
    }
    let opts = backend::Options {
        int64: loaded.int64,
        ..opts
    };
    let quantized = quantize(&a.quant, &loaded.module, &a.model)?;
    let t0 = std::time::Instant::now();
    let m = quantized.as_ref().map_or(&loaded.module, |q| &q.0);
    let batched = batch(m, a.batch, &a.model)?;
    let m = batched.as_ref().unwrap_or(m);
    if kinds.contains(&EmitKind::Ir) {
        let p = out.with_extension(EmitKind::Ir.extension());
        write(&p, m.to_string())?;
        eprintln!("wrote {}", p.display());
    }
    let compiled = backend::compile_object_with(m, &name, &t, &opts)
        .map_err(|e| anyhow::anyhow!("{}: {}", a.model.display(), e.to_string().trim_end()))?;
    check_scratch(
        &a.model,
        compiled.report.arena_bytes,
        a.max_scratch.as_deref(),
    )?;
    if times {
        eprintln!("phase codegen: {:.2} s", t0.elapsed().as_secs_f64());
    }
    for kind in [EmitKind::Clif, EmitKind::Asm] {
        if !kinds.contains(&kind) {
            continue;
        }
        let text = match kind {
            EmitKind::Clif => backend::emit_clif_with(m, &name, &t, &opts),
            _ => backend::emit_asm_with(m, &name, &t, &opts),
        }
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
        let p = out.with_extension(kind.extension());
        write(&p, text)?;
        eprintln!("wrote {}", p.display());
    }
    write(&out, &compiled.object)?;
    write(&header_path, &compiled.header)?;
    for r in &a.report {
        if r.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("html"))
        {
            let page = html_report(&compiled.report, quantized.as_ref().map(|q| &q.1), &t);
            write(r, page.render())?;
        } else {
            write(
                r,
                json_report(&compiled.report, quantized.as_ref().map(|q| &q.1)),
            )?;
        }
    }
    eprint!("{}", compiled.report);
    eprintln!(
        "wrote {} ({} bytes) and {} (symbols {name}_*)",
        out.display(),
        compiled.object.len(),
        header_path.display()
    );
    Ok(())
}

/// The module for `--batch N` (None: no flag, or 1), built from the single-sample one.
fn batch(m: &Module, n: Option<usize>, model: &Path) -> Result<Option<Module>> {
    match n {
        None | Some(1) => Ok(None),
        Some(n) => crate::passes::rebatch::rebatch(m, n)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {e}", model.display())),
    }
}

/// Applies the quantization flags (`--bits`, `--calib`, ...) to a loaded float module;
/// prints the quantization report on stderr.
fn quantize(
    flags: &crate::quant::QuantFlags,
    m: &Module,
    model: &Path,
) -> Result<Option<(Module, crate::quant::QuantReport)>> {
    let q = flags
        .apply(m)
        .map_err(|e| anyhow::anyhow!("{}: {e}", model.display()))?;
    if let Some((_, report)) = &q {
        eprint!("{report}");
    }
    Ok(q)
}

/// The JSON compile report, with a `quantization` section when the flags quantized the
/// model: per conv/gemm/matmul layer its bits, and the `--budget` choice when one was
/// made.
fn json_report(compiled: &backend::Report, quant: Option<&crate::quant::QuantReport>) -> String {
    let mut o = compiled.to_json();
    let Some(q) = quant else {
        return o;
    };
    let js = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let num = |x: f64| {
        if x.is_finite() {
            format!("{x:e}")
        } else {
            "null".into()
        }
    };
    let trimmed = o.trim_end().trim_end_matches('}').trim_end().len();
    o.truncate(trimmed);
    o.push_str(",\n  \"quantization\": {\n    \"layers\": [");
    for (i, l) in q.layers.iter().enumerate() {
        let cands = q.selection.as_ref().map_or_else(String::new, |s| {
            s.candidates[i]
                .iter()
                .map(|&(w, a, e)| {
                    format!("{{\"wbits\": {w}, \"abits\": {a}, \"error\": {}}}", num(e))
                })
                .collect::<Vec<_>>()
                .join(", ")
        });
        o.push_str(if i == 0 { "\n      " } else { ",\n      " });
        o.push_str(&format!(
            "{{\"name\": {}, \"op\": {}, \"wbits\": {}, \"abits\": {}, \"edge\": {}, \"candidates\": [{cands}]}}",
            js(&l.name),
            js(l.op.name()),
            l.wbits,
            l.abits,
            l.edge
        ));
    }
    o.push_str("\n    ]");
    if let Some(s) = &q.selection {
        o.push_str(&format!(
            ",\n    \"selection\": {{\"how\": {}, \"metric\": {}, \"predicted_error\": {}, \"measured_error\": {}, \"avg_bits\": {}, \"size_bytes\": {}, \"latency_ms\": {}}}",
            js(&s.how),
            js(&s.metric),
            num(s.predicted),
            s.measured.map_or("null".into(), num),
            num(s.avg_bits),
            num(s.size_bytes),
            num(s.latency_ms)
        ));
    }
    o.push_str("\n  }\n}\n");
    o
}

/// The bit-width page of a compiled model: its conv/gemm/matmul layers with their bits
/// (from the quantization report; a model that arrived quantized shows the integer
/// kernels' operand bits), kernels and weight bytes (from the compile report).
fn html_report(
    compiled: &backend::Report,
    quant: Option<&crate::quant::QuantReport>,
    t: &backend::Target,
) -> crate::quant::html::HtmlReport {
    use crate::quant::html::{HtmlLayer, HtmlReport};
    let kernels: Vec<&backend::LayerReport> = compiled
        .layers
        .iter()
        .filter(|l| {
            l.macs > 0
                && (l.op.starts_with("conv2d")
                    || l.op.starts_with("matmul")
                    || l.op.starts_with("gemm"))
        })
        .collect();
    let mut page = HtmlReport {
        model: compiled.model.clone(),
        target: format!("{} (--cpu {})", compiled.target, t.cpu),
        weight_bytes: compiled.weight_bytes,
        float_weight_bytes: compiled.float_weight_bytes,
        metric: "-".into(),
        how: "the model's own quantization".into(),
        ..Default::default()
    };
    match quant {
        Some(q) => {
            let sel = q.selection.as_ref();
            page.how = sel.map_or_else(
                || match q.layers.iter().find(|l| !l.edge) {
                    Some(l) => format!(
                        "uniform flags (w{} a{} in the middle layers)",
                        l.wbits, l.abits
                    ),
                    None => "uniform flags".into(),
                },
                |s| s.how.clone(),
            );
            if let Some(s) = sel {
                page.metric = s.metric.clone();
                page.predicted = Some(s.predicted);
                page.measured = s.measured;
            }
            page.notes = q.notes.clone();
            for (i, l) in q.layers.iter().enumerate() {
                let k = kernels
                    .iter()
                    .find(|k| k.loc.as_deref() == Some(l.name.as_str()));
                page.layers.push(HtmlLayer {
                    name: l.name.clone(),
                    op: l.op.name().to_string(),
                    wbits: l.wbits,
                    abits: l.abits,
                    kernel: k.map_or_else(|| "-".into(), |k| k.kernel.clone()),
                    weight_bytes: k.map_or(0, |k| k.rodata_bytes),
                    candidates: sel.map(|s| s.candidates[i].clone()).unwrap_or_default(),
                    preds: l.preds.clone(),
                });
            }
        }
        None => {
            for (i, k) in kernels.iter().enumerate() {
                page.layers.push(HtmlLayer {
                    name: k.loc.clone().unwrap_or_else(|| k.result.clone()),
                    op: k.op.clone(),
                    wbits: k.input_bits.get(1).copied().unwrap_or(32).min(255) as u8,
                    abits: k.input_bits.first().copied().unwrap_or(32).min(255) as u8,
                    kernel: k.kernel.clone(),
                    weight_bytes: k.rodata_bytes,
                    candidates: Vec::new(),
                    preds: if i > 0 { vec![i - 1] } else { Vec::new() },
                });
            }
        }
    }
    page
}

/// The flags of `qcc calibrate`.
#[derive(Clone, Debug, Default)]
pub struct CalibrateArgs {
    pub model: PathBuf,
    /// Calibration data (.npz with `x`).
    pub calib: PathBuf,
    pub calib_limit: Option<usize>,
    pub input_shapes: Vec<String>,
    /// The profile to write (.qprof).
    pub output: PathBuf,
    /// Also measure and store the per-layer sensitivity.
    pub sensitivity: bool,
    /// Its metric (`kl`, `mse`); default by the model's output.
    pub metric: Option<String>,
    /// No progress bar.
    pub quiet: bool,
}

/// `qcc calibrate`: collects the calibration statistics of a float model and writes them
/// as a calibration profile for `--profile`.
pub fn calibrate(a: &CalibrateArgs) -> Result<()> {
    let shapes = parse_input_shapes(&a.input_shapes)?;
    if a.output
        .extension()
        .is_some_and(|e| e == "o" || e == "onnx")
    {
        bail!(
            "-o {}: the output is a calibration profile; give a .qprof path (e.g. -o {})",
            a.output.display(),
            a.output.with_extension("qprof").display()
        );
    }
    // The profile is for quantized builds, which keep SiLU written out.
    let loaded = load_with(
        &a.model,
        &shapes,
        &crate::quant::QuantFlags::default(),
        false,
    )?;
    let m = &loaded.module;
    let opts = crate::quant::CalibOptions {
        limit: a.calib_limit,
        progress: !a.quiet,
        ..Default::default()
    };
    let stats = crate::quant::calibrate(m, &a.calib, &opts)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    let mut profile = crate::quant::Profile::new(&stats, m, &a.model, &a.calib, a.calib_limit);
    if a.sensitivity {
        let opts = crate::quant::sensitivity::SensOptions {
            metric: a
                .metric
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            ..Default::default()
        };
        let s = crate::quant::sensitivity::measure_sensitivity(
            m,
            &stats,
            &a.calib,
            a.calib_limit,
            &opts,
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
        eprint!("{s}");
        profile.set_sensitivity(&s);
    }
    profile.save(&a.output).map_err(anyhow::Error::msg)?;
    eprintln!(
        "wrote {} (statistics of {} values on {} samples; use it with --profile {})",
        a.output.display(),
        stats.values.len(),
        stats.samples,
        a.output.display()
    );
    Ok(())
}

/// Checks a tensor read from `path` against the model input `id`.
fn check_input(m: &Module, id: qcc_ir::ValueId, t: &Tensor, path: &Path) -> Result<()> {
    let ty = m.ty(id);
    let spelled = m.value(id).spelling();
    match (&ty.elem, &t.data) {
        (ElemType::F32, TensorData::Int(_)) => {
            bail!(
                "{}: input {spelled} is {ty}; give a float array",
                path.display()
            )
        }
        (e, TensorData::F32(_)) if e.is_integer() => bail!(
            "{}: input {spelled} is {ty}; give an integer array of codes",
            path.display()
        ),
        _ => {}
    }
    if t.shape != ty.shape {
        bail!(
            "{}: input {spelled} has shape {:?}, the array has shape {:?}{}",
            path.display(),
            ty.shape,
            t.shape,
            if m.inputs.len() == 1 {
                ""
            } else {
                " (--input files are taken in the order of the model's inputs)"
            }
        );
    }
    Ok(())
}

/// The flags of `qcc run`.
#[derive(Clone, Debug, Default)]
pub struct RunArgs {
    pub model: PathBuf,
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub input_shapes: Vec<String>,
    /// `--max-scratch` of `qcc run` (default [`DEFAULT_MAX_SCRATCH`]).
    pub max_scratch: Option<String>,
    pub quant: crate::quant::QuantFlags,
}

/// How `qcc run` and `qcc interp` execute a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    /// Compiled in memory by the backend.
    Jit,
    /// The reference interpreter.
    Interp,
}

/// `qcc run`: compiles the model in memory (JIT), runs it on the inputs and writes each
/// output as `DIR/<output name>.npy`. ONNX inputs without `--input-shape` take the shape
/// of their array (so a symbolic batch dimension follows the data).
pub fn run(a: &RunArgs) -> Result<()> {
    execute(a, Engine::Jit)
}

/// `qcc interp`: as `qcc run`, through the reference interpreter (no quantization).
pub fn interp(a: &RunArgs) -> Result<()> {
    if a.quant.requested() {
        bail!("qcc interp runs the model as it is; use `qcc run` or `qcc eval` with --bits");
    }
    execute(a, Engine::Interp)
}

fn execute(a: &RunArgs, engine: Engine) -> Result<()> {
    let mut shapes = parse_input_shapes(&a.input_shapes)?;
    if let Some(s) = &a.max_scratch {
        parse_size("--max-scratch", s)?;
    }
    let mut tensors = Vec::with_capacity(a.inputs.len());
    for p in &a.inputs {
        tensors.push(npy::read_npy(p).with_context(|| format!("--input {}", p.display()))?);
    }
    let is_onnx = a.model.extension().is_some_and(|e| e == "onnx");
    if is_onnx {
        let names = onnx_graph_inputs(&a.model)?;
        for (n, t) in names.iter().zip(&tensors) {
            shapes.entry(n.clone()).or_insert_with(|| t.shape.clone());
        }
    }
    let loaded = load_for(&a.model, &shapes, &a.quant)?;
    let quantized = quantize(&a.quant, &loaded.module, &a.model)?.map(|q| q.0);
    let m = quantized.as_ref().unwrap_or(&loaded.module);
    if tensors.len() != m.inputs.len() {
        let names: Vec<String> = m
            .inputs
            .iter()
            .map(|&i| format!("{}: {}", m.value(i).spelling(), m.ty(i)))
            .collect();
        bail!(
            "{} takes {} input(s) ({}), but {} --input file(s) were given",
            a.model.display(),
            m.inputs.len(),
            names.join(", "),
            tensors.len()
        );
    }
    for ((t, &id), p) in tensors.iter().zip(&m.inputs).zip(&a.inputs) {
        check_input(m, id, t, p)?;
    }
    let outputs = match engine {
        Engine::Jit => {
            let jit =
                JitModel::new(m).map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
            check_scratch(&a.model, jit.report().arena_bytes, a.max_scratch.as_deref())?;
            jit.run(&tensors)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?
        }
        Engine::Interp => qcc_ir::interp::run(m, &tensors)
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?,
    };
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("--out {}: cannot create the folder", a.out.display()))?;
    for ((name, t), &id) in loaded.output_names.iter().zip(&outputs).zip(&m.outputs) {
        let path = a.out.join(format!("{}.npy", file_stem_for(name)));
        npy::write_npy(&path, t)?;
        // The tensor's type; integer-valued ones (codes, indices, booleans) are saved as
        // int64.
        let ty = m.ty(id);
        let saved = if ty.elem.is_float() {
            "float32"
        } else {
            "int64"
        };
        eprintln!("wrote {} ({ty}, as {saved})", path.display());
    }
    Ok(())
}

/// The flags of `qcc eval`.
#[derive(Clone, Debug, Default)]
pub struct EvalArgs {
    pub model: PathBuf,
    pub data: PathBuf,
    /// Evaluate only the first N samples.
    pub limit: Option<usize>,
    /// `--batch N`: the compiled model runs N samples per call.
    pub batch: Option<usize>,
    /// Quantize the compiled model (the reference stays the float model).
    pub quant: crate::quant::QuantFlags,
}

/// What `qcc eval` measured.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalResult {
    pub samples: usize,
    /// Correct top-1 predictions of the reference (interpreter) and of the compiled
    /// model (JIT), when the data has labels.
    pub reference_correct: Option<usize>,
    pub compiled_correct: Option<usize>,
    /// Samples where both predict the same class.
    pub agree: usize,
    /// Largest `|compiled - reference|` over all outputs of all samples.
    pub max_abs_diff: f32,
    /// The mean error of the compiled first output against the reference's over the
    /// samples: KL of the softmax for a classifier, else MSE (the `--metric` default).
    pub mean_error: f64,
    /// Its key (`kl`, `mse`).
    pub metric: &'static str,
}

impl EvalResult {
    /// The text `qcc eval` prints.
    pub fn text(&self) -> String {
        let pct = |k: usize| 100.0 * k as f64 / self.samples.max(1) as f64;
        let mut s = format!("samples: {}\n", self.samples);
        if let (Some(r), Some(c)) = (self.reference_correct, self.compiled_correct) {
            let _ = writeln!(
                s,
                "reference (interpreter) top-1: {:.2}% ({r}/{})",
                pct(r),
                self.samples
            );
            let _ = writeln!(
                s,
                "compiled (JIT) top-1:          {:.2}% ({c}/{})",
                pct(c),
                self.samples
            );
        } else {
            s.push_str("no labels (`y`) in the data: accuracy not measured\n");
        }
        let _ = writeln!(
            s,
            "agreement:                     {:.2}% ({}/{})",
            pct(self.agree),
            self.agree,
            self.samples
        );
        let _ = writeln!(
            s,
            "max |compiled - reference|:    {:.3e}",
            self.max_abs_diff
        );
        let _ = writeln!(
            s,
            "mean {} vs reference:           {:.3e}",
            self.metric.to_uppercase(),
            self.mean_error
        );
        s
    }
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

fn labels(t: &Tensor, path: &Path) -> Result<Vec<i64>> {
    let v: Vec<i64> = match &t.data {
        TensorData::Int(v) => v.clone(),
        TensorData::F32(v) => {
            if v.iter().any(|x| x.fract() != 0.0 || *x < 0.0) {
                bail!(
                    "{}: `y` holds non-integer values; give class indices",
                    path.display()
                );
            }
            v.iter().map(|&x| x as i64).collect()
        }
    };
    Ok(v)
}

/// `qcc eval`: runs every sample of `x` (batch 1) through the reference interpreter and
/// through the compiled model (JIT); counts top-1 hits against `y` and agreements. The
/// samples are streamed from the archive (`quant::stream_samples`), so memory does not
/// grow with their number.
pub fn eval(a: &EvalArgs) -> Result<EvalResult> {
    let data = || format!("--data {}", a.data.display());
    let shape = crate::quant::samples_shape(&a.data)
        .map_err(|e| anyhow::anyhow!(e))
        .with_context(data)?;
    if shape.len() < 2 {
        bail!(
            "{}: `x` has shape {shape:?}; expected samples along the first axis, e.g. [N,1,8,8]",
            a.data.display(),
        );
    }
    let n = shape[0];
    let y = match npy::read_npz_array(&a.data, "y") {
        Ok(t) => {
            let y = labels(&t, &a.data)?;
            if y.len() != n {
                bail!(
                    "{}: `y` has {} labels for {n} samples in `x`",
                    a.data.display(),
                    y.len()
                );
            }
            Some(y)
        }
        Err(_) => None,
    };
    let mut sample_shape = shape.clone();
    sample_shape[0] = 1;
    let mut shapes = BTreeMap::new();
    if a.model.extension().is_some_and(|e| e == "onnx") {
        let names = onnx_graph_inputs(&a.model)?;
        if names.len() != 1 {
            bail!(
                "{}: eval needs a model with one input; this one has {} ({})",
                a.model.display(),
                names.len(),
                names.join(", ")
            );
        }
        shapes.insert(names[0].clone(), sample_shape.clone());
    }
    let loaded = load_for(&a.model, &shapes, &a.quant)?;
    let m = &loaded.module;
    let quantized = quantize(&a.quant, m, &a.model)?.map(|q| q.0);
    let compiled = quantized.as_ref().unwrap_or(m);
    if m.inputs.len() != 1 {
        bail!(
            "{}: eval needs a model with one input; this one has {}",
            a.model.display(),
            m.inputs.len()
        );
    }
    let ty = m.ty(m.inputs[0]);
    if ty.shape != sample_shape || ty.elem != ElemType::F32 {
        bail!(
            "{}: the model's input is {ty}, but one sample of `x` in {} is f32{:?}",
            a.model.display(),
            a.data.display(),
            sample_shape
        );
    }
    if m.outputs.is_empty() {
        bail!("{}: the model has no outputs", a.model.display());
    }
    // With `--batch N` the compiled model takes N samples per call (the last call is
    // padded with copies of its last sample); the reference runs one at a time.
    let nb = a.batch.unwrap_or(1);
    let batched = batch(compiled, a.batch, &a.model)?;
    let jit = JitModel::new(batched.as_ref().unwrap_or(compiled))
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    let count = a.limit.map_or(n, |l| l.min(n));
    let metric = crate::quant::sensitivity::Metric::default_for(m);
    let mut res = EvalResult {
        samples: count,
        reference_correct: y.as_ref().map(|_| 0),
        compiled_correct: y.as_ref().map(|_| 0),
        agree: 0,
        max_abs_diff: 0.0,
        mean_error: 0.0,
        metric: metric.name(),
    };
    let model = a.model.display().to_string();
    let not_float =
        || format!("{model}: the first output is not a float tensor; eval compares float scores");
    // Scores one sample: the reference's first output `w` against the compiled `g`.
    let score = |res: &mut EvalResult, i: usize, w: &[f32], g: &[f32]| {
        for (p, q) in w.iter().zip(g) {
            res.max_abs_diff = res.max_abs_diff.max((p - q).abs());
        }
        res.mean_error += metric.error(w, g) / count.max(1) as f64;
        let (pw, pg) = (argmax(w), argmax(g));
        if pw == pg {
            res.agree += 1;
        }
        if let Some(y) = &y {
            if pw as i64 == y[i] {
                *res.reference_correct.as_mut().expect("labels") += 1;
            }
            if pg as i64 == y[i] {
                *res.compiled_correct.as_mut().expect("labels") += 1;
            }
        }
    };
    // Samples waiting for a full batch: (index, input, the reference's first output).
    let mut pending: Vec<(usize, Tensor, Vec<f32>)> = Vec::with_capacity(nb);
    let run_batch = |res: &mut EvalResult,
                     pending: &mut Vec<(usize, Tensor, Vec<f32>)>|
     -> Result<(), String> {
        let Some(last) = pending.last() else {
            return Ok(());
        };
        let per = last.1.numel();
        let mut data = Vec::with_capacity(per * nb);
        for k in 0..nb {
            let (_, t, _) = &pending[k.min(pending.len() - 1)];
            data.extend_from_slice(t.as_f32().ok_or_else(not_float)?);
        }
        let mut shape = last.1.shape.clone();
        shape[0] = nb;
        let first = pending[0].0;
        let got = jit
            .run(&[Tensor::f32(shape, data)])
            .map_err(|e| format!("samples from {first}: {e}"))?;
        let g = got[0].as_f32().ok_or_else(not_float)?;
        let out = g.len() / nb;
        for (k, (i, _, w)) in pending.iter().enumerate() {
            score(res, *i, w, &g[k * out..(k + 1) * out]);
        }
        pending.clear();
        Ok(())
    };
    let streamed = crate::quant::stream_samples(&a.data, Some(count), 64, &mut |i, input| {
        let want = interp::run(m, std::slice::from_ref(&input))
            .map_err(|e| format!("sample {i}: the interpreter failed: {e}"))?;
        let w = want[0].as_f32().ok_or_else(not_float)?.to_vec();
        pending.push((i, input, w));
        if pending.len() == nb {
            run_batch(&mut res, &mut pending)?;
        }
        Ok(())
    })
    .and_then(|n| run_batch(&mut res, &mut pending).map(|()| n))
    .map_err(|e| anyhow::anyhow!(e))
    .with_context(data)?;
    debug_assert_eq!(streamed, count);
    Ok(res)
}

/// The flags of `qcc bench`.
#[derive(Clone, Debug, Default)]
pub struct BenchArgs {
    pub model: PathBuf,
    pub input_shapes: Vec<String>,
    /// Timed runs (after one warm-up run).
    pub runs: usize,
    /// Threads running the model (through `NAME_run_ctx` and a pool when more than 1).
    pub threads: usize,
    /// `--batch N`: samples per run (the throughput counts samples).
    pub batch: Option<usize>,
    /// `--compress-weights`: `none` (the default) or `huffman`.
    pub compress_weights: Option<String>,
    pub quant: crate::quant::QuantFlags,
}

/// What `qcc bench` measured, in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub runs: usize,
    pub threads: usize,
    /// Samples per run.
    pub batch: usize,
}

impl BenchResult {
    /// Samples per second at the median latency.
    pub fn throughput(&self) -> f64 {
        1000.0 * self.batch as f64 / self.median_ms
    }
}

impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Four significant digits.
        let ms = |v: f64| {
            let d = (3 - v.abs().max(1e-9).log10().floor() as i32).clamp(0, 9) as usize;
            format!("{v:.d$}")
        };
        writeln!(f, "median {} ms", ms(self.median_ms))?;
        writeln!(f, "min {} ms", ms(self.min_ms))?;
        writeln!(f, "max {} ms", ms(self.max_ms))?;
        write!(
            f,
            "throughput {:.1} inferences/s ({} runs, {} thread{}{})",
            self.throughput(),
            self.runs,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            if self.batch == 1 {
                String::new()
            } else {
                format!(", batch {}", self.batch)
            }
        )
    }
}

/// `qcc bench`: compiles the model (JIT, with the quantization flags), runs it once to
/// warm up and then `runs` times on fixed pseudo-random inputs (uniform in [0, 1), or
/// code 0 for integer-typed inputs), and returns the latencies.
pub fn bench(a: &BenchArgs) -> Result<BenchResult> {
    if a.threads == 0 || a.threads > 1024 {
        bail!("--threads {}: give between 1 and 1024 threads", a.threads);
    }
    if a.runs == 0 {
        bail!("--runs 0: give at least one timed run");
    }
    let opts = backend_options(a.compress_weights.as_deref())?;
    let shapes = parse_input_shapes(&a.input_shapes)?;
    let loaded = load_for(&a.model, &shapes, &a.quant)?;
    let quantized = quantize(&a.quant, &loaded.module, &a.model)?.map(|q| q.0);
    let m = quantized.as_ref().unwrap_or(&loaded.module);
    let batched = batch(m, a.batch, &a.model)?;
    let m = batched.as_ref().unwrap_or(m);
    let jit = JitModel::with_options(m, &backend::Target::host(), &opts)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    // xorshift64*: the same inputs on every run of the command.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    };
    let inputs: Vec<Tensor> = m
        .inputs
        .iter()
        .map(|&i| {
            let ty = m.ty(i);
            let n = ty.numel();
            let data = if ty.elem == ElemType::F32 {
                TensorData::F32((0..n).map(|_| next()).collect())
            } else {
                TensorData::Int(vec![0; n])
            };
            Tensor {
                shape: ty.shape.clone(),
                data,
            }
        })
        .collect();
    let err = |e: backend::BackendError| anyhow::anyhow!("{}: {e}", a.model.display());
    // One thread: `NAME_run`, as before; more: `NAME_run_ctx` with a pool of that many.
    let pool = (a.threads > 1).then(|| backend::ThreadPool::new(a.threads));
    jit.run_times_on(&inputs, 1, pool.as_ref()).map_err(err)?;
    let (_, times) = jit
        .run_times_on(&inputs, a.runs, pool.as_ref())
        .map_err(err)?;
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    Ok(BenchResult {
        median_ms: median,
        min_ms: ms[0],
        max_ms: ms[n - 1],
        runs: n,
        threads: a.threads,
        batch: a.batch.unwrap_or(1),
    })
}
