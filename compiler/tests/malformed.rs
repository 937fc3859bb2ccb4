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
    expect: Vec<&'static str>,
}

fn case(kind: &'static str, name: &'static str, m: ModelProto, expect: &[&'static str]) -> Case {
    Case {
        kind,
        name,
        model: bytes(&m),
        file: "model.onnx",
        setup: None,
        flags: vec![],
        expect: expect.to_vec(),
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
        &["initializer `w`", "offset"],
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
    let mut zp = TensorProto::new();
    zp.name = "zp".into();
    zp.data_type = 3;
    zp.int32_data = vec![0];
    let q = model(
        vec![node("QuantizeLinear", "q", &["x", "s", "zp"], &["y"])],
        vec![vi("x", 1, &[1, 4])],
        vec![f32_init("s", &[], &[0.5]), zp],
        &["y"],
    );
    v.push(case(
        "backend",
        "integer graph output",
        q,
        &["only float32 inputs and outputs"],
    ));
    v
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
        if !stderr.contains(e) {
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
