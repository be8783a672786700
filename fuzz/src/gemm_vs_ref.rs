//! `gemm_vs_ref`: the GEMM API (`PackedWeights` + `linear` / `gemm_requant` / `gemm_i32`,
//! `gemm_u8s8s32`) on every supported ISA against `qkernels-ref`, byte for byte; hostile
//! arguments must give `Err`, never a panic.

use crate::input::*;
use arbitrary::{Result, Unstructured};
use qkernels::gemm::{self, GemmOptions, Matrix, PackedWeights};
use qkernels::{Accumulation, Isa, reference};

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = if u.ratio(1, 6).unwrap_or(false) {
        hostile(&mut u)
    } else {
        valid(&mut u)
    };
}

fn valid(u: &mut Unstructured<'_>) -> Result<()> {
    // Mostly a few micro-tiles; sometimes more than one M block (MC = 96) to cover the
    // blocking and the parallel driver.
    let m = if u.ratio(1, 10)? {
        u.int_in_range(90..=200)?
    } else {
        u.int_in_range(1..=40)?
    };
    let n = u.int_in_range(1..=40)?;
    let k = if u.ratio(1, 10)? {
        u.int_in_range(200..=700)?
    } else {
        u.int_in_range(1..=80)?
    };
    let saturate = u.ratio(1, 4)?;
    let relu = u.arbitrary()?;
    let a_q = qparams_u8(u, -8, 0)?;
    let wq = weight_qparams(u, n)?;
    let bias = bias(u, n)?;
    // Output scale around the accumulator magnitude so outputs are not all clamped.
    let out_q = qparams_u8(u, -10, 2)?;
    let a = bytes(u, m * k)?;
    let w = i8s(u, n * k)?;
    let lda = k + u.int_in_range(0..=5)?;
    let ldc = n + u.int_in_range(0..=5)?;
    let mode = if saturate {
        Accumulation::SaturateAll
    } else {
        Accumulation::Exact
    };

    let want = reference::linear(
        m,
        k,
        n,
        &a,
        a_q,
        &w,
        &wq,
        bias.as_deref(),
        out_q,
        relu,
        mode,
    );
    let acc = reference::matmul_u8s8s32_ref(m, n, k, &a, &w, saturate);
    let w_zp: Vec<i32> = (0..n).map(|j| wq.zero_point(j)).collect();
    let col = reference::col_offsets(n, k, &w, &w_zp);
    let row = reference::row_offsets(m, k, &a);
    let a_zp = a_q.zero_point;
    let want_i32: Vec<i32> = (0..m * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            reference::gemm::zero_point_correction(acc[idx], a_zp, col[j], row[i], w_zp[j])
        })
        .collect();
    let exact_i32 = if saturate {
        reference::matmul_u8s8s32_ref(m, n, k, &a, &w, false)
    } else {
        acc.clone()
    };

    // A with row stride `lda` (gaps hold garbage the kernels must not read into the result).
    let mut a_strided = vec![0xEEu8; (m - 1) * lda + k];
    for i in 0..m {
        a_strided[i * lda..][..k].copy_from_slice(&a[i * k..][..k]);
    }

    for isa in Isa::supported() {
        let opts = GemmOptions {
            isa,
            saturate_pairs: saturate,
        };
        let pw = PackedWeights::with_options(&w, n, k, &wq, bias.as_deref(), &opts)
            .expect("valid weights must pack");

        let mut out = vec![0u8; m * n];
        gemm::linear(&pw, &a, m, a_q, out_q, relu, &mut out).expect("valid linear");
        assert_eq!(out, want, "linear {isa} m={m} n={n} k={k} sat={saturate}");

        // Strided A and C: gaps in C must be left untouched.
        const SENTINEL: u8 = 0xA5;
        let mut c = vec![SENTINEL; (m - 1) * ldc + n + 3];
        let am = Matrix::new(&a_strided, m, k, lda).expect("valid matrix");
        gemm::gemm_requant(&pw, &am, a_q, out_q, relu, &mut c, ldc).expect("valid gemm_requant");
        for i in 0..m {
            assert_eq!(
                &c[i * ldc..][..n],
                &want[i * n..][..n],
                "gemm_requant {isa} row {i}"
            );
            if i + 1 < m {
                assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|&b| b == SENTINEL));
            }
        }
        assert!(c[(m - 1) * ldc + n..].iter().all(|&b| b == SENTINEL));

        let mut c32 = vec![i32::MIN; (m - 1) * ldc + n];
        gemm::gemm_i32(&pw, &am, a_zp, &mut c32, ldc).expect("valid gemm_i32");
        for i in 0..m {
            assert_eq!(
                &c32[i * ldc..][..n],
                &want_i32[i * n..][..n],
                "gemm_i32 {isa} row {i}"
            );
        }

        // Plain C = A·Wᵀ with strided W.
        let ldw = lda;
        let mut w_strided = vec![0x55i8; (n - 1) * ldw + k];
        for j in 0..n {
            w_strided[j * ldw..][..k].copy_from_slice(&w[j * k..][..k]);
        }
        let mut c32 = vec![0i32; m * n];
        gemm::gemm_u8s8s32(isa, m, n, k, &a_strided, lda, &w_strided, ldw, &mut c32, n)
            .expect("valid gemm_u8s8s32");
        assert_eq!(c32, exact_i32, "gemm_u8s8s32 {isa}");
    }
    Ok(())
}

fn hostile(u: &mut Unstructured<'_>) -> Result<()> {
    let isa = any_isa(u)?;
    let (n, k, m) = (hostile_dim(u)?, hostile_dim(u)?, hostile_dim(u)?);
    let w = hostile_i8s(u, 256)?;
    let wq = if u.arbitrary()? {
        hostile_weight_qparams(u)?
    } else {
        weight_qparams(u, n.min(64))?
    };
    let bias: Option<Vec<f32>> = if u.arbitrary()? {
        Some(hostile_f32s(u, 64, 0.5)?)
    } else {
        None
    };
    let opts = GemmOptions {
        isa,
        saturate_pairs: u.arbitrary()?,
    };
    let (a_q, out_q) = (hostile_qparams(u)?, hostile_qparams(u)?);
    let a = hostile_bytes(u, 512)?;
    let n_out = hostile_len(u, 512)?;
    let mut out = vec![0u8; n_out];
    let n_out32 = hostile_len(u, 512)?;
    let mut out32 = vec![0i32; n_out32];
    let (lda, ldc) = (hostile_dim(u)?, hostile_dim(u)?);
    if let Ok(pw) = PackedWeights::with_options(&w, n, k, &wq, bias.as_deref(), &opts) {
        let _ = gemm::linear(&pw, &a, m, a_q, out_q, u.arbitrary()?, &mut out);
        if let Ok(am) = Matrix::new(&a, m, k, lda) {
            let _ = gemm::gemm_requant(&pw, &am, a_q, out_q, false, &mut out, ldc);
            let _ = gemm::gemm_i32(&pw, &am, a_q.zero_point, &mut out32, ldc);
        }
    }
    let ldw = hostile_dim(u)?;
    let _ = gemm::gemm_u8s8s32(isa, m, n, k, &a, lda, &w, ldw, &mut out32, ldc);
    Ok(())
}
