//! `ops_vs_ref`: quantize (u8/i8, any f32 bit pattern including NaN, ±inf, subnormals and
//! huge values), dequantize, add / add_relu (lengths around the 64-element vector/tail
//! boundary), max_pool2d and adaptive_avg_pool2d on every supported ISA against
//! `qkernels-ref`, byte for byte (float outputs compared by bits); hostile arguments must give
//! `Err`, never a panic.

use crate::input::*;
use arbitrary::{Result, Unstructured};
use qkernels::{Isa, Pool2d, QParams, ops, reference};

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = match u.int_in_range(0u8..=11).unwrap_or(0) {
        0..=2 => quantize(&mut u),
        3 => dequantize(&mut u),
        4..=6 => add(&mut u),
        7 | 8 => max_pool(&mut u),
        9 | 10 => avg_pool(&mut u),
        _ => hostile(&mut u),
    };
}

fn len(u: &mut Unstructured<'_>) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 => u.int_in_range(0..=8)?,
        1 => 64 * u.int_in_range(0..=4)? + u.int_in_range(0..=2)?,
        _ => u.int_in_range(0..=300)?,
    })
}

fn floats(u: &mut Unstructured<'_>, n: usize) -> Result<Vec<f32>> {
    let raw = u.ratio(1, 3)?;
    let mut x = Vec::with_capacity(n);
    for _ in 0..n {
        x.push(if raw {
            f32::from_bits(u.arbitrary()?)
        } else {
            match u.int_in_range(0u8..=15)? {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                3 => f32::MAX,
                4 => f32::MIN_POSITIVE / 2.0,
                5 => 2147483520.0,
                // Exact halves: the round-half-to-even ties.
                6 => f32::from(u.int_in_range(-600i16..=600)?) * 0.5,
                _ => f32::from(u.int_in_range(-30000i16..=30000)?) / 128.0,
            }
        });
    }
    Ok(x)
}

fn quantize(u: &mut Unstructured<'_>) -> Result<()> {
    let n = len(u)?;
    let x = floats(u, n)?;
    let qu = QParams::new(scale(u, -30, 20)?, u.int_in_range(0..=255)?);
    let qi = QParams::new(scale(u, -30, 20)?, u.int_in_range(-128..=127)?);
    let want_u = reference::quantize_u8(&x, qu);
    let want_i = reference::quantize_i8(&x, qi);
    for isa in Isa::supported() {
        let mut yu = vec![0u8; n];
        ops::quantize_u8_with_isa(isa, &x, qu, &mut yu).expect("valid quantize_u8");
        assert_eq!(yu, want_u, "quantize_u8 {isa} {qu:?}");
        let mut yi = vec![0i8; n];
        ops::quantize_i8_with_isa(isa, &x, qi, &mut yi).expect("valid quantize_i8");
        assert_eq!(yi, want_i, "quantize_i8 {isa} {qi:?}");
    }
    Ok(())
}

fn dequantize(u: &mut Unstructured<'_>) -> Result<()> {
    let n = len(u)?;
    let x = bytes(u, n)?;
    let q = QParams::new(scale(u, -30, 20)?, u.int_in_range(0..=255)?);
    let want: Vec<u32> = reference::dequantize_u8(&x, q)
        .iter()
        .map(|v| v.to_bits())
        .collect();
    for isa in Isa::supported() {
        let mut y = vec![0f32; n];
        ops::dequantize_u8_with_isa(isa, &x, q, &mut y).expect("valid dequantize");
        let got: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "dequantize_u8 {isa} {q:?}");
    }
    Ok(())
}

fn add(u: &mut Unstructured<'_>) -> Result<()> {
    let n = len(u)?;
    let a = bytes(u, n)?;
    let b = bytes(u, n)?;
    let qa = qparams_u8(u, -10, 2)?;
    let qb = qparams_u8(u, -10, 2)?;
    let qo = qparams_u8(u, -10, 2)?;
    let relu = u.arbitrary()?;
    let want = reference::add(&a, qa, &b, qb, qo, relu);
    for isa in Isa::supported() {
        let mut y = vec![0u8; n];
        ops::add_u8_with_isa(isa, &a, qa, &b, qb, qo, relu, &mut y).expect("valid add");
        assert_eq!(y, want, "add {isa} n={n} relu={relu}");
    }
    Ok(())
}

fn nhwc(u: &mut Unstructured<'_>) -> Result<(usize, usize, usize, usize)> {
    Ok((
        u.int_in_range(1..=2)?,
        u.int_in_range(1..=12)?,
        u.int_in_range(1..=12)?,
        u.int_in_range(1..=70)?,
    ))
}

fn max_pool(u: &mut Unstructured<'_>) -> Result<()> {
    let (n, h, w, c) = nhwc(u)?;
    let kernel_h = u.int_in_range(1..=4)?;
    let kernel_w = u.int_in_range(1..=4)?;
    let p = Pool2d {
        kernel_h,
        kernel_w,
        stride_h: u.int_in_range(1..=3)?,
        stride_w: u.int_in_range(1..=3)?,
        pad_h: u.int_in_range(0..=kernel_h / 2)?,
        pad_w: u.int_in_range(0..=kernel_w / 2)?,
        dilation_h: u.int_in_range(1..=2)?,
        dilation_w: u.int_in_range(1..=2)?,
    };
    let x = bytes(u, n * h * w * c)?;
    let Ok((oh, ow)) = ops::pool_output_size(h, w, &p) else {
        return Ok(());
    };
    let (want, roh, row) = reference::max_pool2d_nhwc(&x, n, h, w, c, &p);
    assert_eq!((oh, ow), (roh, row));
    for isa in Isa::supported() {
        let mut y = vec![0x5Au8; want.len() + 5];
        let got =
            ops::max_pool2d_u8_with_isa(isa, &x, n, h, w, c, &p, &mut y).expect("valid max_pool2d");
        assert_eq!(got, (oh, ow));
        assert_eq!(&y[..want.len()], &want[..], "max_pool2d {isa} {p:?}");
        assert!(
            y[want.len()..].iter().all(|&b| b == 0x5A),
            "max_pool2d wrote past its output"
        );
    }
    Ok(())
}

fn avg_pool(u: &mut Unstructured<'_>) -> Result<()> {
    let (n, h, w, c) = nhwc(u)?;
    let oh = u.int_in_range(1..=h)?;
    let ow = u.int_in_range(1..=w)?;
    let q = qparams_u8(u, -10, 2)?;
    let x = bytes(u, n * h * w * c)?;
    let want = reference::adaptive_avg_pool2d_nhwc(&x, n, h, w, c, oh, ow, q.zero_point);
    for isa in Isa::supported() {
        let mut y = vec![0x5Au8; want.len() + 5];
        ops::adaptive_avg_pool2d_u8_with_isa(isa, &x, n, h, w, c, oh, ow, q, &mut y)
            .expect("valid adaptive_avg_pool2d");
        assert_eq!(&y[..want.len()], &want[..], "adaptive_avg_pool2d {isa}");
        assert!(y[want.len()..].iter().all(|&b| b == 0x5A));
    }
    Ok(())
}

fn hostile(u: &mut Unstructured<'_>) -> Result<()> {
    let isa = any_isa(u)?;
    let (qa, qb, qo) = (
        hostile_qparams(u)?,
        hostile_qparams(u)?,
        hostile_qparams(u)?,
    );
    let nx = hostile_len(u, 256)?;
    let x = floats(u, nx)?;
    let a = hostile_bytes(u, 256)?;
    let b = hostile_bytes(u, 256)?;
    let n_yu = hostile_len(u, 256)?;
    let mut yu = vec![0u8; n_yu];
    let n_yi = hostile_len(u, 256)?;
    let mut yi = vec![0i8; n_yi];
    let n_yf = hostile_len(u, 256)?;
    let mut yf = vec![0f32; n_yf];
    let _ = ops::quantize_u8_with_isa(isa, &x, qa, &mut yu);
    let _ = ops::quantize_i8_with_isa(isa, &x, qa, &mut yi);
    let _ = ops::dequantize_u8_with_isa(isa, &a, qa, &mut yf);
    let _ = ops::add_u8_with_isa(isa, &a, qa, &b, qb, qo, u.arbitrary()?, &mut yu);
    let p = Pool2d {
        kernel_h: hostile_dim(u)?,
        kernel_w: hostile_dim(u)?,
        stride_h: hostile_dim(u)?,
        stride_w: hostile_dim(u)?,
        pad_h: hostile_dim(u)?,
        pad_w: hostile_dim(u)?,
        dilation_h: hostile_dim(u)?,
        dilation_w: hostile_dim(u)?,
    };
    let (n, h, w, c) = (
        hostile_dim(u)?,
        hostile_dim(u)?,
        hostile_dim(u)?,
        hostile_dim(u)?,
    );
    let _ = ops::pool_output_size(h, w, &p);
    let _ = ops::max_pool2d_u8_with_isa(isa, &a, n, h, w, c, &p, &mut yu);
    let (oh, ow) = (hostile_dim(u)?, hostile_dim(u)?);
    let _ = ops::adaptive_avg_pool2d_u8_with_isa(isa, &a, n, h, w, c, oh, ow, qa, &mut yu);
    Ok(())
}
