//! The C ABI (`qkernels::ffi`, i.e. the `extern "C"` symbols of `include/qkernels.h`), called
//! from Rust exactly as a C caller would call it:
//!
//! * every golden op case (PyTorch) through the C symbols, byte for byte, in every
//!   accumulation mode that applies;
//! * bad arguments for every function: the exact status, a non-empty message, no crash;
//! * one weights handle used from several threads at once gives the same bytes;
//! * outputs that alias inputs give the same bytes as separate buffers.

mod common;

use common::*;
use qkernels::ffi::*;
use qkernels::{Accumulation, Conv2dGeometry, QParams, WeightQParams};
use std::ffi::CStr;
use std::ptr::{null, null_mut};

use qk_status::*;

fn qp(q: QParams) -> qk_qparams {
    qk_qparams {
        scale: q.scale,
        zero_point: q.zero_point,
    }
}

fn last_error() -> String {
    // SAFETY: `qk_last_error` never returns NULL and the string lives until the next failing
    // call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(qk_last_error()) }
        .to_str()
        .expect("UTF-8 message")
        .to_owned()
}

/// Asserts `QK_OK`, showing the error message otherwise.
#[track_caller]
fn ok(s: qk_status) {
    assert_eq!(s, QK_OK, "unexpected failure: {}", last_error());
}

/// Runs `call`, asserts it fails with `want` and leaves a message that names `func`.
#[track_caller]
fn expect_err(want: qk_status, func: &str, call: impl FnOnce() -> qk_status) {
    qk_clear_last_error();
    let s = call();
    let msg = last_error();
    assert_eq!(s, want, "{func}: status (message: {msg:?})");
    assert!(!msg.is_empty(), "{func}: empty error message");
    assert!(
        msg.starts_with(func),
        "{func}: message {msg:?} does not name the function"
    );
}

const Q: qk_qparams = qk_qparams {
    scale: 0.05,
    zero_point: 10,
};

/// Bad activation qparams: each must be rejected with `QK_ERR_INVALID_ARGUMENT`.
fn bad_qparams_u8() -> Vec<qk_qparams> {
    let mut v: Vec<qk_qparams> = [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e-50]
        .into_iter()
        .map(|scale| qk_qparams {
            scale,
            zero_point: 0,
        })
        .collect();
    v.extend([-1, 256, i32::MIN, i32::MAX].map(|zero_point| qk_qparams {
        scale: 0.1,
        zero_point,
    }));
    v
}

// ------------------------------------------------------------------------------------------
// Golden cases through the C ABI
// ------------------------------------------------------------------------------------------

struct CAbi;

fn acc_mode(mode: Accumulation) -> qk_accumulation {
    match mode {
        Accumulation::Exact => QK_ACCUMULATION_EXACT,
        Accumulation::SaturateDepthwise => QK_ACCUMULATION_SATURATE_DEPTHWISE,
        Accumulation::SaturateAll => QK_ACCUMULATION_SATURATE_ALL,
    }
}

/// Owns a handle for the duration of a test.
struct Weights(*mut qk_weights);

impl Weights {
    fn ptr(&self) -> *const qk_weights {
        self.0
    }
}

impl Drop for Weights {
    fn drop(&mut self) {
        // SAFETY: the handle came from a pack function and is freed once.
        unsafe { qk_weights_free(self.0) };
    }
}

// SAFETY: handles are immutable after packing and documented as shareable between threads.
unsafe impl Send for Weights {}
// SAFETY: as above.
unsafe impl Sync for Weights {}

fn desc_of(geo: &Conv2dGeometry) -> qk_conv2d_desc {
    qk_conv2d_desc {
        in_channels: geo.in_c,
        out_channels: geo.out_c,
        kernel_h: geo.kernel_h,
        kernel_w: geo.kernel_w,
        stride_h: geo.stride_h,
        stride_w: geo.stride_w,
        pad_h: geo.pad_h,
        pad_w: geo.pad_w,
        dilation_h: geo.dilation_h,
        dilation_w: geo.dilation_w,
        groups: geo.groups,
    }
}

fn pack_conv(
    geo: &Conv2dGeometry,
    w: &[i8],
    wq: &WeightQParams,
    bias: Option<&[f32]>,
    mode: Accumulation,
) -> Weights {
    let d = desc_of(geo);
    let mut h = null_mut();
    // SAFETY: every buffer holds the sizes the descriptor implies.
    ok(unsafe {
        qk_weights_pack_conv2d_ex(
            &d,
            w.as_ptr(),
            wq.scales.as_ptr(),
            wq.zero_points.as_ptr(),
            wq.scales.len(),
            bias.map_or(null(), <[f32]>::as_ptr),
            acc_mode(mode),
            &mut h,
        )
    });
    assert!(!h.is_null());
    Weights(h)
}

fn run_conv(
    h: &Weights,
    geo: &Conv2dGeometry,
    x: &[u8],
    xq: QParams,
    outq: QParams,
    relu: bool,
) -> Vec<u8> {
    let (mut oh, mut ow) = (0, 0);
    // SAFETY: live handle, writable outputs.
    ok(unsafe { qk_conv2d_output_size(h.ptr(), geo.in_h, geo.in_w, &mut oh, &mut ow) });
    assert_eq!((oh, ow), (geo.out_h(), geo.out_w()));
    let mut y = vec![0u8; geo.batch * oh * ow * geo.out_c];
    // SAFETY: `x` holds batch·h·w·IC bytes, `y` holds `y.len()`.
    ok(unsafe {
        qk_conv2d_u8(
            h.ptr(),
            x.as_ptr(),
            geo.batch,
            geo.in_h,
            geo.in_w,
            qp(xq),
            qp(outq),
            relu,
            y.as_mut_ptr(),
            y.len(),
        )
    });
    y
}

fn pack_linear(
    k: usize,
    n: usize,
    w: &[i8],
    wq: &WeightQParams,
    bias: Option<&[f32]>,
    mode: Accumulation,
) -> Weights {
    let mut h = null_mut();
    // SAFETY: `w` holds n·k, the qparams `scales.len()`, `bias` n.
    ok(unsafe {
        qk_weights_pack_linear_ex(
            k,
            n,
            w.as_ptr(),
            wq.scales.as_ptr(),
            wq.zero_points.as_ptr(),
            wq.scales.len(),
            bias.map_or(null(), <[f32]>::as_ptr),
            acc_mode(mode),
            &mut h,
        )
    });
    assert!(!h.is_null());
    Weights(h)
}

impl Backend for CAbi {
    fn quantize_u8(&self, x: &[f32], q: QParams) -> Vec<u8> {
        let mut y = vec![0; x.len()];
        // SAFETY: both buffers hold `x.len()` elements.
        ok(unsafe { qk_quantize_u8(x.as_ptr(), x.len(), qp(q), y.as_mut_ptr()) });
        y
    }
    fn quantize_i8(&self, x: &[f32], q: QParams) -> Vec<i8> {
        let mut y = vec![0; x.len()];
        // SAFETY: both buffers hold `x.len()` elements.
        ok(unsafe { qk_quantize_i8(x.as_ptr(), x.len(), qp(q), y.as_mut_ptr()) });
        y
    }
    fn dequantize_u8(&self, x: &[u8], q: QParams) -> Vec<f32> {
        let mut y = vec![0.0; x.len()];
        // SAFETY: both buffers hold `x.len()` elements.
        ok(unsafe { qk_dequantize_u8(x.as_ptr(), x.len(), qp(q), y.as_mut_ptr()) });
        y
    }
    fn add(
        &self,
        a: &[u8],
        qa: QParams,
        b: &[u8],
        qb: QParams,
        out: QParams,
        relu: bool,
    ) -> Vec<u8> {
        assert_eq!(a.len(), b.len());
        let mut y = vec![0; a.len()];
        // SAFETY: all three buffers hold `a.len()` bytes.
        ok(unsafe {
            qk_add_u8(
                a.as_ptr(),
                qp(qa),
                b.as_ptr(),
                qp(qb),
                a.len(),
                qp(out),
                relu,
                y.as_mut_ptr(),
            )
        });
        y
    }
    fn conv2d(
        &self,
        geo: &Conv2dGeometry,
        x: &[u8],
        xq: QParams,
        w: &[i8],
        wq: &WeightQParams,
        bias: Option<&[f32]>,
        outq: QParams,
        relu: bool,
        mode: Accumulation,
    ) -> Vec<u8> {
        let h = pack_conv(geo, w, wq, bias, mode);
        run_conv(&h, geo, x, xq, outq, relu)
    }
    fn linear(
        &self,
        m: usize,
        k: usize,
        n: usize,
        x: &[u8],
        xq: QParams,
        w: &[i8],
        wq: &WeightQParams,
        bias: Option<&[f32]>,
        outq: QParams,
        relu: bool,
        mode: Accumulation,
    ) -> Vec<u8> {
        let h = pack_linear(k, n, w, wq, bias, mode);
        // SAFETY: live handle.
        assert_eq!(unsafe { qk_weights_out_channels(h.0) }, n);
        // SAFETY: live handle.
        assert_eq!(unsafe { qk_weights_in_channels(h.0) }, k);
        let mut y = vec![0; m * n];
        // SAFETY: `x` holds m·k bytes, `y` m·n.
        ok(unsafe {
            qk_linear_u8(
                h.0,
                x.as_ptr(),
                m,
                qp(xq),
                qp(outq),
                relu,
                y.as_mut_ptr(),
                y.len(),
            )
        });
        y
    }
    fn max_pool2d(
        &self,
        x: &[u8],
        n: usize,
        h: usize,
        w: usize,
        c: usize,
        p: &qkernels::Pool2d,
    ) -> (Vec<u8>, usize, usize) {
        assert!(
            p.kernel_h == p.kernel_w
                && p.stride_h == p.stride_w
                && p.pad_h == p.pad_w
                && p.dilation_h == 1
                && p.dilation_w == 1,
            "the C ABI's max_pool2d is square with dilation 1: {p:?}"
        );
        let (mut oh, mut ow) = (0, 0);
        // SAFETY: writable outputs.
        ok(unsafe {
            qk_max_pool2d_output_size(h, w, p.kernel_h, p.stride_h, p.pad_h, &mut oh, &mut ow)
        });
        let mut y = vec![0; n * oh * ow * c];
        // SAFETY: `x` holds n·h·w·c bytes, `y` `y.len()`.
        ok(unsafe {
            qk_max_pool2d_u8(
                x.as_ptr(),
                n,
                h,
                w,
                c,
                p.kernel_h,
                p.stride_h,
                p.pad_h,
                y.as_mut_ptr(),
                y.len(),
            )
        });
        (y, oh, ow)
    }
    fn adaptive_avg_pool2d(
        &self,
        x: &[u8],
        n: usize,
        h: usize,
        w: usize,
        c: usize,
        oh: usize,
        ow: usize,
        q: QParams,
    ) -> Vec<u8> {
        let mut y = vec![0; n * oh * ow * c];
        // SAFETY: `x` holds n·h·w·c bytes, `y` `y.len()`.
        ok(unsafe {
            qk_adaptive_avg_pool2d_u8(
                x.as_ptr(),
                n,
                h,
                w,
                c,
                oh,
                ow,
                qp(q),
                y.as_mut_ptr(),
                y.len(),
            )
        });
        y
    }
}

#[test]
fn every_golden_case_through_the_c_abi() {
    let g = Golden::load();
    let checked = check_all(&g, &CAbi, "c-abi");
    // SAFETY: static string.
    let isa = unsafe { CStr::from_ptr(qk_isa()) };
    println!("golden/c-abi ({isa:?}): {checked} case×mode checks, all bytes equal");
    assert!(checked >= 77);
}

// ------------------------------------------------------------------------------------------
// Library information and the error slot
// ------------------------------------------------------------------------------------------

#[test]
fn isa_and_version_strings() {
    // SAFETY: static strings, never NULL.
    let (isa, ver) = unsafe { (CStr::from_ptr(qk_isa()), CStr::from_ptr(qk_version())) };
    assert_eq!(isa.to_str().unwrap(), qkernels::active_isa().name());
    assert_eq!(ver.to_str().unwrap(), qkernels::VERSION);
}

#[test]
fn last_error_is_per_thread_and_kept_until_the_next_failure() {
    std::thread::spawn(|| {
        // A fresh thread has no error.
        assert_eq!(last_error(), "");
        let x = [1.0f32];
        let mut y = [0u8];
        // SAFETY: NULL is checked, never dereferenced.
        let s = unsafe { qk_quantize_u8(null(), 1, Q, y.as_mut_ptr()) };
        assert_eq!(s, QK_ERR_NULL_POINTER);
        let first = last_error();
        assert!(
            first.contains("qk_quantize_u8") && first.contains("NULL"),
            "{first}"
        );
        // Another thread's failure does not touch this thread's message.
        std::thread::spawn(|| {
            // SAFETY: NULL is checked, never dereferenced.
            let s = unsafe { qk_dequantize_u8(null(), 1, Q, null_mut()) };
            assert_eq!(s, QK_ERR_NULL_POINTER);
            assert!(last_error().starts_with("qk_dequantize_u8"));
        })
        .join()
        .unwrap();
        assert_eq!(last_error(), first);
        // A successful call leaves it unchanged.
        // SAFETY: one element each.
        ok(unsafe { qk_quantize_u8(x.as_ptr(), 1, Q, y.as_mut_ptr()) });
        assert_eq!(last_error(), first);
        qk_clear_last_error();
        assert_eq!(last_error(), "");
    })
    .join()
    .unwrap();
}

// ------------------------------------------------------------------------------------------
// Bad arguments, function by function
// ------------------------------------------------------------------------------------------

#[test]
fn bad_arguments_quantize_dequantize() {
    let x = [0.5f32, -1.0, 3.0, 7.0];
    let xq = [1u8, 2, 3, 4];
    let mut yu = [0u8; 4];
    let mut yi = [0i8; 4];
    let mut yf = [0f32; 4];
    // SAFETY: for the whole block, buffers hold 4 elements; NULLs and bad sizes are rejected before any
    // access.
    unsafe {
        let f = "qk_quantize_u8";
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_quantize_u8(null(), 4, Q, yu.as_mut_ptr())
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_quantize_u8(x.as_ptr(), 4, Q, null_mut())
        });
        for q in bad_qparams_u8() {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_quantize_u8(x.as_ptr(), 4, q, yu.as_mut_ptr())
            });
        }
        // Misaligned float pointer.
        let raw = [0u8; 32];
        let mis = raw
            .as_ptr()
            .add(1 + (raw.as_ptr() as usize).wrapping_neg() % 4) as *const f32;
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_quantize_u8(mis, 1, Q, yu.as_mut_ptr())
        });
        // A size whose byte count exceeds the address space.
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_quantize_u8(x.as_ptr(), usize::MAX / 2, Q, yu.as_mut_ptr())
        });
        ok(qk_quantize_u8(x.as_ptr(), 0, Q, yu.as_mut_ptr()));

        let f = "qk_quantize_i8";
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_quantize_i8(null(), 4, Q, yi.as_mut_ptr())
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_quantize_i8(x.as_ptr(), 4, Q, null_mut())
        });
        for q in [
            qk_qparams {
                scale: 0.0,
                zero_point: 0,
            },
            qk_qparams {
                scale: f64::NAN,
                zero_point: 0,
            },
            qk_qparams {
                scale: 0.1,
                zero_point: 128,
            },
            qk_qparams {
                scale: 0.1,
                zero_point: -129,
            },
        ] {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_quantize_i8(x.as_ptr(), 4, q, yi.as_mut_ptr())
            });
        }

        let f = "qk_dequantize_u8";
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_dequantize_u8(null(), 4, Q, yf.as_mut_ptr())
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_dequantize_u8(xq.as_ptr(), 4, Q, null_mut())
        });
        for q in bad_qparams_u8() {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_dequantize_u8(xq.as_ptr(), 4, q, yf.as_mut_ptr())
            });
        }
    }
}

#[test]
fn bad_arguments_add() {
    let a = [1u8, 2, 3, 4];
    let b = [4u8, 3, 2, 1];
    let mut y = [0u8; 4];
    let f = "qk_add_u8";
    // SAFETY: for the whole block, buffers hold 4 bytes; NULLs are rejected before any access.
    unsafe {
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_add_u8(null(), Q, b.as_ptr(), Q, 4, Q, false, y.as_mut_ptr())
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_add_u8(a.as_ptr(), Q, null(), Q, 4, Q, false, y.as_mut_ptr())
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_add_u8(a.as_ptr(), Q, b.as_ptr(), Q, 4, Q, true, null_mut())
        });
        for q in bad_qparams_u8() {
            for (qa, qb, qo) in [(q, Q, Q), (Q, q, Q), (Q, Q, q)] {
                expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                    qk_add_u8(a.as_ptr(), qa, b.as_ptr(), qb, 4, qo, false, y.as_mut_ptr())
                });
            }
        }
        ok(qk_add_u8(
            a.as_ptr(),
            Q,
            b.as_ptr(),
            Q,
            0,
            Q,
            false,
            y.as_mut_ptr(),
        ));
    }
}

#[test]
fn bad_arguments_gemm() {
    let a = [1u8; 12]; // 3 × 4
    let w = [1i8; 8]; // 2 × 4
    let mut c = [0i32; 6]; // 3 × 2
    let f = "qk_gemm_u8s8s32";
    // SAFETY: for the whole block, buffers match m=3, n=2, k=4 with tight strides; bad arguments are
    // rejected before any access.
    unsafe {
        let (pa, pw, pc) = (a.as_ptr(), w.as_ptr(), c.as_mut_ptr());
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_gemm_u8s8s32(3, 2, 4, null(), 4, pw, 4, pc, 2)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_gemm_u8s8s32(3, 2, 4, pa, 4, null(), 4, pc, 2)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_gemm_u8s8s32(3, 2, 4, pa, 4, pw, 4, null_mut(), 2)
        });
        for (m, n, k) in [(0, 2, 4), (3, 0, 4), (3, 2, 0)] {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_gemm_u8s8s32(m, n, k, pa, 4, pw, 4, pc, 2)
            });
        }
        for (lda, ldw, ldc) in [(3, 4, 2), (4, 3, 2), (4, 4, 1)] {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_gemm_u8s8s32(3, 2, 4, pa, lda, pw, ldw, pc, ldc)
            });
        }
        // Sizes whose products overflow size_t.
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_gemm_u8s8s32(usize::MAX, 2, 4, pa, usize::MAX / 2, pw, 4, pc, 2)
        });
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_gemm_u8s8s32(3, 2, 4, pa, 4, pw, 4, pc, usize::MAX / 4)
        });
        ok(qk_gemm_u8s8s32(3, 2, 4, pa, 4, pw, 4, pc, 2));
        assert_eq!(c, [4; 6]);
    }
}

fn desc(ic: usize, oc: usize, k: usize, s: usize, p: usize, g: usize) -> qk_conv2d_desc {
    qk_conv2d_desc {
        in_channels: ic,
        out_channels: oc,
        kernel_h: k,
        kernel_w: k,
        stride_h: s,
        stride_w: s,
        pad_h: p,
        pad_w: p,
        dilation_h: 1,
        dilation_w: 1,
        groups: g,
    }
}

/// A dangling non-NULL value, to check that a failed pack resets `*out` to NULL.
fn sentinel() -> *mut qk_weights {
    std::ptr::NonNull::<qk_weights>::dangling().as_ptr()
}

#[test]
fn bad_arguments_pack_conv2d() {
    let d = desc(4, 4, 3, 1, 1, 1);
    let w = [1i8; 4 * 4 * 9];
    let scales = [0.01f64; 4];
    let zps = [0i32; 4];
    let bias = [0.5f32; 4];
    let f = "qk_weights_pack_conv2d";
    // SAFETY: for the whole block, buffers match the descriptor; bad arguments are rejected before any
    // access. `h` is written only through the documented out-pointer.
    unsafe {
        let pack = |d: &qk_conv2d_desc, n_wq: usize, s: &[f64], z: &[i32], h: &mut *mut _| {
            qk_weights_pack_conv2d(
                d,
                w.as_ptr(),
                s.as_ptr(),
                z.as_ptr(),
                n_wq,
                bias.as_ptr(),
                h,
            )
        };
        let mut h = sentinel();
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_weights_pack_conv2d(
                null(),
                w.as_ptr(),
                scales.as_ptr(),
                zps.as_ptr(),
                1,
                null(),
                &mut h,
            )
        });
        assert!(h.is_null(), "*out is reset to NULL on failure");
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_weights_pack_conv2d(&d, null(), scales.as_ptr(), zps.as_ptr(), 1, null(), &mut h)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_weights_pack_conv2d(&d, w.as_ptr(), null(), zps.as_ptr(), 1, null(), &mut h)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_weights_pack_conv2d(&d, w.as_ptr(), scales.as_ptr(), null(), 1, null(), &mut h)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_weights_pack_conv2d(
                &d,
                w.as_ptr(),
                scales.as_ptr(),
                zps.as_ptr(),
                1,
                null(),
                null_mut(),
            )
        });
        // Every field that must be non-zero.
        let zeroed: [fn(&mut qk_conv2d_desc); 9] = [
            |d| d.in_channels = 0,
            |d| d.out_channels = 0,
            |d| d.kernel_h = 0,
            |d| d.kernel_w = 0,
            |d| d.stride_h = 0,
            |d| d.stride_w = 0,
            |d| d.dilation_h = 0,
            |d| d.dilation_w = 0,
            |d| d.groups = 0,
        ];
        for z in zeroed {
            let mut bad = d;
            z(&mut bad);
            h = sentinel();
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                pack(&bad, 1, &scales, &zps, &mut h)
            });
            assert!(h.is_null());
        }
        // Groups not dividing the channels.
        for (ic, oc, g) in [(4, 4, 3), (4, 6, 4), (6, 4, 4)] {
            let bad = desc(ic, oc, 3, 1, 1, g);
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                pack(&bad, 1, &scales, &zps, &mut h)
            });
        }
        // Weight count overflowing size_t.
        let huge = desc(usize::MAX / 2, 4, 3, 1, 1, 1);
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            pack(&huge, 1, &scales, &zps, &mut h)
        });
        // n_wq neither 1 nor out_channels.
        for n_wq in [0, 2, 5] {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                pack(&d, n_wq, &scales, &zps, &mut h)
            });
        }
        // Bad weight scales / zero points, per tensor and per channel.
        for s in [0.0, -0.1, f64::NAN, f64::INFINITY, 1e-60] {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                pack(&d, 1, &[s], &zps, &mut h)
            });
            let sc = [0.01, 0.01, s, 0.01];
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                pack(&d, 4, &sc, &zps, &mut h)
            });
        }
        for zp in [128, -129, i32::MAX] {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                pack(&d, 1, &scales, &[zp], &mut h)
            });
        }
        // Unknown accumulation mode.
        expect_err(QK_ERR_INVALID_ARGUMENT, "qk_weights_pack_conv2d_ex", || {
            qk_weights_pack_conv2d_ex(
                &d,
                w.as_ptr(),
                scales.as_ptr(),
                zps.as_ptr(),
                1,
                null(),
                3,
                &mut h,
            )
        });
        expect_err(QK_ERR_NULL_POINTER, "qk_weights_pack_conv2d_ex", || {
            qk_weights_pack_conv2d_ex(
                &d,
                null(),
                scales.as_ptr(),
                zps.as_ptr(),
                1,
                null(),
                0,
                &mut h,
            )
        });
        // And the good call works, per tensor and per channel.
        for n_wq in [1, 4] {
            ok(pack(&d, n_wq, &scales, &zps, &mut h));
            assert!(!h.is_null());
            qk_weights_free(h);
        }
        qk_weights_free(null_mut());
    }
}

#[test]
fn bad_arguments_pack_linear() {
    let w = [1i8; 3 * 5];
    let scales = [0.01f64; 3];
    let zps = [0i32; 3];
    let f = "qk_weights_pack_linear";
    // SAFETY: for the whole block, buffers match in=5, out=3; bad arguments are rejected first.
    unsafe {
        let (pw, ps, pz) = (w.as_ptr(), scales.as_ptr(), zps.as_ptr());
        let mut h = sentinel();
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_weights_pack_linear(5, 3, null(), ps, pz, 1, null(), &mut h)
        });
        assert!(h.is_null());
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_weights_pack_linear(5, 3, pw, null(), pz, 1, null(), &mut h)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_weights_pack_linear(5, 3, pw, ps, null(), 1, null(), &mut h)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_weights_pack_linear(5, 3, pw, ps, pz, 1, null(), null_mut())
        });
        for (k, n) in [(0, 3), (5, 0), (usize::MAX, 3)] {
            h = sentinel();
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_weights_pack_linear(k, n, pw, ps, pz, 1, null(), &mut h)
            });
            assert!(h.is_null());
        }
        for n_wq in [0, 2, 4] {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_weights_pack_linear(5, 3, pw, ps, pz, n_wq, null(), &mut h)
            });
        }
        for s in [0.0, f64::NAN, f64::NEG_INFINITY] {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_weights_pack_linear(5, 3, pw, &s, pz, 1, null(), &mut h)
            });
        }
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_weights_pack_linear(5, 3, pw, ps, &200, 1, null(), &mut h)
        });
        expect_err(QK_ERR_INVALID_ARGUMENT, "qk_weights_pack_linear_ex", || {
            qk_weights_pack_linear_ex(5, 3, pw, ps, pz, 1, null(), 99, &mut h)
        });
        ok(qk_weights_pack_linear(5, 3, pw, ps, pz, 3, null(), &mut h));
        qk_weights_free(h);
    }
}

/// A packed 3×3 conv (4 → 4 channels, pad 1) and a packed linear (5 → 3), for run-time tests.
fn sample_handles() -> (Weights, Weights) {
    let geo = Conv2dGeometry {
        batch: 1,
        in_h: 5,
        in_w: 5,
        in_c: 4,
        out_c: 4,
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        pad_h: 1,
        pad_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        groups: 1,
    };
    let w: Vec<i8> = (0..4 * 4 * 9).map(|i| (i % 7) as i8 - 3).collect();
    let conv = pack_conv(
        &geo,
        &w,
        &WeightQParams::per_tensor(0.02, 0),
        None,
        Accumulation::Exact,
    );
    let wl: Vec<i8> = (0..15).map(|i| (i % 5) as i8 - 2).collect();
    let lin = pack_linear(
        5,
        3,
        &wl,
        &WeightQParams::per_tensor(0.02, 0),
        Some(&[0.1, -0.2, 0.3]),
        Accumulation::Exact,
    );
    (conv, lin)
}

#[test]
fn bad_arguments_conv2d_run() {
    let (conv, lin) = sample_handles();
    let x = [7u8; 5 * 5 * 4];
    let mut y = vec![0u8; 5 * 5 * 4];
    let f = "qk_conv2d_u8";
    // SAFETY: for the whole block, `x` holds 1·5·5·4 bytes and `y` `y.len()`; bad arguments are rejected
    // before any access.
    unsafe {
        let (px, py, n) = (x.as_ptr(), y.as_mut_ptr(), y.len());
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_conv2d_u8(null(), px, 1, 5, 5, Q, Q, false, py, n)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_conv2d_u8(conv.0, null(), 1, 5, 5, Q, Q, false, py, n)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_conv2d_u8(conv.0, px, 1, 5, 5, Q, Q, false, null_mut(), n)
        });
        // A linear handle is not a conv.
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_conv2d_u8(lin.0, px, 1, 5, 5, Q, Q, false, py, n)
        });
        for (b, hh, ww) in [(0, 5, 5), (1, 0, 5), (1, 5, 0)] {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_conv2d_u8(conv.0, px, b, hh, ww, Q, Q, false, py, n)
            });
        }
        // batch·h·w·c overflowing size_t.
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_conv2d_u8(conv.0, px, usize::MAX, 5, 5, Q, Q, false, py, n)
        });
        for q in bad_qparams_u8() {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_conv2d_u8(conv.0, px, 1, 5, 5, q, Q, false, py, n)
            });
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_conv2d_u8(conv.0, px, 1, 5, 5, Q, q, true, py, n)
            });
        }
        // Too-small output capacity.
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_conv2d_u8(conv.0, px, 1, 5, 5, Q, Q, false, py, n - 1)
        });
        ok(qk_conv2d_u8(conv.0, px, 1, 5, 5, Q, Q, false, py, n));

        // Kernel larger than the padded input: a 5×5 kernel, no padding, on a 3×3 input.
        let big = desc(4, 4, 5, 1, 0, 1);
        let w = vec![1i8; 4 * 4 * 25];
        let mut h = null_mut();
        ok(qk_weights_pack_conv2d(
            &big,
            w.as_ptr(),
            &0.1,
            &0,
            1,
            null(),
            &mut h,
        ));
        let big = Weights(h);
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_conv2d_u8(big.0, px, 1, 3, 3, Q, Q, false, py, n)
        });
        let (mut oh, mut ow) = (0usize, 0usize);
        let g = "qk_conv2d_output_size";
        expect_err(QK_ERR_INVALID_ARGUMENT, g, || {
            qk_conv2d_output_size(big.0, 3, 3, &mut oh, &mut ow)
        });
        expect_err(QK_ERR_INVALID_ARGUMENT, g, || {
            qk_conv2d_output_size(big.0, 0, 7, &mut oh, &mut ow)
        });
        expect_err(QK_ERR_INVALID_ARGUMENT, g, || {
            qk_conv2d_output_size(lin.0, 7, 7, &mut oh, &mut ow)
        });
        expect_err(QK_ERR_NULL_POINTER, g, || {
            qk_conv2d_output_size(null(), 7, 7, &mut oh, &mut ow)
        });
        expect_err(QK_ERR_NULL_POINTER, g, || {
            qk_conv2d_output_size(big.0, 7, 7, null_mut(), &mut ow)
        });
        expect_err(QK_ERR_NULL_POINTER, g, || {
            qk_conv2d_output_size(big.0, 7, 7, &mut oh, null_mut())
        });
        ok(qk_conv2d_output_size(big.0, 7, 6, &mut oh, &mut ow));
        assert_eq!((oh, ow), (3, 2));

        assert_eq!(qk_weights_out_channels(null()), 0);
        assert_eq!(qk_weights_in_channels(null()), 0);
        assert_eq!(qk_weights_out_channels(conv.0), 4);
    }
}

#[test]
fn bad_arguments_linear_run() {
    let (conv, lin) = sample_handles();
    let x = [9u8; 2 * 5];
    let mut y = vec![0u8; 2 * 3];
    let f = "qk_linear_u8";
    // SAFETY: for the whole block, `x` holds 2·5 bytes and `y` 2·3; bad arguments are rejected first.
    unsafe {
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_linear_u8(null(), px, 2, Q, Q, false, py, 6)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_linear_u8(lin.0, null(), 2, Q, Q, false, py, 6)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_linear_u8(lin.0, px, 2, Q, Q, false, null_mut(), 6)
        });
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_linear_u8(conv.0, px, 2, Q, Q, false, py, 6)
        });
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_linear_u8(lin.0, px, 0, Q, Q, false, py, 6)
        });
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_linear_u8(lin.0, px, usize::MAX, Q, Q, false, py, 6)
        });
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_linear_u8(lin.0, px, 2, Q, Q, false, py, 5)
        });
        assert_eq!(
            last_error(),
            "qk_linear_u8: invalid argument: out_len = 5 is too small: the output has 2×3 = 6 \
             elements"
        );
        for q in bad_qparams_u8() {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_linear_u8(lin.0, px, 2, q, Q, false, py, 6)
            });
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_linear_u8(lin.0, px, 2, Q, q, false, py, 6)
            });
        }
        ok(qk_linear_u8(lin.0, px, 2, Q, Q, false, py, 6));
    }
}

#[test]
fn bad_arguments_pools() {
    let x = vec![3u8; 2 * 6 * 6 * 3];
    let mut y = vec![0u8; x.len()];
    let f = "qk_max_pool2d_u8";
    // SAFETY: for the whole block, `x` holds 2·6·6·3 bytes and `y` as many; bad arguments are rejected
    // before any access.
    unsafe {
        let (px, py, n) = (x.as_ptr(), y.as_mut_ptr(), y.len());
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_max_pool2d_u8(null(), 2, 6, 6, 3, 3, 2, 1, py, n)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_max_pool2d_u8(px, 2, 6, 6, 3, 3, 2, 1, null_mut(), n)
        });
        for (b, hh, ww, c) in [(0, 6, 6, 3), (2, 0, 6, 3), (2, 6, 0, 3), (2, 6, 6, 0)] {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_max_pool2d_u8(px, b, hh, ww, c, 3, 2, 1, py, n)
            });
        }
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_max_pool2d_u8(px, usize::MAX, 6, 6, 3, 3, 2, 1, py, n)
        });
        // kernel 0, stride 0, padding more than half the kernel, kernel larger than the
        // padded input.
        for (k, s, p) in [(0, 2, 0), (3, 0, 1), (3, 2, 2), (9, 1, 1)] {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_max_pool2d_u8(px, 2, 6, 6, 3, k, s, p, py, n)
            });
        }
        // 6×6, k3 s2 p1 → 3×3: needs 2·3·3·3 = 54.
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_max_pool2d_u8(px, 2, 6, 6, 3, 3, 2, 1, py, 53)
        });
        ok(qk_max_pool2d_u8(px, 2, 6, 6, 3, 3, 2, 1, py, 54));

        let g = "qk_max_pool2d_output_size";
        let (mut oh, mut ow) = (0usize, 0usize);
        expect_err(QK_ERR_NULL_POINTER, g, || {
            qk_max_pool2d_output_size(6, 6, 3, 2, 1, null_mut(), &mut ow)
        });
        expect_err(QK_ERR_NULL_POINTER, g, || {
            qk_max_pool2d_output_size(6, 6, 3, 2, 1, &mut oh, null_mut())
        });
        expect_err(QK_ERR_INVALID_ARGUMENT, g, || {
            qk_max_pool2d_output_size(0, 6, 3, 2, 1, &mut oh, &mut ow)
        });
        expect_err(QK_ERR_INVALID_ARGUMENT, g, || {
            qk_max_pool2d_output_size(6, 6, 9, 2, 1, &mut oh, &mut ow)
        });
        ok(qk_max_pool2d_output_size(6, 6, 3, 2, 1, &mut oh, &mut ow));
        assert_eq!((oh, ow), (3, 3));

        let f = "qk_adaptive_avg_pool2d_u8";
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_adaptive_avg_pool2d_u8(null(), 2, 6, 6, 3, 1, 1, Q, py, n)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_adaptive_avg_pool2d_u8(px, 2, 6, 6, 3, 1, 1, Q, null_mut(), n)
        });
        for (b, hh, ww, c, oh, ow) in [
            (0, 6, 6, 3, 1, 1),
            (2, 0, 6, 3, 1, 1),
            (2, 6, 0, 3, 1, 1),
            (2, 6, 6, 0, 1, 1),
            (2, 6, 6, 3, 0, 1),
            (2, 6, 6, 3, 1, 0),
            (2, 6, 6, 3, 7, 1),
            (2, 6, 6, 3, 1, 7),
        ] {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_adaptive_avg_pool2d_u8(px, b, hh, ww, c, oh, ow, Q, py, n)
            });
        }
        for q in bad_qparams_u8() {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_adaptive_avg_pool2d_u8(px, 2, 6, 6, 3, 1, 1, q, py, n)
            });
        }
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_adaptive_avg_pool2d_u8(px, 2, 6, 6, 3, 2, 2, Q, py, 23)
        });
        ok(qk_adaptive_avg_pool2d_u8(px, 2, 6, 6, 3, 2, 2, Q, py, 24));
    }
}

// ------------------------------------------------------------------------------------------
// Threads and aliasing
// ------------------------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift), so the test needs no fixture.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

#[test]
fn one_handle_many_threads_same_bytes() {
    let geo = Conv2dGeometry {
        batch: 2,
        in_h: 13,
        in_w: 11,
        in_c: 24,
        out_c: 40,
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 2,
        stride_w: 1,
        pad_h: 1,
        pad_w: 1,
        dilation_h: 1,
        dilation_w: 2,
        groups: 2,
    };
    let w: Vec<i8> = bytes(40 * 12 * 9, 7).into_iter().map(|b| b as i8).collect();
    let scales: Vec<f64> = (0..40).map(|i| 0.001 + 0.0003 * i as f64).collect();
    let zps = vec![0i32; 40];
    let wq = WeightQParams::per_channel(scales, zps);
    let bias: Vec<f32> = (0..40).map(|i| i as f32 * 0.25 - 3.0).collect();
    let x = bytes(2 * 13 * 11 * 24, 11);
    let (xq, outq) = (QParams::new(0.03, 17), QParams::new(0.2, 100));
    let want = qkernels::reference::conv2d_nhwc(
        &geo,
        &x,
        xq,
        &w,
        &wq,
        Some(&bias),
        outq,
        true,
        Accumulation::Exact,
    );
    let h = pack_conv(&geo, &w, &wq, Some(&bias), Accumulation::Exact);
    let lin_w: Vec<i8> = bytes(33 * 70, 5).into_iter().map(|b| b as i8).collect();
    let lin_wq = WeightQParams::per_tensor(0.004, 3);
    let lin_x = bytes(9 * 70, 3);
    let lin_want = qkernels::reference::linear(
        9,
        70,
        33,
        &lin_x,
        xq,
        &lin_w,
        &lin_wq,
        None,
        outq,
        false,
        Accumulation::Exact,
    );
    let lh = pack_linear(70, 33, &lin_w, &lin_wq, None, Accumulation::Exact);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..8 {
                    let y = run_conv(&h, &geo, &x, xq, outq, true);
                    assert_eq!(y, want);
                    let mut ly = vec![0u8; 9 * 33];
                    // SAFETY: `lin_x` holds 9·70 bytes, `ly` 9·33.
                    ok(unsafe {
                        qk_linear_u8(
                            lh.ptr(),
                            lin_x.as_ptr(),
                            9,
                            qp(xq),
                            qp(outq),
                            false,
                            ly.as_mut_ptr(),
                            ly.len(),
                        )
                    });
                    assert_eq!(ly, lin_want);
                }
            });
        }
    });
}

#[test]
fn outputs_may_alias_inputs() {
    let a = bytes(1000, 21);
    let b = bytes(1000, 22);
    let (qa, qb, qo) = (
        QParams::new(0.02, 120),
        QParams::new(0.05, 3),
        QParams::new(0.06, 60),
    );
    let want = qkernels::reference::add(&a, qa, &b, qb, qo, true);
    // In place: out == a.
    let mut inplace = a.clone();
    // SAFETY: both buffers hold 1000 bytes; the output may alias an input.
    ok(unsafe {
        qk_add_u8(
            inplace.as_ptr(),
            qp(qa),
            b.as_ptr(),
            qp(qb),
            1000,
            qp(qo),
            true,
            inplace.as_mut_ptr(),
        )
    });
    assert_eq!(inplace, want);
    // out == a == b.
    let want2 = qkernels::reference::add(&a, qa, &a, qa, qo, false);
    let mut both = a.clone();
    let p = both.as_mut_ptr();
    // SAFETY: as above.
    ok(unsafe { qk_add_u8(p, qp(qa), p, qp(qa), 1000, qp(qo), false, p) });
    assert_eq!(both, want2);

    // A 1×1 conv written over its own input (same element count in and out).
    let geo = Conv2dGeometry {
        batch: 1,
        in_h: 6,
        in_w: 7,
        in_c: 8,
        out_c: 8,
        kernel_h: 1,
        kernel_w: 1,
        stride_h: 1,
        stride_w: 1,
        pad_h: 0,
        pad_w: 0,
        dilation_h: 1,
        dilation_w: 1,
        groups: 1,
    };
    let w: Vec<i8> = bytes(64, 4).into_iter().map(|v| v as i8).collect();
    let wq = WeightQParams::per_tensor(0.01, 0);
    let x = bytes(6 * 7 * 8, 9);
    let (xq, oq) = (QParams::new(0.02, 5), QParams::new(0.1, 128));
    let want = qkernels::reference::conv2d_nhwc(
        &geo,
        &x,
        xq,
        &w,
        &wq,
        None,
        oq,
        false,
        Accumulation::Exact,
    );
    let h = pack_conv(&geo, &w, &wq, None, Accumulation::Exact);
    let mut buf = x.clone();
    let p = buf.as_mut_ptr();
    // SAFETY: `buf` holds the input and has room for the (equal-sized) output.
    ok(unsafe { qk_conv2d_u8(h.0, p, 1, 6, 7, qp(xq), qp(oq), false, p, buf.len()) });
    assert_eq!(buf, want);
}

// ------------------------------------------------------------------------------------------
// The ResNet-18 model
// ------------------------------------------------------------------------------------------

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn c_path(p: &std::path::Path) -> std::ffi::CString {
    std::ffi::CString::new(p.to_str().expect("UTF-8 path")).unwrap()
}

/// Owns a model handle for the duration of a test.
struct ModelHandle(*mut qk_model);

impl ModelHandle {
    fn load(path: &std::path::Path) -> ModelHandle {
        let mut m = null_mut();
        // SAFETY: NUL-terminated path, writable out-pointer.
        ok(unsafe { qk_model_load(c_path(path).as_ptr(), &mut m) });
        assert!(!m.is_null());
        ModelHandle(m)
    }
    fn ptr(&self) -> *const qk_model {
        self.0
    }
}

impl Drop for ModelHandle {
    fn drop(&mut self) {
        // SAFETY: loaded once, freed once.
        unsafe { qk_model_free(self.0) };
    }
}

// SAFETY: models are immutable after loading and documented as shareable between threads.
unsafe impl Send for ModelHandle {}
// SAFETY: as above.
unsafe impl Sync for ModelHandle {}

/// The first `n` scikit-learn test digits: (model input NCHW, PyTorch's u8 logits, PyTorch's
/// float logits). The input is built with the library's preprocessing, as
/// `tests/resnet18_golden.rs` does (it checks that this reproduces PyTorch's input).
fn digits(n: usize) -> (Vec<f32>, Vec<u8>, Vec<f32>) {
    use safetensors::SafeTensors;
    let bytes = std::fs::read(repo("tests/data/digits_test.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let images = st.tensor("images").unwrap().data().to_vec();
    let logits_q = st.tensor("logits_q").unwrap().data()[..n * 10].to_vec();
    let logits: Vec<f32> = st.tensor("logits").unwrap().data()[..n * 40]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let model = qkernels::resnet18::Model::load(repo("models/digits_resnet18.safetensors"))
        .expect("digits model");
    let meta = model.metadata();
    let x = images
        .chunks_exact(64)
        .take(n)
        .flat_map(|img| {
            let plane: Vec<f32> = img.iter().map(|&v| f32::from(v) / 16.0).collect();
            qkernels::resnet18::preprocess::image_to_input(
                &plane,
                1,
                8,
                8,
                meta.input_size,
                &meta.mean,
                &meta.std,
            )
            .unwrap()
        })
        .collect();
    (x, logits_q, logits)
}

#[test]
fn digits_model_through_the_c_abi_matches_pytorch() {
    const N: usize = 24;
    let (x, want_q, want_f) = digits(N);
    let m = ModelHandle::load(&repo("models/digits_resnet18.safetensors"));
    let (mut h, mut w) = (0, 0);
    // SAFETY: live model, writable outputs.
    unsafe {
        assert_eq!(qk_model_num_classes(m.ptr()), 10);
        assert_eq!(qk_model_input_channels(m.ptr()), 3);
        ok(qk_model_input_size(m.ptr(), &mut h, &mut w));
    }
    assert_eq!((h, w), (32, 32));
    assert_eq!(x.len(), N * 3 * 32 * 32);
    let run_q = |x: &[f32], batch: usize| {
        let mut q = vec![0u8; batch * 10 + 3]; // spare capacity is allowed
        // SAFETY: `x` holds batch·3·32·32 floats, `q` `q.len()` bytes.
        ok(unsafe {
            qk_model_run_quantized(m.ptr(), x.as_ptr(), batch, 32, 32, q.as_mut_ptr(), q.len())
        });
        q.truncate(batch * 10);
        q
    };
    let run_f = |x: &[f32], batch: usize| {
        let mut f = vec![0f32; batch * 10];
        // SAFETY: `x` holds batch·3·32·32 floats, `f` batch·10.
        ok(unsafe { qk_model_run(m.ptr(), x.as_ptr(), batch, 32, 32, f.as_mut_ptr(), f.len()) });
        f
    };
    assert_eq!(run_q(&x, N), want_q);
    assert_eq!(bits(&run_f(&x, N)), bits(&want_f));
    // The logits' qparams dequantize the u8 logits to exactly the float logits.
    let mut lq = qk_qparams {
        scale: 0.0,
        zero_point: 0,
    };
    // SAFETY: live model, writable output.
    ok(unsafe { qk_model_logits_qparams(m.ptr(), &mut lq) });
    let deq = qkernels::reference::dequantize_u8(&want_q, QParams::new(lq.scale, lq.zero_point));
    assert_eq!(bits(&deq), bits(&want_f));
    // One model, several threads, one image each at a time.
    std::thread::scope(|s| {
        for t in 0..4 {
            let (x, want_q) = (&x, &want_q);
            s.spawn(move || {
                for i in (t..N).step_by(4) {
                    let xi = &x[i * 3072..(i + 1) * 3072];
                    assert_eq!(run_q(xi, 1), want_q[i * 10..(i + 1) * 10], "image {i}");
                }
            });
        }
    });
}

/// A file in the temp directory, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> TempFile {
        let p = std::env::temp_dir().join(format!("qk-capi-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        TempFile(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn bad_arguments_model() {
    let f = "qk_model_load";
    let real = std::fs::read(repo("models/digits_resnet18.safetensors")).unwrap();
    let garbage = TempFile::new("garbage.safetensors", &bytes(4096, 99));
    let empty = TempFile::new("empty.safetensors", b"");
    let truncated = TempFile::new("truncated.safetensors", &real[..real.len() / 2]);
    // A valid safetensors file that is not a model.
    let not_a_model = TempFile::new(
        "ops.safetensors",
        &std::fs::read(data_path("ops.safetensors")).unwrap(),
    );
    // SAFETY: for the whole block, paths are NUL-terminated, out-pointers writable, buffers
    // sized as stated; bad arguments are rejected before any access.
    unsafe {
        let mut m = std::ptr::NonNull::<qk_model>::dangling().as_ptr();
        let p = c_path(&repo("models/digits_resnet18.safetensors"));
        expect_err(QK_ERR_NULL_POINTER, f, || qk_model_load(null(), &mut m));
        assert!(m.is_null(), "*out is reset to NULL on failure");
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_model_load(p.as_ptr(), null_mut())
        });
        let missing = c_path(&repo("models/no-such-model.safetensors"));
        expect_err(QK_ERR_IO, f, || qk_model_load(missing.as_ptr(), &mut m));
        assert!(
            last_error_after(|| qk_model_load(missing.as_ptr(), &mut m)).contains("no-such-model")
        );
        expect_err(QK_ERR_IO, f, || {
            qk_model_load(c_path(&repo("models")).as_ptr(), &mut m)
        });
        for bad in [&garbage, &empty, &truncated, &not_a_model] {
            m = std::ptr::NonNull::<qk_model>::dangling().as_ptr();
            expect_err(QK_ERR_FORMAT, f, || {
                qk_model_load(c_path(&bad.0).as_ptr(), &mut m)
            });
            assert!(m.is_null());
        }

        let model = ModelHandle::load(&repo("models/digits_resnet18.safetensors"));
        let x = vec![0.25f32; 2 * 3 * 32 * 32];
        let mut y = vec![0f32; 20];
        let mut yq = vec![0u8; 20];
        let (mp, px, py, pq) = (model.ptr(), x.as_ptr(), y.as_mut_ptr(), yq.as_mut_ptr());
        let f = "qk_model_run";
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_model_run(null(), px, 2, 32, 32, py, 20)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_model_run(mp, null(), 2, 32, 32, py, 20)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_model_run(mp, px, 2, 32, 32, null_mut(), 20)
        });
        for (b, h, w) in [(0, 32, 32), (2, 0, 32), (2, 32, 0)] {
            expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
                qk_model_run(mp, px, b, h, w, py, 20)
            });
        }
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_model_run(mp, px, usize::MAX, 32, 32, py, 20)
        });
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_model_run(mp, px, 2, 32, 32, py, 19)
        });
        ok(qk_model_run(mp, px, 2, 32, 32, py, 20));
        let f = "qk_model_run_quantized";
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_model_run_quantized(null(), px, 2, 32, 32, pq, 20)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_model_run_quantized(mp, px, 2, 32, 32, null_mut(), 20)
        });
        expect_err(QK_ERR_INVALID_ARGUMENT, f, || {
            qk_model_run_quantized(mp, px, 2, 32, 32, pq, 10)
        });
        ok(qk_model_run_quantized(mp, px, 2, 32, 32, pq, 20));

        let (mut h, mut w) = (0, 0);
        let f = "qk_model_input_size";
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_model_input_size(null(), &mut h, &mut w)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_model_input_size(mp, null_mut(), &mut w)
        });
        expect_err(QK_ERR_NULL_POINTER, f, || {
            qk_model_input_size(mp, &mut h, null_mut())
        });
        expect_err(QK_ERR_NULL_POINTER, "qk_model_logits_qparams", || {
            qk_model_logits_qparams(mp, null_mut())
        });
        assert_eq!(qk_model_num_classes(null()), 0);
        assert_eq!(qk_model_input_channels(null()), 0);
        qk_model_free(null_mut());
    }
}

/// The message a failing call leaves.
fn last_error_after(call: impl FnOnce() -> qk_status) -> String {
    assert_ne!(call(), QK_OK);
    last_error()
}

/// `qk_gemm_u8s8s32` with padded strides against the reference: exact i32, and the padding
/// of `C` between rows is left untouched.
#[test]
fn gemm_with_strides_matches_the_reference() {
    for &(m, n, k) in &[(1, 1, 1), (7, 13, 33), (50, 70, 300), (3, 5, 66000)] {
        let (lda, ldw, ldc) = (k + 3, k + 5, n + 2);
        let a_dense = bytes(m * k, 31);
        let w_dense: Vec<i8> = bytes(n * k, 37).into_iter().map(|v| v as i8).collect();
        let mut a = vec![0xAAu8; (m - 1) * lda + k];
        let mut w = vec![0x55i8; (n - 1) * ldw + k];
        for i in 0..m {
            a[i * lda..i * lda + k].copy_from_slice(&a_dense[i * k..(i + 1) * k]);
        }
        for j in 0..n {
            w[j * ldw..j * ldw + k].copy_from_slice(&w_dense[j * k..(j + 1) * k]);
        }
        let want = qkernels::reference::matmul_u8s8s32_ref(m, n, k, &a_dense, &w_dense, false);
        let mut c = vec![-7i32; (m - 1) * ldc + n];
        // SAFETY: the buffers hold exactly the strided sizes the call documents.
        ok(unsafe {
            qk_gemm_u8s8s32(
                m,
                n,
                k,
                a.as_ptr(),
                lda,
                w.as_ptr(),
                ldw,
                c.as_mut_ptr(),
                ldc,
            )
        });
        for i in 0..m {
            assert_eq!(
                c[i * ldc..i * ldc + n],
                want[i * n..(i + 1) * n],
                "{m}x{n}x{k} row {i}"
            );
            if i + 1 < m {
                assert_eq!(
                    c[i * ldc + n..(i + 1) * ldc],
                    [-7, -7],
                    "row padding untouched"
                );
            }
        }
    }
}

/// Random conv geometries — many of them invalid — through pack + output size + run: the
/// status is exactly what an independent validity predicate says (never a crash, never
/// `QK_ERR_INTERNAL`), and every accepted call produces the reference's bytes.
#[test]
fn random_conv_arguments_status_and_bytes() {
    let mut rng = bytes(4096, 2024).into_iter().cycle();
    let mut next = |n: usize| usize::from(rng.next().unwrap()) % n;
    // A size in 1..=n, or 0 one time in 24.
    let dim = |n: usize, next: &mut dyn FnMut(usize) -> usize| {
        if next(24) == 0 { 0 } else { 1 + next(n) }
    };
    let (mut packed, mut ran) = (0, 0);
    for _ in 0..1500 {
        let d = qk_conv2d_desc {
            in_channels: dim(6, &mut next),
            out_channels: dim(6, &mut next),
            kernel_h: dim(3, &mut next),
            kernel_w: dim(3, &mut next),
            stride_h: dim(2, &mut next),
            stride_w: dim(2, &mut next),
            pad_h: next(3),
            pad_w: next(3),
            dilation_h: dim(2, &mut next),
            dilation_w: dim(2, &mut next),
            groups: dim(3, &mut next),
        };
        let (batch, h, w) = (dim(2, &mut next), dim(7, &mut next), dim(7, &mut next));
        let pack_ok = [
            d.in_channels,
            d.out_channels,
            d.kernel_h,
            d.kernel_w,
            d.stride_h,
            d.stride_w,
            d.dilation_h,
            d.dilation_w,
            d.groups,
        ]
        .iter()
        .all(|&v| v > 0)
            && d.in_channels.is_multiple_of(d.groups)
            && d.out_channels.is_multiple_of(d.groups);
        let wlen = d.out_channels * d.in_channels * d.kernel_h * d.kernel_w;
        let wts: Vec<i8> = (0..wlen).map(|_| next(256) as u8 as i8).collect();
        let scales: Vec<f64> = (0..d.out_channels.max(1))
            .map(|i| 0.001 * (i + 1) as f64)
            .collect();
        let zps = vec![0i32; scales.len()];
        let mut hnd = sentinel();
        // SAFETY: the buffers hold at least what any valid descriptor needs.
        let s = unsafe {
            qk_weights_pack_conv2d(
                &d,
                wts.as_ptr(),
                scales.as_ptr(),
                zps.as_ptr(),
                1,
                null(),
                &mut hnd,
            )
        };
        if !pack_ok {
            assert_eq!(s, QK_ERR_INVALID_ARGUMENT, "{d:?}: {}", last_error());
            assert!(hnd.is_null());
            continue;
        }
        ok(s);
        packed += 1;
        let hnd = Weights(hnd);
        let span = |k: usize, dil: usize| dil * (k - 1) + 1;
        let fits = h + 2 * d.pad_h >= span(d.kernel_h, d.dilation_h)
            && w + 2 * d.pad_w >= span(d.kernel_w, d.dilation_w);
        let (mut oh, mut ow) = (0, 0);
        // SAFETY: live handle, writable outputs.
        let s = unsafe { qk_conv2d_output_size(hnd.ptr(), h, w, &mut oh, &mut ow) };
        let size_ok = h > 0 && w > 0 && fits;
        if !size_ok {
            assert_eq!(s, QK_ERR_INVALID_ARGUMENT, "{d:?} on {h}x{w}");
        } else {
            ok(s);
            assert_eq!(
                oh,
                (h + 2 * d.pad_h - span(d.kernel_h, d.dilation_h)) / d.stride_h + 1
            );
            assert_eq!(
                ow,
                (w + 2 * d.pad_w - span(d.kernel_w, d.dilation_w)) / d.stride_w + 1
            );
        }
        let need = batch * oh * ow * d.out_channels;
        let out_len = if size_ok && next(4) == 0 {
            need.saturating_sub(1 + next(2))
        } else {
            need + next(3)
        };
        let x: Vec<u8> = (0..batch * h * w * d.in_channels)
            .map(|_| next(256) as u8)
            .collect();
        let mut y = vec![0u8; out_len];
        let (xq, yq) = (QParams::new(0.04, 7), QParams::new(0.3, 90));
        // SAFETY: `x` holds batch·h·w·IC bytes, `y` `out_len`.
        let s = unsafe {
            qk_conv2d_u8(
                hnd.ptr(),
                x.as_ptr(),
                batch,
                h,
                w,
                qp(xq),
                qp(yq),
                false,
                y.as_mut_ptr(),
                out_len,
            )
        };
        let run_ok = batch > 0 && size_ok && out_len >= need;
        if !run_ok {
            assert_eq!(
                s, QK_ERR_INVALID_ARGUMENT,
                "{d:?} {batch}x{h}x{w} out_len {out_len}"
            );
            continue;
        }
        ok(s);
        ran += 1;
        let geo = Conv2dGeometry {
            batch,
            in_h: h,
            in_w: w,
            in_c: d.in_channels,
            out_c: d.out_channels,
            kernel_h: d.kernel_h,
            kernel_w: d.kernel_w,
            stride_h: d.stride_h,
            stride_w: d.stride_w,
            pad_h: d.pad_h,
            pad_w: d.pad_w,
            dilation_h: d.dilation_h,
            dilation_w: d.dilation_w,
            groups: d.groups,
        };
        let wq = WeightQParams::per_tensor(scales[0], 0);
        let k = d.out_channels * (d.in_channels / d.groups) * d.kernel_h * d.kernel_w;
        let want = qkernels::reference::conv2d_nhwc(
            &geo,
            &x,
            xq,
            &wts[..k],
            &wq,
            None,
            yq,
            false,
            Accumulation::Exact,
        );
        assert_eq!(y[..need], want[..], "{d:?} {batch}x{h}x{w}");
    }
    // The generator must exercise both sides of every check.
    assert!(packed > 200 && ran > 100, "packed {packed}, ran {ran}");
    println!("random conv arguments: {packed} packed, {ran} ran");
}
