//! ResNet-18 end to end against PyTorch (fbgemm), byte for byte, on every supported ISA:
//!
//! * the golden random-weight ResNet-18 (`tests/data/resnet18*.safetensors`, 2 inputs of
//!   224×224): every intermediate activation of input 0 and the quantized logits of both
//!   inputs; the dequantized float logits bit for bit;
//! * the trained digits model (`models/digits_resnet18.safetensors`) on the 297 scikit-learn
//!   test digits (`tests/data/digits_test.safetensors`): the float input is rebuilt from the
//!   8×8 images with the library's preprocessing (bit-identical to the stored PyTorch input, as
//!   `tools/make_fixtures.py` checks), and all 297 quantized logits must match.

use qkernels::Isa;
use qkernels::resnet18::{Model, ModelOptions, Workspace, preprocess};
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn tensor(st: &SafeTensors<'_>, name: &str, dtype: Dtype) -> (Vec<usize>, Vec<u8>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("fixture tensor {name}"));
    assert_eq!(t.dtype(), dtype, "{name}");
    (t.shape().to_vec(), t.data().to_vec())
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn isas() -> Vec<Isa> {
    qkernels::isa::require_from_env().expect("QKERNELS_REQUIRE_ISA");
    Isa::supported()
}

#[test]
fn golden_resnet18_every_activation_every_isa() {
    let io = std::fs::read(repo("tests/data/resnet18_io.safetensors")).unwrap();
    let io = SafeTensors::deserialize(&io).unwrap();
    let (shape, x) = tensor(&io, "input", Dtype::F32);
    let x = f32s(&x);
    let (n, h, w) = (shape[0], shape[2], shape[3]);
    assert_eq!((n, shape[1]), (2, 3));
    let (_, logits_q) = tensor(&io, "logits_q", Dtype::U8);
    let (_, logits) = tensor(&io, "logits", Dtype::F32);
    let logits = f32s(&logits);
    let mut golden_acts: Vec<String> = io
        .names()
        .into_iter()
        .filter_map(|k| k.strip_prefix("act/").map(str::to_string))
        .collect();
    golden_acts.sort();
    assert_eq!(golden_acts.len(), 32, "fixture activations");
    for isa in isas() {
        let model = Model::load_with(
            repo("tests/data/resnet18.safetensors"),
            &ModelOptions::for_isa(isa),
        )
        .unwrap();
        assert_eq!(model.num_classes(), 1000);
        assert_eq!(model.input_size(), (224, 224));
        let acts = model.run_traced(&x, n, h, w).unwrap();
        let mut checked = 0;
        for a in &acts {
            let Ok(t) = io.tensor(&format!("act/{}", a.name)) else {
                continue;
            };
            let g = t.data();
            // fc is [n, classes] in PyTorch, [n, classes, 1, 1] here
            let dims = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
            assert_eq!(
                dims(&a.shape[1..]),
                dims(&t.shape()[1..]),
                "{isa} {}: shape",
                a.name
            );
            let per_image = g.len();
            let ours = &a.data[..per_image];
            let diff = ours.iter().zip(g).filter(|(p, q)| p != q).count();
            assert_eq!(
                diff, 0,
                "{isa} {}: {diff} of {per_image} bytes differ",
                a.name
            );
            checked += 1;
        }
        assert_eq!(
            checked,
            golden_acts.len(),
            "{isa}: every golden activation compared"
        );
        let fc = acts.last().unwrap();
        assert_eq!(fc.name, "fc");
        assert_eq!(fc.data, logits_q, "{isa}: quantized logits of both inputs");

        let mut q = vec![0u8; n * 1000];
        model.run_quantized(&x, n, h, w, &mut q).unwrap();
        assert_eq!(q, logits_q, "{isa}: run_quantized");
        let mut f = vec![0f32; n * 1000];
        model.run(&x, n, h, w, &mut f).unwrap();
        let fb: Vec<u32> = f.iter().map(|v| v.to_bits()).collect();
        let gb: Vec<u32> = logits.iter().map(|v| v.to_bits()).collect();
        assert_eq!(fb, gb, "{isa}: dequantized logits bit for bit");

        // batch 1 (input 1 alone) gives the same bytes as within the batch
        let mut q1 = vec![0u8; 1000];
        let one = &x[3 * h * w..];
        model.run_quantized(one, 1, h, w, &mut q1).unwrap();
        assert_eq!(q1, logits_q[1000..], "{isa}: batch 1");
    }
}

struct Digits {
    images: Vec<u8>,
    labels: Vec<i64>,
    logits_q: Vec<u8>,
    logits: Vec<f32>,
}

fn digits() -> Digits {
    let b = std::fs::read(repo("tests/data/digits_test.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&b).unwrap();
    let (s, images) = tensor(&st, "images", Dtype::U8);
    assert_eq!(s, [297, 8, 8]);
    let (_, labels) = tensor(&st, "labels", Dtype::I64);
    let labels = labels
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (s, logits_q) = tensor(&st, "logits_q", Dtype::U8);
    assert_eq!(s, [297, 10]);
    let (_, logits) = tensor(&st, "logits", Dtype::F32);
    Digits {
        images,
        labels,
        logits_q,
        logits: f32s(&logits),
    }
}

/// The float model input of the 8×8 digits (values 0..16): x/16 → bilinear → 3 channels → norm.
fn digits_input(model: &Model, images: &[u8]) -> Vec<f32> {
    let meta = model.metadata();
    images
        .chunks_exact(64)
        .flat_map(|img| {
            let plane: Vec<f32> = img.iter().map(|&v| v as f32 / 16.0).collect();
            preprocess::image_to_input(&plane, 1, 8, 8, meta.input_size, &meta.mean, &meta.std)
                .unwrap()
        })
        .collect()
}

#[test]
fn digits_model_297_real_images_every_isa() {
    let d = digits();
    let n = d.labels.len();
    for isa in isas() {
        let model = Model::load_with(
            repo("models/digits_resnet18.safetensors"),
            &ModelOptions::for_isa(isa),
        )
        .unwrap();
        assert_eq!(model.num_classes(), 10);
        assert_eq!(model.input_size(), (32, 32));
        let x = digits_input(&model, &d.images);
        let mut ws = Workspace::new();
        let mut q = vec![0u8; n * 10];
        // uneven batches: batch composition must not change any byte
        let mut i = 0;
        for bs in [1usize, 64, 100, 132].iter().cycle() {
            if i >= n {
                break;
            }
            let b = (*bs).min(n - i);
            model
                .run_quantized_with(
                    &mut ws,
                    &x[i * 3072..(i + b) * 3072],
                    b,
                    32,
                    32,
                    &mut q[i * 10..(i + b) * 10],
                )
                .unwrap();
            i += b;
        }
        for img in 0..n {
            assert_eq!(
                q[img * 10..][..10],
                d.logits_q[img * 10..][..10],
                "{isa}: image {img} quantized logits"
            );
        }
        let mut f = vec![0f32; n * 10];
        model.run_with(&mut ws, &x, n, 32, 32, &mut f).unwrap();
        let fb: Vec<u32> = f.iter().map(|v| v.to_bits()).collect();
        let gb: Vec<u32> = d.logits.iter().map(|v| v.to_bits()).collect();
        assert_eq!(fb, gb, "{isa}: dequantized logits");
        // the metadata's claim: 96.97 % (288 of 297) int8 accuracy
        let correct = (0..n)
            .filter(|&i| {
                let row = &q[i * 10..][..10];
                let best = (0..10)
                    .max_by_key(|&c| (row[c], std::cmp::Reverse(c)))
                    .unwrap();
                best as i64 == d.labels[i]
            })
            .count();
        assert_eq!(correct, 288, "{isa}: accuracy");
    }
}

/// `preprocess::resize_bilinear` against PyTorch's `F.interpolate(mode="bilinear",
/// align_corners=False)` on random images, up and down (tools/make_resize_golden.py).
#[test]
fn bilinear_resize_matches_pytorch_bit_for_bit() {
    let b = std::fs::read(repo("tests/data/resize_golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&b).unwrap();
    let mut cases = 0;
    for i in 0.. {
        let Ok(x) = st.tensor(&format!("case{i}/x")) else {
            break;
        };
        let y = st.tensor(&format!("case{i}/y")).unwrap();
        let (c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let (oh, ow) = (y.shape()[1], y.shape()[2]);
        let mut out = vec![0f32; c * oh * ow];
        preprocess::resize_bilinear(&f32s(x.data()), c, h, w, oh, ow, &mut out).unwrap();
        let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
        let want: Vec<u32> = f32s(y.data()).iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "case {i}: {c}x{h}x{w} -> {oh}x{ow}");
        cases += 1;
    }
    assert_eq!(cases, 10);
}

/// One model shared by four threads at once, each with its own workspace: every thread gets
/// PyTorch's bytes; a workspace stops growing after its first (largest) run.
#[test]
fn shared_model_from_several_threads() {
    let d = digits();
    let model = Model::load(repo("models/digits_resnet18.safetensors")).unwrap();
    let x = digits_input(&model, &d.images[..64 * 64]);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (model, x, d) = (&model, &x, &d);
            s.spawn(move || {
                let mut ws = Workspace::new();
                let imgs = t * 16..(t + 1) * 16;
                let xs = &x[imgs.start * 3072..imgs.end * 3072];
                let mut q = vec![0u8; 16 * 10];
                model
                    .run_quantized_with(&mut ws, xs, 16, 32, 32, &mut q)
                    .unwrap();
                assert_eq!(q, d.logits_q[imgs.start * 10..imgs.end * 10], "thread {t}");
                let cap = ws.capacity_bytes();
                for b in [16, 3, 1] {
                    model
                        .run_quantized_with(&mut ws, &xs[..b * 3072], b, 32, 32, &mut q[..b * 10])
                        .unwrap();
                    assert_eq!(ws.capacity_bytes(), cap, "no growth after warm-up");
                }
            });
        }
    });
}
