//! Instruction-set selection.
//!
//! Every kernel family exists once per ISA. Which one runs is decided **once per process**
//! ([`active`]): the best ISA the CPU supports, unless `QKERNELS_ISA=<token>` forces a lower
//! (still supported) one. Tests and benches do not go through [`active`]: every public entry
//! point also accepts an explicit [`Isa`], so a test can loop over [`Isa::supported`].
//!
//! `QKERNELS_REQUIRE_ISA=<token>[,<token>…]` makes [`require_from_env`] fail loudly when one of
//! the named ISAs is not supported here, so CI cannot silently skip an ISA's tests.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// An instruction set a kernel family is written for.
///
/// Ordered from least to most capable within one architecture; [`Isa::supported`] lists the
/// ones this CPU can run, best last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust (with `wide` where it helps). Runs everywhere; same packed contracts.
    Scalar,
    /// x86-64 AVX2 (exact: widened `vpmaddwd`, never saturating unless asked).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL + VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// aarch64 Advanced SIMD baseline (widening `smlal`).
    Neon,
    /// aarch64 with the dot-product extension (`sdot`/`udot`).
    NeonDot,
    /// aarch64 with the int8 matrix-multiply extension (`usdot`/`usmmla`).
    NeonI8mm,
}

impl Isa {
    /// Every ISA qkernels knows, in a fixed order.
    pub const ALL: [Isa; 6] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512Vnni,
        Isa::Neon,
        Isa::NeonDot,
        Isa::NeonI8mm,
    ];

    /// The token used by `QKERNELS_ISA`, the CLI and the C API.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::NeonDot => "neondot",
            Isa::NeonI8mm => "neoni8mm",
        }
    }

    /// Same as [`Isa::name`], NUL-terminated for C callers.
    pub const fn c_name(self) -> &'static std::ffi::CStr {
        match self {
            Isa::Scalar => c"scalar",
            Isa::Avx2 => c"avx2",
            Isa::Avx512Vnni => c"avx512vnni",
            Isa::Neon => c"neon",
            Isa::NeonDot => c"neondot",
            Isa::NeonI8mm => c"neoni8mm",
        }
    }

    /// Whether this CPU can run kernels of this ISA (runtime detection, cached by std).
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
                    && Isa::Avx2.is_supported()
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => {
                std::arch::is_aarch64_feature_detected!("neon")
                    && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::NeonI8mm => {
                std::arch::is_aarch64_feature_detected!("neon")
                    && std::arch::is_aarch64_feature_detected!("dotprod")
                    && std::arch::is_aarch64_feature_detected!("i8mm")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every ISA this CPU supports, worst first (so `supported().last()` is the best).
    pub fn supported() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }

    /// The best ISA this CPU supports.
    pub fn best() -> Isa {
        *Isa::supported().last().unwrap_or(&Isa::Scalar)
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A token that names no ISA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownIsa(pub String);

impl fmt::Display for UnknownIsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown ISA {:?} (expected one of scalar, avx2, avx512vnni, neon, neondot, neoni8mm)",
            self.0
        )
    }
}

impl std::error::Error for UnknownIsa {}

impl FromStr for Isa {
    type Err = UnknownIsa;
    fn from_str(s: &str) -> Result<Isa, UnknownIsa> {
        let t = s.trim().to_ascii_lowercase();
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == t)
            .ok_or_else(|| UnknownIsa(s.to_string()))
    }
}

/// Resolves a `QKERNELS_ISA` value: `Ok(isa)` if it names a supported ISA.
pub fn resolve_forced(value: &str) -> Result<Isa, String> {
    let isa: Isa = value.parse().map_err(|e: UnknownIsa| e.to_string())?;
    if isa.is_supported() {
        Ok(isa)
    } else {
        Err(format!(
            "QKERNELS_ISA={value}: this CPU does not support {isa}"
        ))
    }
}

static ACTIVE: OnceLock<Isa> = OnceLock::new();

/// The ISA used by every call that does not name one: chosen once per process.
///
/// `QKERNELS_ISA=<token>` forces a supported ISA. An unknown or unsupported token is reported
/// once on stderr and ignored (the best ISA runs): a library must not abort its host process
/// over an environment variable.
pub fn active() -> Isa {
    *ACTIVE.get_or_init(|| match std::env::var("QKERNELS_ISA") {
        Ok(v) if !v.trim().is_empty() => match resolve_forced(&v) {
            Ok(isa) => isa,
            Err(msg) => {
                eprintln!("qkernels: {msg}; using {}", Isa::best());
                Isa::best()
            }
        },
        _ => Isa::best(),
    })
}

/// Checks `QKERNELS_REQUIRE_ISA` (comma-separated tokens): `Err` names each required ISA that
/// this CPU lacks (or that is not a valid token). Test suites call this so that a CI run cannot
/// pass while silently skipping an ISA.
pub fn require_from_env() -> Result<(), String> {
    let Ok(v) = std::env::var("QKERNELS_REQUIRE_ISA") else {
        return Ok(());
    };
    let mut missing = Vec::new();
    for tok in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match tok.parse::<Isa>() {
            Ok(isa) if isa.is_supported() => {}
            Ok(isa) => missing.push(format!("{isa} (not supported by this CPU)")),
            Err(e) => missing.push(e.to_string()),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("QKERNELS_REQUIRE_ISA: {}", missing.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>(), Ok(isa));
            assert_eq!(isa.c_name().to_str().unwrap(), isa.name());
        }
        assert!("avx3".parse::<Isa>().is_err());
    }

    #[test]
    fn scalar_always_supported_and_best_is_supported() {
        assert!(Isa::Scalar.is_supported());
        assert!(Isa::best().is_supported());
        assert_eq!(Isa::supported()[0], Isa::Scalar);
        assert!(Isa::supported().contains(&active()));
    }

    #[test]
    fn required_isas_are_present() {
        require_from_env().unwrap();
    }
}
