//! The C ABI (`include/qkernels.h`, generated from this file by cbindgen — see
//! `docs/c-api.md`).
//!
//! Why it looks the way it does:
//!
//! * **Nothing a C caller passes can cause undefined behaviour on the Rust side** as long as the
//!   pointers it passes point to buffers of the sizes it states. NULL pointers, misaligned
//!   pointers, zero or overflowing sizes, bad quantization parameters and too-small output
//!   buffers are all *checked* and reported as a [`qk_status`], never dereferenced or trusted.
//!   Every size product is computed with overflow checks before a slice is formed, and no slice
//!   spans more than `isize::MAX` bytes.
//! * **No panic crosses the boundary** (unwinding into C is undefined behaviour; Rust aborts).
//!   Every body runs inside [`std::panic::catch_unwind`]; a panic becomes `QK_ERR_INTERNAL`.
//! * **Errors carry a message**: every failing call stores a NUL-terminated message in a
//!   thread-local buffer read by [`qk_last_error`] (the pattern of tract's
//!   `tract_get_last_error`): a status code alone rarely tells a C user *which* argument was bad.
//! * **Handles are opaque and immutable** ([`qk_weights`], [`qk_model`]): packed once, then only
//!   read, so one handle can serve many threads at once without locking.
//! * **Outputs may alias inputs**: an input that overlaps the output buffer (e.g. an in-place
//!   residual `add`) is copied first, so Rust never holds a shared and a mutable view of the
//!   same bytes.
//! * The C names (`qk_status`, `QK_OK`, `qk_qparams`, …) are the Rust names, so the header
//!   needs no renaming rules and reads exactly like issue #6 specifies.
#![allow(non_camel_case_types)]

use crate::conv::{Conv2d, Conv2dParams, ConvOptions};
use crate::gemm::{GemmOptions, PackedWeights};
use crate::{Accumulation, Error, Pool2d, QParams, WeightQParams};
use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

// ------------------------------------------------------------------------------------------
// Types
// ------------------------------------------------------------------------------------------

/// Result of every fallible call. On anything but `QK_OK`, [`qk_last_error`] describes the
/// failure.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum qk_status {
    /// Success.
    QK_OK = 0,
    /// A required pointer argument was NULL.
    QK_ERR_NULL_POINTER = 1,
    /// A size, shape, quantization parameter, option or buffer capacity is invalid (or a
    /// pointer is misaligned for its element type).
    QK_ERR_INVALID_ARGUMENT = 2,
    /// Valid, but not supported on this CPU or build.
    QK_ERR_UNSUPPORTED = 3,
    /// Reading a file failed (e.g. the model path does not exist).
    QK_ERR_IO = 4,
    /// A model file is malformed.
    QK_ERR_FORMAT = 5,
    /// A bug in qkernels (an internal panic was caught at the boundary). Please report it.
    QK_ERR_INTERNAL = 6,
}

/// Per-tensor affine quantization parameters: `real = scale * (q - zero_point)`.
///
/// `scale` is a `double`, as PyTorch stores it (kernels round it to `float` where PyTorch
/// does). Activations (`uint8_t`) need `0 <= zero_point <= 255`; every scale must be finite
/// and > 0, also after rounding to `float`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct qk_qparams {
    pub scale: f64,
    pub zero_point: i32,
}

impl From<qk_qparams> for QParams {
    fn from(q: qk_qparams) -> QParams {
        QParams::new(q.scale, q.zero_point)
    }
}

/// Hyper-parameters of a 2-D convolution (PyTorch `Conv2d` semantics; weights are OIHW
/// `[out_channels, in_channels / groups, kernel_h, kernel_w]`, activations NHWC). Every field
/// but the paddings must be > 0; `groups` must divide both channel counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct qk_conv2d_desc {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub groups: usize,
}

impl From<&qk_conv2d_desc> for Conv2dParams {
    fn from(d: &qk_conv2d_desc) -> Conv2dParams {
        Conv2dParams {
            in_channels: d.in_channels,
            out_channels: d.out_channels,
            kernel_h: d.kernel_h,
            kernel_w: d.kernel_w,
            stride_h: d.stride_h,
            stride_w: d.stride_w,
            pad_h: d.pad_h,
            pad_w: d.pad_w,
            dilation_h: d.dilation_h,
            dilation_w: d.dilation_w,
            groups: d.groups,
        }
    }
}

/// How int8 products are accumulated (argument of the `_ex` packing functions). A plain
/// integer type, so that a value outside the `QK_ACCUMULATION_*` constants is reported as
/// `QK_ERR_INVALID_ARGUMENT` rather than being undefined behaviour.
pub type qk_accumulation = u32;

/// Exact i32 sums everywhere (the default of the non-`_ex` functions).
pub const QK_ACCUMULATION_EXACT: qk_accumulation = 0;
/// fbgemm's i16 pair saturation in depthwise convolutions only: what PyTorch computes on
/// AVX-512 VNNI CPUs.
pub const QK_ACCUMULATION_SATURATE_DEPTHWISE: qk_accumulation = 1;
/// fbgemm's i16 pair saturation on every GEMM and convolution: what PyTorch computes on AVX2
/// CPUs.
pub const QK_ACCUMULATION_SATURATE_ALL: qk_accumulation = 2;

fn accumulation(mode: qk_accumulation) -> R<Accumulation> {
    match mode {
        QK_ACCUMULATION_EXACT => Ok(Accumulation::Exact),
        QK_ACCUMULATION_SATURATE_DEPTHWISE => Ok(Accumulation::SaturateDepthwise),
        QK_ACCUMULATION_SATURATE_ALL => Ok(Accumulation::SaturateAll),
        m => Err(invalid(format!(
            "accumulation mode {m} is not one of QK_ACCUMULATION_EXACT (0), \
             QK_ACCUMULATION_SATURATE_DEPTHWISE (1), QK_ACCUMULATION_SATURATE_ALL (2)"
        ))),
    }
}

/// Opaque prepacked int8 weights of one conv2d or linear layer, with their bias and weight
/// quantization parameters. Created by `qk_weights_pack_*`, freed by [`qk_weights_free`];
/// immutable, so one handle may be used from several threads at once.
pub struct qk_weights {
    kind: WeightsKind,
}

enum WeightsKind {
    Conv(Conv2d),
    Linear(PackedWeights),
}

impl qk_weights {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            WeightsKind::Conv(_) => "conv2d",
            WeightsKind::Linear(_) => "linear",
        }
    }
}

// The "usable from several threads at once" promise of both handle types, checked at compile
// time: the wrapped Rust values are immutable after construction and `Sync`.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<qk_weights>();
    shareable::<qk_model>();
};

// ------------------------------------------------------------------------------------------
// Error plumbing
// ------------------------------------------------------------------------------------------

/// A failed call: the status to return and the message for [`qk_last_error`].
struct Failure {
    status: qk_status,
    message: String,
}

type R<T> = Result<T, Failure>;

/// An invalid-argument failure, worded like [`Error::InvalidArgument`].
fn invalid(message: String) -> Failure {
    Error::InvalidArgument(message).into()
}

fn null_pointer(what: &str) -> Failure {
    Failure {
        status: qk_status::QK_ERR_NULL_POINTER,
        message: format!("{what} is NULL"),
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        #[allow(unreachable_patterns)] // stays total if the error enum grows
        let status = match &e {
            Error::InvalidArgument(_) => qk_status::QK_ERR_INVALID_ARGUMENT,
            Error::Unsupported(_) => qk_status::QK_ERR_UNSUPPORTED,
            Error::Io { .. } => qk_status::QK_ERR_IO,
            Error::Format(_) => qk_status::QK_ERR_FORMAT,
            _ => qk_status::QK_ERR_INTERNAL,
        };
        Failure {
            status,
            message: e.to_string(),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: String) {
    // Interior NULs would truncate the C string; replace them instead of failing.
    let c = CString::new(message.replace('\0', "\u{FFFD}")).unwrap_or_default();
    // `try_with` fails only while the thread is being torn down: then there is nobody to tell.
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut slot) = e.try_borrow_mut() {
            *slot = c;
        }
    });
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}

/// Runs `body` with panics caught; turns its outcome into a status (and a message on failure).
fn guard(func: &str, body: impl FnOnce() -> R<()>) -> qk_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => qk_status::QK_OK,
        Ok(Err(f)) => {
            set_last_error(format!("{func}: {}", f.message));
            f.status
        }
        Err(payload) => {
            set_last_error(format!(
                "{func}: internal error (caught panic: {}); please report this bug",
                panic_message(payload.as_ref())
            ));
            qk_status::QK_ERR_INTERNAL
        }
    }
}

// ------------------------------------------------------------------------------------------
// Pointer → slice, checked
// ------------------------------------------------------------------------------------------

fn nonnull<T>(p: *const T, what: &str) -> R<()> {
    if p.is_null() {
        Err(null_pointer(what))
    } else {
        Ok(())
    }
}

fn product(dims: &[usize], what: &str) -> R<usize> {
    Ok(crate::validate::checked_product(dims, what)?)
}

/// Elements spanned by `rows` rows of `cols` elements with row stride `ld` (`ld >= cols`).
fn strided_len(rows: usize, cols: usize, ld: usize, what: &str) -> R<usize> {
    if rows == 0 {
        return Ok(0);
    }
    (rows - 1)
        .checked_mul(ld)
        .and_then(|v| v.checked_add(cols))
        .ok_or_else(|| invalid(format!("{what}: size overflows size_t")))
}

/// Byte range `[start, end)` of `len` elements at `p`, after checking that `p` is non-NULL,
/// aligned for `T`, and that the range fits in `isize::MAX` bytes without wrapping the
/// address space (the preconditions of `slice::from_raw_parts`).
fn extent<T>(p: *const T, len: usize, what: &str) -> R<(usize, usize)> {
    nonnull(p, what)?;
    let addr = p as usize;
    if !addr.is_multiple_of(align_of::<T>()) {
        return Err(invalid(format!(
            "{what}: pointer {p:p} is not aligned to {} bytes",
            align_of::<T>()
        )));
    }
    let end = len
        .checked_mul(size_of::<T>())
        .filter(|&b| b <= isize::MAX as usize)
        .and_then(|b| addr.checked_add(b))
        .ok_or_else(|| invalid(format!("{what}: {len} elements exceed the address space")))?;
    Ok((addr, end))
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// A read-only view of `len` elements at `p`; copied if it overlaps `out` (the output's byte
/// range), so that no shared view ever aliases the mutable output view.
///
/// # Safety
/// `p` must point to `len` initialised elements readable for the duration of the call (the C
/// caller's contract); everything else is checked.
unsafe fn input<'a, T: Copy>(
    p: *const T,
    len: usize,
    what: &str,
    out: (usize, usize),
) -> R<Cow<'a, [T]>> {
    let range = extent(p, len, what)?;
    // SAFETY: `extent` checked non-NULL, alignment and the byte size; the caller guarantees
    // `len` readable elements. No mutable view of these bytes exists yet: output views are
    // formed after every input, and an overlapping input is copied right here.
    let s = unsafe { std::slice::from_raw_parts(p, len) };
    Ok(if overlaps(range, out) {
        Cow::Owned(s.to_vec())
    } else {
        Cow::Borrowed(s)
    })
}

/// A read-only view of `len` elements at `p` that cannot alias any output of the call.
///
/// # Safety
/// As [`input`].
unsafe fn input_const<'a, T>(p: *const T, len: usize, what: &str) -> R<&'a [T]> {
    extent(p, len, what)?;
    // SAFETY: checked as in `input`; the caller guarantees `len` readable elements.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A mutable view of `len` elements at `p` (formed after every input view of the call).
///
/// # Safety
/// `p` must point to `len` elements writable for the duration of the call and not otherwise
/// referenced during it (inputs that overlap are copied by [`input`] first).
unsafe fn output<'a, T>(p: *mut T, len: usize, what: &str) -> R<&'a mut [T]> {
    extent(p.cast_const(), len, what)?;
    // SAFETY: checked as in `input`; the caller guarantees `len` writable elements and the
    // inputs that overlap them were copied, so this is the only live view of these bytes.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// The shared body of the element-wise conversions (quantize, dequantize): `n` values of `x`
/// in, `n` values of `out` out (`out` may overlap `x`: the input is then copied first).
///
/// # Safety
/// `x` must point to `n` readable `I` and `out` to `n` writable `O` (the C caller's contract);
/// NULL, alignment and size are checked here.
unsafe fn elementwise<I: Copy, O>(
    x: *const I,
    n: usize,
    out: *mut O,
    op: impl FnOnce(&[I], &mut [O]) -> crate::Result<()>,
) -> R<()> {
    nonnull(x, "x")?;
    nonnull(out, "out")?;
    let o = extent(out.cast_const(), n, "out")?;
    // SAFETY: caller contract: `x` holds `n` inputs, `out` `n` outputs; `input` copies an
    // overlapping input before the output view is formed.
    let (x, out) = unsafe { (input(x, n, "x", o)?, output(out, n, "out")?) };
    Ok(op(&x, out)?)
}

/// Sets `*out = value` when `out` is non-NULL.
///
/// # Safety
/// `out` must be NULL or valid for a write of one `T`.
unsafe fn store<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-NULL, and the caller guarantees it is writable.
        unsafe { out.write(value) };
    }
}

// ------------------------------------------------------------------------------------------
// Library information
// ------------------------------------------------------------------------------------------

const VERSION_C: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(s) => s,
        Err(_) => panic!("version string has an interior NUL"),
    };

/// The message of this thread's last failed call, or `""` if no call on this thread has
/// failed. Never NULL. The string is owned by the library and stays valid until the next
/// failing call or [`qk_clear_last_error`] on the same thread (successful calls leave it
/// unchanged); copy it to keep it.
#[unsafe(no_mangle)]
pub extern "C" fn qk_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|e| match e.try_borrow() {
            Ok(s) => s.as_ptr(),
            Err(_) => c"".as_ptr(),
        })
        .unwrap_or(c"".as_ptr())
}

/// Clears this thread's last error message (so [`qk_last_error`] returns `""`; a pointer it
/// returned before is no longer valid).
#[unsafe(no_mangle)]
pub extern "C" fn qk_clear_last_error() {
    set_last_error(String::new());
}

/// The instruction set the kernels use in this process: `"scalar"`, `"avx2"`, `"avx512vnni"`,
/// `"neon"`, `"neondot"` or `"neoni8mm"` (chosen once, on first use; `QKERNELS_ISA=<name>`
/// in the environment forces a lower supported one). A static string; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn qk_isa() -> *const c_char {
    catch_unwind(|| crate::active_isa().c_name().as_ptr()).unwrap_or(c"unknown".as_ptr())
}

/// The library version (`"MAJOR.MINOR.PATCH"`). A static string; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn qk_version() -> *const c_char {
    VERSION_C.as_ptr()
}

// ------------------------------------------------------------------------------------------
// Element-wise ops
// ------------------------------------------------------------------------------------------

/// Quantizes `n` floats to `uint8_t` (PyTorch `quantize_per_tensor(..., torch.quint8)` as
/// fbgemm computes it: multiply by `1/scale` in float, round half to even, add the zero point,
/// saturate). `n` may be 0.
///
/// # Safety
/// `x` must point to `n` readable floats and `out` to `n` writable bytes (both non-NULL, even
/// for `n == 0`). `out` may overlap `x`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_quantize_u8(
    x: *const f32,
    n: usize,
    q: qk_qparams,
    out: *mut u8,
) -> qk_status {
    guard("qk_quantize_u8", || {
        // SAFETY: the caller's contract (see `# Safety` above) is `elementwise`'s.
        unsafe {
            elementwise(x, n, out, |x, out| {
                crate::ops::quantize_u8(x, q.into(), out)
            })
        }
    })
}

/// Quantizes `n` floats to `int8_t` (PyTorch `torch.qint8`; the zero point must lie in
/// -128..=127). `n` may be 0.
///
/// # Safety
/// `x` must point to `n` readable floats and `out` to `n` writable bytes (both non-NULL).
/// `out` may overlap `x`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_quantize_i8(
    x: *const f32,
    n: usize,
    q: qk_qparams,
    out: *mut i8,
) -> qk_status {
    guard("qk_quantize_i8", || {
        // SAFETY: the caller's contract (see `# Safety` above) is `elementwise`'s.
        unsafe {
            elementwise(x, n, out, |x, out| {
                crate::ops::quantize_i8(x, q.into(), out)
            })
        }
    })
}

/// Dequantizes `n` `uint8_t` values: `out[i] = (float)scale * (float)(x[i] - zero_point)`.
/// `n` may be 0.
///
/// # Safety
/// `x` must point to `n` readable bytes and `out` to `n` writable floats (both non-NULL).
/// `out` may overlap `x`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_dequantize_u8(
    x: *const u8,
    n: usize,
    q: qk_qparams,
    out: *mut f32,
) -> qk_status {
    guard("qk_dequantize_u8", || {
        // SAFETY: the caller's contract (see `# Safety` above) is `elementwise`'s.
        unsafe {
            elementwise(x, n, out, |x, out| {
                crate::ops::dequantize_u8(x, q.into(), out)
            })
        }
    })
}

/// PyTorch `quantized::add` (`relu == false`) / `quantized::add_relu` (`relu == true`) of two
/// quantized tensors of `n` elements each, written with the output qparams `qout`. Bit-exact
/// with PyTorch running one intra-op thread. `n` may be 0.
///
/// # Safety
/// `a`, `b` must point to `n` readable bytes each and `out` to `n` writable bytes (all
/// non-NULL). `out` may overlap `a` and/or `b` (in-place add is fine).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_add_u8(
    a: *const u8,
    qa: qk_qparams,
    b: *const u8,
    qb: qk_qparams,
    n: usize,
    qout: qk_qparams,
    relu: bool,
    out: *mut u8,
) -> qk_status {
    guard("qk_add_u8", || {
        nonnull(a, "a")?;
        nonnull(b, "b")?;
        nonnull(out, "out")?;
        let o = extent(out.cast_const(), n, "out")?;
        // SAFETY: caller contract: `a`, `b` and `out` hold `n` bytes each.
        let (a, b, out) = unsafe {
            (
                input(a, n, "a", o)?,
                input(b, n, "b", o)?,
                output(out, n, "out")?,
            )
        };
        Ok(crate::ops::add_u8(
            &a,
            qa.into(),
            &b,
            qb.into(),
            qout.into(),
            relu,
            out,
        )?)
    })
}

// ------------------------------------------------------------------------------------------
// GEMM
// ------------------------------------------------------------------------------------------

/// `C = A · Wᵀ` with exact i32 accumulation and no zero points: `A` is `m × k` `uint8_t`
/// (row stride `lda >= k`), `W` is `n × k` `int8_t` (PyTorch Linear layout, row stride
/// `ldw >= k`), `C` is `m × n` `int32_t` (row stride `ldc >= n`). Sums wrap modulo 2³² for
/// `k > 65793`, as PyTorch's do. `m`, `n`, `k` must be > 0. Packs `W` on every call: for
/// repeated use of the same weights, pack once with [`qk_weights_pack_linear`].
///
/// # Safety
/// `a` must point to `(m-1)·lda + k` readable bytes, `w` to `(n-1)·ldw + k` readable bytes
/// and `c` to `(m-1)·ldc + n` writable `int32_t` (all non-NULL). `c` may overlap the inputs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_gemm_u8s8s32(
    m: usize,
    n: usize,
    k: usize,
    a: *const u8,
    lda: usize,
    w: *const i8,
    ldw: usize,
    c: *mut i32,
    ldc: usize,
) -> qk_status {
    guard("qk_gemm_u8s8s32", || {
        nonnull(a, "a")?;
        nonnull(w, "w")?;
        nonnull(c, "c")?;
        for (v, what) in [(m, "m"), (n, "n"), (k, "k")] {
            if v == 0 {
                return Err(invalid(format!("{what} must be > 0")));
            }
        }
        for (ld, cols, what, cname) in [
            (lda, k, "lda", "k"),
            (ldw, k, "ldw", "k"),
            (ldc, n, "ldc", "n"),
        ] {
            if ld < cols {
                return Err(invalid(format!(
                    "{what} = {ld} is smaller than {cname} = {cols}"
                )));
            }
        }
        let a_len = strided_len(m, k, lda, "a")?;
        let w_len = strided_len(n, k, ldw, "w")?;
        let c_len = strided_len(m, n, ldc, "c")?;
        let o = extent(c.cast_const(), c_len, "c")?;
        // SAFETY: caller contract: the three buffers hold the documented number of elements.
        let (a, w, c) = unsafe {
            (
                input(a, a_len, "a", o)?,
                input(w, w_len, "w", o)?,
                output(c, c_len, "c")?,
            )
        };
        Ok(crate::gemm::gemm_u8s8s32(
            crate::active_isa(),
            m,
            n,
            k,
            &a,
            lda,
            &w,
            ldw,
            c,
            ldc,
        )?)
    })
}

// ------------------------------------------------------------------------------------------
// Prepacked weights
// ------------------------------------------------------------------------------------------

/// Reads `n_wq` weight scales and zero points (1 = per tensor, `channels` = per channel).
///
/// # Safety
/// `scales` and `zero_points` must point to `n_wq` readable elements each.
unsafe fn weight_qparams(
    scales: *const f64,
    zero_points: *const i32,
    n_wq: usize,
    channels: usize,
) -> R<WeightQParams> {
    if n_wq != 1 && n_wq != channels {
        return Err(invalid(format!(
            "n_wq = {n_wq}: must be 1 (per-tensor) or the number of output channels \
             ({channels}, per-channel)"
        )));
    }
    // SAFETY: caller contract: `n_wq` elements each.
    let (s, z) = unsafe {
        (
            input_const(scales, n_wq, "w_scales")?,
            input_const(zero_points, n_wq, "w_zero_points")?,
        )
    };
    Ok(if n_wq == 1 {
        WeightQParams::per_tensor(s[0], z[0])
    } else {
        WeightQParams::per_channel(s.to_vec(), z.to_vec())
    })
}

/// Shared body of the conv packing functions.
///
/// # Safety
/// As [`qk_weights_pack_conv2d_ex`].
unsafe fn pack_conv2d(
    d: *const qk_conv2d_desc,
    w_oihw: *const i8,
    w_scales: *const f64,
    w_zero_points: *const i32,
    n_wq: usize,
    bias: *const f32,
    mode: qk_accumulation,
    out: *mut *mut qk_weights,
) -> R<()> {
    nonnull(out, "out")?;
    // SAFETY: `out` is non-NULL and writable (caller contract); clear it first so that a failed
    // call never leaves a stale handle behind.
    unsafe { store(out, std::ptr::null_mut()) };
    nonnull(d, "d (conv descriptor)")?;
    nonnull(w_oihw, "w_oihw")?;
    nonnull(w_scales, "w_scales")?;
    nonnull(w_zero_points, "w_zero_points")?;
    let accumulation = accumulation(mode)?;
    // SAFETY: caller contract: `d` points to one readable descriptor (NULL and alignment are
    // checked by `input_const`).
    let desc = unsafe { input_const(d, 1, "d (conv descriptor)") }?;
    let params = Conv2dParams::from(&desc[0]);
    params.validate()?;
    let w_len = product(
        &[
            params.out_channels,
            params.in_channels / params.groups,
            params.kernel_h,
            params.kernel_w,
        ],
        "conv weights",
    )?;
    // SAFETY: caller contract: `w_oihw` holds `w_len` bytes, the qparams `n_wq` elements,
    // `bias` (when non-NULL) `out_channels` floats.
    let (w, wq, bias) = unsafe {
        (
            input_const(w_oihw, w_len, "w_oihw")?,
            weight_qparams(w_scales, w_zero_points, n_wq, params.out_channels)?,
            if bias.is_null() {
                None
            } else {
                Some(input_const(bias, params.out_channels, "bias")?)
            },
        )
    };
    let opts = ConvOptions {
        isa: crate::active_isa(),
        accumulation,
    };
    let conv = Conv2d::with_options(params, w, &wq, bias, &opts)?;
    let handle = Box::into_raw(Box::new(qk_weights {
        kind: WeightsKind::Conv(conv),
    }));
    // SAFETY: `out` is non-NULL and writable (caller contract).
    unsafe { store(out, handle) };
    Ok(())
}

/// Packs the weights of a quantized conv2d (exact accumulation) into a new handle stored in
/// `*out`.
///
/// `w_oihw` holds `out_channels × in_channels/groups × kernel_h × kernel_w` `int8_t` weights
/// (PyTorch's layout). `n_wq` is 1 (per-tensor weight quantization) or `out_channels`
/// (per-channel); `w_scales` / `w_zero_points` hold `n_wq` values each (scales finite and
/// positive, zero points in -128..=127). `bias` holds `out_channels` floats, or is NULL for none.
/// All inputs are copied; the caller may free them after the call. On failure `*out` is set
/// to NULL. Free the handle with [`qk_weights_free`].
///
/// # Safety
/// `d`, `w_oihw`, `w_scales`, `w_zero_points` and `out` must be non-NULL and point to
/// buffers of the sizes above; `bias` must be NULL or point to `out_channels` floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_weights_pack_conv2d(
    d: *const qk_conv2d_desc,
    w_oihw: *const i8,
    w_scales: *const f64,
    w_zero_points: *const i32,
    n_wq: usize,
    bias: *const f32,
    out: *mut *mut qk_weights,
) -> qk_status {
    guard("qk_weights_pack_conv2d", || {
        // SAFETY: forwarded caller contract (same as this function's).
        unsafe {
            pack_conv2d(
                d,
                w_oihw,
                w_scales,
                w_zero_points,
                n_wq,
                bias,
                QK_ACCUMULATION_EXACT,
                out,
            )
        }
    })
}

/// [`qk_weights_pack_conv2d`] with an accumulation mode (`QK_ACCUMULATION_*`), to reproduce
/// PyTorch's fbgemm i16 saturation on a given CPU class bit for bit.
///
/// # Safety
/// As [`qk_weights_pack_conv2d`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_weights_pack_conv2d_ex(
    d: *const qk_conv2d_desc,
    w_oihw: *const i8,
    w_scales: *const f64,
    w_zero_points: *const i32,
    n_wq: usize,
    bias: *const f32,
    accumulation: qk_accumulation,
    out: *mut *mut qk_weights,
) -> qk_status {
    guard("qk_weights_pack_conv2d_ex", || {
        // SAFETY: forwarded caller contract (same as this function's).
        unsafe {
            pack_conv2d(
                d,
                w_oihw,
                w_scales,
                w_zero_points,
                n_wq,
                bias,
                accumulation,
                out,
            )
        }
    })
}

/// Shared body of the linear packing functions.
///
/// # Safety
/// As [`qk_weights_pack_linear_ex`].
unsafe fn pack_linear(
    in_features: usize,
    out_features: usize,
    w: *const i8,
    w_scales: *const f64,
    w_zero_points: *const i32,
    n_wq: usize,
    bias: *const f32,
    mode: qk_accumulation,
    out: *mut *mut qk_weights,
) -> R<()> {
    nonnull(out, "out")?;
    // SAFETY: `out` is non-NULL and writable (caller contract).
    unsafe { store(out, std::ptr::null_mut()) };
    nonnull(w, "w")?;
    nonnull(w_scales, "w_scales")?;
    nonnull(w_zero_points, "w_zero_points")?;
    let accumulation = accumulation(mode)?;
    if in_features == 0 || out_features == 0 {
        return Err(invalid(format!(
            "in_features ({in_features}) and out_features ({out_features}) must be > 0"
        )));
    }
    let w_len = product(&[out_features, in_features], "linear weights")?;
    // SAFETY: caller contract: `w` holds `w_len` bytes, the qparams `n_wq` elements, `bias`
    // (when non-NULL) `out_features` floats.
    let (w, wq, bias) = unsafe {
        (
            input_const(w, w_len, "w")?,
            weight_qparams(w_scales, w_zero_points, n_wq, out_features)?,
            if bias.is_null() {
                None
            } else {
                Some(input_const(bias, out_features, "bias")?)
            },
        )
    };
    let opts = GemmOptions {
        isa: crate::active_isa(),
        // A linear layer is a plain GEMM: only the "saturate everywhere" mode saturates it.
        saturate_pairs: accumulation == Accumulation::SaturateAll,
    };
    let pw = PackedWeights::with_options(w, out_features, in_features, &wq, bias, &opts)?;
    let handle = Box::into_raw(Box::new(qk_weights {
        kind: WeightsKind::Linear(pw),
    }));
    // SAFETY: `out` is non-NULL and writable (caller contract).
    unsafe { store(out, handle) };
    Ok(())
}

/// Packs the weights of a quantized linear layer (exact accumulation) into a new handle
/// stored in `*out`.
///
/// `w` holds `out_features × in_features` `int8_t` (PyTorch Linear layout, row-major).
/// `n_wq`, `w_scales`, `w_zero_points` and `bias` as for [`qk_weights_pack_conv2d`] with
/// `out_features` channels. Inputs are copied. On failure `*out` is set to NULL.
///
/// # Safety
/// `w`, `w_scales`, `w_zero_points` and `out` must be non-NULL and point to buffers of the
/// sizes above; `bias` must be NULL or point to `out_features` floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_weights_pack_linear(
    in_features: usize,
    out_features: usize,
    w: *const i8,
    w_scales: *const f64,
    w_zero_points: *const i32,
    n_wq: usize,
    bias: *const f32,
    out: *mut *mut qk_weights,
) -> qk_status {
    guard("qk_weights_pack_linear", || {
        // SAFETY: forwarded caller contract (same as this function's).
        unsafe {
            pack_linear(
                in_features,
                out_features,
                w,
                w_scales,
                w_zero_points,
                n_wq,
                bias,
                QK_ACCUMULATION_EXACT,
                out,
            )
        }
    })
}

/// [`qk_weights_pack_linear`] with an accumulation mode (`QK_ACCUMULATION_*`; only
/// `QK_ACCUMULATION_SATURATE_ALL` saturates a linear layer).
///
/// # Safety
/// As [`qk_weights_pack_linear`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_weights_pack_linear_ex(
    in_features: usize,
    out_features: usize,
    w: *const i8,
    w_scales: *const f64,
    w_zero_points: *const i32,
    n_wq: usize,
    bias: *const f32,
    accumulation: qk_accumulation,
    out: *mut *mut qk_weights,
) -> qk_status {
    guard("qk_weights_pack_linear_ex", || {
        // SAFETY: forwarded caller contract (same as this function's).
        unsafe {
            pack_linear(
                in_features,
                out_features,
                w,
                w_scales,
                w_zero_points,
                n_wq,
                bias,
                accumulation,
                out,
            )
        }
    })
}

/// Frees a handle made by `qk_weights_pack_*`. `NULL` is a no-op.
///
/// # Safety
/// `w` must be NULL or a handle returned by a `qk_weights_pack_*` function that has not been
/// freed yet, and no other thread may be using it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_weights_free(w: *mut qk_weights) {
    if w.is_null() {
        return;
    }
    // SAFETY: caller contract: `w` came from `Box::into_raw` in a pack function and is freed
    // once. Dropping packed buffers cannot panic; the guard is belt and braces.
    let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(w) })));
}

/// Borrows a handle.
///
/// # Safety
/// `w` must be NULL or a live handle.
unsafe fn weights<'a>(w: *const qk_weights) -> R<&'a qk_weights> {
    nonnull(w, "weights")?;
    // SAFETY: non-NULL, and a live handle by the caller contract; handles are immutable.
    Ok(unsafe { &*w })
}

/// Output channels (conv) or output features (linear) of a handle; 0 for NULL.
///
/// # Safety
/// `w` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_weights_out_channels(w: *const qk_weights) -> usize {
    // SAFETY: forwarded caller contract.
    match unsafe { weights(w) } {
        Ok(h) => match &h.kind {
            WeightsKind::Conv(c) => c.params().out_channels,
            WeightsKind::Linear(p) => p.n(),
        },
        Err(_) => 0,
    }
}

/// Input channels (conv) or input features (linear) of a handle; 0 for NULL.
///
/// # Safety
/// `w` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_weights_in_channels(w: *const qk_weights) -> usize {
    // SAFETY: forwarded caller contract.
    match unsafe { weights(w) } {
        Ok(h) => match &h.kind {
            WeightsKind::Conv(c) => c.params().in_channels,
            WeightsKind::Linear(p) => p.k(),
        },
        Err(_) => 0,
    }
}

fn conv_of(h: &qk_weights) -> R<&Conv2d> {
    match &h.kind {
        WeightsKind::Conv(c) => Ok(c),
        _ => Err(invalid(format!(
            "weights handle holds {} weights, not conv2d",
            h.kind_name()
        ))),
    }
}

fn linear_of(h: &qk_weights) -> R<&PackedWeights> {
    match &h.kind {
        WeightsKind::Linear(p) => Ok(p),
        _ => Err(invalid(format!(
            "weights handle holds {} weights, not linear",
            h.kind_name()
        ))),
    }
}

/// The output size `(*out_h, *out_w)` of the conv in `w` for a `height × width` input
/// (`QK_ERR_INVALID_ARGUMENT` if the dilated kernel is larger than the padded input).
///
/// # Safety
/// `w` must be a live conv handle; `out_h`, `out_w` must be non-NULL and writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_conv2d_output_size(
    w: *const qk_weights,
    height: usize,
    width: usize,
    out_h: *mut usize,
    out_w: *mut usize,
) -> qk_status {
    guard("qk_conv2d_output_size", || {
        nonnull(out_h, "out_h")?;
        nonnull(out_w, "out_w")?;
        // SAFETY: forwarded caller contract.
        let conv = conv_of(unsafe { weights(w) }?)?;
        if height == 0 || width == 0 {
            return Err(invalid(format!(
                "input size {height}×{width} must be non-zero"
            )));
        }
        let (oh, ow) = conv.output_size(height, width)?;
        // SAFETY: both non-NULL and writable (caller contract).
        unsafe {
            store(out_h, oh);
            store(out_w, ow);
        }
        Ok(())
    })
}

/// Runs the conv in `w` on the NHWC `uint8_t` input `x_nhwc` (`batch × height × width ×
/// in_channels`, qparams `qx`), writing the NHWC output (`batch × out_h × out_w ×
/// out_channels`, qparams `qout`, see [`qk_conv2d_output_size`]) to `out_nhwc`, which has room
/// for `out_len` elements (`QK_ERR_INVALID_ARGUMENT` if too small). `relu` fuses a ReLU
/// (PyTorch `ConvReLU2d`).
///
/// # Safety
/// `w` must be a live conv handle, `x_nhwc` must point to `batch·height·width·in_channels`
/// readable bytes and `out_nhwc` to `out_len` writable bytes (all non-NULL). The output may
/// overlap the input (the input is then copied first).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_conv2d_u8(
    w: *const qk_weights,
    x_nhwc: *const u8,
    batch: usize,
    height: usize,
    width: usize,
    qx: qk_qparams,
    qout: qk_qparams,
    relu: bool,
    out_nhwc: *mut u8,
    out_len: usize,
) -> qk_status {
    guard("qk_conv2d_u8", || {
        nonnull(w, "weights")?;
        nonnull(x_nhwc, "x_nhwc")?;
        nonnull(out_nhwc, "out_nhwc")?;
        // SAFETY: forwarded caller contract.
        let conv = conv_of(unsafe { weights(w) }?)?;
        let x_len = product(
            &[batch, height, width, conv.params().in_channels],
            "conv input",
        )?;
        let o = extent(out_nhwc.cast_const(), out_len, "out_nhwc")?;
        // SAFETY: caller contract: `x_nhwc` holds `x_len` bytes, `out_nhwc` `out_len` bytes.
        let (x, out) = unsafe {
            (
                input(x_nhwc, x_len, "x_nhwc", o)?,
                output(out_nhwc, out_len, "out_nhwc")?,
            )
        };
        Ok(conv.run(&x, batch, height, width, qx.into(), qout.into(), relu, out)?)
    })
}

/// Runs the linear layer in `w` on `x` (`m × in_features` `uint8_t`, row-major, qparams `qx`),
/// writing `m × out_features` `uint8_t` (qparams `qout`) to `out`, which has room for
/// `out_len` elements (`QK_ERR_INVALID_ARGUMENT` if too small). `relu` fuses a ReLU
/// (PyTorch `LinearReLU`). `m` must be > 0.
///
/// # Safety
/// `w` must be a live linear handle, `x` must point to `m·in_features` readable bytes and
/// `out` to `out_len` writable bytes (all non-NULL). `out` may overlap `x`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_linear_u8(
    w: *const qk_weights,
    x: *const u8,
    m: usize,
    qx: qk_qparams,
    qout: qk_qparams,
    relu: bool,
    out: *mut u8,
    out_len: usize,
) -> qk_status {
    guard("qk_linear_u8", || {
        nonnull(w, "weights")?;
        nonnull(x, "x")?;
        nonnull(out, "out")?;
        // SAFETY: forwarded caller contract.
        let pw = linear_of(unsafe { weights(w) }?)?;
        if m == 0 {
            return Err(invalid("m (rows) must be > 0".into()));
        }
        let x_len = product(&[m, pw.k()], "linear input")?;
        let need = product(&[m, pw.n()], "linear output")?;
        if out_len < need {
            return Err(invalid(format!(
                "out_len = {out_len} is too small: the output has {m}×{} = {need} elements",
                pw.n()
            )));
        }
        let o = extent(out.cast_const(), out_len, "out")?;
        // SAFETY: caller contract: `x` holds `x_len` bytes, `out` `out_len` bytes.
        let (x, out) = unsafe { (input(x, x_len, "x", o)?, output(out, out_len, "out")?) };
        Ok(crate::gemm::linear(
            pw,
            &x,
            m,
            qx.into(),
            qout.into(),
            relu,
            &mut out[..need],
        )?)
    })
}

// ------------------------------------------------------------------------------------------
// Pooling
// ------------------------------------------------------------------------------------------

fn square_pool(kernel: usize, stride: usize, pad: usize) -> Pool2d {
    Pool2d {
        kernel_h: kernel,
        kernel_w: kernel,
        stride_h: stride,
        stride_w: stride,
        pad_h: pad,
        pad_w: pad,
        dilation_h: 1,
        dilation_w: 1,
    }
}

/// Output size of [`qk_max_pool2d_u8`] for a `height × width` input (floor mode).
///
/// # Safety
/// `out_h`, `out_w` must be non-NULL and writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_max_pool2d_output_size(
    height: usize,
    width: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    out_h: *mut usize,
    out_w: *mut usize,
) -> qk_status {
    guard("qk_max_pool2d_output_size", || {
        nonnull(out_h, "out_h")?;
        nonnull(out_w, "out_w")?;
        if height == 0 || width == 0 {
            return Err(invalid(format!(
                "input size {height}×{width} must be non-zero"
            )));
        }
        let (oh, ow) =
            crate::ops::pool_output_size(height, width, &square_pool(kernel, stride, pad))?;
        // SAFETY: both non-NULL and writable (caller contract).
        unsafe {
            store(out_h, oh);
            store(out_w, ow);
        }
        Ok(())
    })
}

/// PyTorch `max_pool2d` (square `kernel`, `stride`, `pad`; dilation 1, floor mode; padding
/// never wins) over NHWC `x_nhwc` (`batch × height × width × channels`), writing
/// `batch × out_h × out_w × channels` bytes (see [`qk_max_pool2d_output_size`]) to `out`,
/// which has room for `out_len` (`QK_ERR_INVALID_ARGUMENT` if too small). The output keeps
/// the input's qparams. `pad` must be at most `kernel / 2`.
///
/// # Safety
/// `x_nhwc` must point to `batch·height·width·channels` readable bytes and `out` to
/// `out_len` writable bytes (both non-NULL). `out` may overlap the input.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_max_pool2d_u8(
    x_nhwc: *const u8,
    batch: usize,
    height: usize,
    width: usize,
    channels: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    out: *mut u8,
    out_len: usize,
) -> qk_status {
    guard("qk_max_pool2d_u8", || {
        nonnull(x_nhwc, "x_nhwc")?;
        nonnull(out, "out")?;
        let x_len = product(&[batch, height, width, channels], "max_pool2d input")?;
        let o = extent(out.cast_const(), out_len, "out")?;
        // SAFETY: caller contract: `x_nhwc` holds `x_len` bytes, `out` `out_len` bytes.
        let (x, out) = unsafe {
            (
                input(x_nhwc, x_len, "x_nhwc", o)?,
                output(out, out_len, "out")?,
            )
        };
        crate::ops::max_pool2d_u8(
            &x,
            batch,
            height,
            width,
            channels,
            &square_pool(kernel, stride, pad),
            out,
        )?;
        Ok(())
    })
}

/// PyTorch `adaptive_avg_pool2d` over NHWC `x_nhwc` (`batch × height × width × channels`,
/// qparams `q`) to `batch × out_h × out_w × channels` bytes in `out` (room for `out_len`;
/// `QK_ERR_INVALID_ARGUMENT` if too small). The output keeps the input's qparams. Requires
/// `0 < out_h <= height` and `0 < out_w <= width`.
///
/// # Safety
/// `x_nhwc` must point to `batch·height·width·channels` readable bytes and `out` to
/// `out_len` writable bytes (both non-NULL). `out` may overlap the input.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_adaptive_avg_pool2d_u8(
    x_nhwc: *const u8,
    batch: usize,
    height: usize,
    width: usize,
    channels: usize,
    out_h: usize,
    out_w: usize,
    q: qk_qparams,
    out: *mut u8,
    out_len: usize,
) -> qk_status {
    guard("qk_adaptive_avg_pool2d_u8", || {
        nonnull(x_nhwc, "x_nhwc")?;
        nonnull(out, "out")?;
        let x_len = product(
            &[batch, height, width, channels],
            "adaptive_avg_pool2d input",
        )?;
        let o = extent(out.cast_const(), out_len, "out")?;
        // SAFETY: caller contract: `x_nhwc` holds `x_len` bytes, `out` `out_len` bytes.
        let (x, out) = unsafe {
            (
                input(x_nhwc, x_len, "x_nhwc", o)?,
                output(out, out_len, "out")?,
            )
        };
        Ok(crate::ops::adaptive_avg_pool2d_u8(
            &x,
            batch,
            height,
            width,
            channels,
            out_h,
            out_w,
            q.into(),
            out,
        )?)
    })
}

// ------------------------------------------------------------------------------------------
// ResNet-18 model
// ------------------------------------------------------------------------------------------

/// Opaque loaded, prepacked ResNet-18 (`docs/model-format.md`). Created by [`qk_model_load`],
/// freed by [`qk_model_free`]; immutable, so one model may run on several threads at once.
pub struct qk_model {
    inner: crate::resnet18::Model,
}

/// The path of a NUL-terminated C string, byte for byte on Unix.
fn c_path(path: &CStr) -> R<std::path::PathBuf> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(std::ffi::OsStr::from_bytes(path.to_bytes()).into())
    }
    #[cfg(not(unix))]
    {
        path.to_str()
            .map(Into::into)
            .map_err(|_| invalid("path is not valid UTF-8".into()))
    }
}

/// Loads a quantized ResNet-18 model file (safetensors, `docs/model-format.md`) and packs its
/// weights for this CPU into a new handle stored in `*out` (set to NULL on failure).
/// `QK_ERR_IO` if the file cannot be read, `QK_ERR_FORMAT` if it is not a valid model.
///
/// # Safety
/// `path` must be a NUL-terminated string and `out` writable (both non-NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_model_load(path: *const c_char, out: *mut *mut qk_model) -> qk_status {
    guard("qk_model_load", || {
        nonnull(out, "out")?;
        // SAFETY: `out` is non-NULL and writable (caller contract).
        unsafe { store(out, std::ptr::null_mut()) };
        nonnull(path, "path")?;
        // SAFETY: non-NULL and NUL-terminated (caller contract).
        let path = c_path(unsafe { CStr::from_ptr(path) })?;
        let inner = crate::resnet18::Model::load(&path)?;
        let handle = Box::into_raw(Box::new(qk_model { inner }));
        // SAFETY: `out` is non-NULL and writable (caller contract).
        unsafe { store(out, handle) };
        Ok(())
    })
}

/// Borrows a model handle.
///
/// # Safety
/// `m` must be NULL or a live handle.
unsafe fn model<'a>(m: *const qk_model) -> R<&'a crate::resnet18::Model> {
    nonnull(m, "model")?;
    // SAFETY: non-NULL, and a live handle by the caller contract; models are immutable.
    Ok(unsafe { &(*m).inner })
}

/// Checks the buffers of a model run and returns the input view and the logits element count.
///
/// # Safety
/// As [`qk_model_run`] (`logits` holds `logits_len` writable elements of type `T`).
unsafe fn model_io<'a, T>(
    m: &crate::resnet18::Model,
    input_nchw: *const f32,
    batch: usize,
    height: usize,
    width: usize,
    logits: *mut T,
    logits_len: usize,
) -> R<(Cow<'a, [f32]>, &'a mut [T])> {
    let n_in = product(&[batch, m.input_channels(), height, width], "model input")?;
    let need = product(&[batch, m.num_classes()], "logits")?;
    if logits_len < need {
        return Err(invalid(format!(
            "logits_len = {logits_len} is too small: [batch {batch}, {} classes] needs {need}",
            m.num_classes()
        )));
    }
    let o = extent(logits.cast_const(), need, "logits")?;
    // SAFETY: caller contract: `input_nchw` holds `n_in` floats, `logits` at least
    // `logits_len >= need` elements.
    unsafe {
        Ok((
            input(input_nchw, n_in, "input_nchw", o)?,
            output(logits, need, "logits")?,
        ))
    }
}

/// Runs the model on `batch` NCHW float images (`batch × input_channels × height × width`,
/// already resized and normalised as the model expects; any size ≥ the network's minimum
/// runs) and writes the dequantized logits `batch × num_classes` to `logits`, which has room
/// for `logits_len` floats (`QK_ERR_INVALID_ARGUMENT` if too small). Bit-exact with PyTorch.
///
/// # Safety
/// `m` must be a live model, `input_nchw` must point to `batch·input_channels·height·width`
/// readable floats and `logits` to `logits_len` writable floats (all non-NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_model_run(
    m: *const qk_model,
    input_nchw: *const f32,
    batch: usize,
    height: usize,
    width: usize,
    logits: *mut f32,
    logits_len: usize,
) -> qk_status {
    guard("qk_model_run", || {
        nonnull(m, "model")?;
        nonnull(input_nchw, "input_nchw")?;
        nonnull(logits, "logits")?;
        // SAFETY: forwarded caller contract.
        let m = unsafe { model(m) }?;
        // SAFETY: forwarded caller contract.
        let (x, out) =
            unsafe { model_io(m, input_nchw, batch, height, width, logits, logits_len) }?;
        Ok(m.run(&x, batch, height, width, out)?)
    })
}

/// [`qk_model_run`] writing the quantized `uint8_t` logits (PyTorch's `fc` output before the
/// DeQuantStub; their qparams: [`qk_model_logits_qparams`]).
///
/// # Safety
/// As [`qk_model_run`], with `logits_q` pointing to `logits_len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_model_run_quantized(
    m: *const qk_model,
    input_nchw: *const f32,
    batch: usize,
    height: usize,
    width: usize,
    logits_q: *mut u8,
    logits_len: usize,
) -> qk_status {
    guard("qk_model_run_quantized", || {
        nonnull(m, "model")?;
        nonnull(input_nchw, "input_nchw")?;
        nonnull(logits_q, "logits_q")?;
        // SAFETY: forwarded caller contract.
        let m = unsafe { model(m) }?;
        // SAFETY: forwarded caller contract.
        let (x, out) =
            unsafe { model_io(m, input_nchw, batch, height, width, logits_q, logits_len) }?;
        Ok(m.run_quantized(&x, batch, height, width, out)?)
    })
}

/// Number of output classes of a model; 0 for NULL.
///
/// # Safety
/// `m` must be NULL or a live model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_model_num_classes(m: *const qk_model) -> usize {
    // SAFETY: forwarded caller contract.
    unsafe { model(m) }.map_or(0, |m| m.num_classes())
}

/// Number of input channels of a model (3 for the shipped models); 0 for NULL.
///
/// # Safety
/// `m` must be NULL or a live model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_model_input_channels(m: *const qk_model) -> usize {
    // SAFETY: forwarded caller contract.
    unsafe { model(m) }.map_or(0, |m| m.input_channels())
}

/// The model's nominal input size (what its images are resized to before normalisation).
///
/// # Safety
/// `m` must be a live model; `height`, `width` must be non-NULL and writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_model_input_size(
    m: *const qk_model,
    height: *mut usize,
    width: *mut usize,
) -> qk_status {
    guard("qk_model_input_size", || {
        nonnull(height, "height")?;
        nonnull(width, "width")?;
        // SAFETY: forwarded caller contract.
        let (h, w) = unsafe { model(m) }?.input_size();
        // SAFETY: both non-NULL and writable (caller contract).
        unsafe {
            store(height, h);
            store(width, w);
        }
        Ok(())
    })
}

/// The quantization parameters of the model's `uint8_t` logits.
///
/// # Safety
/// `m` must be a live model; `q` must be non-NULL and writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_model_logits_qparams(
    m: *const qk_model,
    q: *mut qk_qparams,
) -> qk_status {
    guard("qk_model_logits_qparams", || {
        nonnull(q, "q")?;
        // SAFETY: forwarded caller contract.
        let lq = unsafe { model(m) }?.logits_qparams();
        // SAFETY: non-NULL and writable (caller contract).
        unsafe {
            store(
                q,
                qk_qparams {
                    scale: lq.scale,
                    zero_point: lq.zero_point,
                },
            )
        };
        Ok(())
    })
}

/// Frees a model. `NULL` is a no-op.
///
/// # Safety
/// `m` must be NULL or a handle returned by [`qk_model_load`] not yet freed, and no other
/// thread may be using it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_model_free(m: *mut qk_model) {
    if m.is_null() {
        return;
    }
    // SAFETY: caller contract: `m` came from `Box::into_raw` in `qk_model_load`, freed once.
    let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(m) })));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> String {
        // SAFETY: never NULL; copied at once.
        unsafe { CStr::from_ptr(qk_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    /// A panic inside a body never crosses the boundary: it becomes `QK_ERR_INTERNAL` with a
    /// message (no exported function is known to panic, so the guard is tested directly).
    #[test]
    fn panics_become_internal_errors() {
        let s = guard("qk_test", || panic!("boom {}", 42));
        assert_eq!(s, qk_status::QK_ERR_INTERNAL);
        let m = message();
        assert!(
            m.starts_with("qk_test: internal error") && m.contains("boom 42"),
            "{m}"
        );
        assert_eq!(guard("qk_test", || Ok(())), qk_status::QK_OK);
        assert_eq!(message(), m, "success leaves the message");
    }

    #[test]
    fn error_kinds_map_to_statuses() {
        let io = Error::Io {
            path: "x".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        for (e, want) in [
            (
                Error::InvalidArgument("a".into()),
                qk_status::QK_ERR_INVALID_ARGUMENT,
            ),
            (
                Error::Unsupported("b".into()),
                qk_status::QK_ERR_UNSUPPORTED,
            ),
            (io, qk_status::QK_ERR_IO),
            (Error::Format("c".into()), qk_status::QK_ERR_FORMAT),
        ] {
            assert_eq!(guard("qk_test", || Err(e.into())), want);
        }
    }

    #[test]
    fn interior_nul_in_a_message_is_replaced() {
        let s = guard("qk_test", || Err(invalid("a\0b".into())));
        assert_eq!(s, qk_status::QK_ERR_INVALID_ARGUMENT);
        assert_eq!(message(), "qk_test: invalid argument: a\u{FFFD}b");
    }
}
