//! Throughput of the backend's f32 and int8 GEMM/conv kernels at M = N = 256, K = 1024,
//! and of the 1-bit XNOR-popcount and 2..4-bit bit-serial kernels at K = 4096 (single
//! thread, JIT on this machine), as multiples of docs/kernels.md's ceilings of the 128-bit
//! kernels on the project's first machine (fp32 ~18, int8 ~20, 1-bit ~156, 2x2-bit ~47
//! G MAC/s; for other bits the popcount-bound ceiling scales as 47 * 4 / (wbits *
//! abits)). The wide tiles' percentages of the peak measured on this CPU come from the
//! `QCC_BENCH_ONLY` modes below.
//!
//!     cargo run -p qcc --example bench_kernels [-- ITERS]
//!     QCC_BENCH_ONLY=wide cargo run --release -p qcc --example bench_kernels
//!     cargo run --release -p qcc --example bench_kernels -- --cost-table [ITERS]
//!
//! Every case is checked against the interpreter once before it is timed. The
//! `--cost-table` mode measures the reference shapes of `qcc::backend::costs` (f32 GEMM,
//! int8 `pmaddwd`, int8 with bit-packed 2..7-bit weights, 1-bit XNOR) on the host's
//! `native` and `baseline` feature sets, and the `pmaddubsw` kernel (native only: it
//! needs SSSE3) at 2..8-bit weights with 8-bit activations (K = 1024) and with 4- and
//! 2-bit ones (K = 4096, the bit-serial rows' shape), and prints them as that table's
//! rows. Each strategy is measured with the others it competes with
//! disabled (`costs::without`), so that the table being measured does not decide which
//! kernel runs.
//!
//! The f32 tiles (`QCC_BENCH_ONLY=fwide`, also at the end of `--cost-table`) are
//! measured the same way against the peak of `vfmadd231ps` zmm / ymm.
//!
//! The wide tiles (`QCC_BENCH_ONLY=wide`, also printed at the end of `--cost-table`)
//! are measured for each x86-64 tier the host has, against the peak of their
//! instruction mix measured on the same CPU (`qcc::backend::measure_peak`); the CPU
//! model and the detected tier are printed with them.

use std::collections::BTreeMap;

use qcc::backend::costs::{self, Strategy};
use qcc::backend::{JitModel, Target};
use qcc_ir::interp::{self, Tensor};
use qcc_ir::{
    Attr, Attrs, ConstData, ElemType, IntType, Module, Op, QuantType, TensorType, ValueId,
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn i(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }
}

fn node(
    m: &mut Module,
    op: Op,
    ops: &[ValueId],
    a: BTreeMap<String, Attr>,
    elem: ElemType,
) -> ValueId {
    let tys: Vec<TensorType> = ops.iter().map(|&o| m.ty(o).clone()).collect();
    let refs: Vec<&TensorType> = tys.iter().collect();
    let ty = qcc_ir::typing::infer(
        op,
        &Attrs::new(op, &a),
        &refs,
        &TensorType::new(elem, vec![]),
    )
    .expect("type");
    let name = m.fresh_name("v");
    m.add_node(op, ops.to_vec(), a, name, ty)
}

fn q(bits: u8, signed: bool, zp: i32) -> ElemType {
    ElemType::Quant(QuantType::per_tensor(IntType::new(bits, signed), 0.05, zp))
}

fn bench(label: &str, m: &Module, inputs: &[Tensor], macs: u64, iters: usize, ceiling: f64) {
    bench_on(label, m, inputs, macs, iters, ceiling, &Target::host());
}

/// [`bench`] for a feature set of the host (`Target::new(host triple, cpu)`).
fn bench_on(
    label: &str,
    m: &Module,
    inputs: &[Tensor],
    macs: u64,
    iters: usize,
    ceiling: f64,
    target: &Target,
) {
    let want = interp::run(m, inputs).expect("interp");
    let jit = JitModel::with_target(m, target).expect("compile");
    let (got, best) = jit.run_timed(inputs, iters).expect("run");
    let ok = match (&want[0].data, &got[0].data) {
        (interp::TensorData::Int(a), interp::TensorData::Int(b)) => a == b,
        (interp::TensorData::F32(a), interp::TensorData::F32(b)) => a
            .iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-3 * (1.0 + x.abs())),
        _ => false,
    };
    let gmacs = macs as f64 / best.as_secs_f64() / 1e9;
    println!(
        "{label:<44} {:>8.3} ms  {gmacs:>6.2} G MAC/s  ({:>5.2}x the 128-bit ceiling ~{ceiling:.0})  {}  [{}]",
        best.as_secs_f64() * 1e3,
        gmacs / ceiling,
        if ok { "matches interp" } else { "MISMATCH" },
        jit.report().layers[0].kernel
    );
}

/// Best-of-`iters` G MAC/s of `m` on `target`, after checking it against the
/// interpreter; None (with a message) on a mismatch.
fn measure(m: &Module, inputs: &[Tensor], macs: u64, iters: usize, target: &Target) -> Option<f64> {
    let want = interp::run(m, inputs).expect("interp");
    let jit = JitModel::with_target(m, target).expect("compile");
    let (got, best) = jit.run_timed(inputs, iters).expect("run");
    let ok = match (&want[0].data, &got[0].data) {
        (interp::TensorData::Int(a), interp::TensorData::Int(b)) => a == b,
        (interp::TensorData::F32(a), interp::TensorData::F32(b)) => a
            .iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-3 * (1.0 + x.abs())),
        _ => false,
    };
    if !ok {
        eprintln!("{}: MISMATCH against the interpreter", m.name);
        return None;
    }
    Some(macs as f64 / best.as_secs_f64() / 1e9)
}

/// `[M, K] x [K, N]` with constant weights: f32 (`wbits` 32), integer with u8
/// activations and signed `wbits`-bit weights, or bipolar (`wbits` 1).
fn matmul_case(r: &mut Rng, (m_, n_, k_): (usize, usize, usize), wbits: u8) -> (Module, Tensor) {
    let mut m = Module::new(format!("matmul_w{wbits}"));
    let (xe, we, out) = match wbits {
        32 => (ElemType::F32, ElemType::F32, ElemType::F32),
        1 => (ElemType::Bipolar, ElemType::Bipolar, ElemType::I32),
        b => (q(8, false, 128), q(b, true, 0), ElemType::I32),
    };
    let x = m.add_input("x", TensorType::new(xe.clone(), vec![m_, k_]));
    let half = if (2..=8).contains(&wbits) {
        1i64 << (wbits - 1)
    } else {
        1
    };
    let wdata = match wbits {
        32 => ConstData::F32((0..k_ * n_).map(|_| r.f()).collect()),
        1 => ConstData::Int(
            (0..k_ * n_)
                .map(|_| if r.next() & 1 == 1 { -1 } else { 1 })
                .collect(),
        ),
        _ => ConstData::Int((0..k_ * n_).map(|_| r.i(-half + 1, half - 1)).collect()),
    };
    let w = m.add_const("w", TensorType::new(we, vec![k_, n_]), wdata);
    let op = if wbits == 32 { Op::Gemm } else { Op::MatMulInt };
    let y = node(&mut m, op, &[x, w], BTreeMap::new(), out);
    m.outputs.push(y);
    let xin = match wbits {
        32 => Tensor::f32(vec![m_, k_], (0..m_ * k_).map(|_| r.f()).collect()),
        1 => Tensor::int(
            vec![m_, k_],
            (0..m_ * k_)
                .map(|_| if r.next() & 1 == 1 { -1 } else { 1 })
                .collect(),
        ),
        _ => Tensor::int(vec![m_, k_], (0..m_ * k_).map(|_| r.i(0, 255)).collect()),
    };
    (m, xin)
}

/// `[M, K] x [K, N]` for the `pmaddubsw` kernel: `abits`-bit unsigned activations
/// (zero point 1) times constant signed `wbits`-bit weights; 8-bit weights within +-64
/// (the largest that pass its saturation check with 8-bit activations).
fn maddubs_case(
    r: &mut Rng,
    (m_, n_, k_): (usize, usize, usize),
    wbits: u8,
    abits: u8,
) -> (Module, Tensor) {
    let mut m = Module::new(format!("matmul_maddubs_w{wbits}a{abits}"));
    let x = m.add_input("x", TensorType::new(q(abits, false, 1), vec![m_, k_]));
    let half = if wbits == 8 { 65 } else { 1i64 << (wbits - 1) };
    let wdata = ConstData::Int((0..k_ * n_).map(|_| r.i(-half + 1, half - 1)).collect());
    let w = m.add_const("w", TensorType::new(q(wbits, true, 0), vec![k_, n_]), wdata);
    let y = node(
        &mut m,
        Op::MatMulInt,
        &[x, w],
        BTreeMap::new(),
        ElemType::I32,
    );
    m.outputs.push(y);
    let xin = Tensor::int(
        vec![m_, k_],
        (0..m_ * k_).map(|_| r.i(0, (1 << abits) - 1)).collect(),
    );
    (m, xin)
}

/// The integer strategies `pmaddubsw` competes with.
const NOT_MADDUBS: [Strategy; 3] = [
    Strategy::Int8Pmaddwd,
    Strategy::Int8PackedW,
    Strategy::BitSerial,
];

/// What the 128-bit rows are measured without: `pmaddubsw` (its own rows) and the
/// assembled wide tiles.
const NOT_128: [Strategy; 8] = [
    Strategy::Maddubs,
    Strategy::DotVnni,
    Strategy::DotAvx2,
    Strategy::DotAvx2Wide,
    Strategy::F32Zmm,
    Strategy::F32Ymm,
    Strategy::XnorZmm,
    Strategy::XnorYmm,
];

/// `--cost-table`: the rows of `qcc::backend::costs::TABLE` measured on this machine.
fn cost_table(iters: usize) {
    let baseline = Target::new(&target_lexicon::Triple::host().to_string(), "baseline")
        .expect("baseline target");
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let cases: Vec<(&str, u8, u32, u32)> = std::iter::once(("F32Gemm", 32u8, 32u32, 32u32))
        .chain(std::iter::once(("Int8Pmaddwd", 8, 8, 8)))
        .chain((2..8).map(|b| ("Int8PackedW", b, b as u32, 8)))
        .chain(std::iter::once(("Xnor", 1, 1, 1)))
        .collect();
    println!("    // Measured rows (bench_kernels --cost-table, {iters} iterations).");
    for (tname, target) in [("Native", Target::host()), ("Base", baseline)] {
        for &(strategy, wbits, wb, ab) in &cases {
            let k = if wbits == 1 { 4096 } else { 1024 };
            let (m, xin) = matmul_case(&mut r, (256, 256, k), wbits);
            let macs = (256 * 256 * k) as u64;
            // The 128-bit kernels: the assembled tiles of the host's tier kept out.
            let g = costs::without(&NOT_128, || measure(&m, &[xin], macs, iters, &target));
            match g {
                Some(g) => println!("    row({tname}, {strategy}, {wb}, {ab}, {g:.2}, Measured),"),
                None => println!("    // {tname} {strategy} {wb}x{ab}: mismatch, not measured"),
            }
        }
    }
    // pmaddubsw: 8-bit activations at the int8 reference shape (K = 1024), narrower
    // ones at the bit-serial kernel's (K = 4096), so that each row compares with the
    // rows it competes with.
    let cases: Vec<(u8, u8)> = (2..=8)
        .map(|w| (w, 8))
        .chain((2..=8).map(|w| (w, 4)))
        .chain((2..=4).map(|w| (w, 2)))
        .collect();
    for (wb, ab) in cases {
        let k = if ab == 8 { 1024 } else { 4096 };
        let (m, xin) = maddubs_case(&mut r, (256, 256, k), wb, ab);
        let macs = (256 * 256 * k) as u64;
        let g = costs::without(&NOT_MADDUBS, || {
            let jit = JitModel::new(&m).expect("compile");
            let kernel = &jit.report().layers[0].kernel;
            assert!(kernel.contains("pmaddubsw"), "{kernel}");
            measure(&m, std::slice::from_ref(&xin), macs, iters, &Target::host())
        });
        match g {
            Some(g) => println!("    row(Native, Maddubs, {wb}, {ab}, {g:.2}, Measured),"),
            None => println!("    // Native Maddubs {wb}x{ab}: mismatch, not measured"),
        }
    }
}

/// The CPU's model name (Linux `/proc/cpuinfo`), for every printed figure.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The assembled wide tiles (`kernels::dot`) against the measured peak of their
/// instruction mix, for each tier the host has: a matrix product at M = N = 256,
/// K = 1024 with 8-, 4- and 2-bit weights, and ResNet-20's first-stage convolution
/// (16 channels, 3x3, 32x32, K = 144). Returns the rows for the cost table.
fn wide(iters: usize) -> Vec<String> {
    use qcc::backend::{PeakMix, Tier, measure_peak};
    let host = target_lexicon::Triple::host().to_string();
    println!("CPU: {}; detected tier: {}", cpu_model(), Tier::host());
    let mut rows = Vec::new();
    let mut r = Rng(0x5eed);
    let tiers = [
        (
            "x86-64-v4+vnni",
            "Vnni",
            "DotVnni",
            PeakMix::VpdpbusdZmm,
            false,
        ),
        ("x86-64-v3", "Avx2", "DotAvx2", PeakMix::VpmaddubswYmm, true),
        // 8-bit weights anywhere in i8: the i16-widening AVX2 tile.
        (
            "x86-64-v3",
            "Avx2",
            "DotAvx2Wide",
            PeakMix::VpmaddwdYmm,
            false,
        ),
    ];
    for (cpu, tname, strategy, mix, small) in tiers {
        // Best of many short runs: the machine is shared, and the best is the peak.
        let Some(peak) = measure_peak(mix, 2_000_000, 60) else {
            println!("tier {cpu}: skipped (this CPU does not have it)");
            continue;
        };
        let peak = peak.max(measure_peak(mix, 2_000_000, 60).unwrap_or(0.0));
        println!("tier {cpu}: peak of {} {peak:.1} G MAC/s", mix.name());
        let target = Target::new(&host, cpu).expect("tier target");
        let bits: &[u8] = if strategy == "DotAvx2Wide" {
            &[8]
        } else {
            &[8, 4, 2]
        };
        for &wb in bits {
            // 8-bit weights: anywhere in i8 with VNNI, within +-64 (the pair check)
            // for AVX2.
            let (m, xin) = if small || wb < 8 {
                maddubs_case(&mut r, (256, 256, 1024), wb, 8)
            } else {
                matmul_case(&mut r, (256, 256, 1024), 8)
            };
            let macs = 256 * 256 * 1024u64;
            let jit = JitModel::with_target(&m, &target).expect("compile");
            let kernel = jit.report().layers[0].kernel.clone();
            match measure(&m, std::slice::from_ref(&xin), macs, iters, &target) {
                Some(g) => {
                    println!(
                        "  matmul u8 x w{wb} 256x256x1024  {g:>7.2} G MAC/s  {:>3.0}% of peak  [{kernel}]",
                        100.0 * g / peak
                    );
                    rows.push(format!(
                        "    row({tname}, {strategy}, {wb}, 8, {g:.2}, Measured),"
                    ));
                }
                None => println!("  matmul w{wb}: MISMATCH"),
            }
        }
        // ResNet-20 stage 1: 16 -> 16 channels, 3x3 pad 1, 32x32.
        let mut m = Module::new("conv_stage1");
        let x = m.add_input("x", TensorType::new(q(8, false, 3), vec![1, 16, 32, 32]));
        let half = if small { 64 } else { 127 };
        let w = m.add_const(
            "w",
            TensorType::new(q(8, true, 0), vec![16, 16, 3, 3]),
            ConstData::Int((0..16 * 144).map(|_| r.i(-half, half)).collect()),
        );
        let mut a = BTreeMap::new();
        a.insert("pads".to_string(), Attr::Ints(vec![1; 4]));
        let y = node(&mut m, Op::Conv2dInt, &[x, w], a, ElemType::I32);
        m.outputs.push(y);
        let xin = Tensor::int(
            vec![1, 16, 32, 32],
            (0..16 * 1024).map(|_| r.i(0, 255)).collect(),
        );
        let macs = 16 * 1024 * 144u64;
        // The direct convolution (the default where it applies), then im2col.
        for direct in [true, false] {
            qcc::backend::direct_conv(direct, || {
                let jit = JitModel::with_target(&m, &target).expect("compile");
                let kernel = jit.report().layers[0].kernel.clone();
                if let Some(g) = measure(&m, std::slice::from_ref(&xin), macs, iters * 10, &target)
                {
                    println!(
                        "  conv 16->16 3x3 32x32 (K=144)     {g:>7.2} G MAC/s  {:>3.0}% of peak  [{kernel}]",
                        100.0 * g / peak
                    );
                }
            });
        }
    }
    rows
}

/// A binary convolution `[1, c, hw, hw] * [m, c, 3, 3]`, pad 1, i32 sums, an input and
/// its MACs.
fn bconv_case(r: &mut Rng, c: usize, m_: usize, hw: usize) -> (Module, Tensor, u64) {
    let sign = |r: &mut Rng| if r.next() & 1 == 1 { -1 } else { 1 };
    let mut m = Module::new("conv_b1");
    let x = m.add_input("x", TensorType::new(ElemType::Bipolar, vec![1, c, hw, hw]));
    let w = m.add_const(
        "w",
        TensorType::new(ElemType::Bipolar, vec![m_, c, 3, 3]),
        ConstData::Int((0..m_ * c * 9).map(|_| sign(r)).collect()),
    );
    let mut a = BTreeMap::new();
    a.insert("pads".to_string(), Attr::Ints(vec![1; 4]));
    let y = node(&mut m, Op::Conv2dInt, &[x, w], a, ElemType::I32);
    m.outputs.push(y);
    let xin = Tensor::int(
        vec![1, c, hw, hw],
        (0..c * hw * hw).map(|_| sign(r)).collect(),
    );
    (m, xin, (m_ * hw * hw * c * 9) as u64)
}

/// The binary peak a popcount tier is judged by, printed: the best of two measurements
/// of its mix; for the 128-bit tile (`mix` None) the widest peak the host has (`zmm`,
/// else `ymm`'s). None (printed as skipped) when the host lacks the tier.
fn binary_peak(
    cpu: &str,
    mix: Option<qcc::backend::PeakMix>,
    zmm: Option<f64>,
    ymm: qcc::backend::PeakMix,
) -> Option<f64> {
    use qcc::backend::measure_peak;
    match mix {
        Some(mx) => match measure_peak(mx, 2_000_000, 60) {
            Some(p) => {
                let p = p.max(measure_peak(mx, 2_000_000, 60).unwrap_or(0.0));
                println!("tier {cpu}: peak of {} {p:.1} G binary MAC/s", mx.name());
                Some(p)
            }
            None => {
                println!("tier {cpu}: skipped (this CPU does not have it)");
                None
            }
        },
        None => {
            let p = zmm.or_else(|| measure_peak(ymm, 2_000_000, 60));
            println!("tier {cpu}: the 128-bit Cranelift tile (percentages of the widest peak)");
            Some(p.unwrap_or(f64::NAN))
        }
    }
}

/// The assembled 1-bit tiles (`kernels::xnor`) against the measured peak of their
/// instruction mix, for each tier the host has, with the other 1-bit kernels kept out:
/// a matrix product at M = N = 256, K = 4096 (the cost table's reference shape), and
/// the binary 3x3 convolutions of ResNet-20's first stage (16 channels, 32x32) and of
/// Bi-Real's first and last stages (64 channels at 56x56, 512 at 7x7). The 128-bit
/// Cranelift tile is measured alongside. Returns the rows for the cost table.
fn xwide(iters: usize) -> Vec<String> {
    use qcc::backend::{PeakMix, Tier, measure_peak};
    let host = target_lexicon::Triple::host().to_string();
    println!("CPU: {}; detected tier: {}", cpu_model(), Tier::host());
    let mut rows = Vec::new();
    let mut r = Rng(0xb1);
    let dots = [Strategy::DotVnni, Strategy::DotAvx2, Strategy::DotAvx2Wide];
    let not = |keep: Strategy| -> Vec<Strategy> {
        [Strategy::Xnor, Strategy::XnorZmm, Strategy::XnorYmm]
            .into_iter()
            .filter(|&s| s != keep)
            .chain(dots)
            .collect()
    };
    let tiers = [
        (
            "x86-64-v4+vnni+vpopcntdq",
            "VnniPopcnt",
            Strategy::XnorZmm,
            Some(PeakMix::XnorZmm),
        ),
        (
            "x86-64-v4+vpopcntdq",
            "Popcnt",
            Strategy::XnorZmm,
            Some(PeakMix::XnorZmm),
        ),
        (
            "x86-64-v3",
            "Avx2",
            Strategy::XnorYmm,
            Some(PeakMix::XnorYmm),
        ),
        ("native", "", Strategy::Xnor, None),
    ];
    let zmm_peak = measure_peak(PeakMix::XnorZmm, 2_000_000, 60);
    for (cpu, tname, strategy, mix) in tiers {
        let Some(peak) = binary_peak(cpu, mix, zmm_peak, PeakMix::XnorYmm) else {
            continue;
        };
        let target = Target::new(&host, cpu).expect("tier target");
        let disabled = not(strategy);
        let (m, xin) = matmul_case(&mut r, (256, 256, 4096), 1);
        let macs = 256 * 256 * 4096u64;
        let run = |m: &Module, xin: &Tensor, macs: u64, it: usize| {
            costs::without(&disabled, || {
                let jit = JitModel::with_target(m, &target).expect("compile");
                let kernel = jit.report().layers[0].kernel.clone();
                (
                    measure(m, std::slice::from_ref(xin), macs, it, &target),
                    kernel,
                )
            })
        };
        match run(&m, &xin, macs, iters) {
            (Some(g), kernel) => {
                println!(
                    "  matmul b1 256x256x4096           {g:>8.2} G MAC/s  {:>3.0}% of peak  [{kernel}]",
                    100.0 * g / peak
                );
                if !tname.is_empty() {
                    rows.push(format!(
                        "    row({tname}, {strategy:?}, 1, 1, {g:.2}, Measured),"
                    ));
                }
            }
            (None, _) => println!("  matmul b1: MISMATCH"),
        }
        for (label, c, m_, hw, it) in [
            ("conv b1 16->16 3x3 32x32        ", 16, 16, 32, iters * 20),
            ("conv b1 64->64 3x3 56x56        ", 64, 64, 56, iters * 2),
            ("conv b1 512->512 3x3 7x7        ", 512, 512, 7, iters * 2),
        ] {
            let (m, xin, macs) = bconv_case(&mut r, c, m_, hw);
            match run(&m, &xin, macs, it) {
                (Some(g), kernel) => println!(
                    "  {label} {g:>8.2} G MAC/s  {:>3.0}% of peak  [{kernel}]",
                    100.0 * g / peak
                ),
                (None, _) => println!("  {label}: MISMATCH"),
            }
        }
    }
    rows
}

/// A bit-serial matrix product: u`ab` activations (zero point 1) `[m, k]` times
/// constant i`wb` weights `[k, n]` -> i32, and an input.
fn bs_matmul_case(
    r: &mut Rng,
    (m_, n_, k_): (usize, usize, usize),
    wb: u8,
    ab: u8,
) -> (Module, Tensor) {
    let mut m = Module::new("matmul_bitserial");
    let x = m.add_input("x", TensorType::new(q(ab, false, 1), vec![m_, k_]));
    let wq = q(wb, true, 0);
    let (lo, hi) = wq.code_range().expect("codes");
    let w = m.add_const(
        "w",
        TensorType::new(wq, vec![k_, n_]),
        ConstData::Int((0..k_ * n_).map(|_| r.i(lo, hi)).collect()),
    );
    let y = node(
        &mut m,
        Op::MatMulInt,
        &[x, w],
        BTreeMap::new(),
        ElemType::I32,
    );
    m.outputs.push(y);
    let xin = Tensor::int(
        vec![m_, k_],
        (0..m_ * k_).map(|_| r.i(0, (1 << ab) - 1)).collect(),
    );
    (m, xin)
}

/// A bit-serial 3x3 convolution (pad 1) `[1, c, hw, hw] * [m, c, 3, 3]`, u`ab`
/// activations (zero point 1), i`wb` weights, requantized to u`ab`, and an input.
fn bs_conv_case(
    r: &mut Rng,
    c: usize,
    m_: usize,
    hw: usize,
    wb: u8,
    ab: u8,
) -> (Module, Tensor, u64) {
    let mut m = Module::new("conv_bitserial");
    let x = m.add_input("x", TensorType::new(q(ab, false, 1), vec![1, c, hw, hw]));
    let wq = q(wb, true, 0);
    let (lo, hi) = wq.code_range().expect("codes");
    let w = m.add_const(
        "w",
        TensorType::new(wq, vec![m_, c, 3, 3]),
        ConstData::Int((0..m_ * c * 9).map(|_| r.i(lo, hi)).collect()),
    );
    let mut a = BTreeMap::new();
    a.insert("pads".to_string(), Attr::Ints(vec![1; 4]));
    let y = node(&mut m, Op::Conv2dInt, &[x, w], a, ElemType::I32);
    let mut ra = BTreeMap::new();
    ra.insert("multiplier".to_string(), Attr::Ints(vec![1 << 30]));
    ra.insert("shift".to_string(), Attr::Ints(vec![36]));
    let z = node(&mut m, Op::Requantize, &[y], ra, q(ab, false, 1));
    m.outputs.push(z);
    let xin = Tensor::int(
        vec![1, c, hw, hw],
        (0..c * hw * hw).map(|_| r.i(0, (1 << ab) - 1)).collect(),
    );
    (m, xin, (m_ * c * 9 * hw * hw) as u64)
}

/// The assembled bit-serial tiles (`kernels::xnor` with `BsPlanes`) against the
/// measured peak of their instruction mix (`vpandq` + `vpopcntq` zmm, the `vpand`
/// nibble lookup on ymm), for each tier the host has, with every other kernel of these
/// layers kept out: a `wb` x `ab`-bit MAC costs `wb * ab` bit products, so the peak in
/// MACs is the mix's binary peak over `wb * ab`. Matrix products at M = N = 256,
/// K = 4096 (the cost table's shape for the bit-serial rows) for each combination the
/// tier's registers fit, and 2x2-bit 3x3 convolutions: ResNet-20's first stage (16
/// channels, 32x32) and wider layers. The 128-bit Cranelift tile is measured alongside.
/// Returns the rows for the cost table.
fn bswide(iters: usize) -> Vec<String> {
    use qcc::backend::{PeakMix, Tier, measure_peak};
    let host = target_lexicon::Triple::host().to_string();
    println!("CPU: {}; detected tier: {}", cpu_model(), Tier::host());
    let mut rows = Vec::new();
    let mut r = Rng(0xb5);
    let others = [
        Strategy::Int8PackedW,
        Strategy::Int8Pmaddwd,
        Strategy::Maddubs,
        Strategy::DotVnni,
        Strategy::DotAvx2,
        Strategy::DotAvx2Wide,
    ];
    let not = |keep: Strategy| -> Vec<Strategy> {
        [
            Strategy::BitSerial,
            Strategy::BitSerialZmm,
            Strategy::BitSerialYmm,
        ]
        .into_iter()
        .filter(|&s| s != keep)
        .chain(others)
        .collect()
    };
    const ZMM: &[(u8, u8)] = &[(2, 2), (3, 2), (2, 3), (4, 2), (2, 4), (3, 3), (4, 4)];
    const YMM: &[(u8, u8)] = &[(2, 2), (3, 2), (2, 3), (4, 2), (2, 4), (3, 3)];
    const NARROW: &[(u8, u8)] = &[(2, 2), (3, 2), (2, 3), (4, 2), (2, 4)];
    let tiers = [
        (
            "x86-64-v4+vnni+vpopcntdq",
            "VnniPopcnt",
            Strategy::BitSerialZmm,
            Some(PeakMix::AndZmm),
            ZMM,
        ),
        (
            "x86-64-v4+vpopcntdq",
            "Popcnt",
            Strategy::BitSerialZmm,
            Some(PeakMix::AndZmm),
            ZMM,
        ),
        (
            "x86-64-v3",
            "Avx2",
            Strategy::BitSerialYmm,
            Some(PeakMix::AndYmm),
            YMM,
        ),
        ("native", "", Strategy::BitSerial, None, NARROW),
    ];
    let zmm_peak = measure_peak(PeakMix::AndZmm, 2_000_000, 60);
    for (cpu, tname, strategy, mix, combos) in tiers {
        let Some(peak) = binary_peak(cpu, mix, zmm_peak, PeakMix::AndYmm) else {
            continue;
        };
        let target = Target::new(&host, cpu).expect("tier target");
        let disabled = not(strategy);
        let run = |m: &Module, xin: &Tensor, macs: u64, it: usize| {
            costs::without(&disabled, || {
                let jit = JitModel::with_target(m, &target).expect("compile");
                let kernel = jit.report().layers[0].kernel.clone();
                (
                    measure(m, std::slice::from_ref(xin), macs, it, &target),
                    kernel,
                )
            })
        };
        for &(wb, ab) in combos {
            let (m, xin) = bs_matmul_case(&mut r, (256, 256, 4096), wb, ab);
            let macs = 256 * 256 * 4096u64;
            let bits = f64::from(wb * ab);
            match run(&m, &xin, macs, iters) {
                (Some(g), kernel) => {
                    println!(
                        "  matmul u{ab} x i{wb} 256x256x4096    {g:>8.2} G MAC/s  {:>3.0}% of peak / {bits}  [{kernel}]",
                        100.0 * g * bits / peak
                    );
                    if !tname.is_empty() {
                        rows.push(format!(
                            "    row({tname}, {strategy:?}, {wb}, {ab}, {g:.2}, Measured),"
                        ));
                    }
                }
                (None, _) => println!("  matmul u{ab} x i{wb}: MISMATCH"),
            }
        }
        for (label, c, m_, hw, it) in [
            ("conv u2 x i2 16->16 3x3 32x32    ", 16, 16, 32, iters * 20),
            ("conv u2 x i2 64->64 3x3 16x16    ", 64, 64, 16, iters * 4),
            ("conv u2 x i2 512->256 3x3 16x16  ", 512, 256, 16, iters),
        ] {
            let (m, xin, macs) = bs_conv_case(&mut r, c, m_, hw, 2, 2);
            match run(&m, &xin, macs, it) {
                (Some(g), kernel) => println!(
                    "  {label} {g:>8.2} G MAC/s  {:>3.0}% of peak / 4  [{kernel}]",
                    100.0 * g * 4.0 / peak
                ),
                (None, _) => println!("  {label}: MISMATCH"),
            }
        }
    }
    rows
}

/// An f32 convolution `[1, c, hw, hw] * [m, c, k, k]` (pad k / 2) and an input.
fn conv_f32_case(r: &mut Rng, c: usize, m_: usize, hw: usize, k: usize) -> (Module, Tensor, u64) {
    let mut m = Module::new("conv_f32");
    let x = m.add_input("x", TensorType::f32(vec![1, c, hw, hw]));
    let w = m.add_const(
        "w",
        TensorType::f32(vec![m_, c, k, k]),
        ConstData::F32((0..m_ * c * k * k).map(|_| r.f() * 0.1).collect()),
    );
    let mut a = BTreeMap::new();
    a.insert("pads".to_string(), Attr::Ints(vec![(k / 2) as i64; 4]));
    let y = node(&mut m, Op::Conv2d, &[x, w], a, ElemType::F32);
    m.outputs.push(y);
    let xin = Tensor::f32(
        vec![1, c, hw, hw],
        (0..c * hw * hw).map(|_| r.f()).collect(),
    );
    (m, xin, (m_ * c * k * k * hw * hw) as u64)
}

/// The assembled f32 tiles (`kernels::fma`) against the measured peak of
/// `vfmadd231ps` on the tier's registers, for each tier the host has: the GEMM at
/// M = N = 256, K = 1024 (a pointwise convolution: 256 output channels, 1024 input
/// channels, 16x16 pixels), and ResNet-20's Winograd convolutions (effective rate:
/// the direct convolution's MACs over the time). The 128-bit kernel (`x86-64-v2`) is
/// printed beside them. Returns the rows for the cost table.
fn fwide(iters: usize) -> Vec<String> {
    use qcc::backend::{PeakMix, Tier, measure_peak};
    let host = target_lexicon::Triple::host().to_string();
    println!("CPU: {}; detected tier: {}", cpu_model(), Tier::host());
    let mut rows = Vec::new();
    let mut r = Rng(0xf32);
    let tiers = [
        (
            "x86-64-v4+vnni",
            "Vnni",
            "F32Zmm",
            Some(PeakMix::VfmaddpsZmm),
        ),
        ("x86-64-v3", "Avx2", "F32Ymm", Some(PeakMix::VfmaddpsYmm)),
        ("x86-64-v2", "", "", None),
    ];
    let zmm_peak = measure_peak(PeakMix::VfmaddpsZmm, 1_000_000, 200);
    for (cpu, tname, strategy, mix) in tiers {
        let peak = match mix {
            Some(mx) => match measure_peak(mx, 1_000_000, 200) {
                Some(p) => {
                    println!("tier {cpu}: peak of {} {p:.1} G MAC/s", mx.name());
                    p
                }
                None => {
                    println!("tier {cpu}: skipped (this CPU does not have it)");
                    continue;
                }
            },
            None => {
                let p = zmm_peak.or_else(|| measure_peak(PeakMix::VfmaddpsYmm, 1_000_000, 200));
                println!("tier {cpu}: the 128-bit kernel (percentages of the widest peak)");
                p.unwrap_or(f64::NAN)
            }
        };
        let target = Target::new(&host, cpu).expect("tier target");
        let cases = [
            ("gemm 256x256x1024 (1x1 conv)    ", 1024, 256, 16, 1, iters),
            (
                "conv 16->16 3x3 32x32 (Winograd)",
                16,
                16,
                32,
                3,
                iters * 20,
            ),
            (
                "conv 32->32 3x3 16x16 (Winograd)",
                32,
                32,
                16,
                3,
                iters * 20,
            ),
            ("conv 64->64 3x3 8x8 (Winograd)  ", 64, 64, 8, 3, iters * 20),
        ];
        // The gemm operator: activations [256, 1024] (read in place) x constant weights.
        let (m, xin) = matmul_case(&mut r, (256, 256, 1024), 32);
        let jit = JitModel::with_target(&m, &target).expect("compile");
        let kernel = jit.report().layers[0].kernel.clone();
        if let Some(g) = measure(
            &m,
            std::slice::from_ref(&xin),
            256 * 256 * 1024,
            iters,
            &target,
        ) {
            println!(
                "  matmul 256x256x1024 (A in place)   {g:>7.2} G MAC/s  {:>3.0}% of peak  [{kernel}]",
                100.0 * g / peak
            );
        }
        for (i, (label, c, m_, hw, k, it)) in cases.into_iter().enumerate() {
            let (m, xin, macs) = conv_f32_case(&mut r, c, m_, hw, k);
            let jit = JitModel::with_target(&m, &target).expect("compile");
            let kernel = jit.report().layers[0].kernel.clone();
            match measure(&m, std::slice::from_ref(&xin), macs, it, &target) {
                Some(g) => {
                    println!(
                        "  {label}  {g:>7.2} G MAC/s  {:>3.0}% of peak  [{kernel}]",
                        100.0 * g / peak
                    );
                    if i == 0 && !tname.is_empty() {
                        rows.push(format!(
                            "    row({tname}, {strategy}, 32, 32, {g:.2}, Measured),"
                        ));
                    }
                }
                None => println!("  {label}: MISMATCH"),
            }
        }
    }
    rows
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let table = args.peek().is_some_and(|a| a == "--cost-table");
    if table {
        args.next();
    }
    let iters: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    if table {
        cost_table(iters);
        for row in wide(iters)
            .into_iter()
            .chain(fwide(iters))
            .chain(xwide(iters))
            .chain(bswide(iters))
        {
            println!("{row}");
        }
        return;
    }
    if std::env::var("QCC_BENCH_ONLY").is_ok_and(|o| o == "wide") {
        wide(iters);
        return;
    }
    if std::env::var("QCC_BENCH_ONLY").is_ok_and(|o| o == "fwide") {
        fwide(iters);
        return;
    }
    if std::env::var("QCC_BENCH_ONLY").is_ok_and(|o| o == "xwide") {
        for row in xwide(iters) {
            println!("{row}");
        }
        return;
    }
    if std::env::var("QCC_BENCH_ONLY").is_ok_and(|o| o == "bswide") {
        for row in bswide(iters) {
            println!("{row}");
        }
        return;
    }
    // QCC_BENCH_ONLY=WORD runs only the cases whose label contains WORD.
    let only = std::env::var("QCC_BENCH_ONLY").ok();
    let bench =
        |label: &str, m: &Module, inputs: &[Tensor], macs: u64, iters: usize, ceiling: f64| {
            if only.as_deref().is_none_or(|o| label.contains(o)) {
                bench(label, m, inputs, macs, iters, ceiling);
            }
        };
    let (m_, n_, k_) = (256usize, 256usize, 1024usize);
    let macs = (m_ * n_ * k_) as u64;
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);

    // f32 gemm: activations [M, K] times constant weights [K, N].
    let mut m = Module::new("gemm_f32");
    let x = m.add_input("x", TensorType::f32(vec![m_, k_]));
    let w = m.add_const(
        "w",
        TensorType::f32(vec![k_, n_]),
        ConstData::F32((0..k_ * n_).map(|_| r.f()).collect()),
    );
    let y = node(&mut m, Op::Gemm, &[x, w], BTreeMap::new(), ElemType::F32);
    m.outputs.push(y);
    let xin = Tensor::f32(vec![m_, k_], (0..m_ * k_).map(|_| r.f()).collect());
    bench("gemm f32 256x256x1024", &m, &[xin], macs, iters, 18.0);

    // f32 1x1 convolution: C = K = 1024 in, M = 256 out, 16x16 pixels (N = 256).
    let conv = |r: &mut Rng, kh: usize, c: usize| {
        let mut m = Module::new("conv_f32");
        let x = m.add_input("x", TensorType::f32(vec![1, c, 16, 16]));
        let w = m.add_const(
            "w",
            TensorType::f32(vec![256, c, kh, kh]),
            ConstData::F32((0..256 * c * kh * kh).map(|_| r.f() * 0.1).collect()),
        );
        let p = (kh / 2) as i64;
        let mut a = BTreeMap::new();
        a.insert("pads".to_string(), Attr::Ints(vec![p; 4]));
        let y = node(&mut m, Op::Conv2d, &[x, w], a, ElemType::F32);
        m.outputs.push(y);
        let xin = Tensor::f32(vec![1, c, 16, 16], (0..c * 256).map(|_| r.f()).collect());
        (m, xin, (256 * 256 * c * kh * kh) as u64)
    };
    let (m, xin, mc) = conv(&mut r, 1, 1024);
    bench(
        "conv2d f32 1x1, C=1024 M=256 16x16",
        &m,
        &[xin],
        mc,
        iters,
        18.0,
    );
    let (m, xin, mc) = conv(&mut r, 3, 114);
    bench(
        "conv2d f32 3x3, C=114 M=256 16x16 (K=1026)",
        &m,
        &[xin],
        mc,
        iters,
        18.0,
    );

    // int8 matmul: u8 activations [M, K] times constant i8 weights [K, N] -> i32.
    let mut m = Module::new("matmul_i8");
    let x = m.add_input("x", TensorType::new(q(8, false, 128), vec![m_, k_]));
    let w = m.add_const(
        "w",
        TensorType::new(q(8, true, 0), vec![k_, n_]),
        ConstData::Int((0..k_ * n_).map(|_| r.i(-127, 127)).collect()),
    );
    let y = node(
        &mut m,
        Op::MatMulInt,
        &[x, w],
        BTreeMap::new(),
        ElemType::I32,
    );
    m.outputs.push(y);
    let xin = Tensor::int(vec![m_, k_], (0..m_ * k_).map(|_| r.i(0, 255)).collect());
    bench(
        "matmul_int u8 x i8 -> i32 256x256x1024",
        &m,
        &[xin],
        macs,
        iters,
        20.0,
    );

    // int8 convolutions with the fused requantize epilogue.
    let conv_i8 = |r: &mut Rng, kh: usize, c: usize| {
        let mut m = Module::new("conv_i8");
        let x = m.add_input("x", TensorType::new(q(8, false, 128), vec![1, c, 16, 16]));
        let w = m.add_const(
            "w",
            TensorType::new(q(8, true, 0), vec![256, c, kh, kh]),
            ConstData::Int((0..256 * c * kh * kh).map(|_| r.i(-127, 127)).collect()),
        );
        let p = (kh / 2) as i64;
        let mut a = BTreeMap::new();
        a.insert("pads".to_string(), Attr::Ints(vec![p; 4]));
        let acc = node(&mut m, Op::Conv2dInt, &[x, w], a, ElemType::I32);
        let mut a = BTreeMap::new();
        a.insert("multiplier".to_string(), Attr::Ints(vec![1 << 30]));
        a.insert("shift".to_string(), Attr::Ints(vec![44]));
        let y = node(&mut m, Op::Requantize, &[acc], a, q(8, false, 128));
        m.outputs.push(y);
        let xin = Tensor::int(
            vec![1, c, 16, 16],
            (0..c * 256).map(|_| r.i(0, 255)).collect(),
        );
        (m, xin, (256 * 256 * c * kh * kh) as u64)
    };
    let (m, xin, mc) = conv_i8(&mut r, 1, 1024);
    bench(
        "conv2d_int+requant 1x1, C=1024 M=256 16x16",
        &m,
        &[xin],
        mc,
        iters,
        20.0,
    );
    let (m, xin, mc) = conv_i8(&mut r, 3, 114);
    bench(
        "conv2d_int+requant 3x3, C=114 M=256 16x16",
        &m,
        &[xin],
        mc,
        iters,
        20.0,
    );

    // pmaddubsw (u8 x i8 where the weights allow it): matmuls at 8- and 4-bit weights,
    // then the same shapes as the int8 convolutions above with 4-bit weights.
    for (wb, ab) in [(8u8, 8u8), (4, 8), (4, 4), (3, 3)] {
        let (m, xin) = maddubs_case(&mut r, (m_, n_, k_), wb, ab);
        bench(
            &format!("matmul_int u{ab} x i{wb} -> i32 256x256x1024"),
            &m,
            &[xin],
            macs,
            iters,
            40.0,
        );
    }
    let conv_i4 = |r: &mut Rng, kh: usize, c: usize| {
        let mut m = Module::new("conv_i4");
        let x = m.add_input("x", TensorType::new(q(8, false, 0), vec![1, c, 16, 16]));
        let w = m.add_const(
            "w",
            TensorType::new(q(4, true, 0), vec![256, c, kh, kh]),
            ConstData::Int((0..256 * c * kh * kh).map(|_| r.i(-7, 7)).collect()),
        );
        let p = (kh / 2) as i64;
        let mut a = BTreeMap::new();
        a.insert("pads".to_string(), Attr::Ints(vec![p; 4]));
        let acc = node(&mut m, Op::Conv2dInt, &[x, w], a, ElemType::I32);
        let mut a = BTreeMap::new();
        a.insert("multiplier".to_string(), Attr::Ints(vec![1 << 30]));
        a.insert("shift".to_string(), Attr::Ints(vec![40]));
        let y = node(&mut m, Op::Requantize, &[acc], a, q(8, false, 0));
        m.outputs.push(y);
        let xin = Tensor::int(
            vec![1, c, 16, 16],
            (0..c * 256).map(|_| r.i(0, 255)).collect(),
        );
        (m, xin, (256 * 256 * c * kh * kh) as u64)
    };
    let (m, xin, mc) = conv_i4(&mut r, 1, 1024);
    bench(
        "conv2d_int+requant u8 x i4 1x1, C=1024 M=256 16x16",
        &m,
        std::slice::from_ref(&xin),
        mc,
        iters,
        40.0,
    );
    costs::without(&[Strategy::Maddubs], || {
        bench("  the same, pmaddwd kernel", &m, &[xin], mc, iters, 20.0)
    });
    let (m, xin, mc) = conv_i4(&mut r, 3, 114);
    bench(
        "conv2d_int+requant u8 x i4 3x3, C=114 M=256 16x16",
        &m,
        std::slice::from_ref(&xin),
        mc,
        iters,
        40.0,
    );
    costs::without(&[Strategy::Maddubs], || {
        bench("  the same, pmaddwd kernel", &m, &[xin], mc, iters, 20.0)
    });

    // 1-bit XNOR-popcount: b1 activations [M, K] times constant b1 weights [K, N] -> i32.
    let k1 = 4096usize;
    let sign = |r: &mut Rng| if r.next() & 1 == 1 { -1 } else { 1 };
    let mut m = Module::new("matmul_b1");
    let x = m.add_input("x", TensorType::new(ElemType::Bipolar, vec![m_, k1]));
    let w = m.add_const(
        "w",
        TensorType::new(ElemType::Bipolar, vec![k1, n_]),
        ConstData::Int((0..k1 * n_).map(|_| sign(&mut r)).collect()),
    );
    let y = node(
        &mut m,
        Op::MatMulInt,
        &[x, w],
        BTreeMap::new(),
        ElemType::I32,
    );
    m.outputs.push(y);
    let baseline = Target::new(&target_lexicon::Triple::host().to_string(), "baseline")
        .expect("baseline target");
    // QCC_BENCH_ASM=native (or baseline) prints the 1-bit GEMM's machine code.
    if let Ok(cpu) = std::env::var("QCC_BENCH_ASM") {
        let t = if cpu == "baseline" {
            baseline.clone()
        } else {
            Target::host()
        };
        println!("{}", qcc::backend::emit_asm(&m, "b1", &t).expect("asm"));
    }
    let xin = Tensor::int(vec![m_, k1], (0..m_ * k1).map(|_| sign(&mut r)).collect());
    bench(
        "matmul_int b1 x b1 -> i32 256x256x4096",
        &m,
        std::slice::from_ref(&xin),
        (m_ * n_ * k1) as u64,
        iters,
        156.0,
    );
    bench_on(
        "  the same, baseline ISA (no popcnt)",
        &m,
        &[xin],
        (m_ * n_ * k1) as u64,
        iters,
        156.0,
        &baseline,
    );

    let c1 = 455usize; // K = 4095 for the 3x3 convolutions
    // Bit-serial: u{ab} activations (zero point 1) [M, K] times constant i{wb} weights
    // [K, N] -> i32 at K = 4096 (3x3 and 4x4 take the int8 kernel under the current rule).
    for (wb, ab) in [(2u8, 2u8), (3, 2), (2, 3), (4, 2), (2, 4), (3, 3), (4, 4)] {
        let (m, xin) = bs_matmul_case(&mut r, (m_, n_, k1), wb, ab);
        let ceiling = 47.0 * 4.0 / f64::from(wb * ab);
        bench(
            &format!("matmul_int u{ab} x i{wb} -> i32 256x256x4096"),
            &m,
            std::slice::from_ref(&xin),
            (m_ * n_ * k1) as u64,
            iters,
            ceiling,
        );
        if only.as_deref().is_none_or(|o| "4096".contains(o)) {
            // The cost table may give these to pmaddubsw: the kernel it would be without.
            costs::without(&[Strategy::Maddubs], || {
                bench_on(
                    "  the same without pmaddubsw",
                    &m,
                    std::slice::from_ref(&xin),
                    (m_ * n_ * k1) as u64,
                    iters,
                    ceiling,
                    &Target::host(),
                )
            });
        }
        if (wb, ab) == (2, 2) {
            bench_on(
                "  the same, baseline ISA (no popcnt)",
                &m,
                &[xin],
                (m_ * n_ * k1) as u64,
                iters,
                ceiling,
                &baseline,
            );
        }
    }

    // 2-bit 3x3 convolution with padding and a fused requantize (K = 4095).
    let mut m = Module::new("conv_w2a2");
    let x = m.add_input("x", TensorType::new(q(2, false, 1), vec![1, c1, 16, 16]));
    let w = m.add_const(
        "w",
        TensorType::new(q(2, true, 0), vec![256, c1, 3, 3]),
        ConstData::Int((0..256 * c1 * 9).map(|_| r.i(-2, 1)).collect()),
    );
    let mut a = BTreeMap::new();
    a.insert("pads".to_string(), Attr::Ints(vec![1; 4]));
    let acc = node(&mut m, Op::Conv2dInt, &[x, w], a, ElemType::I32);
    let mut a = BTreeMap::new();
    a.insert("multiplier".to_string(), Attr::Ints(vec![1 << 30]));
    a.insert("shift".to_string(), Attr::Ints(vec![38]));
    let y = node(&mut m, Op::Requantize, &[acc], a, q(8, true, 0));
    m.outputs.push(y);
    let xin = Tensor::int(
        vec![1, c1, 16, 16],
        (0..c1 * 256).map(|_| r.i(0, 3)).collect(),
    );
    bench(
        "conv2d_int u2 x i2 3x3 pad 1, C=455 M=256 16x16",
        &m,
        &[xin],
        (256 * 256 * c1 * 9) as u64,
        iters,
        47.0,
    );

    // 1-bit 3x3 convolution with padding (masked borders) and a fused requantize.
    let mut m = Module::new("conv_b1");
    let x = m.add_input("x", TensorType::new(ElemType::Bipolar, vec![1, c1, 16, 16]));
    let w = m.add_const(
        "w",
        TensorType::new(ElemType::Bipolar, vec![256, c1, 3, 3]),
        ConstData::Int((0..256 * c1 * 9).map(|_| sign(&mut r)).collect()),
    );
    let mut a = BTreeMap::new();
    a.insert("pads".to_string(), Attr::Ints(vec![1; 4]));
    let acc = node(&mut m, Op::Conv2dInt, &[x, w], a, ElemType::I32);
    let mut a = BTreeMap::new();
    a.insert("multiplier".to_string(), Attr::Ints(vec![1 << 30]));
    a.insert("shift".to_string(), Attr::Ints(vec![36]));
    let y = node(&mut m, Op::Requantize, &[acc], a, q(8, true, 0));
    m.outputs.push(y);
    let xin = Tensor::int(
        vec![1, c1, 16, 16],
        (0..c1 * 256).map(|_| sign(&mut r)).collect(),
    );
    bench(
        "conv2d_int b1 3x3 pad 1, C=455 M=256 16x16",
        &m,
        &[xin],
        (256 * 256 * c1 * 9) as u64,
        iters,
        156.0,
    );

    // Channel counts of whole bytes take the channel-packed lowering (planes.rs): the
    // ResNet-20 stage-1 shape and a wide one, 1-bit and 2-bit.
    for (c, mo, hw) in [(16usize, 16usize, 32usize), (512, 256, 16)] {
        for b1 in [true, false] {
            let (xe, we, shift) = if b1 {
                (ElemType::Bipolar, ElemType::Bipolar, 36)
            } else {
                (q(2, false, 1), q(2, true, 0), 38)
            };
            let mut m = Module::new("conv_chan");
            let x = m.add_input("x", TensorType::new(xe, vec![1, c, hw, hw]));
            let wv = (0..mo * c * 9)
                .map(|_| if b1 { sign(&mut r) } else { r.i(-2, 1) })
                .collect();
            let w = m.add_const(
                "w",
                TensorType::new(we, vec![mo, c, 3, 3]),
                ConstData::Int(wv),
            );
            let mut a = BTreeMap::new();
            a.insert("pads".to_string(), Attr::Ints(vec![1; 4]));
            let acc = node(&mut m, Op::Conv2dInt, &[x, w], a, ElemType::I32);
            let mut a = BTreeMap::new();
            a.insert("multiplier".to_string(), Attr::Ints(vec![1 << 30]));
            a.insert("shift".to_string(), Attr::Ints(vec![shift]));
            let y = node(&mut m, Op::Requantize, &[acc], a, q(8, true, 0));
            m.outputs.push(y);
            let xv = (0..c * hw * hw)
                .map(|_| if b1 { sign(&mut r) } else { r.i(0, 3) })
                .collect();
            let xin = Tensor::int(vec![1, c, hw, hw], xv);
            let kind = if b1 { "b1" } else { "u2 x i2" };
            bench(
                &format!("conv2d_int {kind} 3x3 pad 1, C={c} M={mo} {hw}x{hw}"),
                &m,
                &[xin],
                (mo * hw * hw * c * 9) as u64,
                iters,
                if b1 { 156.0 } else { 47.0 },
            );
        }
    }
}
