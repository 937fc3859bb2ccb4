//! Inputs the `diff` fuzz target (fuzz/README.md) found, each a test named after what
//! it was. The module texts are the ones the fuzzer printed.

mod backend_common;
use backend_common::{B, check_cpu};
use qcc_ir::interp::Tensor;

/// The tiers this host runs, besides `native` (which the others cover on some host).
fn tiers() -> Vec<&'static str> {
    let mut v = vec!["native", "baseline"];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        v.push("x86-64-v3");
    }
    v
}

/// Two 8-bit convolutions whose AVX2 in-tile requantize both took the f64 form, one
/// with a multiplier whose shifted value does not fit i32 and one whose does: the two
/// tiles had one name but differed in a field the f64 form never reads, and the second
/// definition failed (`DuplicateDefinition`) at x86-64-v3.
#[test]
fn f64_requantize_tiles_that_differ_only_in_the_unused_i64_clamp() {
    let text = "module fuzz {
  input %x: q<i4, 0.01:-8>[1,1,1,1]
  const @c: q<i8, 0.01:-20>[1,1,1,1] = [-128]
  const @c0: q<i8, 0.01:-20>[1,1,1,1] = [-128]
  const @c1: q<i8, 0.01:-20>[1,1,1,1] = [-128]
  %v: i32[1,1,1,1] = conv2d_int(%x, @c) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]}
  %v0: q<i8, 0.01:-20>[1,1,1,1] = requantize(%v) {axis = 1, min = -127, multiplier = [-164560896], rounding = half_even, shift = [0]}
  %v1: i32[1,1,2,1] = conv2d_int(%v0, @c0) {dilations = [1, 1], group = 1, pads = [1, 0, 0, 0], strides = [1, 1]}
  %v2: q<i8, 0.01:-20>[1,1,2,1] = requantize(%v1) {axis = 1, min = -127, multiplier = [303718826], rounding = half_even, shift = [27]}
  %v3: i32[1,1,2,1] = conv2d_int(%v2, @c1) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]}
  %v4: q<i8, 0.01:-20>[1,1,2,1] = requantize(%v3) {axis = 1, min = -127, multiplier = [-2147483648], rounding = half_even, shift = [0]}
  output %v4
}";
    let m = qcc_ir::parse_module(text).unwrap();
    for code in -8..8 {
        let b = B {
            m: m.clone(),
            inputs: vec![Tensor::int(vec![1, 1, 1, 1], vec![code])],
        };
        for cpu in tiers() {
            check_cpu(&b, cpu).unwrap_or_else(|e| panic!("input code {code}: {e}"));
        }
    }
}
