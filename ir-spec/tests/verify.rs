//! The verifier: one test per invariant of `verify.rs` (numbered as there), each
//! checking the message and the line it is printed under; a module with several
//! errors; and one well-formed module per op.

use std::collections::BTreeSet;

use qcc_ir::verify::{Location, VerifyErrors, verify};
use qcc_ir::{
    Attr, ConstData, ElemType, IntType, Module, NodeId, Op, QuantParams, ValueDef, ValueId,
    parse_module,
};

fn parse(src: &str) -> Module {
    parse_module(src).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

fn errors(m: &Module) -> VerifyErrors {
    match verify(m) {
        Ok(()) => panic!("expected verification errors in\n{m}"),
        Err(e) => e,
    }
}

fn errors_of(src: &str) -> VerifyErrors {
    errors(&parse(src))
}

fn is_diag(line: &str) -> bool {
    line.trim_start().starts_with("^ error: ")
}

/// Asserts a diagnostic containing `msg` is printed under the first listing line that
/// contains `line` (among the diagnostics that directly follow it).
#[track_caller]
fn assert_under(e: &VerifyErrors, line: &str, msg: &str) {
    assert!(
        e.diagnostics.iter().any(|d| d.message.contains(msg)),
        "no diagnostic contains {msg:?}:\n{e}"
    );
    let lines: Vec<&str> = e.listing.lines().collect();
    let at = lines
        .iter()
        .position(|l| !is_diag(l) && l.contains(line))
        .unwrap_or_else(|| panic!("no line contains {line:?}:\n{e}"));
    let found = lines[at + 1..]
        .iter()
        .take_while(|l| is_diag(l))
        .any(|l| l.contains(msg));
    assert!(found, "{msg:?} is not printed under {line:?}:\n{e}");
}

/// Values: 0 %x, 1 @s, 2 %a, 3 %b. Nodes: 0 relu, 1 add.
const BASE: &str = "module base {
  input %x: f32[2,3]
  const @s: f32[] = [0.5]
  %a: f32[2,3] = relu(%x)
  %b: f32[2,3] = add(%a, %x)
  output %b
}";

fn base() -> Module {
    let m = parse(BASE);
    verify(&m).unwrap();
    m
}

// ------------------------------------------------------------------ the listing

#[test]
fn listing_prints_errors_under_lines() {
    let e = errors_of(
        "module m {
  input %x: f32[2]
  %y: f32[3] = relu(%x)
  output %y
}",
    );
    assert_eq!(e.diagnostics.len(), 1);
    assert_eq!(e.diagnostics[0].location, Location::Node(NodeId(0)));
    assert_eq!(
        e.listing,
        "module m {
  input %x: f32[2]
  %y: f32[3] = relu(%x)
  ^ error: result type mismatch: declared f32[3], expected f32[2]
  output %y
}
"
    );
    let shown = e.to_string();
    assert!(
        shown.starts_with("verification failed with 1 error:\n"),
        "{shown}"
    );
    assert!(shown.ends_with(&e.listing));
}

#[test]
fn reports_every_independent_error() {
    let e = errors_of(
        "module m {
  input %x: f32[2,3]
  const @c: i4[2] = [1, 9]
  %y: f32[2,3] = relu(%x) {alpha = 1.0}
  %z: f32[3,2] = sigmoid(%y)
  output %z
}",
    );
    assert_eq!(e.diagnostics.len(), 3, "{e}");
    assert_under(&e, "const @c", "holds code 9 at index 1");
    assert_under(&e, "relu(%x)", "relu has no attribute `alpha`");
    assert_under(&e, "sigmoid(%y)", "declared f32[3,2], expected f32[2,3]");
}

#[test]
fn type_rule_is_skipped_for_invalid_operands() {
    // The operand type is invalid; the node is not also blamed for it.
    let e = errors_of(
        "module m {
  input %x: q<i8, axis=0, [0.5:0]>[2,3]
  %y: f32[2,3] = dequantize(%x)
  output %y
}",
    );
    assert_eq!(e.diagnostics.len(), 1, "{e}");
    assert_under(
        &e,
        "input %x",
        "has 1 parameters, but the axis has 2 elements",
    );
}

// ------------------------------------------------------------------ 1. module name

#[test]
fn inv01_module_name() {
    let mut m = base();
    m.name = "two words".into();
    let e = errors(&m);
    assert_under(
        &e,
        "module two words",
        "module name \"two words\" is not a valid name",
    );
    assert_eq!(e.diagnostics[0].location, Location::Module);
}

// ------------------------------------------------------------------ 2. value names

#[test]
fn inv02_invalid_value_name() {
    let mut m = base();
    m.values[2].name = "a b".into();
    let e = errors(&m);
    assert_under(&e, "relu(%x)", "value name \"a b\" is not a valid name");
}

#[test]
fn inv02_duplicate_value_name() {
    let mut m = base();
    m.values[3].name = "a".into();
    let e = errors(&m);
    assert_under(
        &e,
        "add(%a, %x)",
        "the name `a` is already used by the result %a",
    );
    assert_eq!(e.diagnostics[0].location, Location::Value(ValueId(3)));
    // Constants share the namespace.
    let mut m = base();
    m.values[1].name = "x".into();
    let e = errors(&m);
    assert_under(&e, "const @x", "already used by input %x");
}

// ------------------------------------------------------------------ 3. types

#[test]
fn inv03a_storage_bits() {
    let mut m = base();
    m.values[0].ty.elem = ElemType::Int(IntType::new(9, true));
    let e = errors(&m);
    assert_under(&e, "input %x", "storage i9 has an invalid bit-width");
    let mut m = base();
    m.values[0].ty.elem = ElemType::Quant(qcc_ir::QuantType::per_tensor(
        IntType::new(12, false),
        1.0,
        0,
    ));
    assert_under(
        &errors(&m),
        "input %x",
        "storage u12 has an invalid bit-width",
    );
}

#[test]
fn inv03b_narrow_needs_two_bits() {
    let e = errors_of(
        "module m {
  input %x: q<u1 narrow, 1.0:0>[4]
  output %x
}",
    );
    assert_under(&e, "input %x", "a narrow range needs at least 2 bits");
}

#[test]
fn inv03c_scale_and_zero_point_counts() {
    let mut m = parse(
        "module m {
  input %x: q<i8, axis=0, [0.5:0, 0.25:0]>[2]
  output %x
}",
    );
    if let ElemType::Quant(q) = &mut m.values[0].ty.elem
        && let QuantParams::PerAxis { zero_points, .. } = &mut q.params
    {
        zero_points.pop();
    }
    assert_under(&errors(&m), "input %x", "2 scales but 1 zero points");
}

#[test]
fn inv03d_scales_positive_finite() {
    let e = errors_of(
        "module m {
  input %x: q<i8, -0.5:0>[4]
  input %y: q<i8, axis=0, [0.5:0, inf:0]>[2]
  output %x, %y
}",
    );
    assert_under(
        &e,
        "input %x",
        "scales must be positive and finite, scale #0 is -0.5",
    );
    assert_under(&e, "input %y", "scale #1 is inf");
}

#[test]
fn inv03e_zero_point_in_storage_range() {
    let e = errors_of(
        "module m {
  input %x: q<u4, 0.5:16>[4]
  input %y: q<i8, axis=0, [0.5:0, 0.5:-129]>[2]
  output %x, %y
}",
    );
    assert_under(
        &e,
        "input %x",
        "zero point #0 is 16, outside the range of u4 (0..=15)",
    );
    assert_under(&e, "input %y", "zero point #1 is -129");
}

#[test]
fn inv03f_axis_in_range() {
    let e = errors_of(
        "module m {
  input %x: q<i8, axis=2, [0.5:0, 0.5:0]>[2,2]
  output %x
}",
    );
    assert_under(
        &e,
        "input %x",
        "quantization axis 2 is out of range for rank 2",
    );
}

#[test]
fn inv03g_per_axis_count() {
    let e = errors_of(
        "module m {
  input %x: q<i8, axis=1, [0.5:0, 0.5:0]>[2,3]
  output %x
}",
    );
    assert_under(
        &e,
        "input %x",
        "per-axis quantization along axis 1 has 2 parameters, but the axis has 3 elements",
    );
}

#[test]
fn inv03h_blocked_params() {
    let e = errors_of(
        "module m {
  input %x: q<i4, axis=1, block=2, [1.0:0, 1.0:0]>[2,3]
  input %y: q<i4, axis=1, block=0, [1.0:0]>[2,3]
  output %x, %y
}",
    );
    assert_under(&e, "input %x", "needs 4 parameters");
    assert_under(&e, "input %y", "block size must be positive");
}

#[test]
fn inv03i_pow2_only_for_powers_of_two() {
    let e = errors_of(
        "module m {
  input %x: q<i8 pow2, axis=0, [0.5:0, 0.3:0]>[2]
  input %y: q<i8 pow2, 0.125:0>[2]
  output %x, %y
}",
    );
    assert_eq!(e.diagnostics.len(), 1, "{e}");
    assert_under(
        &e,
        "input %x",
        "pow2 is set but scale #1 (0.3) is not an exact power of two",
    );
}

#[test]
fn inv03j_element_count_fits() {
    let e = errors_of(
        "module m {
  input %x: f32[4294967296,4294967296]
  output %x
}",
    );
    assert_under(&e, "input %x", "has more than 9223372036854775807 elements");
}

#[test]
fn inv03_result_types_are_checked_too() {
    let e = errors_of(
        "module m {
  input %x: f32[2]
  %q: q<i8, 0.0:0>[2] = quantize(%x)
  output %q
}",
    );
    assert_eq!(e.diagnostics.len(), 1, "{e}");
    assert_under(&e, "quantize(%x)", "scales must be positive and finite");
}

// ------------------------------------------------------------------ 4. constants

#[test]
fn inv04a_const_length() {
    let e = errors_of(
        "module m {
  const @c: f32[3] = [1.0, 2.0]
  output @c
}",
    );
    assert_under(
        &e,
        "const @c",
        "holds 2 values, but its type f32[3] has 3 elements",
    );
}

#[test]
fn inv04b_const_data_kind() {
    let mut m = parse(
        "module m {
  const @c: i8[2] = [1, 2]
  const @f: f32[2] = [1.0, 2.0]
  output @c, @f
}",
    );
    m.values[0].def = ValueDef::Const(ConstData::F32(vec![1.0, 2.0]));
    m.values[1].def = ValueDef::Const(ConstData::Int(vec![1, 2]));
    let e = errors(&m);
    assert_under(
        &e,
        "const @c",
        "holds f32 data; integer-valued types hold integer codes",
    );
    assert_under(&e, "const @f", "holds integer data; f32 types hold floats");
}

#[test]
fn inv04c_codes_admitted() {
    let e = errors_of(
        "module m {
  const @c: i4[3] = [-8, 8, 100]
  const @b: b1[3] = [1, 0, -1]
  const @n: q<i8 narrow, 1.0:0>[2] = [-128, 127]
  output @c, @b, @n
}",
    );
    assert_under(
        &e,
        "const @c",
        "holds code 8 at index 1 (and 1 more), which i4 does not admit (codes -8..=7)",
    );
    assert_under(
        &e,
        "const @b",
        "holds code 0 at index 1, which b1 does not admit (+1 and -1 only)",
    );
    assert_under(&e, "const @n", "holds code -128 at index 0");
}

// ------------------------------------------------------------------ 5. definitions

#[test]
fn inv05a_node_definition_exists() {
    let mut m = base();
    m.values[3].def = ValueDef::Node(NodeId(7));
    let e = errors(&m);
    assert_under(
        &e,
        "add(%a, %x)",
        "%b is defined by node #7, but the module has 2 nodes",
    );
}

#[test]
fn inv05b_node_definition_agrees() {
    let mut m = base();
    m.add_input("orphan", qcc_ir::TensorType::f32(vec![1]));
    m.inputs.pop();
    m.values[4].def = ValueDef::Node(NodeId(0));
    let e = errors(&m);
    // Not printed on a line of its own: the message goes under the module line.
    assert_under(
        &e,
        "module base",
        "%orphan is defined by node #0, but that node's result is `%a`",
    );
}

#[test]
fn inv05c_input_definitions_are_listed() {
    let mut m = base();
    m.add_input("y", qcc_ir::TensorType::f32(vec![1]));
    m.inputs.pop();
    let e = errors(&m);
    assert_under(
        &e,
        "module base",
        "%y is defined as an input but is not listed among the module's inputs",
    );
}

// ------------------------------------------------------------------ 6. inputs

#[test]
fn inv06a_input_in_range() {
    let mut m = base();
    m.inputs.push(ValueId(42));
    let e = errors(&m);
    assert_under(
        &e,
        "module base",
        "input #1 refers to value #42, but the module has 4 values",
    );
}

#[test]
fn inv06b_input_is_an_input() {
    let mut m = base();
    m.inputs.push(ValueId(1));
    let e = errors(&m);
    // The printer lists it as an input; the message goes under that line.
    assert_under(
        &e,
        "input @s",
        "@s is listed among the inputs but is defined as a constant",
    );
}

#[test]
fn inv06c_input_listed_once() {
    let mut m = base();
    m.inputs.push(ValueId(0));
    let e = errors(&m);
    assert_under(
        &e,
        "input %x",
        "%x is listed twice among the inputs (#0 and #1)",
    );
}

// ------------------------------------------------------------------ 7. node results

#[test]
fn inv07a_result_in_range() {
    let mut m = base();
    m.nodes[1].result = ValueId(9);
    let e = errors(&m);
    assert_under(
        &e,
        "= add(%a, %x)",
        "the result refers to value #9, but the module has 4 values",
    );
}

#[test]
fn inv07b_result_defined_once() {
    let mut m = base();
    // Node 1 claims the input %x as its result.
    m.nodes[1].result = ValueId(0);
    m.nodes[1].operands = vec![ValueId(2), ValueId(2)];
    let e = errors(&m);
    assert_under(
        &e,
        "%x: f32[2,3] = add(%a, %a)",
        "the result %x is already defined as an input; every value is defined exactly once",
    );
    // Two nodes with one result.
    let mut m = base();
    m.nodes[1].result = ValueId(2);
    let e = errors(&m);
    assert_under(
        &e,
        "%a: f32[2,3] = add",
        "the result %a is already defined as the result of node #0",
    );
}

// ------------------------------------------------------------------ 8. operands

#[test]
fn inv08a_operand_in_range() {
    let mut m = base();
    m.nodes[0].operands[0] = ValueId(100);
    let e = errors(&m);
    assert_under(
        &e,
        "relu(%<invalid 100>)",
        "operand #0 refers to value #100, but the module has 4 values",
    );
    assert_eq!(e.diagnostics.len(), 1, "the type rule is skipped: {e}");
}

#[test]
fn inv08b_topological_order() {
    let mut m = base();
    // relu uses the result of the later add.
    m.nodes[0].operands[0] = ValueId(3);
    let e = errors(&m);
    assert_under(
        &e,
        "relu(%b)",
        "operand #0 `%b` is used before its definition (by node #1); nodes must be in topological order",
    );
    let mut m = base();
    m.nodes[0].operands[0] = ValueId(2);
    assert_under(
        &errors(&m),
        "relu(%a)",
        "operand #0 is the node's own result `%a`",
    );
}

// ------------------------------------------------------------------ 9. arity

#[test]
fn inv09_arity() {
    let e = errors_of(
        "module m {
  input %x: f32[2]
  input %w: f32[1,1,1,1]
  %y: f32[2] = relu(%x, %x)
  %z: f32[2] = conv2d(%w)
  %c: f32[2] = concat() {axis = 0}
  output %y, %z, %c
}",
    );
    assert_under(&e, "relu(%x, %x)", "relu takes 1 operands (x), found 2");
    assert_under(
        &e,
        "conv2d(%w)",
        "conv2d takes 2 to 3 operands (x, w, bias?), found 1",
    );
    assert_under(
        &e,
        "concat()",
        "concat takes at least 1 operands (xs...), found 0",
    );
    assert_eq!(e.diagnostics.len(), 3, "type rules are skipped: {e}");
}

// ------------------------------------------------------------------ 10. attributes

#[test]
fn inv10a_unknown_attribute() {
    let e = errors_of(
        "module m {
  input %x: f32[2]
  %y: f32[2] = relu(%x) {alpha = 0.5}
  %z: f32[2] = softmax(%y) {axes = [0]}
  output %z
}",
    );
    assert_under(
        &e,
        "relu(%x)",
        "relu has no attribute `alpha` (it takes none)",
    );
    assert_under(
        &e,
        "softmax(%y)",
        "softmax has no attribute `axes` (it takes axis)",
    );
}

#[test]
fn inv10b_required_attribute() {
    let e = errors_of(
        "module m {
  input %x: f32[2,3]
  %y: f32[3,2] = reshape(%x)
  output %y
}",
    );
    assert_under(
        &e,
        "reshape(%x)",
        "reshape needs attribute `shape` (a list of integers: the new shape)",
    );
}

#[test]
fn inv10c_attribute_kind() {
    let e = errors_of(
        "module m {
  input %x: f32[1,1,3,3]
  input %w: f32[1,1,1,1]
  %y: f32[1,1,3,3] = conv2d(%x, %w) {group = 1.5, strides = 1}
  %z: f32[1,1,3,3] = leaky_relu(%y) {alpha = 1}
  %q: f32[1,1,3,3] = clip(%z) {min = true}
  output %q
}",
    );
    assert_under(
        &e,
        "conv2d(%x, %w)",
        "attribute `group` of conv2d must be an integer, found 1.5",
    );
    assert_under(
        &e,
        "conv2d(%x, %w)",
        "attribute `strides` of conv2d must be a list of integers, found 1",
    );
    assert_under(
        &e,
        "clip(%z)",
        "attribute `min` of clip must be a number, found true",
    );
    // A Float attribute accepts an integer (leaky_relu's alpha = 1 above).
    assert_eq!(e.diagnostics.len(), 3, "{e}");
    // Programmatically: an integer for a float attribute is accepted, a word is not.
    let mut m = base();
    m.nodes[0].op = Op::LeakyRelu;
    m.nodes[0].attrs.insert("alpha".into(), Attr::Int(0));
    verify(&m).unwrap();
    m.nodes[0]
        .attrs
        .insert("alpha".into(), Attr::Enum("big".into()));
    assert_under(
        &errors(&m),
        "leaky_relu(%x)",
        "attribute `alpha` of leaky_relu must be a number, found big",
    );
}

#[test]
fn inv10d_enum_words() {
    let e = errors_of(
        "module m {
  input %x: f32[2]
  %q: q<i8, 0.5:0>[2] = quantize(%x) {rounding = nearest}
  output %q
}",
    );
    assert_under(
        &e,
        "quantize(%x)",
        "attribute `rounding` of quantize must be one of half_even, half_up, half_down, ceil, floor, up, down, found `nearest`",
    );
}

// ------------------------------------------------------------------ 11. result types

#[test]
fn inv11a_result_type_mismatch() {
    let e = errors_of(
        "module m {
  input %x: f32[1,1,8,8]
  input %w: f32[4,1,3,3]
  %y: f32[1,4,8,8] = conv2d(%x, %w)
  output %y
}",
    );
    assert_under(
        &e,
        "conv2d(%x, %w)",
        "result type mismatch: declared f32[1,4,8,8], expected f32[1,4,6,6]",
    );
}

#[test]
fn inv11b_type_rule_errors() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "input %x: f32[1,1,3,3]
  input %w: q<i8, 0.1:0>[8,1,3,3]
  %y: f32[1,8,1,1] = conv2d(%x, %w)",
            "conv2d(%x, %w)",
            "operand `w` of conv2d must be f32, found q<i8, 0.1:0>[8,1,3,3]",
        ),
        (
            "input %a: f32[2,3]
  input %b: f32[4,5]
  %y: f32[2,5] = matmul(%a, %b)",
            "matmul(%a, %b)",
            "inner dimensions of matmul differ",
        ),
        (
            "input %a: f32[2,3]
  input %b: f32[4]
  %y: f32[2,3] = add(%a, %b)",
            "add(%a, %b)",
            "operands of add do not broadcast",
        ),
        (
            "input %x: f32[2]
  %y: i8[2] = quantize(%x)",
            "quantize(%x)",
            "the result of quantize must have a quantized type (q<...>), found i8",
        ),
        (
            "input %x: i8[2]
  %y: f32[2] = dequantize(%x)",
            "dequantize(%x)",
            "operand `q` of dequantize must have a quantized type",
        ),
        (
            "input %x: q<i8, axis=1, [0.5:0, 0.5:0, 0.5:0]>[2,3]
  %y: q<i8, axis=1, [0.5:0, 0.5:0]>[2,2] = slice(%x) {starts = [0], ends = [2], axes = [1], steps = [1]}",
            "slice(%x)",
            "slice cuts quantization axis 1",
        ),
        (
            "input %x: q<i8, axis=1, [0.5:0, 0.5:0]>[2,2]
  %y: q<i8, axis=1, [0.5:0, 0.5:0]>[2,2] = pad(%x) {pads = [0, 1, 0, 0]}",
            "pad(%x)",
            "pad changes quantization axis 1",
        ),
        (
            "input %x: q<i8, axis=0, [0.5:0, 0.5:0]>[2,2]
  %y: q<i8, axis=0, [0.5:0, 0.5:0, 0.5:0, 0.5:0]>[4,2] = concat(%x, %x) {axis = 0}",
            "concat(%x, %x)",
            "concat along axis 0, the quantization axis of q<i8, axis=0, [0.5:0, 0.5:0]>, would have to join",
        ),
        (
            "input %x: i8[2,2]
  input %z: u8[2,2]
  %y: i8[4,2] = concat(%x, %z) {axis = 0}",
            "concat(%x, %z)",
            "operands of concat must have one element type: `xs[0]` is i8, `xs[1]` is u8",
        ),
        (
            "input %x: q<i8, axis=1, [0.5:0, 0.5:0]>[1,2,3]
  %y: q<i8, axis=0, [0.5:0, 0.5:0]>[2,3] = reshape(%x) {shape = [2, 3]}",
            "reshape(%x)",
            "changes the dimensions up to quantization axis 1",
        ),
        (
            "input %x: i32[1,2]
  %y: i8[1,2] = requantize(%x) {multiplier = [1, 2, 3], shift = [0]}",
            "requantize(%x)",
            "attribute `multiplier` of requantize must have 1 entry or one per channel (2 along axis 1",
        ),
        (
            "input %x: i32[1,2]
  %y: i8[1,2] = requantize(%x) {multiplier = [4294967296], shift = [63]}",
            "requantize(%x)",
            "holds 4294967296, which does not fit in i32",
        ),
        (
            "input %x: i32[1,2]
  %y: i8[1,2] = requantize(%x) {multiplier = [1], shift = [63]}",
            "requantize(%x)",
            "attribute `shift` of requantize holds 63, outside -31..=62",
        ),
        (
            "input %x: q<u8, 0.1:0>[1,2,3,3]
  input %w: q<i8, axis=1, [0.5:0, 0.5:0]>[4,2,3,3]
  %y: i32[1,4,1,1] = conv2d_int(%x, %w)",
            "conv2d_int(%x, %w)",
            "operand `w` of conv2d_int must have per-tensor or per-axis along axis 0 (the output channels) quantization",
        ),
        (
            "input %x: i8[2,3]
  input %t: i32[3,2]
  %y: b1[2,3] = threshold(%x, %t)",
            "threshold(%x, %t)",
            "threshold with a b1 result needs one threshold per channel (K = 1, found 2)",
        ),
        (
            "input %x: i8[2,3]
  input %t: i32[1,3]
  %y: u2[2,3] = threshold(%x, %t) {offset = 1}",
            "threshold(%x, %t)",
            "threshold results are codes 1..=4 (offset + 0..=K), which u2 (codes 0..=3) does not hold",
        ),
        (
            "input %a: i32[2]
  input %b: i16[2]
  %y: i32[2] = add(%a, %b)",
            "add(%a, %b)",
            "operands of add must have one integer type, found i32[2] and i16[2]",
        ),
        (
            "input %a: q<u8, 0.1:0>[2]
  input %b: q<u8, 0.1:0>[2]
  %y: i32[2] = add(%a, %b)",
            "add(%a, %b)",
            "operands of add must both be f32 or both of one plain integer type",
        ),
        (
            "input %x: u8[4]
  input %t: u8[16]
  %y: u8[4] = lookup(%x, %t)",
            "lookup(%x, %t)",
            "operand `table` of lookup must be a plain integer or per-tensor quantized tensor [256]",
        ),
        (
            "input %x: u4[2,3]
  %y: u8[2,1] = bit_pack(%x) {word_bits = 12}",
            "bit_pack(%x)",
            "attribute `word_bits` of bit_pack must be 8, 16 or 32, found 12",
        ),
        (
            "input %x: i8[2,1]
  %y: u4[2,2] = bit_unpack(%x) {count = 2}",
            "bit_unpack(%x)",
            "operand `x` of bit_unpack must hold unsigned words (u8, u16 or u32), found i8[2,1]",
        ),
        (
            "input %x: f32[2]
  %y: b1[2] = cast(%x)",
            "cast(%x)",
            "use binarize",
        ),
        (
            "input %x: q<u8, 0.5:0>[1,2]
  %y: q<u8, 0.5:0>[2,4] = resize(%x) {mode = linear, sizes = [2, 4], scales = [2, 2]}",
            "resize(%x)",
            "operand `x` of resize must be f32, found q<u8, 0.5:0>[1,2]",
        ),
        (
            "input %x: q<u8, axis=0, [0.5:0]>[1,2]
  %y: q<u8, axis=0, [0.5:0, 0.5:0]>[2,4] = resize(%x) {sizes = [2, 4], scales = [2, 2]}",
            "resize(%x)",
            "resize moves elements along quantization axis 0",
        ),
        (
            "input %x: f32[3]
  %y: f32[2] = pad(%x) {pads = [-4, 3]}",
            "pad(%x)",
            "pads -4 and 3 of axis 0 crop more than its 3 elements",
        ),
        (
            "input %x: b1[2]
  %y: b1[3] = pad(%x) {pads = [0, 1]}",
            "pad(%x)",
            "attribute `value` of pad is the fill code of b1 elements and must be an integer the type admits, found 0.0",
        ),
        (
            "input %x: f32[1,1,4,4]
  %y: f32[1,1,3,3] = max_pool(%x) {kernel = [2, 2], pads = [2, 0, 0, 0]}",
            "max_pool(%x)",
            "must be smaller than the window extent 2",
        ),
        (
            "input %x: f32[2,3]
  %y: f32[2,3] = transpose(%x) {perm = [0, 0]}",
            "transpose(%x)",
            "attribute `perm` of transpose must be a permutation of 0..2, found [0, 0]",
        ),
    ];
    for (body, line, msg) in cases {
        let src = format!("module m {{\n  {body}\n  output %y\n}}");
        let e = errors_of(&src);
        assert_eq!(e.diagnostics.len(), 1, "{e}");
        assert_under(&e, line, msg);
    }
}

// ------------------------------------------------------------------ 12. constant operands

#[test]
fn inv12a_thresholds_sorted() {
    let e = errors_of(
        "module m {
  input %x: i8[1,2]
  const @t: i32[2,3] = [0, 1, 2, 5, 3, 4]
  %y: u2[1,2] = threshold(%x, @t)
  output %y
}",
    );
    assert_under(
        &e,
        "threshold(%x, @t)",
        "thresholds `@t` must be sorted along K, but row 1 has 5 before 3",
    );
}

#[test]
fn inv12b_fake_quant_scales_positive() {
    let e = errors_of(
        "module m {
  input %x: f32[2]
  const @s: f32[] = [-0.5]
  const @z: f32[] = [0.0]
  const @o: f32[2] = [1.0, 0.0]
  %y: f32[2] = fake_quant(%x, @s, @z) {bits = 4}
  %t: f32[2] = trunc(%y, @z, @z, @o) {in_bits = 8, out_bits = 4}
  output %t
}",
    );
    assert_under(
        &e,
        "fake_quant(%x, @s, @z)",
        "operand `scale` of fake_quant must be positive and finite, but `@s` holds -0.5",
    );
    assert_under(
        &e,
        "trunc(%y, @z, @z, @o)",
        "operand `scale` of trunc must be positive and finite, but `@z` holds 0.0",
    );
    assert_under(&e, "trunc(%y, @z, @z, @o)", "operand `out_scale` of trunc");
}

// ------------------------------------------------------------------ 13. outputs

#[test]
fn inv13a_at_least_one_output() {
    let e = errors_of(
        "module m {
  input %x: f32[2]
}",
    );
    assert_under(&e, "module m", "the module has no outputs");
}

#[test]
fn inv13b_output_in_range() {
    let mut m = base();
    m.outputs.push(ValueId(4));
    let e = errors(&m);
    assert_under(
        &e,
        "module base",
        "output #1 refers to value #4, but the module has 4 values",
    );
    assert!(e.listing.contains("output %b, %<invalid 4>"), "{e}");
}

// ------------------------------------------------------------------ well-formed modules

/// One well-formed module per op (module body; wrapped in `module ok { ... }`).
const VALID: &[&str] = &[
    // conv2d with groups and bias
    "input %x: f32[1,2,5,5]
  input %w: f32[4,1,3,3]
  input %b: f32[4]
  %y: f32[1,4,3,3] = conv2d(%x, %w, %b) {group = 2}
  output %y",
    "input %x: f32[1,2,3,3]
  input %w: f32[2,3,2,2]
  %y: f32[1,3,6,6] = conv_transpose2d(%x, %w) {strides = [2, 2]}
  output %y",
    "input %a: f32[2,3,4]
  input %b: f32[4]
  %y: f32[2,3] = matmul(%a, %b)
  output %y",
    "input %a: f32[4,3]
  input %b: f32[5,4]
  input %c: f32[5]
  %y: f32[3,5] = gemm(%a, %b, %c) {trans_a = true, trans_b = true, alpha = 2}
  output %y",
    "input %a: f32[2,3]
  input %b: f32[3]
  %s: f32[2,3] = add(%a, %b)
  %d: f32[2,3] = sub(%s, %b)
  %m: f32[2,3] = mul(%d, %a)
  %q: f32[2,3] = div(%m, %b)
  %p: f32[2,3] = pow(%q, %b)
  output %p",
    "input %x: f32[4]
  %a: f32[4] = sqrt(%x)
  %b: f32[4] = exp(%a)
  %c: f32[4] = relu(%b)
  %d: f32[4] = clip(%c) {min = 0, max = 6.0}
  %e: f32[4] = leaky_relu(%d) {alpha = 0.1}
  %f: f32[4] = sigmoid(%e)
  %g: f32[4] = hard_sigmoid(%f)
  %h: f32[4] = hard_swish(%g)
  %i: f32[4] = sign(%h)
  %j: f32[4] = silu(%i)
  output %j",
    "input %x: f32[4]
  input %y: f32[2,1]
  %a: f32[4] = abs(%x)
  %b: f32[4] = neg(%a)
  %c: f32[4] = floor(%b)
  %d: f32[4] = ceil(%c)
  %e: f32[4] = round(%d)
  %f: f32[4] = log(%a)
  %g: f32[4] = tanh(%f)
  %h: f32[4] = erf(%g)
  %i: f32[2,4] = max(%h, %y)
  %j: f32[2,4] = min(%i, %e)
  output %j",
    "input %x: f32[2,3]
  input %y: f32[3]
  input %q: q<u8, 0.1:128>[2,3]
  %e: u1[2,3] = equal(%x, %y)
  %l: u1[2,3] = less(%y, %x)
  %le: u1[2,3] = less_or_equal(%q, %q)
  %n: u1[2,3] = not(%e)
  %a: u1[2,3] = and(%n, %l)
  %o: u1[2,3] = or(%a, %le)
  %z: u1[2,3] = xor(%o, %e)
  %w: f32[2,3] = where(%z, %x, %y)
  %wq: q<u8, 0.1:128>[2,3] = where(%z, %q, %q)
  %mx: q<u8, 0.1:128>[2,3] = max(%wq, %q)
  %mn: q<u8, 0.1:128>[2,3] = min(%mx, %q)
  output %w, %mn",
    "input %x: f32[2,5,3]
  input %i: i32[4]
  %p: f32[2,1,3] = reduce_prod(%x) {axes = [1]}
  %a: i32[2,3] = arg_max(%x) {axis = 1, keepdims = false}
  %b: i32[1,5,3] = arg_min(%x) {select_last_index = true}
  %t: f32[2,2,3] = top_k(%x) {axis = 1, k = 2}
  %u: i32[2,5,1] = top_k_indices(%x) {k = 1, largest = false}
  %h: u1[4,10] = one_hot(%i) {depth = 10}
  output %p, %a, %b, %t, %u, %h",
    "input %x: f32[2,5]
  %y: f32[2,5] = softmax(%x) {axis = 0}
  output %y",
    "input %x: f32[1,3,2,2]
  const @s: f32[3] = [1, 2, 3]
  const @b: f32[3] = [0, 0, 0]
  const @m: f32[3] = [0.5, 0.5, 0.5]
  const @v: f32[3] = [1, 1, 1]
  %y: f32[1,3,2,2] = batch_norm(%x, @s, @b, @m, @v)
  output %y",
    "input %x: q<i8, axis=1, [0.5:0, 0.25:0]>[1,2,5,5]
  %y: q<i8, axis=1, [0.5:0, 0.25:0]>[1,2,3,3] = max_pool(%x) {kernel = [2, 2], strides = [2, 2], ceil_mode = true}
  output %y",
    "input %x: f32[1,1,5,5]
  %y: f32[1,1,5,5] = avg_pool(%x) {kernel = [3, 3], pads = [1, 1, 1, 1]}
  %g: f32[1,1,1,1] = global_avg_pool(%y)
  output %g",
    "input %x: f32[2,3,4]
  %y: f32[2,4] = reduce_mean(%x) {axes = [-2], keepdims = false}
  %z: f32[1,1] = reduce_mean(%y)
  %s: f32[1,1] = reduce_sum(%z)
  %u: f32[1,1] = reduce_max(%s)
  %v: f32[1,1] = reduce_min(%u)
  output %v",
    "input %x: f32[1,1,2,2]
  input %q: q<u8, axis=1, [0.5:7, 0.25:0]>[1,2,2,3]
  %y: f32[1,1,4,4] = resize(%x) {sizes = [1, 1, 4, 4], scales = [1, 1, 2, 2], mode = linear}
  %z: q<u8, axis=1, [0.5:7, 0.25:0]>[1,2,4,6] = resize(%q) {sizes = [1, 2, 4, 6], scales = [1, 1, 2, 2]}
  output %y, %z",
    "input %x: q<i8, axis=0, [0.5:0, 0.25:0]>[2,3,4]
  %y: q<i8, axis=0, [0.5:0, 0.25:0]>[2,12] = reshape(%x) {shape = [2, 12]}
  %z: q<i8, axis=0, [0.5:0, 0.25:0]>[2,12] = flatten(%x)
  output %y, %z",
    "input %x: q<i8, axis=1, [0.5:0, 0.25:0]>[1,2,3]
  %y: q<i8, axis=2, [0.5:0, 0.25:0]>[3,1,2] = transpose(%x) {perm = [2, 0, 1]}
  output %y",
    "input %a: i8[2,3]
  input %b: i8[1,3]
  %y: i8[3,3] = concat(%a, %b) {axis = -2}
  output %y",
    "input %x: u8[2,3]
  %y: u8[2,4] = pad(%x) {pads = [0, 1, 0, 0], value = 7}
  %z: u8[4,3] = pad(%y) {pads = [1, 0, 1, -1], mode = reflect}
  output %z",
    "input %x: q<i8, axis=1, [0.5:0, 0.25:0]>[10,2]
  %y: q<i8, axis=1, [0.5:0, 0.25:0]>[4,2] = slice(%x) {starts = [1], ends = [8], axes = [0], steps = [2]}
  output %y",
    "input %x: f32[1,3,1]
  %y: f32[3] = squeeze(%x) {axes = [0, -1]}
  %z: f32[1,3,1,1] = unsqueeze(%y) {axes = [0, 2, 3]}
  output %z",
    "input %x: f32[3]
  %y: i8[3] = cast(%x) {rounding = half_even}
  %z: u4[3] = cast(%y)
  %b: b1[3] = cast(%y)
  output %z, %b",
    "input %x: f32[2]
  %q: q<u8, 0.1:3>[2] = quantize(%x)
  %d: f32[2] = dequantize(%q)
  output %d",
    "input %x: f32[2,3]
  const @s: f32[] = [0.5]
  const @z: f32[3] = [0, 1, 0]
  %y: f32[2,3] = fake_quant(%x, @s, @z) {bits = 4, signed = false, narrow = true}
  %t: f32[2,3] = trunc(%y, @s, @z, @s) {in_bits = 8, out_bits = 4}
  output %t",
    "input %x: i32[1,2,2]
  %y: q<i8, 0.05:0>[1,2,2] = requantize(%x) {multiplier = [1000, 2000], shift = [20], min = 0}
  output %y",
    "input %x: q<u8, 0.1:128>[1,2,4,4]
  const @w: q<i4, axis=0, [0.5:0, 0.25:0, 0.5:1]>[3,2,1,1] = [1, -2, 7, 0, -8, 3]
  const @b: i32[3] = [10, 20, 30]
  %y: i32[1,3,4,4] = conv2d_int(%x, @w, @b)
  output %y",
    "input %a: q<i8, 0.1:0>[2,3]
  input %b: q<i8, axis=1, [0.1:0, 0.2:0, 0.3:0, 0.4:0]>[3,4]
  input %c: i32[4]
  %y: i32[2,4] = matmul_int(%a, %b, %c)
  output %y",
    "input %x: f32[4]
  %y: b1[4] = binarize(%x)
  output %y",
    "input %x: i8[1,2,3]
  const @t: i32[2,3] = [-1, 0, 5, 2, 2, 3]
  const @t1: i32[1,1] = [0]
  %y: u2[1,2,3] = threshold(%x, @t)
  %b: b1[1,2,3] = threshold(%x, @t1)
  output %y, %b",
    "input %x: b1[2,9]
  %p: u8[2,2] = bit_pack(%x)
  %u: b1[2,9] = bit_unpack(%p) {count = 9}
  output %u",
    "input %a: i32[2,3]
  input %b: i32[3]
  %s: i32[2,3] = add(%a, %b)
  %d: i32[2,3] = sub(%s, %a)
  %p: i32[2,3] = mul(%d, %b)
  output %p",
    "input %x: q<i4, 0.5:1>[2,3]
  const @t: q<u8, 0.01:0>[16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
  %y: q<u8, 0.01:0>[2,3] = lookup(%x, @t)
  output %y",
];

#[test]
fn well_formed_modules_pass_and_cover_every_op() {
    let mut covered = BTreeSet::new();
    for body in VALID {
        let src = format!("module ok {{\n  {body}\n}}");
        let m = parse(&src);
        if let Err(e) = verify(&m) {
            panic!("{e}");
        }
        covered.extend(m.nodes.iter().map(|n| n.op));
        // The printed form verifies too.
        verify(&parse(&m.to_string())).unwrap();
    }
    let missing: Vec<&str> = Op::ALL
        .iter()
        .filter(|op| !covered.contains(op))
        .map(|op| op.name())
        .collect();
    assert!(missing.is_empty(), "no valid snippet for {missing:?}");
}

/// The verifier reports, never panics: every attribute of every valid snippet replaced
/// by odd values, every dimension by odd sizes, every type by odd element types and
/// shapes.
#[test]
fn odd_modules_do_not_panic() {
    let odd_attrs = [
        Attr::Int(-1),
        Attr::Int(0),
        Attr::Int(3),
        Attr::Int(i64::MAX),
        Attr::Int(i64::MIN),
        Attr::Float(f32::NAN),
        Attr::Float(-1.5),
        Attr::Bool(true),
        Attr::Ints(vec![]),
        Attr::Ints(vec![0]),
        Attr::Ints(vec![-1, 2]),
        Attr::Ints(vec![i64::MAX, i64::MIN, 0, 1]),
        Attr::Ints(vec![1, 1, 1, 1, 1, 1, 1, 1]),
        Attr::Floats(vec![f32::INFINITY, 0.0]),
        Attr::Enum("zzz".into()),
    ];
    let odd_dims = [0usize, 1, 3, 1 << 20, 1 << 40, usize::MAX];
    let mut checked = 0;
    for body in VALID {
        let base = parse(&format!("module ok {{\n  {body}\n}}"));
        for n in 0..base.nodes.len() {
            let names: Vec<String> = base.nodes[n]
                .op
                .info()
                .attrs
                .iter()
                .map(|a| a.name.to_string())
                .collect();
            for name in &names {
                for a in &odd_attrs {
                    let mut m = base.clone();
                    m.nodes[n].attrs.insert(name.clone(), a.clone());
                    let _ = verify(&m);
                    checked += 1;
                }
            }
        }
        for v in 0..base.values.len() {
            for d in 0..base.values[v].ty.rank() {
                for &size in &odd_dims {
                    let mut m = base.clone();
                    m.values[v].ty.shape[d] = size;
                    let _ = verify(&m);
                    checked += 1;
                }
            }
        }
    }
    let odd_elems = [
        ElemType::F32,
        ElemType::Int(IntType::I8),
        ElemType::Int(IntType::new(32, false)),
        ElemType::Bipolar,
        ElemType::Quant(qcc_ir::QuantType::per_tensor(IntType::U8, 0.5, 3)),
    ];
    let odd_shapes: [&[usize]; 4] = [&[], &[2], &[1, 2, 3, 4, 5], &[0, 0, 0, 0]];
    for body in VALID {
        let base = parse(&format!("module ok {{\n  {body}\n}}"));
        for v in 0..base.values.len() {
            for e in &odd_elems {
                let mut m = base.clone();
                m.values[v].ty.elem = e.clone();
                let _ = verify(&m);
                checked += 1;
            }
            for sh in odd_shapes {
                let mut m = base.clone();
                m.values[v].ty.shape = sh.to_vec();
                let _ = verify(&m);
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "{checked}");
}
