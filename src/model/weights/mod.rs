//! Reading weights in the layouts people have, into ccma's parameter names (OpenAI's CLIP names
//! under `base_model.`, IRRA's names for the cross-modal modules):
//! - ccma's safetensors checkpoints (and CLIP weights saved under those names);
//! - OpenAI's TorchScript CLIP archive (`ViT-B-16.pt`), [`openai`];
//! - IRRA's and CCMA's PyTorch checkpoints (`best.pth`, a `torch.save` zip), [`torch_save`];
//! - Hugging Face `transformers` CLIP (`save_pretrained` folder or its `model.safetensors`), [`hf`].
//!
//! Sizes are read off the tensor shapes; the image positional grid is resized bilinearly when the
//! input size differs from pre-training.
pub mod hf;
pub mod openai;
pub mod torch_save;

use super::clip::ClipConfig;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use tch::{nn::VarStore, Kind, Tensor};

pub type Named = HashMap<String, Tensor>;

/// Where a set of weights came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A safetensors file with ccma's names (a ccma checkpoint, or CLIP weights).
    Ccma,
    /// OpenAI's TorchScript archive.
    OpenAi,
    /// A `torch.save` checkpoint of IRRA or CCMA (or a plain state dict).
    TorchSave,
    /// Hugging Face `transformers` CLIP.
    HuggingFace,
}

/// The tensors of a weights file (f32, integers kept) under ccma's names, its string metadata
/// (ccma checkpoints only) and what the layout says that shapes cannot (attention heads).
pub struct Weights {
    pub tensors: Named,
    pub metadata: HashMap<String, String>,
    pub format: Format,
    /// (vision, text) attention heads when the layout records them; else width / 64 as CLIP has.
    pub heads: Option<(i64, i64)>,
}

/// OpenAI's CLIP keeps these sizes beside its weights (as buffers, or parameters in some
/// exports); they are not weights, and CLIP's own `build_model` drops them too.
const CLIP_SIZE_ENTRIES: [&str; 3] = [
    "base_model.input_resolution",
    "base_model.context_length",
    "base_model.vocab_size",
];

/// Reads the weights at `path` in whichever layout it has. Errors name the file: missing,
/// no known layout, truncated or corrupt.
pub fn read(path: &Path) -> Result<Weights> {
    let mut w = if path.is_dir() {
        hf::read_folder(path)?
    } else {
        let mut magic = [0u8; 2];
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut magic))
            .with_context(|| format!("weights file {} cannot be opened", path.display()))?;
        if n == 2 && &magic == b"PK" {
            match torch_save::is_torchscript(path)? {
                true => openai::read_archive(path)?,
                false => torch_save::read(path)?,
            }
        } else {
            let (named, metadata) = crate::io::safetensors::load(path).map_err(|_| {
                anyhow::anyhow!(
                    "{} is not a weights file (expected a ccma or Hugging Face safetensors file, OpenAI's TorchScript archive ViT-B-16.pt or an IRRA/CCMA best.pth), or it is truncated",
                    path.display()
                )
            })?;
            let named: Named = named.into_iter().collect();
            match hf::is_hf(&named) {
                true => hf::convert(named, hf::config_beside(path)?, path)?,
                false => Weights {
                    tensors: named,
                    metadata,
                    format: Format::Ccma,
                    heads: None,
                },
            }
        }
    };
    for k in CLIP_SIZE_ENTRIES {
        w.tensors.remove(k);
    }
    for t in w.tensors.values_mut() {
        if t.is_floating_point() {
            *t = t.to_kind(Kind::Float);
        }
    }
    Ok(w)
}

fn shape(named: &Named, key: &str) -> Result<Vec<i64>> {
    named
        .get(key)
        .map(|t| t.size())
        .with_context(|| format!("missing key `{key}` in the pretrained weights"))
}

/// The encoder sizes a set of CLIP weights implies (as OpenAI's `build_model` reads them); the
/// input image size and stride come from the run config.
pub fn clip_config(w: &Weights, image_size: (i64, i64), stride: i64) -> Result<ClipConfig> {
    let named = &w.tensors;
    let conv = shape(named, "base_model.visual.conv1.weight")?;
    let text_width = shape(named, "base_model.ln_final.weight")?[0];
    let layers = |prefix: &str| {
        named
            .keys()
            .filter_map(|k| {
                k.strip_prefix(prefix)?
                    .split('.')
                    .next()?
                    .parse::<i64>()
                    .ok()
            })
            .max()
            .map_or(0, |m| m + 1)
    };
    let vision_width = conv[0];
    Ok(ClipConfig {
        embed_dim: shape(named, "base_model.text_projection")?[1],
        image_size,
        vision_width,
        vision_layers: layers("base_model.visual.transformer.resblocks."),
        vision_heads: w.heads.map_or((vision_width / 64).max(1), |h| h.0),
        patch_size: conv[3],
        stride,
        context_length: shape(named, "base_model.positional_embedding")?[0],
        vocab_size: shape(named, "base_model.token_embedding.weight")?[0],
        text_width,
        text_heads: w.heads.map_or((text_width / 64).max(1), |h| h.1),
        text_layers: layers("base_model.transformer.resblocks."),
    })
}

/// Resizes a positional embedding [1 + gh0*gw0, W] (square pre-training grid) to
/// [1 + gh*gw, W] by bilinear interpolation of the grid, keeping the class position.
pub fn resize_pos_embed(pos: &Tensor, grid: (i64, i64)) -> Result<Tensor> {
    let (n, w) = pos.size2()?;
    let old = ((n - 1) as f64).sqrt().round() as i64;
    if old * old != n - 1 {
        bail!(
            "positional embedding with {n} positions is not a class token plus a square grid, and the model's {}x{} grid needs {} positions (is the image size the one these weights were trained at?)",
            grid.0,
            grid.1,
            grid.0 * grid.1 + 1
        );
    }
    let cls = pos.narrow(0, 0, 1);
    let g = pos
        .narrow(0, 1, n - 1)
        .reshape([1, old, old, w])
        .permute([0, 3, 1, 2]);
    let g = g.upsample_bilinear2d([grid.0, grid.1], false, None, None);
    let g = g.permute([0, 2, 3, 1]).reshape([grid.0 * grid.1, w]);
    Ok(Tensor::cat(&[cls, g], 0))
}

/// Copies `named` into the variables of `vs`. Every variable must be present with its shape
/// unless its name starts with one of `may_be_missing`; names in `named` without a variable are
/// errors unless listed in `may_be_extra`. The image positional embedding is resized to `grid`
/// when its shape differs. Errors name the key and both shapes.
pub fn copy_into(
    vs: &mut VarStore,
    named: &Named,
    may_be_missing: &[&str],
    may_be_extra: &[&str],
    grid: (i64, i64),
    source: &Path,
) -> Result<()> {
    let vars = vs.variables();
    let mut unexpected: Vec<&String> = named
        .keys()
        .filter(|k| !vars.contains_key(*k) && !may_be_extra.contains(&k.as_str()))
        .collect();
    unexpected.sort();
    if let Some(k) = unexpected.first() {
        bail!(
            "{}: unexpected key `{k}` ({} unexpected in all)",
            source.display(),
            unexpected.len()
        );
    }
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    tch::no_grad(|| -> Result<()> {
        for name in names {
            let mut var = vars[name].shallow_clone();
            match named.get(name) {
                None if may_be_missing.iter().any(|p| name.starts_with(p)) => {}
                None => bail!(
                    "{}: missing key `{name}` (expected shape {:?})",
                    source.display(),
                    var.size()
                ),
                Some(t) => {
                    let t = if name == "base_model.visual.positional_embedding"
                        && t.size() != var.size()
                    {
                        resize_pos_embed(t, grid)
                            .with_context(|| format!("{}: key `{name}`", source.display()))?
                    } else {
                        t.shallow_clone()
                    };
                    if t.size() != var.size() {
                        bail!("{}: shape mismatch for key `{name}`: file has {:?}, model expects {:?}", source.display(), t.size(), var.size());
                    }
                    var.copy_(&t.to_kind(var.kind()));
                }
            }
        }
        Ok(())
    })
}
