//! Differential tests of the dequantize fused after an integer kernel: `conv2d_int` /
//! `matmul_int`, then `cast` to a quantized i32 type (a relabel naming the accumulator's
//! scales), `dequantize` to f32, and optionally the `add` of a constant f32 bias along
//! the channels, which the schedule fuses into the kernel's epilogue (f32 results, no
//! i32 tensor). On random shapes (odd K, N not a multiple of the vector width, batched
//! matrix products, grouped convolutions), per-tensor and per-channel scales, zero
//! points, an i32 bias of the kernel, every x86-64 tier the host has and each integer
//! kernel (the wide tiles, `pmaddubsw`, `pmaddwd`, bit-serial): the JIT must equal the
//! interpreter bit for bit, and the kernels that fuse must have fused.

mod backend_common;

use backend_common::{B, Rng, attrs, codes, ints};
use proptest::prelude::*;
use qcc::backend::costs::{self, Strategy};
use qcc::backend::{JitModel, Target, Tier};
use qcc_ir::interp;
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType, ValueId};

fn qt(bits: u8, signed: bool, params: QuantParams) -> ElemType {
    ElemType::Quant(QuantType {
        storage: IntType::new(bits, signed),
        narrow: false,
        pow2: false,
        params,
    })
}

/// The CPUs to compile for (those the host can run).
fn cpus() -> Vec<&'static str> {
    let h = Tier::host();
    let mut v = vec!["baseline"];
    if cfg!(target_arch = "x86_64") && h.avx2() {
        v.push("x86-64-v3");
    }
    if cfg!(target_arch = "x86_64") && h.avx512_vnni() {
        v.push("x86-64-v4+vnni");
    }
    v
}

/// Kernel choices: the cost table's, then the 128-bit `pmaddubsw`, `pmaddwd`, and the
/// bit-serial kernel where it applies.
fn kernel_sets() -> Vec<Vec<Strategy>> {
    let wide = [Strategy::DotVnni, Strategy::DotAvx2, Strategy::DotAvx2Wide];
    vec![
        vec![],
        wide.iter()
            .copied()
            .chain([
                Strategy::Int8Pmaddwd,
                Strategy::Int8PackedW,
                Strategy::BitSerial,
                Strategy::BitSerialZmm,
                Strategy::BitSerialYmm,
            ])
            .collect(),
        wide.iter()
            .copied()
            .chain([
                Strategy::Maddubs,
                Strategy::Int8PackedW,
                Strategy::BitSerial,
                Strategy::BitSerialZmm,
                Strategy::BitSerialYmm,
            ])
            .collect(),
        wide.iter()
            .copied()
            .chain([
                Strategy::Maddubs,
                Strategy::Int8PackedW,
                Strategy::Int8Pmaddwd,
            ])
            .collect(),
    ]
}

/// Runs `b` on every CPU and kernel set against the interpreter (bit for bit); the
/// integer kernels that fuse a dequantize must have fused it (`want` in the op).
fn check_all(b: &B, want: &str) -> Result<(), String> {
    qcc_ir::verify::verify(&b.m).map_err(|e| format!("invalid test module:\n{e}"))?;
    let expect = interp::run(&b.m, &b.inputs).map_err(|e| format!("interp: {e}"))?;
    let host = target_lexicon::Triple::host().to_string();
    for cpu in cpus() {
        let t = Target::new(&host, cpu).map_err(|e| e.to_string())?;
        for set in kernel_sets() {
            let jit = costs::without(&set, || JitModel::with_target(&b.m, &t))
                .map_err(|e| format!("{cpu}: compile: {e}\n{}", b.m))?;
            let got = jit.run(&b.inputs).map_err(|e| format!("{cpu}: run: {e}"))?;
            let layer = &jit.report().layers[0];
            for (w, g) in expect.iter().zip(&got) {
                if w.shape != g.shape || w.data != g.data {
                    return Err(format!(
                        "{cpu} ({}) differs from the interpreter\n{}\n{}",
                        layer.kernel,
                        b.m,
                        jit.report()
                    ));
                }
            }
            let k = &layer.kernel;
            let fuses = k.contains("vpdpbusd")
                || k.contains("bitserial")
                || k.contains("vpmadd")
                || k.contains("pmaddubsw")
                || k.contains("pmaddwd4x8");
            if fuses && !(layer.op.ends_with(want) && k.contains("+dequantize")) {
                return Err(format!(
                    "{cpu}: {} ({k}) did not fuse {want}\n{}",
                    layer.op, b.m
                ));
            }
        }
    }
    Ok(())
}

fn act(r: &mut Rng, bits: u8, signed: bool) -> ElemType {
    let st = IntType::new(bits, signed);
    qt(
        bits,
        signed,
        QuantParams::PerTensor {
            scale: 0.1,
            zero_point: r.i(st.min_code(), st.max_code()) as i32,
        },
    )
}

/// Weights of `bits` (zero point 0 or per channel) along `axis` for `c` channels.
fn weights(r: &mut Rng, bits: u8, axis: usize, c: usize, count: usize) -> (ElemType, Vec<i64>) {
    let st = IntType::new(bits, true);
    let zps: Vec<i32> = (0..c)
        .map(|_| {
            if r.i(0, 1) == 0 {
                0
            } else {
                r.i(st.min_code() / 2, st.max_code() / 2) as i32
            }
        })
        .collect();
    let e = qt(
        bits,
        true,
        QuantParams::PerAxis {
            axis,
            scales: vec![0.02; c],
            zero_points: zps,
        },
    );
    let codes = r.is(count, st.min_code(), st.max_code());
    (e, codes)
}

/// The accumulator's type: per-tensor or per-channel scales along `axis`, zero points
/// 0 (as `fuse-int` makes them) or random.
fn acc_type(r: &mut Rng, axis: usize, c: usize, per_channel: bool, zp: bool) -> ElemType {
    let z = |r: &mut Rng| if zp { r.i(-5000, 5000) as i32 } else { 0 };
    let params = if per_channel {
        QuantParams::PerAxis {
            axis,
            scales: (0..c).map(|_| r.f(1e-6, 0.2)).collect(),
            zero_points: (0..c).map(|_| z(r)).collect(),
        }
    } else {
        QuantParams::PerTensor {
            scale: r.f(1e-6, 0.2),
            zero_point: z(r),
        }
    };
    qt(32, true, params)
}

/// `y` (the kernel's i32 result) through cast, dequantize and (`bias_kind` 1: [c]
/// along the channels, 2: one value, 3: the bias first) the add of a constant.
#[allow(clippy::too_many_arguments, reason = "the chain's parameters")]
fn deq_chain(
    b: &mut B,
    r: &mut Rng,
    y: ValueId,
    axis: usize,
    c: usize,
    bshape: &[usize],
    per_channel: bool,
    zp: bool,
    bias_kind: usize,
) -> ValueId {
    let e = acc_type(r, axis, c, per_channel, zp);
    let s = b.node(Op::Cast, &[y], attrs(&[]), e);
    let d = b.f(Op::Dequantize, &[s], attrs(&[]));
    match bias_kind {
        1 => {
            let bv = b.const_f32(bshape, r.fs(c, -3.0, 3.0));
            b.f(Op::Add, &[d, bv], attrs(&[]))
        }
        2 => {
            let bv = b.const_f32(&[1], r.fs(1, -3.0, 3.0));
            b.f(Op::Add, &[d, bv], attrs(&[]))
        }
        3 => {
            let bv = b.const_f32(bshape, r.fs(c, -3.0, 3.0));
            b.f(Op::Add, &[bv, d], attrs(&[]))
        }
        _ => d,
    }
}

fn int_bias(b: &mut B, r: &mut Rng, kind: usize, n: usize) -> Option<ValueId> {
    let v = r.is(n, -30_000, 30_000);
    match kind {
        1 => Some(b.const_int(ElemType::I32, &[n], v)),
        2 => Some(b.input_int(ElemType::I32, &[n], v)),
        _ => None,
    }
}

fn want(bias_kind: usize) -> &'static str {
    if bias_kind == 0 { "dequantize" } else { "add" }
}

proptest! {
    #![proptest_config(backend_common::cfg())]

    #[test]
    fn matmul_dequantize(
        seed: u64,
        abits in 2u8..=8,
        wbits in 2u8..=8,
        asigned: bool,
        kbias in 0usize..3,
        bias_kind in 0usize..4,
        per_channel: bool,
        zp: bool,
        batched in 0usize..3,
    ) {
        let mut r = Rng(seed | 1);
        let (m, n) = (r.i(1, 40) as usize, r.i(1, 70) as usize);
        let k = match r.i(0, 2) {
            0 => r.i(1, 20),
            1 => r.i(60, 70),
            _ => r.i(120, 300),
        } as usize;
        let bs = if batched == 1 { vec![2, k, n] } else { vec![k, n] };
        let asz = match batched {
            0 => vec![m, k],
            _ => vec![2, m, k],
        };
        let mut b = B::new();
        let xe = act(&mut r, abits, asigned);
        let ad = codes(&mut r, &xe, asz.iter().product());
        let x = b.input_int(xe, &asz, ad);
        let (we, wd) = weights(&mut r, wbits, bs.len() - 1, n, bs.iter().product());
        let w = b.const_int(we, &bs, wd);
        let mut ops = vec![x, w];
        if let Some(bv) = int_bias(&mut b, &mut r, kbias, n) {
            ops.push(bv);
        }
        let y = b.node(Op::MatMulInt, &ops, attrs(&[]), ElemType::I32);
        let rank = if batched > 0 { 3 } else { 2 };
        let bshape: Vec<usize> = if r.i(0, 1) == 0 { vec![n] } else { vec![1; rank - 1].into_iter().chain([n]).collect() };
        let z = deq_chain(&mut b, &mut r, y, rank - 1, n, &bshape, per_channel, zp, bias_kind);
        b.output(z);
        check_all(&b, want(bias_kind)).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn conv2d_dequantize(
        seed: u64,
        abits in 2u8..=8,
        wbits in 2u8..=8,
        asigned: bool,
        kbias in 0usize..3,
        bias_kind in 0usize..4,
        per_channel: bool,
        zp: bool,
        grouped: bool,
    ) {
        let mut r = Rng(seed | 1);
        let group = if grouped { 2 } else { 1 };
        let (cg, mg) = (r.i(1, 12) as usize, r.i(1, 24) as usize);
        let (c, m) = (cg * group, mg * group);
        let (h, w) = (r.i(1, 9) as usize, r.i(1, 23) as usize);
        let n = r.i(1, 2) as usize;
        let mut b = B::new();
        let xe = act(&mut r, abits, asigned);
        let xd = codes(&mut r, &xe, n * c * h * w);
        let x = b.input_int(xe, &[n, c, h, w], xd);
        let (we, wd) = weights(&mut r, wbits, 0, m, m * cg * 9);
        let wc = b.const_int(we, &[m, cg, 3, 3], wd);
        let mut ops = vec![x, wc];
        if let Some(bv) = int_bias(&mut b, &mut r, kbias, m) {
            ops.push(bv);
        }
        let a = attrs(&[("pads", ints(&[1; 4])), ("group", Attr::Int(group as i64))]);
        let y = b.node(Op::Conv2dInt, &ops, a, ElemType::I32);
        let z = deq_chain(&mut b, &mut r, y, 1, m, &[m, 1, 1], per_channel, zp, bias_kind);
        b.output(z);
        check_all(&b, want(bias_kind)).map_err(TestCaseError::fail)?;
    }
}

/// A bias along another axis than the channels, or a dequantize whose result has
/// another user, is not fused (the kernel keeps the i32 result) and stays exact.
#[test]
fn unfusable_chains_stay_exact() {
    let mut r = Rng(7);
    let (m, k, n) = (5, 33, 20);
    for case in 0..2 {
        let mut b = B::new();
        let xe = act(&mut r, 8, false);
        let ad = codes(&mut r, &xe, m * k);
        let x = b.input_int(xe, &[m, k], ad);
        let (we, wd) = weights(&mut r, 8, 1, n, k * n);
        let w = b.const_int(we, &[k, n], wd);
        let y = b.node(Op::MatMulInt, &[x, w], attrs(&[]), ElemType::I32);
        let e = acc_type(&mut r, 1, n, true, false);
        let s = b.node(Op::Cast, &[y], attrs(&[]), e);
        let d = b.f(Op::Dequantize, &[s], attrs(&[]));
        if case == 0 {
            // A bias per row: [m, 1].
            let bv = b.const_f32(&[m, 1], r.fs(m, -1.0, 1.0));
            let z = b.f(Op::Add, &[d, bv], attrs(&[]));
            b.output(z);
        } else {
            let z = b.f(Op::Relu, &[d], attrs(&[]));
            b.output(z);
            b.output(d);
        }
        // The dequantize alone fuses; never the add.
        check_all(&b, "dequantize").unwrap();
    }
}
