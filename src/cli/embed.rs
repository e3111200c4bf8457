//! `ccma embed`: global features of image files and captions (and their TSE features, for a
//! model with RDE's TSE layers), written as a feature file.
use super::args::{parse_img_size, DeviceArg, WeightsArgs};
use crate::io::output_path::{self, Existing};
use crate::retrieval::encode::{embed_caption_parts, embed_readable_image_parts};
use crate::retrieval::features::{require_finite_output, FeatureFile, FeatureSet};
use crate::retrieval::similarity::Embedded;
use crate::UsageError;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Embed images and/or captions into a feature file.
///
/// Global features, written as a feature file (see `ccma rank`).
#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// Image files to embed, in this order.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub images: Vec<PathBuf>,
    /// Embed every image (jpg, jpeg, png) in this folder, sorted by path.
    #[arg(long, value_name = "DIR")]
    pub image_dir: Option<PathBuf>,
    /// Captions to embed, one per line.
    #[arg(long, value_name = "FILE")]
    pub captions: Option<PathBuf>,
    /// Output safetensors: `image_features` [Ni, D] and `text_features` [Nt, D] (f32), and for a
    /// model with TSE `image_tse_features` [Ni, 2D] and `text_tse_features` [Nt, 2D]; image paths
    /// in the metadata. Never one of the inputs; an existing file only with --force.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
    /// Image size as HxW (default: the run's, else 384x128).
    #[arg(long, value_name = "HxW", value_parser = parse_img_size)]
    pub img_size: Option<(i64, i64)>,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Images or captions per forward pass.
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub batch_size: u64,
}

pub fn run(a: EmbedArgs) -> Result<()> {
    let mut images = a.images.clone();
    if let Some(dir) = &a.image_dir {
        images.extend(crate::retrieval::gallery::list_images(dir)?);
    }
    let captions: Vec<String> = match &a.captions {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read captions file {}", p.display()))?
            .lines()
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    if images.is_empty() && captions.is_empty() {
        bail!(UsageError(
            "nothing to embed: give --images, --image-dir or --captions".into(),
        ));
    }
    let mut inputs = a.weights.inputs();
    inputs.extend(images.iter().cloned());
    inputs.extend(a.image_dir.iter().chain(&a.captions).cloned());
    output_path::check(&a.out, &inputs, Existing::allowed_by(a.force, "--force"))?;
    let device = a.device.resolve()?;
    let (model, opts) = a
        .weights
        .load(a.img_size, Some(a.batch_size as usize), device)?;
    let set = |e: Embedded| FeatureSet {
        features: e.bge,
        tse_features: e.tse,
        pids: None,
    };
    let images_of = |paths| -> Result<Embedded> {
        let (parts, unreadable) = embed_readable_image_parts(&model.model, paths, &opts)?;
        match unreadable.into_iter().next() {
            Some((_, err)) => Err(err),
            None => Ok(parts),
        }
    };
    let file = FeatureFile {
        images: match images.is_empty() {
            true => None,
            false => Some(set(images_of(&images)?)),
        },
        texts: match captions.is_empty() {
            true => None,
            false => Some(set(embed_caption_parts(&model.model, &captions, &opts)?)),
        },
        image_paths: images.clone(),
    };
    let outputs: Vec<&tch::Tensor> = [&file.images, &file.texts]
        .into_iter()
        .flatten()
        .flat_map(|s| std::iter::once(&s.features).chain(&s.tse_features))
        .collect();
    require_finite_output(&outputs, &model.path, "the given images and captions")?;
    file.write(&a.out)?;
    tracing::info!(
        "wrote {} images and {} captions to {}",
        images.len(),
        captions.len(),
        a.out.display()
    );
    Ok(())
}
