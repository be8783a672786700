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

/// An implementation under test: the reference, the public API on one ISA, the C ABI, …
/// Every golden case is driven through one of these by [`run_case`].
pub trait Backend {
    fn quantize_u8(&self, x: &[f32], q: QParams) -> Vec<u8>;
    fn quantize_i8(&self, x: &[f32], q: QParams) -> Vec<i8>;
    fn dequantize_u8(&self, x: &[u8], q: QParams) -> Vec<f32>;
    fn add(
        &self,
        a: &[u8],
        qa: QParams,
        b: &[u8],
        qb: QParams,
        out: QParams,
        relu: bool,
    ) -> Vec<u8>;
    /// NHWC in, NHWC out.
    #[allow(clippy::too_many_arguments)]
    fn conv2d(
        &self,
        geo: &qkernels_ref::Conv2dGeometry,
        x_nhwc: &[u8],
        xq: QParams,
        w_oihw: &[i8],
        wq: &WeightQParams,
        bias: Option<&[f32]>,
        outq: QParams,
        relu: bool,
        mode: qkernels_ref::Accumulation,
    ) -> Vec<u8>;
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        m: usize,
        k: usize,
        n: usize,
        x: &[u8],
        xq: QParams,
        w: &[i8],
        wq: &WeightQParams,
        bias: Option<&[f32]>,
        outq: QParams,
        relu: bool,
        mode: qkernels_ref::Accumulation,
    ) -> Vec<u8>;
    /// NHWC in, NHWC out `(y, oh, ow)`.
    #[allow(clippy::too_many_arguments)]
    fn max_pool2d(
        &self,
        x: &[u8],
        n: usize,
        h: usize,
        w: usize,
        c: usize,
        p: &qkernels_ref::Pool2d,
    ) -> (Vec<u8>, usize, usize);
    #[allow(clippy::too_many_arguments)]
    fn adaptive_avg_pool2d(
        &self,
        x: &[u8],
        n: usize,
        h: usize,
        w: usize,
        c: usize,
        oh: usize,
        ow: usize,
        q: QParams,
    ) -> Vec<u8>;
}

/// The accumulation modes a golden case is checked in: saturating conv cases in all three
/// (exact vs `y_exact`, saturating vs `y`); other convs exact and depthwise-saturating (they were
/// produced on a VNNI CPU, where only the depthwise kernel saturates); everything else exact.
pub fn modes_for(case: &Value) -> &'static [qkernels_ref::Accumulation] {
    use qkernels_ref::Accumulation::*;
    let sat = case["params"]["fbgemm_i16_saturation"]
        .as_bool()
        .unwrap_or(false);
    match case["op"].as_str() {
        Some("conv2d") if sat => &[Exact, SaturateDepthwise, SaturateAll],
        Some("conv2d") => &[Exact, SaturateDepthwise],
        _ => &[Exact],
    }
}

/// Runs one golden case through `be` in `mode`; returns `(actual, expected)` as bytes (floats as
/// their little-endian bit patterns). Panics on an unknown op: a case is never skipped.
pub fn run_case(
    g: &Golden,
    case: &Value,
    mode: qkernels_ref::Accumulation,
    be: &dyn Backend,
) -> (Vec<u8>, Vec<u8>) {
    use qkernels_ref as r;
    let p = &case["params"];
    let op = case["op"].as_str().expect("op");
    let i8_bytes = |v: Vec<i8>| v.into_iter().map(|b| b as u8).collect::<Vec<u8>>();
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    match op {
        "quantize" => {
            let x = g.tensor(case, "x").f32();
            let q = qparams(p);
            match p["dtype"].as_str().unwrap() {
                "quint8" => (be.quantize_u8(&x, q), g.tensor(case, "y").u8()),
                "qint8" => (
                    i8_bytes(be.quantize_i8(&x, q)),
                    i8_bytes(g.tensor(case, "y").i8()),
                ),
                d => panic!("{}: unknown dtype {d}", name(case)),
            }
        }
        "dequantize" => {
            assert_eq!(p["dtype"].as_str(), Some("quint8"), "{}", name(case));
            let x = g.tensor(case, "x").u8();
            (
                f32_bytes(&be.dequantize_u8(&x, qparams(p))),
                f32_bytes(&g.tensor(case, "y").f32()),
            )
        }
        "add" => {
            let (a, b) = (g.tensor(case, "a"), g.tensor(case, "b"));
            assert_eq!(a.shape, b.shape);
            let y = be.add(
                &a.u8(),
                qparams(&p["a"]),
                &b.u8(),
                qparams(&p["b"]),
                qparams(&p["out"]),
                p["relu"].as_bool().unwrap(),
            );
            (y, g.tensor(case, "y").u8())
        }
        "conv2d" => {
            let (x, w) = (g.tensor(case, "x"), g.tensor(case, "w"));
            let geo = conv_geometry(&x, &w, p);
            let xs = &x.shape;
            let x_nhwc = r::nchw_to_nhwc(&x.u8(), xs[0], xs[1], xs[2], xs[3]);
            let bias = Golden::has_tensor(case, "bias").then(|| g.tensor(case, "bias").f32());
            let y = be.conv2d(
                &geo,
                &x_nhwc,
                qparams(&p["input"]),
                &w.i8(),
                &weight_qparams(&p["weight"]),
                bias.as_deref(),
                qparams(&p["out"]),
                p["relu"].as_bool().unwrap(),
                mode,
            );
            let sat = p["fbgemm_i16_saturation"].as_bool().unwrap_or(false);
            let want = if sat && mode == qkernels_ref::Accumulation::Exact {
                g.tensor(case, "y_exact").u8()
            } else {
                g.tensor(case, "y").u8()
            };
            assert_eq!(
                y.len(),
                geo.batch * geo.out_c * geo.out_h() * geo.out_w(),
                "{}",
                name(case)
            );
            (
                r::nhwc_to_nchw(&y, geo.batch, geo.out_c, geo.out_h(), geo.out_w()),
                want,
            )
        }
        "linear" => {
            let (x, w) = (g.tensor(case, "x"), g.tensor(case, "w"));
            let (m, k, n) = (x.shape[0], x.shape[1], w.shape[0]);
            let bias = Golden::has_tensor(case, "bias").then(|| g.tensor(case, "bias").f32());
            let y = be.linear(
                m,
                k,
                n,
                &x.u8(),
                qparams(&p["input"]),
                &w.i8(),
                &weight_qparams(&p["weight"]),
                bias.as_deref(),
                qparams(&p["out"]),
                p["relu"].as_bool().unwrap(),
                mode,
            );
            (y, g.tensor(case, "y").u8())
        }
        "max_pool2d" => {
            assert_eq!(p["layout"].as_str(), Some("nhwc"));
            let x = g.tensor(case, "x");
            let s = &x.shape;
            let (k, st, pad) = (pair(&p["kernel"]), pair(&p["stride"]), pair(&p["padding"]));
            let pool = qkernels_ref::Pool2d {
                kernel_h: k.0,
                kernel_w: k.1,
                stride_h: st.0,
                stride_w: st.1,
                pad_h: pad.0,
                pad_w: pad.1,
                dilation_h: 1,
                dilation_w: 1,
            };
            let xn = r::nchw_to_nhwc(&x.u8(), s[0], s[1], s[2], s[3]);
            let (y, oh, ow) = be.max_pool2d(&xn, s[0], s[2], s[3], s[1], &pool);
            (
                r::nhwc_to_nchw(&y, s[0], s[1], oh, ow),
                g.tensor(case, "y").u8(),
            )
        }
        "adaptive_avg_pool2d" => {
            assert_eq!(p["layout"].as_str(), Some("nhwc"));
            let x = g.tensor(case, "x");
            let s = &x.shape;
            let (oh, ow) = pair(&p["output_size"]);
            let xn = r::nchw_to_nhwc(&x.u8(), s[0], s[1], s[2], s[3]);
            let y =
                be.adaptive_avg_pool2d(&xn, s[0], s[2], s[3], s[1], oh, ow, qparams(&p["input"]));
            (
                r::nhwc_to_nchw(&y, s[0], s[1], oh, ow),
                g.tensor(case, "y").u8(),
            )
        }
        other => panic!("{}: unknown golden op {other:?}", name(case)),
    }
}

/// Drives every golden case through `be` in every applicable mode and asserts byte equality.
/// Returns the number of (case, mode) checks.
pub fn check_all(g: &Golden, be: &dyn Backend, label: &str) -> usize {
    assert_eq!(g.cases.len(), 77, "golden case count");
    let mut checked = 0;
    for case in &g.cases {
        for &mode in modes_for(case) {
            let (got, want) = run_case(g, case, mode, be);
            assert_eq!(
                got.len(),
                want.len(),
                "{label}: {} ({mode:?}): length",
                name(case)
            );
            let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                bad,
                0,
                "{label}: {} ({mode:?}): {bad} of {} bytes differ",
                name(case),
                want.len()
            );
            checked += 1;
        }
    }
    checked
}

/// The scalar reference as a [`Backend`].
pub struct RefBackend;

impl Backend for RefBackend {
    fn quantize_u8(&self, x: &[f32], q: QParams) -> Vec<u8> {
        qkernels_ref::quantize_u8(x, q)
    }
    fn quantize_i8(&self, x: &[f32], q: QParams) -> Vec<i8> {
        qkernels_ref::quantize_i8(x, q)
    }
    fn dequantize_u8(&self, x: &[u8], q: QParams) -> Vec<f32> {
        qkernels_ref::dequantize_u8(x, q)
    }
    fn add(
        &self,
        a: &[u8],
        qa: QParams,
        b: &[u8],
        qb: QParams,
        out: QParams,
        relu: bool,
    ) -> Vec<u8> {
        qkernels_ref::add(a, qa, b, qb, out, relu)
    }
    fn conv2d(
        &self,
        geo: &qkernels_ref::Conv2dGeometry,
        x: &[u8],
        xq: QParams,
        w: &[i8],
        wq: &WeightQParams,
        bias: Option<&[f32]>,
        outq: QParams,
        relu: bool,
        mode: qkernels_ref::Accumulation,
    ) -> Vec<u8> {
        qkernels_ref::conv2d_nhwc(geo, x, xq, w, wq, bias, outq, relu, mode)
    }
    fn linear(
        &self,
        m: usize,
        k: usize,
        n: usize,
        x: &[u8],
        xq: QParams,
        w: &[i8],
        wq: &WeightQParams,
        bias: Option<&[f32]>,
        outq: QParams,
        relu: bool,
        mode: qkernels_ref::Accumulation,
    ) -> Vec<u8> {
        qkernels_ref::linear(m, k, n, x, xq, w, wq, bias, outq, relu, mode)
    }
    fn max_pool2d(
        &self,
        x: &[u8],
        n: usize,
        h: usize,
        w: usize,
        c: usize,
        p: &qkernels_ref::Pool2d,
    ) -> (Vec<u8>, usize, usize) {
        qkernels_ref::max_pool2d_nhwc(x, n, h, w, c, p)
    }
    fn adaptive_avg_pool2d(
        &self,
        x: &[u8],
        n: usize,
        h: usize,
        w: usize,
        c: usize,
        oh: usize,
        ow: usize,
        q: QParams,
    ) -> Vec<u8> {
        qkernels_ref::adaptive_avg_pool2d_nhwc(x, n, h, w, c, oh, ow, q.zero_point)
    }
}

/// A random quantized conv case and its reference output (`qkernels_ref::conv2d_nhwc`, exact):
/// random input bytes and weights, per-channel weight scales (zero points too when `w_zp`), a
/// bias on 70 % of the cases, random input/output qparams (input zero point 0 in a third of the
/// cases) and ReLU. Shared by the conv-path
/// batteries (`conv_igemm`, `conv_strips`).
pub struct RandomConv {
    pub x: Vec<u8>,
    pub wts: Vec<i8>,
    pub wq: WeightQParams,
    pub bias: Option<Vec<f32>>,
    pub xq: QParams,
    pub outq: QParams,
    pub relu: bool,
    pub want: Vec<u8>,
}

impl RandomConv {
    pub fn new(
        rng: &mut rand::rngs::StdRng,
        p: &qkernels::conv::Conv2dParams,
        batch: usize,
        h: usize,
        w: usize,
        w_zp: bool,
    ) -> RandomConv {
        use rand::Rng;
        let x: Vec<u8> = (0..batch * h * w * p.in_channels)
            .map(|_| rng.r#gen())
            .collect();
        let n_w = p.out_channels * (p.in_channels / p.groups) * p.kernel_h * p.kernel_w;
        let wts: Vec<i8> = (0..n_w).map(|_| rng.r#gen()).collect();
        let oc = p.out_channels;
        let zps = if w_zp {
            (0..oc).map(|_| rng.gen_range(-128..=127)).collect()
        } else {
            vec![0; oc]
        };
        let wq = WeightQParams::per_channel(
            (0..oc)
                .map(|_| 10f64.powf(rng.gen_range(-3.5..-2.0)))
                .collect(),
            zps,
        );
        let bias: Option<Vec<f32>> = rng
            .gen_bool(0.7)
            .then(|| (0..oc).map(|_| rng.gen_range(-2.0f32..2.0)).collect());
        // Input zero point 0 in a third of the cases (a ReLU output: every conv input of
        // ResNet-18 after the stem), where the IGEMM kernels skip padded taps.
        let x_zp = if rng.gen_bool(1.0 / 3.0) {
            0
        } else {
            rng.gen_range(0..=255)
        };
        let xq = QParams::new(10f64.powf(rng.gen_range(-2.5..-1.0)), x_zp);
        let outq = QParams::new(10f64.powf(rng.gen_range(-1.0..0.5)), rng.gen_range(0..=255));
        let relu = rng.r#gen();
        let want = qkernels_ref::conv2d_nhwc(
            &p.geometry(batch, h, w),
            &x,
            xq,
            &wts,
            &wq,
            bias.as_deref(),
            outq,
            relu,
            qkernels_ref::Accumulation::Exact,
        );
        RandomConv {
            x,
            wts,
            wq,
            bias,
            xq,
            outq,
            relu,
            want,
        }
    }
}

impl RandomConv {
    /// Runs `conv` on this case's input and asserts its output equals the reference, byte for
    /// byte, and that nothing is written past it (`ctx` names the configuration).
    pub fn check(
        &self,
        conv: &qkernels::conv::Conv2d,
        (batch, h, w): (usize, usize, usize),
        ctx: &str,
    ) {
        let n_out = self.want.len();
        let mut y = vec![0xA5u8; n_out + 1];
        conv.run(&self.x, batch, h, w, self.xq, self.outq, self.relu, &mut y)
            .unwrap();
        assert_eq!(&y[..n_out], &self.want[..], "{ctx}");
        assert_eq!(y[n_out], 0xA5, "{ctx}: wrote past the output");
    }
}
