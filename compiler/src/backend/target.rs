//! Code generation targets: a triple plus a named CPU feature set.
//!
//! Objects are built for an explicit, named flag set so that the same command gives the
//! same bytes on every machine: `baseline` (x86_64: SSE2 only; aarch64: the base ISA),
//! an x86-64 level with additions (`x86-64-v3`, `x86-64-v4+vnni+vpopcntdq`), a
//! Cranelift preset (`haswell`, `znver1`, `skylake`, ...), or `native` (the host's
//! detected features, only for the host triple, and the default of the JIT).
//!
//! Cranelift's own flags describe what *its* lowering may use. The wide kernels that
//! qcc assembles itself (`backend::asm`) need facts Cranelift has no flag for
//! (AVX-512 BW, VPOPCNTDQ), so every x86_64 target also has a [`Tier`]: the x86-64
//! level and the extensions the object may use. The tier picks the kernels (through
//! the cost table's rows per tier), is named in the report and the header, and
//! `NAME_run` checks it against the CPU before running anything.

use std::str::FromStr;

use cranelift_codegen::isa::{self, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use target_lexicon::Triple;

use super::BackendError;

/// A code generation target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub triple: Triple,
    /// `baseline`, `native`, an x86-64 level (`x86-64-v3+...`) or a Cranelift preset.
    pub cpu: String,
}

impl Target {
    /// The host with its detected features (what the JIT uses).
    pub fn host() -> Target {
        Target {
            triple: Triple::host(),
            cpu: "native".into(),
        }
    }

    /// A target from a triple (`x86_64-unknown-linux-gnu`, `aarch64-unknown-linux-gnu`)
    /// and a CPU name; both are checked now, so errors name the flag's value.
    pub fn new(triple: &str, cpu: &str) -> Result<Target, BackendError> {
        let triple = Triple::from_str(triple).map_err(|e| {
            BackendError::Target(format!(
                "unknown triple `{triple}` ({e}); try x86_64-unknown-linux-gnu or \
                 aarch64-unknown-linux-gnu"
            ))
        })?;
        let t = Target {
            triple,
            cpu: cpu.to_string(),
        };
        t.isa(true)?;
        Ok(t)
    }

    /// The Cranelift ISA for this target; `pic` for objects, not for the JIT.
    pub(crate) fn isa(&self, pic: bool) -> Result<OwnedTargetIsa, BackendError> {
        let mut flags = settings::builder();
        let set = |flags: &mut settings::Builder, k: &str, v: &str| {
            flags
                .set(k, v)
                .map_err(|e| BackendError::Internal(format!("flag {k}={v}: {e}")))
        };
        set(&mut flags, "opt_level", "speed")?;
        set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
        set(
            &mut flags,
            "enable_verifier",
            if cfg!(debug_assertions) {
                "true"
            } else {
                "false"
            },
        )?;
        // Kernels never probe the stack: their frames are small and fixed.
        set(&mut flags, "enable_probestack", "false")?;
        let shared = settings::Flags::new(flags);
        let mut builder = if self.cpu == "native" {
            if self.triple != Triple::host() {
                return Err(BackendError::Target(format!(
                    "--cpu native describes this machine ({}), not {}; name a CPU such as \
                     baseline, haswell or znver1",
                    Triple::host(),
                    self.triple
                )));
            }
            cranelift_native::builder().map_err(|e| {
                BackendError::Target(format!("cannot detect the host's features: {e}"))
            })?
        } else if let Some(level) = self.cpu.strip_prefix("x86-64") {
            let tier = Tier::parse_level(level).map_err(|e| {
                BackendError::Target(format!("--cpu {}: {e}; {}", self.cpu, Tier::HELP))
            })?;
            if !matches!(
                self.triple.architecture,
                target_lexicon::Architecture::X86_64
            ) {
                return Err(BackendError::Target(format!(
                    "--cpu {} names an x86-64 level, but the target is {}; use baseline or \
                     native there",
                    self.cpu, self.triple
                )));
            }
            let mut b = isa::lookup(self.triple.clone()).map_err(|e| {
                BackendError::Target(format!("no code generator for {}: {e}", self.triple))
            })?;
            for flag in tier.cranelift_flags() {
                b.enable(flag)
                    .map_err(|e| BackendError::Internal(format!("flag {flag}: {e}")))?;
            }
            b
        } else if let Some(adds) = self.cpu.strip_prefix("baseline+") {
            if !matches!(
                self.triple.architecture,
                target_lexicon::Architecture::Aarch64(_)
            ) {
                return Err(BackendError::Target(format!(
                    "--cpu {}: additions to baseline name aarch64 extensions ({}); for                      x86_64 use {}",
                    self.cpu,
                    AARCH64_HELP,
                    Tier::HELP
                )));
            }
            let mut b = isa::lookup(self.triple.clone()).map_err(|e| {
                BackendError::Target(format!("no code generator for {}: {e}", self.triple))
            })?;
            for add in adds.split('+') {
                let flag = match add {
                    "dotprod" => "has_dotprod",
                    "i8mm" => "has_i8mm",
                    "lse" => "has_lse",
                    "fp16" => "has_fp16",
                    other => {
                        return Err(BackendError::Target(format!(
                            "--cpu {}: unknown aarch64 extension `{other}`; {AARCH64_HELP}",
                            self.cpu
                        )));
                    }
                };
                b.enable(flag)
                    .map_err(|e| BackendError::Internal(format!("flag {flag}: {e}")))?;
            }
            b
        } else {
            let mut b = isa::lookup(self.triple.clone()).map_err(|e| {
                BackendError::Target(format!("no code generator for {}: {e}", self.triple))
            })?;
            if self.cpu != "baseline" {
                b.enable(&self.cpu).map_err(|_| {
                    BackendError::Target(format!(
                        "unknown CPU `{}` for {}; use baseline, native, {}, or a \
                         Cranelift preset such as haswell, skylake, znver1 (x86_64)",
                        self.cpu,
                        self.triple,
                        Tier::HELP
                    ))
                })?;
            }
            b
        };
        let _ = &mut builder;
        builder
            .finish(shared)
            .map_err(|e| BackendError::Target(format!("{}: {e}", self.triple)))
    }
}

impl Target {
    /// The tier of the wide kernels for this target: from the level named by `--cpu`,
    /// detected on the host for `native`, or read from a preset's Cranelift flags
    /// (which cannot say VPOPCNTDQ: presets never get it). None on aarch64.
    pub fn tier(&self) -> Result<Option<Tier>, BackendError> {
        if !matches!(
            self.triple.architecture,
            target_lexicon::Architecture::X86_64
        ) {
            return Ok(None);
        }
        if self.cpu == "native" {
            return Ok(Some(Tier::host()));
        }
        if let Some(level) = self.cpu.strip_prefix("x86-64") {
            return Tier::parse_level(level)
                .map(Some)
                .map_err(|e| BackendError::Target(format!("--cpu {}: {e}", self.cpu)));
        }
        Ok(Some(Tier::of_isa(&*self.isa(true)?)))
    }
}

/// What `--cpu` accepts for aarch64 besides `baseline` and `native`, for error messages.
const AARCH64_HELP: &str = "aarch64 takes baseline with additions +dotprod (FEAT_DotProd: \
     `sdot` for the u8 x i8 kernels), +i8mm, +lse, +fp16 (e.g. baseline+dotprod)";

/// An x86-64 feature tier: the level (1: SSE2 only; 2: SSE4.2, POPCNT; 3: AVX2, FMA,
/// BMI1/2, LZCNT; 4: AVX-512 F/BW/DQ/VL) and the AVX-512 additions the wide kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tier {
    pub level: u8,
    /// AVX512-VNNI (`vpdpbusd` on zmm).
    pub vnni: bool,
    /// AVX512-VPOPCNTDQ (`vpopcntq`).
    pub vpopcntdq: bool,
    /// AVX512-BITALG (`vpopcntb`).
    pub bitalg: bool,
}

impl Tier {
    /// What `--cpu` accepts as a level, for error messages.
    pub const HELP: &'static str = "x86-64 levels are x86-64-v2, x86-64-v3 (AVX2, FMA, BMI) and \
         x86-64-v4 (AVX-512 F/BW/DQ/VL), with additions +vnni, +vpopcntdq, +bitalg on v4 \
         (e.g. x86-64-v4+vnni+vpopcntdq)";

    pub const BASELINE: Tier = Tier {
        level: 1,
        vnni: false,
        vpopcntdq: false,
        bitalg: false,
    };

    /// Parses what follows `x86-64` in `--cpu`: `-vN` and `+ext` additions.
    fn parse_level(s: &str) -> Result<Tier, String> {
        let mut parts = s.split('+');
        let head = parts.next().unwrap_or("");
        let level = match head {
            "" => 1,
            "-v2" => 2,
            "-v3" => 3,
            "-v4" => 4,
            other => return Err(format!("unknown x86-64 level `x86-64{other}`")),
        };
        let mut t = Tier {
            level,
            ..Tier::BASELINE
        };
        for ext in parts {
            let slot = match ext {
                "vnni" => &mut t.vnni,
                "vpopcntdq" => &mut t.vpopcntdq,
                "bitalg" => &mut t.bitalg,
                other => return Err(format!("unknown addition `+{other}`")),
            };
            if level < 4 {
                return Err(format!(
                    "+{ext} is an AVX-512 extension: it needs x86-64-v4"
                ));
            }
            *slot = true;
        }
        Ok(t)
    }

    /// The host's tier (std's run-time detection; the level needs every feature of it).
    pub fn host() -> Tier {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let v2 = has!("sse3")
                && has!("ssse3")
                && has!("sse4.1")
                && has!("sse4.2")
                && has!("popcnt")
                && has!("cmpxchg16b");
            let v3 = v2
                && has!("avx")
                && has!("avx2")
                && has!("fma")
                && has!("bmi1")
                && has!("bmi2")
                && has!("lzcnt");
            let v4 =
                v3 && has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl");
            Tier {
                level: if v4 {
                    4
                } else if v3 {
                    3
                } else if v2 {
                    2
                } else {
                    1
                },
                vnni: v4 && has!("avx512vnni"),
                vpopcntdq: v4 && has!("avx512vpopcntdq"),
                bitalg: v4 && has!("avx512bitalg"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Tier::BASELINE
    }

    /// The tier a Cranelift x64 flag set implies (AVX-512 BW is taken to come with
    /// F + DQ + VL, as on every CPU that has them; VPOPCNTDQ has no flag).
    pub(crate) fn of_isa(isa: &dyn cranelift_codegen::isa::TargetIsa) -> Tier {
        let has = |name: &str| {
            isa.isa_flags()
                .iter()
                .any(|f| f.name == name && f.as_bool() == Some(true))
        };
        let v2 = [
            "has_sse3",
            "has_ssse3",
            "has_sse41",
            "has_sse42",
            "has_popcnt",
        ]
        .iter()
        .all(|f| has(f));
        let v3 = v2
            && [
                "has_avx",
                "has_avx2",
                "has_fma",
                "has_bmi1",
                "has_bmi2",
                "has_lzcnt",
            ]
            .iter()
            .all(|f| has(f));
        let v4 = v3 && has("has_avx512f") && has("has_avx512dq") && has("has_avx512vl");
        Tier {
            level: if v4 {
                4
            } else if v3 {
                3
            } else if v2 {
                2
            } else {
                1
            },
            vnni: v4 && has("has_avx512vnni"),
            vpopcntdq: false,
            bitalg: v4 && has("has_avx512bitalg"),
        }
    }

    /// The Cranelift flags of this tier.
    fn cranelift_flags(self) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.level >= 2 {
            f.extend(["sse42", "has_popcnt", "has_cmpxchg16b"]);
        }
        if self.level >= 3 {
            f.extend([
                "has_avx",
                "has_avx2",
                "has_fma",
                "has_bmi1",
                "has_bmi2",
                "has_lzcnt",
            ]);
        }
        if self.level >= 4 {
            f.extend(["has_avx512f", "has_avx512dq", "has_avx512vl"]);
        }
        if self.vnni {
            f.push("has_avx512vnni");
        }
        if self.bitalg {
            f.push("has_avx512bitalg");
        }
        f
    }

    /// Whether everything this tier may use is also in `other`.
    pub fn within(self, other: Tier) -> bool {
        self.level <= other.level
            && (!self.vnni || other.vnni)
            && (!self.vpopcntdq || other.vpopcntdq)
            && (!self.bitalg || other.bitalg)
    }

    /// Whether the ymm (AVX2) tiles may run.
    pub fn avx2(self) -> bool {
        self.level >= 3
    }

    /// Whether the zmm `vpdpbusd` tiles may run.
    pub fn avx512_vnni(self) -> bool {
        self.level >= 4 && self.vnni
    }

    /// Whether the zmm `vpopcntq` tiles (1-bit XNOR-popcount) may run.
    pub fn avx512_vpopcntdq(self) -> bool {
        self.level >= 4 && self.vpopcntdq
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.level {
            1 => f.write_str("x86-64")?,
            l => write!(f, "x86-64-v{l}")?,
        }
        for (on, name) in [
            (self.vnni, "+vnni"),
            (self.vpopcntdq, "+vpopcntdq"),
            (self.bitalg, "+bitalg"),
        ] {
            if on {
                f.write_str(name)?;
            }
        }
        Ok(())
    }
}

/// What the kernels may use on an ISA.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Features {
    /// A fused multiply-add instruction (otherwise `fma` would become a libcall).
    pub fma: bool,
    /// Popcount kernels count 16 bytes at a time (aarch64 `cnt`): the scalar popcount
    /// round-trips through a SIMD register there.
    pub vector_popcnt: bool,
    /// Two-vector byte shuffles with constant masks are single instructions (x86_64:
    /// SSSE3 `palignr`; otherwise a `pshufb` libcall; aarch64: always, `ext`).
    pub shuffle: bool,
    /// The x86-64 tier of the assembled wide kernels (None: aarch64, or a target whose
    /// calling convention the assembled kernels do not follow).
    pub tier: Option<Tier>,
}
