//! Retrieval evaluation: the metrics protocol, `ccma rank` and `ccma test`.

/// `ccma rank`.
pub fn run_rank_cli(_args: &crate::cli::RankArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ccma rank` is not implemented yet")
}

/// `ccma test`.
pub fn run_test_cli(_args: &crate::cli::TestArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ccma test` is not implemented yet")
}
