//! The text form: print -> parse gives the same module (property test over random
//! modules), and malformed text gives a positioned error, never a panic.

use std::collections::BTreeMap;

use proptest::prelude::*;
use qcc_ir::ops::{AttrKind, Op};
use qcc_ir::{
    Attr, ConstData, ElemType, IntType, Module, QuantParams, QuantType, TensorType, ValueId,
    parse_module,
};

fn finite_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        -1e6f32..1e6f32,
        any::<f32>().prop_filter("finite", |x| x.is_finite()),
        Just(0.0f32),
        Just(-0.0f32),
        Just(f32::INFINITY),
        Just(f32::MIN_POSITIVE),
    ]
}

fn int_type() -> impl Strategy<Value = IntType> {
    (
        prop::sample::select(qcc_ir::types::STORAGE_BITS.to_vec()),
        any::<bool>(),
    )
        .prop_map(|(bits, signed)| IntType::new(bits, signed))
}

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..4, 0..4)
}

fn quant_type(shape: Vec<usize>) -> impl Strategy<Value = QuantType> {
    let rank = shape.len();
    (int_type(), any::<bool>(), any::<bool>(), 0..3u8, 1usize..3).prop_flat_map(
        move |(storage, narrow, pow2, kind, block)| {
            let shape = shape.clone();
            let (lo, hi) = (storage.min_code(), storage.max_code());
            let zp = (lo.max(i32::MIN as i64) as i32)..=(hi.min(i32::MAX as i64) as i32);
            let kind = if rank == 0 { 0 } else { kind };
            let axis = rank.saturating_sub(1);
            let count = match kind {
                0 => 1,
                1 => shape[axis],
                _ => shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if i == axis { d.div_ceil(block) } else { d })
                    .product(),
            };
            (
                prop::collection::vec(1e-6f32..10.0, count),
                prop::collection::vec(zp, count),
            )
                .prop_map(move |(scales, zero_points)| {
                    let params = match kind {
                        0 => QuantParams::PerTensor {
                            scale: scales[0],
                            zero_point: zero_points[0],
                        },
                        1 => QuantParams::PerAxis {
                            axis,
                            scales,
                            zero_points,
                        },
                        _ => QuantParams::Blocked {
                            axis,
                            block_size: block,
                            scales,
                            zero_points,
                        },
                    };
                    QuantType {
                        storage,
                        narrow,
                        pow2,
                        params,
                    }
                })
        },
    )
}

fn tensor_type() -> impl Strategy<Value = TensorType> {
    shape().prop_flat_map(|s| {
        let elem = prop_oneof![
            Just(ElemType::F32),
            Just(ElemType::Bipolar),
            int_type().prop_map(ElemType::Int),
            quant_type(s.clone()).prop_map(ElemType::Quant),
        ];
        (elem, Just(s)).prop_map(|(elem, shape)| TensorType { elem, shape })
    })
}

fn const_data(ty: &TensorType) -> BoxedStrategy<ConstData> {
    let n = ty.numel();
    match ty.elem {
        ElemType::F32 => prop::collection::vec(finite_f32(), n)
            .prop_map(ConstData::F32)
            .boxed(),
        ElemType::Bipolar => prop::collection::vec(prop::sample::select(vec![-1i64, 1]), n)
            .prop_map(ConstData::Int)
            .boxed(),
        _ => {
            let (lo, hi) = ty.elem.code_range().expect("integer type");
            prop::collection::vec(lo..=hi, n)
                .prop_map(ConstData::Int)
                .boxed()
        }
    }
}

fn attr_value(kind: AttrKind) -> BoxedStrategy<Attr> {
    match kind {
        AttrKind::Int => any::<i64>().prop_map(Attr::Int).boxed(),
        AttrKind::Float => finite_f32().prop_map(Attr::Float).boxed(),
        AttrKind::Bool => any::<bool>().prop_map(Attr::Bool).boxed(),
        AttrKind::Ints => prop::collection::vec(any::<i64>(), 0..5)
            .prop_map(Attr::Ints)
            .boxed(),
        AttrKind::Floats => prop::collection::vec(finite_f32(), 0..5)
            .prop_map(Attr::Floats)
            .boxed(),
        AttrKind::Enum(words) => prop::sample::select(words.to_vec())
            .prop_map(|w| Attr::Enum(w.to_string()))
            .boxed(),
    }
}

fn attrs(op: Op) -> BoxedStrategy<BTreeMap<String, Attr>> {
    // Every attribute with a default is present after parsing; optional ones may be absent.
    let specs = op.info().attrs;
    let parts: Vec<BoxedStrategy<Option<(String, Attr)>>> = specs
        .iter()
        .map(|s| {
            let name = s.name.to_string();
            let v = attr_value(s.kind).prop_map(move |a| Some((name.clone(), a)));
            if s.default == qcc_ir::ops::AttrDefault::Optional {
                prop_oneof![Just(None), v].boxed()
            } else {
                v.boxed()
            }
        })
        .collect();
    parts
        .prop_map(|v| v.into_iter().flatten().collect())
        .boxed()
}

fn meta() -> impl Strategy<Value = BTreeMap<String, Attr>> {
    prop::collection::btree_map(
        "[a-z][a-z_]{0,6}",
        prop_oneof![
            any::<i64>().prop_map(Attr::Int),
            finite_f32().prop_map(Attr::Float),
            prop::collection::vec(finite_f32(), 1..4).prop_map(Attr::Floats),
        ],
        0..2,
    )
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_./$-]{0,8}"
}

/// Random modules in canonical order (inputs, constants, nodes). They need not be
/// well typed: the text form must carry any module faithfully.
fn module() -> impl Strategy<Value = Module> {
    let inputs = prop::collection::vec(tensor_type(), 1..3);
    let consts = prop::collection::vec(
        tensor_type().prop_flat_map(|t| {
            let d = const_data(&t);
            (Just(t), d)
        }),
        0..3,
    );
    let nodes = prop::collection::vec(
        (
            prop::sample::select(Op::ALL.to_vec()),
            tensor_type(),
            prop::collection::vec(any::<prop::sample::Index>(), 1..4),
            meta(),
            prop::option::of("[ -~]{0,12}"),
        )
            .prop_flat_map(|(op, ty, operands, meta, loc)| {
                (
                    Just(op),
                    Just(ty),
                    Just(operands),
                    attrs(op),
                    Just(meta),
                    Just(loc),
                )
            }),
        0..5,
    );
    let names = prop::collection::hash_set(name(), 12);
    (inputs, consts, nodes, names).prop_map(|(inputs, consts, nodes, names)| {
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort();
        let mut names = names.into_iter();
        let mut m = Module::new("m");
        for t in inputs {
            m.add_input(names.next().unwrap(), t);
        }
        for (t, d) in consts {
            m.add_const(names.next().unwrap(), t, d);
        }
        for (op, ty, operands, attrs, meta, loc) in nodes {
            let avail = m.values.len();
            let ops: Vec<ValueId> = operands
                .iter()
                .map(|i| ValueId(i.index(avail) as u32))
                .collect();
            let r = m.add_node(op, ops, attrs, names.next().unwrap(), ty);
            let n = m.nodes.last_mut().unwrap();
            n.meta = meta;
            n.loc = loc;
            m.outputs.push(r);
        }
        if m.outputs.is_empty() {
            m.outputs.push(m.inputs[0]);
        }
        m
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn print_then_parse_gives_the_same_module(m in module()) {
        let text = m.to_string();
        let parsed = parse_module(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&parsed, &m, "text:\n{}", text);
        prop_assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn arbitrary_text_never_panics(s in "[ -~\n]{0,200}") {
        let _ = parse_module(&s);
    }

    #[test]
    fn mutated_modules_never_panic(m in module(), at in any::<prop::sample::Index>(), c in "[ -~\n]") {
        let mut text = m.to_string();
        let mut i = at.index(text.len().max(1)).min(text.len());
        while !text.is_char_boundary(i) { i -= 1; }
        text.insert_str(i, &c);
        let _ = parse_module(&text);
    }
}

const SAMPLE: &str = "module sample {
  input %x: f32[1,2]
  const @s: q<i8, axis=1, [0.5:0, 0.25:-1]>[1,2] = [3, -4]
  %y: f32[1,2] = relu(%x) loc(\"Relu_0\")
  %z: f32[1,2] = dequantize(@s)
  output %y, %z
}
";

#[test]
fn every_truncation_is_an_error_with_a_position() {
    parse_module(SAMPLE).expect("sample parses");
    let sample = SAMPLE.trim_end();
    for (i, _) in sample.char_indices() {
        let prefix = &sample[..i];
        let err = parse_module(prefix).expect_err(prefix);
        let lines = prefix.lines().count().max(1);
        assert!(
            err.line >= 1 && err.line <= lines + 1 && err.col >= 1,
            "bad position {err} for prefix of {i} bytes"
        );
    }
}

#[test]
fn garbage_gives_positioned_errors() {
    let cases = [
        ("", "1:1"),
        ("modul x {}", "1:1"),
        ("module m {\n  input %x: f32[1,2\n}", "3:1"),
        ("module m {\n  input %x f32[1]\n}", "2:12"),
        ("module m {\n  input %x: f32[-1]\n}", "2:17"),
        ("module m {\n  input %x: q<i8, 0.1>[1]\n}", "2:22"),
        ("module m {\n  const @c: i8[2] = [1, 2.5]\n}", "2:25"),
        (
            "module m {\n  input %x: f32[1]\n  input %x: f32[1]\n}",
            "3:9",
        ),
        ("module m {\n  input %x: f32[1]\n  output @x\n}", "3:10"),
        (
            "module m {\n  input %x: f32[1]\n  %y: f32[1] = relu(%x) {alpha = }\n}",
            "3:34",
        ),
        ("module m {\n  \u{1F600}\n}", "2:3"),
        (
            "module m {\n  %y: f32[1] = relu(%x) loc(\"unterminated\n}",
            "2:29",
        ),
    ];
    for (src, pos) in cases {
        let err = parse_module(src).expect_err(src);
        assert_eq!(format!("{}:{}", err.line, err.col), pos, "{src:?}: {err}");
    }
}
