//! Requantization of i32 accumulators to u8 (fbgemm's float path).
//!
//! PyTorch's quantized conv/linear on x86 hand the corrected accumulator to fbgemm's
//! `ReQuantizeOutput` (`requantizeOutputProcessingAvx2`, used on every x86 ISA; the depthwise
//! kernel uses the same math):
//!
//! ```text
//! atws[n] = f32(in_scale) * f32(w_scale[n])          // "act_times_w_scale"
//! mult[n] = atws[n] / f32(out_scale)
//! x = f32(raw)
//! per-tensor weights + bias:  x = x + bias[n] * (1.0 / atws)    // reciprocal, then multiply
//! per-channel weights + bias: x = x + bias[n] / atws[n]         // true division
//! q = clamp(rne(x * mult[n]) + out_zp, relu ? out_zp : 0, 255)
//! ```
//!
//! Every operation is a separately rounded f32 operation: no FMA, no f64. The bias stays f32.

use crate::{QParams, WeightQParams};

/// Per-output-channel constants of the requantization, in the exact f32 form the kernels use.
#[derive(Clone, Debug, PartialEq)]
pub struct RequantParams {
    /// `mult[n] = atws[n] / f32(out_scale)`, one per output channel.
    pub mult: Vec<f32>,
    /// The bias in accumulator units, `bias[n] * (1/atws)` or `bias[n] / atws[n]`, added to
    /// `f32(raw)` before the multiplication; `None` when the layer has no bias.
    pub bias_acc: Option<Vec<f32>>,
    /// Output zero point.
    pub out_zp: i32,
    /// Lower clamp: `out_zp` with a fused ReLU, else 0.
    pub qmin: i32,
    /// Upper clamp: 255.
    pub qmax: i32,
}

impl RequantParams {
    /// Builds the constants for `n` output channels.
    pub fn new(
        n: usize,
        input: QParams,
        weight: &WeightQParams,
        bias: Option<&[f32]>,
        output: QParams,
        relu: bool,
    ) -> RequantParams {
        let in_s = input.scale_f32();
        let out_s = output.scale_f32();
        let atws: Vec<f32> = (0..n).map(|j| in_s * (weight.scale(j) as f32)).collect();
        let mult = atws.iter().map(|&a| a / out_s).collect();
        let bias_acc = bias.map(|b| {
            assert_eq!(b.len(), n, "bias length");
            if weight.per_channel {
                b.iter().zip(&atws).map(|(&bv, &a)| bv / a).collect()
            } else {
                let inv = 1.0f32 / atws[0];
                b.iter().map(|&bv| bv * inv).collect()
            }
        });
        RequantParams {
            mult,
            bias_acc,
            out_zp: output.zero_point,
            qmin: if relu {
                output.zero_point.clamp(0, 255)
            } else {
                0
            },
            qmax: 255,
        }
    }

    /// Requantizes one corrected accumulator of output channel `n`.
    pub fn apply(&self, raw: i32, n: usize) -> u8 {
        let mut x = raw as f32;
        if let Some(b) = &self.bias_acc {
            x += b[n];
        }
        let r = (x * self.mult[n]).round_ties_even() as i32;
        r.saturating_add(self.out_zp).clamp(self.qmin, self.qmax) as u8
    }
}

/// Requantizes an `m × n` matrix of corrected accumulators (row-major) to u8.
pub fn requantize_u8acc32_ref(m: usize, n: usize, raw: &[i32], p: &RequantParams) -> Vec<u8> {
    assert_eq!(raw.len(), m * n);
    raw.iter()
        .enumerate()
        .map(|(idx, &r)| p.apply(r, idx % n))
        .collect()
}
