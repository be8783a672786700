//! The fused-epilogue kernels (`IgemmKernel::ukernel_requant`, `GemmKernel::ukernel_requant`)
//! against the unfused path they replace: the same tile through `ukernel` (i32 tile in memory)
//! and then `Epilogue::requant_tile_raw` / `requant_add_tile_raw`, byte for byte (`assert_eq!`),
//! for
//! every row count, random and edge requantization constants (NaN / ±inf multipliers, huge and
//! non-finite biases that need the NaN guard, `qmin`/`qmax` other than 0/255, extreme output
//! zero points), with and without bias, with and without the fused residual add (ReLU or not,
//! the add's vector/scalar formula split at every kind of position inside the tile), and with
//! the guard flag both as the driver computes it and forced on. Bytes outside the tile must not
//! be written.
//!
//! The deferred epilogue (`IgemmKernel::ukernel_defer`, `requant::Deferred`) the same way: a
//! tile's stored accumulators requantized by the next tile's kernel between its taps, or by
//! `finish_deferred`, against the tile epilogue; and the deferring kernel's stored accumulators
//! against the storing kernel's.

use qkernels_kernels::gemm::{IgemmKernel, Prefetch, all_igemm_kernels, all_kernels};
use qkernels_kernels::isa;
use qkernels_kernels::ops::AddParams;
#[cfg(target_arch = "x86_64")]
use qkernels_kernels::requant::{DeferConsts, Deferred, finish_deferred};
use qkernels_kernels::requant::{Epilogue, RequantCols, Tile64, TileAdd, nan_guard_needed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NR: usize = 64;

fn mults(rng: &mut StdRng, edge: bool) -> Vec<f32> {
    let pool = [
        0.5,
        1.0,
        -0.5,
        0.0,
        -0.0,
        1.0e-3,
        3.7e-5,
        2.4e-4,
        1.0e30,
        -1.0e30,
        f32::MAX,
        1.0e-40,
    ];
    let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    (0..NR)
        .map(|_| {
            if edge && rng.gen_bool(0.1) {
                bad[rng.gen_range(0..bad.len())]
            } else if rng.gen_bool(0.5) {
                rng.gen_range(1.0e-5f32..3.0e-3)
            } else {
                pool[rng.gen_range(0..pool.len())]
            }
        })
        .collect()
}

fn biases(rng: &mut StdRng, edge: bool) -> Vec<f32> {
    let two126 = f32::from_bits(0x7E80_0000);
    let pool = [0.0, 0.5, -0.5, 1.5, -2.5, 1.0e12, -1.0e12, two126, -two126];
    let bad = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        two126 * 1.0001,
    ];
    (0..NR)
        .map(|_| {
            if edge && rng.gen_bool(0.1) {
                bad[rng.gen_range(0..bad.len())]
            } else if rng.gen_bool(0.6) {
                rng.gen_range(-50_000.0f32..50_000.0)
            } else {
                pool[rng.gen_range(0..pool.len())]
            }
        })
        .collect()
}

/// Residual-add params for the fused epilogue (all in range for its 64-column narrowing).
fn add_params() -> [AddParams; 6] {
    let s_add = 0.009_925_744_5_f32;
    [
        // The two add formulas disagree on 2.8 % of the pairs with these (docs/semantics.md).
        AddParams::new(s_add, 75, s_add, 61, 2.0 * s_add, 56, false),
        AddParams::new(s_add, 75, s_add, 61, 2.0 * s_add, 56, true),
        AddParams::new(0.02, 3, 0.015, 200, 0.03, 0, false),
        AddParams::new(1.0e-3, 128, 0.5, 0, 1.0e-2, 255, true),
        AddParams::new(1.0, 255, 1.0, 0, 1.0e-6, 0, true),
        // Quotients far above 32767 with out_zp 255: the i16 zero-point add must saturate.
        AddParams::new(1.0, 0, 1.0, 0, 1.0e-3, 255, false),
    ]
}

#[test]
fn fused_igemm_epilogue_matches_tile_epilogue() {
    isa::require_from_env().expect("required ISA missing");
    let mut rng = StdRng::seed_from_u64(0x0f05_ed64);
    let mut ran = 0usize;
    let mut guarded = 0usize;
    for ik in all_igemm_kernels() {
        let g = ik.gemm;
        let Some(fused) = ik.ukernel_requant else {
            continue;
        };
        assert_eq!(g.nr, NR, "{}", ik.name);
        if !g.isa.is_supported() {
            continue;
        }
        let epi = Epilogue::new(g.isa);
        for case in 0..600 {
            let taps = [1usize, 2, 9][case % 3];
            let ic = [4usize, 8, 64][(case / 3) % 3];
            let m = 1 + case % g.mr;
            let pad: u8 = rng.r#gen();
            let zero = vec![pad; ic];
            let bufs: Vec<Vec<u8>> = (0..taps * m)
                .map(|_| (0..ic).map(|_| rng.r#gen()).collect())
                .collect();
            let mut ind = vec![pad_ptr(case, &zero); taps * g.mr];
            for t in 0..taps {
                for i in 0..m {
                    if rng.gen_bool(0.85) {
                        ind[t * g.mr + i] = bufs[t * m + i].as_ptr();
                    }
                }
            }
            skip_first_tap(case, &mut ind, g.mr);
            let (pb, tile) = igemm_tile(&mut rng, ik, taps, ic, &ind, m);

            let run = |ep: &Tile64<'_>, out: *mut u8, ldc: usize| {
                // A prefetch hint past the end of `pb` (allowed: a hint) on half the cases.
                let pf = if case % 2 == 0 {
                    Prefetch {
                        at: pb.as_ptr().wrapping_add(pb.len()),
                        lines: 1 << 20,
                    }
                } else {
                    Prefetch::NONE
                };
                // SAFETY: as for the unfused kernel; `ep` holds 64-column slices, params
                // accepted by `Tile64::supports`, `guard` ≥ what `nan_guard_needed` asks, skip
                // rows of 64 bytes for m rows; `out` holds m rows of ldc ≥ 64 bytes.
                unsafe {
                    fused(
                        taps,
                        ic,
                        ind.as_ptr(),
                        std::ptr::null(),
                        pb.as_ptr(),
                        m,
                        ep,
                        out,
                        ldc,
                        pf,
                    )
                }
            };
            guarded += usize::from(check_case(&mut rng, case, m, &tile, &epi, &run, ik.name));
            ran += 1;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if isa::Isa::Avx512Vnni.is_supported() {
        assert!(ran > 0 && guarded > 10, "ran {ran} guarded {guarded}");
    }
    let _ = (ran, guarded);
}

/// The deferring indirect kernels (`IgemmKernel::ukernel_defer`): a full tile through `ukernel`
/// (the expected accumulators) and through the deferring entry (its stored accumulators must be
/// the same i32), which meanwhile finishes a *previous* tile — the first `m` rows of the
/// expected accumulators, with the constants and residual add `check_case` draws — between its
/// taps; on every other case the previous tile is finished by `finish_deferred` instead. Its
/// bytes must equal the tile epilogue's.
#[cfg(target_arch = "x86_64")]
#[test]
fn deferred_igemm_epilogue_matches_tile_epilogue() {
    isa::require_from_env().expect("required ISA missing");
    let mut rng = StdRng::seed_from_u64(0x0def_e44e);
    let mut deferred = 0usize;
    for ik in all_igemm_kernels() {
        let g = ik.gemm;
        let (Some(defer), Some(fused)) = (ik.ukernel_defer, ik.ukernel_requant) else {
            continue;
        };
        if !g.isa.is_supported() {
            continue;
        }
        let epi = Epilogue::new(g.isa);
        for case in 0..600 {
            // Deferring kernels need one tap per deferred row (`rows ≤ taps`).
            let taps = [g.mr, 9][case % 2];
            let ic = [4usize, 8, 64][(case / 2) % 3];
            let zero = vec![rng.r#gen::<u8>(); ic];
            let bufs: Vec<Vec<u8>> = (0..taps * g.mr)
                .map(|_| (0..ic).map(|_| rng.r#gen()).collect())
                .collect();
            let mut ind: Vec<*const u8> = (0..taps * g.mr)
                .map(|j| {
                    if rng.gen_bool(0.85) {
                        bufs[j].as_ptr()
                    } else {
                        pad_ptr(case, &zero)
                    }
                })
                .collect();
            skip_first_tap(case, &mut ind, g.mr);
            let (pb, tile) = igemm_tile(&mut rng, ik, taps, ic, &ind, g.mr);
            let m = 1 + case % g.mr;
            let stored = std::cell::RefCell::new(vec![0x5A5A_5A5Ai32; g.mr * NR]);
            let kernel_ran = std::cell::Cell::new(false);
            let run = |ep: &Tile64<'_>, out: *mut u8, ldc: usize| {
                if !Deferred::supports(ep, m, ldc) {
                    // An add whose scalar tail starts inside the tile: the driver does not
                    // defer it; the immediate entry gives the bytes.
                    // SAFETY: as in `fused_igemm_epilogue_matches_tile_epilogue`.
                    unsafe {
                        fused(
                            taps,
                            ic,
                            ind.as_ptr(),
                            std::ptr::null(),
                            pb.as_ptr(),
                            m,
                            ep,
                            out,
                            ldc,
                            Prefetch::NONE,
                        )
                    };
                    return;
                }
                let kc = DeferConsts::new(&ep.cols, ep.add.as_ref().map(|a| a.params), ep.guard);
                let prev = Deferred::new(tile.as_ptr(), m, ep, &kc, out, ldc);
                // SAFETY: `prev` holds m ≤ MR ≤ taps rows of `tile` (64 i32 each), its output
                // `out` (m rows of ldc ≥ 64 bytes) and skip rows as `check_case` drew them;
                // `stored` is a separate MR × 64 buffer; operands as for `ukernel`; the ISA
                // (AVX-512 VNNI, with FMA) is supported.
                unsafe {
                    if case % 4 < 2 {
                        let acc = stored.borrow_mut().as_mut_ptr();
                        kernel_ran.set(true);
                        defer(
                            taps,
                            ic,
                            ind.as_ptr(),
                            std::ptr::null(),
                            pb.as_ptr(),
                            Some(&prev),
                            acc,
                            Prefetch::NONE,
                        );
                    } else {
                        finish_deferred(&prev);
                    }
                }
            };
            check_case(&mut rng, case, m, &tile, &epi, &run, ik.name);
            if kernel_ran.get() {
                let stored = stored.borrow();
                assert_eq!(
                    *stored, tile,
                    "{} case {case}: stored accumulators",
                    ik.name
                );
                deferred += 1;
            }
            // The deferring entry with nothing pending stores the same accumulators.
            let mut alone = vec![0i32; g.mr * NR];
            // SAFETY: as for `ukernel`; `alone` is MR × 64 i32.
            unsafe {
                defer(
                    taps,
                    ic,
                    ind.as_ptr(),
                    std::ptr::null(),
                    pb.as_ptr(),
                    None,
                    alone.as_mut_ptr(),
                    Prefetch::NONE,
                )
            };
            assert_eq!(
                alone, tile,
                "{} case {case}: deferring entry alone",
                ik.name
            );
        }
    }
    if isa::Isa::Avx512Vnni.is_supported() {
        assert!(deferred > 100, "deferred {deferred}");
    }
}

/// The pointer of a padded tap in case `case`: the zero-point buffer, or null (skipped by the
/// kernel: see `IgemmUkernel`) in half the cases.
fn pad_ptr(case: usize, zero: &[u8]) -> *const u8 {
    if case % 4 < 2 {
        std::ptr::null()
    } else {
        zero.as_ptr()
    }
}

/// In one case of eight, tap 0 is skipped for every row (all its `mr` pointers null).
fn skip_first_tap(case: usize, ind: &mut [*const u8], mr: usize) {
    if case % 8 == 1 {
        ind[..mr].fill(std::ptr::null());
    }
}

/// Random weights for K = `taps·ic`, packed as `ik`'s B panel, and the `m`-row i32 tile the
/// storing entry (`ukernel`) computes from the pointers `ind` (`taps·MR`, each to `ic` bytes or null).
fn igemm_tile(
    rng: &mut StdRng,
    ik: &IgemmKernel,
    taps: usize,
    ic: usize,
    ind: &[*const u8],
    m: usize,
) -> (Vec<u8>, Vec<i32>) {
    let (g, k) = (ik.gemm, taps * ic);
    assert!(ind.len() >= taps * g.mr && (1..=g.mr).contains(&m) && ic.is_multiple_of(4));
    let w: Vec<i8> = (0..NR * k).map(|_| rng.r#gen()).collect();
    let mut pb = vec![0u8; (g.b_panel_bytes)(k)];
    (g.pack_b)(&w, k, NR, k, &mut pb);
    let mut tile = vec![0i32; g.mr * NR];
    // SAFETY: `ind` holds taps·MR pointers, each (the callers') to `ic` readable bytes or null,
    // `ic % 4 == 0`, `pb` is the companion's B panel for K = taps·ic, `tile` is MR × NR,
    // 1 ≤ m ≤ MR, and the callers run only kernels whose ISA is supported.
    unsafe {
        (ik.ukernel)(
            taps,
            ic,
            ind.as_ptr(),
            std::ptr::null(),
            pb.as_ptr(),
            tile.as_mut_ptr(),
            NR,
            m,
            NR,
            Prefetch::NONE,
        )
    };
    (pb, tile)
}

/// The GEMM kernels' fused entries (`GemmKernel::ukernel_requant`) the same way: a packed
/// A panel (`pack_a`) and B panel (`pack_b`) through `ukernel` + the tile epilogue and through
/// the fused entry, K not a multiple of 4 (the stem's 147) included.
#[test]
fn fused_gemm_epilogue_matches_tile_epilogue() {
    isa::require_from_env().expect("required ISA missing");
    let mut rng = StdRng::seed_from_u64(0x0f05_ed65);
    let mut ran = 0usize;
    let mut guarded = 0usize;
    for g in all_kernels() {
        let Some(fused) = g.ukernel_requant else {
            continue;
        };
        assert_eq!((g.nr, g.saturating), (NR, false), "{}", g.name);
        if !g.isa.is_supported() {
            continue;
        }
        let epi = Epilogue::new(g.isa);
        for case in 0..600 {
            let k = [4usize, 64, 147, 576][case % 4];
            let m = 1 + case % g.mr;
            let a: Vec<u8> = (0..m * k).map(|_| rng.r#gen()).collect();
            let w: Vec<i8> = (0..NR * k).map(|_| rng.r#gen()).collect();
            let mut pa = vec![0u8; (g.a_panel_bytes)(k)];
            (g.pack_a)(&a, k, m, k, &mut pa);
            let mut pb = vec![0u8; (g.b_panel_bytes)(k)];
            (g.pack_b)(&w, k, NR, k, &mut pb);
            let kc = g.round_k(k);
            let mut tile = vec![0i32; g.mr * NR];
            // SAFETY: whole panels packed by the kernel's own packers for K = k (kc rounded to
            // KR), `tile` is MR × NR, 1 ≤ m ≤ MR, and the ISA is supported.
            unsafe {
                (g.ukernel)(
                    kc,
                    pa.as_ptr(),
                    pb.as_ptr(),
                    tile.as_mut_ptr(),
                    NR,
                    m,
                    NR,
                    false,
                )
            };
            let run = |ep: &Tile64<'_>, out: *mut u8, ldc: usize| {
                // SAFETY: as for the unfused kernel; `ep` holds 64-column slices, params
                // accepted by `Tile64::supports`, `guard` ≥ what `nan_guard_needed` asks, skip
                // rows of 64 bytes for m rows; `out` holds m rows of ldc ≥ 64 bytes.
                unsafe { fused(kc, kc, pa.as_ptr(), pb.as_ptr(), m, ep, out, ldc) }
            };
            guarded += usize::from(check_case(&mut rng, case, m, &tile, &epi, &run, g.name));
            ran += 1;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if isa::Isa::Avx512Vnni.is_supported() {
        assert!(ran > 0 && guarded > 10, "ran {ran} guarded {guarded}");
    }
    let _ = (ran, guarded);
}

/// One random case on a computed `m × 64` i32 tile: draws the requantization constants and the
/// residual add, computes the expected bytes with the tile epilogue and compares `run` (the
/// fused kernel on the same operands) with them, guard as computed and forced on. Returns
/// whether the constants needed the NaN guard.
fn check_case(
    rng: &mut StdRng,
    case: usize,
    m: usize,
    tile: &[i32],
    epi: &Epilogue,
    run: &dyn Fn(&Tile64<'_>, *mut u8, usize),
    name: &str,
) -> bool {
    let edge = case % 4 >= 2;
    let col_term: Vec<i32> = (0..NR)
        .map(|_| match rng.gen_range(0..4) {
            0 => 0,
            1 => rng.gen_range(-1000..1000),
            2 => rng.gen_range(-3_000_000..3_000_000),
            _ => [i32::MIN, i32::MAX, 1 << 30, -(1 << 30)][rng.gen_range(0..4)],
        })
        .collect();
    let mult = mults(rng, edge);
    let bias = biases(rng, edge);
    let out_zp = [0, 1, 2, 127, 128, 200, 254, 255][rng.gen_range(0..8)];
    let (qmin, qmax) = match case % 5 {
        0 => (0, 255),
        1 => (out_zp, 255),
        2 => (3.min(out_zp), 200.max(out_zp)),
        3 => (out_zp, out_zp),
        _ => (0, out_zp.max(1)),
    };
    let p = RequantCols {
        col_term: &col_term,
        w_zp: None,
        bias: (case % 3 != 2).then_some(&bias[..]),
        mult: &mult,
        out_zp,
        qmin,
        qmax,
    };
    let with_add = case % 2 == 1;
    let adds = add_params();
    let ap = &adds[rng.gen_range(0..adds.len())];
    assert!(Tile64::supports(&p, with_add.then_some(ap)));
    let ldc = NR + [0, 3, 64][rng.gen_range(0..3)];
    let ldskip = NR + [0, 5][rng.gen_range(0..2)];
    let skip: Vec<u8> = (0..m * ldskip).map(|_| rng.r#gen()).collect();
    let last = (m - 1) * ldc + NR;
    let vec_len = match rng.gen_range(0..6) {
        0 => usize::MAX,
        1 => 0,
        2 => last,
        3 => rng.gen_range(0..m) * ldc,
        4 => rng.gen_range(0..m) * ldc + rng.gen_range(1..NR),
        _ => rng.gen_range(0..=last),
    };
    let add = TileAdd {
        skip: &skip,
        ldskip,
        params: ap,
        vec_len,
    };
    let mut want = vec![0xA5u8; m * ldc + 7];
    // SAFETY: `want` holds m rows of ldc ≥ 64 bytes, exclusively borrowed; `skip` is
    // a separate buffer.
    unsafe {
        if with_add {
            epi.requant_add_tile_raw(tile, NR, m, NR, &[0; 8], &p, &add, want.as_mut_ptr(), ldc)
        } else {
            epi.requant_tile_raw(tile, NR, m, NR, &[0; 8], &p, want.as_mut_ptr(), ldc)
        }
    }
    let need = nan_guard_needed(&p);
    for guard in [need, true] {
        let ep = Tile64 {
            cols: p,
            guard,
            add: with_add.then_some(add),
        };
        let mut got = vec![0xA5u8; m * ldc + 7];
        run(&ep, got.as_mut_ptr(), ldc);
        assert_eq!(
            got, want,
            "{name} case {case}: m {m} ldc {ldc} guard {guard} add {with_add} \
             vec_len {vec_len} zp {out_zp} [{qmin}, {qmax}]"
        );
    }
    need
}
