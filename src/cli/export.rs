//! `ccma export`.
use crate::io::output_path::{self, Existing};
use crate::model::weights::{self, torch_save};
use crate::UsageError;
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// The layouts `ccma export` writes.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ExportFormat {
    /// IRRA's state-dict names (load with `model.load_state_dict(safetensors.torch.load_file(...))`).
    Irra,
    /// RDE's state-dict names, for a model with the TSE layers: CLIP's encoders and
    /// `visul_emb_layer.*`, `texual_emb_layer.*` with their BatchNorm statistics, and the modules
    /// RDE registers but never uses filled (loads into RDE's model with `load_state_dict`).
    Rde,
}

/// Write a model's weights in another project's layout.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The layout to write.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// A run folder (its best.safetensors) or a checkpoint file.
    pub source: PathBuf,
    /// The safetensors file to write (never the source; an existing file only with --force).
    pub out: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let best = a.source.join(crate::io::run_files::BEST);
    let path = match a.source.is_dir() && best.is_file() {
        true => best,
        false => a.source.clone(),
    };
    if !path.exists() {
        bail!(UsageError(format!("{} does not exist", path.display())));
    }
    output_path::check(
        &a.out,
        std::slice::from_ref(&path),
        Existing::allowed_by(a.force, "--force"),
    )?;
    let w = weights::read(&path)?;
    let model: Vec<(String, tch::Tensor)> = w
        .tensors
        .into_iter()
        .filter(|(k, _)| !k.starts_with(weights::OPTIMIZER_PREFIX))
        .collect();
    let (mut state, layout) = match a.format {
        ExportFormat::Irra => (torch_save::irra_state(model), "IRRA's"),
        ExportFormat::Rde => match torch_save::rde_state(model) {
            Some(state) => (state, "RDE's"),
            None => bail!(UsageError(format!(
                "{} has no TSE layers (`visul_emb_layer`, `texual_emb_layer`): RDE's layout needs a model trained with `tse: true` (expected --format irra for it)",
                path.display()
            ))),
        },
    };
    state.sort_by(|x, y| x.0.cmp(&y.0));
    crate::io::safetensors::save(&a.out, &state, &Default::default())?;
    tracing::info!(
        "wrote {} tensors in {layout} layout to {}",
        state.len(),
        a.out.display()
    );
    Ok(())
}
