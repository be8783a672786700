//! The model file: a safetensors file as written by `tools/export_resnet18.py` (the format of
//! `docs/model-format.md`), parsed and validated into plain tensors (the crate-private `RawModel`).
//!
//! Everything in the file is untrusted: every tensor's presence, dtype and shape is checked
//! against what the architecture needs before a single element is read, quantization
//! parameters are range-checked, and metadata values are bounded, so a bad file is an
//! [`Error::Format`] naming the tensor or key at fault — never a panic or a huge allocation.
//! The safetensors crate itself rejects truncated files and headers whose offsets run past the
//! end of the buffer.

use crate::validate::check_scale;
use crate::{Error, QParams, Result, WeightQParams};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;

/// The `format` metadata value this loader reads.
pub const FORMAT: &str = "quantized-resnet18/v1";

/// Channels of the stem and of `layer1` … `layer4` in ResNet-18.
pub(crate) const WIDTHS: [usize; 4] = [64, 128, 256, 512];

/// Largest accepted `num_classes` (the fc weight must also match it).
const MAX_CLASSES: usize = 1 << 20;
/// Largest accepted nominal input side (`input_size`).
const MAX_INPUT_SIDE: usize = 1 << 14;
/// Largest accepted number of input channels.
const MAX_INPUT_CHANNELS: usize = 64;

/// The model's metadata (the safetensors header's `__metadata__`).
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    /// Output classes (`num_classes`; equals `fc.weight`'s first dimension).
    pub num_classes: usize,
    /// Nominal input size `(height, width)` (`input_size`, `"H,W"`): what `classify` resizes to.
    pub input_size: (usize, usize),
    /// Input channels (`input_channels`, default 3; equals `conv1.weight`'s second dimension).
    pub input_channels: usize,
    /// Per-channel normalisation mean (`mean`, comma separated), as f32 like torchvision.
    pub mean: Vec<f32>,
    /// Per-channel normalisation std (`std`), as f32.
    pub std: Vec<f32>,
    /// Class names (`labels`: comma separated, or a JSON array of strings), if present.
    pub labels: Option<Vec<String>>,
    /// Free-text preprocessing description (`preprocess`), if present. When it starts with
    /// `grayscale`, images are converted to grey before being replicated to every channel.
    pub preprocess: Option<String>,
    /// Every metadata key as stored (including the ones above and e.g. `note`, `torch`).
    pub raw: BTreeMap<String, String>,
}

impl Metadata {
    /// The label of class `i` (its index as text when the model has no labels).
    pub fn label(&self, i: usize) -> String {
        match &self.labels {
            Some(l) if i < l.len() => l[i].clone(),
            _ => i.to_string(),
        }
    }

    /// Whether images are to be converted to grayscale first (`preprocess` says so).
    pub fn grayscale(&self) -> bool {
        self.preprocess
            .as_deref()
            .is_some_and(|p| p.trim_start().to_ascii_lowercase().starts_with("grayscale"))
    }

    /// Parses and checks the metadata map.
    pub(crate) fn parse(raw: BTreeMap<String, String>) -> Result<Metadata> {
        let get = |k: &str| -> Result<&str> {
            raw.get(k)
                .map(|s| s.as_str())
                .ok_or_else(|| Error::Format(format!("metadata `{k}` missing")))
        };
        let format = get("format")?;
        if format != FORMAT {
            return Err(Error::Format(format!(
                "metadata `format` is {format:?}; this reader supports {FORMAT:?}"
            )));
        }
        let arch = get("arch")?;
        if arch != "resnet18" {
            return Err(Error::Format(format!(
                "metadata `arch` is {arch:?}; only \"resnet18\" is supported"
            )));
        }
        let num_classes = parse_count(get("num_classes")?, "num_classes", MAX_CLASSES)?;
        let input_channels = match raw.get("input_channels") {
            Some(v) => parse_count(v, "input_channels", MAX_INPUT_CHANNELS)?,
            None => 3,
        };
        let sides: Vec<&str> = get("input_size")?.split(',').collect();
        if sides.len() != 2 {
            return Err(Error::Format(format!(
                "metadata `input_size` must be \"H,W\", got {:?}",
                get("input_size")?
            )));
        }
        let input_size = (
            parse_count(sides[0], "input_size", MAX_INPUT_SIDE)?,
            parse_count(sides[1], "input_size", MAX_INPUT_SIDE)?,
        );
        let floats = |k: &str, positive: bool| -> Result<Vec<f32>> {
            let v = get(k)?
                .split(',')
                .map(|s| {
                    // Python floats are f64; torchvision turns them into f32 tensors.
                    let x = s.trim().parse::<f64>().ok().map(|x| x as f32);
                    match x {
                        Some(x) if x.is_finite() && (!positive || x > 0.0) => Ok(x),
                        _ => Err(Error::Format(format!(
                            "metadata `{k}`: {s:?} is not a finite{} number",
                            if positive { " positive" } else { "" }
                        ))),
                    }
                })
                .collect::<Result<Vec<f32>>>()?;
            if v.len() != input_channels {
                return Err(Error::Format(format!(
                    "metadata `{k}` has {} values for {input_channels} input channels",
                    v.len()
                )));
            }
            Ok(v)
        };
        let mean = floats("mean", false)?;
        let std = floats("std", true)?;
        let labels = match raw.get("labels") {
            None => None,
            Some(s) => {
                let l: Vec<String> = if s.trim_start().starts_with('[') {
                    serde_json::from_str(s).map_err(|e| {
                        Error::Format(format!(
                            "metadata `labels` is not a JSON array of strings: {e}"
                        ))
                    })?
                } else {
                    s.split(',').map(|x| x.trim().to_string()).collect()
                };
                if l.len() != num_classes {
                    return Err(Error::Format(format!(
                        "metadata `labels` has {} entries for {num_classes} classes",
                        l.len()
                    )));
                }
                Some(l)
            }
        };
        let preprocess = raw.get("preprocess").cloned();
        Ok(Metadata {
            num_classes,
            input_size,
            input_channels,
            mean,
            std,
            labels,
            preprocess,
            raw,
        })
    }
}

fn parse_count(s: &str, key: &str, max: usize) -> Result<usize> {
    match s.trim().parse::<usize>() {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(Error::Format(format!(
            "metadata `{key}`: {s:?} is not an integer in 1..={max}"
        ))),
    }
}

/// One conv (or the fc, as a 1×1 conv) as stored: OIHW weights and its quantization.
#[derive(Clone, Debug)]
pub(crate) struct RawConv {
    pub name: String,
    /// `[out, in, kh, kw]`.
    pub shape: [usize; 4],
    pub weight: Vec<i8>,
    pub wq: WeightQParams,
    pub bias: Option<Vec<f32>>,
    /// Output quantization (`NAME.scale`, `NAME.zero_point`).
    pub out_q: QParams,
}

/// One basic block.
#[derive(Clone, Debug)]
pub(crate) struct RawBlock {
    /// `layerL.B`.
    pub name: String,
    pub stride: usize,
    pub conv1: RawConv,
    pub conv2: RawConv,
    pub downsample: Option<RawConv>,
    /// `layerL.B.add_relu` output quantization.
    pub add_q: QParams,
}

/// A whole model as stored (validated, not yet packed).
#[derive(Clone, Debug)]
pub(crate) struct RawModel {
    pub meta: Metadata,
    pub quant: QParams,
    pub conv1: RawConv,
    pub blocks: Vec<RawBlock>,
    /// `fc` with shape `[classes, 512, 1, 1]`.
    pub fc: RawConv,
}

/// The names and strides of ResNet-18's eight basic blocks, in execution order.
pub(crate) fn block_layout() -> impl Iterator<Item = (String, usize, usize, usize, bool)> {
    // (name, in_channels, out_channels, stride, has_downsample)
    (1..=4).flat_map(|l| {
        (0..2).map(move |b| {
            let out = WIDTHS[l - 1];
            let inp = if b == 0 && l > 1 { WIDTHS[l - 2] } else { out };
            let first = b == 0 && l > 1;
            (
                format!("layer{l}.{b}"),
                inp,
                out,
                if first { 2 } else { 1 },
                first,
            )
        })
    })
}

/// Reads tensors by name with dtype and shape checks.
struct Reader<'a> {
    st: SafeTensors<'a>,
}

impl<'a> Reader<'a> {
    fn raw(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<&'a [u8]> {
        let t = self
            .st
            .tensor(name)
            .map_err(|_| Error::Format(format!("tensor `{name}` missing")))?;
        if t.dtype() != dtype {
            return Err(Error::Format(format!(
                "tensor `{name}` has dtype {:?}, expected {dtype:?}",
                t.dtype()
            )));
        }
        if t.shape() != shape {
            return Err(Error::Format(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                t.shape()
            )));
        }
        let elems: usize = shape.iter().product();
        // The crate checks this when parsing; re-check so the conversions below cannot go wrong.
        if t.data().len() != elems * dtype.size() {
            return Err(Error::Format(format!(
                "tensor `{name}` holds {} bytes, expected {}",
                t.data().len(),
                elems * dtype.size()
            )));
        }
        Ok(t.data())
    }

    /// The shape of a tensor that must exist (any dtype).
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.st
            .tensor(name)
            .map(|t| t.shape().to_vec())
            .map_err(|_| Error::Format(format!("tensor `{name}` missing")))
    }

    fn i8s(&self, name: &str, shape: &[usize]) -> Result<Vec<i8>> {
        Ok(self
            .raw(name, Dtype::I8, shape)?
            .iter()
            .map(|&b| b as i8)
            .collect())
    }

    fn f32s(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let v: Vec<f32> = self
            .raw(name, Dtype::F32, shape)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::Format(format!(
                "tensor `{name}`: element {i} is not finite"
            )));
        }
        Ok(v)
    }

    fn f64s(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        Ok(self
            .raw(name, Dtype::F64, shape)?
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8")))
            .collect())
    }

    fn i32s(&self, name: &str, shape: &[usize]) -> Result<Vec<i32>> {
        Ok(self
            .raw(name, Dtype::I32, shape)?
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// `PREFIX.scale` (F64 [1]) and `PREFIX.zero_point` (I32 [1]) of a u8 activation.
    fn qparams(&self, prefix: &str) -> Result<QParams> {
        let s = self.f64s(&format!("{prefix}.scale"), &[1])?[0];
        let z = self.i32s(&format!("{prefix}.zero_point"), &[1])?[0];
        check_scale(s, "").map_err(|_| {
            Error::Format(format!(
                "tensor `{prefix}.scale`: {s} is not a usable scale (finite, > 0 as f32)"
            ))
        })?;
        if !(0..=255).contains(&z) {
            return Err(Error::Format(format!(
                "tensor `{prefix}.zero_point`: {z} outside 0..=255"
            )));
        }
        Ok(QParams::new(s, z))
    }

    fn conv(&self, name: &str, shape: [usize; 4]) -> Result<RawConv> {
        let [o, i, kh, kw] = shape;
        let wname = format!("{name}.weight");
        let weight = if kh == 1 && kw == 1 && name == "fc" {
            self.i8s(&wname, &[o, i])?
        } else {
            self.i8s(&wname, &shape)?
        };
        let sname = format!("{name}.weight_scale");
        let per_channel = match self.shape(&sname)?.as_slice() {
            [1] if o != 1 => false,
            [n] if *n == o => true,
            other => {
                return Err(Error::Format(format!(
                    "tensor `{sname}` has shape {other:?}, expected [{o}] or [1]"
                )));
            }
        };
        let n = if per_channel { o } else { 1 };
        let scales = self.f64s(&sname, &[n])?;
        let zps = self.i32s(&format!("{name}.weight_zero_point"), &[n])?;
        for (c, &s) in scales.iter().enumerate() {
            check_scale(s, "").map_err(|_| {
                Error::Format(format!(
                    "tensor `{sname}`: element {c} ({s}) is not a usable scale"
                ))
            })?;
        }
        if let Some(c) = zps.iter().position(|z| !(-128..=127).contains(z)) {
            return Err(Error::Format(format!(
                "tensor `{name}.weight_zero_point`: element {c} ({}) outside -128..=127",
                zps[c]
            )));
        }
        let wq = if per_channel {
            WeightQParams::per_channel(scales, zps)
        } else {
            WeightQParams::per_tensor(scales[0], zps[0])
        };
        let bname = format!("{name}.bias");
        let bias = match self.st.tensor(&bname) {
            Ok(_) => Some(self.f32s(&bname, &[o])?),
            Err(_) => None,
        };
        let out_q = self.qparams(name)?;
        Ok(RawConv {
            name: name.to_string(),
            shape,
            weight,
            wq,
            bias,
            out_q,
        })
    }
}

impl RawModel {
    /// Parses and validates a model file held in memory.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<RawModel> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::Format(format!("not a valid safetensors file: {e}")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Format(format!("not a valid safetensors file: {e}")))?;
        let raw: BTreeMap<String, String> = header
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        if raw.is_empty() {
            return Err(Error::Format(
                "no metadata: not a quantized-resnet18/v1 model file".into(),
            ));
        }
        let meta = Metadata::parse(raw)?;
        let r = Reader { st };
        let quant = r.qparams("quant")?;
        let conv1 = r.conv("conv1", [WIDTHS[0], meta.input_channels, 7, 7])?;
        let mut blocks = Vec::with_capacity(8);
        for (name, inp, out, stride, ds) in block_layout() {
            blocks.push(RawBlock {
                conv1: r.conv(&format!("{name}.conv1"), [out, inp, 3, 3])?,
                conv2: r.conv(&format!("{name}.conv2"), [out, out, 3, 3])?,
                downsample: if ds {
                    Some(r.conv(&format!("{name}.downsample.0"), [out, inp, 1, 1])?)
                } else {
                    None
                },
                add_q: r.qparams(&format!("{name}.add_relu"))?,
                name,
                stride,
            });
        }
        let fc = r
            .conv("fc", [meta.num_classes, WIDTHS[3], 1, 1])
            .map_err(|e| {
                // A class-count mismatch is easier to understand stated as such.
                match r.shape("fc.weight") {
                    Ok(s) if s.len() == 2 && s[0] != meta.num_classes => Error::Format(format!(
                        "tensor `fc.weight` has {} rows but metadata `num_classes` is {}",
                        s[0], meta.num_classes
                    )),
                    _ => e,
                }
            })?;
        Ok(RawModel {
            meta,
            quant,
            conv1,
            blocks,
            fc,
        })
    }
}
