//! Element-wise and pooling ops: quantized add / add_relu, max_pool2d, adaptive_avg_pool2d.

use crate::QParams;

/// Vector formula of `quantized::add` (AVX2 `qadd_kernel`): dequantize with
/// `fma(s, f32(q), s * f32(-zp))`.
pub fn add_element_vector(qa: u8, a: QParams, qb: u8, b: QParams, out: QParams, relu: bool) -> u8 {
    let (sa, sb) = (a.scale_f32(), b.scale_f32());
    let pa = sa * (-a.zero_point) as f32;
    let pb = sb * (-b.zero_point) as f32;
    let da = sa.mul_add(f32::from(qa), pa);
    let db = sb.mul_add(f32::from(qb), pb);
    add_finish(da, db, out, relu)
}

/// Scalar formula of `quantized::add` (the tail): dequantize with `s * f32(q - zp)`.
pub fn add_element_scalar(qa: u8, a: QParams, qb: u8, b: QParams, out: QParams, relu: bool) -> u8 {
    let da = a.scale_f32() * (i32::from(qa) - a.zero_point) as f32;
    let db = b.scale_f32() * (i32::from(qb) - b.zero_point) as f32;
    add_finish(da, db, out, relu)
}

fn add_finish(da: f32, db: f32, out: QParams, relu: bool) -> u8 {
    let inv = 1.0f32 / out.scale_f32();
    let mut c = da + db;
    if relu {
        c = c.max(0.0);
    }
    let r = (c * inv).round_ties_even() as i32;
    r.saturating_add(out.zero_point).clamp(0, 255) as u8
}

/// `quantized::add` / `add_relu` on two same-shape contiguous tensors, one thread:
/// elements `i < 64·⌊n/64⌋` take the vector formula, the rest the scalar one.
pub fn add(a: &[u8], qa: QParams, b: &[u8], qb: QParams, out: QParams, relu: bool) -> Vec<u8> {
    add_threads(a, qa, b, qb, out, relu, 1)
}

/// `quantized::add` as PyTorch computes it with `threads` intra-op threads: for `n >= 32768`
/// and `threads > 1` the range is split by `at::parallel_for` (grain 32768) into
/// `t = min(threads, ⌈n/32768⌉)` chunks of `⌈n/t⌉` elements, each with its own scalar tail.
pub fn add_threads(
    a: &[u8],
    qa: QParams,
    b: &[u8],
    qb: QParams,
    out: QParams,
    relu: bool,
    threads: usize,
) -> Vec<u8> {
    assert_eq!(a.len(), b.len(), "add: operand lengths");
    let n = a.len();
    const GRAIN: usize = 32768;
    let chunk = if threads > 1 && n >= GRAIN {
        let t = threads.min(n.div_ceil(GRAIN));
        n.div_ceil(t)
    } else {
        n.max(1)
    };
    let mut y = Vec::with_capacity(n);
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let vec_end = start + (end - start) / 64 * 64;
        for i in start..end {
            y.push(if i < vec_end {
                add_element_vector(a[i], qa, b[i], qb, out, relu)
            } else {
                add_element_scalar(a[i], qa, b[i], qb, out, relu)
            });
        }
    }
    y
}

/// Parameters of a 2-D pooling window (floor mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
}

impl Pool2d {
    /// Square kernel, stride and padding, dilation 1.
    pub fn square(kernel: usize, stride: usize, pad: usize) -> Pool2d {
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
}

/// max_pool2d over NHWC `[n, h, w, c]` u8: integer max of the window clipped to the input
/// (padding never wins). Returns `(out, oh, ow)`, out NHWC. Output qparams = input qparams.
pub fn max_pool2d_nhwc(
    x: &[u8],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    p: &Pool2d,
) -> (Vec<u8>, usize, usize) {
    assert_eq!(x.len(), n * h * w * c);
    let oh = crate::conv::out_extent(h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
    let ow = crate::conv::out_extent(w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
    let mut out = vec![0u8; n * oh * ow * c];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut m = 0u8;
                    for ky in 0..p.kernel_h {
                        for kx in 0..p.kernel_w {
                            let iy =
                                (oy * p.stride_h + ky * p.dilation_h) as isize - p.pad_h as isize;
                            let ix =
                                (ox * p.stride_w + kx * p.dilation_w) as isize - p.pad_w as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                m = m.max(x[((b * h + iy as usize) * w + ix as usize) * c + ch]);
                            }
                        }
                    }
                    out[((b * oh + oy) * ow + ox) * c + ch] = m;
                }
            }
        }
    }
    (out, oh, ow)
}

/// Start and end (exclusive) of adaptive pooling window `o` of `out` over `input`:
/// `[⌊o·I/O⌋, ⌈(o+1)·I/O⌉)`.
pub fn adaptive_window(o: usize, input: usize, out: usize) -> (usize, usize) {
    (o * input / out, ((o + 1) * input).div_ceil(out))
}

/// adaptive_avg_pool2d over NHWC `[n, h, w, c]` u8 with PyTorch's NHWC formula:
/// `q = clamp(rne(f32(S − zp·size) · (1 / f32(size))) + zp, 0, 255)`, `S = Σ q` over the window.
/// Output NHWC `[n, oh, ow, c]`, qparams = input qparams.
#[allow(clippy::too_many_arguments)]
pub fn adaptive_avg_pool2d_nhwc(
    x: &[u8],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
    zero_point: i32,
) -> Vec<u8> {
    assert_eq!(x.len(), n * h * w * c);
    let mut out = vec![0u8; n * oh * ow * c];
    for b in 0..n {
        for oy in 0..oh {
            let (y0, y1) = adaptive_window(oy, h, oh);
            for ox in 0..ow {
                let (x0, x1) = adaptive_window(ox, w, ow);
                let size = ((y1 - y0) * (x1 - x0)) as i32;
                let inv = 1.0f32 / size as f32;
                for ch in 0..c {
                    let mut s = 0i32;
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            s += i32::from(x[((b * h + iy) * w + ix) * c + ch]);
                        }
                    }
                    let centred = s.wrapping_sub(zero_point.wrapping_mul(size));
                    let r = (centred as f32 * inv).round_ties_even() as i32;
                    out[((b * oh + oy) * ow + ox) * c + ch] =
                        r.saturating_add(zero_point).clamp(0, 255) as u8;
                }
            }
        }
    }
    out
}
