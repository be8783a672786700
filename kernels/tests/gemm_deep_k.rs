//! Deep-K checks for every GEMM microkernel this CPU supports: `|255 · −128| · K` leaves i32 once
//! K > 65 793, and the reference then wraps modulo 2^32. Kernels must wrap identically, including
//! those that rewrite the sum (e.g. the dotprod kernel's `sdot(a − 128, w) + 128·colsum(w)`), and
//! whatever the accumulation order. One full `MR × NR` tile per kernel, `assert_eq!` against
//! `qkernels_ref`.

use qkernels_kernels::gemm::{GemmKernel, all_kernels};
use qkernels_kernels::isa;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn run_full_tile(kernel: &GemmKernel, k: usize, a: &[u8], w: &[i8]) -> Vec<i32> {
    let (m, n) = (kernel.mr, kernel.nr);
    let mut pa = vec![0u8; (kernel.a_panel_bytes)(k)];
    let mut pb = vec![0u8; (kernel.b_panel_bytes)(k)];
    (kernel.pack_a)(a, k, m, k, &mut pa);
    (kernel.pack_b)(w, k, n, k, &mut pb);
    let mut c = vec![0i32; m * n];
    // SAFETY: panels packed by this kernel's packers for `k`; `c` is a dense MR × NR tile;
    // the kernel's ISA is supported (filtered by the caller).
    unsafe {
        (kernel.ukernel)(
            kernel.round_k(k),
            pa.as_ptr(),
            pb.as_ptr(),
            c.as_mut_ptr(),
            n,
            m,
            n,
            false,
        )
    };
    c
}

#[test]
fn deep_k_wraps_like_the_reference() {
    isa::require_from_env().expect("required ISA missing");
    let mut rng = StdRng::seed_from_u64(0xdee9);
    for kernel in all_kernels().into_iter().filter(|k| k.isa.is_supported()) {
        let (m, n) = (kernel.mr, kernel.nr);
        // 65 793 is the deepest K whose extreme sum still fits i32; 70 001 (odd) wraps.
        for k in [65_793usize, 70_001] {
            // Mostly extreme values (255 × −128 and 255 × 127), with random rows mixed in so
            // that rows and columns differ.
            let a: Vec<u8> = (0..m * k)
                .map(|x| {
                    let v = if x / k % 2 == 0 { 255 } else { rng.r#gen() };
                    v.min(kernel.a_max)
                })
                .collect();
            let w: Vec<i8> = (0..n * k)
                .map(|x| match x / k % 3 {
                    0 => -128,
                    1 => 127,
                    _ => rng.r#gen(),
                })
                .collect();
            let want = qkernels_ref::matmul_u8s8s32_ref(m, n, k, &a, &w, kernel.saturating);
            let got = run_full_tile(kernel, k, &a, &w);
            assert_eq!(got, want, "{} k={k}", kernel.name);
        }
    }
}
