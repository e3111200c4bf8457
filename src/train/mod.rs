//! Training: optimiser, schedule, the loop and checkpoints.

/// The run was stopped by Ctrl-C after writing a resumable checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// `ccma train`.
pub fn run_cli(_args: &crate::cli::TrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ccma train` is not implemented yet")
}
