//! Every golden op case through the public API on **every ISA this CPU supports**, byte for
//! byte, in every accumulation mode that applies.

mod common;

use common::*;
use qkernels::conv::{Conv2d, ConvOptions};
use qkernels::gemm::{GemmOptions, PackedWeights};
use qkernels::{Accumulation, Isa, QParams, WeightQParams, ops};

struct Api(Isa);

impl Backend for Api {
    fn quantize_u8(&self, x: &[f32], q: QParams) -> Vec<u8> {
        let mut y = vec![0; x.len()];
        ops::quantize_u8_with_isa(self.0, x, q, &mut y).unwrap();
        y
    }
    fn quantize_i8(&self, x: &[f32], q: QParams) -> Vec<i8> {
        let mut y = vec![0; x.len()];
        ops::quantize_i8_with_isa(self.0, x, q, &mut y).unwrap();
        y
    }
    fn dequantize_u8(&self, x: &[u8], q: QParams) -> Vec<f32> {
        let mut y = vec![0.0; x.len()];
        ops::dequantize_u8_with_isa(self.0, x, q, &mut y).unwrap();
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
        let mut y = vec![0; a.len()];
        ops::add_u8_with_isa(self.0, a, qa, b, qb, out, relu, &mut y).unwrap();
        y
    }
    fn conv2d(
        &self,
        geo: &qkernels::Conv2dGeometry,
        x: &[u8],
        xq: QParams,
        w: &[i8],
        wq: &WeightQParams,
        bias: Option<&[f32]>,
        outq: QParams,
        relu: bool,
        mode: Accumulation,
    ) -> Vec<u8> {
        let params = qkernels::conv::Conv2dParams {
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
        };
        let opts = ConvOptions {
            isa: self.0,
            accumulation: mode,
        };
        let conv = Conv2d::with_options(params, w, wq, bias, &opts).unwrap();
        let mut y = vec![0; geo.batch * geo.out_h() * geo.out_w() * geo.out_c];
        conv.run(x, geo.batch, geo.in_h, geo.in_w, xq, outq, relu, &mut y)
            .unwrap();
        y
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
        let opts = GemmOptions {
            isa: self.0,
            saturate_pairs: mode == Accumulation::SaturateAll,
        };
        let pw = PackedWeights::with_options(w, n, k, wq, bias, &opts).unwrap();
        let mut y = vec![0; m * n];
        qkernels::gemm::linear(&pw, x, m, xq, outq, relu, &mut y).unwrap();
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
        let (oh, ow) = ops::pool_output_size(h, w, p).unwrap();
        let mut y = vec![0; n * oh * ow * c];
        let got = ops::max_pool2d_u8_with_isa(self.0, x, n, h, w, c, p, &mut y).unwrap();
        assert_eq!(got, (oh, ow));
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
        ops::adaptive_avg_pool2d_u8_with_isa(self.0, x, n, h, w, c, oh, ow, q, &mut y).unwrap();
        y
    }
}

#[test]
fn every_golden_case_on_every_supported_isa() {
    qkernels::isa::require_from_env().expect("QKERNELS_REQUIRE_ISA");
    let g = Golden::load();
    let isas = Isa::supported();
    for &isa in &isas {
        let checked = check_all(&g, &Api(isa), isa.name());
        println!("golden/api/{isa}: {checked} case×mode checks, all bytes equal");
    }
    println!("golden/api: ISAs checked: {isas:?}");
}
