//! Differential tests of the kernels of conv_transpose2d, pow, the reductions
//! (reduce_mean, reduce_sum, reduce_max, reduce_min, reduce_prod), resize, cast,
//! fake_quant, trunc, binarize, threshold, bit_pack and bit_unpack: the JIT against the
//! reference interpreter on random shapes, attributes and data (integer results bit for
//! bit; f32 results of pow and conv_transpose2d within `backend_common::TOL`, those of
//! fake_quant, trunc, the reductions and resize, whose kernels compute exactly what the
//! interpreter computes, equal as f32 values).

mod backend_common;

use backend_common::{B, Rng, attrs, cfg, check, ints};
use proptest::prelude::*;
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType, Rounding};

/// Like `check`, and f32 outputs must also be equal (NaN matches NaN, -0 matches 0).
fn check_exact(b: &B) -> Result<(), String> {
    check(b)?;
    let want = qcc_ir::interp::run(&b.m, &b.inputs).map_err(|e| e.to_string())?;
    let jit = qcc::backend::JitModel::new(&b.m).map_err(|e| e.to_string())?;
    let got = jit.run(&b.inputs).map_err(|e| e.to_string())?;
    for (k, (w, g)) in want.iter().zip(&got).enumerate() {
        if let (Some(w), Some(g)) = (w.as_f32(), g.as_f32()) {
            for (i, (a, c)) in w.iter().zip(g).enumerate() {
                if !(a == c || (a.is_nan() && c.is_nan())) {
                    return Err(format!(
                        "output {k}[{i}]: interp {a:e}, jit {c:e} (not exact)\n{}",
                        b.m
                    ));
                }
            }
        }
    }
    Ok(())
}

fn shape(r: &mut Rng, rank: usize, max: i64) -> Vec<usize> {
    (0..rank).map(|_| r.i(1, max) as usize).collect()
}

fn word(s: &str) -> Attr {
    Attr::Enum(s.to_string())
}

fn rounding(r: &mut Rng) -> Rounding {
    Rounding::ALL[r.i(0, 6) as usize]
}

fn int(bits: u8, signed: bool) -> ElemType {
    ElemType::Int(IntType::new(bits, signed))
}

fn qtype(bits: u8, signed: bool, params: QuantParams) -> ElemType {
    ElemType::Quant(QuantType {
        storage: IntType::new(bits, signed),
        narrow: false,
        pow2: false,
        params,
    })
}

/// A shape that broadcasts to `out`: a suffix with some dims set to 1.
fn bshape(r: &mut Rng, out: &[usize]) -> Vec<usize> {
    let drop = r.i(0, out.len() as i64) as usize;
    out[drop..]
        .iter()
        .map(|&d| if r.i(0, 2) == 0 { 1 } else { d })
        .collect()
}

/// Values that hit rounding ties and signed zeros as well as random ones.
fn tricky(r: &mut Rng, n: usize, span: f32) -> Vec<f32> {
    (0..n)
        .map(|_| match r.i(0, 7) {
            0 => (r.i(-40, 40) as f32) * 0.5,
            1 => (r.i(-40, 40) as f32) * 0.25,
            2 => 0.0,
            3 => -0.0,
            4 => {
                let v = 0.5 - f32::EPSILON / 4.0;
                if r.i(0, 1) == 0 { v } else { -v }
            }
            _ => r.f(-span, span),
        })
        .collect()
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn pow(seed: u64, rank in 0usize..4, ca: bool, cb: bool, neg: bool) {
        let mut r = Rng(seed | 1);
        let out = shape(&mut r, rank, 7);
        let (sa, sb) = (bshape(&mut r, &out), bshape(&mut r, &out));
        let na: usize = sa.iter().product();
        let nb: usize = sb.iter().product();
        // With `neg`, half the bases are negative and half the exponents integral.
        let da: Vec<f32> = (0..na).map(|_| match r.i(0, 9) {
            0 => 0.0,
            1 => 1.0,
            2..=5 if neg => if r.i(0, 3) == 0 { -1.0 } else { -r.f(0.1, 4.0) },
            _ => r.f(0.05, 6.0),
        }).collect();
        let db: Vec<f32> = (0..nb).map(|_| match r.i(0, 5) {
            0..=2 if neg => r.i(-4, 4) as f32,
            0 => r.i(-4, 4) as f32,
            1 => 0.5,
            _ => r.f(-3.0, 3.0),
        }).collect();
        let mut b = B::new();
        let x = b.f32_operand(ca && cb, &sa, da);
        let y = b.f32_operand(cb && !ca, &sb, db);
        let z = b.f(Op::Pow, &[x, y], attrs(&[]));
        b.output(z);
        if b.m.inputs.is_empty() { return Ok(()); }
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn fake_quant(seed: u64, rank in 0usize..4, bits in 1i64..9, signed: bool, narrow: bool, cs: bool) {
        let mut r = Rng(seed | 1);
        let s = shape(&mut r, rank, 7);
        let n: usize = s.iter().product();
        let (ss, zs) = (bshape(&mut r, &s), bshape(&mut r, &s));
        let pow2 = r.i(0, 1) == 0;
        let sd: Vec<f32> = (0..ss.iter().product()).map(|_| if pow2 { [0.25f32, 0.5, 1.0, 2.0][r.i(0, 3) as usize] } else { r.f(0.05, 1.5) }).collect();
        let intzp = r.i(0, 1) == 0;
        let zd: Vec<f32> = (0..zs.iter().product()).map(|_| if intzp { r.i(-3, 3) as f32 } else { r.f(-3.0, 3.0) }).collect();
        let mut b = B::new();
        let x = b.input_f32(&s, tricky(&mut r, n, 40.0));
        let sc = b.f32_operand(cs, &ss, sd);
        let zp = b.f32_operand(cs, &zs, zd);
        let a = attrs(&[
            ("bits", Attr::Int(bits)),
            ("signed", Attr::Bool(signed)),
            ("narrow", Attr::Bool(narrow && bits > 1)),
            ("rounding", word(rounding(&mut r).name())),
        ]);
        let y = b.f(Op::FakeQuant, &[x, sc, zp], a);
        b.output(y);
        check_exact(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn trunc(seed: u64, rank in 0usize..4, v2: bool, signed: bool, narrow: bool, cs: bool) {
        let mut r = Rng(seed | 1);
        let s = shape(&mut r, rank, 7);
        let n: usize = s.iter().product();
        let (ss, zs, os) = (bshape(&mut r, &s), bshape(&mut r, &s), bshape(&mut r, &s));
        let in_bits = r.i(2, 12);
        let out_bits = r.i(1, in_bits);
        let sd: Vec<f32> = (0..ss.iter().product()).map(|_| [0.125f32, 0.25, 0.5, 1.0][r.i(0, 3) as usize] * if r.i(0, 2) == 0 { r.f(0.9, 1.1) } else { 1.0 }).collect();
        let zd: Vec<f32> = (0..zs.iter().product()).map(|_| r.i(-4, 4) as f32).collect();
        let od: Vec<f32> = (0..os.iter().product()).map(|_| r.f(0.1, 16.0)).collect();
        let mut b = B::new();
        let x = b.input_f32(&s, tricky(&mut r, n, 300.0));
        let sc = b.f32_operand(cs || v2, &ss, sd);
        let zp = b.f32_operand(cs, &zs, zd);
        let mut ops = vec![x, sc, zp];
        if v2 { ops.push(b.const_f32(&os, od)); }
        let a = attrs(&[
            ("in_bits", Attr::Int(in_bits)),
            ("out_bits", Attr::Int(out_bits)),
            ("signed", Attr::Bool(signed)),
            ("narrow", Attr::Bool(narrow && out_bits > 1)),
            ("rounding", word(rounding(&mut r).name())),
        ]);
        let y = b.f(Op::Trunc, &ops, a);
        b.output(y);
        check_exact(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn cast_from_f32(seed: u64, rank in 0usize..4, which in 0usize..8) {
        let mut r = Rng(seed | 1);
        let s = shape(&mut r, rank, 9);
        let n: usize = s.iter().product();
        let to = match which {
            0 => int(8, true),
            1 => int(8, false),
            2 => int(4, true),
            3 => int(16, true),
            4 => int(32, true),
            5 => int(32, false),
            6 => qtype(4, false, QuantParams::PerTensor { scale: 0.5, zero_point: 3 }),
            _ => ElemType::Quant(QuantType { storage: IntType::new(8, true), narrow: true, pow2: false, params: QuantParams::PerTensor { scale: 1.0, zero_point: 0 } }),
        };
        let mut data = tricky(&mut r, n, 300.0);
        if n > 3 { data[0] = f32::NAN; data[1] = 3e9; data[2] = -3e9; }
        let mut b = B::new();
        let x = b.input_f32(&s, data);
        let y = b.node(Op::Cast, &[x], attrs(&[("rounding", word(rounding(&mut r).name()))]), to);
        b.output(y);
        check_exact(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn cast_from_int(seed: u64, rank in 0usize..4, from in 0usize..6, to in 0usize..7) {
        let mut r = Rng(seed | 1);
        let s = shape(&mut r, rank, 9);
        let n: usize = s.iter().product();
        let types = [int(8, true), int(8, false), int(4, true), int(16, true), int(32, true), int(32, false)];
        let fe = if from == 5 && to == 6 { ElemType::Bipolar } else { types[from].clone() };
        let te = if to == 6 { ElemType::F32 } else { types[to].clone() };
        let data: Vec<i64> = match &fe {
            ElemType::Bipolar => (0..n).map(|_| if r.i(0, 1) == 0 { 1 } else { -1 }).collect(),
            e => { let (lo, hi) = e.code_range().unwrap(); (0..n).map(|_| if r.i(0, 3) == 0 { [lo, hi][r.i(0, 1) as usize] } else { r.i(lo.max(-100_000), hi.min(100_000)) }).collect() }
        };
        let mut b = B::new();
        let x = b.input_int(fe, &s, data);
        let y = b.node(Op::Cast, &[x], attrs(&[]), te);
        b.output(y);
        check_exact(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn reduce_mean(seed: u64, rank in 1usize..6, keep: bool, all: bool, which in 0usize..5) {
        let mut r = Rng(seed | 1);
        let op = [Op::ReduceMean, Op::ReduceSum, Op::ReduceMax, Op::ReduceMin, Op::ReduceProd][which];
        let s = shape(&mut r, rank, 7);
        let n: usize = s.iter().product();
        let axes: Vec<i64> = if all { vec![] } else {
            let mut v: Vec<i64> = (0..rank as i64).filter(|_| r.i(0, 1) == 0).collect();
            if v.is_empty() { v.push(r.i(0, rank as i64 - 1)); }
            v.iter().map(|&a| if r.i(0, 1) == 0 { a - rank as i64 } else { a }).collect()
        };
        let mut b = B::new();
        // Products of factors near 1 stay finite (and show rounding); the others +-10.
        let mut data = if op == Op::ReduceProd { r.fs(n, -1.6, 1.6) } else { r.fs(n, -10.0, 10.0) };
        // Signed zeros and a NaN for max/min (NaN wins, +0 over -0) and prod.
        if n > 3 && which >= 2 {
            data[0] = 0.0;
            data[1] = -0.0;
            if r.i(0, 3) == 0 { data[n - 1] = f32::NAN; }
        }
        let x = b.input_f32(&s, data);
        let y = b.f(op, &[x], attrs(&[("axes", ints(&axes)), ("keepdims", Attr::Bool(keep))]));
        b.output(y);
        check_exact(&b).map_err(TestCaseError::fail)?;
    }

    /// Reductions of the last axis over rows (a layer norm's means): the kernel sums
    /// four rows at a time with their chains interleaved, each in the interpreter's
    /// order, then the rows left; row counts 1..13 and lengths 4..40 cover whole
    /// groups, leftover rows and lengths not a multiple of 4.
    #[test]
    fn reduce_last_axis_rows(seed: u64, which in 0usize..5, outer in 1usize..3, keep: bool) {
        let mut r = Rng(seed | 1);
        let op = [Op::ReduceMean, Op::ReduceSum, Op::ReduceMax, Op::ReduceMin, Op::ReduceProd][which];
        let (rows, n) = (r.i(1, 13) as usize, r.i(4, 40) as usize);
        let s = [outer, rows, n];
        let len = outer * rows * n;
        // Values near 1 and some of +-2^60, which absorb them in f64, so that a sum in
        // another order than the interpreter's gives another result.
        let mut data: Vec<f32> = if op == Op::ReduceProd {
            r.fs(len, -1.6, 1.6)
        } else {
            (0..len)
                .map(|_| match r.i(0, 5) {
                    0 => 2f32.powi(60),
                    1 => -(2f32.powi(60)),
                    _ => r.f(-1.0, 1.0),
                })
                .collect()
        };
        if which >= 2 && len > 3 {
            data[0] = 0.0;
            data[1] = -0.0;
            if r.i(0, 3) == 0 { data[len - 1] = f32::NAN; }
        }
        let mut b = B::new();
        let x = b.input_f32(&s, data);
        let y = b.f(op, &[x], attrs(&[("axes", ints(&[-1])), ("keepdims", Attr::Bool(keep))]));
        b.output(y);
        check_exact(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn resize(seed: u64, rank in 1usize..5, linear: bool, coord in 0usize..4, nearest in 0usize..4, int_data: bool) {
        let mut r = Rng(seed | 1);
        let s = shape(&mut r, rank, 6);
        let n: usize = s.iter().product();
        let mut sizes = Vec::new();
        let mut scales = Vec::new();
        for &d in &s {
            match r.i(0, 3) {
                0 => { sizes.push(d as i64); scales.push(1.0f32); }
                1 => { let f = r.i(2, 3); sizes.push(d as i64 * f); scales.push(f as f32); }
                2 => { let o = r.i(1, 9); sizes.push(o); scales.push(o as f32 / d as f32); }
                _ => { let o = r.i(1, 9); sizes.push(o); scales.push(r.f(0.3, 3.0)); }
            }
        }
        let mut b = B::new();
        let x = if int_data && !linear {
            b.input_int(int(8, true), &s, r.is(n, -128, 127))
        } else {
            b.input_f32(&s, r.fs(n, -5.0, 5.0))
        };
        let a = attrs(&[
            ("mode", word(if linear { "linear" } else { "nearest" })),
            ("coordinate_transformation_mode", word(["half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners"][coord])),
            ("nearest_mode", word(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"][nearest])),
            ("scales", Attr::Floats(scales)),
            ("sizes", ints(&sizes)),
        ]);
        let elem = b.m.ty(x).elem.clone();
        let y = b.node(Op::Resize, &[x], a, elem);
        b.output(y);
        check_exact(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn conv_transpose2d(seed: u64, with_bias: bool, wconst: bool, pointwise: bool) {
        let mut r = Rng(seed | 1);
        let n = r.i(1, 2) as usize;
        let group = r.i(1, 3) as usize;
        let (cg, mg) = (r.i(1, 4) as usize, r.i(1, 4) as usize);
        let (c, m) = (cg * group, mg * group);
        let (kh, kw) = if pointwise { (1, 1) } else { (r.i(1, 4) as usize, r.i(1, 4) as usize) };
        let (sh, sw) = if pointwise { (1, 1) } else { (r.i(1, 3), r.i(1, 3)) };
        let (dh, dw) = if pointwise { (1, 1) } else { (r.i(1, 2), r.i(1, 2)) };
        let pads: Vec<i64> = if pointwise { vec![0; 4] } else { (0..4).map(|_| r.i(0, 2)).collect() };
        let opad: Vec<i64> = if pointwise { vec![0, 0] } else { vec![r.i(0, sh - 1), r.i(0, sw - 1)] };
        let (h, w) = (r.i(1, 9) as usize, r.i(1, 9) as usize);
        let full = |len: usize, s: i64, d: i64, k: usize, op: i64| s * (len as i64 - 1) + d * (k as i64 - 1) + op + 1;
        prop_assume!(full(h, sh, dh, kh, opad[0]) - pads[0] - pads[2] >= 1);
        prop_assume!(full(w, sw, dw, kw, opad[1]) - pads[1] - pads[3] >= 1);
        let mut b = B::new();
        let x = b.input_f32(&[n, c, h, w], r.fs(n * c * h * w, -1.0, 1.0));
        let wt = b.f32_operand(wconst, &[c, mg, kh, kw], r.fs(c * mg * kh * kw, -1.0, 1.0));
        let mut ops = vec![x, wt];
        if with_bias { let d = r.fs(m, -1.0, 1.0); ops.push(b.f32_operand(r.i(0, 1) == 0, &[m], d)); }
        let a = attrs(&[
            ("strides", ints(&[sh, sw])),
            ("pads", ints(&pads)),
            ("dilations", ints(&[dh, dw])),
            ("group", Attr::Int(group as i64)),
            ("output_padding", ints(&opad)),
        ]);
        let y = b.f(Op::ConvTranspose2d, &ops, a);
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn binarize(seed: u64, rank in 0usize..4, kind in 0usize..4) {
        let mut r = Rng(seed | 1);
        let s = shape(&mut r, rank, 9);
        let n: usize = s.iter().product();
        let mut b = B::new();
        let x = match kind {
            0 => {
                let mut d = tricky(&mut r, n, 3.0);
                if n > 1 { d[n - 1] = f32::NAN; }
                b.input_f32(&s, d)
            }
            1 => b.input_int(int(4, true), &s, r.is(n, -8, 7)),
            2 => b.input_int(qtype(8, false, QuantParams::PerTensor { scale: 0.1, zero_point: 128 }), &s, r.is(n, 120, 136)),
            _ => {
                let per = !s.is_empty();
                let p = if per {
                    let axis = r.i(0, s.len() as i64 - 1) as usize;
                    QuantParams::PerAxis { axis, scales: vec![0.1; s[axis]], zero_points: (0..s[axis]).map(|_| r.i(-3, 3) as i32).collect() }
                } else {
                    QuantParams::PerTensor { scale: 0.1, zero_point: -2 }
                };
                b.input_int(qtype(8, true, p), &s, r.is(n, -6, 6))
            }
        };
        let y = b.node(Op::Binarize, &[x], attrs(&[]), ElemType::Bipolar);
        b.output(y);
        check_exact(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn threshold(seed: u64, rank in 1usize..4, shared: bool, tconst: bool, bipolar: bool, big_k: bool) {
        let mut r = Rng(seed | 1);
        let s = shape(&mut r, rank, 7);
        let n: usize = s.iter().product();
        let axis = r.i(0, rank as i64 - 1) as usize;
        let c = s[axis];
        let k = if bipolar { 1 } else if big_k { r.i(17, 40) as usize } else { r.i(1, 15) as usize };
        let tc = if shared { 1 } else { c };
        let mut t = Vec::with_capacity(tc * k);
        for _ in 0..tc {
            let mut row = r.is(k, -60, 60);
            row.sort(); // the verifier requires sorted constant thresholds
            t.extend(row);
        }
        let (xe, xd) = if r.i(0, 1) == 0 {
            (int(8, true), r.is(n, -64, 64))
        } else {
            (qtype(16, false, QuantParams::PerTensor { scale: 0.5, zero_point: 7 }), r.is(n, 0, 70))
        };
        let (out, offset) = if bipolar {
            (ElemType::Bipolar, 0)
        } else if r.i(0, 1) == 0 {
            (int(8, true), r.i(-20, 0))
        } else {
            (int(16, false), r.i(0, 5))
        };
        let mut b = B::new();
        let x = b.input_int(xe, &s, xd);
        let te = int(if r.i(0, 1) == 0 { 8 } else { 32 }, true);
        let th = if tconst { b.const_int(te, &[tc, k], t) } else { b.input_int(te, &[tc, k], t) };
        let ax = if r.i(0, 1) == 0 { axis as i64 } else { axis as i64 - rank as i64 };
        let y = b.node(Op::Threshold, &[x, th], attrs(&[("axis", Attr::Int(ax)), ("offset", Attr::Int(offset))]), out);
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
    }

    /// Byte codes with 16 or more per channel: the vector path (16 compares at a time,
    /// thresholds beyond the code range on both sides), and its scalar tail.
    #[test]
    fn threshold_bytes(seed: u64, signed: bool, bipolar: bool, shared: bool, k in 1usize..17) {
        let mut r = Rng(seed | 1);
        let (c, inner) = (r.i(1, 4) as usize, r.i(16, 70) as usize);
        let k = if bipolar { 1 } else { k };
        let tc = if shared { 1 } else { c };
        let mut t = Vec::with_capacity(tc * k);
        for _ in 0..tc {
            let mut row = r.is(k, -300, 400);
            row.sort();
            t.extend(row);
        }
        let (lo, hi) = if signed { (-128, 127) } else { (0, 255) };
        let xd = r.is(2 * c * inner, lo, hi);
        let (out, offset) = if bipolar { (ElemType::Bipolar, 0) } else { (int(8, true), r.i(-20, 0)) };
        let mut b = B::new();
        let x = b.input_int(int(8, signed), &[2, c, inner], xd);
        let th = b.const_int(int(32, true), &[tc, k], t);
        let y = b.node(Op::Threshold, &[x, th], attrs(&[("axis", Attr::Int(1)), ("offset", Attr::Int(offset))]), out);
        b.output(y);
        check(&b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn bit_pack_unpack(seed: u64, rank in 1usize..4, kind in 0usize..7, wsel in 0usize..3, roundtrip: bool) {
        let mut r = Rng(seed | 1);
        let mut s = shape(&mut r, rank, 5);
        let axis = r.i(0, rank as i64 - 1) as usize;
        s[axis] = r.i(1, 40) as usize;
        let n: usize = s.iter().product();
        let elem = match kind {
            0 => ElemType::Bipolar,
            1 => int(1, false),
            2 => int(3, true),
            3 => int(4, false),
            4 => qtype(5, true, QuantParams::PerTensor { scale: 1.0, zero_point: 0 }),
            5 => int(8, true),
            _ => int(16, true),
        };
        let data: Vec<i64> = match &elem {
            ElemType::Bipolar => (0..n).map(|_| if r.i(0, 1) == 0 { 1 } else { -1 }).collect(),
            e => { let (lo, hi) = e.code_range().unwrap(); r.is(n, lo, hi) }
        };
        let word_bits = [8i64, 16, 32][wsel];
        let mut b = B::new();
        let ax = if r.i(0, 1) == 0 { axis as i64 } else { axis as i64 - rank as i64 };
        if roundtrip {
            let x = b.input_int(elem.clone(), &s, data);
            let p = b.node(Op::BitPack, &[x], attrs(&[("axis", Attr::Int(ax)), ("word_bits", Attr::Int(word_bits))]), ElemType::F32);
            let u = b.node(Op::BitUnpack, &[p], attrs(&[("axis", Attr::Int(ax)), ("count", Attr::Int(s[axis] as i64))]), elem);
            b.output(p);
            b.output(u);
        } else {
            // Unpack random words.
            let bits = elem.bits() as usize;
            let mut ws = s.clone();
            ws[axis] = (s[axis] * bits).div_ceil(word_bits as usize);
            let nw: usize = ws.iter().product();
            let wmax = if word_bits == 32 { u32::MAX as i64 } else { (1i64 << word_bits) - 1 };
            let x = b.input_int(int(word_bits as u8, false), &ws, r.is(nw, 0, wmax));
            let u = b.node(Op::BitUnpack, &[x], attrs(&[("axis", Attr::Int(ax)), ("count", Attr::Int(s[axis] as i64))]), elem);
            b.output(u);
        }
        check(&b).map_err(TestCaseError::fail)?;
    }
}
