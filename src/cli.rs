//! Command-line interface: argument definitions and dispatch to the library.
use crate::config::{parse_override, Config};
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "ccma",
    version,
    about = "Text-to-image person retrieval with CCMA (consistency-driven cross-modal alignment) on the IRRA recipe",
    long_about = "Trains and evaluates text-to-image person retrieval models: a CLIP ViT-B/16 dual encoder with \
IRRA's cross-modal MLM branch, CCMA's differential cross-modal attention and the IMAL loss. Reports \
R@1/5/10, mAP and mINP on CUHK-PEDES, ICFG-PEDES, RSTPReid and the generated SYNTH-PEDES set."
)]
pub struct Cli {
    /// Log level filter (error, warn, info, debug, trace), or an env-filter directive.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model; writes a run folder with configs.yaml, checkpoints, logs and results.
    Train(TrainArgs),
    /// Evaluate a trained run on the test split (t2i, optionally i2t).
    Test(TestArgs),
    /// Embed images and/or captions into global features, written as safetensors.
    Embed(EmbedArgs),
    /// Compute retrieval metrics from query and gallery feature files.
    Rank(RankArgs),
    /// Search a gallery of images with a sentence.
    Search(SearchArgs),
    /// Tokenise UTF-8 lines from stdin; prints one JSON array of token ids per line.
    Tokenize(TokenizeArgs),
    /// Print per-split counts (ids, images, captions) of a dataset.
    Stats(StatsArgs),
    /// Measure training-step and encoder throughput on synthetic batches.
    Bench(BenchArgs),
    /// Print the ccma and libtorch versions and the devices libtorch sees.
    Info,
}

/// The run configuration: a YAML file plus overrides. Flags win over the file.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// YAML config file (keys as in configs/*.yaml); defaults are the paper's CUHK-PEDES settings.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Dataset: CUHK-PEDES, ICFG-PEDES, RSTPReid or SYNTH-PEDES (key `dataset_name`).
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,
    /// Folder that holds `<dataset>/` (key `root_dir`).
    #[arg(long, value_name = "DIR")]
    pub root_dir: Option<PathBuf>,
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    #[arg(long, value_name = "N")]
    pub num_epoch: Option<usize>,
    /// Experiment name, the suffix of the run folder.
    #[arg(long)]
    pub name: Option<String>,
    /// Runs go to <output-dir>/<dataset>/<timestamp>_<name>/.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Use this run folder instead of a generated one.
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Pretrained CLIP weights: OpenAI's ViT-B-16.pt (TorchScript) or a safetensors file.
    #[arg(long, value_name = "FILE")]
    pub pretrained: Option<PathBuf>,
    /// Loss terms joined by `+` (sdm, itc, cmpm, id, mlm, imal); `imal` = the CCMA set.
    #[arg(long, value_name = "NAMES")]
    pub loss_names: Option<String>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Set any config key, e.g. `--set lr=1e-4 --set img_size=[256,128]` (values are YAML).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_override)]
    pub set: Vec<(String, String)>,
}

impl ConfigArgs {
    /// Defaults, then `--config`, then `--set`, then the named flags.
    pub fn resolve(&self) -> Result<Config> {
        let base = match &self.config {
            Some(path) => {
                Config::from_file(path).map_err(|e| crate::UsageError(format!("{e:#}")))?
            }
            None => Config::default(),
        };
        let mut overrides = self.set.clone();
        let mut flag = |key: &str, v: Option<String>| {
            if let Some(v) = v {
                overrides.push((key.to_string(), v));
            }
        };
        let path_str = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        // Paths and names are quoted so YAML never reinterprets them (e.g. `no`, `1e3`).
        let quoted = |s: Option<String>| {
            s.map(|s| serde_yaml::to_string(&s).unwrap_or(s).trim().to_string())
        };
        flag("dataset_name", quoted(self.dataset.clone()));
        flag("root_dir", quoted(path_str(&self.root_dir)));
        flag("batch_size", self.batch_size.map(|v| v.to_string()));
        flag("num_epoch", self.num_epoch.map(|v| v.to_string()));
        flag("name", quoted(self.name.clone()));
        flag("output_dir", quoted(path_str(&self.output_dir)));
        flag("run_dir", quoted(path_str(&self.run_dir)));
        flag("pretrained", quoted(path_str(&self.pretrained)));
        flag("loss_names", quoted(self.loss_names.clone()));
        flag("device", quoted(self.device.clone()));
        base.with_overrides(&overrides)
            .map_err(|e| crate::UsageError(format!("{e:#}")).into())
    }
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Continue a run folder from its last completed epoch.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    /// A run's configs.yaml (or any config); the checkpoint defaults to best.safetensors beside it.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Model weights to evaluate (safetensors).
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

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Pretrained CLIP weights (ViT-B-16.pt or safetensors).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "checkpoint",
        required_unless_present = "checkpoint"
    )]
    pub pretrained: Option<PathBuf>,
    /// A ccma checkpoint (safetensors); its run's configs.yaml is read when present beside it.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Image files to embed, in this order.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub images: Vec<PathBuf>,
    /// Embed every image (jpg, jpeg, png) in this folder, sorted by path.
    #[arg(long, value_name = "DIR")]
    pub image_dir: Option<PathBuf>,
    /// Captions to embed, one per line.
    #[arg(long, value_name = "FILE")]
    pub captions: Option<PathBuf>,
    /// Output safetensors with `image_features` [Ni, D] and `text_features` [Nt, D] (f32).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Image size as HxW (default: the config's, 384x128).
    #[arg(long, value_name = "HxW")]
    pub img_size: Option<String>,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
}

#[derive(Args, Debug)]
pub struct RankArgs {
    /// Query features: safetensors with `features` (f32 [N, D]) and `pids` (i64 [N]).
    #[arg(long, value_name = "FILE")]
    pub queries: PathBuf,
    /// Gallery features, same layout as the queries.
    #[arg(long, value_name = "FILE")]
    pub gallery: PathBuf,
    /// Also report image-to-text (gallery as queries).
    #[arg(long)]
    pub i2t: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// A ccma checkpoint (safetensors).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "pretrained",
        required_unless_present = "pretrained"
    )]
    pub checkpoint: Option<PathBuf>,
    /// Pretrained CLIP weights (ViT-B-16.pt or safetensors).
    #[arg(long, value_name = "FILE")]
    pub pretrained: Option<PathBuf>,
    /// A folder of images, or an embeddings file written by `ccma embed`.
    #[arg(long, value_name = "DIR|FILE")]
    pub gallery: PathBuf,
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Contact sheet PNG of the top results.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// The sentence to search for.
    pub query: String,
}

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Context length (ids per line, zero-padded; longer captions are truncated, last id EOT).
    #[arg(long, default_value_t = 77)]
    pub text_length: usize,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Timed steps (after warm-up).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Feed real JPEGs (SYNTH-PEDES) through the data pipeline instead of synthetic tensors.
    #[arg(long)]
    pub with_loader: bool,
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => crate::train::run_cli(&a),
        Command::Test(a) => crate::eval::run_test_cli(&a),
        Command::Embed(a) => crate::model::run_embed_cli(&a),
        Command::Rank(a) => crate::eval::run_rank_cli(&a),
        Command::Search(a) => crate::search::run_cli(&a),
        Command::Tokenize(a) => crate::data::run_tokenize_cli(&a),
        Command::Stats(a) => crate::data::run_stats_cli(&a),
        Command::Bench(a) => crate::bench::run_cli(&a),
        Command::Info => {
            for line in crate::device::info_lines() {
                println!("{line}");
            }
            Ok(())
        }
    }
}
