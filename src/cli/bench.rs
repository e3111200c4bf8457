//! `ccma bench`.
use super::args::DeviceArg;
use crate::config::{Config, LossNames, MicroBatch};
use crate::dist::Launch;
use crate::train::bench::{self, BenchOptions};
use crate::train::parallel::Ranks;
use anyhow::Result;
use clap::Args;

/// Measure training-step and encoder throughput of the full-size model.
///
/// On random batches. Started with torchrun's variables (WORLD_SIZE=1 included), every step also
/// runs the data-parallel exchange of each rank's batch of this size.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Training batch size.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(2..))]
    pub batch_size: u64,
    /// Timed steps (after 3 warm-up steps).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: u64,
    /// Feed real JPEGs (TOY-PEDES under ./data) through the data pipeline instead of random tensors.
    #[arg(long)]
    pub with_loader: bool,
    /// Samples per pass of a step: N or auto (CUDA), as `micro_batch` in training; default one pass.
    #[arg(long, value_name = "N|auto")]
    pub micro_batch: Option<MicroBatch>,
    /// Loss terms joined by `+` (default `imal`, CCMA's set; `sdm+id+mlm` is IRRA's).
    #[arg(long, value_name = "NAMES")]
    pub loss_names: Option<LossNames>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(a: BenchArgs) -> Result<()> {
    let ranks = match Launch::from_env()? {
        Some(launch) => {
            let mut cfg = Config::default();
            cfg.run.device = a.device.spec()?;
            cfg.data.batch_size = a.batch_size as usize * launch.world_size;
            Ranks::connect(&launch, &cfg)?
        }
        None => Ranks::single(a.device.resolve()?),
    };
    let r = bench::run(
        &BenchOptions {
            batch_size: a.batch_size as usize,
            steps: a.steps as usize,
            with_loader: a.with_loader,
            micro_batch: a.micro_batch,
            loss_names: a.loss_names.clone(),
            device: ranks.device(),
        },
        &ranks,
    )?;
    if a.json {
        return super::output::print(format_args!("{}\n", serde_json::to_string(&r)?));
    }
    let mut t = prettytable::Table::new();
    t.set_titles(prettytable::row![
        "device",
        "ranks",
        "batch/rank",
        "losses",
        "chunk",
        "autocast",
        "ms/step",
        "samples/s",
        "images/s",
        "texts/s",
        "peak RSS GiB",
        "GPU used GiB"
    ]);
    t.add_row(prettytable::row![
        r.device,
        r.ranks,
        r.batch_size,
        r.loss_names,
        r.chunk.map_or("-".into(), |c| c.to_string()),
        r.autocast,
        format!("{:.1}", r.step_ms),
        format!("{:.1}", r.samples_per_s),
        format!("{:.1}", r.images_per_s),
        format!("{:.1}", r.texts_per_s),
        r.peak_rss_gib.map_or("-".into(), |p| format!("{p:.2}")),
        r.gpu_used_gib.map_or("-".into(), |p| format!("{p:.2}"))
    ]);
    super::output::print(t)
}
