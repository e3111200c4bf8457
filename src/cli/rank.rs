//! `ccma rank`: retrieval metrics from feature files.
use super::output::{metrics_json, print, print_metrics};
use crate::config::Similarity;
use crate::retrieval::features::{read_pids_file, FeatureFile, FeatureSet, Side};
use crate::retrieval::metrics::evaluate;
use crate::retrieval::similarity::Embedded;
use crate::UsageError;
use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Compute retrieval metrics from feature files.
///
/// The query and gallery features are feature files as `ccma embed` writes them; with a model's
/// TSE features in both, they are compared by BGE+TSE unless --similarity says otherwise.
#[derive(Args, Debug)]
pub struct RankArgs {
    /// Query features: the file's `text_features` (else `features`), with `text_pids` (else `pids`).
    #[arg(long, value_name = "FILE")]
    pub queries: PathBuf,
    /// Gallery features: the file's `image_features` (else `features`), with `image_pids` (else `pids`).
    #[arg(long, value_name = "FILE")]
    pub gallery: PathBuf,
    /// The queries' person ids, one integer per line (when the file has none).
    #[arg(long, value_name = "FILE")]
    pub query_pids: Option<PathBuf>,
    /// The gallery's person ids, one integer per line (when the file has none).
    #[arg(long, value_name = "FILE")]
    pub gallery_pids: Option<PathBuf>,
    /// Which embeddings to compare: bge (the global features), tse (the `*_tse_features`) or
    /// bge+tse (the mean of the two cosine similarities) [default: bge+tse where both files have
    /// TSE features, else bge].
    #[arg(long, value_name = "SIMILARITY", value_parser = parse_similarity)]
    pub similarity: Option<Similarity>,
    /// Also report image-to-text (gallery as queries).
    #[arg(long)]
    pub i2t: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One side's features and pids (from the file, else from `pids_file`), and the name its TSE
/// features have (or would have) in the file.
fn read(
    path: &Path,
    side: Side,
    pids_file: Option<&Path>,
    flag: &str,
) -> Result<(FeatureSet, Vec<i64>, String)> {
    let read = FeatureFile::read_set(path, side)?;
    let rows = read.set.features.size()[0] as usize;
    let pids = match (pids_file, &read.set.pids) {
        (Some(f), _) => read_pids_file(f)?,
        (None, Some(p)) => p.clone(),
        (None, None) => bail!(UsageError(format!(
            "{}: missing tensor `{}` (or give {flag} FILE)",
            path.display(),
            read.pids_key
        ))),
    };
    if pids.len() != rows {
        bail!(UsageError(format!(
            "{}: {} person ids for {rows} feature rows",
            pids_file.unwrap_or(path).display(),
            pids.len()
        )));
    }
    Ok((read.set, pids, read.tse_key))
}

pub fn run(a: RankArgs) -> Result<()> {
    let (q, qp, q_tse) = read(
        &a.queries,
        Side::Text,
        a.query_pids.as_deref(),
        "--query-pids",
    )?;
    let (g, gp, g_tse) = read(
        &a.gallery,
        Side::Image,
        a.gallery_pids.as_deref(),
        "--gallery-pids",
    )?;
    let both_tse = q.tse_features.is_some() && g.tse_features.is_some();
    let similarity = Similarity::or_default(a.similarity, both_tse);
    let width = |t: &Tensor| t.size()[1];
    let mut widths = vec![("feature", width(&q.features), width(&g.features))];
    if similarity.needs_tse() {
        let sides = [(&a.queries, &q, &q_tse), (&a.gallery, &g, &g_tse)];
        if let Some((path, _, key)) = sides.iter().find(|(_, s, _)| s.tse_features.is_none()) {
            bail!(UsageError(format!(
                "{}: missing tensor `{key}`, which similarity {similarity} compares (embed with a model with TSE, or --similarity bge)",
                path.display()
            )));
        }
        let tse = |s: &FeatureSet| s.tse_features.as_ref().map_or(0, width);
        widths.push(("TSE feature", tse(&q), tse(&g)));
    }
    for (what, dq, dg) in widths {
        if dq != dg {
            bail!(UsageError(format!(
                "{what} widths differ: {} has D = {dq}, {} has D = {dg}",
                a.queries.display(),
                a.gallery.display()
            )));
        }
    }
    let compared = |set: FeatureSet| {
        Embedded {
            bge: set.features,
            tse: set.tse_features,
        }
        .compared(similarity)
    };
    let (q, g) = (compared(q), compared(g));
    let t2i = evaluate(&q, &g, &qp, &gp)?;
    let i2t = match a.i2t {
        true => Some(evaluate(&g, &q, &gp, &qp)?),
        false => None,
    };
    if a.json {
        let mut v = metrics_json(&t2i, i2t.as_ref());
        v["similarity"] = similarity.to_string().into();
        return print(format_args!("{v}\n"));
    }
    let heading = format!("similarity {similarity}");
    print_metrics(Some(&heading), &t2i, i2t.as_ref(), false)
}

fn parse_similarity(s: &str) -> Result<Similarity, String> {
    s.parse()
}
