//! Datasets, tokenizer, MLM masking, image transforms, samplers and the parallel loader.
pub mod batch;
pub mod loader;
pub mod sampler;

/// `ccma tokenize`.
pub fn run_tokenize_cli(_args: &crate::cli::TokenizeArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ccma tokenize` is not implemented yet")
}

/// `ccma stats`.
pub fn run_stats_cli(_args: &crate::cli::StatsArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ccma stats` is not implemented yet")
}

/// The dataset a config names, generating SYNTH-PEDES first when it is asked for and missing.
pub fn load_dataset(cfg: &crate::config::Config) -> anyhow::Result<annotations::Dataset> {
    if cfg.dataset_name == "SYNTH-PEDES" {
        synthetic::ensure(&cfg.root_dir, cfg.synth_ids, cfg.seed)?;
    }
    annotations::load(&cfg.dataset_name, &cfg.root_dir)
}
