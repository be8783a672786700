//! Every bad-input class of issue #8 through the Rust API: each call must return the exact
//! error variant with a message naming the problem — never panic, never allocate for an absurd
//! request. (Model-file classes live at the end, once the ResNet-18 loader exists.)

use qkernels::conv::{Conv2d, Conv2dParams, ConvOptions};
use qkernels::gemm::{self, GemmOptions, Matrix, PackedWeights};
use qkernels::{Error, Isa, Pool2d, QParams, Result, WeightQParams, ops};

/// Asserts `Err(InvalidArgument(msg))` with `msg` containing every fragment.
#[track_caller]
fn invalid<T: std::fmt::Debug>(r: Result<T>, fragments: &[&str]) {
    match r {
        Err(Error::InvalidArgument(msg)) => {
            for f in fragments {
                assert!(msg.contains(f), "message {msg:?} lacks {f:?}");
            }
            // Display carries the variant prefix and the message.
            assert_eq!(
                Error::InvalidArgument(msg.clone()).to_string(),
                format!("invalid argument: {msg}")
            );
        }
        other => panic!("expected InvalidArgument containing {fragments:?}, got {other:?}"),
    }
}

#[track_caller]
fn unsupported<T: std::fmt::Debug>(r: Result<T>, fragment: &str) {
    match r {
        Err(Error::Unsupported(msg)) => assert!(msg.contains(fragment), "{msg:?}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

const Q: QParams = QParams::new(0.1, 10);

fn wq1() -> WeightQParams {
    WeightQParams::per_tensor(0.01, 0)
}

fn pw(n: usize, k: usize) -> PackedWeights {
    PackedWeights::new(&vec![1i8; n * k], n, k, &wq1(), None).unwrap()
}

fn conv3x3(ic: usize, oc: usize) -> Conv2d {
    let p = Conv2dParams::square(ic, oc, 3, 1, 0);
    Conv2d::new(p, &vec![1i8; oc * ic * 9], &wq1(), None).unwrap()
}

// ---------------------------------------------------------------- shapes overflowing usize

#[test]
fn gemm_shapes_overflowing_usize() {
    let big = usize::MAX / 2 + 1;
    invalid(
        PackedWeights::new(&[0; 4], big, 4, &wq1(), None),
        &["weights", "overflows usize"],
    );
    let w = pw(2, 3);
    invalid(
        gemm::linear(&w, &[0; 6], big, Q, Q, false, &mut [0; 4]),
        &["linear input", "overflows usize"],
    );
    invalid(Matrix::new(&[0; 8], big, 2, big), &["overflows usize"]);
    // M fits, but M·ldc does not.
    let a = Matrix::new(&[0; 9], 3, 3, 3).unwrap();
    invalid(
        gemm::gemm_requant(&w, &a, Q, Q, false, &mut [0; 8], big),
        &["output size overflows usize"],
    );
    invalid(
        gemm::gemm_u8s8s32(
            Isa::Scalar,
            1,
            big,
            2,
            &[0; 2],
            2,
            &[0; 2],
            2,
            &mut [0; 2],
            2,
        ),
        &["W size overflows usize"],
    );
}

#[test]
fn conv_shapes_overflowing_usize() {
    let big = 1usize << 40;
    invalid(
        Conv2dParams::square(big, big, 1 << 20, 1, 0).validate(),
        &["conv weights", "overflows usize"],
    );
    let c = conv3x3(2, 2);
    let mut out = [0u8; 16];
    invalid(
        c.run(&[0; 16], big, big, big, Q, Q, false, &mut out),
        &["conv input", "overflows usize"],
    );
    // Output shape overflow from huge padding with a tiny input.
    let mut p = Conv2dParams::square(1, 1, 1, 1, isize::MAX as usize / 2 + 1);
    p.pad_w = 0;
    let c = Conv2d::new(p, &[1], &wq1(), None).unwrap();
    invalid(
        c.run(&[0; 1], 1, 1, 1, Q, Q, false, &mut out),
        &["overflows isize"],
    );
    invalid(
        ops::max_pool2d_u8(
            &[0; 4],
            1,
            2,
            2,
            usize::MAX,
            &Pool2d::square(1, 1, 0),
            &mut out,
        ),
        &["max_pool2d input", "overflows usize"],
    );
}

// ---------------------------------------------------------------- zero-sized dimensions

#[test]
fn zero_sized_dimensions() {
    invalid(
        PackedWeights::new(&[], 0, 4, &wq1(), None),
        &["GEMM N", "must be > 0"],
    );
    invalid(
        PackedWeights::new(&[], 4, 0, &wq1(), None),
        &["GEMM K", "must be > 0"],
    );
    let w = pw(2, 3);
    invalid(
        gemm::linear(&w, &[], 0, Q, Q, false, &mut []),
        &["GEMM M (rows) must be > 0"],
    );
    invalid(
        gemm::gemm_u8s8s32(Isa::Scalar, 0, 1, 1, &[], 1, &[0], 1, &mut [], 1),
        &["m must be > 0"],
    );
    for (field, f) in [
        (
            "in_channels",
            (|p: &mut Conv2dParams| p.in_channels = 0) as fn(&mut Conv2dParams),
        ),
        ("out_channels", |p| p.out_channels = 0),
        ("kernel_h", |p| p.kernel_h = 0),
        ("stride_w", |p| p.stride_w = 0),
        ("dilation_h", |p| p.dilation_h = 0),
        ("groups", |p| p.groups = 0),
    ] {
        let mut p = Conv2dParams::square(4, 4, 3, 1, 1);
        f(&mut p);
        invalid(p.validate(), &[field, "must be > 0"]);
        invalid(
            Conv2d::new(p, &[0; 144], &wq1(), None),
            &[field, "must be > 0"],
        );
    }
    // Zero stride / kernel straight into output_size (used to panic: divide by zero / k − 1).
    let mut p = Conv2dParams::square(1, 1, 3, 1, 0);
    p.stride_h = 0;
    invalid(p.output_size(5, 5), &["stride", "must be > 0"]);
    p = Conv2dParams::square(1, 1, 0, 1, 0);
    invalid(p.output_size(5, 5), &["kernel size", "must be > 0"]);

    let c = conv3x3(2, 2);
    let mut out = [0u8; 64];
    invalid(
        c.run(&[], 0, 4, 4, Q, Q, false, &mut out),
        &["conv batch must be > 0"],
    );
    invalid(
        c.run(&[], 1, 0, 4, Q, Q, false, &mut out),
        &["conv input height must be > 0"],
    );
    invalid(
        ops::max_pool2d_u8(&[], 1, 2, 2, 0, &Pool2d::square(1, 1, 0), &mut out),
        &["max_pool2d channels must be > 0"],
    );
    invalid(
        ops::adaptive_avg_pool2d_u8(&[0; 4], 1, 2, 2, 1, 0, 1, Q, &mut out),
        &["output height must be > 0"],
    );
    let p0 = Pool2d::square(2, 0, 0);
    invalid(ops::pool_output_size(4, 4, &p0), &["stride", "must be > 0"]);
}

// ---------------------------------------------------------------- mismatched buffer lengths

#[test]
fn mismatched_buffer_lengths() {
    invalid(
        PackedWeights::new(&[0; 5], 2, 3, &wq1(), None),
        &["weights: length 5, expected 6"],
    );
    invalid(
        PackedWeights::new(&[0; 6], 2, 3, &wq1(), Some(&[0.0; 3])),
        &["bias: length 3, expected 2"],
    );
    let w = pw(2, 3);
    invalid(
        gemm::linear(&w, &[0; 5], 2, Q, Q, false, &mut [0; 4]),
        &["linear input: length 5, expected 6"],
    );
    invalid(
        gemm::linear(&w, &[0; 6], 2, Q, Q, false, &mut [0; 3]),
        &["output: capacity 3, need 4"],
    );
    invalid(
        Matrix::new(&[0; 5], 2, 3, 3),
        &["matrix data: capacity 5, need 6"],
    );
    invalid(
        Matrix::new(&[0; 9], 2, 3, 2),
        &["leading dimension 2 < columns 3"],
    );
    let a = Matrix::new(&[0; 8], 2, 4, 4).unwrap();
    invalid(
        gemm::gemm_requant(&w, &a, Q, Q, false, &mut [0; 4], 2),
        &["A has depth 4 but weights have K = 3"],
    );
    let a = Matrix::new(&[0; 6], 2, 3, 3).unwrap();
    invalid(
        gemm::gemm_i32(&w, &a, 0, &mut [0; 4], 1),
        &["output leading dimension 1 < N 2"],
    );
    invalid(
        gemm::gemm_u8s8s32(Isa::Scalar, 2, 2, 3, &[0; 6], 3, &[0; 5], 3, &mut [0; 4], 2),
        &["W: capacity 5, need 6"],
    );

    let p = Conv2dParams::square(2, 3, 3, 1, 1);
    invalid(
        Conv2d::new(p, &[0; 53], &wq1(), None),
        &["conv weights (OIHW): length 53, expected 54"],
    );
    invalid(
        Conv2d::new(p, &[0; 54], &wq1(), Some(&[0.0; 2])),
        &["conv bias: length 2, expected 3"],
    );
    let c = Conv2d::new(p, &[0; 54], &wq1(), None).unwrap();
    let mut out = [0u8; 3 * 16];
    invalid(
        c.run(&[0; 31], 1, 4, 4, Q, Q, false, &mut out),
        &["conv input (NHWC): length 31, expected 32"],
    );
    invalid(
        c.run(&[0; 32], 1, 4, 4, Q, Q, false, &mut out[..47]),
        &["conv output: capacity 47, need 48"],
    );

    invalid(
        ops::quantize_u8(&[0.0; 4], Q, &mut [0; 3]),
        &["quantize output: length 3, expected 4"],
    );
    invalid(
        ops::quantize_i8(&[0.0; 4], QParams::new(0.1, 0), &mut [0; 5]),
        &["quantize_i8 output: length 5, expected 4"],
    );
    invalid(
        ops::dequantize_u8(&[0; 4], Q, &mut [0.0; 3]),
        &["dequantize output"],
    );
    invalid(
        ops::add_u8(&[0; 4], Q, &[0; 3], Q, Q, false, &mut [0; 4]),
        &["add input b: length 3, expected 4"],
    );
    invalid(
        ops::add_u8(&[0; 4], Q, &[0; 4], Q, Q, false, &mut [0; 5]),
        &["add output: length 5, expected 4"],
    );
    invalid(
        ops::max_pool2d_u8(&[0; 15], 1, 4, 4, 1, &Pool2d::square(2, 2, 0), &mut [0; 4]),
        &["max_pool2d input: length 15, expected 16"],
    );
    invalid(
        ops::max_pool2d_u8(&[0; 16], 1, 4, 4, 1, &Pool2d::square(2, 2, 0), &mut [0; 3]),
        &["max_pool2d output: capacity 3, need 4"],
    );
    invalid(
        ops::adaptive_avg_pool2d_u8(&[0; 16], 1, 4, 4, 1, 1, 1, Q, &mut []),
        &["adaptive_avg_pool2d output: capacity 0, need 1"],
    );
}

// ---------------------------------------------------------------- bad scales

#[test]
fn bad_scales() {
    let w = pw(2, 3);
    let bad = [
        0.0,
        -0.5,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e-50,  // > 0 as f64, 0 as f32
        1e300,  // inf as f32
        1e-40,  // subnormal f32: its reciprocal is inf
        -1e-50, // negative and tiny
    ];
    for s in bad {
        let q = QParams::new(s, 0);
        let frag = ["scale", "must be finite, > 0 and representable as f32"];
        invalid(
            gemm::linear(&w, &[0; 3], 1, q, Q, false, &mut [0; 2]),
            &frag,
        );
        invalid(
            gemm::linear(&w, &[0; 3], 1, Q, q, false, &mut [0; 2]),
            &frag,
        );
        invalid(
            PackedWeights::new(&[0; 6], 2, 3, &WeightQParams::per_tensor(s, 0), None),
            &frag,
        );
        invalid(
            PackedWeights::new(
                &[0; 6],
                2,
                3,
                &WeightQParams::per_channel(vec![0.1, s], vec![0, 0]),
                None,
            ),
            &["weight scale [1]"],
        );
        let c = conv3x3(1, 1);
        invalid(
            c.run(&[0; 9], 1, 3, 3, q, Q, false, &mut [0; 1]),
            &["conv input", frag[0]],
        );
        invalid(
            ops::quantize_u8(&[1.0], q, &mut [0]),
            &["quantize", frag[0]],
        );
        invalid(
            ops::quantize_i8(&[1.0], q, &mut [0]),
            &["quantize_i8", frag[0]],
        );
        invalid(
            ops::dequantize_u8(&[1], q, &mut [0.0]),
            &["dequantize", frag[0]],
        );
        invalid(
            ops::add_u8(&[1], Q, &[1], q, Q, false, &mut [0]),
            &["add input b"],
        );
        invalid(
            ops::add_u8(&[1], Q, &[1], Q, q, true, &mut [0]),
            &["add output"],
        );
        invalid(
            ops::adaptive_avg_pool2d_u8(&[1], 1, 1, 1, 1, 1, 1, q, &mut [0]),
            &["adaptive_avg_pool2d", frag[0]],
        );
    }
}

// ---------------------------------------------------------------- zero points out of range

#[test]
fn zero_points_outside_the_dtype() {
    let w = pw(2, 3);
    for zp in [-1, 256, i32::MIN, i32::MAX] {
        let q = QParams::new(0.1, zp);
        let frag = [&format!("zero point {zp} outside 0..=255")[..]];
        invalid(
            gemm::linear(&w, &[0; 3], 1, q, Q, false, &mut [0; 2]),
            &frag,
        );
        invalid(
            gemm::linear(&w, &[0; 3], 1, Q, q, false, &mut [0; 2]),
            &frag,
        );
        invalid(
            conv3x3(1, 1).run(&[0; 9], 1, 3, 3, q, Q, false, &mut [0; 1]),
            &frag,
        );
        invalid(ops::quantize_u8(&[1.0], q, &mut [0]), &frag);
        invalid(ops::dequantize_u8(&[1], q, &mut [0.0]), &frag);
        invalid(ops::add_u8(&[1], q, &[1], Q, Q, false, &mut [0]), &frag);
    }
    for zp in [-129, 128, i32::MIN, i32::MAX] {
        invalid(
            ops::quantize_i8(&[1.0], QParams::new(0.1, zp), &mut [0]),
            &[&format!("zero point {zp} outside -128..=127")],
        );
        invalid(
            PackedWeights::new(&[0; 6], 2, 3, &WeightQParams::per_tensor(0.1, zp), None),
            &[&format!("weight zero point [0] = {zp} outside -128..=127")],
        );
        invalid(
            Conv2d::new(
                Conv2dParams::square(1, 2, 1, 1, 0),
                &[0; 2],
                &WeightQParams::per_channel(vec![0.1, 0.1], vec![0, zp]),
                None,
            ),
            &[&format!("weight zero point [1] = {zp}")],
        );
    }
}

// ---------------------------------------------------------------- conv geometry

#[test]
fn conv_geometry_with_no_output() {
    let p = Conv2dParams::square(1, 1, 5, 1, 0);
    invalid(
        p.output_size(3, 8),
        &[
            "conv height",
            "kernel extent 5 larger than padded input 3: no output",
        ],
    );
    let c = Conv2d::new(p, &[0; 25], &wq1(), None).unwrap();
    invalid(
        c.run(&[0; 24], 1, 8, 3, Q, Q, false, &mut [0; 64]),
        &["conv width", "no output"],
    );
    // Dilation makes the window too wide.
    let mut p = Conv2dParams::square(1, 1, 3, 1, 1);
    p.dilation_w = 4;
    invalid(
        p.output_size(8, 6),
        &["kernel extent 9 larger than padded input 8"],
    );
    // Kernel span overflow.
    p.dilation_w = usize::MAX;
    invalid(p.output_size(8, 6), &["kernel span overflows"]);
    // Pools: window larger than the input, padding more than half the window.
    invalid(
        ops::max_pool2d_u8(&[0; 4], 1, 2, 2, 1, &Pool2d::square(3, 1, 0), &mut [0; 4]),
        &["no output"],
    );
    invalid(
        ops::pool_output_size(8, 8, &Pool2d::square(3, 1, 2)),
        &["padding (2, 2) must be at most half the kernel"],
    );
    // Huge padding used to overflow `pad * 2`.
    invalid(
        ops::pool_output_size(8, 8, &Pool2d::square(3, 1, usize::MAX)),
        &["must be at most half the kernel"],
    );
    invalid(
        ops::adaptive_avg_pool2d_u8(&[0; 4], 1, 2, 2, 1, 3, 1, Q, &mut [0; 4]),
        &["output 3×1 larger than input 2×2"],
    );
}

#[test]
fn groups_not_dividing_channels() {
    for (ic, oc, g) in [(6, 4, 4), (4, 6, 4), (5, 5, 2), (3, 3, 4)] {
        let mut p = Conv2dParams::square(ic, oc, 3, 1, 1);
        p.groups = g;
        let frag = format!("conv groups {g} must divide in_channels {ic} and out_channels {oc}");
        invalid(p.validate(), &[&frag]);
        invalid(Conv2d::new(p, &[0; 1000], &wq1(), None), &[&frag]);
    }
}

#[test]
fn per_channel_qparams_of_the_wrong_length() {
    let wq = WeightQParams::per_channel(vec![0.1; 3], vec![0; 3]);
    invalid(
        PackedWeights::new(&[0; 8], 2, 4, &wq, None),
        &["3 weight scales and 3 zero points, expected 2 (per channel)"],
    );
    let wq = WeightQParams::per_channel(vec![0.1; 2], vec![0; 1]);
    invalid(
        PackedWeights::new(&[0; 8], 2, 4, &wq, None),
        &["2 weight scales and 1 zero points, expected 2"],
    );
    let wq = WeightQParams {
        per_channel: false,
        scales: vec![0.1, 0.1],
        zero_points: vec![0, 0],
    };
    invalid(
        PackedWeights::new(&[0; 8], 2, 4, &wq, None),
        &["expected 1 (per tensor)"],
    );
    let wq = WeightQParams::per_channel(vec![], vec![]);
    invalid(
        Conv2d::new(Conv2dParams::square(2, 4, 1, 1, 0), &[0; 8], &wq, None),
        &["conv weights", "expected 4 (per channel)"],
    );
}

// ---------------------------------------------------------------- ISA requests

#[test]
fn unsupported_isa_is_refused() {
    let foreign = if cfg!(target_arch = "x86_64") {
        Isa::Neon
    } else {
        Isa::Avx2
    };
    unsupported(GemmOptions::for_isa(foreign), "not supported by this CPU");
    let opts = GemmOptions {
        isa: foreign,
        saturate_pairs: false,
    };
    unsupported(
        PackedWeights::with_options(&[0; 6], 2, 3, &wq1(), None, &opts),
        "not supported",
    );
    let copts = ConvOptions {
        isa: foreign,
        accumulation: qkernels::Accumulation::Exact,
    };
    unsupported(
        Conv2d::with_options(
            Conv2dParams::square(1, 1, 1, 1, 0),
            &[0],
            &wq1(),
            None,
            &copts,
        ),
        "not supported",
    );
    unsupported(
        ops::quantize_u8_with_isa(foreign, &[1.0], Q, &mut [0]),
        "not supported",
    );
    unsupported(
        gemm::gemm_u8s8s32(foreign, 1, 1, 1, &[0], 1, &[0], 1, &mut [0], 1),
        "not supported",
    );
}

// ---------------------------------------------------------------- model files
//
// (tests/resnet18_format.rs, by the loader's author, covers more variations of each class;
// these pin one case of every class of the issue, plus duplicates and absurd sizes.)

mod model_file {
    use qkernels::Error;
    use qkernels::resnet18::Model;
    use safetensors::tensor::TensorView;
    use safetensors::{Dtype, SafeTensors};
    use std::collections::HashMap;

    type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

    fn model_bytes() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/digits_resnet18.safetensors"
        ))
        .unwrap()
    }

    fn rebuild(edit: impl FnOnce(&mut Tensors, &mut HashMap<String, String>)) -> Vec<u8> {
        let bytes = model_bytes();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut ts: Tensors = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
            .collect();
        edit(&mut ts, &mut meta);
        let views: Vec<(String, TensorView<'_>)> = ts
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, &Some(meta)).unwrap()
    }

    /// Asserts `Err(Format(msg))` with every fragment in `msg`.
    #[track_caller]
    fn format_error(bytes: &[u8], fragments: &[&str]) {
        match Model::from_bytes(bytes) {
            Err(Error::Format(m)) => {
                for f in fragments {
                    assert!(m.contains(f), "message {m:?} lacks {f:?}");
                }
            }
            Err(e) => panic!("expected a format error, got {e:?}"),
            Ok(_) => panic!("expected a format error, the model loaded"),
        }
    }

    fn set(ts: &mut Tensors, name: &str, dtype: Dtype, shape: Vec<usize>, data: Vec<u8>) {
        let t = ts.iter_mut().find(|t| t.0 == name).unwrap();
        *t = (name.to_string(), dtype, shape, data);
    }

    #[test]
    fn truncated() {
        let b = model_bytes();
        for cut in [0, 5, 8, 64, b.len() / 3, b.len() - 1] {
            format_error(&b[..cut], &["not a valid safetensors file"]);
        }
    }

    #[test]
    fn header_claiming_absurd_sizes_is_refused_before_allocating() {
        let b = model_bytes();
        // Header length of 2^60 bytes in an 11 MB file.
        let mut h = b.clone();
        h[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        format_error(&h, &["not a valid safetensors file"]);
        // A tensor whose shape claims 10^12 × 512 elements (its bytes are not in the file).
        let hdr_len = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        let hdr = std::str::from_utf8(&b[8..8 + hdr_len]).unwrap();
        let needle = "\"shape\":[10,512]";
        assert!(
            hdr.contains(needle),
            "fc.weight shape not found in the header"
        );
        let new_hdr = hdr.replacen(needle, "\"shape\":[1000000000000,512]", 1);
        let mut f = ((new_hdr.len()) as u64).to_le_bytes().to_vec();
        f.extend_from_slice(new_hdr.as_bytes());
        f.extend_from_slice(&b[8 + hdr_len..]);
        format_error(&f, &["not a valid safetensors file"]);
    }

    #[test]
    fn wrong_dtype() {
        let b = rebuild(|ts, _| {
            set(
                ts,
                "conv1.weight",
                Dtype::U8,
                vec![64, 3, 7, 7],
                vec![0; 64 * 3 * 49],
            );
        });
        format_error(&b, &["tensor `conv1.weight` has dtype U8, expected I8"]);
        let b = rebuild(|ts, _| {
            set(
                ts,
                "quant.scale",
                Dtype::F32,
                vec![1],
                0.1f32.to_le_bytes().to_vec(),
            );
        });
        format_error(&b, &["tensor `quant.scale` has dtype F32, expected F64"]);
    }

    #[test]
    fn wrong_shape() {
        let b = rebuild(|ts, _| {
            set(
                ts,
                "layer1.0.conv1.weight",
                Dtype::I8,
                vec![64, 64, 9],
                vec![0; 64 * 64 * 9],
            );
        });
        format_error(
            &b,
            &["tensor `layer1.0.conv1.weight` has shape [64, 64, 9], expected [64, 64, 3, 3]"],
        );
    }

    #[test]
    fn missing_tensor() {
        let b = rebuild(|ts, _| ts.retain(|t| t.0 != "layer2.0.downsample.0.weight"));
        format_error(&b, &["tensor `layer2.0.downsample.0.weight` missing"]);
    }

    #[test]
    fn duplicate_tensor() {
        // Rename one header key to another existing key of the same length: the JSON object
        // then holds `layer1.0.conv2.bias` twice (and no `layer1.0.conv1.bias`).
        let b = model_bytes();
        let hdr_len = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        let hdr = std::str::from_utf8(&b[8..8 + hdr_len]).unwrap();
        assert!(hdr.contains("\"layer1.0.conv1.bias\"") && hdr.contains("\"layer1.0.conv2.bias\""));
        let dup = hdr.replacen("\"layer1.0.conv1.bias\"", "\"layer1.0.conv2.bias\"", 1);
        assert_eq!(dup.len(), hdr.len());
        let mut f = b.clone();
        f[8..8 + hdr_len].copy_from_slice(dup.as_bytes());
        match Model::from_bytes(&f) {
            Err(Error::Format(m)) => assert!(
                m.contains("not a valid safetensors file") || m.contains("layer1.0.conv1.bias"),
                "{m}"
            ),
            Err(e) => panic!("expected a format error, got {e:?}"),
            Ok(_) => panic!("duplicate tensor accepted"),
        }
    }

    #[test]
    fn absurd_metadata() {
        for (key, value, fragment) in [
            ("num_classes", "1000000000000", "num_classes"),
            ("num_classes", "0", "num_classes"),
            ("input_size", "1000000,1000000", "input_size"),
            ("input_size", "18446744073709551615,2", "input_size"),
            ("input_channels", "100000", "input_channels"),
        ] {
            let b = rebuild(|_, meta| {
                meta.remove("labels");
                meta.insert(key.into(), value.into());
            });
            format_error(&b, &[fragment]);
        }
    }

    #[test]
    fn bad_quantization_parameters_in_the_file() {
        for (name, dtype, data, fragment) in [
            (
                "quant.scale",
                Dtype::F64,
                f64::NAN.to_le_bytes().to_vec(),
                "quant.scale",
            ),
            (
                "quant.scale",
                Dtype::F64,
                0f64.to_le_bytes().to_vec(),
                "quant.scale",
            ),
            (
                "quant.scale",
                Dtype::F64,
                1e-60f64.to_le_bytes().to_vec(),
                "quant.scale",
            ),
            (
                "quant.zero_point",
                Dtype::I32,
                256i32.to_le_bytes().to_vec(),
                "outside 0..=255",
            ),
        ] {
            let b = rebuild(|ts, _| set(ts, name, dtype, vec![1], data));
            format_error(&b, &[fragment]);
        }
    }

    #[test]
    fn absurd_run_shapes_fail_before_allocating() {
        let m = Model::from_bytes(&model_bytes()).unwrap();
        let mut logits = vec![0f32; 10];
        for (batch, h, w) in [
            (usize::MAX, 2, 2),
            (1, usize::MAX / 2, 3),
            (1, 1 << 31, 1 << 31),
            (0, 32, 32),
        ] {
            match m.run(&[0.0; 12], batch, h, w, &mut logits) {
                Err(Error::InvalidArgument(_)) => {}
                Err(e) => panic!("{batch}×{h}×{w}: {e:?}"),
                Ok(()) => panic!("{batch}×{h}×{w} accepted"),
            }
        }
    }
}

#[test]
fn image_preprocessing_rejects_bad_images() {
    use qkernels::resnet18::preprocess::{
        MAX_INPUT_ELEMENTS, image_to_input, normalize, resize_bilinear,
    };
    let (mean, std) = ([0.5f32; 3], [0.25f32; 3]);
    let plane = vec![0.5f32; 2 * 4 * 4];
    // A 2-plane image for a 3-channel model.
    invalid(
        image_to_input(&plane, 2, 4, 4, (8, 8), &mean, &std),
        &["2 planes", "3 channels"],
    );
    // An input size that would need absurd memory is refused before allocating.
    let one = vec![0.5f32; 16];
    invalid(
        image_to_input(&one, 1, 4, 4, (16384, 16384), &mean, &std),
        &["exceeds the limit", &MAX_INPUT_ELEMENTS.to_string()],
    );
    // Empty sizes and wrong slice lengths.
    let mut dst = vec![0.0f32; 4];
    invalid(
        resize_bilinear(&one, 1, 0, 4, 2, 2, &mut dst),
        &["empty size"],
    );
    invalid(
        resize_bilinear(&one, 1, 4, 4, 2, 3, &mut dst),
        &["resize destination"],
    );
    invalid(
        resize_bilinear(&one[..15], 1, 4, 4, 2, 2, &mut dst),
        &["resize source"],
    );
    let mut x = vec![0.0f32; 10];
    invalid(normalize(&mut x, &mean, &std), &["10 values", "3 means"]);
    invalid(normalize(&mut x, &mean, &std[..2]), &["2 stds"]);
    // And a valid call still works.
    assert_eq!(
        image_to_input(&one, 1, 4, 4, (2, 2), &mean, &std)
            .unwrap()
            .len(),
        12
    );
}
