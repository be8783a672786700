//! Generated battery for every GEMM microkernel × every ISA this CPU supports (XNNPACK style):
//! each (kernel, shape, data) case packs A and B through the kernel's own packers, runs the
//! microkernel on one tile and compares every i32 with `qkernels_ref` (`assert_eq!`, tolerance 0).
//!
//! `QKERNELS_REQUIRE_ISA=avx2,avx512vnni` (or neon,neondot,neoni8mm under qemu) makes the run fail
//! if one of those ISAs is unsupported, so CI cannot skip an ISA silently.

use qkernels_kernels::gemm::{GemmKernel, all_kernels};
use qkernels_kernels::isa::{self, Isa};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Runs `kernel` on an `m × n` tile with depth `k`; A rows strided by `lda`, C rows by `ldc`.
fn run_tile(
    kernel: &GemmKernel,
    m: usize,
    n: usize,
    k: usize,
    a: &[u8],
    lda: usize,
    w: &[i8],
    ldc: usize,
    accumulate_into: Option<&[i32]>,
) -> Vec<i32> {
    assert!(kernel.isa.is_supported());
    let mut pa = vec![0u8; (kernel.a_panel_bytes)(k)];
    let mut pb = vec![0u8; (kernel.b_panel_bytes)(k)];
    (kernel.pack_a)(a, lda, m, k, &mut pa);
    (kernel.pack_b)(w, k, n, k, &mut pb);
    let mut c = vec![i32::MIN; m.max(1) * ldc];
    if let Some(init) = accumulate_into {
        for i in 0..m {
            c[i * ldc..i * ldc + n].copy_from_slice(&init[i * n..(i + 1) * n]);
        }
    }
    // SAFETY: the panels were packed by this kernel's packers for `k` (rounded to KR inside),
    // `c` holds `m` rows of stride `ldc >= n`, `m <= MR`, `n <= NR`, and the ISA is supported.
    unsafe {
        (kernel.ukernel)(
            kernel.round_k(k),
            pa.as_ptr(),
            pb.as_ptr(),
            c.as_mut_ptr(),
            ldc,
            m,
            n,
            accumulate_into.is_some(),
        )
    };
    // Entries outside the tile must be untouched.
    for i in 0..m {
        for j in n..ldc {
            assert_eq!(
                c[i * ldc + j],
                i32::MIN,
                "{}: wrote outside the tile",
                kernel.name
            );
        }
    }
    (0..m)
        .flat_map(|i| c[i * ldc..i * ldc + n].to_vec())
        .collect()
}

fn reference(m: usize, n: usize, k: usize, a: &[u8], lda: usize, w: &[i8], sat: bool) -> Vec<i32> {
    let dense: Vec<u8> = (0..m)
        .flat_map(|i| a[i * lda..i * lda + k].to_vec())
        .collect();
    qkernels_ref::matmul_u8s8s32_ref(m, n, k, &dense, w, sat)
}

#[derive(Clone, Copy, Debug)]
enum Fill {
    Random,
    /// 255 × −128 on every K: the worst case for i16 pair saturation and for i32 range.
    Extreme,
    /// Activations ≤ 127 (reduce_range data: can never saturate).
    Low7,
    Zeros,
}

fn data(
    rng: &mut StdRng,
    fill: Fill,
    m: usize,
    lda: usize,
    n: usize,
    k: usize,
) -> (Vec<u8>, Vec<i8>) {
    let a = (0..m.max(1) * lda)
        .map(|_| match fill {
            Fill::Random => rng.r#gen::<u8>(),
            Fill::Extreme => 255,
            Fill::Low7 => rng.gen_range(0..=127),
            Fill::Zeros => 0,
        })
        .collect();
    let w = (0..n * k)
        .map(|_| match fill {
            Fill::Random | Fill::Low7 => rng.r#gen::<i8>(),
            Fill::Extreme => -128,
            Fill::Zeros => 0,
        })
        .collect();
    (a, w)
}

/// An `_a7` kernel's contract covers activations ≤ `a_max` only: clamp its inputs (extreme data
/// then becomes 127 × −128, the worst case for its i16 pairs).
fn clamp_a(kernel: &GemmKernel, a: &mut [u8]) {
    for v in a.iter_mut() {
        *v = (*v).min(kernel.a_max);
    }
}

fn supported_kernels() -> Vec<&'static GemmKernel> {
    isa::require_from_env().expect("required ISA missing");
    let ks: Vec<_> = all_kernels()
        .into_iter()
        .filter(|k| k.isa.is_supported())
        .collect();
    assert!(ks.iter().any(|k| k.isa == Isa::Scalar));
    ks
}

fn check_kernel(kernel: &GemmKernel, rng: &mut StdRng) -> usize {
    let (mr, nr, kr) = (kernel.mr, kernel.nr, kernel.kr);
    let mut ks: Vec<usize> = vec![
        1,
        kr.saturating_sub(1).max(1),
        kr,
        kr + 1,
        2 * kr,
        2 * kr + 3,
        64,
        127,
        300,
        1031,
        2050,
    ];
    ks.sort_unstable();
    ks.dedup();
    let ms: Vec<usize> = (1..=mr).collect();
    // 1, the vector boundaries (8 / 16 lanes) ± 1, NR − 1, NR.
    let mut ns: Vec<usize> = vec![1, nr.saturating_sub(1).max(1), nr, 7, 9, 15, 17, 31, 33];
    ns.retain(|&n| n <= nr);
    ns.sort_unstable();
    ns.dedup();
    let mut cases = 0;
    for &k in &ks {
        for &m in &ms {
            for &n in &ns {
                // Deep K (> 1000): only full and single-row tiles, random and extreme data, to
                // keep debug-build runtime modest.
                let deep = k > 1000;
                if deep && m != 1 && m != mr {
                    continue;
                }
                for fill in [Fill::Random, Fill::Extreme, Fill::Low7, Fill::Zeros] {
                    if deep && matches!(fill, Fill::Low7 | Fill::Zeros) {
                        continue;
                    }
                    // strided A (prime extra stride) and strided C
                    let lda = k + 7;
                    let ldc = n + 3;
                    let (mut a, w) = data(rng, fill, m, lda, n, k);
                    clamp_a(kernel, &mut a);
                    let want = reference(m, n, k, &a, lda, &w, kernel.saturating);
                    let got = run_tile(kernel, m, n, k, &a, lda, &w, ldc, None);
                    assert_eq!(got, want, "{} m={m} n={n} k={k} {fill:?}", kernel.name);
                    // accumulate mode adds to what is there
                    let init: Vec<i32> = (0..m * n)
                        .map(|_| rng.gen_range(-100_000..100_000))
                        .collect();
                    let got = run_tile(kernel, m, n, k, &a, lda, &w, ldc, Some(&init));
                    let want_acc: Vec<i32> = want
                        .iter()
                        .zip(&init)
                        .map(|(x, y)| x.wrapping_add(*y))
                        .collect();
                    assert_eq!(
                        got, want_acc,
                        "{} accumulate m={m} n={n} k={k} {fill:?}",
                        kernel.name
                    );
                    cases += 2;
                }
            }
        }
    }
    cases
}

#[test]
fn every_kernel_matches_reference() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut total = 0;
    for kernel in supported_kernels() {
        let n = check_kernel(kernel, &mut rng);
        println!("{:<40} {:>6} cases ok", kernel.name, n);
        total += n;
    }
    println!("gemm battery: {total} cases");
}

/// `k_overflow`: 255 × −128 over K = 65 800 exceeds i32 (|Σ| > 2^31), so exact sums wrap; every
/// kernel must wrap exactly like the reference (and the saturating ones saturate each pair first).
/// Also a deep K with mixed extremes (alternating signs: large partial sums, exact final value).
#[test]
fn k_overflow_and_deep_k() {
    let mut rng = StdRng::seed_from_u64(0xdee9);
    for kernel in supported_kernels() {
        let (m, n) = (kernel.mr, kernel.nr);
        for (k, alternate) in [(65_800usize, false), (20_001, true)] {
            let a = vec![kernel.a_max; m * k];
            let w: Vec<i8> = (0..n * k)
                .map(|i| {
                    if alternate && (i / 3) % 2 == 0 {
                        127
                    } else if alternate {
                        rng.gen_range(-128..=-100)
                    } else {
                        -128
                    }
                })
                .collect();
            let want = reference(m, n, k, &a, k, &w, kernel.saturating);
            let got = run_tile(kernel, m, n, k, &a, k, &w, n, None);
            assert_eq!(got, want, "{} k={k} alternate={alternate}", kernel.name);
        }
    }
}

#[test]
fn kernel_names_follow_the_convention() {
    for k in all_kernels() {
        let prefix = format!("u8s8s32_gemm_{}_{}x{}c{}", k.isa.name(), k.mr, k.nr, k.kr);
        assert!(
            k.name.starts_with(&prefix),
            "{} should start with {prefix}",
            k.name
        );
        assert_eq!(k.saturating, k.name.contains("_sat16"), "{}", k.name);
        assert_eq!(k.a_max < 255, k.name.ends_with("_a7"), "{}", k.name);
        assert!(k.a_max == 255 || k.a_max == 127, "{}", k.name);
    }
}
