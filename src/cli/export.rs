//! `ccma export`.
use crate::io::output_path::{self, Existing};
use crate::model::weights::{self, torch_save::irra_state};
use crate::UsageError;
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// The layouts `ccma export` writes.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ExportFormat {
    /// IRRA's state-dict names (load with `model.load_state_dict(safetensors.torch.load_file(...))`):
    /// CCMA's DCA blocks, which IRRA's model does not have, are left out and named; a model whose
    /// attention heads are not width / 64 (the only heads IRRA's code builds) is refused.
    Irra,
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
    // A training state's optimiser tensors are set aside by the reader.
    let w = weights::read(&path)?;
    let ExportFormat::Irra = a.format;
    let state = irra_state(w).map_err(|e| UsageError(format!("{}: {e:#}", path.display())))?;
    crate::io::safetensors::save(&a.out, &state.tensors, &Default::default())?;
    tracing::info!(
        "wrote {} tensors in IRRA's layout to {}",
        state.tensors.len(),
        a.out.display()
    );
    if !state.left_out.is_empty() {
        let modules: Vec<String> = state
            .left_out
            .iter()
            .map(|(m, n)| format!("{} ({n} tensors)", m.name()))
            .collect();
        super::output::print(format_args!(
            "not written: {}; IRRA's layout has no such modules (CCMA's DCA blocks), so IRRA's code loads the model without them\n",
            modules.join(", ")
        ))?;
    }
    Ok(())
}
