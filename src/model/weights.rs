//! Reading weights: OpenAI's TorchScript CLIP archive (`ViT-B-16.pt`) and safetensors (our
//! checkpoints, or CLIP weights under the same names); sizes read off the tensor shapes; the image
//! positional grid resized bilinearly when the input size differs from pre-training.
use super::clip::ClipConfig;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use tch::{nn::VarStore, Kind, Tensor};

pub type Named = HashMap<String, Tensor>;

/// The tensors of a weights file and its string metadata (empty for a TorchScript archive).
pub struct Weights {
    pub tensors: Named,
    pub metadata: HashMap<String, String>,
}

/// Every tensor of a weights file as f32 (integers kept), names prefixed `base_model.` for a
/// CLIP archive. Errors name the file: missing, neither format, truncated or corrupt.
pub fn read(path: &Path) -> Result<Weights> {
    let mut magic = [0u8; 2];
    let mut f = std::fs::File::open(path)
        .with_context(|| format!("weights file {} cannot be opened", path.display()))?;
    let n = f
        .read(&mut magic)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let (named, metadata): (Vec<(String, Tensor)>, _) = if n == 2 && &magic == b"PK" {
        let module = tch::CModule::load(path).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a loadable TorchScript archive: {}",
                path.display(),
                first_line(&e.to_string())
            )
        })?;
        let params = module
            .named_parameters()
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), first_line(&e.to_string())))?;
        let named = params
            .into_iter()
            .map(|(k, t)| (format!("base_model.{k}"), t))
            .collect();
        (named, HashMap::new())
    } else {
        crate::io::safetensors::load(path)
            .map_err(|_| {
                anyhow::anyhow!(
                    "{} is not a weights file (expected OpenAI's TorchScript archive ViT-B-16.pt or a safetensors file), or it is truncated",
                    path.display()
                )
            })?
    };
    let tensors = named
        .into_iter()
        .map(|(k, t)| {
            let t = if t.is_floating_point() {
                t.to_kind(Kind::Float)
            } else {
                t
            };
            (k, t)
        })
        .collect();
    Ok(Weights { tensors, metadata })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn shape(named: &Named, key: &str) -> Result<Vec<i64>> {
    named
        .get(key)
        .map(|t| t.size())
        .with_context(|| format!("missing key `{key}` in the pretrained weights"))
}

/// The encoder sizes a set of CLIP weights implies (as OpenAI's `build_model` reads them); the
/// input image size and stride come from the run config.
pub fn clip_config(named: &Named, image_size: (i64, i64), stride: i64) -> Result<ClipConfig> {
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
        vision_heads: (vision_width / 64).max(1),
        patch_size: conv[3],
        stride,
        context_length: shape(named, "base_model.positional_embedding")?[0],
        vocab_size: shape(named, "base_model.token_embedding.weight")?[0],
        text_width,
        text_heads: (text_width / 64).max(1),
        text_layers: layers("base_model.transformer.resblocks."),
    })
}

/// Resizes a positional embedding [1 + gh0*gw0, W] (square pre-training grid) to
/// [1 + gh*gw, W] by bilinear interpolation of the grid, keeping the class position.
pub fn resize_pos_embed(pos: &Tensor, grid: (i64, i64)) -> Result<Tensor> {
    let (n, w) = pos.size2()?;
    let old = ((n - 1) as f64).sqrt().round() as i64;
    if old * old != n - 1 {
        bail!("positional embedding with {n} positions is not a class token plus a square grid");
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
        .filter(|k| !vars.contains_key(*k) && !may_be_extra.iter().any(|e| k.as_str() == *e))
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
