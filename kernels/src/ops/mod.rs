//! Element-wise and pooling kernels of an int8 CNN (NHWC): quantize, dequantize, add /
//! add_relu, max_pool2d, adaptive_avg_pool2d.
//!
//! # Why this shape
//!
//! * **Bit-exactness is the contract.** Every kernel reproduces `qkernels_ref` byte for byte, so
//!   each float formula is spelled out once here (the `*_elem` functions) and the SIMD versions
//!   perform exactly the same separately-rounded operations lane by lane (`vmulps`, `vroundps`
//!   /`vcvtps2dq` with round-half-even, a *fused* `vfmadd` where PyTorch's vector path fuses).
//! * **quantized add has two formulas.** PyTorch's one-thread `qadd_kernel` dequantizes elements
//!   below `64·⌊n/64⌋` with `fma(s, f32(q), s·f32(−zp))` and the tail with `s·f32(q − zp)`. The
//!   kernels take `vec_len` (how many leading elements use the vector formula) so a caller can
//!   apply the rule on a *global* index while processing a sub-range (fused residual epilogue).
//! * **Pools put channels in lanes.** NHWC makes each tap of a window a contiguous run of `C`
//!   bytes, so a window is reduced with full-width `vpmaxub` / widening adds over channels, and
//!   the tap loop stays scalar. The loops are shared ([`body`]); each ISA supplies the row
//!   primitives as `#[inline(always)]` helpers, inlined into its `#[target_feature]` entry point.
//! * **Conversion guards.** `vcvtps2dq` returns `i32::MIN` for out-of-range values, where the
//!   reference saturates; every SIMD path clamps in float first to a range where both agree.
//!
//! Module per ISA: [`scalar`] (portable; also what `Isa::Scalar` runs), `x86_avx2`,
//! `x86_avx512`, and `arm_neon` (the portable bodies compiled with NEON enabled; aarch64 has a
//! fused `fmla`, and `f32::mul_add` lowers to it).

pub(crate) mod body;
pub mod scalar;

#[cfg(target_arch = "aarch64")]
pub mod arm_neon;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx512;

/// Constants of `quantized::add` / `add_relu` in the exact f32 form the kernels use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddParams {
    /// `f32(scale_a)`.
    pub sa: f32,
    /// `f32(scale_b)`.
    pub sb: f32,
    /// `sa · f32(−zp_a)` (vector formula's addend).
    pub pa: f32,
    /// `sb · f32(−zp_b)`.
    pub pb: f32,
    /// Zero point of `a` (scalar formula).
    pub zpa: i32,
    /// Zero point of `b`.
    pub zpb: i32,
    /// `1 / f32(out_scale)`.
    pub inv_out: f32,
    /// Output zero point (0..=255).
    pub out_zp: i32,
    /// Fused ReLU (clamp the float sum at 0 before quantizing).
    pub relu: bool,
}

impl AddParams {
    /// Builds the constants from f32 scales and zero points (zero points in 0..=255).
    pub fn new(
        sa: f32,
        zpa: i32,
        sb: f32,
        zpb: i32,
        out_scale: f32,
        out_zp: i32,
        relu: bool,
    ) -> Self {
        AddParams {
            sa,
            sb,
            pa: sa * (-zpa) as f32,
            pb: sb * (-zpb) as f32,
            zpa,
            zpb,
            inv_out: 1.0f32 / out_scale,
            out_zp,
            relu,
        }
    }

    /// Whether `|(da + db) · inv_out| < 2³⁰` for every pair of u8 inputs (true for any sane
    /// qparams): then the kernels' ±65536 guard before `vcvtps2dq` cannot change a result (the
    /// rounded value plus the zero point fits i32, and anything beyond ±65536 clamps to the same
    /// byte), so a fused epilogue may drop it. Bounds in f64 with a 0.1 % margin for the f32
    /// roundings; NaN or infinite constants give `false`.
    pub fn conversion_in_range(&self) -> bool {
        let sa = f64::from(self.sa).abs() * 255.0 + f64::from(self.pa).abs();
        let sb = f64::from(self.sb).abs() * 255.0 + f64::from(self.pb).abs();
        let bound = (sa + sb) * f64::from(self.inv_out).abs() * 1.001;
        bound < f64::from(1u32 << 30)
    }

    /// Vector formula of one element (fused multiply-add dequantization).
    #[inline(always)]
    pub fn vector_elem(&self, qa: u8, qb: u8) -> u8 {
        let da = self.sa.mul_add(f32::from(qa), self.pa);
        let db = self.sb.mul_add(f32::from(qb), self.pb);
        self.finish(da, db)
    }

    /// Scalar (tail) formula of one element.
    #[inline(always)]
    pub fn scalar_elem(&self, qa: u8, qb: u8) -> u8 {
        let da = self.sa * (i32::from(qa) - self.zpa) as f32;
        let db = self.sb * (i32::from(qb) - self.zpb) as f32;
        self.finish(da, db)
    }

    #[inline(always)]
    fn finish(&self, da: f32, db: f32) -> u8 {
        let mut c = da + db;
        if self.relu {
            c = c.max(0.0);
        }
        let r = (c * self.inv_out).round_ties_even() as i32;
        r.saturating_add(self.out_zp).clamp(0, 255) as u8
    }
}

/// One element of per-tensor quantize: `clamp(rne(min(x·inv, 2147483520)) + zp, qmin, qmax)`
/// with saturating conversion (NaN → the `min` bound, as `f32::min` drops NaN).
#[inline(always)]
pub fn quantize_elem(x: f32, inv: f32, zp: i32, qmin: i32, qmax: i32) -> i32 {
    let t = (x * inv).min(2147483520.0);
    (t.round_ties_even() as i32)
        .saturating_add(zp)
        .clamp(qmin, qmax)
}

/// One element of per-tensor dequantize: `scale · f32(q − zp)`.
#[inline(always)]
pub fn dequantize_elem(q: u8, scale: f32, zp: i32) -> f32 {
    scale * (i32::from(q) - zp) as f32
}

/// One output of adaptive average pooling from its window sum `s` over `size` taps:
/// `clamp(rne(f32(s − zp·size) · (1/f32(size))) + zp, 0, 255)`.
#[inline(always)]
pub fn avg_finish_elem(s: i32, size: i32, inv: f32, zp: i32) -> u8 {
    let centred = s.wrapping_sub(zp.wrapping_mul(size));
    let r = (centred as f32 * inv).round_ties_even() as i32;
    r.saturating_add(zp).clamp(0, 255) as u8
}

/// A pooling window (floor mode): kernel, stride, padding, dilation per axis, plus the input
/// and output geometry of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub oh: usize,
    pub ow: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
}

impl PoolGeometry {
    /// Input elements `n·h·w·c`.
    pub fn in_len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }
    /// Output elements `n·oh·ow·c`.
    pub fn out_len(&self) -> usize {
        self.n * self.oh * self.ow * self.c
    }
}
