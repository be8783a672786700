//! u8 × i8 → i32 matrix multiplication and its zero-point bookkeeping.
//!
//! With activations `A` (`M × K`, zero point `a_zp`) and weights `W` (`N × K`, zero points
//! `w_zp[n]`), fbgemm never subtracts zero points inside the inner loop. It accumulates raw
//! products and corrects afterwards:
//!
//! ```text
//! col_off[n] = Σ_k W[n,k] − w_zp[n]·K                       (at prepack)
//! row_off[i] = Σ_k A[i,k]                                   (while packing A)
//! raw[i,n]   = Σ_k A[i,k]·W[n,k] − a_zp·col_off[n] − row_off[i]·w_zp[n]
//!            = Σ_k (A[i,k] − a_zp)(W[n,k] − w_zp[n])        (wrapping i32)
//! ```
//!
//! **Accumulation.** The library contract is exact i32 sums ([`Accumulation::Exact`]), which is
//! what PyTorch computes on AVX-512 VNNI CPUs except in its depthwise kernel. fbgemm's AVX2 and
//! AVX-512 (non-VNNI) kernels, and its depthwise kernel on every x86 ISA, use `vpmaddubsw`, which
//! adds each pair of adjacent-K products with signed 16-bit saturation:
//!
//! ```text
//! acc[i,n] = Σ_t sat16(A[i,2t]·W[n,2t] + A[i,2t+1]·W[n,2t+1])     (raw A, K zero-padded)
//! ```
//!
//! The two compatibility modes reproduce that, selected explicitly.

/// How a GEMM/conv accumulates its products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Accumulation {
    /// Exact i32 sums on every path (the library default; PyTorch on AVX-512 VNNI CPUs for
    /// everything but its depthwise kernel).
    #[default]
    Exact,
    /// fbgemm i16 pair saturation in fbgemm's depthwise kernel only, exact elsewhere: what
    /// PyTorch computes on AVX-512 VNNI CPUs (and what the golden vectors hold).
    SaturateDepthwise,
    /// fbgemm i16 pair saturation on every GEMM / conv path: what PyTorch computes on AVX2 and
    /// AVX-512 (non-VNNI) CPUs.
    SaturateAll,
}

/// Signed 16-bit saturation of one pair sum (`vpmaddubsw`).
pub fn sat16(v: i32) -> i32 {
    v.clamp(i16::MIN as i32, i16::MAX as i32)
}

/// Dot product of one row of `a` with one row of `w` (same length), exact or pair-saturated.
/// Pairs are `(0,1), (2,3), …`; an odd last element pairs with 0.
pub fn dot_u8s8(a: &[u8], w: &[i8], saturate_pairs: bool) -> i32 {
    assert_eq!(a.len(), w.len());
    if !saturate_pairs {
        return a.iter().zip(w).fold(0i32, |acc, (&x, &y)| {
            acc.wrapping_add(i32::from(x) * i32::from(y))
        });
    }
    let mut acc = 0i32;
    for (pa, pw) in a.chunks(2).zip(w.chunks(2)) {
        let mut pair = 0i32;
        for (&x, &y) in pa.iter().zip(pw) {
            pair += i32::from(x) * i32::from(y);
        }
        acc = acc.wrapping_add(sat16(pair));
    }
    acc
}

/// `C[i,n] = Σ_k A[i,k]·W[n,k]` (no zero points), `A` is `m × k` row-major, `W` is `n × k`
/// row-major (Linear layout). fbgemm's `matmul_u8i8acc32_ref` with `W` transposed.
pub fn matmul_u8s8s32_ref(
    m: usize,
    n: usize,
    k: usize,
    a: &[u8],
    w: &[i8],
    saturate_pairs: bool,
) -> Vec<i32> {
    assert_eq!(a.len(), m * k, "A length");
    assert_eq!(w.len(), n * k, "W length");
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = dot_u8s8(
                &a[i * k..(i + 1) * k],
                &w[j * k..(j + 1) * k],
                saturate_pairs,
            );
        }
    }
    c
}

/// `row_off[i] = Σ_k A[i,k]`.
pub fn row_offsets(m: usize, k: usize, a: &[u8]) -> Vec<i32> {
    assert_eq!(a.len(), m * k);
    (0..m)
        .map(|i| a[i * k..(i + 1) * k].iter().map(|&v| i32::from(v)).sum())
        .collect()
}

/// `col_off[n] = Σ_k W[n,k] − w_zp[n]·K` (wrapping), `w_zp` of length 1 (per tensor) or `n`.
pub fn col_offsets(n: usize, k: usize, w: &[i8], w_zp: &[i32]) -> Vec<i32> {
    assert_eq!(w.len(), n * k);
    assert!(w_zp.len() == 1 || w_zp.len() == n);
    (0..n)
        .map(|j| {
            let zp = if w_zp.len() == 1 { w_zp[0] } else { w_zp[j] };
            let s: i32 = w[j * k..(j + 1) * k].iter().map(|&v| i32::from(v)).sum();
            s.wrapping_sub(zp.wrapping_mul(k as i32))
        })
        .collect()
}

/// Applies the zero-point corrections: `raw = acc − a_zp·col_off[n] − row_off[i]·w_zp[n]`.
pub fn zero_point_correction(acc: i32, a_zp: i32, col_off: i32, row_off: i32, w_zp: i32) -> i32 {
    acc.wrapping_sub(a_zp.wrapping_mul(col_off))
        .wrapping_sub(row_off.wrapping_mul(w_zp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correction_equals_centred_product() {
        // Σ(A−za)(W−zw) computed directly must equal the corrected raw product.
        let (m, n, k) = (3, 4, 7);
        let a: Vec<u8> = (0..m * k).map(|i| (i * 37 % 256) as u8).collect();
        let w: Vec<i8> = (0..n * k).map(|i| ((i * 53 % 256) as u8) as i8).collect();
        let (za, zw) = (77, [-3, 0, 5, 127]);
        let acc = matmul_u8s8s32_ref(m, n, k, &a, &w, false);
        let ro = row_offsets(m, k, &a);
        let co = col_offsets(n, k, &w, &zw);
        for i in 0..m {
            for j in 0..n {
                let direct: i32 = (0..k)
                    .map(|t| (i32::from(a[i * k + t]) - za) * (i32::from(w[j * k + t]) - zw[j]))
                    .sum();
                assert_eq!(
                    zero_point_correction(acc[i * n + j], za, co[j], ro[i], zw[j]),
                    direct
                );
            }
        }
    }

    #[test]
    fn pair_saturation_only_when_pairs_overflow() {
        let a = [255u8, 255, 255];
        let w = [-128i8, -128, -128];
        // (255·−128)·2 = −65280 saturates to −32768; the odd last product pairs with 0.
        assert_eq!(dot_u8s8(&a, &w, true), -32768 + 255 * -128);
        assert_eq!(dot_u8s8(&a, &w, false), 3 * 255 * -128);
    }
}
