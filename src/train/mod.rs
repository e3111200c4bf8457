//! Training: optimiser, schedule, the loop, run folders and checkpoints.
pub mod checkpoint;
pub mod optimizer;
pub mod run_dir;
pub mod schedule;
pub mod trainer;

/// The run was stopped by Ctrl-C after writing a resumable checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// `ccma train`.
pub fn run_cli(args: &crate::cli::TrainArgs) -> anyhow::Result<()> {
    trainer::run(args)
}
