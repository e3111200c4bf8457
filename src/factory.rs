//! Where a run configuration, weight files and a device meet: the model for training (from
//! scratch or from pretrained CLIP weights) and a model for inference (from a checkpoint alone, or
//! from pretrained weights).
use crate::config::Config;
use crate::model::weights::{self, Named};
use crate::model::{Ccma, ModelConfig};
use crate::UsageError;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Device};

/// The modules CCMA adds to CLIP: randomly initialised when training starts from CLIP weights.
const NEW_MODULES: [&str; 8] = [
    "cross_attn",
    "cross_modal_transformer",
    "ln_pre_t",
    "ln_pre_i",
    "ln_post",
    "mlm_head",
    "classifier",
    "dca_",
];

/// The from-scratch model a run config describes, with `num_classes` identities.
pub fn model_config(cfg: &Config, num_classes: i64) -> ModelConfig {
    let m = &cfg.model;
    ModelConfig {
        clip: crate::model::clip::ClipConfig {
            embed_dim: m.embed_dim,
            image_size: cfg.data.img_size,
            vision_width: m.vision_width,
            vision_layers: m.vision_layers,
            vision_heads: m.vision_heads,
            patch_size: m.vision_patch_size,
            stride: m.stride_size,
            context_length: cfg.data.text_length,
            vocab_size: m.vocab_size,
            text_width: m.transformer_width,
            text_heads: m.transformer_heads,
            text_layers: m.transformer_layers,
        },
        cmt_depth: m.cmt_depth,
        dca_heads: m.dca_heads,
        dca_depth: m.dca_depth,
        lambda_init: m.lambda_init,
        num_classes,
    }
}

/// The model to train: from scratch, or with the CLIP weights of `pretrained` (sizes read off the
/// weights, positional grid resized to the configured image size) and the new modules randomly
/// initialised.
pub fn training_model(cfg: &Config, num_classes: i64, device: Device) -> Result<(VarStore, Ccma)> {
    let mut mcfg = model_config(cfg, num_classes);
    let pretrained = match &cfg.model.pretrained {
        Some(p) => {
            let named = read_pretrained(p)?;
            mcfg.clip = weights::clip_config(&named, cfg.data.img_size, cfg.model.stride_size)
                .with_context(|| format!("pretrained weights {}", p.display()))?;
            Some((p, named))
        }
        None => None,
    };
    let mut vs = VarStore::new(device);
    let model = Ccma::new(&vs.root(), &mcfg);
    if let Some((p, named)) = pretrained {
        weights::copy_into(
            &mut vs,
            &named,
            &NEW_MODULES,
            &["base_model.logit_scale"],
            mcfg.clip.grid(),
            p,
        )?;
        tracing::info!("loaded CLIP weights from {}", p.display());
    }
    Ok((vs, model))
}

fn read_pretrained(path: &Path) -> Result<Named> {
    if !path.is_file() {
        bail!(UsageError(format!(
            "pretrained weights {} do not exist",
            path.display()
        )));
    }
    Ok(weights::read(path)?.tensors)
}

/// Where inference weights come from.
#[derive(Debug, Clone)]
pub enum WeightsSource {
    /// A ccma checkpoint: every weight, and the model's sizes in its metadata.
    Checkpoint(PathBuf),
    /// CLIP weights (OpenAI's archive or safetensors): the encoders only.
    Pretrained(PathBuf),
}

/// A model loaded for embedding, evaluation and search.
pub struct Inference {
    pub vs: VarStore,
    pub model: Ccma,
    /// Identifies the weights (path, size, modification time) for caches keyed by the model.
    pub fingerprint: String,
}

/// The model of `source`, at input size `img_size` (H, W) when given (the positional grid is
/// resized), else at the size it was trained or pre-trained for (384x128 for CLIP weights).
pub fn inference_model(
    source: &WeightsSource,
    img_size: Option<(i64, i64)>,
    device: Device,
) -> Result<Inference> {
    let (path, mcfg, named) = match source {
        WeightsSource::Checkpoint(path) => {
            if !path.is_file() {
                bail!(UsageError(format!(
                    "checkpoint {} does not exist",
                    path.display()
                )));
            }
            let w = weights::read(path)?;
            let mut mcfg = checkpoint_model_config(path, &w)?;
            if let Some(size) = img_size {
                mcfg.clip.image_size = size;
            }
            (path, mcfg, w.tensors)
        }
        WeightsSource::Pretrained(path) => {
            let named = read_pretrained(path)?;
            let size = img_size.unwrap_or(crate::config::DataSection::default().img_size);
            let stride = crate::config::ModelSection::default().stride_size;
            let clip = weights::clip_config(&named, size, stride)
                .with_context(|| format!("pretrained weights {}", path.display()))?;
            let mcfg = ModelConfig {
                clip,
                ..ModelConfig::vit_b16(size, 1)
            };
            (path, mcfg, named)
        }
    };
    let mut vs = VarStore::new(device);
    let model = Ccma::new(&vs.root(), &mcfg);
    let (missing, extra): (&[&str], &[&str]) = match source {
        WeightsSource::Checkpoint(_) => (&[], &[]),
        WeightsSource::Pretrained(_) => (&NEW_MODULES, &["base_model.logit_scale"]),
    };
    weights::copy_into(&mut vs, &named, missing, extra, mcfg.clip.grid(), path)?;
    Ok(Inference {
        vs,
        model,
        fingerprint: crate::io::fingerprint::file(path)?,
    })
}

/// The sizes of the model in checkpoint `path`: from its metadata, or, for a checkpoint written
/// before checkpoints carried it, from the run's `configs.yaml` beside it.
fn checkpoint_model_config(path: &Path, w: &weights::Weights) -> Result<ModelConfig> {
    if let Some(c) = ModelConfig::from_metadata(&w.metadata)
        .with_context(|| format!("checkpoint {}", path.display()))?
    {
        return Ok(c);
    }
    let beside = path.with_file_name("configs.yaml");
    if !beside.is_file() {
        bail!(UsageError(format!(
            "checkpoint {} does not describe its model (no `{}` metadata) and has no configs.yaml beside it",
            path.display(),
            crate::model::config::METADATA_KEY
        )));
    }
    let cfg = Config::from_file(&beside)?;
    let classes = w
        .tensors
        .get("classifier.weight")
        .with_context(|| format!("{}: missing key `classifier.weight`", path.display()))?
        .size()[0];
    Ok(model_config(&cfg, classes))
}
