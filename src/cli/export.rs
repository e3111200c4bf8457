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
    /// IRRA's state-dict names (load with `model.load_state_dict(safetensors.torch.load_file(...))`):
    /// CCMA's DCA blocks, which IRRA's model does not have, are left out and named; a model whose
    /// attention heads are not width / 64 (the only heads IRRA's code builds) is refused.
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
    // A training state's optimiser tensors are set aside by the reader.
    let w = weights::read(&path)?;
    let (mut tensors, left_out, layout) = match a.format {
        ExportFormat::Irra => {
            let state = torch_save::irra_state(w)
                .map_err(|e| UsageError(format!("{}: {e:#}", path.display())))?;
            (state.tensors, state.left_out, "IRRA's")
        }
        ExportFormat::Rde => {
            let left_out = torch_save::left_out(w.tensors.keys(), torch_save::in_rde);
            match torch_save::rde_state(w.tensors.into_iter().collect()) {
                Some(state) => (state, left_out, "RDE's"),
            None => bail!(UsageError(format!(
                "{} has no TSE layers (`visul_emb_layer`, `texual_emb_layer`): RDE's layout needs a model trained with `tse: true` (expected --format irra for it)",
                    path.display()
                ))),
            }
        }
    };
    tensors.sort_by(|x, y| x.0.cmp(&y.0));
    crate::io::safetensors::save(&a.out, &tensors, &Default::default())?;
    tracing::info!(
        "wrote {} tensors in {layout} layout to {}",
        tensors.len(),
        a.out.display()
    );
    if !left_out.is_empty() {
        let modules: Vec<String> = left_out
            .iter()
            .map(|(m, n)| format!("{} ({n} tensors)", m.name()))
            .collect();
        super::output::print(format_args!(
            "not written: {}; {layout} layout has no such modules, so its code loads the model without them\n",
            modules.join(", ")
        ))?;
    }
    Ok(())
}
