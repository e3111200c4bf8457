//! Retrieval evaluation: the metrics protocol, `ccma rank` and `ccma test`.
pub mod evaluator;
pub mod metrics;
pub mod rank;
pub mod test_cmd;

/// `ccma rank`.
pub fn run_rank_cli(args: &crate::cli::RankArgs) -> anyhow::Result<()> {
    rank::run(args)
}

/// `ccma test`.
pub fn run_test_cli(args: &crate::cli::TestArgs) -> anyhow::Result<()> {
    test_cmd::run(args)
}
