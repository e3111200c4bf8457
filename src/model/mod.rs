//! CLIP encoders, weights, the cross-modal MLM branch, DCA and the CCMA assembly.
pub mod amp;
pub mod ccma;
pub mod clip;
pub mod cross_modal;
pub mod dca;
pub mod embed;
pub mod inference;
pub mod layers;
pub mod weights;

pub use ccma::{Ccma, ModelConfig, TrainOutputs};
pub use embed::run_cli as run_embed_cli;
pub use inference::{load_inference, load_inference_with, Inference};

use crate::config::Config;
use anyhow::{Context, Result};
use std::path::Path;
use tch::{nn::VarStore, Device};

/// Builds the model of `cfg`: from scratch, or with the CLIP weights of `cfg.pretrained` (sizes
/// read off the weights, positional grid resized to the configured image size) and the new
/// modules randomly initialised.
pub fn from_config(cfg: &Config, num_classes: i64, device: Device) -> Result<(VarStore, Ccma)> {
    let mut mcfg = ModelConfig::from_config(cfg);
    let pretrained = match &cfg.pretrained {
        Some(p) => {
            let named = weights::read(p)?;
            mcfg.clip = weights::clip_config(&named, cfg.img_size, cfg.stride_size)
                .with_context(|| format!("pretrained weights {}", p.display()))?;
            Some((p, named))
        }
        None => None,
    };
    let mut vs = VarStore::new(device);
    let model = Ccma::new(&vs.root(), &mcfg, num_classes);
    if let Some((p, named)) = pretrained {
        let new_modules = [
            "cross_attn",
            "cross_modal_transformer",
            "ln_pre_t",
            "ln_pre_i",
            "ln_post",
            "mlm_head",
            "classifier",
            "dca_",
        ];
        weights::copy_into(
            &mut vs,
            &named,
            &new_modules,
            &["base_model.logit_scale"],
            mcfg.clip.grid(),
            p,
        )?;
        tracing::info!("loaded CLIP weights from {}", p.display());
    }
    Ok((vs, model))
}

/// Loads a ccma checkpoint (every parameter, strict) into `vs`.
pub fn load_checkpoint(vs: &mut VarStore, path: &Path) -> Result<()> {
    let named = weights::read(path)?;
    let grid = (0, 0); // a checkpoint of the same model never needs a resize
    weights::copy_into(vs, &named, &[], &[], grid, path)
}

/// Copies named tensors into `vs` (strict), e.g. from a resumable state.
pub fn copy_named(vs: &mut VarStore, named: &weights::Named) -> Result<()> {
    weights::copy_into(vs, named, &[], &[], (0, 0), Path::new("checkpoint"))
}

/// Number of ID classes of a checkpoint (rows of `classifier.weight`).
pub fn checkpoint_num_classes(path: &Path) -> Result<i64> {
    let named = weights::read(path)?;
    let w = named
        .get("classifier.weight")
        .with_context(|| format!("{}: missing key `classifier.weight`", path.display()))?;
    Ok(w.size()[0])
}
