//! Shared test support: the golden op cases produced by PyTorch (`tests/data/ops.*`).
#![allow(dead_code)]

use qkernels_ref::{QParams, WeightQParams};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// Repository-relative path of a test fixture.
pub fn data_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Every golden op case, with its tensors.
pub struct Golden {
    pub cases: Vec<Value>,
    bytes: Vec<u8>,
}

/// One tensor of a golden case.
pub struct Tensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Tensor {
    pub fn u8(&self) -> Vec<u8> {
        assert_eq!(self.dtype, Dtype::U8);
        self.data.clone()
    }
    pub fn i8(&self) -> Vec<i8> {
        assert_eq!(self.dtype, Dtype::I8);
        self.data.iter().map(|&b| b as i8).collect()
    }
    pub fn f32(&self) -> Vec<f32> {
        assert_eq!(self.dtype, Dtype::F32);
        self.data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl Golden {
    pub fn load() -> Golden {
        let json = std::fs::read_to_string(data_path("ops.json")).expect("tests/data/ops.json");
        let cases: Vec<Value> = serde_json::from_str(&json).expect("ops.json parses");
        let bytes =
            std::fs::read(data_path("ops.safetensors")).expect("tests/data/ops.safetensors");
        Golden { cases, bytes }
    }

    /// The tensor playing `role` in `case` (panics if missing: a golden case is never partial).
    pub fn tensor(&self, case: &Value, role: &str) -> Tensor {
        let st = SafeTensors::deserialize(&self.bytes).expect("ops.safetensors parses");
        let key = case["tensors"][role]
            .as_str()
            .unwrap_or_else(|| panic!("case {} has no tensor {role}", case["name"]));
        let view = st
            .tensor(key)
            .unwrap_or_else(|e| panic!("tensor {key}: {e}"));
        Tensor {
            dtype: view.dtype(),
            shape: view.shape().to_vec(),
            data: view.data().to_vec(),
        }
    }

    pub fn has_tensor(case: &Value, role: &str) -> bool {
        case["tensors"].get(role).is_some()
    }
}

pub fn name(case: &Value) -> &str {
    case["name"].as_str().expect("case name")
}

pub fn qparams(v: &Value) -> QParams {
    QParams::new(
        v["scale"].as_f64().expect("scale"),
        v["zero_point"].as_i64().expect("zero_point") as i32,
    )
}

pub fn weight_qparams(v: &Value) -> WeightQParams {
    let scales: Vec<f64> = v["scales"]
        .as_array()
        .expect("scales")
        .iter()
        .map(|s| s.as_f64().unwrap())
        .collect();
    let zps: Vec<i32> = v["zero_points"]
        .as_array()
        .expect("zero_points")
        .iter()
        .map(|s| s.as_i64().unwrap() as i32)
        .collect();
    if v["per_channel"].as_bool().expect("per_channel") {
        WeightQParams::per_channel(scales, zps)
    } else {
        WeightQParams::per_tensor(scales[0], zps[0])
    }
}

/// A scalar or `[h, w]` pair parameter.
pub fn pair(v: &Value) -> (usize, usize) {
    match v {
        Value::Array(a) => (
            a[0].as_u64().unwrap() as usize,
            a[1].as_u64().unwrap() as usize,
        ),
        _ => {
            let x = v.as_u64().expect("integer parameter") as usize;
            (x, x)
        }
    }
}

/// Geometry of a golden conv case: `x` is NCHW `[n, c, h, w]`, `w` is OIHW.
pub fn conv_geometry(x: &Tensor, w: &Tensor, p: &Value) -> qkernels_ref::Conv2dGeometry {
    let (stride_h, stride_w) = pair(&p["stride"]);
    let (pad_h, pad_w) = pair(&p["padding"]);
    let (dilation_h, dilation_w) = pair(&p["dilation"]);
    qkernels_ref::Conv2dGeometry {
        batch: x.shape[0],
        in_c: x.shape[1],
        in_h: x.shape[2],
        in_w: x.shape[3],
        out_c: w.shape[0],
        kernel_h: w.shape[2],
        kernel_w: w.shape[3],
        stride_h,
        stride_w,
        pad_h,
        pad_w,
        dilation_h,
        dilation_w,
        groups: p["groups"].as_u64().expect("groups") as usize,
    }
}

/// f32 bit patterns, so float outputs compare exactly (NaN included).
pub fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}
