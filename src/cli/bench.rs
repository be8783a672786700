//! `qkernels bench`: latency (median, min), throughput and a per-layer time table.

use super::{ModelArg, load};
use clap::Args;
use qkernels::resnet18::{Model, ModelOptions, Workspace};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Random-weight ResNet-18 (1000 classes, 224×224): no model file needed.
    #[arg(long, conflicts_with = "model")]
    synthetic: bool,
    /// Images per inference.
    #[arg(long, default_value_t = 1, value_name = "N")]
    batch: usize,
    /// Input size `H,W` (default: the model's nominal input size).
    #[arg(long, value_name = "H,W")]
    size: Option<String>,
    /// Timed iterations (after the warm-up runs).
    #[arg(long, default_value_t = 20, value_name = "K")]
    iters: usize,
    /// Untimed warm-up runs first (at least 1: the first sizes the workspace and faults its pages
    /// in; the next ones let caches, branch predictors and the clock settle — tools/compare.py
    /// gives every engine 3).
    #[arg(long, default_value_t = 3, value_name = "N")]
    warmup: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("--size {s:?}: expected H,W (e.g. 224,224)");
    let (h, w) = s.split_once(',').ok_or_else(bad)?;
    let h: usize = h.trim().parse().map_err(|_| bad())?;
    let w: usize = w.trim().parse().map_err(|_| bad())?;
    if h == 0 || w == 0 {
        return Err(bad());
    }
    Ok((h, w))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn bench(a: &BenchArgs, opts: &ModelOptions, threads: usize) -> Result<(), String> {
    if a.batch == 0 || a.iters == 0 {
        return Err("--batch and --iters must be at least 1".into());
    }
    let (model, what): (Model, String) = if a.synthetic {
        (
            Model::synthetic(1000, (224, 224), 42, opts).map_err(|e| e.to_string())?,
            "synthetic ResNet-18 (random weights)".into(),
        )
    } else {
        let name = match &a.model.model {
            Some(p) => p.display().to_string(),
            None => "embedded digits ResNet-18".into(),
        };
        (load(&a.model, opts)?, name)
    };
    let (h, w) = match &a.size {
        Some(s) => parse_size(s)?,
        None => model.input_size(),
    };
    let b = a.batch;
    let c = model.input_channels();
    let n_in = b
        .checked_mul(c * h)
        .and_then(|v| v.checked_mul(w))
        .ok_or("input too large")?;
    // deterministic pseudo-random input in about ±2 (normalised pixels)
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let x: Vec<f32> = (0..n_in)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    let macs = model.layer_macs(b, h, w).map_err(|e| e.to_string())?;
    let names: Vec<String> = macs.iter().map(|(n, _)| n.clone()).collect();
    let mut per_layer = vec![Duration::ZERO; names.len()];
    let mut ws = Workspace::new();
    let progress = std::io::stderr().is_terminal();

    // warm-up: sizes the workspace, faults pages in
    let mut logits = vec![0f32; b * model.num_classes()];
    for _ in 0..a.warmup.max(1) {
        model
            .run_with(&mut ws, &x, b, h, w, &mut logits)
            .map_err(|e| e.to_string())?;
    }
    let mut totals = Vec::with_capacity(a.iters);
    let started = Instant::now();
    for it in 0..a.iters {
        let t0 = Instant::now();
        let mut last = t0;
        model
            .run_profiled(&mut ws, &x, b, h, w, &mut |name| {
                let now = Instant::now();
                if let Some(i) = names.iter().position(|n| n == name) {
                    per_layer[i] += now - last;
                }
                last = now;
            })
            .map_err(|e| e.to_string())?;
        totals.push(t0.elapsed());
        if progress && started.elapsed() > Duration::from_millis(500) {
            eprint!("\rbench: {}/{} iterations", it + 1, a.iters);
            let _ = std::io::stderr().flush();
        }
    }
    if progress && started.elapsed() > Duration::from_millis(500) {
        eprintln!();
    }
    let mut sorted = totals.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let min = sorted[0];
    let ips = b as f64 / median.as_secs_f64();
    let total_macs: u64 = macs.iter().map(|(_, m)| m).sum();
    let gmacs = total_macs as f64 / median.as_secs_f64() / 1e9;
    let layer_total: Duration = per_layer.iter().sum();
    let rows: Vec<(String, f64, f64, u64)> = names
        .iter()
        .zip(&per_layer)
        .zip(&macs)
        .map(|((n, t), (_, m))| {
            (
                n.clone(),
                ms(*t) / a.iters as f64,
                t.as_secs_f64() / layer_total.as_secs_f64().max(1e-12) * 100.0,
                *m,
            )
        })
        .collect();
    if a.json {
        let v = serde_json::json!({
            "model": what,
            "isa": model.isa().to_string(),
            "threads": threads,
            "batch": b,
            "input": [b, c, h, w],
            "iters": a.iters,
            "median_ms": ms(median),
            "min_ms": ms(min),
            "latencies_ms": totals.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "images_per_s": ips,
            "gmac_per_image": total_macs as f64 / b as f64 / 1e9,
            "gmac_per_s": gmacs,
            "layers": rows.iter().map(|(n, t, p, m)| serde_json::json!({
                "name": n, "mean_ms": t, "percent": p, "macs": m,
            })).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!(
        "model: {what} | input {b}x{c}x{h}x{w} | ISA {} | {threads} thread(s) | {} iterations",
        model.isa(),
        a.iters
    );
    println!(
        "latency: median {:.3} ms, min {:.3} ms | {:.1} images/s | {:.3} GMAC/image, {:.1} GMAC/s",
        ms(median),
        ms(min),
        ips,
        total_macs as f64 / b as f64 / 1e9,
        gmacs
    );
    println!(
        "{:<24} {:>10} {:>7} {:>10}",
        "layer", "mean ms", "share", "GMAC/s"
    );
    for (n, t, p, m) in &rows {
        let rate = if *m > 0 && *t > 0.0 {
            format!("{:.1}", *m as f64 / (*t / 1e3) / 1e9)
        } else {
            "-".into()
        };
        println!("{n:<24} {t:>10.3} {p:>6.1}% {rate:>10}");
    }
    Ok(())
}
