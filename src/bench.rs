//! Training-step and encoder throughput on synthetic batches.

/// `ccma bench`.
pub fn run_cli(_args: &crate::cli::BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ccma bench` is not implemented yet")
}
