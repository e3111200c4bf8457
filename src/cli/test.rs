//! `ccma test`: evaluates a checkpoint on its dataset's test (or validation) split.
use super::args::{model_and_options, ConfigArgs, DeviceArg};
use crate::config::{Config, SplitName};
use crate::data::annotations::EvalSplit;
use crate::factory::{Inference, WeightsSource};
use crate::io::output_path::{self, Existing};
use crate::io::run_files;
use crate::retrieval::encode::{embed_split, score_i2t, t2i_records, EncodeOptions, SplitFeatures};
use crate::retrieval::features::require_finite_output;
use crate::retrieval::metrics::{write_query_records, RetrievalMetrics};
use crate::retrieval::sheets::contact_sheets;
use crate::train::run_dir::{queries_path, test_results_path, RunDir};
use crate::UsageError;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Evaluate a checkpoint on the test split (t2i, optionally i2t); writes
/// <split>_results.<checkpoint stem>.<dataset>.<tag>.json beside it (tag: the first 8 hex digits
/// of the SHA-256 of the file's `settings`), and every t2i query's rank, AP and INP to the
/// .queries.jsonl file of the same name.
#[derive(Args, Debug)]
pub struct TestArgs {
    /// Data settings: a run's configs.yaml (default: the one beside the checkpoint, else the paper's).
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Model weights: a ccma checkpoint, or an IRRA or CCMA best.pth (default: best.safetensors
    /// beside --config).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Also report image-to-text retrieval.
    #[arg(long)]
    pub i2t: bool,
    /// Print the metrics as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The split to evaluate: test, or val (the validation split; val_results.*.json).
    #[arg(long, value_name = "SPLIT", default_value = "test")]
    pub split: SplitName,
    /// Write contact sheets for this many queries (true matches framed).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub visualize: usize,
}

/// The config keys evaluation uses besides the dataset's ([`crate::data::DATASET_KEYS`]).
const EVAL_KEYS: [&str; 5] = [
    "img_size",
    "text_length",
    "test_batch_size",
    "device",
    "matmul_precision",
];

/// A checkpoint and its dataset, loaded with the data settings that decide the numbers.
pub(super) struct TestSetup {
    pub checkpoint: PathBuf,
    pub cfg: Config,
    pub dataset: crate::data::annotations::Dataset,
    pub split: SplitName,
    pub model: Inference,
    pub opts: EncodeOptions,
    pub device: tch::Device,
}

/// Loads the checkpoint (`checkpoint`, default: best.safetensors beside `--config`) and its
/// dataset with the data settings of `config` (default: the configs.yaml beside the checkpoint,
/// else the paper's), for evaluating `split`; every image of the dataset must exist.
pub(super) fn load_test_setup(
    config: &ConfigArgs,
    device: &DeviceArg,
    checkpoint: Option<&Path>,
    split: SplitName,
) -> Result<TestSetup> {
    let checkpoint = match (checkpoint, &config.config) {
        (Some(c), _) => c.to_path_buf(),
        (None, Some(cfg)) => cfg.with_file_name(run_files::BEST),
        (None, None) => {
            return Err(
                UsageError("give --checkpoint FILE or --config RUN/configs.yaml".into()).into(),
            )
        }
    };
    let beside = checkpoint.with_file_name(run_files::CONFIG);
    let fallback = beside.is_file().then_some(beside.as_path());
    config.check_sets_act(
        "test",
        &[&crate::data::DATASET_KEYS[..], &EVAL_KEYS].concat(),
    )?;
    let cfg = config.resolve(fallback, device, |_| Ok(()))?;
    let device = cfg.run.device.resolve()?;
    crate::model::amp::set_cuda_matmul_precision(cfg.run.matmul_precision.name(), device)?;
    super::check::require_images(&cfg)?;
    let dataset = crate::data::load_dataset(&cfg)?;
    dataset.require_splits(&[split.name()])?;
    // Data settings given in a file or with --set decide the input size and caption length;
    // otherwise the checkpoint's own model does.
    let explicit = fallback.is_some() || config.config.is_some() || !config.set.is_empty();
    let source = WeightsSource::Checkpoint(checkpoint.clone());
    let (model, opts) = model_and_options(&source, explicit.then_some(&cfg.data), None, device)?;
    Ok(TestSetup {
        checkpoint,
        cfg,
        dataset,
        split,
        model,
        opts,
        device,
    })
}

impl TestSetup {
    /// The evaluated split's annotations.
    pub(super) fn eval_split(&self) -> &EvalSplit {
        self.dataset.eval_split(self.split)
    }

    /// The evaluated split's features; non-finite features are an error.
    pub(super) fn embed(&self) -> Result<SplitFeatures> {
        let on = format!("the {} {} split", self.dataset.name, self.split);
        let feats = embed_split(&self.model.model, self.eval_split(), &self.opts)
            .with_context(|| format!("embedding {on}"))?;
        require_finite_output(&[&feats.images, &feats.texts], &self.checkpoint, &on)?;
        Ok(feats)
    }

    /// What decides the numbers of a test: the data read and how it is fed to the model.
    fn settings(&self) -> serde_json::Value {
        let d = &self.cfg.data;
        let mut v = serde_json::json!({
            "dataset_name": d.dataset_name.name(),
            "root_dir": absolute(&d.root_dir),
            "dataset_dir": absolute(&self.dataset.dir),
            "split": self.split.name(),
            "img_size": [self.opts.img_size.0, self.opts.img_size.1],
            "text_length": self.opts.text_length,
        });
        for (key, value) in crate::data::folder_keys(&self.cfg) {
            v[key] = value;
        }
        v
    }
}

/// The first 8 hex digits of the SHA-256 of `settings` as compact JSON (keys sorted).
fn tag(settings: &serde_json::Value) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(settings.to_string().as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// `path` absolute with links resolved, else as given.
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

pub fn run(a: TestArgs) -> Result<()> {
    let setup = load_test_setup(&a.config, &a.device, a.checkpoint.as_deref(), a.split)?;
    let checkpoint = &setup.checkpoint;
    // A run folder that a `ccma train` is using is refused before any work.
    let folder = match checkpoint.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    drop(RunDir::hold_at_rest(&folder)?);
    let settings = setup.settings();
    let dataset = setup.dataset.name;
    let out = test_results_path(checkpoint, a.split, dataset.name(), &tag(&settings));
    let inputs = [checkpoint.clone(), setup.dataset.dir.clone()];
    output_path::check(&out, &inputs, Existing::Replace)?;
    output_path::check(&queries_path(&out), &inputs, Existing::Replace)?;
    let feats = setup.embed()?;
    let split = setup.eval_split();
    let queries = t2i_records(&feats, split)?;
    let t2i = RetrievalMetrics::from_scores(queries.iter().map(|q| Some(q.score())))?;
    let i2t = a.i2t.then(|| score_i2t(&feats, split)).transpose()?;
    let mut record = super::output::metrics_json(&t2i, i2t.as_ref());
    record["checkpoint"] = serde_json::json!(absolute(checkpoint));
    record["settings"] = settings;
    record["device"] = serde_json::json!(match setup.device {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    });
    record["test_batch_size"] = serde_json::json!(setup.opts.batch_size);
    record["ccma_version"] = serde_json::json!(env!("CARGO_PKG_VERSION"));
    {
        let _hold = RunDir::hold_at_rest(&folder)?;
        write_query_records(&queries_path(&out), &queries)?;
        crate::io::write_atomic(&out, serde_json::to_string_pretty(&record)?.as_bytes())?;
        tracing::info!(
            "wrote {} and {}",
            out.display(),
            queries_path(&out).display()
        );
        if a.visualize > 0 {
            let dir = checkpoint.with_file_name("visualize");
            let n = contact_sheets(&feats, split, a.visualize, &dir)?;
            tracing::info!("wrote {n} contact sheets to {}", dir.display());
        }
    }
    let heading = format!("{dataset} {}, {}", a.split, checkpoint.display());
    super::output::print_metrics(Some(&heading), &t2i, i2t.as_ref(), a.json)?;
    Ok(())
}
