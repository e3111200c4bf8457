//! `ccma compare A B`: two evaluations of the same queries, metric by metric, with a paired
//! bootstrap interval for each difference.
use crate::retrieval::bootstrap::{paired_bootstrap, Difference};
use crate::retrieval::metrics::{read_query_records, QueryRecord, QueryScore};
use crate::train::run_dir::queries_path;
use crate::UsageError;
use anyhow::{bail, Result};
use clap::Args;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The fewest queries a verdict is given over: with fewer, resampling them says little about how
/// the metrics spread (over one query, every resample is that query and every interval a point).
pub const MIN_QUERIES: usize = 30;

/// The largest `ccma test` record read beside a per-query file.
const MAX_RECORD_BYTES: u64 = 1 << 20;

/// The settings of a test record that say how the model was fed, not what it was measured on:
/// two records may differ in them.
const FEED_SETTINGS: [&str; 2] = ["img_size", "text_length"];

/// Compare two evaluations of one test split, query by query.
///
/// Each metric's difference B - A with a 95% interval from a paired bootstrap over the queries,
/// and whether it excludes 0 (a verdict needs at least 30 queries). The `ccma test` records
/// beside the per-query files must measure the same data and the checkpoint as it is now, and
/// each query's record must agree with itself and its gallery's size.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The baseline: a run folder (its best checkpoint's test per-query file), a
    /// test_results.*.json, or a per-query file (*.queries.jsonl).
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// The other evaluation, in the same forms.
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Bootstrap resamples.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub resamples: u64,
    /// Seed of the resamples (PCG64, drawn as README's "Reporting results" says).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The per-query file that `path` (given as `name`) stands for.
fn queries_file(name: &str, path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        return best_test_queries(name, path);
    }
    if path.extension().is_some_and(|e| e == "json") {
        let file = queries_path(path);
        if !file.is_file() {
            bail!(UsageError(format!(
                "{name} {}: no per-query file beside it ({} is missing): rerun the `ccma test` that wrote it",
                path.display(),
                file.display()
            )));
        }
        return Ok(file);
    }
    if !path.exists() {
        bail!(UsageError(format!(
            "{name} {}: no such file or folder (expected a run folder, a test_results.*.json or a per-query file)",
            path.display()
        )));
    }
    Ok(path.to_path_buf())
}

/// The per-query file of the one `ccma test` of run folder `dir`'s best checkpoint on its test
/// split (`test_results.best.*.queries.jsonl`); none or several are refused, naming them.
fn best_test_queries(name: &str, dir: &Path) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            UsageError(format!(
                "{name} {}: cannot read the folder ({e})",
                dir.display()
            ))
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("test_results.best.") && n.ends_with(".queries.jsonl")
            })
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(UsageError(format!(
            "{name} {}: no per-query results of its best checkpoint (no test_results.best.*.queries.jsonl): run `ccma test --config {}` first",
            dir.display(),
            dir.join(crate::io::run_files::CONFIG).display()
        ))),
        n => bail!(UsageError(format!(
            "{name} {}: {n} tests of its best checkpoint ({}): give the per-query file of the one to compare",
            dir.display(),
            found
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Refuses two record sets that are not the same queries (number, caption and pid, in order).
fn same_queries(a: (&Path, &[QueryRecord]), b: (&Path, &[QueryRecord])) -> Result<()> {
    let ((pa, ra), (pb, rb)) = (a, b);
    let differ = |what: String| {
        UsageError(format!(
            "{} and {} hold different query sets: {what} (compare evaluations of the same split of the same dataset)",
            pa.display(),
            pb.display()
        ))
    };
    if ra.len() != rb.len() {
        bail!(differ(format!("{} vs {} queries", ra.len(), rb.len())));
    }
    for (x, y) in ra.iter().zip(rb) {
        if (x.query, x.pid, &x.caption) != (y.query, y.pid, &y.caption) {
            bail!(differ(format!(
                "query {} with pid {} {:?} vs query {} with pid {} {:?}",
                x.query, x.pid, x.caption, y.query, y.pid, y.caption
            )));
        }
    }
    Ok(())
}

/// The `ccma test` record (`X.json`) beside the per-query file `queries` (`X.queries.jsonl`),
/// when it is there.
fn record_of(queries: &Path) -> Result<Option<(PathBuf, Value)>> {
    let name = queries
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let Some(stem) = name.strip_suffix(".queries.jsonl") else {
        return Ok(None);
    };
    let path = queries.with_file_name(format!("{stem}.json"));
    if !path.is_file() {
        return Ok(None);
    }
    let text = crate::io::text::read_text(&path, "test results file", MAX_RECORD_BYTES)?;
    let record = serde_json::from_str(&text).map_err(|e| {
        UsageError(format!(
            "{}: {e} (expected the JSON that ccma test writes)",
            path.display()
        ))
    })?;
    Ok(Some((path, record)))
}

/// Refuses a record (`name`, at `path`) that measured a checkpoint since replaced: its file's
/// fingerprint (path, size, modification time) is no longer the one recorded. A record of an
/// earlier release, without the fingerprint, is taken with a warning.
fn require_fresh(name: &str, path: &Path, record: &Value) -> Result<()> {
    let Some(checkpoint) = record["checkpoint"].as_str().map(Path::new) else {
        return Ok(());
    };
    let Some(measured) = record["checkpoint_fingerprint"].as_str() else {
        tracing::warn!(
            "{name} {}: it does not record its checkpoint's fingerprint (an earlier release wrote it), so whether {} changed since cannot be told",
            path.display(),
            checkpoint.display()
        );
        return Ok(());
    };
    if checkpoint.exists() && crate::io::fingerprint::file(checkpoint)? != measured {
        bail!(UsageError(format!(
            "{name} {}: measured an earlier {} (the file has been replaced since, as a --resume that finds a better epoch does): rerun `ccma test` on it",
            path.display(),
            checkpoint.display()
        )));
    }
    Ok(())
}

/// Refuses two records whose settings say they measured other data (another dataset, folder,
/// split or generated set): every setting but [`FEED_SETTINGS`] must agree.
fn same_data(a: (&Path, &Value), b: (&Path, &Value)) -> Result<()> {
    let (sa, sb) = (&a.1["settings"], &b.1["settings"]);
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut all = keys(sa);
    all.extend(keys(sb));
    all.sort();
    all.dedup();
    match all
        .iter()
        .filter(|k| !FEED_SETTINGS.contains(&k.as_str()))
        .find(|k| sa.get(k.as_str()) != sb.get(k.as_str()))
    {
        Some(k) => bail!(UsageError(format!(
            "{} and {} measured other data: `{k}` is {} vs {} (compare evaluations of the same split of the same dataset)",
            a.0.display(),
            b.0.display(),
            sa.get(k.as_str()).unwrap_or(&Value::Null),
            sb.get(k.as_str()).unwrap_or(&Value::Null)
        ))),
        None => Ok(()),
    }
}

/// The one-line verdict on `diffs`.
fn verdict(diffs: &[Difference], queries: usize, resamples: u64) -> String {
    let (out, within): (Vec<&Difference>, Vec<&Difference>) =
        diffs.iter().partition(|d| d.excludes_zero());
    let names = |ds: &[&Difference]| {
        ds.iter()
            .map(|d| match (d.excludes_zero(), d.diff > 0.0) {
                (true, true) => format!("{} (B higher)", d.metric),
                (true, false) => format!("{} (B lower)", d.metric),
                _ => d.metric.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let over = format!("over {queries} queries, {resamples} paired resamples");
    if queries < MIN_QUERIES {
        return format!("verdict: none ({over}): a verdict needs at least {MIN_QUERIES} queries");
    }
    match (out.is_empty(), within.is_empty()) {
        (true, _) => format!("verdict: every 95% interval includes 0 ({over}): no metric differs beyond resampling noise"),
        (false, true) => format!("verdict: every 95% interval excludes 0 ({over}): {}", names(&out)),
        (false, false) => format!(
            "verdict: the 95% interval excludes 0 for {} and includes 0 for {} ({over})",
            names(&out),
            names(&within)
        ),
    }
}

pub fn run(a: CompareArgs) -> Result<()> {
    let (fa, fb) = (queries_file("A", &a.a)?, queries_file("B", &a.b)?);
    let (ja, jb) = (record_of(&fa)?, record_of(&fb)?);
    for (name, record) in [("A", &ja), ("B", &jb)] {
        if let Some((path, r)) = record {
            require_fresh(name, path, r)?;
        }
    }
    let gallery = |r: &Option<(PathBuf, Value)>| r.as_ref()?.1["gallery_images"].as_u64();
    let (ra, rb) = (
        read_query_records(&fa, gallery(&ja))?,
        read_query_records(&fb, gallery(&jb))?,
    );
    same_queries((&fa, &ra), (&fb, &rb))?;
    if let (Some((pa, xa)), Some((pb, xb))) = (&ja, &jb) {
        same_data((pa, xa), (pb, xb))?;
    }
    let scores = |r: &[QueryRecord]| {
        r.iter()
            .map(QueryRecord::score)
            .collect::<Vec<QueryScore>>()
    };
    let diffs = paired_bootstrap(&scores(&ra), &scores(&rb), a.resamples as usize, a.seed)?;
    let line = verdict(&diffs, ra.len(), a.resamples);
    if a.json {
        let v = serde_json::json!({
            "A": fa, "B": fb, "queries": ra.len(), "resamples": a.resamples, "seed": a.seed,
            "metrics": diffs, "verdict": line,
        });
        return super::output::print(format_args!("{v}\n"));
    }
    let mut t = prettytable::Table::new();
    t.set_titles(prettytable::row![
        "metric",
        "A",
        "B",
        "B - A",
        "95% interval",
        "excludes 0"
    ]);
    for d in &diffs {
        t.add_row(prettytable::row![
            d.metric,
            format!("{:.2}", d.a),
            format!("{:.2}", d.b),
            format!("{:+.2}", d.diff),
            format!("[{:+.2}, {:+.2}]", d.low, d.high),
            if d.excludes_zero() { "yes" } else { "no" }
        ]);
    }
    super::output::print(format_args!(
        "A: {}\nB: {}\n{t}{line}\n",
        fa.display(),
        fb.display()
    ))
}
