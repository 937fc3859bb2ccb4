//! Differential tests of the `pmaddubsw` (u8 x i8) conv/matmul kernel
//! (`kernels::maddubs`): the JIT must equal the interpreter bit for bit on random shapes
//! (strides, pads, dilations, groups incl. depthwise, odd K), 1..8-bit activations (u8
//! or i8 storage, any zero point), 1..8-bit weights (signed or not, narrow or not,
//! per-tensor or per-channel zero points, bit-packed below 8 bits), with and without bias (constant
//! or run-time) and a fused requantize, batched matmuls. The other integer kernels are
//! disabled (`costs::without`) so that every layer whose weights pass the saturation
//! check takes this kernel; layers whose weights fail it must fall back, also exactly.

mod backend_common;

use backend_common::{B, Rng, attrs, check, check_baseline, codes, ints, kernel_of, requant_to};
use proptest::prelude::*;
use qcc::backend::costs::{self, Strategy};
use qcc::backend::{JitModel, Target};
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType, ValueId};

/// The strategies this kernel competes with, disabled to force it where it applies
/// (the wide tiles of the same family too: `backend_diff_wide` tests those).
const OTHERS: [Strategy; 8] = [
    Strategy::Int8Pmaddwd,
    Strategy::Int8PackedW,
    Strategy::BitSerial,
    Strategy::BitSerialZmm,
    Strategy::BitSerialYmm,
    Strategy::DotVnni,
    Strategy::DotAvx2,
    Strategy::DotAvx2Wide,
];

fn forced<R>(f: impl FnOnce() -> R) -> R {
    costs::without(&OTHERS, f)
}

fn qt(bits: u8, signed: bool, narrow: bool, params: QuantParams) -> ElemType {
    ElemType::Quant(QuantType {
        storage: IntType::new(bits, signed),
        narrow,
        pow2: false,
        params,
    })
}

/// Activation type: quantized per tensor with any code as zero point, or a plain
/// integer type (zero point 0).
fn act_type(r: &mut Rng, bits: u8, signed: bool) -> ElemType {
    let st = IntType::new(bits, signed);
    if r.i(0, 4) == 0 {
        return ElemType::Int(st);
    }
    let zp = r.i(st.min_code(), st.max_code()) as i32;
    qt(
        bits,
        signed,
        false,
        QuantParams::PerTensor {
            scale: 0.1,
            zero_point: zp,
        },
    )
}

/// Weight type and codes: `small` keeps every zero-point corrected weight within
/// +-64 (then every layer passes the saturation check: 255 * 128 < 32768); otherwise
/// codes are anywhere in the type (8-bit weights may then fail and fall back).
struct Weights {
    elem: ElemType,
    codes: Vec<i64>,
    /// Whether the layer must take the pmaddubsw kernel.
    passes: bool,
}

/// `count` weights in `c` channels along `axis` (conv: `per` consecutive codes per
/// channel; matmul: channel = index % c).
fn weights(r: &mut Rng, bits: u8, axis: usize, c: usize, count: usize, conv: bool) -> Weights {
    let signed = r.i(0, 3) > 0;
    let narrow = signed && bits > 1 && r.i(0, 1) == 1;
    let st = IntType::new(bits, signed);
    let (lo, hi) = (st.min_code() + i64::from(narrow), st.max_code());
    let small = r.i(0, 2) > 0;
    let zp_mode = r.i(0, 2);
    let mut zps: Vec<i64> = (0..c)
        .map(|_| match zp_mode {
            0 => 0,
            _ => r.i(lo, hi),
        })
        .collect();
    if zp_mode == 1 {
        let z = zps[0];
        zps.iter_mut().for_each(|v| *v = z);
    }
    let chan = |i: usize| if conv { i / (count / c) } else { i % c };
    let codes: Vec<i64> = (0..count)
        .map(|i| {
            let z = zps[chan(i)];
            if small {
                r.i((z - 64).max(lo), (z + 64).min(hi))
            } else {
                r.i(lo, hi)
            }
        })
        .collect();
    let params = if zp_mode == 1 && r.i(0, 1) == 0 {
        QuantParams::PerTensor {
            scale: 0.02,
            zero_point: zps[0] as i32,
        }
    } else {
        QuantParams::PerAxis {
            axis,
            scales: vec![0.02; c],
            zero_points: zps.iter().map(|&z| z as i32).collect(),
        }
    };
    // Below 7 bits every corrected weight is within +-64 anyway.
    let passes = small || bits <= 6 || (bits == 7 && signed && zp_mode == 0);
    Weights {
        elem: qt(bits, signed, narrow, params),
        codes,
        passes,
    }
}

fn out_q() -> ElemType {
    qt(
        8,
        true,
        false,
        QuantParams::PerTensor {
            scale: 0.05,
            zero_point: -3,
        },
    )
}

/// A requantize after `y` (channels along `axis`, `c` of them) to `out_q()`: 0 none,
/// 1 per tensor, 2 per channel.
fn requant(b: &mut B, r: &mut Rng, y: ValueId, kind: usize, c: usize, axis: i64) -> ValueId {
    requant_to(b, r, y, kind, c, axis, (24, 38), out_q())
}

/// A bias operand of `n` channels: 0 none, 1 constant (small or anywhere in i32), 2 an
/// input.
fn bias(b: &mut B, r: &mut Rng, kind: usize, n: usize) -> Option<ValueId> {
    let v = if r.i(0, 3) == 0 {
        r.is(n, i32::MIN as i64, i32::MAX as i64)
    } else {
        r.is(n, -3000, 3000)
    };
    match kind {
        1 => Some(b.const_int(ElemType::I32, &[n], v)),
        2 => Some(b.input_int(ElemType::I32, &[n], v)),
        _ => None,
    }
}

/// The first layer's kernel with the other integer kernels disabled.
fn forced_kernel(b: &B) -> String {
    forced(|| kernel_of(b))
}

proptest! {
    #![proptest_config(backend_common::cfg())]

    #[test]
    fn conv2d_maddubs(
        seed: u64,
        abits in 1u8..=8,
        wbits in 1u8..=8,
        asigned: bool,
        bias_kind in 0usize..3,
        requant_kind in 0usize..3,
        grouping in 0usize..4,
    ) {
        let mut r = Rng(seed | 1);
        let n = r.i(1, 2) as usize;
        let (group, cg, mpg) = match grouping {
            2 => (2, r.i(1, 12) as usize, r.i(1, 6) as usize),
            3 => { let c = r.i(1, 9) as usize; (c, 1, r.i(1, 2) as usize) }
            _ => (1, r.i(1, 40) as usize, r.i(1, 9) as usize),
        };
        let c = cg * group;
        let m = mpg * group;
        let (kh, kw) = (r.i(1, 3) as usize, r.i(1, 3) as usize);
        let (sh, sw) = (r.i(1, 2) as usize, if r.i(0, 2) == 0 { 2 } else { 1 });
        let (dh, dw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let pads: Vec<i64> = (0..4).map(|_| r.i(0, 2)).collect();
        let (h, w) = (r.i(1, 12) as usize, r.i(1, 40) as usize);
        let fits = |len: usize, k: usize, d: usize, p0: i64, p1: i64| len as i64 + p0 + p1 >= (d * (k - 1) + 1) as i64;
        prop_assume!(fits(h, kh, dh, pads[0], pads[2]) && fits(w, kw, dw, pads[1], pads[3]));
        let mut b = B::new();
        let xe = act_type(&mut r, abits, asigned);
        let xd = codes(&mut r, &xe, n * c * h * w);
        let x = b.input_int(xe, &[n, c, h, w], xd);
        let wt = weights(&mut r, wbits, 0, m, m * cg * kh * kw, true);
        let wc = b.const_int(wt.elem, &[m, cg, kh, kw], wt.codes);
        let mut ops = vec![x, wc];
        if let Some(bv) = bias(&mut b, &mut r, bias_kind, m) { ops.push(bv); }
        let a = attrs(&[
            ("strides", ints(&[sh as i64, sw as i64])), ("pads", ints(&pads)),
            ("dilations", ints(&[dh as i64, dw as i64])), ("group", Attr::Int(group as i64)),
        ]);
        let y = b.node(Op::Conv2dInt, &ops, a, ElemType::I32);
        let y = requant(&mut b, &mut r, y, requant_kind, m, 1);
        b.output(y);
        forced(|| check(&b)).map_err(TestCaseError::fail)?;
        let kernel = forced_kernel(&b);
        if wt.passes {
            prop_assert!(kernel.contains("pmaddubsw"), "{}", kernel);
        }
        // With the cost table's own choice, and on the baseline ISA (no SSSE3).
        check(&b).map_err(TestCaseError::fail)?;
        check_baseline(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn matmul_maddubs(
        seed: u64,
        abits in 1u8..=8,
        wbits in 1u8..=8,
        asigned: bool,
        bias_kind in 0usize..3,
        requant_kind in 0usize..3,
        batched in 0usize..3,
    ) {
        let mut r = Rng(seed | 1);
        let (m, n) = (r.i(1, 13) as usize, r.i(1, 19) as usize);
        let k = match r.i(0, 3) { 0 => r.i(1, 20), 1 => r.i(60, 70), 2 => r.i(120, 300), _ => 512 } as usize;
        // 0: [m, k] x [k, n]; 1: batched weights; 2: batched activations, shared weights.
        let bs = if batched == 1 { vec![2, k, n] } else { vec![k, n] };
        let asz = match batched { 0 => vec![m, k], _ => vec![2, m, k] };
        let mut b = B::new();
        let xe = act_type(&mut r, abits, asigned);
        let ad = codes(&mut r, &xe, asz.iter().product());
        let x = b.input_int(xe, &asz, ad);
        let wt = weights(&mut r, wbits, bs.len() - 1, n, bs.iter().product(), false);
        let y = b.const_int(wt.elem, &bs, wt.codes);
        let mut ops = vec![x, y];
        if let Some(bv) = bias(&mut b, &mut r, bias_kind, n) { ops.push(bv); }
        let z = b.node(Op::MatMulInt, &ops, attrs(&[]), ElemType::I32);
        let axis = if batched > 0 { 2 } else { 1 };
        let z = requant(&mut b, &mut r, z, requant_kind, n, axis);
        b.output(z);
        forced(|| check(&b)).map_err(TestCaseError::fail)?;
        let kernel = forced_kernel(&b);
        if wt.passes {
            prop_assert!(kernel.contains("pmaddubsw"), "{}", kernel);
        }
        check(&b).map_err(TestCaseError::fail)?;
        check_baseline(&b).map_err(TestCaseError::fail)?;
    }
}

fn act(bits: u8, signed: bool, zp: i32) -> ElemType {
    qt(
        bits,
        signed,
        false,
        QuantParams::PerTensor {
            scale: 0.1,
            zero_point: zp,
        },
    )
}

fn wq(bits: u8, signed: bool, zp: i32) -> ElemType {
    qt(
        bits,
        signed,
        false,
        QuantParams::PerTensor {
            scale: 0.1,
            zero_point: zp,
        },
    )
}

/// A 3x3 padded conv (C = 5, M = 3) over u8 activations with the given weights (135
/// codes), every activation `xfill` or random.
fn conv_with(we: ElemType, wd: Vec<i64>, xe: ElemType, xfill: Option<i64>) -> B {
    let mut r = Rng(7);
    let mut b = B::new();
    let xd = match xfill {
        Some(v) => vec![v; 2 * 5 * 6 * 7],
        None => codes(&mut r, &xe, 2 * 5 * 6 * 7),
    };
    let x = b.input_int(xe, &[2, 5, 6, 7], xd);
    let w = b.const_int(we, &[3, 5, 3, 3], wd);
    let y = b.node(
        Op::Conv2dInt,
        &[x, w],
        attrs(&[("pads", ints(&[1; 4]))]),
        ElemType::I32,
    );
    b.output(y);
    b
}

/// u8 x i8 with 8-bit weights: the layer takes the kernel exactly when every weight
/// pair it multiplies stays below saturation with activations up to 255 (pairs summing
/// to 128 in magnitude pass, 129 fail), and is exact either way, also at the extreme
/// activations (all 255, all 0) that would saturate a wrong check.
#[test]
fn eight_bit_weights_pass_or_fall_back() {
    let xe = act(8, false, 3);
    let at = |pair: (i64, i64)| -> Vec<i64> {
        // Every pair of the K = 45 row (and its odd last tap) is `pair`.
        (0..135)
            .map(|i| if (i % 45) % 2 == 0 { pair.0 } else { pair.1 })
            .collect()
    };
    for (pair, pass) in [
        ((64, 64), true),
        ((-64, -64), true),
        ((-128, 0), true),
        ((127, -127), true),
        ((65, 64), false),
        ((-65, -64), false),
        ((127, 2), false),
    ] {
        for xfill in [None, Some(255), Some(0)] {
            let b = conv_with(wq(8, true, 0), at(pair), xe.clone(), xfill);
            forced(|| check(&b)).unwrap();
            check(&b).unwrap();
            let k = forced_kernel(&b);
            assert_eq!(k.contains("pmaddubsw"), pass, "{pair:?}: {k}");
            if !pass {
                assert!(k.contains("pmaddwd"), "{k}");
            }
        }
    }
    // A weight zero point: w - zw must fit i8 (u8 weights with zp 128 do).
    let wd: Vec<i64> = (0..135).map(|i| 100 + (i * 7) % 57).collect();
    let b = conv_with(wq(8, false, 128), wd.clone(), xe.clone(), Some(255));
    forced(|| check(&b)).unwrap();
    assert!(forced_kernel(&b).contains("pmaddubsw"));
    // u8 weights with zp 0 do not fit i8: fall back.
    let b = conv_with(wq(8, false, 0), wd, xe, Some(255));
    forced(|| check(&b)).unwrap();
    assert!(forced_kernel(&b).contains("pmaddwd"));
}

/// The i16 group length follows the weights: 4-bit weights with 8-bit activations sum
/// 8 quads in i16 (255 * 16 * 8 = 32640), 2-bit ones 32, and all-extreme inputs are
/// exact at those lengths.
#[test]
fn group_length_follows_the_weights() {
    let xe = act(8, false, 0);
    for (bits, lo, g) in [(4u8, -8i64, ".g8"), (3, -4, ".g16"), (2, -2, ".g32")] {
        let mut r = Rng(11);
        let mut b = B::new();
        let k = 1000;
        let ad = vec![255; 3 * k];
        let x = b.input_int(xe.clone(), &[3, k], ad);
        let mut bd = r.is(k * 9, lo, -lo - 1);
        // Column 0 at the extreme of every pair.
        for kk in 0..k {
            bd[kk * 9] = lo;
        }
        let w = b.const_int(wq(bits, true, 0), &[k, 9], bd);
        let z = b.node(Op::MatMulInt, &[x, w], attrs(&[]), ElemType::I32);
        b.output(z);
        forced(|| check(&b)).unwrap();
        let kern = forced_kernel(&b);
        assert!(kern.contains(g), "{kern}");
        // With 4-bit activations every group is long.
        let b2 = conv_with(
            wq(bits, true, 0),
            (0..135).map(|i| lo + i % 3).collect(),
            act(4, false, 15),
            Some(15),
        );
        forced(|| check(&b2)).unwrap();
        assert!(forced_kernel(&b2).contains("pmaddubsw"));
    }
}

/// The cost table's own choice: on the host (SSSE3) narrow weights with 8-bit
/// activations take the family's kernel; the baseline ISA and aarch64 never do.
#[test]
fn selection_by_cost_table_and_isa() {
    let mut r = Rng(5);
    let we = wq(4, true, 0);
    let wd = codes(&mut r, &we, 135);
    let b = conv_with(we.clone(), wd.clone(), act(8, false, 0), None);
    check(&b).unwrap();
    // The host's own choice: this family, 128-bit or a wide tile of its tier.
    let k = kernel_of(&b);
    assert!(
        (k.contains("pmaddubsw") || k.contains("vpdpbusd")) && k.contains(".w4packed"),
        "{k}"
    );
    let t = Target::new(&target_lexicon::Triple::host().to_string(), "baseline").unwrap();
    let jit = JitModel::with_target(&b.m, &t).unwrap();
    assert!(jit.report().layers[0].kernel.contains("pmaddwd"));
    check_baseline(&b).unwrap();
    let t = Target::new("aarch64-unknown-linux-gnu", "baseline").unwrap();
    let asm = qcc::backend::emit_asm(&b.m, "t", &t).unwrap();
    assert!(!asm.contains("pmaddubsw") && asm.contains("pmaddwd"));
}

/// Bit-packed weights shrink with the bits: a 4-bit 512x256 weight matrix takes
/// 64 KiB (plus small tables), an 8-bit one 128 KiB (bytes, not the 16-bit pairs of the
/// `pmaddwd` kernel).
#[test]
fn weight_bytes() {
    let (k, n) = (512usize, 256usize);
    for (bits, per) in [(4u8, 4usize), (8, 8)] {
        let mut r = Rng(17);
        let mut b = B::new();
        let xe = act(8, false, 0);
        let ad = codes(&mut r, &xe, 4 * k);
        let x = b.input_int(xe, &[4, k], ad);
        let bd = r.is(k * n, -7, 7);
        let w = b.const_int(wq(bits, true, 0), &[k, n], bd);
        let z = b.node(Op::MatMulInt, &[x, w], attrs(&[]), ElemType::I32);
        b.output(z);
        forced(|| check(&b)).unwrap();
        let jit = forced(|| JitModel::new(&b.m).unwrap());
        assert!(jit.report().layers[0].kernel.contains("pmaddubsw"));
        let wb = jit.report().weight_bytes as usize;
        let want = k * n * per / 8;
        assert!(
            want <= wb && wb <= want + 8 * n + 256,
            "{bits} bits: {wb} B"
        );
    }
}
