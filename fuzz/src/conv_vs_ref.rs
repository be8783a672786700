//! `conv_vs_ref`: `Conv2d` (im2col and direct 1×1 paths, grouped, depthwise, dilated, strided,
//! padded; exact and both saturating accumulation modes) on every supported ISA against
//! `qkernels-ref`'s `conv2d_nhwc`, byte for byte; hostile geometry and arguments must give
//! `Err`, never a panic.

use crate::input::*;
use arbitrary::{Result, Unstructured};
use qkernels::conv::{Conv2d, Conv2dParams, ConvOptions};
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
    let (groups, icg, ocg) = match u.int_in_range(0u8..=3)? {
        // Depthwise, including shapes that take fbgemm's saturating depthwise kernel.
        0 => (
            *u.choose(&[1usize, 3, 8, 16])?,
            1,
            u.int_in_range(1usize..=2)?,
        ),
        1 => (
            u.int_in_range(2usize..=4)?,
            u.int_in_range(1usize..=6)?,
            u.int_in_range(1usize..=6)?,
        ),
        _ => (
            1,
            u.int_in_range(1usize..=24)?,
            u.int_in_range(1usize..=24)?,
        ),
    };
    let kernel_h = u.int_in_range(1usize..=5)?;
    let kernel_w = if u.ratio(3, 4)? {
        kernel_h
    } else {
        u.int_in_range(1usize..=5)?
    };
    let stride_h = u.int_in_range(1usize..=3)?;
    let stride_w = if u.ratio(3, 4)? {
        stride_h
    } else {
        u.int_in_range(1usize..=3)?
    };
    let (dilation_h, dilation_w) = if u.ratio(1, 5)? {
        (u.int_in_range(1usize..=3)?, u.int_in_range(1usize..=3)?)
    } else {
        (1, 1)
    };
    let (pad_h, pad_w) = if u.ratio(1, 2)? {
        ((kernel_h - 1) / 2, (kernel_w - 1) / 2)
    } else {
        (u.int_in_range(0usize..=3)?, u.int_in_range(0usize..=3)?)
    };
    let params = Conv2dParams {
        in_channels: groups * icg,
        out_channels: groups * ocg,
        kernel_h,
        kernel_w,
        stride_h,
        stride_w,
        pad_h,
        pad_w,
        dilation_h,
        dilation_w,
        groups,
    };
    let batch = u.int_in_range(1usize..=3)?;
    let h = u.int_in_range(1usize..=11)?;
    let w = u.int_in_range(1usize..=11)?;
    let Ok((oh, ow)) = params.output_size(h, w) else {
        return Ok(()); // no output: covered by the hostile half
    };
    let accumulation = *u.choose(&[
        Accumulation::Exact,
        Accumulation::SaturateDepthwise,
        Accumulation::SaturateAll,
    ])?;
    let relu = u.arbitrary()?;
    let x_q = qparams_u8(u, -8, 0)?;
    let wq = weight_qparams(u, params.out_channels)?;
    let bias = bias(u, params.out_channels)?;
    let out_q = qparams_u8(u, -10, 2)?;
    let x = bytes(u, batch * h * w * params.in_channels)?;
    let wt = i8s(u, params.out_channels * icg * kernel_h * kernel_w)?;

    let geo = params.geometry(batch, h, w);
    let want = reference::conv2d_nhwc(
        &geo,
        &x,
        x_q,
        &wt,
        &wq,
        bias.as_deref(),
        out_q,
        relu,
        accumulation,
    );
    let n_out = batch * oh * ow * params.out_channels;
    assert_eq!(want.len(), n_out);
    for isa in Isa::supported() {
        let opts = ConvOptions { isa, accumulation };
        let conv = Conv2d::with_options(params, &wt, &wq, bias.as_deref(), &opts)
            .expect("valid conv must pack");
        // A longer output buffer: the bytes past the result must stay untouched.
        let mut out = vec![0xA5u8; n_out + 7];
        conv.run(&x, batch, h, w, x_q, out_q, relu, &mut out)
            .expect("valid conv must run");
        assert_eq!(
            &out[..n_out],
            &want[..],
            "conv {isa} {params:?} {batch}x{h}x{w} {accumulation:?}"
        );
        assert!(
            out[n_out..].iter().all(|&b| b == 0xA5),
            "conv wrote past its output"
        );
    }
    Ok(())
}

fn hostile(u: &mut Unstructured<'_>) -> Result<()> {
    let params = Conv2dParams {
        in_channels: hostile_dim(u)?,
        out_channels: hostile_dim(u)?,
        kernel_h: hostile_dim(u)?,
        kernel_w: hostile_dim(u)?,
        stride_h: hostile_dim(u)?,
        stride_w: hostile_dim(u)?,
        pad_h: hostile_dim(u)?,
        pad_w: hostile_dim(u)?,
        dilation_h: hostile_dim(u)?,
        dilation_w: hostile_dim(u)?,
        groups: hostile_dim(u)?,
    };
    let (batch, h, w) = (hostile_dim(u)?, hostile_dim(u)?, hostile_dim(u)?);
    let _ = params.validate();
    let _ = params.output_size(h, w);
    let opts = ConvOptions {
        isa: any_isa(u)?,
        accumulation: *u.choose(&[
            Accumulation::Exact,
            Accumulation::SaturateDepthwise,
            Accumulation::SaturateAll,
        ])?,
    };
    let wq = if u.arbitrary()? {
        hostile_weight_qparams(u)?
    } else {
        weight_qparams(u, params.out_channels.min(64))?
    };
    let wt = hostile_i8s(u, 512)?;
    let bias: Option<Vec<f32>> = if u.arbitrary()? {
        Some(hostile_f32s(u, 64, 1.0)?)
    } else {
        None
    };
    let (x_q, out_q) = (hostile_qparams(u)?, hostile_qparams(u)?);
    let x = hostile_bytes(u, 1024)?;
    let n_out = hostile_len(u, 1024)?;
    let mut out = vec![0u8; n_out];
    if let Ok(conv) = Conv2d::with_options(params, &wt, &wq, bias.as_deref(), &opts) {
        let _ = conv.output_size(h, w);
        let _ = conv.run(&x, batch, h, w, x_q, out_q, u.arbitrary()?, &mut out);
    }
    Ok(())
}
