//! `ccma search`: rank a gallery against a sentence, print the top results, draw a contact sheet.
use super::args::{DeviceArg, WeightsArgs};
use crate::io::output_path::{self, Existing};
use crate::report::sheet::{self, SheetItem};
use crate::retrieval::gallery::{self, Gallery};
use crate::retrieval::topk::{best_rows, CosineIndex};
use crate::UsageError;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

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
    let index = CosineIndex::new(&features);
    let query = [(a.query.clone(), a.top_k as usize)];
    let hits = best_rows(&model.model, &model.path, &opts, &index, &query)?.remove(0);
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
        let json = super::output::results_json(&a.query, &hits, &files);
        return super::output::print(format_args!("{json}\n"));
    }
    let mut table = prettytable::Table::new();
    table.set_titles(prettytable::row!["rank", "score", "image"]);
    for (rank, (i, s)) in hits.iter().enumerate() {
        table.add_row(prettytable::row![
            rank + 1,
            format!("{s:.4}"),
            crate::io::escape::shown(&files[*i])
        ]);
    }
    super::output::print(format_args!("{}\n{table}", a.query))
}
