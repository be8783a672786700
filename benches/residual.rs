//! The residual join of ResNet-18's conv2 layers (3×3 conv → requant → add_relu), fused
//! (`Conv2d::run_add`: the add runs in the GEMM's per-tile epilogue) against the unfused
//! sequence (`Conv2d::run`, then a whole-tensor `ops::add_u8` pass), on the active ISA with 1 and
//! 2 threads.
//!
//! `cargo bench --bench residual`. The two variants alternate call by call and each call is
//! timed on its own, so machine load hits both alike; compare the minima (and medians). Every
//! fused result is checked against the unfused bytes.

use qkernels::conv::{Conv2d, Conv2dParams, ConvOptions};
use qkernels::{QParams, WeightQParams};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Deterministic pseudo-random bytes.
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 24) as u8
        })
        .collect()
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0] * 1e3, v[v.len() / 2] * 1e3)
}

fn main() {
    println!("layer,threads,unfused_min_ms,unfused_median_ms,fused_min_ms,fused_median_ms");
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("rayon pool");
        for (c, hw) in [(64usize, 56usize), (128, 28), (256, 14), (512, 7)] {
            let p = Conv2dParams::square(c, c, 3, 1, 1);
            let w: Vec<i8> = bytes(c * c * 9, 2)
                .into_iter()
                .map(|v| (v as i8) / 2)
                .collect();
            let wq = WeightQParams::per_channel(
                (0..c).map(|i| 0.002 + 1e-5 * i as f64).collect(),
                vec![0; c],
            );
            let bias: Vec<f32> = (0..c).map(|i| 0.01 * i as f32).collect();
            let conv = Conv2d::with_options(p, &w, &wq, Some(&bias), &ConvOptions::default())
                .expect("conv");
            let n = hw * hw * c;
            let x = bytes(n, 1);
            let skip = bytes(n, 3);
            // qparams of a real ResNet block (conv output, identity, add output)
            let xq = QParams::new(0.02, 10);
            let cq = QParams::new(0.009925744496285915, 75);
            let sq = QParams::new(0.02780967578291893, 61);
            let oq = QParams::new(0.03012925386428833, 56);
            let (mut y, mut z, mut f) = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
            let (mut tu, mut tf) = (Vec::new(), Vec::new());
            pool.install(|| {
                let t0 = Instant::now();
                while tu.len() < 50 || t0.elapsed() < Duration::from_secs(2) {
                    let t = Instant::now();
                    conv.run(black_box(&x), 1, hw, hw, xq, cq, false, &mut y)
                        .unwrap();
                    qkernels::ops::add_u8(&y, cq, &skip, sq, oq, true, &mut z).unwrap();
                    tu.push(t.elapsed().as_secs_f64());
                    let t = Instant::now();
                    conv.run_add(
                        black_box(&x),
                        1,
                        hw,
                        hw,
                        xq,
                        cq,
                        &skip,
                        sq,
                        oq,
                        true,
                        &mut f,
                    )
                    .unwrap();
                    tf.push(t.elapsed().as_secs_f64());
                }
            });
            assert_eq!(f, z, "fused and unfused bytes differ");
            let ((umin, umed), (fmin, fmed)) = (stats(tu), stats(tf));
            println!("3x3_{c}-{c}_{hw},{threads},{umin:.4},{umed:.4},{fmin:.4},{fmed:.4}");
        }
    }
}
