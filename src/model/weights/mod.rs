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
use super::ModelConfig;
use crate::io::pickle::{load_torch_zip, Value};
use crate::UsageError;
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
    /// (vision, text) attention heads when the layout or a file beside it records them.
    pub heads: Option<(i64, i64)>,
}

/// OpenAI's CLIP keeps these sizes beside its weights (as buffers, or parameters in some
/// exports); they are not weights, and CLIP's own `build_model` drops them too.
const CLIP_SIZE_ENTRIES: [&str; 3] = [
    "base_model.input_resolution",
    "base_model.context_length",
    "base_model.vocab_size",
];

/// The layouts a weights file may have, for messages.
const LAYOUTS: &str = "a ccma or Hugging Face safetensors file, OpenAI's TorchScript archive ViT-B-16.pt or an IRRA/CCMA best.pth";

/// Reads the weights at `path` in whichever layout it has, without running anything in it.
/// Every failure is a usage error (exit code 2) naming the file: missing, not a regular file,
/// no known layout, or which check of its layout failed.
pub fn read(path: &Path) -> Result<Weights> {
    read_layout(path).map_err(|e| UsageError(format!("{e:#}")).into())
}

fn read_layout(path: &Path) -> Result<Weights> {
    let mut w = if path.is_dir() {
        hf::read_folder(path)?
    } else {
        let mut magic = [0u8; 9];
        let meta = std::fs::metadata(path)
            .with_context(|| format!("weights file {} cannot be opened", path.display()))?;
        if !meta.is_file() {
            bail!("weights file {} is not a regular file", path.display());
        }
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut magic))
            .with_context(|| format!("weights file {} cannot be opened", path.display()))?;
        if n >= 2 && &magic[..2] == b"PK" {
            match load_torch_zip(path)? {
                module @ Value::Object { .. } => openai::from_module(module, path)?,
                saved => torch_save::from_value(saved, path)?,
            }
        } else if n == 9 && magic[8] == b'{' {
            let (named, metadata) = crate::io::safetensors::load(path)?;
            let named: Named = named.into_iter().collect();
            match hf::is_hf(&named) {
                true => hf::convert(named, hf::config_beside(path)?, path)?,
                false => ccma_weights(named, metadata, path)?,
            }
        } else {
            bail!(
                "{} is not a weights file (expected {LAYOUTS})",
                path.display()
            );
        }
    };
    if w.heads.is_none() && matches!(w.format, Format::TorchSave | Format::Ccma) {
        w.heads = heads_beside(path)?;
    }
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

/// A safetensors file under ccma's names: a checkpoint (its model's sizes in the metadata), a
/// resumable training state (the model's weights are read, the optimiser's state set aside) or
/// CLIP weights.
fn ccma_weights(
    mut named: Named,
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<Weights> {
    let before = named.len();
    named.retain(|k, _| !k.starts_with(OPTIMIZER_PREFIX));
    if named.len() != before {
        tracing::info!(
            "{} is a resumable training state: its model's weights are read, its optimiser state ({} tensors) is not",
            path.display(),
            before - named.len()
        );
    }
    let heads = ModelConfig::from_metadata(&metadata)
        .with_context(|| path.display().to_string())?
        .map(|c| (c.clip.vision_heads, c.clip.text_heads));
    Ok(Weights {
        tensors: named,
        metadata,
        format: Format::Ccma,
        heads,
    })
}

/// The names under which a training state keeps the optimiser's tensors.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

/// The `configs.yaml` beside `path` (a run folder's) and its contents, when there is one.
fn yaml_beside(path: &Path) -> Result<Option<(std::path::PathBuf, serde_yaml::Value)>> {
    let yaml = path.with_file_name(crate::io::run_files::CONFIG);
    if path.is_dir() || !yaml.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&yaml)
        .with_context(|| format!("cannot read {}", yaml.display()))?;
    let v: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("{} is not YAML", yaml.display()))?;
    Ok(Some((yaml, v)))
}

/// RDE's `select_ratio` from the `configs.yaml` beside `path` (RDE's run folder records it
/// there), when it names one; a value that is not a number is an error naming the file.
pub fn select_ratio_beside(path: &Path) -> Result<Option<f64>> {
    let Some((yaml, v)) = yaml_beside(path)? else {
        return Ok(None);
    };
    v.get("select_ratio")
        .map(|x| {
            x.as_f64().ok_or_else(|| {
                UsageError(format!(
                    "{}: `select_ratio` is not a number",
                    yaml.display()
                ))
                .into()
            })
        })
        .transpose()
}

/// (vision, text) heads from the `configs.yaml` beside `path` (a run folder's), when it names
/// both `vision_heads` and `transformer_heads`.
fn heads_beside(path: &Path) -> Result<Option<(i64, i64)>> {
    let Some((yaml, v)) = yaml_beside(path)? else {
        return Ok(None);
    };
    let get = |k: &str| {
        v.get(k)
            .map(|x| {
                x.as_i64()
                    .with_context(|| format!("{}: `{k}` is not an integer", yaml.display()))
            })
            .transpose()
    };
    match (get("vision_heads")?, get("transformer_heads")?) {
        (Some(v), Some(t)) => Ok(Some((v, t))),
        (None, None) => Ok(None),
        _ => bail!(
            "{}: has one of `vision_heads` and `transformer_heads` but not the other",
            yaml.display()
        ),
    }
}

/// The shape of `key`, which must have `rank` dimensions.
fn dims(named: &Named, key: &str, rank: usize) -> Result<Vec<i64>> {
    let size = named
        .get(key)
        .map(|t| t.size())
        .with_context(|| format!("missing key `{key}` in the pretrained weights"))?;
    if size.len() != rank {
        bail!(UsageError(format!(
            "key `{key}` has shape {size:?}: expected {rank} dimension{}",
            if rank == 1 { "" } else { "s" }
        )));
    }
    Ok(size)
}

/// Blocks `prefix.N.` in `named`: one more than the largest N.
fn blocks(named: &Named, prefix: &str) -> Option<i64> {
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
        .map(|m| m.saturating_add(1))
}

/// The width of one attention head in CLIP's encoders: OpenAI's `build_model`, and IRRA's,
/// CCMA's and RDE's copies of it, give an encoder of width `w` exactly `w / HEAD_WIDTH` heads.
pub const HEAD_WIDTH: i64 = 64;

/// (vision, text) attention heads: what the layout or a file beside it records; else, for the
/// layouts of OpenAI's archive and IRRA's, CCMA's and RDE's `best.pth`, their code's own rule
/// (every width / [`HEAD_WIDTH`]); CLIP ViT-B/16's 12 and 8 for its widths 768 and 512 in a
/// ccma safetensors file without a description; else an error saying which file would tell.
fn heads(w: &Weights, vision_width: i64, text_width: i64) -> Result<(i64, i64)> {
    match (w.heads, w.format) {
        (Some(h), _) => Ok(h),
        (None, Format::OpenAi | Format::TorchSave) => {
            let by_width = |w: i64| (w > 0 && w % HEAD_WIDTH == 0).then_some(w / HEAD_WIDTH);
            match (by_width(vision_width), by_width(text_width)) {
                (Some(v), Some(t)) => Ok((v, t)),
                _ => bail!(UsageError(format!(
                    "its attention heads are not recorded, and its widths {vision_width} and {text_width} are not both multiples of {HEAD_WIDTH} (the code that writes this layout gives width / {HEAD_WIDTH} heads): put its run's configs.yaml with `vision_heads` and `transformer_heads` beside it"
                ))),
            }
        }
        (None, Format::Ccma | Format::HuggingFace) if (vision_width, text_width) == (768, 512) => {
            Ok((12, 8))
        }
        (None, format) => {
            let file = match format {
                Format::HuggingFace => "the model's config.json",
                Format::Ccma | Format::OpenAi | Format::TorchSave => {
                    "its run's configs.yaml with `vision_heads` and `transformer_heads`"
                }
            };
            bail!(UsageError(format!(
                "its attention heads are not recorded (only CLIP ViT-B/16's widths 768 and 512 imply theirs; these are {vision_width} and {text_width}): put {file} beside it"
            )))
        }
    }
}

/// The encoder sizes a set of CLIP weights implies (as OpenAI's `build_model` reads them); the
/// input image size and stride come from the run config.
pub fn clip_config(w: &Weights, image_size: (i64, i64), stride: i64) -> Result<ClipConfig> {
    let named = &w.tensors;
    let conv = dims(named, "base_model.visual.conv1.weight", 4)?;
    let text_width = dims(named, "base_model.ln_final.weight", 1)?[0];
    let vision_width = conv[0];
    let (vision_heads, text_heads) = heads(w, vision_width, text_width)?;
    let layers = |prefix| blocks(named, prefix).unwrap_or(0);
    Ok(ClipConfig {
        embed_dim: dims(named, "base_model.text_projection", 2)?[1],
        image_size,
        vision_width,
        vision_layers: layers("base_model.visual.transformer.resblocks."),
        vision_heads,
        patch_size: conv[3],
        stride,
        context_length: dims(named, "base_model.positional_embedding", 2)?[0],
        vocab_size: dims(named, "base_model.token_embedding.weight", 2)?[0],
        text_width,
        text_heads,
        text_layers: layers("base_model.transformer.resblocks."),
    })
}

/// DCA's heads when `w` has DCA blocks: the width `embed_dim` over the width of a head, which
/// each block's λ vectors have (`dca_image.0.lambda_q1` [embed_dim / heads]).
fn dca_heads(w: &Weights, embed_dim: i64) -> Result<Option<i64>> {
    const KEY: &str = "dca_image.0.lambda_q1";
    if !w.tensors.contains_key(KEY) {
        return Ok(None);
    }
    let d = dims(&w.tensors, KEY, 1)?[0];
    if d <= 0 || embed_dim % d != 0 {
        bail!(UsageError(format!(
            "key `{KEY}` has {d} elements: expected a divisor of the width {embed_dim} (the width of one DCA head)"
        )));
    }
    Ok(Some(embed_dim / d))
}

/// `base` with the sizes that `w` fixes (the CLIP encoders; the cross-modal and DCA depths, DCA's
/// heads and the number of identities when the weights have those modules), validated as the YAML keys are.
pub fn model_config(w: &Weights, base: ModelConfig) -> Result<ModelConfig> {
    let clip = clip_config(w, base.clip.image_size, base.clip.stride)?;
    let dca_heads = dca_heads(w, clip.embed_dim)?.unwrap_or(base.dca_heads);
    let classes = match w.tensors.contains_key("classifier.weight") {
        true => dims(&w.tensors, "classifier.weight", 2)?[0],
        false => base.num_classes,
    };
    let tse_prefix = super::Module::TseImage.prefix();
    let c = ModelConfig {
        tse: base.tse || w.tensors.keys().any(|k| k.starts_with(&tse_prefix)),
        clip,
        cmt_depth: blocks(&w.tensors, "cross_modal_transformer.resblocks.")
            .unwrap_or(base.cmt_depth),
        dca_depth: blocks(&w.tensors, "dca_image.").unwrap_or(base.dca_depth),
        dca_heads,
        num_classes: classes,
        ..base
    };
    c.validate()?;
    Ok(c)
}

/// Checks a checkpoint's own description of its model `c` against what its tensors imply,
/// before a model of that size is built.
pub fn check_description(w: &Weights, c: &ModelConfig) -> Result<()> {
    c.validate()?;
    let s = model_config(w, c.clone())?;
    let (a, b) = (&c.clip, &s.clip);
    let pairs = [
        ("embed_dim", a.embed_dim, b.embed_dim),
        ("vision_width", a.vision_width, b.vision_width),
        ("vision_layers", a.vision_layers, b.vision_layers),
        ("vision_patch_size", a.patch_size, b.patch_size),
        ("text_length", a.context_length, b.context_length),
        ("vocab_size", a.vocab_size, b.vocab_size),
        ("transformer_width", a.text_width, b.text_width),
        ("transformer_layers", a.text_layers, b.text_layers),
        ("cmt_depth", c.cmt_depth, s.cmt_depth),
        ("dca_depth", c.dca_depth, s.dca_depth),
        ("dca_heads", c.dca_heads, s.dca_heads),
        ("num_classes", c.num_classes, s.num_classes),
        ("tse", c.tse as i64, s.tse as i64),
    ];
    match pairs.iter().find(|(_, x, y)| x != y) {
        Some((key, x, y)) => bail!(UsageError(format!(
            "its description says `{key}` {x}, its tensors {y}"
        ))),
        None => Ok(()),
    }
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
/// when its shape differs. Errors are usage errors naming the key and both shapes.
pub fn copy_into(
    vs: &mut VarStore,
    named: &Named,
    may_be_missing: &[&str],
    may_be_extra: &[&str],
    grid: (i64, i64),
    source: &Path,
) -> Result<()> {
    copy_checked(vs, named, may_be_missing, may_be_extra, grid, source)
        .map_err(|e| UsageError(format!("{e:#}")).into())
}

fn copy_checked(
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
