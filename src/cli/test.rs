//! `ccma test`: evaluates a checkpoint on its dataset's test (or validation) split.
use super::args::{load_test_setup, ConfigArgs, DeviceArg};
use crate::config::{Similarity, SplitName};
use crate::inference::TestSetup;
use crate::io::output_path::{self, Existing};
use crate::retrieval::encode::{score_i2t, score_split, t2i_records, SplitFeatures};
use crate::retrieval::metrics::{table, write_query_records, RetrievalMetrics};
use crate::retrieval::sheets::contact_sheets;
use crate::train::run_dir::{queries_path, test_results_path, RunDir};
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};

/// Evaluate a checkpoint on its dataset's test (or validation) split.
///
/// Text-to-image retrieval, optionally image-to-text too, by the configured `similarity`; for a
/// model with TSE, the t2i rows of BGE, TSE and BGE+TSE too, as RDE's evaluator prints them. Writes
/// <split>_results.<checkpoint stem>.<dataset>.<tag>.json beside the checkpoint (tag: the first 8
/// hex digits of the SHA-256 of the file's `settings`), and every t2i query's rank, AP and INP to
/// the .queries.jsonl file of the same name.
#[derive(Args, Debug)]
pub struct TestArgs {
    /// Data settings: a run's configs.yaml (default: the one beside the checkpoint, else the paper's).
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Model weights: a ccma checkpoint, or an IRRA or CCMA best.pth (default: best.safetensors
    /// beside --config, or, in a folder IRRA's, CCMA's or RDE's train.py wrote, its best.pth).
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
const EVAL_KEYS: [&str; 6] = [
    "similarity",
    "img_size",
    "text_length",
    "test_batch_size",
    "device",
    "matmul_precision",
];

// `TestSetup` is the library's; what `ccma test` records of it is this command's.
impl TestSetup {
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
        // Recorded only where it is not the one a model without TSE has (older records' tags
        // stay as they were).
        if self.opts.similarity != Similarity::Bge {
            v["similarity"] = serde_json::json!(self.opts.similarity.name());
        }
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
    let keys = [&crate::data::DATASET_KEYS[..], &EVAL_KEYS].concat();
    a.config.check_sets_act("test", &keys)?;
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
    let parts = setup.embed_parts()?;
    let compared = |s: Similarity| SplitFeatures {
        images: parts[0].compared(s),
        texts: parts[1].compared(s),
    };
    let feats = compared(setup.opts.similarity);
    let split = setup.eval_split();
    let queries = t2i_records(&feats, split)?;
    let t2i = RetrievalMetrics::from_scores(queries.iter().map(|q| Some(q.score())))?;
    let i2t = a.i2t.then(|| score_i2t(&feats, split)).transpose()?;
    // RDE's rows: each similarity's t2i metrics, for a model with the TSE layers.
    let by_similarity: Vec<(Similarity, RetrievalMetrics)> = match setup.model.model.has_tse() {
        true => Similarity::ALL
            .iter()
            .map(|&s| Ok((s, score_split(&compared(s), split, false)?.0)))
            .collect::<Result<_>>()?,
        false => Vec::new(),
    };
    // What is printed with --json, and recorded.
    let mut metrics = super::output::metrics_json(&t2i, i2t.as_ref());
    if !by_similarity.is_empty() {
        metrics["similarity"] = serde_json::json!(setup.opts.similarity.name());
        let rows: serde_json::Map<String, serde_json::Value> = by_similarity
            .iter()
            .map(|(s, m)| (s.name().to_string(), serde_json::json!(m)))
            .collect();
        metrics["t2i_by_similarity"] = serde_json::Value::Object(rows);
    }
    let mut record = metrics.clone();
    record["checkpoint"] = serde_json::json!(absolute(checkpoint));
    record["checkpoint_fingerprint"] = serde_json::json!(setup.model.fingerprint);
    record["gallery_images"] = serde_json::json!(split.image_paths.len());
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
    let mut heading = format!("{dataset} {}, {}", a.split, checkpoint.display());
    if !by_similarity.is_empty() {
        heading += &format!(" (similarity {})", setup.opts.similarity);
    }
    if a.json {
        return super::output::print(format_args!("{metrics}\n"));
    }
    super::output::print_metrics(Some(&heading), &t2i, i2t.as_ref(), false)?;
    if !by_similarity.is_empty() {
        let rows: Vec<(String, &RetrievalMetrics)> = by_similarity
            .iter()
            .map(|(s, m)| (format!("t2i {}", s.name().to_uppercase()), m))
            .collect();
        let rows: Vec<(&str, &RetrievalMetrics)> =
            rows.iter().map(|(n, m)| (n.as_str(), *m)).collect();
        super::output::print(table(&rows))?;
    }
    Ok(())
}
