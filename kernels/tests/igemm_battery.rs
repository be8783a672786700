//! Every indirect-conv (IGEMM) microkernel of `all_igemm_kernels()` that this CPU supports, on
//! one tile: random indirection arrays (each tap its own exactly-sized buffer, some taps and all
//! unused tail rows on a shared zero-point buffer), B packed by the companion GEMM kernel's
//! `pack_b`, compared with `qkernels_ref::matmul_u8s8s32_ref` on the gathered rows (`assert_eq!`).

use qkernels_kernels::gemm::all_igemm_kernels;
use qkernels_kernels::isa;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[test]
fn igemm_tiles_match_reference() {
    isa::require_from_env().expect("required ISA missing");
    let mut rng = StdRng::seed_from_u64(0x1d1_6e33);
    let mut ran = 0;
    for ik in all_igemm_kernels() {
        let g = ik.gemm;
        assert!(!g.saturating && g.kr == 4, "{}", ik.name);
        if !g.isa.is_supported() {
            continue;
        }
        for &taps in &[1usize, 2, 9, 25] {
            for &ic in &[4usize, 8, 64, 68] {
                for m in 1..=g.mr {
                    let n = [1, 17, g.nr - 1, g.nr][rng.gen_range(0..4)];
                    let k = taps * ic;
                    let pad: u8 = rng.r#gen();
                    let zero = vec![pad; ic];
                    // bufs[t][i]: row i's tap t (None = padding).
                    let bufs: Vec<Vec<Option<Vec<u8>>>> = (0..taps)
                        .map(|_| {
                            (0..m)
                                .map(|_| {
                                    rng.gen_bool(0.8)
                                        .then(|| (0..ic).map(|_| rng.r#gen()).collect())
                                })
                                .collect()
                        })
                        .collect();
                    let mut ind = vec![zero.as_ptr(); taps * g.mr];
                    for (t, row) in bufs.iter().enumerate() {
                        for (i, b) in row.iter().enumerate() {
                            if let Some(b) = b {
                                ind[t * g.mr + i] = b.as_ptr();
                            }
                        }
                    }
                    let bufs_ref = &bufs;
                    let zero_ref = &zero;
                    let a: Vec<u8> = (0..m)
                        .flat_map(|i| {
                            (0..taps).flat_map(move |t| match &bufs_ref[t][i] {
                                Some(b) => b.clone(),
                                None => zero_ref.clone(),
                            })
                        })
                        .collect::<Vec<u8>>();
                    let w: Vec<i8> = (0..n * k).map(|_| rng.r#gen()).collect();
                    let mut pb = vec![0u8; (g.b_panel_bytes)(k)];
                    (g.pack_b)(&w, k, n, k, &mut pb);
                    let ldc = n + 3;
                    let mut c = vec![i32::MIN; m * ldc];
                    // SAFETY: `ind` holds taps·MR pointers to `ic`-byte buffers, `ic % 4 == 0`,
                    // `pb` is the companion's B panel for K = taps·ic, `c` has m rows of
                    // stride ldc ≥ n, 1 ≤ m ≤ MR, 1 ≤ n ≤ NR, and the ISA is supported.
                    unsafe {
                        (ik.ukernel)(
                            taps,
                            ic,
                            ind.as_ptr(),
                            pb.as_ptr(),
                            c.as_mut_ptr(),
                            ldc,
                            m,
                            n,
                        )
                    };
                    let want = qkernels_ref::matmul_u8s8s32_ref(m, n, k, &a, &w, false);
                    for i in 0..m {
                        assert_eq!(
                            &c[i * ldc..i * ldc + n],
                            &want[i * n..(i + 1) * n],
                            "{} taps {taps} ic {ic} m {m} n {n} row {i}",
                            ik.name
                        );
                        assert!(
                            c[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == i32::MIN),
                            "{}: wrote outside the tile",
                            ik.name
                        );
                    }
                    ran += 1;
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if isa::Isa::Avx512Vnni.is_supported() {
        assert!(ran > 0);
    }
    let _ = ran;
}
