//! Per-layer profile of the synthetic int8 ResNet-18 that tolerates a loaded machine: each
//! layer's **minimum** and median time over the iterations (a preemption lands in one layer
//! of one iteration and inflates a mean, not a minimum), with the layer's MACs.
//!
//! `cargo run --release --example layer_profile -- [ISA] [THREADS] [BATCH] [ITERS] [SIZE]`
//! (defaults: best ISA, 1 thread, batch 1, 50 iterations, 224). Prints JSON lines.

use qkernels::resnet18::{Model, ModelOptions, Workspace};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let isa = args
        .first()
        .map(|s| s.parse().expect("ISA"))
        .unwrap_or_else(qkernels::active_isa);
    let arg = |i: usize, d: usize| -> usize {
        args.get(i).map(|s| s.parse().expect("number")).unwrap_or(d)
    };
    let (threads, batch, iters, size) = (arg(1, 1), arg(2, 1), arg(3, 50), arg(4, 224));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon pool");
    // QKERNELS_PROFILE_MODEL=file.safetensors profiles a real model (e.g. the one
    // tools/compare.py exports) instead of the synthetic one.
    let model = match std::env::var("QKERNELS_PROFILE_MODEL") {
        Ok(path) => qkernels::resnet18::Model::load_with(&path, &ModelOptions::for_isa(isa))
            .expect("model file"),
        Err(_) => Model::synthetic(1000, (size, size), 42, &ModelOptions::for_isa(isa))
            .expect("synthetic model"),
    };
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let x: Vec<f32> = (0..batch * 3 * size * size)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    let macs = model.layer_macs(batch, size, size).expect("layer MACs");
    let mut ws = Workspace::new();
    let mut logits = vec![0f32; batch * model.num_classes()];
    let mut per: Vec<Vec<f64>> = vec![Vec::with_capacity(iters); macs.len()];
    let mut totals = Vec::with_capacity(iters);
    pool.install(|| {
        model
            .run_with(&mut ws, &x, batch, size, size, &mut logits)
            .expect("warm-up");
        for _ in 0..iters {
            let t0 = Instant::now();
            let mut last = t0;
            let mut i = 0;
            model
                .run_profiled(&mut ws, &x, batch, size, size, &mut |_| {
                    let now = Instant::now();
                    per[i].push((now - last).as_secs_f64() * 1e3);
                    last = now;
                    i += 1;
                })
                .expect("run");
            totals.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    });
    let stat = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2])
    };
    let (tmin, tmed) = stat(&mut totals);
    println!(
        "{{\"isa\":\"{isa}\",\"threads\":{threads},\"batch\":{batch},\"size\":{size},\"iters\":{iters},\"total_min_ms\":{tmin:.4},\"total_median_ms\":{tmed:.4}}}"
    );
    for ((name, m), v) in macs.iter().zip(per.iter_mut()) {
        let (mn, md) = stat(v);
        println!("{{\"name\":\"{name}\",\"macs\":{m},\"min_ms\":{mn:.4},\"median_ms\":{md:.4}}}");
    }
}
