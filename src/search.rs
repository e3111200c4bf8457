//! Text search over a gallery of images, with a contact sheet.

/// `ccma search`.
pub fn run_cli(_args: &crate::cli::SearchArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ccma search` is not implemented yet")
}
