//! Hostile input: hand-made malformed ONNX models, each fed to the `qcc` binary.
//!
//! Every model is built here with the protobuf types the importer reads (nothing binary
//! is committed). Each must make `qcc compile` exit with status 1 (an error, not a panic
//! or a signal) within a time limit, with a message that names what is wrong: the node,
//! the initializer, the input, the flag or the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qcc::frontend::onnx::proto::{
    self, AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    SparseTensorProto, StringStringEntryProto, TensorProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataLocation,
};

/// How long one `qcc` run may take before the test calls it a hang.
const TIMEOUT: Duration = Duration::from_secs(60);

fn temp_root() -> PathBuf {
    let d = std::env::temp_dir().join(format!("qcc-malformed-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("a temporary folder");
    d
}

/// Runs `qcc ARGS` with a time limit; returns (exit code, stderr). A run past the limit
/// is killed and reported as a hang.
fn qcc_timed(args: &[String], dir: &Path) -> Result<(Option<i32>, String), String> {
    let err_path = dir.join("stderr.txt");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_qcc"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("run qcc");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for qcc") {
            let text = std::fs::read_to_string(&err_path).unwrap_or_default();
            return Ok((status.code(), text));
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("qcc {args:?} ran past {TIMEOUT:?} (a hang)"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- building models ----

fn dim(d: i64) -> proto::tensor_shape_proto::Dimension {
    let mut x = proto::tensor_shape_proto::Dimension::new();
    x.set_dim_value(d);
    x
}

fn vi(name: &str, elem: i32, dims: &[i64]) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    let tt = v.type_.mut_or_insert_default().mut_tensor_type();
    tt.elem_type = elem;
    let shape = tt.shape.mut_or_insert_default();
    for &d in dims {
        shape.dim.push(dim(d));
    }
    v
}

fn node(op: &str, name: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.name = name.into();
    n.input = ins.iter().map(|s| s.to_string()).collect();
    n.output = outs.iter().map(|s| s.to_string()).collect();
    n
}

fn f32_init(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = 1;
    t.dims = dims.to_vec();
    t.float_data = v.to_vec();
    t
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

/// `y = Relu(x)`, x: float[1,4]; opset 17, IR version 8.
fn relu_model() -> ModelProto {
    model(
        vec![node("Relu", "relu", &["x"], &["y"])],
        vec![vi("x", 1, &[1, 4])],
        vec![],
        &["y"],
    )
}

fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
    outputs: &[&str],
) -> ModelProto {
    let mut g = GraphProto::new();
    g.name = "g".into();
    g.node = nodes;
    g.input = inputs;
    g.initializer = inits;
    for o in outputs {
        g.output.push(vi(o, 1, &[]));
    }
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut op = OperatorSetIdProto::new();
    op.version = 17;
    m.opset_import.push(op);
    m.graph = Some(g).into();
    m
}

/// `y = Add(x, w)` with initializer `w` (x: float[1,4]).
fn add_init(w: TensorProto) -> ModelProto {
    model(
        vec![node("Add", "add", &["x", "w"], &["y"])],
        vec![vi("x", 1, &[1, 4])],
        vec![w],
        &["y"],
    )
}

fn external(w: &mut TensorProto, entries: &[(&str, &str)]) {
    w.float_data.clear();
    w.data_location = DataLocation::EXTERNAL.into();
    for (k, v) in entries {
        let mut e = StringStringEntryProto::new();
        e.key = k.to_string();
        e.value = v.to_string();
        w.external_data.push(e);
    }
}

fn bytes(m: &ModelProto) -> Vec<u8> {
    m.write_to_bytes().expect("serialize the model")
}

fn i64_init(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = 7;
    t.dims = dims.to_vec();
    t.int64_data = v.to_vec();
    t
}

/// An initializer of ONNX type `dtype` held in `int32_data` (8/16/32-bit integers).
fn i32_init(name: &str, dtype: i32, dims: &[i64], v: &[i32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = dtype;
    t.dims = dims.to_vec();
    t.int32_data = v.to_vec();
    t
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

fn str_attr(name: &str, s: &str) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::STRING.into();
    a.s = s.as_bytes().to_vec();
    a
}

fn tensor_attr(name: &str, t: Option<TensorProto>) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::TENSOR.into();
    a.t = t.into();
    a
}

/// `x`: float[1,4], the usual run-time input.
fn x4() -> ValueInfoProto {
    vi("x", 1, &[1, 4])
}

/// One node `n` of type `op` (output `y`, the graph output) with attributes, over the
/// given graph inputs and initializers.
fn one(
    op: &str,
    ins: &[&str],
    attrs: Vec<AttributeProto>,
    inputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
) -> ModelProto {
    let mut n = node(op, "n", ins, &["y"]);
    n.attribute = attrs;
    model(vec![n], inputs, inits, &["y"])
}

/// The model with default-domain opset `v`.
fn opset(mut m: ModelProto, v: i64) -> ModelProto {
    m.opset_import[0].version = v;
    m
}

/// The model with node `n` in `domain` (at opset 1 of it, as a model that names none).
fn in_domain(mut m: ModelProto, domain: &str) -> ModelProto {
    let g = m.graph.as_mut().unwrap();
    for n in &mut g.node {
        if n.name == "n" {
            n.domain = domain.into();
        }
    }
    m
}

/// The model with node `n` listing outputs `outs`.
fn outputs(mut m: ModelProto, outs: &[&str]) -> ModelProto {
    let g = m.graph.as_mut().unwrap();
    let n = g.node.iter_mut().find(|n| n.name == "n").unwrap();
    n.output = outs.iter().map(|s| s.to_string()).collect();
    m
}

/// The model with `nodes` run before node `n`.
fn before(mut m: ModelProto, nodes: Vec<NodeProto>) -> ModelProto {
    let g = m.graph.as_mut().unwrap();
    let mut all = nodes;
    all.append(&mut g.node);
    g.node = all;
    m
}

/// `Constant` and `ConstantOfShape` nodes that make `out`, `len` float zeros, at import.
fn zeros(out: &str, len: i64) -> Vec<NodeProto> {
    let mut c = node("Constant", "zeros_len", &[], &["zeros_shape"]);
    c.attribute.push(ints_attr("value_ints", &[len]));
    let z = node("ConstantOfShape", "zeros", &["zeros_shape"], &[out]);
    vec![c, z]
}

/// An importer error at node `n`: the message names the node and its op (`label`, with
/// the domain for other domains than the default) and holds `words`.
fn at_n(name: &'static str, label: &str, m: ModelProto, words: &[&str]) -> Case {
    let mut c = case("importer error", name, m, words);
    c.expect.insert(0, format!("node `n` ({label})"));
    c
}

/// `Conv(x, w)`, x: float[1,1,3,3] (or `x_dims`), w: float `w_dims` of 0.5.
fn conv(attrs: Vec<AttributeProto>, x_dims: &[i64], w_dims: &[i64]) -> ModelProto {
    let n: i64 = w_dims.iter().product();
    one(
        "Conv",
        &["x", "w"],
        attrs,
        vec![vi("x", 1, x_dims)],
        vec![f32_init("w", w_dims, &vec![0.5; n as usize])],
    )
}

/// `BatchNormalization(x, scale, B, mean, var)`, x: float[1,2,2,2].
fn batch_norm(attrs: Vec<AttributeProto>) -> ModelProto {
    one(
        "BatchNormalization",
        &["x", "scale", "B", "mean", "var"],
        attrs,
        vec![vi("x", 1, &[1, 2, 2, 2])],
        ["scale", "B", "mean", "var"]
            .iter()
            .map(|n| f32_init(n, &[2], &[1.0, 1.0]))
            .collect(),
    )
}

/// `Resize(x, roi, scales, sizes)` over x: float[1,1,2,2]; `ins` names the inputs after
/// x (`""` for absent ones).
fn resize(ins: &[&str], attrs: Vec<AttributeProto>, inits: Vec<TensorProto>) -> ModelProto {
    let mut all = vec!["x"];
    all.extend_from_slice(ins);
    one(
        "Resize",
        &all,
        attrs,
        vec![vi("x", 1, &[1, 1, 2, 2])],
        inits,
    )
}

const QONNX: &str = "qonnx.custom_op.general";

/// QONNX `Quant(x, s, z, b)` with the given scale, zero point, bit-width and attributes
/// (signed = 1 and narrow = 0 unless given).
fn qonnx_quant(s: f32, z: f32, b: TensorProto, mut attrs: Vec<AttributeProto>) -> ModelProto {
    for (k, v) in [("signed", 1), ("narrow", 0)] {
        if !attrs.iter().any(|a| a.name == k) {
            attrs.push(int_attr(k, v));
        }
    }
    in_domain(
        one(
            "Quant",
            &["x", "s", "z", "b"],
            attrs,
            vec![x4()],
            vec![f32_init("s", &[], &[s]), f32_init("z", &[], &[z]), b],
        ),
        QONNX,
    )
}

/// `DequantizeLinear(w, s[, z])` of w: int8[2,4].
fn dq(s: TensorProto, z: Option<TensorProto>, attrs: Vec<AttributeProto>) -> ModelProto {
    let mut inits = vec![i32_init("w", 3, &[2, 4], &[1; 8]), s];
    let ins: &[&str] = if z.is_some() {
        &["w", "s", "z"]
    } else {
        &["w", "s"]
    };
    inits.extend(z);
    one("DequantizeLinear", ins, attrs, vec![], inits)
}

/// `QLinearConv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale,
/// y_zero_point, b)` of x: uint8[1,1,3,3], 1x1 int8 weights, scales 0.1; each of `edit`
/// replaces the initializer of its name.
fn qconv(edit: Vec<TensorProto>) -> ModelProto {
    let mut inits = vec![
        f32_init("xs", &[], &[0.1]),
        i32_init("xz", 2, &[], &[0]),
        i32_init("w", 3, &[1, 1, 1, 1], &[1]),
        f32_init("ws", &[], &[0.1]),
        i32_init("wz", 3, &[], &[0]),
        f32_init("ys", &[], &[0.1]),
        i32_init("yz", 2, &[], &[0]),
        i32_init("b", 6, &[1], &[0]),
    ];
    for t in edit {
        let k = inits.iter().position(|i| i.name == t.name).unwrap();
        inits[k] = t;
    }
    one(
        "QLinearConv",
        &["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
        vec![],
        vec![vi("x", 2, &[1, 1, 3, 3])],
        inits,
    )
}

/// `com.microsoft` `QGemm(a, a_scale, a_zero_point, b, b_scale, b_zero_point[, c])` of
/// a: uint8[1,4] and uint8 weights `b`.
fn qgemm(b: TensorProto, c: Option<TensorProto>) -> ModelProto {
    let mut ins = vec!["a", "as", "az", "b", "bs", "bz"];
    let mut inits = vec![
        f32_init("as", &[], &[0.1]),
        i32_init("az", 2, &[], &[0]),
        b,
        f32_init("bs", &[], &[0.1]),
        i32_init("bz", 2, &[], &[0]),
    ];
    if let Some(c) = c {
        ins.push("c");
        inits.push(c);
    }
    in_domain(
        one("QGemm", &ins, vec![], vec![vi("a", 2, &[1, 4])], inits),
        "com.microsoft",
    )
}

/// `com.microsoft` `QLinearConcat(y_scale, y_zero_point, x, x_scale, x_zero_point, ...)`
/// with `ins` as inputs, x: uint8[1,4].
fn qconcat(ins: &[&str], attrs: Vec<AttributeProto>) -> ModelProto {
    in_domain(
        one(
            "QLinearConcat",
            ins,
            attrs,
            vec![vi("x", 2, &[1, 4])],
            vec![
                f32_init("ys", &[], &[0.1]),
                i32_init("yz", 2, &[], &[0]),
                f32_init("xs", &[], &[0.1]),
                i32_init("xz", 2, &[], &[0]),
            ],
        ),
        "com.microsoft",
    )
}

// ---- the cases ----

/// One malformed input: a kind (for the README table), the model file's bytes, files to
/// put beside it, extra `qcc compile` flags and the phrases the error must contain.
struct Case {
    kind: &'static str,
    name: &'static str,
    model: Vec<u8>,
    /// The model's file name (default `model.onnx`).
    file: &'static str,
    setup: Option<fn(&Path)>,
    flags: Vec<&'static str>,
    expect: Vec<String>,
}

fn case(kind: &'static str, name: &'static str, m: ModelProto, expect: &[&str]) -> Case {
    Case {
        kind,
        name,
        model: bytes(&m),
        file: "model.onnx",
        setup: None,
        flags: vec![],
        expect: expect.iter().map(|e| e.to_string()).collect(),
    }
}

impl Case {
    fn flags(mut self, f: &[&'static str]) -> Case {
        self.flags = f.to_vec();
        self
    }
    fn setup(mut self, f: fn(&Path)) -> Case {
        self.setup = Some(f);
        self
    }
    fn file(mut self, f: &'static str) -> Case {
        self.file = f;
        self
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();

    // -- the file itself --
    let digits = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/models/digits_cnn.onnx"),
    )
    .expect("a committed model");
    let mut c = case("not a model", "empty file", relu_model(), &["no graph"]);
    c.model = vec![];
    v.push(c);
    let mut c = case(
        "not a model",
        "random bytes",
        relu_model(),
        &["is not a valid ONNX model"],
    );
    c.model = b"\xff\xff\xff\xff\x0fnot a protobuf at all".to_vec();
    v.push(c);
    let mut c = case(
        "not a model",
        "truncated model",
        relu_model(),
        &["is not a valid ONNX model"],
    );
    c.model = digits[..digits.len() / 2].to_vec();
    v.push(c);
    let mut m = relu_model();
    m.graph = protobuf::MessageField::none();
    v.push(case("not a model", "no graph", m, &["no graph"]));
    v.push(
        case(
            "not a model",
            "wrong extension",
            relu_model(),
            &["expected an ONNX model (.onnx)"],
        )
        .file("model.txt"),
    );
    let mut c = case(
        "not a model",
        "missing file",
        relu_model(),
        &["cannot read", "absent.onnx"],
    );
    c.flags = vec![];
    c.file = "absent.onnx";
    c.model = vec![];
    v.push(c);

    // -- versions --
    let mut m = relu_model();
    m.ir_version = 99;
    v.push(case(
        "version",
        "IR version 99",
        m,
        &["IR version is 99", "up to 13"],
    ));
    let mut m = relu_model();
    m.ir_version = -1;
    v.push(case(
        "version",
        "negative IR version",
        m,
        &["IR version is -1"],
    ));
    let mut m = relu_model();
    m.opset_import[0].version = 99;
    v.push(case("version", "opset 99", m, &["opset 99", "up to 25"]));
    let mut m = relu_model();
    m.opset_import[0].version = 0;
    v.push(case("version", "opset 0", m, &["opset 0"]));

    // -- dimensions --
    let zero = model(
        vec![node("Relu", "relu", &["x"], &["y"])],
        vec![vi("x", 1, &[1, 0])],
        vec![],
        &["y"],
    );
    v.push(case(
        "dimension",
        "zero-sized input",
        zero,
        &["no elements", "f32[1,0]"],
    ));
    let mut x = vi("x", 1, &[1, 4]);
    x.type_
        .as_mut()
        .unwrap()
        .mut_tensor_type()
        .shape
        .as_mut()
        .unwrap()
        .dim[1]
        .set_dim_param("n".into());
    let sym = model(
        vec![node("Relu", "relu", &["x"], &["y"])],
        vec![x],
        vec![],
        &["y"],
    );
    v.push(
        case("dimension", "zero via --input-shape", sym, &["no elements"])
            .flags(&["--input-shape", "x=1,0"]),
    );
    let neg = model(
        vec![node("Relu", "relu", &["x"], &["y"])],
        vec![vi("x", 1, &[1, -4])],
        vec![],
        &["y"],
    );
    v.push(case(
        "dimension",
        "negative input dimension",
        neg,
        &["input `x`", "negative (-4)"],
    ));
    let huge = model(
        vec![node("Relu", "relu", &["x"], &["y"])],
        vec![vi("x", 1, &[1 << 40])],
        vec![],
        &["y"],
    );
    v.push(case(
        "dimension",
        "2^40 input",
        huge,
        &["input `x`", "more than 2^32 elements"],
    ));
    let overflow = model(
        vec![node("Relu", "relu", &["x"], &["y"])],
        vec![vi("x", 1, &[1 << 31, 1 << 31, 1 << 31])],
        vec![],
        &["y"],
    );
    v.push(case(
        "byte size overflow",
        "input element count overflows",
        overflow,
        &["input `x`", "overflows"],
    ));
    let mut w = f32_init("w", &[1, 4], &[0.0; 4]);
    w.dims = vec![1, -2];
    v.push(case(
        "dimension",
        "negative initializer dimension",
        add_init(w),
        &["initializer `w`", "negative"],
    ));
    let mut w = f32_init("w", &[], &[]);
    w.dims = vec![1 << 62, 1 << 62];
    v.push(case(
        "byte size overflow",
        "initializer element count overflows",
        add_init(w),
        &["initializer `w`", "overflows"],
    ));
    let mut w = f32_init("w", &[], &[]);
    w.dims = vec![1 << 20, 1 << 20, 1 << 20];
    v.push(case(
        "dimension",
        "2^60-element initializer",
        add_init(w),
        &["initializer `w`", "more than 2^32"],
    ));
    // Expand to [2^20, 2^20]: the importer refuses to make the shape.
    let mut shape = TensorProto::new();
    shape.name = "shape".into();
    shape.data_type = 7;
    shape.dims = vec![2];
    shape.int64_data = vec![1 << 20, 1 << 20];
    let expand = model(
        vec![node("Expand", "expand", &["x", "shape"], &["y"])],
        vec![vi("x", 1, &[1, 1])],
        vec![shape],
        &["y"],
    );
    v.push(case(
        "dimension",
        "Expand to 2^40 elements",
        expand,
        &["node `expand` (Expand)", "too large"],
    ));

    // -- graph structure --
    let cycle = model(
        vec![
            node("Relu", "a", &["b_out"], &["a_out"]),
            node("Relu", "b", &["a_out"], &["b_out"]),
        ],
        vec![vi("x", 1, &[1, 4])],
        vec![],
        &["a_out"],
    );
    v.push(case(
        "cycle",
        "two-node cycle",
        cycle,
        &["cycle", "`a`", "`b`"],
    ));
    let self_loop = model(
        vec![
            node("Relu", "first", &["x"], &["h"]),
            node("Add", "loop", &["h", "z"], &["z"]),
        ],
        vec![vi("x", 1, &[1, 4])],
        vec![],
        &["z"],
    );
    v.push(case(
        "cycle",
        "node reads its own output",
        self_loop,
        &["cycle", "`loop` -> `loop`"],
    ));
    let three = model(
        vec![
            node("Add", "p", &["x", "r_out"], &["p_out"]),
            node("Relu", "q", &["p_out"], &["q_out"]),
            node("Relu", "r", &["q_out"], &["r_out"]),
        ],
        vec![vi("x", 1, &[1, 4])],
        vec![],
        &["q_out"],
    );
    v.push(case(
        "cycle",
        "three-node cycle",
        three,
        &["cycle", "`p`", "`q`", "`r`"],
    ));
    let two = model(
        vec![
            node("Relu", "first", &["x"], &["y"]),
            node("Sigmoid", "second", &["x"], &["y"]),
        ],
        vec![vi("x", 1, &[1, 4])],
        vec![],
        &["y"],
    );
    v.push(case(
        "several producers",
        "two nodes produce one tensor",
        two,
        &[
            "node `second` (Sigmoid)",
            "node `first` (Relu) produces it too",
        ],
    ));
    let over_init = model(
        vec![node("Relu", "relu", &["x"], &["w"])],
        vec![vi("x", 1, &[1, 4])],
        vec![f32_init("w", &[1, 4], &[0.0; 4])],
        &["w"],
    );
    v.push(case(
        "several producers",
        "node output is an initializer",
        over_init,
        &["node `relu` (Relu)", "an initializer of that name"],
    ));
    let over_input = model(
        vec![node("Relu", "relu", &["x"], &["x"])],
        vec![vi("x", 1, &[1, 4])],
        vec![],
        &["x"],
    );
    v.push(case(
        "several producers",
        "node output is a graph input",
        over_input,
        &["node `relu` (Relu)", "a graph input of that name"],
    ));
    let dup_init = model(
        vec![node("Add", "add", &["x", "w"], &["y"])],
        vec![vi("x", 1, &[1, 4])],
        vec![
            f32_init("w", &[1, 4], &[0.0; 4]),
            f32_init("w", &[1, 4], &[1.0; 4]),
        ],
        &["y"],
    );
    v.push(case(
        "several producers",
        "two initializers of one name",
        dup_init,
        &["initializer `w`", "two initializers"],
    ));
    let dup_input = model(
        vec![node("Relu", "relu", &["x"], &["y"])],
        vec![vi("x", 1, &[1, 4]), vi("x", 1, &[1, 4])],
        vec![],
        &["y"],
    );
    v.push(case(
        "several producers",
        "graph input listed twice",
        dup_input,
        &["graph input `x`", "listed twice"],
    ));
    let missing = model(
        vec![node("Add", "add", &["x", "nowhere"], &["y"])],
        vec![vi("x", 1, &[1, 4])],
        vec![],
        &["y"],
    );
    v.push(case(
        "graph",
        "input from nowhere",
        missing,
        &["node `add` (Add)", "`nowhere`", "not produced"],
    ));
    let mut m = relu_model();
    m.graph.as_mut().unwrap().output[0].name = "z".into();
    v.push(case(
        "graph",
        "output nobody produces",
        m,
        &["graph output `z`", "no node produces it"],
    ));
    let mut m = relu_model();
    m.graph.as_mut().unwrap().output.clear();
    v.push(case("graph", "no outputs", m, &["no outputs"]));
    let mut m = relu_model();
    m.graph.as_mut().unwrap().node[0].op_type = "FrobnicateV2".into();
    v.push(case(
        "importer error",
        "unsupported op",
        m,
        &["unsupported ops: FrobnicateV2 (nodes: relu)"],
    ));
    let mut m = model(
        vec![node("HardSwish", "hswish", &["x"], &["y"])],
        vec![vi("x", 1, &[1, 4])],
        vec![],
        &["y"],
    );
    m.opset_import[0].version = 13;
    v.push(case(
        "importer error",
        "op too new for the model's opset",
        m,
        &["HardSwish (opset 13)", "hswish"],
    ));
    let mut m = relu_model();
    m.graph
        .as_mut()
        .unwrap()
        .sparse_initializer
        .push(SparseTensorProto::new());
    v.push(case(
        "importer error",
        "sparse initializer",
        m,
        &["sparse initializers are not supported"],
    ));
    let mut m = relu_model();
    let mut a = int_attr("alpha", 0);
    a.ref_attr_name = "outer".into();
    m.graph.as_mut().unwrap().node[0].attribute.push(a);
    v.push(case(
        "importer error",
        "function attribute reference",
        m,
        &["node `relu` (Relu)", "refers to a function attribute"],
    ));
    let m = model(
        vec![node("Add", "add", &["x"], &["y"])],
        vec![vi("x", 1, &[1, 4])],
        vec![],
        &["y"],
    );
    v.push(case(
        "importer error",
        "missing node input",
        m,
        &["node `add` (Add)", "input 1 is missing"],
    ));
    let mut gemm = node("Gemm", "gemm", &["x", "w"], &["y"]);
    let mut a = AttributeProto::new();
    a.name = "transB".into();
    a.type_ = AttributeType::STRING.into();
    a.s = b"yes".to_vec();
    gemm.attribute.push(a);
    let m = model(
        vec![gemm],
        vec![vi("x", 1, &[1, 4])],
        vec![f32_init("w", &[4, 2], &[0.5; 8])],
        &["y"],
    );
    v.push(case(
        "importer error",
        "attribute of the wrong type",
        m,
        &[
            "node `gemm` (Gemm)",
            "attribute `transB` must be an integer",
        ],
    ));
    let mut training = TensorProto::new();
    training.name = "train".into();
    training.data_type = 9;
    training.int32_data = vec![1];
    let m = model(
        vec![node("Dropout", "drop", &["x", "", "train"], &["y"])],
        vec![vi("x", 1, &[1, 4])],
        vec![training],
        &["y"],
    );
    v.push(case(
        "importer error",
        "unsupported attribute value",
        m,
        &["node `drop` (Dropout)", "training_mode"],
    ));
    let m = model(
        vec![node("Relu", "relu", &["x"], &["y"])],
        vec![{
            let mut x = vi("x", 1, &[]);
            x.type_ = protobuf::MessageField::none();
            x
        }],
        vec![],
        &["y"],
    );
    v.push(case(
        "importer error",
        "input without a type",
        m,
        &["input `x`", "declares no shape"],
    ));
    let mut x = vi("x", 1, &[1, 4]);
    x.type_
        .as_mut()
        .unwrap()
        .mut_tensor_type()
        .shape
        .as_mut()
        .unwrap()
        .dim[1]
        .set_dim_param("n".into());
    let m = model(
        vec![node("Relu", "relu", &["x"], &["y"])],
        vec![x],
        vec![],
        &["y"],
    );
    v.push(case(
        "importer error",
        "symbolic inner dimension",
        m,
        &["input `x`", "dimension 1 is symbolic"],
    ));
    v.push(
        case(
            "flag",
            "--input-shape of no input",
            relu_model(),
            &["--input-shape", "`nope`", "no such input"],
        )
        .flags(&["--input-shape", "nope=1,4"]),
    );
    v.push(
        case(
            "flag",
            "--input-shape of another rank",
            relu_model(),
            &["--input-shape", "`x`", "rank 2"],
        )
        .flags(&["--input-shape", "x=1,4,1"]),
    );
    v.push(
        case(
            "flag",
            "--input-shape against a fixed dim",
            relu_model(),
            &["--input-shape", "fixed to 4"],
        )
        .flags(&["--input-shape", "x=1,5"]),
    );
    v.push(
        case(
            "flag",
            "--input-shape malformed",
            relu_model(),
            &["--input-shape", "non-negative integers"],
        )
        .flags(&["--input-shape", "x=1,-4"]),
    );
    let m = model(
        vec![node("Relu", "relu", &["x"], &["y"])],
        vec![vi("x", 8, &[1, 4])],
        vec![],
        &["y"],
    );
    v.push(case(
        "importer error",
        "string input",
        m,
        &["`x`", "string", "cannot take at run time"],
    ));
    let mut big = TensorProto::new();
    big.name = "big".into();
    big.data_type = 7;
    big.dims = vec![1];
    big.int64_data = vec![1 << 40];
    let m = model(vec![], vec![], vec![big], &["big"]);
    v.push(case(
        "importer error",
        "int64 output beyond int32",
        m,
        &["graph output `big`", "beyond int32"],
    ));

    // -- initializers --
    let mut w = f32_init("w", &[1, 4], &[]);
    w.raw_data = vec![0; 8];
    v.push(case(
        "short initializer",
        "raw data shorter than its shape",
        add_init(w),
        &["initializer `w`", "raw data has 8 bytes", "need 16"],
    ));
    let w = f32_init("w", &[1, 4], &[1.0, 2.0]);
    v.push(case(
        "short initializer",
        "float_data shorter than its shape",
        add_init(w),
        &["initializer `w`", "4 elements", "has 2"],
    ));
    let mut w = TensorProto::new();
    w.name = "w".into();
    w.data_type = 22; // int4
    w.dims = vec![1, 4];
    w.int32_data = vec![0x11];
    let dq = model(
        vec![
            node("DequantizeLinear", "dq", &["w", "s"], &["wf"]),
            node("Add", "add", &["x", "wf"], &["y"]),
        ],
        vec![vi("x", 1, &[1, 4])],
        vec![w, f32_init("s", &[], &[0.5])],
        &["y"],
    );
    v.push(case(
        "short initializer",
        "packed int4 data too short",
        dq,
        &["initializer `w`", "need 2 bytes, found 1"],
    ));
    let mut w = f32_init("w", &[1], &[]);
    w.data_type = 8; // string
    w.string_data = vec![b"a".to_vec()];
    v.push(case(
        "importer error",
        "string initializer",
        add_init(w),
        &["initializer `w`", "string is not supported"],
    ));
    let mut w = f32_init("w", &[1, 4], &[]);
    w.data_type = 17; // float8e4m3fn
    w.raw_data = vec![0; 4];
    v.push(case(
        "importer error",
        "float8 initializer",
        add_init(w),
        &["initializer `w`", "float8e4m3fn is not supported"],
    ));

    // -- external data --
    let mut w = f32_init("w", &[1, 4], &[]);
    external(&mut w, &[("location", "../secret.bin")]);
    v.push(case(
        "external data escape",
        "location with ..",
        add_init(w),
        &[
            "initializer `w`",
            "`../secret.bin`",
            "inside the model's folder",
        ],
    ));
    let mut w = f32_init("w", &[1, 4], &[]);
    external(&mut w, &[("location", "/etc/passwd")]);
    v.push(case(
        "external data escape",
        "absolute location",
        add_init(w),
        &["initializer `w`", "`/etc/passwd`", "relative path"],
    ));
    let mut w = f32_init("w", &[1, 4], &[]);
    external(&mut w, &[("location", "link/data.bin")]);
    v.push(
        case(
            "external data escape",
            "symbolic link out of the folder",
            add_init(w),
            &["initializer `w`", "leads outside the model's folder"],
        )
        .setup(|dir| {
            let outside = dir.parent().unwrap().join(format!(
                "{}-outside",
                dir.file_name().unwrap().to_string_lossy()
            ));
            std::fs::create_dir_all(&outside).unwrap();
            std::fs::write(outside.join("data.bin"), [0u8; 16]).unwrap();
            #[cfg(unix)]
            std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        }),
    );
    let mut w = f32_init("w", &[1, 4], &[]);
    external(&mut w, &[("location", "absent.bin")]);
    v.push(case(
        "external data",
        "missing data file",
        add_init(w),
        &[
            "initializer `w`",
            "missing external data file",
            "absent.bin",
        ],
    ));
    let mut w = f32_init("w", &[1, 4], &[]);
    external(
        &mut w,
        &[("location", "data.bin"), ("offset", "8"), ("length", "16")],
    );
    v.push(
        case(
            "external data",
            "data file too short",
            add_init(w),
            &["initializer `w`", "has 16 bytes", "do not fit"],
        )
        .setup(|dir| std::fs::write(dir.join("data.bin"), [0u8; 16]).unwrap()),
    );
    let mut w = f32_init("w", &[1, 4], &[]);
    external(
        &mut w,
        &[
            ("location", "data.bin"),
            ("offset", "0"),
            ("length", "18446744073709551615"),
        ],
    );
    v.push(
        case(
            "external data",
            "huge length",
            add_init(w),
            &["initializer `w`", "do not fit"],
        )
        .setup(|dir| std::fs::write(dir.join("data.bin"), [0u8; 16]).unwrap()),
    );
    let mut w = f32_init("w", &[1, 4], &[]);
    external(&mut w, &[("offset", "0")]);
    v.push(case(
        "external data",
        "no location",
        add_init(w),
        &["initializer `w`", "without a `location`"],
    ));
    let mut w = f32_init("w", &[1, 4], &[]);
    external(&mut w, &[("location", "data.bin"), ("offset", "eight")]);
    v.push(case(
        "external data",
        "offset not a number",
        add_init(w),
        &[
            "initializer `w`",
            "external data offset `eight` is not a byte count",
        ],
    ));

    // -- flags and limits --
    let chain = model(
        vec![
            node("Relu", "r1", &["x"], &["h1"]),
            node("Sigmoid", "r2", &["h1"], &["h2"]),
            node("Relu", "r3", &["h2"], &["y"]),
        ],
        vec![vi("x", 1, &[1, 4096])],
        vec![],
        &["y"],
    );
    v.push(
        case(
            "scratch limit",
            "scratch over --max-scratch",
            chain.clone(),
            &["needs", "bytes", "--max-scratch allows (1024 bytes)"],
        )
        .flags(&["--max-scratch", "1K"]),
    );
    v.push(
        case(
            "flag",
            "--max-scratch not a size",
            chain,
            &["--max-scratch lots", "expected a byte count"],
        )
        .flags(&["--max-scratch", "lots"]),
    );
    let big_chain = model(
        vec![
            node("Relu", "r1", &["x"], &["h1"]),
            node("Sigmoid", "r2", &["h1"], &["h2"]),
            node("Relu", "r3", &["h2"], &["y"]),
        ],
        vec![vi("x", 1, &[1, 1 << 29])],
        vec![],
        &["y"],
    );
    v.push(case(
        "scratch limit",
        "scratch over the default limit",
        big_chain,
        &["needs", "--max-scratch allows", "the default"],
    ));
    v.push(
        case(
            "flag",
            "--name not a C identifier",
            relu_model(),
            &["--name 9lives", "not a C identifier"],
        )
        .flags(&["--name", "9lives"]),
    );
    v.push(
        case(
            "flag",
            "-o naming the header",
            relu_model(),
            &["-o out.h", "give the object's path"],
        )
        .flags(&["-o", "out.h"]),
    );
    v.push(
        case(
            "flag",
            "--emit unknown kind",
            relu_model(),
            &["--emit bytecode", "unknown kind"],
        )
        .flags(&["--emit", "bytecode"]),
    );
    v.push(
        case(
            "flag",
            "--target unknown triple",
            relu_model(),
            &["--target", "nonsense-cpu-none"],
        )
        .flags(&["--target", "nonsense-cpu-none"]),
    );
    // Integer inputs and outputs cross the boundary as their codes (typed I/O); a tensor
    // without elements cannot.
    let empty = model(
        vec![node("Relu", "r", &["x"], &["y"])],
        vec![vi("x", 1, &[0, 4])],
        vec![],
        &["y"],
    );
    v.push(case(
        "backend",
        "empty graph input",
        empty,
        &["input %x", "no elements"],
    ));
    v.extend(importer_cases());
    v
}

/// One model per error path of the importer's op handlers and of the helpers they share
/// (see [`IMPORTER_PATHS`]), each an error at node `n`.
fn importer_cases() -> Vec<Case> {
    let mut v = Vec::new();
    let f = |n: &str, dims: &[i64]| {
        let k: i64 = dims.iter().product();
        f32_init(n, dims, &vec![1.0; k as usize])
    };
    let xa = || vec![x4()];

    // -- what every handler reads: inputs, constants, attributes, results --
    let mut w = f32_init("w", &[1, 4], &[]);
    w.data_type = 11; // double
    w.double_data = vec![1.0; 4];
    v.push(at_n(
        "double operand",
        "Concat",
        one(
            "Concat",
            &["x", "w"],
            vec![int_attr("axis", 1)],
            xa(),
            vec![w],
        ),
        &[
            "input 1",
            "element type double is not supported by qcc's IR",
        ],
    ));
    v.push(at_n(
        "int64 constant where float32 is needed",
        "Relu",
        one(
            "Relu",
            &["w"],
            vec![],
            vec![],
            vec![i64_init("w", &[4], &[1, 2, 3, 4])],
        ),
        &["input 0 must be float32, found int64"],
    ));
    v.push(at_n(
        "int8 input where float32 is needed",
        "Relu",
        one("Relu", &["x"], vec![], vec![vi("x", 3, &[1, 4])], vec![]),
        &["input 0 must be float32, found int8"],
    ));
    v.push(at_n(
        "run-time input where a constant is needed",
        "Reshape",
        one(
            "Reshape",
            &["x", "s"],
            vec![],
            vec![x4(), vi("s", 6, &[2])],
            vec![],
        ),
        &["input 1 (`shape`) must be a constant"],
    ));
    v.push(at_n(
        "missing constant input",
        "Reshape",
        one("Reshape", &["x"], vec![], xa(), vec![]),
        &["input 1 (`shape`) is missing"],
    ));
    v.push(at_n(
        "tensor attribute without a tensor",
        "Constant",
        one(
            "Constant",
            &[],
            vec![tensor_attr("value", None)],
            vec![],
            vec![],
        ),
        &["attribute `value` has no tensor"],
    ));
    let mut t = f32_init("", &[2], &[1.0]);
    t.name = String::new();
    v.push(at_n(
        "tensor attribute that does not decode",
        "Constant",
        one(
            "Constant",
            &[],
            vec![tensor_attr("value", Some(t))],
            vec![],
            vec![],
        ),
        &["attribute `value`", "2 elements, its data field has 1"],
    ));
    v.push(at_n(
        "attribute value not implemented",
        "Resize",
        resize(
            &["", "s"],
            vec![int_attr("antialias", 1)],
            vec![f32_init("s", &[4], &[1.0, 1.0, 2.0, 2.0])],
        ),
        &["attribute `antialias` = 1 is not supported (only 0)"],
    ));
    v.push(at_n(
        "bias beyond int32",
        "QLinearConv",
        qconv(vec![i64_init("b", &[1], &[1 << 40])]),
        &["constant `b` holds 1099511627776", "cannot hold"],
    ));
    v.push(at_n(
        "float bias where integers are needed",
        "QLinearConv",
        qconv(vec![f32_init("b", &[1], &[0.5])]),
        &["constant `b` holds floats", "integer type"],
    ));
    v.push(at_n(
        "float input to DequantizeLinear",
        "DequantizeLinear",
        one(
            "DequantizeLinear",
            &["x", "s"],
            vec![],
            xa(),
            vec![f32_init("s", &[], &[0.5])],
        ),
        &["quantized element type float is not supported"],
    ));
    v.push(at_n(
        "MatMul result of 2^34 elements",
        "MatMul",
        one(
            "MatMul",
            &["a", "b"],
            vec![],
            vec![vi("a", 1, &[1 << 17, 1]), vi("b", 1, &[1, 1 << 17])],
            vec![],
        ),
        &[
            "result would have shape [131072, 131072]",
            "more than 2^32 elements",
        ],
    ));
    v.push(at_n(
        "MatMul the type rules refuse",
        "MatMul",
        one("MatMul", &["x", "w"], vec![], xa(), vec![f("w", &[3, 2])]),
        &["inner dimensions", "differ"],
    ));
    v.push(at_n(
        "Add the type rules refuse",
        "Add",
        one("Add", &["x", "w"], vec![], xa(), vec![f("w", &[1, 3])]),
        &["do not broadcast"],
    ));
    v.push(at_n(
        "output the importer does not make",
        "Relu",
        outputs(one("Relu", &["x"], vec![], xa(), vec![]), &["y", "extra"]),
        &["output 1 (`extra`) is not supported by qcc's Relu import"],
    ));

    // -- convolutions, pools, normalizations, reductions, Softmax, Resize --
    let x33 = &[1, 1, 3, 3];
    let w11 = &[1, 1, 1, 1];
    v.push(at_n(
        "negative kernel_shape",
        "Conv",
        conv(vec![ints_attr("kernel_shape", &[1, -1])], x33, w11),
        &["attribute `kernel_shape` has a negative entry -1"],
    ));
    v.push(at_n(
        "3-D convolution",
        "Conv",
        conv(vec![], &[1, 1, 2, 2, 2], &[1, 1, 1, 1, 1]),
        &["only 1-D and 2-D windows", "3 spatial axes"],
    ));
    v.push(at_n(
        "kernel_shape of another rank",
        "Conv",
        conv(vec![ints_attr("kernel_shape", &[1])], x33, w11),
        &["the kernel has 1 axes, the input 2 spatial axes"],
    ));
    v.push(at_n(
        "strides of the wrong length",
        "Conv",
        conv(vec![ints_attr("strides", &[1, 1, 1])], x33, w11),
        &["attribute `strides` has 3 entries, 2 expected"],
    ));
    v.push(at_n(
        "zero stride",
        "Conv",
        conv(vec![ints_attr("strides", &[0, 1])], x33, w11),
        &["strides and dilations must be positive"],
    ));
    v.push(at_n(
        "unknown auto_pad",
        "Conv",
        conv(vec![str_attr("auto_pad", "SOMETIMES")], x33, w11),
        &[
            "attribute `auto_pad` = \"SOMETIMES\" is not supported",
            "SAME_UPPER",
        ],
    ));
    v.push(at_n(
        "SAME padding of a 2^40 dilation",
        "Conv",
        conv(
            vec![
                str_attr("auto_pad", "SAME_UPPER"),
                ints_attr("kernel_shape", &[1 << 40, 1]),
                ints_attr("dilations", &[1 << 40, 1]),
            ],
            x33,
            w11,
        ),
        &["attribute `auto_pad` = SAME_UPPER", "elements of padding"],
    ));
    v.push(at_n(
        "Conv of rank 2",
        "Conv",
        conv(vec![], &[1, 4], &[1, 4]),
        &["must be [N,C,...] and [M,C/g,...]"],
    ));
    v.push(at_n(
        "ConvTranspose of rank 2",
        "ConvTranspose",
        one(
            "ConvTranspose",
            &["x", "w"],
            vec![],
            xa(),
            vec![f("w", &[4, 1])],
        ),
        &["must be [N,C,...] and [C,M/g,...]"],
    ));
    let convt = |attrs: Vec<AttributeProto>, x: &[i64]| {
        one(
            "ConvTranspose",
            &["x", "w"],
            attrs,
            vec![vi("x", 1, x)],
            vec![f("w", &[1, 1, 1, 1])],
        )
    };
    v.push(at_n(
        "output_padding of the wrong length",
        "ConvTranspose",
        convt(vec![ints_attr("output_padding", &[1])], x33),
        &["attribute `output_padding` must have one entry per spatial axis"],
    ));
    v.push(at_n(
        "output_shape of the wrong length",
        "ConvTranspose",
        convt(vec![ints_attr("output_shape", &[3])], x33),
        &["attribute `output_shape` must have one entry per spatial axis"],
    ));
    v.push(at_n(
        "output_shape out of reach of a 2^62 stride",
        "ConvTranspose",
        convt(
            vec![
                ints_attr("strides", &[1 << 62, 1]),
                ints_attr("output_shape", &[9, 9]),
            ],
            &[1, 1, 9, 9],
        ),
        &["attribute `output_shape` entry 9 cannot be reached"],
    ));
    v.push(at_n(
        "BatchNormalization training_mode",
        "BatchNormalization",
        batch_norm(vec![int_attr("training_mode", 1)]),
        &["attribute `training_mode` = 1 is not supported"],
    ));
    v.push(at_n(
        "BatchNormalization spatial = 0 (opset 8)",
        "BatchNormalization",
        opset(batch_norm(vec![int_attr("spatial", 0)]), 8),
        &["attribute `spatial` = 0 is not supported"],
    ));
    v.push(at_n(
        "BatchNormalization training outputs",
        "BatchNormalization",
        outputs(batch_norm(vec![]), &["y", "running_mean"]),
        &["training outputs", "are not supported"],
    ));
    let pool = |op: &str, attrs: Vec<AttributeProto>, x: &[i64]| {
        one(op, &["x"], attrs, vec![vi("x", 1, x)], vec![])
    };
    let x44 = &[1, 1, 4, 4];
    v.push(at_n(
        "MaxPool Indices output",
        "MaxPool",
        outputs(
            pool("MaxPool", vec![ints_attr("kernel_shape", &[2, 2])], x44),
            &["y", "indices"],
        ),
        &["output `Indices` is not supported"],
    ));
    v.push(at_n(
        "MaxPool of rank 2",
        "MaxPool",
        pool("MaxPool", vec![ints_attr("kernel_shape", &[2])], &[1, 4]),
        &["the input [1, 4] must be [N, C, ...]"],
    ));
    v.push(at_n(
        "MaxPool without kernel_shape",
        "MaxPool",
        pool("MaxPool", vec![], x44),
        &["attribute `kernel_shape` is required"],
    ));
    v.push(at_n(
        "AveragePool dilations",
        "AveragePool",
        pool(
            "AveragePool",
            vec![
                ints_attr("kernel_shape", &[2, 2]),
                ints_attr("dilations", &[2, 2]),
            ],
            x44,
        ),
        &["attribute `dilations` other than 1 is not supported for AveragePool"],
    ));
    v.push(at_n(
        "reduction axis out of range",
        "ReduceSum",
        one(
            "ReduceSum",
            &["x", "a"],
            vec![],
            xa(),
            vec![i64_init("a", &[1], &[5])],
        ),
        &["input 1 (`axes`): axis 5 is out of range for rank 2"],
    ));
    v.push(at_n(
        "GlobalMaxPool of rank 2",
        "GlobalMaxPool",
        one("GlobalMaxPool", &["x"], vec![], xa(), vec![]),
        &["input of rank 2: expected [N, C, spatial...]"],
    ));
    v.push(at_n(
        "LayerNormalization axis out of range",
        "LayerNormalization",
        one(
            "LayerNormalization",
            &["x", "s"],
            vec![int_attr("axis", 5)],
            xa(),
            vec![f("s", &[4])],
        ),
        &["attribute `axis`: axis 5 is out of range for rank 2"],
    ));
    v.push(at_n(
        "InstanceNormalization of rank 2",
        "InstanceNormalization",
        one(
            "InstanceNormalization",
            &["x", "s", "b"],
            vec![],
            xa(),
            vec![f("s", &[4]), f("b", &[4])],
        ),
        &["input of rank 2: expected [N, C, spatial...]"],
    ));
    v.push(at_n(
        "InstanceNormalization scale of the wrong shape",
        "InstanceNormalization",
        one(
            "InstanceNormalization",
            &["x", "s", "b"],
            vec![],
            vec![vi("x", 1, &[1, 2, 2, 2])],
            vec![f("s", &[3]), f("b", &[2])],
        ),
        &["input `scale` has shape [3], expected [2]"],
    ));
    v.push(at_n(
        "Softmax axis out of range",
        "Softmax",
        one("Softmax", &["x"], vec![int_attr("axis", 2)], xa(), vec![]),
        &["attribute `axis`: axis 2 is out of range for rank 2"],
    ));
    let scales = |v: &[f32]| f32_init("s", &[v.len() as i64], v);
    let up = || scales(&[1.0, 1.0, 2.0, 2.0]);
    for (name, attr, value, words) in [
        (
            "Resize mode",
            "mode",
            "cubic",
            "attribute `mode` = \"cubic\" is not supported (nearest and linear are)",
        ),
        (
            "Resize coordinate_transformation_mode",
            "coordinate_transformation_mode",
            "tf_crop_and_resize",
            "attribute `coordinate_transformation_mode` = \"tf_crop_and_resize\" is not supported (half_pixel",
        ),
        (
            "Resize nearest_mode",
            "nearest_mode",
            "sideways",
            "attribute `nearest_mode` = \"sideways\" is not supported (round_prefer_floor",
        ),
        (
            "Resize keep_aspect_ratio_policy",
            "keep_aspect_ratio_policy",
            "not_larger",
            "attribute `keep_aspect_ratio_policy` = \"not_larger\" is not supported (only \"stretch\")",
        ),
    ] {
        v.push(at_n(
            name,
            "Resize",
            resize(&["", "s"], vec![str_attr(attr, value)], vec![up()]),
            &[words],
        ));
    }
    v.push(at_n(
        "Resize axes out of range",
        "Resize",
        resize(
            &["", "s"],
            vec![ints_attr("axes", &[7])],
            vec![scales(&[2.0])],
        ),
        &["attribute `axes`: axis 7 is out of range for rank 4"],
    ));
    v.push(at_n(
        "Resize scales of the wrong length",
        "Resize",
        resize(&["", "s"], vec![], vec![scales(&[2.0, 2.0])]),
        &["input 2 (`scales`) has 2 entries, 4 expected"],
    ));
    v.push(at_n(
        "Resize scale 0",
        "Resize",
        resize(&["", "s"], vec![], vec![scales(&[1.0, 1.0, 0.0, 2.0])]),
        &["input 2 (`scales`) entry 2 is 0; scales must be positive"],
    ));
    v.push(at_n(
        "Resize sizes of the wrong length",
        "Resize",
        resize(&["", "", "z"], vec![], vec![i64_init("z", &[2], &[4, 4])]),
        &["input 3 (`sizes`) has 2 entries, 4 expected"],
    ));
    v.push(at_n(
        "Resize negative size",
        "Resize",
        resize(
            &["", "", "z"],
            vec![],
            vec![i64_init("z", &[4], &[1, 1, -4, 4])],
        ),
        &["input 3 (`sizes`) entry 2 is -4; sizes must be non-negative"],
    ));
    v.push(at_n(
        "Resize without scales or sizes",
        "Resize",
        resize(&[], vec![], vec![]),
        &["exactly one of input 2 (`scales`) and input 3 (`sizes`)"],
    ));

    // -- elementwise --
    v.push(at_n(
        "Sum of an int64 and a float constant",
        "Sum",
        one(
            "Sum",
            &["a", "b"],
            vec![],
            vec![],
            vec![i64_init("a", &[1], &[1]), f("b", &[1])],
        ),
        &["input 1 is float, input 0 int64", "one element type"],
    ));
    v.push(at_n(
        "int64 constants that do not broadcast",
        "Add",
        one(
            "Add",
            &["a", "b"],
            vec![],
            vec![],
            vec![
                i64_init("a", &[2], &[1, 2]),
                i64_init("b", &[3], &[1, 2, 3]),
            ],
        ),
        &["shapes [2] and [3] do not broadcast"],
    ));
    v.push(at_n(
        "int64 division by zero",
        "Div",
        one(
            "Div",
            &["a", "b"],
            vec![],
            vec![],
            vec![i64_init("a", &[1], &[1]), i64_init("b", &[1], &[0])],
        ),
        &["integer overflow or division by zero"],
    ));
    v.push(at_n(
        "Clip min of two values",
        "Clip",
        one("Clip", &["x", "m"], vec![], xa(), vec![f("m", &[2])]),
        &["input `min` must be a scalar"],
    ));
    v.push(at_n(
        "Neg of the least int64",
        "Neg",
        one(
            "Neg",
            &["a"],
            vec![],
            vec![],
            vec![i64_init("a", &[1], &[i64::MIN])],
        ),
        &["integer overflow"],
    ));
    v.push(at_n(
        "PRelu slope that does not broadcast",
        "PRelu",
        one("PRelu", &["x", "s"], vec![], xa(), vec![f("s", &[3])]),
        &["slope does not broadcast to X"],
    ));
    v.push(at_n(
        "PRelu slope larger than X",
        "PRelu",
        one("PRelu", &["x", "s"], vec![], xa(), vec![f("s", &[2, 4])]),
        &["slope of shape [2, 4] does not broadcast to X of shape [1, 4]"],
    ));
    v.push(at_n(
        "Gelu approximate",
        "Gelu",
        opset(
            one(
                "Gelu",
                &["x"],
                vec![str_attr("approximate", "fast")],
                xa(),
                vec![],
            ),
            20,
        ),
        &["attribute `approximate` = \"fast\": expected \"none\" or \"tanh\""],
    ));
    v.push(at_n(
        "Sum of nothing",
        "Sum",
        one("Sum", &[], vec![], xa(), vec![]),
        &["at least one input is required"],
    ));

    // -- QONNX --
    let q = format!("{QONNX}:Quant");
    let eight = || f32_init("b", &[], &[8.0]);
    v.push(at_n(
        "QONNX rounding_mode",
        &q,
        qonnx_quant(
            0.5,
            0.0,
            eight(),
            vec![str_attr("rounding_mode", "SIDEWAYS")],
        ),
        &["attribute `rounding_mode` = \"SIDEWAYS\" is not one of ROUND"],
    ));
    v.push(at_n(
        "QONNX bit-width of two values",
        &q,
        qonnx_quant(0.5, 0.0, f32_init("b", &[2], &[8.0, 8.0]), vec![]),
        &["input `bitwidth` must be a single value"],
    ));
    v.push(at_n(
        "QONNX bit-width 40",
        &q,
        qonnx_quant(0.5, 0.0, f32_init("b", &[], &[40.0]), vec![]),
        &["input `bitwidth` is 40", "from 1 to 32"],
    ));
    v.push(at_n(
        "QONNX negative scale",
        &q,
        qonnx_quant(-1.0, 0.0, eight(), vec![]),
        &["input `scale` holds -1", "positive and finite"],
    ));
    v.push(at_n(
        "QONNX infinite zero point",
        &q,
        qonnx_quant(0.5, f32::INFINITY, eight(), vec![]),
        &["input `zeropt` holds inf", "must be finite"],
    ));
    v.push(at_n(
        "QONNX signed = 2",
        &q,
        qonnx_quant(0.5, 0.0, eight(), vec![int_attr("signed", 2)]),
        &["attribute `signed` must be 0 or 1, found 2"],
    ));
    v.push(at_n(
        "QONNX Trunc of three inputs",
        &format!("{QONNX}:Trunc"),
        in_domain(
            one(
                "Trunc",
                &["x", "s", "z"],
                vec![],
                xa(),
                vec![f32_init("s", &[], &[0.5]), f32_init("z", &[], &[0.0])],
            ),
            QONNX,
        ),
        &["takes 5 inputs, found 3"],
    ));

    // -- shapes and data movement --
    let i1 = |v: &[i64]| i64_init("a", &[v.len() as i64], v);
    v.push(at_n(
        "Cast of a constant to string",
        "Cast",
        one(
            "Cast",
            &["a"],
            vec![int_attr("to", 8)],
            vec![],
            vec![i1(&[1])],
        ),
        &["cast to string is not supported"],
    ));
    let mut sparse = AttributeProto::new();
    sparse.name = "sparse_value".into();
    sparse.type_ = AttributeType::SPARSE_TENSOR.into();
    v.push(at_n(
        "Constant sparse_value",
        "Constant",
        one("Constant", &[], vec![sparse], vec![], vec![]),
        &["attribute `sparse_value` is not supported"],
    ));
    v.push(at_n(
        "Constant string",
        "Constant",
        one(
            "Constant",
            &[],
            vec![str_attr("value_string", "a")],
            vec![],
            vec![],
        ),
        &["string constants are not supported"],
    ));
    v.push(at_n(
        "Constant without a value",
        "Constant",
        one("Constant", &[], vec![], vec![], vec![]),
        &["no value: give one of the attributes `value`"],
    ));
    v.push(at_n(
        "ConstantOfShape of a negative dimension",
        "ConstantOfShape",
        one(
            "ConstantOfShape",
            &["a"],
            vec![],
            vec![],
            vec![i1(&[2, -1])],
        ),
        &["input 0 (`input`) has a negative dimension -1"],
    ));
    v.push(at_n(
        "ConstantOfShape value of two elements",
        "ConstantOfShape",
        one(
            "ConstantOfShape",
            &["a"],
            vec![tensor_attr("value", Some(f32_init("", &[2], &[1.0, 2.0])))],
            vec![],
            vec![i1(&[2])],
        ),
        &["attribute `value` must hold one element"],
    ));
    v.push(at_n(
        "ConstantOfShape of 2^40 elements",
        "ConstantOfShape",
        one(
            "ConstantOfShape",
            &["a"],
            vec![],
            vec![],
            vec![i1(&[1 << 20, 1 << 20])],
        ),
        &["would have shape [1048576, 1048576], too large", "2^26"],
    ));
    let range = |s: TensorProto, l: TensorProto, d: TensorProto| {
        one("Range", &["s", "l", "d"], vec![], vec![], vec![s, l, d])
    };
    let sc = |n: &str, v: f32| f32_init(n, &[], &[v]);
    let ic = |n: &str, v: i64| i64_init(n, &[], &[v]);
    v.push(at_n(
        "Range of non-scalars",
        "Range",
        range(f32_init("s", &[2], &[0.0, 1.0]), sc("l", 4.0), sc("d", 1.0)),
        &["start, limit and delta must be scalars"],
    ));
    v.push(at_n(
        "Range by 0",
        "Range",
        range(sc("s", 0.0), sc("l", 4.0), sc("d", 0.0)),
        &["delta must not be 0"],
    ));
    v.push(at_n(
        "Range of 10^12 elements",
        "Range",
        range(ic("s", 0), ic("l", 1_000_000_000_000), ic("d", 1)),
        &["has 1000000000000 elements, too many"],
    ));
    // Steps past int64 between the ends (once a panic): the range is made, and refused
    // as a graph output.
    v.push(case(
        "importer error",
        "Range of 2^24 steps of 2^40",
        range(ic("s", i64::MIN), ic("l", i64::MAX), ic("d", 1 << 40)),
        &["graph output `y`", "beyond int32"],
    ));
    let gather = |attrs: Vec<AttributeProto>, idx: TensorProto| {
        one("Gather", &["x", "i"], attrs, xa(), vec![idx])
    };
    v.push(at_n(
        "Gather axis out of range",
        "Gather",
        gather(vec![int_attr("axis", 3)], i64_init("i", &[1], &[0])),
        &["attribute `axis`: axis 3 is out of range for rank 2"],
    ));
    v.push(at_n(
        "Gather index out of range",
        "Gather",
        gather(vec![], i64_init("i", &[1], &[7])),
        &["index 7 is out of range for axis 0 of length 1"],
    ));
    v.push(at_n(
        "Gather of no indices",
        "Gather",
        gather(vec![], i64_init("i", &[0], &[])),
        &["Gather with no indices is not supported"],
    ));
    v.push(at_n(
        "Gather of a constant to 2^34 elements",
        "Gather",
        before(
            one(
                "Gather",
                &["d", "i"],
                vec![],
                vec![],
                vec![f("d", &[1, 4096])],
            ),
            zeros("i", 1 << 22),
        ),
        &["would have shape [4194304, 4096], too large"],
    ));
    v.push(at_n(
        "Gather of 2^17 indices from a run-time tensor",
        "Gather",
        before(
            one("Gather", &["x", "i"], vec![], xa(), vec![]),
            zeros("i", 1 << 17),
        ),
        &["holds 131072 indices", "at most 65536"],
    ));
    let reshape = |s: TensorProto| one("Reshape", &["x", "a"], vec![], xa(), vec![s]);
    for (name, shape, words) in [
        (
            "Reshape with two -1",
            &[-1, -1][..],
            "the shape [-1, -1] has more than one -1",
        ),
        (
            "Reshape copying a missing axis",
            &[1, 4, 0],
            "shape entry 2 is 0 (copy), but the input has rank 2",
        ),
        (
            "Reshape entry -2",
            &[-2, 2],
            "shape entry 0 is -2; entries are sizes, 0 (copy) or -1 (infer)",
        ),
        (
            "Reshape -1 that cannot be inferred",
            &[3, -1],
            "cannot infer the -1 of shape [3, -1]",
        ),
        (
            "Reshape -1 beside 2^80",
            &[1 << 40, 1 << 40, -1],
            "cannot infer the -1",
        ),
        (
            "Reshape to another element count",
            &[3],
            "does not hold the 4 elements",
        ),
    ] {
        v.push(at_n(name, "Reshape", reshape(i1(shape)), &[words]));
    }
    v.push(at_n(
        "Reshape to a fractional shape",
        "Reshape",
        reshape(f32_init("a", &[2], &[1.5, 2.0])),
        &["input 1 (`shape`): expected integers, found 1.5"],
    ));
    v.push(at_n(
        "Flatten axis out of range",
        "Flatten",
        one("Flatten", &["x"], vec![int_attr("axis", 3)], xa(), vec![]),
        &["attribute `axis` = 3 is out of range for rank 2"],
    ));
    v.push(at_n(
        "Transpose perm out of range",
        "Transpose",
        one(
            "Transpose",
            &["x"],
            vec![ints_attr("perm", &[0, 5])],
            xa(),
            vec![],
        ),
        &["attribute `perm`: axis 5 is out of range for rank 2"],
    ));
    v.push(at_n(
        "Transpose perm not a permutation",
        "Transpose",
        one(
            "Transpose",
            &["x"],
            vec![ints_attr("perm", &[0, 0])],
            xa(),
            vec![],
        ),
        &["attribute `perm` = [0, 0] is not a permutation of 0..2"],
    ));
    let axis0 = || vec![int_attr("axis", 0)];
    v.push(at_n(
        "Concat of nothing",
        "Concat",
        one("Concat", &[], axis0(), xa(), vec![]),
        &["at least one input is required"],
    ));
    v.push(at_n(
        "Concat without axis",
        "Concat",
        one("Concat", &["x", "x"], vec![], xa(), vec![]),
        &["attribute `axis` is required"],
    ));
    v.push(at_n(
        "Concat axis out of range",
        "Concat",
        one(
            "Concat",
            &["x", "x"],
            vec![int_attr("axis", 5)],
            xa(),
            vec![],
        ),
        &["attribute `axis`: axis 5 is out of range for rank 2"],
    ));
    v.push(at_n(
        "Concat of two ranks",
        "Concat",
        one("Concat", &["x", "w"], axis0(), xa(), vec![f("w", &[4])]),
        &["input 1 has rank 1, input 0 rank 2"],
    ));
    v.push(at_n(
        "Concat of constants that do not fit",
        "Concat",
        one(
            "Concat",
            &["a", "b"],
            axis0(),
            vec![],
            vec![f("a", &[1, 2]), f("b", &[2, 3])],
        ),
        &["input 1 has shape [2, 3], incompatible with [1, 2] outside axis 0"],
    ));
    v.push(at_n(
        "Concat of constants to 5 x 2^24 elements",
        "Concat",
        before(
            one(
                "Concat",
                &["z", "z", "z", "z", "z"],
                axis0(),
                vec![],
                vec![],
            ),
            zeros("z", 1 << 24),
        ),
        &["would have shape [83886080], too large"],
    ));
    let axes = |op: &str, a: &[i64]| one(op, &["x", "a"], vec![], xa(), vec![i1(a)]);
    v.push(at_n(
        "Squeeze axis out of range",
        "Squeeze",
        axes("Squeeze", &[4]),
        &["input 1 (`axes`): axis 4 is out of range for rank 2"],
    ));
    v.push(at_n(
        "Squeeze of an axis of 4",
        "Squeeze",
        axes("Squeeze", &[1]),
        &["axis 1 of the input [1, 4] has size 4, not 1"],
    ));
    v.push(at_n(
        "Unsqueeze without axes",
        "Unsqueeze",
        one("Unsqueeze", &["x"], vec![], xa(), vec![]),
        &["input 1 (`axes`) is required"],
    ));
    v.push(at_n(
        "Unsqueeze axis out of range",
        "Unsqueeze",
        axes("Unsqueeze", &[9]),
        &["input 1 (`axes`): axis 9 is out of range for rank 3"],
    ));
    v.push(at_n(
        "Unsqueeze of a repeated axis",
        "Unsqueeze",
        axes("Unsqueeze", &[0, 0]),
        &["input 1 (`axes`) [0, 0] repeat an axis"],
    ));
    v.push(at_n(
        "Slice without starts (opset 9)",
        "Slice",
        opset(
            one("Slice", &["x"], vec![ints_attr("ends", &[1])], xa(), vec![]),
            9,
        ),
        &["attribute `starts` is required"],
    ));
    v.push(at_n(
        "Slice without ends (opset 9)",
        "Slice",
        opset(
            one(
                "Slice",
                &["x"],
                vec![ints_attr("starts", &[0])],
                xa(),
                vec![],
            ),
            9,
        ),
        &["attribute `ends` is required"],
    ));
    let slice = |ins: &[&str], inits: Vec<TensorProto>| one("Slice", ins, vec![], xa(), inits);
    let t = |n: &str, v: &[i64]| i64_init(n, &[v.len() as i64], v);
    v.push(at_n(
        "Slice starts and ends of two lengths",
        "Slice",
        slice(&["x", "s", "e"], vec![t("s", &[0]), t("e", &[1, 2])]),
        &["must have the same length (found 1, 2, 1 and 1)"],
    ));
    v.push(at_n(
        "Slice axis out of range",
        "Slice",
        slice(
            &["x", "s", "e", "a"],
            vec![t("s", &[0]), t("e", &[1]), t("a", &[5])],
        ),
        &["input 3 (`axes`): axis 5 is out of range for rank 2"],
    ));
    v.push(at_n(
        "Slice step 0",
        "Slice",
        slice(
            &["x", "s", "e", "a", "p"],
            vec![t("s", &[0]), t("e", &[1]), t("a", &[1]), t("p", &[0])],
        ),
        &["a step must not be 0"],
    ));
    let pad = |ins: &[&str], attrs: Vec<AttributeProto>, inits: Vec<TensorProto>| {
        one("Pad", ins, attrs, xa(), inits)
    };
    v.push(at_n(
        "Pad mode",
        "Pad",
        pad(
            &["x", "p"],
            vec![str_attr("mode", "mirror")],
            vec![t("p", &[0, 1, 0, 1])],
        ),
        &["attribute `mode` = \"mirror\" is not supported (constant, reflect"],
    ));
    v.push(at_n(
        "Pad without pads (opset 10)",
        "Pad",
        opset(pad(&["x"], vec![], vec![]), 10),
        &["attribute `pads` is required"],
    ));
    v.push(at_n(
        "Pad value of two elements",
        "Pad",
        pad(
            &["x", "p", "c"],
            vec![],
            vec![t("p", &[0, 1, 0, 1]), f("c", &[2])],
        ),
        &["input 2 (`constant_value`) must be a scalar"],
    ));
    v.push(at_n(
        "Pad pads for other axes (opset 18)",
        "Pad",
        opset(
            pad(
                &["x", "p", "", "a"],
                vec![],
                vec![t("p", &[1, 1, 1, 1]), t("a", &[1])],
            ),
            18,
        ),
        &["pads has 4 entries, the 1 axes of input 3 (`axes`) need 2"],
    ));
    v.push(at_n(
        "Pad axis out of range (opset 18)",
        "Pad",
        opset(
            pad(
                &["x", "p", "", "a"],
                vec![],
                vec![t("p", &[1, 1]), t("a", &[5])],
            ),
            18,
        ),
        &["input 3 (`axes`): axis 5 is out of range for rank 2"],
    ));
    v.push(at_n(
        "Pad of the wrong length",
        "Pad",
        pad(&["x", "p"], vec![], vec![t("p", &[1, 1])]),
        &["pads has 2 entries, rank 2 needs 4"],
    ));
    v.push(at_n(
        "Expand to a shape that does not broadcast",
        "Expand",
        one("Expand", &["x", "a"], vec![], xa(), vec![i1(&[3])]),
        &["do not broadcast"],
    ));
    v.push(at_n(
        "Expand of a constant to 2^40 elements",
        "Expand",
        one(
            "Expand",
            &["c", "a"],
            vec![],
            vec![],
            vec![f("c", &[1]), i1(&[1 << 20, 1 << 20])],
        ),
        &["would have shape [1048576, 1048576], too large"],
    ));
    v.push(at_n(
        "Cast of a run-time value to int64",
        "Cast",
        one("Cast", &["x"], vec![int_attr("to", 7)], xa(), vec![]),
        &["cast of a run-time value to int64 is not supported"],
    ));
    v.push(at_n(
        "Cast without to",
        "Cast",
        one("Cast", &["x"], vec![], xa(), vec![]),
        &["attribute `to` is required"],
    ));
    let split =
        |ins: &[&str], attrs: Vec<AttributeProto>, inits: Vec<TensorProto>, outs: &[&str]| {
            outputs(one("Split", ins, attrs, xa(), inits), outs)
        };
    let axis1 = || vec![int_attr("axis", 1)];
    v.push(at_n(
        "Split axis out of range",
        "Split",
        split(&["x"], vec![int_attr("axis", 2)], vec![], &["y"]),
        &["attribute `axis`: axis 2 is out of range for rank 2"],
    ));
    v.push(at_n(
        "Split sizes for another number of outputs",
        "Split",
        split(&["x", "s"], axis1(), vec![t("s", &[2, 2])], &["y"]),
        &["`split` [2, 2] must hold 1 non-negative sizes, one per output"],
    ));
    v.push(at_n(
        "Split num_outputs against the outputs (opset 18)",
        "Split",
        opset(
            split(
                &["x"],
                vec![int_attr("axis", 1), int_attr("num_outputs", 3)],
                vec![],
                &["y", "z"],
            ),
            18,
        ),
        &["num_outputs = 3 but the node has 2 outputs"],
    ));
    v.push(at_n(
        "Split with no outputs",
        "Split",
        split(&["x"], axis1(), vec![], &[]),
        &["the node has no outputs"],
    ));
    v.push(at_n(
        "Split into three unequal parts",
        "Split",
        split(&["x"], axis1(), vec![], &["y", "z", "w"]),
        &["axis 1 of length 4 does not split into 3 equal parts"],
    ));
    v.push(at_n(
        "Split sizes that do not add up",
        "Split",
        split(&["x", "s"], axis1(), vec![t("s", &[1, 2])], &["y", "z"]),
        &["split sizes [1, 2] add up to 3, but axis 1 has length 4"],
    ));
    v.push(at_n(
        "Split sizes that add up past 2^64",
        "Split",
        split(
            &["x", "s"],
            axis1(),
            vec![t("s", &[i64::MAX, i64::MAX, i64::MAX])],
            &["y", "z", "w"],
        ),
        &["add up to 27670116110564327421, but axis 1 has length 4"],
    ));
    let d2s = |attrs: Vec<AttributeProto>, x: &[i64]| {
        one("DepthToSpace", &["x"], attrs, vec![vi("x", 1, x)], vec![])
    };
    let x422 = &[1, 4, 2, 2];
    v.push(at_n(
        "DepthToSpace of rank 2",
        "DepthToSpace",
        d2s(vec![int_attr("blocksize", 2)], &[1, 4]),
        &["input of shape [1, 4]: expected rank 4 [N, C, H, W]"],
    ));
    v.push(at_n(
        "DepthToSpace without blocksize",
        "DepthToSpace",
        d2s(vec![], x422),
        &["attribute `blocksize` is required"],
    ));
    v.push(at_n(
        "DepthToSpace blocksize 0",
        "DepthToSpace",
        d2s(vec![int_attr("blocksize", 0)], x422),
        &["attribute `blocksize` = 0 must be at least 1"],
    ));
    v.push(at_n(
        "DepthToSpace of 3 channels",
        "DepthToSpace",
        d2s(vec![int_attr("blocksize", 2)], &[1, 3, 2, 2]),
        &["3 channels do not divide by blocksize^2 = 4"],
    ));
    v.push(at_n(
        "DepthToSpace blocksize 2^33",
        "DepthToSpace",
        d2s(vec![int_attr("blocksize", 1 << 33)], x422),
        &["4 channels do not divide by blocksize^2 = 73786976294838206464"],
    ));
    v.push(at_n(
        "DepthToSpace mode",
        "DepthToSpace",
        d2s(
            vec![int_attr("blocksize", 2), str_attr("mode", "XYZ")],
            x422,
        ),
        &["attribute `mode` = \"XYZ\": expected \"DCR\" or \"CRD\""],
    ));
    v.push(at_n(
        "SpaceToDepth of odd H and W",
        "SpaceToDepth",
        one(
            "SpaceToDepth",
            &["x"],
            vec![int_attr("blocksize", 2)],
            vec![vi("x", 1, &[1, 1, 3, 3])],
            vec![],
        ),
        &["H = 3 and W = 3 must divide by blocksize 2"],
    ));
    let tile = |x: &str, r: &[i64], inits: Vec<TensorProto>| {
        let mut inits = inits;
        inits.push(t("r", r));
        one("Tile", &[x, "r"], vec![], xa(), inits)
    };
    v.push(at_n(
        "Tile repeats of the wrong length",
        "Tile",
        tile("x", &[2], vec![]),
        &["`repeats` [2] must hold 2 non-negative counts, one per axis"],
    ));
    v.push(at_n(
        "Tile by 0",
        "Tile",
        tile("x", &[1, 0], vec![]),
        &["makes an empty tensor"],
    ));
    v.push(at_n(
        "Tile of a constant to 2^40 elements",
        "Tile",
        tile("c", &[1 << 20, 1 << 20], vec![f("c", &[1, 1])]),
        &["would have shape [1048576, 1048576], too large"],
    ));
    v.push(at_n(
        "Tile of a run-time tensor to 2^42 elements",
        "Tile",
        tile("x", &[1 << 20, 1 << 20], vec![]),
        &["more than 2^32 elements"],
    ));
    v.push(at_n(
        "Tile by 2^17 copies",
        "Tile",
        tile("x", &[1, 1 << 17], vec![]),
        &["asks for 131072 copies along axis 1", "at most 65536"],
    ));
    v.push(at_n(
        "Dropout mask of 2^27 elements",
        "Dropout",
        outputs(
            one(
                "Dropout",
                &["x"],
                vec![],
                vec![vi("x", 1, &[1, 1 << 27])],
                vec![],
            ),
            &["y", "mask"],
        ),
        &["the `mask` output would have shape [1, 134217728], too large"],
    ));

    // -- QDQ and QOperator --
    let s0 = || f32_init("s", &[], &[0.5]);
    v.push(at_n(
        "scale 0",
        "DequantizeLinear",
        dq(f32_init("s", &[], &[0.0]), None, vec![]),
        &["scale #0 is 0; qcc needs positive, finite scales"],
    ));
    v.push(at_n(
        "zero point and scale of two sizes",
        "DequantizeLinear",
        dq(
            f32_init("s", &[2], &[0.5, 0.5]),
            Some(i32_init("z", 3, &[3], &[0, 0, 0])),
            vec![int_attr("axis", 0)],
        ),
        &["the zero point has 3 elements, the scale 2"],
    ));
    let mut m = dq(s0(), None, vec![]);
    {
        let g = m.graph.as_mut().unwrap();
        g.node[0].input.push("z".into());
        let add = node("Add", "zp", &["z127", "z1"], &["z"]);
        g.node.insert(0, add);
        g.initializer.push(i32_init("z127", 3, &[], &[127]));
        g.initializer.push(i32_init("z1", 3, &[], &[1]));
    }
    v.push(at_n(
        "zero point 128 of int8",
        "DequantizeLinear",
        m,
        &["zero point 128 is outside the range of int8"],
    ));
    v.push(at_n(
        "blocked scale of another rank",
        "DequantizeLinear",
        dq(
            f32_init("s", &[2], &[0.5, 0.5]),
            None,
            vec![int_attr("block_size", 2)],
        ),
        &["blocked quantization needs a scale of the input's rank 2, found shape [2]"],
    ));
    v.push(at_n(
        "blocked axis out of range",
        "DequantizeLinear",
        dq(
            f32_init("s", &[2, 2], &[0.5; 4]),
            None,
            vec![int_attr("block_size", 2), int_attr("axis", 5)],
        ),
        &["attribute `axis`: axis 5 is out of range for rank 2"],
    ));
    v.push(at_n(
        "blocked scale that does not fit",
        "DequantizeLinear",
        dq(
            f32_init("s", &[2, 3], &[0.5; 6]),
            None,
            vec![int_attr("block_size", 2)],
        ),
        &["blocked scale shape [2, 3] does not fit input shape [2, 4] with block_size 2 along axis 1"],
    ));
    v.push(at_n(
        "per-axis axis out of range",
        "DequantizeLinear",
        dq(
            f32_init("s", &[2], &[0.5, 0.5]),
            None,
            vec![int_attr("axis", 5)],
        ),
        &["attribute `axis`: axis 5 is out of range for rank 2"],
    ));
    v.push(at_n(
        "per-axis scale of the wrong length",
        "DequantizeLinear",
        dq(
            f32_init("s", &[3], &[0.5; 3]),
            None,
            vec![int_attr("axis", 0)],
        ),
        &["per-axis scale has 3 elements, axis 0 of [2, 4] has 2"],
    ));
    v.push(at_n(
        "scale neither per-tensor, per-axis nor blocked",
        "DequantizeLinear",
        dq(f32_init("s", &[2, 4], &[0.5; 8]), None, vec![]),
        &["neither per-tensor, per-axis nor blocked"],
    ));
    v.push(at_n(
        "uint8 input with an int8 zero point",
        "MatMulInteger",
        one(
            "MatMulInteger",
            &["a", "b", "az"],
            vec![],
            vec![vi("a", 2, &[1, 4])],
            vec![
                i32_init("b", 3, &[4, 2], &[1; 8]),
                i32_init("az", 3, &[], &[0]),
            ],
        ),
        &["input 0 has type", "but its quantization parameters say i8"],
    ));
    v.push(at_n(
        "requantization scale 0",
        "QLinearConv",
        qconv(vec![sc("xs", 1e-30), sc("ws", 1e-30), sc("ys", 1e30)]),
        &[
            "requantization scale 0 is not positive and finite",
            "output scale",
        ],
    ));
    v.push(at_n(
        "requantization scale 10^30",
        "QLinearConv",
        qconv(vec![sc("xs", 1e15), sc("ws", 1e15), sc("ys", 1.0)]),
        &["is too large", "output scale"],
    ));
    v.push(at_n(
        "QuantizeLinear precision",
        "QuantizeLinear",
        one(
            "QuantizeLinear",
            &["x", "s"],
            vec![int_attr("precision", 10)],
            xa(),
            vec![s0()],
        ),
        &["attribute `precision` = float16 is not supported (float32 only)"],
    ));
    v.push(at_n(
        "QuantizeLinear output_dtype against the zero point",
        "QuantizeLinear",
        one(
            "QuantizeLinear",
            &["x", "s", "z"],
            vec![int_attr("output_dtype", 3)],
            xa(),
            vec![s0(), i32_init("z", 2, &[], &[0])],
        ),
        &["attribute `output_dtype` (int8) differs from the zero point's type (uint8)"],
    ));
    v.push(at_n(
        "DequantizeLinear output_dtype",
        "DequantizeLinear",
        dq(s0(), None, vec![int_attr("output_dtype", 10)]),
        &["attribute `output_dtype` = float16 is not supported (float32 only)"],
    ));
    v.push(at_n(
        "DequantizeLinear zero point of another type",
        "DequantizeLinear",
        dq(s0(), Some(i32_init("z", 2, &[], &[0])), vec![]),
        &["the zero point is uint8, the input int8"],
    ));
    v.push(at_n(
        "QLinearConv x_scale of two values",
        "QLinearConv",
        qconv(vec![f32_init("xs", &[2], &[0.1, 0.1])]),
        &["`x_scale` must be a single value (per tensor)"],
    ));
    v.push(at_n(
        "QLinearConv y_scale of two values",
        "QLinearConv",
        qconv(vec![f32_init("ys", &[2], &[0.1, 0.1])]),
        &["`y_scale` must be a single value (per tensor)"],
    ));
    v.push(at_n(
        "ConvInteger 1-D",
        "ConvInteger",
        one(
            "ConvInteger",
            &["x", "w"],
            vec![],
            vec![vi("x", 2, &[1, 1, 4])],
            vec![i32_init("w", 2, &[1, 1, 1], &[1])],
        ),
        &["only 2-D convolutions are supported"],
    ));
    v.push(at_n(
        "QLinearConv bias of two values",
        "QLinearConv",
        qconv(vec![i32_init("b", 6, &[2], &[0, 0])]),
        &["the bias has 2 elements, 1 expected"],
    ));
    v.push(at_n(
        "QLinearConv scalar weights",
        "QLinearConv",
        qconv(vec![i32_init("w", 3, &[], &[1])]),
        &["input 3 (`w`) is a scalar"],
    ));
    v.push(at_n(
        "MatMulInteger per-row zero point",
        "MatMulInteger",
        one(
            "MatMulInteger",
            &["a", "b", "az"],
            vec![],
            vec![vi("a", 2, &[2, 4])],
            vec![
                i32_init("b", 2, &[4, 2], &[1; 8]),
                i32_init("az", 2, &[2], &[0, 0]),
            ],
        ),
        &["the zero point of input 0 must be a single value"],
    ));
    v.push(at_n(
        "QGemm of 1-D B",
        "com.microsoft:QGemm",
        qgemm(i32_init("b", 2, &[4], &[1; 4]), None),
        &["input 3 (`B`) has shape [4]; it must be 2-D"],
    ));
    v.push(at_n(
        "QGemm bias of three values",
        "com.microsoft:QGemm",
        qgemm(
            i32_init("b", 2, &[4, 2], &[1; 8]),
            Some(i32_init("c", 6, &[3], &[0; 3])),
        ),
        &["C has shape [3]; only a bias of 2 elements"],
    ));
    v.push(at_n(
        "QLinearConcat of four inputs",
        "com.microsoft:QLinearConcat",
        qconcat(&["ys", "yz", "x", "xs"], vec![int_attr("axis", 1)]),
        &["found 4 inputs"],
    ));
    v.push(at_n(
        "QLinearConcat without axis",
        "com.microsoft:QLinearConcat",
        qconcat(&["ys", "yz", "x", "xs", "xz"], vec![]),
        &["attribute `axis` is required"],
    ));
    v.push(at_n(
        "QLinearConcat axis out of range",
        "com.microsoft:QLinearConcat",
        qconcat(&["ys", "yz", "x", "xs", "xz"], vec![int_attr("axis", 5)]),
        &["attribute `axis`: axis 5 is out of range for rank 2"],
    ));

    // -- dynamic quantization (quant.rs, rnn.rs) --
    // Integer products whose left zero point is a run-time input (uint8 `az`).
    let u8x = |dims: &[i64]| vi("x", 2, dims);
    let u8z = |name: &str, dims: &[i64]| vi(name, 2, dims);
    v.push(at_n(
        "DynamicQuantizeLinear of two inputs",
        "DynamicQuantizeLinear",
        one("DynamicQuantizeLinear", &["x", "x"], vec![], xa(), vec![]),
        &["expected 1 input (x), found 2"],
    ));
    v.push(at_n(
        "ConvInteger run-time w_zero_point",
        "ConvInteger",
        one(
            "ConvInteger",
            &["x", "w", "", "wz"],
            vec![],
            vec![u8x(&[1, 1, 3, 3]), u8z("wz", &[])],
            vec![i32_init("w", 2, &[1, 1, 1, 1], &[1])],
        ),
        &["input 3 (`w_zero_point`) must be a constant"],
    ));
    v.push(at_n(
        "ConvInteger run-time w with a run-time x_zero_point",
        "ConvInteger",
        one(
            "ConvInteger",
            &["x", "w", "xz"],
            vec![],
            vec![
                u8x(&[1, 1, 3, 3]),
                vi("w", 2, &[1, 1, 1, 1]),
                u8z("xz", &[]),
            ],
            vec![],
        ),
        &["input 1 (`w`) must be a constant when `x_zero_point` is only known at run time"],
    ));
    let mmi = |a: ValueInfoProto, az: ValueInfoProto, b: TensorProto| {
        one(
            "MatMulInteger",
            &["x", "b", "az"],
            vec![],
            vec![a, az],
            vec![b],
        )
    };
    let b42 = || i32_init("b", 2, &[4, 2], &[1; 8]);
    v.push(at_n(
        "MatMulInteger run-time b_zero_point",
        "MatMulInteger",
        one(
            "MatMulInteger",
            &["x", "b", "", "bz"],
            vec![],
            vec![u8x(&[1, 4]), u8z("bz", &[])],
            vec![b42()],
        ),
        &["input 3 (`b_zero_point`) must be a constant"],
    ));
    v.push(at_n(
        "MatMulInteger run-time B with a run-time a_zero_point",
        "MatMulInteger",
        one(
            "MatMulInteger",
            &["x", "b", "az"],
            vec![],
            vec![u8x(&[1, 4]), vi("b", 2, &[4, 2]), u8z("az", &[])],
            vec![],
        ),
        &["input 1 (`B`) must be a constant when `a_zero_point` is only known at run time"],
    ));
    v.push(at_n(
        "MatMulInteger run-time int8 zero point of uint8 A",
        "MatMulInteger",
        mmi(u8x(&[1, 4]), vi("az", 3, &[]), b42()),
        &["input 2 (the zero point of input 0) is int8, input 0 is uint8"],
    ));
    v.push(at_n(
        "MatMulInteger run-time zero point of int16 A",
        "MatMulInteger",
        mmi(
            vi("x", 5, &[1, 4]),
            vi("az", 5, &[]),
            i32_init("b", 5, &[4, 2], &[1; 8]),
        ),
        &["input 0 is int16; a run-time zero point needs uint8 or int8"],
    ));
    v.push(at_n(
        "MatMulInteger run-time zero point of two values",
        "MatMulInteger",
        mmi(u8x(&[2, 4]), u8z("az", &[2]), b42()),
        &["input 2 (the run-time zero point of input 0) has shape [2]; it must be a single value"],
    ));
    v.push(at_n(
        "MatMulInteger run-time zero point with 3-D B",
        "MatMulInteger",
        mmi(
            u8x(&[1, 4]),
            u8z("az", &[]),
            i32_init("b", 2, &[2, 4, 2], &[1; 16]),
        ),
        &["the integer matrix has shape [2, 4, 2]", "it must be 2-D"],
    ));
    // com.microsoft DynamicQuantizeMatMul(A, B, b_scale, b_zero_point, bias), A float[1,4].
    let dqmm = |ins: &[&str], inputs: Vec<ValueInfoProto>, inits: Vec<TensorProto>| {
        in_domain(
            one("DynamicQuantizeMatMul", ins, vec![], inputs, inits),
            "com.microsoft",
        )
    };
    let bs = || f32_init("bs", &[], &[0.1]);
    let bi8 = || i32_init("b", 3, &[4, 2], &[1; 8]);
    v.push(at_n(
        "DynamicQuantizeMatMul of two inputs",
        "com.microsoft:DynamicQuantizeMatMul",
        dqmm(&["x", "b"], xa(), vec![bi8()]),
        &["expected 3 to 5 inputs", "found 2"],
    ));
    v.push(at_n(
        "DynamicQuantizeMatMul of 1-D B",
        "com.microsoft:DynamicQuantizeMatMul",
        dqmm(
            &["x", "b", "bs"],
            xa(),
            vec![i32_init("b", 3, &[4], &[1; 4]), bs()],
        ),
        &["input 1 (`B`) has shape [4]; qcc needs a constant 2-D B"],
    ));
    v.push(at_n(
        "DynamicQuantizeMatMul of run-time B",
        "com.microsoft:DynamicQuantizeMatMul",
        dqmm(
            &["x", "b", "bs"],
            vec![x4(), vi("b", 3, &[4, 2])],
            vec![bs()],
        ),
        &["input 1 (`B`) must be a constant (the quantized weights)"],
    ));
    v.push(at_n(
        "DynamicQuantizeMatMul of int32 B",
        "com.microsoft:DynamicQuantizeMatMul",
        dqmm(
            &["x", "b", "bs"],
            xa(),
            vec![i32_init("b", 6, &[4, 2], &[1; 8]), bs()],
        ),
        &["input 1 (`B`) is int32; int8 or uint8 works"],
    ));
    v.push(at_n(
        "DynamicQuantizeMatMul b_scale of three values",
        "com.microsoft:DynamicQuantizeMatMul",
        dqmm(
            &["x", "b", "bs"],
            xa(),
            vec![bi8(), f32_init("bs", &[3], &[0.1; 3])],
        ),
        &["input 2 (`b_scale`) has shape [3]; one value or one per column (2) is needed"],
    ));
    v.push(at_n(
        "DynamicQuantizeMatMul b_zero_point of three values",
        "com.microsoft:DynamicQuantizeMatMul",
        dqmm(
            &["x", "b", "bs", "bz"],
            xa(),
            vec![bi8(), bs(), i32_init("bz", 3, &[3], &[0; 3])],
        ),
        &["input 3 (`b_zero_point`) has shape [3]; one value or one per column (2) is needed"],
    ));
    v.push(at_n(
        "DynamicQuantizeMatMul bias of three values",
        "com.microsoft:DynamicQuantizeMatMul",
        dqmm(
            &["x", "b", "bs", "", "bias"],
            xa(),
            vec![bi8(), bs(), f32_init("bias", &[3], &[0.0; 3])],
        ),
        &["input 4 (`bias`) has shape [3]; expected [2]"],
    ));
    // com.microsoft DynamicQuantizeLSTM over x [5, 1, 4], hidden 2: W int8 [1, 4, 8],
    // R int8 [1, 2, 8], per-tensor scales and zero points; `inits` and `inputs` replace
    // the defaults of the same name.
    let dqlstm = |ins: &[&str], inputs: Vec<ValueInfoProto>, inits: Vec<TensorProto>| {
        let mut all = vec![
            i32_init("W", 3, &[1, 4, 8], &[1; 32]),
            i32_init("R", 3, &[1, 2, 8], &[1; 16]),
            f32_init("ws", &[1], &[0.1]),
            i32_init("wz", 3, &[1], &[0]),
            f32_init("rs", &[1], &[0.1]),
            i32_init("rz", 3, &[1], &[0]),
        ];
        // Defaults give way to initializers and graph inputs of the same name.
        let names: Vec<String> = inits
            .iter()
            .map(|t| t.name.clone())
            .chain(inputs.iter().map(|i| i.name.clone()))
            .collect();
        all.retain(|t| !names.contains(&t.name));
        all.extend(inits);
        let mut inputs = inputs;
        inputs.insert(0, vi("x", 1, &[5, 1, 4]));
        in_domain(
            one("DynamicQuantizeLSTM", ins, vec![], inputs, all),
            "com.microsoft",
        )
    };
    let all12 = ["x", "W", "R", "", "", "", "", "", "ws", "wz", "rs", "rz"];
    v.push(at_n(
        "DynamicQuantizeLSTM of 11 inputs",
        "com.microsoft:DynamicQuantizeLSTM",
        dqlstm(&all12[..11], vec![], vec![]),
        &["expected 12 inputs", "found 11"],
    ));
    v.push(at_n(
        "DynamicQuantizeLSTM run-time W",
        "com.microsoft:DynamicQuantizeLSTM",
        dqlstm(&all12, vec![vi("W", 3, &[1, 4, 8])], vec![]),
        &["DynamicQuantizeLSTM's `W` must be constant int8/uint8 weights"],
    ));
    let mut wf = f("W", &[1, 4, 8]);
    wf.name = "W".into();
    v.push(at_n(
        "DynamicQuantizeLSTM float W",
        "com.microsoft:DynamicQuantizeLSTM",
        dqlstm(&all12, vec![], vec![wf]),
        &["input 1 (`W`) is float; int8 or uint8 works"],
    ));
    v.push(at_n(
        "DynamicQuantizeLSTM 2-D W",
        "com.microsoft:DynamicQuantizeLSTM",
        dqlstm(&all12, vec![], vec![i32_init("W", 3, &[4, 8], &[1; 32])]),
        &["input 1 (`W`) has shape [4, 8]; expected [num_directions, input_size, 4*hidden_size]"],
    ));
    v.push(at_n(
        "DynamicQuantizeLSTM W_scale of the wrong shape",
        "com.microsoft:DynamicQuantizeLSTM",
        dqlstm(&all12, vec![], vec![f32_init("ws", &[1, 3], &[0.1; 3])]),
        &["`W_scale` has shape [1, 3]; expected [1] (per tensor) or [1, 8] (per channel)"],
    ));
    v.push(at_n(
        "DynamicQuantizeLSTM uint8 zero point of int8 W",
        "com.microsoft:DynamicQuantizeLSTM",
        dqlstm(&all12, vec![], vec![i32_init("wz", 2, &[1], &[0])]),
        &["`W_zero_point` is uint8, `W` int8"],
    ));
    v.push(at_n(
        "DynamicQuantizeLSTM R_scale 0",
        "com.microsoft:DynamicQuantizeLSTM",
        dqlstm(&all12, vec![], vec![f32_init("rs", &[1], &[0.0])]),
        &["`R_scale` holds 0; scales must be positive and finite"],
    ));
    v.push(at_n(
        "DynamicQuantizeLSTM W of the wrong input size",
        "com.microsoft:DynamicQuantizeLSTM",
        dqlstm(&all12, vec![], vec![i32_init("W", 3, &[1, 3, 8], &[1; 24])]),
        &["input 1 (`W`) has shape [1, 3, 8]; expected [1, 4, 4 * hidden_size]"],
    ));
    v.push(at_n(
        "DynamicQuantizeLSTM R of the wrong shape",
        "com.microsoft:DynamicQuantizeLSTM",
        dqlstm(&all12, vec![], vec![i32_init("R", 3, &[1, 8, 2], &[1; 16])]),
        &["input 2 (`R`) has shape [1, 8, 2]; expected [1, 2, 8]"],
    ));

    // -- recurrent layers (rnn.rs): RNN over x [5, 1, 4], hidden 2 --
    let rnn = |ins: &[&str], attrs: Vec<AttributeProto>, extra: Vec<TensorProto>| {
        let mut inits = vec![f("W", &[1, 2, 4]), f("R", &[1, 2, 2])];
        inits.extend(extra);
        one("RNN", ins, attrs, vec![vi("x", 1, &[5, 1, 4])], inits)
    };
    let mut fa = AttributeProto::new();
    fa.name = "activation_alpha".into();
    fa.type_ = AttributeType::FLOATS.into();
    fa.floats = vec![0.5];
    let strs = |name: &str, v: &[&str]| {
        let mut a = AttributeProto::new();
        a.name = name.into();
        a.type_ = AttributeType::STRINGS.into();
        a.strings = v.iter().map(|s| s.as_bytes().to_vec()).collect();
        a
    };
    v.push(at_n(
        "RNN layout 2",
        "RNN",
        rnn(&["x", "W", "R"], vec![int_attr("layout", 2)], vec![]),
        &["attribute `layout` is 2; 0 or 1 works"],
    ));
    v.push(at_n(
        "RNN direction sideways",
        "RNN",
        rnn(
            &["x", "W", "R"],
            vec![str_attr("direction", "sideways")],
            vec![],
        ),
        &["attribute `direction` is \"sideways\"; forward, reverse or bidirectional works"],
    ));
    v.push(at_n(
        "RNN of a rank-2 input",
        "RNN",
        one(
            "RNN",
            &["x", "W", "R"],
            vec![],
            xa(),
            vec![f("W", &[1, 2, 4]), f("R", &[1, 2, 2])],
        ),
        &["input 0 (`X`) has shape [1, 4]; expected rank 3"],
    ));
    v.push(at_n(
        "RNN W of the wrong shape",
        "RNN",
        one(
            "RNN",
            &["x", "W", "R"],
            vec![],
            vec![vi("x", 1, &[5, 1, 4])],
            vec![f("W", &[1, 2, 3]), f("R", &[1, 2, 2])],
        ),
        &["input 1 (`W`) has shape [1, 2, 3]; expected [1, 1 * hidden_size, 4]"],
    ));
    v.push(at_n(
        "RNN hidden_size against W",
        "RNN",
        rnn(&["x", "W", "R"], vec![int_attr("hidden_size", 3)], vec![]),
        &["attribute `hidden_size` is 3 but `W` has 2 rows per direction"],
    ));
    v.push(at_n(
        "RNN R of the wrong shape",
        "RNN",
        one(
            "RNN",
            &["x", "W", "R"],
            vec![],
            vec![vi("x", 1, &[5, 1, 4])],
            vec![f("W", &[1, 2, 4]), f("R", &[1, 2, 3])],
        ),
        &["input 2 (`R`) has shape [1, 2, 3]; expected [1, 2, 2]"],
    ));
    v.push(at_n(
        "RNN run-time sequence_lens",
        "RNN",
        one(
            "RNN",
            &["x", "W", "R", "", "lens"],
            vec![],
            vec![vi("x", 1, &[5, 1, 4]), vi("lens", 6, &[1])],
            vec![f("W", &[1, 2, 4]), f("R", &[1, 2, 2])],
        ),
        &["`sequence_lens` must be a constant"],
    ));
    v.push(at_n(
        "RNN short sequence_lens",
        "RNN",
        rnn(
            &["x", "W", "R", "", "lens"],
            vec![],
            vec![i32_init("lens", 6, &[1], &[3])],
        ),
        &["input 4 (`sequence_lens`) is [3]; qcc unrolls every batch entry over the whole sequence (5 steps)"],
    ));
    v.push(at_n(
        "LSTM input_forget",
        "LSTM",
        one(
            "LSTM",
            &["x", "W", "R"],
            vec![int_attr("input_forget", 1)],
            vec![vi("x", 1, &[5, 1, 4])],
            vec![f("W", &[1, 8, 4]), f("R", &[1, 8, 2])],
        ),
        &["attribute `input_forget` = 1 (coupled input and forget gates) is not supported; 0 works"],
    ));
    v.push(at_n(
        "RNN activation_alpha",
        "RNN",
        rnn(&["x", "W", "R"], vec![fa], vec![]),
        &["attributes `activation_alpha`/`activation_beta` are not supported"],
    ));
    v.push(at_n(
        "RNN with two activations",
        "RNN",
        rnn(
            &["x", "W", "R"],
            vec![strs("activations", &["Tanh", "Tanh"])],
            vec![],
        ),
        &["attribute `activations` lists 2 functions; 1 per direction are needed"],
    ));
    v.push(at_n(
        "RNN with a Softsign activation",
        "RNN",
        rnn(
            &["x", "W", "R"],
            vec![strs("activations", &["Softsign"])],
            vec![],
        ),
        &["attribute `activations`: Softsign is not supported; Sigmoid, Tanh or Relu works"],
    ));
    v.push(at_n(
        "RNN B of the wrong shape",
        "RNN",
        rnn(&["x", "W", "R", "B"], vec![], vec![f("B", &[1, 2])]),
        &["input 3 (`B`) has shape [1, 2]; expected [1, 4]"],
    ));
    v.push(at_n(
        "RNN initial_h of the wrong shape",
        "RNN",
        rnn(
            &["x", "W", "R", "", "", "h0"],
            vec![],
            vec![f("h0", &[1, 2, 2])],
        ),
        &["input 5 (`initial_h`) has shape [1, 2, 2]; expected [1, 1, 2]"],
    ));
    v.push(at_n(
        "LSTM P of the wrong shape",
        "LSTM",
        one(
            "LSTM",
            &["x", "W", "R", "", "", "", "", "P"],
            vec![],
            vec![vi("x", 1, &[5, 1, 4])],
            vec![f("W", &[1, 8, 4]), f("R", &[1, 8, 2]), f("P", &[1, 2])],
        ),
        &["input 7 (`P`) has shape [1, 2]; expected [1, 6]"],
    ));

    // -- comparisons, booleans, Where, ArgMax, TopK, OneHot (logic.rs), integer Max/Min --
    let ins = |specs: &[(&str, i32)]| -> Vec<ValueInfoProto> {
        specs.iter().map(|&(n, e)| vi(n, e, &[1, 4])).collect()
    };
    v.push(at_n(
        "Equal of float and an int32 constant",
        "Equal",
        one(
            "Equal",
            &["x", "c"],
            vec![],
            xa(),
            vec![i32_init("c", 6, &[4], &[1, 2, 3, 4])],
        ),
        &["input 1 is int32, input 0 float; they must have one element type"],
    ));
    v.push(at_n(
        "Less of int8 and 1000",
        "Less",
        one(
            "Less",
            &["x", "c"],
            vec![],
            ins(&[("x", 3)]),
            vec![i32_init("c", 6, &[1], &[1000])],
        ),
        &["input 1: constant `c` holds 1000, which i8 cannot hold"],
    ));
    v.push(at_n(
        "Greater of float and int32",
        "Greater",
        one(
            "Greater",
            &["x", "z"],
            vec![],
            ins(&[("x", 1), ("z", 6)]),
            vec![],
        ),
        &["input 0 is float, input 1 int32; they must have one element type"],
    ));
    v.push(at_n(
        "Equal of constants that do not broadcast",
        "Equal",
        one(
            "Equal",
            &["a", "b"],
            vec![],
            xa(),
            vec![f("a", &[2]), f("b", &[3])],
        ),
        &["shapes [2] and [3] do not broadcast"],
    ));
    let zeros_of = |out: &str, dims: &[i64]| -> Vec<NodeProto> {
        let shape = format!("{out}_shape");
        let mut c = node("Constant", &shape, &[], &[&shape]);
        c.attribute.push(ints_attr("value_ints", dims));
        vec![c, node("ConstantOfShape", out, &[&shape], &[out])]
    };
    let mut wide = zeros_of("za", &[1 << 20, 1]);
    wide.extend(zeros_of("zb", &[1, 1 << 20]));
    v.push(at_n(
        "Equal of constants to 2^40 elements",
        "Equal",
        before(
            one("Equal", &["za", "zb"], vec![], xa(), vec![]),
            wide.clone(),
        ),
        &["would have shape [1048576, 1048576], too large"],
    ));
    v.push(at_n(
        "Not of float",
        "Not",
        one("Not", &["x"], vec![], xa(), vec![]),
        &["input 0 must be bool, found float"],
    ));
    v.push(at_n(
        "Where of float and int64 constants",
        "Where",
        one(
            "Where",
            &["c", "a", "b"],
            vec![],
            xa(),
            vec![i32_init("c", 9, &[1], &[1]), f("a", &[1]), t("b", &[1])],
        ),
        &["input 1 is float, input 2 int64; they must have one element type"],
    ));
    v.push(at_n(
        "Where of constants that do not broadcast",
        "Where",
        one(
            "Where",
            &["c", "a", "b"],
            vec![],
            xa(),
            vec![i32_init("c", 9, &[2], &[1, 0]), f("a", &[3]), f("b", &[3])],
        ),
        &["shapes [2] and [3] do not broadcast"],
    ));
    v.push(at_n(
        "Where of constants to 2^40 elements",
        "Where",
        before(
            one("Where", &["za", "zb", "zb"], vec![], xa(), vec![]),
            wide,
        ),
        &["would have shape [1048576, 1048576], too large"],
    ));
    v.push(at_n(
        "ArgMax axis out of range",
        "ArgMax",
        one("ArgMax", &["x"], vec![int_attr("axis", 2)], xa(), vec![]),
        &["attribute `axis`: axis 2 is out of range for rank 2"],
    ));
    let top_k =
        |k: TensorProto, attrs: Vec<AttributeProto>| one("TopK", &["x", "k"], attrs, xa(), vec![k]);
    v.push(at_n(
        "TopK axis out of range",
        "TopK",
        top_k(t("k", &[1]), vec![int_attr("axis", -3)]),
        &["attribute `axis`: axis -3 is out of range for rank 2"],
    ));
    v.push(at_n(
        "TopK with K = 1.5",
        "TopK",
        top_k(f32_init("k", &[1], &[1.5]), vec![]),
        &["input 1 (`K`): expected integers, found 1.5"],
    ));
    v.push(at_n(
        "TopK with two K values",
        "TopK",
        top_k(t("k", &[1, 2]), vec![]),
        &["input 1 (`K`) must hold one value, found 2 values"],
    ));
    v.push(at_n(
        "TopK with k larger than the axis",
        "TopK",
        top_k(t("k", &[5]), vec![]),
        &["k = 5 must be in 0..=4 (the length of axis 1 of input 0, shape [1, 4])"],
    ));
    v.push(at_n(
        "TopK without k at opset 9",
        "TopK",
        opset(one("TopK", &["x"], vec![], xa(), vec![]), 9),
        &["attribute `k` is required"],
    ));
    let one_hot = |i: ValueInfoProto, d: TensorProto, vals: TensorProto, attrs| {
        let name = i.name.clone();
        one(
            "OneHot",
            &[name.as_str(), "d", "v"],
            attrs,
            vec![i],
            vec![d, vals],
        )
    };
    let idx = || vi("i", 6, &[1, 4]);
    let off_on = || f32_init("v", &[2], &[0.0, 1.0]);
    v.push(at_n(
        "OneHot depth of two values",
        "OneHot",
        one_hot(idx(), t("d", &[3, 4]), off_on(), vec![]),
        &["input 1 (`depth`) must hold one value"],
    ));
    v.push(at_n(
        "OneHot depth 0",
        "OneHot",
        one_hot(idx(), t("d", &[0]), off_on(), vec![]),
        &["input 1 (`depth`) = 0 must be at least 1"],
    ));
    v.push(at_n(
        "OneHot values of three",
        "OneHot",
        one_hot(
            idx(),
            t("d", &[3]),
            f32_init("v", &[3], &[0.0, 1.0, 2.0]),
            vec![],
        ),
        &["input 2 (`values`) must hold two values [off, on], found 3"],
    ));
    v.push(at_n(
        "OneHot axis out of range",
        "OneHot",
        one_hot(idx(), t("d", &[3]), off_on(), vec![int_attr("axis", 3)]),
        &["attribute `axis`: axis 3 is out of range for rank 3"],
    ));
    v.push(at_n(
        "OneHot values beyond int32",
        "OneHot",
        one_hot(idx(), t("d", &[3]), t("v", &[0, 1 << 40]), vec![]),
        &["input 2 (`values`): an int64 tensor with values beyond int32"],
    ));
    let mut big_u32 = TensorProto::new();
    big_u32.name = "v".into();
    big_u32.data_type = 12; // uint32, held in uint64_data
    big_u32.dims = vec![2];
    big_u32.uint64_data = vec![0, 1 << 33];
    v.push(at_n(
        "OneHot uint32 values beyond 2^32",
        "OneHot",
        one_hot(idx(), t("d", &[3]), big_u32, vec![]),
        &["input 2 (`values`) = [0, 8589934592] does not fit u32"],
    ));
    v.push(at_n(
        "OneHot of quantized indices",
        "OneHot",
        model(
            vec![
                node("QuantizeLinear", "quant", &["x", "s", "zp"], &["q"]),
                node("OneHot", "n", &["q", "d", "v"], &["y"]),
            ],
            xa(),
            vec![s0(), i32_init("zp", 2, &[], &[0]), t("d", &[3]), off_on()],
            &["y"],
        ),
        &["input 0 (`indices`) of type q<u8, 0.5:0> is not supported"],
    ));
    v.push(at_n(
        "Max of int8 and int16",
        "Max",
        one(
            "Max",
            &["x", "z"],
            vec![],
            ins(&[("x", 3), ("z", 5)]),
            vec![],
        ),
        &["input 1 is int16, another input int8; the inputs must have one element type"],
    ));
    v.push(at_n(
        "Min of uint8 and -1",
        "Min",
        one(
            "Min",
            &["x", "c"],
            vec![],
            ins(&[("x", 2)]),
            vec![i32_init("c", 6, &[1], &[-1])],
        ),
        &["input 1: constant `c` holds -1, which u8 cannot hold"],
    ));

    // -- initializers --
    let mut w = TensorProto::new();
    w.name = "w".into();
    w.data_type = 22; // int4
    w.dims = vec![1, 4];
    w.raw_data = vec![0; 3];
    v.push(case(
        "importer error",
        "packed int4 raw data of 3 bytes",
        one(
            "DequantizeLinear",
            &["w", "s"],
            vec![],
            vec![],
            vec![w, s0()],
        ),
        &[
            "initializer `w`",
            "raw data has 3 bytes, 4 packed elements of int4 need 2",
        ],
    ));
    let mut w = f32_init("w", &[1, 4], &[]);
    external(&mut w, &[("location", "data.bin"), ("length", "lots")]);
    v.push(case(
        "external data",
        "length not a number",
        add_init(w),
        &[
            "initializer `w`",
            "external data length `lots` is not a byte count",
        ],
    ));
    v
}

/// Every user-facing error return of the ONNX importer (`compiler/src/frontend/onnx/`
/// and what it calls), and the case above that reaches it; sites that make the same
/// check in a shared helper are one path. `"unreachable: ..."` says why no model file
/// reaches a path; `(regression)` rows are extra cases for paths that once panicked.
/// `importer_paths_have_cases` checks that every named case exists and that every
/// `importer error` case has a row.
#[rustfmt::skip]
const IMPORTER_PATHS: &[(&str, &str)] = &[
    // mod.rs: reading the file, versions, graph structure, graph inputs and outputs
    ("read_model: the file cannot be read", "missing file"),
    ("read_model: not a protobuf", "random bytes"),
    ("read_model: no graph", "no graph"),
    ("check_versions: IR version too new", "IR version 99"),
    ("check_versions: IR version negative", "negative IR version"),
    ("check_versions: default opset too new", "opset 99"),
    ("check_versions: opset below 1", "opset 0"),
    ("check_graph: two initializers of one name", "two initializers of one name"),
    ("check_graph: a graph input listed twice", "graph input listed twice"),
    ("check_graph: a tensor with two producers", "two nodes produce one tensor"),
    ("check_graph: a cycle", "two-node cycle"),
    ("check_supported: unknown op", "unsupported op"),
    ("check_supported: op outside the model's opset", "op too new for the model's opset"),
    ("import_named: --input-shape of no input", "--input-shape of no input"),
    ("import_named: an initializer that does not decode (tensor.rs below)", "float_data shorter than its shape"),
    ("import_named: sparse initializer", "sparse initializer"),
    ("import_named: graph input over 2^32 elements", "2^40 input"),
    ("import_named: bound value of another shape", "unreachable: bindings are a library option (ImportOptions::bindings), not set by qcc's commands"),
    ("import_named: attribute referring to a function attribute", "function attribute reference"),
    ("import_named: a node output the handler did not make", "output the importer does not make"),
    ("import_named: graph output nobody produces", "output nobody produces"),
    ("import_named: no outputs", "no outputs"),
    ("import_named: module invalid after import (Internal)", "unreachable: an internal error, a qcc bug rather than the model's"),
    ("input_shape: negative declared dimension", "negative input dimension"),
    ("input_shape: --input-shape of another rank", "--input-shape of another rank"),
    ("input_shape: --input-shape against a fixed dimension", "--input-shape against a fixed dim"),
    ("input_shape: input without a shape", "input without a type"),
    ("input_shape: symbolic inner dimension", "symbolic inner dimension"),
    // ctx.rs: what every handler reads
    ("NodeCx::input_name: missing input", "missing node input"),
    ("NodeCx::val: input nobody produces", "input from nowhere"),
    ("NodeCx::val / output_value: a value qcc cannot take (string input)", "string input"),
    ("Importer::default_type: int64 beyond int32 (operand or graph output)", "int64 output beyond int32"),
    ("Importer::default_type: element type the IR lacks (operand or graph output)", "double operand"),
    ("NodeCx::f32_in: integer constant", "int64 constant where float32 is needed"),
    ("NodeCx::f32_in: integer run-time value", "int8 input where float32 is needed"),
    ("NodeCx::konst: not a constant", "run-time input where a constant is needed"),
    ("NodeCx::konst: missing", "missing constant input"),
    ("NodeCx::konst_ints: not integers", "Reshape to a fractional shape"),
    ("NodeCx::want: attribute of the wrong type (every a_* reader)", "attribute of the wrong type"),
    ("NodeCx::a_tensor: no tensor", "tensor attribute without a tensor"),
    ("NodeCx::a_tensor: tensor that does not decode", "tensor attribute that does not decode"),
    ("NodeCx::reject_int_attr: value not implemented (Resize, QLinearGlobalAveragePool)", "attribute value not implemented"),
    ("Importer::const_value: integer out of the type's range", "bias beyond int32"),
    ("Importer::const_value: floats where integers are needed", "float bias where integers are needed"),
    ("Importer::const_value: element count against the type", "unreachable: every caller builds the type from the constant's own shape or checks the count first"),
    ("storage_of: quantized element type not supported", "float input to DequantizeLinear"),
    ("Importer::emit: result over 2^32 elements", "MatMul result of 2^34 elements"),
    ("Importer::emit: the IR's type rules (qcc_ir::typing::infer, every op)", "MatMul the type rules refuse"),
    ("Importer::emit: folding an all-constant node (interpreter)", "unreachable: the type rules, checked first, refuse what the interpreter would"),
    ("Importer::emit: the IR's type rules, broadcasting", "Add the type rules refuse"),
    // nn.rs
    ("pos: negative kernel_shape, strides, dilations, pads, output_padding, output_shape", "negative kernel_shape"),
    ("window: more than 2 spatial axes", "3-D convolution"),
    ("window: kernel of another rank", "kernel_shape of another rank"),
    ("window: strides, dilations or pads of the wrong length", "strides of the wrong length"),
    ("window: zero stride or dilation", "zero stride"),
    ("window: unknown auto_pad", "unknown auto_pad"),
    ("window: SAME padding over 2^31 - 1", "SAME padding of a 2^40 dilation"),
    ("conv: input and weights not [N,C,...] of one rank", "Conv of rank 2"),
    ("conv_transpose: input and weights not [N,C,...] of one rank", "ConvTranspose of rank 2"),
    ("conv_transpose: output_padding length", "output_padding of the wrong length"),
    ("conv_transpose: output_shape length", "output_shape of the wrong length"),
    ("conv_transpose: output_shape out of reach", "output_shape out of reach of a 2^62 stride"),
    ("batch_norm: training_mode", "BatchNormalization training_mode"),
    ("batch_norm: spatial = 0", "BatchNormalization spatial = 0 (opset 8)"),
    ("batch_norm: training outputs", "BatchNormalization training outputs"),
    ("pool: MaxPool Indices", "MaxPool Indices output"),
    ("pool: rank below 3", "MaxPool of rank 2"),
    ("pool: no kernel_shape", "MaxPool without kernel_shape"),
    ("pool: AveragePool dilations", "AveragePool dilations"),
    ("global_max_pool: rank below 3", "GlobalMaxPool of rank 2"),
    ("layer_norm: axis", "LayerNormalization axis out of range"),
    ("instance_norm: rank below 3", "InstanceNormalization of rank 2"),
    ("instance_norm: scale or B not per channel", "InstanceNormalization scale of the wrong shape"),
    ("softmax: axis", "Softmax axis out of range"),
    ("reduce_axes: axes", "reduction axis out of range"),
    ("resize: mode", "Resize mode"),
    ("resize: coordinate_transformation_mode", "Resize coordinate_transformation_mode"),
    ("resize: nearest_mode", "Resize nearest_mode"),
    ("resize: keep_aspect_ratio_policy", "Resize keep_aspect_ratio_policy"),
    ("resize: axes", "Resize axes out of range"),
    ("resize: scales length", "Resize scales of the wrong length"),
    ("resize: scale not positive", "Resize scale 0"),
    ("resize: sizes length", "Resize sizes of the wrong length"),
    ("resize: negative size", "Resize negative size"),
    ("resize: neither or both of scales and sizes", "Resize without scales or sizes"),
    // elementwise.rs
    ("variadic: no inputs", "Sum of nothing"),
    ("variadic: integer and float constants", "Sum of an int64 and a float constant"),
    ("int_binary: not integers", "unreachable: both callers pass integer constants only"),
    ("int_binary: shapes that do not broadcast", "int64 constants that do not broadcast"),
    ("int_binary: overflow or division by zero", "int64 division by zero"),
    ("clip: min or max not a scalar", "Clip min of two values"),
    ("unary_or_int: overflow", "Neg of the least int64"),
    ("prelu: slope that does not broadcast", "PRelu slope that does not broadcast"),
    ("prelu: slope larger than X", "PRelu slope larger than X"),
    ("gelu: approximate", "Gelu approximate"),
    ("variadic: integer Max/Min inputs of two types", "Max of int8 and int16"),
    ("variadic: an integer constant outside the run-time type (const_as)", "Min of uint8 and -1"),
    // rnn.rs
    ("recurrent: layout", "RNN layout 2"),
    ("recurrent: direction", "RNN direction sideways"),
    ("recurrent: X not of rank 3", "RNN of a rank-2 input"),
    ("recurrent: W shape", "RNN W of the wrong shape"),
    ("recurrent: hidden_size against W", "RNN hidden_size against W"),
    ("recurrent: R shape", "RNN R of the wrong shape"),
    ("recurrent: sequence_lens not a constant", "RNN run-time sequence_lens"),
    ("recurrent: sequence_lens shorter than the sequence", "RNN short sequence_lens"),
    ("recurrent: LSTM input_forget", "LSTM input_forget"),
    ("recurrent: activation_alpha/beta", "RNN activation_alpha"),
    ("recurrent: activations count", "RNN with two activations"),
    ("recurrent: unsupported activation", "RNN with a Softsign activation"),
    ("recurrent: B shape", "RNN B of the wrong shape"),
    ("recurrent: initial state shape", "RNN initial_h of the wrong shape"),
    ("recurrent: LSTM P shape", "LSTM P of the wrong shape"),
    ("dq_lstm: input count", "DynamicQuantizeLSTM of 11 inputs"),
    ("qmats: W or R not a constant", "DynamicQuantizeLSTM run-time W"),
    ("qmats: W or R not int8/uint8", "DynamicQuantizeLSTM float W"),
    ("qmats: W or R not of rank 3", "DynamicQuantizeLSTM 2-D W"),
    ("qmats: scale or zero point neither [nd] nor [nd, 4H]", "DynamicQuantizeLSTM W_scale of the wrong shape"),
    ("qmats: zero point of another type than the weights", "DynamicQuantizeLSTM uint8 zero point of int8 W"),
    ("qmats: qtype", "unreachable: scale 1 and a zero point of the weights' own type always make a type"),
    ("qmats: scale not positive and finite", "DynamicQuantizeLSTM R_scale 0"),
    ("qmats: codes and zero points as integers", "unreachable: both were checked to be int8/uint8"),
    ("qmats: col_sums", "unreachable: each direction's matrix is 2-D by construction"),
    ("recurrent: W shape (DynamicQuantizeLSTM's [nd, I, 4H])", "DynamicQuantizeLSTM W of the wrong input size"),
    ("recurrent: R shape (DynamicQuantizeLSTM's [nd, H, 4H])", "DynamicQuantizeLSTM R of the wrong shape"),
    // logic.rs
    ("same_type_pair: a constant of another element type", "Equal of float and an int32 constant"),
    ("same_type_pair: a constant outside the run-time integer type (const_as)", "Less of int8 and 1000"),
    ("same_type_pair: run-time operands of two element types", "Greater of float and int32"),
    ("fold2: constants that do not broadcast", "Equal of constants that do not broadcast"),
    ("fold2 / check_made: constant result over 2^26 elements", "Equal of constants to 2^40 elements"),
    ("bool_in: an operand that is not bool", "Not of float"),
    ("where_: constants of two element types", "Where of float and int64 constants"),
    ("where_: constants that do not broadcast", "Where of constants that do not broadcast"),
    ("where_ / check_made: constant result over 2^26 elements", "Where of constants to 2^40 elements"),
    ("where_: float and integer data of one type", "unreachable: one ONNX element type decodes to one kind of data"),
    ("arg: axis", "ArgMax axis out of range"),
    ("top_k: axis", "TopK axis out of range"),
    ("top_k: K not integral", "TopK with K = 1.5"),
    ("top_k: K of several values", "TopK with two K values"),
    ("top_k: k beyond the axis", "TopK with k larger than the axis"),
    ("top_k: no attribute k before opset 10", "TopK without k at opset 9"),
    ("one_hot: depth of several values", "OneHot depth of two values"),
    ("one_hot: depth below 1 or over 2^31-1", "OneHot depth 0"),
    ("one_hot: values not two", "OneHot values of three"),
    ("one_hot: indices neither float32 nor integers", "OneHot of quantized indices"),
    ("one_hot: axis", "OneHot axis out of range"),
    ("one_hot: values without an IR type (default_type)", "OneHot values beyond int32"),
    ("one_hot: values outside their integer type", "OneHot uint32 values beyond 2^32"),
    // qonnx.rs
    ("rounding: rounding_mode", "QONNX rounding_mode"),
    ("bit_width: not one value", "QONNX bit-width of two values"),
    ("bit_width: not an integer in 1..=32", "QONNX bit-width 40"),
    ("param: scale not positive and finite", "QONNX negative scale"),
    ("param: zero point not finite", "QONNX infinite zero point"),
    ("bool_attr: not 0 or 1", "QONNX signed = 2"),
    ("trunc: input count", "QONNX Trunc of three inputs"),
    // shape.rs
    ("ct_cast: constant cast to an unsupported type", "Cast of a constant to string"),
    ("cast_to: run-time cast of b1 to bool", "unreachable: b1 values come from binarizing rewrites, never from ONNX"),
    ("dropout: training_mode", "unsupported attribute value"),
    ("dropout: is_test = 0", "unreachable: only before opset 7, and Dropout is imported from opset 7"),
    ("dropout / check_made: mask over 2^26 elements", "Dropout mask of 2^27 elements"),
    ("constant: sparse_value", "Constant sparse_value"),
    ("constant: string", "Constant string"),
    ("constant: no value", "Constant without a value"),
    ("shape_arg: negative dimension (ConstantOfShape, Expand)", "ConstantOfShape of a negative dimension"),
    ("constant_of_shape: value not one element", "ConstantOfShape value of two elements"),
    ("check_made: constant over 2^26 elements (ConstantOfShape)", "ConstantOfShape of 2^40 elements"),
    ("range: not scalars", "Range of non-scalars"),
    ("range: delta 0", "Range by 0"),
    ("range: too long", "Range of 10^12 elements"),
    ("range: last value beyond int64", "unreachable: the count is computed so that the last value lies between start and limit"),
    ("gather: axis", "Gather axis out of range"),
    ("gather: index out of range", "Gather index out of range"),
    ("gather: no indices", "Gather of no indices"),
    ("gather / check_made: constant result over 2^26 elements", "Gather of a constant to 2^34 elements"),
    ("gather: more than 2^16 indices into a run-time tensor", "Gather of 2^17 indices from a run-time tensor"),
    ("reshape_target: two -1", "Reshape with two -1"),
    ("reshape_target: 0 (copy) past the input's rank", "Reshape copying a missing axis"),
    ("reshape_target: entry below -1", "Reshape entry -2"),
    ("reshape_target: -1 that cannot be inferred", "Reshape -1 that cannot be inferred"),
    ("reshape_target: element count", "Reshape to another element count"),
    ("flatten: axis", "Flatten axis out of range"),
    ("transpose: perm entry out of range", "Transpose perm out of range"),
    ("transpose: perm not a permutation", "Transpose perm not a permutation"),
    ("concat: no inputs", "Concat of nothing"),
    ("concat: no axis", "Concat without axis"),
    ("concat: axis", "Concat axis out of range"),
    ("concat: inputs of two ranks", "Concat of two ranks"),
    ("concat: constants that do not fit", "Concat of constants that do not fit"),
    ("concat / check_made: constant result over 2^26 elements", "Concat of constants to 5 x 2^24 elements"),
    ("squeeze: axes", "Squeeze axis out of range"),
    ("squeeze: axis not of size 1", "Squeeze of an axis of 4"),
    ("unsqueeze: no axes", "Unsqueeze without axes"),
    ("unsqueeze: axes", "Unsqueeze axis out of range"),
    ("unsqueeze: repeated axis", "Unsqueeze of a repeated axis"),
    ("slice: no starts (before opset 10)", "Slice without starts (opset 9)"),
    ("slice: no ends (before opset 10)", "Slice without ends (opset 9)"),
    ("slice: starts, ends, axes, steps of different lengths", "Slice starts and ends of two lengths"),
    ("slice: axes", "Slice axis out of range"),
    ("slice: step 0", "Slice step 0"),
    ("pad: mode", "Pad mode"),
    ("pad: no pads (before opset 11)", "Pad without pads (opset 10)"),
    ("pad: constant_value not a scalar", "Pad value of two elements"),
    ("pad: pads against axes", "Pad pads for other axes (opset 18)"),
    ("pad: axes", "Pad axis out of range (opset 18)"),
    ("pad: pads against the rank", "Pad of the wrong length"),
    ("expand: shape that does not broadcast", "Expand to a shape that does not broadcast"),
    ("expand / check_made: result over 2^26 elements (run-time or constant input)", "Expand of a constant to 2^40 elements"),
    ("cast_to: run-time cast to an unsupported type", "Cast of a run-time value to int64"),
    ("cast: no `to`", "Cast without to"),
    ("split: axis", "Split axis out of range"),
    ("split: sizes against the outputs", "Split sizes for another number of outputs"),
    ("split: num_outputs against the outputs", "Split num_outputs against the outputs (opset 18)"),
    ("split: no outputs", "Split with no outputs"),
    ("split: unequal parts before opset 18", "Split into three unequal parts"),
    ("split: sizes that do not add up", "Split sizes that do not add up"),
    ("nchw_block: rank not 4", "DepthToSpace of rank 2"),
    ("nchw_block: no blocksize", "DepthToSpace without blocksize"),
    ("nchw_block: blocksize below 1", "DepthToSpace blocksize 0"),
    ("depth_to_space: channels against blocksize^2", "DepthToSpace of 3 channels"),
    ("depth_to_space: mode", "DepthToSpace mode"),
    ("space_to_depth: H and W against blocksize", "SpaceToDepth of odd H and W"),
    ("tile: repeats of the wrong length or negative", "Tile repeats of the wrong length"),
    ("tile: a repeat of 0", "Tile by 0"),
    ("tile / check_made: constant result over 2^26 elements", "Tile of a constant to 2^40 elements"),
    ("tile: run-time result over 2^32 elements", "Tile of a run-time tensor to 2^42 elements"),
    ("tile: more than 2^16 copies of a run-time tensor", "Tile by 2^17 copies"),
    // quant.rs
    ("qtype: scale not positive and finite", "scale 0"),
    ("qtype: zero point and scale of different sizes", "zero point and scale of two sizes"),
    ("qtype: zero point outside its type", "zero point 128 of int8"),
    ("qtype: blocked scale of another rank", "blocked scale of another rank"),
    ("qtype: blocked axis", "blocked axis out of range"),
    ("qtype: blocked scale that does not fit", "blocked scale that does not fit"),
    ("qtype: per-axis axis", "per-axis axis out of range"),
    ("qtype: per-axis scale against its axis", "per-axis scale of the wrong length"),
    ("qtype: scale neither per-tensor, per-axis nor blocked", "scale neither per-tensor, per-axis nor blocked"),
    ("as_quant: run-time input of another storage", "uint8 input with an int8 zero point"),
    ("fixed_point: requantization scale not positive and finite", "requantization scale 0"),
    ("fixed_point: requantization scale too large", "requantization scale 10^30"),
    ("precision_ok: precision", "QuantizeLinear precision"),
    ("quantize_linear: output_dtype against the zero point", "QuantizeLinear output_dtype against the zero point"),
    ("dequantize_linear: output_dtype", "DequantizeLinear output_dtype"),
    ("dequantize_linear: zero point of another type", "DequantizeLinear zero point of another type"),
    ("per_tensor: scale not one value", "QLinearConv x_scale of two values"),
    ("out_type: scale not one value", "QLinearConv y_scale of two values"),
    ("conv_attrs: not 2-D", "ConvInteger 1-D"),
    ("i32_bias: bias length", "QLinearConv bias of two values"),
    ("qlinear_conv: scalar weights", "QLinearConv scalar weights"),
    ("int_operand: zero point not one value", "MatMulInteger per-row zero point"),
    ("qgemm: B not 2-D", "QGemm of 1-D B"),
    ("qgemm: C length", "QGemm bias of three values"),
    ("qlinear_concat: input count", "QLinearConcat of four inputs"),
    ("qlinear_concat: no axis", "QLinearConcat without axis"),
    ("qlinear_concat: axis", "QLinearConcat axis out of range"),
    ("conv_integer: run-time w_zero_point", "ConvInteger run-time w_zero_point"),
    ("conv_integer: run-time w with a run-time x_zero_point", "ConvInteger run-time w with a run-time x_zero_point"),
    ("matmul_integer: run-time b_zero_point", "MatMulInteger run-time b_zero_point"),
    ("matmul_integer: run-time B with a run-time a_zero_point", "MatMulInteger run-time B with a run-time a_zero_point"),
    ("matmul_integer / dynamic_quantize_matmul: B's codes", "unreachable: B is a constant of an integer type"),
    ("check_rt_zp: zero point of another type", "MatMulInteger run-time int8 zero point of uint8 A"),
    ("check_rt_zp: not 8-bit", "MatMulInteger run-time zero point of int16 A"),
    ("check_rt_zp: not one value", "MatMulInteger run-time zero point of two values"),
    ("col_sums: B not 2-D", "MatMulInteger run-time zero point with 3-D B"),
    ("dynamic_quantize_linear: input count", "DynamicQuantizeLinear of two inputs"),
    ("dynamic_quantize_matmul: input count", "DynamicQuantizeMatMul of two inputs"),
    ("dynamic_quantize_matmul: B not 2-D", "DynamicQuantizeMatMul of 1-D B"),
    ("dynamic_quantize_matmul: B not a constant", "DynamicQuantizeMatMul of run-time B"),
    ("dynamic_quantize_matmul: B not int8/uint8", "DynamicQuantizeMatMul of int32 B"),
    ("dynamic_quantize_matmul: b_scale length", "DynamicQuantizeMatMul b_scale of three values"),
    ("dynamic_quantize_matmul: b_zero_point length", "DynamicQuantizeMatMul b_zero_point of three values"),
    ("dynamic_quantize_matmul: bias shape", "DynamicQuantizeMatMul bias of three values"),
    // tensor.rs (initializers and tensor attributes)
    ("decode: negative dimension", "negative initializer dimension"),
    ("decode: over 2^32 elements or overflowing", "2^60-element initializer"),
    ("decode_raw: raw data of the wrong size", "raw data shorter than its shape"),
    ("decode_raw: packed raw data of the wrong size", "packed int4 raw data of 3 bytes"),
    ("decode_raw: string, float8 and unknown element types", "float8 initializer"),
    ("decode_typed: string, float8 and unknown element types", "string initializer"),
    ("decode_typed: data field of the wrong length", "float_data shorter than its shape"),
    ("unpack_sub_byte: packed typed data too short", "packed int4 data too short"),
    ("external_bytes: offset not a number", "offset not a number"),
    ("external_bytes: length not a number", "length not a number"),
    ("external_bytes: no location", "no location"),
    ("external_bytes: absolute or .. location", "location with .."),
    ("external_bytes: symbolic link out of the folder", "symbolic link out of the folder"),
    ("external_bytes: missing file", "missing data file"),
    ("external_bytes: the file's size cannot be read", "unreachable: the file was just opened"),
    ("external_bytes: offset and length past the file", "data file too short"),
    ("external_bytes: length past usize", "unreachable: checked against the file's size first, on 64-bit hosts"),
    ("external_bytes: read fails", "unreachable: only if the file changes while it is read"),
    // Former panics (arithmetic overflow in a debug build) on paths listed above.
    ("(regression) reshape_target: -1 beside huge entries", "Reshape -1 beside 2^80"),
    ("(regression) split: sizes past 2^64", "Split sizes that add up past 2^64"),
    ("(regression) depth_to_space: blocksize^2 past 2^64", "DepthToSpace blocksize 2^33"),
    ("(regression) range: steps past int64, refused as a graph output", "Range of 2^24 steps of 2^40"),
];

#[test]
fn importer_paths_have_cases() {
    let cases = cases();
    let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    let mut problems = Vec::new();
    for (site, case) in IMPORTER_PATHS {
        if !case.starts_with("unreachable: ") && !names.contains(case) {
            problems.push(format!("{site}: no case named `{case}`"));
        }
    }
    for c in cases.iter().filter(|c| c.kind == "importer error") {
        if !IMPORTER_PATHS.iter().any(|(_, n)| *n == c.name) {
            problems.push(format!("case `{}` is in no row of IMPORTER_PATHS", c.name));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for n in &names {
        if !seen.insert(n) {
            problems.push(format!("two cases are named `{n}`"));
        }
    }
    let paths: Vec<_> = IMPORTER_PATHS
        .iter()
        .filter(|(site, _)| !site.starts_with("(regression)"))
        .collect();
    let unreachable = paths
        .iter()
        .filter(|(_, c)| c.starts_with("unreachable: "))
        .count();
    println!(
        "{} importer error paths, {} with a case, {unreachable} unreachable; {} regression cases",
        paths.len(),
        paths.len() - unreachable,
        IMPORTER_PATHS.len() - paths.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn run_case(c: &Case, root: &Path, i: usize) -> Result<(), String> {
    let dir = root.join(format!("case{i}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a case folder");
    // The missing-file case writes nothing.
    if c.file != "absent.onnx" {
        std::fs::write(dir.join(c.file), &c.model).expect("write the model");
    }
    if let Some(f) = c.setup {
        f(&dir);
    }
    let mut args: Vec<String> = vec!["compile".into(), c.file.into()];
    if !c.flags.contains(&"-o") {
        args.extend(["-o".into(), "out/model.o".into()]);
    }
    args.extend(c.flags.iter().map(|s| s.to_string()));
    let (code, stderr) = qcc_timed(&args, &dir)?;
    let mut problems = Vec::new();
    if code != Some(1) {
        problems.push(format!("exit code {code:?}, expected 1"));
    }
    if stderr.contains("panicked") {
        problems.push("qcc panicked".into());
    }
    for e in &c.expect {
        if !stderr.contains(e.as_str()) {
            problems.push(format!("the error does not contain `{e}`"));
        }
    }
    if dir.join("out/model.o").exists() {
        problems.push("an object was written".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "[{}] {}: {}\n  stderr: {}",
            c.kind,
            c.name,
            problems.join("; "),
            stderr.trim_end().replace('\n', "\n          ")
        ))
    }
}

#[test]
fn every_malformed_model_gets_a_clear_error() {
    let root = temp_root();
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .enumerate()
        .filter_map(|(i, c)| run_case(c, &root, i).err())
        .collect();
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        failures.is_empty(),
        "{} of {} malformed models were not rejected cleanly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The kinds and their counts, for the README table (`--nocapture` prints them).
#[test]
fn kinds_cover_the_issue() {
    let cases = cases();
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for c in &cases {
        match kinds.iter_mut().find(|(k, _)| *k == c.kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((c.kind, 1)),
        }
    }
    for (k, n) in &kinds {
        println!("{k}: {n}");
    }
    for want in [
        "not a model",
        "version",
        "dimension",
        "byte size overflow",
        "cycle",
        "several producers",
        "short initializer",
        "external data escape",
        "scratch limit",
        "importer error",
        "flag",
    ] {
        assert!(
            kinds.iter().any(|(k, _)| *k == want),
            "no case of kind `{want}`"
        );
    }
}

/// `x + c + c + ...`: `n` chained Add nodes with one shared initializer.
fn chain_model(n: usize) -> ModelProto {
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let a = if i == 0 {
            "x".to_string()
        } else {
            format!("h{}", i - 1)
        };
        let y = if i + 1 == n {
            "y".to_string()
        } else {
            format!("h{i}")
        };
        nodes.push(node("Add", &format!("add{i}"), &[&a, "c"], &[&y]));
    }
    model(
        nodes,
        vec![vi("x", 1, &[1, 16])],
        vec![f32_init("c", &[1, 16], &[0.001; 16])],
        &["y"],
    )
}

/// 10,000 chained nodes compile (import, passes, code generation and the IR text
/// written and parsed back) without overflowing a stack, within the time limit.
#[test]
fn ten_thousand_chained_nodes_compile() {
    let dir = std::env::temp_dir().join(format!("qcc-deep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a folder");
    std::fs::write(dir.join("deep.onnx"), bytes(&chain_model(10_000))).expect("write");
    let args: Vec<String> = ["compile", "deep.onnx", "-o", "deep.o", "--emit", "ir"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (code, stderr) = qcc_timed(&args, &dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, Some(0), "qcc compile of 10,000 nodes: {stderr}");
    assert!(dir.join("deep.o").exists() && dir.join("deep.h").exists());
    let ir = std::fs::read_to_string(dir.join("deep.qir")).expect("the IR");
    assert!(ir.lines().count() > 10_000, "the IR keeps every node");
    let (code, stderr) =
        qcc_timed(&["verify".into(), "deep.qir".into()], &dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, Some(0), "qcc verify of 10,000 nodes: {stderr}");
    // A QONNX chain: every other node a quantizer, so that the rewrite engine (the
    // e-graph conversion, saturation and extraction) sees all 10,000 nodes.
    std::fs::write(dir.join("deepq.onnx"), bytes(&qonnx_chain_model(10_000))).expect("write");
    let args: Vec<String> = ["compile", "deepq.onnx", "-o", "deepq.o"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (code, stderr) = qcc_timed(&args, &dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, Some(0), "qcc compile of 10,000 QONNX nodes: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `n` nodes alternating a QONNX 8-bit Quant and an Add of a shared constant.
fn qonnx_chain_model(n: usize) -> ModelProto {
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let a = if i == 0 {
            "x".to_string()
        } else {
            format!("h{}", i - 1)
        };
        let y = if i + 1 == n {
            "y".to_string()
        } else {
            format!("h{i}")
        };
        let name = format!("n{i}");
        if i % 2 == 0 {
            let mut q = node("Quant", &name, &[&a, "s", "z", "b"], &[&y]);
            q.domain = "qonnx.custom_op.general".into();
            q.attribute.push(int_attr("signed", 1));
            q.attribute.push(int_attr("narrow", 0));
            let mut r = AttributeProto::new();
            r.name = "rounding_mode".into();
            r.type_ = AttributeType::STRING.into();
            r.s = b"ROUND".to_vec();
            q.attribute.push(r);
            nodes.push(q);
        } else {
            nodes.push(node("Add", &name, &[&a, "c"], &[&y]));
        }
    }
    let mut m = model(
        nodes,
        vec![vi("x", 1, &[1, 16])],
        vec![
            f32_init("c", &[1, 16], &[0.25; 16]),
            f32_init("s", &[], &[0.125]),
            f32_init("z", &[], &[0.0]),
            f32_init("b", &[], &[8.0]),
        ],
        &["y"],
    );
    let mut op = OperatorSetIdProto::new();
    op.domain = "qonnx.custom_op.general".into();
    op.version = 1;
    m.opset_import.push(op);
    m
}

/// `qcc run` applies `--max-scratch` too, before running anything.
#[test]
fn run_refuses_scratch_over_the_limit() {
    let dir = std::env::temp_dir().join(format!("qcc-run-scratch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a folder");
    let chain = model(
        vec![
            node("Relu", "r1", &["x"], &["h1"]),
            node("Sigmoid", "r2", &["h1"], &["h2"]),
            node("Relu", "r3", &["h2"], &["y"]),
        ],
        vec![vi("x", 1, &[1, 4096])],
        vec![],
        &["y"],
    );
    std::fs::write(dir.join("chain.onnx"), bytes(&chain)).expect("write");
    let x = qcc_ir::interp::Tensor::f32(vec![1, 4096], vec![0.5; 4096]);
    qcc::npy::write_npy(&dir.join("x.npy"), &x).expect("write x");
    let run = |limit: &str| {
        let args: Vec<String> = [
            "run",
            "chain.onnx",
            "--input",
            "x.npy",
            "--out",
            "out",
            "--max-scratch",
            limit,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        qcc_timed(&args, &dir).unwrap_or_else(|e| panic!("{e}"))
    };
    let (code, stderr) = run("2K");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--max-scratch allows (2048 bytes)") && stderr.contains("needs"),
        "{stderr}"
    );
    assert!(!dir.join("out/y.npy").exists(), "nothing is written");
    let (code, stderr) = run("1M");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(dir.join("out/y.npy").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `-1` in a declared input shape is a dynamic dimension (paddle2onnx writes them so, and
/// ONNX Runtime takes them): `--input-shape` fixes it, and a first one defaults to 1.
#[test]
fn minus_one_input_dimensions_are_dynamic() {
    use qcc::frontend::onnx::{ImportOptions, import_model};
    let m = model(
        vec![node("Relu", "relu", &["x"], &["y"])],
        vec![vi("x", 1, &[-1, 3, -1])],
        vec![],
        &["y"],
    );
    let mut opts = ImportOptions::default();
    opts.input_shapes.insert("x".into(), vec![2, 3, 5]);
    let imp = import_model(&m, None, &opts).unwrap();
    assert_eq!(imp.module.ty(imp.module.inputs[0]).shape, [2, 3, 5]);
    let Err(err) = import_model(&m, None, &ImportOptions::default()) else {
        panic!("dimension 2 needs --input-shape");
    };
    let err = err.to_string();
    assert!(
        err.contains("dimension 2 is symbolic") && err.contains("--input-shape x="),
        "{err}"
    );
}
