//! A searchable gallery: a folder of images embedded by a model, or a feature file.
//!
//! A folder's features are cached in `.ccma-cache/` inside it, keyed by the model and by every
//! file's name, size and modification time, so later queries only encode the sentence; a cache
//! whose key no longer matches is rebuilt, never used.
use super::encode::{embed_images, EncodeOptions};
use super::features::{FeatureFile, Side};
use crate::io::fingerprint;
use crate::io::safetensors;
use crate::model::Ccma;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Every image file under `dir` (recursively), sorted by path.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot read folder {}", d.display()))?
        {
            let path = entry
                .with_context(|| format!("cannot read folder {}", d.display()))?
                .path();
            if path.is_dir() {
                if !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| {
                IMAGE_EXTENSIONS.contains(&e.to_string_lossy().to_lowercase().as_str())
            }) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A gallery: its image files and their features [N, D] f32 on the CPU.
pub struct Gallery {
    pub files: Vec<PathBuf>,
    pub features: Tensor,
}

/// The gallery of `dir` embedded by `model` (whose weights `model_fingerprint` identifies), from
/// the cache when it is still valid.
pub fn from_dir(
    dir: &Path,
    model: &Ccma,
    model_fingerprint: &str,
    opts: &EncodeOptions,
) -> Result<Gallery> {
    let files = list_images(dir)?;
    if files.is_empty() {
        bail!(crate::UsageError(format!(
            "gallery folder {} holds no jpg/jpeg/png images",
            dir.display()
        )));
    }
    let key = format!(
        "{:016x}",
        fingerprint::fnv1a(model_fingerprint.bytes(), fingerprint::files(&files)?)
    );
    let cache = dir.join(".ccma-cache").join("gallery.safetensors");
    if let Ok((tensors, meta)) = safetensors::load(&cache) {
        if meta.get("key") == Some(&key) {
            if let Some((_, f)) = tensors.into_iter().find(|(k, _)| k == "image_features") {
                tracing::info!("gallery features from {}", cache.display());
                return Ok(Gallery { files, features: f });
            }
        }
        tracing::info!(
            "gallery cache {} is stale (files or model changed): re-embedding",
            cache.display()
        );
    }
    tracing::info!("embedding {} gallery images", files.len());
    let features = embed_images(model, &files, opts)?;
    std::fs::create_dir_all(cache.parent().expect("has a parent"))
        .with_context(|| format!("cannot create {}", cache.display()))?;
    let meta = HashMap::from([("key".to_string(), key)]);
    if let Err(e) = safetensors::save(
        &cache,
        &[("image_features".into(), features.shallow_clone())],
        &meta,
    ) {
        tracing::warn!("gallery cache not written: {e:#}");
    }
    Ok(Gallery { files, features })
}

/// A gallery from a feature file (see [`super::features`]) that stores its image paths.
pub fn from_feature_file(path: &Path) -> Result<Gallery> {
    let read = FeatureFile::read_set(path, Side::Image)?;
    if read.paths.is_empty() {
        bail!(crate::UsageError(format!(
            "{} has no `images` metadata naming the image of each row (`ccma embed` writes it for features of image files)",
            path.display()
        )));
    }
    Ok(Gallery {
        files: read.paths,
        features: read.set.features,
    })
}
