//! A dataset's annotations read as its record says (`config::datasets`; the file formats are
//! `formats`), checked and split into training samples and evaluation splits; where each entry's
//! image is.
use super::formats::{self, split_index, Entry};
use crate::config::datasets::{DatasetRecord, Format};
use crate::config::{DatasetName, SplitName};
use crate::io::escape::shown;
use anyhow::{bail, Result};
use rayon::prelude::*;
use std::path::{Component, Path, PathBuf};

/// One training pair: an image and one of its captions.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSample {
    /// Path of the image file (under the dataset's `imgs/`).
    pub image: PathBuf,
    /// Person id in 0..num_classes.
    pub pid: i64,
    /// Index of the image among the training images, in file order.
    pub image_id: i64,
    pub caption: String,
}

/// A test or validation split: the gallery (images) and the queries (captions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalSplit {
    pub image_paths: Vec<PathBuf>,
    pub image_pids: Vec<i64>,
    pub captions: Vec<String>,
    pub caption_pids: Vec<i64>,
}

impl EvalSplit {
    pub fn num_ids(&self) -> usize {
        let mut p = self.image_pids.clone();
        p.sort_unstable();
        p.dedup();
        p.len()
    }
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: DatasetName,
    /// The dataset's folder, e.g. `<root>/<name>`.
    pub dir: PathBuf,
    /// The annotation file read.
    pub annotation: PathBuf,
    /// The `split` values of the entries with how many entries have each, in order of first
    /// appearance (any value other than `train` and `test` is read as validation).
    pub splits: Vec<(String, usize)>,
    pub train: Vec<TrainSample>,
    pub num_classes: usize,
    pub train_images: usize,
    pub val: EvalSplit,
    pub test: EvalSplit,
}

impl Dataset {
    /// The evaluation split `name` (`val`: every entry whose split is neither `train` nor `test`).
    pub fn eval_split(&self, name: SplitName) -> &EvalSplit {
        match name {
            SplitName::Test => &self.test,
            SplitName::Val => &self.val,
        }
    }

    /// Refuses a dataset without entries in one of the `needed` splits (`"train"`, `"test"`, or
    /// `"val"`: any validation split, [`split_index`]), naming the annotation file and the splits
    /// it has with their counts.
    pub fn require_splits(&self, needed: &[&str]) -> Result<()> {
        let has = |name: &&str| {
            self.splits
                .iter()
                .any(|(s, _)| split_index(s) == split_index(name))
        };
        let missing: Vec<String> = needed
            .iter()
            .filter(|n| !has(n))
            .map(|n| format!("{n:?}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let found: Vec<String> = self
            .splits
            .iter()
            .map(|(s, n)| format!("{s:?} {n}"))
            .collect();
        let wanted: Vec<String> = needed.iter().map(|n| format!("{n:?}")).collect();
        bail!(crate::UsageError(format!(
            "{}: no entries with split {} (entries per split found: {}; needed: {})",
            shown(&self.annotation),
            missing.join(" or "),
            found.join(", "),
            wanted.join(" and ")
        )))
    }
}

/// A dataset's annotation file, read and parsed; its entries in file order.
#[derive(Debug, Clone)]
pub struct Annotations {
    pub name: DatasetName,
    /// The dataset's folder.
    pub dir: PathBuf,
    /// The annotation file read.
    pub file: PathBuf,
    pub record: &'static DatasetRecord,
    /// The format of `file`.
    pub format: Format,
    pub entries: Vec<Entry>,
}

impl Annotations {
    /// Finds the annotation file of the dataset folder `dir` (the first of the record's files
    /// present) and reads it in its format.
    pub fn read(name: DatasetName, dir: &Path) -> Result<Annotations> {
        let record = name.record();
        let files: Vec<&str> = record.files.iter().map(|f| f.name).collect();
        if !dir.is_dir() {
            bail!(crate::UsageError(format!(
                "dataset folder {} does not exist (expected {}/{{{}}} and {}/{})",
                dir.display(),
                dir.display(),
                files.join(" or "),
                dir.display(),
                record.imgs
            )));
        }
        let found = record
            .files
            .iter()
            .map(|f| (dir.join(f.name), f.format))
            .find(|(path, _)| path.is_file());
        let Some((file, format)) = found else {
            bail!(crate::UsageError(format!(
                "no annotation file in {}: expected {} (with images under imgs/: {})",
                dir.display(),
                files.join(" or "),
                record.imgs
            )));
        };
        let entries = formats::read(name, &file, format)?;
        Ok(Annotations {
            name,
            dir: dir.to_path_buf(),
            file,
            record,
            format,
            entries,
        })
    }

    /// The image folder, `<dir>/imgs`.
    pub fn imgs(&self) -> PathBuf {
        self.dir.join("imgs")
    }

    /// `<file> entry <i>`, how messages name an entry.
    pub fn at(&self, i: usize) -> String {
        format!("{} entry {i}", shown(&self.file))
    }
}

/// Loads the dataset folder `dir` (`<root>/<name>` for the benchmarks) and checks it: text
/// encoding, annotation entries, captions, train pids, image paths (links resolved) and the
/// existence of every image.
pub fn load(dataset_name: DatasetName, dir: &Path) -> Result<Dataset> {
    let ann = Annotations::read(dataset_name, dir)?;
    let image_key = ann.format.image_key();
    let pid_offset = ann.record.pid_offset;
    let imgs = ann.imgs();
    let mut ds = Dataset {
        name: dataset_name,
        dir: dir.to_path_buf(),
        annotation: ann.file.clone(),
        splits: Vec::new(),
        train: Vec::new(),
        num_classes: 0,
        train_images: 0,
        val: EvalSplit::default(),
        test: EvalSplit::default(),
    };
    for (i, entry) in ann.entries.iter().enumerate() {
        if let Some(m) = caption_fault(&entry.captions) {
            bail!(crate::UsageError(format!("{}: {m}", ann.at(i))));
        }
        let path = image_path(&imgs, &entry.path).map_err(|m| {
            crate::UsageError(format!("{}: {image_key} {:?} {m}", ann.at(i), entry.path))
        })?;
        match ds.splits.iter_mut().find(|(s, _)| *s == entry.split) {
            Some((_, n)) => *n += 1,
            None => ds.splits.push((entry.split.clone(), 1)),
        }
        match entry.split.as_str() {
            "train" => {
                for c in &entry.captions {
                    ds.train.push(TrainSample {
                        image: path.clone(),
                        pid: entry.id - pid_offset,
                        image_id: ds.train_images as i64,
                        caption: c.clone(),
                    });
                }
                ds.train_images += 1;
            }
            split => {
                let s = match split_index(split) {
                    2 => &mut ds.test,
                    _ => &mut ds.val,
                };
                s.image_paths.push(path);
                s.image_pids.push(entry.id);
                for c in &entry.captions {
                    s.captions.push(c.clone());
                    s.caption_pids.push(entry.id);
                }
            }
        }
    }
    let pids = train_pids(&ann);
    if let Some((k, &p)) = pids.iter().enumerate().find(|&(k, &p)| p != k as i64) {
        bail!(crate::UsageError(format!(
            "{}: training pids must be exactly 0..N-1 (after the dataset's offset of {pid_offset}), but the {}-th smallest is {p}",
            shown(&ann.file),
            k + 1
        )));
    }
    ds.num_classes = pids.len();
    if ds.train.is_empty() && ds.test.image_paths.is_empty() {
        bail!(crate::UsageError(format!(
            "{}: no train or test entries",
            shown(&ann.file)
        )));
    }
    check_images(&ann)?;
    Ok(ds)
}

/// The distinct training pids (`id` minus the dataset's offset), sorted; a usable set has
/// exactly `0..N-1`.
pub fn train_pids(ann: &Annotations) -> Vec<i64> {
    let mut pids: Vec<i64> = ann
        .entries
        .iter()
        .filter(|e| e.split == "train")
        .map(|e| e.id - ann.record.pid_offset)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// What is wrong with an entry's captions for training and testing: none, or an empty one.
pub fn caption_fault(captions: &[String]) -> Option<String> {
    if captions.is_empty() {
        return Some("`captions` is empty".into());
    }
    let j = captions.iter().position(|c| c.trim().is_empty())?;
    Some(format!("captions[{j}] is empty"))
}

/// `imgs/` joined with a relative path that stays inside it.
pub fn image_path(imgs: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if p.is_absolute() {
        return Err("is absolute (expected a path relative to imgs/)".into());
    }
    if p.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::Prefix(_) | Component::RootDir
        )
    }) {
        return Err("escapes imgs/ (`..` is not allowed)".into());
    }
    Ok(imgs.join(p))
}

/// Where an entry's image is, found without opening it.
#[derive(Debug, Clone, PartialEq)]
pub enum Place {
    /// A regular file inside `imgs/` (links resolved): its real path.
    File(PathBuf),
    /// Nothing there (or a dangling link).
    Missing,
    /// The path, or a link on it, leads out of `imgs/`: why.
    Outside(String),
    /// Something other than a regular file, e.g. `"a directory"` or `"a FIFO"`.
    NotFile(&'static str),
}

/// Where the image of every entry is ([`Place`]), in entry order; no file is opened.
pub fn locate_images(ann: &Annotations) -> Vec<Place> {
    let imgs = ann.imgs();
    let inside = imgs.canonicalize().unwrap_or_else(|_| imgs.clone());
    ann.entries
        .par_iter()
        .map(|e| locate(&imgs, &inside, &e.path))
        .collect()
}

/// Where the image `rel` (as written) is under `imgs`, whose real path is `inside`.
fn locate(imgs: &Path, inside: &Path, rel: &str) -> Place {
    let path = match image_path(imgs, rel) {
        Ok(p) => p,
        Err(m) => return Place::Outside(m),
    };
    let Ok(real) = path.canonicalize() else {
        return Place::Missing;
    };
    if !real.starts_with(inside) {
        return Place::Outside(format!(
            "leads out of {} through a link: {} resolves to {}",
            shown(imgs),
            shown(&path),
            shown(&real)
        ));
    }
    match std::fs::metadata(&real) {
        Ok(m) if m.is_file() => Place::File(real),
        Ok(m) => Place::NotFile(file_kind(m.file_type())),
        Err(_) => Place::Missing,
    }
}

/// What a non-regular file is, in words.
fn file_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Refuses a set with an image that leads out of `imgs/` (the first one named), or with images
/// that are missing or not regular files (counted, the first few named).
fn check_images(ann: &Annotations) -> Result<()> {
    let places = locate_images(ann);
    let key = ann.format.image_key();
    if let Some((i, why)) = places.iter().enumerate().find_map(|(i, p)| match p {
        Place::Outside(why) => Some((i, why)),
        _ => None,
    }) {
        bail!(crate::UsageError(format!(
            "{}: {key} {:?} {why}",
            ann.at(i),
            ann.entries[i].path
        )));
    }
    let imgs = ann.imgs();
    let named = |want: fn(&Place) -> bool| -> Vec<String> {
        places
            .iter()
            .zip(&ann.entries)
            .filter(|(p, _)| want(p))
            .map(|(p, e)| match p {
                Place::NotFile(kind) => format!("{} ({kind})", shown(&imgs.join(&e.path))),
                _ => shown(&imgs.join(&e.path)),
            })
            .collect()
    };
    let missing = named(|p| *p == Place::Missing);
    let other = named(|p| matches!(p, Place::NotFile(_)));
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "{} of {} images are missing, e.g. {}",
            missing.len(),
            places.len(),
            missing[..missing.len().min(3)].join(", ")
        ));
    }
    if !other.is_empty() {
        parts.push(format!(
            "{} of {} images are not regular files, e.g. {}",
            other.len(),
            places.len(),
            other[..other.len().min(3)].join(", ")
        ));
    }
    if !parts.is_empty() {
        bail!(crate::UsageError(format!(
            "{}: {}",
            shown(&ann.file),
            parts.join("; ")
        )));
    }
    Ok(())
}
