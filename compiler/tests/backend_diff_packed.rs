//! Differential tests of the int8-style kernels with bit-packed low-bit weights
//! (`kernels::packw`): constant weights of 1..7 bits, signed or not, narrow or not, with
//! per-tensor or per-channel zero points, are stored packed and widened at run time; the
//! JIT must equal the interpreter bit for bit.

mod backend_common;

use backend_common::{B, Rng, attrs, codes, ints};
use proptest::prelude::*;
use qcc::backend::costs::{self, Strategy};
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType};

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn qtype(st: IntType, narrow: bool, params: QuantParams) -> ElemType {
    ElemType::Quant(QuantType {
        storage: st,
        narrow,
        pow2: false,
        params,
    })
}

/// A zero point inside the storage range.
fn zp(r: &mut Rng, st: IntType) -> i32 {
    r.i(st.min_code(), st.max_code()) as i32
}

/// Weight zero points: all zero (symmetric), one shared value, or one per channel.
fn w_params(r: &mut Rng, st: IntType, zmode: usize, axis: usize, c: usize) -> QuantParams {
    match zmode {
        0 => QuantParams::PerAxis {
            axis,
            scales: vec![0.1; c],
            zero_points: vec![0; c],
        },
        1 => QuantParams::PerTensor {
            scale: 0.1,
            zero_point: zp(r, st),
        },
        _ => QuantParams::PerAxis {
            axis,
            scales: vec![0.1; c],
            zero_points: (0..c).map(|_| zp(r, st)).collect(),
        },
    }
}

/// Activation storages: (bits, signed).
const XS: [(u8, bool); 4] = [(8, false), (8, true), (4, false), (2, false)];

/// Exact with the cost table's choice (on x86_64 mostly the `pmaddubsw` kernel, see
/// `backend_diff_maddubs.rs`) and with the packed `pmaddwd` kernel these tests are about.
fn check(b: &B) -> Result<(), String> {
    backend_common::check(b)?;
    costs::without(
        &[
            Strategy::Maddubs,
            Strategy::DotVnni,
            Strategy::DotAvx2,
            Strategy::DotAvx2Wide,
        ],
        || backend_common::check(b),
    )
}

/// The kernels of the `pmaddwd` path (the `pmaddubsw` kernel left out).
fn kernel_names(b: &B) -> Vec<String> {
    let jit = costs::without(
        &[
            Strategy::Maddubs,
            Strategy::DotVnni,
            Strategy::DotAvx2,
            Strategy::DotAvx2Wide,
        ],
        || qcc::backend::JitModel::new(&b.m).unwrap(),
    );
    jit.report()
        .layers
        .iter()
        .map(|l| l.kernel.clone())
        .collect()
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn conv2d_int_packed(
        seed: u64, wbits in 1u8..8, wsigned: bool, narrow: bool, zmode in 0usize..3,
        xs in 0usize..4, with_bias: bool, requant in 0usize..3, depthwise: bool,
    ) {
        let mut r = Rng(seed | 1);
        let w_st = IntType::new(wbits, wsigned);
        // A narrow 1-bit storage holds one code only; keep it wide.
        let narrow = narrow && wbits > 1;
        let (xb, xsg) = XS[xs];
        let n = r.i(1, 2) as usize;
        let group = if depthwise { r.i(1, 6) as usize } else { r.i(1, 3) as usize };
        let cg = if depthwise { 1 } else { r.i(1, 5) as usize };
        let mg = r.i(1, 7) as usize;
        let (c, m) = (cg * group, mg * group);
        let (kh, kw) = (r.i(1, 3) as usize, r.i(1, 3) as usize);
        let (sh, sw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let (dh, dw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let pads: Vec<i64> = (0..4).map(|_| r.i(0, 2)).collect();
        let (h, w) = (r.i(1, 10) as usize, r.i(1, 12) as usize);
        let fits = |len: usize, k: usize, d: usize, p0: i64, p1: i64| {
            len as i64 + p0 + p1 >= (d * (k - 1) + 1) as i64
        };
        prop_assume!(fits(h, kh, dh, pads[0], pads[2]) && fits(w, kw, dw, pads[1], pads[3]));
        let x_st = IntType::new(xb, xsg);
        let x_e = qtype(x_st, false, QuantParams::PerTensor { scale: 0.1, zero_point: zp(&mut r, x_st).clamp(-20, 20) });
        let w_e = qtype(w_st, narrow, w_params(&mut r, w_st, zmode, 0, m));
        let mut b = B::new();
        let xd = codes(&mut r, &x_e, n * c * h * w);
        let x = b.input_int(x_e, &[n, c, h, w], xd);
        let wd = codes(&mut r, &w_e, m * cg * kh * kw);
        let wt = b.const_int(w_e, &[m, cg, kh, kw], wd);
        let mut ops = vec![x, wt];
        if with_bias {
            let bd = r.is(m, -3000, 3000);
            ops.push(b.const_int(ElemType::I32, &[m], bd));
        }
        let a = attrs(&[
            ("strides", ints(&[sh as i64, sw as i64])), ("pads", ints(&pads)),
            ("dilations", ints(&[dh as i64, dw as i64])), ("group", Attr::Int(group as i64)),
        ]);
        let mut y = b.node(Op::Conv2dInt, &ops, a, ElemType::I32);
        if requant > 0 {
            let cnt = if requant == 2 { m } else { 1 };
            let mult: Vec<i64> = (0..cnt).map(|_| r.i(1 << 20, 1 << 30)).collect();
            let shift: Vec<i64> = (0..cnt).map(|_| r.i(24, 36)).collect();
            let out_e = qtype(IntType::new(8, false), false, QuantParams::PerTensor { scale: 0.05, zero_point: 3 });
            y = b.node(Op::Requantize, &[y], attrs(&[("multiplier", ints(&mult)), ("shift", ints(&shift))]), out_e);
        }
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn matmul_int_packed(
        seed: u64, wbits in 1u8..8, wsigned: bool, narrow: bool, zmode in 0usize..3,
        xs in 0usize..4, with_bias: bool, requant in 0usize..3, batch in 0usize..3,
    ) {
        // batch: 0 plain; 1 both operands batched (one B slab per batch); 2 only A
        // batched (B's one slab widened once and reused).
        let batched = batch > 0;
        let mut r = Rng(seed | 1);
        let b_st = IntType::new(wbits, wsigned);
        let narrow = narrow && wbits > 1;
        let (m, n, k) = (r.i(1, 9) as usize, r.i(1, 27) as usize, r.i(1, 45) as usize);
        let (ab, asg) = XS[xs];
        let a_st = IntType::new(ab, asg);
        let a_e = qtype(a_st, false, QuantParams::PerTensor { scale: 0.1, zero_point: zp(&mut r, a_st).clamp(-20, 20) });
        let bs = if batch == 1 { vec![2, k, n] } else { vec![k, n] };
        let b_e = qtype(b_st, narrow, w_params(&mut r, b_st, zmode, bs.len() - 1, n));
        let mut b = B::new();
        let asz = if batched { vec![2, m, k] } else { vec![m, k] };
        let ad = codes(&mut r, &a_e, asz.iter().product());
        let x = b.input_int(a_e, &asz, ad);
        let bd = codes(&mut r, &b_e, bs.iter().product());
        let y = b.const_int(b_e, &bs, bd);
        let mut ops = vec![x, y];
        if with_bias {
            let d = r.is(n, -3000, 3000);
            ops.push(b.const_int(ElemType::I32, &[n], d));
        }
        let mut z = b.node(Op::MatMulInt, &ops, attrs(&[]), ElemType::I32);
        if requant > 0 {
            let cnt = if requant == 2 { n } else { 1 };
            let mult: Vec<i64> = (0..cnt).map(|_| r.i(1 << 20, 1 << 30)).collect();
            let shift: Vec<i64> = (0..cnt).map(|_| r.i(24, 34)).collect();
            let out_e = qtype(IntType::new(8, true), false, QuantParams::PerTensor { scale: 0.05, zero_point: -2 });
            let axis = if batched { 2 } else { 1 };
            z = b.node(Op::Requantize, &[z], attrs(&[("multiplier", ints(&mult)), ("shift", ints(&shift)), ("axis", Attr::Int(axis))]), out_e);
        }
        b.output(z);
        check(&b).map_err(TestCaseError::fail)?;
    }
}

/// Low-bit constant weights select the packed variant; 8-bit weights keep the
/// pre-widened one.
#[test]
fn packed_variant_is_chosen_below_8_bits() {
    for (bits, want) in [(2u8, ".w2packed"), (5, ".w5packed"), (8, "")] {
        let mut r = Rng(11);
        let st = IntType::new(bits, true);
        let mut b = B::new();
        let x_e = qtype(
            IntType::new(8, false),
            false,
            QuantParams::PerTensor {
                scale: 0.1,
                zero_point: 0,
            },
        );
        let xd = codes(&mut r, &x_e, 3 * 36);
        let x = b.input_int(x_e, &[1, 3, 6, 6], xd);
        let w_e = qtype(st, true, w_params(&mut r, st, 0, 0, 4));
        let wd = codes(&mut r, &w_e, 4 * 27);
        let w = b.const_int(w_e, &[4, 3, 3, 3], wd);
        let y = b.node(Op::Conv2dInt, &[x, w], attrs(&[]), ElemType::I32);
        b.output(y);
        check(&b).unwrap();
        let names = kernel_names(&b);
        assert_eq!(
            names[0],
            format!("conv2d_int.im2col+pmaddwd4x8.u8{want}"),
            "{names:?}"
        );
    }
}

proptest! {
    #![proptest_config(cfg())]

    /// The compact per-channel requantize table (`Requant::table`): fields that vary per
    /// channel are packed into 32-bit words (here also zero points of the full i32 range,
    /// which take a word of their own).
    #[test]
    fn requantize_compact_table(seed: u64, wide: bool, per_zq: bool, per_zx: bool, per_mult: bool) {
        let mut r = Rng(seed | 1);
        let (c, inner) = (r.i(1, 9) as usize, r.i(1, 7) as usize);
        let s = [2, c, inner];
        let zx_max = if wide { i32::MAX as i64 } else { 100 };
        let in_e = qtype(IntType::new(32, true), false, QuantParams::PerAxis {
            axis: 1,
            scales: vec![0.1; c],
            zero_points: (0..c).map(|i| if per_zx || i == 0 { r.i(-zx_max, zx_max) as i32 } else { 0 }).collect(),
        });
        let in_e = if per_zx { in_e } else { qtype(IntType::new(32, true), false, QuantParams::PerTensor { scale: 0.1, zero_point: 5 }) };
        let out_st = if wide { IntType::new(32, false) } else { IntType::new(16, true) };
        let zq = |r: &mut Rng| if wide { r.i(0, i32::MAX as i64) } else { r.i(-300, 300) };
        let out_p = if per_zq {
            QuantParams::PerAxis { axis: 1, scales: vec![0.1; c], zero_points: (0..c).map(|_| zq(&mut r) as i32).collect() }
        } else {
            QuantParams::PerTensor { scale: 0.1, zero_point: zq(&mut r) as i32 }
        };
        let out_e = qtype(out_st, false, out_p);
        let n: usize = s.iter().product();
        let d = (0..n).map(|_| r.i(i32::MIN as i64, i32::MAX as i64)).collect();
        let mut b = B::new();
        let x = b.input_int(in_e, &s, d);
        let cnt = if per_mult { c } else { 1 };
        let mult: Vec<i64> = (0..cnt).map(|_| r.i(-(1 << 31), (1 << 31) - 1)).collect();
        let shift: Vec<i64> = (0..cnt).map(|_| r.i(-6, 50)).collect();
        let y = b.node(Op::Requantize, &[x], attrs(&[
            ("multiplier", ints(&mult)), ("shift", ints(&shift)), ("axis", Attr::Int(1)),
        ]), out_e);
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
    }
}
