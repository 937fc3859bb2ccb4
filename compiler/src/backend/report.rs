//! The compile report: per layer the kernel chosen, element types and bits, MACs and
//! scratch offsets; totals for weights, arena and tensors. Printable as text (stderr)
//! and as JSON (`--report FILE.json`, hand-written to keep dependencies lean).

use std::fmt::{self, Write};

/// One kernel call of the entry function.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerReport {
    /// Position in the entry function.
    pub index: usize,
    /// The op, with fused ops after `+` (`conv2d+relu`); `copy` for output copies.
    pub op: String,
    /// The result's spelling (`%v3`) and the node's `loc`, if any.
    pub result: String,
    pub loc: Option<String>,
    /// The kernel chosen.
    pub kernel: String,
    /// Operand element types (`f32`, `q<u8, 0.1:3>`, ...), then the result's.
    pub inputs: Vec<String>,
    pub output: String,
    /// Storage bits of the operands and the result.
    pub input_bits: Vec<u32>,
    pub output_bits: u32,
    pub macs: u64,
    /// Where the result goes: `scratch+OFF`, `output[j]`.
    pub dest: String,
    /// The workspace's arena offset and bytes (0 bytes: none).
    pub workspace: (u64, u64),
    /// Whether the kernel computes on integers.
    pub integer: bool,
    /// Bytes of read-only data this kernel added to the object (packed weights, bias,
    /// requantize and index tables; data shared with an earlier kernel counts there).
    pub rodata_bytes: u64,
    /// The x86-64 tier of an assembled wide kernel (`x86-64-v4+vnni`); None for the
    /// Cranelift code every tier of the target runs.
    pub tier: Option<String>,
    /// Tasks the threaded entry (`NAME_run_ctx`) splits the layer into (1: it runs
    /// inline, too small to be worth a fork/join).
    pub tasks: usize,
    /// The first layer of the job this layer's tasks share with its neighbours (one
    /// fork/join for several layers), if any.
    pub job: Option<usize>,
    /// What its tasks split (`rows`, `channels` or `elements`), when it has tasks.
    pub split_by: Option<&'static str>,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Report {
    pub model: String,
    pub target: String,
    /// The object's x86-64 tier (what `NAME_run` checks the CPU for); None off x86-64.
    pub tier: Option<String>,
    pub layers: Vec<LayerReport>,
    /// Bytes of read-only data in the object (packed weights, tables), as defined.
    pub weight_bytes: u64,
    /// What the f32 model would hold instead: 4 bytes per weight element (and constant
    /// bias element) of every integer conv/matmul with constant weights, plus all other
    /// read-only data unchanged.
    pub float_weight_bytes: u64,
    /// Bytes of scratch the caller provides (NAME_scratch_size()).
    pub arena_bytes: u64,
    /// Bytes of scratch of the threaded entry with two or more threads
    /// (NAME_scratch_size_threads(T)).
    pub arena_ctx_bytes: u64,
    /// Sum of the sizes of every run-time tensor (what no reuse would need).
    pub tensor_bytes: u64,
    pub total_macs: u64,
    /// What `--compress-weights` did (None without the flag).
    pub compression: Option<Compression>,
}

/// The compressed weights (`--compress-weights huffman`): blobs of constant data the
/// kernels read, each stored coded (its code table, then the bit stream) and decoded
/// into the scratch arena at the start of every call.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Compression {
    /// `huffman`.
    pub method: String,
    /// The blobs stored coded, in the order they were defined (the others were under
    /// the minimum size or did not shrink).
    pub blobs: Vec<BlobReport>,
    /// Their bytes as the kernels read them.
    pub raw_bytes: u64,
    /// Their bytes in the object: code tables, streams and padding.
    pub stored_bytes: u64,
    /// Bytes of scratch they are decoded into (each blob 64-byte aligned).
    pub decoded_bytes: u64,
    /// Bytes of machine code of the decoder (0 when no blob is coded): the object
    /// shrinks by the bytes saved less these.
    pub decoder_code_bytes: u64,
    /// Where that region starts in `NAME_run`'s scratch (None when no blob is coded).
    pub weights_offset: Option<u64>,
}

/// One coded blob.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct BlobReport {
    /// The layer (step of [`Report::layers`]) whose kernel first defined it.
    pub layer: Option<usize>,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// Distinct byte values in it, and its longest code in bits.
    pub symbols: usize,
    pub max_code_bits: u32,
    /// Its offset in the decoded weights' region.
    pub offset: u64,
    /// Whether `NAME_run` decodes it (its kernels read it) and whether `NAME_run_ctx`
    /// with two or more threads does (a blob only the band kernels of a split layer
    /// read is decoded by the latter alone).
    pub run: bool,
    pub run_ctx: bool,
}

impl Compression {
    /// Bytes of read-only data the coding saves in the object.
    pub fn saved_bytes(&self) -> u64 {
        self.raw_bytes - self.stored_bytes
    }

    /// Stored over raw bytes of the coded blobs (1.0 when none is).
    pub fn ratio(&self) -> f64 {
        if self.raw_bytes == 0 {
            1.0
        } else {
            self.stored_bytes as f64 / self.raw_bytes as f64
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tier {
            Some(t) => writeln!(
                f,
                "qcc compile report: {} for {}, tier {t}",
                self.model, self.target
            )?,
            None => writeln!(f, "qcc compile report: {} for {}", self.model, self.target)?,
        }
        writeln!(
            f,
            "{:>3}  {:<22} {:<34} {:>10}  {:<18} types",
            "#", "op", "kernel", "MACs", "result at"
        )?;
        for l in &self.layers {
            let ws = if l.workspace.1 > 0 {
                format!(" (workspace scratch+{} {} B)", l.workspace.0, l.workspace.1)
            } else {
                String::new()
            };
            let ro = if l.rodata_bytes > 0 {
                format!(" [rodata {} B]", l.rodata_bytes)
            } else {
                String::new()
            };
            let tier = match &l.tier {
                Some(t) => format!(" [tier {t}]"),
                None => String::new(),
            };
            let by = l.split_by.map_or(String::new(), |b| format!(" by {b}"));
            let tier = match (l.tasks, l.job) {
                (1, _) => tier,
                (n, Some(j)) => format!("{tier} [{n} tasks{by}, job {j}]"),
                (n, None) => format!("{tier} [{n} tasks{by}]"),
            };
            writeln!(
                f,
                "{:>3}  {:<22} {:<34} {:>10}  {:<18} ({}) -> {}{ws}{ro}{tier}",
                l.index,
                l.op,
                l.kernel,
                l.macs,
                l.dest,
                l.inputs.join(", "),
                l.output
            )?;
        }
        let int = self.layers.iter().filter(|l| l.integer).count();
        writeln!(
            f,
            "totals: {} MACs, {} layers ({} integer), weights {} B, arena {} B, tensors {} B",
            self.total_macs,
            self.layers.len(),
            int,
            self.weight_bytes,
            self.arena_bytes,
            self.tensor_bytes
        )?;
        let split = self.layers.iter().filter(|l| l.tasks > 1).count();
        let jobs = split
            - self
                .layers
                .iter()
                .filter(|l| l.tasks > 1 && l.job.is_some_and(|j| j != l.index))
                .count();
        writeln!(
            f,
            "threads: {split} layer(s) split into tasks by NAME_run_ctx in {jobs} job(s), arena {} B with 2 or more threads",
            self.arena_ctx_bytes
        )?;
        writeln!(
            f,
            "weights: {} B in the object, {} B as an f32 model ({:.2}x smaller, {:.4} of f32)",
            self.weight_bytes,
            self.float_weight_bytes,
            self.float_weight_bytes as f64 / self.weight_bytes.max(1) as f64,
            self.weight_ratio()
        )?;
        if let Some(c) = &self.compression {
            writeln!(
                f,
                "compressed weights ({}): {} blob(s), {} B raw -> {} B stored (tables and \
                 streams), {} B saved ({:.4} of raw); decoded into {} B of scratch by {} B of code",
                c.method,
                c.blobs.len(),
                c.raw_bytes,
                c.stored_bytes,
                c.saved_bytes(),
                c.ratio(),
                c.decoded_bytes,
                c.decoder_code_bytes
            )?;
        }
        Ok(())
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Report {
    /// Weight bytes in the object over those of the f32 model (1.0 for a float model).
    pub fn weight_ratio(&self) -> f64 {
        self.weight_bytes as f64 / self.float_weight_bytes.max(1) as f64
    }

    /// The report as a JSON object (stable key order).
    pub fn to_json(&self) -> String {
        let mut o = String::from("{\n");
        o.push_str("  \"model\": ");
        json_str(&mut o, &self.model);
        o.push_str(",\n  \"target\": ");
        json_str(&mut o, &self.target);
        o.push_str(",\n  \"tier\": ");
        match &self.tier {
            Some(t) => json_str(&mut o, t),
            None => o.push_str("null"),
        }
        let _ = write!(
            o,
            ",\n  \"weight_bytes\": {},\n  \"float_weight_bytes\": {},\n  \"weight_ratio\": {:.6},\n  \"arena_bytes\": {},\n  \"arena_ctx_bytes\": {},\n  \"tensor_bytes\": {},\n  \"total_macs\": {},",
            self.weight_bytes,
            self.float_weight_bytes,
            self.weight_ratio(),
            self.arena_bytes,
            self.arena_ctx_bytes,
            self.tensor_bytes,
            self.total_macs
        );
        if let Some(c) = &self.compression {
            o.push_str("\n  \"compression\": {\"method\": ");
            json_str(&mut o, &c.method);
            let _ = write!(
                o,
                ", \"blobs\": {}, \"raw_bytes\": {}, \"stored_bytes\": {}, \"saved_bytes\": {}, \"ratio\": {:.6}, \"decoded_bytes\": {}, \"decoder_code_bytes\": {}, \"blob_list\": [",
                c.blobs.len(),
                c.raw_bytes,
                c.stored_bytes,
                c.saved_bytes(),
                c.ratio(),
                c.decoded_bytes,
                c.decoder_code_bytes
            );
            for (i, b) in c.blobs.iter().enumerate() {
                if i > 0 {
                    o.push_str(", ");
                }
                let layer = b.layer.map_or("null".to_string(), |l| l.to_string());
                let _ = write!(
                    o,
                    "{{\"layer\": {layer}, \"raw_bytes\": {}, \"stored_bytes\": {}, \"symbols\": {}, \"max_code_bits\": {}, \"offset\": {}, \"run\": {}, \"run_ctx\": {}}}",
                    b.raw_bytes,
                    b.stored_bytes,
                    b.symbols,
                    b.max_code_bits,
                    b.offset,
                    b.run,
                    b.run_ctx
                );
            }
            o.push_str("]},");
        }
        o.push_str("\n  \"layers\": [");
        for (i, l) in self.layers.iter().enumerate() {
            o.push_str(if i == 0 { "\n    {" } else { ",\n    {" });
            let _ = write!(o, "\"index\": {}, \"op\": ", l.index);
            json_str(&mut o, &l.op);
            o.push_str(", \"result\": ");
            json_str(&mut o, &l.result);
            o.push_str(", \"loc\": ");
            match &l.loc {
                Some(s) => json_str(&mut o, s),
                None => o.push_str("null"),
            }
            o.push_str(", \"kernel\": ");
            json_str(&mut o, &l.kernel);
            o.push_str(", \"inputs\": [");
            for (k, s) in l.inputs.iter().enumerate() {
                if k > 0 {
                    o.push_str(", ");
                }
                json_str(&mut o, s);
            }
            o.push_str("], \"output\": ");
            json_str(&mut o, &l.output);
            let bits: Vec<String> = l.input_bits.iter().map(|b| b.to_string()).collect();
            let _ = write!(
                o,
                ", \"input_bits\": [{}], \"output_bits\": {}, \"macs\": {}, \"dest\": ",
                bits.join(", "),
                l.output_bits,
                l.macs
            );
            json_str(&mut o, &l.dest);
            let _ = write!(
                o,
                ", \"workspace_offset\": {}, \"workspace_bytes\": {}, \"integer\": {}, \"rodata_bytes\": {}}}",
                l.workspace.0, l.workspace.1, l.integer, l.rodata_bytes
            );
            o.pop();
            o.push_str(", \"tier\": ");
            match &l.tier {
                Some(t) => json_str(&mut o, t),
                None => o.push_str("null"),
            }
            let _ = write!(o, ", \"tasks\": {}", l.tasks);
            if let Some(j) = l.job {
                let _ = write!(o, ", \"job\": {j}");
            }
            if let Some(b) = l.split_by {
                let _ = write!(o, ", \"split\": \"{b}\"");
            }
            o.push('}');
        }
        o.push_str("\n  ]\n}\n");
        o
    }
}
