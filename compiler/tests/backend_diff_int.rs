//! Differential tests of the integer path: the JIT must equal the interpreter bit for
//! bit (quantize/dequantize through f32 within the float tolerance where the result is
//! f32, which for dequantize is exact too).

mod backend_common;

use backend_common::{B, Rng, attrs, cfg, check, check_baseline, codes, ints, kernel_of};
use proptest::prelude::*;
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType, Rounding};

/// The u8 x i8 kernels (128-bit `pmaddubsw` and the wide tiles), kept out where a test
/// pins the `pmaddwd` kernel.
const U8_FAMILY: &[qcc::backend::costs::Strategy] = &[
    qcc::backend::costs::Strategy::Maddubs,
    qcc::backend::costs::Strategy::DotVnni,
    qcc::backend::costs::Strategy::DotAvx2,
    qcc::backend::costs::Strategy::DotAvx2Wide,
];
fn qtype(bits: u8, signed: bool, params: QuantParams) -> ElemType {
    ElemType::Quant(QuantType {
        storage: IntType::new(bits, signed),
        narrow: false,
        pow2: false,
        params,
    })
}

fn zp(r: &mut Rng, st: IntType) -> i32 {
    r.i(st.min_code().max(-20), st.max_code().min(20)) as i32
}

/// Per-tensor or per-axis params for a tensor of `shape`.
fn params(r: &mut Rng, st: IntType, shape: &[usize], per_axis: bool) -> QuantParams {
    if per_axis && !shape.is_empty() {
        let axis = r.i(0, shape.len() as i64 - 1) as usize;
        let c = shape[axis];
        QuantParams::PerAxis {
            axis,
            scales: (0..c).map(|_| r.f(0.01, 0.5)).collect(),
            zero_points: (0..c).map(|_| zp(r, st)).collect(),
        }
    } else {
        QuantParams::PerTensor {
            scale: r.f(0.01, 0.5),
            zero_point: zp(r, st),
        }
    }
}

const STORAGES: [(u8, bool); 6] = [
    (8, true),
    (8, false),
    (4, true),
    (4, false),
    (16, true),
    (2, false),
];

fn shape(r: &mut Rng, rank: usize, max: i64) -> Vec<usize> {
    (0..rank).map(|_| r.i(1, max) as usize).collect()
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn quantize(seed: u64, st in 0usize..6, per_axis: bool, rnd in 0usize..7, rank in 0usize..4) {
        let mut r = Rng(seed | 1);
        let (bits, signed) = STORAGES[st];
        let s = shape(&mut r, rank, 11);
        let n: usize = s.iter().product();
        let p = params(&mut r, IntType::new(bits, signed), &s, per_axis);
        let e = qtype(bits, signed, p.clone());
        // Values around the grid, with exact ties (x = (k + 0.5) * scale) and NaN.
        let mut data = r.fs(n, -20.0, 20.0);
        let sc = p.scales()[0];
        for (i, v) in data.iter_mut().enumerate() {
            match i % 5 { 1 => *v = (r.i(-40, 40) as f32 + 0.5) * sc, 2 => *v = r.i(-40, 40) as f32 * sc, _ => {} }
        }
        if n > 3 { data[3] = f32::NAN; }
        let mut b = B::new();
        let x = b.input_f32(&s, data);
        let q = b.node(Op::Quantize, &[x], attrs(&[("rounding", Attr::Enum(Rounding::ALL[rnd].name().into()))]), e);
        b.output(q);
        check(&b).map_err(TestCaseError::fail)?;
    }

    /// Runs of 16 and more elements, which AVX-512 quantizes on zmm (`quantzmm.rs`,
    /// the four rounding modes `vrndscaleps` has; the tail of each run and the other
    /// modes stay on the 128-bit kernel): per tensor or per row, zero points anywhere
    /// in the range, scales from tiny (quotients far beyond the range) to large, NaN,
    /// infinities, signed zeros and exact ties.
    #[test]
    fn quantize_long_runs(seed: u64, st in 0usize..6, per_row: bool, rnd in 0usize..7) {
        let mut r = Rng(seed | 1);
        let (bits, signed) = STORAGES[st];
        let it = IntType::new(bits, signed);
        let (rows, inner) = (r.i(1, 4) as usize, r.i(16, 80) as usize);
        let n = rows * inner;
        let mut scale = || match r.i(0, 3) {
            0 => r.f(1e-6, 1e-4),
            1 => r.f(10.0, 1000.0),
            _ => r.f(0.01, 0.5),
        };
        let sc: Vec<f32> = (0..rows).map(|_| scale()).collect();
        let zps: Vec<i32> = (0..rows).map(|_| r.i(it.min_code(), it.max_code()) as i32).collect();
        let p = if per_row {
            QuantParams::PerAxis { axis: 0, scales: sc.clone(), zero_points: zps }
        } else {
            QuantParams::PerTensor { scale: sc[0], zero_point: zps[0] }
        };
        let mut data = r.fs(n, -300.0, 300.0);
        for (i, v) in data.iter_mut().enumerate() {
            let s = if per_row { sc[i / inner] } else { sc[0] };
            *v = match r.i(0, 9) {
                0 => (r.i(-300, 300) as f32 + 0.5) * s,
                1 => r.i(-300, 300) as f32 * s,
                2 => f32::NAN,
                3 => [f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 3e38, -3e38][r.i(0, 5) as usize],
                _ => *v * s,
            };
        }
        let rounding = Rounding::ALL[rnd];
        let mut b = B::new();
        let x = b.input_f32(&[rows, inner], data);
        let q = b.node(Op::Quantize, &[x], attrs(&[("rounding", Attr::Enum(rounding.name().into()))]), qtype(bits, signed, p));
        b.output(q);
        check(&b).map_err(TestCaseError::fail)?;
        let zmm_mode = matches!(rounding, Rounding::HalfEven | Rounding::Floor | Rounding::Ceil | Rounding::Down);
        if qcc::backend::Tier::host().level >= 4 && zmm_mode {
            let host = target_lexicon::Triple::host().to_string();
            let t = qcc::backend::Target::new(&host, "x86-64-v4").unwrap();
            let asm = qcc::backend::emit_asm(&b.m, "t", &t).unwrap();
            prop_assert!(asm.contains("quantize_zmm"), "no zmm quantize");
        }
    }

    #[test]
    fn dequantize(seed: u64, st in 0usize..6, per_axis: bool, rank in 0usize..4) {
        let mut r = Rng(seed | 1);
        let (bits, signed) = STORAGES[st];
        let s = shape(&mut r, rank, 11);
        let n: usize = s.iter().product();
        let e = qtype(bits, signed, params(&mut r, IntType::new(bits, signed), &s, per_axis));
        let mut b = B::new();
        let d = codes(&mut r, &e, n);
        let x = b.input_int(e, &s, d);
        let y = b.f(Op::Dequantize, &[x], attrs(&[]));
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn requantize(seed: u64, st in 0usize..6, per_ch: bool, rnd in 0usize..7, clamp: bool, quant_in: bool) {
        let mut r = Rng(seed | 1);
        let (bits, signed) = STORAGES[st];
        let s = shape(&mut r, 3, 7);
        let n: usize = s.iter().product();
        let in_e = if quant_in { qtype(8, false, QuantParams::PerTensor { scale: 0.1, zero_point: 7 }) } else { ElemType::I32 };
        let mut b = B::new();
        let d = if quant_in { codes(&mut r, &in_e, n) } else {
            (0..n).map(|i| match i % 3 { 0 => r.i(i32::MIN as i64, i32::MAX as i64), 1 => r.i(-5000, 5000), _ => r.i(-64, 64) }).collect()
        };
        let x = b.input_int(in_e, &s, d);
        let axis = 1usize;
        let c = if per_ch { s[axis] } else { 1 };
        let mult: Vec<i64> = (0..c).map(|_| if r.i(0, 3) == 0 { 1 } else { r.i(-(1 << 31), (1 << 31) - 1) }).collect();
        let shift: Vec<i64> = (0..c).map(|_| r.i(-4, 45)).collect();
        let out_st = IntType::new(bits, signed);
        let out_e = qtype(bits, signed, params(&mut r, out_st, &s, false));
        let mut a = vec![
            ("multiplier", ints(&mult)), ("shift", ints(&shift)), ("axis", Attr::Int(axis as i64)),
            ("rounding", Attr::Enum(Rounding::ALL[rnd].name().into())),
        ];
        if clamp { a.push(("min", Attr::Int(out_st.min_code() + 1))); a.push(("max", Attr::Int(out_st.max_code() - 1))); }
        let y = b.node(Op::Requantize, &[x], attrs(&a), out_e);
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
    }

    /// Shift-only requantizes on channel runs long enough for the vector forms (16 byte
    /// codes in i16 lanes, 8 values in i32 lanes, with their scalar tails): byte, 2-byte
    /// and i32 inputs with per-channel zero points, right and left shifts at and past the
    /// fast forms' limits, values at the i32 limits, byte and i32 results, clamps; on the
    /// host ISA and the baseline.
    #[test]
    fn requantize_shift_runs(seed: u64, input in 0usize..4, out_i32: bool, per_ch: bool, rnd in 0usize..7, clamp: bool) {
        let mut r = Rng(seed | 1);
        let c = r.i(1, 4) as usize;
        let s = vec![1, c, r.i(1, 6) as usize, r.i(1, 13) as usize];
        let n: usize = s.iter().product();
        let st_in = [IntType::U8, IntType::I8, IntType::new(16, true), IntType::I32][input];
        let zps = |r: &mut Rng, st: IntType| -> QuantParams {
            let z: Vec<i32> = (0..c).map(|_| r.i(st.min_code().max(-200), st.max_code().min(200)) as i32).collect();
            if per_ch {
                QuantParams::PerAxis { axis: 1, scales: vec![0.1; c], zero_points: z }
            } else {
                QuantParams::PerTensor { scale: 0.1, zero_point: z[0] }
            }
        };
        let in_e = if input == 3 { ElemType::I32 } else { qtype(st_in.bits, st_in.signed, zps(&mut r, st_in)) };
        let d = if input == 3 {
            (0..n).map(|i| match i % 4 {
                0 => r.i(i32::MIN as i64, i32::MAX as i64),
                1 => [i32::MIN as i64, i32::MAX as i64, -(1 << 30) - 1, 1 << 30][r.i(0, 3) as usize],
                _ => r.i(-(1 << 24), 1 << 24),
            }).collect()
        } else {
            codes(&mut r, &in_e, n)
        };
        let mut b = B::new();
        let x = b.input_int(in_e, &s, d);
        let k = if c > 1 && per_ch { c } else { 1 };
        let shift: Vec<i64> = (0..k).map(|_| match input {
            3 => r.i(0, 26),
            2 => r.i(-16, 16),
            _ => if out_i32 { r.i(-24, 4) } else { r.i(-8, 16) },
        }).collect();
        let mult: Vec<i64> = (0..k).map(|_| if r.i(0, 5) == 0 { 3 } else { 1 }).collect();
        let out_st = if out_i32 && input != 3 { IntType::I32 } else { [IntType::U8, IntType::I8, IntType::new(4, false)][r.i(0, 2) as usize] };
        let out_e = if out_st == IntType::I32 { ElemType::I32 } else { qtype(out_st.bits, out_st.signed, zps(&mut r, out_st)) };
        let mut a = vec![
            ("multiplier", ints(&mult)), ("shift", ints(&shift)), ("axis", Attr::Int(1)),
            ("rounding", Attr::Enum(Rounding::ALL[rnd].name().into())),
        ];
        if clamp && out_st != IntType::I32 {
            a.push(("min", Attr::Int(out_st.min_code() + 1)));
            a.push(("max", Attr::Int(out_st.max_code() - 2)));
        }
        let y = b.node(Op::Requantize, &[x], attrs(&a), out_e);
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
        check_baseline(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn conv2d_int(seed: u64, xs in 0usize..4, with_bias: bool, requant in 0usize..3, per_axis_w: bool, depthwise: bool) {
        let mut r = Rng(seed | 1);
        let group = if depthwise { r.i(1, 5) as usize } else { r.i(1, 2) as usize };
        let cg = if depthwise { 1 } else { r.i(1, 4) as usize };
        let c = ConvCase {
            xs, n: r.i(1, 2) as usize, cg, mg: r.i(1, 6) as usize, group,
            hw: (r.i(1, 10) as usize, r.i(1, 13) as usize),
            k: (r.i(1, 3) as usize, r.i(1, 3) as usize),
            s: (r.i(1, 2) as usize, r.i(1, 2) as usize),
            d: (r.i(1, 2) as usize, r.i(1, 2) as usize),
            pads: [r.i(0, 2), r.i(0, 2), r.i(0, 2), r.i(0, 2)],
            zx: None, per_axis_w, with_bias, requant,
        };
        prop_assume!(c.fits());
        check(&c.build(&mut r)).map_err(TestCaseError::fail)?;
    }

    /// The im2col's vector paths: rows wide enough for runs of chunks (loops), narrow
    /// ones (4-pixel chunks, scalar), strides 1-3, dilation, padding wider than the
    /// window, odd and even K, u8/i8 codes with and without zero points; also on the
    /// SSE2 baseline (no byte shuffles: masked loads or scalar chunks instead).
    #[test]
    fn conv2d_int_im2col(seed: u64, xs in 0usize..4, depthwise: bool, zx0: bool, requant in 0usize..2) {
        let mut r = Rng(seed | 1);
        let group = if depthwise { r.i(2, 3) as usize } else { 1 };
        let c = ConvCase {
            xs, n: 1, cg: if depthwise { 1 } else { r.i(1, 3) as usize }, mg: r.i(1, 2) as usize, group,
            hw: (r.i(1, 6) as usize, if r.i(0, 1) == 0 { r.i(1, 20) } else { r.i(20, 170) } as usize),
            k: (r.i(1, 4) as usize, r.i(1, 4) as usize),
            s: (r.i(1, 2) as usize, r.i(1, 3) as usize),
            d: (r.i(1, 2) as usize, r.i(1, 2) as usize),
            pads: [r.i(0, 3), r.i(0, 3), r.i(0, 3), r.i(0, 3)],
            zx: zx0.then_some(0), per_axis_w: false, with_bias: false, requant,
        };
        prop_assume!(c.fits());
        let b = c.build(&mut r);
        check(&b).map_err(TestCaseError::fail)?;
        check_baseline(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn matmul_int(seed: u64, bconst: bool, with_bias: bool, requant in 0usize..3, batched: bool, xs in 0usize..4) {
        let mut r = Rng(seed | 1);
        let (m, n, k) = (r.i(1, 9) as usize, r.i(1, 21) as usize, r.i(1, 40) as usize);
        let (ab, asg) = STORAGES[xs];
        let a_e = qtype(ab, asg, QuantParams::PerTensor { scale: 0.1, zero_point: zp(&mut r, IntType::new(ab, asg)) });
        let bs = if batched { vec![2, k, n] } else { vec![k, n] };
        let b_st = IntType::new(8, true);
        let b_e = qtype(8, true, QuantParams::PerAxis { axis: bs.len() - 1, scales: vec![0.1; n], zero_points: (0..n).map(|_| zp(&mut r, b_st)).collect() });
        let mut b = B::new();
        let asz = if batched { vec![2, m, k] } else { vec![m, k] };
        let ad = codes(&mut r, &a_e, asz.iter().product());
        let x = b.input_int(a_e, &asz, ad);
        let bd = codes(&mut r, &b_e, bs.iter().product());
        let y = if bconst { b.const_int(b_e, &bs, bd) } else { b.input_int(b_e, &bs, bd) };
        let mut ops = vec![x, y];
        if with_bias { let d = r.is(n, -3000, 3000); ops.push(b.const_int(ElemType::I32, &[n], d)); }
        let mut z = b.node(Op::MatMulInt, &ops, attrs(&[]), ElemType::I32);
        if requant > 0 {
            let cnt = if requant == 2 { n } else { 1 };
            let mult: Vec<i64> = (0..cnt).map(|_| r.i(1 << 20, 1 << 30)).collect();
            let shift: Vec<i64> = (0..cnt).map(|_| r.i(26, 36)).collect();
            let out_e = qtype(8, true, QuantParams::PerTensor { scale: 0.05, zero_point: -2 });
            let axis = if batched { 2 } else { 1 };
            z = b.node(Op::Requantize, &[z], attrs(&[("multiplier", ints(&mult)), ("shift", ints(&shift)), ("axis", Attr::Int(axis))]), out_e);
        }
        b.output(z);
        check(&b).map_err(TestCaseError::fail)?;
    }
}

/// A `conv2d_int` (x codes of storage `STORAGES[xs]`, i8 weights) with optional bias
/// and fused requantize, on random codes.
struct ConvCase {
    xs: usize,
    n: usize,
    cg: usize,
    mg: usize,
    group: usize,
    hw: (usize, usize),
    k: (usize, usize),
    s: (usize, usize),
    d: (usize, usize),
    pads: [i64; 4],
    /// The x zero point (random when None).
    zx: Option<i32>,
    per_axis_w: bool,
    with_bias: bool,
    /// 0: none, 1: per tensor, 2: per channel.
    requant: usize,
}

impl ConvCase {
    /// Whether the dilated window fits the padded input.
    fn fits(&self) -> bool {
        let f = |len: usize, k: usize, d: usize, p0: i64, p1: i64| {
            len as i64 + p0 + p1 >= (d * (k - 1) + 1) as i64
        };
        f(self.hw.0, self.k.0, self.d.0, self.pads[0], self.pads[2])
            && f(self.hw.1, self.k.1, self.d.1, self.pads[1], self.pads[3])
    }

    fn build(&self, r: &mut Rng) -> B {
        let (xb, xsg) = STORAGES[self.xs];
        let (c, m) = (self.cg * self.group, self.mg * self.group);
        let (h, w) = self.hw;
        let (kh, kw) = self.k;
        let xst = IntType::new(xb, xsg);
        let x_p = match self.zx {
            Some(z) => QuantParams::PerTensor {
                scale: 0.1,
                zero_point: z,
            },
            None => params(r, xst, &[], false),
        };
        let x_e = qtype(xb, xsg, x_p);
        let w_st = IntType::new(8, true);
        let w_p = if self.per_axis_w {
            QuantParams::PerAxis {
                axis: 0,
                scales: vec![0.1; m],
                zero_points: (0..m).map(|_| zp(r, w_st)).collect(),
            }
        } else {
            QuantParams::PerTensor {
                scale: 0.1,
                zero_point: zp(r, w_st),
            }
        };
        let w_e = qtype(8, true, w_p);
        let mut b = B::new();
        let xd = codes(r, &x_e, self.n * c * h * w);
        let x = b.input_int(x_e, &[self.n, c, h, w], xd);
        let wd = codes(r, &w_e, m * self.cg * kh * kw);
        let wt = b.const_int(w_e, &[m, self.cg, kh, kw], wd);
        let mut ops = vec![x, wt];
        if self.with_bias {
            let bd = r.is(m, -3000, 3000);
            ops.push(b.const_int(ElemType::I32, &[m], bd));
        }
        let a = attrs(&[
            ("strides", ints(&[self.s.0 as i64, self.s.1 as i64])),
            ("pads", ints(&self.pads)),
            ("dilations", ints(&[self.d.0 as i64, self.d.1 as i64])),
            ("group", Attr::Int(self.group as i64)),
        ]);
        let mut y = b.node(Op::Conv2dInt, &ops, a, ElemType::I32);
        if self.requant > 0 {
            let cnt = if self.requant == 2 { m } else { 1 };
            let mult: Vec<i64> = (0..cnt).map(|_| r.i(1 << 20, 1 << 30)).collect();
            let shift: Vec<i64> = (0..cnt).map(|_| r.i(28, 40)).collect();
            let out_e = qtype(
                8,
                false,
                QuantParams::PerTensor {
                    scale: 0.05,
                    zero_point: 3,
                },
            );
            let ra = attrs(&[
                ("multiplier", ints(&mult)),
                ("shift", ints(&shift)),
                ("min", Attr::Int(3)),
            ]);
            y = b.node(Op::Requantize, &[y], ra, out_e);
        }
        b.output(y);
        b
    }
}

/// The ResNet-20 convolutions (3x3 stride 1 and 2 with padding 1, 1x1 stride 2) on
/// 32/16/8-wide inputs, u8 codes with zero point 0 or not and i8 codes, even and odd K.
#[test]
fn conv2d_int_resnet_shapes() {
    let mut r = Rng(11);
    for (hw, k, s, p) in [
        (32, 3, 1, 1),
        (16, 3, 1, 1),
        (8, 3, 1, 1),
        (32, 3, 2, 1),
        (16, 3, 2, 1),
        (32, 1, 2, 0),
        (16, 1, 2, 0),
    ] {
        for (xs, zx) in [(1, Some(0)), (1, None), (0, None)] {
            for cg in [2, 3] {
                let c = ConvCase {
                    xs,
                    n: 1,
                    cg,
                    mg: 4,
                    group: 1,
                    hw: (hw, hw),
                    k: (k, k),
                    s: (s, s),
                    d: (1, 1),
                    pads: [p; 4],
                    zx,
                    per_axis_w: true,
                    with_bias: true,
                    requant: 2,
                };
                let b = c.build(&mut r);
                // The int8 pmaddwd kernel (pmaddubsw and the wide tiles would take the
                // layers: backend_diff_maddubs.rs and backend_diff_wide.rs test those).
                let (res, kernel) =
                    qcc::backend::costs::without(U8_FAMILY, || (check(&b), kernel_of(&b)));
                res.unwrap_or_else(|e| panic!("{hw} {k}x{k}/{s} xs {xs} cg {cg}: {e}"));
                assert_eq!(
                    kernel,
                    format!(
                        "conv2d_int.im2col+pmaddwd4x8.{}+requantize",
                        if xs == 1 { "u8" } else { "i8" }
                    )
                );
            }
        }
    }
}

/// A float -> int8 -> float pipeline as the QDQ models have it: quantize, integer conv
/// with fused requantize, dequantize, all through one object boundary of f32.
#[test]
fn qdq_pipeline_runs_in_integer_kernels() {
    let mut r = Rng(7);
    let mut b = B::new();
    let x = b.input_f32(&[1, 3, 8, 8], r.fs(192, -1.0, 1.0));
    let xq = b.node(
        Op::Quantize,
        &[x],
        attrs(&[]),
        qtype(
            8,
            false,
            QuantParams::PerTensor {
                scale: 1.0 / 128.0,
                zero_point: 128,
            },
        ),
    );
    let we = qtype(
        8,
        true,
        QuantParams::PerTensor {
            scale: 0.02,
            zero_point: 0,
        },
    );
    let wd = codes(&mut r, &we, 4 * 3 * 9);
    let w = b.const_int(we, &[4, 3, 3, 3], wd);
    let acc = b.node(
        Op::Conv2dInt,
        &[xq, w],
        attrs(&[("pads", ints(&[1, 1, 1, 1]))]),
        ElemType::I32,
    );
    let y = b.node(
        Op::Requantize,
        &[acc],
        attrs(&[("multiplier", ints(&[1 << 30])), ("shift", ints(&[36]))]),
        qtype(
            8,
            false,
            QuantParams::PerTensor {
                scale: 0.05,
                zero_point: 0,
            },
        ),
    );
    let z = b.f(Op::Dequantize, &[y], attrs(&[]));
    b.output(z);
    check(&b).unwrap();
    let jit =
        qcc::backend::costs::without(U8_FAMILY, || qcc::backend::JitModel::new(&b.m)).unwrap();
    let kernels: Vec<&str> = jit
        .report()
        .layers
        .iter()
        .map(|l| l.kernel.as_str())
        .collect();
    assert_eq!(
        kernels,
        [
            "quantize.f32x4->u8",
            "conv2d_int.im2col+pmaddwd4x8.u8+requantize",
            "dequantize.u8->f32x4"
        ]
    );
    assert!(jit.report().layers[1].integer);
}

/// Values next to and at rounding ties, in every rounding mode, on both the f32x4 lanes
/// and the scalar tail: `y - floor(y)` rounds to 1/2 in f32 for y just above -1/2, which
/// once made `half_up` give -1 for -0.49999997.
#[test]
fn quantize_near_ties() {
    let below_half = f32::from_bits(0.5f32.to_bits() - 1);
    let mut data = Vec::new();
    for k in [-3.0f32, -2.0, -1.0, 0.0, 1.0, 2.0] {
        for d in [0.5, below_half, -below_half, -0.5] {
            data.push(k + d);
        }
    }
    data.extend([-0.0, 0.0, 1e-30, -1e-30]);
    let n = data.len();
    for rnd in Rounding::ALL {
        let mut b = B::new();
        let x = b.input_f32(&[n], data.clone());
        let e = qtype(
            8,
            true,
            QuantParams::PerTensor {
                scale: 1.0,
                zero_point: 0,
            },
        );
        let q = b.node(
            Op::Quantize,
            &[x],
            attrs(&[("rounding", Attr::Enum(rnd.name().into()))]),
            e,
        );
        b.output(q);
        check(&b).unwrap_or_else(|e| panic!("{}: {e}", rnd.name()));
    }
}
