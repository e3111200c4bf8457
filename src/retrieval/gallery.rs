//! A searchable gallery: a folder of images embedded by a model, or a feature file.
//!
//! A folder's images are its regular files named `*.jpg`, `*.jpeg` or `*.png`, each real file
//! once (see [`list_images`]). Their features are cached in `.ccma-cache/` inside it (else in the
//! user's cache folder), keyed by the model and by every file's path, size and modification time,
//! so later queries only encode the sentence. A cache is used only when it is valid for this
//! gallery and model (see [`read_cache`]); a stale or invalid one is rebuilt, never used.
use super::encode::{embed_readable_images, EncodeOptions};
use super::features::{non_finite, require_finite_output, FeatureFile, Side};
use super::similarity::{width, Embedded};
use crate::config::Similarity;
use crate::io::escape::shown;
use crate::io::fingerprint;
use crate::io::regular_file::irregular_kind;
use crate::io::safetensors;
use crate::model::Ccma;
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The file extensions (lower case) of gallery images.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

fn is_image_name(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_string_lossy().to_lowercase().as_str()))
}

/// A file's identity on its machine: (device, inode).
fn file_id(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// The images of gallery folder `dir`, sorted by path: every regular file named `*.jpg`,
/// `*.jpeg` or `*.png` in it and its sub-folders (hidden folders skipped).
///
/// Links are followed while they lead to a place inside `dir` (whose own path may be a link).
/// Each real file (device and inode) is listed once and each real folder walked once, so links to
/// `.` or to a parent neither loop nor repeat a file; a file's path is the one without links when
/// it has one. Left out with a warning naming them: entries named like images that are not
/// regular files (a FIFO, a device, a socket, a broken link), links that lead out of `dir`, and
/// sub-folders that cannot be read. Nothing is opened, so nothing here can block.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let cant_read = || format!("cannot read gallery folder {}", dir.display());
    let root = dir.canonicalize().with_context(cant_read)?;
    let root_id = file_id(&std::fs::metadata(&root).with_context(cant_read)?);
    let mut walk = Walk {
        dir,
        root,
        walked: HashSet::from([root_id]),
        listed: HashSet::new(),
        found: Vec::new(),
        folders: Vec::new(),
        links: Vec::new(),
    };
    let entries = std::fs::read_dir(dir).and_then(|d| d.collect::<Result<Vec<_>, _>>());
    walk.take_in(entries.with_context(cant_read)?);
    // Every folder reached without a link first, then what the links lead to (and so on).
    loop {
        while let Some(folder) = walk.folders.pop() {
            match std::fs::read_dir(&folder).and_then(|d| d.collect::<Result<Vec<_>, _>>()) {
                Ok(entries) => walk.take_in(entries),
                Err(e) => tracing::warn!("left out folder {}: {e}", shown(&folder)),
            }
        }
        if walk.links.is_empty() {
            break;
        }
        let mut links = std::mem::take(&mut walk.links);
        links.sort();
        for link in links.into_iter().rev() {
            walk.consider(link, true);
        }
    }
    let mut found = walk.found;
    found.sort();
    Ok(found)
}

/// The state of [`list_images`]' walk.
struct Walk<'a> {
    dir: &'a Path,
    /// `dir` with links resolved.
    root: PathBuf,
    /// The identities of the folders walked or to be walked, and of the files found.
    walked: HashSet<(u64, u64)>,
    listed: HashSet<(u64, u64)>,
    found: Vec<PathBuf>,
    /// Folders still to walk (the last is next), and links still to follow.
    folders: Vec<PathBuf>,
    links: Vec<PathBuf>,
}

impl Walk<'_> {
    /// The entries of one folder: links are set aside for later, the rest considered in sorted
    /// order (sub-folders walked in that order, depth first).
    fn take_in(&mut self, entries: Vec<std::fs::DirEntry>) {
        let mut paths: Vec<PathBuf> = Vec::with_capacity(entries.len());
        for e in entries {
            match e.file_type() {
                Ok(t) if t.is_symlink() => self.links.push(e.path()),
                _ => paths.push(e.path()),
            }
        }
        paths.sort();
        let before = self.folders.len();
        for path in paths {
            self.consider(path, false);
        }
        self.folders[before..].reverse();
    }

    /// One entry: a folder to walk, an image to list, or something to leave out.
    fn consider(&mut self, path: PathBuf, link: bool) {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        let image = is_image_name(&path);
        if hidden && !image {
            return;
        }
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                if image {
                    tracing::warn!("left out {}: {e}", shown(&path));
                }
                return;
            }
        };
        if !(meta.is_dir() || image) {
            return;
        }
        if link
            && !path
                .canonicalize()
                .is_ok_and(|real| real.starts_with(&self.root))
        {
            return tracing::warn!(
                "left out {}: a link leading out of the gallery folder {}",
                shown(&path),
                self.dir.display()
            );
        }
        if meta.is_dir() {
            if !hidden && self.walked.insert(file_id(&meta)) {
                self.folders.push(path);
            }
        } else if !meta.is_file() {
            tracing::warn!(
                "left out {}: {}, not a regular file",
                shown(&path),
                irregular_kind(meta.file_type())
            );
        } else if self.listed.insert(file_id(&meta)) {
            self.found.push(path);
        }
    }
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

/// What a cache must match to be used for a gallery.
struct CacheSpec<'a> {
    /// The fingerprint of the model and of every file (path, size, modification time).
    key: &'a str,
    /// The gallery's files, relative to its folder, in order.
    names: &'a [String],
    /// The model's feature width.
    width: i64,
}

impl CacheSpec<'_> {
    /// The most bytes a cache for these files can take: every row, every name JSON-escaped, the
    /// indices, and room for the rest of the header.
    fn max_bytes(&self) -> u64 {
        let names: usize = self.names.iter().map(|n| 6 * n.len() + 24).sum();
        (1 << 20) + names as u64 + self.names.len() as u64 * 4 * self.width.max(0) as u64
    }
}

/// The cached features [N', D] f32 in `path` and the indices of the files they belong to, when
/// `path` holds a valid cache for `spec`; a stale one is noted, an invalid one is warned about
/// (see [`check_cache`]), and neither is used.
fn read_cache(path: &Path, spec: &CacheSpec) -> Option<(Tensor, Vec<usize>)> {
    let meta = std::fs::metadata(path).ok()?;
    match check_cache(path, &meta, spec) {
        Ok(Some(hit)) => Some(hit),
        Ok(None) => {
            tracing::info!(
                "gallery cache {} is stale (files or model changed)",
                path.display()
            );
            None
        }
        Err(why) => {
            tracing::warn!(
                "ignoring gallery cache {}: {why}; the gallery is embedded again",
                path.display()
            );
            None
        }
    }
}

/// Reads and checks the cache at `path` (whose metadata is `meta`): `None` when it was written
/// for other files or another model; an error saying what is wrong unless it is a regular file
/// no larger than [`CacheSpec::max_bytes`], listing the gallery's files, with strictly increasing
/// indices into them and one finite f32 row of the model's width per index.
fn check_cache(
    path: &Path,
    meta: &Metadata,
    spec: &CacheSpec,
) -> Result<Option<(Tensor, Vec<usize>)>, String> {
    if !meta.is_file() {
        return Err(format!(
            "{}, not a regular file",
            irregular_kind(meta.file_type())
        ));
    }
    if meta.len() > spec.max_bytes() {
        return Err(format!(
            "{} bytes, more than a cache of {} images can be",
            meta.len(),
            spec.names.len()
        ));
    }
    let (tensors, meta) = safetensors::load(path).map_err(|e| format!("{e:#}"))?;
    if meta.get("key").map(String::as_str) != Some(spec.key) {
        return Ok(None);
    }
    let list = |key: &str| meta.get(key).ok_or(format!("no metadata `{key}`"));
    let names: Vec<String> = serde_json::from_str(list("files")?)
        .map_err(|_| "metadata `files` is not a JSON list of file names".to_string())?;
    if names != spec.names {
        return Err("its file list is not the gallery's".into());
    }
    let kept: Vec<usize> = serde_json::from_str(list("kept")?)
        .map_err(|_| "metadata `kept` is not a JSON list of indices".to_string())?;
    if kept.windows(2).any(|w| w[0] >= w[1]) {
        return Err("the indices in `kept` are not strictly increasing".into());
    }
    if let Some(&i) = kept.last().filter(|&&i| i >= names.len()) {
        return Err(format!(
            "index {i} in `kept` is out of range for {} files",
            names.len()
        ));
    }
    let Some((_, f)) = tensors.into_iter().find(|(k, _)| k == "image_features") else {
        return Err("no tensor `image_features`".into());
    };
    let want = [kept.len() as i64, spec.width];
    if f.kind() != Kind::Float || f.size() != want {
        return Err(format!(
            "tensor `image_features` is {:?} {:?}, expected f32 {want:?}",
            f.kind(),
            f.size()
        ));
    }
    let bad = non_finite(&f);
    if bad > 0 {
        return Err(format!(
            "tensor `image_features` has {bad} NaN or infinite values"
        ));
    }
    Ok(Some((f, kept)))
}

/// Writes the cache to the first place that takes it; none is only a warning.
fn write_cache(places: &[PathBuf], spec: &CacheSpec, features: &Tensor, kept: &[usize]) {
    let meta = HashMap::from([
        ("key".to_string(), spec.key.to_string()),
        (
            "files".to_string(),
            serde_json::to_string(spec.names).expect("names serialise"),
        ),
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

/// The gallery of `dir` (see [`list_images`]) embedded by `model` (whose weights `weights` are,
/// and `model_fingerprint` identifies), from a cache when one is valid. An image that cannot be
/// read is left out with a warning naming it, and counted; features that are not finite are an
/// error naming the weights.
pub fn from_dir(
    dir: &Path,
    model: &Ccma,
    weights: &Path,
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
    // The compared features depend on the similarity too (a BGE-only cache keeps its key).
    let model_key = match opts.similarity {
        Similarity::Bge => model_fingerprint.to_string(),
        s => format!("{model_fingerprint} {s}"),
    };
    let key = format!(
        "{:016x}",
        fingerprint::fnv1a(model_key.bytes(), fingerprint::files(&files)?)
    );
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(dir)
                .unwrap_or(f)
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let spec = CacheSpec {
        key: &key,
        names: &names,
        width: width(opts.similarity, model.config.clip.embed_dim),
    };
    let places = cache_places(dir);
    let cached = places.iter().find_map(|p| Some((p, read_cache(p, &spec)?)));
    let (features, kept) = match cached {
        Some((place, hit)) => {
            tracing::info!("gallery features from {}", place.display());
            hit
        }
        None => {
            tracing::info!("embedding {} gallery images", files.len());
            let (features, unreadable) = embed_readable_images(model, &files, opts)?;
            for (i, e) in &unreadable {
                tracing::warn!("skipped {}: {e:#}", shown(&files[*i]));
            }
            if !unreadable.is_empty() {
                tracing::warn!(
                    "{} of {} gallery images could not be read and are left out",
                    unreadable.len(),
                    files.len()
                );
            }
            if unreadable.len() == files.len() {
                bail!(crate::UsageError(format!(
                    "no image in gallery folder {} could be read",
                    dir.display()
                )));
            }
            let on = format!("gallery folder {}", dir.display());
            require_finite_output(&[&features], weights, &on)?;
            let left_out: HashSet<usize> = unreadable.iter().map(|(i, _)| *i).collect();
            let kept: Vec<usize> = (0..files.len()).filter(|i| !left_out.contains(i)).collect();
            write_cache(&places, &spec, &features, &kept);
            (features, kept)
        }
    };
    let files = kept.iter().map(|&i| files[i].clone()).collect();
    Ok(Gallery { files, features })
}

/// A gallery from a feature file (see [`super::features`]) that stores its image paths: the
/// features `similarity` compares.
pub fn from_feature_file(path: &Path, similarity: Similarity) -> Result<Gallery> {
    let read = FeatureFile::read_set(path, Side::Image)?;
    if similarity.needs_tse() && read.set.tse_features.is_none() {
        bail!(crate::UsageError(format!(
            "{} has no `image_tse_features`, which similarity {similarity} compares (embed the gallery with a model with TSE, or set similarity: bge)",
            path.display()
        )));
    }
    if read.paths.is_empty() {
        bail!(crate::UsageError(format!(
            "{} has no `images` metadata naming the image of each row (`ccma embed` writes it for features of image files)",
            path.display()
        )));
    }
    let embedded = Embedded {
        bge: read.set.features,
        tse: read.set.tse_features,
    };
    Ok(Gallery {
        files: read.paths,
        features: embedded.compared(similarity),
    })
}

/// The gallery at `path` for `model` (read from `weights`, which `model_fingerprint` identifies):
/// a folder of images (see [`from_dir`]) or a feature file (see [`from_feature_file`]) whose features are as
/// wide as the model's.
pub fn open(
    path: &Path,
    model: &Ccma,
    weights: &Path,
    model_fingerprint: &str,
    opts: &EncodeOptions,
) -> Result<Gallery> {
    let gallery = if path.is_dir() {
        from_dir(path, model, weights, model_fingerprint, opts)?
    } else if path.is_file() {
        from_feature_file(path, opts.similarity)?
    } else {
        bail!(crate::UsageError(format!(
            "gallery {} is neither a folder nor a file",
            path.display()
        )));
    };
    let width = width(opts.similarity, model.config.clip.embed_dim);
    if gallery.features.size()[1] != width {
        bail!(crate::UsageError(format!(
            "gallery {} has {}-wide features, but the model's are {width}-wide (embed the gallery with this model)",
            path.display(),
            gallery.features.size()[1]
        )));
    }
    Ok(gallery)
}
