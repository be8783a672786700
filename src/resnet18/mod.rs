//! Int8 ResNet-18, bit-exact with PyTorch's fbgemm backend: load a quantized model file, run
//! NCHW float images through it, get PyTorch's logits byte for byte.
//!
//! ```no_run
//! use qkernels::resnet18::Model;
//! let model = Model::load("models/digits_resnet18.safetensors")?;
//! let (h, w) = model.input_size();
//! let x = vec![0.0f32; 3 * h * w]; // one NCHW image, already normalised
//! let mut logits = vec![0.0f32; model.num_classes()];
//! model.run(&x, 1, h, w, &mut logits)?;
//! # Ok::<(), qkernels::Error>(())
//! ```
//!
//! * [`model`] — the file format (`docs/model-format.md`) and its validation.
//! * [`Model`] — the packed network: [`Model::run`] (dequantized logits),
//!   [`Model::run_quantized`] (u8 logits), [`Model::run_traced`] (every layer's output, NCHW),
//!   and `*_with` forms taking a reusable [`Workspace`] (no allocation after warm-up).
//! * [`preprocess`] — PyTorch's bilinear resize and torchvision's normalisation, bit-exact.
//!
//! The model is immutable once loaded (`Model: Send + Sync`): run it from as many threads as
//! you like, one [`Workspace`] per thread. Inside a run the GEMMs and the max-pool use the
//! current rayon pool, whose other workers keep spinning between layers until the run returns
//! (bounded; see `warm.rs`: waking a sleeping worker per layer cost ~25 µs each time).

pub mod model;
pub mod preprocess;
mod runner;
mod synthetic;
mod warm;

pub use model::Metadata;
pub use runner::{Activation, Model, Workspace};

use crate::{Accumulation, Error, Isa, Result};
use std::path::Path;

/// How a model is packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelOptions {
    /// The ISA every layer runs on (must be supported by this CPU).
    pub isa: Isa,
    /// Accumulation mode: `Exact` (the default) is PyTorch on AVX-512 VNNI machines;
    /// `SaturateAll` reproduces PyTorch on AVX2-only machines.
    pub accumulation: Accumulation,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            isa: crate::active_isa(),
            accumulation: Accumulation::Exact,
        }
    }
}

impl ModelOptions {
    /// Exact accumulation on `isa`.
    pub fn for_isa(isa: Isa) -> ModelOptions {
        ModelOptions {
            isa,
            accumulation: Accumulation::Exact,
        }
    }
}

impl Model {
    /// Loads a model file (`docs/model-format.md`) with the default options.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Model::load_with(path, &ModelOptions::default())
    }

    /// Loads a model file with explicit options.
    pub fn load_with(path: impl AsRef<Path>, opts: &ModelOptions) -> Result<Model> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Model::from_bytes_with(&bytes, opts).map_err(|e| match e {
            Error::Format(m) => Error::Format(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Parses a model held in memory with the default options.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        Model::from_bytes_with(bytes, &ModelOptions::default())
    }

    /// Parses a model held in memory with explicit options.
    pub fn from_bytes_with(bytes: &[u8], opts: &ModelOptions) -> Result<Model> {
        crate::check_isa(opts.isa)?;
        let raw = model::RawModel::from_bytes(bytes)?;
        Model::from_raw(&raw, opts)
    }

    /// A ResNet-18 with deterministic random weights (`classes` outputs, nominal input
    /// `size`), for benchmarks: same shapes and work as a real model.
    pub fn synthetic(
        classes: usize,
        size: (usize, usize),
        seed: u64,
        opts: &ModelOptions,
    ) -> Result<Model> {
        if classes == 0 || classes > 1 << 20 {
            return crate::invalid!("synthetic model: {classes} classes");
        }
        if !(1..=1 << 14).contains(&size.0) || !(1..=1 << 14).contains(&size.1) {
            return crate::invalid!("synthetic model: input size {}×{}", size.0, size.1);
        }
        Model::from_raw(&synthetic::raw_model(classes, size, seed), opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn model_is_send_and_sync() {
        assert_send_sync::<Model>();
        assert_send_sync::<Workspace>();
    }
}
