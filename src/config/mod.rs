//! The run configuration: every key of the method with IRRA's names and the paper's defaults, in
//! typed sections.
//!
//! A config file is one flat YAML mapping (IRRA's keys); in memory the keys are grouped by what
//! they steer: [`RunSection`], [`DataSection`], [`ModelSection`], [`LossSection`],
//! [`OptimSection`]. Every closed set of values is an enum ([`choices`]), refused at load time
//! when unknown. Loading ([`merge`]) checks keys (an unknown key names the nearest valid one) and
//! types (naming the key); [`Config::validate`] then checks ranges, naming the key and what was
//! expected.
pub mod choices;
pub mod datasets;
mod earlier_runs;
mod merge;
mod micro_batch_key;

pub use choices::{
    DatasetName, DistBackend, GlobalCaption, LossNames, LossTerm, MatmulPrecision, OptimizerKind,
    SamplerKind, Scheduler, SplitName, WarmupMethod,
};
pub use merge::{edit_distance, parse_override, valid_keys};
pub use micro_batch_key::MicroBatch;

use crate::device::DeviceSpec;
use crate::UsageError;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The whole run configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub run: RunSection,
    #[serde(flatten)]
    pub data: DataSection,
    #[serde(flatten)]
    pub model: ModelSection,
    #[serde(flatten)]
    pub loss: LossSection,
    #[serde(flatten)]
    pub optim: OptimSection,
}

/// Where a run goes and how it is driven.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSection {
    /// Experiment name, the suffix of the run folder.
    pub name: String,
    /// Runs go to `<output_dir>/<dataset_name>/<YYYYmmdd_HHMMSS>_<name>/`.
    pub output_dir: PathBuf,
    /// Explicit run folder (overrides the generated one).
    pub run_dir: Option<PathBuf>,
    pub device: DeviceSpec,
    pub seed: u64,
    /// Log the epoch's running losses every this many steps of an epoch.
    pub log_period: usize,
    /// Evaluate on the test split every this many epochs (and after the last).
    pub eval_period: usize,
    /// The c10d backend of a data-parallel run: `auto` is NCCL on CUDA, Gloo on the CPU.
    pub dist_backend: DistBackend,
    /// Seconds a data-parallel collective (and the rendezvous) may wait for the other ranks.
    pub dist_timeout: u64,
    /// Samples per pass of a training step; none = the whole (rank's) batch in one pass. With
    /// chunks, the step caches the batch's features and their gradients (the gradient-cache
    /// technique), so the gradient stays the whole batch's.
    pub micro_batch: Option<MicroBatch>,
    /// Float32 matmul precision on CUDA (docs/REPRODUCTION.md); the CPU always computes in fp32.
    pub matmul_precision: MatmulPrecision,
}

/// The dataset and how samples are fed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataSection {
    pub dataset_name: DatasetName,
    /// The split whose t2i R@1 chooses the best epoch (IRRA's key and default, `test`); the test
    /// metrics are reported at that epoch either way.
    pub val_dataset: SplitName,
    /// Folder that holds `<dataset_name>/`.
    pub root_dir: PathBuf,
    pub sampler: SamplerKind,
    /// Samples per identity in a batch of the `identity` sampler.
    pub num_instance: usize,
    pub batch_size: usize,
    pub test_batch_size: usize,
    /// Data-loading threads (0 = all cores).
    pub num_workers: usize,
    /// Image size as (height, width).
    pub img_size: (i64, i64),
    pub img_aug: bool,
    /// Tokens per caption (start and end tokens included).
    pub text_length: i64,
    /// TOY-PEDES identities per split (train, val, test), used when the set is generated.
    pub synth_ids: (usize, usize, usize),
    /// The seed TOY-PEDES is generated from (its people, images and captions); `seed` varies
    /// only the initialisation, the sample order and the augmentation.
    pub synth_seed: u64,
}

/// The network: pretrained weights, or the sizes of a model trained from scratch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelSection {
    pub pretrain_choice: String,
    /// OpenAI CLIP TorchScript archive (`ViT-B-16.pt`) or safetensors; none = from scratch.
    pub pretrained: Option<PathBuf>,
    pub stride_size: i64,
    /// From-scratch sizes (pretrained weights give their own).
    pub embed_dim: i64,
    pub vision_width: i64,
    pub vision_layers: i64,
    pub vision_heads: i64,
    pub vision_patch_size: i64,
    pub transformer_width: i64,
    pub transformer_layers: i64,
    pub transformer_heads: i64,
    pub vocab_size: i64,
    pub cmt_depth: i64,
    pub dca_heads: i64,
    pub dca_depth: i64,
    pub lambda_init: f64,
    /// Start the DCA blocks' residual branches at zero (`g = f` at initialisation); off keeps
    /// IRRA's initialisation, as the paper's runs.
    pub zero_init_residual: bool,
    pub dropout: f64,
}

/// Which loss terms are trained and their constants (METHOD.md section 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[allow(non_snake_case)]
pub struct LossSection {
    /// The terms trained (`mlm` among them needs `MLM`).
    pub loss_names: LossNames,
    /// The masking data path: captions are MLM-masked for the MLM branch (and, with
    /// `global_caption: masked`, for the global features too).
    pub MLM: bool,
    pub global_caption: GlobalCaption,
    pub temperature: f64,
    pub id_loss_weight: f64,
    pub mlm_loss_weight: f64,
    pub masked_token_rate: f64,
    pub masked_token_unchanged_rate: f64,
    pub imal_temperature: f64,
    pub imal_gamma: f64,
    pub imal_kl_weight: f64,
}

/// The optimiser and the learning-rate schedule (METHOD.md section 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimSection {
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub bias_lr_factor: f64,
    pub lr_factor: f64,
    pub weight_decay: f64,
    pub weight_decay_bias: f64,
    pub alpha: f64,
    pub beta: f64,
    /// Adam's epsilon; none = IRRA's for the optimiser (1e-3 for Adam, 1e-8 for AdamW).
    pub eps: Option<f64>,
    pub num_epoch: usize,
    pub milestones: Vec<usize>,
    pub gamma: f64,
    pub warmup_factor: f64,
    pub warmup_epochs: usize,
    pub warmup_method: WarmupMethod,
    pub lrscheduler: Scheduler,
    pub target_lr: f64,
    pub power: f64,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            name: "ccma".into(),
            output_dir: "logs".into(),
            run_dir: None,
            device: DeviceSpec::Auto,
            seed: 1,
            log_period: 100,
            eval_period: 1,
            dist_backend: DistBackend::Auto,
            dist_timeout: DEFAULT_DIST_TIMEOUT,
            micro_batch: None,
            matmul_precision: MatmulPrecision::High,
        }
    }
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            dataset_name: DatasetName::CuhkPedes,
            val_dataset: SplitName::Test,
            root_dir: "data".into(),
            sampler: SamplerKind::Random,
            num_instance: 4,
            batch_size: 64,
            test_batch_size: 512,
            num_workers: 0,
            img_size: (384, 128),
            img_aug: true,
            text_length: 77,
            synth_ids: (1000, 100, 200),
            synth_seed: 1,
        }
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            pretrain_choice: "ViT-B/16".into(),
            pretrained: None,
            stride_size: 16,
            embed_dim: 512,
            vision_width: 768,
            vision_layers: 12,
            vision_heads: 12,
            vision_patch_size: 16,
            transformer_width: 512,
            transformer_layers: 12,
            transformer_heads: 8,
            vocab_size: 49408,
            cmt_depth: 4,
            dca_heads: 8,
            dca_depth: 1,
            lambda_init: 0.8,
            zero_init_residual: false,
            dropout: 0.0,
        }
    }
}

impl Default for LossSection {
    fn default() -> Self {
        LossSection {
            loss_names: "imal".parse().expect("a valid loss set"),
            MLM: true,
            global_caption: GlobalCaption::Masked,
            temperature: 0.02,
            id_loss_weight: 1.0,
            mlm_loss_weight: 1.0,
            masked_token_rate: 0.8,
            masked_token_unchanged_rate: 0.1,
            imal_temperature: 0.5,
            imal_gamma: 0.05,
            imal_kl_weight: 0.005,
        }
    }
}

impl Default for OptimSection {
    fn default() -> Self {
        OptimSection {
            optimizer: OptimizerKind::Adam,
            lr: 1e-5,
            bias_lr_factor: 2.0,
            lr_factor: 5.0,
            weight_decay: 4e-5,
            weight_decay_bias: 0.0,
            alpha: 0.9,
            beta: 0.999,
            eps: None,
            num_epoch: 60,
            milestones: vec![20, 50],
            gamma: 0.1,
            warmup_factor: 0.1,
            warmup_epochs: 5,
            warmup_method: WarmupMethod::Linear,
            lrscheduler: Scheduler::Cosine,
            target_lr: 0.0,
            power: 0.9,
        }
    }
}

/// `bail!` with "invalid value for `key`: ..." as a usage error.
macro_rules! invalid {
    ($key:expr, $($arg:tt)*) => {
        bail!(UsageError(format!("invalid value for `{}`: {}", $key, format!($($arg)*))))
    };
}

/// Positive finite numbers among `values` (key, value); the first that is not is an error.
fn check_positive(values: &[(&str, f64)]) -> Result<()> {
    for &(key, v) in values {
        if !(v.is_finite() && v > 0.0) {
            invalid!(key, "{v} (expected a positive number)");
        }
    }
    Ok(())
}

/// Numbers among `values` (key, value, lowest, highest) within their inclusive range.
fn check_range(values: &[(&str, f64, f64, f64)]) -> Result<()> {
    for &(key, v, lo, hi) in values {
        if !(v.is_finite() && lo <= v && v <= hi) {
            invalid!(key, "{v} (expected a number from {lo} to {hi})");
        }
    }
    Ok(())
}

/// Tokens a caption may be given: well past CLIP's 77, far below what would exhaust memory.
pub const MAX_TEXT_LENGTH: usize = 1024;
/// The largest image side accepted.
pub const MAX_IMAGE_SIDE: i64 = 4096;
/// Widths, sizes and counts of the model: far above any CLIP, below what would exhaust memory.
const MAX_WIDTH: f64 = 16384.0;
const MAX_LAYERS: f64 = 256.0;
const MAX_VOCAB_SIZE: f64 = 10_000_000.0;
/// The smallest vocabulary CLIP's tokenizer can feed: its ids go up to 49407 (the data floor's
/// tokenizer checks that it agrees).
pub const MIN_VOCAB_SIZE: i64 = 49408;

/// `dist_timeout` when not set: 30 minutes, as PyTorch's process groups default to.
pub const DEFAULT_DIST_TIMEOUT: u64 = 1800;

impl RunSection {
    /// Whether the data-parallel keys keep their defaults (they act only when ranks communicate).
    pub fn dist_defaults(&self) -> bool {
        self.dist_backend == DistBackend::Auto && self.dist_timeout == DEFAULT_DIST_TIMEOUT
    }
}

impl RunSection {
    fn validate(&self) -> Result<()> {
        let n = &self.name;
        let one_component =
            !n.is_empty() && n != "." && n != ".." && !n.contains(['/', '\\', '\0']);
        if !one_component {
            invalid!(
                "name",
                "{n:?} (expected a plain name: one folder name, without `/`, `\\` or `..`)"
            );
        }
        check_range(&[
            ("log_period", self.log_period as f64, 1.0, 1e9),
            ("eval_period", self.eval_period as f64, 1.0, 1e9),
            ("dist_timeout", self.dist_timeout as f64, 1.0, 1e7),
        ])?;
        if self.micro_batch == Some(MicroBatch::Size(0)) {
            invalid!(
                "micro_batch",
                "0 (expected at least 1 sample per pass, auto, or no micro_batch for one pass)"
            );
        }
        Ok(())
    }
}

/// The largest `synth_seed`: 2^53 - 1, the largest whole number a double holds exactly.
pub const MAX_SYNTH_SEED: u64 = (1 << 53) - 1;

impl DataSection {
    fn validate(&self) -> Result<()> {
        let (h, w) = self.img_size;
        let side = MAX_IMAGE_SIDE as f64;
        check_range(&[
            ("batch_size", self.batch_size as f64, 2.0, 65536.0),
            ("test_batch_size", self.test_batch_size as f64, 1.0, 65536.0),
            ("num_workers", self.num_workers as f64, 0.0, 1024.0),
            (
                "text_length",
                self.text_length as f64,
                2.0,
                MAX_TEXT_LENGTH as f64,
            ),
            ("img_size", h as f64, 1.0, side),
            ("img_size", w as f64, 1.0, side),
            ("synth_ids", self.synth_ids.0 as f64, 1.0, 1e6),
            ("synth_ids", self.synth_ids.1 as f64, 0.0, 1e6),
            ("synth_ids", self.synth_ids.2 as f64, 1.0, 1e6),
        ])?;
        if self.synth_seed > MAX_SYNTH_SEED {
            invalid!(
                "synth_seed",
                "{} (expected a whole number from 0 to {MAX_SYNTH_SEED}: the seed is recorded in JSON, whose readers may hold numbers as doubles)",
                self.synth_seed
            );
        }
        let name = self.dataset_name;
        if self.val_dataset == SplitName::Val && !name.record().has_val {
            invalid!(
                "val_dataset",
                "val, but {name} has no validation split (expected test for {name})"
            );
        }
        if self.sampler == SamplerKind::Identity
            && (self.num_instance == 0 || !self.batch_size.is_multiple_of(self.num_instance))
        {
            invalid!(
                "num_instance",
                "{} (expected a positive divisor of `batch_size` {})",
                self.num_instance,
                self.batch_size
            );
        }
        Ok(())
    }
}

impl ModelSection {
    fn validate(&self) -> Result<()> {
        self.validate_sizes()?;
        let tokens = MIN_VOCAB_SIZE;
        if self.vocab_size < tokens {
            invalid!(
                "vocab_size",
                "{} (expected at least {tokens}: CLIP's tokenizer gives ids up to {})",
                self.vocab_size,
                tokens - 1
            );
        }
        if self.dropout != 0.0 {
            invalid!(
                "dropout",
                "{} (dropout is not implemented; 0, the paper's setting, is the only value)",
                self.dropout
            );
        }
        Ok(())
    }

    /// The ranges of the model's sizes (widths, layers, heads dividing their widths, patch and
    /// stride, vocabulary, λ_init), naming the key: the one rule for sizes from a YAML file and
    /// for sizes read off a weights file or a checkpoint's metadata (`ModelConfig::validate`).
    pub fn validate_sizes(&self) -> Result<()> {
        check_range(&[
            ("embed_dim", self.embed_dim as f64, 1.0, MAX_WIDTH),
            ("vision_width", self.vision_width as f64, 1.0, MAX_WIDTH),
            ("vision_layers", self.vision_layers as f64, 1.0, MAX_LAYERS),
            ("vision_heads", self.vision_heads as f64, 1.0, MAX_WIDTH),
            (
                "vision_patch_size",
                self.vision_patch_size as f64,
                1.0,
                MAX_IMAGE_SIDE as f64,
            ),
            (
                "stride_size",
                self.stride_size as f64,
                1.0,
                MAX_IMAGE_SIDE as f64,
            ),
            (
                "transformer_width",
                self.transformer_width as f64,
                1.0,
                MAX_WIDTH,
            ),
            (
                "transformer_layers",
                self.transformer_layers as f64,
                1.0,
                MAX_LAYERS,
            ),
            (
                "transformer_heads",
                self.transformer_heads as f64,
                1.0,
                MAX_WIDTH,
            ),
            ("cmt_depth", self.cmt_depth as f64, 1.0, MAX_LAYERS),
            ("dca_depth", self.dca_depth as f64, 1.0, MAX_LAYERS),
        ])?;
        check_range(&[("vocab_size", self.vocab_size as f64, 1.0, MAX_VOCAB_SIZE)])?;
        if self.dca_heads <= 0 || self.dca_heads % 2 != 0 {
            invalid!(
                "dca_heads",
                "{} (expected a positive even number: heads are paired)",
                self.dca_heads
            );
        }
        let divides = [
            ("dca_heads", self.dca_heads, "embed_dim", self.embed_dim),
            (
                "transformer_heads",
                self.transformer_heads,
                "transformer_width",
                self.transformer_width,
            ),
            (
                "vision_heads",
                self.vision_heads,
                "vision_width",
                self.vision_width,
            ),
        ];
        for (key, heads, of, width) in divides {
            if width % heads != 0 {
                invalid!(key, "{heads} does not divide `{of}` {width}");
            }
        }
        check_range(&[("lambda_init", self.lambda_init, 0.0, 1.0)])
    }
}

impl LossSection {
    fn validate(&self) -> Result<()> {
        check_positive(&[
            ("temperature", self.temperature),
            ("imal_temperature", self.imal_temperature),
        ])?;
        check_range(&[
            ("id_loss_weight", self.id_loss_weight, 0.0, 1e6),
            ("mlm_loss_weight", self.mlm_loss_weight, 0.0, 1e6),
            ("imal_gamma", self.imal_gamma, 0.0, 1e6),
            ("imal_kl_weight", self.imal_kl_weight, 0.0, 1e6),
            ("masked_token_rate", self.masked_token_rate, 0.0, 1.0),
            (
                "masked_token_unchanged_rate",
                self.masked_token_unchanged_rate,
                0.0,
                1.0 - self.masked_token_rate,
            ),
        ])?;
        if !self.MLM && self.loss_names.terms().contains(&LossTerm::Mlm) {
            invalid!(
                "MLM",
                "false, but `loss_names` {:?} has the mlm term, which needs masked captions (set `MLM: true`, or leave mlm out of `loss_names`; imal includes it)",
                self.loss_names.to_string()
            );
        }
        Ok(())
    }

    /// Whether the global text features see the masked captions.
    pub fn masked_global_captions(&self) -> bool {
        self.MLM && self.global_caption == GlobalCaption::Masked
    }
}

impl OptimSection {
    /// The epsilon in effect: `eps`, else IRRA's for the optimiser.
    pub fn eps(&self) -> f64 {
        self.eps.unwrap_or(match self.optimizer {
            OptimizerKind::Adam => 1e-3,
            OptimizerKind::AdamW => 1e-8,
        })
    }

    fn validate(&self) -> Result<()> {
        check_positive(&[
            ("lr", self.lr),
            ("lr_factor", self.lr_factor),
            ("bias_lr_factor", self.bias_lr_factor),
            ("gamma", self.gamma),
            ("power", self.power),
            ("eps", self.eps()),
        ])?;
        check_range(&[
            ("num_epoch", self.num_epoch as f64, 1.0, 1e6),
            ("weight_decay", self.weight_decay, 0.0, 1e6),
            ("weight_decay_bias", self.weight_decay_bias, 0.0, 1e6),
            ("warmup_epochs", self.warmup_epochs as f64, 0.0, 1e6),
            ("target_lr", self.target_lr, 0.0, 1e6),
        ])?;
        for (key, v) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !(0.0..1.0).contains(&v) {
                invalid!(key, "{v} (expected 0 <= value < 1)");
            }
        }
        if !(self.warmup_factor > 0.0 && self.warmup_factor <= 1.0) {
            invalid!(
                "warmup_factor",
                "{} (expected 0 < value <= 1)",
                self.warmup_factor
            );
        }
        if self.milestones.windows(2).any(|w| w[0] >= w[1]) {
            invalid!(
                "milestones",
                "{:?} (expected increasing epochs)",
                self.milestones
            );
        }
        Ok(())
    }
}

impl Config {
    /// The defaults with the YAML file `path` over them, every key and type checked; not yet
    /// validated (overrides may still change it). Errors are usage errors naming the file.
    pub fn load(path: &Path) -> Result<Config> {
        merge::load(path).map_err(|e| UsageError(format!("{e:#}")).into())
    }

    /// This config with overrides (`key`, value as YAML) applied, every key and type checked; not
    /// yet validated. Errors are usage errors naming the key.
    pub fn with_overrides(&self, sets: &[(String, String)]) -> Result<Config> {
        merge::apply(self, sets).map_err(|e| UsageError(format!("{e:#}")).into())
    }

    /// A config file over the defaults, validated.
    pub fn from_file(path: &Path) -> Result<Config> {
        let cfg = Config::load(path)?;
        cfg.validate()
            .map_err(|e| UsageError(format!("config file {}: {e:#}", path.display())))?;
        Ok(cfg)
    }

    /// Checks every value that has a constrained range; the error names the key.
    pub fn validate(&self) -> Result<()> {
        self.run.validate()?;
        self.data.validate()?;
        self.model.validate()?;
        self.loss.validate()?;
        self.optim.validate()?;
        let (h, w) = self.data.img_size;
        let patch = self.model.vision_patch_size;
        if h < patch || w < patch {
            invalid!(
                "img_size",
                "[{h}, {w}] is smaller than the patch size {patch}"
            );
        }
        Ok(())
    }

    /// The loss terms in effect: `loss_names` expanded (`MLM` only switches the masking data
    /// path, as in IRRA).
    pub fn losses(&self) -> Vec<LossTerm> {
        self.loss.loss_names.terms().to_vec()
    }

    /// This config with its relative paths (`root_dir`, `output_dir`, `run_dir`, `pretrained`)
    /// made absolute against `cwd`, so a run's `configs.yaml` means the same from any folder.
    pub fn with_absolute_paths(mut self, cwd: &Path) -> Config {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = cwd.join(&*p);
            }
        };
        abs(&mut self.data.root_dir);
        abs(&mut self.run.output_dir);
        self.run.run_dir.as_mut().map(abs);
        self.model.pretrained.as_mut().map(abs);
        self
    }

    /// Writes the config as YAML atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_yaml::to_string(self)?;
        crate::io::write_atomic(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, yaml).unwrap();
        format!("{:#}", Config::from_file(&p).unwrap_err())
    }

    fn set(pairs: &[(&str, &str)]) -> Result<Config> {
        let sets: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::default().with_overrides(&sets)
    }

    #[test]
    fn defaults_validate_and_round_trip() {
        let cfg = Config::default();
        cfg.validate().unwrap();
        // IRRA's epsilons: 1e-3 for Adam, 1e-8 for AdamW, unless `eps` is set.
        assert_eq!(cfg.optim.eps(), 1e-3);
        let adamw = set(&[("optimizer", "AdamW")]).unwrap();
        assert_eq!(adamw.optim.eps(), 1e-8);
        assert_eq!(
            set(&[("optimizer", "AdamW"), ("eps", "1e-6")])
                .unwrap()
                .optim
                .eps(),
            1e-6
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        cfg.save(&p).unwrap();
        assert_eq!(Config::from_file(&p).unwrap(), cfg);
        let keys = valid_keys();
        assert_eq!(keys.first().map(String::as_str), Some("name"));
        assert!(keys.iter().any(|k| k == "MLM") && keys.iter().any(|k| k == "power"));
    }

    #[test]
    fn unknown_key_names_nearest() {
        assert!(
            err("batch_sise: 3").contains("unknown key `batch_sise` (did you mean `batch_size`?)")
        );
        assert!(err("mlm: true").contains("did you mean `MLM`"));
    }

    #[test]
    fn wrong_type_names_key_and_value() {
        let e = err("batch_size: many");
        assert!(e.contains("wrong type for `batch_size`: got many"), "{e}");
        assert!(e.contains("expected usize"), "{e}");
        let e = err("img_aug: 3");
        assert!(
            e.contains("`img_aug`") && e.contains("expected a boolean"),
            "{e}"
        );
    }

    #[test]
    fn invalid_values_name_key_and_list_the_valid_ones() {
        assert!(err("dca_heads: 3").contains("`dca_heads`: 3 (expected a positive even number"));
        let e = err("dataset_name: MARKET");
        assert!(e.contains("invalid value for `dataset_name`: \"MARKET\" (expected one of CUHK-PEDES, ICFG-PEDES, RSTPReid, TOY-PEDES)"), "{e}");
        assert!(err("loss_names: sdm+foo").contains("unknown loss \"foo\""));
        assert!(err("device: gpu7").contains("invalid value for `device`: \"gpu7\""));
        assert!(err("sampler: pk")
            .contains("invalid value for `sampler`: \"pk\" (expected one of random, identity)"));
    }

    #[test]
    fn synth_seed_defaults_to_1_and_is_checked() {
        assert_eq!(Config::default().data.synth_seed, 1);
        assert_eq!(set(&[("synth_seed", "7")]).unwrap().data.synth_seed, 7);
        let e = err("synth_seed: -1");
        assert!(
            e.contains("`synth_seed`: integer `-1`, expected u64"),
            "{e}"
        );
        let e = err(&format!("synth_seed: {}", MAX_SYNTH_SEED + 1));
        assert!(
            e.contains("invalid value for `synth_seed`: 9007199254740992 (expected a whole number from 0 to 9007199254740991"),
            "{e}"
        );
        let cfg = set(&[("synth_seed", &MAX_SYNTH_SEED.to_string())]).unwrap();
        cfg.validate().unwrap();
    }

    #[test]
    fn val_dataset_is_test_or_val_and_icfg_has_no_val() {
        assert_eq!(Config::default().data.val_dataset, SplitName::Test);
        let e = err("val_dataset: dev");
        assert!(
            e.contains("invalid value for `val_dataset`: \"dev\" (expected one of test, val)"),
            "{e}"
        );
        let e = err("dataset_name: ICFG-PEDES\nval_dataset: val");
        assert!(
            e.contains(
                "invalid value for `val_dataset`: val, but ICFG-PEDES has no validation split"
            ),
            "{e}"
        );
        let cfg = set(&[("dataset_name", "RSTPReid"), ("val_dataset", "val")]).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.data.val_dataset, SplitName::Val);
    }

    #[test]
    fn overrides_apply_and_are_checked() {
        let cfg = set(&[
            ("batch_size", "8"),
            ("img_size", "[128, 48]"),
            ("sampler", "identity"),
        ])
        .unwrap();
        assert_eq!(cfg.data.batch_size, 8);
        assert_eq!(cfg.data.img_size, (128, 48));
        assert_eq!(cfg.data.sampler, SamplerKind::Identity);
        let e = format!("{:#}", set(&[("lrr", "1")]).unwrap_err());
        assert!(e.contains("unknown key `lrr` (did you mean `lr`?)"), "{e}");
    }

    #[test]
    fn mlm_switches_the_data_path_and_the_loss_names_the_terms() {
        use LossTerm::*;
        let cfg = set(&[("loss_names", "sdm+id")]).unwrap();
        assert_eq!(cfg.losses(), vec![Sdm, Id]);
        assert!(
            cfg.loss.masked_global_captions(),
            "IRRA's sdm+id ablation still masks captions"
        );
        let cfg = set(&[("loss_names", "sdm+id"), ("global_caption", "clean")]).unwrap();
        assert!(!cfg.loss.masked_global_captions());
        let cfg = set(&[("loss_names", "imal"), ("MLM", "false")]).unwrap();
        let e = format!("{:#}", cfg.validate().unwrap_err());
        assert!(
            e.contains(
                "invalid value for `MLM`: false, but `loss_names` \"imal\" has the mlm term"
            ),
            "{e}"
        );
    }
}
