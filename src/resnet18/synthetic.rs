//! A random-weight ResNet-18 (for benchmarks without a model file): the real architecture and
//! layer shapes, deterministic pseudo-random i8 weights, per-channel scales of the size
//! post-training quantization produces, and activation scales that keep the values in range.

use super::Metadata;
use super::model::{RawBlock, RawConv, RawModel, WIDTHS, block_layout};
use crate::{QParams, WeightQParams};
use std::collections::BTreeMap;

/// splitmix64: small, deterministic, good enough for benchmark weights.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn conv(rng: &mut Rng, name: &str, shape: [usize; 4], relu: bool) -> RawConv {
    let [o, i, kh, kw] = shape;
    let fan_in = (i * kh * kw) as f64;
    let weight = (0..o * i * kh * kw)
        .map(|_| ((rng.next() % 255) as i32 - 127) as i8)
        .collect::<Vec<i8>>();
    // weights uniform in ±127·s with s = 1/(127·sqrt(fan_in)): unit-variance-ish outputs
    let scales = (0..o)
        .map(|_| (0.5 + rng.unit()) / (127.0 * fan_in.sqrt()))
        .collect::<Vec<f64>>();
    let bias = (0..o).map(|_| (rng.unit() as f32 - 0.5) * 0.1).collect();
    RawConv {
        name: name.to_string(),
        shape,
        weight,
        wq: WeightQParams::per_channel(scales, vec![0; o]),
        bias: Some(bias),
        out_q: if relu {
            QParams::new(0.02, 0)
        } else {
            QParams::new(0.04, 128)
        },
    }
}

/// The random model: `classes` outputs, nominal input `size`, metadata like an ImageNet export.
pub(crate) fn raw_model(classes: usize, size: (usize, usize), seed: u64) -> RawModel {
    let mut rng = Rng(seed);
    let mut raw = BTreeMap::new();
    for (k, v) in [
        ("format", super::model::FORMAT.to_string()),
        ("arch", "resnet18".into()),
        ("num_classes", classes.to_string()),
        ("input_size", format!("{},{}", size.0, size.1)),
        ("mean", "0.485,0.456,0.406".into()),
        ("std", "0.229,0.224,0.225".into()),
        (
            "note",
            "synthetic random weights (qkernels bench --synthetic)".into(),
        ),
    ] {
        raw.insert(k.to_string(), v);
    }
    let meta = Metadata::parse(raw).expect("synthetic metadata is valid");
    let conv1 = conv(&mut rng, "conv1", [WIDTHS[0], 3, 7, 7], true);
    let blocks = block_layout()
        .map(|(name, inp, out, stride, ds)| RawBlock {
            conv1: conv(&mut rng, &format!("{name}.conv1"), [out, inp, 3, 3], true),
            conv2: conv(&mut rng, &format!("{name}.conv2"), [out, out, 3, 3], false),
            downsample: ds.then(|| {
                conv(
                    &mut rng,
                    &format!("{name}.downsample.0"),
                    [out, inp, 1, 1],
                    false,
                )
            }),
            add_q: QParams::new(0.03, 0),
            name,
            stride,
        })
        .collect();
    let fc = conv(&mut rng, "fc", [classes, WIDTHS[3], 1, 1], false);
    RawModel {
        meta,
        quant: QParams::new(0.0186, 114),
        conv1,
        blocks,
        fc,
    }
}
