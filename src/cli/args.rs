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
    /// the flags that set keys: `--dataset`, `--root-dir` and the command's own (`more`); a key
    /// given both by a flag and by `--set` is refused rather than one silently winning. Validated.
    pub fn resolve(&self, fallback: Option<&Path>, more: &[&[Given]]) -> Result<Config> {
        let file = self.config.as_deref().or(fallback);
        let base = match file {
            Some(f) => Config::load(f)?,
            None => Config::default(),
        };
        let cfg = base
            .with_overrides(&self.set)
            .map_err(|e| UsageError(format!("in --set: {e:#}")))?;
        let flags: Vec<&Given> = [&self.dataset.given[..]]
            .iter()
            .chain(more)
            .flat_map(|g| g.iter())
            .collect();
        for g in &flags {
            if self.set.iter().any(|(k, _)| k == g.key) {
                bail!(UsageError(format!(
                    "--{} and --set {key}=... both set `{key}`: give one of them",
                    g.flag.long,
                    key = g.key
                )));
            }
        }
        let pairs: Vec<(String, String)> = flags.iter().map(|g| g.pair()).collect();
        let cfg = cfg.with_overrides(&pairs)?;
        cfg.validate().map_err(|e| match file {
            Some(f) => UsageError(format!("config file {}: {e:#}", f.display())).into(),
            None => e,
        })?;
        Ok(cfg)
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

/// The checkpoint `ccma test` (or `serve --run`) evaluates, `checkpoint` (default:
/// best.safetensors beside `--config`), loaded with its dataset for `split` by the config of
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
        (None, Some(cfg)) => cfg.with_file_name(run_files::BEST),
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
    // Data settings given in a file or with --set decide the input size and caption length;
    // otherwise the checkpoint's own model does.
    let data_given = fallback.is_some() || config.config.is_some() || !config.set.is_empty();
    TestSetup::load(cfg, checkpoint, data_given, split, device)
}

/// `HxW` (e.g. `384x128`) as (H, W).
pub fn parse_img_size(s: &str) -> Result<(i64, i64), String> {
    let max = crate::config::MAX_IMAGE_SIDE;
    s.split_once('x')
        .and_then(|(h, w)| Some((h.trim().parse().ok()?, w.trim().parse().ok()?)))
        .filter(|&(h, w): &(i64, i64)| (1..=max).contains(&h) && (1..=max).contains(&w))
        .ok_or_else(|| format!("{s:?}: expected HxW with sides from 1 to {max}, e.g. 384x128"))
}
