//! The fused requantize epilogue of the integer conv (the i32x4 vector form and its
//! scalar fallback) against the interpreter: every rounding mode, shifts small enough to
//! hit ties, negative shifts (left shifts: the scalar form), multipliers up to the i32
//! limit and beyond, negative multipliers, folded and run-time biases, every output
//! storage, per-tensor and per-channel parameters; on the host ISA and the baseline.

mod backend_common;

use backend_common::{B, Rng, attrs, cfg, check, check_baseline, ints};
use proptest::prelude::*;
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType, Rounding};

fn qtype(bits: u8, signed: bool, zero_point: i32) -> ElemType {
    ElemType::Quant(QuantType {
        storage: IntType::new(bits, signed),
        narrow: false,
        pow2: false,
        params: QuantParams::PerTensor {
            scale: 0.1,
            zero_point,
        },
    })
}

/// Output storages: (bits, signed).
const OUTS: [(u8, bool); 7] = [
    (8, false),
    (8, true),
    (4, false),
    (16, true),
    (16, false),
    (32, true),
    (2, true),
];

/// A multiplier and shift of one of three kinds: small (ties), large (31-bit), or a
/// left shift (the scalar fallback) or a multiplier near i32::MIN.
fn mult_shift(r: &mut Rng, kind: usize) -> (i64, i64) {
    match kind {
        0 => (r.i(-9, 9), r.i(0, 5)),
        1 => {
            let m = r.i(1 << 20, (1 << 31) - 1);
            (if r.i(0, 3) == 0 { -m } else { m }, r.i(14, 40))
        }
        _ => {
            if r.i(0, 1) == 0 {
                (r.i(1, 1 << 12), r.i(-3, -1))
            } else {
                (r.i(-(1 << 31), -(1 << 30)), r.i(30, 44))
            }
        }
    }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn conv2d_int_requantize(
        seed: u64, rnd in 0usize..7, out in 0usize..7, per_ch: bool, kind in 0usize..3,
        with_bias: bool, xsigned: bool,
    ) {
        let mut r = Rng(seed | 1);
        let (c, m) = (r.i(1, 4) as usize, r.i(1, 7) as usize);
        let (h, w) = (r.i(1, 6) as usize, r.i(1, 11) as usize);
        let k = r.i(1, 3) as usize;
        let pad = r.i(0, 1);
        prop_assume!(h as i64 + 2 * pad >= k as i64 && w as i64 + 2 * pad >= k as i64);
        let x_e = qtype(8, xsigned, if xsigned { r.i(-5, 5) as i32 } else { r.i(0, 9) as i32 });
        let w_e = qtype(8, true, 0);
        let mut b = B::new();
        let (xlo, xhi) = if xsigned { (-128, 127) } else { (0, 255) };
        let xd = r.is(c * h * w, xlo, xhi);
        let x = b.input_int(x_e, &[1, c, h, w], xd);
        // Small weights with small multipliers keep the results near the output range.
        let wmax = if kind == 0 { 3 } else { 127 };
        let wd = r.is(m * c * k * k, -wmax, wmax);
        let wt = b.const_int(w_e, &[m, c, k, k], wd);
        let mut ops = vec![x, wt];
        if with_bias {
            let bd = r.is(m, -3000, 3000);
            ops.push(b.const_int(ElemType::I32, &[m], bd));
        }
        let a = attrs(&[
            ("strides", ints(&[1, 1])), ("pads", ints(&[pad, pad, pad, pad])),
            ("dilations", ints(&[1, 1])), ("group", Attr::Int(1)),
        ]);
        let y = b.node(Op::Conv2dInt, &ops, a, ElemType::I32);
        let cnt = if per_ch { m } else { 1 };
        let (mult, shift): (Vec<i64>, Vec<i64>) = (0..cnt).map(|_| mult_shift(&mut r, kind)).unzip();
        let (ob, os) = OUTS[out];
        let zq = if ob >= 32 { 0 } else if os { r.i(-1, 1) } else { r.i(0, 2) };
        let out_e = qtype(ob, os, zq as i32);
        let mut ra = vec![
            ("multiplier", ints(&mult)), ("shift", ints(&shift)), ("axis", Attr::Int(1)),
            ("rounding", Attr::Enum(Rounding::ALL[rnd].name().into())),
        ];
        if r.i(0, 2) == 0 {
            ra.push(("min", Attr::Int(r.i(-2, 1))));
            ra.push(("max", Attr::Int(r.i(2, 6))));
        }
        let z = b.node(Op::Requantize, &[y], attrs(&ra), out_e);
        b.output(z);
        check(&b).map_err(TestCaseError::fail)?;
        check_baseline(&b).map_err(TestCaseError::fail)?;
    }
}
