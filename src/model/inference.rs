//! A model ready for embedding and search: built from a ccma checkpoint (with the run's
//! `configs.yaml` beside it when present) or from pretrained CLIP weights.
use super::Ccma;
use crate::config::Config;
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{nn::VarStore, Device};

/// A loaded model with the config that describes it.
pub struct Inference {
    pub vs: VarStore,
    pub model: Ccma,
    pub config: Config,
    /// Identifies the weights (path, size, modification time) for caches keyed by the model.
    pub fingerprint: String,
}

fn fingerprint(path: &Path) -> Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(format!(
        "{}:{}:{}",
        abs.display(),
        meta.len(),
        mtime.map_or(0, |d| d.as_nanos())
    ))
}

/// The model of a ccma checkpoint described by `cfg` (sizes, image size, text length).
pub fn load_inference_with(cfg: &Config, checkpoint: &Path, device: Device) -> Result<Inference> {
    let mut cfg = cfg.clone();
    cfg.pretrained = None; // the checkpoint holds every weight
    let num_classes = super::checkpoint_num_classes(checkpoint)?;
    let (mut vs, model) = super::from_config(&cfg, num_classes, device)?;
    super::load_checkpoint(&mut vs, checkpoint)?;
    Ok(Inference {
        vs,
        model,
        config: cfg,
        fingerprint: fingerprint(checkpoint)?,
    })
}

/// From `--checkpoint` (its run's `configs.yaml` read when beside it) or `--pretrained`; the
/// input image size (H, W) can be set for pretrained weights (their positional grid is resized).
pub fn load_inference(
    checkpoint: Option<&Path>,
    pretrained: Option<&Path>,
    img_size: Option<(i64, i64)>,
    device: Device,
) -> Result<Inference> {
    match (checkpoint, pretrained) {
        (Some(ck), _) => {
            if !ck.is_file() {
                bail!(crate::UsageError(format!(
                    "checkpoint {} does not exist",
                    ck.display()
                )));
            }
            let beside = ck.with_file_name("configs.yaml");
            let mut cfg = if beside.is_file() {
                Config::from_file(&beside).map_err(|e| crate::UsageError(format!("{e:#}")))?
            } else {
                Config::default()
            };
            cfg.img_size = img_size.unwrap_or(cfg.img_size);
            load_inference_with(&cfg, ck, device)
        }
        (None, Some(p)) => {
            if !p.is_file() {
                bail!(crate::UsageError(format!(
                    "pretrained weights {} do not exist",
                    p.display()
                )));
            }
            let mut cfg = Config::default();
            cfg.pretrained = Some(p.to_path_buf());
            cfg.img_size = img_size.unwrap_or(cfg.img_size);
            let (vs, model) = super::from_config(&cfg, 1, device)?;
            Ok(Inference {
                vs,
                model,
                config: cfg,
                fingerprint: fingerprint(p)?,
            })
        }
        (None, None) => bail!(crate::UsageError(
            "give --checkpoint FILE or --pretrained FILE".into()
        )),
    }
}
