//! Runtime ISA detection, forcing and kernel selection, checked against what the CI run *says*
//! the CPU is (scripts/test-aarch64.sh runs this binary under several qemu CPU models):
//!
//! * `QKERNELS_EXPECT_ISAS=scalar,neon,neondot` — `Isa::supported()` must be exactly this list;
//! * `QKERNELS_EXPECT_ACTIVE=neon` — `isa::active()` must be this ISA (set together with
//!   `QKERNELS_ISA` to check forcing, or alone to check the default choice).
//!
//! Without those variables the tests still check the invariants that hold on every CPU.

use qkernels_kernels::gemm::{all_kernels, best_kernel, kernels_for};
use qkernels_kernels::isa::{self, Isa};

fn env_list(name: &str) -> Option<Vec<Isa>> {
    let v = std::env::var(name).ok()?;
    Some(
        v.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().unwrap_or_else(|e| panic!("{name}: {e}")))
            .collect(),
    )
}

#[test]
fn supported_matches_expected_cpu_model() {
    let supported = Isa::supported();
    if let Some(expected) = env_list("QKERNELS_EXPECT_ISAS") {
        assert_eq!(
            supported, expected,
            "QKERNELS_EXPECT_ISAS disagrees with runtime detection"
        );
    }
    // Invariants on every CPU: scalar first, best last, each ISA implies the ones it builds on,
    // and no ISA of the other architecture.
    assert_eq!(supported.first(), Some(&Isa::Scalar));
    assert_eq!(supported.last(), Some(&Isa::best()));
    let has = |i: Isa| supported.contains(&i);
    assert!(!has(Isa::NeonI8mm) || has(Isa::NeonDot));
    assert!(!has(Isa::NeonDot) || has(Isa::Neon));
    assert!(!has(Isa::Avx512Vnni) || has(Isa::Avx2));
    if cfg!(target_arch = "aarch64") {
        assert!(has(Isa::Neon), "NEON is baseline on aarch64");
        assert!(!has(Isa::Avx2) && !has(Isa::Avx512Vnni));
    } else {
        assert!(!has(Isa::Neon) && !has(Isa::NeonDot) && !has(Isa::NeonI8mm));
    }
}

#[test]
fn active_isa_honours_forcing() {
    let active = isa::active();
    assert!(active.is_supported());
    if let Some(expected) = env_list("QKERNELS_EXPECT_ACTIVE") {
        assert_eq!(vec![active], expected, "QKERNELS_EXPECT_ACTIVE");
    }
    match std::env::var("QKERNELS_ISA") {
        Ok(v) if !v.trim().is_empty() => match isa::resolve_forced(&v) {
            Ok(forced) => assert_eq!(active, forced, "QKERNELS_ISA={v} must be honoured"),
            // Unknown or unsupported: ignored, the best ISA runs.
            Err(_) => assert_eq!(active, Isa::best()),
        },
        _ => assert_eq!(active, Isa::best()),
    }
}

#[test]
fn required_isas_are_present() {
    isa::require_from_env().unwrap();
}

#[test]
fn best_kernel_is_of_the_requested_isa() {
    for isa in Isa::supported() {
        let exact = best_kernel(isa, false);
        assert!(!exact.saturating, "{}", exact.name);
        assert!(exact.isa.is_supported(), "{}", exact.name);
        assert!(!exact.name.ends_with("_test"), "{}", exact.name);
        // Every supported ISA that has an exact kernel gets its own.
        if !kernels_for(isa).iter().all(|k| k.saturating) {
            assert_eq!(exact.isa, isa, "{}", exact.name);
        }
        let sat = best_kernel(isa, true);
        assert!(sat.saturating, "{}", sat.name);
        assert!(sat.isa.is_supported(), "{}", sat.name);
        if cfg!(target_arch = "aarch64") && isa != Isa::Scalar {
            // Dot products cannot saturate pairs: every ARM ISA uses the NEON `_sat16`.
            assert_eq!(sat.isa, Isa::Neon, "{}", sat.name);
        }
    }
    if cfg!(target_arch = "aarch64") {
        // Every ARM ISA has a production kernel compiled in.
        for isa in [Isa::Neon, Isa::NeonDot, Isa::NeonI8mm] {
            assert!(
                all_kernels()
                    .iter()
                    .any(|k| k.isa == isa && !k.saturating && !k.name.ends_with("_test")),
                "no exact kernel for {isa}"
            );
        }
    }
}
