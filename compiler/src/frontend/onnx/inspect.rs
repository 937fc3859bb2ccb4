//! `qcc inspect`: what a model holds, read from the ONNX graph itself (so it works on
//! models qcc cannot import yet): opsets, inputs and outputs with shapes, parameter count
//! and size, op counts, and the quantization already present — which tensors, how many
//! bits, per-tensor, per-channel or blocked.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::Path;

use onnx_protobuf::{ModelProto, NodeProto, ValueInfoProto};

use super::tensor::{self, CTensor, DType, DataDir};
use super::{ImportOptions, import_model, node_display_name, opset_version};

fn vi_text(vi: &ValueInfoProto) -> String {
    use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
    match vi.type_.as_ref().and_then(|t| t.value.as_ref()) {
        Some(onnx_protobuf::type_proto::Value::TensorType(tt)) => {
            let dims = match tt.shape.as_ref() {
                Some(s) => {
                    let d: Vec<String> = s
                        .dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(Dim::DimValue(v)) => v.to_string(),
                            Some(Dim::DimParam(p)) => p.clone(),
                            _ => "?".into(),
                        })
                        .collect();
                    format!("[{}]", d.join(","))
                }
                None => "(shape unknown)".into(),
            };
            format!("{} {dims}", DType::from_code(tt.elem_type).name())
        }
        _ => "(not a tensor)".into(),
    }
}

fn human_bytes(b: u64) -> String {
    if b < 10 * 1024 {
        format!("{b} B")
    } else if b < 10 * 1024 * 1024 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    }
}

/// Granularity of an ONNX scale for a tensor of `shape`.
fn granularity(scale: Option<&CTensor>, shape: Option<&[usize]>, axis: i64, block: i64) -> String {
    let Some(s) = scale else {
        return "scale not constant".into();
    };
    if block > 0 {
        return format!("blocked (block size {block}, {} scales)", s.numel());
    }
    if s.numel() == 1 {
        let v = s.data.get_f64(0);
        return format!("per-tensor (scale {v:.6})");
    }
    let ax = match shape {
        Some(sh) if axis < 0 => axis + sh.len() as i64,
        _ => axis,
    };
    format!("per-channel (axis {ax}, {} channels)", s.numel())
}

/// The report for the model at `path`.
pub fn inspect_file(path: &Path, opts: &ImportOptions) -> Result<String, super::ImportError> {
    let model = super::read_model(path)?;
    Ok(inspect(
        &model,
        path.parent(),
        opts,
        &path.display().to_string(),
    ))
}

/// The report for a parsed model.
pub fn inspect(model: &ModelProto, dir: Option<&Path>, opts: &ImportOptions, what: &str) -> String {
    let mut out = String::new();
    let Some(g) = model.graph.as_ref() else {
        return format!("{what}: no graph\n");
    };
    let _ = writeln!(
        out,
        "model: {what} (IR version {}, producer {} {})",
        model.ir_version, model.producer_name, model.producer_version
    );
    let opsets: Vec<String> = model
        .opset_import
        .iter()
        .map(|o| {
            let d = if o.domain.is_empty() {
                "ai.onnx"
            } else {
                &o.domain
            };
            format!("{d} {}", o.version)
        })
        .collect();
    let _ = writeln!(out, "opsets: {}", opsets.join(", "));

    // Initializers.
    let mut inits: HashMap<&str, CTensor> = HashMap::new();
    let mut params = 0u64;
    let mut bytes = 0u64;
    let mut undecodable = 0;
    for t in &g.initializer {
        let n: u64 = t.dims.iter().map(|&d| d.max(0) as u64).product();
        params += n;
        bytes += (n * DType::from_code(t.data_type).bits() as u64).div_ceil(8);
        match tensor::decode(t, DataDir(dir)) {
            Ok(c) => {
                inits.insert(t.name.as_str(), c);
            }
            Err(_) => undecodable += 1,
        }
    }
    let _ = writeln!(out, "inputs:");
    for vi in g
        .input
        .iter()
        .filter(|v| !inits.contains_key(v.name.as_str()))
    {
        let _ = writeln!(out, "  {}: {}", vi.name, vi_text(vi));
    }
    let _ = writeln!(out, "outputs:");
    for vi in &g.output {
        let _ = writeln!(out, "  {}: {}", vi.name, vi_text(vi));
    }
    let _ = writeln!(
        out,
        "parameters: {params} in {} initializers, {}{}",
        g.initializer.len(),
        human_bytes(bytes),
        if undecodable > 0 {
            format!(" ({undecodable} could not be read)")
        } else {
            String::new()
        }
    );

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for n in &g.node {
        let d = if n.domain.is_empty() || n.domain == "ai.onnx" {
            String::new()
        } else {
            format!("{}:", n.domain)
        };
        *counts.entry(format!("{d}{}", n.op_type)).or_default() += 1;
    }
    let _ = writeln!(out, "ops ({} nodes):", g.node.len());
    for (op, c) in &counts {
        let mark = {
            let (d, o) = op.rsplit_once(':').unwrap_or(("", op));
            let v = opset_version(model, d);
            if super::is_supported(d, o, v) {
                ""
            } else {
                "  (unsupported)"
            }
        };
        let _ = writeln!(out, "  {op:<40} {c}{mark}");
    }

    let quant = quantization(model, &inits);
    if quant.is_empty() {
        let _ = writeln!(out, "quantization: none");
    } else {
        let _ = writeln!(out, "quantization:");
        for q in quant {
            let _ = writeln!(out, "  {q}");
        }
    }

    match import_model(model, dir, opts) {
        Ok(imp) => {
            let _ = writeln!(
                out,
                "import: ok ({} IR nodes, {} constants)",
                imp.module.nodes.len(),
                imp.module.values.iter().filter(|v| v.is_const()).count()
            );
            for w in imp.warnings {
                let _ = writeln!(out, "  warning: {w}");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "import: fails: {e}");
        }
    }
    out
}

fn int_attr(n: &NodeProto, name: &str, default: i64) -> i64 {
    n.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.i)
}

fn str_attr(n: &NodeProto, name: &str) -> Option<String> {
    n.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// One line per quantized tensor or quantizer.
fn quantization(model: &ModelProto, inits: &HashMap<&str, CTensor>) -> Vec<String> {
    let Some(g) = model.graph.as_ref() else {
        return vec![];
    };
    let mut lines = Vec::new();
    let role = |name: &str| {
        if inits.contains_key(name) {
            "weight"
        } else {
            "activation"
        }
    };
    let get = |n: &NodeProto, i: usize| n.input.get(i).and_then(|s| inits.get(s.as_str()));
    let shape_of = |n: &NodeProto, i: usize| get(n, i).map(|c| c.shape.clone());
    for (idx, n) in g.node.iter().enumerate() {
        let name = node_display_name(n, idx);
        let input = |i: usize| n.input.get(i).cloned().unwrap_or_default();
        let bits_of = |d: DType| -> String {
            match d.int_type() {
                Some(t) => format!("{}{}", if t.signed { "int" } else { "uint" }, t.bits),
                None => d.name(),
            }
        };
        match n.op_type.as_str() {
            "QuantizeLinear" => {
                let zp = get(n, 2);
                let d = zp.map_or(
                    DType::from_code(int_attr(n, "output_dtype", 2) as i32),
                    |z| z.dtype,
                );
                let out = n.output.first().cloned().unwrap_or_default();
                lines.push(format!(
                    "{} `{out}` ({}): {}, {}",
                    role(&input(0)),
                    name,
                    bits_of(d),
                    granularity(
                        get(n, 1),
                        None,
                        int_attr(n, "axis", 1),
                        int_attr(n, "block_size", 0)
                    )
                ));
            }
            "DequantizeLinear" => {
                let x = input(0);
                let d = inits
                    .get(x.as_str())
                    .map(|c| c.dtype)
                    .or_else(|| get(n, 2).map(|z| z.dtype));
                if let Some(c) = inits.get(x.as_str()) {
                    lines.push(format!(
                        "weight `{x}` ({name}): {}, {}",
                        d.map_or("?".into(), bits_of),
                        granularity(
                            get(n, 1),
                            Some(&c.shape),
                            int_attr(n, "axis", 1),
                            int_attr(n, "block_size", 0)
                        )
                    ));
                }
            }
            "QLinearConv" | "QLinearMatMul" | "QGemm" | "ConvInteger" | "MatMulInteger" => {
                let (wi, si) = match n.op_type.as_str() {
                    "ConvInteger" | "MatMulInteger" => (1, usize::MAX),
                    _ => (3, 4),
                };
                if let Some(w) = get(n, wi) {
                    lines.push(format!(
                        "weight `{}` ({name}, {}): {}, {}",
                        input(wi),
                        n.op_type,
                        bits_of(w.dtype),
                        if si == usize::MAX {
                            "integer (no scale)".into()
                        } else {
                            let axis =
                                if n.op_type == "QLinearConv" || int_attr(n, "transB", 0) != 0 {
                                    0
                                } else {
                                    1
                                };
                            granularity(get(n, si), shape_of(n, wi).as_deref(), axis, 0)
                        }
                    ));
                }
            }
            "DynamicQuantizeLinear" => lines.push(format!(
                "{} `{}` ({name}, DynamicQuantizeLinear): uint8, scale and zero point computed at run time",
                role(&input(0)),
                input(0)
            )),
            "DynamicQuantizeMatMul" => {
                if let Some(w) = get(n, 1) {
                    lines.push(format!(
                        "weight `{}` ({name}, DynamicQuantizeMatMul): {}, {}; activation quantized at run time",
                        input(1),
                        bits_of(w.dtype),
                        granularity(get(n, 2), shape_of(n, 1).as_deref(), 1, 0)
                    ));
                }
            }
            "DynamicQuantizeLSTM" => {
                for (wi, si) in [(1, 8), (2, 10)] {
                    if let Some(w) = get(n, wi) {
                        let per = match get(n, si).map(|c| c.shape.len()) {
                            Some(2) => "per channel (per direction)",
                            Some(_) => "per tensor (per direction)",
                            None => "scale not a constant",
                        };
                        lines.push(format!(
                            "weight `{}` ({name}, DynamicQuantizeLSTM): {}, {per}; activations quantized at run time",
                            input(wi),
                            bits_of(w.dtype),
                        ));
                    }
                }
            }
            "Quant" | "IntQuant" => {
                let bits = get(n, 3)
                    .and_then(|c| c.scalar_f64())
                    .map_or("?".into(), |b| format!("{b}"));
                let signed = int_attr(n, "signed", 1) != 0;
                let narrow = n.attribute.iter().find(|a| a.name == "narrow").map(|a| a.i);
                lines.push(format!(
                    "{} `{}` ({name}, Quant): {bits}-bit {}, narrow {}, rounding {}, {}",
                    role(&input(0)),
                    input(0),
                    if signed { "signed" } else { "unsigned" },
                    narrow.map_or("missing".into(), |v| v.to_string()),
                    str_attr(n, "rounding_mode").unwrap_or_else(|| "ROUND".into()),
                    granularity(get(n, 1), shape_of(n, 0).as_deref(), 1, 0)
                ));
            }
            "BipolarQuant" => lines.push(format!(
                "{} `{}` ({name}, BipolarQuant): 1-bit bipolar, {}",
                role(&input(0)),
                input(0),
                granularity(get(n, 1), shape_of(n, 0).as_deref(), 1, 0)
            )),
            "Trunc" => {
                let b = |i| {
                    get(n, i)
                        .and_then(|c: &CTensor| c.scalar_f64())
                        .map_or("?".into(), |v| v.to_string())
                };
                let out_i = if n.input.len() >= 6 { 5 } else { 4 };
                lines.push(format!(
                    "activation `{}` ({name}, Trunc): {} -> {} bits, rounding {}",
                    input(0),
                    b(3),
                    b(out_i),
                    str_attr(n, "rounding_mode").unwrap_or_else(|| "FLOOR".into())
                ));
            }
            _ => {}
        }
    }
    lines
}
