//! `ccma tokenize`.
use anyhow::Result;
use clap::Args;

/// Tokenise UTF-8 lines from stdin.
///
/// Prints one JSON array of token ids per line.
#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Context length (ids per line, zero-padded; longer captions are truncated, last id EOT).
    #[arg(long, value_name = "N", default_value_t = 77)]
    pub text_length: usize,
}

pub fn run(a: TokenizeArgs) -> Result<()> {
    // The config's rule for `text_length`, the only one.
    let mut cfg = crate::config::Config::default();
    cfg.data.text_length = i64::try_from(a.text_length).unwrap_or(i64::MAX);
    cfg.validate()
        .map_err(|e| crate::UsageError(format!("--text-length {}: {e:#}", a.text_length)))?;
    let stdout = std::io::stdout();
    crate::data::tokenize_lines(
        std::io::stdin().lock(),
        &mut std::io::BufWriter::new(stdout.lock()),
        a.text_length,
    )
    .map_err(super::output::stdout_error)
}
