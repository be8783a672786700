//! GEMM throughput, single thread: ResNet-18's GEMM shapes (im2col M×N×K) and 1024³, for every
//! supported ISA and its kernels, in MACs per second (`Throughput::Elements(M·N·K)`: criterion's
//! "elem/s" are MAC/s).
//!
//! Groups:
//! * `peak` — register-only instruction probes (`vpdpbusd` zmm, `vpmaddwd`+`vpaddd` ymm): the
//!   measured peak every other number is compared with (same run, same clock).
//! * `gemm_requant/<isa>/<kernel>` — the public engine: A packing, microkernels, zero-point
//!   correction and requantization to u8 (weights prepacked once, outside the timing).
//! * `gemm_kernel_only/<isa>/<kernel>` — microkernel calls only, over A and B panels packed
//!   outside the timing (packing and requant excluded).
//!
//! Run: `cargo bench --bench gemm` (filter e.g. `-- gemm_requant/avx512vnni`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use qkernels::gemm::{Matrix, PackedWeights, gemm_requant};
use qkernels::{Isa, QParams, WeightQParams};
use qkernels_kernels::gemm::{GemmKernel, all_kernels, best_kernel};
use std::time::Duration;

/// ResNet-18 GEMM shapes (M = output pixels, N = output channels, K = kh·kw·Cin) and 1024³.
const SHAPES: &[(usize, usize, usize)] = &[
    (12544, 64, 147),
    (3136, 64, 576),
    (784, 128, 1152),
    (196, 256, 2304),
    (49, 512, 4608),
    (1, 1000, 512),
    (1024, 1024, 1024),
];

fn data(m: usize, n: usize, k: usize) -> (Vec<u8>, Vec<i8>, Vec<f32>) {
    let mut s = 0x2545_f491_u32;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    };
    // QKERNELS_GEMM_A7BIT=1: 7-bit activations (a `reduce_range` model's), on which exact AVX2
    // runs its `_a7` companion kernel.
    let mask = if std::env::var("QKERNELS_GEMM_A7BIT").as_deref() == Ok("1") {
        0x7f
    } else {
        0xff
    };
    let a = (0..m * k).map(|_| next() as u8 & mask).collect();
    let w = (0..n * k).map(|_| next() as u8 as i8).collect();
    let bias = (0..n).map(|_| (next() % 1000) as f32 * 0.01).collect();
    (a, w, bias)
}

fn one_thread() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
}

/// A peak probe: `(name, MACs per round, run(rounds))`.
type Probe = (&'static str, usize, fn(usize));

/// The instruction-peak probe of `isa`, if this build has one.
fn probe_for(isa: Isa) -> Option<Probe> {
    #[cfg(target_arch = "x86_64")]
    {
        use qkernels_kernels::gemm::{x86_avx2, x86_avx512vnni};
        match isa {
            Isa::Avx512Vnni => {
                return Some(("vpdpbusd_zmm", 768, x86_avx512vnni::peak_probe_vnni_zmm));
            }
            Isa::Avx2 => return Some(("vpmaddwd_vpaddd_ymm", 128, x86_avx2::peak_probe_avx2_madd)),
            _ => {}
        }
    }
    let _ = isa;
    None
}

fn peak(c: &mut Criterion) {
    let mut g = c.benchmark_group("peak");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    const ITERS: usize = 100_000;
    for isa in isas() {
        if let Some((name, macs, f)) = probe_for(isa) {
            g.throughput(Throughput::Elements((ITERS * macs) as u64));
            g.bench_function(format!("{isa}/{name}"), |b| b.iter(|| f(ITERS)));
        }
    }
    g.finish();
}

/// The kernels benched for `isa`: its production exact and saturating kernels, plus (for the
/// tile choice) every other full-size exact tile of that ISA (not the `_a7` kernels: they run
/// only as companions of a general kernel, on 7-bit A panels).
fn kernels_for(isa: Isa) -> Vec<&'static GemmKernel> {
    let mut v = vec![best_kernel(isa, false), best_kernel(isa, true)];
    for k in all_kernels() {
        if k.isa == isa
            && !k.saturating
            && k.a_max == 255
            && k.mr > 1
            && !k.name.ends_with("_test")
            && !v.iter().any(|x| std::ptr::eq(*x, k))
        {
            v.push(k);
        }
    }
    v
}

fn isas() -> Vec<Isa> {
    Isa::supported()
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .collect()
}

fn gemm_requant_bench(c: &mut Criterion) {
    let pool = one_thread();
    let mut g = c.benchmark_group("gemm_requant");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let (xq, outq) = (QParams::new(0.02, 3), QParams::new(0.5, 128));
    for isa in isas() {
        for kern in kernels_for(isa) {
            for &(m, n, k) in SHAPES {
                let (a, w, bias) = data(m, n, k);
                let wq = WeightQParams::per_channel(vec![0.01; n], vec![0; n]);
                let pw = PackedWeights::with_kernel(&w, n, k, &wq, Some(&bias), kern).unwrap();
                let am = Matrix::new(&a, m, k, k).unwrap();
                let mut out = vec![0u8; m * n];
                g.throughput(Throughput::Elements((m * n * k) as u64));
                g.bench_with_input(
                    BenchmarkId::new(format!("{isa}/{}", kern.name), format!("{m}x{n}x{k}")),
                    &(),
                    |b, _| {
                        pool.install(|| {
                            b.iter(|| gemm_requant(&pw, &am, xq, outq, true, &mut out, n).unwrap())
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

/// A and B packed outside the timing for the kernel-only measurement.
struct Prepacked {
    kern: &'static GemmKernel,
    m: usize,
    n: usize,
    k: usize,
    pa: Vec<u8>,
    pb: Vec<u8>,
    c: Vec<i32>,
}

impl Prepacked {
    fn new(kern: &'static GemmKernel, m: usize, n: usize, k: usize) -> Prepacked {
        let (a, w, _) = data(m, n, k);
        let (mr, nr) = (kern.mr, kern.nr);
        let (ab, bb) = ((kern.a_panel_bytes)(k), (kern.b_panel_bytes)(k));
        let mut pa = vec![0u8; m.div_ceil(mr) * ab];
        for (p, dst) in pa.chunks_mut(ab).enumerate() {
            let rows = mr.min(m - p * mr);
            (kern.pack_a)(&a[p * mr * k..], k, rows, k, dst);
        }
        let mut pb = vec![0u8; n.div_ceil(nr) * bb];
        for (p, dst) in pb.chunks_mut(bb).enumerate() {
            let cols = nr.min(n - p * nr);
            (kern.pack_b)(&w[p * nr * k..], k, cols, k, dst);
        }
        Prepacked {
            kern,
            m,
            n,
            k,
            pa,
            pb,
            c: vec![0i32; m * n],
        }
    }

    /// Every microkernel call of the GEMM; same loop order as the driver (B panel outer, A
    /// panels inner; all of A is packed, so for large M this streams A from L2/L3).
    fn run(&mut self) {
        let kern = self.kern;
        let (m, n) = (self.m, self.n);
        let (mr, nr) = (kern.mr, kern.nr);
        let (ab, bb) = ((kern.a_panel_bytes)(self.k), (kern.b_panel_bytes)(self.k));
        let kp = kern.round_k(self.k);
        for (jp, bp) in self.pb.chunks(bb).enumerate() {
            let cols = nr.min(n - jp * nr);
            for (ip, ap) in self.pa.chunks(ab).enumerate() {
                let rows = mr.min(m - ip * mr);
                // SAFETY: whole panels packed by this kernel's packers for K = k (`kp` rounded
                // to KR); `c` holds the `rows × cols` tile at (ip·MR, jp·NR) with row stride n;
                // the ISA is supported (kernels of `isas()` only).
                unsafe {
                    (kern.ukernel)(
                        kp,
                        ap.as_ptr(),
                        bp.as_ptr(),
                        self.c.as_mut_ptr().add(ip * mr * n + jp * nr),
                        n,
                        rows,
                        cols,
                        false,
                    )
                };
            }
        }
    }
}

fn kernel_only_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm_kernel_only");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for isa in isas() {
        for kern in kernels_for(isa) {
            for &(m, n, k) in SHAPES {
                let mut pp = Prepacked::new(kern, m, n, k);
                g.throughput(Throughput::Elements((m * n * k) as u64));
                g.bench_with_input(
                    BenchmarkId::new(format!("{isa}/{}", kern.name), format!("{m}x{n}x{k}")),
                    &(),
                    |b, _| b.iter(|| pp.run()),
                );
            }
        }
    }
    g.finish();
}

criterion_group!(benches, peak, gemm_requant_bench, kernel_only_bench);

/// Best-of-`reps` rate in GMAC/s of `f`, which performs `macs` MACs per call; each rep times
/// enough calls to last ≥ 5 ms. On a shared (noisy) machine the best rep is the closest to an
/// uncontended core, for the probes and the kernels alike.
fn best_gmacs(reps: usize, macs: f64, mut f: impl FnMut()) -> f64 {
    f();
    let mut calls = 1usize;
    loop {
        let t = std::time::Instant::now();
        for _ in 0..calls {
            f();
        }
        if t.elapsed() >= Duration::from_millis(5) {
            break;
        }
        calls *= 2;
    }
    let mut best = 0.0f64;
    for _ in 0..reps {
        let t = std::time::Instant::now();
        for _ in 0..calls {
            f();
        }
        best = best.max(macs * calls as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// `QKERNELS_GEMM_TABLE=1 cargo bench --bench gemm`: prints the single-thread table of
/// `docs/performance.md` (best-of-N GMAC/s and % of the measured instruction peak) instead of
/// running criterion.
fn table() {
    let reps: usize = std::env::var("QKERNELS_GEMM_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let pool = one_thread();
    let (xq, outq) = (QParams::new(0.02, 3), QParams::new(0.5, 128));
    let only: Option<Isa> = std::env::var("QKERNELS_GEMM_ISA")
        .ok()
        .map(|v| v.parse().unwrap());
    for isa in isas().into_iter().filter(|i| only.is_none_or(|o| o == *i)) {
        let probe = |reps| {
            const ITERS: usize = 20_000;
            probe_for(isa).map_or(f64::NAN, |(_, macs, f)| {
                best_gmacs(reps, (ITERS * macs) as f64, || f(ITERS))
            })
        };
        let mut peak = probe(reps);
        let mut rows = Vec::new();
        let kfilter = std::env::var("QKERNELS_GEMM_KERNEL").unwrap_or_default();
        let sfilter = std::env::var("QKERNELS_GEMM_SHAPE").unwrap_or_default();
        for kern in kernels_for(isa)
            .into_iter()
            .filter(|k| k.name.contains(&kfilter))
        {
            for &(m, n, k) in SHAPES
                .iter()
                .filter(|(m, n, k)| format!("{m}x{n}x{k}").contains(&sfilter))
            {
                let (a, w, bias) = data(m, n, k);
                let wq = WeightQParams::per_channel(vec![0.01; n], vec![0; n]);
                let pw = PackedWeights::with_kernel(&w, n, k, &wq, Some(&bias), kern).unwrap();
                let am = Matrix::new(&a, m, k, k).unwrap();
                let mut out = vec![0u8; m * n];
                let macs = (m * n * k) as f64;
                let full = pool.install(|| {
                    best_gmacs(reps, macs, || {
                        gemm_requant(&pw, &am, xq, outq, true, &mut out, n).unwrap()
                    })
                });
                let konly = if std::env::var_os("QKERNELS_GEMM_NO_KONLY").is_some() {
                    f64::NAN
                } else {
                    let mut pp = Prepacked::new(kern, m, n, k);
                    best_gmacs(reps, macs, || pp.run())
                };
                peak = peak.max(probe(3));
                rows.push((kern.name, m, n, k, full, konly));
            }
        }
        peak = peak.max(probe(reps));
        let bits = if std::env::var("QKERNELS_GEMM_A7BIT").as_deref() == Ok("1") {
            "7-bit"
        } else {
            "8-bit"
        };
        println!("\n{isa}: measured peak {peak:.1} GMAC/s (best of {reps}); {bits} activations");
        println!(
            "| kernel | M×N×K | GMAC/s, pack + requant incl. | % of peak | GMAC/s, kernel only | % of peak |"
        );
        println!("|---|---|---:|---:|---:|---:|");
        for (name, m, n, k, full, konly) in rows {
            println!(
                "| {name} | {m}×{n}×{k} | {full:.1} | {:.0} % | {konly:.1} | {:.0} % |",
                100.0 * full / peak,
                100.0 * konly / peak
            );
        }
    }
}

fn main() {
    if std::env::var_os("QKERNELS_GEMM_TABLE").is_some() {
        table();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
