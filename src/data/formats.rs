//! The annotation formats (`config::datasets::Format`): one reader each, from a file to its
//! entries in file order. A reader checks the text encoding and every entry's keys and types
//! (the JSON is read by `entries_json`, streamed and bounded);
//! what the entries mean (pids, image paths, captions) is checked by `annotations`.
use super::entries_json::read_entries;
pub use super::entries_json::Entry;
use crate::config::datasets::Format;
use crate::config::DatasetName;
use crate::io::escape::shown;
use anyhow::{bail, Result};
use std::path::Path;

/// Index of a `split` value: 0 train, 2 test, 1 anything else (validation).
pub fn split_index(split: &str) -> usize {
    match split {
        "train" => 0,
        "test" => 2,
        _ => 1,
    }
}

/// The entries of `file`, an annotation file of dataset `name` written in `format`.
pub fn read(name: DatasetName, file: &Path, format: Format) -> Result<Vec<Entry>> {
    match format {
        Format::JsonList { image_key } => json_list(file, image_key),
        Format::JsonListSplitById {
            image_key,
            ranges,
            with_split,
            found_at,
        } => json_list_split_by_id(
            name,
            file,
            image_key,
            SplitById {
                ranges,
                with_split,
                found_at,
            },
        ),
    }
}

/// [`Format::JsonList`]: every entry has its `split`.
fn json_list(file: &Path, image_key: &str) -> Result<Vec<Entry>> {
    Ok(with_splits(read_entries(file, image_key, true)?))
}

/// Entries given the splits they were read with.
fn with_splits(parsed: Vec<(Option<String>, Entry)>) -> Vec<Entry> {
    parsed
        .into_iter()
        .map(|(split, mut e)| {
            e.split = split.unwrap_or_default();
            e
        })
        .collect()
}

/// How [`Format::JsonListSplitById`] derives the split, and what its messages name.
struct SplitById {
    ranges: [(i64, i64); 3],
    with_split: &'static str,
    found_at: &'static str,
}

/// [`Format::JsonListSplitById`]: entries without `split` (a file whose entries all have one is
/// read as it is).
fn json_list_split_by_id(
    name: DatasetName,
    file: &Path,
    image_key: &str,
    how: SplitById,
) -> Result<Vec<Entry>> {
    let parsed = read_entries(file, image_key, false)?;
    if parsed.iter().all(|(s, _)| s.is_some()) {
        return Ok(with_splits(parsed));
    }
    derive_split(
        name,
        file,
        parsed.into_iter().map(|(_, e)| e).collect(),
        how,
    )
}

/// Gives entries the standard split by their person ids. The split is known to be this one only
/// when every id falls in the ranges and the result has the published identities per split and
/// test images; otherwise the file is refused, saying why.
fn derive_split(
    name: DatasetName,
    file: &Path,
    mut entries: Vec<Entry>,
    how: SplitById,
) -> Result<Vec<Entry>> {
    const SPLITS: [&str; 3] = ["train", "val", "test"];
    let r = how.ranges;
    let standard = format!(
        "train {}-{}, val {}-{}, test {}-{}",
        r[0].0, r[0].1, r[1].0, r[1].1, r[2].0, r[2].1
    );
    let mut ids: [Vec<i64>; 3] = Default::default();
    let mut test_images = 0;
    let mut outside = None;
    for e in &mut entries {
        match r.iter().position(|(lo, hi)| (*lo..=*hi).contains(&e.id)) {
            Some(s) => {
                e.split = SPLITS[s].to_string();
                ids[s].push(e.id);
                test_images += usize::from(s == 2);
            }
            None => outside = outside.or(Some(e.id)),
        }
    }
    let counts = ids.map(|mut v| {
        v.sort_unstable();
        v.dedup();
        v.len()
    });
    let lowest = r.iter().map(|(lo, _)| *lo).min().unwrap_or_default();
    let highest = r.iter().map(|(_, hi)| *hi).max().unwrap_or_default();
    let found = match (outside, name.record().published) {
        (Some(id), _) => format!("person id {id} lies outside {lowest}-{highest}"),
        (None, None) => format!("{name} has no published size to check the split against"),
        (None, Some(p)) if counts == p.ids && test_images == p.test_images => {
            tracing::info!(
                "{}: no `split` field; the standard split was derived from the person ids ({standard}, as {} assigns them), which give the published {} / {} / {} identities and {} test images",
                shown(file),
                how.with_split,
                p.ids[0],
                p.ids[1],
                p.ids[2],
                p.test_images
            );
            return Ok(entries);
        }
        (None, Some(p)) => format!(
            "the id ranges give {} / {} / {} identities and {test_images} test images instead of the published {} / {} / {} and {}",
            counts[0], counts[1], counts[2], p.ids[0], p.ids[1], p.ids[2], p.test_images
        ),
    };
    let name_of = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    bail!(crate::UsageError(format!(
        "{}: entries have no `split`: this is {name}'s {}, not {} (the same images and captions with each entry's train/val/test `split`, the file IRRA-style code reads; {}); the standard split ({}) cannot be derived from this file: {found}",
        shown(file),
        name_of(file),
        how.with_split,
        how.found_at,
        standard.replacen("train ", "train ids ", 1)
    )))
}
