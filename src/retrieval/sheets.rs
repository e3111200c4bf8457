//! Contact sheets of test queries: each query's top 10 gallery images, true matches framed.
use super::encode::SplitFeatures;
use super::topk::CosineIndex;
use crate::data::annotations::EvalSplit;
use crate::report::sheet::{self, SheetItem};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Contact sheets of the top 10 images for `n` queries spread evenly over the split, true matches
/// framed green and misses red; returns how many were written.
pub fn contact_sheets(
    feats: &SplitFeatures,
    split: &EvalSplit,
    n: usize,
    dir: &Path,
) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let total = split.captions.len();
    let picks: Vec<usize> = (0..n.min(total))
        .map(|i| i * total / n.min(total))
        .collect();
    let index = CosineIndex::new(&feats.images);
    for &q in &picks {
        let query = feats.texts.get(q as i64).unsqueeze(0);
        let hits = index.top_k(&query, 10);
        let pid = split.caption_pids[q];
        let items: Vec<SheetItem> = hits
            .iter()
            .map(|&(i, s)| SheetItem {
                path: split.image_paths[i].clone(),
                score: s,
                matched: Some(split.image_pids[i] == pid),
            })
            .collect();
        let matches = split.image_pids.iter().filter(|&&p| p == pid).count();
        let note = format!(
            "query {q}, person {pid}: {matches} true match(es) in the gallery, framed green"
        );
        let path: PathBuf = dir.join(format!("query_{q:05}.png"));
        sheet::write(&path, &split.captions[q], Some(&note), &items)?;
    }
    Ok(picks.len())
}
