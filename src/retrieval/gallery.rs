//! A searchable gallery: a folder of images embedded by a model, or a feature file.
//!
//! A folder's features are cached in `.ccma-cache/` inside it, keyed by the model and by every
//! file's name, size and modification time, so later queries only encode the sentence; a cache
//! whose key no longer matches is rebuilt, never used.
use super::encode::{embed_readable_images, EncodeOptions};
use super::features::{FeatureFile, Side};
use crate::io::fingerprint;
use crate::io::safetensors;
use crate::model::Ccma;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// The file extensions (lower case) of gallery images.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

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

/// Where the cache of gallery `dir` may live: inside it, else in the user's cache folder
/// (`$XDG_CACHE_HOME/ccma/galleries/`, or `~/.cache/...`), keyed by the gallery's absolute path.
fn cache_places(dir: &Path) -> Vec<PathBuf> {
    let mut places = vec![dir.join(".ccma-cache").join("gallery.safetensors")];
    let user = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(user) = user {
        let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let id = fingerprint::fnv1a(abs.to_string_lossy().bytes(), fingerprint::FNV_START);
        places.push(
            user.join("ccma")
                .join("galleries")
                .join(format!("{id:016x}.safetensors")),
        );
    }
    places
}

/// Cached features with the key `key`: [N', D] and the indices of the files they belong to.
fn read_cache(path: &Path, key: &str) -> Option<(Tensor, Vec<usize>)> {
    let (tensors, meta) = safetensors::load(path).ok()?;
    if meta.get("key").map(String::as_str) != Some(key) {
        tracing::info!(
            "gallery cache {} is stale (files or model changed)",
            path.display()
        );
        return None;
    }
    let kept: Vec<usize> = serde_json::from_str(meta.get("kept")?).ok()?;
    let (_, f) = tensors.into_iter().find(|(k, _)| k == "image_features")?;
    (f.size()[0] as usize == kept.len()).then_some((f, kept))
}

/// Writes the cache to the first place that takes it; none is only a warning.
fn write_cache(places: &[PathBuf], key: &str, features: &Tensor, kept: &[usize]) {
    let meta = HashMap::from([
        ("key".to_string(), key.to_string()),
        (
            "kept".to_string(),
            serde_json::to_string(kept).expect("indices serialise"),
        ),
    ]);
    for place in places {
        let written = place
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                safetensors::save(
                    place,
                    &[("image_features".into(), features.shallow_clone())],
                    &meta,
                )
            });
        match written {
            Ok(()) => return tracing::info!("gallery features cached in {}", place.display()),
            Err(e) => tracing::warn!("gallery cache not written to {}: {e:#}", place.display()),
        }
    }
    tracing::warn!("running without a gallery cache: the next search embeds the gallery again");
}

/// The gallery of `dir` embedded by `model` (whose weights `model_fingerprint` identifies), from
/// a cache when one is still valid. An image that cannot be read is left out with a warning
/// naming it, and counted.
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
    let places = cache_places(dir);
    let cached = places.iter().find_map(|p| Some((p, read_cache(p, &key)?)));
    let (features, kept) = match cached {
        Some((place, hit)) => {
            tracing::info!("gallery features from {}", place.display());
            hit
        }
        None => {
            tracing::info!("embedding {} gallery images", files.len());
            let (features, unreadable) = embed_readable_images(model, &files, opts)?;
            for (i, e) in &unreadable {
                tracing::warn!("skipped {}: {e:#}", files[*i].display());
            }
            if !unreadable.is_empty() {
                tracing::warn!(
                    "{} of {} gallery images could not be read and are left out",
                    unreadable.len(),
                    files.len()
                );
            }
            let kept: Vec<usize> = (0..files.len())
                .filter(|i| !unreadable.iter().any(|(u, _)| u == i))
                .collect();
            write_cache(&places, &key, &features, &kept);
            (features, kept)
        }
    };
    if kept.is_empty() {
        bail!(crate::UsageError(format!(
            "no image in gallery folder {} could be read",
            dir.display()
        )));
    }
    let files = kept.iter().map(|&i| files[i].clone()).collect();
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

/// The gallery at `path` for `model` (whose weights `model_fingerprint` identifies): a folder of
/// images (see [`from_dir`]) or a feature file (see [`from_feature_file`]) whose features are as
/// wide as the model's.
pub fn open(
    path: &Path,
    model: &Ccma,
    model_fingerprint: &str,
    opts: &EncodeOptions,
) -> Result<Gallery> {
    let gallery = if path.is_dir() {
        from_dir(path, model, model_fingerprint, opts)?
    } else if path.is_file() {
        from_feature_file(path)?
    } else {
        bail!(crate::UsageError(format!(
            "gallery {} is neither a folder nor a file",
            path.display()
        )));
    };
    let width = model.config.clip.embed_dim;
    if gallery.features.size()[1] != width {
        bail!(crate::UsageError(format!(
            "gallery {} has {}-wide features, but the model's are {width}-wide (embed the gallery with this model)",
            path.display(),
            gallery.features.size()[1]
        )));
    }
    Ok(gallery)
}
