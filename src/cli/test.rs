//! `ccma test`: evaluates a checkpoint on its dataset's test split.
use super::args::{model_and_options, ConfigArgs, DeviceArg};
use crate::factory::{Inference, WeightsSource};
use crate::retrieval::encode::{embed_split, score_split, EncodeOptions, SplitFeatures};
use crate::retrieval::features::non_finite;
use crate::retrieval::sheets::contact_sheets;
use crate::UsageError;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Evaluate a checkpoint on the test split (t2i, optionally i2t); writes test_results.json beside it.
#[derive(Args, Debug)]
pub struct TestArgs {
    /// Data settings: a run's configs.yaml (default: the one beside the checkpoint, else the paper's).
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Model weights (a ccma checkpoint; default: best.safetensors beside --config).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Also report image-to-text retrieval.
    #[arg(long)]
    pub i2t: bool,
    /// Print the metrics as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write contact sheets for this many test queries (true matches framed).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub visualize: usize,
}

/// The config keys evaluation uses.
const KEYS: [&str; 9] = [
    "dataset_name",
    "root_dir",
    "synth_ids",
    "seed",
    "img_size",
    "text_length",
    "test_batch_size",
    "device",
    "matmul_precision",
];

/// A checkpoint's test split, embedded: what `ccma test` scores (and `ccma serve --run` browses).
pub(super) struct EmbeddedTestSplit {
    pub checkpoint: PathBuf,
    pub dataset: crate::data::annotations::Dataset,
    pub model: Inference,
    pub opts: EncodeOptions,
    pub feats: SplitFeatures,
}

/// Loads the checkpoint (`checkpoint`, default: best.safetensors beside `--config`) and its
/// dataset with the data settings of `config` (default: the configs.yaml beside the checkpoint,
/// else the paper's), and embeds the test split; non-finite features are an error.
pub(super) fn embed_test_split(
    config: &ConfigArgs,
    device: &DeviceArg,
    checkpoint: Option<&Path>,
) -> Result<EmbeddedTestSplit> {
    let checkpoint = match (checkpoint, &config.config) {
        (Some(c), _) => c.to_path_buf(),
        (None, Some(cfg)) => cfg.with_file_name("best.safetensors"),
        (None, None) => {
            return Err(
                UsageError("give --checkpoint FILE or --config RUN/configs.yaml".into()).into(),
            )
        }
    };
    let beside = checkpoint.with_file_name("configs.yaml");
    let fallback = beside.is_file().then_some(beside.as_path());
    config.check_sets_act("test", &KEYS)?;
    let cfg = config.resolve(fallback, device, |_| Ok(()))?;
    let device = cfg.run.device.resolve()?;
    crate::model::amp::set_cuda_matmul_precision(cfg.run.matmul_precision.name(), device)?;
    super::check::require_images(&cfg)?;
    let dataset = crate::data::load_dataset(&cfg)?;
    dataset.require_splits(&["test"])?;
    // Data settings given in a file or with --set decide the input size and caption length;
    // otherwise the checkpoint's own model does.
    let explicit = fallback.is_some() || config.config.is_some() || !config.set.is_empty();
    let source = WeightsSource::Checkpoint(checkpoint.clone());
    let (model, opts) = model_and_options(&source, explicit.then_some(&cfg.data), None, device)?;
    let feats = embed_split(&model.model, &dataset.test, &opts)
        .with_context(|| format!("embedding the {} test split", dataset.name))?;
    let bad = non_finite(&feats.images) + non_finite(&feats.texts);
    if bad > 0 {
        return Err(UsageError(format!(
            "{}: the model gives {bad} NaN or infinite feature values on the {} test split (expected finite numbers; are its weights finite?)",
            checkpoint.display(),
            dataset.name
        ))
        .into());
    }
    Ok(EmbeddedTestSplit {
        checkpoint,
        dataset,
        model,
        opts,
        feats,
    })
}

pub fn run(a: TestArgs) -> Result<()> {
    let EmbeddedTestSplit {
        checkpoint,
        dataset,
        feats,
        ..
    } = embed_test_split(&a.config, &a.device, a.checkpoint.as_deref())?;
    let (t2i, i2t) = score_split(&feats, &dataset.test, a.i2t)?;
    let heading = format!("{} test, {}", dataset.name, checkpoint.display());
    let json = super::output::print_metrics(Some(&heading), &t2i, i2t.as_ref(), a.json);
    let out = checkpoint.with_file_name("test_results.json");
    crate::io::write_atomic(&out, serde_json::to_string_pretty(&json)?.as_bytes())?;
    tracing::info!("wrote {}", out.display());
    if a.visualize > 0 {
        let dir = checkpoint.with_file_name("visualize");
        let n = contact_sheets(&feats, &dataset.test, a.visualize, &dir)?;
        tracing::info!("wrote {n} contact sheets to {}", dir.display());
    }
    Ok(())
}
