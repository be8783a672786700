//! `model_loader`: `Model::from_bytes` on arbitrary bytes must return `Ok` or `Err`, never
//! panic, and never allocate more than the file justifies.
//!
//! Two input modes (first byte):
//! * **raw**: the bytes are the file;
//! * **header**: the bytes are a safetensors JSON header (the seed corpus holds the real
//!   ResNet-18 header, ~17 KB); the target builds the file around it — the 8-byte length
//!   prefix, then a data section sized to the largest `data_offsets` end (capped at 16 MiB) and
//!   filled per dtype with plausible values (F64 scales 0.05, I32 zero points 3, F32 0.5, I8
//!   pseudo-random), so mutations of names, dtypes, shapes, offsets and metadata reach the
//!   model validation and the packing, not just the safetensors parser.

use qkernels::resnet18::{Model, ModelOptions};

/// Largest data section the header mode synthesises.
const MAX_DATA: usize = 16 << 20;

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let opts = ModelOptions::for_isa(qkernels::isa::Isa::Scalar);
    if mode & 1 == 0 {
        let _ = Model::from_bytes_with(rest, &opts);
        return;
    }
    let Some(file) = build_file(rest) else {
        return;
    };
    if let Ok(model) = Model::from_bytes_with(&file, &opts) {
        // A model that loads must also run (tiny input, so it stays fast).
        let (c, hw) = (model.input_channels(), 32usize);
        let x = vec![0.25f32; c * hw * hw];
        let mut logits = vec![0f32; model.num_classes()];
        model
            .run(&x, 1, hw, hw, &mut logits)
            .expect("a loaded model runs");
    }
}

/// The file for a JSON header, or `None` if the header is not a JSON object.
pub fn build_file(header: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(header).ok()?;
    let obj = v.as_object()?;
    let mut end = 0usize;
    let mut fills = Vec::new();
    for (name, t) in obj {
        if name == "__metadata__" {
            continue;
        }
        let (Some(dtype), Some(off)) = (
            t.get("dtype").and_then(|d| d.as_str()),
            t.get("data_offsets"),
        ) else {
            continue;
        };
        let (Some(a), Some(b)) = (
            off.get(0).and_then(|x| x.as_u64()),
            off.get(1).and_then(|x| x.as_u64()),
        ) else {
            continue;
        };
        let (a, b) = (usize::try_from(a).ok()?, usize::try_from(b).ok()?);
        if b > MAX_DATA || a > b {
            if b > MAX_DATA {
                return None;
            }
            continue;
        }
        end = end.max(b);
        fills.push((dtype.to_string(), a, b));
    }
    let mut data = vec![0u8; end];
    for (dtype, a, b) in fills {
        let span = &mut data[a..b];
        match dtype.as_str() {
            "F64" => span
                .chunks_exact_mut(8)
                .for_each(|c| c.copy_from_slice(&0.05f64.to_le_bytes())),
            "I32" => span
                .chunks_exact_mut(4)
                .for_each(|c| c.copy_from_slice(&3i32.to_le_bytes())),
            "F32" => span
                .chunks_exact_mut(4)
                .for_each(|c| c.copy_from_slice(&0.5f32.to_le_bytes())),
            _ => span
                .iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = (i.wrapping_mul(2654435761) >> 13) as u8),
        }
    }
    let mut file = Vec::with_capacity(8 + header.len() + data.len());
    file.extend_from_slice(&(header.len() as u64).to_le_bytes());
    file.extend_from_slice(header);
    file.extend_from_slice(&data);
    Some(file)
}
