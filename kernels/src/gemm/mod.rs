//! u8 × i8 → i32 GEMM microkernels and their packed-operand contract.
//!
//! # The packed contract
//!
//! A microkernel multiplies one packed **A panel** (`MR` rows of activations) by one packed
//! **B panel** (`NR` columns of weights) over `kc` steps of K, and writes (or adds to) an
//! `mr × nr` tile of i32 accumulators (`mr ≤ MR`, `nr ≤ NR`). `kc` is always a multiple of `KR`,
//! the K-interleave: panels are zero-padded inside our own buffers up to `MR`, `NR` and `KR`, so a
//! kernel never reads past anything and zero padding contributes nothing (exact mode) or pairs with
//! 0 (saturating mode, where fbgemm pads K with zeros too).
//!
//! The default **c{KR} byte layout** (used by the scalar kernels and any SIMD kernel that does not
//! declare its own packers):
//!
//! ```text
//! A panel: for g in 0..kc/KR, for i in 0..MR, for t in 0..KR:  A[i][g·KR + t]      (u8)
//! B panel: for g in 0..kc/KR, for j in 0..NR, for t in 0..KR:  W[j][g·KR + t]      (i8 as u8)
//! ```
//!
//! A kernel may choose another layout (e.g. pre-widened i16 weights for exact AVX2): it then
//! supplies its own `pack_a` / `pack_b` and `*_panel_bytes` functions, and only its own
//! microkernel ever reads those bytes. Zero-point corrections and requantization are **not** part
//! of the microkernel: the driver (in the `qkernels` crate) applies them in the epilogue — except
//! through the optional fused entries ([`GemmRequantUkernel`], [`IgemmRequantUkernel`]), which
//! run that same epilogue code (`crate::requant`) on a full 64-column tile's accumulator
//! registers.
//!
//! # Accumulation
//!
//! Kernels with `saturating == false` compute exact i32 sums for every u8 × i8 input (the library
//! contract). Kernels with `saturating == true` reproduce fbgemm's `vpmaddubsw` behaviour: the two
//! products of each adjacent K pair `(2t, 2t+1)` are added with signed 16-bit saturation before
//! accumulation (see `qkernels_ref::gemm`).

pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx512vnni;
#[cfg(target_arch = "x86_64")]
pub mod x86_pack;

#[cfg(target_arch = "aarch64")]
pub mod arm_i8mm;
#[cfg(target_arch = "aarch64")]
pub mod arm_neon;
#[cfg(target_arch = "aarch64")]
pub mod arm_neondot;

use crate::isa::Isa;

/// Microkernel: `C[i][j] (+)= Σ_k A[i][k]·W[j][k]` for `i < mr`, `j < nr`.
///
/// # Safety
///
/// * `kc` is a multiple of the kernel's `kr`;
/// * `a` points to one packed A panel of the kernel's layout covering `kc` (`pack_a_panel_bytes`);
/// * `b` points to one packed B panel covering `kc` (`pack_b_panel_bytes`);
/// * `c` is valid for reads and writes of `C[i*rs_c + j]` for `i < mr`, `j < nr`;
/// * `1 ≤ mr ≤ MR`, `1 ≤ nr ≤ NR`;
/// * the CPU supports the kernel's ISA.
pub type GemmUkernel = unsafe fn(
    kc: usize,
    a: *const u8,
    b: *const u8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
);

/// Microkernel with the u8 epilogue fused: the [`GemmUkernel`] contract for a full `mr × 64`
/// tile (`NR = 64`, not accumulating), but the i32 accumulators are requantized straight from
/// registers (with the fused residual add, if any) into `out[i·ldc + j]`, `i < mr`, `j < 64`:
/// the bytes of `requant::Epilogue::requant_tile_raw` / `requant_add_tile_raw` on the stored
/// tile.
///
/// # Safety
///
/// * `kc`, `a`, `b`, `mr` as in [`GemmUkernel`], except that row `i` of the A panel starts at
///   `a + i·lda` (`lda = kc` for a packed panel; a smaller `lda` reads overlapping rows, as the
///   stem's column strips do: `gemm_requant_strips` in the root crate); the kernel's `NR` is 64;
/// * `ep`, `out`, `ldc` as in [`IgemmRequantUkernel`];
/// * the CPU supports the kernel's ISA.
pub type GemmRequantUkernel = unsafe fn(
    kc: usize,
    lda: usize,
    a: *const u8,
    b: *const u8,
    mr: usize,
    ep: &crate::requant::Tile64<'_>,
    out: *mut u8,
    ldc: usize,
);

/// Packs one A panel: rows `src[i*lda + k0 .. + kc]` for `i < rows` (rows `rows..MR` and K
/// beyond `kc` are zero), into `dst` (exactly `pack_a_panel_bytes(kc)` bytes, `kc` rounded up
/// to `KR`). Safe: it only touches the slices it is given.
pub type PackAPanel = fn(src: &[u8], lda: usize, rows: usize, kc: usize, dst: &mut [u8]);

/// Packs one B panel from weights in Linear layout (`w[j*ldw + k0 .. + kc]` for `j < cols`,
/// columns `cols..NR` zero) into `dst` (exactly `pack_b_panel_bytes(kc)` bytes).
pub type PackBPanel = fn(w: &[i8], ldw: usize, cols: usize, kc: usize, dst: &mut [u8]);

/// One GEMM microkernel and everything needed to feed it.
#[derive(Clone, Copy, Debug)]
pub struct GemmKernel {
    /// `u8s8s32_gemm_<isa>_<MR>x<NR>c<KR>[_sat16]`.
    pub name: &'static str,
    pub isa: Isa,
    /// fbgemm i16 pair saturation (`vpmaddubsw` semantics) instead of exact sums.
    pub saturating: bool,
    /// The largest A byte for which the kernel keeps its contract: 255 for every general kernel;
    /// 127 for the `_a7` kernels, which use `vpmaddubsw` and are exact only because
    /// `2 · 127 · 128 < 2^15` (no i16 pair can saturate). The driver runs an `_a7` kernel only on
    /// A panels it has checked (see [`a7_companion`]).
    pub a_max: u8,
    pub mr: usize,
    pub nr: usize,
    pub kr: usize,
    pub pack_a: PackAPanel,
    pub pack_b: PackBPanel,
    /// Bytes of one packed A panel for a K extent of `kc` (rounded up to `kr`).
    pub a_panel_bytes: fn(kc: usize) -> usize,
    /// Bytes of one packed B panel for a K extent of `kc` (rounded up to `kr`).
    pub b_panel_bytes: fn(kc: usize) -> usize,
    pub ukernel: GemmUkernel,
    /// The largest `mr < MR` for which `ukernel` (and the indirect kernel of an
    /// [`IgemmKernel`] built on this kernel) runs an `mr`-row instantiation, doing `mr/MR` of
    /// the full tile's work; 0 when every call computes MR rows. The driver then splits the
    /// last `MR + 1` rows of a block into two such tiles instead of a full tile plus a single
    /// row on the GEMV companion (which streams a whole B panel for one row).
    pub tail_rows: usize,
    /// The same microkernel with the u8 epilogue of full 64-column tiles fused
    /// ([`GemmRequantUkernel`]), if it has one (the AVX-512 VNNI `6x64c4`).
    pub ukernel_requant: Option<GemmRequantUkernel>,
}

impl GemmKernel {
    /// `kc` rounded up to the K-interleave.
    pub fn round_k(&self, kc: usize) -> usize {
        kc.div_ceil(self.kr) * self.kr
    }
}

/// Packs an A panel in the default c{KR} byte layout (see module docs).
pub fn pack_a_ckr<const MR: usize, const KR: usize>(
    src: &[u8],
    lda: usize,
    rows: usize,
    kc: usize,
    dst: &mut [u8],
) {
    let kp = kc.div_ceil(KR) * KR;
    debug_assert!(rows <= MR);
    debug_assert_eq!(dst.len(), MR * kp);
    for g in 0..kp / KR {
        for i in 0..MR {
            for t in 0..KR {
                let k = g * KR + t;
                dst[(g * MR + i) * KR + t] = if i < rows && k < kc {
                    src[i * lda + k]
                } else {
                    0
                };
            }
        }
    }
}

/// Packs a B panel in the default c{KR} byte layout (see module docs).
pub fn pack_b_ckr<const NR: usize, const KR: usize>(
    w: &[i8],
    ldw: usize,
    cols: usize,
    kc: usize,
    dst: &mut [u8],
) {
    let kp = kc.div_ceil(KR) * KR;
    debug_assert!(cols <= NR);
    debug_assert_eq!(dst.len(), NR * kp);
    for g in 0..kp / KR {
        for j in 0..NR {
            for t in 0..KR {
                let k = g * KR + t;
                dst[(g * NR + j) * KR + t] = if j < cols && k < kc {
                    w[j * ldw + k] as u8
                } else {
                    0
                };
            }
        }
    }
}

/// Bytes of a c{KR} panel of `R` rows/columns.
pub const fn ckr_panel_bytes<const R: usize, const KR: usize>(kc: usize) -> usize {
    R * kc.div_ceil(KR) * KR
}

/// Indirect (implicit-im2col) microkernel: the [`GemmUkernel`] contract with the A panel
/// replaced by an **indirection array**.
///
/// # The indirection layout
///
/// A tile of `MR` output pixels of a convolution with `taps = kh·kw` kernel taps and `ic`
/// channels per tap (GEMM `K = taps · ic`, in (ky, kx, ic) order) is described by `taps · MR`
/// pointers, tap-major:
///
/// ```text
/// ind[t·MR + i] → the ic contiguous bytes A[i][t·ic .. (t+1)·ic]
///                 = input pixel (b, oy·sh + ky·dh − ph, ox·sw + kx·dw − pw) of row i's output
///                   pixel, channels c0 .. c0 + ic of the NHWC image (t = ky·kw + kx),
///                 or a buffer of ic copies of the input zero point when that tap is padding
///                 (and for rows i ≥ mr of a tail tile, whose results are not stored).
/// ```
///
/// With `ic % KR == 0` every K group lies inside one tap, so the B panel is the companion GEMM
/// kernel's packed B, byte for byte.
///
/// **Skipped taps.** Any pointer `ind[t·MR + i]` may be null: row `i` then skips tap `t` (no
/// byte is read, nothing is accumulated), and a tap whose pointers are all null is skipped
/// whole (its K groups of B are stepped over). The driver does this for padded taps when the
/// zero point is 0, where every product is `0 · w = 0` and skipping leaves the exact i32 sums
/// unchanged: in ResNet-18 (every conv input is a ReLU output) that is 18 % of the MACs of a
/// 7×7 stage-4 3×3 conv, 9 / 4.7 / 2.4 % in stages 3 / 2 / 1.
///
/// **Window mode.** When `tap_off` is non-null, `ind` holds only `MR` pointers, one per row,
/// and row `i`'s tap `t` is `ind[i] + tap_off[t]`: for an output pixel whose whole window lies
/// inside the image the taps are fixed offsets from the window's first byte, so the driver
/// passes one pointer per row instead of `taps` (building `taps · MR` pointers per tile cost
/// ≈ 2 % of a ResNet-18 pass).
///
/// ```text
/// ind[i] + tap_off[t] → A[i][t·ic .. (t+1)·ic]      (tap_off null: ind[t·MR + i], as above)
/// ```
///
/// # Safety
///
/// * `ic` is a non-zero multiple of the kernel's `kr`, `taps ≥ 1`;
/// * `tap_off` is null and `ind` is valid for reads of `taps · MR` pointers, each valid for
///   reads of `ic` bytes or null (a skipped tap); or `tap_off` is valid for reads of `taps` offsets, `ind` for reads of
///   `MR` pointers, and each `ind[i]` (the same allocation) is valid for reads of
///   `tap_off[t] + ic` bytes for every `t`;
/// * `b` points to one B panel packed by the companion GEMM kernel's `pack_b` for
///   `K = taps · ic`;
/// * `c` is valid for writes of `C[i*rs_c + j]` for `i < mr`, `j < nr` (the tile is stored, not
///   accumulated);
/// * `1 ≤ mr ≤ MR`, `1 ≤ nr ≤ NR`;
/// * the CPU supports the kernel's ISA.
pub type IgemmUkernel = unsafe fn(
    taps: usize,
    ic: usize,
    ind: *const *const u8,
    tap_off: *const usize,
    b: *const u8,
    c: *mut i32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    prefetch: Prefetch,
);

/// Cache lines an indirect kernel software-prefetches (towards L2) while it runs, one per K
/// group: lines `0 .. lines` from `at`, as far as the tile's K groups reach. The driver points
/// it at the slice of the *next* B panel this tile is responsible for, so a panel that comes
/// from memory is fetched while the previous one is being used instead of stalling the first
/// tile that reads it (in ResNet-18's stage 4 a 288 KiB B panel per 9 tiles; measured −5 to
/// −10 % per layer in a whole forward pass). A prefetch is only a hint: `at` is never
/// dereferenced, and any address (including past the end of an allocation) is allowed.
#[derive(Clone, Copy, Debug)]
pub struct Prefetch {
    pub at: *const u8,
    pub lines: usize,
}

impl Prefetch {
    /// No prefetching.
    pub const NONE: Prefetch = Prefetch {
        at: std::ptr::null(),
        lines: 0,
    };
}

/// Indirect microkernel with the u8 epilogue fused: the [`IgemmUkernel`] contract for a full
/// `mr × 64` tile (`NR = 64`), but instead of storing i32 accumulators it requantizes them
/// straight from registers (and applies the fused residual add, if any) into
/// `out[i·ldc + j]`, `i < mr`, `j < 64`: the bytes of `requant::Epilogue::requant_tile_raw` /
/// `requant_add_tile_raw` on the stored tile.
///
/// # Safety
///
/// * `taps`, `ic`, `ind`, `tap_off`, `b`, `prefetch` as in [`IgemmUkernel`]; `1 ≤ mr ≤ MR`, the kernel's `NR` is 64;
/// * `ep` satisfies the field contracts of [`crate::requant::Tile64`] (in particular
///   [`crate::requant::Tile64::supports`] its params, and its skip rows cover `mr × 64`);
/// * `out` is valid for writes of `out[i·ldc + j]` for `i < mr`, `j < 64` (`ldc ≥ 64`), no live
///   reference covers those bytes and the skip rows do not overlap them;
/// * the CPU supports the kernel's ISA.
pub type IgemmRequantUkernel = unsafe fn(
    taps: usize,
    ic: usize,
    ind: *const *const u8,
    tap_off: *const usize,
    b: *const u8,
    mr: usize,
    ep: &crate::requant::Tile64<'_>,
    out: *mut u8,
    ldc: usize,
    prefetch: Prefetch,
);

/// Indirect microkernel with the u8 epilogue **deferred** (software pipelining across tiles):
/// the [`IgemmUkernel`] contract for a full `MR × 64` tile (`NR = 64`), but the accumulators are
/// stored to `acc` (`acc[64·i + j]`, `i < MR`, `j < 64`) for the next call — or
/// [`crate::requant::finish_deferred`] — to requantize, and the epilogue of the previous tile,
/// `prev`, is done between this tile's taps, row `t` after tap `t` (see
/// [`crate::requant::Deferred`]).
///
/// # Safety
///
/// * `taps`, `ic`, `ind`, `tap_off`, `b`, `prefetch` as in [`IgemmUkernel`] for `mr = MR`;
///   the kernel's `NR` is 64;
/// * `acc` is valid for writes of `MR · 64` i32; it may be `prev.acc` (every row of `prev` is
///   read before `acc` is written), but no other live reference covers it;
/// * `prev`, if any, has at most `taps` rows and satisfies the safety contract of
///   [`crate::requant::finish_deferred`] (its output rows do not overlap `acc`);
/// * the CPU supports the kernel's ISA.
pub type IgemmDeferUkernel = unsafe fn(
    taps: usize,
    ic: usize,
    ind: *const *const u8,
    tap_off: *const usize,
    b: *const u8,
    prev: Option<&crate::requant::Deferred<'_>>,
    acc: *mut i32,
    prefetch: Prefetch,
);

/// One indirect-conv microkernel and the GEMM kernel whose packed B (and tile, ISA,
/// accumulation) it shares.
#[derive(Clone, Copy, Debug)]
pub struct IgemmKernel {
    /// `u8s8s32_igemm_<isa>_<MR>x<NR>c<KR>`.
    pub name: &'static str,
    /// The GEMM kernel with the same `mr`, `nr`, `kr`, ISA and packed B.
    pub gemm: &'static GemmKernel,
    pub ukernel: IgemmUkernel,
    /// The same kernel with the u8 epilogue of full 64-column tiles fused, if it has one.
    pub ukernel_requant: Option<IgemmRequantUkernel>,
    /// The same kernel with the epilogue of full `MR × 64` tiles deferred, if it has one.
    pub ukernel_defer: Option<IgemmDeferUkernel>,
}

/// Every indirect-conv kernel compiled into this build (tests and benches iterate this list).
pub fn all_igemm_kernels() -> Vec<&'static IgemmKernel> {
    vec![
        #[cfg(target_arch = "x86_64")]
        &x86_avx512vnni::U8S8S32_IGEMM_AVX512VNNI_6X64C4,
    ]
}

/// The indirect-conv companion of GEMM kernel `kernel` (reads the same packed B), if any.
pub fn igemm_companion(kernel: &GemmKernel) -> Option<&'static IgemmKernel> {
    all_igemm_kernels()
        .into_iter()
        .find(|k| std::ptr::eq(k.gemm, kernel))
}

/// Every GEMM kernel compiled into this build, for every ISA (supported or not). Tests and
/// benches iterate this list; dispatch picks from it. A kernel appears here exactly once.
pub fn all_kernels() -> Vec<&'static GemmKernel> {
    #[allow(unused_mut)]
    let mut v: Vec<&'static GemmKernel> = vec![
        &scalar::U8S8S32_GEMM_SCALAR_4X4C4,
        &scalar::U8S8S32_GEMM_SCALAR_3X5C4_TEST,
        &scalar::U8S8S32_GEMM_SCALAR_4X4C4_SAT16,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend_from_slice(&[
        &x86_avx2::U8S8S32_GEMM_AVX2_6X16C2,
        &x86_avx2::U8S8S32_GEMM_AVX2_1X16C2,
        &x86_avx2::U8S8S32_GEMM_AVX2_6X16C4_SAT16,
        &x86_avx2::U8S8S32_GEMM_AVX2_1X16C4_SAT16,
        &x86_avx2::U8S8S32_GEMM_AVX2_6X16C4_A7,
        &x86_avx2::U8S8S32_GEMM_AVX2_1X16C4_A7,
        &x86_avx512vnni::U8S8S32_GEMM_AVX512VNNI_8X32C4,
        &x86_avx512vnni::U8S8S32_GEMM_AVX512VNNI_14X32C4,
        &x86_avx512vnni::U8S8S32_GEMM_AVX512VNNI_6X64C4,
        &x86_avx512vnni::U8S8S32_GEMM_AVX512VNNI_1X32C4,
        &x86_avx512vnni::U8S8S32_GEMM_AVX512VNNI_1X64C4,
        &x86_avx512vnni::U8S8S32_GEMM_AVX512VNNI_8X32C4_SAT16,
        &x86_avx512vnni::U8S8S32_GEMM_AVX512VNNI_1X32C4_SAT16,
    ]);
    // aarch64: the first kernel of each (ISA, saturating) is that ISA's production kernel.
    #[cfg(target_arch = "aarch64")]
    v.extend_from_slice(&[
        &arm_neon::U8S8S32_GEMM_NEON_8X8C1,
        &arm_neon::U8S8S32_GEMM_NEON_8X8C2_SAT16,
        &arm_neondot::U8S8S32_GEMM_NEONDOT_8X8C4,
        &arm_i8mm::U8S8S32_GEMM_NEONI8MM_8X8C8,
    ]);
    v
}

/// The kernels usable on this CPU for `isa` (empty if the CPU lacks it).
pub fn kernels_for(isa: Isa) -> Vec<&'static GemmKernel> {
    if !isa.is_supported() {
        return Vec::new();
    }
    all_kernels().into_iter().filter(|k| k.isa == isa).collect()
}

/// The production (fastest measured) kernel of `isa` for this accumulation style, if any is
/// compiled in. Test-only and alternative tiles are never production kernels.
fn production(isa: Isa, saturating: bool) -> Option<&'static GemmKernel> {
    #[cfg(target_arch = "x86_64")]
    {
        match (isa, saturating) {
            (Isa::Avx2, false) => return Some(&x86_avx2::U8S8S32_GEMM_AVX2_6X16C2),
            (Isa::Avx2, true) => return Some(&x86_avx2::U8S8S32_GEMM_AVX2_6X16C4_SAT16),
            (Isa::Avx512Vnni, false) => {
                return Some(&x86_avx512vnni::U8S8S32_GEMM_AVX512VNNI_6X64C4);
            }
            (Isa::Avx512Vnni, true) => {
                return Some(&x86_avx512vnni::U8S8S32_GEMM_AVX512VNNI_8X32C4_SAT16);
            }
            _ => {}
        }
    }
    all_kernels().into_iter().find(|k| {
        k.isa == isa
            && k.saturating == saturating
            && k.a_max == 255
            && !k.name.ends_with("_test")
            && k.mr > 1
    })
}

/// Whether `kernel`'s A panel is `MR` rows of `kc` bytes, row-major, verbatim (see
/// `x86_pack::a_is_row_major_u8`): the driver may then read full panels in place.
pub fn a_is_row_major_u8(kernel: &GemmKernel) -> bool {
    #[cfg(target_arch = "x86_64")]
    return x86_pack::a_is_row_major_u8(kernel);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = kernel;
        false
    }
}

/// The single-row (GEMV, M = 1) companion of a production kernel: a kernel of the same ISA and
/// accumulation with `mr == 1` that reads **the same packed B** (same `nr`, `kr`, `pack_b`), or
/// `None` if there is none (the driver then uses `kernel` itself).
pub fn gemv_companion(kernel: &GemmKernel) -> Option<&'static GemmKernel> {
    all_kernels().into_iter().find(|k| {
        k.isa == kernel.isa
            && k.saturating == kernel.saturating
            && k.mr == 1
            && k.nr == kernel.nr
            && k.kr == kernel.kr
            && std::ptr::fn_addr_eq(k.pack_b, kernel.pack_b)
            && k.a_max == kernel.a_max
            && !k.name.ends_with("_test")
    })
}

/// The 7-bit-activation companion of an exact production kernel: an exact kernel of the same
/// ISA and tile (`mr`, `nr`) with `a_max == 127` and its own packed-B layout, or `None`.
///
/// Why: exact AVX2 multiplies i16-widened operands with `vpmaddwd` (16 MACs per multiply
/// instruction, twice the operand bytes). When every activation of an A panel is ≤ 127 the
/// `vpmaddubsw` pair sum cannot saturate (`|2 · 127 · (−128)| = 32 512 < 32 768`), so fbgemm's
/// u8 sequence is exact there: same multiply-port cost per MAC but half the bytes moved, no
/// widening pass over A, and A panels read in place. PyTorch's fbgemm qconfig calibrates
/// activations to 7 bits (`reduce_range=True`), so most panels of such a model qualify; the
/// driver checks each panel (an OR over its bytes while it is packed) and uses the companion only
/// where it is exact — the bytes are identical to the general kernel's by construction.
pub fn a7_companion(kernel: &GemmKernel) -> Option<&'static GemmKernel> {
    if kernel.saturating || kernel.a_max < 255 {
        return None;
    }
    all_kernels().into_iter().find(|k| {
        k.isa == kernel.isa
            && !k.saturating
            && k.a_max == 127
            && k.mr == kernel.mr
            && k.nr == kernel.nr
    })
}

/// The production kernel for `isa` and accumulation style, if this CPU supports it.
///
/// If `isa` is unsupported here or has no kernel of that style, falls back to the best
/// *supported lower* ISA of the same architecture that has one (the bytes are identical on every
/// ISA by contract), and finally to scalar.
pub fn best_kernel(isa: Isa, saturating: bool) -> &'static GemmKernel {
    let mut order: Vec<Isa> = Isa::ALL
        .into_iter()
        .filter(|&i| i <= isa && same_family(i, isa))
        .collect();
    order.reverse();
    for want in order {
        if want.is_supported()
            && let Some(k) = production(want, saturating)
        {
            return k;
        }
    }
    production(Isa::Scalar, saturating).expect("scalar kernels exist")
}

/// Whether `lower` can stand in for `isa` (same architecture family, or scalar).
fn same_family(lower: Isa, isa: Isa) -> bool {
    let x86 = |i: Isa| matches!(i, Isa::Avx2 | Isa::Avx512Vnni);
    let arm = |i: Isa| matches!(i, Isa::Neon | Isa::NeonDot | Isa::NeonI8mm);
    lower == Isa::Scalar || (x86(lower) && x86(isa)) || (arm(lower) && arm(isa))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_kernel_matches_request_or_falls_back() {
        for isa in Isa::ALL {
            for sat in [false, true] {
                let k = best_kernel(isa, sat);
                assert_eq!(k.saturating, sat, "{isa} {}", k.name);
                assert!(k.isa.is_supported(), "{}", k.name);
                assert!(k.isa <= isa || k.isa == Isa::Scalar, "{isa}: {}", k.name);
                if isa.is_supported() && isa != Isa::Scalar {
                    #[cfg(target_arch = "x86_64")]
                    assert_eq!(k.isa, isa, "{isa} sat={sat} should have its own kernel");
                }
                #[cfg(target_arch = "x86_64")]
                if k.isa != Isa::Scalar {
                    assert!(
                        gemv_companion(k).is_some(),
                        "{} has no GEMV companion",
                        k.name
                    );
                }
                if let Some(g) = gemv_companion(k) {
                    assert_eq!((g.mr, g.nr, g.kr, g.isa), (1, k.nr, k.kr, k.isa));
                }
            }
        }
    }
}
