//! Flag groups that several commands share, and turning flags into typed values once.
use super::flags::{DatasetScope, DeviceScope, Flags, Given};
use crate::config::{Config, SplitName};
use crate::device::DeviceSpec;
use crate::factory::{Inference, WeightsSource};
use crate::inference::{model_and_options, TestSetup};
use crate::io::run_files;
use crate::retrieval::encode::EncodeOptions;
use crate::UsageError;
use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// `--device` ([`super::flags::Scope::Device`]).
#[derive(Args, Debug, Clone, Default)]
pub struct DeviceArg {
    #[command(flatten)]
    pub flags: Flags<DeviceScope>,
}

impl DeviceArg {
    /// The device asked for (`auto` when none was).
    pub fn spec(&self) -> Result<DeviceSpec> {
        Ok(Config::default()
            .with_overrides(&self.flags.pairs())?
            .run
            .device)
    }

    pub fn resolve(&self) -> Result<tch::Device> {
        self.spec()?.resolve()
    }
}

/// The run configuration of a command that reads a dataset: a YAML file, `--set` overrides and
/// the dataset flags ([`super::flags::Scope::Dataset`]).
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// YAML config file (keys as in configs/*.yaml); defaults are the paper's CUHK-PEDES settings.
    /// `ccma test` also takes it as IRRA's `--config_file`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub dataset: Flags<DatasetScope>,
    /// Set any config key, e.g. `--set lr=1e-4 --set img_size=[256,128]` (values are YAML).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = crate::config::parse_override)]
    pub set: Vec<(String, String)>,
}

impl ConfigArgs {
    /// Refuses a `--set` of a (valid) key that `command` does not use, rather than accepting it
    /// with no effect; `keys` are the ones it uses.
    pub fn check_sets_act(&self, command: &str, keys: &[&str]) -> Result<()> {
        let valid = crate::config::valid_keys();
        for (k, _) in &self.set {
            if valid.contains(k) && !keys.contains(&k.as_str()) {
                bail!(UsageError(format!(
                    "--set {k}: `ccma {command}` does not use `{k}` (it uses {})",
                    keys.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The defaults, then `--config` (or `fallback` when it is not given), then `--set`, then
    /// the flags that set keys: `--dataset`, `--root-dir` and the command's own (`more`); each key
    /// is given once ([`super::given_once`]). Validated; a value out of range is blamed on where
    /// it came from: the config file, or the first `--set` or flag after which the config is no
    /// longer valid.
    pub fn resolve(&self, fallback: Option<&Path>, more: &[&[Given]]) -> Result<Config> {
        let file = self.config.as_deref().or(fallback);
        let base = match file {
            Some(f) => Config::load(f)?,
            None => Config::default(),
        };
        let given: Vec<(String, (String, String))> = self
            .set
            .iter()
            .map(|(k, v)| (format!("--set {k}={v}"), (k.clone(), v.clone())))
            .chain(
                [&self.dataset.given[..]]
                    .iter()
                    .chain(more)
                    .flat_map(|g| g.iter())
                    .map(|g| (format!("--{} {}", g.flag.long, g.yaml), g.pair())),
            )
            .collect();
        let mut steps = vec![base];
        for (from, pair) in &given {
            let last = steps.last().expect("the base config");
            let next = last
                .with_overrides(std::slice::from_ref(pair))
                .map_err(|e| UsageError(format!("{from}: {e:#}")))?;
            steps.push(next);
        }
        let cfg = steps.last().expect("the base config");
        let Err(e) = cfg.validate() else {
            return Ok(cfg.clone());
        };
        // The config is invalid from the step after the last valid one on.
        let from = match (steps.iter().rposition(|c| c.validate().is_ok()), file) {
            (Some(valid), _) => given[valid].0.clone(),
            (None, Some(f)) => format!("config file {}", f.display()),
            (None, None) => return Err(e),
        };
        Err(UsageError(format!("{from}: {e:#}")).into())
    }
}

/// `--checkpoint` or `--pretrained`: the weights of `embed` and `search`.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct WeightsArgs {
    /// A ccma checkpoint, or an IRRA or CCMA best.pth; a run's configs.yaml beside it supplies
    /// data settings.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Pretrained CLIP weights: OpenAI's ViT-B-16.pt, a Hugging Face CLIP folder (or its
    /// model.safetensors).
    #[arg(long, value_name = "FILE")]
    pub pretrained: Option<PathBuf>,
}

impl WeightsArgs {
    /// The files (or folder) these weights are read from: the checkpoint and the `configs.yaml`
    /// beside it, or the pretrained weights (a file with the `config.json` beside it, or a folder).
    pub fn inputs(&self) -> Vec<PathBuf> {
        match (&self.checkpoint, &self.pretrained) {
            (Some(c), _) => vec![c.clone(), c.with_file_name(run_files::CONFIG)],
            (None, Some(p)) if p.is_file() => vec![p.clone(), p.with_file_name("config.json")],
            (None, Some(p)) => vec![p.clone()],
            (None, None) => Vec::new(),
        }
    }

    /// The model and how to feed it: the input size `img_size` when given; else the data
    /// settings of the `configs.yaml` beside a checkpoint; else what the weights were built for
    /// (384x128 for CLIP weights). The encoding batch size `batch_size` when given.
    pub fn load(
        &self,
        img_size: Option<(i64, i64)>,
        batch_size: Option<usize>,
        device: tch::Device,
    ) -> Result<(Inference, EncodeOptions)> {
        let (source, beside) = match (&self.checkpoint, &self.pretrained) {
            (Some(c), _) => (
                WeightsSource::Checkpoint(c.clone()),
                Some(c.with_file_name(run_files::CONFIG)).filter(|p| p.is_file()),
            ),
            (None, Some(p)) => (WeightsSource::Pretrained(p.clone()), None),
            (None, None) => unreachable!("clap requires one of --checkpoint and --pretrained"),
        };
        let beside = beside.map(|p| Config::from_file(&p)).transpose()?;
        let data = beside.as_ref().map(|c| &c.data);
        let similarity = beside.as_ref().and_then(|c| c.model.similarity);
        let (model, mut opts) = model_and_options(&source, data, img_size, similarity, device)?;
        if let Some(b) = batch_size {
            opts.batch_size = b;
        }
        Ok((model, opts))
    }
}

/// The data settings that a checkpoint's own model records, when no config gives them.
const SIZE_KEYS: [&str; 2] = ["img_size", "text_length"];

/// The checkpoint `ccma test` (or `serve --run`) evaluates, `checkpoint` (default:
/// best.safetensors beside `--config`, or the best.pth of IRRA's, CCMA's or RDE's folder), loaded with its dataset for `split` by the config of
/// `config` (default: the configs.yaml beside the checkpoint, else the paper's); every image of
/// the dataset must exist.
pub fn load_test_setup(
    config: &ConfigArgs,
    device: &DeviceArg,
    checkpoint: Option<&Path>,
    split: SplitName,
) -> Result<TestSetup> {
    let checkpoint = match (checkpoint, &config.config) {
        (Some(c), _) => c.to_path_buf(),
        (None, Some(cfg)) => run_files::model_beside(cfg),
        (None, None) => {
            return Err(
                UsageError("give --checkpoint FILE or --config RUN/configs.yaml".into()).into(),
            )
        }
    };
    let beside = checkpoint.with_file_name(run_files::CONFIG);
    let fallback = beside.is_file().then_some(beside.as_path());
    let cfg = config.resolve(fallback, &[&device.flags.given])?;
    let device = cfg.run.device.resolve()?;
    super::preflight::require_images(&cfg)?;
    // A run's config (beside the checkpoint, or --config) or `--set` of the key decides the input
    // size and caption length; otherwise the checkpoint's own model does, as for embed and search.
    let sized = fallback.is_some()
        || config.config.is_some()
        || config
            .set
            .iter()
            .any(|(k, _)| SIZE_KEYS.contains(&k.as_str()));
    TestSetup::load(cfg, checkpoint, sized, split, device)
}

/// `HxW` (e.g. `384x128`) as (H, W).
pub fn parse_img_size(s: &str) -> Result<(i64, i64), String> {
    let max = crate::config::MAX_IMAGE_SIDE;
    s.split_once('x')
        .and_then(|(h, w)| Some((h.trim().parse().ok()?, w.trim().parse().ok()?)))
        .filter(|&(h, w): &(i64, i64)| (1..=max).contains(&h) && (1..=max).contains(&w))
        .ok_or_else(|| format!("{s:?}: expected HxW with sides from 1 to {max}, e.g. 384x128"))
}
