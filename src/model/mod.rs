//! CLIP encoders, weights, the cross-modal MLM branch, DCA and the CCMA assembly.

/// `ccma embed`.
pub fn run_embed_cli(_args: &crate::cli::EmbedArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ccma embed` is not implemented yet")
}
