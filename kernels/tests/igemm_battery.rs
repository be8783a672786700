//! Every indirect-conv (IGEMM) microkernel of `all_igemm_kernels()` that this CPU supports, on
//! one tile: random indirection arrays (each tap its own exactly-sized buffer, some taps and all
//! unused tail rows on a shared zero-point buffer), B packed by the companion GEMM kernel's
//! `pack_b`, compared with `qkernels_ref::matmul_u8s8s32_ref` on the gathered rows (`assert_eq!`).
//! Skipped taps: in half the cases the padded taps and unused tail rows are null pointers
//! instead (zero bytes in the reference; a kernel that read one would fault), and some whole
//! taps — sometimes every tap — are null for every row.
//! Window mode (`tap_off` non-null): one exactly-sized window buffer per row, taps at random
//! ascending offsets inside it, unused tail rows repeating the last row's window.

use qkernels_kernels::gemm::{IgemmKernel, Prefetch, all_igemm_kernels};
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
                    // Skipped (null) pointers: padded taps and tail rows in half the cases;
                    // whole taps: none, some, or every tap.
                    let null_pad = rng.r#gen::<bool>();
                    let p_skip = [0.0, 0.25, 0.25, 1.0][rng.gen_range(0..4)];
                    let skip: Vec<bool> = (0..taps).map(|_| rng.gen_bool(p_skip)).collect();
                    let fill = if null_pad {
                        std::ptr::null()
                    } else {
                        zero.as_ptr()
                    };
                    let mut ind = vec![fill; taps * g.mr];
                    for (t, row) in bufs.iter().enumerate() {
                        for (i, b) in row.iter().enumerate() {
                            if let Some(b) = b {
                                ind[t * g.mr + i] = b.as_ptr();
                            }
                        }
                        if skip[t] {
                            ind[t * g.mr..(t + 1) * g.mr].fill(std::ptr::null());
                        }
                    }
                    let (bufs_ref, zero_ref, skip_ref) = (&bufs, &zero, &skip);
                    let a: Vec<u8> = (0..m)
                        .flat_map(|i| {
                            (0..taps).flat_map(move |t| match &bufs_ref[t][i] {
                                _ if skip_ref[t] => vec![0; ic],
                                Some(b) => b.clone(),
                                None if null_pad => vec![0; ic],
                                None => zero_ref.clone(),
                            })
                        })
                        .collect::<Vec<u8>>();
                    // `ind` holds taps·MR pointers to `ic`-byte buffers (null tap table).
                    let ind = Ind {
                        ptrs: &ind,
                        tap_off: std::ptr::null(),
                    };
                    check_tile(&mut rng, ik, (taps, ic, m, n), ind, &a, |_| Prefetch::NONE);
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

#[test]
fn igemm_window_mode_matches_reference() {
    isa::require_from_env().expect("required ISA missing");
    let mut rng = StdRng::seed_from_u64(0x1d1_77d0);
    let mut ran = 0;
    for ik in all_igemm_kernels() {
        let g = ik.gemm;
        if !g.isa.is_supported() {
            continue;
        }
        for &taps in &[1usize, 2, 9, 25] {
            for &ic in &[4usize, 8, 64, 68] {
                for m in 1..=g.mr {
                    let n = [1, 17, g.nr - 1, g.nr][rng.gen_range(0..4)];
                    // Tap t at tap_off[t]: ascending, gaps of 0..3 tap widths (a row stride).
                    let mut tap_off = Vec::with_capacity(taps);
                    let mut o = 0;
                    for _ in 0..taps {
                        tap_off.push(o);
                        o += ic * rng.gen_range(1..4);
                    }
                    let len = tap_off[taps - 1] + ic;
                    let wins: Vec<Vec<u8>> = (0..m)
                        .map(|_| (0..len).map(|_| rng.r#gen()).collect())
                        .collect();
                    let mut ind: Vec<*const u8> = wins.iter().map(|w| w.as_ptr()).collect();
                    ind.resize(g.mr, wins[m - 1].as_ptr());
                    let a: Vec<u8> = wins
                        .iter()
                        .flat_map(|w| tap_off.iter().flat_map(move |&o| w[o..o + ic].to_vec()))
                        .collect();
                    // Window mode: MR pointers, each to a window of `tap_off[taps − 1] + ic`
                    // bytes; a prefetch hint past the end of the B panel (allowed: a hint).
                    let ind = Ind {
                        ptrs: &ind,
                        tap_off: tap_off.as_ptr(),
                    };
                    check_tile(&mut rng, ik, (taps, ic, m, n), ind, &a, |pb| Prefetch {
                        at: pb.as_ptr().wrapping_add(pb.len()),
                        lines: 1 << 20,
                    });
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

/// The A operand of one tile: `ptrs` (and the tap-offset table, null outside window mode)
/// satisfying [`qkernels_kernels::gemm::IgemmUkernel`]'s contract for the call's `taps`/`ic`.
struct Ind<'a> {
    ptrs: &'a [*const u8],
    tap_off: *const usize,
}

/// Runs `ik` on one `m × n` tile of random weights (B packed by the companion's `pack_b`) and
/// compares it with `qkernels_ref::matmul_u8s8s32_ref` on `a` (the gathered `m × taps·ic`
/// rows); nothing outside the tile may be written.
fn check_tile(
    rng: &mut StdRng,
    ik: &IgemmKernel,
    (taps, ic, m, n): (usize, usize, usize, usize),
    ind: Ind<'_>,
    a: &[u8],
    prefetch: impl Fn(&[u8]) -> Prefetch,
) {
    let g = ik.gemm;
    let k = taps * ic;
    let w: Vec<i8> = (0..n * k).map(|_| rng.r#gen()).collect();
    let mut pb = vec![0u8; (g.b_panel_bytes)(k)];
    (g.pack_b)(&w, k, n, k, &mut pb);
    let ldc = n + 3;
    let mut c = vec![i32::MIN; m * ldc];
    // SAFETY: `ind` satisfies the kernel's A contract for `taps`/`ic` (the caller's), `ic % 4 ==
    // 0`, `pb` is the companion's B panel for K = taps·ic, `c` has m rows of stride ldc ≥ n,
    // 1 ≤ m ≤ MR, 1 ≤ n ≤ NR, the ISA is supported, and a prefetch hint may point anywhere.
    unsafe {
        (ik.ukernel)(
            taps,
            ic,
            ind.ptrs.as_ptr(),
            ind.tap_off,
            pb.as_ptr(),
            c.as_mut_ptr(),
            ldc,
            m,
            n,
            prefetch(&pb),
        )
    };
    let want = qkernels_ref::matmul_u8s8s32_ref(m, n, k, a, &w, false);
    let mode = if ind.tap_off.is_null() { "" } else { " window" };
    for i in 0..m {
        assert_eq!(
            &c[i * ldc..i * ldc + n],
            &want[i * n..(i + 1) * n],
            "{}{mode} taps {taps} ic {ic} m {m} n {n} row {i}",
            ik.name
        );
        assert!(
            c[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == i32::MIN),
            "{}: wrote outside the tile",
            ik.name
        );
    }
}
