//! `c_abi`: arbitrary dimensions, quantization parameters, strides, accumulation modes,
//! NULL pointers and in-place aliasing through the `qk_*` C functions, on small buffers.
//!
//! The fuzzer itself keeps the C contract (every non-NULL pointer points to as many elements
//! as the call's documented size; a size that would need more than [`LIMIT`] elements is only
//! passed when its product overflows, which must be refused before any read). The library must
//! then answer with a status — never a panic (`QK_ERR_INTERNAL` counts as a crash), never an
//! out-of-bounds access (the fuzz build runs under AddressSanitizer) — and every failure must
//! leave a non-empty `qk_last_error()` message.
//!
//! The `qk_model_*` arm loads the digits ResNet-18 once per process (`qk_model_load` on the
//! repository's model file) and fuzzes the run arguments on tiny images; `qk_model_load` itself
//! gets arbitrary (mostly non-existent) paths. The file contents are fuzzed by `model_loader`.

use crate::input::*;
use arbitrary::{Result, Unstructured};
use qkernels::ffi::*;
use std::ptr;

/// Largest buffer the fuzzer allocates for one argument (elements).
pub const LIMIT: usize = 1 << 14;

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = body(&mut u);
}

/// What to do with a buffer of `Option<len>` elements (None: the length overflows usize).
enum Buf {
    Call(usize),
    Overflow,
    Skip,
}

fn plan(len: Option<usize>) -> Buf {
    match len {
        None => Buf::Overflow,
        Some(n) if n <= LIMIT => Buf::Call(n),
        Some(_) => Buf::Skip,
    }
}

fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

fn strided(rows: usize, cols: usize, ld: usize) -> Option<usize> {
    if rows == 0 {
        return Some(0);
    }
    (rows - 1).checked_mul(ld)?.checked_add(cols)
}

fn dim(u: &mut Unstructured<'_>) -> Result<usize> {
    Ok(if u.ratio(1, 12)? {
        hostile_dim(u)?
    } else {
        u.int_in_range(0..=9)?
    })
}

fn qp(u: &mut Unstructured<'_>) -> Result<qk_qparams> {
    let q = if u.ratio(1, 5)? {
        hostile_qparams(u)?
    } else {
        qparams_u8(u, -8, 1)?
    };
    Ok(qk_qparams {
        scale: q.scale,
        zero_point: q.zero_point,
    })
}

#[track_caller]
fn check(st: qk_status) {
    assert_ne!(
        st,
        qk_status::QK_ERR_INTERNAL,
        "internal error (caught panic)"
    );
    if st != qk_status::QK_OK {
        // SAFETY: qk_last_error returns NULL or a NUL-terminated string valid until the next
        // qk_* call on this thread.
        let msg = unsafe {
            let p = qk_last_error();
            assert!(!p.is_null(), "failure without a last error");
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        };
        assert!(!msg.is_empty(), "empty last error for {st:?}");
    }
}

/// Returns `p`, or NULL now and then.
fn maybe_null<T>(u: &mut Unstructured<'_>, p: *const T) -> Result<*const T> {
    Ok(if u.ratio(1, 16)? { ptr::null() } else { p })
}

fn maybe_null_mut<T>(u: &mut Unstructured<'_>, p: *mut T) -> Result<*mut T> {
    Ok(if u.ratio(1, 16)? { ptr::null_mut() } else { p })
}

fn body(u: &mut Unstructured<'_>) -> Result<()> {
    match u.int_in_range(0u8..=7)? {
        7 => model(u),
        0 => elementwise(u),
        1 => gemm(u),
        2 | 3 => conv(u),
        4 => linear(u),
        _ => pools(u),
    }
}

fn elementwise(u: &mut Unstructured<'_>) -> Result<()> {
    let n = dim(u)?.min(LIMIT) * if u.arbitrary()? { 37 } else { 1 };
    let (qa, qb, qo) = (qp(u)?, qp(u)?, qp(u)?);
    let a = bytes(u, n)?;
    let b = bytes(u, n)?;
    let xf: Vec<f32> = (0..n).map(|i| f32::from(a[i]) * 0.37 - 20.0).collect();
    let mut out = vec![0u8; n];
    let mut outi = vec![0i8; n];
    let mut outf = vec![0f32; n];
    // SAFETY (all calls below): every non-NULL pointer points to `n` elements.
    unsafe {
        let x = maybe_null(u, xf.as_ptr())?;
        check(qk_quantize_u8(
            x,
            n,
            qa,
            maybe_null_mut(u, out.as_mut_ptr())?,
        ));
        check(qk_quantize_i8(x, n, qa, outi.as_mut_ptr()));
        check(qk_dequantize_u8(
            a.as_ptr(),
            n,
            qa,
            maybe_null_mut(u, outf.as_mut_ptr())?,
        ));
        let relu = u.arbitrary()?;
        check(qk_add_u8(
            a.as_ptr(),
            qa,
            maybe_null(u, b.as_ptr())?,
            qb,
            n,
            qo,
            relu,
            out.as_mut_ptr(),
        ));
        // In place: out aliases a.
        let mut inplace = a.clone();
        let p = inplace.as_mut_ptr();
        check(qk_add_u8(p, qa, b.as_ptr(), qb, n, qo, relu, p));
        let valid = |q: qk_qparams| qkernels::validate::check_qparams_u8(q.into(), "").is_ok();
        if valid(qa) && valid(qb) && valid(qo) {
            let want = qkernels::reference::add(&a, qa.into(), &b, qb.into(), qo.into(), relu);
            assert_eq!(inplace, want, "in-place qk_add_u8");
        }
    }
    Ok(())
}

fn gemm(u: &mut Unstructured<'_>) -> Result<()> {
    let (m, n, k) = (dim(u)?, dim(u)?, dim(u)?);
    let lda = k.saturating_add(dim(u)?.min(3));
    let ldw = k.saturating_add(dim(u)?.min(3));
    let ldc = if u.ratio(1, 8)? {
        dim(u)?
    } else {
        n.saturating_add(dim(u)?.min(3))
    };
    let (la, lw, lc) = (strided(m, k, lda), strided(n, k, ldw), strided(m, n, ldc));
    let sizes = [plan(la), plan(lw), plan(lc)];
    if sizes.iter().any(|s| matches!(s, Buf::Skip)) {
        return Ok(());
    }
    let len = |s: &Buf| match s {
        Buf::Call(n) => (*n).max(1),
        _ => 1,
    };
    let a = bytes(u, len(&sizes[0]))?;
    let w = i8s(u, len(&sizes[1]))?;
    let mut c = vec![0i32; len(&sizes[2])];
    // SAFETY: each buffer holds the documented size (or the size overflows and must be
    // refused before any access).
    let st = unsafe {
        qk_gemm_u8s8s32(
            m,
            n,
            k,
            maybe_null(u, a.as_ptr())?,
            lda,
            w.as_ptr(),
            ldw,
            maybe_null_mut(u, c.as_mut_ptr())?,
            ldc,
        )
    };
    check(st);
    Ok(())
}

fn weights_qparams(u: &mut Unstructured<'_>, channels: usize) -> Result<(Vec<f64>, Vec<i32>)> {
    let n = if u.ratio(1, 6)? {
        u.int_in_range(0..=10)?
    } else if u.arbitrary()? {
        1
    } else {
        channels.min(64)
    };
    let hostile = u.ratio(1, 6)?;
    let mut s = Vec::with_capacity(n);
    let mut z = Vec::with_capacity(n);
    for _ in 0..n {
        s.push(if hostile {
            hostile_scale(u)?
        } else {
            scale(u, -10, -3)?
        });
        z.push(if hostile {
            hostile_zp(u)?
        } else {
            u.int_in_range(-3..=3)?
        });
    }
    Ok((s, z))
}

/// Packs a conv through the C ABI; `None` when the fuzzer cannot meet the contract.
fn pack_conv(u: &mut Unstructured<'_>) -> Result<Option<(*mut qk_weights, qk_conv2d_desc)>> {
    let groups = if u.ratio(1, 3)? {
        u.int_in_range(1..=4)?
    } else {
        1
    };
    let d = qk_conv2d_desc {
        in_channels: dim(u)?.wrapping_mul(groups),
        out_channels: dim(u)?.wrapping_mul(groups),
        kernel_h: dim(u)?.min(5),
        kernel_w: dim(u)?.min(5),
        stride_h: dim(u)?,
        stride_w: dim(u)?,
        pad_h: dim(u)?,
        pad_w: dim(u)?,
        dilation_h: dim(u)?,
        dilation_w: dim(u)?,
        groups: if u.ratio(1, 10)? { dim(u)? } else { groups },
    };
    let wlen = if d.groups == 0 || !d.in_channels.is_multiple_of(d.groups) {
        Some(1) // refused on the shape before the weights are read
    } else {
        product(&[
            d.out_channels,
            d.in_channels / d.groups,
            d.kernel_h,
            d.kernel_w,
        ])
    };
    let Buf::Call(wlen) = plan(wlen) else {
        return Ok(None);
    };
    let w = i8s(u, wlen.max(1))?;
    let (s, z) = weights_qparams(u, d.out_channels)?;
    let nwq = s.len();
    let bias: Vec<f32> = vec![0.25; d.out_channels.min(LIMIT)];
    let with_bias = u.arbitrary()? && bias.len() == d.out_channels;
    let acc = *u.choose(&[0u32, 1, 2, 3, u32::MAX])?;
    let mut h: *mut qk_weights = ptr::null_mut();
    // SAFETY: `w` holds the OIHW size, `s`/`z` `nwq` elements, `bias` `out_channels` floats.
    let st = unsafe {
        qk_weights_pack_conv2d_ex(
            &d,
            w.as_ptr(),
            s.as_ptr(),
            z.as_ptr(),
            nwq,
            if with_bias {
                bias.as_ptr()
            } else {
                ptr::null()
            },
            acc,
            &mut h,
        )
    };
    check(st);
    if st == qk_status::QK_OK {
        assert!(!h.is_null());
        Ok(Some((h, d)))
    } else {
        assert!(h.is_null(), "failed pack must set *out = NULL");
        Ok(None)
    }
}

fn conv(u: &mut Unstructured<'_>) -> Result<()> {
    let Some((h, d)) = pack_conv(u)? else {
        return Ok(());
    };
    let (batch, height, width) = (dim(u)?, dim(u)?, dim(u)?);
    let (mut oh, mut ow) = (0usize, 0usize);
    // SAFETY: `h` is a live handle; the out pointers are valid.
    let st = unsafe { qk_conv2d_output_size(h, height, width, &mut oh, &mut ow) };
    check(st);
    let in_len = product(&[batch, height, width, d.in_channels]);
    let want_out = if st == qk_status::QK_OK {
        product(&[batch, oh, ow, d.out_channels])
    } else {
        Some(u.int_in_range(0..=64)?)
    };
    if let (Buf::Call(_) | Buf::Overflow, Buf::Call(ol)) = (plan(in_len), plan(want_out)) {
        let x = bytes(u, in_len.unwrap_or(1).max(1))?;
        // Sometimes a short output buffer (must be refused).
        let out_len = if u.ratio(1, 6)? {
            ol.saturating_sub(1)
        } else {
            ol
        };
        let mut out = vec![0u8; out_len.max(1)];
        let relu = u.arbitrary()?;
        let (qx, qo) = (qp(u)?, qp(u)?);
        // SAFETY: `x` holds batch·h·w·IC bytes (or that size overflows), `out` `out_len`.
        let st = unsafe {
            qk_conv2d_u8(
                h,
                x.as_ptr(),
                batch,
                height,
                width,
                qx,
                qo,
                relu,
                out.as_mut_ptr(),
                out_len,
            )
        };
        check(st);
        // A conv handle is not a linear handle.
        // SAFETY: as above; `x` holds at least one byte and `out` `out_len` bytes.
        let st = unsafe { qk_linear_u8(h, x.as_ptr(), 1, qx, qo, relu, out.as_mut_ptr(), out_len) };
        assert_ne!(st, qk_status::QK_OK, "conv handle accepted by qk_linear_u8");
        check(st);
    }
    // SAFETY: `h` came from a pack function and is freed once.
    unsafe { qk_weights_free(h) };
    Ok(())
}

fn linear(u: &mut Unstructured<'_>) -> Result<()> {
    let (inf, outf) = (dim(u)?, dim(u)?);
    let Buf::Call(wlen) = plan(product(&[inf, outf])) else {
        return Ok(());
    };
    let w = i8s(u, wlen.max(1))?;
    let (s, z) = weights_qparams(u, outf)?;
    let acc = *u.choose(&[0u32, 1, 2, 7])?;
    let mut h: *mut qk_weights = ptr::null_mut();
    // SAFETY: `w` holds in·out values, `s`/`z` `s.len()` values, no bias.
    let st = unsafe {
        qk_weights_pack_linear_ex(
            inf,
            outf,
            w.as_ptr(),
            s.as_ptr(),
            z.as_ptr(),
            s.len(),
            ptr::null(),
            acc,
            &mut h,
        )
    };
    check(st);
    if st != qk_status::QK_OK {
        return Ok(());
    }
    let m = dim(u)?;
    if let (Buf::Call(xl), Buf::Call(ol)) = (plan(product(&[m, inf])), plan(product(&[m, outf]))) {
        let x = bytes(u, xl.max(1))?;
        let out_len = if u.ratio(1, 6)? {
            ol.saturating_sub(1)
        } else {
            ol
        };
        let mut out = vec![0u8; out_len.max(1)];
        let (qx, qo) = (qp(u)?, qp(u)?);
        // SAFETY: `x` holds m·in bytes, `out` `out_len` bytes.
        let st =
            unsafe { qk_linear_u8(h, x.as_ptr(), m, qx, qo, false, out.as_mut_ptr(), out_len) };
        check(st);
        let (mut a, mut b) = (0usize, 0usize);
        // SAFETY: a linear handle is not a conv handle: must be refused.
        let st = unsafe { qk_conv2d_output_size(h, 4, 4, &mut a, &mut b) };
        assert_ne!(st, qk_status::QK_OK);
        check(st);
    }
    // SAFETY: live handle, freed once; NULL is a no-op.
    unsafe {
        qk_weights_free(h);
        qk_weights_free(ptr::null_mut());
    }
    Ok(())
}

fn pools(u: &mut Unstructured<'_>) -> Result<()> {
    let (n, h, w, c) = (dim(u)?, dim(u)?, dim(u)?, dim(u)?);
    let (k, s, p) = (dim(u)?, dim(u)?, dim(u)?);
    let (mut oh, mut ow) = (0usize, 0usize);
    // SAFETY: valid out pointers.
    let st = unsafe { qk_max_pool2d_output_size(h, w, k, s, p, &mut oh, &mut ow) };
    check(st);
    let in_len = product(&[n, h, w, c]);
    if matches!(plan(in_len), Buf::Skip) {
        return Ok(());
    }
    let x = bytes(u, in_len.unwrap_or(1).max(1))?;
    let out_len = u.int_in_range(0..=LIMIT.min(4096))?;
    let mut out = vec![0u8; out_len.max(1)];
    // SAFETY: `x` holds n·h·w·c bytes (or that overflows), `out` `out_len` bytes.
    unsafe {
        check(qk_max_pool2d_u8(
            x.as_ptr(),
            n,
            h,
            w,
            c,
            k,
            s,
            p,
            out.as_mut_ptr(),
            out_len,
        ));
        let (aoh, aow) = (dim(u)?, dim(u)?);
        let q = qp(u)?;
        check(qk_adaptive_avg_pool2d_u8(
            x.as_ptr(),
            n,
            h,
            w,
            c,
            aoh,
            aow,
            q,
            out.as_mut_ptr(),
            out_len,
        ));
    }
    Ok(())
}

/// The digits model, loaded once per process through the C ABI (the handle is never freed).
fn shared_model() -> *const qk_model {
    static MODEL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MODEL.get_or_init(|| {
        let path = std::ffi::CString::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/digits_resnet18.safetensors"
        ))
        .unwrap();
        let mut m: *mut qk_model = ptr::null_mut();
        // SAFETY: a NUL-terminated path and a valid out pointer.
        let st = unsafe { qk_model_load(path.as_ptr(), &mut m) };
        assert_eq!(st, qk_status::QK_OK, "the repository's model must load");
        m as usize
    }) as *const qk_model
}

fn model(u: &mut Unstructured<'_>) -> Result<()> {
    if u.ratio(1, 4)? {
        // Arbitrary path bytes (interior NULs cut the string short, as in C).
        let mut p: Vec<u8> = u.arbitrary::<Vec<u8>>()?.into_iter().take(64).collect();
        p.retain(|&b| b != 0);
        p.insert(0, b'/');
        let path = std::ffi::CString::new(p).unwrap();
        let mut m: *mut qk_model = ptr::null_mut();
        // SAFETY: NUL-terminated path, valid out pointer; a loaded handle is freed once.
        unsafe {
            let st = qk_model_load(path.as_ptr(), &mut m);
            check(st);
            if st == qk_status::QK_OK {
                qk_model_free(m);
            } else {
                assert!(m.is_null());
            }
        }
        return Ok(());
    }
    let m = shared_model();
    // SAFETY: a live handle.
    let (classes, channels) = unsafe { (qk_model_num_classes(m), qk_model_input_channels(m)) };
    let (batch, h, w) = (dim(u)?.min(2), dim(u)?, dim(u)?);
    let Buf::Call(in_len) = plan(product(&[batch, channels, h, w])) else {
        return Ok(());
    };
    if h > 24 || w > 24 {
        return Ok(()); // keep runs fast; size limits are covered by the Rust tests
    }
    let x: Vec<f32> = bytes(u, in_len.max(1))?
        .into_iter()
        .map(|b| f32::from(b) / 64.0 - 2.0)
        .collect();
    let want = batch * classes;
    let logits_len = if u.ratio(1, 6)? {
        u.int_in_range(0..=want + 2)?
    } else {
        want
    };
    let mut logits = vec![0f32; logits_len.max(1)];
    let mut logits_q = vec![0u8; logits_len.max(1)];
    let null_model = u.ratio(1, 16)?;
    let mh = if null_model { ptr::null() } else { m };
    // SAFETY: `x` holds batch·C·h·w floats, the logits buffers `logits_len` elements.
    unsafe {
        let st = qk_model_run(mh, x.as_ptr(), batch, h, w, logits.as_mut_ptr(), logits_len);
        check(st);
        let stq = qk_model_run_quantized(
            mh,
            x.as_ptr(),
            batch,
            h,
            w,
            logits_q.as_mut_ptr(),
            logits_len,
        );
        check(stq);
        assert_eq!(st, stq, "run and run_quantized disagree on validity");
    }
    Ok(())
}
