//! The model loader on damaged files: every defect is an `Error::Format` naming the tensor or
//! metadata key at fault — never a panic. The damaged files are made from the shipped digits
//! model by removing, retyping or reshaping one tensor, or editing one metadata value.

use qkernels::Error;
use qkernels::resnet18::Model;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;

fn model_bytes() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/digits_resnet18.safetensors"
    ))
    .unwrap()
}

/// Rewrites the model with `edit` applied to its tensor list and metadata.
fn rebuild(
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>, &mut HashMap<String, String>),
) -> Vec<u8> {
    let bytes = model_bytes();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut ts: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
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

fn format_error(bytes: &[u8]) -> String {
    match Model::from_bytes(bytes) {
        Err(Error::Format(m)) => m,
        Err(e) => panic!("expected a format error, got {e}"),
        Ok(_) => panic!("expected a format error, the model loaded"),
    }
}

#[test]
fn unmodified_rebuild_loads() {
    let m = Model::from_bytes(&rebuild(|_, _| {})).unwrap();
    assert_eq!(m.num_classes(), 10);
    assert_eq!(m.metadata().labels.as_ref().unwrap()[7], "7");
    assert!(m.metadata().grayscale());
}

#[test]
fn missing_tensor_is_named() {
    for name in [
        "layer3.1.conv2.weight",
        "quant.scale",
        "layer2.0.add_relu.zero_point",
        "fc.bias",
    ] {
        let b = rebuild(|ts, _| ts.retain(|t| t.0 != name));
        if name == "fc.bias" {
            // biases are optional in the format (a conv without bias)
            assert!(Model::from_bytes(&b).is_ok());
            continue;
        }
        let e = format_error(&b);
        assert!(e.contains(name) && e.contains("missing"), "{e}");
    }
}

#[test]
fn wrong_dtype_and_shape_are_named() {
    let b = rebuild(|ts, _| {
        let t = ts
            .iter_mut()
            .find(|t| t.0 == "layer1.0.conv1.weight_scale")
            .unwrap();
        t.1 = Dtype::F32;
        t.3.truncate(t.3.len() / 2);
    });
    let e = format_error(&b);
    assert!(
        e.contains("layer1.0.conv1.weight_scale") && e.contains("dtype"),
        "{e}"
    );

    let b = rebuild(|ts, _| {
        let t = ts
            .iter_mut()
            .find(|t| t.0 == "layer4.0.conv2.weight")
            .unwrap();
        t.2 = vec![512, 512, 9];
    });
    let e = format_error(&b);
    assert!(
        e.contains("layer4.0.conv2.weight") && e.contains("shape"),
        "{e}"
    );

    let b = rebuild(|ts, _| {
        let t = ts.iter_mut().find(|t| t.0 == "conv1.weight").unwrap();
        t.2 = vec![64, 3, 9, 9];
        t.3 = vec![0; 64 * 3 * 81];
    });
    let e = format_error(&b);
    assert!(
        e.contains("conv1.weight") && e.contains("[64, 3, 7, 7]"),
        "{e}"
    );
}

#[test]
fn bad_quantization_parameters_are_named() {
    let b = rebuild(|ts, _| {
        let t = ts
            .iter_mut()
            .find(|t| t.0 == "layer2.1.conv1.zero_point")
            .unwrap();
        t.3 = 300i32.to_le_bytes().to_vec();
    });
    let e = format_error(&b);
    assert!(
        e.contains("layer2.1.conv1.zero_point") && e.contains("300"),
        "{e}"
    );
    let b = rebuild(|ts, _| {
        let t = ts.iter_mut().find(|t| t.0 == "fc.scale").unwrap();
        t.3 = (-1.0f64).to_le_bytes().to_vec();
    });
    assert!(format_error(&b).contains("fc.scale"));
    let b = rebuild(|ts, _| {
        let t = ts.iter_mut().find(|t| t.0 == "conv1.weight_scale").unwrap();
        t.3[..8].copy_from_slice(&f64::NAN.to_le_bytes());
    });
    assert!(format_error(&b).contains("conv1.weight_scale"));
    let b = rebuild(|ts, _| {
        let t = ts
            .iter_mut()
            .find(|t| t.0 == "layer1.1.conv2.bias")
            .unwrap();
        t.3[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    });
    assert!(format_error(&b).contains("layer1.1.conv2.bias"));
}

#[test]
fn absurd_metadata_is_named() {
    let cases: [(&str, Option<&str>, &str); 9] = [
        ("num_classes", Some("11"), "fc.weight"),
        ("num_classes", Some("-3"), "num_classes"),
        ("num_classes", Some("99999999999999999999"), "num_classes"),
        ("input_size", Some("32"), "input_size"),
        ("input_size", Some("0,32"), "input_size"),
        ("mean", Some("0.5,0.5"), "mean"),
        ("std", Some("0.5,0,0.5"), "std"),
        ("labels", Some("a,b"), "labels"),
        ("format", None, "format"),
    ];
    for (key, value, needle) in cases {
        let b = rebuild(|_, meta| {
            if key == "num_classes" {
                meta.remove("labels"); // else the label count is the first thing found wrong
            }
            match value {
                Some(v) => meta.insert(key.to_string(), v.to_string()),
                None => meta.remove(key),
            };
        });
        let e = format_error(&b);
        assert!(e.contains(needle), "{key}={value:?}: {e}");
    }
    let b = rebuild(|_, meta| {
        meta.insert("arch".into(), "resnet50".into());
    });
    assert!(format_error(&b).contains("arch"));
    // labels may also be a JSON array (names with commas)
    let b = rebuild(|_, meta| {
        let l: Vec<String> = (0..10).map(|i| format!("digit {i}, handwritten")).collect();
        meta.insert("labels".into(), serde_json::to_string(&l).unwrap());
    });
    let m = Model::from_bytes(&b).unwrap();
    assert_eq!(m.metadata().label(3), "digit 3, handwritten");
}

#[test]
fn truncated_or_corrupt_files_are_errors() {
    let bytes = model_bytes();
    for cut in [0, 7, 8, 100, 5000, bytes.len() / 2, bytes.len() - 1] {
        let e = format_error(&bytes[..cut]);
        assert!(e.contains("safetensors"), "cut at {cut}: {e}");
    }
    let mut b = bytes.clone();
    b[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(format_error(&b).contains("safetensors"));
    let mut b = bytes.clone();
    b[10] = b'#';
    format_error(&b);
    assert!(format_error(b"not a model at all").contains("safetensors"));
}

#[test]
fn inputs_of_any_size_and_bad_arguments() {
    let m = Model::from_bytes(&model_bytes()).unwrap();
    // every size down to 1x1 runs (each stage then is 1x1); 0 and wrong lengths are errors
    for (h, w) in [(1, 1), (7, 13), (33, 32)] {
        let mut l = vec![0f32; 20];
        m.run(&vec![0.1; 2 * 3 * h * w], 2, h, w, &mut l).unwrap();
    }
    let mut l = vec![0f32; 10];
    assert!(matches!(
        m.run(&[], 1, 0, 32, &mut l),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        m.run(&[0.0; 100], 1, 32, 32, &mut l),
        Err(Error::InvalidArgument(_))
    ));
    let mut short = vec![0f32; 9];
    assert!(matches!(
        m.run(&vec![0.0; 3072], 1, 32, 32, &mut short),
        Err(Error::InvalidArgument(_))
    ));
    // absurd sizes fail before allocating
    assert!(m.run(&[0.0; 3], 1, usize::MAX / 2, 3, &mut l).is_err());
    assert!(matches!(
        Model::load("no/such/file.safetensors"),
        Err(Error::Io { .. })
    ));
}
