//! `ccma search`: rank a gallery against a sentence, print the top results, draw a contact sheet.
use super::args::{DeviceArg, WeightsArgs};
use crate::io::output_path::{self, Existing};
use crate::report::sheet::{self, SheetItem};
use crate::retrieval::encode::embed_captions;
use crate::retrieval::gallery::{self, Gallery};
use crate::UsageError;
use anyhow::Result;
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
        return Err(UsageError("the query is empty: give a sentence to search for".into()).into());
    }
    // A feature file is read first (no model needed): the images it names are inputs too.
    let listed = match (a.gallery.is_dir(), a.gallery.is_file()) {
        (true, _) => None,
        (false, true) => Some(gallery::from_feature_file(&a.gallery)?),
        (false, false) => {
            return Err(UsageError(format!(
                "gallery {} is neither a folder nor a file",
                a.gallery.display()
            ))
            .into())
        }
    };
    if let Some(out) = &a.out {
        let mut inputs = a.weights.inputs();
        inputs.push(a.gallery.clone());
        inputs.extend(listed.iter().flat_map(|g| g.files.iter().cloned()));
        output_path::check(out, &inputs, Existing::allowed_by(a.force, "--force"))?;
    }
    let device = a.device.resolve()?;
    let (model, opts) = a.weights.load(None, None, device)?;
    let Gallery { files, features } = match listed {
        Some(g) => g,
        None => gallery::from_dir(&a.gallery, &model.model, &model.fingerprint, &opts)?,
    };
    let width = model.model.config.clip.embed_dim;
    if features.size()[1] != width {
        return Err(UsageError(format!(
            "gallery {} has {}-wide features, but the model's are {width}-wide (embed the gallery with this model)",
            a.gallery.display(),
            features.size()[1]
        ))
        .into());
    }
    let query = embed_captions(&model.model, std::slice::from_ref(&a.query), &opts)?;
    let hits = crate::retrieval::topk::top_k(
        &features,
        &query.to_device(tch::Device::Cpu),
        a.top_k as usize,
    );
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
