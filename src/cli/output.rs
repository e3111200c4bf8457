//! What commands print: metrics as a table or JSON.
use crate::retrieval::metrics::{table, RetrievalMetrics};

/// Prints t2i (and i2t) metrics as JSON on one line, or as a table under `heading`; returns
/// the JSON (`{"t2i": {...}, "i2t": {...}}`).
pub fn print_metrics(
    heading: Option<&str>,
    t2i: &RetrievalMetrics,
    i2t: Option<&RetrievalMetrics>,
    json: bool,
) -> serde_json::Value {
    let mut v = serde_json::json!({ "t2i": t2i });
    let mut rows = vec![("t2i", t2i)];
    if let Some(m) = i2t {
        v["i2t"] = serde_json::json!(m);
        rows.push(("i2t", m));
    }
    if json {
        println!("{v}");
    } else {
        if let Some(h) = heading {
            println!("{h}");
        }
        print!("{}", table(&rows));
    }
    v
}
