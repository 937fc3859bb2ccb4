//! The `qcc` command-line tool.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use qcc::passes::{self, Pipeline};
use qcc_ir::{Module, parse_module};

#[derive(Parser)]
#[command(
    name = "qcc",
    version,
    about = "qcc: an ahead-of-time compiler for low-bit quantized neural networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model (.onnx or .qir) through the reference interpreter (inputs and outputs
    /// as .npy).
    Interp {
        /// The model: ONNX (imported and cleaned up) or IR text (.qir).
        file: PathBuf,
        /// One .npy file per graph input, in order.
        #[arg(long = "input", value_name = "X.npy")]
        inputs: Vec<PathBuf>,
        /// Folder for the outputs, written as <output name>.npy.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Fix an ONNX input's shape (default: the shape of its array).
        #[arg(long = "input-shape", value_name = "NAME=D,D,..")]
        input_shapes: Vec<String>,
    },
    /// Run passes over IR text and print the result.
    Opt {
        /// The module, in the IR text form (.qir).
        file: PathBuf,
        /// Comma-separated pass names, run in order (see `qcc passes`).
        #[arg(long, value_delimiter = ',', value_name = "PASS,...")]
        passes: Vec<String>,
        /// Print the module after these passes.
        #[arg(long, value_delimiter = ',', value_name = "PASS,...")]
        print_after: Vec<String>,
        /// Stop after this pass.
        #[arg(long, value_name = "PASS")]
        stop_after: Option<String>,
        /// Print the time each pass took (on stderr).
        #[arg(long)]
        time_passes: bool,
        /// Write the result here instead of standard output.
        #[arg(short, long, value_name = "OUT.qir")]
        output: Option<PathBuf>,
    },
    /// List the passes with their one-line summaries.
    Passes,
    /// Show what an ONNX model holds: ops, inputs and outputs, parameters, quantization.
    Inspect {
        /// The model (.onnx).
        model: PathBuf,
        /// Shape of a graph input with symbolic dimensions, e.g. `input=1,1,8,8`.
        #[arg(long = "input-shape", value_name = "NAME=D,D,...")]
        input_shapes: Vec<String>,
    },
    /// Compile a model (.onnx or .qir) into a native object and its C header (ABI v1).
    Compile {
        /// The model: ONNX (.onnx) or IR text (.qir).
        model: PathBuf,
        /// The object to write; the header goes beside it with extension .h
        /// (default: the model's stem + .o in the current folder).
        #[arg(short, long, value_name = "OUT.o")]
        output: Option<PathBuf>,
        /// Symbol prefix: NAME_run, NAME_input_size, ... (default: the model's stem).
        #[arg(long)]
        name: Option<String>,
        /// Target triple, e.g. x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu
        /// (default: this machine).
        #[arg(long, value_name = "TRIPLE")]
        target: Option<String>,
        /// CPU feature set: baseline, native (this machine; the default on it), or a
        /// Cranelift preset such as haswell or znver1.
        #[arg(long, value_name = "NAME")]
        cpu: Option<String>,
        /// Shape of a graph input with symbolic dimensions, e.g. `input=1,1,8,8`.
        #[arg(long = "input-shape", value_name = "NAME=D,D,...")]
        input_shapes: Vec<String>,
        /// Also write OUT.qir (ir), OUT.clif (clif) and/or OUT.s (asm).
        #[arg(long, value_delimiter = ',', value_name = "KIND,...")]
        emit: Vec<String>,
        /// Write the compile report here: FILE.html as a self-contained page (layer
        /// graph coloured by bits, per-layer table, sensitivity curves), any other name
        /// as JSON; may be given more than once. The text form goes to stderr.
        #[arg(long, value_name = "FILE.json|FILE.html")]
        report: Vec<PathBuf>,
        /// The most scratch memory the compiled model may need, in bytes or with K, M or
        /// G (default 1G); a model needing more is rejected.
        #[arg(long, value_name = "BYTES")]
        max_scratch: Option<String>,
        /// Samples per call: the object's inputs and outputs get N along their first
        /// axis (the model is quantized and calibrated on single samples first).
        #[arg(long, value_name = "N")]
        batch: Option<usize>,
        /// How the object stores its weights: none (the default), or huffman (coded
        /// with canonical Huffman codes, decoded into the scratch at every call).
        #[arg(long, value_name = "KIND")]
        compress_weights: Option<String>,
        #[command(flatten)]
        quant: qcc::quant::QuantFlags,
    },
    /// Collect a float model's calibration statistics on data and save them as a
    /// calibration profile, for `--profile` of `compile`, `run` and `eval`.
    Calibrate {
        /// The model: ONNX (.onnx) or IR text (.qir).
        model: PathBuf,
        /// Calibration data (.npz with `x`, samples along the first axis).
        #[arg(long, value_name = "DATA.npz")]
        calib: PathBuf,
        /// Use at most this many calibration samples.
        #[arg(long, value_name = "N")]
        calib_limit: Option<usize>,
        /// Shape of a graph input with symbolic dimensions, e.g. `input=1,1,8,8`.
        #[arg(long = "input-shape", value_name = "NAME=D,D,...")]
        input_shapes: Vec<String>,
        /// The profile to write.
        #[arg(short, long, value_name = "OUT.qprof")]
        output: PathBuf,
        /// Also measure each conv/gemm/matmul layer's sensitivity (the output error when
        /// only that layer is quantized, per candidate bit-width) and store it, so that
        /// `--budget` with `--profile` needs no data.
        #[arg(long)]
        sensitivity: bool,
        /// What the sensitivity measures: kl (classifiers) or mse; default by the output.
        #[arg(long, value_name = "METRIC", value_parser = ["kl", "mse"], requires = "sensitivity")]
        metric: Option<String>,
        /// No progress bar (it is drawn only on a terminal anyway).
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Compile a model in memory (JIT), run it and write each output as DIR/<name>.npy.
    Run {
        /// The model: ONNX (.onnx) or IR text (.qir).
        model: PathBuf,
        /// One .npy file per graph input, in order.
        #[arg(long = "input", value_name = "X.npy")]
        inputs: Vec<PathBuf>,
        /// Folder for the outputs.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Shape of a graph input (default for ONNX models: the shape of its array).
        #[arg(long = "input-shape", value_name = "NAME=D,D,...")]
        input_shapes: Vec<String>,
        /// The most scratch memory the compiled model may need, in bytes or with K, M or
        /// G (default 1G); a model needing more is rejected.
        #[arg(long, value_name = "BYTES")]
        max_scratch: Option<String>,
        #[command(flatten)]
        quant: qcc::quant::QuantFlags,
    },
    /// Top-1 accuracy of the model (interpreter) and of its compiled code (JIT), and
    /// their agreement, on the samples of an .npz (`x`, optional labels `y`).
    Eval {
        /// The model: ONNX (.onnx) or IR text (.qir).
        model: PathBuf,
        /// An .npz with `x` (first axis = samples) and optionally `y` (class labels).
        #[arg(long, value_name = "DATA.npz")]
        data: PathBuf,
        /// Evaluate only the first N samples.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Samples per call of the compiled model (the reference runs one at a time).
        #[arg(long, value_name = "N")]
        batch: Option<usize>,
        #[command(flatten)]
        quant: qcc::quant::QuantFlags,
    },
    /// Time the compiled model (JIT) on pseudo-random inputs: median latency first, then
    /// min, max and throughput.
    Bench {
        /// The model: ONNX (.onnx) or IR text (.qir).
        model: PathBuf,
        /// Timed runs, after one warm-up run.
        #[arg(long, default_value_t = 100, value_name = "R")]
        runs: usize,
        /// Threads: more than 1 runs the threaded entry (layers split into tasks) on a
        /// pool of T threads.
        #[arg(long, default_value_t = 1, value_name = "T")]
        threads: usize,
        /// Shape of a graph input with symbolic dimensions, e.g. `input=1,1,8,8`.
        #[arg(long = "input-shape", value_name = "NAME=D,D,...")]
        input_shapes: Vec<String>,
        /// Samples per call: the object's inputs and outputs get N along their first
        /// axis (the model is quantized and calibrated on single samples first).
        #[arg(long, value_name = "N")]
        batch: Option<usize>,
        /// How the weights are stored: none (the default) or huffman (decoded at every
        /// run, so the time includes the decoding).
        #[arg(long, value_name = "KIND")]
        compress_weights: Option<String>,
        #[command(flatten)]
        quant: qcc::quant::QuantFlags,
    },
    /// Check IR text with the verifier; print every violation.
    Verify {
        /// The module, in the IR text form (.qir).
        file: PathBuf,
    },
}

fn load_module(path: &Path) -> Result<Module> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_module(&text).map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))
}

fn verified(path: &Path) -> Result<Module> {
    let m = load_module(path)?;
    qcc_ir::verify::verify(&m)
        .map_err(|e| anyhow::anyhow!("{} is not a valid module:\n{e}", path.display()))?;
    Ok(m)
}

fn cmd_opt(
    file: &Path,
    names: &[String],
    print_after: &[String],
    stop_after: Option<&str>,
    time_passes: bool,
    output: Option<&Path>,
) -> Result<()> {
    let mut m = load_module(file)?;
    let mut pipeline = Pipeline::from_names("--passes", names)?;
    pipeline.verify_each = true;
    pipeline.print_after(print_after)?;
    if let Some(s) = stop_after {
        pipeline.stop_after(s)?;
    }
    let timings = pipeline.run(&mut m, &mut |text| println!("{text}"))?;
    if time_passes {
        eprint!("{}", passes::format_timings(&timings));
    }
    match output {
        Some(p) => std::fs::write(p, m.to_string())
            .with_context(|| format!("cannot write {}", p.display()))?,
        None => print!("{m}"),
    }
    Ok(())
}

fn cmd_inspect(model: &Path, input_shapes: &[String]) -> Result<()> {
    let opts = qcc::frontend::onnx::ImportOptions {
        input_shapes: qcc::driver::parse_input_shapes(input_shapes)?,
        ..Default::default()
    };
    print!(
        "{}",
        qcc::frontend::onnx::inspect::inspect_file(model, &opts)?
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Interp {
            file,
            inputs,
            out,
            input_shapes,
        } => qcc::driver::interp(&qcc::driver::RunArgs {
            model: file.clone(),
            inputs: inputs.clone(),
            out: out.clone(),
            input_shapes: input_shapes.clone(),
            ..Default::default()
        }),
        Command::Opt {
            file,
            passes,
            print_after,
            stop_after,
            time_passes,
            output,
        } => cmd_opt(
            file,
            passes,
            print_after,
            stop_after.as_deref(),
            *time_passes,
            output.as_deref(),
        ),
        Command::Passes => {
            for p in passes::REGISTRY {
                println!("{:<20} {}", p.name, p.summary);
            }
            Ok(())
        }
        Command::Inspect {
            model,
            input_shapes,
        } => cmd_inspect(model, input_shapes),
        Command::Compile {
            model,
            output,
            name,
            target,
            cpu,
            input_shapes,
            emit,
            report,
            max_scratch,
            batch,
            compress_weights,
            quant,
        } => qcc::driver::compile(&qcc::driver::CompileArgs {
            model: model.clone(),
            output: output.clone(),
            name: name.clone(),
            target: target.clone(),
            cpu: cpu.clone(),
            input_shapes: input_shapes.clone(),
            emit: emit.clone(),
            report: report.clone(),
            max_scratch: max_scratch.clone(),
            batch: *batch,
            compress_weights: compress_weights.clone(),
            quant: quant.clone(),
        }),
        Command::Calibrate {
            model,
            calib,
            calib_limit,
            input_shapes,
            output,
            sensitivity,
            metric,
            quiet,
        } => qcc::driver::calibrate(&qcc::driver::CalibrateArgs {
            model: model.clone(),
            calib: calib.clone(),
            calib_limit: *calib_limit,
            input_shapes: input_shapes.clone(),
            output: output.clone(),
            sensitivity: *sensitivity,
            metric: metric.clone(),
            quiet: *quiet,
        }),
        Command::Run {
            model,
            inputs,
            out,
            input_shapes,
            max_scratch,
            quant,
        } => qcc::driver::run(&qcc::driver::RunArgs {
            model: model.clone(),
            inputs: inputs.clone(),
            out: out.clone(),
            input_shapes: input_shapes.clone(),
            max_scratch: max_scratch.clone(),
            quant: quant.clone(),
        }),
        Command::Bench {
            model,
            runs,
            threads,
            input_shapes,
            batch,
            compress_weights,
            quant,
        } => qcc::driver::bench(&qcc::driver::BenchArgs {
            model: model.clone(),
            runs: *runs,
            threads: *threads,
            batch: *batch,
            input_shapes: input_shapes.clone(),
            compress_weights: compress_weights.clone(),
            quant: quant.clone(),
        })
        .map(|r| println!("{r}")),
        Command::Eval {
            model,
            data,
            limit,
            batch,
            quant,
        } => qcc::driver::eval(&qcc::driver::EvalArgs {
            model: model.clone(),
            data: data.clone(),
            limit: *limit,
            batch: *batch,
            quant: quant.clone(),
        })
        .map(|r| print!("{}", r.text())),
        Command::Verify { file } => verified(file).map(|_| println!("{}: ok", file.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
