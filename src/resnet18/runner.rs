//! The packed network and its forward pass.
//!
//! Every layer is packed once at load ([`Conv2d`], [`PackedWeights`]); a forward pass plans the
//! spatial size of every layer for the given input first (so a too-small or absurd input fails
//! before any work), makes sure the caller's [`Workspace`] holds enough bytes, and then runs the
//! layers in place in four rotating activation buffers: after warm-up no activation buffer is
//! allocated.
//!
//! Activations are NHWC u8 throughout; the quantize stub reads the NCHW float input and writes
//! NHWC u8 in one pass (`ops::quantize_u8_nchw_to_nhwc_with_isa`). Quantization parameters follow
//! `docs/model-format.md` / the PyTorch pipeline exactly: each conv writes its own output
//! qparams, maxpool and avgpool keep their input's, each residual add writes the add module's
//! own, and the fc reads `layer4.1.add_relu`'s.
//!
//! Each block's residual `add_relu` runs fused into its `conv2` ([`Conv2d::run_add`]: the add
//! is applied in place over the conv's u8 output, same bytes as the separate ops) except in
//! [`Model::run_traced`], which keeps them apart so that `conv2`'s own output can be reported.

use super::model::{RawConv, RawModel, WIDTHS};
use super::{Metadata, ModelOptions};
use crate::conv::{Conv2d, Conv2dParams, ConvOptions};
use crate::gemm::{GemmOptions, PackedWeights};
use crate::validate::checked_product;
use crate::{Error, Isa, Pool2d, QParams, Result, ops};

/// A packed conv layer and where its output goes.
#[derive(Clone)]
struct Layer {
    name: String,
    conv: Conv2d,
    out_q: QParams,
    relu: bool,
}

impl Layer {
    fn new(
        raw: &RawConv,
        stride: usize,
        pad: usize,
        relu: bool,
        opts: &ModelOptions,
    ) -> Result<Layer> {
        let [o, i, kh, _] = raw.shape;
        let params = Conv2dParams::square(i, o, kh, stride, pad);
        let conv = Conv2d::with_options(
            params,
            &raw.weight,
            &raw.wq,
            raw.bias.as_deref(),
            &ConvOptions {
                isa: opts.isa,
                accumulation: opts.accumulation,
            },
        )
        .map_err(|e| Error::Format(format!("layer `{}`: {e}", raw.name)))?;
        Ok(Layer {
            name: raw.name.clone(),
            conv,
            out_q: raw.out_q,
            relu,
        })
    }
}

#[derive(Clone)]
struct Block {
    add_name: String,
    conv1: Layer,
    conv2: Layer,
    downsample: Option<Layer>,
    add_q: QParams,
}

/// A ResNet-18 with every layer packed for one ISA. Immutable: share it between threads
/// (`Model: Send + Sync`); each thread brings its own [`Workspace`].
#[derive(Clone)]
pub struct Model {
    meta: Metadata,
    opts: ModelOptions,
    quant_q: QParams,
    conv1: Layer,
    blocks: Vec<Block>,
    fc: PackedWeights,
    fc_name: String,
    fc_q: QParams,
}

/// Reusable activation memory for [`Model::run_with`] and friends: grows to the largest
/// input it has seen and is then reused without allocating.
#[derive(Clone, Debug, Default)]
pub struct Workspace {
    bufs: [Vec<u8>; 4],
    pooled: Vec<u8>,
    logits_q: Vec<u8>,
}

impl Workspace {
    /// An empty workspace (it allocates on first use).
    pub fn new() -> Workspace {
        Workspace::default()
    }

    /// Bytes currently held.
    pub fn capacity_bytes(&self) -> usize {
        self.bufs.iter().map(Vec::capacity).sum::<usize>()
            + self.pooled.capacity()
            + self.logits_q.capacity()
    }
}

/// Grows `v` to at least `len` bytes, reporting an allocation failure as an error.
fn ensure(v: &mut Vec<u8>, len: usize) -> Result<()> {
    if v.len() < len {
        v.try_reserve_exact(len - v.len()).map_err(|_| {
            Error::InvalidArgument(format!(
                "input too large: cannot allocate {len} bytes of activations"
            ))
        })?;
        v.resize(len, 0);
    }
    Ok(())
}

/// The spatial plan of one forward pass.
struct Plan {
    /// Elements of the largest NHWC activation.
    max_elems: usize,
}

/// One layer output seen by a forward-pass hook: `name`, NHWC `data`, shape `[n, h, w, c]`.
pub(crate) type Hook<'h> = &'h mut dyn FnMut(&str, &[u8], [usize; 4]);

impl Model {
    pub(crate) fn from_raw(raw: &RawModel, opts: &ModelOptions) -> Result<Model> {
        crate::check_isa(opts.isa)?;
        let conv1 = Layer::new(&raw.conv1, 2, 3, true, opts)?;
        let blocks = raw
            .blocks
            .iter()
            .map(|b| {
                Ok(Block {
                    add_name: format!("{}.add_relu", b.name),
                    conv1: Layer::new(&b.conv1, b.stride, 1, true, opts)?,
                    conv2: Layer::new(&b.conv2, 1, 1, false, opts)?,
                    downsample: b
                        .downsample
                        .as_ref()
                        .map(|d| Layer::new(d, b.stride, 0, false, opts))
                        .transpose()?,
                    add_q: b.add_q,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let [classes, k, _, _] = raw.fc.shape;
        let saturate = match opts.accumulation {
            crate::Accumulation::SaturateAll => true,
            crate::Accumulation::Exact | crate::Accumulation::SaturateDepthwise => false,
        };
        let fc = PackedWeights::with_options(
            &raw.fc.weight,
            classes,
            k,
            &raw.fc.wq,
            raw.fc.bias.as_deref(),
            &GemmOptions {
                isa: opts.isa,
                saturate_pairs: saturate,
            },
        )
        .map_err(|e| Error::Format(format!("layer `fc`: {e}")))?;
        let mut model = Model {
            meta: raw.meta.clone(),
            opts: *opts,
            quant_q: raw.quant,
            conv1,
            blocks,
            fc,
            fc_name: raw.fc.name.clone(),
            fc_q: raw.fc.out_q,
        };
        model.share_huge_pages();
        Ok(model)
    }

    /// Moves every layer's packed weights into one huge-page arena (see
    /// [`crate::weight_arena`]): the forward pass streams them with far fewer TLB misses.
    fn share_huge_pages(&mut self) {
        let mut bufs = Vec::new();
        let layers = std::iter::once(&mut self.conv1).chain(self.blocks.iter_mut().flat_map(|b| {
            [&mut b.conv1, &mut b.conv2]
                .into_iter()
                .chain(b.downsample.as_mut())
        }));
        for layer in layers {
            for pw in layer.conv.packed_weights_mut() {
                bufs.extend(pw.packed_bufs_mut());
            }
        }
        bufs.extend(self.fc.packed_bufs_mut());
        crate::weight_arena::share_huge_pages(&mut bufs);
    }

    /// The metadata (labels, mean/std, nominal input size, …).
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.meta.num_classes
    }

    /// The nominal input size `(height, width)` from the metadata (any size ≥ 1×1 runs).
    pub fn input_size(&self) -> (usize, usize) {
        self.meta.input_size
    }

    /// Input channels (3 for the shipped models).
    pub fn input_channels(&self) -> usize {
        self.meta.input_channels
    }

    /// The options the layers were packed with.
    pub fn options(&self) -> &ModelOptions {
        &self.opts
    }

    /// The ISA every layer runs on.
    pub fn isa(&self) -> Isa {
        self.opts.isa
    }

    /// Quantization of the logits (`fc.scale`, `fc.zero_point`).
    pub fn logits_qparams(&self) -> QParams {
        self.fc_q
    }

    /// Quantization of the input (`quant.scale`, `quant.zero_point`).
    pub fn input_qparams(&self) -> QParams {
        self.quant_q
    }

    /// Names of the layers, in the order a traced run reports them.
    pub fn layer_names(&self) -> Vec<String> {
        let mut v = vec!["quant".to_string(), "conv1".into(), "maxpool".into()];
        for b in &self.blocks {
            v.push(b.conv1.name.clone());
            if let Some(d) = &b.downsample {
                v.push(d.name.clone());
            }
            v.push(b.conv2.name.clone());
            v.push(b.add_name.clone());
        }
        v.push("avgpool".into());
        v.push(self.fc_name.clone());
        v
    }

    /// Multiply-accumulates of every layer (named as [`Model::layer_names`]; 0 for the
    /// element-wise and pooling layers) for an input of `batch × h × w`.
    pub fn layer_macs(&self, batch: usize, h: usize, w: usize) -> Result<Vec<(String, u64)>> {
        self.plan(batch, h, w)?;
        let conv_macs = |l: &Layer, oh: usize, ow: usize| -> u64 {
            let p = l.conv.params();
            (batch * oh * ow * p.out_channels * p.in_channels / p.groups * p.kernel_h * p.kernel_w)
                as u64
        };
        let mut v = vec![("quant".to_string(), 0)];
        let (oh, ow) = self.conv1.conv.output_size(h, w)?;
        v.push(("conv1".into(), conv_macs(&self.conv1, oh, ow)));
        v.push(("maxpool".into(), 0));
        let (mut ch, mut cw) = ops::pool_output_size(oh, ow, &Pool2d::square(3, 2, 1))?;
        for b in &self.blocks {
            (ch, cw) = b.conv1.conv.output_size(ch, cw)?;
            v.push((b.conv1.name.clone(), conv_macs(&b.conv1, ch, cw)));
            if let Some(d) = &b.downsample {
                v.push((d.name.clone(), conv_macs(d, ch, cw)));
            }
            v.push((b.conv2.name.clone(), conv_macs(&b.conv2, ch, cw)));
            v.push((b.add_name.clone(), 0));
        }
        v.push(("avgpool".into(), 0));
        v.push((
            self.fc_name.clone(),
            (batch * self.fc.n() * self.fc.k()) as u64,
        ));
        Ok(v)
    }

    /// Checks the input geometry and sizes every activation.
    fn plan(&self, batch: usize, h: usize, w: usize) -> Result<Plan> {
        if batch == 0 || h == 0 || w == 0 {
            return crate::invalid!("input batch {batch} × {h} × {w}: every dimension must be ≥ 1");
        }
        let c_in = self.meta.input_channels;
        let mut max_elems = checked_product(&[batch, h, w, c_in], "input")?;
        let (mut ch, mut cw) = self.conv1.conv.output_size(h, w)?;
        max_elems = max_elems.max(checked_product(
            &[batch, ch, cw, WIDTHS[0]],
            "conv1 output",
        )?);
        (ch, cw) = ops::pool_output_size(ch, cw, &Pool2d::square(3, 2, 1))?;
        for b in &self.blocks {
            (ch, cw) = b.conv1.conv.output_size(ch, cw)?;
            let c = b.conv1.conv.params().out_channels;
            max_elems = max_elems.max(checked_product(&[batch, ch, cw, c], "block output")?);
        }
        Ok(Plan { max_elems })
    }

    /// The forward pass: quantized logits land in `ws.logits_q[..batch·classes]`; `hook` sees
    /// every layer's output.
    pub(crate) fn forward(
        &self,
        ws: &mut Workspace,
        input: &[f32],
        batch: usize,
        h: usize,
        w: usize,
        trace: bool,
        hook: Hook<'_>,
    ) -> Result<()> {
        let plan = self.plan(batch, h, w)?;
        // Keep the pool's other workers spinning until this pass returns (see `warm`); started
        // first, so that their wake-up overlaps the serial input step.
        let _warm = super::warm::KeepWarm::start();
        let c_in = self.meta.input_channels;
        let n_in = batch * c_in * h * w;
        if input.len() != n_in {
            return crate::invalid!(
                "input has {} floats; [batch {batch}, {c_in}, {h}, {w}] needs {n_in}",
                input.len()
            );
        }
        let classes = self.meta.num_classes;
        for b in ws.bufs.iter_mut() {
            // + 63: room to start the activations on a 64-byte boundary (below).
            ensure(b, plan.max_elems + 63)?;
        }
        ensure(&mut ws.pooled, batch * WIDTHS[3])?;
        ensure(&mut ws.logits_q, batch * classes)?;
        let isa = self.opts.isa;

        // Every activation starts on a cache line: the epilogues store 64-byte rows and the
        // residual add and max-pool load them; from a 16-byte-aligned heap block each of those
        // would split across two lines.
        let [b0, b1, b2, b3] = ws.bufs.each_mut().map(|v| {
            let off = v.as_ptr().align_offset(64).min(v.len());
            &mut v[off..]
        });

        // quant stub: NCHW f32 -> NHWC u8 in one pass
        ops::quantize_u8_nchw_to_nhwc_with_isa(
            isa,
            input,
            batch,
            c_in,
            h * w,
            c_in,
            self.quant_q,
            &mut b0[..n_in],
        )?;
        hook("quant", &b0[..n_in], [batch, h, w, c_in]);

        let (oh, ow) = self.conv1.conv.output_size(h, w)?;
        run_conv(&self.conv1, &b0[..n_in], batch, h, w, self.quant_q, b1)?;
        let c = WIDTHS[0];
        hook("conv1", &b1[..batch * oh * ow * c], [batch, oh, ow, c]);
        let pool = Pool2d::square(3, 2, 1);
        let (ph, pw) = max_pool_par(isa, &b1[..batch * oh * ow * c], batch, oh, ow, c, &pool, b2)?;
        hook("maxpool", &b2[..batch * ph * pw * c], [batch, ph, pw, c]);

        // Rotate four buffers: x (block input), t1, t2, t3.
        let mut x: &mut [u8] = b2;
        let mut t1: &mut [u8] = b0;
        let mut t2: &mut [u8] = b1;
        let t3: &mut [u8] = b3;
        let (mut xh, mut xw, mut xc, mut xq) = (ph, pw, c, self.conv1.out_q);
        for blk in &self.blocks {
            let n_x = batch * xh * xw * xc;
            let oc = blk.conv1.conv.params().out_channels;
            let (oh, ow) = blk.conv1.conv.output_size(xh, xw)?;
            let n_o = batch * oh * ow * oc;
            let shape = [batch, oh, ow, oc];
            run_conv(&blk.conv1, &x[..n_x], batch, xh, xw, xq, t1)?;
            hook(&blk.conv1.name, &t1[..n_o], shape);
            let (id, id_q): (&[u8], QParams) = match &blk.downsample {
                Some(ds) => {
                    run_conv(ds, &x[..n_x], batch, xh, xw, xq, t3)?;
                    hook(&ds.name, &t3[..n_o], shape);
                    (&t3[..n_o], ds.out_q)
                }
                None => (&x[..n_x], xq),
            };
            if trace {
                // unfused, so that conv2's own output can be observed
                run_conv(&blk.conv2, &t1[..n_o], batch, oh, ow, blk.conv1.out_q, t2)?;
                hook(&blk.conv2.name, &t2[..n_o], shape);
                ops::add_u8_with_isa(
                    isa,
                    &t2[..n_o],
                    blk.conv2.out_q,
                    id,
                    id_q,
                    blk.add_q,
                    true,
                    &mut t1[..n_o],
                )?;
                hook(&blk.add_name, &t1[..n_o], shape);
                // the add output (t1) is the next block's input; the old input buffer is free
                std::mem::swap(&mut x, &mut t1);
            } else {
                // conv2 with the residual add_relu fused into its epilogue (same bytes)
                blk.conv2.conv.run_add(
                    &t1[..n_o],
                    batch,
                    oh,
                    ow,
                    blk.conv1.out_q,
                    blk.conv2.out_q,
                    id,
                    id_q,
                    blk.add_q,
                    true,
                    t2,
                )?;
                hook(&blk.conv2.name, &t2[..n_o], shape);
                hook(&blk.add_name, &t2[..n_o], shape);
                std::mem::swap(&mut x, &mut t2);
            }
            (xh, xw, xc, xq) = (oh, ow, oc, blk.add_q);
        }

        let n_x = batch * xh * xw * xc;
        let pooled = &mut ws.pooled[..batch * xc];
        ops::adaptive_avg_pool2d_u8_with_isa(isa, &x[..n_x], batch, xh, xw, xc, 1, 1, xq, pooled)?;
        hook("avgpool", pooled, [batch, 1, 1, xc]);
        let logits = &mut ws.logits_q[..batch * classes];
        crate::gemm::linear(&self.fc, pooled, batch, xq, self.fc_q, false, logits)?;
        hook(&self.fc_name, logits, [batch, 1, 1, classes]);
        Ok(())
    }

    /// Runs the network on NCHW float input `[batch, C, h, w]` and writes the quantized (u8)
    /// logits `[batch, classes]` (their qparams: [`Model::logits_qparams`]).
    pub fn run_quantized_with(
        &self,
        ws: &mut Workspace,
        input: &[f32],
        batch: usize,
        h: usize,
        w: usize,
        logits_q: &mut [u8],
    ) -> Result<()> {
        let n = self.check_logits_len(logits_q.len(), batch)?;
        self.forward(ws, input, batch, h, w, false, &mut |_, _, _| {})?;
        logits_q.copy_from_slice(&ws.logits_q[..n]);
        Ok(())
    }

    /// [`Model::run_quantized_with`] with a temporary workspace.
    pub fn run_quantized(
        &self,
        input: &[f32],
        batch: usize,
        h: usize,
        w: usize,
        logits_q: &mut [u8],
    ) -> Result<()> {
        self.run_quantized_with(&mut Workspace::new(), input, batch, h, w, logits_q)
    }

    /// Runs the network on NCHW float input `[batch, C, h, w]` and writes the dequantized
    /// logits `[batch, classes]` (`f32(fc.scale) · f32(q − fc.zero_point)`, as PyTorch's
    /// DeQuantStub).
    pub fn run_with(
        &self,
        ws: &mut Workspace,
        input: &[f32],
        batch: usize,
        h: usize,
        w: usize,
        logits: &mut [f32],
    ) -> Result<()> {
        let n = self.check_logits_len(logits.len(), batch)?;
        self.forward(ws, input, batch, h, w, false, &mut |_, _, _| {})?;
        ops::dequantize_u8_with_isa(self.opts.isa, &ws.logits_q[..n], self.fc_q, logits)
    }

    /// [`Model::run_with`] with a temporary workspace.
    pub fn run(
        &self,
        input: &[f32],
        batch: usize,
        h: usize,
        w: usize,
        logits: &mut [f32],
    ) -> Result<()> {
        self.run_with(&mut Workspace::new(), input, batch, h, w, logits)
    }

    /// Runs the network and returns every layer's output, in execution order, named as
    /// PyTorch's modules (`quant`, `conv1`, `maxpool`, `layer1.0.conv1`, …,
    /// `layer2.0.downsample.0`, `layer1.0.add_relu`, …, `avgpool`, `fc`), as **NCHW** u8 with
    /// its shape `[n, c, h, w]` — the layout of PyTorch's tensors (`fc` is `[n, classes, 1, 1]`).
    pub fn run_traced(
        &self,
        input: &[f32],
        batch: usize,
        h: usize,
        w: usize,
    ) -> Result<Vec<Activation>> {
        let mut acts = Vec::new();
        self.forward(
            &mut Workspace::new(),
            input,
            batch,
            h,
            w,
            true,
            &mut |name, data, [n, h, w, c]| {
                let mut nchw = vec![0u8; data.len()];
                nhwc_to_nchw(data, &mut nchw, n, h * w, c);
                acts.push(Activation {
                    name: name.to_string(),
                    shape: [n, c, h, w],
                    data: nchw,
                });
            },
        )?;
        Ok(acts)
    }

    /// Runs the network calling `hook(layer_name)` right after each layer finishes (the
    /// first call, `quant`, also covers the input transposition). For per-layer timing: the
    /// residual `add_relu` is fused into `conv2` here, so a block's `conv2` call comes after
    /// its add is done too, and its `add_relu` call follows at once.
    pub fn run_profiled(
        &self,
        ws: &mut Workspace,
        input: &[f32],
        batch: usize,
        h: usize,
        w: usize,
        hook: &mut dyn FnMut(&str),
    ) -> Result<()> {
        self.forward(ws, input, batch, h, w, false, &mut |name, _, _| hook(name))
    }

    fn check_logits_len(&self, len: usize, batch: usize) -> Result<usize> {
        let n = checked_product(&[batch, self.meta.num_classes], "logits")?;
        if len != n {
            return crate::invalid!(
                "logits buffer has {len} elements; [batch {batch}, {} classes] needs {n}",
                self.meta.num_classes
            );
        }
        Ok(n)
    }
}

/// One layer's output from [`Model::run_traced`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activation {
    /// PyTorch module name (`layer1.0.conv1`, …).
    pub name: String,
    /// `[n, c, h, w]`.
    pub shape: [usize; 4],
    /// NCHW u8 values.
    pub data: Vec<u8>,
}

fn run_conv(
    l: &Layer,
    x: &[u8],
    batch: usize,
    h: usize,
    w: usize,
    x_q: QParams,
    out: &mut [u8],
) -> Result<()> {
    l.conv.run(x, batch, h, w, x_q, l.out_q, l.relu, out)
}

/// `[n, hw, c]` → `[n, c, hw]`.
fn nhwc_to_nchw(src: &[u8], dst: &mut [u8], n: usize, hw: usize, c: usize) {
    for b in 0..n {
        let s = &src[b * c * hw..][..c * hw];
        let d = &mut dst[b * c * hw..][..c * hw];
        for p in 0..hw {
            for ch in 0..c {
                d[ch * hw + p] = s[p * c + ch];
            }
        }
    }
}

/// [`ops::max_pool2d_u8_with_isa`] with the output rows split over the current rayon pool.
///
/// Each chunk of output rows of one image is an ordinary max-pool call on the input rows its
/// windows cover, with the top padding that remains for that chunk (`pad'`), so every output
/// byte is the max of the same taps as in one call: identical results for any split. A chunk
/// for which that call would produce a different number of rows (it pads the bottom as much as
/// the top; with `pad ≥ stride` the first chunk gets too many) sends the whole op to the
/// one-call path, as do small outputs (below `PAR_MIN_BYTES`), where a fork-join costs more
/// than it saves.
fn max_pool_par(
    isa: Isa,
    x: &[u8],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    p: &Pool2d,
    out: &mut [u8],
) -> Result<(usize, usize)> {
    /// Output bytes below which one call on one thread is faster.
    const PAR_MIN_BYTES: usize = 64 * 1024;
    let threads = rayon::current_num_threads();
    let (oh, ow) = ops::pool_output_size(h, w, p)?;
    let img_in = checked_product(&[h, w, c], "max_pool2d input")?;
    let row_out = checked_product(&[ow, c], "max_pool2d output")?;
    let img_out = checked_product(&[oh, row_out], "max_pool2d output")?;
    let total = checked_product(&[n, img_out], "max_pool2d output")?;
    let serial = |out: &mut [u8]| ops::max_pool2d_u8_with_isa(isa, x, n, h, w, c, p, out);
    if threads < 2
        || total < PAR_MIN_BYTES
        || n.checked_mul(img_in) != Some(x.len())
        || out.len() < total
    {
        return serial(out);
    }
    // Output rows per chunk: about two chunks per thread over the whole batch.
    let chunk_rows = oh.div_ceil((2 * threads).div_ceil(n)).max(1);
    // The input rows [i0, i1) and the top padding of output rows [oy0, oy1), or None.
    let span = |oy0: usize, oy1: usize| -> Option<(usize, usize, Pool2d)> {
        let top = oy0 * p.stride_h;
        let i0 = top.saturating_sub(p.pad_h);
        let pad = p.pad_h + i0 - top;
        let reach = (oy1 - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1;
        let i1 = reach.saturating_sub(p.pad_h).min(h);
        let sub = Pool2d { pad_h: pad, ..*p };
        // Every in-image tap of these windows lies in [i0, i1); the call must also produce
        // exactly these rows (it applies `pad` at the bottom too).
        let ok = i1 > i0 && ops::pool_output_size(i1 - i0, w, &sub).ok() == Some((oy1 - oy0, ow));
        ok.then_some((i0, i1, sub))
    };
    let chunks: Vec<(usize, usize)> = (0..oh)
        .step_by(chunk_rows)
        .map(|oy0| (oy0, (oy0 + chunk_rows).min(oh)))
        .collect();
    let spans: Option<Vec<(usize, usize, Pool2d)>> =
        chunks.iter().map(|&(a, b)| span(a, b)).collect();
    let Some(spans) = spans else {
        return serial(out);
    };
    use rayon::prelude::*;
    let work: Vec<(usize, usize, &mut [u8])> = out[..total]
        .chunks_mut(img_out)
        .enumerate()
        .flat_map(|(b, img)| {
            img.chunks_mut(chunk_rows * row_out)
                .enumerate()
                .map(move |(j, o)| (b, j, o))
        })
        .collect();
    work.into_par_iter().try_for_each(|(b, j, o)| {
        let (i0, i1, sub) = spans[j];
        let src = &x[b * img_in..][i0 * w * c..i1 * w * c];
        let got = ops::max_pool2d_u8_with_isa(isa, src, 1, i1 - i0, w, c, &sub, o)?;
        debug_assert_eq!(got, (chunks[j].1 - chunks[j].0, ow));
        Ok::<(), Error>(())
    })?;
    Ok((oh, ow))
}

#[cfg(test)]
mod tests {
    use super::max_pool_par;
    use crate::{Pool2d, ops};

    /// The row-split max-pool gives the bytes of one call, for shapes that split and shapes that
    /// fall back (padding ≥ stride, odd sizes, dilation, batches).
    #[test]
    fn parallel_max_pool_equals_one_call() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        let mut seed = 7u32;
        for (n, h, w, c) in [
            (1, 112, 112, 64),
            (2, 97, 101, 24),
            (1, 400, 19, 40),
            (3, 65, 70, 32),
        ] {
            let x: Vec<u8> = (0..n * h * w * c)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 24) as u8
                })
                .collect();
            for (k, s, pad, d) in [
                (3, 2, 1, 1),
                (3, 1, 1, 1),
                (2, 2, 0, 1),
                (5, 2, 2, 1),
                (3, 3, 1, 2),
            ] {
                let p = Pool2d {
                    dilation_h: d,
                    dilation_w: d,
                    ..Pool2d::square(k, s, pad)
                };
                let Ok((oh, ow)) = ops::pool_output_size(h, w, &p) else {
                    continue;
                };
                let isa = crate::active_isa();
                let mut want = vec![0u8; n * oh * ow * c];
                ops::max_pool2d_u8_with_isa(isa, &x, n, h, w, c, &p, &mut want).expect("one call");
                let mut got = vec![1u8; want.len()];
                let dims = pool
                    .install(|| max_pool_par(isa, &x, n, h, w, c, &p, &mut got))
                    .expect("split");
                assert_eq!(dims, (oh, ow));
                assert_eq!(got, want, "{n}x{h}x{w}x{c} k{k} s{s} p{pad} d{d}");
            }
        }
    }
}
