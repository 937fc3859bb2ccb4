//! Importer unit tests on small hand-built models.

use std::collections::BTreeMap;

use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto, attribute_proto::AttributeType,
};
use qcc_ir::Op;
use qcc_ir::interp::Tensor;

use super::{ImportOptions, import_model};

fn vi(name: &str, elem: i32, dims: &[i64]) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    let tt = v.type_.mut_or_insert_default().mut_tensor_type();
    tt.elem_type = elem;
    tt.shape.mut_or_insert_default();
    for &d in dims {
        let mut dim = onnx_protobuf::tensor_shape_proto::Dimension::new();
        dim.set_dim_value(d);
        tt.shape.mut_or_insert_default().dim.push(dim);
    }
    v
}

fn node(op: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.input = ins.iter().map(|s| s.to_string()).collect();
    n.output = outs.iter().map(|s| s.to_string()).collect();
    n
}

fn i64_init(name: &str, v: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = 7;
    t.dims = vec![v.len() as i64];
    t.int64_data = v.to_vec();
    t
}

fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
    out: &str,
) -> ModelProto {
    let mut g = GraphProto::new();
    g.node = nodes;
    g.input = inputs;
    g.initializer = inits;
    g.output.push(vi(out, 1, &[]));
    let mut m = ModelProto::new();
    let mut op = OperatorSetIdProto::new();
    op.version = 17;
    m.opset_import.push(op);
    m.graph = Some(g).into();
    m
}

#[test]
fn shape_arithmetic_never_reaches_the_ir() {
    // y = Reshape(x, Concat(Gather(Shape(x), 0), [-1]))
    let mut gather = node("Gather", &["s", "zero"], &["n"]);
    let mut axis = AttributeProto::new();
    axis.name = "axis".into();
    axis.type_ = AttributeType::INT.into();
    gather.attribute.push(axis.clone());
    let unsq = node("Unsqueeze", &["n", "zero1"], &["n1"]);
    let mut cat = node("Concat", &["n1", "minus1"], &["shape"]);
    cat.attribute.push(axis);
    let m = model(
        vec![
            node("Shape", &["x"], &["s"]),
            gather,
            unsq,
            cat,
            node("Reshape", &["x", "shape"], &["y"]),
        ],
        vec![vi("x", 1, &[2, 3, 4])],
        vec![i64_init("zero1", &[0]), i64_init("minus1", &[-1]), {
            let mut t = i64_init("zero", &[0]);
            t.dims = vec![];
            t
        }],
        "y",
    );
    let imp = import_model(&m, None, &ImportOptions::default()).unwrap();
    let ops: Vec<Op> = imp.module.nodes.iter().map(|n| n.op).collect();
    assert_eq!(ops, [Op::Reshape]);
    assert_eq!(imp.module.ty(imp.module.outputs[0]).shape, [2, 12]);
    assert_eq!(imp.module.value(imp.module.outputs[0]).name, "y");
}

#[test]
fn bound_inputs_become_constants_only_where_needed() {
    // Clip's bounds must be constants; x stays a run-time input.
    let m = model(
        vec![node("Clip", &["x", "lo", "hi"], &["y"])],
        vec![vi("x", 1, &[3]), vi("lo", 1, &[]), vi("hi", 1, &[])],
        vec![],
        "y",
    );
    let e = import_model(&m, None, &ImportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("must be a constant"), "{e}");
    let opts = ImportOptions {
        bindings: BTreeMap::from([
            ("x".to_string(), Tensor::f32(vec![3], vec![-2.0, 0.5, 9.0])),
            ("lo".to_string(), Tensor::scalar_f32(0.0)),
            ("hi".to_string(), Tensor::scalar_f32(1.0)),
        ]),
        ..Default::default()
    };
    let imp = import_model(&m, None, &opts).unwrap();
    assert_eq!(imp.module.nodes.len(), 1, "{}", imp.module);
    assert_eq!(imp.module.nodes[0].op, Op::Clip);
    assert_eq!(imp.input_names, ["x", "lo", "hi"]);
}

#[test]
fn errors_name_node_op_and_attribute() {
    let mut n = node("Transpose", &["x"], &["y"]);
    n.name = "tr".into();
    let mut a = AttributeProto::new();
    a.name = "perm".into();
    a.type_ = AttributeType::INTS.into();
    a.ints = vec![0, 0];
    n.attribute.push(a);
    let m = model(vec![n], vec![vi("x", 1, &[2, 3])], vec![], "y");
    let e = import_model(&m, None, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("node `tr` (Transpose): attribute `perm`"),
        "{e}"
    );
}
