//! The packed GEMM engine (`qkernels::gemm`) against `qkernels_ref`, byte for byte:
//!
//! * seeded property tests over random shapes (M, N, K in 1..=300 plus edge shapes), both
//!   activation zero-point extremes, per-tensor asymmetric and per-channel weights, bias on/off,
//!   ReLU on/off, full-range and 7-bit activations (mixed panels), u8 (requantized) and i32 outputs, strided A and C, plain-matrix and streamed
//!   (`ASource::fill`) A, for **every supported ISA**, in Exact and SaturateAll modes, on rayon
//!   pools of 1, 2 and 3 threads (the results must not depend on the thread count);
//! * the golden PyTorch `linear` cases through `PackedWeights` on every ISA and thread count.
//!
//! Expected values come only from `qkernels_ref` (`matmul_u8s8s32_ref` + zero-point corrections
//! + `RequantParams::apply`) or from the golden PyTorch outputs.

mod common;

use qkernels::gemm::{ASource, GemmOptions, Matrix, PackedWeights, gemm_i32, gemm_requant};
use qkernels::{Isa, QParams, WeightQParams};
use qkernels_ref as r;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// An `ASource` that only supports `fill` (like im2col), to exercise the streamed-A path.
struct Streamed<'a>(Matrix<'a>);

impl ASource for Streamed<'_> {
    fn rows(&self) -> usize {
        self.0.rows()
    }
    fn depth(&self) -> usize {
        self.0.depth()
    }
    fn fill(&self, row0: usize, rows: usize, k0: usize, kc: usize, dst: &mut [u8], ld: usize) {
        self.0.fill(row0, rows, k0, kc, dst, ld)
    }
}

fn pools() -> Vec<rayon::ThreadPool> {
    [1, 2, 3]
        .into_iter()
        .map(|t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        })
        .collect()
}

struct Case {
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ldc: usize,
    a: Vec<u8>,
    w: Vec<i8>,
    a_q: QParams,
    wq: WeightQParams,
    bias: Option<Vec<f32>>,
    relu: bool,
    streamed: bool,
}

fn random_case(rng: &mut StdRng, m: usize, n: usize, k: usize) -> Case {
    let lda = k + if rng.gen_bool(0.5) { 0 } else { 5 };
    let ldc = n + if rng.gen_bool(0.5) { 0 } else { 3 };
    let extreme = rng.gen_bool(0.2);
    // 7-bit activations (what a `reduce_range` model produces; exact AVX2 then runs the `_a7`
    // kernel) with one byte ≥ 128 in about a tenth of the rows, so that 7-bit and general A
    // panels mix within one GEMM.
    let seven = !extreme && rng.gen_bool(0.4);
    let mut a: Vec<u8> = (0..(m - 1) * lda + k)
        .map(|_| match (extreme, seven) {
            (true, _) => 255,
            (false, true) => rng.gen_range(0..=127),
            (false, false) => rng.r#gen(),
        })
        .collect();
    if seven {
        for i in 0..m {
            if rng.gen_bool(0.1) {
                a[i * lda + rng.gen_range(0..k)] = rng.gen_range(128..=255);
            }
        }
    }
    let w: Vec<i8> = (0..n * k)
        .map(|_| if extreme { -128 } else { rng.r#gen() })
        .collect();
    // activation zero point at both ends and in between
    let a_zp = match rng.gen_range(0..3) {
        0 => 0,
        1 => 255,
        _ => rng.gen_range(1..255),
    };
    let wq = if rng.gen_bool(0.5) {
        // per-tensor, asymmetric (either sign)
        WeightQParams::per_tensor(0.01 + rng.gen_range(0.0..0.01), rng.gen_range(-128..=127))
    } else {
        let zps = (0..n)
            .map(|_| {
                if rng.gen_bool(0.5) {
                    0
                } else {
                    rng.gen_range(-128..=127)
                }
            })
            .collect();
        let scales = (0..n).map(|_| rng.gen_range(0.002..0.02)).collect();
        WeightQParams::per_channel(scales, zps)
    };
    let bias = rng
        .gen_bool(0.5)
        .then(|| (0..n).map(|_| rng.gen_range(-3.0f32..3.0)).collect());
    Case {
        m,
        n,
        k,
        lda,
        ldc,
        a,
        w,
        a_q: QParams::new(0.02 + rng.gen_range(0.0..0.01), a_zp),
        wq,
        bias,
        relu: rng.gen_bool(0.5),
        streamed: rng.gen_bool(0.3),
    }
}

/// Reference: corrected i32 accumulators, `m × n` dense.
fn reference_raw(c: &Case, sat: bool) -> Vec<i32> {
    let dense: Vec<u8> = (0..c.m)
        .flat_map(|i| c.a[i * c.lda..i * c.lda + c.k].to_vec())
        .collect();
    let acc = r::matmul_u8s8s32_ref(c.m, c.n, c.k, &dense, &c.w, sat);
    let w_zp: Vec<i32> = (0..c.n).map(|j| c.wq.zero_point(j)).collect();
    let ro = r::row_offsets(c.m, c.k, &dense);
    let co = r::col_offsets(c.n, c.k, &c.w, &w_zp);
    (0..c.m * c.n)
        .map(|t| {
            let (i, j) = (t / c.n, t % c.n);
            r::gemm::zero_point_correction(acc[t], c.a_q.zero_point, co[j], ro[i], w_zp[j])
        })
        .collect()
}

/// An output scale that puts the results across the whole u8 range (both clamps reached).
fn out_qparams(c: &Case, raw: &[i32], rng: &mut StdRng) -> QParams {
    let max = raw
        .iter()
        .map(|v| v.unsigned_abs())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let s = c.a_q.scale * c.wq.scale(0) * max / 180.0;
    QParams::new(s.max(1e-9), rng.gen_range(0..=255))
}

fn check_case(c: &Case, isa: Isa, sat: bool, pools: &[rayon::ThreadPool], rng: &mut StdRng) {
    let label = format!(
        "{isa} sat={sat} m={} n={} k={} lda={} ldc={} a_zp={} per_channel={} bias={} relu={} streamed={}",
        c.m,
        c.n,
        c.k,
        c.lda,
        c.ldc,
        c.a_q.zero_point,
        c.wq.per_channel,
        c.bias.is_some(),
        c.relu,
        c.streamed
    );
    let raw = reference_raw(c, sat);
    let out_q = out_qparams(c, &raw, rng);
    let rq = r::RequantParams::new(c.n, c.a_q, &c.wq, c.bias.as_deref(), out_q, c.relu);
    let want_u8: Vec<u8> = (0..c.m * c.n).map(|t| rq.apply(raw[t], t % c.n)).collect();

    let opts = GemmOptions {
        isa,
        saturate_pairs: sat,
    };
    let pw = PackedWeights::with_options(&c.w, c.n, c.k, &c.wq, c.bias.as_deref(), &opts)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(pw.saturates(), sat, "{label}");
    let mat = Matrix::new(&c.a, c.m, c.k, c.lda).unwrap();
    let streamed = Streamed(mat);
    let a: &dyn ASource = if c.streamed { &streamed } else { &mat };
    let out_len = (c.m - 1) * c.ldc + c.n;
    for pool in pools {
        let t = pool.current_num_threads();
        let (got_u8, got_i32) = pool.install(|| {
            let mut o8 = vec![0xA5u8; out_len];
            gemm_requant(&pw, a, c.a_q, out_q, c.relu, &mut o8, c.ldc).unwrap();
            let mut o32 = vec![i32::MIN + 7; out_len];
            gemm_i32(&pw, a, c.a_q.zero_point, &mut o32, c.ldc).unwrap();
            (o8, o32)
        });
        for i in 0..c.m {
            let row = i * c.ldc;
            assert_eq!(
                &got_i32[row..row + c.n],
                &raw[i * c.n..(i + 1) * c.n],
                "{label} threads={t}: i32 row {i}"
            );
            assert_eq!(
                &got_u8[row..row + c.n],
                &want_u8[i * c.n..(i + 1) * c.n],
                "{label} threads={t}: u8 row {i}"
            );
            if i + 1 < c.m {
                assert!(
                    got_u8[row + c.n..row + c.ldc].iter().all(|&b| b == 0xA5)
                        && got_i32[row + c.n..row + c.ldc]
                            .iter()
                            .all(|&v| v == i32::MIN + 7),
                    "{label} threads={t}: wrote into the ldc gap of row {i}"
                );
            }
        }
    }
}

fn sizes(rng: &mut StdRng, cases: usize) -> Vec<(usize, usize, usize)> {
    // Edge shapes first (GEMV, K = 1, tiles ± 1), then random ones up to 300.
    let mut v = vec![
        (1, 1, 1),
        (1, 1000, 64),
        (1, 33, 300),
        (2, 17, 3),
        (7, 31, 5),
        (9, 65, 130),
        (15, 16, 2),
        (64, 64, 64),
        // one-row tails after full 6- / 8-row panels (the driver's single-row tail kernel)
        (7, 64, 100),
        (13, 70, 33),
        (49, 130, 300),
        (9, 33, 17),
    ];
    while v.len() < cases {
        v.push((
            rng.gen_range(1..=300),
            rng.gen_range(1..=300),
            rng.gen_range(1..=300),
        ));
    }
    v
}

#[test]
fn engine_matches_reference_on_every_isa_mode_and_thread_count() {
    qkernels::isa::require_from_env().expect("QKERNELS_REQUIRE_ISA");
    let pools = pools();
    let mut rng = StdRng::seed_from_u64(0x9e77);
    // Debug builds (no optimisation) run fewer random shapes; `--release` runs more.
    let cases = if cfg!(debug_assertions) { 40 } else { 80 };
    let shapes = sizes(&mut rng, cases);
    let mut checked = 0;
    for isa in Isa::supported() {
        for sat in [false, true] {
            for &(m, n, k) in &shapes {
                let c = random_case(&mut rng, m, n, k);
                check_case(&c, isa, sat, &pools, &mut rng);
                checked += 1;
            }
        }
    }
    println!("gemm engine: {checked} cases × 3 thread counts × (u8, i32), all equal");
}

/// Every M tail: M = 1..=13 (every length mod 6 and mod 8, one-row tails split into two short
/// tiles), ResNet's M = 49 = 7·6 + 4 + 3 with a deep K, and a few more `q·MR + 1`, on every ISA
/// and mode (the driver's per-panel row bookkeeping and the `mr`-row kernel instantiations).
#[test]
fn engine_every_m_tail() {
    let pools = pools();
    let mut rng = StdRng::seed_from_u64(0x7a11);
    let mut ms: Vec<usize> = (1..=13).collect();
    ms.extend([19, 25, 49, 55, 97]);
    for isa in Isa::supported() {
        for sat in [false, true] {
            for &m in &ms {
                for &(n, k) in &[(70, 36), (64, 300)] {
                    let c = random_case(&mut rng, m, n, k);
                    check_case(&c, isa, sat, &pools, &mut rng);
                }
            }
        }
    }
}

/// Larger shapes that cross the M-block and N-chunk boundaries of the driver (several A blocks
/// per call; GEMV with a long K), on the best kernel of every ISA.
#[test]
fn engine_blocking_boundaries() {
    let pools = pools();
    let mut rng = StdRng::seed_from_u64(0xb10c);
    let shapes: &[(usize, usize, usize)] = if cfg!(debug_assertions) {
        &[(3000, 70, 147), (1, 70, 3000), (97, 129, 2051)]
    } else {
        &[
            (3000, 70, 147),
            (1, 300, 4608),
            (200, 130, 2304),
            (49, 512, 4608),
        ]
    };
    for isa in Isa::supported() {
        for &(m, n, k) in shapes {
            let c = random_case(&mut rng, m, n, k);
            check_case(&c, isa, false, &pools, &mut rng);
        }
    }
}

/// Every GEMM golden case (PyTorch `linear`) through `PackedWeights` on every supported ISA and
/// thread count.
#[test]
fn golden_linear_cases_through_the_packed_engine() {
    let g = common::Golden::load();
    let pools = pools();
    let mut n_cases = 0;
    for case in g.cases.iter().filter(|c| c["op"] == "linear") {
        let p = &case["params"];
        let (x, w) = (g.tensor(case, "x"), g.tensor(case, "w"));
        let (m, k, n) = (x.shape[0], x.shape[1], w.shape[0]);
        let bias = common::Golden::has_tensor(case, "bias").then(|| g.tensor(case, "bias").f32());
        let (xq, outq) = (common::qparams(&p["input"]), common::qparams(&p["out"]));
        let wq = common::weight_qparams(&p["weight"]);
        let relu = p["relu"].as_bool().unwrap();
        let want = g.tensor(case, "y").u8();
        let (x, w) = (x.u8(), w.i8());
        for isa in Isa::supported() {
            let pw = PackedWeights::with_options(
                &w,
                n,
                k,
                &wq,
                bias.as_deref(),
                &GemmOptions {
                    isa,
                    saturate_pairs: false,
                },
            )
            .unwrap();
            for pool in &pools {
                let mut y = vec![0u8; m * n];
                pool.install(|| qkernels::gemm::linear(&pw, &x, m, xq, outq, relu, &mut y))
                    .unwrap();
                assert_eq!(
                    y,
                    want,
                    "{} on {isa} ({}), {} threads",
                    common::name(case),
                    pw.kernel_name(),
                    pool.current_num_threads()
                );
            }
        }
        n_cases += 1;
    }
    assert!(n_cases > 0, "no golden linear case found");
    println!(
        "golden linear through the engine: {n_cases} cases on {:?}",
        Isa::supported()
    );
}

/// One `PackedWeights` called with alternating quantization parameters (the engine caches the
/// last call's requantization constants): every call must match the reference for its own
/// parameters.
#[test]
fn changing_qparams_between_calls() {
    let mut rng = StdRng::seed_from_u64(0xca5e);
    for isa in Isa::supported() {
        let c = random_case(&mut rng, 5, 70, 33);
        let pw = PackedWeights::with_options(
            &c.w,
            c.n,
            c.k,
            &c.wq,
            c.bias.as_deref(),
            &GemmOptions {
                isa,
                saturate_pairs: false,
            },
        )
        .unwrap();
        let raw = reference_raw(&c, false);
        let mat = Matrix::new(&c.a, c.m, c.k, c.lda).unwrap();
        let params: Vec<(QParams, QParams, bool)> = (0..3)
            .map(|t| {
                let a_q = QParams::new(0.02 + 0.001 * t as f64, c.a_q.zero_point);
                (a_q, out_qparams(&c, &raw, &mut rng), t == 1)
            })
            .collect();
        for &(a_q, out_q, relu) in params.iter().chain(params.iter().rev()) {
            let rq = r::RequantParams::new(c.n, a_q, &c.wq, c.bias.as_deref(), out_q, relu);
            let mut got = vec![0u8; (c.m - 1) * c.ldc + c.n];
            gemm_requant(&pw, &mat, a_q, out_q, relu, &mut got, c.ldc).unwrap();
            for i in 0..c.m {
                let want: Vec<u8> = (0..c.n).map(|j| rq.apply(raw[i * c.n + j], j)).collect();
                assert_eq!(&got[i * c.ldc..i * c.ldc + c.n], &want[..], "{isa} row {i}");
            }
        }
    }
}

/// Exact AVX2 packs B a second time for the `_a7` kernel and runs it on 7-bit A panels: every
/// panel kind (packed from a strided matrix, read in place, streamed, the one-row tail, panels
/// with a few activations ≥ 128 — masked and corrected — or too many of them) must give the
/// reference bytes.
#[test]
fn seven_bit_panels_on_exact_avx2() {
    if !Isa::Avx2.is_supported() {
        println!("AVX2 not supported here: nothing to check");
        return;
    }
    let opts = GemmOptions::for_isa(Isa::Avx2).unwrap();
    let pw = PackedWeights::with_options(
        &[1i8; 64 * 4],
        4,
        64,
        &WeightQParams::per_tensor(0.01, 0),
        None,
        &opts,
    )
    .unwrap();
    if std::env::var("QKERNELS_A7").as_deref() != Ok("0") {
        assert_eq!(pw.seven_bit_kernel(), Some("u8s8s32_gemm_avx2_6x16c4_a7"));
    }
    let pools = pools();
    let mut rng = StdRng::seed_from_u64(0xa7a7);
    // K = 64 (multiple of 4: full panels of a dense matrix are read in place), 147 (packed),
    // 2 (shorter than one K group); M = 13 = 2 full panels + a one-row tail.
    for (k, lda) in [(64, 64), (64, 71), (147, 147), (2, 2)] {
        for streamed in [false, true] {
            // Activations ≥ 128: none; one (the panel runs the 7-bit kernel on a masked copy and
            // the tile gets the outlier correction) in the first panel, the second or the tail
            // row; two in one row and one in another of the same panel; a quarter of a row
            // (too many: that panel falls back to the general kernel).
            let hot: [&[(usize, usize)]; 6] = [
                &[],
                &[(0, k - 1)],
                &[(7, 0)],
                &[(12, k / 2)],
                &[(6, 0), (6, k - 1), (11, k / 3)],
                &[(1, 0), (1, k / 4), (1, k / 2), (1, 3 * k / 4), (1, k - 1)],
            ];
            for spots in hot {
                let mut c = random_case(&mut rng, 13, 37, k);
                c.lda = lda;
                c.streamed = streamed;
                c.a = (0..12 * lda + k).map(|_| rng.gen_range(0..=127)).collect();
                for &(i, kk) in spots {
                    c.a[i * lda + kk] = rng.gen_range(128..=255);
                }
                check_case(&c, Isa::Avx2, false, &pools, &mut rng);
            }
        }
    }
}
