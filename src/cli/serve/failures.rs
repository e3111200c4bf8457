//! A run's test split query by query, as a failure analysis shows it: each query's caption, the
//! rank of its first correct image and its top 10 with the correct ones marked, worst first, and
//! filterable by words of the caption.
use crate::inference::TestSetup;
use crate::retrieval::encode::{score_split, SplitFeatures};
use crate::retrieval::metrics::RetrievalMetrics;
use crate::retrieval::query_ranks::{query_outcomes, QueryOutcome};
use anyhow::Result;
use std::path::PathBuf;

/// Gallery items shown per query.
const TOP: usize = 10;

struct Row {
    /// The query's position in the test split.
    index: usize,
    caption: String,
    /// The caption's words, lower case.
    words: Vec<String>,
    pid: i64,
    /// Gallery images of the query's person.
    matches: usize,
    outcome: QueryOutcome,
}

/// The evaluated test split of a run.
pub struct TestRun {
    dataset: String,
    checkpoint: PathBuf,
    metrics: RetrievalMetrics,
    /// The split's images (served as `/img/t/<index>`) and their person ids.
    pub images: Vec<PathBuf>,
    image_pids: Vec<i64>,
    /// Worst first: by the rank of the first correct image, then by query index.
    rows: Vec<Row>,
}

/// The lower-case words of `text` (runs of letters and digits).
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl TestRun {
    /// Scores every query of the test split of `split` from its features `feats` (and the
    /// split's metrics, as `ccma test` does).
    pub fn new(split: &TestSetup, feats: &SplitFeatures) -> Result<TestRun> {
        let test = &split.dataset.test;
        let (metrics, _) = score_split(feats, test, false)?;
        let outcomes = query_outcomes(
            &feats.texts,
            &feats.images,
            &test.caption_pids,
            &test.image_pids,
            TOP,
        )?;
        let mut rows: Vec<Row> = outcomes
            .into_iter()
            .enumerate()
            .filter_map(|(index, outcome)| {
                let pid = test.caption_pids[index];
                Some(Row {
                    index,
                    caption: test.captions[index].clone(),
                    words: words(&test.captions[index]),
                    pid,
                    matches: test.image_pids.iter().filter(|&&p| p == pid).count(),
                    outcome: outcome?,
                })
            })
            .collect();
        rows.sort_by_key(|r| (std::cmp::Reverse(r.outcome.first_match), r.index));
        Ok(TestRun {
            dataset: split.dataset.name.to_string(),
            checkpoint: split.checkpoint.clone(),
            metrics,
            images: test.image_paths.clone(),
            image_pids: test.image_pids.clone(),
            rows,
        })
    }

    /// What the page shows about the run.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "dataset": self.dataset,
            "checkpoint": self.checkpoint.file_name().map(|n| n.to_string_lossy().into_owned()),
            "queries": self.rows.len(),
            "excluded": self.metrics.excluded,
            "t2i": self.metrics,
        })
    }

    /// The queries whose caption has every word of `filter` (all when it has none), worst first,
    /// `limit` of them from `offset`: `{"total", "matching", "offset", "queries": [{"query",
    /// "caption", "pid", "matches", "first_match", "top": [{"index", "score", "pid",
    /// "correct"}]}]}`.
    pub fn page(&self, filter: &str, offset: usize, limit: usize) -> serde_json::Value {
        let wanted = words(filter);
        let matching: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| wanted.iter().all(|w| r.words.contains(w)))
            .collect();
        let queries: Vec<serde_json::Value> = matching
            .iter()
            .skip(offset)
            .take(limit)
            .map(|r| {
                let top: Vec<serde_json::Value> = r
                    .outcome
                    .top
                    .iter()
                    .map(|&(i, score)| {
                        serde_json::json!({
                            "index": i,
                            "score": score,
                            "pid": self.image_pids[i],
                            "correct": self.image_pids[i] == r.pid,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "query": r.index,
                    "caption": r.caption,
                    "pid": r.pid,
                    "matches": r.matches,
                    "first_match": r.outcome.first_match,
                    "top": top,
                })
            })
            .collect();
        serde_json::json!({
            "total": self.rows.len(),
            "matching": matching.len(),
            "offset": offset,
            "queries": queries,
        })
    }
}
