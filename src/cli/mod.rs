//! The `qkernels` command line: `run`, `classify`, `bench`, `info`.
//!
//! Every failure becomes one `error: …` line on stderr and exit status 1 (clap's usage errors
//! exit with 2); nothing here panics on bad input.

mod bench;
mod images;
mod npy;

use clap::{Args, Parser, Subcommand};
use qkernels::Isa;
use qkernels::resnet18::{Model, ModelOptions, Workspace};
use std::path::{Path, PathBuf};

/// The trained int8 digits ResNet-18 (`models/digits_resnet18.safetensors`), the default model.
pub static DEFAULT_MODEL: &[u8] = include_bytes!("../../models/digits_resnet18.safetensors");

/// Int8 ResNet-18 bit-exact with PyTorch's fbgemm backend.
#[derive(Parser, Debug)]
#[command(name = "qkernels", version, about, long_about = None)]
pub struct Cli {
    /// Worker threads for the GEMMs (default: one per core).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    /// ISA to run on (scalar, avx2, avx512vnni, neon, neondot, neoni8mm; default: the best).
    #[arg(long, global = true, value_name = "ISA")]
    isa: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a model on a float32 .npy batch [N, 3, H, W]; write float32 logits [N, classes].
    Run {
        #[command(flatten)]
        model: ModelArg,
        /// Input .npy: float32 (or float64) [N, C, H, W], normalised.
        #[arg(long, value_name = "X.npy")]
        input: PathBuf,
        /// Output .npy: float32 dequantized logits [N, classes].
        #[arg(long, value_name = "Y.npy")]
        output: PathBuf,
    },
    /// Classify PNG/JPEG images (preprocessing from the model's metadata).
    Classify {
        #[command(flatten)]
        model: ModelArg,
        /// Also list the K best classes (with --json; in text mode, K > 1 prints them too).
        #[arg(long, default_value_t = 1, value_name = "K")]
        top: usize,
        /// Print a JSON array instead of text.
        #[arg(long)]
        json: bool,
        /// Images to classify.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
    },
    /// Measure latency and throughput, with a per-layer time table.
    Bench(bench::BenchArgs),
    /// Show the ISA in use, every supported ISA and the version.
    Info,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ModelArg {
    /// Model file (safetensors, docs/model-format.md); default: the embedded digits model.
    #[arg(long, value_name = "M.safetensors")]
    model: Option<PathBuf>,
}

/// Parses the arguments and runs the command; `Err` is the message to print.
pub fn main(cli: Cli) -> Result<(), String> {
    let isa = match &cli.isa {
        None => qkernels::active_isa(),
        Some(s) => {
            let isa: Isa = s.parse().map_err(|e| format!("--isa {s}: {e}"))?;
            qkernels::check_isa(isa).map_err(|e| e.to_string())?;
            isa
        }
    };
    let threads = match cli.threads {
        Some(0) => return Err("--threads must be at least 1".into()),
        Some(n) => n,
        None => rayon::current_num_threads(),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| format!("cannot start {threads} threads: {e}"))?;
    let opts = ModelOptions::for_isa(isa);
    pool.install(|| match cli.command {
        Command::Run {
            model,
            input,
            output,
        } => run(&load(&model, &opts)?, &input, &output),
        Command::Classify {
            model,
            top,
            json,
            images,
        } => classify(&load(&model, &opts)?, top, json, &images),
        Command::Bench(a) => bench::bench(&a, &opts, threads),
        Command::Info => {
            info(isa);
            Ok(())
        }
    })
}

pub(crate) fn load(m: &ModelArg, opts: &ModelOptions) -> Result<Model, String> {
    match &m.model {
        Some(p) => Model::load_with(p, opts).map_err(|e| e.to_string()),
        None => {
            Model::from_bytes_with(DEFAULT_MODEL, opts).map_err(|e| format!("embedded model: {e}"))
        }
    }
}

fn run(model: &Model, input: &Path, output: &Path) -> Result<(), String> {
    let x = npy::read(input)?;
    let c = model.input_channels();
    let [n, ch, h, w] = x.shape[..] else {
        return Err(format!(
            "{}: shape {:?}: expected [N, {c}, H, W]",
            input.display(),
            x.shape
        ));
    };
    if ch != c || n == 0 || h == 0 || w == 0 {
        return Err(format!(
            "{}: shape {:?}: expected [N, {c}, H, W] with N, H, W ≥ 1",
            input.display(),
            x.shape
        ));
    }
    let classes = model.num_classes();
    let mut logits = vec![0f32; n * classes];
    model
        .run(&x.data, n, h, w, &mut logits)
        .map_err(|e| e.to_string())?;
    npy::write(output, &[n, classes], &logits)
}

/// Softmax of one row of logits (computed in f64).
fn softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn classify(model: &Model, top: usize, json: bool, paths: &[PathBuf]) -> Result<(), String> {
    if top == 0 {
        return Err("--top must be at least 1".into());
    }
    let meta = model.metadata();
    let (h, w) = model.input_size();
    let per = model.input_channels() * h * w;
    let classes = model.num_classes();
    // decode and run in batches of 16 images: bounded memory for any number of files
    const BATCH: usize = 16;
    let mut logits = vec![0f32; paths.len() * classes];
    let mut ws = Workspace::new();
    let mut x = Vec::with_capacity(per * BATCH.min(paths.len()));
    for (chunk, out) in paths.chunks(BATCH).zip(logits.chunks_mut(BATCH * classes)) {
        x.clear();
        for p in chunk {
            x.extend(images::load_input(p, meta)?);
        }
        model
            .run_with(&mut ws, &x, chunk.len(), h, w, out)
            .map_err(|e| e.to_string())?;
    }
    let mut out = Vec::new();
    for (p, row) in paths.iter().zip(logits.chunks_exact(classes)) {
        let probs = softmax(row);
        let mut order: Vec<usize> = (0..classes).collect();
        // highest score first; ties: the lower class index (as argmax does)
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        order.truncate(top.min(classes));
        if json {
            out.push(serde_json::json!({
                "path": p.display().to_string(),
                "label": meta.label(order[0]),
                "score": probs[order[0]],
                "top": order.iter().map(|&c| serde_json::json!({
                    "label": meta.label(c),
                    "score": probs[c],
                })).collect::<Vec<_>>(),
            }));
        } else {
            let mut line = format!(
                "{}\t{}\t{:.4}",
                p.display(),
                meta.label(order[0]),
                probs[order[0]]
            );
            for &c in &order[1..] {
                line.push_str(&format!("\t{}:{:.4}", meta.label(c), probs[c]));
            }
            println!("{line}");
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
    }
    Ok(())
}

fn info(isa: Isa) {
    println!("qkernels {}", qkernels::VERSION);
    println!("ISA in use: {isa}");
    let all: Vec<String> = Isa::supported().iter().map(|i| i.to_string()).collect();
    println!("supported ISAs: {}", all.join(", "));
    match Model::from_bytes_with(DEFAULT_MODEL, &ModelOptions::for_isa(isa)) {
        Ok(m) => println!(
            "default model: embedded int8 digits ResNet-18 ({} classes, input {}x{})",
            m.num_classes(),
            m.input_size().0,
            m.input_size().1
        ),
        Err(e) => println!("default model: unusable ({e})"),
    }
}
