//! Training-step and encoder throughput of the full-size model (ViT-B/16 at 384x128, 12-layer
//! 512-wide text encoder, cross-modal transformer, DCA; the `imal` loss set with MLM unless told
//! otherwise), in one pass or in chunks (`micro_batch`), on random batches already on the device
//! or, with a loader, on TOY-PEDES JPEGs through the data pipeline. Medians over the timed
//! steps after warm-up, and the peak memory of the steps. As a rank of a data-parallel run, each
//! rank steps on its slice of one global batch and knows every rank's slice (sizes, masked tokens,
//! pids), as with the training loader.
use super::optimizer::Optimizer;
use super::parallel::Ranks;
use super::step::{step, StepOptions};
use crate::config::{Config, DatasetName, LossNames, MicroBatch};
use crate::data::batch::TrainBatch;
use crate::data::loader::{LoaderOptions, Shard, TrainLoader};
use crate::loss::LossSpec;
use anyhow::{Context, Result};
use serde::Serialize;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// CUHK-PEDES's training identities: the classifier size of the benchmarked model.
const NUM_CLASSES: i64 = 11_003;
/// Untimed steps before the timed ones.
const WARMUP_STEPS: usize = 3;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub batch_size: usize,
    /// Timed steps (at least 1).
    pub steps: usize,
    /// Feed TOY-PEDES JPEGs through the loader instead of one random batch.
    pub with_loader: bool,
    /// Samples per pass of a step (none: one pass).
    pub micro_batch: Option<MicroBatch>,
    /// The loss terms (none: the `imal` set, CCMA's).
    pub loss_names: Option<LossNames>,
    pub device: Device,
}

/// The measurements.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub device: String,
    /// Ranks of the data-parallel run the steps ran in (1: one process, no exchange).
    pub ranks: usize,
    /// Per rank.
    pub batch_size: usize,
    pub steps: usize,
    pub with_loader: bool,
    /// The loss terms, joined by `+`.
    pub loss_names: String,
    /// Samples per pass of a step (none: one pass).
    pub chunk: Option<usize>,
    /// Samples of every rank in one step (the global batch).
    pub samples_per_step: usize,
    /// The type a linear layer returns inside the training forward's autocast region: `bf16`,
    /// `fp16`, or `off` (fp32, as on the CPU).
    pub autocast: &'static str,
    pub step_ms: f64,
    pub samples_per_s: f64,
    pub encoder_batch: i64,
    pub images_per_s: f64,
    pub texts_per_s: f64,
    /// The process's peak resident memory over the timed steps (GiB; Linux).
    pub peak_rss_gib: Option<f64>,
    /// Device memory in use after the run (CUDA only).
    pub gpu_used_gib: Option<f64>,
}

/// Starts a new peak of the process's resident memory (Linux: `/proc/self/clear_refs`).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident memory since the last reset, in GiB (Linux: `VmHWM`).
fn peak_rss_gib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / (1u64 << 20) as f64)
}

/// Waits for the device's queued work (timings must include it).
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Median seconds of `f` over 3 runs after one untimed run.
fn time_of(device: Device, f: impl Fn()) -> f64 {
    f();
    let runs = (0..3).map(|_| {
        sync(device);
        let t0 = Instant::now();
        f();
        sync(device);
        t0.elapsed().as_secs_f64()
    });
    median(runs.collect())
}

/// Runs the benchmark; the training steps run as a rank of `ranks` (each rank a batch of
/// `opts.batch_size`).
pub fn run(opts: &BenchOptions, ranks: &Ranks) -> Result<BenchResult> {
    let device = opts.device;
    let mut cfg = Config::default();
    cfg.data.batch_size = opts.batch_size;
    if let Some(names) = &opts.loss_names {
        cfg.loss.loss_names = names.clone();
    }
    tch::manual_seed(1);
    let (vs, model) = crate::factory::training_model(&cfg, NUM_CLASSES, device)?;
    let mut opt = Optimizer::new(&vs, &cfg.optim);
    opt.set_lr(|base| base);
    let spec = LossSpec::of(&cfg);
    let b = opts.batch_size as i64;
    let (size, l) = (cfg.data.img_size, cfg.data.text_length);
    let loader = if opts.with_loader {
        let mut data_cfg = cfg.clone();
        data_cfg.data.dataset_name = DatasetName::ToyPedes;
        let dataset =
            crate::data::load_dataset(&data_cfg).context("the loader benchmark reads TOY-PEDES")?;
        Some(TrainLoader::new(
            dataset.train,
            LoaderOptions {
                batch_size: opts.batch_size * ranks.world(),
                shard: Shard {
                    rank: ranks.rank(),
                    world: ranks.world(),
                },
                ..LoaderOptions::from_config(&cfg, device)
            },
        )?)
    } else {
        None
    };
    let slice = (ranks.rank(), ranks.world());
    let fixed = TrainBatch::random_slice(b, size, l, NUM_CLASSES, slice, device);
    let chunk = super::chunk_size::resolve(opts.micro_batch, opts.batch_size, device, |c| {
        // The probe runs on this process alone: the slice as a one-process batch.
        let own = fixed.narrow(0, b);
        Ok(super::step::probe(&model, &mut opt, &own, &spec, c)?)
    })?;
    let mut batches = loader.as_ref().map(|l| l.epoch(1, 0));
    let mut times = Vec::new();
    let mut samples_per_step = 0;
    let how = StepOptions {
        chunk,
        ..StepOptions::default()
    };
    for i in 0..WARMUP_STEPS + opts.steps {
        if i == WARMUP_STEPS {
            reset_peak_rss();
        }
        sync(device);
        let t0 = Instant::now();
        let loaded;
        let batch = match batches.as_mut() {
            Some(it) => {
                loaded = it
                    .next()
                    .context("the loader ran out of batches; use fewer steps")??
                    .to_device(device);
                &loaded
            }
            None => &fixed,
        };
        samples_per_step = step(&model, &mut opt, batch, &spec, ranks, how)?.samples;
        sync(device);
        if i >= WARMUP_STEPS {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let step_ms = median(times) * 1e3;
    let peak_rss_gib = peak_rss_gib();
    // Encoders alone, no grad, at the evaluation batch size.
    let enc_b: i64 = if device.is_cuda() { 512 } else { b };
    let images = Tensor::randn([enc_b, 3, size.0, size.1], (Kind::Float, device));
    let texts = TrainBatch::random(enc_b, size, l, NUM_CLASSES, device).caption_ids;
    let img_s = enc_b as f64
        / time_of(device, || {
            drop(tch::no_grad(|| model.image_features(&images)))
        });
    let txt_s = enc_b as f64
        / time_of(device, || {
            drop(tch::no_grad(|| model.text_features(&texts)))
        });
    Ok(BenchResult {
        device: format!("{device:?}"),
        ranks: ranks.world(),
        batch_size: opts.batch_size,
        steps: opts.steps,
        with_loader: opts.with_loader,
        loss_names: spec
            .terms
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join("+"),
        chunk,
        samples_per_step,
        autocast: crate::model::amp::autocast_in_effect(device),
        step_ms,
        samples_per_s: samples_per_step as f64 / step_ms * 1e3,
        encoder_batch: enc_b,
        images_per_s: img_s,
        texts_per_s: txt_s,
        peak_rss_gib,
        gpu_used_gib: crate::device::used_memory_gib(device),
    })
}
