//! Datasets, tokenizer, MLM masking, image transforms, samplers and the parallel loader.
pub mod batch;

/// `ccma tokenize`.
pub fn run_tokenize_cli(_args: &crate::cli::TokenizeArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ccma tokenize` is not implemented yet")
}

/// `ccma stats`.
pub fn run_stats_cli(_args: &crate::cli::StatsArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ccma stats` is not implemented yet")
}
