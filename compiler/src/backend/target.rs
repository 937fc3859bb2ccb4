//! Code generation targets: a triple plus a named CPU feature set.
//!
//! Objects are built for an explicit, named flag set so that the same command gives the
//! same bytes on every machine: `baseline` (x86_64: SSE2 only; aarch64: the base ISA),
//! a Cranelift preset (`haswell`, `znver1`, `skylake`, ...), or `native` (the host's
//! detected features, only for the host triple, and the default of the JIT).

use std::str::FromStr;

use cranelift_codegen::isa::{self, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use target_lexicon::Triple;

use super::BackendError;

/// A code generation target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub triple: Triple,
    /// `baseline`, `native` or a Cranelift ISA preset name.
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
        } else {
            let mut b = isa::lookup(self.triple.clone()).map_err(|e| {
                BackendError::Target(format!("no code generator for {}: {e}", self.triple))
            })?;
            if self.cpu != "baseline" {
                b.enable(&self.cpu).map_err(|_| {
                    BackendError::Target(format!(
                        "unknown CPU `{}` for {}; use baseline, native, or a preset such \
                         as haswell, skylake, znver1 (x86_64)",
                        self.cpu, self.triple
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
}
