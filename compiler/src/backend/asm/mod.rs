//! Functions assembled with iced-x86, for the instructions Cranelift's x64 backend does
//! not emit (ymm and zmm registers, `vpdpbusd` and `vpopcntq` zmm, `cpuid`).
//!
//! Cranelift 0.135 stops at 128-bit vectors on x86-64. Where a kernel family needs the
//! full vector width of the CPU, its register tile is assembled here with iced-x86's
//! `CodeAssembler` (never written as bytes by hand) and put into the Cranelift module
//! with `define_function_bytes`, in objects and in the JIT alike. Cranelift's own code
//! calls it with an ordinary C-ABI call; everything around the tile (loops, packing,
//! the epilogue) stays Cranelift's.
//!
//! - An [`AsmFn`] is a value: its parameters decide its bytes and its symbol, so a
//!   kernel asks for the same tile twice and gets one definition, and the same model
//!   and flags give byte-identical objects.
//! - Every function follows the System V calling convention by hand: arguments in
//!   `rdi`, `rsi`, `rdx`; it touches only caller-saved registers (vector registers are
//!   all caller-saved there) or saves them; it ends with `vzeroupper` after using ymm
//!   or zmm registers, so that Cranelift's SSE code after it pays no transition.
//!   They get no unwind information: they never call out and never unwind.
//! - EVEX forms are asked for explicitly (`set_prefer_vex(false)`): iced prefers VEX,
//!   which would turn `vpdpbusd` on xmm/ymm into the AVX-VNNI form.

mod cpu;
mod touch;

use iced_x86::code_asm::CodeAssembler;

use super::kernels::addzmm::AddZmm;
use super::kernels::binzmm::BinZmm;
use super::kernels::dot::DotTile;
use super::kernels::erfzmm::ErfZmm;
use super::kernels::fma::{FmaTile, SiluZmm};
use super::kernels::quantzmm::QuantZmm;
use super::kernels::softzmm::SoftmaxZmm;
use super::kernels::xnor::XnorTile;
use super::target::Tier;

pub(crate) use cpu::cpu_check;
pub(crate) use touch::Touch;

/// A function assembled for the backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum AsmFn {
    /// `int check(void)`: 1 when the CPU and the OS support everything of the tier
    /// (`cpuid`, `xgetbv`), else 0.
    CpuCheck(Tier),
    /// `void tile(const u8 *rows, const u8 *cols, i32 *acc)`: a u8 x i8 register tile.
    Dot(DotTile),
    /// `void tile(const f32 *a, const f32 *b, f32 *c[, const f32 *bias])`: an f32
    /// `vfmadd231ps` register tile.
    Fma(FmaTile),
    /// `void tile(const u64 *rows, const u64 *cols, i32 *out[, const u64 *mask, const
    /// i32 *valid])`: a 1-bit XNOR-popcount register tile.
    Xnor(XnorTile),
    /// `void add(const u8 *a, const u8 *b, u8 *out)`: the fused quantized residual add
    /// on zmm.
    AddZmm(AddZmm),
    /// `void silu(const f32 *x, f32 *out)`: SiLU over a fixed count of floats on zmm.
    SiluZmm(SiluZmm),
    /// `void q(const f32 *x, u8 *out, const u32 *params)`: `quantize` on zmm.
    QuantZmm(QuantZmm),
    /// `void erf(const f32 *x, f32 *out, const u32 *table)`: `erf` on zmm.
    ErfZmm(ErfZmm),
    /// `void softmax(const f32 *x, f32 *out, const u32 *table)`: softmax of rows on zmm.
    SoftmaxZmm(SoftmaxZmm),
    /// `void op(const f32 *a, const f32 *b, f32 *out)`: f32 add/sub/mul/div on zmm.
    BinZmm(BinZmm),
    /// `void touch(const u8 *p)`: software prefetch of a task's rows ([`Touch`]).
    Touch(Touch),
}

impl AsmFn {
    /// A symbol suffix that names every parameter (so distinct functions never share it).
    pub fn symbol(&self) -> String {
        match self {
            AsmFn::CpuCheck(t) => format!(
                "cpu_check_v{}{}{}{}",
                t.level,
                if t.vnni { "_vnni" } else { "" },
                if t.vpopcntdq { "_vpopcntdq" } else { "" },
                if t.bitalg { "_bitalg" } else { "" }
            ),
            AsmFn::Dot(t) => t.symbol(),
            AsmFn::Fma(t) => t.symbol(),
            AsmFn::Xnor(t) => t.symbol(),
            AsmFn::AddZmm(t) => t.symbol(),
            AsmFn::SiluZmm(t) => t.symbol(),
            AsmFn::QuantZmm(t) => t.symbol(),
            AsmFn::ErfZmm(t) => t.symbol(),
            AsmFn::SoftmaxZmm(t) => t.symbol(),
            AsmFn::BinZmm(t) => t.symbol(),
            AsmFn::Touch(t) => t.symbol(),
        }
    }

    /// Pointer parameters it takes.
    pub fn params(&self) -> usize {
        match self {
            AsmFn::CpuCheck(_) => 0,
            AsmFn::Dot(t) => {
                if t.epi.is_some() {
                    6
                } else {
                    3
                }
            }
            AsmFn::Fma(t) => t.params(),
            AsmFn::Xnor(t) => t.params(),
            AsmFn::AddZmm(_) => 3,
            AsmFn::SiluZmm(_) => 2,
            AsmFn::QuantZmm(_) => 3,
            AsmFn::ErfZmm(_) => 3,
            AsmFn::SoftmaxZmm(_) => 3,
            AsmFn::BinZmm(_) => 3,
            AsmFn::Touch(_) => 1,
        }
    }

    /// Whether it returns an i32.
    pub fn returns_i32(&self) -> bool {
        matches!(self, AsmFn::CpuCheck(_))
    }

    /// The machine code (position independent: no relocations).
    pub fn assemble(&self) -> Result<Vec<u8>, String> {
        let r = match self {
            AsmFn::CpuCheck(t) => cpu::assemble(*t),
            AsmFn::Dot(t) => t.assemble(),
            AsmFn::Fma(t) => t.assemble(),
            AsmFn::Xnor(t) => t.assemble(),
            AsmFn::AddZmm(t) => t.assemble(),
            AsmFn::SiluZmm(t) => t.assemble(),
            AsmFn::QuantZmm(t) => t.assemble(),
            AsmFn::ErfZmm(t) => t.assemble(),
            AsmFn::SoftmaxZmm(t) => t.assemble(),
            AsmFn::BinZmm(t) => t.assemble(),
            AsmFn::Touch(t) => t.assemble(),
        };
        r.map_err(|e| format!("assembling {}: {e}", self.symbol()))
    }
}

/// A fresh 64-bit assembler that encodes EVEX where `evex` (see the module notes).
pub(crate) fn assembler(evex: bool) -> Result<CodeAssembler, iced_x86::IcedError> {
    let mut a = CodeAssembler::new(64)?;
    a.set_prefer_vex(!evex);
    Ok(a)
}

/// Whether `bytes` hold an EVEX-encoded (AVX-512) instruction.
pub(crate) fn has_evex(bytes: &[u8]) -> bool {
    use iced_x86::{Decoder, DecoderOptions};
    // The code's name says its encoding (`EVEX_Vmovups_...`); `encoding()` needs an
    // iced-x86 feature this crate does not build.
    Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE)
        .into_iter()
        .any(|i| format!("{:?}", i.code()).starts_with("EVEX_"))
}

/// The Intel-syntax disassembly of `bytes` (what `--emit asm` shows for these
/// functions).
pub(crate) fn disassemble(bytes: &[u8]) -> String {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    let mut d = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
    let mut f = IntelFormatter::new();
    let mut out = String::new();
    let mut text = String::new();
    for ins in &mut d {
        text.clear();
        f.format(&ins, &mut text);
        out.push_str(&format!("  {:04x}  {text}\n", ins.ip()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kernels::dot::{DotIsa, DotTile};
    use crate::backend::kernels::fma::{FmaIsa, FmaTile};

    fn tile(isa: DotIsa, rows_signed: bool) -> DotTile {
        DotTile {
            isa,
            rows: 3,
            vecs: 2,
            quads: 5,
            row_stride: 24,
            col_stride: 256,
            rows_signed,
            w16: false,
            epi: None,
            window: None,
        }
    }

    #[test]
    fn a_window_tile_unrolls_its_taps_at_fixed_displacements() {
        use crate::backend::kernels::dot::DotWindow;
        let win = DotWindow {
            kh: 3,
            kw: 3,
            stride: 1,
            hq: 0,
            wp: 34,
            ow: 32,
            groups: 4,
            plane: 34 * 34 * 4,
        };
        let t = DotTile {
            quads: 36,
            window: Some(win.clone()),
            ..tile(DotIsa::Vnni512, true)
        };
        let text = disassemble(&AsmFn::Dot(t.clone()).assemble().unwrap());
        // 3 rows x 2 vectors per tap, 9 taps per channel quad in the loop body.
        assert_eq!(text.matches("vpdpbusd zmm").count(), 9 * 3 * 2, "{text}");
        // Tap (2, 2) of the second vector: 4 * (2 * 34 + 2) + 64 bytes.
        assert!(
            text.contains(&format!("{:X}h]", 4 * (2 * 34 + 2) + 64)),
            "{text}"
        );
        assert_eq!(win.pixel_disp(16), 64);
        // Stride 2: tap (1, 2) is phase (1, 0), one column on.
        let s2 = DotWindow {
            stride: 2,
            wp: 17,
            hq: 17,
            ..win.clone()
        };
        assert_eq!(s2.tap_disp(5), 4 * (2 * 17 * 17 + 1));
        assert_eq!(win.pixel_disp(32), 4 * 34);
        assert_ne!(
            AsmFn::Dot(t).symbol(),
            AsmFn::Dot(tile(DotIsa::Vnni512, true)).symbol()
        );
    }

    #[test]
    fn the_vnni_tile_is_evex_vpdpbusd_on_zmm() {
        let b = AsmFn::Dot(tile(DotIsa::Vnni512, true)).assemble().unwrap();
        let text = disassemble(&b);
        assert!(text.contains("vpdpbusd zmm"), "{text}");
        assert!(text.contains("vzeroupper"), "{text}");
        assert!(text.trim_end().ends_with("ret"), "{text}");
    }

    #[test]
    fn the_avx2_tile_is_vex_on_ymm() {
        let b = AsmFn::Dot(tile(DotIsa::Avx2, false)).assemble().unwrap();
        let text = disassemble(&b);
        assert!(text.contains("vpmaddubsw ymm"), "{text}");
        assert!(text.contains("vpmaddwd ymm"), "{text}");
        assert!(!text.contains("zmm"), "{text}");
    }

    #[test]
    fn the_widening_tile_widens_only_the_run_time_bytes_with_i16_weights() {
        let count = |t: &str, s: &str| t.matches(s).count();
        for rows_signed in [true, false] {
            let t8 = DotTile {
                rows: 2,
                ..tile(DotIsa::Avx2Wide, rows_signed)
            };
            let t16 = DotTile {
                w16: true,
                ..t8.clone()
            };
            let a = disassemble(&AsmFn::Dot(t8.clone()).assemble().unwrap());
            let b = disassemble(&AsmFn::Dot(t16.clone()).assemble().unwrap());
            assert_eq!(count(&a, "vpmaddwd ymm"), 8, "{a}");
            assert_eq!(count(&b, "vpmaddwd ymm"), 8, "{b}");
            // 2 rows x 2 column vectors per quad: the rows widen twice, the columns 4
            // times; with i16 weights only the run-time operand.
            let widen = |t: &str| count(t, "vpmovsxbw") + count(t, "vpmovzxbw");
            assert_eq!(widen(&a), 6, "{a}");
            assert_eq!(widen(&b), if rows_signed { 4 } else { 2 }, "{b}");
            if rows_signed {
                assert!(b.contains("vpbroadcastq ymm"), "{b}");
            }
            assert_ne!(AsmFn::Dot(t8).symbol(), AsmFn::Dot(t16).symbol());
        }
    }

    fn ftile(isa: FmaIsa, valid: u32) -> FmaTile {
        FmaTile {
            isa,
            rows: 3,
            vecs: 2,
            k: 7,
            a_step: 12,
            a_row: 4,
            panel_bytes: 7 * isa.lanes() as u32 * 4,
            b_k: isa.lanes() as u32 * 4,
            ldc_bytes: 400,
            valid,
            bias: true,
            col_bias: false,
            lo: Some(0f32.to_bits()),
            hi: Some(6f32.to_bits()),
            acc_in: false,
            silu: false,
        }
    }

    #[test]
    fn the_f32_tiles_are_vfmadd231ps_on_zmm_and_ymm() {
        let z = disassemble(&AsmFn::Fma(ftile(FmaIsa::Zmm, 5)).assemble().unwrap());
        assert!(z.contains("vfmadd231ps zmm"), "{z}");
        assert!(z.contains("{1to16}"), "{z}");
        assert!(z.contains("{k1}"), "{z}");
        assert!(z.contains("vmaxps zmm") && z.contains("vminps zmm"), "{z}");
        assert!(z.trim_end().ends_with("ret"), "{z}");
        let y = disassemble(&AsmFn::Fma(ftile(FmaIsa::Ymm, 5)).assemble().unwrap());
        assert!(y.contains("vfmadd231ps ymm"), "{y}");
        assert!(y.contains("vextractf128") && y.contains("vmovss"), "{y}");
        assert!(!y.contains("zmm") && !y.contains("{1to"), "{y}");
        assert!(y.contains("vzeroupper"), "{y}");
        let a = AsmFn::Fma(ftile(FmaIsa::Zmm, 16));
        assert_ne!(a.symbol(), AsmFn::Fma(ftile(FmaIsa::Zmm, 5)).symbol());
        assert_eq!(a.assemble().unwrap(), a.clone().assemble().unwrap());
        assert_eq!(a.params(), 4);
    }

    #[test]
    fn the_zmm_tile_applies_silu_after_the_stores() {
        let t = FmaTile {
            silu: true,
            ..ftile(FmaIsa::Zmm, 5)
        };
        let z = disassemble(&AsmFn::Fma(t.clone()).assemble().unwrap());
        for ins in ["vscalefps zmm", "vrcp14ps zmm", "vrndscaleps zmm"] {
            assert!(z.contains(ins), "{ins}: {z}");
        }
        assert!(!z.contains("vdivps"), "{z}");
        assert_ne!(
            AsmFn::Fma(t).symbol(),
            AsmFn::Fma(ftile(FmaIsa::Zmm, 5)).symbol()
        );
    }

    #[test]
    fn same_parameters_same_bytes_and_names() {
        let a = AsmFn::Dot(tile(DotIsa::Vnni512, false));
        assert_eq!(a.assemble().unwrap(), a.clone().assemble().unwrap());
        let b = AsmFn::Dot(tile(DotIsa::Vnni512, true));
        assert_ne!(a.symbol(), b.symbol());
        let c = AsmFn::CpuCheck(Tier::BASELINE);
        assert!(disassemble(&c.assemble().unwrap()).contains("cpuid"));
    }

    /// The guard `emit.rs` runs on code for tiers without AVX-512: the same
    /// instruction is EVEX when the assembler prefers it and VEX otherwise.
    #[test]
    fn evex_encodings_are_recognised() {
        use iced_x86::code_asm::*;
        for (evex, want) in [(true, true), (false, false)] {
            let mut a = assembler(evex).unwrap();
            a.vpaddd(ymm0, ymm1, ymm2).unwrap();
            a.ret().unwrap();
            assert_eq!(has_evex(&a.assemble(0).unwrap()), want);
        }
    }
}
