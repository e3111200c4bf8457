//! The one run configuration: every key of the method with IRRA's names and the paper's defaults.
//!
//! A config is built in three layers: the defaults below, a YAML file (`--config`), then
//! command-line overrides (`--set key=value` and the named flags). Keys are checked before
//! deserialisation so an unknown key is reported with the nearest valid one, and values are
//! validated afterwards so a bad value is reported with the key and what was expected.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Datasets `ccma` knows how to read (METHOD.md section 1) plus the generated demo set.
pub const DATASETS: [&str; 4] = ["CUHK-PEDES", "ICFG-PEDES", "RSTPReid", "SYNTH-PEDES"];
/// Loss terms selectable in `loss_names` (`imal` stands for the whole CCMA set).
pub const LOSS_NAMES: [&str; 6] = ["sdm", "itc", "cmpm", "id", "mlm", "imal"];
pub const SCHEDULERS: [&str; 5] = ["cosine", "step", "exp", "poly", "linear"];
pub const SAMPLERS: [&str; 2] = ["random", "identity"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[allow(non_snake_case)]
pub struct Config {
    // ---- run ----
    /// Experiment name, the suffix of the run folder.
    pub name: String,
    /// Runs go to `<output_dir>/<dataset_name>/<YYYYmmdd_HHMMSS>_<name>/`.
    pub output_dir: PathBuf,
    /// Explicit run folder (overrides the generated one).
    pub run_dir: Option<PathBuf>,
    /// `auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    pub seed: u64,
    pub log_period: usize,
    pub eval_period: usize,

    // ---- data ----
    pub dataset_name: String,
    pub root_dir: PathBuf,
    pub sampler: String,
    pub num_instance: usize,
    pub batch_size: usize,
    pub test_batch_size: usize,
    /// Data-loading threads (0 = all cores).
    pub num_workers: usize,
    /// Image size as (height, width).
    pub img_size: (i64, i64),
    pub img_aug: bool,
    pub text_length: i64,
    pub vocab_size: i64,
    /// SYNTH-PEDES identities per split (train, val, test), used when the set is generated.
    pub synth_ids: (usize, usize, usize),

    // ---- model ----
    /// OpenAI CLIP TorchScript archive (`ViT-B-16.pt`) or safetensors; empty = train from scratch.
    pub pretrain_choice: String,
    pub pretrained: Option<PathBuf>,
    pub stride_size: i64,
    /// From-scratch sizes (ignored when pretrained weights give them).
    pub embed_dim: i64,
    pub vision_width: i64,
    pub vision_layers: i64,
    pub vision_heads: i64,
    pub vision_patch_size: i64,
    pub transformer_width: i64,
    pub transformer_layers: i64,
    pub transformer_heads: i64,
    pub cmt_depth: i64,
    pub dca_heads: i64,
    pub dca_depth: i64,
    pub lambda_init: f64,
    pub dropout: f64,

    // ---- losses ----
    /// `+`-separated loss terms; `imal` = itc+sdm+cmpm+id+mlm+imal.
    pub loss_names: String,
    pub MLM: bool,
    pub temperature: f64,
    pub id_loss_weight: f64,
    pub mlm_loss_weight: f64,
    pub masked_token_rate: f64,
    pub masked_token_unchanged_rate: f64,
    pub imal_temperature: f64,
    pub imal_gamma: f64,
    pub imal_kl_weight: f64,

    // ---- optimisation ----
    pub optimizer: String,
    pub lr: f64,
    pub bias_lr_factor: f64,
    pub lr_factor: f64,
    pub weight_decay: f64,
    pub weight_decay_bias: f64,
    pub alpha: f64,
    pub beta: f64,
    pub eps: f64,
    pub num_epoch: usize,
    pub milestones: Vec<usize>,
    pub gamma: f64,
    pub warmup_factor: f64,
    pub warmup_epochs: usize,
    pub warmup_method: String,
    pub lrscheduler: String,
    pub target_lr: f64,
    pub power: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "ccma".into(),
            output_dir: "logs".into(),
            run_dir: None,
            device: "auto".into(),
            seed: 1,
            log_period: 100,
            eval_period: 1,
            dataset_name: "CUHK-PEDES".into(),
            root_dir: "data".into(),
            sampler: "random".into(),
            num_instance: 4,
            batch_size: 64,
            test_batch_size: 512,
            num_workers: 0,
            img_size: (384, 128),
            img_aug: true,
            text_length: 77,
            vocab_size: 49408,
            synth_ids: (1000, 100, 200),
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
            cmt_depth: 4,
            dca_heads: 8,
            dca_depth: 1,
            lambda_init: 0.8,
            dropout: 0.0,
            loss_names: "imal".into(),
            MLM: true,
            temperature: 0.02,
            id_loss_weight: 1.0,
            mlm_loss_weight: 1.0,
            masked_token_rate: 0.8,
            masked_token_unchanged_rate: 0.1,
            imal_temperature: 0.5,
            imal_gamma: 0.05,
            imal_kl_weight: 0.005,
            optimizer: "Adam".into(),
            lr: 1e-5,
            bias_lr_factor: 2.0,
            lr_factor: 5.0,
            weight_decay: 4e-5,
            weight_decay_bias: 0.0,
            alpha: 0.9,
            beta: 0.999,
            eps: 1e-3,
            num_epoch: 60,
            milestones: vec![20, 50],
            gamma: 0.1,
            warmup_factor: 0.1,
            warmup_epochs: 5,
            warmup_method: "linear".into(),
            lrscheduler: "cosine".into(),
            target_lr: 0.0,
            power: 0.9,
        }
    }
}

/// The individual loss terms, with `imal` expanded to the CCMA set.
pub fn expand_loss_names(loss_names: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in loss_names.split('+').map(|s| s.trim().to_lowercase()) {
        let names: Vec<&str> = if name == "imal" {
            vec!["itc", "sdm", "cmpm", "id", "mlm", "imal"]
        } else {
            vec![name.as_str()]
        };
        for n in names {
            if !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        }
    }
    out
}

impl Config {
    /// Loads a YAML file over the defaults and validates it.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let map =
            parse_mapping(&text).with_context(|| format!("config file {}", path.display()))?;
        let cfg = build(map, &[]).with_context(|| format!("config file {}", path.display()))?;
        Ok(cfg)
    }

    /// Applies overrides (`key=value`, value parsed as YAML) to this config and validates it.
    pub fn with_overrides(&self, overrides: &[(String, String)]) -> Result<Config> {
        let map = match serde_yaml::to_value(self)? {
            serde_yaml::Value::Mapping(m) => m,
            _ => unreachable!("Config serialises to a mapping"),
        };
        build(map, overrides)
    }

    /// The loss terms in effect (`imal` expanded; `mlm` added when `MLM` is on).
    pub fn losses(&self) -> Vec<String> {
        let mut l = expand_loss_names(&self.loss_names);
        if self.MLM && !l.iter().any(|n| n == "mlm") {
            l.push("mlm".into());
        }
        if !self.MLM {
            l.retain(|n| n != "mlm");
        }
        l
    }

    pub fn has_loss(&self, name: &str) -> bool {
        self.losses().iter().any(|n| n == name)
    }

    /// Writes the config as YAML atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_yaml::to_string(self)?;
        crate::util::write_atomic(path, text.as_bytes())
    }

    /// Checks every value that has a constrained range; the error names the key.
    pub fn validate(&self) -> Result<()> {
        fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<()> {
            if !allowed.contains(&value) {
                bail!(
                    "invalid value for `{key}`: {value:?} (expected one of {})",
                    allowed.join(", ")
                );
            }
            Ok(())
        }
        one_of("dataset_name", &self.dataset_name, &DATASETS)?;
        one_of("sampler", &self.sampler, &SAMPLERS)?;
        one_of("lrscheduler", &self.lrscheduler, &SCHEDULERS)?;
        one_of("optimizer", &self.optimizer, &["Adam", "AdamW"])?;
        one_of(
            "warmup_method",
            &self.warmup_method,
            &["linear", "constant"],
        )?;
        for name in expand_loss_names(&self.loss_names) {
            if !LOSS_NAMES.contains(&name.as_str()) {
                bail!(
                    "invalid value for `loss_names`: unknown loss {name:?} in {:?} (expected `+`-separated names from {})",
                    self.loss_names,
                    LOSS_NAMES.join(", ")
                );
            }
        }
        let positive = [
            ("batch_size", self.batch_size as f64),
            ("test_batch_size", self.test_batch_size as f64),
            ("num_epoch", self.num_epoch as f64),
            ("eval_period", self.eval_period as f64),
            ("text_length", self.text_length as f64),
            ("temperature", self.temperature),
            ("imal_temperature", self.imal_temperature),
            ("embed_dim", self.embed_dim as f64),
            ("vision_width", self.vision_width as f64),
            ("vision_layers", self.vision_layers as f64),
            ("vision_heads", self.vision_heads as f64),
            ("vision_patch_size", self.vision_patch_size as f64),
            ("stride_size", self.stride_size as f64),
            ("transformer_width", self.transformer_width as f64),
            ("transformer_layers", self.transformer_layers as f64),
            ("transformer_heads", self.transformer_heads as f64),
            ("lr", self.lr),
        ];
        for (key, v) in positive {
            if v.is_nan() || v <= 0.0 {
                bail!("invalid value for `{key}`: {v} (expected a positive number)");
            }
        }
        if self.dca_heads <= 0 || self.dca_heads % 2 != 0 {
            bail!("invalid value for `dca_heads`: {} (expected a positive even number: heads are paired)", self.dca_heads);
        }
        if self.embed_dim % self.dca_heads != 0 {
            bail!(
                "invalid value for `dca_heads`: {} does not divide `embed_dim` {}",
                self.dca_heads,
                self.embed_dim
            );
        }
        if self.transformer_width % self.transformer_heads != 0 {
            bail!(
                "invalid value for `transformer_heads`: {} does not divide `transformer_width` {}",
                self.transformer_heads,
                self.transformer_width
            );
        }
        if self.vision_width % self.vision_heads != 0 {
            bail!(
                "invalid value for `vision_heads`: {} does not divide `vision_width` {}",
                self.vision_heads,
                self.vision_width
            );
        }
        let (h, w) = self.img_size;
        if h < self.vision_patch_size || w < self.vision_patch_size {
            bail!(
                "invalid value for `img_size`: [{h}, {w}] is smaller than the patch size {}",
                self.vision_patch_size
            );
        }
        if !(0.0..=1.0).contains(&self.lambda_init) {
            bail!(
                "invalid value for `lambda_init`: {} (expected 0..1)",
                self.lambda_init
            );
        }
        if self.sampler == "identity"
            && (self.num_instance == 0 || self.batch_size % self.num_instance != 0)
        {
            bail!(
                "invalid value for `num_instance`: {} (expected a positive divisor of `batch_size` {})",
                self.num_instance,
                self.batch_size
            );
        }
        if !(self.device == "auto"
            || self.device == "cpu"
            || self.device == "cuda"
            || parse_cuda_index(&self.device).is_some())
        {
            bail!(
                "invalid value for `device`: {:?} (expected auto, cpu, cuda or cuda:N)",
                self.device
            );
        }
        Ok(())
    }

    /// The libtorch device this config asks for.
    pub fn tch_device(&self) -> Result<tch::Device> {
        crate::device::parse(&self.device)
    }
}

fn parse_cuda_index(s: &str) -> Option<usize> {
    s.strip_prefix("cuda:")?.parse().ok()
}

fn parse_mapping(text: &str) -> Result<serde_yaml::Mapping> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("invalid YAML: {e}"))?;
    match value {
        serde_yaml::Value::Mapping(m) => Ok(m),
        serde_yaml::Value::Null => Ok(serde_yaml::Mapping::new()),
        _ => bail!("expected a mapping of `key: value` lines at the top level"),
    }
}

/// All valid keys, in declaration order.
pub fn valid_keys() -> Vec<String> {
    match serde_yaml::to_value(Config::default()) {
        Ok(serde_yaml::Value::Mapping(m)) => m
            .keys()
            .filter_map(|k| k.as_str().map(String::from))
            .collect(),
        _ => unreachable!("Config serialises to a mapping"),
    }
}

fn check_key(key: &str, valid: &[String]) -> Result<()> {
    if valid.iter().any(|k| k == key) {
        return Ok(());
    }
    let nearest = valid
        .iter()
        .min_by_key(|k| edit_distance(&key.to_lowercase(), &k.to_lowercase()))
        .expect("there are valid keys");
    bail!("unknown key `{key}` (did you mean `{nearest}`?)")
}

/// Levenshtein distance between two strings (by characters).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Defaults + `map` + `overrides`, key-checked, deserialised one key at a time for precise
/// type errors, then validated.
fn build(map: serde_yaml::Mapping, overrides: &[(String, String)]) -> Result<Config> {
    let valid = valid_keys();
    let mut merged = match serde_yaml::to_value(Config::default())? {
        serde_yaml::Value::Mapping(m) => m,
        _ => unreachable!(),
    };
    for (k, v) in map {
        let key = k
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| format!("{k:?}"));
        check_key(&key, &valid)?;
        merged.insert(serde_yaml::Value::String(key), v);
    }
    for (key, raw) in overrides {
        check_key(key, &valid).context("in --set")?;
        let value: serde_yaml::Value = if raw.is_empty() {
            serde_yaml::Value::Null
        } else {
            serde_yaml::from_str(raw).unwrap_or_else(|_| serde_yaml::Value::String(raw.clone()))
        };
        merged.insert(serde_yaml::Value::String(key.clone()), value);
    }
    // Type-check every key against the default's type so the error names the key.
    let defaults = match serde_yaml::to_value(Config::default())? {
        serde_yaml::Value::Mapping(m) => m,
        _ => unreachable!(),
    };
    for (k, v) in &merged {
        let mut probe = defaults.clone();
        probe.insert(k.clone(), v.clone());
        if let Err(e) = serde_yaml::from_value::<Config>(serde_yaml::Value::Mapping(probe)) {
            let key = k.as_str().unwrap_or("?");
            let msg = e.to_string();
            let got = serde_yaml::to_string(v).unwrap_or_default();
            bail!(
                "wrong type for `{key}`: got {} ({})",
                got.trim(),
                msg.trim_start_matches(&format!("{key}: "))
            );
        }
    }
    let cfg: Config = serde_yaml::from_value(serde_yaml::Value::Mapping(merged))?;
    cfg.validate()?;
    Ok(cfg)
}

/// Parses a `key=value` override from the command line.
pub fn parse_override(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        let map = parse_mapping(yaml).unwrap();
        format!("{:#}", build(map, &[]).unwrap_err())
    }

    #[test]
    fn defaults_validate_and_round_trip() {
        let cfg = Config::default();
        cfg.validate().unwrap();
        let text = serde_yaml::to_string(&cfg).unwrap();
        let back = build(parse_mapping(&text).unwrap(), &[]).unwrap();
        assert_eq!(cfg, back);
    }

    #[test]
    fn unknown_key_names_nearest() {
        assert_eq!(
            err("batch_sise: 3"),
            "unknown key `batch_sise` (did you mean `batch_size`?)"
        );
        assert!(err("mlm: true").contains("did you mean `MLM`"));
    }

    #[test]
    fn wrong_type_names_key_and_value() {
        let e = err("batch_size: many");
        assert!(
            e.starts_with("wrong type for `batch_size`: got many"),
            "{e}"
        );
        assert!(e.contains("expected usize"), "{e}");
        let e = err("img_aug: 3");
        assert!(
            e.contains("`img_aug`") && e.contains("expected a boolean"),
            "{e}"
        );
    }

    #[test]
    fn invalid_values_name_key() {
        assert!(err("dca_heads: 3").contains("`dca_heads`: 3 (expected a positive even number"));
        assert!(err("dataset_name: MARKET").contains("`dataset_name`: \"MARKET\""));
        assert!(err("loss_names: sdm+foo").contains("unknown loss \"foo\""));
        assert!(err("device: gpu7").contains("`device`"));
    }

    #[test]
    fn overrides_apply_and_are_checked() {
        let cfg = Config::default()
            .with_overrides(&[
                ("batch_size".into(), "8".into()),
                ("img_size".into(), "[128, 48]".into()),
            ])
            .unwrap();
        assert_eq!(cfg.batch_size, 8);
        assert_eq!(cfg.img_size, (128, 48));
        let e = format!(
            "{:#}",
            Config::default()
                .with_overrides(&[("lrr".into(), "1".into())])
                .unwrap_err()
        );
        assert!(e.contains("unknown key `lrr` (did you mean `lr`?)"), "{e}");
    }

    #[test]
    fn imal_expands_to_ccma_set() {
        assert_eq!(
            expand_loss_names("imal"),
            vec!["itc", "sdm", "cmpm", "id", "mlm", "imal"]
        );
        assert_eq!(expand_loss_names("sdm+id"), vec!["sdm", "id"]);
    }
}
