//! The ONNX frontend: a `ModelProto` (float, QDQ, QOperator or QONNX) into a qcc module.
//!
//! The importer walks the graph once, in node order. Every ONNX value is either an
//! import-time constant ([`CTensor`]: initializers, `Constant`, and everything computed
//! from them by shape arithmetic — Shape, Gather, Range, ... are evaluated here and never
//! reach the IR) or an IR value. A node whose IR operands are all constants is folded
//! with the reference interpreter as soon as it is emitted, except the quantization ops
//! that carry information later passes need (`dequantize` of constant weights,
//! `fake_quant`, `trunc`).
//!
//! Op handlers live by family (`nn.rs`, `elementwise.rs`, `shape.rs`, `quant.rs`,
//! `qonnx.rs`), each with a table of `(domain, op type, opset range) -> handler` entries;
//! [`registry`] joins the tables. Before anything is imported, every node is looked up,
//! and a model with unsupported ops fails with one error listing all of them.
//!
//! Shapes are static. Symbolic input dimensions take their size from
//! [`ImportOptions::input_shapes`] (`--input-shape NAME=1,3,32,32`); a symbolic first
//! dimension without one is taken as 1, with a warning.

mod ctx;
mod elementwise;
pub mod inspect;
mod logic;
mod nn;
mod qonnx;
mod quant;
mod rnn;
mod shape;
pub mod tensor;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use onnx_protobuf::{GraphProto, Message, ModelProto, NodeProto};
use qcc_ir::interp::Tensor;
use qcc_ir::print::sanitize_name;
use qcc_ir::{ElemType, Module, TensorType};

pub use ctx::NodeCx;
use ctx::{Importer, Val};
/// The ONNX protobuf types (onnx-protobuf), for callers that build or read models.
pub use onnx_protobuf as proto;
pub use tensor::{CData, CTensor, DType};

/// What the caller knows beyond the model file.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Shapes for graph inputs (by ONNX name), overriding symbolic or fixed dimensions.
    pub input_shapes: BTreeMap<String, Vec<usize>>,
    /// Values available for graph inputs (by ONNX name). A bound input becomes a
    /// constant only where a node needs a constant (a Reshape's shape, a scale); every
    /// other use stays a run-time input.
    pub bindings: BTreeMap<String, Tensor>,
}

/// An imported model.
#[derive(Clone, Debug)]
pub struct Imported {
    pub module: Module,
    /// Things the user should know (assumed dimensions, assumed attribute defaults).
    pub warnings: Vec<String>,
    /// The ONNX name of every module input, in order.
    pub input_names: Vec<String>,
    /// The ONNX name of every module output, in order.
    pub output_names: Vec<String>,
    /// Per module input: an ONNX int64 tensor, computed as int32 inside (the object
    /// takes int64 and refuses values beyond int32, see `backend::Int64Io`).
    pub int64_inputs: Vec<bool>,
    /// Per module output: an ONNX int64 tensor computed as int32 (the object widens it).
    pub int64_outputs: Vec<bool>,
}

/// Why a model could not be imported. Every variant but `Internal` is the user's (or the
/// model's) fault and says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{what} is not a valid ONNX model: {message}")]
    Malformed { what: String, message: String },
    #[error("unsupported ops: {}. Supported: {}", list_unsupported(.ops), supported_list())]
    Unsupported {
        /// `(op type with domain and opset, node names)`, in first-appearance order.
        ops: Vec<(String, Vec<String>)>,
    },
    #[error("--input-shape for input `{input}`: {message}")]
    InputShape { input: String, message: String },
    #[error("initializer `{tensor}`: {message}")]
    Tensor { tensor: String, message: String },
    #[error("node `{node}` ({op}): {message}")]
    Node {
        node: String,
        op: String,
        message: String,
    },
    #[error("{0}")]
    Model(String),
    #[error("internal error: the imported module is invalid:\n{0}")]
    Internal(String),
}

fn list_unsupported(ops: &[(String, Vec<String>)]) -> String {
    ops.iter()
        .map(|(op, nodes)| format!("{op} (nodes: {})", nodes.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The handler of one op.
pub(crate) type Handler = fn(&mut NodeCx<'_, '_>) -> Result<(), String>;

/// One entry of the op registry.
#[derive(Clone, Copy)]
pub(crate) struct OpReg {
    /// `""` for the default ONNX domain (`ai.onnx` is read as `""`).
    pub domain: &'static str,
    pub op: &'static str,
    /// The opset versions of `domain` the handler supports (inclusive).
    pub since: i64,
    pub until: i64,
    pub handler: Handler,
}

/// The newest opset any handler supports.
pub(crate) const NEWEST_OPSET: i64 = 25;

/// The newest ONNX IR version (`ModelProto.ir_version`) qcc reads: 13, that of onnx 1.22.
pub const NEWEST_IR_VERSION: i64 = 13;

/// The most elements one tensor may have (2^32: 16 GiB of float32). Shapes beyond it are
/// rejected when imported, before anything is allocated for them.
pub const MAX_ELEMENTS: usize = 1 << 32;

/// The number of elements of `shape`, or `None` when it overflows or exceeds
/// [`MAX_ELEMENTS`].
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
}

/// A handler for `op` of `domain` from opset `since` up to [`NEWEST_OPSET`].
pub(crate) const fn op_in(
    domain: &'static str,
    op: &'static str,
    since: i64,
    handler: Handler,
) -> OpReg {
    OpReg {
        domain,
        op,
        since,
        until: NEWEST_OPSET,
        handler,
    }
}

/// A handler for `op` of the default ONNX domain from opset `since`.
pub(crate) const fn onnx_op(op: &'static str, since: i64, handler: Handler) -> OpReg {
    op_in("", op, since, handler)
}

/// Every registered op, by family.
pub(crate) fn registry() -> impl Iterator<Item = &'static OpReg> {
    [
        nn::OPS,
        elementwise::OPS,
        logic::OPS,
        rnn::OPS,
        shape::OPS,
        quant::OPS,
        qonnx::OPS,
    ]
    .into_iter()
    .flatten()
}

fn normalize_domain(d: &str) -> &str {
    if d == "ai.onnx" { "" } else { d }
}

fn find_handler(domain: &str, op: &str, version: i64) -> Option<&'static OpReg> {
    let domain = normalize_domain(domain);
    registry().find(|r| r.domain == domain && r.op == op && (r.since..=r.until).contains(&version))
}

/// Whether qcc imports `op` of `domain` at opset `version`.
pub fn is_supported(domain: &str, op: &str, version: i64) -> bool {
    find_handler(domain, op, version).is_some()
}

/// The supported ops, `domain:Op` for other domains than the default, sorted.
pub fn supported_ops() -> Vec<String> {
    let mut v: Vec<String> = registry()
        .map(|r| {
            if r.domain.is_empty() {
                r.op.to_string()
            } else {
                format!("{}:{}", r.domain, r.op)
            }
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn supported_list() -> String {
    let mut v: Vec<String> = registry()
        .filter(|r| {
            r.domain.is_empty() || r.domain == "com.microsoft" || r.domain.starts_with("qonnx")
        })
        .map(|r| {
            if r.domain.is_empty() {
                r.op.to_string()
            } else {
                format!("{}:{}", r.domain, r.op)
            }
        })
        .collect();
    v.sort();
    v.dedup();
    v.join(", ")
}

/// The opset version a model imports for `domain` (1 when it names none).
pub fn opset_version(model: &ModelProto, domain: &str) -> i64 {
    let domain = normalize_domain(domain);
    model
        .opset_import
        .iter()
        .find(|o| normalize_domain(&o.domain) == domain)
        .map_or(1, |o| o.version)
}

/// Reads and parses a model file (without importing it).
pub fn read_model(path: &Path) -> Result<ModelProto, ImportError> {
    let bytes = std::fs::read(path).map_err(|e| ImportError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let model = ModelProto::parse_from_bytes(&bytes).map_err(|e| ImportError::Malformed {
        what: path.display().to_string(),
        message: e.to_string(),
    })?;
    if model.graph.as_ref().is_none() {
        return Err(ImportError::Malformed {
            what: path.display().to_string(),
            message: "the model has no graph".into(),
        });
    }
    Ok(model)
}

/// Imports the model at `path`; external data files are looked up beside it.
pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let model = read_model(path)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    import_named(&model, path.parent(), opts, &name)
}

/// Imports a parsed model. `base_dir` is where external data files are.
pub fn import_model(
    model: &ModelProto,
    base_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    let name = model
        .graph
        .as_ref()
        .map(|g| g.name.clone())
        .unwrap_or_default();
    import_named(model, base_dir, opts, &name)
}

/// A module name: sanitized, starting with a letter or `_`.
fn module_name(s: &str) -> String {
    let n = sanitize_name(s);
    if qcc_ir::print::is_valid_module_name(&n) {
        n
    } else {
        format!("m_{n}")
    }
}

/// A node's name for messages: its ONNX name, or `OpType_index` when it has none.
pub fn node_display_name(n: &NodeProto, index: usize) -> String {
    if n.name.is_empty() {
        format!("{}_{index}", n.op_type)
    } else {
        n.name.clone()
    }
}

fn op_label(n: &NodeProto) -> String {
    let d = normalize_domain(&n.domain);
    if d.is_empty() {
        n.op_type.clone()
    } else {
        format!("{d}:{}", n.op_type)
    }
}

/// Lists every unsupported op of the graph, with its nodes.
fn check_supported(model: &ModelProto, graph: &GraphProto) -> Result<(), ImportError> {
    let mut bad: Vec<(String, Vec<String>)> = Vec::new();
    for (i, n) in graph.node.iter().enumerate() {
        let v = opset_version(model, &n.domain);
        if find_handler(&n.domain, &n.op_type, v).is_none() {
            let known =
                registry().any(|r| r.domain == normalize_domain(&n.domain) && r.op == n.op_type);
            let label = if known {
                format!("{} (opset {v})", op_label(n))
            } else {
                op_label(n)
            };
            let name = node_display_name(n, i);
            match bad.iter_mut().find(|(l, _)| *l == label) {
                Some((_, names)) => names.push(name),
                None => bad.push((label, vec![name])),
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ImportError::Unsupported { ops: bad })
    }
}

/// Rejects models newer than qcc knows: an IR version above [`NEWEST_IR_VERSION`], or a
/// default-domain opset above [`NEWEST_OPSET`] (whose ops may mean something else).
fn check_versions(model: &ModelProto) -> Result<(), ImportError> {
    if model.ir_version > NEWEST_IR_VERSION {
        return Err(ImportError::Model(format!(
            "the model's IR version is {}, newer than qcc knows (up to {NEWEST_IR_VERSION}, \
             that of onnx 1.22); save it with an older onnx, or convert it with \
             onnx.version_converter",
            model.ir_version
        )));
    }
    if model.ir_version < 0 {
        return Err(ImportError::Model(format!(
            "the model's IR version is {}, which is not a version (IR versions start at 1)",
            model.ir_version
        )));
    }
    for o in &model.opset_import {
        let d = normalize_domain(&o.domain);
        if d.is_empty() && o.version > NEWEST_OPSET {
            return Err(ImportError::Model(format!(
                "the model imports opset {} of the default ONNX domain, newer than qcc knows \
                 (up to {NEWEST_OPSET}); export it with opset {NEWEST_OPSET} or older \
                 (e.g. torch.onnx.export(..., opset_version={NEWEST_OPSET}))",
                o.version
            )));
        }
        if o.version < 1 {
            let label = if d.is_empty() {
                "the default ONNX domain"
            } else {
                d
            };
            return Err(ImportError::Model(format!(
                "the model imports opset {} of {label}; opset versions start at 1",
                o.version
            )));
        }
    }
    Ok(())
}

/// Checks that every tensor has one producer (an initializer, a graph input or one node
/// output) and that the nodes form no cycle. Returns the order to import the nodes in:
/// the file's order when it is topological (ONNX requires it), otherwise a topological
/// order that keeps the file's order where it can.
fn check_graph(graph: &GraphProto) -> Result<Vec<usize>, ImportError> {
    use std::collections::{BinaryHeap, HashMap};
    // Who produces each name: `None` for initializers and graph inputs, `Some(node)`.
    let mut producer: HashMap<&str, Option<usize>> = HashMap::new();
    let mut init_seen: HashSet<&str> = HashSet::new();
    for t in &graph.initializer {
        if !init_seen.insert(t.name.as_str()) {
            return Err(ImportError::Tensor {
                tensor: t.name.clone(),
                message: "the graph has two initializers of this name; tensor names must \
                          be unique"
                    .into(),
            });
        }
        producer.insert(t.name.as_str(), None);
    }
    let mut input_seen: HashSet<&str> = HashSet::new();
    for vi in &graph.input {
        if !input_seen.insert(vi.name.as_str()) {
            return Err(ImportError::Model(format!(
                "graph input `{}` is listed twice; input names must be unique",
                vi.name
            )));
        }
        producer.insert(vi.name.as_str(), None);
    }
    for (i, n) in graph.node.iter().enumerate() {
        for (k, o) in n.output.iter().enumerate() {
            if o.is_empty() {
                continue;
            }
            let before = if init_seen.contains(o.as_str()) {
                Some("an initializer of that name".to_string())
            } else if input_seen.contains(o.as_str()) {
                Some("a graph input of that name".to_string())
            } else if let Some(Some(j)) = producer.get(o.as_str()) {
                let other = &graph.node[*j];
                Some(format!(
                    "node `{}` ({}) produces it too",
                    node_display_name(other, *j),
                    op_label(other)
                ))
            } else {
                None
            };
            if let Some(before) = before {
                return Err(ImportError::Node {
                    node: node_display_name(n, i),
                    op: op_label(n),
                    message: format!(
                        "output {k} (`{o}`) has another producer: {before}; every tensor \
                         must have exactly one producer (rename one of them)"
                    ),
                });
            }
            producer.insert(o.as_str(), Some(i));
        }
    }
    // Kahn's algorithm, smallest node index first.
    let nn = graph.node.len();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); nn];
    let mut pending = vec![0usize; nn];
    for (i, n) in graph.node.iter().enumerate() {
        let mut deps: Vec<usize> = n
            .input
            .iter()
            .filter_map(|x| producer.get(x.as_str()).copied().flatten())
            .collect();
        deps.sort_unstable();
        deps.dedup();
        pending[i] = deps.len();
        for d in deps {
            users[d].push(i);
        }
    }
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> = (0..nn)
        .filter(|&i| pending[i] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(nn);
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &u in &users[i] {
            pending[u] -= 1;
            if pending[u] == 0 {
                ready.push(std::cmp::Reverse(u));
            }
        }
    }
    if order.len() == nn {
        return Ok(order);
    }
    // A cycle: walk from a node left over along producers that are left over too, until
    // a node repeats.
    let start = (0..nn).find(|&i| pending[i] > 0).expect("a node left over");
    let mut path = vec![start];
    let mut pos: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let cycle = loop {
        let cur = *path.last().expect("non-empty");
        let next = graph.node[cur]
            .input
            .iter()
            .filter_map(|x| producer.get(x.as_str()).copied().flatten())
            .find(|&j| pending[j] > 0)
            .expect("a node of a cycle waits on another one");
        if let Some(&p) = pos.get(&next) {
            break path[p..].to_vec();
        }
        pos.insert(next, path.len());
        path.push(next);
    };
    // `cycle` lists consumers before producers; print it in data-flow order.
    let mut names: Vec<String> = cycle
        .iter()
        .rev()
        .map(|&j| format!("`{}`", node_display_name(&graph.node[j], j)))
        .collect();
    names.push(names[0].clone());
    Err(ImportError::Model(format!(
        "the graph has a cycle: {} (each needs the one before it); ONNX graphs must be \
         acyclic",
        names.join(" -> ")
    )))
}

/// Static shape of a graph input, from its declared dims, an override or a binding.
fn input_shape(
    vi: &onnx_protobuf::ValueInfoProto,
    opts: &ImportOptions,
    warnings: &mut Vec<String>,
) -> Result<Vec<usize>, ImportError> {
    use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
    let tt = vi.type_.as_ref().and_then(|t| match &t.value {
        Some(onnx_protobuf::type_proto::Value::TensorType(tt)) => Some(tt),
        _ => None,
    });
    if let Some(s) = tt.and_then(|tt| tt.shape.as_ref()) {
        for (i, d) in s.dim.iter().enumerate() {
            // -1 is how some exporters (paddle2onnx) write a dynamic dimension; ONNX
            // Runtime takes it as one, and so does qcc.
            if let Some(Dim::DimValue(v)) = &d.value
                && *v < -1
            {
                return Err(ImportError::InputShape {
                    input: vi.name.clone(),
                    message: format!(
                        "dimension {i} is negative ({v}); dimensions are sizes (0 or more), \
                         symbolic names, or -1 for a dynamic size"
                    ),
                });
            }
        }
    }
    let declared: Option<Vec<Option<usize>>> = tt.and_then(|tt| {
        tt.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(Dim::DimValue(v)) => usize::try_from(*v).ok(),
                    _ => None,
                })
                .collect()
        })
    });
    if let Some(shape) = opts.input_shapes.get(&vi.name) {
        if let Some(decl) = &declared {
            if decl.len() != shape.len() {
                return Err(ImportError::InputShape {
                    input: vi.name.clone(),
                    message: format!(
                        "the model declares rank {} ({}), the option gives rank {} ({shape:?})",
                        decl.len(),
                        fmt_dims(decl),
                        shape.len()
                    ),
                });
            }
            for (i, (d, &s)) in decl.iter().zip(shape).enumerate() {
                if let Some(d) = d
                    && *d != s
                {
                    return Err(ImportError::InputShape {
                        input: vi.name.clone(),
                        message: format!(
                            "dimension {i} is fixed to {d} in the model ({}), the option gives {s}",
                            fmt_dims(decl)
                        ),
                    });
                }
            }
        }
        return Ok(shape.clone());
    }
    if let Some(b) = opts.bindings.get(&vi.name) {
        return Ok(b.shape.clone());
    }
    let Some(decl) = declared else {
        return Err(ImportError::InputShape {
            input: vi.name.clone(),
            message: "the model declares no shape; give one, e.g. --input-shape NAME=1,3,32,32"
                .into(),
        });
    };
    let mut shape = Vec::with_capacity(decl.len());
    for (i, d) in decl.iter().enumerate() {
        match d {
            Some(d) => shape.push(*d),
            None if i == 0 => {
                warnings.push(format!(
                    "input `{}`: symbolic first dimension taken as 1 (set it with --input-shape {}=...)",
                    vi.name, vi.name
                ));
                shape.push(1);
            }
            None => {
                return Err(ImportError::InputShape {
                    input: vi.name.clone(),
                    message: format!(
                        "dimension {i} is symbolic ({}); give the shape with --input-shape {}=D,D,...",
                        fmt_dims(&decl),
                        vi.name
                    ),
                });
            }
        }
    }
    Ok(shape)
}

fn fmt_dims(d: &[Option<usize>]) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|x| x.map_or("?".to_string(), |v| v.to_string()))
        .collect();
    format!("[{}]", parts.join(","))
}

fn input_dtype(vi: &onnx_protobuf::ValueInfoProto) -> DType {
    match vi.type_.as_ref().and_then(|t| t.value.as_ref()) {
        Some(onnx_protobuf::type_proto::Value::TensorType(tt)) => DType::from_code(tt.elem_type),
        _ => DType::Other(0),
    }
}

fn import_named(
    model: &ModelProto,
    base_dir: Option<&Path>,
    opts: &ImportOptions,
    name: &str,
) -> Result<Imported, ImportError> {
    let graph = model.graph.as_ref().ok_or_else(|| ImportError::Malformed {
        what: "the model".into(),
        message: "it has no graph".into(),
    })?;
    check_versions(model)?;
    let order = check_graph(graph)?;
    check_supported(model, graph)?;
    for k in opts.input_shapes.keys() {
        if !graph.input.iter().any(|i| &i.name == k) {
            let names: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
            return Err(ImportError::InputShape {
                input: k.clone(),
                message: format!("the model has no such input (inputs: {})", names.join(", ")),
            });
        }
    }
    let mut imp = Importer::new(Module::new(module_name(name)), base_dir);

    // Initializers (also when listed among the inputs: they are constants).
    let mut init_names = HashSet::new();
    for t in &graph.initializer {
        let c = tensor::decode(t, tensor::DataDir(base_dir)).map_err(|message| {
            ImportError::Tensor {
                tensor: t.name.clone(),
                message,
            }
        })?;
        init_names.insert(t.name.clone());
        imp.vals.insert(t.name.clone(), Val::Const(Rc::new(c)));
    }
    if !graph.sparse_initializer.is_empty() {
        return Err(ImportError::Model(
            "sparse initializers are not supported".into(),
        ));
    }

    let mut input_names = Vec::new();
    let mut int64_inputs = Vec::new();
    for vi in &graph.input {
        if init_names.contains(&vi.name) {
            continue;
        }
        let shape = input_shape(vi, opts, &mut imp.warnings)?;
        if checked_numel(&shape).is_none() {
            return Err(ImportError::InputShape {
                input: vi.name.clone(),
                message: format!(
                    "shape {shape:?} has more than 2^32 elements (or their count overflows); \
                     qcc takes tensors of at most {MAX_ELEMENTS} elements"
                ),
            });
        }
        let dtype = input_dtype(vi);
        let bound = match opts.bindings.get(&vi.name) {
            Some(t) => {
                if t.shape != shape {
                    return Err(ImportError::InputShape {
                        input: vi.name.clone(),
                        message: format!(
                            "the bound value has shape {:?}, the input {shape:?}",
                            t.shape
                        ),
                    });
                }
                Some(Rc::new(CTensor::from_tensor(t, dtype)))
            }
            None => None,
        };
        let elem = match dtype {
            DType::F32 => Some(ElemType::F32),
            // Token ids, indices: int32 inside; the object takes int64 and refuses
            // values beyond int32. A bound one (a shape, in the node tests) stays the
            // constant it was.
            DType::I64 if bound.is_none() => Some(ElemType::I32),
            d => d.int_type().map(ElemType::Int),
        };
        match elem {
            Some(elem) => {
                let vname = imp.fresh(&vi.name);
                let id = imp.m.add_input(vname, TensorType::new(elem, shape));
                input_names.push(vi.name.clone());
                int64_inputs.push(dtype == DType::I64);
                imp.vals.insert(vi.name.clone(), Val::Ir { id, bound });
            }
            None => match bound {
                // Only usable as a constant.
                Some(b) => {
                    imp.vals.insert(vi.name.clone(), Val::Const(b));
                }
                None => {
                    imp.vals.insert(
                        vi.name.clone(),
                        Val::Unusable(format!(
                            "graph input `{}` has element type {}, which qcc cannot take at run time",
                            vi.name,
                            dtype.name()
                        )),
                    );
                }
            },
        }
    }

    for i in order {
        let n = &graph.node[i];
        let version = opset_version(model, &n.domain);
        let reg = find_handler(&n.domain, &n.op_type, version).expect("checked above");
        let node_name = node_display_name(n, i);
        let fail = |message: String| ImportError::Node {
            node: node_name.clone(),
            op: op_label(n),
            message,
        };
        for a in &n.attribute {
            if !a.ref_attr_name.is_empty() {
                return Err(fail(format!(
                    "attribute `{}` refers to a function attribute; functions are not supported",
                    a.name
                )));
            }
        }
        imp.loc = node_name.clone();
        let mut cx = NodeCx::new(&mut imp, n, version, node_name.clone());
        (reg.handler)(&mut cx).map_err(fail)?;
        for (k, o) in n.output.iter().enumerate() {
            if !o.is_empty() && !imp.vals.contains_key(o) {
                return Err(fail(format!(
                    "output {k} (`{o}`) is not supported by qcc's {} import",
                    n.op_type
                )));
            }
        }
    }

    let mut output_names = Vec::new();
    let mut int64_outputs = Vec::new();
    for vi in &graph.output {
        let id = imp.output_value(&vi.name).map_err(|message| {
            ImportError::Model(format!("graph output `{}`: {message}", vi.name))
        })?;
        imp.m.outputs.push(id);
        output_names.push(vi.name.clone());
        // An int64 output (ArgMax, TopK's indices, ...) computed as int32.
        int64_outputs.push(input_dtype(vi) == DType::I64 && imp.m.ty(id).elem == ElemType::I32);
    }
    if imp.m.outputs.is_empty() {
        return Err(ImportError::Model("the graph has no outputs".into()));
    }
    imp.name_outputs(&output_names);
    let Importer {
        mut m, warnings, ..
    } = imp;
    if let Some(dce) = crate::passes::find("dce") {
        (dce.run)(&mut m).map_err(ImportError::Internal)?;
    }
    // QOperator elementwise ops arrive as dequantize -> float op -> quantize (ONNX
    // Runtime's definition); the integer rewrite groups turn them (and the float
    // activations a QOperator graph keeps between DequantizeLinear and QuantizeLinear)
    // into integer kernels: table lookups, integer add/mul between requantizes, and an
    // integer global average pool. Each rule states its bound (at most one code).
    if graph
        .node
        .iter()
        .any(|n| QOP_ELEMENTWISE.contains(&n.op_type.as_str()))
    {
        crate::rewrite::run_groups(&mut m, QOP_GROUPS, &crate::rewrite::Options::default())
            .map_err(ImportError::Internal)?;
        if let Some(dce) = crate::passes::find("dce") {
            (dce.run)(&mut m).map_err(ImportError::Internal)?;
        }
    }
    qcc_ir::verify::verify(&m).map_err(|e| ImportError::Internal(e.to_string()))?;
    Ok(Imported {
        module: m,
        warnings,
        input_names,
        output_names,
        int64_inputs,
        int64_outputs,
    })
}

/// QOperator ops imported in the float domain that the [`QOP_GROUPS`] make integer.
const QOP_ELEMENTWISE: &[&str] = &[
    "QLinearAdd",
    "QLinearMul",
    "QLinearLeakyRelu",
    "QLinearSigmoid",
    "QLinearGlobalAveragePool",
];

/// The rewrite groups run after importing a graph with [`QOP_ELEMENTWISE`] ops.
const QOP_GROUPS: &[&str] = &["lookup", "int-add", "int-pool"];

#[cfg(test)]
mod tests;
