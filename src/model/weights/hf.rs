//! Hugging Face `transformers` CLIP: a `CLIPModel.save_pretrained` folder (`model.safetensors`
//! and `config.json`) or its `model.safetensors` with `config.json` beside it.
//!
//! Names are mapped to OpenAI's (`text_model.encoder.layers.N.mlp.fc1` → `transformer.resblocks.N
//! .mlp.c_fc`, ...); the separate q/k/v projections are stacked into `in_proj_weight` /
//! `in_proj_bias`, the projection matrices transposed (`visual_projection.weight` [E, W] →
//! `visual.proj` [W, E]). `config.json` gives the attention heads, and is checked for what the
//! model here implements (QuickGELU, an MLP 4x wide, LayerNorm eps 1e-5).
use super::{Format, Named, Weights};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Whether `named` is in Hugging Face's layout.
pub fn is_hf(named: &Named) -> bool {
    named
        .keys()
        .any(|k| k.starts_with("text_model.") || k.starts_with("vision_model."))
}

/// The `config.json` beside a `model.safetensors`, when there is one.
pub fn config_beside(path: &Path) -> Result<Option<PathBuf>> {
    let p = path.with_file_name("config.json");
    Ok(p.is_file().then_some(p))
}

/// A `save_pretrained` folder.
pub fn read_folder(dir: &Path) -> Result<Weights> {
    let file = dir.join("model.safetensors");
    if !file.is_file() {
        bail!(crate::UsageError(format!(
            "{} is a folder without model.safetensors (expected a Hugging Face CLIPModel.save_pretrained folder)",
            dir.display()
        )));
    }
    let (named, _) = crate::io::safetensors::load(&file)?;
    convert(named.into_iter().collect(), config_beside(&file)?, &file)
}

/// (vision, text) heads from `config.json`, after checking the parts the model here implements.
fn heads(config: &Path) -> Result<(i64, i64)> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", config.display()))?;
    let tower = |name: &str| -> Result<i64> {
        let c = &v[name];
        let get = |key: &str| {
            c[key]
                .as_i64()
                .with_context(|| format!("{}: `{name}.{key}` is missing", config.display()))
        };
        let (width, inter) = (get("hidden_size")?, get("intermediate_size")?);
        let Some(mlp) = width.checked_mul(4).filter(|_| width > 0) else {
            bail!(crate::UsageError(format!(
                "{}: `{name}.hidden_size` is {width}; expected a positive width (the model's MLP is 4 x `hidden_size` wide)",
                config.display()
            )));
        };
        if inter != mlp {
            bail!(crate::UsageError(format!("{}: `{name}.intermediate_size` is {inter}; the model here has CLIP's MLP of 4 x `hidden_size` = {mlp}", config.display())));
        }
        if let Some(act) = c["hidden_act"].as_str().filter(|a| *a != "quick_gelu") {
            bail!(
                "{}: `{name}.hidden_act` is {act:?}; the model here has CLIP's quick_gelu",
                config.display()
            );
        }
        if let Some(eps) = c["layer_norm_eps"]
            .as_f64()
            .filter(|e| (e - 1e-5).abs() > 1e-12)
        {
            bail!(
                "{}: `{name}.layer_norm_eps` is {eps}; the model here uses 1e-5",
                config.display()
            );
        }
        get("num_attention_heads")
    };
    Ok((tower("vision_config")?, tower("text_config")?))
}

/// OpenAI's name (under `base_model.`) for a Hugging Face name, q/k/v projections excepted.
fn rename(k: &str) -> Option<String> {
    let (prefix, rest) = if let Some(r) = k.strip_prefix("text_model.") {
        ("base_model.", r)
    } else if let Some(r) = k.strip_prefix("vision_model.") {
        ("base_model.visual.", r)
    } else {
        return None;
    };
    let mut s = rest.to_string();
    for (from, to) in [
        ("embeddings.token_embedding.", "token_embedding."),
        (
            "embeddings.position_embedding.weight",
            "positional_embedding",
        ),
        ("embeddings.class_embedding", "class_embedding"),
        ("embeddings.patch_embedding.", "conv1."),
        ("encoder.layers.", "transformer.resblocks."),
        ("final_layer_norm.", "ln_final."),
        ("pre_layrnorm.", "ln_pre."),
        ("post_layernorm.", "ln_post."),
        (".self_attn.", ".attn."),
        (".layer_norm1.", ".ln_1."),
        (".layer_norm2.", ".ln_2."),
        (".mlp.fc1.", ".mlp.c_fc."),
        (".mlp.fc2.", ".mlp.c_proj."),
    ] {
        s = s.replace(from, to);
    }
    Some(format!("{prefix}{s}"))
}

/// The weights under OpenAI's names, checked against `config` (if any) for the heads; without
/// one, the heads are CLIP ViT-B/16's for its widths and refused otherwise
/// ([`super::clip_config`]).
pub fn convert(named: Named, config: Option<PathBuf>, source: &Path) -> Result<Weights> {
    let heads = config.as_deref().map(heads).transpose()?;
    let mut out: Named = HashMap::new();
    // q, k, v of each attention, stacked in that order as `in_proj_*`.
    let mut qkv: HashMap<String, [Option<Tensor>; 3]> = HashMap::new();
    for (k, t) in named {
        if k.ends_with("position_ids") {
            continue; // a buffer older transformers versions saved: not a weight
        }
        let qkv_at = ["q_proj.", "k_proj.", "v_proj."]
            .iter()
            .position(|p| k.contains(&format!("self_attn.{p}")));
        match (k.as_str(), qkv_at) {
            ("visual_projection.weight", _) => {
                drop(out.insert("base_model.visual.proj".into(), t.tr().contiguous()))
            }
            ("text_projection.weight", _) => {
                drop(out.insert("base_model.text_projection".into(), t.tr().contiguous()))
            }
            ("logit_scale", _) => drop(out.insert("base_model.logit_scale".into(), t)),
            (_, Some(i)) => {
                let renamed = rename(&k)
                    .with_context(|| format!("{}: unexpected key `{k}`", source.display()))?;
                let part = ["q_proj.", "k_proj.", "v_proj."][i];
                let (head, leaf) = renamed
                    .split_once(part)
                    .expect("the q/k/v part is in the name");
                let key = format!("{head}in_proj_{leaf}");
                qkv.entry(key).or_default()[i] = Some(t);
            }
            _ => {
                let renamed = rename(&k)
                    .with_context(|| format!("{}: unexpected key `{k}`", source.display()))?;
                out.insert(renamed, t);
            }
        }
    }
    for (key, parts) in qkv {
        let [Some(q), Some(k), Some(v)] = parts else {
            bail!(
                "{}: `{key}` lacks one of its q, k, v projections",
                source.display()
            )
        };
        out.insert(key, Tensor::cat(&[q, k, v], 0));
    }
    Ok(Weights {
        tensors: out,
        metadata: HashMap::new(),
        format: Format::HuggingFace,
        heads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_openai() {
        let r = |k: &str| rename(k).unwrap();
        assert_eq!(
            r("text_model.embeddings.position_embedding.weight"),
            "base_model.positional_embedding"
        );
        assert_eq!(
            r("vision_model.embeddings.patch_embedding.weight"),
            "base_model.visual.conv1.weight"
        );
        assert_eq!(
            r("vision_model.encoder.layers.3.mlp.fc2.bias"),
            "base_model.visual.transformer.resblocks.3.mlp.c_proj.bias"
        );
        assert_eq!(
            r("text_model.encoder.layers.0.layer_norm1.weight"),
            "base_model.transformer.resblocks.0.ln_1.weight"
        );
        assert_eq!(
            r("vision_model.pre_layrnorm.bias"),
            "base_model.visual.ln_pre.bias"
        );
        assert_eq!(
            r("text_model.final_layer_norm.weight"),
            "base_model.ln_final.weight"
        );
        assert_eq!(rename("something.else"), None);
    }
}
