//! `ccma search`: rank a gallery of images against a sentence, print the top results and draw a
//! contact sheet. Gallery features are cached beside the gallery, keyed by the model and by every
//! file's name, size and modification time, so later queries only encode the sentence; a cache
//! whose key no longer matches is rebuilt, never used.
use crate::eval::evaluator::{embed_captions, embed_images, EmbedOptions};
use crate::model::Inference;
use crate::report::sheet::{self, SheetItem};
use crate::train::checkpoint;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

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

/// 64-bit FNV-1a: a stable fingerprint for cache keys.
fn fnv1a(bytes: impl IntoIterator<Item = u8>, mut h: u64) -> u64 {
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Fingerprint of files by name, size and modification time.
fn files_fingerprint(files: &[PathBuf]) -> Result<u64> {
    let mut h = 0xcbf2_9ce4_8422_2325;
    for f in files {
        let meta = std::fs::metadata(f).with_context(|| format!("cannot read {}", f.display()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        let line = format!(
            "{}\0{}\0{}\n",
            f.display(),
            meta.len(),
            mtime.map_or(0, |d| d.as_nanos())
        );
        h = fnv1a(line.into_bytes(), h);
    }
    Ok(h)
}

/// A gallery: its image files and their features [N, D] f32 on the CPU.
pub struct Gallery {
    pub files: Vec<PathBuf>,
    pub features: Tensor,
}

/// The gallery of `dir` embedded by `model`, from the cache when it is still valid.
pub fn gallery_from_dir(dir: &Path, model: &Inference, opts: &EmbedOptions) -> Result<Gallery> {
    let files = list_images(dir)?;
    if files.is_empty() {
        bail!(crate::UsageError(format!(
            "gallery folder {} holds no jpg/jpeg/png images",
            dir.display()
        )));
    }
    let key = format!(
        "{:016x}",
        fnv1a(model.fingerprint.bytes(), files_fingerprint(&files)?)
    );
    let cache = dir.join(".ccma-cache").join("gallery.safetensors");
    if let Ok((tensors, meta)) = checkpoint::load(&cache) {
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
    let features = embed_images(&model.model, &files, opts)?;
    std::fs::create_dir_all(cache.parent().expect("has a parent"))
        .with_context(|| format!("cannot create {}", cache.display()))?;
    let meta = HashMap::from([("key".to_string(), key)]);
    if let Err(e) = checkpoint::save(
        &cache,
        &[("image_features".into(), features.shallow_clone())],
        &meta,
    ) {
        tracing::warn!("gallery cache not written: {e:#}");
    }
    Ok(Gallery { files, features })
}

/// A gallery from an embeddings file written by `ccma embed` (its image paths are in the metadata).
pub fn gallery_from_embeddings(path: &Path) -> Result<Gallery> {
    let (tensors, meta) = checkpoint::load(path)?;
    let features = tensors
        .into_iter()
        .find(|(k, _)| k == "image_features")
        .map(|(_, t)| t)
        .with_context(|| format!("{} has no `image_features` tensor", path.display()))?;
    let files: Vec<PathBuf> = meta
        .get("images")
        .map(|s| serde_json::from_str(s))
        .transpose()
        .with_context(|| {
            format!(
                "{}: metadata `images` is not a JSON list of paths",
                path.display()
            )
        })?
        .with_context(|| {
            format!(
                "{} has no `images` metadata (write it with `ccma embed --image-dir`)",
                path.display()
            )
        })?;
    if files.len() as i64 != features.size()[0] {
        bail!(
            "{}: {} image paths for {} feature rows",
            path.display(),
            files.len(),
            features.size()[0]
        );
    }
    Ok(Gallery { files, features })
}

/// The `k` best gallery entries for text features `query` [1, D]: (index, cosine similarity).
pub fn top_k(gallery: &Tensor, query: &Tensor, k: usize) -> Vec<(usize, f64)> {
    let norm = |t: &Tensor| {
        let t = t.to_kind(Kind::Float);
        &t / t.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12)
    };
    let scores = norm(gallery)
        .matmul(&norm(query).to_device(gallery.device()).tr())
        .squeeze_dim(1);
    let k = k.min(scores.size()[0] as usize) as i64;
    let (values, indices) = scores.topk(k, 0, true, true);
    let values: Vec<f64> = Vec::<f64>::try_from(values.to_kind(Kind::Double)).unwrap_or_default();
    let indices: Vec<i64> = Vec::<i64>::try_from(indices).unwrap_or_default();
    indices
        .into_iter()
        .map(|i| i as usize)
        .zip(values)
        .collect()
}

/// `ccma search`.
pub fn run_cli(args: &crate::cli::SearchArgs) -> Result<()> {
    let device = crate::device::parse(&args.device)?;
    let model = crate::model::load_inference(
        args.checkpoint.as_deref(),
        args.pretrained.as_deref(),
        None,
        device,
    )?;
    let opts = EmbedOptions::from_config(&model.config, device);
    let gallery = if args.gallery.is_dir() {
        gallery_from_dir(&args.gallery, &model, &opts)?
    } else if args.gallery.is_file() {
        gallery_from_embeddings(&args.gallery)?
    } else {
        bail!(crate::UsageError(format!(
            "gallery {} is neither a folder nor a file",
            args.gallery.display()
        )));
    };
    let query = embed_captions(&model.model, std::slice::from_ref(&args.query), &opts)?;
    let hits = top_k(&gallery.features, &query.to_device(Device::Cpu), args.top_k);
    let mut table = prettytable::Table::new();
    table.set_titles(prettytable::row!["rank", "score", "image"]);
    for (rank, (i, s)) in hits.iter().enumerate() {
        table.add_row(prettytable::row![
            rank + 1,
            format!("{s:.4}"),
            gallery.files[*i].display()
        ]);
    }
    println!("{}", args.query);
    table.printstd();
    if let Some(out) = &args.out {
        let items: Vec<SheetItem> = hits
            .iter()
            .map(|&(i, s)| SheetItem {
                path: gallery.files[i].clone(),
                score: s,
                matched: None,
            })
            .collect();
        sheet::write(out, &args.query, None, &items)?;
        tracing::info!("wrote {}", out.display());
    }
    Ok(())
}
