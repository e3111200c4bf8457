//! What commands print: metrics as a table or JSON, search results as JSON, and text on stdout. A
//! stdout closed by its reader (`ccma info | head -c0`) is a [`StdoutClosed`] error, which `main`
//! ends quietly.
use crate::retrieval::metrics::{table, RetrievalMetrics};
use anyhow::Result;
use std::io::Write;
use std::path::Path;

/// stdout was closed by its reader: the command stops writing and ends quietly (exit code 0).
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed by its reader")]
pub struct StdoutClosed;

/// `err`, a failed write to stdout, as [`StdoutClosed`] when the pipe's reader has gone.
pub fn stdout_error(err: anyhow::Error) -> anyhow::Error {
    let broken = Some(std::io::ErrorKind::BrokenPipe);
    let closed = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>().map(|e| e.kind()) == broken
            || e.downcast_ref::<serde_json::Error>()
                .and_then(|e| e.io_error_kind())
                == broken
    });
    match closed {
        true => StdoutClosed.into(),
        false => err,
    }
}

/// Writes `text` to stdout and flushes it.
pub fn print(text: impl std::fmt::Display) -> Result<()> {
    let mut out = std::io::stdout().lock();
    write!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| stdout_error(e.into()))
}

/// t2i (and i2t) metrics as JSON: `{"t2i": {...}, "i2t": {...}}`.
pub fn metrics_json(t2i: &RetrievalMetrics, i2t: Option<&RetrievalMetrics>) -> serde_json::Value {
    let mut v = serde_json::json!({ "t2i": t2i });
    if let Some(m) = i2t {
        v["i2t"] = serde_json::json!(m);
    }
    v
}

/// Prints t2i (and i2t) metrics as JSON on one line, or as a table under `heading`.
pub fn print_metrics(
    heading: Option<&str>,
    t2i: &RetrievalMetrics,
    i2t: Option<&RetrievalMetrics>,
    json: bool,
) -> Result<()> {
    if json {
        return print(format_args!("{}\n", metrics_json(t2i, i2t)));
    }
    let mut rows = vec![("t2i", t2i)];
    rows.extend(i2t.map(|m| ("i2t", m)));
    let heading = heading.map_or(String::new(), |h| format!("{h}\n"));
    print(format_args!("{heading}{}", table(&rows)))
}

/// A query's results as `ccma search --json` prints them and `ccma serve`'s API answers:
/// `{"query", "results": [{"rank" (1-based), "index" (gallery row), "score" (cosine), "image"}]}`,
/// best first; `hits` are (row of `files`, cosine).
pub fn results_json(
    query: &str,
    hits: &[(usize, f64)],
    files: &[impl AsRef<Path>],
) -> serde_json::Value {
    let results: Vec<serde_json::Value> = hits
        .iter()
        .enumerate()
        .map(|(r, &(i, score))| {
            serde_json::json!({
                "rank": r + 1,
                "index": i,
                "score": score,
                "image": files[i].as_ref().display().to_string(),
            })
        })
        .collect();
    serde_json::json!({ "query": query, "results": results })
}
