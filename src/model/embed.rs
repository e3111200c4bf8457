//! `ccma embed`: global features of image files and captions, written as safetensors.
use crate::eval::evaluator::{embed_captions, embed_images, EmbedOptions};
use crate::train::checkpoint;
use crate::UsageError;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;

/// Writes `image_features` [Ni, D] and `text_features` [Nt, D] (f32, before normalisation, in
/// input order) to `--out`, with the image paths as JSON in the metadata key `images`.
pub fn run(args: &crate::cli::EmbedArgs) -> Result<()> {
    let device = crate::device::parse(&args.device)?;
    let mut images = args.images.clone();
    if let Some(dir) = &args.image_dir {
        images.extend(crate::search::list_images(dir)?);
    }
    let captions: Vec<String> = match &args.captions {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read captions file {}", p.display()))?
            .lines()
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    if images.is_empty() && captions.is_empty() {
        bail!(UsageError(
            "nothing to embed: give --images, --image-dir or --captions".into()
        ));
    }
    let img_size = match &args.img_size {
        Some(s) => {
            let parsed = s
                .split_once('x')
                .and_then(|(h, w)| Some((h.parse().ok()?, w.parse().ok()?)));
            Some(parsed.ok_or_else(|| {
                UsageError(format!("--img-size {s:?}: expected HxW, e.g. 384x128"))
            })?)
        }
        None => None,
    };
    let model = crate::model::load_inference(
        args.checkpoint.as_deref(),
        args.pretrained.as_deref(),
        img_size,
        device,
    )?;
    let mut opts = EmbedOptions::from_config(&model.config, device);
    opts.batch_size = args.batch_size;
    let mut tensors = Vec::new();
    if !images.is_empty() {
        tensors.push((
            "image_features".to_string(),
            embed_images(&model.model, &images, &opts)?,
        ));
    }
    if !captions.is_empty() {
        tensors.push((
            "text_features".to_string(),
            embed_captions(&model.model, &captions, &opts)?,
        ));
    }
    let paths: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
    let meta = HashMap::from([("images".to_string(), serde_json::to_string(&paths)?)]);
    checkpoint::save(&args.out, &tensors, &meta)?;
    tracing::info!(
        "wrote {} images and {} captions to {}",
        images.len(),
        captions.len(),
        args.out.display()
    );
    Ok(())
}

/// `ccma embed`.
pub fn run_cli(args: &crate::cli::EmbedArgs) -> Result<()> {
    run(args)
}
