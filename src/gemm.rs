//! The packed GEMM engine: `C = requant(A · Wᵀ)` with u8 activations, i8 weights, exact i32
//! accumulation (or fbgemm's pair saturation when asked) and a fused requantize + clamp.
//!
//! Data flow (fbgemm's `PackBMatrix` + `PackAWithRowOffset` + `fbgemmPacked` +
//! `ReQuantizeOutput`):
//!
//! 1. [`PackedWeights::new`] packs `W` (`N × K`, Linear layout) **once** into the chosen
//!    microkernel's panel layout, with column offsets `Σw − w_zp·K` folded in.
//! 2. Per call, rows of `A` come from an [`ASource`] (a plain matrix, or im2col rows of a
//!    convolution) and are packed per block; row sums are computed only when a weight zero
//!    point is non-zero.
//! 3. The microkernel produces i32 tiles; the epilogue applies the zero-point corrections and
//!    requantizes (or stores raw i32).
//!
//! Results are bit-identical for every ISA and every thread count.

use crate::validate::{check_capacity, check_nonzero, check_qparams_u8, check_weight_qparams};
use crate::{Error, Isa, QParams, Result, WeightQParams};
use aligned_vec::{AVec, ConstAlign};
use qkernels_kernels::gemm::{GemmKernel, best_kernel};
use qkernels_ref::RequantParams;
use rayon::prelude::*;

/// Options fixed at pack time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmOptions {
    /// ISA whose microkernel the weights are packed for.
    pub isa: Isa,
    /// Reproduce fbgemm's i16 pair saturation (`vpmaddubsw`) instead of exact sums.
    pub saturate_pairs: bool,
}

impl Default for GemmOptions {
    fn default() -> Self {
        GemmOptions {
            isa: crate::active_isa(),
            saturate_pairs: false,
        }
    }
}

impl GemmOptions {
    /// Exact accumulation on `isa`; `Err` if this CPU does not support it.
    pub fn for_isa(isa: Isa) -> Result<GemmOptions> {
        if !isa.is_supported() {
            return Err(Error::Unsupported(format!(
                "ISA {isa} is not supported by this CPU"
            )));
        }
        Ok(GemmOptions {
            isa,
            saturate_pairs: false,
        })
    }
}

/// Rows of the `A` operand (`M × K` u8), produced on demand so a convolution can stream im2col
/// rows without materialising the im2col matrix.
pub trait ASource: Sync {
    /// `M`.
    fn rows(&self) -> usize;
    /// `K`.
    fn depth(&self) -> usize;
    /// Writes `A[row0 + i][k0 .. k0 + kc]` to `dst[i * ld ..][.. kc]` for `i < rows`.
    fn fill(&self, row0: usize, rows: usize, k0: usize, kc: usize, dst: &mut [u8], ld: usize);
    /// A plain row-major matrix `(data, lda)`, when `A` is one (lets packers read it directly).
    fn as_matrix(&self) -> Option<(&[u8], usize)> {
        None
    }
}

/// A row-major u8 matrix used as `A`.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    data: &'a [u8],
    rows: usize,
    cols: usize,
    ld: usize,
}

impl<'a> Matrix<'a> {
    /// `rows × cols` with row stride `ld ≥ cols`; `data` must hold `(rows−1)·ld + cols` bytes.
    pub fn new(data: &'a [u8], rows: usize, cols: usize, ld: usize) -> Result<Matrix<'a>> {
        if ld < cols {
            return crate::invalid!("matrix: leading dimension {ld} < columns {cols}");
        }
        let need = if rows == 0 {
            0
        } else {
            (rows - 1)
                .checked_mul(ld)
                .and_then(|v| v.checked_add(cols))
                .ok_or_else(|| Error::InvalidArgument("matrix: size overflows usize".into()))?
        };
        check_capacity(data.len(), need, "matrix data")?;
        Ok(Matrix {
            data,
            rows,
            cols,
            ld,
        })
    }
}

impl ASource for Matrix<'_> {
    fn rows(&self) -> usize {
        self.rows
    }
    fn depth(&self) -> usize {
        self.cols
    }
    fn fill(&self, row0: usize, rows: usize, k0: usize, kc: usize, dst: &mut [u8], ld: usize) {
        for i in 0..rows {
            let src = &self.data[(row0 + i) * self.ld + k0..][..kc];
            dst[i * ld..][..kc].copy_from_slice(src);
        }
    }
    fn as_matrix(&self) -> Option<(&[u8], usize)> {
        Some((self.data, self.ld))
    }
}

/// Weights packed once for one microkernel, with everything the epilogue needs.
#[derive(Clone)]
pub struct PackedWeights {
    kernel: &'static GemmKernel,
    n: usize,
    k: usize,
    /// `ceil(N/NR)` panels of `b_panel_bytes(K)` bytes each.
    packed: AVec<u8, ConstAlign<64>>,
    panel_bytes: usize,
    col_offsets: Vec<i32>,
    w_zp: Vec<i32>,
    any_w_zp: bool,
    wq: WeightQParams,
    bias: Option<Vec<f32>>,
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWeights")
            .field("kernel", &self.kernel.name)
            .field("n", &self.n)
            .field("k", &self.k)
            .finish()
    }
}

impl PackedWeights {
    /// Packs `w` (`n × k`, row-major, PyTorch Linear layout) for the active ISA, exact mode.
    pub fn new(
        w: &[i8],
        n: usize,
        k: usize,
        wq: &WeightQParams,
        bias: Option<&[f32]>,
    ) -> Result<PackedWeights> {
        PackedWeights::with_options(w, n, k, wq, bias, &GemmOptions::default())
    }

    /// Packs `w` (`n × k`, row-major) for `opts.isa` and accumulation style.
    pub fn with_options(
        w: &[i8],
        n: usize,
        k: usize,
        wq: &WeightQParams,
        bias: Option<&[f32]>,
        opts: &GemmOptions,
    ) -> Result<PackedWeights> {
        check_nonzero(n, "GEMM N (output channels)")?;
        check_nonzero(k, "GEMM K (depth)")?;
        let nk = crate::validate::checked_product(&[n, k], "weights")?;
        crate::validate::check_len(w.len(), nk, "weights")?;
        check_weight_qparams(wq, n, "weights")?;
        if let Some(b) = bias {
            crate::validate::check_len(b.len(), n, "bias")?;
        }
        if !opts.isa.is_supported() {
            return Err(Error::Unsupported(format!(
                "ISA {} is not supported by this CPU",
                opts.isa
            )));
        }
        let kernel = best_kernel(opts.isa, opts.saturate_pairs);
        let panel_bytes = (kernel.b_panel_bytes)(k);
        let panels = n.div_ceil(kernel.nr);
        let total = crate::validate::checked_product(&[panels, panel_bytes], "packed weights")?;
        let mut packed = AVec::<u8, ConstAlign<64>>::from_iter(64, std::iter::repeat_n(0u8, total));
        for (p, dst) in packed.chunks_mut(panel_bytes).enumerate() {
            let j0 = p * kernel.nr;
            let cols = kernel.nr.min(n - j0);
            (kernel.pack_b)(&w[j0 * k..], k, cols, k, dst);
        }
        let w_zp: Vec<i32> = (0..n).map(|j| wq.zero_point(j)).collect();
        let col_offsets = qkernels_ref::col_offsets(n, k, w, &w_zp);
        Ok(PackedWeights {
            kernel,
            n,
            k,
            packed,
            panel_bytes,
            col_offsets,
            any_w_zp: w_zp.iter().any(|&z| z != 0),
            w_zp,
            wq: wq.clone(),
            bias: bias.map(<[f32]>::to_vec),
        })
    }

    /// Output channels `N`.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Depth `K`.
    pub fn k(&self) -> usize {
        self.k
    }
    /// The ISA the weights are packed for.
    pub fn isa(&self) -> Isa {
        self.kernel.isa
    }
    /// Name of the microkernel that runs these weights.
    pub fn kernel_name(&self) -> &'static str {
        self.kernel.name
    }
    /// Whether the weights run in fbgemm's pair-saturating mode.
    pub fn saturates(&self) -> bool {
        self.kernel.saturating
    }
    /// Weight quantization parameters.
    pub fn weight_qparams(&self) -> &WeightQParams {
        &self.wq
    }
    /// The float bias, if any.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// Requantization constants for a call with these input/output qparams.
    pub fn requant_params(&self, a_q: QParams, out_q: QParams, relu: bool) -> RequantParams {
        RequantParams::new(self.n, a_q, &self.wq, self.bias.as_deref(), out_q, relu)
    }
}

/// Where results go.
enum Sink<'o> {
    U8 {
        out: &'o mut [u8],
        rq: RequantParams,
    },
    I32 {
        out: &'o mut [i32],
    },
}

const MC: usize = 96;

fn check_out(m: usize, n: usize, ldc: usize, len: usize) -> Result<()> {
    if ldc < n {
        return crate::invalid!("output leading dimension {ldc} < N {n}");
    }
    let need = (m - 1)
        .checked_mul(ldc)
        .and_then(|v| v.checked_add(n))
        .ok_or_else(|| Error::InvalidArgument("output size overflows usize".into()))?;
    check_capacity(len, need, "output")
}

fn check_a(pw: &PackedWeights, a: &dyn ASource) -> Result<usize> {
    if a.depth() != pw.k {
        return crate::invalid!("A has depth {} but weights have K = {}", a.depth(), pw.k);
    }
    check_nonzero(a.rows(), "GEMM M (rows)")?;
    Ok(a.rows())
}

/// `out[i·ldc + j] = requant(Σ_k (A[i,k] − a_zp)(W[j,k] − w_zp[j]))` as u8, with fbgemm's float
/// requantization (bias, per-channel scales, ReLU clamping at the output zero point).
pub fn gemm_requant(
    pw: &PackedWeights,
    a: &dyn ASource,
    a_q: QParams,
    out_q: QParams,
    relu: bool,
    out: &mut [u8],
    ldc: usize,
) -> Result<()> {
    let m = check_a(pw, a)?;
    check_qparams_u8(a_q, "input")?;
    check_qparams_u8(out_q, "output")?;
    check_out(m, pw.n, ldc, out.len())?;
    let rq = pw.requant_params(a_q, out_q, relu);
    run(pw, a, a_q.zero_point, Sink::U8 { out, rq }, ldc);
    Ok(())
}

/// `out[i·ldc + j] = Σ_k (A[i,k] − a_zp)(W[j,k] − w_zp[j])` as raw i32 (wrapping), no requant.
pub fn gemm_i32(
    pw: &PackedWeights,
    a: &dyn ASource,
    a_zp: i32,
    out: &mut [i32],
    ldc: usize,
) -> Result<()> {
    let m = check_a(pw, a)?;
    check_out(m, pw.n, ldc, out.len())?;
    run(pw, a, a_zp, Sink::I32 { out }, ldc);
    Ok(())
}

/// Quantized linear layer: `x` is `m × k` (row-major, contiguous), `out` is `m × n`.
pub fn linear(
    pw: &PackedWeights,
    x: &[u8],
    m: usize,
    x_q: QParams,
    out_q: QParams,
    relu: bool,
    out: &mut [u8],
) -> Result<()> {
    let mk = crate::validate::checked_product(&[m, pw.k], "linear input")?;
    crate::validate::check_len(x.len(), mk, "linear input")?;
    let a = Matrix::new(x, m, pw.k, pw.k)?;
    gemm_requant(pw, &a, x_q, out_q, relu, out, pw.n)
}

/// Plain `C = A · Wᵀ` (`A`: `m × k` u8, `W`: `n × k` i8, `C`: `m × n` i32, exact, no zero
/// points), packing `W` on the fly. For repeated calls pack once with [`PackedWeights`].
pub fn gemm_u8s8s32(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[u8],
    lda: usize,
    w: &[i8],
    ldw: usize,
    c: &mut [i32],
    ldc: usize,
) -> Result<()> {
    check_nonzero(m, "m")?;
    check_nonzero(n, "n")?;
    check_nonzero(k, "k")?;
    if ldw < k {
        return crate::invalid!("ldw {ldw} < k {k}");
    }
    let need_w = (n - 1)
        .checked_mul(ldw)
        .and_then(|v| v.checked_add(k))
        .ok_or_else(|| Error::InvalidArgument("W size overflows usize".into()))?;
    check_capacity(w.len(), need_w, "W")?;
    let dense: Vec<i8> = (0..n)
        .flat_map(|j| w[j * ldw..j * ldw + k].iter().copied())
        .collect();
    let pw = PackedWeights::with_options(
        &dense,
        n,
        k,
        &WeightQParams::per_tensor(1.0, 0),
        None,
        &GemmOptions::for_isa(isa)?,
    )?;
    let a = Matrix::new(a, m, k, lda)?;
    gemm_i32(&pw, &a, 0, c, ldc)
}

/// The driver: M blocks (in parallel when the current rayon pool has more than one thread),
/// each packed once and multiplied by every B panel.
fn run(pw: &PackedWeights, a: &dyn ASource, a_zp: i32, sink: Sink<'_>, ldc: usize) {
    let m = a.rows();
    let kern = pw.kernel;
    let mc = MC / kern.mr * kern.mr;
    let blocks = m.div_ceil(mc);
    let parallel = rayon::current_num_threads() > 1 && blocks > 1;
    match sink {
        Sink::U8 { out, rq } => {
            let len = ((m - 1) * ldc + pw.n).min(out.len());
            let chunks: Vec<(usize, &mut [u8])> =
                out[..len].chunks_mut(mc * ldc).enumerate().collect();
            let work = |(b, chunk): (usize, &mut [u8])| {
                block(pw, a, a_zp, b * mc, mc.min(m - b * mc), |i, j, raw| {
                    chunk[i * ldc + j] = rq.apply(raw, j);
                })
            };
            if parallel {
                chunks.into_par_iter().for_each(work);
            } else {
                chunks.into_iter().for_each(work);
            }
        }
        Sink::I32 { out } => {
            let len = ((m - 1) * ldc + pw.n).min(out.len());
            let chunks: Vec<(usize, &mut [i32])> =
                out[..len].chunks_mut(mc * ldc).enumerate().collect();
            let work = |(b, chunk): (usize, &mut [i32])| {
                block(pw, a, a_zp, b * mc, mc.min(m - b * mc), |i, j, raw| {
                    chunk[i * ldc + j] = raw;
                })
            };
            if parallel {
                chunks.into_par_iter().for_each(work);
            } else {
                chunks.into_iter().for_each(work);
            }
        }
    }
}

/// One M block of `rows` rows starting at `row0`: pack A, run every panel, emit corrected
/// accumulators through `emit(i_in_block, j, raw)`.
fn block(
    pw: &PackedWeights,
    a: &dyn ASource,
    a_zp: i32,
    row0: usize,
    rows: usize,
    mut emit: impl FnMut(usize, usize, i32),
) {
    let kern = pw.kernel;
    let k = pw.k;
    let kp = kern.round_k(k);
    let (mr, nr) = (kern.mr, kern.nr);
    let a_panel = (kern.a_panel_bytes)(k);
    let mut rowbuf = vec![0u8; mr * k];
    let mut packed_a = vec![0u8; rows.div_ceil(mr) * a_panel];
    let mut row_sums = vec![0i32; rows];
    for (p, dst) in packed_a.chunks_mut(a_panel).enumerate() {
        let i0 = p * mr;
        let r = mr.min(rows - i0);
        a.fill(row0 + i0, r, 0, k, &mut rowbuf, k);
        (kern.pack_a)(&rowbuf, k, r, k, dst);
        if pw.any_w_zp {
            for i in 0..r {
                row_sums[i0 + i] = rowbuf[i * k..(i + 1) * k]
                    .iter()
                    .map(|&v| i32::from(v))
                    .sum();
            }
        }
    }
    let mut tile = vec![0i32; mr * nr];
    for p in 0..pw.n.div_ceil(nr) {
        let j0 = p * nr;
        let cols = nr.min(pw.n - j0);
        let bp = &pw.packed[p * pw.panel_bytes..][..pw.panel_bytes];
        for (ip, ap) in packed_a.chunks(a_panel).enumerate() {
            let i0 = ip * mr;
            let r = mr.min(rows - i0);
            // SAFETY: `ap`/`bp` are whole panels packed by this kernel's packers for K = `k`
            // (`kp` is `k` rounded to KR); `tile` holds MR×NR i32 with row stride `nr`;
            // `r ≤ MR`, `cols ≤ NR`; the kernel's ISA was checked at pack time.
            unsafe {
                (kern.ukernel)(
                    kp,
                    ap.as_ptr(),
                    bp.as_ptr(),
                    tile.as_mut_ptr(),
                    nr,
                    r,
                    cols,
                    false,
                )
            };
            for i in 0..r {
                for jj in 0..cols {
                    let j = j0 + jj;
                    let raw = tile[i * nr + jj]
                        .wrapping_sub(a_zp.wrapping_mul(pw.col_offsets[j]))
                        .wrapping_sub(row_sums[i0 + i].wrapping_mul(pw.w_zp[j]));
                    emit(i0 + i, j, raw);
                }
            }
        }
    }
}
