//! `ccma test`: evaluates a trained run on its dataset's test split.
use super::evaluator::{evaluate_split, EmbedOptions};
use super::metrics::{table, to_json};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Evaluates `--checkpoint` (default: `best.safetensors` beside `--config`), prints the table or
/// JSON, and writes `test_results.json` beside the checkpoint.
pub fn run(args: &crate::cli::TestArgs) -> Result<()> {
    let Some(config_path) = &args.config.config else {
        bail!(crate::UsageError("`ccma test` needs --config <run>/configs.yaml".into()));
    };
    let cfg = args.config.resolve()?;
    let checkpoint = match &args.checkpoint {
        Some(c) => c.clone(),
        None => config_path.parent().map(|d| d.join("best.safetensors")).unwrap_or_else(|| PathBuf::from("best.safetensors")),
    };
    if !checkpoint.exists() {
        bail!(crate::UsageError(format!("checkpoint {} does not exist (pass --checkpoint FILE)", checkpoint.display())));
    }
    let device = cfg.tch_device()?;
    let dataset = crate::data::load_dataset(&cfg)?;
    let (mut vs, model) = crate::model::from_config_untrained(&cfg, dataset.num_classes as i64, device)?;
    crate::model::load_checkpoint(&mut vs, &checkpoint)?;
    let opts = EmbedOptions::from_config(&cfg, device);
    let scores = evaluate_split(&model, &dataset.test, &opts, args.i2t)
        .with_context(|| format!("evaluating {} on the {} test split", checkpoint.display(), dataset.name))?;
    let mut json = serde_json::json!({ "t2i": to_json(&scores.t2i) });
    let mut rows = vec![("t2i", &scores.t2i)];
    if let Some(i2t) = &scores.i2t {
        json["i2t"] = to_json(i2t);
        rows.push(("i2t", i2t));
    }
    if args.json {
        println!("{json}");
    } else {
        println!("{} test, {}\n{}", dataset.name, checkpoint.display(), table(&rows));
    }
    let out = checkpoint.with_file_name("test_results.json");
    crate::util::write_atomic(&out, serde_json::to_string_pretty(&json)?.as_bytes())?;
    tracing::info!("wrote {}", out.display());
    Ok(())
}
