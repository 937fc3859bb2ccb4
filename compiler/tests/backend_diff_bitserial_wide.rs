//! Differential tests of the assembled wide bit-serial tiles (`kernels::xnor` with
//! `BsPlanes`, driven by `kernels::bitserial`), for every x86-64 tier the host has: the
//! JIT built for the tier, with the tile forced, must equal the interpreter bit for bit
//! on random 2..4-bit matrix products (batches, K not a multiple of 64, long K over
//! several of the AVX2 tile's chunks) and channel-packed convolutions (8..64 channels
//! per group, groups, strides, pads with the zero point's code, dilations), signed and
//! unsigned activations with any zero point, signed and unsigned weights, constant
//! bias anywhere in i32, and a fused requantize (per tensor or channel; in the tile
//! where it has the vector form, by Cranelift's epilogue elsewhere).
//!
//! - `x86-64-v3`: the ymm tile (`vpand`, `vpshufb` nibble lookup, `vpsadbw`).
//! - `x86-64-v4+vpopcntdq`: the zmm tile (`vpandq`, `vpopcntq`).
//!
//! Each test prints the tiers it exercised and skipped. With `CI=true`, a tier the host
//! has whose kernel never ran is a failure.

mod backend_common;

use std::sync::Mutex;

use backend_common::{B, Rng, attrs, cfg, codes, ints};
use proptest::prelude::*;
use qcc::backend::costs::{self, Strategy};
use qcc::backend::{JitModel, Target, Tier};
use qcc_ir::interp;
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType, ValueId};

/// Every other kernel that could take these layers.
const OTHERS: [Strategy; 7] = [
    Strategy::BitSerial,
    Strategy::Int8PackedW,
    Strategy::Int8Pmaddwd,
    Strategy::Maddubs,
    Strategy::DotVnni,
    Strategy::DotAvx2,
    Strategy::DotAvx2Wide,
];

/// The tiers with a wide bit-serial tile: `--cpu` name, the kernel's name part, the
/// other wide tile (disabled with [`OTHERS`] to force this one), whether the host can
/// run it, and the (weight, activation) bits its accumulators fit.
#[allow(clippy::type_complexity, reason = "a table")]
fn tiers() -> Vec<(
    &'static str,
    &'static str,
    Strategy,
    bool,
    &'static [(u8, u8)],
)> {
    let h = Tier::host();
    let x86 = cfg!(target_arch = "x86_64");
    vec![
        (
            "x86-64-v3",
            "bitserial.vpshufb.ymm",
            Strategy::BitSerialZmm,
            x86 && h.avx2(),
            &[(2, 2), (2, 3), (3, 2), (2, 4), (4, 2), (3, 3)],
        ),
        (
            "x86-64-v4+vpopcntdq",
            "bitserial.vpopcntq.zmm",
            Strategy::BitSerialYmm,
            x86 && h.avx512_vpopcntdq(),
            &[
                (2, 2),
                (2, 3),
                (3, 2),
                (2, 4),
                (4, 2),
                (3, 3),
                (3, 4),
                (4, 3),
                (4, 4),
            ],
        ),
    ]
}

/// Per tier: cases where its tile ran.
static RAN: Mutex<[usize; 2]> = Mutex::new([0; 2]);

/// Runs `b` (whose first layer multiplies `bits` = (weight, activation) bits) in every
/// tier the host has that fits them, its tile forced, and compares with the
/// interpreter; the first layer must take the tile.
fn check_tiers(b: &B, bits: (u8, u8)) -> Result<(), String> {
    qcc_ir::verify::verify(&b.m).map_err(|e| format!("invalid test module:\n{e}"))?;
    let want = interp::run(&b.m, &b.inputs).map_err(|e| format!("interp: {e}"))?;
    let host = target_lexicon::Triple::host().to_string();
    for (ti, (cpu, kname, other, has, fits)) in tiers().into_iter().enumerate() {
        if !has || !fits.contains(&bits) {
            continue;
        }
        let t = Target::new(&host, cpu).map_err(|e| e.to_string())?;
        let mut disabled = OTHERS.to_vec();
        disabled.push(other);
        let jit = costs::without(&disabled, || JitModel::with_target(&b.m, &t))
            .map_err(|e| format!("{cpu}: compile: {e}\n{}", b.m))?;
        let got = jit.run(&b.inputs).map_err(|e| format!("{cpu}: run: {e}"))?;
        let kernel = &jit.report().layers[0].kernel;
        for (w, g) in want.iter().zip(&got) {
            if w.shape != g.shape || w.data != g.data {
                return Err(format!(
                    "{cpu} ({kernel}) differs from the interpreter\n{}\n{}",
                    b.m,
                    jit.report()
                ));
            }
        }
        if !kernel.contains(kname) {
            return Err(format!("{cpu}: expected {kname}, got {kernel}"));
        }
        RAN.lock().unwrap()[ti] += 1;
    }
    Ok(())
}

fn qt(bits: u8, signed: bool, params: QuantParams) -> ElemType {
    ElemType::Quant(QuantType {
        storage: IntType::new(bits, signed),
        narrow: false,
        pow2: false,
        params,
    })
}

/// Activations: per tensor, any code of the type as the zero point.
fn act_type(r: &mut Rng, bits: u8, signed: bool) -> ElemType {
    let st = IntType::new(bits, signed);
    let zp = r.i(st.min_code(), st.max_code()) as i32;
    qt(
        bits,
        signed,
        QuantParams::PerTensor {
            scale: 0.1,
            zero_point: zp,
        },
    )
}

/// Weights: zero point 0 (what the wide tiles take), signed or sometimes unsigned.
fn weight_type(r: &mut Rng, bits: u8) -> ElemType {
    qt(
        bits,
        r.i(0, 3) > 0,
        QuantParams::PerTensor {
            scale: 0.02,
            zero_point: 0,
        },
    )
}

fn out_q() -> ElemType {
    qt(
        8,
        true,
        QuantParams::PerTensor {
            scale: 0.05,
            zero_point: -3,
        },
    )
}

/// After `y` (channels along `axis`, `c` of them): 0 nothing, 1 a per-tensor
/// requantize, 2 per channel, 3 per channel with small shifts (the AVX2 tile's i64
/// clamp), 4 per channel with large shifts (its i32 and f64 forms).
fn epilogue(b: &mut B, r: &mut Rng, y: ValueId, kind: usize, c: usize, axis: i64) -> ValueId {
    if kind == 0 {
        return y;
    }
    let cnt = if kind == 1 { 1 } else { c };
    let mult: Vec<i64> = (0..cnt).map(|_| r.i(1 << 20, 1 << 30)).collect();
    let (lo, hi) = match kind {
        3 => (4, 16),
        4 => (30, 36),
        _ => (18, 36),
    };
    let shift: Vec<i64> = (0..cnt).map(|_| r.i(lo, hi)).collect();
    b.node(
        Op::Requantize,
        &[y],
        attrs(&[
            ("multiplier", ints(&mult)),
            ("shift", ints(&shift)),
            ("axis", Attr::Int(axis)),
        ]),
        out_q(),
    )
}

/// Bias values: small, or anywhere in i32 (the sum wraps).
fn bias(r: &mut Rng, n: usize) -> Vec<i64> {
    if r.i(0, 3) == 0 {
        r.is(n, i32::MIN as i64, i32::MAX as i64)
    } else {
        r.is(n, -3000, 3000)
    }
}

/// The (weight, activation) bits of case `combo`.
fn combo_bits(combo: usize) -> (u8, u8) {
    [
        (2, 2),
        (2, 3),
        (3, 2),
        (2, 4),
        (4, 2),
        (3, 3),
        (3, 4),
        (4, 3),
        (4, 4),
    ][combo]
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn matmul_wide(
        seed: u64,
        combo in 0usize..9,
        asigned: bool,
        with_bias: bool,
        epi in 0usize..5,
        batched: bool,
    ) {
        let mut r = Rng(seed | 1);
        let (wbits, abits) = combo_bits(combo);
        let (m, n) = (r.i(1, 13) as usize, r.i(1, 40) as usize);
        let k = match r.i(0, 3) {
            0 => r.i(1, 70),
            1 => r.i(120, 200),
            2 => 64 * r.i(1, 4),
            // Several of the AVX2 tile's 31-word chunks.
            _ => r.i(1990, 4200),
        } as usize;
        let bs = if batched { vec![2, k, n] } else { vec![k, n] };
        let asz = if batched && r.i(0, 1) == 1 { vec![2, m, k] } else { vec![m, k] };
        let mut b = B::new();
        let xe = act_type(&mut r, abits, asigned);
        let ad = codes(&mut r, &xe, asz.iter().product());
        let x = b.input_int(xe, &asz, ad);
        let we = weight_type(&mut r, wbits);
        let bd = codes(&mut r, &we, bs.iter().product());
        let y = b.const_int(we, &bs, bd);
        let mut ops = vec![x, y];
        if with_bias { let d = bias(&mut r, n); ops.push(b.const_int(ElemType::I32, &[n], d)); }
        let z = b.node(Op::MatMulInt, &ops, attrs(&[]), ElemType::I32);
        let axis = if batched { 2 } else { 1 };
        let z = epilogue(&mut b, &mut r, z, epi, n, axis);
        b.output(z);
        check_tiers(&b, (wbits, abits)).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn conv2d_wide(
        seed: u64,
        combo in 0usize..9,
        asigned: bool,
        with_bias: bool,
        epi in 0usize..5,
        group in 1usize..3,
    ) {
        let mut r = Rng(seed | 1);
        let (wbits, abits) = combo_bits(combo);
        let n = r.i(1, 2) as usize;
        let cg = [8, 16, 32, 64][r.i(0, 3) as usize];
        let c = cg * group;
        let m = r.i(1, 20) as usize * group;
        let (kh, kw) = (r.i(1, 3) as usize, r.i(1, 3) as usize);
        let (sh, sw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let (dh, dw) = (r.i(1, 2) as usize, r.i(1, 2) as usize);
        let pads: Vec<i64> = (0..4).map(|_| r.i(0, 2)).collect();
        let (h, w) = (r.i(1, 12) as usize, r.i(1, 21) as usize);
        let fits = |len: usize, k: usize, d: usize, p0: i64, p1: i64| len as i64 + p0 + p1 >= (d * (k - 1) + 1) as i64;
        prop_assume!(fits(h, kh, dh, pads[0], pads[2]) && fits(w, kw, dw, pads[1], pads[3]));
        let mut b = B::new();
        let xe = act_type(&mut r, abits, asigned);
        let xd = codes(&mut r, &xe, n * c * h * w);
        let x = b.input_int(xe, &[n, c, h, w], xd);
        let we = weight_type(&mut r, wbits);
        let wd = codes(&mut r, &we, m * cg * kh * kw);
        let wt = b.const_int(we, &[m, cg, kh, kw], wd);
        let mut ops = vec![x, wt];
        if with_bias { let bd = bias(&mut r, m); ops.push(b.const_int(ElemType::I32, &[m], bd)); }
        let a = attrs(&[
            ("strides", ints(&[sh as i64, sw as i64])), ("pads", ints(&pads)),
            ("dilations", ints(&[dh as i64, dw as i64])), ("group", Attr::Int(group as i64)),
        ]);
        let y = b.node(Op::Conv2dInt, &ops, a, ElemType::I32);
        let y = epilogue(&mut b, &mut r, y, epi, m, 1);
        b.output(y);
        check_tiers(&b, (wbits, abits)).map_err(TestCaseError::fail)?;
    }
}

/// The tiers: which ran, which were skipped (printed); with CI=true every tier the host
/// has must have run its tile.
#[test]
fn zz_tiers_exercised() {
    // A fixed case per tier, so that the count does not depend on test order.
    for combo in [0, 5, 8] {
        let mut r = Rng(7 + combo as u64);
        let (wbits, abits) = combo_bits(combo);
        let mut b = B::new();
        let xe = act_type(&mut r, abits, false);
        let ad = codes(&mut r, &xe, 5 * 300);
        let x = b.input_int(xe, &[5, 300], ad);
        let we = weight_type(&mut r, wbits);
        let bd = codes(&mut r, &we, 300 * 17);
        let y = b.const_int(we, &[300, 17], bd);
        let z = b.node(Op::MatMulInt, &[x, y], attrs(&[]), ElemType::I32);
        b.output(z);
        check_tiers(&b, (wbits, abits)).unwrap();
    }
    let ran = *RAN.lock().unwrap();
    let mut missing = Vec::new();
    for (ti, (cpu, kname, _, has, _)) in tiers().into_iter().enumerate() {
        if has {
            println!("tier {cpu}: exercised ({} cases took {kname})", ran[ti]);
            if ran[ti] == 0 {
                missing.push(cpu);
            }
        } else {
            println!("tier {cpu}: skipped (this CPU does not have it)");
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(
            missing.is_empty(),
            "tiers this CPU has whose kernels did not run: {missing:?}"
        );
    }
}
