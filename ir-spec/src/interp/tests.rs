//! Hand-worked examples, with the arithmetic in comments. The fixture tests
//! (`tests/interp_fixtures.rs`) compare every op against an independent implementation;
//! these pin down the cases that have none (requantize, integer conv/matmul, threshold,
//! bit packing) and the corners of the others.

use super::quant::round_shift;
use super::*;
use crate::parse_module;
use crate::rounding::Rounding;

fn run_src(src: &str, inputs: &[Tensor]) -> Vec<Tensor> {
    let m = parse_module(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    run(&m, inputs).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

fn run_err(src: &str, inputs: &[Tensor]) -> InterpError {
    let m = parse_module(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    run(&m, inputs).expect_err("the module should fail")
}

/// One node `op` on one input, result type `out`.
fn unary_node(in_ty: &str, op: &str, attrs: &str, out: &str, x: Tensor) -> Tensor {
    let src =
        format!("module t {{\n input %x: {in_ty}\n %y: {out} = {op}(%x) {attrs}\n output %y\n}}");
    run_src(&src, &[x]).remove(0)
}

fn ints(t: &Tensor) -> Vec<i64> {
    t.as_int().expect("integer tensor").to_vec()
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.as_f32().expect("f32 tensor").to_vec()
}

#[test]
fn requantize_per_tensor() {
    // x is q<i16, 0.001:-24>, the result q<i8, 0.5:5>; multiplier 1518500250 and shift
    // 35 stand for 1518500250 / 2^35 ~= 0.0441942 (the ratio of the scales would be 0.002;
    // any multiplier shows the arithmetic).
    //   x = 976:   a = 976 + 24 = 1000; 1000 * 1518500250 = 1518500250000;
    //              / 2^35 = 44.194.. -> 44; + 5 = 49
    //   x = -24:   a = 0 -> 0; + 5 = 5
    //   x = 152:   a = 176; 176 * 1518500250 = 267256044000; / 2^35 = 7.778.. -> 8; 13
    //   x = 30000: a = 30024; 30024 * 1518500250 / 2^35 = 1326.88.. -> 1327; 1332 -> 127
    //   x = -3024: a = -3000; -3000 * 1518500250 / 2^35 = -132.58.. -> -133; -128 (in range)
    let y = unary_node(
        "q<i16, 0.001:-24>[5]",
        "requantize",
        "{multiplier = [1518500250], shift = [35]}",
        "q<i8, 0.5:5>[5]",
        Tensor::int([5], vec![976, -24, 152, 30000, -3024]),
    );
    assert_eq!(ints(&y), [49, 5, 13, 127, -128]);
    // The classic 1/sqrt(2): 1000 * 1518500250 >> 31 = 1518500250000 / 2147483648
    // = 707.1067.. -> 707.
    let y = unary_node(
        "i32[1]",
        "requantize",
        "{multiplier = [1518500250], shift = [31]}",
        "i32[1]",
        Tensor::int([1], vec![1000]),
    );
    assert_eq!(ints(&y), [707]);
}

#[test]
fn requantize_rounding_ties() {
    // 3/2 = 1.5, -3/2 = -1.5, 5/2 = 2.5, -5/2 = -2.5, 4/2 = 2 (exact), 7/2 = 3.5
    let x = Tensor::int([6], vec![3, -3, 5, -5, 4, 7]);
    let want: [(&str, [i64; 6]); 7] = [
        ("half_even", [2, -2, 2, -2, 2, 4]),
        ("half_up", [2, -2, 3, -3, 2, 4]),
        ("half_down", [1, -1, 2, -2, 2, 3]),
        ("ceil", [2, -1, 3, -2, 2, 4]),
        ("floor", [1, -2, 2, -3, 2, 3]),
        ("up", [2, -2, 3, -3, 2, 4]),
        ("down", [1, -1, 2, -2, 2, 3]),
    ];
    for (mode, w) in want {
        let y = unary_node(
            "i32[6]",
            "requantize",
            &format!("{{multiplier = [1], shift = [1], rounding = {mode}}}"),
            "i32[6]",
            x.clone(),
        );
        assert_eq!(ints(&y), w, "{mode}");
    }
}

#[test]
fn requantize_per_channel_negative_shift_and_clamp() {
    // Channel 0: multiplier 3, shift 1:   10 * 3 / 2 = 15,  -10 * 3 / 2 = -15
    // Channel 1: multiplier 1, shift -2:  10 * 1 * 4 = 40,  -10 * 4 = -40
    // min = 0 (an absorbed ReLU): -15 -> 0, -40 -> 0.
    let y = unary_node(
        "i32[1,2,2]",
        "requantize",
        "{multiplier = [3, 1], shift = [1, -2], axis = 1, min = 0}",
        "i8[1,2,2]",
        Tensor::int([1, 2, 2], vec![10, -10, 10, -10]),
    );
    assert_eq!(ints(&y), [15, 0, 40, 0]);
    // Narrow result: the range is [-127, 127], not [-128, 127].
    let y = unary_node(
        "i32[2]",
        "requantize",
        "{multiplier = [1], shift = [0]}",
        "q<i8 narrow, 1.0:0>[2]",
        Tensor::int([2], vec![-1000, 1000]),
    );
    assert_eq!(ints(&y), [-127, 127]);
}

#[test]
fn round_shift_matches_rounding_shift_right() {
    let samples = [
        0i64,
        1,
        -1,
        2,
        3,
        -3,
        5,
        -5,
        1 << 40,
        (1 << 40) + (1 << 9),
        -(1 << 40) - (1 << 9),
        i64::MAX,
        i64::MIN + 1,
        123_456_789_012,
        -987_654_321_098,
    ];
    for r in Rounding::ALL {
        for &n in &samples {
            for shift in [-3i32, 0, 1, 2, 10, 31, 62] {
                if shift < 0 && n.checked_shl((-shift) as u32).map(|v| v >> -shift) != Some(n) {
                    continue;
                }
                let want = r.shift_right(n, shift) as i128;
                assert_eq!(
                    round_shift(r, n as i128, shift as i64),
                    want,
                    "{r} {n} {shift}"
                );
            }
        }
    }
    // Beyond i64: (2^70 + 2^9) / 2^10 = 2^60 + 0.5 -> half_even 2^60 (even), half_up 2^60+1.
    let n = (1i128 << 70) + (1 << 9);
    assert_eq!(round_shift(Rounding::HalfEven, n, 10), 1 << 60);
    assert_eq!(round_shift(Rounding::HalfUp, n, 10), (1 << 60) + 1);
    assert_eq!(round_shift(Rounding::HalfEven, -5, 200), 0);
    assert_eq!(round_shift(Rounding::Floor, -5, 200), -1);
    assert_eq!(round_shift(Rounding::Floor, 5, -200), i128::MAX);
}

#[test]
fn conv2d_int_zero_points_and_padding() {
    // x q<u8, 0.1:128> codes [[130, 126], [128, 140]] -> x - zx = [[2, -2], [0, 12]]
    // w q<i8, axis=0, [0.05:1]> codes [[3, -1], [1, 2]] -> w - zw = [[2, -2], [0, 1]]
    // No padding: 10 + 2*2 + (-2)*(-2) + 0*0 + 12*1 = 10 + 4 + 4 + 0 + 12 = 30.
    // Pads 1: output 3x3; the top-left window sees only x[0,0] under w[1,1]:
    //   10 + 2*1 = 12; the centre window is the unpadded one: 30;
    //   the bottom-right sees only x[1,1] under w[0,0]: 10 + 12*2 = 34.
    let src = |pads: &str, out: &str| {
        format!(
            "module t {{
  input %x: q<u8, 0.1:128>[1,1,2,2]
  const @w: q<i8, axis=0, [0.05:1]>[1,1,2,2] = [3, -1, 1, 2]
  const @b: i32[1] = [10]
  %y: i32[{out}] = conv2d_int(%x, @w, @b) {{pads = [{pads}]}}
  output %y
}}"
        )
    };
    let x = Tensor::int([1, 1, 2, 2], vec![130, 126, 128, 140]);
    let y = run_src(&src("0, 0, 0, 0", "1,1,1,1"), std::slice::from_ref(&x));
    assert_eq!(ints(&y[0]), [30]);
    let y = run_src(&src("1, 1, 1, 1", "1,1,3,3"), &[x]);
    let y = ints(&y[0]);
    assert_eq!((y[0], y[4], y[8]), (12, 30, 34));
}

#[test]
fn matmul_int_wraps_and_per_column_zero_points() {
    // (2^31 - 1) * 2 + (2^31 - 1) * 1 = 6442450941; minus 2^32 = 2147483645 (fits i32).
    let src = "module t {
  input %a: i32[1,2]
  const @b: i32[2,1] = [2, 1]
  %y: i32[1,1] = matmul_int(%a, @b)
  output %y
}";
    let y = run_src(src, &[Tensor::int([1, 2], vec![2147483647, 2147483647])]);
    assert_eq!(ints(&y[0]), [2147483645]);
    // a q<u8, 1.0:10> codes [12, 9] -> a - za = [2, -1]
    // b codes [[3, 0], [2, 1]], zero points per column [1, -1]:
    //   column 0: b - 1 = [2, 1];  2*2 + (-1)*1 = 3;  + bias 100 = 103
    //   column 1: b + 1 = [1, 2];  2*1 + (-1)*2 = 0;  + bias -5  = -5
    let src = "module t {
  input %a: q<u8, 1.0:10>[1,2]
  const @b: q<i8, axis=1, [1.0:1, 1.0:-1]>[2,2] = [3, 0, 2, 1]
  const @bias: i32[2] = [100, -5]
  %y: i32[1,2] = matmul_int(%a, @b, @bias)
  output %y
}";
    let y = run_src(src, &[Tensor::int([1, 2], vec![12, 9])]);
    assert_eq!(ints(&y[0]), [103, -5]);
}

#[test]
fn threshold_counts() {
    // Channel 0 thresholds [0, 5]: -5 -> 0 passed, 0 -> 1, 7 -> 2; offset -1: -1, 0, 1
    // Channel 1 thresholds [2, 2]: 1 -> 0, 2 -> 2, 3 -> 2;          offset -1: -1, 1, 1
    let src = "module t {
  input %x: i8[1,2,3]
  const @t: i8[2,2] = [0, 5, 2, 2]
  %y: i8[1,2,3] = threshold(%x, @t) {offset = -1}
  output %y
}";
    let y = run_src(src, &[Tensor::int([1, 2, 3], vec![-5, 0, 7, 1, 2, 3])]);
    assert_eq!(ints(&y[0]), [-1, 0, 1, -1, 1, 1]);
    // b1 result, one shared threshold 0: count 0 -> -1, count 1 -> +1.
    let src = "module t {
  input %x: i8[1,2,2]
  const @t: i8[1,1] = [0]
  %y: b1[1,2,2] = threshold(%x, @t)
  output %y
}";
    let y = run_src(src, &[Tensor::int([1, 2, 2], vec![-1, 0, 5, -128])]);
    assert_eq!(ints(&y[0]), [-1, 1, 1, -1]);
}

#[test]
fn bit_pack_and_unpack() {
    // u2 codes [1, 2, 3, 0, 1]: bits 0-1 = 01, 2-3 = 10, 4-5 = 11, 6-7 = 00
    //   -> word 0 = 0b00_11_10_01 = 57; code 4 = 01 -> word 1 = 1.
    let y = unary_node(
        "u2[1,5]",
        "bit_pack",
        "{}",
        "u8[1,2]",
        Tensor::int([1, 5], vec![1, 2, 3, 0, 1]),
    );
    assert_eq!(ints(&y), [57, 1]);
    // i3 codes [-1, 3, -4] = 111, 011, 100: stream bits 0..9 = 1,1,1, 1,1,0, 0,0,1
    //   -> word 0 = 0b0001_1111 = 31 (bits 0-7), word 1 = bit 8 = 1. Codes straddle words.
    let y = unary_node(
        "i3[1,3]",
        "bit_pack",
        "{}",
        "u8[1,2]",
        Tensor::int([1, 3], vec![-1, 3, -4]),
    );
    assert_eq!(ints(&y), [31, 1]);
    let back = unary_node("u8[1,2]", "bit_unpack", "{count = 3}", "i3[1,3]", y);
    assert_eq!(ints(&back), [-1, 3, -4]);
    // b1 [+1, -1, -1, +1 x5, -1]: bit 1 for -1 -> bits 1, 2 and 8 set: words 6, 1.
    let x = Tensor::int([9, 1], vec![1, -1, -1, 1, 1, 1, 1, 1, -1]);
    let y = unary_node("b1[9,1]", "bit_pack", "{axis = 0}", "u8[2,1]", x.clone());
    assert_eq!(ints(&y), [6, 1]);
    let back = unary_node(
        "u8[2,1]",
        "bit_unpack",
        "{axis = 0, count = 9}",
        "b1[9,1]",
        y,
    );
    assert_eq!(back, x);
    // 16-bit words, packing along the last axis of a [2, 3] u4 tensor:
    //   row 0: 0x1, 0x2, 0xF -> 0xF21 = 3873; row 1: 0x0, 0x8, 0x3 -> 0x380 = 896.
    let y = unary_node(
        "u4[2,3]",
        "bit_pack",
        "{axis = -1, word_bits = 16}",
        "u16[2,1]",
        Tensor::int([2, 3], vec![1, 2, 15, 0, 8, 3]),
    );
    assert_eq!(ints(&y), [3873, 896]);
    let back = unary_node(
        "u16[2,1]",
        "bit_unpack",
        "{axis = 1, count = 3}",
        "i4[2,3]",
        y,
    );
    // Signed unpack sign-extends: 15 -> -1, 8 -> -8.
    assert_eq!(ints(&back), [1, 2, -1, 0, -8, 3]);
}

#[test]
fn quantize_ties_nan_and_narrow() {
    // x / 0.5 = [0.5, 1.5, -0.5, 2.5] -> half_even [0, 2, -0, 2]; + 3 = [3, 5, 3, 5]
    let x = Tensor::f32([4], vec![0.25, 0.75, -0.25, 1.25]);
    let y = unary_node("f32[4]", "quantize", "{}", "q<i8, 0.5:3>[4]", x.clone());
    assert_eq!(ints(&y), [3, 5, 3, 5]);
    // half_up: [1, 2, -1, 3] + 3
    let y = unary_node(
        "f32[4]",
        "quantize",
        "{rounding = half_up}",
        "q<i8, 0.5:3>[4]",
        x,
    );
    assert_eq!(ints(&y), [4, 5, 2, 6]);
    // NaN -> the zero point; saturation to the narrow range [-127, 127]; inf saturates.
    let y = unary_node(
        "f32[4]",
        "quantize",
        "{}",
        "q<i8 narrow, 1.0:0>[4]",
        Tensor::f32([4], vec![f32::NAN, -1000.0, 1000.0, f32::NEG_INFINITY]),
    );
    assert_eq!(ints(&y), [0, -127, 127, -127]);
    // Per axis: channel 0 has scale 0.5, zp 0; channel 1 scale 2, zp 10.
    //   [1, 1] / [0.5, 2] = [2, 0.5] -> [2, 0] + [0, 10] = [2, 10]
    let y = unary_node(
        "f32[1,2]",
        "quantize",
        "{}",
        "q<u8, axis=1, [0.5:0, 2.0:10]>[1,2]",
        Tensor::f32([1, 2], vec![1.0, 1.0]),
    );
    assert_eq!(ints(&y), [2, 10]);
}

#[test]
fn dequantize_blocked() {
    // Shape [1, 5], blocks of 2 along axis 1: blocks [0,1], [2,3], [4] with params
    // (0.5, 1), (0.25, 0), (2, -1): (q - z) * s.
    let y = unary_node(
        "q<i8, axis=1, block=2, [0.5:1, 0.25:0, 2.0:-1]>[1,5]",
        "dequantize",
        "",
        "f32[1,5]",
        Tensor::int([1, 5], vec![3, -1, 4, 8, 2]),
    );
    assert_eq!(floats(&y), [1.0, -1.0, 1.0, 2.0, 6.0]);
}

#[test]
fn fake_quant_grid_and_bipolar() {
    // bits 2 signed: grid [-2, 1]. scale 0.5, zero point 0.5:
    //   x = 3.0:  3/0.5 + 0.5 = 6.5 -> clamp 1 -> (1 - 0.5) * 0.5 = 0.25
    //   x = 0.1:  0.2 + 0.5 = 0.7 -> round 1 -> 0.25
    //   x = -0.4: -0.8 + 0.5 = -0.3 -> round -0 -> (0 - 0.5) * 0.5 = -0.25
    //   x = -9:   -18 + 0.5 -> clamp -2 -> (-2 - 0.5) * 0.5 = -1.25
    let src = "module t {
  input %x: f32[4]
  const @s: f32[] = [0.5]
  const @z: f32[] = [0.5]
  %y: f32[4] = fake_quant(%x, @s, @z) {bits = 2}
  output %y
}";
    let y = run_src(src, &[Tensor::f32([4], vec![3.0, 0.1, -0.4, -9.0])]);
    assert_eq!(floats(&y[0]), [0.25, 0.25, -0.25, -1.25]);
    // bits 1 signed is bipolar: y = x/s + z >= 0 ? 1 : -1 (zero maps to +1).
    //   x = 0:    0 + 0 >= 0 -> 1 -> 1 * 2 = 2;   x = -0.1 -> -1 -> -2;  x = 5 -> 2
    let src = "module t {
  input %x: f32[3]
  const @s: f32[1] = [2.0]
  const @z: f32[1] = [0.0]
  %y: f32[3] = fake_quant(%x, @s, @z) {bits = 1}
  output %y
}";
    let y = run_src(src, &[Tensor::f32([3], vec![0.0, -0.1, 5.0])]);
    assert_eq!(floats(&y[0]), [2.0, -2.0, 2.0]);
}

#[test]
fn trunc_v1_and_v2() {
    // v1, scale 1, zp 0, 8 -> 6 bits: 13 / 4 = 3.25 -> floor 3; -13 / 4 = -3.25 -> -4;
    // 10 / 4 = 2.5 -> floor 2. No clamp: 1000 / 4 = 250.
    let src = "module t {
  input %x: f32[4]
  const @s: f32[] = [1.0]
  const @z: f32[] = [0.0]
  %y: f32[4] = trunc(%x, @s, @z) {in_bits = 8, out_bits = 6}
  output %y
}";
    let y = run_src(src, &[Tensor::f32([4], vec![13.0, -13.0, 10.0, 1000.0])]);
    assert_eq!(floats(&y[0]), [3.0, -4.0, 2.0, 250.0]);
    // v2, scale 0.5, out_scale 2: t = 2^round(log2(2 / 0.5)) = 4; out_bits 4 signed,
    // grid [-8, 7]:
    //   x = 6.5:  6.5 / 0.5 = 13 -> 13 / 4 = 3.25 -> floor 3 -> 3 * 2 = 6
    //   x = 100:  200 / 4 = 50 -> clamp 7 -> 14
    //   x = -2.6: -5.2 -> round -5 -> -1.25 -> floor -2 -> -4
    let src = "module t {
  input %x: f32[3]
  const @s: f32[] = [0.5]
  const @z: f32[] = [0.0]
  const @os: f32[] = [2.0]
  %y: f32[3] = trunc(%x, @s, @z, @os) {in_bits = 8, out_bits = 4}
  output %y
}";
    let y = run_src(src, &[Tensor::f32([3], vec![6.5, 100.0, -2.6])]);
    assert_eq!(floats(&y[0]), [6.0, 14.0, -4.0]);
}

#[test]
fn cast_rounds_saturates_and_wraps() {
    // f32 -> i8, rounding down (toward zero), saturating; NaN -> 0.
    let y = unary_node(
        "f32[5]",
        "cast",
        "{}",
        "i8[5]",
        Tensor::f32([5], vec![2.7, -2.7, 300.0, -300.0, f32::NAN]),
    );
    assert_eq!(ints(&y), [2, -2, 127, -128, 0]);
    // Codes wrap: 200 as i8 = 200 - 256 = -56; -1 as u4 = 15.
    let y = unary_node("i32[1]", "cast", "", "i8[1]", Tensor::int([1], vec![200]));
    assert_eq!(ints(&y), [-56]);
    let y = unary_node("i8[1]", "cast", "", "u4[1]", Tensor::int([1], vec![-1]));
    assert_eq!(ints(&y), [15]);
    // Codes to f32: rounded to the nearest f32 (2^24 + 1 -> 2^24).
    let y = unary_node(
        "i32[1]",
        "cast",
        "",
        "f32[1]",
        Tensor::int([1], vec![16777217]),
    );
    assert_eq!(floats(&y), [16777216.0]);
}

#[test]
fn binarize_uses_the_zero_point() {
    // q >= zero point (3) gives +1: [2, 3, 4] -> [-1, 1, 1]
    let y = unary_node(
        "q<u8, 0.1:3>[3]",
        "binarize",
        "",
        "b1[3]",
        Tensor::int([3], vec![2, 3, 4]),
    );
    assert_eq!(ints(&y), [-1, 1, 1]);
    let y = unary_node(
        "f32[4]",
        "binarize",
        "",
        "b1[4]",
        Tensor::f32([4], vec![0.0, -0.0, -1e-30, f32::NAN]),
    );
    assert_eq!(ints(&y), [1, 1, -1, -1]);
}

#[test]
fn avg_pool_ceil_mode_divisor() {
    // x = [1, 2, 3], kernel 2, stride 2, ceil_mode: windows [1, 2] and [3, past the end].
    // The position past the end never counts, even with count_include_pad: 1.5 and 3.
    // With pads [0, 1, 0, 1] (left/right 1) and count_include_pad: windows start at -1:
    // [pad, 1] -> 1/2 = 0.5, [2, 3] -> 2.5; without ceil_mode that is all (ow = 2).
    for include in [false, true] {
        let y = unary_node(
            "f32[1,1,1,3]",
            "avg_pool",
            &format!(
                "{{kernel = [1, 2], strides = [1, 2], ceil_mode = true, count_include_pad = {include}}}"
            ),
            "f32[1,1,1,2]",
            Tensor::f32([1, 1, 1, 3], vec![1.0, 2.0, 3.0]),
        );
        assert_eq!(floats(&y), [1.5, 3.0]);
    }
    let y = unary_node(
        "f32[1,1,1,3]",
        "avg_pool",
        "{kernel = [1, 2], strides = [1, 2], pads = [0, 1, 0, 1], count_include_pad = true}",
        "f32[1,1,1,2]",
        Tensor::f32([1, 1, 1, 3], vec![1.0, 2.0, 3.0]),
    );
    assert_eq!(floats(&y), [0.5, 2.5]);
}

#[test]
fn max_pool_on_codes() {
    // Codes compare as integers; padding is ignored (the -128s stay the maximum).
    let y = unary_node(
        "q<i8, 0.1:0>[1,1,2,2]",
        "max_pool",
        "{kernel = [2, 2], pads = [1, 1, 0, 0]}",
        "q<i8, 0.1:0>[1,1,2,2]",
        Tensor::int([1, 1, 2, 2], vec![-128, -5, 7, -128]),
    );
    assert_eq!(ints(&y), [-128, -5, 7, 7]);
}

#[test]
fn pad_crop_then_fill() {
    // Axis of [1, 2, 3, 4]: crop 1 at the front -> [2, 3, 4], then reflect 2 at the back:
    // [2, 3, 4, 3, 2].
    let y = unary_node(
        "i8[4]",
        "pad",
        "{pads = [-1, 2], mode = reflect}",
        "i8[5]",
        Tensor::int([4], vec![1, 2, 3, 4]),
    );
    assert_eq!(ints(&y), [2, 3, 4, 3, 2]);
    // wrap: [3, 4 | 1, 2, 3, 4 | 1]
    let y = unary_node(
        "f32[4]",
        "pad",
        "{pads = [2, 1], mode = wrap}",
        "f32[7]",
        Tensor::f32([4], vec![1.0, 2.0, 3.0, 4.0]),
    );
    assert_eq!(floats(&y), [3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0]);
    // A constant fill must be a code of an integer type.
    let e = run_err(
        "module t {\n input %x: b1[2]\n %y: b1[3] = pad(%x) {pads = [1, 0]}\n output %y\n}",
        &[Tensor::int([2], vec![1, -1])],
    );
    assert!(e.message.contains("fill value 0"), "{e}");
}

#[test]
fn slice_negative_steps_and_clamping() {
    // [0..6): start -1 (= 5), end -100 (clamped to -1), step -2: 5, 3, 1.
    let y = unary_node(
        "i32[6]",
        "slice",
        "{starts = [-1], ends = [-100], axes = [0], steps = [-2]}",
        "i32[3]",
        Tensor::int([6], vec![0, 1, 2, 3, 4, 5]),
    );
    assert_eq!(ints(&y), [5, 3, 1]);
}

#[test]
fn errors_name_the_node_and_inputs() {
    let src =
        "module t {\n input %x: f32[2,3]\n %v3: f32[7] = reshape(%x) {shape = [7]}\n output %v3\n}";
    let e = run_err(src, &[Tensor::f32([2, 3], vec![0.0; 6])]);
    assert_eq!(e.node, Some(NodeId(0)));
    assert!(e.to_string().starts_with("%v3 = reshape: "), "{e}");
    let e = run_err(src, &[Tensor::f32([3, 2], vec![0.0; 6])]);
    assert_eq!(e.node, None);
    assert!(e.to_string().contains("input %x"), "{e}");
    let e = run_err(src, &[]);
    assert!(e.to_string().contains("takes 1 inputs, 0 given"), "{e}");
    let e = run_err(
        "module t {\n input %x: u4[2]\n output %x\n}",
        &[Tensor::int([2], vec![3, 16])],
    );
    assert!(e.to_string().contains("code 16"), "{e}");
    let e = run_err(
        "module t {\n input %x: f32[2]\n output %x\n}",
        &[Tensor::int([2], vec![3, 16])],
    );
    assert!(e.to_string().contains("integer data"), "{e}");
}

#[test]
fn run_with_observes_every_node_and_frees_nothing_needed() {
    let src = "module t {
  input %x: f32[2]
  const @c: f32[2] = [1.0, 2.0]
  %a: f32[2] = add(%x, @c)
  %b: f32[2] = mul(%a, %a)
  %r: f32[2] = relu(%b)
  output %a, %r, @c
}";
    let m = parse_module(src).unwrap();
    let mut seen = Vec::new();
    let out = run_with(&m, &[Tensor::f32([2], vec![1.0, -4.0])], &mut |n, t| {
        seen.push((n, floats(t)))
    })
    .unwrap();
    assert_eq!(
        seen,
        [
            (NodeId(0), vec![2.0, -2.0]),
            (NodeId(1), vec![4.0, 4.0]),
            (NodeId(2), vec![4.0, 4.0])
        ]
    );
    assert_eq!(out.len(), 3);
    assert_eq!(floats(&out[0]), [2.0, -2.0]);
    assert_eq!(floats(&out[2]), [1.0, 2.0]);
    assert_eq!(const_tensor(&m, m.outputs[2]), Some(out[2].clone()));
    assert_eq!(const_tensor(&m, m.outputs[0]), None);
}

#[test]
fn tensor_constructors() {
    assert!(Tensor::new([2, 2], TensorData::F32(vec![0.0; 3])).is_err());
    let t = Tensor::int([2, 1], vec![4, 5]);
    assert_eq!((t.numel(), t.rank(), t.is_float()), (2, 2, false));
    assert_eq!(t.as_int(), Some(&[4i64, 5][..]));
    assert_eq!(t.as_f32(), None);
    assert_eq!(Tensor::scalar_f32(1.5).shape, Vec::<usize>::new());
}
