//! The benchmark annotation formats (METHOD.md section 1): CUHK-PEDES (`reid_raw.json`),
//! ICFG-PEDES (`ICFG-PEDES.json` / `ICFG_PEDES.json`), RSTPReid (`data_captions.json`), and
//! SYNTH-PEDES (written in CUHK-PEDES's format).
use crate::config::DatasetName;
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

/// Loads the dataset folder `dir` (`<root>/<name>` for the benchmarks) and checks it: annotation
/// entries, train pids, image paths and the existence of every image.
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
    let text =
        std::fs::read_to_string(&ann).with_context(|| format!("cannot read {}", ann.display()))?;
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
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
        train: Vec::new(),
        num_classes: 0,
        train_images: 0,
        val: EvalSplit::default(),
        test: EvalSplit::default(),
    };
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
    check_images_exist(&ds)?;
    Ok(ds)
}

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

fn check_images_exist(ds: &Dataset) -> Result<()> {
    let mut all: Vec<&PathBuf> = ds.train.iter().map(|s| &s.image).collect();
    all.dedup();
    all.extend(ds.val.image_paths.iter().chain(&ds.test.image_paths));
    let missing: Vec<&PathBuf> = all.par_iter().filter(|p| !p.is_file()).copied().collect();
    if !missing.is_empty() {
        let shown: Vec<String> = missing
            .iter()
            .take(3)
            .map(|p| p.display().to_string())
            .collect();
        bail!(crate::UsageError(format!(
            "{}: {} of {} images are missing, e.g. {}",
            ds.dir.display(),
            missing.len(),
            all.len(),
            shown.join(", ")
        )));
    }
    Ok(())
}
