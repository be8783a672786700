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
use qkernels_kernels::gemm::{GemmKernel, a_is_row_major_u8, best_kernel, gemv_companion};
use qkernels_kernels::requant::{Epilogue, RequantCols, correct_tile};
use qkernels_ref::RequantParams;
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

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

/// Requantization constants of the last `gemm_requant` call, keyed by its quantization
/// parameters: building them costs N f32 divisions and two allocations, as much as the whole
/// multiply for a GEMV (M = 1).
#[derive(Clone)]
struct EpilogueCache {
    a_q: QParams,
    out_q: QParams,
    relu: bool,
    rq: Arc<RequantParams>,
    col_term: Arc<Vec<i32>>,
}

/// Weights packed once for one microkernel, with everything the epilogue needs.
pub struct PackedWeights {
    kernel: &'static GemmKernel,
    /// Single-row companion of `kernel` reading the same packed B (used when M = 1).
    gemv: Option<&'static GemmKernel>,
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
    cache: Mutex<Option<EpilogueCache>>,
}

impl Clone for PackedWeights {
    fn clone(&self) -> PackedWeights {
        PackedWeights {
            kernel: self.kernel,
            gemv: self.gemv,
            n: self.n,
            k: self.k,
            packed: self.packed.clone(),
            panel_bytes: self.panel_bytes,
            col_offsets: self.col_offsets.clone(),
            w_zp: self.w_zp.clone(),
            any_w_zp: self.any_w_zp,
            wq: self.wq.clone(),
            bias: self.bias.clone(),
            cache: Mutex::new(None),
        }
    }
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
        PackedWeights::with_kernel(w, n, k, wq, bias, kernel)
    }

    /// Packs `w` for one specific microkernel of `all_kernels()` (benches and tests compare
    /// tiles with this; the public entry points choose the production kernel).
    #[doc(hidden)]
    pub fn with_kernel(
        w: &[i8],
        n: usize,
        k: usize,
        wq: &WeightQParams,
        bias: Option<&[f32]>,
        kernel: &'static GemmKernel,
    ) -> Result<PackedWeights> {
        check_nonzero(n, "GEMM N (output channels)")?;
        check_nonzero(k, "GEMM K (depth)")?;
        let nk = crate::validate::checked_product(&[n, k], "weights")?;
        crate::validate::check_len(w.len(), nk, "weights")?;
        check_weight_qparams(wq, n, "weights")?;
        if let Some(b) = bias {
            crate::validate::check_len(b.len(), n, "bias")?;
        }
        if !kernel.isa.is_supported() {
            return Err(Error::Unsupported(format!(
                "kernel {} needs ISA {}, not supported by this CPU",
                kernel.name, kernel.isa
            )));
        }
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
            gemv: gemv_companion(kernel),
            n,
            k,
            packed,
            panel_bytes,
            col_offsets,
            any_w_zp: w_zp.iter().any(|&z| z != 0),
            w_zp,
            wq: wq.clone(),
            bias: bias.map(<[f32]>::to_vec),
            cache: Mutex::new(None),
        })
    }

    /// `a_zp · col_off[j]` for every column (wrapping).
    fn col_term(&self, a_zp: i32) -> Vec<i32> {
        self.col_offsets
            .iter()
            .map(|&c| a_zp.wrapping_mul(c))
            .collect()
    }

    /// The requantization constants and column terms for these parameters, from the one-entry
    /// cache when the previous call used the same ones (the usual case: a layer is called with
    /// fixed qparams). Identical values either way: the cache only stores what
    /// [`PackedWeights::requant_params`] returns.
    fn epilogue_constants(
        &self,
        a_q: QParams,
        out_q: QParams,
        relu: bool,
    ) -> (Arc<RequantParams>, Arc<Vec<i32>>) {
        if let Ok(guard) = self.cache.lock()
            && let Some(c) = guard.as_ref()
            && c.a_q == a_q
            && c.out_q == out_q
            && c.relu == relu
        {
            return (c.rq.clone(), c.col_term.clone());
        }
        let rq = Arc::new(self.requant_params(a_q, out_q, relu));
        let col_term = Arc::new(self.col_term(a_q.zero_point));
        if let Ok(mut guard) = self.cache.lock() {
            *guard = Some(EpilogueCache {
                a_q,
                out_q,
                relu,
                rq: rq.clone(),
                col_term: col_term.clone(),
            });
        }
        (rq, col_term)
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
        rq: Arc<RequantParams>,
        col_term: Arc<Vec<i32>>,
    },
    I32 {
        out: &'o mut [i32],
        col_term: Arc<Vec<i32>>,
    },
}

/// Target size of one packed A block (MC × K bytes): it is re-read once per B panel, so it
/// must stay in L2 (1 MiB on Zen 4) next to the B panel being streamed.
const A_BLOCK_BYTES: usize = 192 * 1024;

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
    let (rq, col_term) = pw.epilogue_constants(a_q, out_q, relu);
    run(pw, a, Sink::U8 { out, rq, col_term }, ldc);
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
    let col_term = Arc::new(pw.col_term(a_zp));
    run(pw, a, Sink::I32 { out, col_term }, ldc);
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

/// Raw output base pointer shared by the workers. Each work item writes a disjoint set of
/// `(row, column)` elements (its own row range × its own column range), so no element is ever
/// written by two items and no `&mut` slices overlap.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: the pointer is only used to build disjoint per-row slices (see `OutPtr` docs); the
// buffer outlives the parallel region (it is borrowed by `run` for its whole duration).
unsafe impl<T: Send> Send for OutPtr<T> {}
// SAFETY: as above; shared references to `OutPtr` only copy the address.
unsafe impl<T: Send> Sync for OutPtr<T> {}

/// Everything a work item needs, computed once per call.
struct Plan<'p> {
    pw: &'p PackedWeights,
    kern: &'static GemmKernel,
    a: &'p dyn ASource,
    m: usize,
    kp: usize,
    a_panel: usize,
    /// Rows per M block (a multiple of MR).
    mc: usize,
    /// B panels per N chunk.
    pc: usize,
    /// `a_zp · col_off[j]`.
    col_term: Arc<Vec<i32>>,
    epilogue: Epilogue,
    /// The kernel reads row-major u8 A panels: full panels of a matrix with `lda == K == kp`
    /// are read in place, streamed rows are filled straight into the panel.
    a_rows: bool,
    /// Single-row kernel (same packed B) for a last A panel holding one row: a full MR-row tile
    /// would spend MR× the MACs on it (M = 49 = 8·6 + 1 in ResNet's last stage).
    tail1: Option<&'static GemmKernel>,
    ldc: usize,
}

/// Where A panel `ip` of the current block lives.
#[derive(Clone, Copy)]
enum PanelAt {
    /// Offset into `Scratch::packed_a`.
    Packed(usize),
    /// Offset into the source matrix (a full panel read in place).
    Source(usize),
    /// Offset into `Scratch::packed_a` of a one-row tail panel packed for `Plan::tail1`.
    Tail1(usize),
}

/// Per-thread scratch, reused across the work items a thread runs.
struct Scratch {
    packed_a: AVec<u8, ConstAlign<64>>,
    panels: Vec<PanelAt>,
    rowbuf: Vec<u8>,
    row_sums: Vec<i32>,
    tile: Vec<i32>,
}

thread_local! {
    /// The packed-A buffer, kept per thread between calls: a fresh ~192 KiB buffer per call is
    /// an `mmap`, page faults on first touch and a `munmap` every time (measured at ≈ 20 % of a
    /// small-K GEMM such as ResNet's 12544×64×147 stem).
    static A_BUF: std::cell::RefCell<AVec<u8, ConstAlign<64>>> =
        std::cell::RefCell::new(AVec::new(64));
}

impl Scratch {
    fn new(plan: &Plan<'_>) -> Scratch {
        let kern = plan.kern;
        let panels = plan.mc / kern.mr;
        let need = panels * plan.a_panel;
        // Every byte of a panel is written by packing before it is read, so a reused buffer's
        // old contents never matter.
        let mut packed_a = A_BUF
            .try_with(|b| std::mem::replace(&mut *b.borrow_mut(), AVec::new(64)))
            .unwrap_or_else(|_| AVec::new(64));
        if packed_a.len() < need {
            packed_a = AVec::from_iter(64, std::iter::repeat_n(0u8, need));
        }
        Scratch {
            packed_a,
            panels: Vec::with_capacity(panels),
            rowbuf: if plan.a.as_matrix().is_some() {
                Vec::new()
            } else {
                vec![0u8; kern.mr * plan.pw.k]
            },
            row_sums: vec![0; plan.mc],
            tile: vec![0; kern.mr * kern.nr],
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::replace(&mut self.packed_a, AVec::new(64));
        // Keep the larger buffer for the next call on this thread (ignore a torn-down TLS).
        let _ = A_BUF.try_with(|b| {
            if let Ok(mut cur) = b.try_borrow_mut()
                && cur.len() < buf.len()
            {
                *cur = buf;
            }
        });
    }
}

/// The driver. Loop nest (no K blocking: every output is one microkernel call over the whole
/// K, which keeps tiles hot for the fused epilogue and makes results independent of blocking):
///
/// ```text
/// for each work item (M block of `mc` rows × chunk of `pc` B panels)   ← rayon, if > 1 thread
///     pack the A block (MC × K, ≤ A_BLOCK_BYTES, stays in L2), row sums if any w_zp ≠ 0
///     for each B panel of the chunk (K × NR, prepacked, streamed once per block)
///         for each A panel of the block (MR × K)
///             microkernel → MR × NR i32 tile → zero-point correction + requant → output
/// ```
///
/// M = 1 uses the kernel's single-row companion (same packed B). The partition into work items
/// depends on the thread count, the arithmetic of each output element does not.
fn run(pw: &PackedWeights, a: &dyn ASource, sink: Sink<'_>, ldc: usize) {
    let m = a.rows();
    let kern = if m == 1 {
        pw.gemv.unwrap_or(pw.kernel)
    } else {
        pw.kernel
    };
    let (mr, nr) = (kern.mr, kern.nr);
    let a_panel = (kern.a_panel_bytes)(pw.k);
    let n_panels = pw.n.div_ceil(nr);
    let m_panels = m.div_ceil(mr);
    let threads = rayon::current_num_threads().max(1);
    // M block: as many A panels as fit the L2 budget, but at least one.
    let mut mc_panels = (A_BLOCK_BYTES / a_panel.max(1)).clamp(1, m_panels);
    let mut pc = n_panels;
    if threads > 1 {
        // Enough items for every thread (about 4 per thread for balance): split M first, then
        // N when M is too small.
        let want = 4 * threads;
        mc_panels = mc_panels.min(m_panels.div_ceil(want).max(1));
        let m_blocks = m_panels.div_ceil(mc_panels);
        if m_blocks < want {
            pc = n_panels.div_ceil(want.div_ceil(m_blocks)).max(1);
        }
    }
    let plan = Plan {
        pw,
        kern,
        a,
        m,
        kp: kern.round_k(pw.k),
        a_panel,
        mc: mc_panels * mr,
        pc,
        col_term: match &sink {
            Sink::U8 { col_term, .. } | Sink::I32 { col_term, .. } => col_term.clone(),
        },
        epilogue: Epilogue::new(kern.isa),
        a_rows: a_is_row_major_u8(kern),
        tail1: if kern.mr > 1 { pw.gemv } else { None },
        ldc,
    };
    let items: Vec<(usize, usize)> = (0..m.div_ceil(plan.mc))
        .flat_map(|ib| (0..n_panels.div_ceil(pc)).map(move |jb| (ib, jb)))
        .collect();
    let parallel = threads > 1 && items.len() > 1;
    match sink {
        Sink::U8 { out, rq, .. } => {
            let base = OutPtr(out.as_mut_ptr());
            let run_item = |s: &mut Scratch, item: (usize, usize)| {
                item_u8(&plan, s, item, base, &rq);
            };
            if parallel {
                items
                    .into_par_iter()
                    .for_each_init(|| Scratch::new(&plan), run_item);
            } else {
                let mut s = Scratch::new(&plan);
                items.into_iter().for_each(|it| run_item(&mut s, it));
            }
        }
        Sink::I32 { out, .. } => {
            let base = OutPtr(out.as_mut_ptr());
            let run_item = |s: &mut Scratch, item: (usize, usize)| {
                item_i32(&plan, s, item, base);
            };
            if parallel {
                items
                    .into_par_iter()
                    .for_each_init(|| Scratch::new(&plan), run_item);
            } else {
                let mut s = Scratch::new(&plan);
                items.into_iter().for_each(|it| run_item(&mut s, it));
            }
        }
    }
}

/// Packs the A rows `row0 .. row0 + rows` into `s.packed_a` (and their sums into
/// `s.row_sums` when a weight zero point is non-zero), or records where a panel can be read in
/// place.
fn pack_a_block(plan: &Plan<'_>, s: &mut Scratch, row0: usize, rows: usize) {
    let kern = plan.kern;
    let (k, mr) = (plan.pw.k, kern.mr);
    let need_sums = plan.pw.any_w_zp;
    s.panels.clear();
    // Streamed rows for a row-major kernel: the block's panels are consecutive MR-row slices
    // of one `rows × kp` row-major buffer, so the source writes every row of the block in one
    // call (a conv's im2col then copies whole interior stretches of an output row at once,
    // instead of restarting its geometry every MR rows). A one-row tail panel for the GEMV
    // companion is left to the loop below.
    let streamed = if plan.a_rows && plan.a.as_matrix().is_none() {
        let kp = plan.kp;
        debug_assert_eq!(plan.a_panel, mr * kp);
        let n = if plan.tail1.is_some() && rows % mr == 1 {
            rows - 1
        } else {
            rows
        };
        if n > 0 {
            plan.a.fill(row0, n, 0, k, &mut s.packed_a[..n * kp], kp);
            // Zero the K padding of every row, and the missing rows of a partial last panel.
            for row in s.packed_a[..n * kp].chunks_exact_mut(kp) {
                // (kp − k < KR bytes: element stores, not a `memset` call per row)
                match &mut row[k..] {
                    [] => {}
                    [a] => *a = 0,
                    [a, b] => (*a, *b) = (0, 0),
                    tail => tail.fill(0),
                }
            }
            s.packed_a[n * kp..n.div_ceil(mr) * mr * kp].fill(0);
        }
        n.div_ceil(mr)
    } else {
        0
    };
    for p in 0..rows.div_ceil(mr) {
        let i0 = p * mr;
        let r = mr.min(rows - i0);
        let off = p * plan.a_panel;
        let dst = &mut s.packed_a[off..off + plan.a_panel];
        let tail1 = plan.tail1.filter(|_| r == 1);
        if p < streamed {
            s.panels.push(PanelAt::Packed(off));
            if need_sums {
                let src = &s.packed_a[off..off + r * plan.kp];
                for (i, row) in src.chunks_exact(plan.kp).enumerate() {
                    s.row_sums[i0 + i] = row[..k].iter().map(|&v| i32::from(v)).sum();
                }
            }
            continue;
        }
        let (src, lda): (&[u8], usize) = match plan.a.as_matrix() {
            Some((data, lda)) => {
                let src = &data[(row0 + i0) * lda..];
                if let Some(g) = tail1 {
                    (g.pack_a)(src, lda, 1, k, &mut dst[..(g.a_panel_bytes)(k)]);
                    s.panels.push(PanelAt::Tail1(off));
                } else if plan.a_rows && r == mr && lda == k && k == plan.kp {
                    s.panels.push(PanelAt::Source((row0 + i0) * lda));
                } else {
                    (kern.pack_a)(src, lda, r, k, dst);
                    s.panels.push(PanelAt::Packed(off));
                }
                (src, lda)
            }
            None => {
                plan.a.fill(row0 + i0, r, 0, k, &mut s.rowbuf, k);
                if let Some(g) = tail1 {
                    (g.pack_a)(&s.rowbuf, k, 1, k, &mut dst[..(g.a_panel_bytes)(k)]);
                    s.panels.push(PanelAt::Tail1(off));
                } else {
                    (kern.pack_a)(&s.rowbuf, k, r, k, dst);
                    s.panels.push(PanelAt::Packed(off));
                }
                (&s.rowbuf, k)
            }
        };
        if need_sums {
            for i in 0..r {
                s.row_sums[i0 + i] = src[i * lda..][..k].iter().map(|&v| i32::from(v)).sum();
            }
        }
    }
}

/// Runs the microkernel on A panel `ip` of the packed block and B panel `p` into `s.tile`
/// (row stride NR); returns `(rows, cols)` of the valid part.
fn tile(plan: &Plan<'_>, s: &mut Scratch, rows: usize, ip: usize, p: usize) -> (usize, usize) {
    let kern = plan.kern;
    let (mr, nr) = (kern.mr, kern.nr);
    let r = mr.min(rows - ip * mr);
    let cols = nr.min(plan.pw.n - p * nr);
    let (ap, ukern) = match s.panels[ip] {
        PanelAt::Packed(off) => (&s.packed_a[off..off + plan.a_panel], kern),
        PanelAt::Source(off) => {
            let (data, _) = plan
                .a
                .as_matrix()
                .expect("in-place panels come from a matrix");
            (&data[off..off + plan.a_panel], kern)
        }
        PanelAt::Tail1(off) => {
            let g = plan
                .tail1
                .expect("tail panels exist only with a tail kernel");
            (&s.packed_a[off..off + (g.a_panel_bytes)(plan.pw.k)], g)
        }
    };
    let bp = &plan.pw.packed[p * plan.pw.panel_bytes..][..plan.pw.panel_bytes];
    debug_assert_eq!(bp.len(), (ukern.b_panel_bytes)(plan.pw.k));
    debug_assert_eq!(ap.len(), (ukern.a_panel_bytes)(plan.pw.k));
    debug_assert!(r <= ukern.mr && plan.kp == ukern.round_k(plan.pw.k));
    // SAFETY: `ap`/`bp` are whole panels in `ukern`'s layouts for K = `pw.k` (`kp` is K rounded
    // to KR, the same for the kernel and its GEMV companion). An in-place A panel is MR full rows
    // of kp = K = lda bytes, exactly what `pack_a` produces for a row-major kernel
    // (`a_is_row_major_u8`); a tail panel was packed by the companion's own `pack_a`; the
    // companion shares `pack_b` with the kernel that packed B. `s.tile` holds MR×NR i32 with
    // row stride NR; `1 ≤ r ≤ ukern.mr`, `1 ≤ cols ≤ NR`; the ISA was checked at pack time.
    unsafe {
        (ukern.ukernel)(
            plan.kp,
            ap.as_ptr(),
            bp.as_ptr(),
            s.tile.as_mut_ptr(),
            nr,
            r,
            cols,
            false,
        )
    };
    (r, cols)
}

fn item_u8(
    plan: &Plan<'_>,
    s: &mut Scratch,
    (ib, jb): (usize, usize),
    base: OutPtr<u8>,
    rq: &RequantParams,
) {
    let kern = plan.kern;
    let (mr, nr) = (kern.mr, kern.nr);
    let row0 = ib * plan.mc;
    let rows = plan.mc.min(plan.m - row0);
    pack_a_block(plan, s, row0, rows);
    let n_panels = plan.pw.n.div_ceil(nr);
    for p in jb * plan.pc..((jb + 1) * plan.pc).min(n_panels) {
        let j0 = p * nr;
        for ip in 0..rows.div_ceil(mr) {
            let (r, cols) = tile(plan, s, rows, ip, p);
            let i0 = ip * mr;
            let cols_p = RequantCols {
                col_term: &plan.col_term[j0..j0 + cols],
                w_zp: plan.pw.any_w_zp.then(|| &plan.pw.w_zp[j0..j0 + cols]),
                bias: rq.bias_acc.as_ref().map(|b| &b[j0..j0 + cols]),
                mult: &rq.mult[j0..j0 + cols],
                out_zp: rq.out_zp,
                qmin: rq.qmin,
                qmax: rq.qmax,
            };
            // SAFETY: rows `row0+i0 .. +r` (< M) × columns `j0 .. j0+cols` (≤ N ≤ ldc) are
            // inside the output validated by `check_out`, and belong to this work item only (no
            // other item and no reference touches them during the call).
            unsafe {
                plan.epilogue.requant_tile_raw(
                    &s.tile,
                    nr,
                    r,
                    cols,
                    &s.row_sums[i0..],
                    &cols_p,
                    base.0.add((row0 + i0) * plan.ldc + j0),
                    plan.ldc,
                )
            };
        }
    }
}

fn item_i32(plan: &Plan<'_>, s: &mut Scratch, (ib, jb): (usize, usize), base: OutPtr<i32>) {
    let kern = plan.kern;
    let (mr, nr) = (kern.mr, kern.nr);
    let row0 = ib * plan.mc;
    let rows = plan.mc.min(plan.m - row0);
    pack_a_block(plan, s, row0, rows);
    let n_panels = plan.pw.n.div_ceil(nr);
    for p in jb * plan.pc..((jb + 1) * plan.pc).min(n_panels) {
        let j0 = p * nr;
        for ip in 0..rows.div_ceil(mr) {
            let (r, cols) = tile(plan, s, rows, ip, p);
            let i0 = ip * mr;
            for i in 0..r {
                // SAFETY: as in `item_u8`: inside the validated output, owned by this item.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        base.0.add((row0 + i0 + i) * plan.ldc + j0),
                        cols,
                    )
                };
                correct_tile(
                    kern.isa,
                    &s.tile[i * nr..][..cols],
                    nr,
                    1,
                    cols,
                    &s.row_sums[i0 + i..],
                    &plan.col_term[j0..j0 + cols],
                    plan.pw.any_w_zp.then(|| &plan.pw.w_zp[j0..j0 + cols]),
                    dst,
                    cols,
                );
            }
        }
    }
}
