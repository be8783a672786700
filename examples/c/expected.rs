//! Writes what the C example (`examples/c/main.c`) must print, computed independently of the C
//! ABI, plus the model input it reads. Used by `scripts/test-c-example.sh`:
//!
//! ```text
//! cargo run --example c_example_expected -- OUT_DIR
//! ```
//!
//! writes `OUT_DIR/input.f32` (digit 0 of the scikit-learn test set, preprocessed by the
//! library exactly as `tests/resnet18_golden.rs` checks against PyTorch) and
//! `OUT_DIR/expected.txt`. The conv and add values come from `qkernels-ref` (the scalar
//! specification), the logits and the label from PyTorch (`tests/data/digits_test.safetensors`).
//! Lines the C program starts with `#` are commentary and not compared.

use qkernels::reference as r;
use qkernels::resnet18::{Model, preprocess};
use qkernels::{Accumulation, Conv2dGeometry, QParams, WeightQParams};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The digit the example classifies.
const SAMPLE: usize = 0;

fn u8_block(out: &mut String, title: &str, v: &[u8]) {
    out.push_str(title);
    out.push(':');
    for (i, x) in v.iter().enumerate() {
        out.push_str(if i % 24 == 0 { "\n  " } else { " " });
        write!(out, "{x}").unwrap();
    }
    out.push('\n');
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: c_example_expected OUT_DIR")?,
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = String::new();
    writeln!(
        out,
        "qkernels {}, isa {}",
        qkernels::VERSION,
        qkernels::active_isa()
    )?;

    // 1. conv2d: the same deterministic tensors as main.c.
    let (n, h, w, ic, oc, k) = (1usize, 6usize, 6usize, 8usize, 4usize, 3usize);
    let x: Vec<u8> = (0..n * h * w * ic)
        .map(|i| ((i * 37 + 11) % 256) as u8)
        .collect();
    let wt: Vec<i8> = (0..oc * ic * k * k)
        .map(|i| ((i * 29 + 5) % 15) as i8 - 7)
        .collect();
    let wq = WeightQParams::per_channel(vec![0.002, 0.0025, 0.003, 0.0035], vec![0, 0, 0, 0]);
    let bias = [0.5f32, -1.25, 2.0, 0.0];
    let geo = Conv2dGeometry {
        batch: n,
        in_h: h,
        in_w: w,
        in_c: ic,
        out_c: oc,
        kernel_h: k,
        kernel_w: k,
        stride_h: 1,
        stride_w: 1,
        pad_h: 1,
        pad_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        groups: 1,
    };
    let (qx, qy) = (QParams::new(0.05, 3), QParams::new(0.1, 128));
    let y = r::conv2d_nhwc(
        &geo,
        &x,
        qx,
        &wt,
        &wq,
        Some(&bias),
        qy,
        true,
        Accumulation::Exact,
    );
    write!(
        out,
        "conv2d+relu output [{n}, {}, {}, {oc}] NHWC",
        geo.out_h(),
        geo.out_w()
    )?;
    u8_block(&mut out, "", &y);

    // 2. add.
    let b: Vec<u8> = (0..y.len()).map(|i| ((i * 53 + 7) % 256) as u8).collect();
    let (qb, qsum) = (QParams::new(0.08, 120), QParams::new(0.15, 64));
    u8_block(&mut out, "add output", &r::add(&y, qy, &b, qb, qsum, false));

    // 3. error statuses, from the C ABI's own enum.
    use qkernels::ffi::qk_status::*;
    writeln!(
        out,
        "error demo: NULL weights -> status {}",
        QK_ERR_NULL_POINTER as i32
    )?;
    writeln!(
        out,
        "error demo: scale 0 -> status {}",
        QK_ERR_INVALID_ARGUMENT as i32
    )?;
    writeln!(
        out,
        "error demo: the next good call -> status {}",
        QK_OK as i32
    )?;

    // 4. the model: PyTorch's logits for the sample.
    let model = Model::load(root.join("models/digits_resnet18.safetensors"))?;
    let meta = model.metadata();
    let (ih, iw) = meta.input_size;
    writeln!(
        out,
        "model: {} classes, input [1, {}, {ih}, {iw}]",
        meta.num_classes, meta.input_channels
    )?;
    let bytes = std::fs::read(root.join("tests/data/digits_test.safetensors"))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let classes = meta.num_classes;
    let image = &st.tensor("images")?.data()[SAMPLE * 64..(SAMPLE + 1) * 64];
    let plane: Vec<f32> = image.iter().map(|&v| f32::from(v) / 16.0).collect();
    let input =
        preprocess::image_to_input(&plane, 1, 8, 8, meta.input_size, &meta.mean, &meta.std)?;
    let logits_q = &st.tensor("logits_q")?.data()[SAMPLE * classes..(SAMPLE + 1) * classes];
    let logits: Vec<f32> = st.tensor("logits")?.data()[SAMPLE * classes * 4..]
        .chunks_exact(4)
        .take(classes)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let label_bytes = &st.tensor("labels")?.data()[SAMPLE * 8..(SAMPLE + 1) * 8];
    let label = i64::from_le_bytes(label_bytes.try_into()?);
    u8_block(&mut out, "logits (uint8)", logits_q);
    out.push_str("logits (float bits):");
    for v in &logits {
        write!(out, " {:08x}", v.to_bits())?;
    }
    out.push('\n');
    // First maximum, as the C program picks it.
    let best = (0..classes).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
    writeln!(out, "prediction: {best}")?;
    if best as i64 != label {
        return Err(format!("sample {SAMPLE}: PyTorch predicts {best}, label {label}").into());
    }

    std::fs::create_dir_all(&dir)?;
    let raw: Vec<u8> = input.iter().flat_map(|v| v.to_ne_bytes()).collect();
    std::fs::write(dir.join("input.f32"), raw)?;
    std::fs::write(dir.join("expected.txt"), out)?;
    eprintln!(
        "wrote {} and {} (digit {SAMPLE}, label {label})",
        dir.join("input.f32").display(),
        dir.join("expected.txt").display()
    );
    Ok(())
}
