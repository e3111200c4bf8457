//! `ccma search`: rank a gallery against a sentence, print the top results, draw a contact sheet.
use super::args::{DeviceArg, WeightsArgs};
use crate::factory::Inference;
use crate::io::output_path::{self, Existing};
use crate::report::sheet::{self, SheetItem};
use crate::retrieval::encode::{embed_captions, EncodeOptions};
use crate::retrieval::features::require_finite_output;
use crate::retrieval::gallery::{self, Gallery};
use crate::retrieval::topk::top_k;
use crate::UsageError;
use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Search a gallery of images with a sentence.
#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// A folder of images (features cached inside it), or a feature file written by `ccma embed`.
    #[arg(long, value_name = "DIR|FILE")]
    pub gallery: PathBuf,
    /// How many results to show (at least 1).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub top_k: u64,
    /// Print the results as JSON (`{"query", "results": [{"rank", "index", "score", "image"}]}`).
    #[arg(long)]
    pub json: bool,
    /// Contact sheet PNG of the top results (never an input, nor inside the gallery folder; an
    /// existing file only with --force).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub device: DeviceArg,
    /// The sentence to search for.
    pub query: String,
}

pub fn run(a: SearchArgs) -> Result<()> {
    if a.query.trim().is_empty() {
        bail!(UsageError(
            "the query is empty: give a sentence to search for".into()
        ));
    }
    // --out is checked against the inputs known before any work, then against the images a
    // feature file names.
    let mut inputs = a.weights.inputs();
    inputs.push(a.gallery.clone());
    let check_out = |inputs: &[PathBuf]| match &a.out {
        Some(out) => output_path::check(out, inputs, Existing::allowed_by(a.force, "--force")),
        None => Ok(()),
    };
    check_out(&inputs)?;
    let device = a.device.resolve()?;
    let (model, opts) = a.weights.load(None, None, device)?;
    let Gallery { files, features } = gallery::open(
        &a.gallery,
        &model.model,
        &model.path,
        &model.fingerprint,
        &opts,
    )?;
    inputs.extend(files.iter().cloned());
    check_out(&inputs)?;
    let hits = best_rows(
        &model,
        &opts,
        &features,
        &[(a.query.clone(), a.top_k as usize)],
    )?
    .remove(0);
    if let Some(out) = &a.out {
        let items: Vec<SheetItem> = hits
            .iter()
            .map(|&(i, s)| SheetItem {
                path: files[i].clone(),
                score: s,
                matched: None,
            })
            .collect();
        sheet::write(out, &a.query, None, &items)?;
        tracing::info!("wrote {}", out.display());
    }
    if a.json {
        return super::output::print(format_args!("{}\n", results_json(&a.query, &hits, &files)));
    }
    let mut table = prettytable::Table::new();
    table.set_titles(prettytable::row!["rank", "score", "image"]);
    for (rank, (i, s)) in hits.iter().enumerate() {
        table.add_row(prettytable::row![
            rank + 1,
            format!("{s:.4}"),
            files[*i].display()
        ]);
    }
    super::output::print(format_args!("{}\n{table}", a.query))
}

/// The `k` best rows of gallery `features` [N, D] (f32, CPU) for each `(query, k)`, the queries
/// embedded as one batch: (row, cosine similarity), best first. Non-finite query features are
/// an error.
pub(super) fn best_rows(
    model: &Inference,
    opts: &EncodeOptions,
    features: &Tensor,
    queries: &[(String, usize)],
) -> Result<Vec<Vec<(usize, f64)>>> {
    let texts: Vec<String> = queries.iter().map(|(q, _)| q.clone()).collect();
    let embedded = embed_captions(&model.model, &texts, opts)?.to_device(tch::Device::Cpu);
    require_finite_output(&[&embedded], &model.path, "the query")?;
    Ok(queries
        .iter()
        .enumerate()
        .map(|(i, &(_, k))| top_k(features, &embedded.narrow(0, i as i64, 1), k))
        .collect())
}

/// A query's results as `--json` prints them (and `ccma serve`'s API answers): `{"query",
/// "results": [{"rank" (1-based), "index" (gallery row), "score" (cosine), "image"}]}`, best first.
pub(super) fn results_json(
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
