//! The u8 x i8 kernel on aarch64 with FEAT_DotProd (`--cpu baseline+dotprod`): each
//! quad of products summed by `sdot` (the exact i32 dot tree Cranelift lowers to it),
//! the activations shifted into i8 by the kernel's offset. Checked in the code (the
//! `sdot` instruction is there, and not without the extension) and against the
//! interpreter, bit for bit, as aarch64 objects under qemu (`-cpu max`) on random
//! convolutions (padding with any activation zero point, groups, strides, 8-bit
//! weights over the whole i8 range, which `pmaddubsw` could not take in their natural
//! order, bit-packed narrower weights, per-channel weight zero points) and matrix
//! products (batches, signed and unsigned activations), with bias and requantize.
//! Skipped when the tools are missing (a failure with `CI=true`).

mod backend_common;

use backend_common::{B, Rng, attrs, codes, ints};
use qcc::backend::Target;
use qcc_ir::{Attr, ElemType, IntType, Op, QuantParams, QuantType, ValueId};

fn qt(bits: u8, signed: bool, params: QuantParams) -> ElemType {
    ElemType::Quant(QuantType {
        storage: IntType::new(bits, signed),
        narrow: false,
        pow2: false,
        params,
    })
}

fn per_tensor(bits: u8, signed: bool, zp: i32) -> ElemType {
    qt(
        bits,
        signed,
        QuantParams::PerTensor {
            scale: 0.05,
            zero_point: zp,
        },
    )
}

/// Requantize (per channel along `axis`) to i8, then dequantize to f32.
fn finish(b: &mut B, r: &mut Rng, y: ValueId, c: usize, axis: i64) -> ValueId {
    let mult: Vec<i64> = (0..c).map(|_| r.i(1 << 28, 1 << 30)).collect();
    let shift: Vec<i64> = (0..c).map(|_| r.i(33, 38)).collect();
    let q = b.node(
        Op::Requantize,
        &[y],
        attrs(&[
            ("multiplier", ints(&mult)),
            ("shift", ints(&shift)),
            ("axis", Attr::Int(axis)),
        ]),
        per_tensor(8, true, -3),
    );
    b.f(Op::Dequantize, &[q], attrs(&[]))
}

/// Weights of `bits` bits along `axis` (`c` channels): per-channel zero points small
/// enough that `w - zw` fits i8, codes over the whole range.
fn weights(r: &mut Rng, bits: u8, axis: usize, c: usize) -> ElemType {
    let zp = |r: &mut Rng| if bits == 8 { 0 } else { r.i(-2, 2) as i32 };
    qt(
        bits,
        true,
        QuantParams::PerAxis {
            axis,
            scales: vec![0.02; c],
            zero_points: (0..c).map(|_| zp(r)).collect(),
        },
    )
}

/// A model of several layers on f32 inputs (quantized in the model).
fn model(seed: u64) -> B {
    let mut r = Rng(seed);
    let mut b = B::new();
    for (bits, asigned, group, pads) in [
        (8u8, false, 1usize, [1i64, 1, 1, 1]),
        (8, true, 2, [0, 1, 2, 0]),
        (4, false, 1, [1, 0, 1, 2]),
    ] {
        let (cg, mg) = (r.i(3, 20) as usize, r.i(2, 9) as usize);
        let (c, m) = (cg * group, mg * group);
        let (h, w) = (r.i(3, 9) as usize, r.i(3, 11) as usize);
        let xd = r.fs(c * h * w, -3.0, 3.0);
        let x = b.input_f32(&[1, c, h, w], xd);
        let zx = if asigned { r.i(-128, 127) } else { r.i(0, 255) } as i32;
        let xq = b.node(Op::Quantize, &[x], attrs(&[]), per_tensor(8, asigned, zx));
        let we = weights(&mut r, bits, 0, m);
        let wd = codes(&mut r, &we, m * cg * 9);
        let wt = b.const_int(we, &[m, cg, 3, 3], wd);
        let bd = r.is(m, -5000, 5000);
        let bias = b.const_int(ElemType::I32, &[m], bd);
        let s = r.i(1, 2);
        let y = b.node(
            Op::Conv2dInt,
            &[xq, wt, bias],
            attrs(&[
                ("pads", ints(&pads)),
                ("strides", ints(&[s, 1])),
                ("group", Attr::Int(group as i64)),
            ]),
            ElemType::I32,
        );
        let y = finish(&mut b, &mut r, y, m, 1);
        b.output(y);
    }
    for (bits, asigned, batched) in [(8u8, true, false), (8, false, true), (6, false, false)] {
        let (m, k, n) = (
            r.i(1, 7) as usize,
            r.i(5, 300) as usize,
            r.i(1, 21) as usize,
        );
        let asz = if batched { vec![2, m, k] } else { vec![m, k] };
        let ad = r.fs(asz.iter().product(), -3.0, 3.0);
        let a = b.input_f32(&asz, ad);
        let za = if asigned { r.i(-128, 127) } else { r.i(0, 255) } as i32;
        let aq = b.node(Op::Quantize, &[a], attrs(&[]), per_tensor(8, asigned, za));
        let we = weights(&mut r, bits, 1, n);
        let wd = codes(&mut r, &we, k * n);
        let wt = b.const_int(we, &[k, n], wd);
        let z = b.node(Op::MatMulInt, &[aq, wt], attrs(&[]), ElemType::I32);
        let z = finish(&mut b, &mut r, z, n, if batched { 2 } else { 1 });
        b.output(z);
    }
    b
}

/// The integer layers take `sdot` with the extension (and the instruction is in the
/// code), and never without it.
#[test]
fn sdot_in_the_code() {
    let b = model(3);
    for (cpu, want) in [("baseline+dotprod", true), ("baseline", false)] {
        let t = Target::new("aarch64-unknown-linux-gnu", cpu).unwrap();
        let asm = qcc::backend::emit_asm(&b.m, "t", &t).unwrap();
        let c = qcc::backend::compile_object(&b.m, "t", &t).unwrap();
        for l in &c.report.layers {
            if l.op.starts_with("conv2d_int") || l.op.starts_with("matmul_int") {
                assert_eq!(l.kernel.contains("sdot"), want, "{cpu}: {}", l.kernel);
            }
        }
        assert_eq!(asm.contains("sdot v"), want, "{cpu}");
    }
    let e = Target::new("x86_64-unknown-linux-gnu", "baseline+dotprod").unwrap_err();
    assert!(e.to_string().contains("aarch64"), "{e}");
    let e = Target::new("aarch64-unknown-linux-gnu", "baseline+sve9").unwrap_err();
    assert!(
        e.to_string().contains("sve9") && e.to_string().contains("+dotprod"),
        "{e}"
    );
}

/// The objects print what the interpreter computes.
#[test]
fn sdot_objects_run_under_qemu() {
    if !backend_common::have_aarch64_tools() {
        return;
    }
    for seed in [1u64, 2, 5] {
        let b = model(seed);
        let want: Vec<f32> = qcc_ir::interp::run(&b.m, &b.inputs)
            .unwrap()
            .iter()
            .flat_map(|t| t.as_f32().unwrap().to_vec())
            .collect();
        let (report, got) = backend_common::run_aarch64_cpu(&b, "sdot", "baseline+dotprod");
        assert!(
            report.layers.iter().any(|l| l.kernel.contains("sdot")),
            "{report}"
        );
        assert_eq!(
            got, want,
            "seed {seed}: aarch64 (sdot) differs from the interpreter"
        );
    }
}
