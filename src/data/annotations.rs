//! The benchmark annotation formats (METHOD.md section 1): CUHK-PEDES (`reid_raw.json`, also
//! circulated as `CUHK-PEDES.json`; the authors' `caption_all.json` lacks the split), ICFG-PEDES
//! (`ICFG-PEDES.json` / `ICFG_PEDES.json`), RSTPReid (`data_captions.json`), and SYNTH-PEDES
//! (written in CUHK-PEDES's format); where each entry's image is.
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

/// Where a dataset's annotations are and how its entries read.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Annotation file names; the first one present is read.
    pub files: &'static [&'static str],
    /// The entry key holding the image path.
    pub image_key: &'static str,
    /// Subtracted from `id` to make a training pid.
    pub pid_offset: i64,
    /// What `imgs/` holds, for messages.
    pub imgs: &'static str,
}

/// The layout of each dataset (METHOD.md section 1). `CUHK-PEDES.json` is the name some projects
/// give CUHK-PEDES's `reid_raw.json` (the same file).
pub fn layout(name: DatasetName) -> Layout {
    let (files, image_key, pid_offset, imgs): (&'static [&'static str], _, _, _) = match name {
        DatasetName::CuhkPedes => (
            &["reid_raw.json", "CUHK-PEDES.json"],
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
    };
    Layout {
        files,
        image_key,
        pid_offset,
        imgs,
    }
}

/// The published size of a benchmark (METHOD.md section 1): identities per split (train, val,
/// test) and the test split's images and captions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Published {
    pub ids: [usize; 3],
    pub test_images: usize,
    pub test_captions: usize,
}

/// The published size of `name`; none for the generated SYNTH-PEDES.
pub fn published(name: DatasetName) -> Option<Published> {
    let (ids, test_images, test_captions) = match name {
        DatasetName::CuhkPedes => ([11_003, 1_000, 1_000], 3_074, 6_156),
        DatasetName::IcfgPedes => ([3_102, 0, 1_000], 19_848, 19_848),
        DatasetName::RstpReid => ([3_701, 200, 200], 1_000, 2_000),
        DatasetName::SynthPedes => return None,
    };
    Some(Published {
        ids,
        test_images,
        test_captions,
    })
}

/// The CUHK-PEDES authors' caption file: the same entries as `reid_raw.json` without its `split`.
pub const CAPTIONS_WITHOUT_SPLIT: &str = "caption_all.json";

/// The standard CUHK-PEDES split by person id, as `reid_raw.json` assigns it (inclusive ranges).
const CUHK_SPLIT_BY_ID: [(i64, i64, &str); 3] = [
    (1, 11_003, "train"),
    (11_004, 12_003, "val"),
    (12_004, 13_003, "test"),
];

/// Index of a `split` value: 0 train, 2 test, 1 anything else (validation).
pub fn split_index(split: &str) -> usize {
    match split {
        "train" => 0,
        "test" => 2,
        _ => 1,
    }
}

/// One annotation entry as written: an image with its person id and captions (not yet checked).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub split: String,
    pub id: i64,
    /// The image path, relative to `imgs/`.
    pub path: String,
    pub captions: Vec<String>,
}

/// A dataset's annotation file, read and parsed; its entries in file order.
#[derive(Debug, Clone)]
pub struct Annotations {
    pub name: DatasetName,
    /// The dataset's folder.
    pub dir: PathBuf,
    /// The annotation file read.
    pub file: PathBuf,
    pub layout: Layout,
    pub entries: Vec<Entry>,
}

impl Annotations {
    /// Finds and parses the annotation file of the dataset folder `dir`: text encoding, JSON and
    /// the keys and types of every entry. A CUHK-PEDES folder with only `caption_all.json` gets
    /// the standard split derived from its person ids when the result has the published sizes,
    /// and is refused otherwise.
    pub fn read(name: DatasetName, dir: &Path) -> Result<Annotations> {
        let layout = layout(name);
        let files = layout.files;
        if !dir.is_dir() {
            bail!(crate::UsageError(format!(
                "dataset folder {} does not exist (expected {}/{{{}}} and {}/{})",
                dir.display(),
                dir.display(),
                files.join(" or "),
                dir.display(),
                layout.imgs
            )));
        }
        let captions_only = dir.join(CAPTIONS_WITHOUT_SPLIT);
        let (file, need_split) = match files.iter().map(|f| dir.join(f)).find(|p| p.is_file()) {
            Some(f) => (f, true),
            None if name == DatasetName::CuhkPedes && captions_only.is_file() => {
                (captions_only, false)
            }
            None => bail!(crate::UsageError(format!(
                "no annotation file in {}: expected {} (with images under imgs/: {})",
                dir.display(),
                files.join(" or "),
                layout.imgs
            ))),
        };
        let values = read_json(&file)?;
        let mut parsed = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let e = parse_entry(v, layout.image_key, need_split)
                .map_err(|m| crate::UsageError(format!("{} entry {i}: {m}", file.display())))?;
            parsed.push(e);
        }
        let entries = match need_split || parsed.iter().all(|(s, _)| s.is_some()) {
            true => parsed
                .into_iter()
                .map(|(s, mut e)| {
                    e.split = s.unwrap_or_default();
                    e
                })
                .collect(),
            false => derive_cuhk_split(&file, parsed.into_iter().map(|(_, e)| e).collect())?,
        };
        Ok(Annotations {
            name,
            dir: dir.to_path_buf(),
            file,
            layout,
            entries,
        })
    }

    /// The image folder, `<dir>/imgs`.
    pub fn imgs(&self) -> PathBuf {
        self.dir.join("imgs")
    }

    /// `<file> entry <i>`, how messages name an entry.
    pub fn at(&self, i: usize) -> String {
        format!("{} entry {i}", self.file.display())
    }
}

/// Gives `caption_all.json`'s entries the standard split by their person ids. The split is
/// known to be this one only when every id falls in the ranges and the result has the published
/// identities per split and test images; otherwise the file is refused, saying why.
fn derive_cuhk_split(file: &Path, mut entries: Vec<Entry>) -> Result<Vec<Entry>> {
    let split_of = |id: i64| {
        CUHK_SPLIT_BY_ID
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&id))
            .map(|(_, _, s)| *s)
    };
    let mut ids: [Vec<i64>; 3] = Default::default();
    let mut test_images = 0;
    let mut outside = None;
    for e in &mut entries {
        match split_of(e.id) {
            Some(s) => {
                e.split = s.to_string();
                ids[split_index(s)].push(e.id);
                test_images += usize::from(s == "test");
            }
            None => outside = outside.or(Some(e.id)),
        }
    }
    let counts = ids.map(|mut v| {
        v.sort_unstable();
        v.dedup();
        v.len()
    });
    let p = published(DatasetName::CuhkPedes).expect("CUHK-PEDES has published sizes");
    let found = match outside {
        Some(id) => format!("person id {id} lies outside 1-13003"),
        None if counts == p.ids && test_images == p.test_images => {
            tracing::info!(
                "{}: no `split` field; the standard split was derived from the person ids (train 1-11003, val 11004-12003, test 12004-13003, as reid_raw.json assigns them), which give the published 11003 / 1000 / 1000 identities and 3074 test images",
                file.display()
            );
            return Ok(entries);
        }
        None => format!(
            "the id ranges give {} / {} / {} identities and {test_images} test images instead of the published {} / {} / {} and {}",
            counts[0], counts[1], counts[2], p.ids[0], p.ids[1], p.ids[2], p.test_images
        ),
    };
    bail!(crate::UsageError(format!(
        "{}: entries have no `split`: this is CUHK-PEDES's caption_all.json, not reid_raw.json (the same images and captions with each entry's train/val/test `split`, the file IRRA-style code reads; linked from the README of ShuangLI59/Person-Search-with-Natural-Language-Description); the standard split (train ids 1-11003, val 11004-12003, test 12004-13003) cannot be derived from this file: {found}",
        file.display()
    )))
}

/// Reads a UTF-8 (optionally BOM-prefixed) JSON list.
fn read_json(file: &Path) -> Result<Vec<serde_json::Value>> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let bom = if bytes.starts_with(UTF8_BOM) {
        UTF8_BOM.len()
    } else {
        0
    };
    let text = std::str::from_utf8(&bytes[bom..]).map_err(|e| {
        crate::UsageError(format!(
            "{}: invalid UTF-8 at byte offset {} (expected UTF-8 JSON)",
            file.display(),
            bom + e.valid_up_to()
        ))
    })?;
    let values = serde_json::from_str(text).map_err(|e| {
        crate::UsageError(format!(
            "{}: invalid JSON at line {}, column {}: {e}",
            file.display(),
            e.line(),
            e.column()
        ))
    })?;
    Ok(values)
}

/// Loads the dataset folder `dir` (`<root>/<name>` for the benchmarks) and checks it: text
/// encoding, annotation entries, captions, train pids, image paths (links resolved) and the
/// existence of every image.
pub fn load(dataset_name: DatasetName, dir: &Path) -> Result<Dataset> {
    let ann = Annotations::read(dataset_name, dir)?;
    let Layout {
        image_key,
        pid_offset,
        ..
    } = ann.layout;
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
                let s = if split == "test" {
                    &mut ds.test
                } else {
                    &mut ds.val
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
            ann.file.display(),
            k + 1
        )));
    }
    ds.num_classes = pids.len();
    if ds.train.is_empty() && ds.test.image_paths.is_empty() {
        bail!(crate::UsageError(format!(
            "{}: no train or test entries",
            ann.file.display()
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
        .map(|e| e.id - ann.layout.pid_offset)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What is wrong with an entry's captions for training and testing: none, or an empty one.
pub fn caption_fault(captions: &[String]) -> Option<String> {
    if captions.is_empty() {
        return Some("`captions` is empty".into());
    }
    let j = captions.iter().position(|c| c.trim().is_empty())?;
    Some(format!("captions[{j}] is empty"))
}

/// An entry's split (when present) and its fields; `split` is required when `need_split`.
fn parse_entry(
    e: &serde_json::Value,
    image_key: &str,
    need_split: bool,
) -> Result<(Option<String>, Entry), String> {
    let obj = e.as_object().ok_or("expected an object")?;
    let field = |k: &str| obj.get(k).ok_or(format!("missing key `{k}`"));
    let split = match (obj.get("split"), need_split) {
        (None, false) => None,
        _ => Some(
            field("split")?
                .as_str()
                .ok_or("`split` must be a string")?
                .to_string(),
        ),
    };
    let id = field("id")?.as_i64().ok_or("`id` must be an integer")?;
    let path = field(image_key)?
        .as_str()
        .ok_or(format!("`{image_key}` must be a string"))?
        .to_string();
    let caps = field("captions")?
        .as_array()
        .ok_or("`captions` must be a list of strings")?;
    let mut captions = Vec::with_capacity(caps.len());
    for (j, c) in caps.iter().enumerate() {
        let c = c
            .as_str()
            .ok_or(format!("captions[{j}] must be a string"))?;
        captions.push(c.to_string());
    }
    let entry = Entry {
        split: String::new(),
        id,
        path,
        captions,
    };
    Ok((split, entry))
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
            imgs.display(),
            path.display(),
            real.display()
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
    let key = ann.layout.image_key;
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
                Place::NotFile(kind) => format!("{} ({kind})", imgs.join(&e.path).display()),
                _ => imgs.join(&e.path).display().to_string(),
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
            ann.file.display(),
            parts.join("; ")
        )));
    }
    Ok(())
}
