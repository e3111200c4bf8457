//! Where a run configuration, weight files and a device meet: the model for training (from
//! scratch or from pretrained CLIP weights) and a model for inference (from a checkpoint alone, or
//! from pretrained weights).
use crate::config::Config;
use crate::model::weights::{self, Format, Weights};
use crate::model::{Ccma, ModelConfig, Module};
use crate::UsageError;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Device};

/// The from-scratch model a run config describes, with `num_classes` identities: its sizes on
/// the paper's model at the configured image size and caption length.
pub fn model_config(cfg: &Config, num_classes: i64) -> ModelConfig {
    let mut base = ModelConfig::vit_b16(cfg.data.img_size, num_classes);
    base.clip.context_length = cfg.data.text_length;
    cfg.model.sized(base)
}

/// The model to train: from scratch, or from the weights of `pretrained` (CLIP weights in any
/// layout, or an IRRA/CCMA checkpoint): sizes read off the weights, positional grid resized to the
/// configured image size, the modules the weights lack randomly initialised. On CUDA, the run's
/// `matmul_precision` is set for the process (training and its evaluations).
pub fn training_model(cfg: &Config, num_classes: i64, device: Device) -> Result<(VarStore, Ccma)> {
    crate::model::amp::set_cuda_matmul_precision(cfg.run.matmul_precision.name(), device)?;
    let mut mcfg = model_config(cfg, num_classes);
    let pretrained = match &cfg.model.pretrained {
        Some(p) => {
            let mut w = read_weights(p)?;
            // The dataset decides the identities; a classifier of another size is not loaded.
            mcfg = ModelConfig {
                num_classes,
                ..sized_by(&w, mcfg, p)?
            };
            drop_other_classifier(&mut w, num_classes, p);
            Some((p, w))
        }
        None => None,
    };
    let mut vs = VarStore::new(device);
    let model = Ccma::new(&vs.root(), &mcfg);
    if cfg.model.zero_init_residual {
        model.zero_dca_residuals();
    }
    if let Some((p, w)) = pretrained {
        load_partial(&mut vs, &w, &mcfg, p)?;
        tracing::info!("loaded weights from {}", p.display());
    }
    Ok((vs, model))
}

/// A checkpoint trained on other identities has a classifier of another size: it is not used.
fn drop_other_classifier(w: &mut Weights, num_classes: i64, path: &Path) {
    let prefix = Module::Classifier.prefix();
    let rows = w
        .tensors
        .get(&format!("{prefix}weight"))
        .map(|t| t.size()[0]); // rank checked by sized_by
    if rows.is_some_and(|r| r != num_classes) {
        tracing::info!(
            "{}: its classifier has {} identities, this dataset {num_classes}: the classifier starts fresh",
            path.display(),
            rows.unwrap_or_default()
        );
        w.tensors.retain(|k, _| !k.starts_with(&prefix));
    }
}

/// `base` with the sizes that `w` fixes ([`weights::model_config`]), validated.
fn sized_by(w: &Weights, base: ModelConfig, path: &Path) -> Result<ModelConfig> {
    weights::model_config(w, base).with_context(|| format!("weights {}", path.display()))
}

/// Copies `w` into `vs`, the modules CLIP's weights do not hold allowed to be missing (they keep
/// their random initialisation, and are named in the log).
fn load_partial(vs: &mut VarStore, w: &Weights, mcfg: &ModelConfig, path: &Path) -> Result<()> {
    let added: Vec<String> = Module::ALL
        .into_iter()
        .filter(|m| !m.from_clip())
        .map(Module::prefix)
        .collect();
    let fresh: Vec<&str> = added
        .iter()
        .filter(|p| !w.tensors.keys().any(|k| k.starts_with(p.as_str())))
        .map(|p| p.trim_end_matches('.'))
        .collect();
    if !fresh.is_empty() {
        tracing::info!(
            "{}: no weights for {}: randomly initialised",
            path.display(),
            fresh.join(", ")
        );
    }
    weights::copy_into(
        vs,
        &w.tensors,
        &added.iter().map(String::as_str).collect::<Vec<_>>(),
        &["base_model.logit_scale"],
        mcfg.clip.grid(),
        path,
    )
}

fn read_weights(path: &Path) -> Result<Weights> {
    if !path.exists() {
        bail!(UsageError(format!(
            "weights {} do not exist",
            path.display()
        )));
    }
    weights::read(path)
}

/// Where inference weights come from.
#[derive(Debug, Clone)]
pub enum WeightsSource {
    /// A ccma checkpoint: every weight, and the model's sizes in its metadata.
    Checkpoint(PathBuf),
    /// Weights in any layout, whatever modules they hold (CLIP's encoders at least).
    Pretrained(PathBuf),
}

/// A model loaded for embedding, evaluation and search.
pub struct Inference {
    pub vs: VarStore,
    pub model: Ccma,
    /// The weights file (or folder) it was read from, as given.
    pub path: PathBuf,
    /// Identifies the weights (path, size, modification time) for caches keyed by the model.
    pub fingerprint: String,
}

/// The model of `source`, at input size `img_size` (H, W) when given (the positional grid is
/// resized), else at the size it was trained for (384x128, the paper's, for weights that do not
/// record it).
pub fn inference_model(
    source: &WeightsSource,
    img_size: Option<(i64, i64)>,
    device: Device,
) -> Result<Inference> {
    let (WeightsSource::Checkpoint(path) | WeightsSource::Pretrained(path)) = source;
    let w = read_weights(path)?;
    let mcfg = match (source, w.format) {
        (WeightsSource::Checkpoint(_), Format::Ccma) => {
            let mut c = checkpoint_model_config(path, &w)?;
            weights::check_description(&w, &c)
                .with_context(|| format!("checkpoint {}", path.display()))?;
            if let Some(size) = img_size {
                c.clip.image_size = size;
            }
            c
        }
        _ => {
            let size = img_size.unwrap_or(crate::config::DataSection::default().img_size);
            sized_by(&w, ModelConfig::vit_b16(size, 1), path)?
        }
    };
    let (size, patch) = (mcfg.clip.image_size, mcfg.clip.patch_size);
    if size.0 < patch || size.1 < patch {
        bail!(UsageError(format!(
            "image size {}x{} is smaller than the {patch}-pixel patches of {}",
            size.0,
            size.1,
            path.display()
        )));
    }
    let mut vs = VarStore::new(device);
    let model = Ccma::new(&vs.root(), &mcfg);
    match (source, w.format) {
        (WeightsSource::Checkpoint(_), Format::Ccma) => {
            weights::copy_into(&mut vs, &w.tensors, &[], &[], mcfg.clip.grid(), path)?
        }
        _ => load_partial(&mut vs, &w, &mcfg, path)?,
    }
    Ok(Inference {
        vs,
        model,
        path: path.to_path_buf(),
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
    let beside = path.with_file_name(crate::io::run_files::CONFIG);
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
        .ok_or_else(|| {
            UsageError(format!(
                "{}: missing key `classifier.weight`",
                path.display()
            ))
        })?
        .size()
        .first()
        .copied()
        .unwrap_or(0);
    Ok(model_config(&cfg, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config's default sizes are the `vit_b16` preset of the model (which weights without
    /// sizes are read at), through the section's one table of keys.
    #[test]
    fn the_default_config_builds_the_vit_b16_preset() {
        let cfg = Config::default();
        assert_eq!(
            model_config(&cfg, 11_003),
            ModelConfig::vit_b16(cfg.data.img_size, 11_003)
        );
    }

    /// `zero_init_residual` starts the DCA stacks as the identity: `g = f` exactly, where IRRA's
    /// initialisation moves `g` away from `f`.
    #[test]
    fn zero_init_residual_starts_dca_as_the_identity() {
        let sets: Vec<(String, String)> = [
            ("pretrain_choice", "''"),
            ("embed_dim", "16"),
            ("vision_width", "16"),
            ("vision_layers", "1"),
            ("vision_heads", "1"),
            ("transformer_width", "16"),
            ("transformer_layers", "1"),
            ("transformer_heads", "1"),
            ("cmt_depth", "1"),
            ("dca_heads", "2"),
            ("img_size", "[32, 16]"),
            ("text_length", "8"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let gap = |zero: bool| {
            let cfg = Config::default().with_overrides(&sets).unwrap();
            let cfg = Config {
                model: crate::config::ModelSection {
                    zero_init_residual: zero,
                    ..cfg.model
                },
                ..cfg
            };
            tch::manual_seed(0);
            let (_vs, model) = training_model(&cfg, 3, Device::Cpu).unwrap();
            let images = tch::Tensor::randn([2, 3, 32, 16], (tch::Kind::Float, Device::Cpu));
            let ids = tch::Tensor::from_slice(&[49406i64, 320, 1125, 49407, 0, 0, 0, 0])
                .view([1, 8])
                .repeat([2, 1]);
            let heads = crate::model::Heads {
                dca: true,
                ..Default::default()
            };
            let out = tch::no_grad(|| model.forward_train(&images, &ids, None, heads));
            let diff = |a: &tch::Tensor, b: &Option<tch::Tensor>| {
                (a - b.as_ref().unwrap()).abs().max().double_value(&[])
            };
            diff(&out.f_i, &out.g_i).max(diff(&out.f_t, &out.g_t))
        };
        assert_eq!(gap(true), 0.0);
        assert!(gap(false) > 1e-2, "{}", gap(false));
    }
}
