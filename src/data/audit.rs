//! The dataset audit behind `ccma check`: every annotation entry and every image of a set (each
//! one decoded), counted per split against what training and testing need, and the counts against
//! the published sizes.
use super::annotations::{self, Annotations, Place};
use super::formats::split_index;
use super::tokenizer::Tokenizer;
use crate::config::datasets::Published;
use crate::config::DatasetName;
use crate::io::escape::shown;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The split names, in the order of [`split_index`].
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// What can be wrong with an entry, its image or its captions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    Missing,
    Outside,
    NotFile,
    Unreadable,
    Undecodable,
    EmptyCaption,
    NoCaption,
    LongCaption,
    ManyCaptions,
    Duplicate,
    TrainId,
}

impl Fault {
    pub const ALL: [Fault; 11] = [
        Fault::Missing,
        Fault::Outside,
        Fault::NotFile,
        Fault::Unreadable,
        Fault::Undecodable,
        Fault::LongCaption,
        Fault::EmptyCaption,
        Fault::NoCaption,
        Fault::ManyCaptions,
        Fault::Duplicate,
        Fault::TrainId,
    ];

    /// Its name in the report file and in JSON.
    pub fn key(self) -> &'static str {
        match self {
            Fault::Missing => "missing",
            Fault::Outside => "outside_imgs",
            Fault::NotFile => "not_a_regular_file",
            Fault::Unreadable => "unreadable",
            Fault::Undecodable => "undecodable",
            Fault::LongCaption => "truncated_captions",
            Fault::EmptyCaption => "empty_captions",
            Fault::NoCaption => "images_without_captions",
            Fault::ManyCaptions => "images_with_more_than_2_captions",
            Fault::Duplicate => "duplicate_image_paths",
            Fault::TrainId => "train_ids_not_0_to_n_minus_1",
        }
    }

    /// Its row in the printed table, `text_length` being the caption length checked.
    pub fn label(self, text_length: usize) -> String {
        match self {
            Fault::Missing => "images missing".into(),
            Fault::Outside => "images outside imgs/".into(),
            Fault::NotFile => "not regular files (folders, FIFOs)".into(),
            Fault::Unreadable => "images unreadable".into(),
            Fault::Undecodable => "images undecodable".into(),
            Fault::LongCaption => format!("captions truncated at {text_length} tokens"),
            Fault::EmptyCaption => "empty captions".into(),
            Fault::NoCaption => "images without captions".into(),
            Fault::ManyCaptions => "images with more than 2 captions".into(),
            Fault::Duplicate => "duplicate image paths".into(),
            Fault::TrainId => "train ids not 0..N-1".into(),
        }
    }

    /// Whether it stops training or testing; the others are notes (IRRA trains on such sets).
    pub fn blocks(self) -> bool {
        !matches!(
            self,
            Fault::LongCaption | Fault::ManyCaptions | Fault::Duplicate
        )
    }

    fn index(self) -> usize {
        Fault::ALL
            .iter()
            .position(|&f| f == self)
            .expect("every fault is listed")
    }
}

/// One problem found: which fault, where (split index, entry when it is one, the image path as
/// written) and the details.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub fault: Fault,
    pub split: usize,
    pub entry: Option<usize>,
    pub path: String,
    pub detail: String,
}

/// Smallest, median (the lower middle of an even count) and largest of some values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    pub min: u32,
    pub median: u32,
    pub max: u32,
}

impl Spread {
    fn of(mut v: Vec<u32>) -> Option<Spread> {
        v.sort_unstable();
        Some(Spread {
            min: *v.first()?,
            median: v[(v.len() - 1) / 2],
            max: *v.last()?,
        })
    }
}

/// The counts of one split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SplitCounts {
    pub ids: usize,
    pub images: usize,
    pub captions: usize,
    /// Per fault, in the order of [`Fault::ALL`].
    pub faults: [usize; 11],
    /// Heights and widths of the images that decode.
    pub height: Option<Spread>,
    pub width: Option<Spread>,
}

impl SplitCounts {
    pub fn count(&self, f: Fault) -> usize {
        self.faults[f.index()]
    }
}

/// What a check of a dataset found.
#[derive(Debug, Clone)]
pub struct Audit {
    pub name: DatasetName,
    /// The annotation file read.
    pub file: PathBuf,
    pub text_length: usize,
    /// Train, val, test.
    pub splits: [SplitCounts; 3],
    /// Every problem, in entry order (training ids last).
    pub findings: Vec<Finding>,
    /// Top folders that missing images are under and that `imgs/` does not have, with how many
    /// images each.
    pub absent_folders: Vec<(String, usize)>,
    /// The published size, when the dataset has one, and how these counts differ from it (empty
    /// when they match).
    pub published: Option<(Published, Vec<String>)>,
    /// A known faulty release these counts are, with what to do.
    pub faulty_release: Option<String>,
}

/// Checks every entry of `ann`: where its image is, whether it reads and decodes (in parallel,
/// with a progress bar), its captions against the tokenizer at `text_length`, duplicate paths,
/// the training ids, and the counts against the published sizes.
pub fn run(ann: &Annotations, text_length: usize) -> Audit {
    let places = annotations::locate_images(ann);
    let imgs = ann.imgs();
    let pb = crate::report::progress::bar(
        places.len(),
        "checking images {bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}] {per_sec}",
    );
    // Per entry: the image's height and width, or what is wrong with it.
    let images: Vec<Result<(u32, u32), (Fault, String)>> = places
        .par_iter()
        .zip(&ann.entries)
        .map(|(p, e)| {
            let r = match p {
                Place::File(real) => decode(real),
                Place::Missing => Err((Fault::Missing, shown(&imgs.join(&e.path)))),
                Place::Outside(why) => Err((Fault::Outside, why.clone())),
                Place::NotFile(kind) => Err((Fault::NotFile, kind.to_string())),
            };
            pb.inc(1);
            r
        })
        .collect();
    pb.finish_and_clear();
    let tokenizer = Tokenizer::shared();
    let token_counts: Vec<Vec<usize>> = ann
        .entries
        .par_iter()
        .map(|e| {
            e.captions
                .iter()
                .map(|c| tokenizer.bpe_ids(c).len() + 2)
                .collect()
        })
        .collect();

    let mut splits: [SplitCounts; 3] = Default::default();
    let mut ids: [Vec<i64>; 3] = Default::default();
    let mut sizes: [(Vec<u32>, Vec<u32>); 3] = Default::default();
    let mut findings = Vec::new();
    let mut first_at: HashMap<PathBuf, usize> = HashMap::new();
    let mut absent: Vec<(String, usize)> = Vec::new();
    for (i, e) in ann.entries.iter().enumerate() {
        let s = split_index(&e.split);
        splits[s].images += 1;
        splits[s].captions += e.captions.len();
        ids[s].push(e.id);
        let mut found = |fault: Fault, detail: String| {
            splits[s].faults[fault.index()] += 1;
            findings.push(Finding {
                fault,
                split: s,
                entry: Some(i),
                path: e.path.clone(),
                detail,
            });
        };
        match &images[i] {
            Ok((h, w)) => {
                sizes[s].0.push(*h);
                sizes[s].1.push(*w);
            }
            Err((fault, why)) => found(*fault, why.clone()),
        }
        if images[i].as_ref().is_err_and(|(f, _)| *f == Fault::Missing) {
            let mut parts = Path::new(&e.path).components();
            if let (Some(top), Some(_)) = (parts.next(), parts.next()) {
                let top = top.as_os_str().to_string_lossy().into_owned();
                if !imgs.join(&top).exists() {
                    match absent.iter_mut().find(|(t, _)| *t == top) {
                        Some((_, n)) => *n += 1,
                        None => absent.push((top, 1)),
                    }
                }
            }
        }
        if e.captions.is_empty() {
            found(Fault::NoCaption, "`captions` is empty".into());
        }
        if e.captions.len() > 2 {
            found(
                Fault::ManyCaptions,
                format!("{} captions", e.captions.len()),
            );
        }
        for (j, (c, &n)) in e.captions.iter().zip(&token_counts[i]).enumerate() {
            if c.trim().is_empty() {
                found(Fault::EmptyCaption, format!("captions[{j}] is empty"));
            } else if n > text_length {
                found(
                    Fault::LongCaption,
                    format!("captions[{j}] has {n} tokens with the start and end tokens"),
                );
            }
        }
        let key: PathBuf = Path::new(&e.path).components().collect();
        match first_at.get(&key) {
            Some(&k) => found(Fault::Duplicate, format!("the image of entry {k}")),
            None => {
                first_at.insert(key, i);
            }
        }
    }
    let pids = annotations::train_pids(ann);
    let offset = ann.record.pid_offset;
    for &p in pids.iter().filter(|&&p| p < 0 || p >= pids.len() as i64) {
        splits[0].faults[Fault::TrainId.index()] += 1;
        findings.push(Finding {
            fault: Fault::TrainId,
            split: 0,
            entry: None,
            path: String::new(),
            detail: format!(
                "id {} is pid {p} after the offset of {offset}; the {} training ids must be pids 0..{}",
                p + offset,
                pids.len(),
                pids.len() - 1
            ),
        });
    }
    for (s, (v, (h, w))) in splits.iter_mut().zip(ids.into_iter().zip(sizes)) {
        let mut v = v;
        v.sort_unstable();
        v.dedup();
        s.ids = v.len();
        s.height = Spread::of(h);
        s.width = Spread::of(w);
    }
    let counts = [splits[0].ids, splits[1].ids, splits[2].ids];
    let published = ann.record.published.map(|p| {
        let mut differs = Vec::new();
        if counts != p.ids {
            differs.push(format!(
                "identities {} / {} / {} (published {} / {} / {})",
                counts[0], counts[1], counts[2], p.ids[0], p.ids[1], p.ids[2]
            ));
        }
        if splits[2].images != p.test_images {
            differs.push(format!(
                "{} test images (published {})",
                splits[2].images, p.test_images
            ));
        }
        if splits[2].captions != p.test_captions {
            differs.push(format!(
                "{} test captions (published {})",
                splits[2].captions, p.test_captions
            ));
        }
        (p, differs)
    });
    let faulty_release = ann
        .record
        .faulty_releases
        .iter()
        .find(|r| r.ids == counts)
        .map(|r| r.fix.to_string());
    Audit {
        name: ann.name,
        file: ann.file.clone(),
        text_length,
        splits,
        findings,
        absent_folders: absent,
        published,
        faulty_release,
    }
}

/// Reads the image (through [`crate::io::regular_file::read_bounded`]: a regular file, opened
/// without blocking, so a file swapped for a FIFO since it was located cannot hang the check, and
/// at most [`crate::io::MAX_IMAGE_BYTES`], so a huge or sparse file is refused unread) and decodes
/// it; its height and width, or the fault.
fn decode(path: &Path) -> Result<(u32, u32), (Fault, String)> {
    use crate::io::regular_file::{read_bounded, ReadFault};
    let bytes = read_bounded(path, crate::io::MAX_IMAGE_BYTES).map_err(|f| match f {
        ReadFault::Irregular(_) => (Fault::NotFile, f.to_string()),
        ReadFault::Io(_) | ReadFault::TooLarge(_) => (Fault::Unreadable, f.to_string()),
    })?;
    match super::transforms::decode_rgb(&bytes) {
        Ok(img) => Ok((img.height(), img.width())),
        Err(e) => Err((Fault::Undecodable, format!("{e:#}"))),
    }
}

impl Audit {
    /// Faults summed over the splits.
    pub fn total(&self, f: Fault) -> usize {
        self.splits.iter().map(|s| s.count(f)).sum()
    }

    /// Why the set cannot be trained or tested as it is (empty when it can).
    pub fn blockers(&self) -> Vec<String> {
        let mut out: Vec<String> = Fault::ALL
            .iter()
            .filter(|f| f.blocks() && self.total(**f) > 0)
            .map(|&f| format!("{} {}", self.total(f), f.label(self.text_length)))
            .collect();
        if self.faulty_release.is_some() {
            out.push("a known faulty release".into());
        }
        if self.splits[0].images == 0 && self.splits[2].images == 0 {
            out.push("no train or test entries".into());
        }
        out
    }

    /// What is worth knowing but does not stop training or testing.
    pub fn notes(&self) -> Vec<String> {
        let mut out: Vec<String> = Fault::ALL
            .iter()
            .filter(|f| !f.blocks() && self.total(**f) > 0)
            .map(|&f| format!("{} {}", self.total(f), f.label(self.text_length)))
            .collect();
        if let Some((_, differs)) = self.published.as_ref().filter(|(_, d)| !d.is_empty()) {
            out.push(format!(
                "the counts differ from {}'s published size (docs/METHOD.md section 1): {}",
                self.name,
                differs.join(", ")
            ));
        }
        out
    }

    /// Every finding as a tab-separated line (fault, split, entry, image path as written,
    /// details), under a header line naming the annotation file; control characters (tabs, line
    /// breaks, NUL, escape sequences) in the files' text escaped.
    pub fn listing(&self) -> String {
        let clean = |s: &str| crate::io::escape::escape_controls(s).into_owned();
        let mut out = format!(
            "{REPORT_HEADER} of {}\nfault\tsplit\tentry\tpath\tdetail\n",
            crate::io::escape::shown(&self.file)
        );
        for f in &self.findings {
            let entry = f.entry.map(|e| e.to_string()).unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{}\t{}\t{entry}\t{}\t{}\n",
                f.fault.key(),
                SPLITS[f.split],
                clean(&f.path),
                clean(&f.detail)
            ));
        }
        out
    }

    /// The counts as JSON: per split, the faults by [`Fault::key`], the image size spreads.
    pub fn to_json(&self) -> serde_json::Value {
        let spread = |s: Option<Spread>| match s {
            Some(s) => serde_json::json!([s.min, s.median, s.max]),
            None => serde_json::Value::Null,
        };
        let mut splits = serde_json::Map::new();
        for (name, s) in SPLITS.iter().zip(&self.splits) {
            let mut m = serde_json::Map::new();
            m.insert("ids".into(), s.ids.into());
            m.insert("images".into(), s.images.into());
            m.insert("captions".into(), s.captions.into());
            for f in Fault::ALL {
                m.insert(f.key().into(), s.count(f).into());
            }
            m.insert("image_height".into(), spread(s.height));
            m.insert("image_width".into(), spread(s.width));
            splits.insert(name.to_string(), m.into());
        }
        serde_json::json!({
            "dataset": self.name.name(),
            "annotation": self.file.display().to_string(),
            "text_length": self.text_length,
            "splits": splits,
            "absent_folders": self.absent_folders,
            "published_differs": self.published.as_ref().map(|(_, d)| d.clone()),
            "faulty_release": self.faulty_release,
            "blockers": self.blockers(),
            "notes": self.notes(),
            "usable": self.blockers().is_empty(),
        })
    }
}

/// The first line of a report file; a file that starts otherwise was not written by `ccma check`.
pub const REPORT_HEADER: &str = "# ccma check report";

/// The cheap part of the check that `train` and `test` run first: every image is located (no
/// file opened). Per split (train, val, test), how many images are missing, lead out of `imgs/`
/// or are not regular files, and the first few of them named.
pub fn locate_only(ann: &Annotations) -> ([usize; 3], Vec<String>) {
    let places = annotations::locate_images(ann);
    let imgs = ann.imgs();
    let mut bad = [0; 3];
    let mut named = Vec::new();
    for (p, e) in places.iter().zip(&ann.entries) {
        let why = match p {
            Place::File(_) => continue,
            Place::Missing => "missing".to_string(),
            Place::Outside(_) => "outside imgs/".to_string(),
            Place::NotFile(kind) => kind.to_string(),
        };
        bad[split_index(&e.split)] += 1;
        if named.len() < 3 {
            named.push(format!("{} ({why})", shown(&imgs.join(&e.path))));
        }
    }
    (bad, named)
}
