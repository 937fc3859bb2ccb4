//! Measured throughput of the backend's GEMM/convolution kernel strategies, per target,
//! per (weight bits, activation bits): the committed cost table docs/design.md asks for, read
//! by kernel choice ([`choose`], [`estimate_ns`]) and by the e-graph extraction's cost
//! model (`rewrite::cost`, through [`relative_mac_cost`]).
//!
//! # How the figures were measured
//!
//! `cargo run --release -p qcc --example bench_kernels -- --cost-table [ITERS]` on the
//! project's machine kind (an AMD EPYC with 2 vCPUs, shared with other builds; see
//! docs/kernels.md for its features), single thread, JIT, best of ITERS (default 20) calls, each case checked bit-exact (float:
//! within 1e-3) against the interpreter first. Reference shape: a matrix product with
//! M = N = 256 and K = 1024 (K = 4096 for the 1-bit kernel), constant weights [K, N],
//! activations [M, K]; G MAC/s = M * N * K / best time. `x86_64 native` is the host's
//! detected feature set (`Target::host()`), `x86_64 baseline` the SSE2-only flag set
//! (`Target::new(host, "baseline")`). The example prints the [`TABLE`] rows it measured;
//! paste them over the rows marked [`Source::Measured`] below to regenerate. Timings
//! on a shared 2-core machine vary by about 10% from run to run.
//!
//! # Rows that were not measured here
//!
//! - [`Strategy::BitSerial`] was measured with the cases of `bench_kernels` (K = 4096 bits,
//!   the shape of the bar), not with `--cost-table`; only the combinations its
//!   cases cover have rows.
//! - aarch64: no aarch64 hardware is available to this project (qemu timings mean
//!   nothing), so its rows repeat the x86_64 native figures and are marked
//!   [`Source::Unmeasured`].
//! - The tiers: [`CostTarget::X86_64Avx2`] (x86-64-v3) and
//!   [`CostTarget::X86_64Avx512Vnni`] (x86-64-v4 with VNNI) have rows only for their
//!   assembled wide tiles ([`Strategy::DotAvx2`], [`Strategy::DotVnni`]) and inherit
//!   every other row from the narrower tier ([`CostTarget::base`]): they run the same
//!   128-bit Cranelift kernels besides the tiles. The wide rows were measured on an
//!   Intel Xeon (Sapphire Rapids class), the 128-bit rows on the project's AMD EPYC
//!   (Zen 2/3): ratios between rows of different machines are indicative only.
//! - [`Strategy::XnorZmm`] has rows on [`CostTarget::X86_64Avx512Popcnt`] and
//!   [`CostTarget::X86_64Avx512VnniPopcnt`] (x86-64-v4 with VPOPCNTDQ, without and with
//!   VNNI: both measured on the Sapphire Rapids class Xeon with `--cpu` forcing the row
//!   set), [`Strategy::XnorYmm`] on [`CostTarget::X86_64Avx2`]; the VPOPCNTDQ row sets
//!   inherit from the VNNI one (with VNNI) or the v3 one (without). The bit-serial
//!   tiles likewise: [`Strategy::BitSerialZmm`] on the VPOPCNTDQ row sets,
//!   [`Strategy::BitSerialYmm`] on x86-64-v3, measured at K = 4096 like
//!   [`Strategy::BitSerial`] (`bench_kernels` `QCC_BENCH_ONLY=bswide`, also part of
//!   `--cost-table`), for every combination whose accumulators fit the registers.
//! - [`Strategy::Maddubs`] has rows on x86_64 native only (it needs SSSE3's
//!   `pmaddubsw`); `--cost-table` measures it with the strategies it competes with
//!   disabled ([`without`]), and the others without it. Its rows for 4- and 2-bit
//!   activations are at K = 4096, to compare with the bit-serial rows.

use std::fmt;

/// How a convolution or matrix product is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Strategy {
    /// f32 register-tiled GEMM (im2col for convolutions), FMA where the target has it.
    F32Gemm,
    /// i16 pairs and `pmaddwd`, weights pre-widened to i16 in `.rodata` (8-bit weights;
    /// the backend stores narrower weights packed, [`Strategy::Int8PackedW`]).
    Int8Pmaddwd,
    /// The same GEMM with weights of fewer than 8 bits bit-packed in `.rodata` and
    /// widened into the workspace at the start of the layer (`kernels::packw`).
    Int8PackedW,
    /// Bit-serial AND-popcount over bit planes (2..4-bit weights and activations).
    BitSerial,
    /// 1-bit XNOR-popcount (bipolar weights and activations).
    Xnor,
    /// u8 activations x i8 weights with `pmaddubsw` (SSSE3), bytes in the workspace
    /// (`kernels::maddubs`): only for layers whose constant weights are proven not to
    /// saturate its i16 sums, so it applies to (wbits, abits) of at most 8 bits but a
    /// layer may still fall back to [`Strategy::Int8Pmaddwd`] / [`Strategy::Int8PackedW`].
    /// Rows on x86_64 with SSSE3 only.
    Maddubs,
    /// u8 x i8 with the assembled AVX512-VNNI tile (`vpdpbusd` zmm, exact for every
    /// weight that fits i8; `kernels::dot`). Rows on the v4+vnni tier only.
    DotVnni,
    /// u8 x i8 with the assembled AVX2 tile (`vpmaddubsw` + `vpmaddwd` ymm), for the
    /// layers that pass `pmaddubsw`'s pair check. Rows on the v3 tier (and above).
    DotAvx2,
    /// u8 x i8 with the assembled AVX2 tile that widens both operands to i16 and uses
    /// `vpmaddwd` (exact for every weight that fits i8). Rows on the v3 tier.
    DotAvx2Wide,
    /// f32 GEMM with the assembled AVX-512F tile (`vfmadd231ps` zmm; `kernels::fma`).
    /// Rows on the v4 tier (the VNNI row set) only.
    F32Zmm,
    /// f32 GEMM with the assembled AVX2 + FMA tile (`vfmadd231ps` ymm). Rows on the v3
    /// tier (and above).
    F32Ymm,
    /// 1-bit XNOR-popcount with the assembled AVX-512 VPOPCNTDQ tile (`vpopcntq` zmm;
    /// `kernels::xnor`). Rows on the v4 + VPOPCNTDQ tiers only.
    XnorZmm,
    /// 1-bit XNOR-popcount with the assembled AVX2 tile (`vpshufb` nibble lookup and
    /// `vpsadbw` on ymm). Rows on the v3 tier (and above).
    XnorYmm,
    /// Bit-serial AND-popcount with the assembled AVX-512 VPOPCNTDQ tile (`vpandq`,
    /// `vpopcntq` zmm; `kernels::xnor` with `BsPlanes`). Rows on the v4 + VPOPCNTDQ
    /// tiers only.
    BitSerialZmm,
    /// Bit-serial AND-popcount with the assembled AVX2 tile (`vpand` and the `vpshufb`
    /// nibble lookup on ymm). Rows on the v3 tier (and above).
    BitSerialYmm,
    /// u8 x i8 on aarch64 with FEAT_DotProd: the `pmaddubsw` kernel's quad layout with
    /// each quad's products summed by one `sdot` (Cranelift lowers the exact i32 dot
    /// tree to it); exact for every weight that fits i8. Rows on
    /// [`CostTarget::Aarch64Dotprod`] only.
    Sdot,
}

impl Strategy {
    pub const ALL: [Strategy; 16] = [
        Strategy::F32Gemm,
        Strategy::Int8Pmaddwd,
        Strategy::Int8PackedW,
        Strategy::BitSerial,
        Strategy::Xnor,
        Strategy::Maddubs,
        Strategy::DotVnni,
        Strategy::DotAvx2,
        Strategy::DotAvx2Wide,
        Strategy::F32Zmm,
        Strategy::F32Ymm,
        Strategy::XnorZmm,
        Strategy::XnorYmm,
        Strategy::BitSerialZmm,
        Strategy::BitSerialYmm,
        Strategy::Sdot,
    ];

    /// Whether the strategy computes a product of `wbits`-bit weights and `abits`-bit
    /// activations (32: f32).
    pub fn applies(self, wbits: u32, abits: u32) -> bool {
        match self {
            Strategy::F32Gemm => true,
            Strategy::F32Zmm | Strategy::F32Ymm => wbits == 32 && abits == 32,
            Strategy::Int8Pmaddwd => wbits == 8 && abits <= 8,
            Strategy::Int8PackedW => wbits < 8 && abits <= 8,
            Strategy::BitSerial | Strategy::BitSerialZmm | Strategy::BitSerialYmm => {
                (2..=4).contains(&wbits) && (2..=4).contains(&abits)
            }
            Strategy::Xnor | Strategy::XnorZmm | Strategy::XnorYmm => wbits == 1 && abits == 1,
            Strategy::Maddubs
            | Strategy::DotVnni
            | Strategy::DotAvx2
            | Strategy::DotAvx2Wide
            | Strategy::Sdot => (1..=8).contains(&wbits) && (1..=8).contains(&abits),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::F32Gemm => "f32-gemm",
            Strategy::Int8Pmaddwd => "int8-pmaddwd",
            Strategy::Int8PackedW => "int8-packed-weights",
            Strategy::BitSerial => "bit-serial",
            Strategy::Xnor => "xnor-popcount",
            Strategy::Maddubs => "int8-pmaddubsw",
            Strategy::DotVnni => "int8-vpdpbusd-zmm",
            Strategy::DotAvx2 => "int8-vpmaddubsw-ymm",
            Strategy::DotAvx2Wide => "int8-vpmaddwd-ymm",
            Strategy::F32Zmm => "f32-vfmadd231ps-zmm",
            Strategy::F32Ymm => "f32-vfmadd231ps-ymm",
            Strategy::XnorZmm => "xnor-vpopcntq-zmm",
            Strategy::XnorYmm => "xnor-vpshufb-ymm",
            Strategy::BitSerialZmm => "bit-serial-vpopcntq-zmm",
            Strategy::BitSerialYmm => "bit-serial-vpshufb-ymm",
            Strategy::Sdot => "int8-sdot",
        })
    }
}

/// The targets the table covers: one per tier of kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CostTarget {
    /// x86_64 with SSSE3 and popcnt: Cranelift's 128-bit kernels.
    X86_64Native,
    /// x86_64 with SSE2 only (`baseline`: no popcnt, no SSSE3, no FMA).
    X86_64Baseline,
    Aarch64,
    /// x86-64-v3 (AVX2): the 128-bit kernels plus the assembled ymm tiles.
    X86_64Avx2,
    /// x86-64-v4 with VNNI: plus the assembled zmm `vpdpbusd` tiles.
    X86_64Avx512Vnni,
    /// x86-64-v4 with VPOPCNTDQ but not VNNI: the v3 rows plus the zmm `vpopcntq` tile.
    X86_64Avx512Popcnt,
    /// x86-64-v4 with VNNI and VPOPCNTDQ (Ice Lake, Sapphire Rapids, Zen 4): the VNNI
    /// rows plus the zmm `vpopcntq` tile.
    X86_64Avx512VnniPopcnt,
    /// aarch64 with FEAT_DotProd (`--cpu baseline+dotprod`; Neoverse N1 and later,
    /// Apple M1): the aarch64 rows plus [`Strategy::Sdot`].
    Aarch64Dotprod,
}

impl CostTarget {
    /// The row set for a target triple's architecture and CPU name (`baseline` or any
    /// other name, which is taken to have the native features).
    /// The row set for a compiled-for ISA: aarch64, or x86_64 with or without `popcnt`
    /// and SSSE3 (what separates the native from the baseline figures of the popcount
    /// kernels; SSSE3's `pmaddubsw` is what [`Strategy::Maddubs`] needs, so a flag set
    /// with `popcnt` but no SSSE3, such as `barcelona`, takes the baseline rows).
    /// `tier`: the x86-64 tier the assembled kernels may use (None: none of them).
    pub fn of_isa(
        isa: &dyn cranelift_codegen::isa::TargetIsa,
        tier: Option<super::Tier>,
    ) -> CostTarget {
        let has = |name: &str| {
            isa.isa_flags()
                .iter()
                .any(|f| f.name == name && f.as_bool() == Some(true))
        };
        match isa.triple().architecture {
            target_lexicon::Architecture::Aarch64(_) if has("has_dotprod") => {
                CostTarget::Aarch64Dotprod
            }
            target_lexicon::Architecture::Aarch64(_) => CostTarget::Aarch64,
            _ if has("has_popcnt") && has("has_ssse3") => match tier {
                Some(t) if t.avx512_vnni() && t.avx512_vpopcntdq() => {
                    CostTarget::X86_64Avx512VnniPopcnt
                }
                Some(t) if t.avx512_vnni() => CostTarget::X86_64Avx512Vnni,
                Some(t) if t.avx512_vpopcntdq() => CostTarget::X86_64Avx512Popcnt,
                Some(t) if t.avx2() => CostTarget::X86_64Avx2,
                _ => CostTarget::X86_64Native,
            },
            _ => CostTarget::X86_64Baseline,
        }
    }

    /// The rows of `target` (None when its flags are not valid).
    pub fn of(target: &super::Target) -> Option<CostTarget> {
        let isa = target.isa(true).ok()?;
        Some(CostTarget::of_isa(&*isa, target.tier().ok()?))
    }

    /// The tier whose rows this one inherits for the strategies it has no row of: a
    /// wider tier runs every kernel of the narrower ones.
    pub fn base(self) -> Option<CostTarget> {
        match self {
            CostTarget::X86_64Avx512VnniPopcnt => Some(CostTarget::X86_64Avx512Vnni),
            CostTarget::X86_64Avx512Vnni | CostTarget::X86_64Avx512Popcnt => {
                Some(CostTarget::X86_64Avx2)
            }
            CostTarget::X86_64Avx2 => Some(CostTarget::X86_64Native),
            CostTarget::Aarch64Dotprod => Some(CostTarget::Aarch64),
            _ => None,
        }
    }
}

/// Where a row's figure comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Measured with `bench_kernels` (see the module documentation).
    Measured,
    /// Not measured on this target: a copy of the x86_64 native figure.
    Unmeasured,
}

/// One measured throughput: `gmacs` G MAC/s for `strategy` on `target` with weights of
/// at most `wbits` and activations of at most `abits` bits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    pub target: CostTarget,
    pub strategy: Strategy,
    pub wbits: u32,
    pub abits: u32,
    pub gmacs: f64,
    pub source: Source,
}

const fn row(
    target: CostTarget,
    strategy: Strategy,
    wbits: u32,
    abits: u32,
    gmacs: f64,
    source: Source,
) -> Row {
    Row {
        target,
        strategy,
        wbits,
        abits,
        gmacs,
        source,
    }
}

use CostTarget::{
    Aarch64, Aarch64Dotprod, X86_64Avx2 as Avx2, X86_64Avx512Popcnt as Popcnt,
    X86_64Avx512Vnni as Vnni, X86_64Avx512VnniPopcnt as VnniPopcnt, X86_64Baseline as Base,
    X86_64Native as Native,
};
use Source::{Measured, Unmeasured};
use Strategy::{
    BitSerial, BitSerialYmm, BitSerialZmm, DotAvx2, DotAvx2Wide, DotVnni, F32Gemm, F32Ymm, F32Zmm,
    Int8PackedW, Int8Pmaddwd, Maddubs, Sdot, Xnor, XnorYmm, XnorZmm,
};

/// The cost table. For one target and strategy, the row that applies to (w, a) bits is
/// the one with the fewest bits that are at least (w, a) (see [`gmacs`]).
pub const TABLE: &[Row] = &[
    // Measured rows (bench_kernels --cost-table 40; load average ~5 from other builds).
    row(Native, F32Gemm, 32, 32, 13.98, Measured),
    row(Native, Int8Pmaddwd, 8, 8, 23.67, Measured),
    row(Native, Int8PackedW, 2, 8, 22.40, Measured),
    row(Native, Int8PackedW, 3, 8, 21.97, Measured),
    row(Native, Int8PackedW, 4, 8, 22.23, Measured),
    row(Native, Int8PackedW, 5, 8, 21.22, Measured),
    row(Native, Int8PackedW, 6, 8, 21.71, Measured),
    row(Native, Int8PackedW, 7, 8, 22.65, Measured),
    row(Native, Xnor, 1, 1, 175.85, Measured),
    row(Base, F32Gemm, 32, 32, 9.95, Measured),
    row(Base, Int8Pmaddwd, 8, 8, 21.36, Measured),
    row(Base, Int8PackedW, 2, 8, 20.79, Measured),
    row(Base, Int8PackedW, 3, 8, 20.59, Measured),
    row(Base, Int8PackedW, 4, 8, 20.27, Measured),
    row(Base, Int8PackedW, 5, 8, 21.08, Measured),
    row(Base, Int8PackedW, 6, 8, 20.84, Measured),
    row(Base, Int8PackedW, 7, 8, 21.06, Measured),
    row(Base, Xnor, 1, 1, 22.69, Measured),
    // Bit-serial (bench_kernels, M = N = 256, K = 4096; load average ~5 from other
    // builds). Only the combinations measured have rows, so 3x3, 3x4, 4x3 and 4x4 bits
    // go to the int8 kernels (the estimate 47 * 4 / (w * a) puts 3x3 on par with them).
    row(Native, BitSerial, 2, 2, 48.05, Measured),
    row(Native, BitSerial, 3, 2, 29.87, Measured),
    row(Native, BitSerial, 2, 3, 30.85, Measured),
    row(Native, BitSerial, 4, 2, 24.28, Measured),
    row(Native, BitSerial, 2, 4, 24.15, Measured),
    row(Base, BitSerial, 2, 2, 8.21, Measured),
    row(Aarch64, BitSerial, 2, 2, 48.05, Unmeasured),
    row(Aarch64, BitSerial, 3, 2, 29.87, Unmeasured),
    row(Aarch64, BitSerial, 2, 3, 30.85, Unmeasured),
    row(Aarch64, BitSerial, 4, 2, 24.28, Unmeasured),
    row(Aarch64, BitSerial, 2, 4, 24.15, Unmeasured),
    // pmaddubsw (x86_64 with SSSE3 only: the baseline flag set and aarch64 have no rows):
    // bench_kernels --cost-table 30, the median of 4 runs (load average ~2.3 from other
    // builds); u8 activations at K = 1024, u4 and u2 at K = 4096 (the bit-serial rows'
    // shape), signed weights (8-bit ones within +-64, so that they pass the check).
    row(Native, Maddubs, 2, 8, 61.68, Measured),
    row(Native, Maddubs, 3, 8, 56.91, Measured),
    row(Native, Maddubs, 4, 8, 56.09, Measured),
    row(Native, Maddubs, 5, 8, 51.09, Measured),
    row(Native, Maddubs, 6, 8, 45.28, Measured),
    row(Native, Maddubs, 7, 8, 45.00, Measured),
    row(Native, Maddubs, 8, 8, 45.65, Measured),
    row(Native, Maddubs, 2, 4, 47.56, Measured),
    row(Native, Maddubs, 3, 4, 56.49, Measured),
    row(Native, Maddubs, 4, 4, 46.00, Measured),
    row(Native, Maddubs, 5, 4, 54.84, Measured),
    row(Native, Maddubs, 6, 4, 45.14, Measured),
    row(Native, Maddubs, 7, 4, 44.25, Measured),
    row(Native, Maddubs, 8, 4, 45.06, Measured),
    row(Native, Maddubs, 2, 2, 47.72, Measured),
    row(Native, Maddubs, 3, 2, 57.91, Measured),
    row(Native, Maddubs, 4, 2, 46.52, Measured),
    // The assembled wide tiles: `QCC_BENCH_ONLY=wide bench_kernels 30` on an Intel Xeon
    // (Sapphire Rapids class, KVM, 2 vCPUs shared with another build), M = N = 256,
    // K = 1024, u8 activations; `vpdpbusd` zmm measured at 81-85 % of its instruction
    // mix's peak (491.2 G MAC/s), the AVX2 tile at 95 % (122.7), the AVX2 i16-widening
    // tile at 62 % of `vpmaddwd` + `vpaddd` (95.0). Session 7: the i16-widening tile
    // with its weights stored as i16 (load ~2.5): 81-85 % of `vpmaddwd` + `vpaddd` (92.7);
    // bit-packed weights (below 8 bits) keep the i8 layout and the old loop, whose
    // 8-bit figure (58.68, session 4) is their row.
    row(Vnni, DotVnni, 2, 8, 398.88, Measured),
    row(Vnni, DotVnni, 4, 8, 402.14, Measured),
    row(Vnni, DotVnni, 8, 8, 416.56, Measured),
    row(Avx2, DotAvx2, 2, 8, 116.33, Measured),
    row(Avx2, DotAvx2, 4, 8, 116.25, Measured),
    row(Avx2, DotAvx2, 8, 8, 117.43, Measured),
    row(Avx2, DotAvx2Wide, 7, 8, 58.68, Measured),
    row(Avx2, DotAvx2Wide, 8, 8, 78.76, Measured),
    // The f32 tiles (bench_kernels QCC_BENCH_ONLY=fwide: a 1x1 convolution with
    // M = N = 256, K = 1024; Intel Xeon, Sapphire Rapids class, load average ~6).
    row(Vnni, F32Zmm, 32, 32, 101.84, Measured),
    row(Avx2, F32Ymm, 32, 32, 59.38, Measured),
    // The 1-bit tiles (bench_kernels QCC_BENCH_ONLY=xwide 20: a matrix product with
    // M = N = 256, K = 4096; Intel Xeon, Sapphire Rapids class, 2 vCPU KVM, load
    // average ~4.5 from other builds): `vpopcntq` zmm at 84-85 % of its instruction
    // mix's peak (1375-1383 G binary MAC/s), the AVX2 nibble-lookup tile at 93 % (389).
    // The 128-bit Cranelift tile measured 226 in the same run (the Native row is the
    // AMD EPYC's).
    row(VnniPopcnt, XnorZmm, 1, 1, 1161.69, Measured),
    row(Popcnt, XnorZmm, 1, 1, 1169.30, Measured),
    row(Avx2, XnorYmm, 1, 1, 361.98, Measured),
    // The bit-serial tiles (bench_kernels QCC_BENCH_ONLY=bswide 10: matrix products
    // with M = N = 256, K = 4096, u`a` activations x i`w` weights; Intel Xeon, Sapphire
    // Rapids class, 2 vCPU KVM, quiet): `vpandq` + `vpopcntq` zmm at 88-93 % of its
    // mix's peak over w * a (1418 G binary MAC/s), the AVX2 `vpand` nibble-lookup tile
    // at 92-93 % (398). The 128-bit Cranelift tile measured 62 (2x2) in the same run.
    row(VnniPopcnt, BitSerialZmm, 2, 2, 313.84, Measured),
    row(VnniPopcnt, BitSerialZmm, 3, 2, 200.48, Measured),
    row(VnniPopcnt, BitSerialZmm, 2, 3, 212.74, Measured),
    row(VnniPopcnt, BitSerialZmm, 4, 2, 164.02, Measured),
    row(VnniPopcnt, BitSerialZmm, 2, 4, 160.22, Measured),
    row(VnniPopcnt, BitSerialZmm, 3, 3, 144.57, Measured),
    row(VnniPopcnt, BitSerialZmm, 4, 4, 79.80, Measured),
    row(Popcnt, BitSerialZmm, 2, 2, 313.99, Measured),
    row(Popcnt, BitSerialZmm, 3, 2, 212.41, Measured),
    row(Popcnt, BitSerialZmm, 2, 3, 211.75, Measured),
    row(Popcnt, BitSerialZmm, 4, 2, 162.14, Measured),
    row(Popcnt, BitSerialZmm, 2, 4, 160.28, Measured),
    row(Popcnt, BitSerialZmm, 3, 3, 146.48, Measured),
    row(Popcnt, BitSerialZmm, 4, 4, 77.84, Measured),
    row(Avx2, BitSerialYmm, 2, 2, 92.55, Measured),
    row(Avx2, BitSerialYmm, 3, 2, 61.30, Measured),
    row(Avx2, BitSerialYmm, 2, 3, 60.93, Measured),
    row(Avx2, BitSerialYmm, 4, 2, 45.57, Measured),
    row(Avx2, BitSerialYmm, 2, 4, 45.96, Measured),
    row(Avx2, BitSerialYmm, 3, 3, 41.01, Measured),
    // aarch64 with FEAT_DotProd: not measured (no such hardware here; qemu's timings
    // mean nothing). `sdot` does what x86's `pmaddubsw` + `pmaddwd` + `paddd` do in one
    // instruction, exactly, so the row repeats the x86_64 native `pmaddubsw` figures.
    row(Aarch64Dotprod, Sdot, 2, 8, 61.68, Unmeasured),
    row(Aarch64Dotprod, Sdot, 4, 8, 56.09, Unmeasured),
    row(Aarch64Dotprod, Sdot, 8, 8, 45.65, Unmeasured),
    // aarch64: not measured; the x86_64 native figures.
    row(Aarch64, F32Gemm, 32, 32, 13.98, Unmeasured),
    row(Aarch64, Int8Pmaddwd, 8, 8, 23.67, Unmeasured),
    row(Aarch64, Int8PackedW, 7, 8, 22.23, Unmeasured),
    row(Aarch64, Xnor, 1, 1, 175.85, Unmeasured),
];

/// The G MAC/s of `strategy` on `target` at (`wbits`, `abits`): the applicable row with
/// the fewest bits at least those asked for; None when the strategy does not apply or
/// has no such row.
pub fn gmacs(strategy: Strategy, wbits: u32, abits: u32, target: CostTarget) -> Option<f64> {
    if !strategy.applies(wbits, abits) {
        return None;
    }
    let mut t = Some(target);
    while let Some(tt) = t {
        if TABLE
            .iter()
            .any(|r| r.target == tt && r.strategy == strategy)
        {
            return TABLE
                .iter()
                .filter(|r| {
                    r.target == tt && r.strategy == strategy && r.wbits >= wbits && r.abits >= abits
                })
                .min_by_key(|r| (r.wbits + r.abits, r.wbits))
                .map(|r| r.gmacs);
        }
        t = tt.base();
    }
    None
}

/// Modelled time in nanoseconds of `macs` multiply-accumulates with `strategy`;
/// infinite when the table has no row for it (the strategy cannot run these bits).
pub fn estimate_ns(
    strategy: Strategy,
    wbits: u32,
    abits: u32,
    macs: u64,
    target: CostTarget,
) -> f64 {
    match gmacs(strategy, wbits, abits, target) {
        Some(g) if g > 0.0 => macs as f64 / g,
        _ => f64::INFINITY,
    }
}

thread_local! {
    static DISABLED: std::cell::RefCell<Vec<Strategy>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with `disabled` taken out of every [`choose`] on this thread (kernel
/// selection happens on the compiling thread): how `bench_kernels --cost-table` measures
/// a strategy that the table would otherwise not choose, and how tests compare kernels.
pub fn without<R>(disabled: &[Strategy], f: impl FnOnce() -> R) -> R {
    let saved = DISABLED.with(|d| std::mem::replace(&mut *d.borrow_mut(), disabled.to_vec()));
    let r = f();
    DISABLED.with(|d| *d.borrow_mut() = saved);
    r
}

/// The fastest of `candidates` for `macs` MACs at (`wbits`, `abits`) on `target` (the
/// first of equals); None when none of them has a row. Strategies disabled by
/// [`without`] are skipped.
pub fn choose(
    candidates: &[Strategy],
    wbits: u32,
    abits: u32,
    macs: u64,
    target: CostTarget,
) -> Option<Strategy> {
    let disabled = DISABLED.with(|d| d.borrow().clone());
    candidates
        .iter()
        .filter(|s| !disabled.contains(s))
        .map(|&s| (s, estimate_ns(s, wbits, abits, macs, target)))
        .filter(|(_, t)| t.is_finite())
        .fold(None, |best: Option<(Strategy, f64)>, (s, t)| match best {
            Some((_, bt)) if bt <= t => best,
            _ => Some((s, t)),
        })
        .map(|(s, _)| s)
}

/// The cost of one integer multiply-accumulate relative to one f32 multiply-accumulate
/// (the extraction's unit) with the fastest integer strategy for (`wbits`, `abits`) on
/// `target`; 1.0 when no integer strategy has a row. [`Strategy::Maddubs`] counts only
/// below 8-bit weights: with 8-bit weights whether a layer may take it depends on the
/// weights' values (signed weights of at most 7 bits always pass its check).
pub fn relative_mac_cost(wbits: u32, abits: u32, target: CostTarget) -> f64 {
    let int: Vec<Strategy> = Strategy::ALL
        .into_iter()
        .filter(|&s| {
            !matches!(s, Strategy::F32Gemm | Strategy::F32Zmm | Strategy::F32Ymm)
                && (s != Strategy::Maddubs || wbits < 8)
        })
        .collect();
    let f = gmacs(Strategy::F32Gemm, 32, 32, target);
    let best = choose(&int, wbits, abits, 1, target).and_then(|s| gmacs(s, wbits, abits, target));
    match (f, best) {
        (Some(f), Some(b)) if b > 0.0 => f / b,
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_has_a_row_on_every_target() {
        for t in [
            Native,
            Base,
            Aarch64,
            Aarch64Dotprod,
            Avx2,
            Vnni,
            Popcnt,
            VnniPopcnt,
        ] {
            for s in Strategy::ALL {
                let wide_only = match s {
                    DotVnni | F32Zmm => !matches!(t, Vnni | VnniPopcnt),
                    DotAvx2 | DotAvx2Wide | F32Ymm | XnorYmm | BitSerialYmm => {
                        !matches!(t, Avx2 | Vnni | Popcnt | VnniPopcnt)
                    }
                    XnorZmm | BitSerialZmm => !matches!(t, Popcnt | VnniPopcnt),
                    Sdot => t != Aarch64Dotprod,
                    _ => false,
                };
                let wide = matches!(t, Avx2 | Vnni | Popcnt | VnniPopcnt);
                if (s == Maddubs && !matches!(t, Native) && !wide) || wide_only {
                    // No row: never chosen there.
                    assert_eq!(gmacs(s, 8, 8, t), None, "{s} on {t:?}");
                    assert_eq!(gmacs(s, 32, 32, t), None, "{s} on {t:?}");
                    continue;
                }
                assert!(
                    gmacs(s, 8, 8, t).is_some()
                        || gmacs(s, 32, 32, t).is_some()
                        || gmacs(s, 2, 2, t).is_some()
                        || gmacs(s, 1, 1, t).is_some(),
                    "{s} on {t:?}"
                );
            }
        }
        assert!(
            TABLE
                .iter()
                .all(|r| r.gmacs > 0.0 && r.strategy.applies(r.wbits, r.abits))
        );
    }

    #[test]
    fn lookup_takes_the_nearest_row_at_or_above() {
        assert_eq!(
            gmacs(Int8Pmaddwd, 8, 4, Native),
            gmacs(Int8Pmaddwd, 8, 8, Native)
        );
        assert_eq!(
            gmacs(Int8PackedW, 3, 2, Native),
            gmacs(Int8PackedW, 3, 8, Native)
        );
        assert_eq!(
            gmacs(Int8PackedW, 1, 8, Native),
            gmacs(Int8PackedW, 2, 8, Native)
        );
        assert_eq!(gmacs(Int8PackedW, 8, 8, Native), None);
        assert_eq!(gmacs(Xnor, 2, 2, Native), None);
        assert!(gmacs(BitSerial, 2, 2, Native).is_some());
        assert_eq!(estimate_ns(Xnor, 2, 2, 100, Native), f64::INFINITY);
    }

    #[test]
    fn choice_follows_the_table() {
        let all = Strategy::ALL;
        assert_eq!(choose(&all, 1, 1, 1 << 20, Native), Some(Xnor));
        assert_eq!(choose(&[], 8, 8, 1, Native), None);
        let c = choose(&all, 8, 8, 1 << 20, Native).unwrap();
        assert!(matches!(c, Int8Pmaddwd | Maddubs | F32Gemm));
        let ns = estimate_ns(c, 8, 8, 1 << 20, Native);
        assert!(ns <= estimate_ns(F32Gemm, 8, 8, 1 << 20, Native));
        assert!(relative_mac_cost(1, 1, Native) < relative_mac_cost(8, 8, Native));
        assert_eq!(choose(&[Maddubs], 4, 8, 1, Base), None);
        assert_eq!(choose(&[Maddubs], 4, 8, 1, Aarch64), None);
        assert_eq!(choose(&[Maddubs], 4, 8, 1, Native), Some(Maddubs));
        assert_eq!(
            without(&[Maddubs], || choose(&[Maddubs], 4, 8, 1, Native)),
            None
        );
        assert_eq!(choose(&[Maddubs], 4, 8, 1, Native), Some(Maddubs));
    }
}
