//! `ccma test`: evaluates a trained run on its dataset's test split.
use super::evaluator::{embed_split, score_split, EmbedOptions, SplitFeatures};
use super::metrics::{table, to_json};
use crate::data::annotations::EvalSplit;
use crate::report::sheet::{self, SheetItem};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Evaluates `--checkpoint` (default: `best.safetensors` beside `--config`), prints the table or
/// JSON, writes `test_results.json` beside the checkpoint, and `--visualize N` contact sheets.
pub fn run(args: &crate::cli::TestArgs) -> Result<()> {
    let Some(config_path) = &args.config.config else {
        bail!(crate::UsageError(
            "`ccma test` needs --config <run>/configs.yaml".into()
        ));
    };
    let cfg = args.config.resolve()?;
    let checkpoint = match &args.checkpoint {
        Some(c) => c.clone(),
        None => config_path
            .parent()
            .unwrap_or(Path::new("."))
            .join("best.safetensors"),
    };
    if !checkpoint.is_file() {
        bail!(crate::UsageError(format!(
            "checkpoint {} does not exist (pass --checkpoint FILE)",
            checkpoint.display()
        )));
    }
    let device = cfg.tch_device()?;
    let dataset = crate::data::load_dataset(&cfg)?;
    let model = crate::model::load_inference_with(&cfg, &checkpoint, device)?;
    let opts = EmbedOptions::from_config(&cfg, device);
    let feats = embed_split(&model.model, &dataset.test, &opts)
        .with_context(|| format!("embedding the {} test split", dataset.name))?;
    let (t2i, i2t) = score_split(&feats, &dataset.test, args.i2t)?;
    let mut json = serde_json::json!({ "t2i": to_json(&t2i) });
    let mut rows = vec![("t2i", &t2i)];
    if let Some(i2t) = &i2t {
        json["i2t"] = to_json(i2t);
        rows.push(("i2t", i2t));
    }
    if args.json {
        println!("{json}");
    } else {
        println!(
            "{} test, {}\n{}",
            dataset.name,
            checkpoint.display(),
            table(&rows)
        );
    }
    let out = checkpoint.with_file_name("test_results.json");
    crate::util::write_atomic(&out, serde_json::to_string_pretty(&json)?.as_bytes())?;
    tracing::info!("wrote {}", out.display());
    if args.visualize > 0 {
        let dir = checkpoint.with_file_name("visualize");
        let n = visualize(&feats, &dataset.test, args.visualize, &dir)?;
        tracing::info!("wrote {n} contact sheets to {}", dir.display());
    }
    Ok(())
}

/// Contact sheets of the top 10 images for `n` queries spread evenly over the split, true matches
/// framed green and misses red; returns how many were written.
fn visualize(feats: &SplitFeatures, split: &EvalSplit, n: usize, dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let total = split.captions.len();
    let picks: Vec<usize> = (0..n.min(total))
        .map(|i| i * total / n.min(total))
        .collect();
    for &q in &picks {
        let query = feats.texts.get(q as i64).unsqueeze(0);
        let hits = crate::search::top_k(&feats.images, &query, 10);
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
