//! The benchmark annotation formats (METHOD.md section 1): CUHK-PEDES (`reid_raw.json`),
//! ICFG-PEDES (`ICFG-PEDES.json` / `ICFG_PEDES.json`), RSTPReid (`data_captions.json`), and
//! SYNTH-PEDES (written in CUHK-PEDES's format).
use crate::config::{DatasetName, SplitName};
use anyhow::{bail, Context, Result};
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

/// Annotation file names and the entry key holding the image path, per dataset.
fn layout(name: DatasetName) -> (&'static [&'static str], &'static str, i64, &'static str) {
    match name {
        DatasetName::CuhkPedes => (
            &["reid_raw.json"],
            "file_path",
            1,
            "imgs/cam_a/..., imgs/cam_b/...",
        ),
        DatasetName::SynthPedes => (&["reid_raw.json"], "file_path", 1, "imgs/..."),
        DatasetName::IcfgPedes => (
            &["ICFG-PEDES.json", "ICFG_PEDES.json"],
            "file_path",
            0,
            "imgs/train/..., imgs/test/...",
        ),
        DatasetName::RstpReid => (&["data_captions.json"], "img_path", 0, "imgs/..."),
    }
}

impl Dataset {
    /// The evaluation split `name` (`val`: every entry whose split is neither `train` nor `test`).
    pub fn eval_split(&self, name: SplitName) -> &EvalSplit {
        match name {
            SplitName::Test => &self.test,
            SplitName::Val => &self.val,
        }
    }

    /// Refuses a dataset without entries in one of the `needed` splits (`"train"`, `"test"`, or a
    /// validation name), naming the annotation file and the splits it has with their counts.
    pub fn require_splits(&self, needed: &[&str]) -> Result<()> {
        let has = |name: &&str| self.splits.iter().any(|(s, _)| s == name);
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
            self.annotation.display(),
            missing.join(" or "),
            found.join(", "),
            wanted.join(" and ")
        )))
    }
}

/// Loads the dataset folder `dir` (`<root>/<name>` for the benchmarks) and checks it: text
/// encoding, annotation entries, train pids, image paths (links resolved) and the existence of
/// every image.
pub fn load(dataset_name: DatasetName, dir: &Path) -> Result<Dataset> {
    let (files, image_key, pid_offset, img_layout) = layout(dataset_name);
    if !dir.is_dir() {
        bail!(crate::UsageError(format!(
            "dataset folder {} does not exist (expected {}/{{{}}} and {}/{img_layout})",
            dir.display(),
            dir.display(),
            files.join(" or "),
            dir.display()
        )));
    }
    let Some(ann) = files.iter().map(|f| dir.join(f)).find(|p| p.is_file()) else {
        bail!(crate::UsageError(format!(
            "no annotation file in {}: expected {} (with images under imgs/: {img_layout})",
            dir.display(),
            files.join(" or ")
        )));
    };
    let bytes = std::fs::read(&ann).with_context(|| format!("cannot read {}", ann.display()))?;
    let bom = if bytes.starts_with(UTF8_BOM) {
        UTF8_BOM.len()
    } else {
        0
    };
    let text = std::str::from_utf8(&bytes[bom..]).map_err(|e| {
        crate::UsageError(format!(
            "{}: invalid UTF-8 at byte offset {} (expected UTF-8 JSON)",
            ann.display(),
            bom + e.valid_up_to()
        ))
    })?;
    let entries: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| {
        crate::UsageError(format!(
            "{}: invalid JSON at line {}, column {}: {e}",
            ann.display(),
            e.line(),
            e.column()
        ))
    })?;
    let imgs = dir.join("imgs");
    let mut ds = Dataset {
        name: dataset_name,
        dir: dir.to_path_buf(),
        annotation: ann.clone(),
        splits: Vec::new(),
        train: Vec::new(),
        num_classes: 0,
        train_images: 0,
        val: EvalSplit::default(),
        test: EvalSplit::default(),
    };
    // Each entry's image: as written and joined to `imgs/`.
    let mut images = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let entry = parse_entry(e, image_key)
            .map_err(|m| crate::UsageError(format!("{} entry {i}: {m}", ann.display())))?;
        let path = safe_join(&imgs, &entry.path).map_err(|m| {
            crate::UsageError(format!(
                "{} entry {i}: {image_key} {:?} {m}",
                ann.display(),
                entry.path
            ))
        })?;
        images.push((entry.path.clone(), path.clone()));
        match ds.splits.iter_mut().find(|(s, _)| *s == entry.split) {
            Some((_, n)) => *n += 1,
            None => ds.splits.push((entry.split.clone(), 1)),
        }
        match entry.split.as_str() {
            "train" => {
                let pid = entry.id - pid_offset;
                for c in entry.captions {
                    ds.train.push(TrainSample {
                        image: path.clone(),
                        pid,
                        image_id: ds.train_images as i64,
                        caption: c,
                    });
                }
                ds.train_images += 1;
            }
            split => {
                let s = if split == "test" {
                    &mut ds.test
                } else {
                    &mut ds.val
                };
                s.image_paths.push(path);
                s.image_pids.push(entry.id);
                for c in entry.captions {
                    s.captions.push(c);
                    s.caption_pids.push(entry.id);
                }
            }
        }
    }
    let mut pids: Vec<i64> = ds.train.iter().map(|s| s.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    if let Some((k, &p)) = pids.iter().enumerate().find(|&(k, &p)| p != k as i64) {
        bail!(crate::UsageError(format!(
            "{}: training pids must be exactly 0..N-1 (after the dataset's offset of {pid_offset}), but the {}-th smallest is {p}",
            ann.display(),
            k + 1
        )));
    }
    ds.num_classes = pids.len();
    if ds.train.is_empty() && ds.test.image_paths.is_empty() {
        bail!(crate::UsageError(format!(
            "{}: no train or test entries",
            ann.display()
        )));
    }
    check_images(&ann, image_key, &imgs, &images)?;
    Ok(ds)
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

struct Entry {
    split: String,
    id: i64,
    path: String,
    captions: Vec<String>,
}

fn parse_entry(e: &serde_json::Value, image_key: &str) -> Result<Entry, String> {
    let obj = e.as_object().ok_or("expected an object")?;
    let field = |k: &str| obj.get(k).ok_or(format!("missing key `{k}`"));
    let split = field("split")?
        .as_str()
        .ok_or("`split` must be a string")?
        .to_string();
    let id = field("id")?.as_i64().ok_or("`id` must be an integer")?;
    let path = field(image_key)?
        .as_str()
        .ok_or(format!("`{image_key}` must be a string"))?
        .to_string();
    let caps = field("captions")?
        .as_array()
        .ok_or("`captions` must be a list of strings")?;
    if caps.is_empty() {
        return Err("`captions` is empty".into());
    }
    let mut captions = Vec::with_capacity(caps.len());
    for (j, c) in caps.iter().enumerate() {
        let c = c
            .as_str()
            .ok_or(format!("captions[{j}] must be a string"))?;
        if c.trim().is_empty() {
            return Err(format!("captions[{j}] is empty"));
        }
        captions.push(c.to_string());
    }
    Ok(Entry {
        split,
        id,
        path,
        captions,
    })
}

/// `imgs/` joined with a relative path that stays inside it.
fn safe_join(imgs: &Path, rel: &str) -> Result<PathBuf, String> {
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

/// Checks every entry's image (`images`: the path as written, and joined to `imgs`): that it
/// exists, and that its real path, links resolved, lies inside the real `imgs/` (which may itself
/// be a link, e.g. to another disk).
fn check_images(
    ann: &Path,
    image_key: &str,
    imgs: &Path,
    images: &[(String, PathBuf)],
) -> Result<()> {
    let inside = imgs.canonicalize().unwrap_or_else(|_| imgs.to_path_buf());
    // Per entry: None when the image is missing, else its real path.
    let real: Vec<Option<PathBuf>> = images
        .par_iter()
        .map(|(_, p)| p.canonicalize().ok().filter(|r| r.is_file()))
        .collect();
    let outside = real.iter().enumerate().find_map(|(i, r)| {
        r.as_ref()
            .filter(|r| !r.starts_with(&inside))
            .map(|r| (i, r))
    });
    if let Some((i, r)) = outside {
        bail!(crate::UsageError(format!(
            "{} entry {i}: {image_key} {:?} leads out of {} through a link: {} resolves to {} (expected a file inside imgs/)",
            ann.display(),
            images[i].0,
            imgs.display(),
            images[i].1.display(),
            r.display()
        )));
    }
    let missing: Vec<&PathBuf> = real
        .iter()
        .zip(images)
        .filter(|(r, _)| r.is_none())
        .map(|(_, (_, p))| p)
        .collect();
    if !missing.is_empty() {
        let shown: Vec<String> = missing
            .iter()
            .take(3)
            .map(|p| p.display().to_string())
            .collect();
        bail!(crate::UsageError(format!(
            "{}: {} of {} images are missing, e.g. {}",
            ann.display(),
            missing.len(),
            images.len(),
            shown.join(", ")
        )));
    }
    Ok(())
}
